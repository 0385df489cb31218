"""Turning raw event logs (frames, files, records, sequence files) into :class:`Interactions`.

Every constructor ends in one cleaning pipeline, vectorised with numpy and pandas:

1. check that the named columns exist;
2. find bad rows -- null ids, missing or unparseable timestamps, null or unknown event types,
   null / non-numeric / non-finite / negative values and weights. With ``strict=True`` (the
   default) the first kind of bad row raises :class:`~persona.errors.DataError` naming the column,
   the first rows and their values, and what to do; with ``strict=False`` the rows are dropped,
   counted per reason in ``interactions.report`` and a warning says so;
3. weight every event (event-type weights, values, an explicit weight column);
4. drop exact duplicate events (``drop_duplicates=True``);
5. apply the activity filters (``min_user_events``, ``min_item_events``, ``k_core``);
6. apply time decay (``half_life``);
7. encode ids into :class:`~persona.data.idmap.IdMap` objects (optionally growing existing maps,
   which keeps new data aligned with an old model).

Nothing is dropped silently: each dropped row is counted under one reason in the
:class:`~persona.data.interactions.CleaningReport`.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Hashable, Mapping
from typing import Iterable

import numpy as np
import pandas as pd

from .._validate import check_frame, check_keywords, check_number
from .._warn import warn_user
from ..errors import DataError
from .idmap import IdMap, normalize_ids
from .interactions import AGGREGATIONS, CleaningReport, Interactions, _canonical_order, _refuse_time_options

__all__ = [
    "DEFAULT_WEIGHTS",
    "from_frame",
    "from_csv",
    "from_parquet",
    "from_records",
    "from_sequences",
]

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


def _options(scope: dict) -> dict:
    """The cleaning options among a constructor's arguments (``locals()``), to pass on to ``_ingest``."""
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
def _ingest(
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
) -> Interactions:
    opts = dict(aggregate=aggregate, time_unit=time_unit, min_user_events=min_user_events,
                min_item_events=min_item_events, k_core=k_core, half_life=half_life,
                default_weight=default_weight, allow_negative=allow_negative)
    _check_options(opts)
    df = check_frame(df, "df")
    named = {"user": user, "item": item, "time": time, "event": event, "value": value, "weight": weight}
    if user is None or item is None:
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
    if weights is not None and event is None:
        raise DataError("weights (event type -> weight) were given but no event column; pass event='column'")
    if value_as_weight and value is None:
        raise DataError("value_as_weight=True needs a value column; pass value='column'")
    if half_life is not None and time is None:
        raise DataError("half_life (time decay) needs timestamps; pass time='column' or half_life=None")

    n = len(df)
    if n == 0:
        raise DataError("no rows: the data is empty; pass at least one event")
    report = _report if _report is not None else CleaningReport()
    report.n_input = n
    clean = _Cleaner(n, strict, report)
    hint_fill = "drop those rows or fill them"

    # ids
    ucodes, uids = _factorize_ids(df[user], user)
    clean.flag(ucodes < 0, column=user, reason="null user id", shown=df[user], hint=hint_fill)
    icodes, iids = _factorize_ids(df[item], item)
    clean.flag(icodes < 0, column=item, reason="null item id", shown=df[item], hint=hint_fill)

    # timestamps
    ts = None
    if time is not None:
        ts, tnull, tbad = _parse_time(df[time], time_unit)
        clean.flag(tnull, column=time, reason="missing timestamp", shown=df[time], hint=hint_fill)
        clean.flag(tbad, column=time, reason="unparseable timestamp", shown=df[time],
                   hint="use datetime64 values, ISO-8601 strings or epoch seconds (see time_unit=)")

    # event types
    ev = None
    event_types: tuple[str, ...] = ()
    ew = None
    if event is not None:
        ecodes, euniq = pd.factorize(df[event])
        names = [str(x) for x in np.asarray(euniq, dtype=object).tolist()]
        clean.flag(ecodes < 0, column=event, reason="null event type", shown=df[event], hint=hint_fill)
        table = _event_weights(weights, allow_negative)
        extra = sorted(set(names) - set(table))
        if weight is None and default_weight is None and extra:
            unknown = np.isin(ecodes, [names.index(x) for x in extra])
            if strict:
                counts = np.bincount(ecodes[unknown], minlength=len(names))
                listed = {x: int(counts[names.index(x)]) for x in extra}
                rows = np.flatnonzero(unknown)[:5]
                raise DataError(
                    f"column {event!r}: unknown event types (with their row counts) {listed} at rows {rows.tolist()} "
                    f"(0-based positions; values {_show(df[event], rows)}); known types are "
                    f"{sorted(table)}; pass weights={{{extra[0]!r}: ...}} for each, default_weight= to weight "
                    f"all unknown types, or strict=False to drop such rows"
                )
            clean.flag(unknown, column=event, reason="unknown event type", shown=df[event], hint="")
            extra = []
        event_types = tuple(table) + tuple(extra)
        pos = {name: i for i, name in enumerate(event_types)}
        local = np.array([pos.get(x, -1) for x in names] + [-1], dtype=np.int64)
        ev = local[ecodes]  # ecodes == -1 picks the trailing -1
        wtab = np.array([table.get(x, default_weight if default_weight is not None else np.nan)
                         for x in event_types] + [np.nan])
        ew = wtab[ev]

    # values and explicit weights
    val = None
    if value is not None:
        val, vnull, vbad = _numeric(df[value])
        clean.flag(vbad, column=value, reason="non-numeric value", shown=df[value],
                   hint="convert the column to numbers")
        clean.flag(vnull | ~np.isfinite(np.where(vbad, 0.0, val)), column=value,
                   reason="null or non-finite value", shown=df[value], hint=hint_fill)
        if not allow_negative:
            clean.flag(val < 0, column=value, reason="negative value", shown=df[value],
                       hint="pass allow_negative=True if negative values are meaningful")
    wcol = None
    if weight is not None:
        wcol, wnull, wbad = _numeric(df[weight])
        clean.flag(wbad, column=weight, reason="non-numeric weight", shown=df[weight],
                   hint="convert the column to numbers")
        clean.flag(wnull | ~np.isfinite(np.where(wbad, 0.0, wcol)), column=weight,
                   reason="null or non-finite weight", shown=df[weight], hint=hint_fill)
        if not allow_negative:
            clean.flag(wcol < 0, column=weight, reason="negative weight", shown=df[weight],
                       hint="pass allow_negative=True if negative weights are meaningful")
    clean.warn(n)

    keep = np.flatnonzero(clean.keep)
    if len(keep) == 0:
        raise DataError(f"no rows left after cleaning: {report}; fix the data or relax the options")

    # Put the rows in the canonical order of Interactions now (user index as the final map will
    # number it, then time, then input position): duplicates then sit side by side, and
    # Interactions only has to verify the order.
    ukey = _map_order(uids, user_map)
    order = _canonical_order(ukey[ucodes[keep]], None if ts is None else ts[keep])
    idx = keep if order is None else keep[order]
    if len(idx) == len(ucodes) and order is None:
        idx = None

    def take(a):
        return a if (a is None or idx is None) else a[idx]

    uc, ic, ts, ev, val, ew, wcol = (take(a) for a in (ucodes, icodes, ts, ev, val, ew, wcol))

    # weights
    if wcol is not None:
        w = wcol.copy()
    elif ew is not None:
        w = ew.astype(np.float64)
    else:
        w = np.ones(len(uc), dtype=np.float64)
    if val is not None:
        use_value = value_as_weight if value_as_weight is not None else (event is None and weight is None)
        if use_value:
            w = w * val

    # exact duplicates, then activity filters
    sel = np.ones(len(uc), dtype=bool)
    if drop_duplicates:
        cols = [a for a in (uc, ic, ts, ev, val, wcol) if a is not None]
        if ts is None:
            dup = _duplicated(cols)
        else:  # duplicates share user and time, so only rows next to an equal (user, time) can be one
            same = np.r_[False, (uc[1:] == uc[:-1]) & (ts[1:] == ts[:-1])]
            dup = np.zeros(len(uc), dtype=bool)
            if same.any():
                cand = np.flatnonzero(same | np.r_[same[1:], False])
                dup[cand] = _duplicated([c[cand] for c in cols])
        report.add("duplicate event", int(dup.sum()))
        sel &= ~dup

    def drop_where(bad: np.ndarray, reason: str) -> None:
        nonlocal sel
        bad = bad & sel
        report.add(reason, int(bad.sum()))
        sel &= ~bad

    if min_user_events > 1:
        cnt = np.bincount(uc[sel], minlength=len(uids))
        drop_where(cnt[uc] < min_user_events, f"user with fewer than {min_user_events} events (min_user_events)")
    if min_item_events > 1:
        cnt = np.bincount(ic[sel], minlength=len(iids))
        drop_where(cnt[ic] < min_item_events, f"item with fewer than {min_item_events} events (min_item_events)")
    if k_core is not None and k_core > 1:
        while True:
            cu = np.bincount(uc[sel], minlength=len(uids))
            ci = np.bincount(ic[sel], minlength=len(iids))
            bad = sel & ((cu[uc] < k_core) | (ci[ic] < k_core))
            if not bad.any():
                break
            drop_where(bad, f"outside the {k_core}-core (k_core)")

    if not sel.all():
        uc, ic, w = uc[sel], ic[sel], w[sel]
        ts, ev, val = (None if a is None else a[sel] for a in (ts, ev, val))
    if len(uc) == 0:
        raise DataError(f"no events left after cleaning and filtering: {report}; relax the filters")

    # time decay
    if half_life is not None:
        t_ref = float(ts.max()) if now is None else _time_scalar(now)
        age = np.maximum(t_ref - ts, 0.0)
        w = w * np.power(0.5, age / (float(half_life) * _SECONDS_PER_DAY))
        report.notes.append(f"time decay: half_life={half_life} days, reference time {t_ref} (epoch s)")

    umap, users = _encode(uc, uids, user_map)
    imap, items = _encode(ic, iids, item_map)
    report.n_kept = len(users)
    return Interactions(
        umap, imap, users, items, w, ts, ev, val,
        event_types=event_types, aggregate=aggregate, report=report,
    )


