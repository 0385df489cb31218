"""Impressions (issue 15, part 1): what the service showed, in the event store, on SQLite and PostgreSQL.

Each store test runs once per backend (the PostgreSQL server is a throwaway one, tests/pgserver.py).
The service tests check that every answer is logged off the request path with its request id,
placement, model version and variant, and that logging never fails or holds up a request.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

import persona as ps
from persona.store import EventStore

T0 = 1_700_000_000.0


from test_store import Target, open_store, pg_server, target  # noqa: F401 -- the shared store fixtures


# ------------------------------------------------------------------------------ the store
def test_impressions_round_trip_one_row_per_shown_item(open_store):
    store = open_store()
    rid = store.log_impression("ann", np.array(["i3", "i1", "i9"]), placement="home", model_version="ALS@abc",
                               variant="B", experiment="exp-1", propensities=[0.5, 0.25, 1.0], source="model",
                               timestamp=T0)
    store.log_impression("bob", ["i1"], request_id="r-bob", placement="pdp", timestamp=T0 + 60)
    store.track("ann", "i1", "click", properties={"request_id": rid}, timestamp=T0 + 5)
    store.flush()
    assert len(rid) == 32
    imp = store.impressions()
    assert list(imp.columns[:9]) == ["request_id", "user", "placement", "item", "position", "variant",
                                     "model_version", "propensity", "time"]
    assert imp["request_id"].tolist() == [rid] * 3 + ["r-bob"]
    assert imp["item"].tolist() == ["i3", "i1", "i9", "i1"]
    assert imp["position"].tolist() == [1, 2, 3, 1]
    assert imp["user"].tolist() == ["ann"] * 3 + ["bob"]
    assert imp["variant"].tolist()[:3] == ["B"] * 3 and imp["experiment"].tolist()[0] == "exp-1"
    assert imp["model_version"].tolist()[0] == "ALS@abc" and imp["source"].tolist()[0] == "model"
    assert imp["propensity"].tolist()[:3] == [0.5, 0.25, 1.0] and np.isnan(imp["propensity"].iloc[3])
    assert imp["time"].iloc[0].timestamp() == pytest.approx(T0) and str(imp["time"].dtype).endswith("UTC]")
    # selections
    assert store.impressions(placement="pdp")["request_id"].tolist() == ["r-bob"]
    assert store.impressions(user="ann")["item"].tolist() == ["i3", "i1", "i9"]
    assert store.impressions(since=T0 + 30)["user"].tolist() == ["bob"]
    assert store.impressions(experiment="exp-1")["request_id"].nunique() == 1
    # impressions are not events
    assert store.count() == 1
    st = store.stats()
    assert st["tracked"] == 1 and st["impressions"] == 2 and st["impressions_written"] == 2 and st["written"] == 1


def test_integer_ids_come_back_as_integers_and_teams_per_item(open_store):
    store = open_store()
    store.log_impression(7, [11, 12], placement="home", teams=["A", "B"], timestamp=T0)
    store.flush()
    imp = store.impressions()
    assert imp["user"].tolist() == [7, 7] and imp["item"].tolist() == [11, 12]
    assert imp["item"].dtype == np.int64 and imp["team"].tolist() == ["A", "B"]


def test_an_impression_logged_twice_is_stored_once(open_store):
    store = open_store()
    for _ in range(3):
        store.log_impression("ann", ["a", "b"], request_id="same-request", timestamp=T0)
        store.flush()
    assert len(store.impressions()) == 2
    st = store.stats()
    assert st["impressions"] == 3 and st["impressions_written"] == 1 and st["duplicates"] == 2


def test_forget_user_deletes_their_impressions_and_drops_new_ones(open_store, target):
    store = open_store()
    for j in range(3):
        store.log_impression("ann", ["a", "b"], placement="home", timestamp=T0 + j)
        store.log_impression("bob", ["a"], placement="home", timestamp=T0 + j)
    store.track("ann", "a", "view", timestamp=T0)
    store.flush()
    assert store.forget_user("ann") == 1
    assert set(store.impressions()["user"]) == {"bob"}
    table = target.table + "_impressions"
    assert target.sql(f"SELECT count(*) FROM {table} WHERE user_id = ?", ("ann",)) == [(0,)]
    assert store.log_impression("ann", ["a"]) is None  # known forgotten here: not queued
    other = open_store()  # another process's store, not yet aware of the tombstone
    other.log_impression("ann", ["c"], timestamp=T0 + 9)
    other.flush()
    assert other.stats()["impressions_forgotten"] == 1  # dropped by the writer, in the insert's transaction
    assert target.sql(f"SELECT count(*) FROM {table} WHERE user_id = ?", ("ann",)) == [(0,)]
    assert store.stats()["impressions_forgotten"] == 1 and store.stats()["forgotten"] == 0


def test_pseudonymised_stores_keep_pseudonyms_in_impressions(open_store, target):
    key = b"k" * 32
    store = open_store(pseudonymize_key=key)
    raw = "carol.raw.id@example.com"
    store.log_impression(raw, ["a", "b"], placement="home", timestamp=T0)
    store.flush()
    alias = store.pseudonym(raw)
    assert store.impressions()["user"].tolist() == [alias, alias]
    assert store.impressions(user=raw)["item"].tolist() == ["a", "b"]
    table = target.table + "_impressions"
    assert target.sql(f"SELECT user_id FROM {table}") == [(alias,)]
    hits = target.sql(f"SELECT count(*) FROM {table} WHERE user_id LIKE ? OR items LIKE ?"
                      if target.backend == "sqlite" else
                      f"SELECT count(*) FROM {table} WHERE user_id LIKE ? OR items::text LIKE ?",
                      ("%raw.id%", "%raw.id%"))
    assert hits == [(0,)]
    store.forget_user(raw)
    assert store.impressions().empty


def test_a_store_made_by_the_previous_version_gains_the_impressions_table(open_store, target):
    store = open_store()
    store.track("ann", "a", "view", timestamp=T0)
    store.close()
    # what the previous persona created: the events, meta, tombstone and dead-letter tables only
    for suffix in ("_impressions_ts", "_impressions_user"):
        target.sql(f"DROP INDEX IF EXISTS {target.table}{suffix}")
    target.sql(f"DROP TABLE {target.table}_impressions")
    reopened = open_store()
    assert reopened.count() == 1 and reopened.impressions().empty
    reopened.log_impression("ann", ["a"], placement="home", timestamp=T0)
    reopened.flush()
    assert reopened.impressions()["item"].tolist() == ["a"]


def test_empty_store_gives_an_empty_frame_with_the_columns(open_store):
    imp = open_store().impressions()
    assert imp.empty and {"request_id", "user", "item", "position", "time", "propensity"} <= set(imp.columns)


BAD_IMPRESSIONS = [
    (dict(user=None), "user expected a string or integer id"),
    (dict(items="abc"), "items expected a list of item ids"),
    (dict(items=[1.5]), "item\\[0\\] expected a string or integer id"),
    (dict(items=["x" * 300]), "at most 256 characters"),
    (dict(items=list(range(1001))), "at most 1000 ids"),
    (dict(propensities=[0.5]), "1 values for 2 items"),
    (dict(propensities=[0.5, 0.0]), "probabilities in \\(0, 1\\]"),
    (dict(propensities=[0.5, float("nan")]), "probabilities in \\(0, 1\\]"),
    (dict(teams=["A", 3]), "teams expected a short string"),
    (dict(placement="x" * 200), "placement expected 1 to 128 characters"),
    (dict(placement=5), "placement expected a short string"),
    (dict(request_id=""), "request_id expected a non-empty string"),
    (dict(request_id="r" * 300), "request_id expected a non-empty string"),
    (dict(timestamp=-5), "timestamp expected a time from 1970"),
]


@pytest.mark.parametrize("bad,match", BAD_IMPRESSIONS)
def test_bad_impressions_are_refused_in_the_caller(tmp_path, bad, match):
    with EventStore(tmp_path / "e.db") as store:
        args = {"user": "ann", "items": ["a", "b"], **bad}
        with pytest.raises(ps.DataError, match=match):
            store.log_impression(args.pop("user"), args.pop("items"), **args)
        assert store.stats()["impressions"] == 0
        assert store.log_impression("ann", []) is None  # nothing shown: nothing logged


def test_a_full_queue_drops_an_impression_at_once_instead_of_blocking(tmp_path):
    store = EventStore(tmp_path / "e.db", max_queue=2, block_timeout=5.0)
    gate = threading.Event()
    write = store._backend.write
    store._backend.write = lambda conn, rows: (gate.wait(), write(conn, rows))[1]
    try:
        for j in range(4):  # the writer holds one batch; the queue fills behind it
            store.log_impression("ann", ["a"], timestamp=T0 + j)
        t = time.perf_counter()
        assert store.log_impression("ann", ["b"]) is None
        assert time.perf_counter() - t < 0.5  # never waited for block_timeout
        assert store.stats()["impressions_dropped"] >= 1
    finally:
        gate.set()
        store.close()


# ------------------------------------------------------------------------------ the service
@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=200, n_items=80, seed=11)


@pytest.fixture(scope="module")
def model(shop):
    return ps.ItemKNN(k=20).fit(shop.interactions)


def test_every_answer_is_an_impression_with_its_request_id(shop, model, tmp_path):
    store = EventStore(tmp_path / "e.db")
    svc = ps.serving.RecommenderService(model, store=store)
    user = shop.interactions.user_ids[0]
    rec = svc.recommend(user, n=5, context={"placement": "home"})
    items, scores = rec  # still unpacks like model.recommend
    assert len(items) == 5 and rec.placement == "home" and rec.variant is None
    assert isinstance(rec.request_id, str) and len(rec.request_id) == 32 and int(rec.request_id, 16) >= 0
    again = svc.recommend(user, n=5, context={"placement": "home"})
    assert again.cached and again.request_id != rec.request_id  # shown again: a new impression
    also = svc.similar_items(items[0], n=4, context={"placement": "pdp"}, user=user)
    anon = svc.similar_items(items[0], n=4)  # no user: nothing to log
    assert also.request_id is not None and anon.request_id is None
    store.flush()
    imp = store.impressions()
    assert imp["request_id"].unique().tolist() == [rec.request_id, again.request_id, also.request_id]
    first = imp[imp["request_id"] == rec.request_id]
    assert first["item"].tolist() == items.tolist() and first["position"].tolist() == [1, 2, 3, 4, 5]
    assert set(first["user"]) == {user} and set(first["placement"]) == {"home"}
    assert set(first["model_version"]) == {f"ItemKNN#{rec.model_version}"} and set(first["source"]) == {"model"}
    assert imp[imp["request_id"] == also.request_id]["placement"].tolist() == ["pdp"] * 4
    assert svc.stats()["impressions"] == 3
    svc.close()
    store.close()


def test_sampling_and_switching_off(shop, model, tmp_path):
    store = EventStore(tmp_path / "e.db")
    users = shop.interactions.user_ids[:100]
    off = ps.serving.RecommenderService(model, store=store, impressions=False)
    assert all(off.recommend(u, n=3).request_id is None for u in users[:10])
    half = ps.serving.RecommenderService(model, store=store, impressions=0.5, cache_size=0)
    logged = [half.recommend(u, n=3).request_id is not None for u in users for _ in range(4)]
    assert 0.4 < np.mean(logged) < 0.6
    store.flush()
    assert store.impressions()["request_id"].nunique() == sum(logged)
    for bad in (1.5, -0.1, "all", float("nan")):
        with pytest.raises(ps.ParameterError, match="impressions"):
            ps.serving.RecommenderService(model, store=store, impressions=bad)
    store.close()


def test_no_impression_for_a_forgotten_user(shop, model, tmp_path):
    store = EventStore(tmp_path / "e.db")
    svc = ps.serving.RecommenderService(model, store=store)
    user = shop.interactions.user_ids[3]
    assert svc.recommend(user, n=3).request_id is not None
    svc.forget_user(user)
    rec = svc.recommend(user, n=3, context={"placement": "home"})
    assert rec.reason == "forgotten user" and rec.request_id is None
    store.flush()
    assert store.impressions().empty
    store.close()


def test_a_failing_impression_log_never_fails_the_request(shop, model, tmp_path, caplog):
    store = EventStore(tmp_path / "e.db")
    svc = ps.serving.RecommenderService(model, store=store)

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    store.log_impression = broken
    rec = svc.recommend(shop.interactions.user_ids[0], n=4)
    assert len(rec.items) == 4 and rec.request_id is None
    assert svc.stats()["impression_errors"] == 1 and "could not log the impression" in caplog.text
    del store.log_impression
    store.close()  # a closed store refuses the row (StoreError): still an answer
    rec = svc.recommend(shop.interactions.user_ids[1], n=4)
    assert len(rec.items) == 4 and rec.request_id is None and svc.stats()["impression_errors"] == 2


@pytest.mark.parametrize("placement", ["", "x" * 65, "bad placement", "home\n", 7, ["home"]])
def test_a_bad_placement_is_a_parameter_error(shop, model, placement):
    svc = ps.serving.RecommenderService(model)
    with pytest.raises(ps.ParameterError, match="placement"):
        svc.recommend(shop.interactions.user_ids[0], n=3, context={"placement": placement})


def test_artifact_model_version_is_the_same_in_every_worker(shop, model, tmp_path):
    path = model.save(tmp_path / "m.persona")
    one = ps.serving.RecommenderService.from_artifact(path)
    two = ps.serving.RecommenderService.from_artifact(path)
    manifest = json.loads((tmp_path / "m.persona" / "manifest.json").read_text())
    assert one._snapshot.label == two._snapshot.label == f"ItemKNN@{manifest['manifest_sha256'][:12]}"
    one.close()
    two.close()


def test_impression_logging_stays_off_the_request_path(shop, model, tmp_path):
    """With the database stalled (the writer held inside a batch), answers are still logged and returned
    at once: the request thread only queues the row (benchmarks/bench_online.py measures the cost)."""
    store = EventStore(tmp_path / "e.db")
    svc = ps.serving.RecommenderService(model, store=store, cache_size=0)
    gate = threading.Event()
    write = store._backend.write
    store._backend.write = lambda conn, rows: (gate.wait(), write(conn, rows))[1]
    try:
        users = shop.interactions.user_ids[:30]
        t = time.perf_counter()
        recs = [svc.recommend(u, n=10, context={"placement": "home"}) for u in users]
        took = time.perf_counter() - t
        assert all(r.request_id is not None for r in recs)
        assert took < 2.0 and store.stats()["pending"] >= len(users) - 1  # queued, not written
    finally:
        gate.set()
    store.flush()
    assert store.impressions()["request_id"].nunique() == len(users)
    store.close()
