"""Crafted artifacts, re-signed as an attacker would: wrong answers at worst, never a crash (issue 11).

Checksums catch accidents; whoever can write an artifact can also recompute them. So every attack
here re-signs what it changed (array checksums, dtypes and shapes in the manifest, the manifest's own
digest, all with the library's own functions) and then loads and uses the artifact in a separate
process: the outcome must be an ArtifactError at load, a persona error, or well-shaped answers --
never a signal, a hang, or another exception.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import persona as ps
from persona.io.artifact import _manifest_digest

PROBE = Path(__file__).with_name("artifact_probe.py")
KEY = b"shop-secret-key-0123456789"


# ---------------------------------------------------------------------- crafting helpers
def manifest_of(path) -> dict:
    return json.loads((Path(path) / "manifest.json").read_text())


def resign(path, manifest: dict | None = None) -> None:
    """Recompute every checksum, dtype, shape and size the manifest records, then its own digest."""
    path = Path(path)
    manifest = manifest_of(path) if manifest is None else manifest
    for entry in manifest.get("arrays", {}).values():
        f = path / entry["file"]
        if f.is_file():
            entry["sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()
            try:
                arr = np.load(f, mmap_mode="r", allow_pickle=False)
                entry["dtype"], entry["shape"] = arr.dtype.str, list(arr.shape)
            except Exception:  # noqa: BLE001 - a file that is no longer an array keeps its old record
                pass
    for entry in manifest.get("files", {}).values():
        f = path / entry["file"]
        if f.is_file():
            entry["sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()
            entry["size"] = f.stat().st_size
    manifest.pop("signature", None)  # the attacker has no key: the best they can do is drop it
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def array_file(path, name) -> Path:
    return Path(path) / manifest_of(path)["arrays"][name]["file"]


def edit_array(path, name, fn) -> None:
    """Replace array ``name`` by ``fn(array)`` and re-sign."""
    f = array_file(path, name)
    arr = np.load(f, allow_pickle=False)
    np.save(f, np.asarray(fn(arr.copy())), allow_pickle=False)
    resign(path)


def edit_manifest(path, fn) -> None:
    m = manifest_of(path)
    fn(m)
    resign(path, m)


def copy(src, dst) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return Path(dst)


def probe(cases, tmp, *, timeout=120) -> dict:
    """Run ``cases`` (dicts with id, path, ...) in a fresh interpreter; fail on a signal or a hang."""
    tmp = Path(tmp)
    cases_file, out_file = tmp / "cases.json", tmp / "results.json"
    cases_file.write_text(json.dumps([{**c, "path": str(c["path"])} for c in cases]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    try:
        proc = subprocess.run([sys.executable, str(PROBE), str(cases_file), str(out_file)], capture_output=True,
                              text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        last = [ln for ln in (e.stderr or b"").decode(errors="replace").splitlines() if ln.startswith("CASE ")]
        pytest.fail(f"the probe hung (> {timeout} s) at {last[-1:]}")
    if proc.returncode != 0:
        last = [ln for ln in proc.stderr.splitlines() if ln.startswith("CASE ")]
        pytest.fail(f"the probe died with return code {proc.returncode} (a negative code is a signal) at "
                    f"{last[-1:]}:\n{proc.stderr[-3000:]}")
    return json.loads(out_file.read_text())


# ---------------------------------------------------------------------- the victims
def _fit_models():
    shop = ps.datasets.synthetic_shop(n_users=80, n_items=30, seed=3)
    inter = shop.interactions
    models = {
        "popular": ps.MostPopular(),
        "itemknn": ps.ItemKNN(k=5),
        "userknn": ps.UserKNN(k=5),
        "als": ps.ALS(factors=4, iterations=2, random_state=0, num_threads=1),
        "bpr": ps.BPR(factors=4, iterations=3, random_state=0, num_threads=1),
        "ease": ps.EASE(regularization=10.0),
    }
    for m in models.values():
        m.fit(inter)
    hnsw = ps.ALS(factors=4, iterations=2, random_state=0, num_threads=1).fit(inter)
    hnsw.use_index("hnsw", M=8, ef_search=16, exact_below=0, exact_fraction=0.0)  # searches go through faiss
    models["als-hnsw"] = hnsw
    ivf = ps.ALS(factors=4, iterations=2, random_state=0, num_threads=1).fit(inter)
    ivf.use_index("ivf", nlist=2, nprobe=2, exact_below=0, exact_fraction=0.0)
    models["als-ivf"] = ivf
    return inter, models


def _fit_neural(inter):
    pytest.importorskip("torch")
    from persona.models.sasrec import SASRec

    return {
        "sasrec": SASRec(factors=8, blocks=1, max_len=5, epochs=1, random_state=0, num_threads=1).fit(inter),
        "twotower": ps.TwoTower(factors=8, hidden=8, max_history=5, epochs=1, random_state=0,
                                num_threads=1).fit(inter),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("victims")
    inter, models = _fit_models()
    models.update(_fit_neural(inter))
    out = {name: m.save(root / f"{name}.persona") for name, m in models.items()}
    from persona.retrieval import FaissIndex

    rows = np.random.default_rng(4).standard_normal((200, 8)).astype(np.float32)
    out["index-ivf"] = FaissIndex(rows, kind="ivf", nlist=4, nprobe=4, exact_below=0,
                                  exact_fraction=0.0).save(root / "index-ivf")
    out["index-hnsw"] = FaissIndex(rows, kind="hnsw", M=8, exact_below=0, exact_fraction=0.0,
                                   metric="cosine").save(root / "index-hnsw")
    out["index-exact"] = ps.retrieval.ExactIndex(rows).save(root / "index-exact")
    return out


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


# ---------------------------------------------------------------------- running cases in a subprocess
def probe_each(cases, tmp, *, timeout=90) -> dict:
    """Like :func:`probe`, but a case that kills or hangs the process is recorded as its outcome
    ("signal N", "hang") and the remaining cases run in a fresh process."""
    tmp = Path(tmp)
    results, todo, rounds = {}, list(cases), 0
    while todo:
        rounds += 1
        cases_file, out_file = tmp / f"cases{rounds}.json", tmp / f"results{rounds}.json"
        cases_file.write_text(json.dumps([{**c, "path": str(c["path"])} for c in todo]))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        try:
            proc = subprocess.run([sys.executable, str(PROBE), str(cases_file), str(out_file)],
                                  capture_output=True, text=True, timeout=timeout, env=env)
            stderr, dead = proc.stderr, None if proc.returncode == 0 else f"returncode {proc.returncode}"
        except subprocess.TimeoutExpired as e:
            stderr, dead = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) \
                else (e.stderr or ""), "hang"
        done = json.loads(out_file.read_text()) if out_file.exists() else {}
        results.update(done)
        todo = [c for c in todo if c["id"] not in done]
        if dead is None or not todo:
            break
        started = [ln[5:] for ln in stderr.splitlines() if ln.startswith("CASE ")]
        culprit = started[-1] if started else todo[0]["id"]
        results[culprit] = {"outcome": dead, "detail": stderr[-2000:]}
        todo = [c for c in todo if c["id"] != culprit]
    return results


def _set(index, value):
    def fn(a):
        a[index] = value
        return a
    return fn


def _craft_faiss_neighbours(path):
    """Point every HNSW link of the stored index far outside the vectors (a search reads there)."""
    import faiss

    for name in ("index.faiss", "similar_index.faiss"):
        f = Path(path) / "files" / name
        idx = faiss.read_index(str(f))
        hnsw = faiss.downcast_index(idx).hnsw
        nb = faiss.vector_to_array(hnsw.neighbors)
        nb[nb >= 0] = 10 ** 8
        faiss.copy_array_to_vector(nb, hnsw.neighbors)
        faiss.write_index(idx, str(f))
    resign(path)


def _craft_faiss_ivf_ids(path):
    """Give every row of the stored IVF lists an id far beyond the vectors (faiss's reader accepts it)."""
    import faiss

    for f in sorted((Path(path) / "files").iterdir()):
        idx = faiss.read_index(str(f))
        ivf = faiss.extract_index_ivf(idx)
        for lst in range(ivf.nlist):
            size = ivf.invlists.list_size(lst)
            if size:
                faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), size)[:] = 10 ** 12
        faiss.write_index(idx, str(f))
    resign(path)


