"""The closed loop, measured on a simulated shop with known truth (issue 15, parts 4 and 6).

The world is ``ps.datasets.simulated_shop`` (2,000 users and 300 items before day 0, 20 users and
5 items arriving a day, position bias ``1/log2(k+1)``, fatigue with seen items); every part runs
the real ``RecommenderService`` and ``EventStore`` (SQLite, a temporary folder) unless it says
otherwise.

* ``ope``: off-policy estimates of a target ranker's CTR from randomised logs, against the truth.
  The logging model is ItemKNN (k=50) over its top 20 candidates, randomised by ``EpsilonGreedy``
  (epsilon 0.05, 0.2, 1.0) or ``PlackettLuce`` (rank logits, temperature 0.3, 1.0); the targets are
  ALS's ranking of the logging model's candidates (fully inside the logging support) and ALS's own
  top 10 (partly outside it). Repetitions (``--reps`` per setting) draw the lists and clicks with
  the policies' ``sample_many`` over the visits of ``--ope-days`` days (the users' state fixed at
  the end of the history, so the truth of every list is exact); per estimator: bias, RMSE, the
  coverage of its 95% interval, the interval's half-width. One more run per setting goes end to
  end -- the service draws and logs the lists for 7 days, the users respond (their state
  changing), ``LoggedSlates.from_impressions`` reads the store -- and its estimates are compared
  with the counterfactual truth of the same requests.
* ``experiments``: ``svc.experiment`` + ``exp.analyze`` (sequential, alpha 0.05, a look every day
  for 7 days, stopping at the first decision; and one fixed-horizon look at the end) over
  ``--seeds`` worlds, in four scenarios: A/A (ItemKNN twice), and A/B with a large (MostPopular vs
  ItemKNN), moderate (ItemKNN k=50 vs k=5) and small (ItemKNN vs EASE) true difference. The truth
  of each run is the difference of the two variants' expected CTR on the very requests served
  (both variants asked every request, ``counterfactual=``). Reports type I errors (A/A), correct
  picks, wrong picks and no decisions (A/B), with Wilson intervals.
* ``loop``: 28 days with the loop on (an ALS model updated daily from the store with
  ``Retrainer.run_once``, retrained fully every 7 days, swapped into the service) vs off (the
  week-0 model frozen), and an oracle that shows each user's truly best unseen items (the
  ceiling), over ``--loop-seeds`` worlds; the true CTR of what was shown, week by week, and the
  lift on - off paired by world.

    nice -n 10 python benchmarks/bench_loop.py                 # ~20 minutes on 2 busy cores
    nice -n 10 python benchmarks/bench_loop.py --quick         # a smoke test
    nice -n 10 python benchmarks/bench_loop.py --parts ope     # one part

Writes ``benchmarks/results/loop.{json,md}`` (experiments, loop) and
``benchmarks/results/ope-slates.{json,md}`` (ope).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import write_results  # noqa: E402
from machine import machine_facts  # noqa: E402

N_SHOWN, TOP = 10, 20
SCENARIOS = {
    "A/A": ("ItemKNN(k=50)", "ItemKNN(k=50)"),
    "large": ("MostPopular", "ItemKNN(k=50)"),
    "moderate": ("ItemKNN(k=50)", "ItemKNN(k=5)"),
    "small": ("ItemKNN(k=50)", "EASE(regularization=100)"),
}


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_ci(x) -> tuple[float, float, float]:
    x = np.asarray(x, dtype=float)
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    from scipy.stats import t

    half = float(t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return m, m - half, m + half


def make_model(spec: str):
    import persona as ps

    if spec == "MostPopular":
        return ps.MostPopular()
    if spec.startswith("ItemKNN"):
        return ps.ItemKNN(k=int(spec.split("=")[1].rstrip(")")))
    if spec.startswith("EASE"):
        return ps.EASE(regularization=100.0)
    if spec.startswith("ALS"):
        return ps.ALS(factors=16, iterations=10, random_state=0)
    raise ValueError(spec)


def fresh_store(shop, folder: Path, name: str):
    """A new SQLite store in ``folder`` holding the world's history."""
    import persona as ps

    folder.mkdir(parents=True, exist_ok=True)
    store = ps.EventStore(str(folder / name), synchronous="normal")
    store.import_frame(shop.history(), time="timestamp")
    return store


