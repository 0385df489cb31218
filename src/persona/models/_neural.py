"""Pieces the PyTorch-trained models share: history tokens, validation targets and metrics, ONNX export.

The training loop itself is :class:`persona.models._trainer.Trainer`.

Functions here take ``torch`` as an argument, so importing this module never imports PyTorch.
"""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np

from ..errors import DataError, ParameterError
from typing import Any
from ..data.interactions import Interactions
from .base import Recommender
from .factor import ItemVectors, exclusion_rows_of

OPSET = 17
log = logging.getLogger("persona.models")


def window_tokens(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """Left-padded int64 tokens of the last ``length`` items of each ``items[starts[r]:ends[r]]``.

    A token is an item index + 1, so that 0 can pad on the left: the newest item is always the
    last column, whatever the history's length. This is how every sequence model here reads a
    history (SASRec's encoder input, TwoTower's pooled history, the stored ``user_tokens_``).
    """
    pos = ends[:, None] - length + np.arange(length)[None, :]
    ok = pos >= starts[:, None]
    out = np.zeros(pos.shape, dtype=np.int64)
    out[ok] = items[pos[ok]] + 1
    return out


def history_tokens(histories, length: int) -> np.ndarray:
    """:func:`window_tokens` of a list of item-index histories (oldest first): (len(histories), length)."""
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if lengths.sum() else \
        np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    return window_tokens(items, ends - lengths, ends, length)


def holdout_last(interactions):
    """``(train, holdout)``: each user with at least 3 events gives their last event to ``holdout``.

    Both share ``interactions``' id maps (the split of :func:`persona.split.leave_last_out`, whose
    validation part goes back to train), so a model fitted on ``train`` is scored on ``holdout``
    with the same indices.
    """
    from ..split import leave_last_out

    train, valid, test = leave_last_out(interactions, min_events=3)
    return train.concat(valid), test


class EncodedUsers(ItemVectors):
    """Mixin of the ONNX-served models: ``recommend`` through an optional index over ``item_factors_``.

    A subclass gives :meth:`_index_queries` (the encoded users, or None when some of them cannot
    be encoded and the base class must answer, e.g. with popularity).
    """

    def use_index(self, kind: str | None = "auto", **options: Any) -> EncodedUsers:
        """Serve ``recommend`` through a retrieval index over ``item_factors_`` (inner product).

        ``kind`` is one of :func:`persona.retrieval.make_index`'s (``"auto"``, ``"exact"``,
        ``"hnsw"``, ...), or None to score every item again. The encoded user is the query;
        filters are applied inside the index; users the model cannot encode still get popularity.
        The choice is saved with the model and the index rebuilt on load.
        """
        self._check_fitted()
        if kind is None:
            self.index_, self._index_spec = None, None
            return self
        if not isinstance(kind, str):
            raise ParameterError(f"kind must be an index name such as 'exact' or 'hnsw', or None; got {kind!r}")
        from ..retrieval import make_index

        self.index_ = make_index(self.item_factors_, metric="ip", kind=kind, **options)
        self._index_spec = {"kind": kind, "options": options}
        return self

    def _index_queries(self, users: np.ndarray):  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ fitting with a held-out item
    def _fit_holding_out(self, interactions, valid, refit_histories: bool, **kwargs):
        """``fit`` with ``valid="auto"``: early stopping on each user's held-out last item.

        The network is trained on everything but each user's last event and stops when NDCG@10 on
        those last events has not improved for ``patience`` epochs, keeping the best epoch; then
        (``refit_histories``) the model reads the full histories, last events included, as
        :meth:`update_histories` does. ``valid=None`` trains every epoch without early stopping;
        an ``Interactions`` is used as given (the validation part of your own split).
        """
        if not isinstance(refit_histories, (bool, np.bool_)):
            raise ParameterError(f"refit_histories must be True or False, got {refit_histories!r}")
        if not isinstance(valid, str):
            return Recommender.fit(self, interactions, valid=valid, **kwargs)
        if valid != "auto":
            raise ParameterError(f"valid must be 'auto', None or a persona.Interactions, got {valid!r}")
        if not isinstance(interactions, _interactions_type()):
            return Recommender.fit(self, interactions, **kwargs)  # the base class names the problem
        train, holdout = holdout_last(interactions)
        if len(holdout) == 0:
            log.warning("%s: no user has 3 events, so no last item can be held out for early stopping; "
                        "training all %d epochs", type(self).__name__, int(self.epochs))
            return Recommender.fit(self, interactions, valid=None, **kwargs)
        Recommender.fit(self, train, valid=holdout, **kwargs)
        if refit_histories:
            self.update_histories(interactions)
        return self

    # ------------------------------------------------------------------ artifacts
    def _token_width(self) -> int:  # pragma: no cover - abstract
        """The length of a user's token row (the model's history window)."""
        raise NotImplementedError

    def _check_state(self) -> None:
        """The arrays every encoded-user model serves from: item vectors, popularity, token rows."""
        from ..io.artifact import check_array, check_indices

        n_users, n_items = len(self.user_map_), len(self.item_map_)
        check_array("item_factors", self.item_factors_, shape=(n_items, None))
        check_array("item_popularity", self.item_popularity_, shape=(n_items,))
        tokens = check_array("user_tokens", self.user_tokens_, kind="iu", shape=(n_users, self._token_width()))
        check_indices("user_tokens", tokens, 0, n_items + 1)  # item index + 1, 0 pads

    # ------------------------------------------------------------------ newer histories, no refit
    def _history_tokens(self, interactions) -> np.ndarray:  # pragma: no cover - abstract
        """The token rows (interactions.n_users, length) this model reads a user's history as."""
        raise NotImplementedError

    def _grow_user_state(self, n_users: int) -> None:
        """Extend per-user state beyond the tokens to ``n_users`` rows (new users appended)."""

    def update_histories(self, interactions: Interactions) -> EncodedUsers:
        """Read newer histories without refitting: each user of ``interactions`` is answered from them.

        ``interactions`` holds the users' **full** histories up to now (e.g. ``train.concat(valid)``,
        or the store's events); for every user it names, the model's stored history and seen items
        are replaced by these, and users the model has never seen are added (appended to
        ``user_map_``), so ``recommend`` works for them at once. Users not named keep theirs. The
        network is unchanged: items it was not trained on are left out of the histories (counted in
        ``histories_update_``). Not safe while other threads recommend with the same object: update a
        copy and swap it in (``RecommenderService.swap``).

        Returns ``self``.
        """
        import scipy.sparse as sp

        from ..data.interactions import Interactions

        self._check_fitted()
        if not isinstance(interactions, Interactions):
            raise DataError(f"update_histories expects a persona.Interactions, got {type(interactions).__name__}")
        ext_users = interactions.user_ids[interactions.users]
        items = self.item_map_.lookup(interactions.item_ids[interactions.items])
        known = items >= 0
        users_map = self.user_map_.grow(ext_users) if len(ext_users) else self.user_map_
        users = users_map.lookup(ext_users)
        ts = None if interactions.timestamps is None else interactions.timestamps[known]
        mapped = Interactions(users_map, self.item_map_, users[known], items[known], interactions.weights[known], ts,
                              aggregate=interactions.aggregate)
        present = np.unique(users)
        n_old, n_new = self.n_users, len(users_map)
        tokens = np.zeros((n_new, self.user_tokens_.shape[1]), dtype=np.int32)
        tokens[:n_old] = self.user_tokens_
        tokens[present] = self._history_tokens(mapped)[present]
        seen = self.user_items_.tocsr()
        if n_new > n_old:
            seen = sp.vstack([seen, sp.csr_matrix((n_new - n_old, seen.shape[1]), dtype=seen.dtype)]).tocsr()
        untouched = np.ones(n_new, dtype=seen.dtype)
        untouched[present] = 0
        seen = (sp.diags(untouched) @ seen + mapped.matrix.astype(seen.dtype)).tocsr()
        seen.eliminate_zeros()
        self._grow_user_state(n_new)
        self.user_map_, self.user_tokens_, self.user_items_ = users_map, tokens, seen
        self._user_vector_cache = None
        self.histories_update_ = {"users": int(len(present)), "new_users": int(n_new - n_old),
                                  "events": int(len(ext_users)), "unknown_item_events": int((~known).sum())}
        if (~known).any():
            log.info("%s.update_histories: %d events of items the model was not trained on were left out",
                     type(self).__name__, int((~known).sum()))
        return self

    # ------------------------------------------------------------------ streaming updates
    #: a history lists every event (SASRec) or each item once, at its first touch (TwoTower)
    _first_touch_only = False
    #: items the network was not trained on have no vector: they wait for a refit (or TwoTower's features)
    places_new_items = False

    def _update(self, batch) -> None:
        self._fold_batch(batch)

    def _fold_batch(self, batch) -> None:
        """The batch's events appended to the users' token rows and counted in the popularity.

        Exactly what reading the full histories gives (the token row is the last ``max_len`` items
        of the history), for events later than those the model has read. Items without a vector
        (``placed_items_``) are left out of the rows, as :meth:`update_histories` leaves out items
        the network was not trained on. No torch: the encoders run in onnxruntime.
        """
        from ._update import grow_rows, stored

        inter, n_items = batch.inter, batch.n_items
        users, items = inter.users.astype(np.int64), inter.items.astype(np.int64)
        sel = np.arange(len(users))
        if self._first_touch_only:  # a pair's first event of the batch, if the user never touched the item
            _, first = np.unique(users * n_items + items, return_index=True)
            first.sort()
            sel = first[~stored(batch.old_rows(), users[first], items[first])]
        popularity = grow_rows(self.item_popularity_, n_items)
        popularity += np.bincount(items[sel], minlength=n_items).astype(popularity.dtype)
        placed = self._placed_mask()
        if placed is not None:
            sel = sel[placed[items[sel]]]
        tokens = grow_rows(self.user_tokens_, batch.n_users)
        touched = np.unique(users[sel])
        if len(touched):
            old = tokens[touched].astype(np.int64)
            live = old > 0  # left-padded: the row's items in time order
            row = np.concatenate([np.nonzero(live)[0], np.searchsorted(touched, users[sel])])
            part = np.concatenate([np.zeros(int(live.sum()), np.int8), np.ones(len(sel), np.int8)])
            seq = np.concatenate([old[live] - 1, items[sel]])
            order = np.lexsort((part, row))  # by row, old before new; stable within each
            ends = np.cumsum(np.bincount(row, minlength=len(touched)))
            tokens[touched] = window_tokens(seq[order], ends - np.diff(np.r_[0, ends]), ends, tokens.shape[1])
        self._grow_user_state(batch.n_users)
        self.user_tokens_, self.item_popularity_ = tokens, popularity
        self.item_factors_ = grow_rows(self.item_factors_, n_items)  # zero rows: never recommended, see placed_items_
        self._user_vector_cache = None
        spec = getattr(self, "_index_spec", None)
        if spec is not None and batch.n_items > batch.n_items_old:
            self.use_index(spec["kind"], **spec["options"])

    def _placed_histories(self, histories: list) -> list:
        """Histories without the items the model has no vector for (added by ``update``)."""
        placed = self._placed_mask()
        if placed is None:
            return histories
        out = []
        for h in histories:
            h = np.asarray(h, dtype=np.int64)
            out.append(h[placed[h]])
        return out

    def _select_for_users(self, users, n, excl, allow, mask):
        index = getattr(self, "index_", None)
        queries = None if index is None else self._index_queries(users)
        if queries is None:
            return super()._select_for_users(users, n, excl, allow, mask)
        return index.search(queries, n, allow=allow, deny=exclusion_rows_of(excl, len(users)), mask=mask)


def _interactions_type():
    from ..data.interactions import Interactions

    return Interactions


def valid_targets(model, valid) -> tuple[np.ndarray, np.ndarray]:
    """(user index, target item index) pairs of ``valid`` that ``model``'s id maps know, one per pair."""
    u = model.user_map_.lookup(valid.user_ids[valid.users])
    i = model.item_map_.lookup(valid.item_ids[valid.items])
    keep = (u >= 0) & (i >= 0)
    if not keep.any():
        raise DataError("valid shares no (user, item) pair with the training interactions' ids; pass the "
                        "validation part of the same split")
    pairs = np.unique(np.stack([u[keep], i[keep]], axis=1), axis=0)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def ranking_metrics(torch, score_rows, users: np.ndarray, targets: np.ndarray, user_items, *, k: int = 10,
                    rows: int = 1024) -> tuple[float, float]:
    """NDCG@k and HR@k of one target per user: full ranking, the user's training items excluded.

    ``score_rows(user_indices)`` returns the scores (len, n_items) of a block of users as a torch
    tensor; it is called under ``torch.no_grad()`` in blocks of ``rows`` users.
    """
    ndcg = hits = 0.0
    ui = user_items
    with torch.no_grad():
        for s in range(0, len(users), rows):
            bu, bt = users[s:s + rows], targets[s:s + rows]
            scores = score_rows(bu)
            at = torch.arange(len(bu))
            target_scores = scores[at, torch.from_numpy(bt)].clone()
            r = np.repeat(np.arange(len(bu)), np.diff(ui.indptr)[bu])
            c = np.concatenate([ui.indices[ui.indptr[x]:ui.indptr[x + 1]] for x in bu])
            scores[torch.from_numpy(r), torch.from_numpy(c.astype(np.int64))] = -np.inf
            scores[at, torch.from_numpy(bt)] = target_scores
            rank = (scores > target_scores[:, None]).sum(dim=1).numpy()
            hit = rank < k
            hits += float(hit.sum())
            ndcg += float((1.0 / np.log2(rank[hit] + 2.0)).sum())
    return ndcg / len(users), hits / len(users)


def export_onnx(torch, module, example, input_name: str, output_name: str) -> bytes:
    """``module`` as an ONNX graph (bytes, opset 17) with one input and one output, dynamic batch."""
    module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=OPSET,
                          input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
    return buf.getvalue()
