"""Exploration in serving (issue 15, part 4): randomised lists with exact logged propensities.

The propensities are checked against slow, obviously-correct references: enumeration of every
ordered list for small candidate sets (each list's probability as the product of its draws), an
independent subset recursion for Plackett-Luce up to 12 candidates, and Monte Carlo frequencies
of the lists actually drawn -- by the policies and through the service.
"""

from __future__ import annotations

import itertools
import math
import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import persona as ps
from persona.errors import ParameterError
from persona.serving import EpsilonGreedy, PlackettLuce
from persona.serving import explore as explore_module


# ------------------------------------------------------------------ slow references
def reference_weights(policy, scores):
    """Plackett-Luce weights from the definition: exp(logit / temperature), floored 30 below the best."""
    m = len(scores)
    if policy.on == "rank":
        raw = [-math.log(r + 1) / policy.temperature for r in range(m)]
    else:
        raw = [float(s) / policy.temperature for s in scores]
    best = max(raw)
    return [math.exp(max(x - best, -30.0)) for x in raw]


def reference_slate_probability(policy, scores, order):
    """The probability of one ordered list, from the policy's definition (a product of draws)."""
    m, k = len(scores), len(order)
    if isinstance(policy, EpsilonGreedy):
        uniform = 1.0
        for j in range(k):
            uniform /= m - j
        own = 1.0 if list(order) == list(range(k)) else 0.0
        return (1 - policy.epsilon) * own + policy.epsilon * uniform
    w = reference_weights(policy, scores)
    left = set(range(m))
    p = 1.0
    for a in order:
        p *= w[a] / math.fsum(w[j] for j in left)
        left.discard(a)
    return p


def enumerate_lists(policy, scores, n):
    """Every ordered list of min(n, m) candidates with its probability."""
    m = len(scores)
    k = min(n, m)
    return [(perm, reference_slate_probability(policy, scores, perm)) for perm in itertools.permutations(range(m), k)]


def reference_marginals(policy, scores, n):
    m = len(scores)
    out = np.zeros((m, min(n, m)))
    for perm, p in enumerate_lists(policy, scores, n):
        for pos, a in enumerate(perm):
            out[a, pos] += p
    return out


def subset_marginals(weights, n):
    """Plackett-Luce marginals by a recursion over the set of items drawn so far (exact, 2^m states)."""
    m = len(weights)
    prob = {frozenset(): 1.0}
    out = np.zeros((m, n))
    for pos in range(n):
        nxt: dict = {}
        for chosen, p in prob.items():
            rest = [j for j in range(m) if j not in chosen]
            total = math.fsum(weights[j] for j in rest)
            for a in rest:
                q = p * weights[a] / total
                out[a, pos] += q
                nxt[chosen | {a}] = nxt.get(chosen | {a}, 0.0) + q
        prob = nxt
    return out


def policies(seed=None):
    return [EpsilonGreedy(epsilon=0.3, top=8, seed=seed), EpsilonGreedy(epsilon=1.0, top=8, seed=seed),
            PlackettLuce(temperature=0.5, top=8, seed=seed), PlackettLuce(temperature=2.0, top=8, seed=seed),
            PlackettLuce(temperature=1.0, top=8, on="score", seed=seed),
            PlackettLuce(temperature=0.05, top=8, on="score", seed=seed)]