def _craft_faiss_garbage(path):
    f = Path(path) / "files" / "index.faiss"
    raw = bytearray(f.read_bytes())
    raw[4:40] = b"\xff" * 36  # the header's sizes: dimension, row count, ...
    f.write_bytes(bytes(raw))
    resign(path)


def _craft_onnx_external(path, location):
    """Move the encoder's largest initializer to 'external data' at ``location``."""
    import onnx

    f = Path(path) / manifest_of(path)["files"]["sequence_encoder.onnx"]["file"]
    model = onnx.load_model_from_string(f.read_bytes())
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    del init.external_data[:]
    for k, v in (("location", location), ("offset", "0"), ("length", str(4 * int(np.prod(init.dims))))):
        entry = init.external_data.add()
        entry.key, entry.value = k, v
    f.write_bytes(model.SerializeToString())
    resign(path)


def _symlink_array(path, name, target):
    f = array_file(path, name)
    f.unlink()
    os.symlink(target, f)
    resign(path)


def _outside_npy(path, name, tmp):
    """An array file that is a symlink to a (well-formed) file outside the artifact."""
    outside = Path(tmp) / f"outside-{Path(path).name}.npy"
    np.save(outside, np.load(array_file(path, name), allow_pickle=False))
    _symlink_array(path, name, outside)