# ---------------------------------------------------------------------------------------- public API
@check_keywords
def from_frame(df, user, item, time=None, event=None, value=None, weights=None, *, weight=None,
               default_weight=None, value_as_weight=None, allow_negative: bool = False, time_unit: str = "s",
               drop_duplicates: bool = True, aggregate: str = "sum", half_life=None, now=None,
               min_user_events: int = 0, min_item_events: int = 0, k_core=None, strict: bool = True,
               user_map: IdMap | None = None, item_map: IdMap | None = None) -> Interactions:
    """Build :class:`Interactions` from a table of events (pandas, polars, pyarrow, ...).

    Parameters
    ----------
    df : pandas.DataFrame, polars.DataFrame, pyarrow.Table or another table
        One row per event. A table that is not pandas is converted once: through its
        ``to_pandas()`` (polars, pyarrow), the Arrow C stream (``__arrow_c_stream__``) or the
        dataframe interchange protocol (``__dataframe__``). A polars LazyFrame needs ``.collect()``.
    user, item : str
        Columns of external user and item ids (strings or integers, not a mix).
    time : str, optional
        Column of timestamps: datetime64 (naive means UTC), ISO-8601 strings or epoch numbers
        (see ``time_unit``). Stored as float64 epoch seconds (UTC).
    event : str, optional
        Column of event types: the built-in ``view``, ``click``, ``cart``, ``purchase``,
        ``search``, or names given in ``weights``.
    value : str, optional
        Numeric column (rating, quantity, price) stored in ``values``.
    weights : dict of str -> float, optional
        Weight of each event type, merged over :data:`DEFAULT_WEIGHTS`: ``view`` 1, ``click`` 2,
        ``cart`` 4, ``purchase`` 8, ``search`` 0.5. Custom event names are allowed once they have a
        weight here. Needs ``event``.
    weight : str, optional
        Keyword-only, like all that follow. Column of explicit per-event weights. When given it is
        the base weight and event-type weights are not applied (every event type is accepted and
        kept as a label).
    default_weight : float, optional
        Weight of event types that are neither built in nor in ``weights``. Without it, unknown
        event types are bad rows.
    value_as_weight : bool, optional
        ``True``: multiply the weight by ``value``. ``False``: only store the value. The default
        ``None`` uses the value as the weight when there is no ``event`` (and no ``weight``)
        column -- explicit ratings -- and only stores it otherwise.
    allow_negative : bool, default False
        Whether negative values and weights are valid (e.g. dislikes); when False they are bad rows.
    time_unit : {"s", "ms", "us", "ns"}, default "s"
        Unit of numeric (epoch) timestamps. Datetime columns and ISO strings need no unit.
    drop_duplicates : bool, default True
        Drop exact duplicate events (same user, item, time, event, value and weight); they are
        counted in the report as ``"duplicate event"``.
    aggregate : {"sum", "max", "last", "count"}, default "sum"
        How repeated user-item events become one matrix entry.
    half_life : float, optional
        Time decay in days: ``weight *= 0.5 ** ((now - t) / half_life)``. Events after ``now``
        are not boosted (their age counts as 0). Needs ``time``.
    now : datetime, str or float, optional
        Reference time of the decay (naive means UTC; a number is epoch seconds); default the
        latest timestamp in the data.
    min_user_events, min_item_events : int, default 0
        Drop users, then items, with fewer events (one pass each, after de-duplication).
    k_core : int, optional
        Repeatedly drop users and items with fewer than ``k_core`` events until every remaining
        user and item has at least ``k_core``.
    strict : bool, default True
        Raise :class:`~persona.errors.DataError` on bad rows (null ids, missing or unparseable
        timestamps, null or unknown event types, null / non-numeric / non-finite / negative values
        or weights), or, when False, drop them, count them per reason in ``report`` and warn.
    user_map, item_map : IdMap, optional
        Existing maps to grow with the new ids; known ids keep their indices, so new data lines up
        with a model trained on the old maps.

    Returns
    -------
    Interactions
        Its ``report`` (a :class:`~persona.data.interactions.CleaningReport`) counts the rows read,
        kept and dropped per reason.

    Raises
    ------
    DataError
        Missing columns (the message lists the available ones), empty data, mixed id types, bad
        options, and bad rows when ``strict=True``.
    ParameterError
        An unknown keyword (the message names the nearest valid one: ``min_user_event`` ->
        ``min_user_events``).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"u": ["a", "a", "b"], "i": [1, 2, 1],
    ...                    "e": ["view", "purchase", "view"]})
    >>> inter = from_frame(df, user="u", item="i", event="e")
    >>> inter.matrix.toarray().tolist()
    [[1.0, 8.0], [1.0, 0.0]]
    """
    return _ingest(df, user, item, time, event, value, weights, **_options(locals()))


