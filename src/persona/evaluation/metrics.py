"""Offline evaluation of a fitted recommender on held-out interactions (full ranking).

:func:`evaluate` asks the model for the top ``max(k)`` items of every test user, in batches, over
**all** items (the user's training items, and optionally more, excluded) and computes ranking
metrics on the whole batch at once with numpy: no Python loop over users.
"""

from __future__ import annotations

import logging
import numbers
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence, overload

import numpy as np
import scipy.sparse as sp

from .._validate import check_bool, check_int
from ..data.idmap import IdMap
from ..data.interactions import Interactions
from ..errors import DataError, NotFittedError, PersonaError
from ..typing import ArrayLike, ItemId, RankingModel

if TYPE_CHECKING:  # pandas only for per_user's frame
    import pandas as pd

__all__ = ["evaluate", "METRICS"]

logger = logging.getLogger(__name__)

#: Names accepted by ``evaluate(metrics=...)``, in the order of the report.
METRICS = ("hr", "precision", "recall", "f1", "ndcg", "map", "mrr", "coverage", "novelty", "arp", "diversity")
_POPULARITY_METRICS = ("novelty", "arp")
_BATCH_BYTES = 128 * 2**20
_MAX_BATCH_USERS = 2**16
#: Largest cut-off ``k`` evaluate accepts.
MAX_K = 10_000
_COSINE_BLOCK = 2**21  # list entries per block of the cosine diversity
_LISTS_WORK = 2**20  # multiply-adds per product L Xn


# ---------------------------------------------------------------------------------------- argument checks
def _check_k(k) -> tuple[int, ...]:
    ks = [k] if isinstance(k, (numbers.Integral, str)) else k
    try:
        ks = list(ks)
    except TypeError:
        raise DataError(f"evaluate: expected k as a positive int or a sequence of them, got {k!r}; pass e.g. k=(5, 10)") from None
    if not ks:
        raise DataError(f"evaluate: expected k as a positive int or a sequence of them, got {k!r}; pass e.g. k=(5, 10)")
    for x in ks:
        check_int(x, "evaluate", min=1, expected="k as a positive int or a sequence of them", hint="pass e.g. k=(5, 10)",
                  error=DataError)
    # bounded: every evaluated user gets a kmax-long list (and diversity a kmax x kmax block)
    for x in ks:
        check_int(x, "evaluate: k", min=1, max=MAX_K, error=DataError,
                  hint=f"top-k metrics are cut-offs of a shown list; pass k <= {MAX_K}")
    return tuple(sorted({int(x) for x in ks}))


def _check_metrics(metrics) -> tuple[str, ...]:
    if metrics is None:
        return METRICS
    if not isinstance(metrics, str) and not hasattr(metrics, "__iter__"):
        raise DataError(f"evaluate: expected metric names from {METRICS}, got {metrics!r}; pass e.g. metrics=('hr', 'ndcg')")
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    bad = [m for m in names if not isinstance(m, str) or m.lower() not in METRICS]
    if bad or not names:
        raise DataError(f"evaluate: expected metric names from {METRICS}, got {bad or names!r}; pass e.g. metrics=('hr', 'ndcg')")
    wanted = {m.lower() for m in names}
    return tuple(m for m in METRICS if m in wanted)


def _model_state(model) -> tuple[IdMap, IdMap, sp.csr_matrix | None]:
    missing = [a for a in ("user_map_", "item_map_") if getattr(model, a, None) is None]
    if missing or not callable(getattr(model, "recommend_indices", None)):
        what = ", ".join(missing) if missing else "recommend_indices"
        raise NotFittedError(
            f"evaluate: expected a fitted persona model, got {type(model).__name__} without {what}; call model.fit(train) first"
        )
    return model.user_map_, model.item_map_, getattr(model, "user_items_", None)


def _same_map(a: IdMap, b: IdMap) -> bool:
    return a is b or (len(a) == len(b) and a.dtype.kind == b.dtype.kind and a == b)


def _to_model(inter: Interactions, user_map: IdMap, item_map: IdMap) -> tuple[np.ndarray, np.ndarray]:
    """Model indices of every event's user and item (``-1`` where the model does not know the id)."""
    if _same_map(inter.user_map, user_map):
        u = inter.users.astype(np.int64)
    else:
        u = user_map.lookup(inter.user_map.ids)[inter.users]
    if _same_map(inter.item_map, item_map):
        i = inter.items.astype(np.int64)
    else:
        i = item_map.lookup(inter.item_map.ids)[inter.items]
    return u, i


