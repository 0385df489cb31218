"""Campaign, offer, channel, contact and RFM building blocks of persona.marketing."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

import persona as ps
from persona.marketing import (
    AudienceRule,
    Budget,
    Campaign,
    Channel,
    ContactHistory,
    Contacts,
    FrequencyCap,
    Offer,
    rfm_table,
)


# ---------------------------------------------------------------------------------------------- offers
def test_offer_texts_and_costs():
    assert Offer("discount", 0.2).text() == "20% off" and Offer("discount", 0.2).cost(50.0) == 10.0
    assert Offer("coupon", 5).cost(3.0) == 3.0  # never more than the order
    assert Offer("free_shipping", 4.5).cost(100.0) == 4.5 and Offer("free_shipping", 4.5).headline() == "Free shipping:"
    assert Offer().text() == "" and Offer().headline() == "Picked for you:" and Offer().cost(10.0) == 0.0
    assert Offer("coupon", 5).issues_coupon and not Offer("discount", 0.1).issues_coupon
    assert Offer("discount", 0.1, description="summer deal").text() == "summer deal"


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="bogus"), "kind"),
    (dict(kind="discount", value=10), "fraction"),
    (dict(kind="coupon", value=0), "amount"),
    (dict(kind="coupon", value=float("nan")), "finite"),
])
def test_bad_offers(kwargs, match):
    with pytest.raises(ps.ParameterError, match=match):
        Offer(**kwargs)


# ---------------------------------------------------------------------------------------------- campaigns
def test_campaign_normalises_and_checks():
    c = Campaign("spring", Offer("discount", 0.1), items=["a", "b"], categories="Skincare",
                 start="2024-03-01", end=dt.datetime(2024, 4, 1), channels="email",
                 template={"sms": "$offer $item", "*": "$headline $items"}, fields={"shop": "Acme"})
    assert c.items == ("a", "b") and c.categories == ("Skincare",) and c.channels == ("email",)
    assert c.start == dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc).timestamp()
    assert c.active(c.start) and not c.active(c.end) and not c.active(c.start - 1)
    assert c.template_for("sms") == "$offer $item" and c.template_for("email") == "$headline $items"
    assert c.margin_per_conversion(100.0) == pytest.approx(100 * 0.3 - 10)
    assert "spring" in repr(c)


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "scope"),
    (dict(items=["a"], template="Hi $firstname"), "unknown placeholder"),
    (dict(items=["a"], template="50$ off ${"), "valid template"),
    (dict(items=["a"], start="2024-02-01", end="2024-01-01"), "after start"),
    (dict(items=["a"], channels=["email", "email"]), "distinct"),
    (dict(items=["a"], margin=1.5), "margin"),
    (dict(items=["a"], n_items=0), "n_items"),
    (dict(items=["a"], fields={"user": "x"}), "fields"),
    (dict(items=["a"], variants={}), "variants"),
    (dict(items=[1.5]), "ids"),
    (dict(items=["a"], start="next week"), "ISO-8601"),
])
def test_bad_campaigns(kwargs, match):
    with pytest.raises(ps.ParameterError, match=match):
        Campaign("c", **kwargs)


def test_fields_extend_the_template_vocabulary():
    Campaign("c", items=["a"], template="$shop: $items", fields={"shop": "Acme"})
    with pytest.raises(ps.ParameterError, match="min_propensity"):
        AudienceRule(min_propensity=2)
    with pytest.raises(ps.ParameterError, match="Budget messages"):
        Budget(messages=-1)
    with pytest.raises(ps.ParameterError, match="Budget coupons"):
        Budget(coupons=1.5)


# ---------------------------------------------------------------------------------------------- channels
def test_quiet_hours_wrap_midnight_or_not():
    night = Channel("sms", quiet_hours=("21:00", "08:30"))
    minutes = np.array([0, 8 * 60 + 29, 8 * 60 + 30, 12 * 60, 20 * 60 + 59, 21 * 60, 23 * 60 + 59])
    assert night.is_quiet(minutes).tolist() == [True, True, False, False, False, True, True]
    lunch = Channel("push", quiet_hours=(12, 14))
    assert lunch.is_quiet(minutes).tolist() == [False, False, False, True, False, False, False]
    assert not Channel("web").is_quiet(0)
    with pytest.raises(ps.ParameterError, match="equal"):
        Channel("sms", quiet_hours=(8, 8))
    with pytest.raises(ps.ParameterError, match="HH:MM"):
        Channel("sms", quiet_hours=("25:00", "08:00"))
    with pytest.raises(ps.ParameterError, match="cost"):
        Channel("sms", cost=-1)


def test_local_time_follows_each_users_zone_and_daylight_saving():
    c = Contacts(["a", "b", "c", "d"], timezone=["Europe/Berlin", "America/New_York", "+05:30", "UTC"])
    winter = "2024-01-15T12:00:00Z"
    summer = "2024-07-15T12:00:00Z"
    assert c.local_minute(winter).tolist() == [13 * 60, 7 * 60, 17 * 60 + 30, 12 * 60]
    assert c.local_minute(summer).tolist() == [14 * 60, 8 * 60, 17 * 60 + 30, 12 * 60]
    with pytest.raises(ps.ParameterError, match="time zone"):
        Contacts(["a"], timezone=["Mars/Olympus"])


def test_contacts_consent_is_opt_in_and_revocable():
    df = pd.DataFrame({"user_id": ["a", "b", "c"], "email_ok": [True, False, True], "segment": ["x", "y", "x"],
                       "tz": ["UTC", "Europe/Paris", "UTC"]})
    c = Contacts.from_frame(df, consent={"email": "email_ok"}, timezone="tz", segment="segment")
    assert c.allowed("email").tolist() == [True, False, True]
    assert c.allowed("sms").tolist() == [False, False, False]  # no data: nobody consented
    c.grant("b", "sms")
    c.revoke("a", "email")
    assert c.allowed("email").tolist() == [False, False, True] and c.allowed("sms").tolist() == [False, True, False]
    assert c.segment.tolist() == ["x", "y", "x"] and c.index(["c", "zz"]).tolist() == [2, -1]
    with pytest.raises(ps.DataError, match="unknown user"):
        c.revoke("zz", "email")
    with pytest.raises(ps.DataError, match="booleans"):
        Contacts(["a", "b"], consent={"email": [True]})


def test_contact_history_counts_rolling_windows():
    c = Contacts(["a", "b"])
    h = ContactHistory()
    now = 1_000_000.0
    h.record("a", "email", "x", now - 3600)           # in the day
    h.record("a", "sms", "y", now - 2 * 86400, coupon=True)  # in the week only
    h.record("a", "email", "x", now - 86400)          # exactly one day ago: outside (now - 24 h, now]
    h.record("b", "email", "x", now + 10)             # the future: not counted
    assert h.counts(c, now, 86400).tolist() == [1, 0]
    assert h.counts(c, now, 7 * 86400).tolist() == [3, 0]
    assert h.counts(c, now, 7 * 86400, channel="sms").tolist() == [1, 0]
    assert h.campaign_totals("x") == (3, 0) and h.campaign_totals("y") == (1, 1)
    assert h.campaign_totals("x", until=now) == (2, 0)
    assert FrequencyCap().per_day == 1 and FrequencyCap(per_day=None).per_day is None


# ---------------------------------------------------------------------------------------------- RFM
def test_rfm_hand_computed():
    ev = pd.DataFrame({
        "user_id": ["a", "a", "a", "b", "c", "c", "d", "e"],
        "timestamp": pd.to_datetime(["2024-01-01", "2024-01-25", "2024-01-30", "2024-01-02", "2024-01-28",
                                     "2024-01-29", "2024-01-10", "2024-01-31"], utc=True),
        "value": [10.0, 20.0, 30.0, 100.0, 5.0, 5.0, 50.0, 1.0],
        "event": ["purchase"] * 8,
    })
    ev = pd.concat([ev, ev.assign(event="view", value=np.nan)])  # views never count
    t = rfm_table(ev, now="2024-02-01", users=["a", "b", "c", "d", "e", "f"])
    assert t.loc["a", "recency_days"] == 2.0 and t.loc["a", "frequency"] == 3 and t.loc["a", "monetary"] == 60.0
    # five buyers: score = 1 + floor(5 * share strictly worse)
    # recency days a 2, b 30, c 3, d 22, e 1 -> e best (4 worse), a (3), c (2), d (1), b (0)
    assert t.loc[["e", "a", "c", "d", "b"], "r"].tolist() == [5, 4, 3, 2, 1]
    # frequency a 3, c 2, b d e 1
    assert t.loc[["a", "c", "b", "d", "e"], "f"].tolist() == [5, 4, 1, 1, 1]
    # monetary b 100, a 60, d 50, c 10, e 1
    assert t.loc[["b", "a", "d", "c", "e"], "m"].tolist() == [5, 4, 3, 2, 1]
    assert t["group"].to_dict() == {"a": "champions", "b": "hibernating", "c": "loyal", "d": "hibernating",
                                    "e": "new", "f": "prospect"}
    assert t.loc["a", "rfm"] == "454" and t.loc["f", "rfm"] == "000"


def test_rfm_from_interactions_with_prices():
    shop = ps.datasets.synthetic_shop(n_users=300, n_items=60, seed=2)
    from_events = rfm_table(shop.events)
    prices = shop.items.set_index("item_id")["price"]
    from_inter = rfm_table(shop.interactions, prices=prices)
    common = from_events.index
    assert (from_inter.loc[common, "frequency"] >= 1).all()
    assert np.allclose(from_inter.loc[common, "monetary"], from_events.loc[common, "monetary"], rtol=1e-4)
    assert set(from_events["group"]) <= {"champions", "loyal", "new", "promising", "at_risk", "hibernating"}
    with pytest.raises(ps.DataError, match="column"):
        rfm_table(shop.events, user="customer")


def test_contacts_and_rfm_read_polars_and_arrow_tables():
    """Issue 12 point 10: marketing inputs that take frames take polars and pyarrow tables too."""
    import pyarrow as pa

    pl = pytest.importorskip("polars")  # in the test extra
    df = pd.DataFrame({"user_id": ["a", "b", "c"], "email_ok": [True, False, True], "segment": ["x", "y", "x"],
                       "tz": ["UTC", "Europe/Paris", "UTC"]})
    want = Contacts.from_frame(df, consent={"email": "email_ok"}, timezone="tz", segment="segment")
    for table in (pl.from_pandas(df), pa.Table.from_pandas(df, preserve_index=False)):
        c = Contacts.from_frame(table, consent={"email": "email_ok"}, timezone="tz", segment="segment")
        assert c.user_ids.tolist() == want.user_ids.tolist()
        assert c.allowed("email").tolist() == want.allowed("email").tolist()
        assert c.segment.tolist() == want.segment.tolist()
    with pytest.raises(ps.DataError, match="expected a pandas DataFrame or a polars / pyarrow table"):
        Contacts.from_frame([("a", True)])
    ev = pd.DataFrame({"user_id": ["a", "a", "b"], "value": [10.0, 20.0, 5.0], "event": ["purchase"] * 3,
                       "timestamp": pd.to_datetime(["2024-01-01", "2024-01-20", "2024-01-02"], utc=True)})
    table = rfm_table(ev, now="2024-02-01")
    for other in (pl.from_pandas(ev), pa.Table.from_pandas(ev, preserve_index=False)):
        pd.testing.assert_frame_equal(rfm_table(other, now="2024-02-01"), table)
