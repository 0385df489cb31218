"""FactorModel's shared scoring, on a tiny model with hand-set factors."""

import numpy as np
import pytest

import persona as ps
from persona.models.factor import FactorModel


class FixedFactors(FactorModel):
    """Factors given up front; fitting only records the data."""

    def __init__(self, *, factors: int = 2):
        self.factors = factors

    def _fit(self, inter):
        self.user_factors_ = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)[: inter.n_users]
        self.item_factors_ = np.array([[2, 0], [0, 3], [1, 1], [-1, 0]], dtype=np.float32)[: inter.n_items]


@pytest.fixture(scope="module")
def model():
    inter = ps.Interactions.from_records([("a", "w"), ("b", "x"), ("c", "y"), ("c", "z")])
    return FixedFactors().fit(inter)


def test_scores_are_dot_products(model):
    ids, scores = model.recommend("a", n=3)  # user a = (1, 0); w seen; x 0, y 1, z -1
    assert ids.tolist() == ["y", "x", "z"]
    np.testing.assert_allclose(scores, [1, 0, -1])


def test_similar_items_by_cosine(model):
    ids, scores = model.similar_items("w", n=3)  # w = (2, 0): y cos 0.707, x 0, z -1
    assert ids.tolist() == ["y", "x", "z"]
    np.testing.assert_allclose(scores, [np.sqrt(0.5), 0, -1], atol=1e-6)


def test_audience_sums_preferences(model):
    users, scores = model.recommend_users(["x", "y"], n=3)  # x + y = (1, 4): a 1, b 4, c 5
    assert users.tolist() == ["c", "b", "a"]
    np.testing.assert_allclose(scores, [5, 4, 1])


def test_default_fold_in_is_the_mean_item_factor(model):
    ids, scores = model.recommend_for_history(["w", "x"], n=2)  # mean (1, 1.5): y 2.5, z -1
    assert ids.tolist() == ["y", "z"]
    np.testing.assert_allclose(scores, [2.5, -1])


def test_factors_survive_save_load(model, tmp_path):
    loaded = ps.load(model.save(tmp_path / "f.persona"))
    np.testing.assert_array_equal(loaded.item_factors_, model.item_factors_)
    assert loaded.recommend("b", n=2)[0].tolist() == model.recommend("b", n=2)[0].tolist()


def test_bad_factors_are_refused():
    inter = ps.Interactions.from_records([("a", "w")])
    with pytest.raises(ps.ParameterError, match="factors"):
        FixedFactors(factors=0).fit(inter)
