"""EASE: a closed-form linear item-to-item model (Steck, "Embarrassingly Shallow Autoencoders", 2019)."""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from .._validate import check_int, check_number, check_weights
from ..data.interactions import Interactions
from ..errors import ArtifactError, ParameterError
from .base import Recommender
from .bpr import positive_csr
from ..kernels.threads import blas_threads as _blas_threads

__all__ = ["EASE"]

log = logging.getLogger("persona.models")

# The factorisation runs in float32 when a bound on the condition number of X^T X + lambda I is
# at most this; measured on Amazon Beauty (3,000 items, lambda 10..500) float32 then agrees with
# float64 to ~1e-6 of max|B| and gives the same top-10 lists. Worse-conditioned problems (a small
# lambda on heavy items) run in float64.
_FLOAT32_COND_LIMIT = 1e3
# bytes per item^2 at the peak of fit: a float64 working matrix plus the float32 B
_PEAK_BYTES_PER_CELL = 12


def _gb(n_items: int) -> float:
    return n_items * n_items * _PEAK_BYTES_PER_CELL / 1e9


class EASE(Recommender):
    """EASE: item-to-item weights ``B`` from one regularised least-squares problem, in closed form.

    ``B`` minimises ``|X - X B|^2 + lambda |B|^2`` subject to ``diag(B) = 0``, whose solution is
    ``B = I - P / diag(P)`` (column ``j`` divided by ``P_jj``) with ``P = (X^T X + lambda I)^-1``.
    A user's score for item ``j`` is ``X[u] @ B[:, j]``.

    Parameters
    ----------
    regularization : float, default 100.0
        The ``lambda`` above (API.md's shared name for it). Larger values shrink ``B``; on sparse
        shop data the best value usually lies between 50 and 1000. The default was chosen by benchmarks/bench_defaults.py across the synthetic shop at three sizes, Amazon Beauty and Last.fm
        (500 before).
    max_items : int, default 20000
        Refuse catalogues larger than this: ``B`` is a dense items x items matrix and fitting needs
        about ``12 * n_items ** 2`` bytes (20,000 items: 4.8 GB). Use ItemKNN or ALS for larger
        catalogues, or raise the limit when the memory is there.
    num_threads : int, default 0
        BLAS / LAPACK threads while fitting (through threadpoolctl when it is installed; 0 leaves
        BLAS at its default) and top-k threads when recommending.
    show_progress : bool, default False
        A tqdm bar over the three fitting steps (Gram matrix, factorisation, inverse).

    Notes
    -----
    * ``X`` is the **binarised** interaction matrix: an entry with weight > 0 counts 1, however
      often the user repeated it. Confidence weights would inflate the Gram matrix of heavy
      repeat-buyers and make ``lambda`` data dependent; negative weights raise DataError.
    * ``P`` comes from a Cholesky factorisation and its inverse (LAPACK ``potrf`` / ``potri``), in
      float32 when a Gershgorin bound on the condition number of ``X^T X + lambda I`` is at most
      1,000, else in float64 (``precision_`` says which). ``B`` is stored as float32.
    * ``similar_items(i)`` ranks by row ``B[i]``: how much having ``i`` in a history raises each
      item's score, so it agrees with ``recommend_for_history([i])``.
    * ``recommend_for_history`` is exact (no refit, no approximation): the binarised history
      times ``B``. ``recommend_users(items)`` ranks users by ``X @ B[:, items]`` summed over items.
    * ``update(new)`` merges the new events into ``X``, so a user's new history counts at once,
      exactly as a fit with the same ``B``; ``B`` covers the items of the fit only (``B_`` keeps
      its shape), so new items are not recommended until a refit (``placed_items_``).

    Examples
    --------
    >>> import persona as ps
    >>> from persona.models.ease import EASE
    >>> shop = ps.datasets.synthetic_shop(n_users=200, n_items=50, seed=0)
    >>> model = EASE(regularization=50.0).fit(shop.interactions)
    >>> n = shop.interactions.n_items
    >>> model.B_.shape == (n, n), float(abs(model.B_.diagonal()).max())
    (True, 0.0)
    >>> items, scores = model.recommend_for_history(shop.interactions.item_ids[:2], n=3)
    >>> len(items)
    3
    """

    def __init__(self, *, regularization: float = 100.0, max_items: int = 20000, num_threads: int = 0,
                 show_progress: bool = False):
        self.regularization = regularization
        self.max_items = max_items
        self.num_threads = num_threads
        self.show_progress = show_progress

    # ------------------------------------------------------------------ fitting
    def _validate_params(self) -> None:
        check_number(self.regularization, "regularization", min=0.0, hint="try 500")
        check_int(self.max_items, "max_items", min=1)

    def _fit(self, interactions: Interactions) -> None:
        n_items = interactions.n_items
        if n_items > self.max_items:
            raise ParameterError(
                f"EASE stores a dense {n_items:,} x {n_items:,} item matrix; fitting it would need about "
                f"{_gb(n_items):.3g} GB of memory, over max_items={self.max_items:,}. Use ItemKNN or ALS for a "
                f"catalogue this size, or pass EASE(max_items={n_items}) if the memory is there"
            )
        check_weights(self.user_items_.data, "EASE")
        x = positive_csr(self.user_items_)
        bar = None
        if self.show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=3, desc="EASE", unit="step")
        t0 = time.perf_counter()
        with _blas_threads(self.num_threads):
            self.B_, self.precision_ = ease_weights(x, float(self.regularization), bar=bar)
        if bar is not None:
            bar.close()
        log.debug("EASE fitted %d items in %.2f s (%s)", n_items, time.perf_counter() - t0, self.precision_)
        self._x = x

    # ------------------------------------------------------------------ scoring
    def _binary(self) -> sp.csr_matrix:
        x = getattr(self, "_x", None)
        if x is None:  # after load: derive once from the stored seen-items matrix
            x = positive_csr(self.user_items_)
            self._x = x
        return x

    # ------------------------------------------------------------------ streaming updates
    places_new_items = False  # B covers the items of the fit

    def _update(self, batch) -> None:
        check_weights(batch.user_items.data, "EASE.update")
        self._x = positive_csr(self.user_items_)

    def _padded(self, scores: np.ndarray) -> np.ndarray:
        """Scores over B's items, widened to the catalogue with zeros for items B does not cover."""
        n, nb = self.n_items, self.B_.shape[0]
        if nb == n:
            return scores
        out = np.zeros((scores.shape[0], n), dtype=np.float32)
        out[:, :nb] = scores
        return out

    def _score_users(self, user_indices: np.ndarray) -> np.ndarray:
        x = self._binary()[user_indices]
        nb = self.B_.shape[0]
        if nb < x.shape[1]:
            x = x[:, :nb]
        return self._padded(np.asarray(x @ self.B_, dtype=np.float32))

    def _score_histories(self, histories) -> np.ndarray:
        nb = self.B_.shape[0]
        out = np.zeros((len(histories), nb), dtype=np.float32)
        for r, h in enumerate(histories):
            h = np.unique(h)
            h = h[h < nb]
            if len(h):
                out[r] = self.B_[h].sum(axis=0)
        return self._padded(out)

    def _score_similar(self, item_indices: np.ndarray) -> np.ndarray:
        nb = self.B_.shape[0]
        idx = np.asarray(item_indices)
        out = np.zeros((len(idx), nb), dtype=np.float32)
        inside = idx < nb
        out[inside] = self.B_[idx[inside]]
        return self._padded(out)

    def _score_audience(self, item_indices: np.ndarray) -> np.ndarray:
        nb = self.B_.shape[0]
        idx = np.asarray(item_indices)
        col = np.asarray(self.B_[:, idx[idx < nb]], dtype=np.float32).sum(axis=1)
        x = self._binary()
        if nb < x.shape[1]:
            x = x[:, :nb]
        return np.asarray(x @ col, dtype=np.float32).ravel()

    # ------------------------------------------------------------------ persistence
    def _state(self):
        return {"precision": self.precision_}, {"B": self.B_}

    def _restore(self, meta, arrays):
        self.B_ = np.asarray(arrays["B"])
        self.precision_ = meta.get("precision", "float32")
        self._x = None

    def _check_state(self) -> None:
        from ..io.artifact import check_array

        n = len(self.item_map_)
        nb = check_array("B", self.B_, ndim=2).shape[0]
        placed = self._placed_mask()
        # B covers the fitted items; items update added after them are marked unplaced
        if nb > n or (nb < n and (placed is None or placed[nb:].any())):
            raise ArtifactError(f"B covers {nb} items but the model knows {n} and marks "
                                f"{n if placed is None else int(placed.sum())} as placed; the artifact is malformed, "
                                "save the model again")
        check_array("B", self.B_, shape=(nb, nb))


