"""Fairness and popularity-bias trade-offs: NDCG@10 against coverage, exposure Gini and calibration.

Protocol (as benchmarks/bench_rerank.py): leave-last-out; EASE fitted on train + valid ranks all
items for every test user, seen items excluded; its top ``--candidates`` (100) per user are computed
once and each re-ranker picks 10 of them, exactly as ``ps.ranking.Reranked`` does per request (one
configuration is checked end to end). Every set of lists is measured by
``ps.evaluation.fairness_report``:

- ``ndcg@10`` -- accuracy on the held-out last item;
- ``coverage@10`` -- share of the catalogue recommended to anybody;
- ``gini@10`` -- Gini of the items' position-weighted exposure (1 / log2(rank + 2)) over the catalogue;
- ``long_tail@10`` -- share of exposure going to the long tail (all but the 20% most popular items);
- ``pop_lift@10`` -- popularity lift: how much more popular the lists are than the users' histories;
- ``kl@10`` -- Steck's miscalibration of the lists' category mix against the histories'.

Sweeps over the same base: ``Calibrated`` weight {0.25, 0.5, 0.75, 0.9}, ``MMR`` diversity {0.1, 0.2,
0.4, 0.6}, ``ExposureFloor`` long-tail floors {0.1, 0.2, 0.3, 0.5}, and (synthetic shop: brands are
known) a provider floor for the smallest brands -- those together holding the least-demanded 10% of
the training interactions -- {0.1, 0.2, 0.3}. The synthetic shop's users have gender, age and segment: its base model also gets
the full audit (NDCG@10 by group with bootstrap intervals), timed as the scheduled job would run it.

Data: the synthetic shop (``--users`` x ``--items``, seed 0) and Amazon Beauty (22k users x 12k
items) when the shared folder has it; Beauty's category per item as in bench_rerank.

Writes ``benchmarks/results/fairness.{json,md}`` and ``docs/img/fairness-<data>.png``.

    python benchmarks/bench_fairness.py               # synthetic shop + Beauty when present
    python benchmarks/bench_fairness.py --no-beauty
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_rerank import Lists, beauty_categories, in_batches  # noqa: E402
from common import default_beauty, write_results  # noqa: E402
from machine import machine_facts  # noqa: E402

import persona as ps  # noqa: E402
from persona.evaluation import age_bands, fairness_audit, fairness_report  # noqa: E402
from persona.ranking import MMR, Calibrated, ExposureFloor, Reranked  # noqa: E402

K = 10
CAL_GRID = (0.25, 0.5, 0.75, 0.9)
MMR_GRID = (0.1, 0.2, 0.4, 0.6)
TAIL_GRID = (0.1, 0.2, 0.3, 0.5)
BRAND_GRID = (0.1, 0.2, 0.3)


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def small_brands(shop, model, share: float = 0.1) -> list:
    """Items of the smallest brands: those that together hold the least-demanded ``share`` of the training
    interactions (the long tail of providers)."""
    counts = np.asarray(model.user_items_.getnnz(axis=0))
    brand_of = dict(zip(shop.items["item_id"], shop.items["brand"]))
    brands = np.array([brand_of[i] for i in model.item_map_.ids], dtype=object)
    demand = {b: counts[brands == b].sum() for b in set(brands.tolist())}
    order = sorted(demand, key=lambda b: (demand[b], b))
    total, acc, small = sum(demand.values()), 0, set()
    for b in order:
        if acc + demand[b] > total * share:
            break
        acc += demand[b]
        small.add(b)
    return [i for i, b in zip(model.item_map_.ids.tolist(), brands.tolist()) if b in small]


def run_dataset(name: str, inter, cats: np.ndarray, args, shop=None) -> tuple[list[dict], dict]:
    train, valid, test = ps.split.leave_last_out(inter)
    full = train.concat(valid)
    t = time.perf_counter()
    model = ps.EASE(regularization=args.regularization).fit(full)
    fit_s = time.perf_counter() - t
    users = np.unique(model.user_map_.lookup(test.user_ids[np.unique(test.users)]))
    users = users[users >= 0]
    t = time.perf_counter()
    cand, cand_s = in_batches(lambda sl: model.recommend_indices(users[sl], args.candidates), len(users))
    print(f"{name}: {inter}; EASE fitted in {fit_s:.1f} s, {len(users)} test users, top-{args.candidates} "
          f"candidates in {time.perf_counter() - t:.1f} s; load {load()}", flush=True)
    ui = model.user_items_
    hists = [ui.indices[ui.indptr[u]:ui.indptr[u + 1]] for u in users]
    configs = [("none", None, float("nan"))]
    configs += [("Calibrated", Calibrated(cats, weight=w), w) for w in CAL_GRID]
    configs += [("MMR", MMR(diversity=d), d) for d in MMR_GRID]
    configs += [("ExposureFloor long tail", ExposureFloor(floors={"long_tail": f}), f) for f in TAIL_GRID]
    if shop is not None:
        small = small_brands(shop, model)
        configs += [("ExposureFloor small brands", ExposureFloor({"small brands": small}, floors={"small brands": f}), f)
                    for f in BRAND_GRID]
    rows, extra = [], {}
    for method, reranker, param in configs:
        t = time.perf_counter()
        if reranker is None:
            idx = cand[:, :K]
        else:
            fitted = reranker.fit(model)
            idx = in_batches(lambda sl: fitted.rerank(hists[sl], cand[sl], cand_s[sl], K), len(users))[0]
        rerank_s = time.perf_counter() - t
        rep = fairness_report(Lists(model, users, idx), test, k=K, train=full, item_categories=cats, n_boot=10)
        s = rep.summary
        row = {"data": name, "method": method, "param": param, "ndcg@10": s["ndcg@10"],
               "coverage@10": s["coverage@10"], "gini@10": s["exposure_gini@10"],
               "long_tail@10": s["long_tail_share@10"], "pop_lift@10": s["popularity_lift@10"],
               "kl@10": s["calibration_kl@10"], "rerank_s": rerank_s, "n_users": int(s["n_users"])}
        if shop is not None and method.startswith("ExposureFloor small"):
            row["small_brands@10"] = float(np.isin(model.item_map_.ids[idx[idx >= 0]], small).mean())
        elif shop is not None and method == "none":
            small0 = small_brands(shop, model)
            row["small_brands@10"] = float(np.isin(model.item_map_.ids[idx[idx >= 0]], small0).mean())
        rows.append(row)
        print(f"  {method} {param:g}: NDCG@10 {row['ndcg@10']:.4f} coverage {row['coverage@10']:.3f} "
              f"Gini {row['gini@10']:.3f} tail {row['long_tail@10']:.3f} lift {row['pop_lift@10']:.3f} "
              f"KL {row['kl@10']:.3f} ({rerank_s:.1f} s)", flush=True)
    # the cached path is what Reranked does per request: check one floor end to end
    check = ps.evaluate(Reranked(model, ExposureFloor(floors={"long_tail": 0.2}), candidates=args.candidates), test,
                        k=K, metrics=("ndcg",))
    cached = next(r for r in rows if r["method"] == "ExposureFloor long tail" and r["param"] == 0.2)["ndcg@10"]
    if abs(check["ndcg@10"] - cached) > 1e-9:
        raise SystemExit(f"Reranked end to end gives NDCG@10 {check['ndcg@10']} but the cached path {cached}")
    if shop is not None:  # the scheduled audit of the base model, with the users' groups
        u = shop.users.set_index("user_id")
        t = time.perf_counter()
        audit = fairness_audit(model, test, k=K, train=full, item_categories=cats, max_users=None,
                               item_groups={"brand": dict(zip(shop.items["item_id"], shop.items["brand"]))},
                               user_groups={"gender": u["gender"], "age band": dict(zip(u.index, age_bands(u["age"]))),
                                            "segment": u["segment"]})
        extra["audit_s"] = time.perf_counter() - t
        extra["audit_load"] = load()
        extra["audit"] = {title: frame.reset_index().to_dict("records") for title, frame in audit
                          if title.startswith(("NDCG", "Popularity", "Exposure share by popularity"))}
        print(f"  audit of the base model: {extra['audit_s']:.1f} s for {len(users)} users (load {load()})")
    for r in rows:
        r["fit_s"] = fit_s
    return rows, extra


def plot(rows: list[dict], name: str, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'persona-recsys[report]')")
        return
    mine = [r for r in rows if r["data"] == name]
    base = next(r for r in mine if r["method"] == "none")
    methods = [m for m in dict.fromkeys(r["method"] for r in mine) if m != "none"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (key, label) in zip(axes, (("coverage@10", "coverage@10 (higher: more of the catalogue shown)"),
                                       ("gini@10", "exposure Gini@10 (lower: exposure spread more evenly)"),
                                       ("kl@10", "calibration KL@10 (lower: category mix closer to history)"))):
        for m in methods:
            pts = [base] + [r for r in mine if r["method"] == m]
            ax.plot([p[key] for p in pts], [p["ndcg@10"] for p in pts], "o-", label=m)
            for p in pts[1:]:
                ax.annotate(f"{p['param']:g}", (p[key], p["ndcg@10"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.plot([base[key]], [base["ndcg@10"]], "k*", markersize=12, label="EASE alone")
        ax.set_xlabel(label)
        ax.set_ylabel("NDCG@10")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Re-ranking trade-offs on {name} (EASE, top-100 candidates, lists of 10)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


def markdown(rows: list[dict], extras: dict, facts: dict, loads: tuple) -> str:
    lines = ["# Fairness and popularity-bias trade-offs (EASE + re-rankers)", "",
             f"Machine: {facts.get('processor', '')}, {facts.get('cores', '')} cores, numpy {facts.get('numpy', '')}; "
             f"persona {ps.__version__}; load average at start / end: {loads[0]} / {loads[1]}.", "",
             "| data | method | param | NDCG@10 | coverage@10 | Gini@10 | long-tail share | popularity lift | "
             "KL@10 | small brands | re-rank s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        param = "—" if r["method"] == "none" else f"{r['param']:g}"
        sb = f"{r['small_brands@10']:.3f}" if "small_brands@10" in r else "—"
        lines.append(f"| {r['data']} | {r['method']} | {param} | {r['ndcg@10']:.4f} | {r['coverage@10']:.3f} | "
                     f"{r['gini@10']:.3f} | {r['long_tail@10']:.3f} | {r['pop_lift@10']:.3f} | {r['kl@10']:.3f} | "
                     f"{sb} | {r['rerank_s']:.2f} |")
    for name, extra in extras.items():
        if "audit" not in extra:
            continue
        lines += ["", f"## Audit of the base model on {name} ({extra['audit_s']:.1f} s, load {extra['audit_load']})", ""]
        for title, recs in extra["audit"].items():
            lines += [f"**{title}**", ""]
            keys = list(recs[0].keys())
            lines.append("| " + " | ".join(keys) + " |")
            lines.append("|" + "---|" * len(keys))
            for rec in recs:
                lines.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in rec.values())
                             + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regularization", type=float, default=50.0, help="EASE's lambda (50: the data README's)")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--users", type=int, default=3000, help="synthetic shop users")
    ap.add_argument("--items", type=int, default=500, help="synthetic shop items")
    ap.add_argument("--no-beauty", action="store_true", help="skip Amazon Beauty")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--img", type=Path, default=HERE.parent / "docs" / "img")
    args = ap.parse_args(argv)
    facts = machine_facts()
    l0 = load()
    shop = ps.datasets.synthetic_shop(n_users=args.users, n_items=args.items, seed=0)
    rows, extras = [], {}
    r, extras["synthetic"] = run_dataset("synthetic", shop.interactions, shop.item_categories(shop.interactions.item_map),
                                         args, shop=shop)
    rows += r
    beauty = None if args.no_beauty else default_beauty()
    if beauty is not None:
        data = ps.datasets.load_sequences(beauty)
        r, extras["beauty"] = run_dataset("beauty", data.interactions,
                                          beauty_categories(data, data.interactions.item_map), args)
        rows += r
    loads = (l0, load())
    write_results(args.out, "fairness", {"machine": facts, "args": {k: str(v) for k, v in vars(args).items()},
                                         "load": loads, "rows": rows, "extras": extras},
                  markdown(rows, extras, facts, loads))
    for name in dict.fromkeys(r["data"] for r in rows):
        plot(rows, name, args.img / f"fairness-{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
