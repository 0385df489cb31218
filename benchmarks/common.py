"""Small pieces the benchmark scripts share."""

from __future__ import annotations

from pathlib import Path

import persona as ps

KS = (5, 10, 20)


def default_beauty() -> Path | None:
    """The shared Amazon Beauty sequences file, when it is found beside the project."""
    folder = ps.datasets.default_data_path("amazon-beauty")
    path = None if folder is None else folder / "Beauty.txt"
    return path if path is not None and path.exists() else None


def scores_of(report: dict, ks=KS) -> dict:
    """The HR@k and NDCG@k entries of an ``evaluate`` report."""
    return {f"{m}@{k}": report[f"{m}@{k}"] for k in ks for m in ("hr", "ndcg")}


def eval_row(rows: list, name: str, model, test, fit_s: float, extra: dict | None = None, ks=KS) -> dict:
    """Evaluate ``model`` on ``test`` (HR / NDCG at ``ks``), append the row to ``rows``, print it."""
    import time

    t = time.perf_counter()
    rep = ps.evaluate(model, test, k=ks, metrics=("hr", "ndcg"))
    row = {"model": name, "fit_s": fit_s, "eval_s": time.perf_counter() - t, **scores_of(rep, ks),
           "n_users": rep["n_users"], **(extra or {})}
    rows.append(row)
    print(f"  {name}: HR@10 {row['hr@10']:.4f} NDCG@10 {row['ndcg@10']:.4f} fit {fit_s:.2f} s", flush=True)
    return row


def timed(fn):
    """``(fn(), seconds it took)``: the wall-clock time of one call (a fit, a tuning run)."""
    import time

    t = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t


def fit_and_eval(rows: list, name: str, fit, test, extra=None, ks=KS):
    """Time ``fit()`` (a call returning the fitted model), evaluate the model on ``test``, keep its row.

    The fit-then-evaluate step every quality benchmark repeats for each contender. ``extra`` is a
    dict, or a callable taking the model and returning one (its loss, its best epoch). Returns
    ``(model, row)``.
    """
    model, fit_s = timed(fit)
    more = extra(model) if callable(extra) else extra
    return model, eval_row(rows, name, model, test, fit_s, more, ks)


def sample_users(inter, max_users: int | None, seed: int):
    """A random sample of whole users (their sequences intact); items re-indexed."""
    import numpy as np

    from persona.data import IdMap, Interactions

    if max_users is None or max_users >= inter.n_users:
        return inter
    chosen = np.random.default_rng(seed).choice(inter.n_users, size=max_users, replace=False)
    keep = np.isin(inter.users, chosen)
    u_old, u_new = np.unique(inter.users[keep], return_inverse=True)
    i_old, i_new = np.unique(inter.items[keep], return_inverse=True)
    ts = None if inter.timestamps is None else inter.timestamps[keep]
    return Interactions(IdMap(inter.user_ids[u_old]), IdMap(inter.item_ids[i_old]), u_new, i_new,
                        inter.weights[keep], ts)


def write_results(out, stem: str, payload, md: str) -> str:
    """Write ``<stem>.json`` and ``<stem>.md`` under ``out`` (created), print the Markdown, return it.

    The tail every benchmark shares: JSON for machines (numpy scalars as numbers, anything else that
    is not JSON-native as ``str``), the Markdown table for people.
    """
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=_plain))
    (out / f"{stem}.md").write_text(md)
    print(md)
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return md


def _plain(obj):
    """A JSON-able stand-in: numpy scalars and arrays as numbers and lists, the rest as text."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)

