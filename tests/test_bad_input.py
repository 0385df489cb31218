"""Issue 11, point 14: every public entry point answers bad input with a PersonaError.

Hostile values (None, wrong types, list/dict ids, NaN/inf, negatives, huge ints, huge thread counts,
empty inputs, numpy scalars, bools posing as ints) must end in a ``ps.PersonaError`` subclass with a
message, quickly and within bounded memory. Calls that used to exhaust memory, hang or abort the
process run in a subprocess under an address-space limit and a timeout, so the old failure shows up
as a test failure rather than taking the test run down.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import persona as ps
from persona.marketing import Campaign, Channel, Contacts, Offer, Planner

MAX_N = 1_000_000  # persona._validate.MAX_N, spelled out so this file also runs against the old code

# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=120, n_items=40, seed=3)


@pytest.fixture(scope="module")
def inter(shop):
    return shop.interactions


@pytest.fixture(scope="module")
def pop(inter):
    return ps.MostPopular().fit(inter)


@pytest.fixture(scope="module")
def als(inter):
    return ps.ALS(factors=4, iterations=2, random_state=0).fit(inter)


@pytest.fixture(scope="module")
def knn(inter):
    return ps.ItemKNN(k=10).fit(inter)


def _bounded(code: str, *, timeout: float = 60.0, mem_gib: int = 3) -> dict:
    """Run ``code`` in a fresh interpreter limited to ``mem_gib`` of address space and ``timeout`` s.

    The code prints one JSON line; a kill, an abort, a MemoryError or a hang fails the caller's test
    with what happened, instead of taking the test process down.
    """
    prelude = textwrap.dedent(f"""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({mem_gib} << 30, {mem_gib} << 30))
        import numpy as np
        import persona as ps

        def outcome(fn):
            try:
                fn()
            except ps.PersonaError as e:
                return {{"ok": True, "type": type(e).__name__, "msg": str(e)}}
            except BaseException as e:
                return {{"ok": False, "type": type(e).__name__, "msg": str(e)[:300]}}
            return {{"ok": True, "type": None, "msg": ""}}
    """)
    try:
        run = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish within {timeout} s")
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
    assert run.returncode == 0 and lines, (
        f"the process died (exit {run.returncode}): {run.stderr[-800:]}")
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------- the cases named in 14
def test_recommend_with_a_huge_n_is_refused_without_allocating():
    out = _bounded("""
        shop = ps.datasets.synthetic_shop(n_users=60, n_items=30, seed=1)
        m = ps.MostPopular().fit(shop.interactions)
        u = shop.interactions.user_ids[0]
        print(json.dumps(outcome(lambda: m.recommend(u, n=10**12))))
    """)
    assert out["ok"] and out["type"] == "ParameterError", out
    assert "n: expected an integer between 1 and 1000000, got 1000000000000" in out["msg"]


@pytest.mark.parametrize("call", ["recommend_batch", "recommend_for_history", "recommend_for_history_batch",
                                  "similar_items", "similar_items_batch", "recommend_users"])
def test_every_n_taking_call_bounds_n(als, inter, call):
    u, i = inter.user_ids[0], inter.item_ids[0]
    args = {"recommend_batch": [u], "recommend_for_history": [i], "recommend_for_history_batch": [[i]],
            "similar_items": i, "similar_items_batch": [i], "recommend_users": [i]}[call]
    with pytest.raises(ps.ParameterError, match="n: expected an integer"):
        getattr(als, call)(args, n=2**63)


def test_n_larger_than_the_catalogue_returns_every_allowed_item_cheaply(als, inter):
    ids, scores = als.recommend(inter.user_ids[0], n=MAX_N, filter_seen=False)
    assert len(ids) == inter.n_items and np.all(np.diff(scores) <= 0)
    ids, _ = als.recommend_for_history([inter.item_ids[0]], n=MAX_N, filter_seen=False)
    assert len(ids) == inter.n_items


@pytest.mark.parametrize("bad", [None, "10", 2.0, True, np.float64(3), -1, 0])
def test_n_must_be_a_positive_integer(als, inter, bad):
    with pytest.raises(ps.ParameterError, match="n: expected an integer"):
        als.recommend(inter.user_ids[0], n=bad)


def test_numpy_integer_n_is_accepted(als, inter):
    ids, _ = als.recommend(inter.user_ids[0], n=np.int32(3))
    assert len(ids) == 3


def test_planner_plan_none_is_a_parameter_error(shop, als):
    contacts = Contacts(shop.users["user_id"], consent={"email": np.ones(len(shop.users), bool)})
    planner = Planner(contacts=contacts, channels=[Channel("email")], model=als, catalog=shop.items)
    with pytest.raises(ps.ParameterError, match="plan: expected a Campaign or a list of Campaigns, got None"):
        planner.plan(None)
    with pytest.raises(ps.ParameterError, match="plan: expected a Campaign or a list of Campaigns, got int"):
        planner.plan(5)


@pytest.mark.parametrize("column,value", [("user_id", [1, 2]), ("user_id", {"a": 1}), ("item_id", [3]),
                                          ("item_id", {"b": 2}), ("item_id", {1, 2})])
def test_from_frame_refuses_unhashable_ids_with_the_rows(column, value):
    df = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [4, 5, 6]}).astype(object)
    df.at[1, column] = value
    with pytest.raises(ps.DataError, match=rf"{column}.*row.*\b1\b.*{type(value).__name__}"):
        ps.Interactions.from_frame(df, user="user_id", item="item_id")


def test_num_threads_2000_does_not_kill_the_process():
    # old main: "libgomp: Thread creation failed" aborts the interpreter in the similarity kernel
    out = _bounded("""
        shop = ps.datasets.synthetic_shop(n_users=60, n_items=30, seed=1)
        print(json.dumps(outcome(lambda: ps.ItemKNN(num_threads=2000).fit(shop.interactions))))
    """)
    assert out["ok"] and out["type"] == "ParameterError", out
    assert "num_threads: expected an integer between 0 and" in out["msg"] and "0 for all cores" in out["msg"]


def _bounded_calls(exprs: dict, setup: str = "", *, timeout: float = 240.0) -> dict:
    """Evaluate each expression in one bounded child process, each under a 20 s alarm.

    Returns name -> outcome dict (see :func:`_bounded`); a hang is an outcome of type "Hang".
    """
    body = [
        "import signal",
        "class Hang(BaseException): pass",
        "def _alarm(*_): raise Hang('no answer within 20 s')",
        "signal.signal(signal.SIGALRM, _alarm)",
        textwrap.dedent(setup),
        "out = {}",
    ]
    for name, expr in exprs.items():
        body += [f"signal.alarm(20); out[{name!r}] = outcome(lambda: {expr}); signal.alarm(0)"]
    body.append("print(json.dumps(out))")
    return _bounded("\n".join(body), timeout=timeout)


_SHOP = """
    shop = ps.datasets.synthetic_shop(n_users=60, n_items=30, seed=1)
    inter = shop.interactions
