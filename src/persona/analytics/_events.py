"""The events every analysis reads, resolved once into arrays.

:func:`event_table` turns an :class:`~persona.store.EventStore`, a table of events or
:class:`~persona.Interactions` into an :class:`EventTable`: users, items and event types as dense
integer codes with their external ids, times as int64 nanoseconds (UTC) and values as floats.
Every analysis of :mod:`persona.analytics` accepts any of these inputs and builds the table
itself; build it once with :func:`event_table` to run several analyses (or a report) over one
read of the store.
"""

from __future__ import annotations

import datetime as _dt
import numbers
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from .._time import to_epoch
from .._validate import check_frame, check_number
from .._warn import warn_user
from ..errors import DataError, ParameterError
from ..typing import TimePoint

if TYPE_CHECKING:  # annotations only: pandas loads when a table is built
    import pandas as pd

__all__ = ["EventTable", "event_table", "PERIODS", "MISSING"]

NS = 1_000_000_000
DAY_NS = 86_400 * NS
_NO_TIME = np.iinfo(np.int64).max  # "never" in per-user time arrays
#: the calendar periods that ``period=`` and ``by=`` accept (weeks start on Monday, UTC)
PERIODS = ("day", "week", "month")
#: the group label of an event or user whose ``by`` value is missing
MISSING = "(missing)"

_CANDIDATES = {
    "user": ("user_id", "user"),
    "item": ("item_id", "item"),
    "time": ("timestamp", "time"),
    "event": ("event",),
    "value": ("value",),
}
_CORE = {"event_id", "properties"}


