"""Streaming updates (issue 15): freshness, and incremental updates against full retrains.

Part ``freshness``: the time from ``track`` to a changed recommendation for that user, p50 / p99:

* in one process, the Retrainer swapping each version into the service (``service=``);
* in one process, through the artifact path (the Retrainer publishes, the service watches it);
* across 2 gunicorn workers (this file's ``make_app()``), the Retrainer in this process publishing
  to the path both workers watch: the time until the first worker, and until both, answer anew.

Each trial takes a known user, tracks a purchase of their current top item, and polls until the
list changes (the bought item is then filtered as seen, so it always changes).

Part ``replay``: a week replayed day by day (temporal split). The model fitted on everything before
the week is (a) updated with each day's events in hourly batches (incremental), (b) refitted on
everything up to the day (full), (c) left as it was (frozen); each is scored on the next day's
events (full ranking, seen items excluded; NDCG@10 / HR@10 over the users the model knows; frozen
knows only the returning users). Cost: seconds of the day's updates against seconds of the refit.
Data: the synthetic shop (real timestamps), and Last.fm in time order -- the public file has no
timestamps, only each user's items in order, so each user's last 8 items are the week (one a day,
the 8th the last day's target) and 10% of users arrive in the week (their earlier items on day 1).

    python benchmarks/bench_update.py --part all            # writes benchmarks/results/update.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import persona as ps  # noqa: E402
from common import write_results  # noqa: E402
from machine import machine_facts  # noqa: E402

DAY = 86400.0
MODELS = {
    "MostPopular": lambda: ps.MostPopular(),
    "ItemKNN": lambda: ps.ItemKNN(),
    "EASE": lambda: ps.EASE(),
    "ALS": lambda: ps.ALS(random_state=0),
    "BPR": lambda: ps.BPR(random_state=0),
    "SASRec": lambda: ps.SASRec(factors=64, max_len=50, epochs=30, random_state=0),
}


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


# ----------------------------------------------------------------------------------------- freshness
def _seed_store(store, n_users: int, n_items: int, seed: int) -> None:
    shop = ps.datasets.synthetic_shop(n_users=n_users, n_items=n_items, seed=seed)
    ev = shop.events
    for k, (u, i, t, e) in enumerate(zip(ev["user_id"], ev["item_id"], ev["timestamp"], ev["event"].astype(str))):
        store.track(u, i, e, timestamp=t.timestamp(), event_id=f"seed-{k}")
    store.flush()


def _trials(recommend, track, users, n: int, rng, timeout: float = 30.0) -> list[float]:
    """Seconds from track to a changed list, for ``n`` users."""
    out = []
    for user in rng.choice(users, size=n, replace=False):
        before = recommend(user)
        t0 = time.perf_counter()
        track(user, before[0])
        while time.perf_counter() - t0 < timeout:
            if recommend(user) != before:
                out.append(time.perf_counter() - t0)
                break
            time.sleep(0.002)
        else:
            print(f"  no change within {timeout} s for {user}", flush=True)
    return out


def freshness_in_process(folder: Path, args, rng) -> list[dict]:
    from persona.pipeline import Retrainer
    from persona.serving import RecommenderService

    rows = []
    for mode in ("swap", "watch"):
        sub = folder / mode
        sub.mkdir()
        store = ps.EventStore(sub / "events.db")
        _seed_store(store, args.fresh_users, args.fresh_items, args.seed)
        model = ps.ItemKNN(k=100).fit(store.interactions())
        since = float(store.events()["time"].max().timestamp()) + 1.0
        path = sub / "model.persona"
        if mode == "swap":
            service = RecommenderService(model, store=store, impressions=False)
            r = Retrainer(store, model, service=service, since=since, retrain_every=None,
                          update_every=args.update_every, update_events=1, poll_interval=args.poll)
        else:
            model.save(path)
            service = RecommenderService.from_artifact(path, watch=args.watch, store=store, impressions=False)
            r = Retrainer(store, model, path, since=since, retrain_every=None, update_every=args.update_every,
                          update_events=1, poll_interval=args.poll)
        users = model.user_map_.ids
        with r:
            times = _trials(lambda u: service.recommend(u, n=10).items.tolist(),
                            lambda u, i: service.track(u, i, "purchase"), users, args.trials, rng)
        service.close()
        store.close()
        rows.append({"setting": f"in-process, {'service.swap' if mode == 'swap' else 'artifact path + watch'}",
                     "trials": len(times), "p50_s": pct(times, 50), "p99_s": pct(times, 99), "max_s": max(times)})
        print(f"  {rows[-1]}", flush=True)
    return rows


def make_app():
    """The WSGI app gunicorn serves in the freshness benchmark: /recommend?user= and /track?user=&item=."""
    from urllib.parse import parse_qs

    from persona.serving import RecommenderService

    folder = Path(os.environ["PERSONA_BENCH_DIR"])
    store = ps.EventStore(folder / "events.db")
    service = RecommenderService.from_artifact(folder / "model.persona", watch=float(os.environ["PERSONA_BENCH_WATCH"]),
                                               store=store, impressions=False)

    def app(environ, start_response):
        q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if environ["PATH_INFO"] == "/track":
            service.track(q["user"], q["item"], "purchase")
            body = {"ok": True}
        else:
            rec = service.recommend(q["user"], n=10)
            body = {"items": [str(x) for x in rec.items], "version": service.model_version, "pid": os.getpid()}
        data = json.dumps(body).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    return app


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def freshness_gunicorn(folder: Path, args, rng) -> list[dict]:
    from persona.pipeline import Retrainer

    sub = folder / "gunicorn"
    sub.mkdir()
    store = ps.EventStore(sub / "events.db")
    _seed_store(store, args.fresh_users, args.fresh_items, args.seed)
    model = ps.ItemKNN(k=100).fit(store.interactions())
    since = float(store.events()["time"].max().timestamp()) + 1.0
    model.save(sub / "model.persona")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PERSONA_BENCH_DIR": str(sub), "PERSONA_BENCH_WATCH": str(args.watch),
           "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "--preload",
                             "--chdir", str(HERE), "--log-level", "warning", "bench_update:make_app()"], env=env)
    base = f"http://127.0.0.1:{port}"
    first, both = [], []
    try:
        end = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/recommend?user=u00000")
                break
            except OSError:
                if time.monotonic() > end or proc.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        pids = {_get(f"{base}/recommend?user=u00000")["pid"] for _ in range(40)}
        print(f"  gunicorn workers answering: {sorted(pids)}", flush=True)
        r = Retrainer(store, model, sub / "model.persona", since=since, retrain_every=None,
                      update_every=args.update_every, update_events=1, poll_interval=args.poll)
        with r:
            for user in rng.choice(model.user_map_.ids, size=args.trials, replace=False):
                # both workers answer the same list before the event (the last trial's version everywhere)
                seen, deadline = {}, time.monotonic() + 30
                while time.monotonic() < deadline:
                    a = _get(f"{base}/recommend?user={user}")
                    seen[a["pid"]] = tuple(a["items"])
                    if len(seen) >= 2 and len(set(seen.values())) == 1 and r.pending() == 0:
                        break
                before = list(next(iter(seen.values())))
                t0 = time.perf_counter()
                urllib.request.urlopen(f"{base}/track?user={user}&item={before[0]}", timeout=10).read()
                changed: dict[int, float] = {}
                while time.perf_counter() - t0 < 30 and len(changed) < 2:
                    a = _get(f"{base}/recommend?user={user}")
                    if a["items"] != before and a["pid"] not in changed:
                        changed[a["pid"]] = time.perf_counter() - t0
                if len(changed) == 2:
                    first.append(min(changed.values()))
                    both.append(max(changed.values()))
                else:
                    print(f"  {user}: {len(changed)} worker(s) changed within 30 s", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
        store.close()
    rows = [{"setting": "2 gunicorn workers watching the path: first worker", "trials": len(first),
             "p50_s": pct(first, 50), "p99_s": pct(first, 99), "max_s": max(first) if first else float("nan")},
            {"setting": "2 gunicorn workers watching the path: both workers", "trials": len(both),
             "p50_s": pct(both, 50), "p99_s": pct(both, 99), "max_s": max(both) if both else float("nan")}]
    for row in rows:
        print(f"  {row}", flush=True)
    return rows


# ------------------------------------------------------------------------------------------ replay
def _frame_inter(df):
    return ps.Interactions.from_frame(df, user="user", item="item", time="time", weight="weight")


def shop_week(args):
    """(base, days, name): the synthetic shop's events before the last 8 days, then one batch a day."""
    shop = ps.datasets.synthetic_shop(n_users=args.shop_users, n_items=args.shop_items, seed=args.seed)
    inter = shop.interactions
    df = inter.to_frame()
    df["time"] = inter.timestamps
    end = float(inter.timestamps.max())
    start = end - 8 * DAY
    base = _frame_inter(df[df.time < start])
    days = [df[(df.time >= start + d * DAY) & (df.time < start + (d + 1) * DAY + (d == 7))] for d in range(8)]
    return base, days, f"synthetic shop ({args.shop_users:,} users x {args.shop_items:,} items, seed {args.seed})"


