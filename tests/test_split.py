"""Tests of persona.split: partitions are exact, leak-free, and report what they did."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persona.data import IdMap, Interactions
from persona.errors import DataError, PersonaError
from persona import split


def make(users, items, ts=None, n_users=None, n_items=None):
    """Interactions from index lists; ``values`` carries each event's input position as its id."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    n_users = n_users if n_users is not None else (int(users.max()) + 1 if len(users) else 0)
    n_items = n_items if n_items is not None else (int(items.max()) + 1 if len(items) else 0)
    return Interactions(
        IdMap([f"u{i}" for i in range(n_users)]),
        IdMap([f"i{i}" for i in range(n_items)]),
        users, items, timestamps=ts, values=np.arange(len(users), dtype=np.float32),
    )


def ids(part):
    return sorted(part.values.astype(np.int64).tolist())


def stored_position(inter):
    """Map event id (value) -> position in the stored, time-ordered event log."""
    pos = np.empty(len(inter), dtype=np.int64)
    pos[inter.values.astype(np.int64)] = np.arange(len(inter))
    return pos


def assert_partition(inter, parts):
    allv = np.concatenate([p.values for p in parts]).astype(np.int64)
    assert sorted(allv.tolist()) == list(range(len(inter)))  # every event exactly once
    for p in parts:
        assert p.user_map is inter.user_map and p.item_map is inter.item_map
        assert p.matrix.shape == inter.matrix.shape


def assert_no_leak(inter, earlier, later):
    """Every event of ``later`` comes after every event of ``earlier`` of the same user."""
    pos = stored_position(inter)
    if len(earlier) == 0 or len(later) == 0:
        return
    last_early = np.full(inter.n_users, -1)
    np.maximum.at(last_early, earlier.users, pos[earlier.values.astype(np.int64)])
    assert np.all(pos[later.values.astype(np.int64)] > last_early[later.users])
    if inter.timestamps is not None:
        t_early = np.full(inter.n_users, -np.inf)
        np.maximum.at(t_early, earlier.users, earlier.timestamps)
        assert np.all(later.timestamps >= t_early[later.users])


# ------------------------------------------------------------------------------------ leave_last_out
def test_leave_last_out_uses_time_order_not_input_order():
    # user 0: items 2 (t=30), 0 (t=10), 1 (t=20), 3 (t=40); user 1: 3 events; user 2: 2 events
    inter = make([0, 0, 0, 0, 1, 1, 1, 2, 2], [2, 0, 1, 3, 4, 0, 1, 0, 4],
                 ts=[30, 10, 20, 40, 5, 6, 7, 1, 2])
    train, valid, test = split.leave_last_out(inter)
    assert list(zip(test.users.tolist(), test.items.tolist())) == [(0, 3), (1, 1)]
    assert list(zip(valid.users.tolist(), valid.items.tolist())) == [(0, 2), (1, 0)]
    assert list(zip(train.users.tolist(), train.items.tolist())) == [(0, 0), (0, 1), (1, 4), (2, 0), (2, 4)]
    assert_partition(inter, (train, valid, test))
    info = test.split_info
    assert info["n_users"] == 3
    assert info["n_users_split"] == 2
    assert info["n_users_train_only"] == 1
    assert info["n_events_train_only"] == 2
    assert (info["n_train"], info["n_valid"], info["n_test"]) == (5, 2, 2)
    assert valid.split_info is info and train.split_info is info


def test_leave_last_out_without_timestamps_uses_input_order():
    inter = make([1, 0, 1, 0, 1, 0], [0, 1, 2, 3, 4, 5])
    train, valid, test = split.leave_last_out(inter)
    assert test.items.tolist() == [5, 4] and valid.items.tolist() == [3, 2]
    assert train.items.tolist() == [1, 0]