def _binary_csr(m, name: str, n_items: int) -> sp.csr_matrix:
    if not sp.issparse(m) or m.ndim != 2 or m.shape[1] != n_items:
        shape = getattr(m, "shape", None)
        raise DataError(
            f"evaluate: expected {name} as Interactions or a sparse matrix with {n_items} columns (the model's items), "
            f"got {type(m).__name__} of shape {shape}; pass the Interactions the model was fitted on"
        )
    m = sp.csr_matrix(m, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.data = np.ones(len(m.data), dtype=np.float32)
    return m


def _train_pairs(train, user_items, user_map: IdMap, item_map: IdMap, n_items: int):
    """Distinct (train row, model item) pairs that define popularity and item similarity."""
    if train is None:
        if user_items is None:
            return None
        m = _binary_csr(user_items, "model.user_items_", n_items)
        return m
    if isinstance(train, Interactions):
        u, i = _to_model(train, user_map, item_map)
        keep = i >= 0
        rows, cols = train.users[keep].astype(np.int64), i[keep]
        if len(rows):
            m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(train.n_users, n_items))
        else:
            m = sp.csr_matrix((train.n_users, n_items), dtype=np.float32)
        m.sum_duplicates()
        m.data[:] = 1.0
        return m
    return _binary_csr(train, "train", n_items)


def _categories(item_categories, item_map: IdMap) -> np.ndarray:
    n_items = len(item_map)
    if isinstance(item_categories, dict):
        cats = np.full(n_items, -1, dtype=np.int64)
        keys = list(item_categories.keys())
        if keys:
            pos = item_map.lookup(keys)
            try:
                vals = np.asarray(list(item_categories.values()), dtype=np.int64)
            except (TypeError, ValueError, OverflowError):
                raise DataError("evaluate: expected item_categories {item id: category} with int categories "
                                "(int64); map category names to numbers first") from None
            cats[pos[pos >= 0]] = vals[pos >= 0]
        return cats
    cats = np.asarray(item_categories)
    if cats.ndim != 1 or len(cats) != n_items or cats.dtype.kind not in "iu":
        raise DataError(
            f"evaluate: expected item_categories as an int array with one category per model item ({n_items}), "
            f"or a dict {{item id: category}}, got {cats.dtype} array of shape {cats.shape}; use -1 for unknown"
        )
    return cats.astype(np.int64)


def _rows_from(inter_or_matrix, name, user_map: IdMap, item_map: IdMap) -> sp.csr_matrix:
    """A model-aligned users x items CSR of extra items to exclude."""
    shape = (len(user_map), len(item_map))
    if isinstance(inter_or_matrix, Interactions):
        u, i = _to_model(inter_or_matrix, user_map, item_map)
        keep = (u >= 0) & (i >= 0)
        m = sp.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (u[keep], i[keep])), shape=shape)
        m.sum_duplicates()
        return m
    if sp.issparse(inter_or_matrix) and inter_or_matrix.shape == shape:
        return sp.csr_matrix(inter_or_matrix)
    raise DataError(
        f"evaluate: expected {name} as Interactions or a sparse matrix of shape {shape} (model users x items), "
        f"got {type(inter_or_matrix).__name__} of shape {getattr(inter_or_matrix, 'shape', None)}; "
        f"pass e.g. the validation Interactions"
    )


def _check_output(idx, m: int, n: int, n_items: int) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.ndim != 2 or idx.shape[0] != m or idx.shape[1] > n:
        raise PersonaError(
            f"evaluate: model.recommend_indices returned an array of shape {idx.shape} for {m} users and n={n}; "
            f"expected ({m}, {n}) (a bug in the model)"
        )
    idx = idx.astype(np.int64, copy=False)
    if idx.shape[1] < n:
        idx = np.concatenate([idx, np.full((m, n - idx.shape[1]), -1, dtype=np.int64)], axis=1)
    if idx.size and (idx.min() < -1 or idx.max() >= n_items):
        raise PersonaError(
            f"evaluate: model.recommend_indices returned item indices outside [-1, {n_items}) "
            f"(range [{idx.min()}, {idx.max()}]); a bug in the model"
        )
    return idx


# ---------------------------------------------------------------------------------------- evaluate
@overload
def evaluate(model: RankingModel, test: Interactions, k: int | Sequence[int] = ..., *,
             exclude: Interactions | sp.spmatrix | None = ..., train: Interactions | sp.spmatrix | None = ...,
             item_categories: ArrayLike | Mapping[ItemId, Any] | None = ..., batch_size: int | None = ...,
             show_progress: bool = ..., metrics: Sequence[str] | None = ..., filter_seen: bool = ...,
             per_user: Literal[False] = ...) -> dict[str, float]: ...


@overload
def evaluate(model: RankingModel, test: Interactions, k: int | Sequence[int] = ..., *,
             exclude: Interactions | sp.spmatrix | None = ..., train: Interactions | sp.spmatrix | None = ...,
             item_categories: ArrayLike | Mapping[ItemId, Any] | None = ..., batch_size: int | None = ...,
             show_progress: bool = ..., metrics: Sequence[str] | None = ..., filter_seen: bool = ...,
             per_user: Literal[True]) -> tuple[dict[str, float], pd.DataFrame]: ...


