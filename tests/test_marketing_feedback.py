"""Feedback through the event store: recorded events, metrics by hand, A/B comparisons, the closed loop."""

from __future__ import annotations

import numpy as np
import pytest

import persona as ps
from persona.marketing import (
    Budget,
    Campaign,
    Channel,
    ContactHistory,
    Contacts,
    FeedbackRecorder,
    FrequencyCap,
    Holdout,
    Message,
    Planner,
    ab_test,
    campaign_metrics,
    compare_groups,
)
from persona.store import EventStore

T0 = 1_712_052_000.0  # 2024-04-02 10:00 UTC


def msg(mid, user, campaign="spring", channel="email", cost=0.01, variant="", segment="s1", propensity=1.0):
    return Message(mid, user, campaign, channel, send_at=T0, subject="", text="", items=("i1", "i2"),
                   offer="discount", cost=cost, variant=variant, segment=segment, propensity=propensity,
                   p_convert=0.1)


@pytest.fixture
def store(tmp_path):
    s = EventStore(str(tmp_path / "events.db"))
    yield s
    s.close()


def record_fixture(store, history=None):
    """spring: 4 messages (2 email at 0.01, 2 sms at 0.05) and 2 held-out users; autumn: 2 messages."""
    rec = FeedbackRecorder(store, history=history)
    m1, m2 = msg("m1", "ann", variant="A"), msg("m2", "bob", variant="B", segment="s2")
    m3, m4 = msg("m3", "cy", channel="sms", cost=0.05, variant="A"), msg("m4", "dee", channel="sms", cost=0.05,
                                                                          variant="B")
    h1 = Holdout("h1", "eve", "spring", "email", T0, propensity=0.1, p_convert=0.1, offer="discount", segment="s1")
    h2 = Holdout("h2", "fay", "spring", "email", T0, propensity=0.1, p_convert=0.1, offer="discount", segment="s2")
    a1, a2 = msg("a1", "ann", campaign="autumn", cost=0.02), msg("a2", "gus", campaign="autumn", cost=0.02)
    for m in (m1, m2, m3, m4, a1, a2):
        rec.sent(m)
    rec.held_out(h1)
    rec.held_out(h2)
    rec.opened(m1, timestamp=T0 + 60)
    rec.opened(m1, timestamp=T0 + 60)           # the same webhook twice: stored once
    rec.opened(m1.to_dict(), timestamp=T0 + 90)  # and once more from a stored dict: still one open
    rec.opened(m2, timestamp=T0 + 70)
    rec.opened(m3, timestamp=T0 + 80)
    rec.clicked(m1, item="i2", timestamp=T0 + 100)
    rec.clicked(m3, timestamp=T0 + 110)
    rec.converted(m1, value=50.0, item="i2", timestamp=T0 + 200, order_id="o1")
    rec.converted(m1, value=10.0, item="i1", timestamp=T0 + 300, order_id="o2")  # a second order
    rec.converted(m1, value=50.0, item="i2", timestamp=T0 + 200, order_id="o1")  # replayed: once
    rec.converted(h1, value=20.0, item="i9", timestamp=T0 + 400, order_id="o3")
    rec.opened(a1, timestamp=T0 + 50)
    store.flush()
    return (m1, m2, m3, m4, a1, a2), (h1, h2)


def test_events_carry_the_tracking_properties(store):
    record_fixture(store)
    ev = store.events()
    assert sorted(ev["event"].value_counts().to_dict().items()) == [
        ("click", 2), ("conversion", 3), ("holdout", 2), ("open", 4), ("send", 6)]
    send = ev[(ev["event"] == "send") & (ev["user"] == "cy")].iloc[0]
    p = send["properties"]
    assert p["message_id"] == "m3" and p["campaign"] == "spring" and p["channel"] == "sms"
    assert p["propensity"] == 1.0 and p["cost"] == 0.05 and p["group"] == "treatment" and p["variant"] == "A"
    assert send["item"] == "i1"  # the message's top item
    conv = ev[(ev["event"] == "conversion") & (ev["user"] == "eve")].iloc[0]
    assert conv["properties"]["group"] == "control" and conv["properties"]["propensity"] == 0.1
    assert conv["value"] == 20.0 and conv["item"] == "i9"
    assert store.stats()["duplicates"] == 3


def test_metrics_by_campaign_hand_computed(store):
    record_fixture(store)
    m = campaign_metrics(store)
    spring = m.loc["spring"]
    assert spring[["messages", "opens", "clicks", "conversions", "orders", "holdouts",
                   "holdout_conversions"]].tolist() == [4, 3, 2, 1, 2, 2, 1]
    assert spring["revenue"] == pytest.approx(60.0) and spring["cost"] == pytest.approx(0.12)
    assert spring["open_rate"] == pytest.approx(3 / 4) and spring["ctr"] == pytest.approx(2 / 4)
    assert spring["conversion_rate"] == pytest.approx(1 / 4)
    assert spring["revenue_per_message"] == pytest.approx(60 / 4)
    assert spring["roi"] == pytest.approx((60 - 0.12) / 0.12)
    assert spring["holdout_conversion_rate"] == pytest.approx(1 / 2) and spring["lift"] == pytest.approx(-1 / 4)
    autumn = m.loc["autumn"]
    assert autumn[["messages", "opens", "clicks", "conversions", "holdouts"]].tolist() == [2, 1, 0, 0, 0]
    assert autumn["roi"] == pytest.approx(-1.0) and np.isnan(autumn["lift"])
    assert campaign_metrics(store, margin=0.5).loc["spring", "roi"] == pytest.approx((30 - 0.12) / 0.12)
    # the same from a frame
    frame = store.events()
    assert campaign_metrics(frame).equals(m)


