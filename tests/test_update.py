"""model.update(new): every model family folds new events in at once, without a refit (issue 15).

What is checked against what:
* the merged seen-items matrix equals ``a.concat(b).matrix`` for every ``aggregate`` (property test);
* MostPopular.update(b) after fit(a) counts exactly what fit(a + b) counts (with decay: to float precision);
* ItemKNN / EASE recommend for an updated user exactly what a fit on a + b recommends when given a's
  similarities / B (the item-item part does not change on update);
* ALS folds a new user in to recalculate_user's vector; SASRec / TwoTower read the same token rows
  as update_histories on the full histories, without importing torch;
* a failing update leaves the model exactly as it was; an empty batch changes nothing; bad input is
  a persona error; update, save and load round-trip.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import persona as ps
from persona.models._update import UpdateBatch, merge_matrices

# ----------------------------------------------------------------------------------------- data


def _frame_part(inter, mask):
    """The events of ``mask`` as a fresh Interactions with its own (compact) id maps."""
    df = inter.subset(mask).to_frame()
    return ps.Interactions.from_frame(df, user="user", item="item", time="timestamp", weight="weight")


@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=240, n_items=60, seed=3).interactions


@pytest.fixture(scope="module")
def parts(shop):
    """(a, b, full): the first 70% of the events, the rest plus a new user on a new item, and a + b."""
    ts = shop.timestamps
    cut = np.quantile(ts, 0.7)
    a = _frame_part(shop, ts < cut)
    b = _frame_part(shop, ts >= cut)
    extra = ps.Interactions.from_records(
        [("zz-newbie", "zz-new-item", ts.max() + 10.0), ("zz-newbie", str(shop.item_ids[3]), ts.max() + 20.0)],
        time="time")
    b = b.concat(extra)
    return a, b, a.concat(b)


def _state(model) -> dict:
    """Every array, sparse matrix and id map a model holds, copied (to compare before / after)."""
    out = {}
    for k, v in vars(model).items():
        if isinstance(v, np.ndarray):
            out[k] = v.copy()
        elif sp.issparse(v):
            out[k] = v.copy()
        elif isinstance(v, ps.IdMap):
            out[k] = v.ids.copy()
    return out


def _same_state(model, before: dict) -> bool:
    now = _state(model)
    if now.keys() != before.keys():
        return False
    for k, v in before.items():
        w = now[k]
        if sp.issparse(v):
            if v.shape != w.shape or (v != w).nnz:
                return False
        elif v.shape != w.shape or not np.array_equal(v, w, equal_nan=v.dtype.kind == "f"):
            return False
    return True


# ------------------------------------------------------------------------------ the merge rules


@st.composite
def _event_logs(draw):
    n_users, n_items = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    n = draw(st.integers(1, 30))
    users = draw(st.lists(st.integers(0, n_users - 1), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, n_items - 1), min_size=n, max_size=n))
    weights = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]), min_size=n, max_size=n))
    split = draw(st.integers(1, n))
    return users, items, weights, split


@given(_event_logs(), st.sampled_from(["sum", "max", "last", "count"]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_merged_matrix_is_the_concatenation(log, aggregate):
    users, items, weights, split = log
    records = [{"user": f"u{u}", "item": f"i{i}", "time": float(t), "w": w}
               for t, (u, i, w) in enumerate(zip(users, items, weights))]
    kw = dict(user="user", item="item", time="time", weight="w", aggregate=aggregate)
    a = ps.Interactions.from_records(records[:split], **kw)
    if split == len(records):
        return
    b = ps.Interactions.from_records(records[split:], **kw)
    model = ps.MostPopular().fit(a)
    model.update(b)
    want = a.concat(b)
    assert model.user_map_.ids.tolist() == want.user_ids.tolist()
    assert model.item_map_.ids.tolist() == want.item_ids.tolist()
    got, ref = model.user_items_, want.matrix
    assert got.shape == ref.shape
    assert np.array_equal(got.indptr, ref.indptr) and np.array_equal(got.indices, ref.indices)
    assert np.allclose(got.data, ref.data)


def test_merge_matrices_keeps_stored_zeros():
    old = sp.csr_matrix((np.array([0.0], np.float32), (np.array([0]), np.array([1]))), shape=(1, 2))
    new = sp.csr_matrix((np.array([2.0], np.float32), (np.array([1]), np.array([0]))), shape=(2, 3))
    for agg in ("sum", "max", "last", "count"):
        m = merge_matrices(old, new, agg)
        assert m.shape == (2, 3) and m.nnz == 2 and m[0, 1] == 0.0 and m[1, 0] == 2.0


# ------------------------------------------------------------------------------- popularity


@pytest.mark.parametrize("params", [{}, {"measure": "events"}, {"measure": "weight"}])
def test_popularity_update_equals_fit_on_everything(parts, params):
    a, b, full = parts
    upd = ps.MostPopular(**params).fit(a).update(b)
    ref = ps.MostPopular(**params).fit(full)
    assert upd.item_map_.ids.tolist() == ref.item_map_.ids.tolist()
    assert np.array_equal(upd.popularity_, ref.popularity_)
    assert np.array_equal(upd.global_scores_, ref.global_scores_)
    assert np.array_equal(upd.user_activity_, ref.user_activity_)
    users = list(full.user_ids[:40])
    assert np.array_equal(upd.recommend_batch(users, n=10)[0], ref.recommend_batch(users, n=10)[0])


@pytest.mark.parametrize("params", [{"half_life": 3.0}, {"half_life": 1.0, "measure": "events"},
                                    {"half_life": 7.0, "measure": "weight"}])
def test_popularity_decay_update_equals_fit_on_everything(parts, params):
    a, b, full = parts
    upd = ps.MostPopular(**params).fit(a)
    # the batch in three pieces, in time order: the reference time moves at every step
    ts = b.timestamps
    edges = np.quantile(ts, [0.0, 0.3, 0.6, 1.0])
    for lo, hi in zip(edges[:-1], edges[1:]):
        piece = b.subset((ts >= lo) & ((ts < hi) | (hi == edges[-1])))
        upd.update(piece)
    ref = ps.MostPopular(**params).fit(full)
    np.testing.assert_allclose(upd.popularity_, ref.popularity_, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(upd.global_scores_, ref.global_scores_, rtol=2e-5, atol=1e-9)
    assert upd.reference_time_ == pytest.approx(float(full.timestamps.max()))


def test_popularity_late_event_of_a_known_pair(parts):
    """An event older than the pair's latest one changes nothing in a decayed "users" count."""
    a, _, _ = parts
    m = ps.MostPopular(half_life=2.0).fit(a)
    u, i = a.user_ids[a.users[-1]], a.item_ids[a.items[-1]]
    late = ps.Interactions.from_records([(u, i, float(a.timestamps.min()))], time="time")
    before = m.popularity_.copy()
    m.update(late)
    np.testing.assert_allclose(m.popularity_, before, rtol=1e-6)