# ============================================================================== ope
def _policies():
    from persona.serving import EpsilonGreedy, PlackettLuce

    return {"eps 0.05": EpsilonGreedy(0.05, top=TOP), "eps 0.2": EpsilonGreedy(0.2, top=TOP),
            "eps 1.0": EpsilonGreedy(1.0, top=TOP), "PL T=0.3": PlackettLuce(0.3, top=TOP),
            "PL T=1.0": PlackettLuce(1.0, top=TOP)}


def _methods(policy):
    from persona.serving import EpsilonGreedy

    base = ["ips-position", "dr-position", "dm", "ips-slate"]
    return base + (["pi", "dr-pi"] if isinstance(policy, EpsilonGreedy) else [])


def ope_repetitions(seed: int, reps: int, days: int) -> dict:
    """Vectorised repetitions of logging and estimation on fixed contexts (exact truth)."""
    import persona as ps

    shop = ps.datasets.simulated_shop(seed=seed)
    hist = shop.history()
    inter = ps.Interactions.from_frame(hist, time="timestamp")
    logging_model = make_model("ItemKNN(k=50)").fit(inter)
    target_model = make_model("ALS").fit(inter)
    users, days_of = [], []
    for day in range(days):
        v = shop.visitors(day)
        v = v[np.isin(v, inter.user_ids)]  # users the models know (they browsed in the history)
        users.append(v)
        days_of.append(np.full(len(v), day))
    users, days_of = np.concatenate(users), np.concatenate(days_of)
    n = len(users)
    cand, _ = logging_model.recommend_batch(users, n=TOP)
    cand = cand.astype(np.int64)
    rerank, _ = target_model.recommend_batch(users, n=N_SHOWN, items=[list(r) for r in cand])
    own_als, _ = target_model.recommend_batch(users, n=N_SHOWN)
    targets = {"ALS reranking the candidates": rerank.astype(np.int64), "ALS's own top 10": own_als.astype(np.int64)}

    def truth_of(lists):
        out = np.zeros(lists.shape)
        for d in np.unique(days_of):
            rows = days_of == d
            out[rows] = shop.click_probabilities(users[rows], lists[rows], int(d))
        return out

    truth = {name: float(truth_of(lists).sum(axis=1).mean() / N_SHOWN) for name, lists in targets.items()}
    greedy = float(truth_of(cand[:, :N_SHOWN]).sum(axis=1).mean() / N_SHOWN)
    rows = []
    logging_ctr = {}
    for p_idx, (pname, policy) in enumerate(_policies().items()):
        methods = _methods(policy)
        exp_ctr = []
        for rep in range(reps):
            rng = np.random.default_rng([seed, p_idx, rep])
            order, props = policy.sample_many(np.zeros((n, TOP)), N_SHOWN, rng)
            items = np.take_along_axis(cand, order, axis=1)
            prob = np.zeros(items.shape)
            for d in np.unique(days_of):
                r = days_of == d
                prob[r] = shop.click_probabilities(users[r], items[r], int(d))
            exp_ctr.append(prob.mean())
            clicks = (rng.random(items.shape) < prob).astype(float)
            slate_p = np.array([policy.slate_probability(np.zeros(TOP), o) for o in order])
            logs = ps.ope.LoggedSlates(items, clicks, props, candidates=cand, policy=policy,
                                       slate_propensities=slate_p)
            for tname, lists in targets.items():
                out = ps.ope.compare_slates(logs, lists, methods=methods, random_state=rep)
                for m, est in out.items():
                    rows.append({"seed": seed, "logging": pname, "target": tname, "method": m, "rep": rep,
                                 "truth": truth[tname], "value": est.value, "low": est.ci_low, "high": est.ci_high,
                                 "se": est.std_error, "ess": est.ess, "support": est.support})
        logging_ctr[pname] = float(np.mean(exp_ctr))
    return {"rows": rows, "truth": truth, "greedy_ctr": greedy, "logging_ctr": logging_ctr, "n_rounds": n}


