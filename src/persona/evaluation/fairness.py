"""Fairness and popularity bias of recommendation lists: what gets shown, and who is served well.

Accuracy says how good the lists are on average; these metrics say *for whom* and *for what*:

* **exposure** -- how much attention each item gets. An item at 0-based rank ``r`` of a list
  gets ``1 / log2(r + 2)`` (the position weight of NDCG: 1 at the top, 0.63 second, 0.29 at the
  tenth place; ``weighting="uniform"`` counts every shown item as 1). An item's exposure is the
  sum over all audited lists.
* :func:`exposure_gini` -- the Gini coefficient of the items' exposure over the whole catalogue
  (0: every item equally shown; 1: one item takes it all).
* :func:`exposure_share` -- the share of exposure that each group of items (a brand, a provider,
  an item-age bucket, the popular head or the long tail) receives, beside its share of the
  catalogue and of the training interactions.
* :func:`popularity_lift` -- how much more popular the recommended items are than the user's own
  history (Abdollahpouri et al. 2021): ``(GAP_recs - GAP_profile) / GAP_profile`` where ``GAP`` is
  the mean over users of the mean popularity of their items; per user group.
* :func:`group_disparity` -- a per-user quality metric (NDCG@10) by user group (gender, age band,
  segment), with bootstrap intervals, and the largest gap between groups.
* :func:`calibration_kl` -- Steck's miscalibration ``KL(p || q~)`` between a user's category mix
  and their list's (as :class:`persona.ranking.Calibrated` optimises).

:func:`fairness_report` computes all of them for a model (or precomputed lists) on a test split;
:func:`fairness_audit` is the scheduled form: one call, sections ready for the HTML report, a
tidy frame to log.

Every function is vectorised over users (no Python loop over users); the tests check each
against a slow loop and with hypothesis.

References
----------
Abdollahpouri, Mansoury, Burke, Mobasher, Malthouse, "User-centered evaluation of popularity bias
in recommender systems", UMAP 2021. Steck, "Calibrated recommendations", RecSys 2018. Singh &
Joachims, "Fairness of exposure in rankings", KDD 2018.
"""

from __future__ import annotations

import datetime as _dt
import numbers
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from .._validate import check_int, check_number
from ..data.idmap import IdMap, normalize_ids
from ..data.interactions import Interactions
from ..errors import DataError, NotFittedError, ParameterError
from ..typing import ArrayLike

if TYPE_CHECKING:  # pandas only inside the functions that build frames
    import pandas as pd

__all__ = ["position_weights", "exposure", "exposure_gini", "exposure_share", "average_popularity",
           "popularity_lift", "group_disparity", "calibration_kl", "group_codes", "popularity_groups",
           "item_age_groups", "age_bands", "fairness_report", "FairnessReport", "fairness_audit", "FairnessAudit"]

WEIGHTINGS = ("position", "uniform")
UNKNOWN = "(unknown)"
MAX_BOOT = 100_000
_BOOT_CELLS = 1 << 22  # resampled values drawn at once (32 MB of int64 indices)


