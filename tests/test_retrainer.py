"""persona.pipeline.Retrainer against a real EventStore (SQLite): track -> update -> publish -> a worker answers anew."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import persona as ps
from persona.pipeline import Retrainer
from persona.serving import RecommenderService

T0 = 1.7e9


def _seed(store, n_users: int = 40, n_items: int = 25, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    k = 0
    for u in range(n_users):
        for i in rng.choice(n_items, size=int(rng.integers(2, 8)), replace=False):
            store.track(f"u{u:02d}", f"i{i:02d}", "view", timestamp=T0 + k, event_id=f"seed-{k}")
            k += 1
    store.flush()


@pytest.fixture
def store(tmp_path):
    s = ps.EventStore(tmp_path / "events.db")
    _seed(s)
    yield s
    s.close()


def _wait(pred, timeout: float = 10.0, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def test_end_to_end_a_watching_worker_serves_the_new_events(store, tmp_path):
    path = tmp_path / "model.persona"
    r = Retrainer(store, ps.ItemKNN(k=10), path)
    first = r.run_once()
    assert first["action"] == "retrain" and first["error"] is None and first["version"] == 1
    worker = RecommenderService.from_artifact(path, watch=0.05)
    try:
        before = worker.recommend("u03", n=5)
        top = before.items[0]
        store.track("u03", top, "purchase", timestamp=T0 + 10_000)
        store.track("zz-new", "i01", "view", timestamp=T0 + 10_001)
        store.flush()
        report = r.run_once()
        assert report["action"] == "update" and report["events"] == 2 and report["version"] == 2
        assert _wait(lambda: worker.model_version > 1)
        after = worker.recommend("u03", n=5)
        assert top not in after.items.tolist()  # bought: now filtered as seen
        assert worker.recommend("zz-new", n=3).source == "model"  # a new user, known at once
    finally:
        worker.close()
    assert r.run_once()["action"] == "none"  # nothing new: nothing published
    assert r.status()["version"] == 2


def test_each_event_counts_once_even_when_written_late(store, tmp_path):
    """A late event (older timestamp, written after newer ones) is folded in once, as a refit counts it."""
    r = Retrainer(store, ps.MostPopular(measure="events"), tmp_path / "m", lateness=600.0)
    r.run_once()
    store.track("u01", "i02", "view", timestamp=T0 + 5000)
    store.flush()
    r.run_once()
    store.track("u02", "i03", "view", timestamp=T0 + 4900)  # written after, 100 s older: within lateness
    store.track("u02", "i03", "click", timestamp=T0 + 5001)
    store.flush()
    assert r.pending() == 2
    r.run_once()
    assert r.run_once()["action"] == "none"
    ref = ps.MostPopular(measure="events").fit(store.interactions())
    got = r.model
    assert np.array_equal(got.popularity_[got.item_map_.lookup(ref.item_map_.ids)], ref.popularity_)
    assert r.status()["events"] == store.count()


def test_since_continues_a_fitted_model(store, tmp_path):
    model = ps.MostPopular(measure="events").fit(store.interactions())
    store.track("u05", "i05", "view", timestamp=T0 + 9000)
    store.flush()
    r = Retrainer(store, model, tmp_path / "m", since=T0 + 8000, retrain_every=None)
    report = r.run_once()
    assert report["action"] == "update" and report["events"] == 1
    assert r.model.popularity_[r.model.item_map_.index_of("i05")] == model.popularity_[model.item_map_.index_of("i05")] + 1


def test_in_process_service_is_swapped(store):
    service = RecommenderService(ps.MostPopular().fit(store.interactions()))
    r = Retrainer(store, ps.ItemKNN(k=10), service=service)
    r.run_once()
    assert isinstance(service.model, ps.ItemKNN) and service.model_version == 2
    store.track("brand-new", "i04", "view", timestamp=T0 + 20_000)
    store.flush()
    r.run_once()
    assert service.recommend("brand-new", n=3).source == "model"


def test_a_failing_update_keeps_the_last_good_model_and_recovers(store, tmp_path, monkeypatch, caplog):
    path = tmp_path / "m"
    r = Retrainer(store, ps.ItemKNN(k=10), path, retrain_after_failures=2)
    r.run_once()
    good, stamp = r.model, (path / "manifest.json").stat().st_mtime_ns

    def boom(self, batch):
        raise RuntimeError("no space left on device")

    monkeypatch.setattr(ps.ItemKNN, "_update", boom)
    store.track("u01", "i09", "view", timestamp=T0 + 30_000)
    store.flush()
    with caplog.at_level("ERROR", logger="persona.pipeline"):
        report = r.run_once()
    assert report["error"] and "no space left" in report["error"]
    assert "no space left" in caplog.text
    assert r.model is good and (path / "manifest.json").stat().st_mtime_ns == stamp
    assert r.status()["failures_in_a_row"] == 1
    assert r.run_once()["error"]  # the event is retried, not lost
    # after retrain_after_failures failures the next cycle refits on everything, which includes it
    report = r.run_once()
    assert report["action"] == "retrain" and report["error"] is None
    assert ps.load(path).user_items_[ps.load(path).user_map_.index_of("u01"),
                                      ps.load(path).item_map_.index_of("i09")] > 0
    monkeypatch.undo()
    assert r.status()["failures_in_a_row"] == 0


def test_an_integer_id_among_string_ids(store, tmp_path):
    """A shop tracking an integer id among string ones: the store reads them all as strings."""
    r = Retrainer(store, ps.ItemKNN(k=10), tmp_path / "m")
    r.run_once()
    store.track(12345, "i01", "view", timestamp=T0 + 40_000)
    store.flush()
    report = r.run_once()
    assert report["error"] is None and "12345" in r.model.user_map_.ids.tolist()


def test_publishing_never_shows_a_mixed_artifact(store, tmp_path):
    """Readers of the path under a burst of publishes load a published version or get a load error
    (checksums catch a read that straddles two publishes); a watching worker ends on the last one."""
    path = tmp_path / "m"
    r = Retrainer(store, ps.ItemKNN(k=10), path)
    r.run_once()
    worker = RecommenderService.from_artifact(path, watch=0.01)
    published, loaded, errors, stop = {r.model.n_users}, [], [], threading.Event()

    def read():
        while not stop.is_set():
            try:
                m = ps.load(path, mmap=True)
                m.recommend("u01", n=3)
                loaded.append(m.n_users)
            # ps.load reads file by file from the path: a read overlapping two renames sees a file of the
            # next version (checksum mismatch) or a vanished one (FileNotFoundError escapes io.read_artifact)
            except (ps.ArtifactError, FileNotFoundError):
                pass
            except Exception as e:  # noqa: BLE001
                errors.append(f"{type(e).__name__}: {e}")

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for k in range(15):
            store.track(f"new{k:02d}", f"i{k % 11:02d}", "view", timestamp=T0 + 50_000 + k)
            store.flush()
            assert r.run_once(retrain=k % 5 == 0)["error"] is None
            published.add(r.model.n_users)
    finally:
        stop.set()
        for t in readers:
            t.join()
    try:
        assert not errors, errors[:3]
        assert loaded and set(loaded) <= published
        assert _wait(lambda: worker.model.n_users == r.model.n_users)
        assert worker.recommend("new14", n=2).source == "model"
    finally:
        worker.close()


def test_background_thread(store, tmp_path):
    path = tmp_path / "m"
    with Retrainer(store, ps.ItemKNN(k=10), path, update_every=0.05) as r:
        assert _wait(lambda: r.status()["version"] >= 1)
        assert r.running
        store.track("u07", "i08", "cart", timestamp=T0 + 60_000)
        store.flush()
        assert _wait(lambda: r.status()["updates"] >= 1)
    assert not r.running
    m = ps.load(path)
    assert m.user_items_[m.user_map_.index_of("u07"), m.item_map_.index_of("i08")] > 0


def test_update_events_triggers_an_early_update(store, tmp_path):
    with Retrainer(store, ps.MostPopular(), tmp_path / "m", update_every=3600.0, update_events=3,
                   poll_interval=0.02) as r:
        assert _wait(lambda: r.status()["version"] >= 1)
        for k in range(3):
            store.track("u01", f"i1{k}", "view", timestamp=T0 + 70_000 + k)
        store.flush()
        assert _wait(lambda: r.status()["updates"] >= 1)


def test_worker_process_picks_up_the_publish(store, tmp_path):
    """A separate worker process watching the path serves the user the Retrainer just learnt about."""
    path = tmp_path / "m"
    r = Retrainer(store, ps.ItemKNN(k=10), path)
    r.run_once()
    code = textwrap.dedent(f"""
        import sys, time
        import persona as ps
        from persona.serving import RecommenderService
        s = RecommenderService.from_artifact({str(path)!r}, watch=0.05)
        print("ready", flush=True)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if s.recommend("late-comer", n=2).source == "model":
                print("served", s.model_version, flush=True)
                sys.exit(0)
            time.sleep(0.02)
        sys.exit(1)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        store.track("late-comer", "i03", "view", timestamp=T0 + 80_000)
        store.flush()
        assert r.run_once()["action"] == "update"
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.split()[0] == "served"


