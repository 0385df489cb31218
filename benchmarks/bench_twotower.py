"""Benchmark TwoTower: cold-start items on the synthetic shop, and ranking quality on Amazon Beauty.

**1. Cold start** (``--part cold``). A seeded synthetic shop (default 20,000 users x 3,000 items).
``--cold-fraction`` of the catalogue is held out: none of their events reach training. Each user's
items are listed in first-touch order; the user's *first cold item* is the target when at least
``--min-history`` items come before it, and those items (all warm) are the history. TwoTower is
fitted on the warm events with item features over the whole catalogue, the cold items are added
with ``add_items`` (their DataFrame rows, encoded by the saved feature encoding), and every model
ranks for the history (``recommend_for_history``: no refit, history items excluded):

* over the cold items only (which new item will this user pick?), and
* over all items (warm and cold together).

Baselines on the same histories: *content cosine* (cosine between the mean of the history's
feature rows and each item's features, scipy), *category affinity* (the share of the history in
the item's category; ties broken by popularity over all items and at random among cold items),
*random* (seeded) and, over all items, *most popular* (cold items have no popularity).

**2. Amazon Beauty** (``--part beauty``): the data README's protocol -- leave-last-out, full
ranking, seen items excluded, HR/NDCG@5/10/20 over all users. TwoTower uses the item attribute
file (categories and brand) as item features, is fitted on ``train`` with early stopping on the
validation targets, and at test time reads each user's history of ``train + valid`` (the
SASRec benchmark's ``extend`` protocol: the network never trains on the validation item). Most
popular (fitted on train + valid) is the floor, in the same run.

Writes ``twotower.json`` / ``.md`` (``twotower-quick.*`` with ``--quick``) to ``benchmarks/results/``.

    python benchmarks/bench_twotower.py --threads 2               # both parts
    python benchmarks/bench_twotower.py --part cold --quick       # a smoke test
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import persona as ps  # noqa: E402
from common import default_beauty, eval_row, fit_and_eval, sample_users, write_results  # noqa: E402
from machine import machine_facts  # noqa: E402
from persona.data import Features, IdMap, Interactions  # noqa: E402
from persona.models.twotower import TwoTower, _first_touches  # noqa: E402

KS = (5, 10, 20)


# ---------------------------------------------------------------------------------------- cold start
def cold_split(shop, fraction: float, min_history: int, seed: int):
    """Warm training events, cold item ids, and (history ids, target id) of users whose next item is cold."""
    inter = shop.interactions
    rng = np.random.default_rng(seed)
    catalogue = shop.items["item_id"].to_numpy()
    cold_ids = np.sort(rng.choice(catalogue, size=max(1, round(fraction * len(catalogue))), replace=False))
    cold = np.isin(inter.item_ids, cold_ids)
    seq, indptr = _first_touches(inter)
    histories, targets = [], []
    for u in range(inter.n_users):
        s = seq[indptr[u]:indptr[u + 1]]
        hit = np.flatnonzero(cold[s])
        if len(hit) and hit[0] >= min_history:
            histories.append(inter.item_ids[s[:hit[0]]])
            targets.append(inter.item_ids[s[hit[0]]])
    keep = ~cold[inter.items]
    warm_ids = inter.item_ids[~cold]
    remap = np.full(inter.n_items, -1, dtype=np.int64)
    remap[~cold] = np.arange(len(warm_ids))
    train = Interactions(inter.user_map, IdMap(warm_ids), inter.users[keep], remap[inter.items[keep]],
                         inter.weights[keep], None if inter.timestamps is None else inter.timestamps[keep],
                         None if inter.events is None else inter.events[keep], event_types=inter.event_types,
                         aggregate=inter.aggregate)
    return train, cold_ids, histories, np.asarray(targets)


def hits_of(ranked: np.ndarray, targets: np.ndarray, ks=KS) -> dict:
    """HR@k / NDCG@k of one target per row, from ranked id rows (best first)."""
    found = ranked == targets[:, None]
    rank = np.where(found.any(axis=1), found.argmax(axis=1), ranked.shape[1] + 1)
    out = {}
    for k in ks:
        hit = rank < k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0).mean())
    return out


def top_ids(score_fn, histories, candidates: np.ndarray, ids: np.ndarray, n: int, rows: int = 1000) -> np.ndarray:
    """Top ``n`` of ``candidates`` (item rows) per history by ``score_fn(batch) -> (b, n_items)``; history excluded."""
    out = []
    cand = np.zeros(len(ids), dtype=bool)
    cand[candidates] = True
    lookup = IdMap(ids)
    for s in range(0, len(histories), rows):
        batch = histories[s:s + rows]
        scores = np.asarray(score_fn(batch), dtype=np.float64)
        scores[:, ~cand] = -np.inf
        for r, h in enumerate(batch):
            scores[r, lookup.lookup(h)] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :n]
        out.append(ids[top])
    return np.concatenate(out)


def run_cold(args) -> dict:
    t = time.perf_counter()
    shop = ps.datasets.synthetic_shop(n_users=args.users, n_items=args.items, seed=args.seed)
    train, cold_ids, histories, targets = cold_split(shop, args.cold_fraction, args.min_history, args.seed)
    catalogue = IdMap(shop.items["item_id"].to_numpy())
    print(f"cold start: shop {args.users} users x {args.items} items ({time.perf_counter() - t:.1f} s); "
          f"{len(cold_ids)} cold items; {len(train)} warm training events; {len(targets)} users whose next item is "
          "cold", flush=True)
    spec = dict(categorical=["category", "brand"], numeric=["price"], tags=["tags"], text=["name"],
                text_mode="hash", hash_dim=args.hash_dim)
    feats = Features.from_frame(shop.items, catalogue, "item_id", **spec)
    cold_rows = catalogue.lookup(cold_ids)
    ids = catalogue.ids
    n = max(KS)
    results = {"cold items only": [], "all items": []}

    def record(where, name, ranked, fit_s=None):
        row = {"model": name, **hits_of(ranked, targets), "fit_s": fit_s}
        results[where].append(row)
        print(f"  [{where}] {name}: HR@10 {row['hr@10']:.4f} NDCG@10 {row['ndcg@10']:.4f}", flush=True)

    params = dict(factors=args.factors, hidden=args.hidden, max_history=args.max_history,
                  temperature=args.temperature, id_dropout=args.id_dropout, learning_rate=args.learning_rate,
                  epochs=args.cold_epochs, batch_size=args.batch_size, random_state=args.seed,
                  num_threads=args.threads, show_progress=args.progress)
    models = [("TwoTower (features + ids, id dropout)", params)]
    if not args.quick:
        models.append(("TwoTower (features only)", {**params, "item_ids": False}))
    for name, p in models:
        t = time.perf_counter()
        model = TwoTower(**p).fit(train, item_features=feats)
        fit_s = time.perf_counter() - t
        model.add_items(shop.items[shop.items["item_id"].isin(cold_ids)])  # a DataFrame: the saved encoding
        print(f"  {name}: fitted in {fit_s:.1f} s ({len(model.history_)} epochs), {len(cold_ids)} items added",
              flush=True)
        ranked, _ = model.recommend_for_history_batch(list(histories), n=n, items=cold_ids)
        record("cold items only", name, ranked, fit_s)
        ranked, _ = model.recommend_for_history_batch(list(histories), n=n)
        record("all items", name, ranked, fit_s)

    x = feats.matrix
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    xn = sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x)

    def content(batch):
        rows = [catalogue.lookup(h) for h in batch]
        prof = sp.csr_matrix((np.concatenate([np.full(len(r), 1.0 / len(r)) for r in rows]),
                              np.concatenate(rows), np.r_[0, np.cumsum([len(r) for r in rows])]),
                             shape=(len(batch), len(ids)))
        return (prof @ xn @ xn.T).toarray()

    cat_codes = feats.codes("category")
    n_cat = int(cat_codes.max()) + 1
    popularity = np.zeros(len(ids))
    pop_model = ps.MostPopular().fit(train)
    popularity[catalogue.lookup(train.item_ids)] = np.asarray(train.matrix.getnnz(axis=0), dtype=np.float64)
    tie = np.random.default_rng(args.seed).random(len(ids))

    def category(batch, with_popularity):
        shares = np.stack([np.bincount(cat_codes[catalogue.lookup(h)], minlength=n_cat) / len(h) for h in batch])
        s = shares[:, np.maximum(cat_codes, 0)]
        tb = popularity / (popularity.max() + 1.0) if with_popularity else tie
        return s + 1e-3 * tb[None, :]

    all_rows = np.arange(len(ids))
    for where, cand in (("cold items only", cold_rows), ("all items", all_rows)):
        record(where, "content cosine (history profile . item features)", top_ids(content, histories, cand, ids, n))
        record(where, "category affinity" + (" + popularity" if where == "all items" else ""),
               top_ids(lambda b: category(b, where == "all items"), histories, cand, ids, n))
        rnd = np.random.default_rng(args.seed + 1)
        record(where, "random", top_ids(lambda b: rnd.random((len(b), len(ids))), histories, cand, ids, n))
    pop_ranked, _ = pop_model.recommend_for_history_batch(list(histories), n=n)
    record("all items", "most popular (cold items have no events)", pop_ranked)
    return {"users": args.users, "items": args.items, "cold_items": int(len(cold_ids)),
            "cold_fraction": args.cold_fraction, "test_users": int(len(targets)), "train_events": len(train),
            "features": f"{feats.shape[1]} columns: " + ", ".join(f"{k} ({v})" for k, v in feats.fields.items()),
            "params": params, "results": results,
            "chance_hr@10_cold_only": min(1.0, 10 / len(cold_ids))}


# ---------------------------------------------------------------------------------------- Beauty
def with_histories(model: TwoTower, inter: Interactions) -> TwoTower:
    """A copy of ``model`` that reads the users' histories of ``inter`` (the public update_histories)."""
    return copy.copy(model).update_histories(inter)


