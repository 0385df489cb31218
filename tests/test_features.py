import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from persona.data import Features, IdMap, Interactions
from persona.data.features import tokenize
from persona.errors import DataError


def catalog():
    return pd.DataFrame({
        "item": ["a", "b", "c", "zz", None],
        "cat": ["shoes", "hats", None, "shoes", "hats"],
        "price": [10.0, 20.0, 30.0, 40.0, 50.0],
        "tags": [["summer", "sale"], "sale|winter", None, "x", "y"],
        "title": ["Red running shoe", "Blue shoe shoe", None, "Hat", "Cap"],
    })


ITEMS = IdMap(["a", "b", "c", "d"])


def dense(f):
    return f.matrix.toarray()


def col(f, name):
    return dense(f)[:, f.columns.index(name)]


def test_tokenize():
    assert tokenize("Red running-shoes, size 42! A") == ["red", "running", "shoes", "size", "42"]
    assert tokenize(None) == [] and tokenize(float("nan")) == []
    assert tokenize("Éclair CAFÉ") == ["éclair", "café"]


def test_alignment_and_counts():
    f = Features.from_frame(catalog(), ITEMS, "item", categorical=["cat"])
    assert f.matrix.shape == (4, 2) and f.matrix.dtype == np.float32 and isinstance(f.matrix, sp.csr_matrix)
    assert f.columns == ["cat=hats", "cat=shoes"]
    assert dense(f).tolist() == [[0, 1], [1, 0], [0, 0], [0, 0]]  # c: missing value, d: no row
    assert f.n_missing == 1  # "d" is in the map but not in the frame
    assert f.n_unknown == 2  # "zz" and the null id
    assert f.id_map is ITEMS and len(f) == 4


def test_rows_follow_map_not_frame_order():
    df = catalog().iloc[[1, 0]]  # b before a
    f = Features.from_frame(df, ITEMS, "item", categorical=["cat"])
    assert f.codes("cat").tolist() == [1, 0, -1, -1]
    assert f.categories("cat") == ["hats", "shoes"]


def test_codes_and_categories_only_for_categorical():
    f = Features.from_frame(catalog(), ITEMS, "item", categorical=["cat"], tags=["tags"])
    assert f.codes("cat").dtype == np.int64
    with pytest.raises(DataError, match="not categorical"):
        f.codes("tags")
    with pytest.raises(DataError, match="unknown field 'nope'"):
        f.codes("nope")
    assert f.fields == {"cat": "categorical", "tags": "tags"}
    assert f.field_slice("tags") == slice(2, 5)
    assert f.columns[f.field_slice("tags")] == ["tags=sale", "tags=summer", "tags=winter"]


def test_numeric_quantile_buckets():
    f = Features.from_frame(catalog(), ITEMS, "item", numeric=["price"], n_buckets=3)
    # fitted on the three known rows (10, 20, 30): edges at the 1/3 and 2/3 quantiles
    assert f.columns == ["price=[-inf,16.6667)", "price=[16.6667,23.3333)", "price=[23.3333,inf)"]
    assert dense(f).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]
    assert np.all(dense(f).sum(axis=1)[:3] == 1)


def test_numeric_scaled_and_ties():
    df = pd.DataFrame({"item": ["a", "b", "c", "d"], "p": [1.0, 1.0, 1.0, 5.0]})
    f = Features.from_frame(df, ITEMS, "item", numeric=["p"], n_buckets=4, numeric_scaled=True)
    # three equal values: no empty bucket is created below them
    assert f.columns == ["p=[-inf,2)", "p=[2,inf)", "p"]
    z = col(f, "p")
    assert z == pytest.approx([(1 - 2) / np.sqrt(3), (1 - 2) / np.sqrt(3), (1 - 2) / np.sqrt(3), 3 / np.sqrt(3)])
    with pytest.raises(DataError, match=r"'p'.*\['cheap'\]"):
        Features.from_frame(df.assign(p=["1", "cheap", "2", "3"]), ITEMS, "item", numeric=["p"])


