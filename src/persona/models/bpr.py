"""Bayesian Personalised Ranking: matrix factorisation trained on sampled (user, liked, not-liked) pairs."""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from .._validate import MAX_ITERATIONS, check_int, check_number, check_weights
from ..data.interactions import Interactions
from ..errors import DataError, ParameterError
from ..kernels.threads import numba_threads as _numba_threads
from .factor import FactorModel

__all__ = ["BPR"]

log = logging.getLogger("persona.models")

_SAMPLING = ("uniform", "popularity")
#: Passes over the new pairs that ``BPR.update`` makes by default (see benchmarks/bench_update.py).
UPDATE_EPOCHS = 10


def positive_csr(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """The stored entries with weight > 0, canonical (no duplicates, sorted rows), weights set to 1."""
    m = sp.csr_matrix(matrix, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.sort_indices()
    m.data = np.ones(len(m.data), dtype=np.float32)
    return m


class BPR(FactorModel):
    """Bayesian Personalised Ranking (Rendle et al. 2009) trained by lock-free parallel SGD.

    Each SGD step takes a stored (user, item) pair ``(u, i)`` and an item ``j`` the user has not
    interacted with, and raises ``ln sigmoid(x_ui - x_uj)``. One iteration makes as many steps as
    there are stored pairs.

    Parameters
    ----------
    factors : int, default 128
        Latent dimensions (the default chosen by benchmarks/bench_defaults.py across the synthetic shop at three sizes, Amazon Beauty and Last.fm; 64 before). An item bias is learned as well, as one extra column: ``user_factors_``
        and ``item_factors_`` have ``factors + 1`` columns, the user's last one the constant 1 and
        the item's last one its bias (the layout implicit uses), so a score is one dot product.
    learning_rate : float, default 0.05
        SGD step size.
    regularization : float, default 0.01
        L2 penalty on the user vector and the two item vectors (bias included) of every step.
    iterations : int, default 100
        Passes over the data; each pass draws ``nnz`` triples.
    negative_sampling : {"uniform", "popularity"}
        How the not-liked item is drawn: uniformly over the catalogue, or proportional to
        ``count ** 0.75`` (``count`` = users who interacted with it; never-seen items are then never
        drawn). Popular negatives are harder ones, which often helps the top of the ranking on
        long-tailed shops. Either way an item the user has is rejected (a binary search of the
        user's sorted row) and drawn again; after 64 rejected draws a uniform sample picks directly
        among the user's free items, a popularity sample gives up; a sample without a negative
        (uniform: the user holds the whole catalogue) is counted in ``history_["skipped"]``.
    random_state : int or None
        Seeds the initial factors and every sampling stream. With ``num_threads=1`` the same seed
        gives identical factors; with more threads the updates race (hogwild) and results differ
        slightly from run to run.
    num_threads : int, default 0
        Numba threads for fitting; 0 uses all Numba's threads.
    show_progress : bool, default False
        A tqdm bar showing, per iteration, the mean BPR loss ``-ln sigmoid(x_uij)`` and the fraction
        of sampled pairs that were already ordered correctly.

    Notes
    -----
    Weights of the interaction matrix are ignored beyond "stored and > 0" (BPR learns from the
    presence of an interaction); negative weights raise :class:`~persona.DataError`.

    ``history_`` holds the per-iteration ``loss``, ``pair_accuracy`` and ``skipped`` lists of the
    last fit (not saved with the model).

    ``update(new, epochs=None)`` runs a partial epoch: SGD steps over the new (user, item) pairs
    only, ``epochs`` passes (default ``UPDATE_EPOCHS``), each with a negative drawn as in ``fit``
    from the merged data. A new user starts from the mean of their items' vectors (the
    ``recommend_for_history`` fold-in), a new item from zero; both are recommended at once.

    Examples
    --------
    >>> import persona as ps
    >>> from persona.models.bpr import BPR
    >>> shop = ps.datasets.synthetic_shop(n_users=200, n_items=50, seed=0)
    >>> model = BPR(factors=8, iterations=5, random_state=0, num_threads=1).fit(shop.interactions)
    >>> model.item_factors_.shape == (shop.interactions.n_items, 9)  # 8 factors + the item bias
    True
    >>> items, scores = model.recommend(shop.interactions.user_ids[0], n=3)
    >>> len(items)
    3
    """

    def __init__(self, *, factors: int = 128, learning_rate: float = 0.05, regularization: float = 0.01,
                 iterations: int = 100, negative_sampling: str = "uniform", random_state: int | None = None,
                 num_threads: int = 0, show_progress: bool = False):
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.negative_sampling = negative_sampling
        self.random_state = random_state
        self.num_threads = num_threads
        self.show_progress = show_progress

    # ------------------------------------------------------------------ fitting
    def _validate_params(self) -> None:
        self._validate_factor_params()
        check_number(self.learning_rate, "learning_rate", min=0.0, min_open=True, hint="try 0.05")
        if self.negative_sampling not in _SAMPLING:
            raise ParameterError(f"negative_sampling must be one of {_SAMPLING}, got {self.negative_sampling!r}")

    def _fit(self, interactions: Interactions) -> None:
        from ..kernels import bpr as kernels  # Numba: imported (and compiled, or loaded from cache) here

        check_weights(self.user_items_.data, "BPR")
        x = positive_csr(self.user_items_)
        if x.nnz == 0:
            raise DataError("BPR got interactions whose weights are all 0; there is no positive pair to learn from")
        n_users, n_items = x.shape
        f = int(self.factors)
        rng = np.random.default_rng(self.random_state)

        # implicit's initialisation: small uniform factors, zero bias; rows without data stay at zero
        user_f = ((rng.random((n_users, f + 1), dtype=np.float32) - 0.5) / f).astype(np.float32)
        item_f = ((rng.random((n_items, f + 1), dtype=np.float32) - 0.5) / f).astype(np.float32)
        user_f[:, f] = 1.0
        item_f[:, f] = 0.0
        item_counts = np.bincount(x.indices, minlength=n_items)
        item_f[item_counts == 0] = 0.0
        user_f[np.diff(x.indptr) == 0, :f] = 0.0

        indptr = x.indptr.astype(np.int64)
        indices = x.indices.astype(np.int32)
        sample_users = np.repeat(np.arange(n_users, dtype=np.int32), np.diff(indptr))
        use_pop = self.negative_sampling == "popularity"
        cdf = kernels.popularity_cdf(item_counts) if use_pop else np.zeros(1, dtype=np.float64)
        n_samples = int(x.nnz)
        seeds = rng.integers(0, 2 ** 63 - 1, size=int(self.iterations), dtype=np.int64)

        history = {"loss": [], "pair_accuracy": [], "skipped": []}
        bar = None
        if self.show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(self.iterations), desc="BPR", unit="it")
        t0 = time.perf_counter()
        with _numba_threads(self.num_threads):
            for it in range(int(self.iterations)):
                loss, correct, skipped = kernels.bpr_epoch(
                    user_f, item_f, sample_users, indptr, indices, cdf, use_pop, n_samples,
                    float(self.learning_rate), float(self.regularization), int(seeds[it]),
                    kernels.MAX_NEGATIVE_TRIES)
                done = max(n_samples - int(skipped), 1)
                history["loss"].append(float(loss) / done)
                history["pair_accuracy"].append(float(correct) / done)
                history["skipped"].append(int(skipped))
                if bar is not None:
                    bar.set_postfix(loss=f"{history['loss'][-1]:.4f}",
                                    correct=f"{history['pair_accuracy'][-1]:.3f}")
                    bar.update(1)
        if bar is not None:
            bar.close()
        if history["skipped"] and history["skipped"][-1]:
            log.info("BPR: %d of %d samples per iteration found no negative item (users with nearly every "
                     "item)", history["skipped"][-1], n_samples)
        log.debug("BPR fitted %d iterations in %.2f s", self.iterations, time.perf_counter() - t0)
        if not (np.isfinite(user_f).all() and np.isfinite(item_f).all()):
            raise ParameterError(f"BPR diverged (non-finite factors) with learning_rate={self.learning_rate}; "
                                 "lower learning_rate or raise regularization")
        self.user_factors_ = user_f
        self.item_factors_ = item_f
        self.history_ = history

    # ------------------------------------------------------------------ streaming updates
    def _update(self, batch, epochs: int | None = None) -> None:
        from ..kernels import bpr as kernels
        from ._update import grow_rows

        epochs = UPDATE_EPOCHS if epochs is None else check_int(epochs, "BPR.update: epochs", min=1,
                                                                    max=MAX_ITERATIONS, hint="try 10")
        check_weights(batch.user_items.data, "BPR.update")
        x = positive_csr(batch.user_items)
        f = self.item_factors_.shape[1] - 1
        U = grow_rows(self.user_factors_, batch.n_users)
        V = grow_rows(self.item_factors_, batch.n_items)  # new items: zero vector and bias, as unseen ones at fit
        new = batch.new_users
        for u in new:  # the recommend_for_history fold-in: the mean of the user's items' vectors
            h = x.indices[x.indptr[u]:x.indptr[u + 1]]
            if len(h):
                U[u, :f] = V[h, :f].mean(axis=0)
        pairs = positive_csr(batch.inter.matrix).tocoo()
        if pairs.nnz:
            # seeded models replay the same update on the same data; each batch gets its own stream
            rng = np.random.default_rng(None if self.random_state is None else
                                        [int(self.random_state), int(x.nnz), int(pairs.nnz)])
            order = np.concatenate([rng.permutation(pairs.nnz) for _ in range(epochs)])
            users = pairs.row.astype(np.int32)[order]
            pos = pairs.col.astype(np.int32)[order]
            use_pop = self.negative_sampling == "popularity"
            counts = np.bincount(x.indices, minlength=batch.n_items)
            cdf = kernels.popularity_cdf(counts) if use_pop else np.zeros(1, dtype=np.float64)
            indptr, indices = x.indptr.astype(np.int64), x.indices.astype(np.int32)
            neg = kernels.sample_negatives(indptr, indices, users, batch.n_items, cdf, use_pop,
                                           int(rng.integers(0, 2 ** 63 - 1)), kernels.MAX_NEGATIVE_TRIES)
            ok = neg >= 0
            kernels.bpr_update_triples(U, V, users[ok], pos[ok], neg[ok].astype(np.int32),
                                       float(self.learning_rate), float(self.regularization))
        if not (np.isfinite(U).all() and np.isfinite(V).all()):
            raise ParameterError(f"BPR.update diverged (non-finite factors) with learning_rate={self.learning_rate}; "
                                 "lower learning_rate or raise regularization")
        U[:, f] = 1.0
        self.user_factors_, self.item_factors_ = U, V
        self._refresh_index("BPR.update")

    # ------------------------------------------------------------------ scoring beyond FactorModel's
    def _fold_in(self, histories) -> np.ndarray:
        """Mean latent vector of the history's items, with the constant 1 that picks up item biases."""
        f = self.item_factors_.shape[1] - 1
        out = np.zeros((len(histories), f + 1), dtype=np.float32)
        out[:, f] = 1.0
        for r, h in enumerate(histories):
            if len(h):
                out[r, :f] = self.item_factors_[h, :f].mean(axis=0)
        return out

    def _similar_vectors(self) -> np.ndarray:
        return self.item_factors_[:, :-1]  # similarity leaves the item bias out

