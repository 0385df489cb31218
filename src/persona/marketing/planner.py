"""Audience selection and message planning: who gets which campaign, on which channel, saying what.

:class:`Planner` turns campaigns into a :class:`~persona.marketing.Plan`:

1. **scope** -- each active campaign's items (its ``items`` plus its ``categories`` in the catalog);
2. **audience** -- users scored by a propensity: :class:`ModelPropensity` ranks them with the
   model's ``recommend_users(scope, n)`` and turns the scores into conversion probabilities (a
   logistic link, calibrated on feedback with :meth:`ModelPropensity.calibrate`), or any function
   ``propensity(campaign, users, items) -> probabilities``; the campaign's audience rule (segments,
   RFM groups, allow / deny lists, minimum propensity) filters them;
3. **channels** -- a user is a candidate on a channel only with consent (the contacts' and, with
   ``consent=store``, the store's consent registry for ``marketing:<channel>``) and outside its
   quiet hours (in the user's time zone);
4. **assignment** -- :func:`persona.marketing.assign` maximises expected conversions or margin minus
   cost under the campaigns' remaining budgets and the users' remaining frequency caps (greedy with
   a 1/2 or 1/3 guarantee, or exact MILP);
   with ``uplift=`` (:mod:`persona.marketing.uplift`) the value of a message is what it *adds*:
   the predicted uplift in conversions times the margin, less the offer's cost on the conversions
   that would have happened anyway, less the message's cost;
5. **messages** -- for every chosen user the top items of the scope (``model.recommend(user, n,
   items=scope)``), a reason (the most similar item of the user's history: "because you viewed
   X"), a coupon code for coupon offers, an A/B variant, rendered with ``string.Template``.

A random ``holdout`` share of the chosen users is kept out as a control group, so the lift of
every campaign can be measured (:func:`persona.marketing.ab_test`).
"""

from __future__ import annotations

import base64
import hashlib
import math
import string
import time as _time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from .._validate import check_frame, check_int, check_number
from ..errors import ParameterError, UnknownItemError, UnsupportedError
from ._util import DAY, WEEK, epoch, utc
from .campaigns import Campaign
from .channels import Channel, ContactHistory, Contacts, FrequencyCap, default_channels
from .optimize import Assignment, assign
from .plan_result import Holdout, Message, Plan
from ..typing import ArrayLike, FrameLike, Ids, TimePoint

if TYPE_CHECKING:  # annotations only: the models and data layers are the caller's
    import pandas as pd

    from ..data.interactions import Interactions
    from ..models.base import Recommender

__all__ = ["Planner", "ModelPropensity"]

OBJECTIVES = ("margin", "conversions")
_VERBS = {"view": "viewed", "click": "looked at", "cart": "added to your cart", "purchase": "bought",
          "search": "searched for"}
