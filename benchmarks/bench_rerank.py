"""Re-ranking trade-offs: NDCG@10 against diversity, coverage and calibration, MMR and Calibrated.

Protocol: leave-last-out (``ps.split.leave_last_out``); the base model (EASE, or ItemKNN with
``--model itemknn``) is fitted on train + valid and ranks all items for every test user, seen items
excluded, as in benchmarks/run.py. Its top ``--candidates`` (default 100) per user are computed once;
each re-ranker then picks 10 of them, exactly as ``ps.ranking.Reranked`` does on every request (one
configuration is checked against ``ps.evaluate(Reranked(...))`` in the same run). Every list is
scored by ``ps.evaluate``:

- ``ndcg@10``, ``hr@10`` -- accuracy on the held-out last item;
- ``ild@10`` -- intra-list diversity: 1 - mean pairwise cosine of the items' training columns
  (``evaluate``'s ``diversity`` without categories; MMR's own similarity on an item-item model);
- ``cat_div@10`` -- fraction of item pairs of different categories (``diversity`` with categories);
- ``coverage@10`` -- distinct recommended items / catalogue;
- ``kl@10`` -- Steck's miscalibration KL(p_user || q~_list) (alpha 0.01), mean over users.

Sweeps: MMR diversity in {0, 0.1, 0.2, 0.4, 0.6}; Calibrated weight in {0, 0.25, 0.5, 0.75, 0.9}.

Data: the synthetic shop (``--users``/``--items``, fixed seed; its item categories) and, when the
shared folder has it, Amazon Beauty (22k users x 12k items). Beauty's attribute file lists several
ids per item (categories and brand); an item's category here is its most frequent attribute among
those held by fewer than half of the items (the broadest real category; -1 without attributes).

Writes ``rerank.json`` / ``rerank.md`` to ``benchmarks/results/``.

    python benchmarks/bench_rerank.py                 # synthetic shop + Beauty when present
    python benchmarks/bench_rerank.py --no-beauty     # synthetic shop only
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import default_beauty, write_results  # noqa: E402

from machine import machine_facts  # noqa: E402

import persona as ps  # noqa: E402
from persona.ranking import MMR, Calibrated, Reranked  # noqa: E402

MMR_GRID = (0.0, 0.1, 0.2, 0.4, 0.6)
CAL_GRID = (0.0, 0.25, 0.5, 0.75, 0.9)
K = 10


class Lists:
    """Precomputed top-k lists posing as a model for ``ps.evaluate`` (its RankingModel protocol)."""

    def __init__(self, model, users: np.ndarray, idx: np.ndarray):
        self.user_map_, self.item_map_, self.user_items_ = model.user_map_, model.item_map_, model.user_items_
        self._row = np.full(len(model.user_map_), -1, dtype=np.int64)
        self._row[users] = np.arange(len(users))
        self._idx = idx

    def recommend_indices(self, user_indices, n, *, filter_seen=True, exclude=None):
        rows = self._row[np.asarray(user_indices, dtype=np.int64)]
        if (rows < 0).any():
            raise RuntimeError("a user without a precomputed list was asked for")
        out = np.full((len(rows), n), -1, dtype=np.int64)
        w = min(n, self._idx.shape[1])
        out[:, :w] = self._idx[rows, :w]
        return out, np.where(out >= 0, -np.arange(n, dtype=np.float32)[None, :], -np.inf).astype(np.float32)


def beauty_categories(data, item_map) -> np.ndarray:
    """One category per item: its most frequent attribute among those held by < half of the items."""
    attrs = data.item_attributes or {}
    counts = Counter(a for v in attrs.values() for a in set(v))
    limit = 0.5 * max(1, len(attrs))
    cats = np.full(len(item_map), -1, dtype=np.int64)
    pos = item_map.lookup(list(attrs.keys())) if attrs else np.zeros(0, np.int64)
    for p, v in zip(pos, attrs.values()):
        usable = [a for a in v if counts[a] < limit]
        if p >= 0 and usable:
            cats[p] = max(usable, key=lambda a: (counts[a], -a))
    return cats


def in_batches(fn, m: int, step: int = 2048):
    """Concatenate ``fn(slice)`` over row slices of ``m`` rows (bounded memory)."""
    parts = [fn(slice(s, min(s + step, m))) for s in range(0, m, step)]
    return tuple(np.concatenate(p) for p in zip(*parts))


def run_dataset(name: str, inter, cats: np.ndarray, args) -> list[dict]:
    train, valid, test = ps.split.leave_last_out(inter)
    full = train.concat(valid)
    t = time.perf_counter()
    model = (ps.EASE(regularization=args.regularization) if args.model == "ease" else ps.ItemKNN(k=200)).fit(full)
    fit_s = time.perf_counter() - t
    users = np.unique(model.user_map_.lookup(test.user_ids[np.unique(test.users)]))
    users = users[users >= 0]
    t = time.perf_counter()
    cand, cand_s = in_batches(lambda sl: model.recommend_indices(users[sl], args.candidates), len(users))
    cand_time = time.perf_counter() - t
    ui = model.user_items_
    hists = [ui.indices[ui.indptr[u]:ui.indptr[u + 1]] for u in users]
    kl_meter = Calibrated(cats, weight=0.0).fit(model)
    print(f"{name}: {inter}; {args.model} fitted in {fit_s:.1f} s, {len(users)} test users, "
          f"top-{args.candidates} candidates in {cand_time:.1f} s", flush=True)

    rows = []
    configs = [("none", None, float("nan"))] + [("MMR", MMR(diversity=d), d) for d in MMR_GRID] + \
              [("Calibrated", Calibrated(cats, weight=w), w) for w in CAL_GRID]
    for method, reranker, param in configs:
        t = time.perf_counter()
        if reranker is None:
            idx = cand[:, :K]
        else:
            fitted = reranker.fit(model)
            idx = in_batches(lambda sl: fitted.rerank(hists[sl], cand[sl], cand_s[sl], K), len(users))[0]
        rerank_s = time.perf_counter() - t
        lists = Lists(model, users, idx)
        rep = ps.evaluate(lists, test, k=K, metrics=("hr", "ndcg", "coverage", "diversity", "novelty"))
        cat = ps.evaluate(lists, test, k=K, metrics=("diversity",), item_categories=cats)
        row = {"data": name, "method": method, "param": param, "ndcg@10": rep["ndcg@10"], "hr@10": rep["hr@10"],
               "ild@10": rep["diversity@10"], "cat_div@10": cat["diversity@10"], "coverage@10": rep["coverage@10"],
               "novelty@10": rep["novelty@10"], "kl@10": float(kl_meter.kl(hists, idx).mean()),
               "rerank_s": rerank_s, "users_per_s": len(users) / rerank_s if reranker is not None else float("nan"),
               "n_users": rep["n_users"]}
        rows.append(row)
        print(f"  {method} {param:g}: NDCG@10 {row['ndcg@10']:.4f} ILD {row['ild@10']:.3f} cat-div "
              f"{row['cat_div@10']:.3f} coverage {row['coverage@10']:.3f} KL {row['kl@10']:.3f} "
              f"({rerank_s:.2f} s)", flush=True)
    # the shortcut above is what Reranked does per request: check one configuration end to end
    check = ps.evaluate(Reranked(model, MMR(diversity=0.2), candidates=args.candidates), test, k=K, metrics=("ndcg",))
    cached = next(r for r in rows if r["method"] == "MMR" and r["param"] == 0.2)["ndcg@10"]
    if abs(check["ndcg@10"] - cached) > 1e-9:
        raise SystemExit(f"Reranked end to end gives NDCG@10 {check['ndcg@10']} but the cached path {cached}")
    for r in rows:
        r["model"], r["fit_s"], r["candidates_s"] = args.model, fit_s, cand_time
    return rows


def markdown(rows: list[dict], facts: dict) -> str:
    lines = ["# Re-ranking trade-offs (MMR, Calibrated)", "",
             f"Machine: {facts.get('processor', '')}, {facts.get('cores', '')} cores, numpy {facts.get('numpy', '')}; persona {ps.__version__}.", "",
             "| data | method | λ / weight | NDCG@10 | HR@10 | ILD@10 | cat-div@10 | coverage@10 | KL@10 | "
             "re-rank s | users/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        param = "—" if r["method"] == "none" else f"{r['param']:g}"
        speed = "—" if np.isnan(r["users_per_s"]) else f"{r['users_per_s']:,.0f}"
        lines.append(f"| {r['data']} | {r['method']} | {param} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} | "
                     f"{r['ild@10']:.3f} | {r['cat_div@10']:.3f} | {r['coverage@10']:.3f} | {r['kl@10']:.3f} | "
                     f"{r['rerank_s']:.2f} | {speed} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("ease", "itemknn"), default="ease")
    ap.add_argument("--regularization", type=float, default=50.0, help="EASE's lambda (50: the data README's)")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--users", type=int, default=3000, help="synthetic shop users")
    ap.add_argument("--items", type=int, default=500, help="synthetic shop items")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-beauty", action="store_true", help="skip Amazon Beauty")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)

    facts = machine_facts()
    shop = ps.datasets.synthetic_shop(n_users=args.users, n_items=args.items, seed=args.seed)
    rows = run_dataset("synthetic", shop.interactions, shop.item_categories(shop.interactions.item_map), args)
    beauty = None if args.no_beauty else default_beauty()
    if beauty is not None:
        data = ps.datasets.load_sequences(beauty)
        rows += run_dataset("beauty", data.interactions, beauty_categories(data, data.interactions.item_map), args)
    payload = {"machine": facts, "args": vars(args), "rows": rows}
    write_results(args.out, "rerank", payload, markdown(rows, facts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
