"""The ingestion pipeline: raw events (a frame, a CSV or Parquet file, records, sequence lines) to
the arguments of :class:`~persona.data.interactions.Interactions`.

Every reader ends in :func:`clean`, vectorised with numpy and pandas, whose stages are:

1. check the options and that the named columns exist (:func:`_check_columns`);
2. find bad rows -- null ids, missing or unparseable timestamps, null or unknown event types,
   null / non-numeric / non-finite / negative values and weights (``_read_*``). With
   ``strict=True`` the first kind of bad row raises :class:`~persona.errors.DataError` naming the
   column, the first rows and their values, and what to do; with ``strict=False`` the rows are
   dropped, counted per reason in the report and a warning says so;
3. put the kept rows in the canonical order of Interactions (:func:`_canonical_rows`);
4. weight every event (:func:`_base_weights`: event-type weights, values, a weight column);
5. drop exact duplicate events (:func:`_duplicates`);
6. apply the activity filters (:func:`_activity_filters`: ``min_user_events``,
   ``min_item_events``, ``k_core``);
7. apply time decay (:func:`_decay`, ``half_life``);
8. encode ids into :class:`~persona.data.idmap.IdMap` objects (optionally growing existing maps,
   which keeps new data aligned with an old model).

The readers return a dict of the Interactions constructor's arguments, so this module imports
neither :mod:`persona.data.interactions` nor :mod:`persona.data.ingest`: both call it.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .._validate import check_frame, check_number
from .._warn import warn_user
from ..errors import DataError
from ._events import AGGREGATIONS, CleaningReport, _canonical_order
from .idmap import IdMap, normalize_ids

#: Confidence weight of each built-in event type: a purchase says far more than a view.
DEFAULT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "cart": 4.0,
    "purchase": 8.0,
    "search": 0.5,
}

_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_SECONDS_PER_DAY = 86400.0
_TUPLE_FIELDS = ("user", "item", "time", "event", "value")
#: The cleaning options of from_frame (keyword-only in every constructor), with their defaults.
_OPTIONS = ("weight", "default_weight", "value_as_weight", "allow_negative", "time_unit", "drop_duplicates",
            "aggregate", "half_life", "now", "min_user_events", "min_item_events", "k_core", "strict",
            "user_map", "item_map")


def options(scope: dict) -> dict:
    """The cleaning options among a constructor's arguments (``locals()``), to pass on to :func:`clean`."""
    return {k: scope[k] for k in _OPTIONS}


# ---------------------------------------------------------------------------------------- helpers
class _Cleaner:
    """Collects bad rows: raises in strict mode, otherwise drops and counts them."""

    def __init__(self, n: int, strict: bool, report: CleaningReport) -> None:
        self.keep = np.ones(n, dtype=bool)
        self.strict = strict
        self.report = report
        self.dropped: list[str] = []

    def flag(self, bad: np.ndarray, *, column, reason: str, shown, hint: str) -> None:
        bad = np.asarray(bad, dtype=bool)
        if not bad.any():
            return
        if self.strict:
            rows = np.flatnonzero(bad)
            count = len(rows)
            rows = rows[:5]
            vals = _show(shown, rows)
            raise DataError(
                f"column {column!r}: {count} row(s) with {reason} at rows {rows.tolist()} "
                f"(0-based positions; values {vals}); {hint}, or pass strict=False to drop such rows "
                f"(they are counted in interactions.report)"
            )
        new = bad & self.keep
        k = int(new.sum())
        if k:
            self.report.add(reason, k)
            self.dropped.append(f"{k} {reason} (column {column!r})")
            self.keep &= ~new

    def warn(self, n: int) -> None:
        if self.dropped:
            total = n - int(self.keep.sum())
            warn_user(
                f"dropped {total} of {n} rows with bad data: {'; '.join(self.dropped)}; "
                f"see interactions.report, or pass strict=True to raise instead",
                UserWarning,
            )


def _show(shown, rows: np.ndarray) -> list:
    if isinstance(shown, pd.Series):
        out = shown.iloc[rows].tolist()
    else:
        out = np.asarray(shown, dtype=object)[rows].tolist()
    return [None if (isinstance(v, float) and v != v) else v for v in out]


