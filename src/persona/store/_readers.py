"""The read side of an :class:`~persona.store.EventStore`: counts, events as a DataFrame, training
``Interactions``, dead letters, and streamed export to Parquet or CSV.

Every read leaves out the events of forgotten users (when the store holds any tombstone) and
copes with rows written behind persona's back (a time that is not a time, an integer id that is
not one): such rows are read, warned about or left out, never a crash.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import logging
import math
import os
import uuid
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

import numpy as np

from .._time import to_epoch
from .._validate import check_int
from ..errors import DataError, ParameterError

if TYPE_CHECKING:
    import pandas as pd

    from ..data.interactions import Interactions
    from .backends import Backend

__all__ = ["Reader"]

log = logging.getLogger("persona.store")

_COLUMNS = ["event_id", "time", "user", "item", "event", "value", "properties"]
CHUNK_ROWS = 100_000  # rows read from the database at a time (and turned into a slice of the frame)


def _epoch(t, what: str) -> float:
    """Epoch seconds (UTC) of a datetime (naive = UTC), date, ISO-8601 string or epoch number."""
    return to_epoch(t, what, error=DataError, hint="; pass a real time or leave it out for 'now'")


class Reader:
    """Queries over one store's table; ``stored_user`` maps a raw user id to the stored one."""

    def __init__(self, backend: Backend, stored_user: Callable[[object], str],
                 consent_default: Callable[[str], bool] | None = None) -> None:
        self._backend = backend
        self._stored_user = stored_user
        self._consent_default = consent_default  # purpose -> its default (refuses an undeclared purpose)

    def _connect(self):
        return self._backend.connect()

    # --------------------------------------------------------------------------- selection
    def where(self, since, until, event_types, user=None, conn=None, consent=None) -> tuple[str, list]:
        """The WHERE clause; rows of forgotten users are left out when ``conn`` sees any tombstone, and
        with ``consent`` (a purpose) the rows of users who do not allow it."""
        s = None if since is None else _epoch(since, "since")
        u = None if until is None else _epoch(until, "until")
        if event_types is not None:
            if isinstance(event_types, str):
                event_types = [event_types]
            event_types = list(event_types)
            bad = [e for e in event_types if not isinstance(e, str) or not e]
            if bad:
                raise ParameterError(f"event_types: expected a list of event names, got {bad[:3]!r} among them")
        stored = None if user is None else self._stored_user(user)
        allow = None
        if consent is not None:
            if self._consent_default is None:  # pragma: no cover - the store always gives it
                raise ParameterError("consent: this reader has no consent registry")
            allow = (consent, self._consent_default(consent))
        forgotten = conn is None or self._backend.has_tombstones(conn)
        return self._backend.where(s, u, event_types, stored, forgotten=forgotten, consent=allow)

    def count(self, since, until, event_types, user=None, consent=None) -> int:
        self.where(since, until, event_types, user, None, consent)  # bad arguments fail before connecting
        conn = self._connect()
        try:
            return self._backend.count(conn, *self.where(since, until, event_types, user, conn, consent))
        finally:
            conn.close()

    def event_counts(self, since, until, event_types, user=None) -> dict[str, int]:
        self.where(since, until, event_types, user)  # bad arguments fail before connecting
        conn = self._connect()
        try:
            counts = self._backend.event_counts(conn, *self.where(since, until, event_types, user, conn))
        finally:
            conn.close()
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def dead_letters(self, limit: int) -> list[dict]:
        check_int(limit, "dead_letters: limit", min=1, expected="a positive integer")
        conn = self._connect()
        try:
            rows = self._backend.dead_letters(conn, int(limit))
        finally:
            conn.close()
        return [{"seq": q, "at": a, "event_id": e, "user": u, "row": r, "reason": why} for q, a, e, u, r, why in rows]

    def scan(self, since, until, event_types, user=None, chunk_size: int | None = None, *, properties: bool = True,
             consent: str | None = None):
        """(total, users_all_int, items_all_int, chunk iterator) from one consistent snapshot.

        Without ``properties`` the rows carry None in their place (the column is not read)."""
        self.where(since, until, event_types, user, None, consent)  # bad arguments fail before connecting
        conn = self._connect()
        try:
            with self._backend.snapshot(conn):
                where, params = self.where(since, until, event_types, user, conn, consent)
                n, users_int, items_int = self._backend.kinds(conn, where, params)
                yield n, users_int, items_int
                yield from self._backend.select(conn, where, params, chunk_size or CHUNK_ROWS, properties=properties)
        finally:
            conn.close()

    def columns(self, since, until, event_types, user=None, consent=None) -> dict | None:
        """The selected events as lists per column (times as float seconds, no properties); None when
        none match. What training reads: the properties column is not read at all."""
        scan = self.scan(since, until, event_types, user, properties=False, consent=consent)
        n, users_int, items_int = next(scan)
        if not n:
            scan.close()
            return None
        cols = {k: [] for k in ("event_id", "ts", "user", "item", "event", "value")}
        for chunk in scan:
            e, t, u, i, ev, v, _, _ = zip(*chunk)
            cols["event_id"] += e
            cols["ts"] += t
            cols["user"] += u
            cols["item"] += i
            cols["event"] += ev
            cols["value"] += v
        cols["ts"] = _floats(cols["ts"])
        if users_int:
            cols["user"] = _ints(cols["user"], "user")
        if items_int:
            cols["item"] = _ints(cols["item"], "item")
        return cols

    # ------------------------------------------------------------------------------ frames
    def events(self, since, until, event_types, user=None, *, properties: bool = True,
               consent: str | None = None) -> pd.DataFrame:
        """The selected events as a DataFrame, built a chunk at a time (see :func:`events_part`) so
        that the rows read from the database never all live as Python objects at once."""
        import pandas as pd

        if not isinstance(properties, bool):
            raise ParameterError(f"events: properties expected True (parse them into dicts) or False (leave the "
                                 f"column out, faster), got {properties!r}")
        names = _COLUMNS if properties else _COLUMNS[:-1]
        scan = self.scan(since, until, event_types, user, properties=properties, consent=consent)
        n, users_int, items_int = next(scan)
        if not n:
            scan.close()
            return pd.DataFrame({c: pd.Series([], dtype=object) for c in names}).astype(
                {"time": "datetime64[us, UTC]", "value": "float64"})
        parts, odd = [], []
        for chunk in scan:
            part = events_part(chunk, users_int, items_int, properties, odd, pd)
            if part is None:  # an id marked as an integer is not one: read every id of that kind as text
                scan.close()
                return self._events_as_text(since, until, event_types, user, properties, chunk, users_int,
                                            items_int, pd, consent)
            parts.append(part)
        if odd:
            _warn_times("events()", odd, None)
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)

    def _events_as_text(self, since, until, event_types, user, properties, chunk, users_int, items_int, pd,
                        consent):
        """:meth:`events` again, with the ids of the kind that failed to read as integers read as text."""
        e, t, u, i, *_ = zip(*chunk)
        users_int = users_int and _ints(u, "user", quiet=True) is not None
        items_int = items_int and _ints(i, "item", quiet=True) is not None
        for what, ok in (("user", users_int), ("item", items_int)):
            if not ok:
                log.warning("persona.store: a stored %s id marked as an integer is not one; reading %s ids as text",
                            what, what)
        scan = self.scan(since, until, event_types, user, properties=properties, consent=consent)
        next(scan)
        parts, odd = [], []
        for chunk in scan:
            part = events_part(chunk, users_int, items_int, properties, odd, pd)
            if part is None:  # the store changed between the reads: every id as text
                part = events_part(chunk, False, False, properties, odd, pd)
            parts.append(part)
        if odd:
            _warn_times("events()", odd, None)
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)

    def impressions(self, since, until, *, placement=None, experiment=None, user=None) -> pd.DataFrame:
        """The impressions, one row per shown item (see :meth:`EventStore.impressions`)."""
        import pandas as pd

        equal = {}
        for name, v in (("placement", placement), ("experiment", experiment)):
            if v is not None:
                if not isinstance(v, str):
                    raise ParameterError(f"impressions: {name} expected a string, got {type(v).__name__}")
                equal[name] = v
        s = None if since is None else _epoch(since, "since")
        u = None if until is None else _epoch(until, "until")
        stored = None if user is None else self._stored_user(user)
        b = self._backend
        conn = self._connect()
        try:
            where, params = b.where(s, u, None, stored, forgotten=b.has_tombstones(conn), table=b.impressions,
                                    equal=equal)
            rows = b.select_impressions(conn, b._sql(where), params)
        finally:
            conn.close()
        return impressions_frame(rows, pd)

    def item_popularity(self, since, until, event_types) -> pd.Series:
        import pandas as pd

        self.where(since, until, event_types)  # bad arguments fail before connecting
        b = self._backend
        conn = self._connect()
        try:
            where, params = self.where(since, until, event_types, None, conn)
            sql = b._sql(where)
            rows = b._all(conn, f"SELECT item_id, count(DISTINCT user_id), min(kinds & 2) FROM {b.table}{sql}"
                                f" GROUP BY item_id", params)
            (users,) = b._one(conn, f"SELECT count(DISTINCT user_id) FROM {b.table}{sql}", params)
        finally:
            conn.close()
        ids = [r[0] for r in rows]
        if rows and all(r[2] for r in rows):
            ids = _ints(ids, "item")
        out = pd.Series([int(r[1]) for r in rows], index=pd.Index(ids, name="item", dtype=object if not rows else None),
                        name="users", dtype="int64")
        out.attrs["users"] = int(users or 0)
        return out

    def interactions(self, since, until, event_types, weights: Mapping[str, float] | None, *, values: bool,
                     consent: str | None = None, **options) -> Interactions:
        import pandas as pd

        from ..data.ingest import DEFAULT_WEIGHTS, from_frame

        unweighted: dict[str, int] = {}
        if event_types is None and options.get("default_weight") is None and options.get("weight") is None:
            event_types = list(dict.fromkeys([*DEFAULT_WEIGHTS, *(weights or {})]))
            # the types left out for want of a weight are named and counted, never dropped silently
            unweighted = {e: n for e, n in self.event_counts(since, until, None).items() if e not in event_types}
        cols = self.columns(since, until, event_types, None, consent)
        if cols is None:
            raise DataError(
                f"no stored events match (since={since!r}, until={until!r}, event_types={event_types!r}) in "
                f"{self._backend.describe()}; track events first or widen the selection"
            )
        df = pd.DataFrame({"user": cols["user"], "item": cols["item"], "time": cols["ts"], "event": cols["event"]})
        if values:
            df["value"] = pd.to_numeric(pd.Series(cols["value"], dtype=object), errors="coerce").astype("float64")
        _, bad = _micros(cols["ts"])
        if bad.any():  # a row written behind persona's back: one odd row must not stop training
            _warn_times("interactions()", cols["event_id"], bad, "left out")
            df = df[~bad].reset_index(drop=True)
        inter = from_frame(df, user="user", item="item", time="time", event="event",
                           value="value" if values else None, weights=weights, **options)
        if unweighted:
            _report_unweighted(inter.report, unweighted)
        return inter

    # ------------------------------------------------------------------------------ one user
    def subject(self, stored: str) -> dict:
        """Everything the store holds under the stored id ``stored``, read in one snapshot: the raw
        rows of its events, impressions, consent answers and history, dead letters, and tombstone.
        Rows a tombstone hides from every other read (written by an older persona after a forget)
        are included: this is what is *held*."""
        b = self._backend
        conn = self._connect()
        try:
            with b.snapshot(conn):
                where, params = b.where(None, None, None, stored, forgotten=False)
                events = [row for chunk in b.select(conn, where, params, CHUNK_ROWS) for row in chunk]
                where, params = b.where(None, None, None, stored, forgotten=False, table=b.impressions)
                impressions = b.select_impressions(conn, b._sql(where), params)
                out = {"events": events, "impressions": impressions, "consent": b.consent_of(conn, stored),
                       "consent_history": b.consent_history(conn, stored),
                       "dead_letters": b.dead_letters_of(conn, stored), "forgotten_at": b.forgotten_at(conn, stored)}
        finally:
            conn.close()
        return out

    # ------------------------------------------------------------------------------ export
    def export(self, path, since, until, event_types: str | Iterable[str] | None, *, chunk_size: int,
               consent: str | None = None) -> int:
        p = os.fspath(path)
        low = p.lower()
        if low.endswith((".parquet", ".pq")):
            write = _write_parquet
        elif low.endswith((".csv", ".csv.gz")):
            write = _write_csv
        else:
            raise ParameterError(f"export: cannot tell the format of {p!r}; end the name in .parquet, .csv or .csv.gz")
        check_int(chunk_size, "export: chunk_size", min=1, expected="a positive integer")
        if write is _write_parquet:
            try:
                importlib.import_module("pyarrow.parquet")
            except ImportError:
                raise ImportError("exporting Parquet needs pyarrow, which is not installed; pip install pyarrow, "
                                  "or export to .csv") from None
        # written beside the target and renamed, so that a reader never sees half a file
        tmp = f"{p}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        odd: list = []  # event ids whose time cannot be written as a time
        try:
            scan = self.scan(since, until, event_types, chunk_size=int(chunk_size), consent=consent)
            _, users_int, items_int = next(scan)
            total = write(tmp, scan, users_int, items_int, odd, gz=low.endswith(".gz"))
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        if odd:
            _warn_times("export()", odd, None, "written without a time")
        return total


