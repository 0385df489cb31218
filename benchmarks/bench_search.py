"""Personalised search: does a user's taste help find what they buy, beside BM25 and sentence embeddings?

Protocol (fixed seeds): a synthetic shop whose event log is cut at 80% of its days. The models
(EASE, ItemKNN, ALS) are fitted on the events before the cut. For every user with history before
the cut, their first purchase after it is a *search session*: a query built from the bought item's
name with noise, the search answering it, and the bought item as the one right answer.

Query noise, one or two of (seeded):

- ``drop``: a word of the name left out (often the brand: "Ocean Shaving Foam");
- ``typo``: one word of four letters or more with a character deleted, swapped or doubled;
- ``synonym``: the product type replaced by its category ("Bloom Ocean Men's Grooming").

The sessions are split in two halves by user: ``semantic`` (the embedding share of the text
relevance) and each model's ``weight`` are chosen on the validation half by NDCG@10, and every
figure is reported on the test half. Users unknown to a model get the text ranking (all users here
are known). Latency: single-query p50 / p99 of ``search`` on the test queries, text alone and
personalised, with the real (uncached) encoder; first with BLAS threads as they are, then after
``ps.serving.limit_threads(1)`` as a web worker runs (a BLAS call spread over every core for one
query vector fights the encoder for the cores).

Writes ``search.json`` / ``search.md`` to ``benchmarks/results/``.

    python benchmarks/bench_search.py             # 4,000 users x 2,000 items
    python benchmarks/bench_search.py --quick     # 1,000 x 500
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
from persona.onnx import SentenceEncoder, packaged_encoder_available  # noqa: E402

K = 10
SEMANTICS = (0.0, 0.2, 0.3, 0.5, 0.7, 1.0)
WEIGHTS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 1.0)
NOISE = ("drop", "typo", "synonym")


# ------------------------------------------------------------------------------------------ sessions
def _typo(word: str, rng) -> str:
    i = int(rng.integers(1, len(word) - 1))
    kind = rng.integers(3)
    if kind == 0:
        return word[:i] + word[i + 1:]                       # a letter deleted
    if kind == 1:
        return word[:i - 1] + word[i] + word[i - 1] + word[i + 1:]  # two letters swapped
    return word[:i] + word[i] + word[i:]                     # a letter doubled


def noisy_query(name: str, brand: str, category: str, rng) -> tuple[str, str]:
    """(query, the noise applied) for an item called ``name``."""
    words = name.split()
    n_brand = len(brand.split())
    ops = list(rng.choice(NOISE, size=1 + int(rng.random() < 0.5), replace=False))
    if "synonym" in ops and len(words) > n_brand + 1:
        words = words[:n_brand + 1] + category.split()   # brand + adjective + the category for the type
    if "drop" in ops and len(words) > 1:
        del words[int(rng.integers(len(words)))]
    if "typo" in ops:
        long = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
        if long:
            i = long[int(rng.integers(len(long)))]
            words[i] = _typo(words[i], rng)
    return " ".join(words).lower(), "+".join(sorted(ops))


def sessions(shop, cut: float, seed: int):
    """(training interactions, a table of search sessions: user, item, query, noise, half)."""
    import pandas as pd

    ev = shop.events
    t_cut = ev["timestamp"].min() + (ev["timestamp"].max() - ev["timestamp"].min()) * cut
    before, after = ev[ev["timestamp"] < t_cut], ev[ev["timestamp"] >= t_cut]
    train = ps.Interactions.from_frame(before, user="user_id", item="item_id", time="timestamp", event="event")
    buys = after[(after["event"] == "purchase") & after["user_id"].isin(train.user_ids)]
    first = buys.sort_values("timestamp").drop_duplicates("user_id")
    items = shop.items.set_index("item_id")
    rng = np.random.default_rng(seed)
    rows = []
    for user, item in zip(first["user_id"], first["item_id"]):
        it = items.loc[item]
        q, noise = noisy_query(it["name"], it["brand"], it["category"], rng)
        rows.append((user, item, q, noise))
    table = pd.DataFrame(rows, columns=["user", "item", "query", "noise"])
    users = np.sort(table["user"].unique())
    valid_users = set(np.random.default_rng(seed + 1).permutation(users)[: len(users) // 2].tolist())
    table["half"] = np.where(table["user"].isin(valid_users), "valid", "test")
    return train, table


# ------------------------------------------------------------------------------------------ scoring
class CachedEncoder:
    """The packaged encoder behind a cache: the grid search embeds each text once."""

    def __init__(self):
        self.inner, self.cache = SentenceEncoder(), {}

    def __call__(self, texts):
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            for t, v in zip(todo, self.inner(todo)):
                self.cache[t] = v
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, SentenceEncoder.dim), np.float32)


def quality(search, table, personalised: bool) -> dict:
    """NDCG@10 and HR@10 of ``search`` on the sessions of ``table`` (and NDCG@10 per noise kind)."""
    gains = np.zeros(len(table))
    for r, (user, item, q) in enumerate(zip(table["user"], table["item"], table["query"])):
        ids, _ = search.search(q, user=user if personalised else None, n=K)
        hit = np.flatnonzero(ids == item)
        gains[r] = 1.0 / np.log2(hit[0] + 2) if len(hit) else 0.0
    out = {"ndcg@10": float(gains.mean()), "hr@10": float((gains > 0).mean()), "n": len(table)}
    for kind in sorted(table["noise"].unique()):
        out[f"ndcg@10 {kind}"] = float(gains[(table["noise"] == kind).to_numpy()].mean())
    return out


def latency(search, table, personalised: bool, repeat: int) -> dict:
    times = []
    for user, q in list(zip(table["user"], table["query"]))[:repeat]:
        t = time.perf_counter()
        search.search(q, user=user if personalised else None, n=K)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


# ------------------------------------------------------------------------------------------ the run
def run(args) -> dict:
    shop = ps.datasets.synthetic_shop(n_users=args.users, n_items=args.items, seed=args.seed)
    train, table = sessions(shop, args.cut, args.seed)
    valid, test = table[table["half"] == "valid"], table[table["half"] == "test"]
    print(f"{shop}\n{len(valid)} validation and {len(test)} test sessions; {train}", flush=True)
    catalogue = shop.items
    has_encoder = packaged_encoder_available() and not args.no_encoder
    enc = CachedEncoder() if has_encoder else None
    rows, chosen = [], {}

    # text alone: BM25, then the embedding share chosen on the validation half
    semantics = SEMANTICS if has_encoder else (0.0,)
    by_sem = {}
    for s in semantics:
        search = ps.ProductSearch(catalogue, text="name", encoder=enc, semantic=s)
        by_sem[s] = (quality(search, valid, False)["ndcg@10"], search)
        print(f"  text semantic={s}: valid NDCG@10 {by_sem[s][0]:.4f}", flush=True)
    for s in semantics:
        if s in (0.0, 1.0):
            label = "BM25 alone" if s == 0.0 else "embeddings alone"
            rows.append({"search": label, "semantic": s, "weight": 0.0, "valid ndcg@10": by_sem[s][0],
                         **quality(by_sem[s][1], test, False)})
    best_s = max(semantics, key=lambda s: (by_sem[s][0], -s))
    chosen["semantic"] = best_s
    if best_s not in (0.0, 1.0):
        rows.append({"search": "BM25 + embeddings", "semantic": best_s, "weight": 0.0,
                     "valid ndcg@10": by_sem[best_s][0], **quality(by_sem[best_s][1], test, False)})
    text_row = rows[-1]
    print(f"  text alone: test NDCG@10 {text_row['ndcg@10']:.4f} (semantic {best_s})", flush=True)

    models = {"EASE": ps.EASE(regularization=args.ease_lambda), "ItemKNN": ps.ItemKNN(),
              "ALS": ps.ALS(factors=64, iterations=15, random_state=args.seed)}
    curves = {}
    for name, model in models.items():
        t = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - t
        curve = {}
        for w in WEIGHTS:
            search = ps.ProductSearch(catalogue, text="name", encoder=enc, semantic=best_s, personalise=model,
                                      weight=w)
            curve[w] = quality(search, valid, True)["ndcg@10"]
        curves[name] = curve
        w_best = max(WEIGHTS, key=lambda w: (curve[w], -w))
        chosen[name] = w_best
        print(f"  {name}: valid NDCG@10 by weight {({w: round(v, 4) for w, v in curve.items()})}", flush=True)
        search = ps.ProductSearch(catalogue, text="name", encoder=enc, semantic=best_s, personalise=model,
                                  weight=w_best)
        rows.append({"search": f"personalised by {name}", "semantic": best_s, "weight": w_best,
                     "valid ndcg@10": curve[w_best], "fit_s": fit_s, **quality(search, test, True)})
        print(f"  {name} (weight {w_best}): test NDCG@10 {rows[-1]['ndcg@10']:.4f}", flush=True)
    if has_encoder:  # the defaults as shipped: nothing chosen on this data
        default = ps.ProductSearch(catalogue, text="name", encoder=enc, personalise=models["EASE"])
        rows.append({"search": "personalised by EASE, defaults", "semantic": default.semantic,
                     "weight": default.weight, "valid ndcg@10": quality(default, valid, True)["ndcg@10"],
                     **quality(default, test, True)})

    # latency with the real encoder, as a shop would run it: first with the BLAS threads as they
    # are, then as a web worker runs after ps.serving.limit_threads(1)
    lat = {}
    real = "auto" if has_encoder else None
    searches = {"BM25 alone": (ps.ProductSearch(catalogue, text="name", encoder=None), False)}
    if has_encoder:
        searches["BM25 + embeddings"] = (ps.ProductSearch(catalogue, text="name", encoder=real, semantic=best_s),
                                         False)
    searches["personalised by EASE"] = (ps.ProductSearch(catalogue, text="name", encoder=real, semantic=best_s,
                                                         personalise=models["EASE"], weight=chosen["EASE"]), True)
    for label in ("", ", limit_threads(1)"):
        if label:
            ps.serving.limit_threads(1)
        for name, (search, personal) in searches.items():
            search.search("warm up")  # the encoder's session starts on the first call
            lat[name + label] = latency(search, test, personal, args.latency_queries)
    for k, v in lat.items():
        print(f"  latency {k}: p50 {v['p50_ms']:.2f} ms, p99 {v['p99_ms']:.2f} ms", flush=True)
    return {"args": vars(args), "n_valid": len(valid), "n_test": len(test), "encoder": has_encoder,
            "chosen": chosen, "weight_curves": curves, "rows": rows, "latency": lat,
            "examples": test.head(8)[["query", "noise"]].values.tolist(), "machine": machine_facts()}


def markdown(res: dict) -> str:
    a = res["args"]
    kinds = sorted({k.split(" ", 1)[1] for r in res["rows"] for k in r if k.startswith("ndcg@10 ")})
    head = "| search | semantic | weight | NDCG@10 | HR@10 | " + " | ".join(kinds) + " |"
    lines = [f"## Personalised search: synthetic shop, {a['users']} users x {a['items']} items, seed {a['seed']}", "",
             f"Test half: {res['n_test']} search sessions (validation half: {res['n_valid']}); "
             f"encoder installed: {res['encoder']}. NDCG@10 / HR@10 of the bought item; the last columns "
             "are NDCG@10 by query noise. `semantic` and `weight` chosen on the validation half.", "",
             head, "|" + "---|" * (5 + len(kinds))]
    for r in res["rows"]:
        lines.append(f"| {r['search']} | {r['semantic']} | {r['weight']} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} | "
                     + " | ".join(f"{r.get('ndcg@10 ' + k, float('nan')):.3f}" for k in kinds) + " |")
    lines += ["", "Validation NDCG@10 by weight:", "", "| model | " + " | ".join(str(w) for w in WEIGHTS) + " |",
              "|---|" + "---|" * len(WEIGHTS)]
    for name, curve in res["weight_curves"].items():
        lines.append(f"| {name} | " + " | ".join(f"{curve[w]:.4f}" for w in WEIGHTS) + " |")
    lines += ["", "| latency (one query, n=10) | p50 ms | p99 ms |", "|---|---|---|"]
    for k, v in res["latency"].items():
        lines.append(f"| {k} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} |")
    m = res["machine"]
    lines += ["", f"Machine: {m.get('cores')} cores, {m.get('processor')}, Python {m.get('python')}, "
              f"onnxruntime {m.get('onnxruntime', '-')}, faiss {m.get('faiss', '-')}.", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=4000)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--cut", type=float, default=0.8, help="share of the log's time span used for training")
    p.add_argument("--ease-lambda", type=float, default=50.0)
    p.add_argument("--latency-queries", type=int, default=300)
    p.add_argument("--no-encoder", action="store_true", help="BM25 only, even when the encoder is installed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="1,000 users x 500 items")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.items = 1000, 500
    res = run(args)
    write_results(args.out, "search-quick" if args.quick else "search", res, markdown(res))


if __name__ == "__main__":
    main()