@check_keywords
def from_csv(path, user, item, time=None, event=None, value=None, weights=None, *, read_options=None,
             weight=None, default_weight=None, value_as_weight=None, allow_negative: bool = False,
             time_unit: str = "s", drop_duplicates: bool = True, aggregate: str = "sum", half_life=None, now=None,
             min_user_events: int = 0, min_item_events: int = 0, k_core=None, strict: bool = True,
             user_map: IdMap | None = None, item_map: IdMap | None = None) -> Interactions:
    """Read a CSV file of events with :func:`pandas.read_csv`, then clean it as :func:`from_frame`.

    Parameters
    ----------
    path : str, path or file-like
    user, item, time, event, value, weights
        As in :func:`from_frame`.
    read_options : dict, optional
        Extra arguments of :func:`pandas.read_csv`. Ids that look like numbers are read as
        numbers (zero-padded codes lose their zeros): pass ``{"dtype": {"item_id": str}}`` to keep
        them as strings.
    weight, default_weight, value_as_weight, allow_negative, time_unit, drop_duplicates, aggregate, \
half_life, now, min_user_events, min_item_events, k_core, strict, user_map, item_map
        Cleaning options (keyword-only), as in :func:`from_frame`.

    Examples
    --------
    >>> import io
    >>> inter = from_csv(io.StringIO("user_id,item_id\\nu1,a\\nu2,a\\n"), "user_id", "item_id")
    >>> inter.n_users, inter.n_items
    (2, 1)
    """
    options = _options(locals())
    ro = dict(read_options or {})
    needed = [c for c in (user, item, time, event, value, weight) if c is not None]
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
    return _ingest(df, user, item, time, event, value, weights, **options)


