"""The one ``Recommender`` interface every persona model shares.

The base class implements the public contract of API.md once -- external ids in and out, filters
that still return exactly ``n`` items when ``n`` are allowed, single and batch calls that agree,
the shared top-k kernel, save/load -- and leaves a model only its scoring:

* ``_fit(interactions, **kwargs)``          learn the state (attributes ending in ``_``)
* ``_score_users(user_indices)``            scores (m, n_items) for known users
* ``_score_histories(histories)``           scores for item-index histories (optional)
* ``_score_similar(item_indices)``          item-to-item scores (optional)
* ``_score_audience(item_indices)``         one score per user for a set of items (optional)
* ``_state()`` / ``_restore(meta, arrays)`` what ``save``/``load`` store beyond the common state
* ``_update(batch)``                        fold new events in without a refit (``update``)

Serving methods are read-only and allocate per call, so one fitted model serves many threads.
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar

import numpy as np
import scipy.sparse as sp

from .._validate import MAX_N, check_bool, check_int, check_n, check_num_threads, unknown_keyword_message
from ..data.idmap import IdMap, normalize_ids
from ..data.interactions import AGGREGATIONS, Interactions
from ..errors import (
    ArtifactError,
    DataError,
    NotFittedError,
    ParameterError,
    UnknownItemError,
    UnknownUserError,
    UnsupportedError,
)
from ..io.artifact import artifact_files, check_array, pack_csr, read_artifact, unpack_csr, write_artifact
from ..kernels import topk
from ..kernels.threads import small_request
from ..typing import ArrayLike, Float32Array, IdFilter, Ids, IntArray, ItemId, PathLike, UserId

if TYPE_CHECKING:  # pandas only for recommend_frame's annotation: ``import persona`` stays light
    import pandas as pd

__all__ = ["Recommender", "PAD_SCORE", "pad_id_for", "load"]

log = logging.getLogger("persona.models")

#: Score of the padding entries in batch results (short rows).
PAD_SCORE = float("-inf")
_FALLBACK = "fallback__"  # prefix of a saved fallback's arrays and files inside its model's artifact
_MAX_FALLBACK_DEPTH = 3
# Bytes of dense scores one internal batch may hold; bounds memory on big catalogues.
_BATCH_BYTES = 64 << 20

RecommenderT = TypeVar("RecommenderT", bound="Recommender")


def pad_id_for(ids: np.ndarray) -> str | int:
    """The padding id used in batch results: ``-1`` for integer ids, ``""`` for string ids."""
    return "" if ids.dtype.kind == "U" else -1


# Model classes defined in rooms above this one (persona.ranking's Hybrid), by class name -> module.
# The package root fills it (register_model_module), so ps.load finds them without this room
# importing upward, and a serving process imports them only when an artifact names one.
_LATER_MODELS: dict[str, str] = {}


def register_model_module(class_name: str, module: str) -> None:
    """Tell :func:`load` which module defines ``class_name`` (a persona module, imported on demand)."""
    if not module.startswith("persona."):
        raise ValueError(f"model modules are persona's own, got {module!r}")
    _LATER_MODELS[class_name] = module


def _is_row_list(obj, n_rows: int) -> bool:
    """True when ``obj`` is a list of per-row id lists (rather than one shared list of ids)."""
    if obj is None or isinstance(obj, (str, bytes, np.ndarray)) or sp.issparse(obj):
        return False
    try:
        first = next(iter(obj))
    except (StopIteration, TypeError):
        return False
    return len(obj) == n_rows and not np.isscalar(first) and not isinstance(first, (str, bytes))


def _take_rows(m: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of ``m[rows]`` without building a scipy matrix (the per-request hot path)."""
    ip = m.indptr
    if len(rows) == 1:
        r = int(rows[0])
        idx = m.indices[ip[r]:ip[r + 1]]
        return np.array([0, len(idx)], dtype=np.int64), idx
    starts, ends = ip[rows], ip[rows + 1]
    lens = (ends - starts).astype(np.int64)
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    # position j of the output reads m.indices[starts[row(j)] + (j - indptr[row(j)])]
    gather = np.repeat(starts - indptr[:-1], lens) + np.arange(indptr[-1], dtype=np.int64)
    return indptr, m.indices[gather]


