"""Model artifacts as plain data: a JSON manifest beside ``.npy`` arrays, never pickle.

Layout of ``model.persona/``::

    manifest.json      format name and version, class, parameters, array index with sha256
    arrays/<name>.npy  one array per entry (saved and loaded with allow_pickle=False)

Writing goes to a temporary sibling directory that is renamed into place, so a process that
watches for new artifacts never sees a half-written one. Loading verifies the format version and
every checksum before anything is used; it never executes code from the file.

Checksums catch accidents, not attackers: whoever can write the folder can recompute them. So
loading also checks structure (the helpers :func:`check_array` and :func:`unpack_csr` here, and each
model's ``_check_state``): a re-signed artifact can hold wrong numbers, never ones that index out of
bounds. Files must be regular files inside the folder (no symlinks, devices or pipes). For
authenticity, ``write_artifact(..., key=...)`` adds an HMAC-SHA256 of the manifest (which holds
every file's sha256) and ``read_manifest(..., key=...)`` requires it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .._version import __version__
from ..errors import ArtifactError

__all__ = ["FORMAT", "FORMAT_VERSION", "write_artifact", "read_artifact", "read_manifest", "artifact_files",
           "pack_csr", "unpack_csr", "check_array", "changed_since_load"]

FORMAT = "persona-artifact"
FORMAT_VERSION = 2  # 2: the manifest carries a checksum of itself
_CHUNK = 1 << 20
_ARRAY_FILE = re.compile(r"arrays/[0-9]{3,}\.npy")
_RAW_FILE = re.compile(r"files/[^/\\.][^/\\]*")  # a plain name: no ".", "..", hidden files or folders
_MIN_KEY = 16  # bytes of an HMAC key
_ARRAY_KINDS = "biuf" + "U"  # booleans, integers, floats, unicode ids; never objects, records or bytes
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _as_path(path) -> Path:
    """``path`` as a Path, or an ArtifactError for anything that is not a path."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)) or (isinstance(path, str) and not path):
        raise ArtifactError(f"expected the path of an artifact folder (a str or os.PathLike), got "
                            f"{type(path).__name__} {path!r:.80}; pass the folder that save() wrote")
    return Path(path)


def _regular(path: Path, rel: str, what: str) -> os.stat_result:
    """The stat of ``path / rel`` after checking that it, and every folder on the way inside the
    artifact, is what it claims: folders real folders, the file a regular file (no symlink, device,
    pipe or socket). A symlink could point outside the artifact, a device or pipe block forever."""
    cur = path
    parts = rel.split("/")
    for i, part in enumerate(parts):
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            raise ArtifactError(f"{path} lacks {rel} ({what}); the artifact is incomplete, save it again") from None
        except OSError as e:
            raise ArtifactError(f"cannot read {rel} ({what}) of {path}: {e}") from None
        last = i == len(parts) - 1
        if last and not stat.S_ISREG(st.st_mode) or not last and not stat.S_ISDIR(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode) else \
                "a device, pipe or socket"
            expected = "a regular file" if last else "a folder"
            raise ArtifactError(f"{path}: expected {cur.relative_to(path)} ({what}) to be {expected} inside the "
                                f"artifact, got {kind}; artifacts hold only regular files in their own folder "
                                "(copy them, do not link them), save it again")
    return st


def _hmac_key(key) -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray)) or len(key) < _MIN_KEY:
        got = f"{len(key)} bytes" if isinstance(key, (bytes, bytearray)) else type(key).__name__
        raise ArtifactError(f"the artifact key must be bytes (or str) of at least {_MIN_KEY} bytes, got {got}; "
                            "use e.g. secrets.token_bytes(32), kept out of the artifact folder")
    return bytes(key)


def _signature(key: bytes, manifest: dict) -> str:
    # the manifest digest covers every field but itself and the signature, and the manifest holds
    # every file's sha256: one HMAC over it authenticates the whole artifact
    return hmac.new(key, manifest["manifest_sha256"].encode("ascii"), hashlib.sha256).hexdigest()


