"""Raw events to cleaned, weighted interactions with Spark SQL, by the rules of :class:`persona.Interactions`.

:func:`clean` runs the stages of persona's own pipeline (``persona.data.ingest``) as Spark jobs,
so a log of billions of rows never has to fit on one machine:

1. check the options and that the named columns exist;
2. find bad rows -- null ids, missing or unparseable timestamps, null or unknown event types,
   null / non-numeric / non-finite / negative values and weights. ``strict=True`` raises
   :class:`~persona.DataError` for the first kind found (in that order), naming the column, the
   count and example values; ``strict=False`` drops them, counts each under its first reason in
   the report, and warns;
3. weight every event (a weight column, else the event type's weight, else 1; times the value
   when ``value_as_weight``);
4. drop exact duplicate events (same user, item, time, event, value and weight);
5. the activity filters: one pass of ``min_user_events``, one of ``min_item_events``, then the
   ``k_core`` until it holds;
6. time decay (``half_life`` days before ``now`` or the latest event);
7. encode ids into :class:`~persona.data.IdMap` objects (distinct ids sorted, or grown from given
   maps), collected on the driver: a persona artifact holds them anyway.

The result, a :class:`SparkInteractions`, keeps the events on the cluster; its :meth:`entries
<SparkInteractions.entries>` are the aggregated user-item weights (the rows of
``Interactions.matrix``: ``aggregate`` sum, max, last or count) that MLlib's ALS trains on, and
:meth:`~SparkInteractions.to_interactions` collects a small one into a persona ``Interactions``.
On the same data both give the same matrix, id maps and report counts (``tests/test_spark.py``).

Timestamps: Spark timestamps are instants; numbers are epochs in ``time_unit``; strings are
epoch numbers or ISO-8601 (a string without a zone is read in the session time zone, which
:func:`persona.spark.local_session` sets to UTC, as persona reads it).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validate import check_bool, check_number
from .._warn import warn_user
from ..data import CleaningReport, IdMap, Interactions
from ..data.ingest import DEFAULT_WEIGHTS
from ..errors import DataError
from ._session import check_dataframe, require_pyspark

__all__ = ["read_events", "clean", "SparkInteractions"]

AGGREGATIONS = ("sum", "max", "last", "count")
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_SECONDS_PER_DAY = 86400.0
_HINT_FILL = "drop those rows or fill them"
#: the largest number of distinct event types read back to the driver to check them
_MAX_EVENT_TYPES = 100_000


# ------------------------------------------------------------------------------------------ reading
def read_events(spark, path: str | None = None, *, format: str = "parquet", table: str | None = None,
                query: str | None = None, options: Mapping[str, str] | None = None):
    """The raw events as a Spark DataFrame, from files, a table, a JDBC source or a SQL query.

    Exactly one of ``path`` (files in ``format``: ``"parquet"``, ``"delta"``, ``"csv"``,
    ``"json"``, ``"orc"``; ``"jdbc"`` reads the table named by ``options["dbtable"]`` or
    ``options["query"]`` from ``options["url"]`` and needs no path), ``table`` (a catalogue table)
    or ``query`` (Spark SQL) says where.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    path : str, optional
    format : str
    table, query : str, optional
    options : mapping of str to str, optional
        Reader options (``header``, ``url``, ``dbtable``, ``user``, ``password``, ``fetchsize``...).

    Returns
    -------
    pyspark.sql.DataFrame

    Examples
    --------
    ::

        events = persona.spark.read_events(spark, "s3://shop/events/", format="delta")
        events = persona.spark.read_events(spark, format="jdbc", options={
            "url": "jdbc:postgresql://db/shop", "dbtable": "events", "user": "reader", "password": "..."})
    """
    require_pyspark()
    given = [name for name, v in (("path", path), ("table", table), ("query", query)) if v is not None]
    if format == "jdbc" and not given:
        given = ["options"]
    if len(given) != 1:
        raise DataError(f"read_events: expected exactly one of path=, table= or query= (or format='jdbc' with "
                        f"options), got {given or 'none'}; say where the events are")
    if not isinstance(format, str) or not format:
        raise DataError(f"read_events: expected format as a name such as 'parquet', got {format!r}")
    opts = {str(k): str(v) for k, v in (options or {}).items()}
    if table is not None:
        return spark.table(table)
    if query is not None:
        return spark.sql(query)
    reader = spark.read.format(format).options(**opts)
    return reader.load() if path is None else reader.load(path)


# ------------------------------------------------------------------------------------------ result
@dataclass(eq=False)
class SparkInteractions:
    """Cleaned events on a Spark cluster, with persona id maps and the cleaning report.

    Attributes
    ----------
    events : pyspark.sql.DataFrame
        One row per kept event: ``user``, ``item`` (external ids), ``user_index``, ``item_index``
        (int, into the maps), ``weight`` (double, after decay), ``timestamp`` (epoch seconds, when
        a time column was named), ``event``, ``value`` (when named) and ``position`` (the input
        order Spark read, which breaks ties of time).
    user_map, item_map : IdMap
    report : CleaningReport
    aggregate : str
        How repeated user-item events become one entry.
    event_types : tuple of str
        The event-type names, as ``Interactions.event_types`` orders them.
    """

    events: Any
    user_map: IdMap
    item_map: IdMap
    report: CleaningReport
    aggregate: str = "sum"
    event_types: tuple = ()

    @property
    def n_users(self) -> int:
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    def __len__(self) -> int:
        return int(self.report.n_kept)

    def __repr__(self) -> str:
        return f"SparkInteractions({len(self)} events, {self.n_users} users x {self.n_items} items)"

    def entries(self):
        """The aggregated user-item weights: a DataFrame ``user_index, item_index, weight`` (int, int, float).

        One row per stored entry of ``Interactions.matrix``: repeated events of a pair are summed
        (``aggregate="sum"``), counted (``"count"``), their largest weight kept (``"max"``) or the
        latest one by time, then input order (``"last"``).
        """
        from pyspark.sql import functions as F

        ev = self.events
        if self.aggregate == "sum":
            agg = F.sum("weight")
        elif self.aggregate == "count":
            agg = F.count(F.lit(1)).cast("double")
        elif self.aggregate == "max":
            agg = F.max("weight")
        else:
            order = F.struct(*(["timestamp"] if "timestamp" in ev.columns else []), "position")
            agg = F.max_by("weight", order)
        return (ev.groupBy("user_index", "item_index").agg(agg.cast("float").alias("weight")))

    def matrix(self):
        """The users x items CSR matrix (float32) of :meth:`entries`, collected on the driver."""
        import scipy.sparse as sp

        pdf = self.entries().toPandas()
        m = sp.csr_matrix((pdf["weight"].to_numpy(np.float32),
                           (pdf["user_index"].to_numpy(np.int64), pdf["item_index"].to_numpy(np.int64))),
                          shape=(self.n_users, self.n_items), dtype=np.float32)
        m.sort_indices()
        return m

    def to_interactions(self) -> Interactions:
        """All kept events collected into a persona :class:`~persona.Interactions` (small data only).

        The same events, weights, timestamps, event codes and values, id maps and report as
        ``Interactions.from_frame`` gives on the same rows and options.
        """
        cols = [c for c in ("user_index", "item_index", "weight", "timestamp", "event", "value", "position")
                if c in self.events.columns]
        pdf = self.events.select(*cols).toPandas().sort_values("position", kind="stable")
        events = None
        if "event" in pdf:
            code = {name: k for k, name in enumerate(self.event_types)}
            events = pdf["event"].map(code).to_numpy(np.int16)
        return Interactions(
            self.user_map, self.item_map, pdf["user_index"].to_numpy(np.int64), pdf["item_index"].to_numpy(np.int64),
            pdf["weight"].to_numpy(np.float64),
            pdf["timestamp"].to_numpy(np.float64) if "timestamp" in pdf else None, events,
            pdf["value"].to_numpy(np.float64) if "value" in pdf else None,
            event_types=self.event_types, aggregate=self.aggregate, report=self.report)


# ------------------------------------------------------------------------------------------ options
def _check_options(aggregate, time_unit, min_user_events, min_item_events, k_core, half_life, default_weight,
                   allow_negative) -> None:
    """The option checks of persona's pipeline, with its messages."""
    if aggregate not in AGGREGATIONS:
        raise DataError(f"aggregate must be one of {AGGREGATIONS}, got {aggregate!r}")
    if time_unit not in _TIME_UNITS:
        raise DataError(f"time_unit must be one of {tuple(_TIME_UNITS)}, got {time_unit!r}")
    for name, v in (("min_user_events", min_user_events), ("min_item_events", min_item_events)):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0:
            raise DataError(f"{name} must be a non-negative integer, got {v!r}")
    if k_core is not None and (not isinstance(k_core, numbers.Integral) or isinstance(k_core, bool) or k_core < 1):
        raise DataError(f"k_core must be a positive integer or None, got {k_core!r}")
    check_number(half_life, "half_life", min=0.0, min_open=True, allow_none=True, error=DataError,
                 hint="pass a positive number of days, or None")
    check_bool(allow_negative, "allow_negative", error=DataError)
    if default_weight is not None:
        d = check_number(default_weight, "default_weight", error=DataError, hint="pass a finite number, or None")
        if d < 0 and not allow_negative:
            raise DataError(f"default_weight is negative ({d}); pass allow_negative=True to allow it")


