"""Experiments (issue 15, part 3): sticky assignment, exposure logging, SRM, analysis, stopping rules,
interleaving and hot swap of a variant.

The statistics are checked in simulation on per-user data (fast): A/A tests keep their false
positive rate near (fixed horizon) or under (sequential, peeking at every look) the level, naive
peeking at a fixed-horizon test does not, a real difference is found, the power calculation
delivers its power, and interleaving prefers the better ranker. The service tests go end to end
through an event store.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import persona as ps
from persona.analytics import (analyze_experiment, compare_variants, interleaving_result, sample_size,
                               srm_test)
from persona.serving.experiments import assign_bucket, team_draft
from persona.store import EventStore

T0 = 1_700_000_000.0


def users_frame(rng, n_per_variant: int, ctr=(0.05, 0.05), variants=("A", "B")) -> pd.DataFrame:
    """Per-user outcomes: impressions 1 + Poisson(5), each user's own CTR ~ Beta around the variant's."""
    parts = []
    for v, rate in zip(variants, ctr):
        imp = 1 + rng.poisson(5, n_per_variant)
        p = rng.beta(20 * rate / (1 - rate), 20, n_per_variant)
        parts.append(pd.DataFrame({"variant": v, "impressions": imp, "clicks": rng.binomial(imp, p)}))
    df = pd.concat(parts, ignore_index=True)
    return df.assign(user=np.arange(len(df)), carts=0, purchases=0, revenue=0.0)


# ------------------------------------------------------------------------------ assignment
def test_assignment_is_sticky_across_processes_and_follows_the_split():
    shop = ps.datasets.synthetic_shop(n_users=50, n_items=20, seed=0)
    svc = ps.serving.RecommenderService(ps.MostPopular().fit(shop.interactions))
    exp = svc.experiment("home", {"A": svc.model, "B": svc.model}, split=(0.3, 0.7), salt="exp-1")
    users = [f"u{k}" for k in range(20_000)]
    got = [exp.assign(u) for u in users]
    assert abs(got.count("A") / len(got) - 0.3) < 0.015
    assert exp.assign(7) == exp.assign("7") == exp.assign(np.int64(7))
    # another interpreter with another hash seed assigns the same way (no Python hash())
    code = ("from persona.serving.experiments import assign_bucket; import sys; "
            "print(''.join('A' if assign_bucket('exp-1', f'u{k}') < 0.3 else 'B' for k in range(300)))")
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert other.stdout.strip() == "".join(got[:300])
    # another salt reshuffles: about half the users change variant in a 50/50 split
    a = [assign_bucket("exp-1", u) < 0.5 for u in users[:5000]]
    b = [assign_bucket("exp-2", u) < 0.5 for u in users[:5000]]
    assert 0.45 < np.mean(np.array(a) != np.array(b)) < 0.55
    assert srm_test({"A": got.count("A"), "B": got.count("B")}, (0.3, 0.7)) > 0.001


def test_srm_test():
    assert srm_test({"A": 5000, "B": 5000}) == pytest.approx(1.0)
    assert srm_test({"A": 5200, "B": 4800}) < 0.001
    assert srm_test({"A": 3000, "B": 7000}, {"A": 0.3, "B": 0.7}) == pytest.approx(1.0)
    with pytest.raises(ps.ParameterError, match="no share for variant"):
        srm_test({"A": 1, "C": 2}, {"A": 0.5, "B": 0.5})


# ------------------------------------------------------------------------------ stopping rules in simulation
def test_aa_fixed_horizon_false_positive_rate_is_near_the_level():
    rng = np.random.default_rng(1)
    sims = 400
    fp = sum(compare_variants(users_frame(rng, 1500), "ctr", method="fixed").loc[0, "p_value"] < 0.05
             for _ in range(sims))
    assert 0.025 <= fp / sims <= 0.08, fp / sims


def test_aa_peeking_sequential_stays_under_the_level_and_naive_peeking_does_not():
    """Ten looks per A/A experiment: stop at the first interval that excludes 0."""
    rng = np.random.default_rng(2)
    sims, looks, per_look = 150, 10, 300
    seq_fp = naive_fp = 0
    for _ in range(sims):
        full = users_frame(rng, looks * per_look)
        a, b = full[full["variant"] == "A"], full[full["variant"] == "B"]
        seq = naive = False
        for k in range(1, looks + 1):
            part = pd.concat([a.iloc[:k * per_look], b.iloc[:k * per_look]])
            s = compare_variants(part, "ctr", method="sequential", horizon=2 * looks * per_look).loc[0]
            f = compare_variants(part, "ctr", method="fixed").loc[0]
            seq = seq or s["diff_low"] > 0 or s["diff_high"] < 0
            naive = naive or f["p_value"] < 0.05
        seq_fp += seq
        naive_fp += naive
    assert seq_fp / sims <= 0.05, seq_fp / sims
    assert naive_fp / sims >= 0.09, naive_fp / sims  # the inflation the sequential rule prevents


def test_a_real_difference_is_found_by_both_rules():
    rng = np.random.default_rng(3)
    users = users_frame(rng, 8000, ctr=(0.05, 0.06))
    for method in ("fixed", "sequential"):
        row = compare_variants(users, "ctr", method=method, control="A").loc[0]
        assert row["decision"] == "B better", (method, row.to_dict())
        assert row["diff_low"] < 0.01 < row["diff_high"] and row["relative_diff"] == pytest.approx(0.2, abs=0.08)
    # the sequential interval is wider (the price of peeking) but still valid
    fixed = compare_variants(users, "ctr", method="fixed").loc[0]
    seq = compare_variants(users, "ctr", method="sequential").loc[0]
    assert seq["diff_high"] - seq["diff_low"] > fixed["diff_high"] - fixed["diff_low"]


def test_fixed_horizon_waits_for_the_planned_sample():
    rng = np.random.default_rng(4)
    users = users_frame(rng, 3000, ctr=(0.05, 0.08))
    assert compare_variants(users, "ctr", method="fixed", horizon=5000).loc[0, "decision"] == "continue"
    assert compare_variants(users, "ctr", method="fixed", horizon=3000).loc[0, "decision"] == "B better"


def test_sample_size_delivers_its_power():
    n = sample_size(0.1, 0.02, alpha=0.05, power=0.8)
    assert 3500 < n < 4000  # the textbook figure for 10% vs 12% is 3,841
    rng = np.random.default_rng(5)
    sims, hits = 200, 0
    for _ in range(sims):  # one impression per unit: the units of the rate
        df = pd.DataFrame({"variant": np.repeat(["A", "B"], n), "user": np.arange(2 * n), "impressions": 1,
                           "clicks": np.r_[rng.random(n) < 0.1, rng.random(n) < 0.12].astype(int)})
        hits += compare_variants(df, "ctr", method="fixed").loc[0, "p_value"] < 0.05
    assert 0.72 <= hits / sims <= 0.88, hits / sims
    assert sample_size(0.05, 0.1, relative=True) == sample_size(0.05, 0.005)
    with pytest.raises(ps.ParameterError, match="outside"):
        sample_size(0.95, 0.1)


def test_compare_variants_bad_input():
    df = users_frame(np.random.default_rng(0), 10)
    with pytest.raises(ps.ParameterError, match="metrics expected"):
        compare_variants(df, "clicks")
    with pytest.raises(ps.ParameterError, match="method expected"):
        compare_variants(df, method="bayes")
    with pytest.raises(ps.ParameterError, match="alpha"):
        compare_variants(df, alpha=1.5)
    with pytest.raises(ps.DataError, match="control variant"):
        compare_variants(df, control="Z")
    with pytest.raises(ps.DataError, match="no column"):
        compare_variants(df.drop(columns=["impressions"]))


# ------------------------------------------------------------------------------ interleaving
def test_team_draft_takes_turns_and_keeps_each_rankers_order():
    rng = random.Random(0)
    for _ in range(200):
        a = rng.sample(range(30), 10)
        b = rng.sample(range(30), 10)
        items, teams = team_draft(a, b, 10, rng)
        assert len(items) == len(set(items)) == 10
        assert abs(teams.count("A") - teams.count("B")) <= 1
        for name, ranking in (("A", a), ("B", b)):
            mine = [i for i, t in zip(items, teams) if t == name]
            assert mine == sorted(mine, key=ranking.index)  # a team's picks keep its own order
    items, teams = team_draft([1, 2], [1, 2], 5, random.Random(1))
    assert items == [1, 2]  # both lists used up


def interleaved_log(rng, n_users: int, better: bool, lists: int = 3):
    """Team-drafted lists of two rankers over 40 items; users click relevant items near the top.
    With ``better``, ranker B puts each user's relevant items higher than A does."""
    imps, events = [], []
    draw = random.Random(int(rng.integers(1 << 30)))
    for u in range(n_users):
        relevant = set(rng.choice(40, 8, replace=False).tolist())
        for r in range(lists):
            base = rng.permutation(40).tolist()
            a = base[:]
            b = sorted(base, key=lambda i: (i not in relevant, base.index(i))) if better else rng.permutation(40).tolist()
            items, teams = team_draft(a, b, 10, draw)
            rid = f"r{u}-{r}"
            for pos, (it, team) in enumerate(zip(items, teams)):
                imps.append((rid, u, it, pos + 1, team))
                if it in relevant and rng.random() < 0.5 / (1 + 0.3 * pos):
                    events.append((f"c-{rid}-{it}", u, it, rid))
    i = pd.DataFrame(imps, columns=["request_id", "user", "item", "position", "team"])
    i["time"] = pd.Timestamp(T0, unit="s", tz="UTC")
    e = pd.DataFrame(events, columns=["event_id", "user", "item", "request_id"])
    return i, e.assign(event="click", time=pd.Timestamp(T0 + 10, unit="s", tz="UTC"), value=np.nan)


