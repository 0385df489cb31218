"""The validated, de-duplicated, weighted event log every model trains on.

An :class:`Interactions` holds one row per cleaned event (user index, item index, weight, and
optionally a timestamp, an event type and a value), sorted by user and then time, beside two
:class:`~persona.data.idmap.IdMap` objects. From the events it derives, once and lazily:

* ``matrix`` -- a users x items CSR matrix (float32) of confidence weights, repeated user-item
  events aggregated into one entry;
* per-user, time-ordered item sequences for sequential models.

The cleaning pipeline that reads frames, files and records lives in :mod:`persona.data._pipeline`
and returns the arrays this class is built from; the ``from_*`` constructors here and the
functions of :mod:`persona.data.ingest` (which document the options) both call it. Imports go one
way: ``ingest`` -> ``interactions`` -> ``_pipeline`` (inside the constructors, as it needs pandas)
-> ``_events``; neither ``interactions`` nor ``_pipeline`` imports ``ingest``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from .._validate import check_keywords
from ..errors import DataError
from ..typing import ArrayLike, FrameLike, Ids, PathLike, TimePoint
from ._events import AGGREGATIONS, CleaningReport, _canonical_order, _refuse_time_options
from .idmap import IdMap

if TYPE_CHECKING:  # pandas only for to_frame's annotation
    import pandas as pd

__all__ = ["Interactions", "CleaningReport", "AGGREGATIONS"]


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
        users: ArrayLike,
        items: ArrayLike,
        weights: ArrayLike | None = None,
        timestamps: ArrayLike | None = None,
        events: ArrayLike | None = None,
        values: ArrayLike | None = None,
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

        def _opt(a: ArrayLike | None, dtype: type, name: str) -> np.ndarray | None:
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
        self.users: np.ndarray = users
        self.items: np.ndarray = items
        self.weights: np.ndarray = weights
        self.timestamps: np.ndarray | None = timestamps
        self.events: np.ndarray | None = events
        self.values: np.ndarray | None = values
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

    def subset(self, mask: ArrayLike) -> Interactions:
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

    def to_frame(self) -> pd.DataFrame:
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
    # The cleaning options are spelt out (keyword-only, same defaults as persona.data.ingest) so that
    # IDEs and inspect.signature show them; a misspelt one is a ParameterError naming the nearest.
    # Each calls the pipeline, which returns this class's arguments (it never imports this module).
    @classmethod
    @check_keywords
    def from_frame(cls, df: FrameLike, user: str = "user_id", item: str = "item_id", time: str | None = None,
                   event: str | None = None, value: str | None = None, weights: Mapping[str, float] | None = None,
                   *, weight: str | None = None, default_weight: float | None = None,
                   value_as_weight: bool | None = None, allow_negative: bool = False, time_unit: str = "s",
                   drop_duplicates: bool = True, aggregate: str = "sum", half_life: float | None = None,
                   now: TimePoint | None = None, min_user_events: int = 0, min_item_events: int = 0,
                   k_core: int | None = None, strict: bool = True, user_map: IdMap | None = None,
                   item_map: IdMap | None = None) -> "Interactions":
        """Build from a table of events (pandas, polars, pyarrow, ...); see :func:`persona.data.ingest.from_frame`."""
        from . import _pipeline

        return cls(**_pipeline.clean(df, user, item, time, event, value, weights, **_pipeline.options(locals())))

    @classmethod
    @check_keywords
    def from_csv(cls, path: PathLike, user: str = "user_id", item: str = "item_id", time: str | None = None,
                 event: str | None = None, value: str | None = None, weights: Mapping[str, float] | None = None, *,
                 read_options: Mapping[str, Any] | None = None, weight: str | None = None,
                 default_weight: float | None = None, value_as_weight: bool | None = None,
                 allow_negative: bool = False, time_unit: str = "s", drop_duplicates: bool = True,
                 aggregate: str = "sum", half_life: float | None = None, now: TimePoint | None = None,
                 min_user_events: int = 0, min_item_events: int = 0, k_core: int | None = None, strict: bool = True,
                 user_map: IdMap | None = None, item_map: IdMap | None = None) -> "Interactions":
        """Read a CSV file; see :func:`persona.data.ingest.from_csv`."""
        from . import _pipeline

        return cls(**_pipeline.read_csv(path, user, item, time, event, value, weights, read_options,
                                        _pipeline.options(locals())))

    @classmethod
    @check_keywords
    def from_parquet(cls, path: PathLike, user: str = "user_id", item: str = "item_id", time: str | None = None,
                     event: str | None = None, value: str | None = None, weights: Mapping[str, float] | None = None,
                     *, weight: str | None = None, default_weight: float | None = None,
                     value_as_weight: bool | None = None, allow_negative: bool = False, time_unit: str = "s",
                     drop_duplicates: bool = True, aggregate: str = "sum", half_life: float | None = None,
                     now: TimePoint | None = None, min_user_events: int = 0, min_item_events: int = 0,
                     k_core: int | None = None, strict: bool = True, user_map: IdMap | None = None,
                     item_map: IdMap | None = None) -> "Interactions":
        """Read a Parquet file (needs pyarrow); see :func:`persona.data.ingest.from_parquet`."""
        from . import _pipeline

        return cls(**_pipeline.read_parquet(path, user, item, time, event, value, weights, _pipeline.options(locals())))

    @classmethod
    @check_keywords
    def from_records(cls, records: Iterable[Any], user: str = "user", item: str = "item", time: str | None = None,
                     event: str | None = None, value: str | None = None, weights: Mapping[str, float] | None = None,
                     *, weight: str | None = None, default_weight: float | None = None,
                     value_as_weight: bool | None = None, allow_negative: bool = False, time_unit: str = "s",
                     drop_duplicates: bool = True, aggregate: str = "sum", half_life: float | None = None,
                     now: TimePoint | None = None, min_user_events: int = 0, min_item_events: int = 0,
                     k_core: int | None = None, strict: bool = True, user_map: IdMap | None = None,
                     item_map: IdMap | None = None) -> "Interactions":
        """Build from an iterable of dicts or tuples; see :func:`persona.data.ingest.from_records`."""
        from . import _pipeline

        return cls(**_pipeline.read_records(records, user, item, time, event, value, weights,
                                            _pipeline.options(locals())))

    @classmethod
    @_refuse_time_options
    @check_keywords
    def from_sequences(cls, path_or_lines: PathLike | Iterable[str], *, user_map: IdMap | None = None,
                       item_map: IdMap | None = None, ids: str = "int", drop_duplicates: bool = False,
                       aggregate: str = "sum", allow_negative: bool = False, min_user_events: int = 0,
                       min_item_events: int = 0, k_core: int | None = None, strict: bool = True) -> "Interactions":
        """Read the ``user item item ...`` format (one user per line, items in time order); see
        :func:`persona.data.ingest.from_sequences`."""
        from . import _pipeline

        return cls(**_pipeline.read_sequences(path_or_lines, ids, user_map=user_map, item_map=item_map,
                                              drop_duplicates=drop_duplicates, aggregate=aggregate,
                                              allow_negative=allow_negative, min_user_events=min_user_events,
                                              min_item_events=min_item_events, k_core=k_core, strict=strict))

    @classmethod
    @check_keywords
    def from_matrix(cls, matrix: Any, user_ids: Ids | None = None, item_ids: Ids | None = None, *,
                    allow_negative: bool = False) -> "Interactions":
        """Build from a users x items sparse matrix, as implicit takes it: the values are the weights.

        Every stored non-zero entry ``(u, i, w)`` becomes one event of user ``user_ids[u]`` on item
        ``item_ids[i]`` with weight ``w`` (no time, event type or value), so ``inter.matrix`` equals
        the input (as float32) and row ``u`` / column ``i`` keep their meaning: a model fitted on it
        lines up with the caller's arrays. Users and items without entries keep their rows and
        columns. Stored zeros are not events (a note in ``report`` counts them).

        Parameters
        ----------
        matrix : scipy.sparse matrix or array, shape (n_users, n_items)
            Any sparse format (CSR, CSC, COO, ...); repeated COO entries are summed.
        user_ids, item_ids : sequence of str or int, optional
            External id of each row and column (unique, one per row / column); default
            ``0 .. n - 1``.
        allow_negative : bool, default False
            Whether negative weights are valid (e.g. dislikes).

        Returns
        -------
        Interactions

        Raises
        ------
        DataError
            Not a sparse matrix, ids that do not match the shape or repeat, negative (unless
            ``allow_negative``) or non-finite values; the message names the entries.

        Examples
        --------
        >>> import scipy.sparse as sp
        >>> m = sp.csr_matrix([[0, 3.0], [1.0, 0]])
        >>> inter = Interactions.from_matrix(m, user_ids=["ann", "bob"], item_ids=["sku-1", "sku-2"])
        >>> inter.matrix.toarray().tolist(), inter.user_ids.tolist()
        ([[0.0, 3.0], [1.0, 0.0]], ['ann', 'bob'])
        """
        import scipy.sparse as sp

        from .idmap import normalize_ids

        if not sp.issparse(matrix) or len(matrix.shape) != 2:
            raise DataError(f"from_matrix: expected a 2-D scipy sparse matrix (users x items), got "
                            f"{type(matrix).__name__} of shape {getattr(matrix, 'shape', None)}; "
                            "convert it with sp.csr_matrix(...)")
        if not isinstance(allow_negative, (bool, np.bool_)):
            raise DataError(f"from_matrix: allow_negative expected True or False, got {allow_negative!r}")
        n_users, n_items = matrix.shape
        maps = []
        for ids, n, what, axis in ((user_ids, n_users, "user_ids", "rows"), (item_ids, n_items, "item_ids", "columns")):
            if ids is None:
                ids = np.arange(n, dtype=np.int64)
            elif isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
                raise DataError(f"from_matrix: expected {what} as a sequence of ids (one per matrix {axis[:-1]}), "
                                f"got {type(ids).__name__}")
            arr = normalize_ids(ids, what=f"from_matrix: {what}")
            if len(arr) != n:
                raise DataError(f"from_matrix: {what} has {len(arr)} ids but the matrix has {n} {axis}; "
                                f"pass one id per {axis[:-1]}")
            uniq, first, counts = np.unique(arr, return_index=True, return_counts=True)
            if (counts > 1).any():
                rep = uniq[counts > 1][:5]
                pos = [np.flatnonzero(arr == r)[:3].tolist() for r in rep]
                raise DataError(f"from_matrix: {what} repeat ids {rep.tolist()} (at positions {pos}); "
                                f"each {axis[:-1]} needs its own id")
            maps.append(IdMap(arr))
        coo = sp.coo_matrix(matrix)
        coo.sum_duplicates()
        rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
        try:
            data = coo.data.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"from_matrix: expected numeric values (the weights), got dtype {coo.data.dtype}") from None
        for bad, why, hint in ((~np.isfinite(data), "non-finite", "replace NaN / inf entries, or drop them"),
                               (data < 0 if not allow_negative else np.zeros(len(data), bool), "negative",
                                "pass allow_negative=True if negative weights are meaningful")):
            if bad.any():
                at = np.flatnonzero(bad)[:5]
                where = [(int(rows[j]), int(cols[j])) for j in at]
                raise DataError(f"from_matrix: {int(bad.sum())} {why} value(s) at (row, column) {where} "
                                f"(values {data[at].tolist()}); expected finite weights >= 0; {hint}")
        zero = data == 0
        report = CleaningReport(len(data), int((~zero).sum()))
        if zero.any():
            report.notes.append(f"{int(zero.sum())} explicit zero entries are not events (left out)")
            rows, cols, data = rows[~zero], cols[~zero], data[~zero]
        return cls(maps[0], maps[1], rows, cols, data.astype(np.float32), report=report)