def _event_weights(weights, allow_negative: bool) -> dict[str, float]:
    """DEFAULT_WEIGHTS with ``weights`` merged over them (checked as persona checks them)."""
    merged = dict(DEFAULT_WEIGHTS)
    if weights is None:
        return merged
    if not isinstance(weights, Mapping):
        raise DataError(f"weights must be a dict of event type -> weight, got {type(weights).__name__}; "
                        f"for a column of per-event weights pass weight='column'")
    for k, v in weights.items():
        try:
            fv = float(v)
        except (TypeError, ValueError):
            raise DataError(f"weights[{k!r}] must be a number, got {v!r}") from None
        if not math.isfinite(fv):
            raise DataError(f"weights[{k!r}] must be finite, got {v!r}")
        if fv < 0 and not allow_negative:
            raise DataError(f"weights[{k!r}] is negative ({fv}); pass allow_negative=True to allow it")
        merged[str(k)] = fv
    return merged


def _now_seconds(now) -> float:
    """``now`` as epoch seconds (naive datetimes and strings are UTC), as persona reads it."""
    if isinstance(now, numbers.Real) and not isinstance(now, bool):
        return float(now)
    import pandas as pd

    try:
        ts = pd.Timestamp(now)
    except (TypeError, ValueError) as e:
        raise DataError(f"now: expected a datetime, ISO string or epoch seconds, got {now!r}") from e
    if ts is pd.NaT:
        raise DataError(f"now: expected a datetime, ISO string or epoch seconds, got {now!r}")
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.timestamp()


