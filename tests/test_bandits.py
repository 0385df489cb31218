"""Contextual bandits: the Numba kernels against their numpy references, the ridge statistics
against a fresh solve, exact propensities, learning, and save/load as data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import ndtr

import persona as ps
from persona.kernels import _bandit_reference as ref
from persona.marketing.bandits import EpsilonGreedy, LinearBandit, LinearThompsonSampling, LinUCB, load_policy

kernels = pytest.importorskip("persona.kernels.bandit")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GL = kernels.gauss_legendre()


# ------------------------------------------------------------------ random batches
@st.composite
def batches(draw):
    """A bandit size and a few batches of (contexts, actions, rewards); some actions never shown."""
    n_actions = draw(st.integers(1, 4))
    n_features = draw(st.integers(0, 4))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    sizes = draw(st.lists(st.integers(0, 15), min_size=1, max_size=4))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    out = []
    for n in sizes:
        x = rng.normal(size=(n, n_features)) * scale
        x[rng.random(n) < 0.2] = 0.0  # zero rows: a no-op step for the context part
        a = rng.integers(0, max(1, n_actions - 1), n)  # the last action may stay unseen
        r = rng.choice([0.0, 1.0, -2.5], size=n)
        out.append((x, a, r))
    reg = draw(st.sampled_from([0.1, 1.0, 10.0]))
    return n_actions, n_features, reg, out


def fresh_solve(n_actions, n_features, reg, data, intercept=True):
    """precision, inverse, b and theta from scratch (np.linalg.solve), per action."""
    xs = np.vstack([x for x, _, _ in data]) if data else np.zeros((0, n_features))
    a = np.concatenate([a for _, a, _ in data]).astype(int)
    r = np.concatenate([r for _, _, r in data])
    if intercept:
        xs = np.hstack([xs, np.ones((len(xs), 1))])
    d = xs.shape[1]
    prec = np.empty((n_actions, d, d))
    b = np.empty((n_actions, d))
    for j in range(n_actions):
        xj = xs[a == j]
        prec[j] = reg * np.eye(d) + xj.T @ xj
        b[j] = xj.T @ r[a == j]
    inv = np.linalg.inv(prec)
    theta = np.stack([np.linalg.solve(prec[j], b[j]) for j in range(n_actions)])
    return prec, inv, b, theta


@SETTINGS
@given(batches())
def test_ridge_statistics_after_batches_equal_a_fresh_solve(case):
    n_actions, n_features, reg, data = case
    policy = LinUCB(n_actions=n_actions, regularization=reg, random_state=0)
    policy.reset(n_features)
    for x, a, r in data:
        policy.update(x, a, r)
    prec, inv, b, theta = fresh_solve(n_actions, n_features, reg, data)
    np.testing.assert_allclose(policy.precision_, prec, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(policy.b_, b, rtol=1e-10, atol=1e-9)
    scale = np.abs(inv).max()
    np.testing.assert_allclose(policy.covariance_, inv, rtol=1e-6, atol=1e-9 * scale)
    np.testing.assert_allclose(policy.theta_, theta, rtol=1e-6, atol=1e-8 * max(1.0, np.abs(theta).max()))
    counts = np.bincount(np.concatenate([a for _, a, _ in data]).astype(int), minlength=n_actions)
    assert policy.counts_.tolist() == counts.tolist()


@SETTINGS
@given(batches())
def test_ridge_update_kernel_matches_the_reference(case):
    n_actions, n_features, reg, data = case
    d = n_features + 1
    state_k = [np.repeat(np.eye(d)[None] * reg, n_actions, 0), np.repeat(np.eye(d)[None] / reg, n_actions, 0),
               np.zeros((n_actions, d)), np.zeros(n_actions, dtype=np.int64)]
    state_r = [s.copy() for s in state_k]
    for x, a, r in data:
        xd = np.ascontiguousarray(np.hstack([x, np.ones((len(x), 1))]))
        kernels.ridge_update(*state_k, xd, a.astype(np.int64), r)
        ref.ridge_update(*state_r, xd, a, r)
    for k, r in zip(state_k, state_r):
        np.testing.assert_allclose(k, r, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(r).max()))


@SETTINGS
@given(batches(), st.sampled_from([0.0, 0.3, 2.0]))
def test_ucb_scores_equal_the_formula(case, alpha):
    n_actions, n_features, reg, data = case
    policy = LinUCB(n_actions=n_actions, alpha=alpha, regularization=reg)
    policy.reset(n_features)
    for x, a, r in data:
        policy.update(x, a, r)
    x = np.random.default_rng(1).normal(size=(5, n_features))
    _, inv, _, theta = fresh_solve(n_actions, n_features, reg, data)
    xd = np.hstack([x, np.ones((5, 1))])
    expect = xd @ theta.T + alpha * np.sqrt(np.einsum("ni,aij,nj->na", xd, inv, xd))
    np.testing.assert_allclose(policy.scores(x), expect, rtol=1e-6, atol=1e-8)
    mean_k, width_k = kernels.posterior_moments(xd, policy.theta_, policy.covariance_)
    mean_r, width_r = ref.posterior_moments(xd, policy.theta_, policy.covariance_)
    np.testing.assert_allclose(mean_k, mean_r, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(width_k, width_r, rtol=1e-12, atol=1e-12)


def test_one_batch_equals_rows_one_at_a_time():
    rng = np.random.default_rng(0)
    x, a, r = rng.normal(size=(60, 3)), rng.integers(0, 3, 60), rng.random(60)
    one = LinUCB(n_actions=3).update(x, a, r)
    many = LinUCB(n_actions=3)
    for i in range(60):
        many.update(x[i:i + 1], a[i:i + 1], r[i:i + 1])
    np.testing.assert_allclose(one.theta_, many.theta_, rtol=1e-9)
    np.testing.assert_allclose(one.covariance_, many.covariance_, rtol=1e-9, atol=1e-12)


def test_cholesky_refresh_keeps_the_inverse_exact_over_many_updates():
    rng = np.random.default_rng(3)
    policy = LinUCB(n_actions=2, regularization=1e-3)
    for _ in range(50):
        x = rng.normal(size=(40, 5)) * rng.choice([1e-2, 1, 1e2])
        policy.update(x, rng.integers(0, 2, 40), rng.random(40))
    for j in range(2):
        np.testing.assert_allclose(policy.covariance_[j] @ policy.precision_[j], np.eye(6), atol=1e-8)


# ------------------------------------------------------------------ Thompson propensities
@st.composite
def score_distributions(draw):
    n = draw(st.integers(1, 3))
    n_actions = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    mean = rng.normal(size=(n, n_actions)) * draw(st.sampled_from([0.01, 1.0, 5.0]))
    mean[:, -1] = mean[:, 0] if draw(st.booleans()) else mean[:, -1]  # exact ties of means
    std = np.exp(rng.uniform(np.log(draw(st.sampled_from([1e-3, 0.1, 1.0]))), 0.5, size=(n, n_actions)))
    if draw(st.booleans()):
        std[:] = std[:, :1]  # equal widths
    if draw(st.integers(0, 9)) == 0:
        std[:] = 0.0  # degenerate: all point masses
    return mean, std


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(score_distributions())
def test_ts_probabilities_match_adaptive_quadrature(case):
    mean, std = case
    got = kernels.ts_probabilities(mean, std, *GL)
    expect = ref.ts_probabilities(mean, std)
    np.testing.assert_allclose(got, expect, atol=1e-8)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)


def test_ts_probabilities_two_actions_closed_form():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(5000, 2))
    std = np.exp(rng.uniform(np.log(1e-3), 0, size=(5000, 2)))  # width ratios up to 1000
    got = kernels.ts_probabilities(mean, std, *GL)
    exact = ndtr((mean[:, 0] - mean[:, 1]) / np.hypot(std[:, 0], std[:, 1]))
    np.testing.assert_allclose(got[:, 0], exact, atol=1e-8)


def test_thompson_choices_follow_their_propensities():
    rng = np.random.default_rng(5)
    policy = LinearThompsonSampling(n_actions=4, scale=0.7, random_state=2)
    policy.update(rng.normal(size=(30, 2)), rng.integers(0, 4, 30), rng.random(30))
    x = np.repeat(rng.normal(size=(1, 2)), 20_000, axis=0)
    actions, props = policy.choose(x)
    p = policy.action_probabilities(x[:1])[0]
    np.testing.assert_allclose(props, p[actions])
    freq = np.bincount(actions, minlength=4) / len(actions)
    assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / len(actions)) + 1e-3), (freq, p)
    mc = LinearThompsonSampling(n_actions=4, scale=0.7, random_state=2, propensity="monte_carlo", n_samples=50_000)
    mc.update(*(lambda r: (r.normal(size=(30, 2)), r.integers(0, 4, 30), r.random(30)))(np.random.default_rng(5)))
    np.testing.assert_allclose(mc.action_probabilities(x[:1])[0], p, atol=0.01)


@pytest.mark.parametrize("make", [lambda: EpsilonGreedy(n_actions=3, epsilon=0.3, random_state=1),
                                  lambda: LinUCB(n_actions=3, alpha=0.5, epsilon=0.2, random_state=1)])
def test_deterministic_policies_choose_by_their_exact_probabilities(make):
    policy = make()
    rng = np.random.default_rng(0)
    policy.update(rng.normal(size=(20, 2)), rng.integers(0, 3, 20), rng.random(20))
    x = np.repeat(rng.normal(size=(1, 2)), 20_000, axis=0)
    p = policy.action_probabilities(x[:1])[0]
    eps = policy.epsilon
    np.testing.assert_allclose(np.sort(p), [eps / 3, eps / 3, 1 - eps + eps / 3], rtol=1e-12)
    actions, props = policy.choose(x)
    np.testing.assert_allclose(props, p[actions])
    freq = np.bincount(actions, minlength=3) / len(actions)
    np.testing.assert_allclose(freq, p, atol=0.015)


def test_ties_are_shared_and_reproducible():
    x = np.zeros((4000, 2))
    policy = LinUCB(n_actions=4, random_state=9)  # nothing learnt: every action ties
    p = policy.action_probabilities(x)
    np.testing.assert_allclose(p, 0.25)
    a1, p1 = policy.choose(x)
    assert set(a1.tolist()) == {0, 1, 2, 3} and np.allclose(p1, 0.25)
    a2, _ = LinUCB(n_actions=4, random_state=9).choose(x)
    np.testing.assert_array_equal(a1, a2)  # seeded
    ts = LinearThompsonSampling(n_actions=3, fit_intercept=False, random_state=0)
    a, props = ts.choose(np.zeros((3000, 1)))  # zero contexts: zero widths, all tied
    np.testing.assert_allclose(props, 1 / 3)
    assert set(a.tolist()) == {0, 1, 2}


def test_policies_are_evaluable_off_policy():
    """Logs of an exploring LinUCB, then ps.ope estimates of a TS policy against its true value."""
    rng = np.random.default_rng(0)
    n_actions, d = 3, 2
    theta = np.array([[1.0, 0.0], [0.0, 1.0], [-0.5, -0.5]])
    x = rng.normal(size=(6000, d))
    ctr = 1 / (1 + np.exp(-(x @ theta.T)))
    logger = LinUCB(n_actions=n_actions, alpha=0.5, epsilon=0.3, random_state=1)
    logger.update(x[:300], rng.integers(0, 3, 300), rng.random(300))
    a, p = logger.choose(x)
    r = (rng.random(len(x)) < ctr[np.arange(len(x)), a]).astype(float)
    logged = ps.LoggedFeedback(action=a, reward=r, propensity=p, context=x, n_actions=n_actions)
    target_policy = LinearThompsonSampling(n_actions=n_actions, scale=0.3, random_state=0)
    target_policy.fit(x[:500], a[:500], r[:500])
    target = target_policy.action_probabilities(x)
    truth = float((target * ctr).sum(axis=1).mean())
    for method in ("ipw", "snipw", "dr"):
        est = ps.ope.estimate(logged, target, method)
        assert est.ci_low - 0.01 <= truth <= est.ci_high + 0.01, (method, est, truth)


def linear_world(seed, n_actions=5, d=4):
    world = np.random.default_rng(seed)
    theta = world.normal(size=(n_actions, d)) / np.sqrt(d)
    return lambda x: 1 / (1 + np.exp(-2 * (x @ theta.T)))


def regret(policy, ctr, rounds=3000, batch=50, seed=0):
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(rounds // batch):
        x = rng.normal(size=(batch, 4))
        q = ctr(x)
        a, _ = policy.choose(x)
        total += float((q.max(axis=1) - q[np.arange(batch), a]).sum())
        policy.update(x, a, (rng.random(batch) < q[np.arange(batch), a]).astype(float))
    return total


def test_learning_policies_beat_random_on_a_linear_world():
    ctr = linear_world(0)
    uniform = regret(EpsilonGreedy(n_actions=5, epsilon=1.0, random_state=0), ctr)
    for policy in (LinUCB(n_actions=5, alpha=0.5, random_state=0),
                   LinearThompsonSampling(n_actions=5, scale=0.3, random_state=0),
                   EpsilonGreedy(n_actions=5, epsilon=0.05, random_state=0)):
        assert regret(policy, ctr) < 0.5 * uniform, type(policy).__name__


# ------------------------------------------------------------------ persistence
@pytest.mark.parametrize("cls", [LinUCB, LinearThompsonSampling, EpsilonGreedy])
def test_save_load_round_trip_resumes_the_random_stream(cls, tmp_path):
    rng = np.random.default_rng(0)
    policy = cls(n_actions=3, random_state=4)
    policy.update(rng.normal(size=(25, 2)), rng.integers(0, 3, 25), rng.random(25))
    policy.choose(rng.normal(size=(5, 2)))
    path = policy.save(tmp_path / "policy.persona")
    loaded = cls.load(path)
    assert type(loaded) is cls and loaded.get_params() == policy.get_params()
    for name in ("precision_", "covariance_", "b_", "theta_", "counts_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(policy, name))
    x = rng.normal(size=(50, 2))
    a1, p1 = policy.choose(x)
    a2, p2 = loaded.choose(x)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(p1, p2)
    assert isinstance(LinearBandit.load(path), cls)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["kind"] == "bandit" and manifest["meta"]["class"] == cls.__name__


def test_unfitted_policies_save_and_load(tmp_path):
    path = EpsilonGreedy(n_actions=2, epsilon=0.5).save(tmp_path / "p")
    loaded = load_policy(path)
    assert loaded.get_params()["epsilon"] == 0.5 and not hasattr(loaded, "theta_")


def test_bad_artifacts_are_refused(tmp_path):
    path = LinUCB(n_actions=2, random_state=0).update(np.ones((3, 1)), [0, 1, 0], [1, 0, 1]).save(tmp_path / "p")
    with pytest.raises(ps.ArtifactError, match="not a EpsilonGreedy"):
        EpsilonGreedy.load(path)
    with pytest.raises(ps.ArtifactError, match="not a model"):
        ps.load(path)
    mf = path / "manifest.json"
    manifest = json.loads(mf.read_text())
    manifest["meta"]["class"] = "os.system"
    mf.write_text(json.dumps(manifest))
    with pytest.raises(ps.ArtifactError):  # the manifest checksum no longer matches
        load_policy(path)
    with pytest.raises(ps.ArtifactError):
        load_policy(tmp_path / "missing")


# ------------------------------------------------------------------ errors
def test_input_and_parameter_errors():
    policy = LinUCB(n_actions=3)
    with pytest.raises(ps.DataError, match="2-D"):
        policy.choose(np.ones(3))
    policy.update(np.ones((2, 2)), [0, 1], [1.0, 0.0])
    with pytest.raises(ps.DataError, match="built for 2"):
        policy.choose(np.ones((1, 3)))
    with pytest.raises(ps.DataError, match=r"actions must lie in \[0, 3\)"):
        policy.update(np.ones((1, 2)), [3], [1.0])
    with pytest.raises(ps.DataError, match="one action per round"):
        policy.update(np.ones((2, 2)), [0], [1.0, 1.0])
    with pytest.raises(ps.DataError, match="finite"):
        policy.update(np.ones((1, 2)), [0], [np.nan])
    with pytest.raises(ps.DataError, match="non-finite"):
        policy.choose(np.array([[np.inf, 0.0]]))
    with pytest.raises(ps.DataError, match="integer"):
        policy.update(np.ones((1, 2)), [0.5], [1.0])
    for bad in (dict(alpha=-1), dict(epsilon=1.5), dict(regularization=0), dict(random_state=-1)):
        with pytest.raises(ps.ParameterError):
            LinUCB(n_actions=3, **bad).choose(np.ones((1, 1)))
    with pytest.raises(ps.ParameterError, match="n_actions"):
        EpsilonGreedy(n_actions=0).choose(np.ones((1, 1)))
    with pytest.raises(ps.ParameterError, match="propensity"):
        LinearThompsonSampling(n_actions=2, propensity="guess").choose(np.ones((1, 1)))
    with pytest.raises(ps.DataError, match="nothing to learn"):
        LinUCB(n_actions=2, fit_intercept=False).choose(np.zeros((1, 0)))
    a, p = LinUCB(n_actions=2).choose(np.zeros((0, 1)))
    assert a.shape == (0,) and p.shape == (0,)


def test_importing_the_bandits_does_not_load_numba():
    code = ("import sys, persona, persona.ope, persona.marketing.bandits; "
            "assert 'numba' not in sys.modules, 'numba'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ts_reference_resolves_a_narrow_action_beside_wide_ones():
    """Regression (a CI draw of the property test): a width ratio of 1400 left the adaptive-quadrature
    reference 1.5e-6 off, the kernel right; both now agree with quadrature over each action's own range."""
    from scipy.integrate import quad
    from scipy.stats import norm

    mean = np.array([[1.14345302, -0.452611, 0.43048575, 0.25093257]])
    std = np.array([[1.04255706e-03, 4.70144613e-01, 1.45689449e+00, 3.34353153e-01]])

    def own_range(a):
        def f(t):
            return norm.pdf(t, mean[0, a], std[0, a]) * np.prod(
                [norm.cdf(t, mean[0, c], std[0, c]) for c in range(4) if c != a])
        return quad(f, mean[0, a] - 12 * std[0, a], mean[0, a] + 12 * std[0, a], epsabs=1e-14, epsrel=1e-12,
                    limit=500)[0]

    exact = np.array([own_range(a) for a in range(4)])
    np.testing.assert_allclose(ref.ts_probabilities(mean, std), exact[None, :], atol=1e-9)
    np.testing.assert_allclose(kernels.ts_probabilities(mean, std, *GL), exact[None, :], atol=1e-9)
