"""ps.ProductSearch: BM25 against a slow reference, text ranking, personalisation, filters, saving, bad input."""

from __future__ import annotations

import math
import re
import threading
import zlib

import numpy as np
import pandas as pd
import pytest

import persona as ps
from persona.onnx import packaged_encoder_available

CATALOGUE = pd.DataFrame({
    "item_id": ["a", "b", "c", "d", "e", "f"],
    "name": ["Rose Face Serum", "Ocean Shampoo", "Rose Shampoo", "Ocean Body Lotion", "Red Lipstick",
             "Rose Rose Hand Cream"],
    "description": ["a light serum", "for every day", None, "fresh ocean scent", "matte red", "with rose oil"],
})


def hashed_trigrams(texts, dim=64):
    """A toy sentence encoder: hashed character trigrams (no model needed, deterministic)."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for r, t in enumerate(texts):
        t = f"  {t.lower()}  "
        for i in range(len(t) - 2):
            out[r, zlib.crc32(t[i:i + 3].encode()) % dim] += 1.0
    return out


def tokenize(text: str) -> list[str]:
    """Lower-cased words of two or more characters, as persona.data.features.tokenize documents."""
    return re.findall(r"\b\w\w+\b", text.lower())


def reference_bm25(docs: list[str], query: str, k1=1.2, b=0.75) -> np.ndarray:
    """Okapi BM25 written out term by term, the textbook way."""
    toks = [tokenize(d) for d in docs]
    n = len(docs)
    avg = sum(len(t) for t in toks) / n
    out = np.zeros(n)
    for d, td in enumerate(toks):
        for w in tokenize(query):
            df = sum(1 for t in toks if w in t)
            if not df:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            tf = td.count(w)
            if not tf:
                continue
            out[d] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(td) / avg))
    return out


@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=400, n_items=150, seed=3)


# ---------------------------------------------------------------------------------------------- BM25
@pytest.mark.parametrize("k1,b", [(1.2, 0.75), (0.0, 0.0), (2.0, 1.0)])
@pytest.mark.parametrize("query", ["rose", "rose shampoo", "Rose rose OCEAN", "ocean scent lotion", "nothing here",
                                   "every day serum"])
def test_bm25_matches_the_slow_reference(query, k1, b):
    s = ps.ProductSearch(CATALOGUE, text=["name", "description"], encoder=None, k1=k1, b=b)
    docs = [f"{n} {d}" if isinstance(d, str) else n for n, d in zip(CATALOGUE["name"], CATALOGUE["description"])]
    np.testing.assert_allclose(s.bm25(query), reference_bm25(docs, query, k1, b), rtol=1e-5, atol=1e-7)


def test_text_only_ranking_follows_bm25_and_scores_are_normalised():
    s = ps.ProductSearch(CATALOGUE, text=["name", "description"], encoder=None)
    ids, scores = s.search("rose shampoo", n=10)
    bm = s.bm25("rose shampoo")
    expected = CATALOGUE["item_id"].to_numpy()[np.lexsort((np.arange(6), -bm))][: int((bm > 0).sum())]
    assert ids.tolist() == expected.tolist()  # only items sharing a word, best first
    assert ids[0] == "c" and scores[0] == pytest.approx(1.0)
    assert np.all(np.diff(scores) <= 0) and scores.dtype == np.float32
    assert len(s.search("rose", n=2)[0]) == 2


def test_exact_title_query_returns_the_item_first(shop):
    s = ps.ProductSearch(shop.items, text=["name", "category"], encoder=None)
    names = shop.items["name"].tolist()
    for i in range(0, len(names), 7):
        ids, _ = s.search(names[i], n=5)
        assert ids[0] == shop.items["item_id"].iloc[i], names[i]


@pytest.mark.skipif(not packaged_encoder_available(), reason='needs pip install "persona-recsys[text]"')
def test_the_packaged_encoder_finds_meaning_and_keeps_exact_titles_first(shop):
    items = shop.items.head(60)
    s = ps.ProductSearch(items, text="name")
    assert s.encoder_name_ == "all-MiniLM-L6-v2-int8" and s.embeddings_.shape == (60, 384)
    for i in range(0, 60, 6):
        assert s.search(items["name"].iloc[i], n=3)[0][0] == items["item_id"].iloc[i]
    # a typo BM25 cannot match still finds the item through the embeddings
    name = items["name"].iloc[0]
    typo = name[:-2] + name[-1]
    bm25_only = ps.ProductSearch(items, text="name", encoder=None)
    assert items["item_id"].iloc[0] in s.search(typo, n=10)[0]
    assert len(bm25_only.search("zzqx")[0]) == 0 and len(s.search("zzqx", n=4)[0]) == 4


def test_a_custom_encoder_blends_with_bm25_and_a_faiss_index():
    exact = ps.ProductSearch(CATALOGUE, encoder=hashed_trigrams, semantic=0.5)
    hnsw = ps.ProductSearch(CATALOGUE, encoder=hashed_trigrams, semantic=0.5, index="hnsw")
    assert exact.encoder_name_ == "custom" and type(hnsw._index).__name__ == "FaissIndex"
    ids, scores = exact.search("rose shampo", n=6)   # typo: BM25 sees "rose" only
    assert ids[0] == "c"                              # the trigrams of "shampo" pick the rose shampoo
    assert len(ids) == 6 and np.all(np.diff(scores) <= 0)
    np.testing.assert_array_equal(hnsw.search("rose shampo", n=6)[0], ids)
    bm25 = ps.ProductSearch(CATALOGUE, encoder=hashed_trigrams, semantic=0.0)
    assert bm25.search("rose shampo", n=3)[0][0] in {"a", "c", "f"}  # semantic=0: BM25 order (rose items)


# ------------------------------------------------------------------------------------ personalisation
@pytest.fixture(scope="module")
def taste():
    """ann and cem like rose things, bob and dan ocean things."""
    inter = ps.Interactions.from_records([("ann", "a"), ("ann", "f"), ("cem", "a"), ("cem", "f"), ("cem", "c"),
                                          ("bob", "d"), ("dan", "d"), ("dan", "b")])
    return ps.ItemKNN().fit(inter)


def test_personalisation_moves_the_users_taste_up(taste):
    s = ps.ProductSearch(CATALOGUE, encoder=None, personalise=taste, weight=0.4)
    text = s.search("shampoo")[0].tolist()
    assert text == ["b", "c"]                                  # a BM25 tie, catalogue order
    assert s.search("shampoo", user="ann")[0].tolist() == ["c", "b"]   # rose lover
    assert s.search("shampoo", user="bob")[0].tolist() == ["b", "c"]   # ocean lover
    off = ps.ProductSearch(CATALOGUE, encoder=None, personalise=taste, weight=0.0)
    assert off.search("shampoo", user="ann")[0].tolist() == text


def test_personalisation_does_not_override_strong_text_evidence(taste):
    s = ps.ProductSearch(CATALOGUE, encoder=None, personalise=taste)  # default weight
    assert s.search("ocean body lotion", user="ann")[0][0] == "d"


def test_unknown_users_get_the_text_ranking(taste):
    taste_fb = ps.ItemKNN().fit(ps.Interactions.from_records([("ann", "a"), ("cem", "c")]))
    taste_fb.set_fallback(ps.MostPopular().fit(ps.Interactions.from_records([("x", "c"), ("y", "c")])))
    for model in (taste, taste_fb):
        s = ps.ProductSearch(CATALOGUE, encoder=None, personalise=model, weight=0.9)
        text = s.search("rose shampoo lotion", n=5)
        for user in ("stranger", 12345):
            got = s.search("rose shampoo lotion", user=user, n=5)
            np.testing.assert_array_equal(got[0], text[0])
            np.testing.assert_array_equal(got[1], text[1])


def test_personalised_search_on_the_synthetic_shop_uses_history(shop):
    inter = shop.interactions
    model = ps.EASE(regularization=50).fit(inter)
    s = ps.ProductSearch(shop.items, text="name", encoder=None, personalise=model, weight=0.5)
    cats = shop.item_categories(shop.items["item_id"].to_numpy())
    # a vague query (a category's product type) answered for two users of different taste
    changed = 0
    for user in inter.user_ids[:40]:
        ids_t, _ = s.search("oil", n=5)
        ids_u, _ = s.search("oil", user=user, n=5)
        assert set(ids_u) <= set(s.search("oil", n=100)[0])   # only matching items
        changed += ids_t.tolist() != ids_u.tolist()
    assert changed > 10
    assert len(cats) == len(shop.items)


# ---------------------------------------------------------------------------------------------- filters
@pytest.mark.parametrize("encoder", [None, hashed_trigrams])
def test_filters(encoder, taste):
    s = ps.ProductSearch(CATALOGUE, encoder=encoder, personalise=taste)
    for user in (None, "ann"):
        ids, _ = s.search("rose shampoo", user=user, n=10, items=["a", "c", "zzz"])
        assert set(ids) <= {"a", "c"} and "c" in ids
        ids, _ = s.search("rose shampoo", user=user, n=10, exclude=["c", "nope"])
        assert "c" not in ids and len(ids) >= 2
        ids, _ = s.search("rose shampoo", user=user, items=["a", "c"], exclude=np.array(["a"]))
        assert ids.tolist() == ["c"]
        assert len(s.search("rose", user=user, items=[])[0]) == 0


def test_integer_ids_and_empty_queries():
    items = pd.DataFrame({"sku": [10, 20, 30], "title": ["red shoe", "blue shoe", "red hat"]})
    s = ps.ProductSearch(items, text="title", id="sku", encoder=None)
    ids, scores = s.search("shoe", exclude=[10])
    assert ids.tolist() == [20] and ids.dtype.kind == "i"
    with_meaning = ps.ProductSearch(items, text="title", id="sku", encoder=hashed_trigrams)
    for q in ("", "   ", "!", "x"):
        for search in (s, with_meaning):
            ids, scores = search.search(q)
            assert len(ids) == 0 and len(scores) == 0
    assert s.bm25("shoes").max() == 0                # a word BM25 does not know ...
    assert {10, 20} <= set(with_meaning.search("shoes")[0].tolist())   # ... still has a meaning


def test_many_threads_get_the_serial_answers(taste):
    s = ps.ProductSearch(CATALOGUE, encoder=hashed_trigrams, personalise=taste)
    queries = [("rose", "ann"), ("shampoo", "bob"), ("ocean lotion", None), ("red", "cem")] * 5
    want = [s.search(q, user=u)[0].tolist() for q, u in queries]
    got = [None] * len(queries)

    def work(i):
        got[i] = s.search(queries[i][0], user=queries[i][1])[0].tolist()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(queries))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want


# ---------------------------------------------------------------------------------------------- saving
@pytest.mark.parametrize("encoder", [None, hashed_trigrams])
def test_save_load_round_trip(tmp_path, encoder, taste):
    s = ps.ProductSearch(CATALOGUE, text=["name", "description"], encoder=encoder, personalise=taste, weight=0.5)
    path = s.save(tmp_path / "search")
    loaded = ps.ProductSearch.load(path, personalise=taste, encoder=encoder)
    assert loaded.weight == 0.5 and loaded.text == ["name", "description"]
    for q, u in [("rose shampoo", None), ("rose shampoo", "ann"), ("shampoo", "dan"), ("serum", "stranger")]:
        a, b = s.search(q, user=u, n=6), loaded.search(q, user=u, n=6)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1], rtol=1e-6)
    np.testing.assert_allclose(loaded.bm25("rose oil"), s.bm25("rose oil"))
    # everything is plain arrays: every .npy loads without pickle
    for f in (path / "arrays").iterdir():
        np.load(f, allow_pickle=False)
    # without the model: text alone; with another weight: as asked
    alone = ps.ProductSearch.load(path, encoder=encoder)
    np.testing.assert_array_equal(alone.search("shampoo", user="dan")[0], s.search("shampoo")[0])
    assert s.search("shampoo", user="dan")[0].tolist() != s.search("shampoo")[0].tolist()
    assert ps.ProductSearch.load(path, personalise=taste, encoder=encoder, weight=0.0).weight == 0.0


def test_loading_needs_the_custom_encoder_again_and_refuses_other_artifacts(tmp_path):
    path = ps.ProductSearch(CATALOGUE, encoder=hashed_trigrams).save(tmp_path / "s")
    with pytest.raises(ps.ParameterError, match="encoder=the_same_callable"):
        ps.ProductSearch.load(path)
    model_path = ps.MostPopular().fit(ps.Interactions.from_records([("u", "a")])).save(tmp_path / "m")
    with pytest.raises(ps.ArtifactError, match="expected a ProductSearch artifact"):
        ps.ProductSearch.load(model_path)
    arr = sorted((path / "arrays").iterdir())[0]
    arr.write_bytes(arr.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    with pytest.raises(ps.ArtifactError, match="checksum"):
        ps.ProductSearch.load(path, encoder=hashed_trigrams)


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_inputs(taste):
    s = ps.ProductSearch(CATALOGUE, encoder=None)
    with pytest.raises(ps.ParameterError, match="query: expected a string"):
        s.search(["rose"])
    with pytest.raises(ps.ParameterError, match="n"):
        s.search("rose", n=0)
    with pytest.raises(ps.ParameterError, match="items: expected a list of item ids"):
        s.search("rose", items="a")
    with pytest.raises(ps.ParameterError, match="weight: expected"):
        ps.ProductSearch(CATALOGUE, encoder=None, weight=1.5)
    with pytest.raises(ps.ParameterError, match="semantic"):
        ps.ProductSearch(CATALOGUE, encoder=None, semantic=-0.1)
    with pytest.raises(ps.ParameterError, match="candidates"):
        ps.ProductSearch(CATALOGUE, encoder=None, candidates=0)
    with pytest.raises(ps.ParameterError, match="index"):
        ps.ProductSearch(CATALOGUE, encoder=None, index="annoy")
    with pytest.raises(ps.DataError, match=r"expected columns \['title'\]"):
        ps.ProductSearch(CATALOGUE, text="title", encoder=None)
    with pytest.raises(ps.ParameterError, match="text: expected a column name"):
        ps.ProductSearch(CATALOGUE, text=3, encoder=None)
    with pytest.raises(ps.DataError, match="more than once"):
        ps.ProductSearch(pd.concat([CATALOGUE, CATALOGUE.head(1)]), encoder=None)
    with pytest.raises(ps.DataError, match="empty"):
        ps.ProductSearch(CATALOGUE.head(0), encoder=None)
    with pytest.raises(ps.DataError, match="expected a pandas DataFrame"):
        ps.ProductSearch({"item_id": ["a"]}, encoder=None)
    with pytest.raises(ps.ParameterError, match="expected a fitted persona Recommender"):
        ps.ProductSearch(CATALOGUE, encoder=None, personalise="ease")
    with pytest.raises(ps.NotFittedError, match="call .fit"):
        ps.ProductSearch(CATALOGUE, encoder=None, personalise=ps.EASE())
    with pytest.raises(ps.ParameterError, match="encoder: expected"):
        ps.ProductSearch(CATALOGUE, encoder="bert")
    with pytest.raises(ps.DataError, match="one vector each"):
        ps.ProductSearch(CATALOGUE, encoder=lambda texts: np.ones(3))
    with pytest.raises(ps.DataError, match="finite"):
        ps.ProductSearch(CATALOGUE, encoder=lambda texts: np.full((len(texts), 4), np.nan))
