"""Numba version of the top-k kernel (same contract as the C++ one in csrc/include/persona/topk.h).

Imported lazily: compiling happens on first use (and is cached on disk), never at ``import persona``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(inline="always")
def _before(s_a, i_a, s_b, i_b):
    return s_a > s_b or (s_a == s_b and i_a < i_b)


@njit(inline="always")
def _sift_down(hs, hi, size, pos):
    # heap root = worst kept candidate
    while True:
        left = 2 * pos + 1
        right = left + 1
        w = pos
        if left < size and _before(hs[w], hi[w], hs[left], hi[left]):
            w = left
        if right < size and _before(hs[w], hi[w], hs[right], hi[right]):
            w = right
        if w == pos:
            return
        hs[w], hs[pos] = hs[pos], hs[w]
        hi[w], hi[pos] = hi[pos], hi[w]
        pos = w


@njit(inline="always")
def _push(hs, hi, size, k, s, i):
    if s != s:
        s = -np.inf
    if size < k:
        pos = size
        hs[pos] = s
        hi[pos] = i
        size += 1
        while pos > 0:
            p = (pos - 1) // 2
            if _before(hs[p], hi[p], hs[pos], hi[pos]):
                hs[p], hs[pos] = hs[pos], hs[p]
                hi[p], hi[pos] = hi[pos], hi[p]
                pos = p
            else:
                break
    elif k > 0 and _before(s, i, hs[0], hi[0]):
        hs[0] = s
        hi[0] = i
        _sift_down(hs, hi, size, 0)
    return size


@njit(parallel=True, cache=True, nogil=True)
def topk_numba(scores, k, excl_indptr, excl_indices, allow_indptr, allow_indices, mask,
               has_excl, has_allow, has_mask):
    m, n_items = scores.shape
    out_idx = np.full((m, k), -1, dtype=np.int64)
    out_score = np.full((m, k), -np.inf, dtype=np.float32)
    for r in prange(m):
        marks = np.zeros(n_items, dtype=np.uint8)
        # a row keeps at most n_items distinct items, however large k is
        cap = max(min(k, n_items), 1)
        hs = np.empty(cap, dtype=np.float32)
        hi = np.empty(cap, dtype=np.int64)
        size = 0
        if has_excl:
            for j in range(excl_indptr[r], excl_indptr[r + 1]):
                marks[excl_indices[j]] = 1
        if has_allow:
            for j in range(allow_indptr[r], allow_indptr[r + 1]):
                i = allow_indices[j]
                if marks[i] != 0 or (has_mask and not mask[i]):
                    continue
                marks[i] = 2
                size = _push(hs, hi, size, k, scores[r, i], i)
        else:
            for i in range(n_items):
                if marks[i] != 0 or (has_mask and not mask[i]):
                    continue
                size = _push(hs, hi, size, k, scores[r, i], i)
        # drain best-first
        for pos in range(size - 1, -1, -1):
            out_idx[r, pos] = hi[0]
            out_score[r, pos] = hs[0]
            hs[0] = hs[pos]
            hi[0] = hi[pos]
            _sift_down(hs, hi, pos, 0)
    return out_idx, out_score