def test_popularity_segments_update(parts):
    a, b, full = parts
    seg = {u: ("x" if k % 3 else "y") for k, u in enumerate(a.user_ids)}
    upd = ps.MostPopular(segment_shrinkage=5).fit(a, user_segments=seg).update(b)
    ref = ps.MostPopular(segment_shrinkage=5).fit(full, user_segments=seg)  # new users: no segment either way
    np.testing.assert_allclose(upd.segment_scores_, ref.segment_scores_, rtol=1e-6)
    assert np.array_equal(upd.user_segment_, ref.user_segment_)


def test_popularity_decay_needs_timestamps(parts):
    a, _, _ = parts
    m = ps.MostPopular(half_life=3.0).fit(a)
    with pytest.raises(ps.DataError, match="timestamps"):
        m.update(ps.Interactions.from_records([("u", "i")]))


# ---------------------------------------------------------------------- neighbourhoods and EASE


def test_itemknn_history_update_matches_fit_with_the_same_similarities(parts):
    a, b, full = parts
    upd = ps.ItemKNN(k=30).fit(a).update(b)
    ref = ps.ItemKNN(k=30).fit(full)
    assert upd.item_map_.ids.tolist() == ref.item_map_.ids.tolist()
    ref.similarity_ = upd.similarity_  # the item-item part an update keeps
    ref.placed_items_ = upd.placed_items_
    users = list(b.user_ids)
    assert np.array_equal(upd.recommend_batch(users, n=10)[0], ref.recommend_batch(users, n=10)[0])
    # and what the update changed is the users' histories: their new items are filtered as seen
    seen = set(b.item_ids[b.items[b.users == b.user_map.index_of(users[0])]].tolist())
    assert not seen & set(upd.recommend(users[0], n=30)[0].tolist())