def ease_weights(x: sp.csr_matrix, regularization: float, *, bar=None) -> tuple[np.ndarray, str]:
    """``B = I - P / diag(P)``, ``P = (X^T X + regularization I)^-1``, diagonal zero; (B float32, precision).

    ``x`` is the (binarised) users x items matrix.
    """
    from scipy.linalg import lapack

    n = x.shape[1]
    gram = (x.T @ x).tocsr()
    # Gershgorin: every eigenvalue of the (non-negative) Gram matrix is at most its largest row sum
    top = float(np.asarray(gram.sum(axis=1)).max()) if gram.nnz else 0.0
    cond = (top + regularization) / regularization if regularization > 0 else np.inf
    dtype = np.float32 if cond <= _FLOAT32_COND_LIMIT else np.float64
    a = np.asarray(gram.astype(dtype).toarray(order="F"))
    del gram
    a[np.diag_indices(n)] += dtype(regularization)
    if bar is not None:
        bar.update(1)
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (a,))
    c, info = potrf(a, lower=True, overwrite_a=True, clean=False)
    if info != 0:
        raise ParameterError(
            f"X^T X + {regularization:g} I is not positive definite (Cholesky failed at item {info - 1}); "
            "with regularization=0 every item needs interactions and the items must be linearly independent. "
            "Use regularization > 0 (typically 50..1000)"
        )
    if bar is not None:
        bar.update(1)
    p, info = potri(c, lower=True, overwrite_c=True)
    if info != 0:  # pragma: no cover - potrf succeeded, so the factor is invertible
        raise ParameterError(f"inverting X^T X + {regularization:g} I failed (LAPACK info {info})")
    # potri fills the lower triangle only; mirror it in row blocks (no n^2 index arrays)
    step = 1024
    for s in range(0, n, step):
        e = min(n, s + step)
        p[s:e, e:] = p[e:, s:e].T
        blk = p[s:e, s:e]
        p[s:e, s:e] = np.tril(blk) + np.tril(blk, -1).T
    # p is symmetric and Fortran-ordered, so its transpose is the same matrix in C order
    pc = p.T
    d = np.diag(pc).copy()
    b = np.divide(pc, -d[None, :], out=pc)  # in place: column j of P over -P_jj
    b[np.diag_indices(n)] = 0.0
    if bar is not None:
        bar.update(1)
    return np.ascontiguousarray(b, dtype=np.float32), np.dtype(dtype).name
