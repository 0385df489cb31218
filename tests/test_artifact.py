"""Artifacts are data: format version, checksums, no pickle, atomic replacement."""

import json

import numpy as np
import pytest

import persona as ps
from persona.io.artifact import read_artifact, write_artifact


def _model():
    inter = ps.Interactions.from_records([("u1", "a"), ("u2", "a"), ("u2", "b"), ("u3", "c")])
    return ps.MostPopular().fit(inter)


def test_round_trip_arrays(tmp_path):
    arrays = {"x": np.arange(5, dtype=np.float32), "ids": np.array(["a", "bb"]), "m": np.eye(2)}
    write_artifact(tmp_path / "a", "model", {"k": 1}, arrays)
    manifest, back = read_artifact(tmp_path / "a")
    assert manifest["meta"] == {"k": 1} and manifest["format_version"] == 1
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
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ps.ArtifactError, match="cannot read array"):
        ps.load(path)


def test_format_version_mismatch(tmp_path):
    path = _model().save(tmp_path / "m.persona")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 999
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ps.ArtifactError, match="format version 999"):
        ps.load(path)


def test_unknown_class_is_refused(tmp_path):
    path = _model().save(tmp_path / "m.persona")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["meta"]["class"] = "os.system"
    (path / "manifest.json").write_text(json.dumps(manifest))
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
