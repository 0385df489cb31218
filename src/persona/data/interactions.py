"""The validated, de-duplicated, weighted event log every model trains on.

An :class:`Interactions` holds one row per cleaned event (user index, item index, weight, and
optionally a timestamp, an event type and a value), sorted by user and then time, beside two
:class:`~persona.data.idmap.IdMap` objects. From the events it derives, once and lazily:

* ``matrix`` -- a users x items CSR matrix (float32) of confidence weights, repeated user-item
  events aggregated into one entry;
* per-user, time-ordered item sequences for sequential models.

Constructors that read frames, files and records live in :mod:`persona.data.ingest`; they validate
and clean the input and end here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import DataError
from .idmap import IdMap

__all__ = ["Interactions", "CleaningReport", "AGGREGATIONS"]

AGGREGATIONS = ("sum", "max", "last", "count")


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


class Interactions:
    """Cleaned user-item events with stable id maps.

    Most code builds one with :meth:`from_frame`, :meth:`from_csv`, :meth:`from_parquet`,
    :meth:`from_records` or :meth:`from_sequences`. The constructor itself takes dense indices
    into ``user_map`` / ``item_map`` and trusts that they were validated.

    Parameters
    ----------
    user_map, item_map : IdMap
    users, items : int arrays of the same length (indices into the maps)
    weights : float array, optional
        Confidence contribution of every event (default 1).
    timestamps : float array of epoch seconds, optional
    events : int array of codes into ``event_types``, optional
    values : float array, optional (rating, quantity, price)
    event_types : sequence of str
        Names of the event codes.
    aggregate : {"sum", "max", "last", "count"}
        How repeated user-item events become one matrix entry.

    Examples
    --------
    >>> import persona as ps
    >>> inter = ps.Interactions.from_records([("u1", "a"), ("u1", "b"), ("u2", "a")])
    >>> inter.n_users, inter.n_items, len(inter)
    (2, 2, 3)
    >>> inter.matrix.toarray().tolist()
    [[1.0, 1.0], [1.0, 0.0]]
    """

    def __init__(
        self,
        user_map: IdMap,
        item_map: IdMap,
        users,
        items,
        weights=None,
        timestamps=None,
        events=None,
        values=None,
        *,
        event_types: Sequence[str] = (),
        aggregate: str = "sum",
        report: CleaningReport | None = None,
        _sorted: bool = False,
    ) -> None:
        if aggregate not in AGGREGATIONS:
            raise DataError(f"aggregate must be one of {AGGREGATIONS}, got {aggregate!r}")
        # writable caller arrays we may alias: copied below rather than frozen under the caller
        inputs = [a for a in (users, items, weights, timestamps, events, values)
                  if isinstance(a, np.ndarray) and a.flags.writeable]
        users = np.asarray(users, dtype=np.int32).reshape(-1)
        items = np.asarray(items, dtype=np.int32).reshape(-1)
        n = len(users)
        if len(items) != n:
            raise DataError(f"users has {n} entries but items has {len(items)}; pass one item per event")
        if n and (users.min() < 0 or users.max() >= len(user_map)):
            raise DataError(f"user indices must lie in [0, {len(user_map)}); got range [{users.min()}, {users.max()}]")
        if n and (items.min() < 0 or items.max() >= len(item_map)):
            raise DataError(f"item indices must lie in [0, {len(item_map)}); got range [{items.min()}, {items.max()}]")

        def _opt(a, dtype, name):
            if a is None:
                return None
            a = np.asarray(a, dtype=dtype).reshape(-1)
            if len(a) != n:
                raise DataError(f"{name} has {len(a)} entries but there are {n} events")
            return a

        weights = _opt(weights, np.float32, "weights")
        if weights is None:
            weights = np.ones(n, dtype=np.float32)
        timestamps = _opt(timestamps, np.float64, "timestamps")
        events = _opt(events, np.int16, "events")
        values = _opt(values, np.float32, "values")

        order = None if (_sorted or not n) else _canonical_order(users, timestamps)
        if order is not None:
            users, items, weights = users[order], items[order], weights[order]
            timestamps = None if timestamps is None else timestamps[order]
            events = None if events is None else events[order]
            values = None if values is None else values[order]

        self.user_map = user_map
        self.item_map = item_map
        self.users = users
        self.items = items
        self.weights = weights
        self.timestamps = timestamps
        self.events = events
        self.values = values
        self.event_types = tuple(event_types)
        self.aggregate = aggregate
        self.report = report if report is not None else CleaningReport(n, n)
        self._matrix = None
        self._indptr = None
        for name in ("users", "items", "weights", "timestamps", "events", "values"):
            a = getattr(self, name)
            if a is None:
                continue
            if any(np.may_share_memory(a, b) for b in inputs):
                a = a.copy()
                setattr(self, name, a)
            a.setflags(write=False)

    # ------------------------------------------------------------------ basic facts
    @property
    def user_ids(self) -> np.ndarray:
        """External user id of each matrix row."""
        return self.user_map.ids

    @property
    def item_ids(self) -> np.ndarray:
        """External item id of each matrix column."""
        return self.item_map.ids

    @property
    def n_users(self) -> int:
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_users, self.n_items)

    def __len__(self) -> int:
        return len(self.users)

    def __repr__(self) -> str:
        extra = []
        if self.timestamps is not None:
            extra.append("time")
        if self.events is not None:
            extra.append("events=" + "/".join(self.event_types))
        if self.values is not None:
            extra.append("value")
        more = (", " + ", ".join(extra)) if extra else ""
        return f"Interactions({len(self)} events, {self.n_users} users x {self.n_items} items{more})"

    # ------------------------------------------------------------------ derived views
    @property
    def matrix(self) -> sp.csr_matrix:
        """Users x items CSR matrix (float32) of aggregated confidence weights."""
        if self._matrix is None:
            self._matrix = self._build_matrix()
        return self._matrix

    def _build_matrix(self) -> sp.csr_matrix:
        shape = self.shape
        if len(self) == 0:
            return sp.csr_matrix(shape, dtype=np.float32)
        if self.aggregate == "count":
            data = np.ones(len(self), dtype=np.float32)
        else:
            data = self.weights
        if self.aggregate in ("sum", "count"):
            m = sp.csr_matrix((data.astype(np.float32), (self.users, self.items)), shape=shape)
            m.sum_duplicates()
        else:
            key = self.users.astype(np.int64) * shape[1] + self.items
            if self.aggregate == "last":
                # events are time-ordered per user: the last occurrence of each key wins
                rev = key[::-1]
                _, first_rev = np.unique(rev, return_index=True)
                pick = len(key) - 1 - first_rev
                uk, val = key[pick], data[pick]
            else:  # max
                order = np.lexsort((data, key))
                k_sorted = key[order]
                last = np.r_[k_sorted[1:] != k_sorted[:-1], True]
                uk, val = k_sorted[last], data[order][last]
            m = sp.csr_matrix(
                (val.astype(np.float32), (uk // shape[1], uk % shape[1])), shape=shape
            )
        m.sort_indices()
        m.data = m.data.astype(np.float32, copy=False)
        return m

    @property
    def sequence_indptr(self) -> np.ndarray:
        """Offsets of each user's events: user ``u`` owns ``items[indptr[u]:indptr[u+1]]``."""
        if self._indptr is None:
            counts = np.bincount(self.users, minlength=self.n_users)
            self._indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return self._indptr

    def sequence(self, user_index: int) -> np.ndarray:
        """Time-ordered item indices of one user (row index, not external id)."""
        ip = self.sequence_indptr
        return self.items[ip[user_index] : ip[user_index + 1]]

    def sequences(self) -> list[np.ndarray]:
        """Time-ordered item indices of every user, as a list of arrays."""
        ip = self.sequence_indptr
        return [self.items[ip[u] : ip[u + 1]] for u in range(self.n_users)]

    @property
    def user_counts(self) -> np.ndarray:
        """Number of events of each user."""
        return np.diff(self.sequence_indptr)

    @property
    def item_counts(self) -> np.ndarray:
        """Number of events on each item."""
        return np.bincount(self.items, minlength=self.n_items)

    # ------------------------------------------------------------------ derived event logs
    def _replace(self, mask=None, *, user_map=None, item_map=None, users=None, items=None, **fields):
        """A new Interactions over a subset of events (``mask``: bool or index array)."""
        def pick(a):
            if a is None or mask is None:
                return a
            return a[mask]

        return Interactions(
            user_map if user_map is not None else self.user_map,
            item_map if item_map is not None else self.item_map,
            users if users is not None else pick(self.users),
            items if items is not None else pick(self.items),
            fields.get("weights", pick(self.weights)),
            fields.get("timestamps", pick(self.timestamps)),
            fields.get("events", pick(self.events)),
            fields.get("values", pick(self.values)),
            event_types=self.event_types,
            aggregate=self.aggregate,
            report=fields.get("report", self.report),
            _sorted=fields.get("_sorted", True),
        )

    def subset(self, mask) -> "Interactions":
        """The events selected by ``mask`` (bool array or event indices), same id maps.

        Keeping the maps keeps matrices of all subsets aligned: row ``u`` and column ``i`` mean the
        same user and item in every split of one data set.
        """
        mask = np.asarray(mask)
        if mask.dtype == bool and len(mask) != len(self):
            raise DataError(f"mask has {len(mask)} entries but there are {len(self)} events")
        if mask.dtype != bool:
            mask = np.sort(mask.astype(np.int64))
        return self._replace(mask)

    def with_maps(self, user_map: IdMap, item_map: IdMap) -> "Interactions":
        """The same events re-indexed into (grown) maps that contain every id of this one."""
        u = user_map.lookup(self.user_map.ids)
        i = item_map.lookup(self.item_map.ids)
        if (u < 0).any() or (i < 0).any():
            raise DataError("with_maps needs maps that contain every user and item id of these interactions")
        return self._replace(
            None, user_map=user_map, item_map=item_map, users=u[self.users], items=i[self.items], _sorted=False
        )

    def concat(self, *others: "Interactions") -> "Interactions":
        """All events of ``self`` and ``others``; maps are grown to hold every id."""
        parts = [self, *others]
        umap, imap = self.user_map, self.item_map
        for o in others:
            umap, imap = umap.grow(o.user_map.ids), imap.grow(o.item_map.ids)
        parts = [p if (p.user_map is umap and p.item_map is imap) else p.with_maps(umap, imap) for p in parts]

        def cat(name):
            arrs = [getattr(p, name) for p in parts]
            if any(a is None for a in arrs):
                if any(a is not None for a in arrs):
                    raise DataError(f"cannot concatenate interactions with and without {name}; "
                                    f"every part must carry {name}, or none")
                return None
            return np.concatenate(arrs)

        types = self.event_types
        for p in others:
            if p.events is not None and p.event_types != types:
                raise DataError(f"cannot concatenate interactions with event types {p.event_types} and {types}")
        report = CleaningReport(sum(p.report.n_input for p in parts), sum(len(p) for p in parts))
        return Interactions(
            umap, imap, cat("users"), cat("items"), cat("weights"), cat("timestamps"), cat("events"),
            cat("values"), event_types=types, aggregate=self.aggregate, report=report,
        )

    def to_frame(self):
        """The events as a pandas DataFrame with external ids (columns user, item, weight, ...)."""
        import pandas as pd

        cols = {
            "user": self.user_map.to_ids(self.users),
            "item": self.item_map.to_ids(self.items),
            "weight": self.weights,
        }
        if self.timestamps is not None:
            cols["timestamp"] = pd.to_datetime(self.timestamps, unit="s", utc=True)
        if self.events is not None:
            names = np.asarray(self.event_types, dtype=object)
            cols["event"] = names[self.events]
        if self.values is not None:
            cols["value"] = self.values
        return pd.DataFrame(cols)

    # ------------------------------------------------------------------ constructors (see ingest)
    @classmethod
    def from_frame(cls, df, user="user_id", item="item_id", time=None, event=None, value=None, weights=None,
                   **options) -> "Interactions":
        """Build from a pandas DataFrame; see :func:`persona.data.ingest.from_frame`."""
        from .ingest import from_frame

        return from_frame(df, user=user, item=item, time=time, event=event, value=value, weights=weights, **options)

    @classmethod
    def from_csv(cls, path, user="user_id", item="item_id", time=None, event=None, value=None, weights=None,
                 **options) -> "Interactions":
        """Read a CSV file; see :func:`persona.data.ingest.from_csv`."""
        from .ingest import from_csv

        return from_csv(path, user=user, item=item, time=time, event=event, value=value, weights=weights, **options)

    @classmethod
    def from_parquet(cls, path, user="user_id", item="item_id", time=None, event=None, value=None, weights=None,
                     **options) -> "Interactions":
        """Read a Parquet file (needs pyarrow); see :func:`persona.data.ingest.from_parquet`."""
        from .ingest import from_parquet

        return from_parquet(path, user=user, item=item, time=time, event=event, value=value, weights=weights,
                            **options)

    @classmethod
    def from_records(cls, records: Iterable, user="user", item="item", time=None, event=None, value=None,
                     weights=None, **options) -> "Interactions":
        """Build from an iterable of dicts or tuples; see :func:`persona.data.ingest.from_records`."""
        from .ingest import from_records

        return from_records(records, user=user, item=item, time=time, event=event, value=value, weights=weights,
                            **options)

    @classmethod
    def from_sequences(cls, path_or_lines, **options) -> "Interactions":
        """Read the ``user item item ...`` format (one user per line, items in time order)."""
        from .ingest import from_sequences

        return from_sequences(path_or_lines, **options)
