"""Re-ranking (persona.ranking): MMR and Calibrated against slow references, Rules, Reranked's contract.

The references below are the papers' definitions written as plain loops (one row, one candidate at
a time, the KL computed from scratch for every tentative list); the vectorised re-rankers must pick
the same items.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from contract import RecommenderContract

import persona as ps
from persona.io.artifact import _manifest_digest
from persona.ranking import MMR, Boost, Calibrated, Pin, Pipeline, Reranked, Rules


# ---------------------------------------------------------------------------------------------- slow references
def _relevance(scores):
    if not scores:
        return []
    lo, hi = min(scores), max(scores)
    return [(s - lo) / (hi - lo) if hi > lo else 1.0 for s in scores]


def mmr_reference(vectors, idx, scores, n, lam):
    """Greedy MMR for one row, as Carbonell & Goldstein define it (cosine similarity)."""
    cols = [j for j in range(len(idx)) if idx[j] >= 0]
    rel = dict(zip(cols, _relevance([float(scores[j]) for j in cols])))

    def cos(a, b):
        va, vb = vectors[a].astype(np.float64), vectors[b].astype(np.float64)
        na, nb = np.linalg.norm(va), np.linalg.norm(vb)
        return 0.0 if na == 0 or nb == 0 else float(va @ vb / (na * nb))

    picked = []
    while len(picked) < min(n, len(cols)):
        best, best_obj = None, -np.inf
        for j in cols:
            if j in picked:
                continue
            pen = max(cos(idx[j], idx[q]) for q in picked) if picked else 0.0
            obj = (1 - lam) * rel[j] - lam * pen
            if obj > best_obj:
                best, best_obj = j, obj
        picked.append(best)
    return [int(idx[j]) for j in picked]


def calibrated_reference(buckets, n_buckets, history, idx, scores, n, w, alpha):
    """Steck's greedy calibration for one row: the KL of every tentative list computed from scratch."""
    p = np.bincount(buckets[np.asarray(history, dtype=int)], minlength=n_buckets).astype(float)
    p = p / p.sum() if p.sum() else p
    cols = [j for j in range(len(idx)) if idx[j] >= 0]
    rel = dict(zip(cols, _relevance([float(scores[j]) for j in cols])))

    def objective(lst):
        q = np.bincount(buckets[[idx[j] for j in lst]], minlength=n_buckets) / len(lst)
        qs = (1 - alpha) * q + alpha * p
        kl = sum(p[g] * np.log(p[g] / qs[g]) for g in range(n_buckets) if p[g] > 0)
        return (1 - w) * sum(rel[j] for j in lst) - w * kl

    picked = []
    while len(picked) < min(n, len(cols)):
        best, best_obj = None, -np.inf
        for j in cols:
            if j not in picked and objective(picked + [j]) > best_obj + 1e-12:
                best, best_obj = j, objective(picked + [j])
        picked.append(best)
    return [int(idx[j]) for j in picked]


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=400, n_items=120, seed=3)


@pytest.fixture(scope="module")
def ease(shop):
    return ps.EASE().fit(shop.interactions)


@pytest.fixture(scope="module")
def als(shop):
    return ps.ALS(factors=16, iterations=5, random_state=0).fit(shop.interactions)


def _candidates(rng, m, c, n_items, pad_rows=()):
    """Random candidates (distinct per row, best first) with some rows padded."""
    idx = np.stack([rng.choice(n_items, size=c, replace=False) for _ in range(m)]).astype(np.int64)
    scores = -np.sort(-rng.normal(size=(m, c)).astype(np.float32), axis=1)
    for r, keep in pad_rows:
        idx[r, keep:] = -1
        scores[r, keep:] = -np.inf
    return idx, scores


