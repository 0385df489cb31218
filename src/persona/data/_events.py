"""What Interactions and the ingestion pipeline share, below both of them.

The aggregations of repeated user-item events, the :class:`CleaningReport` of what ingestion did,
the canonical event order (by user, then time) and the guard that keeps event-column options away
from sequence files. :mod:`persona.data.interactions` re-exports these names; it and
:mod:`persona.data._pipeline` import this module, which imports neither.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError

__all__ = ["AGGREGATIONS", "CleaningReport"]

AGGREGATIONS = ("sum", "max", "last", "count")
#: from_frame options that sequence files cannot have (they hold only user and item ids)
_NOT_FOR_SEQUENCES = ("time", "event", "value", "weights", "weight", "default_weight", "value_as_weight",
                      "time_unit", "half_life", "now")


def _refuse_time_options(func):
    """Keep from_sequences' DataError for from_frame options that need event columns."""

    @functools.wraps(func)
    def checked(*args, **kwargs):
        for bad in _NOT_FOR_SEQUENCES:
            if bad in kwargs:
                raise DataError(f"{bad}= is not available for sequence files, which hold only user and item ids; "
                                "use from_frame for event logs with times, types or values")
        return func(*args, **kwargs)

    return checked


@dataclass
class CleaningReport:
    """What ingestion did to the input: rows read, kept, and dropped per reason.

    Nothing is dropped silently: every dropped row is counted under a reason here.
    """

    n_input: int = 0
    n_kept: int = 0
    dropped: dict = field(default_factory=dict)  # reason -> count
    notes: list = field(default_factory=list)

    @property
    def n_dropped(self) -> int:
        return int(sum(self.dropped.values()))

    def add(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)

    def __str__(self) -> str:
        if not self.dropped:
            return f"{self.n_kept} of {self.n_input} events kept; none dropped"
        parts = ", ".join(f"{n} {why}" for why, n in self.dropped.items())
        return f"{self.n_kept} of {self.n_input} events kept; dropped {parts}"


def _canonical_order(users: np.ndarray, timestamps: np.ndarray | None) -> np.ndarray | None:
    """The permutation sorting events by user, then time, then input position; None if sorted.

    Same result as ``np.lexsort([timestamps, users])`` (which is stable), but several times faster
    on the common cases: already sorted, globally time-ordered logs, and whole-unit timestamps.
    """
    du = np.diff(users)
    if timestamps is None:
        return None if not (du < 0).any() else np.argsort(users, kind="stable")
    dt = np.diff(timestamps)
    if not (du < 0).any() and not ((du == 0) & (dt < 0)).any():
        return None
    if not (dt < 0).any():  # a time-ordered log: grouping by user keeps time order
        return np.argsort(users, kind="stable")
    tmin, tmax = float(timestamps.min()), float(timestamps.max())
    span = tmax - tmin + 1.0
    if (np.isfinite(span) and span < 2.0**53 and span * (float(users.max()) + 1.0) < 2.0**62
            and np.array_equal(timestamps, np.floor(timestamps))):
        key = users.astype(np.int64) * np.int64(span) + (timestamps - tmin).astype(np.int64)
        return np.argsort(key, kind="stable")
    return np.lexsort([timestamps, users])