def evaluate(
    model: RankingModel,
    test: Interactions,
    k: int | Sequence[int] = (5, 10, 20),
    *,
    exclude: Interactions | sp.spmatrix | None = None,
    train: Interactions | sp.spmatrix | None = None,
    item_categories: ArrayLike | Mapping[ItemId, Any] | None = None,
    batch_size: int | None = None,
    show_progress: bool = False,
    metrics: Sequence[str] | None = None,
    filter_seen: bool = True,
    per_user: bool = False,
) -> dict[str, float] | tuple[dict[str, float], pd.DataFrame]:
    """Full-ranking top-k metrics of ``model`` on the held-out ``test`` events.

    Every test user the model knows is evaluated: the model ranks **all** items for the user,
    minus the user's training items (``model.user_items_``, when ``filter_seen``) and the items of
    ``exclude``; the user's targets are the distinct items of their test events. Test users and
    items are matched to the model through their external ids, so ``test`` may share the model's
    id maps (as every split of :mod:`persona.split` does) or have grown ones.

    Definitions, for a user with target set ``T``, top-k list ``R`` (0-based ranks, possibly
    shorter than ``k`` when fewer items are allowed) and ``hits`` the ranks in ``R`` holding a
    target; each is averaged over the evaluated users unless said otherwise:

    * ``hr@k`` -- 1 if any target is in the top k, else 0.
    * ``precision@k`` -- ``|hits| / k`` (``k`` even when the list is shorter).
    * ``recall@k`` -- ``|hits| / |T|``.
    * ``f1@k`` -- harmonic mean of the user's precision@k and recall@k (0 when both are 0).
    * ``ndcg@k`` -- binary gains: ``DCG = sum_{r in hits} 1 / log2(r + 2)`` divided by the ideal
      ``sum_{r < min(|T|, k)} 1 / log2(r + 2)``; with one target it is ``1 / log2(rank + 2)``.
    * ``map@k`` -- ``sum_{r in hits} precision@(r + 1) / min(|T|, k)``.
    * ``mrr@k`` -- ``1 / (r + 1)`` for the first hit ``r`` within the top k, else 0.
    * ``coverage@k`` -- distinct items in the union of all users' top-k lists / number of items
      (one value, not a per-user mean).
    * ``novelty@k`` -- mean over the user's recommended items of ``-log2(p_i)`` with
      ``p_i = max(c_i, 1) / U``: ``c_i`` the number of training users who interacted with item
      ``i`` and ``U`` the number of training users with at least one interaction.
    * ``arp@k`` -- mean ``c_i`` (average recommended popularity) of the user's recommended items.
    * ``diversity@k`` -- intra-list diversity. With ``item_categories``: the fraction of item pairs
      in the list whose categories differ (pairs with an unknown category, -1, are left out).
      Otherwise ``1 -`` the mean pairwise cosine similarity of the items' binary columns in the
      training matrix (an item without training users has similarity 0 to every item).

    novelty, arp and diversity are averaged over the users whose list has at least one item (two
    items, or one pair of known categories, for diversity). Training popularity and similarity come
    from ``train`` when given, else from ``model.user_items_``. A target the user cannot be
    recommended any more (already seen in training, excluded, or unknown to the model) still
    counts as a miss.

    Parameters
    ----------
    model : fitted persona model
        Uses ``user_map_``, ``item_map_``, ``user_items_`` and ``recommend_indices``.
    test : Interactions
        Held-out events; several per user are allowed (all are targets).
    k : int or sequence of int, default (5, 10, 20)
    exclude : Interactions or sparse matrix (model users x items), optional
        More items to exclude from each user's ranking, e.g. the validation events when the
        model was fitted on train only.
    train : Interactions or sparse matrix (users x model items), optional
        Defines item popularity and similarity for novelty, arp and diversity.
    item_categories : int array (one per model item, -1 unknown) or dict {item id: category}, optional
    batch_size : int, optional
        Users per call of ``recommend_indices``; default about 128 MB of float32 scores per batch.
    show_progress : bool, default False
        Show a tqdm progress bar.
    metrics : sequence of str, optional
        Subset of :data:`METRICS` to compute; default all.
    filter_seen : bool, default True
        Exclude each user's training items from the ranking (the standard protocol).
    per_user : bool, default False
        Also return each evaluated user's own values (to find the users a model fails, compare
        two models user by user, or test a difference for significance).

    Returns
    -------
    dict, or (dict, pandas.DataFrame) with ``per_user=True``
        The report: ``"<metric>@<k>"`` -> float for every metric and k, plus ``n_users``
        (evaluated), ``n_unknown_users`` (distinct test users the model does not know: counted and
        skipped), ``n_unknown_items`` (distinct test items the model does not know: their targets
        are misses), ``n_cold_users`` (evaluated users without training items in the model),
        ``n_targets`` (distinct user-item targets of the evaluated users) and ``time_s``.

        With ``per_user=True``, ``(report, frame)``: ``frame`` has one row per evaluated user, in
        the model's user order, with columns ``user`` (external id), ``n_targets`` and
        ``"<metric>@<k>"`` for every metric and k except ``coverage`` (a property of all lists
        together). novelty, arp and diversity are NaN for a user whose list is too short to define
        them; the mean of each column (NaN left out) is the report's value.

    Raises
    ------
    DataError
        When ``test`` has no events or no test user is known to the model, or on bad arguments.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from persona.data import IdMap, Interactions
    >>> class Fixed:  # ranks items 0, 1, 2, ... for everybody, without filtering
    ...     user_map_, item_map_ = IdMap(["u1", "u2"]), IdMap(["a", "b", "c"])
    ...     user_items_ = sp.csr_matrix((2, 3), dtype=np.float32)
    ...     def recommend_indices(self, users, n, *, filter_seen=True, exclude=None):
    ...         idx = np.tile(np.arange(n), (len(users), 1))
    ...         return idx, -idx.astype(np.float32)
    >>> m = Fixed()
    >>> test = Interactions(m.user_map_, m.item_map_, users=[0, 1], items=[1, 2])
    >>> r = evaluate(m, test, k=2, metrics=("hr", "ndcg"))
    >>> r["hr@2"], round(r["ndcg@2"], 4), r["n_users"]
    (0.5, 0.3155, 2)
    >>> r, frame = evaluate(m, test, k=2, metrics=("hr",), per_user=True)
    >>> frame.to_dict("list")
    {'user': ['u1', 'u2'], 'n_targets': [1, 1], 'hr@2': [1.0, 0.0]}
    """
    t0 = time.perf_counter()
    ks, names, per_user = _check_arguments(k, metrics, per_user, test, batch_size)
    user_map, item_map, user_items = _model_state(model)
    n_items = len(item_map)
    targets = _targets(test, user_map, item_map)
    exclude_m = None if exclude is None else _rows_from(exclude, "exclude", user_map, item_map)
    cats = None if item_categories is None else _categories(item_categories, item_map)
    stats, names = _training_stats(names, metrics is not None, "diversity" in names and cats is None,
                                   train, user_items, user_map, item_map)
    totals = _Totals(names, ks, targets.n_eval, n_items, per_user)
    batch_size = _batch_size(batch_size, n_items, ks[-1], targets.n_eval)
    _score_batches(model, targets, ks, totals, stats, cats, exclude_m, n_items, batch_size, filter_seen, show_progress)
    report = _report(totals, names, ks, n_items, targets, user_items, len(user_map))
    report["time_s"] = time.perf_counter() - t0
    if not per_user:
        return report
    return report, _per_user_frame(totals, names, ks, targets, user_map)


