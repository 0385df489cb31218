"""Benchmark serving inside web processes: latency under load with hot swaps, and shared memory.

A factor model (ALS, 64 factors) over a large catalogue (default 100k items, 50k users) is saved
twice (two seeds) as artifacts with a built HNSW index. Then:

- ``inproc``: a :class:`persona.serving.RecommenderService` loads the first artifact
  memory-mapped; ``--clients`` threads call ``service.recommend`` for random known users for
  ``--seconds`` while a swapper thread reloads the other artifact every ``--swap-every`` seconds.
  Reported: requests/s, p50/p99 latency, errors (must be 0), swaps. Also one client alone (the
  latency a request sees without queueing behind others on the 2 cores), with exact scoring and
  with the HNSW index, and the same model called directly (``model.recommend``), the peer.
- ``http``: the same load through the Flask integration on loopback (``--http``), served by a
  threaded WSGI server in a subprocess, with the service watching the artifact path while a
  publisher re-saves a model there every ``--swap-every`` seconds.
- ``memory``: ``--workers`` processes load the artifact (memory-mapped, then copied into memory)
  and serve requests; their resident (RSS) and proportional (PSS, shared pages divided among
  the sharers) memory is read from ``/proc/<pid>/smaps_rollup``.

    python benchmarks/bench_serving.py                   # everything (a few minutes on 2 cores)
    python benchmarks/bench_serving.py --quick           # 20k items, short runs: a smoke test
    python benchmarks/bench_serving.py --parts inproc memory
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

import persona as ps  # noqa: E402
from datagen import power_law_matrix  # noqa: E402
from machine import machine_facts  # noqa: E402


def build_models(args, folder: Path) -> tuple[Path, Path, np.ndarray]:
    """Two ALS artifacts (seeds 0 and 1) with built HNSW indexes; returns their paths and user ids."""
    m = power_law_matrix(args.users, args.items, args.nnz, seed=0)
    users, items = m.nonzero()
    inter = ps.Interactions.from_records(
        list(zip((f"u{u}" for u in users), (f"i{i}" for i in items))))
    paths = []
    for seed in (0, 1):
        t = time.perf_counter()
        model = ps.ALS(factors=args.factors, iterations=args.iterations, random_state=seed).fit(inter)
        model.use_index("hnsw", ef_search=args.ef_search)
        paths.append(model.save(folder / f"als-{seed}.persona"))
        print(f"  model {seed}: fit + index {time.perf_counter() - t:.1f} s", flush=True)
    return paths[0], paths[1], inter.user_ids


def percentiles(lat) -> dict:
    a = np.asarray(lat) * 1e3
    return {"n": int(len(a)), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean())}


def single_client(fn, users, n_requests: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    picks = users[rng.integers(len(users), size=n_requests)]
    for u in picks[:50]:
        fn(u)
    lat = []
    for u in picks:
        t = time.perf_counter()
        fn(u)
        lat.append(time.perf_counter() - t)
    return percentiles(lat)


def inproc(args, a: Path, b: Path, users) -> dict:
    from persona.serving import RecommenderService, limit_threads

    limit_threads(1)
    out = {}
    service = RecommenderService(ps.load(a, mmap=True), cache_size=0)
    model = service.model
    out["single_index_service"] = single_client(lambda u: service.recommend(u, n=10), users, args.requests, 1)
    out["single_index_direct"] = single_client(lambda u: model.recommend(u, n=10), users, args.requests, 1)
    exact = ps.load(a, mmap=True).use_index(None)
    exact_service = RecommenderService(exact, cache_size=0)
    out["single_exact_service"] = single_client(lambda u: exact_service.recommend(u, n=10), users,
                                                args.requests, 2)
    out["single_exact_direct"] = single_client(lambda u: exact.recommend(u, n=10), users, args.requests, 2)

    out["concurrent"] = [_inproc_load(args, service, a, b, users, c) for c in args.clients]
    return out


def closed_loop(clients: int, seconds: float, users, request, make_state=lambda: None,
                background=None, every: float = 1.0) -> dict:
    """``clients`` threads each sending ``request(state, user)`` back to back for ``seconds``
    (a random user each time) while ``background()`` runs every ``every`` seconds.

    ``request`` raises on a wrong answer; errors are counted. Returns latencies, throughput,
    errors and how many times ``background`` ran.
    """
    errors, lat, stop, lock = [], [], threading.Event(), threading.Lock()

    def client(seed):
        rng = np.random.default_rng(seed)
        state, mine = make_state(), []
        while not stop.is_set():
            u = users[rng.integers(len(users))]
            t = time.perf_counter()
            try:
                request(state, u)
            except Exception as e:  # noqa: BLE001 - counted
                errors.append(repr(e))
                if hasattr(state, "close"):
                    state.close()
                state = make_state()
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    runs = [0]

    def loop():
        while not stop.wait(every):
            background(runs[0])
            runs[0] += 1

    threads = [threading.Thread(target=client, args=(s,)) for s in range(clients)]
    if background is not None:
        threads.append(threading.Thread(target=loop))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {**percentiles(lat), "clients": clients, "seconds": wall, "requests_per_s": len(lat) / wall,
            "errors": len(errors), "error_examples": errors[:3], "background_runs": runs[0]}


def _inproc_load(args, service, a: Path, b: Path, users, clients: int) -> dict:
    """``clients`` threads calling the service for ``--seconds`` while the artifact is swapped."""
    def request(_, u):
        items, _ = service.recommend(u, n=10)
        if len(items) != 10:
            raise AssertionError(f"{len(items)} items")

    before = service.stats()["fallbacks"]
    res = closed_loop(clients, args.seconds, users, request,
                      background=lambda i: service.reload([b, a][i % 2]), every=args.swap_every)
    return {**res, "swaps": res.pop("background_runs"), "fallbacks": service.stats()["fallbacks"] - before}


_WORKER = r"""
import json, os, sys, time
import numpy as np
from persona.serving import RecommenderService, limit_threads
import persona as ps
limit_threads(1)
path, mmap, n = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
service = RecommenderService(ps.load(path, mmap=mmap), cache_size=0)
users = service.model.user_map_.ids
rng = np.random.default_rng(os.getpid())
for u in users[rng.integers(len(users), size=n)]:
    service.recommend(u, n=10)