_IMPRESSION_FRAME = ["request_id", "user", "placement", "item", "position", "variant", "model_version", "propensity",
                     "time", "experiment", "team", "source"]


def impressions_frame(rows: list, pd):
    """Impression rows (one per request, arrays as JSON text) as one row per shown item, vectorised:
    each request's columns repeated over its items, positions counted from 1."""
    if not rows:
        frame = pd.DataFrame({c: pd.Series([], dtype=object) for c in _IMPRESSION_FRAME})
        return frame.astype({"time": "datetime64[us, UTC]", "propensity": "float64", "position": "int64"})
    rid, ts, user, placement, items, props, version, variant, experiment, teams, source, kinds = zip(*rows)
    lists = [_json_list(x) for x in items]
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    total = int(lengths.sum())
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = np.arange(total, dtype=np.int64) - starts + 1
    flat = [x for xs in lists for x in xs]
    kinds = np.asarray(kinds, dtype=np.int64)
    if total and bool(np.all(kinds & 2)):
        flat = _ints(flat, "item")
    else:
        flat = [x if isinstance(x, str) else str(x) for x in flat]
    users = list(user)
    if bool(np.all(kinds & 1)):
        users = _ints(users, "user")

    def per_item(values, what):  # a per-item JSON array column, None (NaN) where a request has none
        out = []
        for v, n in zip(values, lengths):
            got = _json_list(v) if v is not None else None
            out.extend(got if got is not None and len(got) == n else [None] * n)
        return out

    us, bad = _micros(_floats(ts))
    if bad.any():
        _warn_times("impressions()", rid, bad)
    rep = lambda col: np.repeat(np.asarray(col, dtype=object), lengths)  # noqa: E731
    return pd.DataFrame({
        "request_id": rep(rid), "user": rep(users), "placement": rep(placement),
        "item": np.asarray(flat, dtype=np.int64) if flat and isinstance(flat[0], int) else np.asarray(flat, dtype=object),
        "position": position, "variant": rep(variant), "model_version": rep(version),
        "propensity": pd.to_numeric(pd.Series(per_item(props, "propensities"), dtype=object),
                                    errors="coerce").astype("float64").to_numpy(),
        "time": pd.Series(np.repeat(us, lengths).view("datetime64[us]")).dt.tz_localize("UTC"),
        "experiment": rep(experiment), "team": per_item(teams, "teams"), "source": rep(source),
    })


