"""Benchmark top-k selection: persona's backends against plain numpy, in the same run.

Cases (top-10 by default, fixed seeds):

- ``a``: 1 row x 100,000 items -- one request scored against a whole catalogue
- ``b``: 1,000 rows x 100,000 items -- a batch job over a large catalogue
- ``c``: 10,000 rows x 12,000 items with ~10 seen items excluded per row -- batch recommend

Contenders: persona's compiled core on 1 thread and on all threads, persona's Numba backend, and the
numpy baseline anyone would write (``np.argpartition`` then a sort of the k; exclusions by setting
``-inf`` on a copy of the scores, since a library may not overwrite its caller's array). All persona
calls go through the public router ``persona.kernels.topk``, as models call it.

Reports median wall time, the ratio persona / numpy (below 1 = persona faster) and whether the
results agree with numpy's; writes ``topk.json`` and ``topk.md`` to ``benchmarks/results/`` and
prints the table. Absolute times drift on a shared machine, the ratios much less.

    python benchmarks/bench_topk.py                 # all cases
    python benchmarks/bench_topk.py --cases a --repeats 500
    python benchmarks/bench_topk.py --quick         # small sizes, a smoke test
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp

import persona
from persona.kernels import available_backends, topk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

CASES = {
    # name: (rows, items, seen per row, default repeats, description)
    "a": (1, 100_000, 0, 300, "1 row x 100k items"),
    "b": (1_000, 100_000, 0, 5, "1,000 rows x 100k items"),
    "c": (10_000, 12_000, 10, 5, "10,000 rows x 12k items, ~10 seen excluded"),
}
QUICK = {"a": (1, 10_000, 0, 50, "1 row x 10k items"),
         "b": (100, 10_000, 0, 5, "100 rows x 10k items"),
         "c": (1_000, 1_200, 10, 5, "1,000 rows x 1.2k items, ~10 seen excluded")}


def numpy_topk(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None):
    """The usual numpy answer: argpartition, then sort the k; exclusions as -inf on a copy."""
    if exclude is not None and exclude.nnz:
        scores = scores.copy()
        rows = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
        scores[rows, exclude.indices] = -np.inf
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def make_case(rows: int, items: int, seen: int, seed: int):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((rows, items), dtype=np.float32)
    exclude = None
    if seen:
        r = np.repeat(np.arange(rows), seen)
        c = rng.integers(0, items, size=rows * seen)
        exclude = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(rows, items))  # sums repeats
    return scores, exclude


def time_call(fn, repeats: int) -> dict:
    fn()  # warm-up: Numba compiles (or loads its cache), pages get touched
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def machine_facts() -> dict:
    facts = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "persona": getattr(persona, "__version__", "?"),
        "topk_backends": available_backends(),
    }
    try:
        import numba

        facts["numba"] = numba.__version__
        facts["numba_threads"] = numba.get_num_threads()
    except ImportError:
        facts["numba"] = None
    try:
        from persona import _core

        facts["core_max_threads"] = _core.max_threads()
        facts["core_openmp"] = bool(_core.openmp)
    except ImportError:
        facts["core_max_threads"] = None
    try:
        from threadpoolctl import threadpool_info

        facts["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer",
                                               "architecture")} for d in threadpool_info()]
    except ImportError:
        try:
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
            facts["blas"] = [{"internal_api": blas.get("name"), "version": blas.get("version")}]
        except Exception:  # noqa: BLE001 -- older numpy: show_config has no dict mode
            facts["blas"] = None
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def run_case(name: str, spec, k: int, repeats: int | None, seed: int, threads: int) -> dict:
    rows, items, seen, default_repeats, desc = spec
    repeats = repeats or default_repeats
    scores, exclude = make_case(rows, items, seen, seed)
    base_idx, base_val = numpy_topk(scores, k, exclude)

    contenders = {"numpy argpartition": lambda: numpy_topk(scores, k, exclude)}
    backends = available_backends()
    if "cpp" in backends:
        contenders["persona cpp, 1 thread"] = lambda: topk(scores, k, exclude=exclude, backend="cpp", num_threads=1)
        contenders[f"persona cpp, {threads} threads"] = lambda: topk(scores, k, exclude=exclude, backend="cpp",
                                                                     num_threads=threads)
    if "numba" in backends:
        contenders["persona numba"] = lambda: topk(scores, k, exclude=exclude, backend="numba")

    results = []
    numpy_median = None
    for label, fn in contenders.items():
        timing = time_call(fn, repeats)
        idx, val = fn()
        # scores are continuous random draws, so ties are vanishingly rare: compare values and ids
        agree = bool(np.array_equal(val[:, :base_val.shape[1]], base_val) and
                     np.array_equal(idx[:, :base_idx.shape[1]], base_idx))
        if label.startswith("numpy"):
            numpy_median = timing["median_s"]
        results.append({"contender": label, **timing, "agrees_with_numpy": agree})
    for r in results:
        r["ratio_vs_numpy"] = r["median_s"] / numpy_median
        r["rows_per_s"] = rows / r["median_s"]
    return {"case": name, "description": desc, "rows": rows, "items": items, "seen_per_row": seen, "k": k,
            "seed": seed, "results": results}


def fmt_time(s: float) -> str:
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.3f} s"


def markdown(report: dict) -> str:
    f = report["machine"]
    blas = ", ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('num_threads', '?')} threads)"
                     for b in (f.get("blas") or [])) or "unknown"
    lines = [
        f"# top-k benchmark (k = {report['k']})",
        "",
        f"{f['cpu']}, {f['usable_cores']} usable cores, load average at start "
        f"{', '.join(f'{x:.2f}' for x in f['load_average_at_start'] or [])}; Python {f['python']}, "
        f"numpy {f['numpy']}, numba {f.get('numba')}, persona {f['persona']}; BLAS: {blas}.",
        "",
        "| case | contender | median | ratio vs numpy | rows/s | agrees |",
        "|---|---|---:|---:|---:|:---:|",
    ]
    for case in report["cases"]:
        for r in case["results"]:
            lines.append(f"| {case['case']}: {case['description']} | {r['contender']} | {fmt_time(r['median_s'])} "
                         f"| {r['ratio_vs_numpy']:.3f} | {r['rows_per_s']:,.0f} | "
                         f"{'yes' if r['agrees_with_numpy'] else 'NO'} |")
    lines += ["", "ratio = persona median / numpy median (below 1: persona faster). numpy baseline: "
              "`np.argpartition` + sort of the k, exclusions by `-inf` on a copy."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="a,b,c", help="comma-separated subset of a,b,c (default all)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per contender (default per case)")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for 'all threads'")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)

    specs = QUICK if args.quick else CASES
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in specs]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {sorted(specs)}")

    report = {"benchmark": "topk", "k": args.k, "quick": args.quick, "machine": machine_facts(), "cases": []}
    for i, name in enumerate(names):
        report["cases"].append(run_case(name, specs[name], args.k, args.repeats, args.seed + i, args.threads))

    write_results(args.out_dir, "topk-quick" if args.quick else "topk", report, markdown(report))
    return 0 if all(r["agrees_with_numpy"] for c in report["cases"] for r in c["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
