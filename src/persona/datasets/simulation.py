"""A simulated shop whose users respond to what they are shown, with known truth: the closed loop, measured.

:func:`simulated_shop` draws a world -- users with tastes, items with appeal, a daily rhythm of
visits, new users joining and new items launching (a launch is "hot" for a while, then fades) --
in which the probability of every click is known:

* **attraction** of item ``i`` for user ``u`` on day ``t``:
  ``alpha = sigmoid(base + taste * x_u . y_i / sqrt(dim) + b_i + trend * exp(-(t - launch_i) / trend_days))``
  (``x_u``, ``y_i`` standard normal vectors; ``b_i`` the item's own appeal; no item before its launch);
* **position bias**: the list's item at position ``k`` (1 first) is examined with probability
  ``1 / log2(k + 1)`` and clicked when examined with probability ``alpha`` (the position-based
  click model), so ``P(click) = alpha / log2(k + 1)``; a click turns into a purchase with
  probability ``buy``;
* **fatigue**: an item a user has already seen is less attractive to them -- its attraction is
  multiplied by ``fatigue[0]`` after a view, ``fatigue[1]`` after a click and ``fatigue[2]`` after
  a purchase (defaults 0.7, 0.3, 0.05) -- so a list that repeats what the user already knows loses
  clicks, as in a real shop (without it, an endlessly re-clicked favourite would be the best
  recommendation). The world keeps this state per user and item (:meth:`SimulatedShop.reset`
  returns it to the end of the history);
* **visits**: each user who has joined visits on a day with their own probability; a visit is
  one request for a list (through the service under test) and ``organic_views`` items browsed on
  their own, drawn in proportion to ``exp(logit alpha)`` among the launched items (the signal
  about new items and new users that any loop can learn from).

:meth:`SimulatedShop.serve_day` runs one day through a real
:class:`~persona.serving.RecommenderService` (and its :class:`~persona.store.EventStore`): every
visitor's list is asked for with ``service.recommend``, the clicks and purchases the truth draws
are recorded with ``service.track`` carrying the answer's ``request_id`` (so attribution,
``online_metrics``, experiments and the retrain pipeline see them as a shop would), and the day's
log keeps the truth beside what happened: each shown item's click probability. The services and
stores are the caller's, passed in; this module only draws the world and the users' responses.

Randomness is split by purpose and day: who visits on day ``t`` and what they browse depend only
on the world's seed and ``t``, and the uniform draws that decide clicks come from their own
stream, so two runs that differ only in the service (the loop on or off, variant A or B) see the
same visitors and the same luck -- their difference is the services'.

>>> from persona.datasets import simulated_shop
>>> shop = simulated_shop(n_users=300, n_items=60, days=7, seed=1)
>>> history = shop.history()
>>> sorted(history["event"].unique()), int(history["user_id"].max()) < shop.n_users
(['view'], True)
>>> p = shop.click_probabilities([0, 1], [[3, 4], [5, -1]], day=0)   # -1: nothing shown there
>>> p.shape, float(p[1, 1])
((2, 2), 0.0)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validate import check_int, check_number
from ..errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SimulatedShop", "DayLog", "simulated_shop"]

#: Epoch seconds of day 0 of every simulated history (2024-01-01, UTC); history days are before it.
DAY0 = 1704067200.0
_STREAMS = {"visits": 1, "organic": 2, "clicks": 3, "history": 4}
_MAX_CELLS = 200_000_000  # user x item states (one byte each)


@dataclass
class DayLog:
    """One simulated day: what the service showed, what the users did, and the truth.

    Arrays have one row per visitor (request) and ``n`` columns (positions; ``-1`` / NaN / 0 where
    the list was shorter).
    """

    day: int
    users: np.ndarray
    items: np.ndarray
    n_shown: np.ndarray
    click_probability: np.ndarray
    clicks: np.ndarray
    purchases: np.ndarray
    request_ids: np.ndarray
    variants: np.ndarray
    sources: np.ndarray
    propensities: np.ndarray
    organic_events: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def impressions(self) -> int:
        """Shown items."""
        return int(self.n_shown.sum())

    @property
    def ctr(self) -> float:
        """Clicks per shown item."""
        return float(self.clicks.sum() / max(1, self.impressions))

    @property
    def expected_ctr(self) -> float:
        """The true click probability per shown item (the CTR without the luck of the draws)."""
        return float(self.click_probability.sum() / max(1, self.impressions))

    def __repr__(self) -> str:
        return (f"DayLog(day {self.day}: {len(self.users)} requests, {self.impressions} shown, "
                f"{int(self.clicks.sum())} clicks, CTR {self.ctr:.4f}, expected {self.expected_ctr:.4f})")


class SimulatedShop:
    """The world of :func:`simulated_shop`: its users, items, truth and daily visits (see the module doc).

    User and item ids are the integers ``0 .. n_users - 1`` and ``0 .. n_items - 1`` (every user
    and item of the horizon; ``join_day`` and ``launch_day`` say when each exists).
    """

    def __init__(self, *, user_vec, item_vec, item_bias, join_day, launch_day, visit_prob, price, params, seed):
        self.user_vec, self.item_vec, self.item_bias = user_vec, item_vec, item_bias
        self.join_day, self.launch_day, self.visit_prob, self.price = join_day, launch_day, visit_prob, price
        self.params = params
        self.seed = seed
        self.days = params["days"]
        self.history_days = params["history_days"]
        # what each user has done with each item: 0 nothing, 1 viewed, 2 clicked, 3 bought (fatigue)
        self.state = np.zeros((len(join_day), len(launch_day)), dtype=np.uint8)
        self._multiplier = np.array([1.0, *params["fatigue"]])
        self._history = None

    def reset(self) -> "SimulatedShop":
        """Forget every response of the loop: the users' state returns to the end of the history."""
        self.state[:] = 0
        frame = self.history()
        self.state[frame["user_id"].to_numpy(), frame["item_id"].to_numpy()] = 1
        return self

    @property
    def n_users(self) -> int:
        return int(len(self.join_day))

    @property
    def n_items(self) -> int:
        return int(len(self.launch_day))

    def __repr__(self) -> str:
        p = self.params
        return (f"SimulatedShop({int((self.join_day < 0).sum())} users and {int((self.launch_day < 0).sum())} items "
                f"before day 0, +{p['new_users_per_day']} users and +{p['new_items_per_day']} items a day for "
                f"{self.days} days; seed={self.seed})")

    # ------------------------------------------------------------------ the truth
    def _rng(self, purpose: str, day: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _STREAMS[purpose], int(day) + 1_000_000])

    def logits(self, users, items, day: float) -> np.ndarray:
        """The attraction logits of ``items`` for ``users`` on ``day`` (broadcast; -inf before a launch)."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        p = self.params
        u = self.user_vec[users]
        i = self.item_vec[items]
        affinity = (u * i).sum(axis=-1) / math.sqrt(u.shape[-1])
        age = day - self.launch_day[items]
        with np.errstate(over="ignore"):
            trend = p["trend"] * np.exp(-np.maximum(age, 0.0) / p["trend_days"])
        z = p["base"] + p["taste"] * affinity + self.item_bias[items] + trend
        return np.where(age >= 0, z, -np.inf)

    def attraction(self, users, items, day: float) -> np.ndarray:
        """``alpha``: the probability that ``users`` click ``items`` when they examine them on ``day``
        (their fatigue with items they already know included)."""
        users, items = np.broadcast_arrays(np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64))
        z = self.logits(users, items, day)
        with np.errstate(over="ignore"):
            fresh = 1.0 / (1.0 + np.exp(-z))
        return fresh * self._multiplier[self.state[users, items]]

    @staticmethod
    def examination(positions) -> np.ndarray:
        """The probability that position ``positions`` (0-based) is examined: ``1 / log2(k + 2)``."""
        return 1.0 / np.log2(np.asarray(positions, dtype=np.float64) + 2.0)

    def click_probabilities(self, users, lists, day: float) -> np.ndarray:
        """The true click probability of every item of every list (``-1``: no item there, 0).

        ``users`` (N,), ``lists`` (N, K) item ids in position order; returns (N, K).
        """
        users = np.asarray(users, dtype=np.int64)
        lists = np.asarray(lists, dtype=np.int64)
        if lists.ndim != 2 or lists.shape[0] != len(users):
            raise DataError(f"lists: expected one row of item ids per user, shape ({len(users)}, K), got {lists.shape}")
        if len(users) and (users.min() < 0 or users.max() >= self.n_users):
            raise DataError(f"users: expected ids in [0, {self.n_users}), got {users.min()}..{users.max()}")
        shown = lists >= 0
        if shown.any() and lists.max() >= self.n_items:
            raise DataError(f"lists: expected item ids in [0, {self.n_items}) or -1, got {lists.max()}")
        alpha = self.attraction(users[:, None], np.maximum(lists, 0), day)
        return np.where(shown, alpha * self.examination(np.arange(lists.shape[1]))[None, :], 0.0)

    def expected_ctr(self, users, lists, day: float) -> float:
        """The true CTR (clicks per shown item) of ``lists`` shown to ``users`` on ``day``."""
        p = self.click_probabilities(users, lists, day)
        return float(p.sum() / max(1, int((np.asarray(lists) >= 0).sum())))

    def users_on(self, day: int) -> np.ndarray:
        """The users who have joined by ``day``."""
        return np.flatnonzero(self.join_day <= day)

    def items_on(self, day: int) -> np.ndarray:
        """The items launched by ``day``."""
        return np.flatnonzero(self.launch_day <= day)

    def visitors(self, day: int) -> np.ndarray:
        """Who visits on ``day`` (a function of the seed and the day only)."""
        rng = self._rng("visits", day)
        come = (self.join_day <= day) & (rng.random(self.n_users) < self.visit_prob)
        return np.flatnonzero(come)

    def browse(self, users, day: int, k: int, rng: np.random.Generator) -> np.ndarray:
        """``k`` distinct launched items per user, drawn in proportion to ``exp(logit)`` (Gumbel top-k)."""
        users = np.asarray(users, dtype=np.int64)
        items = self.items_on(day)
        k = min(k, len(items))
        if k == 0 or not len(users):
            return np.zeros((len(users), 0), dtype=np.int64)
        out = np.empty((len(users), k), dtype=np.int64)
        step = max(1, 2_000_000 // max(1, len(items)))
        for lo in range(0, len(users), step):
            u = users[lo:lo + step]
            keys = self.logits(u[:, None], items[None, :], day) + rng.gumbel(size=(len(u), len(items)))
            top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
            out[lo:lo + step] = items[top]
        return out

    # ------------------------------------------------------------------ the history before day 0
    def history(self) -> pd.DataFrame:
        """Organic browsing of the ``history_days`` before day 0: ``user_id``, ``item_id``, ``timestamp``
        (epoch seconds), ``event`` (``"view"``) -- the data the first models train on (a copy)."""
        if self._history is None:
            self._history = self._make_history()
            if not self.state.any():
                self.state[self._history["user_id"].to_numpy(), self._history["item_id"].to_numpy()] = 1
        return self._history.copy()

    def _make_history(self) -> pd.DataFrame:
        import pandas as pd

        rows_u, rows_i, rows_t = [], [], []
        k = self.params["organic_views"] + self.params["history_views"]
        for day in range(-self.history_days, 0):
            rng = self._rng("history", day)
            who = np.flatnonzero((self.join_day <= day) & (rng.random(self.n_users) < self.visit_prob))
            seen = self.browse(who, day, k, rng)
            rows_u.append(np.repeat(who, seen.shape[1]))
            rows_i.append(seen.ravel())
            rows_t.append(DAY0 + day * 86400.0 + rng.uniform(0, 86400.0, seen.size))
        users = np.concatenate(rows_u) if rows_u else np.zeros(0, np.int64)
        if not len(users):
            raise DataError("the history is empty: raise history_days or the visit rate")
        frame = pd.DataFrame({"user_id": users, "item_id": np.concatenate(rows_i), "timestamp": np.concatenate(rows_t),
                              "event": "view"})
        return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)

    # ------------------------------------------------------------------ a day through the service
    def serve_day(self, day: int, service: Any, *, n: int = 10, placement: str | None = "home",
                  context: dict | None = None, organic: bool = True, track: bool = True,
                  counterfactual: dict | None = None) -> DayLog:
        """Run day ``day``: every visitor asks ``service`` for ``n`` items and responds as the truth says.

        Parameters
        ----------
        day : int
            In ``[0, days)``.
        service : persona.serving.RecommenderService
            Answers each visit (``service.recommend(user, n, context)``) and records the responses
            (``service.track``): clicks with ``event_id="click:<request id>:<item>"`` and purchases
            (value: the item's price), both carrying the answer's ``request_id``, and ``organic``
            views without one.
        n : int
            Items per list.
        placement : str or None
            ``context["placement"]`` of the requests (experiments and exploration are per placement).
        context : dict, optional
            More request context (e.g. ``{"filter_seen": False}``).
        organic : bool
            Also record each visitor's own browsing (``organic_views`` views).
        track : bool
            Record the responses (False, or a service without a store: a dry run that only shows
            lists and draws the responses; the users' state still changes).
        counterfactual : dict of str -> service or (service, n), optional
            Other services (without a store) asked the same requests, for the truth of what they
            would have shown: ``log.extra["counterfactual"][name]`` is ``(items, click_probability)``
            of their lists (of ``n`` items, or the pair's own ``n``: e.g. the logging model's top
            candidates), computed before the day's responses change the users' state -- the true
            value of another ranker (an experiment's other variant, an off-policy target) on the
            very same requests.
        """
        day = check_int(day, "day", min=0, max=self.days - 1, expected=f"a day in [0, {self.days})")
        n = check_int(n, "n", min=1, max=1000, expected="items per list, 1 to 1000")
        t0 = time.perf_counter()
        users = self.visitors(day)
        ctx = dict(context or {})
        if placement is not None:
            ctx["placement"] = placement
        v = len(users)
        items = np.full((v, n), -1, dtype=np.int64)
        props = np.full((v, n), np.nan)
        rids = np.full(v, None, dtype=object)
        variants = np.full(v, None, dtype=object)
        sources = np.full(v, None, dtype=object)
        if self._history is None:
            self.history()  # the users' state starts from their history
        others = {name: (x if isinstance(x, tuple) else (x, n)) for name, x in (counterfactual or {}).items()}
        for name, (_, size) in others.items():
            check_int(size, f"counterfactual[{name!r}] n", min=1, max=1000)
        other_items = {name: np.full((v, size), -1, dtype=np.int64) for name, (_, size) in others.items()}
        for r, u in enumerate(users.tolist()):
            rec = service.recommend(u, n=n, context=ctx)
            shown = np.asarray(rec.items)
            items[r, :len(shown)] = shown.astype(np.int64)
            if rec.propensities is not None:
                props[r, :len(shown)] = rec.propensities
            rids[r], variants[r], sources[r] = rec.request_id, rec.variant, rec.source
            for name, (other, size) in others.items():
                got = np.asarray(other.recommend(u, n=size, context=ctx).items)
                other_items[name][r, :len(got)] = got.astype(np.int64)
        n_shown = (items >= 0).sum(axis=1)
        prob = self.click_probabilities(users, items, day)
        extra = {}
        if others:
            extra["counterfactual"] = {name: (got, self.click_probabilities(users, got, day))
                                       for name, got in other_items.items()}
        draws = self._rng("clicks", day).random((v, n, 2))
        clicks = (draws[..., 0] < prob).astype(np.int64)
        buys = clicks * (draws[..., 1] < self.params["buy"])
        seen = self.browse(users, day, self.params["organic_views"], self._rng("organic", day)) if organic else None
        # the users' state after the day: what they browsed, clicked and bought
        if seen is not None and seen.size:
            rows = np.repeat(users, seen.shape[1])
            self.state[rows, seen.ravel()] = np.maximum(self.state[rows, seen.ravel()], 1)
        r_c, k_c = np.nonzero(clicks)
        level = np.where(buys[r_c, k_c] > 0, 3, 2).astype(np.uint8)
        self.state[users[r_c], items[r_c, k_c]] = np.maximum(self.state[users[r_c], items[r_c, k_c]], level)
        organic_n = 0
        if track and getattr(service, "store", True) is not None:  # a service without a store records nothing
            for r, k in zip(*np.nonzero(clicks)):
                u, item, rid = int(users[r]), int(items[r, k]), rids[r]
                props_r = {"request_id": rid} if rid is not None else None
                service.track(u, item, "click", properties=props_r,
                              event_id=None if rid is None else f"click:{rid}:{item}")
                if buys[r, k]:
                    service.track(u, item, "purchase", value=float(self.price[item]), properties=props_r)
            if seen is not None:
                for r, row in enumerate(seen.tolist()):
                    for item in row:
                        service.track(int(users[r]), int(item), "view")
                organic_n = int(seen.size)
        return DayLog(day=day, users=users, items=items, n_shown=n_shown, click_probability=prob, clicks=clicks,
                      purchases=buys, request_ids=rids, variants=variants, sources=sources, propensities=props,
                      organic_events=organic_n, seconds=time.perf_counter() - t0, extra=extra)

    def run(self, service: Any, days, *, retrainer: Any = None, retrain_every: int | None = 7,
            store: Any = None, on_day: Any = None, **options: Any) -> list[DayLog]:
        """Serve ``days`` (a range or a number of days from 0), updating the model after each one.

        ``retrainer`` (a :class:`persona.pipeline.Retrainer` publishing into ``service``): after
        each day ``run_once()`` folds the day's events in with ``model.update``, and every
        ``retrain_every`` days it retrains fully (``run_once(retrain=True)``). None: the model is
        frozen (the loop off). ``store``: flushed after each day so the retrainer reads everything.
        ``on_day(log)`` is called after each day; ``options`` go to :meth:`serve_day`.
        """
        days = range(days) if isinstance(days, int) else days
        logs = []
        for day in days:
            log = self.serve_day(day, service, **options)
            if store is not None:
                store.flush()
            if retrainer is not None:
                full = retrain_every is not None and (day + 1) % retrain_every == 0
                report = retrainer.run_once(retrain=full)
                log.extra["retrain"] = report
                if report.get("error"):
                    raise DataError(f"the retrainer failed on day {day}: {report['error']}")
            if on_day is not None:
                on_day(log)
            logs.append(log)
        return logs


def simulated_shop(n_users: int = 2000, n_items: int = 300, *, days: int = 28, history_days: int = 28,
                   new_users_per_day: int = 20, new_items_per_day: int = 5, dim: int = 8, taste: float = 1.5,
                   base: float = -3.3, item_spread: float = 0.8, trend: float = 2.0, trend_days: float = 7.0,
                   visit_rate: float = 0.12, organic_views: int = 2, history_views: int = 2, buy: float = 0.25,
                   fatigue: tuple = (0.7, 0.3, 0.05), seed: int = 0) -> SimulatedShop:
    """Draw a simulated shop with known click probabilities (see the module doc).

    Parameters
    ----------
    n_users, n_items : int
        Users and items that exist before day 0.
    days : int
        The horizon of the loop (days ``0 .. days - 1``); new users and items arrive during it.
    history_days : int
        Days of organic browsing before day 0 (:meth:`SimulatedShop.history`).
    new_users_per_day, new_items_per_day : int
        Arrivals per day during the horizon (new items are hot at launch).
    dim : int
        Width of the taste vectors.
    taste : float
        How much the user-item match moves the logit (0: no personal taste).
    base : float
        The logit's intercept (about -3: a few percent of examined items are clicked).
    item_spread : float
        Standard deviation of the items' own appeal (popularity).
    trend, trend_days : float
        A launch adds ``trend`` to the logit, fading with time constant ``trend_days``.
    visit_rate : float
        Median probability that a user visits on a given day (each user's own varies, log-normal).
    organic_views : int
        Items each visitor browses on their own per visit (recorded as views).
    history_views : int
        Extra views per visit in the history (a shop's past browsing, before recommendations).
    buy : float
        Probability that a click becomes a purchase.
    fatigue : (float, float, float)
        The attraction left to an item a user has viewed, clicked, bought.
    seed : int
        The same seed gives the same world, visitors and luck.
    """
    n_users = check_int(n_users, "n_users", min=1, error=DataError)
    n_items = check_int(n_items, "n_items", min=2, error=DataError)
    days = check_int(days, "days", min=1, max=10_000, error=DataError)
    history_days = check_int(history_days, "history_days", min=1, max=10_000, error=DataError)
    new_users_per_day = check_int(new_users_per_day, "new_users_per_day", min=0, error=DataError)
    new_items_per_day = check_int(new_items_per_day, "new_items_per_day", min=0, error=DataError)
    dim = check_int(dim, "dim", min=1, max=1024, error=DataError)
    organic_views = check_int(organic_views, "organic_views", min=0, max=1000, error=DataError)
    history_views = check_int(history_views, "history_views", min=0, max=1000, error=DataError)
    for name, v in (("taste", taste), ("base", base), ("trend", trend)):
        check_number(v, name, error=DataError)
    check_number(item_spread, "item_spread", min=0, error=DataError)
    check_number(trend_days, "trend_days", min=0, min_open=True, error=DataError)
    check_number(visit_rate, "visit_rate", min=0, max=1, min_open=True, error=DataError)
    check_number(buy, "buy", min=0, max=1, error=DataError)
    if not hasattr(fatigue, "__len__") or len(fatigue) != 3:
        raise DataError(f"fatigue: expected three multipliers (after a view, a click, a purchase), got {fatigue!r}")
    fatigue = tuple(check_number(f, f"fatigue[{k}]", min=0, max=1, error=DataError) for k, f in enumerate(fatigue))
    seed = check_int(seed, "seed", min=0, error=DataError)
    rng = np.random.default_rng([seed, 0])
    total_users = n_users + new_users_per_day * days
    total_items = n_items + new_items_per_day * days
    if total_users * total_items > _MAX_CELLS:
        raise DataError(f"{total_users} users x {total_items} items is more than the {_MAX_CELLS:,} user-item states "
                        f"the simulation keeps in memory; simulate a smaller shop")
    join = np.concatenate([np.full(n_users, -history_days - 1),
                           np.repeat(np.arange(days), new_users_per_day)]).astype(np.int64)
    # items of the past launched over the history and before it (their launch trend has mostly faded)
    launch_past = -rng.integers(1, 3 * history_days + 1, n_items)
    launch_past[: max(1, n_items // 2)] = -10 * history_days  # half the catalogue is old
    launch = np.concatenate([launch_past, np.repeat(np.arange(days), new_items_per_day)]).astype(np.int64)
    visit = np.clip(np.exp(rng.normal(math.log(visit_rate), 0.7, total_users)), 0.005, 0.9)
    params = dict(days=days, history_days=history_days, new_users_per_day=new_users_per_day,
                  new_items_per_day=new_items_per_day, dim=dim, taste=float(taste), base=float(base),
                  item_spread=float(item_spread), trend=float(trend), trend_days=float(trend_days),
                  visit_rate=float(visit_rate), organic_views=organic_views, history_views=history_views,
                  buy=float(buy), fatigue=fatigue)
    return SimulatedShop(user_vec=rng.normal(size=(total_users, dim)), item_vec=rng.normal(size=(total_items, dim)),
                         item_bias=rng.normal(0.0, item_spread, total_items), join_day=join, launch_day=launch,
                         visit_prob=visit, price=np.round(np.exp(rng.normal(3.0, 0.5, total_items)), 2),
                         params=params, seed=seed)