def test_bad_arguments(store, tmp_path):
    with pytest.raises(ps.ParameterError, match="EventStore"):
        Retrainer("events.db", ps.ALS(), tmp_path / "m")
    with pytest.raises(ps.ParameterError, match="Recommender"):
        Retrainer(store, "als", tmp_path / "m")
    with pytest.raises(ps.ParameterError, match="publish"):
        Retrainer(store, ps.ALS())
    with pytest.raises(ps.ParameterError, match="update_every"):
        Retrainer(store, ps.ALS(), tmp_path / "m", update_every=0)
    with pytest.raises(ps.ParameterError, match="since"):
        Retrainer(store, ps.ALS(), tmp_path / "m", since=T0)
    with pytest.raises(ps.ParameterError, match="aggregate"):
        Retrainer(store, ps.ALS(), tmp_path / "m", aggregate="mean")
    with pytest.raises(ps.ParameterError, match="event_types"):
        Retrainer(store, ps.ALS(), tmp_path / "m", event_types=[""])
    with pytest.raises(ps.ParameterError, match="fit_options"):
        Retrainer(store, ps.ALS(), tmp_path / "m", fit_options=["x"])


def test_an_empty_store_is_a_failed_cycle_not_a_crash(tmp_path):
    with ps.EventStore(tmp_path / "empty.db") as empty:
        r = Retrainer(empty, ps.ItemKNN(), tmp_path / "m")
        report = r.run_once()
        assert report["action"] == "retrain" and "no stored events" in report["error"]
        assert not (tmp_path / "m").exists()