def test_ease_history_update_matches_fit_with_the_same_b(parts):
    a, b, full = parts
    upd = ps.EASE(regularization=20.0).fit(a).update(b)
    assert upd.B_.shape == (a.n_items, a.n_items)  # B keeps the fitted items
    ref = ps.EASE(regularization=20.0).fit(full)
    n = upd.B_.shape[0]
    ref.B_ = np.zeros((full.n_items, full.n_items), np.float32)
    ref.B_[:n, :n] = upd.B_
    users = list(b.user_ids)
    got, want = upd.recommend_batch(users, n=10), ref.recommend_batch(users, n=10, mask=upd.placed_items_)
    assert np.array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: ps.ItemKNN(k=20), lambda: ps.EASE(regularization=20.0)])
def test_new_items_wait_for_a_refit(parts, make, tmp_path):
    a, b, full = parts
    m = make().fit(a).update(b)
    new = "zz-new-item"
    assert m.last_update_["unplaced_items"] == 1 and not m.placed_items_[m.item_map_.index_of(new)]
    ids, _ = m.recommend_batch(list(m.user_map_.ids), n=m.n_items)
    assert new not in ids
    hist, _ = m.recommend_for_history([new, str(full.item_ids[5])], n=m.n_items)
    assert new not in hist.tolist() and len(hist) == m.n_items - 2  # every other placed item
    loaded = ps.load(m.save(tmp_path / "m"))
    assert np.array_equal(loaded.placed_items_, m.placed_items_)
    assert new not in loaded.recommend_batch(list(m.user_map_.ids[:20]), n=m.n_items)[0]
    assert make().fit(full).placed_items_ is None  # a refit places every item


def test_userknn_update_gives_new_users_neighbours(parts):
    a, b, _ = parts
    m = ps.UserKNN(k=20).fit(a).update(b)
    row = m.similarity_[m.user_map_.index_of("zz-newbie")]
    assert row.nnz > 0 and row[0, m.user_map_.index_of("zz-newbie")] == 0  # neighbours, never itself
    ids, _ = m.recommend("zz-newbie", n=5)
    assert len(ids) == 5 and str(a.item_ids[3]) not in ids.tolist()


# ----------------------------------------------------------------------------- factor models


def test_als_fold_in_of_a_new_user_is_recalculate_user(parts):
    a, b, _ = parts
    m = ps.ALS(factors=8, iterations=4, random_state=0).fit(a).update(b)
    u = m.user_map_.index_of("zz-newbie")
    row = m.user_items_[u]
    want = m.recalculate_user(m.item_map_.ids[row.indices], weights=row.data)
    np.testing.assert_allclose(m.user_factors_[u], want, rtol=1e-4, atol=1e-5)
    # an existing user with new events too: solved from the whole merged row
    old_user = b.user_ids[b.users[0]]
    v = m.user_map_.index_of(old_user)
    r = m.user_items_[v]
    np.testing.assert_allclose(m.user_factors_[v], m.recalculate_user(m.item_map_.ids[r.indices], weights=r.data),
                               rtol=1e-4, atol=1e-5)
    assert "zz-new-item" in m.recommend_batch(list(m.user_map_.ids), n=m.n_items)[0]
    assert np.abs(m.item_factors_[m.item_map_.index_of("zz-new-item")]).sum() > 0


