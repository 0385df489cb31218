"""RFM: recency, frequency and monetary value of each customer's purchases, scored and grouped.

(It lived in :mod:`persona.marketing` first; marketing uses it from here and still exports
``rfm_table``.)

Scores run from 1 (worst) to 5 (best) by the share of buyers doing strictly worse:
``score = 1 + floor(5 * share)``, so ties share a score and the lowest tie (e.g. everybody with a
single purchase) scores 1; recency scores the *fewest* days since the last purchase highest. Groups follow the recency and frequency scores:

============  ===========================  =============================================
group         rule                         typical action
============  ===========================  =============================================
champions     R >= 4 and F >= 4            reward, early access
loyal         R >= 3 and F >= 3, else      upsell, loyalty offers
new           R >= 4 and F <= 2            onboarding, second purchase
promising     R == 3 and F <= 2            nudge with a small offer
at_risk       R <= 2 and F >= 3            win back before they go
hibernating   R <= 2 and F <= 2            cheap channels only, or leave alone
prospect      no purchase at all           first-purchase offers
============  ===========================  =============================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np

from .._time import to_epoch
from .._validate import check_frame
from ..errors import DataError, ParameterError
from ..typing import FrameLike, Ids, ItemId, TimePoint
from ._events import NS, EventTable, event_table

if TYPE_CHECKING:  # annotations only: pandas and the data layer load when a table is built
    import pandas as pd

    from ..data.interactions import Interactions

__all__ = ["rfm_table", "RFM_GROUPS"]

DAY = 86400.0

RFM_GROUPS = ("champions", "loyal", "new", "promising", "at_risk", "hibernating", "prospect")


def _scores(x: np.ndarray) -> np.ndarray:
    """1 + floor(5 * share of values strictly below); higher ``x`` scores higher, ties share a score."""
    below = np.searchsorted(np.sort(x), x, side="left")
    return np.minimum(1 + (5 * below) // max(len(x), 1), 5).astype(np.int64)


def _group(r: np.ndarray, f: np.ndarray) -> np.ndarray:
    out = np.empty(len(r), dtype=object)
    out[:] = "hibernating"
    out[(r <= 2) & (f >= 3)] = "at_risk"
    out[(r == 3) & (f <= 2)] = "promising"
    out[(r >= 4) & (f <= 2)] = "new"
    out[(r >= 3) & (f >= 3)] = "loyal"
    out[(r >= 4) & (f >= 4)] = "champions"
    return out


def _purchases(data, *, user: str, time: str, value: str | None, event: str | None, purchase: str,
               prices) -> tuple[pd.DataFrame, str]:
    """The purchases in ``data`` (see :func:`rfm_table`): a frame of buyer ``u``, epoch seconds ``t``
    and value ``v``, and the name of the user column (``user_id`` for Interactions, ``user`` for a store)."""
    import pandas as pd

    from ..data.interactions import Interactions
    from ..store.events import EventStore

    if isinstance(data, (EventStore, EventTable)):
        return _table_purchases(event_table(data), event=event, purchase=purchase, prices=prices)
    if isinstance(data, Interactions):
        if data.timestamps is None:
            raise DataError("rfm_table: the Interactions have no timestamps; build them with time=...")
        df = data.to_frame().rename(columns={"user": "user_id", "item": "item_id"})
        user, time = "user_id", "timestamp"
        if "event" not in df.columns:
            event = None
        if "value" not in df.columns:
            value = None
    else:
        df = check_frame(data, "rfm_table: data (a table of orders, an EventStore or Interactions)")
    for col in (user, time):
        if col not in df.columns:
            raise DataError(f"rfm_table: no column {col!r}; columns are {list(df.columns)}; pass user= / time=")
    if event is not None and event in df.columns:
        df = df[df[event].astype(str) == purchase]
    t = df[time]
    if pd.api.types.is_datetime64_any_dtype(t):
        secs = pd.to_datetime(t, utc=True).dt.as_unit("ns").astype("int64").to_numpy() / 1e9
    else:
        secs = pd.to_numeric(t, errors="raise").to_numpy(dtype=np.float64)
    if value is not None and value in df.columns:
        vals = pd.to_numeric(df[value], errors="coerce").to_numpy(dtype=np.float64)
    elif prices is not None:
        item_col = "item_id" if "item_id" in df.columns else "item"
        vals = _price_of(df[item_col].to_numpy(), prices)
    else:
        vals = np.ones(len(df))
    vals = np.where(np.isfinite(vals), vals, 0.0)
    return pd.DataFrame({"u": df[user].to_numpy(), "t": secs, "v": vals}), user


def _table_purchases(table: EventTable, *, event: str | None, purchase: str, prices) -> tuple[pd.DataFrame, str]:
    """The purchases of an EventTable (an EventStore's events): its own user, time, event and value fields."""
    import pandas as pd

    table.require_time("rfm_table")
    keep = np.ones(len(table), dtype=bool)
    if event is not None and table.event_codes is not None:
        keep = table.event_mask(purchase, "rfm_table purchase")
    items = table.item_codes[keep]
    vals = np.full(int(keep.sum()), np.nan) if table.value is None else table.value[keep]
    if prices is not None:  # a purchase without a value is worth its item's price
        missing = ~np.isfinite(vals)
        ids = table.item_ids[np.maximum(items[missing], 0)] if len(table.item_ids) else np.full(missing.sum(), None)
        vals[missing] = _price_of(ids, prices)
    elif not np.isfinite(vals).any():  # no values at all: each purchase counts 1, as a table without a value column
        vals = np.ones(len(vals))
    vals = np.where(np.isfinite(vals), vals, 0.0)
    return pd.DataFrame({"u": table.user_ids[table.user_codes[keep]], "t": table.time_ns[keep] / NS, "v": vals}), \
        "user_id" if table.source != "store" else "user"


def _price_of(items: np.ndarray, prices) -> np.ndarray:
    import pandas as pd

    vals = pd.Series(items).map(prices if isinstance(prices, pd.Series) else pd.Series(prices))
    return pd.to_numeric(vals, errors="coerce").to_numpy(dtype=np.float64)


def rfm_table(data: FrameLike | Interactions, *, now: TimePoint | None = None, users: Ids | None = None,
              user: str = "user_id", time: str = "timestamp", value: str | None = "value",
              event: str | None = "event", purchase: str = "purchase",
              prices: Mapping[ItemId, float] | pd.Series | None = None) -> pd.DataFrame:
    """Recency, frequency, monetary value, their 1-5 scores and the RFM group of every customer.

    Parameters
    ----------
    data : pandas.DataFrame (or a polars / pyarrow table), EventStore, EventTable or Interactions
        Events with a user, a time and (for monetary value) a value column. When ``event`` names a
        column, only rows whose event equals ``purchase`` count; otherwise every row is a purchase.
        :class:`~persona.Interactions` need timestamps; their values, or ``prices`` (item id ->
        price) when they have none, give the monetary value. An
        :class:`~persona.store.EventStore` (or an :class:`~persona.analytics.EventTable`) is read
        with its own fields (``user``, ``time``, ``event``, ``value``); ``user=`` / ``time=`` /
        ``value=`` name the columns of a table only.
    now : time, optional
        The reference time of recency; default: the last event in ``data``.
    users : sequence of user ids, optional
        Also list these users (those without purchases become ``prospect``).
    prices : mapping or pandas.Series of item id -> price, optional
        Monetary value when the data carry no value column.

    Returns
    -------
    pandas.DataFrame
        Indexed by user: ``recency_days``, ``frequency``, ``monetary``, ``r``, ``f``, ``m``
        (0 for prospects), ``rfm`` (e.g. ``"545"``) and ``group``.

    Examples
    --------
    >>> import pandas as pd
    >>> ev = pd.DataFrame({"user_id": ["a", "a", "b", "c"], "value": [10.0, 20.0, 5.0, 7.0],
    ...                    "timestamp": pd.to_datetime(["2024-01-01", "2024-01-20", "2024-01-02", "2024-01-19"])})
    >>> t = rfm_table(ev, event=None, users=["a", "b", "c", "d"])
    >>> t["group"].to_dict()
    {'a': 'champions', 'b': 'hibernating', 'c': 'hibernating', 'd': 'prospect'}
    >>> t.loc["a", "rfm"], int(t.loc["a", "frequency"]), float(t.loc["a", "monetary"])
    ('444', 2, 30.0)
    """
    import pandas as pd

    buy, user = _purchases(data, user=user, time=time, value=value, event=event, purchase=purchase, prices=prices)
    if now is not None:
        ref = to_epoch(now, "now", error=ParameterError)
    else:
        ref = float(buy["t"].to_numpy().max()) if len(buy) else 0.0
    g = buy.groupby("u", sort=True)
    out = pd.DataFrame({
        "recency_days": (ref - g["t"].max()) / DAY,
        "frequency": g.size().astype(np.int64),
        "monetary": g["v"].sum(),
    })
    out.index.name = user
    out["r"] = _scores(-out["recency_days"].to_numpy())
    out["f"] = _scores(out["frequency"].to_numpy().astype(float))
    out["m"] = _scores(out["monetary"].to_numpy())
    out["group"] = _group(out["r"].to_numpy(), out["f"].to_numpy())
    if users is not None:
        extra = pd.Index(pd.unique(np.asarray(list(users), dtype=object))).difference(out.index)
        if len(extra):
            pros = pd.DataFrame({"recency_days": np.nan, "frequency": 0, "monetary": 0.0, "r": 0, "f": 0, "m": 0,
                                 "group": "prospect"}, index=extra)
            out = pd.concat([out, pros])
            out.index.name = user
    out["rfm"] = out["r"].astype(str) + out["f"].astype(str) + out["m"].astype(str)
    return out[["recency_days", "frequency", "monetary", "r", "f", "m", "rfm", "group"]]