def test_interleaving_prefers_the_better_ranker_and_not_an_equal_one():
    rng = np.random.default_rng(6)
    imps, events = interleaved_log(rng, 150, better=True)
    res = interleaving_result(impressions=imps, events=events)
    assert res.preferred == "B" and res.p_value < 0.01 and res.delta > 0.1, str(res)
    per_request = interleaving_result(impressions=imps, events=events, unit="request")
    assert per_request.units > res.units and per_request.preferred == "B"
    fp = 0
    for _ in range(60):  # A/A: equally good rankers
        imps, events = interleaved_log(rng, 40, better=False, lists=1)
        fp += interleaving_result(impressions=imps, events=events).preferred is not None
    assert fp / 60 <= 0.12, fp / 60


# ------------------------------------------------------------------------------ the service, end to end
@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=400, n_items=80, seed=8)


def test_experiment_end_to_end_through_the_store(shop, tmp_path):
    store = EventStore(tmp_path / "events.db")
    inter = shop.interactions
    popular, knn = ps.MostPopular().fit(inter), ps.ItemKNN(k=20).fit(inter)
    svc = ps.serving.RecommenderService(knn, store=store)
    exp = svc.experiment("home", {"A": popular, "B": knn}, split=(0.5, 0.5), salt="exp-e2e")
    rng = np.random.default_rng(9)
    for user in inter.user_ids:
        for _ in range(3):
            rec = svc.recommend(user, n=5, context={"placement": "home"})
            assert rec.variant == exp.assign(user) and rec.placement == "home"
            if rng.random() < (0.08 if rec.variant == "A" else 0.30):  # B's lists are clicked more
                item = rec.items[int(rng.integers(5))]
                svc.track(user, item, "click", properties={"request_id": rec.request_id},
                          event_id=f"click:{rec.request_id}:{item}")
        other = svc.recommend(user, n=3, context={"placement": "pdp"})  # not in the experiment
        assert other.variant is None
    store.flush()
    imp = store.impressions(experiment="exp-e2e")
    assert set(imp["variant"]) == {"A", "B"} and set(imp["placement"]) == {"home"}
    assert imp.groupby("user")["variant"].nunique().max() == 1  # exposure logged, sticky
    res = exp.analyze(metrics=["ctr", "conversion"])
    assert res.users == {"A": int((imp.drop_duplicates("user")["variant"] == "A").sum()),
                         "B": int((imp.drop_duplicates("user")["variant"] == "B").sum())}
    assert res.srm_p > 0.001 and not res.srm
    assert res.decision == {"B": "B better"}, str(res)
    assert "exp-e2e" in str(res) and "ctr" in str(res)
    fixed = analyze_experiment(store, "exp-e2e", method="fixed", control="A")
    assert fixed.table.loc[0, "decision"] == "B better"
    exp.stop()
    assert svc.recommend(inter.user_ids[0], n=3, context={"placement": "home"}).variant is None
    store.close()


