"""Numba kernels of the linear contextual bandits (:mod:`persona.marketing.bandits`).

Per action ``a`` the bandits keep the ridge statistics of the rounds where ``a`` was shown::

    precision[a]  = reg * I + sum x x^T          (d x d)
    covariance[a] = inverse(precision[a])        (kept up to date by Sherman-Morrison)
    b[a]          = sum reward * x               (d)
    theta[a]      = covariance[a] @ b[a]         (the ridge estimate)

- :func:`ridge_update` folds a batch of (context, action, reward) rows into them, one rank-one
  Sherman-Morrison step per row, in row order (serial: rows of one action depend on each other).
- :func:`posterior_moments` gives, for every round and action, the mean ``theta[a] . x`` and the
  width ``sqrt(x^T covariance[a] x)`` (LinUCB's bonus, Thompson sampling's posterior std).
- :func:`ts_probabilities` gives the probability that each action has the largest of independent
  Gaussian scores ``N(mean, std^2)`` -- Thompson sampling's propensities -- by numerical
  integration of the exact one-dimensional formula
  ``P(a) = E_z[prod_{b != a} Phi((mean_a + std_a z - mean_b) / std_b)]``, z standard normal
  (Gauss-Legendre panels on one grid over the winning score, laid out on every action's own
  scale; error ~1e-9).

This module imports Numba at its top: import it lazily (the bandits do, inside their methods).
Kernels are ``njit(cache=True)`` and compile once per machine. The slow numpy references live in
:mod:`persona.kernels._bandit_reference`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["ridge_update", "posterior_moments", "ts_probabilities", "gauss_legendre", "PRUNE_SIGMAS"]

#: Actions whose score is below another's by more than this many standard deviations (on both
#: sides) are given probability 0 and left out of the products (error below 1e-15).
PRUNE_SIGMAS = 8.0
_PANEL_SIGMAS = 2.0  # the widest panel, in standard deviations of the narrowest action covering it
_MAX_PANELS = 1_000_000  # a guard against a grid that cannot advance (absurdly scaled inputs)
_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gauss_legendre(n_nodes: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the ``n_nodes``-point Gauss-Legendre rule on [-1, 1] (for :func:`ts_probabilities`)."""
    return np.polynomial.legendre.leggauss(int(n_nodes))


@njit(cache=True)
def ridge_update(precision, covariance, b, counts, X, actions, rewards):  # pragma: no cover - compiled
    """Fold rows ``(X[i], actions[i], rewards[i])`` into the per-action ridge statistics, in place."""
    n, d = X.shape
    sx = np.empty(d)
    for i in range(n):
        a = actions[i]
        x = X[i]
        cov = covariance[a]
        # Sherman-Morrison: (P + x x^T)^-1 = S - (S x)(S x)^T / (1 + x^T S x), S symmetric
        denom = 1.0
        for j in range(d):
            s = 0.0
            for l in range(d):
                s += cov[j, l] * x[l]
            sx[j] = s
            denom += x[j] * s
        for j in range(d):
            f = sx[j] / denom
            for l in range(d):
                cov[j, l] -= f * sx[l]
        prec = precision[a]
        r = rewards[i]
        for j in range(d):
            xj = x[j]
            for l in range(d):
                prec[j, l] += xj * x[l]
            b[a, j] += r * xj
        counts[a] += 1


@njit(cache=True, parallel=True)
def posterior_moments(X, theta, covariance):  # pragma: no cover - compiled
    """``mean[i, a] = theta[a] . X[i]`` and ``width[i, a] = sqrt(X[i]^T covariance[a] X[i])``."""
    n, d = X.shape
    n_actions = theta.shape[0]
    mean = np.empty((n, n_actions))
    width = np.empty((n, n_actions))
    for i in prange(n):
        x = X[i]
        for a in range(n_actions):
            m = 0.0
            q = 0.0
            cov = covariance[a]
            for j in range(d):
                m += theta[a, j] * x[j]
                s = 0.0
                for l in range(d):
                    s += cov[j, l] * x[l]
                q += x[j] * s
            mean[i, a] = m
            width[i, a] = math.sqrt(q) if q > 0.0 else 0.0
    return mean, width


