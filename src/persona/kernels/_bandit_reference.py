"""Slow, obviously-correct numpy references of :mod:`persona.kernels.bandit` (used by the tests, and as
the fallback when Numba is missing). Same signatures and results."""

from __future__ import annotations

import math

import numpy as np

PRUNE_SIGMAS = 8.0


def ridge_update(precision, covariance, b, counts, X, actions, rewards):
    """One Sherman-Morrison step per row, in row order, in place."""
    for x, a, r in zip(np.asarray(X, dtype=np.float64), actions, rewards):
        s = covariance[a]
        sx = s @ x
        covariance[a] = s - np.outer(sx, sx) / (1.0 + x @ sx)
        precision[a] += np.outer(x, x)
        b[a] += r * x
        counts[a] += 1


def posterior_moments(X, theta, covariance):
    n, n_actions = len(X), len(theta)
    mean = np.empty((n, n_actions))
    width = np.empty((n, n_actions))
    for i in range(n):
        for a in range(n_actions):
            mean[i, a] = theta[a] @ X[i]
            q = X[i] @ covariance[a] @ X[i]
            width[i, a] = math.sqrt(q) if q > 0 else 0.0
    return mean, width


def ts_probabilities(mean, std, gl_nodes=None, gl_weights=None):
    """P(a has the largest of independent N(mean, std^2) scores) by scipy's adaptive quadrature of
    ``int f_a(t) prod_{c != a} F_c(t) dt`` (the rule arguments are ignored). Same conventions as the
    kernel: all-zero widths split among the largest means, a zero width beside positive ones is
    1e-9 of the largest, rows normalised."""
    from scipy.integrate import quad
    from scipy.stats import norm

    mean = np.asarray(mean, dtype=np.float64)
    n, n_actions = mean.shape
    out = np.zeros((n, n_actions))
    for i in range(n):
        m = mean[i]
        smax = float(np.max(std[i]))
        if smax == 0.0:
            best = m == m.max()
            out[i, best] = 1.0 / best.sum()
            continue
        s = np.maximum(np.asarray(std[i], dtype=np.float64), 1e-9 * smax)
        lo, hi = np.max(m - PRUNE_SIGMAS * s), np.max(m + PRUNE_SIGMAS * s)
        points = sorted({float(np.clip(m[c] + k * s[c], lo, hi)) for c in range(n_actions) for k in (-2, 0, 2)})
        for a in range(n_actions):
            def f(t, a=a):
                v = norm.pdf(t, m[a], s[a])
                for c in range(n_actions):
                    if c != a:
                        v *= norm.cdf(t, m[c], s[c])
                return v
            # over a's own support only, cut every standard deviation of a: adaptive quadrature on a
            # wide piece can miss most of a narrow density's tail (it was 1.5e-6 off for a width
            # ratio of 1400, found by the property test)
            a_lo, a_hi = max(lo, m[a] - PRUNE_SIGMAS * s[a]), min(hi, m[a] + PRUNE_SIGMAS * s[a])
            if a_hi <= a_lo:
                continue
            own = [m[a] + k * s[a] for k in range(-int(PRUNE_SIGMAS), int(PRUNE_SIGMAS) + 1)]
            edges = sorted({a_lo, a_hi, *(p for p in [*points, *own] if a_lo < p < a_hi)})
            out[i, a] = sum(quad(f, e0, e1, epsabs=1e-13, epsrel=1e-11, limit=200)[0]
                            for e0, e1 in zip(edges[:-1], edges[1:]) if e1 > e0)
        out[i] /= out[i].sum()
    return out
