"""persona.store: durable event collection, against SQLite and a real PostgreSQL server.

Every test runs once per backend. The PostgreSQL server is a throwaway one this module starts
(tests/pgserver.py); when its binaries are missing the PostgreSQL tests fail with the install
command, they are not skipped. The guarantees are proven with real processes: ``kill -9`` after
``flush()``, four writers at once, a fork, a normal interpreter exit.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest

import persona as ps
from pgserver import PostgresUnavailable, ThrowawayPostgres
from services import missing_service
from persona.store import EventStore

BACKENDS = ["sqlite", "postgres"]
T0 = 1_700_000_000.0


@pytest.fixture(scope="session")
def pg_server():
    try:
        server = ThrowawayPostgres().start()
    except PostgresUnavailable as e:
        missing_service("postgresql", str(e))
    yield server
    server.stop()


@dataclass
class Target:
    backend: str
    target: str
    table: str

    def open(self, **kw) -> EventStore:
        return EventStore(self.target, table=self.table, **kw)

    def args(self, **kw) -> str:
        return json.dumps({"target": self.target, "table": self.table, **kw})

    @contextmanager
    def write_lock(self):
        """Hold the table's write lock from another connection, so the store's writer stalls."""
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.target, isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                conn.execute("COMMIT")
                conn.close()
        else:
            import psycopg

            with psycopg.connect(self.target) as conn:
                conn.execute(f"LOCK TABLE {self.table} IN EXCLUSIVE MODE")
                try:
                    yield
                finally:
                    conn.commit()

    def sql(self, query: str, params=()) -> list:
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.target, isolation_level=None)
            try:
                return conn.execute(query, params).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.target, autocommit=True) as conn:
            cur = conn.execute(query.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    def ts(self) -> str:
        """SQL of a placeholder holding epoch seconds, as the backend stores times."""
        return "?" if self.backend == "sqlite" else "to_timestamp(?)"


@pytest.fixture(params=BACKENDS)
def target(request, tmp_path):
    if request.param == "sqlite":
        return Target("sqlite", str(tmp_path / "events.db"), "persona_events")
    pg = request.getfixturevalue("pg_server")
    return Target("postgres", pg.url, f"ev_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def open_store(target):
    """Open stores on the test's target; all are closed (quietly) at the end."""
    opened = []

    def make(**kw) -> EventStore:
        s = target.open(**kw)
        opened.append(s)
        return s

    yield make
    for s in opened:
        try:
            s.close(timeout=10)
        except ps.StoreError:
            pass


# A child process: python -c CHILD '{"target": ..., "table": ..., "mode": ..., ...}'
CHILD = r"""
import json, sys, time
from persona.store import EventStore
a = json.loads(sys.argv[1])
s = EventStore(a["target"], table=a["table"], batch_size=a.get("batch_size", 1000))
n, mode = a["n"], a["mode"]
if mode == "write":
    for j in range(n):
        s.track(f"u{j % 50}", f"i{j % 97}", "view", timestamp=1.7e9 + j, event_id=f"{a['prefix']}-{j}")
    s.flush()
    print(json.dumps(s.stats()), flush=True)
elif mode == "kill":
    for j in range(n):
        s.track("u", f"i{j}", "cart", event_id=f"acked-{j}")
    s.flush()
    print("FLUSHED", flush=True)
    j = 0
    while True:  # keep the writer busy until the parent kills us
        s.track("u", "x", "view", event_id=f"unacked-{j}")
        j += 1
        if j % 200 == 0:
            time.sleep(0.002)
elif mode == "exit":  # no flush, no close: the atexit hook must write them
    for j in range(n):
        s.track("u", f"i{j}", "view", event_id=f"atexit-{j}")
"""


def run_child(target: Target, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, target.args(**kw)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 60) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}): {err}"
    return out


def stored_ids(store: EventStore) -> list:
    return store.events()["event_id"].tolist()


# ---------------------------------------------------------------------------------- durability
def test_flushed_events_survive_kill_9(target, open_store):
    n = 3000  # 60 batches: without a real flush, many acked events would still be queued at the kill
    proc = run_child(target, mode="kill", n=n, batch_size=50)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "FLUSHED", f"child did not flush: {line!r} {proc.stderr.read() if proc.poll() else ''}"
        os.kill(proc.pid, signal.SIGKILL)  # at once: the writer is mid-stream with unacknowledged events
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    store = open_store()
    ids = stored_ids(store)
    assert {f"acked-{j}" for j in range(n)} <= set(ids)
    assert len(ids) == len(set(ids))  # whatever of the rest landed, landed whole and once