def lastfm_week(path: Path, seed: int):
    """Last.fm in each user's order: the last 8 items of every user are the week (one a day)."""
    import pandas as pd

    rows = []
    rng = np.random.default_rng(seed)
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    late = set(rng.choice(len(lines), size=len(lines) // 10, replace=False).tolist())  # arrive during the week
    for k, parts in enumerate(lines):
        user, items = parts[0], parts[1:]
        if len(items) < 10:
            continue
        cut = len(items) - 8
        for p, item in enumerate(items):
            if p < cut:
                day, t = (0, 1e6 + p) if k not in late else (1, 0.0)
            else:
                day, t = p - cut + 1, 0.0
            rows.append((user, item, day, t, k, p))
    df = pd.DataFrame(rows, columns=["user", "item", "day", "t", "k", "p"])
    # time: the base in each user's order; day d at d days, users spread over the day, each in order
    n = df.k.max() + 1
    df["time"] = np.where(df.day == 0, df.t, 2e6 + (df.day - 1) * DAY + df.k * (DAY / n) + df.p * 1e-3)
    df["weight"] = 1.0
    base = _frame_inter(df[df.day == 0])
    days = [df[df.day == d][["user", "item", "time", "weight"]] for d in range(1, 9)]
    return base, days, f"Last.fm ({len(lines):,} users; each user's last 8 items as the week; 10% arrive in it)"


def _hourly(df, hours: int = 24):
    t = df.time.to_numpy()
    if not len(t):
        return []
    edges = np.linspace(t.min(), t.max(), hours + 1)
    out = []
    for h in range(hours):
        part = df[(t >= edges[h]) & ((t < edges[h + 1]) | (h == hours - 1))]
        if len(part):
            out.append(_frame_inter(part))
    return out


def _scores(model, test) -> dict:
    rep = ps.evaluate(model, test, k=(10,), metrics=("hr", "ndcg"))
    return {"ndcg@10": rep["ndcg@10"], "hr@10": rep["hr@10"], "users": rep["n_users"]}


def replay(base, days, name: str, models: list[str], bpr_epochs: list[int]) -> list[dict]:
    rows = []
    # the targets of day d: what users take on day d + 1 that they had not taken before (a repeat is
    # filtered as seen by a model that knows the earlier event, so it would favour stale models)
    before = set(zip(base.user_ids[base.users].tolist(), base.item_ids[base.items].tolist()))
    targets = []
    for d in range(7):
        before |= set(zip(days[d].user.astype(str), days[d]["item"].astype(str)))
        nxt = days[d + 1]
        fresh = [(u, i) not in before for u, i in zip(nxt.user.astype(str), nxt["item"].astype(str))]
        targets.append(nxt[np.asarray(fresh, dtype=bool)])
    tests = [_frame_inter(t) for t in targets]
    known = set(base.user_ids.tolist())  # returning users: the frozen model knows only them
    returning = [_frame_inter(t[t.user.astype(str).isin(known)]) for t in targets]
    for mname in models:
        make = MODELS[mname]
        variants = [(mname, {})]
        if mname == "BPR":
            variants = [(f"BPR (epochs={e})", {"epochs": e}) for e in bpr_epochs]
        elif mname == "ALS":
            variants = [("ALS (items=new)", {}), ("ALS (items=touched)", {"items": "touched"})]
        t = time.perf_counter()
        fitted = make().fit(base)
        base_s = time.perf_counter() - t
        print(f"  {name} / {mname}: base fit {base_s:.2f} s, load {loadavg()}", flush=True)
        frozen = fitted
        incrementals = {label: __import__("copy").copy(fitted) for label, _ in variants}
        seen = [base]
        for d in range(7):
            seen.append(_frame_inter(days[d]))
            t = time.perf_counter()
            full = make().fit(seen[0].concat(*seen[1:]))
            full_s = time.perf_counter() - t
            row = {"data": name, "model": mname, "day": d + 1, "full_s": full_s, "base_fit_s": base_s,
                   "full": _scores(full, tests[d]), "frozen": _scores(frozen, returning[d]),
                   "full_returning": _scores(full, returning[d]), "incremental": {}}
            for label, opts in variants:
                m = incrementals[label]
                spent, n_batches = 0.0, 0
                for chunk in _hourly(days[d]):
                    t = time.perf_counter()
                    m.update(chunk, **opts)
                    spent += time.perf_counter() - t
                    n_batches += 1
                row["incremental"][label] = {**_scores(m, tests[d]), "update_s": spent, "batches": n_batches,
                                             "returning": _scores(m, returning[d])}
            rows.append(row)
            inc = "; ".join(f"{k} {v['ndcg@10']:.4f} ({v['update_s']:.2f} s)" for k, v in row["incremental"].items())
            print(f"    day {d + 1}: full {row['full']['ndcg@10']:.4f} ({full_s:.2f} s) | incremental {inc} | "
                  f"frozen {row['frozen']['ndcg@10']:.4f}", flush=True)
    return rows


# ------------------------------------------------------------------------------------------ report
def markdown(payload: dict) -> str:
    out = ["# Streaming updates: freshness, and incremental updates against full retrains", "",
           f"Machine: {payload['machine'].get('cores')} cores, persona {payload['machine'].get('persona')}, "
           f"{payload['date']}. Load averages (1, 5, 15 min) are given beside each part. "
           "Command: `python benchmarks/bench_update.py " + " ".join(payload["argv"]) + "`.", ""]
    fr = payload.get("freshness")
    if fr:
        s = fr["settings"]
        out += ["## Freshness: `track` -> a changed recommendation", "",
                f"ItemKNN (k 100) on the synthetic shop ({s['users']:,} users x {s['items']:,} items) in a SQLite "
                f"EventStore; the Retrainer updates as soon as one event waits (checked every {s['poll']} s, "
                f"update_every {s['update_every']} s); workers watch the artifact every {s['watch']} s; gunicorn: "
                "2 sync workers, `--preload`, this file's `make_app()`, the Retrainer in the benchmark's process. "
                f"{s['trials']} trials each; load before / after: {fr['load_before']} / {fr['load_after']}.", "",
                "| setting | trials | p50 (s) | p99 (s) | max (s) |", "|---|---|---|---|---|"]
        for r in fr["rows"]:
            out.append(f"| {r['setting']} | {r['trials']} | {r['p50_s']:.3f} | {r['p99_s']:.3f} | {r['max_s']:.3f} |")
        out.append("")
    for part in payload.get("replay", []):
        out += [f"## Incremental vs full retrain: {part['data']}", "",
                f"Load before / after: {part['load_before']} / {part['load_after']}. NDCG@10 / HR@10 on the next "
                "day's events of items new to the user; incremental = hourly `update` batches; cost = seconds of "
                "that day's updates vs of the refit. Frozen = the model of the day before the week, not updated "
                "(returning users only).", "",
                "| model | day | full NDCG@10 | full HR@10 | incremental NDCG@10 | incremental HR@10 | frozen NDCG@10 | "
                "refit (s) | updates (s) |", "|---|---|---|---|---|---|---|---|---|"]
        summary = {}
        for r in part["rows"]:
            for label, inc in r["incremental"].items():
                out.append(f"| {label} | {r['day']} | {r['full']['ndcg@10']:.4f} | {r['full']['hr@10']:.4f} | "
                           f"{inc['ndcg@10']:.4f} | {inc['hr@10']:.4f} | {r['frozen']['ndcg@10']:.4f} | "
                           f"{r['full_s']:.2f} | {inc['update_s']:.3f} |")
                s = summary.setdefault(label, {"full": [], "inc": [], "frozen": [], "full_s": [], "inc_s": [],
                                               "full_ret": [], "inc_ret": []})
                s["full"].append(r["full"]["ndcg@10"])
                s["inc"].append(inc["ndcg@10"])
                s["frozen"].append(r["frozen"]["ndcg@10"])
                s["full_ret"].append(r["full_returning"]["ndcg@10"])
                s["inc_ret"].append(inc["returning"]["ndcg@10"])
                s["full_s"].append(r["full_s"])
                s["inc_s"].append(inc["update_s"])
        out += ["", "Mean over the week (all users; then the returning users alone, which the frozen model "
                "knows too):", "",
                "| model | full NDCG@10 | incremental NDCG@10 | incremental / full | returning: full | "
                "returning: incremental | returning: frozen | refit s/day | update s/day | refit / updates |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for label, s in summary.items():
            f, i, z = np.mean(s["full"]), np.mean(s["inc"]), np.mean(s["frozen"])
            fr, ir = np.mean(s["full_ret"]), np.mean(s["inc_ret"])
            fs, is_ = np.mean(s["full_s"]), np.mean(s["inc_s"])
            out.append(f"| {label} | {f:.4f} | {i:.4f} | {i / f if f else float('nan'):.3f} | {fr:.4f} | {ir:.4f} | "
                       f"{z:.4f} | {fs:.2f} | {is_:.3f} | {fs / is_ if is_ else float('nan'):.2g}x |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("freshness", "replay", "all"), default="all")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--fresh-users", type=int, default=2000)
    p.add_argument("--fresh-items", type=int, default=500)
    p.add_argument("--update-every", type=float, default=1.0)
    p.add_argument("--poll", type=float, default=0.05, help="the Retrainer's poll_interval (s)")
    p.add_argument("--watch", type=float, default=0.1, help="the workers' watch interval (s)")
    p.add_argument("--no-gunicorn", action="store_true")
    p.add_argument("--shop-users", type=int, default=3000)
    p.add_argument("--shop-items", type=int, default=600)
    p.add_argument("--lastfm", type=Path, default=None, help="LastFM.txt (default: the shared data folder)")
    p.add_argument("--models", nargs="+", default=["MostPopular", "ItemKNN", "EASE", "ALS", "BPR"], choices=list(MODELS))
    p.add_argument("--bpr-epochs", type=int, nargs="+", default=[1, 10, 30])
    p.add_argument("--data", nargs="+", default=["shop", "lastfm"], choices=("shop", "lastfm"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--stem", default="update")
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    payload = {"machine": machine_facts(), "date": time.strftime("%Y-%m-%d"), "argv": sys.argv[1:] if argv is None
               else list(argv), "args": {k: str(v) for k, v in vars(args).items()}}
    if args.part in ("freshness", "all"):
        print(f"freshness (load {loadavg()})", flush=True)
        before = loadavg()
        with tempfile.TemporaryDirectory() as tmp:
            rows = freshness_in_process(Path(tmp), args, rng)
            if not args.no_gunicorn:
                rows += freshness_gunicorn(Path(tmp), args, rng)
        payload["freshness"] = {"rows": rows, "load_before": before, "load_after": loadavg(),
                                "settings": {"users": args.fresh_users, "items": args.fresh_items,
                                             "update_every": args.update_every, "poll": args.poll,
                                             "watch": args.watch, "trials": args.trials}}
    if args.part in ("replay", "all"):
        payload["replay"] = []
        weeks = []
        if "shop" in args.data:
            weeks.append(lambda: shop_week(args))
        if "lastfm" in args.data:
            path = args.lastfm
            if path is None:
                folder = ps.datasets.default_data_path("lastfm")
                path = None if folder is None else folder / "LastFM.txt"
            if path is not None and Path(path).exists():
                weeks.append(lambda: lastfm_week(path, args.seed))
            else:
                print("Last.fm not found; pass --lastfm", flush=True)
        for week in weeks:
            before = loadavg()
            base, days, name = week()
            print(f"replay: {name} (load {before})", flush=True)
            rows = replay(base, days, name, args.models, args.bpr_epochs)
            payload["replay"].append({"data": name, "rows": rows, "load_before": before, "load_after": loadavg()})
    write_results(args.out, args.stem, payload, markdown(payload))


if __name__ == "__main__":
    main()