def test_als_update_keeps_untouched_users(parts):
    a, b, _ = parts
    m = ps.ALS(factors=8, iterations=4, random_state=0).fit(a)
    before = m.user_factors_.copy()
    m.update(b)
    touched = set(b.user_ids.tolist())
    keep = [j for j, u in enumerate(a.user_ids) if u not in touched]
    assert keep and np.array_equal(m.user_factors_[keep], before[keep])


def test_als_items_touched_re_solves_known_items(parts):
    a, b, _ = parts
    m = ps.ALS(factors=8, iterations=3, random_state=0).fit(a)
    known = m.item_map_.lookup(b.item_ids[b.items[:5]])
    default = copy.copy(m).update(b)
    assert np.array_equal(default.item_factors_[known], m.item_factors_[known])  # known items keep theirs
    touched = copy.copy(m).update(b, items="touched")
    assert not np.allclose(touched.item_factors_[known], m.item_factors_[known])
    with pytest.raises(ps.ParameterError, match="items"):
        copy.copy(m).update(b, items="all")


def test_exact_rows_is_the_normal_equations():
    from persona.models.als import _exact_rows

    rng = np.random.default_rng(0)
    fixed = rng.random((30, 4)).astype(np.float32)
    block = sp.random(12, 30, density=0.3, random_state=1, format="csr", dtype=np.float32)
    block.data *= 3
    G = fixed.astype(np.float64).T @ fixed
    got = _exact_rows(block, fixed, G, 0.5, 2.0)
    for r in range(12):
        idx, w = block.indices[block.indptr[r]:block.indptr[r + 1]], block.data[block.indptr[r]:block.indptr[r + 1]]
        if not len(idx):
            assert not got[r].any()
            continue
        Y = fixed[idx].astype(np.float64)
        A = G + 0.5 * np.eye(4) + (Y.T * (2.0 * w)) @ Y
        np.testing.assert_allclose(got[r], np.linalg.solve(A, Y.T @ (1 + 2.0 * w)), rtol=1e-5, atol=1e-6)


def test_bpr_partial_epoch(parts):
    a, b, _ = parts
    m = ps.BPR(factors=8, iterations=10, random_state=0, num_threads=1).fit(a)
    twin = copy.copy(m)
    m.update(b)
    twin.update(b)
    assert np.array_equal(m.user_factors_, twin.user_factors_)  # seeded: the same steps
    assert m.user_factors_.shape[0] == m.n_users and np.all(m.user_factors_[:, -1] == 1.0)
    new = m.user_map_.index_of("zz-newbie")
    assert np.abs(m.user_factors_[new, :-1]).sum() > 0
    assert "zz-new-item" in m.recommend_batch(list(m.user_map_.ids), n=m.n_items)[0]
    with pytest.raises(ps.ParameterError, match="epochs"):
        copy.copy(twin).update(b, epochs=0)


def test_bpr_update_learns_the_new_pairs(parts):
    """More passes rank the new pairs' items higher for their users than fewer passes."""
    a, b, _ = parts
    m = ps.BPR(factors=8, iterations=10, random_state=0, num_threads=1).fit(a)
    pairs = b.matrix.tocoo()
    ranks = {}
    for epochs in (1, 30):
        u = copy.copy(m).update(b, epochs=epochs)
        rows = u.user_map_.lookup(b.user_ids[pairs.row])
        cols = u.item_map_.lookup(b.item_ids[pairs.col])
        scores = u.user_factors_[rows] @ u.item_factors_.T
        ranks[epochs] = float(np.mean((scores > scores[np.arange(len(rows)), cols][:, None]).sum(axis=1)))
    assert ranks[30] < ranks[1]