def _fifo_array(path, name):
    f = array_file(path, name)
    f.unlink()
    os.mkfifo(f)
    edit_manifest(path, lambda m: None)


def _file_entry_dot(path):
    def fn(m):
        m["files"]["sequence_encoder.onnx"]["file"] = "files/."
    edit_manifest(path, fn)


def _arrays_dir_symlink(path, tmp):
    elsewhere = Path(tmp) / f"elsewhere-{Path(path).name}"
    shutil.move(str(Path(path) / "arrays"), elsewhere)
    os.symlink(elsewhere, Path(path) / "arrays")
    resign(path)


def _sign(path):
    """A signed copy of the artifact: load and save with the shop's key."""
    return ps.load(path).save(path, key=KEY)


# id -> (victim, craft(path, tmp), load options); every one must be refused at load
REFUSED = {
    # 10a: sparse indptr
    "10a-itemknn-indptr-not-monotone": ("itemknn", lambda p, t: edit_array(p, "similarity.indptr", _set(5, 10 ** 6)), {}),
    "10a-itemknn-indptr-decreasing": ("itemknn", lambda p, t: edit_array(p, "similarity.indptr", lambda a: a[::-1].copy()), {}),
    "10a-user-items-indptr-beyond-nnz": ("als", lambda p, t: edit_array(p, "user_items.indptr", _set(-1, 10 ** 7)), {}),
    "10a-userknn-indptr-negative": ("userknn", lambda p, t: edit_array(p, "similarity.indptr", _set(3, -(10 ** 6))), {}),
    "10a-user-items-indptr-short": ("itemknn", lambda p, t: edit_array(p, "user_items.indptr", lambda a: a[:-5]), {}),
    # 10b: sparse indices
    "10b-itemknn-indices-high": ("itemknn", lambda p, t: edit_array(p, "similarity.indices", lambda a: a + 10 ** 6), {}),
    "10b-itemknn-indices-negative": ("itemknn", lambda p, t: edit_array(p, "similarity.indices", _set(0, -7)), {}),
    "10b-user-items-indices-high": ("als", lambda p, t: edit_array(p, "user_items.indices", lambda a: a + 10 ** 6), {}),
    "10b-user-items-indices-high-mmap": ("ease", lambda p, t: edit_array(p, "user_items.indices", _set(0, 10 ** 6)),
                                         {"mmap": True}),
    # 10c: id maps against the arrays
    "10c-als-item-ids-short": ("als", lambda p, t: edit_array(p, "item_ids", lambda a: a[:-3]), {}),
    "10c-als-user-ids-long": ("als", lambda p, t: edit_array(p, "user_ids", lambda a: np.append(a, ["zz1", "zz2"])), {}),
    "10c-popular-item-ids-long": ("popular", lambda p, t: edit_array(p, "item_ids", lambda a: np.append(a, ["x1", "x2"])), {}),
    "10c-ease-item-ids-short": ("ease", lambda p, t: edit_array(p, "item_ids", lambda a: a[:-1]), {}),
    "10c-itemknn-item-ids-short": ("itemknn", lambda p, t: edit_array(p, "item_ids", lambda a: a[:-4]), {}),
    "10c-duplicate-item-ids": ("bpr", lambda p, t: edit_array(p, "item_ids", _set(1, "i0000")), {}),
    "10c-sasrec-item-ids-short": ("sasrec", lambda p, t: edit_array(p, "item_ids", lambda a: a[:-2]), {}),
    "10c-twotower-item-ids-long": ("twotower", lambda p, t: edit_array(p, "item_ids", lambda a: np.append(a, ["x"])), {}),
    # 10d: dtypes, shapes, values
    "10d-als-factor-width": ("als", lambda p, t: edit_array(p, "item_factors", lambda a: np.hstack([a, a[:, :1]])), {}),
    "10d-als-factors-text": ("als", lambda p, t: edit_array(p, "item_factors", lambda a: a.astype("U8")), {}),
    "10d-als-factors-nan": ("als", lambda p, t: edit_array(p, "item_factors", _set((0, 0), np.nan)), {}),
    "10d-bpr-factors-1d": ("bpr", lambda p, t: edit_array(p, "user_factors", lambda a: a.ravel()), {}),
    "10d-ease-B-short": ("ease", lambda p, t: edit_array(p, "B", lambda a: a[:-1, :-1]), {}),
    "10d-popular-scores-short": ("popular", lambda p, t: edit_array(p, "global_scores", lambda a: a[:-2]), {}),
    "10d-popular-scores-text": ("popular", lambda p, t: edit_array(p, "global_scores", lambda a: a.astype("U4")), {}),
    "10d-itemknn-shape-wider": ("itemknn", lambda p, t: edit_array(p, "similarity.shape", lambda a: a + 50), {}),
    "10d-itemknn-indices-float": ("itemknn", lambda p, t: edit_array(p, "similarity.indices", lambda a: a + 0.5), {}),
    "10d-itemknn-data-inf": ("itemknn", lambda p, t: edit_array(p, "similarity.data", _set(0, np.inf)), {}),
    "10d-user-items-shape-taller": ("bpr", lambda p, t: edit_array(p, "user_items.shape", _set(0, 10 ** 5)), {}),
    "10d-ids-2d": ("als", lambda p, t: edit_array(p, "item_ids", lambda a: a.reshape(-1, 1)), {}),
    "10d-sasrec-tokens-out-of-range": ("sasrec", lambda p, t: edit_array(p, "user_tokens", _set((0, -1), 10 ** 6)), {}),
    "10d-sasrec-tokens-width": ("sasrec", lambda p, t: edit_array(p, "user_tokens", lambda a: a[:, 1:]), {}),
    "10d-sasrec-max-len": ("sasrec", lambda p, t: edit_manifest(p, lambda m: m["meta"]["params"].update(max_len=3)), {}),
    "10d-twotower-tokens-negative": ("twotower", lambda p, t: edit_array(p, "user_tokens", _set((0, -1), -9)), {}),
    "10d-twotower-item-factors-short": ("twotower", lambda p, t: edit_array(p, "item_factors", lambda a: a[:-1]), {}),
    # 10e: HMAC
    "10e-signed-then-resigned": ("ease", lambda p, t: (_sign(p), edit_array(p, "B", lambda a: a * 2)), {"key": KEY}),
    "10e-unsigned-with-key": ("ease", lambda p, t: None, {"key": KEY}),
    "10e-signed-wrong-key": ("ease", lambda p, t: _sign(p), {"key": b"another-key-0123456789"}),
    # 11: only regular files inside the folder
    "11-array-symlink-outside": ("als", lambda p, t: _outside_npy(p, "item_factors", t), {}),
    "11-array-symlink-devzero": ("als", lambda p, t: _symlink_array(p, "item_factors", "/dev/zero"), {}),
    "11-array-fifo": ("als", lambda p, t: _fifo_array(p, "item_factors"), {}),
    "11-file-entry-dot": ("sasrec", lambda p, t: _file_entry_dot(p), {}),
    "11-arrays-folder-symlink": ("ease", lambda p, t: _arrays_dir_symlink(p, t), {}),
    # 12: ONNX external data
    "12-onnx-external-absolute": ("sasrec", lambda p, t: _craft_onnx_external(p, "/etc/hostname"), {}),
    "12-onnx-external-relative": ("sasrec", lambda p, t: _craft_onnx_external(p, "../../../../../etc/hostname"), {}),
    "12-onnx-external-devzero": ("sasrec", lambda p, t: _craft_onnx_external(p, "/dev/zero"), {}),
}