def test_tags_multi_hot():
    f = Features.from_frame(catalog(), ITEMS, "item", tags=["tags"])
    assert f.columns == ["tags=sale", "tags=summer", "tags=winter"]
    assert dense(f).tolist() == [[1, 1, 0], [1, 0, 1], [0, 0, 0], [0, 0, 0]]
    g = Features.from_frame(pd.DataFrame({"item": ["a"], "t": ["x | x|y"]}), ITEMS, "item", tags=["t"])
    assert dense(g)[0].tolist() == [1, 1]  # stripped, repeated tag counted once


def test_text_tfidf_by_hand():
    f = Features.from_frame(catalog(), ITEMS, "item", text=["title"])
    assert f.columns == ["title:blue", "title:red", "title:running", "title:shoe"]
    n = 3  # known rows a, b, c (c has no text)
    idf = {"blue": np.log(4 / 2) + 1, "red": np.log(4 / 2) + 1, "running": np.log(4 / 2) + 1,
           "shoe": np.log((1 + n) / (1 + 2)) + 1}
    a = np.array([0, idf["red"], idf["running"], idf["shoe"]])
    b = np.array([idf["blue"], 0, 0, 2 * idf["shoe"]])
    assert dense(f)[0] == pytest.approx(a / np.linalg.norm(a), rel=1e-5)
    assert dense(f)[1] == pytest.approx(b / np.linalg.norm(b), rel=1e-5)
    assert dense(f)[2].tolist() == [0, 0, 0, 0]


def test_text_vocabulary_cap():
    df = pd.DataFrame({"item": ["a", "b", "c"], "t": ["x1 common", "x2 common", "x3 common"]})
    f = Features.from_frame(df, ITEMS, "item", text=["t"], hash_dim=2)
    assert f.columns == ["t:common", "t:x1"]  # most frequent first, ties alphabetical


def test_text_hashing_is_stable():
    df = pd.DataFrame({"item": ["a", "b"], "t": ["shoe shoe red", "shoe"]})
    f = Features.from_frame(df, ITEMS, "item", text=["t"], text_mode="hash", hash_dim=16)
    assert f.matrix.shape == (4, 16) and f.columns[0] == "t#0"
    import zlib

    shoe, red = zlib.crc32(b"shoe") % 16, zlib.crc32(b"red") % 16
    row = np.zeros(16)
    row[shoe] += 2
    row[red] += 1
    assert dense(f)[0] == pytest.approx(row / np.linalg.norm(row))
    assert dense(f)[1][shoe] == pytest.approx(1.0)
    with pytest.raises(DataError, match="text_mode"):
        Features.from_frame(df, ITEMS, "item", text=["t"], text_mode="bert")


def test_transform_cold_start_rows():
    f = Features.from_frame(catalog(), ITEMS, "item", categorical=["cat"], numeric=["price"], tags=["tags"],
                            text=["title"], n_buckets=3)
    new = pd.DataFrame({"item": ["n1", "n2"], "cat": ["hats", "boots"], "price": [25.0, None],
                        "tags": ["winter|brand-new", []], "title": ["shoe unseen", ""]})
    g = f.transform(new)
    assert g.columns == f.columns
    assert g.id_map.ids.tolist() == ["n1", "n2"]
    assert g.codes("cat").tolist() == [0, -1]  # unseen category: code -1, no column
    assert col(g, "cat=hats").tolist() == [1, 0] and col(g, "cat=shoes").tolist() == [0, 0]
    assert col(g, "price=[23.3333,inf)").tolist() == [1, 0]
    assert col(g, "tags=winter").tolist() == [1, 0]
    assert col(g, "title:shoe").tolist() == [1, 0]  # the only known token: L2 row norm 1
    # transforming fitted rows reproduces the fitted matrix
    again = f.transform(catalog(), id_map=ITEMS)
    assert np.allclose(dense(again), dense(f))
    assert again.n_unknown == 2 and again.n_missing == 1


