"""Benchmark the privacy extras (issue 16): what the consent registry costs a request, what a purge
costs and whether it holds up tracking, and how long a subject-access export takes. One run:

* ``consent``: ``svc.recommend`` p50 / p99 with the store's consent registry consulted on every
  request (``store.has_consent(user, "personalisation")``) against the same service with the
  registry switched off, requests of both interleaved in random order; with 0 and with
  ``--withdrawn`` users who withdrew personalisation, plain and pseudonymised stores. ALS (32
  factors) on the synthetic shop, no cache, no impressions, so the request path itself is timed.
* ``purge``: a SQLite store of ``--events`` events over a year (``bench_store_read.build``); half
  of them deleted by ``store.purge(before=...)`` in the caller; then the same on a fresh copy by the
  writer thread's schedule (``retention_days``) while another thread calls ``track()`` 2,000 times a
  second: the ``track()`` latency p50 / p99 / max during the purge, events dropped, and how long
  the purge took.
* ``export``: ``store.export_user`` of one user (about 50 events) in that store.

    nice -n 10 python benchmarks/bench_privacy.py                 # ~3 minutes
    python benchmarks/bench_privacy.py --events 100000 --requests 2000
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import persona as ps  # noqa: E402
from bench_store_read import T0, build, loadavg  # noqa: E402
from common import write_results  # noqa: E402
from machine import machine_facts  # noqa: E402
from persona.serving import RecommenderService  # noqa: E402
from persona.store import EventStore  # noqa: E402


class NoRegistry(EventStore):
    """The same store with the consent registry switched off (the service then never asks it)."""

    has_consent = None


def _withdraw(path: Path, store: EventStore, users: list) -> None:
    """Record ``users`` as having withdrawn personalisation, in one transaction (as set_consent would)."""
    b = store._backend
    rows = [(store.pseudonym(u) if store.pseudonymizes else str(u), "personalisation", 0, time.time(), "bench")
            for u in users]
    conn = sqlite3.connect(path)
    conn.executemany(f"INSERT INTO {b.consent} (user_id, purpose, granted, at, source) VALUES (?, ?, ?, ?, ?)", rows)
    conn.executemany(f"INSERT INTO {b.consent_log} (user_id, purpose, granted, at, source) VALUES (?, ?, ?, ?, ?)",
                     rows)
    conn.commit()
    conn.close()


def consent_case(tmp: Path, shop, model, n_requests: int, withdrawn: int, key: bytes | None, seed: int) -> dict:
    path = tmp / f"consent-{withdrawn}-{key is not None}.db"
    on = EventStore(path, pseudonymize_key=key, flush_at_exit=False)
    off = NoRegistry(path, pseudonymize_key=key, flush_at_exit=False)
    rng = np.random.default_rng(seed)
    raw = model.user_map_.ids.tolist()  # requests name users by the shop's ids
    if key is not None:  # a model trained on a pseudonymising store knows users by pseudonym
        ev = shop.events.assign(user_id=[on.pseudonym(u) for u in shop.events["user_id"].tolist()])
        model = ps.ALS(factors=32, iterations=3, random_state=0).fit(
            ps.Interactions.from_frame(ev, user="user_id", item="item_id", time="timestamp", event="event"))
    if withdrawn:
        _withdraw(path, on, raw[-withdrawn:])
    services = {"registry on": RecommenderService(model, store=on, cache_size=0, impressions=False),
                "registry off": RecommenderService(model, store=off, cache_size=0, impressions=False)}
    for svc in services.values():  # warm: the first request of a purpose reads the registry
        for u in raw[:50]:
            svc.recommend(u, n=10)
    lat = {name: [] for name in services}
    names = list(services)
    before = loadavg()
    for _ in range(n_requests):
        name = names[int(rng.integers(2))]
        u = raw[int(rng.integers(len(raw)))]  # some of them withdrew: answered by popularity when on
        t = time.perf_counter_ns()
        services[name].recommend(u, n=10)
        lat[name].append(time.perf_counter_ns() - t)
    after = loadavg()
    out = {"withdrawn": withdrawn, "pseudonymized": key is not None, "load_before": before, "load_after": after,
           "no_consent_answers": services["registry on"].stats()["reasons"].get("no consent", 0)}
    for name, xs in lat.items():
        a = np.asarray(xs) / 1e3
        out[name] = {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)),
                     "mean_us": float(a.mean()), "requests": len(a)}
    for svc in services.values():
        svc.close()
    on.close()
    off.close()
    return out


def purge_cases(tmp: Path, n_events: int) -> list:
    base = tmp / "purge-base.db"
    built = build(base, n_events, "shop")
    rows = []
    half = T0 + 182.5 * 86400  # the events span a year from T0: half are older than this
    # 1. in the caller
    path = tmp / "purge-now.db"
    shutil.copy(base, path)
    with EventStore(path, flush_at_exit=False) as store:
        before = loadavg()
        t = time.perf_counter()
        done = store.purge(before=half)
        rows.append({"case": "store.purge(before=...) in the caller", "seconds": time.perf_counter() - t,
                     "deleted": done["events"], "left": store.count(), "load_before": before, "load_after": loadavg()})
    # 2. on the writer's schedule, while the shop tracks
    path = tmp / "purge-scheduled.db"
    shutil.copy(base, path)
    days = (time.time() - half) / 86400.0
    with EventStore(path, flush_at_exit=False, retention_days=days, purge_every=3600) as store:
        lat: list = []
        stop = threading.Event()

        def shop():
            k = 0
            while not stop.is_set():
                t0 = time.perf_counter_ns()
                store.track(f"live-{k % 500}", f"i{k % 5000}", "view")
                lat.append(time.perf_counter_ns() - t0)
                k += 1
                time.sleep(0.0005)

        before = loadavg()
        t = time.perf_counter()
        worker = threading.Thread(target=shop)
        worker.start()
        while store.stats()["purges"] == 0 and time.perf_counter() - t < 600:
            time.sleep(0.05)
        purge_s = time.perf_counter() - t
        stop.set()
        worker.join()
        store.flush()
        st = store.stats()
        a = np.asarray(lat) / 1e3
        rows.append({"case": f"scheduled (retention_days, purge_batch {10_000:,}) while track() runs",
                     "seconds": purge_s, "deleted": st["purged_events"], "left": store.count(),
                     "tracks": len(a), "track_p50_us": float(np.percentile(a, 50)),
                     "track_p99_us": float(np.percentile(a, 99)), "track_max_ms": float(a.max() / 1e3),
                     "dropped": st["dropped"], "load_before": before, "load_after": loadavg()})
        t = time.perf_counter()
        got = store.export_user("u0")
        rows.append({"case": "export_user (one user)", "seconds": time.perf_counter() - t,
                     "events": got["counts"]["events"], "load_before": loadavg(), "load_after": loadavg()})
    return rows, built


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=20_000, help="requests per consent case (both services)")
    ap.add_argument("--withdrawn", type=int, default=2_000, help="users who withdrew, of the shop's users")
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--name", default="privacy")
    args = ap.parse_args(argv)
    shop = ps.datasets.synthetic_shop(n_users=5000, n_items=2000, seed=0)
    model = ps.ALS(factors=32, iterations=3, random_state=0).fit(shop.interactions)
    consent = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        for withdrawn, key in ((0, None), (args.withdrawn, None), (args.withdrawn, b"k" * 32)):
            row = consent_case(tmp, shop, model, args.requests, withdrawn, key, seed=len(consent))
            consent.append(row)
            print(f"  consent: withdrawn {withdrawn}, pseudonymised {key is not None}: on p50 "
                  f"{row['registry on']['p50_us']:.0f} us, off {row['registry off']['p50_us']:.0f} us "
                  f"(load {row['load_before']} -> {row['load_after']})", flush=True)
        purge, built = purge_cases(tmp, args.events)
        for r in purge:
            print(f"  {r['case']}: {r['seconds']:.3f} s (load {r['load_before']} -> {r['load_after']})", flush=True)
    facts = machine_facts()
    lines = ["# Privacy extras: the consent registry on the request path, purges, subject-access export", "",
             f"{facts['cores']} cores, Python {facts['python']}. ALS (32 factors) on the synthetic shop (5,000 users, "
             f"2,000 items); {args.requests:,} requests per case, the two services interleaved at random, no cache, "
             "no impressions logged. Load averages (1, 5, 15 min) before and after each case.", "",
             "| users who withdrew | pseudonymised | registry on p50 us | off p50 us | on p99 us | off p99 us | load |",
             "|---|---|---|---|---|---|---|"]
    for r in consent:
        on, off = r["registry on"], r["registry off"]
        lines.append(f"| {r['withdrawn']:,} | {r['pseudonymized']} | {on['p50_us']:.0f} | {off['p50_us']:.0f} | "
                     f"{on['p99_us']:.0f} | {off['p99_us']:.0f} | {r['load_before']} -> {r['load_after']} |")
    lines += ["", f"A SQLite store of {args.events:,} events over a year (written in {built:.0f} s); half of them "
              "older than the cutoff.", "",
              "| case | seconds | deleted / events | left | track() p50 us | p99 us | max ms | dropped | load |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in purge:
        lines.append(f"| {r['case']} | {r['seconds']:.3f} | {r.get('deleted', r.get('events', ''))} | "
                     f"{r.get('left', '')} | {r.get('track_p50_us', float('nan')):.0f} | "
                     f"{r.get('track_p99_us', float('nan')):.0f} | {r.get('track_max_ms', float('nan')):.1f} | "
                     f"{r.get('dropped', '')} | {r['load_before']} -> {r['load_after']} |")
    write_results(args.out, args.name, {"consent": consent, "purge": purge, "machine": facts,
                                        "events": args.events}, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