class EventTable:
    """Events as arrays: what every analysis of :mod:`persona.analytics` reads.

    Build one with :func:`event_table`; the attributes are read-only by convention.

    Attributes
    ----------
    user_codes, item_codes : np.ndarray of int64
        Per event, the index of its user in ``user_ids`` / item in ``item_ids`` (``-1``: no item).
    user_ids, item_ids : np.ndarray
        The external ids, in code order.
    time_ns : np.ndarray of int64 or None
        Event times as nanoseconds since 1970-01-01 UTC; None when the input has no times.
    event_codes : np.ndarray of int64 or None
        Per event, the index of its type in ``event_names`` (``-1``: missing); None when the input
        has no event types (:class:`~persona.Interactions` built without ``event=``).
    event_names : tuple of str
    value : np.ndarray of float64 or None
        The event's value (a purchase's price), NaN where absent; None without a value column.
    source : str
        ``"store"``, ``"frame"`` or ``"interactions"``.
    store : EventStore or None
        The store the events were read from (the report's on-site metrics read its impressions),
        and ``read_window``, the ``(since, until)`` it was read with.
    """

    def __init__(self, *, user_codes: np.ndarray, user_ids: np.ndarray, item_codes: np.ndarray,
                 item_ids: np.ndarray, time_ns: np.ndarray | None, event_codes: np.ndarray | None,
                 event_names: tuple, value: np.ndarray | None, frame: pd.DataFrame | None, source: str,
                 store=None, read_window: tuple = (None, None)) -> None:
        self.user_codes = user_codes
        self.user_ids = user_ids
        self.item_codes = item_codes
        self.item_ids = item_ids
        self.time_ns = time_ns
        self.event_codes = event_codes
        self.event_names = tuple(event_names)
        self.value = value
        self.frame = frame  # the source rows, for ``by`` columns and properties (None for Interactions)
        self.source = source
        self.store = store
        self.read_window = read_window
        self._periods: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.user_codes)

    def __repr__(self) -> str:
        span = ""
        if self.time_ns is not None and len(self):
            lo, hi = (np.datetime64(int(x), "ns") for x in (self.time_ns.min(), self.time_ns.max()))
            span = f", {np.datetime_as_string(lo, 'm')} to {np.datetime_as_string(hi, 'm')}"
        kinds = f", event types {list(self.event_names)}" if self.event_codes is not None else ", no event types"
        return (f"EventTable({len(self):,} events, {self.n_users:,} users, {self.n_items:,} items{span}{kinds}; "
                f"from {self.source})")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    # ------------------------------------------------------------------------------ checks
    def require_events(self, what: str) -> None:
        """DataError unless the events carry event types (``what`` names the analysis)."""
        if self.event_codes is None:
            how = ("build them with the event column (Interactions.from_frame(df, ..., event='event')), or pass "
                   "the events table or the EventStore itself" if self.source == "interactions"
                   else "pass a table with an 'event' column (or name it: event_table(df, event='action'))")
            raise DataError(f"{what} needs event types (view, cart, purchase, ...), but these {self.source} events "
                            f"have none; {how}")

    def require_time(self, what: str) -> None:
        """DataError unless the events carry times."""
        if self.time_ns is None:
            how = ("build them with time= (Interactions.from_frame(df, ..., time='timestamp'))"
                   if self.source == "interactions" else "pass a table with a 'timestamp' column "
                   "(or name it: event_table(df, time='ts'))")
            raise DataError(f"{what} needs event times, but these {self.source} events have none; {how}")

    def codes_of(self, names, what: str) -> np.ndarray:
        """The event codes of ``names`` (one name or several); names that never occur are warned about."""
        self.require_events(what)
        names = _names(names, what)
        known = {n: i for i, n in enumerate(self.event_names)}
        absent = [n for n in names if n not in known]
        if absent:
            warn_user(f"{what}: event type(s) {absent} never occur in these events (types: {list(self.event_names)}); "
                      f"they count zero")
        return np.array([known[n] for n in names if n in known], dtype=np.int64)

    def event_mask(self, names, what: str) -> np.ndarray:
        """Which events are of one of ``names``."""
        return np.isin(self.event_codes, self.codes_of(names, what))

    # ------------------------------------------------------------------------------ periods
    def periods(self, period: str) -> np.ndarray:
        """Per event, the index of its calendar period (``day``, ``week`` from Monday, ``month``; UTC)."""
        period = check_period(period)
        self.require_time(f"period={period!r}")
        if period not in self._periods:
            self._periods[period] = period_index(self.time_ns, period)
        return self._periods[period]

    # ------------------------------------------------------------------------------ groups
    def column(self, name: str) -> np.ndarray | None:
        """The per-event values of a column of the source table, or of a key of its ``properties``."""
        import pandas as pd

        df = self.frame
        if df is None:
            return None
        if name in df.columns and name not in _CORE:
            return df[name].to_numpy()
        if "properties" in df.columns:
            props = df["properties"].to_numpy()
            vals = np.array([p.get(name) if isinstance(p, dict) else None for p in props], dtype=object)
            if pd.notna(vals).any():
                return vals
        return None

    def labels(self, by, *, user_features=None, what: str = "by") -> list[tuple[str, np.ndarray]]:
        """Per-event group labels for ``by`` (see :func:`persona.analytics.funnel`): ``[(name, labels)]``."""
        if by is None:
            return []
        import pandas as pd

        items = list(by) if isinstance(by, (list, tuple)) else [by]
        if not items:
            raise ParameterError(f"{what}: expected a column name, a mapping of user -> group or a list of them, "
                                 f"got an empty {type(by).__name__}; pass by=None for no groups")
        out = []
        for b in items:
            if isinstance(b, str):
                out.append((b, self._named_labels(b, user_features, what)))
            elif isinstance(b, (Mapping, pd.Series)):
                name = str(getattr(b, "name", None) or "group")
                out.append((name, self._user_labels(_as_lookup(b, what), what)))
            else:
                raise ParameterError(f"{what}: expected a column name, a mapping of user -> group or a list of them, "
                                     f"got {type(b).__name__} {b!r}")
        return out

    def _named_labels(self, name: str, user_features, what: str) -> np.ndarray:
        col = self.column(name)
        if col is not None:
            return _fill_missing(col)
        if user_features is not None:
            lookup = _feature_lookup(user_features, name, what)
            if lookup is not None:
                return self._user_labels(lookup, what)
        if name in PERIODS:  # the period's first instant, UTC (as cohort_retention and activity label them)
            import pandas as pd

            return pd.DatetimeIndex(period_start(self.periods(name), name)).tz_localize("UTC")
        where = [f"event columns {[c for c in self.frame.columns if c not in _CORE]}"] if self.frame is not None else []
        if self.frame is not None and "properties" in self.frame.columns:
            where.append("no event property of that name")
        if user_features is not None:
            where.append("no user feature of that name")
        where.append(f"the periods {list(PERIODS)}")
        hint = "" if user_features is not None else "; for a user attribute pass user_features= (a table of users)"
        raise DataError(f"{what}: no column, property or user feature {name!r} (there are: {'; '.join(where)}){hint}")

    def _user_labels(self, lookup: pd.Series, what: str) -> np.ndarray:
        import pandas as pd

        pos = lookup.index.get_indexer(pd.Index(self.user_ids))
        per_user = np.where(pos >= 0, lookup.to_numpy(dtype=object)[np.maximum(pos, 0)], None) if len(lookup) \
            else np.full(self.n_users, None, dtype=object)
        return _fill_missing(per_user)[self.user_codes]