def run_beauty(args) -> dict:
    path = args.data or default_beauty()
    if path is None or not Path(path).exists():
        print("beauty: no data (pass --data PATH to Beauty.txt); skipped", flush=True)
        return {"skipped": "no data"}
    data = ps.datasets.load_sequences(path)
    inter = data.interactions
    inter = sample_users(inter, args.max_users, args.seed)
    train, valid, test = ps.split.leave_last_out(inter)
    full = train.concat(valid)
    attrs = data.attribute_matrix(inter.item_map)
    feats = Features(attrs, [f"attr={j}" for j in range(attrs.shape[1])], inter.item_map)
    print(f"beauty: {inter.n_users} users, {inter.n_items} items, {len(inter)} events; {attrs.shape[1]} attributes "
          f"({attrs.nnz / max(1, inter.n_items):.1f} per item); {len(test)} test targets", flush=True)
    rows = []

    def add(name, model, fit_s, extra=None):
        return eval_row(rows, name, model, test, fit_s, extra)

    fit_and_eval(rows, "most popular", lambda: ps.MostPopular().fit(full), test)
    params = dict(factors=args.factors, hidden=args.hidden, max_history=args.max_history,
                  temperature=args.temperature, id_dropout=args.id_dropout, learning_rate=args.learning_rate,
                  epochs=args.epochs, batch_size=args.batch_size, patience=args.patience, random_state=args.seed,
                  num_threads=args.threads, show_progress=args.progress)
    variants = [("TwoTower (ids + attributes)", params, feats)]
    if args.beauty_ids_only:
        variants.append(("TwoTower (ids only)", params, None))
    for name, p, f in variants:
        t = time.perf_counter()
        model = TwoTower(**p).fit(train, item_features=f, valid=valid)
        fit_s = time.perf_counter() - t
        best = model.history_[model.best_epoch_ - 1]
        print(f"  {name}: {len(model.history_)} epochs in {fit_s:.1f} s; best epoch {model.best_epoch_} "
              f"(valid NDCG@10 {best['valid_ndcg@10']:.4f})", flush=True)
        add(f"persona {name}; test reads train+valid", with_histories(model, full), fit_s,
            {"epochs_run": len(model.history_), "best_epoch": model.best_epoch_,
             "valid_ndcg@10": best["valid_ndcg@10"], "s_per_epoch": fit_s / len(model.history_)})
    return {"data": str(path), "n_users": inter.n_users, "n_items": inter.n_items, "n_events": len(inter),
            "params": params, "rows": rows}