# id -> (victim, craft, options, outcomes accepted): harmless or refused, never a crash
SAFE = {
    # 10f: faiss's reader is not fed unauthenticated bytes: the index is rebuilt from the vectors
    "10f-faiss-neighbours-out-of-range": ("als-hnsw", lambda p, t: _craft_faiss_neighbours(p), {}, {"ok", "refused"}),
    "10f-faiss-neighbours-out-of-range-mmap": ("als-hnsw", lambda p, t: _craft_faiss_neighbours(p), {"mmap": True},
                                               {"ok", "refused"}),
    "10f-faiss-ivf-ids-out-of-range": ("als-ivf", lambda p, t: _craft_faiss_ivf_ids(p), {}, {"ok", "refused"}),
    "10f-faiss-ivf-ids-out-of-range-mmap": ("als-ivf", lambda p, t: _craft_faiss_ivf_ids(p), {"mmap": True},
                                            {"ok", "refused"}),
    "10f-index-artifact-ivf-ids-out-of-range": ("index-ivf", lambda p, t: _craft_faiss_ivf_ids(p), {"what": "index"},
                                                {"ok", "refused"}),
    "10f-faiss-header-garbage": ("als-hnsw", lambda p, t: _craft_faiss_garbage(p), {}, {"ok", "refused"}),
    # 10e: a signed artifact loads with its key, and without one
    "10e-signed-ok": ("ease", lambda p, t: _sign(p), {"key": KEY}, {"ok"}),
    "10e-signed-ok-no-key": ("ease", lambda p, t: _sign(p), {}, {"ok"}),
    "10e-signed-faiss-mmap": ("als-hnsw", lambda p, t: _sign(p), {"key": KEY, "mmap": True}, {"ok"}),
}


