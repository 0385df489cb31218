"""The simulated shop (issue 15, part 6): a world with known click probabilities, run through the real
service, store, attribution, experiments, exploration and retrain pipeline.

Tiny worlds (a few hundred users, seconds); benchmarks/bench_loop.py runs the measured versions.
"""

from __future__ import annotations

import numpy as np
import pytest

import persona as ps
from persona.datasets import simulated_shop
from persona.errors import DataError
from persona.pipeline import Retrainer
from persona.serving import EpsilonGreedy, RecommenderService


def _store(tmp_path, shop, name="events.db"):
    store = ps.EventStore(str(tmp_path / name), synchronous="normal")
    store.import_frame(shop.history(), time="timestamp")
    return store


# ------------------------------------------------------------------ the world
def test_the_world_is_seeded_and_its_truth_is_the_formula():
    a, b = simulated_shop(n_users=200, n_items=50, days=5, seed=3), simulated_shop(n_users=200, n_items=50, days=5,
                                                                                     seed=3)
    assert a.history().equals(b.history())
    assert np.array_equal(a.visitors(2), b.visitors(2))
    assert not np.array_equal(a.visitors(2), simulated_shop(n_users=200, n_items=50, days=5, seed=4).visitors(2))
    p = a.params
    users, items = np.array([0, 1, 2]), np.array([[3, 4, 5], [6, 7, 8], [9, 10, 11]])
    day = 2
    z = p["base"] + p["taste"] * (a.user_vec[users][:, None, :] * a.item_vec[items]).sum(-1) / np.sqrt(p["dim"]) \
        + a.item_bias[items] + p["trend"] * np.exp(-np.maximum(day - a.launch_day[items], 0) / p["trend_days"])
    alpha = 1 / (1 + np.exp(-z)) * np.array([1.0, *p["fatigue"]])[a.state[users[:, None], items]]
    want = np.where(a.launch_day[items] <= day, alpha, 0.0) / np.log2(np.arange(3) + 2)
    np.testing.assert_allclose(a.click_probabilities(users, items, day), want, rtol=1e-12)
    # an item launched later is never clicked before its launch
    late = int(np.flatnonzero(a.launch_day == 4)[0])
    assert a.click_probabilities([0], [[late]], 3)[0, 0] == 0.0 < a.click_probabilities([0], [[late]], 4)[0, 0]
    # fatigue: what a user viewed in the history is less attractive to them
    h = a.history()
    u, i = int(h["user_id"].iloc[0]), int(h["item_id"].iloc[0])
    assert a.state[u, i] == 1
    fresh = a.attraction(u, i, 0) / p["fatigue"][0]
    a.state[u, i] = 0
    assert a.attraction(u, i, 0) == pytest.approx(fresh)
    a.reset()
    assert a.state[u, i] == 1


def test_bad_worlds_are_refused():
    for kw, match in [(dict(n_users=0), "n_users"), (dict(visit_rate=0.0), "visit_rate"), (dict(buy=2.0), "buy"),
                      (dict(fatigue=(0.5, 0.5)), "fatigue"), (dict(n_users=10**6, n_items=10**4), "smaller"),
                      (dict(trend_days=0), "trend_days")]:
        with pytest.raises(DataError, match=match):
            simulated_shop(**kw)
    shop = simulated_shop(n_users=50, n_items=20, days=2, seed=0)
    with pytest.raises(DataError, match="lists"):
        shop.click_probabilities([0, 1], [[1, 2]], 0)
    with pytest.raises(DataError, match="item ids"):
        shop.click_probabilities([0], [[10**6]], 0)