def test_leave_last_out_min_events_and_logging(caplog):
    inter = make([0, 0, 0, 0, 1, 1, 1, 2], [0, 1, 2, 3, 0, 1, 2, 0], ts=np.arange(8.0))
    with caplog.at_level(logging.INFO, logger="persona.split"):
        train, valid, test = split.leave_last_out(inter, min_events=4)
    assert test.users.tolist() == [0] and valid.users.tolist() == [0]
    assert len(train) == 6
    assert test.split_info["n_users_train_only"] == 2
    assert test.split_info["n_events_train_only"] == 4
    assert any("2 of 3 users have fewer than 4 events" in r.getMessage() for r in caplog.records)

    train, valid, test = split.leave_last_out(inter, min_events=2)
    assert sorted(test.users.tolist()) == [0, 1] and len(train) == 4
    assert test.split_info["n_users_train_only"] == 1


def test_leave_last_out_counts_repeated_targets():
    inter = make([0, 0, 0, 0], [0, 1, 0, 0], ts=[1.0, 2.0, 3.0, 4.0])
    _, _, test = split.leave_last_out(inter)
    assert test.split_info["n_test_seen_in_train"] == 1
    assert test.split_info["n_valid_seen_in_train"] == 1


@pytest.mark.parametrize("bad", [1, 0, -3, 2.5, "3", True, None])
def test_leave_last_out_rejects_bad_min_events(bad):
    inter = make([0, 0, 0], [0, 1, 2])
    with pytest.raises(DataError, match="expected min_events"):
        split.leave_last_out(inter, min_events=bad)


def test_split_rejects_non_interactions():
    with pytest.raises(DataError, match="expected a persona Interactions"):
        split.leave_last_out(pd.DataFrame({"user": [1]}))
    with pytest.raises(PersonaError):
        split.random([1, 2, 3])


# ------------------------------------------------------------------------------------ temporal
DAY = 86400.0
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc).timestamp()


def temporal_data():
    # user 0: days 0, 1, 5; user 1: days 2, 6; user 2: day 7 only (cold); item 3 only after the cutoff
    users = [0, 0, 0, 1, 1, 2]
    items = [0, 1, 2, 0, 3, 1]
    ts = [T0 + d * DAY for d in (0, 1, 5, 2, 6, 7)]
    return make(users, items, ts=ts)


@pytest.mark.parametrize(
    "cutoff",
    [T0 + 4 * DAY, int(T0 + 4 * DAY), "2024-01-05", "2024-01-05T00:00:00Z", dt.datetime(2024, 1, 5),
     dt.datetime(2024, 1, 5, tzinfo=dt.timezone.utc), np.datetime64("2024-01-05"), pd.Timestamp("2024-01-05"),
     dt.date(2024, 1, 5)],
)
def test_temporal_accepts_every_cutoff_form(cutoff):
    inter = temporal_data()
    train, test = split.temporal(inter, cutoff)
    assert ids(train) == [0, 1, 3]
    assert ids(test) == [2, 4, 5]
    assert test.split_info["cutoff"] == T0 + 4 * DAY


def test_temporal_cold_counts_and_warning(caplog):
    inter = temporal_data()
    with caplog.at_level(logging.WARNING, logger="persona.split"):
        train, test = split.temporal(inter, T0 + 4 * DAY)
    info = test.split_info
    # test events: (u0, i2), (u1, i3), (u2, i1): u2 is cold; i2 and i3 are cold
    assert info["n_cold_users"] == 1
    assert info["n_cold_items"] == 2
    assert info["n_events_cold_user"] == 1
    assert info["n_events_cold_item"] == 2
    assert info["n_events_cold"] == 3
    assert (info["n_train"], info["n_test"]) == (3, 3)
    assert len(test) == 3  # cold events kept
    assert any("3 of 3 test events" in r.getMessage() for r in caplog.records)


def test_temporal_event_at_cutoff_goes_to_test():
    inter = temporal_data()
    train, test = split.temporal(inter, T0 + 2 * DAY)  # user 1's first event is exactly at the cutoff
    assert ids(train) == [0, 1]
    assert 3 in ids(test)


