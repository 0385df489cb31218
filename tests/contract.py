"""The contract every Recommender honours (API.md), as a mixin each model's test class runs.

A test module subclasses :class:`RecommenderContract` and implements ``make_model()`` (an unfitted
model); the mixin fits it on a small seeded shop and checks the public behaviour.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import persona as ps
from persona.models.base import PAD_SCORE


def contract_data(seed: int = 0, n_users: int = 60, n_items: int = 40):
    """Small seeded interactions with string ids, a few heavy users and a few untouched items."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        k = int(rng.integers(2, 12 if u % 10 else 30))
        pop = 1.0 / np.arange(1, n_items - 3) ** 0.8  # the last 4 items stay unseen
        chosen = rng.choice(n_items - 4, size=min(k, n_items - 4), replace=False, p=pop / pop.sum())
        users += [f"u{u:03d}"] * len(chosen)
        items += [f"i{i:03d}" for i in chosen]
    ts = np.arange(len(users), dtype=np.float64) * 60.0 + 1.7e9
    records = [{"user": u, "item": i, "time": t} for u, i, t in zip(users, items, ts)]
    inter = ps.Interactions.from_records(records, user="user", item="item", time="time")
    # make the catalogue include the unseen items, as a shop's catalogue would
    all_items = ps.IdMap([f"i{i:03d}" for i in range(n_items)])
    return inter.with_maps(inter.user_map, all_items)


