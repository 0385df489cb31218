"""Tests of persona.datasets.synthetic_shop: reproducible, well-formed, and realistic enough that
personalisation pays (the point of the data set), checked with scorers written here in numpy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from persona.data import IdMap, Interactions
from persona.datasets import Shop, synthetic_shop
from persona.datasets.synthetic import EVENT_TYPES, SEGMENTS
from persona.errors import DataError, PersonaError


@pytest.fixture(scope="module")
def shop() -> Shop:
    return synthetic_shop(n_users=2000, n_items=500, seed=0)


@pytest.fixture(scope="module")
def shop7() -> Shop:
    return synthetic_shop(n_users=2000, n_items=500, seed=7)


# ---------------------------------------------------------------------------------------------- form
def test_same_seed_gives_identical_frames():
    a = synthetic_shop(n_users=300, n_items=120, seed=11)
    b = synthetic_shop(n_users=300, n_items=120, seed=11)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.users, b.users)
    c = synthetic_shop(n_users=300, n_items=120, seed=12)
    assert len(c.events) != len(a.events) or not a.events["item_id"].equals(c.events["item_id"])


def test_frames_have_documented_columns_and_ids(shop):
    ev, items, users = shop.events, shop.items, shop.users
    assert ev.columns.tolist() == ["user_id", "item_id", "timestamp", "event", "value", "session_id"]
    assert items.columns.tolist() == ["item_id", "name", "category", "brand", "price", "tags"]
    assert users.columns.tolist() == ["user_id", "age", "gender", "location", "spending_level", "segment"]
    assert len(items) == 500 and len(users) == 2000
    assert items["item_id"].iloc[7] == "i0007" and users["user_id"].iloc[42] == "u00042"
    assert items["item_id"].is_unique and users["user_id"].is_unique
    assert str(ev["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert set(ev["event"].astype(str).unique()) == set(EVENT_TYPES)
    # every event names a known user and item; every user has at least one session
    assert ev["item_id"].isin(items["item_id"]).all()
    assert set(ev["user_id"].unique()) == set(users["user_id"])
    # value: the item's price on purchases, NaN elsewhere
    buy = ev["event"] == "purchase"
    assert ev.loc[~buy, "value"].isna().all()
    price = items.set_index("item_id")["price"]
    np.testing.assert_allclose(ev.loc[buy, "value"].to_numpy(), price.loc[ev.loc[buy, "item_id"]].to_numpy())
    assert (items["price"] > 0).all()
    assert set(users["segment"]) == {s[0] for s in SEGMENTS}
    assert set(users["spending_level"]) == {"low", "medium", "high"}
    assert users["age"].between(16, 90).all()
    assert all(isinstance(t, list) for t in items["tags"])
    # names are readable: brand first, then a variant and a product noun
    first = items.iloc[0]
    assert first["name"].startswith(first["brand"] + " ") and len(first["name"].split()) >= 3


def test_size_arguments_and_small_shops():
    s = synthetic_shop(n_users=5, n_items=3, n_categories=3, n_brands=1, days=1, seed=0)
    assert len(s.users) == 5 and len(s.items) == 3 and s.items["category"].nunique() == 3
    assert (s.events["timestamp"] < s.start + pd.Timedelta(days=1)).all()
    s = synthetic_shop(n_users=20, n_items=40, n_categories=30, n_brands=300, seed=0)
    assert s.items["category"].nunique() == 30  # beyond the named categories too
    assert "Category 30" in s.category_names


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_users=0), dict(n_items=-1), dict(n_categories=10, n_items=5), dict(days=0), dict(seed="x"),
     dict(n_users=2.5), dict(n_brands=True)],
)
def test_bad_arguments_raise_data_error(kwargs):
    with pytest.raises(DataError):
        synthetic_shop(**kwargs)
    with pytest.raises(PersonaError):
        synthetic_shop(**kwargs)


def test_timestamps_lie_within_days_and_events_are_time_ordered():
    s = synthetic_shop(n_users=400, n_items=100, days=14, seed=3)
    ts = s.events["timestamp"]
    assert ts.min() >= s.start
    assert ts.max() < s.start + pd.Timedelta(days=14)
    assert ts.is_monotonic_increasing
    # activity spreads over the period (not all on one day)
    assert ts.dt.floor("D").nunique() == 14


def test_session_funnel_order(shop):
    ev = shop.events
    assert ev.groupby("session_id")["user_id"].nunique().max() == 1  # a session belongs to one user
    t = ev["timestamp"].astype("int64")
    first = ev.assign(t=t).groupby(["session_id", "item_id", "event"], observed=True)["t"].min().unstack()
    bought = first["purchase"].notna()
    # a purchase follows a cart of the same item in the session, and a cart follows a view
    assert first.loc[bought, "cart"].notna().all()
    assert (first.loc[bought, "cart"] < first.loc[bought, "purchase"]).all()
    carted = first["cart"].notna()
    assert (first.loc[carted, "view"] < first.loc[carted, "cart"]).all()


# ---------------------------------------------------------------------------------------------- realism
def test_funnel_shrinks_view_click_cart_purchase(shop):
    counts = shop.events["event"].value_counts()
    assert counts["view"] > counts["click"] > counts["cart"] > counts["purchase"] > 0
    conversion = counts["purchase"] / counts["view"]
    assert 0.01 < conversion < 0.12, conversion


def test_item_popularity_is_heavy_tailed(shop):
    counts = np.sort(shop.events["item_id"].value_counts().to_numpy())[::-1]
    top = counts[: len(shop.items) // 10].sum() / counts.sum()
    assert top > 0.4, top  # a uniform catalogue would give 0.1
    # rank-frequency is roughly a power law: steep on log-log axes over the head
    r = np.arange(1, len(counts) // 2 + 1)
    slope = np.polyfit(np.log(r), np.log(counts[: len(r)]), 1)[0]
    assert -2.0 < slope < -0.5, slope


def test_users_are_heterogeneous_and_repeat(shop):
    per_user = shop.events.groupby("user_id").size()
    assert per_user.max() > 5 * per_user.median()  # a few heavy users
    views = shop.events[shop.events["event"] == "view"]
    repeat = 1 - len(views.drop_duplicates(["user_id", "item_id"])) / len(views)
    assert 0.1 < repeat < 0.8, repeat  # users come back to items they saw


def test_demographics_correlate_with_behaviour(shop):
    users = shop.users.set_index("user_id")
    ages = users.groupby("segment")["age"].mean()
    assert ages["students"] + 20 < ages["seniors"]
    buys = shop.events[shop.events["event"] == "purchase"]
    level = users.loc[buys["user_id"], "spending_level"].to_numpy()
    spent = buys["value"].to_numpy()
    assert spent[level == "high"].mean() > 1.15 * spent[level == "low"].mean()
    # segments prefer different categories: their category shares are far apart
    cat = shop.items.set_index("item_id")["category"]
    ev = shop.events.assign(segment=users.loc[shop.events["user_id"], "segment"].to_numpy(),
                            category=cat.loc[shop.events["item_id"]].to_numpy())
    share = pd.crosstab(ev["segment"], ev["category"], normalize="index")
    tv = 0.5 * np.abs(share.loc["students"] - share.loc["seniors"]).sum()
    assert tv > 0.15, tv


# ---------------------------------------------------------------------------------------------- personalisation pays
def _codes(shop):
    ev = shop.events
    u = IdMap(shop.users["user_id"].to_numpy(dtype=str)).lookup(ev["user_id"].to_numpy(dtype=str))
    i = IdMap(shop.items["item_id"].to_numpy(dtype=str)).lookup(ev["item_id"].to_numpy(dtype=str))
    return u, i, ev["timestamp"].astype("int64").to_numpy()


def _holdout_last_new_item(shop):
    """Each user's last newly touched item is the target; training is everything before it."""
    u, i, t = _codes(shop)
    n_u = len(shop.users)
    first = pd.DataFrame({"u": u, "i": i, "t": t}).groupby(["u", "i"])["t"].min().reset_index()
    last = first.sort_values(["u", "t", "i"]).groupby("u").tail(1)
    target = np.full(n_u, -1)
    cut = np.full(n_u, np.iinfo(np.int64).min)
    target[last["u"].to_numpy()] = last["i"].to_numpy()
    cut[last["u"].to_numpy()] = last["t"].to_numpy()
    train = t < cut[u]
    return u[train], i[train], target