# ------------------------------------------------------------------ a day through the service and store
def test_a_day_goes_through_the_service_store_and_attribution(tmp_path):
    shop = simulated_shop(n_users=400, n_items=60, days=3, seed=1)
    store = _store(tmp_path, shop)
    model = ps.ItemKNN(k=20).fit(store.interactions())
    svc = RecommenderService(model, store=store)
    same = RecommenderService(model)
    log = shop.serve_day(0, svc, n=5, counterfactual={"same": same, "top": (same, 8)})
    store.flush()
    assert len(log.users) > 20 and log.impressions == 5 * len(log.users)
    shown = store.impressions(placement="home")
    assert len(shown) == log.impressions and set(shown["request_id"]) == set(log.request_ids)
    metrics = ps.analytics.online_metrics(store, by=None)
    assert int(metrics["clicks"].iloc[0]) == int(log.clicks.sum()) > 0
    assert int(metrics["purchases"].iloc[0]) == int(log.purchases.sum())
    assert metrics.attrs["outcomes"].get("click", {}).get("attributed") == int(log.clicks.sum())
    assert store.count(event_types=["view"]) == len(shop.history()) + log.organic_events
    # the truth: the probabilities of what was shown; the same model's counterfactual lists are the same
    items, prob = log.extra["counterfactual"]["same"]
    np.testing.assert_array_equal(items, log.items)
    np.testing.assert_allclose(prob, log.click_probability)
    assert log.extra["counterfactual"]["top"][0].shape == (len(log.users), 8)
    # the users remember: what they clicked is now less attractive to them
    r, k = np.argwhere(log.clicks > 0)[0]
    assert shop.state[log.users[r], log.items[r, k]] >= 2
    assert 0 < log.expected_ctr < 1 and abs(log.ctr - log.expected_ctr) < 0.1
    svc.close()
    store.close()


def test_two_runs_with_the_same_service_are_identical(tmp_path):
    shop = simulated_shop(n_users=300, n_items=50, days=3, seed=2)
    model = ps.ItemKNN(k=20).fit(ps.Interactions.from_frame(shop.history(), time="timestamp"))
    first = shop.reset().run(RecommenderService(model), 3, n=4)
    second = shop.reset().run(RecommenderService(model), 3, n=4)
    for a, b in zip(first, second):
        assert np.array_equal(a.items, b.items) and np.array_equal(a.clicks, b.clicks)
        assert np.array_equal(a.click_probability, b.click_probability)


# ------------------------------------------------------------------ the loop, an experiment, off-policy
def _arm(tmp_path, shop, loop: bool, days: int):
    shop.reset()
    store = _store(tmp_path, shop, f"{'on' if loop else 'off'}.db")
    since = float(shop.history()["timestamp"].max()) + 1
    model = ps.ALS(factors=8, iterations=8, random_state=0).fit(store.interactions())
    svc = RecommenderService(model, store=store)
    retrainer = Retrainer(store, model, service=svc, since=since) if loop else None
    logs = shop.run(svc, days, retrainer=retrainer, retrain_every=7, store=store, n=5)
    store.close()
    return logs


def test_the_loop_beats_a_frozen_model(tmp_path):
    shop = simulated_shop(n_users=500, n_items=80, days=14, new_users_per_day=15, new_items_per_day=4, seed=5)
    off = _arm(tmp_path, shop, False, 14)
    on = _arm(tmp_path, shop, True, 14)
    assert all(np.array_equal(a.users, b.users) for a, b in zip(off, on))  # the same visitors each day
    week2_off = np.mean([log.expected_ctr for log in off[7:]])
    week2_on = np.mean([log.expected_ctr for log in on[7:]])
    assert week2_on > 1.05 * week2_off, (week2_on, week2_off)
    # users who joined during the loop are served by the model once it has folded their events in
    late = [log for log in on[8:]]
    joined = np.concatenate([log.users[shop.join_day[log.users] >= 0] for log in late])
    sources = np.concatenate([log.sources[shop.join_day[log.users] >= 0] for log in late])
    assert len(joined) and (sources == "model").mean() > 0.5
    frozen = np.concatenate([log.sources[shop.join_day[log.users] >= 0] for log in off[8:]])
    assert (frozen == "model").mean() == 0.0
    assert all(log.extra["retrain"]["error"] is None for log in on)