def _json_list(text) -> list:
    """A stored JSON array (items, propensities, teams); [] for anything else (a row written behind persona's back)."""
    if text is None:
        return []
    try:
        v = json.loads(text)
    except (TypeError, ValueError):
        return []
    return v if isinstance(v, list) else []


def _write_parquet(tmp: str, scan, users_int: bool, items_int: bool, odd: list, *, gz: bool) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("event_id", pa.string()), ("time", pa.timestamp("us", tz="UTC")),
        ("user", pa.int64() if users_int else pa.string()),
        ("item", pa.int64() if items_int else pa.string()),
        ("event", pa.string()), ("value", pa.float64()), ("properties", pa.string()),
    ])
    total = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for chunk in scan:
            writer.write_table(_arrow_chunk(pa, schema, chunk, users_int, items_int, odd))
            total += len(chunk)
    return total


def _write_csv(tmp: str, scan, users_int: bool, items_int: bool, odd: list, *, gz: bool) -> int:
    import csv
    import gzip

    total = 0
    opener = gzip.open if gz else open
    with opener(tmp, "wt", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(_COLUMNS)
        for chunk in scan:
            w.writerows((e, _iso(t, e, odd), u, i, ev, "" if v is None else repr(v), "" if pr is None else pr)
                        for e, t, u, i, ev, v, pr, _ in chunk)
            total += len(chunk)
    return total


_ISO_MIN, _ISO_MAX = -62135596800.0, 253402300800.0  # what datetime can write: years 1 to 9999
_US_LIMIT = 9.2e12  # seconds that fit in int64 microseconds (about 290,000 years either way)


def _floats(ts) -> np.ndarray:
    """Times as float seconds; NaN where a row holds something else (SQLite keeps any type)."""
    try:
        return np.asarray(ts, dtype="float64")
    except (TypeError, ValueError):
        out = np.empty(len(ts))
        for k, t in enumerate(ts):
            try:
                out[k] = float(t)
            except (TypeError, ValueError):
                out[k] = math.nan
        return out


def _ints(ids, what: str, *, quiet: bool = False) -> list | None:
    """Stored ids as Python ints; where one is not an integer: all as text (``quiet``: None instead)."""
    try:
        return [int(x) for x in ids]
    except (TypeError, ValueError):  # a row marked as an int id that is not one: read them all as text
        if quiet:
            return None
        log.warning("persona.store: a stored %s id marked as an integer is not one; reading %s ids as text", what, what)
        return [str(x) for x in ids]


def _micros(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 microseconds (NaT's value where not representable) and the mask of those rows."""
    bad = ~(np.isfinite(ts) & (np.abs(ts) < _US_LIMIT))
    us = np.round(np.where(bad, 0.0, ts) * 1e6).astype("int64")
    us[bad] = np.iinfo("int64").min  # NaT
    return us, bad


def _json_or_text(p):
    if p is None:
        return None
    try:
        return json.loads(p)
    except (TypeError, ValueError, RecursionError):  # written behind persona's back: give it as it is
        return p


_SCAN = json.JSONDecoder().scan_once  # json.loads without its per-call wrapper (C scanner; same result)
_FLAT = (str, int, float, bool, type(None))
_MEMO_LIMIT = 65_536  # distinct property texts remembered per chunk


def parse_properties(texts) -> list:
    """Each stored properties text as ``json.loads`` would give it (None stays None; text that is not
    JSON stays text), about 3-6x faster on a million events:

    * the JSON scanner is called directly (``json.loads`` adds two Python calls and two regex
      matches per text); anything but one JSON value filling the whole text goes through
      :func:`json.loads` as before (leading or trailing whitespace, not JSON, not text);
    * shops' properties repeat (a campaign, a channel, a device): a text seen before whose value is a
      flat dict (strings, numbers, booleans, nulls) is copied instead of parsed again -- every row
      still gets its own dict. The memo stops when the texts turn out to be mostly distinct.
    """
    scan, flat, memo = _SCAN, _FLAT, {}
    use_memo, seen, hits = True, 0, 0
    out = []
    append = out.append
    for t in texts:
        if use_memo:
            v = memo.get(t) if t.__class__ is str else None
            if v is not None:
                hits += 1
                append(v.copy())
                continue
            seen += 1
            if seen == 4096 and hits < seen:  # mostly distinct texts: remembering them costs more than it saves
                use_memo = False
        if t.__class__ is not str:
            append(_json_or_text(t))
            continue
        try:
            v, end = scan(t, 0)
        except (StopIteration, ValueError, RecursionError):
            v, end = _json_or_text(t), -1
        if end != len(t) and end != -1:
            v = _json_or_text(t)
        elif use_memo and v.__class__ is dict and len(memo) < _MEMO_LIMIT \
                and all(x.__class__ in flat for x in v.values()):
            memo[t] = v
            v = v.copy()  # the memo's own dict never reaches the caller
        append(v)
    return out


def events_part(chunk: list, users_int: bool, items_int: bool, properties: bool, odd: list, pd):
    """One chunk of selected rows as a slice of the :meth:`EventStore.events` frame (None when an id
    marked as an integer is not one); event ids of times no timestamp can hold go to ``odd``."""
    e, t, u, i, ev, v, p, _ = zip(*chunk)
    if users_int:
        u = _ints(u, "user", quiet=True)
        if u is None:
            return None
    if items_int:
        i = _ints(i, "item", quiet=True)
        if i is None:
            return None
    us, bad = _micros(_floats(t))
    if bad.any():
        odd += [x for x, b in zip(e, bad) if b]
    cols = {
        "event_id": e,
        "time": pd.Series(us.view("datetime64[us]")).dt.tz_localize("UTC"),
        "user": u,
        "item": i,
        "event": ev,
        "value": pd.to_numeric(pd.Series(v, dtype=object), errors="coerce").astype("float64"),
    }
    if properties:
        cols["properties"] = parse_properties(p)
    return pd.DataFrame(cols)


def _warn_times(where: str, ids, bad, what: str = "read as NaT") -> None:
    odd = list(ids) if bad is None else [e for e, b in zip(ids, bad) if b]
    log.warning("persona.store: %s: %d event(s) hold a time that is not a representable time and were %s "
                "(first: %s); they were not written by this persona's track(), which refuses such times",
                where, len(odd), what, odd[:5])


def _report_unweighted(report, unweighted: dict[str, int]) -> None:
    """Count the events ``interactions()`` left out for want of a weight in ``report``, and warn once."""
    import warnings

    names = ", ".join(f"{e!r} {n}" for e, n in unweighted.items())
    n = sum(unweighted.values())
    report.n_input += n
    report.add("event type without a weight", n)
    report.notes.append(f"left out event types without a weight: {names}; give them one with weights="
                        "{name: w} (or event_types=[...] with default_weight=) to train on them")
    warnings.warn(f"interactions(): left out {n} events of types without a weight ({names}); pass "
                  "weights={name: w} to train on them, or event_types=[...] to choose the types deliberately",
                  UserWarning, stacklevel=4)  # the caller of EventStore.interactions


def _iso(t, event_id, odd: list) -> str:
    try:
        v = float(t)
        if _ISO_MIN <= v < _ISO_MAX:
            return _dt.datetime.fromtimestamp(v, _dt.timezone.utc).isoformat(timespec="microseconds")
    except (TypeError, ValueError, OverflowError, OSError):
        pass
    odd.append(event_id)
    return ""


def _arrow_chunk(pa, schema, chunk, users_int: bool, items_int: bool, odd: list):
    e, t, u, i, ev, v, p, _ = zip(*chunk)
    us, bad = _micros(_floats(t))
    if bad.any():
        odd += [x for x, b in zip(e, bad) if b]
    return pa.Table.from_arrays([
        pa.array(e, pa.string()),
        pa.array(us, pa.int64(), mask=bad).cast(pa.timestamp("us", tz="UTC")),
        pa.array(_ints(u, "user"), pa.int64()) if users_int else pa.array([str(x) for x in u], pa.string()),
        pa.array(_ints(i, "item"), pa.int64()) if items_int else pa.array([str(x) for x in i], pa.string()),
        pa.array(ev, pa.string()),
        pa.array(_floats_or_none(v), pa.float64()),
        pa.array(p, pa.string()),
    ], schema=schema)


def _floats_or_none(v) -> list:
    """Values as floats or None (a non-number a row holds becomes None)."""
    out = []
    for x in v:
        try:
            out.append(None if x is None else float(x))
        except (TypeError, ValueError):
            out.append(None)
    return out