def test_srm_is_flagged_when_a_variant_loses_exposures(shop, tmp_path):
    store = EventStore(tmp_path / "events.db")
    svc = ps.serving.RecommenderService(ps.MostPopular().fit(shop.interactions), store=store)
    exp = svc.experiment("home", {"A": svc.model, "B": svc.model}, salt="srm")
    for k in range(2000):
        user = f"v{k}"
        if exp.assign(user) == "B" and k % 5 == 0:
            continue  # a fifth of B's visitors never get logged (a broken redirect, say)
        svc.recommend(user, n=3, context={"placement": "home"})
    store.flush()
    res = exp.analyze()
    assert res.srm and res.srm_p < 0.001 and res.decision == {"B": "check the assignment"}
    assert "sample ratio mismatch" in str(res)
    store.close()


def test_hot_swap_of_a_variant_keeps_every_assignment(shop, tmp_path):
    store = EventStore(tmp_path / "events.db")
    inter = shop.interactions
    svc = ps.serving.RecommenderService(ps.MostPopular().fit(inter), store=store)
    exp = svc.experiment("home", {"A": ps.MostPopular().fit(inter), "B": ps.ItemKNN(k=10).fit(inter)}, salt="swap")
    users = inter.user_ids[:100]
    before = {u: svc.recommend(u, n=5, context={"placement": "home"}) for u in users}
    new_b = ps.ItemKNN(k=40).fit(inter)
    version = exp.swap("B", new_b)
    after = {u: svc.recommend(u, n=5, context={"placement": "home"}) for u in users}
    assert all(after[u].variant == before[u].variant for u in users)
    b_users = [u for u in users if before[u].variant == "B"]
    a_users = [u for u in users if before[u].variant == "A"]
    assert b_users and a_users
    assert all(after[u].model_version == version and not after[u].cached for u in b_users)
    for u in b_users:  # the new model answers B's users (no stale cached answer of the old one)
        assert after[u].items.tolist() == new_b.recommend(u, n=5)[0].tolist()
    assert all(after[u].model_version == before[u].model_version and after[u].cached for u in a_users)
    assert exp.models()["B"] is new_b
    store.flush()
    versions = store.impressions(experiment="swap").groupby("variant")["model_version"].nunique().to_dict()
    assert versions == {"A": 1, "B": 2}
    with pytest.raises(ps.ParameterError, match="no variant 'C'"):
        exp.swap("C", new_b)
    store.close()