# ---------------------------------------------------------------------------------------------- builders
def event_table(data: Any, *, user: str | None = None, item: str | None = None, time: str | None = None,
                event: str | None = None, value: str | None = None, since: TimePoint | None = None,
                until: TimePoint | None = None) -> EventTable:
    """Read events once for several analyses.

    Parameters
    ----------
    data : EventStore, pandas.DataFrame (or a polars / pyarrow table), Interactions or EventTable
        An :class:`~persona.store.EventStore` is read with :meth:`~persona.store.EventStore.events`
        (its event ``properties`` are available to ``by=``); a table needs a user column and, for
        most analyses, a time and an event column; an EventTable is returned as it is.
    user, item, time, event, value : str, optional
        The columns of a table; by default the first present of ``user_id`` / ``user``,
        ``item_id`` / ``item``, ``timestamp`` / ``time``, ``event`` and ``value``.
    since, until : time, optional
        Keep events with ``since <= time < until``.

    Returns
    -------
    EventTable

    Examples
    --------
    >>> import pandas as pd
    >>> ev = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"],
    ...                    "event": ["view", "purchase", "view"],
    ...                    "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"], utc=True)})
    >>> event_table(ev)  # doctest: +NORMALIZE_WHITESPACE
    EventTable(3 events, 2 users, 2 items, 2024-01-01T00:00 to 2024-01-03T00:00,
               event types ['view', 'purchase']; from frame)
    """
    if isinstance(data, EventTable):
        if any(x is not None for x in (user, item, time, event, value, since, until)):
            raise ParameterError("event_table: the data is already an EventTable; column names and since / until "
                                 "apply when it is built, so pass them to event_table(...) on the raw events")
        return data
    bounds = _bounds(since, until)
    from ..store.events import EventStore

    if isinstance(data, EventStore):
        if any(x is not None for x in (user, item, time, event, value)):
            raise ParameterError("event_table: an EventStore has fixed columns; user= / item= / time= / event= / "
                                 "value= name the columns of a table")
        return _from_store(data, since, until)
    from ..data.interactions import Interactions

    if isinstance(data, Interactions):
        if any(x is not None for x in (user, item, time, event, value)):
            raise ParameterError("event_table: Interactions have fixed fields; user= / item= / time= / event= / "
                                 "value= name the columns of a table")
        return _from_interactions(data, bounds)
    df = check_frame(data, "analytics: data (an EventStore, a table of events or Interactions)")
    return _from_frame(df, dict(user=user, item=item, time=time, event=event, value=value), bounds)


def _bounds(since, until) -> tuple[int | None, int | None]:
    lo = None if since is None else int(round(to_epoch(since, "since", error=ParameterError) * NS))
    hi = None if until is None else int(round(to_epoch(until, "until", error=ParameterError) * NS))
    if lo is not None and hi is not None and hi <= lo:
        raise ParameterError(f"since / until: expected since < until, got {since!r} and {until!r}")
    return lo, hi


