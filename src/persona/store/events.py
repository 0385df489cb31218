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
* ``track`` refuses what the database could choke on (times outside 1970-2200, ids over 256
  characters, deep or large properties) with :class:`~persona.errors.DataError`, in the caller.
* A full queue either blocks the caller until the writer catches up -- at most ``block_timeout``
  seconds, so a hung database never holds a web request -- (``on_full="block"``, the default) or
  drops the event (``on_full="drop"``). A dropped event makes ``track`` return ``None`` (or raise,
  with ``on_timeout="raise"``); ``stats()["dropped"]`` counts it and a warning is logged -- never a
  silent loss.
* A writer failure (database gone, disk full) is retried with backoff and surfaces on ``flush()`` /
  ``close()`` as :class:`~persona.errors.StoreError` with the number of unwritten events; ``close()``
  keeps retrying until its timeout, so a failure that clears in time loses nothing.
* A batch the database refuses for its *data* is split until the refused rows are isolated; they
  go to the dead-letter table with the reason (``dead_letters()``, ``stats()["dead_lettered"]``)
  and every other row commits. One hostile event never stops the writer.
* ``forget_user`` records a tombstone in the store: every process's writer drops the user's events
  at write time, every read leaves them out, and :meth:`is_forgotten` tells services.
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
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from .._time import to_epoch
from .._validate import check_frame, check_int, check_number
from ..errors import DataError, ParameterError, StoreError
from ..typing import FrameLike, ItemId, PathLike, TimePoint, UserId
from .backends import SCHEMA_VERSION, Backend, make_backend

if TYPE_CHECKING:  # annotations only: pandas and the data layer load when events are read
    import pandas as pd

    from ..data.interactions import CleaningReport, Interactions

__all__ = ["EventStore"]

log = logging.getLogger("persona.store")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_USER_INT, _ITEM_INT = 1, 2
_FINGERPRINT_MSG = b"persona.store pseudonymization check v1"
_DROP_LOG_EVERY = 10.0  # seconds between two warnings about dropped events

#: what ``track`` accepts; beyond it a database may refuse the row (PostgreSQL: an index row over
#: 2,704 bytes, a time before 4713 BC) or a reader choke on it
MIN_TIMESTAMP = 0.0  # 1970-01-01T00:00:00Z
MAX_TIMESTAMP = 7258118400.0  # 2200-01-01T00:00:00Z, exclusive
MAX_ID_LENGTH = 256  # characters of a user or item id
MAX_EVENT_LENGTH = 64  # characters of an event name
MAX_PROPERTIES_BYTES = 65536  # of the properties' JSON text (UTF-8)
MAX_PROPERTIES_DEPTH = 32  # nesting of dicts and lists in properties


# ------------------------------------------------------------------------------------ validation
def _id(x, what: str) -> tuple[str, bool]:
    """An id as stored text, and whether it was an integer."""
    if isinstance(x, str):
        if not x:
            raise DataError(f"track: {what} is an empty string; pass the shop's {what} id")
        if len(x) > MAX_ID_LENGTH:
            raise DataError(
                f"track: {what} id expected at most {MAX_ID_LENGTH} characters, got {len(x)} "
                f"({x[:40]!r}...); pass the shop's short id (or a hash of a long one)"
            )
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


def _event_time(t) -> float:
    """An event's time, within the range the store keeps (years 1970-2199)."""
    v = _epoch(t, "track: timestamp")
    if not MIN_TIMESTAMP <= v < MAX_TIMESTAMP:
        raise DataError(
            f"track: timestamp expected a time from 1970-01-01 to 2200-01-01 (UTC), got {t!r} = {v!r} s since "
            f"1970; pass the event's real time (epoch seconds, not milliseconds), or leave it out for 'now'"
        )
    return v


