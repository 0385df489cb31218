"""Numba kernels of Bayesian Personalised Ranking: lock-free (hogwild) SGD over sampled triples.

Plain arrays in, plain arrays out; the model (:class:`persona.models.bpr.BPR`) owns ids, seeds and
progress. This module imports Numba at its top, so import it lazily (inside ``fit``): nothing here
compiles at ``import persona``. Kernels are ``njit(cache=True)`` and compile once per machine.

Layout of the factors (the same as implicit's): ``user_factors`` is (n_users, f + 1) float32 whose
last column is the constant 1.0, ``item_factors`` is (n_items, f + 1) float32 whose last column is
the item bias. A score is then one dot product, ``user_factors[u] @ item_factors[i]``.

Randomness: a splitmix64 generator per chunk of samples, seeded from ``(seed, chunk)``. Chunks are
fixed by the number of samples, not by the number of threads, so one thread replays the same
updates in the same order for the same seed; several threads race on shared rows (hogwild), which
changes the result slightly from run to run but not its quality.

The slow, obviously-correct reference of one update lives in ``persona.kernels._bpr_reference``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["bpr_epoch", "bpr_update_triples", "sample_negatives", "popularity_cdf", "SAMPLES_PER_CHUNK",
           "MAX_NEGATIVE_TRIES", "POPULARITY_EXPONENT"]

#: Samples one chunk (one RNG stream, one task for a thread) processes.
SAMPLES_PER_CHUNK = 2048
#: Draws before a negative is given up for one sample (a user who has nearly every item).
MAX_NEGATIVE_TRIES = 64
#: Exponent of popularity-aware negative sampling (word2vec's unigram^0.75).
POPULARITY_EXPONENT = 0.75

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_CHUNK_MUL = np.uint64(0xD1B54A32D192ED03)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_S11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53


def popularity_cdf(counts: np.ndarray, exponent: float = POPULARITY_EXPONENT) -> np.ndarray:
    """Cumulative sampling weights ``counts ** exponent`` (float64, one per item)."""
    return np.cumsum(np.power(np.asarray(counts, dtype=np.float64), exponent))


# ------------------------------------------------------------------------------------------ RNG
@njit(inline="always")
def _next(state):
    """splitmix64: (new state, 64 random bits)."""
    state = state + _GAMMA
    z = state
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return state, z ^ (z >> _S31)


@njit(inline="always")
def _below(bits, n):
    """An integer in [0, n) from 64 random bits (multiply-shift; n < 2**32)."""
    return np.int64(((bits >> _S32) * np.uint64(n)) >> _S32)


@njit(inline="always")
def _unit(bits):
    """A float in [0, 1) from 64 random bits."""
    return np.float64(bits >> _S11) * _INV53


@njit(inline="always")
def _stream(seed, chunk):
    """The initial state of chunk ``chunk``'s stream: seed and chunk mixed through splitmix64."""
    state = np.uint64(seed) ^ (np.uint64(chunk) * _CHUNK_MUL)
    state, z = _next(state)
    return z


