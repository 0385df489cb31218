"""Implicit ALS trained by Spark MLlib, imported into a persona :class:`~persona.ALS`.

MLlib and persona minimise the same implicit-feedback objective of Hu, Koren and Volinsky --
preference 1 for every observed pair, confidence ``1 + alpha * weight`` -- with one difference in
the penalty. persona's is ``regularization * (|x_u|^2 + |y_i|^2)``, the same for every row;
MLlib's (``ALS-WR``) scales ``regParam`` by the number of entries of each row: user ``u`` pays
``regParam * n_u * |x_u|^2`` and item ``i`` pays ``regParam * n_i * |y_i|^2``. No single
``regParam`` equals a fixed penalty for every row; :func:`mllib_reg_param` picks the one that
matches it for a row of geometric-mean size (``regularization / sqrt(mean n_u * mean n_i)``),
and :func:`fit_als` uses it unless ``reg_param=`` is given. With
``regularization_scaling="count"`` persona's ALS uses MLlib's penalty itself, and the mapping is
the identity (``regParam = regularization``). ``factors`` (MLlib's ``rank``),
``iterations`` (``maxIter``) and ``alpha`` map one to one; MLlib solves each row exactly (as
persona's ``solver="cholesky"``) and starts from its own random factors, so the two never give
the same numbers, only models of the same quality (benchmarks/bench_spark.py measures it).

The imported model is an ordinary persona ALS: it recommends, filters seen items (the cleaned
interaction matrix is collected with it), folds in new histories with ``regularization`` and
``alpha``, and saves and loads like one trained by ``fit``.
"""

from __future__ import annotations

import logging
import math
import time as _time
from typing import Any, Mapping

import numpy as np

from .._validate import MAX_FACTORS, MAX_ITERATIONS, check_int, check_number
from ..errors import DataError, ParameterError
from ..models.als import ALS
from ._session import check_dataframe, require_pyspark
from .ingest import SparkInteractions, clean

__all__ = ["fit_als", "mllib_reg_param", "import_mllib_als"]

log = logging.getLogger("persona.spark")


def mllib_reg_param(regularization: float, n_users: int, n_items: int, n_entries: int, *,
                    regularization_scaling: str = "constant") -> float:
    """MLlib's ``regParam`` that matches persona's fixed ``regularization`` for a row of typical size.

    MLlib penalises a row with ``n`` entries by ``regParam * n``; a user has ``n_entries / n_users``
    entries on average and an item ``n_entries / n_items``. This returns ``regularization``
    divided by the geometric mean of the two, so the two sides are off by the same factor
    (``sqrt(n_items / n_users)`` and its inverse) and a row of geometric-mean size matches exactly.
    With ``regularization_scaling="count"`` (persona's ALS penalising as MLlib does) it returns
    ``regularization`` itself.

    Examples
    --------
    >>> round(mllib_reg_param(10.0, n_users=1000, n_items=100, n_entries=20_000), 4)   # 20 and 200 per row
    0.1581
    >>> mllib_reg_param(0.1, n_users=1000, n_items=100, n_entries=20_000, regularization_scaling="count")
    0.1
    """
    check_number(regularization, "regularization", min=0.0)
    for name, v in (("n_users", n_users), ("n_items", n_items), ("n_entries", n_entries)):
        check_int(v, name, min=1, error=DataError)
    if regularization_scaling not in ("constant", "count"):
        raise ParameterError(f"regularization_scaling: expected 'constant' or 'count' (as persona.ALS), got "
                             f"{regularization_scaling!r}")
    if regularization_scaling == "count":
        return float(regularization)
    return float(regularization) / math.sqrt((n_entries / n_users) * (n_entries / n_items))