def ope_end_to_end(seed: int, days: int, folder: Path) -> list[dict]:
    """One run per logging setting through the service and the store, estimates vs the counterfactual truth."""
    import persona as ps

    shop = ps.datasets.simulated_shop(seed=seed)
    inter = ps.Interactions.from_frame(shop.history(), time="timestamp")
    logging_model = make_model("ItemKNN(k=50)").fit(inter)
    target_model = make_model("ALS").fit(inter)
    out = []
    for pname, policy in _policies().items():
        shop.reset()
        store = fresh_store(shop, folder, f"ope-{pname.replace(' ', '_').replace('=', '')}.db")
        svc = ps.serving.RecommenderService(logging_model, store=store, explore={"home": policy})
        plain = ps.serving.RecommenderService(logging_model)
        cf = {"own": plain, "target": ps.serving.RecommenderService(target_model), "candidates": (plain, TOP)}
        t0 = time.perf_counter()
        logs = shop.run(svc, days, store=store, n=N_SHOWN, counterfactual=cf)
        seconds = time.perf_counter() - t0
        rid = np.concatenate([log.request_ids for log in logs])
        where = {r: i for i, r in enumerate(rid)}
        got = ps.ope.LoggedSlates.from_impressions(store.impressions(placement="home"),
                                                   ps.analytics.attribution(store))
        row = np.array([where[r] for r in got.request_ids])
        cand = np.concatenate([log.extra["counterfactual"]["candidates"][0] for log in logs])[row]
        n_cand = (cand >= 0).sum(axis=1)
        slates = ps.ope.LoggedSlates(got.items, got.clicks, got.propensities, n_shown=got.n_shown, candidates=cand,
                                     n_candidates=n_cand, policy=policy)
        shown_truth = sum(float(log.click_probability.sum()) for log in logs) / sum(log.impressions for log in logs)
        for tname in ("own", "target"):
            lists = np.concatenate([log.extra["counterfactual"][tname][0] for log in logs])[row]
            probs = np.concatenate([log.extra["counterfactual"][tname][1] for log in logs])[row]
            truth = float(probs.sum(axis=1).mean() / N_SHOWN)
            methods = [m for m in _methods(policy) if m != "ips-slate"]
            ests = ps.ope.compare_slates(slates, lists, methods=methods)
            for m, est in ests.items():
                out.append({"logging": pname, "target": "ItemKNN's own list" if tname == "own" else "ALS's own top 10",
                            "method": m, "truth": truth, "value": est.value, "low": est.ci_low, "high": est.ci_high,
                            "support": est.support, "rounds": slates.n_rounds,
                            "logged_ctr": float(got.clicks.sum() / got.shown.sum()),
                            "logged_expected_ctr": shown_truth,
                            "seconds": seconds})
        svc.close()
        store.close()
    return out


def summarise_ope(results: list[dict]) -> list[dict]:
    import pandas as pd

    frame = pd.DataFrame([r for res in results for r in res["rows"]])
    out = []
    for (logging, target, method), g in frame.groupby(["logging", "target", "method"], sort=False):
        err = g["value"] - g["truth"]
        covered = int(((g["low"] <= g["truth"]) & (g["truth"] <= g["high"])).sum())
        lo, hi = wilson(covered, len(g))
        out.append({"logging": logging, "target": target, "method": method, "truth": float(g["truth"].mean()),
                    "mean_estimate": float(g["value"].mean()), "bias": float(err.mean()),
                    "bias_se": float(err.std(ddof=1) / math.sqrt(len(g))), "rmse": float(np.sqrt((err ** 2).mean())),
                    "coverage": covered / len(g), "coverage_low": lo, "coverage_high": hi,
                    "half_width": float(((g["high"] - g["low"]) / 2).mean()), "ess": float(g["ess"].mean()),
                    "support": float(g["support"].mean()), "runs": int(len(g))})
    return out


