"""Slate off-policy estimators (issue 15, part 4): position-based IPS / DR, the pseudoinverse, slate IPS.

Each estimator is checked against its slow reference (persona.ope._slate_reference: loops, and a
Gamma enumerated over every list the logging policy can draw) on random inputs, and for exact
unbiasedness: over tiny worlds, the estimator's expectation -- every list the logging policy can
draw, weighted by its probability, with the expected clicks -- equals the target's true value
where the estimator's assumption holds, and is shown to differ where it does not.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import persona as ps
from persona.errors import DataError, ParameterError
from persona.ope import LoggedSlates, PositionBasedModel, compare_slates, estimate_slates
from persona.ope import slates as slates_module
from persona.ope._slate_reference import enumerate_gamma, reference_terms
from persona.serving import EpsilonGreedy, PlackettLuce

METHODS = ("dm", "ips-position", "dr-position", "pi", "dr-pi", "ips-slate")


class TableModel:
    """A fixed reward model: q(item, position) from a seeded hash (no data dependence: DR stays linear)."""

    def __init__(self, seed=0):
        self.seed = seed

    def value(self, item, k):
        return ((hash((str(item), int(k), self.seed)) % 1000) / 1000.0) * 0.5

    def predict(self, rows, items, positions):
        items = np.asarray(items, dtype=object)
        positions = np.broadcast_to(np.asarray(positions), items.shape)
        return np.vectorize(self.value, otypes=[float])(items, positions)


# ------------------------------------------------------------------ references on random inputs
@st.composite
def slate_logs(draw):
    n = draw(st.integers(1, 6))
    K = draw(st.integers(1, 3))
    eps = draw(st.sampled_from([0.0, 0.3, 1.0]))
    policy = EpsilonGreedy(eps)
    rows_items, rows_clicks, rows_props, n_shown, cands, n_cands, slate_props = [], [], [], [], [], [], []
    m_max = K + 2
    for i in range(n):
        m = draw(st.integers(1, m_max))
        L = min(draw(st.integers(1, K)), m)
        cand = [f"c{draw(st.integers(0, 6))}_{i}_{j}" for j in range(m)]
        cand = list(dict.fromkeys(cand))
        while len(cand) < m:
            cand.append(f"x{len(cand)}_{i}")
        perm = draw(st.permutations(range(m)))[:L]
        if eps == 0.0:
            perm = list(range(L))
        marg = policy.marginals(np.zeros(m), L)
        items = [cand[j] for j in perm] + [None] * (K - L)
        clicks = [draw(st.sampled_from([0.0, 1.0, 0.25])) for _ in range(L)] + [0.0] * (K - L)
        props = [float(marg[j, k]) for k, j in enumerate(perm)] + [1.0] * (K - L)
        rows_items.append(items)
        rows_clicks.append(clicks)
        rows_props.append(props)
        n_shown.append(L)
        cands.append(cand + [None] * (m_max - m))
        n_cands.append(m)
        slate_props.append(policy.slate_probability(np.zeros(m), list(perm)))
    # the target: a list per round, from the candidates, others and gaps
    randomised = draw(st.booleans())
    target, tprops = [], []
    J = K + 1
    for i in range(n):
        pool = [c for c in cands[i] if c is not None] + ["elsewhere"]
        t = [draw(st.sampled_from(pool)) for _ in range(J)]
        t = list(dict.fromkeys(t)) + [None] * (J - len(dict.fromkeys(t)))
        target.append(t)
        if randomised:
            raw = np.array([[draw(st.floats(0, 1)) for _ in range(K)] for _ in range(J)])
            raw[[j for j in range(J) if t[j] is None]] = 0.0
            col = raw.sum(axis=0)
            raw = np.where(col > 0, raw / np.where(col > 0, col, 1.0), 0.0) * draw(st.sampled_from([1.0, 0.7]))
            tprops.append(raw.tolist())
    return dict(items=rows_items, clicks=rows_clicks, props=rows_props, n_shown=n_shown, cands=cands,
                n_cands=n_cands, policy=policy, slate_props=slate_props, target=target,
                tprops=tprops if randomised else None, K=K)


@settings(max_examples=80, deadline=None)
@given(data=slate_logs(), clip=st.sampled_from([None, 2.0]), seed=st.integers(0, 3))
def test_every_estimator_matches_its_reference(data, clip, seed):
    logs = LoggedSlates(np.array(data["items"], dtype=object), data["clicks"], data["props"],
                        n_shown=np.array(data["n_shown"]), candidates=np.array(data["cands"], dtype=object),
                        n_candidates=np.array(data["n_cands"]), policy=data["policy"],
                        slate_propensities=data["slate_props"])
    q = TableModel(seed)
    target = np.array(data["target"], dtype=object)
    tprops = None if data["tprops"] is None else np.array(data["tprops"])
    shown_items = [row[:L] for row, L in zip(data["items"], data["n_shown"])]
    cands = [[c for c in row if c is not None] for row in data["cands"]]
    for method in METHODS:
        if method == "ips-slate" and tprops is not None:
            with pytest.raises(ParameterError, match="deterministic"):
                estimate_slates(logs, target, method, target_propensities=tprops)
            continue
        est = estimate_slates(logs, target, method, target_propensities=tprops, reward_model=q,
                              clip=None if method in ("pi", "dr-pi", "dm") else clip, reward_range=None)
        want = reference_terms(method, shown_items, data["clicks"], data["props"], data["target"], data["K"],
                               tprops=data["tprops"], q=lambda i, a, k: q.value(a, k),
                               clip=None if method in ("pi", "dr-pi", "dm") else clip, candidates=cands,
                               policy=data["policy"], slate_props=data["slate_props"])
        assert est.value == pytest.approx(math.fsum(want) / len(want), rel=1e-9, abs=1e-9), method
        if len(want) > 1:
            mean = math.fsum(want) / len(want)
            se = math.sqrt(math.fsum((t - mean) ** 2 for t in want) / (len(want) - 1) / len(want))
            assert est.std_error == pytest.approx(se, rel=1e-7, abs=1e-12), method


def test_the_epsilon_greedy_gamma_is_the_enumerated_one():
    for m, L, eps in [(3, 2, 0.4), (4, 3, 1.0), (5, 2, 0.1)]:
        policy = EpsilonGreedy(eps)
        np.testing.assert_allclose(policy.second_moments(m, L), enumerate_gamma(list(range(m)), policy, None, L),
                                   atol=1e-14)


def test_pi_needs_only_the_lists_total_reward():
    # a list-level reward (an order placed from the list, say), additive over positions but logged as one
    # number: the pseudoinverse is unbiased from the total alone; the position-based estimator is not
    rng = np.random.default_rng(4)
    m, L = 5, 3
    cands = [f"i{j}" for j in range(m)]
    phi = rng.random((L, m)) * 0.4
    policy = EpsilonGreedy(0.7)
    perms = list(itertools.permutations(range(m), L))
    marg = policy.marginals(np.zeros(m), L)
    items = np.array([[cands[j] for j in s] for s in perms], dtype=object)
    total = np.zeros((len(perms), L))
    total[:, 0] = [sum(phi[k, s[k]] for k in range(L)) for s in perms]  # all of it on the first column
    logs = LoggedSlates(items, total, [[marg[j, k] for k, j in enumerate(s)] for s in perms],
                        candidates=np.array([cands] * len(perms), dtype=object), policy=policy)
    probs = np.array([policy.slate_probability(np.zeros(m), list(s)) for s in perms])
    target = np.array([["i2", "i0", "i4"]] * len(perms), dtype=object)
    truth = (phi[0, 2] + phi[1, 0] + phi[2, 4]) / L
    parts = slates_module._parts(logs, target, None, ["pi", "ips-position"], None, None, 0)
    assert float(parts.terms["pi"] @ probs) == pytest.approx(truth, abs=1e-12)
    assert abs(float(parts.terms["ips-position"] @ probs) - truth) > 1e-3


# ------------------------------------------------------------------ exact unbiasedness by enumeration
def _world(seed=0, n_users=3, m=4):
    rng = np.random.default_rng(seed)
    cands = [[f"u{u}i{j}" for j in range(m)] for u in range(n_users)]
    alpha = {a: rng.uniform(0.05, 0.9) for c in cands for a in c}
    return cands, alpha


def _enumerated(policy, cands, K, click_of):
    """Every list the policy can draw for every user, with its probability and expected clicks."""
    rows = []
    for u, cand in enumerate(cands):
        scores = np.linspace(1.0, 0.0, len(cand))
        marg = policy.marginals(scores, K)
        for perm in itertools.permutations(range(len(cand)), K):
            p = policy.slate_probability(scores, list(perm))
            items = [cand[j] for j in perm]
            rows.append((u, p, items, click_of(u, items), [marg[j, k] for k, j in enumerate(perm)], scores))
    logs = LoggedSlates(np.array([r[2] for r in rows], dtype=object), [r[3] for r in rows], [r[4] for r in rows],
                        candidates=np.array([cands[r[0]] for r in rows], dtype=object),
                        policy=policy if isinstance(policy, EpsilonGreedy) else None,
                        slate_propensities=[r[1] for r in rows])
    return logs, np.array([r[1] for r in rows]), [r[0] for r in rows], [r[5] for r in rows]


def _expectation(logs, probs, n_users, target, method, **kw):
    parts = slates_module._parts(logs, target, kw.pop("target_propensities", None), [method],
                                 kw.pop("reward_model", TableModel()), None, 0)
    return float((parts.terms[method] * probs).sum() / n_users)


@pytest.mark.parametrize("policy", [EpsilonGreedy(0.2), EpsilonGreedy(1.0), PlackettLuce(0.7),
                                    PlackettLuce(2.0, on="score")], ids=repr)
def test_estimators_are_unbiased_where_their_assumptions_hold(policy):
    cands, alpha = _world()
    K = 2
    theta = [1.0, 0.55]

    def pbm(u, items):  # position-based clicks: additive over positions
        return [theta[k] * alpha[a] for k, a in enumerate(items)]

    logs, probs, users, _ = _enumerated(policy, cands, K, pbm)
    own = {u: [c[3], c[1]] for u, c in enumerate(cands)}
    target = np.array([own[u] for u in users], dtype=object)
    truth = np.mean([sum(theta[k] * alpha[own[u][k]] for k in range(K)) / K for u in range(len(cands))])
    methods = ["ips-position", "dr-position", "ips-slate"] + (["pi", "dr-pi"] if logs.policy is not None else [])
    for method in methods:
        assert _expectation(logs, probs, len(cands), target, method) == pytest.approx(truth, abs=1e-12), method
    assert abs(_expectation(logs, probs, len(cands), target, "dm") - truth) > 1e-3  # a wrong model is biased

    # a randomised target (its own Plackett-Luce over the user's candidates, reversed order)
    tpol = PlackettLuce(1.0)
    tm = np.array([tpol.marginals(np.zeros(len(cands[u])), K) for u in users])  # (N, m, K) by candidate rank
    titems = np.array([cands[u][::-1] for u in users], dtype=object)
    truth_r = np.mean([sum(tm[users.index(u)][j, k] * theta[k] * alpha[cands[u][::-1][j]]
                           for j in range(len(cands[u])) for k in range(K)) / K for u in range(len(cands))])
    for method in ["ips-position", "dr-position"] + (["pi", "dr-pi"] if logs.policy is not None else []):
        got = _expectation(logs, probs, len(cands), titems, method, target_propensities=tm)
        assert got == pytest.approx(truth_r, abs=1e-12), method


def test_position_estimators_are_biased_when_clicks_cascade_but_slate_ips_is_not():
    cands, alpha = _world(1)
    K = 2
    policy = EpsilonGreedy(0.6)

    def cascade(u, items):  # the second click happens only when the first item was not clicked: not additive
        p1 = alpha[items[0]]
        return [p1, (1 - p1) * alpha[items[1]] * 0.8]

    logs, probs, users, _ = _enumerated(policy, cands, K, cascade)
    own = {u: [c[2], c[0]] for u, c in enumerate(cands)}
    target = np.array([own[u] for u in users], dtype=object)
    truth = np.mean([sum(cascade(u, own[u])) / K for u in range(len(cands))])
    assert _expectation(logs, probs, len(cands), target, "ips-slate") == pytest.approx(truth, abs=1e-12)
    for method in ("ips-position", "pi"):
        assert abs(_expectation(logs, probs, len(cands), target, method) - truth) > 1e-4, method


def test_target_mass_outside_the_candidates_is_reported_and_lost():
    cands, alpha = _world(2)
    K = 2
    policy = EpsilonGreedy(0.5)
    logs, probs, users, _ = _enumerated(policy, cands, K, lambda u, items: [alpha[a] * (1 - 0.4 * k)
                                                                            for k, a in enumerate(items)])
    target = np.array([[cands[u][1], "never-a-candidate"] for u in users], dtype=object)
    est = estimate_slates(logs, target, "ips-position")
    assert est.support == pytest.approx(0.5)
    truth_supported = np.mean([alpha[cands[u][1]] / K for u in range(len(cands))])
    assert _expectation(logs, probs, len(cands), target, "ips-position") == pytest.approx(truth_supported, abs=1e-12)


# ------------------------------------------------------------------ a loose check on sampled logs
def test_sampled_logs_estimate_the_truth_within_their_intervals():
    rng = np.random.default_rng(5)
    n_users, n_items, m, K = 300, 60, 8, 4
    taste = rng.uniform(-2.0, 0.5, (n_users, n_items))
    alpha = 1 / (1 + np.exp(-taste))
    theta = 1 / np.log2(np.arange(K) + 2)
    logging_rank = np.argsort(-(taste + rng.normal(0, 1.0, taste.shape)), axis=1)[:, :m]  # a noisy model
    # a better ranker of the same candidates: the truly best K of them (fully inside the logging support)
    best = np.argsort(-np.take_along_axis(taste, logging_rank, axis=1), axis=1)[:, :K]
    target_rank = np.take_along_axis(logging_rank, best, axis=1)
    n = 6000
    users = rng.integers(0, n_users, n)
    policy = EpsilonGreedy(0.5, seed=1)
    items = np.empty((n, K), dtype=np.int64)
    props = np.empty((n, K))
    for i, u in enumerate(users):
        order, p = policy.sample(np.zeros(m), K)
        items[i], props[i] = logging_rank[u, order], p
    clicks = (rng.random((n, K)) < theta * alpha[users[:, None], items]).astype(float)
    logs = LoggedSlates(items, clicks, props, candidates=logging_rank[users], policy=policy)
    target = target_rank[users]
    truth = float((theta * alpha[users[:, None], target]).sum(axis=1).mean() / K)
    out = compare_slates(logs, target, methods=["ips-position", "dr-position", "pi", "dr-pi", "dm"])
    for method in ("ips-position", "dr-position", "pi", "dr-pi"):
        est = out[method]
        assert abs(est.value - truth) < 4 * est.std_error, (method, est, truth)
        assert est.std_error < 0.05
    assert out["dr-position"].std_error < out["ips-position"].std_error  # the model earns its keep
    assert out["ips-position"].support == 1.0
    logged_ctr = float(clicks.mean())
    assert out["ips-position"].ci_low > logged_ctr  # the better ranker is seen to be better


# ------------------------------------------------------------------ from the store
def test_logs_from_the_store_through_the_service(tmp_path):
    shop = ps.datasets.synthetic_shop(n_users=200, n_items=60, seed=2)
    model = ps.ItemKNN(k=20).fit(shop.interactions)
    store = ps.EventStore(str(tmp_path / "events.db"))
    policy = EpsilonGreedy(0.5, top=6, seed=0)
    svc = ps.serving.RecommenderService(model, store=store, explore={"home": policy})
    rng = np.random.default_rng(0)
    expected_clicks = {}
    for u in shop.interactions.user_ids[:60]:
        rec = svc.recommend(u, n=3, context={"placement": "home"})
        for k, item in enumerate(rec.items):
            if rng.random() < 0.3:
                svc.track(u, item, "click", properties={"request_id": rec.request_id},
                          event_id=f"click:{rec.request_id}:{item}")
                expected_clicks[(rec.request_id, item)] = 1
        svc.recommend(u, n=3, context={"placement": "pdp"})  # not explored: no propensity
    store.flush()
    imps = store.impressions(placement="home")
    logs = LoggedSlates.from_impressions(imps, ps.analytics.attribution(store), policy=policy)
    assert logs.n_rounds == 60 and logs.n_positions == 3
    assert int(logs.clicks.sum()) == len(expected_clicks)
    for i, rid in enumerate(logs.request_ids):
        for k in range(3):
            assert logs.clicks[i, k] == expected_clicks.get((rid, logs.items[i, k]), 0)
    np.testing.assert_allclose(np.sort(np.unique(logs.propensities)), [0.5 / 6, 0.5 + 0.5 / 6])
    # the logging model itself, evaluated on its own logs: its deterministic list
    users = logs.users
    own = np.array([model.recommend(u, n=3)[0] for u in users], dtype=object)
    est = estimate_slates(logs, own, "ips-position")
    w = np.where(logs.items == own, 1 / logs.propensities, 0.0)
    assert est.max_weight == pytest.approx(1 / (0.5 + 0.5 / 6))  # the model's own item at its own position
    assert est.value == pytest.approx((w * logs.clicks).sum() / (60 * 3))
    with pytest.raises(DataError, match="no propensity"):
        LoggedSlates.from_impressions(store.impressions(), None)
    mixed = LoggedSlates.from_impressions(store.impressions(), None, missing_propensity=1.0)
    assert mixed.n_rounds == 120 and mixed.clicks.sum() == 0
    svc.close()
    store.close()


# ------------------------------------------------------------------ the click model
def test_position_based_model_recovers_examination_and_attraction():
    rng = np.random.default_rng(0)
    n, K, n_items = 20_000, 4, 30
    theta = np.array([1.0, 0.7, 0.5, 0.35])
    alpha = rng.uniform(0.05, 0.6, n_items)
    items = np.array([rng.permutation(n_items)[:K] for _ in range(n)])
    clicks = (rng.random((n, K)) < theta * alpha[items]).astype(float)
    logs = LoggedSlates(items, clicks, np.full((n, K), 1.0 / n_items))
    model = PositionBasedModel(prior_strength=0).fit(logs)
    pred = model.predict(None, np.arange(n_items)[:, None].repeat(K, 1), np.arange(K)[None, :].repeat(n_items, 0))
    np.testing.assert_allclose(pred, theta[None, :] * alpha[:, None], atol=0.03)
    assert model.predict(None, [["unknown"]], [[0]])[0, 0] == pytest.approx(model.prior_ * model.examination_[0])


# ------------------------------------------------------------------ intervals and bad input
def test_intervals_and_ranges():
    rng = np.random.default_rng(3)
    n, K = 500, 2
    items = np.array([rng.permutation(5)[:K] for _ in range(n)])
    clicks = (rng.random((n, K)) < 0.2).astype(float)
    logs = LoggedSlates(items, clicks, np.full((n, K), 0.2))
    target = np.tile([0, 1], (n, 1))
    est = estimate_slates(logs, target, "ips-position")
    terms = (np.where(items == target, 5.0, 0.0) * clicks).sum(axis=1) / K
    assert est.value == pytest.approx(terms.mean())
    z = 1.959963984540054
    assert est.ci_low == pytest.approx(max(0.0, terms.mean() - z * terms.std(ddof=1) / math.sqrt(n)))
    boot = estimate_slates(logs, target, "ips-position", ci="bootstrap", n_bootstrap=300, random_state=1)
    again = estimate_slates(logs, target, "ips-position", ci="bootstrap", n_bootstrap=300, random_state=1)
    assert (boot.ci_low, boot.ci_high) == (again.ci_low, again.ci_high) and boot.ci_low < est.value < boot.ci_high
    assert est.reward_range == (0.0, 1.0) and est.n_positions == 2 and math.isnan(est.support)
    clipped = estimate_slates(logs, target, "ips-position", clip=2.0)
    assert clipped.n_clipped > 0 and clipped.max_weight == 2.0


def test_bad_input_is_refused():
    items = [["a", "b"], ["b", "a"]]
    good = dict(items=items, clicks=[[1, 0], [0, 0]], propensities=[[0.5, 0.5], [0.5, 0.5]])
    for change, err, match in [
        (dict(items=["a", "b"]), DataError, "2-D"),
        (dict(clicks=[[1, 0]]), DataError, "shape"),
        (dict(propensities=[[0.0, 0.5], [0.5, 0.5]]), DataError, r"\(0, 1\]"),
        (dict(propensities=[[1.5, 0.5], [0.5, 0.5]]), DataError, r"\(0, 1\]"),
        (dict(clicks=[[np.nan, 0], [0, 0]]), DataError, "finite"),
        (dict(n_shown=[3, 1]), DataError, "n_shown"),
        (dict(candidates=[["a"], ["b"]]), DataError, "candidates"),
        (dict(policy=object()), ParameterError, "second_moments"),
        (dict(slate_propensities=[0.5]), DataError, "slate_propensities"),
    ]:
        with pytest.raises(err, match=match):
            LoggedSlates(**{**good, **change})
    logs = LoggedSlates(**good)
    with pytest.raises(ParameterError, match="method"):
        estimate_slates(logs, items, "ipw")
    with pytest.raises(DataError, match="rows"):
        estimate_slates(logs, [["a", "b"]])
    with pytest.raises(ParameterError, match="candidates"):
        estimate_slates(logs, items, "pi")
    with pytest.raises(ParameterError, match="slate_propensities"):
        estimate_slates(logs, items, "ips-slate")
    with pytest.raises(ParameterError, match="predict"):
        estimate_slates(logs, items, "dm", reward_model="a model")
    with pytest.raises(DataError, match="target_propensities"):
        estimate_slates(logs, items, target_propensities=np.ones((2, 2, 3)))
    with pytest.raises(DataError, match="more than 1"):
        estimate_slates(logs, items, target_propensities=np.ones((2, 2, 2)))
    with pytest.raises(ParameterError, match="alpha"):
        estimate_slates(logs, items, alpha=1.0)
    with pytest.raises(ParameterError, match="unknown options"):
        compare_slates(logs, items, bogus=1)
    outside = LoggedSlates(**good, candidates=[["a", "c"], ["b", "c"]], policy=EpsilonGreedy(0.5))
    with pytest.raises(DataError, match="not among its candidates"):
        estimate_slates(outside, items, "pi")
    with pytest.raises(DataError, match="pandas"):
        LoggedSlates.from_impressions([1, 2], None)


def test_malformed_impression_frames_are_refused():
    import pandas as pd

    good = pd.DataFrame({"request_id": ["r1", "r1", "r2"], "user": ["u", "u", "v"], "item": ["a", "b", "a"],
                         "position": [1, 2, 1], "propensity": [0.5, 0.5, 0.25]})
    logs = LoggedSlates.from_impressions(good, None)
    assert logs.n_rounds == 2 and logs.n_shown.tolist() == [2, 1] and logs.clicks.sum() == 0
    for change, match in [(dict(position=[1, 1, 1]), "gaps or repeats"), (dict(position=[1, 3, 1]), "gaps or repeats"),
                          (dict(position=[0, 1, 1]), "position"), (dict(position=[1.5, 2, 1]), "position"),
                          (dict(propensity=[0.5, 1.5, 0.25]), r"\(0, 1\]"), (dict(propensity=[0.5, -1, 0.25]), r"\(0, 1\]")]:
        with pytest.raises(DataError, match=match):
            LoggedSlates.from_impressions(good.assign(**change), None)
    with pytest.raises(DataError, match="no column"):
        LoggedSlates.from_impressions(good.drop(columns=["propensity"]), None)
    with pytest.raises(DataError, match="attribution"):
        LoggedSlates.from_impressions(good, pd.DataFrame({"request_id": ["r1"]}))
    with pytest.raises(DataError, match="empty"):
        LoggedSlates.from_impressions(good.iloc[:0], None)
    # outcomes that name no shown item, an unknown request or another kind count for nothing
    outcomes = pd.DataFrame({"request_id": ["r1", "r1", "zz", "r2", "r2"], "item": ["b", "x", "a", "a", "a"],
                             "kind": ["click", "click", "click", "purchase", "click"],
                             "status": ["attributed", "attributed", "unknown request", "attributed", "outside window"]})
    got = LoggedSlates.from_impressions(good, outcomes)
    assert got.clicks.tolist() == [[0.0, 1.0], [0.0, 0.0]]