def test_mf_update_takes_the_latest_rating():
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 600
    df = pd.DataFrame({"u": rng.integers(0, 40, n), "i": rng.integers(0, 20, n), "t": np.arange(n),
                       "r": rng.integers(1, 6, n).astype(float)})
    a = ps.Interactions.from_frame(df[df.t < 500], user="u", item="i", time="t", value="r")
    m = ps.MF(factors=4, iterations=5, random_state=0).fit(a)
    b = ps.Interactions.from_frame(pd.DataFrame({"u": [0, 99], "i": [1, 1], "t": [900, 901], "r": [5.0, 1.0]}),
                                   user="u", item="i", time="t", value="r")
    m.update(b)
    assert m.ratings_[m.user_map_.index_of(0), m.item_map_.index_of(1)] == 5.0
    assert 99 in m.user_map_.ids.tolist() and np.isfinite(m.predict([99], [1])).all()
    with pytest.raises(ps.DataError, match="values"):
        m.update(ps.Interactions.from_frame(df.head(3), user="u", item="i"))


def test_contentknn_update_reads_histories_with_recency():
    inter = ps.Interactions.from_records([("ann", "a", 1.0), ("ann", "b", 2.0), ("bob", "c", 3.0)], time="time")
    text = {"a": "red shoe", "b": "blue shoe", "c": "red hat", "d": "red scarf"}
    m = ps.ContentKNN(text="tfidf", recency=1.0).fit(inter, item_text=text)
    m.update(ps.Interactions.from_records([("ann", "c", 4.0), ("cem", "a", 5.0), ("cem", "e", 6.0)], time="time"))
    full = ps.Interactions.from_records([("ann", "a", 1.0), ("ann", "b", 2.0), ("bob", "c", 3.0), ("ann", "c", 4.0),
                                         ("cem", "a", 5.0), ("cem", "e", 6.0)], time="time")
    ref = ps.ContentKNN(text="tfidf", recency=1.0).fit(full, item_text=text)
    for u in ("ann", "cem"):
        got = m.user_profiles_[m.user_map_.index_of(u)].toarray().ravel()
        want = ref.user_profiles_[ref.user_map_.index_of(u)].toarray().ravel()
        ids, ref_ids = m.item_map_.ids, ref.item_map_.ids
        np.testing.assert_allclose(got, want[ref.item_map_.lookup(ids)], rtol=1e-6)
    assert "e" not in m.recommend("ann", n=5)[0].tolist()  # no content: unplaced


# ------------------------------------------------------------------------------ deep models


@pytest.fixture(scope="module")
def neural(parts):
    pytest.importorskip("torch")
    a, _, _ = parts
    common = dict(factors=8, epochs=1, random_state=0, num_threads=1)
    return {"sasrec": ps.SASRec(max_len=8, blocks=1, **common).fit(a, valid=None),
            "twotower": ps.TwoTower(max_history=8, **common).fit(a, valid=None)}


@pytest.mark.parametrize("name", ["sasrec", "twotower"])
def test_neural_update_reads_the_new_histories(neural, parts, name):
    a, b, full = parts
    m = copy.copy(neural[name]).update(b)
    ref = copy.copy(neural[name]).update_histories(full)
    assert m.user_map_.ids.tolist() == ref.user_map_.ids.tolist()
    assert np.array_equal(m.user_tokens_, ref.user_tokens_)
    assert not m.placed_items_[m.item_map_.index_of("zz-new-item")]
    assert "zz-new-item" not in m.recommend_batch(list(m.user_map_.ids[:30]), n=m.n_items)[0]
    ids, _ = m.recommend("zz-newbie", n=5)
    assert len(ids) == 5
    # a history holding the unplaced item is read without it
    h1, _ = m.recommend_for_history(["zz-new-item", str(full.item_ids[3])], n=5)
    h2, _ = m.recommend_for_history([str(full.item_ids[3])], n=5)
    assert h1.tolist() == h2.tolist()


