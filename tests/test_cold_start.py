"""Cold start (issue 14): new items in factor models through a feature map, new visitors described by features.

* ``fit(..., item_features=...)`` / ``add_items`` for every FactorModel (ALS, BPR, MF): the ridge map
  against a dense numpy reference, a copy of a known item lands on its vector, new items are
  recommended at once, saved as data, seen by retrieval indexes;
* ``recommend_for_history(..., user_features={field: value})`` for MostPopular (segments) and
  TwoTower (user tower), and refused by models that cannot read them;
* bad inputs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import persona as ps
from persona.data import Features, IdMap
from persona.models._cold import ridge_map

FACTOR_MODELS = {
    "ALS": lambda: ps.ALS(factors=8, iterations=5, random_state=0),
    "BPR": lambda: ps.BPR(factors=8, iterations=10, random_state=0, num_threads=1),
    "MF": lambda: ps.MF(factors=8, iterations=5, random_state=0),
}
SPEC = dict(categorical=["category", "brand"], numeric=["price"], tags=["tags"])


@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=300, n_items=60, seed=0)


@pytest.fixture(scope="module")
def catalogue(shop):
    """Features of the whole catalogue (more ids than the interactions hold: matched by id)."""
    return Features.from_frame(shop.items, IdMap(shop.items["item_id"].to_numpy()), "item_id", **SPEC)


@pytest.fixture(scope="module", params=sorted(FACTOR_MODELS))
def fitted(request, shop, catalogue):
    return FACTOR_MODELS[request.param]().fit(shop.interactions, item_features=catalogue)


def _new(shop, ids, rows=slice(0, None)):
    frame = shop.items.iloc[rows].head(len(ids)).copy()
    return frame.assign(item_id=ids)


# ---------------------------------------------------------------------- the ridge map
def _ridge_reference(x: np.ndarray, y: np.ndarray, reg: float):
    """min |y - x W - b|^2 + reg |W|^2 by the normal equations of [x, 1] with the intercept unpenalised."""
    a = np.hstack([x, np.ones((len(x), 1))])
    pen = np.eye(a.shape[1]) * reg
    pen[-1, -1] = 0.0
    beta = np.linalg.solve(a.T @ a + pen, a.T @ y)
    return beta[:-1], beta[-1]


@pytest.mark.parametrize("reg", [1e-3, 1.0, 30.0])
def test_ridge_map_matches_dense_reference(reg):
    rng = np.random.default_rng(0)
    x = sp.random(80, 12, density=0.3, random_state=1, dtype=np.float32).tocsr()
    y = rng.normal(size=(80, 5))
    W, b = ridge_map(x, y, reg)
    W_ref, b_ref = _ridge_reference(x.toarray().astype(np.float64), y, reg)
    np.testing.assert_allclose(W, W_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b, b_ref, rtol=1e-4, atol=1e-4)


def test_ridge_map_conjugate_gradients_agree_with_dense(monkeypatch):
    import persona.models._cold as cold

    rng = np.random.default_rng(2)
    x = sp.random(60, 20, density=0.25, random_state=3, dtype=np.float32).tocsr()
    y = rng.normal(size=(60, 3))
    dense = ridge_map(x, y, 0.5)
    monkeypatch.setattr(cold, "_DENSE_RIDGE", 4)  # force the sparse solver
    iterative = ridge_map(x, y, 0.5)
    np.testing.assert_allclose(iterative[0], dense[0], atol=1e-4)
    np.testing.assert_allclose(iterative[1], dense[1], atol=1e-4)


def test_fitted_map_is_ridge_on_the_trained_items(fitted, shop, catalogue):
    rows = catalogue.reindex(fitted.item_map_).matrix.toarray().astype(np.float64)
    W_ref, b_ref = _ridge_reference(rows, fitted._feature_targets().astype(np.float64), 1.0)
    np.testing.assert_allclose(fitted.item_feature_weights_, W_ref, atol=2e-3)
    np.testing.assert_allclose(fitted.item_feature_bias_, b_ref, atol=2e-3)


# ---------------------------------------------------------------------- add_items
@pytest.mark.parametrize("name", sorted(FACTOR_MODELS))
def test_copy_of_a_known_item_gets_nearly_its_vector(name, shop):
    """With one feature column per item (and a weak penalty) the map reproduces the trained vectors."""
    inter = shop.interactions
    n = inter.n_items
    x = sp.hstack([sp.eye(n, dtype=np.float32), sp.csr_matrix(np.ones((n, 1), np.float32))]).tocsr()
    model = FACTOR_MODELS[name]().fit(inter, item_features=x, feature_regularization=1e-4)
    twin = inter.item_ids[7]
    new = Features(x[7], [f"c{j}" for j in range(x.shape[1])], IdMap(["twin-of-7"]))
    model.add_items(new)
    targets = model._feature_targets()
    got, want = targets[model.item_map_.index_of("twin-of-7")], targets[model.item_map_.index_of(twin)]
    assert np.linalg.norm(got - want) <= 0.01 * np.linalg.norm(want) + 1e-4
    # and so it is recommended like its twin
    hist = [inter.item_ids[0]]
    ids, scores = model.recommend_for_history(hist, n=model.n_items)
    pos = {i: r for r, i in enumerate(ids.tolist())}
    assert abs(pos["twin-of-7"] - pos[twin]) <= 1


def test_new_items_are_recommended_at_once(fitted, shop):
    model = _copy(fitted)
    n_before, before = model.n_items, model.recommend_batch(model.user_map_.ids[:5], n=5)
    new = _new(shop, ["new-a", "new-b", "new-c"])
    model.add_items(new)
    assert model.n_items == n_before + 3 and model.item_factors_.shape[0] == model.n_items
    assert model.user_items_.shape == (model.n_users, model.n_items)
    user = model.user_map_.ids[0]
    ids, _ = model.recommend(user, n=3, items=["new-a", "new-b", "new-c"])
    assert sorted(ids.tolist()) == ["new-a", "new-b", "new-c"]
    assert "new-a" in model.recommend(user, n=model.n_items)[0].tolist()
    assert len(model.similar_items("new-a", n=3)[0]) == 3
    assert len(model.recommend_users("new-a", n=3)[0]) == 3
    assert len(model.recommend_for_history(["new-a", "new-b"], n=4)[0]) == 4
    # the known users' answers among the old items do not move (their vectors did not change)
    after = model.recommend_batch(model.user_map_.ids[:5], n=5, items=list(model.item_map_.ids[:n_before]))
    np.testing.assert_array_equal(before[0], after[0])
    assert fitted.n_items == n_before  # the copy's change did not reach the original


def test_new_item_vector_is_the_map_of_its_features(fitted, shop, catalogue):
    model = _copy(fitted)
    new = _new(shop, ["new-x"], slice(3, None))
    model.add_items(new)
    x = catalogue.transform(new).matrix.toarray()
    want = x @ model.item_feature_weights_ + model.item_feature_bias_
    np.testing.assert_allclose(model._feature_targets()[model.item_map_.index_of("new-x")], want[0], rtol=1e-5,
                               atol=1e-6)


def test_known_items_refused_or_skipped(fitted, shop, catalogue):
    model = _copy(fitted)
    known = shop.interactions.item_ids[:2]
    with pytest.raises(ps.DataError, match="already known"):
        model.add_items(_new(shop, list(known)))
    kept = model.item_factors_[model.item_map_.lookup(known)].copy()
    model.add_items(_new(shop, [*known, "new-z"]), known="skip")
    np.testing.assert_array_equal(model.item_factors_[model.item_map_.lookup(known)], kept)
    assert "new-z" in model.item_map_
    # the whole catalogue, with "skip", adds exactly the items without events
    n = model.n_items
    model.add_items(catalogue, known="skip")
    missing = set(shop.items["item_id"]) - set(shop.interactions.item_ids.tolist())
    assert model.n_items == n + len(missing)


def test_save_load_then_add_items(fitted, shop, tmp_path):
    model = _copy(fitted)
    model.save(tmp_path / "m")
    loaded = ps.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.item_feature_weights_, fitted.item_feature_weights_)
    new = _new(shop, ["new-a", "new-b"], slice(5, None))
    model.add_items(new)
    loaded.add_items(new)  # a DataFrame: encoded with the spec kept in the artifact
    np.testing.assert_array_equal(loaded.item_factors_, model.item_factors_)
    user = model.user_map_.ids[1]
    np.testing.assert_array_equal(loaded.recommend(user, n=10)[0], model.recommend(user, n=10)[0])
    # the added items survive a second save and load
    loaded.save(tmp_path / "m2")
    again = ps.load(tmp_path / "m2")
    assert "new-b" in again.item_map_ and again.n_items == model.n_items


def test_index_sees_new_items(fitted, shop):
    model = _copy(fitted).use_index("exact")
    model.add_items(_new(shop, ["new-a", "new-b"]))
    assert model.index_.n == model.n_items
    user = model.user_map_.ids[2]
    ids, _ = model.recommend(user, n=2, items=["new-a", "new-b"])
    assert sorted(ids.tolist()) == ["new-a", "new-b"]
    np.testing.assert_array_equal(model.recommend(user, n=10)[0],
                                  _copy(model).use_index(None).recommend(user, n=10)[0])
    assert "new-b" in model.similar_items("new-a", n=model.n_items - 1)[0].tolist()


def test_ready_index_must_be_replaced(fitted, shop):
    from persona.retrieval import make_index

    model = _copy(fitted)
    model.use_index(make_index(model._index_item_vectors(), metric="ip", kind="exact"))
    with pytest.raises(ps.ParameterError, match="use_index"):
        model.add_items(_new(shop, ["new-a"]))
    assert "new-a" not in model.item_map_


def test_refit_without_features_forgets_the_map(shop, catalogue):
    model = ps.ALS(factors=4, iterations=2, random_state=0).fit(shop.interactions, item_features=catalogue)
    model.fit(shop.interactions)
    assert model.item_feature_weights_ is None
    with pytest.raises(ps.UnsupportedError, match="item_features"):
        model.add_items(_new(shop, ["new-a"]))


def test_fit_keeps_its_own_options(shop, catalogue):
    model = ps.ALS(factors=4, iterations=2, random_state=0).fit(shop.interactions, item_features=catalogue,
                                                                compute_loss=True)
    assert len(model.loss_history_) == 2 and model.item_feature_weights_ is not None


# ---------------------------------------------------------------------- bad inputs (items)
@pytest.mark.parametrize("bad, error, match", [
    (lambda inter: sp.eye(inter.n_items + 1, format="csr"), ps.DataError, "one row per item"),
    (lambda inter: [[1.0]] * inter.n_items, ps.DataError, "Features or a scipy sparse matrix"),
    (lambda inter: np.full((inter.n_items, 2), np.nan), ps.DataError, "finite"),
    (lambda inter: Features(sp.eye(3, format="csr"), ["a", "b", "c"], IdMap([1, 2, 3])), ps.DataError, "none of"),
])
def test_bad_item_features(shop, bad, error, match):
    with pytest.raises(error, match=match):
        ps.ALS(factors=4, iterations=1).fit(shop.interactions, item_features=bad(shop.interactions))


@pytest.mark.parametrize("reg", [0, -1.0, float("nan"), "1", True])
def test_bad_feature_regularization(shop, catalogue, reg):
    with pytest.raises(ps.ParameterError, match="feature_regularization"):
        ps.ALS(factors=4, iterations=1).fit(shop.interactions, item_features=catalogue, feature_regularization=reg)


def test_bad_add_items(fitted, shop):
    model = _copy(fitted)
    other = Features.from_frame(shop.items, IdMap(shop.items["item_id"].to_numpy()), "item_id",
                                categorical=["category"])
    with pytest.raises(ps.DataError, match="columns"):
        model.add_items(other)
    with pytest.raises(ps.DataError, match="Features or a pandas DataFrame"):
        model.add_items(np.zeros((1, model.item_feature_weights_.shape[0])))
    with pytest.raises(ps.DataError, match=r"\['brand'\] not found"):
        model.add_items(_new(shop, ["x"]).drop(columns=["brand"]))
    with pytest.raises(ps.ParameterError, match="known"):
        model.add_items(_new(shop, ["x"]), known="update")
    with pytest.raises(ps.DataError, match="kind"):
        model.add_items(_new(shop, [12345]))
    matrix_fitted = ps.ALS(factors=4, iterations=1).fit(
        shop.interactions, item_features=sp.eye(shop.interactions.n_items, format="csr"))
    with pytest.raises(ps.DataError, match="cannot encode"):
        matrix_fitted.add_items(_new(shop, ["x"]))
    assert model.n_items == fitted.n_items  # nothing was added by the refused calls


def _copy(model):
    import copy

    out = copy.copy(model)
    for name in ("index_", "similar_index_", "_index_spec"):
        if hasattr(model, name):
            setattr(out, name, getattr(model, name))
    return out


# ---------------------------------------------------------------------- new visitors: segment popularity
def _segmented():
    """Segment "a" buys items a0..a5, segment "b" items b0..b5; "pop" is bought by everyone."""
    rows, segments = [], {}
    rng = np.random.default_rng(0)
    for u in range(60):
        seg = "a" if u % 2 == 0 else "b"
        segments[f"u{u}"] = seg
        rows.append((f"u{u}", "pop"))
        rows += [(f"u{u}", f"{seg}{j}") for j in rng.choice(6, 3, replace=False)]
    return ps.Interactions.from_records(rows), pd.Series(segments, name="segment")


def test_segment_popularity_for_a_new_visitor():
    inter, segments = _segmented()
    model = ps.MostPopular(segment_shrinkage=0.0).fit(inter, user_segments=segments)
    a, _ = model.recommend_for_history([], n=4, user_features={"segment": "a"})
    b, _ = model.recommend_for_history([], n=4, user_features={"segment": "b"})
    assert a[0] == "pop" and b[0] == "pop"
    assert all(i.startswith("a") for i in a[1:]) and all(i.startswith("b") for i in b[1:])
    np.testing.assert_array_equal(a, model.top_items(4, segment="a")[0])
    # the history is filtered as usual
    assert "pop" not in model.recommend_for_history(["pop"], n=3, user_features={"segment": "a"})[0].tolist()
    # a segment never seen, or none given, is the global list
    glob, _ = model.recommend_for_history([], n=4)
    np.testing.assert_array_equal(model.recommend_for_history([], n=4, user_features={"segment": "zz"})[0], glob)
    np.testing.assert_array_equal(model.recommend_for_history([], n=4, user_features={})[0], glob)
    # batch == singles
    ids, _ = model.recommend_for_history_batch([[], [], []], n=4, user_features=[{"segment": "b"}, None,
                                                                                   {"segment": "a"}])
    np.testing.assert_array_equal(ids[0], b)
    np.testing.assert_array_equal(ids[1], glob)
    np.testing.assert_array_equal(ids[2], a)


def test_segment_beats_knowing_nothing():
    """New visitors of each segment: the segment's list finds more of their items than the global one."""
    inter, segments = _segmented()
    model = ps.MostPopular().fit(inter, user_segments=segments)
    hits = {"segment": 0, "global": 0}
    for seg in ("a", "b"):
        wanted = {f"{seg}{j}" for j in range(6)}
        with_seg = model.recommend_for_history(["pop"], n=3, user_features={"segment": seg})[0]
        without = model.recommend_for_history(["pop"], n=3)[0]
        hits["segment"] += len(wanted & set(with_seg.tolist()))
        hits["global"] += len(wanted & set(without.tolist()))
    assert hits["segment"] == 6 and hits["global"] < 6


