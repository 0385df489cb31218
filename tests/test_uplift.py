"""Uplift modelling (persona.marketing.uplift): metrics, T/X/DR learners, logged data, the planner's targeting.

The metrics are checked against loops written from their definitions (always) and against
scikit-uplift's (when it is installed: an optional peer); the learners against the same models
fitted by hand, and on simulated campaigns whose true effect is known.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import persona as ps
from persona.marketing import (
    Budget,
    Campaign,
    Channel,
    Contacts,
    DRLearner,
    FeedbackRecorder,
    Offer,
    Planner,
    TLearner,
    UpliftScorer,
    XLearner,
    auuc,
    qini_auc,
    qini_curve,
    uplift_at_k,
    uplift_curve,
    uplift_data,
)

NOW = "2024-04-02T10:00:00Z"


# ---------------------------------------------------------------------------------------------- references
def curve_reference(y, u, t, kind):
    """Uplift or Qini curve from scratch: for each distinct score, everybody scoring at least it."""
    xs, vs = [0.0], [0.0]
    for s in sorted(set(u.tolist()), reverse=True):
        top = u >= s
        nt, nc = int((t[top] == 1).sum()), int((t[top] == 0).sum())
        yt, yc = float(y[top & (t == 1)].sum()), float(y[top & (t == 0)].sum())
        if kind == "qini":
            v = yt - (yc * nt / nc if nc else 0.0)
        else:
            v = ((yt / nt if nt else 0.0) - (yc / nc if nc else 0.0)) * top.sum()
        xs.append(float(top.sum()))
        vs.append(v)
    if len(xs) > 1 and xs[1] == 0:
        xs, vs = xs[1:], vs[1:]
    return np.array(xs), np.array(vs)


def area(x, v):
    return sum((x[i + 1] - x[i]) * (v[i + 1] + v[i]) / 2 for i in range(len(x) - 1))


def normalised_reference(curve, perfect):
    base = perfect[0][-1] * perfect[1][-1] / 2
    return (area(*curve) - base) / (area(*perfect) - base)


def auuc_reference(y, u, t):
    cr, tn = ((y == 1) & (t == 0)).sum(), ((y == 0) & (t == 1)).sum()
    best = 2 * (y == t) + (y if cr > tn else t)
    return normalised_reference(curve_reference(y, u, t, "uplift"), curve_reference(y, best.astype(float), t, "uplift"))


def qini_reference(y, u, t):
    best = (y * t - y * (1 - t)).astype(float)
    return normalised_reference(curve_reference(y, u, t, "qini"), curve_reference(y, best, t, "qini"))


@st.composite
def experiments(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    n = draw(st.integers(4, 80))
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, n)
    t[:2] = (0, 1)  # both groups present
    y = (rng.random(n) < draw(st.floats(0.05, 0.95))).astype(int)
    ties = draw(st.booleans())
    u = rng.integers(0, 4, n).astype(float) if ties else rng.normal(size=n)
    return y, u, t


@settings(max_examples=80, deadline=None)
@given(experiments())
def test_curves_and_areas_match_the_definitions(case):
    y, u, t = case
    for fn, kind in ((uplift_curve, "uplift"), (qini_curve, "qini")):
        x, v = fn(y, u, t)
        rx, rv = curve_reference(y, u, t, kind)
        np.testing.assert_allclose(x, rx)
        np.testing.assert_allclose(v, rv, atol=1e-9)
    with np.errstate(all="ignore"):
        for got, want in ((auuc(y, u, t), auuc_reference(y, u, t)), (qini_auc(y, u, t), qini_reference(y, u, t))):
            assert (math.isnan(got) and not math.isfinite(want)) or got == pytest.approx(want, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(experiments(), st.sampled_from([0.3, 0.5, 2]))
def test_uplift_at_k_matches_a_loop(case, k):
    y, u, t = case
    order = sorted(range(len(u)), key=lambda i: (-u[i], i))  # best first, ties in row order
    top = order[: int(len(u) * k) if isinstance(k, float) else k]
    treated = [y[i] for i in top if t[i] == 1]
    control = [y[i] for i in top if t[i] == 0]
    if treated and control and 0 < len(top) < len(u):
        assert uplift_at_k(y, u, t, k=k) == pytest.approx(np.mean(treated) - np.mean(control))
    else:
        with pytest.raises((ps.DataError, ps.ParameterError)):
            uplift_at_k(y, u, t, k=k)


def test_metrics_by_hand():
    y, u, t = np.array([1, 0, 0, 1]), np.array([0.9, 0.5, 0.3, 0.1]), np.array([1, 0, 1, 0])
    assert uplift_curve(y, u, t)[1].tolist() == [0.0, 1.0, 2.0, 1.5, 0.0]
    assert qini_curve(y, u, t)[1].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert auuc(y, u, t) == pytest.approx(1.0) and qini_auc(y, u, t) == pytest.approx(1.0)
    assert qini_auc(y, -u, t) < 0 < qini_auc(y, u, t)
    assert uplift_at_k(y, u, t, k=2) == 1.0  # top 2: a treated buyer and a control non-buyer
    assert uplift_at_k(y, u, t, k=0.5, strategy="by_group") == 1.0
    with pytest.raises(ps.DataError, match="0/1"):
        auuc(y, u, [1, 0, 2, 0])
    with pytest.raises(ps.DataError, match="finite"):
        qini_curve(y, [np.nan, 0, 0, 0], t)
    with pytest.raises(ps.ParameterError, match="strategy"):
        uplift_at_k(y, u, t, strategy="top")
    with pytest.raises(ps.ParameterError, match="share"):
        uplift_at_k(y, u, t, k=1.5)


def test_metrics_agree_with_scikit_uplift():
    """The optional peer: scikit-uplift's metrics give the same numbers (ties included)."""
    sk = pytest.importorskip("sklift.metrics", reason="scikit-uplift is not installed (pip install scikit-uplift)")
    rng = np.random.default_rng(3)
    checked = 0
    for trial in range(60):
        n = int(rng.integers(10, 400))
        y, t = rng.integers(0, 2, n), rng.integers(0, 2, n)
        t[:2] = (0, 1)
        u = rng.integers(0, 6, n).astype(float) if trial % 2 else rng.normal(size=n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            np.testing.assert_allclose(np.vstack(qini_curve(y, u, t)), np.vstack(sk.qini_curve(y, u, t)))
            np.testing.assert_allclose(np.vstack(uplift_curve(y, u, t)), np.vstack(sk.uplift_curve(y, u, t)))
            assert auuc(y, u, t) == pytest.approx(sk.uplift_auc_score(y, u, t))
            assert qini_auc(y, u, t) == pytest.approx(sk.qini_auc_score(y, u, t))
            if trial % 2 == 0:  # continuous scores: no ties, so the top-k cut is the same
                for strategy in ("overall", "by_group"):
                    assert uplift_at_k(y, u, t, k=0.3, strategy=strategy) == pytest.approx(
                        sk.uplift_at_k(y, u, t, strategy=strategy, k=0.3))
        checked += 1
    assert checked == 60


# ---------------------------------------------------------------------------------------------- learners
def simulated(n=6000, seed=0, p_treat=0.5):
    """Sure things (high baseline, no effect), persuadables (x0 > 0) and sleeping dogs (x1 > 1)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    base = -2.0 + 1.5 * (X[:, 2] > 1)                      # x2 high: would buy anyway
    effect = 1.2 * (X[:, 0] > 0) - 1.0 * (X[:, 1] > 1)      # x0 > 0 persuadable, x1 > 1 put off
    p_treat = np.broadcast_to(p_treat, n)
    t = (rng.random(n) < p_treat).astype(int)
    p0, p1 = 1 / (1 + np.exp(-base)), 1 / (1 + np.exp(-(base + effect)))
    y = (rng.random(n) < np.where(t == 1, p1, p0)).astype(int)
    return X, t, y, p1 - p0


@pytest.mark.parametrize("make", [lambda: TLearner("linear"), lambda: TLearner("lightgbm", num_threads=1),
                                  lambda: XLearner("lightgbm", num_threads=1),
                                  lambda: DRLearner("lightgbm", num_threads=1)],
                         ids=["T-linear", "T-lightgbm", "X-lightgbm", "DR-lightgbm"])
def test_learners_find_the_persuadables(make):
    X, t, y, tau = simulated()
    Xv, tv, yv, tau_v = simulated(seed=1)
    model = make().fit(X, t, y)
    pred = model.predict(Xv)
    assert pred.shape == (len(Xv),) and np.isfinite(pred).all()
    assert np.corrcoef(pred, tau_v)[0, 1] > 0.5
    # targeting the top 30% by predicted uplift earns more true uplift than random or the response
    top = np.argsort(-pred)[: int(0.3 * len(pred))]
    assert tau_v[top].mean() > 2 * tau_v.mean()
    assert qini_auc(yv, pred, tv) > 0.1


def test_t_learner_is_two_models_fitted_by_hand():
    from sklearn.linear_model import LogisticRegression

    X, t, y, _ = simulated(n=800)
    m = TLearner("linear").fit(X, t, y)
    m1 = LogisticRegression(max_iter=2000).fit(X[t == 1], y[t == 1])
    m0 = LogisticRegression(max_iter=2000).fit(X[t == 0], y[t == 0])
    np.testing.assert_allclose(m.predict(X[:50]), m1.predict_proba(X[:50])[:, 1] - m0.predict_proba(X[:50])[:, 1])


def test_x_and_dr_learners_are_their_formulas():
    from sklearn.linear_model import LinearRegression, LogisticRegression

    X, t, y, _ = simulated(n=1000, seed=4)
    lin = LinearRegression()
    xl = XLearner(LogisticRegression(max_iter=2000), effect_learner=lin, propensity=0.5).fit(X, t, y)
    mu1 = LogisticRegression(max_iter=2000).fit(X[t == 1], y[t == 1])
    mu0 = LogisticRegression(max_iter=2000).fit(X[t == 0], y[t == 0])
    tau1 = LinearRegression().fit(X[t == 1], y[t == 1] - mu0.predict_proba(X[t == 1])[:, 1])
    tau0 = LinearRegression().fit(X[t == 0], mu1.predict_proba(X[t == 0])[:, 1] - y[t == 0])
    np.testing.assert_allclose(xl.predict(X[:40]), 0.5 * tau0.predict(X[:40]) + 0.5 * tau1.predict(X[:40]))

    e = np.full(len(t), 0.4)
    dr = DRLearner(LogisticRegression(max_iter=2000), effect_learner=LinearRegression(), n_folds=2,
                   random_state=5).fit(X, t, y, propensity=e)
    fold = np.random.default_rng(5).permutation(len(t)) % 2
    m0, m1 = np.zeros(len(t)), np.zeros(len(t))
    for f in range(2):
        for arm, out in ((1, m1), (0, m0)):
            rows = (fold != f) & (t == arm)
            out[fold == f] = LogisticRegression(max_iter=2000).fit(X[rows], y[rows]).predict_proba(X[fold == f])[:, 1]
    phi = m1 - m0 + t * (y - m1) / e - (1 - t) * (y - m0) / (1 - e)
    np.testing.assert_allclose(dr.pseudo_outcome_, phi)
    np.testing.assert_allclose(dr.predict(X[:40]), LinearRegression().fit(X, phi).predict(X[:40]))


def test_dr_learner_corrects_a_non_random_assignment_with_its_propensities():
    rng = np.random.default_rng(8)
    n = 8000
    X = rng.normal(size=(n, 2))
    e = 1 / (1 + np.exp(-1.5 * X[:, 0]))  # the old policy messaged high-x0 users more often
    t = (rng.random(n) < e).astype(int)
    tau = 0.1 + 0.05 * (X[:, 1] > 0)
    y = 0.5 * X[:, 0] + tau * t + rng.normal(0, 0.1, n)  # a continuous outcome: revenue
    dr = DRLearner("linear", effect_learner="linear").fit(X, t, y, propensity=e)
    assert dr.predict(X).mean() == pytest.approx(tau.mean(), abs=0.02)
    naive = y[t == 1].mean() - y[t == 0].mean()
    assert abs(naive - tau.mean()) > 0.2  # confounded: the plain difference is far off


def test_learner_errors():
    X, t, y, _ = simulated(n=200)
    with pytest.raises(ps.DataError, match="control"):
        TLearner("linear").fit(X, np.ones(len(t)), y)
    with pytest.raises(ps.DataError, match="0/1"):
        TLearner("linear").fit(X, t * 2, y)
    with pytest.raises(ps.DataError, match="finite"):
        TLearner("linear").fit(X, t, np.where(t == 1, np.nan, y))
    with pytest.raises(ps.DataError, match="2-D"):
        TLearner("linear").fit(X[:, 0], t, y)
    with pytest.raises(ps.DataError, match="non-numeric"):
        TLearner("linear").fit(pd.DataFrame({"a": ["x"] * len(t)}), t, y)
    with pytest.raises(ps.ParameterError, match="expected one of"):
        TLearner("xgboost").fit(X, t, y)
    with pytest.raises(ps.ParameterError, match="fit and predict"):
        TLearner(object()).fit(X, t, y)
    with pytest.raises(ps.NotFittedError):
        XLearner().predict(X)
    with pytest.raises(ps.DataError, match="3 features"):
        TLearner("linear").fit(X, t, y).predict(X[:, :2])
    with pytest.raises(ps.ParameterError, match="propensity"):
        XLearner("linear", propensity=1.0).fit(X, t, y)
    with pytest.raises(ps.DataError, match="propensity"):
        DRLearner("linear").fit(X, t, y, propensity=np.zeros(len(t)))
    with pytest.raises(ps.ParameterError, match="n_folds"):
        DRLearner("linear", n_folds=1).fit(X, t, y)


# ---------------------------------------------------------------------------------------------- the loop
@pytest.fixture()
def world():
    """Twelve users: 0-3 sure things (buy anyway), 4-7 persuadables, 8-11 sleeping dogs."""
    users = [f"u{i:02d}" for i in range(12)]
    p0 = np.array([0.6] * 4 + [0.05] * 4 + [0.3] * 4)
    tau = np.array([0.0] * 4 + [0.25] * 4 + [-0.1] * 4)
    feats = pd.DataFrame({"p0": p0, "tau": tau}, index=users)
    contacts = Contacts(users, consent={"email": np.ones(12, bool)}, timezone="UTC")
    return users, p0, tau, feats, contacts


class TrueUplift:
    def predict(self, X):
        return np.asarray(X)[:, 1]


def response(p0, tau):
    table = dict(zip([f"u{i:02d}" for i in range(12)], p0 + tau))
    return lambda campaign, users, items: np.array([table[u] for u in users])


def test_the_planner_targets_by_uplift_times_margin(world):
    users, p0, tau, feats, contacts = world
    camp = Campaign("spring", Offer("discount", 0.2), items=["x"], budget=Budget(messages=4), channels=["email"],
                    order_value=50.0, margin=0.4)
    channels = [Channel("email", cost=0.01)]
    by_response = Planner(contacts=contacts, channels=channels, propensity=response(p0, tau), holdout=0.0)
    by_uplift = Planner(contacts=contacts, channels=channels, propensity=response(p0, tau), holdout=0.0,
                        uplift=UpliftScorer(TrueUplift(), feats))
    plain = by_response.plan([camp], now=NOW)
    lifted = by_uplift.plan([camp], now=NOW)
    assert sorted(m.user for m in plain) == users[:4]        # the sure things: the highest response
    assert sorted(m.user for m in lifted) == users[4:8]      # the persuadables
    margin, offer = camp.margin_per_conversion(50.0), 0.2 * 50.0
    for m in lifted:
        i = users.index(m.user)
        p = p0[i] + tau[i]
        assert m.expected_value == pytest.approx(tau[i] * margin - (p - tau[i]) * offer - 0.01)
        assert "predicted uplift 0.25" in m.why
    # true incremental margin of each plan (the discount is paid on every converting recipient)
    def true_value(plan):
        idx = [users.index(m.user) for m in plan]
        return sum((p0[i] + tau[i]) * margin - p0[i] * 0.4 * 50.0 - 0.01 for i in idx)
    assert true_value(lifted) > 0 > true_value(plain)
    # sleeping dogs are never worth a message: a budget of 12 still leaves them out
    wide = Planner(contacts=contacts, channels=channels, propensity=response(p0, tau),
                   uplift=UpliftScorer(TrueUplift(), feats)).plan([Campaign(
                       "wide", Offer("ad"), items=["x"], budget=Budget(messages=12), channels=["email"],
                       order_value=50.0)], now=NOW)
    assert not {m.user for m in wide} & set(users[8:])


def test_default_plans_are_unchanged_by_the_hook(world):
    users, p0, tau, feats, contacts = world
    camp = Campaign("spring", Offer("coupon", 5.0), items=["x"], budget=Budget(messages=6), channels=["email"],
                    order_value=50.0)
    kw = dict(contacts=contacts, channels=[Channel("email", cost=0.01)], propensity=response(p0, tau), holdout=0.3,
              random_state=3)
    a, b = Planner(**kw).plan([camp], now=NOW), Planner(**kw, uplift=None).plan([camp], now=NOW)
    assert [m.to_dict() for m in a] == [m.to_dict() for m in b] and a.holdouts == b.holdouts
    with pytest.raises(ps.ParameterError, match="uplift"):
        Planner(**kw, uplift="yes")
    bad = Planner(**kw, uplift=lambda c, u, i: np.full(len(u), 2.0))
    with pytest.raises(ps.ParameterError, match="uplift in \\[-1, 1\\]"):
        bad.plan([camp], now=NOW)


def test_uplift_data_from_logged_holdouts_trains_a_learner(world, tmp_path):
    users, p0, tau, feats, contacts = world
    big = [f"v{i:04d}" for i in range(3000)]
    rng = np.random.default_rng(2)
    x = rng.normal(size=len(big))
    features = pd.DataFrame({"x": x}, index=big)
    camp = Campaign("pilot", Offer("discount", 0.1), items=["x"], channels=["email"], order_value=40.0)
    planner = Planner(contacts=Contacts(big, consent={"email": np.ones(len(big), bool)}, timezone="UTC"),
                      channels=[Channel("email", cost=0.0)],
                      propensity=lambda c, u, i: np.full(len(u), 0.1), holdout=0.5, random_state=1)
    plan = planner.plan([camp], now=NOW)
    assert len(plan.holdouts) > 1000 and len(plan.messages) > 1000
    true_tau = dict(zip(big, np.where(x > 0, 0.3, 0.0)))
    with ps.EventStore(os.path.join(tmp_path, "events.db")) as store:
        rec = FeedbackRecorder(store)
        for m in plan.messages:
            rec.sent(m)
            if rng.random() < 0.1 + true_tau[m.user]:
                rec.converted(m, value=40.0)
        for h in plan.holdouts:
            rec.held_out(h)
            if rng.random() < 0.1:
                rec.converted(h, value=40.0)
        store.flush()
        table = uplift_data(store, features)
        assert len(uplift_data(store, campaign="other")) == 0
        with pytest.raises(ps.ParameterError, match="clash"):
            uplift_data(store, features.rename(columns={"x": "user"}))
    assert len(table) == len(plan.messages) + len(plan.holdouts)
    assert table["treatment"].sum() == len(plan.messages)
    assert table["p_treatment"].iloc[0] == pytest.approx(len(plan.messages) / len(table))
    assert set(table.columns) >= {"user", "campaign", "offer", "channel", "treatment", "converted", "revenue", "x"}
    assert (table.loc[table["converted"] == 1, "revenue"] == 40.0).all()
    model = TLearner("linear").fit(table[["x"]], table["treatment"], table["converted"])
    assert model.predict([[1.0]])[0] > model.predict([[-1.0]])[0] + 0.1


def test_uplift_scorer(world):
    users, p0, tau, feats, contacts = world
    scorer = UpliftScorer({"spring": TrueUplift(), "*": TLearnerStub(0.5)}, feats)
    assert scorer("spring", ["u04", "nobody"], []).tolist() == [0.25, 0.0]
    assert scorer("other", ["u04"], []).tolist() == [0.5]
    with pytest.raises(ps.ParameterError, match="no learner"):
        UpliftScorer({"spring": TrueUplift()}, feats)("other", ["u04"], [])
    with pytest.raises(ps.ParameterError, match="DataFrame"):
        UpliftScorer(TrueUplift(), {"u": 1})
    with pytest.raises(ps.ParameterError, match="predict"):
        UpliftScorer(object(), feats)


class TLearnerStub:
    def __init__(self, value):
        self.value = value

    def predict(self, X):
        return np.full(len(X), self.value)


def test_uplift_data_refuses_or_ignores_hostile_feedback_rows():
    """Feedback frames come from a store anybody's webhook writes to: odd rows give clear errors or no rows."""
    base = {"user": ["a", "b", "b"], "item": ["x", "x", "x"], "value": [np.nan, np.nan, 1e308],
            "event": ["send", "holdout", "conversion"],
            "properties": [{"message_id": "m1", "campaign": "c"}, {"message_id": "m2", "campaign": "c"},
                           {"message_id": "m2", "campaign": "c"}]}
    table = uplift_data(pd.DataFrame(base))
    assert table["treatment"].tolist() == [1, 0] and table["converted"].tolist() == [0, 1]
    no_id = dict(base, properties=[{"campaign": "c"}, "not a dict", None])
    with pytest.raises(ps.DataError, match="message_id"):
        uplift_data(pd.DataFrame(no_id))
    with pytest.raises(ps.DataError, match="properties"):
        uplift_data(pd.DataFrame({"event": ["send"]}))
    # a conversion for a message never planned adds no row; a campaign without a holdout has no contrast
    stray = dict(base, properties=[{"message_id": "m1", "campaign": "c"}, {"message_id": "m2", "campaign": "d"},
                                   {"message_id": "zzz", "campaign": "c"}])
    assert len(uplift_data(pd.DataFrame(stray))) == 0
    with pytest.raises(ps.ParameterError, match="expected an EventStore"):
        uplift_data("events.db")