# ---------------------------------------------------------------------------------------------- MMR
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.7, 1.0])
def test_mmr_matches_the_reference_on_features(ease, lam):
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(ease.n_items, 6)).astype(np.float32)
    feats[5] = 0.0  # an item without features: similarity 0 to everything
    mmr = MMR(diversity=lam, similarity=feats).fit(ease)
    idx, scores = _candidates(rng, 12, 15, ease.n_items, pad_rows=[(2, 4), (5, 0), (7, 1)])
    idx[0, 3] = 5
    out, vals = mmr.rerank([np.zeros(0, np.int64)] * 12, idx, scores, 6)
    assert out.shape == vals.shape == (12, 6)
    for r in range(12):
        want = mmr_reference(feats, idx[r], scores[r], 6, lam)
        assert out[r][out[r] >= 0].tolist() == want, r
        assert (out[r] >= 0).sum() == min(6, (idx[r] >= 0).sum())
        v = vals[r][out[r] >= 0]
        assert np.all(np.diff(v) <= 0) and np.all(vals[r][out[r] < 0] == -np.inf)


def test_mmr_matches_the_reference_on_factors_and_cooccurrence(als):
    rng = np.random.default_rng(2)
    idx, scores = _candidates(rng, 10, 12, als.n_items, pad_rows=[(3, 5)])
    hist = [np.zeros(0, np.int64)] * 10
    out = MMR(diversity=0.5).fit(als).rerank(hist, idx, scores, 5)[0]  # auto: item_factors_
    for r in range(10):
        assert out[r][out[r] >= 0].tolist() == mmr_reference(als.item_factors_, idx[r], scores[r], 5, 0.5)
    cols = sp.csr_matrix(als.user_items_.T)
    cols.data[:] = 1.0
    out = MMR(diversity=0.5, similarity="cooccurrence").fit(als).rerank(hist, idx, scores, 5)[0]
    dense_cols = cols.toarray()
    for r in range(10):
        assert out[r][out[r] >= 0].tolist() == mmr_reference(dense_cols, idx[r], scores[r], 5, 0.5)


def test_mmr_zero_diversity_keeps_the_models_order(ease, shop):
    users = ease.user_map_.ids[:20]
    plain = ease.recommend_batch(users, n=10)[0]
    same = Reranked(ease, MMR(diversity=0.0), candidates=50).recommend_batch(users, n=10)[0]
    np.testing.assert_array_equal(plain, same)


def test_mmr_raises_diversity(ease, shop):
    cats = shop.item_categories(ease.item_map_)
    feats = np.eye(cats.max() + 1, dtype=np.float32)[cats]  # one-hot category vectors
    test = shop.interactions
    base = ps.evaluate(ease, test, k=10, metrics=("diversity",), item_categories=cats, filter_seen=False)
    div = ps.evaluate(Reranked(ease, MMR(diversity=0.6, similarity=feats)), test, k=10, metrics=("diversity",),
                      item_categories=cats, filter_seen=False)
    assert div["diversity@10"] > base["diversity@10"] + 0.05


# ---------------------------------------------------------------------------------------------- Calibrated
@pytest.mark.parametrize("w", [0.0, 0.5, 0.9, 1.0])
def test_calibrated_matches_the_reference(ease, shop, w):
    rng = np.random.default_rng(4)
    cats = shop.item_categories(ease.item_map_)
    cats[:3] = -1  # unknown categories form their own bucket
    cal = Calibrated(cats, weight=w).fit(ease)
    buckets = np.where(cats >= 0, cats, cats.max() + 1)
    idx, scores = _candidates(rng, 10, 14, ease.n_items, pad_rows=[(1, 3), (4, 0)])
    idx[0, :2] = [0, 1]
    hists = [rng.choice(ease.n_items, size=int(rng.integers(0, 9)), replace=False) for _ in range(10)]
    hists[2] = np.zeros(0, np.int64)  # no history: the ranker's order
    out, vals = cal.rerank(hists, idx, scores, 6)
    for r in range(10):
        want = calibrated_reference(buckets, cats.max() + 2, hists[r], idx[r], scores[r], 6, w, 0.01)
        assert out[r][out[r] >= 0].tolist() == want, r
        assert np.all(np.diff(vals[r][out[r] >= 0]) <= 0)
    np.testing.assert_array_equal(out[2][out[2] >= 0], idx[2][:6])


