"""Personalised product search: BM25 and sentence embeddings over the catalogue, re-ranked by a user's taste.

:class:`ProductSearch` answers a shop's search box. Text relevance has two parts:

* **BM25** over the catalogue's text fields, tokenised as :func:`persona.data.tokenize` does
  (lower-cased words of two or more characters), with the Okapi weighting of
  :mod:`persona.kernels.similarity`::

      bm25(q, d) = sum over query words t:  idf_t * tf_td * (k1 + 1) / (tf_td + k1 * (1 - b + b * len_d / avg_len))
      idf_t      = log(1 + (N - df_t + 0.5) / (df_t + 0.5))

* **meaning** -- when a sentence encoder is available (the packaged all-MiniLM-L6-v2 of
  :class:`persona.onnx.SentenceEncoder`, or a shop's own callable): the cosine of the query's
  embedding to every item's, served by a :mod:`persona.retrieval` index (exact for small
  catalogues, faiss HNSW for large ones). It finds "trainers" for "running shoes" and survives
  typos that BM25's exact words miss.

Each part is divided by its best value for the query, so both lie in ``[0, 1]``, and the text
relevance is their blend, ``(1 - semantic) * bm25 / max bm25 + semantic * cos / max cos``.

**Personalisation.** With ``personalise=`` a fitted persona :class:`~persona.Recommender` (EASE,
ItemKNN, ALS, :class:`~persona.Hybrid`, ...) and a ``user`` the model knows, the top
``candidates`` items by text relevance are scored by the model for that user
(``model.recommend(user, items=candidates, filter_seen=False)``), the model's order becomes a rank
score that favours its first picks, ``1 - log(1 + r) / log(1 + c)`` for the candidate it ranks
``r``-th (0-based) of ``c``, and the final score is::

    (1 - weight) * text relevance + weight * personal rank score

Ranks, not the model's raw scores, so any model plugs in (EASE's, ALS's and a Hybrid's scores live
on different scales); the logarithm lets the model's favourites stand out while the order of its
hundredth and hundred-and-first candidates barely matters (measured: it beats a linear rank score
and min-max scaled scores on benchmarks/bench_search.py; see docs/ranking.md).

Users the model does not know (and ``user=None``) get the text ranking alone -- not the model's
fallback, since popularity is not a taste. The personalising model is not part of a saved search:
it is retrained on its own schedule, and :meth:`ProductSearch.load` takes it again.

**Search events.** ``EventStore.track`` needs an item, so a shop records the *result* of a search
-- the item clicked on the results page -- as ``store.track(user, item, "search", properties={"query":
q, "position": rank})``; training reads ``search`` events with weight 0.5 (below a view), and the
purchase that follows is an ordinary ``purchase``. The stored queries (``store.events(...)``'s
``properties``) are the material for an offline evaluation like ``benchmarks/bench_search.py``.
"""

from __future__ import annotations

import logging
import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp

from .._validate import check_int, check_n, check_number
from ..data.features import tokenize
from ..data.idmap import IdMap, normalize_ids
from ..errors import ArtifactError, DataError, NotFittedError, ParameterError, PersonaError
from ..io.artifact import check_array, pack_csr, read_artifact, unpack_csr, write_artifact
from ..kernels.similarity import apply_bm25, bm25_idf, document_frequency
from ..models.base import Recommender
from ..typing import Float32Array, Ids, PathLike, UserId

if TYPE_CHECKING:  # pandas only for annotations: ``import persona`` stays light
    import pandas as pd

    from ..retrieval import Index

__all__ = ["ProductSearch"]

log = logging.getLogger("persona.ranking")

_KIND = "search"
_CUSTOM = "custom"  # the encoder name a saved search records for a shop's own callable
#: Defaults chosen on the synthetic shop's noisy queries (benchmarks/bench_search.py, docs/ranking.md).
DEFAULT_WEIGHT = 0.2
DEFAULT_SEMANTIC = 0.5
_INDEX_KINDS = ("auto", "exact", "hnsw", "ivf", "ivfpq")