def _properties(p) -> str | None:
    if p is None:
        return None
    if not isinstance(p, Mapping):
        raise DataError(
            f"track: properties expected a dict (stored as JSON), got {type(p).__name__}; "
            f"pass e.g. properties={{'campaign': 'spring', 'propensity': 0.2}}"
        )
    _shape(p)
    try:
        text = json.dumps(p, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as e:
        raise DataError(
            f"track: properties must be JSON-serialisable with finite numbers ({e}); convert dates to "
            f"ISO strings and numpy numbers to float/int"
        ) from None
    if "\\u0000" in text:  # PostgreSQL's jsonb refuses NUL characters
        raise DataError("track: properties contain a NUL character (\\u0000); strip it")
    _utf8(text, "properties")
    size = len(text.encode("utf-8"))
    if size > MAX_PROPERTIES_BYTES:
        raise DataError(f"track: properties expected at most {MAX_PROPERTIES_BYTES} bytes of JSON, got {size}; "
                        f"store large data elsewhere and keep a reference to it here")
    return text


def _shape(p) -> None:
    """Keys are strings (JSON would turn 1 into "1") and nesting stays shallow, without recursion."""
    stack = None
    for k, v in p.items():  # the common flat dict costs one pass
        if k.__class__ is not str and not isinstance(k, str):
            _bad_key(k)
        if isinstance(v, _NESTED):
            if stack is None:
                stack = []
            stack.append((v, 2))
    while stack:
        x, depth = stack.pop()
        if depth > MAX_PROPERTIES_DEPTH:
            raise DataError(f"track: properties nest deeper than {MAX_PROPERTIES_DEPTH} levels; flatten them")
        if isinstance(x, dict):
            for k, v in x.items():
                if not isinstance(k, str):
                    _bad_key(k)
                if isinstance(v, _NESTED):
                    stack.append((v, depth + 1))
        else:
            stack.extend((v, depth + 1) for v in x if isinstance(v, _NESTED))


_NESTED = (dict, list, tuple)  # what json.dumps nests; any other container fails there


def _bad_key(k) -> None:
    raise DataError(f"track: properties keys expected strings, got {type(k).__name__} {k!r}; "
                    f"JSON would store it as a string, so pass str({k!r})")


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
        ``postgresql://user:password@host:port/dbname`` URL (needs ``pip install 'persona-recsys[postgres]'``).
    table : str, default "persona_events"
        Table name; a ``<table>_meta`` table beside it records the schema version and whether ids
        are pseudonymised.
    on_full : {"block", "drop"}, default "block"
        What ``track`` does when ``max_queue`` events wait unwritten: wait for room (back-pressure)
        for at most ``block_timeout`` seconds, or drop the event at once. A dropped event is counted
        in ``stats()["dropped"]`` and logged; ``track`` returns ``None`` (or raises, see ``on_timeout``).
    block_timeout : float, default 0.25
        Seconds a ``track`` call waits for room in a full queue (``on_full="block"``) before it
        gives up on the event; a hung database never holds a web request longer. Offline imports
        that must not drop anything pass a large value (and check ``stats()["dropped"]``).
    on_timeout : {"drop", "raise"}, default "drop"
        What ``track`` does with an event it gave up waiting for (or that met a full queue while
        the writer is failing): return ``None``, or raise :class:`~persona.errors.StoreError`.
        Both count it in ``stats()["dropped"]``.
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
    exit_timeout : float, default 10.0
        Also how long ``close()`` without a timeout keeps retrying a failing database.
    forget_refresh : float, default 2.0
        Seconds between two reads of the store's tombstones (users forgotten by any process) by
        :meth:`is_forgotten`; a user forgotten elsewhere is a stranger here within this time.

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

    def __init__(self, target: PathLike = "persona-events.db", *, table: str = "persona_events", on_full: str = "block",
                 max_queue: int = 100_000, batch_size: int = 1000, synchronous: str = "full",
                 busy_timeout: float = 30.0, pseudonymize_key: bytes | None = None,
                 flush_at_exit: bool = True, exit_timeout: float = 10.0, block_timeout: float = 0.25,
                 on_timeout: str = "drop", forget_refresh: float = 2.0) -> None:
        if on_full not in ("block", "drop"):
            raise ParameterError(f"on_full: expected 'block' or 'drop', got {on_full!r}")
        if on_timeout not in ("drop", "raise"):
            raise ParameterError(f"on_timeout: expected 'drop' or 'raise', got {on_timeout!r}")
        for name, v in (("block_timeout", block_timeout), ("forget_refresh", forget_refresh)):
            check_number(v, name, min=0, min_open=True, expected="a finite number of seconds > 0")
        for name, v in (("max_queue", max_queue), ("batch_size", batch_size)):
            check_int(v, name, min=1, expected="a positive integer")
        if synchronous not in ("full", "normal"):
            raise ParameterError(
                f"synchronous: expected 'full' (survives power loss) or 'normal' (survives a killed "
                f"process), got {synchronous!r}"
            )
        for name, v in (("busy_timeout", busy_timeout), ("exit_timeout", exit_timeout)):
            check_number(v, name, min=0, finite=False, expected="seconds >= 0")
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
        self._on_timeout = on_timeout
        self._block_timeout = float(block_timeout)
        self._forget_refresh = float(forget_refresh)
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
        self._dead = 0  # refused by the database, kept in the dead-letter table
        self._unwritable = 0  # refused by the database, and by the dead-letter table too (logged)
        self._forgotten_dropped = 0  # events of tombstoned users, dropped at track or at write time
        self._batches = 0
        self._errors = 0
        self._error: BaseException | None = None  # the current failure; cleared by the next success
        self._failing_since: float | None = None
        self._last_progress = time.monotonic()  # when a batch last landed
        self._last_dead_log = -math.inf
        # tombstones (stored user ids) as last read from the store; None: not read yet in this process
        self._tombs: frozenset = frozenset()
        self._tombs_read: float | None = None
        self._tombs_errors = 0
        self._tombs_lock = threading.Lock()
        self._tombs_stop = threading.Event()
        self._tombs_thread: threading.Thread | None = None
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
    def track(self, user: UserId, item: ItemId, event: str, timestamp: TimePoint | None = None,
              value: float | None = None, properties: Mapping[str, Any] | None = None, *,
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
        row = self._row(user, item, event, timestamp, value, properties, event_id)
        if row[2] in self._tombs:  # known forgotten here; the writer checks the store's tombstones too
            with self._lock:
                self._forgotten_dropped += 1
            return None
        return self._enqueue(row)

    def _row(self, user, item, event, timestamp, value, properties, event_id) -> tuple:
        """The validated, encoded row of one event (raises DataError)."""
        u, u_int = _id(user, "user")
        if self._key is not None:
            u, u_int = hmac.new(self._key, u.encode("utf-8"), hashlib.sha256).hexdigest(), False
        i, i_int = _id(item, "item")
        if not isinstance(event, str) or not event or len(event) > MAX_EVENT_LENGTH:
            raise DataError(
                f"track: event expected a non-empty string of at most {MAX_EVENT_LENGTH} characters such as "
                f"'view' or 'purchase', got {event[:80] if isinstance(event, str) else event!r}"
            )
        if "\x00" in event:
            raise DataError(f"track: event {event!r} contains a NUL character; strip it")
        _utf8(event, "event")
        ts = time.time() if timestamp is None else _event_time(timestamp)
        if value is not None:
            value = check_number(value, "track: value", expected="a finite number or None", error=DataError)
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
        return (event_id, ts, u, i, event, value, props, (_USER_INT if u_int else 0) | (_ITEM_INT if i_int else 0))

    def _enqueue(self, row: tuple) -> str | None:
        """Queue an encoded row for the writer; the full-queue policy applies."""
        why = None
        with self._lock:
            if self._closed or self._closing:
                raise StoreError(f"track: the event store is closed ({self._backend.describe()}); open a new one")
            if self._thread is None:
                self._start_writer()
            if len(self._queue) >= self._max_queue:
                if self._on_full == "drop":
                    why = "on_full='drop'"
                else:
                    deadline = time.monotonic() + self._block_timeout
                    while len(self._queue) >= self._max_queue:
                        if self._closing or self._closed:
                            raise StoreError("track: the event store was closed while waiting for room")
                        left = deadline - time.monotonic()
                        if self._error is not None:
                            why = f"the writer is failing: {self._error!r}"
                            break
                        if left <= 0:
                            why = f"no room after block_timeout={self._block_timeout} s"
                            break
                        self._not_full.wait(min(0.1, left))
            if why is None:
                self._queue.append(row)
                self._accepted += 1
                self._not_empty.notify()
                return row[0]
            self._dropped += 1
            dropped = self._dropped
            now = time.monotonic()
            should_log = now - self._last_drop_log >= _DROP_LOG_EVERY
            if should_log:
                self._last_drop_log = now
                newly, self._dropped_logged = dropped - self._dropped_logged, dropped
            unwritten = self._accepted - self._done
        if should_log:
            log.warning(
                "persona.store: the event queue is full (%d events, %s); dropped %d event(s) since the last "
                "warning, %d in total (see stats()['dropped']; raise max_queue, or check the database)",
                self._max_queue, why, newly, dropped,
            )
        if self._on_timeout == "raise" and self._on_full == "block":
            raise StoreError(
                f"track: the event was not recorded: the queue is full ({self._max_queue} events, {unwritten} "
                f"unwritten) and {why}; check that {self._backend.describe()} is reachable, or raise max_queue"
            )
        return None

    def track_many(self, events: Iterable[Mapping[str, Any]]) -> list[str | None]:
        """Track several events given as dicts of :meth:`track`'s arguments; returns their event ids."""
        return [self.track(**e) for e in events]

    def import_frame(self, df: FrameLike, *, user: str = "user_id", item: str = "item_id", event: str = "event",
                     time: str | None = "timestamp", value: str | None = None, properties: str | None = None,
                     event_id: str | None = None, strict: bool = True,
                     show_progress: bool = False) -> CleaningReport:
        """Bulk-import historical events from a table (an order export, an old log).

        Every row passes the checks of :meth:`track`; rows are queued without the web-request time
        limit (the call waits for the writer as long as it takes) and the call returns once all of
        them are committed. Re-importing the same rows is harmless: without an ``event_id``
        column, each row's id is a hash of its user, item, event, time, value and properties, so
        a row already stored is stored once (exact duplicate rows of one file are one event, as
        in :meth:`persona.Interactions.from_frame`); with ``time=None`` every row is a new event.

        Parameters
        ----------
        df : pandas.DataFrame, polars.DataFrame or pyarrow.Table
            One row per event (a table that is not pandas is converted once).
        user, item, event : str
            Columns of the user id, item id and event name.
        time : str or None, default "timestamp"
            Column of event times (datetimes, ISO-8601 strings or epoch seconds); None: now.
        value, properties, event_id : str, optional
            Columns of the value, a dict of properties, and your own idempotency key.
        strict : bool, default True
            True: the first bad row raises :class:`~persona.errors.DataError` naming its position
            and nothing is imported. False: bad rows are skipped and counted per reason.
        show_progress : bool, default False
            A tqdm bar over the rows.

        Returns
        -------
        CleaningReport
            Rows read, imported (``n_kept``; already-stored duplicates are not written twice) and
            skipped per reason.

        Examples
        --------
        >>> import os, tempfile
        >>> import pandas as pd
        >>> import persona as ps
        >>> orders = pd.DataFrame({"customer": ["ann", "bob"], "sku": ["i1", "i2"],
        ...                        "at": ["2024-05-01T10:00", "2024-05-02T11:00"], "kind": ["purchase"] * 2})
        >>> with ps.EventStore(os.path.join(tempfile.mkdtemp(), "events.db")) as store:
        ...     print(store.import_frame(orders, user="customer", item="sku", time="at", event="kind"))
        ...     print(store.import_frame(orders, user="customer", item="sku", time="at", event="kind"))
        ...     store.count()
        2 of 2 events kept; none dropped
        2 of 2 events kept; none dropped
        2
        """
        from ..data.interactions import CleaningReport

        cols = self._import_columns(df, user=user, item=item, event=event, time=time, value=value,
                                    properties=properties, event_id=event_id)
        n = len(df)
        report = CleaningReport(n, 0)
        rows = []
        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="importing", unit="event")
        for k in range(n):
            try:
                vals = {name: c[k] for name, c in cols.items()}
                eid = vals.pop("event_id", None)
                if eid is None and "timestamp" in vals:  # without times, repeats are separate events
                    eid = _content_id(vals)
                rows.append(self._row(vals["user"], vals["item"], vals["event"], vals.get("timestamp"),
                                      vals.get("value"), vals.get("properties"), eid))
            except DataError as e:
                if strict:
                    raise DataError(f"import_frame: row {k} (0-based position): {e}; fix the row, or pass "
                                    "strict=False to skip bad rows and count them") from None
                report.add(str(e).split(";")[0].replace("track: ", "")[:120], 1)
            if bar is not None and (k % 10_000 == 0 or k == n - 1):
                bar.update(k + 1 - bar.n)
        if bar is not None:
            bar.close()
        live = [r for r in rows if r[2] not in self._tombs]
        report.add("forgotten user", len(rows) - len(live))
        for s in range(0, len(live), self._batch_size):
            self._enqueue_waiting(live[s:s + self._batch_size])
        self.flush()
        report.n_kept = len(live)
        if report.dropped:
            import warnings

            warnings.warn(f"import_frame: {report}", UserWarning, stacklevel=2)
        return report

    @staticmethod
    def _import_columns(df, **names) -> dict:
        """The columns :meth:`import_frame` reads, as Python lists (times as epoch seconds)."""
        import pandas as pd

        df = check_frame(df, "import_frame: df")
        missing = [c for c in names.values() if c is not None and c not in df.columns]
        if missing:
            raise DataError(f"import_frame: no column {', '.join(map(repr, missing))} in the frame; its columns "
                            f"are {list(df.columns)}; name them with user=, item=, event=, time=")
        out = {}
        for key, col in (("user", names["user"]), ("item", names["item"]), ("event", names["event"]),
                         ("timestamp", names["time"]), ("value", names["value"]),
                         ("properties", names["properties"]), ("event_id", names["event_id"])):
            if col is None:
                continue
            series = df[col]
            if key == "timestamp" and pd.api.types.is_datetime64_any_dtype(series):
                ts = series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
                values = [None if pd.isna(t) else t.timestamp() for t in ts]
            else:
                values = [None if (not isinstance(v, (dict, list)) and pd.isna(v)) else
                          (v.item() if isinstance(v, np.generic) else v) for v in series.tolist()]
            out[key] = values
        return out

    def _enqueue_waiting(self, rows: list) -> None:
        """Queue ``rows`` for the writer, waiting for room as long as it takes (bulk imports only)."""
        with self._lock:
            if self._closed or self._closing:
                raise StoreError(f"import_frame: the event store is closed ({self._backend.describe()})")
            if self._thread is None:
                self._start_writer()
            for row in rows:
                while len(self._queue) >= self._max_queue:
                    if self._error is not None:
                        raise StoreError(f"import_frame: the writer is failing ({self._error!r}); "
                                         f"{len(self._queue)} events are queued and retried")
                    self._not_full.wait(0.1)
                self._queue.append(row)
                self._accepted += 1
            self._not_empty.notify()

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
                    if not self._queue or self._abort.is_set():  # close() gave up on the rest
                        return
                    n = min(len(self._queue), self._batch_size)
                    batch = [self._queue.popleft() for _ in range(n)]
                    self._not_full.notify_all()
                # a stack of (rows, reason): rows to write, or with a reason one row to dead-letter.
                # A batch the database refuses for its data is halved until the refused rows are alone.
                parts = [(batch, None)]
                while parts:
                    rows, reason = parts[-1]
                    try:
                        with _DB_LOCK:
                            if conn is None:
                                conn = self._backend.connect()
                            if reason is None:
                                inserted, gone = self._backend.write(conn, rows)
                            else:
                                self._backend.dead_letter(conn, rows[0], reason)
                    except Exception as e:  # noqa: BLE001 -- any failure is kept, reported and retried
                        if conn is not None and self._backend.is_row_error(e):
                            parts.pop()
                            if reason is not None:
                                self._landed(rows, unwritable=e)
                            elif len(rows) > 1:
                                mid = len(rows) // 2
                                parts += [(rows[mid:], None), (rows[:mid], None)]
                            else:
                                parts.append((rows, f"{type(e).__name__}: {e}"[:2000]))
                            continue
                        with _DB_LOCK:
                            conn = _close_quietly(conn)
                        self._failed(e, len(rows))
                        if self._abort.wait(backoff):
                            return
                        backoff = min(backoff * 2, 2.0)
                        continue
                    parts.pop()
                    if reason is None:
                        self._landed(rows, inserted=inserted, gone=gone)
                    else:
                        self._landed(rows, dead=reason)
                    backoff = 0.05
        finally:
            with _DB_LOCK:
                _close_quietly(conn)

    def _failed(self, e: BaseException, n: int) -> None:
        with self._lock:
            first = self._error is None
            self._error = e
            self._errors += 1
            if first:
                self._failing_since = time.monotonic()
            pending = self._accepted - self._done
            self._progress.notify_all()
            self._not_full.notify_all()
        if first:
            log.error("persona.store: writing a batch of %d events to %s failed (%s); %d events "
                      "unwritten, retrying", n, self._backend.describe(), e, pending)

    def _landed(self, rows, *, inserted: int = 0, gone=(), dead=None, unwritable=None) -> None:
        """Count ``rows`` as done: written (``inserted`` new, ``gone`` users forgotten), dead-lettered,
        or -- refused by the dead-letter table too -- unwritable."""
        n = len(rows)
        forgotten = 0
        if gone:
            drop = set(gone)
            forgotten = sum(1 for r in rows if r[2] in drop)
        with self._lock:
            self._done += n
            self._last_progress = time.monotonic()
            if dead is not None:
                self._dead += n
            elif unwritable is not None:
                self._unwritable += n
            else:
                self._inserted += inserted
                self._forgotten_dropped += forgotten
                self._duplicates += n - inserted - forgotten
                self._batches += 1
            if self._error is not None:
                log.warning("persona.store: the writer recovered after %d failed attempt(s)", self._errors)
            self._error = None
            self._failing_since = None
            if gone:
                self._tombs = self._tombs | frozenset(gone)
            self._progress.notify_all()
            now = time.monotonic()
            tell = dead is not None and now - self._last_dead_log >= _DROP_LOG_EVERY
            if tell:
                self._last_dead_log = now
            total = self._dead
        if unwritable is not None:
            log.error("persona.store: event %r was refused by %s and could not be kept in the dead-letter table "
                      "either (%s); it is lost (stats()['unwritable'])", rows[0][0], self._backend.describe(),
                      unwritable)
        elif tell:
            log.warning("persona.store: %s refused event %r (%s); it is kept in the dead-letter table %r "
                        "(%d so far, see dead_letters()) and the events around it were written",
                        self._backend.describe(), rows[0][0], dead, self._backend.dead, total)

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event tracked so far (by any thread of this process) is committed.

        Raises
        ------
        StoreError
            The writer is failing (the message gives the error and how many events are unwritten;
            they stay queued and are retried), or ``timeout`` seconds passed first.
        """
        check_number(timeout, "flush: timeout", min=0, finite=False, allow_none=True, expected="seconds >= 0 or None")
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

        While the database fails, the writer keeps retrying: for up to ``timeout`` seconds in all,
        or (``timeout=None``) as long as events are being written, until the database has been
        failing -- or has not answered (hung) -- for ``exit_timeout`` seconds in a row. A failure
        that clears in that time loses nothing.

        Raises
        ------
        StoreError
            Some events could not be written in that time; the message gives their count. They are lost.
        """
        if self._pid != os.getpid():  # a forked child that never tracked anything of its own
            self._reset_after_fork()
        with self._lock:
            if self._closed:
                return
        check_number(timeout, "close: timeout", min=0, finite=False, allow_none=True, expected="seconds >= 0 or None")
        error = self._drain(timeout)
        with self._lock:
            self._closing = True
            self._not_empty.notify_all()
            self._not_full.notify_all()
            thread = self._thread
        if error is not None:
            self._abort.set()
        if thread is not None:
            thread.join(None if error is None else 1.0)  # a writer stuck in a hung database stays behind
        self._tombs_stop.set()
        with self._lock:
            self._closed = True
            lost = self._accepted - self._done
        _LIVE.discard(self)
        if lost:
            raise StoreError(
                f"close: {lost} event(s) could not be written to {self._backend.describe()} and are lost ({error}); "
                f"check the database, and close() with a longer timeout to retry for longer"
            )

    def _drain(self, timeout: float | None) -> str | None:
        """Wait for the writer to commit everything accepted; None, or why it stopped waiting."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._accepted
            self._last_progress = time.monotonic()  # waiting starts now
            while self._done < target:
                now = time.monotonic()
                if self._thread is None or not self._thread.is_alive():
                    return "the writer is not running"
                if deadline is not None and now >= deadline:
                    last = f": {self._error}" if self._error is not None else ""
                    return f"still unwritten after {timeout} s{last}"
                if deadline is None and self._failing_since is not None \
                        and now - self._failing_since >= self._exit_timeout:
                    return f"the database kept failing for {self._exit_timeout} s: {self._error}"
                if deadline is None and now - self._last_progress >= self._exit_timeout:
                    return f"the database did not take a batch for {self._exit_timeout} s (hung or locked)"
                self._progress.wait(0.1 if deadline is None else max(0.0, min(0.1, deadline - now)))
        return None

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
        already stored), ``dropped`` (not recorded because the queue was full: ``on_full="drop"``, or
        ``block_timeout`` passed), ``dead_lettered`` (refused by the database, kept in the dead-letter
        table), ``unwritable`` (refused by the dead-letter table too; logged), ``forgotten`` (events of
        forgotten users, dropped), ``pending`` (accepted but not yet done), ``batches``, ``errors``
        (failed write attempts), ``last_error`` and ``tombstones`` (forgotten users known here).
        ``tracked == written + duplicates + dead_lettered + unwritable + forgotten(at write) + pending``.
        """
        with self._lock:
            return {
                "tracked": self._accepted,
                "written": self._inserted,
                "duplicates": self._duplicates,
                "dropped": self._dropped,
                "dead_lettered": self._dead,
                "unwritable": self._unwritable,
                "forgotten": self._forgotten_dropped,
                "pending": self._accepted - self._done,
                "queued": len(self._queue),
                "batches": self._batches,
                "errors": self._errors,
                "last_error": None if self._error is None else repr(self._error),
                "tombstones": len(self._tombs),
                "tombstone_errors": self._tombs_errors,
            }

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"EventStore({self._backend.describe()}, {state})"

    # ------------------------------------------------------------------------------- privacy
    @property
    def pseudonymizes(self) -> bool:
        """Whether user ids are stored as pseudonyms (a ``pseudonymize_key`` was given)."""
        return self._key is not None

    def pseudonym(self, user: UserId) -> UserId:
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

    def forget_user(self, user: UserId) -> int:
        """Forget ``user`` for good; return the number of stored events deleted.

        ``user`` is the raw id in any form it was tracked in (``7`` and ``"7"`` are one user; with
        ``pseudonymize_key`` the pseudonym is what is recorded). In one transaction a tombstone is
        recorded in the store's ``<table>_forgotten`` table and the user's events and dead letters
        are deleted. From then on every process's writer drops the user's events at write time
        (also those already queued in other workers), every read (``events``, ``interactions``,
        ``export``, ``count``) leaves the user out, and :meth:`is_forgotten` -- which services
        over this store consult -- says so within ``forget_refresh`` seconds everywhere.
        """
        stored = self._stored_user(user)
        if self._thread is not None and not self._closed and self._pid == os.getpid():
            try:  # so that the count includes this process's queued events; the tombstone covers them anyway
                self.flush(timeout=self._backend.busy_timeout)
            except StoreError:
                pass
        with _DB_LOCK:
            conn = self._backend.connect()
        try:
            with _DB_LOCK:
                n = int(self._backend.forget(conn, stored))
        finally:
            with _DB_LOCK:
                conn.close()
        with self._lock:
            self._tombs = self._tombs | {stored}
        return n

    def is_forgotten(self, user: UserId) -> bool:
        """Whether ``user`` (raw id, any form) was forgotten, by any process, as of the last read.

        Cheap enough for every request: a set lookup. The first call in a process starts a
        background thread that reads the store's tombstones at once (the call waits for that read,
        at most one second) and then every ``forget_refresh`` seconds. If the database cannot be
        read, the tombstones known so far answer (``stats()["tombstone_errors"]``, logged) and the
        read is retried.
        """
        try:
            stored = self._stored_user(user)
        except DataError:
            return False  # not an id the store could hold
        if self._tombs_thread is None:
            self._start_tombstones()
        return stored in self._tombs

    def _start_tombstones(self) -> None:
        with self._tombs_lock:
            if self._tombs_thread is None and not self._closed:
                ready = threading.Event()
                self._tombs_stop = threading.Event()
                self._tombs_thread = threading.Thread(target=self._watch_tombstones, args=(self._tombs_stop, ready),
                                                      name="persona-store-tombstones", daemon=True)
                self._tombs_thread.start()
                # the first answer of a process must know the users forgotten before it started;
                # a database that does not answer within a second does not hold the request longer
                if not ready.wait(1.0):
                    log.error("persona.store: reading the forgotten users of %s takes over 1 s; answering with "
                              "the %d known so far until it succeeds", self._backend.describe(), len(self._tombs))

    def _watch_tombstones(self, stop: threading.Event, ready: threading.Event) -> None:
        conn = None
        try:
            while True:
                try:
                    with _DB_LOCK:
                        if conn is None:
                            conn = self._backend.connect()
                        ids = self._backend.tombstones(conn, len(self._tombs))
                    if ids is not None:
                        with self._lock:
                            # a union: a tombstone known here stays, even if a refresh raced a forget
                            self._tombs = self._tombs | frozenset(ids)
                    self._tombs_read = time.monotonic()
                except Exception as e:  # noqa: BLE001 -- a request must not fail because of it
                    with _DB_LOCK:
                        conn = _close_quietly(conn)
                    with self._lock:
                        self._tombs_errors += 1
                        first = self._tombs_errors == 1
                    (log.error if first else log.debug)(
                        "persona.store: cannot read the forgotten users of %s (%s); using the %d known so far",
                        self._backend.describe(), e, len(self._tombs))
                ready.set()
                if stop.wait(self._forget_refresh):
                    return
        finally:
            ready.set()
            with _DB_LOCK:
                _close_quietly(conn)

    def dead_letters(self, limit: int = 1000) -> list[dict]:
        """The newest events the database refused (newest first): ``at`` (epoch seconds), ``event_id``,
        ``user`` (as stored), ``row`` (the event as JSON text) and ``reason``.

        Inspect them, fix what is wrong and ``track`` them again (with the same ``event_id``), then
        delete them from the ``<table>_dead`` table with SQL.
        """
        check_int(limit, "dead_letters: limit", min=1, expected="a positive integer")
        conn = self._backend.connect()
        try:
            rows = self._backend.dead_letters(conn, int(limit))
        finally:
            conn.close()
        return [{"seq": q, "at": a, "event_id": e, "user": u, "row": r, "reason": why} for q, a, e, u, r, why in rows]

    # ----------------------------------------------------------------------------- reading
    def _where(self, since, until, event_types, user=None, conn=None) -> tuple[str, list]:
        """The WHERE clause; rows of forgotten users are left out when ``conn`` sees any tombstone."""
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
        forgotten = conn is None or self._backend.has_tombstones(conn)
        return self._backend.where(s, u, event_types, stored, forgotten=forgotten)

    def count(self, since: TimePoint | None = None, until: TimePoint | None = None,
              event_types: str | Iterable[str] | None = None, *,
              user: UserId | None = None) -> int:
        """Number of stored events (of all processes) in ``[since, until)``, of ``event_types``, of ``user``."""
        self._where(since, until, event_types, user)  # bad arguments fail before connecting
        conn = self._backend.connect()
        try:
            return self._backend.count(conn, *self._where(since, until, event_types, user, conn))
        finally:
            conn.close()

    def event_counts(self, since: TimePoint | None = None, until: TimePoint | None = None,
                     event_types: str | Iterable[str] | None = None,
                     *, user: UserId | None = None) -> dict[str, int]:
        """Stored events per event name (of all processes) in ``[since, until)``, most frequent first.

        >>> import os, tempfile
        >>> import persona as ps
        >>> with ps.EventStore(os.path.join(tempfile.mkdtemp(), "events.db")) as store:
        ...     _ = [store.track("ann", "i1", e, timestamp=1.7e9) for e in ("view", "view", "add_to_cart")]
        ...     store.flush()
        ...     store.event_counts()
        {'view': 2, 'add_to_cart': 1}
        """
        self._where(since, until, event_types, user)  # bad arguments fail before connecting
        conn = self._backend.connect()
        try:
            counts = self._backend.event_counts(conn, *self._where(since, until, event_types, user, conn))
        finally:
            conn.close()
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def _scan(self, since, until, event_types, user=None, chunk_size: int = 100_000):
        """(total, users_all_int, items_all_int, chunk iterator) from one consistent snapshot."""
        self._where(since, until, event_types, user)  # bad arguments fail before connecting
        conn = self._backend.connect()
        try:
            with self._backend.snapshot(conn):
                where, params = self._where(since, until, event_types, user, conn)
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
        cols["ts"] = _floats(cols["ts"])
        if users_int:
            cols["user"] = _ints(cols["user"], "user")
        if items_int:
            cols["item"] = _ints(cols["item"], "item")
        return cols

    def events(self, since: TimePoint | None = None, until: TimePoint | None = None,
               event_types: str | Iterable[str] | None = None, *,
               user: UserId | None = None) -> pd.DataFrame:
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
                {"time": "datetime64[us, UTC]", "value": "float64"})
        us, bad = _micros(cols["ts"])
        if bad.any():
            _warn_times("events()", cols["event_id"], bad)
        return pd.DataFrame({
            "event_id": cols["event_id"],
            "time": pd.Series(us.view("datetime64[us]")).dt.tz_localize("UTC"),
            "user": cols["user"],
            "item": cols["item"],
            "event": cols["event"],
            "value": pd.to_numeric(pd.Series(cols["value"], dtype=object), errors="coerce").astype("float64"),
            "properties": [_json_or_text(p) for p in cols["properties"]],
        })

    def interactions(self, since: TimePoint | None = None, until: TimePoint | None = None,
                     event_types: str | Iterable[str] | None = None,
                     weights: Mapping[str, float] | None = None, *, values: bool = False,
                     **options: Any) -> Interactions:
        """The stored events as :class:`~persona.Interactions`, for (incremental) training.

        Parameters
        ----------
        since, until : datetime, ISO-8601 string or epoch seconds, optional
            Keep events with ``since <= time < until`` (event time, UTC).
        event_types : list of str, optional
            Event types to read. Default: the types that have a weight -- the built-in ``view``,
            ``click``, ``cart``, ``purchase``, ``search`` plus the keys of ``weights`` -- so marketing
            feedback (``impression``, ``send``, ...) stays out unless named and weighted; the events
            of every other type are counted per name in the result's ``report`` (reason "event type
            without a weight") and a warning names them. With ``default_weight=`` or ``weight=`` in
            ``options``, every type is read.
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

        unweighted: dict[str, int] = {}
        if event_types is None and options.get("default_weight") is None and options.get("weight") is None:
            event_types = list(dict.fromkeys([*DEFAULT_WEIGHTS, *(weights or {})]))
            # the types left out for want of a weight are named and counted, never dropped silently
            unweighted = {e: n for e, n in self.event_counts(since, until).items() if e not in event_types}
        cols = self._columns(since, until, event_types)
        if cols is None:
            raise DataError(
                f"no stored events match (since={since!r}, until={until!r}, event_types={event_types!r}) in "
                f"{self._backend.describe()}; track events first or widen the selection"
            )
        df = pd.DataFrame({"user": cols["user"], "item": cols["item"], "time": cols["ts"], "event": cols["event"]})
        if values:
            df["value"] = pd.to_numeric(pd.Series(cols["value"], dtype=object), errors="coerce").astype("float64")
        _, bad = _micros(cols["ts"])
        if bad.any():  # a row written behind persona's back: one odd row must not stop training
            _warn_times("interactions()", cols["event_id"], bad, "left out")
            df = df[~bad].reset_index(drop=True)
        inter = from_frame(df, user="user", item="item", time="time", event="event",
                           value="value" if values else None, weights=weights, **options)
        if unweighted:
            _report_unweighted(inter.report, unweighted)
        return inter

    def export(self, path: PathLike, since: TimePoint | None = None, until: TimePoint | None = None,
               event_types: str | Iterable[str] | None = None, *,
               chunk_size: int = 100_000) -> int:
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
        check_int(chunk_size, "export: chunk_size", min=1, expected="a positive integer")
        if kind == "parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError:
                raise ImportError("exporting Parquet needs pyarrow, which is not installed; pip install pyarrow, "
                                  "or export to .csv") from None
        tmp = f"{p}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        total = 0
        odd = []  # event ids whose time cannot be written as a time
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
                        writer.write_table(_arrow_chunk(pa, schema, chunk, users_int, items_int, odd))
                        total += len(chunk)
            else:
                import csv
                import gzip

                opener = gzip.open if low.endswith(".gz") else open
                with opener(tmp, "wt", newline="", encoding="utf-8") as f:
                    w = csv.writer(f)
                    w.writerow(["event_id", "time", "user", "item", "event", "value", "properties"])
                    for chunk in scan:
                        w.writerows((e, _iso(t, e, odd), u, i, ev, "" if v is None else repr(v),
                                     "" if pr is None else pr)
                                    for e, t, u, i, ev, v, pr, _ in chunk)
                        total += len(chunk)
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        if odd:
            _warn_times("export()", odd, None, "written without a time")
        return total


_ISO_MIN, _ISO_MAX = -62135596800.0, 253402300800.0  # what datetime can write: years 1 to 9999
_US_LIMIT = 9.2e12  # seconds that fit in int64 microseconds (about 290,000 years either way)


def _floats(ts) -> np.ndarray:
    """Times as float seconds; NaN where a row holds something else (SQLite keeps any type)."""
    try:
        return np.asarray(ts, dtype="float64")
    except (TypeError, ValueError):
        out = np.empty(len(ts))
        for k, t in enumerate(ts):
            try:
                out[k] = float(t)
            except (TypeError, ValueError):
                out[k] = math.nan
        return out


def _ints(ids, what: str) -> list:
    try:
        return [int(x) for x in ids]
    except (TypeError, ValueError):  # a row marked as an int id that is not one: read them all as text
        log.warning("persona.store: a stored %s id marked as an integer is not one; reading %s ids as text", what, what)
        return [str(x) for x in ids]


def _micros(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 microseconds (NaT's value where not representable) and the mask of those rows."""
    bad = ~(np.isfinite(ts) & (np.abs(ts) < _US_LIMIT))
    us = np.round(np.where(bad, 0.0, ts) * 1e6).astype("int64")
    us[bad] = np.iinfo("int64").min  # NaT
    return us, bad