def _numeric(ser: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 values plus masks of null and of present-but-non-numeric entries."""
    null = ser.isna().to_numpy()
    if pd.api.types.is_bool_dtype(ser.dtype) or pd.api.types.is_numeric_dtype(ser.dtype):
        vals = ser.to_numpy(dtype=np.float64, na_value=np.nan)
        return vals, null, np.zeros(len(ser), dtype=bool)
    conv = pd.to_numeric(ser, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return conv, null, np.isnan(conv) & ~null


def _datetime_seconds(values) -> np.ndarray:
    """Epoch seconds (float64, NaN for NaT) of a datetime-like Series (naive means UTC)."""
    ser = pd.Series(values) if not isinstance(values, pd.Series) else values
    if getattr(ser.dt, "tz", None) is not None:
        ser = ser.dt.tz_convert("UTC").dt.tz_localize(None)
    arr = ser.to_numpy()
    return (arr - np.datetime64(0, "s")) / np.timedelta64(1, "s")


def _parse_time(ser: pd.Series, unit: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Timestamps as float64 epoch seconds (UTC); masks of null and of unparseable entries."""
    null = ser.isna().to_numpy()
    dtype = ser.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        return _datetime_seconds(ser), null, np.zeros(len(ser), dtype=bool)
    if pd.api.types.is_bool_dtype(dtype):
        raise DataError(f"column {ser.name!r}: expected timestamps, got booleans; pass time=None or a time column")
    if pd.api.types.is_numeric_dtype(dtype):
        secs = ser.to_numpy(dtype=np.float64, na_value=np.nan) * _TIME_UNITS[unit]
        return secs, null, ~null & ~np.isfinite(secs)
    # strings or objects: epoch numbers written as text, ISO strings or datetime objects
    # a small sample decides whether to try numbers at all: to_numeric over millions of ISO
    # strings is far slower than parsing them as dates
    sample = ser[~null][:100]
    looks_numeric = len(sample) > 0 and bool(pd.to_numeric(sample, errors="coerce").notna().all())
    if looks_numeric:
        num = pd.to_numeric(ser, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if np.all(np.isfinite(num) | null):
            return num * _TIME_UNITS[unit], null, np.zeros(len(ser), dtype=bool)
    is_num = np.zeros(len(ser), dtype=bool)
    if ser.dtype == object:  # may mix datetimes or strings with real numbers (epochs), e.g. from records
        is_num = ser.map(lambda v: isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))).to_numpy(bool)
    parsed = pd.to_datetime(ser.where(~is_num, None) if is_num.any() else ser,
                            utc=True, format="ISO8601", errors="coerce")
    secs = _datetime_seconds(parsed)
    if is_num.any():
        secs[is_num] = ser[is_num].to_numpy(dtype=np.float64) * _TIME_UNITS[unit]
    bad = ~null & ~np.isfinite(secs)
    return secs, null, bad


def _time_scalar(now) -> float:
    if isinstance(now, numbers.Real) and not isinstance(now, bool):
        return float(now)
    try:
        ts = pd.Timestamp(now)
    except (TypeError, ValueError) as e:
        raise DataError(f"now: expected a datetime, ISO string or epoch seconds, got {now!r}") from e
    if ts is pd.NaT:
        raise DataError(f"now: expected a datetime, ISO string or epoch seconds, got {now!r}")
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.timestamp()


def _factorize_ids(ser: pd.Series, column) -> tuple[np.ndarray, np.ndarray]:
    """Local codes (-1 for null) and the normalised distinct ids of an id column."""
    try:
        codes, uniques = pd.factorize(ser)
    except TypeError:  # unhashable values (lists, dicts, sets) cannot be ids; name the rows
        bad = [i for i, v in enumerate(ser.tolist()) if not isinstance(v, Hashable)][:5]
        kinds = sorted({type(ser.iloc[i]).__name__ for i in bad})
        example = repr(ser.iloc[bad[0]])[:40] if bad else "?"
        raise DataError(
            f"column {column!r}: expected string or integer ids, but rows {bad} hold values of type "
            f"{', '.join(kinds)} (e.g. {example}); flatten the column to one id per row (DataFrame.explode) "
            "or convert it (e.g. .astype(str))"
        ) from None
    ids = normalize_ids(np.asarray(uniques), what=f"column {column!r}")
    return codes.astype(np.int64, copy=False), ids