def test_metrics_by_channel_segment_group_variant(store):
    record_fixture(store)
    by_channel = campaign_metrics(store, by="channel")
    assert by_channel.loc["sms", ["messages", "opens", "clicks", "conversions"]].tolist() == [2, 1, 1, 0]
    assert by_channel.loc["sms", "cost"] == pytest.approx(0.10)
    by_group = campaign_metrics(store, by=["campaign", "group"])
    assert by_group.loc[("spring", "control"), ["messages", "holdouts", "holdout_conversions"]].tolist() == [0, 2, 1]
    assert np.isnan(by_group.loc[("spring", "control"), "ctr"])  # no message sent to the control group
    assert by_group.loc[("spring", "treatment"), "conversion_rate"] == pytest.approx(1 / 4)
    seg = campaign_metrics(store, by="segment")
    assert seg.loc["s2", ["messages", "holdouts"]].tolist() == [1, 1]
    assert seg.loc["s1", ["messages", "holdouts"]].tolist() == [5, 1]
    with pytest.raises(ps.ParameterError, match="by must"):
        campaign_metrics(store, by="colour")


def test_compare_groups_and_variants(store):
    record_fixture(store)
    lift = compare_groups(store, campaign="spring")
    ref = ab_test(1, 2, 1, 4, names=("control", "treatment"))
    assert (lift.rate_a, lift.rate_b, lift.ci_low, lift.ci_high, lift.p_value) == (
        ref.rate_a, ref.rate_b, ref.ci_low, ref.ci_high, ref.p_value)
    var = compare_groups(store, by="variant", a="A", b="B", campaign="spring", metric="click")
    assert (var.x_a, var.n_a, var.x_b, var.n_b) == (2, 2, 0, 2)
    rev = compare_groups(store, campaign="spring", metric="revenue", ci="normal")
    assert rev.rate_a == pytest.approx(10.0) and rev.rate_b == pytest.approx(15.0)
    with pytest.raises(ps.ParameterError, match="pass a= and b="):
        compare_groups(store, by="variant")
    with pytest.raises(ps.DataError, match="no recipients"):
        compare_groups(store, campaign="autumn")


def test_compare_is_a_deprecated_alias_of_compare_groups(store):
    """Issue 13 point 8: marketing's compare was renamed compare_groups (ope.compare compares estimators)."""
    record_fixture(store)
    import persona.marketing as pm

    with pytest.warns(DeprecationWarning, match="compare_groups"):
        old = pm.compare(store, campaign="spring")
    assert old == compare_groups(store, campaign="spring")
    assert "compare" not in pm.__all__ and "compare_groups" in pm.__all__


def test_history_from_the_store_equals_the_live_one(store):
    live = ContactHistory()
    record_fixture(store, history=live)
    rebuilt = ContactHistory.from_events(store.events(event_types=["send"]))
    contacts = Contacts(["ann", "bob", "cy", "dee", "eve", "fay", "gus"])
    for window in (86400, 7 * 86400):
        assert rebuilt.counts(contacts, T0 + 1, window).tolist() == live.counts(contacts, T0 + 1, window).tolist()
    assert rebuilt.counts(contacts, T0 + 1, 86400).tolist() == [2, 1, 1, 1, 0, 0, 1]
    assert rebuilt.campaign_totals("spring") == live.campaign_totals("spring") == (4, 0)


def test_bad_feedback_calls(store):
    rec = FeedbackRecorder(store)
    with pytest.raises(ps.ParameterError, match="lacks"):
        rec.opened({"message_id": "x"})
    with pytest.raises(ps.ParameterError, match="Message"):
        rec.sent({"message_id": "x", "user": "u", "campaign": "c", "channel": "email"})
    with pytest.raises(ps.ParameterError, match="EventStore"):
        FeedbackRecorder(object())
    store.track("u", "i", "open", properties={"campaign": "c"})
    store.flush()
    with pytest.raises(ps.DataError, match="message_id"):
        campaign_metrics(store)


def test_closed_loop_sends_count_against_caps_and_budgets(store):
    shop = ps.datasets.synthetic_shop(n_users=150, n_items=40, seed=1)
    model = ps.MostPopular().fit(shop.interactions)
    n = len(shop.users)
    contacts = Contacts(shop.users["user_id"], consent={"email": np.ones(n, bool)})
    history = ContactHistory()
    rec = FeedbackRecorder(store, history=history)
    camps = [Campaign(f"c{k}", items=shop.items["item_id"].tolist()[k * 5:(k + 1) * 5], channels=["email"],
                      budget=Budget(messages=100), order_value=30.0) for k in range(3)]
    planner = Planner(contacts=contacts, channels=[Channel("email", cost=0.001)], model=model, history=history,
                      caps=FrequencyCap(per_day=1, per_week=2), objective="conversions")
    per_user = {}
    for day in range(4):
        plan = planner.plan(camps, now=T0 + day * 86400)
        for m in plan:
            rec.sent(m)
            per_user.setdefault(m.user, []).append(day)
    store.flush()
    # one a day, two in any seven days; each campaign stops at its budget
    assert all(len(d) == len(set(d)) and len(d) <= 2 for d in per_user.values())
    totals = campaign_metrics(store)["messages"]
    assert (totals <= 100).all() and totals.sum() == min(300, 2 * n)
    assert ContactHistory.from_events(store.events(event_types=["send"])).counts(
        contacts, T0 + 3 * 86400, 7 * 86400).max() == 2