def _holdout_last_purchase(shop):
    """Each buyer's last purchase is the target; training stops where that session starts."""
    u, i, t = _codes(shop)
    n_u = len(shop.users)
    sess = shop.events["session_id"].to_numpy()
    start = pd.Series(t).groupby(sess).min()
    buy = (shop.events["event"] == "purchase").to_numpy()
    last = pd.DataFrame({"u": u[buy], "i": i[buy], "t": t[buy], "s": sess[buy]}).groupby("u").tail(1)
    target = np.full(n_u, -1)
    cut = np.full(n_u, np.iinfo(np.int64).min)
    target[last["u"].to_numpy()] = last["i"].to_numpy()
    cut[last["u"].to_numpy()] = start.loc[last["s"]].to_numpy()
    train = t < cut[u]
    return u[train], i[train], target


def _hit_rates(shop, holdout, k=10):
    u, i, target = holdout(shop)
    n_u, n_i = len(shop.users), len(shop.items)
    X = sp.csr_matrix((np.ones(len(u)), (u, i)), shape=(n_u, n_i))
    X.data[:] = 1.0  # binary: touched or not
    seen = X.toarray() > 0
    # users with a history and a target they have not seen yet (seen items are excluded from the ranking)
    users = np.flatnonzero((target >= 0) & (X.getnnz(axis=1) > 0))
    users = users[~seen[users, target[users]]]
    assert len(users) > 300

    def hr(scores):
        scores = np.where(seen[users], -np.inf, scores)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return float(np.mean((top == target[users][:, None]).any(axis=1)))

    pop = np.asarray(X.sum(axis=0)).ravel()
    co = (X.T @ X).toarray()
    norm = np.sqrt(np.diag(co)) + 1e-9
    S = co / norm[:, None] / norm[None, :]
    np.fill_diagonal(S, 0.0)
    seg = pd.Categorical(shop.users["segment"]).codes
    seg_pop = np.stack([np.asarray(X[seg == s].sum(axis=0)).ravel() for s in range(seg.max() + 1)])
    return {
        "popularity": hr(np.broadcast_to(pop, (len(users), n_i))),
        "item_cosine": hr(np.asarray(X[users] @ S)),
        "segment_popularity": hr(seg_pop[seg[users]]),
    }


