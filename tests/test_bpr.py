"""BPR: the Numba SGD step against its numpy reference, the sampler's guarantees, learning, contract."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import persona as ps
from contract import RecommenderContract
from persona.data import IdMap, Interactions
from persona.kernels import _bpr_reference as ref
from persona.models.bpr import BPR
from strategies import sparse_matrices

kernels = pytest.importorskip("persona.kernels.bpr")


def inter_from_csr(m: sp.csr_matrix) -> Interactions:
    m = sp.csr_matrix(m)
    users = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    return Interactions(IdMap(np.arange(m.shape[0])), IdMap(np.arange(m.shape[1])), users, m.indices, m.data)


def planted(seed=0, n_users=300, n_items=120, rank=3, per_user=12):
    """Users pick items by a low-rank preference (plus noise): BPR's own model class."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n_users, rank))
    v = rng.normal(size=(n_items, rank))
    pref = u @ v.T + 0.3 * rng.normal(size=(n_users, n_items))
    top = np.argsort(-pref, axis=1)[:, : 2 * per_user]
    rows, cols = [], []
    for r in range(n_users):
        picks = rng.choice(top[r], size=per_user, replace=False)
        rows += [r] * per_user
        cols += picks.tolist()
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    return m, pref


# ------------------------------------------------------------------ the SGD step
@st.composite
def factor_problems(draw):
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(2, 8))
    f = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([0.01, 0.5, 3.0]))  # 3.0: saturated sigmoids
    user_f = (rng.normal(size=(n_users, f + 1)) * scale).astype(np.float32)
    user_f[:, f] = 1.0
    item_f = (rng.normal(size=(n_items, f + 1)) * scale).astype(np.float32)
    n = draw(st.integers(1, 12))
    users = rng.integers(0, n_users, n).astype(np.int32)
    pos = rng.integers(0, n_items, n).astype(np.int32)
    neg = ((pos + rng.integers(1, n_items, n)) % n_items).astype(np.int32)  # j != i
    lr = draw(st.sampled_from([0.001, 0.05, 0.5]))
    reg = draw(st.sampled_from([0.0, 0.01, 0.3]))
    return user_f, item_f, users, pos, neg, lr, reg