def test_segment_field_and_save_load(tmp_path):
    inter, segments = _segmented()
    model = ps.MostPopular(segment_shrinkage=0.0).fit(inter, user_segments=segments.rename("tier"))
    assert model.segment_field_ == "tier"
    with pytest.raises(ps.ParameterError, match="'tier'"):
        model.recommend_for_history([], n=2, user_features={"segment": "a"})
    want = model.recommend_for_history([], n=4, user_features={"tier": "b"})[0]
    model.save(tmp_path / "pop")
    loaded = ps.load(tmp_path / "pop")
    assert loaded.segment_field_ == "tier"
    np.testing.assert_array_equal(loaded.recommend_for_history([], n=4, user_features={"tier": "b"})[0], want)
    # segments as a dict: the field is "segment"
    plain = ps.MostPopular().fit(inter, user_segments=segments.to_dict())
    assert plain.segment_field_ == "segment"


def test_visitor_features_answer_before_the_fallback():
    """An empty history with known features is the model's to answer; without them the fallback's."""
    inter, segments = _segmented()
    model = ps.MostPopular(segment_shrinkage=0.0).fit(inter, user_segments=segments)
    fallback = ps.MostPopular().fit(ps.Interactions.from_records([("x", "b5"), ("y", "b5")]))
    model.set_fallback(fallback)
    assert model.recommend_for_history([], n=1)[0].tolist() == ["b5"]
    assert model.recommend_for_history([], n=1, user_features={"segment": "a"})[0].tolist() == ["pop"]
    assert model.recommend_for_history([], n=1, user_features={"segment": "zz"})[0].tolist() == ["b5"]


