"""Artifacts are data: format version, checksums, no pickle, atomic replacement."""

import json

import numpy as np
import pytest

import persona as ps
from persona.io.artifact import FORMAT_VERSION, _manifest_digest, read_artifact, write_artifact


def _write_manifest(path, manifest: dict, *, resign: bool = True) -> None:
    """Write an edited manifest; ``resign`` recomputes its own checksum (a deliberate edit)."""
    if resign:
        manifest["manifest_sha256"] = _manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def _model():
    inter = ps.Interactions.from_records([("u1", "a"), ("u2", "a"), ("u2", "b"), ("u3", "c")])
    return ps.MostPopular().fit(inter)


def test_round_trip_arrays(tmp_path):
    arrays = {"x": np.arange(5, dtype=np.float32), "ids": np.array(["a", "bb"]), "m": np.eye(2)}
    write_artifact(tmp_path / "a", "model", {"k": 1}, arrays)
    manifest, back = read_artifact(tmp_path / "a")
    assert manifest["meta"] == {"k": 1} and manifest["format_version"] == FORMAT_VERSION
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(ps.ArtifactError, match="object"):
        write_artifact(tmp_path / "a", "model", {}, {"x": np.array([{"a": 1}], dtype=object)})
    assert not (tmp_path / "a").exists(), "a failed write leaves nothing behind"


def test_pickled_array_file_is_not_loaded(tmp_path):
    path = _model().save(tmp_path / "m.persona")
    manifest = json.loads((path / "manifest.json").read_text())
    entry = manifest["arrays"]["popularity"]
    # replace an array by a pickle-bearing object array and fix up its checksum: still refused
    np.save(path / entry["file"], np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ps.ArtifactError):
        ps.load(path)
    import hashlib

    entry["sha256"] = hashlib.sha256((path / entry["file"]).read_bytes()).hexdigest()
    _write_manifest(path, manifest)
    with pytest.raises(ps.ArtifactError, match="cannot read array"):
        ps.load(path)


def test_format_version_mismatch(tmp_path):
    path = _model().save(tmp_path / "m.persona")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 999
    _write_manifest(path, manifest)
    with pytest.raises(ps.ArtifactError, match="format version 999, newer.*upgrade persona"):
        ps.load(path)
    manifest["format_version"] = 1
    _write_manifest(path, manifest)
    with pytest.raises(ps.ArtifactError, match="format version 1.*re-save"):
        ps.load(path)


def test_unknown_class_is_refused(tmp_path):
    path = _model().save(tmp_path / "m.persona")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["meta"]["class"] = "os.system"
    _write_manifest(path, manifest)
    with pytest.raises(ps.ArtifactError, match="does not know"):
        ps.load(path)


def test_missing_and_foreign_paths(tmp_path):
    with pytest.raises(ps.ArtifactError, match="no artifact"):
        ps.load(tmp_path / "nothing")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "notes.txt").write_text("hi")
    with pytest.raises(ps.ArtifactError, match="no manifest"):
        ps.load(tmp_path / "dir")
    with pytest.raises(ps.ArtifactError, match="refusing to overwrite"):
        _model().save(tmp_path / "dir")
    path = _model().save(tmp_path / "m.persona")
    next((path / "arrays").iterdir()).unlink()
    with pytest.raises(ps.ArtifactError, match="incomplete"):
        ps.load(path)


def test_a_file_vanishing_during_a_load_is_an_artifact_error(tmp_path, monkeypatch):
    """A load that overlaps a publish (the folder replaced between two reads) says so as an
    ArtifactError, never a bare FileNotFoundError (a watching service retries at its next check)."""
    import persona.io.artifact as art

    path = _model().save(tmp_path / "m.persona")

    def gone(f):
        raise FileNotFoundError(2, "No such file or directory", str(f))

    monkeypatch.setattr(art, "_sha256", gone)
    with pytest.raises(ps.ArtifactError, match="changed while it was read"):
        read_artifact(path)