# ---------------------------------------------------------------------------------------------- labels
def group_codes(groups: Any, id_map: IdMap | None = None, what: str = "groups", *,
                kind: tuple[str, str, str] = ("label", "labels", "entry")) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, labels)``: one group code per entry of ``id_map`` (-1 unknown) and the labels they index.

    ``groups`` is an array with one label per entry (ints, -1 for unknown; or strings, ``""`` /
    None for unknown), or -- with ``id_map`` -- a dict ``{id: label}`` or a pandas Series indexed
    by id (ids left out are unknown). Labels are all ints or all strings. ``kind`` names them in
    messages: (singular, plural, what each belongs to), e.g. ``("category", "categories", "model item")``.

    Examples
    --------
    >>> codes, labels = group_codes(np.array(["b", "a", "", "b"]))
    >>> codes.tolist(), labels.tolist()
    ([1, 0, -1, 1], ['a', 'b'])
    """
    one, many, per = kind
    if hasattr(groups, "index") and hasattr(groups, "to_numpy") and not isinstance(groups, np.ndarray):
        groups = dict(zip(groups.index.tolist(), groups.to_numpy().tolist()))  # a pandas Series: by id
    if isinstance(groups, Mapping):
        if id_map is None:
            raise ParameterError(f"{what}: a dict {{id: {one}}} needs the ids' map; pass one {one} per {per} instead")
        n = len(id_map)
        values = np.full(n, None, dtype=object)
        if groups:
            pos = id_map.lookup(normalize_ids(list(groups.keys()), what=f"{what} keys"))
            vals = np.empty(len(pos), dtype=object)
            vals[:] = list(groups.values())
            values[pos[pos >= 0]] = vals[pos >= 0]
    else:
        values = np.asarray(groups)
        n = len(id_map) if id_map is not None else (len(values) if values.ndim == 1 else -1)
        if values.ndim != 1 or len(values) != n:
            key = "item id" if per == "model item" else "id"
            raise DataError(f"{what}: expected one {one} per {per} ({n}) or a dict {{{key}: {one}}}, got an array of "
                            f"shape {values.shape}; align it with model.item_map_.ids (or model.user_map_.ids)")
    if values.dtype.kind in "iu":
        known = values >= 0
        labels, inv = np.unique(values[known].astype(np.int64), return_inverse=True)
    else:
        if values.dtype.kind not in "UO":
            raise DataError(f"{what}: expected int or str {many}, got {values.dtype}; map them to ints or "
                            "strings first" + (" (ages: ps.evaluation.age_bands)" if one == "label" else ""))
        flat = values.astype(object)
        known = np.fromiter((v is not None and not (isinstance(v, str) and v == "")
                             and not (isinstance(v, float) and v != v)
                             and not (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v < 0)
                             for v in flat), dtype=bool, count=len(flat))
        kinds = {"str" if isinstance(v, str) else "int" if isinstance(v, numbers.Integral)
                 and not isinstance(v, bool) else type(v).__name__ for v in flat[known]}
        if not kinds <= {"str"} and not kinds <= {"int"}:
            raise DataError(f"{what}: expected all {many} to be ints or all strings, got {sorted(kinds)}; "
                            "map them to one type first")
        labels, inv = np.unique(flat[known].astype(str if kinds == {"str"} else np.int64), return_inverse=True)
    codes = np.full(len(values), -1, dtype=np.int64)
    codes[known] = inv.reshape(-1)
    return codes, labels


def _label_array(groups, id_map: IdMap | None, what: str) -> np.ndarray:
    """One label (str) per entry, :data:`UNKNOWN` where unknown."""
    codes, labels = group_codes(groups, id_map, what)
    names = np.array([str(x) for x in labels.tolist()] + [UNKNOWN], dtype=object)
    return names[np.where(codes >= 0, codes, len(labels))]


def popularity_groups(popularity: ArrayLike, head: float = 0.2) -> np.ndarray:
    """``"head"`` for the most popular ``head`` share of the items, ``"long_tail"`` for the rest.

    The head is the ``ceil(head * n_items)`` items with the largest ``popularity`` (ties: the lower
    index first), as in Abdollahpouri et al. ("the short head: the top 20% of items").

    Examples
    --------
    >>> popularity_groups([5, 0, 9, 1, 2], head=0.4).tolist()
    ['head', 'long_tail', 'head', 'long_tail', 'long_tail']
    """
    pop = np.asarray(popularity, dtype=np.float64).reshape(-1)
    head = check_number(head, "popularity_groups: head", min=0.0, max=1.0,
                        hint="the share of items in the popular head, e.g. 0.2")
    n_head = int(np.ceil(head * len(pop) - 1e-9))
    order = np.lexsort((np.arange(len(pop)), -pop))
    out = np.full(len(pop), "long_tail", dtype=object)
    out[order[:n_head]] = "head"
    return out


def item_age_groups(train: Interactions, item_map: IdMap | None = None, *, edges: Sequence[float] = (30, 90, 365),
                    now: float | None = None) -> np.ndarray:
    """An age bucket per item, from the first event of each item in ``train`` (timestamps needed).

    Buckets, with ``edges=(30, 90, 365)`` days: ``"new"`` (first seen less than 30 days before
    ``now``, or never seen), ``"30-90d"``, ``"90-365d"``, ``">=365d"``. ``now`` (epoch seconds)
    defaults to the last event of ``train``. ``item_map`` (default ``train``'s) names the items.

    Examples
    --------
    >>> import persona as ps
    >>> shop = ps.datasets.synthetic_shop(n_users=100, n_items=40, seed=0)
    >>> sorted(set(item_age_groups(shop.interactions, edges=(80, 85))))
    ['80-85d', '>=85d', 'new']
    """
    if not isinstance(train, Interactions) or train.timestamps is None:
        raise DataError("item_age_groups: expected Interactions with timestamps, got "
                        f"{type(train).__name__ if not isinstance(train, Interactions) else 'Interactions without'}"
                        "; build them with time=... (from_frame)")
    edges = [check_number(e, "item_age_groups: edges", min=0.0, min_open=True) for e in edges]
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ParameterError(f"item_age_groups: edges: expected increasing ages in days, got {edges}")
    item_map = train.item_map if item_map is None else item_map
    first = np.full(train.n_items, np.inf)
    np.minimum.at(first, train.items, train.timestamps)
    now = float(train.timestamps.max()) if now is None and len(train) else float(now or 0.0)
    pos = train.item_map.lookup(item_map.ids)
    first_m = np.where(pos >= 0, first[np.maximum(pos, 0)], np.inf)
    age_days = np.where(np.isfinite(first_m), (now - first_m) / 86400.0, 0.0)
    names = ["new"] + [f"{a:g}-{b:g}d" for a, b in zip(edges, edges[1:])] + [f">={edges[-1]:g}d"]
    bucket = np.searchsorted(np.asarray(edges), age_days, side="right")
    return np.array(names, dtype=object)[bucket]


def age_bands(ages: ArrayLike, edges: Sequence[int] = (25, 35, 45, 55, 65)) -> np.ndarray:
    """Age bands as labels: ``"<25"``, ``"25-34"``, ..., ``"65+"``; ``""`` (unknown) for a missing age.

    Examples
    --------
    >>> age_bands([19, 25, 47, 70, float("nan")]).tolist()
    ['<25', '25-34', '45-54', '65+', '']
    """
    a = np.asarray(ages, dtype=np.float64).reshape(-1)
    e = [int(x) for x in edges]
    if not e or any(b <= x for x, b in zip(e, e[1:])):
        raise ParameterError(f"age_bands: edges: expected increasing ages, got {list(edges)}")
    names = [f"<{e[0]}"] + [f"{x}-{b - 1}" for x, b in zip(e, e[1:])] + [f"{e[-1]}+"]
    out = np.array(names, dtype=object)[np.searchsorted(np.asarray(e), np.nan_to_num(a), side="right")]
    out[~np.isfinite(a)] = ""
    return out


# ---------------------------------------------------------------------------------------------- exposure
def _lists(lists, what: str = "lists") -> np.ndarray:
    idx = np.asarray(lists)
    if idx.ndim != 2 or (idx.size and idx.dtype.kind not in "iu"):
        raise DataError(f"{what}: expected a 2-D int array of item indices (users x k, -1 for padding), got "
                        f"{idx.dtype} array of shape {idx.shape}; pass e.g. model.recommend_indices(users, 10)[0]")
    return idx.astype(np.int64, copy=False)


def position_weights(k: int, weighting: str = "position") -> np.ndarray:
    """Exposure of ranks ``0..k-1``: ``1 / log2(rank + 2)`` (``"position"``) or 1 (``"uniform"``).

    Examples
    --------
    >>> position_weights(3).round(3).tolist()
    [1.0, 0.631, 0.5]
    """
    if weighting not in WEIGHTINGS:
        raise ParameterError(f"weighting: expected one of {WEIGHTINGS}, got {weighting!r}")
    if weighting == "uniform":
        return np.ones(k)
    return 1.0 / np.log2(np.arange(k) + 2.0)


def exposure(lists: ArrayLike, n_items: int, *, weighting: str = "position") -> np.ndarray:
    """Each item's exposure summed over all lists (rows of item indices, -1 padding).

    Examples
    --------
    >>> exposure([[2, 0], [2, -1]], 3, weighting="uniform").tolist()
    [1.0, 0.0, 2.0]
    """
    idx = _lists(lists)
    n_items = check_int(n_items, "exposure: n_items", min=0)
    if idx.size and idx.max() >= n_items:
        raise DataError(f"exposure: item index {idx.max()} outside the {n_items} items; pass the catalogue size")
    w = np.broadcast_to(position_weights(idx.shape[1], weighting), idx.shape)
    valid = idx >= 0
    return np.bincount(idx[valid], weights=w[valid], minlength=n_items).astype(np.float64)


def _gini(x: np.ndarray) -> float:
    total = x.sum()
    if len(x) == 0 or total <= 0:
        raise DataError("exposure_gini: no item has any exposure (no list holds an item); check the lists")
    s = np.sort(x)
    n = len(s)
    return float(2.0 * np.dot(np.arange(1, n + 1), s) / (n * total) - (n + 1.0) / n)


def exposure_gini(lists: ArrayLike, n_items: int, *, weighting: str = "position") -> float:
    """Gini coefficient of the items' exposure over the whole catalogue (unshown items count as 0).

    ``G = sum_i sum_j |e_i - e_j| / (2 n^2 mean(e))``: 0 when every item gets the same exposure,
    ``1 - 1/n`` when one item gets all of it.

    Examples
    --------
    >>> round(exposure_gini([[0, 1], [1, 0]], 2), 6)
    0.0
    >>> round(exposure_gini([[0], [0]], 4), 3)
    0.75
    """
    return _gini(exposure(lists, n_items, weighting=weighting))


def exposure_share(lists: ArrayLike, item_groups: ArrayLike, *, weighting: str = "position",
                   demand: ArrayLike | None = None) -> pd.DataFrame:
    """The share of exposure each group of items gets, beside its share of the catalogue.

    Parameters
    ----------
    lists : int array (users x k)
        Item indices, best first, -1 padding.
    item_groups : array, one label per item
        A brand, provider, age bucket, ``popularity_groups(...)``; ints (-1 unknown) or strings
        (``""`` / None unknown). Unknown items form the group ``"(unknown)"``.
    weighting : {"position", "uniform"}
    demand : float array, one per item, optional
        E.g. the training interactions per item: adds the group's share of demand and
        ``exposure_share / demand_share``.

    Returns
    -------
    pandas.DataFrame
        Indexed by group (str): ``items``, ``item_share``, ``exposure``, ``exposure_share``,
        ``exposure_per_item`` (``exposure_share / item_share``: 1 is a fair share per item), and
        with ``demand``: ``demand_share``, ``exposure_over_demand``.

    Examples
    --------
    >>> t = exposure_share([[0, 1], [0, 2]], ["a", "b", "b"], weighting="uniform")
    >>> t["exposure_share"].round(3).to_dict()
    {'a': 0.5, 'b': 0.5}
    """
    import pandas as pd

    idx = _lists(lists)
    labels = _label_array(item_groups, None, "exposure_share: item_groups")
    e = exposure(idx, len(labels), weighting=weighting)
    names, inv = np.unique(labels.astype(str), return_inverse=True)
    inv = inv.reshape(-1)
    n_g = np.bincount(inv, minlength=len(names)).astype(np.int64)
    e_g = np.bincount(inv, weights=e, minlength=len(names))
    total = e.sum()
    out = pd.DataFrame({"items": n_g, "item_share": n_g / max(len(labels), 1), "exposure": e_g,
                        "exposure_share": e_g / total if total > 0 else np.full(len(names), np.nan)},
                       index=pd.Index(names.tolist(), name="group"))
    out["exposure_per_item"] = out["exposure_share"] / out["item_share"]
    if demand is not None:
        d = np.asarray(demand, dtype=np.float64).reshape(-1)
        if d.shape != e.shape or not np.isfinite(d).all() or (d < 0).any():
            raise DataError(f"exposure_share: demand: expected one non-negative number per item ({len(e)}), got "
                            f"shape {d.shape}; pass e.g. the training interactions per item")
        d_g = np.bincount(inv, weights=d, minlength=len(names))
        out["demand_share"] = d_g / d.sum() if d.sum() > 0 else np.nan
        out["exposure_over_demand"] = out["exposure_share"] / out["demand_share"]
    return out


# ---------------------------------------------------------------------------------------------- popularity
def _history_rows(histories, m: int, n_items: int, what: str) -> sp.csr_matrix:
    """Histories (a CSR with one row per list, or a list of index arrays) as a 0/1 CSR."""
    if sp.issparse(histories):
        h = sp.csr_matrix(histories, copy=True)
        if h.shape != (m, n_items):
            raise DataError(f"{what}: expected histories with one row per list ({m}) and one column per item "
                            f"({n_items}), got shape {h.shape}")
    else:
        if histories is None or isinstance(histories, (str, bytes)) or len(histories) != m:
            raise DataError(f"{what}: expected one history (item indices) per list ({m}), got "
                            f"{type(histories).__name__ if histories is None else len(histories)}")
        lens = np.fromiter((len(x) for x in histories), dtype=np.int64, count=m)
        flat = np.concatenate([np.asarray(x, dtype=np.int64).reshape(-1) for x in histories]) if lens.sum() \
            else np.zeros(0, np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= n_items):
            raise DataError(f"{what}: history item indices must lie in [0, {n_items}), got range "
                            f"[{flat.min()}, {flat.max()}]")
        h = sp.csr_matrix((np.ones(len(flat)), (np.repeat(np.arange(m), lens), flat)), shape=(m, n_items))
    h.sum_duplicates()
    h.eliminate_zeros()
    h.data = np.ones(len(h.data))
    return h


def average_popularity(lists: ArrayLike, popularity: ArrayLike) -> np.ndarray:
    """Mean ``popularity`` of the items of each list (NaN for an empty list).

    Examples
    --------
    >>> average_popularity([[0, 1], [-1, -1]], [0.5, 0.1]).tolist()
    [0.3, nan]
    """
    idx = _lists(lists)
    pop = np.asarray(popularity, dtype=np.float64).reshape(-1)
    if idx.size and idx.max() >= len(pop):
        raise DataError(f"average_popularity: item index {idx.max()} outside the {len(pop)} items of popularity")
    valid = idx >= 0
    s = np.where(valid, pop[np.where(valid, idx, 0)], 0.0).sum(axis=1)
    c = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


def popularity_lift(lists: ArrayLike, histories: Sequence[ArrayLike] | sp.spmatrix, popularity: ArrayLike, *,
                    user_groups: ArrayLike | None = None) -> pd.DataFrame:
    """Popularity lift of the recommendations over the users' own histories, overall and by group.

    For the users of a group, ``GAP_profile`` is the mean over them of the mean popularity of
    their history's items and ``GAP_recs`` that of their lists; the lift is
    ``(GAP_recs - GAP_profile) / GAP_profile`` (0: the lists are as popular as what the users
    chose themselves; 1: twice as popular). Users with an empty history or list are left out.

    Parameters
    ----------
    lists : int array (users x k)
    histories : CSR (users x items) or list of int arrays
        Each list's user's history (e.g. ``model.user_items_[users]``).
    popularity : float array, one per item
        E.g. the share of training users who took each item.
    user_groups : array, one label per list, optional
        Adds one row per group after ``"all"``.

    Returns
    -------
    pandas.DataFrame
        Indexed by group: ``users``, ``gap_profile``, ``gap_recs``, ``lift``.

    Examples
    --------
    >>> t = popularity_lift([[0], [0]], [[1], [1]], [0.4, 0.2])
    >>> float(t.loc["all", "lift"])
    1.0
    """
    import pandas as pd

    idx = _lists(lists)
    pop = np.asarray(popularity, dtype=np.float64).reshape(-1)
    h = _history_rows(histories, idx.shape[0], len(pop), "popularity_lift: histories")
    recs = average_popularity(idx, pop)
    counts = np.diff(h.indptr)
    with np.errstate(invalid="ignore", divide="ignore"):
        prof = np.where(counts > 0, (h @ pop) / np.maximum(counts, 1), np.nan)
    ok = np.isfinite(recs) & np.isfinite(prof)
    groups = [("all", ok)]
    if user_groups is not None:
        labels = _label_array(user_groups, None, "popularity_lift: user_groups")
        if len(labels) != idx.shape[0]:
            raise DataError(f"popularity_lift: user_groups: expected one label per list ({idx.shape[0]}), got "
                            f"{len(labels)}")
        groups += [(g, ok & (labels == g)) for g in sorted(set(labels.tolist()))]
    rows = []
    for g, mask in groups:
        gp, gr = (float(prof[mask].mean()), float(recs[mask].mean())) if mask.any() else (np.nan, np.nan)
        rows.append({"group": g, "users": int(mask.sum()), "gap_profile": gp, "gap_recs": gr,
                     "lift": (gr - gp) / gp if gp > 0 else np.nan})
    return pd.DataFrame(rows).set_index("group")


# ---------------------------------------------------------------------------------------------- quality by group
def _boot_means(v: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` bootstrap means of ``v`` (resampled with replacement), drawn in bounded blocks."""
    n = len(v)
    out = np.empty(n_boot)
    step = max(1, _BOOT_CELLS // max(n, 1))
    for s in range(0, n_boot, step):
        b = min(step, n_boot - s)
        out[s:s + b] = v[rng.integers(0, n, size=(b, n))].mean(axis=1)
    return out


def group_disparity(values: ArrayLike, user_groups: ArrayLike, *, n_boot: int = 1000, conf: float = 0.95,
                    random_state: int = 0) -> pd.DataFrame:
    """A per-user metric by user group, with percentile-bootstrap intervals, and the largest gap.

    Parameters
    ----------
    values : float array, one per user
        E.g. ``ndcg@10`` from ``ps.evaluate(..., per_user=True)``; NaN (undefined) is left out.
    user_groups : array, one label per user
        Gender, age band (:func:`age_bands`), segment; ``""`` / None / -1 are ``"(unknown)"``.
    n_boot : int
        Bootstrap resamples (of the users, within each group); at most 100,000.
    conf : float
        Confidence of the intervals.
    random_state : int

    Returns
    -------
    pandas.DataFrame
        One row per group: ``users``, ``mean``, ``ci_low``, ``ci_high``, ``ratio_to_best``
        (the group's mean over the best group's); then a row ``"(max - min)"``: the best group's
        mean minus the worst's, with its interval (from the same resamples, groups resampled
        independently) and ``ratio_to_best`` the worst over the best.

    Examples
    --------
    >>> t = group_disparity([0.1, 0.3, 0.5, 0.7], ["a", "a", "b", "b"], n_boot=200)
    >>> t["mean"].round(2).to_dict()
    {'a': 0.2, 'b': 0.6, '(max - min)': 0.4}
    """
    import pandas as pd

    v = np.asarray(values, dtype=np.float64).reshape(-1)
    labels = _label_array(user_groups, None, "group_disparity: user_groups")
    if len(labels) != len(v):
        raise DataError(f"group_disparity: expected one group label per value ({len(v)}), got {len(labels)}")
    n_boot = check_int(n_boot, "group_disparity: n_boot", min=1, max=MAX_BOOT)
    conf = check_number(conf, "group_disparity: conf", min=0.0, max=1.0, min_open=True, max_open=True)
    rng = np.random.default_rng(check_int(random_state, "group_disparity: random_state", min=0))
    ok = np.isfinite(v)
    names = sorted(set(labels[ok].tolist()))
    if not names:
        raise DataError("group_disparity: no user has a defined value; check the values (all NaN)")
    lo_q, hi_q = (1.0 - conf) / 2.0, (1.0 + conf) / 2.0
    means, boots, sizes = [], [], []
    for g in names:
        x = v[ok & (labels == g)]
        means.append(float(x.mean()))
        boots.append(_boot_means(x, n_boot, rng))
        sizes.append(len(x))
    means_a, boots_a = np.asarray(means), np.stack(boots, axis=1)  # (n_boot, groups)
    best = means_a.max()
    table = pd.DataFrame({"users": sizes, "mean": means_a, "ci_low": np.quantile(boots_a, lo_q, axis=0),
                          "ci_high": np.quantile(boots_a, hi_q, axis=0),
                          "ratio_to_best": means_a / best if best > 0 else np.nan},
                         index=pd.Index(names, name="group"))
    gap = boots_a.max(axis=1) - boots_a.min(axis=1)
    table.loc["(max - min)"] = [int(sum(sizes)), float(best - means_a.min()), float(np.quantile(gap, lo_q)),
                                float(np.quantile(gap, hi_q)), float(means_a.min() / best) if best > 0 else np.nan]
    table["users"] = table["users"].astype(np.int64)
    return table


# ---------------------------------------------------------------------------------------------- calibration
def calibration_kl(lists: ArrayLike, histories: Sequence[ArrayLike] | sp.spmatrix, item_categories: ArrayLike, *, alpha: float = 0.01) -> np.ndarray:
    """Steck's miscalibration ``KL(p || q~)`` of each list against its user's history.

    ``p`` is the category distribution of the history (each item once), ``q`` that of the list,
    ``q~ = (1 - alpha) q + alpha p`` (Steck's smoothing, which keeps the KL finite); items of unknown
    category (-1, ``""``) form one more category. NaN for a row whose history or list is empty.
    The same quantity :class:`persona.ranking.Calibrated` lowers (its ``kl`` gives 0 where this
    gives NaN).

    Examples
    --------
    >>> calibration_kl([[0, 1]], [[0, 1]], [0, 1]).round(6).tolist()
    [0.0]
    >>> float(calibration_kl([[0, 0]], [[0, 1]], [0, 1])[0]) > 1.0
    True
    """
    idx = _lists(lists)
    alpha = check_number(alpha, "calibration_kl: alpha", min=0.0, max=1.0, min_open=True, max_open=True,
                         hint="Steck uses 0.01")
    codes, labels = group_codes(item_categories, None, "calibration_kl: item_categories")
    n_items, n_cat = len(codes), len(labels) + 1
    if idx.size and idx.max() >= n_items:
        raise DataError(f"calibration_kl: item index {idx.max()} outside the {n_items} items of item_categories")
    bucket = np.where(codes >= 0, codes, len(labels))
    h = _history_rows(histories, idx.shape[0], n_items, "calibration_kl: histories")
    onehot = sp.csr_matrix((np.ones(n_items), (np.arange(n_items), bucket)), shape=(n_items, n_cat))
    p_counts = np.asarray((h @ onehot).todense(), dtype=np.float64)
    hist_n = p_counts.sum(axis=1, keepdims=True)
    p = p_counts / np.maximum(hist_n, 1.0)
    valid = idx >= 0
    q = np.zeros_like(p)
    rows = np.broadcast_to(np.arange(idx.shape[0])[:, None], idx.shape)
    np.add.at(q, (rows[valid], bucket[idx[valid]]), 1.0)
    list_n = valid.sum(axis=1, keepdims=True)
    q /= np.maximum(list_n, 1)
    q_s = (1.0 - alpha) * q + alpha * p
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / np.where(q_s > 0, q_s, 1.0)), 0.0)
    kl = terms.sum(axis=1)
    return np.where((hist_n[:, 0] > 0) & (list_n[:, 0] > 0), kl, np.nan)


