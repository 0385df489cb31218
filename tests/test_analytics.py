"""persona.analytics: every analysis on hand-computed cases, against slow references, and on bad input."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import persona as ps
from persona import analytics as pa


def frame(rows, *, columns=("user_id", "item_id", "event", "timestamp")):
    """A small events table; times are 'YYYY-MM-DD HH:MM' strings (UTC) or epoch seconds."""
    df = pd.DataFrame(rows, columns=list(columns))
    if "timestamp" in df and df["timestamp"].dtype == object:
        df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=300, n_items=80, seed=0)


@pytest.fixture()
def store(tmp_path):
    with ps.EventStore(tmp_path / "events.db") as s:
        yield s


# ---------------------------------------------------------------------------------------------- inputs
def test_event_table_reads_frames_stores_and_interactions_alike(shop, store):
    ev = shop.events.iloc[:2000]
    store.import_frame(ev, user="user_id", item="item_id", event="event", time="timestamp", value="value")
    store.flush()
    tables = [pa.event_table(ev), pa.event_table(store), pa.event_table(ps.Interactions.from_frame(
        ev, user="user_id", item="item_id", time="timestamp", event="event", drop_duplicates=False))]
    for t in tables:
        assert len(t) == 2000 and t.n_users == ev["user_id"].nunique()
        # the same (user, item, event, time) multiset whatever the input (times to the microsecond)
        got = pd.DataFrame({"u": t.user_ids[t.user_codes], "i": t.item_ids[t.item_codes],
                            "e": np.asarray(t.event_names)[t.event_codes], "t": t.time_ns}).sort_values(list("uiet"))
        want = pd.DataFrame({"u": ev["user_id"].to_numpy(), "i": ev["item_id"].to_numpy(),
                             "e": ev["event"].astype(str).to_numpy(),
                             "t": ev["timestamp"].astype("int64").to_numpy()}).sort_values(list("uiet"))
        assert got[list("uie")].to_numpy().tolist() == want[list("uie")].to_numpy().tolist()
        assert np.abs(got["t"].to_numpy() - want["t"].to_numpy()).max() < 2000
    assert pa.event_table(tables[0]) is tables[0]
    # epoch seconds and ISO strings read as the same instants
    secs = ev.assign(timestamp=ev["timestamp"].astype("int64") / 1e9)
    iso = ev.assign(timestamp=ev["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f%z"))
    for other in (secs, iso):
        assert np.abs(pa.event_table(other).time_ns - tables[0].time_ns).max() < 1000
    sub = pa.event_table(ev, since="2024-01-10", until="2024-01-20")
    assert len(sub) == ((ev["timestamp"] >= "2024-01-10") & (ev["timestamp"] < "2024-01-20")).sum()


def test_bad_inputs_get_clear_errors(shop):
    with pytest.raises(ps.DataError, match="expected a pandas DataFrame"):
        pa.funnel([("a", "view")])
    with pytest.raises(ps.DataError, match="user column"):
        pa.funnel(pd.DataFrame({"customer": ["a"], "event": ["view"], "timestamp": [1.7e9]}))
    with pytest.raises(ps.DataError, match="user='customer'|not a column"):
        pa.event_table(pd.DataFrame({"customer": ["a"]}), user="client")
    with pytest.raises(ps.DataError, match="unreadable times.*row"):
        pa.funnel(pd.DataFrame({"user_id": ["a", "b"], "event": ["view", "view"], "timestamp": ["2024-01-01", "soon"]}))
    with pytest.raises(ps.DataError, match="missing or unreadable"):
        pa.cohort_retention(pd.DataFrame({"user_id": ["a", "b"], "timestamp": [1.7e9, np.nan]}))
    with pytest.raises(ps.DataError, match="not milliseconds"):
        pa.cohort_retention(pd.DataFrame({"user_id": ["a"], "timestamp": [1.7e12]}))
    with pytest.raises(ps.DataError, match="no user"):
        pa.cohort_retention(pd.DataFrame({"user_id": ["a", None], "timestamp": [1.7e9, 1.7e9]}))
    no_events = ps.Interactions.from_frame(shop.events, user="user_id", item="item_id", time="timestamp")
    with pytest.raises(ps.DataError, match="funnel needs event types.*event='event'"):
        pa.funnel(no_events)
    with pytest.raises(ps.DataError, match="needs event times"):
        pa.funnel(pd.DataFrame({"user_id": ["a"], "event": ["view"]}))
    with pytest.raises(ps.ParameterError, match="since < until"):
        pa.event_table(shop.events, since="2024-02-01", until="2024-01-01")
    with pytest.raises(ps.ParameterError, match="already an EventTable"):
        pa.event_table(pa.event_table(shop.events), user="x")


# ---------------------------------------------------------------------------------------------- funnel
def test_funnel_counts_a_step_only_after_the_previous_one():
    ev = frame([
        ("a", "x", "view", "2024-01-01 10:00"), ("a", "x", "cart", "2024-01-01 10:05"),
        ("a", "x", "purchase", "2024-01-01 10:09"),
        # b: purchase and cart before any view -> only the view counts
        ("b", "x", "purchase", "2024-01-01 08:00"), ("b", "x", "cart", "2024-01-01 08:30"),
        ("b", "y", "view", "2024-01-01 09:00"),
        # c: view, cart, then a purchase at the same instant as the cart -> counts (time >=)
        ("c", "x", "view", "2024-01-02 10:00"), ("c", "x", "cart", "2024-01-02 11:00"),
        ("c", "x", "purchase", "2024-01-02 11:00"),
        # d: cart after the first view but the purchase only before that cart
        ("d", "x", "view", "2024-01-03 10:00"), ("d", "x", "purchase", "2024-01-03 10:30"),
        ("d", "x", "cart", "2024-01-03 11:00"),
        # e: never viewed -> not in the funnel at all
        ("e", "x", "cart", "2024-01-03 11:00"), ("e", "x", "purchase", "2024-01-03 11:30"),
    ])
    f = pa.funnel(ev)
    assert f.index.tolist() == ["view", "cart", "purchase"]
    assert f["users"].tolist() == [4, 3, 2]
    np.testing.assert_allclose(f["from_previous"], [1.0, 3 / 4, 2 / 3])
    np.testing.assert_allclose(f["from_top"], [1.0, 3 / 4, 2 / 4])
    # Wilson bounds around each rate, step 0 pinned at 1
    assert (f["from_previous_low"] <= f["from_previous"]).all()
    assert (f["from_previous"] <= f["from_previous_high"]).all()
    assert f.loc["view", "from_top_high"] == 1.0
    lo, hi = pa._events.wilson([2], [4])
    assert f.loc["purchase", "from_top_low"] == pytest.approx(lo[0]) and f.loc["purchase", "from_top_high"] == hi[0]
    # a step of several types, and a conversion window
    two = pa.funnel(ev, steps=(("view",), ("cart", "purchase")))
    assert two["users"].tolist() == [4, 3] and two.index[1] == "cart|purchase"
    quick = pa.funnel(ev, within="20min")
    assert quick["users"].tolist() == [4, 1, 1]  # only a carts within 20 minutes of the view (c and d: 60 min)


def test_funnel_by_event_column_user_feature_mapping_and_day():
    ev = frame([
        ("a", "x", "view", "2024-01-01 10:00", "web"), ("a", "x", "cart", "2024-01-01 10:05", "app"),
        ("a", "x", "view", "2024-01-02 10:00", "app"),
        ("b", "x", "view", "2024-01-02 09:00", "app"), ("b", "x", "cart", "2024-01-02 09:30", "app"),
        ("b", "x", "purchase", "2024-01-02 09:40", "app"),
        ("c", "x", "view", "2024-01-02 12:00", None),
    ], columns=("user_id", "item_id", "event", "timestamp", "channel"))
    # the channel of the user's first view decides: a is web (although a carted in the app)
    f = pa.funnel(ev, by="channel")
    assert f.index.names == ["channel", "step"]
    assert f.loc["web", "users"].tolist() == [1, 1, 0]
    assert f.loc["app", "users"].tolist() == [1, 1, 1]
    assert f.loc["(missing)", "users"].tolist() == [1, 0, 0]
    users = pd.DataFrame({"user_id": ["a", "b", "c"], "segment": ["s1", "s2", "s1"]})
    by_seg = pa.funnel(ev, by="segment", user_features=users)
    assert by_seg.loc["s1", "users"].tolist() == [2, 1, 0]
    by_map = pa.funnel(ev, by=pd.Series({"a": "g", "b": "g"}, name="grp"))
    assert by_map.loc["g", "users"].tolist() == [2, 2, 1] and by_map.loc["(missing)", "users"].tolist() == [1, 0, 0]
    by_day = pa.funnel(ev, by="day")
    assert by_day.loc[pd.Timestamp("2024-01-01", tz="UTC"), "users"].tolist() == [1, 1, 0]
    assert by_day.loc[pd.Timestamp("2024-01-02", tz="UTC"), "users"].tolist() == [2, 1, 1]
    assert str(by_day.index.levels[0].dtype) == "datetime64[ns, UTC]"
    both = pa.funnel(ev, by=["channel", "segment"], user_features=users)
    assert both.index.names == ["channel", "segment", "step"]
    assert both.loc[("app", "s2"), "users"].tolist() == [1, 1, 1]
    with pytest.raises(ps.DataError, match="no column, property or user feature 'device'.*user_features="):
        pa.funnel(ev, by="device")
    with pytest.raises(ps.DataError, match="twice"):
        pa.funnel(ev, by="segment", user_features=pd.concat([users, users]))


def test_funnel_by_a_store_event_property(store):
    store.track("a", "x", "view", timestamp=1.7e9, properties={"device": "mobile"})
    store.track("a", "x", "purchase", timestamp=1.7e9 + 60)
    store.track("b", "y", "view", timestamp=1.7e9, properties={"device": "desktop"})
    store.flush()
    f = pa.funnel(store, steps=("view", "purchase"), by="device")
    assert f.loc["mobile", "users"].tolist() == [1, 1] and f.loc["desktop", "users"].tolist() == [1, 0]


def funnel_reference(ev: pd.DataFrame, steps) -> list[int]:
    """One user at a time, one event at a time: the funnel rule as written."""
    out = [0] * len(steps)
    for _, g in ev.groupby("user_id"):
        t_prev = None
        for k, step in enumerate(steps):
            times = [t for e, t in zip(g["event"], g["timestamp"]) if e == step and (t_prev is None or t >= t_prev)]
            if not times:
                break
            t_prev = min(times)
            out[k] += 1
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["view", "cart", "purchase", "click"]),
                          st.integers(0, 20)), min_size=1, max_size=60))
def test_funnel_matches_the_slow_reference(rows):
    ev = pd.DataFrame(rows, columns=["user_id", "event", "timestamp"]).astype({"timestamp": float})
    steps = ("view", "cart", "purchase")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a draw without one of the steps warns
        got = pa.funnel(ev, steps=steps)["users"].tolist()
    assert got == funnel_reference(ev, steps)


def test_funnel_bad_steps():
    ev = frame([("a", "x", "view", "2024-01-01 10:00")])
    for steps in ("view", (), ("view", "view"), ("view", ("cart", "view")), ("view", 3)):
        with pytest.raises(ps.ParameterError, match="funnel steps"):
            pa.funnel(ev, steps=steps)
    with pytest.warns(UserWarning, match="never occur"):
        assert pa.funnel(ev, steps=("view", "checkout"))["users"].tolist() == [1, 0]
    with pytest.raises(ps.ParameterError, match="within"):
        pa.funnel(ev, within=-5)
    with pytest.raises(ps.ParameterError, match="within"):
        pa.funnel(ev, within="soon")


# ---------------------------------------------------------------------------------------------- cohorts
def test_cohort_retention_hand_computed():
    ev = frame([
        ("a", "x", "view", "2024-01-01 10:00"),  # week of 2024-01-01 (Monday)
        ("a", "x", "view", "2024-01-03 10:00"),  # same week again: counted once
        ("a", "x", "view", "2024-01-16 10:00"),  # week +2
        ("b", "x", "view", "2024-01-07 23:59"),  # Sunday: still the first week
        ("b", "x", "purchase", "2024-01-08 00:00"),  # Monday: week +1
        ("c", "x", "view", "2024-01-10 10:00"),  # cohort of 2024-01-08
        ("c", "x", "purchase", "2024-01-17 10:00"),  # its week +1
    ])
    share = pa.cohort_retention(ev, "week")
    assert share.index.tolist() == [pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-08", tz="UTC")]
    np.testing.assert_equal(share.to_numpy(), [[1.0, 0.5, 0.5], [1.0, 1.0, np.nan]])
    counts = pa.cohort_retention(ev, "week", counts=True)
    np.testing.assert_equal(counts.to_numpy(), [[2, 1, 1], [1, 1, np.nan]])
    # activity = purchases only: a never purchases; b's cohort is then 2024-01-08, c's 2024-01-15
    buys = pa.cohort_retention(ev, "week", events="purchase", counts=True)
    assert buys.index.tolist() == [pd.Timestamp("2024-01-08", tz="UTC"), pd.Timestamp("2024-01-15", tz="UTC")]
    np.testing.assert_equal(buys.to_numpy(), [[1, 0], [1, np.nan]])
    days = pa.cohort_retention(ev, "day", periods=3, counts=True)
    assert days.columns.tolist() == [0, 1, 2] and days.iloc[0].tolist() == [1, 0, 1]  # a: Jan 1 and Jan 3
    months = pa.cohort_retention(ev, "month")
    assert months.shape == (1, 1) and months.iloc[0, 0] == 1.0


def cohort_reference(ev: pd.DataFrame, period: str) -> dict:
    """Python sets: cohort -> offset -> share."""
    p = ev["timestamp"].dt.tz_localize(None).dt.to_period({"day": "D", "week": "W-SUN", "month": "M"}[period])
    first = {}
    for u, q in zip(ev["user_id"], p):
        first[u] = min(first.get(u, q), q)
    last = p.max()
    active: dict = {}
    for u, q in zip(ev["user_id"], p):
        active.setdefault((first[u], (q - first[u]).n), set()).add(u)
    sizes = {c: sum(1 for f in first.values() if f == c) for c in set(first.values())}
    return {(c.start_time, k): len(active.get((c, k), ())) / sizes[c] for c in sizes for k in range((last - c).n + 1)}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 120 * 86400)), min_size=1, max_size=50),
       st.sampled_from(["day", "week", "month"]))
def test_cohort_retention_matches_the_slow_reference(rows, period):
    ev = pd.DataFrame(rows, columns=["user_id", "secs"])
    ev["timestamp"] = pd.to_datetime(1.7e9 + ev["secs"], unit="s", utc=True)
    got = pa.cohort_retention(ev, period)
    want = cohort_reference(ev, period)
    seen = {(c.tz_localize(None), int(k)): v for (c, k), v in got.stack().dropna().items()}
    assert seen.keys() == want.keys()
    for key, v in want.items():
        assert seen[key] == pytest.approx(v)
    assert got.isna().to_numpy().sum() + len(seen) == got.size  # everything else is unobserved


def test_cohort_retention_bad_input():
    ev = frame([("a", "x", "view", "2024-01-01 10:00")])
    with pytest.raises(ps.ParameterError, match="period"):
        pa.cohort_retention(ev, "year")
    with pytest.raises(ps.ParameterError, match="periods"):
        pa.cohort_retention(ev, periods=0)
    with pytest.warns(UserWarning, match="never occur"), pytest.raises(ps.DataError, match="no events"):
        pa.cohort_retention(ev, events="purchase")


# ---------------------------------------------------------------------------------------------- RFM
def test_rfm_lives_in_analytics_and_marketing_keeps_it(shop, store):
    from persona.marketing import rfm_table as from_marketing
    from persona.marketing.rfm import rfm_table as old_path

    assert from_marketing is pa.rfm_table is old_path
    assert pa.RFM_GROUPS[0] == "champions"
    ev = shop.events
    want = pa.rfm_table(ev, now="2024-04-01")
    store.import_frame(ev, user="user_id", item="item_id", event="event", time="timestamp", value="value")
    store.flush()
    got = pa.rfm_table(store, now="2024-04-01")
    assert got.index.name == "user"
    pd.testing.assert_frame_equal(got.rename_axis("user_id").sort_index(), want.sort_index(), check_exact=False,
                                  rtol=1e-9)
    table = pa.event_table(ev)
    pd.testing.assert_frame_equal(pa.rfm_table(table, now="2024-04-01").sort_index(), want.sort_index(),
                                  check_exact=False, rtol=1e-9)
    with pytest.raises(ps.ParameterError, match="now"):
        pa.rfm_table(ev, now="yesterday")


# ---------------------------------------------------------------------------------------------- trends
def test_trends_hand_computed_items_and_categories():
    day = 86400.0
    t0 = 1.7e9
    rows = [("u1", "x", "view", t0 + 1 * day)]  # previous window [t0, t0 + 7d)
    rows += [(f"u{i}", "x", "view", t0 + (7 + i % 7) * day) for i in range(6)]  # recent [t0 + 7d, t0 + 14d)
    rows += [(f"u{i}", "y", "view", t0 + (i % 7) * day) for i in range(5)]  # y: 5 before
    rows += [("u1", "y", "purchase", t0 + 8 * day), ("u1", "y", "purchase", t0 + 9 * day)]  # and 2 recent, one user
    rows += [("u9", "z", "view", t0 - 30 * day)]  # z: outside both windows
    ev = frame(rows)
    t = pa.trends(ev, window=7 * day, now=t0 + 14 * day)
    assert t.index.tolist() == ["x", "y"]  # z had no events in either window
    assert t.loc["x", ["recent", "previous"]].tolist() == [6, 1]
    assert t.loc["y", ["recent", "previous"]].tolist() == [2, 5]
    assert t.loc["x", "ratio"] == pytest.approx(7 / 2) and t.loc["y", "ratio"] == pytest.approx(3 / 6)
    assert t.loc["x", "z"] == pytest.approx((6 - 3.5) / np.sqrt(7 * 0.25))
    assert t.loc["y", "z"] == pytest.approx((2 - 3.5) / np.sqrt(7 * 0.25))
    users = pa.trends(ev, window=7 * day, now=t0 + 14 * day, unit="users", events="purchase")
    assert users.loc["y", ["recent", "previous"]].tolist() == [1, 0]
    # a longer baseline: q = 7 / (7 + 14)
    long = pa.trends(ev, window="7D", baseline="14D", now=pd.Timestamp(t0 + 14 * day, unit="s", tz="UTC"), prior=0.0)
    assert long.loc["x", "ratio"] == pytest.approx((6 / 7) / (1 / 14))
    cats = pa.trends(ev, window="7D", now=t0 + 14 * day, level="category", categories={"x": "A", "y": "A"})
    assert cats.loc["A", ["recent", "previous"]].tolist() == [8, 6]
    catalogue = pd.DataFrame({"item_id": ["x"], "category": ["A"]})
    missing = pa.trends(ev, window="7D", now=t0 + 14 * day, level="category", categories=catalogue)
    assert missing.loc["(missing)", "recent"] == 2  # y is not in the catalogue
    assert pa.trends(ev, window="7D", now=t0 + 14 * day, min_count=7).index.tolist() == ["x", "y"]
    assert pa.trends(ev, window="7D", now=t0 + 14 * day, min_count=8).empty


def test_trends_bad_input(shop):
    ev = shop.events
    with pytest.raises(ps.ParameterError, match="level"):
        pa.trends(ev, level="brand")
    with pytest.raises(ps.ParameterError, match="categories="):
        pa.trends(ev, level="category")
    with pytest.raises(ps.ParameterError, match="level='category'"):
        pa.trends(ev, categories=shop.items)
    with pytest.raises(ps.ParameterError, match="window"):
        pa.trends(ev, window=0)
    with pytest.raises(ps.DataError, match="category"):
        pa.trends(ev, level="category", categories=shop.items.drop(columns="category"))
    with pytest.raises(ps.DataError, match="twice"):
        pa.trends(ev, level="category", categories=pd.concat([shop.items, shop.items]))


# ---------------------------------------------------------------------------------------------- baskets
def basket_reference(baskets: list[set], min_count: int, min_support: float) -> dict:
    """Pure Python: every ordered pair of items, counted over the baskets."""
    n = len(baskets)
    single: dict = {}
    for b in baskets:
        for i in b:
            single[i] = single.get(i, 0) + 1
    out = {}
    for a, c in itertools.permutations(sorted(single), 2):
        both = sum(1 for b in baskets if a in b and c in b)
        if both >= min_count and both / n >= min_support - 1e-12:
            conf = both / single[a]
            out[(a, c)] = (both, both / n, conf, conf / (single[c] / n))
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 6)), min_size=1, max_size=60),
       st.integers(1, 3), st.sampled_from([0.0, 0.1, 0.3]))
def test_basket_rules_match_the_slow_reference(rows, min_count, min_support):
    ev = pd.DataFrame(rows, columns=["user_id", "item_id"]).assign(event="purchase")
    got = pa.basket_rules(ev, min_count=min_count, min_support=min_support, min_lift=0.0, top_k=None)
    baskets = [set(g["item_id"]) for _, g in ev.groupby("user_id")]
    want = basket_reference(baskets, min_count, min_support)
    assert got.attrs["n_baskets"] == len(baskets)
    seen = {(a, c): (n, s, conf, lift) for a, c, n, s, conf, lift in
            got[["antecedent", "consequent", "baskets", "support", "confidence", "lift"]].itertuples(index=False)}
    assert seen.keys() == want.keys()
    for k, v in want.items():
        assert seen[k][0] == v[0] and seen[k][1:] == pytest.approx(v[1:])
    assert (np.diff(got["lift"].to_numpy()) <= 1e-12).all()  # sorted by lift


def test_basket_rules_baskets_filters_and_top_k(store):
    ev = frame([
        ("a", "x", "purchase", "2024-01-01 10:00", "o1"), ("a", "y", "purchase", "2024-01-01 10:00", "o1"),
        ("a", "z", "purchase", "2024-01-05 10:00", "o2"), ("a", "x", "view", "2024-01-05 10:00", None),
        ("b", "x", "purchase", "2024-01-02 10:00", "o3"), ("b", "y", "purchase", "2024-01-02 11:00", "o3"),
        ("b", "y", "purchase", "2024-01-02 12:00", "o3"),  # twice in the basket: once
        ("c", "z", "purchase", "2024-01-03 10:00", "o4"), ("c", "w", "view", "2024-01-03 10:00", None),
    ], columns=("user_id", "item_id", "event", "timestamp", "order_id"))
    by_user = pa.basket_rules(ev, min_count=1, min_lift=0.0, top_k=None)
    assert by_user.attrs["n_baskets"] == 3
    assert set(zip(by_user["antecedent"], by_user["consequent"])) == {("x", "y"), ("y", "x"), ("x", "z"), ("z", "x"),
                                                                      ("y", "z"), ("z", "y")}
    xy = by_user.set_index(["antecedent", "consequent"]).loc[("x", "y")]
    assert xy["baskets"] == 2 and xy["support"] == pytest.approx(2 / 3) and xy["confidence"] == 1.0
    assert xy["lift"] == pytest.approx(1.5)
    by_order = pa.basket_rules(ev, basket="order_id", min_count=1, min_lift=0.0)
    assert by_order.attrs["n_baskets"] == 4 and set(by_order["antecedent"]) == {"x", "y"}  # z is alone in o2 and o4
    by_day = pa.basket_rules(ev, basket="day", min_count=1, min_lift=0.0)
    assert by_day.attrs["n_baskets"] == 4
    everything = pa.basket_rules(ev, events=None, min_count=1, min_lift=0.0, top_k=None)
    assert ("z", "w") in set(zip(everything["antecedent"], everything["consequent"]))
    top = pa.basket_rules(ev, min_count=1, min_lift=0.0, top_k=2, sort="support")
    assert len(top) == 2 and top["support"].tolist() == [pytest.approx(2 / 3)] * 2
    assert pa.basket_rules(ev, min_count=3).empty
    assert pa.basket_rules(ev, min_count=1, min_confidence=0.9, min_lift=0.0)["confidence"].min() >= 0.9
    # a store's event property names the basket
    store.track("a", "x", "purchase", timestamp=1.7e9, properties={"order": "1"})
    store.track("a", "y", "purchase", timestamp=1.7e9, properties={"order": "1"})
    store.track("a", "z", "purchase", timestamp=1.7e9, properties={"order": "2"})
    store.flush()
    from_store = pa.basket_rules(store, basket="order", min_count=1, min_lift=0.0)
    assert set(zip(from_store["antecedent"], from_store["consequent"])) == {("x", "y"), ("y", "x")}


def test_basket_rules_bad_input(shop):
    ev = shop.events
    for kw in ({"min_support": 2.0}, {"min_count": 0}, {"min_confidence": -0.1}, {"top_k": 0}, {"sort": "score"},
               {"basket": 3}):
        with pytest.raises(ps.ParameterError):
            pa.basket_rules(ev, **kw)
    with pytest.raises(ps.DataError, match="no column or event property 'order_id'"):
        pa.basket_rules(ev, basket="order_id")
    no_events = ps.Interactions.from_frame(ev, user="user_id", item="item_id")
    with pytest.raises(ps.DataError, match="basket_rules events needs event types"):
        pa.basket_rules(no_events)
    assert len(pa.basket_rules(no_events, events=None, min_support=0.05))  # every event puts its item in the basket
    with pytest.warns(UserWarning, match="never occur"), pytest.raises(ps.DataError, match="no baskets"):
        pa.basket_rules(ev, events="order")


# ---------------------------------------------------------------------------------------------- summary, activity
def test_summary_and_activity(shop):
    s = pa.summary(shop.events)
    ev = shop.events
    assert s["events"] == len(ev) and s["users"] == ev["user_id"].nunique() and s["items"] == ev["item_id"].nunique()
    assert s["events_per_type"] == ev["event"].astype(str).value_counts().to_dict()
    buys = ev[ev["event"] == "purchase"]
    assert s["buyers"] == buys["user_id"].nunique() and s["revenue"] == pytest.approx(buys["value"].sum())
    assert s["first"] == ev["timestamp"].min() and s["last"] == ev["timestamp"].max()
    inter = pa.summary(ps.Interactions.from_frame(ev, user="user_id", item="item_id"))
    assert inter["events_per_type"] == {} and inter["buyers"] is None and inter["first"] is None
    a = pa.activity(ev, "week")
    assert int(a[["view", "click", "cart", "purchase"]].to_numpy().sum()) == len(ev)
    weeks = ev["timestamp"].dt.tz_localize(None).dt.to_period("W-SUN")
    want = ev.groupby(weeks)["user_id"].nunique()
    assert a["active_users"].tolist() == want.tolist()
    assert a.index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    with pytest.raises(ps.ParameterError, match="period"):
        pa.activity(ev, "hour")
