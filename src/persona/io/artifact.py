"""Model artifacts as plain data: a JSON manifest beside ``.npy`` arrays, never pickle.

Layout of ``model.persona/``::

    manifest.json      format name and version, class, parameters, array index with sha256
    arrays/<name>.npy  one array per entry (saved and loaded with allow_pickle=False)

Writing goes to a temporary sibling directory that is renamed into place, so a process that
watches for new artifacts never sees a half-written one. Loading verifies the format version and
every checksum before anything is used; it never executes code from the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .._version import __version__
from ..errors import ArtifactError

__all__ = ["FORMAT", "FORMAT_VERSION", "write_artifact", "read_artifact", "artifact_files", "pack_csr", "unpack_csr"]

FORMAT = "persona-artifact"
FORMAT_VERSION = 2  # 2: the manifest carries a checksum of itself
_CHUNK = 1 << 20
_ARRAY_FILE = re.compile(r"arrays/[0-9]{3,}\.npy")
_RAW_FILE = re.compile(r"files/[^/\\]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def pack_csr(name: str, m: sp.spmatrix) -> dict[str, np.ndarray]:
    """Split a sparse matrix into plain arrays ``name.data/indices/indptr/shape``."""
    m = sp.csr_matrix(m)
    return {
        f"{name}.data": m.data,
        f"{name}.indices": m.indices,
        f"{name}.indptr": m.indptr,
        f"{name}.shape": np.asarray(m.shape, dtype=np.int64),
    }


def unpack_csr(name: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    """Inverse of :func:`pack_csr`."""
    try:
        shape = tuple(int(x) for x in arrays[f"{name}.shape"])
        return sp.csr_matrix(
            (arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"]), shape=shape
        )
    except KeyError as e:
        raise ArtifactError(f"artifact lacks the sparse matrix {name!r} ({e.args[0]} missing)") from None


def _manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON, without its own checksum field."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_json_default)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in an artifact manifest")


def write_artifact(path, kind: str, meta: dict, arrays: dict[str, np.ndarray], files: dict | None = None) -> Path:
    """Write ``arrays`` and JSON-able ``meta`` as an artifact directory at ``path`` (atomically).

    ``files`` maps a name to a function that writes one file at the path it is given: data in a
    library's own format (a faiss index), stored under ``files/`` with a checksum like the arrays,
    so that it can be memory-mapped by that library when loaded.
    """
    path = Path(path)
    if path.exists() and not (path / "manifest.json").exists() and any(path.iterdir()):
        raise ArtifactError(f"{path} exists and is not a persona artifact; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / "arrays").mkdir()
        index = {}
        for i, (name, arr) in enumerate(arrays.items()):
            arr = np.asarray(arr)
            if arr.dtype == object:
                raise ArtifactError(f"array {name!r} has dtype object; artifacts hold plain arrays only")
            fname = f"arrays/{i:03d}.npy"
            np.save(tmp / fname, arr, allow_pickle=False)
            index[name] = {"file": fname, "dtype": arr.dtype.str, "shape": list(arr.shape),
                           "sha256": _sha256(tmp / fname)}
        file_index = {}
        if files:
            (tmp / "files").mkdir()
            for name, writer in files.items():
                if not name or "/" in name or name.startswith("."):
                    raise ArtifactError(f"artifact file name {name!r} must be a plain file name")
                dest = tmp / "files" / name
                writer(dest)
                file_index[name] = {"file": f"files/{name}", "sha256": _sha256(dest), "size": dest.stat().st_size}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "persona_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "meta": meta,
            "arrays": index,
            "files": file_index,
        }
        manifest = json.loads(json.dumps(manifest, default=_json_default))  # what a reader will see
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        with open(tmp / "manifest.json", "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, default=_json_default, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            old.rmdir()
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_manifest(path) -> dict:
    """The manifest of the artifact at ``path``, checked for format and version."""
    path = Path(path)
    mf = path / "manifest.json"
    if not path.exists():
        raise ArtifactError(f"no artifact at {path}; check the path")
    if not mf.exists():
        raise ArtifactError(f"{path} has no manifest.json; it is not a persona artifact")
    try:
        with open(mf, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{mf} is not readable JSON ({e}); the artifact is corrupt, save it again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mf} is not a persona artifact manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArtifactError(f"{mf} has no valid format_version; the artifact is corrupt, save it again")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has artifact format version {version}, newer than this persona ({__version__}) reads "
            f"({FORMAT_VERSION}); upgrade persona to load it"
        )
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has artifact format version {version}, this persona ({__version__}) reads version "
            f"{FORMAT_VERSION}; re-save the model with a matching persona version"
        )
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise ArtifactError(f"checksum mismatch for {mf}: the manifest was changed or corrupted; save the model again")
    _check_layout(manifest, mf)
    return manifest


def _check_layout(manifest: dict, mf: Path) -> None:
    """The manifest's structure: every entry names a file inside the artifact with a checksum."""
    if not isinstance(manifest.get("meta", {}), dict):
        raise ArtifactError(f"{mf}: 'meta' must be an object; the artifact is malformed")
    for section, pattern in (("arrays", _ARRAY_FILE), ("files", _RAW_FILE)):
        entries = manifest.get(section, {})
        if not isinstance(entries, dict):
            raise ArtifactError(f"{mf}: {section!r} must be an object; the artifact is malformed")
        for name, entry in entries.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) \
                    or not pattern.fullmatch(entry["file"]) or ".." in entry["file"] \
                    or not isinstance(entry.get("sha256"), str) or not _HEX64.fullmatch(entry["sha256"]):
                raise ArtifactError(f"{mf}: the {section} entry {name!r} is malformed (it needs a file inside the "
                                    "artifact and a sha256); the artifact is corrupt, save it again")


def read_artifact(path, *, mmap: bool = False, verify: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """Read an artifact: its manifest and arrays, after checking every checksum.

    ``mmap=True`` maps arrays read-only from disk, so several processes share one copy.
    """
    path = Path(path)
    manifest = read_manifest(path)
    arrays = {}
    for name, entry in manifest.get("arrays", {}).items():
        f = path / entry["file"]
        if not f.exists():
            raise ArtifactError(f"{path} lacks {entry['file']} (array {name!r}); the artifact is incomplete")
        if verify and _sha256(f) != entry["sha256"]:
            raise ArtifactError(f"checksum mismatch for {entry['file']} (array {name!r}) in {path}; "
                                "the file was changed or corrupted, save the model again")
        try:
            arr = np.load(f, allow_pickle=False, mmap_mode="r" if mmap else None)
        except ValueError as e:
            raise ArtifactError(f"cannot read array {name!r} of {path}: {e}") from None
        arrays[name] = arr
    return manifest, arrays


def artifact_files(path, manifest: dict, *, verify: bool = True) -> dict[str, Path]:
    """Paths of the raw files stored with an artifact (see ``write_artifact(files=...)``), checked."""
    path = Path(path)
    out = {}
    for name, entry in manifest.get("files", {}).items():
        f = path / entry["file"]
        if not f.exists():
            raise ArtifactError(f"{path} lacks {entry['file']} (file {name!r}); the artifact is incomplete")
        if verify and _sha256(f) != entry["sha256"]:
            raise ArtifactError(f"checksum mismatch for {entry['file']} in {path}; the file was changed or "
                                "corrupted, save it again")
        out[name] = f
    return out
