"""Benchmark persona.retrieval: exact vs faiss HNSW / IVF, filtered queries, and wrapper overhead.

On random float32 vectors (fixed seeds; random data is the hard case for ANN: no cluster structure),
in one run:

- build time; recall@10 against exact search; single-query p50/p99 latency on one core
  (``faiss.omp_set_num_threads(1)`` and a threadpoolctl BLAS limit of 1); queries/s at batch 1,000
  on all cores -- for ExactIndex, HNSW (efSearch 32/64/128/256) and IVF-Flat (nprobe 8/16/64);
- filtered queries with a random 10% of rows allowed (``mask=``): recall@10 against exact filtered
  search, single-query p99, share of rows with exactly n results -- through faiss's selector, and
  with the exact-over-allowed-rows path persona uses for small allowed sets;
- ExactIndex at batch 1,000 vs the plain numpy answer (``Q @ V.T``, ``np.argpartition``, sort the k);
- persona's FaissIndex vs the same faiss index object searched directly (same queries, same
  efSearch / nprobe) at batch 1,000: the cost of validation, re-scoring and sorting.

Writes ``retrieval[-quick].json`` and ``.md`` to ``benchmarks/results/`` and prints the tables.

    python benchmarks/bench_retrieval.py            # 100,000 x 64
    python benchmarks/bench_retrieval.py --quick    # 20,000 x 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_facts  # noqa: E402

from persona.retrieval import ExactIndex, FaissIndex  # noqa: E402

K = 10


def recall(truth: np.ndarray, got: np.ndarray) -> float:
    hits = [len(set(t[t >= 0]) & set(g[g >= 0])) / max(1, np.count_nonzero(t >= 0)) for t, g in zip(truth, got)]
    return float(np.mean(hits))


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved(fn_a, fn_b, repeats: int) -> tuple[float, float]:
    """Median times of two functions run alternately, so drift on a shared machine hits both alike."""
    fn_a(), fn_b()
    ta, tb = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        fn_a()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        fn_b()
        tb.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def single_latencies(search, queries: np.ndarray) -> dict:
    """p50 / p99 in microseconds of one query at a time, on one core."""
    import faiss
    from threadpoolctl import threadpool_limits

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        with threadpool_limits(1):
            for q in queries[:20]:
                search(q[None, :])
            lat = []
            for q in queries:
                t = time.perf_counter_ns()
                search(q[None, :])
                lat.append(time.perf_counter_ns() - t)
    finally:
        faiss.omp_set_num_threads(before)
    lat = np.asarray(lat) / 1e3
    return {"p50_us": float(np.percentile(lat, 50)), "p99_us": float(np.percentile(lat, 99))}


def numpy_topk(queries, vectors, k):
    scores = queries @ vectors.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def index_memory_mb(index) -> float:
    """Bytes the index holds: its vectors, ExactIndex's transposed copy, faiss's structure."""
    total = index.vectors.nbytes
    if hasattr(index, "_vt"):
        total += index._vt.nbytes
    if hasattr(index, "faiss_index"):
        import faiss

        total += faiss.serialize_index(index.faiss_index).nbytes
    return total / 2**20


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20,000 x 32 instead of 100,000 x 64")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--dim", type=int, default=None)
    ap.add_argument("--batch", type=int, default=1000, help="queries per batch (and recall queries)")
    ap.add_argument("--single", type=int, default=None, help="single queries timed per configuration")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats of each batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--als-data", default=None, metavar="SEQUENCES",
                    help="instead of random vectors: ALS (64 factors) item factors of this sequences file "
                         "as the rows and its user factors as the queries; 'beauty' = the shared Beauty.txt")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    rows = args.rows or (20_000 if args.quick else 100_000)
    dim = args.dim or (32 if args.quick else 64)
    n_single = args.single or (300 if args.quick else 1000)

    rng = np.random.default_rng(args.seed)
    if args.als_data:
        import persona as ps

        path = args.als_data
        if path == "beauty":
            path = ps.datasets.default_data_path("amazon-beauty") / "Beauty.txt"
        inter = ps.datasets.load_sequences(path).interactions
        als = ps.ALS(factors=64, iterations=15, alpha=40.0, regularization=0.1, random_state=args.seed).fit(inter)
        vectors = als.item_factors_
        pick = rng.choice(inter.n_users, size=min(args.batch, inter.n_users), replace=False)
        queries = als.user_factors_[pick]
        rows, dim = vectors.shape
    else:
        vectors = rng.standard_normal((rows, dim)).astype(np.float32)
        queries = np.random.default_rng(args.seed + 1).standard_normal((args.batch, dim)).astype(np.float32)
    single_q = queries[:n_single]
    mask = np.random.default_rng(args.seed + 2).random(rows) < 0.10
    print(f"{rows} x {dim} vectors, batch {args.batch}, {n_single} single queries, k={K}", flush=True)


    results = {"config": {"rows": rows, "dim": dim, "batch": args.batch, "single": n_single, "k": K,
                          "seed": args.seed, "filter_share": 0.10},
               "machine": machine_facts(), "unfiltered": [], "filtered": [], "exact_vs_numpy": {},
               "overhead": []}

    t = time.perf_counter()
    exact = ExactIndex(vectors)
    exact_build = time.perf_counter() - t
    truth, _ = exact.search(queries, K)
    truth_f, _ = exact.search(queries, K, mask=mask)

    t = time.perf_counter()
    hnsw = FaissIndex(vectors, kind="hnsw", M=32, ef_construction=40)
    hnsw_build = time.perf_counter() - t
    t = time.perf_counter()
    ivf = FaissIndex(vectors, kind="ivf", random_state=args.seed)
    ivf_build = time.perf_counter() - t
    print(f"built: exact {exact_build:.2f}s, hnsw {hnsw_build:.1f}s, ivf {ivf_build:.1f}s (nlist {ivf.nlist})",
          flush=True)

    configs = [("exact", "-", exact, exact_build, None)]
    configs += [("hnsw", f"efSearch={ef}", hnsw, hnsw_build, ("ef_search", ef)) for ef in (32, 64, 128, 256)]
    configs += [("ivf", f"nprobe={p}", ivf, ivf_build, ("nprobe", p)) for p in (8, 16, 64)]

    for name, setting, index, build, knob in configs:
        if knob:
            setattr(index, *knob)  # benchmark only: searches here run one after another
        got, _ = index.search(queries, K)
        lat = single_latencies(lambda q: index.search(q, K), single_q)
        batch_s = median_time(lambda: index.search(queries, K), args.repeats)
        row = {"index": name, "setting": setting, "build_s": round(build, 3), "memory_mb": index_memory_mb(index),
               "recall@10": recall(truth, got),
               **lat, "qps_batch": args.batch / batch_s}
        results["unfiltered"].append(row)
        print(row, flush=True)

        if name == "exact" or setting in ("efSearch=64", "efSearch=128", "efSearch=256", "nprobe=16", "nprobe=64"):
            for path, kwargs in (("selector", {"exact_below": 0, "exact_fraction": 0.0}),
                                 ("default", {})):  # default: exact over the allowed rows when few
                if name == "exact" and path == "selector":
                    continue
                saved = (getattr(index, "exact_below", None), getattr(index, "exact_fraction", None))
                for key, val in kwargs.items():
                    setattr(index, key, val)
                got_f, _ = index.search(queries, K, mask=mask)
                lat = single_latencies(lambda q: index.search(q, K, mask=mask), single_q)
                batch_s = median_time(lambda: index.search(queries, K, mask=mask), args.repeats)
                if name != "exact":
                    index.exact_below, index.exact_fraction = saved
                row = {"index": name, "setting": setting, "path": path if name != "exact" else "exact",
                       "recall@10": recall(truth_f, got_f),
                       "exactly_n": float(np.mean((got_f >= 0).sum(axis=1) == K)), **lat,
                       "qps_batch": args.batch / batch_s}
                results["filtered"].append(row)
                print("filtered", row, flush=True)

    # exact at batch vs plain numpy, same run
    np_ids, _ = numpy_topk(queries, vectors, K)
    t_persona = median_time(lambda: exact.search(queries, K), args.repeats)
    t_numpy = median_time(lambda: numpy_topk(queries, vectors, K), args.repeats)
    results["exact_vs_numpy"] = {"persona_s": t_persona, "numpy_s": t_numpy, "ratio": t_persona / t_numpy,
                                 "same_ids": float(np.mean(np_ids == truth))}
    print("exact vs numpy", results["exact_vs_numpy"], flush=True)

    # wrapper overhead: the same faiss object searched directly with the same parameters
    for index, knob, value in ((hnsw, "ef_search", 128), (ivf, "nprobe", 16)):
        setattr(index, knob, value)
        params = index._params(K, None, 1)
        raw = index.faiss_index
        direct, wrapped = interleaved(lambda: raw.search(queries, K, params=params),
                                      lambda: index.search(queries, K), args.repeats * 4)
        d_ids = raw.search(queries, K, params=params)[1]
        w_ids = index.search(queries, K)[0]
        row = {"index": index.kind, "setting": f"{knob}={value}", "faiss_s": direct, "persona_s": wrapped,
               "overhead": wrapped / direct - 1, "same_id_sets": float(np.mean(
                   [set(a) == set(b) for a, b in zip(d_ids, w_ids)]))}
        results["overhead"].append(row)
        print("overhead", row, flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "retrieval-quick" if args.quick else "retrieval"
    if args.als_data:
        stem += "-als"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    md = to_markdown(results)
    (out / f"{stem}.md").write_text(md)
    print(md)
    return results


def to_markdown(r: dict) -> str:
    c, m = r["config"], r["machine"]
    lines = [f"# retrieval: {c['rows']:,} x {c['dim']} random vectors, k={c['k']}", "",
             f"machine: {m.get('cores')} cores, {m.get('processor')}, numpy {m.get('numpy')}, "
             f"faiss {m.get('faiss')}, persona {m.get('persona')}, top-k backend {m.get('topk_backend')}", "",
             "## unfiltered", "",
             "memory: the index's own arrays (persona's float32 copy of the vectors, ExactIndex's transposed "
             "copy, faiss's serialised structure)", "",
             "| index | setting | build s | memory MB | recall@10 | p50 µs (1 core) | p99 µs (1 core) | qps @ batch |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for x in r["unfiltered"]:
        lines.append(f"| {x['index']} | {x['setting']} | {x['build_s']:.2f} | {x['memory_mb']:.1f} | "
                     f"{x['recall@10']:.3f} | "
                     f"{x['p50_us']:.0f} | {x['p99_us']:.0f} | {x['qps_batch']:,.0f} |")
    lines += ["", f"## filtered: random {c['filter_share']:.0%} of rows allowed (mask)", "",
              "path `selector`: faiss search with an IDSelectorBitmap; `default`: persona's choice "
              "(exact over the allowed rows when they are few, else the selector)", "",
              "| index | setting | path | recall@10 | rows with exactly n | p50 µs | p99 µs | qps @ batch |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    for x in r["filtered"]:
        lines.append(f"| {x['index']} | {x['setting']} | {x['path']} | {x['recall@10']:.3f} | "
                     f"{x['exactly_n']:.3f} | {x['p50_us']:.0f} | {x['p99_us']:.0f} | {x['qps_batch']:,.0f} |")
    e = r["exact_vs_numpy"]
    lines += ["", f"## exact at batch {c['batch']} vs numpy (Q @ V.T, argpartition, sort k)", "",
              "| persona ms | numpy ms | ratio | same ids |", "|---:|---:|---:|---:|",
              f"| {e['persona_s'] * 1e3:.1f} | {e['numpy_s'] * 1e3:.1f} | {e['ratio']:.2f} | {e['same_ids']:.4f} |",
              "", f"## wrapper overhead at batch {c['batch']}: persona FaissIndex vs the same faiss index", "",
              "| index | setting | faiss ms | persona ms | overhead | same id sets |", "|---|---|---:|---:|---:|---:|"]
    for x in r["overhead"]:
        lines.append(f"| {x['index']} | {x['setting']} | {x['faiss_s'] * 1e3:.1f} | {x['persona_s'] * 1e3:.1f} | "
                     f"{x['overhead']:+.1%} | {x['same_id_sets']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