def test_events_tracked_before_a_normal_exit_are_written_by_atexit(target, open_store):
    finish(run_child(target, mode="exit", n=250, batch_size=40))
    assert sorted(stored_ids(open_store())) == sorted(f"atexit-{j}" for j in range(250))


def test_four_processes_write_every_event_exactly_once_and_replays_insert_nothing(target, open_store):
    n, procs = 1500, 4
    kids = [run_child(target, mode="write", n=n, prefix=f"p{k}", batch_size=50) for k in range(procs)]
    stats = [json.loads(finish(p).strip().splitlines()[-1]) for p in kids]
    assert [s["written"] for s in stats] == [n] * procs
    store = open_store()
    ids = stored_ids(store)
    assert len(ids) == n * procs
    assert set(ids) == {f"p{k}-{j}" for k in range(procs) for j in range(n)}

    # replay: the same event ids again, two processes racing on each prefix
    kids = [run_child(target, mode="write", n=n, prefix=f"p{k % 2}", batch_size=200) for k in range(procs)]
    stats = [json.loads(finish(p).strip().splitlines()[-1]) for p in kids]
    assert [(s["written"], s["duplicates"]) for s in stats] == [(0, n)] * procs
    assert store.count() == n * procs


def test_replay_in_one_process_is_counted_as_duplicate(open_store):
    store = open_store()
    assert store.track("u1", "i1", "view", event_id="order-7-line-1") == "order-7-line-1"
    store.flush()
    store.track("u1", "i1", "view", event_id="order-7-line-1")
    store.track("u1", "i2", "view", event_id="order-7-line-1")  # same key, different content: still once
    store.flush()
    assert store.count() == 1
    st = store.stats()
    assert (st["tracked"], st["written"], st["duplicates"], st["pending"]) == (3, 1, 2, 0)
    assert store.events()["item"].tolist() == ["i1"]


def test_a_forked_child_writes_its_own_events(target, open_store):
    store = open_store(batch_size=5)
    for j in range(10):
        store.track("parent", f"i{j}", "view", event_id=f"parent-{j}")

    def child():
        for j in range(5):
            store.track("child", f"i{j}", "view", event_id=f"child-{j}")
        store.flush(timeout=30)
        st = store.stats()
        store.close()
        os._exit(0 if st["tracked"] == 5 and st["written"] == 5 else 3)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    store.flush()
    assert sorted(stored_ids(store)) == sorted([f"parent-{j}" for j in range(10)] + [f"child-{j}" for j in range(5)])


# ---------------------------------------------------------------------------------- full queue
def test_full_queue_with_drop_reports_the_exact_drop_count(target, open_store, caplog):
    store = open_store(on_full="drop", max_queue=100, batch_size=10)
    total = 1000
    with caplog.at_level(logging.WARNING, logger="persona.store"):
        with target.write_lock():
            ids = [store.track("u", f"i{j % 7}", "view", event_id=f"e{j}") for j in range(total)]
            st = store.stats()
    dropped = ids.count(None)
    assert st["dropped"] == dropped
    assert dropped >= total - 100 - 10  # at most a full queue plus one batch in flight were accepted
    assert st["tracked"] == total - dropped
    assert any("dropped" in r.getMessage() and "on_full='drop'" in r.getMessage() for r in caplog.records)
    store.flush(timeout=30)
    assert sorted(stored_ids(store)) == sorted(i for i in ids if i is not None)
    assert store.stats()["dropped"] == dropped


def test_full_queue_with_block_applies_back_pressure_and_loses_nothing(target, open_store):
    store = open_store(on_full="block", max_queue=50, batch_size=10, block_timeout=60)
    total = 400
    done = threading.Event()

    def produce():
        for j in range(total):
            store.track("u", f"i{j % 7}", "view", event_id=f"e{j}")
        done.set()

    with target.write_lock():
        t = threading.Thread(target=produce)
        t.start()
        time.sleep(0.3)
        assert not done.is_set()  # blocked on the full queue
        assert store.stats()["tracked"] <= 50 + 10
    t.join(60)
    assert done.is_set()
    store.flush(timeout=30)
    assert store.count() == total
    assert store.stats()["dropped"] == 0


def test_track_is_thread_safe(open_store):
    store = open_store(batch_size=64)
    n_threads, per = 8, 300
    errors = []

    def work(k):
        try:
            for j in range(per):
                store.track(f"u{k}", f"i{j % 13}", "click", value=float(j), event_id=f"t{k}-{j}")
                if j % 100 == 99:
                    store.flush()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    store.flush()
    st = store.stats()
    assert (st["tracked"], st["written"], st["pending"]) == (n_threads * per,) * 2 + (0,)
    ids = stored_ids(store)
    assert len(ids) == n_threads * per and set(ids) == {f"t{k}-{j}" for k in range(n_threads) for j in range(per)}