def _map_order(ids: np.ndarray, base: IdMap | None) -> np.ndarray:
    """For each distinct id, a key that orders ids as their indices in the final map will.

    The final map holds only the ids that survive cleaning; since both a new map (sorted ids) and
    a grown one (old indices, then new ids sorted) number any subset in this same order, sorting
    rows by this key now equals sorting them by final index later.
    """
    if base is None:
        rank = np.empty(len(ids), dtype=np.int64)
        rank[np.argsort(ids, kind="stable")] = np.arange(len(ids))
        return rank
    if not isinstance(base, IdMap):
        raise DataError(f"expected an IdMap for user_map/item_map, got {type(base).__name__}")
    return base.grow(ids).lookup(ids)


def _encode(codes: np.ndarray, ids: np.ndarray, base: IdMap | None) -> tuple[IdMap, np.ndarray]:
    """Map local codes of the kept rows to indices of a new (or grown) IdMap."""
    used = np.flatnonzero(np.bincount(codes, minlength=len(ids)))
    table = np.full(len(ids), -1, dtype=np.int64)
    if base is None:
        id_map, pos = IdMap.encode(ids[used])
        table[used] = pos
    else:
        if not isinstance(base, IdMap):
            raise DataError(f"expected an IdMap for user_map/item_map, got {type(base).__name__}")
        id_map = base.grow(ids[used])
        table[used] = id_map.lookup(ids[used])
    return id_map, table[codes]