# ---------------------------------------------------------------------------------------------- the report
class _Recorder:
    """A model seen through ``evaluate``: answers as the model does, and keeps every list it gave."""

    def __init__(self, model) -> None:
        self.model = model
        self.user_map_, self.item_map_ = model.user_map_, model.item_map_
        self.user_items_ = getattr(model, "user_items_", None)
        self.users: list[np.ndarray] = []
        self.lists: list[np.ndarray] = []

    def recommend_indices(self, user_indices, n, *, filter_seen=True, exclude=None):
        idx, scores = self.model.recommend_indices(user_indices, n, filter_seen=filter_seen, exclude=exclude)
        self.users.append(np.asarray(user_indices, dtype=np.int64).copy())
        self.lists.append(np.asarray(idx, dtype=np.int64).copy())
        return idx, scores


class _FixedLists:
    """Precomputed top-k lists (a frame of user, item, rank) posing as a model for ``evaluate``."""

    def __init__(self, frame, train: Interactions, k: int) -> None:
        import pandas as pd

        if not isinstance(train, Interactions):
            raise ParameterError("fairness_report: precomputed lists need train= (the Interactions the model was "
                                 f"fitted on, for its id maps and the users' histories), got {type(train).__name__}")
        frame = pd.DataFrame(frame)
        missing = [c for c in ("user", "item") if c not in frame.columns]
        if missing:
            raise DataError(f"fairness_report: expected lists as a frame with columns 'user', 'item' (and 'rank' or "
                            f"'score'), as model.recommend_frame gives, got columns {list(frame.columns)}")
        self.user_map_, self.item_map_ = train.user_map, train.item_map
        self.user_items_ = train.matrix
        u = self.user_map_.lookup(normalize_ids(frame["user"].to_numpy(), what="lists: user"))
        i = self.item_map_.lookup(normalize_ids(frame["item"].to_numpy(), what="lists: item"))
        if "rank" in frame.columns:
            key = frame["rank"].to_numpy(dtype=np.float64)
        elif "score" in frame.columns:
            key = -frame["score"].to_numpy(dtype=np.float64)
        else:
            key = np.arange(len(frame), dtype=np.float64)  # the frame's order is the lists' order
        keep = (u >= 0) & (i >= 0)
        u, i, key = u[keep], i[keep], key[keep]
        order = np.lexsort((np.arange(len(u)), key, u))
        u, i = u[order], i[order]
        starts = np.searchsorted(u, u, side="left")
        pos = np.arange(len(u)) - starts
        keep = pos < k
        self._idx = np.full((len(self.user_map_), k), -1, dtype=np.int64)
        self._idx[u[keep], pos[keep]] = i[keep]

    def recommend_indices(self, user_indices, n, *, filter_seen=True, exclude=None):
        out = np.full((len(user_indices), n), -1, dtype=np.int64)
        w = min(n, self._idx.shape[1])
        out[:, :w] = self._idx[np.asarray(user_indices, dtype=np.int64), :w]
        return out, np.where(out >= 0, -np.arange(n, dtype=np.float32)[None, :], -np.inf).astype(np.float32)


