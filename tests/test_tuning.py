"""ps.tune: a validation search over each model family's documented ranges (issue 12, point 6)."""

import numpy as np
import pytest

import persona as ps
from persona import tuning


@pytest.fixture(scope="module")
def splits():
    shop = ps.datasets.synthetic_shop(n_users=300, n_items=100, seed=0)
    return ps.split.leave_last_out(shop.interactions, new_items=True)


def test_tuning_rescues_a_poor_setting_on_held_out_data(splits):
    train, valid, test = splits
    poor = dict(regularization=0.01, random_state=0)  # ALS's default before issue 12: a quarter of the best
    best = ps.tune(ps.ALS(**poor), train, valid, budget=10, sampler="random", random_state=0)
    start = ps.ALS(**poor).fit(train.concat(valid))
    tuned_ndcg = ps.evaluate(best, test, k=(10,))["ndcg@10"]
    start_ndcg = ps.evaluate(start, test, k=(10,))["ndcg@10"]
    assert tuned_ndcg > 1.5 * start_ndcg, (tuned_ndcg, start_ndcg)
    # and the new default is within reach of the tuned model on this shop
    default_ndcg = ps.evaluate(ps.ALS(random_state=0).fit(train.concat(valid)), test, k=(10,))["ndcg@10"]
    assert default_ndcg > 0.8 * tuned_ndcg, (default_ndcg, tuned_ndcg)


def test_table_best_first_start_point_first_and_refit_on_train_plus_valid(splits):
    train, valid, _ = splits
    start = ps.EASE(regularization=123.0)
    best = ps.tune(start, train, valid, budget=5, sampler="random", random_state=1)
    table = best.tuning_
    assert len(table) == 5 and list(table["trial"].sort_values()) == [0, 1, 2, 3, 4]
    assert table["ndcg@10"].is_monotonic_decreasing
    assert table.loc[table["trial"] == 0, "regularization"].item() == 123.0  # the model's own setting is tried
    assert best.regularization == best.tuning_best_["regularization"] == table.loc[0, "regularization"]
    assert best.user_items_.nnz == train.concat(valid).matrix.nnz  # refitted on everything before the test
    # the reported score is what ps.evaluate gives that setting on valid
    check = ps.EASE(regularization=best.regularization).fit(train)
    assert ps.evaluate(check, valid, k=(10,))["ndcg@10"] == pytest.approx(table.loc[0, "ndcg@10"])


def test_random_search_is_reproducible(splits):
    train, valid, _ = splits
    a = ps.tune(ps.ItemKNN(), train, valid, budget=4, sampler="random", random_state=7).tuning_
    b = ps.tune(ps.ItemKNN(), train, valid, budget=4, sampler="random", random_state=7).tuning_
    assert a.drop(columns="fit_s").equals(b.drop(columns="fit_s"))


def test_optuna_when_installed_random_search_otherwise(splits, monkeypatch):
    pytest.importorskip("optuna", reason="the tune extra installs Optuna")
    train, valid, _ = splits
    seen = []
    real = tuning._search_optuna
    monkeypatch.setattr(tuning, "_search_optuna", lambda *a, **k: (seen.append("optuna"), real(*a, **k)))
    best = ps.tune(ps.MostPopular(), train, valid, budget=3)
    assert seen == ["optuna"] and len(best.tuning_) == 3
    monkeypatch.setattr(tuning, "_has_optuna", lambda: False)
    best = ps.tune(ps.MostPopular(), train, valid, budget=3)
    assert seen == ["optuna"] and len(best.tuning_) == 3  # the seeded random search ran instead


def test_none_among_choices_survives_the_table(splits):
    train, valid, _ = splits
    best = ps.tune(ps.MostPopular(), train, valid, budget=6, sampler="random", space={"half_life": [None, 7.0]},
                   random_state=0)
    assert best.half_life in (None, 7.0) and best.tuning_best_["half_life"] == best.half_life


@pytest.mark.parametrize("kwargs, match", [
    ({"budget": 0}, "budget"),
    ({"budget": True}, "budget"),
    ({"metric": "ndcg"}, "metric"),
    ({"metric": "nope@10"}, "reports"),
    ({"space": {"factor": ps.tuning.Int(2, 8)}}, "does not have"),
    ({"space": {"factors": (2, 8)}, "sampler": "grid"}, "sampler"),
    ({"space": {"factors": "2-8"}}, "Int, Float or Choice"),
    ({"timeout": -1}, "timeout"),
])
def test_bad_arguments_are_parameter_errors(splits, kwargs, match):
    train, valid, _ = splits
    with pytest.raises(ps.ParameterError, match=match):
        ps.tune(ps.ALS(iterations=2), train, valid, **{"budget": 1, **kwargs})


def test_not_a_model_and_unknown_family():
    with pytest.raises(ps.ParameterError, match="persona model"):
        ps.tune("als", None, None)

    class Custom(ps.MostPopular):
        pass

    assert tuning.search_space(Custom()) == tuning.SEARCH_SPACES["MostPopular"]  # inherits its family's ranges


def test_fit_params_reach_every_fit_so_content_models_tune():
    # ContentKNN learns from the catalogue: fit_params carries it into every trial and the refit
    shop = ps.datasets.synthetic_shop(n_users=300, n_items=80, seed=5)
    inter = shop.interactions
    train, valid, _ = ps.split.leave_last_out(inter)
    feats = ps.data.Features.from_frame(shop.items, inter.item_map, "item_id", categorical=["category", "brand"])
    best = ps.tune(ps.ContentKNN(text=None), train, valid, budget=3, sampler="random", random_state=0,
                   fit_params={"item_features": feats})
    assert len(best.tuning_) == 3 and set(best.tuning_best_) == set(ps.tuning.SEARCH_SPACES["ContentKNN"])
    with pytest.raises(ps.DataError):  # without the content, the fit itself refuses
        ps.tune(ps.ContentKNN(text=None), train, valid, budget=1, sampler="random")
    with pytest.raises(ps.ParameterError, match="fit_params"):
        ps.tune(ps.EASE(), train, valid, budget=1, fit_params=["item_features"])
