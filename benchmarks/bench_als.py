"""Benchmark implicit-feedback ALS: persona against implicit's CPU ALS, in the same run.

Cases (fixed seeds):

- ``synthetic``: a power-law matrix, item popularity ~ rank^-0.8, heavy-tailed user activity
  (default 500k users x 100k items, ~10M stored entries; ``--quick``: 50k x 10k, ~1M)
- ``beauty``: Amazon Beauty (``persona.datasets.load_sequences``), leave-last-out; both models fit on
  train + valid and are scored on the test targets by the same ``ps.evaluate`` (HR/NDCG@5/10/20)

Contenders: ``persona.ALS`` (Numba CG) and ``implicit.cpu.als.AlternatingLeastSquares`` with the
same factors, iterations, regularization, CG steps (3), thread count and float32. Both optimise
confidence ``1 + alpha * weight``: implicit multiplies its input by alpha and uses it as the
confidence, so it is given ``1 + alpha * weight`` with its alpha at 1.

Every (case, contender) runs in a fresh subprocess, so its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, native allocations included) is its own; "fit +MB"
is the fit's own high-water mark above the memory resident just before it (the mark is reset
through ``/proc/self/clear_refs`` on Linux). A tiny warm-up fit runs before the
timed one (Numba compiles or loads its cache; implicit has nothing to compile). BLAS is pinned to
one thread in both (implicit asks for it; persona's fit does not use BLAS in its loop). Writes
``als.json`` and ``als.md`` (``als-quick.*`` with ``--quick``) to ``benchmarks/results/``.

    python benchmarks/bench_als.py                  # full sizes (minutes)
    python benchmarks/bench_als.py --quick          # small sizes, a smoke test
    python benchmarks/bench_als.py --cases synthetic --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
KS = (5, 10, 20)
CONTENDERS = ("persona", "implicit")


# ------------------------------------------------------------------------------------------ data
def synthetic_matrix(n_users: int, n_items: int, mean_per_user: float, seed: int) -> sp.csr_matrix:
    """Seeded users x items counts: item popularity ~ rank^-0.8 (ranks shuffled over item ids),
    heavy-tailed user activity (gamma-Poisson with mean ``mean_per_user``); repeats summed."""
    rng = np.random.default_rng(seed)
    activity = 1 + rng.poisson(rng.gamma(0.5, (mean_per_user - 1) / 0.5, n_users))
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    item_of_rank = rng.permutation(n_items)
    rows = np.repeat(np.arange(n_users, dtype=np.int32), activity)
    cols = item_of_rank[rng.choice(n_items, size=len(rows), p=pop / pop.sum())].astype(np.int32)
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items))
    m.sum_duplicates()
    return m


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


class FitMemory:
    """Peak resident memory of the fit alone: the kernel's high-water mark is reset just before it
    (Linux ``/proc/self/clear_refs``) and read after; elsewhere only the process peak is known."""

    def __enter__(self):
        self.process_peak_before = _peak_mb()
        self.rss_before = _status_mb("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = True
        except OSError:
            self.reset = False
        return self

    def __exit__(self, *exc):
        hwm = _status_mb("VmHWM") if self.reset else None
        self.process_peak = max(self.process_peak_before, hwm or 0.0, _peak_mb())
        if hwm is not None and self.rss_before is not None:
            self.fit_growth = hwm - self.rss_before
        else:  # lower bound: only growth beyond the earlier peak is visible
            self.fit_growth = max(0.0, _peak_mb() - self.process_peak_before)
        return False


# ------------------------------------------------------------------------------------------ worker side
class ImplicitAdapter:
    """Just enough of a persona model for ``ps.evaluate`` to score implicit's factors."""

    def __init__(self, model, user_map, item_map, user_items):
        self.model, self.user_map_, self.item_map_, self.user_items_ = model, user_map, item_map, user_items
        self.num_threads = 0

    def recommend_indices(self, user_indices, n, *, filter_seen=True, exclude=None):
        from persona.kernels import topk

        users = np.asarray(user_indices, dtype=np.int64)
        scores = self.model.user_factors[users] @ self.model.item_factors.T
        excl = None
        if filter_seen:
            excl = self.user_items_[users]
        if exclude is not None:
            excl = exclude if excl is None else (excl + exclude).tocsr()
        return topk(scores, n, exclude=excl)


