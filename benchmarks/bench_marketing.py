"""Closed-loop campaign simulation on the synthetic shop, where the truth is known.

The synthetic shop draws every user's behaviour from latent tastes (a taste vector, a category
mixture, a price preference, a spending level). This script regenerates those latent arrays from
the shop's seed, so the true probability that a message converts is known, and runs the same
stream of daily campaigns (a category and an offer each day: 10 % off, a EUR 5 coupon, free
shipping or a plain ad) over simulated weeks under several policies:

* ``no campaign``  -- organic purchases only (the baseline every other arm adds to);
* ``random``       -- the budget goes to random eligible users (consent, quiet hours, caps still
  respected), on a random consented channel;
* ``persona``      -- :class:`persona.marketing.Planner`: propensity from an ALS model's
  ``recommend_users`` (``ModelPropensity``), greedy assignment maximising margin minus message
  cost; a 10 % random holdout; every send / open / click / conversion recorded in an
  ``EventStore``, and each week the propensity link and the channels' effectiveness are
  recalibrated from what the store holds (the closed loop);
* ``persona + bandit`` (LinUCB, linear Thompson sampling, epsilon-greedy from
  :mod:`persona.marketing.bandits`, when present) -- the same audience, but a contextual bandit
  chooses each recipient's offer, updated daily in a batch from the recorded rewards (margin
  minus offer and message cost), its propensities logged with every send.

Ground truth of one message (user u, category c, channel h, offer o, shown items S)::

    seen      ~ Bernoulli(reach[h])                      email .25, sms .9, push .5, web .3
    induced   = seen and U < sigmoid(-3.2 + 1.0 max_{i in S} util(u, i) + 0.8 log(C theta[u, c]) + effect[o, spending u])
    organic   = V < sigmoid(-6.4 + 0.8 max_{i in c} util(u, i) + 0.8 log(C theta[u, c]))   (would buy anyway that day)
    converted = induced or organic;  order = the best shown item; margin = 0.3 price - offer cost

``util`` is the generator's own utility (taste match minus price misfit, standardised), ``theta``
the user's category mixture. Uniforms U, V are shared by all arms (common random numbers), so arm
differences are not sampling noise. *Incremental* numbers use the true probabilities:
``(1 - p_organic) p_induced``.

Also: the bandits' regret against the best offer of every round (and against the campaigns' fixed
offers and a uniform random offer), off-policy estimates (``persona.ope``) of other offer policies
from the epsilon-greedy arm's logged propensities against their true values, and greedy against
the exact MILP on one four-campaign plan.

Writes ``benchmarks/results/marketing.{json,md}`` and PNG plots (when matplotlib is installed).

    python benchmarks/bench_marketing.py            # ~1.5 minutes on 2 cores
    python benchmarks/bench_marketing.py --quick    # a smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import persona as ps  # noqa: E402
from persona.datasets import synthetic as syn  # noqa: E402
from persona.marketing import (  # noqa: E402
    Budget,
    Campaign,
    Channel,
    ContactHistory,
    Contacts,
    FeedbackRecorder,
    FrequencyCap,
    ModelPropensity,
    Offer,
    Planner,
    campaign_metrics,
    compare_groups,
    rfm_table,
)
from persona.store import EventStore  # noqa: E402

OFFERS = {
    "ad": Offer("ad"),
    "discount": Offer("discount", 0.10),
    "coupon": Offer("coupon", 5.0),
    "free_shipping": Offer("free_shipping", 4.9),
}
OFFER_NAMES = list(OFFERS)
# true offer effect on the log-odds of converting, by spending level (low, medium, high)
EFFECT = {"ad": (0.0, 0.0, 0.0), "discount": (0.9, 0.5, 0.2), "coupon": (1.3, 0.7, 0.3),
          "free_shipping": (0.7, 0.45, 0.3)}
REACH = {"email": 0.25, "sms": 0.9, "push": 0.5, "web": 0.3}
COST = {"email": 0.002, "sms": 0.05, "push": 0.001, "web": 0.0}
CONSENT = {"email": 0.6, "sms": 0.25, "push": 0.4, "web": 0.8}
QUIET = {"sms": ("21:00", "09:00"), "push": ("22:00", "08:00")}
CITY_TZ = {
    "Berlin": "Europe/Berlin", "Paris": "Europe/Paris", "Madrid": "Europe/Madrid", "Rome": "Europe/Rome",
    "Amsterdam": "Europe/Amsterdam", "Vienna": "Europe/Vienna", "Warsaw": "Europe/Warsaw", "Lisbon": "Europe/Lisbon",
    "Prague": "Europe/Prague", "Stockholm": "Europe/Stockholm", "Dublin": "Europe/Dublin",
    "Copenhagen": "Europe/Copenhagen", "Brussels": "Europe/Brussels", "Athens": "Europe/Athens",
    "Helsinki": "Europe/Helsinki",
}
MARGIN_RATE = 0.3


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------------------------- truth
class Truth:
    """The shop's latent arrays, regenerated from its seed, and the true response model."""

    def __init__(self, shop, n_users, n_items, seed):
        rng = np.random.default_rng(seed)
        items, ia, cats = syn._make_items(rng, n_items, 12, 40)
        users, ua = syn._make_users(rng, n_users, 12)
        if not (users.equals(shop.users) and items.drop(columns="tags").equals(shop.items.drop(columns="tags"))):
            raise SystemExit("the synthetic generator changed: the latent arrays no longer match the shop")
        util = ua["taste"] @ ia["vec"].T.astype(np.float64) - 0.35 * (
            ia["rel_price"][None, :] - ua["price_pref"][:, None]) ** 2
        self.util = (util - util.mean()) / util.std()
        self.theta = ua["theta"]
        self.spending = ua["spending"]
        self.item_cat = ia["cat"]
        self.price = ia["price"]
        self.n_cat = len(cats)
        self.category_names = cats
        self.user_index = {u: k for k, u in enumerate(shop.users["user_id"])}
        self.item_index = {i: k for k, i in enumerate(shop.items["item_id"])}
        self.best_in_cat = np.stack([self.util[:, self.item_cat == c].max(axis=1) for c in range(self.n_cat)], axis=1)

    def organic(self, u, cat):
        return sigmoid(-6.4 + 0.8 * self.best_in_cat[u, cat] + 0.8 * np.log(self.n_cat * self.theta[u, cat]))

    def induced(self, u, cat, shown, offer, channel):
        """P(induced conversion) of each message, and the ordered item (best shown)."""
        best_k = np.array([s[np.argmax(self.util[uu, s])] for uu, s in zip(u, shown)])
        best_u = self.util[u, best_k]
        eff = np.array(EFFECT[offer] if isinstance(offer, str) else [EFFECT[o] for o in offer])
        eff = eff[self.spending[u]] if eff.ndim == 1 else eff[np.arange(len(u)), self.spending[u]]
        reach = np.array([REACH[h] for h in channel])
        q = sigmoid(-3.2 + 1.0 * best_u + 0.8 * np.log(self.n_cat * self.theta[u, cat]) + eff)
        return reach, q, best_k

    def margin(self, item, offer):
        price = self.price[item]
        cost = np.array([OFFERS[o].cost(p) for o, p in zip(offer, price)]) if not isinstance(offer, str) else \
            np.array([OFFERS[offer].cost(p) for p in price])
        return MARGIN_RATE * price - cost, price