_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap, well-spread 64-bit hash of each element."""
    z = x + _GOLD
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _duplicated(cols: list[np.ndarray]) -> np.ndarray:
    """True for every row equal (in all ``cols``) to an earlier row.

    Rows are hashed into one uint64 and grouped by hash (one hash-table pass instead of pandas'
    per-column factorisation); every candidate is then compared with its group's first row, and a
    hash collision (two different rows, one hash) falls back to the exact pandas method.
    """
    n = len(cols[0])
    with np.errstate(over="ignore"):
        h = np.zeros(n, dtype=np.uint64)
        for c in cols:
            if c.dtype.kind == "f":
                bits = (c.astype(np.float64) + 0.0).view(np.uint64)  # + 0.0 folds -0.0 into 0.0
            else:
                bits = c.astype(np.int64).view(np.uint64)
            h = _mix(h ^ _mix(bits))
    codes, _ = pd.factorize(h)
    # factorize numbers groups in order of first appearance, so a row is first iff its code is new
    prev_max = np.maximum.accumulate(np.r_[np.int64(-1), codes[:-1]])
    first = codes > prev_max
    rep = np.flatnonzero(first)[codes]
    dup = ~first
    same = np.ones(n, dtype=bool)
    for c in cols:
        same &= c == c[rep]
    if (dup & ~same).any():  # a collision: be exact
        return pd.DataFrame({str(k): c for k, c in enumerate(cols)}).duplicated(keep="first").to_numpy()
    return dup


def _check_options(o: dict) -> None:
    if o["aggregate"] not in AGGREGATIONS:
        raise DataError(f"aggregate must be one of {AGGREGATIONS}, got {o['aggregate']!r}")
    if o["time_unit"] not in _TIME_UNITS:
        raise DataError(f"time_unit must be one of {tuple(_TIME_UNITS)}, got {o['time_unit']!r}")
    for name in ("min_user_events", "min_item_events"):
        v = o[name]
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0:
            raise DataError(f"{name} must be a non-negative integer, got {v!r}")
    k = o["k_core"]
    if k is not None and (not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1):
        raise DataError(f"k_core must be a positive integer or None, got {k!r}")
    check_number(o["half_life"], "half_life", min=0.0, min_open=True, allow_none=True, error=DataError,
                 hint="pass a positive number of days, or None")
    d = o["default_weight"]
    if d is not None:
        d = check_number(d, "default_weight", error=DataError, hint="pass a finite number, or None")
        if d < 0 and not o["allow_negative"]:
            raise DataError(f"default_weight is negative ({d}); pass allow_negative=True to allow it")


def _event_weights(weights, allow_negative: bool) -> dict[str, float]:
    merged = dict(DEFAULT_WEIGHTS)
    if weights is None:
        return merged
    if not isinstance(weights, Mapping):
        raise DataError(
            f"weights must be a dict of event type -> weight, got {type(weights).__name__}; "
            f"for a column of per-event weights pass weight='column'"
        )
    for k, v in weights.items():
        try:
            fv = float(v)
        except (TypeError, ValueError):
            raise DataError(f"weights[{k!r}] must be a number, got {v!r}") from None
        if not np.isfinite(fv):
            raise DataError(f"weights[{k!r}] must be finite, got {v!r}")
        if fv < 0 and not allow_negative:
            raise DataError(f"weights[{k!r}] is negative ({fv}); pass allow_negative=True to allow it")
        merged[str(k)] = fv
    return merged


# ---------------------------------------------------------------------------------------- pipeline
@dataclass
class _Rows:
    """The per-row arrays of the events being cleaned (None for an absent column)."""

    uc: np.ndarray  # local user codes into the distinct user ids (-1: null)
    ic: np.ndarray  # local item codes into the distinct item ids (-1: null)
    ts: np.ndarray | None = None  # epoch seconds
    ev: np.ndarray | None = None  # codes into the event types
    val: np.ndarray | None = None  # the value column
    ew: np.ndarray | None = None  # each row's event-type weight
    wcol: np.ndarray | None = None  # the explicit weight column

    def take(self, idx) -> _Rows:
        """The rows ``idx`` (a bool mask or indices; None: all rows, no copy)."""
        if idx is None:
            return self
        return _Rows(*(None if a is None else a[idx] for a in (getattr(self, f.name) for f in fields(self))))


def clean(
    df: pd.DataFrame,
    user,
    item,
    time=None,
    event=None,
    value=None,
    weights=None,
    *,
    weight=None,
    default_weight=None,
    value_as_weight=None,
    allow_negative: bool = False,
    time_unit: str = "s",
    drop_duplicates: bool = True,
    aggregate: str = "sum",
    half_life=None,
    now=None,
    min_user_events: int = 0,
    min_item_events: int = 0,
    k_core=None,
    strict: bool = True,
    user_map: IdMap | None = None,
    item_map: IdMap | None = None,
    _report: CleaningReport | None = None,
) -> dict[str, Any]:
    """Clean a frame of raw events (the options of :func:`persona.data.ingest.from_frame`).

    Returns the arguments of :class:`~persona.data.interactions.Interactions` as a dict.
    """
    _check_options(dict(aggregate=aggregate, time_unit=time_unit, min_user_events=min_user_events,
                        min_item_events=min_item_events, k_core=k_core, half_life=half_life,
                        default_weight=default_weight, allow_negative=allow_negative))
    df = check_frame(df, "df")
    _check_columns(df, {"user": user, "item": item, "time": time, "event": event, "value": value, "weight": weight},
                   weights=weights, value_as_weight=value_as_weight, half_life=half_life)
    n = len(df)
    if n == 0:
        raise DataError("no rows: the data is empty; pass at least one event")
    report = _report if _report is not None else CleaningReport()
    report.n_input = n
    cleaner = _Cleaner(n, strict, report)

    ucodes, uids = _read_ids(df, user, "user", cleaner)
    icodes, iids = _read_ids(df, item, "item", cleaner)
    rows = _Rows(ucodes, icodes)
    if time is not None:
        rows.ts = _read_times(df, time, time_unit, cleaner)
    event_types: tuple[str, ...] = ()
    if event is not None:
        rows.ev, rows.ew, event_types = _read_events(df, event, weights, weight is None and default_weight is None,
                                                     default_weight, allow_negative, strict, cleaner)
    if value is not None:
        rows.val = _read_numbers(df, value, "value", allow_negative, cleaner)
    if weight is not None:
        rows.wcol = _read_numbers(df, weight, "weight", allow_negative, cleaner)
    cleaner.warn(n)

    rows = _canonical_rows(rows, cleaner.keep, uids, user_map, report)
    use_value = value_as_weight if value_as_weight is not None else (event is None and weight is None)
    w = _base_weights(rows, use_value)
    sel = np.ones(len(rows.uc), dtype=bool)
    if drop_duplicates:
        sel &= ~_duplicates(rows, report)
    sel = _activity_filters(rows.uc, rows.ic, sel, len(uids), len(iids), min_user_events, min_item_events, k_core,
                            report)
    if not sel.all():
        rows, w = rows.take(sel), w[sel]
    if len(rows.uc) == 0:
        raise DataError(f"no events left after cleaning and filtering: {report}; relax the filters")
    if half_life is not None:
        w = _decay(w, rows.ts, half_life, now, report)

    umap, users = _encode(rows.uc, uids, user_map)
    imap, items = _encode(rows.ic, iids, item_map)
    report.n_kept = len(users)
    return dict(user_map=umap, item_map=imap, users=users, items=items, weights=w, timestamps=rows.ts,
                events=rows.ev, values=rows.val, event_types=event_types, aggregate=aggregate, report=report)


def _check_columns(df: pd.DataFrame, named: dict, *, weights, value_as_weight, half_life) -> None:
    """The named columns (``{"user": column, ...}``) exist, and the options they need are there."""
    if named["user"] is None or named["item"] is None:
        raise DataError("user and item columns are required; pass user='...' and item='...'")
    available = list(df.columns)
    unusable = [f"{k}={c!r}" for k, c in named.items() if c is not None and not isinstance(c, Hashable)]
    if unusable:
        raise DataError(f"column names must be strings (or other column labels), got {', '.join(unusable)}; "
                        f"available columns: {available}")
    missing = [f"{k}={c!r}" for k, c in named.items() if c is not None and c not in df.columns]
    if missing:
        raise DataError(
            f"column(s) not found: {', '.join(missing)}; available columns: {available}; "
            f"pass the names of existing columns"
        )
    if weights is not None and named["event"] is None:
        raise DataError("weights (event type -> weight) were given but no event column; pass event='column'")
    if value_as_weight and named["value"] is None:
        raise DataError("value_as_weight=True needs a value column; pass value='column'")
    if half_life is not None and named["time"] is None:
        raise DataError("half_life (time decay) needs timestamps; pass time='column' or half_life=None")


_HINT_FILL = "drop those rows or fill them"


def _read_ids(df: pd.DataFrame, column, what: str, cleaner: _Cleaner) -> tuple[np.ndarray, np.ndarray]:
    """Local codes and distinct ids of the ``what`` ("user" or "item") column; null ids are bad rows."""
    codes, ids = _factorize_ids(df[column], column)
    cleaner.flag(codes < 0, column=column, reason=f"null {what} id", shown=df[column], hint=_HINT_FILL)
    return codes, ids


def _read_times(df: pd.DataFrame, column, time_unit: str, cleaner: _Cleaner) -> np.ndarray:
    """Epoch seconds of the time column; missing and unparseable timestamps are bad rows."""
    ts, tnull, tbad = _parse_time(df[column], time_unit)
    cleaner.flag(tnull, column=column, reason="missing timestamp", shown=df[column], hint=_HINT_FILL)
    cleaner.flag(tbad, column=column, reason="unparseable timestamp", shown=df[column],
                 hint="use datetime64 values, ISO-8601 strings or epoch seconds (see time_unit=)")
    return ts


def _read_events(df: pd.DataFrame, column, weights, unknown_are_bad: bool, default_weight, allow_negative: bool,
                 strict: bool, cleaner: _Cleaner) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Event codes, each row's event-type weight, and the event types.

    Null types are bad rows; so are types without a weight when ``unknown_are_bad`` (no weight
    column and no ``default_weight``), raised with their counts in strict mode.
    """
    ecodes, euniq = pd.factorize(df[column])
    names = [str(x) for x in np.asarray(euniq, dtype=object).tolist()]
    cleaner.flag(ecodes < 0, column=column, reason="null event type", shown=df[column], hint=_HINT_FILL)
    table = _event_weights(weights, allow_negative)
    extra = sorted(set(names) - set(table))
    if unknown_are_bad and extra:
        unknown = np.isin(ecodes, [names.index(x) for x in extra])
        if strict:
            counts = np.bincount(ecodes[unknown], minlength=len(names))
            listed = {x: int(counts[names.index(x)]) for x in extra}
            rows = np.flatnonzero(unknown)[:5]
            raise DataError(
                f"column {column!r}: unknown event types (with their row counts) {listed} at rows {rows.tolist()} "
                f"(0-based positions; values {_show(df[column], rows)}); known types are "
                f"{sorted(table)}; pass weights={{{extra[0]!r}: ...}} for each, default_weight= to weight "
                f"all unknown types, or strict=False to drop such rows"
            )
        cleaner.flag(unknown, column=column, reason="unknown event type", shown=df[column], hint="")
        extra = []
    event_types = tuple(table) + tuple(extra)
    pos = {name: i for i, name in enumerate(event_types)}
    local = np.array([pos.get(x, -1) for x in names] + [-1], dtype=np.int64)
    ev = local[ecodes]  # ecodes == -1 picks the trailing -1
    wtab = np.array([table.get(x, default_weight if default_weight is not None else np.nan)
                     for x in event_types] + [np.nan])
    return ev, wtab[ev], event_types