@pytest.fixture(scope="module")
def targeted(saved, tmp_path_factory):
    """Craft every case above, then load and use them all in subprocesses; id -> outcome."""
    tmp = tmp_path_factory.mktemp("targeted")
    cases = []
    for cid, (victim, craft, opts, *_) in {**REFUSED, **SAFE}.items():
        path = copy(saved[victim], tmp / cid)
        craft(path, tmp)
        case = {"id": cid, "path": path, "mmap": opts.get("mmap", False), "what": opts.get("what", "model")}
        if "key" in opts:
            case["key"] = opts["key"].hex()
        cases.append(case)
    return probe_each(cases, tmp)


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_crafted_artifact_is_refused_at_load(targeted, case):
    got = targeted[case]
    assert got["outcome"] == "refused", f"{case}: {got['outcome']}\n{got['detail']}"
    assert "save" in got["detail"] or "publish" in got["detail"] or "export" in got["detail"], \
        f"{case}: the message should say what to do: {got['detail']}"


@pytest.mark.parametrize("case", sorted(SAFE))
def test_crafted_artifact_is_harmless(targeted, case):
    got = targeted[case]
    assert got["outcome"] in SAFE[case][3], f"{case}: {got['outcome']}\n{got['detail']}"


# ---------------------------------------------------------------------- public entry points
@pytest.mark.parametrize("bad", [None, 3, 2.5, ["m.persona"], {"path": "x"}, object(), ""])
def test_load_of_a_non_path_is_an_artifact_error(bad):
    """Regression (issue 11, point 14): ps.load(None) raised TypeError."""
    with pytest.raises(ps.ArtifactError, match="expected the path of an artifact folder"):
        ps.load(bad)
    with pytest.raises(ps.ArtifactError, match="expected the path"):
        ps.retrieval.load_index(bad)


# ---------------------------------------------------------------------- 13: in-place edits
def test_an_in_place_edit_of_a_loaded_artifact_is_detected(saved, tmp_path):
    """Atomic publish replaces the folder; an in-place edit changes files a mapped worker reads
    (a truncated one kills it with SIGBUS). changed_since_load names the edited files."""
    from persona.io import changed_since_load

    path = copy(saved["als"], tmp_path / "m.persona")
    model = ps.load(path, mmap=True)
    assert changed_since_load(model) == []
    f = array_file(path, "item_factors")
    with open(f, "r+b") as fh:  # edit in place, as `cp new/... old/...` would
        fh.truncate(f.stat().st_size - 8)
    assert changed_since_load(model) == [str(f)]
    # an atomic publish (a new folder renamed over the old one) is no in-place change
    fresh = ps.load(copy(saved["als"], tmp_path / "fresh.persona"), mmap=True)
    tmp_new = copy(saved["ease"], tmp_path / ".new")
    os.rename(tmp_path / "fresh.persona", tmp_path / "old")
    os.rename(tmp_new, tmp_path / "fresh.persona")
    assert changed_since_load(fresh) == []


@pytest.mark.parametrize("part, dtype", [("indptr", "uint32"), ("indptr", "int16"), ("indices", "uint16"),
                                         ("data", "float16")])
def test_odd_but_valid_sparse_dtypes_load_and_serve(saved, tmp_path, part, dtype):
    """Regression (found by the fuzz): a re-signed user_items with a uint32 indptr passed the
    structure checks but failed inside scipy at the first recommend; unpack_csr now hands scipy
    its own index types, so such an artifact serves (or is refused), never errors later."""
    path = copy(saved["itemknn"], tmp_path / "m.persona")
    edit_array(path, f"user_items.{part}", lambda a: a.astype(dtype))
    model = ps.load(path)
    users = list(model.user_map_.ids[:4])
    ids, _ = model.recommend_batch(users, n=3)
    assert ids.shape == (4, 3)


# ---------------------------------------------------------------------- the fuzz
def _mutate_array(rng_draw, arr):
    """One hostile change to an array: values, dtype, shape or length."""
    how = rng_draw(st.sampled_from(["value", "nan", "inf", "huge", "negative", "dtype", "truncate", "extend",
                                    "reshape", "empty", "reverse"]))
    a = arr.copy()
    if how in ("value", "nan", "inf", "huge", "negative") and a.size:
        at = rng_draw(st.integers(0, a.size - 1))
        flat = a.reshape(-1)
        value = {"value": rng_draw(st.integers(-3, 3)), "nan": np.nan, "inf": np.inf, "huge": 2 ** 31 - 1,
                 "negative": -(2 ** 31)}[how]
        if a.dtype.kind == "U":
            value = str(value)
        elif a.dtype.kind in "iu" and how in ("nan", "inf"):
            value = -1
        try:
            flat[at] = value
        except (ValueError, OverflowError):
            flat[at] = 0
        return a
    if how == "dtype":
        target = rng_draw(st.sampled_from(["float64", "float16", "int8", "int64", "uint32", "bool", "<U3"]))
        return a.astype(target) if a.dtype.kind != "U" or target == "<U3" else a[:0]
    if how == "truncate":
        return a[: rng_draw(st.integers(0, max(len(a) - 1, 0)))] if a.ndim else a
    if how == "extend":
        return np.concatenate([a, a[:1]]) if a.ndim and len(a) else a
    if how == "reshape":
        return a.reshape(-1) if a.ndim > 1 else a.reshape(1, -1)
    if how == "empty":
        return a[:0]
    return a[::-1].copy() if a.ndim else a


