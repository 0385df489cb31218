"""Logged bandit feedback: what a logging policy showed, with what probability, and what came of it.

:class:`LoggedFeedback` is the input of off-policy evaluation (``persona.ope``) and of offer
policies that learn from past campaigns. It holds one round per row: the action shown (an item, an
offer), the reward observed (click, conversion, revenue), the logging policy's probability of that
action (its *propensity*), and optionally the context the policy saw, the slot the action was shown
in, per-action features and timestamps. Any shop can build one from its own logs; the Open Bandit
Dataset loader (:func:`persona.datasets.load_open_bandit`) returns one too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .._validate import check_int
from ..errors import DataError
from ..typing import ArrayLike

__all__ = ["LoggedFeedback"]


def _int_array(name: str, values, n: int | None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array with one entry per round, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise DataError(f"{name} has {len(arr)} entries but action has {n}; pass one entry per round")
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise DataError(f"{name}: expected integers, got dtype {arr.dtype}; encode it as 0-based integer indices")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            rows = np.flatnonzero(bad)[:5]
            raise DataError(f"{name}: expected integers, got {arr[rows].tolist()} at rows {rows.tolist()}")
    arr = arr.astype(np.int64)
    if len(arr) and arr.min() < 0:
        rows = np.flatnonzero(arr < 0)[:5]
        raise DataError(f"{name}: expected 0-based indices >= 0, got {arr[rows].tolist()} at rows {rows.tolist()}")
    return arr


def _float_array(name: str, values, n: int) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name}: expected numbers, got {np.asarray(values).dtype} values") from None
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array with one entry per round, got shape {arr.shape}")
    if len(arr) != n:
        raise DataError(f"{name} has {len(arr)} entries but action has {n}; pass one entry per round")
    return arr


def _seconds(values, n: int) -> np.ndarray:
    """Timestamps as float epoch seconds (accepts datetimes, pandas objects, ISO strings or numbers)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "OMU":
        import pandas as pd

        try:  # naive datetimes are taken as UTC
            idx = pd.DatetimeIndex(pd.to_datetime(pd.Series(arr.reshape(-1)), utc=True))
        except (TypeError, ValueError) as exc:
            raise DataError(f"timestamps: could not read them as datetimes ({exc}); pass epoch seconds") from None
        if idx.isna().any():
            rows = np.flatnonzero(idx.isna())[:5]
            raise DataError(f"timestamps: missing values at rows {rows.tolist()}; fill or drop those rounds")
        arr = idx.as_unit("ns").asi8 / 1e9
    out = _float_array("timestamps", arr, n)
    if not np.isfinite(out).all():
        rows = np.flatnonzero(~np.isfinite(out))[:5]
        raise DataError(f"timestamps: non-finite values at rows {rows.tolist()}; fill or drop those rounds")
    return out