def _read_numbers(df: pd.DataFrame, column, what: str, allow_negative: bool, cleaner: _Cleaner) -> np.ndarray:
    """float64 values of the ``what`` ("value" or "weight") column; non-numeric, null, non-finite and
    (unless ``allow_negative``) negative entries are bad rows."""
    vals, null, bad = _numeric(df[column])
    cleaner.flag(bad, column=column, reason=f"non-numeric {what}", shown=df[column],
                 hint="convert the column to numbers")
    cleaner.flag(null | ~np.isfinite(np.where(bad, 0.0, vals)), column=column,
                 reason=f"null or non-finite {what}", shown=df[column], hint=_HINT_FILL)
    if not allow_negative:
        cleaner.flag(vals < 0, column=column, reason=f"negative {what}", shown=df[column],
                     hint=f"pass allow_negative=True if negative {what}s are meaningful")
    return vals


def _canonical_rows(rows: _Rows, keep: np.ndarray, uids: np.ndarray, user_map: IdMap | None,
                    report: CleaningReport) -> _Rows:
    """The kept rows in the canonical order of Interactions.

    That order is user index (as the final map will number it), then time, then input position:
    duplicates then sit side by side, and Interactions only has to verify the order.
    """
    keep = np.flatnonzero(keep)
    if len(keep) == 0:
        raise DataError(f"no rows left after cleaning: {report}; fix the data or relax the options")
    ukey = _map_order(uids, user_map)
    order = _canonical_order(ukey[rows.uc[keep]], None if rows.ts is None else rows.ts[keep])
    idx = keep if order is None else keep[order]
    if len(idx) == len(rows.uc) and order is None:
        idx = None
    return rows.take(idx)