def ope_markdown(summary, results, e2e, args, load, seconds) -> str:
    lines = ["# Off-policy evaluation of rankers from randomised logs, against the truth", "",
             f"`benchmarks/bench_loop.py --parts ope` (seeds {args.ope_seeds}, {args.reps} repetitions each, "
             f"{args.ope_days} days of visits per repetition: about {results[0]['n_rounds']} lists of "
             f"{N_SHOWN} per world; load average {load[0]:.1f} -> {load[1]:.1f}; {seconds:.0f} s).", "",
             "Logging: ItemKNN (k=50), its top 20 candidates randomised by the policy; the value is the "
             "target's expected clicks per shown slot (CTR). Truth: exact, from the world's click "
             "probabilities. Coverage: share of runs whose 95% interval holds the truth (Wilson interval).", "",
             "## What exploration costs (true CTR of the logged lists)", "",
             "| logging | true CTR | vs the model's own list |", "|---|---|---|"]
    greedy = np.mean([r["greedy_ctr"] for r in results])
    for pname in _policies():
        ctr = np.mean([r["logging_ctr"][pname] for r in results])
        lines.append(f"| {pname} | {ctr:.4f} | {100 * (ctr / greedy - 1):+.1f}% |")
    lines.append(f"| none (ItemKNN's own top 10) | {greedy:.4f} | |")
    lines += ["", "## Estimates vs truth", "",
              "| logging | target | method | truth | bias (± se) | RMSE | coverage [95% CI] | half-width | ESS "
              "| support |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['logging']} | {s['target']} | {s['method']} | {s['truth']:.4f} | {s['bias']:+.4f} "
                     f"(± {s['bias_se']:.4f}) | {s['rmse']:.4f} | {s['coverage']:.2f} [{s['coverage_low']:.2f}, "
                     f"{s['coverage_high']:.2f}] | {s['half_width']:.4f} | {s['ess']:.0f} | {s['support']:.2f} |")
    lines += ["", "## End to end: the service logs, the store answers", "",
              "Seven days through `RecommenderService(explore=...)` and SQLite; `LoggedSlates.from_impressions` "
              "on `store.impressions()` and `ps.analytics.attribution(store)`; the truth is the counterfactual "
              "target's expected CTR on the same requests (users' state changing as they respond).", "",
              "| logging | target | method | truth | estimate [95% CI] | covered | support | lists |",
              "|---|---|---|---|---|---|---|---|"]
    for r in e2e:
        ok = "yes" if r["low"] <= r["truth"] <= r["high"] else "no"
        lines.append(f"| {r['logging']} | {r['target']} | {r['method']} | {r['truth']:.4f} | {r['value']:.4f} "
                     f"[{r['low']:.4f}, {r['high']:.4f}] | {ok} | {r['support']:.2f} | {r['rounds']} |")
    return "\n".join(lines) + "\n"


# ============================================================================== experiments
def experiment_task(task) -> dict:
    seed, scenario, days, alpha, folder = task
    import persona as ps

    t0 = time.perf_counter()
    shop = ps.datasets.simulated_shop(seed=seed)
    store = fresh_store(shop, Path(folder), f"exp-{scenario.replace('/', '')}.db")
    inter = ps.Interactions.from_frame(shop.history(), time="timestamp")
    spec_a, spec_b = SCENARIOS[scenario]
    model_a = make_model(spec_a).fit(inter)
    model_b = model_a if spec_b == spec_a else make_model(spec_b).fit(inter)
    svc = ps.serving.RecommenderService(model_a, store=store)
    exp = svc.experiment("home", {"A": model_a, "B": model_b}, salt=f"{scenario.replace('/', '')}-{seed}")
    shadows = {"A": ps.serving.RecommenderService(model_a), "B": ps.serving.RecommenderService(model_b)}
    horizon = int(np.sum(1 - (1 - shop.visit_prob[shop.join_day < days]) ** days))
    num, den = {"A": 0.0, "B": 0.0}, {"A": 0, "B": 0}
    decision, decided_day, alarms = "continue", None, 0
    for day in range(days):
        log = shop.serve_day(day, svc, n=N_SHOWN, counterfactual=shadows)
        for k in ("A", "B"):
            items, prob = log.extra["counterfactual"][k]
            num[k] += float(prob.sum())
            den[k] += int((items >= 0).sum())
        store.flush()
        if decided_day is None:
            res = exp.analyze(metrics=["ctr"], alpha=alpha, horizon=horizon)
            said = res.decision["B"]
            if said == "check the assignment":  # an SRM alarm: the analyst checks, finds nothing, looks again tomorrow
                alarms += 1
            elif said != "continue":
                decision, decided_day = said, day
    fixed = exp.analyze(metrics=["ctr"], alpha=alpha, method="fixed")
    final = exp.analyze(metrics=["ctr"], alpha=alpha, horizon=horizon)
    row = final.table.iloc[0]
    out = {"seed": seed, "scenario": scenario, "truth_a": num["A"] / den["A"], "truth_b": num["B"] / den["B"],
           "truth_diff": num["B"] / den["B"] - num["A"] / den["A"], "sequential": decision,
           "decided_day": decided_day, "fixed": fixed.decision["B"], "srm_alarms": alarms,
           "observed_diff": float(row["diff"]),
           "users": final.users, "srm": bool(final.srm), "seconds": time.perf_counter() - t0}
    svc.close()
    store.close()
    return out


