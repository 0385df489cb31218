"""Slow, obviously-correct numpy references of the kernels, used by tests and as a last resort."""

from __future__ import annotations

import numpy as np


def topk_reference(scores, k, exclude_indptr=None, exclude_indices=None, allow_indptr=None,
                   allow_indices=None, mask=None):
    """Top-k per row by a full stable sort: higher score first, ties by lower index, NaN as -inf."""
    scores = np.asarray(scores, dtype=np.float32)
    m, n_items = scores.shape
    out_idx = np.full((m, k), -1, dtype=np.int64)
    out_score = np.full((m, k), -np.inf, dtype=np.float32)
    for r in range(m):
        allowed = np.ones(n_items, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).copy()
        if allow_indptr is not None:
            listed = np.zeros(n_items, dtype=bool)
            listed[allow_indices[allow_indptr[r]:allow_indptr[r + 1]]] = True
            allowed &= listed
        if exclude_indptr is not None:
            allowed[exclude_indices[exclude_indptr[r]:exclude_indptr[r + 1]]] = False
        cand = np.flatnonzero(allowed)
        s = scores[r, cand].copy()
        s[np.isnan(s)] = -np.inf
        order = np.lexsort((cand, -s.astype(np.float64)))[:k]
        out_idx[r, :len(order)] = cand[order]
        out_score[r, :len(order)] = s[order]
    return out_idx, out_score