def _from_store(store, since, until) -> EventTable:
    import pandas as pd

    df = store.events(since, until)
    t = df["time"]
    bad = t.isna().to_numpy()
    if bad.any():  # the store already warned about rows written behind its back
        df = df[~bad].reset_index(drop=True)
        t = df["time"]
    users, user_ids = _factorize(df["user"])
    items, item_ids = _factorize(df["item"])
    events, names = _factorize(df["event"])
    return EventTable(user_codes=users, user_ids=user_ids, item_codes=items, item_ids=item_ids,
                      time_ns=_ns_of_datetimes(t), event_codes=events,
                      event_names=tuple(str(n) for n in names),
                      value=pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=np.float64),
                      frame=df, source="store", store=store, read_window=(since, until))


def _from_interactions(inter, bounds) -> EventTable:
    keep = None
    time_ns = None
    if inter.timestamps is not None:
        time_ns = _ns_of_seconds(np.asarray(inter.timestamps, dtype=np.float64), "Interactions timestamps")
        keep = _in_bounds(time_ns, bounds)
    elif bounds != (None, None):
        raise DataError("since / until: these Interactions have no timestamps; build them with time=...")

    def pick(a):
        return None if a is None else (np.asarray(a) if keep is None else np.asarray(a)[keep])

    return EventTable(user_codes=pick(inter.users).astype(np.int64), user_ids=inter.user_map.ids,
                      item_codes=pick(inter.items).astype(np.int64), item_ids=inter.item_map.ids,
                      time_ns=pick(time_ns),
                      event_codes=None if inter.events is None else pick(inter.events).astype(np.int64),
                      event_names=tuple(inter.event_types or ()),
                      value=None if inter.values is None else pick(inter.values).astype(np.float64),
                      frame=None, source="interactions")