def _catalogue_texts(catalogue, text, id) -> tuple[np.ndarray, list[str], list[str]]:
    """(ids, one joined text per item, the text columns) of a catalogue table."""
    from .._validate import check_frame

    frame = check_frame(catalogue, "catalogue")
    fields = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
    if not fields or not all(isinstance(f, str) for f in fields):
        raise ParameterError(f"text: expected a column name or a list of column names, got {text!r}; "
                             "pass e.g. text=['name', 'description']")
    if not isinstance(id, str):
        raise ParameterError(f"id: expected the name of the item id column, got {id!r}")
    missing = [c for c in [id, *fields] if c not in frame.columns]
    if missing:
        raise DataError(f"catalogue: expected columns {missing}, got only {list(frame.columns)[:20]}; "
                        "name the id column with id= and the text columns with text=")
    if not len(frame):
        raise DataError("catalogue: expected at least one item, got an empty table")
    ids = normalize_ids(frame[id].to_numpy(), what=f"catalogue column {id!r}")
    if len(np.unique(ids)) != len(ids):
        srt = np.sort(ids)
        dup = np.unique(srt[1:][srt[1:] == srt[:-1]])[:5].tolist()
        raise DataError(f"catalogue: expected one row per item id, got ids {dup} more than once; "
                        "drop or join the repeated rows first")

    def part(v) -> str:
        if isinstance(v, str):
            return v
        if isinstance(v, (list, tuple, np.ndarray)):  # tags
            return " ".join(x for x in v if isinstance(x, str))
        return ""

    columns = [frame[f].tolist() for f in fields]
    texts = [" ".join(p for p in (part(v) for v in row) if p.strip()) for row in zip(*columns)]
    return ids, texts, fields


def _rank_scores(order_len: int) -> np.ndarray:
    """Rank scores of a list of ``order_len`` items: ``1 - log(1 + r) / log(1 + order_len)`` for rank ``r``."""
    return 1.0 - np.log1p(np.arange(order_len, dtype=np.float64)) / np.log1p(max(order_len, 1))


