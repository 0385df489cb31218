"""TwoTower: a feature two-tower retrieval model (trained with PyTorch, served by onnxruntime).

Two networks map users and items into one space of L2-normalised vectors; the score of an item
for a user is the cosine of their vectors.

* **Item tower**: an MLP over the item's feature row (a :class:`persona.data.Features` row:
  one-hot categories and brands, price buckets, tags, hashed or TF-IDF words of the name, ...)
  plus, optionally, a learned id embedding. The id embedding is dropped at random while training
  (``id_dropout``), so the features alone must already give a good vector: that is the vector an
  item never seen in training gets (cold start, :meth:`TwoTower.add_items`).
* **User tower**: an MLP over the user's features (optional) and the mean and the newest of the
  *item-tower vectors* of the user's last ``max_history`` items. Pooling item vectors (rather than
  a separate id table) means that any item with a vector -- a cold item added with ``add_items``
  included -- works inside a history.

Training is in-batch sampled softmax over (history, next item) pairs with the logQ correction
(each logit minus the log of the item's share of the training targets, Yi et al., RecSys 2019),
cosine similarities divided by ``temperature``, Adam. A history lists each item once, in the
order the user first touched it; repeat events of an item already touched are not targets, and
event weights are not used.

Why unit vectors and a temperature rather than a plain dot product: the scores stay bounded, so
an item placed by its features alone (id part zero) lands on the same scale as a trained one, and
``similar_items`` is a plain cosine. Without the logQ correction, validation NDCG@10 on the
synthetic shop roughly halved (popular items are over-punished as in-batch negatives); temperature
0.1 trained a little better than 0.05 on both the synthetic shop and Amazon Beauty.

PyTorch is needed only by :meth:`TwoTower.fit`. Fitting ends by exporting the two towers as two
ONNX graphs, each with one float32 input:

* item tower: ``[features (n_item_features) | id vector (factors)]`` -> vector (factors);
  known items' vectors are kept in ``item_factors_``; a new item is encoded with a zero id part;
* user tower: ``[user features (n_user_features) | mean of history vectors | newest history
  vector]`` -> vector (factors).

``item_factors_`` is an ordinary array, so retrieval (:meth:`TwoTower.use_index`, exact or faiss)
does the top-k with the shared filters.
"""

from __future__ import annotations

import logging

from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.sparse as sp

from .._validate import MAX_FACTORS, MAX_ITERATIONS, check_int, check_number
from ..data.features import Features
from ..data.idmap import IdMap
from ..data.interactions import Interactions
from ..errors import ArtifactError, DataError, ParameterError, UnsupportedError
from ._cold import feature_spec_of, new_item_rows, visitor_rows
from ._neural import OPSET as _OPSET
from ._neural import EncodedUsers, history_tokens, ranking_metrics, valid_targets, window_tokens
from ._trainer import Trainer, import_torch
from .base import Recommender

if TYPE_CHECKING:  # pandas only for add_items' annotation
    import pandas as pd

__all__ = ["TwoTower"]

log = logging.getLogger("persona.models")

_ITEM_FILE = "item_tower.onnx"
_USER_FILE = "user_tower.onnx"
# Rows per onnxruntime / torch call when many users or items are encoded at once.
_ENCODE_ROWS = 1024


# ---------------------------------------------------------------------------------------- helpers
def _first_touches(inter: Interactions):
    """Each user's items in first-touch order: (items, indptr) with repeats of a pair dropped."""
    n_items = max(inter.n_items, 1)
    keys = inter.users.astype(np.int64) * n_items + inter.items
    _, first = np.unique(keys, return_index=True)
    first.sort()  # events are ordered by (user, time): sorted positions keep that order
    users, items = inter.users[first], inter.items[first].astype(np.int64)
    indptr = np.zeros(inter.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=inter.n_users), out=indptr[1:])
    return items, indptr


def _pairs(seq_items: np.ndarray, indptr: np.ndarray, n_items: int, first_pos: int):
    """The (history, next item) training pairs: ``(pair_user, pair_g, logq)``.

    One pair per position ``g`` of ``seq_items`` from each user's ``first_pos``-th on (1: a history
    must precede the target; 0 with user features, which place a user with no history); ``logq``
    is the log of each item's share of the pairs' targets.
    """
    n_users, starts = len(indptr) - 1, indptr[:-1]
    pair_user = np.repeat(np.arange(n_users), np.maximum(np.diff(indptr) - first_pos, 0))
    pair_pos = (np.arange(len(seq_items)) - np.repeat(starts, np.diff(indptr)))
    pair_g = np.flatnonzero(pair_pos >= first_pos)
    if len(pair_g) < 2:
        raise DataError("TwoTower needs at least 2 (history, next item) pairs to learn from: users with 2 or "
                        "more distinct items (or user_features, which make a first item a pair too)")
    targets = seq_items[pair_g]
    share = np.bincount(targets, minlength=n_items).astype(np.float64) / len(targets)
    return pair_user, pair_g, np.log(np.maximum(share, 1e-12)).astype(np.float32)


