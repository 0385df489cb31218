"""ps.Hybrid: two-stage ranking over several generators (issue 14)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import persona as ps
from contract import RecommenderContract
from persona.ranking.hybrid import Hybrid, _dedupe_rows, default_generators


def _small(ranker="logistic", **kw):
    return Hybrid(generators={"knn": ps.ItemKNN(k=20), "ease": ps.EASE(regularization=20.0), "pop": ps.MostPopular()},
                  candidates=20, ranker=ranker, **kw)


class TestHybridContract(RecommenderContract):
    def make_model(self):
        return _small()


@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=500, n_items=120, seed=4)


@pytest.fixture(scope="module")
def split(shop):
    return ps.split.leave_last_out(shop.interactions)


@pytest.fixture(scope="module")
def features(shop):
    inter = shop.interactions
    items = ps.data.Features.from_frame(shop.items, inter.item_map, "item_id", categorical=["category", "brand"],
                                        numeric=["price"])
    users = ps.data.Features.from_frame(shop.users, inter.user_map, "user_id", categorical=["gender", "segment"])
    return items, users


@pytest.fixture(scope="module")
def hybrid(split, features):
    train, valid, _ = split
    return _small().fit(train, valid=valid, item_features=features[0], user_features=features[1])


def test_dedupe_rows_keeps_first_occurrences():
    got = _dedupe_rows(np.array([[3, 1, 3, -1, 1, 2], [5, 5, 5, 4, -1, -1]]))
    assert got.tolist() == [[3, 1, -1, -1, -1, 2], [5, -1, -1, 4, -1, -1]]


def test_default_generators_follow_the_data(split):
    train, _, _ = split
    gens = default_generators(train)
    assert set(gens) == {"ease", "itemknn", "als", "popular", "trending"}
    no_time = ps.Interactions(train.user_map, train.item_map, train.users, train.items)
    assert "trending" not in default_generators(no_time)


def test_the_served_generators_know_train_and_valid(hybrid, split):
    train, valid, _ = split
    full = train.concat(valid)
    assert hybrid.user_items_.nnz == full.matrix.nnz
    for g in hybrid.generators_:
        assert g.user_items_.nnz == full.matrix.nnz
    # valid items are seen: filtered from the answers
    u = valid.users[0]
    got, _ = hybrid.recommend(valid.user_ids[u], n=20)
    assert valid.item_ids[valid.items[0]] not in got


def test_candidates_rank_above_the_rest_and_n_items_come_back(hybrid, split):
    train, valid, test = split
    user = test.user_ids[test.users[0]]
    items, scores = hybrid.recommend(user, n=hybrid.n_items)
    assert len(items) == hybrid.n_items - len(hybrid.user_items_[hybrid.user_map_.index_of(user)].indices)
    assert np.all(np.diff(scores) <= 0)
    # a filter that leaves only non-candidates still gives exactly n items
    top, _ = hybrid.recommend(user, n=60)
    rest, _ = hybrid.recommend(user, n=10, exclude=list(top))
    assert len(rest) == 10 and not set(rest) & set(top)


def test_batch_equals_single_calls(hybrid, split):
    _, _, test = split
    users = list(test.user_ids[test.users[:7]])
    ids, scores = hybrid.recommend_batch(users, n=8)
    for row, u in enumerate(users):
        one, one_s = hybrid.recommend(u, n=8)
        np.testing.assert_array_equal(ids[row], one)
        np.testing.assert_allclose(scores[row], one_s, rtol=1e-5)


def test_hybrid_beats_or_matches_its_best_generator_on_the_shop(split, features):
    # the learned blend is no worse than its best single generator (measured: see docs/ranking.md)
    train, valid, test = split
    full = train.concat(valid)
    best_single = max(ps.evaluate(g.fit(full), test, k=(10,))["ndcg@10"]
                      for g in (ps.ItemKNN(k=20), ps.EASE(regularization=20.0), ps.MostPopular()))
    h = _small().fit(train, valid=valid, item_features=features[0], user_features=features[1])
    got = ps.evaluate(h, test, k=(10,))["ndcg@10"]
    assert got >= 0.95 * best_single, (got, best_single)


def test_fit_is_reproducible_and_leaves_the_given_generators_alone(split):
    train, valid, test = split
    knn = ps.ItemKNN(k=20)
    a = Hybrid(generators={"knn": knn, "als": ps.ALS(factors=8, iterations=3)}, candidates=15,
               ranker="logistic").fit(train, valid=valid)
    b = Hybrid(generators={"knn": knn, "als": ps.ALS(factors=8, iterations=3)}, candidates=15,
               ranker="logistic").fit(train, valid=valid)
    assert not hasattr(knn, "similarity_")  # cloned, not fitted in place
    users = list(test.user_ids[:20])
    np.testing.assert_array_equal(a.recommend_batch(users, n=5)[0], b.recommend_batch(users, n=5)[0])


def test_without_valid_each_users_last_event_labels_the_ranker(split):
    train, _, test = split
    h = _small().fit(train)
    assert 0 < h.candidate_recall_ <= 1
    assert ps.evaluate(h, test, k=(10,))["ndcg@10"] > 0


def test_explain_gives_one_reason_per_item(hybrid, split):
    _, _, test = split
    user = test.user_ids[test.users[3]]
    items, _ = hybrid.recommend(user, n=6)
    reasons = hybrid.explain(user, items)
    assert len(reasons) == 6 and all(isinstance(r, str) and r for r in reasons)
    frame = hybrid.explain(user, items, details=True)
    assert list(frame["item"]) == list(items)
    assert set(frame["source"]) <= set(hybrid.generator_names_) | {
        "popularity", "trending", "user", "sequence", "attributes", "agreement"} | {
        f"category:{f}" for f in ("category", "brand")} | {"numeric:price"}
    anchored = frame[frame["anchor"].notna()]
    ui = hybrid.user_items_[hybrid.user_map_.index_of(user)].indices
    assert set(anchored["anchor"]) <= set(hybrid.item_map_.ids[ui])  # anchors come from the history
    with pytest.raises(ps.UnknownItemError):
        hybrid.explain(user, ["no-such-item"])


def test_history_and_new_visitor_with_demographics(hybrid, split, shop):
    train, _, _ = split
    hist = list(train.item_ids[train.items[:3]])
    items, scores = hybrid.recommend_for_history(hist, n=5)
    assert len(items) == 5 and not set(items) & set(hist)
    # a first-time visitor: no history, demographics only; different groups may get different lists
    lists = {g: tuple(hybrid.recommend_for_history([], n=10, user_features={"gender": g})[0]) for g in ("F", "M")}
    assert all(len(v) == 10 for v in lists.values())
    with pytest.raises(ps.ParameterError, match="unknown field"):
        hybrid.recommend_for_history([], n=5, user_features={"shoe_size": 42})


def test_save_load_round_trip(hybrid, split, tmp_path):
    _, _, test = split
    path = hybrid.save(tmp_path / "h.persona")
    loaded = ps.load(path)
    assert isinstance(loaded, Hybrid) and loaded.generator_names_ == hybrid.generator_names_
    users = list(test.user_ids[:30])
    np.testing.assert_array_equal(loaded.recommend_batch(users, n=10)[0], hybrid.recommend_batch(users, n=10)[0])
    assert loaded.explain(users[0], loaded.recommend(users[0], n=3)[0]) == hybrid.explain(
        users[0], hybrid.recommend(users[0], n=3)[0])
    mm = ps.load(path, mmap=True)
    np.testing.assert_array_equal(mm.recommend_batch(users, n=10)[0], hybrid.recommend_batch(users, n=10)[0])


def test_the_lightgbm_ranker_trains_saves_as_text_and_loads(split, features, tmp_path):
    pytest.importorskip("lightgbm", reason="pip install 'persona-recsys[ranking]' (LightGBM); the test extra has it")
    train, valid, test = split
    h = _small(ranker="lightgbm").fit(train, valid=valid, item_features=features[0])
    path = h.save(tmp_path / "lgb.persona")
    text = (path / "files" / "ranker.txt").read_text()
    assert text.startswith("tree\n")  # LightGBM's own model format
    loaded = ps.load(path)
    users = list(test.user_ids[:25])
    np.testing.assert_array_equal(loaded.recommend_batch(users, n=10)[0], h.recommend_batch(users, n=10)[0])
    imp = h.feature_importance()
    assert set(imp) == set(h.features_.names) and sum(imp.values()) > 0


def test_serving_through_the_service(hybrid, split):
    _, _, test = split
    svc = ps.serving.RecommenderService(hybrid)
    user = test.user_ids[test.users[0]]
    r = svc.recommend(user, n=5)
    assert r.source == "model" and len(r.items) == 5
    assert svc.recommend("a-stranger", n=5).source == "popular"


def test_bad_parameters_are_clear(split):
    train, valid, _ = split
    for params, match in [({"generators": {}}, "non-empty dict"), ({"generators": {"a b": ps.ALS()}}, "identifiers"),
                          ({"generators": {"x": 3}}, "persona model"), ({"candidates": 0}, "candidates"),
                          ({"ranker": "xgboost"}, "ranker"), ({"rerank": [object()]}, "re-rankers")]:
        with pytest.raises(ps.ParameterError, match=match):
            Hybrid(**params).fit(train, valid=valid)
    with pytest.raises(ps.DataError, match="valid"):
        _small().fit(train, valid="nope")
    with pytest.raises(ps.DataError, match="item_features has"):
        _small().fit(train, valid=valid, item_features=np.ones((3, 2)))


def test_serving_imports_no_lightgbm_trainer_for_the_logistic_ranker(hybrid, tmp_path):
    path = hybrid.save(tmp_path / "served.persona")
    code = ("import sys, persona as ps; m = ps.load(sys.argv[1]); m.recommend_batch(list(m.user_map_.ids[:3]), n=5);"
            "bad = [x for x in ('torch', 'lightgbm', 'numba') if x in sys.modules]; print(bad); sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_deep_generator_trains_once_and_its_onnx_graph_travels_in_the_artifact(split, tmp_path):
    pytest.importorskip("torch", reason="pip install 'persona-recsys[train]' (PyTorch) to fit SASRec")
    train, valid, test = split
    sas = ps.SASRec(factors=16, blocks=1, max_len=20, epochs=2, random_state=0)
    h = Hybrid(generators={"sasrec": sas, "knn": ps.ItemKNN(k=20)}, candidates=20, ranker="logistic").fit(
        train, valid=valid)
    served = h.generators_[0]
    assert len(served.history_) == 2  # trained once (stage 1); it then read train + valid's histories
    full = train.concat(valid)
    assert served.user_items_.nnz == full.matrix.nnz
    path = h.save(tmp_path / "deep.persona")
    assert any(p.name.startswith("gen0__") for p in (path / "files").iterdir())
    loaded = ps.load(path)
    users = list(test.user_ids[:15])
    np.testing.assert_array_equal(loaded.recommend_batch(users, n=10)[0], h.recommend_batch(users, n=10)[0])


def test_rerankers_and_rules_apply_after_the_ranker_and_survive_save_load(split, tmp_path):
    from persona.ranking import MMR, Pin, Rules

    train, valid, test = split
    pinned = train.item_ids[-1]
    mmr = MMR(diversity=0.5)
    h = _small(rerank=[mmr, Rules(pins=[Pin(pinned, 0)])]).fit(train, valid=valid)
    assert not hasattr(mmr, "n_items_")  # the re-ranker given is cloned, not fitted
    plain = _small().fit(train, valid=valid)
    users = [u for u in test.user_ids[:40]
             if pinned not in set(h.item_map_.ids[h.user_items_[h.user_map_.index_of(u)].indices])]
    ids, _ = h.recommend_batch(users, n=10)
    assert (ids[:, 0] == pinned).all()  # the pin holds position 0 for everyone who has not seen it
    base, _ = plain.recommend_batch(users, n=10)
    assert (ids != base).any()  # diversity changed some lists
    # a request filter that excludes the pin wins: it is not forced in, and 10 items still come back
    got, _ = h.recommend(users[0], n=10, exclude=[pinned])
    assert pinned not in got and len(got) == 10
    loaded = ps.load(h.save(tmp_path / "rr.persona"))
    np.testing.assert_array_equal(loaded.recommend_batch(users, n=10)[0], ids)
    assert repr(loaded.get_params()["rerank"]) == repr(h.reranker_.clone())


def test_cold_users_teach_the_ranker_about_visitors_with_demographics(split, features):
    train, valid, _ = split
    h = _small(cold_users=0.5).fit(train, valid=valid, item_features=features[0], user_features=features[1])
    plain = _small().fit(train, valid=valid, item_features=features[0], user_features=features[1])
    # more training groups: the hidden-history copies of about half the users (those with a positive)
    assert h.training_groups_ > plain.training_groups_
    visitor = {g: h.recommend_for_history([], n=10, user_features={"gender": g})[0] for g in ("F", "M")}
    assert all(len(v) == 10 for v in visitor.values())
    with pytest.raises(ps.ParameterError, match="cold_users"):
        _small(cold_users=1.5).fit(train, valid=valid)


def test_hostile_visitor_features_and_queries_get_clear_errors_or_plain_answers(hybrid, shop):
    # the input paths a web request can reach: a visitor's demographics and a search query
    for bad in (["gender"], "F", 3):
        with pytest.raises(ps.ParameterError, match="user_features"):
            hybrid.recommend_for_history([], n=5, user_features=bad)
    items, _ = hybrid.recommend_for_history([], n=5, user_features={"gender": "x" * 1_000_000})
    assert len(items) == 5  # an unseen value is a missing one, whatever its size
    search = ps.ProductSearch(shop.items, text=["name"], encoder=None, personalise=hybrid)
    ids, _ = search.search("cream " * 200_000, user=10 ** 30, n=3)  # huge query, huge unknown user id
    assert len(ids) <= 3
    with pytest.raises(ps.ParameterError, match="query"):
        search.search(b"cream", n=3)
