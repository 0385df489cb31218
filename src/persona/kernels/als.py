"""Alternating-least-squares kernels: one half-step of implicit ALS (CG or Cholesky), its loss, and
the explicit-rating (biased, weighted-lambda) half-step behind :class:`persona.MF`.

Implicit feedback (Hu, Koren and Volinsky 2008): every (row ``u``, column ``i``) pair has preference
``p_ui = 1`` when the sparse matrix stores an entry (weight ``w_ui``) and ``0`` otherwise, with
confidence ``c_ui = 1 + alpha * w_ui`` (``1`` for pairs not stored). One half-step minimises, for
every row ``u`` of ``X`` with ``Y`` fixed,

    sum_i c_ui (p_ui - x_u . y_i)^2 + reg |x_u|^2

whose solution solves ``A x_u = b`` with ``A = Y^T Y + Y_u^T (C_u - I) Y_u + reg I`` and
``b = Y_u^T C_u p_u``. ``Y^T Y`` is computed once per half-step; the row-dependent part only touches
the row's stored entries, so conjugate gradient needs just
``A p = (Y^T Y + reg I) p + sum_{i in u} alpha w_ui (y_i . p) y_i`` per step.

The kernels expect canonical CSR input -- no duplicate (row, column) entries, as
``Interactions.matrix`` guarantees -- because a duplicate would count the "+1" of the confidence twice.

Numba compiles them on first use (cached on disk); importing this module compiles nothing, and
``import persona`` does not import it. Rows are independent, so the result of a half-step does not
depend on the number of threads or on scheduling. Slow numpy references live in
:mod:`persona.kernels._als_reference`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..errors import ParameterError

__all__ = [
    "als_half_step_cg",
    "als_half_step_cholesky",
    "als_loss",
    "gramian",
    "mf_half_step",
]

# Rows are dealt to blocks round-robin (block b owns rows b, b + n_blocks, ...), so heavy rows of a
# power-law matrix spread over all threads and each block allocates its scratch vectors once.
_BLOCKS_PER_THREAD = 16


# ------------------------------------------------------------------------------------------ numba kernels
@njit(inline="always")
def _chol_solve(A, b, g):
    """Solve A z = b in place (z in b) for the symmetric positive definite leading g x g block of A.

    Only the lower triangle of A is read; A is overwritten by its Cholesky factor. A non-positive
    pivot (a singular system, possible only with zero regularisation) is floored, so the kernel
    never produces NaN from a rank-deficient row.
    """
    floor = 0.0
    for k in range(g):
        floor = max(floor, abs(A[k, k]))
    floor = floor * 1e-12 + 1e-300
    for j in range(g):
        d = A[j, j]
        for k in range(j):
            d -= A[j, k] * A[j, k]
        if d < floor:
            d = floor
        d = np.sqrt(d)
        A[j, j] = d
        for i in range(j + 1, g):
            s = A[i, j]
            for k in range(j):
                s -= A[i, k] * A[j, k]
            A[i, j] = s / d
    for i in range(g):  # L y = b
        s = b[i]
        for k in range(i):
            s -= A[i, k] * b[k]
        b[i] = s / A[i, i]
    for i in range(g - 1, -1, -1):  # L^T z = y
        s = b[i]
        for k in range(i + 1, g):
            s -= A[k, i] * b[k]
        b[i] = s / A[i, i]


@njit(inline="always")
def _symv(A, v, out, f):
    """out = A v for a symmetric f x f A; four outputs per pass share the loads of v."""
    f4 = f - f % 4
    for k in range(0, f4, 4):
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for j in range(f):
            vj = v[j]
            a0 += A[k, j] * vj
            a1 += A[k + 1, j] * vj
            a2 += A[k + 2, j] * vj
            a3 += A[k + 3, j] * vj
        out[k] = a0
        out[k + 1] = a1
        out[k + 2] = a2
        out[k + 3] = a3
    for k in range(f4, f):
        acc = np.float32(0.0)
        for j in range(f):
            acc += A[k, j] * v[j]
        out[k] = acc


@njit(inline="always")
def _sparse_part(lo, hi, indices, data, Y, v, out, alpha, f, residual):
    """out += sum_{i in row} t_i y_i with t_i = alpha w_i (y_i . v)  (the (C_u - I) part of A v),
    or, when ``residual``, t_i = c_i - alpha w_i (y_i . v)  (b - (C_u - I) part, for r = b - A v).

    Four entries per pass: their dot products share the loads of v and their updates share the
    loads and stores of out, which halves the time of this, the hottest loop of ALS.
    """
    one = np.float32(1.0)
    jj = lo
    while jj + 4 <= hi:
        i0 = indices[jj]
        i1 = indices[jj + 1]
        i2 = indices[jj + 2]
        i3 = indices[jj + 3]
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        s3 = np.float32(0.0)
        for k in range(f):
            vk = v[k]
            s0 += Y[i0, k] * vk
            s1 += Y[i1, k] * vk
            s2 += Y[i2, k] * vk
            s3 += Y[i3, k] * vk
        w0 = alpha * data[jj]
        w1 = alpha * data[jj + 1]
        w2 = alpha * data[jj + 2]
        w3 = alpha * data[jj + 3]
        if residual:
            t0 = (one + w0) - w0 * s0
            t1 = (one + w1) - w1 * s1
            t2 = (one + w2) - w2 * s2
            t3 = (one + w3) - w3 * s3
        else:
            t0 = w0 * s0
            t1 = w1 * s1
            t2 = w2 * s2
            t3 = w3 * s3
        for k in range(f):
            out[k] += t0 * Y[i0, k] + t1 * Y[i1, k] + t2 * Y[i2, k] + t3 * Y[i3, k]
        jj += 4
    while jj < hi:
        i = indices[jj]
        s = np.float32(0.0)
        for k in range(f):
            s += Y[i, k] * v[k]
        w = alpha * data[jj]
        t = ((one + w) - w * s) if residual else w * s
        for k in range(f):
            out[k] += t * Y[i, k]
        jj += 1


@njit(parallel=True, cache=True, fastmath=True, nogil=True)
def _cg_rows(indptr, indices, data, X, Y, A0, alpha, cg_steps, n_blocks, row_reg, per_row):
    n, f = X.shape
    for blk in prange(n_blocks):
        x = np.empty(f, dtype=np.float32)
        r = np.empty(f, dtype=np.float32)
        p = np.empty(f, dtype=np.float32)
        ap = np.empty(f, dtype=np.float32)
        for u in range(blk, n, n_blocks):
            lo = indptr[u]
            hi = indptr[u + 1]
            if lo == hi:
                # b = 0, so the exact solution is 0
                for k in range(f):
                    X[u, k] = 0.0
                continue
            for k in range(f):
                x[k] = X[u, k]
            # r = b - A x, warm-started from the current x
            _symv(A0, x, r, f)
            if per_row:  # A0 lacks the penalty; this row's own one is added here
                lam = np.float32(row_reg[u])
                for k in range(f):
                    r[k] += lam * x[k]
            for k in range(f):
                r[k] = -r[k]
            _sparse_part(lo, hi, indices, data, Y, x, r, alpha, f, True)
            rsold = 0.0
            for k in range(f):
                p[k] = r[k]
                rsold += r[k] * r[k]
            if rsold >= 1e-20:
                for _ in range(cg_steps):
                    _symv(A0, p, ap, f)
                    if per_row:
                        lam = np.float32(row_reg[u])
                        for k in range(f):
                            ap[k] += lam * p[k]
                    _sparse_part(lo, hi, indices, data, Y, p, ap, alpha, f, False)
                    pap = 0.0
                    for k in range(f):
                        pap += p[k] * ap[k]
                    if not pap > 0.0:  # A is positive definite; anything else is round-off at convergence
                        break
                    a = np.float32(rsold / pap)
                    rsnew = 0.0
                    for k in range(f):
                        x[k] += a * p[k]
                        r[k] -= a * ap[k]
                        rsnew += r[k] * r[k]
                    if rsnew < 1e-20:
                        break
                    beta = np.float32(rsnew / rsold)
                    for k in range(f):
                        p[k] = r[k] + beta * p[k]
                    rsold = rsnew
            for k in range(f):
                X[u, k] = x[k]


@njit(parallel=True, cache=True, nogil=True)
def _cholesky_rows(indptr, indices, data, X, Y, A0, alpha, n_blocks, row_reg, per_row):
    n, f = X.shape
    for blk in prange(n_blocks):
        A = np.empty((f, f), dtype=np.float64)
        b = np.empty(f, dtype=np.float64)
        for u in range(blk, n, n_blocks):
            lo = indptr[u]
            hi = indptr[u + 1]
            if lo == hi:
                for k in range(f):
                    X[u, k] = 0.0
                continue
            for k in range(f):
                b[k] = 0.0
                for j in range(k + 1):
                    A[k, j] = A0[k, j]
            if per_row:  # A0 lacks the penalty; this row's own one goes on the diagonal
                lam = np.float64(row_reg[u])
                for k in range(f):
                    A[k, k] += lam
            for jj in range(lo, hi):
                i = indices[jj]
                w = alpha * np.float64(data[jj])
                c = 1.0 + w
                for k in range(f):
                    yk = np.float64(Y[i, k])
                    b[k] += c * yk
                    wy = w * yk
                    for j in range(k + 1):
                        A[k, j] += wy * Y[i, j]
            _chol_solve(A, b, f)
            for k in range(f):
                X[u, k] = b[k]


_GRAM_PARTS = 32  # fixed, so the summation order -- and the result -- never depends on the threads
_GRAM_TILE = 256


@njit(parallel=True, cache=True, fastmath=True, nogil=True)
def _gram_parts(Y, parts):
    """parts[q] = Y_q^T Y_q (float64) for the q-th contiguous slice of rows of Y.

    Computed here rather than by BLAS: a multithreaded BLAS called between two Numba parallel
    regions fights Numba's spinning threads for the cores (30x slower on a 2-core host).
    """
    n, f = Y.shape
    n_parts = parts.shape[0]
    per = (n + n_parts - 1) // n_parts
    for q in prange(n_parts):
        T = np.empty((f, _GRAM_TILE), dtype=np.float32)
        for k in range(f):
            for j in range(f):
                parts[q, k, j] = 0.0
        start = q * per
        stop = min(n, start + per)
        for lo in range(start, stop, _GRAM_TILE):
            m = min(_GRAM_TILE, stop - lo)
            for r in range(m):  # transpose the tile so every dot product below is contiguous
                for k in range(f):
                    T[k, r] = Y[lo + r, k]
            for k in range(f):
                for j in range(k + 1):
                    s = np.float32(0.0)
                    for r in range(m):
                        s += T[k, r] * T[j, r]
                    parts[q, k, j] += s
        for k in range(f):
            for j in range(k):
                parts[q, j, k] = parts[q, k, j]


@njit(parallel=True, cache=True, nogil=True)
def _loss_rows(indptr, indices, data, X, Y, G, alpha, out):
    """out[u] = sum over all columns i of c_ui (p_ui - x_u . y_i)^2 (no regularisation), float64."""
    n, f = X.shape
    for u in prange(n):
        # unobserved part for every column: x^T (Y^T Y) x
        q = 0.0
        for k in range(f):
            acc = 0.0
            for j in range(f):
                acc += G[k, j] * X[u, j]
            q += acc * X[u, k]
        for jj in range(indptr[u], indptr[u + 1]):
            i = indices[jj]
            s = 0.0
            for k in range(f):
                s += np.float64(X[u, k]) * Y[i, k]
            c = 1.0 + alpha * np.float64(data[jj])
            q += c * (1.0 - s) * (1.0 - s) - s * s
        out[u] = q


@njit(parallel=True, cache=True, nogil=True)
def _mf_rows(indptr, indices, ratings, X, bx, Y, by, mu, reg, n_blocks):
    n, f = X.shape
    g = f + 1
    for blk in prange(n_blocks):
        A = np.empty((g, g), dtype=np.float64)
        b = np.empty(g, dtype=np.float64)
        y = np.empty(g, dtype=np.float64)
        for u in range(blk, n, n_blocks):
            lo = indptr[u]
            hi = indptr[u + 1]
            if lo == hi:
                for k in range(f):
                    X[u, k] = 0.0
                bx[u] = 0.0
                continue
            for k in range(g):
                b[k] = 0.0
                for j in range(k + 1):
                    A[k, j] = 0.0
            y[f] = 1.0  # the bias column
            for jj in range(lo, hi):
                i = indices[jj]
                for k in range(f):
                    y[k] = Y[i, k]
                t = np.float64(ratings[jj]) - mu - by[i]
                for k in range(g):
                    b[k] += t * y[k]
                    for j in range(k + 1):
                        A[k, j] += y[k] * y[j]
            lam = reg * (hi - lo)  # weighted-lambda: heavier rows get proportionally more shrinkage
            for k in range(g):
                A[k, k] += lam
            _chol_solve(A, b, g)
            for k in range(f):
                X[u, k] = b[k]
            bx[u] = b[f]


# ------------------------------------------------------------------------------------------ python side
def _n_blocks(n_rows: int) -> int:
    import numba

    return max(1, min(n_rows, numba.get_num_threads() * _BLOCKS_PER_THREAD))


def _run(kernel, *args) -> None:
    """Call a block-parallel kernel with blocks handed out one at a time, so a thread slowed down
    by a busy core (a shared web host) does not hold up the whole half-step."""
    import numba

    with numba.parallel_chunksize(1):
        kernel(*args)


def _csr_arrays(indptr, indices, data, n_rows: int, n_cols: int, name: str = "matrix"):
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    data = np.ascontiguousarray(data, dtype=np.float32)
    if indptr.ndim != 1 or len(indptr) != n_rows + 1:
        raise ParameterError(f"{name}: indptr has {len(indptr)} entries but X has {n_rows} rows; "
                             "pass one CSR row per row of X")
    nnz = int(indptr[-1]) if n_rows else 0
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or len(indices) < nnz or len(data) < nnz:
        raise ParameterError(f"{name}: malformed CSR structure (indptr must start at 0, never decrease, "
                             "and end at most at len(indices))")
    if nnz and (indices[:nnz].min() < 0 or indices[:nnz].max() >= n_cols):
        raise ParameterError(f"{name}: column indices must lie in [0, {n_cols}) (the rows of Y)")
    return indptr, indices, data


def _factor_arrays(X, Y):
    if not (isinstance(X, np.ndarray) and X.dtype == np.float32 and X.ndim == 2 and X.flags.c_contiguous
            and X.flags.writeable):
        raise ParameterError("X must be a writable, C-contiguous float32 2-D array (it is updated in place); "
                             f"got {getattr(X, 'dtype', type(X))!s} with shape {getattr(X, 'shape', None)}")
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    if Y.ndim != 2 or Y.shape[1] != X.shape[1]:
        raise ParameterError(f"Y must have shape (n_columns, {X.shape[1]}), got {Y.shape}")
    return X, Y


def gramian(Y) -> np.ndarray:
    """``Y^T Y`` as float64 (f x f), the part of every row's system shared by all rows.

    Deterministic (a fixed summation order for any thread count) and computed on Numba's threads.

    >>> gramian(np.array([[1, 2], [3, 4]], dtype=np.float32)).tolist()
    [[10.0, 14.0], [14.0, 20.0]]
    """
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    if Y.ndim != 2:
        raise ParameterError(f"Y must be a 2-D array, got shape {Y.shape}")
    f = Y.shape[1]
    if Y.shape[0] == 0 or f == 0:
        return np.zeros((f, f))
    parts = np.empty((min(_GRAM_PARTS, Y.shape[0]), f, f), dtype=np.float64)
    _gram_parts(Y, parts)
    return parts.sum(axis=0)


def _row_reg(row_reg, n_rows: int):
    """(per-row penalties as float64, whether given); a placeholder of length 1 when not given."""
    if row_reg is None:
        return np.zeros(1), False
    r = np.ascontiguousarray(row_reg, dtype=np.float64)
    if r.shape != (n_rows,):
        raise ParameterError(f"row_reg: expected one penalty per row of X, shape ({n_rows},), got {r.shape}; "
                             "pass e.g. reg * np.diff(indptr)")
    if not np.isfinite(r).all() or (r < 0).any():
        raise ParameterError("row_reg: expected finite, non-negative penalties, got NaN, infinity or a negative value")
    return r, True


def _system_base(Y, YtY, reg: float) -> np.ndarray:
    f = Y.shape[1]
    G = gramian(Y) if YtY is None else np.asarray(YtY, dtype=np.float64)
    if G.shape != (f, f):
        raise ParameterError(f"YtY must have shape ({f}, {f}), got {G.shape}")
    return G + float(reg) * np.eye(f)


def als_half_step_cg(indptr, indices, data, X, Y, YtY=None, reg: float = 0.01, alpha: float = 1.0,
                     cg_steps: int = 3, *, row_reg=None) -> np.ndarray:
    """Update every row of ``X`` by ``cg_steps`` conjugate-gradient steps, warm-started from ``X``.

    Parameters
    ----------
    indptr, indices, data : CSR arrays of the (rows of X) x (rows of Y) weight matrix ``W``
        Canonical (no duplicate entries); weights >= 0.
    X : float32 array (n_rows, f), C-contiguous -- updated in place and returned
    Y : float32 array (n_cols, f)
    YtY : array (f, f), optional
        ``Y^T Y``; computed when omitted.
    reg, alpha : float
        Regularisation and confidence scale (``c = 1 + alpha * w``).
    cg_steps : int
        CG steps per row (the exact solution after ``f`` steps in exact arithmetic).
    row_reg : array (n_rows,), optional
        Each row's own penalty, used in place of ``reg`` (which is then ignored): ``reg * n_u``
        (``np.diff(indptr)``) gives count-weighted regularisation (ALS-WR, as Spark MLlib).

    Returns
    -------
    X

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> W = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 0]], dtype=np.float32))
    >>> Y = np.eye(3, 2, dtype=np.float32)
    >>> X = np.zeros((2, 2), dtype=np.float32)
    >>> _ = als_half_step_cg(W.indptr, W.indices, W.data, X, Y, reg=0.1, cg_steps=2)
    >>> np.round(X.astype(float), 3).tolist()  # row 0: (1 + 1) / (1 + 1 + 0.1); row 1 has no entries
    [[0.952, 0.0], [0.0, 0.0]]
    """
    X, Y = _factor_arrays(X, Y)
    if isinstance(cg_steps, bool) or not isinstance(cg_steps, (int, np.integer)) or cg_steps < 1:
        raise ParameterError(f"cg_steps must be a positive integer, got {cg_steps!r}")
    indptr, indices, data = _csr_arrays(indptr, indices, data, X.shape[0], Y.shape[0])
    rr, per_row = _row_reg(row_reg, X.shape[0])
    A0 = _system_base(Y, YtY, 0.0 if per_row else reg).astype(np.float32)
    if X.shape[0]:
        _run(_cg_rows, indptr, indices, data, X, Y, A0, np.float32(alpha), int(cg_steps), _n_blocks(X.shape[0]),
             rr, per_row)
    return X


def als_half_step_cholesky(indptr, indices, data, X, Y, YtY=None, reg: float = 0.01,
                           alpha: float = 1.0, *, row_reg=None) -> np.ndarray:
    """Update every row of ``X`` to the exact least-squares solution (Cholesky, float64 inside).

    Same arguments as :func:`als_half_step_cg` without ``cg_steps``; ``X`` is only written.
    ``row_reg`` (one penalty per row, in place of ``reg``) gives count-weighted regularisation.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> W = sp.csr_matrix(np.array([[1, 0, 2]], dtype=np.float32))
    >>> X = np.zeros((1, 2), dtype=np.float32)
    >>> _ = als_half_step_cholesky(W.indptr, W.indices, W.data, X, np.eye(3, 2, dtype=np.float32), reg=0.1)
    >>> np.round(X.astype(float), 3).tolist()
    [[0.952, 0.0]]
    """
    X, Y = _factor_arrays(X, Y)
    indptr, indices, data = _csr_arrays(indptr, indices, data, X.shape[0], Y.shape[0])
    rr, per_row = _row_reg(row_reg, X.shape[0])
    A0 = _system_base(Y, YtY, 0.0 if per_row else reg)
    if X.shape[0]:
        _run(_cholesky_rows, indptr, indices, data, X, Y, A0, float(alpha), _n_blocks(X.shape[0]), rr, per_row)
    return X


def als_loss(indptr, indices, data, X, Y, reg: float = 0.01, alpha: float = 1.0, *,
             YtY=None, scaling: str = "constant") -> float:
    """The implicit-ALS objective ``sum_ui c_ui (p_ui - x_u . y_i)^2 + reg (|X|^2 + |Y|^2)``.

    ``scaling="count"``: the penalty is ``reg (sum_u n_u |x_u|^2 + sum_i n_i |y_i|^2)`` with ``n_u``
    and ``n_i`` the stored entries of row ``u`` and column ``i`` (ALS-WR).

    Sums over **all** (row, column) pairs, the unobserved ones included, in float64 and in a fixed
    order (deterministic). ``YtY`` (e.g. from :func:`gramian`) saves recomputing ``Y^T Y``; by
    default it is computed in float64 by numpy.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> W = sp.csr_matrix(np.array([[1.0, 0.0]], dtype=np.float32))
    >>> X, Y = np.ones((1, 1), np.float32), np.ones((2, 1), np.float32)
    >>> als_loss(W.indptr, W.indices, W.data, X, Y, reg=0.5)  # 2 * (1 - 1)^2 + 1 * (0 - 1)^2 + 0.5 * 3
    2.5
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    if Y.ndim != 2 or X.ndim != 2 or Y.shape[1] != X.shape[1]:
        raise ParameterError(f"X and Y must be 2-D with the same number of columns, got {X.shape} and {Y.shape}")
    indptr, indices, data = _csr_arrays(indptr, indices, data, X.shape[0], Y.shape[0])
    Y64 = Y.astype(np.float64)
    G = Y64.T @ Y64 if YtY is None else np.asarray(YtY, dtype=np.float64)
    out = np.zeros(X.shape[0], dtype=np.float64)
    if X.shape[0]:
        _loss_rows(indptr, indices, data, X, Y, G, float(alpha), out)
    if scaling == "count":
        nnz = int(indptr[-1]) if X.shape[0] else 0
        n_rows = np.diff(indptr).astype(np.float64)
        n_cols = np.bincount(indices[:nnz], minlength=Y.shape[0]).astype(np.float64)
        penalty = float(reg) * (float(n_rows @ np.sum(X.astype(np.float64) ** 2, axis=1))
                                + float(n_cols @ np.sum(Y.astype(np.float64) ** 2, axis=1)))
    elif scaling == "constant":
        penalty = float(reg) * (float(np.sum(X.astype(np.float64) ** 2)) + float(np.sum(Y.astype(np.float64) ** 2)))
    else:
        raise ParameterError(f"scaling: expected 'constant' or 'count', got {scaling!r}")
    return float(np.sum(out)) + penalty


