"""``EventStore``: record what users do from inside a request, durably, without waiting on disk.

``track()`` validates an event in the caller's thread, appends it to a bounded in-memory queue and
returns. One background writer thread per store and process drains the queue in batches, one
transaction per batch, into SQLite or PostgreSQL (see :mod:`persona.store.backends`). Under load the
batches grow by themselves (the writer takes whatever queued up while the last commit ran), so one
fsync covers many events.

Guarantees
----------
* ``flush()`` returns only once every event tracked before the call is committed; such an event
  survives ``kill -9`` of the process (and, with ``synchronous="full"``, a power cut).
* Every event carries an idempotency key (``event_id``; a random uuid4 by default) under a UNIQUE
  constraint: replaying events, or several processes retrying the same ones, stores each once.
* A full queue either blocks the caller until the writer catches up (``on_full="block"``, the
  default: back-pressure) or drops the event (``on_full="drop"``): ``track`` then returns ``None``,
  ``stats()["dropped"]`` counts it and a warning is logged -- never a silent loss.
* A writer failure (database gone, disk full) is retried with backoff and surfaces on ``flush()`` /
  ``close()`` as :class:`~persona.errors.StoreError` with the number of unwritten events.
* At interpreter exit every open store is flushed (``atexit``), and a forked child (gunicorn
  ``--preload``) starts with an empty queue and its own writer and connection.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import hashlib
import hmac
import json
import logging
import math
import numbers
import os
import threading
import time
import uuid
import weakref
from collections import deque
from typing import Iterable, Mapping

from .._time import to_epoch
from ..errors import DataError, ParameterError, StoreError
from .backends import SCHEMA_VERSION, Backend, make_backend

__all__ = ["EventStore"]

log = logging.getLogger("persona.store")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_USER_INT, _ITEM_INT = 1, 2
_FINGERPRINT_MSG = b"persona.store pseudonymization check v1"
_DROP_LOG_EVERY = 10.0  # seconds between two warnings about dropped events


# ------------------------------------------------------------------------------------ validation
def _id(x, what: str) -> tuple[str, bool]:
    """An id as stored text, and whether it was an integer."""
    if isinstance(x, str):
        if not x:
            raise DataError(f"track: {what} is an empty string; pass the shop's {what} id")
        if "\x00" in x:
            raise DataError(f"track: {what} {x!r} contains a NUL character; strip it from the id")
        _utf8(x, what)
        return x, False
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        v = int(x)
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise DataError(f"track: {what} {v} does not fit in 64 bits; pass it as a string")
        return str(v), True
    raise DataError(
        f"track: {what} expected a string or integer id, got {type(x).__name__} {x!r}; "
        f"pass the shop's {what} id (convert it with str() or int())"
    )


def _utf8(s: str, what: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(f"track: {what} {s!r} is not valid Unicode text ({e.reason}); fix the text") from None


def _epoch(t, what: str = "timestamp") -> float:
    """Epoch seconds (UTC) of a datetime (naive = UTC), date, ISO-8601 string or epoch number."""
    return to_epoch(t, what, error=DataError, hint="; pass a real time or leave it out for 'now'")


def _properties(p) -> str | None:
    if p is None:
        return None
    if not isinstance(p, Mapping):
        raise DataError(
            f"track: properties expected a dict (stored as JSON), got {type(p).__name__}; "
            f"pass e.g. properties={{'campaign': 'spring', 'propensity': 0.2}}"
        )
    try:
        text = json.dumps(p, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise DataError(
            f"track: properties must be JSON-serialisable with finite numbers ({e}); convert dates to "
            f"ISO strings and numpy numbers to float/int"
        ) from None
    if "\\u0000" in text:  # PostgreSQL's jsonb refuses NUL characters
        raise DataError("track: properties contain a NUL character (\\u0000); strip it")
    _utf8(text, "properties")
    return text


# ------------------------------------------------------------------------------ process lifecycle
_LIVE: "weakref.WeakSet[EventStore]" = weakref.WeakSet()


def _flush_all_at_exit() -> None:
    for store in list(_LIVE):
        if store._flush_at_exit:
            try:
                store.close(timeout=store._exit_timeout)
            except Exception as e:  # noqa: BLE001 -- at exit there is no caller left to raise to
                log.error("persona.store: at exit, %s", e)


# Held by a writer for each database operation, and by a thread that forks, so that a fork never
# happens in the middle of one: a child inheriting the database library's state mid-operation
# (SQLite's per-process lock bookkeeping, a global mutex) could wait forever on a lock no thread
# of its own holds.
_DB_LOCK = threading.Lock()


def _before_fork() -> None:
    _DB_LOCK.acquire()


def _after_fork_in_parent() -> None:
    _DB_LOCK.release()


def _after_fork_in_child() -> None:
    global _DB_LOCK
    _DB_LOCK = threading.Lock()
    for store in list(_LIVE):
        store._reset_after_fork()


atexit.register(_flush_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


# ------------------------------------------------------------------------------------- the store
class EventStore:
    """A durable, append-only log of shop events, written in the background.

    Parameters
    ----------
    target : str or path, default "persona-events.db"
        A file path (or ``sqlite:///path``) for the embedded SQLite backend, or a
        ``postgresql://user:password@host:port/dbname`` URL (needs ``pip install 'persona[postgres]'``).
    table : str, default "persona_events"
        Table name; a ``<table>_meta`` table beside it records the schema version and whether ids
        are pseudonymised.
    on_full : {"block", "drop"}, default "block"
        What ``track`` does when ``max_queue`` events wait unwritten: wait for room (back-pressure),
        or drop the event, count it in ``stats()["dropped"]``, log a warning and return ``None``.
    max_queue : int, default 100_000
        Events held in memory at most (plus one batch being written).
    batch_size : int, default 1000
        Most events per transaction.
    synchronous : {"full", "normal"}, default "full"
        Durability of a commit. ``"full"``: SQLite fsyncs its WAL at every batch commit, PostgreSQL
        keeps ``synchronous_commit=on``; a flushed event survives a power cut. ``"normal"``: a
        flushed event survives the process being killed (``kill -9``), but the last batches may be
        lost on a power cut / OS crash (SQLite) or server crash (PostgreSQL); commits are cheaper.
    busy_timeout : float, default 30.0
        Seconds to wait for another process's write lock (SQLite) or a table lock (PostgreSQL)
        before the batch counts as failed and is retried.
    pseudonymize_key : bytes, optional
        When given (at least 16 bytes, e.g. ``secrets.token_bytes(32)``, kept secret and stable),
        user ids are replaced at ingestion by ``HMAC-SHA256(key, str(user))`` as 64 hex digits, so
        raw ids never reach the database. ``forget_user`` and ``events(user=...)`` take the raw id
        and hash it the same way; :meth:`pseudonym` gives the stored id (models trained on the
        store know users by it). A store must always be opened with the same key.
    flush_at_exit : bool, default True
        Flush and close at interpreter exit, waiting at most ``exit_timeout`` seconds.

    Examples
    --------
    >>> import os, tempfile
    >>> from persona.store import EventStore
    >>> path = os.path.join(tempfile.mkdtemp(), "events.db")
    >>> with EventStore(path) as store:
    ...     _ = store.track("ann", "shoe", "view")
    ...     _ = store.track("ann", "shoe", "purchase", value=59.0)
    ...     store.flush()
    ...     store.count()
    2
    """

    def __init__(self, target="persona-events.db", *, table: str = "persona_events", on_full: str = "block",
                 max_queue: int = 100_000, batch_size: int = 1000, synchronous: str = "full",
                 busy_timeout: float = 30.0, pseudonymize_key: bytes | None = None,
                 flush_at_exit: bool = True, exit_timeout: float = 10.0) -> None:
        if on_full not in ("block", "drop"):
            raise ParameterError(f"on_full: expected 'block' or 'drop', got {on_full!r}")
        for name, v in (("max_queue", max_queue), ("batch_size", batch_size)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
                raise ParameterError(f"{name}: expected a positive integer, got {v!r}")
        if synchronous not in ("full", "normal"):
            raise ParameterError(
                f"synchronous: expected 'full' (survives power loss) or 'normal' (survives a killed "
                f"process), got {synchronous!r}"
            )
        for name, v in (("busy_timeout", busy_timeout), ("exit_timeout", exit_timeout)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v >= 0:
                raise ParameterError(f"{name}: expected seconds >= 0, got {v!r}")
        if pseudonymize_key is not None:
            if not isinstance(pseudonymize_key, (bytes, bytearray)):
                raise ParameterError(
                    f"pseudonymize_key: expected bytes, got {type(pseudonymize_key).__name__}; "
                    f"pass e.g. secrets.token_bytes(32), stored as a secret"
                )
            if len(pseudonymize_key) < 16:
                raise ParameterError(
                    f"pseudonymize_key: expected at least 16 bytes, got {len(pseudonymize_key)}; "
                    f"a short key makes the pseudonyms guessable, use secrets.token_bytes(32)"
                )
            pseudonymize_key = bytes(pseudonymize_key)

        self._backend: Backend = make_backend(target, table, synchronous=synchronous, busy_timeout=busy_timeout)
        self._key = pseudonymize_key
        self._on_full = on_full
        self._max_queue = int(max_queue)
        self._batch_size = int(batch_size)
        self._flush_at_exit = bool(flush_at_exit)
        self._exit_timeout = float(exit_timeout)

        fingerprint = ("hmac-sha256:" + hmac.new(self._key, _FINGERPRINT_MSG, hashlib.sha256).hexdigest()[:16]
                       if self._key is not None else "none")
        stored = self._backend.setup({"schema_version": SCHEMA_VERSION, "pseudonymization": fingerprint})
        if stored.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise StoreError(
                f"{self._backend.describe()} has schema version {stored['schema_version']!r}; this persona "
                f"reads version {SCHEMA_VERSION}; upgrade persona or use another table"
            )
        if stored.get("pseudonymization", fingerprint) != fingerprint:
            have = "without a key" if stored["pseudonymization"] == "none" else "with a different pseudonymize_key"
            want = "without a key" if self._key is None else "with this pseudonymize_key"
            raise ParameterError(
                f"{self._backend.describe()} was created {have} but is opened {want}; user ids would not "
                f"match. Open it with the key it was created with"
            )
        self._init_state()
        _LIVE.add(self)

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)  # the writer waits for events
        self._not_full = threading.Condition(self._lock)  # blocked track() calls wait for room
        self._progress = threading.Condition(self._lock)  # flush() waits for batches to land
        self._queue: deque = deque()
        self._accepted = 0  # events accepted by track (the flush target)
        self._done = 0  # events whose batch committed (new or duplicate)
        self._inserted = 0
        self._duplicates = 0
        self._dropped = 0
        self._batches = 0
        self._errors = 0
        self._error: BaseException | None = None  # the current failure; cleared by the next success
        self._closing = False
        self._closed = False
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_drop_log = -math.inf
        self._dropped_logged = 0
        self._pid = os.getpid()

    def _reset_after_fork(self) -> None:
        # the parent's queue and writer belong to the parent (which still writes them); the child's
        # locks may have been held by a parent thread at the fork, so everything starts afresh
        closed = self._closed
        self._init_state()
        self._closed = closed

    # ----------------------------------------------------------------------------- writing
    def track(self, user, item, event: str, timestamp=None, value=None, properties=None, *,
              event_id: str | None = None) -> str | None:
        """Record one event; returns at once with its ``event_id`` (``None`` if it was dropped).

        Parameters
        ----------
        user, item : str or int
            External ids, as the shop knows them.
        event : str
            Event type: ``"view"``, ``"click"``, ``"cart"``, ``"purchase"``, or marketing feedback
            such as ``"impression"``, ``"send"``, ``"open"``, ``"conversion"`` -- any non-empty name.
        timestamp : datetime, ISO-8601 string or epoch seconds, optional
            When it happened (naive datetimes are UTC); default: now.
        value : float, optional
            Price, quantity, rating or revenue.
        properties : dict, optional
            Anything else, stored as JSON (campaign, channel, position, propensity, ...).
        event_id : str, optional
            The idempotency key; pass the same one when replaying an event and it is stored once.
            Default: a random uuid4 (hex).

        Raises
        ------
        DataError
            A bad argument, named in the message; nothing is queued.
        StoreError
            The store is closed, or ``on_full="block"`` would wait on a writer that is failing.
        """
        u, u_int = _id(user, "user")
        if self._key is not None:
            u, u_int = hmac.new(self._key, u.encode("utf-8"), hashlib.sha256).hexdigest(), False
        i, i_int = _id(item, "item")
        if not isinstance(event, str) or not event:
            raise DataError(
                f"track: event expected a non-empty string such as 'view' or 'purchase', got {event!r}"
            )
        if "\x00" in event:
            raise DataError(f"track: event {event!r} contains a NUL character; strip it")
        _utf8(event, "event")
        ts = time.time() if timestamp is None else _epoch(timestamp, "track: timestamp")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
                raise DataError(f"track: value expected a finite number or None, got {type(value).__name__} {value!r}")
            value = float(value)
        props = _properties(properties)
        if event_id is None:
            event_id = uuid.uuid4().hex
        elif not isinstance(event_id, str) or not event_id or len(event_id) > 255 or "\x00" in event_id:
            raise DataError(
                f"track: event_id expected a non-empty string of at most 255 characters, got {event_id!r}; "
                f"pass your own idempotency key (e.g. an order line id) or leave it out"
            )
        else:
            _utf8(event_id, "event_id")
        row = (event_id, ts, u, i, event, value, props, (_USER_INT if u_int else 0) | (_ITEM_INT if i_int else 0))

        should_log = False
        with self._lock:
            if self._closed or self._closing:
                raise StoreError(f"track: the event store is closed ({self._backend.describe()}); open a new one")
            if self._thread is None:
                self._start_writer()
            if len(self._queue) >= self._max_queue:
                if self._on_full == "drop":
                    self._dropped += 1
                    dropped = self._dropped
                    now = time.monotonic()
                    should_log = now - self._last_drop_log >= _DROP_LOG_EVERY
                    if should_log:
                        self._last_drop_log = now
                        newly, self._dropped_logged = dropped - self._dropped_logged, dropped
                else:
                    while len(self._queue) >= self._max_queue:
                        if self._error is not None:
                            raise StoreError(
                                f"track: the queue is full ({self._max_queue} events) and the writer is failing "
                                f"({self._error!r}); {self._accepted - self._done} events are unwritten"
                            )
                        if self._closing or self._closed:
                            raise StoreError("track: the event store was closed while waiting for room")
                        self._not_full.wait(0.1)
                    dropped = 0
            else:
                dropped = 0
            if not dropped:
                self._queue.append(row)
                self._accepted += 1
                self._not_empty.notify()
                return event_id
        if should_log:
            log.warning(
                "persona.store: the event queue is full (%d events); dropped %d event(s) since the last warning, "
                "%d in total (on_full='drop'; see stats()['dropped'], raise max_queue or use on_full='block')",
                self._max_queue, newly, dropped,
            )
        return None

    def track_many(self, events: Iterable[Mapping]) -> list:
        """Track several events given as dicts of :meth:`track`'s arguments; returns their event ids."""
        return [self.track(**e) for e in events]

    def _start_writer(self) -> None:
        self._thread = threading.Thread(target=self._run, name="persona-store-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = None
        backoff = 0.05
        try:
            while True:
                with self._lock:
                    while not self._queue and not self._closing:
                        self._not_empty.wait()
                    if not self._queue:
                        return
                    n = min(len(self._queue), self._batch_size)
                    batch = [self._queue.popleft() for _ in range(n)]
                    self._not_full.notify_all()
                while True:
                    try:
                        with _DB_LOCK:
                            if conn is None:
                                conn = self._backend.connect()
                            inserted = self._backend.write(conn, batch)
                    except Exception as e:  # noqa: BLE001 -- any failure is kept, reported and retried
                        with _DB_LOCK:
                            conn = _close_quietly(conn)
                        with self._lock:
                            first = self._error is None
                            self._error = e
                            self._errors += 1
                            pending = self._accepted - self._done
                            self._progress.notify_all()
                            self._not_full.notify_all()
                        if first:
                            log.error("persona.store: writing a batch of %d events to %s failed (%s); %d events "
                                      "unwritten, retrying", len(batch), self._backend.describe(), e, pending)
                        if self._abort.wait(backoff):
                            return
                        backoff = min(backoff * 2, 2.0)
                        continue
                    with self._lock:
                        self._done += n
                        self._inserted += inserted
                        self._duplicates += n - inserted
                        self._batches += 1
                        if self._error is not None:
                            log.warning("persona.store: the writer recovered after %d failed attempt(s)", self._errors)
                        self._error = None
                        self._progress.notify_all()
                    backoff = 0.05
                    break
        finally:
            with _DB_LOCK:
                _close_quietly(conn)

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event tracked so far (by any thread of this process) is committed.

        Raises
        ------
        StoreError
            The writer is failing (the message gives the error and how many events are unwritten;
            they stay queued and are retried), or ``timeout`` seconds passed first.
        """
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or timeout < 0):
            raise ParameterError(f"flush: timeout expected seconds >= 0 or None, got {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._accepted
            while self._done < target:
                if self._error is not None:
                    raise StoreError(
                        f"flush: writing to {self._backend.describe()} failed: {self._error}; "
                        f"{self._accepted - self._done} event(s) are not written yet (they stay queued and are "
                        f"retried; close() gives up on them). Check that the database is reachable and writable"
                    ) from self._error
                if self._thread is None or not self._thread.is_alive():
                    raise StoreError(f"flush: the writer is not running; {self._accepted - self._done} event(s) "
                                     f"are unwritten")
                wait = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if wait <= 0:
                    raise StoreError(
                        f"flush: {target - self._done} event(s) still unwritten after {timeout} s; "
                        f"call flush() again, or check the database"
                    )
                self._progress.wait(wait)

    def close(self, timeout: float | None = None) -> None:
        """Flush, stop the writer and close. Idempotent.

        Raises
        ------
        StoreError
            Some events could not be written (the writer failed, or ``timeout`` passed); the
            message gives their count. They are lost.
        """
        if self._pid != os.getpid():  # a forked child that never tracked anything of its own
            self._reset_after_fork()
        with self._lock:
            if self._closed:
                return
        error = None
        try:
            self.flush(timeout)
        except StoreError as e:
            error = e
        with self._lock:
            self._closing = True
            self._not_empty.notify_all()
            self._not_full.notify_all()
            thread = self._thread
        if error is not None:
            self._abort.set()
        if thread is not None:
            thread.join(None if error is None else 5.0)
        with self._lock:
            self._closed = True
            lost = self._accepted - self._done
        _LIVE.discard(self)
        if lost:
            raise StoreError(
                f"close: {lost} event(s) could not be written to {self._backend.describe()} and are lost ({error})"
            ) from error

    def __enter__(self) -> "EventStore":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict:
        """Counters of this process's store object.

        ``tracked`` (accepted by ``track``), ``written`` (newly stored), ``duplicates`` (event ids
        already stored), ``dropped`` (full queue with ``on_full="drop"``), ``pending`` (accepted but
        not yet committed), ``batches``, ``errors`` (failed write attempts) and ``last_error``.
        """
        with self._lock:
            return {
                "tracked": self._accepted,
                "written": self._inserted,
                "duplicates": self._duplicates,
                "dropped": self._dropped,
                "pending": self._accepted - self._done,
                "queued": len(self._queue),
                "batches": self._batches,
                "errors": self._errors,
                "last_error": None if self._error is None else repr(self._error),
            }

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"EventStore({self._backend.describe()}, {state})"

    # ------------------------------------------------------------------------------- privacy
    def pseudonym(self, user):
        """The id under which ``user``'s events are stored.

        With ``pseudonymize_key``: the HMAC-SHA256 of ``str(user)`` as hex (so ``42`` and ``"42"``
        are one user). Without: ``user`` itself. Use it to look a user up in a model trained on
        :meth:`interactions`.
        """
        u, _ = _id(user, "user")
        if self._key is None:
            return user
        return hmac.new(self._key, u.encode("utf-8"), hashlib.sha256).hexdigest()

    def _stored_user(self, user) -> str:
        u, _ = _id(user, "user")
        return u if self._key is None else hmac.new(self._key, u.encode("utf-8"), hashlib.sha256).hexdigest()

    def forget_user(self, user) -> int:
        """Delete every stored event of ``user`` (the raw id, also when pseudonymised); return the count.

        Flushes this process's queue first, so events of the user tracked before the call are deleted
        too. Events another process tracks later are not; remove the user from the shop's other
        workers' traffic first (or call this again).
        """
        stored = self._stored_user(user)
        if self._thread is not None and not self._closed and self._pid == os.getpid():
            self.flush()
        conn = self._backend.connect()
        try:
            return int(self._backend.delete_user(conn, stored))
        finally:
            conn.close()

    # ----------------------------------------------------------------------------- reading
    def _where(self, since, until, event_types, user=None) -> tuple[str, list]:
        s = None if since is None else _epoch(since, "since")
        u = None if until is None else _epoch(until, "until")
        if event_types is not None:
            if isinstance(event_types, str):
                event_types = [event_types]
            event_types = list(event_types)
            bad = [e for e in event_types if not isinstance(e, str) or not e]
            if bad:
                raise ParameterError(f"event_types: expected a list of event names, got {bad[:3]!r} among them")
        stored = None if user is None else self._stored_user(user)
        return self._backend.where(s, u, event_types, stored)

    def count(self, since=None, until=None, event_types=None, *, user=None) -> int:
        """Number of stored events (of all processes) in ``[since, until)``, of ``event_types``, of ``user``."""
        where, params = self._where(since, until, event_types, user)
        conn = self._backend.connect()
        try:
            return self._backend.count(conn, where, params)
        finally:
            conn.close()

    def _scan(self, since, until, event_types, user=None, chunk_size: int = 100_000):
        """(total, users_all_int, items_all_int, chunk iterator) from one consistent snapshot."""
        where, params = self._where(since, until, event_types, user)
        conn = self._backend.connect()
        try:
            with self._backend.snapshot(conn):
                n, users_int, items_int = self._backend.kinds(conn, where, params)
                yield n, users_int, items_int
                yield from self._backend.select(conn, where, params, chunk_size)
        finally:
            conn.close()

    def _columns(self, since, until, event_types, user=None) -> dict | None:
        scan = self._scan(since, until, event_types, user)
        n, users_int, items_int = next(scan)
        if not n:
            scan.close()
            return None
        cols = {k: [] for k in ("event_id", "ts", "user", "item", "event", "value", "properties")}
        for chunk in scan:
            e, t, u, i, ev, v, p, _ = zip(*chunk)
            cols["event_id"] += e
            cols["ts"] += t
            cols["user"] += u
            cols["item"] += i
            cols["event"] += ev
            cols["value"] += v
            cols["properties"] += p
        if users_int:
            cols["user"] = [int(x) for x in cols["user"]]
        if items_int:
            cols["item"] = [int(x) for x in cols["item"]]
        return cols

    def events(self, since=None, until=None, event_types=None, *, user=None):
        """The stored events as a pandas DataFrame, oldest first.

        Columns: ``event_id``, ``time`` (datetime64, UTC), ``user``, ``item``, ``event``, ``value``
        (NaN when absent), ``properties`` (dict or None). ``user=`` selects one user by raw id.
        Integer ids come back as integers when every selected event used an integer id (else all
        as strings).
        """
        import pandas as pd

        cols = self._columns(since, until, event_types, user)
        names = ["event_id", "time", "user", "item", "event", "value", "properties"]
        if cols is None:
            return pd.DataFrame({c: pd.Series([], dtype=object) for c in names}).astype(
                {"time": "datetime64[ns, UTC]", "value": "float64"})
        return pd.DataFrame({
            "event_id": cols["event_id"],
            "time": pd.to_datetime(pd.Series(cols["ts"], dtype="float64"), unit="s", utc=True),
            "user": cols["user"],
            "item": cols["item"],
            "event": cols["event"],
            "value": pd.Series(cols["value"], dtype="float64"),
            "properties": [None if p is None else json.loads(p) for p in cols["properties"]],
        })

    def interactions(self, since=None, until=None, event_types=None, weights=None, *, values: bool = False,
                     **options):
        """The stored events as :class:`~persona.Interactions`, for (incremental) training.

        Parameters
        ----------
        since, until : datetime, ISO-8601 string or epoch seconds, optional
            Keep events with ``since <= time < until`` (event time, UTC).
        event_types : list of str, optional
            Event types to read. Default: the types that have a weight -- the built-in ``view``,
            ``click``, ``cart``, ``purchase``, ``search`` plus the keys of ``weights`` -- so marketing
            feedback (``impression``, ``send``, ...) stays out unless named and weighted. With
            ``default_weight=`` or ``weight=`` in ``options``, every type is read.
        weights : dict of str -> float, optional
            Event-type weights, as in :meth:`persona.Interactions.from_frame`.
        values : bool, default False
            Also read ``value`` into ``Interactions.values`` (every selected event then needs one).
        **options
            Passed on to :meth:`persona.Interactions.from_frame` (``strict``, ``half_life``,
            ``min_user_events``, ``user_map``, ...).

        Raises
        ------
        DataError
            No stored event matches.
        """
        import pandas as pd

        from ..data.ingest import DEFAULT_WEIGHTS, from_frame

        if event_types is None and options.get("default_weight") is None and options.get("weight") is None:
            event_types = list(dict.fromkeys([*DEFAULT_WEIGHTS, *(weights or {})]))
        cols = self._columns(since, until, event_types)
        if cols is None:
            raise DataError(
                f"no stored events match (since={since!r}, until={until!r}, event_types={event_types!r}) in "
                f"{self._backend.describe()}; track events first or widen the selection"
            )
        df = pd.DataFrame({"user": cols["user"], "item": cols["item"], "time": cols["ts"], "event": cols["event"]})
        if values:
            df["value"] = pd.Series(cols["value"], dtype="float64")
        return from_frame(df, user="user", item="item", time="time", event="event",
                          value="value" if values else None, weights=weights, **options)

    def export(self, path, since=None, until=None, event_types=None, *, chunk_size: int = 100_000) -> int:
        """Write the stored events to a Parquet (``.parquet``) or CSV (``.csv``, ``.csv.gz``) file.

        Streams ``chunk_size`` rows at a time from one consistent snapshot, so memory stays flat
        for large stores; writes to a temporary file beside ``path`` and renames it, so a reader
        never sees half a file. Columns as in :meth:`events`; ``time`` is a UTC timestamp in
        Parquet and an ISO-8601 string in CSV, ``properties`` JSON text. Read it back with
        ``Interactions.from_parquet(path, user="user", item="item", time="time", event="event")``.
        Returns the number of events written.
        """
        p = os.fspath(path)
        low = p.lower()
        if low.endswith((".parquet", ".pq")):
            kind = "parquet"
        elif low.endswith((".csv", ".csv.gz")):
            kind = "csv"
        else:
            raise ParameterError(f"export: cannot tell the format of {p!r}; end the name in .parquet, .csv or .csv.gz")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
            raise ParameterError(f"export: chunk_size expected a positive integer, got {chunk_size!r}")
        if kind == "parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError:
                raise ImportError("exporting Parquet needs pyarrow, which is not installed; pip install pyarrow, "
                                  "or export to .csv") from None
        tmp = f"{p}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        total = 0
        try:
            scan = self._scan(since, until, event_types, chunk_size=int(chunk_size))
            _, users_int, items_int = next(scan)
            if kind == "parquet":
                schema = pa.schema([
                    ("event_id", pa.string()), ("time", pa.timestamp("us", tz="UTC")),
                    ("user", pa.int64() if users_int else pa.string()),
                    ("item", pa.int64() if items_int else pa.string()),
                    ("event", pa.string()), ("value", pa.float64()), ("properties", pa.string()),
                ])
                with pq.ParquetWriter(tmp, schema) as writer:
                    for chunk in scan:
                        writer.write_table(_arrow_chunk(pa, schema, chunk, users_int, items_int))
                        total += len(chunk)
            else:
                import csv
                import gzip

                opener = gzip.open if low.endswith(".gz") else open
                with opener(tmp, "wt", newline="", encoding="utf-8") as f:
                    w = csv.writer(f)
                    w.writerow(["event_id", "time", "user", "item", "event", "value", "properties"])
                    for chunk in scan:
                        w.writerows((e, _iso(t), u, i, ev, "" if v is None else repr(v), "" if pr is None else pr)
                                    for e, t, u, i, ev, v, pr, _ in chunk)
                        total += len(chunk)
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return total


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="microseconds")


def _arrow_chunk(pa, schema, chunk, users_int: bool, items_int: bool):
    e, t, u, i, ev, v, p, _ = zip(*chunk)
    return pa.Table.from_arrays([
        pa.array(e, pa.string()),
        pa.array([round(x * 1e6) for x in t], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        pa.array([int(x) for x in u], pa.int64()) if users_int else pa.array(u, pa.string()),
        pa.array([int(x) for x in i], pa.int64()) if items_int else pa.array(i, pa.string()),
        pa.array(ev, pa.string()),
        pa.array(v, pa.float64()),
        pa.array(p, pa.string()),
    ], schema=schema)


def _close_quietly(conn) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 -- the connection is already broken
            pass
    return None