@pytest.mark.parametrize("which", ["shop", "shop7"])
def test_personalised_scorer_beats_popularity_on_last_item(which, request):
    hr = _hit_rates(request.getfixturevalue(which), _holdout_last_new_item)
    assert hr["popularity"] > 0.02  # popularity is a real baseline, not a straw man
    assert hr["item_cosine"] >= 1.5 * hr["popularity"], hr


@pytest.mark.parametrize("which", ["shop", "shop7"])
def test_personalised_scorer_beats_popularity_on_last_purchase(which, request):
    hr = _hit_rates(request.getfixturevalue(which), _holdout_last_purchase)
    assert hr["item_cosine"] >= 1.3 * hr["popularity"], hr


@pytest.mark.parametrize("which", ["shop", "shop7"])
def test_segment_popularity_beats_global_popularity(which, request):
    shop = request.getfixturevalue(which)
    hr = _hit_rates(shop, _holdout_last_new_item)
    assert hr["segment_popularity"] >= 1.05 * hr["popularity"], hr
    # ... but knowing the segment is not knowing the person
    assert hr["item_cosine"] > 1.2 * hr["segment_popularity"], hr


# ---------------------------------------------------------------------------------------------- into persona
def test_interactions_use_the_default_event_weights(shop):
    inter = shop.interactions
    assert isinstance(inter, Interactions)
    assert inter is shop.interactions  # cached
    assert len(inter) == len(shop.events)
    assert inter.n_users == 2000
    assert inter.n_items == shop.events["item_id"].nunique()
    assert inter.timestamps is not None
    # a purchased item weighs more than an item only viewed once
    ev = shop.events
    pairs = ev.groupby(["user_id", "item_id"])["event"].agg(lambda e: tuple(sorted(map(str, e))))
    only_view = pairs[pairs == ("view",)].index[0]
    bought = pairs[pairs.map(lambda e: "purchase" in e)].index[0]
    m = inter.matrix

    def w(pair):
        return m[inter.user_map.index_of(pair[0]), inter.item_map.index_of(pair[1])]

    assert w(bought) > w(only_view) > 0
    custom = shop.to_interactions(weights={"view": 0.0, "click": 0.0, "cart": 0.0, "purchase": 1.0})
    assert custom.matrix[custom.user_map.index_of(only_view[0]), custom.item_map.index_of(only_view[1])] == 0


def test_item_categories_align_with_an_item_map(shop):
    inter = shop.interactions
    codes = shop.item_categories()
    assert codes.shape == (inter.n_items,)
    names = np.asarray(shop.category_names, dtype=object)[codes]
    expected = shop.items.set_index("item_id").loc[inter.item_ids, "category"].to_numpy()
    assert (names == expected).all()
    # any order of ids works, unknown ids get -1
    ids = np.array(["i0003", "nope", "i0001"])
    got = shop.item_categories(IdMap(ids))
    cats = shop.items.set_index("item_id")["category"]
    assert got[1] == -1
    assert shop.category_names[got[0]] == cats["i0003"] and shop.category_names[got[2]] == cats["i0001"]
    np.testing.assert_array_equal(shop.item_categories(inter), codes)
    np.testing.assert_array_equal(shop.item_categories(ids), got)


def test_repr_is_short(shop):
    r = repr(shop)
    assert r.startswith("Shop(2000 users, 500 items") and "purchase" in r and len(r) < 200
