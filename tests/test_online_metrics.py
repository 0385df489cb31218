"""Attribution and online metrics (issue 15, part 2): against hand-worked cases and slow references.

Attribution: a click / cart / purchase carrying a request id counts for the impression of that
request and item within its window; everything else is counted as unattributed, by reason, and
nothing is counted twice. Metrics: every column against a loop over the rows, the intervals
against their formulas and (revenue per impression) their coverage in simulation.
"""

from __future__ import annotations

import math
import os
import uuid

import numpy as np
import pandas as pd
import pytest

import persona as ps
from pgserver import PostgresUnavailable, ThrowawayPostgres
from services import missing_service
from persona.analytics import attribution, online_metrics
from persona.store import EventStore

T0 = 1_700_000_000.0
H = 3600.0


def frames(imps: list[tuple], events: list[tuple]):
    """Impressions ``(request_id, user, item, position, t, placement, variant)`` and events
    ``(event_id, t, user, item, event, value, request_id)`` as the store's frames."""
    i = pd.DataFrame(imps, columns=["request_id", "user", "item", "position", "t", "placement", "variant"])
    i["time"] = pd.to_datetime(i.pop("t"), unit="s", utc=True)
    e = pd.DataFrame(events, columns=["event_id", "t", "user", "item", "event", "value", "request_id"])
    e["time"] = pd.to_datetime(e.pop("t"), unit="s", utc=True)
    e["properties"] = [{"request_id": r} if r is not None else None for r in e.pop("request_id")]
    return i, e


def shown(rid, user, items, t, placement="home", variant=None):
    return [(rid, user, it, k + 1, t, placement, variant) for k, it in enumerate(items)]


# ------------------------------------------------------------------------------ attribution
def test_attribution_rules():
    imps, events = frames(
        shown("r1", "ann", ["a", "b", "c"], T0) + shown("r2", "bob", ["a", "d"], T0 + H),
        [("e1", T0 + 60, "ann", "b", "click", None, "r1"),            # attributed
         ("e2", T0 + 25 * H, "ann", "c", "click", None, "r1"),        # a click after 24 h: outside window
         ("e3", T0 + 6 * 24 * H, "ann", "c", "purchase", 30.0, "r1"),  # a purchase within 7 days: attributed
         ("e4", T0 + 60, "ann", "z", "click", None, "r1"),            # not in the list
         ("e5", T0 + 60, "eve", "a", "click", None, "r-unknown"),     # unknown request
         ("e6", T0 + 60, "eve", "a", "click", None, 12345),           # not a request id
         ("e7", T0 + 60, "eve", "a", "click", None, "x" * 1000),      # too long to be one
         ("e8", T0 + H - 30, "bob", "d", "cart", None, "r2"),         # 30 s before it was shown: clock skew
         ("e9", T0 + H - 600, "bob", "a", "cart", None, "r2"),        # 10 min before: outside window
         ("e10", T0 + 60, "ann", "a", "view", None, "r1"),            # a view is not an outcome
         ("e11", T0 + 60, "ann", "a", "purchase", 5.0, None)])        # organic purchase: not a claim
    att = attribution(impressions=imps, events=events).set_index("event_id")
    assert att["status"].to_dict() == {
        "e1": "attributed", "e2": "outside window", "e3": "attributed", "e4": "item not shown",
        "e5": "unknown request", "e6": "bad request id", "e7": "bad request id", "e8": "attributed",
        "e9": "outside window"}
    assert att.loc["e1", "position"] == 2 and att.loc["e8", "placement"] == "home"
    assert att.loc["e5", "position"] is None
    # windows are configurable
    longer = attribution(impressions=imps, events=events, windows={"click": pd.Timedelta(hours=30)})
    assert longer.set_index("event_id").loc["e2", "status"] == "attributed"
    with pytest.raises(ps.ParameterError, match="unknown outcome"):
        attribution(impressions=imps, events=events, windows={"view": 10})
    with pytest.raises(ps.ParameterError, match="seconds > 0"):
        attribution(impressions=imps, events=events, windows={"click": -1})
    # a shop's own event names
    renamed = events.assign(event=events["event"].replace({"cart": "add_to_cart"}))
    assert (attribution(impressions=imps, events=renamed)["kind"] == "cart").sum() == 2