def test_bad_user_features():
    inter, segments = _segmented()
    model = ps.MostPopular().fit(inter, user_segments=segments)
    with pytest.raises(ps.ParameterError, match="dict"):
        model.recommend_for_history([], n=2, user_features=["a"])
    with pytest.raises(ps.ParameterError, match="one dict"):
        model.recommend_for_history_batch([[], []], n=2, user_features=[{"segment": "a"}])
    with pytest.raises(ps.ParameterError, match="one dict"):
        model.recommend_for_history_batch([[]], n=2, user_features={"segment": "a"})
    with pytest.raises(ps.ParameterError, match="user_segments"):
        ps.MostPopular().fit(inter).recommend_for_history([], n=2, user_features={"segment": "a"})
    als = ps.ALS(factors=2, iterations=1).fit(inter)
    with pytest.raises(ps.UnsupportedError, match="user_features"):
        als.recommend_for_history(["a0"], n=2, user_features={"segment": "a"})
    with pytest.raises(ps.UnsupportedError, match="user_features"):
        als.recommend_for_history_batch([["a0"]], n=2, user_features=[{"segment": "a"}])


def test_rerank_wrapper_refuses_user_features_cleanly():
    inter, segments = _segmented()
    wrapped = ps.ranking.Reranked(ps.MostPopular().fit(inter, user_segments=segments), ps.ranking.MMR())
    with pytest.raises(ps.UnsupportedError, match="user_features"):
        wrapped.recommend_for_history([], n=2, user_features={"segment": "a"})