_VERB_RANK = {"view": 1, "search": 1, "click": 2, "cart": 3, "purchase": 4}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class ModelPropensity:
    """Conversion probabilities from a recommender's audience scores.

    For a campaign with scope items ``S``, every user's score from ``model.recommend_users(S, n)``
    is standardised over all users (``z``) and mapped through a logistic link,
    ``p = sigmoid(intercept + slope * z)``. Before any feedback the intercept is
    ``logit(base_rate)`` and the slope ``slope``; :meth:`calibrate` fits both from observed
    conversions (Platt scaling), for one campaign or for all.

    Parameters
    ----------
    model : Recommender
        A fitted model with ``recommend_users``.
    base_rate : float
        Expected conversion rate of an average user before calibration.
    slope : float
        Log-odds per standard deviation of the score before calibration.

    Examples
    --------
    >>> import persona as ps
    >>> shop = ps.datasets.synthetic_shop(n_users=200, n_items=60, seed=0)
    >>> prop = ModelPropensity(ps.MostPopular().fit(shop.interactions), base_rate=0.05)
    >>> users, z = prop.scores(["i0001", "i0002"])
    >>> len(users) == 200, abs(float(z.mean())) < 1e-6
    (True, True)
    """

    def __init__(self, model: Recommender, *, base_rate: float = 0.02, slope: float = 1.0) -> None:
        if not hasattr(model, "recommend_users"):
            raise ParameterError(f"ModelPropensity: expected a fitted persona model, got {type(model).__name__}")
        self.model = model
        self.base_rate = check_number(base_rate, "base_rate", min=0.0, min_open=True, max=1.0)
        if self.base_rate >= 1.0:
            raise ParameterError(f"base_rate: expected a probability in (0, 1), got {base_rate!r}")
        self.slope = check_number(slope, "slope")
        self.calibration_: dict = {}
        self._cache: dict = {}

    def __repr__(self) -> str:
        return (f"ModelPropensity({type(self.model).__name__}, base_rate={self.base_rate:g}, slope={self.slope:g}, "
                f"calibrated for {sorted(map(str, self.calibration_)) or 'nothing'})")

    def scores(self, items: Ids) -> tuple[np.ndarray, np.ndarray]:
        """Every user of the model, best first, with the standardised audience score ``z``."""
        key = tuple(items)
        hit = self._cache.get(key)
        if hit is None:
            users, s = self.model.recommend_users(list(items), n=self.model.n_users)
            s = s.astype(np.float64)
            sd = s.std()
            z = (s - s.mean()) / sd if sd > 0 else np.zeros_like(s)
            hit = (users, z)
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def z(self, users: Ids, items: Ids) -> np.ndarray:
        """Standardised scores of ``users`` for ``items`` (``-inf`` for users the model does not know)."""
        from ..data.idmap import IdMap

        ids, z = self.scores(items)
        pos = IdMap(ids).lookup(users)
        out = np.full(len(pos), -np.inf)
        out[pos >= 0] = z[pos[pos >= 0]]
        return out

    def audience(self, campaign: Campaign | str | None, items: Ids, n: int) -> np.ndarray:
        """The ``n`` users with the highest scores."""
        return self.scores(items)[0][:n]

    def link(self, campaign: Campaign | str | None = None) -> tuple[float, float]:
        """(intercept, slope) used for ``campaign`` (its own calibration, the shared one, or the prior)."""
        name = getattr(campaign, "name", campaign)
        return self.calibration_.get(name, self.calibration_.get(None, (_logit(self.base_rate), self.slope)))

    def __call__(self, campaign: Campaign | str | None, users: Ids, items: Ids) -> np.ndarray:
        a, b = self.link(campaign)
        z = self.z(users, items)
        p = _sigmoid(a + b * np.where(np.isfinite(z), z, 0.0))
        return np.where(np.isfinite(z), p, 0.0)

    def calibrate(self, z: ArrayLike, converted: ArrayLike, *, campaign: Campaign | str | None = None,
                  l2: float = 1.0) -> ModelPropensity:
        """Fit ``intercept`` and ``slope`` by L2-regularised logistic regression (Newton's method).

        Parameters
        ----------
        z : float array
            Standardised scores of users who got a message (:meth:`z`).
        converted : bool / 0-1 array
            Whether each of them converted.
        campaign : Campaign or str, optional
            Calibrate this campaign only; by default the link shared by all campaigns.
        l2 : float
            Ridge penalty pulling the fit towards the current link (stabilises small samples).
        """
        z = np.asarray(z, dtype=np.float64).reshape(-1)
        y = np.asarray(converted, dtype=np.float64).reshape(-1)
        if len(z) != len(y) or len(z) == 0:
            raise ParameterError(f"calibrate: expected as many outcomes as scores, got {len(y)} and {len(z)}")
        if not np.isfinite(z).all():
            raise ParameterError("calibrate: scores must be finite (drop users the model does not know)")
        prior = np.array(self.link(campaign))
        w = prior.copy()
        X = np.stack([np.ones_like(z), z], axis=1)
        for _ in range(50):
            p = _sigmoid(X @ w)
            grad = X.T @ (p - y) + l2 * (w - prior)
            hess = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(2)
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-9:
                break
        self.calibration_[getattr(campaign, "name", campaign)] = (float(w[0]), float(w[1]))
        return self


def _as_channels(channels) -> dict:
    if channels is None:
        return default_channels()
    if isinstance(channels, Mapping):
        items = list(channels.values())
    else:
        items = list(channels)
    out = {}
    for ch in items:
        if not isinstance(ch, Channel):
            raise ParameterError(f"channels: expected Channel objects, got {type(ch).__name__}")
        if ch.name in out:
            raise ParameterError(f"channels: {ch.name!r} appears twice")
        out[ch.name] = ch
    return out


def _token(*parts) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()


def _campaign_stats(c: Campaign, t_now: float) -> dict:
    """A campaign's entry of :attr:`Plan.campaigns <persona.marketing.Plan>` before planning."""
    return {"active": c.active(t_now), "note": "", "eligible": 0, "candidates": 0, "no_consent": 0,
            "quiet_hours": 0, "capped": 0, "chosen": 0, "messages": 0, "holdouts": 0, "by_channel": {},
            "expected_conversions": 0.0, "expected_margin": 0.0, "cost": 0.0, "budget_left": None, "scope": 0,
            "worth": 0}


@dataclass
class _Target:
    """A campaign that can send now (stage 1), with its eligible audience (stage 2)."""

    campaign: Campaign
    scope: list
    order_value: float
    margin: float  # per conversion
    budget: float  # messages (or coupons) left; inf without a limit
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # contact rows
    p: np.ndarray = field(default_factory=lambda: np.zeros(0))  # their conversion probabilities
    uplift: np.ndarray | None = None  # their predicted uplift (Planner(uplift=...) only)


class _Candidates(NamedTuple):
    """(contact row, campaign number, channel number) triples the optimiser chooses from (stage 3)."""

    user: np.ndarray
    campaign: np.ndarray
    channel: np.ndarray
    p_convert: np.ndarray
    value: np.ndarray  # in the objective

    @classmethod
    def concat(cls, parts: list[_Candidates]) -> _Candidates:
        if not parts:
            empty = np.zeros(0, np.int64)
            return cls(empty, empty, empty, np.zeros(0), np.zeros(0))
        return cls(*(np.concatenate(col) for col in zip(*parts)))


