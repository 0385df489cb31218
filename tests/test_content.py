"""ContentKNN: content-similarity neighbours, cold items, the text encoders, save/load and bad inputs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import persona as ps
from contract import RecommenderContract
from persona.data import Features
from persona.models.content import ContentKNN
from persona.onnx import packaged_encoder_available

COLOURS = ["red", "blue", "green", "black", "white"]
NOUNS = ["shoe", "boot", "scarf", "hat", "glove", "sock", "coat"]


def contract_text(ids) -> dict:
    """Product text for the contract's items i000..i039: a colour and a noun, from the id."""
    return {i: f"{COLOURS[int(i[1:]) % 5]} wool {NOUNS[int(i[1:]) % 7]}" for i in ids}


def hashed_encoder(texts, dim: int = 32) -> np.ndarray:
    """A deterministic stand-in for a sentence encoder: hashed bag of character trigrams."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for r, t in enumerate(texts):
        t = f" {t.lower()} "
        for a in range(len(t) - 2):
            out[r, sum(map(ord, t[a:a + 3])) % dim] += 1.0
    return out


# ------------------------------------------------------------------------------------------- contract
class _Contract(RecommenderContract):
    fit_options: dict = {}

    def make_model(self):
        return ContentKNN(k=10, text="tfidf")

    def fit_model(self, model, data):
        return model.fit(data, item_text=contract_text(data.item_ids), **self.fit_options)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, data):
        case = cls()
        return case.fit_model(case.make_model(), data)

    def test_fit_returns_self(self, data):
        m = self.make_model()
        assert self.fit_model(m, data) is m

    def test_unknown_user_with_fallback(self, data):
        m = self.fit_model(self.make_model(), data)
        m.set_fallback(ps.MostPopular().fit(data))
        ids, _ = m.recommend_batch(["u001", "nobody"], n=4)
        np.testing.assert_array_equal(ids[1], ps.MostPopular().fit(data).top_items(4)[0])

    def test_fit_without_content_is_refused(self, data):
        with pytest.raises(ps.DataError, match="neither item_features nor item_text"):
            self.make_model().fit(data)


class TestContentKNNTfidfContract(_Contract):
    pass


class TestContentKNNFeaturesRecencyContract(_Contract):
    def make_model(self):
        return ContentKNN(k=8, text="tfidf", text_weight=0.5, recency=3.0)

    def fit_model(self, model, data):
        df = pd.DataFrame({"item": data.item_ids, "group": [f"g{int(i[1:]) % 4}" for i in data.item_ids]})
        feats = Features.from_frame(df, data.item_map, "item", categorical=["group"])
        return model.fit(data, item_features=feats, item_text=contract_text(data.item_ids))


class TestContentKNNEncoderContract(_Contract):
    fit_options = {"encoder": hashed_encoder}

    def make_model(self):
        return ContentKNN(k=10, text="encoder")


# ------------------------------------------------------------------------------------------- reference
@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=300, n_items=120, seed=3)


def _tokens(text: str) -> list[str]:
    return re.findall(r"\b\w\w+\b", text.lower())


def _reference_similarity(feature_x, texts, wf, wt, k, encoder=None):
    """Slow dense numpy version of the documented similarity: top-k positive cosines, per row."""
    n = feature_x.shape[0]
    blocks = []
    if feature_x is not None:
        x = feature_x.astype(np.float64)
        has = (x != 0).any(axis=1)
        df = (x[has] != 0).sum(axis=0)
        idf = np.log((1 + has.sum()) / (1 + df)) + 1
        w = np.sqrt(x) * idf
        blocks.append((wf, w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-300)))
    if texts is not None:
        if encoder is None:
            vocab = sorted({t for s in texts for t in _tokens(s)})
            c = np.zeros((n, len(vocab)))
            for r, s in enumerate(texts):
                for t in _tokens(s):
                    c[r, vocab.index(t)] += 1
            df = (c != 0).sum(axis=0)
            idf = np.log((1 + n) / (1 + df)) + 1
            v = np.sqrt(c) * idf
        else:
            v = encoder(texts).astype(np.float64)
        blocks.append((wt, v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)))
    dots = sum(w * (b @ b.T) for w, b in blocks)
    norms = np.sqrt(sum(w * (b * b).sum(axis=1) for w, b in blocks))
    sims = dots / np.outer(norms, norms)
    np.fill_diagonal(sims, -np.inf)
    sims[sims <= 1e-7] = -np.inf
    out = np.zeros_like(sims)
    for i in range(n):
        top = np.argsort(-sims[i], kind="stable")[:k]
        top = top[np.isfinite(sims[i, top])]
        out[i, top] = sims[i, top]
    return out


def _shop_content(shop, item_map):
    items = shop.items.set_index("item_id").loc[item_map.ids]
    feats = Features.from_frame(items.reset_index(), item_map, "item_id", categorical=["category", "brand"])
    return feats, items["name"]


def _assert_same_neighbours(got: sp.csr_matrix, want: np.ndarray, k: int):
    got = got.toarray()
    assert got.shape == want.shape
    assert ((got != 0).sum(axis=1) <= k).all()
    # values agree where either has an entry; a tie at the k-th place may pick another item of equal score
    for i in range(want.shape[0]):
        g, w = np.sort(got[i][got[i] != 0])[::-1], np.sort(want[i][want[i] != 0])[::-1]
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
        sure = want[i] > (w[-1] + 1e-5 if len(w) else np.inf)  # strictly above the k-th value: must be there
        np.testing.assert_allclose(got[i][sure], want[i][sure], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("wf,wt", [(1.0, 1.0), (1.0, 0.0), (0.3, 2.0)])
def test_similarity_matches_slow_reference(shop, wf, wt):
    inter = shop.interactions
    feats, names = _shop_content(shop, inter.item_map)
    m = ContentKNN(k=7, text="tfidf", feature_weight=wf, text_weight=wt).fit(inter, item_features=feats,
                                                                           item_text=names)
    want = _reference_similarity(feats.matrix.toarray(), names.tolist(), wf, wt, 7)
    _assert_same_neighbours(m.similarity_, want, 7)
    assert set(m.vocabulary_.tolist()) == {t for s in names for t in _tokens(s)}


def test_dense_encoder_path_matches_slow_reference(shop):
    inter = shop.interactions
    feats, names = _shop_content(shop, inter.item_map)
    m = ContentKNN(k=5, text="encoder", text_weight=2.0).fit(inter, item_features=feats, item_text=names,
                                                            encoder=hashed_encoder)
    assert m.text_mode_ == "encoder" and isinstance(m.text_vectors_, np.ndarray)
    want = _reference_similarity(feats.matrix.toarray(), names.tolist(), 1.0, 2.0, 5, encoder=hashed_encoder)
    _assert_same_neighbours(m.similarity_, want, 5)


def test_recommend_scores_are_history_weighted_neighbour_sums(shop):
    inter = shop.interactions
    _, names = _shop_content(shop, inter.item_map)
    m = ContentKNN(k=6, text="tfidf").fit(inter, item_text=names)
    s = m.similarity_.toarray()
    u = 5
    want = inter.matrix[u].toarray()[0] @ s
    ids, scores = m.recommend(inter.user_ids[u], n=5, filter_seen=False)
    np.testing.assert_allclose(scores, np.sort(want)[::-1][:5], rtol=1e-5)
    r = ContentKNN(k=6, text="tfidf", recency=2.0).fit(inter, item_text=names)
    seq = inter.sequence(u)
    distinct = list(dict.fromkeys(seq[::-1].tolist()))  # newest first
    profile = np.zeros(inter.n_items)
    profile[distinct] = 0.5 ** (np.arange(len(distinct)) / 2.0)
    _, rs = r.recommend(inter.user_ids[u], n=5, filter_seen=False)
    np.testing.assert_allclose(rs, np.sort(profile @ s)[::-1][:5], rtol=1e-5)
    h_ids, _ = r.recommend_for_history(inter.item_map.to_ids(seq), n=5, filter_seen=False)
    np.testing.assert_array_equal(h_ids, r.recommend(inter.user_ids[u], n=5, filter_seen=False)[0])


# ------------------------------------------------------------------------------------------- cold items
def _cold_split(shop, frac=0.1, seed=0):
    inter = shop.interactions
    rng = np.random.default_rng(seed)
    cold = rng.choice(inter.item_ids, size=int(frac * inter.n_items), replace=False)
    events = shop.events[~shop.events["item_id"].isin(cold)]
    train = ps.Interactions.from_frame(events, user="user_id", item="item_id", time="timestamp", event="event")
    assert not np.isin(train.item_ids, cold).any()
    return train, cold


def test_items_with_content_but_no_events_join_the_catalogue(shop):
    train, cold = _cold_split(shop)
    items = shop.items.set_index("item_id")
    m = ContentKNN(k=20, text="tfidf").fit(train, item_text=items["name"])
    assert set(cold.tolist()) <= set(m.item_map_.ids.tolist())
    assert m.n_items == shop.items.shape[0] and m.user_items_.shape[1] == m.n_items
    recs, _ = m.recommend_batch(train.user_ids, n=10)
    assert np.isin(recs, cold).any(), "cold items must be recommendable"


def test_add_items_merges_like_a_rebuild_and_reaches_recommendations(shop):
    train, cold = _cold_split(shop)
    items = shop.items.set_index("item_id")
    warm = items.loc[train.item_ids]
    feats = Features.from_frame(warm.reset_index(), train.item_map, "item_id", categorical=["category", "brand"])
    m = ContentKNN(k=15, text="tfidf").fit(train, item_features=feats, item_text=warm["name"])
    n_before = m.n_items
    new = items.loc[cold]
    m.add_items(features=new.reset_index(), text=new["name"])
    assert m.n_items == n_before + len(cold)
    # the incremental merge equals rebuilding every neighbour list from the grown vectors
    _assert_same_neighbours(m.similarity_, m._neighbours().toarray(), 15)
    recs, _ = m.recommend_batch(train.user_ids, n=10)
    assert np.isin(recs, cold).any()
    sim, _ = m.similar_items(cold[0], n=5)
    assert len(sim) == 5 and cold[0] not in sim.tolist()
    h, _ = m.recommend_for_history([cold[0]], n=5)
    assert len(h) == 5
    users, _ = m.recommend_users([cold[0]], n=5)
    assert len(users) == 5
    with pytest.raises(ps.DataError, match="already known"):
        m.add_items(text=new["name"])
    assert m.add_items(text=new["name"], known="skip").n_items == n_before + len(cold)


def test_add_items_with_a_custom_encoder_needs_it_again_after_load(shop, tmp_path):
    train, cold = _cold_split(shop)
    items = shop.items.set_index("item_id")
    m = ContentKNN(k=10, text="encoder").fit(train, item_text=items.loc[train.item_ids, "name"], encoder=hashed_encoder)
    loaded = ps.load(m.save(tmp_path / "enc.persona"))
    np.testing.assert_array_equal(loaded.text_vectors_, m.text_vectors_)
    with pytest.raises(ps.DataError, match="encoder=the_same_callable"):
        loaded.add_items(text=items.loc[cold, "name"])
    loaded.add_items(text=items.loc[cold, "name"], encoder=hashed_encoder)
    m.add_items(text=items.loc[cold, "name"])
    np.testing.assert_array_equal(loaded.similarity_.toarray(), m.similarity_.toarray())


# ------------------------------------------------------------------------------------------- save / load
def test_save_load_round_trip_then_add_items(shop, tmp_path):
    train, cold = _cold_split(shop)
    items = shop.items.set_index("item_id")
    warm = items.loc[train.item_ids]
    feats = Features.from_frame(warm.reset_index(), train.item_map, "item_id", categorical=["category", "brand"])
    m = ContentKNN(k=12, text="tfidf", feature_weighting="bm25", recency=4.0).fit(
        train, item_features=feats, item_text=warm[["name", "category"]])
    loaded = ps.load(m.save(tmp_path / "m.persona"))
    users = train.user_ids[:20]
    np.testing.assert_array_equal(loaded.recommend_batch(users, n=8)[0], m.recommend_batch(users, n=8)[0])
    np.testing.assert_array_equal(loaded.vocabulary_, m.vocabulary_)
    new = items.loc[cold]
    for model in (m, loaded):
        model.add_items(features=new.reset_index(), text=new[["name", "category"]])
    np.testing.assert_array_equal(loaded.similarity_.toarray(), m.similarity_.toarray())
    np.testing.assert_array_equal(loaded.recommend_batch(users, n=8)[0], m.recommend_batch(users, n=8)[0])


def test_tampered_artifact_is_refused(shop, tmp_path):
    inter = shop.interactions
    _, names = _shop_content(shop, inter.item_map)
    m = ContentKNN(k=5, text="tfidf").fit(inter, item_text=names)
    m.text_idf_ = m.text_idf_[:-1]  # one idf short of the vocabulary
    path = m.save(tmp_path / "bad.persona")
    with pytest.raises(ps.ArtifactError, match="one idf and one text column per vocabulary word"):
        ps.load(path)


# ------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("params,match", [
    ({"k": 0}, "k"), ({"text": "bert"}, "text: expected one of"),
    ({"text_weight": 0, "feature_weight": 0}, "at least one above 0"), ({"recency": 0}, "recency"),
    ({"feature_weighting": "idf"}, "feature_weighting"), ({"text_weight": -1}, "text_weight"),
])
def test_bad_parameters(shop, params, match):
    with pytest.raises(ps.ParameterError, match=match):
        ContentKNN(**params).fit(shop.interactions, item_text={"x": "y"})


def test_bad_content(shop):
    inter = shop.interactions
    with pytest.raises(ps.DataError, match="mapping, pandas Series or DataFrame"):
        ContentKNN(text="tfidf").fit(inter, item_text=["a", "b"])
    with pytest.raises(ps.DataError, match="one row per item of the interactions"):
        ContentKNN().fit(inter, item_features=sp.identity(3, format="csr"))
    neg = sp.csr_matrix(-np.ones((inter.n_items, 2)))
    with pytest.raises(ps.DataError, match="feature_weighting='none'"):
        ContentKNN().fit(inter, item_features=neg)
    ContentKNN(feature_weighting="none").fit(inter, item_features=neg)  # allowed as they are
    with pytest.raises(ps.DataError, match=r"shape \(\d+, d\)"):
        ContentKNN(text="encoder").fit(inter, item_text=shop.items.set_index("item_id")["name"],
                                       encoder=lambda texts: np.ones(3))
    with pytest.raises(ps.ParameterError, match="text='tfidf'"):
        ContentKNN(text="tfidf").fit(inter, item_text={"a": "b"}, encoder=hashed_encoder)
    with pytest.raises(ps.DataError, match="text=None ignores item_text"):
        ContentKNN(text=None).fit(inter, item_text={"a": "b"})
    m = ContentKNN(text="tfidf").fit(inter, item_text=shop.items.set_index("item_id")["name"])
    with pytest.raises(ps.UnsupportedError, match="without item_features"):
        m.add_items(features=shop.items.head(2))
    with pytest.raises(ps.DataError, match="features= or text="):
        m.add_items()
    with pytest.raises(ps.ParameterError, match="known"):
        m.add_items(text={"new": "x"}, known="ignore")
    with pytest.raises(ps.DataError, match="more than once"):
        m.add_items(text=pd.Series(["a", "b"], index=["n1", "n1"]))


# ------------------------------------------------------------------------------------------- packaged encoder
@pytest.mark.skipif(not packaged_encoder_available(), reason='needs pip install "persona-recsys[text]"')
def test_packaged_sentence_encoder(shop):
    from persona.onnx import SentenceEncoder

    enc = SentenceEncoder()
    v = enc(["red running shoes", "trainers for jogging", "dark chocolate cake", None])
    assert v.shape == (4, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]
    np.testing.assert_allclose(enc(["red running shoes"])[0], v[0], atol=1e-5)  # batch == single
    inter = shop.interactions
    m = ContentKNN(k=10).fit(inter, item_text=shop.items.set_index("item_id")["name"])
    assert m.text_mode_ == "encoder" and m.encoder_name_ == "all-MiniLM-L6-v2-int8"
    m.add_items(text={"brand-new": "a brand new shoe"})
    assert "brand-new" in m.similar_items(m.item_map_.ids[0], n=m.n_items)[0].tolist() or m.n_items > 0
    with pytest.raises(ps.ParameterError, match="expected a sequence of texts"):
        enc("one text")