def _base_weights(rows: _Rows, use_value: bool) -> np.ndarray:
    """Each event's weight before decay: the weight column, else the event type's, else 1; times the value
    when ``use_value``."""
    if rows.wcol is not None:
        w = rows.wcol.copy()
    elif rows.ew is not None:
        w = rows.ew.astype(np.float64)
    else:
        w = np.ones(len(rows.uc), dtype=np.float64)
    if rows.val is not None and use_value:
        w = w * rows.val
    return w


def _duplicates(rows: _Rows, report: CleaningReport) -> np.ndarray:
    """True for every exact duplicate of an earlier event (same user, item, time, event, value and weight)."""
    uc, ts = rows.uc, rows.ts
    cols = [a for a in (uc, rows.ic, ts, rows.ev, rows.val, rows.wcol) if a is not None]
    if ts is None:
        dup = _duplicated(cols)
    else:  # duplicates share user and time, so only rows next to an equal (user, time) can be one
        same = np.r_[False, (uc[1:] == uc[:-1]) & (ts[1:] == ts[:-1])]
        dup = np.zeros(len(uc), dtype=bool)
        if same.any():
            cand = np.flatnonzero(same | np.r_[same[1:], False])
            dup[cand] = _duplicated([c[cand] for c in cols])
    report.add("duplicate event", int(dup.sum()))
    return dup


def _activity_filters(uc: np.ndarray, ic: np.ndarray, sel: np.ndarray, n_uids: int, n_iids: int,
                      min_user_events: int, min_item_events: int, k_core, report: CleaningReport) -> np.ndarray:
    """``sel`` less the events of too little active users and items: one pass of ``min_user_events``,
    one of ``min_item_events``, then the ``k_core`` until it holds."""
    sel = sel.copy()

    def drop_where(bad: np.ndarray, reason: str) -> None:
        bad = bad & sel
        report.add(reason, int(bad.sum()))
        sel[bad] = False

    if min_user_events > 1:
        cnt = np.bincount(uc[sel], minlength=n_uids)
        drop_where(cnt[uc] < min_user_events, f"user with fewer than {min_user_events} events (min_user_events)")
    if min_item_events > 1:
        cnt = np.bincount(ic[sel], minlength=n_iids)
        drop_where(cnt[ic] < min_item_events, f"item with fewer than {min_item_events} events (min_item_events)")
    if k_core is not None and k_core > 1:
        while True:
            cu = np.bincount(uc[sel], minlength=n_uids)
            ci = np.bincount(ic[sel], minlength=n_iids)
            bad = sel & ((cu[uc] < k_core) | (ci[ic] < k_core))
            if not bad.any():
                break
            drop_where(bad, f"outside the {k_core}-core (k_core)")
    return sel