def test_interleaving_through_the_service(shop, tmp_path):
    store = EventStore(tmp_path / "events.db")
    inter = shop.interactions
    svc = ps.serving.RecommenderService(ps.MostPopular().fit(inter), store=store)
    exp = svc.experiment("pdp", {"A": ps.MostPopular().fit(inter), "B": ps.ItemKNN(k=20).fit(inter)},
                         salt="il", interleave=True, seed=3)
    knn = exp.models()["B"]
    rng = np.random.default_rng(10)
    for user in inter.user_ids[:200]:
        rec = svc.recommend(user, n=6, context={"placement": "pdp"})
        assert rec.variant == "interleaved" and len(rec.teams) == len(rec.items) == 6
        assert len(set(rec.items.tolist())) == 6
        liked = set(knn.recommend(user, n=3)[0].tolist())
        for item, team in zip(rec.items.tolist(), rec.teams):
            if item in liked and rng.random() < 0.6:
                svc.track(user, item, "click", properties={"request_id": rec.request_id})
    store.flush()
    imp = store.impressions(experiment="il")
    assert set(imp["team"]) == {"A", "B"} and set(imp["variant"]) == {"interleaved"}
    res = exp.analyze()
    assert res.preferred == "B" and res.wins["B"] > res.wins["A"], str(res)
    store.close()


@pytest.mark.parametrize("kwargs,match", [
    (dict(variants={"A": None}), "at least two"),
    (dict(variants=[1, 2]), "expected a dict"),
    (dict(split=(0.5,)), "2 positive shares"),
    (dict(split=(0.7, 0.7)), "summing to 1"),
    (dict(split=(1.0, 0.0)), "2 positive shares"),
    (dict(split="ab"), "2 positive shares|one share per variant"),
    (dict(salt=""), "salt expected"),
    (dict(salt=None), "salt expected"),
    (dict(placement="bad placement"), "placement expected"),
    (dict(variants={"A": "m", "B": "m", "C": "m"}, interleave=True), "two rankers"),
    (dict(variants={"a b": "m", "B": "m"}), "variant name expected"),
    (dict(variants={"A": "not a model", "B": "m"}), "must be a persona Recommender"),
])
def test_bad_experiments_are_refused(shop, kwargs, match):
    model = ps.MostPopular().fit(shop.interactions)
    svc = ps.serving.RecommenderService(model)
    args = {"placement": "home", "variants": {"A": model, "B": model}, "split": None, "salt": "x", **kwargs}
    if isinstance(args["variants"], dict):
        args["variants"] = {k: (model if v == "m" else v) for k, v in args["variants"].items()}
    with pytest.raises(ps.ParameterError, match=match):
        svc.experiment(args.pop("placement"), args.pop("variants"), args.pop("split"), **args)


def test_one_experiment_per_placement(shop):
    model = ps.MostPopular().fit(shop.interactions)
    svc = ps.serving.RecommenderService(model)
    exp = svc.experiment("home", {"A": model, "B": model}, salt="one")
    with pytest.raises(ps.ParameterError, match="already runs experiment 'one'"):
        svc.experiment("home", {"A": model, "B": model}, salt="two")
    assert svc.experiments == {"home": exp} and svc.stats()["experiments"] == {"home": "one"}
    exp.stop()
    with pytest.raises(ps.ParameterError, match="no experiment runs"):
        svc.end_experiment("home")
    svc.experiment("home", {"A": model, "B": model}, salt="two")
