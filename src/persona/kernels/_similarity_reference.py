"""Slow, obviously-correct numpy reference of the top-k row similarity (used by tests and as a fallback).

Dense: it builds the full rows x rows Gram matrix, so keep it to small inputs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def topk_similarity_reference(matrix, k: int, *, shrinkage: float = 0.0, normalize: bool = True) -> sp.csr_matrix:
    """Top-``k`` most similar other rows of ``matrix`` by a dense Gram matrix and a full sort.

    sim(i, j) = dot(i, j) / (norm_i * norm_j + shrinkage) when ``normalize``, else dot(i, j), computed
    in float64 and rounded to float32; pairs with dot == 0, the row itself and zero denominators are
    left out; the rest is ordered by float32 value, higher first, ties by lower index.
    Returns an (n_rows, n_rows) float32 CSR matrix whose rows list their neighbours best first.
    """
    a = sp.csr_matrix(matrix, dtype=np.float64).toarray()  # toarray sums duplicate entries
    n = a.shape[0]
    gram = a @ a.T
    norms = np.sqrt((a * a).sum(axis=1))
    indptr = [0]
    indices: list[np.ndarray] = []
    data: list[np.ndarray] = []
    for i in range(n):
        dots = gram[i]
        keep = dots != 0
        keep[i] = False
        if normalize:
            den = norms[i] * norms + shrinkage
            keep &= den > 0
            values = np.divide(dots, den, out=np.zeros(n), where=den > 0)
        else:
            values = dots
        cand = np.flatnonzero(keep)
        v32 = values[cand].astype(np.float32)
        order = np.lexsort((cand, -v32.astype(np.float64)))[: max(int(k), 0)]
        indices.append(cand[order])
        data.append(v32[order])
        indptr.append(indptr[-1] + len(order))
    cat_i = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
    cat_d = np.concatenate(data) if data else np.zeros(0, dtype=np.float32)
    return sp.csr_matrix((cat_d.astype(np.float32), cat_i.astype(np.int32), np.asarray(indptr, dtype=np.int64)),
                         shape=(n, n))