def _decay(w: np.ndarray, ts: np.ndarray, half_life, now, report: CleaningReport) -> np.ndarray:
    """The weights halved every ``half_life`` days before ``now`` (default the latest timestamp)."""
    t_ref = float(ts.max()) if now is None else _time_scalar(now)
    age = np.maximum(t_ref - ts, 0.0)
    w = w * np.power(0.5, age / (float(half_life) * _SECONDS_PER_DAY))
    report.notes.append(f"time decay: half_life={half_life} days, reference time {t_ref} (epoch s)")
    return w


# ---------------------------------------------------------------------------------------- readers
def read_csv(path, user, item, time, event, value, weights, read_options, options: dict) -> dict[str, Any]:
    """Read a CSV file (only the named columns, when a path with a header) and :func:`clean` it."""
    ro = dict(read_options or {})
    needed = [c for c in (user, item, time, event, value, options["weight"]) if c is not None]
    if isinstance(path, (str, os.PathLike)) and "usecols" not in ro and "header" not in ro:
        header = list(pd.read_csv(path, nrows=0, **ro).columns)
        absent = [c for c in needed if c not in header]
        if absent:
            raise DataError(
                f"column(s) {absent} not found in {os.fspath(path)!r}; available columns: {header}; "
                f"pass the names of existing columns"
            )
        ro["usecols"] = list(dict.fromkeys(needed))
    df = pd.read_csv(path, **ro)
    return clean(df, user, item, time, event, value, weights, **options)