def _check_columns(df, named: dict, *, weights, value_as_weight, half_life) -> None:
    if named["user"] is None or named["item"] is None:
        raise DataError("user and item columns are required; pass user='...' and item='...'")
    available = list(df.columns)
    unusable = [f"{k}={c!r}" for k, c in named.items() if c is not None and not isinstance(c, str)]
    if unusable:
        raise DataError(f"column names must be strings, got {', '.join(unusable)}; available columns: {available}")
    missing = [f"{k}={c!r}" for k, c in named.items() if c is not None and c not in df.columns]
    if missing:
        raise DataError(f"column(s) not found: {', '.join(missing)}; available columns: {available}; "
                        "pass the names of existing columns")
    if weights is not None and named["event"] is None:
        raise DataError("weights (event type -> weight) were given but no event column; pass event='column'")
    if value_as_weight and named["value"] is None:
        raise DataError("value_as_weight=True needs a value column; pass value='column'")
    if half_life is not None and named["time"] is None:
        raise DataError("half_life (time decay) needs timestamps; pass time='column' or half_life=None")


# ------------------------------------------------------------------------------------------ columns
def _col(name: str):
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def _try_cast(column, to: str):
    """``try_cast(column AS to)``: null where the value does not convert (ANSI mode raises otherwise)."""
    return column.try_cast(to)


