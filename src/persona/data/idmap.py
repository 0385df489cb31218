"""Stable maps between a shop's external ids and persona's dense indices.

External ids (strings or integers from the shop) exist only at the edges of the library: an
:class:`IdMap` turns them into dense ``0..n-1`` indices once, and turns indices back into ids once
per answer. A map can grow with new ids without renumbering the old ones, so models trained on an
old map stay valid for every id they knew.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..errors import DataError

__all__ = ["IdMap", "normalize_ids"]


def normalize_ids(values, *, what: str = "ids") -> np.ndarray:
    """Return ``values`` as a 1-D array of int64 or unicode ids.

    Integral floats (pandas turns int columns with gaps into floats) become int64; mixed ints and
    strings, nulls and non-integral floats raise :class:`DataError`.
    """
    if isinstance(values, (list, tuple)):
        # np.asarray(["a", 1]) would silently turn the int into "1": check element types instead
        arr = np.empty(len(values), dtype=object)
        try:
            arr[:] = values
        except ValueError:
            arr = np.asarray(values, dtype=object)
    else:
        arr = np.asarray(values)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise DataError(f"{what}: expected a 1-D sequence of ids, got an array of shape {arr.shape}")
    kind = arr.dtype.kind
    if kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise DataError(f"{what}: integer ids must fit in int64 (below 2**63), got {int(arr.max())}; "
                        "convert the ids to strings")
    if kind in "iu":
        return arr.astype(np.int64, copy=False)
    if kind == "b":
        raise DataError(f"{what}: expected string or integer ids, got booleans; map them to ids first")
    if kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            raise DataError(f"{what}: null or non-finite ids at rows {rows}; drop those rows or fill the ids")
        if not np.all(arr == np.round(arr)):
            rows = np.flatnonzero(arr != np.round(arr))[:5].tolist()
            raise DataError(
                f"{what}: expected integer or string ids, got non-integral numbers at rows {rows} "
                f"(values {arr[rows].tolist()}); convert the column to int or str"
            )
        if arr.size and np.abs(arr).max() >= 2.0**63:  # the cast would wrap silently to another id
            raise DataError(f"{what}: integer ids must fit in int64 (below 2**63), got {np.abs(arr).max():g}; "
                            "convert the ids to strings")
        return arr.astype(np.int64)
    if kind == "U":
        return arr
    if kind in "OS":
        if len(arr) == 0:
            return np.array([], dtype=np.int64)
        out = arr.tolist()
        types = {type(v) for v in out}
        if types <= {int, np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint16, np.uint32, np.uint64}:
            try:
                return np.asarray(out, dtype=np.int64)
            except OverflowError:
                raise DataError(f"{what}: integer ids must fit in int64 (between -2**63 and 2**63 - 1), got "
                                f"{max(out, key=abs)}; convert the ids to strings") from None
        if types <= {str, np.str_}:
            return np.asarray(out, dtype=str)
        if types <= {bytes}:
            return np.asarray([v.decode("utf-8") for v in out], dtype=str)
        nulls = [i for i, v in enumerate(out) if v is None or (isinstance(v, float) and v != v)]
        if nulls:
            raise DataError(f"{what}: null ids at rows {nulls[:5]}; drop those rows or fill the ids")
        if types <= {int, float, np.int64, np.float64}:
            return normalize_ids(np.asarray(out, dtype=np.float64), what=what)
        names = sorted(t.__name__ for t in types)
        got = f"a mix of {names}" if len(names) > 1 else f"ids of type {names[0]}"
        raise DataError(
            f"{what}: ids must all be strings or all integers, got {got}; "
            f"convert the column to one type (e.g. .astype(str))"
        )
    raise DataError(f"{what}: expected string or integer ids, got dtype {arr.dtype}")


class IdMap:
    """A bijection between external ids and dense indices ``0..len-1``.

    Parameters
    ----------
    ids : array-like
        Unique external ids, in index order.

    Examples
    --------
    >>> m = IdMap(["b", "a"])
    >>> m.lookup(["a", "b"]).tolist()
    [1, 0]
    >>> m2 = m.grow(["c", "a"])
    >>> m2.ids.tolist()
    ['b', 'a', 'c']
    """

    __slots__ = ("_ids", "_sorter", "_sorted")

    def __init__(self, ids: Iterable = ()) -> None:
        ids = normalize_ids(list(ids) if not hasattr(ids, "__len__") else ids, what="ids")
        sorter = np.argsort(ids, kind="stable")
        srt = ids[sorter]
        if len(srt) > 1 and np.any(srt[1:] == srt[:-1]):
            dup = srt[1:][srt[1:] == srt[:-1]][:5].tolist()
            raise DataError(f"IdMap ids must be unique; duplicated: {dup}")
        self._ids = ids.copy()  # never freeze (or alias) the caller's array
        self._ids.setflags(write=False)
        self._sorter = sorter
        self._sorted = srt

    @classmethod
    def encode(cls, values: Iterable[Any] | np.ndarray, *, what: str = "ids") -> tuple[IdMap, np.ndarray]:
        """Build a map from raw (repeated) ids; return it and the index of every value.

        The map lists distinct ids in sorted order, so the same data gives the same indices.
        """
        vals = normalize_ids(values, what=what)
        uniq, codes = np.unique(vals, return_inverse=True)
        return cls(uniq), codes.astype(np.int64).reshape(-1)

    @property
    def ids(self) -> np.ndarray:
        """External id of each index (read-only)."""
        return self._ids

    @property
    def dtype(self) -> np.dtype:
        return self._ids.dtype

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        head = ", ".join(repr(x) for x in self._ids[:3].tolist())
        more = ", ..." if len(self) > 3 else ""
        return f"IdMap([{head}{more}], n={len(self)})"

    def __eq__(self, other) -> bool:
        if not isinstance(other, IdMap) or len(self) != len(other):
            return False
        if len(self) and (self._ids.dtype.kind == "U") != (other._ids.dtype.kind == "U"):
            return False  # string ids never equal integer ids
        return bool(np.all(self._ids == other._ids))

    __hash__ = None  # mutable-looking value type; compare, don't hash

    def _compatible(self, ids: np.ndarray) -> np.ndarray | None:
        """Cast ``ids`` to this map's id kind, or None when no id can match."""
        if len(self._ids) == 0:
            return None
        mine = self._ids.dtype.kind
        theirs = ids.dtype.kind
        if mine == theirs:
            return ids
        if mine == "U" and theirs in "iu":
            return None
        if mine in "iu" and theirs == "U":
            return None
        return None

    def lookup(self, ids: Iterable[str | int] | np.ndarray, *, missing: str = "ignore") -> np.ndarray:
        """Indices of ``ids``; ``-1`` for unknown ids, or raise when ``missing="raise"``.

        Parameters
        ----------
        ids : array-like of external ids
        missing : {"ignore", "raise"}
        """
        ids = normalize_ids(ids, what="ids")
        out = np.full(len(ids), -1, dtype=np.int64)
        cast = self._compatible(ids)
        if cast is not None and len(ids):
            pos = np.searchsorted(self._sorted, cast)
            pos_c = np.minimum(pos, len(self._sorted) - 1)
            hit = self._sorted[pos_c] == cast
            out[hit] = self._sorter[pos_c[hit]]
        if missing == "raise" and np.any(out < 0):
            bad = ids[out < 0][:5].tolist()
            raise KeyError(bad)
        return out

    def index_of(self, id_: str | int) -> int:
        """Index of one id, or -1 when unknown."""
        return int(self.lookup([id_])[0])

    def __contains__(self, id_: object) -> bool:
        try:
            return self.index_of(id_) >= 0
        except DataError:
            return False

    def to_ids(self, indices: Iterable[int] | np.ndarray) -> np.ndarray:
        """External ids of ``indices`` (an array of indices, all valid)."""
        return self._ids[np.asarray(indices, dtype=np.int64)]

    def grow(self, ids: Iterable[str | int] | np.ndarray) -> IdMap:
        """A new map with the unseen ``ids`` appended (sorted); old indices keep their meaning."""
        ids = normalize_ids(ids, what="ids")
        if len(self._ids) and len(ids) and self._compatible(ids) is None:
            raise DataError(
                f"cannot grow a map of {self._ids.dtype.kind == 'U' and 'string' or 'integer'} ids with "
                f"ids of dtype {ids.dtype}; convert the new ids to the same type"
            )
        new = np.unique(ids[self.lookup(ids) < 0])
        if len(new) == 0:
            return self
        if len(self._ids) == 0:
            return IdMap(new)
        return IdMap(np.concatenate([self._ids, new]))
