"""Funnels: how many users go from one step to the next (view -> cart -> purchase), by group.

The rule, exactly: a user **reaches step 0** when they did step 0 at all; they **reach step k**
when they did step k at a time ``>=`` the time at which they first reached step k-1. The time at
which they reach step k is the first such event. So a purchase before any cart never counts, a
cart and a purchase at the same instant do, and a user who viewed, carted, viewed again and
purchased reaches every step once.

Groups (``by=``) are fixed where the user enters the funnel: an event attribute (a column of the
events such as ``channel`` or ``device``, or a key of the store's event properties) is read on
the user's first step-0 event; a period (``day``, ``week``, ``month``) is the period of that
event; a user attribute (a column of ``user_features`` such as ``segment``, or a mapping of user
-> group) is the user's. Every user therefore counts in exactly one group, and each group's
funnel follows its users through the later steps wherever those happened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import ParameterError
from ._events import _NO_TIME, check_conf, combine_groups, duration_ns, event_table, wilson

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["funnel"]

_RATE_COLUMNS = ("users", "from_previous", "from_previous_low", "from_previous_high", "from_top", "from_top_low",
                 "from_top_high")


def funnel(data: Any, steps: Sequence = ("view", "cart", "purchase"), by=None, *, user_features=None,
           within=None, conf: float = 0.95) -> pd.DataFrame:
    """Users reaching each step of a funnel, with step-over-step and from-the-top conversion rates.

    Parameters
    ----------
    data : EventStore, pandas.DataFrame, Interactions or EventTable
        Events with users, times and event types (see :func:`~persona.analytics.event_table`).
    steps : sequence of str (or of tuples of str)
        The event types in order; a tuple makes one step of several types (``("cart",
        ("purchase", "order"))``). At least one step; a type may appear in one step only.
    by : str, mapping of user -> group, or a list of them, optional
        Groups, each fixed where the user enters the funnel (see the module notes): a column of the
        events or a key of their properties (read on the user's first step-0 event), ``"day"`` /
        ``"week"`` / ``"month"`` (the period of that event), a column of ``user_features``, or a
        mapping / Series of user id -> group. Missing values form the group ``"(missing)"``.
    user_features : pandas.DataFrame, optional
        One row per user (id in a ``user_id`` or ``user`` column, or the index), for ``by`` names.
    within : seconds, timedelta or str such as ``"7D"``, optional
        Count a later step only within this time of the user's first step-0 event.
    conf : float, default 0.95
        Confidence of the Wilson intervals.

    Returns
    -------
    pandas.DataFrame
        One row per step (per group and step with ``by``: a MultiIndex of the ``by`` names and
        ``step``): ``users`` reaching the step; ``from_previous`` = users / users of the previous
        step and ``from_top`` = users / users of step 0, each with Wilson bounds ``*_low`` /
        ``*_high`` (NaN where the denominator is 0; step 0's rates are 1).

    Examples
    --------
    >>> import pandas as pd
    >>> ev = pd.DataFrame({
    ...     "user_id": ["a", "a", "a", "b", "b", "c"],
    ...     "event": ["view", "cart", "purchase", "purchase", "view", "view"],
    ...     "timestamp": pd.to_datetime(["2024-01-01 10:00", "2024-01-01 10:05", "2024-01-01 10:09",
    ...                                  "2024-01-01 09:00", "2024-01-01 11:00", "2024-01-02 08:00"], utc=True)})
    >>> f = funnel(ev, steps=("view", "purchase"))
    >>> f["users"].tolist()  # b bought before viewing: no purchase step for b
    [3, 1]
    >>> round(float(f.loc["purchase", "from_previous"]), 4)
    0.3333
    """
    table = event_table(data)
    table.require_events("funnel")
    table.require_time("funnel")
    conf = check_conf(conf)
    window = duration_ns(within, "within")
    labels, step_names = _steps(steps)
    keys = table.labels(by, user_features=user_features, what="funnel by")

    t = table.time_ns
    users = table.user_codes
    masks = [table.event_mask(names, "funnel steps") for names in step_names]
    rows0 = np.flatnonzero(masks[0])
    t_prev = np.full(table.n_users, _NO_TIME, dtype=np.int64)
    np.minimum.at(t_prev, users[rows0], t[rows0])
    entered = np.flatnonzero(t_prev != _NO_TIME)
    if keys:  # the group is read on the user's first step-0 event (the first row of it on a tie)
        first = rows0[t[rows0] == t_prev[users[rows0]]]
        _, at = np.unique(users[first], return_index=True)
        entry_rows = first[at]
        codes, groups = combine_groups([(name, vals[entry_rows]) for name, vals in keys])
        n_groups = len(groups)
    else:
        codes, groups, n_groups = np.zeros(len(entered), dtype=np.int64), None, 1
    group_of = np.full(table.n_users, -1, dtype=np.int64)
    group_of[entered] = codes
    t0 = t_prev.copy()

    counts = np.zeros((n_groups, len(labels)), dtype=np.int64)
    counts[:, 0] = np.bincount(codes, minlength=n_groups)
    for k in range(1, len(labels)):
        rows = np.flatnonzero(masks[k])
        u, tk = users[rows], t[rows]
        prev = t_prev[u]
        ok = (prev != _NO_TIME) & (tk >= prev)
        if window is not None:
            ok &= (tk - t0[u]) <= window
        t_next = np.full(table.n_users, _NO_TIME, dtype=np.int64)
        np.minimum.at(t_next, u[ok], tk[ok])
        reached = t_next != _NO_TIME
        counts[:, k] = np.bincount(group_of[reached], minlength=n_groups)
        t_prev = t_next
    return _frame(counts, labels, groups, conf)


def _steps(steps) -> tuple[list[str], list[tuple[str, ...]]]:
    if isinstance(steps, str) or not hasattr(steps, "__iter__"):
        raise ParameterError(f"funnel steps: expected a sequence of event names such as ('view', 'cart', 'purchase'), "
                             f"got {steps!r}")
    labels, names, seen = [], [], set()
    for s in steps:
        group = (s,) if isinstance(s, str) else tuple(s) if isinstance(s, (tuple, list)) else None
        if not group or not all(isinstance(n, str) and n for n in group):
            raise ParameterError(f"funnel steps: expected event names (or tuples of them), got {s!r} in {steps!r}")
        twice = [n for n in group if n in seen]
        if twice:
            raise ParameterError(f"funnel steps: event type {twice[0]!r} is in two steps of {steps!r}; "
                                 f"each type may count for one step only")
        seen.update(group)
        labels.append("|".join(group))
        names.append(group)
    if not labels:
        raise ParameterError("funnel steps: expected at least one event name, got none")
    return labels, names


def _frame(counts: np.ndarray, labels: list[str], groups, conf: float) -> pd.DataFrame:
    import pandas as pd

    n_groups, n_steps = counts.shape
    prev = np.concatenate([counts[:, :1], counts[:, :-1]], axis=1)
    top = np.repeat(counts[:, :1], n_steps, axis=1)
    cols = {"users": counts.ravel()}
    for name, denom in (("from_previous", prev), ("from_top", top)):
        x, n = counts.ravel(), denom.ravel()
        lo, hi = wilson(x, n, conf)
        with np.errstate(divide="ignore", invalid="ignore"):
            cols[name] = np.where(n > 0, x / np.maximum(n, 1), np.nan)
        cols[f"{name}_low"], cols[f"{name}_high"] = lo, hi
    step = np.tile(np.asarray(labels, dtype=object), n_groups)
    if groups is None:
        index = pd.Index(step, name="step")
    else:
        arrays = [np.repeat(groups[c].to_numpy(), n_steps) for c in groups.columns]
        index = pd.MultiIndex.from_arrays([*arrays, step], names=[*groups.columns, "step"])
    return pd.DataFrame(cols, index=index)[list(_RATE_COLUMNS)]