def test_temporal_validation_window():
    inter = temporal_data()
    train, valid, test = split.temporal(inter, "2024-01-06T12:00", valid_cutoff="2024-01-02")
    assert ids(train) == [0]
    assert ids(valid) == [1, 2, 3]
    assert ids(test) == [4, 5]
    assert_partition(inter, (train, valid, test))
    info = test.split_info
    assert valid.split_info is info
    # test (u1, i3), (u2, i1) relative to train {(u0, i0)}: both users and both items cold
    assert (info["n_cold_users"], info["n_cold_items"], info["n_events_cold"]) == (2, 2, 2)
    # valid (u0, i1), (u0, i2), (u1, i0): user 1 cold; items 1 and 2 cold
    assert (info["valid_n_cold_users"], info["valid_n_cold_items"]) == (1, 2)
    assert (info["valid_n_events_cold_user"], info["valid_n_events_cold_item"], info["valid_n_events_cold"]) == (1, 2, 3)


def test_temporal_errors():
    no_time = make([0, 0], [0, 1])
    with pytest.raises(DataError, match="expected interactions with timestamps"):
        split.temporal(no_time, 0)
    inter = temporal_data()
    with pytest.raises(DataError, match="empty train"):
        split.temporal(inter, "2020-01-01")
    with pytest.raises(DataError, match="empty test"):
        split.temporal(inter, "2030-01-01")
    with pytest.raises(DataError, match="valid_cutoff earlier than cutoff"):
        split.temporal(inter, "2024-01-05", valid_cutoff="2024-01-06")
    with pytest.raises(DataError, match="empty validation"):
        split.temporal(inter, "2024-01-05", valid_cutoff="2024-01-04")
    with pytest.raises(DataError, match="expected cutoff"):
        split.temporal(inter, "not a date")
    with pytest.raises(DataError, match="expected cutoff"):
        split.temporal(inter, [1, 2])
    with pytest.raises(DataError, match="finite"):
        split.temporal(inter, float("nan"))
    nan_time = make([0, 0], [0, 1], ts=[1.0, np.nan])
    with pytest.raises(DataError, match="null timestamp"):
        split.temporal(nan_time, 0.5)


# ------------------------------------------------------------------------------------ random
def test_random_fractions_per_user():
    # user 0: 10 events, user 1: 2 events, user 2: 1 event, user 3: 5 events
    users = [0] * 10 + [1] * 2 + [2] + [3] * 5
    inter = make(users, np.arange(len(users)) % 7, ts=np.arange(len(users), dtype=float))
    train, test = split.random(inter, test_fraction=0.2, random_state=0)
    assert_partition(inter, (train, test))
    n_test = np.bincount(test.users, minlength=4).tolist()
    assert n_test == [2, 1, 0, 1]  # round(2.0), max(1, round(0.4)), below min_events, round(1.0)
    info = test.split_info
    assert info["n_users_split"] == 3 and info["n_users_train_only"] == 1 and info["n_events_train_only"] == 1

    train, valid, test = split.random(inter, test_fraction=0.3, valid_fraction=0.2, random_state=1)
    assert_partition(inter, (train, valid, test))
    assert np.bincount(test.users, minlength=4).tolist() == [3, 1, 0, 2]  # 3, 0.6->1, -, 1.5->2
    # valid: 2, none for user 1 (train needs one event), -, 1
    assert np.bincount(valid.users, minlength=4).tolist() == [2, 0, 0, 1]
    assert np.bincount(train.users, minlength=4).tolist() == [5, 1, 1, 2]


def test_random_is_reproducible_and_varies_with_seed():
    users = np.repeat(np.arange(20), 10)
    inter = make(users, np.arange(200) % 13)
    a = ids(split.random(inter, random_state=3)[1])
    b = ids(split.random(inter, random_state=3)[1])
    c = ids(split.random(inter, random_state=4)[1])
    d = ids(split.random(inter, random_state=np.random.default_rng(3))[1])
    assert a == b == d
    assert a != c


def test_random_min_events():
    inter = make([0, 0, 0, 1, 1], [0, 1, 2, 0, 1])
    train, test = split.random(inter, test_fraction=0.5, min_events=3, random_state=0)
    assert np.bincount(test.users, minlength=2).tolist() == [2, 0]  # round(1.5) = 2 (half up)
    assert test.split_info["n_users_train_only"] == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"test_fraction": 0}, "expected test_fraction"),
        ({"test_fraction": 1.0}, "expected test_fraction"),
        ({"test_fraction": -0.1}, "expected test_fraction"),
        ({"test_fraction": "0.2"}, "expected test_fraction"),
        ({"valid_fraction": -0.1}, "expected valid_fraction"),
        ({"test_fraction": 0.6, "valid_fraction": 0.5}, "test_fraction \\+ valid_fraction < 1"),
        ({"min_events": 1}, "expected min_events"),
        ({"random_state": "seed"}, "expected random_state"),
    ],
)
def test_random_rejects_bad_arguments(kwargs, match):
    inter = make([0, 0, 0], [0, 1, 2])
    with pytest.raises(DataError, match=match):
        split.random(inter, **kwargs)