def test_calibration_kl_falls_as_the_weight_rises(ease, shop):
    cats = shop.item_categories(ease.item_map_)
    users = np.arange(ease.n_users)
    hists = [ease.user_items_[u].indices for u in users]
    kls = []
    for w in (0.0, 0.25, 0.5, 0.75, 0.9):
        r = Reranked(ease, Calibrated(cats, weight=w), candidates=60)
        idx, _ = r.recommend_indices(users, 10)
        kls.append(float(r.reranker_.kl(hists, idx).mean()))
    assert all(b <= a + 1e-9 for a, b in zip(kls, kls[1:])), kls
    assert kls[-1] < 0.6 * kls[0], kls


def test_calibrated_kl_by_hand(ease):
    cats = np.zeros(ease.n_items, dtype=np.int64)
    cats[1::2] = 1
    cal = Calibrated(cats, alpha=0.01).fit(ease)
    # history half category 0, half 1; list all category 0: q~ = (0.995, 0.005)
    kl = cal.kl([np.array([0, 1])], np.array([[0, 2, -1]]))[0]
    want = 0.5 * np.log(0.5 / 0.995) + 0.5 * np.log(0.5 / 0.005)
    assert kl == pytest.approx(want)


def test_calibrated_accepts_a_dict_of_labels(ease, shop):
    codes = shop.item_categories(ease.item_map_)
    names = {i: shop.category_names[c] for i, c in zip(ease.item_map_.ids, codes)}
    by_code = Reranked(ease, Calibrated(codes, weight=0.8)).recommend_batch(ease.user_map_.ids[:10], n=8)[0]
    by_name = Reranked(ease, Calibrated(names, weight=0.8)).recommend_batch(ease.user_map_.ids[:10], n=8)[0]
    np.testing.assert_array_equal(by_code, by_name)


# ---------------------------------------------------------------------------------------------- Rules
class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def _low_item(model, user, filter_seen=True):
    """An item the model ranks low for ``user`` (so it is not in the top 10 by itself)."""
    ids, _ = model.recommend(user, n=model.n_items, filter_seen=filter_seen)
    return ids[-3]


def test_pins_hold_their_position_within_their_dates_only(ease):
    user = ease.user_map_.ids[0]
    item = _low_item(ease, user)
    clock = Clock("2024-01-10T00:00:00")
    r = Reranked(ease, Rules(pins=[Pin(item, 2, start="2024-01-01", end="2024-02-01")], clock=clock), candidates=20)
    got = r.recommend(user, n=6)[0]
    assert got[2] == item and len(got) == 6
    plain = ease.recommend(user, n=6)[0]
    np.testing.assert_array_equal(np.delete(got, 2), plain[:5])  # the rest keep the model's order
    for outside in ("2023-12-31T23:59:59", "2024-02-01T00:00:00", "2025-01-01"):  # end is exclusive
        clock.now = outside
        got = r.recommend(user, n=6)[0]
        assert item not in got
        np.testing.assert_array_equal(got, plain)


def test_pins_in_order_and_beyond_the_list(ease):
    user = ease.user_map_.ids[1]
    a, b = ease.recommend(user, n=ease.n_items)[0][[-2, -4]]
    r = Reranked(ease, Rules(pins=[Pin(a, 0), Pin(b, 0), Pin(ease.item_map_.ids[0], 50)]))
    got = r.recommend(user, n=5, filter_seen=True)[0]
    assert got[0] == a and got[1] == b and len(got) == 5  # two pins at one position: the first given wins


