"""The retrieval interface: the n best rows of a vector table for each query, under filters.

Every index -- exact (:class:`~persona.retrieval.ExactIndex`) or approximate
(:class:`~persona.retrieval.FaissIndex`) -- answers one question the same way::

    ids, scores = index.search(queries, n, allow=None, deny=None, mask=None)

- ``queries``: float (n_queries, dim), or one 1-D query (answered as a batch of one, so the result is
  always 2-D).
- Results are row indices (int64) and float32 scores of shape (n_queries, n), best first, ties by the
  lower row. A row holds fewer than ``n`` real results only when fewer than ``n`` rows pass its
  filters; the rest is padded with id ``-1`` and score ``-inf``.
- ``allow``: only these rows are candidates; ``deny``: never these rows. Each is either one 1-D list
  of row indices shared by every query, or a list with one index list per query. ``mask``: a bool
  per row, ``False`` = never return (out of stock, not shippable).
- ``metric``: ``"ip"`` (inner product) or ``"cosine"`` (vectors and queries are normalised to unit
  length, then inner product; a zero vector keeps score 0).

Indexes are read-only after construction, so one index may serve many threads at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TypeVar

import numpy as np

from .._validate import check_n
from ..errors import ArtifactError, DataError, ParameterError
from ..typing import ArrayLike, Float32Array, IntArray, PathLike

IndexT = TypeVar("IndexT", bound="Index")

__all__ = ["Index", "Filters", "METRICS"]

METRICS = ("ip", "cosine")
_EMPTY = np.zeros(0, dtype=np.int64)


def _check_metric(metric) -> str:
    if metric not in METRICS:
        raise ParameterError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


def _normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in place (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def _prepare_vectors(vectors, metric: str) -> np.ndarray:
    """A private, read-only, C-contiguous float32 copy of ``vectors`` (normalised for cosine)."""
    try:
        arr = np.array(vectors, dtype=np.float32, order="C", copy=True)
    except (TypeError, ValueError) as e:
        raise DataError(f"vectors must be a numeric (rows, dim) array; could not convert it: {e}") from None
    if arr.ndim != 2:
        raise DataError(f"vectors must be 2-D (rows x dim), got {arr.ndim}-D with shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"vectors has shape {arr.shape}; an index needs at least one row and one dimension")
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise ParameterError(f"vectors holds NaN or infinite values in {len(bad)} rows (first: {bad[:5].tolist()}); "
                             "fix or drop those rows before building an index")
    if metric == "cosine":
        _normalise(arr)
    arr.setflags(write=False)
    return arr


def _as_index_array(obj, n_rows: int, name: str) -> np.ndarray:
    """A 1-D int64 array of row indices in [0, n_rows), else a persona error."""
    arr = np.asarray(obj)
    if arr.size == 0:
        return _EMPTY
    if arr.ndim != 1:
        raise ParameterError(f"{name} must be a 1-D list of row indices (or one list per query), "
                             f"got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype == bool:
            raise ParameterError(f"{name} holds booleans; pass row indices, or a bool array as mask=")
        raise ParameterError(f"{name} must hold integer row indices, got dtype {arr.dtype}")
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi >= n_rows:
        bad = arr[(arr < 0) | (arr >= n_rows)]
        raise DataError(f"{name} names rows outside [0, {n_rows}): {bad[:5].tolist()}; "
                        f"pass row indices of this index (it has {n_rows} rows)")
    return arr.astype(np.int64, copy=False)


def _is_per_query(obj) -> bool:
    """True for one index list per query (list of lists, 2-D array), False for one shared list."""
    if isinstance(obj, np.ndarray):
        return obj.ndim == 2
    if isinstance(obj, (list, tuple)):
        return len(obj) > 0 and not np.isscalar(obj[0]) and not isinstance(obj[0], np.generic)
    return False


class Filters:
    """Resolved ``allow`` / ``deny`` / ``mask`` for one search call.

    Attributes
    ----------
    mask : bool (n_rows,) or None
        ``mask`` with the shared deny-list folded in (``False`` = excluded for every query).
    allow : None, a sorted unique int64 array (shared), or one such array per query
    deny : None or one int64 array per query (per-query deny-lists only; shared ones are in ``mask``)
    """

    __slots__ = ("n_rows", "n_queries", "mask", "allow", "allow_per_query", "deny")

    def __init__(self, allow, deny, mask, n_rows: int, n_queries: int):
        self.n_rows, self.n_queries = n_rows, n_queries
        self.mask = None
        if mask is not None:
            m = np.asarray(mask)
            if m.dtype != bool:
                raise ParameterError(f"mask must be a bool array (one per row), got dtype {m.dtype}; "
                                     "pass row indices as allow= or deny= instead")
            if m.shape != (n_rows,):
                raise ParameterError(f"mask must have one bool per row ({n_rows}), got shape {m.shape}")
            self.mask = m
        self.deny = None
        if deny is not None:
            if _is_per_query(deny):
                self.deny = self._per_query(deny, "deny")
            else:
                d = _as_index_array(deny, n_rows, "deny")
                if d.size:
                    m = np.ones(n_rows, dtype=bool) if self.mask is None else self.mask.copy()
                    m[d] = False
                    self.mask = m
        self.allow = None
        self.allow_per_query = False
        if allow is not None:
            if _is_per_query(allow):
                self.allow = [np.unique(a) for a in self._per_query(allow, "allow")]
                self.allow_per_query = True
            else:
                self.allow = np.unique(_as_index_array(allow, n_rows, "allow"))

    def _per_query(self, obj, name):
        rows = list(obj)
        if len(rows) != self.n_queries:
            raise ParameterError(f"{name} has {len(rows)} lists but there are {self.n_queries} queries; "
                                 f"pass one list per query, or one flat list shared by all")
        return [_as_index_array(r, self.n_rows, f"{name}[{i}]") for i, r in enumerate(rows)]

    @property
    def any(self) -> bool:
        return self.mask is not None or self.allow is not None or self.deny is not None

    @property
    def per_query(self) -> bool:
        return self.allow_per_query or self.deny is not None

    def allowed_ids(self, q: int = 0) -> np.ndarray:
        """Sorted row indices query ``q`` may return."""
        allow = self.allow[q] if self.allow_per_query else self.allow
        if allow is None:
            ids = np.arange(self.n_rows, dtype=np.int64) if self.mask is None else np.flatnonzero(self.mask)
        else:
            ids = allow if self.mask is None else allow[self.mask[allow]]
        if self.deny is not None and len(self.deny[q]):
            ids = ids[~np.isin(ids, self.deny[q])]
        return ids

    def allowed_mask(self, q: int = 0) -> np.ndarray:
        """Bool per row: may query ``q`` return it."""
        allow = self.allow[q] if self.allow_per_query else self.allow
        if allow is None:
            m = np.ones(self.n_rows, dtype=bool) if self.mask is None else self.mask.copy()
        else:
            m = np.zeros(self.n_rows, dtype=bool)
            m[allow] = True
            if self.mask is not None:
                m &= self.mask
        if self.deny is not None and len(self.deny[q]):
            m[self.deny[q]] = False
        return m


class Index(ABC):
    """Top-n rows of a vector table by inner product (or cosine) for each query, with filters.

    Subclasses implement :meth:`_search` on validated input, and the artifact layout in
    :meth:`_arrays` / :meth:`_from_artifact`.
    """

    metric: str
    _vectors: np.ndarray

    @property
    def n(self) -> int:
        """Number of rows (items) in the index."""
        return int(self._vectors.shape[0])

    @property
    def dim(self) -> int:
        """Length of each vector."""
        return int(self._vectors.shape[1])

    @property
    def vectors(self) -> np.ndarray:
        """The indexed vectors as stored (float32, read-only; unit length for ``metric="cosine"``)."""
        return self._vectors

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, dim={self.dim}, metric={self.metric!r})"

    # -- growing ---------------------------------------------------------------------------------

    def add(self: IndexT, vectors: ArrayLike) -> IndexT:
        """Append rows (e.g. new items); they get ids ``n, n + 1, ...``. Returns ``self``.

        An offline operation: do not call it while other threads search this index; build or
        grow a copy and swap it in instead.
        """
        rows = _prepare_vectors(vectors, self.metric)
        if rows.shape[1] != self.dim:
            raise ParameterError(f"vectors to add must have {self.dim} columns like the index, got {rows.shape[1]}")
        self._add(rows)
        grown = np.concatenate([self._vectors, rows])
        grown.setflags(write=False)
        self._vectors = grown
        return self

    def _add(self, rows: np.ndarray) -> None:
        """Subclass hook: take ``rows`` (validated, normalised for cosine) into the structure."""

    # -- searching -------------------------------------------------------------------------------

    def _check_queries(self, queries) -> np.ndarray:
        try:
            q = np.array(queries, dtype=np.float32, order="C", copy=True)
        except (TypeError, ValueError) as e:
            raise ParameterError(f"queries must be a numeric (n_queries, {self.dim}) array: {e}") from None
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ParameterError(f"queries must have shape (n_queries, {self.dim}), got {np.shape(queries)}; "
                                 f"this index holds {self.dim}-dimensional vectors")
        if not np.isfinite(q).all():
            bad = np.flatnonzero(~np.isfinite(q).all(axis=1))
            raise ParameterError(f"queries holds NaN or infinite values in rows {bad[:5].tolist()}; "
                                 "fix the query vectors (a user with no factors?)")
        if self.metric == "cosine":
            _normalise(q)
        return q

    def search(self, queries: ArrayLike, n: int = 10, *, allow: ArrayLike | list[ArrayLike] | None = None,
               deny: ArrayLike | list[ArrayLike] | None = None,
               mask: ArrayLike | None = None) -> tuple[IntArray, Float32Array]:
        """The ``n`` best rows for each query, best first.

        Parameters
        ----------
        queries : float array (n_queries, dim), or (dim,) for one query
        n : int
            Results per query (> 0).
        allow : row indices, or one list of row indices per query, optional
            Only these rows are candidates.
        deny : row indices, or one list per query, optional
            Rows never returned.
        mask : bool array (n_rows,), optional
            ``False`` marks rows never returned.

        Returns
        -------
        ids : int64 array (n_queries, n)
            Row indices, padded with ``-1`` when fewer than ``n`` rows pass the filters.
        scores : float32 array (n_queries, n)
            Inner products (cosine for ``metric="cosine"``), padded with ``-inf``.

        Examples
        --------
        >>> import numpy as np
        >>> from persona.retrieval import ExactIndex
        >>> index = ExactIndex(np.eye(4, dtype=np.float32))
        >>> ids, scores = index.search([[0.1, 0.4, 0.3, 0.2]], n=2, deny=[1])
        >>> ids.tolist(), [round(float(s), 2) for s in scores[0]]
        ([[2, 3]], [0.3, 0.2])
        """
        n = check_n(n)
        q = self._check_queries(queries)
        filters = Filters(allow, deny, mask, self.n, q.shape[0])
        width = max(1, min(n, self.n))  # the work never exceeds the table; the answer is padded to n
        ids, scores = self._search(q, width, filters)
        if width < n:
            pad_i, pad_s = _pad(q.shape[0], n)
            pad_i[:, :width], pad_s[:, :width] = ids, scores
            ids, scores = pad_i, pad_s
        return ids, scores

    @abstractmethod
    def _search(self, queries: np.ndarray, n: int, filters: Filters):
        """Search validated float32 queries; return (ids int64, scores float32), both (n_queries, n)."""

    # -- persistence -----------------------------------------------------------------------------

    def _meta(self) -> dict:
        return {"class": type(self).__name__, "metric": self.metric}

    def _arrays(self) -> dict:
        return {"vectors": self._vectors}

    def _files(self) -> dict:
        """Raw files to store beside the arrays (name -> writer); see FaissIndex."""
        return {}

    def save(self, path: PathLike, *, key: bytes | str | None = None) -> Path:
        """Write the index as a persona artifact directory (JSON manifest + .npy, no pickle);
        ``key`` signs it (HMAC-SHA256), see :meth:`load`."""
        from ..io.artifact import write_artifact

        return write_artifact(path, "index", self._meta(), self._arrays(), files=self._files(), key=key)

    @classmethod
    def load(cls: type[IndexT], path: PathLike, *, mmap: bool = False, key: bytes | str | None = None) -> IndexT:
        """Read an index written by :meth:`save`; checksums are verified first.

        Called on :class:`Index` itself it dispatches on the stored class, like
        :func:`~persona.retrieval.load_index`. ``key``: require the HMAC signature of
        ``save(path, key=...)``; only a signed faiss file is handed to faiss's reader, an unsigned
        one is rebuilt from the stored vectors.
        """
        from ..io.artifact import artifact_files, read_artifact
        from . import _classes

        manifest, arrays = read_artifact(path, mmap=mmap, key=key)
        files = artifact_files(path, manifest)
        if manifest.get("kind") != "index":
            raise ArtifactError(f"{path} holds a {manifest.get('kind')!r} artifact, not an index; "
                                "load it with persona.load")
        meta = manifest.get("meta", {})
        name = meta.get("class")
        classes = _classes()
        if name not in classes:
            raise ArtifactError(f"{path} holds an index of unknown class {name!r}; known: {sorted(classes)}")
        target = classes[name]
        if cls is not Index and not issubclass(target, cls):
            raise ArtifactError(f"{path} holds a {name}, not a {cls.__name__}; use persona.retrieval.load_index")
        if meta.get("metric") not in METRICS or "vectors" not in arrays:
            raise ArtifactError(f"{path} lacks a valid metric or the vectors array; save the index again")
        # raw files travel to the subclass beside the arrays, with the mmap wish
        try:
            return target._from_artifact({**meta, "_files": files, "_mmap": bool(mmap),
                                          "_authentic": bool(manifest.get("_authentic"))}, arrays)
        except ArtifactError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever a malformed artifact trips, it is refused cleanly
            raise ArtifactError(f"{path} is malformed ({type(e).__name__}: {e}); save the index again") from None

    @classmethod
    @abstractmethod
    def _from_artifact(cls, meta: dict, arrays: dict) -> "Index":
        """Rebuild an index from its manifest meta and arrays."""


def _pad(q: int, n: int):
    """Fresh result arrays: ids -1, scores -inf."""
    return np.full((q, n), -1, dtype=np.int64), np.full((q, n), -np.inf, dtype=np.float32)
