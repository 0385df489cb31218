"""Shared machinery of latent-factor models (ALS, BPR, MF): scores are dot products of factors.

A subclass learns ``user_factors_`` (n_users, f) and ``item_factors_`` (n_items, f), both float32,
and may override :meth:`FactorModel._fold_in` to turn an item history into a user vector without
refitting (ALS solves its least-squares problem; the default averages item factors).

Cold items: ``fit(interactions, item_features=...)`` also learns a ridge map from item features to
item vectors on the trained items, and :meth:`FactorModel.add_items` places new items with it, so
they are recommended at once, without a refit.
"""

from __future__ import annotations

import logging

from typing import TYPE_CHECKING, Any

import numpy as np

import scipy.sparse as sp

from .._validate import MAX_FACTORS, MAX_ITERATIONS, check_int, check_number
from ..data.features import Features
from ..data.interactions import Interactions
from ..errors import ArtifactError, DataError, ParameterError, UnsupportedError
from ._cold import new_item_rows, ridge_map, training_rows
from .base import Recommender

if TYPE_CHECKING:  # persona.retrieval loads on first use; pandas only for add_items' annotation
    import pandas as pd

    from ..retrieval import Index

__all__ = ["FactorModel", "ItemVectors", "exclusion_rows_of"]

log = logging.getLogger("persona.models")


def exclusion_rows_of(excl: Any, n_rows: int) -> list[np.ndarray] | None:
    """Per-row index arrays from the exclusion structures the base class builds (or None)."""
    if excl is None:
        return None
    if isinstance(excl, tuple):
        indptr, indices = excl
        return [indices[indptr[r]:indptr[r + 1]] for r in range(n_rows)]
    return [np.asarray(r) for r in excl]


class ItemVectors:
    """Mixin of models that score a user as ``query . item_factors_``: the transposed factors, cached."""

    def _item_factors_t(self) -> np.ndarray:
        """``item_factors_.T`` as a contiguous (f, n_items) array, built once per factor array.

        BLAS multiplies a batch of users by a contiguous transposed matrix several times faster
        than by the transposed view. Factor arrays are replaced, never written in place, after fit,
        so the cache is keyed on the array object; a race between threads only builds it twice.
        """
        cache = getattr(self, "_item_t_cache", None)
        if cache is None or cache[0] is not self.item_factors_:
            cache = (self.item_factors_, np.ascontiguousarray(self.item_factors_.T))
            self._item_t_cache = cache
        return cache[1]