def test_nothing_is_counted_twice():
    imps, events = frames(
        shown("r1", "ann", ["a", "b"], T0),
        [("click:r1:a", T0 + 5, "ann", "a", "click", None, "r1"),
         ("click:r1:a", T0 + 5, "ann", "a", "click", None, "r1"),     # the same beacon, delivered twice
         ("other-id", T0 + 9, "ann", "a", "click", None, "r1"),       # clicked again: still one clicked impression
         ("order-1", T0 + 99, "ann", "a", "purchase", 20.0, "r1"),
         ("order-1", T0 + 99, "ann", "a", "purchase", 20.0, "r1")])   # the webhook, delivered twice
    m = online_metrics(impressions=imps, events=events, by=None, catalog=10, popularity=pd.Series(dtype="int64"))
    row = m.iloc[0]
    assert row["impressions"] == 2 and row["clicks"] == 1 and row["ctr"] == 0.5
    assert row["purchases"] == 1 and row["revenue"] == 20.0 and row["revenue_per_impression"] == 10.0
    assert m.attrs["outcomes"] == {"click": {"attributed": 2}, "purchase": {"attributed": 1}}


def test_a_store_dedupes_a_replayed_beacon_and_counts_unknown_requests(tmp_path):
    store = EventStore(tmp_path / "e.db")
    rid = store.log_impression("ann", ["a", "b"], placement="home", timestamp=T0)
    for _ in range(3):  # a beacon retried by the browser: one event id
        store.track("ann", "b", "click", timestamp=T0 + 3, event_id=f"click:{rid}:b", properties={"request_id": rid})
    store.track("ann", "b", "click", timestamp=T0 + 3, properties={"request_id": uuid.uuid4().hex})
    store.flush()
    assert store.count(event_types="click") == 2 and store.stats()["duplicates"] == 2
    m = online_metrics(store, by="placement", catalog=2)
    assert m.loc["home", "clicks"] == 1 and m.attrs["unattributed"] == 1
    assert m.attrs["outcomes"]["click"] == {"attributed": 1, "unknown request": 1}
    store.close()


# ------------------------------------------------------------------------------ metrics vs a loop
def random_log(seed: int, n_req: int = 300, n_users: int = 40, n_items: int = 60):
    rng = np.random.default_rng(seed)
    imps, events = [], []
    for r in range(n_req):
        user = f"u{rng.integers(n_users)}"
        items = rng.choice(n_items, size=rng.integers(1, 6), replace=False)
        t = T0 + rng.uniform(0, 3 * 24 * H)
        placement = ["home", "pdp"][rng.integers(2)]
        variant = [None, "A", "B"][rng.integers(3)]
        imps += shown(f"r{r}", user, [f"i{x}" for x in items], t, placement, variant)
        for it in items:
            for kind, p, value in (("click", 0.3, None), ("cart", 0.1, None), ("purchase", 0.08, 1.0)):
                if rng.random() < p:
                    delay = rng.uniform(0, 2 * 24 * H)
                    events.append((uuid.uuid4().hex, t + delay, user, f"i{it}", kind,
                                   None if value is None else float(rng.gamma(2, 10)), f"r{r}"))
    return frames(imps, events)