def test_a_pin_the_filters_exclude_is_not_forced_in(ease):
    user = ease.user_map_.ids[2]
    seen = ease.item_map_.ids[ease.user_items_[2].indices[0]]
    item = _low_item(ease, user)
    r = Reranked(ease, Rules(pins=[Pin(item, 0), Pin(seen, 1)]), candidates=20)
    got = r.recommend(user, n=5)[0]
    assert got[0] == item and seen not in got and len(got) == 5  # seen items stay out with filter_seen
    assert r.recommend(user, n=5, filter_seen=False)[0][1] == seen
    mask = np.ones(ease.n_items, dtype=bool)
    mask[ease.item_map_.index_of(item)] = False
    for kwargs in ({"exclude": [item]}, {"mask": mask}, {"items": list(ease.recommend(user, n=8)[0])}):
        got = r.recommend(user, n=5, **kwargs)[0]
        assert item not in got and len(got) == 5, kwargs
    # per-row filters in a batch, the history path and the index path (evaluate's) alike
    ids = r.recommend_batch([user, user], n=5, exclude=[[item], []])[0]
    assert item not in ids[0] and ids[1][0] == item
    hist = list(ease.item_map_.ids[ease.user_items_[2].indices])
    assert r.recommend_for_history(hist, n=5)[0][0] == item
    assert item not in r.recommend_for_history(hist, n=5, exclude=[item])[0]
    excl = sp.csr_matrix((np.ones(1, np.float32), ([0], [ease.item_map_.index_of(item)])), shape=(1, ease.n_items))
    idx, _ = r.recommend_indices([2], 5, exclude=excl)
    assert ease.item_map_.index_of(item) not in idx[0] and (idx[0] >= 0).sum() == 5
    assert r.recommend_indices([2], 5)[0][0, 0] == ease.item_map_.index_of(item)


def test_boosts_lift_bury_and_expire(ease, shop):
    user = ease.user_map_.ids[3]
    plain = ease.recommend(user, n=20)[0]
    lifted = Reranked(ease, Rules(boosts=[Boost(1.0, items=[plain[-1]])]), candidates=20).recommend(user, n=5)[0]
    assert lifted[0] == plain[-1]
    np.testing.assert_array_equal(lifted[1:], plain[:4])
    buried = Reranked(ease, Rules(boosts=[Boost(-1.0, items=[plain[0]])]), candidates=20).recommend(user, n=5)[0]
    np.testing.assert_array_equal(buried, plain[1:6])
    small = Reranked(ease, Rules(boosts=[Boost(0.12, items=[plain[10]])]), candidates=20).recommend(user, n=20)[0]
    assert list(small).index(plain[10]) == 8  # 0.12 of 20 candidates: two places up (2.4)
    tie = Reranked(ease, Rules(boosts=[Boost(0.1, items=[plain[10]])]), candidates=20).recommend(user, n=20)[0]
    assert list(tie).index(plain[10]) == 9  # exactly two places: the tie keeps the incoming order
    cats = shop.item_categories(ease.item_map_)
    cat = cats[ease.item_map_.index_of(plain[-1])]
    clock = Clock("2024-06-01")
    rules = Rules(boosts=[Boost(2.0, category=int(cat), start="2024-05-01", end="2024-07-01")], item_categories=cats,
                  clock=clock)
    r = Reranked(ease, rules, candidates=20)
    got = r.recommend(user, n=5)[0]
    in_cat = cats[ease.item_map_.lookup(got)] == cat
    n_cat = int((cats[ease.item_map_.lookup(plain)] == cat).sum())
    assert in_cat[: min(5, n_cat)].all()
    clock.now = "2024-08-01"
    np.testing.assert_array_equal(r.recommend(user, n=5)[0], plain[:5])


def test_rules_scores_follow_the_order(ease):
    user = ease.user_map_.ids[4]
    item = _low_item(ease, user)
    _, scores = Reranked(ease, Rules(pins=[Pin(item, 1)], boosts=[Boost(0.3, items=[item])])).recommend(user, n=8)
    assert np.all(np.diff(scores) <= 0)


def test_pipeline_diversifies_then_pins(ease):
    users = ease.user_map_.ids[:30]
    item = ease.item_map_.ids[7]
    steps = [MMR(diversity=0.4), Rules(pins=[Pin(item, 0)])]
    ids = Reranked(ease, steps, candidates=40).recommend_batch(users, n=6, filter_seen=False)[0]
    assert (ids[:, 0] == item).all()
    mmr_only = Reranked(ease, MMR(diversity=0.4), candidates=40).recommend_batch(users, n=6, filter_seen=False)[0]
    for row, mm in zip(ids, mmr_only):
        np.testing.assert_array_equal(row[1:], [x for x in mm if x != item][:5])