"""

# old main: libgomp aborts the process (ItemKNN, UserKNN, the C++ top-k); elsewhere accepted silently
THREADS = {
    "ALS": "ps.ALS(factors=2, iterations=1, num_threads=2000).fit(inter)",
    "BPR": "ps.BPR(factors=2, iterations=1, num_threads=2000).fit(inter)",
    "EASE": "ps.EASE(num_threads=2000).fit(inter)",
    "UserKNN": "ps.UserKNN(num_threads=2000).fit(inter)",
    "ItemKNN": "ps.ItemKNN(num_threads=2**63).fit(inter)",
    "MostPopular": "ps.MostPopular(num_threads=2000).fit(inter)",
    "MF": "ps.MF(factors=2, iterations=1, num_threads=10**6).fit(inter)",
    "kernels.topk": "__import__('persona.kernels', fromlist=['topk']).topk(np.ones((64, 3000)), 1, num_threads=2000)",
    "kernels.topk_similarity": "__import__('persona.kernels.similarity', fromlist=['x']).topk_similarity("
                               "__import__('scipy.sparse').sparse.random(300, 300, 0.1, format='csr', "
                               "dtype=np.float32), 5, num_threads=2000)",
}


def test_every_model_and_kernel_bounds_num_threads():
    out = _bounded_calls(THREADS, _SHOP)
    for name in THREADS:
        assert out[name]["type"] == "ParameterError" and "num_threads" in out[name]["msg"], (name, out[name])


# old main: MemoryError (ALS, BPR, MF, SASRec), a torch RuntimeError (TwoTower) or a fit that never ends (ALS)
SIZES = {
    "ALS factors": ("ps.ALS(factors=10**9, iterations=1).fit(inter)", "factors"),
    "ALS iterations": ("ps.ALS(factors=2, iterations=10**12).fit(inter)", "iterations"),
    "BPR iterations": ("ps.BPR(factors=2, iterations=10**12).fit(inter)", "iterations"),
    "MF factors": ("ps.MF(factors=2**40).fit(inter)", "factors"),
    "SASRec max_len": ("ps.SASRec(factors=4, max_len=10**9, epochs=1).fit(inter)", "max_len"),
    "SASRec epochs": ("ps.SASRec(factors=4, max_len=5, epochs=10**12).fit(inter)", "epochs"),
    "TwoTower hidden": ("ps.TwoTower(factors=4, hidden=10**9, epochs=1).fit(inter)", "hidden"),
    "TwoTower factors": ("ps.TwoTower(factors=10**9, hidden=4, epochs=1).fit(inter)", "factors"),
}


def test_sizes_and_passes_are_bounded_before_any_allocation():
    out = _bounded_calls({k: v[0] for k, v in SIZES.items()}, _SHOP, timeout=400)
    for name, (_, param) in SIZES.items():
        assert out[name]["type"] == "ParameterError", (name, out[name])
        assert out[name]["msg"].startswith(f"{param}: expected an integer between 1 and "), (name, out[name])


def test_exact_index_bounds_num_threads():
    with pytest.raises(ps.ParameterError, match="num_threads"):
        ps.retrieval.ExactIndex(np.ones((4, 2), np.float32), num_threads=2000)


def test_ope_bootstrap_count_is_bounded_and_fast():
    out = _bounded("""
        rng = np.random.default_rng(0)
        n = 200
        logged = ps.LoggedFeedback(action=rng.integers(0, 3, n), reward=rng.integers(0, 2, n),
                                   propensity=np.full(n, 1 / 3))
        target = np.full((n, 3), 1 / 3)
        print(json.dumps(outcome(lambda: ps.ope.estimate(logged, target, ci="bootstrap", n_bootstrap=10**9))))
    """, timeout=30)
    assert out["ok"] and out["type"] == "ParameterError", out
    assert "n_bootstrap: expected an integer between 2 and 100000" in out["msg"]


def test_other_resampling_counts_are_bounded():
    # old main: on_policy ran 10**9 resamples (minutes to hours), ab_test_means a 22 GiB MemoryError
    out = _bounded_calls({
        "on_policy": "ps.ope.on_policy(logged, ci='bootstrap', n_bootstrap=10**9)",
        "ab_test_means": "ps.marketing.ab_test_means([1.0, 2.0, 3.0], [2.0, 3.0, 4.0], n_boot=10**9)",
        "ab_test": "ps.marketing.ab_test(5, 100, 9, 100, ci='bootstrap', n_boot=10**12)",
        "Thompson n_samples": "ps.marketing.LinearThompsonSampling(3, propensity='monte_carlo', n_samples=10**9)"
                              ".fit(np.ones((2, 2)), [0, 1], [1.0, 0.0]).choose(np.ones((2, 2)))",
        "uniform_policy": "ps.ope.uniform_policy(10**9, 10**9)",
        "LinUCB n_actions": "ps.marketing.LinUCB(10**9).fit(np.ones((2, 2)), [0, 0], [1.0, 0.0])",
    }, "logged = ps.LoggedFeedback(action=[0, 1], reward=[1, 0], propensity=[0.5, 0.5])")
    for name, got in out.items():
        assert got["type"] == "ParameterError", (name, got)
    assert out["on_policy"]["msg"].startswith("n_bootstrap: expected an integer between 2 and 100000")
    assert "GiB of per-action state" in out["LinUCB n_actions"]["msg"]


# --------------------------------------------------------------------- histories with no known item
def test_an_all_unknown_history_is_answered_by_the_fallback(inter, als, pop):
    model = ps.ALS(factors=4, iterations=2, random_state=0).fit(inter).set_fallback(pop)
    ids, scores = model.recommend_for_history(["no-such-item", "nor-this"], n=5)
    want, want_scores = pop.recommend_for_history([], n=5)
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(scores, want_scores)
    # a batch: only the row with no known item goes to the fallback
    b_ids, _ = model.recommend_for_history_batch([["no-such-item"], [inter.item_ids[0]]], n=5)
    np.testing.assert_array_equal(b_ids[0], want)
    np.testing.assert_array_equal(b_ids[1], model.recommend_for_history([inter.item_ids[0]], n=5)[0])


def test_an_all_unknown_history_without_a_fallback_is_an_unknown_item_error(als, knn):
    for model in (als, knn):
        with pytest.raises(ps.UnknownItemError, match=r"none of the history's 2 item ids.*set_fallback"):
            model.recommend_for_history(["no-such-item", "nor-this"], n=5)


def test_popularity_answers_any_history_itself(pop, inter):
    ids, _ = pop.recommend_for_history(["no-such-item"], n=5)
    np.testing.assert_array_equal(ids, pop.recommend_for_history([], n=5)[0])


def test_the_service_labels_an_all_unknown_history_as_fallback(inter, pop):
    model = ps.ALS(factors=4, iterations=2, random_state=0).fit(inter)
    service = ps.serving.RecommenderService(model, fallback=pop)
    rec = service.recommend("a-new-visitor", n=5, context={"history": ["no-such-item", "nor-this"]})
    assert rec.source == "fallback-0" and rec.reason == "unknown history"
    np.testing.assert_array_equal(rec[0], pop.recommend_for_history([], n=5)[0])
    # a known item in the session keeps the model's answer
    rec = service.recommend("a-new-visitor", n=5, context={"history": ["no-such-item", inter.item_ids[0]]})
    assert rec.source == "model-history"


def test_the_service_without_fallbacks_answers_an_all_unknown_history_with_popularity(inter):
    model = ps.ALS(factors=4, iterations=2, random_state=0).fit(inter)
    rec = ps.serving.RecommenderService(model).recommend("a-new-visitor", n=5, context={"history": ["nope"]})
    assert rec.source == "popular" and rec.reason == "unknown history"
    assert np.all(np.isfinite(rec[1])) and len(rec[0]) == 5


# --------------------------------------------------------------------------------- the fuzz harness
#
# Every probe feeds one hostile value into one argument of a public entry point. The whole run
# happens in a child process with an address-space limit, a per-call alarm and a wall-clock
# timeout: a MemoryError, a hang or a process abort on the old code is a failure here, not a
# crashed test run. A call may succeed (a huge but valid value answered within bounds) or raise a
# ps.PersonaError; anything else fails.

HOSTILE_VALUES = [
    None, "", "x", b"x", [], [[]], {}, {"a": 1}, {1, 2}, (), 1.5, -0.5, float("nan"), float("inf"),
    float("-inf"), True, False, 0, -1, 2, 2000, 10**6 + 1, 10**9, 10**12, 2**31, 2**63, -(2**63) - 1,
    np.int64(7), np.int32(-3), np.uint64(2**63), np.float32("nan"), np.float64(1e300), np.bool_(True),
    np.array([1, 2]), np.array([[1.0]]), np.array([]), complex(1, 1), [None], [float("nan")], [[1], [2]],
    [{"a": 1}], ["no-such-item"], [2**63], [True, False], ["a", 1],
]


def hostile():
    """Values no entry point should choke on: the list above, plus random ints, floats, text, lists."""
    return st.one_of(
        st.sampled_from(HOSTILE_VALUES),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=6),
        st.lists(st.one_of(st.integers(), st.text(max_size=3), st.none(), st.floats()), max_size=4),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )


def _world():
    """A small shop with fitted models and helpers, built once per fuzz process."""
    from persona.marketing import LinUCB, LinearThompsonSampling

    shop = ps.datasets.synthetic_shop(n_users=40, n_items=20, seed=2)
    inter = shop.interactions
    w = dict(shop=shop, inter=inter, u=inter.user_ids[0], i=inter.item_ids[0],
             pop=ps.MostPopular().fit(inter), als=ps.ALS(factors=4, iterations=1, random_state=0).fit(inter),
             knn=ps.ItemKNN(k=5).fit(inter))
    w["split"] = ps.split.leave_last_out(inter, min_events=2)
    contacts = Contacts(shop.users["user_id"], consent={"email": np.ones(len(shop.users), bool)})
    w["planner"] = Planner(contacts=contacts, channels=[Channel("email")], model=w["als"], catalog=shop.items,
                           objective="conversions")
    w["make_planner"] = lambda **kw: Planner(**{**dict(contacts=contacts, channels=[Channel("email")], model=w["als"],
                                                       catalog=shop.items, objective="conversions"), **kw}).plan(
        [w["campaign"]], now=1.7e9)
    w["campaign"] = Campaign("c", items=tuple(inter.item_ids[:3].tolist()), offer=Offer("ad"))
    rng = np.random.default_rng(0)
    n = 30
    w["logged"] = ps.LoggedFeedback(action=rng.integers(0, 3, n), reward=rng.integers(0, 2, n),
                                    propensity=np.full(n, 1 / 3), context=rng.random((n, 2)))
    w["target"] = np.full((n, 3), 1 / 3)
    w["linucb"] = LinUCB(3, random_state=0).fit(rng.random((n, 2)), rng.integers(0, 3, n), rng.random(n))
    w["LinUCB"], w["Thompson"] = LinUCB, LinearThompsonSampling
    w["index"] = ps.retrieval.ExactIndex(rng.random((20, 4)).astype(np.float32))
    w["service"] = ps.serving.RecommenderService(w["als"], fallback=w["pop"])
    w["frame"] = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [4, 5, 6], "timestamp": [1.0, 2.0, 3.0]})
    return w


def _with_value(frame, column, v):
    df = frame.astype(object)
    df.at[1, column] = v
    return df


def _fit_if_small(model, v, w):
    """Validate the hyperparameters as fit does; fit only when ``v`` is small, because a large but
    valid size or pass count is a legitimate long fit, not a hang."""
    model._validate_common_params()
    model._validate_params()
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v <= 64:
        model.fit(w["inter"])


# name -> call(world, value); each feeds the value into one argument
PROBES = {
    "recommend(user)": lambda w, v: w["als"].recommend(v, n=3),
    "recommend(n)": lambda w, v: w["als"].recommend(w["u"], n=v),
    "recommend(items)": lambda w, v: w["als"].recommend(w["u"], n=3, items=v),
    "recommend(exclude)": lambda w, v: w["als"].recommend(w["u"], n=3, exclude=v),
    "recommend(mask)": lambda w, v: w["als"].recommend(w["u"], n=3, mask=v),
    "knn.recommend(n)": lambda w, v: w["knn"].recommend(w["u"], n=v),
    "pop.recommend(n)": lambda w, v: w["pop"].recommend(w["u"], n=v),
    "pop.top_items(n)": lambda w, v: w["pop"].top_items(v),
    "recommend_batch(users)": lambda w, v: w["als"].recommend_batch(v, n=3),
    "recommend_batch(n)": lambda w, v: w["als"].recommend_batch([w["u"]], n=v),
    "recommend_for_history(history)": lambda w, v: w["als"].recommend_for_history(v, n=3),
    "recommend_for_history(n)": lambda w, v: w["knn"].recommend_for_history([w["i"]], n=v),
    "recommend_for_history_batch(histories)": lambda w, v: w["als"].recommend_for_history_batch(v, n=3),
    "similar_items(item)": lambda w, v: w["als"].similar_items(v, n=3),
    "similar_items(n)": lambda w, v: w["knn"].similar_items(w["i"], n=v),
    "similar_items_batch(items)": lambda w, v: w["als"].similar_items_batch(v, n=3),
    "recommend_users(items)": lambda w, v: w["als"].recommend_users(v, n=3),
    "recommend_users(n)": lambda w, v: w["als"].recommend_users([w["i"]], n=v),
    "recommend_users(users)": lambda w, v: w["als"].recommend_users([w["i"]], n=3, users=v),
    "fit(interactions)": lambda w, v: ps.MostPopular().fit(v),
    "ALS(factors)": lambda w, v: _fit_if_small(ps.ALS(factors=v, iterations=1), v, w),
    "ALS(iterations)": lambda w, v: _fit_if_small(ps.ALS(factors=2, iterations=v), v, w),
    "BPR(iterations)": lambda w, v: _fit_if_small(ps.BPR(factors=2, iterations=v), v, w),
    "ItemKNN(k)": lambda w, v: ps.ItemKNN(k=v).fit(w["inter"]),
    "EASE(regularization)": lambda w, v: ps.EASE(regularization=v).fit(w["inter"]),
    "ALS(num_threads)": lambda w, v: ps.ALS(factors=2, iterations=1, num_threads=v).fit(w["inter"]),
    "ItemKNN(num_threads)": lambda w, v: ps.ItemKNN(k=3, num_threads=v).fit(w["inter"]),
    "ALS(random_state)": lambda w, v: ps.ALS(factors=2, iterations=1, random_state=v).fit(w["inter"]),
    "from_frame(user id values)": lambda w, v: ps.Interactions.from_frame(
        _with_value(w["frame"], "user_id", v), user="user_id", item="item_id"),
    "from_frame(item id values)": lambda w, v: ps.Interactions.from_frame(
        _with_value(w["frame"], "item_id", v), user="user_id", item="item_id", time="timestamp"),
    "from_frame(time values)": lambda w, v: ps.Interactions.from_frame(
        _with_value(w["frame"], "timestamp", v), user="user_id", item="item_id", time="timestamp"),
    "from_frame(user column)": lambda w, v: ps.Interactions.from_frame(w["frame"], user=v, item="item_id"),
    "from_frame(df)": lambda w, v: ps.Interactions.from_frame(v, user="user_id", item="item_id"),
    "from_frame(min_user_events)": lambda w, v: ps.Interactions.from_frame(w["frame"], user="user_id",
                                                                           item="item_id", min_user_events=v),
    "from_frame(half_life)": lambda w, v: ps.Interactions.from_frame(w["frame"], user="user_id", item="item_id",
                                                                     time="timestamp", half_life=v),
    "from_frame(weights)": lambda w, v: ps.Interactions.from_frame(w["frame"].assign(e="view"), user="user_id",
                                                                   item="item_id", event="e", weights=v),
    "from_sequences(lines)": lambda w, v: ps.Interactions.from_sequences(v if not isinstance(v, str) else [v]),
    "leave_last_out(min_events)": lambda w, v: ps.split.leave_last_out(w["inter"], min_events=v),
    "temporal(cutoff)": lambda w, v: ps.split.temporal(w["inter"], v),
    "random(test_fraction)": lambda w, v: ps.split.random(w["inter"], test_fraction=v),
    "random(random_state)": lambda w, v: ps.split.random(w["inter"], random_state=v),
    "evaluate(k)": lambda w, v: ps.evaluate(w["pop"], w["split"][2], k=v),
    "evaluate(metrics)": lambda w, v: ps.evaluate(w["pop"], w["split"][2], k=(5,), metrics=v),
    "evaluate(exclude)": lambda w, v: ps.evaluate(w["pop"], w["split"][2], k=(5,), exclude=v),
    "evaluate(item_categories)": lambda w, v: ps.evaluate(w["pop"], w["split"][2], k=(5,), item_categories=v),
    "temporal(valid_cutoff)": lambda w, v: ps.split.temporal(w["inter"], w["inter"].timestamps.max(),
                                                             valid_cutoff=v),
    "pop.top_items(segment)": lambda w, v: w["pop"].top_items(3, segment=v),
    "recommend(filter_seen)": lambda w, v: w["als"].recommend(w["u"], n=3, filter_seen=v),
    "set_fallback(model)": lambda w, v: ps.MostPopular().set_fallback(v),
    "evaluate(test)": lambda w, v: ps.evaluate(w["pop"], v),
    "evaluate(batch_size)": lambda w, v: ps.evaluate(w["pop"], w["split"][2], k=(5,), batch_size=v),
    "Planner.plan(campaigns)": lambda w, v: w["planner"].plan(v, now=1.7e9),
    "Planner.plan(now)": lambda w, v: w["planner"].plan([w["campaign"]], now=v),
    "Planner(pool)": lambda w, v: w["make_planner"](pool=v),
    "Planner(holdout)": lambda w, v: w["make_planner"](holdout=v),
    "Planner(random_state)": lambda w, v: w["make_planner"](random_state=v),
    "Planner(time_limit)": lambda w, v: w["make_planner"](time_limit=v, method="milp"),
    "Campaign(name)": lambda w, v: Campaign(v, items=("a",)),
    "Campaign(items)": lambda w, v: w["planner"].plan([Campaign("c", items=v)], now=1.7e9),
    "Campaign(start)": lambda w, v: w["planner"].plan([Campaign("c", items=("a",), start=v)], now=1.7e9),
    "Campaign(n_items)": lambda w, v: Campaign("c", items=("a",), n_items=v),
    "Campaign(margin)": lambda w, v: Campaign("c", items=("a",), margin=v),
    "ope.estimate(target)": lambda w, v: ps.ope.estimate(w["logged"], v),
    "ope.estimate(method)": lambda w, v: ps.ope.estimate(w["logged"], w["target"], method=v),
    "ope.estimate(n_bootstrap)": lambda w, v: ps.ope.estimate(w["logged"], w["target"], ci="bootstrap",
                                                              n_bootstrap=v),
    "ope.estimate(alpha)": lambda w, v: ps.ope.estimate(w["logged"], w["target"], alpha=v),
    "ope.estimate(clip)": lambda w, v: ps.ope.estimate(w["logged"], w["target"], clip=v),
    "ope.compare(methods)": lambda w, v: ps.ope.compare(w["logged"], w["target"], methods=v),
    "ope.estimate(reward_model)": lambda w, v: ps.ope.estimate(w["logged"], w["target"], method="dr",
                                                               reward_model=v),
    "ope.greedy_policy(scores)": lambda w, v: ps.ope.greedy_policy(v),
    "ope.softmax_policy(temperature)": lambda w, v: ps.ope.softmax_policy(np.ones((2, 3)), temperature=v),
    "ope.RewardModel(n_folds)": lambda w, v: ps.ope.estimate(w["logged"], w["target"], method="dm",
                                                             reward_model=ps.ope.RewardModel(n_folds=v)),
    "ope.RewardModel(max_iter)": lambda w, v: ps.ope.estimate(w["logged"], w["target"], method="dm",
                                                              reward_model=ps.ope.RewardModel(max_iter=v)),
    "LoggedFeedback(context)": lambda w, v: ps.LoggedFeedback(action=[0], reward=[1], propensity=[0.5], context=v),
    "LoggedFeedback(position)": lambda w, v: ps.LoggedFeedback(action=[0], reward=[1], propensity=[0.5], position=v),
    "LoggedFeedback(action)": lambda w, v: ps.LoggedFeedback(action=v, reward=[1], propensity=[0.5]),
    "LoggedFeedback(propensity)": lambda w, v: ps.LoggedFeedback(action=[0], reward=[1], propensity=v),
    "LinUCB(n_actions)": lambda w, v: w["LinUCB"](v).fit(np.ones((2, 2)), [0, 0], [1.0, 0.0]),
    "LinUCB.choose(contexts)": lambda w, v: w["linucb"].choose(v),
    "LinUCB.update(actions)": lambda w, v: w["LinUCB"](3).update(np.ones((1, 2)), v, [1.0]),
    "Thompson(n_samples)": lambda w, v: w["Thompson"](3, propensity="monte_carlo", n_samples=v).fit(
        np.ones((2, 2)), [0, 1], [1.0, 0.0]).choose(np.ones((2, 2))),
    "ExactIndex(vectors)": lambda w, v: ps.retrieval.ExactIndex(v),
    "ExactIndex(num_threads)": lambda w, v: ps.retrieval.ExactIndex(np.ones((3, 2), np.float32), num_threads=v),
    "index.search(queries)": lambda w, v: w["index"].search(v, n=3),
    "index.search(n)": lambda w, v: w["index"].search(np.ones((1, 4)), n=v),
    "index.search(allow)": lambda w, v: w["index"].search(np.ones((1, 4)), n=3, allow=v),
    "index.search(deny)": lambda w, v: w["index"].search(np.ones((1, 4)), n=3, deny=v),
    "index.search(mask)": lambda w, v: w["index"].search(np.ones((1, 4)), n=3, mask=v),
    "service.recommend(user)": lambda w, v: w["service"].recommend(v, n=3),
    "service.recommend(n)": lambda w, v: w["service"].recommend(w["u"], n=v),
    "service.recommend(history)": lambda w, v: w["service"].recommend("a-visitor", n=3, context={"history": v}),
}


class _Hang(Exception):
    pass


def _fuzz_main(names, examples: int) -> None:
    """Child-process side: run every probe on hostile values; print one JSON line of failures."""
    import signal

    from hypothesis import Phase

    def alarm(*_):
        raise _Hang("the call did not return within 20 s")

    signal.signal(signal.SIGALRM, alarm)
    world = _world()
    failures = {}
    for name in names:
        probe = PROBES[name]
        print(f"probe {name}", file=sys.stderr, flush=True)

        @settings(max_examples=examples, database=None, deadline=None, derandomize=True,
                  phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
        @given(value=hostile())
        def check(value):
            signal.alarm(20)
            try:
                probe(world, value)
            except ps.PersonaError as e:
                assert str(e), f"{name}({value!r}) raised {type(e).__name__} with an empty message"
            except _Hang:
                raise AssertionError(f"{name}({value!r}) hung") from None
            except BaseException as e:  # noqa: BLE001 - the point: nothing but PersonaError
                raise AssertionError(f"{name}({value!r:.80}) raised {type(e).__name__}: {str(e)[:160]}") from None
            finally:
                signal.alarm(0)

        try:
            for value in HOSTILE_VALUES:  # every listed value, then random ones
                check.hypothesis.inner_test(value=value)
            check()
        except AssertionError as e:
            failures[name] = str(e).splitlines()[0]
    print(json.dumps(failures), flush=True)


@pytest.mark.parametrize("part", [0, 1])
def test_fuzz_public_entry_points_raise_only_persona_errors(part):
    names = sorted(PROBES)[part::2]
    code = (f"import sys; sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r}); "
            "import resource; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); "
            f"import test_bad_input as t; t._fuzz_main({names!r}, 50)")
    try:
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=400)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the fuzz run did not finish in 400 s; last probe: {(e.stderr or b'')[-200:]!r}")
    last = [ln for ln in run.stderr.splitlines() if ln.startswith("probe ")][-1:]
    assert run.returncode == 0, f"the fuzz process died (exit {run.returncode}) in {last}: {run.stderr[-600:]}"
    failures = json.loads(run.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(f"{k}: {v}" for k, v in failures.items())