def _outcome(decision: str, truth: float, aa: bool) -> str:
    if decision not in ("B better", "B worse"):
        return "none"  # continue, no difference, or an SRM alarm (counted apart)
    if aa:
        return "false"
    sign = 1 if decision == "B better" else -1
    return "correct" if sign * truth > 0 else "wrong"


def experiments_markdown(rows, args, load, seconds) -> tuple[str, list]:
    import pandas as pd

    frame = pd.DataFrame(rows)
    lines = ["## Experiment decisions vs the truth", "",
             f"{args.seeds} worlds per scenario; `svc.experiment` on placement `home`, a look every day for "
             f"{args.exp_days} days with `exp.analyze(metrics=['ctr'])` (sequential, alpha {args.alpha}, "
             "stopping at the first decision), and one fixed-horizon look at the end (`method='fixed'`). "
             "The truth: both variants' expected CTR on the same requests. "
             f"Load average {load[0]:.1f} -> {load[1]:.1f}; {seconds:.0f} s.", "",
             "| scenario | A vs B | true diff B-A (mean, range) | rule | type I (A/A) or correct pick | wrong pick | "
             "no decision | mean decision day |", "|---|---|---|---|---|---|---|---|"]
    summary = []
    for scenario, g in frame.groupby("scenario", sort=False):
        aa = scenario == "A/A"
        td = g["truth_diff"]
        for rule in ("sequential", "fixed"):
            outcomes = [_outcome(d, t, aa) for d, t in zip(g[rule], td)]
            n = len(outcomes)
            k_main = sum(o == ("false" if aa else "correct") for o in outcomes)
            k_wrong = sum(o == "wrong" for o in outcomes)
            k_none = sum(o == "none" for o in outcomes)
            lo, hi = wilson(k_main, n)
            wlo, whi = wilson(k_wrong, n)
            days = g["decided_day"].dropna() + 1 if rule == "sequential" else pd.Series([], dtype=float)
            summary.append({"scenario": scenario, "rule": rule, "runs": n, "main": k_main / n, "main_ci": (lo, hi),
                            "wrong": k_wrong / n, "wrong_ci": (wlo, whi), "none": k_none / n,
                            "truth_diff_mean": float(td.mean()), "truth_diff_min": float(td.min()),
                            "truth_diff_max": float(td.max()), "truth_a": float(g["truth_a"].mean()),
                            "truth_b": float(g["truth_b"].mean()),
                            "mean_day": float(days.mean()) if len(days) else math.nan})
            label = "type I" if aa else "correct"
            lines.append(f"| {scenario} | {SCENARIOS[scenario][0]} vs {SCENARIOS[scenario][1]} | {td.mean():+.4f} "
                         f"({td.min():+.4f} .. {td.max():+.4f}) | {rule} | {label} {k_main}/{n} = {k_main / n:.2f} "
                         f"[{lo:.2f}, {hi:.2f}] | {k_wrong}/{n} [{wlo:.2f}, {whi:.2f}] | {k_none}/{n} | "
                         + (f"{days.mean():.1f}" if len(days) else "-") + " |")
    srm = int(frame["srm"].sum())
    alarms = int(frame["srm_alarms"].sum())
    fixed_alarms = int((frame["fixed"] == "check the assignment").sum())
    lines += ["", f"Sample ratio mismatch (p < 0.001): at the end of {srm} of {len(frame)} runs; a transient alarm "
              f"at {alarms} daily look(s), in {int((frame['srm_alarms'] > 0).sum())} of {len(frame)} runs (such a look "
              f"makes no decision; the next one may); at the fixed look in {fixed_alarms}. Mean true CTR: " + ", ".join(
        f"{s['scenario']} A {s['truth_a']:.4f} / B {s['truth_b']:.4f}" for s in summary if s["rule"] == "fixed") + "."]
    return "\n".join(lines) + "\n", summary


# ============================================================================== loop on / off
class _Answer:
    def __init__(self, items):
        self.items, self.propensities, self.request_id, self.variant, self.source = items, None, None, None, "oracle"