def _render(c: Campaign, channel: str, variant: str, *, user, coupon: str, names: list,
            reason: str) -> tuple[str, str]:
    """(subject, text) of one message: the campaign's templates filled in."""
    fields = dict(c.fields)
    fields.update(
        user=str(user), campaign=c.name, channel=channel, offer=c.offer.text(), headline=c.offer.headline(),
        coupon=coupon, item=names[0] if names else "", items=", ".join(names), reason=reason,
        expires="" if c.end is None else utc(c.end - 1).strftime("%Y-%m-%d"), variant=variant,
    )
    text = string.Template(c.template_for(channel, variant or None)).substitute(fields)
    return string.Template(c.subject).substitute(fields), text


class Planner:
    """Plans campaigns: audience, channel, budget and caps, content. See the module docstring.

    Parameters
    ----------
    contacts : Contacts
        Consent, time zone and segment of every user that may be contacted.
    channels : sequence or mapping of Channel, optional
        Default :func:`~persona.marketing.default_channels` (e-mail, SMS, push, web).
    model : Recommender, optional
        Picks each message's items and reason; also the default propensity.
    propensity : callable, optional
        ``propensity(campaign, users, items) -> probabilities`` (one per user id in ``users``).
        If it has an ``audience(campaign, items, n)`` method, only those ``n`` (``pool``) users are
        scored. Default: ``ModelPropensity(model)``.
    catalog : pandas.DataFrame, optional
        One row per item: its id (column ``catalog_id``) and optionally ``category``, ``name``,
        ``price``: scopes by category, item names in messages, and the default order value (mean
        scope price). A polars or pyarrow table is read too.
    catalog_id : str, default "item_id"
        The catalogue's column holding the item ids (e.g. ``"sku"``), as in
        :class:`~persona.serving.RecommenderService`.
    caps : FrequencyCap
        Messages per user across all campaigns: per rolling day and week.
    history : ContactHistory, optional
        Messages already sent (counted by caps and budgets); a new empty one by default. Pass
        the same object to :class:`~persona.marketing.FeedbackRecorder` so sends are counted.
    objective : {"margin", "conversions"}
        Maximise expected margin minus message cost, or expected conversions.
    method : {"greedy", "milp"}
    pool : int, optional
        Users scored per campaign when the propensity has an ``audience`` (default: all).
    rfm : pandas.DataFrame or Series or mapping, optional
        User -> RFM group (:func:`~persona.marketing.rfm_table`), for ``AudienceRule(rfm_groups=...)``.
    holdout : float
        Share of chosen users kept out at random as a control group.
    interactions : Interactions, optional
        With event types: the reason says "bought" / "added to your cart" / "viewed" accordingly.
    filter_seen : bool
        Leave items the user already interacted with out of the message.
    random_state : int
        Seeds holdouts and variants (combined with the plan time).
    time_limit : float, optional
        Seconds for the MILP solver.
    uplift : callable, optional
        ``uplift(campaign, users, items) -> predicted uplift`` (one per user id: how much a message
        raises the conversion probability, e.g. a :class:`~persona.marketing.UpliftScorer`). Then
        the planner targets by uplift: a message on channel ``h`` is worth ``u * eff_h`` conversions
        (objective ``"conversions"``) or ``u * eff_h * margin - max(p_h - u * eff_h, 0) *
        offer_cost - cost_h`` (``"margin"``; ``p_h`` the propensity's conversion probability, so
        customers who would buy anyway cost the offer without adding margin). Default None: target
        by the propensity, as always.
    consent : EventStore, optional
        A consent registry (anything with ``allowed(users, purpose) -> bool array``, as
        :meth:`persona.store.EventStore.allowed`), read once per plan: a contact is then a candidate
        on channel ``h`` only if ``contacts`` allow ``h`` **and** the registry allows the purpose
        ``"marketing:<h>"`` (channel name in lower case) -- the user's recorded answer, else the
        purpose's default, opt-in for marketing unless the store declares otherwise. Forgotten
        users are never messaged. Refused contacts count in the plan's ``no_consent`` stats.
    """

    def __init__(self, *, contacts: Contacts, channels: Sequence[Channel] | Mapping[str, Channel] | None = None,
                 model: Recommender | None = None,
                 propensity: Callable[[Campaign, np.ndarray, Sequence[Any]], ArrayLike] | None = None,
                 catalog: FrameLike | None = None,
                 caps: FrequencyCap | None = None, history: ContactHistory | None = None, objective: str = "margin",
                 method: str = "greedy", pool: int | None = None,
                 rfm: pd.DataFrame | pd.Series | Mapping[Any, str] | None = None, holdout: float = 0.0,
                 interactions: Interactions | None = None, filter_seen: bool = True, random_state: int = 0,
                 time_limit: float | None = None, catalog_id: str = "item_id",
                 uplift: Callable[[Campaign, np.ndarray, Sequence[Any]], ArrayLike] | None = None,
                 consent: Any = None) -> None:
        if not isinstance(contacts, Contacts):
            raise ParameterError(f"Planner contacts: expected Contacts, got {type(contacts).__name__}")
        if objective not in OBJECTIVES:
            raise ParameterError(f"Planner objective: expected one of {OBJECTIVES}, got {objective!r}")
        if method not in ("greedy", "milp"):
            raise ParameterError(f"Planner method: expected 'greedy' or 'milp', got {method!r}")
        if propensity is None and model is None:
            raise ParameterError("Planner: pass a fitted model= or a propensity= function (or both)")
        if propensity is not None and not callable(propensity):
            raise ParameterError("Planner propensity: expected a callable (campaign, users, items) -> probabilities")
        self.contacts = contacts
        self.channels = _as_channels(channels)
        self.model = model
        self.propensity = propensity if propensity is not None else ModelPropensity(model)
        self.caps = caps if caps is not None else FrequencyCap()
        if not isinstance(self.caps, FrequencyCap):
            raise ParameterError(f"Planner caps: expected a FrequencyCap, got {type(self.caps).__name__}")
        self.history = history if history is not None else ContactHistory()
        self.objective = objective
        self.method = method
        self.pool = check_int(pool, "Planner pool", min=1, allow_none=True)
        self.holdout = check_number(holdout, "Planner holdout", min=0.0, max=1.0)
        if self.holdout >= 1.0:
            raise ParameterError("Planner holdout: expected a share in [0, 1)")
        self.filter_seen = bool(filter_seen)
        self.random_state = check_int(random_state, "Planner random_state", min=0, max=2**32 - 1)
        self.time_limit = check_number(time_limit, "Planner time_limit", min=0.0, min_open=True, allow_none=True,
                                       hint="seconds for the MILP solver, or None for no limit")
        self._catalog(catalog, catalog_id)
        self._rfm = self._rfm_groups(rfm)
        self._interactions = interactions
        if uplift is not None and not callable(uplift):
            raise ParameterError("Planner uplift: expected a callable (campaign, users, items) -> predicted uplift, "
                                 f"e.g. ps.marketing.UpliftScorer(learner, features), got {type(uplift).__name__}")
        self.uplift = uplift
        if consent is not None and not callable(getattr(consent, "allowed", None)):
            raise ParameterError("Planner consent: expected a consent registry such as a persona EventStore (with "
                                 f"allowed(users, purpose)), got {type(consent).__name__}")
        self.consent = consent
        self._opted: dict = {}  # channel -> the registry's answers for every contact, read once per plan

    # ------------------------------------------------------------------ set-up
    def _catalog(self, catalog, catalog_id) -> None:
        self._name, self._price, self._cat_items = {}, {}, {}
        if not isinstance(catalog_id, str) or not catalog_id:
            raise ParameterError(f"Planner catalog_id: expected the name of the catalogue's item id column "
                                 f"(e.g. 'sku'), got {catalog_id!r}")
        if catalog is None:
            return
        catalog = check_frame(catalog, "Planner catalog")
        if catalog_id not in catalog.columns:
            cols = list(catalog.columns)
            if catalog_id == "item_id":
                raise ParameterError(f"Planner catalog: expected an item id column, but it has no 'item_id' column "
                                     f"(its columns are {cols}); name the id column with catalog_id= "
                                     f"(e.g. catalog_id='sku')")
            raise ParameterError(f"Planner catalog_id={catalog_id!r}: expected a column of the catalogue, got "
                                 f"columns {cols}; pass the name of its item id column")
        ids = catalog[catalog_id].tolist()
        if "name" in catalog.columns:
            self._name = dict(zip(ids, catalog["name"].astype(str).tolist()))
        if "price" in catalog.columns:
            self._price = dict(zip(ids, catalog["price"].astype(float).tolist()))
        if "category" in catalog.columns:
            for i, c in zip(ids, catalog["category"].tolist()):
                self._cat_items.setdefault(c, []).append(i)

    def _rfm_groups(self, rfm) -> np.ndarray | None:
        if rfm is None:
            return None
        if hasattr(rfm, "columns"):
            rfm = rfm["group"]
        mapping = dict(rfm.items()) if hasattr(rfm, "items") else dict(rfm)
        return np.array([str(mapping.get(u, "prospect")) for u in self.contacts.user_ids.tolist()], dtype=object)

    def _scope(self, campaign: Campaign) -> list:
        scope = list(dict.fromkeys(campaign.items))
        for cat in campaign.categories:
            if cat not in self._cat_items:
                raise ParameterError(
                    f"Campaign {campaign.name!r}: category {cat!r} is not in the catalog"
                    + ("" if self._cat_items else "; pass catalog= (with a 'category' column) to the Planner")
                )
            scope.extend(self._cat_items[cat])
        scope = list(dict.fromkeys(scope))
        if self.model is not None:
            known = self.model.item_map_.lookup(scope) >= 0
            scope = [i for i, k in zip(scope, known.tolist()) if k]
        return scope

    def _order_value(self, campaign: Campaign, scope) -> float:
        if campaign.order_value is not None:
            return campaign.order_value
        prices = [self._price[i] for i in scope if i in self._price]
        if prices:
            return float(np.mean(prices))
        if self.objective == "margin":
            raise ParameterError(f"Campaign {campaign.name!r}: set order_value=, or pass a catalog with prices, "
                                 "to plan for margin")
        return 0.0

    # ------------------------------------------------------------------ planning
    def plan(self, campaigns: Sequence[Campaign], now: TimePoint | None = None) -> Plan:
        """Plan messages for the campaigns active at ``now`` (default: the current time).

        Every message of the plan is meant to go out at ``now``: users in a channel's quiet hours
        are left for a later plan. Budgets and caps count ``history`` (messages sent before).
        """
        campaigns = self._checked_campaigns(campaigns)
        t_now = _time.time() if now is None else epoch(now, "now")
        self._opted = self._registry_answers(campaigns)
        minute = self.contacts.local_minute(t_now)
        user_cap, chan_cap = self._remaining_caps(t_now)
        stats: dict = {}
        targets: list[_Target] = []
        parts: list[_Candidates] = []
        for c in campaigns:
            s = stats[c.name] = _campaign_stats(c, t_now)
            target = self._scoped_campaign(c, t_now, s)                          # 1. scope
            if target is None:
                continue
            target.rows, target.p = self._audience(c, target.scope)              # 2. audience
            if self.uplift is not None:
                target.uplift = self._uplift_of(c, target)
            s["eligible"] = int(len(target.rows))
            parts += self._channel_candidates(len(targets), target, minute, user_cap, s)  # 3. channels
            targets.append(target)
        candidates = _Candidates.concat(parts)
        res = self._assign(candidates, targets, user_cap, chan_cap)              # 4. assignment
        chosen = np.flatnonzero(res.chosen)
        messages, holdouts = self._messages(targets, candidates, chosen, t_now, minute, stats)  # 5. messages
        return Plan(messages, holdouts, t_now, stats, objective=self.objective, method=self.method,
                    value=res.value, upper_bound=res.upper_bound, guarantee=res.guarantee)

    def _registry_answers(self, campaigns: list[Campaign]) -> dict:
        """Channel -> whether the consent registry allows ``marketing:<channel>``, for every contact."""
        if self.consent is None:
            return {}
        users = self.contacts.user_ids
        out = {}
        for h in dict.fromkeys(h for c in campaigns for h in c.channels):
            got = np.asarray(self.consent.allowed(users, f"marketing:{h.lower()}"), dtype=bool).reshape(-1)
            if got.shape != (len(users),):
                raise ParameterError(f"Planner consent: allowed() gave {got.shape} answers for {len(users)} contacts; "
                                     "expected one per contact")
            out[h] = got
        return out

    def _allowed(self, channel: str, rows) -> np.ndarray:
        """Consent to ``channel`` of the contacts in ``rows``: the contacts' and the registry's."""
        ok = self.contacts.allowed(channel, rows)
        opted = self._opted.get(channel)
        return ok if opted is None else ok & opted[np.asarray(rows, dtype=np.int64)]

    def _checked_campaigns(self, campaigns) -> list[Campaign]:
        """``plan``'s campaigns as a list: Campaign objects with unique names, on channels the planner has."""
        if isinstance(campaigns, Campaign):
            campaigns = [campaigns]
        if campaigns is None or isinstance(campaigns, (str, bytes, dict)) or not hasattr(campaigns, "__iter__"):
            raise ParameterError(f"plan: expected a Campaign or a list of Campaigns, got {type(campaigns).__name__}; "
                                 "pass e.g. planner.plan([Campaign(...)])")
        campaigns = list(campaigns)
        for c in campaigns:
            if not isinstance(c, Campaign):
                raise ParameterError(f"plan: expected Campaign objects, got {type(c).__name__}")
        names = [c.name for c in campaigns]
        if len(set(names)) != len(names):
            raise ParameterError(f"plan: campaign names must be unique, got {names}")
        for c in campaigns:
            missing = [h for h in c.channels if h not in self.channels]
            if missing:
                raise ParameterError(f"Campaign {c.name!r} uses channel(s) {missing} the planner does not have "
                                     f"({sorted(self.channels)}); add Channel objects for them")
        return campaigns

    def _remaining_caps(self, t_now: float) -> tuple[np.ndarray, np.ndarray | None]:
        """Messages each contact may still get: across channels (per contact), and per channel
        (contacts x channels, or None when no channel has caps of its own)."""
        contacts, history = self.contacts, self.history
        user_cap = np.full(contacts.n_users, np.inf)
        if self.caps.per_day is not None:
            user_cap = np.minimum(user_cap, self.caps.per_day - history.counts(contacts, t_now, DAY))
        if self.caps.per_week is not None:
            user_cap = np.minimum(user_cap, self.caps.per_week - history.counts(contacts, t_now, WEEK))
        user_cap = np.maximum(user_cap, 0.0)
        if not any(ch.has_caps for ch in self.channels.values()):
            return user_cap, None
        chan_cap = np.full((contacts.n_users, len(self.channels)), np.inf)
        for k, (h, ch) in enumerate(self.channels.items()):
            if ch.per_day is not None:
                chan_cap[:, k] = np.minimum(chan_cap[:, k], ch.per_day - history.counts(contacts, t_now, DAY, h))
            if ch.per_week is not None:
                chan_cap[:, k] = np.minimum(chan_cap[:, k], ch.per_week - history.counts(contacts, t_now, WEEK, h))
        return user_cap, np.maximum(chan_cap, 0.0)

    def _scoped_campaign(self, c: Campaign, t_now: float, s: dict) -> _Target | None:
        """Stage 1, scope: the campaign's items and remaining budget, or None (with a note in its
        stats ``s``) when it is not active, knows no scope item or has spent its budget."""
        if not s["active"]:
            s["note"] = "not active at this time"
            return None
        sent, coupons = self.history.campaign_totals(c.name, until=t_now)
        left = np.inf
        if c.budget.messages is not None:
            left = min(left, c.budget.messages - sent)
        if c.budget.coupons is not None and c.offer.issues_coupon:
            left = min(left, c.budget.coupons - coupons)
        left = max(left, 0)
        s["budget_left"] = None if left == np.inf else int(left)
        scope = self._scope(c)
        s["scope"] = len(scope)
        if not scope:
            s["note"] = "no scope item is known to the model"
            return None
        if left == 0:
            s["note"] = "budget spent"
            return None
        order_value = self._order_value(c, scope)
        return _Target(c, scope, order_value, c.margin_per_conversion(order_value), left)

    def _audience(self, c: Campaign, scope: list) -> tuple[np.ndarray, np.ndarray]:
        """Stage 2, audience: the contact rows that pass the campaign's audience rule, and their
        conversion probabilities (at least the rule's minimum, and positive)."""
        contacts = self.contacts
        if hasattr(self.propensity, "audience"):
            pool = self.pool or max(contacts.n_users, 1)
            users = self.propensity.audience(c, scope, pool)
            rows = contacts.index(list(users)) if len(users) else np.zeros(0, np.int64)
            rows = np.unique(rows[rows >= 0])
        else:
            rows = np.arange(contacts.n_users)
        keep = np.ones(len(rows), dtype=bool)
        rule = c.audience
        if rule.segments:
            keep &= np.isin(contacts.segment[rows], list(rule.segments))
        if rule.rfm_groups:
            if self._rfm is None:
                raise ParameterError(f"Campaign {c.name!r} selects RFM groups; pass rfm= (rfm_table(...)) "
                                     "to the Planner")
            keep &= np.isin(self._rfm[rows], list(rule.rfm_groups))
        if rule.users is not None:
            allow = contacts.index(list(rule.users))
            keep &= np.isin(rows, allow[allow >= 0])
        if rule.exclude_users:
            deny = contacts.index(list(rule.exclude_users))
            keep &= ~np.isin(rows, deny[deny >= 0])
        rows = rows[keep]
        p = np.zeros(0)
        if len(rows):
            p = np.asarray(self.propensity(c, contacts.user_ids[rows], scope), dtype=np.float64).reshape(-1)
            if p.shape != (len(rows),) or not np.all((p >= 0) & (p <= 1)):
                raise ParameterError(f"propensity returned {p.shape} values for {len(rows)} users; expected one "
                                     "probability in [0, 1] per user")
            ok = (p >= rule.min_propensity) & (p > 0)
            rows, p = rows[ok], p[ok]
        return rows, p

    def _uplift_of(self, c: Campaign, t: _Target) -> np.ndarray:
        """Stage 2 with ``uplift=``: the predicted uplift of the audience ``t.rows`` (one number each)."""
        if not len(t.rows):
            return np.zeros(0)
        u = np.asarray(self.uplift(c, self.contacts.user_ids[t.rows], t.scope), dtype=np.float64).reshape(-1)
        if u.shape != (len(t.rows),) or not np.isfinite(u).all() or (np.abs(u) > 1).any():
            raise ParameterError(f"uplift returned {u.shape} values for {len(t.rows)} users; expected one finite "
                                 "uplift in [-1, 1] (a change of the conversion probability) per user")
        return u

    def _channel_candidates(self, ci: int, t: _Target, minute: np.ndarray, user_cap: np.ndarray,
                            s: dict) -> list[_Candidates]:
        """Stage 3, channels: the (user, channel) pairs of campaign number ``ci`` open now (consent,
        outside quiet hours), one part per channel, with their value in the objective; counts the
        eligible users lost to consent, quiet hours and caps in its stats ``s``."""
        rows, p = t.rows, t.p
        chan_index = {h: k for k, h in enumerate(self.channels)}
        any_consent = np.zeros(len(rows), dtype=bool)
        any_open = np.zeros(len(rows), dtype=bool)
        best_value = np.full(len(rows), -np.inf)
        parts = []
        for h in t.campaign.channels:
            ch = self.channels[h]
            consent = self._allowed(h, rows)
            quiet = ch.is_quiet(minute[rows]) if len(rows) else np.zeros(0, bool)
            any_consent |= consent
            ok = consent & ~quiet
            any_open |= ok
            if not ok.any():
                continue
            ph = np.minimum(1.0, p[ok] * ch.effectiveness)
            if t.uplift is None:
                val = ph if self.objective == "conversions" else ph * t.margin - ch.cost
            else:  # what the message adds: incremental conversions, and the offer paid on the others
                uh = t.uplift[ok] * ch.effectiveness
                offer_cost = t.campaign.offer.cost(t.order_value)
                val = uh if self.objective == "conversions" else \
                    uh * t.margin - np.maximum(ph - uh, 0.0) * offer_cost - ch.cost
            best_value[ok] = np.maximum(best_value[ok], val)
            parts.append(_Candidates(rows[ok], np.full(ok.sum(), ci), np.full(ok.sum(), chan_index[h]), ph, val))
        s["no_consent"] = int((~any_consent).sum())
        s["quiet_hours"] = int((any_consent & ~any_open).sum())
        s["candidates"] = int(any_open.sum())
        s["capped"] = int((any_open & (user_cap[rows] < 1)).sum())
        s["worth"] = int((best_value > 0).sum())
        return parts

    def _assign(self, cand: _Candidates, targets: list[_Target], user_cap: np.ndarray,
                chan_cap: np.ndarray | None) -> Assignment:
        """Stage 4, assignment: choose candidates under the remaining budgets and caps (:func:`assign`)."""
        users_d, ud = np.unique(cand.user, return_inverse=True)  # dense user indices for the optimiser
        ud = ud.reshape(-1)
        budgets = [t.budget for t in targets]
        return assign(cand.value, ud, cand.campaign.astype(np.int64), cand.channel.astype(np.int64),
                      user_cap=user_cap[users_d],
                      campaign_cap=np.asarray(budgets, dtype=np.float64) if budgets else np.zeros(0),
                      user_channel_cap=None if chan_cap is None else chan_cap[users_d],
                      method=self.method, time_limit=self.time_limit)

    def _messages(self, targets: list[_Target], cand: _Candidates, chosen: np.ndarray, t_now: float,
                  minute: np.ndarray, stats: dict) -> tuple[list[Message], list[Holdout]]:
        """Stage 5, messages: per campaign, its chosen candidates (best first) as messages, less a
        random ``holdout`` share kept out as control; the draws are seeded by ``random_state`` and
        the plan time."""
        rng = np.random.default_rng([self.random_state & 0xFFFFFFFF, int(t_now) & 0xFFFFFFFF])
        messages, holdouts = [], []
        for ci, t in enumerate(targets):
            s = stats[t.campaign.name]
            mine = chosen[cand.campaign[chosen] == ci]
            mine = mine[np.lexsort((mine, -cand.value[mine]))]  # best first, so the report reads naturally
            s["chosen"] = int(len(mine))
            if len(mine):
                sent, held = self._campaign_messages(t, cand, mine, rng, t_now, minute, s)
                messages += sent
                holdouts += held
        return messages, holdouts

    def _campaign_messages(self, t: _Target, cand: _Candidates, mine: np.ndarray, rng: np.random.Generator,
                           t_now: float, minute: np.ndarray, s: dict) -> tuple[list[Message], list[Holdout]]:
        """One campaign's part of stage 5: its chosen candidates ``mine`` as Messages and Holdouts
        (holdouts and variants drawn from ``rng``), added up in its stats ``s``."""
        c, contacts, chan_names = t.campaign, self.contacts, list(self.channels)
        rank_of = {int(r): k + 1 for k, r in enumerate(t.rows[np.argsort(-t.p, kind="stable")].tolist())}
        uplift_of = dict(zip(t.rows.tolist(), t.uplift.tolist())) if t.uplift is not None else {}
        held = rng.random(len(mine)) < self.holdout if self.holdout > 0 else np.zeros(len(mine), bool)
        variants = list(c.variants) if c.variants else []
        pick = rng.integers(0, len(variants), len(mine)) if variants else None
        content = iter(self._content(c, contacts.user_ids[cand.user[mine[~held]]], t.scope))
        messages, holdouts = [], []
        for j, i in enumerate(mine.tolist()):
            row = int(cand.user[i])
            user = contacts.user_ids[row].item()
            h = chan_names[int(cand.channel[i])]
            p_convert, value = float(cand.p_convert[i]), float(cand.value[i])
            mid = base64.b32encode(_token("msg", c.name, user, t_now)[:10]).decode().lower()
            seg = str(contacts.segment[row])
            rfm_g = "" if self._rfm is None else str(self._rfm[row])
            if held[j]:
                holdouts.append(Holdout(mid, user, c.name, h, t_now, propensity=self.holdout, p_convert=p_convert,
                                        offer=c.offer.kind, segment=seg, rfm_group=rfm_g))
                s["holdouts"] += 1
                continue
            items, names, reason = next(content)
            variant = variants[pick[j]] if variants else ""
            coupon = self._coupon(c, user, t_now) if c.offer.issues_coupon else ""
            why = (f"p_convert {cand.p_convert[i]:.3g} (rank {rank_of.get(row, 0)} of {len(t.rows)} eligible), "
                   f"{self.objective} value {cand.value[i]:.3g} on {h}" + self._other_channels(c, h, row, minute))
            if t.uplift is not None:
                why += f"; predicted uplift {uplift_of[row]:.3g}"
            subject, text = _render(c, h, variant, user=user, coupon=coupon, names=names, reason=reason)
            cost = self.channels[h].cost
            messages.append(Message(
                message_id=mid, user=user, campaign=c.name, channel=h, send_at=t_now, subject=subject, text=text,
                items=tuple(items), item_names=tuple(names), reason=reason, why=why, coupon=coupon,
                variant=variant, offer=c.offer.kind, propensity=(1.0 - self.holdout) / (len(variants) or 1),
                p_convert=p_convert, expected_value=value, cost=cost, segment=seg, rfm_group=rfm_g,
            ))
            s["messages"] += 1
            s["by_channel"][h] = s["by_channel"].get(h, 0) + 1
            s["expected_conversions"] += p_convert
            s["expected_margin"] += p_convert * t.margin
            s["cost"] += cost
        return messages, holdouts

    def _coupon(self, c: Campaign, user, t_now: float) -> str:
        """A coupon code unique to campaign, user and plan time: up to six letters of the campaign's
        name and a hash."""
        code = base64.b32encode(_token("coupon", self.random_state, c.name, user, t_now)[:5]).decode()
        return f"{''.join(x for x in c.name.upper() if x.isalnum())[:6]}-{code}"

    def _other_channels(self, c: Campaign, h: str, row: int, minute: np.ndarray) -> str:
        """For ``why``: why each other channel of the campaign was not used for contact ``row``."""
        others = []
        for h2 in c.channels:
            if h2 == h:
                continue
            if not self._allowed(h2, [row])[0]:
                others.append(f"{h2}: no consent")
            elif self.channels[h2].is_quiet(minute[row]):
                others.append(f"{h2}: quiet hours")
            else:
                others.append(f"{h2}: lower value")
        return f"; {', '.join(others)}" if others else ""

    # ------------------------------------------------------------------ content
    def _content(self, campaign: Campaign, users: np.ndarray, scope: list) -> list:
        """(items, names, reason) for each user: the top scope items and why."""
        n = campaign.n_items
        if self.model is None or not len(users):
            items = scope[:n]
            names = [self._name.get(i, str(i)) for i in items]
            return [(items, names, "for you")] * len(users)
        model = self.model
        known = model.user_map_.lookup(users)
        out = []
        recs = np.zeros((len(users), 0), dtype=object)
        if (known >= 0).any():
            recs, _ = model.recommend_batch(list(users[known >= 0]), n=n, items=scope, filter_seen=self.filter_seen)
        k = 0
        for user, row in zip(users.tolist(), known.tolist()):
            if row < 0:
                items = scope[:n]
                reason = "for you"
            else:
                r = recs[k]
                k += 1
                items = [x.item() if hasattr(x, "item") else x for x in r if not (x == "" or x == -1)]
                if not items:  # every scope item already seen: show them anyway
                    items = scope[:n]
                reason = self._reason(user, row, items[0])
            out.append((items, [self._name.get(i, str(i)) for i in items], reason))
        return out

    def _reason(self, user, row: int, top) -> str:
        model = self.model
        m = model.user_items_
        hist_idx = m.indices[m.indptr[row]:m.indptr[row + 1]]
        if not len(hist_idx) or not getattr(model, "supports_similar_items", False):
            return "for you"
        history = model.item_map_.ids[hist_idx]
        try:
            if len(history) == 1 and history[0] == top:
                best = top
            else:
                near, _ = model.similar_items(top, n=1, items=[h for h in history.tolist() if h != top])
                if not len(near):
                    return "for you"
                best = near[0].item() if hasattr(near[0], "item") else near[0]
        except (UnsupportedError, UnknownItemError):
            return "for you"
        return f"because you {self._verb(user, best)} {self._name.get(best, str(best))}"

    def _verb(self, user, item) -> str:
        inter = self._interactions
        if inter is None or inter.events is None:
            return "viewed"
        if not hasattr(self, "_verb_cache"):
            self._verb_cache = {}
        ui = inter.user_map.lookup([user])[0]
        if ui < 0:
            return "viewed"
        if ui not in self._verb_cache:
            lo, hi = inter.sequence_indptr[ui], inter.sequence_indptr[ui + 1]
            best = {}
            for it, ev in zip(inter.items[lo:hi].tolist(), inter.events[lo:hi].tolist()):
                name = inter.event_types[ev]
                if _VERB_RANK.get(name, 0) >= _VERB_RANK.get(best.get(it, ""), 0):
                    best[it] = name
            self._verb_cache[ui] = best
        ii = inter.item_map.lookup([item])[0]
        return _VERBS.get(self._verb_cache[ui].get(int(ii), "view"), "viewed")
