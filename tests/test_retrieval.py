"""persona.retrieval: exact and faiss indexes against a numpy argsort reference, under every filter."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import index_lists

from persona.errors import ArtifactError, DataError, ParameterError, PersonaError
from persona.retrieval import ExactIndex, FaissIndex, Index, load_index, make_index

# -- reference ----------------------------------------------------------------------------------------


def allowed_rows(n_rows, q, allow=None, deny=None, mask=None):
    """The set of rows query ``q`` may return, from the filters as passed to ``search``."""
    def pick(obj):
        if obj is None:
            return None
        per_query = (isinstance(obj, np.ndarray) and obj.ndim == 2) or (
            isinstance(obj, list) and obj and not np.isscalar(obj[0]))
        return set(np.asarray(obj[q] if per_query else obj, dtype=np.int64).tolist())

    rows = set(range(n_rows)) if allow is None else pick(allow)
    if deny is not None:
        rows -= pick(deny)
    if mask is not None:
        rows = {r for r in rows if mask[r]}
    return rows


def reference_search(vectors, queries, n, **filters):
    """Plain numpy: score everything in float64, sort by (-score, row), keep the allowed n."""
    scores = np.asarray(queries, np.float64) @ np.asarray(vectors, np.float64).T
    ids = np.full((len(queries), n), -1, np.int64)
    vals = np.full((len(queries), n), -np.inf, np.float32)
    for q in range(len(queries)):
        ok = np.array(sorted(allowed_rows(len(vectors), q, **filters)), dtype=np.int64)
        if ok.size:
            order = ok[np.lexsort((ok, -scores[q, ok]))][:n]
            ids[q, :len(order)] = order
            vals[q, :len(order)] = scores[q, order]
    return ids, vals


def true_scores(vectors, queries, ids):
    s = np.einsum("qkd,qd->qk", vectors[np.maximum(ids, 0)].astype(np.float64), queries.astype(np.float64))
    return np.where(ids >= 0, s, -np.inf)


# -- exact index: property tests ----------------------------------------------------------------------

small_ints = st.integers(-2, 2).map(float)  # integer products are exact in float32: ties are real ties


@st.composite
def exact_cases(draw):
    n_rows = draw(st.integers(1, 40))
    dim = draw(st.integers(1, 5))
    n_q = draw(st.integers(1, 4))
    vectors = draw(hnp.arrays(np.float32, (n_rows, dim), elements=small_ints))
    queries = draw(hnp.arrays(np.float32, (n_q, dim), elements=small_ints))
    n = draw(st.one_of(st.sampled_from([1, n_rows, n_rows + 1]), st.integers(1, n_rows + 3)))
    filters = {}
    allow_form = draw(st.sampled_from(["none", "shared-small", "shared", "shared-array", "per-query"]))
    if allow_form == "shared-small":
        filters["allow"] = draw(st.lists(st.integers(0, n_rows - 1), max_size=max(1, n_rows // 8)))
    elif allow_form in ("shared", "shared-array"):
        lst = draw(st.lists(st.integers(0, n_rows - 1), max_size=n_rows + 3))
        filters["allow"] = np.asarray(lst, dtype=np.int64) if allow_form == "shared-array" else lst
    elif allow_form == "per-query":
        filters["allow"] = draw(index_lists(n_q, n_rows))
    deny_form = draw(st.sampled_from(["none", "shared", "per-query"]))
    if deny_form == "shared":
        filters["deny"] = draw(st.lists(st.integers(0, n_rows - 1), max_size=n_rows))
    elif deny_form == "per-query":
        filters["deny"] = draw(index_lists(n_q, n_rows))
    if draw(st.booleans()):
        filters["mask"] = draw(hnp.arrays(np.bool_, n_rows))
    return vectors, queries, n, filters


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exact_cases())
def test_exact_matches_reference(case):
    vectors, queries, n, filters = case
    index = ExactIndex(vectors)
    ids, scores = index.search(queries, n, **filters)
    ref_ids, ref_scores = reference_search(vectors, queries, n, **filters)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert ids.shape == scores.shape == (len(queries), n)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores)


@settings(max_examples=100, deadline=None)
@given(exact_cases())
def test_exact_batch_equals_single(case):
    vectors, queries, n, filters = case
    index = ExactIndex(vectors)
    ids, scores = index.search(queries, n, **filters)
    for q in range(len(queries)):
        single = {}
        for name, obj in filters.items():
            per_query = name != "mask" and isinstance(obj, list) and obj and not np.isscalar(obj[0])
            single[name] = [obj[q]] if per_query else obj
        one_ids, one_scores = index.search(queries[q], n, **single)  # a 1-D query is a batch of one
        np.testing.assert_array_equal(one_ids[0], ids[q])
        np.testing.assert_array_equal(one_scores[0], scores[q])


def test_exact_blocks_and_subset_paths(monkeypatch):
    import persona.retrieval.exact as exact

    rng = np.random.default_rng(1)
    vectors = rng.integers(-3, 4, (500, 8)).astype(np.float32)
    queries = rng.integers(-3, 4, (37, 8)).astype(np.float32)
    allow = rng.choice(500, 20, replace=False)
    want = reference_search(vectors, queries, 7, allow=allow, deny=[int(allow[0])])
    monkeypatch.setattr(exact, "_BLOCK_BYTES", 4 * 500 * 5)  # 5 queries per block
    got = ExactIndex(vectors).search(queries, 7, allow=allow, deny=[int(allow[0])])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    got = ExactIndex(vectors).search(queries, 7)
    np.testing.assert_array_equal(got[0], reference_search(vectors, queries, 7)[0])
    mask = np.zeros(500, bool)
    mask[allow] = True  # a selective mask is scored on the allowed rows only
    deny = [[int(allow[i % 20])] for i in range(37)]
    got = ExactIndex(vectors).search(queries, 7, mask=mask, deny=deny)
    want = reference_search(vectors, queries, 7, mask=mask, deny=deny)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_cosine_metric():
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((300, 6)) * rng.uniform(0.1, 10, (300, 1))
    queries = rng.standard_normal((4, 6)) * 5
    for index in (ExactIndex(vectors, "cosine"), FaissIndex(vectors, "cosine", ef_search=300)):
        ids, scores = index.search(queries, 5)
        unit_v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        ref_ids, ref_scores = reference_search(unit_v, unit_q, 5)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(index.vectors, axis=1), 1.0, rtol=1e-6)
    zero = ExactIndex(vectors, "cosine").search(np.zeros(6), 3)[1]
    np.testing.assert_array_equal(zero, np.zeros((1, 3), np.float32))


# -- faiss index ---------------------------------------------------------------------------------------

N_ROWS, DIM = 2000, 16
FORCE_ANN = {"exact_below": 0, "exact_fraction": 0.0}  # filters go through faiss's selector, not exact


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((N_ROWS, DIM)).astype(np.float32),
            rng.standard_normal((200, DIM)).astype(np.float32))


@pytest.fixture(scope="module")
def faiss_indexes(data):
    vectors, _ = data
    return {
        "hnsw": FaissIndex(vectors, kind="hnsw", ef_search=64, **FORCE_ANN),
        "ivf": FaissIndex(vectors, kind="ivf", nprobe=48, **FORCE_ANN),
        "ivfpq": FaissIndex(vectors, kind="ivfpq", nlist=32, nprobe=8, pq_m=8, **FORCE_ANN),
        "hnsw-default": FaissIndex(vectors, kind="hnsw"),
    }


@pytest.fixture(scope="module")
def exact(data):
    return ExactIndex(data[0])


def check_valid(index, queries, n, ids, scores, **filters):
    """Allowed, unique, best first (ties by lower row), exactly min(n, allowed) long, true scores."""
    assert ids.shape == scores.shape == (len(queries), n)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    for q in range(len(queries)):
        ok = allowed_rows(index.n, q, **filters)
        want = min(n, len(ok))
        row, val = ids[q], scores[q]
        assert (row[:want] >= 0).all() and (row[want:] == -1).all(), f"row {q}: {row} ({len(ok)} allowed)"
        assert np.isneginf(val[want:]).all()
        got = row[:want].tolist()
        assert len(set(got)) == want and set(got) <= ok
        assert all((val[i], -got[i]) >= (val[i + 1], -got[i + 1]) for i in range(want - 1))
    np.testing.assert_allclose(scores, true_scores(index.vectors, queries, ids), rtol=1e-5, atol=1e-5)


@st.composite
def faiss_filters(draw, n):
    """Filters from 'everything' down to 1, n and n + 1 allowed rows, in every form."""
    n_q = draw(st.integers(1, 3))
    count = draw(st.sampled_from([1, n, n + 1, 2 * n, 60, 400, N_ROWS // 2, N_ROWS]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    form = draw(st.sampled_from(["allow", "mask", "deny", "per-query-allow", "allow+deny+mask"]))
    chosen = rng.choice(N_ROWS, min(count, N_ROWS), replace=False)
    if form == "allow":
        return n_q, {"allow": chosen}
    if form == "mask":
        mask = np.zeros(N_ROWS, bool)
        mask[chosen] = True
        return n_q, {"mask": mask}
    if form == "deny":
        return n_q, {"deny": np.setdiff1d(np.arange(N_ROWS), chosen)}
    if form == "per-query-allow":
        return n_q, {"allow": [rng.choice(N_ROWS, min(count, N_ROWS), replace=False) for _ in range(n_q)]}
    mask = rng.random(N_ROWS) < 0.9
    return n_q, {"allow": chosen.tolist(), "deny": chosen[: len(chosen) // 10], "mask": mask}


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfpq", "hnsw-default"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.sampled_from([1, 10, 50]), draw_filters=st.data())
def test_faiss_results_valid_under_filters(faiss_indexes, data, kind, n, draw_filters):
    index = faiss_indexes[kind]
    n_q, filters = draw_filters.draw(faiss_filters(n))
    queries = data[1][:n_q]
    ids, scores = index.search(queries, n, **filters)
    check_valid(index, queries, n, ids, scores, **filters)


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfpq"])
def test_faiss_unfiltered_and_k_beyond_rows(faiss_indexes, data, kind):
    index = faiss_indexes[kind]
    queries = data[1][:5]
    for n in (1, 10, 100):
        check_valid(index, queries, n, *index.search(queries, n))
    tiny = FaissIndex(data[0][:30], kind="hnsw" if kind == "hnsw" else "ivf", nlist=4)
    ids, scores = tiny.search(queries, 40)
    check_valid(tiny, queries, 40, ids, scores)
    assert (ids[:, 30:] == -1).all()


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_faiss_recall_against_exact(faiss_indexes, exact, data, kind):
    index = faiss_indexes[kind]
    queries = data[1]
    truth, _ = exact.search(queries, 10)
    got, _ = index.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got)])
    assert recall >= 0.9, f"{kind} recall@10 = {recall:.3f}"
    mask = np.random.default_rng(5).random(N_ROWS) < 0.3
    truth, _ = exact.search(queries, 10, mask=mask)
    got, _ = index.search(queries, 10, mask=mask)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got)])
    assert recall >= 0.9, f"{kind} filtered recall@10 = {recall:.3f}"


def test_faiss_exact_fallback_equals_exact(faiss_indexes, exact, data):
    index = faiss_indexes["hnsw-default"]  # default thresholds: 2,000 rows -> filtered searches are exact
    queries = data[1][:20]
    allow = np.arange(0, N_ROWS, 3)
    a = index.search(queries, 10, allow=allow, deny=[0, 3])
    b = exact.search(queries, 10, allow=allow, deny=[0, 3])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6)


# -- persistence, threads, factory ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf", "ivfpq"])
def test_save_load_round_trip(tmp_path, faiss_indexes, exact, data, kind):
    index = exact if kind == "exact" else faiss_indexes[kind]
    queries = data[1][:30]
    mask = np.random.default_rng(3).random(N_ROWS) < 0.5
    before = [index.search(queries, 10), index.search(queries, 10, mask=mask, deny=[1, 2, 3])]
    path = index.save(tmp_path / "index.persona")
    for loaded in (load_index(path), type(index).load(path), Index.load(path)):
        assert type(loaded) is type(index) and loaded.metric == index.metric and loaded.n == N_ROWS
        after = [loaded.search(queries, 10), loaded.search(queries, 10, mask=mask, deny=[1, 2, 3])]
        for (i0, s0), (i1, s1) in zip(before, after):
            np.testing.assert_array_equal(i0, i1)
            np.testing.assert_array_equal(s0, s1)
    other = ExactIndex if kind != "exact" else FaissIndex
    with pytest.raises(ArtifactError):
        other.load(path)
    assert not list(path.rglob("*.pkl"))


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_concurrent_searches_match_sequential(faiss_indexes, exact, data, kind):
    index = exact if kind == "exact" else faiss_indexes[kind]
    rng = np.random.default_rng(4)
    jobs = []
    for j in range(64):
        filt = [{}, {"mask": rng.random(N_ROWS) < 0.2}, {"allow": rng.choice(N_ROWS, 300, replace=False)},
                {"deny": [[j], [j + 1]]}][j % 4]
        jobs.append((data[1][j % 100:j % 100 + 2], 10, filt))
    sequential = [index.search(q, n, **f) for q, n, f in jobs]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda job: index.search(job[0], job[1], **job[2]), jobs))
    for (a, b), (c, d) in zip(sequential, concurrent):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_make_index(data):
    vectors = data[0][:500]
    assert isinstance(make_index(vectors), ExactIndex)
    index = make_index(vectors, exact_max_rows=100, ef_search=32)
    assert isinstance(index, FaissIndex) and index.kind == "hnsw" and index.ef_search == 32
    assert isinstance(make_index(vectors, kind="ivf", nlist=8), FaissIndex)
    with pytest.raises(ParameterError):
        make_index(vectors, kind="annoy")


def test_import_does_not_load_faiss():
    code = "import sys, persona, persona.retrieval; print('faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ExactIndex, FaissIndex])
def test_bad_input_raises_persona_errors(cls, data):
    vectors = data[0][:300]
    index = cls(vectors)
    q = data[1][:2]
    with pytest.raises(ParameterError, match="shape"):
        index.search(q[:, :5], 3)
    with pytest.raises(ParameterError, match="NaN"):
        index.search(np.where(np.arange(DIM) == 2, np.nan, q), 3)
    for n in (0, -1, 1.5, True, None):
        with pytest.raises(ParameterError, match="n: expected an integer between 1 and"):
            index.search(q, n)
    with pytest.raises(DataError, match="outside"):
        index.search(q, 3, allow=[0, 300])
    with pytest.raises(DataError, match="outside"):
        index.search(q, 3, deny=[-1])
    with pytest.raises(DataError, match="outside"):
        index.search(q, 3, allow=[[0], [5000]])
    with pytest.raises(ParameterError):
        index.search(q, 3, allow=[[0], [1], [2]])  # three lists for two queries
    with pytest.raises(ParameterError, match="mask"):
        index.search(q, 3, mask=np.ones(299, bool))
    with pytest.raises(ParameterError, match="mask"):
        index.search(q, 3, mask=np.ones(300, int))
    with pytest.raises(ParameterError):
        index.search(q, 3, allow=[0.5, 1.0])
    with pytest.raises(DataError):
        cls(np.zeros((0, DIM), np.float32))
    with pytest.raises(DataError):
        cls(np.zeros(DIM, np.float32))
    with pytest.raises(ParameterError, match="NaN"):
        cls(np.where(np.arange(DIM) == 1, np.inf, vectors))
    with pytest.raises(ParameterError):
        cls(vectors, metric="l2")
    # an empty allow-list or an all-False mask is not an error: nothing passes, rows are padding
    ids, scores = index.search(q, 3, allow=[])
    assert (ids == -1).all() and np.isneginf(scores).all()
    ids, _ = index.search(q, 3, mask=np.zeros(300, bool))
    assert (ids == -1).all()


def test_faiss_bad_parameters(data):
    vectors = data[0][:300]
    with pytest.raises(ParameterError, match="kind"):
        FaissIndex(vectors, kind="lsh")
    with pytest.raises(ParameterError, match="pq_m"):
        FaissIndex(vectors, kind="ivfpq", pq_m=5)
    with pytest.raises(ParameterError):
        FaissIndex(vectors, M=0)
    with pytest.raises(PersonaError):
        FaissIndex(vectors, kind="ivf", nlist=64, train_size=10)


def test_short_faiss_rows_fall_back_to_exact(monkeypatch, exact, data):
    """IVF probing one list finds few of 11 scattered allowed rows; without retries the exact fallback fills in."""
    import persona.retrieval.faiss_index as fi

    monkeypatch.setattr(fi, "_RETRIES", 0)
    index = FaissIndex(data[0], kind="ivf", nlist=64, nprobe=1, **FORCE_ANN)
    queries = data[1][:20]
    allow = np.random.default_rng(6).choice(N_ROWS, 11, replace=False)
    direct = index.faiss_index.search(queries, 10, params=index._params(10, None, 1))[1]
    assert (direct >= 0).all()  # unfiltered IVF has enough rows per list ...
    ids, scores = index.search(queries, 10, allow=allow)  # ... but not enough allowed ones
    check_valid(index, queries, 10, ids, scores, allow=allow)
    np.testing.assert_array_equal(ids, exact.search(queries, 10, allow=allow)[0])


# ------------------------------------------------------------------ growing an index
@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_added_rows_are_searchable_with_the_next_ids(kind):
    from persona.retrieval import ExactIndex, FaissIndex

    rng = np.random.default_rng(11)
    base_rows = rng.standard_normal((500, 8)).astype(np.float32)
    index = ExactIndex(base_rows) if kind == "exact" else FaissIndex(base_rows, kind=kind, nlist=8, nprobe=8)
    new = rng.standard_normal((20, 8)).astype(np.float32) * 10  # far larger norms: they win inner products
    assert index.add(new) is index and index.n == 520
    ids, scores = index.search(new[:3], n=1)
    assert ids[:, 0].tolist() == [500, 501, 502]
    np.testing.assert_allclose(scores[:, 0], (new[:3] * new[:3]).sum(axis=1), rtol=1e-4)
    with pytest.raises(ParameterError, match="columns"):
        index.add(np.ones((2, 3), dtype=np.float32))


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_faiss_index_loads_memory_mapped_and_read_only(kind, tmp_path):
    rng = np.random.default_rng(12)
    rows = rng.standard_normal((800, 8)).astype(np.float32)
    index = FaissIndex(rows, kind=kind, nlist=8, nprobe=8)
    path = index.save(tmp_path / "idx")
    assert (path / "files" / "index.faiss").exists()
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    mapped = load_index(path, mmap=True)
    np.testing.assert_array_equal(mapped.search(queries, n=5)[0], index.search(queries, n=5)[0])
    with pytest.raises(ParameterError, match="read-only"):
        mapped.add(rows[:2])
    assert load_index(path).add(rows[:2]).n == 802  # a normal load can grow


def test_corrupted_faiss_file_is_refused(tmp_path):
    rows = np.random.default_rng(13).standard_normal((300, 8)).astype(np.float32)
    path = FaissIndex(rows, kind="hnsw").save(tmp_path / "idx")
    victim = path / "files" / "index.faiss"
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="checksum"):
        load_index(path)