# ------------------------------------------------------------------------------------ properties
@st.composite
def event_logs(draw, with_time=True):
    if not isinstance(with_time, bool):
        with_time = draw(with_time)
    n_users = draw(st.integers(1, 8))
    n_items = draw(st.integers(1, 6))
    n = draw(st.integers(1, 60))
    users = draw(st.lists(st.integers(0, n_users - 1), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, n_items - 1), min_size=n, max_size=n))
    ts = None
    if with_time:
        ts = draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))  # many ties
        ts = np.asarray(ts, dtype=float)
    return make(users, items, ts=ts, n_users=n_users, n_items=n_items)


@settings(max_examples=150, deadline=None)
@given(event_logs(with_time=st.booleans()), st.integers(2, 5))
def test_leave_last_out_properties(inter, min_events):
    train, valid, test = split.leave_last_out(inter, min_events=min_events)
    assert_partition(inter, (train, valid, test))
    assert_no_leak(inter, train, valid)
    assert_no_leak(inter, train, test)
    assert_no_leak(inter, valid, test)
    counts = np.bincount(inter.users, minlength=inter.n_users)
    eligible = counts >= min_events
    assert np.array_equal(np.bincount(test.users, minlength=inter.n_users), eligible.astype(int))
    assert np.array_equal(np.bincount(valid.users, minlength=inter.n_users), eligible.astype(int))
    assert test.split_info["n_users_train_only"] == int(((counts > 0) & ~eligible).sum())
    # the test target is the user's last stored event
    for u in np.flatnonzero(eligible):
        assert test.values[test.users == u][0] == inter.values[inter.users == u][-1]


@settings(max_examples=150, deadline=None)
@given(event_logs(), st.integers(0, 21), st.integers(0, 21))
def test_temporal_properties(inter, c1, c2):
    lo, hi = min(c1, c2), max(c1, c2)
    t = inter.timestamps
    use_valid = lo < hi and (t < lo).any() and ((t >= lo) & (t < hi)).any() and (t >= hi).any()
    if not use_valid:
        if not ((t < hi).any() and (t >= hi).any()):
            with pytest.raises(DataError):
                split.temporal(inter, float(hi))
            return
        train, test = split.temporal(inter, float(hi))
        parts = (train, test)
    else:
        train, valid, test = split.temporal(inter, float(hi), valid_cutoff=float(lo))
        parts = (train, valid, test)
        assert np.all((valid.timestamps >= lo) & (valid.timestamps < hi))
    assert_partition(inter, parts)
    assert np.all(train.timestamps < (lo if use_valid else hi))
    assert np.all(test.timestamps >= hi)
    tu, ti = set(train.users.tolist()), set(train.items.tolist())
    ev = list(zip(test.users.tolist(), test.items.tolist()))
    info = test.split_info
    assert info["n_cold_users"] == len({u for u, _ in ev if u not in tu})
    assert info["n_cold_items"] == len({i for _, i in ev if i not in ti})
    assert info["n_events_cold_user"] == sum(u not in tu for u, _ in ev)
    assert info["n_events_cold_item"] == sum(i not in ti for _, i in ev)
    assert info["n_events_cold"] == sum(u not in tu or i not in ti for u, i in ev)
    assert info["n_test_seen_in_train"] == sum(
        (u, i) in set(zip(train.users.tolist(), train.items.tolist())) for u, i in ev
    )