@dataclass
class FairnessReport:
    """What :func:`fairness_report` measured. See its docstring for the definitions.

    Attributes
    ----------
    k : int
    summary : dict
        ``n_users``, ``ndcg@k``, ``coverage@k``, ``exposure_gini@k``, ``popularity_lift@k``,
        ``calibration_kl@k`` (when categories were given), and ``ndcg_gap@k[<grouping>]`` (best
        minus worst group) per user grouping.
    exposure : np.ndarray
        Each model item's exposure (position-weighted by default).
    shares : dict of DataFrame
        Item grouping name -> :func:`exposure_share` table (``"popularity"`` always).
    quality : dict of DataFrame
        User grouping name -> :func:`group_disparity` of NDCG@k.
    popularity : DataFrame
        :func:`popularity_lift` overall and per group of every user grouping (a ``grouping``
        column says which).
    calibration : dict of DataFrame
        User grouping name (and ``"all"``) -> :func:`group_disparity` of the calibration KL
        (empty without ``item_categories``).
    per_user : DataFrame
        One row per audited user: ``user``, ``ndcg@k``, ``hr@k``, ``arp_recs``, ``arp_profile``,
        ``calibration_kl`` and one column per user grouping.
    seconds : float
    """

    k: int
    summary: dict
    exposure: np.ndarray
    shares: dict = field(default_factory=dict)
    quality: dict = field(default_factory=dict)
    popularity: Any = None
    calibration: dict = field(default_factory=dict)
    per_user: Any = None
    seconds: float = 0.0

    def sections(self) -> list[tuple[str, pd.DataFrame]]:
        """``(title, DataFrame)`` pairs, in reading order (for an HTML report, a notebook, a log)."""
        import pandas as pd

        k = self.k
        out = [("Fairness summary", pd.DataFrame({"value": pd.Series(self.summary, dtype=float)}).rename_axis("metric"))]
        out += [(f"Exposure share by {name} (top {k})", t) for name, t in self.shares.items()]
        out += [(f"NDCG@{k} by {name}", t) for name, t in self.quality.items()]
        if self.popularity is not None:
            out.append((f"Popularity lift (top {k})", self.popularity))
        out += [(f"Calibration KL@{k} by {name}", t) for name, t in self.calibration.items()]
        return out

    def to_frame(self) -> pd.DataFrame:
        """One tidy frame of everything: ``section``, ``group``, ``metric``, ``value`` (to log or compare runs)."""
        import pandas as pd

        parts = []
        for title, t in self.sections():
            flat = t.reset_index()
            flat = flat.rename(columns={flat.columns[0]: "group"})
            long = flat.melt(id_vars=[c for c in ("group", "grouping") if c in flat.columns], var_name="metric",
                             value_name="_value").rename(columns={"_value": "value"})
            if "grouping" in long.columns:
                long["group"] = long["grouping"].astype(str) + ": " + long["group"].astype(str)
                long = long.drop(columns="grouping")
            long.insert(0, "section", title)
            parts.append(long)
        out = pd.concat(parts, ignore_index=True)
        out["group"] = out["group"].astype(str)
        out["value"] = pd.to_numeric(out["value"], errors="coerce").astype(np.float64)
        return out


