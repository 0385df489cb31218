"""Batch scoring as a Spark job: every user's top-n from a persona artifact, and campaign audiences.

:func:`recommend_all` runs ``model.recommend_frame`` over partitions of users with
``mapInPandas``: each Python worker loads the artifact once (memory-mapped, so the worker
processes of one machine share its pages -- factors, seen matrix and a saved faiss index alike)
and scores Arrow batches of users with persona's compiled top-k, with the filters of in-process
serving (``filter_seen``, an allow-list, a deny-list). The artifact directory must be readable
from every executor (a shared mount, or ``distribute=True`` to ship it with the job).

:func:`plan_audience` turns the scored table into a campaign's audience: the users whose top-n
holds items of the campaign's scope, best first, within its audience rule and budget.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from .._validate import check_bool, check_int, check_n
from ..errors import DataError, ParameterError, UnknownUserError, UnsupportedError
from ..models import load
from ._session import check_dataframe, require_pyspark

__all__ = ["recommend_all", "plan_audience"]

#: models loaded in this (worker) process: (path, key digest, manifest mtime) -> model
_LOADED: dict = {}


def _key_digest(key) -> str | None:
    if key is None:
        return None
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    return hashlib.sha256(raw).hexdigest()


def _worker_model(path: str, key):
    """The artifact at ``path``, loaded memory-mapped once per process (again when it was replaced)."""
    try:
        stamp = os.stat(os.path.join(path, "manifest.json")).st_mtime_ns
    except OSError:
        stamp = None
    cache_key = (os.path.abspath(path), _key_digest(key), stamp)
    model = _LOADED.get(cache_key)
    if model is None:
        model = load(path, mmap=True, key=key)
        _LOADED.clear()  # one model per worker: a replaced artifact frees the old one
        _LOADED[cache_key] = model
    return model


def _spark_id_type(ids: np.ndarray) -> str:
    return "string" if ids.dtype.kind == "U" else "long"


def _scorer(path: str, shipped: bool, key, n: int, filter_seen: bool, items, exclude, unknown: str,
            threads: int):
    """The function mapInPandas runs on each partition's Arrow batches."""

    def score(batches):
        from threadpoolctl import threadpool_limits

        where = path
        if shipped:
            from pyspark import SparkFiles

            where = SparkFiles.get(os.path.basename(path.rstrip("/")))
        model = _worker_model(where, key)
        if hasattr(model, "num_threads"):  # the compiled top-k's threads: one task per core already
            model.num_threads = threads
        has_fallback = getattr(model, "fallback_", None) is not None
        with threadpool_limits(threads):
            for pdf in batches:
                users = pdf["user"].to_numpy()
                if not has_fallback:
                    known = model.user_map_.lookup(users) >= 0
                    if not known.all():
                        if unknown == "error":
                            missing = users[~known][:5].tolist()
                            raise UnknownUserError(f"recommend_all: {int((~known).sum())} user(s) the model does not "
                                                   f"know, e.g. {missing}; pass unknown='skip' to leave them out, or "
                                                   "set a fallback on the model before saving it")
                        users = users[known]
                if len(users) == 0:
                    continue
                frame = model.recommend_frame(users, n, filter_seen=filter_seen, items=items, exclude=exclude)
                frame["score"] = frame["score"].astype(np.float32)
                frame["rank"] = frame["rank"].astype(np.int32)
                yield frame

    return score


