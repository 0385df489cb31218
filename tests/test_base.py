"""The Recommender base class beyond the contract: row gathering, per-row filters, integer ids."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import persona as ps
from persona.models.base import _stack_rows, _take_rows
from strategies import sparse_matrices


@given(st.data())
@settings(max_examples=150, deadline=None)
def test_take_rows_equals_scipy_row_indexing(data):
    m = data.draw(sparse_matrices(min_rows=1, max_rows=30, max_cols=30))
    rows = np.array(data.draw(st.lists(st.integers(0, m.shape[0] - 1), min_size=1, max_size=12)), dtype=np.int64)
    ip, ind = _take_rows(m, rows)
    ref = m[rows]
    np.testing.assert_array_equal(ip, ref.indptr)
    np.testing.assert_array_equal(ind, ref.indices)
    other = data.draw(sparse_matrices(min_rows=len(rows), max_rows=len(rows), min_cols=m.shape[1],
                                      max_cols=m.shape[1]))
    sp_, si = _stack_rows((ip, ind), other.tocsr())
    for r in range(len(rows)):
        got = si[sp_[r]:sp_[r + 1]]
        want = np.concatenate([ref.indices[ref.indptr[r]:ref.indptr[r + 1]],
                               other.indices[other.indptr[r]:other.indptr[r + 1]]])
        assert sorted(got.tolist()) == sorted(want.tolist())


@pytest.fixture(scope="module")
def int_model():
    inter = ps.Interactions.from_records([(10, 100), (10, 101), (11, 100), (12, 102), (12, 103), (13, 100)])
    return ps.MostPopular().fit(inter), inter


def test_integer_ids_pad_with_minus_one(int_model):
    model, inter = int_model
    ids, scores = model.recommend_batch([10, 12], n=4)
    assert ids.dtype.kind == "i"
    assert ids[0].tolist() == [102, 103, -1, -1] and np.isneginf(scores[0, 2:]).all()
    assert model.recommend(10, n=4)[0].tolist() == [102, 103]


def test_per_row_allow_and_deny_lists(int_model):
    model, _ = int_model
    ids, _ = model.recommend_batch([11, 13], n=2, filter_seen=False, items=[[101, 102], [100, 103]],
                                   exclude=[[102], []])
    assert ids[0].tolist() == [101, -1]
    assert ids[1].tolist() == [100, 103]


def test_unknown_filter_ids_are_ignored_not_fatal(int_model):
    model, _ = int_model
    ids, _ = model.recommend(11, n=3, items=[101, 999], exclude=[888])
    assert ids.tolist() == [101]


def test_recommend_rejects_a_list_for_one_user(int_model):
    model, _ = int_model
    with pytest.raises(ps.ParameterError, match="recommend_batch"):
        model.recommend([10, 11], n=2)
    with pytest.raises(ps.ParameterError, match="sequence of user ids"):
        model.recommend_batch(10, n=2)


def test_recommend_indices_validates(int_model):
    model, _ = int_model
    with pytest.raises(ps.ParameterError, match="user indices"):
        model.recommend_indices(np.array([0, 99]), 3)


def test_fallback_must_be_a_recommender(int_model):
    model, _ = int_model
    with pytest.raises(ps.ParameterError, match="fallback"):
        model.set_fallback("popular")


def test_params_round_trip():
    m = ps.MostPopular(half_life=3.0)
    assert m.get_params()["half_life"] == 3.0
    m.set_params(measure="events")
    assert m.measure == "events"
    with pytest.raises(ps.ParameterError, match="no parameter"):
        m.set_params(factors=3)
    assert "half_life=3.0" in repr(m)


# ------------------------------------------------------------------ scikit-learn conventions (issue 12, 9 and 12)
ALL_MODELS = ["MostPopular", "ItemKNN", "UserKNN", "ALS", "BPR", "EASE", "MF", "SASRec", "TwoTower", "ContentKNN"]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_sklearn_clone_copies_parameters_not_state(name):
    base = pytest.importorskip("sklearn.base", reason="the test extra installs scikit-learn")
    import persona as ps

    model = getattr(ps, name)()
    first = model._param_names()[0]
    params = model.get_params(deep=True)
    assert params == model.get_params(deep=False)
    copy = base.clone(model)
    assert type(copy) is type(model) and copy is not model and copy.get_params() == params
    assert copy.set_params(**{first: params[first]}) is copy


@pytest.mark.parametrize("name", ALL_MODELS)
def test_misspelt_keyword_names_the_model_and_the_nearest_parameter(name):
    import persona as ps

    cls = getattr(ps, name)
    real = cls._param_names()[0]
    with pytest.raises(ps.ParameterError, match=rf"{name} has no parameter '{real}x' \(did you mean '{real}'\?\)"):
        cls(**{real + "x": 1})
    with pytest.raises(ps.ParameterError, match="keyword arguments only"):
        cls(1)
    with pytest.raises(ps.ParameterError, match=rf"did you mean '{real}'"):
        cls().set_params(**{real + "x": 1})
