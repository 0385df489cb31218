"""Planner: consent, quiet hours, caps and budgets are never violated; content, reasons, dry run."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import persona as ps
from persona.marketing import (
    AudienceRule,
    Budget,
    Campaign,
    Channel,
    ContactHistory,
    Contacts,
    FrequencyCap,
    ModelPropensity,
    Offer,
    Planner,
    rfm_table,
)

NOW = "2024-04-02T10:00:00Z"  # a Tuesday; 12:00 in Berlin (summer time), 06:00 in New York
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC")


@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=400, n_items=80, seed=5)


@pytest.fixture(scope="module")
def model(shop):
    return ps.ALS(factors=8, iterations=4, random_state=0).fit(shop.interactions)


def make_contacts(shop, seed=0, p=(0.7, 0.3, 0.5, 0.9)):
    rng = np.random.default_rng(seed)
    n = len(shop.users)
    consent = {ch: rng.random(n) < q for ch, q in zip(("email", "sms", "push", "web"), p)}
    return Contacts(shop.users["user_id"], consent=consent, timezone=rng.choice(ZONES, n),
                    segment=shop.users["segment"])


CHANNELS = [Channel("email", cost=0.002), Channel("sms", cost=0.05, quiet_hours=("21:00", "09:00"), per_week=1),
            Channel("push", cost=0.001, quiet_hours=("22:00", "08:00")), Channel("web")]


def categories(shop):
    return shop.items["category"].value_counts().index.tolist()


# ---------------------------------------------------------------------------------------------- content
def test_messages_show_scope_items_with_a_reason_from_the_history(shop, model):
    cat = categories(shop)[0]
    camp = Campaign("spring", Offer("discount", 0.1), categories=[cat], budget=Budget(messages=40),
                    channels=["email", "push"], template="$headline $items ($reason) for $user on $channel")
    planner = Planner(contacts=make_contacts(shop), channels=CHANNELS, model=model, catalog=shop.items,
                      interactions=shop.interactions)
    plan = planner.plan([camp], now=NOW)
    assert 0 < len(plan) <= 40
    scope = set(shop.items.loc[shop.items["category"] == cat, "item_id"])
    names = dict(zip(shop.items["item_id"], shop.items["name"]))
    seen = model.user_items_
    for m in plan:
        assert m.items and set(m.items) <= scope and len(m.items) <= camp.n_items
        row = model.user_map_.index_of(m.user)
        history = set(model.item_map_.ids[seen.indices[seen.indptr[row]:seen.indptr[row + 1]]])
        assert not set(m.items) & history  # filter_seen
        # the reason names the history item most similar to the top item
        best, _ = model.similar_items(m.items[0], n=1, items=sorted(history))
        assert m.reason.endswith(names[best[0]]) and m.reason.startswith("because you ")
        assert m.text == f"10% off: {', '.join(m.item_names)} ({m.reason}) for {m.user} on {m.channel}"
        assert m.item_names == tuple(names[i] for i in m.items)
        assert m.propensity == 1.0 and m.coupon == "" and 0 < m.p_convert <= 1
    # best candidates first, and they are the users the model ranks highest among the contactable
    values = [m.expected_value for m in plan]
    assert values == sorted(values, reverse=True)


def test_verbs_follow_the_strongest_event(shop, model):
    camp = Campaign("c", categories=[categories(shop)[1]], budget=Budget(messages=60), channels=["web"])
    plan = Planner(contacts=make_contacts(shop), channels=CHANNELS, model=model, catalog=shop.items,
                   interactions=shop.interactions).plan([camp], now=NOW)
    verbs = {m.reason.split(" ")[2] for m in plan if m.reason.startswith("because")}
    assert verbs <= {"viewed", "looked", "added", "bought"} and len(verbs) >= 2
    plain = Planner(contacts=make_contacts(shop), channels=CHANNELS, model=model, catalog=shop.items).plan([camp], now=NOW)
    assert {m.reason.split(" ")[2] for m in plain if m.reason.startswith("because")} == {"viewed"}


def test_coupons_variants_holdouts_and_the_dry_run(shop, model):
    cat = categories(shop)[0]
    camp = Campaign("vip", Offer("coupon", 2), categories=[cat], budget=Budget(coupons=60), channels=["email", "web"],
                    variants={"A": "$headline $items", "B": "Use $coupon for $offer on $item"}, order_value=40.0,
                    end="2024-04-30")
    planner = Planner(contacts=make_contacts(shop), channels=CHANNELS, model=model, catalog=shop.items, holdout=0.25,
                      random_state=3)
    plan = planner.plan([camp], now=NOW)
    assert len(plan) + len(plan.holdouts) == 60
    assert 5 <= len(plan.holdouts) <= 25
    codes = [m.coupon for m in plan]
    assert len(set(codes)) == len(codes) and all(c.startswith("VIP-") for c in codes)
    assert {m.variant for m in plan} == {"A", "B"}
    assert all(m.propensity == pytest.approx(0.75 * 0.5) for m in plan)
    assert all(h.propensity == 0.25 for h in plan.holdouts)
    b = next(m for m in plan if m.variant == "B")
    assert b.text == f"Use {b.coupon} for €2 off on {b.item_names[0]}"
    assert not {m.user for m in plan} & {h.user for h in plan.holdouts}
    # deterministic for a seed and time
    again = planner.plan([camp], now=NOW)
    assert [m.to_dict() for m in again] == [m.to_dict() for m in plan]

    report = plan.report()
    assert len(report) == 60 and set(report["group"]) == {"treatment", "control"}
    assert {"user", "campaign", "channel", "items", "reason", "p_convert", "why", "text"} <= set(report.columns)
    assert report.loc[report["group"] == "treatment", "why"].str.contains("rank").all()
    text = plan.summary()
    assert "vip:" in text and "held out" in text and "budget left 60" in text
    assert str(len(plan)) in repr(plan)


def test_margin_objective_skips_loss_making_offers_and_conversions_objective_does_not(shop, model):
    camp = Campaign("deep", Offer("coupon", 30), categories=[categories(shop)[0]], channels=["email"],
                    budget=Budget(messages=20), order_value=40.0)   # 40 * 0.3 - 30 < 0 per conversion
    kw = dict(contacts=make_contacts(shop), channels=CHANNELS, model=model, catalog=shop.items)
    assert len(Planner(**kw).plan([camp], now=NOW)) == 0
    assert "not worth a message" in Planner(**kw).plan([camp], now=NOW).summary()
    assert len(Planner(**kw, objective="conversions").plan([camp], now=NOW)) == 20


def test_audience_rules_segments_rfm_min_propensity_and_lists(shop, model):
    contacts = make_contacts(shop, p=(1, 0, 0, 0))
    rfm = rfm_table(shop.events, users=shop.users["user_id"])
    cat = categories(shop)[0]
    base = dict(categories=[cat], channels=["email"], budget=Budget(messages=500))
    planner = Planner(contacts=contacts, channels=CHANNELS, model=model, catalog=shop.items, rfm=rfm,
                      caps=FrequencyCap(per_day=None, per_week=None), objective="conversions")
    seg = planner.plan([Campaign("s", audience=AudienceRule(segments=["students", "seniors"]), **base)], now=NOW)
    assert len(seg) and {m.segment for m in seg} <= {"students", "seniors"}
    grp = planner.plan([Campaign("r", audience=AudienceRule(rfm_groups=["champions"]), **base)], now=NOW)
    assert len(grp) and {m.rfm_group for m in grp} == {"champions"}
    assert set(rfm.loc[[m.user for m in grp], "group"]) == {"champions"}
    hi = planner.plan([Campaign("p", audience=AudienceRule(min_propensity=0.05), **base)], now=NOW)
    assert len(hi) and min(m.p_convert for m in hi) >= 0.05
    users = shop.users["user_id"].tolist()[:30]
    allow = planner.plan([Campaign("l", audience=AudienceRule(users=users, exclude_users=users[:10]), **base)],
                         now=NOW)
    assert {m.user for m in allow} <= set(users[10:])
    with pytest.raises(ps.ParameterError, match="rfm="):
        Planner(contacts=contacts, channels=CHANNELS, model=model, catalog=shop.items).plan(
            [Campaign("r", audience=AudienceRule(rfm_groups=["loyal"]), **base)], now=NOW)


def test_milp_plan_is_at_least_as_good_as_greedy(shop, model):
    cats = categories(shop)
    camps = [Campaign(f"c{i}", Offer("discount", 0.1), categories=[cat], channels=["email", "sms", "push"],
                      budget=Budget(messages=25)) for i, cat in enumerate(cats[:3])]
    kw = dict(contacts=make_contacts(shop), channels=CHANNELS, model=model, catalog=shop.items, pool=120,
              caps=FrequencyCap(per_day=2, per_week=3))
    g = Planner(**kw).plan(camps, now=NOW)
    e = Planner(**kw, method="milp").plan(camps, now=NOW)
    assert e.guarantee == 1.0 and e.value >= g.value - 1e-9 and g.value >= g.guarantee * e.value
    assert e.value <= g.upper_bound + 1e-9


def test_budgets_continue_across_plans_and_revoked_consent_is_respected(shop, model):
    contacts = make_contacts(shop, p=(1, 0, 0, 1))
    history = ContactHistory()
    camp = Campaign("drip", categories=[categories(shop)[0]], channels=["email", "web"], budget=Budget(messages=50))
    planner = Planner(contacts=contacts, channels=CHANNELS, model=model, catalog=shop.items, history=history)
    first = planner.plan([camp], now=NOW)
    assert len(first) == 50 - 0
    for m in first.messages[:30]:
        history.record_message(m)
    assert planner.plan([camp], now=NOW).campaigns["drip"]["budget_left"] == 20
    later = planner.plan([camp], now="2024-04-03T10:00:00Z")
    assert len(later) == 20
    victim = later.messages[0]
    contacts.revoke(victim.user, victim.channel)
    again = planner.plan([camp], now="2024-04-03T10:00:00Z")
    assert all(not (m.user == victim.user and m.channel == victim.channel) for m in again)
    assert Planner(contacts=contacts, channels=CHANNELS, model=model, catalog=shop.items).plan(
        [Campaign("old", categories=[categories(shop)[0]], end="2024-01-01")], now=NOW).campaigns["old"]["note"]


def test_quiet_hours_are_local(shop, model):
    n = len(shop.users)
    contacts = Contacts(shop.users["user_id"], consent={"sms": np.ones(n, bool)},
                        timezone=np.where(np.arange(n) % 2 == 0, "Europe/Berlin", "America/New_York"))
    camp = Campaign("sms", categories=[categories(shop)[0]], channels=["sms"], budget=Budget(messages=1000))
    planner = Planner(contacts=contacts, channels=CHANNELS, model=model, catalog=shop.items, objective="conversions")
    # 10:00 UTC: 12:00 in Berlin (open), 06:00 in New York (quiet until 09:00)
    plan = planner.plan([camp], now=NOW)
    tz = dict(zip(contacts.user_ids.tolist(), contacts.timezone(np.arange(n))))
    assert len(plan) and {tz[m.user] for m in plan} == {"Europe/Berlin"}
    assert plan.campaigns["sms"]["quiet_hours"] > 0
    # 20:00 UTC: 22:00 in Berlin (quiet), 16:00 in New York (open)
    plan = planner.plan([camp], now="2024-04-02T20:00:00Z")
    assert len(plan) and {tz[m.user] for m in plan} == {"America/New_York"}


def test_a_propensity_function_without_a_model(shop):
    contacts = make_contacts(shop)
    p = dict(zip(shop.users["user_id"], np.linspace(0.001, 0.2, len(shop.users))))
    calls = []

    def propensity(campaign, users, items):
        calls.append(len(items))
        return np.array([p[u] for u in users])

    camp = Campaign("fn", items=["i0001", "i0002"], channels=["email"], budget=Budget(messages=10), order_value=30.0)
    plan = Planner(contacts=contacts, channels=CHANNELS, propensity=propensity).plan([camp], now=NOW)
    assert len(plan) == 10 and calls == [2]
    allowed = contacts.allowed("email")
    top = [u for u, ok in sorted(zip(contacts.user_ids, allowed), key=lambda x: -p[x[0]]) if ok][:10]
    assert sorted(m.user for m in plan) == sorted(top)
    assert all(m.items == ("i0001", "i0002") for m in plan)
    with pytest.raises(ps.ParameterError, match="probability"):
        Planner(contacts=contacts, channels=CHANNELS, propensity=lambda c, u, i: np.full(len(u), 2.0)).plan(
            [camp], now=NOW)


def test_model_propensity_calibration_recovers_a_logistic_link(model):
    rng = np.random.default_rng(0)
    z = rng.normal(size=20000)
    y = rng.random(20000) < 1 / (1 + np.exp(-(-3.0 + 0.8 * z)))
    prop = ModelPropensity(model).calibrate(z, y, l2=0.0)
    a, b = prop.link()
    assert a == pytest.approx(-3.0, abs=0.1) and b == pytest.approx(0.8, abs=0.08)
    prop.calibrate(z[:100], y[:100], campaign="x")
    assert prop.link("x") != prop.link() and prop.link("other") == prop.link()


@pytest.mark.parametrize("kwargs, match", [
    (dict(objective="revenue"), "objective"),
    (dict(method="lp"), "method"),
    (dict(holdout=1.0), "holdout"),
    (dict(model=None), "model= or a propensity"),
    (dict(pool=0), "pool"),
])
def test_bad_planner_arguments(shop, model, kwargs, match):
    args = dict(contacts=make_contacts(shop), channels=CHANNELS, model=model) | kwargs
    with pytest.raises(ps.ParameterError, match=match):
        Planner(**args)


def test_unknown_channels_and_categories_are_named(shop, model):
    planner = Planner(contacts=make_contacts(shop), channels=CHANNELS, model=model, catalog=shop.items)
    with pytest.raises(ps.ParameterError, match="carrier-pigeon"):
        planner.plan([Campaign("c", items=["i0001"], channels=["carrier-pigeon"])], now=NOW)
    with pytest.raises(ps.ParameterError, match="Garden"):
        planner.plan([Campaign("c", categories=["Garden"])], now=NOW)
    with pytest.raises(ps.ParameterError, match="unique"):
        planner.plan([Campaign("c", items=["i0001"]), Campaign("c", items=["i0002"])], now=NOW)


# ---------------------------------------------------------------------------------------------- the property
def local_minute(zone: str, t: float) -> int:
    d = dt.datetime.fromtimestamp(t, tz=zoneinfo.ZoneInfo(zone))
    return d.hour * 60 + d.minute


def quiet(channel: Channel, minute: int) -> bool:
    if channel.quiet_hours is None:
        return False
    a, b = channel.quiet_hours
    return (a <= minute < b) if a < b else (minute >= a or minute < b)


@st.composite
def scenarios(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_users = draw(st.integers(1, 40))
    users = [f"u{i}" for i in range(n_users)]
    consent = {ch: rng.random(n_users) < draw(st.floats(0, 1)) for ch in ("email", "sms", "push", "web")}
    zones = rng.choice(ZONES, n_users)
    segs = rng.choice(["a", "b", "c"], n_users)
    channels = []
    for name in ("email", "sms", "push", "web"):
        qh = None
        if draw(st.booleans()):
            a, b = draw(st.integers(0, 23)), draw(st.integers(0, 23))
            qh = (a, b) if a != b else None
        caps = draw(st.sampled_from([(None, None), (1, None), (None, 1), (0, 2), (2, 3)]))
        channels.append(Channel(name, cost=float(rng.choice([0, 0.01, 0.5])), quiet_hours=qh, per_day=caps[0],
                                per_week=caps[1], effectiveness=float(rng.choice([0.5, 1.0, 3.0]))))
    cap = FrequencyCap(per_day=draw(st.sampled_from([None, 0, 1, 2])), per_week=draw(st.sampled_from([None, 1, 2, 5])))
    now = 1712052000.0 + draw(st.integers(0, 7 * 24)) * 3600.0
    camps = []
    for k in range(draw(st.integers(1, 4))):
        chans = [c for c in ("email", "sms", "push", "web") if rng.random() < 0.6] or ["email"]
        offer = [Offer("coupon", 1.0), Offer("discount", 0.1), Offer("ad"), Offer("free_shipping", 2.0)][rng.integers(4)]
        budget = Budget(messages=draw(st.sampled_from([None, 0, 1, 3, 10])), coupons=draw(st.sampled_from([None, 2])))
        rule = AudienceRule(segments=["a", "b"] if rng.random() < 0.3 else ())
        start = now - 86400 if rng.random() < 0.9 else now + 3600
        camps.append(Campaign(f"c{k}", offer, items=["x", "y"], channels=chans, budget=budget, audience=rule,
                              start=start, order_value=float(rng.choice([10.0, 50.0]))))
    history = ContactHistory()
    for _ in range(draw(st.integers(0, 30))):
        history.record(users[rng.integers(n_users)], ("email", "sms", "push", "web")[rng.integers(4)],
                       f"c{rng.integers(4)}", now - float(rng.uniform(0, 10 * 86400)), coupon=bool(rng.random() < 0.3))
    p = rng.uniform(0, 0.5, n_users)
    method = draw(st.sampled_from(["greedy", "greedy", "milp"]))
    objective = draw(st.sampled_from(["margin", "conversions"]))
    holdout = draw(st.sampled_from([0.0, 0.3]))
    return dict(users=users, consent=consent, zones=zones, segs=segs, channels=channels, cap=cap, now=now,
                camps=camps, history=history, p=p, method=method, objective=objective, holdout=holdout)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_plans_never_violate_consent_quiet_hours_caps_or_budgets(sc):
    contacts = Contacts(sc["users"], consent=sc["consent"], timezone=sc["zones"], segment=sc["segs"])
    p = dict(zip(sc["users"], sc["p"]))
    planner = Planner(contacts=contacts, channels=sc["channels"], propensity=lambda c, u, i: np.array([p[x] for x in u]),
                      caps=sc["cap"], history=sc["history"], method=sc["method"], objective=sc["objective"],
                      holdout=sc["holdout"])
    plan = planner.plan(sc["camps"], now=sc["now"])
    now, h = sc["now"], sc["history"]
    row = {u: k for k, u in enumerate(sc["users"])}
    chans = {c.name: c for c in sc["channels"]}
    camps = {c.name: c for c in sc["camps"]}
    # history, as plain lists, counted independently of the code under test
    hist = list(zip(h._user, h._channel, h._campaign, h._time, h._coupon))

    def sent(user, window, channel=None):
        return sum(1 for u, c, _, t, _ in hist if u == user and now - window < t <= now and (channel in (None, c)))

    pairs = set()
    for m in plan.messages:
        k = row[m.user]
        assert sc["consent"][m.channel][k], "messaged without consent"
        assert not quiet(chans[m.channel], local_minute(sc["zones"][k], now)), "messaged in quiet hours"
        c = camps[m.campaign]
        assert m.channel in c.channels and c.active(now)
        assert not c.audience.segments or sc["segs"][k] in c.audience.segments
        assert (m.user, m.campaign) not in pairs
        pairs.add((m.user, m.campaign))
        assert bool(m.coupon) == c.offer.issues_coupon
    for user in sc["users"]:
        mine = [m for m in plan.messages if m.user == user]
        if sc["cap"].per_day is not None:
            assert sent(user, 86400) + len(mine) <= max(sc["cap"].per_day, sent(user, 86400))
        if sc["cap"].per_week is not None:
            assert sent(user, 7 * 86400) + len(mine) <= max(sc["cap"].per_week, sent(user, 7 * 86400))
        for ch in chans.values():
            on = sum(m.channel == ch.name for m in mine)
            if ch.per_day is not None:
                assert on == 0 or sent(user, 86400, ch.name) + on <= ch.per_day
            if ch.per_week is not None:
                assert on == 0 or sent(user, 7 * 86400, ch.name) + on <= ch.per_week
    for name, c in camps.items():
        n_msg = sum(m.campaign == name for m in plan.messages) + sum(x.campaign == name for x in plan.holdouts)
        before = [x for x in hist if x[2] == name and x[3] <= now]
        if c.budget.messages is not None:
            assert n_msg == 0 or len(before) + n_msg <= c.budget.messages
        if c.budget.coupons is not None and c.offer.issues_coupon:
            assert n_msg == 0 or sum(x[4] for x in before) + n_msg <= c.budget.coupons
    if sc["objective"] == "margin":
        assert all(m.expected_value > 0 for m in plan.messages)
    assert plan.value <= plan.upper_bound + 1e-9


def test_catalogue_id_column_is_configurable(shop, model):
    """Issue 12 point 14: a shop's catalogue names its ids "sku"; Planner(catalog_id="sku") reads it."""
    cat = categories(shop)[0]
    camp = Campaign("c", Offer("discount", 0.1), categories=[cat], budget=Budget(messages=20), channels=["email"])
    kw = dict(contacts=make_contacts(shop), channels=CHANNELS, model=model, interactions=shop.interactions)
    plain = Planner(catalog=shop.items, **kw).plan([camp], now=NOW)
    skus = shop.items.rename(columns={"item_id": "sku"})
    plan = Planner(catalog=skus, catalog_id="sku", **kw).plan([camp], now=NOW)
    assert [(m.user, m.items, m.item_names, m.text) for m in plan] == \
           [(m.user, m.items, m.item_names, m.text) for m in plain]
    assert len(plan) > 0 and all(m.item_names and m.item_names[0] != m.items[0] for m in plan)
    pl = pytest.importorskip("polars")  # in the test extra: a polars catalogue plans the same
    from_polars = Planner(catalog=pl.from_pandas(skus), catalog_id="sku", **kw).plan([camp], now=NOW)
    assert [m.text for m in from_polars] == [m.text for m in plain]
    # prices under the sku column give the default order value (margin objective)
    priced = Planner(catalog=skus, catalog_id="sku", objective="margin", **kw).plan([camp], now=NOW)
    assert len(priced) > 0
    with pytest.raises(ps.ParameterError, match=r"no 'item_id' column.*catalog_id="):
        Planner(catalog=skus, **kw)
    with pytest.raises(ps.ParameterError, match=r"catalog_id='article'.*sku"):
        Planner(catalog=skus, catalog_id="article", **kw)
    with pytest.raises(ps.ParameterError, match="catalog_id"):
        Planner(catalog=skus, catalog_id=3, **kw)
    with pytest.raises(ps.DataError, match="catalog"):
        Planner(catalog=[("a", "b")], **kw)