def _json_or_text(p):
    if p is None:
        return None
    try:
        return json.loads(p)
    except (TypeError, ValueError):  # written behind persona's back: give it as it is
        return p


def _warn_times(where: str, ids, bad, what: str = "read as NaT") -> None:
    odd = list(ids) if bad is None else [e for e, b in zip(ids, bad) if b]
    log.warning("persona.store: %s: %d event(s) hold a time that is not a representable time and were %s "
                "(first: %s); they were not written by this persona's track(), which refuses such times",
                where, len(odd), what, odd[:5])


def _content_id(vals: dict) -> str:
    """A deterministic event id for an imported row: the same row always gets the same id."""
    text = json.dumps([vals.get(k) for k in ("user", "item", "event", "timestamp", "value", "properties")],
                      default=str, sort_keys=True, ensure_ascii=True)
    return "imp-" + hashlib.sha256(text.encode("ascii")).hexdigest()[:40]


def _report_unweighted(report, unweighted: dict[str, int]) -> None:
    """Count the events ``interactions()`` left out for want of a weight in ``report``, and warn once."""
    import warnings

    names = ", ".join(f"{e!r} {n}" for e, n in unweighted.items())
    n = sum(unweighted.values())
    report.n_input += n
    report.add("event type without a weight", n)
    report.notes.append(f"left out event types without a weight: {names}; give them one with weights="
                        "{name: w} (or event_types=[...] with default_weight=) to train on them")
    warnings.warn(f"interactions(): left out {n} events of types without a weight ({names}); pass "
                  "weights={name: w} to train on them, or event_types=[...] to choose the types deliberately",
                  UserWarning, stacklevel=3)


