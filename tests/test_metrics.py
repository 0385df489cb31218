"""Tests of persona.evaluation.evaluate: hand-computed cases and a slow per-user reference."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from persona.data import IdMap, Interactions
from persona.errors import DataError, NotFittedError, PersonaError
from persona.evaluation import METRICS, evaluate
from persona.evaluation import metrics as metrics_module
from persona.evaluation.metrics import _cosine_pair_sums

LOG3 = math.log2(3)


class FakeModel:
    """Ranks items by a fixed score matrix, exactly as ``recommend_indices`` promises."""

    def __init__(self, scores, user_items, user_ids=None, item_ids=None):
        self.scores = np.asarray(scores, dtype=np.float64)
        n_users, n_items = self.scores.shape
        self.user_items_ = sp.csr_matrix(np.asarray(user_items, dtype=np.float32))
        self.user_map_ = IdMap(user_ids if user_ids is not None else [f"u{i}" for i in range(n_users)])
        self.item_map_ = IdMap(item_ids if item_ids is not None else [f"i{i}" for i in range(n_items)])
        self.calls = []

    def recommend_indices(self, user_indices, n, *, filter_seen=True, exclude=None):
        users = np.asarray(user_indices, dtype=np.int64)
        self.calls.append((users.copy(), n, None if exclude is None else exclude.toarray()))
        s = self.scores[users].copy()
        if filter_seen:
            s[self.user_items_[users].toarray() != 0] = -np.inf
        if exclude is not None:
            assert exclude.shape == (len(users), s.shape[1])
            s[exclude.toarray() != 0] = -np.inf
        order = np.argsort(-s, axis=1, kind="stable")[:, :n]
        sc = np.take_along_axis(s, order, axis=1)
        idx = np.where(np.isfinite(sc), order, -1)
        if idx.shape[1] < n:
            pad = n - idx.shape[1]
            idx = np.hstack([idx, np.full((len(users), pad), -1)])
            sc = np.hstack([sc, np.full((len(users), pad), -np.inf)])
        return idx.astype(np.int64), sc.astype(np.float32)


def inter_on(model, users, items, user_ids=None, item_ids=None):
    """Test events on the model's own maps (or on the given maps, with index lists)."""
    umap = model.user_map_ if user_ids is None else IdMap(user_ids)
    imap = model.item_map_ if item_ids is None else IdMap(item_ids)
    return Interactions(umap, imap, users, items)


# --------------------------------------------------------------------------------- hand-computed case
def case_a():
    # 3 users x 6 items; u0 and u2 rank i0 > i1 > ... > i5, u1 the reverse
    scores = [[6, 5, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]]
    seen = np.zeros((3, 6))
    seen[0, 1] = seen[1, 1] = seen[2, 0] = 1
    model = FakeModel(scores, seen)
    # lists: u0 [0, 2, 3], u1 [5, 4, 3], u2 [1, 2, 3]
    # targets: u0 {2, 4} (two), u1 {0} (no hit), u2 {0 (seen in train: a miss), 3}
    test = inter_on(model, [0, 0, 1, 2, 2], [2, 4, 0, 0, 3])
    return model, test


def test_ranking_metrics_hand_computed():
    model, test = case_a()
    r = evaluate(model, test, k=(1, 3))
    assert r["n_users"] == 3 and r["n_unknown_users"] == 0 and r["n_targets"] == 5
    for name in ("hr", "precision", "recall", "f1", "ndcg", "map", "mrr"):
        assert r[f"{name}@1"] == 0.0
    assert r["hr@3"] == pytest.approx(2 / 3)
    assert r["precision@3"] == pytest.approx(2 / 9)
    assert r["recall@3"] == pytest.approx(1 / 3)
    assert r["f1@3"] == pytest.approx((0.4 + 0 + 0.4) / 3)
    ideal2 = 1 + 1 / LOG3
    assert r["ndcg@3"] == pytest.approx(((1 / LOG3) / ideal2 + (1 / 2) / ideal2) / 3)
    assert r["map@3"] == pytest.approx((1 / 2 / 2 + 1 / 3 / 2) / 3)
    assert r["mrr@3"] == pytest.approx((1 / 2 + 1 / 3) / 3)
    assert r["coverage@1"] == pytest.approx(3 / 6)  # {0, 5, 1}
    assert r["coverage@3"] == pytest.approx(6 / 6)
    assert r["time_s"] >= 0
    # the model was asked once for all users, for max(k) items, without extra exclusions
    assert len(model.calls) == 1
    users, n, excl = model.calls[0]
    assert users.tolist() == [0, 1, 2] and n == 3 and excl is None


