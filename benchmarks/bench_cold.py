"""Cold start: new items (held out of training entirely) and new users with demographics only.

**Cold items** (fixed seeds): a synthetic shop; 10% of its items (``--cold``) are held out entirely --
every event on them is removed from training, so the models never see them interact. The test is
their events: for every training user who touched at least one held-out item, each model ranks

- **all items** (``all_*``, the realistic case: a cold item must beat the warm ones; seen items
  filtered), and
- **the held-out items only** (``cold_*``, the "new arrivals" shelf: ``items=`` the cold ids),

and we count ``hr@10`` (share of those users with at least one of their held-out items in the top
10), ``ndcg@10`` (binary relevance, ideal = min(10, |relevant|)) and ``recall@10``.

Models:

- ``random``: a seeded random order (of the unseen items, or of the held-out ones);
- ``category-popularity``: popularity within category -- an item scores the user's share of
  training events in its category times the item's popularity; a cold item has no popularity of its
  own, so it gets the mean popularity of the warm items of its category and brand (of its category
  when the brand has none there); on the cold shelf only the brand's popularity breaks ties;
- ``als`` / ``bpr`` / ``twotower`` ``+add_items``: fitted on the warm items with their features
  (category, brand, price buckets, tags and the name's words), the cold items then added from their
  features alone with ``add_items`` (no refit): a ridge map from features to item vectors for the
  factor models, the item tower for TwoTower;
- ``content-*``: ContentKNN fitted on the warm items, the cold items added with ``add_items``:
  features, name text (TF-IDF, or the packaged all-MiniLM-L6-v2 encoder when
  ``persona-recsys[text]`` is installed), both, and both with recency weighting (half-life 20 items)
  and k 400.

**New users**: 10% of the users (``--new-users``) are held out entirely. Each is asked for with no
event (``history=[]``), and again with their first event only (the target is then their other
items); the model gets their demographics: age band, gender, location and segment. Targets are the
user's items known to the model. Models: global popularity; popularity of the user's segment, and of
the user's segment x gender x age band cell (``MostPopular(user_segments=...)`` with
``user_features={"segment": ...}``); TwoTower with user features (all four) and without (history
only); ``ps.Hybrid`` fitted with the users' features, asked with ``user_features=``; ALS's fold-in of
the one event (history only).

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
# what the factor models and TwoTower read of an item: the ContentKNN fields plus the name's words
ITEM_SPEC = dict(FEATURE_SPEC, text=["name"])
USER_FIELDS = ["age_band", "gender", "location", "segment"]
AGE_BANDS = ([0, 24, 34, 44, 54, 200], ["<25", "25-34", "35-44", "45-54", "55+"])


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


def metrics(recs: np.ndarray, users, truth: dict, prefix: str = "") -> dict:
    hits, ndcg, recall = [], [], []
    disc = 1.0 / np.log2(np.arange(2, K + 2))
    for row, u in zip(recs, users):
        rel = truth[u]
        hit = np.array([r in rel for r in row[:K]])
        hits.append(hit.any())
        ndcg.append((hit * disc[:len(hit)]).sum() / disc[:min(K, len(rel))].sum())
        recall.append(hit.sum() / min(K, len(rel)))
    return {f"{prefix}hr@{K}": float(np.mean(hits)), f"{prefix}ndcg@{K}": float(np.mean(ndcg)),
            f"{prefix}recall@{K}": float(np.mean(recall))}


def both_scopes(model, users, truth, cold) -> dict:
    """Metrics of a fitted model (cold items added) ranking all items, then the cold items only."""
    all_recs, _ = model.recommend_batch(users, n=K)
    cold_recs, _ = model.recommend_batch(users, n=K, items=cold)
    return {**metrics(all_recs, users, truth, "all_"), **metrics(cold_recs, users, truth, "cold_")}


def category_popularity(shop, train, cold, users) -> dict:
    """Popularity within category, ranking all items and the cold items only (see the module docstring)."""
    items = shop.items.set_index("item_id")
    warm_ev = shop.events[shop.events["item_id"].isin(train.item_ids)]
    ev = warm_ev[warm_ev["user_id"].isin(users)]
    ev = ev.assign(category=items.loc[ev["item_id"], "category"].to_numpy())
    share = ev.groupby(["user_id", "category"]).size().unstack(fill_value=0)
    share = share.div(share.sum(axis=1), axis=0).reindex(users).fillna(0.0)
    # cold-only shelf: category share, ties broken by the brand's popularity
    brand_pop = items.loc[warm_ev["item_id"], "brand"].value_counts(normalize=True)
    cold_cat = items.loc[cold, "category"].to_numpy()
    cold_brand = brand_pop.reindex(items.loc[cold, "brand"]).fillna(0.0).to_numpy()
    scores = share.reindex(columns=np.unique(cold_cat), fill_value=0.0)[cold_cat].to_numpy() + 1e-3 * cold_brand[None, :]
    cold_recs = cold[np.argsort(-scores, axis=1, kind="stable")[:, :K]]
    # all items: category share x item popularity; a cold item gets its category-and-brand mean
    pop = warm_ev.groupby("item_id")["user_id"].nunique().reindex(items.index).astype(float)
    frame = items[["category", "brand"]].assign(pop=pop)
    cell = frame.groupby(["category", "brand"])["pop"].transform("mean")
    cat = frame.groupby("category")["pop"].transform("mean")
    est = frame["pop"].fillna(cell).fillna(cat).fillna(0.0)
    all_ids = items.index.to_numpy()
    scores = share.reindex(columns=np.unique(items["category"]), fill_value=0.0)[items["category"].to_numpy()]
    scores = scores.to_numpy() * est.to_numpy()[None, :]
    seen = warm_ev.groupby("user_id")["item_id"].agg(set).reindex(users)
    pos = {iid: j for j, iid in enumerate(all_ids)}
    for r, s_items in enumerate(seen):
        scores[r, [pos[i] for i in s_items]] = -np.inf
    all_recs = all_ids[np.argsort(-scores, axis=1, kind="stable")[:, :K]]
    return {"cold": cold_recs, "all": all_recs}


def random_recs(shop, train, cold, users, rng) -> dict:
    all_ids = shop.items["item_id"].to_numpy()
    seen = train.matrix.tocsr()
    uidx = train.user_map.lookup(users)
    all_recs = []
    for u in uidx:
        s = set(train.item_ids[seen.indices[seen.indptr[u]:seen.indptr[u + 1]]].tolist())
        pick = [i for i in rng.permutation(all_ids)[:K + len(s)] if i not in s]
        all_recs.append(pick[:K])
    return {"cold": np.stack([rng.permutation(cold)[:K] for _ in users]), "all": np.array(all_recs)}


def twotower(args, **extra) -> ps.TwoTower:
    return ps.TwoTower(epochs=args.epochs, random_state=args.seed, num_threads=args.threads, **extra)


def run_items(args, shop) -> dict:
    train, cold, truth = cold_split(shop, args.cold, args.seed)
    users = np.array(sorted(truth))
    items = shop.items.set_index("item_id")
    warm = items.loc[train.item_ids]
    new = items.loc[cold]
    rows = []
    print(f"cold items: {len(cold)} held out; {len(users)} test users", flush=True)

    def keep(name, scores, fit_s=0.0, add_s=0.0):
        rows.append({"model": name, **scores, "fit_s": round(fit_s, 3), "add_s": round(add_s, 3)})
        print(f"  {name}: all hr@{K} {scores[f'all_hr@{K}']:.4f}, cold-only hr@{K} {scores[f'cold_hr@{K}']:.4f} "
              f"(fit {fit_s:.2f} s, add_items {add_s:.2f} s)", flush=True)

    rng = np.random.default_rng(args.seed)
    recs = random_recs(shop, train, cold, users, rng)
    keep("random", {**metrics(recs["all"], users, truth, "all_"), **metrics(recs["cold"], users, truth, "cold_")})
    t = time.perf_counter()
    recs = category_popularity(shop, train, cold, users)
    keep("category-popularity", {**metrics(recs["all"], users, truth, "all_"),
                                 **metrics(recs["cold"], users, truth, "cold_")}, time.perf_counter() - t)

    # factor models and TwoTower: item features (with the name's words); cold items from a DataFrame
    item_feats = Features.from_frame(warm.reset_index(), train.item_map, "item_id", **ITEM_SPEC)
    learners = [("als+add_items", lambda: ps.ALS(random_state=args.seed, num_threads=args.threads)),
                ("bpr+add_items", lambda: ps.BPR(random_state=args.seed, num_threads=args.threads))]
    if not args.no_twotower:
        learners.append(("twotower+add_items", lambda: twotower(args)))
    for name, make in learners:
        t = time.perf_counter()
        model = make().fit(train, item_features=item_feats)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        model.add_items(new.reset_index())
        keep(name, both_scopes(model, users, truth, cold), fit_s, time.perf_counter() - t)

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
        keep(name, both_scopes(model, users, truth, cold), fit_s, time.perf_counter() - t)
    base = next(r for r in rows if r["model"] == "category-popularity")
    for r in rows:
        for scope in ("all", "cold"):
            b = base[f"{scope}_hr@{K}"]
            r[f"{scope}_hr_vs_category_popularity"] = round(r[f"{scope}_hr@{K}"] / b, 3) if b else None
    return {"n_cold": int(len(cold)), "n_test_users": int(len(users)), "rows": rows}


def age_band(age) -> np.ndarray:
    import pandas as pd

    edges, labels = AGE_BANDS
    return pd.cut(age, edges, labels=labels).astype(str).to_numpy()


def new_user_split(shop, frac: float, seed: int):
    """(train without the held-out users, the users' frame with age bands, held-out ids, their events)."""
    rng = np.random.default_rng(seed + 1)
    users = shop.users.assign(age_band=age_band(shop.users["age"]))
    ids = users["user_id"].to_numpy()
    held = np.sort(rng.choice(ids, size=max(1, int(round(frac * len(ids)))), replace=False))
    out = shop.events["user_id"].isin(held)
    train = ps.Interactions.from_frame(shop.events[~out], user="user_id", item="item_id", time="timestamp",
                                       event="event")
    return train, users, held, shop.events[out].sort_values(["user_id", "timestamp"], kind="stable")


def new_user_cases(train, users, held_events):
    """Per case ("0 events", "1 event"): (user ids, histories, demographics dicts, truth)."""
    known = set(train.item_ids.tolist())
    demo = users.set_index("user_id")[USER_FIELDS]
    cases = {"0 events": ([], [], [], {}), "1 event": ([], [], [], {})}
    for u, ev in held_events.groupby("user_id", sort=True):
        seq = [i for i in dict.fromkeys(ev["item_id"].tolist()) if i in known]
        d = {f: demo.at[u, f] for f in USER_FIELDS}
        for case, hist in (("0 events", []), ("1 event", seq[:1])):
            target = set(seq[len(hist):])
            if not seq or not target:
                continue
            ids, hists, demos, truth = cases[case]
            ids.append(u)
            hists.append(hist)
            demos.append(d)
            truth[u] = target
    return cases


def run_users(args, shop) -> dict:
    import pandas as pd

    train, users, held, held_events = new_user_split(shop, args.new_users, args.seed)
    cases = new_user_cases(train, users, held_events)
    print(f"new users: {len(held)} held out; " + ", ".join(f"{c}: {len(v[0])} users" for c, v in cases.items()),
          flush=True)
    train_users = users.set_index("user_id").loc[train.user_ids]
    cell = pd.Series((train_users["segment"] + "|" + train_users["gender"] + "|" + train_users["age_band"]).to_numpy(),
                     index=train.user_ids, name="cell")
    user_feats = Features.from_frame(train_users.reset_index(), train.user_map, "user_id", categorical=USER_FIELDS)
    items = shop.items.set_index("item_id")
    item_feats = Features.from_frame(items.loc[train.item_ids].reset_index(), train.item_map, "item_id", **ITEM_SPEC)

    def ask_batch(model, fields):
        def ask(hists, demos):
            described = None if fields is None else [{f: d[f] for f in fields} for d in demos]
            return model.recommend_for_history_batch(hists, n=K, user_features=described)[0]
        return ask

    def ask_cell(model):
        def ask(hists, demos):
            return model.recommend_for_history_batch(
                hists, n=K, user_features=[{"cell": f"{d['segment']}|{d['gender']}|{d['age_band']}"} for d in demos])[0]
        return ask

    contenders = []

    def fitted(name, fit_s):
        print(f"  fitted {name} in {fit_s:.1f} s", flush=True)

    t = time.perf_counter()
    pop = ps.MostPopular().fit(train)
    contenders.append(("global-popularity", ask_batch(pop, None), time.perf_counter() - t))
    t = time.perf_counter()
    seg = ps.MostPopular().fit(train, user_segments=train_users["segment"].set_axis(train.user_ids))
    contenders.append(("segment-popularity", ask_batch(seg, ["segment"]), time.perf_counter() - t))
    t = time.perf_counter()
    cells = ps.MostPopular().fit(train, user_segments=cell)
    contenders.append(("segment-gender-age-popularity", ask_cell(cells), time.perf_counter() - t))
    if not args.no_twotower:
        t = time.perf_counter()
        tt = twotower(args).fit(train, item_features=item_feats, user_features=user_feats)
        contenders.append(("twotower+user-features", ask_batch(tt, USER_FIELDS), time.perf_counter() - t))
        fitted(*contenders[-1][::2])
        t = time.perf_counter()
        tt0 = twotower(args).fit(train, item_features=item_feats)
        contenders.append(("twotower-history-only", ask_batch(tt0, None), time.perf_counter() - t))
        fitted(*contenders[-1][::2])
    for share in ([] if args.no_hybrid else args.hybrid_cold_users):
        t = time.perf_counter()
        hybrid = ps.Hybrid(cold_users=share, random_state=args.seed, num_threads=args.threads,
                           show_progress=False).fit(train, user_features=user_feats, item_features=item_feats)

        def ask_hybrid(hists, demos, hybrid=hybrid):
            return np.array([hybrid.recommend_for_history(h, n=K, user_features=d)[0] for h, d in zip(hists, demos)])
        name = "hybrid+user-features" + (f" (cold_users {share:g})" if share else "")
        contenders.append((name, ask_hybrid, time.perf_counter() - t))
        fitted(*contenders[-1][::2])
    t = time.perf_counter()
    als = ps.ALS(random_state=args.seed, num_threads=args.threads).fit(train)
    als_fit = time.perf_counter() - t

    rows = []
    for case, (ids, hists, demos, truth) in cases.items():
        ask_list = contenders + ([("als-fold-in (history only)", ask_batch(als, None), als_fit)]
                                 if case != "0 events" else [])
        for name, ask, fit_s in ask_list:
            t = time.perf_counter()
            recs = ask(hists, demos)
            rows.append({"case": case, "model": name, **metrics(recs, ids, truth), "fit_s": round(fit_s, 3),
                         "ask_s": round(time.perf_counter() - t, 3)})
            print(f"  {case} {name}: hr@{K} {rows[-1][f'hr@{K}']:.4f} ndcg@{K} {rows[-1][f'ndcg@{K}']:.4f}", flush=True)
        base = next(r for r in rows if r["case"] == case and r["model"] == "global-popularity")[f"hr@{K}"]
        for r in rows:
            if r["case"] == case:
                r["hr_vs_global_popularity"] = round(r[f"hr@{K}"] / base, 3) if base else None
    return {"n_new_users": int(len(held)), "n_per_case": {c: len(v[0]) for c, v in cases.items()}, "rows": rows}


def run(args) -> dict:
    shop = ps.datasets.synthetic_shop(n_users=args.users, n_items=args.items, seed=args.seed)
    print(f"shop: {args.users} users x {args.items} items, {len(shop.events):,} events", flush=True)
    out = {"config": vars(args), "encoder_installed": packaged_encoder_available(), "machine": machine_facts()}
    if args.part in ("all", "items"):
        out["items"] = run_items(args, shop)
    if args.part in ("all", "users"):
        out["users"] = run_users(args, shop)
    return out


def _table(rows, cols, first) -> list[str]:
    lines = ["| " + " | ".join(first + cols) + " |", "|---" * (len(cols) + len(first)) + "|"]
    for r in rows:
        cells = [str(r[c]) for c in first] + [f"{r[c]:.4f}" if isinstance(r.get(c), float) else str(r.get(c))
                                              for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(res: dict) -> str:
    cfg = res["config"]
    lines = ["# Cold start: new items and new users\n",
             f"Synthetic shop {cfg['users']} users x {cfg['items']} items (seed {cfg['seed']}); TwoTower "
             f"{cfg['epochs']} epochs at most (early stopping).\n"]
    if "items" in res:
        it = res["items"]
        lines += [f"## Cold items\n",
                  f"{it['n_cold']} items ({cfg['cold']:.0%}) held out of training entirely; {it['n_test_users']} test "
                  "users. `all_`: ranking every item (seen ones filtered); `cold_`: ranking the held-out items only. "
                  "Cold items added with add_items (no refit); ContentKNN k="
                  f"{cfg['k']}.\n"]
        cols = [f"all_hr@{K}", f"all_ndcg@{K}", "all_hr_vs_category_popularity", f"cold_hr@{K}", f"cold_ndcg@{K}",
                f"cold_recall@{K}", "cold_hr_vs_category_popularity", "fit_s", "add_s"]
        lines += _table(it["rows"], cols, ["model"]) + [""]
    if "users" in res:
        us = res["users"]
        lines += [f"## New users\n",
                  f"{us['n_new_users']} users ({cfg['new_users']:.0%}) held out entirely; asked with no event and with "
                  f"their first event only ({us['n_per_case']}), with their age band, gender, location and segment.\n"]
        cols = [f"hr@{K}", f"ndcg@{K}", f"recall@{K}", "hr_vs_global_popularity", "fit_s", "ask_s"]
        lines += _table(us["rows"], cols, ["case", "model"]) + [""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--items", type=int, default=1500)
    p.add_argument("--cold", type=float, default=0.1, help="share of items held out entirely")
    p.add_argument("--new-users", type=float, default=0.1, help="share of users held out entirely")
    p.add_argument("--k", type=int, default=100, help="ContentKNN neighbours per item")
    p.add_argument("--epochs", type=int, default=20, help="TwoTower's most epochs")
    p.add_argument("--part", choices=("all", "items", "users"), default="all")
    p.add_argument("--no-twotower", action="store_true", help="skip TwoTower (needs PyTorch)")
    p.add_argument("--no-hybrid", action="store_true", help="skip ps.Hybrid")
    p.add_argument("--hybrid-cold-users", type=float, nargs="+", default=[0.0, 0.3],
                   help="Hybrid(cold_users=...) shares to measure (each a fit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="1,000 users x 300 items")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.items = 1000, 300
    res = run(args)
    stem = "cold-quick" if args.quick else "cold"
    write_results(args.out, stem if args.part == "all" else f"{stem}-{args.part}", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
