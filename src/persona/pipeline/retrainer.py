"""The retrain pipeline: keep a served model fresh from the event store.

A :class:`Retrainer` reads new events from an :class:`~persona.store.EventStore`, folds them into
the model with ``model.update`` every few seconds (or as soon as enough events wait), retrains it
from scratch on a schedule, and publishes every new version atomically -- to an artifact path that
every web worker watches (``RecommenderService.from_artifact(path, watch=...)``), and/or to an
in-process service (``service.swap``).

How it knows which events are new: events carry their own time, and one may be written after a
later one (the store's writer batches, a client passes an older timestamp). So every read goes
back ``lateness`` seconds before the newest event folded in, and the event ids already folded in
since then are skipped: each event counts once, however late it is written, as long as it is
written within ``lateness`` seconds; anything later is picked up by the next full retrain, which
reads everything.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .._validate import check_int, check_number
from ..errors import DataError, ParameterError

__all__ = ["Retrainer"]

log = logging.getLogger("persona.pipeline")

_MAX_BACKOFF = 300.0  # seconds between retries of a failing cycle, at most
_FULL_READ_EVERY = 60.0  # seconds between two reads of the store's events even when a count says nothing is new


class Retrainer:
    """Fold new events into a model as they arrive, retrain it on a schedule, publish it atomically.

    Parameters
    ----------
    store : persona.store.EventStore
        Where the shop's events are (any process may write them).
    model : Recommender
        The model to keep fresh: a fitted one (pass ``since``) or an unfitted one, which the first
        cycle fits on every event of the store.
    path : str or Path, optional
        Where each new version is published (``model.save(path)`` writes a temporary folder and
        renames it into place, so a watching worker never sees a half-written artifact).
    update_every : float, default 5.0
        Seconds between two incremental updates (the background thread's rhythm).
    update_events : int, optional
        Also update as soon as this many new events wait (checked every ``poll_interval``).
    retrain_every : float or None, default 86400.0
        Seconds between two full retrains (None: never after the first). A full retrain refits a
        fresh copy of the model (same hyperparameters, ``fit_options``) on every event of the store.
    since : datetime, ISO string or epoch seconds, optional
        For a fitted ``model``: the time from which the store's events are new to it (usually
        the end of its training data). Without it, the first cycle retrains fully, so nothing the
        model has not seen is missed.
    weights : dict of str -> float, optional
        Event-type weights, as for :meth:`EventStore.interactions`; the event types read are the
        built-in weighted ones plus these, unless ``event_types`` names them.
    event_types : list of str, optional
    aggregate : {"sum", "max", "last", "count"}, default "sum"
        How repeated user-item events combine, for the fits and the updates alike.
    lateness : float, default 60.0
        Seconds an event may be written after a later event and still be folded in by an update.
    service : RecommenderService, optional
        An in-process service to swap every new version into (no file round trip).
    key : bytes, optional
        Sign the published artifacts (``model.save(path, key=key)``).
    fit_options, update_options : dict, optional
        Keyword arguments of ``model.fit`` (e.g. ``item_features``) and ``model.update``.
    retrain_after_failures : int, default 3
        After this many failed updates in a row, the next cycle is a full retrain (a batch no
        update can take -- ids of another kind -- is then read by the refit).
    poll_interval : float, optional
        How often the background thread looks at the clock and the store (default
        ``min(1, update_every)``).

    Notes
    -----
    :meth:`run_once` does one cycle now (deterministic: tests and cron jobs call it); :meth:`start`
    runs cycles in a background thread until :meth:`stop`. A failing cycle is logged (with its
    traceback) and retried with a growing pause; the last good model keeps serving. :meth:`status`
    tells what happened.

    Examples
    --------
    >>> import os, tempfile
    >>> import persona as ps
    >>> from persona.pipeline import Retrainer
    >>> folder = tempfile.mkdtemp()
    >>> store = ps.EventStore(os.path.join(folder, "events.db"))
    >>> for user, item in [("ann", "a"), ("ann", "b"), ("bob", "a"), ("bob", "c")]:
    ...     _ = store.track(user, item, "view", timestamp=1.7e9)
    >>> store.flush()
    >>> retrainer = Retrainer(store, ps.ItemKNN(k=10), os.path.join(folder, "model.persona"))
    >>> retrainer.run_once()["action"]   # an unfitted model: a full fit first
    'retrain'
    >>> _ = store.track("cem", "a", "view", timestamp=1.7e9 + 60)
    >>> store.flush()
    >>> report = retrainer.run_once()
    >>> report["action"], report["events"], ps.load(os.path.join(folder, "model.persona")).n_users
    ('update', 1, 3)
    >>> store.close()
    """

    def __init__(self, store: Any, model: Any, path: str | Path | None = None, *, update_every: float = 5.0,
                 update_events: int | None = None, retrain_every: float | None = 86400.0, since: Any = None,
                 weights: Mapping[str, float] | None = None, event_types: Iterable[str] | None = None,
                 aggregate: str = "sum", lateness: float = 60.0, service: Any = None, key: bytes | str | None = None,
                 fit_options: Mapping[str, Any] | None = None, update_options: Mapping[str, Any] | None = None,
                 retrain_after_failures: int = 3, poll_interval: float | None = None) -> None:
        from ..data.interactions import AGGREGATIONS
        from ..models.base import Recommender
        from ..store import EventStore

        if not isinstance(store, EventStore):
            raise ParameterError(f"Retrainer: store: expected a persona EventStore, got {type(store).__name__}; "
                                 "pass ps.EventStore('events.db')")
        if not isinstance(model, Recommender):
            raise ParameterError(f"Retrainer: model: expected a persona Recommender, got {type(model).__name__}")
        if path is None and service is None:
            raise ParameterError("Retrainer: expected somewhere to publish, got neither path nor service; pass "
                                 "path='model.persona' (every worker watching it reloads) or service=...")
        if path is not None and not isinstance(path, (str, Path)):
            raise ParameterError(f"Retrainer: path: expected a folder path, got {type(path).__name__}")
        if service is not None and not (hasattr(service, "swap") and callable(service.swap)):
            raise ParameterError(f"Retrainer: service: expected a RecommenderService, got {type(service).__name__}")
        self.update_every = check_number(update_every, "Retrainer: update_every", min=0, min_open=True,
                                         expected="a number of seconds > 0")
        self.update_events = check_int(update_events, "Retrainer: update_events", min=1, allow_none=True,
                                       expected="a positive number of events or None")
        self.retrain_every = check_number(retrain_every, "Retrainer: retrain_every", min=0, min_open=True,
                                          allow_none=True, expected="a number of seconds > 0 or None")
        self.lateness = check_number(lateness, "Retrainer: lateness", min=0, expected="a number of seconds >= 0")
        self.retrain_after_failures = check_int(retrain_after_failures, "Retrainer: retrain_after_failures", min=1,
                                                expected="a positive integer")
        self.poll_interval = min(1.0, self.update_every) if poll_interval is None else check_number(
            poll_interval, "Retrainer: poll_interval", min=0, min_open=True, expected="a number of seconds > 0")
        if aggregate not in AGGREGATIONS:
            raise ParameterError(f"Retrainer: aggregate: expected one of {AGGREGATIONS}, got {aggregate!r}")
        for name, opts in (("fit_options", fit_options), ("update_options", update_options)):
            if opts is not None and not isinstance(opts, Mapping):
                raise ParameterError(f"Retrainer: {name}: expected a dict of keyword arguments, got "
                                     f"{type(opts).__name__}")
        self.store, self.path, self.service, self.key = store, None if path is None else Path(path), service, key
        self.aggregate = aggregate
        self.weights = dict(weights or {})
        self.event_types = self._types(event_types)
        self.fit_options, self.update_options = dict(fit_options or {}), dict(update_options or {})
        self.model = model
        self._template = copy.deepcopy(model) if not getattr(model, "_fitted", False) else None
        self._cursor: float | None = None
        self._seen: dict[str, float] = {}  # event ids folded in, with their times, back to cursor - lateness
        if since is not None:
            if not getattr(model, "_fitted", False):
                raise ParameterError("Retrainer: since: expected a fitted model with it (since says which events "
                                     "the model has not seen), got an unfitted one; drop since")
            from .._time import to_epoch

            self._cursor = to_epoch(since, "since", error=ParameterError, hint="; pass a time or leave it out")
            self._seen = None  # events at since are new: nothing to skip yet (see _read)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_retrain = time.monotonic() if since is not None else None
        self._next_update = 0.0
        self._last_read = 0.0
        self._stats = {"version": 0, "updates": 0, "retrains": 0, "failures": 0, "events": 0, "last_error": None,
                       "last_action": None, "last_publish": None, "last_update_s": None, "last_retrain_s": None}

    # ------------------------------------------------------------------ reading the store
    def _types(self, event_types) -> list[str]:
        from ..data.ingest import DEFAULT_WEIGHTS

        if event_types is None:
            return list(dict.fromkeys([*DEFAULT_WEIGHTS, *self.weights]))
        if isinstance(event_types, str):
            event_types = [event_types]
        types = list(event_types)
        bad = [t for t in types if not isinstance(t, str) or not t]
        if bad or not types:
            raise ParameterError(f"Retrainer: event_types: expected a non-empty list of event names, got "
                                 f"{types[:3]!r}")
        return types

    def _read(self, since: float | None, *, skip_seen: bool = True):
        """The stored events of the wanted types from ``since`` on (and not folded in yet): (frame, times)."""
        import pandas as pd

        frame = self.store.events(since=since, event_types=self.event_types)
        if not len(frame):
            return frame, np.zeros(0)
        t = pd.to_datetime(frame["time"], utc=True)
        ts = ((t - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)
        if skip_seen and self._seen:
            fresh = ~frame["event_id"].isin(self._seen).to_numpy()
            frame, ts = frame[fresh], ts[fresh]
        return frame, ts

    def _interactions(self, frame, ts):
        """The events as Interactions, weighted as ``EventStore.interactions`` weighs them."""
        import pandas as pd

        from ..data.ingest import from_frame

        df = pd.DataFrame({"user": frame["user"].to_numpy(), "item": frame["item"].to_numpy(), "time": ts,
                           "event": frame["event"].to_numpy()})
        inter = from_frame(df, user="user", item="item", time="time", event="event", weights=self.weights or None,
                           aggregate=self.aggregate, strict=False)
        dropped = inter.report.n_input - len(inter)
        if dropped:
            log.warning("persona pipeline: %d of %d events left out while reading the store: %s", dropped,
                        inter.report.n_input, inter.report)
        return inter

    def _remember(self, frame, ts) -> None:
        """Mark events as folded in, move the cursor, forget ids older than the lateness window."""
        if len(ts):
            self._cursor = max(self._cursor if self._cursor is not None else -np.inf, float(ts.max()))
        seen = self._seen or {}
        seen.update(zip(frame["event_id"].tolist(), ts.tolist()))
        floor = (self._cursor if self._cursor is not None else 0.0) - self.lateness
        self._seen = {k: v for k, v in seen.items() if v >= floor}

    def pending(self) -> int:
        """New events of the read types waiting in the store (a cheap count, no read)."""
        if self._cursor is None:
            return self.store.count(event_types=self.event_types)
        since = self._cursor - (self.lateness if self._seen is not None else 0.0)
        return max(0, self.store.count(since=since, event_types=self.event_types)
                   - sum(1 for v in (self._seen or {}).values() if v >= since))

    # ------------------------------------------------------------------ one cycle
    def run_once(self, *, retrain: bool | None = None) -> dict:
        """One cycle now: a full retrain when one is due (or ``retrain=True``), else an update.

        Returns a report: ``action`` ("retrain", "update" or "none"), ``events`` folded in,
        ``seconds``, the published ``version``, and ``error`` (a failed cycle: logged, retried
        later; the last good model stays). Never raises for a failing cycle.
        """
        with self._lock:
            if retrain is None:
                retrain = self._retrain_due()
            t0 = time.perf_counter()
            action = "retrain" if retrain else "update"
            try:
                events = self._retrain() if retrain else self._update()
            except Exception as e:  # noqa: BLE001 - one bad cycle must not stop the pipeline; logged in full
                self._failures += 1
                self._stats["failures"] += 1
                self._stats["last_error"] = f"{type(e).__name__}: {e}"
                self._retry_at = time.monotonic() + min(_MAX_BACKOFF, self.update_every * 2 ** min(self._failures, 16))
                log.exception("persona pipeline: %s of %s failed (%d in a row); the last good model keeps serving",
                              action, type(self.model).__name__, self._failures)
                return {"action": action, "events": 0, "seconds": time.perf_counter() - t0,
                        "version": self._stats["version"], "error": self._stats["last_error"]}
            self._failures = 0
            seconds = time.perf_counter() - t0
            if events is None:
                action, events = "none", 0
            self._stats["last_action"] = action
            if action != "none":
                self._stats[f"last_{action}_s"] = seconds
            return {"action": action, "events": events, "seconds": seconds, "version": self._stats["version"],
                    "error": None}

    def _retrain_due(self) -> bool:
        if not getattr(self.model, "_fitted", False) or self._last_retrain is None:
            return True
        if self._failures >= self.retrain_after_failures:
            return True
        return self.retrain_every is not None and time.monotonic() - self._last_retrain >= self.retrain_every

    def _fresh_model(self):
        """An unfitted model like the current one (same class and hyperparameters)."""
        if self._template is not None:
            return copy.deepcopy(self._template)
        return type(self.model)(**self.model.get_params())

    def _retrain(self) -> int:
        frame, ts = self._read(None, skip_seen=False)
        if not len(frame):
            raise DataError(f"no stored events of the types {self.event_types} to train on; track events first")
        inter = self._interactions(frame, ts)
        model = self._fresh_model().fit(inter, **self.fit_options)
        fallback = getattr(self.model, "fallback_", None)
        if fallback is not None:  # the fallback travels with the model: refit it on the same events
            model.set_fallback(type(fallback)(**fallback.get_params()).fit(inter))
        self._publish(model)
        self._cursor, self._seen = None, {}
        self._remember(frame, ts)
        self._last_retrain = time.monotonic()
        self._stats["retrains"] += 1
        self._stats["events"] += len(frame)
        log.info("persona pipeline: retrained %s on %d events (%d users x %d items), published version %d",
                 type(model).__name__, len(inter), model.n_users, model.n_items, self._stats["version"])
        return len(frame)

    def _update(self) -> int | None:
        # a count first; a full read at least once a minute all the same (a count can hide a new event
        # when one of a forgotten user vanished from the same window)
        if self._cursor is not None and time.monotonic() - self._last_read < _FULL_READ_EVERY and self.pending() == 0:
            return None
        self._last_read = time.monotonic()
        since = self._cursor
        if since is not None and self._seen is not None:  # None: events from `since` on are all new
            since -= self.lateness
        frame, ts = self._read(since)
        if not len(frame):
            return None
        batch = self._interactions(frame, ts)
        model = copy.copy(self.model).update(batch, **self.update_options)  # the served object stays as it is
        self._publish(model)
        self._remember(frame, ts)
        self._stats["updates"] += 1
        self._stats["events"] += len(frame)
        log.info("persona pipeline: folded %d events into %s (%s), published version %d", len(frame),
                 type(model).__name__, getattr(model, "last_update_", {}), self._stats["version"])
        return len(frame)

    def _publish(self, model) -> None:
        if self.path is not None:
            model.save(self.path, key=self.key)  # a temporary folder renamed into place: atomic for readers
        if self.service is not None:
            self.service.swap(model)
        self.model = model
        self._stats["version"] += 1
        self._stats["last_publish"] = time.time()

    # ------------------------------------------------------------------ the background thread
    def start(self) -> Retrainer:
        """Run cycles in a background (daemon) thread until :meth:`stop`; returns ``self``."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="persona-retrainer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the background thread (after the cycle in progress, waiting at most ``timeout`` s)."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if now >= self._retry_at:
                    if self._retrain_due():
                        self.run_once(retrain=True)
                        self._next_update = time.monotonic() + self.update_every
                    elif now >= self._next_update or (self.update_events is not None
                                                      and self.pending() >= self.update_events):
                        self.run_once(retrain=False)
                        self._next_update = time.monotonic() + self.update_every
            except Exception:  # noqa: BLE001 - the store unreachable for a count: try again later
                log.exception("persona pipeline: could not look at the store; retrying")
            self._stop.wait(self.poll_interval)

    def __enter__(self) -> Retrainer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ progress
    def status(self) -> dict:
        """What the pipeline did: published ``version``, ``updates``, ``retrains``, ``failures``
        (and ``failures_in_a_row``), ``events`` folded in, ``cursor`` (epoch seconds of the newest
        event read), ``last_error``, ``last_action``, the durations of the last update and retrain,
        ``last_publish`` (epoch seconds) and whether the thread is ``running``."""
        out = dict(self._stats)  # no lock: a long retrain must not block a health check
        out.update(cursor=self._cursor, failures_in_a_row=self._failures, running=self.running,
                   model=type(self.model).__name__)
        return out

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "a service"
        return (f"Retrainer({type(self.model).__name__} -> {where}, update_every={self.update_every}, "
                f"retrain_every={self.retrain_every}, version {self._stats['version']})")