@check_keywords
def from_parquet(path, user, item, time=None, event=None, value=None, weights=None, *, weight=None,
                 default_weight=None, value_as_weight=None, allow_negative: bool = False, time_unit: str = "s",
                 drop_duplicates: bool = True, aggregate: str = "sum", half_life=None, now=None,
                 min_user_events: int = 0, min_item_events: int = 0, k_core=None, strict: bool = True,
                 user_map: IdMap | None = None, item_map: IdMap | None = None) -> Interactions:
    """Read a Parquet file (or dataset directory) of events, then clean it as :func:`from_frame`.

    Needs pyarrow (``pip install pyarrow``). Only the named columns are read.

    Parameters
    ----------
    path : str or path
    user, item, time, event, value, weights
        As in :func:`from_frame`; the cleaning options that follow are keyword-only, as there.
    """
    options = _options(locals())
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            "reading Parquet files needs pyarrow, which is not installed; pip install pyarrow "
            "(or read the file yourself and call Interactions.from_frame)"
        ) from None
    needed = list(dict.fromkeys(c for c in (user, item, time, event, value, weight) if c is not None))
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
    return _ingest(table.to_pandas(), user, item, time, event, value, weights, **options)


@check_keywords
def from_records(records: Iterable, user="user", item="item", time=None, event=None, value=None, weights=None, *,
                 weight=None, default_weight=None, value_as_weight=None, allow_negative: bool = False,
                 time_unit: str = "s", drop_duplicates: bool = True, aggregate: str = "sum", half_life=None,
                 now=None, min_user_events: int = 0, min_item_events: int = 0, k_core=None, strict: bool = True,
                 user_map: IdMap | None = None, item_map: IdMap | None = None) -> Interactions:
    """Build :class:`Interactions` from an iterable of dicts or of tuples.

    Parameters
    ----------
    records : iterable
        Either dicts (keys named by ``user``, ``item``, ``time``, ``event``, ``value``; a missing
        key is a null) or tuples in the fixed order ``(user, item[, time[, event[, value]]])``, all
        of one length. For tuples the column-name arguments are ignored: the position decides,
        and a position that is ``None`` in every tuple is treated as absent.
    user, item, time, event, value, weights
        As in :func:`from_frame`; the cleaning options that follow are keyword-only, as there.

    Examples
    --------
    >>> inter = from_records([("u1", "a", 10, "view"), ("u1", "b", 20, "cart")])
    >>> inter.matrix.toarray().tolist()
    [[1.0, 4.0]]
    >>> from_records([{"user": 1, "item": 7}]).item_ids.tolist()
    [7]
    """
    options = _options(locals())
    recs = records if isinstance(records, list) else list(records)
    if not recs:
        raise DataError("no records: the data is empty; pass at least one event")
    first = recs[0]
    if isinstance(first, Mapping):
        if not all(isinstance(r, Mapping) for r in recs):
            bad = [i for i, r in enumerate(recs) if not isinstance(r, Mapping)][:5]
            raise DataError(f"records mix dicts and other types (rows {bad}); pass all dicts or all tuples")
        df = pd.DataFrame.from_records(recs)
        return _ingest(df, user, item, time, event, value, weights, **options)
    if not isinstance(first, (tuple, list)):
        raise DataError(
            f"records must be dicts or tuples (user, item[, time[, event[, value]]]), got {type(first).__name__}"
        )
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
    names = list(_TUPLE_FIELDS[:width])
    df = pd.DataFrame.from_records(recs, columns=names)
    present = {f: (f if f in df.columns and not df[f].isna().all() else None) for f in ("time", "event", "value")}
    return _ingest(df, "user", "item", present["time"], present["event"], present["value"], weights, **options)


