"""Benchmark reading the event store back: ``store.events()`` now against the path before, in one run.

A SQLite store of ``--events`` events (default 1,000,000; 20,000 users, 5,000 items, views / carts /
purchases over a year) is written once with plain SQL in persona's format. Each event carries
properties: with ``--properties shop`` a channel and a device (12 distinct texts, as
``bench_analytics.py`` stores), with ``unique`` a request id and a position (every text distinct),
``mixed`` half of each. Each case runs in a fresh child process, so its peak memory is its own:

* ``old``: the reading path before (``tests/store_reference.py``: one list per column for the
  whole selection, ``json.loads`` per row, one DataFrame);
* ``events()``: the chunked path (a slice of the frame per 100,000 rows, properties parsed by the
  JSON scanner directly, flat repeated texts copied instead of parsed again);
* ``events(properties=False)``: without the properties column (not even read).

The frames of ``old`` and ``events()`` are checked equal on ``--check`` events first. Peak RSS is
the child's high-water mark, beside its RSS after importing pandas and opening the store.
Times are one run each; the load average (1, 5, 15 min) is read before and after each case.

    nice -n 10 python benchmarks/bench_store_read.py                    # ~2 minutes
    python benchmarks/bench_store_read.py --events 100000 --properties unique
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # store_reference.py: the reading path before

from common import write_results  # noqa: E402
from machine import machine_facts  # noqa: E402

T0 = 1_700_000_000.0


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def build(path: Path, n: int, properties: str, seed: int = 0) -> float:
    """Write ``n`` events in persona's format straight into a new store's table; seconds it took."""
    import numpy as np

    import persona as ps

    t = time.perf_counter()
    ps.EventStore(path, flush_at_exit=False).close()  # the tables, as persona creates them
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 20_000, n)
    items = rng.integers(0, 5_000, n)
    kinds = np.array(["view", "view", "view", "view", "cart", "purchase"])[rng.integers(0, 6, n)]
    ts = T0 + np.sort(rng.uniform(0, 365 * 86400, n))
    channel = np.array(["web", "app", "email", "ads"])[rng.integers(0, 4, n)]
    device = np.array(["mobile", "desktop", "tablet"])[rng.integers(0, 3, n)]
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    step = 100_000
    for s in range(0, n, step):
        rows = []
        for k in range(s, min(n, s + step)):
            unique = properties == "unique" or (properties == "mixed" and k % 2)
            props = ({"request_id": f"{k:032x}", "position": int(k % 10) + 1} if unique else
                     {"channel": str(channel[k]), "device": str(device[k])})
            rows.append((f"e{k:09d}", float(ts[k]), f"u{users[k]}", f"i{items[k]}", str(kinds[k]),
                         19.9 if kinds[k] == "purchase" else None,
                         json.dumps(props, separators=(",", ":")), 0))
        conn.executemany("INSERT INTO persona_events (event_id, ts, user_id, item_id, event, value, properties,"
                         " kinds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.commit()
    conn.close()
    return time.perf_counter() - t


def hwm_mib() -> float:
    """This process's peak resident memory (VmHWM: reset at exec, unlike ru_maxrss, which a child
    inherits from the process that forked it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(path: str, case: str) -> dict:
    """Run one case in this (fresh) process: seconds, rows and peak RSS."""
    import pandas  # noqa: F401 - imported before the baseline, as in any analysis

    import persona as ps
    from store_reference import old_events

    store = ps.EventStore(path, flush_at_exit=False)
    base = hwm_mib()
    before = loadavg()
    t = time.perf_counter()
    if case == "old":
        df = old_events(store)
    elif case == "events()":
        df = store.events()
    else:
        df = store.events(properties=False)
    seconds = time.perf_counter() - t
    peak = hwm_mib()
    frame_mib = df.memory_usage(deep=True).sum() / 2**20
    store.close()
    return {"case": case, "seconds": seconds, "rows": len(df), "peak_rss_mib": peak, "rss_before_mib": base,
            "frame_mib": frame_mib, "load_before": before, "load_after": loadavg()}


def check_equal(path: Path, n_check: int) -> None:
    import pandas as pd

    import persona as ps
    from store_reference import old_events

    store = ps.EventStore(path, flush_at_exit=False)
    until = store.events(properties=False)["time"].iloc[min(n_check, store.count()) - 1] + pd.Timedelta(1, "us")
    pd.testing.assert_frame_equal(store.events(until=until), old_events(store, until=until))
    store.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--properties", choices=["shop", "unique", "mixed"], default="shop")
    ap.add_argument("--check", type=int, default=100_000, help="events checked equal between the paths")
    ap.add_argument("--dir", type=Path, default=None, help="where the store is written (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--name", default=None, help="result file stem (default: store-read-<properties>)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "events.db"
        built = build(path, args.events, args.properties)
        print(f"store of {args.events:,} events written in {built:.1f} s ({path.stat().st_size / 2**20:.0f} MiB)",
              flush=True)
        check_equal(path, args.check)
        print(f"events() == the old path on the first {args.check:,} events", flush=True)
        rows = []
        for case in ("old", "events()", "events(properties=False)"):
            out = subprocess.run([sys.executable, __file__, "--child", str(path), case], check=True,
                                 capture_output=True, text=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"  {case}: {row['seconds']:.2f} s, peak RSS {row['peak_rss_mib']:.0f} MiB "
                  f"(load {row['load_before']} -> {row['load_after']})", flush=True)
    facts = machine_facts()
    import pandas as pd

    old = rows[0]
    lines = [f"# Reading {args.events:,} events back from SQLite ({args.properties} properties)", "",
             f"{facts['cores']} cores, Python {facts['python']}, pandas {pd.__version__}, SQLite "
             f"{sqlite3.sqlite_version}. One run per case, each in a fresh process (peak RSS is its own; "
             f"RSS after importing pandas and opening the store beside it). The frames of the old path and "
             f"events() were checked equal on the first {args.check:,} events.", "",
             "| case | seconds | x faster than old | peak RSS MiB | RSS before MiB | frame MiB | load before | "
             "load after |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['seconds']:.2f} | {old['seconds'] / r['seconds']:.2f} | "
                     f"{r['peak_rss_mib']:.0f} | {r['rss_before_mib']:.0f} | {r['frame_mib']:.0f} | "
                     f"{r['load_before']} | {r['load_after']} |")
    payload = {"events": args.events, "properties": args.properties, "rows": rows, "machine": facts,
               "store_build_s": built}
    write_results(args.out, args.name or f"store-read-{args.properties}", payload, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