def test_an_experiment_picks_the_truly_better_model(tmp_path):
    shop = simulated_shop(n_users=1200, n_items=100, days=4, seed=7)
    store = _store(tmp_path, shop)
    inter = store.interactions()
    models = {"A": ps.MostPopular().fit(inter), "B": ps.ItemKNN(k=30).fit(inter)}
    svc = RecommenderService(models["A"], store=store)
    exp = svc.experiment("home", models, salt="sim-1")
    shadows = {k: RecommenderService(m) for k, m in models.items()}
    truth = {k: [0.0, 0] for k in models}
    for day in range(4):
        log = shop.serve_day(day, svc, n=5, counterfactual=shadows)
        for k, (items, prob) in log.extra["counterfactual"].items():
            truth[k][0] += prob.sum()
            truth[k][1] += int((items >= 0).sum())
        # each request was answered by its user's variant: its list is that variant's counterfactual
        for name in models:
            mine = log.variants == name
            np.testing.assert_array_equal(log.items[mine], log.extra["counterfactual"][name][0][mine])
    store.flush()
    result = exp.analyze(metrics=["ctr"])
    better = truth["B"][0] / truth["B"][1] - truth["A"][0] / truth["A"][1]
    assert better > 0.01
    assert result.decision["B"] == "B better" and not result.srm
    svc.close()
    store.close()


def test_off_policy_estimates_from_the_store_match_the_truth(tmp_path):
    shop = simulated_shop(n_users=800, n_items=80, days=6, seed=9)
    store = _store(tmp_path, shop)
    inter = store.interactions()
    logging_model = ps.ItemKNN(k=30).fit(inter)
    target_model = ps.ALS(factors=8, iterations=8, random_state=0).fit(inter)
    policy = EpsilonGreedy(0.5, top=10, seed=0)
    svc = RecommenderService(logging_model, store=store, explore=policy)
    plain, target = RecommenderService(logging_model), RecommenderService(target_model)
    logs = shop.run(svc, 6, store=store, n=4, counterfactual={"own": plain, "target": target,
                                                              "candidates": (plain, 10)})
    cf = {name: np.concatenate([log.extra["counterfactual"][name][0] for log in logs]) for name in
          ("own", "target", "candidates")}
    truth = {name: np.concatenate([log.extra["counterfactual"][name][1] for log in logs]) for name in ("own", "target")}
    rid = np.concatenate([log.request_ids for log in logs])
    imps = store.impressions(placement="home")
    slates = ps.ope.LoggedSlates.from_impressions(imps, ps.analytics.attribution(store), policy=policy)
    order = {r: i for i, r in enumerate(rid)}
    row = np.array([order[r] for r in slates.request_ids])
    slates = ps.ope.LoggedSlates(slates.items, slates.clicks, slates.propensities, n_shown=slates.n_shown,
                                 candidates=cf["candidates"][row], policy=policy)
    # the logging model's own list: fully inside the candidates
    own = ps.ope.compare_slates(slates, cf["own"][row], methods=["ips-position", "dr-position", "pi"])
    want = truth["own"][row].sum(axis=1).mean() / 4
    for method, est in own.items():
        assert abs(est.value - want) < 4 * est.std_error, (method, est, want)
    # another model's list: the part inside the logging candidates is what weighting can see
    other = ps.ope.estimate_slates(slates, cf["target"][row], "ips-position")
    inside = np.array([[t in set(c) for t in ts] for ts, c in zip(cf["target"][row], cf["candidates"][row])])
    supported = (truth["target"][row] * inside).sum(axis=1).mean() / 4
    assert abs(other.value - supported) < 4 * other.std_error and other.support == pytest.approx(inside.mean())
    svc.close()
    store.close()