# ------------------------------------------------------------------------------------------ sampling
@njit(inline="always")
def _contains(indices, lo, hi, item):
    """Binary search of ``item`` in the sorted slice ``indices[lo:hi]``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        v = indices[mid]
        if v < item:
            lo = mid + 1
        elif v > item:
            hi = mid
        else:
            return True
    return False


@njit(inline="always")
def _first_above(cdf, r):
    """The first index whose cumulative weight exceeds ``r`` (zero-weight items are never hit)."""
    lo = 0
    hi = cdf.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if cdf[mid] > r:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(inline="always")
def _negative(state, lo, hi, indices, n_items, cdf, use_popularity, max_tries):
    """(state, item the user does not have, or -1 when none can be found).

    Uniform: -1 only when the user has every item. Popularity: -1 after ``max_tries`` rejected draws.
    """
    total = cdf[n_items - 1] if use_popularity else 0.0
    for _ in range(max_tries):
        state, bits = _next(state)
        if use_popularity:
            j = _first_above(cdf, _unit(bits) * total)
            if j >= n_items:  # rounding at the very top of the range
                j = n_items - 1
        else:
            j = _below(bits, n_items)
        if not _contains(indices, lo, hi, j):
            return state, j
    if not use_popularity and hi - lo < n_items:
        # a user who has nearly every item: draw uniformly among the free ones directly, so a
        # uniform negative is missing only when the user has the whole catalogue
        state, bits = _next(state)
        k = _below(bits, n_items - (hi - lo))
        p = lo
        for j in range(n_items):
            owned = False
            while p < hi and indices[p] <= j:
                if indices[p] == j:
                    owned = True
                p += 1
            if owned:
                continue
            if k == 0:
                return state, np.int64(j)
            k -= 1
    return state, np.int64(-1)


@njit(cache=True, nogil=True)
def sample_negatives(indptr, indices, users, n_items, cdf, use_popularity, seed, max_tries):
    """One negative per entry of ``users`` (-1 where none was found), from one RNG stream.

    The same sampler the training kernel runs; exposed for tests and diagnostics.
    ``indices`` must be sorted within each row of the CSR structure ``(indptr, indices)``.
    """
    out = np.empty(users.shape[0], dtype=np.int64)
    state = _stream(seed, 0)
    for s in range(users.shape[0]):
        u = users[s]
        state, j = _negative(state, indptr[u], indptr[u + 1], indices, n_items, cdf, use_popularity, max_tries)
        out[s] = j
    return out


# ------------------------------------------------------------------------------------------ SGD
@njit(inline="always")
def _step(user_factors, item_factors, u, i, j, lr, reg, n_latent):
    """One SGD step on -ln sigmoid(x_uij) + reg/2 (|p_u|^2 + |q_i|^2 + |q_j|^2 + b_i^2 + b_j^2).

    Returns (loss before the step, 1 if the pair was ordered correctly before the step, else 0).
    """
    x = np.float64(item_factors[i, n_latent]) - np.float64(item_factors[j, n_latent])
    for f in range(n_latent):
        x += np.float64(user_factors[u, f]) * (np.float64(item_factors[i, f]) - np.float64(item_factors[j, f]))
    # z = d ln sigmoid(x) / dx = sigmoid(-x), and the loss softplus(-x), both without overflow
    if x >= 0.0:
        e = math.exp(-x)
        z = e / (1.0 + e)
        loss = math.log1p(e)
    else:
        e = math.exp(x)
        z = 1.0 / (1.0 + e)
        loss = -x + math.log1p(e)
    for f in range(n_latent):
        pu = np.float64(user_factors[u, f])
        qi = np.float64(item_factors[i, f])
        qj = np.float64(item_factors[j, f])
        user_factors[u, f] = pu + lr * (z * (qi - qj) - reg * pu)
        item_factors[i, f] = qi + lr * (z * pu - reg * qi)
        item_factors[j, f] = qj + lr * (-z * pu - reg * qj)
    bi = np.float64(item_factors[i, n_latent])
    bj = np.float64(item_factors[j, n_latent])
    item_factors[i, n_latent] = bi + lr * (z - reg * bi)
    item_factors[j, n_latent] = bj + lr * (-z - reg * bj)
    return loss, 1 if x > 0.0 else 0


@njit(cache=True, nogil=True)
def bpr_update_triples(user_factors, item_factors, users, pos, neg, lr, reg):
    """Apply the SGD step to each (users[s], pos[s], neg[s]) in order; returns per-triple losses.

    The training kernel's own update, serially, for tests against the numpy reference.
    """
    n_latent = user_factors.shape[1] - 1
    losses = np.empty(users.shape[0], dtype=np.float64)
    for s in range(users.shape[0]):
        loss, _ = _step(user_factors, item_factors, users[s], pos[s], neg[s], lr, reg, n_latent)
        losses[s] = loss
    return losses


@njit(nogil=True)
def _chunk(user_factors, item_factors, sample_users, indptr, indices, cdf, use_popularity, start, stop,
           lr, reg, state, max_tries):
    """Samples ``start``..``stop`` of one epoch from one RNG stream: (loss, correct, skipped)."""
    nnz = indices.shape[0]
    n_items = item_factors.shape[0]
    n_latent = user_factors.shape[1] - 1
    loss = 0.0
    correct = 0
    skipped = 0
    for _ in range(start, stop):
        state, bits = _next(state)
        k = _below(bits, nnz)
        u = sample_users[k]
        i = indices[k]
        state, j = _negative(state, indptr[u], indptr[u + 1], indices, n_items, cdf, use_popularity, max_tries)
        if j < 0:
            skipped += 1
            continue
        step_loss, ok = _step(user_factors, item_factors, u, i, j, lr, reg, n_latent)
        loss += step_loss
        correct += ok
    return loss, correct, skipped


@njit(parallel=True, cache=True, nogil=True)
def bpr_epoch(user_factors, item_factors, sample_users, indptr, indices, cdf, use_popularity,
              n_samples, lr, reg, seed, max_tries):
    """One pass of ``n_samples`` SGD steps; returns (summed loss, correctly ordered, skipped).

    Each sample draws a stored (user, positive item) entry uniformly -- so active users and
    popular items are seen in proportion to their data, as in implicit -- and a negative the user
    does not have (uniformly, or proportional to ``cdf``'s weights). Chunks of
    :data:`SAMPLES_PER_CHUNK` samples run in parallel without locks (hogwild); a sample whose
    negative cannot be found in ``max_tries`` draws is skipped and counted.

    Parameters
    ----------
    user_factors, item_factors : float32 (n, f + 1), updated in place (see the module docstring)
    sample_users : int32 (nnz,) -- the user of each stored entry
    indptr : int64 (n_users + 1,), indices : int32 (nnz,) -- CSR rows, sorted within each row
    cdf : float64 (n_items,) -- cumulative negative-sampling weights (used when ``use_popularity``)
    """
    n_chunks = max(1, (n_samples + SAMPLES_PER_CHUNK - 1) // SAMPLES_PER_CHUNK)
    loss = np.zeros(n_chunks, dtype=np.float64)
    correct = np.zeros(n_chunks, dtype=np.int64)
    skipped = np.zeros(n_chunks, dtype=np.int64)
    for c in prange(n_chunks):
        start = c * SAMPLES_PER_CHUNK
        loss[c], correct[c], skipped[c] = _chunk(
            user_factors, item_factors, sample_users, indptr, indices, cdf, use_popularity,
            start, min(n_samples, start + SAMPLES_PER_CHUNK), lr, reg, _stream(seed, c), max_tries)
    return loss.sum(), correct.sum(), skipped.sum()