def fit_als(events, *, user: str = "user_id", item: str = "item_id", time: str | None = None,
            event: str | None = None, value: str | None = None, weights: Mapping[str, float] | None = None,
            factors: int = 64, iterations: int = 15, regularization: float = 10.0, alpha: float = 1.0,
            reg_param: float | None = None, num_blocks: int | None = None, random_state: int = 0,
            checkpoint_dir: str | None = None, cleaning: Mapping[str, Any] | None = None,
            regularization_scaling: str = "constant") -> ALS:
    """Train implicit ALS with Spark MLlib on a DataFrame of events; return a persona :class:`~persona.ALS`.

    The events are cleaned by :func:`persona.spark.clean` with the rules of
    ``persona.Interactions`` (event weights, duplicates, activity filters), repeated user-item
    events become one entry, MLlib's ALS trains with ``implicitPrefs=True``, and its factors are
    imported with :meth:`persona.ALS.from_factors` beside the id maps and the interaction matrix
    (for ``filter_seen``).

    Parameters
    ----------
    events : pyspark.sql.DataFrame or SparkInteractions
        Raw events (cleaned here) or the result of :func:`persona.spark.clean`.
    user, item, time, event, value, weights
        The columns and event-type weights, as for ``Interactions.from_frame``.
    factors, iterations, regularization, alpha
        As for :class:`persona.ALS` (``regularization`` is persona's fixed penalty; see
        :func:`mllib_reg_param` for how it maps to MLlib's).
    reg_param : float, optional
        MLlib's ``regParam`` itself, overriding the mapping of ``regularization``.
    num_blocks : int, optional
        MLlib's user and item blocks (default: Spark's default parallelism).
    random_state : int
        MLlib's seed.
    checkpoint_dir : str, optional
        Sets the SparkContext's checkpoint directory, so MLlib cuts the lineage every 10
        iterations (long runs otherwise risk a StackOverflowError in the driver).
    cleaning : mapping, optional
        More options of :func:`persona.spark.clean` (``k_core``, ``strict``, ``half_life``...).
    regularization_scaling : {"constant", "count"}
        As for :class:`persona.ALS`. ``"count"``: ``regularization`` is MLlib's ``regParam`` as is, and
        the imported model folds in new histories with MLlib's count-weighted penalty.

    Returns
    -------
    persona.ALS
        Fitted; ``model.spark_`` records MLlib's ``regParam``, the entry count and the seconds
        spent cleaning, training and collecting.

    Examples
    --------
    ::

        model = persona.spark.fit_als(events, user="customer", item="sku", event="type",
                                      factors=64, iterations=15, regularization=10.0)
        model.save("s3-mounted/models/als-2024-06-01")      # served by any web worker
    """
    require_pyspark()
    factors = check_int(factors, "factors", min=1, max=MAX_FACTORS, hint="typical values are 32-512")
    iterations = check_int(iterations, "iterations", min=1, max=MAX_ITERATIONS, hint="typical values are 10-30")
    check_number(regularization, "regularization", min=0.0)
    if regularization_scaling not in ("constant", "count"):
        raise ParameterError(f"regularization_scaling: expected 'constant' or 'count' (as persona.ALS), got "
                             f"{regularization_scaling!r}")
    check_number(alpha, "alpha", min=0.0, hint="confidence = 1 + alpha * weight; try 1.0")
    check_number(reg_param, "reg_param", min=0.0, allow_none=True, hint="MLlib's regParam, or None to map "
                 "regularization")
    check_int(num_blocks, "num_blocks", min=1, allow_none=True)
    check_int(random_state, "random_state", min=0, max=2**31 - 1, hint="pass a seed such as 0")
    t0 = _time.perf_counter()
    if checkpoint_dir is not None:
        if not isinstance(checkpoint_dir, str) or not checkpoint_dir:
            raise ParameterError(f"checkpoint_dir: expected a directory path, got {checkpoint_dir!r}")
        spark_of = events.events if isinstance(events, SparkInteractions) else check_dataframe(events, "events")
        spark_of.sparkSession.sparkContext.setCheckpointDir(checkpoint_dir)
    if isinstance(events, SparkInteractions):
        inter = events
    else:
        check_dataframe(events, "fit_als: events")
        inter = clean(events, user, item, time, event, value, weights, **dict(cleaning or {}))
    from pyspark import StorageLevel

    entries = inter.entries().persist(StorageLevel.MEMORY_AND_DISK)
    n_entries = entries.count()
    t_clean = _time.perf_counter() - t0
    rp = mllib_reg_param(regularization, inter.n_users, inter.n_items, n_entries,
                         regularization_scaling=regularization_scaling) if reg_param is None else float(reg_param)

    from pyspark.ml.recommendation import ALS as MLlibALS

    t1 = _time.perf_counter()
    estimator = MLlibALS(rank=factors, maxIter=iterations, regParam=rp, alpha=float(alpha), implicitPrefs=True,
                         userCol="user_index", itemCol="item_index", ratingCol="weight", seed=int(random_state))
    if num_blocks is not None:
        estimator = estimator.setNumUserBlocks(int(num_blocks)).setNumItemBlocks(int(num_blocks))
    mllib_model = estimator.fit(entries)
    t_fit = _time.perf_counter() - t1
    t2 = _time.perf_counter()
    model = import_mllib_als(mllib_model, inter, entries=entries, regularization=regularization, alpha=alpha,
                             iterations=iterations, random_state=random_state,
                             regularization_scaling=regularization_scaling)
    entries.unpersist()
    model.spark_ = {"reg_param": rp, "n_entries": int(n_entries), "clean_s": t_clean, "fit_s": t_fit,
                    "import_s": _time.perf_counter() - t2}
    log.info("MLlib ALS: %d users x %d items, %d entries, regParam %.4g; clean %.1f s, fit %.1f s",
             inter.n_users, inter.n_items, n_entries, rp, t_clean, t_fit)
    return model


