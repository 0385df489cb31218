"""Business rules as a re-ranker: pinned items and boosts, each with an optional date range.

:class:`Rules` is a :class:`~persona.ranking.Reranker`, so it chains after a diversifying or
calibrating re-ranker (``Reranked(model, [MMR(), Rules(...)])``) and never breaks the contract of
the model it wraps: exactly ``min(n, allowed items)`` come back, and only items the request's
filters allow.

Boosts are **additive on rank-normalised scores**: the candidate at 0-based position ``r`` of the
incoming order (of ``k`` valid candidates) has the rank score ``1 - r / k``; a boost of weight ``w``
adds ``w``; the candidates are then sorted by that (ties keep the incoming order). So ``w = 0.1``
lifts an item about a tenth of the candidate list, ``w = 1`` from the bottom to the top, and a
negative weight buries it. Rank scores, not the ranker's scores, because those differ in scale
between models and can be negative (a multiplicative boost would *bury* a negative-scored item),
and because an earlier re-ranker's order is not visible in the scores at all.

The scores Rules hands on are the rank scores of the final order (the ``t``-th highest rank score
at position ``t``, so a pinned item takes the score of its position): non-increasing, as every
answer is.

Pins put an item at a fixed 0-based position (``0`` is the top). A pinned item the request's
filters exclude -- seen, out of the allow-list, in ``exclude``, masked out -- is **not** forced in:
the list is then what it would be without the pin. So is a pinned item whose position lies beyond
the row's list. Two pins asking for one position: the first given takes it, the next goes to the
next free position.

Dates: ``start`` (inclusive) and ``end`` (exclusive) are datetimes (naive = UTC), dates, ISO-8601
strings or epoch seconds; a rule without them always applies. ``clock`` (a callable returning
such a time) replaces the wall clock, for tests and for previewing a campaign; it is not saved.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .._time import to_epoch
from .._validate import check_int, check_number
from .._warn import warn_user
from ..data.idmap import normalize_ids
from ..errors import ArtifactError, ParameterError
from ..models.base import PAD_SCORE, Recommender
from ..typing import ArrayLike, ItemId, TimePoint
from .rerank import (
    Reranker,
    _check_model,
    _pad,
    categories_from_state,
    categories_state,
    category_codes,
    check_candidates,
)

__all__ = ["Pin", "Boost", "Rules"]

log = logging.getLogger("persona.ranking")


def _epoch(t, what: str, default: float) -> float:
    if t is None:
        return default
    return to_epoch(t, what, error=ParameterError, hint="; pass a datetime (naive = UTC) or an ISO string")


def _window(start, end, what: str) -> tuple[float, float]:
    lo, hi = _epoch(start, f"{what}: start", -math.inf), _epoch(end, f"{what}: end", math.inf)
    if lo >= hi:
        raise ParameterError(f"{what}: expected start before end, got start={start!r}, end={end!r}; swap them")
    return lo, hi


@dataclasses.dataclass(frozen=True)
class Pin:
    """Show ``item`` at 0-based ``position`` (0 is the top) between ``start`` and ``end``.

    >>> from persona.ranking import Pin
    >>> Pin("sku-7", 0, start="2024-12-01", end="2024-12-25").position
    0
    """

    item: ItemId
    position: int
    start: TimePoint | None = None
    end: TimePoint | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", check_int(self.position, "Pin: position", min=0, max=10_000,
                                                       hint="0 is the top of the list"))
        normalize_ids([self.item], what="Pin: item")
        if isinstance(self.item, np.generic):  # a plain id, for the repr and the saved JSON
            object.__setattr__(self, "item", self.item.item())
        _window(self.start, self.end, "Pin")


@dataclasses.dataclass(frozen=True)
class Boost:
    """Add ``weight`` to the rank score of ``items`` (ids) or of one ``category``, between ``start`` and ``end``.

    Give ``items`` or ``category``, not both. See the module docstring for what a weight means.

    >>> from persona.ranking import Boost
    >>> Boost(0.2, items=["sku-1", "sku-2"]).weight
    0.2
    """

    weight: float
    items: Sequence[ItemId] | None = None
    category: Any = None
    start: TimePoint | None = None
    end: TimePoint | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", check_number(self.weight, "Boost: weight", min=-10.0, max=10.0,
                                                        hint="1 lifts an item from the bottom of the list to the top"))
        if (self.items is None) == (self.category is None):
            raise ParameterError("Boost: expected items=[...] or category=..., got "
                                 f"{'both' if self.items is not None else 'neither'}; give one of them")
        if self.items is not None:
            object.__setattr__(self, "items", tuple(normalize_ids(self.items, what="Boost: items").tolist()))
        _window(self.start, self.end, "Boost")


def _as(kind: type, rule, what: str):
    if isinstance(rule, kind):
        return rule
    if isinstance(rule, Mapping):
        try:
            return kind(**rule)
        except TypeError as e:
            raise ParameterError(f"Rules: {what}: expected the fields of {kind.__name__}, got {sorted(rule)} ({e})") from None
    if isinstance(rule, tuple):
        return kind(*rule)
    raise ParameterError(f"Rules: {what}: expected ps.ranking.{kind.__name__}(...) or a dict, got {type(rule).__name__}")


class Rules(Reranker):
    """Pins and boosts applied after the ranker (see the module docstring for the semantics).

    Parameters
    ----------
    pins : sequence of Pin (or dicts / tuples of its fields)
    boosts : sequence of Boost (or dicts of its fields)
    item_categories : array (one category per model item) or dict {item id: category}, optional
        Needed by category boosts; as for :class:`~persona.ranking.Calibrated`.
    clock : callable returning a time, optional
        "Now" for the date ranges; default the wall clock. Not saved with a model.

    Examples
    --------
    >>> import persona as ps
    >>> shop = ps.datasets.synthetic_shop(n_users=200, n_items=60, seed=0)
    >>> model = ps.EASE().fit(shop.interactions)
    >>> new_in = model.item_map_.ids[7]
    >>> rules = ps.ranking.Rules(pins=[ps.ranking.Pin(new_in, 2, start="2024-01-01", end="2024-02-01")],
    ...                          clock=lambda: "2024-01-15")
    >>> items, _ = ps.ranking.Reranked(model, rules).recommend(model.user_map_.ids[0], n=5, filter_seen=False)
    >>> items[2] == new_in
    True
    """

    def __init__(self, pins: Sequence[Pin] | None = None, boosts: Sequence[Boost] | None = None,
                 item_categories: ArrayLike | Mapping[ItemId, Any] | None = None,
                 clock: Callable[[], TimePoint] | None = None) -> None:
        self.pins = pins
        self.boosts = boosts
        self.item_categories = item_categories
        self.clock = clock

    # ------------------------------------------------------------------ fitting
    def fit(self, model: Recommender) -> "Rules":
        _check_model(model)
        if self.clock is not None and not callable(self.clock):
            raise ParameterError(f"Rules: clock: expected a callable returning the time, got {type(self.clock).__name__}; "
                                 "pass e.g. lambda: '2024-05-01T10:00:00'")
        pins = [_as(Pin, p, "pins") for p in _sequence(self.pins, "pins")]
        boosts = [_as(Boost, b, "boosts") for b in _sequence(self.boosts, "boosts")]
        item_map = model.item_map_
        self._codes = self._labels = None
        if self.item_categories is not None:
            self._codes, self._labels = category_codes(self.item_categories, item_map, "Rules: item_categories")
        # pins, in position order (ties: the order given); unknown items are dropped with a warning
        pin_idx = item_map.lookup(normalize_ids([p.item for p in pins], what="Pin: item")) if pins else np.zeros(0, np.int64)
        lost = [p.item for p, i in zip(pins, pin_idx) if i < 0]
        if lost:
            warn_user(f"Rules: pinned item(s) {lost[:5]} unknown to the model; those pins are ignored")
        keep = [j for j in np.argsort([p.position for p in pins], kind="stable") if pin_idx[j] >= 0] if pins else []
        self.pin_items_ = np.asarray([pin_idx[j] for j in keep], dtype=np.int64)
        self.pin_positions_ = np.asarray([pins[j].position for j in keep], dtype=np.int64)
        self.pin_windows_ = np.asarray([_window(pins[j].start, pins[j].end, "Pin") for j in keep],
                                       dtype=np.float64).reshape(-1, 2)
        self._fit_boosts(boosts, item_map)
        self._rules = (pins, boosts)
        return super().fit(model)

    def _fit_boosts(self, boosts: list, item_map) -> None:
        """Boosts as flat arrays: (item, boost) entries, (category code, boost) entries, windows, weights."""
        entries_item, entries_of, cat_code, cat_of = [], [], [], []
        for b, boost in enumerate(boosts):
            if boost.items is not None:
                idx = item_map.lookup(np.asarray(boost.items)) if boost.items else np.zeros(0, np.int64)
                if (idx < 0).any():
                    warn_user(f"Rules: boosted item(s) {np.asarray(boost.items)[idx < 0][:5].tolist()} unknown to the "
                              "model; they are ignored")
                entries_item.extend(idx[idx >= 0].tolist())
                entries_of.extend([b] * int((idx >= 0).sum()))
                continue
            if self._labels is None:
                raise ParameterError(f"Rules: the boost of category {boost.category!r} needs item_categories; pass "
                                     "Rules(..., item_categories=one category per model item)")
            hit = np.flatnonzero(self._labels == np.asarray(boost.category, dtype=self._labels.dtype)) \
                if _same_kind(boost.category, self._labels) else np.zeros(0, np.int64)
            if not len(hit):
                warn_user(f"Rules: boosted category {boost.category!r} is not among item_categories; the boost is ignored")
                continue
            cat_code.append(int(hit[0]))
            cat_of.append(b)
        self.boost_weights_ = np.asarray([b.weight for b in boosts], dtype=np.float64)
        self.boost_windows_ = np.asarray([_window(b.start, b.end, "Boost") for b in boosts],
                                         dtype=np.float64).reshape(-1, 2)
        self.boost_items_ = np.asarray(entries_item, dtype=np.int64)
        self.boost_item_of_ = np.asarray(entries_of, dtype=np.int64)
        self.boost_categories_ = np.asarray(cat_code, dtype=np.int64)
        self.boost_category_of_ = np.asarray(cat_of, dtype=np.int64)

    # ------------------------------------------------------------------ serving
    def _now(self) -> float:
        if self.clock is None:
            return time.time()
        return to_epoch(self.clock(), "Rules: clock()", error=ParameterError)

    def _active_pins(self, now: float) -> np.ndarray:
        w = self.pin_windows_
        return (w[:, 0] <= now) & (now < w[:, 1])

    def extra_candidates(self) -> np.ndarray:
        """The items pinned now: :class:`~persona.ranking.Reranked` adds them to the candidates when allowed."""
        self._check_fitted()
        return np.unique(self.pin_items_[self._active_pins(self._now())])

    def _boost(self, idx: np.ndarray, valid: np.ndarray, now: float) -> np.ndarray:
        """(m, c) summed weights of the boosts active ``now`` for each candidate."""
        w = self.boost_windows_
        weights = np.where((w[:, 0] <= now) & (now < w[:, 1]), self.boost_weights_, 0.0)
        out = np.zeros(idx.shape, dtype=np.float64)
        if len(self.boost_items_):
            items, inv = np.unique(self.boost_items_, return_inverse=True)
            per_item = np.bincount(inv.reshape(-1), weights=weights[self.boost_item_of_], minlength=len(items))
            pos = np.minimum(np.searchsorted(items, idx), len(items) - 1)
            out += np.where(valid & (items[pos] == idx), per_item[pos], 0.0)
        if len(self.boost_categories_):
            per_cat = np.bincount(self.boost_categories_, weights=weights[self.boost_category_of_],
                                  minlength=len(self._labels))
            codes = self._codes[np.where(valid, idx, 0)]
            out += np.where(valid & (codes >= 0), per_cat[np.maximum(codes, 0)], 0.0)
        return out

    def rerank(self, histories, cand_idx, cand_scores, n):
        self._check_fitted()
        histories, idx, scores, n = check_candidates(histories, cand_idx, cand_scores, n)
        m, c = idx.shape
        if idx.size and idx.max() >= self.n_items_:
            raise ParameterError(f"Rules: candidate index {idx.max()} outside the {self.n_items_} items it was fitted on")
        now = self._now()
        valid = idx >= 0
        k = valid.sum(axis=1, keepdims=True)
        rank = np.cumsum(valid, axis=1) - 1
        rank_score = np.where(valid, 1.0 - rank / np.maximum(k, 1) + self._boost(idx, valid, now), -np.inf)
        order = np.argsort(-rank_score, axis=1, kind="stable")
        idx, scores = np.take_along_axis(idx, order, 1), np.take_along_axis(rank_score, order, 1)
        active = self._active_pins(now)
        if active.any():
            idx, scores = self._place_pins(idx, scores, self.pin_items_[active], self.pin_positions_[active], n)
        return _pad(idx, scores.astype(np.float32), n)

    @staticmethod
    def _place_pins(idx, scores, items, positions, n):
        """Move each present pinned item to its position (first free one from it); the rest keep their order.

        ``scores`` are sorted (best first); each position keeps its score whichever item lands there.
        """
        m, c = idx.shape
        rows = np.arange(m)
        width = min(n, c)
        k_out = np.minimum((idx >= 0).sum(axis=1), width)
        slot_col = np.full((m, width), -1, dtype=np.int64)  # the candidate column shown in each slot
        placed = np.zeros((m, c), dtype=bool)
        cols = np.arange(width)[None, :]
        for item, p in zip(items, positions):  # a handful of rules: the loop is over them, not over rows
            if p >= width:
                continue
            hit = (idx == item) & ~placed
            present = hit.any(axis=1)
            col = hit.argmax(axis=1)
            free = (slot_col < 0) & (cols >= p) & (cols < k_out[:, None])
            slot = free.argmax(axis=1)
            ok = present & free.any(axis=1)
            slot_col[rows[ok], slot[ok]] = col[ok]
            placed[rows[ok], col[ok]] = True
        # the other candidates, in order, fill the free slots
        rest = np.argsort(placed | (idx < 0), axis=1, kind="stable")  # unplaced valid columns first
        free = (slot_col < 0) & (cols < k_out[:, None])
        nth = np.cumsum(free, axis=1) - 1
        fill = np.take_along_axis(rest, np.maximum(nth, 0), 1)
        slot_col = np.where(free, fill, slot_col)
        got = slot_col >= 0
        out_i = np.where(got, np.take_along_axis(idx, np.maximum(slot_col, 0), 1), -1)
        out_s = np.where(got, scores[:, :width], PAD_SCORE).astype(np.float32)  # the score of the position
        return out_i, out_s

    # ------------------------------------------------------------------ persistence
    def state(self):
        self._check_fitted()
        pins, boosts = self._rules
        meta = {"pins": None if self.pins is None else [_json_rule(p) for p in pins],
                "boosts": None if self.boosts is None else [_json_rule(b) for b in boosts]}
        arrays = {}
        if self._codes is not None:
            meta["categories"], arrays = categories_state(self.item_categories, self._codes, self._labels)
        return meta, arrays

    @classmethod
    def from_state(cls, meta, arrays):
        pins, boosts = meta.get("pins"), meta.get("boosts")
        for rules in (pins, boosts):
            if rules is not None and (not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules)):
                raise ArtifactError("Rules: stored pins and boosts are not lists of objects; save the model again")
        form = meta.get("categories")
        cats = categories_from_state(form, arrays) if isinstance(form, dict) else None
        return cls(pins=None if pins is None else [Pin(**p) for p in pins],
                   boosts=None if boosts is None else [Boost(**b) for b in boosts], item_categories=cats)


def _sequence(rules, what: str) -> list:
    if rules is None:
        return []
    if isinstance(rules, (Pin, Boost, Mapping, str, bytes)) or not hasattr(rules, "__iter__"):
        raise ParameterError(f"Rules: {what}: expected a list of rules, got {type(rules).__name__}; wrap one rule "
                             "in a list")
    return list(rules)


def _same_kind(value, labels: np.ndarray) -> bool:
    if labels.dtype.kind == "U":
        return isinstance(value, str)
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _plain(v):
    """A JSON-able rule field: numpy scalars as Python ones, times as epoch seconds."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return to_epoch(v, "rule time", error=ParameterError)


def _json_rule(rule) -> dict:
    # ISO strings and epoch seconds are stored as given, datetimes as epoch seconds
    return {f.name: _plain(getattr(rule, f.name)) for f in dataclasses.fields(rule)}
