"""persona.spark (issue 17): Spark cleaning equals Interactions, MLlib ALS imported into persona,
batch scoring equals in-process recommend_frame, audiences and per-group models.

One local[2] SparkSession serves the whole module (UI off, 4 shuffle partitions). Without Java the
Spark tests skip with a reason naming the package, or fail under PERSONA_REQUIRE_SERVICES=1
(tests/services.py); ``ALS.from_factors`` and the regularisation mapping need no Spark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import persona as ps
from persona.errors import ArtifactError, DataError, ParameterError, UnknownUserError, UnsupportedError
from persona.models.als import ALS
from services import missing_service, services_required

# pyspark 4 warns that it does not fully support pandas 3 on every conversion; what these tests use works
# (and its pandas conversions use an argument pandas 3 deprecates)
pytestmark = [pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]


# ---------------------------------------------------------------------------------------------- no Spark needed
@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=300, n_items=80, seed=0)


@pytest.fixture(scope="module")
def local_als(shop):
    return ALS(factors=8, iterations=4, random_state=0).fit(shop.interactions)


def test_from_factors_serves_like_the_fitted_model(shop, local_als, tmp_path):
    inter = shop.interactions
    perm = np.random.default_rng(1).permutation(inter.n_users)  # rows in another order: matched by id
    rebuilt = ALS.from_factors(inter.user_ids[perm], inter.item_ids, local_als.user_factors_[perm],
                               local_als.item_factors_, interactions=inter, regularization=local_als.regularization,
                               alpha=local_als.alpha)
    users = inter.user_ids[:40]
    a_ids, a_scores = local_als.recommend_batch(users, n=7)
    b_ids, b_scores = rebuilt.recommend_batch(users, n=7)
    assert (a_ids == b_ids).all() and np.allclose(a_scores, b_scores)
    seen = set(inter.item_ids[inter.matrix[0].indices])
    assert not seen & set(rebuilt.recommend(inter.user_ids[0], n=20)[0])  # filter_seen uses the interactions
    history = list(inter.item_ids[[1, 5, 9]])
    assert (rebuilt.recommend_for_history(history, n=5)[0] == local_als.recommend_for_history(history, n=5)[0]).all()
    rebuilt.save(tmp_path / "m")
    loaded = ps.load(tmp_path / "m")
    assert type(loaded) is ALS and (loaded.recommend_batch(users, n=7)[0] == a_ids).all()
    assert rebuilt.factors == 8 and rebuilt.regularization == local_als.regularization
    bare = ALS.from_factors(["u"], ["a", "b"], [[1.0]], [[1.0], [2.0]])  # no interactions: nothing is seen
    assert bare.recommend("u", n=2)[0].tolist() == ["b", "a"]


def test_from_factors_refuses_bad_input(shop, local_als):
    inter = shop.interactions
    X, Y = local_als.user_factors_, local_als.item_factors_
    with pytest.raises(DataError, match="expected user_factors of shape"):
        ALS.from_factors(inter.user_ids, inter.item_ids, X[:-1], Y)
    with pytest.raises(DataError, match="same number of columns|expected user_factors"):
        ALS.from_factors(inter.user_ids, inter.item_ids, X, Y[:, :3])
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match="finite"):
        ALS.from_factors(inter.user_ids, inter.item_ids, bad, Y)
    with pytest.raises(DataError, match="unique"):
        ALS.from_factors(["u", "u"], ["a"], [[1.0], [2.0]], [[1.0]])
    with pytest.raises(DataError, match="exactly the given user and item ids"):
        ALS.from_factors(inter.user_ids[:10], inter.item_ids, X[:10], Y, interactions=inter)
    with pytest.raises(DataError, match="sparse matrix"):
        ALS.from_factors(inter.user_ids, inter.item_ids, X, Y, interactions=np.zeros((3, 3)))
    with pytest.raises(DataError, match="finite"):  # a negative seen weight is refused like fit's
        ALS.from_factors(["u"], ["a"], [[1.0]], [[1.0]], interactions=sp.csr_matrix([[np.inf]]))
    with pytest.raises(ParameterError, match="alpha"):
        ALS.from_factors(inter.user_ids, inter.item_ids, X, Y, alpha=-1.0)


def test_mllib_reg_param_matches_a_row_of_typical_size():
    from persona.spark import mllib_reg_param

    # 20 entries per user and 200 per item on average: geometric mean sqrt(20 * 200) = 63.2
    assert mllib_reg_param(10.0, n_users=1000, n_items=100, n_entries=20_000) == pytest.approx(10.0 / 63.2455532)
    assert mllib_reg_param(0.0, 5, 5, 5) == 0.0
    with pytest.raises(DataError, match="n_entries"):
        mllib_reg_param(1.0, 5, 5, 0)
    with pytest.raises(ParameterError, match="regularization"):
        mllib_reg_param(-1.0, 5, 5, 5)
    # persona's count-scaled penalty is MLlib's: the mapping is the identity
    assert mllib_reg_param(0.05, 1000, 100, 20_000, regularization_scaling="count") == 0.05
    with pytest.raises(ParameterError, match="regularization_scaling"):
        mllib_reg_param(1.0, 5, 5, 5, regularization_scaling="rows")


def test_import_persona_stays_without_pyspark():
    code = ("import sys, persona, persona.spark; print('pyspark' in sys.modules, 'spark' in dir(persona), "
            "'fit_als' in dir(persona.spark))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True"]


# ---------------------------------------------------------------------------------------------- the session
def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stderr + out.stdout
    for token in text.replace('"', " ").split():
        head = token.split(".")[0]
        if head.isdigit() and "." in token:
            return int(head) if head != "1" else int(token.split(".")[1])
    return None


@pytest.fixture(scope="module")
def spark():
    from persona.spark._session import java_executable

    java = java_executable()
    if java is None:
        missing_service("java", "no java on PATH or in JAVA_HOME; Spark runs on the JVM")
    major = _java_major(java)
    if major is None or major < 17:
        missing_service("java", f"{java} is Java {major}; Spark 4 needs Java 17 or newer")
    try:
        import pyspark  # noqa: F401
    except ImportError:
        message = "needs pyspark: pip install '.[test]' (the test extra installs it) or '.[spark]'"
        if services_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from persona.spark import local_session

    session = local_session(2, shuffle_partitions=4, app_name="persona-tests")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _frame(spark, pdf: pd.DataFrame):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spark.createDataFrame(pdf)


@pytest.fixture(scope="module")
def dirty(shop):
    """The shop's events with every kind of problem the cleaning counts."""
    ev = shop.events[["user_id", "item_id", "timestamp", "event", "value"]].copy()
    ev["event"] = ev["event"].astype(str)
    ev["user_id"] = ev["user_id"].astype(object)
    ev.loc[3, "user_id"] = None
    ev.loc[[5, 6], "event"] = "wishlist"
    ev.loc[8, "event"] = None
    ev.loc[11, "timestamp"] = pd.NaT
    ev = pd.concat([ev, ev.iloc[20:45]], ignore_index=True)  # 25 exact duplicates
    rng = np.random.default_rng(0)
    ev["weight"] = rng.integers(1, 5, len(ev)).astype(float)
    ev.loc[30, "weight"] = -2.0
    ev.loc[31, "weight"] = np.nan
    ev["iso"] = ev["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    ev.loc[40, "iso"] = "not a time"
    ev["ms"] = ev["timestamp"].astype("int64") // 1_000_000
    ev["user_no"] = ev["user_id"].str[1:].astype(float)  # integer ids (as floats: pandas' nulls)
    return ev


CASES = {
    "event-weights-k-core": (dict(user="user_id", item="item_id", time="timestamp", event="event", k_core=3),
                             ["user_id", "item_id", "timestamp", "event"]),
    "weight-column-max-iso": (dict(user="user_id", item="item_id", time="iso", event="event", weight="weight",
                                   min_user_events=4, min_item_events=3, aggregate="max"),
                              ["user_id", "item_id", "iso", "event", "weight"]),
    "int-ids-last-decay": (dict(user="user_no", item="item_id", time="ms", time_unit="ms", value="value",
                                value_as_weight=True, aggregate="last", half_life=20.0),
                           ["user_no", "item_id", "ms", "value"]),
    "count-custom-weights": (dict(user="user_id", item="item_id", event="event", weights={"wishlist": 3.0},
                                  aggregate="count", drop_duplicates=False), ["user_id", "item_id", "event"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_clean_gives_the_interactions_of_from_frame(spark, dirty, case):
    from persona.spark import clean

    options, columns = CASES[case]
    pdf = dirty[columns]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # both warn about the dropped rows
        ref = ps.Interactions.from_frame(pdf, strict=False, **options)
        got = clean(_frame(spark, pdf), strict=False, **options)
    assert got.report.n_input == ref.report.n_input == len(pdf)
    assert got.report.dropped == ref.report.dropped and got.report.n_dropped > 0
    assert got.report.n_kept == ref.report.n_kept == len(ref)
    assert got.report.notes == ref.report.notes
    assert np.array_equal(got.user_map.ids, ref.user_ids) and np.array_equal(got.item_map.ids, ref.item_ids)
    m = got.matrix()
    assert m.shape == ref.matrix.shape and m.nnz == ref.matrix.nnz
    assert np.array_equal(m.indptr, ref.matrix.indptr) and np.array_equal(m.indices, ref.matrix.indices)
    np.testing.assert_allclose(m.data, ref.matrix.data, rtol=1e-5)
    back = got.to_interactions()
    assert np.array_equal(back.users, ref.users) and np.array_equal(back.items, ref.items)
    np.testing.assert_allclose(back.weights, ref.weights, rtol=1e-5)
    for name in ("timestamps", "events", "values"):
        a, b = getattr(back, name), getattr(ref, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-9, err_msg=name)
    assert back.event_types == ref.event_types


def test_clean_refuses_bad_rows_and_options(spark, dirty):
    from persona.spark import clean

    frame = _frame(spark, dirty[["user_id", "item_id", "timestamp", "event", "weight"]])
    with pytest.raises(DataError, match=r"column 'user_id': 1 row\(s\) with null user id"):
        clean(frame, time="timestamp", event="event")
    clean_ids = _frame(spark, dirty[["user_id", "item_id", "event"]].dropna())
    with pytest.raises(DataError, match=r"unknown event types .*\{'wishlist': 2\}"):
        clean(clean_ids, event="event")
    with pytest.raises(DataError, match=r"column\(s\) not found: time='when'; available columns"):
        clean(frame, time="when")
    with pytest.raises(DataError, match="aggregate must be one of"):
        clean(frame, aggregate="median")
    with pytest.raises(DataError, match="no event column"):
        clean(frame, weights={"view": 1.0})
    with pytest.raises(DataError, match="expected a Spark DataFrame, got DataFrame"):
        clean(dirty)
    floats = _frame(spark, pd.DataFrame({"user_id": [1.5, 2.0], "item_id": ["a", "b"]}))
    with pytest.raises(DataError, match="non-integral"):
        clean(floats)
    with pytest.raises(DataError, match=r"negative weight"):
        clean(frame.where("user_id is not null and weight is not null and not isnan(weight)"), weight="weight")
    with pytest.raises(DataError, match="no rows"):
        clean(frame.limit(0))


def test_read_events_reads_parquet_and_sql(spark, shop, tmp_path):
    from persona.spark import clean, read_events

    path = str(tmp_path / "events.parquet")
    ev = shop.events[["user_id", "item_id", "event"]].astype(str)
    ev.to_parquet(path)
    events = read_events(spark, path)
    assert events.count() == len(ev)
    events.createOrReplaceTempView("shop_events")
    viewed = read_events(spark, query="select * from shop_events where event = 'view'")
    assert viewed.count() == int((ev["event"] == "view").sum())
    assert clean(viewed).n_items <= shop.interactions.n_items
    with pytest.raises(DataError, match="exactly one of"):
        read_events(spark, path, query="select 1")


# ---------------------------------------------------------------------------------------------- MLlib ALS
@pytest.fixture(scope="module")
def split(shop):
    """(train, test): the last newly touched item of each user held out (validation targets unused)."""
    train, _, test = ps.split.leave_last_out(shop.interactions, new_items=True)
    return train, test


@pytest.fixture(scope="module")
def spark_als(spark, split, tmp_path_factory):
    from persona.spark import fit_als

    train = split[0]
    frame = _frame(spark, train.to_frame()[["user", "item", "weight"]])
    return fit_als(frame, user="user", item="item", cleaning={"weight": "weight"}, factors=16, iterations=8,
                   regularization=5.0, alpha=2.0, checkpoint_dir=str(tmp_path_factory.mktemp("checkpoints")))


def test_fit_als_returns_a_persona_als_that_ranks_as_mllib_does(spark, split, spark_als, tmp_path):
    from pyspark.ml.recommendation import ALS as MLlibALS

    from persona.spark import clean, import_mllib_als

    model = spark_als
    assert type(model) is ALS and model.factors == 16 and model.regularization == 5.0 and model.alpha == 2.0
    assert model.spark_["n_entries"] == split[0].matrix.nnz
    # the imported factors rank exactly as MLlib's own recommendForUserSubset does
    inter = clean(_frame(spark, split[0].to_frame()[["user", "item", "weight"]]), user="user", item="item",
                  weight="weight")
    mllib = MLlibALS(rank=6, maxIter=3, regParam=0.1, alpha=2.0, implicitPrefs=True, userCol="user_index",
                     itemCol="item_index", ratingCol="weight", seed=3).fit(inter.entries())
    imported = import_mllib_als(mllib, inter, regularization=1.0)
    wanted = [0, 7, 42]
    theirs = mllib.recommendForUserSubset(_frame(spark, pd.DataFrame({"user_index": wanted})), 5).toPandas()
    for _, row in theirs.iterrows():
        ids, scores = imported.recommend(inter.user_map.ids[row["user_index"]], n=5, filter_seen=False)
        recs = row["recommendations"]
        assert ids.tolist() == [inter.item_map.ids[r["item_index"]] for r in recs]
        np.testing.assert_allclose(scores, [r["rating"] for r in recs], rtol=1e-4)
    # it serves, filters seen items, saves and loads like a fitted ALS
    user = model.user_map_.ids[3]
    seen = set(model.item_map_.ids[model.user_items_[3].indices])
    assert seen and not seen & set(model.recommend(user, n=30)[0])
    model.save(tmp_path / "mllib")
    loaded = ps.load(tmp_path / "mllib")
    assert (loaded.recommend_batch(model.user_map_.ids[:20], n=10)[0]
            == model.recommend_batch(model.user_map_.ids[:20], n=10)[0]).all()


def test_count_scaled_fold_in_reproduces_mllibs_user_factors(spark, split):
    """MLlib's last half-step solves the users against the final items with regParam * n_u: persona's
    count-scaled fold-in of a user's row gives the same vector (its unscaled one does not)."""
    from pyspark.ml.recommendation import ALS as MLlibALS

    from persona.spark import clean, import_mllib_als

    inter = clean(_frame(spark, split[0].to_frame()[["user", "item", "weight"]]), user="user", item="item",
                  weight="weight")
    mllib = MLlibALS(rank=6, maxIter=3, regParam=0.05, alpha=2.0, implicitPrefs=True, userCol="user_index",
                     itemCol="item_index", ratingCol="weight", seed=3).fit(inter.entries())
    count = import_mllib_als(mllib, inter, regularization=0.05, alpha=2.0, regularization_scaling="count")
    constant = import_mllib_als(mllib, inter, regularization=0.05, alpha=2.0)
    W = count.user_items_
    far = []
    for u in range(0, W.shape[0], max(1, W.shape[0] // 25)):
        row = W[u]
        hist = count.item_map_.ids[row.indices]
        scale = float(np.abs(count.user_factors_[u]).max())
        np.testing.assert_allclose(count.recalculate_user(hist, weights=row.data), count.user_factors_[u],
                                   rtol=1e-3, atol=1e-3 * scale)
        far.append(np.abs(constant.recalculate_user(hist, weights=row.data) - count.user_factors_[u]).max() / scale)
    assert max(far) > 1e-2, far


def test_mllib_als_ranks_as_well_as_persona_als(split, spark_als):
    train, test = split[0], split[-1]
    local = ALS(factors=16, iterations=8, regularization=5.0, alpha=2.0, solver="cholesky", random_state=0).fit(train)
    popular = ps.MostPopular().fit(train)
    scores = {name: ps.evaluate(m, test, k=(10,))["ndcg@10"]
              for name, m in (("spark", spark_als), ("local", local), ("popular", popular))}
    assert scores["spark"] > scores["popular"], scores
    assert abs(scores["spark"] - scores["local"]) <= 0.25 * scores["local"], scores  # small data: loose


def test_fit_als_refuses_bad_input(spark, dirty):
    from persona.spark import fit_als, import_mllib_als

    frame = _frame(spark, dirty[["user_id", "item_id"]].dropna())
    with pytest.raises(ParameterError, match="factors"):
        fit_als(frame, factors=0)
    with pytest.raises(ParameterError, match="reg_param"):
        fit_als(frame, reg_param=-1.0)
    with pytest.raises(DataError, match="expected a Spark DataFrame"):
        fit_als(dirty)
    with pytest.raises(ParameterError, match="ALSModel"):
        import_mllib_als(object(), None)


# ---------------------------------------------------------------------------------------------- batch scoring
@pytest.fixture(scope="module")
def artifact(shop, local_als, tmp_path_factory):
    path = tmp_path_factory.mktemp("artifacts") / "als"
    local_als.save(path)
    return str(path)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["user", "rank"]).reset_index(drop=True)


def test_recommend_all_equals_recommend_frame(spark, shop, local_als, artifact, tmp_path):
    from persona.spark import recommend_all

    out = str(tmp_path / "top5")
    scored = recommend_all(spark, artifact, n=5, output=out, num_partitions=3)
    assert scored.columns == ["user", "item", "score", "rank"]
    got = _sorted(pd.read_parquet(out))  # written as Parquet, read back without Spark
    want = _sorted(local_als.recommend_frame(shop.interactions.user_ids, n=5))
    assert len(got) == len(want) == 5 * shop.interactions.n_users
    assert (got["user"].to_numpy() == want["user"].to_numpy()).all()
    assert (got["item"].to_numpy() == want["item"].to_numpy()).all()
    assert (got["rank"].to_numpy() == want["rank"].to_numpy()).all()
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-6)
    # seen items are filtered as in-process
    first = shop.interactions.user_ids[0]
    seen = set(shop.interactions.item_ids[shop.interactions.matrix[0].indices])
    assert not seen & set(got.loc[got["user"] == first, "item"])


def test_recommend_all_filters_users_and_ships_the_artifact(spark, shop, local_als, artifact):
    from persona.spark import recommend_all

    ids = shop.interactions.user_ids
    allowed, banned = list(shop.interactions.item_ids[:30]), list(shop.interactions.item_ids[:3])
    users = _frame(spark, pd.DataFrame({"customer": [ids[4], ids[9], "nobody", None]}))
    got = _sorted(recommend_all(spark, artifact, users, n=4, user_col="customer", items=allowed, exclude=banned,
                                filter_seen=False, distribute=True).toPandas())
    want = _sorted(local_als.recommend_frame([ids[4], ids[9]], n=4, items=allowed, exclude=banned, filter_seen=False))
    for column in ("user", "item", "rank"):  # "nobody" and None: left out
        assert got[column].tolist() == want[column].tolist()
    with pytest.raises(Exception, match="UnknownUserError|does not know"):
        recommend_all(spark, artifact, ["nobody"], n=3, unknown="error").collect()
    with pytest.raises(UnknownUserError):  # the shared filters are resolved on the driver; unknown users too
        local_als.recommend_batch(["nobody"], 3)


def test_recommend_all_serves_a_signed_faiss_index(spark, shop, tmp_path):
    from persona.spark import recommend_all

    key = b"spark-test-key-0123456789"
    model = ALS(factors=8, iterations=4, random_state=0).fit(shop.interactions).use_index("hnsw")
    model.save(tmp_path / "indexed", key=key)
    users = list(shop.interactions.user_ids[:60])
    got = _sorted(recommend_all(spark, str(tmp_path / "indexed"), users, n=6, key=key).toPandas())
    want = _sorted(ps.load(tmp_path / "indexed", key=key).recommend_frame(users, n=6))
    assert got["item"].tolist() == want["item"].tolist() and got["user"].tolist() == want["user"].tolist()
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-5)


def test_recommend_all_refuses_bad_artifacts_and_arguments(spark, artifact, tmp_path):
    from persona.spark import recommend_all

    with pytest.raises(ArtifactError):
        recommend_all(spark, str(tmp_path / "missing"))
    tampered = tmp_path / "tampered"
    import shutil

    shutil.copytree(artifact, tampered)
    manifest = json.loads((tampered / "manifest.json").read_text())
    manifest["meta"]["params"]["factors"] = "many"
    (tampered / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError):
        recommend_all(spark, str(tampered))
    with pytest.raises(ArtifactError):  # signed loading refuses an unsigned artifact
        recommend_all(spark, artifact, key=b"0123456789abcdef0123")
    with pytest.raises(ParameterError, match="unknown"):
        recommend_all(spark, artifact, unknown="ignore")
    with pytest.raises(ParameterError):
        recommend_all(spark, artifact, n=0)
    with pytest.raises(DataError, match="holds long ids but the model's user ids are strings"):
        recommend_all(spark, artifact, _frame(spark, pd.DataFrame({"user": [1, 2]})))
    with pytest.raises(DataError, match="column 'who' not found"):
        recommend_all(spark, artifact, _frame(spark, pd.DataFrame({"user": ["u00001"]})), user_col="who")


def test_plan_audience_keeps_the_best_users_within_budget(spark, shop, artifact):
    from persona.marketing import AudienceRule, Budget, Campaign
    from persona.spark import plan_audience, recommend_all

    scored = recommend_all(spark, artifact, n=10)
    table = scored.toPandas()
    scope = list(shop.interactions.item_ids[:12])
    excluded = table.loc[table["item"].isin(scope), "user"].iloc[0]
    campaign = Campaign("spring", items=scope, budget=Budget(messages=25), n_items=2,
                        audience=AudienceRule(exclude_users=[excluded]))
    got = plan_audience(scored, campaign).toPandas()
    hits = table[table["item"].isin(scope) & (table["user"] != excluded)]
    best = hits.sort_values("rank").groupby("user").agg(score=("score", "max"), rank=("rank", "min"),
                                                        items=("item", lambda s: list(s)[:2]))
    best = best.reset_index().sort_values(["score", "rank", "user"], ascending=[False, True, True]).head(25)
    assert len(got) == 25 and got["user"].tolist() == best["user"].tolist()
    assert [list(x) for x in got["items"]] == best["items"].tolist()
    categories = Campaign("skincare", categories=["Skincare"], budget=Budget(messages=10))
    by_category = plan_audience(scored, categories, catalog=shop.items).toPandas()
    skincare = set(shop.items.loc[shop.items["category"] == "Skincare", "item_id"])
    assert 0 < len(by_category) <= 10 and all(set(x) <= skincare for x in by_category["items"])
    with pytest.raises(DataError, match="catalog="):
        plan_audience(scored, categories)
    with pytest.raises(UnsupportedError, match="Planner"):
        plan_audience(scored, Campaign("rfm", items=scope, audience=AudienceRule(rfm_groups=["champions"])))


# ---------------------------------------------------------------------------------------------- per-group models
def test_fit_per_group_fits_one_model_per_category(spark, shop, tmp_path):
    from persona.spark import fit_per_group

    ev = shop.events.merge(shop.items[["item_id", "category"]], on="item_id")[["user_id", "item_id", "event",
                                                                                "category"]].astype(str)
    ev.loc[ev.index[:5], "category"] = "../../escape"  # a hostile group value names no path
    paths = fit_per_group(_frame(spark, ev), "category", ps.EASE(regularization=50.0), str(tmp_path / "ease"),
                          event="event")
    assert set(paths) == set(ev["category"])
    for path in paths.values():
        assert os.path.dirname(path) == str(tmp_path / "ease")
    index = json.loads((tmp_path / "ease" / "groups.json").read_text())
    assert {g["group"] for g in index["groups"]} == set(paths)
    rows = ev[ev["category"] == "Skincare"]
    local = ps.EASE(regularization=50.0).fit(ps.Interactions.from_frame(rows, "user_id", "item_id", event="event"))
    remote = ps.load(paths["Skincare"])
    users = local.user_map_.ids[:10]
    assert (remote.recommend_batch(users, n=5)[0] == local.recommend_batch(users, n=5)[0]).all()
    with pytest.raises(DataError, match="failed"):
        fit_per_group(_frame(spark, ev), "category", ps.EASE(regularization=50.0), str(tmp_path / "bad"), event="event",
                      cleaning={"min_user_events": 10_000})
    with pytest.raises(ParameterError, match="unfitted persona model"):
        fit_per_group(_frame(spark, ev), "category", "ease", str(tmp_path / "x"))


# ---------------------------------------------------------------------------------------------- the example job
def test_the_example_spark_job_runs(spark, tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "spark_job.py"
    spec = importlib.util.spec_from_file_location("spark_job", script)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    result = job.main(["--out", str(tmp_path), "--synthetic-users", "150", "--factors", "8", "--iterations", "3",
                      "--n", "5"], spark=spark)
    served = ps.load(result["artifact"])
    assert type(served) is ALS and served.n_users == result["n_users"] > 0
    assert result["report"].n_input == len(result["shop"].events) and result["report"].n_kept > 0
    top = pd.read_parquet(tmp_path / "top-n")
    assert len(top) == result["scored_rows"] == 5 * served.n_users
    assert set(top.columns) == {"user", "item", "score", "rank"}
    audience = pd.read_parquet(tmp_path / "audience")
    assert 0 < len(audience) == result["audience"] <= 100
