"""MF (explicit ratings): the half-step kernel against numpy, rating recovery, biases, rating_metrics."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import persona as ps
from contract import RecommenderContract
from persona.data import IdMap, Interactions
from persona.evaluation.ratings import rating_metrics
from persona.kernels import als as K
from persona.kernels._als_reference import mf_half_step_reference
from persona.models.mf import MF
from strategies import sparse_matrices


@settings(max_examples=60, deadline=None)
@given(R=sparse_matrices(max_rows=12, max_cols=15, sum_duplicates=True, values=st.floats(-5, 5, width=32)),
       f=st.integers(1, 5), seed=st.integers(0, 2**16), reg=st.sampled_from([0.01, 0.1, 1.0]),
       mu=st.sampled_from([0.0, 3.5]))
def test_half_step_equals_exact_solve(R, f, seed, reg, mu):
    rng = np.random.default_rng(seed)
    Y = rng.standard_normal((R.shape[1], f)).astype(np.float32)
    by = rng.standard_normal(R.shape[1])
    X = rng.standard_normal((R.shape[0], f)).astype(np.float32)  # overwritten
    bx = rng.standard_normal(R.shape[0])
    K.mf_half_step(R.indptr, R.indices, R.data, X, bx, Y, by, mu, reg)
    eX, eb = mf_half_step_reference(R, Y, by, mu, reg)
    scale = max(1.0, float(np.abs(eX).max(initial=0.0)), float(np.abs(eb).max(initial=0.0)))
    np.testing.assert_allclose(X, eX, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(bx, eb, rtol=1e-6, atol=1e-8 * scale)


def _planted(seed=0, n_users=200, n_items=100, rank=3, observed=0.3):
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((n_users, rank)) * 0.7
    V = rng.standard_normal((n_items, rank)) * 0.7
    bu = rng.standard_normal(n_users) * 0.5
    bi = rng.standard_normal(n_items) * 0.5
    R = 3.5 + bu[:, None] + bi[None, :] + U @ V.T
    mask = rng.random(R.shape) < observed
    umap, imap = IdMap(np.arange(n_users)), IdMap(np.arange(n_items))
    tu, ti = np.nonzero(mask)
    hu, hi = np.nonzero(~mask)
    train = Interactions(umap, imap, users=tu, items=ti, values=R[tu, ti])
    held = Interactions(umap, imap, users=hu, items=hi, values=R[hu, hi])
    return train, held, bu, bi, R


@pytest.fixture(scope="module")
def planted():
    train, held, bu, bi, R = _planted()
    model = MF(factors=3, iterations=20, regularization=0.01, random_state=0).fit(train)
    return model, train, held, bu, bi, R


def test_predict_recovers_planted_ratings(planted):
    model, train, held, _, _, R = planted
    fit = rating_metrics(model, train)
    out = rating_metrics(model, held)  # measured 0.026 with rating std 1.03
    assert fit["rmse"] < 0.05 and out["rmse"] < 0.06, (fit, out)
    assert out["n"] == len(held) and out["mae"] <= out["rmse"]
    np.testing.assert_allclose(model.global_mean_, np.mean(train.values, dtype=np.float64), rtol=1e-9)
    # scores for ranking are the predicted ratings
    ids, scores = model.recommend(7, n=5, filter_seen=False)
    np.testing.assert_allclose(scores, model.predict(np.full(5, 7), ids), rtol=1e-5)
    np.testing.assert_allclose(scores, R[7, ids.astype(int)], atol=0.3)


def test_biases_and_unknown_ids(planted):
    model, _, _, bu, bi, _ = planted
    # biases are identified up to a constant shared with mu; their shape must be right
    assert np.corrcoef(model.item_bias_, bi)[0, 1] > 0.95
    assert np.corrcoef(model.user_bias_, bu)[0, 1] > 0.95
    mu = model.global_mean_
    got = model.predict([3, -1, 3, -1], [5, 5, 999, 999])
    np.testing.assert_allclose(got[1], mu + model.item_bias_[5], rtol=1e-6)  # unknown user
    np.testing.assert_allclose(got[2], mu + model.user_bias_[3], rtol=1e-6)  # unknown item
    np.testing.assert_allclose(got[3], mu, rtol=1e-6)  # both unknown
    assert got.dtype == np.float32 and got.shape == (4,)
    with pytest.raises(ps.ParameterError, match="one item per user"):
        model.predict([1, 2], [1])


def test_bias_only_data():
    """Ratings = user bias + item bias: the model fits them and its biases follow them."""
    rng = np.random.default_rng(1)
    bu, bi = rng.standard_normal(60), rng.standard_normal(40)
    u, i = np.nonzero(rng.random((60, 40)) < 0.5)
    inter = Interactions(IdMap(np.arange(60)), IdMap(np.arange(40)), users=u, items=i,
                         values=3.0 + bu[u] + bi[i])
    model = MF(factors=2, iterations=15, regularization=0.001, random_state=0).fit(inter)
    assert rating_metrics(model, inter)["rmse"] < 0.02
    # factors can absorb part of a bias (x_u . y_i = const * b_i), so check the biases' shape
    assert np.corrcoef(model.item_bias_, bi)[0, 1] > 0.95
    assert np.corrcoef(model.user_bias_, bu)[0, 1] > 0.95


def test_ratings_from_last_value_or_weights():
    umap, imap = IdMap(["a"]), IdMap(["x", "y"])
    # repeated pair: the later rating (2.0) replaces the earlier (5.0)
    inter = Interactions(umap, imap, users=[0, 0, 0], items=[0, 0, 1], values=[5.0, 2.0, 4.0],
                         timestamps=[1.0, 2.0, 3.0])
    assert MF(factors=1, iterations=1).fit(inter).global_mean_ == pytest.approx(3.0)
    by_weight = Interactions(umap, imap, users=[0, 0], items=[0, 1], weights=[1.0, 3.0])
    assert MF(factors=1, iterations=1).fit(by_weight).global_mean_ == pytest.approx(2.0)
    bad = Interactions(umap, imap, users=[0], items=[0], values=[float("nan")])
    with pytest.raises(ps.DataError, match="finite ratings"):
        MF(factors=1, iterations=1).fit(bad)


def test_deterministic_and_save_load(planted, tmp_path):
    model, train, held, *_ = planted
    again = MF(factors=3, iterations=20, regularization=0.01, random_state=0, num_threads=1).fit(train)
    np.testing.assert_array_equal(model.user_factors_, again.user_factors_)
    np.testing.assert_array_equal(model.item_bias_, again.item_bias_)
    loaded = ps.load(model.save(tmp_path / "mf"))
    np.testing.assert_array_equal(loaded.predict(np.arange(10), np.arange(10)),
                                  model.predict(np.arange(10), np.arange(10)))


def test_progress_bar_shows_training_rmse(capsys):
    train = _planted(n_users=30, n_items=20, observed=0.5)[0]
    model = MF(factors=2, iterations=3, random_state=0, show_progress=True).fit(train)
    assert "rmse=" in capsys.readouterr().err
    assert len(model.training_rmse_) == 3 and model.training_rmse_[-1] <= model.training_rmse_[0]


@pytest.mark.parametrize("kwargs, match", [(dict(factors=0), "factors"), (dict(iterations=-2), "iterations"),
                                           (dict(regularization=float("inf")), "regularization"),
                                           (dict(num_threads=1.5), "num_threads")])
def test_bad_parameters(kwargs, match):
    train = _planted(n_users=5, n_items=5, observed=0.6)[0]
    with pytest.raises(ps.ParameterError, match=match):
        MF(**kwargs).fit(train)


# ------------------------------------------------------------------------------------- rating_metrics
class _Fixed:
    def __init__(self, values):
        self.values = np.asarray(values, dtype=np.float32)

    def predict(self, users, items):
        return self.values


def test_rating_metrics_by_hand():
    umap, imap = IdMap(["a", "b"]), IdMap(["x", "y"])
    test = Interactions(umap, imap, users=[0, 0, 1], items=[0, 1, 1], values=[4.0, 2.0, 5.0])
    r = rating_metrics(_Fixed([3.5, 2.0, 4.0]), test)  # errors -0.5, 0, -1
    assert r == {"rmse": pytest.approx(np.sqrt(1.25 / 3)), "mae": pytest.approx(0.5), "n": 3}
    by_weight = Interactions(umap, imap, users=[0, 1], items=[0, 0], weights=[1.0, 3.0])
    r = rating_metrics(_Fixed([2.0, 2.0]), by_weight)  # truth from weights: errors 1, -1
    assert r == {"rmse": pytest.approx(1.0), "mae": pytest.approx(1.0), "n": 2}


def test_rating_metrics_errors():
    umap, imap = IdMap(["a"]), IdMap(["x"])
    test = Interactions(umap, imap, users=[0], items=[0], values=[4.0])
    with pytest.raises(ps.ParameterError, match="predict"):
        rating_metrics(ps.MostPopular(), test)
    with pytest.raises(ps.DataError, match="Interactions"):
        rating_metrics(_Fixed([1.0]), [(0, 0, 4.0)])
    with pytest.raises(ps.DataError, match="none"):
        rating_metrics(_Fixed([]), test.subset(np.zeros(1, dtype=bool)))
    with pytest.raises(ps.ParameterError, match="one prediction per pair"):
        rating_metrics(_Fixed([1.0, 2.0]), test)


class TestMFContract(RecommenderContract):
    def make_model(self):
        return MF(factors=4, iterations=5, random_state=0)
