"""persona.store under attack (issue 11, points 6-9): hostile events, a hung or failing database,
odd rows, and forgetting a user for good -- against SQLite and a real PostgreSQL server, with real
subprocesses where other workers and restarts are involved.

Each test here failed on the store before issue 11: the writer retried a refused batch forever, a
full queue held a request forever, close() gave up at the first error, one odd row broke reading
back, and a forgotten user stayed answerable in every other process.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import os
import random
import string
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as label
from hypothesis import strategies as st

import persona as ps
from persona._time import to_epoch
from persona.store import EventStore
from persona.store import events as events_mod
from test_store import Target, open_store, pg_server, target  # noqa: F401 -- the shared fixtures

T0 = 1_700_000_000.0


def _random_text(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits + "éß中😀") for _ in range(n))


def _refuse_item(target: Target, item: str) -> None:
    """Make the database itself refuse rows with ``item`` (as a DBA's constraint would)."""
    if target.backend == "sqlite":
        target.sql(f"CREATE TRIGGER refuse_{item} BEFORE INSERT ON {target.table} WHEN NEW.item_id = '{item}' "
                   f"BEGIN SELECT RAISE(ABORT, 'item {item} is refused'); END")
    else:
        target.sql(f"ALTER TABLE {target.table} ADD CONSTRAINT refuse_{item} CHECK (item_id <> '{item}')")


def _raw_insert(target: Target, rows) -> None:
    """Rows written behind persona's back (another tool, an older version, a DBA)."""
    for event_id, ts, user, item, event, value, props, kinds in rows:
        ts_sql = "?" if target.backend == "sqlite" else "?::timestamptz"
        target.sql(f"INSERT INTO {target.table} (event_id, ts, user_id, item_id, event, value, properties, kinds)"
                   f" VALUES (?, {ts_sql}, ?, ?, ?, ?, ?, ?)", (event_id, ts, user, item, event, value, props, kinds))


# ------------------------------------------------------------------- 6. one hostile event
@pytest.mark.parametrize("when, message", [
    (-2.5e11, "from 1970-01-01 to 2200-01-01"),
    (-1.0, "from 1970-01-01 to 2200-01-01"),
    (7258118400.0, "from 1970-01-01 to 2200-01-01"),
    (2.5e11, "from 1970-01-01 to 2200-01-01"),
    ("1969-12-31T23:59:59Z", "from 1970-01-01 to 2200-01-01"),
    ("0001-01-01", "from 1970-01-01 to 2200-01-01"),
    (1.7e12, "between years 1 and 9999"),  # milliseconds
])
def test_a_timestamp_outside_1970_2200_is_refused_at_track_and_the_writer_goes_on(open_store, when, message):
    store = open_store()
    store.track("a", "i", "view", timestamp=T0, event_id="before")
    with pytest.raises(ps.DataError, match=message):
        store.track("u", "i", "view", timestamp=when, event_id="hostile")
    store.track("b", "i", "view", timestamp=T0 + 1, event_id="after")
    store.flush(timeout=30)
    assert sorted(store.events()["event_id"]) == ["after", "before"]
    st_ = store.stats()
    assert (st_["tracked"], st_["written"], st_["pending"], st_["errors"]) == (2, 2, 0, 0)


def test_the_edges_of_the_time_range_are_kept_exactly(open_store):
    store = open_store()
    store.track("u", "i", "view", timestamp=0.0, event_id="first")
    store.track("u", "i", "view", timestamp="2199-12-31T23:59:59.999999Z", event_id="last")
    store.flush(timeout=30)
    df = store.events()
    assert df["event_id"].tolist() == ["first", "last"]
    assert df["time"].astype("int64").tolist() == [0, 7258118399999999]


def test_overlong_ids_names_and_properties_are_refused_at_track(open_store):
    store = open_store()
    hostile = [
        (dict(user=_random_text(10_000)), "user id expected at most 256 characters, got 10000"),
        (dict(item=_random_text(257, 1)), "item id expected at most 256 characters, got 257"),
        (dict(event="v" * 65), "event expected a non-empty string of at most 64 characters"),
        (dict(properties={"blob": "x" * 70_000}), "at most 65536 bytes"),
        (dict(properties={1: "a"}), "properties keys expected strings"),
        (dict(properties=_deep(10_000)), "nest deeper than 32 levels"),
        (dict(properties=_deep(33)), "nest deeper than 32 levels"),
    ]
    for bad, message in hostile:
        with pytest.raises(ps.DataError, match=message):
            store.track(**{"user": "u", "item": "i", "event": "view", **bad})
    longest = _random_text(256, 2)  # at the limit: kept, also by PostgreSQL's index
    store.track(longest, longest, "e" * 64, properties=_deep(32), event_id="edge")
    store.flush(timeout=30)
    df = store.events()
    assert df["user"].tolist() == [longest] and df["item"].tolist() == [longest]
    assert df["properties"].tolist() == [_deep(32)]
    assert store.stats()["tracked"] == 1


def _deep(n: int):
    p: dict = {}
    for _ in range(n - 1):
        p = {"a": p}
    return p


def test_a_batch_the_database_refuses_is_split_and_only_the_bad_rows_are_dead_lettered(target, open_store, caplog):
    store = open_store(batch_size=1000)
    store.track("u", "i", "view", event_id="warm-up")
    store.flush(timeout=30)
    _refuse_item(target, "poison")
    with target.write_lock():  # the writer stalls, so all 50 land in one batch
        for j in range(50):
            store.track(f"u{j % 7}", "poison" if j in (3, 31) else f"i{j}", "view", timestamp=T0 + j,
                        event_id=f"e{j}")
    store.flush(timeout=60)  # before issue 11: StoreError, the batch retried forever
    ids = set(store.events()["event_id"])
    assert ids == {"warm-up"} | {f"e{j}" for j in range(50) if j not in (3, 31)}
    dead = store.dead_letters()
    assert sorted(d["event_id"] for d in dead) == ["e3", "e31"]
    assert all("poison" in json.loads(d["row"])["item_id"] for d in dead)
    assert all(("refuse_poison" in d["reason"]) or ("poison is refused" in d["reason"]) for d in dead)
    st_ = store.stats()
    assert (st_["written"], st_["dead_lettered"], st_["unwritable"], st_["pending"]) == (49, 2, 0, 0)
    assert any("dead-letter" in r.getMessage() for r in caplog.records)
    store.track("u", "i", "view", event_id="later")  # the writer goes on
    store.flush(timeout=30)
    assert store.count() == 50


def test_rows_postgresql_refuses_never_stop_the_writer(pg_server, monkeypatch):  # noqa: F811
    # the second line: were the checks at track ever bypassed (an older version, a bug), the rows
    # the issue names -- a time before 4713 BC and a 10,000-character random id (over the 2,704
    # bytes of a btree index row) -- are dead-lettered and the rest commit
    monkeypatch.setattr(events_mod, "MIN_TIMESTAMP", -1e12)
    monkeypatch.setattr(events_mod, "MAX_ID_LENGTH", 100_000)
    table = f"ev_{os.urandom(6).hex()}"
    store = EventStore(pg_server.url, table=table)
    try:
        with Target("postgres", pg_server.url, table).write_lock():
            store.track("a", "i", "view", timestamp=T0, event_id="good-0")
            store.track("u", "i", "view", timestamp=-2.5e11, event_id="ancient")
            store.track(_random_text(10_000, 5), "i", "view", timestamp=T0, event_id="huge-id")
            for j in range(1, 20):
                store.track("b", f"i{j}", "view", timestamp=T0 + j, event_id=f"good-{j}")
        store.flush(timeout=60)
        assert sorted(store.events()["event_id"]) == sorted(f"good-{j}" for j in range(20))
        reasons = {d["event_id"]: d["reason"] for d in store.dead_letters()}
        assert set(reasons) == {"ancient", "huge-id"}
        assert "out of range" in reasons["ancient"] and "index row" in reasons["huge-id"]
        assert store.stats()["dead_lettered"] == 2
    finally:
        store.close(timeout=10)


# ------------------------------------------------------------------- 7. a hung or failing database
def test_a_hung_database_holds_track_for_at_most_block_timeout_then_drops_with_the_exact_count(target, open_store):
    store = open_store(max_queue=10, batch_size=5, block_timeout=0.05, busy_timeout=30)
    store.track("u", "i", "view", event_id="first")
    store.flush(timeout=30)
    ids, slowest = [], 0.0
    with target.write_lock():  # the database hangs: the writer waits on its lock
        for j in range(40):
            t0 = time.monotonic()
            ids.append(store.track("u", f"i{j}", "view", event_id=f"e{j}"))
            slowest = max(slowest, time.monotonic() - t0)
        st_ = store.stats()
    assert slowest < 0.05 + 0.5  # never held longer than block_timeout (plus scheduling)
    dropped = ids.count(None)
    assert dropped >= 40 - 10 - 5 and st_["dropped"] == dropped and st_["tracked"] == 1 + 40 - dropped
    store.flush(timeout=60)
    assert sorted(store.events()["event_id"]) == sorted(["first"] + [i for i in ids if i is not None])

    loud = open_store(max_queue=2, batch_size=1, block_timeout=0.05, on_timeout="raise", busy_timeout=30)
    loud.track("u", "i", "view")
    loud.flush(timeout=30)
    with target.write_lock():
        with pytest.raises(ps.StoreError, match=r"not recorded: the queue is full .*block_timeout=0.05"):
            for j in range(10):
                loud.track("u", f"i{j}", "view")
        assert loud.stats()["dropped"] == 1


def test_close_retries_a_failure_that_clears_instead_of_declaring_events_lost(target, open_store):
    store = open_store(busy_timeout=2.0, exit_timeout=20)
    store.track("u", "i", "view")
    store.flush()
    target.sql(f"DROP TABLE {target.table}")
    for j in range(3):
        store.track("u", f"i{j}", "view", event_id=f"late-{j}")
    with pytest.raises(ps.StoreError):
        store.flush(timeout=1)  # the writer is failing now

    def heal():
        time.sleep(1.0)
        target.open().close()  # the table is back

    t = threading.Thread(target=heal)
    t.start()
    store.close()  # keeps retrying (up to exit_timeout while failing); before issue 11: "3 events lost"
    t.join()
    assert store.closed
    assert sorted(_stored_ids(target)) == [f"late-{j}" for j in range(3)]


def test_close_on_a_hung_database_gives_up_after_exit_timeout_instead_of_waiting(target, open_store):
    store = open_store(busy_timeout=30, exit_timeout=1.0)
    store.track("u", "i", "view")
    store.flush(timeout=30)
    with target.write_lock():  # the database hangs: no error, no progress
        for j in range(3):
            store.track("u", f"i{j}", "view")
        t0 = time.monotonic()
        with pytest.raises(ps.StoreError, match=r"close: 3 event\(s\) could not be written .* did not take a batch"):
            store.close()  # before issue 11: waited the whole busy_timeout (30 s), or forever on a stalled server
        assert time.monotonic() - t0 < 6
    assert store.closed


def _stored_ids(target: Target) -> list:
    return [r[0] for r in target.sql(f"SELECT event_id FROM {target.table}")]


# ------------------------------------------------------------------- 8. odd rows read back
def test_reading_back_never_breaks_on_an_odd_row(target, open_store, tmp_path):
    store = open_store()
    store.track("u", "i", "view", timestamp=T0, value=1.0, event_id="normal")
    store.flush(timeout=30)
    if target.backend == "sqlite":  # SQLite keeps whatever a column is given
        odd = [("ancient", -2.5e11, "u", "i", "view", None, None, 0),
               ("far", 2.5e11, "u", "i", "view", None, None, 0),
               ("overflow", 1e300, "u", "i", "view", None, None, 0),
               ("text-time", "yesterday", "u", "i", "view", "abc", "{not json", 0)]
        representable = {"normal": T0, "ancient": -2.5e11, "far": 2.5e11}
        no_iso = {"ancient", "overflow", "text-time"}  # beyond what an ISO-8601 year (1-9999) can say
    else:
        odd = [("year-1", "0001-01-01T00:00:00Z", "u", "i", "view", None, None, 0),
               ("far", "200000-01-01T00:00:00Z", "u", "i", "view", None, None, 0),
               ("infinity", "infinity", "u", "i", "view", None, None, 0),
               ("minus-infinity", "-infinity", "u", "i", "view", None, None, 0)]
        representable = {"normal": T0, "year-1": -62135596800.0, "far": 6249223180800.0}
        no_iso = {"far", "infinity", "minus-infinity"}
    _raw_insert(target, odd)
    ids = {"normal"} | {r[0] for r in odd}

    df = store.events()  # before issue 11: an exception (out of bounds, overflow)
    assert set(df["event_id"]) == ids
    times = dict(zip(df["event_id"], df["time"]))
    for e, t in representable.items():
        assert times[e].asm8.astype("datetime64[us]").astype("int64") == round(t * 1e6), e  # to the microsecond
    assert sum(1 for e in ids if e not in representable and str(times[e]) == "NaT") == len(ids) - len(representable)

    for name in ("odd.csv", "odd.parquet"):
        assert store.export(tmp_path / name) == len(ids)
    import pandas as pd

    csv = pd.read_csv(tmp_path / "odd.csv", keep_default_na=False)
    assert set(csv["event_id"]) == ids
    iso = dict(zip(csv["event_id"], csv["time"]))
    assert iso["normal"] == "2023-11-14T22:13:20.000000+00:00"
    assert {e for e in ids if iso[e] == ""} == no_iso
    pq = pd.read_parquet(tmp_path / "odd.parquet")
    assert set(pq["event_id"]) == ids
    assert len(store.interactions(default_weight=1.0)) >= 1  # odd times are left out, the rest trains


# ------------------------------------------------------------------- 9. forgetting, completely and lastingly
def _seed(store: EventStore, users, n_items: int = 12, per_user: int = 6, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for k, u in enumerate(users):
        for j in rng.choice(n_items, size=per_user, replace=False):
            store.track(u, f"i{j}", "purchase", timestamp=T0 + k * 100 + int(j))
    store.flush(timeout=30)


def test_forget_user_works_whatever_form_the_id_arrives_in(open_store):
    store = open_store()
    users = list(range(1, 30))  # integer ids, as a shop's database hands them out
    _seed(store, users)
    model = ps.ItemKNN(k=10).fit(store.interactions())
    assert 7 in model.user_map_
    service = ps.serving.RecommenderService(model, store=store)
    assert service.recommend(7, n=3).source == "model"
    assert service.forget_user("7") == 6  # the web layer passed the id as text
    for form in (7, "7", np.int64(7)):
        r = service.recommend(form, n=3)
        assert (r.source, r.reason) == ("popular", "forgotten user"), form
    assert store.count(user=7) == 0 and store.count(user="7") == 0
    assert store.is_forgotten(7) and store.is_forgotten("7") and not store.is_forgotten(8)
    # tracking them again is ignored, and counted
    assert service.track(7, "i1", "view") is None and store.track("7", "i1", "view") is None
    store.flush(timeout=30)
    assert store.count(user=7) == 0 and store.stats()["forgotten"] >= 1
    assert service.recommend(8, n=3).source == "model"


# Another worker: a service over the store with a model trained before the forget. It answers
# user 7 once, queues events of 7 and 8 behind a closed gate, waits for "GO", then reports.
WORKER = r"""
import json, sys, threading, time
import persona as ps
from persona.store import EventStore
a = json.loads(sys.argv[1])
store = EventStore(a["target"], table=a["table"], forget_refresh=0.2, **a.get("store", {}))
gate = threading.Event()
write = store._backend.write
store._backend.write = lambda conn, rows: (gate.wait(), write(conn, rows))[1]
service = ps.serving.RecommenderService(ps.load(a["model"]), store=store)
before = service.recommend(a["user"], n=3)
for j in range(5):
    store.track(a["user"], f"i{j}", "view", timestamp=1.7e9 + j, event_id=f"queued-{a['user']}-{j}")
    store.track(a["other"], f"i{j}", "view", timestamp=1.7e9 + j, event_id=f"queued-{a['other']}-{j}")
print(json.dumps({"before": before.source}), flush=True)
assert sys.stdin.readline().strip() == "GO"
gate.set()
store.flush(timeout=30)
time.sleep(0.6)   # three tombstone refreshes
after = service.recommend(a["user"], n=3)
print(json.dumps({"after": [after.source, after.reason], "stats": store.stats()}), flush=True)
store.close(timeout=10)
"""

RESTARTED = r"""
import json, sys
import persona as ps
from persona.store import EventStore
a = json.loads(sys.argv[1])
store = EventStore(a["target"], table=a["table"], **a.get("store", {}))
service = ps.serving.RecommenderService(ps.load(a["model"]), store=store)
r = service.recommend(a["user"], n=3)
other = service.recommend(a["other"], n=3)
tracked = service.track(a["user"], "i1", "view")
store.flush(timeout=30)
print(json.dumps({"answer": [r.source, r.reason], "other": other.source, "tracked": tracked,
                  "count": store.count(user=a["user"])}), flush=True)
store.close(timeout=10)
"""


def _child(code: str, target: Target, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, target.args(**kw)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _line(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()
    if not line:
        proc.wait(30)
        raise AssertionError(f"child failed ({proc.returncode}): {proc.stderr.read()[-3000:]}")
    return json.loads(line)


@pytest.mark.parametrize("pseudonymized", [False, True], ids=["raw-ids", "pseudonymized"])
def test_a_forgotten_user_is_a_stranger_to_every_worker_and_their_queued_events_are_dropped(
        target, open_store, tmp_path, pseudonymized):
    key = b"k" * 32 if pseudonymized else None
    store = open_store(pseudonymize_key=key)
    _seed(store, list(range(1, 30)))
    model = ps.ItemKNN(k=10).fit(store.interactions())
    path = str(model.save(tmp_path / "model.persona"))
    kw = {"store": {"pseudonymize_key": key.decode()}} if key else {}
    worker = _child(WORKER.replace('**a.get("store", {})', '**{k: v.encode() for k, v in a.get("store", {}).items()}'),
                    target, model=path, user=7, other=8, **kw)
    try:
        assert _line(worker) == {"before": "model"}  # it serves 7 from the model, events of 7 queued
        assert store.forget_user("7") == 6  # in this process, with the id as text
        worker.stdin.write("GO\n")
        worker.stdin.flush()
        report = _line(worker)
        assert worker.wait(60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert report["after"] == ["popular", "forgotten user"]
    assert report["stats"]["forgotten"] == 5 and report["stats"]["written"] == 5  # 7's dropped, 8's written
    assert store.count(user=7) == 0 and store.count(user=8) == 6 + 5
    if pseudonymized:  # the tombstone holds the pseudonym, never the raw id
        tomb = target.sql(f"SELECT user_id FROM {target.table}_forgotten")
        assert tomb == [(store.pseudonym(7),)]
    else:
        assert target.sql(f"SELECT user_id FROM {target.table}_forgotten") == [("7",)]

    # a restart: a fresh process, the model trained before the forget, the store holds the tombstone
    restarted = _child(RESTARTED.replace('**a.get("store", {})',
                                         '**{k: v.encode() for k, v in a.get("store", {}).items()}'),
                       target, model=path, user=7, other=8, **kw)
    out = _line(restarted)
    assert restarted.wait(60) == 0
    assert out == {"answer": ["popular", "forgotten user"], "other": "model", "tracked": None, "count": 0}


def test_the_next_train_and_exports_exclude_a_forgotten_user_even_rows_an_older_worker_wrote(
        target, open_store, tmp_path):
    from persona.contrib.common import train_and_publish

    store = open_store()
    users = [f"user-{k}" for k in range(20)]
    _seed(store, users)
    _refuse_item(target, "poison")
    store.track("user-7", "poison", "view", event_id="dead-7")  # a dead letter of theirs
    store.flush(timeout=30)
    assert [d["event_id"] for d in store.dead_letters()] == ["dead-7"]
    assert store.forget_user("user-7") == 6
    assert store.dead_letters() == []  # their dead letters went too
    # an older persona (no tombstones) in another worker still writes events of user-7
    _raw_insert(target, [("old-worker-1", T0 if target.backend == "sqlite" else "2023-11-14T22:13:20Z",
                          "user-7", "i1", "purchase", None, None, 0)])
    assert target.sql(f"SELECT count(*) FROM {target.table} WHERE user_id = 'user-7'") == [(1,)]

    published = train_and_publish(store, tmp_path / "model.persona", model="itemknn", params={"k": 10})
    assert "user-7" not in published.model.user_map_ and published.n_users == 19
    assert "user-7" not in set(store.interactions().user_ids)
    assert store.count(user="user-7") == 0 and "user-7" not in set(store.events()["user"])
    import pandas as pd

    for name in ("after.csv", "after.parquet", "after.csv.gz"):
        n = store.export(tmp_path / name)
        frame = pd.read_parquet(tmp_path / name) if name.endswith(".parquet") else pd.read_csv(tmp_path / name)
        assert n == len(frame) == 19 * 6 and "user-7" not in set(frame["user"])


def test_an_existing_store_gets_the_new_tables_in_place(target, open_store):
    # the layout a store had before issue 11: the events and the meta table only
    store = open_store()
    store.track("ann", "i", "view", timestamp=T0)
    store.flush(timeout=30)
    store.close()
    for t in ("forgotten", "dead"):
        target.sql(f"DROP TABLE {target.table}_{t}")
    reopened = open_store()
    assert reopened.count() == 1
    assert reopened.forget_user("ann") == 1 and reopened.is_forgotten("ann")
    assert target.sql(f"SELECT user_id FROM {target.table}_forgotten") == [("ann",)]


# ------------------------------------------------------------------- the fuzz test of store payloads
_chars = st.one_of(st.characters(), st.sampled_from(["\x00", "\ud800", "\udcff", "😀", "\u2028", "'", '"', "\\"]))
_text = st.text(_chars, max_size=12) | st.text(_chars, min_size=250, max_size=270)
_ids = st.one_of(_text, st.integers(-2**70, 2**70), st.sampled_from([None, 1.5, True, b"x", ["a"], np.int64(7)]))
_times = st.one_of(
    st.none(), st.floats(), st.floats(-1e12, 1e12), st.integers(-10**13, 10**13), st.datetimes(), st.text(max_size=25),
    st.sampled_from(["2024-05-01T10:00:00Z", "1969-12-31T23:59:59Z", "2200-01-01T00:00:00Z", "2199-12-31T23:59:59Z",
                     "0001-01-01", "9999-12-31T23:59:59", -2.5e11, 0, 7258118399.999999, np.datetime64("NaT")]),
)
_values = st.one_of(st.none(), st.floats(), st.integers(-2**80, 2**80), st.booleans(), st.text(max_size=5))
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(), st.integers(-2**80, 2**80), _text),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.one_of(_text, st.integers(0, 3)), inner, max_size=3),
    max_leaves=10,
)
_properties = st.one_of(st.none(), st.dictionaries(_text, _json, max_size=4), _json)
_events = st.one_of(st.sampled_from(["view", "purchase", "open"]), _text, st.integers(), st.none())
ANY = {"user": _ids, "item": _ids, "event": _events, "timestamp": _times, "value": _values, "properties": _properties}

# what a shop normally sends, varied widely: each example makes at most one field hostile
_ok_chars = st.characters(exclude_characters="\x00")  # no NUL, no lone surrogates
_ok_text = st.text(_ok_chars, min_size=1, max_size=20) | st.text(_ok_chars, min_size=240, max_size=256)
_ok_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
              st.integers(-2**80, 2**80), st.text(_ok_chars, max_size=20)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(_ok_chars, max_size=8), inner, max_size=3),
    max_leaves=12,
)
VALID = {
    "user": _ok_text | st.integers(-2**63, 2**63 - 1),
    "item": _ok_text | st.integers(-2**63, 2**63 - 1),
    "event": st.text(_ok_chars, min_size=1, max_size=64),
    "timestamp": st.one_of(st.none(), st.floats(0, 7258118399.0), st.integers(0, 7258118399),
                           st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2199, 12, 31))),
    "value": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**60, 2**60)),
    "properties": st.none() | st.dictionaries(st.text(_ok_chars, max_size=10), _ok_json, max_size=4),
}
_counter = itertools.count()


