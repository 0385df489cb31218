"""On-site metrics of what the service showed: attribution of clicks and purchases to impressions,
and CTR, add-to-cart rate, conversion, revenue per impression, coverage and novelty with intervals.

An impression is one shown item of one answer (``store.impressions()``: request id, user,
placement, item, position, variant, model version, time). An outcome is a click, cart or
purchase event whose ``properties`` carry the answer's ``request_id``; it is **attributed** to
the impression of that request and item when

* the request id names a logged impression,
* the item was in that answer's list, and
* it happened within the attribution window of its kind after the impression (defaults: clicks
  24 hours, carts and purchases 7 days; from 60 seconds *before* it, for clocks that disagree).

Anything else carrying a request id is kept and counted as **unattributed**, by reason
(``"unknown request"``, ``"item not shown"``, ``"outside window"``, ``"bad request id"``): a
stray or forged click never fails, and never counts. An outcome without a request id is organic
and plays no part here.

Nothing is counted twice: the store keeps one event per ``event_id`` (a beacon or a webhook
that arrives twice, with the same id, is stored once; the integrations give clicks the id
``click:<request id>:<item>``), frames passed in are de-duplicated on ``event_id``, and clicks,
carts and conversions are counted per impression (an impression clicked three times is one
click). Revenue adds the values of distinct attributed purchase events.

Everything is vectorised over pandas frames (merges and group-bys, no loop over rows):
``benchmarks/bench_online.py`` measures a million impressions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .._validate import check_number
from ..errors import DataError, ParameterError
from ._events import check_conf, wilson

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["attribution", "online_metrics", "impression_outcomes", "DEFAULT_WINDOWS", "DEFAULT_OUTCOMES",
           "BY_COLUMNS"]

#: seconds after an impression within which an outcome of each kind is attributed to it
DEFAULT_WINDOWS = {"click": 24 * 3600.0, "cart": 7 * 24 * 3600.0, "purchase": 7 * 24 * 3600.0}
#: the event names of each outcome kind
DEFAULT_OUTCOMES = {"click": ("click",), "cart": ("cart", "add_to_cart"), "purchase": ("purchase",)}
#: what ``by`` may name
BY_COLUMNS = ("placement", "variant", "model_version", "experiment", "source", "day")
SKEW = 60.0  # seconds an outcome may precede its impression (clocks of web and order servers differ)
_MAX_REQUEST_ID = 255
_KINDS = ("click", "cart", "purchase")


# ------------------------------------------------------------------------------------ inputs
def _windows(windows) -> dict[str, float]:
    out = dict(DEFAULT_WINDOWS)
    if windows is None:
        return out
    if not isinstance(windows, Mapping):
        raise ParameterError(f"windows expected a dict such as {{'click': 3600, 'purchase': 86400 * 3}} (seconds "
                             f"or timedelta), got {type(windows).__name__}")
    for kind, w in windows.items():
        if kind not in _KINDS:
            raise ParameterError(f"windows: unknown outcome {kind!r}; the outcomes are {list(_KINDS)}")
        if hasattr(w, "total_seconds"):
            w = w.total_seconds()
        out[kind] = check_number(w, f"windows[{kind!r}]", min=0, min_open=True,
                                 expected="seconds > 0 (or a timedelta)")
    return out


def _outcomes(outcomes) -> dict[str, tuple]:
    out = dict(DEFAULT_OUTCOMES)
    if outcomes is None:
        return out
    if not isinstance(outcomes, Mapping):
        raise ParameterError(f"outcomes expected a dict of outcome -> event names such as {{'cart': ['add_to_cart']}}, "
                             f"got {type(outcomes).__name__}")
    for kind, names in outcomes.items():
        if kind not in _KINDS:
            raise ParameterError(f"outcomes: unknown outcome {kind!r}; the outcomes are {list(_KINDS)}")
        names = (names,) if isinstance(names, str) else tuple(names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ParameterError(f"outcomes[{kind!r}] expected event names, got {names!r}")
        out[kind] = names
    seen: dict = {}
    for kind, names in out.items():
        for n in names:
            if n in seen:
                raise ParameterError(f"outcomes: event {n!r} is both a {seen[n]} and a {kind}; give it one kind")
            seen[n] = kind
    return out


def _load(store, impressions, events, since, until, windows, outcomes, *, experiment=None):
    """The impressions and the outcome events (with ``request_id``), from ``store`` or the frames given."""
    import pandas as pd

    if impressions is None:
        if store is None:
            raise ParameterError("give an EventStore (store) or the impressions and events frames")
        impressions = store.impressions(since, until, experiment=experiment)
    elif not isinstance(impressions, pd.DataFrame):
        raise ParameterError(f"impressions expected a pandas DataFrame as store.impressions() gives, got "
                             f"{type(impressions).__name__}")
    else:
        missing = sorted({"request_id", "user", "item", "time"} - set(impressions.columns))
        if missing:
            raise DataError(f"impressions: no column {missing}; expected the columns of store.impressions()")
        if experiment is not None and "experiment" in impressions.columns:
            impressions = impressions[impressions["experiment"] == experiment]
    names = [n for ns in outcomes.values() for n in ns]
    if events is None:
        if store is None:
            raise ParameterError("give an EventStore (store) or the events frame (events=) with the outcomes")
        late = None
        if until is not None:  # an outcome of the last impressions may come after until
            late = pd.Timestamp(_epoch(until) + max(windows.values()), unit="s", tz="UTC")
        early = None if since is None else pd.Timestamp(_epoch(since) - SKEW, unit="s", tz="UTC")
        events = store.events(early, late, event_types=names)
    elif not isinstance(events, pd.DataFrame):
        raise ParameterError(f"events expected a pandas DataFrame as store.events() gives, got {type(events).__name__}")
    return impressions, _outcome_frame(events, outcomes)


def _epoch(t) -> float:
    from .._time import to_epoch

    return to_epoch(t, "since / until", error=ParameterError)


def _outcome_frame(events, outcomes) -> pd.DataFrame:
    """The outcome events that carry a request id: event_id, time, user, item, kind, value, request_id, ok."""
    import pandas as pd

    kind_of = {n: k for k, ns in outcomes.items() for n in ns}
    if "event" not in events.columns:
        raise DataError(f"events: no 'event' column; expected the columns of store.events(), got {list(events.columns)}")
    ev = events[events["event"].isin(list(kind_of))]
    if "event_id" in ev.columns:
        ev = ev.drop_duplicates("event_id")  # a beacon or webhook that arrived twice counts once
    if "request_id" in ev.columns:
        rid = ev["request_id"].tolist()
    elif "properties" in ev.columns:
        rid = [p.get("request_id") if isinstance(p, dict) else None for p in ev["properties"].tolist()]
    else:
        raise DataError("events: no 'properties' (or 'request_id') column to read request ids from")
    keep = np.fromiter((r is not None for r in rid), dtype=bool, count=len(rid))
    ev = ev[keep]
    rid = [r for r, k in zip(rid, keep) if k]
    ok = np.fromiter((isinstance(r, str) and 0 < len(r) <= _MAX_REQUEST_ID for r in rid), dtype=bool, count=len(rid))
    value = ev["value"] if "value" in ev.columns else pd.Series(np.nan, index=ev.index)
    return pd.DataFrame({
        "event_id": ev["event_id"].to_numpy() if "event_id" in ev.columns else np.arange(len(ev)),
        "time": _seconds(ev["time"]), "user": ev["user"].to_numpy(), "item": ev["item"].to_numpy(),
        "event": ev["event"].to_numpy(), "kind": ev["event"].map(kind_of).to_numpy(),
        "value": pd.to_numeric(value, errors="coerce").to_numpy(dtype=np.float64),
        "request_id": np.array([r if o else None for r, o in zip(rid, ok)], dtype=object), "ok": ok,
    })


def _seconds(col) -> np.ndarray:
    """A time column (datetime64, tz-aware or not, or epoch seconds) as float epoch seconds."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(col):
        s = col.dt.tz_convert("UTC") if getattr(col.dt, "tz", None) is not None else col
        return s.astype("datetime64[us]" if s.dt.tz is None else "datetime64[us, UTC]").astype("int64").to_numpy() / 1e6
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)


