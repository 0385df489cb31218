"""Shared machinery of latent-factor models (ALS, BPR, MF): scores are dot products of factors.

A subclass learns ``user_factors_`` (n_users, f) and ``item_factors_`` (n_items, f), both float32,
and may override :meth:`FactorModel._fold_in` to turn an item history into a user vector without
refitting (ALS solves its least-squares problem; the default averages item factors).
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from .base import Recommender

__all__ = ["FactorModel"]


class FactorModel(Recommender):
    """Base class of models that score ``user_factors_[u] @ item_factors_[i]``."""

    def _validate_factor_params(self) -> None:
        f = getattr(self, "factors", None)
        if f is not None and (isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f <= 0):
            raise ParameterError(f"factors must be a positive integer, got {f!r}")
        it = getattr(self, "iterations", None)
        if it is not None and (isinstance(it, bool) or not isinstance(it, (int, np.integer)) or it <= 0):
            raise ParameterError(f"iterations must be a positive integer, got {it!r}")
        reg = getattr(self, "regularization", None)
        if reg is not None and (isinstance(reg, bool) or not isinstance(reg, (int, float, np.number))
                                or not (np.isfinite(reg) and reg >= 0)):
            raise ParameterError(f"regularization must be a finite number >= 0, got {reg!r}")

    def _validate_params(self) -> None:
        self._validate_factor_params()

    # ------------------------------------------------------------------ scoring
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
        norms = np.linalg.norm(self.item_factors_, axis=1, keepdims=True)
        return self.item_factors_ / np.maximum(norms, 1e-12)

    def _score_similar(self, item_indices: np.ndarray) -> np.ndarray:
        """Cosine similarity of item factors."""
        v = self._normalized_items()
        return v[item_indices] @ v.T

    def _score_audience(self, item_indices: np.ndarray) -> np.ndarray:
        """Summed predicted preference of every user for the items: one matrix-vector product."""
        return self.user_factors_ @ self.item_factors_[item_indices].sum(axis=0)

    # ------------------------------------------------------------------ persistence
    def _state(self):
        meta, arrays = self._extra_state()
        return meta, {"user_factors": self.user_factors_, "item_factors": self.item_factors_, **arrays}

    def _extra_state(self) -> tuple[dict, dict]:
        """Subclass hook: more (meta, arrays) to save beside the factors."""
        return {}, {}

    def _restore(self, meta, arrays):
        self.user_factors_ = np.asarray(arrays["user_factors"])
        self.item_factors_ = np.asarray(arrays["item_factors"])
        self._restore_extra(meta, arrays)

    def _restore_extra(self, meta, arrays) -> None:
        """Subclass hook: inverse of :meth:`_extra_state`."""
