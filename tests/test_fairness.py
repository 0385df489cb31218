"""Fairness and popularity bias (persona.evaluation.fairness) and exposure floors (ps.ranking.ExposureFloor).

Every metric is checked against a slow loop written from its definition, by hand on small cases
and with hypothesis on random lists (padding, repeated items, empty histories); the re-ranker
against a per-row reference loop, and for its guarantee (each floor met whenever the quotas fit).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import persona as ps
from persona.evaluation import (
    age_bands,
    calibration_kl,
    exposure,
    exposure_gini,
    exposure_share,
    fairness_audit,
    fairness_report,
    group_disparity,
    item_age_groups,
    popularity_groups,
    popularity_lift,
)
from persona.ranking import Calibrated, ExposureFloor, Pipeline, Reranked
from persona.ranking.rerank import reranker_from_state, reranker_state


# ---------------------------------------------------------------------------------------------- references
def exposure_reference(lists, n_items, weighting="position"):
    out = [0.0] * n_items
    for row in lists:
        for r, i in enumerate(row):
            if i >= 0:
                out[i] += 1.0 / math.log2(r + 2) if weighting == "position" else 1.0
    return np.array(out)


def gini_reference(x):
    x = list(map(float, x))
    n, mean = len(x), sum(x) / len(x)
    return sum(abs(a - b) for a in x for b in x) / (2 * n * n * mean)


def kl_reference(row, history, cats, alpha):
    """Steck's KL for one list, from scratch (unknown category -1 is one more category)."""
    buckets = [c if c >= 0 else "unknown" for c in cats]
    hist = sorted(set(int(i) for i in history))
    items = [int(i) for i in row if i >= 0]
    if not hist or not items:
        return float("nan")
    keys = set(buckets[i] for i in hist) | set(buckets[i] for i in items)
    p = {g: sum(buckets[i] == g for i in hist) / len(hist) for g in keys}
    q = {g: sum(buckets[i] == g for i in items) / len(items) for g in keys}
    return sum(p[g] * math.log(p[g] / ((1 - alpha) * q[g] + alpha * p[g])) for g in keys if p[g] > 0)


def floor_reference(member, shares, idx, n, k_shown=None):
    """ExposureFloor for one row, as its docstring says: quotas in floor order, then the best rest; with
    ``k_shown`` the floors are for the first k_shown and the other candidates follow in order."""
    cols = [j for j in range(len(idx)) if idx[j] >= 0]
    k = min(n if k_shown is None else min(n, k_shown), len(cols))
    chosen = []
    left = k
    for g, f in enumerate(shares):
        mine = [j for j in cols if member[idx[j], g]]
        need = min(math.ceil(f * k - 1e-9), len(mine))
        have = sum(1 for j in chosen if member[idx[j], g])
        take = max(0, min(need - have, left))
        for j in mine:
            if take == 0:
                break
            if j not in chosen:
                chosen.append(j)
                take -= 1
                left -= 1
    for j in cols:
        if left == 0:
            break
        if j not in chosen:
            chosen.append(j)
            left -= 1
    rest = [j for j in cols if j not in chosen]
    return ([int(idx[j]) for j in sorted(chosen)] + [int(idx[j]) for j in rest])[:n]


@st.composite
def list_cases(draw, max_rows=8, max_k=6, max_items=12):
    """Random lists of item indices with -1 padding at the end of rows, histories and labels."""
    seed = draw(st.integers(0, 2**31 - 1))
    m, k, n_items = draw(st.integers(1, max_rows)), draw(st.integers(1, max_k)), draw(st.integers(1, max_items))
    rng = np.random.default_rng(seed)
    lists = rng.integers(0, n_items, size=(m, k))
    lengths = rng.integers(0, k + 1, size=m)
    lists[np.arange(k)[None, :] >= lengths[:, None]] = -1
    histories = [rng.choice(n_items, size=rng.integers(0, n_items + 1), replace=True) for _ in range(m)]
    cats = rng.integers(-1, 3, size=n_items)
    return lists, histories, cats, n_items, rng


