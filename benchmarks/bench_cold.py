"""Cold items: how well ContentKNN places items nobody has touched, against popularity within category.

Protocol (fixed seeds): a synthetic shop; 10% of its items (``--cold``) are held out entirely --
every event on them is removed from training, so the models never see them interact. The test is
their events: for every training user who touched at least one held-out item, each model ranks the
held-out items only (the "new arrivals" shelf: ``items=`` the cold ids) and we count

- ``hr@10``: the share of those users with at least one of their held-out items in the top 10;
- ``ndcg@10`` (binary relevance, ideal = min(10, |relevant|)) and ``recall@10``.

Models:

- ``random``: held-out items in a seeded random order (the floor);
- ``category-popularity``: popularity within category -- an item scores the share of the user's
  training events in its category, ties broken by the training popularity of its brand (cold
  items have no popularity of their own);
- ``content-*``: ContentKNN fitted on the warm items, the cold items then added from their
  content alone with ``add_items`` (no refit): features (category, brand, price buckets, tags),
  name text (TF-IDF, or the packaged all-MiniLM-L6-v2 encoder when ``persona-recsys[text]`` is
  installed), both (default parameters: k 100, interaction weights), and both with recency
  weighting (half-life 20 items) and k 400.

Writes ``cold.json`` / ``cold.md`` to ``benchmarks/results/``.

    python benchmarks/bench_cold.py                  # 5,000 users x 1,500 items
    python benchmarks/bench_cold.py --quick          # 1,000 x 300
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402
from machine import machine_facts  # noqa: E402

import persona as ps  # noqa: E402
from persona.data import Features  # noqa: E402
from persona.onnx import packaged_encoder_available  # noqa: E402

K = 10
FEATURE_SPEC = dict(categorical=["category", "brand"], numeric=["price"], tags=["tags"])


def cold_split(shop, frac: float, seed: int):
    """(train interactions without the cold items, cold item ids, {user: set of cold items touched})."""
    rng = np.random.default_rng(seed)
    ids = shop.items["item_id"].to_numpy()
    cold = np.sort(rng.choice(ids, size=max(1, int(round(frac * len(ids)))), replace=False))
    is_cold = shop.events["item_id"].isin(cold)
    train = ps.Interactions.from_frame(shop.events[~is_cold], user="user_id", item="item_id", time="timestamp",
                                       event="event")
    test = shop.events[is_cold & shop.events["user_id"].isin(train.user_ids)]
    truth = test.groupby("user_id")["item_id"].agg(lambda s: set(s.tolist())).to_dict()
    return train, cold, truth


def metrics(recs: np.ndarray, users, truth: dict) -> dict:
    hits, ndcg, recall = [], [], []
    disc = 1.0 / np.log2(np.arange(2, K + 2))
    for row, u in zip(recs, users):
        rel = truth[u]
        hit = np.array([r in rel for r in row[:K]])
        hits.append(hit.any())
        ndcg.append((hit * disc[:len(hit)]).sum() / disc[:min(K, len(rel))].sum())
        recall.append(hit.sum() / min(K, len(rel)))
    return {f"hr@{K}": float(np.mean(hits)), f"ndcg@{K}": float(np.mean(ndcg)), f"recall@{K}": float(np.mean(recall))}


def category_popularity(shop, train, cold, users) -> np.ndarray:
    """Top-K cold items per user by the user's share of events in the item's category, then brand popularity."""
    items = shop.items.set_index("item_id")
    ev = shop.events[shop.events["item_id"].isin(train.item_ids) & shop.events["user_id"].isin(users)]
    ev = ev.assign(category=items.loc[ev["item_id"], "category"].to_numpy())
    share = ev.groupby(["user_id", "category"]).size().unstack(fill_value=0)
    share = share.div(share.sum(axis=1), axis=0).reindex(users).fillna(0.0)
    brand_events = shop.events[shop.events["item_id"].isin(train.item_ids)]
    brand_pop = items.loc[brand_events["item_id"], "brand"].value_counts(normalize=True)
    cold_cat = items.loc[cold, "category"].to_numpy()
    cold_brand = brand_pop.reindex(items.loc[cold, "brand"]).fillna(0.0).to_numpy()
    cat_cols = share.reindex(columns=np.unique(cold_cat), fill_value=0.0)
    scores = cat_cols[cold_cat].to_numpy() + 1e-3 * cold_brand[None, :]
    top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    return cold[top]


def run(args) -> dict:
    shop = ps.datasets.synthetic_shop(n_users=args.users, n_items=args.items, seed=args.seed)
    train, cold, truth = cold_split(shop, args.cold, args.seed)
    users = np.array(sorted(truth))
    items = shop.items.set_index("item_id")
    warm = items.loc[train.item_ids]
    new = items.loc[cold]
    rows = []
    print(f"shop: {args.users} users x {args.items} items, {len(shop.events):,} events; {len(cold)} cold items "
          f"held out; {len(users)} test users")

    rng = np.random.default_rng(args.seed)
    rand = np.stack([rng.permutation(cold)[:K] for _ in users])
    rows.append({"model": "random", **metrics(rand, users, truth), "fit_s": 0.0, "add_s": 0.0})
    t = time.perf_counter()
    pop = category_popularity(shop, train, cold, users)
    rows.append({"model": "category-popularity", **metrics(pop, users, truth),
                 "fit_s": round(time.perf_counter() - t, 3), "add_s": 0.0})

    feats = Features.from_frame(warm.reset_index(), train.item_map, "item_id", **FEATURE_SPEC)
    text_modes = ["tfidf"] + (["encoder"] if packaged_encoder_available() else [])
    variants = [("content-features", dict(text=None), True, False)]
    for mode in text_modes:
        variants += [(f"content-text-{mode}", dict(text=mode), False, True),
                     (f"content-features+text-{mode}", dict(text=mode), True, True),
                     (f"content-features+text-{mode}-recency20-k400", dict(text=mode, recency=20.0, k=400), True, True)]
    for name, params, use_f, use_t in variants:
        model = ps.ContentKNN(**{"k": args.k, "num_threads": args.threads, **params})
        t = time.perf_counter()
        model.fit(train, item_features=feats if use_f else None, item_text=warm["name"] if use_t else None)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        model.add_items(features=new.reset_index() if use_f else None, text=new["name"] if use_t else None)
        add_s = time.perf_counter() - t
        recs, _ = model.recommend_batch(users, n=K, items=cold)
        rows.append({"model": name, **metrics(recs, users, truth), "fit_s": round(fit_s, 3), "add_s": round(add_s, 3)})
        print(f"  {name}: hr@{K} {rows[-1][f'hr@{K}']:.4f} (fit {fit_s:.2f} s, add_items {add_s:.2f} s)")
    base = next(r for r in rows if r["model"] == "category-popularity")[f"hr@{K}"]
    for r in rows:
        r["hr_vs_category_popularity"] = round(r[f"hr@{K}"] / base, 3) if base else None
    return {"config": vars(args), "n_cold": int(len(cold)), "n_test_users": int(len(users)),
            "encoder_installed": packaged_encoder_available(), "rows": rows, "machine": machine_facts()}


def markdown(res: dict) -> str:
    cfg = res["config"]
    cols = [f"hr@{K}", f"ndcg@{K}", f"recall@{K}", "hr_vs_category_popularity", "fit_s", "add_s"]
    lines = [f"# Cold items: ContentKNN vs popularity within category\n",
             f"Synthetic shop {cfg['users']} users x {cfg['items']} items (seed {cfg['seed']}); {res['n_cold']} items "
             f"({cfg['cold']:.0%}) held out of training entirely; {res['n_test_users']} test users rank the held-out "
             f"items only. ContentKNN k={cfg['k']}; cold items added with add_items (no refit).\n",
             "| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in res["rows"]:
        lines.append("| " + " | ".join([r["model"]] + [f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c])
                                                        for c in cols]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--items", type=int, default=1500)
    p.add_argument("--cold", type=float, default=0.1, help="share of items held out entirely")
    p.add_argument("--k", type=int, default=100, help="ContentKNN neighbours per item")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="1,000 users x 300 items")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.items = 1000, 300
    res = run(args)
    write_results(args.out, "cold-quick" if args.quick else "cold", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