def _item_keys(a, b) -> tuple:
    """Item ids of two frames in one comparable form: integers when both are, else text."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return a.astype(np.int64), b.astype(np.int64)
    return a.astype(str), b.astype(str)


# ------------------------------------------------------------------------------- attribution
def _attribute(imps, out, windows) -> tuple[pd.DataFrame, np.ndarray]:
    """Each outcome's status and, when attributed, the row of ``imps`` it belongs to (else -1).

    The impressions' request ids and items are factorised into integers and the outcomes' looked
    up among their distinct values, so matching an outcome to its impression is one hash lookup of
    an int64 key per outcome.
    """
    import pandas as pd

    status = np.where(out["ok"].to_numpy(), "unknown request", "bad request id").astype(object)
    row = np.full(len(out), -1, dtype=np.int64)
    n = len(imps)
    if len(out) and n:
        imp_rid, rid_values = pd.factorize(imps["request_id"])
        out_rid = pd.Index(rid_values).get_indexer(out["request_id"].to_numpy(dtype=object))
        known = out_rid >= 0
        status[known] = "item not shown"
        imp_item, item_values = pd.factorize(imps["item"])
        values, asked = _item_keys(item_values, out["item"])
        out_item = pd.Index(values).get_indexer(asked)
        width = np.int64(len(item_values) + 1)
        index = pd.Index(imp_rid.astype(np.int64) * width + imp_item)
        first = ~index.duplicated() if not index.is_unique else None  # a request listing an item twice
        if first is not None:
            index = index[first]
        known &= out_item >= 0
        k = np.flatnonzero(known)
        hit = index.get_indexer(out_rid[k].astype(np.int64) * width + out_item[k])
        k, r = k[hit >= 0], hit[hit >= 0]
        if first is not None:
            r = np.flatnonzero(first)[r]
        dt = out["time"].to_numpy()[k] - _seconds(imps["time"])[r]
        win = out["kind"].map(windows).to_numpy(dtype=np.float64)[k]
        inside = (dt >= -SKEW) & (dt <= win)
        status[k] = np.where(inside, "attributed", "outside window")
        row[k[inside]] = r[inside]
    return pd.DataFrame({"status": status}), row


def attribution(store=None, *, impressions=None, events=None, since=None, until=None, windows=None,
                outcomes=None) -> pd.DataFrame:
    """Every click, cart and purchase that carries a request id, with what it was attributed to.

    Parameters
    ----------
    store : persona.store.EventStore, optional
        Where the impressions and events are (or pass ``impressions=`` and ``events=`` frames
        shaped like ``store.impressions()`` and ``store.events()``).
    since, until : optional
        Impressions shown in ``[since, until)``; outcomes up to the longest window after ``until``.
    windows : dict, optional
        Seconds (or timedeltas) per outcome kind, over :data:`DEFAULT_WINDOWS`.
    outcomes : dict, optional
        Event names per outcome kind, over :data:`DEFAULT_OUTCOMES`.

    Returns
    -------
    pandas.DataFrame
        One row per outcome event: ``event_id``, ``time`` (epoch seconds), ``user``, ``item``,
        ``event``, ``kind``, ``value``, ``request_id``, ``status`` (``"attributed"``,
        ``"unknown request"``, ``"item not shown"``, ``"outside window"``, ``"bad request id"``)
        and, when attributed, the impression's ``placement``, ``variant``, ``model_version`` and
        ``position``.
    """
    windows, outcomes = _windows(windows), _outcomes(outcomes)
    imps, out = _load(store, impressions, events, since, until, windows, outcomes)
    status, row = _attribute(imps, out, windows)
    res = out.drop(columns=["ok"]).assign(status=status["status"].to_numpy())
    got = row >= 0
    for col in ("placement", "variant", "model_version", "position"):
        if col in imps.columns:
            vals = np.full(len(res), None, dtype=object)
            vals[got] = imps[col].to_numpy()[row[got]]
            res[col] = vals
    return res


def impression_outcomes(imps, out, windows) -> tuple[pd.DataFrame, dict]:
    """Per impression row: ``clicked``, ``carted``, ``purchased`` (0/1) and ``revenue``; and the
    counts of outcomes per kind and status."""
    import pandas as pd

    status, row = _attribute(imps, out, windows)
    n = len(imps)
    flags = {}
    for kind, name in (("click", "clicked"), ("cart", "carted"), ("purchase", "purchased")):
        rows = row[(row >= 0) & (out["kind"].to_numpy() == kind)] if len(out) else np.empty(0, np.int64)
        f = np.zeros(n, dtype=np.int64)
        f[rows] = 1  # per impression: clicked twice is one click
        flags[name] = f
    revenue = np.zeros(n)
    if len(out):
        buy = (row >= 0) & (out["kind"].to_numpy() == "purchase")
        np.add.at(revenue, row[buy], np.nan_to_num(out["value"].to_numpy()[buy]))
    flags["revenue"] = revenue
    summary: dict = {}
    if len(out):
        counts = pd.DataFrame({"kind": out["kind"].to_numpy(), "status": status["status"].to_numpy()}).value_counts()
        for (kind, why), v in sorted(counts.items()):
            summary.setdefault(kind, {})[why] = int(v)
    return pd.DataFrame(flags, index=imps.index), summary


# ------------------------------------------------------------------------------------ metrics
def online_metrics(store=None, by: str | Sequence[str] | None = ("placement", "variant"), *, impressions=None,
                   events=None, since=None, until=None, windows=None, outcomes=None, catalog=None,
                   popularity=None, conf: float = 0.95) -> pd.DataFrame:
    """What the shown recommendations did, per group: rates with intervals, revenue, coverage, novelty.

    Parameters
    ----------
    store : persona.store.EventStore, optional
        The impressions and events (or ``impressions=`` / ``events=`` frames shaped like
        ``store.impressions()`` and ``store.events()``).
    by : str or sequence of str, default ("placement", "variant")
        Any of ``placement``, ``variant``, ``model_version``, ``experiment``, ``source`` and
        ``day`` (the UTC day shown); None or () for one row overall. A missing label (e.g. no
        variant outside experiments) is a group of its own.
    since, until : optional
        Impressions shown in ``[since, until)``.
    windows, outcomes : dict, optional
        Attribution windows and outcome event names (see :func:`attribution`).
    catalog : int or sequence of item ids, optional
        What coverage is a share of: the catalogue size, or its ids. Default: the items with any
        stored event together with the items shown.
    popularity : pandas.Series, optional
        Distinct users per item (``store.item_popularity()``, the default) for novelty.
    conf : float, default 0.95
        Confidence of the intervals.

    Returns
    -------
    pandas.DataFrame
        One row per group: ``impressions``, ``requests``, ``users``, ``clicks``, ``ctr``,
        ``ctr_low``, ``ctr_high``, ``carts``, ``cart_rate`` (+ ``_low`` / ``_high``),
        ``purchases`` (impressions bought within the window), ``conversion`` (+ ``_low`` /
        ``_high``), ``revenue``, ``revenue_per_impression`` (+ ``_low`` / ``_high``),
        ``items_shown``, ``coverage`` (distinct items shown / catalogue) and ``novelty`` (mean
        ``-log2`` of the shown items' popularity, the share of users who interacted with the
        item, counted ``(users + 1) / (all users + 1)``). Rates: Wilson score intervals over
        impressions. Revenue per impression: a delta-method interval with users as clusters (an
        impression's revenue is not independent of its user's other impressions).
        ``attrs["outcomes"]`` counts the outcomes per kind and status (``"attributed"`` and the
        reasons of the unattributed ones); ``attrs["unattributed"]`` their total.

    Examples
    --------
    >>> import os, tempfile
    >>> import persona as ps
    >>> store = ps.EventStore(os.path.join(tempfile.mkdtemp(), "events.db"))
    >>> rid = store.log_impression("ann", ["i1", "i2"], placement="home", timestamp=1.7e9)
    >>> _ = store.track("ann", "i2", "click", timestamp=1.7e9 + 5, properties={"request_id": rid})
    >>> _ = store.track("bob", "i2", "click", timestamp=1.7e9 + 5, properties={"request_id": "no-such"})
    >>> store.flush()
    >>> m = ps.analytics.online_metrics(store, by="placement", catalog=10)
    >>> m[["impressions", "clicks", "ctr", "coverage"]]
               impressions  clicks  ctr  coverage
    placement
    home                 2       1  0.5       0.2
    >>> m.attrs["unattributed"]
    1
    >>> store.close()
    """
    import pandas as pd

    by = _by(by)
    conf = check_conf(conf)
    windows, outcomes = _windows(windows), _outcomes(outcomes)
    imps, out = _load(store, impressions, events, since, until, windows, outcomes)
    flags, summary = impression_outcomes(imps, out, windows)
    # integer codes: counting distinct requests, users and items groups integers, not strings
    frame = pd.DataFrame({c: pd.factorize(imps[c])[0] for c in ("request_id", "user", "item")})
    for col in by:
        frame[col] = _group_column(imps, col)
    frame = pd.concat([frame, flags.set_axis(frame.index)], axis=1)
    frame["novelty"] = _novelty(imps["item"], popularity, store, out)
    keys = list(by) if by else [np.zeros(len(frame), dtype=np.int8)]
    g = frame.groupby(keys, dropna=False, sort=True)
    res = pd.DataFrame({
        "impressions": g.size(), "requests": g["request_id"].nunique(), "users": g["user"].nunique(),
        "clicks": g["clicked"].sum(), "carts": g["carted"].sum(), "purchases": g["purchased"].sum(),
        "revenue": g["revenue"].sum(), "items_shown": g["item"].nunique(), "novelty": g["novelty"].mean(),
    })
    n = res["impressions"].to_numpy(dtype=np.float64)
    for name, count in (("ctr", "clicks"), ("cart_rate", "carts"), ("conversion", "purchases")):
        x = res[count].to_numpy(dtype=np.float64)
        lo, hi = wilson(x, n, conf)
        res[name], res[f"{name}_low"], res[f"{name}_high"] = x / n, lo, hi
    rpi, lo, hi = _ratio_interval(frame, keys, "revenue", conf)
    res["revenue_per_impression"] = rpi.reindex(res.index).to_numpy()
    res["revenue_per_impression_low"] = lo.reindex(res.index).to_numpy()
    res["revenue_per_impression_high"] = hi.reindex(res.index).to_numpy()
    res["coverage"] = res["items_shown"] / _catalog_size(catalog, store, imps)
    order = ["impressions", "requests", "users", "clicks", "ctr", "ctr_low", "ctr_high", "carts", "cart_rate",
             "cart_rate_low", "cart_rate_high", "purchases", "conversion", "conversion_low", "conversion_high",
             "revenue", "revenue_per_impression", "revenue_per_impression_low", "revenue_per_impression_high",
             "items_shown", "coverage", "novelty"]
    res = res[order]
    if not by:
        res = res.reset_index(drop=True)
    res.attrs["outcomes"] = summary
    res.attrs["unattributed"] = sum(v for s in summary.values() for k, v in s.items() if k != "attributed")
    return res


def _by(by) -> list[str]:
    if by is None:
        return []
    cols = [by] if isinstance(by, str) else list(by)
    bad = [c for c in cols if c not in BY_COLUMNS]
    if bad:
        raise ParameterError(f"by: expected names among {list(BY_COLUMNS)}, got {bad}")
    if len(set(cols)) != len(cols):
        raise ParameterError(f"by names a column twice: {cols}")
    return cols


def _group_column(imps, col: str):
    import pandas as pd

    if col == "day":
        t = imps["time"]
        if not pd.api.types.is_datetime64_any_dtype(t):
            t = pd.to_datetime(t, unit="s", utc=True)
        return t.dt.floor("D").dt.tz_localize(None).to_numpy() if t.dt.tz is not None else t.dt.floor("D").to_numpy()
    if col not in imps.columns:
        return np.full(len(imps), None, dtype=object)
    return imps[col].array  # as stored: no conversion of a million strings


def _ratio_interval(frame, keys, column: str, conf: float):
    """Per group: sum(column) / impressions, with a delta-method interval over users as clusters.

    With per-user totals ``R_u`` and impression counts ``N_u`` of ``n`` users, the estimate
    ``m = sum R / sum N`` has variance ``var(R_u - m N_u) / (n mean(N)^2)``.
    """
    from scipy.special import ndtri

    user_keys = [*keys, "user"] if isinstance(keys[0], str) else [keys[0], "user"]
    per_user = frame.groupby(user_keys, dropna=False, sort=False).agg(r=(column, "sum"), m=(column, "size"))
    group_index = per_user.index.droplevel(-1)
    totals = per_user.groupby(group_index, dropna=False).agg(r=("r", "sum"), m=("m", "sum"), users=("m", "size"))
    est = totals["r"] / totals["m"]
    d = per_user["r"].to_numpy() - est.reindex(group_index).to_numpy() * per_user["m"].to_numpy()
    var_d = per_user.assign(d=d).groupby(group_index, dropna=False)["d"].var(ddof=1)
    mean_n = totals["m"] / totals["users"]
    se = np.sqrt(var_d / (totals["users"] * mean_n ** 2))
    z = float(ndtri(0.5 + conf / 2))
    return est, est - z * se, est + z * se


def _catalog_size(catalog, store, imps) -> float:
    if catalog is not None:
        if isinstance(catalog, (int, np.integer)) and not isinstance(catalog, bool):
            if catalog <= 0:
                raise ParameterError(f"catalog expected a positive number of items or the item ids, got {catalog}")
            return float(catalog)
        if isinstance(catalog, (str, bytes)) or not hasattr(catalog, "__len__"):
            raise ParameterError(f"catalog expected a number of items or a sequence of item ids, got "
                                 f"{type(catalog).__name__}")
        return float(max(len(set(np.asarray(catalog).astype(str).tolist())), 1))
    shown = set(np.asarray(imps["item"]).astype(str).tolist()) if len(imps) else set()
    if store is not None:
        shown |= set(np.asarray(store.item_popularity().index).astype(str).tolist())
    return float(max(len(shown), 1))


def _novelty(items, popularity, store, out) -> np.ndarray:
    """``-log2((users of the item + 1) / (all users + 1))`` per shown item."""
    import pandas as pd

    if popularity is None:
        popularity = store.item_popularity() if store is not None else pd.Series(dtype="int64")
    if not isinstance(popularity, pd.Series):
        raise ParameterError(f"popularity expected a pandas Series of distinct users per item "
                             f"(store.item_popularity()), got {type(popularity).__name__}")
    total = popularity.attrs.get("users")
    total = int(popularity.sum()) if total is None else int(total)
    keys, pop_keys = _item_keys(np.asarray(items), np.asarray(popularity.index))
    counts = pd.Series(popularity.to_numpy(dtype=np.float64), index=pop_keys)
    counts = counts[~counts.index.duplicated()]
    users = counts.reindex(keys).fillna(0.0).to_numpy()
    return -np.log2((users + 1.0) / (total + 1.0))