# ---------------------------------------------------------------------- new visitors: TwoTower's user tower
TINY = dict(factors=16, hidden=32, max_history=10, epochs=30, learning_rate=1e-2, batch_size=64, random_state=0,
            num_threads=1, valid=None)


@pytest.fixture(scope="module")
def towers():
    pytest.importorskip("torch")
    rows, users = [], []
    rng = np.random.default_rng(0)
    for u in range(120):
        seg = "a" if u % 2 == 0 else "b"
        users.append((f"u{u}", seg, int(rng.integers(18, 70))))
        rows += [(f"u{u}", f"{seg}{j}", t) for t, j in enumerate(rng.choice(8, 4, replace=False))]
    inter = ps.Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item", "t"]), user="user", item="item",
                                       time="t")
    frame = pd.DataFrame(users, columns=["user_id", "segment", "age"])
    feats = Features.from_frame(frame, inter.user_map, "user_id", categorical=["segment"], numeric=["age"])
    params = {k: v for k, v in TINY.items() if k != "valid"}
    model = ps.TwoTower(**params).fit(inter, user_features=feats, valid=None)
    return inter, model


def test_twotower_visitor_by_features(towers):
    inter, model = towers
    a, _ = model.recommend_for_history([], n=4, user_features={"segment": "a", "age": 30})
    b, _ = model.recommend_for_history([], n=4, user_features={"segment": "b"})
    # each group's list is its own items; knowing nothing (no history, no features) is popularity
    assert sum(i.startswith("a") for i in a) >= 3 and sum(i.startswith("b") for i in b) >= 3
    nothing, _ = model.recommend_for_history([], n=4)
    np.testing.assert_array_equal(nothing, inter.item_ids[np.argsort(-model.item_popularity_, kind="stable")[:4]])
    ids, _ = model.recommend_for_history_batch([[], ["a1"]], n=4, user_features=[{"segment": "b"}, {"segment": "a"}])
    np.testing.assert_array_equal(ids[0], b)
    assert "a1" not in ids[1].tolist()


def test_twotower_visitor_features_save_load(towers, tmp_path):
    _, model = towers
    want = model.recommend_for_history(["b2"], n=5, user_features={"segment": "a", "age": 50})
    model.save(tmp_path / "tt")
    loaded = ps.load(tmp_path / "tt")
    got = loaded.recommend_for_history(["b2"], n=5, user_features={"segment": "a", "age": 50})
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5)


def test_twotower_bad_visitor_features(towers):
    inter, model = towers
    with pytest.raises(ps.ParameterError, match="unknown field"):
        model.recommend_for_history([], n=2, user_features={"segmnet": "a"})
    with pytest.raises(ps.ParameterError, match="numeric"):
        model.recommend_for_history([], n=2, user_features={"age": "old"})
    params = {k: v for k, v in TINY.items() if k != "valid"}
    no_users = ps.TwoTower(**{**params, "epochs": 1}).fit(inter, valid=None)
    with pytest.raises(ps.ParameterError, match="fitted with user_features"):
        no_users.recommend_for_history([], n=2, user_features={"segment": "a"})
