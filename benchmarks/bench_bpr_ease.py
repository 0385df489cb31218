"""Benchmark BPR against implicit's BPR, and EASE, on Amazon Beauty: fit time and ranking quality.

Protocol (the same as ``benchmarks/run.py``): leave-last-out; EASE's lambda is tuned on the
validation targets (fit on train); every reported model is then fitted on train + valid and scored
on the test targets with full ranking, seen items excluded (``ps.evaluate``, k = 5, 10, 20).

Contenders, in the same run:

- ``persona BPR`` -- ``persona.models.bpr.BPR`` (Numba, hogwild)
- ``implicit BPR`` -- ``implicit.cpu.bpr.BayesianPersonalizedRanking`` with the same factors,
  learning rate, regularization, iterations, threads and seed (``verify_negative_samples=True``),
  scored through a small adapter so the same ``ps.evaluate`` ranks both (same top-k, same filters)
- ``persona EASE`` -- with the best lambda of ``--lambdas`` on the validation targets
- ``most popular`` -- the floor every model must clear

BPR's Numba compilation is timed apart (a warm-up fit on a tiny problem) so the fit times compare
training alone. Writes ``bpr-ease.json`` / ``.md`` (``bpr-ease-quick`` with ``--quick``) to
``benchmarks/results/`` with the machine's facts.

    python benchmarks/bench_bpr_ease.py                      # the full run (minutes)
    python benchmarks/bench_bpr_ease.py --quick              # subsample, few iterations: a smoke test
    python benchmarks/bench_bpr_ease.py --threads 1 --iterations 50 --lambdas 100,300,1000
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import persona as ps  # noqa: E402
from common import default_beauty, eval_row, fit_and_eval, scores_of, timed, write_results  # noqa: E402
from machine import machine_facts  # noqa: E402
from persona.data import IdMap, Interactions  # noqa: E402
from persona.kernels import topk  # noqa: E402
from persona.models.bpr import BPR  # noqa: E402
from persona.models.ease import EASE  # noqa: E402

KS = (5, 10, 20)


# ---------------------------------------------------------------------------------------------- data

def subsample(inter: Interactions, max_items: int | None, max_users: int | None, seed: int) -> Interactions:
    """The events on the ``max_items`` most popular items, of ``max_users`` random users, with compact maps."""
    keep = np.ones(len(inter), dtype=bool)
    if max_items is not None and max_items < inter.n_items:
        top = np.argsort(-inter.item_counts, kind="stable")[:max_items]
        keep &= np.isin(inter.items, top)
    if max_users is not None and max_users < inter.n_users:
        chosen = np.random.default_rng(seed).choice(inter.n_users, size=max_users, replace=False)
        keep &= np.isin(inter.users, chosen)
    if keep.all():
        return inter
    users, items = inter.users[keep], inter.items[keep]
    u_old, u_new = np.unique(users, return_inverse=True)
    i_old, i_new = np.unique(items, return_inverse=True)
    ts = None if inter.timestamps is None else inter.timestamps[keep]
    return Interactions(IdMap(inter.user_ids[u_old]), IdMap(inter.item_ids[i_old]), u_new, i_new,
                        inter.weights[keep], ts)


# ---------------------------------------------------------------------------------------------- implicit
class ImplicitAdapter:
    """What ``ps.evaluate`` needs from a model, over a fitted implicit factor model.

    Scores are implicit's own factors (``user_factors @ item_factors.T``, its bias column included);
    selection is persona's top-k with the same exclusions every persona model gets.
    """

    def __init__(self, model, inter: Interactions, num_threads: int = 0):
        self.model = model
        self.user_map_ = inter.user_map
        self.item_map_ = inter.item_map
        self.user_items_ = inter.matrix
        self.num_threads = num_threads

    def recommend_indices(self, user_indices, n, *, filter_seen=True, exclude=None):
        users = np.asarray(user_indices, dtype=np.int64).reshape(-1)
        uf, itf = self.model.user_factors, self.model.item_factors
        scores = np.asarray(uf[users] @ itf.T, dtype=np.float32)
        excl = self.user_items_[users] if filter_seen else None
        if exclude is not None:
            excl = exclude.tocsr() if excl is None else (excl + exclude).tocsr()
        return topk(scores, n, exclude=excl, num_threads=self.num_threads)


def fit_implicit(train: Interactions, args):
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    model = BayesianPersonalizedRanking(factors=args.factors, learning_rate=args.learning_rate,
                                        regularization=args.regularization, iterations=args.iterations,
                                        num_threads=args.threads, random_state=args.seed,
                                        verify_negative_samples=True)
    x = sp.csr_matrix(train.matrix, copy=True)
    x.data[:] = 1.0  # BPR learns from presence, as persona's does
    t = time.perf_counter()
    model.fit(x, show_progress=False)
    return ImplicitAdapter(model, train, args.threads), time.perf_counter() - t


# ---------------------------------------------------------------------------------------------- runs

def run(args) -> dict:
    data = args.data or default_beauty()
    if data is None or not Path(data).exists():
        raise SystemExit("no data: pass --data PATH (a `user item item ...` file such as Beauty.txt)")
    loaded = ps.datasets.load_sequences(data)
    inter = subsample(loaded.interactions, args.max_items, args.max_users, args.seed)
    train, valid, test = ps.split.leave_last_out(inter)
    full = train.concat(valid)
    print(f"{Path(data).name}: {inter.n_users} users, {inter.n_items} items, {len(inter)} events; "
          f"{len(test)} test targets", flush=True)
    rows = []

    def add(name, model, fit_s, extra=None):
        return eval_row(rows, name, model, test, fit_s, extra)

    # ---- most popular: the floor
    fit_and_eval(rows, "most popular", lambda: ps.MostPopular().fit(full), test)

    bpr_params = dict(factors=args.factors, learning_rate=args.learning_rate, regularization=args.regularization,
                      iterations=args.iterations, random_state=args.seed, num_threads=args.threads,
                      negative_sampling=args.negative_sampling)
    if not args.skip_bpr:
        # compile (or load the cache) on a tiny problem, so the timed fit is training alone
        tiny = Interactions(IdMap([0, 1]), IdMap([0, 1, 2]), [0, 1], [0, 1])
        _, compile_s = timed(lambda: BPR(**{**bpr_params, "iterations": 1}).fit(tiny))
        fit_and_eval(rows, "persona BPR", lambda: BPR(**bpr_params).fit(full), test,
                     lambda m: {"compile_s": compile_s, "final_loss": m.history_["loss"][-1],
                                "final_pair_accuracy": m.history_["pair_accuracy"][-1]})
        if not args.skip_implicit:
            try:
                adapter, fit_s = fit_implicit(full, args)
            except ImportError as e:
                print(f"  implicit BPR: skipped ({e})")
            else:
                add("implicit BPR", adapter, fit_s)

    tuning = []
    if not args.skip_ease:
        for lam in args.lambdas:
            m, fit_s = timed(lambda: EASE(regularization=lam, num_threads=args.threads).fit(train))
            rep = ps.evaluate(m, valid, k=KS, metrics=("hr", "ndcg"))
            tuning.append({"regularization": lam, "fit_s": fit_s, "precision": m.precision_, **scores_of(rep)})
            print(f"  EASE lambda={lam:g}: valid NDCG@10 {rep['ndcg@10']:.4f} HR@10 {rep['hr@10']:.4f} "
                  f"(fit {fit_s:.2f} s, {m.precision_})", flush=True)
            del m
        best = max(tuning, key=lambda r: (r["ndcg@10"], r["hr@10"]))["regularization"]
        fit_and_eval(rows, f"persona EASE (lambda={best:g})",
                     lambda: EASE(regularization=best, num_threads=args.threads).fit(full), test,
                     lambda m: {"precision": m.precision_})

    ratio = None
    names = {r["model"]: r for r in rows}
    if "persona BPR" in names and "implicit BPR" in names:
        ratio = names["persona BPR"]["fit_s"] / names["implicit BPR"]["fit_s"]
    return {"data": str(data), "n_users": inter.n_users, "n_items": inter.n_items, "n_events": len(inter),
            "protocol": "leave-last-out; fit on train+valid, test targets, full ranking, seen items excluded; "
                        "EASE lambda chosen by valid NDCG@10 (fit on train)",
            "params": {**bpr_params, "lambdas": args.lambdas, "max_items": args.max_items,
                       "max_users": args.max_users, "quick": args.quick},
            "rows": rows, "ease_tuning": tuning, "bpr_fit_ratio_persona_over_implicit": ratio,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "machine": {**machine_facts(), "usable_cores": len(os.sched_getaffinity(0))
                        if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}}


def markdown(res: dict) -> str:
    f = res["machine"]
    p = res["params"]
    lines = [
        f"# BPR and EASE on {Path(res['data']).stem}" + (" (quick)" if p["quick"] else ""),
        "",
        f"{res['n_users']} users, {res['n_items']} items, {res['n_events']} events. {res['protocol']}.",
        "",
        f"BPR: factors {p['factors']}, learning rate {p['learning_rate']}, regularization {p['regularization']}, "
        f"iterations {p['iterations']}, threads {p['num_threads'] or 'all'}, seed {p['random_state']}, "
        f"negatives {p['negative_sampling']}.",
        f"Machine: {f.get('processor')}, {f.get('usable_cores')} usable cores, Python {f.get('python')}, numpy "
        f"{f.get('numpy')}, numba {f.get('numba')}, implicit {f.get('implicit')}, persona {f.get('persona')}.",
        "",
        "| model | " + " | ".join(f"HR@{k} | NDCG@{k}" for k in KS) + " | fit s | eval s |",
        "|---|" + "---:|" * (2 * len(KS) + 2),
    ]
    for r in res["rows"]:
        lines.append(f"| {r['model']} | " + " | ".join(f"{r[f'hr@{k}']:.4f} | {r[f'ndcg@{k}']:.4f}" for k in KS)
                     + f" | {r['fit_s']:.2f} | {r['eval_s']:.2f} |")
    if res["bpr_fit_ratio_persona_over_implicit"] is not None:
        lines += ["", f"BPR fit time persona / implicit: **{res['bpr_fit_ratio_persona_over_implicit']:.2f}** "
                      "(below 1: persona faster). Numba compilation, timed apart: "
                      f"{next(r for r in res['rows'] if r['model'] == 'persona BPR')['compile_s']:.2f} s."]
    if res["ease_tuning"]:
        lines += ["", "EASE lambda on the validation targets (fit on train):", "",
                  "| lambda | HR@10 | NDCG@10 | fit s | precision |", "|---:|---:|---:|---:|---|"]
        for t in res["ease_tuning"]:
            lines.append(f"| {t['regularization']:g} | {t['hr@10']:.4f} | {t['ndcg@10']:.4f} | {t['fit_s']:.2f} "
                         f"| {t['precision']} |")
    lines += ["", f"Peak resident memory of the whole run: {res['peak_rss_mb']:.0f} MB."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="sequences file (default: the shared Amazon Beauty)")
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--learning-rate", type=float, default=0.05)
    ap.add_argument("--regularization", type=float, default=0.01)
    ap.add_argument("--iterations", type=int, default=None, help="BPR epochs (default 100; 10 with --quick)")
    ap.add_argument("--negative-sampling", choices=("uniform", "popularity"), default="uniform")
    ap.add_argument("--threads", type=int, default=0, help="threads for both BPRs and EASE's BLAS (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lambdas", default=None,
                    help="EASE lambdas to try, comma-separated (default 50,100,200,500,1000; 100,500 with --quick)")
    ap.add_argument("--max-items", type=int, default=None, help="keep only the most popular items")
    ap.add_argument("--max-users", type=int, default=None, help="keep a random sample of users")
    ap.add_argument("--skip-bpr", action="store_true")
    ap.add_argument("--skip-implicit", action="store_true")
    ap.add_argument("--skip-ease", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2,000 items, 6,000 users, 10 iterations, two lambdas")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.max_items = args.max_items or 2000
        args.max_users = args.max_users or 6000
    args.iterations = args.iterations or (10 if args.quick else 100)
    lambdas = args.lambdas or ("100,500" if args.quick else "50,100,200,500,1000")
    args.lambdas = [float(x) for x in lambdas.split(",") if x.strip()]

    res = run(args)
    stem = "bpr-ease-quick" if args.quick else "bpr-ease"
    write_results(args.out, stem, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