# ---------------------------------------------------------------------------------------- report
def _table(rows, cols) -> list[str]:
    head = "| model | " + " | ".join(f"HR@{k} | NDCG@{k}" for k in KS) + " | " + " | ".join(c for c, _ in cols) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(KS) + len(cols))]
    for r in rows:
        extra = " | ".join("" if r.get(key) is None else f"{r[key]:.1f}" for _, key in cols)
        lines.append(f"| {r['model']} | " + " | ".join(f"{r[f'hr@{k}']:.4f} | {r[f'ndcg@{k}']:.4f}" for k in KS)
                     + f" | {extra} |")
    return lines


def markdown(res: dict) -> str:
    f = res["machine"]
    lines = [f"# TwoTower{' (quick)' if res['quick'] else ''}", "",
             f"Machine: {f.get('processor')}, {f.get('usable_cores')} usable cores, Python {f.get('python')}, torch "
             f"{f.get('torch')}, onnxruntime {f.get('onnxruntime')}, persona {f.get('persona')}. Threads "
             f"{res['threads'] or 'all'}; seed {res['seed']}.", ""]
    c = res.get("cold")
    if c:
        p = c["params"]
        lines += ["## Cold-start items (synthetic shop)", "",
                  f"{c['users']} users x {c['items']} items; {c['cold_items']} items ({c['cold_fraction']:.0%}) held "
                  f"out of training entirely and added with `add_items`; {c['test_users']} users whose next new "
                  f"item is cold (history: their items before it, at least {res['min_history']}). Item features: "
                  f"{c['features']}. TwoTower: factors {p['factors']}, hidden {p['hidden']}, temperature "
                  f"{p['temperature']}, id dropout {p['id_dropout']}, {p['epochs']} epochs, batch {p['batch_size']}, "
                  f"lr {p['learning_rate']}.", ""]
        for where, rows in c["results"].items():
            lines += [f"### Ranking over {where}" + (f" (chance HR@10 {c['chance_hr@10_cold_only']:.3f})"
                                                      if where == "cold items only" else ""), ""]
            lines += _table(rows, [("fit s", "fit_s")]) + [""]
    b = res.get("beauty")
    if b and "rows" in b:
        p = b["params"]
        lines += [f"## {Path(b['data']).stem} (leave-last-out, full ranking, seen excluded)", "",
                  f"{b['n_users']} users, {b['n_items']} items, {b['n_events']} events. TwoTower: factors "
                  f"{p['factors']}, hidden {p['hidden']}, max_history {p['max_history']}, temperature "
                  f"{p['temperature']}, id dropout {p['id_dropout']}, lr {p['learning_rate']}, batch "
                  f"{p['batch_size']}, at most {p['epochs']} epochs, patience {p['patience']}.", ""]
        lines += _table(b["rows"], [("fit s", "fit_s"), ("s/epoch", "s_per_epoch")]) + [""]
        for r in b["rows"]:
            if "best_epoch" in r:
                lines.append(f"- {r['model']}: {r['epochs_run']} epochs, best {r['best_epoch']} (valid NDCG@10 "
                             f"{r['valid_ndcg@10']:.4f}).")
        lines.append("")
    lines += [f"Peak resident memory of the whole run: {res['peak_rss_mb']:.0f} MB."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("cold", "beauty", "both"), default="both")
    ap.add_argument("--users", type=int, default=20000, help="synthetic shop users (cold start)")
    ap.add_argument("--items", type=int, default=3000, help="synthetic shop items (cold start)")
    ap.add_argument("--cold-fraction", type=float, default=0.12)
    ap.add_argument("--min-history", type=int, default=2)
    ap.add_argument("--hash-dim", type=int, default=1024, help="hashed name words (cold start features)")
    ap.add_argument("--cold-epochs", type=int, default=8)
    ap.add_argument("--data", type=Path, default=None, help="Beauty.txt (default: the shared copy)")
    ap.add_argument("--max-users", type=int, default=None, help="Beauty: keep a random sample of users")
    ap.add_argument("--beauty-ids-only", action="store_true", help="Beauty: also fit a TwoTower without attributes")
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--max-history", type=int, default=50)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--id-dropout", type=float, default=0.5)
    ap.add_argument("--learning-rate", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=40, help="Beauty: most epochs (early stopping)")
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch / onnxruntime threads (0: their defaults; 1 was fastest on a busy 2-core machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--quick", action="store_true", help="a small shop, 3000 Beauty users, few epochs")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.users, args.items = min(args.users, 2000), min(args.items, 400)
        args.cold_epochs = min(args.cold_epochs, 3)
        args.epochs = min(args.epochs, 3)
        args.max_users = args.max_users or 3000

    res = {"quick": args.quick, "threads": args.threads, "seed": args.seed, "min_history": args.min_history}
    if args.part in ("cold", "both"):
        res["cold"] = run_cold(args)
    if args.part in ("beauty", "both"):
        res["beauty"] = run_beauty(args)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["machine"] = {**machine_facts(), "usable_cores": len(os.sched_getaffinity(0))
                      if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    stem = "twotower-quick" if args.quick else "twotower"
    if args.part != "both":
        stem += f"-{args.part}"
    write_results(args.out, stem, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