class Oracle:
    """Shows each visitor the items the truth says they like best (a ceiling, not a recommender)."""

    store = None

    def __init__(self, shop):
        self.shop, self.day = shop, 0

    def recommend(self, user, n=10, context=None):
        items = self.shop.items_on(self.day)
        alpha = self.shop.attraction(np.full(len(items), user), items, self.day)
        return _Answer(items[np.argsort(-alpha, kind="stable")[:n]])


def loop_task(task) -> dict:
    seed, arm, days, folder = task
    import persona as ps
    from persona.pipeline import Retrainer

    t0 = time.perf_counter()
    shop = ps.datasets.simulated_shop(seed=seed, days=days)
    shop.reset()
    if arm == "oracle":
        oracle = Oracle(shop)
        logs = []
        for day in range(days):
            oracle.day = day
            logs.append(shop.serve_day(day, oracle, n=N_SHOWN))
    else:
        store = fresh_store(shop, Path(folder), f"loop-{arm}.db")
        model = make_model("ALS").fit(store.interactions())
        svc = ps.serving.RecommenderService(model, store=store)
        since = float(shop.history()["timestamp"].max()) + 1.0
        retrainer = Retrainer(store, model, service=svc, since=since) if arm == "on" else None
        logs = shop.run(svc, days, retrainer=retrainer, retrain_every=7, store=store, n=N_SHOWN)
        svc.close()
        store.close()
    weeks = days // 7
    out = {"seed": seed, "arm": arm, "seconds": time.perf_counter() - t0, "weekly_expected": [], "weekly_ctr": [],
           "weekly_model_share_new_users": []}
    for w in range(weeks):
        part = logs[7 * w: 7 * (w + 1)]
        shown = sum(log.impressions for log in part)
        out["weekly_expected"].append(sum(float(log.click_probability.sum()) for log in part) / shown)
        out["weekly_ctr"].append(sum(int(log.clicks.sum()) for log in part) / shown)
        new = np.concatenate([log.sources[shop.join_day[log.users] >= 0] for log in part])
        out["weekly_model_share_new_users"].append(float((new == "model").mean()) if len(new) else math.nan)
    return out


def loop_markdown(rows, args, load, seconds) -> tuple[str, dict]:
    import pandas as pd

    frame = pd.DataFrame(rows)
    weeks = len(frame["weekly_expected"].iloc[0])
    by = {arm: np.array(frame[frame["arm"] == arm].sort_values("seed")["weekly_expected"].tolist())
          for arm in ("off", "on", "oracle")}
    ctr = {arm: np.array(frame[frame["arm"] == arm].sort_values("seed")["weekly_ctr"].tolist())
           for arm in ("off", "on")}
    share = {arm: np.array(frame[frame["arm"] == arm].sort_values("seed")["weekly_model_share_new_users"].tolist())
             for arm in ("off", "on")}
    lines = ["## The loop on vs off, week by week", "",
             f"{args.loop_seeds} worlds, {args.loop_days} days; ALS (16 factors) trained on the history; "
             "loop on: `Retrainer.run_once()` after every day (`model.update` with the day's events from the "
             "store, swapped into the service), a full retrain every 7 days; loop off: the day-0 model frozen; "
             "oracle: each user's truly best items (a ceiling). True CTR of what was shown (mean over worlds "
             f"[95% t-interval]); lift paired by world. Load average {load[0]:.1f} -> {load[1]:.1f}; "
             f"{seconds:.0f} s.", "",
             "| week | loop off | loop on | lift on - off | relative | oracle | realised CTR off / on | "
             "new users served by the model (off / on) |", "|---|---|---|---|---|---|---|---|"]
    summary = {"weeks": []}
    for w in range(weeks):
        off, on, orc = (mean_ci(by[a][:, w]) for a in ("off", "on", "oracle"))
        lift = mean_ci(by["on"][:, w] - by["off"][:, w])
        rel = mean_ci(by["on"][:, w] / by["off"][:, w] - 1)
        summary["weeks"].append({"week": w + 1, "off": off, "on": on, "oracle": orc, "lift": lift, "relative": rel,
                                 "realised_off": float(ctr["off"][:, w].mean()),
                                 "realised_on": float(ctr["on"][:, w].mean())})
        lines.append(f"| {w + 1} | {off[0]:.4f} [{off[1]:.4f}, {off[2]:.4f}] | "
                     f"{on[0]:.4f} [{on[1]:.4f}, {on[2]:.4f}] | "
                     f"{lift[0]:+.4f} [{lift[1]:+.4f}, {lift[2]:+.4f}] | {100 * rel[0]:+.1f}% "
                     f"[{100 * rel[1]:+.1f}, {100 * rel[2]:+.1f}] | {orc[0]:.4f} | {ctr['off'][:, w].mean():.4f} / "
                     f"{ctr['on'][:, w].mean():.4f} | {np.nanmean(share['off'][:, w]):.2f} / "
                     f"{np.nanmean(share['on'][:, w]):.2f} |")
    secs = frame.groupby("arm")["seconds"].mean()
    lines += ["", "Seconds per world: " + ", ".join(f"{a} {secs[a]:.1f}" for a in ("off", "on", "oracle")) + "."]
    return "\n".join(lines) + "\n", summary