def _mutate_manifest(draw, m):
    where = draw(st.sampled_from(["params", "state", "kind", "class", "format_version", "array-shape"]))
    if where == "params" and m["meta"].get("params"):
        k = draw(st.sampled_from(sorted(m["meta"]["params"])))
        m["meta"]["params"][k] = draw(st.sampled_from([0, -1, 10 ** 9, 1.5, "x", None, [], True]))
    elif where == "state" and m["meta"].get("state"):
        k = draw(st.sampled_from(sorted(m["meta"]["state"])))
        m["meta"]["state"][k] = draw(st.sampled_from([0, -1, 10 ** 9, "x", None, [], {}, {"kind": "hnsw"}]))
    elif where == "kind":
        m["kind"] = draw(st.sampled_from(["index", "model ", None]))
    elif where == "class":
        m["meta"]["class"] = draw(st.sampled_from(sorted(ps.models.base.Recommender._registry)))
    elif where == "format_version":
        m["format_version"] = draw(st.sampled_from([1, 3, "2", None]))
    else:
        entry = m["arrays"][draw(st.sampled_from(sorted(m["arrays"])))]
        entry["shape"] = draw(st.sampled_from([[], [0], [10 ** 9], [1, 1, 1]]))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzz_resigned_mutations_are_refused_or_harmless(saved, tmp_path_factory, data):
    """Many random mutations (arrays: values incl. NaN, dtypes, lengths, shapes; manifest fields),
    each re-signed, loaded and used in one subprocess: ArtifactError at load, a persona error, or
    well-shaped answers -- never a signal, a hang or another exception."""
    tmp = tmp_path_factory.mktemp("fuzz")
    cases = []
    for i in range(30):
        victim = data.draw(st.sampled_from(sorted(saved)))
        path = copy(saved[victim], tmp / f"{i:02d}-{victim}")
        for _ in range(data.draw(st.integers(1, 2))):
            raw_files = sorted((path / "files").iterdir()) if (path / "files").exists() else []
            what = data.draw(st.integers(0, 5))
            if what == 0:
                edit_manifest(path, lambda m: _mutate_manifest(data.draw, m))
            elif what == 1 and raw_files:  # an ONNX graph or a faiss index: flip, cut or pad bytes
                f = data.draw(st.sampled_from(raw_files))
                raw = bytearray(f.read_bytes())
                if not raw:  # already cut to nothing by an earlier draw
                    continue
                at = data.draw(st.integers(0, len(raw) - 1))
                how = data.draw(st.sampled_from(["flip", "cut", "pad"]))
                raw = raw[:at] if how == "cut" else raw + b"\xff" * 64 if how == "pad" else \
                    raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1:]
                f.write_bytes(bytes(raw))
                resign(path)
            else:
                name = data.draw(st.sampled_from(sorted(manifest_of(path)["arrays"])))
                edit_array(path, name, lambda a: _mutate_array(data.draw, a))
        cases.append({"id": f"{i:02d}-{victim}", "path": path, "mmap": data.draw(st.booleans()),
                      "what": "index" if victim.startswith("index") else "model"})
    results = probe(cases, tmp)
    bad = {k: v for k, v in results.items() if v["outcome"] not in ("refused", "ok", "persona-error")}
    assert not bad, "\n".join(f"{k}: {v['outcome']}: {v['detail'][-1500:]}" for k, v in bad.items())


def test_the_watcher_reports_and_reloads_an_in_place_edit(saved, tmp_path):
    """Point 13: a service watching its artifact notices a file rewritten in place (same folder,
    same manifest) and reloads, counting it; stats() shows it."""
    import time

    from persona.serving.service import RecommenderService

    path = copy(saved["als"], tmp_path / "current.persona")
    service = RecommenderService.from_artifact(path, mmap=True, watch=0.02)
    version = service.model_version
    f = array_file(path, "item_factors")
    f.write_bytes(f.read_bytes())  # same bytes, rewritten in place: new mtime, same inode
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10 ** 9))
    deadline = time.time() + 10
    while service.stats()["in_place_edits"] < 1 and time.time() < deadline:
        time.sleep(0.02)
    while service.model_version == version and time.time() < deadline:
        time.sleep(0.02)
    assert service.stats()["in_place_edits"] == 1 and service.model_version > version
    service.close()


def test_validated_mmap_loads_stay_memory_mapped(saved):
    def mapped(a):
        while a is not None:
            if isinstance(a, np.memmap):
                return True
            a = getattr(a, "base", None)
        return False

    als = ps.load(saved["als"], mmap=True)
    knn = ps.load(saved["itemknn"], mmap=True)
    ease = ps.load(saved["ease"], mmap=True)
    assert mapped(als.item_factors_) and mapped(als.user_factors_) and mapped(als.user_items_.indices)
    assert mapped(knn.similarity_.data) and mapped(knn.similarity_.indices) and mapped(ease.B_)