# ---------------------------------------------------------------------------------------------- exposure
def test_exposure_by_hand():
    lists = np.array([[2, 0, -1], [2, 1, 0]])
    np.testing.assert_allclose(exposure(lists, 4, weighting="uniform"), [2, 1, 2, 0])
    w = 1 / np.log2(np.arange(3) + 2)
    np.testing.assert_allclose(exposure(lists, 4), [w[1] + w[2], w[1], 2 * w[0], 0])
    assert exposure_gini([[0, 1], [1, 0]], 2) == pytest.approx(0.0)
    assert exposure_gini([[0], [0]], 4) == pytest.approx(0.75)  # one of four items gets all: 1 - 1/4


@settings(max_examples=60, deadline=None)
@given(list_cases())
def test_exposure_and_gini_match_the_references(case):
    lists, _, _, n_items, _ = case
    for weighting in ("position", "uniform"):
        e = exposure(lists, n_items, weighting=weighting)
        np.testing.assert_allclose(e, exposure_reference(lists.tolist(), n_items, weighting), atol=1e-12)
        if e.sum() > 0:
            assert exposure_gini(lists, n_items, weighting=weighting) == pytest.approx(gini_reference(e), abs=1e-9)
        else:
            with pytest.raises(ps.DataError, match="no item has any exposure"):
                exposure_gini(lists, n_items, weighting=weighting)


@settings(max_examples=40, deadline=None)
@given(list_cases())
def test_exposure_share_matches_a_loop(case):
    lists, _, cats, n_items, rng = case
    demand = rng.integers(0, 5, n_items).astype(float)
    labels = np.array(["a", "b", ""], dtype=object)[np.abs(cats) % 3]
    e = exposure_reference(lists.tolist(), n_items)
    t = exposure_share(lists, labels, demand=demand if demand.sum() else None)
    for g in t.index:
        members = [i for i in range(n_items) if (labels[i] or "(unknown)") == g]
        assert t.loc[g, "items"] == len(members)
        assert t.loc[g, "item_share"] == pytest.approx(len(members) / n_items)
        if e.sum():
            assert t.loc[g, "exposure_share"] == pytest.approx(sum(e[i] for i in members) / e.sum())
        if demand.sum():
            assert t.loc[g, "demand_share"] == pytest.approx(sum(demand[i] for i in members) / demand.sum())
    assert t["items"].sum() == n_items


# ---------------------------------------------------------------------------------------------- popularity
@settings(max_examples=40, deadline=None)
@given(list_cases())
def test_popularity_lift_matches_a_loop(case):
    lists, histories, cats, n_items, rng = case
    pop = rng.random(n_items) + 0.01
    groups = np.where(cats >= 1, "x", "y")[: len(lists)] if len(cats) >= len(lists) else \
        np.array(["x"] * len(lists), dtype=object)
    groups = np.resize(groups, len(lists))
    t = popularity_lift(lists, histories, pop, user_groups=groups)
    for g in ["all", *sorted(set(groups.tolist()))]:
        prof, recs = [], []
        for u, (row, h) in enumerate(zip(lists.tolist(), histories)):
            items, hist = [i for i in row if i >= 0], sorted(set(int(x) for x in h))
            if items and hist and (g == "all" or groups[u] == g):
                recs.append(sum(pop[i] for i in items) / len(items))
                prof.append(sum(pop[i] for i in hist) / len(hist))
        assert t.loc[g, "users"] == len(prof)
        if prof:
            gp, gr = sum(prof) / len(prof), sum(recs) / len(recs)
            assert t.loc[g, "lift"] == pytest.approx((gr - gp) / gp)
        else:
            assert math.isnan(t.loc[g, "lift"])