print("ready", flush=True)
sys.stdin.readline()
"""


def smaps(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:", "Shared_Clean:", "Private_Clean:", "Private_Dirty:"):
                out[parts[0][:-1].lower() + "_mb"] = int(parts[1]) / 1024
    return out


def memory(args, a: Path) -> dict:
    res = {}
    artifact_mb = sum(p.stat().st_size for p in Path(a).rglob("*") if p.is_file()) / 2**20
    for mmap in (True, False):
        procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(a), "1" if mmap else "0", str(args.warm)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for _ in range(args.workers)]
        try:
            for p in procs:
                if p.stdout.readline().strip() != "ready":
                    raise SystemExit("a worker failed to start")
            per = [smaps(p.pid) for p in procs]
        finally:
            for p in procs:
                p.stdin.write("\n")
                p.stdin.flush()
                p.wait(timeout=30)
        res["mmap" if mmap else "copy"] = {
            "workers": args.workers, "rss_mb_each": [round(x["rss_mb"], 1) for x in per],
            "pss_mb_total": sum(x["pss_mb"] for x in per), "rss_mb_total": sum(x["rss_mb"] for x in per),
            "shared_clean_mb_each": [round(x.get("shared_clean_mb", 0), 1) for x in per]}
    res["artifact_mb"] = artifact_mb
    return res


_HTTP_SERVER = r"""
import sys, logging
from persona.serving import RecommenderService, limit_threads
from flask import Flask
from persona.contrib.flask import persona_blueprint
import persona as ps
limit_threads(1)
logging.getLogger("werkzeug").setLevel(logging.ERROR)
path, port, swap_every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
service = RecommenderService(ps.load(path, mmap=True), cache_size=0)
service.watch(path, interval=min(0.5, swap_every / 4))
app = Flask("persona-bench")
app.register_blueprint(persona_blueprint(service))
from werkzeug.serving import make_server
server = make_server("127.0.0.1", port, app, threaded=True)
server.serve_forever()
"""


_GUNICORN_APP = r"""
import os
from flask import Flask
from persona.contrib.flask import persona_blueprint
from persona.serving import RecommenderService, limit_threads
import persona as ps

