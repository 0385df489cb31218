"""Benchmark the online loop (issue 15): online metrics over a million impressions, the store's
impressions read-back, and what logging an impression adds to ``RecommenderService.recommend``.

* ``metrics``: ``ps.analytics.online_metrics`` over synthetic frames of ``--impressions`` shown
  items (``--list`` per request, users, placements, two variants) with clicks, carts and purchases
  carrying request ids (5% / 2% / 1% of impressions, a share of stray ones), grouped by
  (placement, variant) and by (placement, variant, day); seconds per call, best of ``--repeat``.
  The peer is a plain pandas group-by of the same frame without attribution or intervals (the
  floor any such computation pays).
* ``read``: the same impressions written to an SQLite store (``log_impression``, one row per
  request) and read back with ``store.impressions()`` (one row per shown item), then metrics
  straight from the store.
* ``serving``: ``svc.recommend`` p50 / p99 on the synthetic shop (ItemKNN, cache off, 10 items,
  placement "home") without a store, with a store but ``impressions=False``, and with every answer
  logged -- interleaved in one run, so the ratios hold on a busy machine.

    python benchmarks/bench_online.py                 # ~1-2 minutes
    python benchmarks/bench_online.py --quick         # a smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import write_results  # noqa: E402
from machine import machine_facts  # noqa: E402

T0 = 1_700_000_000.0


def synthetic_log(n_impressions: int, per_list: int, n_users: int, n_items: int, seed: int):
    """Impressions (one row per shown item) and outcome events, shaped like the store's frames."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_req = n_impressions // per_list
    n = n_req * per_list
    req_user = rng.integers(0, n_users, n_req)
    req_time = T0 + np.sort(rng.uniform(0, 14 * 86400, n_req))
    placement = np.array(["home", "pdp", "cart"])[rng.integers(0, 3, n_req)]
    variant = np.where(req_user % 2 == 0, "A", "B")
    rids = np.array([f"{k:032x}" for k in range(n_req)], dtype=object)
    items = rng.zipf(1.3, n) % n_items
    imps = pd.DataFrame({
        "request_id": np.repeat(rids, per_list), "user": np.repeat(req_user, per_list),
        "placement": np.repeat(placement, per_list), "item": items,
        "position": np.tile(np.arange(1, per_list + 1), n_req), "variant": np.repeat(variant, per_list),
        "model_version": "ItemKNN@0123456789ab", "propensity": np.nan,
        "time": pd.to_datetime(np.repeat(req_time, per_list), unit="s", utc=True),
    })
    rows = []
    for kind, share, delay in (("click", 0.05, 60.0), ("cart", 0.02, 600.0), ("purchase", 0.01, 3600.0)):
        pick = rng.random(n) < share
        k = int(pick.sum())
        ev = pd.DataFrame({
            "event_id": [f"{kind}-{j}" for j in range(k)],
            "time": pd.to_datetime(imps["time"].to_numpy()[pick]) + pd.to_timedelta(rng.exponential(delay, k), unit="s"),
            "user": imps["user"].to_numpy()[pick], "item": imps["item"].to_numpy()[pick], "event": kind,
            "value": rng.gamma(2.0, 20.0, k) if kind == "purchase" else np.nan,
            "request_id": imps["request_id"].to_numpy()[pick],
        })
        stray = rng.random(k) < 0.05  # unknown request ids: counted, never attributed
        ev.loc[stray, "request_id"] = "no-such-request"
        rows.append(ev)
    events = pd.concat(rows, ignore_index=True)
    events["time"] = pd.to_datetime(events["time"], utc=True)
    return imps, events


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_metrics(args) -> dict:
    import persona as ps

    imps, events = synthetic_log(args.impressions, args.list, args.users, args.items, args.seed)
    pop = imps.groupby("item")["user"].nunique()
    pop.attrs["users"] = int(imps["user"].nunique())
    out = {"impressions": len(imps), "requests": int(imps["request_id"].nunique()), "outcomes": len(events)}
    for by in (("placement", "variant"), ("placement", "variant", "day")):
        s, res = best_of(lambda: ps.analytics.online_metrics(impressions=imps, events=events, by=by,
                                                              catalog=args.items, popularity=pop), args.repeat)
        out["s_by_" + "_".join(by)] = s
        out["groups_by_" + "_".join(by)] = len(res)
        out["unattributed"] = res.attrs["unattributed"]
        print(f"  online_metrics by {by}: {s:.2f} s for {len(imps):,} impressions ({len(res)} groups)", flush=True)
    s, _ = best_of(lambda: imps.groupby(["placement", "variant"]).agg(n=("item", "size"), users=("user", "nunique"),
                                                                      items=("item", "nunique")), args.repeat)
    out["s_plain_groupby"] = s
    print(f"  plain pandas group-by (no attribution): {s:.2f} s", flush=True)
    return out