# ---------------------------------------------------------------------------------------------- Reranked
def test_exactly_n_and_batch_equals_singles(ease):
    r = Reranked(ease, [MMR(0.3), Rules(pins=[Pin(ease.item_map_.ids[9], 1)])], candidates=10)
    users = list(ease.user_map_.ids[:8])
    allow = list(ease.item_map_.ids[:4])
    ids, scores = r.recommend_batch(users, n=6, items=allow, filter_seen=False)
    assert (ids[:, :4] != "").all() and (ids[:, 4:] == "").all() and (scores[:, 4:] == -np.inf).all()
    big = r.recommend_batch(users, n=25)[0]  # more than `candidates`: the model is asked for n
    for row, u in enumerate(users):
        one = r.recommend(u, n=25)[0]
        np.testing.assert_array_equal(big[row, : len(one)], one)
        assert len(one) == min(25, ease.n_items - ease.user_items_[row].nnz)
    assert len(r.recommend(users[0], n=ease.n_items + 5, filter_seen=False)[0]) == ease.n_items


def test_evaluate_measures_the_reranked_lists(ease, shop):
    train, _, test = ps.split.leave_last_out(shop.interactions)
    model = ps.EASE().fit(train)
    r = Reranked(model, MMR(diversity=0.0))
    a = ps.evaluate(model, test, k=10, metrics=("ndcg", "coverage"))
    b = ps.evaluate(r, test, k=10, metrics=("ndcg", "coverage"))
    assert a["ndcg@10"] == pytest.approx(b["ndcg@10"]) and a["coverage@10"] == b["coverage@10"]
    c = ps.evaluate(Reranked(model, MMR(diversity=0.9)), test, k=10, metrics=("ndcg", "coverage"))
    assert c["coverage@10"] != a["coverage@10"]


def test_unknown_users_go_to_the_wrapped_models_fallback(ease, shop):
    pop = ps.MostPopular().fit(shop.interactions)
    inner = ps.EASE().fit(shop.interactions).set_fallback(pop)
    r = Reranked(inner, MMR(0.5))
    ids = r.recommend_batch([ease.user_map_.ids[0], "stranger"], n=4)[0]
    np.testing.assert_array_equal(ids[1], pop.top_items(4)[0])
    with pytest.raises(ps.UnknownUserError):
        Reranked(ease, MMR()).recommend("stranger", n=3)


def test_save_load_round_trip(ease, shop, tmp_path):
    rng = np.random.default_rng(0)
    names = [shop.category_names[c] for c in shop.item_categories(ease.item_map_)]
    feats = sp.random(ease.n_items, 30, density=0.2, random_state=1, format="csr", dtype=np.float32)
    steps = [MMR(0.3, similarity=feats), Calibrated(np.array(names, dtype=object), weight=0.4),
             Rules(pins=[Pin(ease.item_map_.ids[3], 2, start="2000-01-01", end="2100-01-01")],
                   boosts=[Boost(0.2, category=names[0]), Boost(-0.5, items=list(ease.item_map_.ids[:5]))],
                   item_categories=np.array(names, dtype=object))]
    model = ps.EASE().fit(shop.interactions).set_fallback(ps.MostPopular().fit(shop.interactions))
    r = Reranked(model, steps, candidates=30)
    users = list(ease.user_map_.ids[:15]) + ["stranger"]
    want = r.recommend_batch(users, n=7)
    hist = list(rng.choice(ease.item_map_.ids, 5))
    want_h = r.recommend_for_history(hist, n=7)
    path = r.save(tmp_path / "r.persona")
    for loaded in (ps.load(path), ps.load(path, mmap=True), Reranked.load(path)):
        assert isinstance(loaded, Reranked) and isinstance(loaded.reranker_, Pipeline)
        got = loaded.recommend_batch(users, n=7)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(loaded.recommend_for_history(hist, n=7)[0], want_h[0])
    # a fresh process: ps.load finds Reranked without persona.ranking imported first
    code = ("import sys, persona as ps; m = ps.load(sys.argv[1]); "
            "print(','.join(m.recommend(sys.argv[2], n=7)[0]))")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(users[0])], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out.split(",") == list(want[0][0])


