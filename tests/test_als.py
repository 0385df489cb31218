"""ALS: the kernels against their numpy references, and the model's behaviour and quality."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import persona as ps
from contract import RecommenderContract
from persona.data import IdMap, Interactions
from persona.kernels import als as K
from persona.kernels._als_reference import als_half_step_reference, als_loss_reference
from persona.models.als import ALS
from strategies import sparse_matrices

KERNEL_SETTINGS = settings(max_examples=60, deadline=None)


def _factors(seed: int, n: int, f: int, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, f)) * scale).astype(np.float32)


# ----------------------------------------------------------------------------------------------- kernels
@KERNEL_SETTINGS
@given(W=sparse_matrices(max_rows=12, max_cols=15, sum_duplicates=True, explicit_zeros=True),
       f=st.integers(1, 6), seed=st.integers(0, 2**16), reg=st.sampled_from([0.05, 0.5, 2.0]),
       alpha=st.sampled_from([0.0, 1.0, 3.0]))
def test_cholesky_half_step_equals_exact_least_squares(W, f, seed, reg, alpha):
    Y = _factors(seed, W.shape[1], f)
    X = _factors(seed + 1, W.shape[0], f)  # garbage in X must not matter
    K.als_half_step_cholesky(W.indptr, W.indices, W.data, X, Y, None, reg, alpha)
    expected = als_half_step_reference(W, Y, reg, alpha)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(X, expected, rtol=1e-4, atol=1e-5 * scale)
    empty = np.diff(W.indptr) == 0
    assert np.all(X[empty] == 0), "rows without entries solve to exactly 0"


@KERNEL_SETTINGS
@given(W=sparse_matrices(max_rows=12, max_cols=15, sum_duplicates=True,
                         values=st.floats(0.125, 10.0, width=32)),
       f=st.integers(1, 6), seed=st.integers(0, 2**16), reg=st.sampled_from([0.1, 1.0]),
       alpha=st.sampled_from([0.0, 1.0, 2.0]))
def test_cg_with_f_steps_converges_to_exact_solution(W, f, seed, reg, alpha):
    Y = _factors(seed, W.shape[1], f, scale=0.5)
    X = _factors(seed + 1, W.shape[0], f, scale=0.1)  # warm start anywhere
    # In exact arithmetic f steps solve an f-dimensional system; in float32 the search directions
    # lose orthogonality on systems with condition ~1e3 (f steps can leave 50% error, in numpy too),
    # so "enough steps" is a few times f.
    K.als_half_step_cg(W.indptr, W.indices, W.data, X, Y, None, reg, alpha, cg_steps=3 * f)
    expected = als_half_step_reference(W, Y, reg, alpha)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(X, expected, rtol=1e-3, atol=1e-3 * scale)


@KERNEL_SETTINGS
@given(W=sparse_matrices(min_rows=1, max_rows=1, max_cols=20, sum_duplicates=True),
       f=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_single_user(W, f, seed):
    Y = _factors(seed, W.shape[1], f)
    X = np.zeros((1, f), dtype=np.float32)
    K.als_half_step_cholesky(W.indptr, W.indices, W.data, X, Y, None, 0.3, 1.0)
    np.testing.assert_allclose(X, als_half_step_reference(W, Y, 0.3, 1.0), rtol=1e-4, atol=1e-5)


@KERNEL_SETTINGS
@given(W=sparse_matrices(max_rows=10, max_cols=10, sum_duplicates=True, explicit_zeros=True),
       f=st.integers(1, 4), seed=st.integers(0, 2**16), alpha=st.sampled_from([0.0, 2.0]))
def test_loss_equals_dense_reference(W, f, seed, alpha):
    X = _factors(seed, W.shape[0], f)
    Y = _factors(seed + 1, W.shape[1], f)
    got = K.als_loss(W.indptr, W.indices, W.data, X, Y, 0.1, alpha)
    np.testing.assert_allclose(got, als_loss_reference(W, X, Y, 0.1, alpha), rtol=1e-9, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(n=st.sampled_from([0, 1, 5, 255, 256, 257, 1000, 9000]), f=st.integers(1, 9), seed=st.integers(0, 99))
def test_gramian_equals_numpy_and_ignores_thread_count(n, f, seed):
    import numba

    Y = _factors(seed, n, f)
    G = K.gramian(Y)
    np.testing.assert_allclose(G, Y.T.astype(np.float64) @ Y.astype(np.float64), rtol=1e-5, atol=1e-4)
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        np.testing.assert_array_equal(K.gramian(Y), G)
    finally:
        numba.set_num_threads(old)


def test_cg_batch_equals_single_rows():
    W = sp.random(40, 30, density=0.3, random_state=1, format="csr", dtype=np.float32)
    Y = _factors(0, 30, 8)
    X0 = _factors(1, 40, 8, scale=0.01)
    X = X0.copy()
    K.als_half_step_cg(W.indptr, W.indices, W.data, X, Y, None, 0.1, 2.0, 3)
    for u in range(40):
        row = W[u]
        x = X0[u:u + 1].copy()
        K.als_half_step_cg(row.indptr, row.indices, row.data, x, Y, None, 0.1, 2.0, 3)
        np.testing.assert_array_equal(x[0], X[u])


def test_kernel_rejects_bad_arguments():
    W = sp.csr_matrix(np.eye(3, dtype=np.float32))
    Y = np.ones((3, 2), dtype=np.float32)
    with pytest.raises(ps.ParameterError, match="float32"):
        K.als_half_step_cg(W.indptr, W.indices, W.data, np.zeros((3, 2)), Y)  # float64 X
    with pytest.raises(ps.ParameterError, match="indptr"):
        K.als_half_step_cg(W.indptr, W.indices, W.data, np.zeros((4, 2), np.float32), Y)
    with pytest.raises(ps.ParameterError, match="column indices"):
        K.als_half_step_cholesky(W.indptr, W.indices, W.data, np.zeros((3, 2), np.float32), Y[:2])
    with pytest.raises(ps.ParameterError, match="cg_steps"):
        K.als_half_step_cg(W.indptr, W.indices, W.data, np.zeros((3, 2), np.float32), Y, cg_steps=0)


# ----------------------------------------------------------------------------------------------- model
def _planted(seed=0, n_users=80, n_items=50, rank=3):
    """Interactions whose observed pattern comes from a rank-``rank`` non-negative model."""
    rng = np.random.default_rng(seed)
    U = rng.gamma(1.0, 1.0, (n_users, rank))
    V = rng.gamma(1.0, 1.0, (n_items, rank))
    P = U @ V.T
    users, items = np.nonzero(P > np.quantile(P, 0.8))
    counts = rng.integers(1, 4, len(users)).astype(np.float32)
    return Interactions(IdMap(np.arange(n_users)), IdMap(np.arange(n_items)), users=users, items=items,
                        weights=counts)


def test_loss_decreases_on_planted_low_rank_problem():
    inter = _planted()
    exact = ALS(factors=4, iterations=8, regularization=0.1, solver="cholesky", random_state=0)
    exact.fit(inter, compute_loss=True)
    losses = np.array(exact.loss_history_)
    assert len(losses) == 8
    # each exact half-step minimises the objective over one block, so it never goes up
    assert np.all(np.diff(losses) <= 1e-6 * losses[:-1]), losses
    cg = ALS(factors=4, iterations=8, regularization=0.1, random_state=0).fit(inter, compute_loss=True)
    assert cg.loss_history_[-1] < cg.loss_history_[0]
    # three warm-started CG steps end close to the exact optimum
    assert cg.loss_history_[-1] <= 1.02 * losses[-1]
    # and a rank-4 model explains most of the planted pattern: far below predicting 0 everywhere
    W = inter.matrix
    zero = float(np.sum(1 + W.data)) + 0.0
    assert losses[-1] < 0.5 * zero


def test_deterministic_for_seed_and_threads():
    inter = _planted(1)
    a = ALS(factors=6, iterations=4, random_state=7, num_threads=2).fit(inter)
    b = ALS(factors=6, iterations=4, random_state=7, num_threads=2).fit(inter)
    c = ALS(factors=6, iterations=4, random_state=7, num_threads=1).fit(inter)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    # rows are solved independently, so even the thread count does not change the factors
    np.testing.assert_array_equal(a.item_factors_, c.item_factors_)
    d = ALS(factors=6, iterations=4, random_state=8, num_threads=2).fit(inter)
    assert not np.array_equal(a.item_factors_, d.item_factors_)


def test_num_threads_is_restored():
    import numba

    before = numba.get_num_threads()
    ALS(factors=2, iterations=1, random_state=0, num_threads=1).fit(_planted(2))
    assert numba.get_num_threads() == before


def test_progress_bar_shows_loss(capsys):
    model = ALS(factors=2, iterations=2, random_state=0, show_progress=True).fit(_planted(6), compute_loss=True)
    err = capsys.readouterr().err
    assert "ALS" in err and "loss=" in err
    assert len(model.loss_history_) == 2
    assert ALS(factors=2, iterations=2, random_state=0).fit(_planted(6)).loss_history_ == []


def test_fold_in_is_the_exact_solve_and_matches_fitted_users():
    inter = _planted(3, n_users=120, n_items=60)
    model = ALS(factors=6, iterations=15, regularization=0.1, solver="cholesky", random_state=0).fit(inter)
    W = model.user_items_
    ids = inter.item_ids
    overlaps = []
    for u in range(0, 120, 4):
        row = W[u]
        hist = ids[row.indices]
        # recalculate_user with the training weights is the exact solve against the item factors
        v = model.recalculate_user(hist, weights=row.data)
        ref = als_half_step_reference(row, model.item_factors_, 0.1, 1.0)[0]
        np.testing.assert_allclose(v, ref, rtol=1e-4, atol=1e-5)
        # ... and recommend_for_history (weights 1) ranks like the fitted user
        a = set(model.recommend(u, n=10)[0].tolist())
        b = set(model.recommend_for_history(np.repeat(hist, row.data.astype(int)), n=10)[0].tolist())
        overlaps.append(len(a & b) / 10)
    assert np.mean(overlaps) >= 0.9, overlaps  # measured 0.997


def test_recalculate_user_has_no_side_effects_and_checks_weights():
    inter = _planted(4)
    model = ALS(factors=4, iterations=3, random_state=0).fit(inter)
    before = model.user_factors_.copy(), model.n_users
    v = model.recalculate_user([1, 2, 2, 999])  # 999 unknown: ignored; 2 twice: weight 2
    w = model.recalculate_user([1, 2], weights=[1.0, 2.0])
    np.testing.assert_allclose(v, w, rtol=1e-6)
    assert v.shape == (4,) and v.dtype == np.float32
    np.testing.assert_array_equal(model.user_factors_, before[0])
    assert model.n_users == before[1]
    assert not model.recalculate_user([]).any()
    with pytest.raises(ps.DataError, match="non-negative"):
        model.recalculate_user([1], weights=[-1.0])
    with pytest.raises(ps.ParameterError, match="one weight per"):
        model.recalculate_user([1, 2], weights=[1.0])


@pytest.fixture(scope="module")
def shop_split():
    shop = ps.datasets.synthetic_shop(n_users=1500, n_items=300, seed=3)
    train, valid, test = ps.split.leave_last_out(shop.interactions, new_items=True)
    return train.concat(valid), test


SHOP_PARAMS = dict(factors=32, iterations=10, regularization=1.0, alpha=1.0, random_state=0)


def test_als_clearly_beats_most_popular(shop_split):
    data, test = shop_split
    als = ps.evaluate(ALS(**SHOP_PARAMS).fit(data), test, k=10, metrics=("hr", "ndcg"))
    pop = ps.evaluate(ps.MostPopular().fit(data), test, k=10, metrics=("hr", "ndcg"))
    assert als["hr@10"] >= 1.5 * pop["hr@10"], (als, pop)  # measured 0.35 vs 0.14
    assert als["ndcg@10"] >= 1.5 * pop["ndcg@10"]


def test_partial_fit_users_stays_close_to_full_refit(shop_split):
    """20% of users arrive after the fit; folding them in keeps HR@10 within 0.03 of a refit."""
    data, test = shop_split
    rng = np.random.default_rng(0)
    new = rng.random(data.n_users) < 0.2
    ev_new = new[data.users]
    umap = IdMap(data.user_ids[~new])
    base = Interactions(umap, data.item_map, users=umap.lookup(data.user_ids[data.users[~ev_new]]),
                        items=data.items[~ev_new], weights=data.weights[~ev_new])
    inc = ALS(**SHOP_PARAMS).fit(base)
    assert inc.n_users == int((~new).sum())
    old_factors = inc.user_factors_.copy()
    inc.partial_fit_users(data.subset(ev_new))
    assert inc.n_users == data.n_users
    np.testing.assert_array_equal(inc.user_factors_[: len(old_factors)], old_factors)
    new_ids = data.user_ids[new]
    np.testing.assert_array_equal(np.sort(inc.user_map_.ids[len(old_factors):]), np.sort(new_ids))
    assert inc.user_items_.shape == (data.n_users, data.n_items)
    full = ALS(**SHOP_PARAMS).fit(data)
    hr_full = ps.evaluate(full, test, k=10, metrics=("hr",))["hr@10"]
    hr_inc = ps.evaluate(inc, test, k=10, metrics=("hr",))["hr@10"]  # measured 0.342 vs 0.352
    assert abs(hr_full - hr_inc) <= 0.03, (hr_full, hr_inc)
    # the new users' vectors are the exact solves of their rows against the fixed items
    u = int(inc.user_map_.index_of(new_ids[0]))
    row = inc.user_items_[u]
    ref = als_half_step_reference(row, inc.item_factors_, 1.0, 1.0)[0]
    np.testing.assert_allclose(inc.user_factors_[u], ref, rtol=1e-4, atol=1e-5)


def test_partial_fit_users_replace_and_add():
    inter = Interactions.from_records([("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "c"), ("u3", "a")])
    model = ALS(factors=2, iterations=3, random_state=0).fit(inter)
    more = Interactions.from_records([("u1", "c")])
    added = ALS(factors=2, iterations=3, random_state=0).fit(inter).partial_fit_users(more, replace=False)
    assert sorted(added.item_map_.to_ids(added.user_items_[0].indices).tolist()) == ["a", "b", "c"]
    model.partial_fit_users(more)  # replace: u1's history is now just "c"
    assert model.item_map_.to_ids(model.user_items_[0].indices).tolist() == ["c"]
    np.testing.assert_allclose(model.user_factors_[0], model.recalculate_user(["c"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(added.user_factors_[0], added.recalculate_user(["a", "b", "c"]),
                               rtol=1e-5, atol=1e-6)


def test_partial_fit_items_appends_new_items():
    inter = Interactions.from_records([("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "c"), ("u3", "a")])
    model = ALS(factors=3, iterations=3, random_state=0).fit(inter)
    new = Interactions.from_records([("u1", "z"), ("u3", "z"), ("nobody", "z")])  # "nobody" is ignored
    model.partial_fit_items(new)
    assert model.n_items == 4 and model.item_map_.ids.tolist() == ["a", "b", "c", "z"]
    assert model.user_items_.shape == (3, 4)
    z = model.item_map_.index_of("z")
    col = model.user_items_[:, z].T.tocsr()
    ref = als_half_step_reference(col, model.user_factors_, model.regularization, model.alpha)[0]
    np.testing.assert_allclose(model.item_factors_[z], ref, rtol=1e-4, atol=1e-6)
    ids, _ = model.recommend("u2", n=2)
    assert set(ids.tolist()) <= {"a", "z"}
    assert "z" not in model.recommend("u1", n=3)[0].tolist()  # seen now


@pytest.mark.parametrize("kwargs, match", [
    (dict(factors=0), "factors"), (dict(iterations=0), "iterations"), (dict(alpha=-1.0), "alpha"),
    (dict(alpha=float("nan")), "alpha"), (dict(cg_steps=0), "cg_steps"), (dict(solver="lu"), "solver"),
    (dict(regularization=-0.1), "regularization"), (dict(num_threads=-1), "num_threads"),
    (dict(random_state="x"), "random_state"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ps.ParameterError, match=match):
        ALS(**kwargs).fit(_planted(5))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_bad_weights_are_data_errors(bad):
    inter = Interactions(IdMap(["a", "b"]), IdMap(["x", "y"]), users=[0, 0, 1], items=[0, 1, 1],
                         weights=[1.0, bad, 1.0])
    with pytest.raises(ps.DataError, match="weight"):
        ALS(factors=2, iterations=1).fit(inter)
    good = Interactions(IdMap(["a", "b"]), IdMap(["x", "y"]), users=[0, 1], items=[0, 1])
    model = ALS(factors=2, iterations=1).fit(good)
    with pytest.raises(ps.DataError, match="weight"):
        model.partial_fit_users(inter)


class TestALSContract(RecommenderContract):
    def make_model(self):
        return ALS(factors=8, iterations=5, random_state=0)


class TestALSCholeskyContract(RecommenderContract):
    def make_model(self):
        return ALS(factors=4, iterations=3, solver="cholesky", random_state=0)


# ----------------------------------------------------------------- count-weighted regularisation (ALS-WR)
@KERNEL_SETTINGS
@given(W=sparse_matrices(max_rows=12, max_cols=15, sum_duplicates=True, explicit_zeros=True),
       f=st.integers(1, 6), seed=st.integers(0, 2**16), reg=st.sampled_from([0.01, 0.1, 1.0]),
       alpha=st.sampled_from([0.0, 1.0, 3.0]))
def test_count_scaled_cholesky_equals_reference(W, f, seed, reg, alpha):
    Y = _factors(seed, W.shape[1], f)
    X = _factors(seed + 1, W.shape[0], f)
    n = np.diff(W.indptr)
    K.als_half_step_cholesky(W.indptr, W.indices, W.data, X, Y, None, 123.0, alpha, row_reg=reg * n)
    expected = als_half_step_reference(W, Y, reg, alpha, scaling="count")
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(X, expected, rtol=1e-4, atol=1e-5 * scale)
    assert np.all(X[n == 0] == 0)


@KERNEL_SETTINGS
@given(W=sparse_matrices(max_rows=12, max_cols=15, sum_duplicates=True,
                         values=st.floats(0.125, 10.0, width=32)),
       f=st.integers(1, 6), seed=st.integers(0, 2**16), reg=st.sampled_from([0.05, 0.5]),
       alpha=st.sampled_from([0.0, 1.0, 2.0]))
def test_count_scaled_cg_converges_to_reference(W, f, seed, reg, alpha):
    Y = _factors(seed, W.shape[1], f, scale=0.5)
    X = _factors(seed + 1, W.shape[0], f, scale=0.1)
    K.als_half_step_cg(W.indptr, W.indices, W.data, X, Y, None, 123.0, alpha, cg_steps=3 * f,
                       row_reg=reg * np.diff(W.indptr))
    expected = als_half_step_reference(W, Y, reg, alpha, scaling="count")
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(X, expected, rtol=1e-3, atol=1e-3 * scale)


@KERNEL_SETTINGS
@given(W=sparse_matrices(max_rows=10, max_cols=10, sum_duplicates=True, explicit_zeros=True),
       f=st.integers(1, 4), seed=st.integers(0, 2**16), alpha=st.sampled_from([0.0, 2.0]))
def test_count_scaled_loss_equals_reference(W, f, seed, alpha):
    X = _factors(seed, W.shape[0], f)
    Y = _factors(seed + 1, W.shape[1], f)
    got = K.als_loss(W.indptr, W.indices, W.data, X, Y, 0.3, alpha, scaling="count")
    np.testing.assert_allclose(got, als_loss_reference(W, X, Y, 0.3, alpha, scaling="count"), rtol=1e-9, atol=1e-9)


def test_count_scaling_by_hand_one_user():
    # one user with items 0 and 2 (weights 1, 2), Y = the first two unit vectors; alpha = 1, reg = 0.1:
    # n_u = 2, so the penalty is 0.2. Row 0 of A: (Y^T Y)_00 = 1, plus alpha*w_0 = 1, plus 0.2 -> 2.2;
    # b_0 = c_0 = 2; column 1 of Y is zero on the user's items: A_11 = 1 + 0.2, b_1 = 0.
    W = sp.csr_matrix(np.array([[1.0, 0.0, 2.0]], dtype=np.float32))
    Y = np.eye(3, 2, dtype=np.float32)
    for solve in (lambda X: K.als_half_step_cholesky(W.indptr, W.indices, W.data, X, Y, reg=9.0, alpha=1.0,
                                                      row_reg=[0.2]),
                  lambda X: K.als_half_step_cg(W.indptr, W.indices, W.data, X, Y, reg=9.0, alpha=1.0, cg_steps=2,
                                               row_reg=[0.2])):
        X = np.zeros((1, 2), dtype=np.float32)
        solve(X)
        np.testing.assert_allclose(X, [[2.0 / 2.2, 0.0]], rtol=1e-6, atol=1e-7)
    # the constant penalty 0.1 gives 2 / 2.1 instead
    X = np.zeros((1, 2), dtype=np.float32)
    K.als_half_step_cholesky(W.indptr, W.indices, W.data, X, Y, reg=0.1, alpha=1.0)
    np.testing.assert_allclose(X, [[2.0 / 2.1, 0.0]], rtol=1e-6)


def test_row_reg_is_checked():
    W = sp.csr_matrix(np.array([[1.0, 0.0]], dtype=np.float32))
    X, Y = np.zeros((1, 1), np.float32), np.ones((2, 1), np.float32)
    for bad, match in (([0.1, 0.2], "one penalty per row"), ([-1.0], "non-negative"), ([np.nan], "non-negative")):
        with pytest.raises(ps.ParameterError, match=match):
            K.als_half_step_cholesky(W.indptr, W.indices, W.data, X, Y, row_reg=bad)
        with pytest.raises(ps.ParameterError, match=match):
            K.als_half_step_cg(W.indptr, W.indices, W.data, X, Y, row_reg=bad)
    with pytest.raises(ps.ParameterError, match="scaling"):
        K.als_loss(W.indptr, W.indices, W.data, X, Y, scaling="rows")


@pytest.mark.parametrize("bad", ["counts", "", None, 1])
def test_regularization_scaling_is_validated(bad):
    with pytest.raises(ps.ParameterError, match="regularization_scaling"):
        ALS(factors=2, iterations=1, regularization_scaling=bad).fit(_planted(5))


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_count_scaling_fit_is_alternating_exact_solves(solver):
    """Each half-step of a count-scaled fit is the reference's count-scaled solve; the fold-in agrees."""
    inter = _planted(3, n_users=60, n_items=30)
    reg = 0.05
    model = ALS(factors=4, iterations=6, regularization=reg, regularization_scaling="count", solver=solver,
                cg_steps=12, random_state=0, num_threads=1).fit(inter, compute_loss=True)
    W = model.user_items_
    X, Y = model.user_factors_, model.item_factors_
    # the last half-step solved the items against the final users
    np.testing.assert_allclose(Y, als_half_step_reference(W.T.tocsr(), X, reg, 1.0, scaling="count"),
                               rtol=1e-3, atol=1e-3 if solver == "cg" else 1e-5)
    constant = ALS(factors=4, iterations=6, regularization=reg, solver=solver, cg_steps=12, random_state=0,
                   num_threads=1).fit(inter)
    assert not np.allclose(constant.item_factors_, Y, atol=1e-3), "count scaling must change the solution"
    hist = np.diff(model.loss_history_)
    assert (hist <= 1e-6 * abs(model.loss_history_[0])).all() if solver == "cholesky" else len(hist) == 5
    # recalculate_user is the count-scaled exact solve against the item factors
    ids = inter.item_ids
    for u in range(0, 60, 7):
        row = W[u]
        v = model.recalculate_user(ids[row.indices], weights=row.data)
        np.testing.assert_allclose(v, als_half_step_reference(row, Y, reg, 1.0, scaling="count")[0],
                                   rtol=1e-4, atol=1e-5)
        if solver == "cholesky":  # ... which is the user's fitted vector up to the last item half-step
            assert np.abs(v - X[u]).max() < 0.05


