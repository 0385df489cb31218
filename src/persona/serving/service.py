"""The in-process recommendation service a shop's web workers call inside a request.

One :class:`RecommenderService` per process holds the model that serves now and answers every
request, from any number of threads, through a chain: the model (the user's own history, or the
session's history for a user it does not know), then the fallbacks given (e.g. popularity in the
user's segment), then global popularity counted from the serving model's own training data --
so an unknown user, a model error or a slow model still gets ``n`` sensible items, and the
reason is recorded on the answer and in the counters.

What serves is one immutable snapshot (the model, its catalogue columns in the model's item
order, a version number) behind one reference: :meth:`RecommenderService.swap` builds the new
snapshot completely and then replaces the reference, so a request sees either the old model or
the new one, never a mix, and never waits on a lock held by a swap.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import random
import re
import secrets
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from .._validate import check_frame, check_int, check_number
from ..errors import ParameterError, PersonaError, UnknownItemError, UnknownUserError
from ..typing import FrameLike, ItemId, PathLike, UserId

if TYPE_CHECKING:  # serving imports little: the model and store classes are the caller's
    from ..models.base import Recommender
    from ..store.events import EventStore
    from .experiments import Experiment

__all__ = ["RecommenderService", "Recommendations", "limit_threads"]

log = logging.getLogger("persona.serving")

_PLACEMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_LATENCY_WINDOW = 8192  # the last requests whose latencies the percentiles describe
_CONTEXT_KEYS = frozenset({"history", "exclude", "items", "segment", "where", "in_stock", "filter_seen",
                           "placement"})


def limit_threads(n: int = 1) -> None:
    """Limit BLAS, OpenMP and Numba threads of this process to ``n`` (call it in each web worker).

    A web worker serves one request per thread; a BLAS call that spreads over every core would
    fight the other workers for them. Call it after the fork (e.g. gunicorn's ``post_fork``).
    """
    n = check_int(n, "n", min=1, expected="a positive integer")
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(n))
    os.environ["OMP_NUM_THREADS"] = str(int(n))
    import sys

    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))


class Recommendations(tuple):
    """``(items, scores)`` of one request; unpacks like the tuple ``recommend`` returns.

    Attributes
    ----------
    items, scores : np.ndarray
        External item ids and float32 scores, best first.
    source : str
        What answered: ``"model"``, ``"model-history"`` (the session's history, for a user the
        model does not know), ``"model-fallback"`` (the fallback saved with the model, see
        ``Recommender.set_fallback``), ``"fallback-<i>"`` (the i-th fallback given to the service,
        from 0) or ``"popular"``.
    reason : str or None
        Why the model did not answer (``"unknown user"``, ``"model error: ValueError"``,
        ``"timeout"``, ``"forgotten user"``, ``"no consent"``); None when it did.
    cached : bool
        Served from the cache.
    model_version : int
        The service's model version that answered (1 for the first model, +1 per swap).
    request_id : str or None
        The id of the impression this answer was logged as (32 hex digits, random): clicks and
        purchases that carry it in ``properties={"request_id": ...}`` are attributed to it. None
        when the answer was not logged (no store, sampled out, a forgotten user, a user who withdrew
        consent to personalisation).
    placement : str or None
        Where it is shown (``context["placement"]``).
    variant : str or None
        The experiment variant that answered (``"interleaved"`` for a team-draft list); None
        outside an experiment.
    teams : list of str or None
        For an interleaved answer, the ranker each item came from.
    propensities : np.ndarray or None
        For a randomised answer, the probability each item had of being shown there.
    """

    def __new__(cls, items, scores, source: str, reason: str | None = None, cached: bool = False,
                model_version: int = 0, *, request_id: str | None = None, placement: str | None = None,
                variant: str | None = None, teams: list | None = None, propensities=None):
        self = super().__new__(cls, (items, scores))
        self.source, self.reason, self.cached, self.model_version = source, reason, cached, model_version
        self.request_id, self.placement, self.variant = request_id, placement, variant
        self.teams, self.propensities = teams, propensities
        return self

    @property
    def items(self) -> np.ndarray:
        return self[0]

    @property
    def scores(self) -> np.ndarray:
        return self[1]

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in (("placement", self.placement), ("variant", self.variant),
                                                         ("request_id", self.request_id)) if v is not None)
        return (f"Recommendations({len(self[0])} items, source={self.source!r}, reason={self.reason!r}, "
                f"cached={self.cached}, model_version={self.model_version}{extra})")


class _Snapshot:
    """What serves: the model, popularity from its data, catalogue columns in its item order."""

    __slots__ = ("model", "version", "popularity", "columns", "item_ids", "path", "stamp", "_masks", "_lock", "label")

    def __init__(self, model, version: int, catalog, path=None, stamp=None, label=None):
        self.model = model
        self.version = version
        # what impressions record as the model version: the same in every worker serving one artifact
        self.label = label if label is not None else _model_label(model, version, path)
        self.item_ids = model.item_map_.ids
        counts = np.asarray(model.user_items_.getnnz(axis=0), dtype=np.float32)
        self.popularity = counts
        self.columns = _align_catalog(catalog, self.item_ids)
        self.path, self.stamp = path, stamp
        self._masks: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def mask(self, where: dict | None, stock: dict, stock_version: int) -> np.ndarray | None:
        """The bool item mask of ``where`` conditions and stock (cached per distinct request)."""
        if not where and not stock:
            return None
        key = None
        try:
            key = (stock_version, tuple(sorted((k, _freeze(v)) for k, v in (where or {}).items())))
            hash(key)
        except TypeError:
            key = None  # a callable or unhashable condition: computed each time
        if key is not None:
            with self._lock:
                hit = self._masks.get(key)
                if hit is not None:
                    self._masks.move_to_end(key)
                    return hit
        mask = np.ones(len(self.item_ids), dtype=bool)
        for column, cond in (where or {}).items():
            values = self.columns.get(column)
            if values is None:
                raise ParameterError(f"no catalogue column {column!r} to filter on; the catalogue has "
                                     f"{sorted(self.columns)} (pass catalog= to the service)")
            mask &= _condition(values, cond, column)
        if stock:
            out = stock.get("out")
            if out is not None:
                mask &= ~np.isin(self.item_ids, out)
        if key is not None:
            with self._lock:
                self._masks[key] = mask
                while len(self._masks) > 256:
                    self._masks.popitem(last=False)
        return mask


def _freeze(v):
    if isinstance(v, (list, set, frozenset, np.ndarray)):
        return ("in", tuple(sorted(map(str, v))))
    if callable(v):
        raise TypeError("callable")
    return v


def _align_catalog(catalog, item_ids: np.ndarray) -> dict:
    """Catalogue columns as arrays in ``item_ids`` order (items missing from it: NaN / None)."""
    if catalog is None:
        return {}
    import pandas as pd

    if not isinstance(catalog, pd.DataFrame):
        raise ParameterError(f"catalog must be a pandas DataFrame with an 'item_id' column, got {type(catalog).__name__}")
    if "item_id" not in catalog.columns:
        raise ParameterError(f"catalog has no 'item_id' column; its columns are {list(catalog.columns)}")
    frame = catalog.drop_duplicates("item_id", keep="last")
    ids = frame["item_id"].astype(str).to_numpy()
    order = pd.Index(ids).get_indexer(np.asarray(item_ids).astype(str))
    found = order >= 0
    cols = {}
    for c in frame.columns:
        if c == "item_id":
            continue
        v = frame[c].to_numpy()
        if v.dtype.kind in "biuf":
            out = np.full(len(order), np.nan)
            out[found] = v[order[found]]
        else:
            out = np.full(len(order), None, dtype=object)
            out[found] = v[order[found]]
        cols[c] = out
    cols["_known"] = found
    return cols


def _catalog_frame(catalog, catalog_id: str):
    """``catalog`` (pandas, or a polars / pyarrow table, converted once) with its id column named
    ``item_id`` (what the snapshot aligns on)."""
    if catalog is not None:
        catalog = check_frame(catalog, "catalog", error=ParameterError)
    if catalog is None or catalog_id == "item_id":
        if catalog is not None and hasattr(catalog, "columns") and "item_id" not in catalog.columns:
            raise ParameterError(f"catalog has no 'item_id' column; its columns are {list(catalog.columns)}; "
                                 f"name the id column with catalog_id= (e.g. catalog_id='sku')")
        return catalog
    if not isinstance(catalog_id, str) or not catalog_id:
        raise ParameterError(f"catalog_id expected the name of the catalogue's item id column, got {catalog_id!r}")
    if not hasattr(catalog, "columns") or catalog_id not in catalog.columns:
        cols = list(catalog.columns) if hasattr(catalog, "columns") else type(catalog).__name__
        raise ParameterError(f"catalog_id={catalog_id!r} expected a column of the catalogue, got columns {cols}; "
                             f"pass the name of the column holding the item ids")
    return catalog.drop(columns=["item_id"], errors="ignore").rename(columns={catalog_id: "item_id"})


def _plain(v):
    """A catalogue value as plain Python (numpy scalars unwrapped, NaN as None)."""
    v = v.item() if isinstance(v, np.generic) else v
    return None if isinstance(v, float) and v != v else v


def _condition(values: np.ndarray, cond, column: str) -> np.ndarray:
    if callable(cond):
        hit = np.asarray(cond(values), dtype=bool)
        if hit.shape != values.shape:
            raise ParameterError(f"the predicate for {column!r} must return one bool per item")
        return hit
    if isinstance(cond, tuple):
        if len(cond) != 2:
            raise ParameterError(f"{column}=(low, high) needs two bounds, got {cond!r}")
        low, high = cond
        hit = np.ones(len(values), dtype=bool)
        with np.errstate(invalid="ignore"):
            if low is not None:
                hit &= np.asarray(values >= low, dtype=bool)
            if high is not None:
                hit &= np.asarray(values <= high, dtype=bool)
        return hit
    if isinstance(cond, (list, set, frozenset, np.ndarray)):
        return np.isin(values, list(cond))
    return np.asarray(values == cond, dtype=bool)


class RecommenderService:
    """Thread-safe recommendations with a fallback chain, request filters, a cache and hot swap.

    Parameters
    ----------
    model : Recommender
        The fitted model that serves first.
    fallback : Recommender or list of Recommender, optional
        Tried in order when the model cannot answer (e.g. ``ps.MostPopular().fit(inter,
        user_segments=...)``: with a ``context={"segment": ...}`` it answers with that segment's
        popularity), after the model's own fallback when it has one (``set_fallback``). Global
        popularity counted from the serving model's data always ends the chain.
    catalog : pandas.DataFrame, optional
        Item attributes (an ``item_id`` column and e.g. ``category``, ``price``, ``in_stock``)
        that ``context["where"]`` filters on; replace it with :meth:`set_catalog`.
    catalog_id : str, default "item_id"
        The catalogue's column holding the item ids (e.g. ``"sku"``).
    store : persona.store.EventStore, optional
        Where :meth:`track` writes events and every answer is logged as an impression (see
        ``impressions``); :meth:`forget_user` forgets the user there (a tombstone and their
        events and impressions deleted). Every request also asks the store whether its user was
        forgotten -- by this process or any other, before or after this service started (a set
        lookup, refreshed every ``forget_refresh`` seconds) -- and answers a forgotten user as a
        stranger, whatever model serves. A user whose answer in the store's consent registry
        withdraws ``"personalisation"`` (``store.set_consent(user, "personalisation", False)``,
        by any process; a set lookup) gets the same non-personal answer (``reason="no
        consent"``; their session history and segment are not used either), no impression is
        logged for them and :meth:`track` records nothing of theirs. When the store pseudonymises user ids
        (``pseudonymize_key``), requests keep using raw ids and the service looks users up in the
        models by their pseudonym, as a model trained on ``store.interactions()`` knows them.
    timeout : float, optional
        Seconds a model call may take before the request is answered by the fallbacks (the call
        runs on a small thread pool then). None: no limit, no extra thread hop.
    cache_size : int
        Answers kept (least recently used dropped); 0 disables the cache. Entries of a user go
        when :meth:`track` records an event of that user or :meth:`invalidate` is called; all go
        on a swap.
    filter_seen : bool
        Leave out the items a user has interacted with (per request: ``context["filter_seen"]``).
    impressions : float or bool, default 1.0
        With a store, the share of answers logged as impressions (``store.log_impression``:
        request id, user, placement, items with positions, model version, experiment variant),
        queued for the store's writer so the request does not wait; True is 1.0, False or 0 logs
        none. An answer logged carries its ``request_id``. Sampling is per request.
    explore : Exploration or dict of str -> Exploration, optional
        Randomise the shown lists (:class:`~persona.serving.EpsilonGreedy`,
        :class:`~persona.serving.PlackettLuce`): :meth:`recommend` asks for the policy's ``top``
        candidates and shows ``n`` of them drawn by it, with ``propensities`` (each shown item's
        exact probability at its position) on the answer and in the impression, for off-policy
        evaluation (``persona.ope.slates``). A dict explores only the placements it names. The
        cache keeps the candidates; every request, cached or not, draws its own list. Interleaved
        answers, ``similar_items`` and forgotten users' answers are not randomised. Default: off
        (answers exactly as without it).

    Notes
    -----
    ``context`` (a dict, every key optional): ``history`` (the session's item ids, used for users
    the model does not know), ``exclude`` (item ids to leave out, e.g. the cart), ``items`` (an
    allow-list), ``where`` (catalogue conditions: ``{"category": "shoes", "price": (10, 50)}``,
    lists for membership, callables for anything else), ``in_stock`` (True: leave out what
    :meth:`set_stock` marked unavailable), ``segment`` (for segment fallbacks), ``filter_seen`` and
    ``placement`` (where the answer is shown: ``"home"``, ``"pdp"``, ...; logged with the impression,
    and the key of :meth:`experiment`).
    Filters are applied inside the top-k, so ``n`` items come back whenever ``n`` pass them.

    The service is fork-safe: a process forked after it was made (gunicorn ``--preload``) starts
    with an empty cache, new locks and, if it was watching an artifact, its own watcher.
    """

    def __init__(self, model: Recommender, fallback: Recommender | Sequence[Recommender] | None = None, *,
                 catalog: FrameLike | None = None, store: EventStore | None = None, timeout: float | None = None,
                 cache_size: int = 10_000, filter_seen: bool = True, catalog_id: str = "item_id",
                 impressions: float | bool = 1.0, explore: Any = None) -> None:
        self._check_model(model, "model")
        chain = [] if fallback is None else list(fallback) if isinstance(fallback, (list, tuple)) else [fallback]
        for i, f in enumerate(chain):
            self._check_model(f, f"fallback[{i}]")
        check_number(timeout, "timeout", min=0, min_open=True, finite=False, allow_none=True,
                     expected="a number of seconds > 0 or None")
        check_int(cache_size, "cache_size", min=0, expected="an integer >= 0")
        self.fallbacks = chain
        self.store = store
        self.timeout = timeout
        self.cache_size = int(cache_size)
        self.filter_seen = bool(filter_seen)
        self.impression_rate = _check_rate(impressions)
        self.explore = _check_explore(explore)
        self._experiments: dict = {}
        self._catalog_id = catalog_id
        self._catalog = _catalog_frame(catalog, catalog_id)
        self._stock: dict = {}
        self._stock_version = 0
        self._versions = 0
        self._watch = None
        self._init_runtime()
        self._snapshot = self._make_snapshot(model)
        if hasattr(os, "register_at_fork"):
            import weakref

            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: (s := ref()) is not None and s._after_fork())

    @classmethod
    def from_artifact(cls, path: PathLike, *, mmap: bool = True, watch: float | None = None,
                      **options: Any) -> RecommenderService:
        """A service over the artifact at ``path`` (memory-mapped by default).

        ``watch``: an interval in seconds to reload ``path`` whenever a new artifact is published
        there (see :meth:`watch`); the artifact loaded here counts as seen, so nothing is loaded
        twice. ``options`` go to the constructor (``fallback``, ``catalog``, ``store``, ...).
        """
        from ..models import load

        stamp = _stamp(path)
        service = cls(load(path, mmap=mmap), **options)
        snap = service._snapshot
        snap.path, snap.stamp = str(path), stamp
        snap.label = _model_label(snap.model, snap.version, path)
        if watch is not None:
            service.watch(path, watch, mmap=mmap)
        return service

    # ------------------------------------------------------------------ plumbing
    def _init_runtime(self) -> None:
        self._lock = threading.Lock()  # guards the cache, counters and swaps; never held while a model runs
        self._cache: OrderedDict = OrderedDict()
        self._user_keys: dict = {}
        self._forgotten: set = set()
        self._counts: Counter = Counter()
        self._latency = np.zeros(_LATENCY_WINDOW)
        self._n_latency = 0
        self._pool = None
        self._watch_stop = threading.Event()
        self._watch_thread = None

    def _after_fork(self) -> None:
        watch = self._watch
        self._init_runtime()
        for exp in self._experiments.values():
            exp._reseed()  # workers forked from one parent must not draw the same interleaving coins
        if watch is not None:
            self.watch(*watch)

    @staticmethod
    def _check_model(model, what: str) -> None:
        from ..models.base import Recommender

        if not isinstance(model, Recommender):
            raise ParameterError(f"{what} must be a persona Recommender, got {type(model).__name__}")
        if not getattr(model, "_fitted", False):
            raise ParameterError(f"{what} ({type(model).__name__}) is not fitted; fit or load it first")

    def _make_snapshot(self, model, path=None, stamp=None) -> _Snapshot:
        self._check_model(model, "model")
        self._versions += 1
        return _Snapshot(model, self._versions, self._catalog, path, stamp)

    @property
    def model(self) -> Recommender:
        """The model serving now."""
        return self._snapshot.model

    @property
    def model_version(self) -> int:
        return self._snapshot.version

    # ------------------------------------------------------------------ swapping
    def swap(self, model: Recommender) -> int:
        """Serve ``model`` from now on (atomically); returns its version. Requests in flight finish on the old one."""
        with self._lock:
            snap = self._make_snapshot(model)
            self._snapshot = snap
            self._cache.clear()
            self._user_keys.clear()
            self._counts["swaps"] += 1
        log.info("persona service: now serving %s (version %d)", type(model).__name__, snap.version)
        return snap.version

    def reload(self, path: PathLike, *, mmap: bool = True) -> int:
        """Load the artifact at ``path`` (memory-mapped by default, shared between processes) and swap to it."""
        from ..models import load

        stamp = _stamp(path)
        model = load(path, mmap=mmap)
        with self._lock:
            snap = self._make_snapshot(model, path=str(path), stamp=stamp)
            self._snapshot = snap
            self._cache.clear()
            self._user_keys.clear()
            self._counts["swaps"] += 1
        log.info("persona service: loaded %s (version %d)", path, snap.version)
        return snap.version

    def watch(self, path: PathLike, interval: float = 2.0, *, mmap: bool = True) -> None:
        """Reload ``path`` whenever a new artifact is published there (checked every ``interval`` s).

        A publish that fails to load is logged and retried at the next change; the current model
        keeps serving. A file of the served artifact edited in place (instead of a new folder
        renamed into place) is logged as an error, counted (``stats()["in_place_edits"]``) and
        reloaded: a memory-mapped worker reads those very pages, and a truncated one kills it.
        """
        if not (isinstance(interval, (int, float)) and interval > 0):
            raise ParameterError(f"interval must be a number of seconds > 0, got {interval!r}")
        self.stop_watching()
        self._watch = (path, interval)
        stop = self._watch_stop = threading.Event()
        seen = [self._snapshot.stamp if self._snapshot.path == str(path) else None]

        def loop():
            from ..io.artifact import changed_since_load

            while not stop.wait(interval):
                stamp = _stamp(path)
                edited = changed_since_load(self._snapshot.model)
                if edited and edited != seen[1:]:
                    seen[1:] = edited
                    log.error("persona service: %s was edited in place under the served model (%s); publish "
                              "a new artifact folder and rename it into place instead; reloading", path,
                              ", ".join(edited[:3]))
                    with self._lock:
                        self._counts["in_place_edits"] += 1
                elif stamp is None or stamp == seen[0]:
                    continue
                seen[0] = stamp
                try:
                    self.reload(path, mmap=mmap)
                except Exception:  # noqa: BLE001 - a bad publish must not stop serving
                    log.exception("persona service: could not load the artifact published at %s", path)
                    with self._lock:
                        self._counts["reload_errors"] += 1

        t = threading.Thread(target=loop, name="persona-watch", daemon=True)
        self._watch_thread = t
        t.start()

    def stop_watching(self) -> None:
        self._watch_stop.set()
        t = self._watch_thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)
        self._watch_thread, self._watch = None, None

    # ------------------------------------------------------------------ catalogue and stock
    def set_catalog(self, catalog: FrameLike | None, *, catalog_id: str | None = None) -> None:
        """Replace the item attributes that ``context["where"]`` filters on (ids in ``catalog_id``,
        default: the service's)."""
        catalog = _catalog_frame(catalog, self._catalog_id if catalog_id is None else catalog_id)
        with self._lock:
            self._catalog = catalog
            old = self._snapshot
            snap = _Snapshot(old.model, old.version, catalog, old.path, old.stamp, old.label)
            self._snapshot = snap
            for exp in self._experiments.values():
                for variant, v in list(exp._snapshots.items()):
                    exp._snapshots[variant] = _Snapshot(v.model, v.version, catalog, v.path, v.stamp, v.label)
            self._cache.clear()
            self._user_keys.clear()

    def item_attributes(self, items: Sequence[ItemId]) -> list[dict[str, Any] | None]:
        """The catalogue row (``{column: value}``) of each item id, None for an item it lacks."""
        snap = self._snapshot
        cols = {c: v for c, v in snap.columns.items() if c != "_known"}
        if not cols:
            return [None] * len(items)
        pos = snap.model.item_map_.lookup(np.asarray(list(items))) if len(items) else []
        known = snap.columns["_known"]
        return [None if p < 0 or not known[p] else {c: _plain(v[p]) for c, v in cols.items()} for p in pos]

    def set_stock(self, items: ItemId | Iterable[ItemId], available: bool) -> None:
        """Mark ``items`` (external ids) available or not; requests with ``in_stock=True`` leave out the unavailable."""
        items = np.atleast_1d(np.asarray(items)).tolist()
        with self._lock:
            out = set(self._stock.get("out", np.array([])).tolist())
            out = out - set(items) if available else out | set(items)
            self._stock = {"out": np.array(sorted(out, key=str))} if out else {}
            self._stock_version += 1
            self._cache.clear()
            self._user_keys.clear()

    # ------------------------------------------------------------------ requests
    def recommend(self, user: UserId, n: int = 10, context: dict | None = None) -> Recommendations:
        """``n`` items for ``user`` (an external id): never raises for an unknown user or a failing model.

        Returns a :class:`Recommendations`, which unpacks as ``items, scores``.
        """
        t0 = time.perf_counter()
        ctx = _check_context(context)
        _check_id(user, "user")
        check_int(n, "n", min=1, expected="a positive integer")
        placement = ctx.get("placement")
        exp = self._experiments.get(placement) if placement is not None and self._experiments else None
        variant = None
        if exp is None:
            snap = self._snapshot
        elif exp.interleave:
            snap, variant = None, "interleaved"
        else:
            variant = exp.assign(user)
            snap = exp.snapshot(variant)
        stranger = self._stranger(user)
        if stranger is not None:  # before the cache: an answer cached before the forget must not serve
            out = self._answer(snap or self._snapshot, user, int(n), ctx if stranger == "forgotten user" else
                               {k: v for k, v in ctx.items() if k not in ("history", "segment")}, forgotten=stranger)
            out.placement, out.variant = placement, variant
            self._record(t0, out)
            return out
        if snap is None:  # interleaved: both rankers answer, every time (the draft is random)
            out = self._interleaved(exp, self._model_id(user), int(n), ctx)
            return self._shown(t0, user, out, exp)
        policy = self._policy(placement)
        wanted = int(n) if policy is None else max(int(n), policy.top)  # exploring: the candidates drawn from
        key = self._cache_key(snap, "u", user, wanted, ctx)
        out = None
        if key is not None:
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    self._counts["cache_hits"] += 1
            if hit is not None:
                out = Recommendations(hit[0], hit[1], hit.source, hit.reason, True, hit.model_version,
                                      placement=placement, variant=variant, propensities=hit.propensities)
        if out is None:
            out = self._answer(snap, self._model_id(user), wanted, ctx)
            out.placement, out.variant = placement, variant
            if key is not None:
                self._remember(key, user, out)
        if policy is not None:
            out = _explored(out, policy, int(n))
        return self._shown(t0, user, out, exp, snap)

    def _policy(self, placement):
        """The exploration policy of ``placement`` (None: deterministic answers)."""
        explore = self.explore
        if explore is None or not isinstance(explore, dict):
            return explore
        return explore.get(placement)

    def _shown(self, t0: float, user, out: Recommendations, exp, snap=None) -> Recommendations:
        """Log ``out`` as an impression of ``user`` (when sampled), count it, and return it."""
        if self.store is not None and self.impression_rate > 0.0 and len(out[0]):
            if self.impression_rate >= 1.0 or random.random() < self.impression_rate:
                out.request_id = self._log_impression(user, out, exp, snap)
        self._record(t0, out)
        return out

    def _log_impression(self, user, out: Recommendations, exp, snap) -> str | None:
        log_impression = getattr(self.store, "log_impression", None)
        if log_impression is None:
            return None
        if snap is None:  # interleaved: both rankers' versions
            label = "+".join(s.label for s in exp.snapshots()) if exp is not None else self._snapshot.label
        else:
            label = snap.label
        props = out.propensities
        try:
            rid = log_impression(user, out[0], request_id=secrets.token_hex(16), placement=out.placement,
                                 model_version=label, variant=out.variant,
                                 experiment=None if exp is None else exp.name, source=out.source,
                                 propensities=None if props is None else np.asarray(props).tolist(), teams=out.teams)
        except Exception:  # noqa: BLE001 - logging what was shown must never fail the request
            log.exception("persona service: could not log the impression of an answer for %r", user)
            with self._lock:
                self._counts["impression_errors"] += 1
            return None
        if rid is not None:
            with self._lock:
                self._counts["impressions"] += 1
        return rid

    def similar_items(self, item: ItemId, n: int = 10, context: dict | None = None, *,
                      user: UserId | None = None) -> Recommendations:
        """Items like ``item`` ("customers also bought"); popularity for an item the model does not know.

        ``user``: who is shown the list; with a store, the answer is then logged as their
        impression (at ``context["placement"]``) and carries a ``request_id``.
        """
        t0 = time.perf_counter()
        ctx = _check_context(context)
        _check_id(item, "item")
        check_int(n, "n", min=1, expected="a positive integer")
        if user is not None:
            _check_id(user, "user")
        snap = self._snapshot
        allow, deny, mask = self._filters(snap, ctx)
        reason = None
        try:
            items, scores = self._call(snap.model.similar_items, item, n=n, items=allow,
                                       exclude=_with(deny, [item]), mask=mask)
            out = Recommendations(items, scores, "model", None, False, snap.version)
        except UnknownItemError:
            reason = "unknown item"
        except _Timeout:
            reason = "timeout"
        except PersonaError as e:
            if isinstance(e, ParameterError):
                raise
            reason = f"model error: {type(e).__name__}"
        except Exception as e:  # noqa: BLE001 - a model failure must not fail the request
            log.exception("persona service: similar_items(%r) failed; answering with popularity", item)
            reason = f"model error: {type(e).__name__}"
        if reason is not None:
            items, scores = self._popular(snap, n, allow, _with(deny, [item]), mask)
            out = Recommendations(items, scores, "popular", reason, False, snap.version)
        out.placement = ctx.get("placement")
        if user is None or self._stranger(user) is not None:
            self._record(t0, out)
            return out
        return self._shown(t0, user, out, None, snap)

    def _interleaved(self, exp, user, n: int, ctx: dict) -> Recommendations:
        """Both rankers' answers merged by team drafting; each item labelled with its team."""
        a_name, b_name = exp.variants
        a = self._answer(exp.snapshot(a_name), user, n, ctx)
        b = self._answer(exp.snapshot(b_name), user, n, ctx)
        first, second = a[0].tolist(), b[0].tolist()
        items, teams = exp.draft(first, second, n)
        score_a = dict(zip(first, np.asarray(a[1], dtype=np.float32).tolist()))
        score_b = dict(zip(second, np.asarray(b[1], dtype=np.float32).tolist()))
        scores = np.array([(score_a if t == a_name else score_b)[i] for i, t in zip(items, teams)], dtype=np.float32)
        dtype = a[0].dtype if len(a[0]) else b[0].dtype
        source = a.source if a.source == b.source else f"{a.source}+{b.source}"
        reason = a.reason if a.reason == b.reason else "; ".join(r for r in (a.reason, b.reason) if r) or None
        return Recommendations(np.asarray(items, dtype=dtype), scores, source, reason, False,
                               max(a.model_version, b.model_version), placement=exp.placement,
                               variant="interleaved", teams=teams)

    # ------------------------------------------------------------------ experiments
    def experiment(self, placement: str, variants: dict, split: Sequence[float] | None = None, *,
                   salt: str, name: str | None = None, interleave: bool = False,
                   seed: int | None = None) -> Experiment:
        """Run an experiment on ``placement``: its requests are answered by each user's variant.

        Parameters
        ----------
        placement : str
            The ``context["placement"]`` it takes over (``"home"``); other placements are untouched.
        variants : dict of str -> Recommender
            Variant name -> fitted model, e.g. ``{"A": current, "B": candidate}``; each answers
            through the service's filters and fallback chain like the main model.
        split : sequence of float, optional
            Each variant's share of users, in the order of ``variants`` (default: equal).
        salt : str
            The assignment's key: a user's variant is a hash of salt and user id, the same in every
            process and after restarts. A new experiment takes a new salt.
        name : str, optional
            Recorded with each impression (default: the salt); the analysis selects by it.
        interleave : bool, default False
            Team-draft interleaving of two rankers: every request gets one list merged from both
            (``variant="interleaved"``, ``teams`` per item) instead of a split of users.
        seed : int, optional
            Seeds the interleaving's coin flips (tests); default: random.

        Returns
        -------
        Experiment
            ``assign(user)``, ``swap(variant, model)`` (hot swap, assignments kept), ``stop()``,
            ``analyze(store)``.

        Examples
        --------
        >>> import persona as ps
        >>> shop = ps.datasets.synthetic_shop(n_users=100, n_items=40, seed=0)
        >>> svc = ps.serving.RecommenderService(ps.MostPopular().fit(shop.interactions))
        >>> exp = svc.experiment("home", {"A": svc.model, "B": ps.ItemKNN().fit(shop.interactions)},
        ...                      split=(0.5, 0.5), salt="exp-1")
        >>> user = shop.interactions.user_ids[0]
        >>> rec = svc.recommend(user, n=3, context={"placement": "home"})
        >>> rec.variant == exp.assign(user), rec.placement
        (True, 'home')
        """
        from .experiments import Experiment, check_label

        placement = check_label(placement, "placement")
        exp = Experiment(self, placement, variants, split, salt, name, interleave, seed)
        with self._lock:
            old = self._experiments.get(placement)
            if old is not None:
                raise ParameterError(f"placement {placement!r} already runs experiment {old.name!r}; stop it "
                                     f"first (experiment.stop() or service.end_experiment({placement!r}))")
            self._experiments = {**self._experiments, placement: exp}
        log.info("persona service: %r started", exp)
        return exp

    @property
    def experiments(self) -> dict:
        """The running experiments, by placement."""
        return dict(self._experiments)

    def end_experiment(self, placement: str) -> None:
        """Stop the experiment on ``placement``; its requests go back to the service's model."""
        with self._lock:
            exp = self._experiments.get(placement)
            if exp is None:
                raise ParameterError(f"no experiment runs on placement {placement!r}; running: "
                                     f"{sorted(self._experiments)}")
            self._experiments = {k: v for k, v in self._experiments.items() if k != placement}
            exp.active = False
        log.info("persona service: %r stopped", exp)

    def _swap_variant(self, exp, variant: str, model) -> int:
        with self._lock:
            snap = self._make_snapshot(model)
            exp._snapshots = {**exp._snapshots, variant: snap}
            self._counts["swaps"] += 1
        log.info("persona service: %s variant %s now serves %s (version %d)", exp.name, variant,
                 type(model).__name__, snap.version)
        return snap.version

    def _live(self, version: int) -> bool:
        """Whether a snapshot of ``version`` still serves (the main model or a variant)."""
        if version == self._snapshot.version:
            return True
        return any(s.version == version for e in self._experiments.values() for s in e.snapshots())

    def _model_id(self, user):
        """The id the models know ``user`` by: the store's pseudonym when the store pseudonymises ids."""
        store = self.store
        if store is not None and getattr(store, "pseudonymizes", False):
            return store.pseudonym(user)
        return user

    def _stranger(self, user) -> str | None:
        """Why ``user`` gets a non-personal answer: ``"forgotten user"``, ``"no consent"`` (withdrew
        "personalisation" in the store's consent registry), or None."""
        if self._is_forgotten(user):
            return "forgotten user"
        return None if self._consents(user) else "no consent"

    def _consents(self, user) -> bool:
        """Whether ``user`` allows personalisation, as the store's consent registry says (True without one)."""
        check = getattr(self.store, "has_consent", None)
        if check is None:
            return True
        try:
            return bool(check(user, "personalisation"))
        except Exception:  # noqa: BLE001 - the request goes on, without personalisation (the safe answer)
            log.exception("persona service: could not ask the store whether %r allows personalisation", user)
            return False

    def _is_forgotten(self, user) -> bool:
        """Forgotten here, or -- as the store's tombstones say -- by any process."""
        if _user_key(user) in self._forgotten:
            return True
        check = getattr(self.store, "is_forgotten", None)
        if check is None:
            return False
        try:
            return bool(check(user))
        except Exception:  # noqa: BLE001 - the store logs and counts its own failures; the request goes on
            log.exception("persona service: could not ask the store whether %r was forgotten", user)
            return False

    def _answer(self, snap: _Snapshot, user, n: int, ctx: dict, forgotten: bool | str = False) -> Recommendations:
        """The model's answer, else the fallbacks'; ``forgotten`` (True, or the reason as text): a
        non-personal answer, the user's own rows unused."""
        model = snap.model
        allow, deny, mask = self._filters(snap, ctx)
        filter_seen = ctx.get("filter_seen", self.filter_seen)
        reason = None
        if forgotten:
            reason = forgotten if isinstance(forgotten, str) else "forgotten user"
        else:
            try:
                if user in model.user_map_:
                    items, scores = self._call(model.recommend, user, n=n, filter_seen=filter_seen, items=allow,
                                               exclude=deny, mask=mask)
                    return Recommendations(items, scores, "model", None, False, snap.version)
                reason = "unknown user"
                history = ctx.get("history")
                if history is not None and len(history) and not np.any(model.item_map_.lookup(list(history)) >= 0):
                    reason = "unknown history"  # nothing the model knows: the fallbacks answer, labelled so
                elif history is not None and len(history):
                    items, scores = self._call(model.recommend_for_history, list(history), n=n,
                                               filter_seen=filter_seen, items=allow, exclude=deny, mask=mask)
                    return Recommendations(items, scores, "model-history", None, False, snap.version)
            except _Timeout:
                reason = "timeout"
            except ParameterError:
                raise  # the caller's mistake (a bad filter, n), not the model's
            except Exception as e:  # noqa: BLE001 - a model failure must not fail the request
                log.exception("persona service: the model failed for user %r; answering with the fallbacks", user)
                reason = f"model error: {type(e).__name__}"
        for source, fb in self._chain(model):
            try:
                got = self._from_fallback(fb, user, n, ctx, allow, deny, mask, forgotten)
            except ParameterError:
                raise
            except UnknownItemError:
                continue  # a session history this fallback knows nothing of: the next link answers
            except Exception:  # noqa: BLE001
                log.exception("persona service: %s failed for user %r", source, user)
                continue
            if got is not None:
                return Recommendations(got[0], got[1], source, reason, False, snap.version)
        items, scores = self._popular(snap, n, allow, deny, mask)
        return Recommendations(items, scores, "popular", reason, False, snap.version)

    def _chain(self, model) -> list:
        """(source label, model) of each fallback in order: the model's own, then the service's.

        One chain, not two mechanisms: a fallback saved with the model (``set_fallback``) is its
        first link, so the service answers as the model's batch methods would; the service's
        ``fallback=`` links follow (see docs/architecture.md, "Two fallbacks, on purpose").
        """
        own = getattr(model, "fallback_", None)
        links = [("model-fallback", own)] if own is not None else []
        return links + [(f"fallback-{i}", fb) for i, fb in enumerate(self.fallbacks)]

    def _from_fallback(self, fb, user, n, ctx, allow, deny, mask, forgotten: bool):
        from ..models.popular import MostPopular

        segment = ctx.get("segment")
        if isinstance(fb, MostPopular) and segment is not None and getattr(fb, "segment_map_", None) is not None \
                and fb.segment_map_.index_of(segment) >= 0:
            return fb.top_items(n, segment=segment, items=allow, exclude=deny, mask=_remap(mask, self._snapshot, fb))
        if not forgotten and user in fb.user_map_:
            return fb.recommend(user, n=n, items=allow, exclude=deny, mask=_remap(mask, self._snapshot, fb))
        if isinstance(fb, MostPopular):
            return fb.top_items(n, items=allow, exclude=deny, mask=_remap(mask, self._snapshot, fb))
        history = ctx.get("history")
        if history is not None and len(history):
            return fb.recommend_for_history(list(history), n=n, items=allow, exclude=deny,
                                            mask=_remap(mask, self._snapshot, fb))
        return None

    def _popular(self, snap: _Snapshot, n: int, allow, deny, mask):
        from ..kernels import topk

        scores = snap.popularity
        keep = np.ones(len(scores), dtype=bool) if mask is None else mask.copy()
        if allow is not None:
            a = np.zeros(len(scores), dtype=bool)
            idx = snap.model.item_map_.lookup(np.asarray(allow))
            a[idx[idx >= 0]] = True
            keep &= a
        if deny is not None and len(deny):
            idx = snap.model.item_map_.lookup(np.asarray(deny))
            keep[idx[idx >= 0]] = False
        idx, sc = topk(scores[None, :], min(n, int(keep.sum())), mask=keep)
        return snap.item_ids[idx[0]], sc[0].astype(np.float32)

    def _filters(self, snap: _Snapshot, ctx: dict):
        where = ctx.get("where")
        stock = self._stock if ctx.get("in_stock") else {}
        mask = snap.mask(where, stock, self._stock_version)
        allow = ctx.get("items")
        deny = ctx.get("exclude")
        if allow is not None:
            allow = list(allow)
        if deny is not None:
            deny = list(deny)
        return allow, deny, mask

    def _call(self, fn, *args, **kwargs):
        if self.timeout is None:
            return fn(*args, **kwargs)
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = cf.ThreadPoolExecutor(max_workers=4, thread_name_prefix="persona-serve")
                pool = self._pool
        future = pool.submit(fn, *args, **kwargs)
        try:
            return future.result(timeout=self.timeout)
        except cf.TimeoutError:
            raise _Timeout() from None

    # ------------------------------------------------------------------ cache and counters
    def _cache_key(self, snap, kind, who, n, ctx):
        if not self.cache_size:
            return None
        try:
            key = (snap.version, kind, who, n, tuple(sorted((k, _freeze_deep(v)) for k, v in ctx.items())))
            hash(key)
        except TypeError:
            return None
        return key

    def _remember(self, key, user, out: Recommendations) -> None:
        with self._lock:
            if not self._live(key[0]):
                return  # a swap happened meanwhile: the answer is of the old model
            self._cache[key] = out
            self._user_keys.setdefault(user, set()).add(key)
            while len(self._cache) > self.cache_size:
                old, _ = self._cache.popitem(last=False)
                keys = self._user_keys.get(old[2])
                if keys is not None:
                    keys.discard(old)
                    if not keys:
                        del self._user_keys[old[2]]

    def invalidate(self, user: UserId | None = None) -> None:
        """Drop the cached answers of ``user`` (all answers with None)."""
        with self._lock:
            if user is None:
                self._cache.clear()
                self._user_keys.clear()
                return
            for key in self._user_keys.pop(user, ()):
                self._cache.pop(key, None)

    def _record(self, t0: float, out: Recommendations) -> None:
        dt = time.perf_counter() - t0
        with self._lock:
            self._latency[self._n_latency % _LATENCY_WINDOW] = dt
            self._n_latency += 1
            c = self._counts
            c["requests"] += 1
            c[f"source:{out.source}"] += 1
            if out.reason is not None:
                c["fallbacks"] += 1
                c[f"reason:{out.reason}"] += 1

    def stats(self) -> dict:
        """Counters: requests, cache hits, fallbacks (by reason and source), swaps, latency p50/p99 (ms)."""
        with self._lock:
            c = dict(self._counts)
            lat = self._latency[:min(self._n_latency, _LATENCY_WINDOW)].copy()
            snap = self._snapshot
        req = c.get("requests", 0)
        out = {"requests": req, "cache_hits": c.get("cache_hits", 0), "fallbacks": c.get("fallbacks", 0),
               "fallback_rate": c.get("fallbacks", 0) / req if req else 0.0,
               "cache_hit_rate": c.get("cache_hits", 0) / req if req else 0.0,
               "swaps": c.get("swaps", 0), "reload_errors": c.get("reload_errors", 0),
               "in_place_edits": c.get("in_place_edits", 0),
               "model": type(snap.model).__name__, "model_version": snap.version,
               "reasons": {k[7:]: v for k, v in c.items() if k.startswith("reason:")},
               "sources": {k[7:]: v for k, v in c.items() if k.startswith("source:")},
               "cache_entries": len(self._cache),
               "impressions": c.get("impressions", 0), "impression_errors": c.get("impression_errors", 0),
               "untracked_no_consent": c.get("untracked_no_consent", 0),
               "experiments": {p: e.name for p, e in self._experiments.items()}}
        if len(lat):
            out.update(latency_p50_ms=float(np.percentile(lat, 50) * 1e3),
                       latency_p99_ms=float(np.percentile(lat, 99) * 1e3))
        return out

    # ------------------------------------------------------------------ events and privacy
    def track(self, user: UserId, item: ItemId, event: str = "view", **kwargs: Any) -> str | None:
        """Record an event in the store (non-blocking) and drop the user's cached answers.

        Returns the event id, or None when the event was not recorded: a forgotten user's events
        are ignored (counted in the store's ``stats()["forgotten"]``), as are the events of a user
        who withdrew consent to personalisation (``stats()["untracked_no_consent"]``) and an event
        the store dropped (a full queue).
        """
        if self.store is None:
            raise ParameterError("this service has no event store; pass store=persona.store.EventStore(...)")
        if _user_key(user) in self._forgotten and not hasattr(self.store, "is_forgotten"):
            return None  # a store without tombstones: the service remembers (an EventStore drops and counts)
        if not self._consents(user):
            with self._lock:
                self._counts["untracked_no_consent"] += 1
            return None
        out = self.store.track(user, item, event, **kwargs)
        self.invalidate(user)
        return out

    def forget_user(self, user: UserId) -> int:
        """Erase ``user``: their events in the store, their cached answers, and their model rows in use.

        ``7`` and ``"7"`` are one user. With a store, a tombstone is recorded there, so every
        service over that store (other workers, processes started later) answers the user as a
        stranger and every writer drops their events; the serving model's rows of the user are no
        longer used (popularity answers) until a model trained without their events is swapped
        in, and even then. Returns the number of events deleted from the store (0 without a store).
        """
        deleted = 0
        if self.store is not None:
            deleted = int(self.store.forget_user(user))
        with self._lock:
            self._forgotten.add(_user_key(user))
        self.invalidate(user)  # recommend checks the forgotten users before the cache anyway
        return deleted

    def close(self) -> None:
        """Stop the watcher and the timeout pool."""
        self.stop_watching()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "RecommenderService":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        snap = self._snapshot
        return (f"RecommenderService({type(snap.model).__name__} v{snap.version}, {len(self.fallbacks)} fallbacks, "
                f"cache {len(self._cache)}/{self.cache_size}, timeout={self.timeout})")


class _Timeout(Exception):
    pass


def _check_rate(rate) -> float:
    if rate is True:
        return 1.0
    if rate is False or rate is None:
        return 0.0
    return float(check_number(rate, "impressions", min=0, max=1,
                              expected="a share of answers to log as impressions, from 0 to 1 (or True / False)"))


def _check_explore(explore):
    """None, an exploration policy, or a dict of placement -> policy."""
    from .explore import Exploration

    if explore is None or isinstance(explore, Exploration):
        return explore
    if isinstance(explore, dict):
        from .experiments import check_label

        for placement, policy in explore.items():
            check_label(placement, "explore: placement")
            if not isinstance(policy, Exploration):
                raise ParameterError(f"explore[{placement!r}]: expected a persona.serving.EpsilonGreedy or "
                                     f"PlackettLuce, got {type(policy).__name__}")
        return dict(explore)
    raise ParameterError(f"explore: expected persona.serving.EpsilonGreedy(...), PlackettLuce(...), a dict of "
                         f"placement -> one of them, or None, got {type(explore).__name__}")


def _explored(out: Recommendations, policy, n: int) -> Recommendations:
    """``n`` of the answer's candidates drawn by ``policy``, with each one's propensity at its position."""
    order, propensities = policy.sample(np.asarray(out[1], dtype=np.float64), n)
    return Recommendations(out[0][order], out[1][order], out.source, out.reason, out.cached, out.model_version,
                           placement=out.placement, variant=out.variant, propensities=propensities)


def _model_label(model, version: int, path=None) -> str:
    """A model's identity for impressions: its class and, for an artifact, the first 12 hex digits of
    its manifest's checksum (the same in every worker that loaded it); else the service's version."""
    name = type(model).__name__
    if path is not None:
        try:
            from ..io.artifact import read_manifest

            digest = read_manifest(path).get("manifest_sha256")
        except Exception:  # noqa: BLE001 - a label is a courtesy: the version number still tells models apart
            digest = None
        if isinstance(digest, str) and digest:
            return f"{name}@{digest[:12]}"
    return f"{name}#{version}"


def _freeze_deep(v):
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze_deep(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple, np.ndarray)):
        return tuple(_freeze_deep(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v))
    if isinstance(v, (set, frozenset)):
        return ("set", tuple(sorted(map(str, v))))
    if callable(v):
        raise TypeError("callable")
    return v


def _user_key(user):
    """One key per user whatever form the id came in: the web layer turns "7" into 7."""
    if isinstance(user, (int, np.integer)) and not isinstance(user, bool):
        return str(int(user))
    return str(user)


def _check_id(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (str, int, np.integer, np.str_)):
        raise ParameterError(f"{what} must be one external id (a str or an int), got {type(value).__name__}")


def _check_context(context) -> dict:
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise ParameterError(f"context must be a dict (keys {sorted(_CONTEXT_KEYS)}), got {type(context).__name__}")
    unknown = set(context) - _CONTEXT_KEYS
    if unknown:
        raise ParameterError(f"unknown context keys {sorted(unknown)}; known: {sorted(_CONTEXT_KEYS)}")
    history = context.get("history")
    if history is not None and (isinstance(history, (str, bytes, dict)) or not hasattr(history, "__len__")):
        raise ParameterError(f"context['history'] must be a list of item ids (the session's, time-ordered), "
                             f"got {type(history).__name__}")
    where = context.get("where")
    if where is not None and not isinstance(where, dict):
        raise ParameterError(f"context['where'] must be a dict of column -> condition, got {type(where).__name__}")
    placement = context.get("placement")
    if placement is not None and not (isinstance(placement, str) and _PLACEMENT.fullmatch(placement)):
        shown = f"{placement[:40]!r}" if isinstance(placement, str) else type(placement).__name__
        raise ParameterError(f"context['placement'] expected a name of 1 to 64 letters, digits and _ . : - such as "
                             f"'home' or 'pdp', got {shown}")
    return context


def _with(deny, extra):
    return list(extra) if deny is None else [*deny, *extra]


def _remap(mask, snap: _Snapshot, model):
    """``mask`` (in the serving model's item order) in ``model``'s item order."""
    if mask is None or model.item_map_ is snap.model.item_map_:
        return mask
    ids = model.item_map_.ids
    if len(ids) == len(snap.item_ids) and np.array_equal(ids, snap.item_ids):
        return mask
    pos = snap.model.item_map_.lookup(ids)
    return np.where(pos >= 0, mask[np.maximum(pos, 0)], False)


def _stamp(path):
    """What changes when an artifact is published at ``path``: (folder inode, manifest mtime and size)."""
    p = Path(path)
    try:
        st = (p / "manifest.json").stat() if p.is_dir() else p.stat()
        return (p.stat().st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        return None