class RecommenderContract:
    """Mix into a test class; provide ``make_model`` returning an unfitted model.

    The fixtures ``data`` and ``fitted`` (tests/conftest.py) give each class its data and one
    model fitted on it, shared by the class's tests.
    """

    #: set False in a subclass whose model legitimately lacks a capability
    expects_similar_items = True
    expects_history = True

    def make_model(self):  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    # -------------------------------------------------------------- basics
    def test_fit_returns_self(self, data):
        m = self.make_model()
        assert m.fit(data) is m

    def test_not_fitted(self):
        with pytest.raises(ps.NotFittedError):
            self.make_model().recommend("u000", n=3)

    def test_fit_rejects_non_interactions(self):
        with pytest.raises(ps.DataError, match="Interactions"):
            self.make_model().fit([[1, 2], [3, 4]])

    def test_recommend_shapes_and_types(self, fitted, data):
        ids, scores = fitted.recommend("u001", n=5)
        assert ids.ndim == 1 and scores.ndim == 1 and len(ids) == len(scores) == 5
        assert scores.dtype == np.float32
        assert set(ids.tolist()) <= set(data.item_ids.tolist())
        assert np.all(np.diff(scores) <= 0), "scores must be best first"
        assert len(set(ids.tolist())) == 5, "no duplicates"

    def test_filter_seen(self, fitted, data):
        u = "u000"
        seen = set(data.item_map.to_ids(data.matrix[data.user_map.index_of(u)].indices).tolist())
        ids, _ = fitted.recommend(u, n=data.n_items)
        assert not (set(ids.tolist()) & seen)
        assert len(ids) == data.n_items - len(seen)
        ids_all, _ = fitted.recommend(u, n=data.n_items, filter_seen=False)
        assert len(ids_all) == data.n_items

    def test_allow_and_deny_lists(self, fitted):
        allow = ["i001", "i005", "i039", "i020", "i021"]
        ids, _ = fitted.recommend("u002", n=3, filter_seen=False, items=allow, exclude=["i001"])
        assert set(ids.tolist()) <= set(allow) - {"i001"}
        assert len(ids) == 3
        ids, _ = fitted.recommend("u002", n=10, filter_seen=False, items=allow, exclude=["i001"])
        assert len(ids) == 4, "fewer than n only when fewer are allowed"

    def test_mask_still_returns_n(self, fitted, data):
        mask = np.zeros(data.n_items, dtype=bool)
        mask[::3] = True  # only every third item "in stock"
        ids, _ = fitted.recommend("u003", n=8, filter_seen=False, mask=mask)
        assert len(ids) == 8
        assert all(mask[data.item_map.index_of(i)] for i in ids)

    def test_batch_rows_equal_single_calls(self, fitted, data):
        users = ["u004", "u010", "u000", "u004"]
        ids, scores = fitted.recommend_batch(users, n=7)
        assert ids.shape == scores.shape == (4, 7)
        for row, u in enumerate(users):
            one_ids, one_scores = fitted.recommend(u, n=7)
            np.testing.assert_array_equal(ids[row, : len(one_ids)], one_ids)
            # float32 BLAS sums a batch and a single row in different orders: equal to rounding
            np.testing.assert_allclose(scores[row, : len(one_ids)], one_scores, rtol=1e-5, atol=1e-6)

    def test_batch_pads_short_rows(self, fitted, data):
        ids, scores = fitted.recommend_batch(["u005"], n=data.n_items + 5, filter_seen=False)
        assert ids.shape == (1, data.n_items + 5)
        assert np.all(scores[0, data.n_items:] == PAD_SCORE)
        assert np.all(ids[0, data.n_items:] == "")

    def test_unknown_user_raises(self, fitted):
        with pytest.raises(ps.UnknownUserError, match="nobody"):
            fitted.recommend("nobody", n=3)
        with pytest.raises(ps.UnknownUserError):
            fitted.recommend_batch(["u001", "nobody"], n=3)

    def test_unknown_user_with_fallback(self, data):
        m = self.make_model().fit(data)
        m.set_fallback(ps.MostPopular().fit(data))
        ids, scores = m.recommend_batch(["u001", "nobody"], n=4)
        assert ids.shape == (2, 4)
        top = ps.MostPopular().fit(data).top_items(4)[0]
        np.testing.assert_array_equal(ids[1], top)

    def test_bad_n(self, fitted):
        for bad in (0, -1, 2.5, "3", True, None, 10**12):
            with pytest.raises(ps.ParameterError, match=r"n: expected an integer between 1 and \d+, got"):
                fitted.recommend("u001", n=bad)

    def test_bad_mask(self, fitted):
        with pytest.raises(ps.ParameterError, match="mask"):
            fitted.recommend("u001", n=3, mask=np.ones(3, dtype=bool))

    def test_recommend_for_history(self, fitted, data):
        if not self.expects_history:
            pytest.skip("model has no history path")  # declared capability, checked in test_capabilities
        ids, scores = fitted.recommend_for_history(["i001", "i002", "brand-new-item"], n=5)
        assert len(ids) == 5 and not ({"i001", "i002"} & set(ids.tolist()))
        b_ids, _ = fitted.recommend_for_history_batch([["i001", "i002"], []], n=5)
        np.testing.assert_array_equal(b_ids[0], ids)

    def test_similar_items(self, fitted, data):
        if not self.expects_similar_items:
            with pytest.raises(ps.UnsupportedError):
                fitted.similar_items("i001", n=3)
            return
        ids, scores = fitted.similar_items("i001", n=5)
        assert len(ids) == 5 and "i001" not in ids.tolist()
        with pytest.raises(ps.UnknownItemError):
            fitted.similar_items("no-such-item", n=3)

    def test_recommend_users(self, fitted, data):
        users, scores = fitted.recommend_users(["i001", "i002"], n=5)
        assert len(users) == 5 and len(set(users.tolist())) == 5
        assert set(users.tolist()) <= set(data.user_ids.tolist())
        assert np.all(np.diff(scores) <= 0)
        sub, _ = fitted.recommend_users("i001", n=50, users=["u001", "u002", "u003"], exclude_users=["u002"])
        assert sorted(sub.tolist()) == ["u001", "u003"]

    def test_save_load_round_trip(self, fitted, tmp_path):
        path = fitted.save(tmp_path / "m.persona")
        loaded = ps.load(path)
        assert type(loaded) is type(fitted)
        # compared as text: a model holding models (Hybrid's generators) gets equal, not identical, ones back
        assert repr(loaded.get_params()) == repr(fitted.get_params())
        users = ["u000", "u007", "u031"]
        a, sa = fitted.recommend_batch(users, n=6)
        b, sb = loaded.recommend_batch(users, n=6)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(sa, sb)
        mm = ps.load(path, mmap=True)
        np.testing.assert_array_equal(mm.recommend_batch(users, n=6)[0], a)

    def test_corrupted_artifact_is_refused(self, fitted, tmp_path):
        path = fitted.save(tmp_path / "m.persona")
        victim = sorted((path / "arrays").iterdir())[-1]
        raw = bytearray(victim.read_bytes())
        raw[-1] ^= 0xFF
        victim.write_bytes(bytes(raw))
        with pytest.raises(ps.ArtifactError, match="checksum"):
            ps.load(path)

    def test_concurrent_reads_agree(self, fitted):
        users = [f"u{u:03d}" for u in range(0, 60, 3)]
        expected = fitted.recommend_batch(users, n=5)[0]
        errors, results = [], []

        def worker():
            try:
                for _ in range(20):
                    for u_row, u in enumerate(users):
                        got, _ = fitted.recommend(u, n=5)
                        results.append(np.array_equal(got, expected[u_row, : len(got)]))
            except Exception as e:  # pragma: no cover - surfaced below
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert results and all(results)
