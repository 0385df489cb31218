"""Retention: deleting what an :class:`~persona.store.EventStore` holds past its window.

A purge deletes the events and impressions whose time (event time, time shown) is before a cutoff,
and the dead letters recorded before it, in bounded steps: each step is one transaction deleting at
most ``step_rows`` rows per table, so a purge of millions of rows never holds the database's write
lock for long. Two ways to run it:

* on a schedule (``EventStore(retention_days=N)``): the store's writer thread runs one step between
  two batches whenever a purge is due (every ``purge_every`` seconds, and step after step until the
  window is clean). ``track`` only queues, so a request never waits for it;
* at once (``store.purge(...)``, ``persona purge``, a cron job), in the caller's thread.

Consent records and tombstones are kept: they are what proves consent and what keeps a forgotten
user forgotten.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import threading
import time
from typing import TYPE_CHECKING

from .._time import to_epoch
from ..errors import ParameterError, StoreError

if TYPE_CHECKING:
    from .backends import Backend

__all__ = ["Retention", "cutoff_of", "TABLES"]

log = logging.getLogger("persona.store")

#: what a purge deletes, as the keys of its counts
TABLES = ("events", "impressions", "dead_letters")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(w|d|h|m|s)\s*$", re.IGNORECASE)
_UNIT = {"w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def window_seconds(older_than, what: str = "older_than") -> float:
    """A retention window in seconds: a ``timedelta``, a number of **days**, or text such as ``"90d"``,
    ``"36h"``, ``"2w"``, ``"30m"``, ``"45s"``."""
    if isinstance(older_than, _dt.timedelta):
        seconds = older_than.total_seconds()
    elif isinstance(older_than, str):
        m = _DURATION.match(older_than)
        if m is None:
            raise ParameterError(f"{what}: expected a duration such as '90d', '36h', '2w', '30m' or '45s', got "
                                 f"{older_than!r}; or pass before= with a date")
        seconds = float(m.group(1)) * _UNIT[m.group(2).lower()]
    elif isinstance(older_than, (int, float)) and not isinstance(older_than, bool):
        seconds = float(older_than) * 86400.0
    else:
        raise ParameterError(f"{what}: expected a number of days, a timedelta or a duration such as '90d', got "
                             f"{type(older_than).__name__} {older_than!r}")
    if not seconds == seconds or seconds <= 0 or seconds == float("inf"):  # NaN, <= 0, inf
        raise ParameterError(f"{what}: expected a window longer than zero, got {older_than!r}; a purge keeps "
                             f"what is younger than the window")
    return seconds


def cutoff_of(older_than=None, before=None, default_days: float | None = None, now: float | None = None) -> float:
    """The purge cutoff in epoch seconds: ``before`` (a time point) or now minus ``older_than``
    (else minus the store's ``retention_days``)."""
    if older_than is not None and before is not None:
        raise ParameterError("purge: pass older_than= (a window) or before= (a time), not both")
    if before is not None:
        return to_epoch(before, "purge: before", error=ParameterError, hint="; pass a date, an ISO text or epoch "
                                                                            "seconds")
    if older_than is None:
        if default_days is None:
            raise ParameterError("purge: no window; pass older_than= (e.g. '90d') or before= (a date), or open the "
                                 "store with retention_days=")
        older_than = default_days
    return (time.time() if now is None else now) - window_seconds(older_than, "purge: older_than")


class Retention:
    """The purge schedule of one store in this process, and the counts of what was purged.

    ``days`` None: no schedule (``purge()`` still works). The writer thread asks :meth:`wait` how
    long it may sleep, and calls :meth:`step` on its own connection when a purge is due.
    """

    def __init__(self, backend: Backend, *, days: float | None, every: float, step_rows: int) -> None:
        self._backend = backend
        self.days = days
        self.every = every
        self.step_rows = step_rows
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._due = time.monotonic()  # the first purge comes with the writer's first batch
        self._cutoff: float | None = None  # the cutoff of the scheduled purge under way
        self._started = 0.0
        self._run: dict = dict.fromkeys(TABLES, 0)  # what the purge under way deleted so far
        self.totals = dict.fromkeys(TABLES, 0)
        self.runs = 0
        self.errors = 0
        self.last: dict | None = None  # the last completed purge: counts, cutoff, when, seconds

    def reset_after_fork(self) -> None:
        # a forked child purges on its own schedule (its locks may have been held at the fork)
        self._init_state()

    # ------------------------------------------------------------------------------ schedule
    def wait(self) -> float | None:
        """Seconds until the next scheduled step (0: now); None without a schedule."""
        if self.days is None:
            return None
        return max(0.0, self._due - time.monotonic())

    def step(self, conn) -> None:
        """One bounded step of the scheduled purge on the writer's connection (never raises)."""
        if self.days is None or time.monotonic() < self._due:
            return
        if self._cutoff is None:
            self._cutoff = time.time() - self.days * 86400.0
            self._started = time.monotonic()
        try:
            counts = self._backend.purge(conn, self._cutoff, self.step_rows)
        except Exception as e:  # noqa: BLE001 -- a failed purge must not stop the writer; the next one retries
            self.failed(e)
            return
        self._add(counts, self._run)
        if any(counts[t] >= self.step_rows for t in TABLES):
            return  # more to delete: the next step comes after the next batch
        self._finish(self._run, self._cutoff, time.monotonic() - self._started, scheduled=True)
        self._cutoff = None
        self._run = dict.fromkeys(TABLES, 0)
        self._due = time.monotonic() + self.every

    def failed(self, e: BaseException) -> None:
        """A scheduled step failed: count and log it, and try again in ``every`` seconds."""
        with self._lock:
            self.errors += 1
            first = self.errors == 1
        (log.error if first else log.warning)(
            "persona.store: purging %s of what is older than %g days failed (%s); retrying in %.0f s",
            self._backend.describe(), self.days, e, self.every)
        self._cutoff = None
        self._run = dict.fromkeys(TABLES, 0)
        self._due = time.monotonic() + self.every

    # --------------------------------------------------------------------------------- at once
    def purge(self, cutoff: float, connect, lock) -> dict:
        """Delete everything before ``cutoff`` now, step by step on a connection of its own."""
        t0 = time.monotonic()
        run = dict.fromkeys(TABLES, 0)
        with lock():
            conn = connect()
        try:
            while True:
                try:
                    with lock():
                        counts = self._backend.purge(conn, cutoff, self.step_rows)
                except StoreError:
                    raise
                except Exception as e:
                    with self._lock:
                        self.errors += 1
                    raise StoreError(f"purge: deleting from {self._backend.describe()} failed after deleting "
                                     f"{run}: {e}; run it again (it carries on where it stopped)") from e
                self._add(counts, run)
                if all(counts[t] < self.step_rows for t in TABLES):
                    break
        finally:
            with lock():
                conn.close()
        return self._finish(run, cutoff, time.monotonic() - t0, scheduled=False)

    def _add(self, counts: dict, run: dict) -> None:
        with self._lock:
            for t in TABLES:
                run[t] += int(counts[t])
                self.totals[t] += int(counts[t])

    def _finish(self, run: dict, cutoff: float, seconds: float, *, scheduled: bool) -> dict:
        out = {**run, "before": cutoff, "at": time.time(), "seconds": seconds}
        with self._lock:
            self.runs += 1
            self.last = out
        if any(run.values()):
            log.info("persona.store: purged %d events, %d impressions and %d dead letters older than %s from %s%s",
                     run["events"], run["impressions"], run["dead_letters"],
                     _dt.datetime.fromtimestamp(cutoff, _dt.timezone.utc).isoformat(timespec="seconds"),
                     self._backend.describe(), " (scheduled)" if scheduled else "")
        return dict(out)

    def stats(self) -> dict:
        with self._lock:
            return {"purged_events": self.totals["events"], "purged_impressions": self.totals["impressions"],
                    "purged_dead_letters": self.totals["dead_letters"], "purges": self.runs,
                    "purge_errors": self.errors, "last_purge": None if self.last is None else dict(self.last)}
