"""What ``Recommender.update`` shares between models: the batch in the grown id maps, and the merge.

``model.update(new)`` folds a batch of new events into a fitted model without a refit. The base
class (:meth:`persona.models.base.Recommender.update`) builds one :class:`UpdateBatch` -- the
model's id maps grown by the batch's new users and items (appended; old indices keep their
meaning), the batch's events re-indexed into them, and the merged seen-items matrix -- and each
model's ``_update(batch)`` folds it into its own state.

The merged matrix follows the rules of :class:`~persona.data.Interactions` exactly: it equals
``train.concat(new).matrix`` for the ``aggregate`` the model was fitted with (``sum`` and
``count`` add, ``max`` keeps the larger weight, ``last`` the batch's weight, the batch being the
later events). Nothing here writes into an array the model holds: every result is a new array,
so a failed update leaves the model as it was.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..data.idmap import IdMap
from ..data.interactions import Interactions
from ..errors import DataError

__all__ = ["UpdateBatch", "merge_matrices", "grow_csr", "grow_rows", "grow_vector", "replace_rows", "check_batch", "stored"]


def grow_csr(m: sp.csr_matrix, shape: tuple[int, int]) -> sp.csr_matrix:
    """``m`` with empty rows and columns appended up to ``shape`` (no copy of the entries)."""
    m = m.tocsr()
    rows, cols = shape
    if m.shape == (rows, cols):
        return m
    indptr = m.indptr
    if rows > m.shape[0]:
        indptr = np.concatenate([indptr, np.full(rows - m.shape[0], indptr[-1], dtype=indptr.dtype)])
    return sp.csr_matrix((m.data, m.indices, indptr), shape=(rows, cols))


def grow_rows(a: np.ndarray, n: int, fill=0) -> np.ndarray:
    """``a`` (first axis) grown to ``n`` rows filled with ``fill``; a new array."""
    out = np.full((n, *a.shape[1:]), fill, dtype=a.dtype)
    out[:len(a)] = a
    return out


def grow_vector(a: np.ndarray | None, n: int, fill=0) -> np.ndarray | None:
    return None if a is None else grow_rows(np.asarray(a), n, fill)


def _coo(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = m.tocoo()
    return c.row.astype(np.int64), c.col.astype(np.int64), c.data


def merge_matrices(old: sp.csr_matrix, new: sp.csr_matrix, aggregate: str) -> sp.csr_matrix:
    """The aggregated matrix of old and new events, as :class:`~persona.data.Interactions` builds it.

    Both are already aggregated per (user, item) and have the same (grown) shape; ``new`` holds the
    later events. Stored zeros stay stored (an observed pair of weight 0), as in ``Interactions``.
    """
    shape = new.shape
    old = grow_csr(old, shape)
    r0, c0, d0 = _coo(old)
    r1, c1, d1 = _coo(new)
    if aggregate in ("sum", "count"):
        m = sp.csr_matrix((np.concatenate([d0, d1]).astype(np.float32),
                           (np.concatenate([r0, r1]), np.concatenate([c0, c1]))), shape=shape)
        m.sum_duplicates()
    else:
        key0 = r0 * shape[1] + c0
        key1 = r1 * shape[1] + c1
        if aggregate == "last":  # the batch's entry replaces the old one
            keep = ~np.isin(key0, key1)
            key = np.concatenate([key0[keep], key1])
            val = np.concatenate([d0[keep], d1])
        else:  # max
            key = np.concatenate([key0, key1])
            val = np.concatenate([d0, d1])
            order = np.lexsort((val, key))
            ks = key[order]
            last = np.r_[ks[1:] != ks[:-1], True] if len(ks) else np.zeros(0, bool)
            key, val = ks[last], val[order][last]
        m = sp.csr_matrix((val.astype(np.float32), (key // shape[1], key % shape[1])), shape=shape)
    m.sort_indices()
    m.data = m.data.astype(np.float32, copy=False)
    return m


class UpdateBatch:
    """A batch of new events seen from a fitted model: grown maps, re-indexed events, merged matrix.

    Attributes
    ----------
    inter : Interactions
        The batch in the grown maps (events sorted by user, then time).
    user_map, item_map : IdMap
        The model's maps with the batch's unseen ids appended.
    n_users_old, n_items_old : int
        The sizes before the batch: indices from there on are new users / items.
    old_user_map, old_item_map : IdMap
        The model's maps before the batch.
    old_user_items : scipy.sparse.csr_matrix
        The model's seen-items matrix before the batch (old shape).
    user_items : scipy.sparse.csr_matrix
        The merged seen-items matrix (new shape).
    users, items : int arrays
        The distinct users and items with events in the batch (sorted).
    """

    def __init__(self, model, new: Interactions, aggregate: str) -> None:
        self.n_users_old, self.n_items_old = len(model.user_map_), len(model.item_map_)
        self.old_user_map, self.old_item_map = model.user_map_, model.item_map_
        self.user_map: IdMap = model.user_map_.grow(new.user_ids)
        self.item_map: IdMap = model.item_map_.grow(new.item_ids)
        self.inter = new.with_maps(self.user_map, self.item_map)
        self.old_user_items = model.user_items_.tocsr()
        self.user_items = merge_matrices(self.old_user_items, self.inter.matrix, aggregate)
        self.users = np.unique(self.inter.users).astype(np.int64)
        self.items = np.unique(self.inter.items).astype(np.int64)

    @property
    def n_users(self) -> int:
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    @property
    def new_users(self) -> np.ndarray:
        return np.arange(self.n_users_old, self.n_users, dtype=np.int64)

    @property
    def new_items(self) -> np.ndarray:
        return np.arange(self.n_items_old, self.n_items, dtype=np.int64)

    def old_rows(self) -> sp.csr_matrix:
        """The old seen-items matrix grown to the new shape (empty rows / columns for new ids)."""
        return grow_csr(self.old_user_items, (self.n_users, self.n_items))


def check_batch(new, aggregate: str, who: str) -> None:
    """DataError unless ``new`` is an Interactions built with the model's ``aggregate``."""
    if not isinstance(new, Interactions):
        raise DataError(f"{who}.update: expected a persona.Interactions of the new events, got "
                        f"{type(new).__name__}; build one with ps.Interactions.from_frame(...) or "
                        "store.interactions(since=...)")
    if new.aggregate != aggregate:
        raise DataError(f"{who}.update: expected new events aggregated like the training data "
                        f"(aggregate={aggregate!r}), got aggregate={new.aggregate!r}; build the batch with "
                        f"aggregate={aggregate!r}")
    bad = ~np.isfinite(new.weights)
    if bad.any():
        raise DataError(f"{who}.update: expected finite event weights, got {int(bad.sum())} non-finite; "
                        "fix or drop those events")


def replace_rows(old: sp.csr_matrix, rows: np.ndarray, block: sp.csr_matrix) -> sp.csr_matrix:
    """A copy of ``old`` with row ``rows[j]`` replaced by row ``j`` of ``block`` (same width)."""
    old = old.tocsr()
    drop = np.zeros(old.shape[0], dtype=bool)
    drop[rows] = True
    o = old.tocoo()
    keep = ~drop[o.row]
    b = block.tocoo()
    r = np.concatenate([o.row[keep], np.asarray(rows)[b.row]])
    c = np.concatenate([o.col[keep], b.col])
    d = np.concatenate([o.data[keep], b.data]).astype(old.dtype)
    out = sp.csr_matrix((d, (r, c)), shape=old.shape, dtype=old.dtype)
    out.sort_indices()
    return out


def stored(m: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether each ``(rows[j], cols[j])`` is a stored entry of ``m`` (a stored zero counts)."""
    pos = sp.csr_matrix((np.ones(m.nnz, dtype=np.float32), m.indices, m.indptr), shape=m.shape)
    return np.asarray(pos[rows, cols]).ravel() > 0
