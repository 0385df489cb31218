"""Off-policy evaluation and contextual bandits, measured on real logs and on a simulated world.

1. **Random policy from Thompson-sampling logs** (Open Bandit Dataset sample, men's campaign): the
   uniform-random policy's CTR estimated from the Bernoulli-TS logs alone (target: uniform over the
   34 items at each of the 3 positions; propensities: the TS policy's ``propensity_score``), against
   the random logs' own CTR. Each estimator's value, relative error and 95% interval.
2. **A personalised policy learnt on random logs**: policies learnt on 70% of the random logs (user
   features and user-item affinities), evaluated on the held-out 30% by every estimator (the DM/DR
   reward model is cross-fitted on the held-out part only), next to the Thompson-sampling policy's
   logged CTR (0.0069 on this sample) and the random policy's.
3. **Bandits on a simulated world** with known click probabilities (linear-logistic in 8 context
   features, 10 offers): cumulative regret of LinUCB, linear Thompson sampling, epsilon-greedy and
   a uniform policy, learning in batches of 100 rounds; then each learnt policy evaluated off-policy
   on fresh uniform-random logs, against its true CTR.

Seeds are fixed. Writes ``ope.json`` and ``ope.md`` to ``benchmarks/results/`` and prints the tables.

    python benchmarks/bench_ope.py                 # ~1-3 minutes on 2 cores
    python benchmarks/bench_ope.py --quick         # smaller simulation, a smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import write_results  # noqa: E402

import persona as ps  # noqa: E402
from machine import machine_facts  # noqa: E402
from persona.marketing.bandits import EpsilonGreedy, LinearThompsonSampling, LinUCB  # noqa: E402

METHODS = ("dm", "ipw", "snipw", "dr", "sndr")
TS_LOGGED_CTR = 0.0069  # the Thompson-sampling policy's logged CTR on this sample (README)


def _row(name, est, truth=None):
    row = {"policy" if truth is None else "estimator": name, "value": est.value, "ci_low": est.ci_low,
           "ci_high": est.ci_high, "std_error": est.std_error, "ess": est.ess, "max_weight": est.max_weight}
    if truth is not None:
        row["rel_error"] = (est.value - truth) / truth
        row["covers_truth"] = bool(est.ci_low <= truth <= est.ci_high)
    return row


# ---------------------------------------------------------------------------------------------- part 1
def random_from_bts(random, bts, args) -> dict:
    truth = ps.ope.on_policy(random)
    target = ps.ope.uniform_policy(bts.n_rounds, bts.n_actions, bts.n_positions)
    reward_model = ps.ope.RewardModel(regularization=args.regularization, random_state=args.seed)
    t0 = time.perf_counter()
    out = ps.ope.compare(bts, target, methods=METHODS, reward_model=reward_model)
    rows = [_row(m, e, truth.value) for m, e in out.items()]
    for clip in (20.0,):
        e = ps.ope.estimate(bts, target, "snipw", clip=clip)
        rows.append(_row(f"snipw (clip {clip:g})", e, truth.value))
    e = ps.ope.estimate(bts, target, "snipw", ci="bootstrap", n_bootstrap=1000, random_state=args.seed)
    rows.append(_row("snipw (bootstrap CI)", e, truth.value))
    return {"truth": {"value": truth.value, "ci_low": truth.ci_low, "ci_high": truth.ci_high,
                      "n_rounds": truth.n_rounds},
            "bts_logged_ctr": float(bts.reward.mean()), "rows": rows, "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------- part 2
def personalised(random, bts, args) -> dict:
    rng = np.random.default_rng(args.seed)
    n = random.n_rounds
    order = rng.permutation(n)
    n_train = int(round(0.7 * n))
    train, test = random.subset(np.sort(order[:n_train])), random.subset(np.sort(order[n_train:]))
    t0 = time.perf_counter()
    # hyperparameters fixed in advance (nothing is tuned on the held-out part)
    model = ps.ope.RewardModel(kind="logistic", regularization=args.regularization).fit(train)
    ctr = model.predict_all(test.context)                                   # (n_test, 34, 3)
    policies = {
        "uniform (sanity: IPW = held-out CTR)": ps.ope.uniform_policy(test.n_rounds, test.n_actions, 3),
        "reward model, greedy per position": ps.ope.greedy_policy(ctr),
        "reward model, softmax (T = 0.5 on log CTR)": ps.ope.softmax_policy(np.log(ctr), temperature=0.5),
    }
    bandits = {
        "LinUCB (alpha 0.1), trained offline": LinUCB(n_actions=train.n_actions, alpha=0.1, regularization=1.0,
                                                      random_state=args.seed),
        "linear TS (scale 0.05), trained offline": LinearThompsonSampling(
            n_actions=train.n_actions, scale=0.05, regularization=1.0, random_state=args.seed),
    }
    for name, policy in bandits.items():
        policy.fit(train.context, train.action, train.reward)
        policies[name] = policy.action_probabilities(test.context)          # (n_test, 34), all positions
    reward_model = ps.ope.RewardModel(regularization=args.regularization, random_state=args.seed)
    rows = []
    for name, target in policies.items():
        out = ps.ope.compare(test, target, methods=METHODS, reward_model=reward_model)
        for m, e in out.items():
            rows.append({**_row(name, e), "estimator": m})
    held_out = ps.ope.on_policy(test)
    return {"n_train": train.n_rounds, "n_test": test.n_rounds, "train_clicks": int(train.reward.sum()),
            "test_clicks": int(test.reward.sum()),
            "held_out_random_ctr": {"value": held_out.value, "ci_low": held_out.ci_low, "ci_high": held_out.ci_high},
            "ts_logged_ctr": {"value": float(bts.reward.mean()), "ci_low": ps.ope.on_policy(bts).ci_low,
                              "ci_high": ps.ope.on_policy(bts).ci_high},
            "rows": rows, "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------- part 3
class World:
    """Click probability sigmoid(theta_a . x + bias_a) of offer a for context x ~ N(0, I)."""

    def __init__(self, seed, n_actions=10, d=8):
        rng = np.random.default_rng(seed)
        self.theta = rng.normal(size=(n_actions, d)) * 0.4
        self.bias = rng.normal(-3.0, 0.4, size=n_actions)  # a random offer is clicked ~8% of the time
        self.n_actions, self.d = n_actions, d

    def ctr(self, x):
        return 1.0 / (1.0 + np.exp(-(x @ self.theta.T + self.bias)))


def make_policies(n_actions, seed):
    return {
        "LinUCB (alpha 0.3)": LinUCB(n_actions=n_actions, alpha=0.3, random_state=seed),
        "linear TS (scale 0.3)": LinearThompsonSampling(n_actions=n_actions, scale=0.3, random_state=seed),
        "epsilon-greedy (0.05)": EpsilonGreedy(n_actions=n_actions, epsilon=0.05, random_state=seed),
        "epsilon-greedy (0.2)": EpsilonGreedy(n_actions=n_actions, epsilon=0.2, random_state=seed),
        "uniform random": EpsilonGreedy(n_actions=n_actions, epsilon=1.0, random_state=seed),
    }


def simulate(args) -> dict:
    rounds, batch = args.rounds, 100
    checkpoints = [c for c in (1_000, 5_000, 10_000, 20_000, 50_000) if c <= rounds]
    names = list(make_policies(2, 0))
    regret = {name: np.zeros((len(args.sim_seeds), len(checkpoints))) for name in names}
    ctr_total = {name: [] for name in names}
    replay = {name: [] for name in names}
    t0 = time.perf_counter()
    for si, seed in enumerate(args.sim_seeds):
        world = World(1000 + seed)
        policies = make_policies(world.n_actions, seed)
        for name, policy in policies.items():
            rng = np.random.default_rng(seed)  # the same contexts and coin flips for every policy
            total, clicks, ci = 0.0, 0.0, 0
            for t in range(rounds // batch):
                x = rng.normal(size=(batch, world.d))
                q = world.ctr(x)
                a, _ = policy.choose(x)
                qa = q[np.arange(batch), a]
                r = (rng.random(batch) < qa).astype(float)
                total += float((q.max(axis=1) - qa).sum())
                clicks += float(qa.sum())
                policy.update(x, a, r)
                if ci < len(checkpoints) and (t + 1) * batch == checkpoints[ci]:
                    regret[name][si, ci] = total
                    ci += 1
            ctr_total[name].append(clicks / rounds)
            # off-policy check: the learnt policy evaluated on fresh uniform-random logs
            lrng = np.random.default_rng(10_000 + seed)
            x = lrng.normal(size=(args.replay_rounds, world.d))
            q = world.ctr(x)
            la = lrng.integers(0, world.n_actions, len(x))
            lr = (lrng.random(len(x)) < q[np.arange(len(x)), la]).astype(float)
            logs = ps.LoggedFeedback(action=la, reward=lr, propensity=np.full(len(x), 1.0 / world.n_actions),
                                     context=x, n_actions=world.n_actions)
            target = policy.action_probabilities(x)
            truth = float((target * q).sum(axis=1).mean())
            out = ps.ope.compare(logs, target, methods=("ipw", "snipw", "dr"),
                                 reward_model=ps.ope.RewardModel(random_state=seed))
            replay[name].append({"truth": truth, **{m: {"value": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high}
                                                    for m, e in out.items()}})
    optimum = []
    for seed in args.sim_seeds:
        world = World(1000 + seed)
        x = np.random.default_rng(seed).normal(size=(20_000, world.d))
        optimum.append(float(world.ctr(x).max(axis=1).mean()))
    return {"rounds": rounds, "batch": batch, "seeds": list(args.sim_seeds), "checkpoints": checkpoints,
            "optimal_ctr": float(np.mean(optimum)),
            "regret": {k: {"mean": v.mean(axis=0).tolist(), "std": v.std(axis=0).tolist()} for k, v in regret.items()},
            "ctr": {k: float(np.mean(v)) for k, v in ctr_total.items()},
            "replay": replay, "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------- report
def _f(x, digits=4):
    return f"{x:.{digits}f}"


def markdown(res: dict) -> str:
    lines = ["# Off-policy evaluation and bandits", ""]
    p1 = res["part1"]
    t = p1["truth"]
    lines += ["## 1. The uniform-random policy's CTR estimated from the Thompson-sampling logs", "",
              f"Truth (the random logs' own CTR, {t['n_rounds']:,} rounds): **{_f(t['value'])}** "
              f"[{_f(t['ci_low'])}, {_f(t['ci_high'])}]; the TS logs' own CTR: {_f(p1['bts_logged_ctr'])}.", "",
              "| estimator | estimate | 95% CI | relative error | CI covers truth | ESS | max weight |",
              "|---|---|---|---|---|---|---|"]
    for r in p1["rows"]:
        lines.append(f"| {r['estimator']} | {_f(r['value'])} | [{_f(r['ci_low'])}, {_f(r['ci_high'])}] | "
                     f"{100 * r['rel_error']:+.1f}% | {'yes' if r['covers_truth'] else 'no'} | {r['ess']:.0f} | "
                     f"{r['max_weight']:.1f} |")
    p2 = res["part2"]
    h, ts = p2["held_out_random_ctr"], p2["ts_logged_ctr"]
    lines += ["", "## 2. Personalised policies learnt on 70% of the random logs, evaluated on the other 30%", "",
              f"{p2['n_train']:,} training rounds ({p2['train_clicks']} clicks), {p2['n_test']:,} held-out rounds "
              f"({p2['test_clicks']} clicks). Held-out random CTR {_f(h['value'])} [{_f(h['ci_low'])}, "
              f"{_f(h['ci_high'])}]; Thompson-sampling logged CTR {_f(ts['value'])} [{_f(ts['ci_low'])}, "
              f"{_f(ts['ci_high'])}].", "",
              "| policy | " + " | ".join(METHODS) + " | ESS (IPW) |", "|---|" + "---|" * (len(METHODS) + 1)]
    by_policy: dict = {}
    for r in p2["rows"]:
        by_policy.setdefault(r["policy"], {})[r["estimator"]] = r
    for name, ests in by_policy.items():
        cells = [f"{_f(ests[m]['value'])} [{_f(ests[m]['ci_low'])}, {_f(ests[m]['ci_high'])}]" for m in METHODS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ests['ipw']['ess']:.0f} |")
    p3 = res["part3"]
    lines += ["", f"## 3. Bandits on a simulated world ({p3['rounds']:,} rounds in batches of {p3['batch']}, "
              f"seeds {p3['seeds']})", "",
              f"Cumulative expected regret (mean over seeds; optimal CTR {_f(p3['optimal_ctr'])}):", "",
              "| policy | " + " | ".join(f"{c:,}" for c in p3["checkpoints"]) + " | CTR |",
              "|---|" + "---|" * (len(p3["checkpoints"]) + 1)]
    for name, reg in p3["regret"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m:.1f}" for m in reg["mean"]) + f" | {_f(p3['ctr'][name])} |")
    lines += ["", "The learnt policies evaluated off-policy on fresh uniform-random logs "
              "(first seed; truth = the policy's exact CTR on those contexts):", "",
              "| policy | truth | IPW | SNIPW | DR |", "|---|---|---|---|---|"]
    for name, reps in p3["replay"].items():
        r = reps[0]
        cells = [f"{_f(r[m]['value'])} [{_f(r[m]['ci_low'])}, {_f(r[m]['ci_high'])}]" for m in ("ipw", "snipw", "dr")]
        lines.append(f"| {name} | {_f(r['truth'])} | " + " | ".join(cells) + " |")
    covered = sum(r[m]["ci_low"] <= r["truth"] <= r[m]["ci_high"] for reps in p3["replay"].values() for r in reps
                  for m in ("ipw", "snipw", "dr"))
    total = sum(len(reps) * 3 for reps in p3["replay"].values())
    lines += ["", f"Intervals covering the truth over all seeds and policies: {covered} of {total}.", "",
              f"Run time: {res['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--random", default="open-bandit/random-men", help="folder of the uniform-random logs")
    ap.add_argument("--bts", default="open-bandit/bts-men", help="folder of the Thompson-sampling logs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--regularization", type=float, default=1.0, help="L2 of the reward models")
    ap.add_argument("--rounds", type=int, default=20_000, help="simulated rounds per bandit")
    ap.add_argument("--replay-rounds", type=int, default=20_000, help="uniform logs for the off-policy check")
    ap.add_argument("--sim-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="a smaller simulation (smoke test)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.replay_rounds, args.sim_seeds = 2_000, 4_000, [0]
    t0 = time.perf_counter()
    random = ps.datasets.load_open_bandit(args.random)
    bts = ps.datasets.load_open_bandit(args.bts, align_to=random)
    res = {"machine": machine_facts(),
           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    res["part1"] = random_from_bts(random, bts, args)
    res["part2"] = personalised(random, bts, args)
    res["part3"] = simulate(args)
    res["seconds"] = time.perf_counter() - t0
    md = markdown(res)
    write_results(args.out, "ope-quick" if args.quick else "ope", res, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
