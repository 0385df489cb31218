"""Benchmark ps.Hybrid (issue 14): quality against its own generators, ablations, training time, latency.

Protocol (the data README's): ``train, valid, test = ps.split.leave_last_out(inter)``; full ranking
of every item, the user's seen items excluded, HR / NDCG @ 5, 10, 20 over all users (``ps.evaluate``).

- **Each generator alone** (most popular, ItemKNN BM25, EASE at lambda 50 -- the data README's tuned
  reference -- and at persona's default, ALS) is fitted on ``train + valid`` and scored on ``test``.
- **The Hybrid** is ``ps.Hybrid(generators=..., ...).fit(train, valid=valid, item_features=...)``:
  generators on ``train``, the ranker trained on the validation targets among their candidates,
  generators refitted on ``train + valid`` to serve, scored on ``test``. Variants: LightGBM and
  logistic rankers; with SASRec among the generators (Beauty; the fast configuration of
  ``bench_sasrec.py``). SASRec's "alone" row is the Hybrid's own SASRec generator (trained once on
  ``train``, early-stopped on each user's last train event, reading ``train + valid`` histories to
  serve), so the run trains SASRec once.
- **Ablations**: the LightGBM Hybrid without SASRec, refitted without each of its generators in turn.
- **Speed**: the Hybrid's training time, single-user ``recommend`` p50 / p99 over ``--requests``
  users in-process, and ``recommend_batch`` throughput on ``--batch-users`` users, each beside EASE
  alone in the same run; ``candidate_recall_`` (share of the ranker's training targets among the
  merged candidates).

``--select`` is the tuning protocol: everything is fitted on ``train`` only (the Hybrid holds out each
user's last train event to train its ranker) and scored on the **validation** targets; the test
targets are never read. Choose a configuration with it, then run without ``--select`` once.

Writes ``hybrid-<data>.json`` / ``.md`` (``-quick`` / ``-select`` suffixes) to ``benchmarks/results/``.

    python benchmarks/bench_hybrid.py --data lastfm
    python benchmarks/bench_hybrid.py --data beauty              # ~1 h on 2 cores (SASRec ~12 min)
    python benchmarks/bench_hybrid.py --quick                    # 3000 Beauty users, 2 SASRec epochs
    python benchmarks/bench_hybrid.py --data lastfm --select --candidates 200 --ranker-params '{"num_leaves": 63}'
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import persona as ps  # noqa: E402
from common import KS, eval_row, fit_and_eval, sample_users, timed, write_results  # noqa: E402
from machine import machine_facts  # noqa: E402

DATA = {"beauty": ("amazon-beauty", "Beauty.txt"), "lastfm": ("lastfm", "LastFM.txt")}


def data_path(arg: str) -> Path:
    if arg.lower() in DATA:
        folder, file = DATA[arg.lower()]
        root = ps.datasets.default_data_path(folder)
        path = None if root is None else root / file
    else:
        path = Path(arg)
    if path is None or not path.exists():
        raise SystemExit(f"no data at {arg!r}: pass --data beauty|lastfm or a `user item item ...` file")
    return path


def als_params(name: str) -> dict:
    # the data README's tuned implicit ALS configurations (tune_beauty.py pairs persona's ALS with the same grid)
    if name == "LastFM":
        return dict(factors=64, regularization=0.01, alpha=1.0, iterations=15)
    return dict(factors=128, regularization=0.01, alpha=40.0, iterations=15)


def generators(args, name: str, sasrec: bool) -> dict:
    gens = {"ease": ps.EASE(regularization=args.ease_lambda),
            "itemknn": ps.ItemKNN(k=args.knn_k, weighting="bm25"),
            "als": ps.ALS(**als_params(name), random_state=args.seed),
            "popular": ps.MostPopular()}
    if sasrec:
        from persona.models.sasrec import SASRec

        gens["sasrec"] = SASRec(factors=64, blocks=2, heads=1, max_len=50, dropout=0.5, learning_rate=1e-3,
                                epochs=args.sasrec_epochs, batch_size=128, patience=10, loss="ce",
                                random_state=args.seed, num_threads=args.threads)
    return gens


def make_hybrid(args, gens: dict, ranker: str, **kw) -> ps.Hybrid:
    params = json.loads(args.ranker_params) if args.ranker_params and ranker == "lightgbm" else None
    return ps.Hybrid(generators=gens, candidates=args.candidates, ranker=ranker,
                     max_train_users=args.max_train_users, ranker_params=params, random_state=args.seed,
                     num_threads=args.threads, show_progress=args.progress, **kw)


def percentiles(times) -> dict:
    a = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def speed(model, users, batch_users) -> dict:
    """Single-user recommend latency (default threads, and one thread everywhere as in a web worker)
    and recommend_batch throughput of one fitted model."""
    from threadpoolctl import threadpool_limits

    def singles():
        for u in users[:20]:
            model.recommend(u, n=10)
        times = []
        for u in users:
            t = time.perf_counter()
            model.recommend(u, n=10)
            times.append(time.perf_counter() - t)
        return percentiles(times)

    out = singles()
    with threadpool_limits(1):
        one = singles()
    model.recommend_batch(batch_users[:50], n=10)
    _, batch_s = timed(lambda: model.recommend_batch(batch_users, n=10))
    return {**out, "one_thread": one, "batch_users_per_s": len(batch_users) / batch_s, "batch_s": batch_s}


def hybrid_extra(h: ps.Hybrid) -> dict:
    r = h.ranker_
    return {"candidate_recall": h.candidate_recall_, "hybrid_fit_s": h.fit_s_, "ranker_fit_s": h.ranker_fit_s_,
            "trees": getattr(r, "best_iteration", None),
            "top_features": sorted(h.feature_importance().items(), key=lambda kv: -kv[1])[:8]}


def run(args) -> dict:
    path = data_path(args.data)
    seq = ps.datasets.load_sequences(path)
    name = path.stem
    inter = sample_users(seq.interactions, args.max_users, args.seed)
    train, valid, test = ps.split.leave_last_out(inter)
    full = train.concat(valid)
    if args.select:  # tuning: fit on train, score the validation targets; the test targets are not read
        fit_on, target, holdout = train, valid, None
    else:
        fit_on, target, holdout = full, test, valid

    def hybrid_fit(h, attributes=True):
        return h.fit(train, valid=holdout, item_features=attrs(train) if attributes else None)

    def attrs(part):
        return seq.attribute_matrix(part) if seq.n_attributes and not args.no_attributes else None

    use_sasrec = args.sasrec if args.sasrec is not None else name == "Beauty"
    print(f"{name}: {inter.n_users} users, {inter.n_items} items, {len(inter)} events; scored on "
          f"{'validation' if args.select else 'test'} targets; load average {os.getloadavg()}", flush=True)
    rows, speeds = [], {}
    only = set(args.only.split(",")) if args.only else None

    def want(key):
        return only is None or key in only

    # ---- 1. each generator alone
    singles = {"most popular": lambda: ps.MostPopular(),
               f"ItemKNN (bm25, k {args.knn_k})": lambda: ps.ItemKNN(k=args.knn_k, weighting="bm25"),
               "EASE (lambda 50)": lambda: ps.EASE(regularization=50.0),
               "EASE (default lambda 100)": lambda: ps.EASE(),
               "ALS (" + ", ".join(f"{k} {v}" for k, v in als_params(name).items()) + ")":
                   lambda: ps.ALS(**als_params(name), random_state=args.seed)}
    ease = None
    if want("singles"):
        for label, make in singles.items():
            model, _ = fit_and_eval(rows, label, lambda make=make: make().fit(fit_on), target, {"kind": "single"})
            if label == "EASE (lambda 50)":
                ease = model
    # ---- 2. the Hybrid variants
    hybrids = {}
    variants = [("lightgbm", False), ("logistic", False)] + ([("lightgbm", True)] if use_sasrec else [])
    for ranker, with_sasrec in variants:
        key = f"hybrid-{ranker}" + ("-sasrec" if with_sasrec else "")
        if not want(key):
            continue
        gens = generators(args, name, with_sasrec)
        label = f"Hybrid ({ranker}; {', '.join(gens)})"
        h, _ = fit_and_eval(rows, label, lambda g=gens, r=ranker: hybrid_fit(make_hybrid(args, g, r)), target,
                            lambda h: {"kind": "hybrid", **hybrid_extra(h)})
        hybrids[key] = h
        if with_sasrec:
            sasrec = h.generators_[h.generator_names_.index("sasrec")]
            eval_row(rows, "SASRec (the Hybrid's generator: trained on train, reads train+valid)"
                     if not args.select else "SASRec (the Hybrid's stage-1 generator)", sasrec, target,
                     float("nan"), {"kind": "single"})
    # ---- 3. ablations: the LightGBM Hybrid without SASRec, less one generator each
    base = generators(args, name, False)
    for drop in (args.ablations.split(",") if args.ablations else []):
        if drop not in base:
            continue
        gens = {k: v for k, v in base.items() if k != drop}
        fit_and_eval(rows, f"Hybrid (lightgbm) without {drop}",
                     lambda g=gens: hybrid_fit(make_hybrid(args, g, "lightgbm")), target,
                     lambda h: {"kind": "ablation", **hybrid_extra(h)})
    # the ranker's own feature groups, left out (the same generators)
    for feat in (args.feature_ablations.split(",") if args.feature_ablations else []):
        if feat == "sequence":
            fit_and_eval(rows, "Hybrid (lightgbm) without sequence features",
                         lambda: hybrid_fit(make_hybrid(args, base, "lightgbm", sequence_features=False)), target,
                         lambda h: {"kind": "ablation", **hybrid_extra(h)})
        elif feat == "attributes" and seq.n_attributes and not args.no_attributes:
            fit_and_eval(rows, "Hybrid (lightgbm) without item attributes",
                         lambda: hybrid_fit(make_hybrid(args, base, "lightgbm"), attributes=False), target,
                         lambda h: {"kind": "ablation", **hybrid_extra(h)})
    # ---- 4. speed, beside EASE alone in the same run
    if not args.skip_speed and hybrids:
        rng = np.random.default_rng(args.seed)
        uids = full.user_map.ids
        users = uids[rng.choice(len(uids), size=min(args.requests, len(uids)), replace=False)]
        batch = uids[rng.choice(len(uids), size=min(args.batch_users, len(uids)), replace=False)]
        if ease is None:
            ease = ps.EASE(regularization=50.0).fit(fit_on)
        speeds["EASE (lambda 50)"] = speed(ease, users, batch)
        for key, h in hybrids.items():
            speeds[key] = speed(h, users, batch)
        for key, s in speeds.items():
            print(f"  {key}: recommend p50 {s['p50_ms']:.2f} ms p99 {s['p99_ms']:.2f} ms (one thread: "
                  f"{s['one_thread']['p50_ms']:.2f} / {s['one_thread']['p99_ms']:.2f} ms); batch "
                  f"{s['batch_users_per_s']:.0f} users/s", flush=True)
    return {"data": str(path), "name": name, "n_users": inter.n_users, "n_items": inter.n_items,
            "n_events": len(inter), "select": args.select, "quick": args.quick,
            "protocol": ("fitted on train, scored on the validation targets (the Hybrid holds out each user's last "
                         "train event)" if args.select else
                         "leave-last-out; single models fitted on train+valid; Hybrid.fit(train, valid=valid); "
                         "test targets") + "; full ranking, seen items excluded",
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "rows": rows, "speed": speeds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "machine": {**machine_facts(), "usable_cores": len(os.sched_getaffinity(0)),
                        "load_average_at_end": list(os.getloadavg())}}


def markdown(res: dict) -> str:
    p = res["params"]
    what = "validation" if res["select"] else "test"
    lines = [f"# Hybrid on {res['name']}" + (" (quick)" if res["quick"] else "") + (" -- selection" if res["select"] else ""),
             "", f"{res['n_users']} users, {res['n_items']} items, {res['n_events']} events. {res['protocol']}.",
             f"Hybrid: candidates {p['candidates']} per generator, max_train_users {p['max_train_users']}, "
             f"ranker_params {p['ranker_params'] or 'default'}; EASE lambda {p['ease_lambda']}, ItemKNN k {p['knn_k']}. "
             f"Machine: {res['machine'].get('usable_cores')} cores, load average at end "
             f"{[round(x, 2) for x in res['machine']['load_average_at_end']]}.", "",
             f"| model ({what} targets) | " + " | ".join(f"HR@{k} | NDCG@{k}" for k in KS)
             + " | fit s | candidate recall |", "|---|" + "---:|" * (2 * len(KS) + 2)]
    for r in res["rows"]:
        rec = r.get("candidate_recall")
        lines.append(f"| {r['model']} | " + " | ".join(f"{r[f'hr@{k}']:.4f} | {r[f'ndcg@{k}']:.4f}" for k in KS)
                     + f" | {r['fit_s']:.0f} | {'' if rec is None else f'{rec:.3f}'} |")
    singles = [r for r in res["rows"] if r.get("kind") == "single"]
    hyb = [r for r in res["rows"] if r.get("kind") == "hybrid"]
    if singles and hyb:
        best_s = max(singles, key=lambda r: r["ndcg@10"])
        best_h = max(hyb, key=lambda r: r["ndcg@10"])
        lines += ["", f"Best Hybrid {best_h['model']}: NDCG@10 {best_h['ndcg@10']:.4f} vs the best single model "
                      f"{best_s['model']} {best_s['ndcg@10']:.4f}: **{100 * (best_h['ndcg@10'] / best_s['ndcg@10'] - 1):+.1f}%**."]
    for r in hyb:
        lines += ["", f"{r['model']}: fit {r['hybrid_fit_s']:.0f} s (ranker {r['ranker_fit_s']:.0f} s, "
                      f"{r['trees']} trees); top features: "
                      + ", ".join(f"{n} {v:.3g}" for n, v in r["top_features"])]
    if res["speed"]:
        lines += ["", f"Serving in-process ({p['requests']} single-user `recommend(n=10)` calls; "
                      f"`recommend_batch` of {p['batch_users']} users):", "",
                  "| model | p50 ms | p99 ms | p50 ms, 1 thread | p99 ms, 1 thread | batch users/s | measured in (load) |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for k, s in res["speed"].items():
            o = s["one_thread"]
            lines.append(f"| {k} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {o['p50_ms']:.2f} | {o['p99_ms']:.2f} | "
                         f"{s['batch_users_per_s']:.0f} | {s.get('part') or 'this run'}"
                         + (f" ({s['load']:.1f})" if 'load' in s else "") + " |")
    lines += ["", f"Peak resident memory of the whole run: {res['peak_rss_mb']:.0f} MB."]
    return "\n".join(lines) + "\n"


def combine(paths, out: Path, tag: str) -> int:
    """One result from parts run in parallel processes (rows and speeds concatenated, the first part's
    settings; each part's own load average and peak memory are kept under ``parts``)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    # the settings shown are those of the first part that fitted a Hybrid
    res = dict(next((q for q in parts if any(r.get("kind") != "single" for r in q["rows"])), parts[0]))
    res["rows"], seen = [], set()
    for q in parts:
        for r in q["rows"]:
            if r["model"] in seen:  # the same model measured again in a later part
                r = {**r, "model": f"{r['model']} (again, part {q['params'].get('tag') or '?'})"}
            seen.add(r["model"])
            res["rows"].append(r)
    # each speed entry keeps the part (and its load) it was measured in; a later part's measurement wins
    res["speed"] = {k: {**v, "part": q["params"].get("tag"), "load": q["machine"]["load_average_at_end"][0]}
                    for q in parts for k, v in q["speed"].items()}
    res["peak_rss_mb"] = max(p["peak_rss_mb"] for p in parts)
    res["machine"] = {**res["machine"], "load_average_at_end": max((p["machine"]["load_average_at_end"] for p in parts),
                                                                   key=lambda x: x[0])}
    res["parts"] = [{"file": str(p), "only": q["params"].get("only"), "load_average_at_end":
                     q["machine"]["load_average_at_end"]} for p, q in zip(paths, parts)]
    stem = f"hybrid-{res['name'].lower()}" + ("-quick" if res["quick"] else "") + ("-select" if res["select"] else "") \
        + (f"-{tag}" if tag else "")
    write_results(out, stem, res, markdown(res))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="beauty", help="beauty, lastfm, or a `user item item ...` file")
    ap.add_argument("--select", action="store_true", help="tuning: fit on train, score the validation targets")
    ap.add_argument("--candidates", type=int, default=100, help="items asked of each generator per user")
    ap.add_argument("--max-train-users", type=int, default=10_000)
    ap.add_argument("--ranker-params", default=None, help="JSON dict of LightGBM ranker_params")
    ap.add_argument("--ease-lambda", type=float, default=50.0)
    ap.add_argument("--knn-k", type=int, default=200)
    ap.add_argument("--sasrec", dest="sasrec", action="store_true", default=None,
                    help="SASRec among the generators (default: on Beauty only)")
    ap.add_argument("--no-sasrec", dest="sasrec", action="store_false")
    ap.add_argument("--sasrec-epochs", type=int, default=None, help="most SASRec epochs (200; 2 with --quick)")
    ap.add_argument("--no-attributes", action="store_true", help="do not pass the item attributes")
    ap.add_argument("--ablations", default="ease,itemknn,als,popular",
                    help="generators to drop one at a time ('' for none)")
    ap.add_argument("--feature-ablations", default="sequence,attributes",
                    help="ranker feature groups to leave out, one at a time ('' for none)")
    ap.add_argument("--only", default=None, help="comma list of parts: singles, hybrid-lightgbm, hybrid-logistic, "
                                                 "hybrid-lightgbm-sasrec")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--batch-users", type=int, default=1000)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-users", type=int, default=None, help="keep a random sample of users")
    ap.add_argument("--progress", action="store_true", help="log the Hybrid's stages")
    ap.add_argument("--quick", action="store_true", help="3000 users, 2 SASRec epochs, 100 requests: a smoke test")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--combine", nargs="+", type=Path, default=None,
                    help="result JSON files of parts of one configuration run separately (--only): one table")
    args = ap.parse_args(argv)
    if args.combine:
        return combine(args.combine, args.out, args.tag)
    if args.quick:
        args.max_users = args.max_users or 3000
        args.requests = min(args.requests, 100)
        args.batch_users = min(args.batch_users, 300)
    args.sasrec_epochs = args.sasrec_epochs or (2 if args.quick else 200)
    if args.progress:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    res = run(args)
    stem = f"hybrid-{res['name'].lower()}" + ("-quick" if args.quick else "") + ("-select" if args.select else "") \
        + (f"-{args.tag}" if args.tag else "")
    write_results(args.out, stem, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