def pack_csr(name: str, m: sp.spmatrix) -> dict[str, np.ndarray]:
    """Split a sparse matrix into plain arrays ``name.data/indices/indptr/shape``."""
    m = sp.csr_matrix(m)
    return {
        f"{name}.data": m.data,
        f"{name}.indices": m.indices,
        f"{name}.indptr": m.indptr,
        f"{name}.shape": np.asarray(m.shape, dtype=np.int64),
    }


def check_array(name: str, a, *, kind: str = "f", shape: tuple | None = None, ndim: int | None = None,
                finite: bool = True) -> np.ndarray:
    """``a`` as stored, after checking what a model will index with it; ArtifactError otherwise.

    ``kind``: allowed numpy dtype kinds ("f" floats, "iu" integers, "iuU" ids); ``shape``: the
    expected shape, ``None`` for any length on that axis; ``finite``: no NaN or infinity in floats.
    One vectorised pass at most, so it stays cheap on memory-mapped arrays.
    """
    if not isinstance(a, np.ndarray):
        raise ArtifactError(f"artifact array {name!r}: expected an array, got {type(a).__name__}; save the model again")
    if a.dtype.kind not in kind:
        raise ArtifactError(f"artifact array {name!r}: expected dtype kind {kind!r}, got {a.dtype}; "
                            "the artifact is malformed, save the model again")
    want_ndim = len(shape) if shape is not None else ndim
    if want_ndim is not None and a.ndim != want_ndim:
        raise ArtifactError(f"artifact array {name!r}: expected {want_ndim} dimensions, got shape {a.shape}; "
                            "the artifact is malformed, save the model again")
    if shape is not None and any(w is not None and int(w) != g for w, g in zip(shape, a.shape)):
        want = "(" + ", ".join("any" if w is None else str(int(w)) for w in shape) + ")"
        raise ArtifactError(f"artifact array {name!r}: expected shape {want}, got {a.shape} (the arrays and id "
                            "maps of the artifact disagree); the artifact is malformed, save the model again")
    if finite and a.dtype.kind == "f" and a.size and not _all_finite(a):
        raise ArtifactError(f"artifact array {name!r}: expected finite numbers, got NaN or infinity; "
                            "the artifact is malformed, save the model again")
    return a


def _all_finite(a: np.ndarray) -> bool:
    """No NaN or infinity in float array ``a``, in one pass without a temporary of its size.

    A NaN or infinity makes the float64 sum non-finite; finite float32 values cannot overflow a
    float64 sum, so only a float64 array whose sum overflows needs the element-wise check.
    """
    if np.isfinite(a.sum(dtype=np.float64)):
        return True
    return bool(np.isfinite(a).all())


def check_indices(name: str, a: np.ndarray, low: int, high: int) -> np.ndarray:
    """Integer array ``a`` with every value in ``[low, high)``; ArtifactError otherwise."""
    check_array(name, a, kind="iu")
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < low or hi >= high:
            raise ArtifactError(f"artifact array {name!r}: expected values in [{low}, {high}), got [{lo}, {hi}]; "
                                "the artifact is malformed, save the model again")
    return a


