"""Property tests of the top-k kernel: every backend against a brute-force oracle and each other.

The contract (persona.kernels.topk): higher score first, ties by lower index, NaN ranks as -inf;
per-row exclusions, optional allow-lists (per row or shared), optional item mask; exactly
min(k, allowed) results per row, padded with -1 / -inf; never a duplicate.
"""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from persona.errors import PersonaError
from persona.kernels import available_backends, topk, topk_backend
from persona.kernels._reference import topk_reference
from strategies import (TopKCase, as_csr, as_indptr_indices, index_lists, score_matrices, sparse_matrices,
                        topk_inputs)

topk_module = importlib.import_module("persona.kernels.topk")  # the name `topk` is the function

BACKENDS = available_backends()
needs_cpp = pytest.mark.skipif("cpp" not in BACKENDS, reason="compiled core not built")
# Sized to keep this file well under a minute on two busy cores: the Numba backend costs ~0.1-1 ms
# a call (parallel launch) however small the input, and the tests below call it thousands of times.
SETTINGS = settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])


def test_all_backends_present():
    # the package is built with its core and installs numba: a silent fallback would hide a broken build
    assert BACKENDS == ["cpp", "numba", "numpy"]


def oracle(case: TopKCase) -> tuple[np.ndarray, np.ndarray]:
    """Expected answer by sorting (score desc, index asc) in plain Python over the allowed sets."""
    m, n_items = case.scores.shape
    idx = np.full((m, case.k), -1, dtype=np.int64)
    val = np.full((m, case.k), -np.inf, dtype=np.float32)
    for r in range(m):
        row = [(-np.inf if math.isnan(s) else float(s), i) for i, s in enumerate(case.scores[r].tolist())]
        ranked = sorted((row[i] for i in case.allowed(r)), key=lambda si: (-si[0], si[1]))[:case.k]
        idx[r, :len(ranked)] = [i for _, i in ranked]
        val[r, :len(ranked)] = [s for s, _ in ranked]
    return idx, val


def check_invariants(case: TopKCase, idx: np.ndarray, val: np.ndarray) -> None:
    """The contract, checked row by row without reference to any other implementation."""
    m, n_items = case.scores.shape
    assert idx.shape == (m, case.k) and val.shape == (m, case.k)
    assert idx.dtype == np.int64 and val.dtype == np.float32
    for r in range(m):
        allowed = case.allowed(r)
        valid = idx[r] != -1
        n_valid = int(valid.sum())
        assert n_valid == min(case.k, len(allowed))
        assert valid[:n_valid].all(), "results must come before the padding"
        assert np.all(np.isneginf(val[r, n_valid:])), "padding scores must be -inf"
        got = idx[r, :n_valid].tolist()
        assert len(set(got)) == n_valid, f"duplicate results {got}"
        assert set(got) <= allowed, f"returned items outside the allowed set: {set(got) - allowed}"
        expected_scores = case.scores[r, got]
        expected_scores = np.where(np.isnan(expected_scores), -np.inf, expected_scores)
        np.testing.assert_array_equal(val[r, :n_valid], expected_scores)
        for a in range(n_valid - 1):  # strictly ordered by (score desc, index asc)
            s0, s1, i0, i1 = val[r, a], val[r, a + 1], got[a], got[a + 1]
            assert s0 > s1 or (s0 == s1 and i0 < i1), f"row {r} out of order at {a}: {(s0, i0)}, {(s1, i1)}"


def assert_same(a, b, what=""):
    np.testing.assert_array_equal(a[0], b[0], err_msg=f"indices differ {what}")
    np.testing.assert_array_equal(a[1], b[1], err_msg=f"scores differ {what}")


# --------------------------------------------------------------------------------------------------
# agreement and contract on random inputs


@settings(SETTINGS, max_examples=250)
@given(case=topk_inputs())
def test_backends_agree_with_oracle_and_contract(case):
    expected = oracle(case)
    check_invariants(case, *expected)  # guards the oracle itself
    for backend in BACKENDS:
        got = topk(case.scores, case.k, backend=backend, **case.kwargs)
        check_invariants(case, *got)
        assert_same(got, expected, f"backend={backend} forms={case.forms}")