def _item_labels(groups, item_map: IdMap, name: str) -> np.ndarray:
    return _label_array(groups, item_map, f"fairness_report: item_groups[{name!r}]")


def _check_groupings(groups, what: str) -> dict:
    if groups is None:
        return {}
    if not isinstance(groups, Mapping) or not all(isinstance(k, str) for k in groups):
        raise ParameterError(f"fairness_report: {what}: expected a dict {{name: labels}} (e.g. {{'gender': "
                             f"users.set_index('user_id')['gender']}}), got {type(groups).__name__}")
    return dict(groups)


def _histories(model_like, train, users: np.ndarray, user_map: IdMap, item_map: IdMap) -> sp.csr_matrix:
    """The audited users' training items (model item indices), one row each, 0/1."""
    if isinstance(train, Interactions):
        u = user_map.lookup(train.user_map.ids)[train.users]
        i = item_map.lookup(train.item_map.ids)[train.items]
        keep = (u >= 0) & (i >= 0)
        m = sp.csr_matrix((np.ones(int(keep.sum())), (u[keep], i[keep])), shape=(len(user_map), len(item_map)))
    else:
        m = getattr(model_like, "user_items_", None)
        if m is None:
            raise DataError("fairness_report: the model has no user_items_; pass train=<the training Interactions>")
        m = sp.csr_matrix(m)
    m = m[users]
    m.sum_duplicates()
    m.eliminate_zeros()
    m.data = np.ones(len(m.data))
    return m