# ------------------------------------------------------------------ exactness by enumeration
@pytest.mark.parametrize("policy", policies(), ids=repr)
@pytest.mark.parametrize("m,n", [(1, 1), (1, 3), (2, 2), (3, 2), (4, 4), (5, 3), (6, 2), (4, 7)])
def test_the_probabilities_of_all_lists_sum_to_one_and_give_the_marginals(policy, m, n):
    scores = np.random.default_rng(m * 10 + n).normal(0, 2, m)
    lists = enumerate_lists(policy, scores, n)
    assert math.isclose(math.fsum(p for _, p in lists), 1.0, rel_tol=0, abs_tol=1e-12)
    for perm, p in lists[:50]:
        assert policy.slate_probability(scores, list(perm)) == pytest.approx(p, rel=1e-12, abs=1e-300)
    want = reference_marginals(policy, scores, n)
    got = policy.marginals(scores, n)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(got.sum(axis=0), 1.0, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(scores=st.lists(st.one_of(st.floats(-50, 50), st.sampled_from([0.0, 1.0, 1.0])), min_size=1, max_size=6),
       n=st.integers(1, 7), temperature=st.floats(0.02, 20.0), on=st.sampled_from(["rank", "score"]),
       epsilon=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_drawn_propensities_are_the_enumerated_marginals(scores, n, temperature, on, epsilon, seed):
    scores = np.array(scores)
    for policy in (PlackettLuce(temperature, on=on, seed=seed), EpsilonGreedy(epsilon, seed=seed)):
        want = reference_marginals(policy, scores, n)
        order, propensities = policy.sample(scores, n)
        assert len(order) == min(n, len(scores)) and len(set(order.tolist())) == len(order)
        np.testing.assert_allclose(propensities, want[order, np.arange(len(order))], rtol=1e-10)
        assert np.all((propensities > 0) & (propensities <= 1))
        np.testing.assert_allclose(policy.marginals(scores, n), want, rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("m,n", [(9, 4), (12, 5), (12, 12)])
@pytest.mark.parametrize("spread", [0.3, 3.0, 12.0])
def test_plackett_luce_quadrature_matches_the_subset_recursion(m, n, spread):
    scores = np.random.default_rng(m + n).normal(0, spread, m)
    policy = PlackettLuce(temperature=1.0, on="score")
    want = subset_marginals(reference_weights(policy, scores), n)
    np.testing.assert_allclose(policy.marginals(scores, n), want, rtol=1e-10, atol=1e-300)


def test_plackett_luce_large_sets_agree_with_a_finer_quadrature(monkeypatch):
    # 40 candidates, all positions: no enumeration possible; a 4x finer step must agree to rounding
    # (relatively for every probability above 1e-18: far below anything ever drawn)
    scores = np.random.default_rng(0).normal(0, 3, 40)
    policy = PlackettLuce(temperature=1.0, top=40, on="score")
    got = policy.marginals(scores, 40)
    monkeypatch.setattr(explore_module, "_STEP", explore_module._STEP / 4)
    finer = policy.marginals(scores, 40)
    np.testing.assert_allclose(got, finer, rtol=1e-11, atol=1e-18)
    np.testing.assert_allclose(got.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)  # everyone is shown somewhere


def test_epsilon_greedy_second_moments_match_enumeration():
    for m, n, eps in [(1, 1, 0.5), (3, 2, 0.3), (4, 4, 1.0), (5, 3, 0.1), (4, 6, 0.7)]:
        policy = EpsilonGreedy(eps)
        k = min(n, m)
        want = np.zeros((k * m, k * m))
        for perm, p in enumerate_lists(policy, np.zeros(m), n):
            x = np.zeros(k * m)
            x[np.arange(k) * m + np.array(perm)] = 1.0
            want += p * np.outer(x, x)
        np.testing.assert_allclose(policy.second_moments(m, n), want, atol=1e-15)
    with pytest.raises(ParameterError, match="EpsilonGreedy"):
        PlackettLuce().second_moments(4, 2)


# ------------------------------------------------------------------ Monte Carlo
@pytest.mark.parametrize("policy", [EpsilonGreedy(0.4, seed=1), PlackettLuce(0.7, seed=2),
                                    PlackettLuce(1.5, on="score", seed=3)], ids=repr)
def test_monte_carlo_frequencies_match_the_logged_propensities(policy):
    scores = np.array([2.0, 1.5, 1.4, 0.3, -1.0])
    n, draws = 3, 20_000
    counts = np.zeros((5, 3))
    slates: dict = {}
    for _ in range(draws):
        order, prop = policy.sample(scores, n)
        counts[order, np.arange(3)] += 1
        slates[tuple(order)] = slates.get(tuple(order), 0) + 1
    p = policy.marginals(scores, n)
    z = (counts / draws - p) / np.sqrt(np.maximum(p * (1 - p), 1e-12) / draws)
    assert np.abs(z).max() < 5, z  # a wrong propensity of a few percent shows at 20,000 draws
    for slate, c in slates.items():
        q = policy.slate_probability(scores, list(slate))
        if q * draws > 50:
            assert abs(c / draws - q) < 5 * math.sqrt(q * (1 - q) / draws), (slate, c / draws, q)


def test_the_same_seed_draws_the_same_lists_and_workers_reseed():
    a, b = PlackettLuce(0.5, seed=7), PlackettLuce(0.5, seed=7)
    scores = np.linspace(1, 0, 10)
    assert [a.sample(scores, 4)[0].tolist() for _ in range(5)] == [b.sample(scores, 4)[0].tolist() for _ in range(5)]
    # an unseeded policy gets fresh entropy in a forked child; a seeded one keeps its stream
    c = PlackettLuce(0.5)
    before = c._rng
    c._after_fork()
    assert c._rng is not before
    a._after_fork()
    assert [a.sample(scores, 4)[0].tolist() for _ in range(3)] == [b.sample(scores, 4)[0].tolist() for _ in range(3)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_workers_draw_different_lists():
    policy = PlackettLuce(3.0)
    scores = np.zeros(20)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its draws and leave at once
        os.close(r)
        os.write(w, repr([policy.sample(scores, 10)[0].tolist() for _ in range(3)]).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = f.read()
    os.waitpid(pid, 0)
    mine = repr([policy.sample(scores, 10)[0].tolist() for _ in range(3)])
    assert child and child != mine


def test_threads_share_a_policy_safely():
    policy = PlackettLuce(1.0, seed=0)
    scores = np.linspace(1, 0, 20)
    bad = []

    def work():
        for _ in range(200):
            order, p = policy.sample(scores, 10)
            if len(set(order.tolist())) != 10 or not np.all((p > 0) & (p <= 1)):
                bad.append(order)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_bad_parameters_are_refused():
    for make, match in [(lambda: EpsilonGreedy(1.5), "epsilon"), (lambda: EpsilonGreedy(-0.1), "epsilon"),
                        (lambda: EpsilonGreedy(0.1, top=0), "top"), (lambda: PlackettLuce(0.0), "temperature"),
                        (lambda: PlackettLuce(float("nan")), "temperature"), (lambda: PlackettLuce(1, on="x"), "on"),
                        (lambda: PlackettLuce(1, top=10**6), "top"), (lambda: PlackettLuce(1, seed=-1), "seed"),
                        (lambda: EpsilonGreedy(True), "epsilon")]:
        with pytest.raises(ParameterError, match=match):
            make()
    policy = PlackettLuce(1.0)
    with pytest.raises(ParameterError, match="scores"):
        policy.sample(np.zeros((2, 2)), 2)
    with pytest.raises(ParameterError, match="n"):
        policy.sample(np.zeros(3), 0)
    with pytest.raises(ParameterError, match="order"):
        policy.slate_probability(np.zeros(3), [0, 0])
    with pytest.raises(ParameterError, match="order"):
        policy.slate_probability(np.zeros(3), [3])


def test_non_finite_scores_still_give_exact_propensities():
    policy = PlackettLuce(1.0, on="score", seed=0)
    scores = np.array([np.inf, 1.0, np.nan, -np.inf])
    order, p = policy.sample(scores, 3)
    want = reference_marginals(PlackettLuce(1.0, on="score"), np.nan_to_num(scores, nan=-1e300, posinf=1e300,
                                                                             neginf=-1e300), 3)
    np.testing.assert_allclose(p, want[order, np.arange(3)], rtol=1e-10)
    flat = policy.marginals(np.full(3, -np.inf), 3)  # nothing to tell them apart: uniform
    np.testing.assert_allclose(flat, 1 / 3, rtol=1e-12)


# ------------------------------------------------------------------ through the service
@pytest.fixture(scope="module")
def shop():
    shop = ps.datasets.synthetic_shop(n_users=300, n_items=80, seed=4)
    return shop, ps.ItemKNN(k=20).fit(shop.interactions)


def test_without_exploration_answers_are_unchanged(shop):
    data, model = shop
    users = data.interactions.user_ids[:30]
    plain = ps.serving.RecommenderService(model, cache_size=0)
    off = ps.serving.RecommenderService(model, explore=None)
    elsewhere = ps.serving.RecommenderService(model, explore={"pdp": EpsilonGreedy(1.0, seed=0)})
    for u in users:
        want = model.recommend(u, n=6)
        for svc in (plain, off, elsewhere):
            got = svc.recommend(u, n=6, context={"placement": "home"})
            assert np.array_equal(got.items, want[0]) and np.array_equal(got.scores, want[1])
            assert got.propensities is None


def test_explored_answers_come_from_the_top_candidates_and_log_their_propensities(shop, tmp_path):
    data, model = shop
    store = ps.EventStore(str(tmp_path / "events.db"))
    policy = PlackettLuce(0.7, top=8, seed=3)
    svc = ps.serving.RecommenderService(model, store=store, explore={"home": policy})
    users = data.interactions.user_ids[:40]
    answers = []
    for u in users:
        rec = svc.recommend(u, n=5, context={"placement": "home", "exclude": ["i0001"]})
        top, top_scores = model.recommend(u, n=8, exclude=["i0001"])
        pos = [top.tolist().index(i) for i in rec.items]
        np.testing.assert_allclose(rec.propensities, policy.marginals(top_scores, 5)[pos, np.arange(5)], rtol=1e-12)
        np.testing.assert_array_equal(rec.scores, top_scores[pos])
        answers.append(rec)
        assert svc.recommend(u, n=5, context={"placement": "pdp"}).propensities is None  # not explored there
    store.flush()
    shown = store.impressions(placement="home")
    assert len(shown) == 5 * len(users)
    by_request = {r.request_id: r for r in answers}
    for rid, group in shown.groupby("request_id", sort=False):
        rec = by_request[rid]
        assert group["item"].tolist() == rec.items.tolist()
        np.testing.assert_allclose(group["propensity"].to_numpy(), rec.propensities, rtol=1e-12)
    assert store.impressions(placement="pdp")["propensity"].isna().all()
    svc.close()
    store.close()


def test_a_cached_answer_draws_its_own_list(shop):
    data, model = shop
    svc = ps.serving.RecommenderService(model, explore=EpsilonGreedy(1.0, top=10, seed=0))
    user = data.interactions.user_ids[3]
    first = svc.recommend(user, n=4)
    seen = {tuple(first.items.tolist())}
    for _ in range(30):
        again = svc.recommend(user, n=4)
        assert again.cached
        np.testing.assert_allclose(again.propensities, 1 / 10)  # epsilon 1: uniform over 10 candidates
        seen.add(tuple(again.items.tolist()))
    assert len(seen) > 20  # fresh draws, not the cached list
    assert svc.stats()["cache_hits"] == 30


def test_service_draws_follow_the_propensities(shop):
    # Monte Carlo through the service: how often each item is at each position vs what was logged
    data, model = shop
    policy = EpsilonGreedy(0.3, top=6, seed=11)
    svc = ps.serving.RecommenderService(model, explore=policy)
    user = data.interactions.user_ids[5]
    draws = 6000
    counts: dict = {}
    logged: dict = {}
    for _ in range(draws):
        rec = svc.recommend(user, n=3)
        for k, (item, p) in enumerate(zip(rec.items.tolist(), rec.propensities.tolist())):
            counts[(item, k)] = counts.get((item, k), 0) + 1
            logged[(item, k)] = p
    for key, c in counts.items():
        p = logged[key]
        assert abs(c / draws - p) < 5 * math.sqrt(p * (1 - p) / draws) + 1e-9, (key, c / draws, p)


def test_fewer_candidates_than_positions_and_fallbacks(shop):
    data, model = shop
    svc = ps.serving.RecommenderService(model, explore=PlackettLuce(1.0, top=10, seed=0))
    allow = list(data.interactions.item_ids[:3])
    user = data.interactions.user_ids[0]
    rec = svc.recommend(user, n=5, context={"items": allow, "filter_seen": False})
    assert sorted(rec.items.tolist()) == sorted(allow)  # all three, in a random order
    ranked = model.recommend(user, n=3, items=allow, filter_seen=False)[0].tolist()
    rank = [ranked.index(i) for i in rec.items]
    np.testing.assert_allclose(rec.propensities, PlackettLuce(1.0).marginals(np.zeros(3), 3)[rank, np.arange(3)],
                               rtol=1e-12)
    stranger = svc.recommend("nobody", n=4)
    assert stranger.source == "popular" and len(stranger.items) == 4 and stranger.propensities is not None


def test_interleaved_answers_are_not_explored(shop):
    data, model = shop
    svc = ps.serving.RecommenderService(model, explore=EpsilonGreedy(1.0, seed=0))
    svc.experiment("home", {"A": model, "B": ps.MostPopular().fit(data.interactions)}, salt="il", interleave=True)
    rec = svc.recommend(data.interactions.user_ids[0], n=4, context={"placement": "home"})
    assert rec.variant == "interleaved" and rec.propensities is None


def test_bad_explore_arguments_are_refused(shop):
    _, model = shop
    for bad, match in [("plackett", "explore"), ({"home": "eps"}, "explore"),
                       ({"bad place!": EpsilonGreedy()}, "placement"), (EpsilonGreedy, "explore")]:
        with pytest.raises(ParameterError, match=match):
            ps.serving.RecommenderService(model, explore=bad)


@pytest.mark.parametrize("policy", [EpsilonGreedy(0.35, seed=4), PlackettLuce(0.8, seed=5),
                                    PlackettLuce(1.2, on="score", seed=6)], ids=repr)
def test_many_requests_at_once_follow_the_same_policy(policy):
    rng = np.random.default_rng(0)
    scores = np.sort(rng.normal(0, 1, (4000, 5)), axis=1)[:, ::-1]
    scores[:2000] = scores[0]  # half the requests share one score row: their frequencies are checked
    order, prop = policy.sample_many(scores, 3)
    assert order.shape == prop.shape == (4000, 3)
    assert all(len(set(r)) == 3 for r in order.tolist())
    for i in range(0, 4000, 397):  # each row's propensities are its own marginals
        np.testing.assert_allclose(prop[i], policy.marginals(scores[i], 3)[order[i], np.arange(3)], rtol=1e-10)
    p = policy.marginals(scores[0], 3)
    counts = np.zeros((5, 3))
    np.add.at(counts, (order[:2000], np.broadcast_to(np.arange(3), (2000, 3))), 1)
    z = (counts / 2000 - p) / np.sqrt(np.maximum(p * (1 - p), 1e-12) / 2000)
    assert np.abs(z).max() < 5, z
    with pytest.raises(ParameterError, match="2-D"):
        policy.sample_many(np.zeros(3), 2)
