"""Factor models serving through a retrieval index (FactorModel.use_index)."""

import numpy as np
import pytest

import persona as ps


@pytest.fixture(scope="module")
def fitted():
    shop = ps.datasets.synthetic_shop(n_users=800, n_items=400, seed=5)
    inter = shop.interactions
    return ps.ALS(factors=16, iterations=4, random_state=0).fit(inter), inter


def _plain(model):
    """A copy of the model's serving state without an index."""
    clone = ps.ALS(**model.get_params())
    for k, v in vars(model).items():
        setattr(clone, k, v)
    clone.index_ = clone.similar_index_ = None
    clone._index_spec = None
    return clone


def test_exact_index_gives_the_same_lists(fitted):
    model, inter = fitted
    plain = _plain(model)
    model.use_index("exact")
    users = inter.user_ids[:50]
    a, sa = model.recommend_batch(users, n=10)
    b, sb = plain.recommend_batch(users, n=10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.similar_items_batch(inter.item_ids[:20], n=5)[0],
                                  plain.similar_items_batch(inter.item_ids[:20], n=5)[0])


def test_hnsw_index_is_close_and_honours_filters(fitted):
    model, inter = fitted
    plain = _plain(model)
    model.use_index("hnsw", ef_search=200)
    users = inter.user_ids[:100]
    a, _ = model.recommend_batch(users, n=10)
    b, _ = plain.recommend_batch(users, n=10)
    recall = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b)])
    assert recall >= 0.9
    # seen items never come back, and a selective mask still yields exactly n items
    mask = np.zeros(inter.n_items, dtype=bool)
    mask[::25] = True  # 16 items in stock
    for u in users[:20]:
        ids, _ = model.recommend(u, n=5, mask=mask)
        seen = set(inter.item_map.to_ids(inter.matrix[inter.user_map.index_of(u)].indices).tolist())
        allowed = set(inter.item_ids[mask].tolist()) - seen
        assert len(ids) == min(5, len(allowed)) and set(ids.tolist()) <= allowed


def test_index_choice_survives_save_load(fitted, tmp_path):
    model, inter = fitted
    model.use_index("exact")
    loaded = ps.load(model.save(tmp_path / "als.persona"))
    assert loaded.index_ is not None
    np.testing.assert_array_equal(loaded.recommend_batch(inter.user_ids[:5], n=5)[0],
                                  model.recommend_batch(inter.user_ids[:5], n=5)[0])
    model.use_index(None)
    assert model.index_ is None


def test_refit_rebuilds_a_stale_index(fitted):
    model, inter = fitted
    m = ps.ALS(factors=8, iterations=2, random_state=1).fit(inter).use_index("exact")
    before = m.index_
    m.fit(inter)  # new factors: the next request must not use the old index
    m.recommend(inter.user_ids[0], n=3)
    assert m.index_ is not before


def test_mf_ranks_with_its_biases_through_an_index(fitted):
    _, inter = fitted
    mf = ps.MF(factors=4, iterations=3, random_state=0).fit(inter)
    users = inter.user_ids[:30]
    plain_ids, plain_scores = mf.recommend_batch(users, n=8)
    mf.use_index("exact")
    ids, scores = mf.recommend_batch(users, n=8)
    np.testing.assert_array_equal(ids, plain_ids)
    np.testing.assert_allclose(scores, plain_scores, rtol=1e-4, atol=1e-4)


def test_a_ready_memory_mapped_index_can_be_attached(fitted, tmp_path):
    from persona.retrieval import FaissIndex, load_index

    model, inter = fitted
    model.use_index(None)
    plain_ids = model.recommend_batch(inter.user_ids[:20], n=5)[0]
    path = FaissIndex(model.item_factors_, kind="hnsw", ef_search=400).save(tmp_path / "items.index")
    model.use_index(load_index(path, mmap=True))
    ids = model.recommend_batch(inter.user_ids[:20], n=5)[0]
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ids, plain_ids)]) >= 0.9
    with pytest.raises(ps.ParameterError, match="inner-product index"):
        model.use_index(FaissIndex(model.item_factors_[:10], kind="hnsw"))
    model.use_index(None)


def test_attribute_predicates_compile_to_a_mask_that_recommend_honours():
    from persona.retrieval import attribute_mask

    shop = ps.datasets.synthetic_shop(n_users=300, n_items=120, seed=8)
    inter = shop.interactions
    model = ps.ALS(factors=8, iterations=3, random_state=0).fit(inter).use_index("hnsw")
    cat = shop.items["category"].iloc[0]
    mask = attribute_mask(shop.items, model.item_map_.ids, category=cat, price=(None, 40.0))
    want = shop.items[(shop.items["category"] == cat) & (shop.items["price"] <= 40.0)]["item_id"]
    assert set(model.item_map_.ids[mask].tolist()) == set(want.tolist()) & set(model.item_map_.ids.tolist())
    ids, _ = model.recommend(inter.user_ids[0], n=5, mask=mask, filter_seen=False)
    assert len(ids) == min(5, int(mask.sum())) and set(ids.tolist()) <= set(want.tolist())
    with pytest.raises(ps.ParameterError, match="no item attribute"):
        attribute_mask(shop.items, model.item_map_.ids, colour="red")
    assert attribute_mask(shop.items, model.item_map_.ids, category=[cat, "nothing"]).sum() >= mask.sum()
    assert attribute_mask(shop.items, model.item_map_.ids, price=lambda p: p > 1e9).sum() == 0


@pytest.mark.parametrize("mmap", [False, True])
def test_a_faiss_index_is_saved_built_and_not_rebuilt_at_load(fitted, tmp_path, monkeypatch, mmap):
    """A signed artifact's faiss file is read (mapped with mmap=True); an unsigned one is rebuilt
    from the factors, since faiss's reader is not safe on crafted bytes (issue 11, point 10)."""
    from persona.retrieval import faiss_index

    key = b"test-key-0123456789abcdef"

    model, inter = fitted
    model.use_index("hnsw", ef_search=64)
    users = inter.user_ids[:20]
    want = model.recommend_batch(users, n=6)
    want_similar = model.similar_items_batch(inter.item_ids[:5], n=4)
    path = model.save(tmp_path / "als.persona", key=key)
    assert (path / "files" / "index.faiss").exists() and (path / "files" / "similar_index.faiss").exists()
    unsigned = ps.load(path, mmap=mmap)  # rebuilt: same answers
    np.testing.assert_array_equal(unsigned.recommend_batch(users, n=6)[0], want[0])

    def no_build(self):
        raise AssertionError("load rebuilt the index")

    monkeypatch.setattr(faiss_index.FaissIndex, "_build", no_build)
    loaded = ps.load(path, mmap=mmap, key=key)
    assert isinstance(loaded.index_, faiss_index.FaissIndex) and loaded.index_._read_only == mmap
    got = loaded.recommend_batch(users, n=6)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
    np.testing.assert_array_equal(loaded.similar_items_batch(inter.item_ids[:5], n=4)[0], want_similar[0])
    # the loaded model saves its index again, and still without a rebuild
    again = ps.load(loaded.save(tmp_path / "again.persona", key=key), key=key)
    np.testing.assert_array_equal(again.recommend_batch(users, n=6)[0], want[0])
    model.use_index(None)
