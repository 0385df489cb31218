"""EASE: closed form against a plain numpy inverse, what each question is answered with, contract."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import persona as ps
from contract import RecommenderContract
from persona.data import IdMap, Interactions
from persona.models.ease import EASE
from strategies import sparse_matrices


def inter_from_csr(m: sp.csr_matrix) -> Interactions:
    m = sp.csr_matrix(m)
    users = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    return Interactions(IdMap(np.arange(m.shape[0])), IdMap(np.arange(m.shape[1])), users, m.indices, m.data)


def numpy_ease(m: sp.csr_matrix, lam: float) -> np.ndarray:
    """The textbook EASE in float64: X binarised, P = inv(X^T X + lam I), B = I - P / diag(P)."""
    x = (m.toarray() > 0).astype(np.float64)
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


@settings(max_examples=60, deadline=None)
@given(sparse_matrices(max_rows=40, max_cols=30, min_rows=1, min_cols=1),
       st.sampled_from([0.3, 2.0, 10.0, 500.0]))
def test_matches_numpy_inverse(m, lam):
    m.data = np.abs(m.data)  # weights, repeats and ties are fine; EASE binarises
    model = EASE(regularization=lam).fit(inter_from_csr(m)) if m.nnz else None
    if model is None:
        return  # no events: fit refuses, tested elsewhere
    expect = numpy_ease(m, lam)
    got = model.B_
    assert got.dtype == np.float32 and got.shape == expect.shape
    assert np.all(np.diag(got) == 0)
    scale = max(np.abs(expect).max(), 1e-12)
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("lam, precision", [(0.5, "float64"), (1e4, "float32")])
def test_precision_follows_conditioning(lam, precision):
    rng = np.random.default_rng(0)
    m = sp.csr_matrix((rng.random((300, 80)) < 0.2).astype(np.float32))
    model = EASE(regularization=lam).fit(inter_from_csr(m))
    assert model.precision_ == precision
    expect = numpy_ease(m, lam)
    np.testing.assert_allclose(model.B_, expect, rtol=1e-4, atol=1e-5 * np.abs(expect).max())


def _fitted_small(seed=1, lam=5.0):
    rng = np.random.default_rng(seed)
    dense = (rng.random((50, 25)) < 0.25) * rng.integers(1, 4, (50, 25))  # weights 1..3
    m = sp.csr_matrix(dense.astype(np.float32))
    return m, EASE(regularization=lam).fit(inter_from_csr(m))


def test_scores_are_binary_history_times_b():
    m, model = _fitted_small()
    xb = (m.toarray() > 0).astype(np.float64)
    b = model.B_.astype(np.float64)
    users = np.array([0, 7, 3])
    np.testing.assert_allclose(model._score_users(users), xb[users] @ b, rtol=1e-5, atol=1e-6)
    # a history (with a repeat) scores like the binarised row of the same items
    hist = [np.array([2, 5, 2]), np.array([], dtype=np.int64)]
    row = np.zeros((2, 25))
    row[0, [2, 5]] = 1
    np.testing.assert_allclose(model._score_histories(hist), row @ b, rtol=1e-5, atol=1e-6)
    # ids in, ids out: recommend_for_history agrees with recommend for the same (binarised) items
    u = 4
    seen = model.item_map_.ids[np.flatnonzero(xb[u])]
    a_ids, a_scores = model.recommend(u, n=5)
    h_ids, h_scores = model.recommend_for_history(seen.tolist(), n=5)
    np.testing.assert_array_equal(a_ids, h_ids)
    np.testing.assert_allclose(a_scores, h_scores, rtol=1e-5)


def test_similar_items_rank_by_rows_of_b():
    m, model = _fitted_small()
    b = model.B_
    ids, scores = model.similar_items(3, n=4)
    expect = np.argsort(-np.delete(b[3], 3), kind="stable")[:4]
    expect = np.where(expect >= 3, expect + 1, expect)
    np.testing.assert_array_equal(ids, expect)
    np.testing.assert_allclose(scores, b[3, expect])
    h_ids, _ = model.recommend_for_history([3], n=4)
    np.testing.assert_array_equal(ids, h_ids)


def test_recommend_users_scores_x_times_b_columns():
    m, model = _fitted_small()
    xb = (m.toarray() > 0).astype(np.float64)
    want = xb @ model.B_[:, [1, 6]].astype(np.float64).sum(axis=1)
    users, scores = model.recommend_users([1, 6], n=5)
    np.testing.assert_array_equal(users, np.argsort(-want, kind="stable")[:5])
    np.testing.assert_allclose(scores, np.sort(want)[::-1][:5], rtol=1e-5, atol=1e-6)


def test_memory_refusal_names_the_size_and_alternatives(data):
    with pytest.raises(ps.ParameterError) as err:
        EASE(max_items=10).fit(data)
    msg = str(err.value)
    assert "40 x 40" in msg and "GB" in msg and "ItemKNN" in msg and "ALS" in msg and "max_items=40" in msg
    rng = np.random.default_rng(0)
    m = sp.csr_matrix((rng.random((5, 30_000)) < 0.001).astype(np.float32))
    with pytest.raises(ps.ParameterError, match=r"about 10\.8 GB"):
        EASE().fit(inter_from_csr(m))


@pytest.mark.parametrize("params, match", [
    ({"regularization": -1.0}, "regularization"), ({"regularization": float("nan")}, "regularization"),
    ({"regularization": "500"}, "regularization"), ({"max_items": 0}, "max_items"),
    ({"num_threads": -2}, "num_threads"),
])
def test_bad_parameters(params, match, data):
    with pytest.raises(ps.ParameterError, match=match):
        EASE(**params).fit(data)


def test_zero_regularization_with_an_empty_item_is_refused(data):
    # the contract data's catalogue holds 4 items nobody touched: X^T X is singular
    with pytest.raises(ps.ParameterError, match="regularization > 0"):
        EASE(regularization=0.0).fit(data)


@pytest.mark.parametrize("weight, match", [(-2.0, "non-negative"), (np.nan, "finite"), (np.inf, "finite")])
def test_negative_and_non_finite_weights_are_refused(weight, match):
    # one check for every model (persona._validate.check_weights); inf was let through before issue 13
    m = sp.csr_matrix(np.array([[1.0, weight], [1.0, 0.0]], dtype=np.float32))
    with pytest.raises(ps.DataError, match=match):
        EASE().fit(inter_from_csr(m))


def test_num_threads_and_progress(capsys):
    m, ref = _fitted_small()
    model = EASE(regularization=5.0, num_threads=1, show_progress=True).fit(inter_from_csr(m))
    # one BLAS thread sums in another order: equal up to float32 rounding
    np.testing.assert_allclose(model.B_, ref.B_, rtol=1e-4, atol=1e-6)
    assert "EASE" in capsys.readouterr().err


def test_ease_beats_most_popular_on_the_synthetic_shop():
    shop = ps.datasets.synthetic_shop(n_users=1500, n_items=300, seed=3)
    train, valid, test = ps.split.leave_last_out(shop.interactions, new_items=True)
    full = train.concat(valid)
    pop = ps.evaluate(ps.MostPopular().fit(full), test, k=(10,))["hr@10"]
    ease = ps.evaluate(EASE(regularization=200.0).fit(full), test, k=(10,))["hr@10"]
    assert ease >= 1.3 * pop, (ease, pop)


def test_save_load_keeps_b_and_precision(tmp_path):
    m, model = _fitted_small()
    loaded = ps.load(model.save(tmp_path / "ease.persona"))
    np.testing.assert_array_equal(loaded.B_, model.B_)
    assert loaded.precision_ == model.precision_
    np.testing.assert_array_equal(loaded.recommend_users([1, 6], n=5)[0], model.recommend_users([1, 6], n=5)[0])


class TestEASEContract(RecommenderContract):
    def make_model(self):
        return EASE(regularization=10.0)