def test_twotower_update_places_new_items_by_features(parts):
    pytest.importorskip("torch")
    from persona.data import Features

    a, b, _ = parts
    items = sorted(set(a.item_ids.tolist()) | set(b.item_ids.tolist()))
    import pandas as pd

    cat = pd.DataFrame({"item_id": items, "colour": [("red", "blue", "green")[k % 3] for k in range(len(items))]})
    feats = Features.from_frame(cat[cat.item_id.isin(a.item_ids)], a.item_map, "item_id", categorical=["colour"])
    m = ps.TwoTower(factors=8, epochs=1, max_history=8, random_state=0, num_threads=1).fit(a, item_features=feats,
                                                                                           valid=None)
    m.update(b, item_features=cat)
    j = m.item_map_.index_of("zz-new-item")
    assert m.placed_items_ is None and np.abs(m.item_factors_[j]).sum() > 0
    assert "zz-new-item" in m.recommend_batch(list(m.user_map_.ids), n=m.n_items)[0]
    fresh = ps.TwoTower(factors=8, epochs=1, max_history=8, random_state=0).fit(a, valid=None)
    with pytest.raises(ps.UnsupportedError, match="item_features"):
        fresh.update(b, item_features=cat)


def test_neural_update_does_not_import_torch(neural, parts, tmp_path):
    _, b, _ = parts
    paths = {k: str(m.save(tmp_path / k)) for k, m in neural.items()}
    batch = tmp_path / "batch.csv"
    b.to_frame().to_csv(batch, index=False)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import persona as ps
        b = ps.Interactions.from_csv({str(batch)!r}, user="user", item="item", time="timestamp", weight="weight")
        for path in {list(paths.values())!r}:
            m = ps.load(path).update(b)
            ids, _ = m.recommend("zz-newbie", n=3)
            assert len(ids) == 3
        print("numba" in sys.modules)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"  # nor numba: onnxruntime and numpy only


# --------------------------------------------------------------------------------- hybrid


def test_hybrid_update_folds_generators_and_features(parts, tmp_path):
    from persona.ranking._features import PairFeatures
    from persona.ranking.hybrid import _updated_features

    a, b, full = parts
    fa = PairFeatures(["g"], candidates=10, sequence=True).fit(a, None, None)
    ff = PairFeatures(["g"], candidates=10, sequence=True).fit(full, None, None)
    got = _updated_features(fa, UpdateBatch(ps.MostPopular().fit(a), b, "sum"))
    for name in ("item_log_users", "user_log_events", "item_days_since_last", "item_next_total", "user_recent"):
        assert np.array_equal(getattr(got, name), getattr(ff, name)), name
    np.testing.assert_allclose(got.user_days_since_last, ff.user_days_since_last, atol=1e-4)
    for name in ("next_counts", "window_counts"):
        assert np.array_equal(getattr(got, name).keys, getattr(ff, name).keys)
        assert np.array_equal(getattr(got, name).counts, getattr(ff, name).counts)
    # user features: the segment popularity tables are recounted on the merged events
    from persona.data import Features

    users = ps.datasets.synthetic_shop(n_users=240, n_items=60, seed=3).users
    feats = {name: Features.from_frame(users, inter.user_map, "user_id", categorical=["segment", "gender"])
             for name, inter in (("a", a), ("full", full))}
    fa = PairFeatures(["g"], candidates=10).fit(a, None, feats["a"])
    ff = PairFeatures(["g"], candidates=10).fit(full, None, feats["full"])
    got = _updated_features(fa, UpdateBatch(ps.MostPopular().fit(a), b, "sum"))
    assert set(got.user_share) == set(ff.user_share) == {"segment", "gender"}
    new_users = full.user_map.lookup([u for u in full.user_ids if u not in set(a.user_ids)])
    for field in got.user_share:
        ff.user_codes[field][new_users] = -1  # update gives new users no codes (no features for them)
    for field in got.user_share:
        from persona.ranking._features import _segment_shares

        want = _segment_shares(full.matrix, ff.user_codes[field], full.n_items)
        np.testing.assert_allclose(got.user_share[field], want, rtol=1e-6)
        assert np.array_equal(got.user_codes[field], ff.user_codes[field])
    h = ps.Hybrid(generators={"knn": ps.ItemKNN(k=20), "pop": ps.MostPopular()}, candidates=20,
                  ranker="logistic").fit(a)
    h.update(b)
    assert all(g.n_users == h.n_users for g in h.generators_)
    ids, _ = h.recommend("zz-newbie", n=5)
    assert len(ids) == 5
    loaded = ps.load(h.save(tmp_path / "h"))
    assert loaded.recommend("zz-newbie", n=5)[0].tolist() == ids.tolist()