def test_popularity_groups_and_lift_by_hand():
    labels = popularity_groups([3, 3, 1, 0, 9], head=0.4)  # ceil(0.4 * 5) = 2: the 9 and the first 3
    assert labels.tolist() == ["head", "long_tail", "long_tail", "long_tail", "head"]
    assert popularity_groups([1, 2], head=0.0).tolist() == ["long_tail", "long_tail"]
    t = popularity_lift([[0], [1]], sp.csr_matrix(np.array([[0, 1], [0, 1]])), [0.6, 0.2])
    assert t.loc["all", "gap_profile"] == pytest.approx(0.2) and t.loc["all", "gap_recs"] == pytest.approx(0.4)
    assert t.loc["all", "lift"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- groups
def test_group_disparity_means_and_a_bootstrap_written_as_a_loop():
    rng = np.random.default_rng(0)
    v = rng.random(60)
    v[3] = np.nan
    g = np.array(["f", "m", "x"], dtype=object)[rng.integers(0, 3, 60)]
    t = group_disparity(v, g, n_boot=300, conf=0.9, random_state=7)
    ref_rng = np.random.default_rng(7)
    boots = {}
    for name in sorted(set(g.tolist())):
        x = v[(g == name) & np.isfinite(v)]
        assert t.loc[name, "mean"] == pytest.approx(x.mean())
        assert t.loc[name, "users"] == len(x)
        boots[name] = np.array([x[ref_rng.integers(0, len(x), size=len(x))].mean() for _ in range(300)])
        assert t.loc[name, "ci_low"] == pytest.approx(np.quantile(boots[name], 0.05))
        assert t.loc[name, "ci_high"] == pytest.approx(np.quantile(boots[name], 0.95))
        assert t.loc[name, "ci_low"] <= t.loc[name, "mean"] <= t.loc[name, "ci_high"]
    means = t["mean"].drop("(max - min)")
    assert t.loc["(max - min)", "mean"] == pytest.approx(means.max() - means.min())
    stack = np.stack([boots[n] for n in sorted(boots)], axis=1)
    gap = stack.max(axis=1) - stack.min(axis=1)
    assert t.loc["(max - min)", "ci_high"] == pytest.approx(np.quantile(gap, 0.95))
    assert t.loc["(max - min)", "ratio_to_best"] == pytest.approx(means.min() / means.max())
    # the same seed, the same table
    pd.testing.assert_frame_equal(t, group_disparity(v, g, n_boot=300, conf=0.9, random_state=7))


def test_group_disparity_bad_inputs():
    with pytest.raises(ps.DataError, match="one group label per value"):
        group_disparity([1.0, 2.0], ["a"])
    with pytest.raises(ps.DataError, match="no user has a defined value"):
        group_disparity([np.nan], ["a"])
    with pytest.raises(ps.ParameterError, match="n_boot"):
        group_disparity([1.0], ["a"], n_boot=10**9)
    with pytest.raises(ps.DataError, match="ints or all strings"):
        group_disparity([1.0, 2.0], np.array(["a", 3], dtype=object))


def test_age_bands_and_item_ages():
    assert age_bands([16, 24, 25, 34, 35, 64, 65, 99, np.nan]).tolist() == \
        ["<25", "<25", "25-34", "25-34", "35-44", "55-64", "65+", "65+", ""]
    with pytest.raises(ps.ParameterError, match="increasing"):
        age_bands([30], edges=(40, 20))
    day = 86400.0
    inter = ps.Interactions.from_records(
        [("u", "old", 0.0), ("u", "mid", 50 * day), ("v", "fresh", 95 * day), ("v", "old", 100 * day)],
        time="time")
    ages = dict(zip(inter.item_ids, item_age_groups(inter, edges=(10, 60))))
    assert ages == {"old": ">=60d", "mid": "10-60d", "fresh": "new"}
    grown = ps.IdMap(list(inter.item_ids) + ["unseen"])
    assert item_age_groups(inter, grown, edges=(10, 60))[-1] == "new"
    with pytest.raises(ps.DataError, match="timestamps"):
        item_age_groups(ps.Interactions.from_records([("u", "a")]))


# ---------------------------------------------------------------------------------------------- calibration
@settings(max_examples=60, deadline=None)
@given(list_cases())
def test_calibration_kl_matches_steck_from_scratch(case):
    lists, histories, cats, _, _ = case
    got = calibration_kl(lists, histories, cats, alpha=0.01)
    for r, (row, h) in enumerate(zip(lists.tolist(), histories)):
        want = kl_reference(row, h, cats.tolist(), 0.01)
        if math.isnan(want):
            assert math.isnan(got[r])
        else:
            assert got[r] == pytest.approx(want, abs=1e-9)


@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=400, n_items=120, seed=3)


@pytest.fixture(scope="module")
def split(shop):
    return ps.split.leave_last_out(shop.interactions)


@pytest.fixture(scope="module")
def ease(split):
    return ps.EASE().fit(split[0])


def test_calibration_kl_agrees_with_the_calibrated_reranker(ease, shop):
    cats = shop.item_categories(ease.item_map_)
    meter = Calibrated(cats).fit(ease)
    users = np.arange(60)
    idx, _ = ease.recommend_indices(users, 10)
    hist = [ease.user_items_[u].indices for u in users]
    np.testing.assert_allclose(calibration_kl(idx, hist, cats), meter.kl(hist, idx), atol=1e-12)