# ---------------------------------------------------------------------------------- failures
def test_a_writer_failure_surfaces_on_flush_with_the_count_and_recovers(target, open_store):
    store = open_store(busy_timeout=2.0)
    store.track("u", "i", "view")
    store.flush()
    target.sql(f"DROP TABLE {target.table}")
    for j in range(5):
        store.track("u", f"i{j}", "view", event_id=f"late-{j}")
    with pytest.raises(ps.StoreError, match=r"5 event\(s\) are not written"):
        store.flush(timeout=30)
    assert store.stats()["errors"] >= 1 and store.stats()["pending"] == 5
    target.open().close()  # re-creates the table; the queued events are retried
    deadline = time.monotonic() + 30
    while True:
        try:
            store.flush(timeout=30)
            break
        except ps.StoreError:
            assert time.monotonic() < deadline, "the writer did not recover"
            time.sleep(0.1)
    assert sorted(stored_ids(store)) == [f"late-{j}" for j in range(5)]


def test_close_reports_events_it_could_not_write(target, open_store):
    store = open_store(busy_timeout=2.0)
    store.track("u", "i", "view")
    store.flush()
    target.sql(f"DROP TABLE {target.table}")
    for j in range(3):
        store.track("u", f"i{j}", "view")
    with pytest.raises(ps.StoreError, match=r"close: 3 event\(s\) could not be written"):
        store.close(timeout=2)  # it retries that long, then gives up on them
    assert store.closed
    with pytest.raises(ps.StoreError, match="closed"):
        store.track("u", "i", "view")
    store.close()  # idempotent


# ---------------------------------------------------------------------------------- reading back
def test_interactions_since_and_until(open_store):
    store = open_store()
    events = ["view", "click", "cart", "purchase", "view"] * 2
    for j, ev in enumerate(events):
        store.track(f"u{j % 3}", 100 + j % 4, ev, timestamp=T0 + 60 * j)
    store.track("u0", 100, "impression", timestamp=T0, properties={"campaign": "spring"})
    store.flush()
    everything = store.interactions()
    assert len(everything) == 10  # the impression has no weight, so it stays out by default
    assert everything.item_ids.dtype == np.int64 and set(everything.item_ids) == {100, 101, 102, 103}
    since = store.interactions(since=T0 + 60 * 5)
    assert len(since) == 5 and since.timestamps.min() == T0 + 300
    # the same bound as a datetime and as an ISO string; until is exclusive
    when = dt.datetime.fromtimestamp(T0 + 300, dt.timezone.utc)
    assert len(store.interactions(since=when)) == 5
    assert len(store.interactions(since=when.isoformat(), until=T0 + 60 * 8)) == 3
    naive = when.replace(tzinfo=None)  # naive means UTC
    assert len(store.interactions(since=naive)) == 5
    with pytest.raises(ps.DataError, match="no stored events match"):
        store.interactions(since=T0 + 10_000)
    marketing = store.interactions(event_types=["impression"], weights={"impression": 0.1})
    assert len(marketing) == 1 and marketing.matrix.sum() == pytest.approx(0.1)
    assert store.count(since=T0 + 300) == 5 and store.count(event_types=["impression"]) == 1


def test_marketing_feedback_keeps_its_properties(open_store):
    store = open_store()
    props = {"campaign": "spring-sale", "channel": "email", "propensity": 0.25, "position": 2}
    for ev in ("send", "open", "click", "conversion"):
        store.track(42, "coupon-10", ev, value=19.9 if ev == "conversion" else None, properties=props)
    store.flush()
    df = store.events()
    assert df["event"].tolist() == ["send", "open", "click", "conversion"]
    assert df["properties"].tolist() == [props] * 4
    assert df["user"].tolist() == [42] * 4  # integer ids come back as integers
    assert np.isnan(df["value"].iloc[0]) and df["value"].iloc[3] == pytest.approx(19.9)
    inter = store.interactions(event_types=["conversion"], weights={"conversion": 10.0}, values=True)
    assert inter.values.tolist() == [pytest.approx(19.9)]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".csv.gz"])
