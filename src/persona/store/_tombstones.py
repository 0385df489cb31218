"""The forgotten users (tombstones) an :class:`~persona.store.EventStore` knows in this process.

A set of stored user ids, read from the store's ``<table>_forgotten`` table by a background thread
(started by the first :meth:`Tombstones.watch`) every ``refresh`` seconds, and grown by this
process's own ``forget_user`` and by the writer when the database drops a forgotten user's events.
The set only grows: a tombstone known here stays, even if a refresh raced a forget.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Iterable

from ._writer import close_quietly, db_lock

if TYPE_CHECKING:
    from .backends import Backend

__all__ = ["Tombstones"]

log = logging.getLogger("persona.store")


class Tombstones:
    """The stored ids of forgotten users, as last read; ``user in tombstones`` is a set lookup."""

    def __init__(self, backend: Backend, *, refresh: float) -> None:
        self._backend = backend
        self._refresh = refresh
        self._stopped = False
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()  # guards updates of the set and the error count
        self._start_lock = threading.Lock()  # held while the first read is awaited
        self._known: frozenset = frozenset()
        self._read: float | None = None  # when last read from the store; None: not yet in this process
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reset_after_fork(self) -> None:
        # a forked child has no watcher thread, and its locks may have been held at the fork
        self._init_state()

    def __contains__(self, stored_user) -> bool:
        return stored_user in self._known

    def __len__(self) -> int:
        return len(self._known)

    def add(self, stored_users: Iterable) -> None:
        with self._lock:
            self._known = self._known | frozenset(stored_users)

    def forget(self, stored_user: str) -> int:
        """Record a tombstone in the store and delete the user's events; the number deleted."""
        with db_lock():
            conn = self._backend.connect()
        try:
            with db_lock():
                n = int(self._backend.forget(conn, stored_user))
        finally:
            with db_lock():
                conn.close()
        self.add((stored_user,))
        return n

    def stop(self) -> None:
        """Stop the watcher thread (if any) and start none again."""
        self._stopped = True
        self._stop.set()

    def watch(self) -> None:
        """Start the watcher thread once, and wait (at most a second) for its first read."""
        if self._thread is not None:  # the per-request path: no lock
            return
        with self._start_lock:
            if self._thread is not None or self._stopped:
                return
            ready = threading.Event()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(self._stop, ready),
                                            name="persona-store-tombstones", daemon=True)
            self._thread.start()
            # the first answer of a process must know the users forgotten before it started (callers
            # racing this one wait on the lock); a database that does not answer within a second does
            # not hold the request longer
            if not ready.wait(1.0):
                log.error("persona.store: reading the forgotten users of %s takes over 1 s; answering with "
                          "the %d known so far until it succeeds", self._backend.describe(), len(self._known))

    def _run(self, stop: threading.Event, ready: threading.Event) -> None:
        conn = None
        try:
            while True:
                try:
                    with db_lock():
                        if conn is None:
                            conn = self._backend.connect()
                        ids = self._backend.tombstones(conn, len(self._known))
                    if ids is not None:
                        self.add(ids)
                    self._read = time.monotonic()
                except Exception as e:  # noqa: BLE001 -- a request must not fail because of it
                    with db_lock():
                        conn = close_quietly(conn)
                    with self._lock:
                        self.errors += 1
                        first = self.errors == 1
                    (log.error if first else log.debug)(
                        "persona.store: cannot read the forgotten users of %s (%s); using the %d known so far",
                        self._backend.describe(), e, len(self._known))
                ready.set()
                if stop.wait(self._refresh):
                    return
        finally:
            ready.set()
            with db_lock():
                close_quietly(conn)