# ---------------------------------------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def report(ease, split, shop):
    train, _, test = split
    users = shop.users.set_index("user_id")
    return fairness_report(
        ease, test, train=train, n_boot=200,
        item_groups={"brand": dict(zip(shop.items["item_id"], shop.items["brand"]))},
        user_groups={"gender": users["gender"], "age band": dict(zip(users.index, age_bands(users["age"]))),
                     "segment": users["segment"]},
        item_categories=shop.item_categories(ease.item_map_))


def test_report_agrees_with_evaluate_and_the_functions(report, ease, split, shop):
    train, _, test = split
    ev = ps.evaluate(ease, test, k=10, metrics=("ndcg", "coverage"))
    assert report.summary["ndcg@10"] == pytest.approx(ev["ndcg@10"])
    assert report.summary["coverage@10"] == pytest.approx(ev["coverage@10"])
    assert report.summary["n_users"] == ev["n_users"] == len(report.per_user)
    users = ease.user_map_.lookup(report.per_user["user"].to_numpy())
    idx, _ = ease.recommend_indices(users, 10)
    np.testing.assert_allclose(report.exposure, exposure(idx, ease.n_items))
    assert report.summary["exposure_gini@10"] == pytest.approx(exposure_gini(idx, ease.n_items))
    hist = [ease.user_items_[u].indices for u in users]
    np.testing.assert_allclose(report.per_user["calibration_kl"], calibration_kl(idx, hist, shop.item_categories(
        ease.item_map_)), atol=1e-12)
    # the gender table is group_disparity of the per-user NDCG
    q = report.quality["gender"]
    by_hand = report.per_user.groupby("gender")["ndcg@10"].mean()
    for g, v in by_hand.items():
        assert q.loc[g, "mean"] == pytest.approx(v)
    assert report.summary["ndcg_gap@10[gender]"] == pytest.approx(by_hand.max() - by_hand.min())
    # brands: one row per brand in the catalogue, shares add up to 1
    brands = report.shares["brand"]
    assert brands["exposure_share"].sum() == pytest.approx(1.0)
    assert set(brands.index) <= set(shop.items["brand"]) | {"(unknown)"}
    assert set(report.shares) == {"popularity", "item age", "brand"}
    pop = report.popularity
    assert set(pop["grouping"]) == {"all", "gender", "age band", "segment"}
    assert pop.loc[pop["grouping"] == "all", "lift"].iloc[0] == pytest.approx(report.summary["popularity_lift@10"])


def test_report_sections_and_tidy_frame(report):
    titles = [t for t, _ in report.sections()]
    assert titles[0] == "Fairness summary"
    assert "NDCG@10 by age band" in titles and "Calibration KL@10 by segment" in titles
    assert all(isinstance(df, pd.DataFrame) and len(df) for _, df in report.sections())
    long = report.to_frame()
    assert list(long.columns) == ["section", "group", "metric", "value"]
    assert long["value"].dtype == np.float64
    row = long[(long["section"] == "Fairness summary") & (long["group"] == "ndcg@10")]
    assert row["value"].iloc[0] == pytest.approx(report.summary["ndcg@10"])
    # every number of every section is in the tidy frame
    assert len(long) == sum(df.select_dtypes("number").size for _, df in report.sections())


def test_precomputed_lists_give_the_same_report(ease, split):
    train, _, test = split
    users = np.unique(test.users)
    frame = ease.recommend_frame(test.user_map.ids[users], n=10)
    from_lists = fairness_report(frame.sample(frac=1.0, random_state=0), test, train=train, n_boot=50)
    from_model = fairness_report(ease, test, train=train, n_boot=50)
    np.testing.assert_allclose(from_lists.exposure, from_model.exposure)
    assert from_lists.summary == pytest.approx(from_model.summary)
    with pytest.raises(ps.ParameterError, match="need train="):
        fairness_report(frame, test)


def test_a_sample_of_users_and_a_popular_model(ease, split):
    train, _, test = split
    small = fairness_report(ease, test, train=train, max_users=50, n_boot=50)
    assert small.summary["n_users"] == 50
    pop = fairness_report(ps.MostPopular().fit(train), test, train=train, n_boot=50)
    full = fairness_report(ease, test, train=train, n_boot=50)
    # popularity concentrates exposure and lifts the lists' popularity above the users' own
    assert pop.summary["exposure_gini@10"] > full.summary["exposure_gini@10"]
    assert pop.summary["popularity_lift@10"] > full.summary["popularity_lift@10"]
    assert pop.summary["long_tail_share@10"] < full.summary["long_tail_share@10"]


