"""Implicit-feedback alternating least squares (Hu, Koren and Volinsky 2008)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._validate import MAX_ITERATIONS, check_int, check_number, check_weights
from ..data.interactions import Interactions
from ..errors import DataError, ParameterError
from .factor import FactorModel
from ..typing import ArrayLike, Ids
from ..kernels.threads import blas_threads as _blas_threads
from ..kernels.threads import numba_threads as _numba_threads

__all__ = ["ALS"]

log = logging.getLogger("persona.models")

_SOLVERS = ("cg", "cholesky")
_SCALINGS = ("constant", "count")


# ---------------------------------------------------------------------------------------------- helpers
def _checked_weights(matrix: sp.spmatrix, what: str) -> sp.csr_matrix:
    """Canonical float32 CSR (duplicates summed, rows sorted) with finite, non-negative weights.

    ``Interactions.matrix`` already is one and is used as is (ALS only reads it); anything else is
    copied, never changed under the caller.
    """
    if sp.issparse(matrix) and matrix.format == "csr" and matrix.dtype == np.float32 \
            and matrix.has_canonical_format:
        m = matrix
    else:
        m = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
        m.sum_duplicates()
        m.sort_indices()
    check_weights(m.data, what, do="drop dislikes or map them to 0 before fitting (confidence = 1 + alpha * weight)")
    return m


def _replace_rows(old: sp.csr_matrix, n_rows: int, rows: np.ndarray, block: sp.csr_matrix) -> sp.csr_matrix:
    """``old`` grown to ``n_rows`` rows, with row ``rows[j]`` replaced by row ``j`` of ``block``."""
    old = old.tocoo()
    drop = np.zeros(n_rows, dtype=bool)
    drop[rows] = True
    keep = ~drop[old.row]
    blk = block.tocoo()
    r = np.concatenate([old.row[keep], rows[blk.row]])
    c = np.concatenate([old.col[keep], blk.col])
    d = np.concatenate([old.data[keep], blk.data]).astype(np.float32)
    out = sp.csr_matrix((d, (r, c)), shape=(n_rows, old.shape[1]), dtype=np.float32)
    out.sort_indices()
    return out


def _gram64(Y: np.ndarray) -> np.ndarray:
    """``Y^T Y`` in float64 by numpy, for the fold-in (serving paths do not import Numba)."""
    Y = np.asarray(Y, dtype=np.float64)
    return Y.T @ Y


# cells (rows x longest row x factors) of one padded batch of rows in ALS.update's solves
_BATCH_CELLS = 1 << 21


def _exact_rows(block: sp.csr_matrix, fixed: np.ndarray, G: np.ndarray, reg: float, alpha: float,
                count: bool = False) -> np.ndarray:
    """The exact least-squares vector of every row of ``block`` against ``fixed`` (float32 out).

    Row ``r`` with entries ``(j, w)``: ``(G + reg I + sum alpha w y_j y_j^T) x = sum (1 + alpha w) y_j`` --
    the system of :meth:`ALS.recalculate_user`, for many rows at once with numpy (``count``: ``reg`` times
    the row's number of entries in place of ``reg``): rows of similar
    length are padded into one (rows, length, factors) block and solved by batched BLAS (no Numba,
    so an update of a few users does not pay a parallel kernel's start-up). Empty rows get zeros.
    """
    k, f = block.shape[0], fixed.shape[1]
    out = np.zeros((k, f), dtype=np.float32)
    eye = np.eye(f)
    ip, lens = block.indptr, np.diff(block.indptr)
    rows = np.flatnonzero(lens)
    rows = rows[np.argsort(lens[rows], kind="stable")]  # similar lengths together: little padding
    start = 0
    while start < len(rows):
        longest = int(lens[rows[start]])
        stop = start + 1
        while stop < len(rows) and (stop - start + 1) * max(longest, int(lens[rows[stop]])) * f <= _BATCH_CELLS:
            longest = max(longest, int(lens[rows[stop]]))
            stop += 1
        chunk = rows[start:stop]
        n = lens[chunk]
        owner = np.repeat(np.arange(len(chunk)), n)
        pick = np.repeat(ip[chunk] - np.r_[0, np.cumsum(n)[:-1]], n) + np.arange(int(n.sum()))
        pos = np.arange(int(n.sum())) - np.repeat(np.r_[0, np.cumsum(n)[:-1]], n)
        Y = np.zeros((len(chunk), longest, f))
        cw = np.zeros((len(chunk), longest))
        Y[owner, pos] = fixed[block.indices[pick]]
        cw[owner, pos] = alpha * block.data[pick]
        lam = reg * (n.astype(np.float64) if count else np.ones(len(chunk)))
        A = G + lam[:, None, None] * eye + np.matmul(np.swapaxes(Y * cw[..., None], 1, 2), Y)
        b = np.einsum("klf,kl->kf", Y, 1.0 + cw)  # padding adds nothing: its rows of Y are zero
        try:
            out[chunk] = np.linalg.solve(A, b[..., None])[..., 0]
        except np.linalg.LinAlgError:  # singular only with regularization=0
            out[chunk] = np.stack([np.linalg.lstsq(a, v, rcond=None)[0] for a, v in zip(A, b)])
        start = stop
    return out


# ---------------------------------------------------------------------------------------------- the model
class ALS(FactorModel):
    """Matrix factorisation for implicit feedback by alternating least squares.

    Every user-item pair has preference ``p = 1`` when the user interacted with the item and ``0``
    otherwise, trusted with confidence ``c = 1 + alpha * weight`` (weight: the interaction
    matrix's entry, 0 for pairs never seen). ALS minimises
    ``sum c (p - x_u . y_i)^2 + regularization * (|x_u|^2 + |y_i|^2)`` over all pairs, solving
    the users given the items, then the items given the users, ``iterations`` times.

    Parameters
    ----------
    factors : int, default 64
        Dimension of the user and item vectors.
    iterations : int, default 15
        Alternations (one user half-step and one item half-step each).
    regularization : float, default 10.0
        L2 penalty on every vector. The default was chosen by benchmarks/bench_defaults.py across the synthetic shop at three sizes, Amazon Beauty and Last.fm (0.01 before: a quarter
        of the NDCG@10 of the best setting on a 300-user shop); ``ps.tune`` searches 1e-3 to 100.
    regularization_scaling : {"constant", "count"}, default "constant"
        ``"constant"``: every vector pays ``regularization * |x|^2``. ``"count"``: each user pays
        ``regularization * n_u * |x_u|^2`` and each item ``regularization * n_i * |y_i|^2``, with
        ``n_u`` / ``n_i`` its number of stored interactions (weighted-lambda, "ALS-WR", as Spark
        MLlib's ALS; its ``regParam`` is then exactly ``regularization``). Useful values of
        ``regularization`` are then much smaller (about 0.01 to 0.5).
    alpha : float, default 1.0
        Confidence scale: ``c = 1 + alpha * weight``.
    cg_steps : int, default 3
        Conjugate-gradient steps per row and half-step, warm-started from the previous solution
        (as implicit does); ignored by the Cholesky solver.
    solver : {"cg", "cholesky"}
        ``"cg"`` (fast, approximate per half-step) or ``"cholesky"`` (exact least squares per row;
        ``O(f^2)`` per stored entry, slower for many factors).
    random_state : int or None
        Seeds the initial factors (uniform in ``[0, 0.01)``, as implicit). The same seed and thread
        count give identical factors; in fact rows are solved independently, so the thread count
        does not change the result either.
    num_threads : int, default 0
        Numba threads while fitting; 0 keeps Numba's setting (all cores by default).
    show_progress : bool, default False
        A tqdm bar over the iterations (with the training loss when ``fit(..., compute_loss=True)``).

    Notes
    -----
    ``fit(interactions, compute_loss=False)``: with ``compute_loss=True`` the objective is
    evaluated after every iteration (one more pass over the data) and kept in ``loss_history_``.

    Interaction weights must be finite and non-negative (:class:`~persona.DataError` otherwise);
    a stored weight of 0 still counts as an observed pair with confidence 1.

    ``recommend_for_history`` solves the user's least-squares problem exactly against the fitted
    item factors (every history item has weight 1, repeats add up) -- a real ALS fold-in, no
    refit. :meth:`recalculate_user` returns that vector; :meth:`partial_fit_users` and
    :meth:`partial_fit_items` fold new or changed users / items into the model offline.

    ``update(new)`` merges the new events into the interaction matrix and solves, exactly and from
    their whole merged rows, every user with new events (new users included) against the fixed
    item factors, then the new items against the user factors, then those users once more;
    everyone else, and every known item, keeps their vectors until a refit (``update(new,
    items="touched")`` re-solves every item with new events too: better on some data, several
    times the cost; see docs/models.md). A user's vector is then what :meth:`recalculate_user`
    gives for their history.

    Examples
    --------
    >>> import persona as ps
    >>> shop = ps.datasets.synthetic_shop(n_users=200, n_items=50, seed=0)
    >>> from persona.models.als import ALS
    >>> model = ALS(factors=8, iterations=3, random_state=0).fit(shop.interactions)
    >>> model.user_factors_.shape, model.item_factors_.dtype
    ((200, 8), dtype('float32'))
    >>> items, scores = model.recommend(shop.interactions.user_ids[0], n=3)
    >>> len(items)
    3
    """

    def __init__(self, *, factors: int = 64, iterations: int = 15, regularization: float = 10.0,
                 alpha: float = 1.0, cg_steps: int = 3, solver: str = "cg", random_state: int | None = None,
                 num_threads: int = 0, show_progress: bool = False, regularization_scaling: str = "constant"):
        self.factors = factors
        self.iterations = iterations
        self.regularization = regularization
        self.regularization_scaling = regularization_scaling
        self.alpha = alpha
        self.cg_steps = cg_steps
        self.solver = solver
        self.random_state = random_state
        self.num_threads = num_threads
        self.show_progress = show_progress

    # ------------------------------------------------------------------ parameters
    def _validate_params(self) -> None:
        self._validate_factor_params()
        check_number(self.alpha, "alpha", min=0.0, hint="confidence = 1 + alpha * weight; try 1.0")
        check_int(self.cg_steps, "cg_steps", min=1, max=MAX_ITERATIONS, hint="try 3")
        if self.solver not in _SOLVERS:
            raise ParameterError(f"solver must be one of {_SOLVERS}, got {self.solver!r}")
        if not isinstance(self.regularization_scaling, str) or self.regularization_scaling not in _SCALINGS:
            raise ParameterError(f"regularization_scaling: expected 'constant' (one penalty for every vector) or "
                                 f"'count' (penalty times the row's number of interactions, as MLlib), got "
                                 f"{self.regularization_scaling!r}; pass one of those")

    @property
    def _count_scaled(self) -> bool:
        return getattr(self, "regularization_scaling", "constant") == "count"

    def _row_reg(self, W: sp.csr_matrix):
        """Each row's penalty (``regularization * n_u``) under count scaling, else None (one for all)."""
        if not self._count_scaled:
            return None
        return float(self.regularization) * np.diff(W.indptr).astype(np.float64)

    # ------------------------------------------------------------------ fitting
    def _half_step(self, kernels, W: sp.csr_matrix, X: np.ndarray, Y: np.ndarray) -> None:
        G = kernels.gramian(Y)
        row_reg = self._row_reg(W)
        if self.solver == "cholesky":
            kernels.als_half_step_cholesky(W.indptr, W.indices, W.data, X, Y, G, float(self.regularization),
                                           float(self.alpha), row_reg=row_reg)
        else:
            kernels.als_half_step_cg(W.indptr, W.indices, W.data, X, Y, G, float(self.regularization),
                                     float(self.alpha), int(self.cg_steps), row_reg=row_reg)

    def _fit(self, interactions: Interactions, *, compute_loss: bool = False) -> None:
        from ..kernels import als as kernels  # Numba: imported (and compiled, or loaded from cache) here

        W = _checked_weights(self.user_items_, "ALS")
        WT = W.T.tocsr()
        WT.sort_indices()
        n_users, n_items = W.shape
        f = int(self.factors)
        rng = np.random.default_rng(self.random_state)
        X = rng.random((n_users, f), dtype=np.float32)
        X *= np.float32(0.01)
        Y = rng.random((n_items, f), dtype=np.float32)
        Y *= np.float32(0.01)

        bar = None
        if self.show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(self.iterations), desc="ALS", unit="it")
        losses = []
        t0 = time.perf_counter()
        try:
            with _numba_threads(self.num_threads):
                for _ in range(int(self.iterations)):
                    self._half_step(kernels, W, X, Y)
                    self._half_step(kernels, WT, Y, X)
                    if compute_loss:
                        losses.append(kernels.als_loss(W.indptr, W.indices, W.data, X, Y,
                                                       float(self.regularization), float(self.alpha),
                                                       YtY=kernels.gramian(Y),
                                                       scaling=getattr(self, "regularization_scaling", "constant")))
                        if bar is not None:
                            bar.set_postfix(loss=f"{losses[-1] / max(W.nnz, 1):.5f}")
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        log.debug("ALS fitted %d iterations in %.2f s", self.iterations, time.perf_counter() - t0)
        if not (np.isfinite(X).all() and np.isfinite(Y).all()):
            raise ParameterError("ALS produced non-finite factors; raise regularization (it is "
                                 f"{self.regularization}) or lower alpha (it is {self.alpha})")
        self.user_factors_ = X
        self.item_factors_ = Y
        self.loss_history_ = losses
        self._item_gram = _gram64(Y)

    @classmethod
    def from_factors(cls, user_ids: Ids, item_ids: Ids, user_factors: ArrayLike, item_factors: ArrayLike, *,
                     interactions: Interactions | sp.spmatrix | None = None, **params: Any) -> "ALS":
        """An ALS built from factors trained elsewhere (Spark MLlib, implicit), served like a fitted one.

        Parameters
        ----------
        user_ids, item_ids : sequences of external ids
            The id of each row of ``user_factors`` / ``item_factors`` (unique).
        user_factors, item_factors : 2-D float arrays (n_users, f) and (n_items, f)
            Finite; stored as float32.
        interactions : Interactions or sparse matrix, optional
            What each user has seen (``filter_seen``, ``partial_fit_users(replace=False)``): an
            Interactions whose maps hold exactly these ids (any order), or a users x items matrix
            aligned with ``user_ids`` / ``item_ids``. None: nothing is filtered as seen.
        **params
            ALS hyperparameters (``regularization``, ``alpha``, ...) used by the fold-in
            (``recommend_for_history``, ``recalculate_user``, ``partial_fit_*``); ``factors`` is
            taken from the arrays.

        Returns
        -------
        ALS
            Fitted: it recommends, saves and loads like a model from :meth:`fit`.

        Examples
        --------
        >>> import numpy as np
        >>> from persona.models.als import ALS
        >>> model = ALS.from_factors(["u1", "u2"], ["a", "b", "c"], np.eye(2, dtype=np.float32),
        ...                          np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]), regularization=1.0)
        >>> model.recommend("u1", n=2)[0].tolist()
        ['a', 'c']
        """
        from ..data.idmap import IdMap

        model = cls(**{**params, "factors": int(np.shape(user_factors)[1]) if np.ndim(user_factors) == 2 else 1})
        model._validate_common_params()
        model._validate_params()
        user_map, item_map = IdMap(user_ids), IdMap(item_ids)
        X = np.ascontiguousarray(user_factors, dtype=np.float32)
        Y = np.ascontiguousarray(item_factors, dtype=np.float32)
        if X.ndim != 2 or Y.ndim != 2 or X.shape != (len(user_map), model.factors) or Y.shape[1] != X.shape[1] \
                or Y.shape[0] != len(item_map):
            raise DataError(f"from_factors: expected user_factors of shape ({len(user_map)}, f) and item_factors of "
                            f"shape ({len(item_map)}, f) (one row per id), got {X.shape} and {Y.shape}; pass one "
                            "row per user id and per item id, with the same number of columns")
        if not (np.isfinite(X).all() and np.isfinite(Y).all()):
            raise DataError("from_factors: expected finite factors, got NaN or infinity; retrain the factors")
        if interactions is None:
            seen = sp.csr_matrix((len(user_map), len(item_map)), dtype=np.float32)
        elif isinstance(interactions, Interactions):
            u, i = user_map.lookup(interactions.user_ids), item_map.lookup(interactions.item_ids)
            if len(u) != len(user_map) or len(i) != len(item_map) or (u < 0).any() or (i < 0).any():
                raise DataError("from_factors: the interactions' id maps must hold exactly the given user and item "
                                "ids; pass interactions built for these ids, or a matrix aligned with them")
            m = interactions.matrix.tocoo()
            seen = sp.csr_matrix((m.data, (u[m.row], i[m.col])), shape=m.shape, dtype=np.float32)
        elif sp.issparse(interactions) and interactions.shape == (len(user_map), len(item_map)):
            seen = interactions
        else:
            raise DataError(f"from_factors: expected interactions as a persona.Interactions or a "
                            f"({len(user_map)}, {len(item_map)}) sparse matrix, got "
                            f"{type(interactions).__name__} of shape {getattr(interactions, 'shape', None)}")
        model.user_map_, model.item_map_ = user_map, item_map
        model.user_items_ = _checked_weights(seen, "from_factors")
        model.fallback_ = None
        model.user_factors_, model.item_factors_, model.loss_history_ = X, Y, []
        model.item_feature_weights_ = model.item_feature_bias_ = None
        model.item_feature_columns_ = model.item_feature_spec_ = None
        model._item_gram = _gram64(Y)
        model._fitted = True
        return model

    def _restore_extra(self, meta, arrays) -> None:
        self._item_gram = _gram64(self.item_factors_)

    def _after_items_added(self) -> None:
        self._item_gram = _gram64(self.item_factors_)  # the fold-in's Gram counts every item

    # ------------------------------------------------------------------ fold-in
    def _gram(self) -> np.ndarray:
        g = getattr(self, "_item_gram", None)
        if g is None or g.shape[0] != self.item_factors_.shape[1]:
            g = _gram64(self.item_factors_)  # not stored: serving paths never write to the model
        return g

    def _solve_user(self, items: np.ndarray, weights: np.ndarray, G: np.ndarray) -> np.ndarray:
        """Exact least-squares user vector (float64) for item indices with aggregated weights."""
        f = self.item_factors_.shape[1]
        if len(items) == 0:
            return np.zeros(f)
        Yh = self.item_factors_[items].astype(np.float64)
        cm1 = float(self.alpha) * weights.astype(np.float64)
        lam = float(self.regularization) * (len(items) if self._count_scaled else 1)
        A = G + lam * np.eye(f) + (Yh.T * cm1) @ Yh
        b = Yh.T @ (1.0 + cm1)
        try:
            return np.linalg.solve(A, b)
        except np.linalg.LinAlgError:  # singular only with regularization=0
            return np.linalg.lstsq(A, b, rcond=None)[0]

    def _fold_in(self, histories) -> np.ndarray:
        G = self._gram()
        out = np.zeros((len(histories), self.item_factors_.shape[1]), dtype=np.float32)
        for r, h in enumerate(histories):
            items, counts = np.unique(np.asarray(h, dtype=np.int64), return_counts=True)
            out[r] = self._solve_user(items, counts.astype(np.float64), G)
        return out

    def recalculate_user(self, history_items: Ids, weights: ArrayLike | None = None) -> np.ndarray:
        """The ALS user vector for a history of external item ids, against the fitted item factors.

        Side-effect free: the model is not changed. Item ids the model does not know are ignored;
        repeated items add up their weights.

        Parameters
        ----------
        history_items : sequence of external item ids
        weights : sequence of float, optional
            One non-negative weight per history entry (default 1 each), as in the interaction matrix.

        Returns
        -------
        float32 array (factors,)
            Score items with ``vector @ model.item_factors_.T``.

        Examples
        --------
        >>> import persona as ps
        >>> inter = ps.Interactions.from_records([("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "c")])
        >>> from persona.models.als import ALS
        >>> model = ALS(factors=2, iterations=5, solver="cholesky", random_state=0).fit(inter)
        >>> v = model.recalculate_user(["a", "b"])
        >>> bool(abs(v - model.user_factors_[0]).max() < 0.05)  # close to u1's own fitted vector
        True
        """
        self._check_fitted()
        idx = self.item_map_.lookup(history_items) if len(history_items) else np.zeros(0, dtype=np.int64)
        if weights is None:
            w = np.ones(len(idx), dtype=np.float64)
        else:
            w = np.asarray(weights, dtype=np.float64).reshape(-1)
            if len(w) != len(idx):
                raise ParameterError(f"weights has {len(w)} entries but history_items has {len(idx)}; "
                                     "pass one weight per history item")
            check_weights(w, "recalculate_user", do="pass 0 for an item to ignore")
        known = (idx >= 0) & (w > 0)  # a weight of 0 leaves the item out, as the error hint says
        items, inverse = np.unique(idx[known], return_inverse=True)
        agg = np.bincount(inverse.reshape(-1), weights=w[known], minlength=len(items))
        return self._solve_user(items, agg, self._gram()).astype(np.float32)

    # ------------------------------------------------------------------ incremental updates
    def _block(self, interactions: Interactions, by: str):
        """Rows with events of ``interactions`` (by user or item), columns mapped into the model.

        Returns (external ids of the rows, CSR block rows x model columns).
        """
        if not isinstance(interactions, Interactions):
            raise DataError(f"partial_fit_{by}s expects a persona.Interactions, got {type(interactions).__name__}")
        if len(interactions) == 0:
            raise DataError(f"partial_fit_{by}s got empty interactions; there is nothing to update")
        M = _checked_weights(interactions.matrix, f"partial_fit_{by}s")
        if by == "item":
            M = M.T.tocsr()
            row_ids, col_ids, col_map, other = interactions.item_ids, interactions.user_ids, self.user_map_, "user"
        else:
            row_ids, col_ids, col_map, other = interactions.user_ids, interactions.item_ids, self.item_map_, "item"
        rows = np.flatnonzero(np.diff(M.indptr))
        sub = M[rows].tocoo()
        cols = col_map.lookup(col_ids)[sub.col]
        keep = cols >= 0
        if not keep.all():
            n_unknown = len(np.unique(sub.col[~keep]))
            log.warning("partial_fit_%ss: ignored %d event(s) with %d %s id(s) the model does not know; "
                        "add those %ss first with partial_fit_%ss", by, int((~keep).sum()), n_unknown, other,
                        other, other)
        block = sp.csr_matrix((sub.data[keep], (sub.row[keep], cols[keep])), shape=(len(rows), len(col_map)),
                              dtype=np.float32)
        block.sort_indices()
        return row_ids[rows], block

    def _solve_rows(self, block: sp.csr_matrix, fixed: np.ndarray) -> np.ndarray:
        from ..kernels import als as kernels

        out = np.zeros((block.shape[0], fixed.shape[1]), dtype=np.float32)
        with _numba_threads(self.num_threads):
            G = kernels.gramian(fixed)
            kernels.als_half_step_cholesky(block.indptr, block.indices, block.data, out, fixed, G,
                                           float(self.regularization), float(self.alpha),
                                           row_reg=self._row_reg(block))
        return out

    def _update(self, batch, items: str = "new") -> None:
        from ._update import grow_rows

        if items not in ("new", "touched"):
            raise ParameterError(f"ALS.update: items: expected 'new' (solve the new items) or 'touched' (also "
                                 f"re-solve every known item with new events), got {items!r}")

        W = _checked_weights(batch.user_items, "ALS.update")
        X = grow_rows(self.user_factors_, batch.n_users)  # new users: zero until solved, so they add
        Y = grow_rows(self.item_factors_, batch.n_items)  # nothing to the item solves below
        # by default known items keep their vectors until a refit: re-solving a popular item's whole
        # column for a few new events costs most of an item half-step on every batch
        users, items = batch.users, (batch.new_items if items == "new" else batch.items)
        cols = W.tocsc()[:, items].T.tocsr()  # each solved item's whole column
        reg, alpha = float(self.regularization), float(self.alpha)
        Gy = self._gram().copy()
        cached = getattr(self, "_user_gram", None)  # (the factors it was computed from, their Gram)
        Gx = cached[1].copy() if cached is not None and cached[0] is self.user_factors_ else _gram64(self.user_factors_)
        if Gx.shape != Gy.shape:  # pragma: no cover - both are factors x factors
            raise ParameterError("ALS.update: the user and item factors disagree in width; refit the model")

        def solve(rows, M, A, fixed, G_fixed, G_own):
            """Rows of ``A`` solved in place against ``fixed``; ``G_own`` (= A^T A) follows the change."""
            old = A[rows].astype(np.float64)
            A[rows] = _exact_rows(M, fixed, G_fixed, reg, alpha, self._count_scaled)
            new = A[rows].astype(np.float64)
            G_own += new.T @ new - old.T @ old

        # users, new items, users again: a new item whose only buyers are new users is placed by them,
        # and the users' final vectors see the new items' vectors. Many small products: one BLAS
        # thread (several wait on each other, and on a busy machine on a preempted one)
        with _blas_threads(1):
            solve(users, W[users], X, Y, Gy, Gx)
            solve(items, cols, Y, X, Gx, Gy)
            solve(users, W[users], X, Y, Gy, Gx)
        if not (np.isfinite(X).all() and np.isfinite(Y).all()):
            raise ParameterError("ALS.update produced non-finite factors; raise regularization (it is "
                                 f"{self.regularization}) or lower alpha (it is {self.alpha})")
        self.user_factors_, self.item_factors_ = X, Y
        self._item_gram, self._user_gram = Gy, (X, Gx)  # kept current by the solves above, not recomputed
        self._refresh_index("ALS.update")

    def partial_fit_users(self, interactions: Interactions, *, replace: bool = True) -> "ALS":
        """Re-solve the users of ``interactions`` against the fixed item factors (offline updates).

        Every user with at least one event in ``interactions`` gets a new vector: the exact
        least-squares solution for their row of the interaction matrix, item factors unchanged.
        Users the model does not know are appended (``user_map_``, ``user_factors_`` and
        ``user_items_`` grow; existing indices keep their meaning), so they can be recommended to
        right away. Events on items the model does not know are ignored (logged); add such items
        first with :meth:`partial_fit_items`. Not for serving threads: it mutates the model.

        Parameters
        ----------
        interactions : Interactions
            Events of the users to update, in any id maps.
        replace : bool, default True
            True: ``interactions`` holds each user's **complete** history, which replaces their row
            (like implicit's ``partial_fit_users``). False: the events are **added** to the
            user's existing row (weights summed), e.g. for a nightly batch of new events.

        Returns
        -------
        self

        Examples
        --------
        >>> import persona as ps
        >>> inter = ps.Interactions.from_records([("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "c")])
        >>> from persona.models.als import ALS
        >>> model = ALS(factors=2, iterations=3, random_state=0).fit(inter)
        >>> _ = model.partial_fit_users(ps.Interactions.from_records([("u3", "a"), ("u3", "c")]))
        >>> model.n_users, len(model.recommend("u3", n=1)[0])
        (3, 1)
        """
        self._check_fitted()
        ids, block = self._block(interactions, "user")
        new_map = self.user_map_.grow(ids)
        rows = new_map.lookup(ids)
        n = len(new_map)
        ui = self.user_items_.tocsr()
        if ui.shape[0] < n:
            ui = sp.vstack([ui, sp.csr_matrix((n - ui.shape[0], ui.shape[1]), dtype=np.float32)]).tocsr()
        if not replace:
            block = _checked_weights(block + ui[rows], "partial_fit_users")
        user_items = _replace_rows(ui, n, rows, block)
        solved = self._solve_rows(block, self.item_factors_)
        X = np.zeros((n, self.user_factors_.shape[1]), dtype=np.float32)
        X[: self.user_factors_.shape[0]] = self.user_factors_
        X[rows] = solved
        # the map last: a concurrent reader holding the old map only sees indices valid in both
        self.user_factors_ = X
        self.user_items_ = user_items
        self.user_map_ = new_map
        return self

    def partial_fit_items(self, interactions: Interactions, *, replace: bool = True) -> "ALS":
        """Re-solve the items of ``interactions`` against the fixed user factors (offline updates).

        The mirror image of :meth:`partial_fit_users`: every item with at least one event gets the
        exact least-squares vector for its column of the interaction matrix; unknown items are
        appended (``item_map_``, ``item_factors_`` and the columns of ``user_items_`` grow). Events
        of users the model does not know are ignored (logged); add them with
        :meth:`partial_fit_users` afterwards, which then sees the new items.

        Parameters
        ----------
        interactions : Interactions
        replace : bool, default True
            True: the events are each item's complete history (its column is replaced); False:
            they are added to the existing column.

        Returns
        -------
        self
        """
        self._check_fitted()
        ids, block = self._block(interactions, "item")
        new_map = self.item_map_.grow(ids)
        rows = new_map.lookup(ids)
        n = len(new_map)
        iu = self.user_items_.T.tocsr()
        if iu.shape[0] < n:
            iu = sp.vstack([iu, sp.csr_matrix((n - iu.shape[0], iu.shape[1]), dtype=np.float32)]).tocsr()
        if not replace:
            block = _checked_weights(block + iu[rows], "partial_fit_items")
        item_users = _replace_rows(iu, n, rows, block)
        solved = self._solve_rows(block, self.user_factors_)
        Y = np.zeros((n, self.item_factors_.shape[1]), dtype=np.float32)
        Y[: self.item_factors_.shape[0]] = self.item_factors_
        Y[rows] = solved
        user_items = item_users.T.tocsr()
        user_items.sort_indices()
        self.item_factors_ = Y
        self._item_gram = _gram64(Y)
        self.user_items_ = user_items
        self.item_map_ = new_map
        return self
