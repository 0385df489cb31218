"""TwoTower: both ONNX towers' parity with PyTorch, cold start with add_items, serving without torch, the contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp

import persona as ps
from persona.data import Features, IdMap, Interactions
from persona.models.twotower import TwoTower, _first_touches

from contract import RecommenderContract

torch = pytest.importorskip("torch")

TINY = dict(factors=16, hidden=32, max_history=10, epochs=4, learning_rate=5e-3, batch_size=128, random_state=0,
            num_threads=1)
ITEM_SPEC = dict(categorical=["category", "brand"], numeric=["price"], tags=["tags"], text=["name"],
                 text_mode="hash", hash_dim=64)


@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=300, n_items=80, seed=1)


@pytest.fixture(scope="module")
def feats(shop):
    """Item features over the whole catalogue, user features over every customer."""
    items = Features.from_frame(shop.items, IdMap(shop.items["item_id"].to_numpy()), "item_id", **ITEM_SPEC)
    users = Features.from_frame(shop.users, IdMap(shop.users["user_id"].to_numpy()), "user_id",
                                categorical=["gender", "segment", "spending_level"], numeric=["age"])
    return items, users


@pytest.fixture(scope="module")
def split(shop):
    return ps.split.leave_last_out(shop.interactions, new_items=True)


@pytest.fixture(scope="module")
def tiny(split, feats):
    train, valid, _ = split
    return TwoTower(**{**TINY, "epochs": 5}).fit(train, item_features=feats[0], user_features=feats[1],
                                                 valid=valid)


# ---------------------------------------------------------------------- torch references
def _torch_items(model, x: np.ndarray, id_part: np.ndarray) -> np.ndarray:
    """The item tower in PyTorch on dense inputs (the exported computation)."""
    net = model._network
    with torch.no_grad():
        first = torch.from_numpy(x) @ net.item_in.weight
        return net.item_vectors(first, torch.from_numpy(id_part)).numpy()


def _torch_users(model, x: np.ndarray) -> np.ndarray:
    net, fu, d = model._network, model.n_user_features_, model.factors
    with torch.no_grad():
        t = torch.from_numpy(x)
        first = t[:, :fu] @ net.user_in.weight if fu else None
        return net.user_vectors(first, t[:, fu:fu + d], t[:, fu + d:]).numpy()


def _torch_user_vectors(model, users: np.ndarray) -> np.ndarray:
    """User vectors computed end to end in PyTorch (sparse first layers, torch item vectors)."""
    ctx = model._torch_context
    with torch.no_grad():
        return ctx.users_of_tokens(users, model.user_tokens_[users].astype(np.int64), ctx.all_items()).numpy()


# ---------------------------------------------------------------------- the ONNX towers
def test_item_tower_onnx_matches_pytorch(tiny, feats):
    rng = np.random.default_rng(0)
    fi, d = tiny.n_item_features_, tiny.factors
    random_x = rng.normal(size=(50, fi)).astype(np.float32) * (rng.random((50, fi)) < 0.1)
    random_ids = rng.normal(size=(50, d)).astype(np.float32)
    rows = feats[0].id_map.lookup(tiny.item_map_.ids)
    real_x = feats[0].matrix[rows].toarray()
    real_ids = tiny._network.ids.weight.detach().numpy() * (tiny.item_popularity_ > 0)[:, None]
    for x, ids in ((random_x, random_ids), (real_x, real_ids), (real_x[:1], np.zeros((1, d), np.float32))):
        got = tiny.item_encoder_.run(np.ascontiguousarray(np.hstack([x, ids]), dtype=np.float32))
        want = _torch_items(tiny, x.astype(np.float32), ids.astype(np.float32))
        assert got.shape == (len(x), d) and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-4
    # the kept item vectors are the tower's output on the real inputs
    assert np.abs(tiny.item_encoder_.run(np.hstack([real_x, real_ids]).astype(np.float32))
                  - tiny.item_factors_).max() <= 1e-4
    # encode_items is the tower without the id part
    np.testing.assert_allclose(tiny.encode_items(feats[0].matrix[rows[:7]]),
                               _torch_items(tiny, real_x[:7], np.zeros((7, d), np.float32)), atol=1e-4)


def test_user_tower_onnx_matches_pytorch(tiny):
    rng = np.random.default_rng(1)
    fu, d = tiny.n_user_features_, tiny.factors
    assert fu > 0
    random_x = rng.normal(size=(40, fu + 2 * d)).astype(np.float32)
    users = np.arange(tiny.n_users)
    mean, last = tiny._pool(tiny.user_tokens_[users].astype(np.int64))
    real_x = np.hstack([tiny.user_features_.toarray(), mean, last]).astype(np.float32)
    for x in (random_x, real_x, real_x[:1]):
        assert np.abs(tiny.user_encoder_.run(x) - _torch_users(tiny, x)).max() <= 1e-4
    # end to end: numpy pooling + onnxruntime == PyTorch's sparse path
    assert np.abs(tiny.user_vectors() - _torch_user_vectors(tiny, users)).max() <= 1e-4


def test_recommend_equals_pytorch_ranking(tiny):
    users = np.arange(0, tiny.n_users, 5)
    with torch.no_grad():
        items = tiny._torch_context.all_items().numpy()
    want = _torch_user_vectors(tiny, users) @ items.T
    ids, scores = tiny.recommend_batch(tiny.user_map_.ids[users], n=10)
    for row, u in enumerate(users):
        s = want[row].copy()
        s[tiny.user_items_[u].indices] = -np.inf
        np.testing.assert_array_equal(ids[row], tiny.item_map_.ids[np.argsort(-s, kind="stable")[:10]])
        np.testing.assert_allclose(scores[row], np.sort(s)[::-1][:10], atol=1e-4)


def test_graphs_have_dynamic_batch_and_opset(tiny):
    import onnx

    for raw, width in ((tiny.item_encoder_onnx_, tiny.n_item_features_ + tiny.factors),
                       (tiny.user_encoder_onnx_, tiny.n_user_features_ + 2 * tiny.factors)):
        graph = onnx.load_from_string(raw)
        assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
        dims = graph.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param and dims[1].dim_value == width


# ---------------------------------------------------------------------- serving behaviour
def test_history_serving(tiny, split):
    inter = split[0]
    known = list(inter.item_ids[[3, 9, 4]])
    a, sa = tiny.recommend_for_history(known, n=5)
    b, sb = tiny.recommend_for_history([known[0], "no-such-item", known[1], known[2]], n=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-6)
    assert not set(a.tolist()) & set(known)
    # the newest item counts on its own: order matters
    _, s1 = tiny.recommend_for_history(known, n=20, filter_seen=False)
    _, s2 = tiny.recommend_for_history(known[::-1], n=20, filter_seen=False)
    assert not np.allclose(s1, s2)
    # an empty history gets the most popular items
    empty, _ = tiny.recommend_for_history([], n=3)
    np.testing.assert_array_equal(empty, tiny.item_map_.ids[np.argsort(-tiny.item_popularity_, kind="stable")[:3]])


def test_similar_items_and_audience(tiny):
    v = tiny.item_factors_
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    ids, scores = tiny.similar_items(tiny.item_map_.ids[0], n=5)
    s = v[1:] @ v[0]
    np.testing.assert_array_equal(ids, tiny.item_map_.ids[1 + np.argsort(-s, kind="stable")[:5]])
    np.testing.assert_allclose(scores, np.sort(s)[::-1][:5], rtol=1e-5)
    users, _ = tiny.recommend_users(tiny.item_map_.ids[2], n=5)
    want = tiny.user_vectors() @ v[2]
    np.testing.assert_array_equal(users, tiny.user_map_.ids[np.argsort(-want, kind="stable")[:5]])


def test_exact_index_gives_the_same_recommendations(tiny, shop, tmp_path):
    import copy

    m = copy.copy(tiny)
    users = m.user_map_.ids[:25]
    mask = np.ones(m.n_items, dtype=bool)
    mask[::4] = False
    want = m.recommend_batch(users, n=7, mask=mask, exclude=[m.item_map_.ids[1]])
    want_sim = m.similar_items(m.item_map_.ids[3], n=6)
    m.use_index("exact")
    got = m.recommend_batch(users, n=7, mask=mask, exclude=[m.item_map_.ids[1]])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(m.similar_items(m.item_map_.ids[3], n=6)[0], want_sim[0])
    loaded = ps.load(m.save(tmp_path / "indexed.persona"))
    assert loaded.index_ is not None
    np.testing.assert_array_equal(loaded.recommend_batch(users, n=7, mask=mask, exclude=[m.item_map_.ids[1]])[0],
                                  want[0])
    # add_items rebuilds the index: the new items are found through it, as without it
    new = shop.items.iloc[:3].assign(item_id=["idx-a", "idx-b", "idx-c"])
    m.add_items(new)
    plain = copy.copy(tiny).add_items(new)
    assert m.index_ is not None and getattr(plain, "index_", None) is None
    np.testing.assert_array_equal(m.recommend_batch(users, n=9)[0], plain.recommend_batch(users, n=9)[0])
    np.testing.assert_array_equal(m.similar_items("idx-b", n=4)[0], plain.similar_items("idx-b", n=4)[0])


# ---------------------------------------------------------------------- training
def test_loss_decreases_and_validation_is_tracked(tiny):
    h = tiny.history_
    assert len(h) == 5 and h[-1]["loss"] < h[0]["loss"]
    assert all(0 <= r["valid_ndcg@10"] <= 1 for r in h)
    assert tiny.best_epoch_ == max(range(len(h)), key=lambda e: h[e]["valid_ndcg@10"]) + 1


def test_early_stopping_keeps_the_best_epoch(split, feats):
    train, valid, _ = split
    m = TwoTower(**{**TINY, "epochs": 30, "learning_rate": 0.05, "patience": 2}).fit(
        train, item_features=feats[0], valid=valid)
    scores = [r["valid_ndcg@10"] for r in m.history_]
    assert m.best_epoch_ == int(np.argmax(scores)) + 1
    if len(scores) < 30:
        assert len(scores) - m.best_epoch_ == 2
    rep = ps.evaluate(m, valid, k=(10,), metrics=("ndcg",))
    assert rep["ndcg@10"] == pytest.approx(max(scores), abs=1e-4)


def test_same_seed_same_vectors(split, feats):
    train = split[0]
    a = TwoTower(**TINY).fit(train, item_features=feats[0])
    b = TwoTower(**TINY).fit(train, item_features=feats[0])
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    c = TwoTower(**{**TINY, "random_state": 1}).fit(train, item_features=feats[0])
    assert not np.array_equal(a.item_factors_, c.item_factors_)


def test_beats_most_popular(split, feats):
    train, valid, _ = split
    m = TwoTower(**{**TINY, "epochs": 15, "temperature": 0.1}).fit(train, item_features=feats[0])
    hr = ps.evaluate(m, valid, k=(10,), metrics=("hr",))["hr@10"]
    pop = ps.evaluate(ps.MostPopular().fit(train), valid, k=(10,), metrics=("hr",))["hr@10"]
    assert hr > pop + 0.05, (hr, pop)  # measured 0.50-0.52 (seeds 0-2) against 0.39


# ---------------------------------------------------------------------- cold start
def _hold_out(shop, fraction: float, seed: int):
    """Warm training events (cold items absent from the item map), cold ids, (history, cold target) pairs."""
    inter = shop.interactions
    rng = np.random.default_rng(seed)
    cold_ids = rng.choice(shop.items["item_id"].to_numpy(), size=round(fraction * len(shop.items)), replace=False)
    cold = np.isin(inter.item_ids, cold_ids)
    seq, indptr = _first_touches(inter)
    histories, targets = [], []
    for u in range(inter.n_users):
        s = seq[indptr[u]:indptr[u + 1]]
        hit = np.flatnonzero(cold[s])
        if len(hit) and hit[0] >= 2:
            histories.append(list(inter.item_ids[s[:hit[0]]]))
            targets.append(inter.item_ids[s[hit[0]]])
    keep = ~cold[inter.items]
    remap = np.cumsum(~cold) - 1
    train = Interactions(inter.user_map, IdMap(inter.item_ids[~cold]), inter.users[keep], remap[inter.items[keep]],
                         timestamps=inter.timestamps[keep])
    return train, cold_ids, histories, np.asarray(targets)


def test_cold_items_added_with_add_items_are_ranked_well():
    shop = ps.datasets.synthetic_shop(n_users=800, n_items=200, seed=7)
    train, cold_ids, histories, targets = _hold_out(shop, 0.1, seed=7)
    assert len(targets) >= 100
    catalogue = IdMap(shop.items["item_id"].to_numpy())
    feats = Features.from_frame(shop.items, catalogue, "item_id", **ITEM_SPEC)
    m = TwoTower(**{**TINY, "epochs": 6}).fit(train, item_features=feats)
    assert not set(cold_ids) & set(m.item_map_.ids.tolist())
    m.add_items(feats.transform(shop.items[shop.items["item_id"].isin(cold_ids)]))
    assert m.n_items == 200 and set(cold_ids) <= set(m.item_map_.ids.tolist())
    ranked, _ = m.recommend_for_history_batch(histories, n=5, items=cold_ids)
    hr5 = float((ranked == targets[:, None]).any(axis=1).mean())
    chance = 5 / len(cold_ids)
    assert hr5 > chance + 0.2, (hr5, chance)  # measured ~0.6 against a chance of 0.25
    # and over all items the cold target is found far more often than by chance
    ranked_all, _ = m.recommend_for_history_batch(histories, n=20)
    assert (ranked_all == targets[:, None]).any(axis=1).mean() > 3 * 20 / 200


def test_add_items_appends_and_filters(tiny, shop, feats):
    import copy

    m = copy.copy(tiny)
    new = shop.items.iloc[:3].assign(item_id=["new-a", "new-b", "new-c"])
    n_before = m.n_items
    before = m.recommend_batch(m.user_map_.ids[:5], n=5, items=list(m.item_map_.ids[:30]))
    m.add_items(new)  # a DataFrame, encoded with the saved encoding
    assert m.n_items == n_before + 3 and m.item_factors_.shape == (n_before + 3, m.factors)
    assert m.user_items_.shape == (m.n_users, n_before + 3)
    np.testing.assert_array_equal(m.item_factors_[:n_before], tiny.item_factors_)  # old vectors unchanged
    # a new item's vector is the item tower on its features alone
    np.testing.assert_allclose(m.item_factors_[m.item_map_.index_of("new-b")],
                               m.encode_items(feats[0].transform(new.iloc[[1]]))[0], atol=1e-6)
    ids, _ = m.recommend(m.user_map_.ids[0], n=3, items=["new-a", "new-b", "new-c", "no-such"])
    assert sorted(ids.tolist()) == ["new-a", "new-b", "new-c"]
    ids, _ = m.recommend(m.user_map_.ids[0], n=m.n_items, exclude=["new-a"])
    assert "new-a" not in ids.tolist() and "new-b" in ids.tolist()
    mask = np.ones(m.n_items, dtype=bool)
    mask[m.item_map_.index_of("new-c")] = False
    assert "new-c" not in m.recommend(m.user_map_.ids[0], n=m.n_items, mask=mask)[0].tolist()
    assert len(m.recommend_for_history(["new-a", "new-b"], n=4)[0]) == 4
    assert len(m.similar_items("new-a", n=3)[0]) == 3
    # known users' recommendations among old items do not move
    after = m.recommend_batch(m.user_map_.ids[:5], n=5, items=list(m.item_map_.ids[:30]))
    np.testing.assert_array_equal(before[0], after[0])
    # known items are refused, or skipped on request; never updated
    with pytest.raises(ps.DataError, match="already known"):
        m.add_items(new)
    kept = m.item_factors_[m.item_map_.lookup(["new-a", "new-b"])].copy()
    m.add_items(shop.items.iloc[:5].assign(item_id=["new-a", "new-d", "new-b", "new-e", "new-f"]), known="skip")
    assert m.n_items == n_before + 6
    np.testing.assert_array_equal(m.item_factors_[m.item_map_.lookup(["new-a", "new-b"])], kept)
    # the tiny model is untouched
    assert tiny.n_items == n_before and "new-a" not in tiny.item_map_


def test_add_items_bad_inputs(tiny, shop, feats, split):
    import copy

    m = copy.copy(tiny)
    with pytest.raises(ps.DataError, match="Features or a pandas DataFrame"):
        m.add_items(np.zeros((2, m.n_item_features_)))
    other = Features.from_frame(shop.items, IdMap(shop.items["item_id"].to_numpy()), "item_id",
                                categorical=["category"])
    with pytest.raises(ps.DataError, match="columns"):
        m.add_items(other)
    with pytest.raises(ps.DataError, match=r"\['brand'\] not found"):
        m.add_items(shop.items.drop(columns=["brand"]).assign(item_id="x-new"))
    with pytest.raises(ps.ParameterError, match="known"):
        m.add_items(shop.items.iloc[:1], known="update")
    ids_only = TwoTower(**{**TINY, "epochs": 1}).fit(split[0])
    with pytest.raises(ps.UnsupportedError, match="without item_features"):
        ids_only.add_items(shop.items.iloc[:1].assign(item_id="x-new"))


# ---------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("bad", [
    {"factors": 0}, {"hidden": -1}, {"max_history": 2.5}, {"temperature": 0}, {"temperature": float("inf")},
    {"id_dropout": 1.5}, {"dropout": 1.0}, {"learning_rate": 0}, {"learning_rate": float("nan")},
    {"weight_decay": -1.0}, {"epochs": 0}, {"batch_size": 1}, {"batch_size": True}, {"patience": 0},
    {"logq": 1}, {"item_ids": "yes"}, {"random_state": -1}, {"num_threads": -2},
])
def test_bad_parameters(bad, split, feats):
    with pytest.raises(ps.ParameterError):
        TwoTower(**{**TINY, **bad}).fit(split[0], item_features=feats[0])


def test_bad_data(split, feats, shop):
    train, _, _ = split
    with pytest.raises(ps.DataError, match="valid"):
        TwoTower(**TINY).fit(train, item_features=feats[0], valid=[1, 2])
    with pytest.raises(ps.DataError, match="item_features must be a persona.data.Features"):
        TwoTower(**TINY).fit(train, item_features=shop.items)
    with pytest.raises(ps.DataError, match="user_features must be a persona.data.Features"):
        TwoTower(**TINY).fit(train, user_features=sp.eye(train.n_users))
    part = shop.items.iloc[:40]  # features of only some of the items
    some = Features.from_frame(part, IdMap(part["item_id"].to_numpy()), "item_id", categorical=["category"])
    with pytest.raises(ps.DataError, match=r"item_features has no row for \d+ of the 80 ids"):
        TwoTower(**TINY).fit(train, item_features=some)
    nan = Features(sp.csr_matrix(np.full((train.n_items, 2), np.nan, np.float32)), ["a", "b"], train.item_map)
    with pytest.raises(ps.DataError, match="NaN"):
        TwoTower(**TINY).fit(train, item_features=nan)
    with pytest.raises(ps.ParameterError, match="item_ids=False needs item_features"):
        TwoTower(**{**TINY, "item_ids": False}).fit(train)
    one = ps.Interactions.from_records([{"u": 1, "i": "a"}, {"u": 2, "i": "b"}], user="u", item="i")
    with pytest.raises(ps.DataError, match="at least 2"):
        TwoTower(**TINY).fit(one)


def test_features_only_model_works(split, feats):
    train, valid, _ = split
    m = TwoTower(**{**TINY, "item_ids": False}).fit(train, item_features=feats[0])
    assert m._network.ids is None
    rows = feats[0].id_map.lookup(m.item_map_.ids)
    # with no id part, every item vector is the item tower on its features
    np.testing.assert_allclose(m.encode_items(feats[0].matrix[rows]), m.item_factors_, atol=1e-4)
    assert ps.evaluate(m, valid, k=(10,), metrics=("hr",))["hr@10"] > 0


# ---------------------------------------------------------------------- persistence
def test_save_load_round_trip(tiny, tmp_path):
    path = tiny.save(tmp_path / "tt.persona")
    assert (path / "files" / "item_tower.onnx").exists() and (path / "files" / "user_tower.onnx").exists()
    manifest = json.loads((path / "manifest.json").read_text())
    spec = manifest["meta"]["state"]["item_feature_spec"]
    assert spec["id_column"] == "item_id" and spec["columns"] == tiny.item_feature_columns_  # JSON data
    loaded = ps.load(path)
    assert isinstance(loaded, TwoTower) and loaded.get_params() == tiny.get_params()
    np.testing.assert_array_equal(loaded.item_factors_, tiny.item_factors_)
    assert (loaded.user_features_ != tiny.user_features_).nnz == 0
    users = tiny.user_map_.ids[:20]
    a, sa = tiny.recommend_batch(users, n=8)
    b, sb = loaded.recommend_batch(users, n=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)
    assert loaded.best_epoch_ == tiny.best_epoch_ and loaded.history_ == tiny.history_


def test_corrupted_graph_is_refused(tiny, tmp_path):
    path = tiny.save(tmp_path / "tt.persona")
    graph = path / "files" / "user_tower.onnx"
    raw = bytearray(graph.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    graph.write_bytes(bytes(raw))
    with pytest.raises(ps.ArtifactError, match="checksum"):
        ps.load(path)


def test_loads_serves_and_adds_items_without_torch(tiny, shop, tmp_path):
    path = tiny.save(tmp_path / "tt.persona")
    user = tiny.user_map_.ids[5].item()
    want, _ = tiny.recommend(user, n=5)
    new_items = tmp_path / "new_items.json"
    shop.items.iloc[:4].assign(item_id=["n1", "n2", "n3", "n4"]).to_json(new_items, orient="records")
    import copy

    expected = copy.copy(tiny).add_items(shop.items.iloc[:4].assign(item_id=["n1", "n2", "n3", "n4"]))
    want_new, _ = expected.recommend(user, n=2, items=["n1", "n2", "n3", "n4"])
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import pandas as pd
        import persona as ps
        m = ps.load({str(path)!r})
        ids, _ = m.recommend({user!r}, n=5)
        print(",".join(map(str, ids.tolist())))
        h, _ = m.recommend_for_history(list(m.item_map_.ids[:3]), n=3)
        assert len(h) == 3
        m.add_items(pd.read_json({str(new_items)!r}, orient="records"))
        ids, _ = m.recommend({user!r}, n=2, items=["n1", "n2", "n3", "n4"])
        print(",".join(map(str, ids.tolist())))
        assert "torch" not in sys.modules or sys.modules["torch"] is None
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == ",".join(map(str, want.tolist()))
    assert lines[-1] == ",".join(map(str, want_new.tolist()))


def test_import_does_not_import_torch():
    code = "import sys, persona, persona.models.twotower; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------- the shared contract
class TestTwoTowerContract(RecommenderContract):
    """Without features: the id embeddings and pooled histories alone."""

    def make_model(self):
        return TwoTower(factors=8, hidden=16, max_history=8, epochs=3, batch_size=32, random_state=0,
                        num_threads=1)


class TestTwoTowerWithFeaturesContract(RecommenderContract):
    """With item features (string categories per item) fitted into ``fitted``."""

    def make_model(self):
        return TwoTower(factors=8, hidden=16, max_history=8, epochs=3, batch_size=32, random_state=0,
                        num_threads=1)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, data):
        import pandas as pd

        ids = data.item_ids
        df = pd.DataFrame({"item": ids, "group": [f"g{int(i[1:]) % 5}" for i in ids]})
        feats = Features.from_frame(df, data.item_map, "item", categorical=["group"])
        return cls().make_model().fit(data, item_features=feats)