def reference(imps, events, by, catalog, pop, total_users, z=1.959963984540054):
    """One loop over the events, then one over the impressions: the metrics as the docs define them."""
    win = {"click": 24 * H, "cart": 7 * 24 * H, "purchase": 7 * 24 * H}
    t_imp = {(r, it): t.timestamp() for r, it, t in zip(imps["request_id"], imps["item"], imps["time"])}
    flags: dict = {}
    for _, e in events.drop_duplicates("event_id").iterrows():
        rid = (e["properties"] or {}).get("request_id")
        key = (rid, e["item"])
        if key in t_imp and -60 <= e["time"].timestamp() - t_imp[key] <= win[e["event"]]:
            f = flags.setdefault(key, {"click": 0, "cart": 0, "purchase": 0, "revenue": 0.0})
            f[e["event"]] = 1
            if e["event"] == "purchase":
                f["revenue"] += e["value"]
    groups: dict = {}
    for _, i in imps.iterrows():
        g = tuple("(none)" if i[c] is None or i[c] != i[c] else i[c] for c in by)
        f = flags.get((i["request_id"], i["item"]), {"click": 0, "cart": 0, "purchase": 0, "revenue": 0.0})
        d = groups.setdefault(g, {"n": 0, "req": set(), "users": {}, "items": set(), "novelty": 0.0,
                                  "click": 0, "cart": 0, "purchase": 0, "revenue": 0.0})
        d["n"] += 1
        d["req"].add(i["request_id"])
        u = d["users"].setdefault(i["user"], [0.0, 0])
        u[0] += f["revenue"]
        u[1] += 1
        d["items"].add(i["item"])
        d["novelty"] += -math.log2((pop.get(i["item"], 0) + 1) / (total_users + 1))
        for k in ("click", "cart", "purchase", "revenue"):
            d[k] += f[k]
    out = {}
    for g, d in groups.items():
        n = d["n"]
        row = {"impressions": n, "requests": len(d["req"]), "users": len(d["users"]), "clicks": d["click"],
               "carts": d["cart"], "purchases": d["purchase"], "revenue": d["revenue"],
               "items_shown": len(d["items"]), "coverage": len(d["items"]) / catalog, "novelty": d["novelty"] / n}
        for name, x in (("ctr", d["click"]), ("cart_rate", d["cart"]), ("conversion", d["purchase"])):
            p = x / n
            centre = (p + z * z / (2 * n)) / (1 + z * z / n)
            half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
            row[name] = p
            row[name + "_low"] = 0.0 if x == 0 else max(centre - half, 0.0)
            row[name + "_high"] = 1.0 if x == n else min(centre + half, 1.0)
        rpi = d["revenue"] / n
        per = list(d["users"].values())
        k = len(per)
        mean_n = n / k
        dev = [r - rpi * m for r, m in per]
        var = sum((x - sum(dev) / k) ** 2 for x in dev) / (k - 1) if k > 1 else float("nan")
        se = math.sqrt(var / (k * mean_n ** 2))
        row.update(revenue_per_impression=rpi, revenue_per_impression_low=rpi - z * se,
                   revenue_per_impression_high=rpi + z * se)
        out[g] = row
    return out


@pytest.mark.parametrize("by", [("placement", "variant"), ("placement",), ("variant", "day"), ()])
@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_a_loop_over_the_rows(seed, by):
    imps, events = random_log(seed)
    pop = imps.groupby("item")["user"].nunique()
    pop.attrs["users"] = 50
    res = online_metrics(impressions=imps, events=events, by=by, catalog=80, popularity=pop)
    if "day" in by:
        imps = imps.assign(day=imps["time"].dt.floor("D").dt.tz_localize(None))
    ref = reference(imps, events, by, 80, pop.to_dict(), 50)
    assert len(res) == len(ref)
    for key, row in res.iterrows():
        key = key if isinstance(key, tuple) else (key,)
        g = tuple("(none)" if k is None or k != k else k for k in key) if by else ()
        want = ref[g]
        for col, v in want.items():
            assert row[col] == pytest.approx(v, rel=1e-9, abs=1e-12, nan_ok=True), (g, col)


def test_wilson_interval_and_zero_rates():
    imps, events = frames(shown("r", "ann", [f"i{k}" for k in range(100)], T0),
                          [(f"c{k}", T0 + 1, "ann", f"i{k}", "click", None, "r") for k in range(10)])
    row = online_metrics(impressions=imps, events=events, by=None, catalog=100,
                         popularity=pd.Series(dtype="int64")).iloc[0]
    assert (round(row["ctr_low"], 4), round(row["ctr_high"], 4)) == (0.0552, 0.1744)
    assert row["cart_rate"] == 0 and row["cart_rate_low"] == 0 and 0 < row["cart_rate_high"] < 0.05
    assert row["coverage"] == 1.0 and row["novelty"] == 0.0  # popularity unknown: all items max-novel at 0 users