def test_audit_sections_and_log(ease, split, tmp_path):
    train, _, test = split
    log = tmp_path / "audit.csv"
    a1 = fairness_audit(ease, test, train=train, log=str(log), n_boot=50, max_users=100)
    a2 = fairness_audit(ease, test, train=train, log=str(log), n_boot=50, max_users=100)
    assert isinstance(a1, list) and all(isinstance(t, str) and isinstance(df, pd.DataFrame) for t, df in a1)
    assert a1.summary == a2.summary  # seeded: the same sample, the same numbers
    logged = pd.read_csv(log)
    assert len(logged) == 2 * len(a1.to_frame())
    assert list(logged.columns) == ["time", "section", "group", "metric", "value"]


def test_report_bad_inputs(ease, split):
    train, _, test = split
    with pytest.raises(ps.ParameterError, match="fitted model or a frame"):
        fairness_report(object(), test)
    with pytest.raises(ps.NotFittedError):
        fairness_report(ps.EASE(), test)
    with pytest.raises(ps.DataError, match="test as persona Interactions"):
        fairness_report(ease, "test")
    with pytest.raises(ps.ParameterError, match="user_groups"):
        fairness_report(ease, test, user_groups=["a", "b"])
    with pytest.raises(ps.DataError, match="one label per"):
        fairness_report(ease, test, user_groups={"x": np.array(["a", "b"])})
    with pytest.raises(ps.ParameterError, match="weighting"):
        fairness_report(ease, test, weighting="log")
    with pytest.raises(ps.DataError, match="2-D int array"):
        exposure(np.array([0.5, 1.0]), 3)
    with pytest.raises(ps.DataError, match="outside the 3 items"):
        exposure([[3]], 3)


