"""The slow, obviously-correct twin of ``EventStore.events()``: the reading path before the chunked,
faster one (every row's properties through ``json.loads``, all columns as lists, one DataFrame).

tests/test_store.py checks the store's frame equal to this one; benchmarks/bench_store_read.py
times both in one run.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

COLUMNS = ["event_id", "time", "user", "item", "event", "value", "properties"]


def _floats(ts) -> np.ndarray:
    try:
        return np.asarray(ts, dtype="float64")
    except (TypeError, ValueError):
        pass
    out = np.empty(len(ts))
    for k, t in enumerate(ts):
        try:
            out[k] = float(t)
        except (TypeError, ValueError):
            out[k] = np.nan
    return out


def _ids(ids, as_int: bool) -> list:
    if not as_int:
        return list(ids)
    try:
        return [int(x) for x in ids]
    except (TypeError, ValueError):
        return [str(x) for x in ids]


def _json_or_text(p):
    if p is None:
        return None
    try:
        return json.loads(p)
    except (TypeError, ValueError, RecursionError):
        return p


def old_events(store, since=None, until=None, event_types=None, *, user=None, properties=True) -> pd.DataFrame:
    """``store.events(...)`` the way it was read before (one list per column, one parse per row)."""
    scan = store._reader.scan(since, until, event_types, user, properties=True)
    n, users_int, items_int = next(scan)
    names = COLUMNS if properties else COLUMNS[:-1]
    if not n:
        scan.close()
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in names}).astype(
            {"time": "datetime64[us, UTC]", "value": "float64"})
    cols = {k: [] for k in ("event_id", "ts", "user", "item", "event", "value", "properties")}
    for chunk in scan:  # as the old Reader.columns did
        e, t, u, i, ev, v, p, _ = zip(*chunk)
        cols["event_id"] += e
        cols["ts"] += t
        cols["user"] += u
        cols["item"] += i
        cols["event"] += ev
        cols["value"] += v
        cols["properties"] += p
    ts = _floats(cols["ts"])
    bad = ~(np.isfinite(ts) & (np.abs(ts) < 9.2e12))
    us = np.round(np.where(bad, 0.0, ts) * 1e6).astype("int64")
    us[bad] = np.iinfo("int64").min
    frame = {
        "event_id": cols["event_id"],
        "time": pd.Series(us.view("datetime64[us]")).dt.tz_localize("UTC"),
        "user": _ids(cols["user"], users_int),
        "item": _ids(cols["item"], items_int),
        "event": cols["event"],
        "value": pd.to_numeric(pd.Series(cols["value"], dtype=object), errors="coerce").astype("float64"),
    }
    if properties:
        frame["properties"] = [_json_or_text(p) for p in cols["properties"]]
    return pd.DataFrame(frame)