@settings(max_examples=80, deadline=None)
@given(factor_problems())
def test_kernel_update_equals_numpy_reference(problem):
    user_f, item_f, users, pos, neg, lr, reg = problem
    ku, ki = user_f.copy(), item_f.copy()
    k_loss = kernels.bpr_update_triples(ku, ki, users, pos, neg, lr, reg)
    ru, ri = user_f.copy(), item_f.copy()
    r_loss = [ref.bpr_update_reference(ru, ri, int(u), int(i), int(j), lr, reg)
              for u, i, j in zip(users, pos, neg)]
    np.testing.assert_allclose(ku, ru, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ki, ri, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(k_loss, r_loss, rtol=1e-5, atol=1e-7)
    assert np.all(ku[:, -1] == 1.0), "the constant user column must never move"


def test_reference_update_is_a_gradient_step_of_the_loss():
    """The reference itself: one step == params - lr * numerical gradient of bpr_loss on the triple."""
    rng = np.random.default_rng(1)
    f, lr, reg = 4, 0.1, 0.05
    user_f = rng.normal(size=(3, f + 1))
    user_f[:, f] = 1.0
    item_f = rng.normal(size=(5, f + 1))
    u, i, j = 1, 2, 4

    def loss(uf, itf):
        return ref.bpr_loss(uf, itf, [u], [i], [j], regularization=reg)

    eps = 1e-6
    expect_u, expect_i = user_f.copy(), item_f.copy()
    for f_ in range(f):  # the constant column is not a parameter
        d = np.zeros_like(user_f)
        d[u, f_] = eps
        expect_u[u, f_] -= lr * (loss(user_f + d, item_f) - loss(user_f - d, item_f)) / (2 * eps)
    for row in (i, j):
        for f_ in range(f + 1):
            d = np.zeros_like(item_f)
            d[row, f_] = eps
            expect_i[row, f_] -= lr * (loss(user_f, item_f + d) - loss(user_f, item_f - d)) / (2 * eps)
    got_u, got_i = user_f.copy(), item_f.copy()
    ref.bpr_update_reference(got_u, got_i, u, i, j, lr, reg)
    np.testing.assert_allclose(got_u, expect_u, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got_i, expect_i, rtol=1e-6, atol=1e-8)


def test_bpr_loss_values():
    uf = np.array([[1.0, 0.0, 1.0]])
    itf = np.array([[2.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    x = 2.0 + 0.5
    assert ref.bpr_loss(uf, itf, [0], [0], [1]) == pytest.approx(np.log1p(np.exp(-x)))
    assert ref.bpr_loss(uf, itf, [0], [1], [1]) == pytest.approx(np.log(2.0))
    assert ref.bpr_pair_accuracy(uf, itf, [0, 0], [0, 1], [1, 0]) == 0.5
    assert ref.bpr_loss(uf, itf, [], [], []) == 0.0


# ------------------------------------------------------------------ negative sampling
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sparse_matrices(max_rows=25, max_cols=25, min_rows=1, min_cols=1, sum_duplicates=True),
       st.booleans(), st.integers(0, 2 ** 62))
def test_negatives_are_never_positives(m, use_pop, seed):
    m.sort_indices()
    n_users, n_items = m.shape
    indptr = m.indptr.astype(np.int64)
    indices = m.indices.astype(np.int32)
    counts = np.bincount(indices, minlength=n_items)
    cdf = kernels.popularity_cdf(counts) if use_pop else np.zeros(1)
    users = np.repeat(np.arange(n_users, dtype=np.int32), 20)
    if use_pop and counts.sum() == 0:
        return  # no popularity mass: the model never samples here (it refuses empty data)
    neg = kernels.sample_negatives(indptr, indices, users, n_items, cdf, use_pop, seed, kernels.MAX_NEGATIVE_TRIES)
    for u, j in zip(users, neg):
        row = set(indices[indptr[u]:indptr[u + 1]].tolist())
        candidates = set(range(n_items)) - row
        if use_pop:
            candidates = {c for c in candidates if counts[c] > 0}
        if j >= 0:
            assert j not in row, f"user {u} got its own item {j} as a negative"
            assert j in candidates
        elif not use_pop:
            # uniform draws fail 64 times in a row only when nothing is left to draw
            assert not candidates
        if not candidates:
            assert j == -1


def test_popularity_sampling_follows_count_to_the_075():
    from scipy.stats import chisquare

    rng = np.random.default_rng(0)
    n_users, n_items = 400, 30
    # item i is held by about (i + 1) * 12 users: a spread of popularities
    p_item = np.linspace(0.03, 0.9, n_items)
    dense = rng.random((n_users, n_items)) < p_item
    dense[0] = False
    dense[0, [3, 17]] = True  # the sampling user: two positives to reject
    m = sp.csr_matrix(dense.astype(np.float32))
    m.sort_indices()
    counts = np.bincount(m.indices, minlength=n_items)
    cdf = kernels.popularity_cdf(counts)
    draws = 200_000
    neg = kernels.sample_negatives(m.indptr.astype(np.int64), m.indices.astype(np.int32),
                                   np.zeros(draws, np.int32), n_items, cdf, True, 12345, 64)
    assert neg.min() >= 0 and not np.isin(neg, [3, 17]).any()
    observed = np.bincount(neg, minlength=n_items)
    w = counts.astype(float) ** 0.75
    w[[3, 17]] = 0
    expected = w / w.sum() * draws
    keep = expected > 0
    assert chisquare(observed[keep], expected[keep]).pvalue > 1e-3
    np.testing.assert_allclose(observed[keep] / draws, expected[keep] / draws, atol=0.004)
    # and not proportional to the raw counts: the 0.75 flattens the head
    raw = counts.astype(float)
    raw[[3, 17]] = 0
    assert chisquare(observed[keep], (raw / raw.sum() * draws)[keep]).pvalue < 1e-6

    uni = kernels.sample_negatives(m.indptr.astype(np.int64), m.indices.astype(np.int32),
                                   np.zeros(60_000, np.int32), n_items, np.zeros(1), False, 7, 64)
    obs = np.bincount(uni, minlength=n_items)
    assert obs[3] == obs[17] == 0
    assert chisquare(np.delete(obs, [3, 17])).pvalue > 1e-3


# ------------------------------------------------------------------ learning
def test_loss_falls_and_pair_accuracy_rises_on_a_planted_problem():
    m, pref = planted()
    model = BPR(factors=8, iterations=40, learning_rate=0.05, random_state=0, num_threads=1).fit(inter_from_csr(m))
    loss, acc = model.history_["loss"], model.history_["pair_accuracy"]
    assert len(loss) == 40
    assert np.mean(loss[-5:]) < 0.6 * np.mean(loss[:3])
    assert np.mean(acc[-5:]) > np.mean(acc[:3]) + 0.15
    # held out: the planted preference orders fresh pairs, and the model agrees with it
    rng = np.random.default_rng(9)
    users = rng.integers(0, m.shape[0], 4000)
    a, b = rng.integers(0, m.shape[1], (2, 4000))
    better = np.where(pref[users, a] > pref[users, b], a, b)
    worse = np.where(better == a, b, a)
    keep = np.abs(pref[users, a] - pref[users, b]) > 1.0
    acc_model = ref.bpr_pair_accuracy(model.user_factors_, model.item_factors_,
                                      users[keep], better[keep], worse[keep])
    assert acc_model > 0.8
    untrained = BPR(factors=8, iterations=1, learning_rate=1e-6, random_state=0, num_threads=1).fit(
        inter_from_csr(m))
    assert ref.bpr_loss(model.user_factors_, model.item_factors_, users[keep], better[keep], worse[keep]) < \
        ref.bpr_loss(untrained.user_factors_, untrained.item_factors_, users[keep], better[keep], worse[keep])


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_one_thread_is_deterministic(sampling):
    m, _ = planted(seed=2, n_users=120, n_items=50)
    inter = inter_from_csr(m)

    def fit(seed):
        return BPR(factors=6, iterations=5, random_state=seed, num_threads=1, negative_sampling=sampling).fit(inter)

    a, b, c = fit(7), fit(7), fit(8)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    assert a.history_ == b.history_
    assert not np.array_equal(a.item_factors_, c.item_factors_)


def test_factor_layout_and_cold_rows():
    m = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    model = BPR(factors=3, iterations=3, random_state=0, num_threads=1).fit(inter_from_csr(m))
    assert model.user_factors_.shape == (3, 4) and model.item_factors_.shape == (4, 4)
    assert model.user_factors_.dtype == model.item_factors_.dtype == np.float32
    assert np.all(model.user_factors_[:, -1] == 1.0)
    assert np.all(model.user_factors_[2, :-1] == 0), "a user without data keeps a zero latent vector"
    # uniform negatives reach items nobody has: they only ever lose, so their bias goes down
    assert np.all(model.item_factors_[2:, -1] < 0)
    pop = BPR(factors=3, iterations=3, random_state=0, num_threads=1, negative_sampling="popularity")
    pop.fit(inter_from_csr(m))
    assert np.all(pop.item_factors_[2:] == 0), "popularity sampling never draws an item nobody has"
    scores = model._score_users(np.array([0]))
    np.testing.assert_allclose(scores[0], model.item_factors_ @ model.user_factors_[0], rtol=1e-6)


def test_parallel_fit_learns_too():
    m, _ = planted(seed=3, n_users=200, n_items=60)
    model = BPR(factors=8, iterations=15, random_state=0, num_threads=2).fit(inter_from_csr(m))
    assert model.history_["pair_accuracy"][-1] > 0.8


def test_show_progress(capsys):
    m, _ = planted(seed=4, n_users=40, n_items=20, per_user=4)
    BPR(factors=4, iterations=2, random_state=0, num_threads=1, show_progress=True).fit(inter_from_csr(m))
    err = capsys.readouterr().err
    assert "BPR" in err and "loss" in err and "correct" in err


def test_bpr_beats_most_popular_on_the_synthetic_shop():
    shop = ps.datasets.synthetic_shop(n_users=1500, n_items=300, seed=3)
    train, valid, test = ps.split.leave_last_out(shop.interactions, new_items=True)
    full = train.concat(valid)
    pop = ps.evaluate(ps.MostPopular().fit(full), test, k=(10,))["hr@10"]
    bpr = ps.evaluate(BPR(factors=32, iterations=50, random_state=0, num_threads=1).fit(full), test,
                      k=(10,))["hr@10"]
    assert bpr > 1.2 * pop, (bpr, pop)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("params, match", [
    ({"factors": 0}, "factors"), ({"factors": -3}, "factors"), ({"factors": 2.5}, "factors"),
    ({"learning_rate": 0}, "learning_rate"), ({"learning_rate": -0.1}, "learning_rate"),
    ({"learning_rate": float("nan")}, "learning_rate"), ({"regularization": -0.01}, "regularization"),
    ({"regularization": "0.1"}, "regularization"),
    ({"iterations": 0}, "iterations"), ({"negative_sampling": "hard"}, "negative_sampling"),
    ({"num_threads": -1}, "num_threads"),
])
def test_bad_parameters(params, match, data):
    with pytest.raises(ps.ParameterError, match=match):
        BPR(**params).fit(data)


@pytest.mark.parametrize("weight, match", [(-2.0, "non-negative"), (np.nan, "finite"), (np.inf, "finite")])
def test_negative_and_non_finite_weights_are_refused(weight, match):
    # one check for every model (persona._validate.check_weights); inf was let through before issue 13
    m = sp.csr_matrix(np.array([[1.0, weight], [1.0, 0.0]], dtype=np.float32))
    with pytest.raises(ps.DataError, match=match):
        BPR(factors=2, iterations=1).fit(inter_from_csr(m))


def test_all_zero_weights_are_refused():
    inter = Interactions(IdMap(["a"]), IdMap(["x", "y"]), [0], [1], [0.0])
    with pytest.raises(ps.DataError, match="all 0"):
        BPR(factors=2, iterations=1).fit(inter)


def test_import_does_not_load_numba():
    import subprocess
    import sys

    code = "import sys, persona.models.bpr, persona.models.ease; assert 'numba' not in sys.modules, 'numba'"
    subprocess.run([sys.executable, "-c", code], check=True)


class TestBPRContract(RecommenderContract):
    def make_model(self):
        return BPR(factors=8, iterations=20, random_state=0, num_threads=1)

    def test_similar_items_ignore_the_bias_column(self, fitted):
        v = fitted.item_factors_[:, :-1]
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        i = fitted.item_map_.index_of("i001")
        ids, scores = fitted.similar_items("i001", n=3)
        np.testing.assert_allclose(scores, np.sort(np.delete(v @ v[i], i))[::-1][:3], rtol=1e-5)