def test_popularity_metrics_hand_computed():
    model, test = case_a()
    r = evaluate(model, test, k=(1, 3))
    # train: i0 by 1 user, i1 by 2 users, others 0 (floored to 1); 3 train users
    info = {0: LOG3, 1: math.log2(3 / 2), 2: LOG3, 3: LOG3, 4: LOG3, 5: LOG3}
    pop = {0: 1, 1: 2, 2: 0, 3: 0, 4: 0, 5: 0}
    lists = [[0, 2, 3], [5, 4, 3], [1, 2, 3]]
    for k in (1, 3):
        want_nov = np.mean([np.mean([info[i] for i in lst[:k]]) for lst in lists])
        want_arp = np.mean([np.mean([pop[i] for i in lst[:k]]) for lst in lists])
        assert r[f"novelty@{k}"] == pytest.approx(want_nov)
        assert r[f"arp@{k}"] == pytest.approx(want_arp)
    assert r["novelty@1"] == pytest.approx((2 * LOG3 + math.log2(1.5)) / 3)
    assert r["arp@1"] == pytest.approx(1.0) and r["arp@3"] == pytest.approx(1 / 3)


def test_category_diversity_hand_computed():
    model, test = case_a()
    cats = np.array([0, 0, 1, 1, -1, 2])
    r = evaluate(model, test, k=(1, 2, 3), item_categories=cats, metrics=["diversity"])
    # @3: u0 cats (0, 1, 1) -> 2/3; u1 (2, ?, 1) -> the one known pair differs -> 1; u2 (0, 1, 1) -> 2/3
    assert r["diversity@3"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    # @2: u0 (0, 1) -> 1; u1 (2, ?) no known pair, left out; u2 (0, 1) -> 1
    assert r["diversity@2"] == pytest.approx(1.0)
    assert math.isnan(r["diversity@1"])
    assert set(r) == {"diversity@1", "diversity@2", "diversity@3", "n_users", "n_unknown_users",
                      "n_unknown_items", "n_cold_users", "n_targets", "time_s"}
    # a dict keyed by external item id gives the same answer
    r2 = evaluate(model, test, k=3, item_categories={"i0": 0, "i1": 0, "i2": 1, "i3": 1, "i5": 2, "zz": 7},
                  metrics=["diversity"])
    assert r2["diversity@3"] == pytest.approx(r["diversity@3"])


def cosine_case():
    # item columns of the training matrix: i0 {a, b}, i1 {a}, i2 {b, c}, i3 {}
    train = Interactions(IdMap(["a", "b", "c"]), IdMap(["i0", "i1", "i2", "i3"]),
                         [0, 0, 1, 1, 2], [0, 1, 0, 2, 2])
    scores = [[4, 3, 2, 1], [3, 1, 2, 4]]  # x: [0, 1, 2, 3], y: [3, 0, 2, 1]
    model = FakeModel(scores, np.zeros((2, 4)), user_ids=["x", "y"], item_ids=["i0", "i1", "i2", "i3"])
    test = inter_on(model, [0, 1], [3, 1])
    return model, test, train


def test_cosine_diversity_hand_computed():
    model, test, train = cosine_case()
    r = evaluate(model, test, k=(2, 3), train=train, metrics=["diversity", "arp"])
    c01, c02 = 1 / math.sqrt(2), 0.5
    assert r["diversity@2"] == pytest.approx(((1 - c01) + 1.0) / 2)
    assert r["diversity@3"] == pytest.approx(((1 - (c01 + c02) / 3) + (1 - c02 / 3)) / 2)
    assert r["arp@2"] == pytest.approx(((2 + 1) / 2 + (0 + 2) / 2) / 2)


@pytest.mark.parametrize("method", ["gram", "lists"])
def test_cosine_both_ways_agree(method):
    model, test, train = cosine_case()
    m = sp.csr_matrix(train.matrix)
    m.data[:] = 1
    counts = np.bincount(m.indices, minlength=4).astype(float)
    xn = m.T.tocsr()
    xn.data = np.repeat(1 / np.sqrt(np.maximum(counts, 1)), np.diff(xn.indptr)).astype(np.float32)
    idx = np.array([[0, 1, 2, -1], [3, 0, 2, 1], [-1, -1, -1, -1]])
    out = _cosine_pair_sums(idx, idx >= 0, (1, 2, 3, 4), xn, counts > 0, counts, method=method)
    c01, c02 = 1 / math.sqrt(2), 0.5
    np.testing.assert_allclose(out[1], [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out[2], [c01, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out[3], [c01 + c02, c02, 0], atol=1e-6)
    np.testing.assert_allclose(out[4], [c01 + c02, c02 + c01, 0], atol=1e-6)


def test_padded_rows():
    # 3 items; u0 has seen 2 of them -> one item left; u1 has seen all -> an empty list
    scores = [[3, 2, 1], [3, 2, 1]]
    model = FakeModel(scores, [[1, 0, 1], [1, 1, 1]])
    test = inter_on(model, [0, 1], [1, 0])
    r = evaluate(model, test, k=(1, 5), item_categories=np.array([0, 1, 2]))
    assert r["hr@5"] == 0.5 and r["hr@1"] == 0.5
    assert r["precision@5"] == pytest.approx(1 / 5 / 2)  # hits / k even for a short list
    assert r["precision@1"] == pytest.approx(1 / 2)
    assert r["recall@5"] == 0.5
    assert r["ndcg@5"] == pytest.approx(0.5)
    assert r["coverage@5"] == pytest.approx(1 / 3)
    # only u0 has a list (one item, i1 used by 1 of 2 train users)
    assert r["novelty@5"] == pytest.approx(1.0)
    assert r["arp@5"] == pytest.approx(1.0)
    assert math.isnan(r["diversity@5"])  # no list has two items
    assert model.calls[0][1] == 5


def test_unknown_users_and_items_are_counted(caplog):
    model, _ = case_a()
    # a test set on grown maps: user "ghost" and item "new" are unknown to the model
    test = Interactions(IdMap(["u2", "u0", "ghost"]), IdMap(["i4", "i2", "new", "i3", "i0"]),
                        [1, 1, 1, 2, 0, 0], [1, 0, 2, 1, 3, 4])
    with caplog.at_level(logging.WARNING, logger="persona.evaluation.metrics"):
        r = evaluate(model, test, k=3)
    assert r["n_users"] == 2 and r["n_unknown_users"] == 1 and r["n_unknown_items"] == 1
    # u0 targets {i4, i2, new}: one hit (i2 at rank 1) of 3; u2 targets {i3, i0}: i3 at rank 2
    assert r["hr@3"] == 1.0
    assert r["recall@3"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    ideal3, ideal2 = 1 + 1 / LOG3 + 1 / 2, 1 + 1 / LOG3
    assert r["ndcg@3"] == pytest.approx(((1 / LOG3) / ideal3 + (1 / 2) / ideal2) / 2)
    assert r["map@3"] == pytest.approx((1 / 2 / 3 + 1 / 3 / 2) / 2)
    assert model.calls[-1][0].tolist() == [0, 2]
    messages = " ".join(rec.getMessage() for rec in caplog.records)
    assert "1 test users are unknown" in messages and "ghost" in messages
    assert "1 test items are unknown" in messages


def test_same_result_through_external_ids():
    model, test = case_a()
    shared = evaluate(model, test, k=(1, 3))
    # the same events on maps listing the ids in another order
    uids, iids = ["u2", "u1", "u0"], ["i5", "i4", "i3", "i2", "i1", "i0"]
    u = [uids.index(x) for x in model.user_map_.to_ids(test.users)]
    i = [iids.index(x) for x in model.item_map_.to_ids(test.items)]
    other = Interactions(IdMap(uids), IdMap(iids), u, i)
    mapped = evaluate(model, other, k=(1, 3))
    for key in shared:
        if key != "time_s":
            assert mapped[key] == pytest.approx(shared[key], nan_ok=True), key


def test_exclude_removes_items_from_the_ranking():
    model, test = case_a()
    # exclude i0 for u0 (its first recommendation) -> u0's list becomes [2, 3, 4]: both targets hit
    valid = inter_on(model, [0], [0])
    r = evaluate(model, test, k=(1, 3), exclude=valid)
    users, n, excl = model.calls[-1]
    assert excl.shape == (3, 6) and excl[0].tolist() == [1, 0, 0, 0, 0, 0] and excl[1:].sum() == 0
    # u0: hits at ranks 0 and 2 of 2 targets; u2 as before
    assert r["hr@1"] == pytest.approx(1 / 3)
    assert r["recall@3"] == pytest.approx((1 + 0 + 1 / 2) / 3)
    ideal2 = 1 + 1 / LOG3
    assert r["ndcg@3"] == pytest.approx(((1 + 1 / 2) / ideal2 + 0 + (1 / 2) / ideal2) / 3)
    assert r["map@3"] == pytest.approx(((1 + 2 / 3) / 2 + 0 + (1 / 3) / 2) / 3)
    assert r["mrr@1"] == pytest.approx(1 / 3)
    # the seen filter is the model's: switching it off brings seen items back
    r2 = evaluate(model, test, k=(1, 3), filter_seen=False)
    # lists without filtering: u0 [0, 1, 2], u1 [5, 4, 3], u2 [0, 1, 2]: u2's seen target i0 is a hit
    assert r2["hr@1"] == pytest.approx(1 / 3)
    assert r2["recall@3"] == pytest.approx((1 / 2 + 0 + 1 / 2) / 3)


def test_batches_give_the_same_answer(monkeypatch):
    rng = np.random.default_rng(0)
    scores = rng.random((30, 12))
    seen = rng.random((30, 12)) < 0.2
    model = FakeModel(scores, seen)
    users = rng.integers(0, 30, 80)
    items = rng.integers(0, 12, 80)
    test = inter_on(model, users, items)
    cats = rng.integers(-1, 3, 12)
    for kw in ({"item_categories": cats}, {}):
        full = evaluate(model, test, k=(3, 7), **kw)
        n_calls = len(model.calls)
        small = evaluate(model, test, k=(3, 7), batch_size=4, **kw)
        assert len(model.calls) - n_calls == math.ceil(full["n_users"] / 4)
        # tiny work blocks: the cosine diversity is computed block by block, in many row chunks
        with monkeypatch.context() as mp:
            mp.setattr(metrics_module, "_COSINE_BLOCK", 8)
            mp.setattr(metrics_module, "_LISTS_WORK", 3)
            blocks = evaluate(model, test, k=(3, 7), batch_size=3, **kw)
        for key in full:
            if key != "time_s":
                assert small[key] == pytest.approx(full[key]), key
                assert blocks[key] == pytest.approx(full[key]), key


def test_progress_bar_runs(capsys):
    model, test = case_a()
    r = evaluate(model, test, k=3, show_progress=True, metrics="hr")
    assert r["hr@3"] == pytest.approx(2 / 3)
    assert "evaluate" in capsys.readouterr().err


def test_cold_users_are_reported():
    model = FakeModel([[2, 1], [2, 1]], [[0, 0], [1, 0]])
    r = evaluate(model, inter_on(model, [0, 1], [0, 1]), k=1, metrics=["hr"])
    assert r["n_cold_users"] == 1 and r["hr@1"] == 1.0


def test_errors():
    model, test = case_a()
    with pytest.raises(DataError, match="expected k"):
        evaluate(model, test, k=0)
    with pytest.raises(DataError, match="expected k"):
        evaluate(model, test, k=[])
    with pytest.raises(DataError, match="expected k"):
        evaluate(model, test, k="10")
    with pytest.raises(DataError, match="expected metric names"):
        evaluate(model, test, metrics=["auc"])
    with pytest.raises(DataError, match="expected test as persona Interactions"):
        evaluate(model, test.matrix)
    with pytest.raises(DataError, match="expected batch_size"):
        evaluate(model, test, batch_size=0)
    with pytest.raises(DataError, match="with events"):
        evaluate(model, test.subset(np.zeros(len(test), dtype=bool)))
    strangers = Interactions(IdMap(["x"]), IdMap(["i0"]), [0], [0])
    with pytest.raises(DataError, match="none of the 1 test users is known"):
        evaluate(model, strangers)
    with pytest.raises(NotFittedError, match="call model.fit"):
        evaluate(object(), test)
    with pytest.raises(DataError, match="item_categories"):
        evaluate(model, test, item_categories=np.zeros(3, dtype=int))
    with pytest.raises(DataError, match="exclude"):
        evaluate(model, test, exclude=np.zeros((3, 6)))
    with pytest.raises(DataError, match="train"):
        evaluate(model, test, train=sp.csr_matrix((3, 5)))

    class Broken(FakeModel):
        def recommend_indices(self, user_indices, n, **kw):
            idx, sc = super().recommend_indices(user_indices, n, **kw)
            return idx + 10, sc

    broken = Broken(model.scores, model.user_items_.toarray())
    with pytest.raises(PersonaError, match="outside"):
        evaluate(broken, test)


def test_no_training_data():
    model, test = case_a()
    model.user_items_ = None
    r = evaluate(model, test, k=3, filter_seen=False)
    assert "novelty@3" not in r and "diversity@3" not in r and "hr@3" in r
    with pytest.raises(DataError, match="pass train="):
        evaluate(model, test, k=3, filter_seen=False, metrics=["arp"])


# --------------------------------------------------------------------------------- reference
def reference(model, test, ks, exclude=None, cats=None, train_m=None, filter_seen=True, rows=None):
    """Slow per-user metrics, written straight from the definitions (``rows``: filled with
    {model user index: {"metric@k": value}} for each user's own values)."""
    n_items = len(model.item_map_)
    tu = model.user_map_.lookup(test.user_map.ids)[test.users]
    ti = model.item_map_.lookup(test.item_map.ids)[test.items]
    targets = {}
    for u, i, raw in zip(tu.tolist(), ti.tolist(), test.items.tolist()):
        if u >= 0:
            targets.setdefault(u, set()).add(i if i >= 0 else ("unknown", raw))
    ex = None
    if exclude is not None:
        eu = model.user_map_.lookup(exclude.user_map.ids)[exclude.users]
        ei = model.item_map_.lookup(exclude.item_map.ids)[exclude.items]
        ex = np.zeros((len(model.user_map_), n_items))
        for u, i in zip(eu, ei):
            if u >= 0 and i >= 0:
                ex[u, i] = 1
    tm = (model.user_items_ if train_m is None else train_m).toarray() != 0
    train_users = int(tm.any(axis=1).sum())
    counts = tm.sum(axis=0)
    cols = tm.T.astype(float)
    norms = np.linalg.norm(cols, axis=1)

    def cos(a, b):
        return 0.0 if norms[a] == 0 or norms[b] == 0 else float(cols[a] @ cols[b] / (norms[a] * norms[b]))

    kmax = max(ks)
    sums, denom = {}, {}
    covered = {k: set() for k in ks}

    current = {}

    def add(key, v):
        sums[key] = sums.get(key, 0.0) + v
        denom[key] = denom.get(key, 0) + 1
        current[f"{key[0]}@{key[1]}"] = v

    for u in sorted(targets):
        current = {}
        if rows is not None:
            rows[u] = current
        row = None if ex is None else sp.csr_matrix(ex[u:u + 1])
        idx, _ = model.recommend_indices(np.array([u]), kmax, filter_seen=filter_seen, exclude=row)
        rec = [int(x) for x in idx[0] if x >= 0]
        T = targets[u]
        for k in ks:
            top = rec[:k]
            hits = [r for r, i in enumerate(top) if i in T]
            p, rc = len(hits) / k, len(hits) / len(T)
            add(("hr", k), float(bool(hits)))
            add(("precision", k), p)
            add(("recall", k), rc)
            add(("f1", k), 0.0 if p + rc == 0 else 2 * p * rc / (p + rc))
            dcg = sum(1 / math.log2(r + 2) for r in hits)
            idcg = sum(1 / math.log2(r + 2) for r in range(min(len(T), k)))
            add(("ndcg", k), dcg / idcg)
            add(("map", k), sum((n + 1) / (r + 1) for n, r in enumerate(hits)) / min(len(T), k))
            add(("mrr", k), 1 / (hits[0] + 1) if hits else 0.0)
            covered[k].update(top)
            if top:
                add(("novelty", k), float(np.mean([-math.log2(max(counts[i], 1) / max(train_users, 1)) for i in top])))
                add(("arp", k), float(np.mean([counts[i] for i in top])))
            pairs = [(a, b) for x, a in enumerate(top) for b in top[x + 1:]]
            if cats is not None:
                known = [(a, b) for a, b in pairs if cats[a] >= 0 and cats[b] >= 0]
                if known:
                    add(("diversity", k), sum(cats[a] != cats[b] for a, b in known) / len(known))
            elif pairs:
                add(("diversity", k), 1 - sum(cos(a, b) for a, b in pairs) / len(pairs))
    out = {}
    for name in METRICS:
        for k in ks:
            if name == "coverage":
                out[f"coverage@{k}"] = len(covered[k]) / n_items
            else:
                out[f"{name}@{k}"] = sums[name, k] / denom[name, k] if denom.get((name, k)) else float("nan")
    out["n_users"] = len(targets)
    return out


@st.composite
def eval_cases(draw):
    n_users = draw(st.integers(1, 7))
    n_items = draw(st.integers(1, 9))
    scores = draw(st.lists(st.integers(0, 4), min_size=n_users * n_items, max_size=n_users * n_items))  # ties
    seen = draw(st.lists(st.booleans(), min_size=n_users * n_items, max_size=n_users * n_items))
    model = FakeModel(np.reshape(scores, (n_users, n_items)), np.reshape(seen, (n_users, n_items)))
    n_test = draw(st.integers(1, 20))
    # test on grown maps: one extra user and one extra item the model does not know
    tu = draw(st.lists(st.integers(0, n_users), min_size=n_test, max_size=n_test))
    ti = draw(st.lists(st.integers(0, n_items), min_size=n_test, max_size=n_test))
    if all(u == n_users for u in tu):
        tu[0] = 0
    test = Interactions(model.user_map_.grow(["ghost"]), model.item_map_.grow(["new"]), tu, ti)
    exclude = None
    if draw(st.booleans()):
        n_ex = draw(st.integers(1, 10))
        exclude = Interactions(model.user_map_, model.item_map_,
                               draw(st.lists(st.integers(0, n_users - 1), min_size=n_ex, max_size=n_ex)),
                               draw(st.lists(st.integers(0, n_items - 1), min_size=n_ex, max_size=n_ex)))
    ks = tuple(draw(st.lists(st.integers(1, 11), min_size=1, max_size=3)))
    cats = np.asarray(draw(st.lists(st.integers(-1, 2), min_size=n_items, max_size=n_items))) \
        if draw(st.booleans()) else None
    train = None
    if draw(st.booleans()):
        n_tr = draw(st.integers(1, 15))
        train = Interactions(IdMap([f"t{j}" for j in range(4)]), model.item_map_,
                             draw(st.lists(st.integers(0, 3), min_size=n_tr, max_size=n_tr)),
                             draw(st.lists(st.integers(0, n_items - 1), min_size=n_tr, max_size=n_tr)))
    batch = draw(st.sampled_from([None, 1, 2, 3]))
    filter_seen = draw(st.booleans())
    return model, test, exclude, ks, cats, train, batch, filter_seen


@settings(max_examples=300, deadline=None)
@given(eval_cases())
def test_matches_slow_reference(case):
    model, test, exclude, ks, cats, train, batch, filter_seen = case
    got = evaluate(model, test, k=ks, exclude=exclude, train=train, item_categories=cats, batch_size=batch,
                   filter_seen=filter_seen)
    want = reference(model, test, sorted(set(ks)), exclude=exclude, cats=cats,
                     train_m=None if train is None else train.matrix, filter_seen=filter_seen)
    assert got["n_users"] == want["n_users"]
    known = set(model.user_map_.ids.tolist())
    assert got["n_unknown_users"] == len({u for u in test.user_map.to_ids(test.users).tolist() if u not in known})
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), key
    for key in got:
        assert key in want or key in ("n_unknown_users", "n_unknown_items", "n_cold_users", "n_targets", "time_s")


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(1, 8), st.integers(1, 6), st.data())
def test_cosine_ways_match_brute_force(n_users, n_items, k, data):
    cells = data.draw(st.lists(st.booleans(), min_size=n_users * n_items, max_size=n_users * n_items))
    m = sp.csr_matrix(np.reshape(cells, (n_users, n_items)).astype(np.float32))
    counts = np.bincount(m.indices, minlength=n_items).astype(float)
    xn = m.T.tocsr()
    xn.data = np.repeat(1 / np.sqrt(np.maximum(counts, 1)), np.diff(xn.indptr)).astype(np.float32)
    rows = data.draw(st.integers(1, 5))
    lists = [data.draw(st.permutations(range(n_items)))[:k] for _ in range(rows)]
    idx = np.full((rows, k), -1)
    for r, lst in enumerate(lists):
        cut = data.draw(st.integers(0, len(lst)))
        idx[r, :cut] = lst[:cut]
    dense = m.toarray().T
    norms = np.linalg.norm(dense, axis=1)
    for kk in range(1, k + 1):
        want = []
        for r in range(rows):
            top = [i for i in idx[r, :kk] if i >= 0]
            want.append(sum(dense[a] @ dense[b] / (norms[a] * norms[b]) if norms[a] and norms[b] else 0.0
                            for x, a in enumerate(top) for b in top[x + 1:]))
        for method in ("gram", "lists"):
            got = _cosine_pair_sums(idx, idx >= 0, range(1, k + 1), xn, counts > 0, counts, method=method)
            np.testing.assert_allclose(got[kk], want, atol=1e-5)


# --------------------------------------------------------------------------------- per-user frame (issue 12 point 11)
def test_per_user_frame_hand_computed():
    model, test = case_a()
    report, frame = evaluate(model, test, k=(1, 3), metrics=("hr", "recall", "ndcg", "mrr"), per_user=True)
    assert report == {**evaluate(model, test, k=(1, 3), metrics=("hr", "recall", "ndcg", "mrr")),
                      "time_s": report["time_s"]}
    assert list(frame.columns) == ["user", "n_targets", "hr@1", "hr@3", "recall@1", "recall@3", "ndcg@1", "ndcg@3",
                                   "mrr@1", "mrr@3"]
    assert frame["user"].tolist() == ["u0", "u1", "u2"] and frame["n_targets"].tolist() == [2, 1, 2]
    # lists: u0 [0, 2, 3] targets {2, 4}; u1 [5, 4, 3] targets {0}; u2 [1, 2, 3] targets {0, 3}
    assert frame["hr@3"].tolist() == [1.0, 0.0, 1.0] and frame["hr@1"].tolist() == [0.0, 0.0, 0.0]
    assert frame["recall@3"].tolist() == [0.5, 0.0, 0.5]
    assert frame["mrr@3"].tolist() == pytest.approx([1 / 2, 0.0, 1 / 3])
    assert frame["ndcg@3"].tolist() == pytest.approx([(1 / LOG3) / (1 + 1 / LOG3), 0.0, 0.5 / (1 + 1 / LOG3)])
    for key in ("hr@3", "recall@3", "ndcg@3", "mrr@3"):
        assert frame[key].mean() == pytest.approx(report[key])
    with pytest.raises(DataError, match="per_user"):
        evaluate(model, test, k=3, per_user="yes")


@settings(max_examples=150, deadline=None)
@given(eval_cases())
def test_per_user_frame_matches_slow_reference(case):
    model, test, exclude, ks, cats, train, batch, filter_seen = case
    report, frame = evaluate(model, test, k=ks, exclude=exclude, train=train, item_categories=cats,
                             batch_size=batch, filter_seen=filter_seen, per_user=True)
    rows = {}
    reference(model, test, sorted(set(ks)), exclude=exclude, cats=cats,
              train_m=None if train is None else train.matrix, filter_seen=filter_seen, rows=rows)
    assert len(frame) == report["n_users"] == len(rows)
    assert frame["user"].tolist() == model.user_map_.ids[sorted(rows)].tolist()
    assert int(frame["n_targets"].sum()) == report["n_targets"]
    assert not any(c.startswith("coverage") for c in frame.columns)  # one value for all users, not per user
    for r, u in enumerate(sorted(rows)):
        for key in frame.columns[2:]:
            want = rows[u].get(key, float("nan"))  # no value: the metric is undefined for this user's list
            assert frame[key].iloc[r] == pytest.approx(want, rel=1e-5, abs=1e-6, nan_ok=True), (u, key)
    for key in frame.columns[2:]:
        if frame[key].notna().any():
            assert frame[key].mean() == pytest.approx(report[key], rel=1e-5, abs=1e-6)