def _bag(m: sp.csr_matrix, rows: np.ndarray):
    """(indices, offsets, weights) of ``m[rows]`` for ``embedding_bag`` (a sparse first layer)."""
    ip = m.indptr
    starts, ends = ip[rows], ip[rows + 1]
    lens = (ends - starts).astype(np.int64)
    offsets = np.zeros(len(rows), dtype=np.int64)
    if len(rows) > 1:
        np.cumsum(lens[:-1], out=offsets[1:])
    gather = np.repeat(starts - offsets, lens) + np.arange(int(lens.sum()), dtype=np.int64)
    return m.indices[gather].astype(np.int64), offsets, m.data[gather].astype(np.float32)


def _dense(m, rows=None) -> np.ndarray:
    if rows is not None:
        m = m[rows]
    return np.asarray(m.toarray() if sp.issparse(m) else m, dtype=np.float32)


def _check_features(features, id_map: IdMap, what: str, hint: str) -> sp.csr_matrix:
    """The rows of ``features`` for every id of ``id_map`` (by external id), as float32 CSR."""
    if not isinstance(features, Features):
        raise DataError(f"{what} must be a persona.data.Features, got {type(features).__name__}; build one with "
                        f"Features.from_frame(df, {hint}, id_column, categorical=..., ...), or wrap a matrix "
                        f"aligned with {hint} as Features(matrix, column_names, {hint})")
    pos = features.id_map.lookup(id_map.ids) if len(id_map) else np.zeros(0, np.int64)
    missing = pos < 0
    if missing.any():
        bad = id_map.ids[missing][:5].tolist()
        kinds = (features.id_map.dtype.kind == "U", id_map.dtype.kind == "U")
        extra = "; their ids are strings and the interactions' are integers (or the reverse)" \
            if missing.all() and len(features) and kinds[0] != kinds[1] else ""
        raise DataError(f"{what} has no row for {int(missing.sum())} of the {len(id_map)} ids of the interactions "
                        f"(e.g. {bad}){extra}; build the Features over every id ({hint}) or drop those events")
    m = features.matrix[pos] if not np.array_equal(pos, np.arange(len(pos))) else features.matrix
    m = sp.csr_matrix(m, dtype=np.float32)
    if m.nnz and not np.isfinite(m.data).all():
        raise DataError(f"{what} holds NaN or infinite values; fill or drop them before fitting")
    m.sort_indices()
    return m


def _build_network(torch, n_items: int, n_item_feat: int, n_user_feat: int, factors: int, hidden: int,
                   use_ids: bool, dropout: float):
    """The two towers as torch modules (defined here so torch is imported only to fit)."""
    nn = torch.nn
    fn = torch.nn.functional

    class SparseLinear(nn.Module):
        """A linear layer over sparse rows: ``embedding_bag`` to train, a matmul in the graph."""

        def __init__(self, n_in: int):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(n_in, hidden))
            nn.init.normal_(self.weight, std=0.1)

        def sparse(self, indices, offsets, weights):
            return fn.embedding_bag(indices, self.weight, offsets, mode="sum", per_sample_weights=weights)

        def dense(self, x):
            return x @ self.weight

    class Towers(nn.Module):
        def __init__(self):
            super().__init__()
            # item tower: features -> hidden -> factors, plus an id embedding
            self.item_in = SparseLinear(n_item_feat) if n_item_feat else None
            self.item_bias = nn.Parameter(torch.zeros(hidden))
            self.item_out = nn.Linear(hidden, factors)
            self.ids = nn.Embedding(n_items, factors) if use_ids else None
            if self.ids is not None:
                nn.init.normal_(self.ids.weight, std=factors ** -0.5)
            # user tower: [user features, mean history, newest item] -> hidden -> factors
            self.user_in = SparseLinear(n_user_feat) if n_user_feat else None
            self.user_hist = nn.Linear(2 * factors, hidden)
            self.user_out = nn.Linear(hidden, factors)
            self.drop = nn.Dropout(dropout)

        def item_content(self, first):
            """The features-only part from the first layer's output (without its bias)."""
            return self.item_out(self.drop(torch.relu(first + self.item_bias)))

        def item_vectors(self, first, id_part):
            """Normalised item vectors; ``first`` is None without item features."""
            v = id_part if first is None else self.item_content(first) + id_part
            return fn.normalize(v, dim=-1)

        def user_vectors(self, first, mean, last):
            h = self.user_hist(torch.cat([mean, last], dim=1))
            if first is not None:
                h = h + first
            return fn.normalize(self.user_out(self.drop(torch.relu(h))) + mean + last, dim=-1)

    class ItemGraph(nn.Module):
        """Exported: ``[features | id vector]`` -> normalised item vector."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            first = self.net.item_in.dense(x[:, :n_item_feat]) if n_item_feat else None
            return self.net.item_vectors(first, x[:, n_item_feat:])

    class UserGraph(nn.Module):
        """Exported: ``[user features | mean history vector | newest history vector]`` -> user vector."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            first = self.net.user_in.dense(x[:, :n_user_feat]) if n_user_feat else None
            mean = x[:, n_user_feat:n_user_feat + factors]
            last = x[:, n_user_feat + factors:]
            return self.net.user_vectors(first, mean, last)

    return Towers(), ItemGraph, UserGraph