# ---------------------------------------------------------------------------------------- evaluate's stages
def _check_arguments(k, metrics, per_user, test, batch_size) -> tuple[tuple[int, ...], tuple[str, ...], bool]:
    """Validate the arguments that need no model: the cut-offs, metric names, ``per_user``, ``test``, ``batch_size``."""
    ks = _check_k(k)
    names = _check_metrics(metrics)
    per_user = check_bool(per_user, "evaluate: per_user", ints=True, error=DataError)
    if not isinstance(test, Interactions):
        raise DataError(
            f"evaluate: expected test as persona Interactions, got {type(test).__name__}; "
            f"use the test part of ps.split.leave_last_out(...)"
        )
    if len(test) == 0:
        raise DataError("evaluate: expected test interactions with events, got none; check the split")
    check_int(batch_size, "evaluate", min=1, allow_none=True, expected="batch_size as a positive int or None",
              error=DataError)
    return ks, names, per_user


@dataclass
class _Targets:
    """The ground truth: each evaluated user's distinct target items, as sorted keys ``user * width + code``.

    ``code`` is the model's item index, or ``n_items + test item index`` for an item the model does
    not know (a target that can only be missed).
    """

    keys: np.ndarray
    width: np.int64
    users: np.ndarray  # the evaluated model users, ascending
    indptr: np.ndarray  # users[j]'s keys are keys[indptr[j]:indptr[j + 1]]
    counts: np.ndarray  # targets per evaluated user
    n_unknown_users: int
    n_unknown_items: int

    @property
    def n_eval(self) -> int:
        return len(self.users)