def _stack_rows(a: tuple[np.ndarray, np.ndarray], b: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise union (with repeats, which the kernel tolerates) of two exclusion structures."""
    a_ptr, a_ind = a
    la, lb = np.diff(a_ptr), np.diff(b.indptr)
    indptr = np.zeros(len(la) + 1, dtype=np.int64)
    np.cumsum(la + lb, out=indptr[1:])
    out = np.empty(indptr[-1], dtype=np.int32)
    pos_a = np.repeat(indptr[:-1] - a_ptr[:-1], la) + np.arange(len(a_ind))
    pos_b = np.repeat(indptr[:-1] + la - b.indptr[:-1], lb) + np.arange(len(b.indices))
    out[pos_a] = a_ind
    out[pos_b] = b.indices
    return indptr, out


def _checked_init(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a model's ``__init__`` so a misspelt or positional argument is a ParameterError naming the model.

    Python's own TypeError names the class that defines ``__init__`` (often a private base class)
    and offers no suggestion.
    """
    import functools

    names = [p.name for p in inspect.signature(init).parameters.values()
             if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(init).parameters.values())

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args:
            raise ParameterError(f"{type(self).__name__} takes keyword arguments only (e.g. "
                                 f"{type(self).__name__}({names[0] if names else 'name'}=...)); got {len(args)} "
                                 "positional argument(s)")
        if not takes_any:
            unknown = [k for k in kwargs if k not in names]
            if unknown:
                raise ParameterError(unknown_keyword_message(type(self).__name__, unknown, names))
        init(self, **kwargs)

    __init__._persona_checked = True  # type: ignore[attr-defined]  # the marker __init_subclass__ reads
    return __init__


class Recommender:
    """Base class of every persona model; see the module docstring for what subclasses provide.

    Hyperparameters are keyword-only ``__init__`` arguments stored unchanged (scikit-learn style);
    ``fit`` validates them and returns ``self``; learned state ends in ``_``.
    """

    _registry: dict[str, type] = {}
    #: what this model can answer beyond ``recommend``
    supports_history = True
    supports_similar_items = True
    supports_audience = True
    #: the model answers an empty history itself (with popularity), so a history of unknown ids is fine
    answers_empty_history = False
    #: ``recommend_for_history(..., user_features={field: value})`` describes a visitor to the model
    supports_user_features = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Recommender._registry[cls.__name__] = cls
        if "__init__" in cls.__dict__ and not getattr(cls.__init__, "_persona_checked", False):
            cls.__init__ = _checked_init(cls.__init__)  # type: ignore[method-assign]

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments, as given (scikit-learn's convention, so ``sklearn.base.clone`` works).

        ``deep`` is accepted for scikit-learn; persona models hold no nested estimators among their
        parameters, so it changes nothing.
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self: RecommenderT, **params: Any) -> RecommenderT:
        """Set constructor arguments by name and return ``self`` (scikit-learn's convention).

        The values are checked when the model is next fitted, as for the constructor; an unknown
        name raises :class:`~persona.errors.ParameterError` naming the nearest valid one.

        >>> import persona as ps
        >>> ps.ALS().set_params(factors=16).factors
        16
        """
        names = self._param_names()
        unknown = [k for k in params if k not in names]
        if unknown:
            raise ParameterError(unknown_keyword_message(type(self).__name__, unknown, names))
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ fitting
    def fit(self: RecommenderT, interactions: Interactions, **kwargs: Any) -> RecommenderT:
        """Learn from ``interactions``; returns ``self``."""
        if not isinstance(interactions, Interactions):
            raise DataError(
                f"fit expects a persona.Interactions, got {type(interactions).__name__}; build one with "
                "ps.Interactions.from_frame(...) or from_records(...)"
            )
        if len(interactions) == 0:
            raise DataError("fit got empty interactions; there is nothing to learn from")
        self._validate_common_params()
        self._validate_params()
        self.user_map_ = interactions.user_map
        self.item_map_ = interactions.item_map
        self.user_items_ = interactions.matrix.tocsr()
        self.aggregate_ = interactions.aggregate  # how update merges new events with these
        self.placed_items_ = None  # every item of a fit has its place; update may add some without
        self.fallback_ = getattr(self, "fallback_", None)
        self._fit(interactions, **kwargs)
        self._fitted = True
        return self

    def _validate_common_params(self) -> None:
        """The hyperparameters many models share: ``num_threads`` and ``random_state``."""
        check_num_threads(getattr(self, "num_threads", 0))
        check_int(getattr(self, "random_state", None), "random_state", min=0, max=2**32 - 1, allow_none=True,
                  hint="pass None or a seed such as 0")

    def _validate_params(self) -> None:
        """Raise ParameterError for bad hyperparameters (subclasses extend)."""

    def _fit(self, interactions: Interactions, **kwargs: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not getattr(self, "_fitted", False):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(interactions) first")

    # ------------------------------------------------------------------ streaming updates
    #: whether ``update`` gives new items a place in the model (else they wait for a refit)
    places_new_items = True

    def update(self: RecommenderT, new_interactions: Interactions, **kwargs: Any) -> RecommenderT:
        """Fold new events into the fitted model at once, without a refit; returns ``self``.

        ``new_interactions`` holds events that came after those the model was fitted on (in any id
        maps: new users and items are appended to ``user_map_`` / ``item_map_``, old indices keep
        their meaning). They are merged into the seen items with the rules of
        :class:`~persona.Interactions` (the batch must use the ``aggregate`` of the training data),
        and each model folds them into its state as docs/models.md ("Streaming updates") tabulates:
        popularity counts (with decay), histories read at once (ItemKNN, EASE, SASRec, TwoTower),
        new users and items solved against the fixed other side (ALS), a partial epoch (BPR).
        Items a model cannot place until a refit (new items of ItemKNN, EASE, SASRec) are not
        recommended until then (``placed_items_`` marks them); ``last_update_`` reports what
        happened. A fallback set with :meth:`set_fallback` is updated too.

        An empty batch changes nothing. An update that fails raises and leaves the model exactly as
        it was. It changes the model: a service answering from this object in other threads should
        get an updated copy instead (``service.swap(copy.copy(model).update(new))``), as
        ``persona.pipeline.Retrainer`` does.

        Parameters
        ----------
        new_interactions : Interactions
            The new events (e.g. ``store.interactions(since=...)``).
        **kwargs
            Model-specific options (e.g. ``TwoTower.update(new, item_features=...)``).

        Examples
        --------
        >>> import persona as ps
        >>> model = ps.ItemKNN(k=10).fit(ps.Interactions.from_records([("ann", "a"), ("bob", "a"), ("bob", "b")]))
        >>> model = model.update(ps.Interactions.from_records([("ann", "b"), ("cem", "a")]))
        >>> model.n_users, model.recommend("cem", n=1)[0].tolist()
        (3, ['b'])
        """
        from ._update import UpdateBatch, check_batch

        self._check_fitted()
        who = type(self).__name__
        aggregate = getattr(self, "aggregate_", "sum")
        check_batch(new_interactions, aggregate, who)
        if len(new_interactions) == 0:
            return self
        try:
            inspect.signature(self._update).bind(None, **kwargs)
        except TypeError:
            names = [p for p in inspect.signature(self._update).parameters if p != "batch"]
            raise ParameterError(unknown_keyword_message(f"{who}.update", list(kwargs), names)) from None
        t0 = time.perf_counter()
        batch = UpdateBatch(self, new_interactions, aggregate)
        work = copy.copy(self)  # built aside and committed at the end: a failure leaves self untouched
        work.user_map_, work.item_map_, work.user_items_ = batch.user_map, batch.item_map, batch.user_items
        placed = getattr(self, "placed_items_", None)
        if placed is not None or (len(batch.new_items) and not self.places_new_items):
            old = self._placed_mask() if placed is not None else np.ones(batch.n_items_old, dtype=bool)
            grown = np.full(batch.n_items, bool(self.places_new_items))
            grown[:len(old)] = old
            work.placed_items_ = None if grown.all() else grown
        work._update(batch, **kwargs)
        fallback = getattr(self, "fallback_", None)
        if fallback is not None:
            work.fallback_ = copy.copy(fallback).update(new_interactions)
        placed = work._placed_mask()
        work.last_update_ = {"events": len(new_interactions), "users": len(batch.users),
                             "new_users": len(batch.new_users), "items": len(batch.items),
                             "new_items": len(batch.new_items),
                             "unplaced_items": 0 if placed is None else int((~placed).sum()),
                             "seconds": time.perf_counter() - t0}
        self.__dict__.update(work.__dict__)
        log.debug("%s.update: %s", who, self.last_update_)
        return self

    def _update(self, batch) -> None:
        """Fold ``batch`` (a :class:`persona.models._update.UpdateBatch`) into ``self``'s state.

        Called on a copy whose maps and ``user_items_`` already hold the batch; set new arrays on
        ``self`` and never write into the old ones (the original model shares them).
        """
        raise UnsupportedError(f"{type(self).__name__} cannot fold new events in; refit it on all events")

    def _placed_mask(self) -> np.ndarray | None:
        """Which items the model can score (bool per item), or None when all can.

        Items appended after the mask was made (``add_items``) are placed by their features.
        """
        placed = getattr(self, "placed_items_", None)
        if placed is None:
            return None
        n = len(self.item_map_)
        if len(placed) < n:
            placed = np.concatenate([placed, np.ones(n - len(placed), dtype=bool)])
        return placed

    @property
    def n_users(self) -> int:
        self._check_fitted()
        return len(self.user_map_)

    @property
    def n_items(self) -> int:
        self._check_fitted()
        return len(self.item_map_)

    def set_fallback(self: RecommenderT, model: Recommender | None) -> RecommenderT:
        """Answer unknown users with ``model`` (e.g. a fitted MostPopular) instead of raising."""
        if model is not None and not isinstance(model, Recommender):
            raise ParameterError(f"fallback must be a persona Recommender, got {type(model).__name__}")
        self.fallback_ = model
        return self

    # ------------------------------------------------------------------ scoring hooks
    def _score_users(self, user_indices: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        raise UnsupportedError(f"{type(self).__name__} cannot recommend for an arbitrary history")

    def _score_similar(self, item_indices: np.ndarray) -> np.ndarray:
        raise UnsupportedError(f"{type(self).__name__} has no notion of item similarity")

    def _describe_users(self, values: Sequence[Mapping[str, Any] | None]) -> tuple[Any, np.ndarray]:
        """``(rows, known)`` for visitors' ``{field: value}`` dicts: whatever :meth:`_score_described`
        reads (indexable by row), and which rows say something the model can use."""
        raise UnsupportedError(
            f"{type(self).__name__}: user_features: expected a model that reads visitors' features (TwoTower "
            "fitted with user_features=, MostPopular fitted with user_segments=, ps.Hybrid), got "
            f"{type(self).__name__}; drop user_features, or answer new visitors with one of those")

    def _score_described(self, histories: list[np.ndarray], rows: Any) -> np.ndarray:  # pragma: no cover
        """Scores for histories of visitors described by ``rows`` of :meth:`_describe_users`."""
        raise NotImplementedError

    def _score_audience(self, item_indices: np.ndarray) -> np.ndarray:
        """One score per user: summed scores of the items, computed in batches."""
        out = np.empty(self.n_users, dtype=np.float32)
        step = self._batch_rows()
        for s in range(0, self.n_users, step):
            users = np.arange(s, min(s + step, self.n_users), dtype=np.int64)
            out[s:s + len(users)] = self._score_users(users)[:, item_indices].sum(axis=1)
        return out

    def _batch_rows(self) -> int:
        return max(1, min(4096, _BATCH_BYTES // (4 * max(1, self.n_items))))

    # ------------------------------------------------------------------ id helpers
    def _n_arg(self, n) -> int:
        """A validated ``n`` (see :func:`persona._validate.check_n`: 1..MAX_N)."""
        return check_n(n)

    def _width(self, n: int) -> int:
        """Columns the top-k work needs for ``n`` results: never more than the catalogue.

        So ``n`` up to MAX_N costs what ``n_items`` costs; only batch outputs are padded to ``n``.
        """
        return max(1, min(n, len(self.item_map_)))  # called after _check_fitted; skip the property

    @staticmethod
    def _pad_to(ids: np.ndarray, scores: np.ndarray, n: int):
        """Pad 2-D results of width <= n to width n (pad id, score -inf), as the batch contract says."""
        m, w = ids.shape
        if w >= n:
            return ids, scores
        out_i = np.full((m, n), pad_id_for(ids), dtype=ids.dtype)
        out_s = np.full((m, n), PAD_SCORE, dtype=np.float32)
        out_i[:, :w], out_s[:, :w] = ids, scores
        return out_i, out_s

    def _user_indices(self, users, *, allow_unknown: bool) -> np.ndarray:
        idx = self.user_map_.lookup(users)
        if not allow_unknown and np.any(idx < 0):
            ids = normalize_ids(users)
            bad = ids[idx < 0][:5].tolist()
            raise UnknownUserError(
                f"unknown user id(s) {bad} ({int((idx < 0).sum())} in all); the model was fitted without them. "
                "Use recommend_for_history for new users, or set_fallback(ps.MostPopular().fit(...))"
            )
        return idx

    def _item_indices(self, items, *, strict: bool, what: str = "item") -> np.ndarray:
        """Indices of external item ids; unknown ids are dropped unless ``strict``."""
        ids = normalize_ids(items, what=what)
        idx = self.item_map_.lookup(ids)
        if np.any(idx < 0):
            if strict:
                bad = ids[idx < 0][:5].tolist()
                raise UnknownItemError(f"unknown item id(s) {bad}; the model was fitted without them")
            idx = idx[idx >= 0]
        return idx

    def _filters(self, n_rows: int, items, exclude, mask):
        """Turn external-id filters into kernel arguments: (allow, exclude_csr_rows, mask)."""
        n_items = self.n_items
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (n_items,):
                raise ParameterError(
                    f"mask must hold one bool per item of the model ({n_items}), got shape {mask.shape}; "
                    "align it with model.item_map_.ids"
                )
        placed = self._placed_mask()
        if placed is not None:  # items the model cannot score yet are never recommended
            mask = placed if mask is None else (mask & placed)
        allow: np.ndarray | list[np.ndarray] | None = None
        if items is not None:
            if _is_row_list(items, n_rows):
                allow = [self._item_indices(r, strict=False) for r in items]
            else:
                allow = self._item_indices(items, strict=False)
        extra = None
        if exclude is not None:
            if _is_row_list(exclude, n_rows):
                extra = [self._item_indices(r, strict=False) for r in exclude]
            else:
                deny = self._item_indices(exclude, strict=False)
                mask = np.ones(n_items, dtype=bool) if mask is None else mask.copy()
                mask[deny] = False
        return allow, extra, mask

    @staticmethod
    def _exclusion_rows(rows: list, n_rows: int, n_items: int) -> sp.csr_matrix:
        """One CSR of exclusions (one row per request) from a list of item-index rows."""
        lens = np.fromiter((len(r) for r in rows), dtype=np.int64, count=n_rows)
        indptr = np.concatenate([[0], np.cumsum(lens)])
        idx = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]) if indptr[-1] else np.zeros(0, int)
        return sp.csr_matrix((np.ones(len(idx), dtype=np.float32), idx, indptr), shape=(n_rows, n_items))

    # ------------------------------------------------------------------ the shared index-level path
    def recommend_indices(self, user_indices: ArrayLike, n: int, *, filter_seen: bool = True,
                          exclude: sp.csr_matrix | None = None,
                          allow: IntArray | list[IntArray] | None = None,
                          mask: np.ndarray | None = None) -> tuple[IntArray, Float32Array]:
        """Top ``n`` item indices and scores for user indices; rows padded with -1 / -inf.

        ``exclude`` is an extra CSR (one row per requested user) of item indices to leave out.
        This is what :func:`persona.evaluate` calls; ids never enter here.
        """
        self._check_fitted()
        n = check_n(n)
        users = np.asarray(user_indices, dtype=np.int64).reshape(-1)
        m = len(users)
        if m and (users.min() < 0 or users.max() >= self.n_users):
            raise ParameterError(f"user indices must lie in [0, {self.n_users}), got [{users.min()}, {users.max()}]")
        if exclude is not None and exclude.shape[0] != m:
            raise ParameterError(f"exclude has {exclude.shape[0]} rows but {m} users were asked for")
        placed = self._placed_mask()
        if placed is not None:
            mask = placed if mask is None else (np.asarray(mask, dtype=bool) & placed)
        out_i = np.full((m, n), -1, dtype=np.int64)
        out_s = np.full((m, n), PAD_SCORE, dtype=np.float32)
        step = self._batch_rows()
        with small_request(m):
            for s in range(0, m, step):
                sl = slice(s, min(s + step, m))
                block = users[sl]
                excl = _take_rows(self.user_items_, block) if filter_seen else None
                if exclude is not None:
                    extra = exclude[sl].tocsr()
                    excl = (extra.indptr, extra.indices) if excl is None else _stack_rows(excl, extra)
                row_allow = allow[sl] if isinstance(allow, list) else allow
                out_i[sl], out_s[sl] = self._select_for_users(block, n, excl, row_allow, mask)
        return out_i, out_s

    def _select_for_users(self, users: np.ndarray, n: int, excl, allow, mask):
        """Top ``n`` for a block of user indices: score every item, then the top-k kernel.

        Models that serve through a retrieval index override this (see FactorModel.use_index).
        """
        return topk(self._score_users(users), n, exclude=excl, allow=allow, mask=mask,
                    num_threads=getattr(self, "num_threads", 0) or 0)

    def _select(self, scores: np.ndarray, n: int, excl, allow, mask):
        return topk(scores, n, exclude=excl, allow=allow, mask=mask,
                    num_threads=getattr(self, "num_threads", 0) or 0)

    def _to_ids(self, idx: np.ndarray, scores: np.ndarray):
        ids = self.item_map_.ids
        out = np.empty(idx.shape, dtype=ids.dtype)
        valid = idx >= 0
        out[valid] = ids[idx[valid]]
        if (~valid).any():
            out[~valid] = pad_id_for(ids)
        return out, scores

    # ------------------------------------------------------------------ public: users
    def recommend(self, user: UserId, n: int = 10, *, filter_seen: bool = True, items: Ids | None = None,
                  exclude: Ids | None = None, mask: ArrayLike | None = None) -> tuple[np.ndarray, Float32Array]:
        """Top ``n`` items for one external user id.

        Parameters
        ----------
        user : external user id
        n : int
            Results wanted, 1 to 1,000,000 (``persona._validate.MAX_N``; more is a ParameterError).
            Asking for more items than the catalogue holds returns every allowed item, at the cost
            of the catalogue size, not of ``n``.
        filter_seen : bool
            Leave out items the user interacted with in the training data.
        items : sequence of external item ids, optional
            Allow-list: recommend only among these.
        exclude : sequence of external item ids, optional
            Deny-list: never recommend these.
        mask : bool array (n_items,), optional
            False marks items never to recommend (e.g. out of stock), aligned with ``item_map_.ids``.

        Returns
        -------
        items : 1-D array of external item ids, best first
        scores : 1-D float32 array

        Fewer than ``n`` results come back only when fewer than ``n`` items pass the filters.
        """
        if not np.isscalar(user) and not isinstance(user, str):
            raise ParameterError(f"recommend expects one user id, got {type(user).__name__}; "
                                 "use recommend_batch for several users")
        ids, scores, count = self._recommend_batch([user], n, filter_seen=filter_seen, items=items,
                                                   exclude=exclude, mask=mask)
        return ids[0][: count[0]], scores[0][: count[0]]

    def recommend_batch(self, users: Ids, n: int = 10, *, filter_seen: bool = True, items: IdFilter | None = None,
                        exclude: IdFilter | None = None, mask: ArrayLike | None = None) -> tuple[np.ndarray, Float32Array]:
        """Top ``n`` items for each user; two 2-D arrays of shape (len(users), n).

        Row ``i`` equals ``recommend(users[i])``. Short rows are padded with ``pad_id_for`` (``-1`` for
        integer ids, ``""`` for string ids) and score ``-inf``. ``items`` / ``exclude`` may be one
        list shared by every row or one list per row. Unknown users raise
        :class:`~persona.UnknownUserError` unless a fallback was set with :meth:`set_fallback`.
        """
        ids, scores, _ = self._recommend_batch(users, n, filter_seen=filter_seen, items=items, exclude=exclude,
                                               mask=mask)
        return self._pad_to(ids, scores, int(n))

    def recommend_frame(self, users: Ids, n: int = 10, *, filter_seen: bool = True, items: IdFilter | None = None,
                        exclude: IdFilter | None = None, mask: ArrayLike | None = None) -> pd.DataFrame:
        """Top ``n`` items for each user as one long pandas DataFrame: ``user, item, score, rank``.

        One row per recommended item, ``rank`` 1 for the best; the shape a CSV export, an e-mail
        job or a database table wants. The arguments are those of :meth:`recommend_batch`, whose
        rows these are, without the padding of short rows.

        >>> import persona as ps
        >>> inter = ps.Interactions.from_records([("ann", "a"), ("ann", "b"), ("bob", "a"), ("cem", "c")])
        >>> ps.MostPopular().fit(inter).recommend_frame(["bob", "cem"], n=2)
          user item  score  rank
        0  bob    b   0.25     1
        1  bob    c   0.25     2
        2  cem    a   0.50     1
        3  cem    b   0.25     2
        """
        import pandas as pd

        ids, scores, counts = self._recommend_batch(users, n, filter_seen=filter_seen, items=items,
                                                    exclude=exclude, mask=mask)
        users_arr = normalize_ids(users, what="users") if len(users) else np.zeros(0, dtype=np.int64)
        valid = np.arange(ids.shape[1])[None, :] < np.asarray(counts)[:, None]
        rows, ranks = np.nonzero(valid)
        return pd.DataFrame({"user": users_arr[rows], "item": ids[valid], "score": scores[valid],
                             "rank": (ranks + 1).astype(np.int64)})

    def _recommend_batch(self, users, n, *, filter_seen, items, exclude, mask):
        """Results of width ``min(n, catalogue)`` (the public batch call pads them to ``n``) and counts."""
        self._check_fitted()
        n = self._n_arg(n)
        filter_seen = check_bool(filter_seen, "filter_seen", ints=True)
        if isinstance(users, (str, bytes)) or np.isscalar(users) or not hasattr(users, "__len__"):
            raise ParameterError(f"recommend_batch: expected a sequence of user ids, got {type(users).__name__}; "
                                 "use recommend for one user")
        users_arr = normalize_ids(users, what="users") if len(users) else np.zeros(0, dtype=np.int64)
        m = len(users_arr)
        fallback = getattr(self, "fallback_", None)
        n = self._width(n) if fallback is None else max(self._width(n), fallback._width(n))
        uidx = self._user_indices(users_arr, allow_unknown=fallback is not None) if m else np.zeros(0, np.int64)
        allow, extra, mask = self._filters(m, items, exclude, mask)
        known = np.flatnonzero(uidx >= 0)
        out_i = np.full((m, n), -1, dtype=np.int64)
        out_s = np.full((m, n), PAD_SCORE, dtype=np.float32)
        if len(known):
            excl = None
            if extra is not None:
                excl = self._exclusion_rows([extra[j] for j in known], len(known), self.n_items)
            k_allow = [allow[j] for j in known] if isinstance(allow, list) else allow
            out_i[known], out_s[known] = self.recommend_indices(uidx[known], n, filter_seen=filter_seen,
                                                                exclude=excl, allow=k_allow, mask=mask)
        ids, scores = self._to_ids(out_i, out_s)
        counts = (out_i >= 0).sum(axis=1)
        unknown = np.flatnonzero(uidx < 0)
        if len(unknown):
            ids = ids.astype(np.result_type(ids.dtype, fallback.item_map_.ids.dtype))
            row_items = [items[j] for j in unknown] if _is_row_list(items, m) else items
            row_excl = [exclude[j] for j in unknown] if _is_row_list(exclude, m) else exclude
            f_ids, f_scores, f_count = fallback._history_batch([[]] * len(unknown), n, filter_seen=False,
                                                                items=row_items, exclude=row_excl,
                                                                mask=None)
            ids[np.ix_(unknown, np.arange(f_ids.shape[1]))] = f_ids
            scores[np.ix_(unknown, np.arange(f_ids.shape[1]))] = f_scores
            counts[unknown] = f_count
            log.debug("answered %d unknown users with the fallback %s", len(unknown), type(fallback).__name__)
        return ids, scores, counts

    # ------------------------------------------------------------------ public: histories
    def _history_batch(self, histories, n, *, filter_seen, items, exclude, mask, user_features=None):
        """Results of width ``min(n, catalogue)`` for item-id histories, and counts.

        A history with no item the model knows (all unknown, or empty) says nothing the model can
        use: the fallback answers it when one is set (as for unknown users). Without one, a history
        of only unknown ids raises :class:`~persona.UnknownItemError` -- rather than zero scores in
        catalogue order passed off as recommendations -- unless the model answers empty histories
        itself (``answers_empty_history``: popularity-based answers). An empty history keeps the
        model's own answer. ``user_features`` (one dict or None per history) describe the visitors
        to models that read them; a row whose features the model knows is never "blind".
        """
        self._check_fitted()
        n = self._n_arg(n)
        filter_seen = check_bool(filter_seen, "filter_seen", ints=True)
        m = len(histories)
        for h in histories:
            if h is None or not hasattr(h, "__len__"):
                raise ParameterError(f"history: expected a sequence of item ids, got {type(h).__name__}; "
                                     "pass e.g. ['i1', 'i2'] (an empty list for no history)")
        hist_idx = [self._item_indices(h, strict=False, what="history") if len(h) else np.zeros(0, np.int64)
                    for h in histories]
        blind = [len(h) == 0 for h in hist_idx]  # no item the model knows
        score_rows = self._history_scorer(hist_idx, user_features, blind)
        any_blind = any(blind)
        fallback = getattr(self, "fallback_", None)
        if fallback is None:
            unknown_only = [j for j in range(m) if blind[j] and len(histories[j])] if any_blind else []
            if unknown_only and not self.answers_empty_history:
                j = unknown_only[0]
                shown = normalize_ids(histories[j], what="history")[:5].tolist()
                raise UnknownItemError(
                    f"none of the history's {len(histories[j])} item ids is known to the model (e.g. {shown}); "
                    "nothing to recommend from. Answer with popularity: "
                    "model.set_fallback(ps.MostPopular().fit(interactions)), or a service fallback"
                )
            any_blind = False
        n = self._width(n) if fallback is None else max(self._width(n), fallback._width(n))
        allow, extra, mask = self._filters(m, items, exclude, mask)
        excl_rows = None
        if filter_seen:
            excl_rows = hist_idx
        if extra is not None:
            excl_rows = extra if excl_rows is None else [np.concatenate([a, b]) for a, b in zip(excl_rows, extra)]
        out_i = np.full((m, n), -1, dtype=np.int64)
        out_s = np.full((m, n), PAD_SCORE, dtype=np.float32)
        step = self._batch_rows()
        with small_request(m):
            if not any_blind:  # the common case: every row is scored by the model, in slices
                for s in range(0, m, step):
                    sl = slice(s, min(s + step, m))
                    scores = score_rows(np.arange(sl.start, sl.stop))
                    excl = None if excl_rows is None else excl_rows[sl]
                    row_allow = allow[sl] if isinstance(allow, list) else allow
                    out_i[sl], out_s[sl] = self._select(scores, n, excl, row_allow, mask)
            rows = np.flatnonzero(~np.asarray(blind)) if any_blind else np.zeros(0, np.int64)
            for s in range(0, len(rows), step):
                block = rows[s:s + step]
                scores = score_rows(block)
                excl = None if excl_rows is None else [excl_rows[j] for j in block]
                row_allow = [allow[j] for j in block] if isinstance(allow, list) else allow
                out_i[block], out_s[block] = self._select(scores, n, excl, row_allow, mask)
        ids, scores = self._to_ids(out_i, out_s)
        counts = (out_i >= 0).sum(axis=1)
        lost = np.flatnonzero(blind) if any_blind else ()
        if len(lost):
            ids = ids.astype(np.result_type(ids.dtype, fallback.item_map_.ids.dtype))
            row_items = [items[j] for j in lost] if _is_row_list(items, m) else items
            row_excl = [exclude[j] for j in lost] if _is_row_list(exclude, m) else exclude
            f_ids, f_scores, f_count = fallback._history_batch([[]] * len(lost), n, filter_seen=False,
                                                                items=row_items, exclude=row_excl, mask=None)
            cols = np.arange(f_ids.shape[1])
            ids[np.ix_(lost, cols)], scores[np.ix_(lost, cols)] = f_ids, f_scores
            counts[lost] = f_count
            log.debug("answered %d histories with no known item with the fallback %s", len(lost),
                      type(fallback).__name__)
        return ids, scores, counts

    def _history_scorer(self, hist_idx: list, user_features, blind: list) -> Callable[[np.ndarray], np.ndarray]:
        """A function scoring rows (positions in ``hist_idx``); marks described rows not blind (in place)."""
        if user_features is None:
            return lambda rows: self._score_histories([hist_idx[j] for j in rows])
        described, known = self._describe_users(user_features)
        for j in np.flatnonzero(known):
            blind[j] = False
        return lambda rows: self._score_described([hist_idx[j] for j in rows], described[rows])

    def recommend_for_history(self, history: Ids, n: int = 10, *, filter_seen: bool = True,
                              items: Ids | None = None, exclude: Ids | None = None,
                              mask: ArrayLike | None = None,
                              user_features: Mapping[str, Any] | None = None) -> tuple[np.ndarray, Float32Array]:
        """Top ``n`` items for a history of external item ids (an anonymous session, a new user).

        No refit happens. Items of the history the model does not know are ignored; a history with
        none the model knows goes to the fallback (see :meth:`set_fallback`), or raises
        :class:`~persona.UnknownItemError` when there is none.

        ``user_features`` describes a visitor the model has never seen, as ``{field: value}``
        (``{"segment": "students", "gender": "F"}``), for models that read visitors' features:
        a TwoTower fitted with ``user_features=`` (its fields), a MostPopular fitted with
        ``user_segments=`` (one field, ``"segment"`` unless the segments were a named Series),
        and ``ps.Hybrid``. A visitor with no history and known features is answered by the model
        rather than the fallback. Other models raise :class:`~persona.UnsupportedError`; an
        unknown field raises :class:`~persona.ParameterError`; a value never seen at fit says
        nothing (like a missing one).
        """
        n = self._n_arg(n)
        if not self.supports_history:
            raise UnsupportedError(f"{type(self).__name__} cannot recommend for an arbitrary history")
        described = {} if user_features is None else {"user_features": self._visitors([user_features])}
        ids, scores, count = self._history_batch([history], n, filter_seen=filter_seen, items=items,
                                                 exclude=exclude, mask=mask, **described)
        return ids[0][: count[0]], scores[0][: count[0]]

    def recommend_for_history_batch(self, histories: Sequence[Ids], n: int = 10, *, filter_seen: bool = True,
                                    items: IdFilter | None = None, exclude: IdFilter | None = None,
                                    mask: ArrayLike | None = None,
                                    user_features: Sequence[Mapping[str, Any] | None] | None = None,
                                    ) -> tuple[np.ndarray, Float32Array]:
        """:meth:`recommend_for_history` for many histories; 2-D arrays padded like recommend_batch.

        ``user_features``: one ``{field: value}`` dict (or None) per history.
        """
        n = self._n_arg(n)
        if not self.supports_history:
            raise UnsupportedError(f"{type(self).__name__} cannot recommend for an arbitrary history")
        if histories is None or isinstance(histories, (str, bytes)) or not hasattr(histories, "__iter__"):
            raise ParameterError(f"recommend_for_history_batch: expected a sequence of histories, got "
                                 f"{type(histories).__name__}; use recommend_for_history for one")
        histories = list(histories)
        if user_features is not None:
            if isinstance(user_features, Mapping) or not hasattr(user_features, "__len__"):
                raise ParameterError(f"user_features: expected one dict (or None) per history, got "
                                     f"{type(user_features).__name__}; pass a list as long as histories")
            if len(user_features) != len(histories):
                raise ParameterError(f"user_features: expected one dict (or None) per history ({len(histories)}), "
                                     f"got {len(user_features)}; pass a list as long as histories")
        described = {} if user_features is None else {"user_features": self._visitors(list(user_features))}
        ids, scores, _ = self._history_batch(histories, n, filter_seen=filter_seen, items=items,
                                             exclude=exclude, mask=mask, **described)
        return self._pad_to(ids, scores, n)

    def _visitors(self, values: list) -> list:
        """``values`` when this model reads visitors' features; UnsupportedError otherwise.

        Checked before ``_history_batch`` is called, so wrappers whose ``_history_batch`` takes no
        ``user_features`` (re-rankers) refuse them cleanly.
        """
        if not self.supports_user_features:
            Recommender._describe_users(self, values)  # raises the UnsupportedError naming the models that can
        return values

    # ------------------------------------------------------------------ public: items
    def similar_items_batch(self, item_ids: Ids, n: int = 10, *, items: IdFilter | None = None,
                            exclude: IdFilter | None = None, mask: ArrayLike | None = None) -> tuple[np.ndarray, Float32Array]:
        """The ``n`` items most similar to each of ``item_ids``; the item itself is left out.

        Two 2-D arrays (len(item_ids), n), padded like :meth:`recommend_batch`. ``items``,
        ``exclude`` and ``mask`` filter the answers, as in :meth:`recommend`.
        """
        ids, scores, _ = self._similar_batch(item_ids, n, items=items, exclude=exclude, mask=mask)
        return self._pad_to(ids, scores, int(n))

    def _similar_batch(self, item_ids, n, *, items, exclude, mask):
        self._check_fitted()
        n = self._n_arg(n)
        if not self.supports_similar_items:
            raise UnsupportedError(f"{type(self).__name__} has no notion of item similarity")
        n = self._width(n)
        idx = self._item_indices(item_ids, strict=True)
        m = len(idx)
        allow, extra, mask = self._filters(m, items, exclude, mask)
        self_rows = [np.array([i]) for i in idx]
        excl_rows = self_rows if extra is None else [np.concatenate([a, b]) for a, b in zip(self_rows, extra)]
        out_i = np.full((m, n), -1, dtype=np.int64)
        out_s = np.full((m, n), PAD_SCORE, dtype=np.float32)
        step = self._batch_rows()
        for s in range(0, m, step):
            sl = slice(s, min(s + step, m))
            row_allow = allow[sl] if isinstance(allow, list) else allow
            out_i[sl], out_s[sl] = self._select_similar(idx[sl], n, excl_rows[sl], row_allow, mask)
        ids, scores = self._to_ids(out_i, out_s)
        return ids, scores, (out_i >= 0).sum(axis=1)

    def _select_similar(self, item_indices: np.ndarray, n: int, excl, allow, mask):
        """Top ``n`` similar items for a block of item indices (overridable, like _select_for_users)."""
        return self._select(self._score_similar(item_indices), n, excl, allow, mask)

    def similar_items(self, item: ItemId, n: int = 10, *, items: Ids | None = None, exclude: Ids | None = None,
                      mask: ArrayLike | None = None) -> tuple[np.ndarray, Float32Array]:
        """The ``n`` items most similar to one external item id (itself excluded)."""
        if not np.isscalar(item) and not isinstance(item, str):
            raise ParameterError(f"similar_items expects one item id, got {type(item).__name__}; "
                                 "use similar_items_batch for several")
        ids, scores, count = self._similar_batch([item], n, items=items, exclude=exclude, mask=mask)
        return ids[0][: count[0]], scores[0][: count[0]]

    def recommend_users(self, items: ItemId | Ids, n: int = 10, *, users: Ids | None = None,
                        exclude_users: Ids | None = None) -> tuple[np.ndarray, Float32Array]:
        """The ``n`` users most likely to want ``items`` -- the audience of a campaign.

        Parameters
        ----------
        items : external item ids (one id or a sequence)
        n : int
        users : external user ids to choose among (default all)
        exclude_users : external user ids never to return
        """
        self._check_fitted()
        n = min(check_n(n, limit=max(MAX_N, self.n_users)), self.n_users)
        if not self.supports_audience:
            raise UnsupportedError(f"{type(self).__name__} cannot rank users for items")
        if np.isscalar(items) or isinstance(items, str):
            items = [items]  # type: ignore[list-item]  # np.isscalar's guard also admits bytes
        idx = self._item_indices(items, strict=True)
        if len(idx) == 0:
            raise ParameterError("recommend_users needs at least one item")
        scores = np.asarray(self._score_audience(idx), dtype=np.float32)[None, :]
        allow = None if users is None else self.user_map_.lookup(users)
        if allow is not None:
            allow = allow[allow >= 0]
        mask = None
        if exclude_users is not None:
            mask = np.ones(self.n_users, dtype=bool)
            ex = self.user_map_.lookup(exclude_users)
            mask[ex[ex >= 0]] = False
        out_i, out_s = topk(scores, n, allow=allow, mask=mask)
        keep = out_i[0] >= 0
        return self.user_map_.ids[out_i[0][keep]], out_s[0][keep]

    # ------------------------------------------------------------------ persistence
    def _state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Model-specific (meta, arrays) to store; the base stores id maps and the seen matrix."""
        return {}, {}

    def _restore(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`_state`.

        When the model stored raw files (:meth:`_files`), ``meta["_files"]`` maps each name to
        its checksum-verified path inside the artifact.
        """

    def _files(self) -> dict:
        """Raw files to store beside the arrays, name -> writer(path) (e.g. an ONNX graph)."""
        return {}

    def _check_state(self) -> None:
        """Raise ArtifactError when restored state cannot be served safely (subclasses extend).

        Runs at load after :meth:`_restore`, id maps and ``user_items_`` already checked: shapes
        against the id maps, indices within range, finite values; vectorised, so load stays cheap.
        """

    def save(self, path: PathLike, *, key: bytes | str | None = None) -> Path:
        """Save as an artifact directory (JSON manifest + .npy arrays, checksummed, no pickle).

        The fallback set with :meth:`set_fallback` is saved with the model and comes back on
        :meth:`load`. ``key`` (bytes, at least 16) signs it with HMAC-SHA256; ``load(path,
        key=key)`` then refuses anything not signed with it (see docs/security.md).
        """
        self._check_fitted()
        meta, arrays, files = self._artifact_parts()
        return write_artifact(path, "model", meta, arrays, files=files, key=key)

    def _artifact_parts(self, depth: int = 0) -> tuple[dict, dict, dict]:
        """(meta, arrays, files) of this model and, under the ``fallback__`` prefix, its fallback's."""
        meta, arrays = self._state()
        all_arrays = {"user_ids": self.user_map_.ids, "item_ids": self.item_map_.ids,
                      **pack_csr("user_items", self.user_items_)}
        for k, v in arrays.items():
            if k in all_arrays or k.startswith(_FALLBACK) or k == "placed_items":
                raise RuntimeError(f"{type(self).__name__}._state uses the reserved array name {k!r}")
            all_arrays[k] = v
        placed = self._placed_mask()
        if placed is not None:
            all_arrays["placed_items"] = placed
        out = {"class": type(self).__name__, "params": self.get_params(), "state": meta,
               "aggregate": getattr(self, "aggregate_", "sum")}
        files = dict(self._files())
        fallback = getattr(self, "fallback_", None)
        if fallback is not None:
            if depth + 1 >= _MAX_FALLBACK_DEPTH:
                raise ParameterError(f"fallbacks nest {_MAX_FALLBACK_DEPTH} deep or more; a fallback's fallback's "
                                     "fallback is as far as an artifact goes")
            f_meta, f_arrays, f_files = fallback._artifact_parts(depth + 1)
            out["fallback"] = f_meta
            all_arrays.update({_FALLBACK + k: v for k, v in f_arrays.items()})
            files.update({_FALLBACK + k: w for k, w in f_files.items()})
        return out, all_arrays, files

    @classmethod
    def load(cls: type[RecommenderT], path: PathLike, *, mmap: bool = False,
             key: bytes | str | None = None) -> RecommenderT:
        """Load a model saved with :meth:`save` (format version, checksums and structure verified).

        ``key``: require the HMAC signature of ``save(path, key=...)``. Without one, stored faiss
        indexes are rebuilt from the stored vectors rather than read (faiss's reader is not safe
        on crafted bytes). Replace a served artifact only by publishing a new folder atomically.
        """
        manifest, arrays = read_artifact(path, mmap=mmap, key=key)
        files = artifact_files(path, manifest)
        if manifest.get("kind") != "model":
            raise ArtifactError(f"{path} holds a {manifest.get('kind')!r} artifact, not a model")
        flags = {**({"_mmap": True} if mmap else {}), **({"_authentic": True} if manifest.get("_authentic") else {})}
        model = Recommender._from_parts(path, manifest.get("meta", {}), arrays, files, flags, base=cls)
        model._artifact_stamps = manifest.get("_stamps", [])
        return model

    @staticmethod
    def _from_parts(path, meta, arrays: dict, files: dict, flags: dict, *, base=None, depth: int = 0):
        """The model that ``meta`` (and the arrays and files it names) describe, with its fallback."""
        if not isinstance(meta, dict):
            raise ArtifactError(f"{path}: the model description is not an object; the artifact is malformed")
        name = meta.get("class")
        if isinstance(name, str) and name not in Recommender._registry and name in _LATER_MODELS:
            import importlib

            importlib.import_module(_LATER_MODELS[name])  # defining the class registers it
        # private bases (e.g. _Neighbourhood) register too, but only a public model class can be served
        target = Recommender._registry.get(name) if isinstance(name, str) and not name.startswith("_") else None
        if target is None:
            raise ArtifactError(f"{path} holds a model of class {name!r}, which this persona does not know; "
                                "upgrade persona or check the artifact")
        if base is not None and base is not Recommender and not issubclass(target, base):
            raise ArtifactError(f"{path} holds a {name}, not a {base.__name__}; load it with ps.load")
        params = meta.get("params", {})
        if not isinstance(params, dict):
            raise ArtifactError(f"{path}: stored parameters are not an object; save the model again")
        try:
            model = target(**params)
        except (TypeError, ParameterError) as e:
            raise ArtifactError(f"{path}: stored parameters do not fit {name} ({e})") from None
        try:  # the same checks as fit: a model that loads has parameters it can serve with
            model._validate_common_params()
            model._validate_params()
        except (ParameterError, TypeError, ValueError, AttributeError) as e:
            raise ArtifactError(f"{path}: stored parameters are invalid ({e}); save the model again") from None
        try:
            model.user_map_ = IdMap(check_array("user_ids", arrays["user_ids"], kind="iuU", ndim=1))
            model.item_map_ = IdMap(check_array("item_ids", arrays["item_ids"], kind="iuU", ndim=1))
            model.user_items_ = unpack_csr("user_items", arrays, shape=(len(model.user_map_), len(model.item_map_)))
            model.fallback_ = None
            model.placed_items_ = None
            if "placed_items" in arrays:
                model.placed_items_ = check_array("placed_items", arrays["placed_items"], kind="b",
                                                  shape=(len(model.item_map_),))
            model.aggregate_ = meta.get("aggregate", "sum")
            if model.aggregate_ not in AGGREGATIONS:
                raise ArtifactError(f"{path}: aggregate: expected one of {AGGREGATIONS}, got {model.aggregate_!r}; "
                                    "the artifact is malformed, save the model again")
            state = meta.get("state", {})
            if not isinstance(state, dict):
                raise TypeError("'state' is not an object")
            if files:
                state = {**state, "_files": files}
            model._restore({**state, **flags}, arrays)
            model._check_state()
        except KeyError as e:
            raise ArtifactError(f"{path} lacks {e.args[0]!r}; the artifact is incomplete, save the model again") from None
        except (ArtifactError, MemoryError):
            raise
        except Exception as e:  # noqa: BLE001 - whatever a malformed artifact trips, it is refused cleanly
            raise ArtifactError(f"{path} is malformed ({type(e).__name__}: {e}); save the model again") from None
        model._fitted = True
        if meta.get("fallback") is not None:
            if depth + 1 >= _MAX_FALLBACK_DEPTH:
                raise ArtifactError(f"{path}: fallbacks nest deeper than {_MAX_FALLBACK_DEPTH}; the artifact is malformed")
            n = len(_FALLBACK)
            model.fallback_ = Recommender._from_parts(
                path, meta["fallback"], {k[n:]: v for k, v in arrays.items() if k.startswith(_FALLBACK)},
                {k[n:]: v for k, v in files.items() if k.startswith(_FALLBACK)}, flags, depth=depth + 1)
        return model


def load(path: PathLike, *, mmap: bool = False, key: bytes | str | None = None) -> Recommender:
    """Load any saved persona model; the class is read from the manifest (``ps.load``).

    Only classes registered as persona models can be named there, so loading never runs code
    taken from the file. ``key`` requires the artifact's HMAC signature (``model.save(path, key=...)``).
    Anything but a path raises :class:`~persona.ArtifactError`.
    """
    return Recommender.load(path, mmap=mmap, key=key)