@njit(cache=True, parallel=True)
def ts_probabilities(mean, std, gl_nodes, gl_weights):  # pragma: no cover - compiled
    """P(action a has the largest of independent scores N(mean, std^2)), per round: (n, n_actions).

    ``P(a) = int f_a(t) prod_{c != a} F_c(t) dt`` over the winning score t, for all actions on one
    grid: Gauss-Legendre panels (``gl_nodes``, ``gl_weights`` on [-1, 1]) laid from
    ``lo = max_c(mean_c - 8 std_c)`` (the maximum is below it with probability < 1e-15) to
    ``hi = max_c(mean_c + 8 std_c)``, each panel at most 2 standard deviations of the narrowest
    action whose +-8 std range covers it, and cut where a range begins. Every density and CDF is thus
    resolved on its own scale however different the widths (error ~1e-9), and a row costs
    O(n_actions x panels) with at most min(8 max(std) / min(std), 9 n_actions) + 1 panels.
    The products over the other actions come from prefix / suffix products.

    Actions more than 8 standard deviations behind get 0. Zero widths: a row with all widths 0
    splits its probability equally among the largest means; a zero width beside positive ones is
    taken as 1e-9 of the largest width. Rows are normalised to sum to 1.
    """
    n, n_actions = mean.shape
    out = np.zeros((n, n_actions))
    for i in prange(n):
        m = mean[i]
        smax = 0.0
        for c in range(n_actions):
            smax = max(smax, std[i, c])
        if smax == 0.0:
            best = -np.inf
            for c in range(n_actions):
                best = max(best, m[c])
            k = 0
            for c in range(n_actions):
                if m[c] == best:
                    k += 1
            for c in range(n_actions):
                if m[c] == best:
                    out[i, c] = 1.0 / k
            continue
        s = np.empty(n_actions)
        for c in range(n_actions):
            s[c] = max(std[i, c], 1e-9 * smax)
        lo = -np.inf
        hi = -np.inf
        for c in range(n_actions):
            lo = max(lo, m[c] - PRUNE_SIGMAS * s[c])
            hi = max(hi, m[c] + PRUNE_SIGMAS * s[c])
        n_alive = 0
        for c in range(n_actions):
            if m[c] + PRUNE_SIGMAS * s[c] >= lo:
                n_alive += 1
        idx = np.empty(n_alive, dtype=np.int64)
        k = 0
        for c in range(n_actions):
            if m[c] + PRUNE_SIGMAS * s[c] >= lo:
                idx[k] = c
                k += 1
        cdf = np.empty(n_alive)
        pdf = np.empty(n_alive)
        prefix = np.empty(n_alive + 1)
        acc = np.zeros(n_alive)
        t = lo
        for _ in range(_MAX_PANELS):
            if not t < hi:
                break
            step = np.inf
            nxt = hi
            for j in range(n_alive):
                c = idx[j]
                start = m[c] - PRUNE_SIGMAS * s[c]
                if start <= t and t < m[c] + PRUNE_SIGMAS * s[c]:
                    step = min(step, _PANEL_SIGMAS * s[c])
                elif start > t:
                    nxt = min(nxt, start)
            if step == np.inf:  # no action's range covers t: nothing to integrate until the next one
                t = nxt
                continue
            t1 = min(t + step, nxt)
            if not t1 > t:
                break
            half = 0.5 * (t1 - t)
            mid = 0.5 * (t1 + t)
            for g in range(gl_nodes.shape[0]):
                x = mid + half * gl_nodes[g]
                for j in range(n_alive):
                    c = idx[j]
                    u = (x - m[c]) / s[c]
                    cdf[j] = 0.5 * math.erfc(-u * _SQRT1_2)
                    pdf[j] = math.exp(-0.5 * u * u) * _INV_SQRT_2PI / s[c]
                prefix[0] = 1.0
                for j in range(n_alive):
                    prefix[j + 1] = prefix[j] * cdf[j]
                suffix = 1.0
                w = half * gl_weights[g]
                for j in range(n_alive - 1, -1, -1):
                    acc[j] += w * pdf[j] * prefix[j] * suffix
                    suffix *= cdf[j]
            t = t1
        total = 0.0
        for j in range(n_alive):
            total += acc[j]
        if total > 0.0:
            for j in range(n_alive):
                out[i, idx[j]] = acc[j] / total
    return out