def _best_first(scores: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` best ``scores``, best first, ties by the lower row (deterministic)."""
    if len(scores) > 4 * n:
        keep = np.argpartition(-scores, n - 1)[:n]
        cut = scores[keep].min()
        keep = np.flatnonzero(scores >= cut)  # every tie at the cut, so the row order decides
    else:
        keep = np.arange(len(scores))
    order = keep[np.lexsort((rows[keep], -scores[keep]))]
    return order[:n]


class ProductSearch:
    """Search a catalogue by text (BM25 + sentence embeddings), personalised by a fitted recommender.

    Building one tokenises and weights the catalogue and, with an encoder, embeds every item and
    indexes the embeddings; :meth:`search` is then read-only and safe from many threads.

    Parameters
    ----------
    catalogue : pandas.DataFrame (or a polars / pyarrow table)
        One row per item.
    text : str or list of str, default "name"
        The text columns searched, joined per item (lists of strings, such as tags, are joined too).
    id : str, default "item_id"
        The item id column; search returns these ids.
    personalise : Recommender, optional
        A fitted persona model. Its ``recommend`` orders the text candidates for a known user.
    weight : float in [0, 1], default 0.2
        Share of the personal rank score in the final score (0: text alone).
    semantic : float in [0, 1], default 0.5
        Share of the embedding cosine in the text relevance (0: BM25 alone, 1: meaning alone).
        Ignored without an encoder.
    encoder : "auto", callable or None, default "auto"
        ``"auto"``: the packaged sentence encoder when installed (``pip install
        "persona-recsys[text]"``), else BM25 alone. A callable maps a list of texts to one vector
        each. ``None``: BM25 alone.
    candidates : int, default 200
        Text candidates the personalising model reorders (and the size of the embedding shortlist).
    k1, b : float, default 1.2 and 0.75
        BM25's term saturation and length normalisation.
    index : {"auto", "exact", "hnsw", "ivf", "ivfpq"}, default "auto"
        The retrieval index over item embeddings (``"auto"``: exact up to 50,000 items, else HNSW).

    Attributes
    ----------
    item_map_ : persona.IdMap
        The catalogue's ids, in row order (``item_map_.ids``).
    vocabulary_ : numpy.ndarray of str
        The sorted words of the catalogue.
    idf_ : numpy.ndarray of float64
        BM25 idf of each word.
    doc_matrix_ : scipy.sparse.csc_matrix, float32, (items, words)
        The BM25 weight of each word in each item.
    embeddings_ : numpy.ndarray (items, dim) or None
        Unit item embeddings, when an encoder was used.
    encoder_name_ : str or None
        ``"all-MiniLM-L6-v2-int8"``, ``"custom"`` or None.

    Examples
    --------
    >>> import pandas as pd
    >>> import persona as ps
    >>> items = pd.DataFrame({"item_id": ["a", "b", "c"],
    ...                       "name": ["Rose Face Serum", "Ocean Shampoo", "Rose Shampoo"]})
    >>> inter = ps.Interactions.from_records([("ann", "a"), ("cem", "a"), ("cem", "c"), ("bob", "b")])
    >>> search = ps.ProductSearch(items, text="name", encoder=None, personalise=ps.ItemKNN().fit(inter),
    ...                           weight=0.5)
    >>> search.search("shampoo")[0].tolist()        # BM25 alone: a tie, in catalogue order
    ['b', 'c']
    >>> search.search("shampoo", user="ann")[0].tolist()   # ann's serum goes with the rose shampoo
    ['c', 'b']
    >>> search.search("shampoo", user="newcomer")[0].tolist()   # unknown to the model: text alone
    ['b', 'c']
    """

    def __init__(self, catalogue: pd.DataFrame | Any, text: str | Sequence[str] = "name", id: str = "item_id", *,
                 personalise: Recommender | None = None, weight: float = DEFAULT_WEIGHT,
                 semantic: float = DEFAULT_SEMANTIC, encoder: str | Callable[[list[str]], np.ndarray] | None = "auto",
                 candidates: int = 200, k1: float = 1.2, b: float = 0.75, index: str = "auto") -> None:
        self._set_params(personalise, weight, semantic, candidates, k1, b, index)
        ids, texts, fields = _catalogue_texts(catalogue, text, id)
        self.text, self.id = fields, id
        self.item_map_ = IdMap(ids)
        if not np.array_equal(self.item_map_.ids, ids):  # pragma: no cover - IdMap keeps the order given
            raise PersonaError("ProductSearch: the item map reordered the ids; please report this")
        self._fit_bm25(texts)
        self._query_encoder = self.encoder_name_ = None
        self.embeddings_ = self._index = None
        enc = self._resolve_encoder(encoder)
        if enc is not None:
            self.embeddings_ = self._embed(enc, texts, None, "catalogue embeddings")
            self._query_encoder = self._query_encoder_of(enc)
            self._build_index()
        log.info("ProductSearch: %d items, %d words, %s", len(ids), len(self.vocabulary_),
                 f"embeddings by {self.encoder_name_}" if self.embeddings_ is not None else "BM25 only")

    # ------------------------------------------------------------------ parameters
    def _set_params(self, personalise, weight, semantic, candidates, k1, b, index) -> None:
        if personalise is not None:
            if not isinstance(personalise, Recommender):
                raise ParameterError(f"personalise: expected a fitted persona Recommender (EASE, ItemKNN, Hybrid, ...), "
                                     f"got {type(personalise).__name__}; fit one on the shop's interactions first")
            if getattr(personalise, "user_map_", None) is None:
                raise NotFittedError(f"personalise: expected a fitted model, got an unfitted "
                                     f"{type(personalise).__name__}; call .fit(interactions) first")
        self.personalise = personalise
        self.weight = check_number(weight, "weight", min=0.0, max=1.0,
                                   hint="the share of the personal score; 0 ranks by text alone")
        self.semantic = check_number(semantic, "semantic", min=0.0, max=1.0,
                                     hint="the share of the embedding cosine in the text relevance; 0 is BM25 alone")
        self.candidates = check_int(candidates, "candidates", min=1, max=100_000)
        self.k1 = check_number(k1, "k1", min=0.0, hint="BM25's usual value is 1.2")
        self.b = check_number(b, "b", min=0.0, max=1.0, hint="BM25's usual value is 0.75")
        if index not in _INDEX_KINDS:
            raise ParameterError(f"index: expected one of {_INDEX_KINDS}, got {index!r}")
        self.index = index

    def _resolve_encoder(self, encoder):
        if encoder is None or encoder is False:
            return None
        if isinstance(encoder, str):
            if encoder != "auto":
                raise ParameterError(f"encoder: expected 'auto', a callable or None, got {encoder!r}")
            from ..onnx.sentence import MINILM, SentenceEncoder, packaged_encoder_available

            if not packaged_encoder_available():
                log.info("ProductSearch: the packaged sentence encoder is not installed; BM25 only "
                         '(pip install "persona-recsys[text]" adds meaning)')
                return None
            self.encoder_name_ = MINILM
            return SentenceEncoder()
        if not callable(encoder):
            raise ParameterError(f"encoder: expected 'auto', a callable (texts -> vectors) or None, got "
                                 f"{type(encoder).__name__}")
        self.encoder_name_ = _CUSTOM
        return encoder

    # ------------------------------------------------------------------ building
    def _fit_bm25(self, texts: list[str]) -> None:
        tokens = [tokenize(t) for t in texts]
        self.vocabulary_ = np.array(sorted({w for ts in tokens for w in ts}), dtype=str)
        self._words = {w: i for i, w in enumerate(self.vocabulary_.tolist())}
        counts = self._counts(tokens, len(self.vocabulary_))
        self.idf_ = bm25_idf(document_frequency(counts), counts.shape[0])
        lengths = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
        self.avg_length_ = float(lengths.mean()) if len(lengths) else 0.0
        self.doc_matrix_ = sp.csc_matrix(apply_bm25(counts, self.idf_, self.avg_length_, self.k1, self.b))

    def _counts(self, tokens: list[list[str]], width: int) -> sp.csr_matrix:
        cols = [[self._words[w] for w in ts if w in self._words] for ts in tokens]
        lens = np.fromiter((len(c) for c in cols), dtype=np.int64, count=len(cols))
        flat = np.fromiter((c for cs in cols for c in cs), dtype=np.int64, count=int(lens.sum()))
        m = sp.csr_matrix((np.ones(len(flat), np.float32), (np.repeat(np.arange(len(cols)), lens), flat)),
                          shape=(len(cols), width), dtype=np.float32)
        m.sum_duplicates()
        return m

    def _query_encoder_of(self, encoder):
        """The encoder of queries: the packaged one on a single thread (one short text is encoded
        faster so, and a web process encodes many at once), a shop's callable as given."""
        if self.encoder_name_ == _CUSTOM:
            return encoder
        from ..onnx.sentence import SentenceEncoder

        return SentenceEncoder(intra_op_threads=1)

    @staticmethod
    def _embed(encoder, texts: list[str], dim: int | None, what: str) -> np.ndarray:
        out = np.asarray(encoder(list(texts)))
        if out.dtype.kind not in "iuf" or out.ndim != 2 or out.shape[0] != len(texts) \
                or (dim is not None and out.shape[1] != dim):
            want = f"({len(texts)}, {dim if dim is not None else 'dim'})"
            raise DataError(f"{what}: expected the encoder to return a float array of shape {want}, got "
                            f"{out.dtype} {out.shape}; the encoder must map a list of texts to one vector each")
        out = out.astype(np.float32)
        if not np.isfinite(out).all():
            raise DataError(f"{what}: expected finite vectors, got NaN or infinity from the encoder")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)

    def _build_index(self) -> None:
        from ..retrieval import make_index

        self._index = make_index(self.embeddings_, metric="ip", kind=self.index)

    # ------------------------------------------------------------------ serving
    @property
    def n_items(self) -> int:
        """Items in the catalogue."""
        return len(self.item_map_)

    def __repr__(self) -> str:
        how = "BM25" + (f" + {self.encoder_name_}" if self.embeddings_ is not None else "")
        who = f", personalise={type(self.personalise).__name__}" if self.personalise is not None else ""
        return f"ProductSearch({self.n_items} items, {how}{who}, weight={self.weight})"

    def search(self, query: str, user: UserId | None = None, n: int = 10, *, items: Ids | None = None,
               exclude: Ids | None = None) -> tuple[np.ndarray, Float32Array]:
        """The ``n`` items that best answer ``query``, for ``user`` when given.

        Parameters
        ----------
        query : str
            What the customer typed.
        user : external user id, optional
            Personalise for this user when the search has a ``personalise`` model that knows them;
            otherwise (and for ``None``) the text ranking alone.
        n : int, default 10
        items : sequence of item ids, optional
            Allow-list: search only among these (a category page, the items in stock).
        exclude : sequence of item ids, optional
            Deny-list: never return these. Unknown ids in either list are ignored.

        Returns
        -------
        items : 1-D array of item ids, best first
        scores : 1-D float32 array
            The final score (text relevance blended with the personal rank score), non-increasing.

        Fewer than ``n`` items come back only when fewer match: without an encoder only items
        sharing a word with the query match; a query without words (``""``, ``"!"``) matches none.

        Examples
        --------
        >>> import pandas as pd
        >>> import persona as ps
        >>> items = pd.DataFrame({"sku": [1, 2, 3], "title": ["Red Shoe", "Blue Shoe", "Red Hat"]})
        >>> search = ps.ProductSearch(items, text="title", id="sku", encoder=None)
        >>> ids, scores = search.search("red shoe", n=5)
        >>> ids.tolist(), bool(scores[0] == 1.0)
        ([1, 2, 3], True)
        >>> search.search("red shoe", exclude=[1])[0].tolist()
        [2, 3]
        """
        if not isinstance(query, str):
            raise ParameterError(f"query: expected a string, got {type(query).__name__}; pass the text the customer "
                                 "typed")
        n = check_n(n)
        allowed = self._allowed(items, exclude)
        rows, text = self._text_candidates(query, max(n, self.candidates), allowed)
        if not len(rows):
            return self.item_map_.ids[:0], np.zeros(0, dtype=np.float32)
        score = text
        if user is not None and self.personalise is not None and self.weight > 0:
            personal = self._personal(user, rows, text)
            if personal is not None:
                score = (1.0 - self.weight) * text + self.weight * personal
        top = _best_first(score, rows, n)
        return self.item_map_.ids[rows[top]], score[top].astype(np.float32)

    def _allowed(self, items, exclude) -> np.ndarray | None:
        """A bool per item (False: filtered out), or None without filters."""
        if items is None and exclude is None:
            return None
        ok = np.ones(self.n_items, dtype=bool)
        if items is not None:
            ok[:] = False
            idx = self._lookup(items, "items")
            ok[idx[idx >= 0]] = True
        if exclude is not None:
            idx = self._lookup(exclude, "exclude")
            ok[idx[idx >= 0]] = False
        return ok

    def _lookup(self, ids, what: str) -> np.ndarray:
        if isinstance(ids, (str, bytes)) or isinstance(ids, numbers.Number):
            raise ParameterError(f"{what}: expected a list of item ids, got one {type(ids).__name__}; wrap it in a list")
        ids = list(ids) if not isinstance(ids, np.ndarray) else ids
        if not len(ids):
            return np.zeros(0, dtype=np.int64)
        return self.item_map_.lookup(normalize_ids(ids, what=what))

    def bm25(self, query: str) -> np.ndarray:
        """The BM25 score of every item for ``query`` (float64, one per catalogue row; 0: no shared word).

        >>> import pandas as pd
        >>> import persona as ps
        >>> s = ps.ProductSearch(pd.DataFrame({"item_id": ["a", "b"], "name": ["red shoe", "blue hat"]}),
        ...                      encoder=None)
        >>> [round(float(x), 3) for x in s.bm25("red red cap")]
        [1.386, 0.0]
        """
        if not isinstance(query, str):
            raise ParameterError(f"query: expected a string, got {type(query).__name__}")
        words = [self._words[w] for w in tokenize(query) if w in self._words]
        if not words:
            return np.zeros(self.n_items, dtype=np.float64)
        cols, counts = np.unique(np.asarray(words, dtype=np.int64), return_counts=True)
        return np.asarray(self.doc_matrix_[:, cols] @ counts.astype(np.float64), dtype=np.float64).ravel()

    def _text_candidates(self, query: str, width: int, allowed) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the ``width`` best items by text relevance (unordered) and their relevance in [0, 1]."""
        bm = self.bm25(query)
        if allowed is not None:
            bm[~allowed] = 0.0
        hits = np.flatnonzero(bm > 0)
        if len(hits) > width:
            hits = hits[np.argpartition(-bm[hits], width - 1)[:width]]
        top_bm = bm[hits].max() if len(hits) else 0.0
        if self._index is None or self.semantic == 0 or not tokenize(query):  # no words: no meaning either
            rel = bm[hits] / top_bm if top_bm > 0 else np.zeros(len(hits))
            return hits, rel
        q = self._embed(self._query_encoder, [query], self.embeddings_.shape[1], "query embedding")
        mask = None if allowed is None else allowed
        near, _ = self._index.search(q, n=min(width, self.n_items), mask=mask)
        near = near[0][near[0] >= 0]
        rows = np.union1d(hits, near)
        cos = np.clip(self.embeddings_[rows] @ q[0], 0.0, None).astype(np.float64)
        top_cos = cos.max() if len(cos) else 0.0
        rel = (1.0 - self.semantic) * (bm[rows] / top_bm if top_bm > 0 else np.zeros(len(rows))) \
            + self.semantic * (cos / top_cos if top_cos > 0 else np.zeros(len(rows)))
        keep = rel > 0
        return rows[keep], rel[keep]

    def _personal(self, user, rows: np.ndarray, text: np.ndarray) -> np.ndarray | None:
        """Rank scores of the model's order of the top ``candidates`` rows for ``user`` (0 for the rest);
        None when the model does not know the user."""
        model = self.personalise
        try:
            known = model.user_map_.index_of(user) >= 0
        except DataError:
            known = False
        if not known:
            return None
        c = min(self.candidates, len(rows))
        shortlist = _best_first(text, rows, c)
        ranked, _ = model.recommend(user, n=c, filter_seen=False, items=self.item_map_.ids[rows[shortlist]])
        out = np.zeros(len(rows), dtype=np.float64)
        if len(ranked):
            pos = {r: i for i, r in enumerate(rows.tolist())}
            at = np.array([pos[r] for r in self.item_map_.lookup(ranked).tolist()], dtype=np.int64)
            out[at] = _rank_scores(c)[: len(at)]
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: PathLike, *, key: bytes | str | None = None) -> Path:
        """Write the search as a persona artifact (JSON manifest + ``.npy``; no pickle).

        Stored: the item ids, the BM25 vocabulary, idf and document matrix, the item embeddings
        and the settings. Not stored: the personalising model (save it with its own ``save``, pass
        it to :meth:`load`) and a custom encoder (pass it to :meth:`load` again).
        """
        meta = {"class": "ProductSearch", "text": self.text, "id": self.id, "weight": self.weight,
                "semantic": self.semantic, "candidates": self.candidates, "k1": self.k1, "b": self.b,
                "index": self.index, "avg_length": self.avg_length_, "encoder": self.encoder_name_,
                "personalised": self.personalise is not None}
        arrays = {"item_ids": self.item_map_.ids, "vocabulary": self.vocabulary_, "idf": self.idf_,
                  **pack_csr("doc_matrix", sp.csr_matrix(self.doc_matrix_))}
        if self.embeddings_ is not None:
            arrays["embeddings"] = self.embeddings_
        return write_artifact(path, _KIND, meta, arrays, key=key)

    @classmethod
    def load(cls, path: PathLike, *, personalise: Recommender | None = None,
             encoder: Callable[[list[str]], np.ndarray] | None = None, weight: float | None = None,
             key: bytes | str | None = None) -> ProductSearch:
        """Read a search written by :meth:`save` (checksums verified; no code runs from the file).

        Parameters
        ----------
        path : str or Path
        personalise : Recommender, optional
            The personalising model, loaded on its own (``ps.load``); without it, text search only.
        encoder : callable, optional
            The encoder of a search built with a custom one (the packaged encoder is found by itself).
        weight : float, optional
            Override the saved ``weight``.
        key : bytes or str, optional
            Require the artifact's HMAC signature (``save(path, key=...)``).

        Examples
        --------
        >>> import os, tempfile
        >>> import pandas as pd
        >>> import persona as ps
        >>> s = ps.ProductSearch(pd.DataFrame({"item_id": ["a", "b"], "name": ["red shoe", "blue hat"]}),
        ...                      encoder=None)
        >>> path = s.save(os.path.join(tempfile.mkdtemp(), "search"))
        >>> ps.ProductSearch.load(path).search("hat")[0].tolist()
        ['b']
        """
        manifest, arrays = read_artifact(path, key=key)
        meta = manifest.get("meta", {})
        if manifest.get("kind") != _KIND or meta.get("class") != "ProductSearch":
            raise ArtifactError(f"{path}: expected a ProductSearch artifact, got a {manifest.get('kind')!r} one; "
                                "load models with ps.load and indexes with ps.retrieval.load_index")
        self = cls.__new__(cls)
        try:
            self._restore(meta, arrays, personalise, weight)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, PersonaError):
                raise
            raise ArtifactError(f"{path}: the ProductSearch artifact is malformed ({type(e).__name__}: {e}); "
                                "save the search again") from None
        self._restore_encoder(meta.get("encoder"), encoder, path)
        if meta.get("personalised") and personalise is None:
            log.warning("ProductSearch.load: the search was saved with a personalising model; none was passed, "
                        "so it ranks by text alone (pass personalise=ps.load(model_path))")
        return self

    def _restore(self, meta: dict, arrays: dict, personalise, weight) -> None:
        self._set_params(personalise, meta["weight"] if weight is None else weight, meta["semantic"],
                         meta["candidates"], meta["k1"], meta["b"], meta["index"])
        self.text, self.id = list(meta["text"]), str(meta["id"])
        ids = arrays["item_ids"]
        self.item_map_ = IdMap(normalize_ids(np.asarray(ids), what="item_ids"))
        n = len(ids)
        self.vocabulary_ = check_array("vocabulary", arrays["vocabulary"], kind="U", ndim=1)
        self.idf_ = check_array("idf", arrays["idf"], ndim=1, shape=(len(self.vocabulary_),))
        self.avg_length_ = float(meta["avg_length"])
        self.doc_matrix_ = sp.csc_matrix(unpack_csr("doc_matrix", arrays, shape=(n, len(self.vocabulary_))))
        self._words = {w: i for i, w in enumerate(self.vocabulary_.tolist())}
        if len(self._words) != len(self.vocabulary_):
            raise ArtifactError("ProductSearch artifact: expected a vocabulary of distinct words; save the search again")
        self.embeddings_ = None
        if "embeddings" in arrays:
            self.embeddings_ = np.ascontiguousarray(check_array("embeddings", arrays["embeddings"], shape=(n, None)),
                                                    dtype=np.float32)
        self._query_encoder = self._index = None
        self.encoder_name_ = meta.get("encoder")

    def _restore_encoder(self, name, encoder, path) -> None:
        if self.embeddings_ is None:
            return
        if encoder is not None:
            if not callable(encoder):
                raise ParameterError(f"encoder: expected a callable, got {type(encoder).__name__}")
            self._query_encoder = encoder
        elif name == _CUSTOM:
            raise ParameterError(f"{path}: the search embedded its items with your own encoder, which is not saved; "
                                 "pass ProductSearch.load(path, encoder=the_same_callable)")
        else:
            from ..onnx.sentence import SentenceEncoder, packaged_encoder_available

            if not packaged_encoder_available():
                raise PersonaError(f"{path}: the search was built with the packaged sentence encoder, which is not "
                                   'installed here; pip install "persona-recsys[text]"')
            self._query_encoder = SentenceEncoder(intra_op_threads=1)
        self._build_index()
