"""Top-n retrieval over embeddings with business-rule filters: exact (BLAS) or approximate (faiss).

>>> import numpy as np
>>> from persona.retrieval import make_index
>>> items = np.random.default_rng(0).standard_normal((1000, 16))
>>> index = make_index(items)              # exact below 50,000 rows, HNSW above
>>> ids, scores = index.search(items[:3], n=5, mask=np.arange(1000) % 2 == 0)
>>> type(index).__name__, ids.shape, bool((ids % 2 == 0).all())
('ExactIndex', (3, 5), True)

faiss is imported only when a :class:`FaissIndex` is built or loaded.
"""

from __future__ import annotations

from typing import Any

from ..errors import ParameterError
from ..typing import ArrayLike, PathLike
from .base import METRICS, Index
from .exact import ExactIndex
from .faiss_index import KINDS, FaissIndex
from .filters import attribute_mask

__all__ = ["Index", "ExactIndex", "FaissIndex", "make_index", "load_index", "attribute_mask", "METRICS", "KINDS",
           "EXACT_MAX_ROWS"]

EXACT_MAX_ROWS = 50_000  # make_index's default: exact search up to this many rows


def _classes() -> dict:
    return {"ExactIndex": ExactIndex, "FaissIndex": FaissIndex}


def make_index(vectors: ArrayLike, metric: str = "ip", kind: str = "auto", *,
               exact_max_rows: int = EXACT_MAX_ROWS, **options: Any) -> Index:
    """An index over ``vectors``: exact for small catalogues, faiss HNSW for large ones.

    Parameters
    ----------
    vectors : float array (n_rows, dim)
    metric : {"ip", "cosine"}
    kind : {"auto", "exact", "hnsw", "ivf", "ivfpq"}
        ``auto`` picks ``exact`` up to ``exact_max_rows`` rows, else ``hnsw``.
    **options
        Passed to :class:`ExactIndex` or :class:`FaissIndex` (e.g. ``ef_search=64``, ``nprobe=32``).
    """
    if kind == "auto":
        import numpy as np

        rows = np.shape(vectors)[0] if np.ndim(vectors) >= 1 else 0
        kind = "exact" if rows <= exact_max_rows else "hnsw"
    if kind == "exact":
        return ExactIndex(vectors, metric, **options)
    if kind in KINDS:
        return FaissIndex(vectors, metric, kind, **options)
    raise ParameterError(f"kind must be 'auto', 'exact' or one of {KINDS}, got {kind!r}")


def load_index(path: PathLike, *, mmap: bool = False, key: bytes | str | None = None) -> Index:
    """Load any index saved with ``index.save(path)``; the manifest names its class."""
    return Index.load(path, mmap=mmap, key=key)