def _id_column(df, name: str, what: str):
    """The id column as Spark strings or longs (NaN means null); DataError for other kinds of ids."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    c = _col(name)
    dtype = df.schema[name].dataType
    if isinstance(dtype, T.StringType):
        return c
    if isinstance(dtype, T.IntegralType):
        return c.cast("long")
    if isinstance(dtype, (T.FloatType, T.DoubleType, T.DecimalType)):
        x = c.cast("double")
        bad = df.filter(~F.isnan(x) & x.isNotNull() & ((x != F.floor(x)) | (F.abs(x) >= 2.0**63))).limit(5)
        shown = [r[0] for r in bad.select(c).collect()]
        if shown:
            raise DataError(f"column {name!r}: expected integer or string ids, got non-integral numbers (values "
                            f"{shown}); convert the column to int or str")
        return F.when(F.isnan(x), None).otherwise(x.cast("long"))
    raise DataError(f"column {name!r}: expected string or integer {what} ids, got Spark type {dtype.simpleString()}; "
                    "convert the column (e.g. .cast('string'))")


def _time_column(df, name: str, time_unit: str):
    """(epoch seconds as double, bad-row condition of unparseable values)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    c = _col(name)
    dtype = df.schema[name].dataType
    unit = _TIME_UNITS[time_unit]
    if isinstance(dtype, T.TimestampType):
        return F.unix_micros(c) / 1e6, F.lit(False)
    if isinstance(dtype, (T.TimestampNTZType, T.DateType)):
        # a wall time without a zone: read in the session time zone (UTC in local_session)
        return F.unix_micros(c.cast("timestamp")) / 1e6, F.lit(False)
    if isinstance(dtype, T.BooleanType):
        raise DataError(f"column {name!r}: expected timestamps, got booleans; pass time=None or a time column")
    if isinstance(dtype, T.NumericType):
        secs = c.cast("double") * unit
        return secs, c.isNotNull() & (F.isnan(secs) | (F.abs(secs) == float("inf")))
    if isinstance(dtype, T.StringType):
        num = _try_cast(c, "double")
        parsed = F.unix_micros(_try_cast(c, "timestamp")) / 1e6
        secs = F.when(num.isNotNull() & ~F.isnan(num) & (F.abs(num) != float("inf")), num * unit).otherwise(parsed)
        return secs, c.isNotNull() & secs.isNull()
    raise DataError(f"column {name!r}: expected timestamps (timestamp, date, epoch numbers or ISO-8601 strings), "
                    f"got Spark type {dtype.simpleString()}; convert the column")