def recommend_all(spark, artifact_path: str, users: Any = None, n: int = 10, *, filter_seen: bool = True,
                  items=None, exclude=None, user_col: str = "user", unknown: str = "skip", key=None,
                  threads: int = 1, num_partitions: int | None = None, distribute: bool = False,
                  output: str | None = None, mode: str = "errorifexists"):
    """Top ``n`` items of every user from a saved persona model, as a Spark DataFrame ``user, item, score, rank``.

    The rows are those of ``model.recommend_frame(users, n, ...)`` in-process: the same items,
    scores and ranks (1 = best), the same filters.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    artifact_path : str
        A directory written by ``model.save`` (any persona model), readable from every executor,
        or from the driver alone with ``distribute=True``.
    users : pyspark.sql.DataFrame, sequence of ids, or None
        The users to score: a DataFrame with the column ``user_col``, a list of ids, or None for
        every user the model knows.
    n : int
        Items per user.
    filter_seen : bool
        Leave out what each user interacted with in the training data (the artifact's matrix).
    items, exclude : sequence of item ids, optional
        An allow-list and a deny-list shared by every user.
    user_col : str
        The user id column of a ``users`` DataFrame.
    unknown : {"skip", "error"}
        Users the model does not know (and that no fallback saved with the model answers) are
        left out, or fail the job with :class:`~persona.UnknownUserError`.
    key : bytes or str, optional
        Require the artifact's HMAC signature (``model.save(path, key=...)``).
    threads : int
        BLAS and top-k threads of each task (Spark already runs one task per core).
    num_partitions : int, optional
        Repartition the users first (more partitions: smaller tasks).
    distribute : bool
        Ship the artifact with the job (``SparkContext.addFile``) instead of reading it from a
        shared path.
    output : str, optional
        Also write the result as Parquet there (``mode`` as Spark's writer: "errorifexists",
        "overwrite", ...) and return the written table.

    Returns
    -------
    pyspark.sql.DataFrame
        ``user`` (the users' type), ``item`` (string or long, as the model's ids), ``score``
        (float), ``rank`` (int); nothing for unknown users under ``unknown="skip"``.

    Raises
    ------
    ArtifactError
        The artifact is missing, malformed or not signed with ``key`` (checked on the driver
        before the job starts).

    Examples
    --------
    ::

        scored = persona.spark.recommend_all(spark, "/mnt/models/als", n=20, output="/mnt/out/top20")
    """
    require_pyspark()
    from pyspark.sql import functions as F

    n = check_n(n)
    filter_seen = check_bool(filter_seen, "filter_seen", ints=True)
    threads = check_int(threads, "threads", min=1, hint="one per task is usual: Spark runs a task per core")
    check_int(num_partitions, "num_partitions", min=1, allow_none=True)
    distribute = check_bool(distribute, "distribute")
    if unknown not in ("skip", "error"):
        raise ParameterError(f"unknown: expected 'skip' or 'error', got {unknown!r}")
    if not isinstance(artifact_path, (str, os.PathLike)):
        raise ParameterError(f"artifact_path: expected the path of a saved model, got {type(artifact_path).__name__}")
    path = os.fspath(artifact_path)
    model = load(path, mmap=True, key=key)  # checked here, before any task starts
    item_type = _spark_id_type(model.item_map_.ids)
    user_type = _spark_id_type(model.user_map_.ids)
    # the filters are resolved once on the driver, so a bad id fails here and not in every task
    model.recommend_batch(model.user_map_.ids[:1], 1, filter_seen=filter_seen, items=items, exclude=exclude)
    items = None if items is None else list(items)
    exclude = None if exclude is None else list(exclude)

    if users is None:
        import pandas as pd

        frame = spark.createDataFrame(pd.DataFrame({"user": model.user_map_.ids}), schema=f"user {user_type}")
    elif _is_spark_frame(users):
        if user_col not in users.columns:
            raise DataError(f"users: column {user_col!r} not found; available columns: {list(users.columns)}; "
                            "pass user_col=")
        column = F.col("`" + user_col.replace("`", "``") + "`")
        frame = users.select(column.alias("user")).where(F.col("user").isNotNull())
        kind = frame.schema["user"].dataType.simpleString()
        if kind not in ("string", "bigint", "int", "smallint", "tinyint"):
            raise DataError(f"users: expected string or integer ids in {user_col!r}, got {kind}; convert the column")
        given = "string" if kind == "string" else "long"
        if given != user_type:
            raise DataError(f"users: column {user_col!r} holds {given} ids but the model's user ids are {user_type}s; "
                            f"cast the column (e.g. F.col({user_col!r}).cast('{user_type}'))")
        frame = frame.select(F.col("user").cast(user_type).alias("user"))
    else:
        import pandas as pd

        from ..data.idmap import normalize_ids

        ids = normalize_ids(list(users) if not isinstance(users, np.ndarray) else users, what="users")
        user_type = _spark_id_type(ids)
        frame = spark.createDataFrame(pd.DataFrame({"user": ids}), schema=f"user {user_type}")
    if num_partitions is not None:
        frame = frame.repartition(int(num_partitions))
    if distribute:
        spark.sparkContext.addFile(path, recursive=True)
    schema = f"user {user_type}, item {item_type}, score float, rank int"
    scored = frame.mapInPandas(_scorer(path, distribute, key, n, filter_seen, items, exclude, unknown, threads),
                               schema)
    if output is None:
        return scored
    scored.write.mode(mode).parquet(output)
    return spark.read.parquet(output)


def _is_spark_frame(x) -> bool:
    from pyspark.sql import DataFrame

    return isinstance(x, DataFrame)