def test_frame_problems():
    with pytest.raises(DataError, match=r"\['colour'\] not found.*available columns"):
        Features.from_frame(catalog(), ITEMS, "item", categorical=["colour"])
    with pytest.raises(DataError, match="both categorical and tags"):
        Features.from_frame(catalog(), ITEMS, "item", categorical=["cat"], tags=["cat"])
    with pytest.raises(DataError, match="no feature fields"):
        Features.from_frame(catalog(), ITEMS, "item")
    dup = pd.DataFrame({"item": ["a", "a"], "cat": ["x", "y"]})
    with pytest.raises(DataError, match=r"\['a'\] appear in more than one row"):
        Features.from_frame(dup, ITEMS, "item", categorical=["cat"])
    with pytest.raises(DataError, match="IdMap"):
        Features.from_frame(catalog(), ["a"], "item", categorical=["cat"])


def test_integer_ids_and_integral_float_categories():
    inter = Interactions.from_records([(1, 100), (2, 200), (2, 300)])
    df = pd.DataFrame({"item_id": [300, 100, 999], "brand": [7.0, np.nan, 7.0]})
    f = Features.from_frame(df, inter.item_map, "item_id", categorical=["brand"])
    assert f.columns == ["brand=7"]
    assert f.codes("brand").tolist() == [-1, -1, 0]
    assert f.n_missing == 1 and f.n_unknown == 1
    g = f.transform(pd.DataFrame({"item_id": [5], "brand": [7]}))
    assert g.codes("brand").tolist() == [0]


def test_to_dict_from_dict_round_trip_through_json():
    import json

    for mode in ("tfidf", "hash"):
        f = Features.from_frame(catalog(), ITEMS, "item", categorical=["cat"], numeric=["price"], tags=["tags"],
                                text=["title"], n_buckets=3, numeric_scaled=True, text_mode=mode, hash_dim=16)
        spec = f.to_dict()
        g = Features.from_dict(json.loads(json.dumps(spec)))  # JSON data only: no pickle, no numpy types
        assert len(g) == 0 and g.columns == f.columns and g.fields == f.fields
        new = pd.DataFrame({"item": ["n1", "a"], "cat": ["hats", "shoes"], "price": [25.0, 10.0],
                            "tags": ["winter|new", "sale"], "title": ["shoe", "red shoe"]})
        np.testing.assert_array_equal(g.transform(new).matrix.toarray(), f.transform(new).matrix.toarray())
        np.testing.assert_array_equal(g.transform(catalog(), id_map=ITEMS).matrix.toarray(), dense(f))
    raw = Features(sp.csr_matrix(np.eye(2, dtype=np.float32)), ["x", "y"], IdMap(["a", "b"]))
    with pytest.raises(DataError, match="from_frame"):
        raw.to_dict()
    with pytest.raises(DataError, match="to_dict"):
        Features.from_dict({"fields": {}})


def test_polars_and_arrow_tables_are_read():
    """Issue 12 point 10: the feature constructors take polars and pyarrow tables as pandas ones."""
    import pyarrow as pa

    pl = pytest.importorskip("polars")  # in the test extra
    df = pd.DataFrame({"item": ["a", "b", "c"], "cat": ["shoes", "hats", "shoes"], "price": [10.0, 20.0, 30.0],
                       "tags": ["x|y", "y", ""]})
    ids = IdMap(["a", "b", "c"])
    want = Features.from_frame(df, ids, "item", categorical=["cat"], numeric=["price"], tags=["tags"])
    for table in (pl.from_pandas(df), pa.Table.from_pandas(df, preserve_index=False)):
        got = Features.from_frame(table, ids, "item", categorical=["cat"], numeric=["price"], tags=["tags"])
        assert got.columns == want.columns and (got.matrix != want.matrix).nnz == 0
        new = table.slice(0, 2) if hasattr(table, "slice") else table
        enc = want.transform(new)
        assert (enc.matrix != want.transform(df.iloc[:2]).matrix).nnz == 0
    with pytest.raises(DataError, match="expected a pandas DataFrame or a polars / pyarrow table"):
        Features.from_frame({"item": ["a"]}, ids, "item", categorical=["cat"])
    with pytest.raises(DataError, match="expected a pandas DataFrame or a polars / pyarrow table"):
        want.transform([("a", "shoes")])