@st.composite
def payloads(draw):
    fields = {k: draw(v) for k, v in VALID.items()}
    hostile = draw(st.sampled_from([None, *ANY]))
    if hostile is not None:
        fields[hostile] = draw(ANY[hostile])
    return fields


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(payload=payloads(),
       raw=st.none() | st.tuples(st.floats(-1e13, 1e13), st.integers(0, 4000), st.integers(0, 2**32)))
def test_fuzz_store_payloads(target, open_store, payload, raw):
    """Any payload: a DataError at track, or written and read back intact; the writer never
    stops; the valid events behind a bad one commit. ``raw`` also pushes a row past track's checks
    (a bypassed validation): it is stored or dead-lettered, never blocks the rest."""
    user, item, event, timestamp, value, properties = (payload[k] for k in VALID)
    store = _fuzz_store(open_store, target)
    n = next(_counter)
    store.track("marker", "m", "view", event_id=f"before-{n}")
    try:
        got = store.track(user, item, event, timestamp=timestamp, value=value, properties=properties,
                          event_id=f"fz-{n}")
    except ps.DataError as e:
        got = None
        label(f"refused: {str(e)[:30]}")
    t_track = time.time()
    if raw is not None:
        ts, length, seed = raw
        row = (f"raw-{n}", ts, _random_text(length, seed) or "r", "i", "view", None, None, 0)
        store._writer.put(row)
    store.track("marker", "m", "view", event_id=f"after-{n}")
    store.flush(timeout=60)  # the writer never stops
    st_ = store.stats()
    assert st_["pending"] == 0 and st_["unwritable"] == 0
    markers = set(store.events(user="marker")["event_id"])
    assert {f"before-{n}", f"after-{n}"} <= markers
    dead = {d["event_id"] for d in store.dead_letters(limit=10_000)}
    assert f"fz-{n}" not in dead  # what track accepts, the database accepts
    if raw is not None:
        stored = store._fuzz_target.sql(f"SELECT count(*) FROM {store._fuzz_target.table} WHERE event_id = ?",
                                        (f"raw-{n}",))[0][0]
        assert stored + (f"raw-{n}" in dead) == 1
        label(f"raw row {'stored' if stored else 'dead-lettered'}")
    if got is None:
        return
    label("accepted and read back")
    assert got == f"fz-{n}"
    df = store.events(user=user)
    row = df[df["event_id"] == got]
    assert len(row) == 1
    row = row.iloc[0]
    assert str(row["user"]) == _canon(user) and str(row["item"]) == _canon(item) and row["event"] == event
    expected = t_track if timestamp is None else to_epoch(timestamp)
    tolerance = 5.0 if timestamp is None else 5e-6
    assert abs(row["time"].value / 1e9 - expected) <= tolerance
    if value is None:
        assert math.isnan(row["value"])
    else:
        assert row["value"] == float(value)
    assert _same_json(row["properties"], None if properties is None else json.loads(json.dumps(properties)))


