"""Explicit-rating matrix factorisation with biases, fitted by alternating least squares."""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from ..data.idmap import normalize_ids
from ..data.interactions import Interactions
from ..errors import DataError, ParameterError, UnsupportedError
from ..kernels.threads import numba_threads as _numba_threads
from .factor import FactorModel
from ..typing import Ids, ItemId, UserId

__all__ = ["MF"]

log = logging.getLogger("persona.models")


def _rating_matrix(inter: Interactions) -> sp.csr_matrix:
    """Users x items CSR of ratings: the last ``value`` of each user-item pair when the interactions
    carry values, else the aggregated matrix weights."""
    if inter.values is None:
        m = sp.csr_matrix(inter.matrix, dtype=np.float32, copy=True)
        m.sum_duplicates()
        what = "weights"
    else:
        n_items = inter.n_items
        key = inter.users.astype(np.int64) * n_items + inter.items
        # events are sorted by user, then time: the last occurrence of a pair is the latest rating
        rev = key[::-1]
        _, first_rev = np.unique(rev, return_index=True)
        pick = len(key) - 1 - first_rev
        m = sp.csr_matrix((inter.values[pick].astype(np.float32), (key[pick] // n_items, key[pick] % n_items)),
                          shape=inter.shape, dtype=np.float32)
        what = "values"
    m.sort_indices()
    bad = ~np.isfinite(m.data)
    if bad.any():
        raise DataError(f"MF: expected finite ratings, got {int(bad.sum())} NaN or infinite rating(s) in the "
                        f"interactions' {what}; drop those events (e.g. inter.subset(...)) before fitting")
    return m


class MF(FactorModel):
    """Rating prediction ``r_ui ~ mu + b_u + b_i + x_u . y_i``, fitted by ALS (explicit feedback).

    Each half-step solves every user (then every item) exactly, with weighted-lambda
    regularisation (Zhou et al. 2008): a user with ``n_u`` ratings pays
    ``regularization * n_u * (|x_u|^2 + b_u^2)``, so heavy raters are not under-regularised and the
    penalty needs no retuning when the data grow. ``mu`` is the global mean rating.

    Parameters
    ----------
    factors : int, default 32
    iterations : int, default 15
        Alternations (users, then items).
    regularization : float, default 0.05
        Per-rating penalty weight (lambda).
    random_state : int or None
        Seeds the initial factors (normal, standard deviation 0.1). Rows are solved independently,
        so the same seed gives identical factors for any thread count.
    num_threads : int, default 0
        Numba threads while fitting; 0 keeps Numba's setting.
    show_progress : bool, default False
        A tqdm bar over the iterations, showing the training RMSE.

    Notes
    -----
    Ratings come from ``Interactions.values`` when present (the latest value of a repeated
    user-item pair), else from the interaction matrix weights (repeats aggregated as the
    interactions say, ``sum`` by default). They must be finite.

    Scores used for ranking (``recommend``) are the predicted ratings. For
    ``recommend_for_history`` a history carries no ratings: the user vector is the mean of the
    history's item vectors and the user bias 0. ``training_rmse_`` holds the training RMSE after
    each iteration when ``show_progress`` is on.

    ``update(new)`` merges the new ratings (a pair's latest value wins; from weights, the
    interactions' ``aggregate``) and solves, exactly, every user with new ratings against the
    fixed item factors and biases, then every item with new ratings, then those users again; the
    global mean stays that of the fit. New users and items are placed at once.

    Examples
    --------
    >>> import numpy as np
    >>> from persona.data import IdMap, Interactions
    >>> from persona.models.mf import MF
    >>> inter = Interactions(IdMap(["ann", "bob"]), IdMap(["x", "y", "z"]), users=[0, 0, 1, 1],
    ...                      items=[0, 1, 1, 2], values=[5.0, 3.0, 4.0, 2.0])
    >>> model = MF(factors=2, iterations=10, random_state=0).fit(inter)
    >>> model.global_mean_
    3.5
    >>> model.predict(["ann", "nobody"], ["y", "x"]).shape  # unknown user: mu + item bias
    (2,)
    """

    def __init__(self, *, factors: int = 32, iterations: int = 15, regularization: float = 0.05,
                 random_state: int | None = None, num_threads: int = 0, show_progress: bool = False):
        self.factors = factors
        self.iterations = iterations
        self.regularization = regularization
        self.random_state = random_state
        self.num_threads = num_threads
        self.show_progress = show_progress

    def _validate_params(self) -> None:
        self._validate_factor_params()

    # ------------------------------------------------------------------ fitting
    def _fit(self, interactions: Interactions) -> None:
        from ..kernels import als as kernels  # Numba: imported (and compiled, or loaded from cache) here

        R = _rating_matrix(interactions)
        if R.nnz == 0:
            raise DataError("MF got no ratings to learn from")
        # the ratings, when they are values rather than the seen-items weights: update merges new ones in
        self.ratings_ = R if interactions.values is not None else None
        self._ratings_known = True
        RT = R.T.tocsr()
        RT.sort_indices()
        n_users, n_items = R.shape
        f = int(self.factors)
        reg = float(self.regularization)
        mu = float(np.mean(R.data, dtype=np.float64))
        rng = np.random.default_rng(self.random_state)
        X = (rng.standard_normal((n_users, f)) * 0.1).astype(np.float32)
        Y = (rng.standard_normal((n_items, f)) * 0.1).astype(np.float32)
        bx = np.zeros(n_users)
        by = np.zeros(n_items)

        bar = None
        if self.show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(self.iterations), desc="MF", unit="it")
        rmse = []
        t0 = time.perf_counter()
        try:
            with _numba_threads(self.num_threads):
                for _ in range(int(self.iterations)):
                    kernels.mf_half_step(R.indptr, R.indices, R.data, X, bx, Y, by, mu, reg)
                    kernels.mf_half_step(RT.indptr, RT.indices, RT.data, Y, by, X, bx, mu, reg)
                    if bar is not None:
                        rmse.append(self._train_rmse(R, X, Y, bx, by, mu))
                        bar.set_postfix(rmse=f"{rmse[-1]:.4f}")
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        log.debug("MF fitted %d iterations in %.2f s", self.iterations, time.perf_counter() - t0)
        if not (np.isfinite(X).all() and np.isfinite(Y).all()):
            raise ParameterError(f"MF produced non-finite factors; raise regularization (it is {reg})")
        self.user_factors_ = X
        self.item_factors_ = Y
        self.user_bias_ = bx.astype(np.float32)
        self.item_bias_ = by.astype(np.float32)
        self.global_mean_ = mu
        self.training_rmse_ = rmse

    def _update(self, batch) -> None:
        from ..kernels import als as kernels
        from ._update import grow_rows, merge_matrices

        if not getattr(self, "_ratings_known", False):
            raise UnsupportedError("MF.update: this artifact does not say where its ratings came from (saved before "
                                   "updates existed); refit the model to update it")
        if self.ratings_ is None:
            R = batch.user_items
        elif batch.inter.values is None:
            raise DataError("MF.update: expected new events with values (ratings), as the model was fitted on "
                            "values; build them with value='rating'")
        else:
            R = merge_matrices(self.ratings_, _rating_matrix(batch.inter), "last")
        R = sp.csr_matrix(R, dtype=np.float32)
        R.sort_indices()
        if not np.isfinite(R.data).all():
            raise DataError("MF.update: expected finite ratings, got NaN or infinite ones; drop those events")
        RT = R.T.tocsr()
        RT.sort_indices()
        X = grow_rows(self.user_factors_, batch.n_users)
        Y = grow_rows(self.item_factors_, batch.n_items)
        bx = grow_rows(self.user_bias_, batch.n_users).astype(np.float64)
        by = grow_rows(self.item_bias_, batch.n_items).astype(np.float64)
        mu, reg = float(self.global_mean_), float(self.regularization)

        def solve(M, rows, A, a_bias, B, b_bias):
            block = M[rows]
            out, out_b = np.zeros((len(rows), A.shape[1]), np.float32), np.zeros(len(rows))
            kernels.mf_half_step(block.indptr, block.indices, block.data, out, out_b, B, b_bias, mu, reg)
            A[rows], a_bias[rows] = out, out_b

        with _numba_threads(self.num_threads):  # users, items, users: as ALS.update
            solve(R, batch.users, X, bx, Y, by)
            solve(RT, batch.items, Y, by, X, bx)
            solve(R, batch.users, X, bx, Y, by)
        if not (np.isfinite(X).all() and np.isfinite(Y).all()):
            raise ParameterError(f"MF.update produced non-finite factors; raise regularization (it is {reg})")
        self.user_factors_, self.item_factors_ = X, Y
        self.user_bias_, self.item_bias_ = bx.astype(np.float32), by.astype(np.float32)
        if self.ratings_ is not None:
            self.ratings_ = R
        self._refresh_index("MF.update")

    @staticmethod
    def _train_rmse(R, X, Y, bx, by, mu) -> float:
        rows = np.repeat(np.arange(R.shape[0]), np.diff(R.indptr))
        pred = mu + bx[rows] + by[R.indices] + np.einsum("ij,ij->i", X[rows], Y[R.indices], dtype=np.float64)
        return float(np.sqrt(np.mean((R.data - pred) ** 2)))

    # ------------------------------------------------------------------ prediction
    def predict(self, users: UserId | Ids, items: ItemId | Ids) -> np.ndarray:
        """Predicted ratings for pairs ``(users[j], items[j])`` of external ids; float32, 1-D.

        An unknown user gets ``mu + b_i``, an unknown item ``mu + b_u``, and a pair of both
        unknown the global mean ``mu``: the best guess from what the model knows, never an error,
        so a rating can be shown for every product page.

        Parameters
        ----------
        users, items : sequences of external ids, of equal length (a single id is one pair)
        """
        self._check_fitted()
        users = normalize_ids(users, what="users")
        items = normalize_ids(items, what="items")
        if len(users) != len(items):
            raise ParameterError(f"predict got {len(users)} users but {len(items)} items; pass one item per user")
        u = self.user_map_.lookup(users)
        i = self.item_map_.lookup(items)
        ku, ki = u >= 0, i >= 0
        out = np.full(len(u), self.global_mean_, dtype=np.float64)
        out[ku] += self.user_bias_[u[ku]]
        out[ki] += self.item_bias_[i[ki]]
        both = ku & ki
        out[both] += np.einsum("ij,ij->i", self.user_factors_[u[both]], self.item_factors_[i[both]],
                               dtype=np.float64)
        return out.astype(np.float32)

    def _index_item_vectors(self) -> np.ndarray:
        # [V, b_i] . [u, 1] = u.v + b_i; mu + b_u is added back per user after the search
        return np.hstack([self.item_factors_, self.item_bias_[:, None]]).astype(np.float32)

    def _index_queries(self, users):
        users = np.asarray(users)
        ones = np.ones((len(users), 1), dtype=np.float32)
        offset = (self.global_mean_ + self.user_bias_[users]).astype(np.float32)
        return np.hstack([self.user_factors_[users], ones]), offset

    # ------------------------------------------------------------------ scoring (predicted ratings)
    def _score_users(self, user_indices: np.ndarray) -> np.ndarray:
        scores = self.user_factors_[user_indices] @ self._item_factors_t()
        scores += self.item_bias_[None, :]
        scores += (self.global_mean_ + self.user_bias_[user_indices]).astype(np.float32)[:, None]
        return scores

    def _score_histories(self, histories) -> np.ndarray:
        scores = self._fold_in(histories) @ self.item_factors_.T
        scores += (self.item_bias_ + np.float32(self.global_mean_))[None, :]
        return scores

    def _score_audience(self, item_indices: np.ndarray) -> np.ndarray:
        """Summed predicted rating of the items for every user."""
        k = len(item_indices)
        return (self.user_factors_ @ self.item_factors_[item_indices].sum(axis=0)
                + k * self.user_bias_ + np.float32(k * self.global_mean_ + self.item_bias_[item_indices].sum()))

    # ------------------------------------------------------------------ cold items: the bias is mapped too
    def _feature_targets(self) -> np.ndarray:
        return np.hstack([self.item_factors_, self.item_bias_[:, None]])

    def _set_item_rows(self, rows: np.ndarray, n_items: int, where: np.ndarray) -> None:
        f = self.item_factors_.shape[1]
        bias = np.zeros(n_items, dtype=np.float32)
        bias[:len(self.item_bias_)] = self.item_bias_
        bias[where] = rows[:, f]
        super()._set_item_rows(rows[:, :f], n_items, where)
        self.item_bias_ = bias

    # ------------------------------------------------------------------ persistence
    def _extra_state(self):
        arrays = {"user_bias": self.user_bias_, "item_bias": self.item_bias_}
        ratings = getattr(self, "ratings_", None)
        if ratings is not None:
            from ..io.artifact import pack_csr

            arrays.update(pack_csr("ratings", ratings))
        meta = {"global_mean": float(self.global_mean_)}
        if getattr(self, "_ratings_known", False):
            meta["ratings"] = "values" if ratings is not None else "weights"
        return meta, arrays

    def _restore_extra(self, meta, arrays) -> None:
        from ..io.artifact import unpack_csr

        self.global_mean_ = float(meta["global_mean"])
        self.user_bias_ = np.asarray(arrays["user_bias"])
        self.item_bias_ = np.asarray(arrays["item_bias"])
        source = meta.get("ratings")
        if source not in (None, "values", "weights"):
            raise ParameterError(f"ratings: expected 'values' or 'weights', got {source!r}")
        self._ratings_known = source is not None
        self.ratings_ = None
        if source == "values":
            self.ratings_ = unpack_csr("ratings", arrays, shape=(len(self.user_map_), len(self.item_map_)))

    def _check_state(self) -> None:
        from ..io.artifact import check_array

        super()._check_state()
        check_array("user_bias", self.user_bias_, shape=(len(self.user_map_),))
        check_array("item_bias", self.item_bias_, shape=(len(self.item_map_),))
        if not np.isfinite(self.global_mean_):
            raise ParameterError(f"global_mean must be finite, got {self.global_mean_}")