def _iso(t, event_id, odd: list) -> str:
    try:
        v = float(t)
        if _ISO_MIN <= v < _ISO_MAX:
            return _dt.datetime.fromtimestamp(v, _dt.timezone.utc).isoformat(timespec="microseconds")
    except (TypeError, ValueError, OverflowError, OSError):
        pass
    odd.append(event_id)
    return ""


def _arrow_chunk(pa, schema, chunk, users_int: bool, items_int: bool, odd: list):
    e, t, u, i, ev, v, p, _ = zip(*chunk)
    us, bad = _micros(_floats(t))
    if bad.any():
        odd += [x for x, b in zip(e, bad) if b]
    return pa.Table.from_arrays([
        pa.array(e, pa.string()),
        pa.array(us, pa.int64(), mask=bad).cast(pa.timestamp("us", tz="UTC")),
        pa.array(_ints(u, "user"), pa.int64()) if users_int else pa.array([str(x) for x in u], pa.string()),
        pa.array(_ints(i, "item"), pa.int64()) if items_int else pa.array([str(x) for x in i], pa.string()),
        pa.array(ev, pa.string()),
        pa.array(_floats_or_none(v), pa.float64()),
        pa.array(p, pa.string()),
    ], schema=schema)


def _floats_or_none(v) -> list:
    """Values as floats or None (a non-number a row holds becomes None)."""
    out = []
    for x in v:
        try:
            out.append(None if x is None else float(x))
        except (TypeError, ValueError):
            out.append(None)
    return out


def _close_quietly(conn) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 -- the connection is already broken
            pass
    return None