def _number_column(df, name: str):
    """(the value as double, non-numeric condition, null-or-non-finite condition)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    c = _col(name)
    dtype = df.schema[name].dataType
    if isinstance(dtype, (T.NumericType, T.BooleanType)):
        x = c.cast("double")
        non_numeric = F.lit(False)
    elif isinstance(dtype, T.StringType):
        x = _try_cast(c, "double")
        non_numeric = c.isNotNull() & x.isNull()
    else:
        raise DataError(f"column {name!r}: expected numbers, got Spark type {dtype.simpleString()}; "
                        "convert the column to numbers")
    null_or_inf = ~non_numeric & (x.isNull() | F.isnan(x) | (F.abs(x) == float("inf")))
    return x, non_numeric, null_or_inf


# ------------------------------------------------------------------------------------------ cleaning
def clean(events, user: str = "user_id", item: str = "item_id", time: str | None = None, event: str | None = None,
          value: str | None = None, weights: Mapping[str, float] | None = None, *, weight: str | None = None,
          default_weight: float | None = None, value_as_weight: bool | None = None, allow_negative: bool = False,
          time_unit: str = "s", drop_duplicates: bool = True, aggregate: str = "sum", half_life: float | None = None,
          now=None, min_user_events: int = 0, min_item_events: int = 0, k_core: int | None = None,
          strict: bool = True, user_map: IdMap | None = None, item_map: IdMap | None = None) -> SparkInteractions:
    """Clean a Spark DataFrame of raw events as ``persona.Interactions.from_frame`` cleans a pandas one.

    The arguments are those of :func:`persona.data.ingest.from_frame`, with the same meaning and
    defaults (``event`` types weighted by ``weights`` over ``DEFAULT_WEIGHTS``; ``weight`` an
    explicit weight column; ``strict`` raising on the first kind of bad row).

    Parameters
    ----------
    events : pyspark.sql.DataFrame
        One row per event.
    user, item, time, event, value, weights, weight, default_weight, value_as_weight, allow_negative,
    time_unit, drop_duplicates, aggregate, half_life, now, min_user_events, min_item_events, k_core,
    strict, user_map, item_map
        As in :func:`persona.data.ingest.from_frame`.

    Returns
    -------
    SparkInteractions
        The kept events (on the cluster), the id maps and the :class:`~persona.data.CleaningReport`.

    Raises
    ------
    DataError
        Bad options, missing columns, ids of another kind than strings or integers, bad rows with
        ``strict=True`` (the column, how many and example values), or nothing left.

    Examples
    --------
    ::

        inter = persona.spark.clean(events, user="customer", item="sku", time="ts", event="type",
                                    k_core=2, strict=False)
        inter.report              # 41,877,120 of 42,000,000 events kept; dropped ...
        inter.entries()           # user_index, item_index, weight: what ALS trains on
    """
    require_pyspark()
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    check_dataframe(events, "clean: events")
    _check_options(aggregate, time_unit, min_user_events, min_item_events, k_core, half_life, default_weight,
                   allow_negative)
    strict = check_bool(strict, "strict", error=DataError)
    drop_duplicates = check_bool(drop_duplicates, "drop_duplicates", error=DataError)
    for name, m in (("user_map", user_map), ("item_map", item_map)):
        if m is not None and not isinstance(m, IdMap):
            raise DataError(f"expected an IdMap for {name}, got {type(m).__name__}")
    named = {"user": user, "item": item, "time": time, "event": event, "value": value, "weight": weight}
    _check_columns(events, named, weights=weights, value_as_weight=value_as_weight, half_life=half_life)

    # stage 2: every row's first reason to be dropped, in the order persona's pipeline checks them
    cols = {"u": _id_column(events, user, "user"), "i": _id_column(events, item, "item"),
            "position": F.monotonically_increasing_id()}
    reasons = [(user, "null user id", cols["u"].isNull()), (item, "null item id", cols["i"].isNull())]
    if time is not None:
        ts, unparseable = _time_column(events, time, time_unit)
        cols["timestamp"] = ts
        reasons += [(time, "missing timestamp", _col(time).isNull()), (time, "unparseable timestamp", unparseable)]
    event_types: tuple = ()
    unknown_types: list = []
    if event is not None:
        table = _event_weights(weights, allow_negative)
        ev = _col(event).cast("string")
        cols["event"] = ev
        reasons.append((event, "null event type", ev.isNull()))
        unknown = ev.isNotNull() & ~ev.isin(list(table))
        names = [r[0] for r in events.select(ev).where(unknown).distinct().limit(_MAX_EVENT_TYPES + 1).collect()]
        if len(names) > _MAX_EVENT_TYPES:
            raise DataError(f"column {event!r}: more than {_MAX_EVENT_TYPES:,} distinct event types that have no "
                            f"weight; expected a column of event types such as {sorted(table)}; check event=")
        extra = sorted(names)
        if weight is None and default_weight is None and extra:
            reasons.append((event, "unknown event type", unknown))
            unknown_types = extra
            extra = []
        event_types = tuple(table) + tuple(extra)
        lookup = {**table, **{x: (float(default_weight) if default_weight is not None else None) for x in extra}}
        ew = F.lit(None).cast("double")
        for name_, w in lookup.items():
            ew = F.when(ev == F.lit(name_), F.lit(w).cast("double")).otherwise(ew)
        cols["event_weight"] = ew
    for what, column in (("value", value), ("weight", weight)):
        if column is None:
            continue
        x, non_numeric, null_or_inf = _number_column(events, column)
        cols[what if what == "value" else "weight_column"] = x
        reasons += [(column, f"non-numeric {what}", non_numeric), (column, f"null or non-finite {what}", null_or_inf)]
        if not allow_negative:
            reasons.append((column, f"negative {what}", ~non_numeric & ~null_or_inf & (x < 0)))

    reason = F.lit(None).cast("string")
    for _, label, cond in reversed(reasons):
        reason = F.when(cond, F.lit(label)).otherwise(reason)
    rows = events.select(*(expr.alias(name) for name, expr in cols.items()), reason.alias("_reason"))
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    counts = {r["_reason"]: int(r["count"]) for r in rows.groupBy("_reason").count().collect()}
    report = CleaningReport()
    report.n_input = sum(counts.values())
    if report.n_input == 0:
        rows.unpersist()
        raise DataError("no rows: the data is empty; pass at least one event")
    dropped = []
    for column, label, _ in reasons:
        k = counts.get(label, 0)
        if not k:
            continue
        if strict:
            if label == "unknown event type":
                rows.unpersist()
                _raise_unknown_events(events, cols["event"], unknown_types, _event_weights(weights, allow_negative),
                                      column)
            shown = [r[0] for r in events.select(_col(column)).where(reason == label).limit(5).collect()]
            rows.unpersist()
            raise DataError(f"column {column!r}: {k} row(s) with {label} (values {shown}); "
                            f"{_hint(label)}, or pass strict=False to drop such rows (they are counted in the report)")
        report.add(label, k)
        dropped.append(f"{k} {label} (column {column!r})")
    if dropped:
        warn_user(f"dropped {report.n_dropped} of {report.n_input} rows with bad data: {'; '.join(dropped)}; see "
                  "the report, or pass strict=True to raise instead", UserWarning)
    good = rows.where(F.col("_reason").isNull()).drop("_reason")
    if report.n_input == report.n_dropped:
        rows.unpersist()
        raise DataError(f"no rows left after cleaning: {report}; fix the data or relax the options")

    # stage 3: each event's weight
    use_value = value_as_weight if value_as_weight is not None else (event is None and weight is None)
    if weight is not None:
        w = F.col("weight_column")
    elif event is not None:
        w = F.col("event_weight")
    else:
        w = F.lit(1.0)
    if value is not None and use_value:
        w = w * F.col("value")
    good = good.withColumn("weight", w.cast("double"))

    # stages 4-5: duplicates, then activity filters
    n_good = report.n_input - report.n_dropped
    if drop_duplicates:
        key = [c for c in ("u", "i", "timestamp", "event", "value", "weight_column") if c in good.columns]
        good = good.dropDuplicates(key).persist(StorageLevel.MEMORY_AND_DISK)
        n_now = good.count()
        report.add("duplicate event", n_good - n_now)
        n_good = n_now
    good, n_good = _activity_filters(good, n_good, min_user_events, min_item_events, k_core, report)
    rows.unpersist()
    if n_good == 0:
        raise DataError(f"no events left after cleaning and filtering: {report}; relax the filters")

    # stage 6: time decay
    if half_life is not None:
        t_ref = good.agg(F.max("timestamp")).first()[0] if now is None else _now_seconds(now)
        age = F.greatest(F.lit(float(t_ref)) - F.col("timestamp"), F.lit(0.0))
        good = good.withColumn("weight", F.col("weight") * F.pow(F.lit(0.5), age / (float(half_life) * _SECONDS_PER_DAY)))
        report.notes.append(f"time decay: half_life={half_life} days, reference time {float(t_ref)} (epoch s)")

    # stage 7: the id maps, built on the driver, joined back as indices
    spark = events.sparkSession
    umap, uindex = _encode(spark, good, "u", user_map, "user")
    imap, iindex = _encode(spark, good, "i", item_map, "item")
    report.n_kept = n_good
    out = (good.join(uindex, "u").join(iindex, "i")
           .withColumnRenamed("u", "user").withColumnRenamed("i", "item"))
    keep = ["user", "item", "user_index", "item_index", "weight",
            *[c for c in ("timestamp", "event", "value") if c in out.columns], "position"]
    return SparkInteractions(out.select(*keep), umap, imap, report, aggregate, event_types)


def _hint(label: str) -> str:
    if label == "unparseable timestamp":
        return "use timestamp values, ISO-8601 strings or epoch numbers (see time_unit=)"
    if label.startswith("non-numeric"):
        return "convert the column to numbers"
    if label.startswith("negative"):
        what = label.split()[-1]
        return f"pass allow_negative=True if negative {what}s are meaningful"
    return _HINT_FILL


def _raise_unknown_events(events, ev, extra: list, table: dict, column: str) -> None:
    from pyspark.sql import functions as F

    found = events.where(ev.isin(extra)).groupBy(ev.alias("e")).agg(F.count(F.lit(1)).alias("n")).collect()
    listed = {r["e"]: int(r["n"]) for r in sorted(found, key=lambda r: r["e"])}
    raise DataError(f"column {column!r}: unknown event types (with their row counts) {listed}; known types are "
                    f"{sorted(table)}; pass weights={{{extra[0]!r}: ...}} for each, default_weight= to weight all "
                    "unknown types, or strict=False to drop such rows")


def _activity_filters(good, n: int, min_user_events: int, min_item_events: int, k_core, report: CleaningReport):
    """``good`` less the events of too little active users and items, and how many are left."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    def keep_where(df, n_before: int, cond, reason: str):
        kept = df.where(cond).persist(StorageLevel.MEMORY_AND_DISK)
        n_after = kept.count()
        report.add(reason, n_before - n_after)
        return kept, n_after

    def with_counts(df, key: str, name: str):
        return df.join(df.groupBy(key).agg(F.count(F.lit(1)).alias(name)), key)

    if min_user_events > 1:
        good, n = keep_where(with_counts(good, "u", "_cu"), n, F.col("_cu") >= min_user_events,
                             f"user with fewer than {min_user_events} events (min_user_events)")
        good = good.drop("_cu")
    if min_item_events > 1:
        good, n = keep_where(with_counts(good, "i", "_ci"), n, F.col("_ci") >= min_item_events,
                             f"item with fewer than {min_item_events} events (min_item_events)")
        good = good.drop("_ci")
    if k_core is not None and k_core > 1:
        while True:
            counted = with_counts(with_counts(good, "u", "_cu"), "i", "_ci")
            kept, n_after = keep_where(counted, n, (F.col("_cu") >= k_core) & (F.col("_ci") >= k_core),
                                       f"outside the {k_core}-core (k_core)")
            good = kept.drop("_cu", "_ci")
            if n_after == n:
                break
            # a fresh plan each round: the lineage of an iterated join would grow with every round
            good = good.localCheckpoint()
            n = n_after
    return good, n


def _encode(spark, df, column: str, base: IdMap | None, what: str):
    """The IdMap of ``df[column]``'s distinct ids (sorted, or ``base`` grown) and a DataFrame ``column, <what>_index``."""
    import pandas as pd

    from ..data.idmap import normalize_ids

    distinct = df.select(column).distinct().toPandas()[column]
    ids = normalize_ids(distinct.to_numpy(), what=f"{what} ids")
    id_map = IdMap.encode(ids)[0] if base is None else base.grow(ids)
    index = id_map.lookup(ids)
    pdf = pd.DataFrame({column: distinct.to_numpy(), f"{what}_index": index.astype(np.int32)})
    schema = f"{column} {df.schema[column].dataType.simpleString()}, {what}_index int"
    return id_map, spark.createDataFrame(pdf, schema=schema)

