"""Approximate top-n retrieval with faiss (HNSW, IVF-Flat, IVF-PQ), filters applied inside the search.

faiss is imported on first use, so ``import persona`` does not load it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validate import check_int, check_num_threads, check_number
from ..errors import ArtifactError, ParameterError, UnsupportedError
from ..typing import ArrayLike
from .base import Filters, Index, _check_metric, _pad, _prepare_vectors
from .exact import exact_subset

__all__ = ["FaissIndex", "KINDS"]

KINDS = ("hnsw", "ivf", "ivfpq")
_RETRIES = 2      # searches with a wider beam (x4, x16) before the exact fallback for a short row
_WIDEN = 4
_EXACT_WORK = 1 << 20  # default exact_below: this many multiply-adds per query (rows * dim)


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a serving dependency
        raise UnsupportedError("FaissIndex needs faiss; install faiss-cpu (pip install faiss-cpu) "
                               "or use persona.retrieval.ExactIndex") from None
    return faiss


# Upper bounds of the structure parameters: faiss takes them as C ints and allocates by them (M=10**9 is a
# std::bad_alloc, ef_search=10**12 an OverflowError), and no index gains from more.
_LIMITS = {"M": 512, "ef_construction": 1 << 16, "ef_search": 1 << 20, "nprobe": 1 << 20, "pq_m": 1 << 12,
           "pq_nbits": 16, "refine": 1 << 10, "nlist": 1 << 24}


def _positive_int(name, value, minimum=1):
    return check_int(value, name, min=minimum, max=_LIMITS.get(name))


class FaissIndex(Index):
    """Approximate inner-product (or cosine) search with faiss, exact answers where they are cheap.

    Parameters
    ----------
    vectors : float array (n_rows, dim)
    metric : {"ip", "cosine"}
        Inner product is searched directly (``METRIC_INNER_PRODUCT``); cosine normalises vectors
        and queries first.
    kind : {"hnsw", "ivf", "ivfpq"}
        ``hnsw``: graph index, best latency/recall, no training. ``ivf``: inverted lists of exact
        vectors (k-means trained). ``ivfpq``: inverted lists of product-quantised codes (small, less
        accurate; the candidates are re-ranked with the exact vectors).
    M, ef_construction, ef_search : int
        HNSW graph degree, build beam and default search beam (raised to ``n`` when smaller).
    nlist, nprobe : int
        IVF lists (default ``4 * sqrt(n_rows)``, at most ``n_rows``) and lists probed per query.
    pq_m, pq_nbits : int
        IVF-PQ sub-quantisers (must divide ``dim``) and bits per code (lowered for small training sets).
    refine : int, optional
        Candidates fetched per wanted result and re-ranked exactly (default 4 for ``ivfpq``, else 1).
    train_size : int, optional
        Rows sampled (with ``random_state``) to train IVF; default ``min(n_rows, 256 * nlist)``.
    exact_below, exact_fraction
        A filtered search whose allowed rows number at most ``exact_below`` (default
        ``max(5000, 20 * n, 2**20 // dim)``, e.g. 16,384 rows at dim 64) or less than
        ``exact_fraction`` of all rows is answered exactly over the allowed rows: cheaper than a
        filtered graph search then (measured: 10% of 100k x 64 allowed, p50 0.26 ms exact with
        recall 1 vs 0.67 ms for HNSW efSearch=128 with recall 0.71), and never short. Set both to 0
        to always search through faiss's selector.
    num_threads : int
        0 leaves faiss's OpenMP threads alone. A positive value calls ``faiss.omp_set_num_threads``
        around each search; that setting is **process-global** in faiss, so concurrent searches with
        different values race -- set it once per process instead where that matters.
    random_state : int
        Seed for the IVF training sample and k-means.

    Notes
    -----
    Every returned score is the true inner product -- faiss's own for flat storage (``hnsw``,
    ``ivf``), recomputed from a float32 copy of the vectors for ``ivfpq`` -- so approximate and
    exact scores compare directly and ties order by the lower row. Memory: that copy
    (``4 * n_rows * dim`` bytes, also used for the exact fallback) plus the faiss index (for ``hnsw``/``ivf`` another copy of
    the vectors, plus ~``8 * M`` bytes per row of graph for ``hnsw``).

    A row holds exactly ``n`` results whenever ``n`` rows pass its filters: a short answer from
    faiss (HNSW under a selective filter) is retried with a wider beam, then answered exactly.
    Searches never change the index (per-call ``SearchParameters``), so one index serves many
    threads at once.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> index = FaissIndex(rng.standard_normal((500, 8)), kind="hnsw")
    >>> ids, scores = index.search(rng.standard_normal((2, 8)), n=5, deny=[0, 1])
    >>> ids.shape, bool((np.diff(scores, axis=1) <= 0).all())
    ((2, 5), True)
    """

    def __init__(self, vectors: ArrayLike, metric: str = "ip", kind: str = "hnsw", *, M: int = 32,
                 ef_construction: int = 40, ef_search: int = 128, nlist: int | None = None, nprobe: int = 16,
                 pq_m: int = 8, pq_nbits: int = 8, refine: int | None = None, train_size: int | None = None,
                 exact_below: int | None = None, exact_fraction: float = 0.05, num_threads: int = 0,
                 random_state: int = 0):
        self.metric = _check_metric(metric)
        if kind not in KINDS:
            raise ParameterError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.M = _positive_int("M", M, 2)
        self.ef_construction = _positive_int("ef_construction", ef_construction)
        self.ef_search = _positive_int("ef_search", ef_search)
        self.nprobe = _positive_int("nprobe", nprobe)
        self.pq_m = _positive_int("pq_m", pq_m)
        self.pq_nbits = _positive_int("pq_nbits", pq_nbits)
        self.refine = _positive_int("refine", refine if refine is not None else (4 if kind == "ivfpq" else 1))
        self.exact_below = None if exact_below is None else _positive_int("exact_below", exact_below, 0)
        self.exact_fraction = check_number(exact_fraction, "exact_fraction", min=0.0, max=1.0)
        self.num_threads = check_num_threads(num_threads)
        self.random_state = check_int(random_state, "random_state", min=0, max=2**32 - 1)
        self._vectors = _prepare_vectors(vectors, self.metric)
        n_rows, dim = self._vectors.shape
        if nlist is None:
            nlist = max(1, int(round(4 * math.sqrt(n_rows))))
        self.nlist = min(_positive_int("nlist", nlist), n_rows)
        self.train_size = (min(n_rows, 256 * self.nlist) if train_size is None
                           else min(n_rows, _positive_int("train_size", train_size)))
        if self.train_size < self.nlist:
            raise ParameterError(f"train_size {self.train_size} is below nlist {self.nlist}; "
                                 "k-means needs at least one training row per list")
        if kind == "ivfpq" and dim % self.pq_m:
            raise ParameterError(f"pq_m must divide dim ({dim}), got {self.pq_m}; try a divisor such as "
                                 f"{[m for m in (4, 8, 16, 32) if dim % m == 0] or [1]}")
        self._index = self._build()

    def _build(self):
        faiss = _faiss()
        n_rows, dim = self._vectors.shape
        ip = faiss.METRIC_INNER_PRODUCT
        x = self._vectors
        with self._threads():
            if self.kind == "hnsw":
                index = faiss.IndexHNSWFlat(dim, self.M, ip)
                index.hnsw.efConstruction = self.ef_construction
                index.add(x)
                return index
            quantizer = faiss.IndexFlatIP(dim)
            if self.kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, ip)
            else:
                # PQ codebooks need 2**nbits training rows per sub-quantiser
                nbits = max(1, min(self.pq_nbits, int(math.log2(self.train_size))))
                index = faiss.IndexIVFPQ(quantizer, dim, self.nlist, self.pq_m, nbits, ip)
                index.pq.cp.seed = self.random_state
            index.cp.seed = self.random_state
            if self.train_size < n_rows:
                rng = np.random.default_rng(self.random_state)
                train = x[np.sort(rng.choice(n_rows, self.train_size, replace=False))]
            else:
                train = x
            index.train(train)
            index.add(x)
            return index

    def _add(self, rows: np.ndarray) -> None:
        if getattr(self, "_read_only", False):
            raise ParameterError("this index was loaded with mmap=True and is read-only; load it without "
                                 "mmap to add rows")
        # HNSW links the new rows into the graph; IVF assigns them to the trained lists
        with self._threads():
            self._index.add(rows)

    @property
    def faiss_index(self) -> Any:  # a faiss.Index; faiss ships no type information
        """The underlying faiss index (do not change it while searches run)."""
        return self._index

    # -- persistence -----------------------------------------------------------------------------

    _PARAMS = ("kind", "M", "ef_construction", "ef_search", "nlist", "nprobe", "pq_m", "pq_nbits", "refine",
               "train_size", "exact_below", "exact_fraction", "num_threads", "random_state")

    def _meta(self) -> dict:
        return {**super()._meta(), "params": {p: getattr(self, p) for p in self._PARAMS}}

    def _arrays(self) -> dict:
        return {"vectors": self._vectors}

    def _files(self) -> dict:
        # faiss's own file format, so that load(mmap=True) can map it instead of copying it
        return {"index.faiss": lambda dest: _faiss().write_index(self._index, str(dest))}

    @classmethod
    def _from_artifact(cls, meta, arrays):
        faiss = _faiss()
        stored = meta.get("_files", {}).get("index.faiss")
        if stored is None:
            raise ArtifactError("the index artifact lacks its faiss file; save the index again")
        params = meta.get("params", {})
        self = cls.__new__(cls)
        self.metric = meta["metric"]
        for p in cls._PARAMS:
            if p not in params:
                raise ArtifactError(f"the index artifact lacks parameter {p!r}; save the index again")
            setattr(self, p, params[p])
        vec = np.asarray(arrays["vectors"])
        if vec.ndim != 2 or vec.dtype != np.float32 or not np.isfinite(vec).all():
            raise ArtifactError(f"index vectors must be a 2-D float32 array of finite numbers, got {vec.dtype} "
                                f"{vec.shape}; save the index again")
        if not meta.get("_authentic"):
            # faiss's reader trusts its input: crafted bytes can crash the process. Without a verified
            # signature, build the index again from the checked vectors and the recorded parameters
            try:
                rebuilt = cls(vec, meta["metric"], **{p: params[p] for p in cls._PARAMS})
            except (ParameterError, TypeError, ValueError) as e:
                raise ArtifactError(f"the index artifact's parameters are invalid ({e}); save the index again") \
                    from None
            rebuilt._read_only = bool(meta.get("_mmap"))  # as a mapped one would be
            return rebuilt
        self._vectors = vec
        # with mmap, faiss maps the stored vectors and lists read-only: worker processes share them
        self._read_only = bool(meta.get("_mmap"))
        flags = (faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY) if self._read_only else 0
        try:
            self._index = faiss.read_index(str(stored), flags)
        except RuntimeError as e:
            raise ArtifactError(f"faiss could not read the stored index: {e}") from None
        if self._index.ntotal != vec.shape[0] or self._index.d != vec.shape[1]:
            raise ArtifactError(f"the stored faiss index holds {self._index.ntotal} x {self._index.d} vectors "
                                f"but the artifact's vectors are {vec.shape}; save the index again")
        return self

    # -- search ----------------------------------------------------------------------------------

    def _threads(self):
        import contextlib

        if not self.num_threads:
            return contextlib.nullcontext()
        faiss = _faiss()

        @contextlib.contextmanager
        def limited():
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(self.num_threads)
            try:
                yield
            finally:
                faiss.omp_set_num_threads(before)

        return limited()

    def _use_exact(self, allowed: int, n: int) -> bool:
        # ~1M multiply-adds of exact scoring (16k rows at dim 64) take ~0.25 ms on one core, less than
        # a filtered HNSW search, which walks the whole graph and drops the rows the filter rejects
        below = max(5000, 20 * n, _EXACT_WORK // self.dim) if self.exact_below is None else self.exact_below
        return allowed <= below or allowed < self.exact_fraction * self.n or allowed <= n

    def _params(self, k: int, sel, widen: int):
        faiss = _faiss()
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(self.ef_search * widen, k), sel=sel) if sel is not None \
                else faiss.SearchParametersHNSW(efSearch=max(self.ef_search * widen, k))
        nprobe = min(self.nprobe * widen, self.nlist)
        return faiss.SearchParametersIVF(nprobe=nprobe, sel=sel) if sel is not None \
            else faiss.SearchParametersIVF(nprobe=nprobe)

    def _search(self, queries, n, filters: Filters):
        if not filters.per_query:
            return self._search_group(queries, n, filters.allowed_mask() if filters.any else None)
        out_ids, out_scores = _pad(queries.shape[0], n)
        for i in range(queries.shape[0]):
            out_ids[i:i + 1], out_scores[i:i + 1] = self._search_group(queries[i:i + 1], n,
                                                                        filters.allowed_mask(i))
        return out_ids, out_scores

    def _search_group(self, queries, n, allowed):
        """Queries sharing one filter (``allowed``: bool per row, or None for every row)."""
        faiss = _faiss()
        nq = queries.shape[0]
        if allowed is None:
            count, sel, bitmap = self.n, None, None
        else:
            count = int(np.count_nonzero(allowed))
            if self._use_exact(count, n):
                return exact_subset(self._vectors, queries, np.flatnonzero(allowed), n)
            # keep `bitmap` referenced: the selector holds only a raw pointer into it
            bitmap = np.packbits(allowed, bitorder="little")
            sel = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(bitmap))
        want = min(n, count)
        k = min(count, n * self.refine)
        with self._threads():
            dist, ids = self._index.search(queries, k, params=self._params(k, sel, 1))
            found = np.count_nonzero(ids >= 0, axis=1)
            short = np.flatnonzero(found < want)
            widen = 1
            for _ in range(_RETRIES):
                if not len(short):
                    break
                widen *= _WIDEN
                d_again, again = self._index.search(queries[short], k, params=self._params(k, sel, widen))
                ids[short], dist[short] = again, d_again
                short = short[np.count_nonzero(again >= 0, axis=1) < want]
        del bitmap  # searches are done
        if self.kind == "ivfpq":
            scores = self._rescore(queries, ids)  # PQ distances are approximations
        else:
            # flat storage: faiss's inner products are exact already; only the padding needs -inf
            scores = dist
            scores[ids < 0] = -np.inf
        # faiss returns flat results best first already; re-sort only when that order could be
        # off: rescored candidates, or equal neighbouring scores (ties go to the lower row)
        if self.kind == "ivfpq" or np.any(scores[:, 1:] >= scores[:, :-1]):
            order = np.lexsort((ids, -scores), axis=-1)  # best first, ties by lower row; -1/-inf last
            ids = np.take_along_axis(ids, order, axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
        ids, scores = ids[:, :n], scores[:, :n]
        out_ids, out_scores = _pad(nq, n)
        out_ids[:, :ids.shape[1]], out_scores[:, :ids.shape[1]] = ids, scores
        if len(short):
            allowed_ids = np.arange(self.n) if allowed is None else np.flatnonzero(allowed)
            out_ids[short], out_scores[short] = exact_subset(self._vectors, queries[short], allowed_ids, n)
        return out_ids, out_scores

    def _rescore(self, queries, ids):
        """True inner products of each query with its candidate rows; -inf where the id is -1."""
        valid = ids >= 0
        cand = np.take(self._vectors, np.where(valid, ids, 0), axis=0)  # (q, k, dim)
        scores = np.matmul(cand, queries[:, :, None])[..., 0]  # batched dot: ~3x faster than einsum here
        scores[~valid] = -np.inf
        return scores