def _fuzz_store(open_store, target):
    # one store per test run and backend (hypothesis calls the test body many times)
    key = id(open_store)
    cached = _FUZZ.get(key)
    if cached is None:
        store = open_store(batch_size=64, synchronous="normal")
        store._fuzz_target = target
        _FUZZ.clear()
        _FUZZ[key] = cached = store
    return cached


_FUZZ: dict = {}


def _canon(x) -> str:
    return str(int(x)) if isinstance(x, (int, np.integer)) else str(x)


def _same_json(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):  # jsonb writes 1e300 as digits
        if a == b:
            return True
        try:
            return float(a) == float(b)
        except OverflowError:
            return False
    return a == b


# ------------------------------------------------------------------- client-chosen event ids
def test_a_client_chosen_event_id_cannot_take_another_users_event(target, open_store):
    """Regression: a key a client chose shared the store's one namespace with everyone's."""
    import hashlib

    store = open_store()
    stolen = store.track("mallory", "i1", "purchase", client_event_id="order-1001-line-1")
    assert stolen != "order-1001-line-1" and stolen.startswith("c:")
    assert store.track("ann", "i1", "purchase", event_id="order-1001-line-1") == "order-1001-line-1"
    theirs = store.track("ann", "i1", "click", client_event_id="click:r1:i1")
    assert store.track("mallory", "i1", "click", client_event_id="click:r1:i1") != theirs
    assert store.track("ann", "i1", "click", client_event_id="click:r1:i1") == theirs  # a retried beacon
    assert store.track(7, "i1", "view", client_event_id="k") == store.track("7", "i1", "view", client_event_id="k")
    long_key = "x" * 255
    hashed = store.track("ann", "i1", "view", client_event_id=long_key)
    assert len(hashed) <= 255 and hashed.endswith(hashlib.sha256(long_key.encode()).hexdigest())
    store.flush()
    assert sorted(store.events(user="ann")["event"]) == ["click", "purchase", "view"]
    assert store.stats()["duplicates"] == 2  # the retried beacon and 7 == "7"
    for bad, message in [({"event_id": "a", "client_event_id": "b"}, "not both"),
                         ({"client_event_id": ""}, "client_event_id expected"),
                         ({"client_event_id": "a\x00b"}, "client_event_id expected"),
                         ({"client_event_id": "x" * 256}, "client_event_id expected"),
                         ({"client_event_id": 12}, "client_event_id expected")]:
        with pytest.raises(ps.DataError, match=message):
            store.track("ann", "i1", "view", **bad)


def test_a_client_chosen_event_id_names_the_pseudonym_never_the_raw_id(target, open_store):
    import hashlib

    store = open_store(pseudonymize_key=b"p" * 32)
    eid = store.track("ann@example.com", "i1", "view", client_event_id="k1")
    raw = hashlib.sha256(b"persona.client-event-id.v1\x00ann@example.com").hexdigest()[:24]
    alias = hashlib.sha256(b"persona.client-event-id.v1\x00" + store.pseudonym("ann@example.com").encode()).hexdigest()
    assert eid == f"c:{alias[:24]}:k1" and raw not in eid