def test_count_scaling_partial_fit_and_update_use_row_counts():
    inter = Interactions.from_records([("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "c"), ("u3", "a"),
                                       ("u3", "b"), ("u3", "c")])
    params = dict(factors=3, iterations=4, regularization=0.2, regularization_scaling="count", random_state=0)
    model = ALS(**params).fit(inter)
    model.partial_fit_users(Interactions.from_records([("u4", "a"), ("u4", "c")]))
    u4 = model.user_map_.index_of("u4")
    ref = als_half_step_reference(model.user_items_[u4], model.item_factors_, 0.2, 1.0, scaling="count")[0]
    np.testing.assert_allclose(model.user_factors_[u4], ref, rtol=1e-4, atol=1e-6)
    model.partial_fit_items(Interactions.from_records([("u1", "z"), ("u2", "z"), ("u3", "z")]))
    z = model.item_map_.index_of("z")
    col = model.user_items_[:, z].T.tocsr()
    ref = als_half_step_reference(col, model.user_factors_, 0.2, 1.0, scaling="count")[0]
    np.testing.assert_allclose(model.item_factors_[z], ref, rtol=1e-4, atol=1e-6)
    # update: a user's new vector is recalculate_user of their merged history (count-scaled)
    m = ALS(**params).fit(inter).update(Interactions.from_records([("u1", "c"), ("u5", "a"), ("u5", "b")]))
    for user, hist in (("u1", ["a", "b", "c"]), ("u5", ["a", "b"])):
        np.testing.assert_allclose(m.user_factors_[m.user_map_.index_of(user)], m.recalculate_user(hist),
                                   rtol=1e-4, atol=1e-6)


def test_count_scaling_survives_the_artifact(tmp_path):
    model = ALS(factors=3, iterations=3, regularization=0.1, regularization_scaling="count",
                random_state=0).fit(_planted(4))
    model.save(tmp_path / "m")
    loaded = ps.load(tmp_path / "m")
    assert loaded.get_params()["regularization_scaling"] == "count"
    hist = model.item_map_.ids[:3]
    np.testing.assert_allclose(loaded.recalculate_user(hist), model.recalculate_user(hist), rtol=1e-6)
    const = ALS(**{**model.get_params(), "regularization_scaling": "constant"})
    const.fit(_planted(4))
    assert not np.allclose(const.recalculate_user(hist), model.recalculate_user(hist))


class TestALSCountScalingContract(RecommenderContract):
    def make_model(self):
        return ALS(factors=4, iterations=3, regularization=0.05, regularization_scaling="count", random_state=0)


def test_recalculate_user_leaves_out_items_of_weight_zero():
    inter = ps.Interactions.from_records([("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "c"), ("u3", "a"), ("u3", "c")])
    model = ps.ALS(factors=2, iterations=3, solver="cholesky", random_state=0).fit(inter)
    np.testing.assert_array_equal(model.recalculate_user(["a", "b", "c"], weights=[1.0, 2.0, 0.0]),
                                  model.recalculate_user(["a", "b"], weights=[1.0, 2.0]))
    assert not np.array_equal(model.recalculate_user(["a", "b", "c"], weights=[1.0, 2.0, 0.5]),
                              model.recalculate_user(["a", "b"], weights=[1.0, 2.0]))