def test_export_round_trips(open_store, tmp_path, suffix):
    store = open_store()
    rng = np.random.default_rng(0)
    for j in range(53):
        store.track(f"user-{rng.integers(8)}", int(rng.integers(20)), str(rng.choice(["view", "cart", "purchase"])),
                    timestamp=T0 + j * 3.25, value=float(j), properties={"j": j} if j % 2 else None)
    store.flush()
    path = tmp_path / f"events{suffix}"
    assert store.export(path, chunk_size=7) == 53  # several chunks
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    read = ps.Interactions.from_parquet if suffix == ".parquet" else ps.Interactions.from_csv
    back = read(path, user="user", item="item", time="time", event="event")
    mine = store.interactions()
    assert back.user_ids.tolist() == mine.user_ids.tolist() and back.item_ids.tolist() == mine.item_ids.tolist()
    assert (back.matrix != mine.matrix).nnz == 0
    np.testing.assert_allclose(back.timestamps, mine.timestamps, rtol=0, atol=1e-6)
    import pandas as pd

    df = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    assert df["event_id"].tolist() == store.events()["event_id"].tolist()
    assert [json.loads(p) if isinstance(p, str) else None for p in df["properties"]] == \
        [{"j": j} if j % 2 else None for j in range(53)]
    assert df["value"].tolist() == [float(j) for j in range(53)]


def test_export_of_an_empty_selection_writes_a_header_only_file(open_store, tmp_path):
    store = open_store()
    assert store.export(tmp_path / "none.csv") == 0
    assert (tmp_path / "none.csv").read_text().strip() == "event_id,time,user,item,event,value,properties"


# ---------------------------------------------------------------------------------- privacy
def test_forget_user_deletes_their_events_including_queued_ones(open_store):
    store = open_store()
    for j in range(4):
        store.track("ann", f"i{j}", "view")
        store.track("bob", f"i{j}", "view")
    store.flush()
    store.track("ann", "late", "purchase")  # still queued when forget_user is called
    assert store.forget_user("ann") == 5
    assert store.count(user="ann") == 0 and store.count() == 4
    assert store.forget_user("ann") == 0
    assert set(store.events()["user"]) == {"bob"}


def test_pseudonymized_ids_never_reach_the_database(target, open_store):
    key = b"0123456789abcdef0123456789abcdef"
    raw = "alice.raw.id@example.com"
    store = open_store(pseudonymize_key=key)
    for j in range(3):
        store.track(raw, f"i{j}", "view", properties={"campaign": "c1"})
    store.track("bob.raw.id@example.com", "i0", "cart")
    store.flush()
    alias = store.pseudonym(raw)
    assert len(alias) == 64 and raw not in alias and store.pseudonym(raw) == alias
    assert store.count(user=raw) == 3
    assert set(store.events(user=raw)["user"]) == {alias}
    inter = store.interactions()
    assert alias in inter.user_ids.tolist() and raw not in inter.user_ids.tolist()
    # the raw ids appear nowhere in what the database holds
    if target.backend == "sqlite":
        store.close()
        blob = b"".join(open(p, "rb").read() for p in (target.target, target.target + "-wal")
                        if os.path.exists(p))
        assert alias.encode() in blob
        assert b"alice.raw.id" not in blob and b"bob.raw.id" not in blob
        store = open_store(pseudonymize_key=key)
    else:
        for table in (target.table, target.table + "_meta"):
            hits = target.sql(f"SELECT count(*) FROM {table} t WHERE t::text LIKE ?", ("%raw.id%",))
            assert hits == [(0,)]
        assert target.sql(f"SELECT count(*) FROM {target.table} WHERE user_id = ?", (alias,)) == [(3,)]
    assert store.forget_user(raw) == 3
    assert store.count() == 1
    # a store is always opened with the key it was created with
    with pytest.raises(ps.ParameterError, match="pseudonymize_key"):
        target.open()
    with pytest.raises(ps.ParameterError, match="different pseudonymize_key"):
        target.open(pseudonymize_key=b"another key, 16 bytes or more")


# ---------------------------------------------------------------------------------- bad input
BAD_TRACK = [
    (dict(user=None), ps.DataError, "user expected a string or integer id"),
    (dict(user=1.5), ps.DataError, "user expected a string or integer id, got float"),
    (dict(user=""), ps.DataError, "user is an empty string"),
    (dict(user=True), ps.DataError, "user expected a string or integer id, got bool"),
    (dict(item=2**70), ps.DataError, "does not fit in 64 bits"),
    (dict(item=["a"]), ps.DataError, "item expected a string or integer id"),
    (dict(event=""), ps.DataError, "event expected a non-empty string"),
    (dict(event=3), ps.DataError, "event expected a non-empty string"),
    (dict(timestamp="yesterday"), ps.DataError, "cannot parse 'yesterday'"),
    (dict(timestamp=float("nan")), ps.DataError, "finite time"),
    (dict(timestamp=True), ps.DataError, "got a bool"),
    (dict(timestamp=1e13), ps.DataError, "between years 1 and 9999"),
    (dict(timestamp=np.datetime64("NaT")), ps.DataError, "expected a valid datetime"),
    (dict(value="12"), ps.DataError, "value: expected a finite number"),
    (dict(value=float("inf")), ps.DataError, "value: expected a finite number"),
    (dict(properties=[1, 2]), ps.DataError, "properties expected a dict"),
    (dict(properties={"when": dt.datetime(2024, 1, 1)}), ps.DataError, "JSON-serialisable"),
    (dict(properties={"p": float("nan")}), ps.DataError, "finite numbers"),
    (dict(properties={"x": "a\x00b"}), ps.DataError, "NUL"),
    (dict(user="a\udcffb"), ps.DataError, "not valid Unicode"),
    (dict(event_id=""), ps.DataError, "event_id expected a non-empty string"),
    (dict(event_id=12), ps.DataError, "event_id expected a non-empty string"),
]


