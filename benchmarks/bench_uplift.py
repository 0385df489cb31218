"""Uplift targeting against response targeting and random, in a closed loop where the truth is known.

The world. The synthetic shop (``ps.datasets.synthetic_shop``) gives 90 days of behaviour; from it
the shop knows per user: recency, tenure, sessions, views, clicks, carts, purchases, spend, cart
rate, age, gender, spending level and segment (the features every model below sees). A 14-day
campaign message then converts with probabilities the script defines -- never shown to the
models -- on top of the shop's data:

    organic (no message)  b(u)   = -4.5 + 1.1 log(1 + purchases) + exp(-recency / 20) + 0.25 (spending - 1) + N(0, 0.5)
    effect of an ad       e(u)   = 0.05 + 0.5 [low spender] + 0.25 [medium] + 0.4 [last seen 20-60 days ago]
                                   - against(u) + N(0, 0.3)
        harsh world:      against = 0.6 [top-10% buyer seen in the last week]
        mild world:       against = 0.3 [top-10% buyer seen in the last week] + 0.5 [top-20% viewer, no purchase]
    effect of 10% off     e(u) + 0.3 + 0.3 [low spender]
    p0 = sigmoid(b),  p1 = sigmoid(b + effect)

so the world has the four kinds of customers uplift modelling is about: *sure things* (frequent,
recent buyers: high p0, little effect), *persuadables* (price-sensitive or lapsing customers),
*sleeping dogs* (negative effect) and *lost causes*. In the harsh world the sleeping dogs are the
heaviest, most recent buyers -- whom a response model ranks first; in the mild world those are only
sure things (about no effect) and the few put-off customers are browsers who never bought. About a
sixth to a fifth of the users have a negative uplift once the noise is added. The average uplift of
an ad is about 2 percentage points on a 7.8% baseline -- the size real e-mail campaigns measure.
Incremental net margin of a message to ``u``: ``p1 (m - d) - p0 m - cost``, with ``m = 0.35 x`` the
user's average order value, ``d`` the offer's cost on that order (10% of it for the discount, 0 for
the ad), message cost 0.02: the discount is also paid by customers who would have bought anyway.

The loop, per seed (a new shop, new noise, new pilots):

1. Pilot: a random half of the users is planned for each offer (``Planner`` with a random
   propensity and ``holdout=0.5``); sends, holdouts and the conversions drawn from the truth are
   recorded by ``FeedbackRecorder`` in an ``EventStore`` -- the randomised data persona logs.
2. ``ps.marketing.uplift_data(store, features)`` gives the training table; T-, X- and DR-learners
   (LightGBM) are fitted on 70% of it and compared by Qini AUC on the other 30%; the best is refitted
   on all of it. The response model is a LightGBM classifier of conversion among the *treated*
   pilot users (what response targeting is).
3. A campaign with a budget of 20% of the users is planned three ways by ``Planner``: *uplift*
   (``uplift=UpliftScorer(best learner)``: value = uplift x margin - offer cost on would-be buyers -
   message cost), *response* (the response model's probabilities as propensity: value = p x margin -
   cost, the planner's default), *random*. Every learner's own plan is reported too, and the oracle
   (the true values) as the ceiling.
4. The chosen users are scored with the true p0, p1: incremental conversions and incremental net
   margin per 1,000 messages (expected values: no outcome noise in the evaluation).

Intervals are 95% t-intervals over the seeds. Goal (issue 16): uplift targeting's incremental net
margin >= 1.3x response targeting's.

Writes ``benchmarks/results/uplift.{json,md}`` and ``docs/img/uplift-qini.png`` (matplotlib).

    python benchmarks/bench_uplift.py              # 2 worlds x 5 seeds x 30,000 users, ~6 minutes on 2 cores
    python benchmarks/bench_uplift.py --quick      # a smoke test
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import write_results  # noqa: E402
from machine import machine_facts  # noqa: E402

import persona as ps  # noqa: E402
from persona.marketing import (  # noqa: E402
    Budget,
    Campaign,
    Channel,
    Contacts,
    DRLearner,
    FeedbackRecorder,
    Offer,
    Planner,
    TLearner,
    UpliftScorer,
    XLearner,
    qini_auc,
    qini_curve,
    uplift_data,
)

MARGIN, COST, DAY = 0.35, 0.02, 86400.0
OFFERS = {"ad": Offer("ad"), "discount": Offer("discount", 0.10)}
LGB = {"num_leaves": 7, "min_data_in_leaf": 100, "learning_rate": 0.03, "num_boost_round": 150}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------------------------- the world
def features(shop) -> pd.DataFrame:
    """What the shop knows of each user after 90 days (indexed by user id)."""
    ev = shop.events
    end = ev["timestamp"].max()
    g = ev.groupby("user_id", observed=True)
    kinds = pd.crosstab(ev["user_id"], ev["event"])
    f = pd.DataFrame(index=pd.Index(shop.users["user_id"].to_numpy(), name="user"))
    f["recency_days"] = ((end - g["timestamp"].max()).dt.total_seconds() / DAY).reindex(f.index)
    f["tenure_days"] = ((end - g["timestamp"].min()).dt.total_seconds() / DAY).reindex(f.index)
    f["sessions"] = g["session_id"].nunique().reindex(f.index)
    for k in ("view", "click", "cart", "purchase"):
        f[k + "s"] = kinds[k].reindex(f.index).fillna(0) if k in kinds.columns else 0.0
    buys = ev[ev["event"] == "purchase"]
    f["spend_90d"] = buys.groupby("user_id", observed=True)["value"].sum().reindex(f.index).fillna(0.0)
    f["cart_rate"] = f["carts"] / f["views"].clip(lower=1)
    u = shop.users.set_index("user_id")
    f["age"] = u["age"].to_numpy()
    f["spending"] = u["spending_level"].map({"low": 0, "medium": 1, "high": 2}).to_numpy()
    for gender in ("F", "M"):
        f["gender_" + gender] = (u["gender"] == gender).to_numpy(dtype=float)
    for s in sorted(u["segment"].unique()):
        f["segment_" + s] = (u["segment"] == s).to_numpy(dtype=float)
    return f.astype(float)


class Truth:
    """The true conversion probabilities of the world (see the module docstring)."""

    def __init__(self, f: pd.DataFrame, rng: np.random.Generator, world: str = "harsh"):
        n = len(f)
        buys, rec, spend = f["purchases"].to_numpy(), f["recency_days"].to_numpy(), f["spending"].to_numpy()
        self.base = -4.5 + 1.1 * np.log1p(buys) + np.exp(-rec / 20) + 0.25 * (spend - 1) + rng.normal(0, 0.5, n)
        heavy = buys >= np.quantile(buys, 0.9)
        views = f["views"].to_numpy()
        browser = (views >= np.quantile(views, 0.8)) & (buys == 0)
        recent_heavy = (heavy & (rec < 7)).astype(float)
        if world == "harsh":  # the loyal, recent heavy buyers are put off by one more message
            against = 0.6 * recent_heavy
        else:  # "mild": they are sure things (about no effect); some browsers are put off
            against = 0.3 * recent_heavy + 0.5 * browser
        self.effect_ad = (0.05 + 0.5 * (spend == 0) + 0.25 * (spend == 1) + 0.4 * ((rec >= 20) & (rec <= 60))
                          - against + rng.normal(0, 0.3, n))
        self.spend = spend
        self.aov = np.where(buys > 0, f["spend_90d"].to_numpy() / np.maximum(buys, 1), 25.0)

    def p0(self):
        return sigmoid(self.base)

    def p1(self, offer: str):
        extra = 0.0 if offer == "ad" else 0.3 + 0.3 * (self.spend == 0)
        return sigmoid(self.base + self.effect_ad + extra)

    def value(self, offer: str) -> np.ndarray:
        """Incremental net margin of one message to each user."""
        m = MARGIN * self.aov
        d = np.array([OFFERS[offer].cost(a) for a in self.aov]) if offer != "ad" else 0.0
        return self.p1(offer) * (m - d) - self.p0() * m - COST


# ---------------------------------------------------------------------------------------------- the loop
class Scores:
    """A propensity for the planner from one score per user (a response model's, or random)."""

    def __init__(self, users, scores):
        self.table = pd.Series(np.clip(scores, 1e-6, 1.0), index=users)

    def __call__(self, campaign, users, items):
        return self.table.reindex(users).fillna(1e-6).to_numpy()


def campaign(name, offer, budget, order_value):
    return Campaign(name, OFFERS[offer], items=["i0000"], channels=["email"], budget=Budget(messages=budget),
                    order_value=order_value, margin=MARGIN)


def plan_users(contacts, camp, propensity, uplift=None, objective="margin"):
    planner = Planner(contacts=contacts, channels=[Channel("email", cost=COST)], propensity=propensity,
                      uplift=uplift, objective=objective, holdout=0.0)
    plan = planner.plan([camp], now="2024-04-02T08:00:00Z")
    return [m.user for m in plan.messages]


def pilot(store, contacts, users, offer, rng, truth, index, order_value):
    """A randomised pilot: half the users planned at random, half of those held out; outcomes from the truth."""
    n = len(users)
    chosen = rng.permutation(n)[: n // 2]
    camp = campaign(f"pilot-{offer}", offer, len(chosen), order_value)
    allow = Contacts(users[chosen], consent={"email": np.ones(len(chosen), bool)}, timezone="UTC")
    planner = Planner(contacts=allow, channels=[Channel("email", cost=COST)],
                      propensity=Scores(users, rng.uniform(0.01, 0.02, n)), objective="conversions", holdout=0.5,
                      random_state=int(rng.integers(2**31)))
    plan = planner.plan([camp], now="2024-03-01T08:00:00Z")
    rec = FeedbackRecorder(store)
    p0, p1 = truth.p0(), truth.p1(offer)
    for m in plan.messages:
        rec.sent(m)
        if rng.random() < p1[index[m.user]]:
            rec.converted(m, value=float(truth.aov[index[m.user]]))
    for h in plan.holdouts:
        rec.held_out(h)
        if rng.random() < p0[index[h.user]]:
            rec.converted(h, value=float(truth.aov[index[h.user]]))
    store.flush()
    return len(plan.messages), len(plan.holdouts)


def learners(seed, threads):
    kw = dict(params=LGB, random_state=seed, num_threads=threads)
    return {"T-learner": TLearner("lightgbm", **kw), "X-learner": XLearner("lightgbm", **kw),
            "DR-learner": DRLearner("lightgbm", **kw)}


def run_seed(seed, world, args, facts_rows, curves):
    t0 = time.perf_counter()
    rng = np.random.default_rng(1000 + seed)
    shop = ps.datasets.synthetic_shop(n_users=args.users, n_items=args.items, seed=seed)
    f = features(shop)
    truth = Truth(f, rng, world)
    users = f.index.to_numpy()
    index = {u: k for k, u in enumerate(users)}
    cols = list(f.columns)
    contacts = Contacts(users, consent={"email": np.ones(len(users), bool)}, timezone="UTC")
    budget = int(args.budget * len(users))
    order_value = float(np.mean(truth.aov))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = ps.EventStore(os.path.join(tmp, "events.db"), synchronous="normal")
        for offer in args.offers:
            sent, held = pilot(store, contacts, users, offer, rng, truth, index, order_value)
            data = uplift_data(store, f, campaign=f"pilot-{offer}")
            X, t, y = data[cols], data["treatment"].to_numpy(), data["converted"].to_numpy()
            # model choice on a held-out 30% of the pilot, by Qini AUC
            valid = np.random.default_rng(seed).random(len(data)) < 0.3
            qini = {}
            for name, m in learners(seed, args.threads).items():
                pred = m.fit(X[~valid], t[~valid], y[~valid]).predict(X[valid])
                qini[name] = qini_auc(y[valid], pred, t[valid])
                if seed == 0:
                    curves.setdefault(f"{world} world, {offer}", {})[name] = qini_curve(y[valid], pred, t[valid])
            best = max(qini, key=qini.get)
            fitted = {name: m.fit(X, t, y) for name, m in learners(seed, args.threads).items()}
            # the response model: P(convert | messaged, x), fitted on the treated pilot users only (the
            # T-learner's treated-arm model is exactly that)
            p_resp = fitted["T-learner"].predict_outcomes(f[cols])[1]
            response_fn = Scores(users, p_resp)
            camp = campaign(f"{offer}-campaign", offer, budget, order_value)
            value = truth.value(offer)
            p0, p1 = truth.p0(), truth.p1(offer)
            policies = {
                "uplift (best by validation Qini)": plan_users(contacts, camp, response_fn,
                                                               UpliftScorer(fitted[best], f[cols])),
                "response": plan_users(contacts, camp, response_fn),
                "random": plan_users(contacts, camp, Scores(users, rng.uniform(0.01, 0.02, len(users))),
                                     objective="conversions"),
            }
            for name, m in fitted.items():
                policies[f"uplift: {name}"] = plan_users(contacts, camp, response_fn, UpliftScorer(m, f[cols]))
            oracle = np.argsort(-value)[:budget]
            policies["oracle (true value)"] = list(users[oracle[value[oracle] > 0]])
            for name, chosen in policies.items():
                idx = np.array([index[u] for u in chosen], dtype=np.int64)
                n = max(len(idx), 1)
                rows.append({"world": world, "seed": seed, "offer": offer, "policy": name, "messages": int(len(idx)),
                             "incremental_conversions_per_1000": 1000 * float((p1 - p0)[idx].sum()) / n,
                             "incremental_net_margin_per_1000": 1000 * float(value[idx].sum()) / n,
                             "incremental_net_margin": float(value[idx].sum()),
                             "conversion_rate": float(p1[idx].mean()) if len(idx) else float("nan"),
                             "selected_learner": best if name.startswith("uplift (best") else ""})
            facts_rows.append({"world": world, "seed": seed, "offer": offer, "pilot_sent": sent, "pilot_held_out": held,
                               "pilot_conversions": int(y.sum()), "budget": budget, **{f"qini_{k}": v for k, v in
                                                                                        qini.items()},
                               "selected": best,
                               "corr_true_uplift": {k: float(np.corrcoef(m.predict(f[cols]), p1 - p0)[0, 1])
                                                    for k, m in fitted.items()},
                               "true_mean_uplift": float((p1 - p0).mean()), "true_p0": float(p0.mean()),
                               "negative_uplift_share": float(((p1 - p0) < 0).mean())})
            r = {x["policy"]: x for x in rows if x["seed"] == seed and x["offer"] == offer}
            print(f"{world} world, seed {seed} {offer}: pilot {sent} sent / {held} held out; Qini {', '.join(f'{k} {v:.3f}' for k, v in qini.items())}; "
                  f"net margin / 1000: uplift {r['uplift (best by validation Qini)']['incremental_net_margin_per_1000']:.1f} "
                  f"response {r['response']['incremental_net_margin_per_1000']:.1f} random "
                  f"{r['random']['incremental_net_margin_per_1000']:.1f} oracle "
                  f"{r['oracle (true value)']['incremental_net_margin_per_1000']:.1f}", flush=True)
        store.close()
    print(f"seed {seed}: {time.perf_counter() - t0:.0f} s; load {open('/proc/loadavg').read().split()[:3]}", flush=True)
    return rows


def t_interval(x):
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float("nan"), float("nan")
    from scipy import stats

    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def summarise(rows):
    df = pd.DataFrame(rows)
    out = []
    for (world, offer, policy), g in df.groupby(["world", "offer", "policy"], sort=False):
        conv = t_interval(g["incremental_conversions_per_1000"])
        net = t_interval(g["incremental_net_margin_per_1000"])
        out.append({"world": world, "offer": offer, "policy": policy, "seeds": len(g),
                    "messages": float(g["messages"].mean()), "incr_conv_per_1000": conv, "net_margin_per_1000": net,
                    "conversion_rate": float(g["conversion_rate"].mean())})
    ratios = {}
    best = "uplift (best by validation Qini)"
    for (world, offer), g in df.groupby(["world", "offer"], sort=False):
        up = g[g["policy"] == best].set_index("seed")["incremental_net_margin_per_1000"]
        rs = g[g["policy"] == "response"].set_index("seed")["incremental_net_margin_per_1000"]
        ratios[f"{world}/{offer}"] = {
            "world": world, "offer": offer, "uplift": t_interval(up), "response": t_interval(rs),
            "ratio_of_means": float(up.mean() / rs.mean()) if rs.mean() > 0 else float("nan"),
            "per_seed": (up / rs).tolist(), "response_positive_every_seed": bool((rs > 0).all()),
            "difference_per_1000": t_interval((up - rs).to_numpy()),
            # the ratio over seeds resampled together (5 seeds: a coarse interval)
            "ratio_bootstrap": _ratio_boot(up.to_numpy(), rs.to_numpy())}
    return out, ratios


def _ratio_boot(up, rs, n=10000):
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(up), size=(n, len(up)))
    den = rs[pick].mean(axis=1)
    r = up[pick].mean(axis=1) / np.where(den > 0, den, np.nan)
    ok = np.isfinite(r)
    if ok.mean() < 0.975:  # the response's mean margin is not clearly positive: no ratio interval
        return [float("nan"), float("nan")]
    return [float(np.quantile(r[ok], 0.025)), float(np.quantile(r[ok], 0.975))]


def markdown(summary, ratios, facts_rows, facts, args, load):
    fmt = lambda c: f"{c[0]:.1f} [{c[1]:.1f}, {c[2]:.1f}]"  # noqa: E731
    lines = ["# Uplift targeting vs response targeting vs random (closed loop, truth known)", "",
             f"Machine: {facts.get('processor', '')}, {facts.get('cores', '')} cores; persona {ps.__version__}; "
             f"load average before / after: {load[0]} / {load[1]}.",
             f"{args.seeds} seeds x {args.users:,} users per world; pilot: a random half of the users per offer, half "
             f"of them held out; campaign budget {args.budget:.0%} of the users; message cost {COST}, gross margin "
             f"{MARGIN:.0%}. Means over seeds with 95% t-intervals. Worlds: see the script's docstring.", ""]
    for world in dict.fromkeys(r["world"] for r in summary):
        lines += [f"## {world} world", "",
                  "| offer | policy | messages | incremental conversions / 1,000 | incremental net margin / 1,000 "
                  "(EUR) | conversion rate of recipients |", "|---|---|---|---|---|---|"]
        for r in summary:
            if r["world"] == world:
                lines.append(f"| {r['offer']} | {r['policy']} | {r['messages']:,.0f} | {fmt(r['incr_conv_per_1000'])} "
                             f"| {fmt(r['net_margin_per_1000'])} | {r['conversion_rate']:.3f} |")
        lines += ["", "Uplift (best by validation Qini) over response targeting, incremental net margin per 1,000 "
                  "messages:", ""]
        for r in ratios.values():
            if r["world"] != world:
                continue
            d, lo_hi = r["difference_per_1000"], r["ratio_bootstrap"]
            if r["response"][0] > 0:
                ci = f" (bootstrap over seeds [{lo_hi[0]:.2f}, {lo_hi[1]:.2f}])" if np.isfinite(lo_hi[0]) else \
                    " (no interval: the response's margin is not clearly above 0)"
                lines.append(f"- **{r['offer']}**: {fmt(r['uplift'])} vs {fmt(r['response'])}: ratio "
                             f"**{r['ratio_of_means']:.2f}**{ci}; goal >= 1.3 "
                             f"{'met' if r['ratio_of_means'] >= 1.3 else 'not met'}; difference {fmt(d)}")
            else:
                lines.append(f"- **{r['offer']}**: {fmt(r['uplift'])} vs {fmt(r['response'])}: response targeting "
                             f"loses money on average, so no ratio; uplift earns {fmt(d)} more")
        lines.append("")
    lines += ["## Pilot data and learners", "",
              "Qini AUC on the held-out 30% of the pilot; correlation of the refitted learner's predictions with the "
              "true uplift.", "",
              "| world | seed | offer | pilot sent / held out / conversions | Qini T / X / DR | selected | "
              "corr T / X / DR | true mean uplift | share with negative uplift |", "|---|---|---|---|---|---|---|---|---|"]
    for r in facts_rows:
        c = r["corr_true_uplift"]
        lines.append(f"| {r['world']} | {r['seed']} | {r['offer']} | {r['pilot_sent']:,} / {r['pilot_held_out']:,} / "
                     f"{r['pilot_conversions']:,} | {r['qini_T-learner']:.3f} / {r['qini_X-learner']:.3f} / "
                     f"{r['qini_DR-learner']:.3f} | {r['selected']} | {c['T-learner']:.2f} / {c['X-learner']:.2f} / "
                     f"{c['DR-learner']:.2f} | {r['true_mean_uplift']:.4f} | {r['negative_uplift_share']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(curves, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'persona-recsys[report]')")
        return
    rows_n = (len(curves) + 1) // 2
    fig, axes = plt.subplots(rows_n, 2, figsize=(11, 4 * rows_n), squeeze=False)
    for ax in axes.flat[len(curves):]:
        ax.set_visible(False)
    for ax, (offer, by) in zip(axes.flat, curves.items()):
        for name, (x, v) in by.items():
            ax.plot(x / x[-1], v, label=name)
        x, v = next(iter(by.values()))
        ax.plot([0, 1], [0, v[-1]], "k--", label="random")
        ax.set_title(f"Qini curves: {offer} pilot (held-out 30%, seed 0)", fontsize=10)
        ax.set_xlabel("share of users targeted (by predicted uplift)")
        ax.set_ylabel("incremental conversions")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=30000)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=float, default=0.2, help="campaign messages as a share of the users")
    ap.add_argument("--offers", nargs="+", default=["ad", "discount"], choices=list(OFFERS))
    ap.add_argument("--worlds", nargs="+", default=["harsh", "mild"], choices=["harsh", "mild"])
    ap.add_argument("--threads", type=int, default=1, help="LightGBM threads (0: all; 1 is fastest on a busy machine)")
    ap.add_argument("--quick", action="store_true", help="2 seeds x 6,000 users")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--plot", type=Path, default=HERE.parent / "docs" / "img" / "uplift-qini.png")
    args = ap.parse_args(argv)
    if args.quick:
        args.users, args.seeds = 6000, 2
    facts = machine_facts()
    load0 = " ".join(open("/proc/loadavg").read().split()[:3])
    t0 = time.perf_counter()
    rows, facts_rows, curves = [], [], {}
    for world in args.worlds:
        for seed in range(args.seeds):
            rows += run_seed(seed, world, args, facts_rows, curves)
    load1 = " ".join(open("/proc/loadavg").read().split()[:3])
    summary, ratios = summarise(rows)
    md = markdown(summary, ratios, facts_rows, facts, args, (load0, load1))
    payload = {"machine": facts, "args": {k: str(v) for k, v in vars(args).items()}, "load": [load0, load1],
               "seconds": time.perf_counter() - t0, "rows": rows, "summary": summary, "ratios": ratios,
               "pilots": facts_rows}
    write_results(args.out, "uplift" + ("-quick" if args.quick else ""), payload, md)
    if not args.quick:
        plot(curves, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