# ---------------------------------------------------------------------------------------------- set-up
def make_contacts(shop, seed):
    rng = np.random.default_rng(seed + 1)
    n = len(shop.users)
    consent = {ch: rng.random(n) < p for ch, p in CONSENT.items()}
    tz = shop.users["location"].map(CITY_TZ).fillna("UTC").to_numpy()
    return Contacts(shop.users["user_id"], consent=consent, timezone=tz, segment=shop.users["segment"])


def make_channels(effectiveness=None):
    eff = effectiveness or {}
    return [Channel(h, cost=COST[h], quiet_hours=QUIET.get(h), effectiveness=eff.get(h, 1.0)) for h in COST]


def campaign_stream(shop, days, budget, start):
    top = shop.items["category"].value_counts().index.tolist()[:8]
    out = []
    for d in range(days):
        offer = OFFER_NAMES[(d + d // 8) % 4]
        t0 = start + d * 86400.0
        out.append(Campaign(f"d{d:02d}-{offer}", OFFERS[offer], categories=[top[d % len(top)]],
                            channels=["email", "sms", "push", "web"], budget=Budget(messages=budget),
                            start=t0, end=t0 + 86400.0, margin=MARGIN_RATE))
    return out


def offer_of(campaign) -> str:
    """The offer name of a campaign of the stream (its name ends with it)."""
    return campaign.name.split("-", 1)[1]


# ---------------------------------------------------------------------------------------------- one arm
@dataclasses.dataclass
class ArmResult:
    name: str
    messages: int = 0
    holdouts: int = 0
    conversions: int = 0            # realized, among recipients (organic + induced)
    margin: float = 0.0             # realized margin of recipients' orders less offer and message costs
    cost: float = 0.0
    incr_conversions: float = 0.0   # expected, from the true probabilities
    incr_margin: float = 0.0        # expected incremental margin less message costs
    weekly_incr_margin: list = dataclasses.field(default_factory=list)
    regret: list = dataclasses.field(default_factory=list)   # per bandit round
    regret_fixed: list = dataclasses.field(default_factory=list)
    regret_uniform: list = dataclasses.field(default_factory=list)
    best_share: float = float("nan")
    offers_chosen: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    extra: dict = dataclasses.field(default_factory=dict)


class RandomPropensity:
    """Random scores: the optimiser then fills each budget with random eligible users."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def __call__(self, campaign, users, items):
        return self.rng.uniform(0.01, 0.02, len(users))


def bandit_context(prop, truth, rfm_rf, users, scope, channels):
    """What the shop knows when it picks an offer: the model's score, the spending level, R and F,
    and the channel."""
    z = prop.z(users, scope)
    u = np.array([truth.user_index[x] for x in users])
    spend = np.eye(3)[truth.spending[u]]
    chan = np.array([[h == c for c in COST] for h in channels], dtype=float)
    return np.column_stack([np.clip(z, -5, 5), spend, rfm_rf[u], chan])


def recalibrate(store, prop, scopes, since, until):
    """Refit the propensity link and channel effectiveness from the store's sends and conversions."""
    ev = store.events(since=since, until=until, event_types=["send", "conversion"])
    if not len(ev):
        return None
    props = ev["properties"].tolist()
    mid = np.array([p["message_id"] for p in props])
    conv = set(mid[(ev["event"] == "conversion").to_numpy()])
    sends = ev[ev["event"] == "send"]
    sp = sends["properties"].tolist()
    users = sends["user"].to_numpy()
    camp = np.array([p["campaign"] for p in sp])
    chan = np.array([p["channel"] for p in sp])
    y = np.array([p["message_id"] in conv for p in sp], dtype=float)
    z = np.zeros(len(sp))
    for c in np.unique(camp):
        k = camp == c
        z[k] = prop.z(users[k], scopes[c])
    ok = np.isfinite(z)
    prop.calibrate(z[ok], y[ok], l2=1.0)
    a, b = prop.link()
    base = sigmoid(a + b * z)
    eff = {}
    for h in COST:
        k = (chan == h) & ok
        eff[h] = float((y[k].sum() + 2.0) / (base[k].sum() + 2.0))
    return eff


def run_arm(name, *, shop, truth, model, contacts, campaigns, rfm, rfm_rf, start, weeks, seed, u_seen, u_ind,
            u_org, bandit=None, store_dir=None):
    t_start = time.perf_counter()
    res = ArmResult(name)
    history = ContactHistory()
    store = EventStore(str(Path(store_dir) / f"{name.replace(' ', '_')}.db"), synchronous="normal") \
        if name != "no campaign" else None
    rec = FeedbackRecorder(store, history=history) if store is not None else None
    scopes = {c.name: shop.items.loc[shop.items["category"] == c.categories[0], "item_id"].tolist()
              for c in campaigns}
    prop = ModelPropensity(model, base_rate=0.02, slope=1.0)
    if name == "random":
        planner = Planner(contacts=contacts, channels=make_channels(), model=model, propensity=RandomPropensity(seed),
                          catalog=shop.items, caps=FrequencyCap(per_day=1, per_week=3), history=history,
                          objective="conversions", random_state=seed)
    elif name != "no campaign":
        planner = Planner(contacts=contacts, channels=make_channels(), model=model, propensity=prop,
                          catalog=shop.items, caps=FrequencyCap(per_day=1, per_week=3), history=history,
                          objective="margin", rfm=rfm, holdout=0.1 if bandit is None else 0.0, random_state=seed)
    rng = np.random.default_rng(seed + 7)
    week_margin = 0.0
    for d, camp in enumerate(campaigns):
        now = start + d * 86400.0 + 6.5 * 3600.0  # 06:30 UTC: early morning in the west, late morning in the east
        cat = truth.category_names.index(camp.categories[0])
        if name == "no campaign":
            u = np.arange(len(shop.users))
            res.conversions += int((u_org[d] < truth.organic(u, cat)).sum())
        else:
            c = camp
            if name == "random":  # a random channel order: the first consented one in it is used
                c = dataclasses.replace(camp, channels=tuple(rng.permutation(list(camp.channels))))
            plan = planner.plan([c], now=now)
            msgs = plan.messages
            if msgs:
                uidx = np.array([truth.user_index[m.user] for m in msgs])
                shown = [np.array([truth.item_index[i] for i in m.items]) for m in msgs]
                chans = [m.channel for m in msgs]
                offers = [offer_of(camp)] * len(msgs)
                chosen_p = np.ones(len(msgs))
                if bandit is not None:
                    ctx = bandit_context(prop, truth, rfm_rf, [m.user for m in msgs], scopes[camp.name], chans)
                    actions, chosen_p = bandit.choose(ctx)
                    offers = [OFFER_NAMES[a] for a in actions]
                reach, q, best_k = truth.induced(uidx, cat, shown, offers, chans)
                p0 = truth.organic(uidx, cat)
                m_unit, price = truth.margin(best_k, offers)
                cost = np.array([COST[h] for h in chans])
                seen = u_seen[d, uidx] < reach
                induced = seen & (u_ind[d, uidx] < q)
                organic = u_org[d, uidx] < p0
                converted = induced | organic
                clicked = seen & (induced | (u_ind[d, uidx] < np.minimum(1.0, 3 * q)))
                reward = converted * m_unit - cost
                res.messages += len(msgs)
                res.conversions += int(converted.sum())
                res.margin += float(reward.sum())
                res.cost += float(cost.sum())
                p_ind = reach * q
                incr = (1 - p0) * p_ind
                res.incr_conversions += float(incr.sum())
                # incremental margin: the offer costs money on organic orders too
                offer_cost = MARGIN_RATE * price - m_unit
                day_incr = float((incr * m_unit - p0 * offer_cost - cost).sum())
                res.incr_margin += day_incr
                week_margin += day_incr
                for k, m in enumerate(msgs):
                    if bandit is not None:
                        m = dataclasses.replace(m, offer=offers[k], propensity=float(chosen_p[k]))
                    rec.sent(m)
                    if seen[k]:
                        rec.opened(m, timestamp=now + 600)
                    if clicked[k]:
                        rec.clicked(m, timestamp=now + 700)
                    if converted[k]:
                        rec.converted(m, value=float(price[k] * (0.9 if offers[k] == "discount" else 1.0)),
                                      item=shop.items["item_id"].iat[best_k[k]], timestamp=now + 3600)
                if bandit is not None:
                    # expected reward of every offer for these rounds: the regret of each policy
                    exp = np.zeros((len(msgs), len(OFFER_NAMES)))
                    for j, o in enumerate(OFFER_NAMES):
                        r_o, q_o, bk = truth.induced(uidx, cat, shown, o, chans)
                        mu, _ = truth.margin(bk, o)
                        p_tot = p0 + (1 - p0) * r_o * q_o
                        exp[:, j] = p_tot * mu - cost
                    best = exp.max(axis=1)
                    got = exp[np.arange(len(msgs)), [OFFER_NAMES.index(o) for o in offers]]
                    fixed = exp[:, OFFER_NAMES.index(offer_of(camp))]
                    res.regret.extend((best - got).tolist())
                    res.regret_fixed.extend((best - fixed).tolist())
                    res.regret_uniform.extend((best - exp.mean(axis=1)).tolist())
                    res.extra.setdefault("best_hits", []).extend((got >= best - 1e-12).tolist())
                    for o in offers:
                        res.offers_chosen[o] = res.offers_chosen.get(o, 0) + 1
                    log = res.extra.setdefault("log", {"context": [], "action": [], "reward": [], "propensity": [],
                                                       "expected": [], "fixed": []})
                    log["context"].append(ctx)
                    log["action"].append(np.asarray(actions))
                    log["reward"].append(reward)
                    log["propensity"].append(np.asarray(chosen_p, dtype=float))
                    log["expected"].append(exp)
                    log["fixed"].append(np.full(len(msgs), OFFER_NAMES.index(offer_of(camp))))
                    bandit.update(ctx, actions=[OFFER_NAMES.index(o) for o in offers], rewards=reward)
            for h in plan.holdouts:
                uu = truth.user_index[h.user]
                res.holdouts += 1
                if u_org[d, uu] < truth.organic(np.array([uu]), cat)[0]:
                    item = int(np.argmax(np.where(truth.item_cat == cat, truth.util[uu], -np.inf)))
                    rec.held_out(h)
                    rec.converted(h, value=float(truth.price[item]), timestamp=now + 3600)
                else:
                    rec.held_out(h)
            store.flush()
        if (d + 1) % 7 == 0:
            res.weekly_incr_margin.append(week_margin)
            week_margin = 0.0
            if name not in ("no campaign", "random"):
                eff = recalibrate(store, prop, scopes, since=start + (d - 27) * 86400.0, until=start + (d + 1) * 86400.0)
                if eff:
                    planner.channels = {ch.name: ch for ch in make_channels(eff)}
                    res.extra["effectiveness"] = eff
                    res.extra["link"] = prop.link()
    if store is not None:
        by_channel = campaign_metrics(store, by="channel")
        res.extra["by_channel"] = by_channel
        if res.holdouts:
            res.extra["lift"] = compare_groups(store)
        store.close()
    if res.extra.get("best_hits"):
        res.best_share = float(np.mean(res.extra.pop("best_hits")))
    res.seconds = time.perf_counter() - t_start
    return res


# ---------------------------------------------------------------------------------------------- extras
def greedy_vs_milp(shop, model, contacts, start, seed, pool):
    """One multi-campaign plan solved both ways: values, certificate and time."""
    top = shop.items["category"].value_counts().index.tolist()[:4]
    camps = [Campaign(f"c{k}-{o}", OFFERS[o], categories=[cat], channels=["email", "sms", "push", "web"],
                      budget=Budget(messages=150), margin=MARGIN_RATE)
             for k, (cat, o) in enumerate(zip(top, ["discount", "coupon", "free_shipping", "ad"]))]
    channels = make_channels() + []
    channels[1] = Channel("sms", cost=COST["sms"], quiet_hours=QUIET["sms"], per_week=1, per_day=1)
    out = []
    for cap in (FrequencyCap(per_day=1, per_week=3), FrequencyCap(per_day=2, per_week=3)):
        row = {"caps": f"{cap.per_day}/day, {cap.per_week}/week"}
        for method in ("greedy", "milp"):
            planner = Planner(contacts=contacts, channels=channels, model=model,
                              propensity=ModelPropensity(model, base_rate=0.03), catalog=shop.items, caps=cap,
                              objective="margin", method=method, pool=pool, time_limit=120)
            t = time.perf_counter()
            plan = planner.plan(camps, now=start + 8 * 3600.0)
            row[method] = {"value": plan.value, "bound": plan.upper_bound, "guarantee": plan.guarantee,
                           "messages": len(plan), "seconds": time.perf_counter() - t}
        out.append(row)
    return out


def off_policy(result):
    """Evaluate other offer policies from a bandit arm's logs (the propensities recorded with every
    send) with persona.ope, against their true expected reward on the same rounds."""
    log = result.extra.get("log")
    if not log:
        return []
    from persona.ope import estimate

    cat = {k: np.concatenate(v) for k, v in log.items()}
    n, k = cat["expected"].shape
    logged = ps.LoggedFeedback(action=cat["action"], reward=cat["reward"], propensity=cat["propensity"],
                               context=cat["context"], n_actions=k)
    targets = {"uniform random offer": np.full((n, k), 1.0 / k),
               "fixed campaign offer": np.eye(k)[cat["fixed"]]}
    for j, name in enumerate(OFFER_NAMES):
        targets[f"always {name}"] = np.tile(np.eye(k)[j], (n, 1))
    rows = []
    for name, target in targets.items():
        truth = float((cat["expected"] * target).sum(axis=1).mean())
        row = {"policy": name, "truth": truth}
        for method in ("snipw", "sndr"):
            try:
                est = estimate(logged, target, method=method)
                row[method] = (est.value, est.ci_low, est.ci_high, getattr(est, "ess", float("nan")))
            except ps.PersonaError as exc:  # e.g. no overlap: a policy the logger never tried
                row[method] = (float("nan"),) * 4
                row[f"{method}_error"] = str(exc)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- report
def fmt(x, nd=2):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:,.{nd}f}"


def markdown(results, shop_desc, args, facts, gm, baseline, ope_rows=(), ope_name=""):
    per_k = lambda v, n: v / n * 1000 if n else float("nan")  # noqa: E731
    lines = [f"# Closed-loop campaign simulation ({shop_desc})", "",
             f"{args.weeks} weeks, one campaign a day (budget {args.budget} messages), caps 1/day and 3/week, "
             f"4 channels with consent and quiet hours; seed {args.seed}. Incremental = expected from the true "
             "probabilities; realized = drawn (common random numbers across arms).", "",
             "| arm | messages | conversions (realized) | conv / 1k msgs | incremental conv | incr. conv / 1k msgs "
             "| net margin / 1k msgs (realized) | incr. net margin / 1k msgs | incr. net margin, total | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines.append(f"| no campaign | 0 | {baseline.conversions:,} (organic, whole base) | - | 0 | - | - | - | 0.00 | "
                 f"{baseline.seconds:.1f} |")
    for r in results:
        lines.append(
            f"| {r.name} | {r.messages:,} | {r.conversions:,} | {fmt(per_k(r.conversions, r.messages), 1)} | "
            f"{fmt(r.incr_conversions, 1)} | {fmt(per_k(r.incr_conversions, r.messages), 1)} | "
            f"{fmt(per_k(r.margin, r.messages))} | {fmt(per_k(r.incr_margin, r.messages))} | "
            f"{fmt(r.incr_margin)} | {r.seconds:.1f} |")
    lines += ["", "Weekly incremental net margin (EUR):", "",
              "| arm | " + " | ".join(f"w{k + 1}" for k in range(args.weeks)) + " |",
              "|---|" + "---:|" * args.weeks]
    for r in results:
        lines.append(f"| {r.name} | " + " | ".join(fmt(v, 1) for v in r.weekly_incr_margin) + " |")

    persona = next((r for r in results if r.name == "persona"), None)
    if persona is not None:
        bc = persona.extra["by_channel"]
        lines += ["", "persona arm, by channel (from the event store, `campaign_metrics(store, by=\"channel\")`):", "",
                  "| channel | messages | open rate | CTR | conversion rate | revenue / message | cost | ROI |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for ch, row in bc.iterrows():
            lines.append(f"| {ch} | {int(row['messages']):,} | {fmt(row['open_rate'], 3)} | {fmt(row['ctr'], 3)} | "
                         f"{fmt(row['conversion_rate'], 4)} | {fmt(row['revenue_per_message'], 3)} | "
                         f"{fmt(row['cost'])} | {fmt(row['roi'], 0)} |")
        if "effectiveness" in persona.extra:
            eff = persona.extra["effectiveness"]
            a, b = persona.extra["link"]
            lines += ["", f"Learned (last recalibration): link intercept {a:.2f}, slope {b:.2f}; channel "
                      "effectiveness " + ", ".join(f"{h} {v:.2f}" for h, v in eff.items())
                      + " (true reach email .25, sms .9, push .5, web .3)."]
        lift = persona.extra.get("lift")
        if lift is not None:
            lines += ["", "persona arm's 10 % holdout, `compare_groups(store)` (conversion rate, treatment vs control): "
                      f"{lift}. The true incremental conversion rate of its messages: "
                      f"{persona.incr_conversions / persona.messages:.4f}."]
    bandits = [r for r in results if r.regret]
    if bandits:
        lines += ["", "Offer choice by the contextual bandits (same audience as persona; rounds = messages):", "",
                  "| policy | rounds | cum. regret 25 % | 50 % | 75 % | 100 % | regret / round (last quarter) "
                  "| best offer chosen | offers chosen |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        ref = bandits[0]
        for label, reg, share, chosen in (
                [(r.name, r.regret, r.best_share, r.offers_chosen) for r in bandits]
                + [("fixed campaign offer", ref.regret_fixed, float("nan"), {}),
                   ("uniform random offer", ref.regret_uniform, float("nan"), {})]):
            c = np.cumsum(reg)
            n = len(c)
            qs = [c[max(0, int(n * f) - 1)] for f in (0.25, 0.5, 0.75, 1.0)]
            last = float(np.mean(reg[int(0.75 * n):])) if n else float("nan")
            lines.append(f"| {label} | {n:,} | " + " | ".join(fmt(v, 1) for v in qs) + f" | {fmt(last, 4)} | "
                         f"{fmt(share * 100, 1) + ' %' if math.isfinite(share) else '-'} | "
                         + ", ".join(f"{k} {v}" for k, v in sorted(chosen.items())) + " |")
    if ope_rows:
        lines += ["", f"Off-policy evaluation from the {ope_name} arm's logs (its propensities, as recorded with every "
                  "send), `persona.ope.estimate`, against the true expected reward per message on the same rounds:",
                  "", "| policy | true value | SNIPW | 95 % CI | SNDR | 95 % CI | ESS |",
                  "|---|---:|---:|---|---:|---|---:|"]
        for row in ope_rows:
            sn, dr = row["snipw"], row["sndr"]
            lines.append(f"| {row['policy']} | {row['truth']:.4f} | {sn[0]:.4f} | [{sn[1]:.4f}, {sn[2]:.4f}] | "
                         f"{dr[0]:.4f} | [{dr[1]:.4f}, {dr[2]:.4f}] | {fmt(sn[3], 0)} |")
    if gm:
        lines += ["", "Greedy vs exact MILP on one 4-campaign plan (SMS capped 1/day and 1/week per user):", "",
                  "| caps | greedy value | MILP value | greedy / MILP | bound (greedy's certificate) | guarantee "
                  "| greedy s | MILP s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for row in gm:
            g, e = row["greedy"], row["milp"]
            lines.append(f"| {row['caps']} | {fmt(g['value'])} | {fmt(e['value'])} | "
                         f"{fmt(g['value'] / e['value'], 4) if e['value'] else '-'} | {fmt(g['bound'])} | "
                         f"{g['guarantee']:.2f} | {g['seconds']:.2f} | {e['seconds']:.2f} |")
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items() if k != "blas"), ""]
    return "\n".join(lines)


def plots(results, baseline, out, args):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    files = []
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    names = [r.name for r in results]
    ax[0].bar(names, [r.incr_conversions / r.messages * 1000 if r.messages else 0 for r in results], color="C0")
    ax[0].set_ylabel("incremental conversions / 1,000 messages")
    ax[1].bar(names, [r.incr_margin / r.messages * 1000 if r.messages else 0 for r in results], color="C2")
    ax[1].set_ylabel("incremental net margin (EUR) / 1,000 messages")
    for a in ax:
        a.tick_params(axis="x", rotation=25)
    fig.tight_layout()
    p = out / "marketing_arms.png"
    fig.savefig(p, dpi=110)
    files.append(p)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        ax.plot(np.arange(1, len(r.weekly_incr_margin) + 1), r.weekly_incr_margin, marker="o", label=r.name)
    ax.set_xlabel("week")
    ax.set_ylabel("incremental net margin (EUR)")
    ax.legend()
    fig.tight_layout()
    p = out / "marketing_weekly.png"
    fig.savefig(p, dpi=110)
    files.append(p)
    plt.close(fig)

    bandits = [r for r in results if r.regret]
    if bandits:
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in bandits:
            ax.plot(np.cumsum(r.regret), label=r.name)
        ax.plot(np.cumsum(bandits[0].regret_fixed), "--", label="fixed campaign offer")
        ax.plot(np.cumsum(bandits[0].regret_uniform), ":", label="uniform random offer")
        ax.set_xlabel("round (message)")
        ax.set_ylabel("cumulative regret (EUR of expected margin)")
        ax.legend()
        fig.tight_layout()
        p = out / "marketing_regret.png"
        fig.savefig(p, dpi=110)
        files.append(p)
        plt.close(fig)
    return files


def bandit_policies(seed, which):
    """The contextual bandits of persona.marketing.bandits, when that module is committed."""
    if which == "off":
        return []
    root = HERE.parent
    tracked = subprocess.run(["git", "ls-files", "src/persona/marketing/bandits.py"], cwd=root,
                             capture_output=True, text=True).stdout.strip()
    if which == "auto" and not tracked:
        print("persona.marketing.bandits is not committed yet: the bandit arms are skipped (--bandit on to force)")
        return []
    from persona.marketing.bandits import EpsilonGreedy, LinearThompsonSampling, LinUCB

    n = len(OFFER_NAMES)
    return [("persona + LinUCB", LinUCB(n, alpha=1.0, random_state=seed)),
            ("persona + Thompson", LinearThompsonSampling(n, scale=1.0, random_state=seed)),
            ("persona + eps-greedy", EpsilonGreedy(n, epsilon=0.1, random_state=seed))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--weeks", type=int, default=8)
    ap.add_argument("--budget", type=int, default=250, help="messages per daily campaign")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bandit", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--milp-pool", type=int, default=600, help="users scored per campaign in the greedy-vs-MILP plan")
    ap.add_argument("--quick", action="store_true", help="a smoke test: 600 users, 2 weeks")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    if args.quick:
        args.users, args.items, args.weeks, args.budget, args.milp_pool = 600, 150, 2, 60, 150
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from machine import machine_facts

    t0 = time.perf_counter()
    shop = ps.datasets.synthetic_shop(args.users, args.items, seed=args.seed)
    truth = Truth(shop, args.users, args.items, args.seed)
    model = ps.ALS(factors=32, iterations=10, regularization=0.05, random_state=args.seed).fit(shop.interactions)
    contacts = make_contacts(shop, args.seed)
    start = syn._START_SECONDS + shop.days * 86400.0
    campaigns = campaign_stream(shop, 7 * args.weeks, args.budget, start)
    rfm = rfm_table(shop.events, users=shop.users["user_id"], now=start)
    rfm_rf = np.column_stack([rfm.loc[shop.users["user_id"], "r"].to_numpy() / 5.0,
                              rfm.loc[shop.users["user_id"], "f"].to_numpy() / 5.0])
    days, n = len(campaigns), len(shop.users)
    crn = np.random.default_rng(args.seed + 99)
    u_seen, u_ind, u_org = crn.random((days, n)), crn.random((days, n)), crn.random((days, n))
    print(f"set-up {time.perf_counter() - t0:.1f} s: {shop}")
    common = dict(shop=shop, truth=truth, model=model, contacts=contacts, campaigns=campaigns, rfm=rfm, rfm_rf=rfm_rf,
                  start=start, weeks=args.weeks, seed=args.seed, u_seen=u_seen, u_ind=u_ind, u_org=u_org)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = run_arm("no campaign", store_dir=tmp, **common)
        print(f"no campaign: {baseline.conversions} organic conversions ({baseline.seconds:.1f} s)")
        arms = [("random", None), ("persona", None)] + bandit_policies(args.seed, args.bandit)
        for name, bandit in arms:
            r = run_arm(name, bandit=bandit, store_dir=tmp, **common)
            results.append(r)
            print(f"{name}: {r.messages} messages, incremental {r.incr_conversions:.1f} conversions, "
                  f"net margin {r.incr_margin:.1f} ({r.seconds:.1f} s)")
    gm = greedy_vs_milp(shop, model, contacts, start, args.seed, args.milp_pool)
    # epsilon-greedy logs every offer with probability >= epsilon / 4: weights stay bounded
    ts = next((r for r in results if "eps-greedy" in r.name), None)
    ope_rows = off_policy(ts) if ts is not None else []
    for r in results:
        r.extra.pop("log", None)
    facts = machine_facts()
    md = markdown(results, f"{args.users} users, {args.items} items", args, facts, gm, baseline, ope_rows,
                  ts.name if ts is not None else "")
    files = plots(results, baseline, out, args)
    tag = "marketing_quick" if args.quick else "marketing"
    (out / f"{tag}.md").write_text(md)
    payload = {
        "args": vars(args), "machine": facts, "baseline_organic_conversions": baseline.conversions,
        "arms": [{k: v for k, v in dataclasses.asdict(r).items() if k != "extra"}
                 | {"lift": str(r.extra.get("lift", "")), "effectiveness": r.extra.get("effectiveness")}
                 for r in results],
        "greedy_vs_milp": gm, "off_policy": ope_rows,
    }
    (out / f"{tag}.json").write_text(json.dumps(payload, indent=1, default=float))
    print(md)
    print(f"wrote {out / (tag + '.md')}, {out / (tag + '.json')}" + "".join(f", {p}" for p in files))
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