@SETTINGS
@given(case=topk_inputs(forms=("tuple",)))
def test_reference_direct_call_matches_oracle(case):
    ex = as_indptr_indices(case.exclude_rows) if case.exclude_rows is not None else (None, None)
    al = as_indptr_indices(case.allow_rows) if case.allow_rows is not None else (None, None)
    assert_same(topk_reference(case.scores, case.k, *ex, *al, case.mask), oracle(case))


@needs_cpp
@SETTINGS
@given(case=topk_inputs(max_rows=40, max_items=30, forms=("tuple",)))
def test_cpp_thread_counts_identical(case):
    results = [topk(case.scores, case.k, backend="cpp", num_threads=t, **case.kwargs) for t in (1, 2, 3, 0)]
    for other in results[1:]:
        assert_same(results[0], other)


@settings(SETTINGS, max_examples=60)
@given(case=topk_inputs(max_rows=6, max_items=20))
def test_batch_equals_loop_over_rows(case):
    for backend in BACKENDS:
        batch = topk(case.scores, case.k, backend=backend, **case.kwargs)
        for r in range(case.scores.shape[0]):
            kwargs = {}
            if case.exclude_rows is not None:
                kwargs["exclude"] = [case.exclude_rows[r]]
            if case.allow_rows is not None:
                kwargs["allow"] = [case.allow_rows[r]]
            if case.mask is not None:
                kwargs["mask"] = case.mask
            single = topk(case.scores[r:r + 1], case.k, backend=backend, **kwargs)
            assert_same((batch[0][r:r + 1], batch[1][r:r + 1]), single, f"backend={backend} row={r}")


@settings(SETTINGS, max_examples=80)
@given(case=topk_inputs(distinct=True, forms=("lists",)), data=st.data())
def test_relabelling_items_relabels_results(case, data):
    # without ties the answer is a set of items, not of positions: permuting the columns (and the
    # exclusions, allow-lists and mask with them) must return the same items under their new labels
    n_items = case.scores.shape[1]
    perm = np.asarray(data.draw(st.permutations(range(n_items))), dtype=np.int64)  # new col j = old perm[j]
    new_label = np.empty(n_items, dtype=np.int64)
    new_label[perm] = np.arange(n_items)
    kwargs = {}
    if case.exclude_rows is not None:
        kwargs["exclude"] = [[int(new_label[i]) for i in row] for row in case.exclude_rows]
    if "allow" in case.kwargs:
        allow = case.kwargs["allow"]
        if isinstance(allow, np.ndarray) or (allow and not isinstance(allow[0], list)):  # shared
            kwargs["allow"] = new_label[np.asarray(allow, dtype=np.int64)]
        else:
            kwargs["allow"] = [[int(new_label[i]) for i in row] for row in case.allow_rows]
    if case.mask is not None:
        kwargs["mask"] = case.mask[perm]
    for backend in BACKENDS:
        idx, val = topk(case.scores, case.k, backend=backend, **case.kwargs)
        idx2, val2 = topk(case.scores[:, perm], case.k, backend=backend, **kwargs)
        back = np.append(perm, -1)[idx2]  # -1 (padding) picks the appended -1
        np.testing.assert_array_equal(back, idx, err_msg=f"backend={backend}")
        np.testing.assert_array_equal(val2, val, err_msg=f"backend={backend}")


