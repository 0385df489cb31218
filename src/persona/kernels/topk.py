"""Top-k selection with exclusions: the one primitive behind every ``recommend``.

:func:`topk` routes to the best available backend -- the compiled core (C++, OpenMP, GIL released),
then Numba, then the numpy reference -- picked once at first use and logged. Set the environment
variable ``PERSONA_TOPK_BACKEND`` to ``cpp``, ``numba`` or ``numpy``, or pass ``backend=``, to
override.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import scipy.sparse as sp

from .._validate import MAX_N, check_num_threads
from ..errors import ParameterError, PersonaError

__all__ = ["topk", "topk_backend", "available_backends", "BACKENDS"]

log = logging.getLogger("persona.kernels")

BACKENDS = ("cpp", "numba", "numpy")
_chosen: str | None = None


def _has_backend(name: str, *, load: bool = False) -> bool:
    if name == "numpy":
        return True
    if name == "cpp":
        try:
            from .. import _core  # noqa: F401
        except ImportError:
            return False
        return True
    if name == "numba":
        # installed is enough to list it (importing numba costs ~100 ms, which a serving process on
        # the compiled core never needs); ``load`` imports it, for the backend about to be used
        if not load:
            import importlib.util

            return importlib.util.find_spec("numba") is not None
        try:
            import numba  # noqa: F401
        except ImportError:
            return False
        return True
    return False


def available_backends() -> list[str]:
    """Backends usable in this installation, best first."""
    return [b for b in BACKENDS if _has_backend(b)]


def _first_available() -> str:
    """The best usable backend, checking no further than it (so numba is not looked at behind C++)."""
    return next(b for b in BACKENDS if _has_backend(b, load=True))


def topk_backend() -> str:
    """The backend :func:`topk` uses by default (chosen once, then cached)."""
    global _chosen
    if _chosen is None:
        wanted = os.environ.get("PERSONA_TOPK_BACKEND", "").strip().lower()
        if wanted:
            if wanted not in BACKENDS:
                raise PersonaError(f"PERSONA_TOPK_BACKEND must be one of {BACKENDS}, got {wanted!r}")
            if not _has_backend(wanted, load=True):
                raise PersonaError(f"PERSONA_TOPK_BACKEND={wanted} but that backend is not available here; "
                                   f"available: {available_backends()}")
            _chosen = wanted
        else:
            _chosen = _first_available()
            if _chosen != "cpp":
                log.warning("persona's compiled core is not importable; top-k runs on %s. "
                            "Reinstall persona with a C++17 compiler to get the fast path.", _chosen)
        log.info("persona top-k backend: %s", _chosen)
    return _chosen


def _as_csr_rows(obj, m: int, n_items: int, name: str):
    """(indptr int64, indices int32) from a CSR matrix, an (indptr, indices) pair or a list of rows."""
    if obj is None:
        return None, None
    if sp.issparse(obj):
        csr = obj.tocsr()
        if csr.shape[0] != m:
            raise ValueError(f"{name} has {csr.shape[0]} rows but scores has {m}; pass one row per score row")
        if csr.shape[1] > n_items:
            raise ValueError(f"{name} has {csr.shape[1]} columns but there are {n_items} items")
        return csr.indptr.astype(np.int64, copy=False), csr.indices.astype(np.int32, copy=False)
    if isinstance(obj, tuple) and len(obj) == 2:
        indptr = np.ascontiguousarray(obj[0], dtype=np.int64)
        indices = np.asarray(obj[1])
        if indices.dtype != np.int32 and indices.size:
            # casting wider integers to int32 would wrap 2**32 + 1 to 1 and silently hit another item
            if indices.dtype.kind not in "iu":
                raise ValueError(f"{name} indices must be integers, got dtype {indices.dtype}")
            if indices.min() < 0 or indices.max() >= n_items:
                raise ValueError(f"{name} holds item indices outside [0, {n_items})")
        return indptr, np.ascontiguousarray(indices, dtype=np.int32)
    rows = list(obj)
    if len(rows) != m:
        raise ValueError(f"{name} has {len(rows)} rows but scores has {m}; pass one list per score row")
    lens = np.fromiter((len(r) for r in rows), dtype=np.int64, count=m)
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    indices = (np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]) if indptr[-1]
               else np.zeros(0, dtype=np.int64))
    if indices.size and (indices.min() < 0 or indices.max() >= n_items):
        raise ValueError(f"{name} holds item indices outside [0, {n_items})")
    return indptr, indices.astype(np.int32)


def _check_csr(indptr, indices, m, n_items, name):
    if len(indptr) != m + 1:
        raise ValueError(f"{name} indptr must have {m + 1} entries (rows + 1), got {len(indptr)}")
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != len(indices):
        raise ValueError(f"{name} indptr must start at 0, never decrease and end at len(indices)")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_items):
        raise ValueError(f"{name} holds item indices outside [0, {n_items})")


def topk(scores, k: int, *, exclude=None, allow=None, mask=None, backend: str | None = None,
         num_threads: int = 0):
    """The ``k`` best items of every row of ``scores``, best first.

    Parameters
    ----------
    scores : array (n_rows, n_items)
        Scores, cast to float32. NaN ranks as ``-inf``.
    k : int
        Results per row. Rows hold exactly ``min(k, allowed items)`` results; the rest of the row
        is padded with index ``-1`` and score ``-inf``.
    exclude : CSR matrix, ``(indptr, indices)`` or list of index lists, optional
        Items never to return, per row (seen items, deny-lists).
    allow : same forms, or a 1-D index array shared by all rows, optional
        When given, only these items are candidates.
    mask : bool array (n_items,), optional
        ``False`` marks items never to return (e.g. out of stock).
    backend : {"cpp", "numba", "numpy"}, optional
        Force a backend; default :func:`topk_backend`.
    num_threads : int
        Threads for the compiled backends (0 = all cores, fewer when the input is too small to
        pay for waking them); at most :func:`persona._validate.max_threads`.

    Returns
    -------
    indices : int64 array (n_rows, k)
    scores : float32 array (n_rows, k)

    Examples
    --------
    >>> import numpy as np
    >>> from persona.kernels import topk
    >>> idx, val = topk(np.array([[0.25, 0.75, 0.5, 0.75]]), 3, exclude=[[1]])
    >>> idx.tolist(), val.tolist()
    ([[3, 2, 0]], [[0.75, 0.5, 0.25]])

    Ties go to the lower index, so two items with the same score always come back in one order.
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (rows x items), got {scores.ndim}-D; use scores[None, :] for one row")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    k = int(k)
    if scores.shape[0] and k > max(MAX_N, scores.shape[1]):  # the (rows, k) answer is allocated: refuse first
        raise ParameterError(f"k: expected at most {max(MAX_N, scores.shape[1])} (the larger of {MAX_N} and the "
                             f"number of items), got {k}; ask for fewer results")
    num_threads = check_num_threads(num_threads)  # an OpenMP runtime asked for 2000 threads aborts the process
    m, n_items = scores.shape
    ex_ptr, ex_ind = _as_csr_rows(exclude, m, n_items, "exclude")
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=bool)
        if mask.shape != (n_items,):
            raise ValueError(f"mask must have one bool per item ({n_items}), got shape {mask.shape}")
    if allow is not None and not sp.issparse(allow) and not isinstance(allow, tuple):
        arr = np.asarray(allow) if not isinstance(allow, list) or not allow or np.isscalar(allow[0]) else None
        if arr is not None and arr.ndim == 1:  # one shared allow-list for every row
            arr = arr.astype(np.int64)
            if m > 1 and len(arr) * m > n_items:
                # cheaper as a mask than as m copies of the list
                if arr.size and (arr.min() < 0 or arr.max() >= n_items):
                    raise ValueError(f"allow holds item indices outside [0, {n_items})")
                listed = np.zeros(n_items, dtype=bool)
                listed[arr] = True
                mask = listed if mask is None else (mask & listed)
                allow = None
            else:
                allow = (np.arange(m + 1, dtype=np.int64) * len(arr), np.tile(arr, m))
    al_ptr, al_ind = _as_csr_rows(allow, m, n_items, "allow")

    name = backend or topk_backend()
    if name == "cpp":
        from .. import _core

        return _core.topk(scores, k, ex_ptr, ex_ind, al_ptr, al_ind, mask, int(num_threads))
    for ptr, ind, what in ((ex_ptr, ex_ind, "exclude"), (al_ptr, al_ind, "allow")):
        if ptr is not None:
            _check_csr(ptr, ind, m, n_items, what)
    if name == "numba":
        from ._numba_topk import topk_numba

        empty64, empty32 = np.zeros(1, np.int64), np.zeros(0, np.int32)
        return topk_numba(
            scores, k,
            ex_ptr if ex_ptr is not None else empty64, ex_ind if ex_ind is not None else empty32,
            al_ptr if al_ptr is not None else empty64, al_ind if al_ind is not None else empty32,
            mask if mask is not None else np.zeros(0, dtype=np.bool_),
            ex_ptr is not None, al_ptr is not None, mask is not None,
        )
    if name == "numpy":
        from ._reference import topk_reference

        return topk_reference(scores, k, ex_ptr, ex_ind, al_ptr, al_ind, mask)
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
