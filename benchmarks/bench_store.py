"""Benchmark event ingestion: persona.store (SQLite and PostgreSQL) against a write per event, in one run.

What a shop's request handler sees and what the database sustains:

* ``sustained``: every writer process calls ``track()`` as fast as it can for ``--seconds``, with
  ``on_full="block"`` and a queue of 10,000 events (so the queue cannot hide a slow writer: it fills
  within a second and back-pressure bounds the rate to what is committed), then ``flush()``.
  Throughput = events committed / wall time until the last flush.
  Run with 1 and with 4 processes appending to the same store.
* ``paced``: one process tracks at ``--rate`` events/s (a busy shop, well below saturation): the
  ``track()`` latency a request pays, p50 / p99.
* ``direct`` (the peer): what one would write without persona -- one INSERT and one COMMIT per event,
  in the caller, with the same durability settings. Same rates and latencies, and the ratio.

Durability as documented in docs/store.md: ``--synchronous full`` (default; SQLite fsyncs its WAL at
every commit, PostgreSQL ``synchronous_commit=on``) and optionally ``normal``. The PostgreSQL server
is a throwaway one started from the machine's packages (tests/pgserver.py) with its default
durability (fsync on). Writes JSON and a Markdown table to ``benchmarks/results/store*.{json,md}``.

    python benchmarks/bench_store.py                       # ~1.5 minutes
    python benchmarks/bench_store.py --quick               # a smoke test
    python benchmarks/bench_store.py --backend sqlite --synchronous full normal
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # pgserver.py: the throwaway PostgreSQL server

from machine import machine_facts  # noqa: E402

N_USERS, N_ITEMS = 5_000, 20_000
EVENTS = ("view", "view", "view", "click", "cart", "purchase")


def _percentiles(lat_ns: list) -> dict:
    if not lat_ns:
        return {"p50_us": None, "p99_us": None, "max_us": None}
    import numpy as np

    a = np.asarray(lat_ns, dtype=np.float64) / 1e3
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)),
            "max_us": float(a.max())}


def _direct_writer(backend: str, target: str, table: str, synchronous: str):
    """The peer: one INSERT + COMMIT per event, in the caller's thread."""
    if backend == "sqlite":
        conn = sqlite3.connect(target, timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        sql = (f"INSERT OR IGNORE INTO {table} (event_id, ts, user_id, item_id, event, value, properties, kinds)"
               f" VALUES (?, ?, ?, ?, ?, NULL, NULL, 0)")

        def write(u, i, ev):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(sql, (uuid.uuid4().hex, time.time(), u, i, ev))
            conn.execute("COMMIT")
    else:
        import psycopg

        conn = psycopg.connect(target, autocommit=True)
        conn.execute("SET synchronous_commit = " + ("off" if synchronous == "normal" else "on"))
        sql = (f"INSERT INTO {table} (event_id, ts, user_id, item_id, event, kinds)"
               f" VALUES (%s, to_timestamp(%s), %s, %s, %s, 0) ON CONFLICT (event_id) DO NOTHING")

        def write(u, i, ev):
            conn.execute(sql, (uuid.uuid4().hex, time.time(), u, i, ev))  # autocommit: one commit each
    return write, conn.close


def _worker(spec: dict, ready, go, results) -> None:
    """One writer process: track (or write directly) for spec['seconds'], then report."""
    from persona.store import EventStore

    wid = spec["worker"]
    users = [f"user-{(wid * 7919 + k) % N_USERS}" for k in range(N_USERS)]
    items = [f"item-{(wid * 104729 + k * 31) % N_ITEMS}" for k in range(N_ITEMS)]
    store = None
    if spec["mode"] == "direct":
        write, finish = _direct_writer(spec["backend"], spec["target"], spec["table"], spec["synchronous"])
    else:
        store = EventStore(spec["target"], table=spec["table"], synchronous=spec["synchronous"],
                           max_queue=spec["max_queue"], batch_size=spec["batch_size"], on_full="block")
        write, finish = store.track, store.close
    rate = spec.get("rate")
    lat = []
    ready.put(wid)
    go.wait()
    t0 = time.time()
    p0 = time.perf_counter()
    end = p0 + spec["seconds"]
    n = 0
    clock = time.perf_counter_ns
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if rate:
            due = p0 + n / rate
            if due > now:
                time.sleep(due - now)
        a = clock()
        write(users[n % N_USERS], items[(n * 7) % N_ITEMS], EVENTS[n % len(EVENTS)])
        lat.append(clock() - a)
        n += 1
    track_s = time.perf_counter() - p0
    if store is not None:
        store.flush()
        stats = store.stats()
    else:
        stats = {"written": n, "batches": n}
    t1 = time.time()
    finish()
    results.put({"worker": wid, "n": n, "t0": t0, "t1": t1, "track_s": track_s, "stats": stats,
                 **_percentiles(lat)})


def run_case(backend: str, target: str, mode: str, procs: int, seconds: float, synchronous: str,
             rate: float | None = None, batch_size: int = 1000, max_queue: int = 10_000) -> dict:
    from persona.store import EventStore

    table = f"bench_{uuid.uuid4().hex[:10]}"
    if backend == "sqlite":
        target = os.path.join(target, f"{table}.db")
    EventStore(target, table=table).close()  # create the table before the clock starts
    ctx = mp.get_context("spawn")
    ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    specs = [dict(backend=backend, target=target, table=table, mode=mode, seconds=seconds, synchronous=synchronous,
                  rate=rate, batch_size=batch_size, max_queue=max_queue, worker=w) for w in range(procs)]
    workers = [ctx.Process(target=_worker, args=(s, ready, go, results)) for s in specs]
    for w in workers:
        w.start()
    for _ in workers:
        ready.get(timeout=120)
    go.set()
    out = [results.get(timeout=seconds + 300) for _ in workers]
    for w in workers:
        w.join(60)
    with EventStore(target, table=table) as check:
        stored = check.count()
    total = sum(r["n"] for r in out)
    wall = max(r["t1"] for r in out) - min(r["t0"] for r in out)
    batches = sum(r["stats"]["batches"] for r in out)
    row = {
        "backend": backend, "mode": mode, "procs": procs, "synchronous": synchronous, "rate": rate,
        "events": total, "stored": stored, "wall_s": wall, "events_per_s": total / wall if wall > 0 else None,
        "mean_batch": total / batches if batches else None,
        # latency: the worst worker's percentiles (what the slowest request handler saw)
        "track_p50_us": max(r["p50_us"] for r in out), "track_p99_us": max(r["p99_us"] for r in out),
        "track_max_us": max(r["max_us"] for r in out),
    }
    if stored != total:
        row["error"] = f"stored {stored} events, tracked {total}"
    if backend == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(target + suffix):
                os.remove(target + suffix)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"])
    ap.add_argument("--synchronous", nargs="+", choices=["full", "normal"], default=["full"])
    ap.add_argument("--procs", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per sustained case")
    ap.add_argument("--rate", type=float, default=1000.0, help="events/s of the paced latency case")
    ap.add_argument("--dir", type=Path, default=None,
                    help="folder for the SQLite files (default: a temporary folder under /tmp)")
    ap.add_argument("--quick", action="store_true", help="1.5 s per case, a smoke test")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--name", default=None, help="result file stem (default: store or store-quick)")
    args = ap.parse_args(argv)
    seconds = 1.5 if args.quick else args.seconds
    paced_s = 1.5 if args.quick else min(3.0, args.seconds)

    folder = Path(tempfile.mkdtemp(prefix="persona-bench-store-", dir=args.dir))
    pg = None
    rows = []
    try:
        targets = {}
        if "sqlite" in args.backend:
            targets["sqlite"] = str(folder)
        if "postgres" in args.backend:
            from pgserver import ThrowawayPostgres

            pg = ThrowawayPostgres().start()
            targets["postgres"] = pg.url
        for backend, target in targets.items():
            for sync in args.synchronous:
                for mode in ("store", "direct"):
                    for procs in args.procs:
                        rows.append(run_case(backend, target, mode, procs, seconds, sync))
                        _print_row(rows[-1])
                    rows.append(run_case(backend, target, mode, 1, paced_s, sync, rate=args.rate))
                    _print_row(rows[-1])
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(folder, ignore_errors=True)

    facts = machine_facts()
    facts["load_average_at_end"] = list(os.getloadavg())
    facts["sqlite"] = sqlite3.sqlite_version
    facts["sqlite_dir_fs"] = _fs_type(folder.parent)
    try:
        import psycopg

        facts["psycopg"] = psycopg.__version__
    except ImportError:
        pass
    if pg is not None:
        facts["postgresql"] = str(pg.bin)
    ratios = _ratios(rows)
    name = args.name or ("store-quick" if args.quick else "store")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps({"machine": facts, "seconds": seconds, "rows": rows,
                                                       "ratios": ratios}, indent=2))
    md = _markdown(rows, ratios, facts, seconds)
    (args.out / f"{name}.md").write_text(md)
    print()
    print(md)
    return 1 if any("error" in r for r in rows) else 0


def _ratios(rows: list) -> list:
    """persona.store / direct, for throughput (higher is better) and latency (lower is better)."""
    out = []
    key = lambda r: (r["backend"], r["synchronous"], r["procs"], r["rate"])  # noqa: E731
    direct = {key(r): r for r in rows if r["mode"] == "direct"}
    for r in rows:
        d = direct.get(key(r)) if r["mode"] == "store" else None
        if d:
            out.append({"backend": r["backend"], "synchronous": r["synchronous"], "procs": r["procs"],
                        "rate": r["rate"],
                        "throughput_x": r["events_per_s"] / d["events_per_s"] if d["events_per_s"] else None,
                        "p99_ratio": r["track_p99_us"] / d["track_p99_us"] if d["track_p99_us"] else None})
    return out


def _print_row(r: dict) -> None:
    what = f"paced {r['rate']:.0f}/s" if r["rate"] else f"{r['procs']} proc"
    print(f"{r['backend']:8s} {r['synchronous']:6s} {r['mode']:6s} {what:12s} {r['events_per_s']:>10,.0f} ev/s  "
          f"p50 {r['track_p50_us']:8.1f} us  p99 {r['track_p99_us']:9.1f} us  mean batch {r['mean_batch']:7.1f}"
          + (f"  ERROR {r['error']}" if "error" in r else ""), flush=True)


def _markdown(rows: list, ratios: list, facts: dict, seconds: float) -> str:
    lines = [
        "# Event ingestion: persona.store vs one commit per event",
        "",
        f"{seconds:g} s per sustained case (track as fast as possible, on_full='block', max_queue=10,000, then "
        f"flush); paced = one "
        f"process at a fixed rate. `direct` = one INSERT + COMMIT per event in the caller, same durability. "
        f"Latency = time inside `track()` (or the direct write) as the caller sees it; worst worker's percentile.",
        "",
        "| backend | synchronous | writer | load | events/s | track p50 (us) | track p99 (us) | mean batch "
        "| stored = tracked |",
        "|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        load = f"paced {r['rate']:.0f}/s" if r["rate"] else f"{r['procs']} process" + ("es" if r["procs"] > 1 else "")
        writer = "persona.store" if r["mode"] == "store" else "direct"
        lines.append(
            f"| {r['backend']} | {r['synchronous']} | {writer} | {load} | {r['events_per_s']:,.0f} | "
            f"{r['track_p50_us']:.1f} | {r['track_p99_us']:.1f} | {r['mean_batch']:.1f} | "
            f"{'yes' if 'error' not in r else r['error']} |"
        )
    if ratios:
        lines += ["", "| backend | synchronous | load | throughput store / direct | p99 store / direct |",
                  "|---|---|---|---:|---:|"]
        for q in ratios:
            load = f"paced {q['rate']:.0f}/s" if q["rate"] else f"{q['procs']} proc"
            lines.append(f"| {q['backend']} | {q['synchronous']} | {load} | {q['throughput_x']:.1f}x | "
                         f"{q['p99_ratio']:.3f} |")
    lines += ["", "Machine: " + ", ".join(f"{k}={facts.get(k)}" for k in
                                          ("processor", "cores", "python", "sqlite", "sqlite_dir_fs", "psycopg",
                                           "postgresql", "load_average_at_end"))]
    return "\n".join(lines) + "\n"


def _fs_type(path: Path) -> str:
    try:
        best, fstype = "", "?"
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], parts[2]
        return fstype
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
