"""Choose each model's default hyperparameters from measurements, and show what ``ps.tune`` adds.

A default must give a good model on data the user has not tuned for, so it is chosen across data
sets: the synthetic shop at three sizes (300 users x 100 items, 3,000 x 600, 20,000 x 2,000) and,
when found, Amazon Beauty and Last.fm (``../shared/data``). For each model family a fixed grid of
candidate settings is fitted on ``train`` and scored on ``valid`` (NDCG@10, full ranking, seen
items excluded); each candidate's score on a data set is divided by the best candidate's there, and
the **new default** is the candidate with the highest mean of that ratio over the data sets, near-ties (within 0.02)
going to the candidate whose worst data set is best (the setting least far from the best
everywhere). Then, on the test targets:

* the old default (the constructor's before this change, recorded below),
* the new default,
* ``ps.tune(model, train, valid, budget=B)`` (random search over the family's documented ranges),

each refitted on ``train + valid``. Synthetic shops hold out each user's last *new* item (their
event logs repeat items); the sequence files use the standard leave-last-out.

    python benchmarks/bench_defaults.py                       # everything (~30-60 min on 2 cores)
    python benchmarks/bench_defaults.py --models als,ease --data synthetic-s,synthetic-m --budget 10

Writes ``benchmarks/results/defaults.json`` and ``defaults.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

import persona as ps

OLD_DEFAULTS = {  # the constructors' defaults before this benchmark chose new ones
    "als": {"factors": 64, "iterations": 15, "regularization": 0.01, "alpha": 1.0},
    "bpr": {"factors": 64, "learning_rate": 0.05, "regularization": 0.01, "iterations": 100},
    "itemknn": {"k": 100, "weighting": "cosine"},
    "ease": {"regularization": 500.0},
    "popular": {"half_life": None},
}
CLASSES = {"als": ps.ALS, "bpr": ps.BPR, "itemknn": ps.ItemKNN, "ease": ps.EASE, "popular": ps.MostPopular}


def grid(**axes) -> list[dict]:
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*axes.values())]


CANDIDATES = {
    "als": grid(factors=[16, 32, 64, 128], regularization=[0.01, 0.1, 1.0, 10.0], alpha=[1.0, 10.0, 40.0],
                iterations=[15]),
    "bpr": grid(factors=[32, 64, 128], learning_rate=[0.01, 0.05], regularization=[0.001, 0.01], iterations=[100]),
    "itemknn": grid(k=[20, 50, 100, 200, 400], weighting=["cosine", "bm25"]),
    "ease": grid(regularization=[10.0, 50.0, 100.0, 250.0, 500.0, 1000.0]),
    "popular": grid(half_life=[None, 7.0, 30.0]),
}
SEEDED = {"als", "bpr"}


def load_data(name: str):
    """(train, valid, test) of a named data set, or None when its file is not here."""
    sizes = {"synthetic-s": (300, 100), "synthetic-m": (3000, 600), "synthetic-l": (20000, 2000)}
    if name in sizes:
        users, items = sizes[name]
        shop = ps.datasets.synthetic_shop(n_users=users, n_items=items, seed=0)
        return ps.split.leave_last_out(shop.interactions, new_items=True)
    folder, file = {"beauty": ("amazon-beauty", "Beauty.txt"), "lastfm": ("lastfm", "LastFM.txt")}[name]
    root = ps.datasets.default_data_path(folder)
    if root is None or not (root / file).exists():
        return None
    return ps.split.leave_last_out(ps.Interactions.from_sequences(root / file))


def make(family: str, params: dict):
    extra = {"random_state": 0} if family in SEEDED else {}
    return CLASSES[family](**{**params, **extra})


def ndcg(model, data) -> float:
    return float(ps.evaluate(model, data, k=(10,), metrics=("ndcg",))["ndcg@10"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(CANDIDATES))
    p.add_argument("--data", default="synthetic-s,synthetic-m,synthetic-l,beauty,lastfm")
    p.add_argument("--budget", type=int, default=20, help="ps.tune trials per model and data set")
    p.add_argument("--budget-large", type=int, default=8, help="ps.tune trials on data sets of --large events or more")
    p.add_argument("--large", type=int, default=100_000, help="train events from which a data set counts as large")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--tune-on", default=None,
                   help="data sets on which the test table (old, new, ps.tune) is measured (default: all)")
    args = p.parse_args(argv)
    families = args.models.split(",")
    args.tune_on = args.data.split(",") if args.tune_on is None else args.tune_on.split(",")
    data = {}
    for name in args.data.split(","):
        d = load_data(name)
        if d is None:
            print(f"{name}: not found, skipped")
            continue
        if d[0].timestamps is None and "popular" in families:
            print(f"{name}: no timestamps, popularity half-lives not compared there")
        data[name] = d
        print(f"{name}: {d[0].n_users} users x {d[0].n_items} items, {len(d[0])} train events", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "defaults-cache.json"  # every measurement as it is taken: a rerun resumes
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {"valid": {}, "test": {}}

    def remember(section: str, key: str, value) -> None:
        cache[section][key] = value
        cache_path.write_text(json.dumps(cache, indent=1, default=str))

    valid_scores: dict = {}  # family -> data -> list of valid NDCG per candidate
    for family in families:
        valid_scores[family] = {}
        for dname, (train, valid, _) in data.items():
            cands = CANDIDATES[family]
            if family == "popular" and train.timestamps is None:
                cands = [c for c in cands if c["half_life"] is None]
            t = time.perf_counter()
            scores = []
            for c in cands:
                key = f"{family}|{dname}|{json.dumps(c, sort_keys=True)}"
                if key not in cache["valid"]:
                    remember("valid", key, ndcg(make(family, c).fit(train), valid))
                scores.append(cache["valid"][key])
            valid_scores[family][dname] = scores
            print(f"  {family} on {dname}: {len(cands)} candidates in {time.perf_counter() - t:.0f} s", flush=True)

    rows, chosen, valid_rows = [], {}, []
    best_of: dict = {}
    for family in families:
        cands = CANDIDATES[family]
        ratios = []
        best_of[family] = {}
        for dname, scores in valid_scores[family].items():
            s = np.full(len(cands), np.nan)
            s[:len(scores)] = scores
            best = np.nanmax(s)
            best_of[family][dname] = float(best)
            ratios.append(s / best if best > 0 else np.ones_like(s))
        ratios = np.vstack(ratios)
        mean_ratio, min_ratio = np.nanmean(ratios, axis=0), np.nanmin(ratios, axis=0)
        # the highest mean ratio; near-ties (within 0.02) go to the candidate whose worst data set is best
        near = np.flatnonzero(mean_ratio >= np.nanmax(mean_ratio) - 0.02)
        pick = int(near[np.argmax(min_ratio[near])])
        old_key = _old_in_grid(family)
        old_i = cands.index(old_key) if old_key in cands else None
        for d, dname in enumerate(valid_scores[family]):
            valid_rows.append({"model": family, "data": dname,
                               "old_default": None if old_i is None else ratios[d, old_i] * best_of[family][dname],
                               "new_default": ratios[d, pick] * best_of[family][dname],
                               "best_of_grid": best_of[family][dname]})
        chosen[family] = {"params": cands[pick], "mean_ratio_to_best": float(mean_ratio[pick]),
                          "min_ratio_to_best": float(min_ratio[pick]),
                          "old_mean_ratio": float(mean_ratio[cands.index(old_key)]) if old_key in cands else None}
        print(f"{family}: new default {cands[pick]} (mean valid NDCG ratio to the best candidate "
              f"{mean_ratio[pick]:.3f}; the old default's {chosen[family]['old_mean_ratio']})", flush=True)
        for dname, (train, valid, test) in data.items():
            if dname not in args.tune_on:
                continue
            key = f"{family}|{dname}|{json.dumps(cands[pick], sort_keys=True)}|budget={args.budget}"
            if key not in cache["test"]:
                full = train.concat(valid)
                old = ndcg(make(family, OLD_DEFAULTS[family]).fit(full), test)
                new = ndcg(make(family, cands[pick]).fit(full), test)
                t = time.perf_counter()
                budget = args.budget if len(train) < args.large else args.budget_large
                tuned_model = ps.tune(make(family, cands[pick]), train, valid, budget=budget, sampler="random",
                                      random_state=0)
                remember("test", key, {"model": family, "data": dname, "old_default": old, "new_default": new,
                                       "tuned": ndcg(tuned_model, test), "budget": budget,
                                       "tune_s": round(time.perf_counter() - t, 1),
                                       "tuned_params": tuned_model.tuning_best_})
            r = cache["test"][key]
            rows.append(r)
            print(f"  {dname}: old {r['old_default']:.4f}  new {r['new_default']:.4f}  tuned {r['tuned']:.4f} "
                  f"(budget {r['budget']}, {r['tune_s']:.0f} s)", flush=True)

    (out / "defaults.json").write_text(json.dumps({"chosen": chosen, "rows": rows, "valid": valid_scores,
                                                   "valid_rows": valid_rows},
                                                  indent=1, default=str))
    lines = ["| model | data | old default | new default | tuned (ps.tune, budget %d; %d on large data) |"
             % (args.budget, args.budget_large),
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['data']} | {r['old_default']:.4f} | {r['new_default']:.4f} | "
                     f"{r['tuned']:.4f} |")
    lines += ["", "New defaults: " + "; ".join(f"{f}: {c['params']}" for f, c in chosen.items()), "",
              "Validation NDCG@10 (the choice's data): the old default, the new one, the best of the grid", "",
              "| model | data | old default | new default | best of grid |", "|---|---|---|---|---|"]
    for r in valid_rows:
        old = "-" if r["old_default"] is None else f"{r['old_default']:.4f}"
        lines.append(f"| {r['model']} | {r['data']} | {old} | {r['new_default']:.4f} | {r['best_of_grid']:.4f} |")
    (out / "defaults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _old_in_grid(family: str) -> dict:
    grid_keys = set(CANDIDATES[family][0])
    return {k: v for k, v in OLD_DEFAULTS[family].items() if k in grid_keys}


if __name__ == "__main__":
    raise SystemExit(main())