@settings(max_examples=150, deadline=None)
@given(event_logs(with_time=st.booleans()), st.floats(0.05, 0.6), st.sampled_from([0.0, 0.1, 0.3]),
       st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_random_properties(inter, tf, vf, min_events, seed):
    res = split.random(inter, test_fraction=tf, valid_fraction=vf, min_events=min_events, random_state=seed)
    assert len(res) == (3 if vf > 0 else 2)
    assert_partition(inter, res)
    train, test = res[0], res[-1]
    counts = np.bincount(inter.users, minlength=inter.n_users)
    nt = np.bincount(test.users, minlength=inter.n_users)
    nv = np.bincount(res[1].users, minlength=inter.n_users) if vf > 0 else np.zeros_like(nt)
    ntr = np.bincount(train.users, minlength=inter.n_users)
    for u in range(inter.n_users):
        c = counts[u]
        if c < min_events:
            assert nt[u] == 0 and nv[u] == 0
            continue
        want_t = min(max(1, int(np.floor(tf * c + 0.5))), c - 1)
        want_v = 0 if vf == 0 else min(max(1, int(np.floor(vf * c + 0.5))), c - 1 - want_t)
        assert nt[u] == want_t and nv[u] == want_v and ntr[u] >= 1
    pos = stored_position(inter)
    for p in res:  # each part keeps the stored (time) order
        assert np.all(np.diff(p.users) >= 0)
        q = pos[p.values.astype(np.int64)]
        assert np.all(np.diff(q) > 0)


# ---------------------------------------------------------------------------------------- new_items
def _log(rows):
    """rows: (user, item, time) with string ids -> Interactions."""
    from persona.data import IdMap, Interactions

    umap, u = IdMap.encode([r[0] for r in rows])
    imap, i = IdMap.encode([r[1] for r in rows])
    return Interactions(umap, imap, u, i, timestamps=[float(r[2]) for r in rows])


def test_new_items_targets_are_last_new_items_and_nothing_after_leaks():
    # u: a(1) b(2) a(3) c(4) b(5) d(6) d(7) c(8)  -> new items in order a b c d
    rows = [("u", "a", 1), ("u", "b", 2), ("u", "a", 3), ("u", "c", 4), ("u", "b", 5), ("u", "d", 6),
            ("u", "d", 7), ("u", "c", 8)]
    train, valid, test = split.leave_last_out(_log(rows), new_items=True)
    ids = lambda p: p.item_ids[p.items].tolist()  # noqa: E731
    assert ids(valid) == ["c"] and ids(test) == ["d"]
    assert ids(train) == ["a", "b", "a"]  # events before the validation target only
    assert train.split_info["n_events_dropped"] == 3  # b(5), d(7), c(8)
    assert train.split_info["n_test_seen_in_train"] == 0 and train.split_info["n_valid_seen_in_train"] == 0
    assert train.timestamps.max() < valid.timestamps.min() < test.timestamps.min()


def test_new_items_counts_distinct_items_for_eligibility():
    rows = [("u", "a", 1), ("u", "a", 2), ("u", "b", 3), ("u", "b", 4), ("v", "a", 1), ("v", "b", 2), ("v", "c", 3)]
    train, valid, test = split.leave_last_out(_log(rows), new_items=True)
    assert train.split_info["n_users_train_only"] == 1 and train.split_info["n_events_train_only"] == 4
    assert test.user_ids[test.users].tolist() == ["v"]


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6)), min_size=1, max_size=60))
@settings(max_examples=150, deadline=None)
def test_new_items_property_no_target_pair_in_train(events):
    rows = [(f"u{u}", f"i{i}", t) for t, (u, i) in enumerate(events)]
    inter = _log(rows)
    train, valid, test = split.leave_last_out(inter, new_items=True)
    info = train.split_info
    assert len(train) + len(valid) + len(test) + info["n_events_dropped"] == len(inter)
    assert info["n_test_seen_in_train"] == 0 and info["n_valid_seen_in_train"] == 0
    for part in (valid, test):
        assert len(np.unique(part.users)) == len(part)  # one target per user
    for u in np.unique(test.users):
        t_train = train.timestamps[train.users == u]
        t_valid = valid.timestamps[valid.users == u]
        t_test = test.timestamps[test.users == u]
        assert t_train.size == 0 or t_train.max() < t_valid.min() < t_test.min()
        # the test item is new relative to train and valid
        assert test.items[test.users == u][0] not in set(train.items[train.users == u]) | set(
            valid.items[valid.users == u])
