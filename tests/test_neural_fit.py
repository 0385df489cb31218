"""SASRec / TwoTower: default early stopping on held-out last items, and newer histories without a refit
(issue 12, points 7 and 8)."""

import numpy as np
import pytest

pytest.importorskip("torch", reason="the test extra installs PyTorch (pip install '.[test]')")

import persona as ps
from persona.models._neural import holdout_last


@pytest.fixture(scope="module")
def shop():
    shop = ps.datasets.synthetic_shop(n_users=150, n_items=40, seed=2)
    train, valid, test = ps.split.leave_last_out(shop.interactions, new_items=True)
    return train.concat(valid), test


def small(cls, **kw):
    if cls is ps.SASRec:
        return ps.SASRec(**{"factors": 8, "blocks": 1, "max_len": 10, "random_state": 0, "num_threads": 1, **kw})
    return ps.TwoTower(**{"factors": 8, "hidden": 16, "max_history": 10, "random_state": 0, "num_threads": 1, **kw})


@pytest.mark.parametrize("cls", [ps.SASRec, ps.TwoTower])
def test_default_fit_stops_early_and_reads_the_held_out_items_back(cls, shop):
    full, _ = shop
    model = small(cls, epochs=200, patience=1, learning_rate=0.05).fit(full)
    assert len(model.history_) < 200  # stopped by the held-out items, not by the epoch budget
    assert "valid_ndcg@10" in model.history_[0] and 1 <= model.best_epoch_ <= len(model.history_)
    assert (model.user_items_ != full.matrix).nnz == 0  # the full histories, last items included
    # the histories it reads are those of a model trained on everything
    np.testing.assert_array_equal(model.user_tokens_, small(cls, epochs=1).fit(full, valid=None).user_tokens_)
    if cls is ps.SASRec:  # SASRec reads every event; its last token is each user's last item
        last = np.array([s[-1] for s in full.sequences()])
        assert (model.user_tokens_[:, -1] == last + 1).all()


@pytest.mark.parametrize("cls", [ps.SASRec, ps.TwoTower])
def test_auto_is_the_validated_run_then_update_histories(cls, shop):
    full, _ = shop
    auto = small(cls, epochs=4).fit(full)
    train, holdout = holdout_last(full)
    manual = small(cls, epochs=4).fit(train, valid=holdout)
    assert not np.array_equal(manual.user_tokens_, auto.user_tokens_)
    manual.update_histories(full)
    np.testing.assert_array_equal(manual.item_factors_, auto.item_factors_)
    np.testing.assert_array_equal(manual.user_tokens_, auto.user_tokens_)
    users = full.user_ids[:20]
    np.testing.assert_array_equal(manual.recommend_batch(users, n=5)[0], auto.recommend_batch(users, n=5)[0])


def test_refit_histories_false_and_valid_none(shop):
    full, _ = shop
    train, _ = holdout_last(full)
    kept_out = small(ps.SASRec, epochs=2).fit(full, refit_histories=False)
    assert (kept_out.user_items_ != train.matrix).nnz == 0
    every_epoch = small(ps.SASRec, epochs=3, patience=1).fit(full, valid=None)
    assert len(every_epoch.history_) == 3 and "valid_ndcg@10" not in every_epoch.history_[0]
    with pytest.raises(ps.ParameterError, match="valid must be 'auto'"):
        small(ps.SASRec, epochs=1).fit(full, valid="last")
    with pytest.raises(ps.ParameterError, match="refit_histories"):
        small(ps.SASRec, epochs=1).fit(full, refit_histories="yes")


@pytest.mark.parametrize("cls", [ps.SASRec, ps.TwoTower])
def test_update_histories_replaces_named_users_adds_new_ones_and_counts_unknown_items(cls, shop):
    full, _ = shop
    model = small(cls, epochs=2).fit(full, valid=None)
    before_tokens = model.user_tokens_.copy()
    a, b = full.item_ids[0], full.item_ids[5]
    changed = full.user_ids[3]
    newer = ps.Interactions.from_records([(changed, a), (changed, b), ("brand-new", b), ("brand-new", "no-such-sku")])
    with pytest.raises(ps.UnknownUserError):
        model.recommend("brand-new", n=3)
    model.update_histories(newer)
    assert model.histories_update_ == {"users": 2, "new_users": 1, "events": 4, "unknown_item_events": 1}
    row = model.user_map_.index_of(changed)
    ia, ib = model.item_map_.index_of(a), model.item_map_.index_of(b)
    assert list(model.user_tokens_[row, -2:]) == [ia + 1, ib + 1] and (model.user_tokens_[row, :-2] == 0).all()
    others = np.setdiff1d(np.arange(len(before_tokens)), [row])
    np.testing.assert_array_equal(model.user_tokens_[others], before_tokens[others])
    assert set(model.user_items_[row].indices) == {ia, ib}
    items, _ = model.recommend("brand-new", n=3)
    assert len(items) == 3 and b not in items  # its history is read, and filtered as seen
    # the same answer as for an anonymous session with that history, and after save/load
    np.testing.assert_array_equal(items, model.recommend_for_history([b], n=4)[0][[i for i, x in enumerate(
        model.recommend_for_history([b], n=4)[0]) if x != b]][:3])
    with pytest.raises(ps.DataError, match="Interactions"):
        model.update_histories([("u", "i")])
