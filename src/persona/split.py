"""Train / validation / test splits of an :class:`~persona.data.Interactions` event log.

Every split keeps the id maps of its input, so the matrices of all parts are aligned (row ``u`` and
column ``i`` mean the same user and item in each part) and a model fitted on ``train`` can be
evaluated on ``test`` without re-indexing. Every event of the input lands in exactly one part.

Each function attaches a dict ``split_info`` to the parts it returns (the same dict on each) with
what it did: how many users were split, how many kept every event in train, and, for the temporal
split, how many test users and items never occur in train ("cold"). Nothing is dropped silently.

Examples
--------
>>> import numpy as np
>>> from persona.data import IdMap, Interactions
>>> inter = Interactions(IdMap(["u1", "u2"]), IdMap(["a", "b", "c", "d"]),
...                      users=[0, 0, 0, 0, 1, 1], items=[0, 1, 2, 3, 0, 1])
>>> train, valid, test = leave_last_out(inter)
>>> len(train), len(valid), len(test)
(4, 1, 1)
>>> test.split_info["n_users_train_only"]    # u2 has 2 < min_events=3 events
1
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import numbers

import numpy as np

from ._validate import check_int
from .data.interactions import Interactions
from .errors import DataError
from .typing import TimePoint


__all__ = ["leave_last_out", "temporal", "random"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- helpers
def _check_interactions(inter, fn: str) -> None:
    if not isinstance(inter, Interactions):
        raise DataError(
            f"{fn}: expected a persona Interactions, got {type(inter).__name__}; "
            f"build one with ps.Interactions.from_frame(...) first"
        )


def _check_int(value, name: str, fn: str, minimum: int) -> int:
    return check_int(value, fn, min=minimum, expected=f"{name} to be an integer >= {minimum}",
                     hint=f"pass e.g. {name}={minimum + 1}", error=DataError)


def _check_fraction(value, name: str, fn: str, *, allow_zero: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and (isinstance(value, numbers.Integral) or math.isfinite(value))
    lo_ok = ok and (value >= 0 if allow_zero else value > 0)
    if not (lo_ok and value < 1):
        lo = "0 <= " if allow_zero else "0 < "
        raise DataError(f"{fn}: expected {name} with {lo}{name} < 1, got {value!r}; pass a fraction such as 0.2")
    return float(value)


def _pair_keys(inter: Interactions) -> np.ndarray:
    return inter.users.astype(np.int64) * max(inter.n_items, 1) + inter.items


def _n_seen_in(part: Interactions, reference: Interactions) -> int:
    """Number of events of ``part`` whose (user, item) pair also occurs in ``reference``."""
    if len(part) == 0 or len(reference) == 0:
        return 0
    return int(np.isin(_pair_keys(part), _pair_keys(reference)).sum())


def _attach(info: dict, *parts: Interactions) -> None:
    for p in parts:
        p.split_info = info


def _partition(inter: Interactions, part_of_event: np.ndarray, n_parts: int) -> list[Interactions]:
    """Split events by a part code (0 = train, then valid / test), keeping order and maps."""
    return [inter.subset(part_of_event == p) for p in range(n_parts)]


# ---------------------------------------------------------------------------------------- leave last out
def leave_last_out(inter: Interactions, *, min_events: int = 3,
                   new_items: bool = False) -> tuple[Interactions, Interactions, Interactions]:
    """Per user, the last event is the test target and the second-to-last the validation target.

    Events are ordered by time within each user (input order breaks ties, and is the order when
    there are no timestamps). Users with fewer than ``min_events`` events keep all their events in
    train; they are counted in ``split_info["n_users_train_only"]`` and logged at INFO.

    Parameters
    ----------
    inter : Interactions
    min_events : int, default 3
        Fewest events a user needs to contribute a validation and a test target (at least 2;
        with 2, such a user has no training event left).
    new_items : bool, default False
        For raw event logs where users view, cart and buy the same item several times: the
        targets are then the user's last two *newly touched* items (first events of a user-item
        pair), ``min_events`` counts distinct items, train holds the events before the validation
        target, and the user's events after it that are not the test target (repeat events of items
        already touched) are dropped and counted in ``split_info["n_events_dropped"]``, so nothing
        from after a target reaches a model. Without it, most targets of such logs are repeats that
        a seen-items filter makes impossible to hit.

    Returns
    -------
    train, valid, test : Interactions
        Same id maps as ``inter``; every event is in exactly one of them. ``valid`` and ``test``
        hold at most one event per user. Each carries the same ``split_info`` dict with keys
        ``method, min_events, n_users, n_users_split, n_users_train_only, n_events_train_only,
        n_train, n_valid, n_test, n_test_seen_in_train, n_valid_seen_in_train`` (the last two count
        targets whose user-item pair also occurs in train, e.g. repeat purchases).

    Examples
    --------
    >>> from persona.data import IdMap, Interactions
    >>> inter = Interactions(IdMap([7]), IdMap(["a", "b", "c"]), users=[0, 0, 0], items=[2, 0, 1],
    ...                      timestamps=[3.0, 1.0, 2.0])
    >>> train, valid, test = leave_last_out(inter)
    >>> [inter.item_ids[p.items].tolist() for p in (train, valid, test)]
    [['a'], ['b'], ['c']]
    """
    _check_interactions(inter, "leave_last_out")
    min_events = _check_int(min_events, "min_events", "leave_last_out", 2)

    counts = inter.user_counts
    ends = inter.sequence_indptr[1:]
    n_dropped = 0
    if not new_items:
        split_users = np.flatnonzero(counts >= min_events)
        part = np.zeros(len(inter), dtype=np.int8)
        part[ends[split_users] - 2] = 1
        part[ends[split_users] - 1] = 2
    else:
        # first event of every user-item pair, in the canonical (user, time) order
        _, first = np.unique(_pair_keys(inter), return_index=True)
        first.sort()
        n_new = np.bincount(inter.users[first], minlength=inter.n_users)
        new_end = np.cumsum(n_new)
        split_users = np.flatnonzero(n_new >= min_events)
        valid_at = np.full(inter.n_users, -1, dtype=np.int64)
        test_at = np.full(inter.n_users, -1, dtype=np.int64)
        valid_at[split_users] = first[new_end[split_users] - 2]
        test_at[split_users] = first[new_end[split_users] - 1]
        pos = np.arange(len(inter), dtype=np.int64)
        v, t = valid_at[inter.users], test_at[inter.users]
        part = np.where(v < 0, 0, np.where(pos < v, 0, np.where(pos == v, 1, np.where(pos == t, 2, 3))))
        part = part.astype(np.int8)
        n_dropped = int((part == 3).sum())
    events_per_user = counts
    if new_items:
        counts = n_new  # eligibility counts distinct items
    train, valid, test = _partition(inter, part, 3)

    short = (counts > 0) & (counts < min_events)
    info = {
        "method": "leave_last_out",
        "min_events": min_events,
        "new_items": bool(new_items),
        "n_events_dropped": n_dropped,
        "n_users": int((counts > 0).sum()),
        "n_users_split": int(len(split_users)),
        "n_users_train_only": int(short.sum()),
        "n_events_train_only": int(events_per_user[short].sum()),
        "n_train": len(train),
        "n_valid": len(valid),
        "n_test": len(test),
        "n_valid_seen_in_train": _n_seen_in(valid, train),
        "n_test_seen_in_train": _n_seen_in(test, train),
    }
    _attach(info, train, valid, test)
    if info["n_users_train_only"]:
        logger.info(
            "leave_last_out: %d of %d users have fewer than %d events; their %d events stay in train only",
            info["n_users_train_only"], info["n_users"], min_events, info["n_events_train_only"],
        )
    if n_dropped:
        logger.info("leave_last_out(new_items=True): dropped %d repeat events after the validation targets",
                    n_dropped)
    logger.info("leave_last_out: %d train, %d valid, %d test events", len(train), len(valid), len(test))
    return train, valid, test


# ---------------------------------------------------------------------------------------- temporal
def _to_epoch(value, name: str) -> float:
    """Epoch seconds of a datetime, ISO string, numpy/pandas timestamp or number.

    Naive datetimes and strings without a zone are read as UTC.
    """
    if isinstance(value, bool):
        raise DataError(f"temporal: expected {name} as a datetime, ISO string or epoch seconds, got {value!r}")
    if isinstance(value, numbers.Real):
        v = float(value)
        if not np.isfinite(v):
            raise DataError(f"temporal: expected a finite {name}, got {value!r}; pass a datetime or epoch seconds")
        return v
    if isinstance(value, (str, _dt.datetime, _dt.date, np.datetime64)) or type(value).__name__ == "Timestamp":
        import pandas as pd

        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError) as exc:
            raise DataError(
                f"temporal: expected {name} as a datetime, ISO string or epoch seconds, got {value!r} ({exc}); "
                f"pass e.g. '2024-01-31' or datetime(2024, 1, 31)"
            ) from None
        if ts is pd.NaT:
            raise DataError(f"temporal: {name} is NaT; pass a real date")
        if ts.tzinfo is None:
            ts = ts.tz_localize("UTC")
        return ts.value / 1e9
    raise DataError(
        f"temporal: expected {name} as a datetime, ISO string or epoch seconds, got {type(value).__name__} "
        f"{value!r}; pass e.g. '2024-01-31'"
    )


def _fmt_time(t: float) -> str:
    try:
        return _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError):
        return repr(t)


def _cold_counts(part: Interactions, train: Interactions, prefix: str = "") -> dict:
    """Users / items of ``part`` without any train event, and the events that involve them."""
    users_in_train = np.zeros(train.n_users, dtype=bool)
    users_in_train[train.users] = True
    items_in_train = np.zeros(train.n_items, dtype=bool)
    items_in_train[train.items] = True
    cold_u = ~users_in_train[part.users]
    cold_i = ~items_in_train[part.items]
    return {
        prefix + "n_cold_users": int(len(np.unique(part.users[cold_u]))),
        prefix + "n_cold_items": int(len(np.unique(part.items[cold_i]))),
        prefix + "n_events_cold_user": int(cold_u.sum()),
        prefix + "n_events_cold_item": int(cold_i.sum()),
        prefix + "n_events_cold": int((cold_u | cold_i).sum()),
    }


def temporal(inter: Interactions, cutoff: TimePoint, *,
             valid_cutoff: TimePoint | None = None) -> tuple[Interactions, ...]:
    """Split at a global point in time: train before ``cutoff``, test from ``cutoff`` on.

    Parameters
    ----------
    inter : Interactions
        Must have timestamps.
    cutoff : datetime, ISO string, numpy/pandas timestamp or epoch seconds
        Events strictly before it are train (or validation), events at or after it are test.
        Naive datetimes and strings without a time zone are read as UTC.
    valid_cutoff : same types, optional
        Start of a validation window ``[valid_cutoff, cutoff)``, carved from the end of the
        training period: train is then strictly before ``valid_cutoff``. Must be earlier than
        ``cutoff``.

    Returns
    -------
    (train, test), or (train, valid, test) when ``valid_cutoff`` is given
        Same id maps as ``inter``; every event is in exactly one part. Test (and validation) users
        and items that never occur in train are kept, counted in ``split_info`` and reported with a
        warning: ``n_cold_users``, ``n_cold_items`` (distinct), ``n_events_cold_user``,
        ``n_events_cold_item`` and ``n_events_cold`` (events with a cold user or item) for test,
        the same keys prefixed ``valid_`` for validation, all relative to train. Also
        ``n_test_seen_in_train`` (test events whose user-item pair occurs in train), ``n_train``,
        ``n_valid``, ``n_test``, ``cutoff`` and ``valid_cutoff`` (epoch seconds).

    Raises
    ------
    DataError
        Without timestamps, with an unreadable cutoff, or when a part would be empty.

    Examples
    --------
    >>> from persona.data import IdMap, Interactions
    >>> inter = Interactions(IdMap(["u1", "u2"]), IdMap(["a", "b", "c"]), users=[0, 0, 1],
    ...                      items=[0, 1, 2], timestamps=[0.0, 100.0, 200.0])
    >>> train, test = temporal(inter, 50)
    >>> len(train), len(test), test.split_info["n_cold_users"], test.split_info["n_cold_items"]
    (1, 2, 1, 2)
    """
    _check_interactions(inter, "temporal")
    if inter.timestamps is None:
        raise DataError(
            "temporal: expected interactions with timestamps, got none; build them with "
            "from_frame(..., time='your_time_column') or use split.leave_last_out / split.random"
        )
    t = inter.timestamps
    n_nan = int(np.isnan(t).sum())
    if n_nan:
        rows = np.flatnonzero(np.isnan(t))[:5].tolist()
        raise DataError(f"temporal: {n_nan} events have a null timestamp (event rows {rows}); drop or fill them first")
    if len(inter) == 0:
        raise DataError("temporal: expected interactions with events, got none")
    cut = _to_epoch(cutoff, "cutoff")
    vcut = None if valid_cutoff is None else _to_epoch(valid_cutoff, "valid_cutoff")
    span = f"events span {_fmt_time(float(t.min()))} to {_fmt_time(float(t.max()))}"
    if vcut is not None and not vcut < cut:
        raise DataError(
            f"temporal: expected valid_cutoff earlier than cutoff, got valid_cutoff {_fmt_time(vcut)} and cutoff "
            f"{_fmt_time(cut)}; the validation window is [valid_cutoff, cutoff)"
        )

    part = np.where(t < cut, 0, 2).astype(np.int8)
    if vcut is not None:
        part[(t >= vcut) & (t < cut)] = 1
    train, valid, test = _partition(inter, part, 3)
    names = [("train", train), ("test", test)] + ([("validation", valid)] if vcut is not None else [])
    for name, p in names:
        if len(p) == 0:
            raise DataError(
                f"temporal: expected events on every side of the split, got an empty {name} part with cutoff "
                f"{_fmt_time(cut)}" + (f" and valid_cutoff {_fmt_time(vcut)}" if vcut is not None else "")
                + f" ({span}); choose cutoffs inside that range (timestamps are epoch seconds)"
            )

    info = {"method": "temporal", "cutoff": cut, "valid_cutoff": vcut,
            "n_train": len(train), "n_valid": len(valid), "n_test": len(test)}
    info.update(_cold_counts(test, train))
    info["n_test_seen_in_train"] = _n_seen_in(test, train)
    if vcut is not None:
        info.update(_cold_counts(valid, train, prefix="valid_"))
        info["n_valid_seen_in_train"] = _n_seen_in(valid, train)

    if info["n_events_cold"]:
        logger.warning(
            "temporal split: %d of %d test events involve users or items unseen in train "
            "(%d cold users, %d cold items); they are kept in test and count as misses for models that cannot "
            "score them",
            info["n_events_cold"], len(test), info["n_cold_users"], info["n_cold_items"],
        )
    if vcut is not None and info["valid_n_events_cold"]:
        logger.warning(
            "temporal split: %d of %d validation events involve users or items unseen in train "
            "(%d cold users, %d cold items)",
            info["valid_n_events_cold"], len(valid), info["valid_n_cold_users"], info["valid_n_cold_items"],
        )
    logger.info("temporal split: %d train, %d valid, %d test events", len(train), len(valid), len(test))
    if vcut is None:
        _attach(info, train, test)
        return train, test
    _attach(info, train, valid, test)
    return train, valid, test


# ---------------------------------------------------------------------------------------- random
def _rng(random_state):
    if random_state is None or isinstance(random_state, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(random_state, (bool, np.bool_)) or (random_state is not None and not isinstance(
                random_state, np.random.SeedSequence) and random_state < 0):
            raise DataError(f"random: expected random_state as None, an int >= 0 or a numpy Generator, "
                            f"got {random_state!r}; pass e.g. random_state=0")
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    raise DataError(
        f"random: expected random_state as None, an int or a numpy Generator, got {type(random_state).__name__}; "
        f"pass e.g. random_state=0"
    )


def random(inter: Interactions, *, test_fraction: float = 0.2, valid_fraction: float = 0.0,
           random_state: int | np.random.Generator | np.random.SeedSequence | np.random.RandomState | None = None,
           min_events: int = 2) -> tuple[Interactions, ...]:
    """Hold out a random fraction of each user's events.

    A user with ``c >= min_events`` events gives ``max(1, round(test_fraction * c))`` events to
    test and, when ``valid_fraction > 0``, ``max(1, round(valid_fraction * c))`` to validation
    (rounding half up), always leaving at least one event in train: when the two would take every
    event, validation gets fewer first (possibly none), then test (never fewer than one). Users with
    fewer than ``min_events`` events keep them all in train and are counted in
    ``split_info["n_users_train_only"]``.

    Parameters
    ----------
    inter : Interactions
    test_fraction : float in (0, 1), default 0.2
    valid_fraction : float in [0, 1), default 0.0
        ``test_fraction + valid_fraction`` must be below 1.
    random_state : None, int or numpy Generator
    min_events : int >= 2, default 2

    Returns
    -------
    (train, test) when ``valid_fraction == 0``, else (train, valid, test)
        Same id maps as ``inter``; every event is in exactly one part; each part keeps the time
        order of the events. ``split_info`` holds ``n_users_split``, ``n_users_train_only``,
        ``n_events_train_only``, ``n_train``, ``n_valid``, ``n_test`` and ``n_test_seen_in_train``
        (held-out events whose user-item pair also occurs in train: a repeated pair can be split
        across the parts, and such a target is excluded as already seen by the usual protocol).

    Examples
    --------
    >>> from persona.data import IdMap, Interactions
    >>> inter = Interactions(IdMap(["u1"]), IdMap(list("abcdefghij")), users=[0] * 10, items=range(10))
    >>> train, test = random(inter, test_fraction=0.3, random_state=0)
    >>> len(train), len(test)
    (7, 3)
    """
    fn = "random"
    _check_interactions(inter, fn)
    test_fraction = _check_fraction(test_fraction, "test_fraction", fn, allow_zero=False)
    valid_fraction = _check_fraction(valid_fraction, "valid_fraction", fn, allow_zero=True)
    if test_fraction + valid_fraction >= 1:
        raise DataError(
            f"random: expected test_fraction + valid_fraction < 1, got {test_fraction} + {valid_fraction}; "
            f"leave some events for training"
        )
    min_events = _check_int(min_events, "min_events", fn, 2)
    rng = _rng(random_state)

    counts = inter.user_counts.astype(np.int64)
    eligible = counts >= min_events
    n_test = np.where(eligible, np.maximum(1, np.floor(test_fraction * counts + 0.5)), 0).astype(np.int64)
    if valid_fraction > 0:
        n_valid = np.where(eligible, np.maximum(1, np.floor(valid_fraction * counts + 0.5)), 0).astype(np.int64)
    else:
        n_valid = np.zeros_like(n_test)
    room = np.maximum(counts - 1, 0)  # at least one train event per eligible user
    n_test = np.minimum(n_test, np.where(eligible, np.maximum(room, 1), 0))
    n_valid = np.minimum(n_valid, room - n_test).clip(min=0)

    # a random rank of every event inside its user's events: the lowest ranks are held out
    n = len(inter)
    users = inter.users.astype(np.int64)
    order = np.lexsort((rng.random(n), users))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - inter.sequence_indptr[users[order]]
    nt, nv = n_test[users], n_valid[users]
    part = np.zeros(n, dtype=np.int8)
    part[rank < nt] = 2
    part[(rank >= nt) & (rank < nt + nv)] = 1
    train, valid, test = _partition(inter, part, 3)

    short = (counts > 0) & ~eligible
    info = {
        "method": "random",
        "test_fraction": test_fraction,
        "valid_fraction": valid_fraction,
        "min_events": min_events,
        "n_users_split": int(eligible.sum()),
        "n_users_train_only": int(short.sum()),
        "n_events_train_only": int(counts[short].sum()),
        "n_train": len(train),
        "n_valid": len(valid),
        "n_test": len(test),
        "n_test_seen_in_train": _n_seen_in(test, train),
    }
    if info["n_users_train_only"]:
        logger.info(
            "random split: %d users have fewer than %d events; their %d events stay in train only",
            info["n_users_train_only"], min_events, info["n_events_train_only"],
        )
    if valid_fraction > 0:
        info["n_valid_seen_in_train"] = _n_seen_in(valid, train)
        _attach(info, train, valid, test)
        return train, valid, test
    _attach(info, train, test)
    return train, test
