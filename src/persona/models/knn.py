"""Neighbourhood models: item-item (:class:`ItemKNN`) and user-user (:class:`UserKNN`) k-nearest neighbours.

Both keep a sparse top-``k`` similarity matrix built by the compiled kernel
:func:`persona.kernels.similarity.topk_similarity`, and score by summing the similarities of the
neighbours a user's history touches.

Weightings (the ``weighting`` hyperparameter), applied to the rows that are compared before the
similarity is taken:

===========  =====================================================  =====================================
weighting    rows compared                                          similarity
===========  =====================================================  =====================================
``cosine``   the interaction weights as they are                    dot / (norm_i * norm_j + shrinkage)
``tfidf``    :func:`~persona.kernels.similarity.tfidf_weight`       dot / (norm_i * norm_j + shrinkage)
``bm25``     :func:`~persona.kernels.similarity.bm25_weight`        dot (BM25 already normalises lengths)
``none``     the interaction weights as they are                    dot (co-occurrence counts for 0/1 data)
===========  =====================================================  =====================================

``shrinkage`` therefore only applies to ``cosine`` and ``tfidf``. Scores always use the training
matrix's own weights (``user_items_``), not the weighted one: the weighting decides who is a
neighbour, the user's interactions decide how much each neighbour counts -- as implicit's
item-item recommenders do.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validate import MAX_N, check_int, check_number, check_weights
from ..data.interactions import Interactions
from ..errors import ParameterError
from ..io.artifact import pack_csr, unpack_csr
from ..kernels import topk
from ..kernels.similarity import (
    apply_bm25,
    apply_tfidf,
    bm25_idf,
    document_frequency,
    tfidf_idf,
    topk_similarity,
)
from .base import Recommender

__all__ = ["ItemKNN", "UserKNN", "WEIGHTINGS"]

WEIGHTINGS = ("cosine", "bm25", "tfidf", "none")
_NORMALISED = ("cosine", "tfidf")
_NEGATIVE_WEIGHTS = ("neighbourhood models expect non-negative confidences: drop negative feedback or map it "
                     "to 0 before fit")


def _binary_rows(histories: list[np.ndarray], n_cols: int) -> sp.csr_matrix:
    """One 0/1 row per history (repeats count once)."""
    rows = [np.unique(np.asarray(h, dtype=np.int64)) for h in histories]
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    indices = np.concatenate(rows).astype(np.int32) if indptr[-1] else np.zeros(0, dtype=np.int32)
    return sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(len(rows), n_cols))


def _dense(m) -> np.ndarray:
    out = m.toarray() if sp.issparse(m) else np.asarray(m)
    return np.ascontiguousarray(out, dtype=np.float32)


class _Neighbourhood(Recommender):
    """Shared hyperparameters, validation and weighting of the two neighbourhood models."""

    def __init__(self, *, k: int = 100, weighting: str = "cosine", shrinkage: float = 0.0, K1: float = 1.2,
                 B: float = 0.75, num_threads: int = 0, show_progress: bool = False):
        self.k = k
        self.weighting = weighting
        self.shrinkage = shrinkage
        self.K1 = K1
        self.B = B
        self.num_threads = num_threads
        self.show_progress = show_progress

    def _validate_params(self) -> None:
        check_int(self.k, f"k (neighbours kept per {self._entity})", min=1, max=MAX_N,
                  hint="typical values are 20-200; k above the number of neighbours available keeps them all")
        if self.weighting not in WEIGHTINGS:
            raise ParameterError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        for name in ("shrinkage", "K1", "B"):
            check_number(getattr(self, name), name, min=0.0)
        if self.B > 1:
            raise ParameterError(f"B (BM25 length normalisation) must lie in [0, 1], got {self.B!r}")
        if self.shrinkage and self.weighting not in _NORMALISED:
            raise ParameterError(f"shrinkage only applies to the normalised weightings {_NORMALISED}, "
                                 f"got weighting={self.weighting!r} with shrinkage={self.shrinkage!r}; "
                                 "set shrinkage=0 or weighting='cosine'")

    # ------------------------------------------------------------------ weighting
    def _learn_weighting(self, rows: sp.csr_matrix) -> None:
        """Statistics of the weighting over the training ``rows`` (documents x terms)."""
        self.idf_ = None
        self.avg_length_ = 0.0
        if self.weighting in ("bm25", "tfidf"):
            m = rows.copy()
            m.eliminate_zeros()
            df = document_frequency(m)
            n = m.shape[0]
            self.idf_ = (bm25_idf(df, n) if self.weighting == "bm25" else tfidf_idf(df, n))
            self.avg_length_ = float(np.asarray(m.sum(axis=1)).mean()) if n else 0.0

    def _weigh(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        """``rows`` weighted with the training statistics."""
        if self.weighting == "bm25":
            return apply_bm25(rows, self.idf_, self.avg_length_, float(self.K1), float(self.B))
        if self.weighting == "tfidf":
            return apply_tfidf(rows, self.idf_)
        return rows

    def _similarity(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        weighted = self._weigh(rows)
        return topk_similarity(weighted, min(int(self.k), max(1, rows.shape[0])), shrinkage=float(self.shrinkage),
                               normalize=self.weighting in _NORMALISED, num_threads=int(self.num_threads))

    def _weight_state(self) -> dict[str, np.ndarray]:
        return {} if self.idf_ is None else {"idf": np.asarray(self.idf_, dtype=np.float64)}

    def _restore_weighting(self, meta: dict, arrays: dict) -> None:
        from ..io.artifact import check_array

        self.idf_ = check_array("idf", arrays["idf"], ndim=1) if "idf" in arrays else None
        self.avg_length_ = float(meta.get("avg_length", 0.0))
        if not np.isfinite(self.avg_length_) or self.avg_length_ < 0:
            raise ParameterError(f"avg_length must be a finite number >= 0, got {self.avg_length_}")

    def _similarity_shape(self) -> tuple[int, int]:
        n = len(self.item_map_) if self._entity == "item" else len(self.user_map_)
        return n, n


class ItemKNN(_Neighbourhood):
    """Item-item k-nearest neighbours: "users who bought this also bought".

    Parameters
    ----------
    k : int, default 400
        Neighbours kept per item.
    weighting : {"cosine", "bm25", "tfidf", "none"}, default "bm25"
        How the items' user columns are weighted and compared (see the module docstring). The
        defaults were chosen by benchmarks/bench_defaults.py across the synthetic shop at three sizes, Amazon Beauty and Last.fm (cosine with K 100 before).
    shrinkage : float
        ``sim = dot / (norm_i * norm_j + shrinkage)``; damps pairs with few common users. Only
        with ``cosine`` and ``tfidf``.
    K1, B : float
        BM25 saturation and length normalisation (``weighting="bm25"`` only).
    num_threads : int
        Threads for the similarity build and top-k selection (0 = all cores).
    show_progress : bool
        Accepted for the shared interface; the build is one kernel call and shows no bar.

    Attributes
    ----------
    similarity_ : scipy.sparse.csr_matrix, float32 (n_items, n_items)
        Row ``i`` holds the ``k`` items most similar to item ``i`` (itself left out), best first.

    Notes
    -----
    With ``X = user_items_``: ``recommend`` scores ``X[u] @ similarity_``; a history scores its
    0/1 row the same way; ``similar_items(i)`` is row ``i`` of ``similarity_``;
    ``recommend_users(items)`` scores ``X @ similarity_[:, items].sum(axis=1)``.

    ``update(new)`` merges the new events into ``X``: a user's new history counts at once (the
    same as a fit whose similarities are those of the old data); new items have no neighbours
    until a refit, so they are not recommended until then (``placed_items_``).

    Examples
    --------
    >>> import persona as ps
    >>> from persona.models.knn import ItemKNN
    >>> inter = ps.Interactions.from_records([("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"),
    ...                                       ("u3", "a"), ("u3", "c")])
    >>> model = ItemKNN(k=10).fit(inter)
    >>> model.similar_items("a", n=2)[0].tolist()
    ['b', 'c']
    >>> model.recommend_for_history(["c"], n=1)[0].tolist()
    ['a']
    """

    def __init__(self, *, k: int = 400, weighting: str = "bm25", shrinkage: float = 0.0, K1: float = 1.2,
                 B: float = 0.75, num_threads: int = 0, show_progress: bool = False):
        super().__init__(k=k, weighting=weighting, shrinkage=shrinkage, K1=K1, B=B, num_threads=num_threads,
                         show_progress=show_progress)

    _entity = "item"

    def _fit(self, interactions: Interactions, **kwargs) -> None:
        X = self.user_items_
        check_weights(X.data, type(self).__name__, do=_NEGATIVE_WEIGHTS)
        items = X.T.tocsr()
        self._learn_weighting(items)
        self.similarity_ = self._similarity(items)

    places_new_items = False  # a new item has no similarities until a refit

    def _update(self, batch) -> None:
        from ._update import grow_csr

        check_weights(batch.user_items.data, f"{type(self).__name__}.update", do=_NEGATIVE_WEIGHTS)
        self.similarity_ = grow_csr(self.similarity_, (batch.n_items, batch.n_items))

    def _score_users(self, user_indices: np.ndarray) -> np.ndarray:
        return _dense(self.user_items_[np.asarray(user_indices)] @ self.similarity_)

    def _score_histories(self, histories) -> np.ndarray:
        return _dense(_binary_rows(histories, self.n_items) @ self.similarity_)

    def _score_similar(self, item_indices: np.ndarray) -> np.ndarray:
        return _dense(self.similarity_[np.asarray(item_indices)])

    def _score_audience(self, item_indices: np.ndarray) -> np.ndarray:
        v = np.asarray(self.similarity_[:, np.asarray(item_indices)].sum(axis=1), dtype=np.float32).ravel()
        return np.asarray(self.user_items_ @ v, dtype=np.float32).ravel()

    def _state(self):
        # the weighting's statistics served only the build; scoring needs the similarity alone
        return {}, pack_csr("similarity", self.similarity_)

    def _restore(self, meta, arrays):
        self.similarity_ = unpack_csr("similarity", arrays, shape=self._similarity_shape())
        self.idf_, self.avg_length_ = None, 0.0


class UserKNN(_Neighbourhood):
    """User-user k-nearest neighbours: "people like you bought".

    Parameters are those of :class:`ItemKNN` (defaults: ``k=100``, ``weighting="cosine"``), with users
    in place of items: ``k`` neighbours per user, the weighting applied to the users' item rows (BM25 / TF-IDF: items bought by many users
    count less).

    Attributes
    ----------
    similarity_ : scipy.sparse.csr_matrix, float32 (n_users, n_users)
        Row ``u`` holds the ``k`` users most similar to user ``u`` (themselves left out).

    Notes
    -----
    ``recommend`` scores ``similarity_[u] @ user_items_``. A history (a new user, an anonymous
    session) is weighted like the training users, compared with every training user on the fly,
    and scored through its own ``k`` nearest users -- no refit. ``similar_items`` answers with the
    plain cosine of the items' columns in ``user_items_`` (the items' co-buyers), computed per
    request; ``recommend_users(items)`` scores ``similarity_ @ user_items_[:, items].sum(axis=1)``.

    Examples
    --------
    >>> import persona as ps
    >>> from persona.models.knn import UserKNN
    >>> inter = ps.Interactions.from_records([("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"),
    ...                                       ("u2", "c"), ("u3", "d")])
    >>> model = UserKNN(k=5).fit(inter)
    >>> model.recommend("u1", n=1)[0].tolist()
    ['c']
    """

    _entity = "user"
    #: answered with the plain cosine of item columns, computed per request (see Notes)
    supports_similar_items = True

    def _fit(self, interactions: Interactions, **kwargs) -> None:
        X = self.user_items_
        check_weights(X.data, type(self).__name__, do=_NEGATIVE_WEIGHTS)
        self._learn_weighting(X)
        self.similarity_ = self._similarity(X)
        self._derive()

    def _derive(self) -> None:
        """Per-request helpers rebuilt from the stored state (never saved)."""
        X = self.user_items_
        weighted = self._weigh(X)
        self._weighted_t = weighted.T.tocsr()  # items x users: a history's dot with every user
        self._user_norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1), dtype=np.float64).ravel())
        self._item_users = X.T.tocsr()
        self._item_norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=0), dtype=np.float64).ravel())

    def _update(self, batch) -> None:
        """New users get neighbours at once, and users with new events new ones; a new user is a
        neighbour of those, and of everyone after a refit. New items count at once."""
        from ._update import grow_csr, replace_rows

        check_weights(batch.user_items.data, f"{type(self).__name__}.update", do=_NEGATIVE_WEIGHTS)
        if self.idf_ is not None and len(self.idf_) < batch.n_items:  # new items: weighted like the rarest
            self.idf_ = np.concatenate([self.idf_, np.full(batch.n_items - len(self.idf_), float(np.max(self.idf_)))])
        self._derive()
        users = batch.users
        sim = grow_csr(self.similarity_, (batch.n_users, batch.n_users))
        block = self._neighbours_of(self.user_items_[users], users)
        self.similarity_ = replace_rows(sim, users, block)

    def _score_users(self, user_indices: np.ndarray) -> np.ndarray:
        return _dense(self.similarity_[np.asarray(user_indices)] @ self.user_items_)

    def _history_similarity(self, histories) -> sp.csr_matrix:
        """(m, n_users) top-k similarity of each history to the training users, as the kernel defines it."""
        return self._neighbours_of(_binary_rows(histories, self.n_items))

    def _neighbours_of(self, x: sp.csr_matrix, users: np.ndarray | None = None) -> sp.csr_matrix:
        """(m, n_users) top-k similarity of item rows ``x`` to the users; row j leaves out user ``users[j]``."""
        m = x.shape[0]
        h = self._weigh(x)
        dots = np.asarray((h @ self._weighted_t).toarray(), dtype=np.float64)
        if self.weighting in _NORMALISED:
            h_norm = np.sqrt(np.asarray(h.multiply(h).sum(axis=1), dtype=np.float64))
            den = h_norm * self._user_norms[None, :] + float(self.shrinkage)
            sims = np.divide(dots, den, out=np.zeros_like(dots), where=den > 0)
        else:
            sims = dots
        sims = sims.astype(np.float32)
        sims[dots == 0] = -np.inf  # never a neighbour, as in the kernel
        if users is not None:
            sims[np.arange(len(users)), users] = -np.inf  # nor oneself
        k = min(int(self.k), self.n_users)
        idx, val = topk(sims, k, num_threads=int(self.num_threads))
        keep = np.isfinite(val)
        rows = np.repeat(np.arange(m), keep.sum(axis=1))
        return sp.csr_matrix((val[keep], (rows, idx[keep])), shape=(m, self.n_users), dtype=np.float32)

    def _score_histories(self, histories) -> np.ndarray:
        return _dense(self._history_similarity(histories) @ self.user_items_)

    def _score_similar(self, item_indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(item_indices)
        dots = _dense(self._item_users[idx] @ self.user_items_).astype(np.float64)
        den = self._item_norms[idx][:, None] * self._item_norms[None, :]
        return np.divide(dots, den, out=np.zeros_like(dots), where=den > 0).astype(np.float32)

    def _score_audience(self, item_indices: np.ndarray) -> np.ndarray:
        c = np.asarray(self.user_items_[:, np.asarray(item_indices)].sum(axis=1), dtype=np.float32).ravel()
        return np.asarray(self.similarity_ @ c, dtype=np.float32).ravel()

    def _state(self):
        return {"avg_length": self.avg_length_}, {**pack_csr("similarity", self.similarity_), **self._weight_state()}

    def _restore(self, meta, arrays):
        from ..io.artifact import check_array

        self.similarity_ = unpack_csr("similarity", arrays, shape=self._similarity_shape())
        self._restore_weighting(meta, arrays)
        if self.idf_ is not None:
            check_array("idf", self.idf_, shape=(len(self.item_map_),))
        self._derive()