def test_save_replaces_existing_artifact(tmp_path):
    m = _model()
    path = m.save(tmp_path / "m.persona")
    inter2 = ps.Interactions.from_records([("x", "z"), ("y", "z")])
    ps.MostPopular().fit(inter2).save(path)
    assert ps.load(path).item_map_.ids.tolist() == ["z"]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "m.persona"]
    assert leftovers == []


def test_load_checks_requested_class(tmp_path):
    path = _model().save(tmp_path / "m.persona")
    assert isinstance(ps.MostPopular.load(path), ps.MostPopular)


def test_an_edited_manifest_is_refused_by_its_checksum(tmp_path):
    path = _model().save(tmp_path / "m.persona")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["meta"]["params"]["half_life"] = 3.0
    _write_manifest(path, manifest, resign=False)
    with pytest.raises(ps.ArtifactError, match="manifest was changed"):
        ps.load(path)


@pytest.mark.parametrize("edit", ["escape", "absolute", "no-sha", "arrays-list", "meta-list", "class-list"])
def test_malformed_manifest_entries_are_refused(tmp_path, edit):
    path = _model().save(tmp_path / "m.persona")
    manifest = json.loads((path / "manifest.json").read_text())
    entry = next(iter(manifest["arrays"].values()))
    if edit == "escape":
        entry["file"] = "../../../etc/passwd"
    elif edit == "absolute":
        entry["file"] = "/etc/passwd"
    elif edit == "no-sha":
        del entry["sha256"]
    elif edit == "arrays-list":
        manifest["arrays"] = []
    elif edit == "meta-list":
        manifest["meta"] = ["MostPopular"]
    elif edit == "class-list":
        manifest["meta"]["class"] = ["MostPopular"]
    _write_manifest(path, manifest)
    with pytest.raises(ps.ArtifactError):
        ps.load(path)


# ---------------------------------------------------------------------- mutations (hypothesis)
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small model of each storage kind: factors (ALS) and a sparse similarity (ItemKNN)."""
    shop = ps.datasets.synthetic_shop(n_users=60, n_items=25, seed=2)
    root = tmp_path_factory.mktemp("artifacts")
    out = {}
    for name, model in (("als", ps.ALS(factors=4, iterations=2, random_state=0)), ("knn", ps.ItemKNN(k=5))):
        model.fit(shop.interactions)
        path = model.save(root / f"{name}.persona")
        users = model.user_map_.ids[:5]
        out[name] = (path, model.recommend_batch(users, n=3), users)
    return out


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _same_answers(path, want, users) -> bool:
    got = ps.load(path).recommend_batch(users, n=3)
    return np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["als", "knn"]), data=st.data())
def test_every_byte_mutation_is_refused_or_harmless(saved, tmp_path_factory, kind, data):
    """Flip, drop or append bytes of any file of an artifact: load refuses it with ArtifactError,
    or (a change JSON does not see, such as whitespace) loads the very same model."""
    src, want, users = saved[kind]
    path = _copy(src, tmp_path_factory.mktemp("mut") / "m.persona")
    files = sorted(p for p in path.rglob("*") if p.is_file())
    target = data.draw(st.sampled_from(files))
    raw = bytearray(target.read_bytes())
    how = data.draw(st.sampled_from(["flip", "truncate", "append", "delete"]))
    if how == "flip" and raw:
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        raw = raw[:data.draw(st.integers(0, max(len(raw) - 1, 0)))]
    elif how == "append":
        raw += bytes(data.draw(st.binary(min_size=1, max_size=16)))
    if how == "delete":
        target.unlink()
    else:
        target.write_bytes(bytes(raw))
    try:
        ok = _same_answers(path, want, users)
    except ps.ArtifactError:
        return
    assert ok, f"{how} of {target.name} loaded a different model without an error"


def _paths(obj, prefix=()):
    """Every key path of a JSON value."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["als", "knn"]), data=st.data())
