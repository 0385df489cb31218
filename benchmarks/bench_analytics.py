"""Benchmark persona.analytics on a million events: seconds per million events for each analysis and the report.

The events are the synthetic shop's (a fixed seed), cut to ``--events`` rows, with a ``channel`` and a
``device`` per session; the users table gives ``segment``. Steps:

* ``store``: the events written to a SQLite EventStore (``import_frame``, not timed as analytics),
  then ``store.events()`` and ``event_table(store)`` -- what ``persona report --store`` reads;
* ``event_table``: the frame resolved into arrays (what every analysis does first);
* each analysis on the resolved table (best of ``--repeat``): funnel (plain, by week, by an event
  column, by a user feature), cohort retention, RFM, trends (items, categories), basket rules (per
  user, per session), summary + activity;
* the whole report (every section and chart) from the frame, and from the store;
* the peers, in the same run: the funnel and the pair counts of the basket rules written in plain
  pandas (a merge per step; a self-merge of baskets), checked equal to persona's.

Every timing stands beside the load average read before and after it (a shared machine).

    nice -n 10 python benchmarks/bench_analytics.py                  # 1M events, ~3 minutes
    python benchmarks/bench_analytics.py --events 100000 --no-store  # a smoke test
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import persona as ps  # noqa: E402
from persona import analytics as pa  # noqa: E402
from common import write_results  # noqa: E402
from machine import machine_facts  # noqa: E402


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def make_events(n_events: int, seed: int):
    """The synthetic shop's events (enough users for ``n_events``), a channel and a device per session."""
    per_user = 48  # the shop's mean events per user
    shop = ps.datasets.synthetic_shop(n_users=int(n_events / per_user * 1.05) + 50, n_items=5000, seed=seed)
    ev = shop.events.iloc[:n_events].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    sessions, inverse = np.unique(ev["session_id"].to_numpy(), return_inverse=True)
    channel = rng.choice(np.array(["web", "app", "email", "ads"], dtype=object), size=len(sessions),
                         p=[0.5, 0.3, 0.1, 0.1])
    device = rng.choice(np.array(["mobile", "desktop", "tablet"], dtype=object), size=len(sessions), p=[0.6, 0.3, 0.1])
    ev["channel"] = channel[inverse]
    ev["device"] = device[inverse]
    return shop, ev


def pandas_funnel(ev: pd.DataFrame, steps) -> list[int]:
    """The funnel rule in plain pandas: per step, join the previous step's first time and keep later events."""
    ev = ev[["user_id", "event", "timestamp"]]
    first = ev[ev["event"] == steps[0]].groupby("user_id", observed=True)["timestamp"].min()
    out = [len(first)]
    for step in steps[1:]:
        cand = ev[ev["event"] == step].merge(first.rename("prev"), left_on="user_id", right_index=True)
        first = cand[cand["timestamp"] >= cand["prev"]].groupby("user_id", observed=True)["timestamp"].min()
        out.append(len(first))
    return out


def pandas_pairs(ev: pd.DataFrame, min_count: int) -> int:
    """Co-purchase pair counts by a self-merge of the baskets (users' purchases), frequent items only."""
    buys = ev.loc[ev["event"] == "purchase", ["user_id", "item_id"]].drop_duplicates()
    counts = buys["item_id"].value_counts()
    buys = buys[buys["item_id"].isin(counts.index[counts >= min_count])]
    pairs = buys.merge(buys, on="user_id")
    pairs = pairs[pairs["item_id_x"] != pairs["item_id_y"]]
    both = pairs.groupby(["item_id_x", "item_id_y"], observed=True).size()
    return int((both >= min_count).sum())


