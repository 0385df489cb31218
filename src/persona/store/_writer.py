"""The writer behind an :class:`~persona.store.EventStore`: a bounded queue, one background thread per
store and process draining it in batches, dead letters, ``flush`` / ``close``, and the process
lifecycle (flush at exit, a fresh writer in a forked child).

The guarantees are those of :mod:`persona.store.events`; this module keeps them.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING

from .._validate import check_number
from ..errors import StoreError
from .backends import ImpressionRow

if TYPE_CHECKING:
    from ._retention import Retention
    from ._tombstones import Tombstones
    from .backends import Backend

__all__ = ["Writer", "db_lock", "close_quietly", "watch_process", "unwatch_process"]

log = logging.getLogger("persona.store")

_DROP_LOG_EVERY = 10.0  # seconds between two warnings about dropped (or dead-lettered) events


# ------------------------------------------------------------------------------ process lifecycle
# Held by a writer for each database operation, and by a thread that forks, so that a fork never
# happens in the middle of one: a child inheriting the database library's state mid-operation
# (SQLite's per-process lock bookkeeping, a global mutex) could wait forever on a lock no thread
# of its own holds.
_DB_LOCK = threading.Lock()

# the open stores of this process: each has ``_at_exit()`` and ``_reset_after_fork()``
_LIVE: weakref.WeakSet = weakref.WeakSet()


def db_lock() -> threading.Lock:
    """The lock around every database operation (looked up per use: a forked child replaces it)."""
    return _DB_LOCK


def watch_process(store) -> None:
    """Flush ``store`` at interpreter exit and reset it in a forked child, until :func:`unwatch_process`."""
    _LIVE.add(store)


def unwatch_process(store) -> None:
    _LIVE.discard(store)


def _flush_all_at_exit() -> None:
    for store in list(_LIVE):
        try:
            store._at_exit()
        except Exception as e:  # noqa: BLE001 -- at exit there is no caller left to raise to
            log.error("persona.store: at exit, %s", e)


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


def close_quietly(conn) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 -- the connection is already broken
            pass
    return None


# ------------------------------------------------------------------------------------ the writer
class Writer:
    """The queue of encoded rows and the thread that commits them, with the counters of ``stats()``.

    A row is the tuple :meth:`EventStore._row` builds: ``(event_id, ts, user, item, event, value,
    properties, int_flags)``, or an :class:`~persona.store.backends.ImpressionRow` (what a service
    showed; its key and user id sit at the same places). ``tombstones`` learns the users the
    database reports forgotten at write time.
    """

    def __init__(self, backend: Backend, tombstones: Tombstones, *, on_full: str, on_timeout: str,
                 block_timeout: float, max_queue: int, batch_size: int, exit_timeout: float,
                 retention: Retention | None = None) -> None:
        self._backend = backend
        self._tombstones = tombstones
        self._retention = retention  # purges between batches when one is due (EventStore(retention_days=))
        self._on_full = on_full
        self._on_timeout = on_timeout
        self._block_timeout = block_timeout
        self._max_queue = max_queue
        self.batch_size = batch_size
        self._exit_timeout = exit_timeout
        self._closed = False
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)  # the writer waits for events
        self._not_full = threading.Condition(self._lock)  # blocked track() calls wait for room
        self._progress = threading.Condition(self._lock)  # flush() waits for batches to land
        self._queue: deque = deque()
        self._accepted = 0  # rows accepted by track and log_impression (the flush target)
        self._done = 0  # rows whose batch committed (new or duplicate)
        self._impressions = 0  # impression rows among the accepted ones
        self._impressions_written = 0
        self._impressions_dropped = 0  # impressions not queued: the queue was full
        self._impressions_forgotten = 0  # impressions of forgotten users, dropped
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
        self._closing = False
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_drop_log = -math.inf
        self._dropped_logged = 0
        self._pid = os.getpid()

    def reset_after_fork(self) -> None:
        # the parent's queue and writer belong to the parent (which still writes them); the child's
        # locks may have been held by a parent thread at the fork, so everything starts afresh
        self._init_state()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def forked(self) -> bool:
        """Whether this object was made in another process (a fork the hooks did not reset)."""
        return self._pid != os.getpid()

    @property
    def started(self) -> bool:
        """Whether this process's writer thread was started and the store is open."""
        return self._thread is not None and not self._closed and not self.forked

    # ------------------------------------------------------------------------------- queueing
    def count_forgotten(self, impression: bool = False) -> None:
        """Count an event ``track`` (or an impression) dropped because its user is known to be forgotten."""
        with self._lock:
            if impression:
                self._impressions_forgotten += 1
            else:
                self._forgotten_dropped += 1

    def put(self, row: tuple) -> str | None:
        """Queue an encoded row for the writer; the full-queue policy applies."""
        with self._lock:
            if self._closed or self._closing:
                raise StoreError(f"track: the event store is closed ({self._backend.describe()}); open a new one")
            if self._thread is None:
                self._start()
            if len(self._queue) >= self._max_queue and type(row) is ImpressionRow:
                # an impression never holds a request up: with the queue full it is dropped at once
                self._impressions_dropped += 1
                return None
            why = self._wait_for_room() if len(self._queue) >= self._max_queue else None
            if why is None:
                self._queue.append(row)
                self._accepted += 1
                if type(row) is ImpressionRow:
                    self._impressions += 1
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

    def _wait_for_room(self) -> str | None:
        """With the lock held and the queue full: None once there is room, else why the event is dropped."""
        if self._on_full == "drop":
            return "on_full='drop'"
        deadline = time.monotonic() + self._block_timeout
        while len(self._queue) >= self._max_queue:
            if self._closing or self._closed:
                raise StoreError("track: the event store was closed while waiting for room")
            left = deadline - time.monotonic()
            if self._error is not None:
                return f"the writer is failing: {self._error!r}"
            if left <= 0:
                return f"no room after block_timeout={self._block_timeout} s"
            self._not_full.wait(min(0.1, left))
        return None

    def put_waiting(self, rows: list) -> None:
        """Queue ``rows`` for the writer, waiting for room as long as it takes (bulk imports only)."""
        with self._lock:
            if self._closed or self._closing:
                raise StoreError(f"import_frame: the event store is closed ({self._backend.describe()})")
            if self._thread is None:
                self._start()
            for row in rows:
                while len(self._queue) >= self._max_queue:
                    if self._error is not None:
                        raise StoreError(f"import_frame: the writer is failing ({self._error!r}); "
                                         f"{len(self._queue)} events are queued and retried")
                    self._not_full.wait(0.1)
                self._queue.append(row)
                self._accepted += 1
            self._not_empty.notify()

    # --------------------------------------------------------------------------- the thread
    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="persona-store-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = None
        backoff = 0.05
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if not batch:  # nothing to write, but a purge is due
                    conn = self._purge_step(conn)
                    continue
                # a stack of (rows, reason): rows to write, or with a reason one row to dead-letter.
                # A batch the database refuses for its data is halved until the refused rows are alone.
                parts = [(batch, None)]
                while parts:
                    rows, reason = parts[-1]
                    try:
                        with db_lock():
                            if conn is None:
                                conn = self._backend.connect()
                            if reason is None:
                                inserted, gone, shown = self._backend.write(conn, rows)
                            else:
                                self._backend.dead_letter(conn, rows[0], reason)
                    except Exception as e:  # noqa: BLE001 -- any failure is kept, reported and retried
                        if conn is not None and self._backend.is_row_error(e):
                            self._isolate(parts, e)
                            continue
                        with db_lock():
                            conn = close_quietly(conn)
                        self._failed(e, len(rows))
                        if self._abort.wait(backoff):
                            return
                        backoff = min(backoff * 2, 2.0)
                        continue
                    parts.pop()
                    if reason is None:
                        self._landed(rows, inserted=inserted, gone=gone, shown=shown)
                    else:
                        self._landed(rows, dead=reason)
                    backoff = 0.05
                conn = self._purge_step(conn)
        finally:
            with db_lock():
                close_quietly(conn)

    def _purge_step(self, conn):
        """One bounded step of a due purge between two batches (see :mod:`persona.store._retention`);
        the connection to go on with. Never raises: a failed purge is counted and retried later."""
        retention = self._retention
        if retention is None or retention.wait() != 0.0 or self._closing:
            return conn
        try:
            with db_lock():
                if conn is None:
                    conn = self._backend.connect()
                retention.step(conn)
        except Exception as e:  # noqa: BLE001 -- the database is unreachable: the writer retries its batches
            with db_lock():
                conn = close_quietly(conn)
            retention.failed(e)
        return conn

    def _next_batch(self) -> list | None:
        """Wait for events and take up to ``batch_size`` of them; None: stop (closing, or close gave up);
        an empty list: no events came but a purge is due."""
        with self._lock:
            while not self._queue and not self._closing:
                wait = None if self._retention is None else self._retention.wait()
                if wait == 0.0:
                    return []
                self._not_empty.wait(wait)
            if not self._queue or self._abort.is_set():  # close() gave up on the rest
                return None
            n = min(len(self._queue), self.batch_size)
            batch = [self._queue.popleft() for _ in range(n)]
            self._not_full.notify_all()
        return batch

    def _isolate(self, parts: list, e: BaseException) -> None:
        """The database refused the top of ``parts`` for its data: halve it, or dead-letter its one row
        (and count that row unwritable when the dead-letter table refuses it too)."""
        rows, reason = parts.pop()
        if reason is not None:
            self._landed(rows, unwritable=e)
        elif len(rows) > 1:
            mid = len(rows) // 2
            parts += [(rows[mid:], None), (rows[:mid], None)]
        else:
            parts.append((rows, f"{type(e).__name__}: {e}"[:2000]))

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

    def _landed(self, rows, *, inserted: int = 0, gone=(), dead=None, unwritable=None, shown: int = 0) -> None:
        """Count ``rows`` as done: written (``inserted`` new events, ``shown`` new impressions, ``gone``
        users forgotten), dead-lettered, or -- refused by the dead-letter table too -- unwritable."""
        n = len(rows)
        forgotten = forgotten_shown = 0
        if gone:
            drop = set(gone)
            for r in rows:
                if r[2] in drop:
                    if type(r) is ImpressionRow:
                        forgotten_shown += 1
                    else:
                        forgotten += 1
        with self._lock:
            self._done += n
            self._last_progress = time.monotonic()
            if dead is not None:
                self._dead += n
            elif unwritable is not None:
                self._unwritable += n
            else:
                self._inserted += inserted
                self._impressions_written += shown
                self._forgotten_dropped += forgotten
                self._impressions_forgotten += forgotten_shown
                self._duplicates += n - inserted - shown - forgotten - forgotten_shown
                self._batches += 1
            if self._error is not None:
                log.warning("persona.store: the writer recovered after %d failed attempt(s)", self._errors)
            self._error = None
            self._failing_since = None
            if gone:
                self._tombstones.add(gone)
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

    # ------------------------------------------------------------------------ flush and close
    def flush(self, timeout: float | None = None) -> None:
        """Block until every event accepted so far is committed (see :meth:`EventStore.flush`)."""
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

    def close(self, timeout: float | None) -> None:
        """Drain, stop the thread and mark the writer closed (see :meth:`EventStore.close`).

        Raises StoreError with the number of events lost when some could not be written in time."""
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
        with self._lock:
            self._closed = True
            lost = self._accepted - self._done
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

    def stats(self) -> dict:
        """The writer's counters, in the order and with the names of :meth:`EventStore.stats`."""
        with self._lock:
            return {
                "tracked": self._accepted - self._impressions,
                "impressions": self._impressions,
                "written": self._inserted,
                "impressions_written": self._impressions_written,
                "impressions_dropped": self._impressions_dropped,
                "impressions_forgotten": self._impressions_forgotten,
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
            }