# ---------------------------------------------------------------------- the saved fallback (issue 12, point 5)
FALLBACK_ATTACKS = {
    # the fallback's own arrays live in the model's artifact under "fallback__": crafted like the model's
    "fallback-similarity-indices-out-of-range": ("fallback__similarity.indices", lambda a: a + 10_000),
    "fallback-similarity-indptr-not-monotone": ("fallback__similarity.indptr", lambda a: a[::-1].copy()),
    "fallback-user-items-indices-out-of-range": ("fallback__user_items.indices", lambda a: a + 10_000),
    "fallback-item-ids-short": ("fallback__item_ids", lambda a: a[:-3]),
    "fallback-similarity-nan": ("fallback__similarity.data", lambda a: np.full_like(a, np.nan)),
}


def test_a_crafted_saved_fallback_is_refused_in_a_subprocess(tmp_path):
    """A model saved with an ItemKNN fallback (the family whose out-of-range similarity indices
    segfaulted a worker before this issue): each crafted, re-signed fallback array is refused at
    load, in a process of its own; the untouched artifact loads and answers a stranger through it."""
    inter = ps.datasets.synthetic_shop(n_users=80, n_items=30, seed=3).interactions
    model = ps.EASE().fit(inter).set_fallback(ps.ItemKNN(k=5).fit(inter))
    clean = model.save(tmp_path / "clean")
    cases = [{"id": "clean", "path": clean}, {"id": "clean-mmap", "path": clean, "mmap": True}]
    for name, (array, fn) in FALLBACK_ATTACKS.items():
        for mmap in (False, True):
            target = copy(clean, tmp_path / f"{name}-{mmap}")
            edit_array(target, array, fn)
            cases.append({"id": f"{name}{'-mmap' if mmap else ''}", "path": target, "mmap": mmap})
    got = probe(cases, tmp_path)
    assert got["clean"]["outcome"] == got["clean-mmap"]["outcome"] == "ok", got["clean"]["detail"]
    for case, result in got.items():
        if case.startswith("fallback-"):
            assert result["outcome"] == "refused", f"{case}: {result['outcome']}\n{result['detail']}"


# ---------------------------------------------------------------------- the ranking layer and content models
@pytest.fixture(scope="module")
def ranking_saved(tmp_path_factory):
    """Artifacts of the kinds issue 14 added: nested generators, LightGBM's model text, re-rankers,
    content vectors and vocabularies, a factor model's feature map, segment labels, a search."""
    root = tmp_path_factory.mktemp("ranking-victims")
    shop = ps.datasets.synthetic_shop(n_users=150, n_items=40, seed=6)
    inter = shop.interactions
    feats = ps.data.Features.from_frame(shop.items, inter.item_map, "item_id", categorical=["category", "brand"],
                                        numeric=["price"])
    users = ps.data.Features.from_frame(shop.users, inter.user_map, "user_id", categorical=["gender"])
    train, valid, _ = ps.split.leave_last_out(inter)

    def hybrid(ranker, **kw):
        return ps.Hybrid(generators={"knn": ps.ItemKNN(k=10), "pop": ps.MostPopular()}, candidates=15,
                         ranker=ranker, **kw).fit(train, valid=valid, item_features=feats, user_features=users)

    segments = shop.users.set_index("user_id").loc[inter.user_ids, "segment"].to_numpy()
    models = {
        "hybrid-logistic": hybrid("logistic", rerank=[ps.ranking.MMR(diversity=0.3),
                                                      ps.ranking.Rules(pins=[ps.ranking.Pin(inter.item_ids[0], 0)])]),
        "reranked": ps.ranking.Reranked(ps.EASE(regularization=10.0).fit(inter), ps.ranking.Calibrated(
            dict(zip(shop.items["item_id"], shop.items["category"])))),
        "content": ps.ContentKNN(k=10, text="tfidf").fit(inter, item_features=feats,
                                                         item_text=shop.items.set_index("item_id")["name"]),
        "als-features": ps.ALS(factors=4, iterations=2, random_state=0).fit(inter, item_features=feats),
        "segment-popular": ps.MostPopular().fit(inter, user_segments=segments),
    }
    if importlib.util.find_spec("lightgbm") is not None:
        models["hybrid-lightgbm"] = hybrid("lightgbm", ranker_params={"num_boost_round": 20})
    out = {name: m.save(root / f"{name}.persona") for name, m in models.items()}
    out["search"] = ps.ProductSearch(shop.items, text=["name"], encoder=None).save(root / "search")
    return out


def _ranking_case(cid, saved, tmp, victim, craft):
    path = copy(saved[victim], tmp / cid)
    craft(path)
    return {"id": cid, "path": path, "mmap": False, "what": "search" if victim == "search" else "model"}


