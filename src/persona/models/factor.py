"""Shared machinery of latent-factor models (ALS, BPR, MF): scores are dot products of factors.

A subclass learns ``user_factors_`` (n_users, f) and ``item_factors_`` (n_items, f), both float32,
and may override :meth:`FactorModel._fold_in` to turn an item history into a user vector without
refitting (ALS solves its least-squares problem; the default averages item factors).
"""

from __future__ import annotations

import logging

from typing import TYPE_CHECKING, Any

import numpy as np

from .._validate import MAX_FACTORS, MAX_ITERATIONS, check_int, check_number
from ..errors import ParameterError
from .base import Recommender

if TYPE_CHECKING:  # persona.retrieval loads on first use
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
