"""Pieces the PyTorch-trained models share: validation targets and metrics, and ONNX export.

Functions here take ``torch`` as an argument, so importing this module never imports PyTorch.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from ..errors import DataError, ParameterError
from .factor import ItemVectors, _rows_of

OPSET = 17


class EncodedUsers(ItemVectors):
    """Mixin of the ONNX-served models: ``recommend`` through an optional index over ``item_factors_``.

    A subclass gives :meth:`_index_queries` (the encoded users, or None when some of them cannot
    be encoded and the base class must answer, e.g. with popularity).
    """

    def use_index(self, kind: str | None = "auto", **options):
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

    def _select_for_users(self, users, n, excl, allow, mask):
        index = getattr(self, "index_", None)
        queries = None if index is None else self._index_queries(users)
        if queries is None:
            return super()._select_for_users(users, n, excl, allow, mask)
        return index.search(queries, n, allow=allow, deny=_rows_of(excl, len(users)), mask=mask)


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
