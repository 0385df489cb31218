"""Cohort retention: of the users who first came in a period, the share active in each later one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._validate import check_bool, check_int
from ..errors import DataError
from ._events import check_period, event_table, period_start

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["cohort_retention"]


def cohort_retention(data: Any, period: str = "week", *, events=None, periods: int | None = None,
                     counts: bool = False) -> pd.DataFrame:
    """The cohort retention matrix: users by the period of their first event, active in each later period.

    A user's cohort is the calendar period (UTC; weeks start on Monday) of their first event;
    they are active in period ``p`` of their cohort when they have at least one event in the
    ``p``-th period after it (period 0 is the cohort's own, where everyone is active).

    Parameters
    ----------
    data : EventStore, pandas.DataFrame, Interactions or EventTable
        Events with users and times (see :func:`~persona.analytics.event_table`).
    period : {"day", "week", "month"}, default "week"
    events : str or list of str, optional
        The event types that count as activity (and define the first event); default every event.
        Needs event types.
    periods : int, optional
        Keep periods ``0 .. periods - 1`` only (default: as many as the data spans).
    counts : bool, default False
        Return the number of active users instead of the share (column 0 is then the cohort size).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``cohort`` (the first instant of the period, UTC), columns ``0, 1, ...`` (periods
        since the cohort's); cells the data cannot have observed yet (past its last period) are NaN.

    Examples
    --------
    >>> import pandas as pd
    >>> ev = pd.DataFrame({"user_id": ["a", "a", "b", "b", "c"],
    ...                    "timestamp": pd.to_datetime(["2024-01-01", "2024-01-09", "2024-01-02", "2024-01-16",
    ...                                                 "2024-01-10"], utc=True)})
    >>> cohort_retention(ev, "week").round(2).to_dict("index")  # doctest: +NORMALIZE_WHITESPACE
    {Timestamp('2024-01-01 00:00:00+0000', tz='UTC'): {0: 1.0, 1: 0.5, 2: 0.5},
     Timestamp('2024-01-08 00:00:00+0000', tz='UTC'): {0: 1.0, 1: 0.0, 2: nan}}
    """
    import pandas as pd

    table = event_table(data)
    table.require_time("cohort_retention")
    period = check_period(period)
    periods = check_int(periods, "periods", min=1, allow_none=True)
    counts = check_bool(counts, "counts")
    keep = table.event_mask(events, "cohort_retention events") if events is not None else None
    idx = table.periods(period)
    users = table.user_codes
    if keep is not None:
        idx, users = idx[keep], users[keep]
    if not len(idx):
        raise DataError("cohort_retention: no events to build cohorts from"
                        + (f" (none of the types {events!r})" if events is not None else ""))
    first = np.full(table.n_users, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, users, idx)
    offset = idx - first[users]
    last, lo = int(idx.max()), int(first[users].min())
    width = last - lo + 1
    # each (user, offset) once: a user active several times in one period counts once
    pair = np.unique(users.astype(np.int64) * width + offset)
    pu, po = np.divmod(pair, width)
    cohort = first[pu] - lo
    active = np.bincount(cohort * width + po, minlength=width * width).reshape(width, width).astype(np.float64)
    size = active[:, 0]
    present = size > 0
    observed = np.arange(width)[None, :] <= (width - 1 - np.arange(width))[:, None]  # cohort c sees last - c periods
    out = np.where(observed, active, np.nan)
    if not counts:
        with np.errstate(invalid="ignore", divide="ignore"):
            out = out / size[:, None]
    out = out[present]
    n_cols = width if periods is None else min(periods, width)
    index = pd.DatetimeIndex(period_start(np.arange(lo, last + 1)[present], period), name="cohort").tz_localize("UTC")
    return pd.DataFrame(out[:, :n_cols], index=index, columns=pd.RangeIndex(n_cols, name="period"))