def plan_audience(scored, campaign, *, catalog=None, item_col: str = "item_id", category_col: str = "category",
                  contacts=None, segment_col: str = "segment", limit: int | None = None):
    """The audience of a campaign from a scored table: users whose top-n holds items of its scope.

    Each user whose recommendations (from :func:`recommend_all`) include an item of the
    campaign's scope (``campaign.items``, and every catalogue item of ``campaign.categories``)
    is a candidate, scored by the best such item; the audience rule's user allow-list,
    ``exclude_users`` and ``segments`` apply; the best candidates are kept up to the campaign's
    message budget (``campaign.budget.messages``) and ``limit``.

    Parameters
    ----------
    scored : pyspark.sql.DataFrame
        ``user, item, score, rank`` as :func:`recommend_all` returns.
    campaign : persona.marketing.Campaign
    catalog : pyspark.sql.DataFrame or pandas.DataFrame, optional
        Items with ``item_col`` and ``category_col``; needed when the campaign names categories.
    contacts : pyspark.sql.DataFrame, optional
        ``user`` and ``segment_col``; needed when the audience rule names segments.
    limit : int, optional
        At most this many users (besides the budget).

    Returns
    -------
    pyspark.sql.DataFrame
        ``user, score, rank, items``: the best scope item's score and rank, and the scope items
        of the user's top-n best first (at most ``campaign.n_items``), best users first.

    Raises
    ------
    UnsupportedError
        The audience rule needs RFM groups or propensities (use ``persona.marketing.Planner``).
    """
    require_pyspark()
    from pyspark.sql import functions as F

    from ..marketing import Campaign

    check_dataframe(scored, "plan_audience: scored")
    if not isinstance(campaign, Campaign):
        raise ParameterError(f"plan_audience: expected a persona.marketing.Campaign, got {type(campaign).__name__}")
    missing = [c for c in ("user", "item", "score", "rank") if c not in scored.columns]
    if missing:
        raise DataError(f"plan_audience: scored lacks column(s) {missing}; pass the table recommend_all returns")
    limit = check_int(limit, "limit", min=0, allow_none=True)
    rule = campaign.audience
    if rule.rfm_groups or rule.min_propensity > 0:
        raise UnsupportedError("plan_audience: the audience rule needs RFM groups or a minimum propensity; plan such "
                               "campaigns with persona.marketing.Planner")
    spark = scored.sparkSession
    scope = spark.createDataFrame([(str(i),) for i in campaign.items], "item string") if campaign.items else None
    if campaign.categories:
        if catalog is None:
            raise DataError(f"plan_audience: campaign {campaign.name!r} names categories; pass catalog= with "
                            f"{item_col!r} and {category_col!r} columns")
        if not _is_spark_frame(catalog):
            catalog = spark.createDataFrame(catalog[[item_col, category_col]].astype(str))
        for c in (item_col, category_col):
            if c not in catalog.columns:
                raise DataError(f"plan_audience: catalog lacks column {c!r}; available columns: {list(catalog.columns)}")
        by_category = (catalog.where(F.col(category_col).cast("string").isin(list(campaign.categories)))
                       .select(F.col(item_col).cast("string").alias("item")))
        scope = by_category if scope is None else scope.unionByName(by_category)
    hits = scored.withColumn("_item", F.col("item").cast("string")).join(
        F.broadcast(scope.distinct().withColumnRenamed("item", "_item")), "_item").drop("_item")
    if rule.users is not None:
        hits = hits.where(F.col("user").cast("string").isin(list(rule.users)))
    if rule.exclude_users:
        hits = hits.where(~F.col("user").cast("string").isin(list(rule.exclude_users)))
    if rule.segments:
        if contacts is None or "user" not in contacts.columns or segment_col not in contacts.columns:
            raise DataError(f"plan_audience: the audience rule names segments {list(rule.segments)}; pass contacts= "
                            f"with 'user' and {segment_col!r} columns")
        members = contacts.where(F.col(segment_col).cast("string").isin(list(rule.segments))).select("user").distinct()
        hits = hits.join(members, "user", "left_semi")
    per_user = hits.groupBy("user").agg(
        F.max("score").alias("score"), F.min("rank").alias("rank"),
        F.slice(F.transform(F.array_sort(F.collect_list(F.struct("rank", "item"))), lambda s: s["item"]),
                1, int(campaign.n_items)).alias("items"))
    cap = [c for c in (limit, campaign.budget.messages) if c is not None]
    ordered = per_user.orderBy(F.col("score").desc(), F.col("rank").asc(), F.col("user").asc())
    if cap:
        ordered = ordered.limit(min(cap))
    return ordered