def _edit_file(name, fn):
    def craft(path):
        f = Path(path) / "files" / name
        f.write_bytes(fn(f.read_bytes()))
        resign(path)
    return craft


def test_a_crafted_lightgbm_ranker_text_is_refused_or_harmless_in_a_subprocess(ranking_saved, tmp_path):
    """LightGBM parses its own model text in C++: every re-signed mutation of it is refused at load, or
    the Hybrid serves well-shaped answers -- never a signal or a hang of the worker."""
    if "hybrid-lightgbm" not in ranking_saved:
        pytest.skip("LightGBM is not installed (pip install 'persona-recsys[ranking]'; the test extra has it)")
    rng = np.random.default_rng(11)
    mutations = {
        "empty": lambda b: b"",
        "truncated": lambda b: b[: len(b) // 2],
        "garbage": lambda b: rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "tree-header-garbage": lambda b: b"tree\n" + rng.integers(32, 127, 4000, dtype=np.uint8).tobytes(),
        "huge-leaves": lambda b: b.replace(b"num_leaves=", b"num_leaves=99999999", 1),
        "bad-split-feature": lambda b: b.replace(b"split_feature=", b"split_feature=9999 ", 1),
        "bad-threshold": lambda b: b.replace(b"threshold=", b"threshold=nan ", 1),
        "other-features": lambda b: b.replace(b"feature_names=", b"feature_names=x ", 1),
        "flipped-bytes": lambda b: bytes(c ^ 0x20 if i % 97 == 0 else c for i, c in enumerate(b)),
    }
    cases = [_ranking_case(f"lgb-{name}", ranking_saved, tmp_path, "hybrid-lightgbm", _edit_file("ranker.txt", fn))
             for name, fn in mutations.items()]
    # each case starts a throwaway LightGBM process inside the probe (~2 s idle, far more on a loaded
    # machine): the probe's limit covers them all, and the loader's own limit per text is 120 s
    results = probe_each(cases, tmp_path, timeout=600)
    bad = {k: v for k, v in results.items() if v["outcome"] not in ("refused", "ok", "persona-error")}
    assert not bad, "\n".join(f"{k}: {v['outcome']}: {v['detail'][-1200:]}" for k, v in bad.items())
    assert results["lgb-empty"]["outcome"] == "refused" and results["lgb-garbage"]["outcome"] == "refused"


def test_resigned_mutations_of_the_new_artifact_kinds_are_refused_or_harmless(ranking_saved, tmp_path):
    """Every array of every new kind (Hybrid with its nested generators and re-rankers, Reranked,
    ContentKNN, a factor model's feature map, segment popularity, ProductSearch) mutated a few ways,
    re-signed, loaded and used in a subprocess: refused, a persona error, or well-shaped answers."""
    rng = np.random.default_rng(12)
    hows = ["nan", "huge", "negative", "dtype", "truncate", "extend", "reshape", "empty", "reverse"]

    def mutate(how):
        def fn(a):
            a = a.copy()
            if how in ("nan", "huge", "negative") and a.size and a.dtype.kind in "fiu":
                flat = a.reshape(-1)
                value = {"nan": np.nan if a.dtype.kind == "f" else -1, "huge": 2 ** 31 - 1, "negative": -(2 ** 31)}[how]
                try:
                    flat[int(rng.integers(a.size))] = value
                except (ValueError, OverflowError):
                    flat[0] = -1
                return a
            if how == "dtype":
                return a.astype("float16") if a.dtype.kind != "U" else a[:0]
            if how == "truncate":
                return a[: max(len(a) - 1, 0)] if a.ndim else a
            if how == "extend":
                return np.concatenate([a, a[:1]]) if a.ndim and len(a) else a
            if how == "reshape":
                return a.reshape(-1) if a.ndim > 1 else a.reshape(1, -1)
            if how == "empty":
                return a[:0]
            return a[::-1].copy() if a.ndim else a
        return fn

    cases = []
    for victim in sorted(ranking_saved):
        names = sorted(manifest_of(ranking_saved[victim])["arrays"])
        for name in rng.choice(names, size=min(len(names), 12), replace=False):
            how = hows[int(rng.integers(len(hows)))]
            cid = f"{victim}-{name}-{how}".replace("/", "_")
            cases.append(_ranking_case(cid, ranking_saved, tmp_path, victim,
                                       lambda p, name=name, how=how: edit_array(p, name, mutate(how))))
    results = probe_each(cases, tmp_path, timeout=240)
    bad = {k: v for k, v in results.items() if v["outcome"] not in ("refused", "ok", "persona-error")}
    assert not bad, "\n".join(f"{k}: {v['outcome']}: {v['detail'][-1200:]}" for k, v in bad.items())
    assert sum(v["outcome"] == "refused" for v in results.values()) >= len(results) // 4  # the checks do bite
