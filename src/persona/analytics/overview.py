"""The headline numbers of an event log, and its activity over time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError
from ._events import check_period, event_table, period_start

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["summary", "activity"]


def summary(data: Any, *, purchase: str = "purchase") -> dict:
    """Events, users, items, the time span, events per type, buyers and revenue.

    Parameters
    ----------
    data : EventStore, pandas.DataFrame, Interactions or EventTable
    purchase : str, default "purchase"
        The event type whose events are purchases (``buyers``, ``purchases``, ``revenue``).

    Returns
    -------
    dict
        ``events``, ``users``, ``items``, ``first`` and ``last`` (pandas Timestamps, UTC, or None
        without times), ``days`` (the span), ``events_per_type`` (most frequent first; empty
        without event types), ``buyers``, ``purchases`` and ``revenue`` (sum of the purchases'
        values; None without event types or values), ``events_per_user``.

    Examples
    --------
    >>> import pandas as pd
    >>> ev = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"],
    ...                    "event": ["view", "purchase", "view"], "value": [None, 9.5, None],
    ...                    "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"], utc=True)})
    >>> s = summary(ev)
    >>> s["events"], s["users"], s["buyers"], s["revenue"], s["events_per_type"], s["days"]
    (3, 2, 1, 9.5, {'view': 2, 'purchase': 1}, 2.0)
    """
    import pandas as pd

    table = event_table(data)
    out: dict = {"events": len(table), "users": int(len(np.unique(table.user_codes))),
                 "items": int(len(np.unique(table.item_codes[table.item_codes >= 0])))}
    first = last = None
    if table.time_ns is not None and len(table):
        first, last = (pd.Timestamp(int(v), unit="ns", tz="UTC") for v in (table.time_ns.min(), table.time_ns.max()))
    out.update(first=first, last=last, days=None if first is None else (last - first).total_seconds() / 86400)
    per_type: dict = {}
    buyers = purchases = revenue = None
    if table.event_codes is not None:
        n = np.bincount(table.event_codes[table.event_codes >= 0], minlength=len(table.event_names))
        per_type = {table.event_names[i]: int(n[i]) for i in np.argsort(-n, kind="stable") if n[i] > 0}
        bought = table.event_codes == (table.event_names.index(purchase) if purchase in table.event_names else -2)
        purchases = int(bought.sum())
        buyers = int(len(np.unique(table.user_codes[bought])))
        if table.value is not None:
            v = table.value[bought]
            revenue = float(v[np.isfinite(v)].sum())
    out.update(events_per_type=per_type, buyers=buyers, purchases=purchases, revenue=revenue,
               events_per_user=len(table) / max(out["users"], 1))
    return out


def activity(data: Any, period: str = "day") -> pd.DataFrame:
    """Events per type and active users in each period.

    Parameters
    ----------
    data : EventStore, pandas.DataFrame, Interactions or EventTable
        Events with times.
    period : {"day", "week", "month"}, default "day"

    Returns
    -------
    pandas.DataFrame
        Indexed by ``period`` (its first instant, UTC), every period from the first event's to the
        last's: one column of event counts per event type (one ``events`` column without types),
        then ``active_users``.

    Examples
    --------
    >>> import pandas as pd
    >>> ev = pd.DataFrame({"user_id": ["a", "a", "b"], "event": ["view", "purchase", "view"],
    ...                    "timestamp": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-03"], utc=True)})
    >>> activity(ev).to_dict("list")
    {'view': [1, 0, 1], 'purchase': [1, 0, 0], 'active_users': [1, 0, 1]}
    """
    import pandas as pd

    table = event_table(data)
    table.require_time("activity")
    period = check_period(period)
    if not len(table):
        raise DataError("activity: no events")
    idx = table.periods(period)
    lo = int(idx.min())
    width = int(idx.max()) - lo + 1
    p = idx - lo
    cols = {}
    if table.event_codes is not None:
        k = len(table.event_names)
        ok = table.event_codes >= 0
        grid = np.bincount(p[ok] * k + table.event_codes[ok], minlength=width * k).reshape(width, k)
        for j, name in enumerate(table.event_names):
            cols[name] = grid[:, j]
    else:
        cols["events"] = np.bincount(p, minlength=width)
    pairs = np.unique(p.astype(np.int64) * table.n_users + table.user_codes)
    cols["active_users"] = np.bincount(pairs // max(table.n_users, 1), minlength=width)
    index = pd.DatetimeIndex(period_start(np.arange(lo, lo + width), period), name="period").tz_localize("UTC")
    return pd.DataFrame(cols, index=index)