# ============================================================================== main
def run_pool(fn, tasks, workers):
    if workers <= 1:
        return [fn(t) for t in tasks]
    with mp.get_context("spawn").Pool(workers) as pool:
        return pool.map(fn, tasks, chunksize=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="ope,experiments,loop")
    ap.add_argument("--seeds", type=int, default=50, help="worlds per experiment scenario")
    ap.add_argument("--exp-days", type=int, default=7)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--loop-seeds", type=int, default=10)
    ap.add_argument("--loop-days", type=int, default=28)
    ap.add_argument("--ope-seeds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--ope-days", type=int, default=21)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.exp_days, args.loop_seeds, args.loop_days = 3, 3, 2, 14
        args.ope_seeds, args.reps, args.ope_days = 1, 3, 3
    parts = set(args.parts.split(","))
    facts = machine_facts()
    root = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    try:
        if "ope" in parts:
            load0, t0 = loadavg(), time.perf_counter()
            results = [ope_repetitions(s, args.reps, args.ope_days) for s in range(args.ope_seeds)]
            e2e = ope_end_to_end(0, 2 if args.quick else 7, root / "ope")
            summary = summarise_ope(results)
            seconds = time.perf_counter() - t0
            load = [load0[0], loadavg()[0]]
            md = ope_markdown(summary, results, e2e, args, load, seconds)
            write_results(args.out, "ope-slates", {"machine": facts, "args": vars(args), "load": load,
                                                   "seconds": seconds, "summary": summary, "end_to_end": e2e,
                                                   "truth": [r["truth"] for r in results],
                                                   "logging_ctr": [r["logging_ctr"] for r in results],
                                                   "greedy_ctr": [r["greedy_ctr"] for r in results]}, md)
        loop_payload, md_parts = {"machine": facts, "args": vars(args)}, ["# The closed loop, measured", ""]
        if "experiments" in parts:
            load0, t0 = loadavg(), time.perf_counter()
            tasks = []
            for seed in range(args.seeds):
                for k, scenario in enumerate(SCENARIOS):
                    tasks.append((seed, scenario, args.exp_days, args.alpha, str(root / f"exp-{seed}-{k}")))
            rows = run_pool(experiment_task, tasks, args.workers)
            seconds = time.perf_counter() - t0
            load = [load0[0], loadavg()[0]]
            md, summary = experiments_markdown(rows, args, load, seconds)
            md_parts.append(md)
            loop_payload.update(experiments=rows, experiment_summary=summary, experiment_load=load,
                                experiment_seconds=seconds)
        if "loop" in parts:
            load0, t0 = loadavg(), time.perf_counter()
            tasks = []
            for seed in range(args.loop_seeds):
                for arm in ("on", "off", "oracle"):
                    tasks.append((seed, arm, args.loop_days, str(root / f"loop-{seed}-{arm}")))
            rows = run_pool(loop_task, tasks, args.workers)
            seconds = time.perf_counter() - t0
            load = [load0[0], loadavg()[0]]
            md, summary = loop_markdown(rows, args, load, seconds)
            md_parts.append(md)
            loop_payload.update(loop=rows, loop_summary=summary, loop_load=load, loop_seconds=seconds)
        if len(md_parts) > 2:
            write_results(args.out, "loop", loop_payload, "\n".join(md_parts))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