def mf_half_step(indptr, indices, ratings, X, x_bias, Y, y_bias, global_mean: float,
                 reg: float) -> None:
    """Explicit-rating ALS half-step with biases and weighted-lambda regularisation (in place).

    For every row ``u`` with ratings ``r_ui`` (its CSR entries) solve exactly

        min_{x, b}  sum_i (r_ui - mu - y_bias_i - b - x . y_i)^2 + reg * n_u * (|x|^2 + b^2)

    and store ``x`` in ``X[u]`` and ``b`` in ``x_bias[u]``; rows without ratings get zeros.

    Parameters
    ----------
    indptr, indices, ratings : CSR arrays (rows of X) x (rows of Y), no duplicate entries
    X : float32 (n_rows, f), x_bias : float64 (n_rows,) -- written in place
    Y : float32 (n_cols, f), y_bias : float64 (n_cols,)
    global_mean, reg : float

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> R = sp.csr_matrix(np.array([[4.0, 2.0]], dtype=np.float32))
    >>> X, bx = np.zeros((1, 1), np.float32), np.zeros(1)
    >>> mf_half_step(R.indptr, R.indices, R.data, X, bx, np.zeros((2, 1), np.float32), np.zeros(2), 3.0, 0.5)
    >>> float(bx[0])  # the two residuals 1 and -1 cancel; no factor signal
    0.0
    """
    X, Y = _factor_arrays(X, Y)
    if not (isinstance(x_bias, np.ndarray) and x_bias.dtype == np.float64 and x_bias.shape == (X.shape[0],)
            and x_bias.flags.writeable):
        raise ParameterError(f"x_bias must be a writable float64 array of shape ({X.shape[0]},)")
    y_bias = np.ascontiguousarray(y_bias, dtype=np.float64)
    if y_bias.shape != (Y.shape[0],):
        raise ParameterError(f"y_bias must have shape ({Y.shape[0]},), got {y_bias.shape}")
    indptr, indices, ratings = _csr_arrays(indptr, indices, ratings, X.shape[0], Y.shape[0])
    if X.shape[0]:
        _run(_mf_rows, indptr, indices, ratings, X, x_bias, Y, y_bias, float(global_mean), float(reg),
             _n_blocks(X.shape[0]))