@pytest.mark.parametrize("bad, exc, message", BAD_TRACK, ids=[str(b) for b, _, _ in BAD_TRACK])
def test_bad_events_are_refused_with_a_clear_message(open_store, bad, exc, message):
    store = open_store()
    with pytest.raises(exc, match=_re(message)):
        store.track(**{"user": "u", "item": "i", "event": "view", **bad})
    assert store.stats()["tracked"] == 0


BAD_OPEN = [
    (dict(on_full="wait"), "on_full: expected 'block' or 'drop'"),
    (dict(max_queue=0), "max_queue: expected a positive integer"),
    (dict(batch_size=2.5), "batch_size: expected a positive integer"),
    (dict(synchronous="off"), "synchronous: expected 'full'"),
    (dict(busy_timeout=-1), "busy_timeout: expected seconds"),
    (dict(pseudonymize_key="secret"), "pseudonymize_key: expected bytes"),
    (dict(pseudonymize_key=b"short"), "at least 16 bytes"),
    (dict(table="events; DROP TABLE x"), "table: expected an SQL identifier"),
    (dict(table="t" * 47), "at most 46 characters"),
]


@pytest.mark.parametrize("kw, message", BAD_OPEN, ids=[str(k) for k, _ in BAD_OPEN])
def test_bad_options_are_refused(target, kw, message):
    kw = {"table": target.table, **kw}
    with pytest.raises(ps.ParameterError, match=_re(message)):
        EventStore(target.target, **kw)


def test_pandas_nat_is_refused(open_store):
    import pandas as pd

    with pytest.raises(ps.DataError, match="expected a valid datetime"):
        open_store().track("u", "i", "view", timestamp=pd.NaT)


def test_bad_reads_are_refused(open_store, tmp_path):
    store = open_store()
    store.track("u", "i", "view")
    store.flush()
    with pytest.raises(ps.DataError, match="since"):
        store.interactions(since="not a time")
    with pytest.raises(ps.ParameterError, match="end the name in .parquet, .csv"):
        store.export(tmp_path / "events.xlsx")
    with pytest.raises(ps.ParameterError, match="event_types"):
        store.count(event_types=[None])
    with pytest.raises(ps.ParameterError, match="timeout"):
        store.flush(timeout=-1)


def test_bad_targets_are_refused(tmp_path):
    with pytest.raises(ps.ParameterError, match="expected a file path"):
        EventStore(":memory:")
    with pytest.raises(ps.ParameterError, match="postgresql://"):
        EventStore(12)
    with pytest.raises(ps.StoreError, match="cannot open the SQLite event store"):
        EventStore(tmp_path / "missing-dir" / "events.db")


def test_import_persona_does_not_import_the_store():
    code = "import sys, persona; print('persona.store' in sys.modules, 'sqlite3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def _re(text: str) -> str:
    import re

    return re.escape(text)


# ------------------------------------------------------------ nothing dropped silently (issue 12, point 3)
def test_interactions_name_and_count_event_types_without_a_weight(open_store):
    store = open_store()
    events = [("ann", "i1", "view"), ("ann", "i2", "add_to_cart"), ("bob", "i2", "add_to_cart"),
              ("bob", "i1", "purchase"), ("cem", "i3", "wishlist"), ("cem", "i1", "view")]
    for k, (u, i, e) in enumerate(events):
        store.track(u, i, e, timestamp=T0 + k)
    store.flush()
    assert store.event_counts() == {"add_to_cart": 2, "view": 2, "purchase": 1, "wishlist": 1}
    assert store.event_counts(event_types=["view", "wishlist"]) == {"view": 2, "wishlist": 1}
    with pytest.warns(UserWarning, match=r"left out 3 events .*'add_to_cart' 2, 'wishlist' 1"):
        inter = store.interactions()
    report = inter.report
    assert report.n_input == 6 and report.n_kept == 3
    assert report.dropped == {"event type without a weight": 3}
    assert "'add_to_cart' 2" in report.notes[0] and "none dropped" not in str(report)
    # weighted, they are trained on; the rest is still named
    with pytest.warns(UserWarning, match=r"'wishlist' 1"):
        inter = store.interactions(weights={"add_to_cart": 4})
    assert inter.report.n_kept == 5 and inter.report.dropped == {"event type without a weight": 1}
    # choosing the types deliberately, or weighting every type, reads without a warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert str(store.interactions(event_types=["view", "purchase"]).report).endswith("none dropped")
        assert store.interactions(default_weight=1.0).report.n_kept == 6
    store.forget_user("bob")
    assert store.event_counts() == {"view": 2, "add_to_cart": 1, "wishlist": 1}


