"""A nightly persona job on Apache Spark: events -> cleaned interactions -> MLlib ALS -> a persona
artifact the web workers pick up -> every user's top-n as Parquet -> a campaign's audience.

    pip install "persona-recsys[spark]"          # pyspark 4; Spark also needs Java 17+
    python examples/spark_job.py --out /tmp/persona-spark               # a synthetic shop, local[2]
    python examples/spark_job.py --events s3a://shop/events/ --format delta --out /mnt/persona \\
        --master yarn                                                   # a real log on a cluster

On a cluster, ``--out`` must be a path every executor and every web worker reads (a shared mount):
the artifact is published there atomically (``model.save`` writes a temporary folder and renames it),
and ``RecommenderService.watch(<out>/models/als)`` in each web worker swaps it in (docs/scale.md).
tests/test_spark.py runs this script on a small synthetic shop.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def synthetic_events(folder: Path, n_users: int = 500, n_items: int = 120) -> tuple[str, "object"]:
    """A synthetic shop's events written as Parquet; returns the path and the shop (for its catalogue)."""
    import persona as ps

    shop = ps.datasets.synthetic_shop(n_users=n_users, n_items=n_items, seed=0)
    events = shop.events[["user_id", "item_id", "timestamp", "event"]].astype({"event": str})
    path = folder / "events.parquet"
    # Spark reads timestamps of micro- or milliseconds only; pandas would write nanoseconds
    events.to_parquet(path, coerce_timestamps="us", allow_truncated_timestamps=True)
    return str(path), shop


def main(argv=None, spark=None) -> dict:
    import persona as ps
    import persona.spark as pss
    from persona.marketing import Budget, Campaign

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", help="events to read (default: a synthetic shop written under --out)")
    ap.add_argument("--format", default="parquet", help="parquet, delta, csv, ... (read_events)")
    ap.add_argument("--synthetic-users", type=int, default=500, help="the synthetic shop's size, without --events")
    ap.add_argument("--out", required=True, help="where models, scores and audiences go")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--factors", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--regularization", type=float, default=1.0)
    ap.add_argument("--n", type=int, default=10, help="recommendations per user")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shop = None
    events_path = args.events
    if events_path is None:
        events_path, shop = synthetic_events(out, n_users=args.synthetic_users, n_items=max(40, args.synthetic_users // 4))
    if spark is None:
        if args.master.startswith("local"):
            cores = args.master[len("local["):-1] if args.master.startswith("local[") else "1"
            spark = pss.local_session(int(cores) if cores.isdigit() else 2)
        else:
            from pyspark.sql import SparkSession

            spark = SparkSession.builder.master(args.master).appName("persona-nightly").getOrCreate()

    t = time.perf_counter()
    events = pss.read_events(spark, events_path, format=args.format)
    # the cleaning rules of ps.Interactions: event-type weights, duplicates, a 2-core, bad rows counted
    inter = pss.clean(events, user="user_id", item="item_id", time="timestamp", event="event", k_core=2,
                      strict=False)
    print(f"cleaned: {inter.report}")
    model = pss.fit_als(inter, factors=args.factors, iterations=args.iterations,
                        regularization=args.regularization, alpha=1.0)
    print(f"MLlib ALS: {model.n_users} users x {model.n_items} items in {time.perf_counter() - t:.1f} s "
          f"(regParam {model.spark_['reg_param']:.4g})")

    artifact = out / "models" / "als"
    artifact.parent.mkdir(exist_ok=True)
    model.save(artifact)  # atomic: the web workers' watch() swaps it in

    scored = pss.recommend_all(spark, str(artifact), n=args.n, output=str(out / "top-n"), mode="overwrite")
    n_rows = scored.count()
    print(f"scored: {n_rows} rows (user, item, score, rank) in {out / 'top-n'}")

    top = scored.groupBy("item").count().orderBy("count", ascending=False).limit(5).toPandas()["item"].tolist()
    campaign = Campaign("weekly-picks", items=[str(i) for i in top], budget=Budget(messages=100), n_items=2)
    audience = pss.plan_audience(scored, campaign)
    audience.write.mode("overwrite").parquet(str(out / "audience"))
    n_audience = audience.count()
    print(f"audience of {campaign.name!r}: {n_audience} users in {out / 'audience'}")
    served = ps.load(artifact, mmap=True)  # what a web worker does
    return {"artifact": str(artifact), "scored_rows": n_rows, "audience": n_audience, "report": inter.report,
            "n_users": served.n_users, "shop": shop}


if __name__ == "__main__":
    main()