def _factor_matrix(frame, n: int, rank: int, what: str) -> np.ndarray:
    """MLlib's ``id, features`` factor frame as a dense (n, rank) float32 array in id order."""
    from pyspark.sql import functions as F

    cols = [F.col("features")[k].alias(f"f{k}") for k in range(rank)]
    pdf = frame.select(F.col("id"), *cols).toPandas()
    ids = pdf["id"].to_numpy(np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= n):
        raise DataError(f"the MLlib model's {what} ids lie in [{ids.min()}, {ids.max()}] but the id map has {n} "
                        f"{what}s; import a model trained on these interactions' {what}_index")
    out = np.zeros((n, rank), dtype=np.float32)
    out[ids] = pdf[[f"f{k}" for k in range(rank)]].to_numpy(np.float32)
    return out


def import_mllib_als(mllib_model, interactions: SparkInteractions, *, entries=None, **params) -> ALS:
    """A persona ALS from a fitted ``pyspark.ml.recommendation.ALSModel`` trained on ``interactions.entries()``.

    For a model trained by hand on the ``user_index`` / ``item_index`` columns of
    :func:`persona.spark.clean`'s result (e.g. with a tuned ``regParam``). Users and items the
    model has no factors for (none when trained on those entries) get zero vectors.

    Parameters
    ----------
    mllib_model : pyspark.ml.recommendation.ALSModel
    interactions : SparkInteractions
    entries : pyspark.sql.DataFrame, optional
        ``interactions.entries()`` when already computed (and cached).
    **params
        persona ALS hyperparameters for the fold-in (``regularization``, ``alpha``...).

    Returns
    -------
    persona.ALS
    """
    require_pyspark()
    from pyspark.ml.recommendation import ALSModel

    if not isinstance(mllib_model, ALSModel):
        raise ParameterError(f"import_mllib_als: expected a fitted pyspark.ml.recommendation.ALSModel, got "
                             f"{type(mllib_model).__name__}")
    if not isinstance(interactions, SparkInteractions):
        raise DataError(f"import_mllib_als: expected the SparkInteractions the model was trained on, got "
                        f"{type(interactions).__name__}")
    rank = int(mllib_model.rank)
    X = _factor_matrix(mllib_model.userFactors, interactions.n_users, rank, "user")
    Y = _factor_matrix(mllib_model.itemFactors, interactions.n_items, rank, "item")
    import scipy.sparse as sp

    pdf = (entries if entries is not None else interactions.entries()).toPandas()
    seen = sp.csr_matrix((pdf["weight"].to_numpy(np.float32),
                          (pdf["user_index"].to_numpy(np.int64), pdf["item_index"].to_numpy(np.int64))),
                         shape=(interactions.n_users, interactions.n_items), dtype=np.float32)
    seen.sort_indices()
    return ALS.from_factors(interactions.user_map.ids, interactions.item_map.ids, X, Y, interactions=seen,
                            **params)