@settings(SETTINGS, max_examples=40)
@given(scores=score_matrices(max_rows=5, max_items=15), data=st.data())
def test_input_forms_are_equivalent(scores, data):
    # lists, CSR matrix and (indptr, indices) mean the same; a shared allow-list equals it repeated
    m, n_items = scores.shape
    k = data.draw(st.integers(0, n_items + 2))
    ex = data.draw(index_lists(m, n_items))
    shared = data.draw(st.lists(st.integers(0, max(n_items - 1, 0)), max_size=n_items + 2)) if n_items else []
    for backend in BACKENDS:
        want = topk(scores, k, exclude=ex, allow=[list(shared)] * m, backend=backend)
        for exclude in (as_csr(ex, n_items), as_indptr_indices(ex)):
            for allow in (shared, np.asarray(shared, dtype=np.int32), as_csr([shared] * m, n_items),
                          as_indptr_indices([shared] * m)):
                assert_same(topk(scores, k, exclude=exclude, allow=allow, backend=backend), want)


# --------------------------------------------------------------------------------------------------
# edge cases named outright


@pytest.mark.parametrize("backend", BACKENDS)
def test_named_edge_cases(backend):
    def run(scores, k, **kw):
        return topk(np.asarray(scores, dtype=np.float32), k, backend=backend, **kw)

    # 0 rows, 0 items, k = 0
    idx, val = run(np.zeros((0, 5)), 3)
    assert idx.shape == (0, 3) and val.shape == (0, 3)
    idx, val = run(np.zeros((2, 0)), 2)
    assert idx.tolist() == [[-1, -1]] * 2 and np.isneginf(val).all()
    assert run(np.ones((2, 4)), 0)[0].shape == (2, 0)
    # ties go to the lower index; NaN ranks with -inf, still before padding
    idx, val = run([[1, 2, 2, np.nan, -np.inf, 1]], 7)
    assert idx.tolist() == [[1, 2, 0, 5, 3, 4, -1]]
    assert val[0, :4].tolist() == [2, 2, 1, 1] and np.isneginf(val[0, 4:]).all()
    # everything excluded, and an allow-list fully excluded
    assert run([[1, 2, 3]], 2, exclude=[[2, 0, 1]])[0].tolist() == [[-1, -1]]
    assert run([[1, 2, 3]], 2, exclude=[[2]], allow=[[2, 2]])[0].tolist() == [[-1, -1]]
    # duplicates in an allow-list never produce duplicate results
    assert run([[1, 2, 3]], 3, allow=[[0, 0, 2, 0, 2]])[0].tolist() == [[2, 0, -1]]
    assert run([[1, 2, 3], [3, 2, 1]], 3, allow=[1, 1, 0])[0].tolist() == [[1, 0, -1], [0, 1, -1]]
    # the mask removes items from every row
    assert run([[1, 2, 3], [3, 2, 1]], 2, mask=[True, False, True])[0].tolist() == [[2, 0], [0, 2]]
    # a sparse exclude narrower than the item count is fine (items beyond it have no entries)
    assert run([[1, 2, 3]], 1, exclude=sp.csr_matrix(np.array([[0, 1]])))[0].tolist() == [[2]]
    # +-0.0 tie
    assert run([[-0.0, 0.0]], 2)[0].tolist() == [[0, 1]]


