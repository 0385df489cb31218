"""Slow, obviously-correct numpy references of the ALS kernels in :mod:`persona.kernels.als`.

Each row's system is built densely from the definition and solved with ``np.linalg.solve`` in
float64; the tests check the Numba kernels against these on random inputs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["als_half_step_reference", "als_loss_reference", "mf_half_step_reference"]


def als_half_step_reference(W, Y, reg: float, alpha: float, scaling: str = "constant") -> np.ndarray:
    """Exact implicit-ALS half-step: for every row u, argmin_x sum_i c_ui (p_ui - x.y_i)^2 + reg |x|^2.

    ``scaling="count"``: the penalty is ``reg * n_u * |x|^2`` with ``n_u`` the row's stored entries.

    ``W`` is a (rows x columns) sparse weight matrix; duplicates are summed first (the kernels
    require canonical input). Returns float64 (rows, f).

    >>> W = sp.csr_matrix(np.array([[1.0, 0.0, 2.0]]))
    >>> np.round(als_half_step_reference(W, np.eye(3, 2), 0.1, 1.0), 3).tolist()
    [[0.952, 0.0]]
    """
    W = sp.csr_matrix(W, dtype=np.float64)
    W.sum_duplicates()
    Y = np.asarray(Y, dtype=np.float64)
    n, m = W.shape
    f = Y.shape[1]
    out = np.zeros((n, f))
    dense = W.toarray()
    for u in range(n):
        observed = np.zeros(m, dtype=bool)
        observed[W.indices[W.indptr[u]:W.indptr[u + 1]]] = True
        c = np.where(observed, 1.0 + alpha * dense[u], 1.0)
        p = observed.astype(np.float64)
        if scaling == "count" and not observed.any():
            continue  # b = 0: the solution is 0 (and the system, without a penalty, may be singular)
        lam = reg * observed.sum() if scaling == "count" else reg
        A = Y.T @ (c[:, None] * Y) + lam * np.eye(f)
        b = Y.T @ (c * p)
        out[u] = np.linalg.solve(A, b)
    return out


def als_loss_reference(W, X, Y, reg: float, alpha: float, scaling: str = "constant") -> float:
    """The implicit-ALS objective summed densely over every (row, column) pair.

    ``scaling="count"``: each vector's penalty is multiplied by its row's / column's stored entries.

    >>> W = sp.csr_matrix(np.array([[1.0, 0.0]]))
    >>> als_loss_reference(W, np.ones((1, 1)), np.ones((2, 1)), 0.5, 1.0)
    2.5
    """
    W = sp.csr_matrix(W, dtype=np.float64)
    W.sum_duplicates()
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    observed = _stored(W)
    c = np.where(observed, 1.0 + alpha * W.toarray(), 1.0)
    p = observed.astype(np.float64)
    err = p - X @ Y.T
    if scaling == "count":
        penalty = (np.sum(observed.sum(axis=1) * np.sum(X * X, axis=1))
                   + np.sum(observed.sum(axis=0) * np.sum(Y * Y, axis=1)))
    else:
        penalty = np.sum(X * X) + np.sum(Y * Y)
    return float(np.sum(c * err * err) + reg * penalty)


def _stored(W: sp.csr_matrix) -> np.ndarray:
    """Stored entries (explicit zeros included) as a dense bool array."""
    out = np.zeros(W.shape, dtype=bool)
    rows = np.repeat(np.arange(W.shape[0]), np.diff(W.indptr))
    out[rows, W.indices] = True
    return out


def mf_half_step_reference(R, Y, y_bias, global_mean: float, reg: float):
    """Exact biased explicit-ALS half-step with weighted-lambda regularisation.

    For row u with n_u ratings: argmin_{x, b} sum_i (r_ui - mu - y_bias_i - b - x.y_i)^2
    + reg * n_u * (|x|^2 + b^2). Returns (X float64 (rows, f), x_bias float64 (rows,)).

    >>> X, b = mf_half_step_reference(sp.csr_matrix(np.array([[4.0, 2.0]])), np.zeros((2, 1)), np.zeros(2), 3.0, 0.5)
    >>> b.tolist()
    [0.0]
    """
    R = sp.csr_matrix(R, dtype=np.float64)
    R.sum_duplicates()
    Y = np.asarray(Y, dtype=np.float64)
    y_bias = np.asarray(y_bias, dtype=np.float64)
    n = R.shape[0]
    f = Y.shape[1]
    X = np.zeros((n, f))
    bx = np.zeros(n)
    for u in range(n):
        cols = R.indices[R.indptr[u]:R.indptr[u + 1]]
        if len(cols) == 0:
            continue
        r = R.data[R.indptr[u]:R.indptr[u + 1]]
        Z = np.hstack([Y[cols], np.ones((len(cols), 1))])
        t = r - global_mean - y_bias[cols]
        A = Z.T @ Z + reg * len(cols) * np.eye(f + 1)
        z = np.linalg.solve(A, Z.T @ t)
        X[u], bx[u] = z[:f], z[f]
    return X, bx