# ---------------------------------------------------------------------------------------------- exposure floors
@st.composite
def floor_cases(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_items, m, c = draw(st.integers(2, 30)), draw(st.integers(1, 6)), draw(st.integers(1, 12))
    c = min(c, n_items)
    n_groups = draw(st.integers(1, 3))
    member = rng.random((n_items, n_groups)) < rng.uniform(0.05, 0.6, n_groups)
    shares = rng.dirichlet(np.ones(n_groups + 1))[:n_groups] * draw(st.floats(0.1, 1.0))
    idx = np.stack([rng.choice(n_items, size=c, replace=False) for _ in range(m)]).astype(np.int64)
    scores = -np.sort(-rng.normal(size=(m, c))).astype(np.float32)
    for r in range(m):
        keep = rng.integers(0, c + 1)
        idx[r, keep:], scores[r, keep:] = -1, -np.inf
    return member, shares, idx, scores, draw(st.integers(1, 12)), draw(st.one_of(st.none(), st.integers(1, 8)))


def _floor_for(member, shares, k=None):
    """An ExposureFloor fitted on a toy model whose items carry the given memberships."""
    n_items = member.shape[0]
    inter = ps.Interactions.from_matrix(sp.csr_matrix(np.eye(n_items, dtype=np.float32)))
    model = ps.MostPopular().fit(inter)
    groups = {f"g{j}": model.item_map_.ids[member[:, j]].tolist() for j in range(member.shape[1])}
    return ExposureFloor(groups, floors={f"g{j}": float(f) for j, f in enumerate(shares)}, k=k).fit(model)


@settings(max_examples=80, deadline=None)
@given(floor_cases())
def test_exposure_floor_matches_the_reference_and_keeps_its_promise(case):
    member, shares, idx, scores, n, k_shown = case
    floor = _floor_for(member, shares, k_shown)
    out, vals = floor.rerank([np.zeros(0, np.int64)] * len(idx), idx, scores, n)
    assert out.shape == (len(idx), n)
    for r in range(len(idx)):
        want = floor_reference(member, shares, idx[r], n, k_shown)
        got = [int(i) for i in out[r] if i >= 0]
        assert got == want
        cands = [int(i) for i in idx[r] if i >= 0]
        m = min(n, len(cands))
        assert len(got) == m and len(set(got)) == m and set(got) <= set(cands)
        assert np.all(np.diff(vals[r, :m]) <= 0) and np.all(np.isneginf(vals[r, m:]))
        k = min(m, k_shown or m)  # the floors hold for the first k
        quotas = [min(math.ceil(f * k - 1e-9), sum(member[i, g] for i in cands)) for g, f in enumerate(shares)]
        if sum(quotas) <= k:  # the quotas fit in the list: every floor is met
            for g, q in enumerate(quotas):
                assert sum(member[i, g] for i in got[:k]) >= q
        if all(sum(member[i, g] for i in cands[:k]) >= q for g, q in enumerate(quotas)):
            assert got == cands[:m]  # a list meeting every floor stays as it was


def test_exposure_floor_by_hand():
    member = np.zeros((10, 1), dtype=bool)
    member[[7, 8, 9], 0] = True
    floor = _floor_for(member, [0.5])
    idx = np.arange(10)[None, :]
    scores = -np.arange(10, dtype=np.float32)[None, :]
    out, vals = floor.rerank([np.zeros(0, np.int64)], idx, scores, 4)
    assert out.tolist() == [[0, 1, 7, 8]]  # two of four for the group: its best two, in score order
    np.testing.assert_array_equal(vals, [[0, -1, -7, -8]])
    out, _ = floor.rerank([np.zeros(0, np.int64)], idx, scores, 3)  # ceil(0.5 * 3) = 2
    assert out.tolist() == [[0, 7, 8]]


def test_exposure_floor_on_a_model_raises_the_long_tail_and_returns_n(ease, split, shop):
    train, _, test = split
    plain = fairness_report(ease, test, train=train, n_boot=20)
    floored = Reranked(ease, ExposureFloor(floors={"long_tail": 0.3}), candidates=100)
    rep = fairness_report(floored, test, train=train, n_boot=20)
    assert rep.summary["long_tail_share@10"] > plain.summary["long_tail_share@10"]
    assert rep.summary["exposure_gini@10"] < plain.summary["exposure_gini@10"]
    users = ease.user_map_.ids[:30]
    ids, scores = floored.recommend_batch(users, n=10)
    assert ids.shape == (30, 10) and np.all(np.diff(scores, axis=1) <= 0)
    tail = np.array([["long_tail" in g for g in floored.reranker_.groups_of(row)] for row in ids])
    assert (tail.sum(axis=1) >= 3).all()
    # seen items stay filtered: every answer is a candidate of the model with the same filters
    seen = ease.user_items_[ease.user_map_.lookup(users)]
    pos = ease.item_map_.lookup(ids.reshape(-1)).reshape(ids.shape)
    assert not seen.toarray()[np.arange(30)[:, None], pos].any()
    # in a pipeline after calibration
    cats = shop.item_categories(ease.item_map_)
    both = Reranked(ease, [Calibrated(cats, weight=0.5), ExposureFloor(floors={"long_tail": 0.3})])
    ids, _ = both.recommend_batch(users, n=10)
    assert isinstance(both.reranker_, Pipeline) and ids.shape == (30, 10)


@pytest.mark.parametrize("form", ["popularity", "labels", "dict", "membership"])
def test_exposure_floor_saves_as_data(ease, shop, tmp_path, form):
    brand = dict(zip(shop.items["item_id"], shop.items["brand"]))
    top_brand = shop.items["brand"].value_counts().index[-1]
    groups = {"popularity": "popularity",
              "labels": np.array([brand[i] for i in ease.item_map_.ids], dtype=object),
              "dict": brand,
              "membership": {"small": [i for i, b in brand.items() if b == top_brand], 7: list(ease.item_map_.ids[:9])}}
    floors = {"popularity": {"long_tail": 0.2}, "labels": {top_brand: 0.2}, "dict": {top_brand: 0.2},
              "membership": {"small": 0.2, 7: 0.3}}
    r = Reranked(ease, ExposureFloor(groups[form], floors=floors[form], k=8 if form == "dict" else None),
                 candidates=120)
    users = list(ease.user_map_.ids[:12])
    want = r.recommend_batch(users, n=10)
    path = r.save(tmp_path / f"{form}.persona")
    manifest = json.loads((path / "manifest.json").read_text())
    assert "pickle" not in json.dumps(manifest)
    loaded = ps.load(path)
    got = loaded.recommend_batch(users, n=10)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert isinstance(loaded.reranker_, ExposureFloor) and loaded.reranker_.group_names_ == list(floors[form])


def test_exposure_floor_state_attacks_are_refused(ease):
    floor = ExposureFloor({"a": list(ease.item_map_.ids[:5])}, floors={"a": 0.2}).fit(ease)
    desc, arrays = reranker_state(floor)
    bad = [
        ({**desc, "meta": {**desc["meta"], "groups": {"form": "membership", "names": ["a", "b"]}}}, arrays),
        (desc, {**arrays, "groups.sizes": np.array([99])}),
        (desc, {**arrays, "groups.sizes": np.array([-1])}),
        (desc, {**arrays, "groups.ids": np.zeros((2, 2))}),
        ({**desc, "meta": {**desc["meta"], "params": "x"}}, arrays),
        ({**desc, "meta": {**desc["meta"], "groups": {"form": "array"}}}, arrays),
    ]
    for d, a in bad:
        with pytest.raises(ps.ArtifactError):
            reranker_from_state(d, a)
    # parameters that load but do not fit are refused by fit with a persona error
    for params in ({"floors": [["a", 7.0]], "head": 0.2}, {"floors": [["a", float("nan")]], "head": 0.2},
                   {"floors": "x", "head": 0.2}, {"floors": [["zzz", 0.2]], "head": 0.2}):
        loaded = reranker_from_state({**desc, "meta": {**desc["meta"], "params": params}}, arrays)
        with pytest.raises(ps.ParameterError):
            loaded.fit(ease)


def test_exposure_floor_bad_arguments(ease):
    cases = [
        (ExposureFloor(), "non-empty dict"),
        (ExposureFloor(floors={"long_tail": 0.7, "head": 0.6}), "summing to at most 1"),
        (ExposureFloor(floors={"long_tail": 0.0}), "long_tail"),
        (ExposureFloor(floors={"new": 0.2}), "'head' and 'long_tail'"),
        (ExposureFloor("brands", floors={"a": 0.2}), "expected 'popularity'"),
        (ExposureFloor({"a": [1, 2]}, floors={"b": 0.2}), "not in item_groups"),
        (ExposureFloor(np.array(["x"] * ease.n_items), floors={"y": 0.2}), "no item has the group"),
        (ExposureFloor(np.array(["x"] * 3), floors={"x": 0.2}), "one category per model item"),
        (ExposureFloor(floors={"long_tail": 0.2}, head=2.0), "head"),
        (ExposureFloor(floors={"long_tail": 0.2}, k=0), "k"),
    ]
    for floor, match in cases:
        with pytest.raises((ps.ParameterError, ps.DataError), match=match):
            floor.fit(ease)
    floor = ExposureFloor(floors={"long_tail": 0.2}).fit(ease)
    with pytest.raises(ps.ParameterError, match="outside the"):
        floor.rerank([np.zeros(0, np.int64)], np.array([[ease.n_items]]), np.zeros((1, 1), np.float32), 1)
    with pytest.raises(ps.NotFittedError):
        ExposureFloor(floors={"long_tail": 0.2}).rerank([[]], np.zeros((1, 1), np.int64), np.zeros((1, 1)), 1)


def test_the_audit_goes_into_the_html_report_as_sections(ease, split, shop, tmp_path):
    train, _, test = split
    audit = fairness_audit(ease, test, train=train, n_boot=50, user_groups={"gender": shop.users.set_index("user_id")[
        "gender"]})
    html = ps.analytics.report(shop.interactions, out=None, sections=["summary"], extra=audit)
    for title, table in audit:
        assert title in html
    assert "exposure_gini@10" in html and "ci_low" in html


def test_exposure_floor_inside_the_hybrid(split):
    train, valid, _ = split
    hybrid = ps.Hybrid(generators={"ease": ps.EASE(), "pop": ps.MostPopular()}, candidates=50, ranker="logistic",
                       rerank=ExposureFloor(floors={"long_tail": 0.4}, k=10)).fit(train, valid=valid)
    users = hybrid.user_map_.ids[:20]
    ids, scores = hybrid.recommend_batch(users, n=10)
    tail = np.array([["long_tail" in g for g in hybrid.reranker_.groups_of(row)] for row in ids])
    assert ids.shape == (20, 10) and (tail.sum(axis=1) >= 4).all()
    assert np.all(np.diff(scores, axis=1) <= 0)
