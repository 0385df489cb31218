"""Item-item KNN: persona's ItemKNN against implicit's Cosine/BM25Recommender, in the same run.

Build time (fit: weighting + sparse x sparse similarity with top-K pruning), cosine, K=100, both
libraries on the same number of threads (implicit's ``num_threads`` and threadpoolctl), on

- ``beauty``: Amazon Beauty (22k users x 12k items, 198k interactions), and
- ``synthetic``: a seeded power-law matrix (default 500k users x 100k items, ~10M interactions,
  item popularity ~ rank^-0.8; ``--quick``: 50k x 10k, ~1M),

with the ratio persona / implicit (below 1: persona faster) and the overlap of the two neighbour
lists (implicit keeps the item itself among its K; it is left out of the comparison).

Quality on Beauty, standard leave-last-out protocol (fit on train + valid, score the test target
against all items, seen items excluded): persona ItemKNN cosine / bm25 vs implicit Cosine / BM25
(K=200, as in the data README), all scored by the same ``ps.evaluate`` through a small adapter
around implicit. implicit returns only items with a nonzero score (padding the rest), persona fills
short lists with zero-score items; with K=200 this concerns few users.

Writes ``knn.json`` / ``knn.md`` (``knn-quick.*`` with ``--quick``) to ``benchmarks/results/``.

    python benchmarks/bench_knn.py             # full sizes
    python benchmarks/bench_knn.py --quick     # small synthetic matrix, fewer repeats
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fit_and_eval, write_results  # noqa: E402

from datagen import power_law_matrix  # noqa: E402
from machine import machine_facts  # noqa: E402

import persona as ps  # noqa: E402
from persona.models.knn import ItemKNN  # noqa: E402


def interactions_of(m: sp.csr_matrix) -> ps.Interactions:
    coo = m.tocoo()
    return ps.Interactions(ps.IdMap(np.arange(m.shape[0])), ps.IdMap(np.arange(m.shape[1])), coo.row, coo.col,
                           weights=coo.data)


class ImplicitAdapter:
    """Just enough of a persona model around an implicit item-item recommender for ``ps.evaluate``."""

    def __init__(self, model, inter: ps.Interactions):
        self.model = model
        self.user_map_ = inter.user_map
        self.item_map_ = inter.item_map
        self.user_items_ = inter.matrix.tocsr()

    def fit(self):
        self.model.fit(self.user_items_, show_progress=False)
        return self

    def recommend_indices(self, user_indices, n, *, filter_seen=True, exclude=None):
        if exclude is not None:
            raise NotImplementedError("the implicit adapter takes no extra exclusions")
        users = np.asarray(user_indices)
        ids, scores = self.model.recommend(users, self.user_items_[users], N=n,
                                           filter_already_liked_items=filter_seen)
        return np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float32)


def neighbour_overlap(persona_sim: sp.csr_matrix, implicit_sim: sp.csr_matrix, k: int, rows: np.ndarray) -> float:
    """Mean |P & I| / |P| over rows with neighbours (implicit's self-entry dropped, K-1 others compared)."""
    vals = []
    for i in rows:
        p = persona_sim.indices[persona_sim.indptr[i]:persona_sim.indptr[i + 1]]
        q = implicit_sim.indices[implicit_sim.indptr[i]:implicit_sim.indptr[i + 1]]
        q = q[q != i]
        top_p = p[: min(len(p), len(q))]  # persona lists best first
        if len(top_p):
            vals.append(len(set(top_p.tolist()) & set(q.tolist())) / len(top_p))
    return float(np.mean(vals)) if vals else float("nan")


def time_builds(name: str, m: sp.csr_matrix, k: int, threads: int, repeats: int) -> dict:
    from implicit.nearest_neighbours import CosineRecommender
    from threadpoolctl import threadpool_limits

    inter = interactions_of(m)
    inter.matrix  # noqa: B018 -- built once outside the timing, as a fitted shop's Interactions would be
    times = {"persona": [], "implicit": []}
    models = {}
    with threadpool_limits(threads):
        for r in range(repeats):
            # alternate the order so that drift on a shared machine hits both alike
            order = ("persona", "implicit") if r % 2 == 0 else ("implicit", "persona")
            for who in order:
                t0 = time.perf_counter()
                if who == "persona":
                    models[who] = ItemKNN(k=k, num_threads=threads).fit(inter)
                else:
                    models[who] = CosineRecommender(K=k, num_threads=threads)
                    models[who].fit(m, show_progress=False)
                times[who].append(time.perf_counter() - t0)
    med = {who: statistics.median(t) for who, t in times.items()}
    rng = np.random.default_rng(0)
    rows = rng.choice(m.shape[1], size=min(2000, m.shape[1]), replace=False)
    overlap = neighbour_overlap(models["persona"].similarity_, models["implicit"].similarity.tocsr(), k, rows)
    return {
        "dataset": name, "users": m.shape[0], "items": m.shape[1], "nnz": int(m.nnz), "k": k, "threads": threads,
        "repeats": repeats, "persona_s": med["persona"], "implicit_s": med["implicit"],
        "persona_all_s": times["persona"], "implicit_all_s": times["implicit"],
        "ratio": med["persona"] / med["implicit"], "neighbour_overlap": overlap,
    }


def quality(inter: ps.Interactions, k: int, threads: int) -> list[dict]:
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
    from threadpoolctl import threadpool_limits

    train, valid, test = ps.split.leave_last_out(inter)
    data = train.concat(valid)
    contenders = [
        ("persona ItemKNN cosine", lambda: ItemKNN(k=k, weighting="cosine", num_threads=threads).fit(data)),
        ("implicit CosineRecommender", lambda: ImplicitAdapter(CosineRecommender(K=k, num_threads=threads),
                                                               data).fit()),
        ("persona ItemKNN bm25", lambda: ItemKNN(k=k, weighting="bm25", num_threads=threads).fit(data)),
        ("implicit BM25Recommender", lambda: ImplicitAdapter(BM25Recommender(K=k, num_threads=threads),
                                                             data).fit()),
    ]
    out = []
    with threadpool_limits(threads):
        for label, make in contenders:
            fit_and_eval(out, label, make, test, {"k": k}, ks=(5, 10, 20))
    return out


def markdown(report: dict) -> str:
    f = report["machine"]
    lines = [
        "# Item-item KNN: persona vs implicit",
        "",
        f"{f.get('processor')}, {f.get('cores')} cores, {report['threads']} threads for both; "
        f"Python {f.get('python')}, numpy {f.get('numpy')}, scipy {f.get('scipy')}, implicit {f.get('implicit')}, persona {f.get('persona')}.",
        "",
        "## Build time (cosine, fit = weighting + top-K similarity)",
        "",
        "| data | users x items | nnz | K | persona | implicit | ratio | neighbour overlap |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for b in report["build"]:
        lines.append(f"| {b['dataset']} | {b['users']:,} x {b['items']:,} | {b['nnz']:,} | {b['k']} | "
                     f"{b['persona_s']:.3f} s | {b['implicit_s']:.3f} s | {b['ratio']:.2f} | "
                     f"{b['neighbour_overlap']:.3f} |")
    lines += ["", "ratio = persona / implicit median fit time (below 1: persona faster); neighbour overlap = "
              "share of persona's neighbours that implicit keeps too (ties at the cut may differ)."]
    if report.get("quality"):
        lines += ["", f"## Quality on Beauty (leave last out, test target, K = {report['quality'][0]['k']})", "",
                  "| model | fit | HR@5 | NDCG@5 | HR@10 | NDCG@10 | HR@20 | NDCG@20 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for q in report["quality"]:
            lines.append(f"| {q['model']} | {q['fit_s']:.2f} s | {q['hr@5']:.4f} | {q['ndcg@5']:.4f} | "
                         f"{q['hr@10']:.4f} | {q['ndcg@10']:.4f} | {q['hr@20']:.4f} | {q['ndcg@20']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    # implicit's own Cosine/BM25 fit hands its kernel a COO matrix and warns about it on every fit;
    # the conversion is part of its fit time either way
    warnings.filterwarnings("ignore", message="Method expects CSR input")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_beauty = ps.datasets.default_data_path("amazon-beauty")
    ap.add_argument("--beauty", type=Path, default=default_beauty / "Beauty.txt" if default_beauty else None,
                    help="Beauty.txt (default: the shared data folder)")
    ap.add_argument("--users", type=int, default=500_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--nnz", type=int, default=10_000_000, help="interactions drawn (a few merge as repeats)")
    ap.add_argument("--k", type=int, default=100, help="neighbours for the build-time comparison")
    ap.add_argument("--quality-k", type=int, default=200, help="neighbours for the quality comparison")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--quick", action="store_true", help="50k x 10k synthetic matrix (~1M interactions), 1 repeat")
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.users, args.items, args.nnz, args.repeats = 50_000, 10_000, 1_000_000, 1

    report = {"benchmark": "knn", "quick": args.quick, "threads": args.threads, "seed": args.seed,
              "machine": machine_facts(), "build": [], "quality": []}
    beauty = None
    if args.beauty is not None and Path(args.beauty).exists():
        beauty = ps.datasets.load_sequences(args.beauty).interactions
        report["build"].append(time_builds("Amazon Beauty", beauty.matrix.tocsr(), args.k, args.threads,
                                           max(args.repeats, 3)))
    else:
        print(f"Beauty not found at {args.beauty}; skipping it (pass --beauty PATH)", file=sys.stderr)
    synth = power_law_matrix(args.users, args.items, args.nnz, seed=args.seed)
    report["build"].append(time_builds("synthetic power law", synth, args.k, args.threads, args.repeats))
    del synth
    if beauty is not None and not args.skip_quality:
        report["quality"] = quality(beauty, args.quality_k, args.threads)

    write_results(args.out_dir, "knn-quick" if args.quick else "knn", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