def _fit_contender(name: str, inter, args):
    """Fit one contender on ``inter`` (timed); returns (model or adapter, fit seconds, FitMemory)."""
    import persona as ps
    from persona.models.als import ALS

    W = inter.matrix  # built before the clock starts, as implicit's input is
    if name == "persona":
        tiny = ps.Interactions.from_records([("a", "x"), ("a", "y"), ("b", "y")])
        ALS(factors=args.factors, iterations=1, random_state=0).fit(tiny)  # compile / load the cache
        model = ALS(factors=args.factors, iterations=args.iterations, regularization=args.regularization,
                    alpha=args.alpha, cg_steps=args.cg_steps, random_state=args.seed, num_threads=args.threads)
        with FitMemory() as mem:
            t0 = time.perf_counter()
            model.fit(inter)
            seconds = time.perf_counter() - t0
        return model, seconds, mem
    from implicit.cpu.als import AlternatingLeastSquares

    def make(iterations):
        m = AlternatingLeastSquares(factors=args.factors, regularization=args.regularization, alpha=1.0,
                                    dtype=np.float32, use_native=True, use_cg=True, iterations=iterations,
                                    calculate_training_loss=False, num_threads=args.threads,
                                    random_state=args.seed)
        m.cg_steps = args.cg_steps
        return m

    C = W.copy()
    C.data = (1.0 + args.alpha * C.data).astype(np.float32)
    make(1).fit(C[:2, :], show_progress=False)
    model = make(args.iterations)
    with FitMemory() as mem:
        t0 = time.perf_counter()
        model.fit(C, show_progress=False)
        seconds = time.perf_counter() - t0
    return ImplicitAdapter(model, inter.user_map, inter.item_map, W), seconds, mem


def worker(args) -> dict:
    import persona as ps
    from persona.data import IdMap, Interactions

    out = {"contender": args.worker, "case": args.case}
    if args.case == "synthetic":
        z = np.load(args.data)
        W = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        users = np.repeat(np.arange(W.shape[0], dtype=np.int32), np.diff(W.indptr))
        inter = Interactions(IdMap(np.arange(W.shape[0])), IdMap(np.arange(W.shape[1])), users=users,
                             items=W.indices, weights=W.data, _sorted=True)
        del W, users, z
        _ = inter.matrix
        _, seconds, mem = _fit_contender(args.worker, inter, args)
    else:
        data = ps.datasets.load_sequences(args.data, attributes=None).interactions
        train, valid, test = ps.split.leave_last_out(data)
        fit_data = train.concat(valid)
        _ = fit_data.matrix
        model, seconds, mem = _fit_contender(args.worker, fit_data, args)
        report = ps.evaluate(model, test, k=KS, metrics=("hr", "ndcg"))
        out["quality"] = {k: v for k, v in report.items() if k.startswith(("hr@", "ndcg@"))}
        out["quality"]["n_users"] = report["n_users"]
    out.update(fit_s=seconds, peak_rss_mb=mem.process_peak, fit_rss_growth_mb=mem.fit_growth,
               fit_memory_exact=mem.reset)
    return out