def test_revenue_per_impression_interval_covers_the_truth():
    """95% delta-method intervals (users as clusters) cover the true revenue per impression ~95% of the time."""
    rng = np.random.default_rng(7)
    truth = 40 * np.mean(np.minimum(0.05 * rng.gamma(0.5, 2.0, 1_000_000), 1.0))  # E[p_user] * mean order value
    hits, trials = 0, 150
    for t in range(trials):
        n_users = 300
        lists = rng.integers(1, 8, n_users)  # impressions per user (one request each)
        p_user = np.minimum(0.05 * rng.gamma(0.5, 2.0, n_users), 1.0)  # users differ: revenue correlated within one
        user = np.repeat(np.arange(n_users), lists)
        pos = np.arange(len(user)) - np.repeat(np.cumsum(lists) - lists, lists)
        imps = pd.DataFrame({"request_id": [f"r{u}" for u in user], "user": user, "item": pos, "position": pos + 1,
                             "time": pd.Timestamp(T0, unit="s", tz="UTC")})
        bought = rng.random(len(user)) < p_user[user]
        k = int(bought.sum())
        events = pd.DataFrame({"event_id": [f"{t}-{j}" for j in range(k)], "user": user[bought], "item": pos[bought],
                               "event": "purchase", "value": rng.exponential(40, k),
                               "time": pd.Timestamp(T0 + 5, unit="s", tz="UTC"),
                               "request_id": [f"r{u}" for u in user[bought]]})
        row = online_metrics(impressions=imps, events=events, by=None, catalog=10,
                             popularity=pd.Series(dtype="int64")).iloc[0]
        hits += row["revenue_per_impression_low"] <= truth <= row["revenue_per_impression_high"]
    assert 0.89 <= hits / trials <= 0.99, hits / trials


def test_bad_arguments():
    imps, events = random_log(0, n_req=5)
    with pytest.raises(ps.ParameterError, match="by: expected names among"):
        online_metrics(impressions=imps, events=events, by="user")
    with pytest.raises(ps.ParameterError, match="give an EventStore"):
        online_metrics(by="placement")
    with pytest.raises(ps.DataError, match="no column"):
        online_metrics(impressions=imps.drop(columns=["request_id"]), events=events)
    with pytest.raises(ps.ParameterError, match="catalog expected"):
        online_metrics(impressions=imps, events=events, catalog=0, popularity=pd.Series(dtype="int64"))
    with pytest.raises(ps.ParameterError, match="both a click and a cart"):
        online_metrics(impressions=imps, events=events, outcomes={"cart": ["click"]})


# ------------------------------------------------------------------------------ from the store, both backends
@pytest.fixture(scope="module")
def pg_server():
    try:
        server = ThrowawayPostgres().start()
    except PostgresUnavailable as e:
        missing_service("postgresql", str(e))
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "events.db"), "persona_events"
    return request.getfixturevalue("pg_server").url, f"om_{uuid.uuid4().hex[:12]}"


def test_service_to_metrics_through_the_store(store_target):
    target, table = store_target
    shop = ps.datasets.synthetic_shop(n_users=120, n_items=50, seed=2)
    store = EventStore(target, table=table, pseudonymize_key=b"p" * 32)
    for row in shop.events.head(400).itertuples():
        store.track(row.user_id, row.item_id, str(row.event), timestamp=row.timestamp)
    svc = ps.serving.RecommenderService(ps.ItemKNN(k=20).fit(shop.interactions), store=store)
    users = shop.interactions.user_ids[:30]
    clicked = 0
    for k, u in enumerate(users):
        rec = svc.recommend(u, n=5, context={"placement": "home" if k % 2 else "pdp"})
        if k % 3 == 0:
            svc.track(u, rec.items[1], "click", properties={"request_id": rec.request_id},
                      event_id=f"click:{rec.request_id}:{rec.items[1]}")
            clicked += 1
    svc.track(users[0], "i0001", "click", properties={"request_id": "0" * 32})  # a stale link
    store.flush()
    m = online_metrics(store, by="placement")
    assert m["impressions"].sum() == 150 and m["clicks"].sum() == clicked and m.attrs["unattributed"] == 1
    assert m["requests"].sum() == 30 and (m["coverage"] > 0).all() and (m["novelty"] > 0).all()
    # forgetting a user takes their impressions and clicks out of the metrics
    svc.forget_user(users[0])
    after = online_metrics(store, by="placement")
    assert after["impressions"].sum() == 145 and after["clicks"].sum() == clicked - 1
    assert after.attrs["unattributed"] == 0
    svc.close()
    store.close()