@needs_cpp
def test_huge_k_does_not_crash():
    """Regression: with k far above n_items, the C++ heap reserved k slots inside the OpenMP region;
    std::length_error escaped it and the process aborted (rc 134) for 0 rows and k = 10**15."""
    code = ("import numpy as np; from persona.kernels import topk; "
            "i, v = topk(np.zeros((0, 5), np.float32), 10**15, backend='cpp'); assert i.shape == (0, 10**15); "
            "i, v = topk(np.ones((3, 4), np.float32), 1000, backend='cpp', num_threads=2); "
            "assert (i[:, 4:] == -1).all() and i.shape == (3, 1000)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with pytest.raises((MemoryError, ValueError)):
        topk(np.zeros((3, 5), np.float32), 2**62, backend="cpp")


@pytest.mark.parametrize("backend", BACKENDS)
def test_wide_index_dtype_is_range_checked_not_wrapped(backend):
    """Regression: int64 indices in the (indptr, indices) form were cast to int32 unchecked, so
    2**32 + 1 silently excluded item 1."""
    scores = np.arange(5, dtype=np.float32)[None]
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        topk(scores, 5, exclude=(np.array([0, 1]), np.array([2**32 + 1], dtype=np.int64)), backend=backend)
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        topk(scores, 5, allow=(np.array([0, 1]), np.array([2**32 + 1], dtype=np.int64)), backend=backend)
    with pytest.raises(ValueError, match="integers"):
        topk(scores, 5, exclude=(np.array([0, 1]), np.array([1.5])), backend=backend)


@needs_cpp
def test_cpp_many_rows_many_threads_matches_reference():
    # enough rows that OpenMP's dynamic schedule (chunks of 16) really spreads them over threads
    rng = np.random.default_rng(7)
    m, n_items = 700, 300
    scores = rng.integers(0, 20, size=(m, n_items)).astype(np.float32)  # many ties
    scores[rng.random(scores.shape) < 0.02] = np.nan
    ex = [rng.integers(0, n_items, size=rng.integers(0, 40)).tolist() for _ in range(m)]
    al = [rng.integers(0, n_items, size=rng.integers(0, 200)).tolist() if r % 3 == 0 else list(range(n_items))
          for r in range(m)]
    mask = rng.random(n_items) < 0.9
    want = topk(scores, 25, exclude=ex, allow=al, mask=mask, backend="numpy")
    for threads in (1, 2, 4, 0):
        assert_same(topk(scores, 25, exclude=ex, allow=al, mask=mask, backend="cpp", num_threads=threads), want)
    assert_same(topk(scores, 25, exclude=ex, allow=al, mask=mask, backend="numba"), want)


# --------------------------------------------------------------------------------------------------
# bad input: ValueError with a message that says what is wrong, never a crash


def _core():
    from persona import _core

    return _core


S = np.ones((2, 4), dtype=np.float32)
PTR = np.array([0, 1, 2], dtype=np.int64)
IND = np.array([0, 3], dtype=np.int32)

CORE_BAD = [
    ("1-D scores", lambda c: c.topk(np.ones(4, np.float32), 2), r"2-D.*got 1"),
    ("3-D scores", lambda c: c.topk(np.ones((1, 2, 3), np.float32), 2), r"2-D.*got 3"),
    ("negative k", lambda c: c.topk(S, -1), r"k must be >= 0, got -1"),
    ("negative threads", lambda c: c.topk(S, 1, num_threads=-2), r"num_threads must be >= 0"),
    ("exclude index too big", lambda c: c.topk(S, 1, PTR, np.array([0, 4], np.int32)),
     r"exclude_indices holds 4, outside \[0, 4\)"),
    ("exclude index negative", lambda c: c.topk(S, 1, PTR, np.array([-1, 0], np.int32)),
     r"exclude_indices holds -1, outside \[0, 4\)"),
    ("allow index too big", lambda c: c.topk(S, 1, None, None, PTR, np.array([9, 0], np.int32)),
     r"allow_indices holds 9"),
    ("indptr too short", lambda c: c.topk(S, 1, np.array([0, 2], np.int64), IND),
     r"exclude_indptr must have n_rows \+ 1 = 3 entries, got 2"),
    ("indptr too long", lambda c: c.topk(S, 1, None, None, np.array([0, 1, 2, 2], np.int64), IND),
     r"allow_indptr must have n_rows \+ 1 = 3 entries, got 4"),
    ("indptr decreasing", lambda c: c.topk(S, 1, np.array([0, 2, 1], np.int64), IND), r"non-decreasing"),
    ("indptr not from 0", lambda c: c.topk(S, 1, np.array([1, 1, 2], np.int64), IND), r"start at 0"),
    ("indptr end != nnz", lambda c: c.topk(S, 1, np.array([0, 1, 1], np.int64), IND),
     r"exclude_indptr\[-1\] = 1 but exclude_indices has 2 entries"),
    ("indptr without indices", lambda c: c.topk(S, 1, PTR, None), r"both exclude_indptr and exclude_indices"),
    ("mask too short", lambda c: c.topk(S, 1, mask=np.ones(3, bool)), r"one entry per item \(4\), got 3"),
    ("mask 2-D", lambda c: c.topk(S, 1, mask=np.ones((2, 4), bool)), r"mask must be a 1-D"),
]


@needs_cpp
@pytest.mark.parametrize("name, call, message", CORE_BAD, ids=[c[0] for c in CORE_BAD])
def test_core_rejects_bad_input(name, call, message):
    with pytest.raises(ValueError, match=message):
        call(_core())


ROUTER_BAD = [
    ("1-D scores", dict(scores=np.ones(4), k=2), r"2-D.*got 1-D.*scores\[None, :\]"),
    ("negative k", dict(k=-1), r"non-negative integer, got -1"),
    ("float k", dict(k=2.0), r"non-negative integer, got 2.0"),
    ("bool k", dict(k=True), r"non-negative integer, got True"),
    ("exclude list out of range", dict(exclude=[[0], [4]]), r"outside \[0, 4\)"),
    ("exclude list negative", dict(exclude=[[-1], []]), r"outside \[0, 4\)"),
    ("exclude tuple out of range", dict(exclude=(PTR, np.array([0, 7], np.int32))), r"outside \[0, 4\)|holds 7"),
    ("exclude rows mismatch", dict(exclude=[[0]]), r"exclude has 1 rows but scores has 2"),
    ("exclude csr rows mismatch", dict(exclude=sp.csr_matrix((3, 4))), r"exclude has 3 rows but scores has 2"),
    ("exclude csr too wide", dict(exclude=sp.csr_matrix((2, 5))), r"5 columns but there are 4 items"),
    ("indptr wrong length", dict(exclude=(np.array([0, 2]), IND)), r"3 entries.*got 2"),
    ("indptr non-monotone", dict(allow=(np.array([0, 2, 1]), IND)), r"never decrease|non-decreasing"),
    ("shared allow out of range", dict(allow=np.array([1, 4])), r"outside \[0, 4\)|holds 4"),
    ("mask wrong length", dict(mask=np.ones(5, bool)), r"one (bool|entry) per item.*4.*5"),
    ("unknown backend", dict(backend="cuda"), r"backend must be one of"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, kwargs, message", ROUTER_BAD, ids=[c[0] for c in ROUTER_BAD])
def test_router_rejects_bad_input(backend, name, kwargs, message):
    kwargs = dict(kwargs)
    args = dict(scores=S, k=2, backend=backend)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        topk(args.pop("scores"), args.pop("k"), **args)


# --------------------------------------------------------------------------------------------------
# concurrency and backend choice


@needs_cpp
def test_cpp_call_releases_the_gil():
    # A Python thread stamps the time whenever it holds the GIL. If the C++ call kept the GIL, no
    # stamp could fall inside the call; with it released, the thread keeps going meanwhile.
    n_items, k = 200_000, 4096
    scores = np.tile(np.arange(n_items, dtype=np.float32), (40, 1))  # ascending: every push sifts
    stamps: list[float] = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0.0005)

    thread = threading.Thread(target=ticker, daemon=True)
    thread.start()
    try:
        while not stamps:
            time.sleep(0.001)
        t0 = time.perf_counter()
        topk(scores, k, backend="cpp", num_threads=1)
        t1 = time.perf_counter()
    finally:
        stop.set()
        thread.join()
    duration = t1 - t0
    assert duration > 0.02, f"the call took {duration:.4f}s, too short to tell; make the input larger"
    lo, hi = t0 + 0.2 * duration, t0 + 0.8 * duration
    inside = [s for s in stamps if lo <= s <= hi]
    assert len(inside) >= 3, (f"the Python thread made {len(inside)} steps during the middle of a "
                              f"{duration:.3f}s C++ call; the GIL is not released")


@pytest.mark.parametrize("wanted", ["cpp", "numba", "numpy", " NumPy "])
def test_backend_env_var_is_honoured(monkeypatch, wanted):
    monkeypatch.setattr(topk_module, "_chosen", None)
    monkeypatch.setenv("PERSONA_TOPK_BACKEND", wanted)
    assert topk_backend() == wanted.strip().lower()
    # chosen once, then cached: changing the variable later changes nothing
    monkeypatch.setenv("PERSONA_TOPK_BACKEND", "numpy" if wanted.strip().lower() != "numpy" else "numba")
    assert topk_backend() == wanted.strip().lower()


def test_backend_env_var_routes_calls(monkeypatch):
    calls = []
    import persona.kernels._reference as reference

    real = reference.topk_reference
    monkeypatch.setattr(reference, "topk_reference", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.setattr(topk_module, "_chosen", None)
    monkeypatch.setenv("PERSONA_TOPK_BACKEND", "numpy")
    idx, _ = topk(np.array([[0.1, 0.9, 0.5]]), 2)
    assert idx.tolist() == [[1, 2]] and calls == [1]


def test_backend_default_and_bad_env_var(monkeypatch):
    monkeypatch.setattr(topk_module, "_chosen", None)
    monkeypatch.delenv("PERSONA_TOPK_BACKEND", raising=False)
    assert topk_backend() == BACKENDS[0]
    monkeypatch.setattr(topk_module, "_chosen", None)
    monkeypatch.setenv("PERSONA_TOPK_BACKEND", "gpu")
    with pytest.raises(PersonaError, match=r"PERSONA_TOPK_BACKEND must be one of .*got 'gpu'"):
        topk_backend()


# --------------------------------------------------------------------------------------------------
# the shared strategies reach the cases they promise (other kernels' tests rely on them too)


NO_SHRINK = settings(max_examples=2000, database=None, phases=[Phase.generate])  # find, don't minimise


def _has_duplicates(m):
    return any(len(set(m.indices[m.indptr[r]:m.indptr[r + 1]])) < m.indptr[r + 1] - m.indptr[r]
               for r in range(m.shape[0]))


@pytest.mark.parametrize("name, predicate", [
    ("0 rows", lambda m: m.shape[0] == 0),
    ("0 columns", lambda m: m.shape[1] == 0 and m.shape[0] > 0),
    ("single row with entries", lambda m: m.shape[0] == 1 and m.nnz > 0),
    ("duplicate entries", _has_duplicates),
    ("empty row and column among full ones", lambda m: m.nnz > 3 and (np.diff(m.indptr) == 0).any()
     and (np.bincount(m.indices, minlength=m.shape[1]) == 0).any()),
    ("large", lambda m: m.shape[0] >= 40 and m.shape[1] >= 40 and m.nnz >= 50),
])
def test_sparse_matrices_strategy_reaches(name, predicate):
    found = find(sparse_matrices(60, 60), predicate, settings=NO_SHRINK)
    assert found.dtype == np.float32 and sp.isspmatrix_csr(found)


def test_sparse_matrices_strategy_canonical_when_asked():
    m = find(sparse_matrices(10, 10, sum_duplicates=True), lambda m: m.nnz > 5,
             settings=NO_SHRINK)
    assert m.has_canonical_format


def test_serving_on_the_compiled_core_never_imports_numba(tmp_path):
    """Issue 13 (3): the backend chooser stops at the first available backend, so a web process that
    loads a model and recommends through the C++ core does not pay numba's import (~100 ms)."""
    import subprocess
    import sys

    import persona as ps
    from persona.kernels import available_backends

    if "cpp" not in available_backends():
        pytest.fail("the compiled core is not importable; reinstall persona (pip install .)")
    inter = ps.Interactions.from_records([("a", "x"), ("a", "y"), ("b", "y"), ("b", "z"), ("c", "x")])
    ps.EASE().fit(inter).save(tmp_path / "m")
    code = (f"import sys, persona as ps; m = ps.load({str(tmp_path / 'm')!r}); m.recommend('a', n=2); "
            "m.recommend_batch(['a', 'b'], n=2); print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False"], out