def _targets(test: Interactions, user_map: IdMap, item_map: IdMap) -> _Targets:
    """The distinct (model user, item) targets of ``test``; unknown users are counted, skipped and logged."""
    n_items = len(item_map)
    u, i = _to_model(test, user_map, item_map)
    unknown_u = u < 0
    n_unknown_users = int(len(np.unique(test.users[unknown_u])))
    unknown_i = i < 0
    n_unknown_items = int(len(np.unique(test.items[unknown_i])))
    code = np.where(unknown_i, n_items + test.items.astype(np.int64), i)
    width = np.int64(n_items + test.n_items)
    keys = np.unique(u[~unknown_u] * width + code[~unknown_u])
    if len(keys) == 0:
        raise DataError(
            f"evaluate: none of the {len(np.unique(test.users))} test users is known to the model; "
            f"expected test users from the data the model was fitted on (same id type, e.g. str vs int)"
        )
    eval_users, first, n_targets = np.unique(keys // width, return_index=True, return_counts=True)
    if n_unknown_users:
        sample = test.user_map.to_ids(np.unique(test.users[unknown_u])[:5]).tolist()
        logger.warning(
            "evaluate: %d test users are unknown to the model and skipped (e.g. %s); %d users evaluated",
            n_unknown_users, sample, len(eval_users),
        )
    if n_unknown_items:
        logger.warning(
            "evaluate: %d test items are unknown to the model; their %d target events count as misses",
            n_unknown_items, int(unknown_i[~unknown_u].sum()),
        )
    return _Targets(keys, width, eval_users, np.append(first, len(keys)).astype(np.int64), n_targets,
                    n_unknown_users, n_unknown_items)


@dataclass
class _TrainingStats:
    """Item popularity and similarity from the training data (for novelty, arp and cosine diversity)."""

    pop: np.ndarray | None = None  # training users per item
    selfinfo: np.ndarray | None = None  # -log2 of each item's share of the training users
    xn: sp.csr_matrix | None = None  # items x users, each item's binary column scaled to unit length
    has_col: np.ndarray | None = None  # items with training users


def _training_stats(names: tuple[str, ...], explicit: bool, need_cos: bool, train, user_items, user_map: IdMap,
                    item_map: IdMap) -> tuple[_TrainingStats, tuple[str, ...]]:
    """The statistics the chosen metrics need, and the metric names left.

    Without training data the metrics that need it are an error when asked for by name
    (``explicit``) and are otherwise dropped with a warning.
    """
    n_items = len(item_map)
    need_pop = [m for m in names if m in _POPULARITY_METRICS]
    stats = _TrainingStats()
    if not (need_pop or need_cos):
        return stats, names
    pairs = _train_pairs(train, user_items, user_map, item_map, n_items)
    if pairs is None:
        dropped = need_pop + (["diversity"] if need_cos else [])
        if explicit:
            raise DataError(
                f"evaluate: {dropped} need training data, got a model without user_items_ and no train; "
                f"pass train=<the training Interactions>"
            )
        logger.warning("evaluate: no training data (model.user_items_ or train=); skipping %s", dropped)
        return stats, tuple(m for m in names if m not in dropped)
    counts = np.bincount(pairs.indices, minlength=n_items).astype(np.float64)
    n_train_users = max(int((np.diff(pairs.indptr) > 0).sum()), 1)
    stats.pop = counts
    stats.selfinfo = -np.log2(np.maximum(counts, 1.0) / n_train_users)
    if need_cos:
        xn = pairs.T.tocsr()
        scale = 1.0 / np.sqrt(np.maximum(counts, 1.0))
        xn.data = np.repeat(scale, np.diff(xn.indptr)).astype(np.float32)
        stats.xn, stats.has_col = xn, counts > 0
    return stats, names


def _batch_size(batch_size: int | None, n_items: int, kmax: int, n_eval: int) -> int:
    """Users per ``recommend_indices`` call: the caller's, else about ``_BATCH_BYTES`` of float32 scores."""
    if batch_size is None:
        batch_size = min(max(1, _BATCH_BYTES // (4 * max(n_items, kmax, 1))), _MAX_BATCH_USERS)
    return int(min(batch_size, n_eval))


class _Totals:
    """Running sums per (metric, k), the users each average is over, coverage, and per-user columns."""

    def __init__(self, names: tuple[str, ...], ks: tuple[int, ...], n_eval: int, n_items: int,
                 per_user: bool) -> None:
        self.sums = {(m, kk): 0.0 for m in names if m != "coverage" for kk in ks}
        self.n_with = {(m, kk): 0 for m in ("novelty", "arp", "diversity") for kk in ks}
        self.covered = {kk: np.zeros(n_items, dtype=bool) for kk in ks} if "coverage" in names else None
        # per_user=True: every user's own value (NaN where a metric is undefined for the user's list)
        self.columns = {key: np.full(n_eval, np.nan) for key in self.sums} if per_user else None

    def __contains__(self, key) -> bool:
        return key in self.sums

    def add(self, key, start: int, values: np.ndarray, defined: np.ndarray | None = None) -> None:
        """Add one batch's per-user values (rows ``start:``; ``defined``: users with a value)."""
        if defined is None:
            self.sums[key] += values.sum()
        else:
            values = values[defined]
            self.sums[key] += values.sum()
            self.n_with[key] += int(defined.sum())
        if self.columns is not None:
            if defined is None:
                self.columns[key][start:start + len(values)] = values
            else:
                self.columns[key][start + np.flatnonzero(defined)] = values


class _CosineDiversity:
    """Cosine diversity of many batches' lists at once: the item Gram of popular items is then built once per block."""

    def __init__(self, totals: _Totals, ks: tuple[int, ...], stats: _TrainingStats) -> None:
        self.totals, self.ks, self.stats = totals, ks, stats
        self.buffer: list = []
        self.start = 0  # row of the first list in the buffer

    def push(self, start: int, idx: np.ndarray) -> None:
        """Buffer one batch's lists (rows ``start:``); add the block's diversity once it is large."""
        if not self.buffer:
            self.start = start
        self.buffer.append(idx)
        if sum(len(b) for b in self.buffer) * idx.shape[1] >= _COSINE_BLOCK:
            self.flush()

    def flush(self) -> None:
        """Add the diversity of the buffered lists."""
        if not self.buffer:
            return
        block = np.concatenate(self.buffer)
        self.buffer.clear()
        ok_mask = block >= 0
        s = self.stats
        sums = _cosine_pair_sums(block, ok_mask, self.ks, s.xn, s.has_col, s.pop)
        cnt_cum = np.cumsum(ok_mask, axis=1)
        for kk in self.ks:
            cnt = cnt_cum[:, kk - 1]
            ok = cnt >= 2
            n_pairs = np.maximum(cnt * (cnt - 1) / 2.0, 1.0)
            self.totals.add(("diversity", kk), self.start, 1.0 - sums[kk] / n_pairs, ok)


def _score_batches(model, targets: _Targets, ks: tuple[int, ...], totals: _Totals, stats: _TrainingStats,
                   cats: np.ndarray | None, exclude_m: sp.csr_matrix | None, n_items: int, batch_size: int,
                   filter_seen: bool, show_progress: bool) -> None:
    """Ask the model for every evaluated user's top ``max(k)``, a batch at a time, and add each batch's metrics."""
    kmax = ks[-1]
    disc = 1.0 / np.log2(np.arange(kmax) + 2.0)  # the rank discounts of ndcg, ideal DCGs and 1 / rank
    curves = (disc, np.cumsum(disc), 1.0 / np.arange(1, kmax + 1))
    cosine = _CosineDiversity(totals, ks, stats) if ("diversity", kmax) in totals and cats is None else None
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=targets.n_eval, desc="evaluate", unit="user")
    try:
        for start in range(0, targets.n_eval, batch_size):
            stop = min(start + batch_size, targets.n_eval)
            ub = targets.users[start:stop]
            excl = None if exclude_m is None else exclude_m[ub]
            idx, _scores = model.recommend_indices(ub, kmax, filter_seen=filter_seen, exclude=excl)
            idx = _check_output(idx, len(ub), kmax, n_items)
            if cosine is not None:
                cosine.push(start, idx)
            _add_batch(totals, targets, start, stop, idx, ks, curves, stats, cats)
            if bar is not None:
                bar.update(len(ub))
        if cosine is not None:
            cosine.flush()
    finally:
        if bar is not None:
            bar.close()


def _add_batch(totals: _Totals, targets: _Targets, start: int, stop: int, idx: np.ndarray, ks: tuple[int, ...],
               curves: tuple, stats: _TrainingStats, cats: np.ndarray | None) -> None:
    """Add the metrics of the users ``start:stop`` given their top-k lists ``idx`` (-1 pads a short list)."""
    kmax = ks[-1]
    valid = idx >= 0
    # hits: does (user, recommended item) appear among the sorted target keys?
    tk = targets.keys[targets.indptr[start]:targets.indptr[stop]]
    rk = targets.users[start:stop, None] * targets.width + idx
    pos = np.minimum(np.searchsorted(tk, rk), len(tk) - 1)
    hitf = (valid & (tk[pos] == rk)).astype(np.float64)
    cum_hits = np.cumsum(hitf, axis=1)
    nt = targets.counts[start:stop].astype(np.float64)
    ci = np.where(valid, idx, 0)
    n_valid_cum = np.cumsum(valid, axis=1)
    pair_cum = diff_cum = None
    if ("diversity", kmax) in totals and cats is not None:
        pair_cum, diff_cum = _category_pair_counts(np.where(valid, cats[ci], -1))
    for kk in ks:
        _add_accuracy(totals, start, kk, hitf[:, :kk], cum_hits, nt, curves)
        _add_beyond_accuracy(totals, start, kk, idx, valid, ci, n_valid_cum, stats, pair_cum, diff_cum)


def _add_accuracy(totals: _Totals, start: int, kk: int, hk: np.ndarray, cum_hits: np.ndarray, nt: np.ndarray,
                  curves: tuple) -> None:
    """hr, precision, recall, f1, ndcg, map and mrr at ``kk`` from the hits ``hk`` of the top ``kk``."""
    disc, ideal_cum, inv_rank = curves
    nh = cum_hits[:, kk - 1]
    any_hit = nh > 0
    if ("hr", kk) in totals:
        totals.add(("hr", kk), start, any_hit.astype(np.float64))
    prec = nh / kk
    rec = nh / nt
    if ("precision", kk) in totals:
        totals.add(("precision", kk), start, prec)
    if ("recall", kk) in totals:
        totals.add(("recall", kk), start, rec)
    if ("f1", kk) in totals:
        s = prec + rec
        totals.add(("f1", kk), start, np.divide(2 * prec * rec, s, out=np.zeros_like(s), where=s > 0))
    depth = np.minimum(nt, kk).astype(np.int64)
    if ("ndcg", kk) in totals:
        totals.add(("ndcg", kk), start, (hk @ disc[:kk]) / ideal_cum[depth - 1])
    if ("map", kk) in totals:
        totals.add(("map", kk), start, (hk * cum_hits[:, :kk] * inv_rank[:kk]).sum(axis=1) / depth)
    if ("mrr", kk) in totals:
        first_hit = np.argmax(hk, axis=1)
        totals.add(("mrr", kk), start, np.where(any_hit, inv_rank[first_hit], 0.0))


def _add_beyond_accuracy(totals: _Totals, start: int, kk: int, idx: np.ndarray, valid: np.ndarray, ci: np.ndarray,
                         n_valid_cum: np.ndarray, stats: _TrainingStats, pair_cum: np.ndarray | None,
                         diff_cum: np.ndarray | None) -> None:
    """coverage, novelty, arp and category diversity at ``kk`` (cosine diversity is :class:`_CosineDiversity`'s)."""
    vk = valid[:, :kk]
    if totals.covered is not None:
        totals.covered[kk][idx[:, :kk][vk]] = True
    cnt = n_valid_cum[:, kk - 1]
    has = cnt > 0
    safe = np.maximum(cnt, 1)
    if stats.pop is not None and ("novelty", kk) in totals:
        totals.add(("novelty", kk), start, (stats.selfinfo[ci[:, :kk]] * vk).sum(axis=1) / safe, has)
    if stats.pop is not None and ("arp", kk) in totals:
        totals.add(("arp", kk), start, (stats.pop[ci[:, :kk]] * vk).sum(axis=1) / safe, has)
    if pair_cum is not None and ("diversity", kk) in totals:
        npairs, ndiff = pair_cum[:, kk - 1], diff_cum[:, kk - 1]
        totals.add(("diversity", kk), start, ndiff / np.maximum(npairs, 1), npairs > 0)


def _report(totals: _Totals, names: tuple[str, ...], ks: tuple[int, ...], n_items: int, targets: _Targets,
            user_items, n_model_users: int) -> dict:
    """The report dict: each metric's average in the order of :data:`METRICS`, then the counts."""
    n_eval = targets.n_eval
    report: dict = {}
    for name in names:
        for kk in ks:
            key = f"{name}@{kk}"
            if name == "coverage":
                report[key] = float(totals.covered[kk].sum() / n_items) if n_items else float("nan")
            elif name in ("novelty", "arp", "diversity"):
                d = totals.n_with[name, kk]
                report[key] = float(totals.sums[name, kk] / d) if d else float("nan")
            else:
                report[key] = float(totals.sums[name, kk] / n_eval)
    report["n_users"] = int(n_eval)
    report["n_unknown_users"] = targets.n_unknown_users
    report["n_unknown_items"] = targets.n_unknown_items
    cold = 0
    if user_items is not None and getattr(user_items, "shape", (0,))[0] == n_model_users:
        cold = int((sp.csr_matrix(user_items).getnnz(axis=1)[targets.users] == 0).sum())
    report["n_cold_users"] = cold
    report["n_targets"] = int(len(targets.keys))
    return report


def _per_user_frame(totals: _Totals, names: tuple[str, ...], ks: tuple[int, ...], targets: _Targets,
                    user_map: IdMap) -> pd.DataFrame:
    """One row per evaluated user: its external id, its number of targets and its value of each metric."""
    import pandas as pd

    frame = {"user": user_map.to_ids(targets.users), "n_targets": targets.counts.astype(np.int64)}
    for name in names:  # the report's order: metric, then k
        for kk in ks:
            if (name, kk) in totals.columns:
                frame[f"{name}@{kk}"] = totals.columns[name, kk]
    return pd.DataFrame(frame)


def _category_pair_counts(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per list and per depth ``k`` (column ``k - 1``): pairs with known categories, and those that differ.

    A pair at ranks ``a < b`` is in the top k iff ``b < k``, so counting every pair at its column
    ``b`` and summing along the row gives all k at once.
    """
    m, kmax = c.shape
    known = c >= 0
    pairs = np.zeros((m, kmax), dtype=np.int64)
    diff = np.zeros((m, kmax), dtype=np.int64)
    for b in range(1, kmax):  # a loop over ranks, not users
        both = known[:, :b] & known[:, b:b + 1]
        pairs[:, b] = both.sum(axis=1)
        diff[:, b] = (both & (c[:, :b] != c[:, b:b + 1])).sum(axis=1)
    return np.cumsum(pairs, axis=1), np.cumsum(diff, axis=1)


def _cosine_pair_sums(idx: np.ndarray, valid: np.ndarray, ks, xn: sp.csr_matrix, has_col: np.ndarray,
                      pop: np.ndarray, method: str | None = None) -> dict:
    """Per list and per k, the sum of the cosines of all unordered pairs in the top k.

    Two exact ways, whichever costs fewer multiply-adds for this batch:

    * one-hot lists: with ``L`` the one-hot rows of the top-k lists and ``Xn`` the unit-length item
      columns (items x users), ``||L Xn||^2`` per row is the sum of all ordered pair cosines plus
      each item with itself (1 for an item with training users, else 0), so the unordered pairs sum
      to ``(||L Xn||^2 - n_unit) / 2``; costs the summed popularity of the listed items, per k.
    * item Gram: the cosines ``C`` among the batch's distinct recommended items, then a gather of
      every pair, all k at once from prefix sums; costs ``sum_u deg_u^2`` over training users
      (``deg_u``: their recommended items) -- far cheaper when lists repeat popular items.

    ``method`` ("gram" or "lists") forces one way (for tests).
    """
    m, kmax = idx.shape
    ci = np.where(valid, idx, 0)
    rec, inv = np.unique(idx[valid], return_inverse=True)
    if len(rec) == 0:
        return {kk: np.zeros(m) for kk in ks}
    sub = xn[rec]
    deg = np.bincount(sub.indices, minlength=xn.shape[1]).astype(np.float64)
    cost_gram = float((deg * deg).sum()) + m * kmax * kmax
    cost_lists = float(sum((pop[ci[:, :kk]] * valid[:, :kk]).sum() for kk in ks))
    out = {}
    if method is None:
        method = "gram" if len(rec) <= 4096 and cost_gram <= cost_lists else "lists"
    if method == "gram":
        gram = (sub @ sub.T).toarray().astype(np.float32)
        pos = np.zeros(idx.shape, dtype=np.int64)
        pos[valid] = inv.reshape(-1)
        upper = np.triu(np.ones((kmax, kmax), dtype=bool), 1)
        col_sums = np.empty((m, kmax), dtype=np.float64)
        step = max(1, (4 << 20) // (kmax * kmax))
        for a in range(0, m, step):  # chunks keep the (rows, k, k) gather small
            p, v = pos[a:a + step], valid[a:a + step]
            pairs = gram[p[:, :, None], p[:, None, :]]
            pairs *= (v[:, :, None] & v[:, None, :] & upper)
            col_sums[a:a + step] = pairs.sum(axis=1)  # pair (i, j), i < j, counted at column j
        cum = np.cumsum(col_sums, axis=1)
        for kk in ks:
            out[kk] = cum[:, kk - 1]
        return out
    row_cost = np.cumsum((pop[ci] * valid).sum(axis=1) + kmax)
    bounds = np.searchsorted(row_cost, np.arange(1, int(row_cost[-1] // _LISTS_WORK) + 1) * _LISTS_WORK)
    bounds = np.unique(np.concatenate([[0], bounds, [m]]))
    for kk in ks:
        vk = valid[:, :kk]
        cnt = vk.sum(axis=1)
        sq = np.zeros(m, dtype=np.float64)
        for a, b in zip(bounds[:-1], bounds[1:]):  # row blocks bound the size of L Xn
            indptr = np.zeros(b - a + 1, dtype=np.int64)
            np.cumsum(cnt[a:b], out=indptr[1:])
            lists = sp.csr_matrix((np.ones(int(indptr[-1]), dtype=np.float32), idx[a:b, :kk][vk[a:b]], indptr),
                                  shape=(b - a, xn.shape[0]))
            s = lists @ xn
            if s.nnz:
                rows = np.repeat(np.arange(b - a), np.diff(s.indptr))
                sq[a:b] = np.bincount(rows, weights=s.data.astype(np.float64) ** 2, minlength=b - a)
        n_unit = (has_col[ci[:, :kk]] & vk).sum(axis=1)
        out[kk] = (sq - n_unit) / 2.0
    return out