def _popularity(model_like, train, user_map: IdMap, item_map: IdMap) -> np.ndarray:
    """The share of training users (with any item) who took each item."""
    all_users = np.arange(len(user_map)) if not isinstance(train, Interactions) else None
    if isinstance(train, Interactions):
        i = item_map.lookup(train.item_map.ids)[train.items]
        keep = i >= 0
        pairs = np.unique(train.users[keep].astype(np.int64) * len(item_map) + i[keep])
        counts = np.bincount(pairs % len(item_map), minlength=len(item_map)).astype(np.float64)
        n_users = len(np.unique(pairs // len(item_map)))
    else:
        m = _histories(model_like, None, all_users, user_map, item_map)
        counts = np.asarray(m.sum(axis=0)).ravel()
        n_users = int((np.diff(m.indptr) > 0).sum())
    return counts / max(n_users, 1)


def fairness_report(model_or_lists: Any, test: Interactions, k: int = 10, *, train: Interactions | None = None,
                    item_groups: Mapping[str, Any] | None = None, user_groups: Mapping[str, Any] | None = None,
                    item_categories: ArrayLike | Mapping | None = None, weighting: str = "position",
                    head: float = 0.2, n_boot: int = 1000, conf: float = 0.95, max_users: int | None = None,
                    exclude: Interactions | sp.spmatrix | None = None, filter_seen: bool = True,
                    random_state: int = 0) -> FairnessReport:
    """Exposure, popularity bias, quality by user group and calibration of a model's top-k lists.

    The audited users are the test users the model knows (as in :func:`persona.evaluate`, with
    the same exclusions); each gets the model's top ``k`` once, and every metric is computed from
    those lists.

    Parameters
    ----------
    model_or_lists : fitted model, or a frame of lists
        A persona model (or anything :func:`persona.evaluate` accepts), or precomputed lists as a
        frame with columns ``user``, ``item`` and ``rank`` or ``score`` (``model.recommend_frame``;
        then ``train`` is required, for the id maps and the histories).
    test : Interactions
        Held-out events: NDCG@k per user, and who is audited.
    k : int
        The list length audited.
    train : Interactions, optional
        The training data: item popularity, the users' histories and, with timestamps, item-age
        buckets. Default: the model's ``user_items_`` (no item ages).
    item_groups : dict {name: labels}, optional
        Item groupings for exposure shares, each one label per model item (array), a dict
        ``{item id: label}`` or a pandas Series indexed by item id: ``{"brand": ...,
        "provider": ...}``. ``"popularity"`` (head vs long tail, :func:`popularity_groups` with
        ``head``) is always added, ``"item age"`` (:func:`item_age_groups`) when ``train`` has
        timestamps.
    user_groups : dict {name: labels}, optional
        User groupings for quality, popularity lift and calibration by group: one label per model
        user, a dict ``{user id: label}`` or a Series indexed by user id: ``{"gender": ...,
        "age band": age_bands(...), "segment": ...}``.
    item_categories : labels per item, optional
        For the calibration KL (as ``ps.ranking.Calibrated`` takes them).
    weighting : {"position", "uniform"}
        Exposure of a shown item: ``1 / log2(rank + 2)`` or 1.
    head : float
        Share of items in the popular head.
    n_boot, conf : int, float
        Bootstrap resamples and confidence of the group intervals.
    max_users : int, optional
        Audit a seeded random sample of this many test users (a cheap scheduled run).
    exclude, filter_seen
        As in :func:`persona.evaluate`.
    random_state : int

    Returns
    -------
    FairnessReport
        ``.summary``, ``.sections()`` (``(title, DataFrame)`` pairs), ``.to_frame()``.

    Examples
    --------
    >>> import persona as ps
    >>> shop = ps.datasets.synthetic_shop(n_users=300, n_items=80, seed=0)
    >>> train, valid, test = ps.split.leave_last_out(shop.interactions)
    >>> model = ps.EASE().fit(train)
    >>> gender = dict(zip(shop.users["user_id"], shop.users["gender"]))
    >>> rep = ps.evaluation.fairness_report(model, test, train=train, user_groups={"gender": gender},
    ...                                     item_categories=shop.item_categories(model.item_map_), n_boot=100)
    >>> 0.0 < rep.summary["exposure_gini@10"] < 1.0, sorted(rep.quality)
    (True, ['gender'])
    >>> [title for title, _ in rep.sections()][:2]
    ['Fairness summary', 'Exposure share by popularity (top 10)']
    """
    from .metrics import evaluate

    t0 = time.perf_counter()
    k = check_int(k, "fairness_report: k", min=1, max=10_000)
    if weighting not in WEIGHTINGS:
        raise ParameterError(f"fairness_report: weighting: expected one of {WEIGHTINGS}, got {weighting!r}")
    if not isinstance(test, Interactions):
        raise DataError(f"fairness_report: expected test as persona Interactions, got {type(test).__name__}; "
                        "use the test part of ps.split.leave_last_out(...)")
    if train is not None and not isinstance(train, Interactions):
        raise DataError(f"fairness_report: train: expected persona Interactions, got {type(train).__name__}")
    max_users = check_int(max_users, "fairness_report: max_users", min=1, allow_none=True)
    random_state = check_int(random_state, "fairness_report: random_state", min=0)
    item_groups = _check_groupings(item_groups, "item_groups")
    user_groups = _check_groupings(user_groups, "user_groups")
    if hasattr(model_or_lists, "recommend_indices"):
        if getattr(model_or_lists, "user_map_", None) is None or getattr(model_or_lists, "item_map_", None) is None:
            raise NotFittedError(f"fairness_report: expected a fitted persona model, got {type(model_or_lists).__name__}"
                                 " without user_map_ / item_map_; call model.fit(train) first")
        model = _Recorder(model_or_lists)
    elif hasattr(model_or_lists, "columns") or isinstance(model_or_lists, Mapping):
        model = _Recorder(_FixedLists(model_or_lists, train, k))
    else:
        raise ParameterError(f"fairness_report: expected a fitted model or a frame of lists (user, item, rank), got "
                             f"{type(model_or_lists).__name__}")
    user_map, item_map = model.user_map_, model.item_map_
    if max_users is not None and len(np.unique(test.users)) > max_users:
        picked = np.random.default_rng(random_state).choice(np.unique(test.users), max_users, replace=False)
        test = test.subset(np.isin(test.users, picked))

    # 1. the lists, once, through evaluate (its exclusions and batches); per-user NDCG and HR
    _, frame = evaluate(model, test, k=k, metrics=("hr", "ndcg"), exclude=exclude, filter_seen=filter_seen,
                        per_user=True)
    users = np.concatenate(model.users)
    order = np.argsort(users, kind="stable")
    users, lists = users[order], np.concatenate(model.lists)[order][:, :k]
    n_items = len(item_map)

    # 2. item side: exposure, its Gini and its share per item grouping
    pop = _popularity(model.model, train, user_map, item_map)
    e = exposure(lists, n_items, weighting=weighting)
    groupings = {"popularity": popularity_groups(pop, head)}
    if train is not None and train.timestamps is not None:
        groupings["item age"] = item_age_groups(train, item_map)
    groupings.update({name: _item_labels(g, item_map, name) for name, g in item_groups.items()})
    shares = {name: exposure_share(lists, labels, weighting=weighting, demand=pop)  # demand: users per item
              for name, labels in groupings.items()}

    # 3. user side: quality, popularity lift and calibration, overall and per user grouping
    hist = _histories(model.model, train, users, user_map, item_map)
    if len(users) != len(frame) or not np.array_equal(user_map.lookup(frame["user"].to_numpy()), users):
        raise DataError("fairness_report: the model answered for other users than evaluate asked about; "
                        "a bug in the model's recommend_indices")
    per_user = frame
    per_user["arp_recs"] = average_popularity(lists, pop)
    counts = np.diff(hist.indptr)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_user["arp_profile"] = np.where(counts > 0, (hist @ pop) / np.maximum(counts, 1), np.nan)
    kl = None
    if item_categories is not None:
        cats = _label_array(item_categories, item_map, "fairness_report: item_categories")
        kl = calibration_kl(lists, hist, np.where(cats == UNKNOWN, "", cats), alpha=0.01)
        per_user["calibration_kl"] = kl
    labels_by = {name: _label_array(g, user_map, f"fairness_report: user_groups[{name!r}]")[users]
                 for name, g in user_groups.items()}
    for name, lab in labels_by.items():
        per_user[name] = lab
    ndcg = per_user[f"ndcg@{k}"].to_numpy()
    quality = {name: group_disparity(ndcg, lab, n_boot=n_boot, conf=conf, random_state=random_state)
               for name, lab in labels_by.items()}
    lift_parts = [popularity_lift(lists, hist, pop).assign(grouping="all")]
    lift_parts += [popularity_lift(lists, hist, pop, user_groups=lab).drop(index="all").assign(grouping=name)
                   for name, lab in labels_by.items()]
    import pandas as pd

    popularity = pd.concat(lift_parts)
    popularity = popularity[["grouping", "users", "gap_profile", "gap_recs", "lift"]]
    calibration = {}
    if kl is not None and np.isfinite(kl).any():
        calibration["all"] = group_disparity(kl, np.full(len(kl), "all", dtype=object), n_boot=n_boot, conf=conf,
                                             random_state=random_state).drop(index="(max - min)")
        calibration.update({name: group_disparity(kl, lab, n_boot=n_boot, conf=conf, random_state=random_state)
                            for name, lab in labels_by.items()})

    summary = {"n_users": float(len(users)), f"ndcg@{k}": float(np.mean(ndcg)),
               f"coverage@{k}": float((e > 0).mean()) if n_items else float("nan"),
               f"exposure_gini@{k}": _gini(e) if e.sum() > 0 else float("nan"),
               f"popularity_lift@{k}": float(popularity["lift"].iloc[0]),
               f"long_tail_share@{k}": float(shares["popularity"]["exposure_share"].get("long_tail", 0.0))}
    if kl is not None:
        summary[f"calibration_kl@{k}"] = float(np.nanmean(kl)) if np.isfinite(kl).any() else float("nan")
    for name, t in quality.items():
        summary[f"ndcg_gap@{k}[{name}]"] = float(t.loc["(max - min)", "mean"])
    return FairnessReport(k, summary, e, shares, quality, popularity, calibration, per_user,
                          time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- the audit
class FairnessAudit(list):
    """The sections of a fairness audit: a list of ``(title, DataFrame)`` pairs, ready for a report.

    Attributes
    ----------
    report : FairnessReport
        Everything measured.
    time : datetime
        When the audit ran (UTC).

    :meth:`to_frame` gives one tidy frame (``time``, ``section``, ``group``, ``metric``,
    ``value``) to append to a log or a table.
    """

    def __init__(self, report: FairnessReport, when: _dt.datetime) -> None:
        super().__init__(report.sections())
        self.report = report
        self.time = when

    @property
    def summary(self) -> dict:
        return self.report.summary

    def to_frame(self) -> pd.DataFrame:
        out = self.report.to_frame()
        out.insert(0, "time", self.time.isoformat())
        return out


def fairness_audit(model_or_lists: Any, test: Interactions, k: int = 10, *, log: str | None = None,
                   max_users: int | None = 20_000, n_boot: int = 500, **options: Any) -> FairnessAudit:
    """A scheduled fairness audit: :func:`fairness_report` as report sections, optionally logged.

    Cheap enough for a nightly cron job or a retraining step: the model ranks at most
    ``max_users`` (default 20,000) sampled test users once (the cost of ``ps.evaluate`` on them)
    and the metrics add a few vectorised passes over those lists. Pass the result to the HTML
    report as its sections, or look at :attr:`FairnessAudit.summary`.

    Parameters
    ----------
    model_or_lists, test, k
        As :func:`fairness_report`.
    log : path, optional
        Append :meth:`FairnessAudit.to_frame` to this CSV file (the header is written once), so
        successive runs can be compared.
    max_users : int or None, default 20,000
        Audit a seeded sample of this many test users (None: all).
    n_boot : int, default 500
    **options
        Passed to :func:`fairness_report` (``train``, ``item_groups``, ``user_groups``,
        ``item_categories``, ...).

    Returns
    -------
    FairnessAudit
        A list of ``(title, DataFrame)``; ``.to_frame()``, ``.summary``, ``.report``.

    Examples
    --------
    >>> import os, tempfile, persona as ps
    >>> shop = ps.datasets.synthetic_shop(n_users=300, n_items=80, seed=0)
    >>> train, valid, test = ps.split.leave_last_out(shop.interactions)
    >>> model = ps.MostPopular().fit(train)
    >>> path = os.path.join(tempfile.mkdtemp(), "fairness.csv")
    >>> audit = ps.evaluation.fairness_audit(model, test, train=train, log=path, n_boot=50)
    >>> title, table = audit[0]
    >>> title, audit.summary["exposure_gini@10"] > 0.5      # popularity: a few items get most exposure
    ('Fairness summary', True)
    """
    report = fairness_report(model_or_lists, test, k, max_users=max_users, n_boot=n_boot, **options)
    audit = FairnessAudit(report, _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0))
    if log is not None:
        import os

        frame = audit.to_frame()
        new = not os.path.exists(log) or os.path.getsize(log) == 0
        frame.to_csv(log, mode="a", header=new, index=False)
    return audit
