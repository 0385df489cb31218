"""Tune persona's models and their implicit counterparts on Amazon Beauty with the same grid each.

Protocol (the data README's): ``train, valid, test = ps.split.leave_last_out(inter)``; every
configuration of a model's grid is fitted on ``train`` and scored on the validation targets
(``ps.evaluate(model, valid, k=(10,))["ndcg@10"]``); the best on validation alone is refitted on
``train.concat(valid)`` and scored on the test targets (HR / NDCG @ 5, 10, 20; full ranking, seen
items excluded). implicit's models are wrapped by the adapters of ``bench_als.py``,
``bench_bpr_ease.py`` and ``bench_knn.py`` so that the very same ``ps.evaluate`` scores both libraries.

Pairs (same grid, same thread count, fixed seeds):

- persona ``ALS`` vs ``implicit.cpu.als.AlternatingLeastSquares``: factors {64, 128} x regularization
  {0.01, 0.1} x alpha {1, 10, 40}, 15 iterations, CG 3 steps, float32; both on confidence
  ``1 + alpha * weight`` (implicit takes its confidence as given, so it gets ``1 + alpha * w`` with its
  own alpha at 1 -- the code of ``bench_als.py``)
- persona ``BPR`` vs ``implicit.cpu.bpr.BayesianPersonalizedRanking``: factors {64, 128} x learning
  rate {0.01, 0.05} x iterations {100, 300}, regularization 0.01
- persona ``ItemKNN(weighting="cosine")`` vs ``CosineRecommender`` and persona ``ItemKNN(weighting="bm25")``
  vs ``BM25Recommender``: K {50, 100, 200, 400}
- persona ``EASE`` (lambda {50, 100, 200, 500, 1000}) and ``MostPopular`` (no grid)

Writes ``tune_beauty.json`` / ``.md`` (``tune_beauty-quick.*`` with ``--quick``) to ``benchmarks/results/``.

    python benchmarks/tune_beauty.py                    # the full grids (~15-25 min on 2 cores)
    python benchmarks/tune_beauty.py --quick            # one or two configurations per model
    python benchmarks/tune_beauty.py --models als,bpr   # a subset
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import persona as ps  # noqa: E402
from machine import machine_facts  # noqa: E402

KS = (5, 10, 20)
FAMILIES = ("popular", "ease", "als", "bpr", "knn-cosine", "knn-bm25")

GRIDS = {
    "als": {"factors": [64, 128], "regularization": [0.01, 0.1], "alpha": [1.0, 10.0, 40.0]},
    "bpr": {"factors": [64, 128], "learning_rate": [0.01, 0.05], "iterations": [100, 300]},
    "knn": {"k": [50, 100, 200, 400]},
    "ease": {"regularization": [50.0, 100.0, 200.0, 500.0, 1000.0]},
}
QUICK_GRIDS = {
    "als": {"factors": [64], "regularization": [0.01], "alpha": [1.0, 10.0]},
    "bpr": {"factors": [64], "learning_rate": [0.05], "iterations": [20]},
    "knn": {"k": [100, 200]},
    "ease": {"regularization": [100.0, 500.0]},
}


def configs(grid: dict) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]


# ------------------------------------------------------------------------------------------ fitters
# Each fitter: (config, data) -> (model exposing what ps.evaluate needs, fit seconds).

def als_fitter(contender: str, args):
    import bench_als

    def fit(cfg, data):
        ns = SimpleNamespace(factors=cfg["factors"], iterations=args.als_iterations,
                             regularization=cfg["regularization"], alpha=cfg["alpha"], cg_steps=3,
                             threads=args.threads, seed=args.seed)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # as bench_als: implicit asks for it, persona's loop has no BLAS
            model, seconds, _mem = bench_als._fit_contender(contender, data, ns)
        return model, seconds

    return fit


def bpr_fitter(contender: str, args):
    import bench_bpr_ease
    from persona.data import IdMap, Interactions
    from persona.models.bpr import BPR

    compiled = []

    def fit(cfg, data):
        params = dict(factors=cfg["factors"], learning_rate=cfg["learning_rate"], regularization=args.bpr_reg,
                      iterations=cfg["iterations"])
        if contender == "implicit":
            ns = SimpleNamespace(**params, threads=args.threads, seed=args.seed)
            return bench_bpr_ease.fit_implicit(data, ns)
        if not compiled:  # Numba compilation (or cache load) outside the timed fit
            tiny = Interactions(IdMap([0, 1]), IdMap([0, 1, 2]), [0, 1], [0, 1])
            BPR(**{**params, "iterations": 1}, random_state=args.seed, num_threads=args.threads).fit(tiny)
            compiled.append(True)
        t = time.perf_counter()
        model = BPR(**params, random_state=args.seed, num_threads=args.threads).fit(data)
        return model, time.perf_counter() - t

    return fit


def knn_fitter(contender: str, weighting: str, args):
    import bench_knn
    from persona.models.knn import ItemKNN

    def fit(cfg, data):
        t = time.perf_counter()
        if contender == "persona":
            model = ItemKNN(k=cfg["k"], weighting=weighting, num_threads=args.threads).fit(data)
        else:
            from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

            cls = CosineRecommender if weighting == "cosine" else BM25Recommender
            model = bench_knn.ImplicitAdapter(cls(K=cfg["k"], num_threads=args.threads), data).fit()
        return model, time.perf_counter() - t

    return fit


def ease_fitter(args):
    from persona.models.ease import EASE

    def fit(cfg, data):
        t = time.perf_counter()
        model = EASE(regularization=cfg["regularization"], num_threads=args.threads).fit(data)
        return model, time.perf_counter() - t

    return fit


def popular_fitter(args):
    def fit(cfg, data):
        t = time.perf_counter()
        model = ps.MostPopular(num_threads=args.threads).fit(data)
        return model, time.perf_counter() - t

    return fit


def contenders(args) -> list[tuple[str, str, str, dict, object]]:
    """(family, library, label, grid, fitter) in run order."""
    g = QUICK_GRIDS if args.quick else GRIDS
    out = []
    fams = args.models
    if "popular" in fams:
        out.append(("popular", "persona", "MostPopular", {}, popular_fitter(args)))
    if "ease" in fams:
        out.append(("ease", "persona", "EASE", g["ease"], ease_fitter(args)))
    if "knn-cosine" in fams:
        out.append(("knn-cosine", "persona", "ItemKNN cosine", g["knn"], knn_fitter("persona", "cosine", args)))
        out.append(("knn-cosine", "implicit", "CosineRecommender", g["knn"], knn_fitter("implicit", "cosine", args)))
    if "knn-bm25" in fams:
        out.append(("knn-bm25", "persona", "ItemKNN bm25", g["knn"], knn_fitter("persona", "bm25", args)))
        out.append(("knn-bm25", "implicit", "BM25Recommender", g["knn"], knn_fitter("implicit", "bm25", args)))
    if "als" in fams:
        out.append(("als", "persona", "ALS", g["als"], als_fitter("persona", args)))
        out.append(("als", "implicit", "AlternatingLeastSquares", g["als"], als_fitter("implicit", args)))
    if "bpr" in fams:
        out.append(("bpr", "persona", "BPR", g["bpr"], bpr_fitter("persona", args)))
        out.append(("bpr", "implicit", "BayesianPersonalizedRanking", g["bpr"], bpr_fitter("implicit", args)))
    return out


# ------------------------------------------------------------------------------------------ run
def tune(label, grid, fit, train, valid, test, full, args) -> dict:
    tuning = []
    for cfg in configs(grid) or [{}]:
        model, fit_s = fit(cfg, train)
        rep = ps.evaluate(model, valid, k=(10,), metrics=("hr", "ndcg"))
        tuning.append({"config": cfg, "valid_ndcg@10": rep["ndcg@10"], "valid_hr@10": rep["hr@10"], "fit_s": fit_s})
        print(f"  {label} {cfg}: valid NDCG@10 {rep['ndcg@10']:.4f} HR@10 {rep['hr@10']:.4f} (fit {fit_s:.2f} s)",
              flush=True)
        del model
    best = max(tuning, key=lambda r: (r["valid_ndcg@10"], r["valid_hr@10"]))  # first best wins ties
    model, fit_s = fit(best["config"], full)
    rep = ps.evaluate(model, test, k=KS, metrics=("hr", "ndcg"))
    test_scores = {f"{m}@{k}": rep[f"{m}@{k}"] for k in KS for m in ("hr", "ndcg")}
    print(f"  => {label} {best['config']}: test NDCG@10 {test_scores['ndcg@10']:.4f} HR@10 "
          f"{test_scores['hr@10']:.4f} (refit {fit_s:.2f} s)", flush=True)
    return {"config": best["config"], "valid_ndcg@10": best["valid_ndcg@10"], "valid_hr@10": best["valid_hr@10"],
            "test": test_scores, "n_test_users": rep["n_users"], "fit_s": fit_s, "tuning": tuning}


def fmt_cfg(cfg: dict) -> str:
    short = {"factors": "f", "regularization": "reg", "alpha": "alpha", "learning_rate": "lr", "iterations": "it",
             "k": "K"}
    return ", ".join(f"{short.get(k, k)} {v:g}" for k, v in cfg.items()) or "—"


def markdown(report: dict) -> str:
    f = report["machine"]
    p = report["params"]
    lines = [
        f"# Tuned on validation, scored on test: Amazon Beauty{' (--quick)' if p['quick'] else ''}",
        "",
        f"{report['n_users']:,} users, {report['n_items']:,} items, {report['n_events']:,} events. Leave last out; "
        "every configuration fitted on train and scored on the validation targets (NDCG@10); the best refitted "
        "on train + valid and scored on the test targets (full ranking, seen items excluded, the same "
        "`ps.evaluate` for both libraries).",
        "",
        f"Machine: {f.get('processor')}, {f.get('cores')} cores, {p['threads']} threads for every model; Python "
        f"{f.get('python')}, numpy {f.get('numpy')}, scipy {f.get('scipy')}, numba {f.get('numba')}, implicit "
        f"{f.get('implicit')}, persona {f.get('persona')}, top-k backend {f.get('topk_backend')}. Seed {p['seed']}. "
        f"Grids: {json.dumps(p['grids'])}; ALS {p['als_iterations']} iterations, CG 3 steps, float32, confidence "
        f"1 + alpha * w for both; BPR regularization {p['bpr_reg']}.",
        "",
    ]
    if p.get("note"):
        lines += [p["note"], ""]
    lines += ["| model | library | chosen configuration | valid NDCG@10 | HR@5 | HR@10 | HR@20 | NDCG@5 | NDCG@10 "
              "| NDCG@20 | fit (chosen, train+valid) | grid size | tuning time |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        t = r["test"]
        lines.append(f"| {r['label']} | {r['library']} | {fmt_cfg(r['config'])} | {r['valid_ndcg@10']:.4f} | "
                     + " | ".join(f"{t[f'hr@{k}']:.4f}" for k in KS) + " | "
                     + " | ".join(f"{t[f'ndcg@{k}']:.4f}" for k in KS)
                     + f" | {r['fit_s']:.2f} s | {len(r['tuning'])} | {r['tuning_s']:.0f} s |")
    pairs = {}
    for r in report["results"]:
        pairs.setdefault(r["family"], {})[r["library"]] = r
    head = [(fam, d) for fam, d in pairs.items() if "persona" in d and "implicit" in d]
    if head:
        lines += ["", "Head to head (test, tuned configurations):", "",
                  "| family | persona NDCG@10 | implicit NDCG@10 | persona HR@10 | implicit HR@10 | "
                  "NDCG@10 persona / implicit | fit persona | fit implicit | fit ratio |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for fam, d in head:
            a, b = d["persona"], d["implicit"]
            lines.append(f"| {fam} | {a['test']['ndcg@10']:.4f} | {b['test']['ndcg@10']:.4f} | "
                         f"{a['test']['hr@10']:.4f} | {b['test']['hr@10']:.4f} | "
                         f"{a['test']['ndcg@10'] / max(b['test']['ndcg@10'], 1e-12):.3f} | {a['fit_s']:.2f} s | "
                         f"{b['fit_s']:.2f} s | {a['fit_s'] / max(b['fit_s'], 1e-12):.2f} |")
    lines += ["", "## Validation NDCG@10 of every configuration", ""]
    for r in report["results"]:
        if len(r["tuning"]) <= 1:
            continue
        lines.append(f"**{r['label']} ({r['library']})**: " + "; ".join(
            f"{fmt_cfg(t['config'])}: {t['valid_ndcg@10']:.4f} ({t['fit_s']:.1f} s)" for t in r["tuning"]))
        lines.append("")
    lines.append(f"Total wall time {report['wall_s']:.0f} s.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    warnings.filterwarnings("ignore", message="Method expects CSR input")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = ps.datasets.default_data_path("amazon-beauty")
    ap.add_argument("--data", type=Path, default=default / "Beauty.txt" if default is not None else None,
                    help="Beauty.txt (default: the shared data folder)")
    ap.add_argument("--models", default=",".join(FAMILIES), help=f"comma-separated subset of {','.join(FAMILIES)}")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every model, both libraries")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--als-iterations", type=int, default=15)
    ap.add_argument("--bpr-reg", type=float, default=0.01)
    ap.add_argument("--quick", action="store_true", help="one or two configurations per model, short BPR")
    ap.add_argument("--note", default="", help="free text stored in the report (e.g. a shrunk grid)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = set(args.models) - set(FAMILIES)
    if bad:
        ap.error(f"unknown models {sorted(bad)}")
    if args.data is None or not Path(args.data).exists():
        ap.error("no data: pass --data PATH/Beauty.txt")
    np.random.seed(args.seed)

    t_all = time.perf_counter()
    inter = ps.datasets.load_sequences(args.data, attributes=None).interactions
    train, valid, test = ps.split.leave_last_out(inter)
    full = train.concat(valid)
    _ = train.matrix, full.matrix
    print(f"{Path(args.data).name}: {inter.n_users} users, {inter.n_items} items, {len(inter)} events", flush=True)
    report = {"data": str(args.data), "n_users": inter.n_users, "n_items": inter.n_items, "n_events": len(inter),
              "params": {"quick": args.quick, "threads": args.threads, "seed": args.seed,
                         "als_iterations": args.als_iterations, "bpr_reg": args.bpr_reg, "note": args.note,
                         "grids": QUICK_GRIDS if args.quick else GRIDS, "models": args.models},
              "machine": {**machine_facts(), "load_average_at_start": list(os.getloadavg())}, "results": []}
    stem = "tune_beauty-quick" if args.quick else "tune_beauty"
    args.out.mkdir(parents=True, exist_ok=True)
    for family, library, label, grid, fit in contenders(args):
        print(f"{label} ({library}): {len(configs(grid)) or 1} configuration(s)", flush=True)
        t0 = time.perf_counter()
        res = tune(label, grid, fit, train, valid, test, full, args)
        report["results"].append({"family": family, "library": library, "label": label,
                                  "tuning_s": time.perf_counter() - t0, **res})
        report["wall_s"] = time.perf_counter() - t_all
        (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str))  # partial results
    md = markdown(report)
    (args.out / f"{stem}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