PATH = os.environ["PERSONA_BENCH_MODEL"]
# loaded once in the master (--preload); every forked worker shares the mapped pages
service = RecommenderService(ps.load(PATH, mmap=True), cache_size=0)
app = Flask("persona-bench")
app.register_blueprint(persona_blueprint(service))


def post_fork(server, worker):  # gunicorn hook: one BLAS thread per worker, watch the artifact
    limit_threads(1)
    service.watch(PATH, interval=float(os.environ["PERSONA_BENCH_WATCH"]))
"""


def http(args, a: Path, b: Path, users) -> list:
    import shutil
    import socket
    import urllib.request

    folder = Path(tempfile.mkdtemp())
    live = folder / "live.persona"
    shutil.copytree(a, live)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    watch = str(min(0.5, args.swap_every / 4))
    if args.server == "gunicorn":
        (folder / "bench_app.py").write_text(_GUNICORN_APP)
        cmd = [sys.executable, "-m", "gunicorn", "--preload", "-w", str(args.http_workers), "-k", "gthread",
               "--threads", "8", "-b", f"127.0.0.1:{port}", "--chdir", str(folder), "-c", str(folder / "bench_app.py"),
               "--log-level", "warning", "bench_app:app"]
        env = {**__import__("os").environ, "PERSONA_BENCH_MODEL": str(live), "PERSONA_BENCH_WATCH": watch}
        server = subprocess.Popen(cmd, env=env)
    else:
        server = subprocess.Popen([sys.executable, "-c", _HTTP_SERVER, str(live), str(port), str(args.swap_every)])
    try:
        deadline = time.time() + 120
        while True:  # wait until it answers
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/persona/stats", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("the HTTP server failed to start") from None
                time.sleep(0.2)
        label = (f"gunicorn --preload, {args.http_workers} gthread workers x 8 threads" if args.server == "gunicorn"
                 else "werkzeug threaded (one process)")
        return [{**_http_load(args, port, live, a, b, users, c), "server": label} for c in args.clients]
    finally:
        server.terminate()
        server.wait(timeout=20)


def _http_load(args, port: int, live: Path, a: Path, b: Path, users, clients: int) -> dict:
    """``clients`` keep-alive HTTP clients for ``--seconds`` while models are published at ``live``."""
    import http.client

    def request(conn, u):
        conn.request("GET", f"/persona/recommendations/{u}?n=10")
        r = conn.getresponse()
        body = r.read()
        if r.status != 200 or len(json.loads(body)["items"]) != 10:
            raise AssertionError(f"status {r.status}: {body[:100]!r}")

    models = [ps.load(b), ps.load(a)]  # publish the other model at the watched path, as a training job would
    res = closed_loop(clients, args.seconds, users, request,
                      make_state=lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=10),
                      background=lambda i: models[i % 2].save(live), every=args.swap_every)
    return {**res, "publishes": res.pop("background_runs")}


def markdown(res: dict) -> str:
    p = res["params"]
    lines = [f"# Serving benchmark{' (quick)' if p['quick'] else ''}", "",
             f"ALS {p['factors']} factors over {p['items']} items, {p['users']} users ({p['nnz']} interactions); "
             f"HNSW index (ef_search {p['ef_search']}) saved built with the model; artifacts loaded memory-mapped; "
             f"BLAS threads limited to 1 per process. Machine: {res['machine'].get('processor')}, "
             f"{res['machine'].get('cores')} cores.", ""]
    ip = res.get("inproc")
    if ip:
        lines += ["| in-process, one client | p50 ms | p99 ms |", "|---|---:|---:|"]
        for k, label in (("single_index_service", "service.recommend, HNSW"),
                         ("single_index_direct", "model.recommend, HNSW (no service)"),
                         ("single_exact_service", "service.recommend, exact scoring"),
                         ("single_exact_direct", "model.recommend, exact scoring (no service)")):
            lines.append(f"| {label} | {ip[k]['p50_ms']:.3f} | {ip[k]['p99_ms']:.3f} |")
    load = [("in-process", c) for c in (ip or {}).get("concurrent", [])]
    load += [(f"HTTP ({h['server']})", h) for h in res.get("http") or []]
    if load:
        lines += ["", "Under load, with the artifact hot-swapped every "
                      f"{p['swap_every']:g} s (in-process: `service.reload`; HTTP: a new model published at the "
                      "watched path). Closed-loop clients on the same 2 cores, so by Little's law latency grows "
                      "with the number of clients once the cores are busy:", "",
                  "| path | clients | requests/s | p50 ms | p99 ms | errors | swaps |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for label, c in load:
            lines.append(f"| {label} | {c['clients']} | {c['requests_per_s']:.0f} | {c['p50_ms']:.3f} | "
                         f"{c['p99_ms']:.3f} | **{c['errors']}** | {c.get('swaps', c.get('publishes'))} |")
    m = res.get("memory")
    if m:
        lines += ["", f"Memory of {m['mmap']['workers']} worker processes serving one artifact "
                      f"({m['artifact_mb']:.0f} MB on disk):", "",
                  "| loading | RSS each (MB) | RSS total | PSS total (MB) |", "|---|---|---:|---:|"]
        for k in ("mmap", "copy"):
            lines.append(f"| {k} | {m[k]['rss_mb_each']} | {m[k]['rss_mb_total']:.0f} | {m[k]['pss_mb_total']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--nnz", type=int, default=1_000_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--ef-search", type=int, default=64)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16],
                    help="concurrent client threads; one run per value")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--swap-every", type=float, default=3.0)
    ap.add_argument("--requests", type=int, default=2000, help="sequential requests of the one-client runs")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--server", choices=("gunicorn", "werkzeug"), default=None,
                    help="HTTP server (default: gunicorn when installed)")
    ap.add_argument("--http-workers", type=int, default=2, help="gunicorn worker processes")
    ap.add_argument("--warm", type=int, default=300, help="requests each memory worker serves before measuring")
    ap.add_argument("--parts", nargs="+", default=["inproc", "http", "memory"], choices=["inproc", "http", "memory"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    if args.server is None:
        import importlib.util

        args.server = "gunicorn" if importlib.util.find_spec("gunicorn") else "werkzeug"
    if args.quick:
        args.items, args.users, args.nnz = 20_000, 10_000, 150_000
        args.seconds, args.requests, args.swap_every, args.clients = 5.0, 300, 1.0, [1, 4]
    with tempfile.TemporaryDirectory() as tmp:
        a, b, users = build_models(args, Path(tmp))
        res = {"params": {k: v for k, v in vars(args).items() if k != "out"}, "machine": machine_facts()}
        if "inproc" in args.parts:
            res["inproc"] = inproc(args, a, b, users)
            print(json.dumps(res["inproc"], indent=1), flush=True)
        if "http" in args.parts:
            res["http"] = http(args, a, b, users)
            print(json.dumps(res["http"], indent=1), flush=True)
        if "memory" in args.parts:
            res["memory"] = memory(args, a)
            print(json.dumps(res["memory"], indent=1), flush=True)
    stem = "serving-quick" if args.quick else "serving"
    write_results(args.out, stem, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
