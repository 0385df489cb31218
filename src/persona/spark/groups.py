"""persona's own models trained per group on Spark, where the work is embarrassingly parallel.

A model per category (EASE or ItemKNN over that category's items) needs no communication
between categories: :func:`fit_per_group` sends each group's events to one task
(``applyInPandas``), which cleans them with ``persona.Interactions.from_frame``, fits a fresh
model and saves it as an artifact under ``out``. Folder names are digests of the group values,
never the values themselves, so a hostile category name cannot write outside ``out``;
``out/groups.json`` maps each group to its folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import time as _time
from typing import Any, Callable, Mapping

from .._validate import check_int
from .._warn import warn_user
from ..data import Interactions
from ..errors import DataError, ParameterError
from ..models import Recommender, load
from ._session import check_dataframe, require_pyspark

__all__ = ["fit_per_group"]


def group_folder(value: Any) -> str:
    """The folder name of a group: a digest of its type and value (safe for any value)."""
    digest = hashlib.sha256(f"{type(value).__name__}:{value!r}".encode("utf-8")).hexdigest()[:20]
    return f"group-{digest}"


def _factory(model_factory) -> Callable[[Any], Recommender]:
    if isinstance(model_factory, Recommender):
        template = model_factory
        return lambda _group: type(template)(**template.get_params())
    if callable(model_factory):
        return model_factory
    raise ParameterError(f"fit_per_group: expected an unfitted persona model (cloned per group) or a function "
                         f"group -> model, got {type(model_factory).__name__}")


def fit_per_group(events, group: str, model_factory, out: str, *, user: str = "user_id", item: str = "item_id",
                  time: str | None = None, event: str | None = None, value: str | None = None,
                  weights: Mapping[str, float] | None = None, cleaning: Mapping[str, Any] | None = None,
                  min_events: int = 1, errors: str = "raise", key=None, threads: int = 1,
                  load_models: bool = False) -> dict:
    """Fit one persona model per value of ``group`` in parallel Spark tasks; artifacts saved under ``out``.

    Parameters
    ----------
    events : pyspark.sql.DataFrame
        Raw events with the ``group`` column (e.g. the item's category).
    group : str
        The column whose values split the events.
    model_factory : persona model or callable
        An unfitted model (each group gets a fresh copy with the same parameters) or a function
        ``group value -> unfitted model``. It travels to the executors (cloudpickle).
    out : str
        A directory every executor can write to (created if missing).
    user, item, time, event, value, weights, cleaning
        How each group's events are cleaned: ``Interactions.from_frame(rows, user, item, time,
        event, value, weights, **cleaning)``.
    min_events : int
        Groups with fewer raw events are skipped (not fitted).
    errors : {"raise", "skip"}
        A group whose cleaning or fit fails raises :class:`~persona.DataError` naming every
        failed group and why, or is left out with a warning.
    key : bytes or str, optional
        Sign every artifact (``model.save(path, key=key)``).
    threads : int
        BLAS threads of each task.
    load_models : bool
        Return the loaded models instead of their paths.

    Returns
    -------
    dict
        group value -> artifact path (or fitted model with ``load_models=True``).

    Examples
    --------
    ::

        paths = persona.spark.fit_per_group(events, "category", ps.EASE(lambda_=200), "/mnt/models/ease")
        model = ps.load(paths["Skincare"])
    """
    require_pyspark()
    check_dataframe(events, "fit_per_group: events")
    if not isinstance(group, str) or group not in events.columns:
        raise DataError(f"fit_per_group: group column {group!r} not found; available columns: {list(events.columns)}")
    for name, col in (("user", user), ("item", item), ("time", time), ("event", event), ("value", value)):
        if col is not None and col not in events.columns:
            raise DataError(f"fit_per_group: {name} column {col!r} not found; available columns: "
                            f"{list(events.columns)}")
    if errors not in ("raise", "skip"):
        raise ParameterError(f"errors: expected 'raise' or 'skip', got {errors!r}")
    min_events = check_int(min_events, "min_events", min=1)
    threads = check_int(threads, "threads", min=1)
    make = _factory(model_factory)
    out = os.path.abspath(os.fspath(out))
    os.makedirs(out, exist_ok=True)
    options = dict(cleaning or {})
    kind = events.schema[group].dataType.simpleString()
    if kind not in ("string", "bigint", "int", "smallint", "tinyint"):
        raise DataError(f"fit_per_group: expected string or integer values in {group!r}, got {kind}; convert it")

    def fit_group(key_tuple, pdf):
        import pandas as pd
        from threadpoolctl import threadpool_limits

        value_ = key_tuple[0]
        row = {"group": value_, "folder": group_folder(value_), "n_users": 0, "n_items": 0, "n_events": len(pdf),
               "fit_s": 0.0, "error": None}
        if len(pdf) >= min_events:
            t0 = _time.perf_counter()
            try:
                with threadpool_limits(threads):
                    inter = Interactions.from_frame(pdf, user, item, time, event, value, weights, **options)
                    model = make(value_).fit(inter)
                    model.save(os.path.join(out, row["folder"]), key=key)
                row.update(n_users=inter.n_users, n_items=inter.n_items, fit_s=_time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - reported per group to the driver, raised there
                row["error"] = f"{type(e).__name__}: {e}"
        else:
            row["error"] = "skipped"
        return pd.DataFrame([row])

    gtype = "string" if kind == "string" else "long"
    schema = (f"group {gtype}, folder string, n_users long, n_items long, n_events long, fit_s double, "
              "error string")
    rows = events.where(events[group].isNotNull()).groupBy(group).applyInPandas(fit_group, schema).collect()
    failed = {r["group"]: r["error"] for r in rows if r["error"] not in (None, "skipped")}
    if failed and errors == "raise":
        raise DataError(f"fit_per_group: {len(failed)} group(s) failed: {dict(list(failed.items())[:10])}; fix their "
                        "data or options, or pass errors='skip' to leave them out")
    if failed:
        warn_user(f"fit_per_group: left out {len(failed)} group(s) that failed: {dict(list(failed.items())[:10])}",
                  UserWarning)
    done = {r["group"]: os.path.join(out, r["folder"]) for r in rows if r["error"] is None}
    with open(os.path.join(out, "groups.json"), "w", encoding="utf-8") as f:
        json.dump({"group_column": group, "groups": [{"group": g, "folder": os.path.basename(p)}
                                                     for g, p in sorted(done.items(), key=lambda kv: str(kv[0]))]},
                  f, indent=1)
    if load_models:
        return {g: load(p, key=key) for g, p in done.items()}
    return done