def unpack_csr(name: str, arrays: dict[str, np.ndarray], shape: tuple | None = None) -> sp.csr_matrix:
    """Inverse of :func:`pack_csr`, after checking the structure scipy and the kernels rely on.

    indptr starts at 0, never decreases and ends at nnz; indices lie within the shape; values are
    finite; ``shape`` (``None`` per axis for any) is the shape the caller's id maps imply.
    """
    try:
        data, indices, indptr = (arrays[f"{name}.{part}"] for part in ("data", "indices", "indptr"))
        stored = arrays[f"{name}.shape"]
    except KeyError as e:
        raise ArtifactError(f"artifact lacks the sparse matrix {name!r} ({e.args[0]} missing)") from None
    check_array(f"{name}.shape", stored, kind="iu", shape=(2,))
    rows, cols = (int(x) for x in stored)
    if shape is not None:
        if any(w is not None and int(w) != g for w, g in zip(shape, (rows, cols))):
            raise ArtifactError(f"sparse matrix {name!r}: expected shape {tuple(shape)}, got {(rows, cols)} (it "
                                "disagrees with the id maps); the artifact is malformed, save the model again")
    if rows < 0 or cols < 0 or max(rows, cols) >= 2 ** 31:
        raise ArtifactError(f"sparse matrix {name!r}: expected a shape within [0, 2**31), got {(rows, cols)}")
    check_array(f"{name}.data", data, kind="f", ndim=1)
    check_array(f"{name}.indices", indices, kind="iu", ndim=1)
    check_array(f"{name}.indptr", indptr, kind="iu", shape=(rows + 1,))
    nnz = len(indices)
    if len(data) != nnz:
        raise ArtifactError(f"sparse matrix {name!r}: expected as many values as indices ({nnz}), got {len(data)}")
    if indptr[0] != 0 or int(indptr[-1]) != nnz or (rows and bool((indptr[1:] < indptr[:-1]).any())):
        raise ArtifactError(f"sparse matrix {name!r}: expected indptr to start at 0, never decrease and end at "
                            f"{nnz}, got start {int(indptr[0])} and end {int(indptr[-1])}, or a decrease; the "
                            "artifact is malformed, save the model again")
    check_indices(f"{name}.indices", indices, 0, cols)
    # scipy's kernels take only its own index types (an int8 or uint32 indptr passes the checks
    # above but fails inside scipy later): the canonical types; a no-op for what pack_csr wrote
    index_type = np.int32 if nnz < 2 ** 31 else np.int64
    indices = indices if indices.dtype in (np.int32, np.int64) else indices.astype(index_type)
    indptr = indptr if indptr.dtype in (np.int32, np.int64) else indptr.astype(index_type)
    data = data if data.dtype in (np.float32, np.float64) else data.astype(np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(rows, cols))


def _manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON, without its own checksum field."""
    body = {k: v for k, v in manifest.items() if k not in ("manifest_sha256", "signature")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_json_default)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in an artifact manifest")


def write_artifact(path, kind: str, meta: dict, arrays: dict[str, np.ndarray], files: dict | None = None, *,
                   key: bytes | str | None = None) -> Path:
    """Write ``arrays`` and JSON-able ``meta`` as an artifact directory at ``path`` (atomically).

    ``files`` maps a name to a function that writes one file at the path it is given: data in a
    library's own format (a faiss index), stored under ``files/`` with a checksum like the arrays,
    so that it can be memory-mapped by that library when loaded.

    ``key`` (at least 16 bytes, kept away from the artifact) signs the artifact with HMAC-SHA256;
    ``read_manifest(path, key=key)`` then refuses any artifact not signed with that key.
    """
    path = _as_path(path)
    key = None if key is None else _hmac_key(key)
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
        if key is not None:
            manifest["signature"] = {"alg": "hmac-sha256", "value": _signature(key, manifest)}
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


def read_manifest(path, *, key: bytes | str | None = None) -> dict:
    """The manifest of the artifact at ``path``, checked for format, version, layout and, with
    ``key``, its HMAC signature.

    The returned dict carries ``"_authentic": True`` when the signature was verified.
    """
    path = _as_path(path)
    mf = path / "manifest.json"
    if not path.exists():
        raise ArtifactError(f"no artifact at {path}; check the path")
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a folder; expected the artifact folder that save() wrote")
    if not mf.exists() and not mf.is_symlink():
        raise ArtifactError(f"{path} has no manifest.json; it is not a persona artifact")
    _regular(path, "manifest.json", "the manifest")
    try:
        fd = os.open(mf, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, encoding="utf-8") as f:
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
    manifest.pop("_authentic", None)
    if key is not None:
        key = _hmac_key(key)
        sig = manifest.get("signature")
        if not isinstance(sig, dict) or sig.get("alg") != "hmac-sha256" or not isinstance(sig.get("value"), str):
            raise ArtifactError(f"{path}: expected an artifact signed with HMAC-SHA256 (load was given a key), got "
                                "an unsigned one; save it with save(path, key=...) from the training job")
        if not hmac.compare_digest(sig["value"], _signature(key, manifest)):
            raise ArtifactError(f"{path}: the signature does not match this key: the artifact was changed after "
                                "signing, or signed with another key; publish it again from the training job")
        manifest["_authentic"] = True
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


def read_artifact(path, *, mmap: bool = False, verify: bool = True,
                  key: bytes | str | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Read an artifact: its manifest and arrays, after checking every checksum.

    ``mmap=True`` maps arrays read-only from disk, so several processes share one copy.
    ``key``: require and verify the HMAC signature (checksums are then always verified).
    The manifest gains ``"_stamps"``: (file, inode, size, mtime) of every file read, for
    :func:`changed_since_load`.
    """
    path = _as_path(path)
    manifest = read_manifest(path, key=key)
    verify = verify or key is not None
    arrays = {}
    try:
        stamps = [_stamp_of(path / "manifest.json", os.lstat(path / "manifest.json"))]
    except OSError as e:  # replaced between reading the manifest and here: a publish in progress
        raise ArtifactError(f"{path} changed while it was read ({e}); load it again") from None
    for name, entry in manifest.get("arrays", {}).items():
        f = path / entry["file"]
        stamps.append(_stamp_of(f, _regular(path, entry["file"], f"array {name!r}")))
        try:
            digest = _sha256(f) if verify else None
        except OSError as e:
            raise ArtifactError(f"{path} changed while it was read: array {name!r} ({e}); load it again") from None
        if verify and digest != entry["sha256"]:
            raise ArtifactError(f"checksum mismatch for {entry['file']} (array {name!r}) in {path}; "
                                "the file was changed or corrupted, save the model again")
        try:
            arr = np.load(f, allow_pickle=False, mmap_mode="r" if mmap else None)
        except (ValueError, OSError, EOFError) as e:
            raise ArtifactError(f"cannot read array {name!r} of {path}: {e}") from None
        if arr.dtype.kind not in _ARRAY_KINDS or arr.dtype.str != entry.get("dtype", arr.dtype.str) \
                or list(arr.shape) != entry.get("shape", list(arr.shape)):
            raise ArtifactError(f"array {name!r} of {path}: expected {entry.get('dtype')} {entry.get('shape')} as "
                                f"the manifest records (numbers or ids), got {arr.dtype.str} {list(arr.shape)}; "
                                "the artifact is malformed, save it again")
        arrays[name] = arr
    manifest["_stamps"] = stamps
    return manifest, arrays