def _from_frame(df: pd.DataFrame, names: dict, bounds) -> EventTable:
    import pandas as pd

    cols = {}
    for role, given in names.items():
        if given is not None:
            if not isinstance(given, str) or given not in df.columns:
                raise DataError(f"event_table: {role}={given!r} is not a column; columns are {list(df.columns)}")
            cols[role] = given
        else:
            cols[role] = next((c for c in _CANDIDATES[role] if c in df.columns), None)
    if cols["user"] is None:
        raise DataError(f"analytics: the events need a user column ({' or '.join(_CANDIDATES['user'])}); columns "
                        f"are {list(df.columns)}; name it with event_table(df, user='customer')")
    time_ns = None
    if cols["time"] is not None:
        time_ns = _times(df[cols["time"]], cols["time"])
        keep = _in_bounds(time_ns, bounds)
        if keep is not None:
            df = df[keep].reset_index(drop=True)
            time_ns = time_ns[keep]
    elif bounds != (None, None):
        raise DataError(f"since / until: the events have no time column; columns are {list(df.columns)}")
    users, user_ids = _factorize(df[cols["user"]])
    if (users < 0).any():
        rows = np.flatnonzero(users < 0)[:5].tolist()
        raise DataError(f"analytics: {int((users < 0).sum())} events have no user (rows {rows}); drop them first")
    if cols["item"] is not None:
        items, item_ids = _factorize(df[cols["item"]])
    else:
        items, item_ids = np.full(len(df), -1, dtype=np.int64), np.array([], dtype=object)
    event_codes, event_names = None, ()
    if cols["event"] is not None:
        event_codes, names_ = _factorize(df[cols["event"]])
        event_names = tuple(str(n) for n in names_)
    value = None
    if cols["value"] is not None:
        value = pd.to_numeric(df[cols["value"]], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return EventTable(user_codes=users, user_ids=user_ids, item_codes=items, item_ids=item_ids, time_ns=time_ns,
                      event_codes=event_codes, event_names=event_names, value=value, frame=df, source="frame")


def _factorize(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    if isinstance(col.dtype, pd.CategoricalDtype):  # keep the declared categories' order
        codes = col.cat.codes.to_numpy().astype(np.int64)
        return codes, np.asarray(col.cat.categories, dtype=object)
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    return codes.astype(np.int64, copy=False), np.asarray(uniques)


def _in_bounds(time_ns: np.ndarray, bounds) -> np.ndarray | None:
    lo, hi = bounds
    if lo is None and hi is None:
        return None
    keep = np.ones(len(time_ns), dtype=bool)
    if lo is not None:
        keep &= time_ns >= lo
    if hi is not None:
        keep &= time_ns < hi
    return keep


# ---------------------------------------------------------------------------------------------- times
def _times(col: pd.Series, name: str) -> np.ndarray:
    """Nanoseconds since the epoch (UTC) of a column of datetimes, epoch seconds or ISO-8601 strings."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        ns = _ns_of_datetimes(col)
        bad = col.isna().to_numpy()
    elif pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        secs = col.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(secs) | (np.abs(secs) > 253402300800.0)
        ns = _ns_of_seconds(np.where(bad, 0.0, secs), name)
    else:
        try:
            parsed = pd.to_datetime(col, utc=True, errors="coerce", format="ISO8601")
        except (TypeError, ValueError):
            parsed = pd.Series(pd.NaT, index=col.index, dtype="datetime64[ns, UTC]")
        bad = parsed.isna().to_numpy()
        ns = _ns_of_datetimes(parsed)
    if bad.any():
        rows = np.flatnonzero(bad)[:5]
        raise DataError(f"analytics: time column {name!r} has {int(bad.sum())} missing or unreadable times (rows "
                        f"{rows.tolist()}: {col.iloc[rows].tolist()!r}); expected datetimes, ISO-8601 strings or "
                        f"epoch seconds (not milliseconds: divide those by 1000); drop or fix those rows")
    return ns


def _ns_of_datetimes(col: pd.Series) -> np.ndarray:
    import pandas as pd

    t = pd.to_datetime(col, utc=True).dt.as_unit("ns")
    return t.to_numpy(dtype="datetime64[ns]", na_value=np.datetime64("NaT")).view(np.int64)


def _ns_of_seconds(secs: np.ndarray, what: str) -> np.ndarray:
    if len(secs) and not np.isfinite(secs).all():
        raise DataError(f"analytics: {what} have {int((~np.isfinite(secs)).sum())} values that are not finite; "
                        f"drop those events")
    return np.round(secs * NS).astype(np.int64)


def period_index(time_ns: np.ndarray, period: str) -> np.ndarray:
    """Per time, the index of its calendar period: days and weeks (Monday first) since 1970, or months."""
    days = np.floor_divide(time_ns, DAY_NS)
    if period == "day":
        return days
    if period == "week":
        return np.floor_divide(days + 3, 7)  # 1970-01-01 was a Thursday: +3 makes weeks start on Monday
    return time_ns.view("datetime64[ns]").astype("datetime64[M]").astype(np.int64)


def period_start(index: np.ndarray, period: str) -> np.ndarray:
    """The first instant (datetime64[ns], UTC) of each period of :func:`period_index`."""
    index = np.asarray(index, dtype=np.int64)
    if period == "day":
        return (index * DAY_NS).view("datetime64[ns]")
    if period == "week":
        return ((index * 7 - 3) * DAY_NS).view("datetime64[ns]")
    return index.view("datetime64[M]").astype("datetime64[ns]")


def check_period(period) -> str:
    if period not in PERIODS:
        raise ParameterError(f"period: expected one of {list(PERIODS)}, got {period!r}")
    return period


def duration_ns(x, name: str, *, allow_none: bool = True) -> int | None:
    """A positive duration as nanoseconds: seconds (a number), a timedelta or a pandas offset string ('7D')."""
    import pandas as pd

    if x is None and allow_none:
        return None
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        secs = check_number(x, name, min=0.0, finite=True)
        ns = int(round(secs * NS))
    elif isinstance(x, (_dt.timedelta, np.timedelta64, str)):
        try:
            ns = int(pd.Timedelta(x).value)
        except (ValueError, TypeError):
            raise ParameterError(f"{name}: cannot read {x!r} as a duration; pass seconds, a timedelta or e.g. '7D'") \
                from None
    else:
        raise ParameterError(f"{name}: expected a duration (seconds, a timedelta or e.g. '7D'), got "
                             f"{type(x).__name__} {x!r}")
    if ns <= 0:
        raise ParameterError(f"{name}: expected a positive duration, got {x!r}")
    return ns


# ---------------------------------------------------------------------------------------------- labels
def _names(names, what: str) -> tuple[str, ...]:
    if isinstance(names, str):
        return (names,)
    if isinstance(names, Iterable) and not isinstance(names, (bytes, Mapping)):
        out = tuple(names)
        if out and all(isinstance(n, str) and n for n in out):
            return out
    raise ParameterError(f"{what}: expected an event name or a list of them, got {names!r}")


def _fill_missing(values: np.ndarray) -> np.ndarray:
    import pandas as pd

    values = np.asarray(values)
    if values.dtype.kind in "OUS":
        out = values.astype(object)
        out[pd.isna(out)] = MISSING
        return out
    if values.dtype.kind in "fcmM" and pd.isna(values).any():
        out = values.astype(object)
        out[pd.isna(values)] = MISSING
        return out
    return values


def _as_lookup(b, what: str) -> pd.Series:
    import pandas as pd

    s = b if isinstance(b, pd.Series) else pd.Series(dict(b), dtype=object)
    if not s.index.is_unique:
        dup = s.index[s.index.duplicated()][:5].tolist()
        raise DataError(f"{what}: the user -> group mapping names some users twice ({dup}); pass one group per user")
    return s


def _feature_lookup(user_features, name: str, what: str) -> pd.Series | None:
    """user id -> the ``name`` column of a table of user features (id column ``user_id``/``user`` or the index)."""
    import pandas as pd

    if isinstance(user_features, (Mapping, pd.Series)):
        raise ParameterError(f"{what}: user_features expected a table of users (one row each, a user_id column), "
                             f"got {type(user_features).__name__}; to group by a mapping, pass it as by= itself")
    df = check_frame(user_features, f"{what}: user_features")
    if name not in df.columns:
        return None
    id_col = next((c for c in ("user_id", "user") if c in df.columns and c != name), None)
    s = pd.Series(df[name].to_numpy(dtype=object), index=df[id_col] if id_col else df.index, name=name)
    return _as_lookup(s, f"{what}: user_features")


def combine_groups(keys: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, pd.DataFrame]:
    """Dense group codes of rows keyed by several label arrays, and the groups' labels (one row per code)."""
    import pandas as pd

    frame = pd.DataFrame({name: vals for name, vals in keys})
    try:
        grouped = frame.groupby(list(frame.columns), sort=True, dropna=False)
        codes = grouped.ngroup().to_numpy()
    except TypeError:  # labels of mixed types do not sort
        grouped = frame.groupby(list(frame.columns), sort=False, dropna=False)
        codes = grouped.ngroup().to_numpy()
    first = np.zeros(codes.max() + 1 if len(codes) else 0, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes))[::-1]  # one row of each group
    return codes.astype(np.int64), frame.iloc[first].reset_index(drop=True)


def wilson(x, n, conf: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of the rates ``x / n`` (arrays); NaN where ``n`` is 0.

    >>> lo, hi = wilson([10], [100])
    >>> round(float(lo[0]), 4), round(float(hi[0]), 4)
    (0.0552, 0.1744)
    """
    from scipy.special import ndtri

    x = np.asarray(x, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = float(ndtri(0.5 + conf / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = x / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = np.where(x == 0, 0.0, np.clip(centre - half, 0.0, 1.0))
    hi = np.where(x == n, 1.0, np.clip(centre + half, 0.0, 1.0))
    empty = n <= 0
    return np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)


def check_conf(conf) -> float:
    return check_number(conf, "conf", min=0.5, max=0.999999, finite=True)
