"""Basket affinity: "bought A, also bought B" rules from one sparse co-occurrence product.

A basket is a set of items (a user's purchases, an order, a session, a user's day); ``X`` is the
binary basket x item matrix and ``C = X.T @ X`` counts, for every pair of items, the baskets holding
both. For the rule ``A -> B`` over ``N`` baskets:

* ``support = C[A, B] / N`` -- the share of baskets holding both;
* ``confidence = C[A, B] / C[A, A]`` -- of the baskets with A, the share that also hold B;
* ``lift = confidence / (C[B, B] / N)`` -- how much more likely B is with A than without
  knowing; 1 means independent.

Items below ``min_support`` are dropped before the product (a pair is never more frequent than
its items), so the product stays small on a long-tailed catalogue.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validate import check_int, check_number
from ..errors import DataError, ParameterError
from ._events import PERIODS, event_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["basket_rules"]

_SORTS = ("lift", "confidence", "support")
_COLUMNS = ["antecedent", "consequent", "baskets", "support", "confidence", "lift", "antecedent_support",
            "consequent_support"]


def basket_rules(data: Any, *, basket: str = "user", events="purchase", min_support: float = 0.001,
                 min_count: int = 2, min_confidence: float = 0.0, min_lift: float = 1.0, top_k: int | None = 100,
                 sort: str = "lift") -> pd.DataFrame:
    """Item-to-item co-purchase rules with support, confidence and lift.

    Parameters
    ----------
    data : EventStore, pandas.DataFrame, Interactions or EventTable
        Events with users and items (see :func:`~persona.analytics.event_table`).
    basket : str, default "user"
        What makes a basket: ``"user"`` (all of a user's selected events); a period (``"day"``,
        ``"week"``, ``"month"``: a user's events of one period); or a column of the events or a key
        of their properties (``"order_id"``, ``"session_id"``: a user's events with one value).
    events : str, list of str or None, default "purchase"
        The event types that put an item in a basket; None takes every event (and is the only
        choice for events without types).
    min_support : float, default 0.001
        Minimum share of baskets holding both items.
    min_count : int, default 2
        Minimum number of baskets holding both items (whatever ``min_support`` allows).
    min_confidence, min_lift : float
        Keep rules at least this confident and this lifted (default: lift >= 1, any confidence).
    top_k : int or None, default 100
        Keep the best ``top_k`` rules by ``sort`` (None: all).
    sort : {"lift", "confidence", "support"}, default "lift"
        The order (ties: the other two, then the antecedent and consequent ids).

    Returns
    -------
    pandas.DataFrame
        One row per rule: ``antecedent``, ``consequent`` (item ids), ``baskets`` (holding both),
        ``support``, ``confidence``, ``lift``, ``antecedent_support``, ``consequent_support``.
        ``df.attrs["n_baskets"]`` is the number of baskets.

    Examples
    --------
    >>> import pandas as pd
    >>> ev = pd.DataFrame({"user_id": ["a", "a", "b", "b", "c", "c", "d"],
    ...                    "item_id": ["x", "y", "x", "y", "x", "z", "z"], "event": "purchase"})
    >>> r = basket_rules(ev, min_count=1)
    >>> r[["antecedent", "consequent", "baskets", "confidence", "lift"]].round(3).values.tolist()
    [['y', 'x', 2, 1.0, 1.333], ['x', 'y', 2, 0.667, 1.333]]
    """
    import pandas as pd
    import scipy.sparse as sp

    min_support = check_number(min_support, "min_support", min=0.0, max=1.0)
    min_count = check_int(min_count, "min_count", min=1)
    min_confidence = check_number(min_confidence, "min_confidence", min=0.0, max=1.0)
    min_lift = check_number(min_lift, "min_lift", min=0.0, finite=True)
    top_k = check_int(top_k, "top_k", min=1, allow_none=True)
    if sort not in _SORTS:
        raise ParameterError(f"basket_rules sort: expected one of {list(_SORTS)}, got {sort!r}")
    table = event_table(data)
    keep = table.item_codes >= 0
    if events is not None:
        keep &= table.event_mask(events, "basket_rules events")
    rows = _baskets(table, basket, keep)
    items = table.item_codes[keep]
    n_baskets = int(rows.max()) + 1 if len(rows) else 0
    if n_baskets == 0:
        raise DataError("basket_rules: no baskets" + (f" (no events of the types {events!r})" if events else ""))
    x = sp.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, items)), shape=(n_baskets, table.n_items))
    x.sum_duplicates()
    x.data[:] = 1.0  # an item twice in a basket is in it once
    item_count = np.asarray(x.sum(axis=0)).ravel()
    need = max(min_count, math.ceil(min_support * n_baskets - 1e-9))
    frequent = np.flatnonzero(item_count >= need)
    # counts of baskets holding both: float32 products are exact below 2**24 baskets
    xf = x[:, frequent].tocsc().astype(np.float32 if n_baskets < 2**24 else np.float64)
    co = (xf.T @ xf).tocoo()
    a, b, c = co.row, co.col, np.rint(co.data).astype(np.int64)
    pair = (a != b) & (c >= need)
    a, b, c = frequent[a[pair]], frequent[b[pair]], c[pair]
    n_a, n_b = item_count[a], item_count[b]
    support = c / n_baskets
    confidence = c / n_a
    lift = confidence / (n_b / n_baskets)
    ok = (confidence >= min_confidence) & (lift >= min_lift)
    out = pd.DataFrame({
        "antecedent": table.item_ids[a[ok]], "consequent": table.item_ids[b[ok]], "baskets": c[ok],
        "support": support[ok], "confidence": confidence[ok], "lift": lift[ok],
        "antecedent_support": n_a[ok] / n_baskets, "consequent_support": n_b[ok] / n_baskets,
    })
    order = [sort, *(s for s in _SORTS if s != sort)]
    # ids of mixed types do not sort: break the last ties by item code instead of id
    out["_a"], out["_b"] = a[ok], b[ok]
    out = out.sort_values([*order, "_a", "_b"], ascending=[False, False, False, True, True], kind="stable")
    if top_k is not None:
        out = out.head(top_k)
    out = out[_COLUMNS].reset_index(drop=True)
    out.attrs["n_baskets"] = n_baskets
    return out


def _baskets(table, basket: str, keep: np.ndarray) -> np.ndarray:
    """Per kept event, the dense index of its basket."""
    import pandas as pd

    if not isinstance(basket, str):
        raise ParameterError(f"basket_rules basket: expected 'user', a period {list(PERIODS)} or a column name, "
                             f"got {type(basket).__name__} {basket!r}")
    users = table.user_codes[keep]
    if basket == "user":
        return pd.factorize(users)[0]
    if basket in PERIODS and table.column(basket) is None:
        part = table.periods(basket)[keep]
    else:
        col = table.column(basket)
        if col is None:
            cols = [] if table.frame is None else [c for c in table.frame.columns]
            raise DataError(f"basket_rules basket: no column or event property {basket!r} (columns: {cols}); pass "
                            f"'user', a period {list(PERIODS)} or the column that names an order or session")
        part = pd.factorize(col[keep], use_na_sentinel=False)[0]
    frame = pd.DataFrame({"u": users, "p": part})
    return frame.groupby(["u", "p"], sort=False).ngroup().to_numpy()