# ---------------------------------------------------------------------- safety and round trips

MAKERS = {
    "popular": lambda: ps.MostPopular(half_life=5.0),
    "itemknn": lambda: ps.ItemKNN(k=20),
    "userknn": lambda: ps.UserKNN(k=20),
    "ease": lambda: ps.EASE(regularization=20.0),
    "als": lambda: ps.ALS(factors=8, iterations=3, random_state=0),
    "bpr": lambda: ps.BPR(factors=8, iterations=5, random_state=0, num_threads=1),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_update_save_load_round_trip(parts, name, tmp_path):
    a, b, _ = parts
    half = b.subset(np.arange(len(b)) < len(b) // 2)
    rest = b.subset(np.arange(len(b)) >= len(b) // 2)
    m = MAKERS[name]().fit(a).update(half)
    loaded = ps.load(m.save(tmp_path / name))
    users = list(m.user_map_.ids[:25])
    assert np.array_equal(loaded.recommend_batch(users, n=8)[0], m.recommend_batch(users, n=8)[0])
    # and the loaded model goes on updating as the live one does
    m.update(rest)
    loaded.update(rest)
    assert np.array_equal(loaded.recommend_batch(users, n=8)[0], m.recommend_batch(users, n=8)[0])


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_failed_update_leaves_the_model_unchanged(parts, name, monkeypatch):
    a, b, _ = parts
    m = MAKERS[name]().fit(a)
    m.set_fallback(ps.MostPopular().fit(a))
    before, users = _state(m), list(a.user_ids[:10])
    recs = m.recommend_batch(users, n=5)[0]

    def boom(self, batch, **kwargs):
        real(self, batch, **kwargs)  # the model's own work runs, then something fails
        raise RuntimeError("disk on fire")

    real = type(m)._update
    monkeypatch.setattr(type(m), "_update", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        m.update(b)
    monkeypatch.undo()
    assert _same_state(m, before)
    assert np.array_equal(m.recommend_batch(users, n=5)[0], recs)
    assert m.fallback_.n_users == a.n_users


def test_failing_fallback_update_leaves_the_model_unchanged(parts):
    a, b, _ = parts
    m = ps.ALS(factors=8, iterations=3, random_state=0).fit(a)
    m.set_fallback(ps.MostPopular(half_life=3.0).fit(a))
    before = _state(m)
    no_time = ps.Interactions.from_records([("ann", str(a.item_ids[0]))])
    with pytest.raises(ps.DataError, match="timestamps"):
        m.update(no_time)
    assert _same_state(m, before) and m.n_users == a.n_users


def test_bad_input(parts):
    a, _, _ = parts
    m = ps.ItemKNN(k=10).fit(a)
    before = _state(m)
    with pytest.raises(ps.DataError, match="Interactions"):
        m.update([("u", "i")])
    with pytest.raises(ps.DataError, match="aggregate"):
        m.update(ps.Interactions.from_records([("u", "i")], aggregate="max"))
    with pytest.raises(ps.DataError, match="ids"):
        m.update(ps.Interactions.from_records([(1, 2)]))  # integer ids for a model of string ids
    with pytest.raises(ps.DataError, match="negative"):
        m.update(_negative_batch())
    with pytest.raises(ps.ParameterError, match="epochs"):
        m.update(ps.Interactions.from_records([("u", "i")]), epochs=3)  # a BPR option, not ItemKNN's
    with pytest.raises(ps.NotFittedError):
        ps.ALS().update(ps.Interactions.from_records([("u", "i")]))
    assert _same_state(m, before)


def _negative_batch():
    return ps.Interactions.from_records([{"user": "u", "item": "i", "w": -1.0}], weight="w", allow_negative=True)


def test_empty_batch_changes_nothing(parts):
    a, _, _ = parts
    m = ps.ALS(factors=8, iterations=3, random_state=0).fit(a)
    factors, maps = m.user_factors_, m.user_map_
    assert m.update(a.subset(np.zeros(len(a), dtype=bool))) is m
    assert m.user_factors_ is factors and m.user_map_ is maps


def test_update_returns_self_and_reports(parts):
    a, b, _ = parts
    m = ps.ItemKNN(k=10).fit(a)
    assert m.update(b) is m
    r = m.last_update_
    assert r["events"] == len(b) and r["new_users"] == len(set(b.user_ids) - set(a.user_ids))
    assert r["new_items"] == 1 and r["unplaced_items"] == 1


def test_fallback_is_updated(parts):
    a, b, _ = parts
    m = ps.ItemKNN(k=10).fit(a).set_fallback(ps.MostPopular().fit(a))
    m.update(b)
    assert m.fallback_.n_users == m.n_users and m.fallback_.n_items == m.n_items


# ------------------------------------------------------------- crafted artifacts (what update added)


def _crafted(model, tmp_path, edit):
    from test_artifact_attacks import edit_array, edit_manifest  # the attack tests' re-signing helpers

    path = model.save(tmp_path / "crafted")
    edit(path, edit_array, edit_manifest)
    return path


@pytest.mark.parametrize("case", ["placed-short", "placed-int", "aggregate", "segment-counts", "last-seen-shape",
                                  "reference-time", "ease-b-short-all-placed", "mf-ratings-source"])
def test_crafted_update_state_is_refused(parts, tmp_path, case):
    a, b, _ = parts
    seg = {u: ("x" if k % 2 else "y") for k, u in enumerate(a.user_ids)}
    pop = ps.MostPopular(half_life=3.0).fit(a, user_segments=seg).update(b)
    knn = ps.ItemKNN(k=10).fit(a).update(b)
    edits = {
        "placed-short": (knn, lambda p, ea, em: ea(p, "placed_items", lambda x: x[:-1])),
        "placed-int": (knn, lambda p, ea, em: ea(p, "placed_items", lambda x: x.astype(np.int64) * 7)),
        "aggregate": (knn, lambda p, ea, em: em(p, lambda m: m["meta"].update(aggregate="mean"))),
        "segment-counts": (pop, lambda p, ea, em: ea(p, "segment_counts", lambda x: x[:, :-2])),
        "last-seen-shape": (pop, lambda p, ea, em: ea(p, "last_seen.shape", lambda x: x + 3)),
        "reference-time": (pop, lambda p, ea, em: em(p, lambda m: m["meta"]["state"].update(reference_time="soon"))),
        "ease-b-short-all-placed": (ps.EASE(regularization=20.0).fit(a).update(b),
                                    lambda p, ea, em: ea(p, "placed_items", lambda x: np.ones_like(x))),
        "mf-ratings-source": (ps.MF(factors=4, iterations=2, random_state=0).fit(a),
                              lambda p, ea, em: em(p, lambda m: m["meta"]["state"].update(ratings="guess"))),
    }
    model, edit = edits[case]
    path = _crafted(model, tmp_path, edit)
    with pytest.raises(ps.ArtifactError):
        ps.load(path)