def run(args) -> dict:
    rows = []
    n = args.events

    def step(name, fn, repeat=1, peer=False):
        before = loadavg()
        best = np.inf
        value = None
        for _ in range(repeat):
            t = time.perf_counter()
            value = fn()
            best = min(best, time.perf_counter() - t)
        row = {"step": name, "seconds": best, "s_per_million": best * 1e6 / n, "repeat": repeat, "peer": peer,
               "load_before": before, "load_after": loadavg()}
        rows.append(row)
        print(f"  {name:<44} {best:8.3f} s  ({row['s_per_million']:.3f} s / M events)   load {before} -> "
              f"{row['load_after']}", flush=True)
        return value

    t = time.perf_counter()
    shop, ev = make_events(n, args.seed)
    n = len(ev)
    print(f"{n:,} events, {ev['user_id'].nunique():,} users, {ev['item_id'].nunique():,} items "
          f"(generated in {time.perf_counter() - t:.1f} s); load {loadavg()}", flush=True)
    table = step("event_table(frame)", lambda: pa.event_table(ev), args.repeat)
    r = args.repeat
    f = step("funnel", lambda: pa.funnel(table), r)
    step("funnel by='week'", lambda: pa.funnel(table, by="week"), r)
    step("funnel by='channel' (event column)", lambda: pa.funnel(table, by="channel"), r)
    step("funnel by='segment' (user feature)", lambda: pa.funnel(table, by="segment", user_features=shop.users), r)
    peer = step("peer: funnel in plain pandas", lambda: pandas_funnel(ev, ("view", "cart", "purchase")), r,
                peer=True)
    if peer != f["users"].tolist():
        raise SystemExit(f"the pandas funnel {peer} differs from persona's {f['users'].tolist()}")
    step("cohort_retention (week)", lambda: pa.cohort_retention(table, "week"), r)
    step("rfm_table", lambda: pa.rfm_table(table), r)
    step("trends (items)", lambda: pa.trends(table), r)
    step("trends (categories)", lambda: pa.trends(table, level="category", categories=shop.items), r)
    rules = step("basket_rules (user baskets, all pairs)",
                 lambda: pa.basket_rules(table, min_support=0.0, min_count=2, min_lift=0.0, top_k=None), r)
    peer_pairs = step("peer: pair counts by a pandas self-merge", lambda: pandas_pairs(ev, 2), r, peer=True)
    if peer_pairs != len(rules):
        raise SystemExit(f"the pandas pair count {peer_pairs} differs from persona's {len(rules)} rules")
    step("basket_rules (session baskets)", lambda: pa.basket_rules(table, basket="session_id"), r)
    step("summary + activity", lambda: (pa.summary(table), pa.activity(table)), r)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.html"
        step("report(frame): every section and chart", lambda: pa.report(
            ev, out, categories=shop.items, by="segment", user_features=shop.users))
        size = out.stat().st_size
        if not args.no_store:
            db = Path(tmp) / "events.db"
            t = time.perf_counter()
            with ps.EventStore(db, synchronous="normal", flush_at_exit=False) as store:
                cols = ["user_id", "item_id", "event", "timestamp", "value"]
                props = [{"channel": c, "device": d} for c, d in zip(ev["channel"], ev["device"])]
                store.import_frame(ev[cols].assign(properties=props), user="user_id", item="item_id",
                                   event="event", time="timestamp", value="value", properties="properties")
                store.flush()
                print(f"  (store written in {time.perf_counter() - t:.1f} s, {db.stat().st_size / 2**20:.0f} MiB)",
                      flush=True)
                step("store.events() (read the store)", lambda: store.events())
                step("event_table(store)", lambda: pa.event_table(store))
                step("report(store): read + every section and chart", lambda: pa.report(
                    store, out, categories=shop.items, by="device"))
    return {"events": n, "users": int(ev["user_id"].nunique()), "items": int(ev["item_id"].nunique()),
            "report_bytes": size, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rows": rows}


def markdown(res: dict, facts: dict) -> str:
    lines = [f"# persona.analytics on {res['events']:,} events", "",
             f"{res['users']:,} users, {res['items']:,} items (synthetic shop, seed {res['seed']}); "
             f"{facts['cores']} cores, Python {facts['python']}, numpy {facts['numpy']}, scipy {facts['scipy']}, "
             f"pandas {pd.__version__}. Peak RSS {res['peak_rss_mib']:.0f} MiB; the report from the frame is "
             f"{res['report_bytes'] / 1024:.0f} KiB. Times: best of {res['repeat']} for the analyses, one run for "
             f"the store and the report; load averages (1, 5, 15 min) read before and after each step.", "",
             "| step | seconds | seconds per million events | load before | load after |", "|---|---|---|---|---|"]
    for row in res["rows"]:
        lines.append(f"| {row['step']} | {row['seconds']:.3f} | {row['s_per_million']:.3f} | {row['load_before']} | "
                     f"{row['load_after']} |")
    by = {r["step"]: r["seconds"] for r in res["rows"]}
    funnel_ratio = by["peer: funnel in plain pandas"] / by["funnel"]
    pairs_ratio = by["peer: pair counts by a pandas self-merge"] / by["basket_rules (user baskets, all pairs)"]
    lines += ["", f"Peers in the same run (same results, checked): plain-pandas funnel {funnel_ratio:.1f}x persona's "
              f"time; pandas self-merge pair counts {pairs_ratio:.1f}x persona's sparse product.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs per analysis")
    p.add_argument("--no-store", action="store_true", help="skip the SQLite store steps")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--stem", default="analytics")
    args = p.parse_args(argv)
    facts = machine_facts()
    res = run(args)
    res.update(seed=args.seed, repeat=args.repeat, machine=facts, pid=os.getpid())
    write_results(args.out, args.stem, res, markdown(res, facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