# ------------------------------------------------------------ bulk import of historical events (issue 12, point 14)
def _orders(n=500, seed=0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "customer": [f"c{u}" for u in rng.integers(0, 50, n)],
        "sku": rng.integers(1, 80, n),
        "at": pd.to_datetime(T0 + np.arange(n) * 60.0, unit="s"),
        "kind": rng.choice(["view", "purchase", "add_to_cart"], n),
        "price": rng.uniform(1, 50, n).round(2),
    })


def test_import_frame_writes_every_row_once_even_through_a_small_queue(open_store):
    store = open_store(max_queue=16, batch_size=8)  # far smaller than the import: it must wait, not drop
    df = _orders()
    report = store.import_frame(df, user="customer", item="sku", time="at", event="kind", value="price")
    assert (report.n_input, report.n_kept, report.n_dropped) == (500, 500, 0)
    stats = store.stats()
    assert stats["dropped"] == 0 and store.count() == 500
    back = store.events().sort_values("time").reset_index(drop=True)
    assert back["user"].tolist() == df["customer"].tolist() and back["item"].tolist() == df["sku"].tolist()
    np.testing.assert_allclose(back["value"].to_numpy(), df["price"].to_numpy())
    seconds = (back["time"] - back["time"].iloc[0]).dt.total_seconds().to_numpy() + back["time"].iloc[0].timestamp()
    np.testing.assert_allclose(seconds, T0 + np.arange(500) * 60.0)
    # importing the same export again stores nothing twice
    store.import_frame(df, user="customer", item="sku", time="at", event="kind", value="price")
    assert store.count() == 500
    inter = store.interactions(weights={"add_to_cart": 4})
    assert inter.report.n_kept == 500


def test_import_frame_strict_names_the_row_lenient_counts_it(open_store):
    store = open_store()
    df = _orders(20)
    df.loc[7, "at"] = pd_timestamp("1900-01-01")
    df.loc[11, "customer"] = "x" * 300
    with pytest.raises(ps.DataError, match=r"row 7 \(0-based position\).*1970"):
        store.import_frame(df, user="customer", item="sku", time="at", event="kind")
    assert store.count() == 0  # nothing imported
    with pytest.warns(UserWarning, match="import_frame: 18 of 20"):
        report = store.import_frame(df, user="customer", item="sku", time="at", event="kind", strict=False)
    assert report.n_kept == 18 and report.n_dropped == 2 and store.count() == 18
    with pytest.raises(ps.DataError, match="no column 'when'"):
        store.import_frame(df, user="customer", item="sku", time="when", event="kind")
    with pytest.raises(ps.DataError, match="pandas DataFrame"):
        store.import_frame([{"user": 1}])


def test_import_frame_reads_polars_and_arrow_tables(open_store):
    """Issue 12 point 10: an export read with polars or pyarrow imports as its pandas twin."""
    import pyarrow as pa

    pl = pytest.importorskip("polars")  # in the test extra
    df = _orders(40)
    store = open_store()
    report = store.import_frame(pl.from_pandas(df), user="customer", item="sku", time="at", event="kind",
                                value="price")
    assert report.n_kept == 40 and store.count() == 40
    # the same rows again, as a pyarrow table: the same content hashes, so nothing is stored twice
    store.import_frame(pa.Table.from_pandas(df, preserve_index=False), user="customer", item="sku", time="at",
                       event="kind", value="price")
    assert store.count() == 40
    back = store.events().sort_values("time").reset_index(drop=True)
    assert back["user"].tolist() == df["customer"].tolist() and back["item"].tolist() == df["sku"].tolist()


def test_import_frame_skips_forgotten_users(open_store):
    store = open_store()
    df = _orders(100)
    store.forget_user("c3")
    report = store.import_frame(df, user="customer", item="sku", time="at", event="kind")
    n3 = int((df["customer"] == "c3").sum())
    assert n3 and report.dropped == {"forgotten user": n3} and store.count() == 100 - n3


def pd_timestamp(text):
    import pandas as pd

    return pd.Timestamp(text)