def _resign(path: Path, manifest: dict) -> None:
    manifest.pop("signature", None)
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_a_crafted_reranker_class_is_refused(ease, tmp_path):
    path = Reranked(ease, [MMR(), Rules()]).save(tmp_path / "r.persona")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["meta"]["state"]["reranker"]["meta"]["steps"][0]["class"] = "subprocess.Popen"
    _resign(path, manifest)
    with pytest.raises(ps.ArtifactError, match="re-ranker of class 'subprocess.Popen'"):
        ps.load(path)
    manifest["meta"]["state"]["reranker"]["meta"]["steps"][0]["class"] = "MMR"
    manifest["meta"]["state"]["inner"]["class"] = "Reranked"
    _resign(path, manifest)
    with pytest.raises(ps.ArtifactError):
        ps.load(path)


def test_bad_inputs(ease, shop):
    cats = shop.item_categories(ease.item_map_)
    bad = [
        (lambda: Reranked(ease, MMR(diversity=1.5)), ps.ParameterError, "diversity: expected a number"),
        (lambda: Reranked(ease, MMR(similarity="euclid")), ps.ParameterError, "similarity: expected 'auto'"),
        (lambda: Reranked(ease, MMR(similarity="factors")), ps.ParameterError, "needs a model with item_factors_"),
        (lambda: Reranked(ease, MMR(similarity=np.ones((3, 2)))), ps.ParameterError, "one row per model item"),
        (lambda: Reranked(ease, MMR(similarity=np.full((ease.n_items, 2), np.nan))), ps.ParameterError, "finite"),
        (lambda: Reranked(ease, Calibrated(cats, weight=2)), ps.ParameterError, "weight: expected a number"),
        (lambda: Reranked(ease, Calibrated(cats[:5])), ps.DataError, "one category per model item"),
        (lambda: Reranked(ease, Calibrated()), ps.ParameterError, "expected item_categories"),
        (lambda: Reranked(ease, Calibrated(np.array([1.5] * ease.n_items))), ps.DataError, "int or str categories"),
        (lambda: Reranked(ease, Calibrated(np.array([1, "a"] * (ease.n_items // 2), dtype=object))), ps.DataError,
         "all categories to be ints or all strings"),
        (lambda: Reranked(ease, None), ps.ParameterError, "reranker: expected a persona re-ranker"),
        (lambda: Reranked(ease, "mmr"), ps.ParameterError, "reranker: expected a persona re-ranker"),
        (lambda: Reranked(ease, MMR(), candidates=0), ps.ParameterError, "candidates: expected an integer"),
        (lambda: Reranked(ease, MMR(), candidate=10), ps.ParameterError, "candidates"),
        (lambda: Reranked(Reranked(ease, MMR()), MMR()), ps.ParameterError, "chain re-rankers in one list"),
        (lambda: Reranked(ease, []), ps.ParameterError, "non-empty list"),
        (lambda: Pin("i1", -1), ps.ParameterError, "position: expected an integer"),
        (lambda: Pin("i1", 0, start="2024-02-01", end="2024-01-01"), ps.ParameterError, "start before end"),
        (lambda: Pin("i1", 0, start="next tuesday"), ps.ParameterError, "cannot parse"),
        (lambda: Boost(0.1, items=["a"], category=1), ps.ParameterError, "items=.* or category=.*, got both"),
        (lambda: Boost(float("nan"), items=["a"]), ps.ParameterError, "weight"),
        (lambda: Reranked(ease, Rules(boosts=[Boost(1, category=2)])), ps.ParameterError, "needs item_categories"),
        (lambda: Reranked(ease, Rules(pins=Pin("i1", 0))), ps.ParameterError, "wrap one rule in a list"),
        (lambda: Reranked(ease, Rules(pins=["i1"])), ps.ParameterError, "expected ps.ranking.Pin"),
        (lambda: Reranked(ease, Rules(clock="now")), ps.ParameterError, "clock: expected a callable"),
        (lambda: MMR().rerank([], np.zeros((1, 2), np.int64), np.zeros((1, 2), np.float32), 2), ps.NotFittedError,
         "not fitted"),
        (lambda: MMR().fit(ps.EASE()), ps.NotFittedError, "expected a fitted persona model"),
        (lambda: MMR().fit(ease).rerank([[]], np.zeros((1, 2), np.int64), np.zeros((1, 3)), 2), ps.ParameterError,
         "cand_scores of the shape"),
        (lambda: MMR().fit(ease).rerank([], np.zeros((1, 2), np.int64), np.zeros((1, 2)), 2), ps.ParameterError,
         "one history"),
        (lambda: MMR().fit(ease).rerank([[]], np.zeros((1, 2)), np.zeros((1, 2)), 2), ps.ParameterError,
         "2-D int array"),
        (lambda: MMR().fit(ease).rerank([[]], np.full((1, 2), 10**6), np.zeros((1, 2)), 2), ps.ParameterError,
         "outside the"),
        (lambda: Reranked(ps.EASE(), MMR()).recommend("u", n=3), ps.NotFittedError, "not fitted"),
        (lambda: Reranked(ease, MMR()).recommend(ease.user_map_.ids[0], n=0), ps.ParameterError, "n: expected"),
    ]
    for make, error, match in bad:
        with pytest.raises(error, match=match):
            make()
    with pytest.warns(UserWarning, match="unknown to the model"):
        r = Reranked(ease, Rules(pins=[Pin("no-such-item", 0)]))
    np.testing.assert_array_equal(r.recommend(ease.user_map_.ids[0], n=4)[0], ease.recommend(ease.user_map_.ids[0], n=4)[0])


def test_reranker_is_fitted_on_a_copy(ease, als):
    mmr = MMR(diversity=0.4)
    a, b = Reranked(ease, mmr), Reranked(als, mmr)
    assert a.reranker_ is not b.reranker_ and not hasattr(mmr, "vectors_")
    assert sp.issparse(a.reranker_.vectors_) and not sp.issparse(b.reranker_.vectors_)


class TestRerankedContract(RecommenderContract):
    def make_model(self):
        return Reranked(ps.EASE(), MMR(diversity=0.3), candidates=20)


class TestRulesPipelineContract(RecommenderContract):
    def make_model(self):
        return Reranked(ps.ItemKNN(k=20), [Calibrated({"i001": "a", "i002": "b"}, weight=0.5),
                                           Rules(boosts=[Boost(0.2, items=["i003"])])], candidates=15)


def test_reranked_update_folds_new_events_into_the_wrapped_model():
    shop = ps.datasets.synthetic_shop(n_users=300, n_items=60, seed=4)
    inter = shop.interactions
    model = ps.EASE(regularization=50).fit(inter)
    wrapped = ps.ranking.Reranked(model, ps.ranking.MMR(diversity=0.3))
    before = wrapped.recommend(inter.user_ids[0], n=5)[0].tolist()
    new = ps.Interactions.from_records([("newcomer", inter.item_ids[0]), ("newcomer", inter.item_ids[1]),
                                        (inter.user_ids[0], "brand-new-item")])
    assert wrapped.update(new) is wrapped
    assert wrapped.model is not model and model.n_users == inter.n_users  # the original is untouched
    items = wrapped.recommend("newcomer", n=5, filter_seen=True)[0].tolist()
    assert len(items) == 5 and not {inter.item_ids[0], inter.item_ids[1]} & set(items)
    assert wrapped.reranker_.n_items_ == len(wrapped.model.item_map_)  # refitted for the new item
    assert wrapped.last_update_["new_users"] == 1 and wrapped.last_update_["new_items"] == 1
    after = wrapped.recommend(inter.user_ids[0], n=5, filter_seen=False)[0].tolist()
    assert len(after) == 5 and "brand-new-item" not in after  # EASE cannot place it before a refit
    assert len(before) == 5
