"""Re-ranking: reorder a model's candidates for diversity, calibration or business rules.

A ranker scores items one by one; a page of ten is a *list*, and some of its qualities -- ten
near-copies of one lipstick, a list with none of the categories the user buys -- are properties of
the list, not of any item. A re-ranker takes the ranker's top ``c`` candidates and picks the ``n``
shown, greedily, so list-level goals can trade against relevance.

The re-ranker protocol
----------------------
A re-ranker subclasses :class:`Reranker` and works on item *indices* (the model's columns, as the
kernels do; ids are mapped at the edges by :class:`Reranked`):

``fit(model) -> self``
    Learn what it needs from a fitted persona model: ``item_map_``, ``user_items_`` and, when the
    model has them, ``item_factors_`` (or ``similarity_``). Cheap: a normalisation, a lookup.
    :class:`Reranked` fits a *copy* (:meth:`Reranker.clone`) of the re-ranker it is given, so one
    configured re-ranker may wrap several models.
``rerank(histories, cand_idx, cand_scores, n) -> (idx, scores)``
    ``histories``: one int array of item indices per row (the user's training items or the
    request's history; may be empty). ``cand_idx``: (m, c) int64 candidates, best first, valid
    ones first, padded with -1. ``cand_scores``: (m, c) float32, padded with -inf. Returns two
    (m, n) arrays holding exactly ``min(n, valid candidates)`` items per row, padded with -1 /
    -inf. Only candidates come back, so the filters that made the candidates still hold. The
    scores returned are the re-ranker's own value of each pick (MMR's marginal relevance,
    Calibrated's marginal objective, Rules' rank score), non-increasing along the row as every
    persona answer is -- not the ranker's scores, which no longer follow the order. Read-only:
    safe from many threads at once.
``extra_candidates() -> int array``
    Item indices that must be among the candidates whenever the request's filters allow them
    (pinned items); empty for most re-rankers. :class:`Reranked` adds them.
``state() -> (meta, arrays)`` / ``from_state(meta, arrays)``
    What a saved model stores: JSON-able ``meta`` and plain numpy ``arrays`` (no pickle). Loading
    looks the class up by name among the registered re-rankers (every subclass registers itself),
    so it never runs code from the file; the loaded re-ranker is then fitted against the loaded
    model again.

A list of re-rankers is a :class:`Pipeline`: every stage but the last re-orders the whole candidate
list, the last one cuts it to ``n``.

References
----------
Carbonell & Goldstein, "The use of MMR, diversity-based reranking for reordering documents and
producing summaries", SIGIR 1998. Steck, "Calibrated recommendations", RecSys 2018.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from .._validate import MAX_N, check_int, check_n, check_number, unknown_keyword_message
from ..data.idmap import IdMap, normalize_ids
from ..evaluation.fairness import group_codes, popularity_groups
from ..errors import ArtifactError, DataError, NotFittedError, ParameterError, UnsupportedError
from ..io.artifact import check_array, pack_csr, unpack_csr
from ..models.base import PAD_SCORE, Recommender
from ..typing import ArrayLike, Float32Array, IntArray, ItemId

__all__ = ["Reranker", "Pipeline", "MMR", "Calibrated", "ExposureFloor", "Reranked", "as_reranker", "reranker_state",
           "reranker_from_state", "category_codes", "check_candidates"]

_MAX_PIPELINE_DEPTH = 4
_BLOCK_CELLS = 1 << 22  # float32 cells of pairwise similarities one block of rows may hold (16 MB)
_MAX_GRAM = 4096  # distinct candidates per block when similarities come from sparse vectors (64 MB Gram)
_INNER = "inner__"  # prefix of the wrapped model's arrays and files inside a Reranked artifact
_RERANKER = "reranker__"


# ---------------------------------------------------------------------------------------------- protocol
def check_candidates(histories, cand_idx, cand_scores, n) -> tuple[list, np.ndarray, np.ndarray, int]:
    """The arguments of :meth:`Reranker.rerank`, checked and in canonical dtypes.

    Cheap (shapes and dtypes only), so every ``rerank`` can call it on the serving path.
    """
    n = check_n(n)
    idx = np.asarray(cand_idx)
    scores = np.asarray(cand_scores)
    if idx.ndim != 2 or idx.dtype.kind not in "iu":
        raise ParameterError(f"rerank: expected cand_idx as a 2-D int array (rows x candidates), got "
                             f"{idx.dtype} array of shape {idx.shape}; pad short rows with -1")
    if scores.shape != idx.shape:
        raise ParameterError(f"rerank: expected cand_scores of the shape of cand_idx {idx.shape}, got "
                             f"{scores.shape}; pass one score per candidate (-inf for padding)")
    if histories is None or isinstance(histories, (str, bytes)) or len(histories) != idx.shape[0]:
        got = type(histories).__name__ if histories is None or isinstance(histories, (str, bytes)) \
            else f"{len(histories)} histories"
        raise ParameterError(f"rerank: expected one history (int array of item indices) per row "
                             f"({idx.shape[0]}), got {got}; pass an empty array for a row without one")
    return list(histories), idx.astype(np.int64, copy=False), scores.astype(np.float32, copy=False), n


def _normalised_relevance(idx: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(valid mask, relevance min-max scaled to [0, 1] per row over the valid candidates).

    A row whose valid scores are all equal gets relevance 1 everywhere (ties keep the given order).
    """
    valid = idx >= 0
    s = scores.astype(np.float64)
    lo = np.where(valid, s, np.inf).min(axis=1, keepdims=True)
    hi = np.where(valid, s, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(span > 0, (s - lo) / np.where(span > 0, span, 1.0), 1.0)
    return valid, np.where(valid, rel, 0.0)


def _gather(idx: np.ndarray, picks: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates at column ``picks`` (-1 = nothing) of each row, with the picks' values made
    non-increasing (a running minimum: a no-op unless a later pick was worth more)."""
    rows = np.arange(idx.shape[0])[:, None]
    got = picks >= 0
    out_i = np.where(got, idx[rows, np.maximum(picks, 0)], -1).astype(np.int64)
    vals = np.minimum.accumulate(np.where(got, values, np.inf), axis=1) if values.size else values
    return out_i, np.where(got, vals, PAD_SCORE).astype(np.float32)


def _history_matrix(histories: list, n_items: int) -> sp.csr_matrix:
    """One 0/1 CSR row per history (indices outside the catalogue dropped)."""
    lens = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    flat = np.concatenate([np.asarray(h, dtype=np.int64).reshape(-1) for h in histories]) if lens.sum() \
        else np.zeros(0, np.int64)
    rows = np.repeat(np.arange(len(histories)), lens)
    keep = (flat >= 0) & (flat < n_items)
    m = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], flat[keep])),
                      shape=(len(histories), n_items))
    m.sum_duplicates()
    return m


class Reranker:
    """Base class of re-rankers (see the module docstring for the protocol).

    Subclasses store their keyword arguments unchanged in ``__init__`` (scikit-learn style), learn
    in :meth:`fit` (attributes ending in ``_``) and implement :meth:`rerank`. Each subclass
    registers under its class name, which is all a saved model names.
    """

    _registry: dict[str, type] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Reranker._registry[cls.__name__] = cls

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, as given."""
        return {name: getattr(self, name) for name in self._param_names()}

    def clone(self) -> "Reranker":
        """A new, unfitted re-ranker with the same arguments."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        def show(v):
            return f"<array {getattr(v, 'shape', '')}>" if isinstance(v, np.ndarray) or sp.issparse(v) else repr(v)
        return f"{type(self).__name__}({', '.join(f'{k}={show(v)}' for k, v in self.get_params().items())})"

    def fit(self, model: Recommender) -> "Reranker":
        """Learn what the re-ranker needs from a fitted model; returns ``self``."""
        _check_model(model)
        self.n_items_ = len(model.item_map_)
        return self

    def _check_fitted(self) -> None:
        if getattr(self, "n_items_", None) is None:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(model) first, or wrap "
                                 "the model: ps.ranking.Reranked(model, reranker)")

    def rerank(self, histories: Sequence[ArrayLike], cand_idx: ArrayLike, cand_scores: ArrayLike,
               n: int) -> tuple[IntArray, Float32Array]:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_candidates(self) -> IntArray:
        """Item indices that must be candidates when the request's filters allow them (none)."""
        return np.zeros(0, dtype=np.int64)

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able meta, arrays) to save; the default stores the (JSON-able) constructor arguments."""
        return {"params": self.get_params()}, {}

    @classmethod
    def from_state(cls, meta: dict, arrays: Mapping[str, np.ndarray]) -> "Reranker":
        """The (unfitted) re-ranker that :meth:`state` describes."""
        params = meta.get("params", {})
        if not isinstance(params, dict):
            raise ArtifactError(f"{cls.__name__}: stored parameters are not an object; save the model again")
        return cls(**params)


def _check_model(model) -> None:
    if not isinstance(model, Recommender) or getattr(model, "item_map_", None) is None:
        raise NotFittedError(f"re-ranker fit: expected a fitted persona model, got {type(model).__name__}"
                             f"{'' if isinstance(model, Recommender) else ' (not a persona Recommender)'}; "
                             "call model.fit(interactions) first")


def as_reranker(obj) -> Reranker:
    """``obj`` as one re-ranker: a :class:`Reranker` as is, a list or tuple of them as a :class:`Pipeline`."""
    if isinstance(obj, Reranker):
        return obj
    if isinstance(obj, (list, tuple)):
        return Pipeline(list(obj))
    raise ParameterError(f"reranker: expected a persona re-ranker (e.g. ps.ranking.MMR()) or a list of them, got "
                         f"{type(obj).__name__}; pass e.g. [ps.ranking.MMR(), ps.ranking.Rules(...)]")


def reranker_state(reranker: Reranker) -> tuple[dict, dict[str, np.ndarray]]:
    """``({"class": name, "meta": meta}, arrays)`` of a re-ranker, for an artifact."""
    meta, arrays = reranker.state()
    return {"class": type(reranker).__name__, "meta": meta}, dict(arrays)


def reranker_from_state(desc, arrays: Mapping[str, np.ndarray], *, depth: int = 0) -> Reranker:
    """The re-ranker a saved description names; only registered classes can be named."""
    if not isinstance(desc, dict) or not isinstance(desc.get("meta", {}), dict):
        raise ArtifactError("the saved re-ranker is not an object; the artifact is malformed, save the model again")
    name = desc.get("class")
    cls = Reranker._registry.get(name) if isinstance(name, str) and not name.startswith("_") else None
    if cls is None:
        raise ArtifactError(f"the artifact holds a re-ranker of class {name!r}, which this persona does not know; "
                            "upgrade persona or check the artifact")
    if depth >= _MAX_PIPELINE_DEPTH:
        raise ArtifactError(f"re-rankers nest deeper than {_MAX_PIPELINE_DEPTH}; the artifact is malformed")
    try:
        if cls is Pipeline:
            return Pipeline.from_state(desc.get("meta", {}), arrays, depth=depth)
        return cls.from_state(desc.get("meta", {}), arrays)
    except (ArtifactError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - whatever malformed state trips, it is refused cleanly
        raise ArtifactError(f"the saved {name} is malformed ({type(e).__name__}: {e}); save the model again") from None


# ---------------------------------------------------------------------------------------------- pipeline
class Pipeline(Reranker):
    """Re-rankers applied in turn: each but the last re-orders all candidates, the last cuts to ``n``.

    Parameters
    ----------
    steps : list of Reranker
        E.g. ``[MMR(diversity=0.3), Rules(pins=...)]``: diversify, then apply the business rules.

    Examples
    --------
    >>> import persona as ps
    >>> shop = ps.datasets.synthetic_shop(n_users=200, n_items=60, seed=0)
    >>> model = ps.EASE().fit(shop.interactions)
    >>> pinned = model.item_map_.ids[5]
    >>> steps = [ps.ranking.MMR(diversity=0.3), ps.ranking.Rules(pins=[ps.ranking.Pin(pinned, 0)])]
    >>> top = ps.ranking.Reranked(model, steps).recommend(model.user_map_.ids[0], n=5, filter_seen=False)[0]
    >>> top[0] == pinned, len(top)
    (True, 5)
    """

    def __init__(self, steps: Sequence[Reranker] = ()) -> None:
        self.steps = steps

    def fit(self, model: Recommender) -> "Pipeline":
        if not isinstance(self.steps, (list, tuple)) or not self.steps:
            raise ParameterError(f"Pipeline: expected a non-empty list of re-rankers, got {self.steps!r}; "
                                 "pass e.g. [ps.ranking.MMR(), ps.ranking.Rules(...)]")
        self.steps_ = [as_reranker(s).clone().fit(model) for s in self.steps]
        return super().fit(model)

    def rerank(self, histories, cand_idx, cand_scores, n):
        self._check_fitted()
        histories, idx, scores, n = check_candidates(histories, cand_idx, cand_scores, n)
        for i, step in enumerate(self.steps_):
            last = i == len(self.steps_) - 1
            idx, scores = step.rerank(histories, idx, scores, n if last else max(1, idx.shape[1]))
        return idx, scores

    def extra_candidates(self) -> IntArray:
        self._check_fitted()
        return np.unique(np.concatenate([s.extra_candidates() for s in self.steps_] + [np.zeros(0, np.int64)]))

    def state(self):
        metas, arrays = [], {}
        for i, step in enumerate(self.steps_ if hasattr(self, "steps_") else [as_reranker(s) for s in self.steps]):
            meta, arr = reranker_state(step)
            metas.append(meta)
            arrays.update({f"{i}__{k}": v for k, v in arr.items()})
        return {"steps": metas}, arrays

    @classmethod
    def from_state(cls, meta, arrays, *, depth: int = 0):
        steps = meta.get("steps")
        if not isinstance(steps, list) or not steps:
            raise ArtifactError("the saved Pipeline has no steps; the artifact is malformed, save the model again")
        out = []
        for i, desc in enumerate(steps):
            prefix = f"{i}__"
            out.append(reranker_from_state(desc, {k[len(prefix):]: v for k, v in arrays.items()
                                                  if k.startswith(prefix)}, depth=depth + 1))
        return cls(out)


# ---------------------------------------------------------------------------------------------- MMR
class MMR(Reranker):
    """Maximal marginal relevance (Carbonell & Goldstein 1998): relevant items unlike those above them.

    Greedy: the first pick is the most relevant candidate; each next pick maximises
    ``(1 - diversity) * relevance - diversity * max_similarity_to_the_picked``. Relevance is the
    ranker's score min-max scaled to [0, 1] within the row, so ``diversity`` means the same for
    every model; ``diversity=0`` keeps the ranker's order. Similarity is the cosine of two items'
    vectors. Vectorised over rows; the loop runs over the ``n`` picks only.

    Parameters
    ----------
    diversity : float in [0, 1], default 0.2
        The weight λ of the similarity penalty.
    similarity : {"auto", "factors", "cooccurrence"} or array (n_items, f), default "auto"
        Item vectors whose cosines are the similarities. ``"factors"``: the model's
        ``item_factors_``; ``"cooccurrence"``: the columns of ``user_items_`` (0/1; two items are
        alike when the same users took them); ``"auto"``: factors when the model has them, else
        co-occurrence; or a dense or sparse item-feature matrix, one row per model item.

    Examples
    --------
    >>> import persona as ps
    >>> shop = ps.datasets.synthetic_shop(n_users=200, n_items=60, seed=0)
    >>> model = ps.EASE().fit(shop.interactions)
    >>> diverse = ps.ranking.Reranked(model, ps.ranking.MMR(diversity=0.5), candidates=30)
    >>> items, scores = diverse.recommend(model.user_map_.ids[0], n=5)
    >>> len(items)
    5
    """

    def __init__(self, diversity: float = 0.2, similarity: str | ArrayLike = "auto") -> None:
        self.diversity = diversity
        self.similarity = similarity

    def fit(self, model: Recommender) -> "MMR":
        _check_model(model)
        self._lambda = check_number(self.diversity, "MMR: diversity", min=0.0, max=1.0,
                                    hint="0 keeps the ranker's order, 1 only avoids similar items")
        n_items = len(model.item_map_)
        sim = self.similarity
        if isinstance(sim, str):
            if sim not in ("auto", "factors", "cooccurrence"):
                raise ParameterError(f"MMR: similarity: expected 'auto', 'factors', 'cooccurrence' or an item-feature "
                                     f"matrix, got {sim!r}")
            factors = getattr(model, "item_factors_", None)
            if sim == "factors" and factors is None:
                raise ParameterError(f"MMR: similarity='factors' needs a model with item_factors_, got a "
                                     f"{type(model).__name__}; use similarity='cooccurrence' or 'auto'")
            if factors is not None and sim != "cooccurrence":
                vectors = np.asarray(factors, dtype=np.float32)
            else:
                vectors = sp.csr_matrix(model.user_items_.T, dtype=np.float32)
                vectors.data[:] = 1.0  # co-occurrence of users, not of weights
        else:
            vectors = sp.csr_matrix(sim, dtype=np.float32) if sp.issparse(sim) else np.asarray(sim, dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != n_items:
                raise ParameterError(f"MMR: similarity: expected an item-feature matrix with one row per model item "
                                     f"({n_items}), got shape {vectors.shape}; align its rows with model.item_map_.ids")
            data = vectors.data if sp.issparse(vectors) else vectors
            if not np.isfinite(data).all():
                raise ParameterError("MMR: similarity: expected finite features, got NaN or infinity; fill them first")
        if vectors.shape[0] != n_items:
            raise ParameterError(f"MMR: the model's item vectors have {vectors.shape[0]} rows for {n_items} items")
        self.vectors_ = _unit_rows(vectors)
        return super().fit(model)

    def rerank(self, histories, cand_idx, cand_scores, n):
        self._check_fitted()
        histories, idx, scores, n = check_candidates(histories, cand_idx, cand_scores, n)
        m, c = idx.shape
        if idx.size and idx.max() >= self.n_items_:
            raise ParameterError(f"MMR: candidate index {idx.max()} outside the {self.n_items_} items it was fitted on")
        valid, rel = _normalised_relevance(idx, scores)
        k = min(n, c)
        picks = np.full((m, k), -1, dtype=np.int64)
        values = np.zeros((m, k), dtype=np.float64)
        if sp.issparse(self.vectors_):  # a Gram matrix of the block's distinct candidates: <= 4096 of them
            step = max(1, _MAX_GRAM // max(1, c))
        else:  # (rows, c, d) gathered vectors and (rows, c, c) cosines
            step = max(1, _BLOCK_CELLS // max(1, c * max(c, self.vectors_.shape[1])))
        for s in range(0, m, step):
            sl = slice(s, min(s + step, m))
            picks[sl], values[sl] = self._greedy(rel[sl], valid[sl],
                                                 _pair_similarity(self.vectors_, idx[sl], valid[sl]), k)
        return _pad(*_gather(idx, picks, values), n)

    def _greedy(self, rel: np.ndarray, valid: np.ndarray, sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Column picks (rows x k) of greedy MMR over a block, and their MMR values; ``sim`` is (rows, c, c)."""
        lam = self._lambda
        rows = np.arange(rel.shape[0])
        available = valid.copy()
        penalty = np.zeros_like(rel)  # max similarity to the picked; 0 while nothing is picked
        picks = np.full((rel.shape[0], k), -1, dtype=np.int64)
        values = np.zeros((rel.shape[0], k), dtype=np.float64)
        for t in range(k):
            objective = np.where(available, (1.0 - lam) * rel - lam * penalty, -np.inf)
            p = objective.argmax(axis=1)
            has = available[rows, p]
            picks[has, t] = p[has]
            values[:, t] = objective[rows, p]
            available[rows[has], p[has]] = False
            row_sim = sim[rows, p].astype(np.float64)
            penalty = row_sim if t == 0 else np.maximum(penalty, row_sim)
        return picks, values

    def state(self):
        if isinstance(self.similarity, str):
            return {"params": {"diversity": float(self.diversity), "similarity": self.similarity}}, {}
        if sp.issparse(self.similarity):
            return ({"params": {"diversity": float(self.diversity)}, "features": "sparse"},
                    pack_csr("features", self.similarity))
        return ({"params": {"diversity": float(self.diversity)}, "features": "dense"},
                {"features": np.asarray(self.similarity, dtype=np.float32)})

    @classmethod
    def from_state(cls, meta, arrays):
        params = dict(meta.get("params", {}))
        kind = meta.get("features")
        if kind == "sparse":
            params["similarity"] = unpack_csr("features", arrays)
        elif kind == "dense":
            params["similarity"] = check_array("features", arrays["features"], kind="f", ndim=2)
        elif kind is not None:
            raise ArtifactError(f"MMR: unknown stored feature kind {kind!r}; save the model again")
        return cls(**params)


def _unit_rows(v):
    """Rows scaled to unit length (zero rows stay zero), so a dot product is a cosine."""
    if sp.issparse(v):
        norms = np.sqrt(np.asarray(v.multiply(v).sum(axis=1)).ravel())
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ v, dtype=np.float32)
    norms = np.linalg.norm(v.astype(np.float64), axis=1, keepdims=True)
    return (v / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _pair_similarity(vectors, idx: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(rows, c, c) cosines between the candidates of each row (0 where a candidate is padding)."""
    safe = np.where(valid, idx, 0)
    if not sp.issparse(vectors):
        x = vectors[safe] * valid[:, :, None]
        return np.matmul(x, x.transpose(0, 2, 1))
    # sparse vectors: one Gram matrix of the block's distinct candidates, then a gather
    uniq, inv = np.unique(safe[valid], return_inverse=True)
    sub = vectors[uniq]
    gram = np.asarray((sub @ sub.T).todense(), dtype=np.float32)
    pos = np.zeros(idx.shape, dtype=np.int64)
    pos[valid] = inv.reshape(-1)
    out = gram[pos[:, :, None], pos[:, None, :]]
    out *= (valid[:, :, None] & valid[:, None, :])
    return out


def _pad(idx: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    m, w = idx.shape
    if w >= n:
        return idx[:, :n], scores[:, :n]
    out_i = np.full((m, n), -1, dtype=np.int64)
    out_s = np.full((m, n), PAD_SCORE, dtype=np.float32)
    out_i[:, :w], out_s[:, :w] = idx, scores
    return out_i, out_s


# ---------------------------------------------------------------------------------------------- categories
def category_codes(item_categories, item_map: IdMap, what: str = "item_categories") -> tuple[np.ndarray, np.ndarray]:
    """``(codes, labels)``: one category code per model item (-1 unknown) and the labels they index.

    ``item_categories`` is an array with one category per model item (ints, -1 for unknown; or
    strings, ``""`` / None for unknown), or a dict ``{item id: category}`` (items left out are
    unknown). Labels are all ints or all strings. (:func:`persona.evaluation.group_codes`, which
    the fairness metrics share.)
    """
    return group_codes(item_categories, item_map, what, kind=("category", "categories", "model item"))


def categories_state(item_categories, codes: np.ndarray, labels: np.ndarray,
                     prefix: str = "categories") -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) storing categories in the form they were given: a dict's ids and labels, or
    one code per item and the labels."""
    unknown = "" if labels.dtype.kind == "U" else -1
    if isinstance(item_categories, Mapping):
        keys = normalize_ids(list(item_categories.keys()), what="item_categories keys") if item_categories \
            else np.zeros(0, np.int64)
        values = [unknown if v is None else v for v in item_categories.values()]
        vals = np.asarray(values, dtype=labels.dtype if len(labels) else None) if values else np.zeros(0, np.int64)
        return {"form": "dict"}, {f"{prefix}.keys": keys, f"{prefix}.values": vals}
    return {"form": "array"}, {f"{prefix}.codes": codes.astype(np.int64), f"{prefix}.labels": np.asarray(labels)}


def categories_from_state(meta: Mapping, arrays: Mapping[str, np.ndarray], prefix: str = "categories"):
    """Inverse of :func:`categories_state`: the ``item_categories`` argument as it was given."""
    if meta.get("form") == "dict":
        keys = check_array(f"{prefix}.keys", arrays[f"{prefix}.keys"], kind="iuU", ndim=1)
        values = check_array(f"{prefix}.values", arrays[f"{prefix}.values"], kind="iuU", shape=(len(keys),))
        return dict(zip(keys.tolist(), values.tolist()))
    codes = check_array(f"{prefix}.codes", arrays[f"{prefix}.codes"], kind="iu", ndim=1)
    labels = check_array(f"{prefix}.labels", arrays[f"{prefix}.labels"], kind="iuU", ndim=1)
    if codes.size and (codes.min() < -1 or codes.max() >= len(labels)):
        raise ArtifactError(f"{prefix}.codes outside [-1, {len(labels)}); the artifact is malformed")
    unknown = "" if labels.dtype.kind == "U" else -1
    out = np.full(len(codes), unknown, dtype=labels.dtype if len(labels) else np.int64)
    out[codes >= 0] = labels[codes[codes >= 0]]
    return out


# ---------------------------------------------------------------------------------------------- calibration
class Calibrated(Reranker):
    """Calibrated re-ranking (Steck 2018): lists whose category mix matches the user's history.

    ``p`` is the category distribution of the user's history (each item counts once), ``q`` that of
    the list, smoothed as in the paper: ``q~ = (1 - alpha) q + alpha p``. Greedily, each pick
    maximises ``(1 - weight) * sum(relevance of the list) - weight * KL(p || q~)``; relevance is
    the ranker's score min-max scaled to [0, 1] within the row (so ``weight`` means the same for
    every model). Items of unknown category form one more category. A row without history has no
    ``p`` to match: it keeps the ranker's order. Vectorised over rows; the loop runs over the picks.

    Parameters
    ----------
    item_categories : array (one category per model item) or dict {item id: category}
        Int categories with -1 for unknown, or strings with "" / None for unknown.
    weight : float in [0, 1], default 0.5
        λ of the paper: 0 keeps the ranker's order, 1 only calibrates.
    alpha : float in (0, 1), default 0.01
        The smoothing of ``q`` (the paper's 0.01), which keeps the KL finite.

    Examples
    --------
    >>> import persona as ps
    >>> shop = ps.datasets.synthetic_shop(n_users=200, n_items=60, seed=0)
    >>> model = ps.EASE().fit(shop.interactions)
    >>> calibrated = ps.ranking.Calibrated(shop.item_categories(model.item_map_), weight=0.7)
    >>> items, _ = ps.ranking.Reranked(model, calibrated).recommend(model.user_map_.ids[0], n=5)
    >>> len(items)
    5
    """

    def __init__(self, item_categories: ArrayLike | Mapping[ItemId, Any] = None, weight: float = 0.5,
                 alpha: float = 0.01) -> None:
        self.item_categories = item_categories
        self.weight = weight
        self.alpha = alpha

    def fit(self, model: Recommender) -> "Calibrated":
        _check_model(model)
        self._weight = check_number(self.weight, "Calibrated: weight", min=0.0, max=1.0,
                                    hint="0 keeps the ranker's order, 1 only calibrates")
        self._alpha = check_number(self.alpha, "Calibrated: alpha", min=0.0, max=1.0, min_open=True, max_open=True,
                                   hint="the paper uses 0.01")
        if self.item_categories is None:
            raise ParameterError("Calibrated: expected item_categories (one category per model item, or a dict "
                                 "{item id: category}), got None; pass e.g. shop.item_categories(model.item_map_)")
        codes, self.labels_ = category_codes(self.item_categories, model.item_map_, "Calibrated: item_categories")
        self.codes_ = codes
        self.n_categories_ = len(self.labels_) + 1  # the last one holds the unknown
        self._bucket = np.where(codes >= 0, codes, len(self.labels_))
        return super().fit(model)

    def history_distribution(self, histories: Sequence[ArrayLike]) -> np.ndarray:
        """``p``: (rows, categories + 1) category distribution of each history (zeros when empty)."""
        self._check_fitted()
        h = _history_matrix(list(histories), self.n_items_)
        counts = np.zeros((h.shape[0], self.n_categories_), dtype=np.float64)
        rows = np.repeat(np.arange(h.shape[0]), np.diff(h.indptr))
        np.add.at(counts, (rows, self._bucket[h.indices]), 1.0)
        total = counts.sum(axis=1, keepdims=True)
        return counts / np.where(total > 0, total, 1.0)

    def kl(self, histories: Sequence[ArrayLike], idx: ArrayLike) -> np.ndarray:
        """Steck's miscalibration ``KL(p || q~)`` of each list (rows of item indices, -1 padding).

        0 for a row whose history is empty.
        """
        self._check_fitted()
        idx = np.asarray(idx, dtype=np.int64)
        p = self.history_distribution(histories)
        valid = idx >= 0
        q = np.zeros_like(p)
        rows = np.repeat(np.arange(idx.shape[0])[:, None], idx.shape[1], axis=1)
        np.add.at(q, (rows[valid], self._bucket[idx[valid]]), 1.0)
        q /= np.maximum(valid.sum(axis=1, keepdims=True), 1)
        q_s = (1.0 - self._alpha) * q + self._alpha * p
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(p / np.where(q_s > 0, q_s, 1.0)), 0.0)
        return terms.sum(axis=1)

    def rerank(self, histories, cand_idx, cand_scores, n):
        self._check_fitted()
        histories, idx, scores, n = check_candidates(histories, cand_idx, cand_scores, n)
        m, c = idx.shape
        if idx.size and idx.max() >= self.n_items_:
            raise ParameterError(f"Calibrated: candidate index {idx.max()} outside the {self.n_items_} items it "
                                 "was fitted on")
        valid, rel = _normalised_relevance(idx, scores)
        p = self.history_distribution(histories)
        cat = self._bucket[np.where(valid, idx, 0)]
        w, a = self._weight, self._alpha
        rows = np.arange(m)
        counts = np.zeros_like(p)  # categories of the picked items
        available = valid.copy()
        k = min(n, c)
        picks = np.full((m, k), -1, dtype=np.int64)
        values = np.zeros((m, k), dtype=np.float64)
        for t in range(k):
            size = t + 1.0  # the list's length once this pick is added
            now = (1.0 - a) * counts / size + a * p
            after = (1.0 - a) * (counts + 1.0) / size + a * p
            with np.errstate(divide="ignore", invalid="ignore"):
                # the rise of sum_g p_g log q~_g when the pick's category gains one item: KL falls by it
                gain = np.where(p > 0, p * (np.log(np.where(p > 0, after, 1.0)) - np.log(np.where(p > 0, now, 1.0))), 0.0)
            objective = np.where(available, (1.0 - w) * rel + w * gain[rows[:, None], cat], -np.inf)
            pick = objective.argmax(axis=1)
            has = available[rows, pick]
            picks[has, t] = pick[has]
            values[:, t] = objective[rows, pick]
            available[rows[has], pick[has]] = False
            np.add.at(counts, (rows[has], cat[rows[has], pick[has]]), 1.0)
        return _pad(*_gather(idx, picks, values), n)

    def state(self):
        self._check_fitted()
        form, arrays = categories_state(self.item_categories, self.codes_, self.labels_)
        return {"params": {"weight": float(self.weight), "alpha": float(self.alpha)}, "categories": form}, arrays

    @classmethod
    def from_state(cls, meta, arrays):
        params, form = meta.get("params", {}), meta.get("categories", {})
        if not isinstance(params, dict) or not isinstance(form, dict):
            raise ArtifactError("Calibrated: stored parameters are not an object; save the model again")
        return cls(item_categories=categories_from_state(form, arrays), **params)


# ---------------------------------------------------------------------------------------------- exposure floors
_MAX_FLOOR_GROUPS = 1024


def _is_membership(groups) -> bool:
    """A dict ``{group: item ids}`` (overlapping groups), rather than ``{item id: label}``."""
    return isinstance(groups, Mapping) and len(groups) > 0 and all(
        isinstance(v, (list, tuple, set, frozenset, np.ndarray)) for v in groups.values())


class ExposureFloor(Reranker):
    """Exposure floors: every list gives at least a share of its places to chosen groups of items.

    New items, the long tail or small providers rarely reach the top of a ranker that learned
    from past popularity; a floor reserves them a minimum share of each list. For every floored
    group ``g`` with share ``f_g``, a list of ``k`` items (``k = min(n, valid candidates)``) holds at
    least ``ceil(f_g * k)`` of the group's items -- or all of the group's candidates, when there
    are fewer. The group's best-scored candidates fill its quota; the other places go to the best
    remaining candidates; the chosen items are then shown in the ranker's order (so a floored item
    sits where its score puts it, not at the bottom), and exactly ``k`` come back. Lists that
    already meet every floor are unchanged.

    Floors act on the candidates: a group absent from a row's candidates cannot be placed (raise
    ``Reranked(..., candidates=)`` for groups the ranker buries deep). Groups are taken in the
    order of ``floors``; an item in several groups counts for each. When the rounded quotas of all
    groups exceed ``k`` (e.g. two floors of 0.5 in a list of 3), the earlier groups come first.

    Where the re-ranker is asked to order *all* candidates -- inside ``ps.Hybrid(rerank=...)``
    (its top ``rerank_depth``) or as a stage before the last of a list -- pass ``k``, the length of
    the list shown: the floors then hold for the first ``k`` items, and the other candidates follow
    in the ranker's order.

    Parameters
    ----------
    item_groups : "popularity", labels per item, or dict {group: item ids}
        ``"popularity"`` (default): ``"head"`` (the ``head`` share of most popular items among the
        model's training users) and ``"long_tail"`` (the rest), computed at ``fit``. Labels: one
        per model item (array; ints with -1 unknown, strings with "" unknown), a dict ``{item id:
        label}`` or a pandas Series indexed by item id -- a brand, a provider, an age bucket
        (:func:`persona.evaluation.item_age_groups`). A dict ``{group: [item ids]}`` names possibly
        overlapping groups, e.g. ``{"new": new_ids, "Acme": acme_ids}``.
    floors : dict {group: share}
        The minimum share of each list per group, each in (0, 1], summing to at most 1, e.g.
        ``{"long_tail": 0.2}`` or ``{"new": 0.2, "Acme": 0.1}``.
    head : float, default 0.2
        With ``item_groups="popularity"``: the share of items in the head.
    k : int, optional
        The list length the floors are for (default: the ``n`` asked); see above.

    Examples
    --------
    >>> import persona as ps
    >>> shop = ps.datasets.synthetic_shop(n_users=200, n_items=60, seed=0)
    >>> model = ps.EASE().fit(shop.interactions)
    >>> floor = ps.ranking.ExposureFloor(floors={"long_tail": 0.5})
    >>> ranked = ps.ranking.Reranked(model, floor, candidates=60)
    >>> items, _ = ranked.recommend(model.user_map_.ids[0], n=10)
    >>> tail = ranked.reranker_.groups_of(items)
    >>> len(items), sum("long_tail" in g for g in tail) >= 5
    (10, True)
    """

    def __init__(self, item_groups: Any = "popularity", floors: Mapping[Any, float] | None = None,
                 head: float = 0.2, k: int | None = None) -> None:
        self.item_groups = item_groups
        self.floors = floors
        self.head = head
        self.k = k

    # ------------------------------------------------------------------ fitting
    def _checked_floors(self) -> list[tuple[Any, float]]:
        floors = self.floors
        if isinstance(floors, (list, tuple)):  # the saved form: [[group, share], ...]
            try:
                floors = {g: f for g, f in floors}
            except (TypeError, ValueError):
                raise ParameterError(f"ExposureFloor: floors: expected a dict {{group: share}}, got {floors!r}") from None
        if not isinstance(floors, Mapping) or not floors:
            raise ParameterError(f"ExposureFloor: floors: expected a non-empty dict {{group: share}}, got {floors!r}; "
                                 "pass e.g. floors={'long_tail': 0.2}")
        if len(floors) > _MAX_FLOOR_GROUPS:
            raise ParameterError(f"ExposureFloor: floors: expected at most {_MAX_FLOOR_GROUPS} groups, got {len(floors)}")
        out = []
        for g, f in floors.items():
            if isinstance(g, bool) or not isinstance(g, (str, numbers.Integral)):
                raise ParameterError(f"ExposureFloor: floors: expected group names (str or int), got {g!r}")
            out.append((g.item() if hasattr(g, "item") else g,
                        check_number(f, f"ExposureFloor: floors[{g!r}]", min=0.0, max=1.0, min_open=True,
                                     hint="the minimum share of each list, e.g. 0.2")))
        total = sum(f for _, f in out)
        if total > 1.0 + 1e-9:
            raise ParameterError(f"ExposureFloor: floors: expected shares summing to at most 1, got {total:g}; "
                                 "lower them")
        return out

    def fit(self, model: Recommender) -> "ExposureFloor":
        _check_model(model)
        floors = self._checked_floors()
        self._k = check_int(self.k, "ExposureFloor: k", min=1, max=MAX_N, allow_none=True,
                            hint="the length of the list shown, e.g. 10")
        n_items = len(model.item_map_)
        groups = self.item_groups
        names = [g for g, _ in floors]
        member = np.zeros((n_items, len(floors)), dtype=bool)
        if isinstance(groups, str):
            if groups != "popularity":
                raise ParameterError(f"ExposureFloor: item_groups: expected 'popularity', labels per item or a dict "
                                     f"{{group: item ids}}, got {groups!r}")
            self._head = check_number(self.head, "ExposureFloor: head", min=0.0, max=1.0,
                                      hint="the share of items in the popular head, e.g. 0.2")
            counts = np.diff(sp.csc_matrix(model.user_items_).indptr) if model.user_items_ is not None \
                else np.zeros(n_items)
            labels = popularity_groups(counts, self._head)
            for j, g in enumerate(names):
                if g not in ("head", "long_tail"):
                    raise ParameterError(f"ExposureFloor: floors: with item_groups='popularity' the groups are "
                                         f"'head' and 'long_tail', got {g!r}")
                member[:, j] = labels == g
        elif _is_membership(groups):
            if len(groups) > _MAX_FLOOR_GROUPS:
                raise ParameterError(f"ExposureFloor: item_groups: expected at most {_MAX_FLOOR_GROUPS} groups, "
                                     f"got {len(groups)}")
            for j, g in enumerate(names):
                if g not in groups:
                    raise ParameterError(f"ExposureFloor: floors: group {g!r} is not in item_groups "
                                         f"({sorted(map(str, groups))[:10]}); name a group of item_groups")
                ids = list(groups[g]) if not isinstance(groups[g], np.ndarray) else groups[g]
                pos = model.item_map_.lookup(normalize_ids(ids, what=f"ExposureFloor: item_groups[{g!r}]")) \
                    if len(ids) else np.zeros(0, np.int64)
                member[pos[pos >= 0], j] = True
        else:
            if groups is None:
                raise ParameterError("ExposureFloor: item_groups: expected 'popularity', labels per item or a dict "
                                     "{group: item ids}, got None")
            codes, labels = category_codes(groups, model.item_map_, "ExposureFloor: item_groups")
            for j, g in enumerate(names):
                hit = np.flatnonzero(labels == g) if len(labels) and (isinstance(g, str) == (labels.dtype.kind == "U")) \
                    else np.zeros(0, np.int64)
                if not len(hit):
                    raise ParameterError(f"ExposureFloor: floors: no item has the group {g!r} (groups: "
                                         f"{labels[:10].tolist()}{' ...' if len(labels) > 10 else ''})")
                member[:, j] = codes == hit[0]
        self.group_names_ = names
        self.shares_ = np.array([f for _, f in floors], dtype=np.float64)
        self.member_ = member
        self._item_map = model.item_map_
        return super().fit(model)

    def groups_of(self, items) -> list[list]:
        """The floored groups each of ``items`` (external item ids) belongs to (none for unknown ids)."""
        self._check_fitted()
        pos = self._item_map.lookup(normalize_ids(items, what="ExposureFloor.groups_of: items"))
        return [[] if p < 0 or p >= self.n_items_ else [self.group_names_[j] for j in np.flatnonzero(self.member_[p])]
                for p in pos.tolist()]

    # ------------------------------------------------------------------ re-ranking
    def quotas(self, k: np.ndarray) -> np.ndarray:
        """(rows, groups) places each group is owed in lists of ``k`` items: ``ceil(share * k)``."""
        k = np.asarray(k, dtype=np.float64).reshape(-1, 1)
        return np.ceil(self.shares_[None, :] * k - 1e-9).astype(np.int64)

    def rerank(self, histories, cand_idx, cand_scores, n):
        self._check_fitted()
        histories, idx, scores, n = check_candidates(histories, cand_idx, cand_scores, n)
        m, c = idx.shape
        if idx.size and idx.max() >= self.n_items_:
            raise ParameterError(f"ExposureFloor: candidate index {idx.max()} outside the {self.n_items_} items it "
                                 "was fitted on")
        valid = idx >= 0
        k = np.minimum(n if self._k is None else min(n, self._k), valid.sum(axis=1))
        safe = np.where(valid, idx, 0)
        need = self.quotas(k)
        chosen = np.zeros((m, c), dtype=bool)
        left = k.copy()
        for j in range(len(self.group_names_)):  # a loop over the floored groups, not the users
            mine = self.member_[safe, j] & valid
            want = np.minimum(need[:, j], mine.sum(axis=1))
            take = np.clip(want - (chosen & mine).sum(axis=1), 0, left)
            free = mine & ~chosen
            chosen |= free & (np.cumsum(free, axis=1) <= take[:, None])
            left -= take
        rest = valid & ~chosen
        chosen |= rest & (np.cumsum(rest, axis=1) <= left[:, None])
        width = min(n, c)
        # the chosen in the ranker's order, then (with k < n) the other candidates in the ranker's order
        picks = np.argsort(~chosen, axis=1, kind="stable")[:, :width]
        picks = np.where(np.take_along_axis(valid, picks, 1), picks, -1)
        values = np.take_along_axis(scores, np.maximum(picks, 0), 1).astype(np.float64)
        return _pad(*_gather(idx, picks, values), n)

    # ------------------------------------------------------------------ saving
    def state(self):
        floors = [[g, float(f)] for g, f in self._checked_floors()]
        k = None if self.k is None else int(self.k)
        meta = {"params": {"floors": floors, "head": float(self.head), "k": k}}
        groups = self.item_groups
        if isinstance(groups, str):
            meta["groups"] = {"form": "popularity"}
            return meta, {}
        if _is_membership(groups):
            names = list(groups)
            ids = [normalize_ids(list(groups[g]) if not isinstance(groups[g], np.ndarray) else groups[g],
                                 what="ExposureFloor: item_groups") for g in names]
            flat = np.concatenate(ids) if any(len(x) for x in ids) else np.zeros(0, np.int64)
            meta["groups"] = {"form": "membership", "names": [g.item() if hasattr(g, "item") else g for g in names]}
            return meta, {"groups.ids": flat, "groups.sizes": np.array([len(x) for x in ids], dtype=np.int64)}
        self._check_fitted()
        form, arrays = categories_state(groups, *category_codes(groups, self._item_map), prefix="groups")
        meta["groups"] = form
        return meta, arrays

    @classmethod
    def from_state(cls, meta, arrays):
        params, form = meta.get("params", {}), meta.get("groups", {})
        if not isinstance(params, dict) or not isinstance(form, dict):
            raise ArtifactError("ExposureFloor: stored parameters are not an object; save the model again")
        kind = form.get("form")
        if kind == "popularity":
            groups: Any = "popularity"
        elif kind == "membership":
            names = form.get("names")
            ids = check_array("groups.ids", arrays["groups.ids"], kind="iuU", ndim=1)
            sizes = check_array("groups.sizes", arrays["groups.sizes"], kind="iu", ndim=1)
            if not isinstance(names, list) or len(names) != len(sizes) or (sizes < 0).any() or sizes.sum() != len(ids):
                raise ArtifactError("ExposureFloor: the stored groups do not add up; save the model again")
            ends = np.cumsum(sizes)
            groups = {g: ids[e - s:e].tolist() for g, s, e in zip(names, sizes.tolist(), ends.tolist())}
        else:
            groups = categories_from_state(form, arrays, prefix="groups")
        return cls(item_groups=groups, **params)


# ---------------------------------------------------------------------------------------------- Reranked
class _FromModel:
    """A fitted attribute read from the wrapped model (so the wrapper never goes stale).

    Assignments (by ``Recommender.fit`` and the loader, before the wrapped model exists) are kept
    on the wrapper and read only while the wrapped model lacks the attribute.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        model = obj.__dict__.get("model")
        value = getattr(model, self.name, None) if model is not None else None
        if value is not None:
            return value
        try:
            return obj.__dict__["_own" + self.name]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, obj, value) -> None:
        obj.__dict__["_own" + self.name] = value


class Reranked(Recommender):
    """A fitted model whose answers are re-ranked: ``candidates`` items from it, ``n`` shown.

    Every ``recommend*`` call asks the wrapped model for ``max(n, candidates)`` items -- with the
    request's filters (``filter_seen``, ``items``, ``exclude``, ``mask``) applied by the model, so
    the candidates are all allowed -- and the re-ranker picks ``n`` of them. Exactly
    ``min(n, allowed items)`` come back, as from any model. The re-ranker sees each user's training
    items (``user_items_``) or the request's history. ``evaluate`` measures the re-ranked lists.

    The scores that come back are the re-ranker's values of its picks (non-increasing, as always),
    not the model's. Users (and histories) the model cannot score are answered by its fallback
    (``set_fallback`` sets it on the wrapped model) exactly as without the wrapper: those answers
    are not re-ranked. ``similar_items`` and ``recommend_users`` are the wrapped model's, not
    re-ranked.

    Parameters
    ----------
    model : Recommender
        A fitted persona model (not itself a Reranked: chain re-rankers in a list instead).
        Wrapping a fitted model fits (a copy of) the re-ranker against it at once; an unfitted
        one is fitted, then the re-ranker, by :meth:`fit`.
    reranker : Reranker or list of Reranker
        E.g. ``ps.ranking.MMR()``; a list is a :class:`Pipeline`.
    candidates : int, default 100
        How many of the model's best items the re-ranker chooses among (at least ``n`` are asked).

    Attributes
    ----------
    reranker_ : Reranker
        The fitted copy of ``reranker``.

    Examples
    --------
    >>> import persona as ps
    >>> shop = ps.datasets.synthetic_shop(n_users=200, n_items=60, seed=0)
    >>> model = ps.EASE().fit(shop.interactions)
    >>> diverse = ps.ranking.Reranked(model, ps.ranking.MMR(diversity=0.3), candidates=50)
    >>> ids, scores = diverse.recommend_batch(model.user_map_.ids[:3], n=4)
    >>> ids.shape
    (3, 4)
    """

    user_map_ = _FromModel("user_map_")
    item_map_ = _FromModel("item_map_")
    user_items_ = _FromModel("user_items_")
    fallback_ = _FromModel("fallback_")

    def __init__(self, model: Recommender | None = None, reranker: Reranker | Sequence[Reranker] | None = None, *,
                 candidates: int = 100, **unknown: Any) -> None:
        if unknown:
            raise ParameterError(unknown_keyword_message("Reranked", list(unknown), ["model", "reranker", "candidates"]))
        self.model = model
        self.reranker = reranker
        self.candidates = candidates
        if model is not None and getattr(model, "_fitted", False):
            self._attach()

    # positional model and re-ranker are allowed (Reranked(model, MMR())), and unknown keywords checked above
    __init__._persona_checked = True  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ fitting
    def _validate_params(self) -> None:
        check_int(self.candidates, "Reranked: candidates", min=1, max=MAX_N,
                  hint="the model's best items the re-ranker chooses among, e.g. 100")

    def _check_parts(self) -> None:
        self._validate_params()
        if not isinstance(self.model, Recommender):
            raise ParameterError(f"Reranked: model: expected a persona Recommender, got {type(self.model).__name__}; "
                                 "pass e.g. ps.EASE().fit(train)")
        if isinstance(self.model, Reranked):
            raise ParameterError("Reranked: model: expected a model that is not itself Reranked, got a Reranked; "
                                 "chain re-rankers in one list instead: Reranked(model, [MMR(), Rules(...)])")
        if self.reranker is None:
            raise ParameterError("Reranked: reranker: expected a persona re-ranker or a list of them, got None; "
                                 "pass e.g. ps.ranking.MMR()")
        as_reranker(self.reranker)

    def _attach(self) -> None:
        """Fit a copy of the re-ranker against the (fitted) wrapped model."""
        self._check_parts()
        self.reranker_ = as_reranker(self.reranker).clone().fit(self.model)
        self._fitted = True

    def _fit(self, interactions, **kwargs) -> None:
        self._check_parts()
        self.model.fit(interactions, **kwargs)
        self._attach()

    def _check_fitted(self) -> None:
        if not getattr(self, "_fitted", False) or not getattr(self.model, "_fitted", False):
            raise NotFittedError("this Reranked is not fitted yet: wrap a fitted model, or call fit(interactions)")
        if self.reranker_.n_items_ != len(self.model.item_map_):
            raise NotFittedError(f"the wrapped model now has {len(self.model.item_map_)} items but the re-ranker was "
                                 f"fitted for {self.reranker_.n_items_}; wrap the model again: Reranked(model, reranker)")

    def update(self, new_interactions, **kwargs) -> "Reranked":
        """Fold new events into the wrapped model (:meth:`Recommender.update`); returns ``self``.

        The wrapped model is updated on a copy; when it gained items the re-ranker is fitted again
        on it (its per-item state must cover them). Either step failing leaves this object as it was.
        """
        import copy

        self._check_fitted()
        model = copy.copy(self.model).update(new_interactions, **kwargs)
        reranker = self.reranker_
        if len(model.item_map_) != reranker.n_items_:
            try:
                reranker = as_reranker(self.reranker).clone().fit(model)
            except (ParameterError, DataError) as e:
                raise ParameterError(f"Reranked.update: the re-ranker {type(reranker).__name__} cannot take the "
                                     f"{len(model.item_map_) - reranker.n_items_} new item(s) ({e}); give it "
                                     "per-item data by id (a dict), or wrap the refitted model again") from e
        self.model, self.reranker_ = model, reranker
        self.last_update_ = getattr(model, "last_update_", None)
        return self

    def set_fallback(self, model: Recommender | None) -> "Reranked":
        """Set the wrapped model's fallback (see :meth:`Recommender.set_fallback`); returns ``self``."""
        self.model.set_fallback(model)
        return self

    @property
    def supports_history(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.model, "supports_history", False))

    @property
    def supports_similar_items(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.model, "supports_similar_items", False))

    @property
    def supports_audience(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.model, "supports_audience", False))

    # ------------------------------------------------------------------ the wrapped model's scores
    def _score_users(self, user_indices):
        return self.model._score_users(user_indices)

    def _score_histories(self, histories):
        return self.model._score_histories(histories)

    def _similar_batch(self, item_ids, n, *, items, exclude, mask):
        self._check_fitted()
        return self.model._similar_batch(item_ids, n, items=items, exclude=exclude, mask=mask)

    def recommend_users(self, items, n=10, *, users=None, exclude_users=None):
        """The wrapped model's :meth:`Recommender.recommend_users` (audiences are not re-ranked)."""
        self._check_fitted()
        return self.model.recommend_users(items, n, users=users, exclude_users=exclude_users)

    # ------------------------------------------------------------------ re-ranking
    def _pool(self, n: int) -> int:
        return max(n, int(self.candidates))

    def _blocked(self, extras: np.ndarray, rows: list | sp.csr_matrix | None) -> np.ndarray | None:
        """(m, e) True where a row's excluded items (a CSR or a list of index arrays) hold an extra."""
        if rows is None:
            return None
        if not sp.issparse(rows):
            rows = self._exclusion_rows(list(rows), len(rows), self.n_items)
        return np.asarray((rows.tocsr()[:, extras] != 0).todense()).astype(bool)

    def _allowed_extras(self, extras: np.ndarray, m: int, blocked: list, allow, mask) -> np.ndarray:
        """(m, e) True where a row's filters allow extra candidate ``e`` (pinned items)."""
        ok = np.ones((m, len(extras)), dtype=bool)
        if mask is not None:
            ok &= np.asarray(mask, dtype=bool)[extras][None, :]
        if isinstance(allow, list):
            ok &= np.array([np.isin(extras, a) for a in allow], dtype=bool).reshape(m, len(extras))
        elif allow is not None:
            ok &= np.isin(extras, np.asarray(allow))[None, :]
        for rows in blocked:
            b = self._blocked(extras, rows)
            if b is not None:
                ok &= ~b
        return ok

    def _rerank(self, histories: list, idx: np.ndarray, scores: np.ndarray, n: int, extras: np.ndarray,
                allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Add the allowed extras to the candidates, then re-rank to ``min(n, width)`` columns."""
        if len(extras) and allowed is not None and allowed.any():
            valid = idx >= 0
            present = (idx[:, :, None] == extras[None, None, :]).any(axis=1)
            add = allowed & ~present
            low = np.where(valid.any(axis=1), np.where(valid, scores, np.inf).min(axis=1), 0.0).astype(np.float32)
            idx = np.concatenate([idx, np.where(add, extras[None, :], -1)], axis=1)
            scores = np.concatenate([scores, np.where(add, low[:, None], PAD_SCORE).astype(np.float32)], axis=1)
            order = np.argsort(idx < 0, axis=1, kind="stable")  # valid candidates first, order kept
            idx, scores = np.take_along_axis(idx, order, 1), np.take_along_axis(scores, order, 1)
        width = max(1, min(n, idx.shape[1]))
        return self.reranker_.rerank(histories, idx, scores, width)

    def recommend_indices(self, user_indices, n, *, filter_seen=True, exclude=None, allow=None, mask=None):
        """Re-ranked top ``n`` item indices and scores for user indices (what ``evaluate`` calls)."""
        self._check_fitted()
        n = check_n(n)
        users = np.asarray(user_indices, dtype=np.int64).reshape(-1)
        idx, scores = self.model.recommend_indices(users, self._pool(n), filter_seen=filter_seen, exclude=exclude,
                                                   allow=allow, mask=mask)
        ui = self.user_items_
        ptr = ui.indptr
        histories = [ui.indices[ptr[u]:ptr[u + 1]] for u in users]
        extras = self.reranker_.extra_candidates()
        allowed = None
        if len(extras):
            seen = ui[users] if filter_seen else None
            allowed = self._allowed_extras(extras, len(users), [seen, exclude], allow, mask)
        out_i, out_s = self._rerank(histories, idx, scores, n, extras, allowed)
        return _pad(out_i, out_s, n)

    def _recommend_batch(self, users, n, *, filter_seen, items, exclude, mask):
        self._check_fitted()
        n = self._n_arg(n)
        ids, scores, counts = self.model._recommend_batch(users, self._pool(n), filter_seen=filter_seen, items=items,
                                                          exclude=exclude, mask=mask)
        m = len(ids)
        uidx = self.user_map_.lookup(users) if m else np.zeros(0, np.int64)
        ui = self.user_items_
        empty = np.zeros(0, dtype=ui.indices.dtype)
        histories = [ui.indices[ui.indptr[u]:ui.indptr[u + 1]] if u >= 0 else empty for u in uidx]
        # the fallback's answers (unknown users) pass through, as the base class gives them
        return self._rerank_ids(histories, ids, scores, counts, n, histories if filter_seen else None, items,
                                exclude, mask, passthrough=uidx < 0)

    def _history_batch(self, histories, n, *, filter_seen, items, exclude, mask):
        self._check_fitted()
        n = self._n_arg(n)
        ids, scores, counts = self.model._history_batch(histories, self._pool(n), filter_seen=filter_seen,
                                                        items=items, exclude=exclude, mask=mask)
        hist_idx = [self._item_indices(h, strict=False, what="history") if len(h) else np.zeros(0, np.int64)
                    for h in histories]
        blind = np.array([len(h) == 0 for h in hist_idx], dtype=bool)  # the fallback (if any) answered these
        return self._rerank_ids(hist_idx, ids, scores, counts, n, hist_idx if filter_seen else None, items,
                                exclude, mask, passthrough=blind & (getattr(self.model, "fallback_", None) is not None))

    def _rerank_ids(self, histories, ids, scores, counts, n, seen, items, exclude, mask, passthrough):
        """Re-rank the wrapped model's id answers (ids, scores, counts) to ``n``; same triple back.

        Rows in ``passthrough`` (the fallback's answers) and rows holding items the model does not
        know come back as the wrapped model gave them, cut to ``n``.
        """
        m, w = ids.shape
        idx = self.item_map_.lookup(ids.reshape(-1)).reshape(m, w) if ids.size else np.zeros((m, w), np.int64)
        valid = np.arange(w)[None, :] < np.asarray(counts)[:, None]
        foreign = (valid & (idx < 0)).any(axis=1) | np.asarray(passthrough, dtype=bool).reshape(m)
        idx = np.where(valid & ~foreign[:, None], idx, -1)
        extras = self.reranker_.extra_candidates()
        allowed = None
        if len(extras):
            allow, extra, f_mask = self._filters(m, items, exclude, mask)
            allowed = self._allowed_extras(extras, m, [seen, extra], allow, f_mask)
        out_i, out_s = self._rerank(histories, idx, scores.astype(np.float32), n, extras, allowed)
        out_ids, out_s = self._to_ids(out_i, out_s)
        out_counts = (out_i >= 0).sum(axis=1)
        if foreign.any():
            width = max(out_ids.shape[1], min(n, w))
            out_ids, out_s = self._pad_to(out_ids.astype(np.result_type(out_ids.dtype, ids.dtype)), out_s, width)
            keep = min(n, w)
            out_ids[foreign, :keep], out_s[foreign, :keep] = ids[foreign, :keep], scores[foreign, :keep]
            out_counts[foreign] = np.minimum(np.asarray(counts)[foreign], n)
        return out_ids, out_s, out_counts

    # ------------------------------------------------------------------ persistence
    def _artifact_parts(self, depth: int = 0) -> tuple[dict, dict, dict]:
        """The wrapped model's parts under ``inner__`` (its id maps shared), the re-ranker's under ``reranker__``."""
        self._check_fitted()
        i_meta, i_arrays, i_files = self.model._artifact_parts(depth)
        shared = {k for k in i_arrays if k in ("user_ids", "item_ids") or k.startswith("user_items.")}
        r_meta, r_arrays = reranker_state(self.reranker_)
        arrays = {k: i_arrays[k] for k in shared}
        arrays.update({_INNER + k: v for k, v in i_arrays.items() if k not in shared})
        arrays.update({_RERANKER + k: v for k, v in r_arrays.items()})
        meta = {"class": type(self).__name__, "params": {"candidates": int(self.candidates)},
                "state": {"inner": i_meta, "reranker": r_meta, "as_list": isinstance(self.reranker, (list, tuple))}}
        return meta, arrays, {_INNER + k: w for k, w in i_files.items()}

    def _restore(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        inner = meta.get("inner")
        if not isinstance(inner, dict) or inner.get("class") == type(self).__name__:
            raise ArtifactError("a Reranked artifact must hold one wrapped model that is not itself Reranked; "
                                "the artifact is malformed, save the model again")
        flags = {k: meta[k] for k in ("_mmap", "_authentic") if k in meta}
        files = meta.get("_files") or {}
        inner_arrays = {k: v for k, v in arrays.items() if k in ("user_ids", "item_ids") or k.startswith("user_items.")}
        inner_arrays.update({k[len(_INNER):]: v for k, v in arrays.items() if k.startswith(_INNER)})
        inner_files = {k[len(_INNER):]: v for k, v in files.items() if k.startswith(_INNER)}
        self.model = self._from_parts("the artifact's wrapped model", inner, inner_arrays, inner_files, flags)
        r_arrays = {k[len(_RERANKER):]: v for k, v in arrays.items() if k.startswith(_RERANKER)}
        reranker = reranker_from_state(meta.get("reranker"), r_arrays)
        # the constructor argument as it was given: a list stays a list (a Pipeline once fitted)
        self.reranker = list(reranker.steps) if meta.get("as_list") and isinstance(reranker, Pipeline) else reranker
        try:
            self.reranker_ = as_reranker(self.reranker).clone().fit(self.model)
        except (ParameterError, DataError, UnsupportedError) as e:
            raise ArtifactError(f"the saved re-ranker does not fit the saved model ({e}); save the model again") from None