def test_track_many_tracks_each_dict_and_names_the_bad_one(open_store):
    """``track_many`` (documented in docs/store.md): one ``track`` per dict, ids in order."""
    store = open_store()
    ids = store.track_many([{"user": "ann", "item": "i1", "event": "view", "timestamp": T0},
                            {"user": "bob", "item": "i2", "event": "purchase", "timestamp": T0 + 1, "value": 9.5,
                             "event_id": "order-1"}])
    assert len(ids) == 2 and ids[1] == "order-1"
    store.flush()
    back = store.events()
    assert back["user"].tolist() == ["ann", "bob"] and back["value"].tolist()[1] == 9.5
    with pytest.raises(ps.DataError, match="timestamp"):
        store.track_many([{"user": "cem", "item": "i3", "event": "view", "timestamp": -2.5e11}])


def test_pseudonymisation_is_public(tmp_path):
    """Issue 13 (6): the service asks ``store.pseudonymizes`` instead of reading a private key."""
    plain = EventStore(tmp_path / "a.db")
    private = EventStore(tmp_path / "b.db", pseudonymize_key=b"k" * 32)
    try:
        assert plain.pseudonymizes is False and plain.pseudonym("ann") == "ann"
        assert private.pseudonymizes is True and private.pseudonym("ann") != "ann"
        assert private.pseudonym(7) == private.pseudonym("7")
    finally:
        plain.close()
        private.close()


# ------------------------------------------------------------------ reading fast, reading the same
def _mixed_store(target, open_store, n=600):
    """Events of every shape: int and text ids, repeated and distinct properties, nesting, lists,
    None, plus rows written behind persona's back (properties that are not one JSON value, padded
    JSON, a number, a time that is not a time)."""
    from store_reference import old_events  # noqa: F401 - checked importable before the store is built

    store = open_store()
    channels = [{"channel": c, "device": d} for c in ("web", "app", "email") for d in ("m", "d")]
    for k in range(n):
        props = (None if k % 7 == 0 else channels[k % len(channels)] if k % 3 else
                 {"request_id": f"r{k}", "position": k % 10, "tags": ["a", k], "nested": {"x": k / 3}})
        store.track(k % 17 if k % 2 else f"u{k % 17}", k % 23, ["view", "cart", "purchase"][k % 3],
                    timestamp=T0 + k, value=None if k % 4 else k * 1.5, properties=props, event_id=f"e{k}")
    store.flush(timeout=30)
    odd = [("x1", T0 + 1.5, "u1", "5", "view", None, '{"a": 1} ', 0),
           ("x3", T0 + 3.5, "u3", "5", "view", None, '  {"b": [1, 2]}', 0)]
    if target.backend == "sqlite":  # a TEXT column holds anything; PostgreSQL's jsonb only JSON
        odd += [("x2", T0 + 2.5, "u2", "5", "view", None, "not json", 0),
                ("x4", T0 + 4.5, "u4", "5", "view", None, '{"a":1},{"b":2}', 0),
                ("x5", T0 + 5.5, "u5", "5", "view", "NaN?", "17", 0)]
        target.sql(f"INSERT INTO {target.table} (event_id, ts, user_id, item_id, event, value, properties, kinds)"
                   f" VALUES ('x6', 'yesterday', 'u6', '5', 'view', NULL, NULL, 0)")
    ts_sql = "?" if target.backend == "sqlite" else "to_timestamp(?)"
    for row in odd:
        target.sql(f"INSERT INTO {target.table} (event_id, ts, user_id, item_id, event, value, properties, kinds)"
                   f" VALUES (?, {ts_sql}, ?, ?, ?, ?, ?, ?)", row)
    return store


@pytest.mark.parametrize("chunk", [100_000, 7])
def test_events_reads_exactly_what_the_old_path_read(target, open_store, monkeypatch, chunk, caplog):
    from store_reference import old_events

    import persona.store._readers as readers

    store = _mixed_store(target, open_store)
    monkeypatch.setattr(readers, "CHUNK_ROWS", chunk)
    for kw in ({}, {"event_types": ["cart", "purchase"]}, {"user": 3}, {"user": "u4"},
               {"since": T0 + 100, "until": T0 + 400}, {"since": T0 + 10_000}):
        import pandas as pd

        new, old = store.events(**kw), old_events(store, **kw)
        pd.testing.assert_frame_equal(new, old)
        lean = store.events(properties=False, **kw)
        pd.testing.assert_frame_equal(lean, old.drop(columns="properties"))
    got = store.events()
    if target.backend == "sqlite":
        assert got.loc[got["event_id"] == "x2", "properties"].item() == "not json"
    assert got.loc[got["event_id"] == "x1", "properties"].item() == {"a": 1}
    assert got.loc[got["event_id"] == "e5", "properties"].item() == {"channel": "email", "device": "d"}