def bench_read(args) -> dict:
    import pandas as pd

    import persona as ps

    n = args.read_impressions
    imps, events = synthetic_log(n, args.list, args.users, args.items, args.seed + 1)
    folder = tempfile.mkdtemp()
    store = ps.EventStore(os.path.join(folder, "events.db"), synchronous="normal", max_queue=200_000,
                          block_timeout=600)
    per = args.list  # synthetic_log writes each request's items next to each other
    rids = imps["request_id"].to_numpy()[::per].tolist()
    users = imps["user"].to_numpy()[::per].tolist()
    places = imps["placement"].to_numpy()[::per].tolist()
    variants = imps["variant"].to_numpy()[::per].tolist()
    times = (imps["time"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()[::per].tolist()
    lists = imps["item"].to_numpy().reshape(-1, per).tolist()
    t = time.perf_counter()
    for rid, user, items, place, variant, ts in zip(rids, users, lists, places, variants, times):
        store.log_impression(user, items, request_id=rid, placement=place, variant=variant,
                             model_version="ItemKNN@0123456789ab", timestamp=ts)
    queued_s = time.perf_counter() - t
    store.flush()
    write_s = time.perf_counter() - t
    for row in events.itertuples(index=False):
        store.track(int(row.user), int(row.item), row.event, timestamp=row.time.timestamp(),
                    value=None if row.value != row.value else float(row.value), event_id=row.event_id,
                    properties={"request_id": row.request_id})
    store.flush()
    read_s, back = best_of(store.impressions, args.repeat)
    metrics_s, res = best_of(lambda: ps.analytics.online_metrics(store, by=("placement", "variant"),
                                                                 catalog=args.items), args.repeat)
    store.close()
    out = {"impressions": len(back), "requests": int(back["request_id"].nunique()),
           "log_us_per_request": queued_s / len(rids) * 1e6, "log_and_flush_s": write_s, "read_s": read_s, "metrics_from_store_s": metrics_s,
           "clicks": int(res["clicks"].sum())}
    print(f"  store: logged {out['requests']:,} requests in {write_s:.1f} s ({out['log_us_per_request']:.0f} µs a "
          f"call in the caller); impressions() {read_s:.2f} s for "
          f"{len(back):,} rows; online_metrics(store) {metrics_s:.2f} s", flush=True)
    return out


def bench_serving(args) -> dict:
    import persona as ps

    shop = ps.datasets.synthetic_shop(n_users=args.shop_users, n_items=args.shop_items, seed=args.seed)
    model = ps.ItemKNN(k=50).fit(shop.interactions)
    folder = tempfile.mkdtemp()
    store = ps.EventStore(os.path.join(folder, "events.db"), synchronous="normal")
    services = {
        "no store": ps.serving.RecommenderService(model, cache_size=0),
        "store, impressions off": ps.serving.RecommenderService(model, store=store, cache_size=0, impressions=False),
        "store, every answer logged": ps.serving.RecommenderService(model, store=store, cache_size=0),
    }
    users = shop.interactions.user_ids
    rng = np.random.default_rng(args.seed)
    lat = {k: [] for k in services}
    ctx = {"placement": "home"}
    for svc in services.values():  # warm up
        for u in users[:200]:
            svc.recommend(u, n=10, context=ctx)
    names = list(services)
    for _ in range(args.requests):
        u = users[rng.integers(len(users))]
        for j in rng.permutation(len(names)):  # interleaved, in a random order: the same load for each
            name, svc = names[j], services[names[j]]
            t = time.perf_counter_ns()
            svc.recommend(u, n=10, context=ctx)
            lat[name].append(time.perf_counter_ns() - t)
    store.flush()
    logged = store.stats()["impressions_written"]
    store.close()
    out = {}
    for name, v in lat.items():
        a = np.asarray(v) / 1e3
        out[name] = {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)),
                     "mean_us": float(a.mean())}
        print(f"  recommend, {name}: p50 {out[name]['p50_us']:.0f} µs, p99 {out[name]['p99_us']:.0f} µs", flush=True)
    out["impressions_written"] = logged
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impressions", type=int, default=1_000_000)
    ap.add_argument("--read-impressions", type=int, default=200_000, help="impressions written to and read from SQLite")
    ap.add_argument("--list", type=int, default=10, help="items per answer")
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--shop-users", type=int, default=2000)
    ap.add_argument("--shop-items", type=int, default=500)
    ap.add_argument("--requests", type=int, default=5000, help="serving requests per configuration")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--part", choices=["metrics", "read", "serving"], nargs="*", default=["metrics", "read", "serving"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    if args.quick:
        args.impressions, args.read_impressions, args.requests, args.repeat = 50_000, 20_000, 500, 1
    result = {"machine": machine_facts(), "args": vars(args), "load_before": os.getloadavg()}
    if "metrics" in args.part:
        result["metrics"] = bench_metrics(args)
    if "read" in args.part:
        result["read"] = bench_read(args)
    if "serving" in args.part:
        result["serving"] = bench_serving(args)
    result["load_after"] = os.getloadavg()
    md = ["# Online loop (issue 15)", "",
          f"Load average before / after: {result['load_before'][0]:.2f} / {result['load_after'][0]:.2f} "
          f"({os.cpu_count()} cores)", ""]
    if "metrics" in result:
        m = result["metrics"]
        md += [f"## online_metrics over {m['impressions']:,} impressions ({m['requests']:,} requests, "
               f"{m['outcomes']:,} outcome events, {m['unattributed']:,} unattributed)", "",
               "| grouping | seconds |", "|---|---|",
               f"| placement, variant | {m['s_by_placement_variant']:.2f} |",
               f"| placement, variant, day | {m['s_by_placement_variant_day']:.2f} |",
               f"| plain pandas group-by, no attribution (floor) | {m['s_plain_groupby']:.2f} |", ""]
    if "read" in result:
        r = result["read"]
        md += [f"## SQLite store: {r['impressions']:,} impressions ({r['requests']:,} requests)", "",
               "| step | seconds |", "|---|---|",
               f"| log_impression in the caller (µs per request) | {r['log_us_per_request']:.0f} µs |",
               f"| log_impression + flush | {r['log_and_flush_s']:.2f} |",
               f"| store.impressions() | {r['read_s']:.2f} |",
               f"| online_metrics(store) | {r['metrics_from_store_s']:.2f} |", ""]
    if "serving" in result:
        s = result["serving"]
        md += ["## svc.recommend (ItemKNN, cache off, n=10), interleaved", "",
               "| service | p50 µs | p99 µs | mean µs |", "|---|---|---|---|"]
        md += [f"| {k} | {v['p50_us']:.0f} | {v['p99_us']:.0f} | {v['mean_us']:.0f} |"
               for k, v in s.items() if isinstance(v, dict)]
        md.append("")
    write_results(args.out, "online-quick" if args.quick else "online", result, "\n".join(md))


if __name__ == "__main__":
    main()
