"""MostPopular: the contract, and popularity numbers checked by hand."""

import numpy as np
import pandas as pd
import pytest

import persona as ps
from contract import RecommenderContract


class TestMostPopularContract(RecommenderContract):
    expects_similar_items = False

    def make_model(self):
        return ps.MostPopular()


class TestTrendingContract(RecommenderContract):
    expects_similar_items = False

    def make_model(self):
        return ps.MostPopular(half_life=1.0, measure="events")


def _inter(rows, **kw):
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return ps.Interactions.from_frame(df, user="user_id", item="item_id", time="timestamp", **kw)


DAY = 86400


def test_measures_by_hand():
    # a: 2 users (u1 twice); b: 1 user; c: 1 user
    inter = _inter([("u1", "a", 0), ("u1", "a", 10), ("u2", "a", 20), ("u2", "b", 30), ("u3", "c", 40)],
                   drop_duplicates=False)
    users = ps.MostPopular(measure="users").fit(inter)
    np.testing.assert_allclose(users.popularity_, [2, 1, 1])
    events = ps.MostPopular(measure="events").fit(inter)
    np.testing.assert_allclose(events.popularity_, [3, 1, 1])
    np.testing.assert_allclose(events.global_scores_, np.array([3, 1, 1]) / 5)
    assert users.top_items(3)[0].tolist() == ["a", "b", "c"]  # tie b/c goes to the lower index


def test_trending_decays_by_half_life():
    # item a: one event 2 days before the latest event; item b: one event at the latest time
    inter = _inter([("u1", "a", 0), ("u2", "b", 2 * DAY)])
    m = ps.MostPopular(half_life=1.0).fit(inter)
    np.testing.assert_allclose(m.popularity_, [0.25, 1.0], rtol=1e-6)
    assert m.top_items(1)[0].tolist() == ["b"]
    # all-time popularity would tie them
    np.testing.assert_allclose(ps.MostPopular().fit(inter).popularity_, [1, 1])


def test_trending_needs_timestamps():
    inter = ps.Interactions.from_records([("u1", "a"), ("u2", "b")])
    with pytest.raises(ps.DataError, match="timestamps"):
        ps.MostPopular(half_life=3).fit(inter)


def test_segment_popularity_uses_the_users_segment():
    rows = [("y1", "toy", 0), ("y2", "toy", 1), ("y3", "toy", 2), ("o1", "tea", 3), ("o2", "tea", 4),
            ("y1", "tea", 5), ("o3", "book", 6)]
    inter = _inter(rows)
    seg = {"y1": "young", "y2": "young", "y3": "young", "o1": "old", "o2": "old", "o3": "old"}
    m = ps.MostPopular(segment_shrinkage=0.0).fit(inter, user_segments=seg)
    assert m.recommend("o3", n=1)[0].tolist() == ["tea"]
    assert m.top_items(1, segment="young")[0].tolist() == ["toy"]
    # old segment counts: tea 2, book 1, toy 0 -> shares 2/3, 1/3, 0
    np.testing.assert_allclose(m.top_items(3, segment="old")[1], [2 / 3, 1 / 3, 0], atol=1e-6)
    with pytest.raises(ps.ParameterError, match="unknown segment"):
        m.top_items(1, segment="martians")


def test_segment_shrinkage_pulls_toward_global():
    rows = [("a1", "x", 0), ("b1", "y", 1), ("b2", "y", 2), ("b3", "y", 3)]
    inter = _inter(rows)
    seg = {"a1": "A", "b1": "B", "b2": "B", "b3": "B"}
    m = ps.MostPopular(segment_shrinkage=4.0).fit(inter, user_segments=seg)
    # segment A: counts x=1, y=0; global shares x=1/4, y=3/4; (c + 4 * share) / (1 + 4)
    np.testing.assert_allclose(m.top_items(2, segment="A")[1], sorted([(1 + 1) / 5, (0 + 3) / 5], reverse=True))


def test_category_top_items():
    inter = _inter([("u1", "a", 0), ("u2", "a", 1), ("u2", "b", 2), ("u3", "c", 3), ("u4", "c", 4), ("u5", "c", 5)])
    m = ps.MostPopular().fit(inter, item_categories={"a": "shoes", "b": "shoes", "c": "hats"})
    assert m.top_items(5, category="shoes")[0].tolist() == ["a", "b"]
    assert m.top_items(5, category="hats")[0].tolist() == ["c"]
    with pytest.raises(ps.ParameterError, match="unknown category"):
        m.top_items(1, category="gloves")


def test_segment_state_survives_save_load(tmp_path):
    rows = [("y1", "toy", 0), ("y2", "toy", 1), ("o1", "tea", 3), ("o2", "tea", 4)]
    inter = _inter(rows)
    m = ps.MostPopular().fit(inter, user_segments={"y1": "young", "y2": "young", "o1": "old", "o2": "old"},
                             item_categories={"toy": "fun", "tea": "food"})
    loaded = ps.load(m.save(tmp_path / "seg.persona"))
    for u in ("y1", "o1"):
        np.testing.assert_array_equal(loaded.recommend(u, n=2, filter_seen=False)[0],
                                      m.recommend(u, n=2, filter_seen=False)[0])
    assert loaded.top_items(1, category="food")[0].tolist() == ["tea"]


def test_bad_parameters():
    inter = _inter([("u1", "a", 0)])
    with pytest.raises(ps.ParameterError, match="measure"):
        ps.MostPopular(measure="clicks").fit(inter)
    with pytest.raises(ps.ParameterError, match="half_life"):
        ps.MostPopular(half_life=-1).fit(inter)


def test_personalised_segments_beat_global_on_synthetic_shop():
    shop = ps.datasets.synthetic_shop(n_users=1500, n_items=300, seed=3)
    inter = shop.interactions
    train, valid, test = ps.split.leave_last_out(inter, new_items=True)
    full = train.concat(valid)
    glob = ps.evaluate(ps.MostPopular().fit(full), test, k=(10,))
    seg = ps.evaluate(ps.MostPopular().fit(full, user_segments=shop.users.set_index("user_id")["segment"]),
                      test, k=(10,))
    assert seg["hr@10"] > glob["hr@10"]
