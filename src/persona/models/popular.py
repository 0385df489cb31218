"""Popularity: the baseline every model must beat and the fallback for users a model does not know."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from ..data.idmap import IdMap
from ..data.interactions import Interactions
from ..errors import DataError, ParameterError, UnsupportedError
from ..io.artifact import pack_csr, unpack_csr
from ..kernels import topk
from .base import Recommender
from ..typing import ArrayLike, Float32Array, Ids

__all__ = ["MostPopular"]

_MEASURES = ("users", "events", "weight")
_DAY = 86400.0


def _labels_for(ids: np.ndarray, labels, what: str) -> np.ndarray | None:
    """Labels aligned with ``ids`` from a dict / pandas Series (keyed by id) or an aligned array."""
    if labels is None:
        return None
    if hasattr(labels, "index") and hasattr(labels, "reindex"):  # pandas Series keyed by id
        vals = labels.reindex(ids).to_numpy()
    elif isinstance(labels, dict):
        vals = np.array([labels.get(k) for k in ids.tolist()], dtype=object)
    else:
        vals = np.asarray(labels)
        if len(vals) != len(ids):
            raise DataError(f"{what} has {len(vals)} entries but there are {len(ids)} ids; pass one label per "
                            "id in map order, or a dict / pandas Series keyed by id")
    return vals


def _encode_labels(vals: np.ndarray) -> tuple[IdMap, np.ndarray]:
    """IdMap of the distinct non-null labels and a code per entry (-1 for missing)."""
    vals = np.asarray(vals, dtype=object)
    present = np.array([v is not None and not (isinstance(v, float) and v != v) for v in vals], dtype=bool)
    codes = np.full(len(vals), -1, dtype=np.int32)
    if not present.any():
        return IdMap([]), codes
    sample = vals[present]
    kinds = {type(v) for v in sample}
    if kinds <= {str, np.str_}:
        arr = sample.astype(str)
    else:
        arr = np.asarray([str(v) if not isinstance(v, (int, np.integer)) else int(v) for v in sample])
        if arr.dtype.kind not in "iuU":
            arr = arr.astype(str)
    lmap, c = IdMap.encode(arr, what="labels")
    codes[present] = c
    return lmap, codes


class MostPopular(Recommender):
    """Most popular items: global, trending (time-decayed) and per user segment.

    Parameters
    ----------
    measure : {"users", "events", "weight"}
        Popularity of an item: distinct users who interacted with it (default), number of events,
        or summed confidence weight.
    half_life : float, optional
        In days. When set, every event counts ``0.5 ** (age / half_life)`` with ``age`` measured
        from the latest event (or ``now`` given to ``fit``): "trending" rather than all-time.
    segment_shrinkage : float
        With user segments, a segment's popularity is shrunk toward the global one as if
        ``segment_shrinkage`` extra events followed the global distribution; small segments then
        do not produce noisy lists.

    Notes
    -----
    ``fit(interactions, user_segments=None, item_categories=None, now=None)``: ``user_segments``
    (a demographic group per user: dict or pandas Series keyed by user id, or an array in
    ``interactions.user_ids`` order) makes ``recommend`` use the user's segment's popularity;
    ``item_categories`` (same forms, keyed by item id) enables ``top_items(category=...)``.

    A new visitor with demographics only gets the segment's list through
    ``recommend_for_history([], n, user_features={"segment": label})`` (the field is the name of
    the ``user_segments`` Series when it has one, else ``"segment"``; kept in ``segment_field_``);
    a label never seen at fit gets the global list.

    Scores are popularity shares (they sum to 1 over the catalogue).

    ``update(new)`` adds the new events' counts at once (new users and items included); with
    ``half_life`` every count decays to the new latest event first, so ``fit(a).update(b)`` counts
    what ``fit(a.concat(b))`` counts (when ``fit`` was given no ``now``). New users have no segment
    and new items no category.

    Examples
    --------
    >>> import persona as ps
    >>> inter = ps.Interactions.from_records([("u1", "a"), ("u2", "a"), ("u2", "b"), ("u3", "c")])
    >>> model = ps.MostPopular().fit(inter)
    >>> model.top_items(2)[0].tolist()
    ['a', 'b']
    >>> model.recommend("u1", n=2)[0].tolist()
    ['b', 'c']
    >>> by_segment = ps.MostPopular(segment_shrinkage=0).fit(inter, user_segments={"u1": "x", "u2": "x", "u3": "y"})
    >>> by_segment.recommend_for_history([], n=1, user_features={"segment": "y"})[0].tolist()
    ['c']
    """

    supports_similar_items = False
    answers_empty_history = True  # an empty history gets the most popular items
    supports_user_features = True  # {segment_field_: label}: a new visitor gets the segment's list

    def __init__(self, *, measure: str = "users", half_life: float | None = None,
                 segment_shrinkage: float = 10.0, num_threads: int = 0, show_progress: bool = False):
        self.measure = measure
        self.half_life = half_life
        self.segment_shrinkage = segment_shrinkage
        self.num_threads = num_threads
        self.show_progress = show_progress

    def _validate_params(self) -> None:
        if self.measure not in _MEASURES:
            raise ParameterError(f"measure must be one of {_MEASURES}, got {self.measure!r}")
        if self.half_life is not None and not (float(self.half_life) > 0):
            raise ParameterError(f"half_life must be a positive number of days or None, got {self.half_life!r}")
        if not (float(self.segment_shrinkage) >= 0):
            raise ParameterError(f"segment_shrinkage must be >= 0, got {self.segment_shrinkage!r}")

    # ------------------------------------------------------------------ fitting
    def _item_user_weights(self, inter: Interactions, now) -> sp.csr_matrix:
        """Users x items matrix whose column sums are the popularity under ``measure``/``half_life``."""
        n = len(inter)
        w = np.ones(n, dtype=np.float64)
        if self.measure == "weight":
            w = inter.weights.astype(np.float64)
        if self.half_life is not None:
            if inter.timestamps is None:
                raise DataError("MostPopular(half_life=...) needs timestamps; build the interactions with a "
                                "time column, or drop half_life for all-time popularity")
            ref = float(np.max(inter.timestamps)) if now is None else _epoch(now)
            age = np.maximum(ref - inter.timestamps, 0.0) / _DAY
            w = w * np.power(0.5, age / float(self.half_life))
            self.reference_time_ = ref
        shape = inter.shape
        if self.measure == "users":
            # one vote per user-item pair: its most recent (largest) decayed weight
            key = inter.users.astype(np.int64) * shape[1] + inter.items
            order = np.lexsort((w, key))
            ks = key[order]
            last = np.r_[ks[1:] != ks[:-1], True]
            if self.half_life is not None:  # when each pair was last seen: what update needs to re-weigh it
                self.last_seen_ = sp.csr_matrix((inter.timestamps[order][last], (ks[last] // shape[1],
                                                 ks[last] % shape[1])), shape=shape, dtype=np.float64)
            key, w = ks[last], w[order][last]
            rows, cols = key // shape[1], key % shape[1]
        else:
            rows, cols = inter.users, inter.items
        m = sp.csr_matrix((w, (rows, cols)), shape=shape, dtype=np.float64)
        m.sum_duplicates()
        return m

    def _fit(self, inter: Interactions, *, user_segments=None, item_categories=None, now=None) -> None:
        self.reference_time_ = self.last_seen_ = None
        m = self._item_user_weights(inter, now)
        pop = np.asarray(m.sum(axis=0)).ravel()
        total = pop.sum()
        share = pop / total if total > 0 else np.full(inter.n_items, 1.0 / inter.n_items)
        self.popularity_ = pop.astype(np.float32)
        self.global_scores_ = share.astype(np.float32)
        self.user_activity_ = np.diff(inter.matrix.indptr).astype(np.float32)
        self.segment_counts_ = None

        seg = _labels_for(inter.user_ids, user_segments, "user_segments")
        name = getattr(user_segments, "name", None)
        self.segment_field_ = name if isinstance(name, str) and name else "segment"
        if seg is not None:
            self.segment_map_, self.user_segment_ = _encode_labels(seg)
            n_seg = len(self.segment_map_)
            known = self.user_segment_ >= 0
            onehot = sp.csr_matrix(
                (np.ones(int(known.sum())), (self.user_segment_[known], np.flatnonzero(known))),
                shape=(n_seg, inter.n_users),
            )
            counts = np.asarray((onehot @ m).todense())
            self.segment_counts_ = counts
            self.segment_scores_ = self._shrunk(counts, share)
        else:
            self.segment_map_ = None
            self.user_segment_ = None
            self.segment_scores_ = None

        cat = _labels_for(inter.item_ids, item_categories, "item_categories")
        if cat is not None:
            self.category_map_, self.item_category_ = _encode_labels(cat)
        else:
            self.category_map_ = None
            self.item_category_ = None

    def _shrunk(self, counts: np.ndarray, share: np.ndarray) -> np.ndarray:
        """Segment popularity shrunk toward the global ``share`` (see ``segment_shrinkage``)."""
        b = float(self.segment_shrinkage)
        denom = counts.sum(axis=1, keepdims=True) + b
        denom[denom == 0] = 1.0
        return ((counts + b * share[None, :]) / denom).astype(np.float32)

    # ------------------------------------------------------------------ streaming updates
    def _update(self, batch, now=None) -> None:
        """Add the batch's votes (decayed to the new reference time) to every count."""
        from ._update import grow_csr, grow_rows, grow_vector

        inter, n_items = batch.inter, batch.n_items
        pop = grow_rows(self.popularity_.astype(np.float64), n_items)
        counts = getattr(self, "segment_counts_", None)
        if self.segment_scores_ is not None and counts is None:
            raise UnsupportedError("MostPopular.update: this model's segment counts were not saved (an artifact "
                                   "from before updates); refit it to update it")
        counts = None if counts is None else np.hstack([counts, np.zeros((len(counts), n_items - counts.shape[1]))])
        w = inter.weights.astype(np.float64) if self.measure == "weight" else np.ones(len(inter), dtype=np.float64)
        if self.half_life is not None:
            if inter.timestamps is None:
                raise DataError("MostPopular(half_life=...).update: expected new events with timestamps, got none; "
                                "build them with a time column")
            ref_old = float(self.reference_time_)
            if not np.isfinite(ref_old) or (self.measure == "users" and self.last_seen_ is None):
                raise UnsupportedError("MostPopular.update: this model's decay state was not saved (an artifact "
                                       "from before updates); refit it to update it")
            ref = max(ref_old, float(np.max(inter.timestamps)))
            scale = np.power(0.5, (ref - ref_old) / _DAY / float(self.half_life))  # everything ages alike
            pop *= scale
            if counts is not None:
                counts = counts * scale
            w = w * np.power(0.5, (ref - inter.timestamps) / _DAY / float(self.half_life))
            self.reference_time_ = ref
        if self.measure == "users":
            items, delta, users = self._new_votes(batch, w)
        else:
            items, delta, users = inter.items, w, inter.users
        pop += np.bincount(items, weights=delta, minlength=n_items)
        seg = grow_vector(self.user_segment_, batch.n_users, -1)
        if counts is not None:
            has = seg[users] >= 0
            np.add.at(counts, (seg[users[has]], items[has]), delta[has])
        total = pop.sum()
        share = pop / total if total > 0 else np.full(n_items, 1.0 / n_items)
        self.popularity_ = pop.astype(np.float32)
        self.global_scores_ = share.astype(np.float32)
        self.user_activity_ = np.diff(batch.user_items.indptr).astype(np.float32)
        if counts is not None:
            self.segment_counts_, self.user_segment_ = counts, seg
            self.segment_scores_ = self._shrunk(counts, share)
        if self.item_category_ is not None:
            self.item_category_ = grow_vector(self.item_category_, n_items, -1)
        if self.last_seen_ is not None:
            self.last_seen_ = grow_csr(self.last_seen_, (batch.n_users, n_items))

    def _new_votes(self, batch, w: np.ndarray):
        """(item, change of its vote, user) of each user-item pair of the batch, measure "users".

        A pair votes once, with the weight of its latest event: a new pair adds its vote, a known
        one only the rise of its (decayed) weight.
        """
        from ._update import grow_csr

        inter, n_items = batch.inter, batch.n_items
        key = inter.users.astype(np.int64) * n_items + inter.items
        order = np.lexsort((w, key))
        ks = key[order]
        last = np.r_[ks[1:] != ks[:-1], True]
        key, w_new = ks[last], w[order][last]
        users, items = key // n_items, key % n_items
        old = batch.old_rows()
        pos = sp.csr_matrix((np.arange(1, old.nnz + 1, dtype=np.float64), old.indices, old.indptr), shape=old.shape)
        known = np.asarray(pos[users, items]).ravel() > 0
        if self.half_life is None:
            return items, np.where(known, 0.0, 1.0), users
        seen = grow_csr(self.last_seen_, old.shape)
        t_old = np.asarray(seen[users, items]).ravel()
        t_new = (inter.timestamps[order][last]).astype(np.float64)
        t = np.where(known, np.maximum(t_old, t_new), t_new)
        h, ref = float(self.half_life) * _DAY, float(self.reference_time_)
        vote = np.power(0.5, (ref - t) / h)
        before = np.where(known, np.power(0.5, (ref - t_old) / h), 0.0)
        s = seen.tocoo()
        r0, c0 = s.row.astype(np.int64), s.col.astype(np.int64)
        keep = ~np.isin(r0 * n_items + c0, key)  # the batch's pairs get their new time
        self.last_seen_ = sp.csr_matrix((np.concatenate([s.data[keep], t]),
                                         (np.concatenate([r0[keep], users]), np.concatenate([c0[keep], items]))),
                                        shape=old.shape, dtype=np.float64)
        return items, vote - before, users

    # ------------------------------------------------------------------ scoring
    def _score_users(self, user_indices: np.ndarray) -> np.ndarray:
        if self.segment_scores_ is None:
            return np.broadcast_to(self.global_scores_, (len(user_indices), self.n_items))
        seg = self.user_segment_[user_indices]
        out = np.empty((len(user_indices), self.n_items), dtype=np.float32)
        has = seg >= 0
        out[has] = self.segment_scores_[seg[has]]
        out[~has] = self.global_scores_
        return out

    def _score_histories(self, histories) -> np.ndarray:
        return np.broadcast_to(self.global_scores_, (len(histories), self.n_items))

    def _describe_users(self, values):
        """Segment codes (-1: no segment known) of visitors' ``{segment_field_: label}`` dicts."""
        if self.segment_map_ is None:
            raise ParameterError("MostPopular: user_features: expected a model fitted with user_segments, got one "
                                 "fitted without; pass fit(..., user_segments=...) to answer by segment")
        codes = np.full(len(values), -1, dtype=np.int64)
        for r, v in enumerate(values):
            if v is None:
                continue
            if not isinstance(v, Mapping):
                raise ParameterError(f"MostPopular: user_features: expected a dict {{field: value}}, got "
                                     f"{type(v).__name__}")
            unknown = [k for k in v if k != self.segment_field_]
            if unknown:
                raise ParameterError(f"MostPopular: user_features: expected the field {self.segment_field_!r} (the "
                                     f"segments it was fitted with), got unknown field(s) {unknown}; drop them")
            label = v.get(self.segment_field_)
            if label is not None:
                codes[r] = self._segment_code(label)
        return codes, codes >= 0

    def _segment_code(self, label) -> int:
        """Index of a segment label (-1 when unknown); labels compare as text, as they are stored."""
        ids = self.segment_map_.ids
        if ids.dtype.kind == "U":
            return self.segment_map_.index_of(str(label))
        try:
            return self.segment_map_.index_of(label)
        except Exception:  # noqa: BLE001 - a label of another type is simply not a known segment
            return -1

    def _score_described(self, histories, codes: np.ndarray) -> np.ndarray:
        out = np.empty((len(codes), self.n_items), dtype=np.float32)
        has = codes >= 0
        out[has] = self.segment_scores_[codes[has]]
        out[~has] = self.global_scores_
        return out

    def _score_audience(self, item_indices: np.ndarray) -> np.ndarray:
        """Segment affinity for the items; ties (and the no-segment case) go to the most active users."""
        act = self.user_activity_
        tiebreak = act / (act.max() + 1.0)
        if self.segment_scores_ is None:
            return tiebreak
        seg_aff = self.segment_scores_[:, item_indices].sum(axis=1)
        glob_aff = self.global_scores_[item_indices].sum()
        aff = np.where(self.user_segment_ >= 0, seg_aff[np.maximum(self.user_segment_, 0)], glob_aff)
        # affinity differences dominate; activity only orders users of one segment
        spread = np.diff(np.unique(aff)).min() if len(np.unique(aff)) > 1 else 1.0
        return (aff + 0.5 * spread * tiebreak).astype(np.float32)

    # ------------------------------------------------------------------ unpersonalised lists
    def top_items(self, n: int = 10, *, segment: str | int | None = None, category: str | int | None = None,
                  items: Ids | None = None, exclude: Ids | None = None,
                  mask: ArrayLike | None = None) -> tuple[np.ndarray, Float32Array]:
        """The ``n`` most popular items overall, in a user segment, or in a category.

        Returns external item ids and scores, best first.
        """
        self._check_fitted()
        n = self._n_arg(n)
        scores = self.global_scores_
        if segment is not None:
            if self.segment_map_ is None:
                raise ParameterError("this MostPopular was fitted without user_segments; pass them to fit")
            s = self.segment_map_.index_of(segment)
            if s < 0:
                raise ParameterError(f"unknown segment {segment!r}; known: {self.segment_map_.ids[:10].tolist()}")
            scores = self.segment_scores_[s]
        allow, _, mask = self._filters(1, items, exclude, mask)
        if category is not None:
            if self.category_map_ is None:
                raise ParameterError("this MostPopular was fitted without item_categories; pass them to fit")
            c = self.category_map_.index_of(category)
            if c < 0:
                raise ParameterError(f"unknown category {category!r}; known: {self.category_map_.ids[:10].tolist()}")
            in_cat = self.item_category_ == c
            mask = in_cat if mask is None else (mask & in_cat)
        idx, val = topk(scores[None, :], self._width(n), allow=allow, mask=mask)
        keep = idx[0] >= 0
        return self.item_map_.ids[idx[0][keep]], val[0][keep]

    # ------------------------------------------------------------------ persistence
    def _state(self):
        arrays = {"popularity": self.popularity_, "global_scores": self.global_scores_,
                  "user_activity": self.user_activity_}
        if self.segment_scores_ is not None:
            arrays.update(segment_scores=self.segment_scores_, user_segment=self.user_segment_,
                          segment_labels=self.segment_map_.ids)
        if self.item_category_ is not None:
            arrays.update(item_category=self.item_category_, category_labels=self.category_map_.ids)
        # what update needs beyond the scores: raw segment counts, the decay's reference time and
        # when each user-item pair was last seen
        if getattr(self, "segment_counts_", None) is not None:
            arrays["segment_counts"] = self.segment_counts_
        if getattr(self, "last_seen_", None) is not None:
            arrays.update(pack_csr("last_seen", self.last_seen_))
        meta = {"segment_field": self.segment_field_}
        if getattr(self, "reference_time_", None) is not None:
            meta["reference_time"] = float(self.reference_time_)
        return meta, arrays

    def _restore(self, meta, arrays):
        field = meta.get("segment_field", "segment")
        if not isinstance(field, str):
            raise ParameterError(f"segment_field: expected a string, got {type(field).__name__}")
        self.segment_field_ = field
        self.popularity_ = np.asarray(arrays["popularity"])
        self.global_scores_ = np.asarray(arrays["global_scores"])
        self.user_activity_ = np.asarray(arrays["user_activity"])
        if "segment_scores" in arrays:
            self.segment_scores_ = np.asarray(arrays["segment_scores"])
            self.user_segment_ = np.asarray(arrays["user_segment"])
            self.segment_map_ = IdMap(np.asarray(arrays["segment_labels"]))
        else:
            self.segment_scores_ = self.user_segment_ = self.segment_map_ = None
        if "item_category" in arrays:
            self.item_category_ = np.asarray(arrays["item_category"])
            self.category_map_ = IdMap(np.asarray(arrays["category_labels"]))
        else:
            self.item_category_ = self.category_map_ = None
        self.segment_counts_ = np.asarray(arrays["segment_counts"]) if "segment_counts" in arrays else None
        shape = (len(self.user_map_), len(self.item_map_))
        self.last_seen_ = unpack_csr("last_seen", arrays, shape=shape) if "last_seen.indptr" in arrays else None
        ref = meta.get("reference_time")
        if ref is not None and not (isinstance(ref, (int, float)) and np.isfinite(ref)):
            raise ParameterError(f"reference_time: expected a finite number of epoch seconds, got {ref!r}")
        self.reference_time_ = None if ref is None else float(ref)
        if self.half_life is not None and self.reference_time_ is None:
            self.reference_time_ = float("nan")  # an artifact from before updates: update refuses (see _update)

    def _check_state(self) -> None:
        from ..io.artifact import check_array, check_indices

        n_users, n_items = len(self.user_map_), len(self.item_map_)
        check_array("popularity", self.popularity_, shape=(n_items,))
        check_array("global_scores", self.global_scores_, shape=(n_items,))
        check_array("user_activity", self.user_activity_, shape=(n_users,))
        if self.segment_scores_ is not None:
            n_seg = len(self.segment_map_)
            check_array("segment_scores", self.segment_scores_, shape=(n_seg, n_items))
            check_indices("user_segment", check_array("user_segment", self.user_segment_, kind="iu",
                                                      shape=(n_users,)), -1, n_seg)
        if self.item_category_ is not None:
            check_indices("item_category", check_array("item_category", self.item_category_, kind="iu",
                                                       shape=(n_items,)), -1, len(self.category_map_))
        if self.segment_counts_ is not None:
            check_array("segment_counts", self.segment_counts_, shape=(len(self.segment_map_), n_items))


def _epoch(t) -> float:
    """Epoch seconds of a datetime, ISO string, pandas Timestamp or number."""
    if isinstance(t, (int, float, np.integer, np.floating)):
        return float(t)
    import pandas as pd

    ts = pd.Timestamp(t)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.timestamp()
