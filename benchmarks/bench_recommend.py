"""Serving throughput: recommend_batch for many users, persona vs implicit, on identical factors.

Both libraries get the same float32 factors and the same seen-items matrix, so the comparison is
purely the serving path: scoring (BLAS), filtering seen items and top-k selection. The results are
checked to be the same item lists (up to ties).

    python benchmarks/bench_recommend.py                      # 100k items x 64 factors, 10,000 users
    python benchmarks/bench_recommend.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datagen import power_law_matrix  # noqa: E402
from machine import machine_facts  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=500_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--nnz", type=int, default=10_000_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--batch-users", type=int, default=10_000)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="50k users x 10k items, 1,000 users")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.users, args.items, args.nnz, args.batch_users = 50_000, 10_000, 500_000, 1_000

    import implicit
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from persona.data import IdMap
    from persona.models.factor import FactorModel

    class GivenFactors(FactorModel):
        """A factor model whose factors are set from outside (here: the same as implicit's)."""

        def __init__(self, *, num_threads: int = 0):
            self.num_threads = num_threads

    X = power_law_matrix(args.users, args.items, args.nnz, seed=0)
    rng = np.random.default_rng(1)
    U = rng.standard_normal((args.users, args.factors), dtype=np.float32) * 0.1
    V = rng.standard_normal((args.items, args.factors), dtype=np.float32) * 0.1
    users = rng.choice(args.users, size=args.batch_users, replace=False)

    peer = AlternatingLeastSquares(factors=args.factors, num_threads=args.threads, random_state=0)
    peer.user_factors, peer.item_factors = U, V

    ours = GivenFactors(num_threads=args.threads)
    ours.user_map_, ours.item_map_ = IdMap(np.arange(args.users)), IdMap(np.arange(args.items))
    ours.user_items_, ours.user_factors_, ours.item_factors_ = X, U, V
    ours.fallback_, ours._fitted = None, True

    def run_peer():
        return peer.recommend(users, X[users], N=args.n, filter_already_liked_items=True)

    def run_ours():
        return ours.recommend_batch(users, n=args.n)

    def run_ours_indices():
        return ours.recommend_indices(users, args.n)

    timings = {}
    with threadpool_limits(limits=args.threads):
        for name, fn in (("implicit", run_peer), ("persona recommend_batch", run_ours),
                         ("persona recommend_indices", run_ours_indices)):
            fn()  # warm-up
            ts = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                out = fn()
                ts.append(time.perf_counter() - t)
            timings[name] = (float(np.median(ts)), out)

    peer_ids = timings["implicit"][1][0]
    our_ids = timings["persona recommend_indices"][1][0]
    agree = float(np.mean([len(set(a) & set(b)) / args.n for a, b in zip(peer_ids, our_ids)]))
    base = timings["implicit"][0]
    rows = [{"contender": k, "seconds": v[0], "us_per_user": v[0] / args.batch_users * 1e6,
             "users_per_s": args.batch_users / v[0], "throughput_vs_implicit": base / v[0]}
            for k, v in timings.items()]
    result = {"config": vars(args) | {"out": str(args.out)}, "nnz": int(X.nnz), "overlap_with_implicit": agree,
              "implicit": implicit.__version__, "machine": machine_facts(), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "recommend_quick" if args.quick else "recommend"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str))
    md = [f"# recommend_batch: {args.batch_users} users, n={args.n}, seen filtered, {args.items} items x "
          f"{args.factors} factors, {X.nnz:,} seen pairs, {args.threads} threads", "",
          "| contender | s | us/user | users/s | throughput vs implicit |", "|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['contender']} | {r['seconds']:.3f} | {r['us_per_user']:.1f} | {r['users_per_s']:.0f} | "
                  f"{r['throughput_vs_implicit']:.2f}x |")
    md.append(f"\nMean overlap of the top-{args.n} lists with implicit's: {agree:.4f}")
    (args.out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