# ------------------------------------------------------------------------------------------ parent side
def run_worker(contender: str, case: str, data_path: str, args) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", contender, "--case", case, "--data", data_path,
           "--factors", str(args.factors), "--iterations", str(args.iterations),
           "--regularization", str(args.regularization), "--alpha", str(args.alpha),
           "--cg-steps", str(args.cg_steps), "--threads", str(args.threads), "--seed", str(args.seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{contender} on {case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(report: dict) -> str:
    f = report["machine"]
    p = report["params"]
    lines = [
        f"# ALS benchmark{' (--quick)' if report['quick'] else ''}",
        "",
        f"{f.get('processor')}, {f.get('cores')} cores, load average at start "
        f"{', '.join(f'{x:.2f}' for x in report['load_average_at_start'])}; Python {f.get('python')}, numpy "
        f"{f.get('numpy')}, numba {f.get('numba')}, implicit {f.get('implicit')}, persona {f.get('persona')}.",
        "",
        f"factors {p['factors']}, iterations {p['iterations']}, regularization {p['regularization']}, alpha "
        f"{p['alpha']}, CG steps {p['cg_steps']}, {p['threads']} threads, float32, seed {p['seed']}; "
        f"median of {p['repeats']} fit(s) per contender.",
        "",
        "| case | contender | fit | persona / implicit | peak RSS | fit +MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for case in report["cases"]:
        imp = next(r for r in case["results"] if r["contender"] == "implicit")["fit_s"]
        for r in case["results"]:
            ratio = f"{r['fit_s'] / imp:.2f}" if r["contender"] == "persona" else ""
            lines.append(f"| {case['case']}: {case['description']} | {r['contender']} | {r['fit_s']:.2f} s | {ratio} "
                         f"| {r['peak_rss_mb']:.0f} MB | {r['fit_rss_growth_mb']:.0f} |")
    quality = [(c, r) for c in report["cases"] for r in c["results"] if "quality" in r]
    if quality:
        lines += ["", "Quality on the test targets (leave-last-out, fit on train + valid, full ranking, seen items "
                  "filtered):", "",
                  "| case | contender | " + " | ".join(f"HR@{k}" for k in KS) + " | "
                  + " | ".join(f"NDCG@{k}" for k in KS) + " |",
                  "|---|---|" + "---:|" * (2 * len(KS))]
        for c, r in quality:
            q = r["quality"]
            lines.append(f"| {c['case']} | {r['contender']} | " + " | ".join(f"{q[f'hr@{k}']:.4f}" for k in KS) + " | "
                         + " | ".join(f"{q[f'ndcg@{k}']:.4f}" for k in KS) + " |")
    lines += ["", "persona / implicit below 1: persona faster. Peak RSS: the whole fresh process (data, "
              "imports and Numba's compiled code included); fit +MB: the fit's own peak above the resident "
              "memory just before it. Absolute times drift on a shared machine, the ratio much less."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small synthetic case (50k x 10k)")
    parser.add_argument("--cases", default="synthetic,beauty", help="comma-separated subset of synthetic,beauty")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--per-user", type=float, default=20.0, help="mean events per synthetic user")
    parser.add_argument("--beauty", default=None, help="Beauty.txt (default: the shared data folder)")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--regularization", type=float, default=0.01)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--cg-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="fits per contender (fresh processes, median)")
    parser.add_argument("--out", default=str(HERE / "results"))
    # internal: one contender in a fresh process
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    sys.path.insert(0, str(HERE))
    from common import write_results
    from machine import machine_facts

    import persona as ps

    n_users = args.users or (50_000 if args.quick else 500_000)
    n_items = args.items or (10_000 if args.quick else 100_000)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    report = {"quick": args.quick, "machine": machine_facts(), "load_average_at_start": list(os.getloadavg()),
              "params": {k: getattr(args, k) for k in ("factors", "iterations", "regularization", "alpha",
                                                        "cg_steps", "threads", "seed", "repeats")},
              "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            if case == "synthetic":
                t0 = time.perf_counter()
                W = synthetic_matrix(n_users, n_items, args.per_user, args.seed)
                path = str(Path(tmp) / "synthetic.npz")
                np.savez(path, indptr=W.indptr, indices=W.indices, data=W.data, shape=np.array(W.shape))
                desc = f"{n_users:,} x {n_items:,}, {W.nnz:,} nnz"
                print(f"synthetic data: {desc} ({time.perf_counter() - t0:.1f} s)", flush=True)
                del W
            elif case == "beauty":
                p = args.beauty or ps.datasets.default_data_path("amazon-beauty/Beauty.txt")
                if p is None:
                    print("beauty: Beauty.txt not found; pass --beauty PATH (skipped)", flush=True)
                    continue
                path, desc = str(p), "Amazon Beauty"
            else:
                parser.error(f"unknown case {case!r}")
            runs = {c: [] for c in CONTENDERS}
            for rep in range(args.repeats):  # alternate, so load drifts hit both contenders alike
                for contender in CONTENDERS:
                    r = run_worker(contender, case, path, args)
                    print(f"{case:>9} {contender:>8} #{rep + 1}: fit {r['fit_s']:.2f} s, "
                          f"peak {r['peak_rss_mb']:.0f} MB, fit +{r['fit_rss_growth_mb']:.0f} MB"
                          + (f", hr@10 {r['quality']['hr@10']:.4f}" if "quality" in r else ""), flush=True)
                    runs[contender].append(r)
            results = []
            for contender, rs in runs.items():
                r = dict(rs[0])
                r["fit_s_all"] = [x["fit_s"] for x in rs]
                r["fit_s"] = float(np.median(r["fit_s_all"]))
                results.append(r)
            report["cases"].append({"case": case, "description": desc, "results": results})

    out = Path(args.out)
    write_results(out, "als-quick" if args.quick else "als", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