class TwoTower(EncodedUsers, Recommender):
    """Feature two-tower retrieval model; PyTorch to fit, onnxruntime to serve.

    Parameters
    ----------
    factors : int
        Width of the user and item vectors.
    hidden : int
        Width of each tower's hidden layer.
    max_history : int
        The user tower reads the user's last ``max_history`` items.
    temperature : float
        Cosine similarities are divided by it in the training softmax (lower: sharper).
    item_ids : bool
        Give every item of the training data a learned id embedding, added to its feature vector.
        Without item features it is the whole item tower (and ``add_items`` is not possible).
    id_dropout : float in [0, 1]
        Probability that an item's id embedding is left out in a training batch, so the item
        tower learns to place items from their features alone (what cold items get).
    dropout : float in [0, 1)
        Dropout of both towers' hidden layers.
    learning_rate : float
        Adam's step size.
    weight_decay : float
        Adam's L2 penalty.
    epochs : int
        Most passes over the (history, next item) pairs.
    batch_size : int
        Pairs per step; the other pairs' items of a batch are each pair's negatives (at least 2).
    patience : int
        With ``fit(..., valid=...)``: stop after this many epochs without a better validation
        NDCG@10 and keep the best epoch's weights.
    logq : bool
        Subtract the log of each item's share of the training targets from its logits (corrects
        in-batch negatives for popularity; without it popular items are pushed down).
    random_state : int, optional
        Seeds initialisation, dropout and batch order; with ``num_threads=1`` a seed gives
        bit-identical vectors.
    num_threads : int
        Threads of PyTorch while fitting and of onnxruntime while serving; 0: their defaults.
    show_progress : bool
        A tqdm bar over epochs with the loss and validation metric.

    Attributes
    ----------
    item_factors_ : float32 (n_items, factors)
        L2-normalised item vectors; the score of an item is ``user_vector . item_factors_[i]``.
    user_tokens_ : int32 (n_users, max_history)
        Each user's last training items (first touches) as left-padded tokens (item index + 1).
    user_features_ : scipy.sparse.csr_matrix or None
        The users' feature rows, aligned with ``user_map_``.
    item_popularity_ : float32 (n_items,)
        Distinct training users per item; answers empty histories. Added items have 0.
    item_encoder_, user_encoder_ : persona.onnx.OnnxModel
        The two towers (see the module docstring for their inputs).
    history_ : list of dict
        Per epoch: ``epoch``, ``loss`` and, with validation, ``valid_ndcg@10`` / ``valid_hr@10``.
    best_epoch_ : int
        The epoch whose weights were kept (1-based).

    Notes
    -----
    ``fit(interactions, item_features=None, user_features=None, valid=None)``: features are
    :class:`persona.data.Features` matched to the interactions by external id (their id map may hold
    more ids, e.g. the whole catalogue). Items of the interactions' map without any training event
    get their vector from their features alone, like cold items. ``valid`` (e.g. the middle part of
    :func:`persona.split.leave_last_out`) enables early stopping. ``recommend_for_history`` encodes
    a history without user features (zeros); an empty history is answered with popularity.

    Examples
    --------
    >>> import persona as ps
    >>> from persona.data import Features
    >>> shop = ps.datasets.synthetic_shop(n_users=200, n_items=60, seed=0)
    >>> inter = shop.interactions
    >>> feats = Features.from_frame(shop.items, inter.item_map, "item_id", categorical=["category", "brand"])
    >>> model = ps.TwoTower(factors=8, hidden=16, epochs=2, random_state=0, num_threads=1)
    >>> model = model.fit(inter, item_features=feats)
    >>> items, scores = model.recommend(inter.user_ids[0], n=3)
    >>> len(items)
    3
    """

    answers_empty_history = True  # an empty history gets the most popular items
    supports_user_features = True  # a visitor's {field: value} through the user tower (fitted with user_features)

    def __init__(self, *, factors: int = 64, hidden: int = 256, max_history: int = 50, temperature: float = 0.1,
                 item_ids: bool = True, id_dropout: float = 0.5, dropout: float = 0.1, learning_rate: float = 1e-3,
                 weight_decay: float = 0.0, epochs: int = 20, batch_size: int = 256, patience: int = 3,
                 logq: bool = True, random_state: int | None = None, num_threads: int = 0, show_progress: bool = False):
        self.factors = factors
        self.hidden = hidden
        self.max_history = max_history
        self.temperature = temperature
        self.item_ids = item_ids
        self.id_dropout = id_dropout
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.logq = logq
        self.random_state = random_state
        self.num_threads = num_threads
        self.show_progress = show_progress

    # ------------------------------------------------------------------ parameters
    def _validate_params(self) -> None:
        # upper bounds: each of these sizes an allocation or a loop; beyond them a fit exhausts memory or never ends
        caps = {"factors": MAX_FACTORS, "hidden": 4 * MAX_FACTORS, "max_history": 10_000, "epochs": MAX_ITERATIONS,
                "batch_size": 1 << 16, "patience": MAX_ITERATIONS}
        for name, cap in caps.items():
            check_int(getattr(self, name), name, min=1, max=cap)
        if self.batch_size < 2:
            raise ParameterError(f"batch_size must be at least 2 (the other pairs of a batch are the negatives), "
                                 f"got {self.batch_size}")

        def number(name, low, high, low_open, high_open):
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            check_number(getattr(self, name), name, min=low, max=high, min_open=low_open, max_open=high_open,
                         expected=f"a number in {lo}{low}, {high}{hi}")

        number("temperature", 0.0, np.inf, True, True)
        number("id_dropout", 0.0, 1.0, False, False)
        number("dropout", 0.0, 1.0, False, True)
        number("learning_rate", 0.0, np.inf, True, True)
        number("weight_decay", 0.0, np.inf, False, True)
        for name in ("item_ids", "logq", "show_progress"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ParameterError(f"{name} must be True or False, got {getattr(self, name)!r}")

    # ------------------------------------------------------------------ fitting
    def fit(self, interactions: Interactions, item_features: Features | None = None,
            user_features: Features | None = None, valid: Interactions | Literal["auto"] | None = "auto", *,
            refit_histories: bool = True) -> TwoTower:
        """Learn from ``interactions`` (and item / user :class:`~persona.data.Features`); returns ``self``.

        ``valid="auto"`` (the default) holds out each user's last event, stops when NDCG@10 on
        those has not improved for ``patience`` epochs and keeps the best epoch; then, with
        ``refit_histories``, the model reads the full histories (:meth:`update_histories`).
        ``valid=None`` trains all ``epochs``; an ``Interactions`` is used as given.
        """
        return self._fit_holding_out(interactions, valid, refit_histories, item_features=item_features,
                                     user_features=user_features)

    def _history_tokens(self, interactions: Interactions) -> np.ndarray:
        seq_items, indptr = _first_touches(interactions)
        return window_tokens(seq_items, indptr[:-1], indptr[1:], int(self.max_history)).astype(np.int32)

    _first_touch_only = True  # a history lists each item once, at its first touch (as fit reads it)

    def _update(self, batch, item_features: Features | pd.DataFrame | None = None) -> None:
        """Read the new events into the users' histories; with ``item_features`` (as for
        :meth:`add_items`), place the batch's new items by the item tower first, so they count in
        histories and are recommended at once. Other new items wait for a refit."""
        if item_features is not None and len(batch.new_items):
            if not self.n_item_features_:
                raise UnsupportedError("TwoTower.update: item_features: expected a model fitted with item_features, "
                                       "got one fitted without; drop item_features or refit with them")
            ids, x = new_item_rows(item_features, self.item_feature_columns_, self.item_feature_spec_,
                                   self.n_item_features_, batch.old_item_map, "skip", "TwoTower.update")
            where = batch.item_map.lookup(ids) if len(ids) else np.zeros(0, np.int64)
            keep = where >= batch.n_items_old  # features of other items (a whole catalogue) are not needed here
            if keep.any():
                x = x[np.flatnonzero(keep)]
                where = where[keep]
                placed = self._placed_mask().copy()
                placed[where] = True
                self.placed_items_ = None if placed.all() else placed
                vectors = self.encode_items(x)
                self._fold_batch(batch)  # grows item_factors_ (zero rows) before the new vectors go in
                factors = self.item_factors_.copy()
                factors[where] = vectors
                self.item_factors_ = factors
                spec = getattr(self, "_index_spec", None)
                if spec is not None:
                    self.use_index(spec["kind"], **spec["options"])
                return
        self._fold_batch(batch)

    def _grow_user_state(self, n_users: int) -> None:
        x = self.user_features_
        if x is not None and x.shape[0] < n_users:  # new users have no features: zero rows
            self.user_features_ = sp.vstack([x, sp.csr_matrix((n_users - x.shape[0], x.shape[1]),
                                                               dtype=x.dtype)]).tocsr()

    def _fit(self, interactions: Interactions, item_features=None, user_features=None, valid=None) -> None:
        if valid is not None and not isinstance(valid, Interactions):
            raise DataError(f"valid must be a persona.Interactions (e.g. from ps.split.leave_last_out), "
                            f"got {type(valid).__name__}")
        x_items = None if item_features is None else \
            _check_features(item_features, interactions.item_map, "item_features", "inter.item_map")
        x_users = None if user_features is None else \
            _check_features(user_features, interactions.user_map, "user_features", "inter.user_map")
        if x_items is None and not self.item_ids:
            raise ParameterError("item_ids=False needs item_features: without either, items have no vector")
        torch = import_torch(self)
        n_items, d = interactions.n_items, int(self.factors)
        seq_items, indptr = _first_touches(interactions)
        starts = indptr[:-1]
        counts = np.bincount(seq_items, minlength=n_items)
        self._keep_inputs(seq_items, indptr, counts, item_features, x_items, x_users, user_features)
        pair_user, pair_g, logq = _pairs(seq_items, indptr, n_items, first_pos=0 if x_users is not None else 1)
        logq_t = torch.from_numpy(logq)
        trained = counts > 0  # items with an id embedding worth using
        length, b, inv_t = int(self.max_history), int(self.batch_size), 1.0 / float(self.temperature)

        with Trainer(self, torch, weight_decay=float(self.weight_decay)) as trainer:
            net, item_graph, user_graph = _build_network(
                torch, n_items, self.n_item_features_, self.n_user_features_, d, int(self.hidden),
                bool(self.item_ids), float(self.dropout))
            ctx = _Context(torch, net, x_items, x_users, trained, d)

            def batches(rng):
                order = rng.permutation(len(pair_g))
                for s in range(0, len(order), b):
                    rows = order[s:s + b]
                    if len(rows) < 2:
                        continue  # a lone pair has no in-batch negative
                    g, users = pair_g[rows], pair_user[rows]
                    tgt = seq_items[g]
                    tok = window_tokens(seq_items, starts[users], g, length)
                    live = tok > 0
                    # the batch's items, each encoded once: targets first, then history items
                    need, inv = np.unique(np.concatenate([tgt, tok[live] - 1]), return_inverse=True)
                    inv = inv.reshape(-1)
                    hist_pos = np.zeros(tok.shape, dtype=np.int64)
                    hist_pos[live] = inv[len(tgt):]
                    keep = trained[need]
                    if self.item_ids and self.id_dropout > 0:
                        keep = keep & (rng.random(len(need)) >= float(self.id_dropout))
                    yield users, tgt, need, keep, inv[:len(tgt)], hist_pos, live

            def loss(batch):
                users, tgt, need, keep, tgt_pos, hist_pos, live = batch
                v = ctx.items(need, keep)
                u = ctx.users(users, v, torch.from_numpy(hist_pos), torch.from_numpy(live))
                logits = (u @ v[torch.from_numpy(tgt_pos)].T) * inv_t
                if self.logq:
                    logits = logits - logq_t[torch.from_numpy(tgt)][None, :]
                same = (tgt[:, None] == tgt[None, :]) & ~np.eye(len(tgt), dtype=bool)
                if same.any():  # another pair's copy of my positive is not a negative
                    logits = logits.masked_fill(torch.from_numpy(same), -1e9)
                return torch.nn.functional.cross_entropy(logits, torch.arange(len(tgt))), len(tgt)

            vdata = valid_targets(self, valid) if valid is not None else None
            trainer.fit(net, batches, loss,
                        validate=None if vdata is None else lambda net: self._valid_metrics(torch, ctx, vdata))
            self._torch_context = ctx  # with _network (set by the trainer): parity checks; never saved
            with torch.no_grad():
                self.item_factors_ = ctx.all_items().numpy().astype(np.float32, copy=True)
            self._set_encoders(self._export(trainer, item_graph(net), self.n_item_features_ + d),
                               self._export(trainer, user_graph(net), self.n_user_features_ + 2 * d))
        if getattr(self, "_index_spec", None) is not None:  # a refit rebuilds the chosen index
            self._fitted = True
            self.use_index(self._index_spec["kind"], **self._index_spec["options"])

    def _keep_inputs(self, seq_items, indptr, counts, item_features, x_items, x_users, user_features=None) -> None:
        """The fitted state that comes from the data, not the network: popularity, tokens, features."""
        if x_items is not None:
            empty = (np.diff(x_items.indptr) == 0) & (counts > 0)
            if empty.any():
                log.warning("TwoTower: %d of the %d items with events have no item features (all-zero rows); "
                            "they rely on their id embedding", int(empty.sum()), int((counts > 0).sum()))
        self.item_popularity_ = counts.astype(np.float32)
        self.user_tokens_ = window_tokens(seq_items, indptr[:-1], indptr[1:], int(self.max_history)).astype(np.int32)
        self.user_features_ = x_users
        self.n_item_features_ = 0 if x_items is None else x_items.shape[1]
        self.n_user_features_ = 0 if x_users is None else x_users.shape[1]
        self.item_feature_columns_ = None if x_items is None else list(item_features.columns)
        # built from a matrix: no spec, and add_items then needs Features, not a frame
        self.item_feature_spec_ = None if item_features is None else feature_spec_of(item_features)
        self.user_feature_spec_ = None if user_features is None else feature_spec_of(user_features)

    def _export(self, trainer, module, width: int) -> bytes:
        """One tower as an ONNX graph (bytes): float32 (batch, width) -> float32 (batch, factors)."""
        return trainer.export(module, trainer.torch.zeros((2, width), dtype=trainer.torch.float32), "inputs", "vectors")

    def _valid_metrics(self, torch, ctx, vdata, k: int = 10) -> tuple[float, float]:
        """NDCG@k and HR@k of the validation targets: full ranking, training items excluded."""
        ctx.net.eval()
        with torch.no_grad():
            items = ctx.all_items()

        def score_rows(bu):
            return ctx.users_of_tokens(bu, self.user_tokens_[bu].astype(np.int64), items) @ items.T

        return ranking_metrics(torch, score_rows, *vdata, self.user_items_, k=k)

    # ------------------------------------------------------------------ serving: the towers
    def _set_encoders(self, item_graph: bytes, user_graph: bytes) -> None:
        from ..onnx import OnnxModel

        threads = int(self.num_threads or 0)
        self.item_encoder_onnx_ = item_graph
        self.user_encoder_onnx_ = user_graph
        self.item_encoder_ = OnnxModel(item_graph, intra_op_threads=threads)
        self.user_encoder_ = OnnxModel(user_graph, intra_op_threads=threads)
        self._user_vector_cache = None

    def encode_items(self, features: Features | sp.spmatrix | np.ndarray) -> np.ndarray:
        """Vectors (m, factors) of items from their features alone (no id embedding), by the item tower.

        Parameters
        ----------
        features : Features, scipy sparse matrix or 2-D array (m, n_item_features)
            Rows encoded with the model's item feature columns (e.g. ``Features.transform``).
        """
        self._check_fitted()
        if not self.n_item_features_:
            raise UnsupportedError("this TwoTower was fitted without item_features, so it cannot place items "
                                   "by their features; refit with fit(..., item_features=...)")
        x = features.matrix if isinstance(features, Features) else features
        if not (sp.issparse(x) or isinstance(x, np.ndarray)) or x.ndim != 2 or x.shape[1] != self.n_item_features_:
            raise DataError(f"expected item features with {self.n_item_features_} columns (the model's), got "
                            f"{getattr(x, 'shape', type(x).__name__)}; encode new rows with the fitted Features' "
                            "transform")
        x = sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else x
        d = self.item_factors_.shape[1]
        out = np.zeros((x.shape[0], d), dtype=np.float32)
        for s in range(0, x.shape[0], _ENCODE_ROWS):
            block = _dense(x[s:s + _ENCODE_ROWS])
            inp = np.zeros((len(block), self.n_item_features_ + d), dtype=np.float32)
            inp[:, :self.n_item_features_] = block
            out[s:s + len(block)] = self.item_encoder_.run(inp)
        return out

    def _pool(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and newest item vector of token rows (zeros for an empty row)."""
        live = tokens > 0
        h = self.item_factors_[np.maximum(tokens - 1, 0)] * live[..., None]
        mean = h.sum(axis=1) / np.maximum(live.sum(axis=1), 1)[:, None].astype(np.float32)
        return mean.astype(np.float32), np.ascontiguousarray(h[:, -1, :], dtype=np.float32)

    def encode_users(self, tokens: np.ndarray,
                     user_features: sp.spmatrix | np.ndarray | None = None) -> np.ndarray:
        """User vectors (m, factors) of token rows (m, max_history): item index + 1, left-padded with 0.

        ``user_features``: rows (m, n_user_features) of the users' features, or None (zeros).
        """
        self._check_fitted()
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        if tokens.ndim != 2 or tokens.shape[1] != self.max_history:
            raise ParameterError(f"tokens must have shape (m, {self.max_history}), got {tokens.shape}")
        if tokens.size and (tokens.min() < 0 or tokens.max() > self.n_items):
            raise ParameterError(f"tokens must lie in [0, {self.n_items}] (item index + 1; 0 is padding)")
        fu = self.n_user_features_
        if user_features is not None and (user_features.ndim != 2 or user_features.shape != (len(tokens), fu)):
            raise ParameterError(f"user_features must have shape ({len(tokens)}, {fu}), got {user_features.shape}")
        d = self.item_factors_.shape[1]
        out = np.zeros((len(tokens), d), dtype=np.float32)
        for s in range(0, len(tokens), _ENCODE_ROWS):
            tok = tokens[s:s + _ENCODE_ROWS]
            mean, last = self._pool(tok)
            inp = np.zeros((len(tok), fu + 2 * d), dtype=np.float32)
            if user_features is not None and fu:
                inp[:, :fu] = _dense(user_features[s:s + _ENCODE_ROWS])
            inp[:, fu:fu + d] = mean
            inp[:, fu + d:] = last
            out[s:s + len(tok)] = self.user_encoder_.run(inp)
        return out

    def _live(self, tokens: np.ndarray, with_features: bool) -> np.ndarray:
        """Rows the user tower can answer: a history, or (for known users) the model's user features."""
        live = tokens[:, -1] > 0
        if with_features and self.n_user_features_:
            live = np.ones(len(tokens), dtype=bool)
        return live

    def _user_rows(self, user_indices: np.ndarray) -> np.ndarray:
        tokens = self.user_tokens_[user_indices].astype(np.int64)
        feats = None if self.user_features_ is None else self.user_features_[user_indices]
        return self._vectors(tokens, feats, with_features=True)

    def _vectors(self, tokens, feats, *, with_features: bool) -> np.ndarray:
        live = self._live(tokens, with_features)
        out = np.zeros((len(tokens), self.item_factors_.shape[1]), dtype=np.float32)
        if live.all():
            return self.encode_users(tokens, feats)
        if live.any():
            out[live] = self.encode_users(tokens[live], None if feats is None else feats[np.flatnonzero(live)])
        return out

    def _score_users(self, user_indices: np.ndarray) -> np.ndarray:
        tokens = self.user_tokens_[user_indices]
        scores = self._user_rows(user_indices) @ self._item_factors_t()
        dead = ~self._live(tokens, True)
        if dead.any():
            scores[dead] = self.item_popularity_
        return scores

    def _score_histories(self, histories) -> np.ndarray:
        tokens = history_tokens(self._placed_histories(histories), int(self.max_history))
        scores = self._vectors(tokens, None, with_features=False) @ self._item_factors_t()
        empty = tokens[:, -1] == 0
        if empty.any():
            scores[empty] = self.item_popularity_
        return scores

    def _describe_users(self, values):
        """Feature rows (CSR) of visitors' ``{field: value}`` dicts, encoded with the fitted user Features."""
        if not self.n_user_features_:
            raise ParameterError("TwoTower: user_features: expected a model fitted with user_features, got one "
                                 "fitted without; refit with fit(..., user_features=Features.from_frame(users, ...))")
        if self.user_feature_spec_ is None:
            raise DataError("TwoTower: user_features: expected user Features built by Features.from_frame, got a "
                            "model fitted with Features built from a matrix, which cannot encode {field: value}; "
                            "refit with Features.from_frame(users, inter.user_map, 'user_id', categorical=[...])")
        rows = visitor_rows(self.user_feature_spec_, self.n_user_features_, values, "TwoTower")
        return rows, np.diff(rows.indptr) > 0

    def _score_described(self, histories, rows) -> np.ndarray:
        """The user tower over each history and the visitor's features; nothing known: popularity."""
        tokens = history_tokens(self._placed_histories(histories), int(self.max_history))
        live = (tokens[:, -1] > 0) | (np.diff(rows.indptr) > 0)
        scores = np.empty((len(tokens), self.n_items), dtype=np.float32)
        if live.any():
            at = np.flatnonzero(live)
            scores[at] = self.encode_users(tokens[at], rows[at]) @ self._item_factors_t()
        scores[~live] = self.item_popularity_
        return scores

    def _score_similar(self, item_indices: np.ndarray) -> np.ndarray:
        return self.item_factors_[item_indices] @ self._item_factors_t()  # rows are unit vectors: cosine

    def user_vectors(self) -> np.ndarray:
        """The vector of every known user (n_users, factors); zeros for users the tower cannot place."""
        self._check_fitted()
        cache = getattr(self, "_user_vector_cache", None)
        if cache is None or cache[0] is not self.item_factors_:
            n = self.n_users
            out = np.concatenate([self._user_rows(np.arange(s, min(s + _ENCODE_ROWS, n)))
                                  for s in range(0, n, _ENCODE_ROWS)]) if n else \
                np.zeros((0, self.item_factors_.shape[1]), np.float32)
            cache = (self.item_factors_, out)
            self._user_vector_cache = cache
        return cache[1]

    def _score_audience(self, item_indices: np.ndarray) -> np.ndarray:
        scores = self.user_vectors() @ self.item_factors_[item_indices].sum(axis=0)
        dead = ~self._live(self.user_tokens_, True)
        if dead.any():
            scores[dead] = -np.inf  # nothing known about them; rank them last
        return scores

    # ------------------------------------------------------------------ cold start
    def add_items(self, features: Features | pd.DataFrame, *, known: str = "error") -> TwoTower:
        """Add new items, placed by the item tower from their features alone; no retraining.

        The new items are appended to ``item_map_`` / ``item_factors_`` (popularity 0), so
        ``recommend``, filters, ``similar_items``, ``recommend_users`` and histories that contain
        them work at once; a retrieval index chosen with :meth:`use_index` is rebuilt.

        Parameters
        ----------
        features : Features or pandas.DataFrame
            The new items' features: a :class:`~persona.data.Features` with the model's item
            feature columns (``fitted_features.transform(new_items_df)``), or a DataFrame with the
            fitted fields and id column, encoded with the encoding saved in the model.
        known : {"error", "skip"}
            Items the model already knows are never updated (their trained vector stays):
            ``"error"`` raises :class:`~persona.DataError` naming them; ``"skip"`` leaves them out,
            so a whole catalogue can be passed.

        Returns
        -------
        self

        Notes
        -----
        This changes the model: call it in an offline job or on a copy that is then swapped in
        (``RecommenderService.swap``), not while other threads serve from the same object.
        """
        self._check_fitted()
        if not self.n_item_features_:
            raise UnsupportedError("this TwoTower was fitted without item_features, so new items have no vector; "
                                   "refit with fit(..., item_features=...)")
        ids, x = new_item_rows(features, self.item_feature_columns_, self.item_feature_spec_, self.n_item_features_,
                               self.item_map_, known, "TwoTower")
        if len(ids) == 0:
            return self
        vectors = self.encode_items(x)
        new_map = self.item_map_.grow(ids)
        where = new_map.lookup(ids)
        n_old, n_new = len(self.item_map_), len(new_map)
        factors = np.zeros((n_new, self.item_factors_.shape[1]), dtype=np.float32)
        factors[:n_old] = self.item_factors_
        factors[where] = vectors
        popularity = np.zeros(n_new, dtype=np.float32)
        popularity[:n_old] = self.item_popularity_
        ui = self.user_items_
        user_items = sp.csr_matrix((ui.data, ui.indices, ui.indptr), shape=(ui.shape[0], n_new))
        index = None
        spec = getattr(self, "_index_spec", None)
        if spec is not None:
            from ..retrieval import make_index

            index = make_index(factors, metric="ip", kind=spec["kind"], **spec["options"])
        self.item_map_, self.item_factors_, self.item_popularity_ = new_map, factors, popularity
        self.user_items_ = user_items
        if spec is not None:
            self.index_ = index
        log.info("TwoTower: added %d items (now %d)", len(ids), n_new)
        return self

    # ------------------------------------------------------------------ retrieval
    def _index_queries(self, users: np.ndarray):
        """The user vectors of ``users``, or None when one cannot be encoded (popularity answers).

        The index also serves ``similar_items``; it is rebuilt on load, on refit and by :meth:`add_items`.
        """
        return self._user_rows(users) if self._live(self.user_tokens_[users], True).all() else None

    def _select_similar(self, item_indices, n, excl, allow, mask):
        index = getattr(self, "index_", None)
        if index is None:
            return super()._select_similar(item_indices, n, excl, allow, mask)
        from .factor import exclusion_rows_of

        return index.search(self.item_factors_[item_indices], n, allow=allow,
                            deny=exclusion_rows_of(excl, len(item_indices)), mask=mask)

    # ------------------------------------------------------------------ persistence
    def _state(self):
        meta = {"onnx_opset": _OPSET, "item_encoder_file": _ITEM_FILE, "user_encoder_file": _USER_FILE,
                "best_epoch": int(getattr(self, "best_epoch_", 0)), "history": list(getattr(self, "history_", [])),
                "n_item_features": int(self.n_item_features_), "n_user_features": int(self.n_user_features_),
                "item_feature_columns": self.item_feature_columns_, "item_feature_spec": self.item_feature_spec_,
                "user_feature_spec": getattr(self, "user_feature_spec_", None)}
        if getattr(self, "_index_spec", None) is not None:
            meta["index"] = self._index_spec
        arrays = {"item_factors": self.item_factors_, "user_tokens": self.user_tokens_,
                  "item_popularity": self.item_popularity_}
        if self.user_features_ is not None:
            from ..io.artifact import pack_csr

            arrays.update(pack_csr("user_features", self.user_features_))
        return meta, arrays

    def _files(self) -> dict:
        graphs = {_ITEM_FILE: self.item_encoder_onnx_, _USER_FILE: self.user_encoder_onnx_}

        def writer(graph):
            def write(path):
                with open(path, "wb") as f:
                    f.write(graph)

            return write

        return {name: writer(g) for name, g in graphs.items()}

    def _token_width(self) -> int:
        return int(self.max_history)

    def _check_state(self) -> None:
        super()._check_state()
        n_users = len(self.user_map_)
        if self.user_features_ is not None and self.user_features_.shape != (n_users, self.n_user_features_):
            raise ArtifactError(f"user_features: expected shape {(n_users, self.n_user_features_)}, got "
                                f"{self.user_features_.shape}; the artifact is malformed, save the model again")

    def _restore(self, meta, arrays):
        from ..io.artifact import unpack_csr

        self.item_factors_ = np.asarray(arrays["item_factors"])
        self.user_tokens_ = np.asarray(arrays["user_tokens"])
        self.item_popularity_ = np.asarray(arrays["item_popularity"])
        self.n_item_features_ = int(meta.get("n_item_features", 0))
        self.n_user_features_ = int(meta.get("n_user_features", 0))
        self.user_features_ = unpack_csr("user_features", arrays) if self.n_user_features_ else None
        self.item_feature_columns_ = meta.get("item_feature_columns")
        self.item_feature_spec_ = meta.get("item_feature_spec")
        self.user_feature_spec_ = meta.get("user_feature_spec")
        if self.user_feature_spec_ is not None and not isinstance(self.user_feature_spec_, dict):
            raise ArtifactError("user_feature_spec: expected an object; the artifact is malformed, save the model again")
        self.best_epoch_ = int(meta.get("best_epoch", 0))
        self.history_ = list(meta.get("history", []))
        self._check_state()  # before the encoders or an index see the arrays
        files = meta.get("_files", {})
        graphs = []
        for key, default in (("item_encoder_file", _ITEM_FILE), ("user_encoder_file", _USER_FILE)):
            path = files.get(meta.get(key, default))
            if path is None:
                raise ArtifactError(f"the TwoTower artifact lacks its graph {default}; save the model again")
            # read now (the checksum was just verified), so a later overwrite of the artifact
            # cannot change the graph under a lazily created session
            with open(path, "rb") as f:
                graphs.append(f.read())
        self._set_encoders(*graphs)
        spec = meta.get("index")
        if spec is not None:
            self._fitted = True  # use_index checks it; load sets it again after _restore
            self.use_index(spec["kind"], **spec.get("options", {}))


class _Context:
    """The torch side while fitting: towers over sparse feature rows (never saved)."""

    def __init__(self, torch, net, x_items, x_users, trained, d):
        self.torch, self.net, self.x_items, self.x_users = torch, net, x_items, x_users
        self.trained, self.d = trained, d

    def _first(self, layer, m, rows):
        if layer is None:
            return None
        idx, off, w = _bag(m, rows)
        t = self.torch
        return layer.sparse(t.from_numpy(idx), t.from_numpy(off), t.from_numpy(w))

    def items(self, rows: np.ndarray, keep: np.ndarray):
        """Item vectors of item indices ``rows``; the id embedding only where ``keep``."""
        t, net = self.torch, self.net
        first = self._first(net.item_in, self.x_items, rows)
        if net.ids is not None:
            id_part = net.ids(t.from_numpy(rows)) * t.from_numpy(keep.astype(np.float32))[:, None]
        else:
            id_part = t.zeros((len(rows), self.d))
        return net.item_vectors(first, id_part)

    def all_items(self, step: int = 8192):
        n = len(self.trained)
        parts = [self.items(np.arange(s, min(s + step, n)), self.trained[s:s + step]) for s in range(0, n, step)]
        return self.torch.cat(parts) if parts else self.torch.zeros((0, self.d))

    def users(self, users: np.ndarray, item_vectors, hist_pos, live):
        """User vectors from positions ``hist_pos`` (b, L) into ``item_vectors`` (masked by ``live``)."""
        h = item_vectors[hist_pos] * live[..., None].to(item_vectors.dtype)
        mean = h.sum(dim=1) / live.sum(dim=1).clamp(min=1)[:, None].to(item_vectors.dtype)
        first = self._first(self.net.user_in, self.x_users, users)
        return self.net.user_vectors(first, mean, h[:, -1, :])

    def users_of_tokens(self, users: np.ndarray, tokens: np.ndarray, all_items):
        live = tokens > 0
        pos = np.maximum(tokens - 1, 0)
        return self.users(users, all_items, self.torch.from_numpy(pos), self.torch.from_numpy(live))
