"""Privacy extras (issue 16): retention windows, the consent registry, subject-access export.

Every store test runs once per backend: SQLite and a real PostgreSQL server (a throwaway one,
tests/pgserver.py; without its binaries the PostgreSQL cases skip naming the package, and fail
under PERSONA_REQUIRE_SERVICES=1). The service and planner tests use SQLite stores.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import stat
import threading
import time

import numpy as np
import pytest

import persona as ps
from persona.store import EventStore

DAY = 86400.0
NOW = time.time()
OLD = NOW - 400 * DAY  # outside a 90-day window
RECENT = NOW - 10 * DAY


from test_store import Target, open_store, pg_server, target  # noqa: F401 -- the shared store fixtures


def _dead_letter(target: Target, user: str, at: float, event_id: str) -> None:
    target.sql(f"INSERT INTO {target.table}_dead (at, event_id, user_id, row, reason)"
               f" VALUES ({target.ts()}, ?, ?, ?, ?)",
               (at, event_id, user, json.dumps({"event_id": event_id}), "refused by a test"))


# =============================================================================== retention
def test_purge_deletes_what_is_older_than_the_window_everywhere_and_counts_it(target, open_store, caplog):
    store = open_store()
    for k in range(30):
        store.track(f"u{k % 3}", f"i{k}", "view", timestamp=OLD + k, event_id=f"old-{k}")
        store.track(f"u{k % 3}", f"i{k}", "view", timestamp=RECENT + k, event_id=f"new-{k}")
    for k in range(4):
        store.log_impression("u0", ["i1", "i2"], request_id=f"old-r{k}", timestamp=OLD + k)
        store.log_impression("u0", ["i1"], request_id=f"new-r{k}", timestamp=RECENT + k)
    store.set_consent("u1", "marketing:email", True, at=OLD)
    store.flush()
    _dead_letter(target, "u2", OLD, "dead-old")
    _dead_letter(target, "u2", NOW, "dead-new")
    with caplog.at_level(logging.INFO, logger="persona.store"):
        done = store.purge("90d")
    assert (done["events"], done["impressions"], done["dead_letters"]) == (30, 4, 1)
    assert abs(done["before"] - (time.time() - 90 * DAY)) < 60 and done["seconds"] >= 0
    assert any("purged 30 events, 4 impressions and 1 dead letters" in r.getMessage() for r in caplog.records)
    # gone from every read and from the database itself
    assert sorted(store.events()["event_id"]) == sorted(f"new-{k}" for k in range(30))
    assert store.count(until=RECENT - 1) == 0 and store.count() == 30
    assert sorted(set(store.impressions()["request_id"])) == [f"new-r{k}" for k in range(4)]
    assert target.sql(f"SELECT count(*) FROM {target.table} WHERE substr(event_id, 1, 4) = 'old-'")[0][0] == 0
    old_shown = f"SELECT count(*) FROM {target.table}_impressions WHERE substr(request_id, 1, 4) = 'old-'"
    assert target.sql(old_shown)[0][0] == 0
    assert [r[0] for r in target.sql(f"SELECT event_id FROM {target.table}_dead")] == ["dead-new"]
    # consent records are kept (they prove consent), and a second purge finds nothing
    assert store.consent("u1")["marketing:email"] is True
    again = store.purge(older_than=dt.timedelta(days=90))
    assert (again["events"], again["impressions"], again["dead_letters"]) == (0, 0, 0)
    st = store.stats()
    assert (st["purged_events"], st["purged_impressions"], st["purged_dead_letters"], st["purges"]) == (30, 4, 1, 2)
    assert st["last_purge"]["events"] == 0 and st["purge_errors"] == 0


def test_interactions_after_a_purge_hold_only_the_window(open_store):
    store = open_store()
    store.track("ann", "old-item", "purchase", timestamp=OLD)
    store.track("ann", "new-item", "purchase", timestamp=RECENT)
    store.flush()
    assert sorted(store.interactions().item_ids.tolist()) == ["new-item", "old-item"]
    store.purge(before=NOW - 90 * DAY)
    assert store.interactions().item_ids.tolist() == ["new-item"]


def test_a_large_purge_runs_in_short_transactions(target, open_store):
    store = open_store(purge_batch=7)
    for k in range(50):
        store.track("u", "i", "view", timestamp=OLD + k)
        store.log_impression("u", ["i"], timestamp=OLD + k)
    store.track("u", "i", "view", timestamp=RECENT)
    store.flush()
    done = store.purge(90)  # a number is days
    assert (done["events"], done["impressions"]) == (50, 50)
    assert store.count() == 1


def test_the_writer_purges_on_a_schedule_without_holding_up_track(target, open_store):
    store = open_store(retention_days=90, purge_every=1, purge_batch=500, max_queue=100_000)
    store.import_frame(_frame(6000, OLD), user="u", item="i", event="e", time="t")
    worst = 0.0
    n = 0
    deadline = time.monotonic() + 30
    while store.count(until=NOW - 90 * DAY) and time.monotonic() < deadline:
        t = time.perf_counter()
        assert store.track("live", f"i{n}", "view") is not None
        worst = max(worst, time.perf_counter() - t)
        n += 1
        time.sleep(0.002)
    store.flush()
    assert store.count(until=NOW - 90 * DAY) == 0, "the scheduled purge did not run"
    st = store.stats()
    assert st["purged_events"] == 6000 and st["purges"] >= 1 and st["dropped"] == 0
    assert store.count(user="live") == n
    assert worst < 0.25, f"a track() call waited {worst:.3f} s during the purge"


def _frame(n, t0):
    import pandas as pd

    return pd.DataFrame({"u": [f"u{k % 50}" for k in range(n)], "i": [f"i{k % 97}" for k in range(n)],
                         "e": "view", "t": [t0 + k for k in range(n)]})


def test_a_failing_scheduled_purge_is_counted_and_the_writer_goes_on(open_store, monkeypatch, caplog):
    store = open_store(retention_days=30, purge_every=1)

    def broken(conn, before, limit):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store._backend, "purge", broken)
    with caplog.at_level(logging.ERROR, logger="persona.store"):
        store.track("u", "i", "view", timestamp=OLD)
        store.flush()
        time.sleep(0.3)
    store.track("u", "i", "view")
    store.flush()
    st = store.stats()
    assert st["purge_errors"] >= 1 and st["written"] == 2 and st["errors"] == 0
    assert any("disk on fire" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kw, message", [
    ({"older_than": "90x"}, "expected a duration such as '90d'"),
    ({"older_than": "-5d"}, "expected a duration"),
    ({"older_than": 0}, "longer than zero"),
    ({"older_than": -3}, "longer than zero"),
    ({"older_than": float("nan")}, "longer than zero"),
    ({"older_than": True}, "expected a number of days"),
    ({"older_than": [90]}, "expected a number of days"),
    ({"older_than": "90d", "before": "2024-01-01"}, "not both"),
    ({"before": "not a date"}, "purge: before"),
    ({}, "no window"),
])
def test_bad_purge_arguments_are_refused(open_store, kw, message):
    store = open_store()
    with pytest.raises(ps.ParameterError, match=message):
        store.purge(**kw)


@pytest.mark.parametrize("kw, message", [
    ({"retention_days": 0}, "retention_days"), ({"retention_days": -1}, "retention_days"),
    ({"retention_days": "90"}, "retention_days"), ({"purge_every": 0}, "purge_every"),
    ({"purge_batch": 0}, "purge_batch"), ({"consent_defaults": {"Marketing Email": False}}, "purpose name"),
    ({"consent_defaults": {"newsletter": "yes"}}, "expected True"), ({"consent_defaults": ["a"]}, "dict of purpose"),
    ({"consent_refresh": 0}, "consent_refresh"),
])
def test_bad_privacy_options_are_refused(target, kw, message):
    with pytest.raises(ps.ParameterError, match=message):
        target.open(**kw)


def test_a_store_of_an_earlier_version_gains_the_consent_tables_in_place(target):
    store = target.open()
    store.track("ann", "i1", "view")
    store.close()
    for t in ("consent_log", "consent"):  # as a store made before the registry existed
        target.sql(f"DROP TABLE {target.table}_{t}")
    again = target.open()
    try:
        assert again.count() == 1
        assert again.set_consent("ann", "analytics", False) is True
        assert again.has_consent("ann", "analytics") is False
    finally:
        again.close()


# ================================================================================ consent
def test_consent_defaults_answers_and_history(target, open_store):
    store = open_store()
    assert store.has_consent("ann", "personalisation") and store.has_consent("ann", "analytics")
    assert not store.has_consent("ann", "marketing:email") and not store.has_consent("ann", "marketing:whatsapp")
    assert store.set_consent("ann", "marketing:email", True, source="signup form", at="2024-05-01T10:00:00Z")
    assert store.set_consent("ann", "personalisation", False, source="cookie banner v3")
    assert store.set_consent("ann", "personalisation", True, source="account settings")
    assert store.set_consent("ann", "personalisation", False, source="account settings")
    assert store.has_consent("ann", "marketing:email") and not store.has_consent("ann", "personalisation")
    assert store.has_consent("bob", "personalisation") and not store.has_consent("bob", "marketing:email")
    answers = store.consent("ann")
    assert answers["marketing:email"] is True and answers["personalisation"] is False and answers["analytics"]
    history = store.consent_history("ann")
    assert [(h["purpose"], h["granted"], h["source"]) for h in history] == [
        ("marketing:email", True, "signup form"), ("personalisation", False, "cookie banner v3"),
        ("personalisation", True, "account settings"), ("personalisation", False, "account settings")]
    assert history[0]["at"] == pytest.approx(1714557600.0)
    # 7 and "7" are one user
    store.set_consent(7, "analytics", False)
    assert store.has_consent("7", "analytics") is False and store.consent(7)["analytics"] is False


def test_a_change_made_elsewhere_is_seen_within_the_refresh(target, open_store):
    web = open_store(consent_refresh=0.1)
    admin = open_store()  # another process's store object on the same database
    assert web.has_consent("ann", "personalisation")  # watched from now on
    assert admin.set_consent("ann", "personalisation", False)
    deadline = time.monotonic() + 5
    while web.has_consent("ann", "personalisation") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not web.has_consent("ann", "personalisation")
    admin.set_consent("ann", "personalisation", True)
    admin.set_consent("bob", "marketing:sms", True)
    while not web.has_consent("ann", "personalisation") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert web.has_consent("ann", "personalisation") and web.has_consent("bob", "marketing:sms")


def test_many_concurrent_answers_end_in_the_last_one_everywhere(target, open_store):
    stores = [open_store(consent_refresh=0.1) for _ in range(3)]
    watcher = open_store(consent_refresh=0.1)
    assert watcher.has_consent("u0", "analytics")
    errors = []

    def flip(s, k):
        try:
            for j in range(15):
                s.set_consent(f"u{j % 5}", "analytics", (j + k) % 2 == 0)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=flip, args=(s, k)) for k, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    truth = {f"u{j}": stores[0].consent(f"u{j}")["analytics"] for j in range(5)}
    time.sleep(0.5)
    assert {u: watcher.has_consent(u, "analytics") for u in truth} == truth
    assert {u: stores[1].has_consent(u, "analytics") for u in truth} == truth


def test_pseudonymised_stores_keep_only_pseudonyms_in_the_consent_tables(target, open_store):
    store = open_store(pseudonymize_key=b"k" * 32)
    store.set_consent("ann@example.com", "marketing:email", True, source="form")
    rows = target.sql(f"SELECT user_id FROM {target.table}_consent") + \
        target.sql(f"SELECT user_id FROM {target.table}_consent_log")
    assert {r[0] for r in rows} == {store.pseudonym("ann@example.com")}
    assert store.has_consent("ann@example.com", "marketing:email")
    assert store.allowed(["ann@example.com", "bob@example.com"], "marketing:email").tolist() == [True, False]


def test_forgetting_deletes_consent_records_and_refuses_new_ones(target, open_store):
    store = open_store()
    store.set_consent("ann", "marketing:email", True)
    store.set_consent("ann", "personalisation", False)
    assert not store.has_consent("ann", "personalisation")
    store.forget_user("ann")
    assert target.sql(f"SELECT count(*) FROM {target.table}_consent WHERE user_id = 'ann'")[0][0] == 0
    assert target.sql(f"SELECT count(*) FROM {target.table}_consent_log WHERE user_id = 'ann'")[0][0] == 0
    assert store.set_consent("ann", "marketing:email", True) is False
    assert store.consent_history("ann") == []
    assert not any(store.consent("ann").values())
    assert not store.has_consent("ann", "analytics") and not store.has_consent("ann", "marketing:email")
    assert store.allowed(["ann"], "analytics").tolist() == [False]
    elsewhere = open_store()  # another process, which never asked whether anyone was forgotten
    assert not elsewhere.has_consent("ann", "analytics") and elsewhere.has_consent("bob", "analytics")


def test_undeclared_purposes_and_bad_answers_are_refused(open_store):
    store = open_store(consent_defaults={"newsletter": False, "analytics": False})
    assert store.consent_defaults["analytics"] is False and store.consent_defaults["newsletter"] is False
    assert not store.has_consent("ann", "analytics") and not store.has_consent("ann", "newsletter")
    store.set_consent("ann", "newsletter", True)
    assert store.has_consent("ann", "newsletter")
    for bad, message in [("personalization", "unknown purpose 'personalization'"), ("Analytics", "purpose name"),
                         ("", "purpose name"), ("x" * 65, "purpose name"), (7, "purpose name"),
                         ("a b", "purpose name"), ("marketing:", "purpose name")]:
        with pytest.raises(ps.ParameterError, match=message):
            store.set_consent("ann", bad, True)
        with pytest.raises(ps.ParameterError, match=message):
            store.has_consent("ann", bad)
    for granted in ("yes", 1, None):
        with pytest.raises(ps.ParameterError, match="granted expected True"):
            store.set_consent("ann", "analytics", granted)
    with pytest.raises(ps.ParameterError, match="source"):
        store.set_consent("ann", "analytics", True, source="x" * 300)
    with pytest.raises(ps.ParameterError, match="set_consent: at"):
        store.set_consent("ann", "analytics", True, at="yesterday-ish")
    with pytest.raises(ps.DataError, match="user"):
        store.set_consent(None, "analytics", True)
    assert store.has_consent(None, "analytics") is False and store.has_consent("x" * 300, "newsletter") is False
    assert [h["purpose"] for h in store.consent_history("ann")] == ["newsletter"]


def test_allowed_answers_for_many_users_at_once(open_store):
    store = open_store()
    store.set_consent("a", "marketing:sms", True)
    store.set_consent("b", "marketing:sms", False)
    store.set_consent("c", "personalisation", False)
    store.forget_user("d")
    users = ["a", "b", "c", "d", "e", 7, np.int64(8), "x" * 300]
    assert store.allowed(users, "marketing:sms").tolist() == [True, False, False, False, False, False, False, False]
    assert store.allowed(np.array(["a", "c", "e"]), "personalisation").tolist() == [True, False, True]


def test_reads_can_keep_only_users_who_allow_a_purpose(target, open_store):
    store = open_store()
    for u in ("ann", "bob", "cem"):
        store.track(u, "i1", "view", timestamp=RECENT)
        store.log_impression(u, ["i1"], timestamp=RECENT)
    store.flush()
    store.set_consent("bob", "analytics", False)
    store.set_consent("cem", "marketing:email", True)
    assert sorted(store.events(consent="analytics")["user"]) == ["ann", "cem"]
    assert store.count(consent="analytics") == 2 and store.count() == 3
    assert store.events(consent="marketing:email")["user"].tolist() == ["cem"]
    assert sorted(store.interactions(consent="analytics").user_ids.tolist()) == ["ann", "cem"]
    with pytest.raises(ps.ParameterError, match="unknown purpose"):
        store.events(consent="anything")


def test_an_unreadable_registry_answers_with_the_defaults_and_counts_it(open_store, monkeypatch, caplog):
    store = open_store()
    store.set_consent("ann", "personalisation", False)

    def down(*a, **k):
        raise RuntimeError("database gone")

    monkeypatch.setattr(store._backend, "consent_differing", down)
    with caplog.at_level(logging.ERROR, logger="persona.store"):
        assert store.has_consent("bob", "personalisation") is True
    assert store.stats()["consent_errors"] == 1
    assert any("database gone" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    assert store.has_consent("ann", "personalisation") is False  # read again once it answers


# ======================================================================= subject-access export
HOSTILE_USERS = ["ann", "ann%", "ann_", "Ann", "ann ", "' OR 1=1 --", "ann'); DROP TABLE persona_events; --",
                 "é", "e\u0301", "用户", "😀" * 64, "u" * 256, "7", "07", 8]


def test_an_export_holds_exactly_that_users_data(target, open_store, tmp_path):
    store = open_store()
    for n, u in enumerate(HOSTILE_USERS):
        for j in range(3):
            store.track(u, f"item-{n}-{j}", "view", timestamp=RECENT + n * 10 + j, properties={"who": n},
                        event_id=f"e-{n}-{j}")
        store.log_impression(u, [f"item-{n}-0", f"item-{n}-1"], request_id=f"r-{n}", timestamp=RECENT + n)
        store.set_consent(u, "marketing:email", n % 2 == 0, source=f"form {n}")
        _dead_letter(target, str(u), NOW, f"d-{n}")
    store.track(7, "int-item", "cart", timestamp=RECENT, event_id="e-int-7")  # 7 and "7" are one user
    store.flush()
    for n, u in enumerate(HOSTILE_USERS):
        got = store.export_user(u)
        mine = {f"e-{n}-{j}" for j in range(3)} | ({"e-int-7"} if u == "7" else set())
        assert {e["event_id"] for e in got["events"]} == mine, u
        assert all(e["properties"] == {"who": n} for e in got["events"] if e["event_id"] != "e-int-7")
        assert [i["request_id"] for i in got["impressions"]] == [f"r-{n}"]
        assert got["impressions"][0]["items"] == [f"item-{n}-0", f"item-{n}-1"]
        assert list(got["consent"]) == ["marketing:email"]
        assert got["consent"]["marketing:email"]["granted"] is (n % 2 == 0)
        assert got["consent"]["marketing:email"]["source"] == f"form {n}"
        assert [d["event_id"] for d in got["dead_letters"]] == [f"d-{n}"]
        assert got["stored_id"] == str(u) and got["user"] == u and got["forgotten"] is False
        assert got["counts"]["events"] == len(mine)
        text = json.dumps(got, ensure_ascii=False)
        for m, other in enumerate(HOSTILE_USERS):
            if m != n:
                assert f"e-{m}-" not in text and f"r-{m}\"" not in text and f"form {m}\"" not in text


def test_an_export_refuses_ids_the_store_cannot_hold(open_store):
    store = open_store()
    for bad, message in [("u" * 257, "at most 256 characters"), ("a\x00b", "NUL"), (None, "string or integer"),
                         (2**70, "64 bits"), ("", "empty"), (["ann"], "string or integer"),
                         (True, "string or integer")]:
        with pytest.raises(ps.DataError, match=message):
            store.export_user(bad)


def test_an_export_of_a_pseudonymised_store_names_the_pseudonym_only(target, open_store, tmp_path):
    store = open_store(pseudonymize_key=b"s" * 32)
    store.track("ann@example.com", "i1", "view", timestamp=RECENT)
    store.track("bob@example.com", "i2", "view", timestamp=RECENT)
    store.set_consent("ann@example.com", "personalisation", False)
    store.flush()
    path = tmp_path / "ann.json"
    got = store.export_user("ann@example.com", path=path)
    assert got["pseudonymized"] is True and got["stored_id"] == store.pseudonym("ann@example.com")
    assert [e["item"] for e in got["events"]] == ["i1"]
    assert got["consent_effective"]["personalisation"] is False and got["consent_effective"]["analytics"] is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text(encoding="utf-8")) == got
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_an_export_of_a_forgotten_user_shows_what_is_still_held(target, open_store):
    store = open_store()
    store.track("ann", "i1", "view", timestamp=RECENT)
    store.set_consent("ann", "analytics", True)
    store.flush()
    store.forget_user("ann")
    got = store.export_user("ann")
    assert got["forgotten"] is True and got["forgotten_at"] is not None
    assert got["events"] == [] and got["consent"] == {} and got["consent_history"] == []
    assert not any(got["consent_effective"].values())
    # an older persona (no tombstones) wrote an event after the forget: every read hides it, the export names it
    target.sql(f"INSERT INTO {target.table} (event_id, ts, user_id, item_id, event, value, properties, kinds)"
               f" VALUES ('late', {target.ts()}, 'ann', 'i9', 'view', NULL, NULL, 0)", (RECENT,))
    assert store.count(user="ann") == 0
    assert [e["event_id"] for e in store.export_user("ann")["events"]] == ["late"]


def test_an_export_includes_rows_written_behind_persona_s_back_as_stored(target, open_store, tmp_path):
    store = open_store()
    rows = [("odd-1", RECENT, "ann", "i1", "view", None, '{"a": 1}', 0)]
    if target.backend == "sqlite":
        rows += [("odd-2", "yesterday", "ann", "i2", "view", "NaN?", "not json", 0),
                 ("odd-3", RECENT, "ann", "i3", "view", float("inf"), '{"x": NaN}', 0)]
    for r in rows:
        ts = "?" if target.backend == "sqlite" else "to_timestamp(?)"
        target.sql(f"INSERT INTO {target.table} (event_id, ts, user_id, item_id, event, value, properties, kinds)"
                   f" VALUES (?, {ts}, ?, ?, ?, ?, ?, ?)", r)
    got = store.export_user("ann", path=tmp_path / "ann.json")
    by_id = {e["event_id"]: e for e in got["events"]}
    assert by_id["odd-1"]["properties"] == {"a": 1}
    if target.backend == "sqlite":
        assert by_id["odd-2"]["time"] == "yesterday" and by_id["odd-2"]["properties"] == "not json"
        assert by_id["odd-3"]["value"] == "inf" and by_id["odd-3"]["properties"] == '{"x": NaN}'
    json.loads((tmp_path / "ann.json").read_text(encoding="utf-8"))  # strict JSON


# ============================================================================ the service
@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=200, n_items=80, seed=5)


@pytest.fixture(scope="module")
def knn(shop):
    return ps.ItemKNN(k=20).fit(shop.interactions)


def test_the_service_does_not_personalise_for_a_user_who_withdrew(shop, knn, tmp_path):
    from persona.serving import RecommenderService

    store = EventStore(tmp_path / "events.db", consent_refresh=0.1)
    admin = EventStore(tmp_path / "events.db")  # e.g. the shop's account page, in another worker
    service = RecommenderService(knn, store=store)
    ann, bob = shop.interactions.user_ids[:2].tolist()
    try:
        personal = service.recommend(ann, n=5, context={"placement": "home"})
        assert personal.source == "model" and personal.request_id is not None
        admin.set_consent(ann, "personalisation", False, source="cookie banner")
        deadline = time.monotonic() + 5
        while service.recommend(ann, n=5).source == "model" and time.monotonic() < deadline:
            time.sleep(0.05)
        got = service.recommend(ann, n=5, context={"placement": "home", "history": [knn.item_map_.ids[0]],
                                                    "segment": "x"})
        popular = service.recommend("a-stranger", n=5)
        assert got.source == "popular" and got.reason == "no consent" and got.request_id is None
        np.testing.assert_array_equal(got.items, popular.items)  # nothing of theirs: the history is not used
        assert service.track(ann, knn.item_map_.ids[1], "view") is None
        assert service.recommend(bob, n=5).source == "model"  # others are personalised as before
        store.flush()
        assert store.count(user=ann) == 0 and set(store.impressions()["user"]) == {ann, "a-stranger", bob}
        assert set(store.impressions(user=ann)["source"]) == {"model"}  # only answers from before the withdrawal
        similar = service.similar_items(knn.item_map_.ids[0], n=3, user=ann)
        assert similar.request_id is None
        st = service.stats()
        assert st["untracked_no_consent"] == 1 and st["reasons"]["no consent"] >= 1
        store.set_consent(ann, "personalisation", True, source="account settings")
        assert service.recommend(ann, n=5).source == "model"
        assert service.track(ann, knn.item_map_.ids[1], "view") is not None
    finally:
        service.close()
        store.close()
        admin.close()


def test_a_store_whose_registry_fails_makes_the_service_answer_without_personalising(shop, knn, caplog):
    from persona.serving import RecommenderService

    class Broken:
        pseudonymizes = False

        def is_forgotten(self, user):
            return False

        def has_consent(self, user, purpose):
            raise RuntimeError("registry down")

        def log_impression(self, *a, **k):
            return "rid"

    service = RecommenderService(knn, store=Broken())
    with caplog.at_level(logging.ERROR):
        got = service.recommend(shop.interactions.user_ids[0], n=3)
    assert got.reason == "no consent" and got.source == "popular"
    assert any("allows personalisation" in r.getMessage() for r in caplog.records)


# ============================================================================ the planner
def test_the_planner_messages_only_users_the_registry_allows(shop, tmp_path):
    from persona.marketing import Budget, Campaign, Channel, Contacts, Planner

    model = ps.ALS(factors=8, iterations=3, random_state=0).fit(shop.interactions)
    users = shop.users["user_id"].tolist()
    contacts = Contacts(users, consent={"email": np.ones(len(users), bool), "sms": np.ones(len(users), bool)})
    store = EventStore(tmp_path / "events.db")
    try:
        granted = users[: len(users) // 2]
        for u in granted:
            store.set_consent(u, "marketing:email", True, source="newsletter form")
        store.set_consent(granted[0], "marketing:email", False, source="unsubscribe link")  # withdrawn since
        store.forget_user(granted[1])
        store.set_consent(users[-1], "marketing:sms", True)
        camp = Campaign("spring", categories=[shop.items["category"].iloc[0]], budget=Budget(messages=10_000),
                        channels=["email", "sms"], order_value=30.0)
        channels = [Channel("email", cost=0.0), Channel("sms", cost=0.0)]
        free = Planner(contacts=contacts, channels=channels, model=model, catalog=shop.items)
        planner = Planner(contacts=contacts, channels=channels, model=model, catalog=shop.items, consent=store)
        when = "2024-04-02T12:00:00Z"
        everyone = free.plan([camp], now=when)
        plan = planner.plan([camp], now=when)
        allowed_email = set(granted[2:])
        sent = {(m.user, m.channel) for m in plan}
        assert sent and {u for u, h in sent if h == "email"} <= allowed_email
        assert {u for u, h in sent if h == "sms"} <= {users[-1]}
        assert granted[0] not in {u for u, _ in sent} and granted[1] not in {u for u, _ in sent}
        assert len({m.user for m in everyone}) > len({u for u, _ in sent})  # the registry is what held them back
        assert plan.campaigns["spring"]["no_consent"] > everyone.campaigns["spring"]["no_consent"] == 0
        with pytest.raises(ps.ParameterError, match="consent registry"):
            Planner(contacts=contacts, channels=channels, model=model, consent="yes please")
    finally:
        store.close()


# =============================================================================== the command line
def test_persona_purge_and_export_user(tmp_path, capsys):
    from persona.cli import main

    db = tmp_path / "events.db"
    key = tmp_path / "key"
    key.write_bytes(b"q" * 32)
    store = EventStore(db, pseudonymize_key=b"q" * 32)
    store.track("ann", "old", "view", timestamp=OLD)
    store.track("ann", "new", "view", timestamp=RECENT)
    store.track("bob", "other", "view", timestamp=RECENT)
    store.set_consent("ann", "marketing:sms", True, source="shop")
    store.close()
    assert main(["purge", "--store", str(db), "--key-file", str(key), "--older-than", "90d"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert (done["events"], done["impressions"], done["dead_letters"]) == (1, 0, 0)
    out = tmp_path / "ann.json"
    assert main(["export-user", "--store", str(db), "--key-file", str(key), "--user", "ann", "--out", str(out)]) == 0
    assert '"events": 1' in capsys.readouterr().out
    got = json.loads(out.read_text(encoding="utf-8"))
    assert [e["item"] for e in got["events"]] == ["new"] and got["consent"]["marketing:sms"]["granted"] is True
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert main(["export-user", "--store", str(db), "--key-file", str(key), "--user", "bob"]) == 0
    assert [e["item"] for e in json.loads(capsys.readouterr().out)["events"]] == ["other"]
    # mistakes say what to do
    assert main(["purge", "--store", str(db), "--key-file", str(key)]) == 2
    assert "no window" in capsys.readouterr().err
    assert main(["purge", "--store", str(db), "--older-than", "90d"]) == 2  # the key is needed to open it
    assert "pseudonymize_key" in capsys.readouterr().err
    assert main(["purge", "--store", str(db), "--key-file", str(key), "--older-than", "soon"]) == 2
    with pytest.raises(SystemExit, match="no event store"):
        main(["purge", "--store", str(tmp_path / "missing.db"), "--older-than", "1d"])
    with pytest.raises(SystemExit, match="cannot read --key-file"):
        main(["export-user", "--store", str(db), "--key-file", str(tmp_path / "nokey"), "--user", "ann"])
