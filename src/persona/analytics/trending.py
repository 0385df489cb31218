"""Trending and declining items and categories: a recent window against the one before it.

For each item (or category), ``recent`` counts its events in ``[now - window, now)`` and
``previous`` those in the ``baseline`` before that. Two numbers rank the change:

* ``ratio`` -- the smoothed rate ratio ``((recent + prior) / window) / ((previous + prior) /
  baseline)``: above 1 the item is busier now, below 1 quieter; ``prior`` keeps items with a
  handful of events from dominating.
* ``z`` -- how surprising ``recent`` is if the item's rate had not changed: given ``recent +
  previous`` events in both windows, ``recent`` is binomial with ``p = window / (window +
  baseline)``, and ``z = (recent - total p) / sqrt(total p (1 - p))``. Large positive: trending;
  large negative: declining. It grows with the evidence, so it ranks a steady climb of a
  popular item above a jump from 1 to 3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .._time import to_epoch
from .._validate import check_frame, check_int, check_number
from ..errors import DataError, ParameterError
from ._events import MISSING, NS, duration_ns, event_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["trends"]

_LEVELS = ("item", "category")
_UNITS = ("events", "users")


def trends(data: Any, *, window="7D", baseline=None, now=None, level: str = "item", categories=None,
           events=None, unit: str = "events", prior: float = 1.0, min_count: int = 1) -> pd.DataFrame:
    """Items or categories by how much busier (or quieter) they were lately than before.

    Parameters
    ----------
    data : EventStore, pandas.DataFrame, Interactions or EventTable
        Events with items and times (see :func:`~persona.analytics.event_table`).
    window : seconds, timedelta or str, default ``"7D"``
        The recent window, ending at ``now``.
    baseline : seconds, timedelta or str, optional
        The window before it (default: as long as ``window``).
    now : time, optional
        The end of the recent window (exclusive); default: just after the last event.
    level : {"item", "category"}, default "item"
        ``"category"`` needs ``categories``.
    categories : mapping, pandas.Series or pandas.DataFrame, optional
        Item id -> category: a mapping, a Series indexed by item id, or a catalogue table with a
        ``category`` column and an ``item_id`` (or ``item``) column or index. Items it does not
        know count under ``"(missing)"``.
    events : str or list of str, optional
        The event types counted (default every event); needs event types.
    unit : {"events", "users"}, default "events"
        Count events, or distinct users (one busy visitor then moves nothing).
    prior : float, default 1.0
        Added to both counts in ``ratio``.
    min_count : int, default 1
        Keep rows with at least this many counts in the two windows together.

    Returns
    -------
    pandas.DataFrame
        Indexed by item (or category), most trending first (by ``z``, then ``ratio``): ``recent``,
        ``previous``, ``ratio``, ``z``. ``.head(n)`` are the trending ones, ``.tail(n)`` the
        declining ones.

    Examples
    --------
    >>> import pandas as pd
    >>> ev = pd.DataFrame({"user_id": list("abcdefgh"), "item_id": list("xxxxxyyy"),
    ...                    "timestamp": pd.to_datetime(["2024-01-02", "2024-01-09", "2024-01-10", "2024-01-11",
    ...                                                 "2024-01-12", "2024-01-02", "2024-01-03", "2024-01-09"],
    ...                                                utc=True)})
    >>> t = trends(ev, window="7D", now="2024-01-13")
    >>> t[["recent", "previous"]].to_dict("index")
    {'x': {'recent': 4, 'previous': 1}, 'y': {'recent': 1, 'previous': 2}}
    >>> round(float(t.loc["x", "ratio"]), 2), round(float(t.loc["x", "z"]), 2)
    (2.5, 1.34)
    """
    import pandas as pd

    table = event_table(data)
    table.require_time("trends")
    if level not in _LEVELS:
        raise ParameterError(f"trends level: expected one of {list(_LEVELS)}, got {level!r}")
    if unit not in _UNITS:
        raise ParameterError(f"trends unit: expected one of {list(_UNITS)}, got {unit!r}")
    w = duration_ns(window, "window", allow_none=False)
    b = duration_ns(baseline, "baseline") or w
    prior = check_number(prior, "prior", min=0.0)
    min_count = check_int(min_count, "min_count", min=0)
    if not len(table):
        raise DataError("trends: no events")
    end = int(table.time_ns.max()) + 1 if now is None else int(round(to_epoch(now, "now", error=ParameterError) * NS))

    keys, names, key_name = _keys(table, level, categories)
    t = table.time_ns
    in_recent = (t >= end - w) & (t < end)
    in_previous = (t >= end - w - b) & (t < end - w)
    keep = (keys >= 0) & (in_recent | in_previous)
    if events is not None:
        keep &= table.event_mask(events, "trends events")
    recent = _count(keys, table.user_codes, keep & in_recent, len(names), unit)
    previous = _count(keys, table.user_codes, keep & in_previous, len(names), unit)

    total = recent + previous
    q = w / (w + b)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = ((recent + prior) / w) / ((previous + prior) / b)
        z = np.where(total > 0, (recent - total * q) / np.sqrt(total * q * (1 - q)), 0.0)
    out = pd.DataFrame({"recent": recent, "previous": previous, "ratio": ratio, "z": z},
                       index=pd.Index(names, name=key_name))
    out = out[(total >= max(min_count, 1))]
    return out.sort_values(["z", "ratio", "recent"], ascending=False, kind="stable")


def _keys(table, level: str, categories) -> tuple[np.ndarray, np.ndarray, str]:
    """Per event, the code of its item or category (-1: no item), the names of the codes, the index name."""
    import pandas as pd

    if level == "item":
        if categories is not None:
            raise ParameterError("trends: categories= is for level='category'; pass level='category' too")
        return table.item_codes, table.item_ids, "item"
    if categories is None:
        raise ParameterError("trends level='category' needs categories= (item id -> category, or the catalogue)")
    lookup = _category_lookup(categories)
    pos = lookup.index.get_indexer(pd.Index(table.item_ids))
    per_item = np.where(pos >= 0, lookup.to_numpy(dtype=object)[np.maximum(pos, 0)], MISSING) if len(lookup) \
        else np.full(table.n_items, MISSING, dtype=object)
    per_item = np.where(pd.isna(per_item), MISSING, per_item)
    item_cat, names = pd.factorize(pd.Series(per_item, dtype=object), sort=True)
    codes = np.where(table.item_codes >= 0, item_cat[np.maximum(table.item_codes, 0)], -1) if table.n_items \
        else table.item_codes
    return codes.astype(np.int64), np.asarray(names, dtype=object), "category"


def _category_lookup(categories) -> pd.Series:
    import pandas as pd

    if isinstance(categories, pd.Series):
        s = categories
    elif isinstance(categories, Mapping):
        s = pd.Series(dict(categories), dtype=object)
    else:
        df = check_frame(categories, "trends categories (item id -> category, or a catalogue table)",
                         error=ParameterError)
        if "category" not in df.columns:
            raise DataError(f"trends categories: the catalogue needs a 'category' column; columns are "
                            f"{list(df.columns)}")
        id_col = next((c for c in ("item_id", "item") if c in df.columns), None)
        s = pd.Series(df["category"].to_numpy(dtype=object), index=df[id_col] if id_col else df.index)
    if not s.index.is_unique:
        dup = s.index[s.index.duplicated()][:5].tolist()
        raise DataError(f"trends categories: items listed twice ({dup}); pass one category per item")
    return s


def _count(keys: np.ndarray, users: np.ndarray, mask: np.ndarray, n: int, unit: str) -> np.ndarray:
    k = keys[mask]
    if unit == "users":  # each (user, key) once
        k = np.unique(users[mask].astype(np.int64) * max(n, 1) + k) % max(n, 1)
    return np.bincount(k, minlength=n).astype(np.int64)