def test_every_structural_manifest_edit_is_refused_cleanly(saved, tmp_path_factory, kind, data):
    """Delete a key or give it a value of another type, even re-signing the manifest: load either
    refuses with ArtifactError or loads a model that answers; never another exception."""
    src, want, users = saved[kind]
    path = _copy(src, tmp_path_factory.mktemp("edit") / "m.persona")
    manifest = json.loads((path / "manifest.json").read_text())
    keys = [p for p in _paths(manifest) if p != ("manifest_sha256",)]
    where = data.draw(st.sampled_from(keys))
    parent = manifest
    for k in where[:-1]:
        parent = parent[k]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = data.draw(st.sampled_from([None, [], {}, "x", -1, 1e308, True, "../x"]))
    _write_manifest(path, manifest, resign=data.draw(st.booleans()))
    try:
        model = ps.load(path)
    except ps.ArtifactError:
        return
    model.recommend_batch(users, n=3)  # a loaded model must answer


# ------------------------------------------------------------ the fallback travels with the model (issue 12, point 5)
def test_fallback_is_saved_with_the_model_and_comes_back(tmp_path):
    import persona as ps

    shop = ps.datasets.synthetic_shop(n_users=120, n_items=40, seed=4)
    inter = shop.interactions
    popular = ps.MostPopular(half_life=7.0).fit(inter)
    model = ps.ALS(factors=4, iterations=2, random_state=0).fit(inter).set_fallback(popular)
    model.save(tmp_path / "m")
    back = ps.load(tmp_path / "m")
    assert type(back.fallback_) is ps.MostPopular and back.fallback_.half_life == 7.0
    users = ["never-seen", inter.user_ids[0]]
    for a, b in zip(back.recommend_batch(users, n=5), model.recommend_batch(users, n=5)):
        np.testing.assert_array_equal(a, b)
    # without a fallback, loading gives none, and an unknown user is an error again
    ps.ALS(factors=4, iterations=2, random_state=0).fit(inter).save(tmp_path / "plain")
    plain = ps.load(tmp_path / "plain")
    assert plain.fallback_ is None
    with pytest.raises(ps.UnknownUserError):
        plain.recommend("never-seen", n=3)
    # a fallback with a fallback, signed
    key = b"k" * 32
    chain = ps.ItemKNN(k=5).fit(inter).set_fallback(ps.EASE().fit(inter).set_fallback(popular))
    chain.save(tmp_path / "chain", key=key)
    loaded = ps.load(tmp_path / "chain", key=key)
    assert [type(loaded.fallback_).__name__, type(loaded.fallback_.fallback_).__name__] == ["EASE", "MostPopular"]


def test_a_tampered_fallback_is_refused_like_the_model(tmp_path):
    import json

    import persona as ps
    from persona.io.artifact import read_artifact, write_artifact

    inter = ps.datasets.synthetic_shop(n_users=60, n_items=20, seed=5).interactions
    ps.EASE().fit(inter).set_fallback(ps.MostPopular().fit(inter)).save(tmp_path / "m")
    manifest, arrays = read_artifact(tmp_path / "m")
    meta = manifest["meta"]
    meta["fallback"]["class"] = "_Neighbourhood"                      # a private class: never served
    write_artifact(tmp_path / "bad", "model", meta, dict(arrays))     # re-signed as an attacker would
    with pytest.raises(ps.ArtifactError, match="_Neighbourhood"):
        ps.load(tmp_path / "bad")
    meta["fallback"]["class"] = "MostPopular"
    arrays = dict(arrays)
    arrays["fallback__user_items.indices"] = arrays["fallback__user_items.indices"] + 10_000
    write_artifact(tmp_path / "bad2", "model", meta, arrays)
    with pytest.raises(ps.ArtifactError):
        ps.load(tmp_path / "bad2")
    deep = {"class": "MostPopular", "params": {}, "state": {}}
    for _ in range(4):
        deep = {**meta["fallback"], "fallback": deep}
    write_artifact(tmp_path / "deep", "model", {**meta, "fallback": deep}, dict(read_artifact(tmp_path / "m")[1]))
    with pytest.raises(ps.ArtifactError):
        ps.load(tmp_path / "deep")
    json.dumps(meta)  # the manifest stays plain JSON