def _stamp_of(f: Path, st: os.stat_result) -> tuple:
    return (str(f), st.st_ino, st.st_size, st.st_mtime_ns)


def changed_since_load(obj) -> list[str]:
    """Files of the artifact ``obj`` was loaded from that changed in place since (empty: none).

    ``obj`` is a loaded model or index (or the manifest from :func:`read_artifact`). An artifact is
    replaced by publishing a new folder and renaming it over the old one; editing, truncating or
    copying over a file of a served artifact instead changes pages a memory-mapped worker is reading
    (a truncated file kills it with SIGBUS). This stat()s each file: cheap enough for a watcher.
    A replaced folder is no change here (the old files stay mapped); a watcher reloads on it.
    """
    stamps = obj.get("_stamps", []) if isinstance(obj, dict) else getattr(obj, "_artifact_stamps", [])
    changed = []
    for f, ino, size, mtime in stamps:
        try:
            st = os.lstat(f)
        except OSError:
            continue  # gone with its folder: a publish replaced it, the mapping stays valid
        if st.st_ino == ino and (st.st_size != size or st.st_mtime_ns != mtime):
            changed.append(f)
    return changed


def artifact_files(path, manifest: dict, *, verify: bool = True) -> dict[str, Path]:
    """Paths of the raw files stored with an artifact (see ``write_artifact(files=...)``), checked."""
    path = _as_path(path)
    out = {}
    verify = verify or bool(manifest.get("_authentic"))
    for name, entry in manifest.get("files", {}).items():
        f = path / entry["file"]
        st = _regular(path, entry["file"], f"file {name!r}")
        manifest.setdefault("_stamps", []).append(_stamp_of(f, st))
        if verify and _sha256(f) != entry["sha256"]:
            raise ArtifactError(f"checksum mismatch for {entry['file']} in {path}; the file was changed or "
                                "corrupted, save it again")
        out[name] = f
    return out