def _matrix(name: str, values, rows: int, rows_name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name}: expected a numeric 2-D array; one-hot encode categorical columns first") from None
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise DataError(f"{name}: expected a 2-D array (one row per {rows_name}), got shape {arr.shape}")
    if arr.shape[0] != rows:
        raise DataError(
            f"{name} has {arr.shape[0]} rows but there are {rows} {rows_name}s; pass one row per {rows_name}"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = np.nonzero(bad)
        raise DataError(
            f"{name}: non-finite values at (row, column) {list(zip(r[:5].tolist(), c[:5].tolist()))}; "
            "impute or drop them first"
        )
    return arr


def _rewards(reward: ArrayLike, n: int) -> np.ndarray:
    """``reward`` as ``n`` finite floats."""
    reward = _float_array("reward", reward, n)
    bad = ~np.isfinite(reward)
    if bad.any():
        rows = np.flatnonzero(bad)[:5]
        raise DataError(f"reward: non-finite values {reward[rows].tolist()} at rows {rows.tolist()}; "
                        "fill or drop those rounds")
    return reward


def _propensities(propensity: ArrayLike, n: int) -> np.ndarray:
    """``propensity`` as ``n`` probabilities in (0, 1]."""
    propensity = _float_array("propensity", propensity, n)
    bad = ~(np.isfinite(propensity) & (propensity > 0.0) & (propensity <= 1.0))
    if bad.any():
        rows = np.flatnonzero(bad)[:5]
        raise DataError(
            f"propensity must lie in (0, 1], got {propensity[rows].tolist()} at rows {rows.tolist()}; "
            "pass the logging policy's probability of each logged action (rounds with probability 0 "
            "cannot have been logged)"
        )
    return propensity


def _n_actions(action: np.ndarray, n_actions: int | None, action_context: ArrayLike | None) -> int:
    """The size of the action set (given, the rows of ``action_context``, or ``action.max() + 1``),
    checked to hold every logged action."""
    if action_context is not None and n_actions is None:
        n_actions = len(np.asarray(action_context))
    if n_actions is None:
        n_actions = int(action.max()) + 1
    n_actions = check_int(n_actions, "n_actions", min=1, expected="a positive integer", error=DataError)
    if action.max() >= n_actions:
        rows = np.flatnonzero(action >= n_actions)[:5]
        raise DataError(
            f"action must lie in [0, {n_actions}), got {action[rows].tolist()} at rows {rows.tolist()}; "
            "encode actions as 0-based indices or raise n_actions"
        )
    return n_actions


def _column_names(what: str, names: Sequence[str] | None, matrix: np.ndarray | None) -> list[str] | None:
    """``names`` of the columns of ``matrix`` (called ``what``) as strings, one per column."""
    if names is None:
        return None
    names = [str(c) for c in names]
    if matrix is None or len(names) != matrix.shape[1]:
        got = None if matrix is None else matrix.shape[1]
        raise DataError(f"{what}_names has {len(names)} names but {what} has {got} columns")
    return names


class LoggedFeedback:
    """Rounds of logged bandit feedback: context, action, position, reward and propensity.

    Parameters
    ----------
    action : int array (n_rounds,)
        The action taken in each round, as a 0-based index in ``[0, n_actions)``.
    reward : float array (n_rounds,)
        The observed reward (finite; e.g. 0/1 click).
    propensity : float array (n_rounds,)
        The logging policy's probability of the logged action (at the logged position), in (0, 1].
    context : float array (n_rounds, n_features), optional
        What the policy saw about each round (user features); a 1-D array is one feature.
    position : int array (n_rounds,), optional
        0-based slot the action was shown in (for slates); None for single-slot logs.
    n_actions : int, optional
        Size of the action set; by default ``action.max() + 1`` (or the rows of ``action_context``).
    action_context : float array (n_actions, n_action_features), optional
        Features of every action (item price, category, ...).
    timestamps : array (n_rounds,), optional
        Epoch seconds, or datetimes (converted to epoch seconds, UTC).
    context_names, action_context_names : sequence of str, optional
        Column names of ``context`` and ``action_context``.

    Raises
    ------
    DataError
        When lengths disagree, a propensity lies outside (0, 1], a reward or feature is not finite,
        or an action / position is not a valid index.

    Examples
    --------
    >>> import numpy as np
    >>> logged = LoggedFeedback(action=[0, 2, 1, 2], reward=[1, 0, 0, 1], propensity=[1 / 3] * 4)
    >>> logged.n_rounds, logged.n_actions
    (4, 3)
    >>> float(logged.reward.mean())
    0.5
    """

    def __init__(
        self,
        action: ArrayLike,
        reward: ArrayLike,
        propensity: ArrayLike,
        context: ArrayLike | None = None,
        position: ArrayLike | None = None,
        *,
        n_actions: int | None = None,
        action_context: ArrayLike | None = None,
        timestamps: ArrayLike | None = None,
        context_names: Sequence[str] | None = None,
        action_context_names: Sequence[str] | None = None,
    ) -> None:
        action = _int_array("action", action, None)
        n = len(action)
        if n == 0:
            raise DataError("LoggedFeedback needs at least one round; action is empty")
        reward = _rewards(reward, n)
        propensity = _propensities(propensity, n)
        n_actions = _n_actions(action, n_actions, action_context)
        if action_context is not None:
            action_context = _matrix("action_context", action_context, n_actions, "action")
        if context is not None:
            context = _matrix("context", context, n, "round")
        if position is not None:
            position = _int_array("position", position, n)
        if timestamps is not None:
            timestamps = _seconds(timestamps, n)
        context_names = _column_names("context", context_names, context)
        action_context_names = _column_names("action_context", action_context_names, action_context)

        self.action = action
        self.reward = reward
        self.propensity = propensity
        self.context = context
        self.position = position
        self.n_actions = n_actions
        self.action_context = action_context
        self.timestamps = timestamps
        self.context_names = context_names
        self.action_context_names = action_context_names
        for a in (action, reward, propensity, context, position, action_context, timestamps):
            if a is not None:
                a.setflags(write=False)

    # ------------------------------------------------------------------ facts
    @property
    def n_rounds(self) -> int:
        """Number of logged rounds."""
        return len(self.action)

    def __len__(self) -> int:
        return len(self.action)

    @property
    def n_positions(self) -> int:
        """Number of slots (1 when there is no position)."""
        return 1 if self.position is None else int(self.position.max()) + 1

    @property
    def pscore(self) -> np.ndarray:
        """Alias of :attr:`propensity` (the name the Open Bandit Pipeline uses)."""
        return self.propensity

    def __repr__(self) -> str:
        extra = []
        if self.context is not None:
            extra.append(f"context {self.context.shape[1]} features")
        if self.position is not None:
            extra.append(f"{self.n_positions} positions")
        if self.action_context is not None:
            extra.append(f"action_context {self.action_context.shape[1]} features")
        more = (", " + ", ".join(extra)) if extra else ""
        return (f"LoggedFeedback({self.n_rounds} rounds, {self.n_actions} actions, "
                f"mean reward {self.reward.mean():.4g}{more})")

    # ------------------------------------------------------------------ views
    def subset(self, rows: ArrayLike | slice) -> LoggedFeedback:
        """The rounds selected by ``rows`` (bool mask, index array or slice); the action set is kept."""
        if isinstance(rows, slice):
            idx = np.arange(self.n_rounds)[rows]
        else:
            idx = np.asarray(rows)
            if idx.dtype == bool:
                if len(idx) != self.n_rounds:
                    raise DataError(f"mask has {len(idx)} entries but there are {self.n_rounds} rounds")
                idx = np.flatnonzero(idx)
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return LoggedFeedback(
            self.action[idx], self.reward[idx], self.propensity[idx], pick(self.context), pick(self.position),
            n_actions=self.n_actions, action_context=self.action_context, timestamps=pick(self.timestamps),
            context_names=self.context_names, action_context_names=self.action_context_names,
        )

    def __getitem__(self, rows) -> "LoggedFeedback":
        return self.subset(rows)
