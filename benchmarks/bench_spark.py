"""persona alone against persona on Spark local mode, on the same synthetic events (issue 17).

For each size (``--sizes``, raw training events, default 1M, 10M and 50M) one seeded data set is
written as Parquet (``user, item`` rows; a user-item pair repeats as in a real log) with one
held-out pair per user, then two contenders run, each in a fresh subprocess:

- ``persona``: ``Interactions.from_parquet`` (cleaning, id maps) -> ``ps.ALS.fit`` (Numba CG,
  2 threads) -> NDCG@10 / HR@10 on the held-out pairs of a fixed sample of users;
- ``spark``: a ``local[2]`` session -> ``persona.spark.read_events`` + ``clean`` -> MLlib implicit
  ALS through ``persona.spark.fit_als`` (factors imported into a persona ALS) -> the same
  evaluation; at ``--score-sizes`` also ``recommend_all`` (top-10 of every user, to Parquet)
  against in-process ``recommend_batch``.

Both use the same factors, iterations, alpha and regularisation (MLlib's regParam mapped from
persona's by ``mllib_reg_param``; persona's ALS also runs with ``solver="cholesky"``, MLlib's
exact solve, at ``--cholesky-sizes``). Peak memory is the largest resident set of the
contender's whole process tree (the Python driver, Spark's JVM and its Python workers), sampled
every 0.2 s from /proc; times are wall-clock seconds of each stage. The machine is shared: run
with ``nice``; the load average before and after each run is recorded beside it.

    nice -n 10 python benchmarks/bench_spark.py --sizes 1e6 10e6 50e6
    python benchmarks/bench_spark.py --quick         # 200k events, a smoke test

Writes ``spark.json`` and ``spark.md`` (``spark-quick.*``) to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


# ------------------------------------------------------------------------------------------ data
def shape_for(n_events: int) -> tuple[int, int]:
    """(users, items) of a data set with ``n_events`` events: ~10 events per user, a catalogue that grows slower."""
    n_users = max(1000, n_events // 10)
    n_items = int(min(200_000, max(2000, 20 * np.sqrt(n_events))))
    return n_users, n_items


def make_events(n_events: int, seed: int = 0, n_clusters: int = 100):
    """Seeded events with latent structure: items in ``n_clusters`` taste clusters (Zipf popularity
    inside each), users with a Dirichlet mix of 3 clusters (85 %) and global popularity (15 %),
    heavy-tailed activity (at least 3 events). Returns user and item arrays (int64) and the shape."""
    rng = np.random.default_rng(seed)
    n_users, n_items = shape_for(n_events)
    activity = 3 + rng.poisson(rng.gamma(0.7, (n_events / n_users - 3) / 0.7, n_users))
    scale = n_events / activity.sum()
    activity = np.maximum(3, np.round(activity * scale)).astype(np.int64)
    users = np.repeat(np.arange(n_users, dtype=np.int64), activity)
    n = len(users)
    cluster_of_item = rng.integers(0, n_clusters, n_items)
    order = np.argsort(cluster_of_item, kind="stable")
    counts = np.bincount(cluster_of_item, minlength=n_clusters)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank = np.arange(n_items) - np.repeat(starts, counts)
    p = 1.0 / (rank + 1.0) ** 0.8
    cum = np.empty(n_items)
    for c in range(n_clusters):
        sl = slice(starts[c], starts[c] + counts[c])
        cum[sl] = np.cumsum(p[sl]) / p[sl].sum() + c
    taste = rng.integers(0, n_clusters, (n_users, 3))
    mix = rng.dirichlet(np.ones(3) * 0.7, n_users)
    pick = (rng.random(n)[:, None] > np.cumsum(mix, axis=1)[users]).sum(axis=1)
    cluster = taste[users, np.minimum(pick, 2)]
    pos = np.searchsorted(cum, cluster + rng.random(n) * (1 - 1e-12))
    items = order[np.minimum(pos, n_items - 1)]
    noise = rng.random(n) < 0.15
    gp = 1.0 / np.arange(1, n_items + 1) ** 0.9
    items[noise] = rng.permutation(n_items)[rng.choice(n_items, int(noise.sum()), p=gp / gp.sum())]
    return users, items, (n_users, n_items)


def hold_out(users: np.ndarray, items: np.ndarray, n_items: int, seed: int):
    """One random user-item pair per user (users with 3+ distinct items) as the test target; every
    event of that pair leaves the training events. Returns (train users, train items, test users, test items)."""
    rng = np.random.default_rng(seed + 1)
    key = users * n_items + items
    pairs, first = np.unique(key, return_index=True)
    pu = pairs // n_items
    n_pairs = np.bincount(pu)
    r = rng.random(len(pairs))
    order = np.lexsort((r, pu))
    last = np.r_[pu[order][1:] != pu[order][:-1], True]
    chosen = order[last]
    chosen = chosen[n_pairs[pu[chosen]] >= 3]
    test_keys = pairs[chosen]
    keep = ~np.isin(key, test_keys, assume_unique=False)
    return users[keep], items[keep], test_keys // n_items, test_keys % n_items


def write_data(folder: Path, n_events: int, seed: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    users, items, (n_users, n_items) = make_events(n_events, seed)
    tu, ti, su, si = hold_out(users, items, n_items, seed)
    # user and item ids as the shop's strings would be: ints are enough and keep the files small
    pq.write_table(pa.table({"user": tu, "item": ti}), folder / "train.parquet", row_group_size=1 << 20)
    eval_users = np.random.default_rng(seed + 2).choice(len(su), size=min(20_000, len(su)), replace=False)
    np.savez(folder / "test.npz", users=su[eval_users], items=si[eval_users])
    return {"n_events": int(len(tu)), "n_users": n_users, "n_items": n_items, "n_test_users": int(len(eval_users)),
            "n_pairs": int(len(np.unique(tu * n_items + ti)))}


# ------------------------------------------------------------------------------------------ workers
def _evaluate(model, folder: Path) -> dict:
    import persona as ps
    from persona.data import IdMap, Interactions

    test = np.load(folder / "test.npz")
    users, items = test["users"], test["items"]
    known = (model.user_map_.lookup(users) >= 0) & (model.item_map_.lookup(items) >= 0)
    umap, u = IdMap.encode(users[known])
    imap, i = IdMap.encode(items[known])
    t = time.perf_counter()
    rep = ps.evaluate(model, Interactions(umap, imap, u, i), k=(10,), metrics=("hr", "ndcg"))
    return {"ndcg@10": rep["ndcg@10"], "hr@10": rep["hr@10"], "eval_users": rep["n_users"],
            "eval_s": time.perf_counter() - t}


def worker_persona(folder: Path, args) -> dict:
    import persona as ps

    out = {}
    t = time.perf_counter()
    inter = ps.Interactions.from_parquet(folder / "train.parquet", user="user", item="item")
    out["read_clean_s"] = time.perf_counter() - t
    ps.ALS(factors=4, iterations=1, num_threads=args.threads).fit(inter.subset(np.arange(min(1000, len(inter)))))
    t = time.perf_counter()
    model = ps.ALS(factors=args.factors, iterations=args.iterations, regularization=args.regularization,
                   alpha=args.alpha, solver=args.solver, num_threads=args.threads, random_state=0).fit(inter)
    out["fit_s"] = time.perf_counter() - t
    out.update(_evaluate(model, folder))
    if args.score:
        model.save(folder / "persona-als")
        users = model.user_map_.ids
        t = time.perf_counter()
        for s in range(0, len(users), 4096):
            model.recommend_batch(users[s:s + 4096], n=10)
        out["score_s"] = time.perf_counter() - t
        out["scored_users"] = int(len(users))
    return out


def worker_spark(folder: Path, args) -> dict:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    import persona.spark as pss

    out = {}
    t = time.perf_counter()
    spark = pss.local_session(args.threads, memory=args.spark_memory,
                              config={"spark.local.dir": str(folder / "spark-tmp")})
    spark.sparkContext.setLogLevel("ERROR")
    out["session_s"] = time.perf_counter() - t
    t = time.perf_counter()
    events = pss.read_events(spark, str(folder / "train.parquet"))
    inter = pss.clean(events, user="user", item="item")
    out["read_clean_s"] = time.perf_counter() - t
    print(f"STAGE cleaned {len(inter)} events ({inter.n_users} users x {inter.n_items} items) in "
          f"{out['read_clean_s']:.0f} s; MLlib ALS starts", flush=True)
    model = pss.fit_als(inter, factors=args.factors, iterations=args.iterations, regularization=args.regularization,
                        alpha=args.alpha, random_state=0)
    out["fit_s"] = model.spark_["fit_s"]
    out["import_s"] = model.spark_["import_s"]
    out["entries_s"] = model.spark_["clean_s"]
    out["reg_param"] = model.spark_["reg_param"]
    out.update(_evaluate(model, folder))
    if args.score:
        model.save(folder / "spark-als")
        t = time.perf_counter()
        scored = pss.recommend_all(spark, str(folder / "spark-als"), n=10, output=str(folder / "scored"),
                                   mode="overwrite")
        out["score_s"] = time.perf_counter() - t
        out["scored_users"] = int(scored.select("user").distinct().count())
    spark.stop()
    return out


# ------------------------------------------------------------------------------------------ memory
def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/*/stat)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, p in parents.items() if p in frontier]
        out += frontier
    return out


def _rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024.0


def run_contender(name: str, folder: Path, args, score: bool, solver: str = "cg",
                  regularization: float | None = None) -> dict:
    reg = args.regularization if regularization is None else regularization
    cmd = [sys.executable, __file__, "--worker", name, "--folder", str(folder), "--factors", str(args.factors),
           "--iterations", str(args.iterations), "--regularization", str(reg), "--alpha",
           str(args.alpha), "--threads", str(args.threads), "--spark-memory", args.spark_memory, "--solver", solver]
    if score:
        cmd.append("--score")
    load_before = open("/proc/loadavg").read().split()[:3]
    peak = [0.0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb(_tree(proc.pid)))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        limit = args.spark_timeout if (name == "spark" and getattr(args, "spark_timeout", None)) else args.timeout
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        done.set()
        stages = [ln[len("STAGE "):] for ln in stdout.splitlines() if ln.startswith("STAGE ")]
        return {"contender": name, "stages": stages, "regularization": reg, "error": f"did not finish in {limit:.0f} s (killed)",
                "peak_rss_mb": peak[0],
                "load_before": load_before, "load_after": open("/proc/loadavg").read().split()[:3]}
    done.set()
    sampler.join()
    row = {"contender": name if solver == "cg" else f"{name} ({solver})", "regularization": reg,
           "total_s": time.perf_counter() - t0,
           "peak_rss_mb": peak[0], "load_before": load_before, "load_after": open("/proc/loadavg").read().split()[:3]}
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        row["error"] = (stderr.strip().splitlines() or ["no output"])[-1][:500]
        return row
    row.update(json.loads(lines[-1][len("RESULT "):]))
    return row


# ------------------------------------------------------------------------------------------ main
def markdown(payload: dict) -> str:
    a = payload["args"]
    lines = [f"# persona alone vs persona on Spark local[{a['threads']}] (MLlib ALS imported into persona)", "",
             f"Synthetic events (100 taste clusters, Zipf items, ~10 events per user), one held-out pair per user; "
             f"ALS factors={a['factors']}, iterations={a['iterations']}, regularization={a['regularization']} "
             f"(MLlib regParam mapped by mllib_reg_param), alpha={a['alpha']}; {a['threads']} threads each. "
             f"Machine: {payload['machine'].get('cores')} cores, shared; load averages (1/5/15 min) before/after "
             "each run.", "",
             "| events | users x items | contender | read+clean s | fit s | score all s | total s | peak RSS MB | "
             "NDCG@10 | HR@10 | load before -> after |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in payload["cases"]:
        d = case["data"]
        for r in case["rows"]:
            if "error" in r:
                lines.append(f"| {d['n_events']:,} | {d['n_users']:,} x {d['n_items']:,} | {r['contender']} | "
                             f"error: {r['error']}{''.join('; ' + x for x in r.get('stages', []))} | | | | "
                             f"{r['peak_rss_mb']:.0f} | | | "
                             f"{'/'.join(r['load_before'])} -> {'/'.join(r['load_after'])} |")
                continue
            score = f"{r['score_s']:.1f}" if "score_s" in r else ""
            lines.append(f"| {d['n_events']:,} | {d['n_users']:,} x {d['n_items']:,} | {r['contender']} | "
                         f"{r['read_clean_s']:.1f} | {r['fit_s']:.1f} | {score} | {r['total_s']:.1f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} | "
                         f"{'/'.join(r['load_before'])} -> {'/'.join(r['load_after'])} |")
    grid = [(case, r) for case in payload.get("grid", []) for r in case["rows"] if "error" not in r]
    if grid:
        lines += ["", "Quality against regularization (persona's fixed penalty; MLlib's regParam mapped from it):", "",
                  "| events | regularization | MLlib regParam | persona NDCG@10 | MLlib NDCG@10 | MLlib vs persona |",
                  "|---|---|---|---|---|---|"]
        by = {}
        for case, r in grid:
            by.setdefault((case["data"]["n_events"], r["regularization"]), {})[r["contender"]] = r
        for (n, reg), rs in sorted(by.items()):
            if "persona" in rs and "spark" in rs:
                p, s_ = rs["persona"]["ndcg@10"], rs["spark"]["ndcg@10"]
                lines.append(f"| {n:,} | {reg:g} | {rs['spark']['reg_param']:.4g} | {p:.4f} | {s_:.4f} | "
                             f"{100 * (s_ / p - 1):+.1f} % |")
    lines.append("")
    for case in payload["cases"]:
        rows = {r["contender"]: r for r in case["rows"] if "error" not in r}
        if "persona" in rows and "spark" in rows:
            p, s = rows["persona"], rows["spark"]
            lines.append(f"- {case['data']['n_events']:,} events: Spark/persona fit time {s['fit_s'] / p['fit_s']:.2f}x, "
                         f"end-to-end {s['total_s'] / p['total_s']:.2f}x, peak memory "
                         f"{s['peak_rss_mb'] / p['peak_rss_mb']:.2f}x; NDCG@10 Spark vs persona "
                         f"{100 * (s['ndcg@10'] / p['ndcg@10'] - 1):+.1f} %; MLlib fit rate "
                         f"{case['data']['n_pairs'] * payload['args']['iterations'] / s['fit_s'] / a['threads']:,.0f} "
                         f"entry-iterations/s per core, persona {case['data']['n_pairs'] * payload['args']['iterations'] / p['fit_s'] / a['threads']:,.0f}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e6, 10e6, 50e6])
    ap.add_argument("--score-sizes", type=float, nargs="*", default=[1e6])
    ap.add_argument("--cholesky-sizes", type=float, nargs="*", default=[1e6])
    ap.add_argument("--contenders", nargs="+", default=["persona", "spark"])
    ap.add_argument("--grid-sizes", type=float, nargs="*", default=[1e6])
    ap.add_argument("--grid", type=float, nargs="*", default=[0.3, 1.0, 3.0, 10.0],
                    help="regularizations to compare both at, at --grid-sizes")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--factors", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--regularization", type=float, default=1.0)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spark-memory", default="8g")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds a contender may run")
    ap.add_argument("--spark-timeout", type=float, default=None, help="a tighter limit for the Spark contender")
    ap.add_argument("--stem", default=None, help="results file name (default spark, spark-quick with --quick)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None, help="where the Parquet files go (default: a temporary folder)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--worker", choices=["persona", "spark"], help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--solver", default="cg", help=argparse.SUPPRESS)
    ap.add_argument("--score", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        fn = worker_persona if args.worker == "persona" else worker_spark
        print("RESULT " + json.dumps(fn(Path(args.folder), args)), flush=True)
        return
    if args.quick:
        args.sizes, args.score_sizes, args.cholesky_sizes, args.grid_sizes = [2e5], [2e5], [2e5], [2e5]
        args.grid = [1.0]
    from machine import machine_facts

    from common import write_results

    cases, grid = [], []
    base = Path(args.data_dir or tempfile.mkdtemp(prefix="bench-spark-"))
    for size in sorted(set(args.sizes) | set(args.grid_sizes)):
        folder = base / f"n{int(size)}"
        folder.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        data = write_data(folder, int(size), args.seed)
        print(f"{int(size):,} events: {data} (written in {time.perf_counter() - t:.1f} s)", flush=True)
        if any(abs(size - s) < 1 for s in args.grid_sizes):
            rows = []
            for reg in args.grid:
                for name in ("persona", "spark"):
                    rows.append(run_contender(name, folder, args, False, regularization=reg))
                    print("   grid", json.dumps(rows[-1]), flush=True)
            grid.append({"size": size, "data": data, "rows": rows})
        if not any(abs(size - s) < 1 for s in args.sizes):
            continue
        rows = []
        score = any(abs(size - s) < 1 for s in args.score_sizes)
        for name in args.contenders:
            rows.append(run_contender(name, folder, args, score))
            print("  ", json.dumps(rows[-1]), flush=True)
        if "persona" in args.contenders and any(abs(size - s) < 1 for s in args.cholesky_sizes):
            rows.append(run_contender("persona", folder, args, False, solver="cholesky"))
            print("  ", json.dumps(rows[-1]), flush=True)
        cases.append({"size": size, "data": data, "rows": rows})
        payload = {"args": vars(args), "machine": machine_facts(), "cases": cases, "grid": grid}
        write_results(args.out, args.stem or ("spark-quick" if args.quick else "spark"), payload, markdown(payload))


if __name__ == "__main__":
    main()
