"""Tune ps.Hybrid's ranker on the validation targets only (the test targets are never read).

``train, valid, _ = ps.split.leave_last_out(inter)``; the Hybrid is fitted on ``train`` alone (it
holds out each user's last train event to label its ranker's pairs), so its served generators know
``train`` and the **validation** targets are unseen. The pairs the ranker trains on and the candidates
and features of ``--eval-users`` sampled validation users are built once; then each ranker
configuration of the grid (and each feature group left out, ``--drop``) is trained on the same pairs
and scored by NDCG@10 / HR@10 of the validation target among the candidates -- the same number
``ps.evaluate`` gives the Hybrid, since items outside the candidates rank below all of them.

    python benchmarks/tune_hybrid.py --data lastfm --candidates 100
    python benchmarks/tune_hybrid.py --data beauty --max-train-users 30000 --grid '[{"num_leaves": 15}]'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import persona as ps  # noqa: E402
from bench_hybrid import data_path, generators  # noqa: E402
from persona.ranking._rankers import make_ranker  # noqa: E402
from persona.ranking.hybrid import _dedupe_rows  # noqa: E402

GRID = [{}, {"num_leaves": 15, "min_data_in_leaf": 100}, {"num_leaves": 7, "min_data_in_leaf": 200},
        {"learning_rate": 0.02, "num_boost_round": 1000, "early_stopping_rounds": 60},
        {"num_leaves": 15, "min_data_in_leaf": 100, "learning_rate": 0.02, "num_boost_round": 1000,
         "early_stopping_rounds": 60, "lambda_l2": 10.0},
        {"objective": "binary", "metric": "auc", "num_leaves": 15, "min_data_in_leaf": 100}]


class Masked:
    """A ranker that sees the columns of ``drop`` as missing (a feature group left out, no refit)."""

    def __init__(self, inner, drop: np.ndarray) -> None:
        self.inner, self.drop = inner, drop

    def _x(self, X):
        if not self.drop.any():
            return X
        X = X.copy()
        X[:, self.drop] = np.nan
        return X

    def fit(self, X, y, groups, names, categorical):
        self.inner.fit(self._x(X), y, groups, names, categorical)
        return self

    def predict(self, X):
        return self.inner.predict(self._x(X))


def eval_pairs(h: ps.Hybrid, valid, n_users: int, seed: int):
    """Candidates, features and labels of a sample of validation users (served generators: train)."""
    v = valid.with_maps(h.user_map_, h.item_map_)
    users = np.unique(v.users)
    if n_users and len(users) > n_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=n_users, replace=False))
    tmat = v.matrix.tocsr()
    ui = h.user_items_
    Xs, labels, owners = [], [], []
    step = h._batch_rows()
    for s in range(0, len(users), step):
        block = users[s:s + step]
        hists = [ui.indices[ui.indptr[u]:ui.indptr[u + 1]] for u in block]
        blocks = [h._generator_block(g, g._score_users(block), hists) for g in h.generators_]
        cand = _dedupe_rows(np.concatenate([b[3] for b in blocks], axis=1))
        rows, cols = np.nonzero(cand >= 0)
        items = cand[rows, cols]
        Xs.append(h.features_.build(rows, items, hists, [b[:3] for b in blocks], block))
        labels.append(np.asarray(tmat[block[rows], items]).ravel() > 0)
        owners.append(rows + s)
    return np.concatenate(Xs), np.concatenate(labels), np.concatenate(owners), len(users)


def score(pred, label, owner, n_users) -> dict:
    """NDCG@10 / HR@10 of the single target per user (0 when it is not among the candidates)."""
    order = np.lexsort((-pred, owner))
    o, lab = owner[order], label[order]
    start = np.searchsorted(o, o, side="left")
    rank = np.arange(len(o)) - start
    hit = lab & (rank < 10)
    return {"ndcg@10": float((1.0 / np.log2(rank[hit] + 2)).sum() / n_users), "hr@10": float(hit.sum() / n_users)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="lastfm")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--max-train-users", type=int, default=10_000)
    ap.add_argument("--ease-lambda", type=float, default=50.0)
    ap.add_argument("--knn-k", type=int, default=200)
    ap.add_argument("--gens", default="ease,itemknn,als,popular")
    ap.add_argument("--no-sequence", action="store_true")
    ap.add_argument("--no-attributes", action="store_true")
    ap.add_argument("--eval-users", type=int, default=0, help="validation users scored (0: all)")
    ap.add_argument("--grid", default=None, help="JSON list of ranker_params dicts (default: a small grid)")
    ap.add_argument("--drop", default="", help="comma list of feature-name prefixes to leave out, one at a time")
    ap.add_argument("--logistic", action="store_true", help="score the logistic ranker too")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="append the results as JSON lines here")
    args = ap.parse_args(argv)
    path = data_path(args.data)
    seq = ps.datasets.load_sequences(path)
    train, valid, _ = ps.split.leave_last_out(seq.interactions)
    gens = {k: v for k, v in generators(argparse.Namespace(ease_lambda=args.ease_lambda, knn_k=args.knn_k,
                                                          seed=args.seed, sasrec_epochs=200, threads=0),
                                        path.stem, False).items() if k in args.gens.split(",")}
    h = ps.Hybrid(generators=gens, candidates=args.candidates, max_train_users=args.max_train_users,
                  sequence_features=not args.no_sequence, random_state=args.seed, show_progress=False)
    cache = {}
    original = h._training_pairs

    def capture(*a, **k):
        out = original(*a, **k)
        cache["pairs"] = out
        cache["categorical"] = a[1].categorical
        return out

    h._training_pairs = capture
    t = time.perf_counter()
    attrs = seq.attribute_matrix(train) if seq.n_attributes and not args.no_attributes else None
    h.fit(train, item_features=attrs)
    fit_s = time.perf_counter() - t
    X, y, groups, recall = cache["pairs"]
    names = h.features_.names
    EX, elab, eown, n_eval = eval_pairs(h, valid, args.eval_users, args.seed)
    print(f"{path.stem}: fit {fit_s:.0f} s, {len(X)} training pairs in {len(groups)} groups, candidate recall "
          f"(train holdout) {recall:.3f}, validation recall {elab.sum() / n_eval:.3f} over {n_eval} users; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    grid = json.loads(args.grid) if args.grid else GRID
    drops = [""] + [d for d in args.drop.split(",") if d]
    results = []
    base = {"data": path.stem, "candidates": args.candidates, "max_train_users": args.max_train_users,
            "gens": args.gens, "sequence": not args.no_sequence, "attributes": attrs is not None,
            "ease_lambda": args.ease_lambda, "knn_k": args.knn_k}
    configs = [("lightgbm", p) for p in grid] + ([("logistic", {})] if args.logistic else [])
    for drop in drops:
        mask = np.array([bool(drop) and n.startswith(drop) for n in names])
        for kind, params in configs:
            t = time.perf_counter()
            r = Masked(make_ranker(kind, params or None, random_state=args.seed, num_threads=0), mask)
            r.fit(X, y, groups, names, cache["categorical"])
            sc = score(r.predict(EX), elab, eown, n_eval)
            row = {**base, "ranker": kind, "params": params, "drop": drop, **sc,
                   "trees": getattr(r.inner, "best_iteration", None), "s": time.perf_counter() - t}
            results.append(row)
            print(f"  {kind} {json.dumps(params)} drop={drop or '-'}: NDCG@10 {sc['ndcg@10']:.4f} HR@10 "
                  f"{sc['hr@10']:.4f} ({row['trees']} trees, {row['s']:.0f} s)", flush=True)
    if args.out:
        with open(args.out, "a") as fh:
            for row in results:
                fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
