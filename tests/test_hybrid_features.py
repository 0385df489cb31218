"""The Hybrid ranker's sequence, agreement and attribute features against slow references (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import persona as ps
from persona.data import Features, IdMap, Interactions
from persona.ranking._features import SEQ_RECENT, SEQ_WINDOW, PairCounts, PairFeatures, recent_items


def _sequences(seqs, n_items):
    users = np.concatenate([np.full(len(s), u) for u, s in enumerate(seqs)])
    items = np.concatenate([np.asarray(s) for s in seqs])
    return Interactions(IdMap(list(range(len(seqs)))), IdMap(list(range(n_items))), users, items)


def _random_sequences(seed, n_users=40, n_items=15):
    rng = np.random.default_rng(seed)
    return [list(rng.choice(n_items, size=rng.integers(1, 9), replace=False)) for _ in range(n_users)]


def test_pair_counts_by_hand():
    inter = _sequences([[0, 1, 2], [1, 2], [2, 0]], 3)
    nxt = PairCounts.from_sequences(inter.users, inter.items, 3, (1,))
    a, b = np.array([0, 1, 2, 1, -1, 2]), np.array([1, 2, 0, 0, 1, 1])
    assert nxt.lookup(a, b).tolist() == [1, 2, 1, 0, 0, 0]  # never across users: (2 -> 1) is not a pair
    win = PairCounts.from_sequences(inter.users, inter.items, 3, (1, 2))
    assert win.lookup(np.array([0, 1]), np.array([2, 2])).tolist() == [1, 2]


def test_recent_items_latest_first():
    inter = _sequences([[4, 1, 2, 3], [0], [1, 0]], 5)
    assert recent_items(inter, 3).tolist() == [[3, 2, 1], [0, -1, -1], [0, 1, -1]]


def _slow_sequence_columns(seqs, n_items, recent_of_row, rows, items):
    """Loops over the raw sequences: the four sequence features of each pair."""
    nxt, after = np.zeros((n_items, n_items)), np.zeros((n_items, n_items))
    for s in seqs:
        for t in range(len(s)):
            for d in range(1, SEQ_WINDOW + 1):
                if t + d < len(s):
                    after[s[t], s[t + d]] += 1
                    if d == 1:
                        nxt[s[t], s[t + 1]] += 1
    out = []
    for r, i in zip(rows, items):
        rec = [x for x in recent_of_row[r] if x >= 0]
        last = rec[0] if rec else -1
        n = nxt[last, i] if last >= 0 else 0.0
        share = n / max(nxt[last].sum(), 1.0) if last >= 0 else 0.0
        follow = sum(after[a, i] for a in rec)
        near = sum(after[a, i] + after[i, a] for a in rec)
        out.append([np.log1p(n), share, np.log1p(follow), np.log1p(near)])
    return np.array(out, dtype=np.float32)


def test_sequence_features_match_a_slow_reference():
    seqs = _random_sequences(0)
    n_items = 15
    inter = _sequences(seqs, n_items)
    pf = PairFeatures(["g"], candidates=5, sequence=True).fit(inter, None, None)
    rng = np.random.default_rng(1)
    m = len(seqs)
    rows = np.repeat(np.arange(m), 4)
    items = rng.integers(0, n_items, size=len(rows))
    rank = rng.integers(0, 7, size=(m, n_items)).astype(np.int32)
    scores = rng.random((m, n_items)).astype(np.float32)
    hists = [np.sort(np.asarray(s)) for s in seqs]  # as the user-item matrix holds them: not in time order
    X = pf.build(rows, items, hists, [(scores, rank, scores.max(axis=1))], np.arange(m))
    names = pf.names
    seq_cols = [names.index(n) for n in ("seq_next_last", "seq_next_share", "seq_follow_recent", "seq_near_recent")]
    recent = [list(reversed(s))[:SEQ_RECENT] for s in seqs]
    np.testing.assert_allclose(X[:, seq_cols], _slow_sequence_columns(seqs, n_items, recent, rows, items), rtol=1e-5)
    assert X[:, names.index("n_generators")].tolist() == (rank[rows, items] < 5).astype(float).tolist()
    # a bare history (no user) reads its own order, latest last
    Xh = pf.build(rows[:4], items[:4], [np.asarray(seqs[0])], [(scores[:1], rank[:1], scores[:1, 0])], None)
    np.testing.assert_allclose(Xh[:, seq_cols], X[:4, seq_cols], rtol=1e-5)


def test_attribute_features_match_dense_cosines():
    seqs = _random_sequences(2, n_users=10, n_items=12)
    inter = _sequences(seqs, 12)
    rng = np.random.default_rng(3)
    A = sp.csr_matrix((rng.random((12, 6)) < 0.35).astype(np.float32))
    pf = PairFeatures(["g"]).fit(inter, Features(A, [f"a{j}" for j in range(6)], inter.item_map), None)
    rows = np.repeat(np.arange(10), 3)
    items = rng.integers(0, 12, size=30)
    z = np.zeros((10, 12), np.float32)
    X = pf.build(rows, items, [np.asarray(s) for s in seqs], [(z, z.astype(np.int32), z[:, 0])], None)
    D = A.toarray().astype(np.float64)
    unit = D / np.maximum(np.linalg.norm(D, axis=1, keepdims=True), 1e-12)
    for j, (r, i) in enumerate(zip(rows, items)):
        prof = unit[seqs[r]].sum(axis=0)
        prof = prof / max(np.linalg.norm(prof), 1e-12)
        assert abs(X[j, pf.names.index("attr_sim_last")] - unit[seqs[r][-1]] @ unit[i]) < 1e-5
        assert abs(X[j, pf.names.index("attr_sim_history")] - prof @ unit[i]) < 1e-5


def test_state_round_trip_keeps_every_feature():
    seqs = _random_sequences(4)
    inter = _sequences(seqs, 15)
    A = sp.random(15, 5, density=0.4, random_state=0, format="csr", dtype=np.float32)
    pf = PairFeatures(["g"], candidates=4, sequence=True).fit(inter, Features(A, list("abcde"), inter.item_map), None)
    meta, arrays = pf.state()
    back = PairFeatures.from_state(meta, arrays, inter.n_users, 15)
    assert back.names == pf.names
    rng = np.random.default_rng(0)
    rows, items = np.repeat(np.arange(len(seqs)), 3), rng.integers(0, 15, size=3 * len(seqs))
    s = rng.random((len(seqs), 15)).astype(np.float32)
    blocks = [(s, rng.integers(0, 6, size=s.shape).astype(np.int32), s.max(axis=1))]
    hists = [np.asarray(q) for q in seqs]
    np.testing.assert_array_equal(pf.build(rows, items, hists, blocks, np.arange(len(seqs))),
                                  back.build(rows, items, hists, blocks, np.arange(len(seqs))))


def test_sequence_features_can_be_switched_off():
    shop = ps.datasets.synthetic_shop(n_users=300, n_items=60, seed=0)
    train, valid, _ = ps.split.leave_last_out(shop.interactions)
    h = ps.Hybrid(generators={"pop": ps.MostPopular(), "knn": ps.ItemKNN()}, candidates=20, ranker="logistic",
                  sequence_features=False, show_progress=False).fit(train, valid=valid)
    assert not any(n.startswith("seq_") for n in h.features_.names)
    on = ps.Hybrid(generators={"pop": ps.MostPopular(), "knn": ps.ItemKNN()}, candidates=20, ranker="logistic",
                   show_progress=False).fit(train, valid=valid)
    assert {"seq_next_last", "n_generators"} <= set(on.features_.names)


def test_z_scores_standardise_each_generator_over_the_rows_candidates():
    inter = _sequences(_random_sequences(5, n_users=6), 15)
    pf = PairFeatures(["a", "b"], candidates=5).fit(inter, None, None)
    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(6), 7)
    items = np.concatenate([rng.choice(15, size=7, replace=False) for _ in range(6)])
    blocks = [(rng.random((6, 15)).astype(np.float32) * k, np.zeros((6, 15), np.int32), np.zeros(6, np.float32))
              for k in (1.0, 50.0)]
    X = pf.build(rows, items, [np.asarray(s) for s in inter.sequences()], blocks, np.arange(6))
    for g, (scores, _, _) in zip("ab", blocks):
        col = X[:, pf.names.index(f"{g}_z")]
        for r in range(6):
            v = scores[r, items[rows == r]].astype(np.float64)
            np.testing.assert_allclose(col[rows == r], (v - v.mean()) / v.std(), rtol=1e-4, atol=1e-5)


def test_auto_ranker_is_logistic_on_few_training_users_and_lightgbm_on_many(monkeypatch):
    import pytest

    from persona.ranking import _rankers

    if not _rankers.lightgbm_available():
        pytest.skip("LightGBM is not installed")
    shop = ps.datasets.synthetic_shop(n_users=300, n_items=60, seed=0)
    train, valid, _ = ps.split.leave_last_out(shop.interactions)
    gens = {"pop": ps.MostPopular(), "knn": ps.ItemKNN()}
    few = ps.Hybrid(generators=gens, candidates=20, ranker_params={"num_leaves": 7}, show_progress=False).fit(
        train, valid=valid)
    assert few.ranker_.kind == "logistic"  # 300 users label its pairs, fewer than AUTO_MIN_GROUPS
    monkeypatch.setattr(_rankers, "AUTO_MIN_GROUPS", 10)
    many = ps.Hybrid(generators=gens, candidates=20, ranker_params={"num_leaves": 7}, show_progress=False).fit(
        train, valid=valid)
    assert many.ranker_.kind == "lightgbm" and many.ranker_.params["num_leaves"] == 7


def test_pair_count_lookups_match_a_dictionary():
    rng = np.random.default_rng(7)
    users = np.sort(rng.integers(0, 30, size=400))
    items = rng.integers(0, 25, size=400)
    pc = PairCounts.from_sequences(users, items, 25, (1, 2))
    ref = {}
    for d in (1, 2):
        for t in range(len(items) - d):
            if users[t] == users[t + d]:
                ref[(items[t], items[t + d])] = ref.get((items[t], items[t + d]), 0) + 1
    a = rng.integers(-1, 25, size=500)
    b = rng.integers(0, 25, size=500)
    expect = [ref.get((x, y), 0) if x >= 0 else 0 for x, y in zip(a, b)]
    assert pc.lookup(a, b).tolist() == expect


def _user_features(labels, user_map):
    import pandas as pd

    df = pd.DataFrame({"user": user_map.ids, "band": labels})
    return Features.from_frame(df, user_map, "user", categorical=["band"])


def test_segment_shares_by_hand():
    # users 0, 1 in band "a", 2 in band "b", 3 without a band; items 0..2
    inter = _sequences([[0, 1], [0], [2, 0], [1]], 3)
    labels = ["a", "a", "b", None]
    pf = PairFeatures(["g"]).fit(inter, None, _user_features(labels, inter.user_map))
    table = pf.user_share["band"]
    band = pf.user_codes["band"]
    a, b = int(band[0]), int(band[2])
    overall = np.array([3, 2, 1]) / 4  # users who had each item, over all 4 users
    prior = 10.0
    expect_a = (np.array([2, 1, 0]) + prior * overall) / (2 + prior)
    expect_b = (np.array([1, 0, 1]) + prior * overall) / (1 + prior)
    np.testing.assert_allclose(table[a], expect_a, rtol=1e-6)
    np.testing.assert_allclose(table[b], expect_b, rtol=1e-6)
    np.testing.assert_allclose(table[-1], (np.array([3, 2, 1]) + prior * overall) / (4 + prior), rtol=1e-6)
    # the column: a known user reads their band's row, a visitor the row of the code given
    rows, items = np.array([0, 0, 1]), np.array([2, 0, 2])
    s = np.zeros((2, 3), np.float32)
    blocks = [(s, np.zeros((2, 3), np.int32), s.max(axis=1))]
    col = pf.names.index("user_band_share")
    X = pf.build(rows, items, [np.array([0, 1]), np.zeros(0, np.int64)], blocks, np.array([0, -1]))
    np.testing.assert_allclose(X[:, col], [expect_a[2], expect_a[0], table[-1][2]], rtol=1e-6)
    X = pf.build(rows, items, [np.zeros(0, np.int64)] * 2, blocks, None, {"band": b})
    np.testing.assert_allclose(X[:, col], [expect_b[2], expect_b[0], expect_b[2]], rtol=1e-6)
    # state round trip, and a crafted table of the wrong size is refused
    meta, arrays = pf.state()
    back = PairFeatures.from_state(meta, arrays, inter.n_users, 3)
    np.testing.assert_array_equal(back.user_share["band"], table)
    arrays["pf_user_share_0"] = arrays["pf_user_share_0"][:-1]
    with pytest.raises(ps.DataError, match="pf_user_share_0"):
        PairFeatures.from_state(meta, arrays, inter.n_users, 3)
    arrays["pf_user_share_0"] = np.full(table.size, np.inf, np.float32)
    with pytest.raises(ps.DataError, match="finite"):
        PairFeatures.from_state(meta, arrays, inter.n_users, 3)
