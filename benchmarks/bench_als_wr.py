"""Count-weighted regularisation (ALS-WR, ``regularization_scaling="count"``) against persona's fixed
penalty and against Spark MLlib's implicit ALS, on bench_spark.py's synthetic events.

The events, the held-out pair per user and the evaluated users are exactly bench_spark.py's (same
generator, same seed), so MLlib's NDCG@10 in benchmarks/results/spark.md compares directly. For each
``--constant`` value persona's ALS fits with ``regularization_scaling="constant"``; for each
``--count`` value (MLlib's ``regParam``; bench_spark's mapped values by default) with
``"count"``; with ``--spark``, MLlib's ALS (local[2], through ``persona.spark.fit_als`` with
``regularization_scaling="count"``) fits at the same ``regParam`` values in this run. ALS
factors=32, iterations=10, alpha=1 as bench_spark. Run with ``nice``; the load average is recorded.

    nice -n 10 python benchmarks/bench_als_wr.py --events 1e6 [--spark]

Writes ``als-wr.json`` and ``als-wr.md`` to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_spark import hold_out, make_events  # noqa: E402
from common import write_results  # noqa: E402


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _data(n_events: int, seed: int):
    import persona as ps
    from persona.data import IdMap, Interactions

    users, items, (n_users, n_items) = make_events(n_events, seed)
    tu, ti, su, si = hold_out(users, items, n_items, seed)
    train = ps.Interactions.from_frame(__import__("pandas").DataFrame({"user": tu, "item": ti}),
                                       user="user", item="item")
    eval_users = np.random.default_rng(seed + 2).choice(len(su), size=min(20_000, len(su)), replace=False)
    su, si = su[eval_users], si[eval_users]
    known = (train.user_map.lookup(su) >= 0) & (train.item_map.lookup(si) >= 0)
    umap, u = IdMap.encode(su[known])
    imap, i = IdMap.encode(si[known])
    return train, Interactions(umap, imap, u, i), (tu, ti)


def _score(model, test) -> dict:
    import persona as ps

    rep = ps.evaluate(model, test, k=(10,), metrics=("hr", "ndcg"))
    return {"ndcg@10": rep["ndcg@10"], "hr@10": rep["hr@10"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=float, default=1e6)
    ap.add_argument("--constant", type=float, nargs="*", default=[1.0, 10.0])
    ap.add_argument("--count", type=float, nargs="*", default=[0.05314, 0.1594, 0.5314, 1.5])
    ap.add_argument("--solvers", nargs="+", default=["cg", "cholesky"])
    ap.add_argument("--spark", action="store_true", help="also fit MLlib at the --count regParams")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    import persona as ps

    train, test, raw = _data(int(args.events), args.seed)
    rows = []
    runs = [("persona", s, "constant", r) for s in args.solvers for r in args.constant]
    runs += [("persona", s, "count", r) for s in args.solvers for r in args.count]
    for who, solver, scaling, reg in runs:
        before = _load()
        t = time.perf_counter()
        model = ps.ALS(factors=32, iterations=10, regularization=reg, alpha=1.0, solver=solver,
                       regularization_scaling=scaling, num_threads=args.threads, random_state=0).fit(train)
        fit_s = time.perf_counter() - t
        row = {"contender": f"persona {solver}", "scaling": scaling, "regularization": reg, "fit_s": fit_s,
               **_score(model, test), "load": f"{before} -> {_load()}"}
        print(row, flush=True)
        rows.append(row)
    if args.spark:
        import pandas as pd

        import persona.spark as pss

        spark = pss.local_session(args.threads, memory="6g")
        spark.sparkContext.setLogLevel("ERROR")
        events = spark.createDataFrame(pd.DataFrame({"user": raw[0], "item": raw[1]}))
        inter = pss.clean(events, user="user", item="item")
        for reg in args.count:
            before = _load()
            model = pss.fit_als(inter, factors=32, iterations=10, regularization=reg, alpha=1.0,
                                regularization_scaling="count", random_state=0)
            row = {"contender": "MLlib (imported)", "scaling": "count", "regularization": reg,
                   "fit_s": model.spark_["fit_s"], **_score(model, test), "load": f"{before} -> {_load()}"}
            print(row, flush=True)
            rows.append(row)
        spark.stop()
    md = [f"# Count-weighted regularisation (ALS-WR) vs persona's fixed penalty vs MLlib\n",
          f"bench_spark.py's synthetic events ({train.matrix.nnz:,} user-item entries, {train.n_users:,} users x "
          f"{train.n_items:,} items; one held-out pair per user, {test.n_users:,} evaluated), ALS factors=32, "
          f"iterations=10, alpha=1, {args.threads} threads. `count`: penalty regularization * n per row "
          f"(MLlib's regParam). Machine: 2 cores, shared; load averages (1/5/15 min) before -> after.\n",
          "| contender | scaling | regularization | fit s | NDCG@10 | HR@10 | load |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['contender']} | {r['scaling']} | {r['regularization']:g} | {r['fit_s']:.1f} | "
                  f"{r['ndcg@10']:.4f} | {r['hr@10']:.4f} | {r['load']} |")
    write_results(args.out, "als-wr", {"args": vars(args), "rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