def read_parquet(path, user, item, time, event, value, weights, options: dict) -> dict[str, Any]:
    """Read the named columns of a Parquet file or dataset directory (needs pyarrow) and :func:`clean` them."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            "reading Parquet files needs pyarrow, which is not installed; pip install pyarrow "
            "(or read the file yourself and call Interactions.from_frame)"
        ) from None
    needed = list(dict.fromkeys(c for c in (user, item, time, event, value, options["weight"]) if c is not None))
    names = list(pq.read_schema(path).names) if os.path.isfile(path) else None
    if names is not None:
        absent = [c for c in needed if c not in names]
        if absent:
            raise DataError(
                f"column(s) {absent} not found in {os.fspath(path)!r}; available columns: {names}; "
                f"pass the names of existing columns"
            )
    try:
        table = pq.read_table(path, columns=needed)
    except (KeyError, ValueError) as e:  # a dataset directory without the columns
        raise DataError(f"cannot read columns {needed} from {os.fspath(path)!r}: {e}") from e
    return clean(table.to_pandas(), user, item, time, event, value, weights, **options)


def read_records(records: Iterable, user, item, time, event, value, weights, options: dict) -> dict[str, Any]:
    """:func:`clean` an iterable of dicts (keys named by the columns) or of tuples (``user, item[, time...]``)."""
    recs = records if isinstance(records, list) else list(records)
    if not recs:
        raise DataError("no records: the data is empty; pass at least one event")
    first = recs[0]
    if isinstance(first, Mapping):
        if not all(isinstance(r, Mapping) for r in recs):
            bad = [i for i, r in enumerate(recs) if not isinstance(r, Mapping)][:5]
            raise DataError(f"records mix dicts and other types (rows {bad}); pass all dicts or all tuples")
        df = pd.DataFrame.from_records(recs)
        return clean(df, user, item, time, event, value, weights, **options)
    if not isinstance(first, (tuple, list)):
        raise DataError(
            f"records must be dicts or tuples (user, item[, time[, event[, value]]]), got {type(first).__name__}"
        )
    df = _tuple_frame(recs)
    present = {f: (f if f in df.columns and not df[f].isna().all() else None) for f in ("time", "event", "value")}
    return clean(df, "user", "item", present["time"], present["event"], present["value"], weights, **options)


def _tuple_frame(recs: list) -> pd.DataFrame:
    """Tuple records, all of one length from 2 to 5, as a frame with the columns of :data:`_TUPLE_FIELDS`."""
    try:
        widths = np.fromiter((len(r) for r in recs), dtype=np.int64, count=len(recs))
    except TypeError:
        bad = [i for i, r in enumerate(recs) if not isinstance(r, (tuple, list))][:5]
        raise DataError(f"records mix tuples and other types (rows {bad}); pass all dicts or all tuples") from None
    width = int(widths[0])
    if np.any(widths != width):
        rows = np.flatnonzero(widths != width)[:5].tolist()
        raise DataError(
            f"tuple records must all have the same length; row 0 has {width} fields but rows {rows} have "
            f"{widths[rows].tolist()}; pad them with None"
        )
    if not 2 <= width <= 5:
        raise DataError(f"tuple records need 2 to 5 fields (user, item[, time[, event[, value]]]), got {width}")
    return pd.DataFrame.from_records(recs, columns=list(_TUPLE_FIELDS[:width]))


def read_sequences(path_or_lines, ids: str, **options) -> dict[str, Any]:
    """Read the ``user item item ...`` lines of a file, or the lines themselves, and :func:`clean` them.

    ``options`` are the cleaning options sequence files can have (``user_map``, ``item_map``,
    ``drop_duplicates``, ``aggregate``, ``allow_negative``, the activity filters and ``strict``).
    """
    if ids not in ("int", "str"):
        raise DataError(f"ids must be 'int' or 'str', got {ids!r}")
    lines, source = _sequence_lines(path_or_lines)
    df, report = _parse_sequences(lines, ids, source)
    return clean(df, "user", "item", _report=report, **options)


def _sequence_lines(path_or_lines) -> tuple[list[str], str]:
    """The lines of the file at ``path_or_lines`` (or the given lines, decoded), and how to name their source."""
    if isinstance(path_or_lines, (str, os.PathLike)):
        try:
            with open(path_or_lines, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read {os.fspath(path_or_lines)!r} ({type(e).__name__}: {e}); "
                            "pass the path of a UTF-8 text file, or the lines themselves") from e
        return lines, repr(os.fspath(path_or_lines))
    if isinstance(path_or_lines, (bytes, Mapping)) or not hasattr(path_or_lines, "__iter__"):
        raise DataError(f"from_sequences: expected a file path or an iterable of lines, got "
                        f"{type(path_or_lines).__name__}; pass e.g. ['u1 i1 i2', 'u2 i3']")
    lines = [ln.decode("utf-8", errors="replace") if isinstance(ln, bytes) else ln for ln in path_or_lines]
    bad = [k for k, ln in enumerate(lines) if not isinstance(ln, str)][:5]
    if bad:
        raise DataError(f"from_sequences: expected lines of text ('user item item ...'), but lines {bad} are "
                        f"{sorted({type(lines[k]).__name__ for k in bad})}; pass strings")
    return lines, "the lines"


def _parse_sequences(lines: list[str], ids: str, source: str) -> tuple[pd.DataFrame, CleaningReport]:
    """One (user, item) row per item of every line, and a report noting the blank and item-less lines."""
    heads: list[str] = []
    tokens: list[str] = []
    counts: list[int] = []
    line_nos: list[int] = []
    blank = lonely = 0
    for no, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            blank += 1
            continue
        if len(parts) == 1:
            lonely += 1
            continue
        heads.append(parts[0])
        tokens.extend(parts[1:])
        counts.append(len(parts) - 1)
        line_nos.append(no)
    if not tokens:
        raise DataError(f"no events in {source}: expected lines of 'user item item ...'")
    cnt = np.asarray(counts, dtype=np.int64)
    u_arr = np.asarray(heads)
    i_arr = np.asarray(tokens)
    if ids == "int":
        u_arr = _to_int(u_arr, np.asarray(line_nos), "user", source)
        i_arr = _to_int(i_arr, np.repeat(line_nos, cnt), "item", source)
    df = pd.DataFrame({"user": np.repeat(u_arr, cnt), "item": i_arr}, copy=False)
    report = CleaningReport()
    if blank:
        report.notes.append(f"skipped {blank} blank line(s)")
    if lonely:
        report.notes.append(f"{lonely} line(s) name a user but no items (no events to read)")
    return df, report


def _to_int(tokens: np.ndarray, line_of: np.ndarray, what: str, source: str) -> np.ndarray:
    try:
        return tokens.astype(np.int64)
    except (ValueError, OverflowError):
        ok = np.char.isdigit(np.char.lstrip(tokens, "+-"))
        bad = np.flatnonzero(~ok)[:5]
        if len(bad) == 0:  # digits that overflow int64
            bad = np.arange(min(5, len(tokens)))
        raise DataError(
            f"{what} ids in {source} must be integers; lines {line_of[bad].tolist()} hold "
            f"{tokens[bad].tolist()}; pass ids='str' to read them as strings"
        ) from None