class FactorModel(ItemVectors, Recommender):
    """Base class of models that score ``user_factors_[u] @ item_factors_[i]``."""

    def _validate_factor_params(self) -> None:
        check_int(getattr(self, "factors", 1), "factors", min=1, max=MAX_FACTORS,
                  hint="typical values are 32-512")
        check_int(getattr(self, "iterations", 1), "iterations", min=1, max=MAX_ITERATIONS,
                  hint="typical values are 10-200; prefer early stopping to more passes")
        check_number(getattr(self, "regularization", 0.0), "regularization", min=0.0)

    def _validate_params(self) -> None:
        self._validate_factor_params()

    # ------------------------------------------------------------------ fitting, with item features
    def fit(self, interactions: Interactions, item_features: Features | sp.spmatrix | np.ndarray | None = None, *,
            feature_regularization: float = 1.0, **kwargs: Any) -> FactorModel:
        """Learn the factors from ``interactions``; with ``item_features``, also a map for new items.

        Parameters
        ----------
        interactions : Interactions
        item_features : persona.data.Features, scipy sparse matrix or 2-D array, optional
            The items' features: a Features matched by id (it may hold more ids, e.g. the whole
            catalogue) or a matrix with one row per item of ``interactions``. When given, a ridge
            regression from features to item vectors is learnt on the trained items (those with
            a non-empty row), so :meth:`add_items` can place items that have no interaction yet.
        feature_regularization : float > 0, default 1.0
            The ridge penalty of that map (larger: new items closer to the mean item vector).
        **kwargs
            The model's own fit options (e.g. ALS's ``compute_loss``).

        Returns
        -------
        self
        """
        rows = columns = spec = None
        if item_features is not None:
            if not isinstance(interactions, Interactions):
                return super().fit(interactions, **kwargs)  # the base class names the problem
            check_number(feature_regularization, "feature_regularization", min=0.0, min_open=True,
                         hint="try 1; larger puts new items closer to the mean item vector")
            rows, columns, spec = training_rows(item_features, interactions.item_map, type(self).__name__)
        super().fit(interactions, **kwargs)
        self.item_feature_weights_ = self.item_feature_bias_ = None
        self.item_feature_columns_ = self.item_feature_spec_ = None
        if rows is not None:
            self._learn_feature_map(rows, float(feature_regularization))
            self.item_feature_columns_, self.item_feature_spec_ = columns, spec
        return self

    def _learn_feature_map(self, rows: sp.csr_matrix, regularization: float) -> None:
        """Ridge from feature rows to :meth:`_feature_targets`, on the items with features and events."""
        trained = (np.diff(rows.indptr) > 0) & (np.diff(self.user_items_.tocsc().indptr) > 0)
        if trained.sum() < 2:
            raise DataError(f"{type(self).__name__}: item_features: expected feature rows for at least 2 items with "
                            f"events, got {int(trained.sum())}; check that the Features' ids are the interactions' "
                            "item ids")
        self.item_feature_weights_, self.item_feature_bias_ = ridge_map(
            rows[trained], self._feature_targets()[trained], regularization)
        log.info("%s: learnt a ridge map from %d item feature columns to item vectors on %d items",
                 type(self).__name__, rows.shape[1], int(trained.sum()))

    def _feature_targets(self) -> np.ndarray:
        """What the feature map predicts per item (rows of ``item_factors_``; MF adds its bias)."""
        return self.item_factors_

    def _set_item_rows(self, rows: np.ndarray, n_items: int, where: np.ndarray) -> None:
        """Grow the item state to ``n_items`` rows, ``rows`` (targets) placed at ``where``."""
        factors = np.zeros((n_items, self.item_factors_.shape[1]), dtype=np.float32)
        factors[:len(self.item_factors_)] = self.item_factors_
        factors[where] = rows
        self.item_factors_ = factors

    def _after_items_added(self) -> None:
        """Subclass hook: refresh caches derived from ``item_factors_`` (ALS's Gram matrix)."""

    def add_items(self, features: Features | pd.DataFrame, *, known: str = "error") -> FactorModel:
        """Add new items, placed by the feature map learnt at ``fit(..., item_features=...)``; no refit.

        The new items' vectors are ``features @ item_feature_weights_ + item_feature_bias_``;
        they are appended to ``item_map_`` and ``item_factors_``, so ``recommend``,
        ``recommend_for_history``, filters, ``similar_items`` and ``recommend_users`` see them at
        once, and a retrieval index chosen with :meth:`use_index` is rebuilt over them.

        Parameters
        ----------
        features : Features or pandas.DataFrame
            The new items: a :class:`~persona.data.Features` with the fitted columns
            (``fitted_features.transform(new_items_df)``), or a DataFrame with the fitted fields
            and id column, encoded with the encoding kept in the model (also after ``load``).
        known : {"error", "skip"}
            Items the model already knows keep their trained vector: ``"error"`` raises
            :class:`~persona.DataError` naming them; ``"skip"`` leaves them out, so a whole
            catalogue can be passed.

        Returns
        -------
        self

        Notes
        -----
        This changes the model: call it in an offline job or on a copy that is then swapped in
        (``RecommenderService.swap``), not while other threads serve from the same object. The
        new items have no interactions: a refit, or ALS's ``partial_fit_items`` once they have
        events, replaces the guessed vectors by learnt ones.

        Examples
        --------
        >>> import persona as ps
        >>> from persona.data import Features
        >>> shop = ps.datasets.synthetic_shop(n_users=300, n_items=60, seed=0)
        >>> inter = shop.interactions
        >>> feats = Features.from_frame(shop.items, inter.item_map, "item_id", categorical=["category", "brand"])
        >>> model = ps.ALS(factors=8, iterations=5, random_state=0).fit(inter, item_features=feats)
        >>> new = shop.items.head(1).assign(item_id="new-boots")
        >>> model = model.add_items(new)           # a DataFrame, encoded like the fitted features
        >>> ids, _ = model.recommend_for_history([shop.items.item_id[0]], n=len(model.item_map_))
        >>> "new-boots" in ids.tolist()
        True
        """
        self._check_fitted()
        who = type(self).__name__
        if getattr(self, "item_feature_weights_", None) is None:
            raise UnsupportedError(f"{who}.add_items: expected a model fitted with item_features, got one fitted "
                                   "without; refit with fit(interactions, item_features=...)")
        if getattr(self, "index_", None) is not None and getattr(self, "_index_spec", None) is None:
            raise ParameterError(f"{who}.add_items: the model serves through a ready index of {len(self.item_map_)} "
                                 "items given to use_index, which cannot grow; call use_index(None), add the items, "
                                 "then pass an index over the new item vectors (or use_index('exact'))")
        ids, x = new_item_rows(features, self.item_feature_columns_, self.item_feature_spec_,
                               self.item_feature_weights_.shape[0], self.item_map_, known, who)
        if len(ids) == 0:
            return self
        rows = np.asarray(x @ self.item_feature_weights_, dtype=np.float32) + self.item_feature_bias_
        new_map = self.item_map_.grow(ids)
        n_new = len(new_map)
        self._set_item_rows(rows, n_new, new_map.lookup(ids))
        ui = self.user_items_
        self.user_items_ = sp.csr_matrix((ui.data, ui.indices, ui.indptr), shape=(ui.shape[0], n_new))
        self.item_map_ = new_map
        self._after_items_added()
        spec = getattr(self, "_index_spec", None)
        if spec is not None:  # rebuilt now rather than by the first request
            self.use_index(spec["kind"], **spec["options"])
        log.info("%s: added %d items from their features (now %d)", who, len(ids), n_new)
        return self

    def _refresh_index(self, who: str) -> None:
        """Rebuild the retrieval index chosen with :meth:`use_index` over the current item vectors."""
        if getattr(self, "index_", None) is None:
            return
        spec = getattr(self, "_index_spec", None)
        if spec is None:
            raise ParameterError(f"{who}: the model serves through a ready index given to use_index, which cannot "
                                 "follow new item vectors; call use_index(None) (or use_index('exact')) first")
        self.use_index(spec["kind"], **spec["options"])

    # ------------------------------------------------------------------ scoring
    def _batch_rows(self) -> int:
        # larger blocks keep the BLAS product efficient; 256 MB of scores at most
        return max(1, min(2048, (256 << 20) // (4 * max(1, self.n_items))))

    def _score_users(self, user_indices: np.ndarray) -> np.ndarray:
        return self.user_factors_[user_indices] @ self._item_factors_t()

    def _fold_in(self, histories: list[np.ndarray]) -> np.ndarray:
        """User vectors for item-index histories (default: mean item factor; empty -> zeros)."""
        out = np.zeros((len(histories), self.item_factors_.shape[1]), dtype=np.float32)
        for r, h in enumerate(histories):
            if len(h):
                out[r] = self.item_factors_[h].mean(axis=0)
        return out

    def _score_histories(self, histories) -> np.ndarray:
        return self._fold_in(histories) @ self._item_factors_t()

    def _normalized_items(self) -> np.ndarray:
        v = self._similar_vectors()
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def _score_similar(self, item_indices: np.ndarray) -> np.ndarray:
        """Cosine similarity of item factors."""
        v = self._normalized_items()
        return v[item_indices] @ v.T

    def _score_audience(self, item_indices: np.ndarray) -> np.ndarray:
        """Summed predicted preference of every user for the items: one matrix-vector product."""
        return self.user_factors_ @ self.item_factors_[item_indices].sum(axis=0)

    # ------------------------------------------------------------------ retrieval
    def use_index(self, kind: str | Index | None = "auto", **options: Any) -> FactorModel:
        """Serve ``recommend`` and ``similar_items`` through a retrieval index over the item factors.

        Parameters
        ----------
        kind : {"auto", "exact", "hnsw", "ivf", "ivfpq"}, a persona.retrieval.Index, or None
            ``"auto"`` picks exact search for small catalogues and HNSW (faiss) for large ones;
            a ready inner-product index over the model's item vectors is used as it is (not saved
            with the model; ``similar_items`` then scores exactly); None goes back to scoring
            every item. Filters (seen items, allow/deny lists, masks)
            are applied inside the index, so results still hold exactly ``n`` items whenever
            ``n`` pass them.
        **options
            Passed to :func:`persona.retrieval.make_index` (e.g. ``ef_search=256``).

        The choice is saved with the model; a faiss index is saved built (faiss's own format) and
        ``load`` reads it back -- memory-mapped with ``load(path, mmap=True)``, so worker processes
        share it -- instead of building it again; an exact index is rebuilt.
        """
        self._check_fitted()
        if kind is None:
            self.index_ = self.similar_index_ = None
            self._index_spec = None
            return self
        from ..retrieval import Index, make_index

        if isinstance(kind, Index):
            # a ready index, e.g. one saved apart and loaded with mmap=True so that worker
            # processes share it; it is not saved with the model
            vectors = self._index_item_vectors()
            if kind.n != vectors.shape[0] or kind.dim != vectors.shape[1] or kind.metric != "ip":
                raise ParameterError(
                    f"the index holds {kind.n} x {kind.dim} vectors ({kind.metric}); this model needs an "
                    f"inner-product index over its {vectors.shape[0]} x {vectors.shape[1]} item vectors, "
                    "e.g. make_index(model._index_item_vectors())")
            self.index_, self.similar_index_, self._index_spec = kind, None, None
            self._index_for = self.item_factors_
            return self

        self.index_ = make_index(self._index_item_vectors(), metric="ip", kind=kind, **options)
        self.similar_index_ = make_index(self._similar_vectors(), metric="cosine", kind=kind, **options)
        self._index_spec = {"kind": kind, "options": options}
        self._index_for = self.item_factors_
        return self

    def _current_index(self, name: str):
        """The index ``name`` ("index_" or "similar_index_"), rebuilt when the factors changed
        since it was built (a refit, partial_fit_items)."""
        if getattr(self, name, None) is None:
            return None
        if getattr(self, "_index_for", None) is not self.item_factors_:
            log.info("%s: item factors changed since the retrieval index was built; rebuilding it",
                     type(self).__name__)
            spec = self._index_spec
            self.use_index(spec["kind"], **spec["options"])
        return getattr(self, name)

    def _index_item_vectors(self) -> np.ndarray:
        """Item rows of the recommend index; with :meth:`_index_queries` their inner products
        rank items exactly as :meth:`_score_users` does (models with biases append columns)."""
        return self.item_factors_

    def _index_queries(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Query vectors for users, and a per-user constant to add back to the scores (or None)."""
        return self.user_factors_[users], None

    def _similar_vectors(self) -> np.ndarray:
        """The vectors whose cosine defines item similarity (subclasses may drop bias columns)."""
        return self.item_factors_

    def _select_for_users(self, users, n, excl, allow, mask):
        index = self._current_index("index_")
        if index is None:
            return super()._select_for_users(users, n, excl, allow, mask)
        queries, offset = self._index_queries(users)
        ids, scores = index.search(queries, n, allow=allow, deny=exclusion_rows_of(excl, len(users)), mask=mask)
        if offset is not None:
            scores += np.where(ids >= 0, offset[:, None], 0).astype(np.float32)
        return ids, scores

    def _select_similar(self, item_indices, n, excl, allow, mask):
        index = self._current_index("similar_index_")
        if index is None:
            return super()._select_similar(item_indices, n, excl, allow, mask)
        return index.search(self._similar_vectors()[item_indices], n, allow=allow,
                            deny=exclusion_rows_of(excl, len(item_indices)), mask=mask)

    # ------------------------------------------------------------------ persistence
    def _state(self):
        meta, arrays = self._extra_state()
        spec = getattr(self, "_index_spec", None)
        if spec is not None:
            meta = {**meta, "index": spec}
            built = self._built_faiss_indexes()
            if built:
                # the built graphs/lists in faiss's own format: load maps them instead of rebuilding
                meta["index_files"] = {name: {"meta": idx._meta(), "file": f"{name.rstrip('_')}.faiss"}
                                       for name, idx in built.items()}
                for name, idx in built.items():
                    arrays[f"{name.rstrip('_')}.vectors"] = idx._vectors
        if getattr(self, "item_feature_weights_", None) is not None:
            # the cold-item map as data: add_items works after load, DataFrames included (the spec)
            meta = {**meta, "item_feature_map": {"columns": self.item_feature_columns_,
                                                 "spec": self.item_feature_spec_}}
            arrays = {**arrays, "item_feature_weights": self.item_feature_weights_,
                      "item_feature_bias": self.item_feature_bias_}
        return meta, {"user_factors": self.user_factors_, "item_factors": self.item_factors_, **arrays}

    def _built_faiss_indexes(self) -> dict:
        """The faiss indexes built from the saved spec and still current (name -> FaissIndex)."""
        from ..retrieval.faiss_index import FaissIndex

        if getattr(self, "_index_for", None) is not self.item_factors_:
            return {}
        out = {name: getattr(self, name, None) for name in ("index_", "similar_index_")}
        if not all(isinstance(v, FaissIndex) for v in out.values()):
            return {}
        return out

    def _files(self) -> dict:
        if getattr(self, "_index_spec", None) is None:
            return {}
        return {f"{name.rstrip('_')}.faiss": idx._files()["index.faiss"]
                for name, idx in self._built_faiss_indexes().items()}

    def _extra_state(self) -> tuple[dict, dict]:
        """Subclass hook: more (meta, arrays) to save beside the factors."""
        return {}, {}

    def _restore(self, meta, arrays):
        self.user_factors_ = np.asarray(arrays["user_factors"])
        self.item_factors_ = np.asarray(arrays["item_factors"])
        fmap = meta.get("item_feature_map")
        self.item_feature_weights_ = self.item_feature_bias_ = None
        self.item_feature_columns_ = self.item_feature_spec_ = None
        if fmap is not None:
            if not isinstance(fmap, dict):
                raise ArtifactError("item_feature_map: expected an object; the artifact is malformed, save the "
                                    "model again")
            self.item_feature_weights_ = np.asarray(arrays["item_feature_weights"])
            self.item_feature_bias_ = np.asarray(arrays["item_feature_bias"])
            self.item_feature_columns_ = fmap.get("columns")
            self.item_feature_spec_ = fmap.get("spec")
        self._restore_extra(meta, arrays)
        self._check_state()  # before an index is built over the factors
        spec = meta.get("index")
        if spec is None:
            return
        stored, files = meta.get("index_files"), meta.get("_files", {})
        # faiss's reader trusts its input (crafted bytes can crash the process), so a stored index
        # is read only from an artifact whose HMAC signature was verified; otherwise it is rebuilt
        # from the checked factors, as if none had been stored
        if stored and not meta.get("_authentic"):
            log.info("%s: rebuilding the stored faiss index from the factors (the artifact is not signed; "
                     "save and load it with key=... to map the stored index instead)", type(self).__name__)
        if stored and meta.get("_authentic") and all(entry["file"] in files for entry in stored.values()):
            from ..retrieval.faiss_index import FaissIndex

            for name, entry in stored.items():
                if name not in ("index_", "similar_index_"):
                    raise ParameterError(f"unknown stored index {name!r}")
                index = FaissIndex._from_artifact(
                    {**entry["meta"], "_files": {"index.faiss": files[entry["file"]]}, "_mmap": meta.get("_mmap", False),
                     "_authentic": True},
                    {"vectors": arrays[f"{name.rstrip('_')}.vectors"]})
                setattr(self, name, index)
            self._index_spec = spec
            self._index_for = self.item_factors_
            return
        self._fitted = True  # use_index checks it; load sets it again after _restore
        self.use_index(spec["kind"], **spec.get("options", {}))

    def _restore_extra(self, meta, arrays) -> None:
        """Subclass hook: inverse of :meth:`_extra_state`."""

    def _check_state(self) -> None:
        from ..io.artifact import check_array

        f = check_array("user_factors", self.user_factors_, ndim=2).shape[1]
        check_array("user_factors", self.user_factors_, shape=(len(self.user_map_), None))
        check_array("item_factors", self.item_factors_, shape=(len(self.item_map_), f))
        if f < 1:
            raise ParameterError(f"the factors have {f} columns; expected at least 1")
        W = getattr(self, "item_feature_weights_", None)
        if W is not None:
            t = self._feature_targets().shape[1]
            W = check_array("item_feature_weights", W, ndim=2)
            check_array("item_feature_weights", W, shape=(None, t))
            check_array("item_feature_bias", self.item_feature_bias_, shape=(t,))
            columns = self.item_feature_columns_
            if columns is not None and (not isinstance(columns, list) or len(columns) != W.shape[0]):
                raise ArtifactError(f"item_feature_map: expected {W.shape[0]} column names, got "
                                    f"{len(columns) if isinstance(columns, list) else type(columns).__name__}; "
                                    "the artifact is malformed, save the model again")
            if self.item_feature_spec_ is not None and not isinstance(self.item_feature_spec_, dict):
                raise ArtifactError("item_feature_map: expected the spec as an object; the artifact is malformed, "
                                    "save the model again")