@_refuse_time_options
@check_keywords
def from_sequences(path_or_lines, *, user_map: IdMap | None = None, item_map: IdMap | None = None,
                   ids: str = "int", drop_duplicates: bool = False, aggregate: str = "sum",
                   allow_negative: bool = False, min_user_events: int = 0, min_item_events: int = 0, k_core=None,
                   strict: bool = True) -> Interactions:
    """Read the one-line-per-user format ``user item item ...`` (items in time order).

    This is the format of the preprocessed Amazon Beauty / LastFM files. There are no timestamps
    (``timestamps`` is None); the order within a line is kept as each user's event order.

    Parameters
    ----------
    path_or_lines : str, path or iterable of str
        A file path, or the lines themselves.
    user_map, item_map : IdMap, optional
        Existing maps to grow with the new ids; known ids keep their indices.
    ids : {"int", "str"}, default "int"
        Type of the ids in the file.
    drop_duplicates : bool, default False
        Without timestamps a repeated item on one line is a repeat event, not a duplicate, so
        nothing is dropped by default.
    aggregate, allow_negative, min_user_events, min_item_events, k_core, strict
        Cleaning options of :func:`from_frame`. Options about times, event types and values
        (``time``, ``half_life``...) are a DataError: the format has none.

    Examples
    --------
    >>> inter = from_sequences(["1 10 11 12", "", "2 11 10"])
    >>> [inter.item_ids[inter.sequence(u)].tolist() for u in range(inter.n_users)]
    [[10, 11, 12], [11, 10]]
    """
    if ids not in ("int", "str"):
        raise DataError(f"ids must be 'int' or 'str', got {ids!r}")
    options = dict(aggregate=aggregate, allow_negative=allow_negative, min_user_events=min_user_events,
                   min_item_events=min_item_events, k_core=k_core, strict=strict)
    if isinstance(path_or_lines, (str, os.PathLike)):
        try:
            with open(path_or_lines, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read {os.fspath(path_or_lines)!r} ({type(e).__name__}: {e}); "
                            "pass the path of a UTF-8 text file, or the lines themselves") from e
        source = repr(os.fspath(path_or_lines))
    else:
        if isinstance(path_or_lines, (bytes, Mapping)) or not hasattr(path_or_lines, "__iter__"):
            raise DataError(f"from_sequences: expected a file path or an iterable of lines, got "
                            f"{type(path_or_lines).__name__}; pass e.g. ['u1 i1 i2', 'u2 i3']")
        lines = [ln.decode("utf-8", errors="replace") if isinstance(ln, bytes) else ln for ln in path_or_lines]
        bad = [k for k, ln in enumerate(lines) if not isinstance(ln, str)][:5]
        if bad:
            raise DataError(f"from_sequences: expected lines of text ('user item item ...'), but lines {bad} are "
                            f"{sorted({type(lines[k]).__name__ for k in bad})}; pass strings")
        source = "the lines"
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
    return _ingest(df, "user", "item", user_map=user_map, item_map=item_map, drop_duplicates=drop_duplicates,
                   _report=report, **options)


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
