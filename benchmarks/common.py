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