def test_events_gives_every_row_its_own_properties_dict(open_store, monkeypatch):
    import persona.store._readers as readers

    monkeypatch.setattr(readers, "CHUNK_ROWS", 50)
    store = open_store()
    for k in range(120):
        store.track("u", "i", "view", timestamp=T0 + k, properties={"campaign": "spring", "tags": ["x"]}
                    if k % 2 else {"campaign": "spring"})
    store.flush(timeout=30)
    props = store.events()["properties"].tolist()
    flat = [p for p in props if "tags" not in p]
    props[0]["campaign"] = "changed"
    props[1]["tags"].append("y")
    assert len(flat) == 60 and len({id(p) for p in props}) == 120
    again = store.events()["properties"].tolist()
    assert all(p["campaign"] == "spring" for p in again) and all(p.get("tags", ["x"]) == ["x"] for p in again)
    assert sum(p["campaign"] == "changed" for p in props) == 1 and sum(p.get("tags") == ["x", "y"] for p in props) == 1


def test_parse_properties_equals_json_loads_on_hostile_texts():
    import json as json_

    from persona.store._readers import parse_properties

    texts = ['{"a":1}'] * 5000 + [None, "", " ", "null", "[1,2]", '"s"', "1e400", "NaN", '{"a":NaN}', "{}",
                                  '{"a":1} x', '{"a":{"b":1}}', '{"a":{"b":1}}', "\ud800", b'{"b": 2}', 17, 2.5,
                                  "[" * 100_000 + "]" * 100_000, '{"k":"' + "é" * 1000 + '"}']
    texts += [json_.dumps({"r": k}) for k in range(5000)]

    def reference(t):
        if t is None:
            return None
        try:
            return json_.loads(t)
        except (TypeError, ValueError, RecursionError):
            return t

    got = parse_properties(texts)
    want = [reference(t) for t in texts]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g == w or (g != g and w != w) or repr(g) == repr(w)


def test_events_properties_must_be_a_bool(open_store):
    store = open_store()
    for bad in ("yes", 1, None):
        with pytest.raises(ps.ParameterError, match="properties expected True"):
            store.events(properties=bad)


@pytest.mark.parametrize("chunk", [100_000, 7])
def test_an_integer_id_that_is_not_one_reads_every_id_as_text_as_before(target, open_store, monkeypatch, chunk, caplog):
    from store_reference import old_events

    import pandas as pd

    import persona.store._readers as readers

    monkeypatch.setattr(readers, "CHUNK_ROWS", chunk)
    store = open_store()
    for k in range(30):
        store.track(k % 5, 100 + k % 3, "view", timestamp=T0 + k, event_id=f"e{k}")
    store.flush(timeout=30)
    ts_sql = "?" if target.backend == "sqlite" else "to_timestamp(?)"
    target.sql(f"INSERT INTO {target.table} (event_id, ts, user_id, item_id, event, value, properties, kinds)"
               f" VALUES ('odd', {ts_sql}, 'not-a-number', '101', 'view', NULL, NULL, 3)", (T0 + 99,))
    with caplog.at_level(logging.WARNING, logger="persona.store"):
        new = store.events()
    pd.testing.assert_frame_equal(new, old_events(store))
    assert new["user"].tolist()[-1] == "not-a-number" and new["user"].tolist()[0] == "0"
    assert new["item"].tolist()[0] == 100  # the item ids are all integers: still read as such
    assert any("reading user ids as text" in r.getMessage() for r in caplog.records)


def test_the_longest_table_name_keeps_every_derived_name_apart(target):
    """46 characters: on PostgreSQL (63-character identifiers) every derived table and index exists."""
    table = (target.table + "_" + "x" * 46)[:46]
    with EventStore(target.target, table=table) as s:
        s.track("u1", "i1", "view")
        s.set_consent("u1", "analytics", False)
        s.flush()
        assert len(s.events()) == 1 and s.has_consent("u1", "analytics") is False
    if target.backend == "postgres":
        names = {r[0] for r in target.sql("SELECT tablename FROM pg_tables WHERE tablename LIKE ?", (table + "%",))}
        names |= {r[0] for r in target.sql("SELECT indexname FROM pg_indexes WHERE tablename LIKE ?", (table + "%",))}
        for suffix in ("", "_meta", "_forgotten", "_dead", "_impressions", "_consent", "_consent_log", "_ts", "_user",
                       "_impressions_ts", "_impressions_user", "_consent_purpose", "_consent_log_user"):
            assert table + suffix in names, suffix
