"""Hostile requests against persona's web endpoints, Flask and Django alike (issue 11, points 1-5).

Each test runs once per framework through its real test client: the Flask extension with its
defaults (``Persona(app, service=..., store=...)``) and the example Django shop's settings. A
test states what an attacker tries and what the default integration must answer; the opt-ins
(``user_in_url``, ``trusted_tracking``, ``client_options``, ``stats_permission``) are checked to
open exactly what they name. The last test fuzzes every endpoint with hypothesis.
"""

from __future__ import annotations

import json
import logging
import re
import string

import pytest
from hypothesis import HealthCheck, event as note, given, settings
from hypothesis import strategies as st

from contrib_web import django_site, flask_world, web_for
from persona.errors import StoreError

FRAMEWORKS = ["flask", "django"]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    world = flask_world(tmp_path_factory)
    site = django_site(tmp_path_factory)
    yield {"flask": world, "django": site}
    world["service"].close()
    world["store"].close()
    from persona.contrib.django import runtime

    runtime.reset()


@pytest.fixture(params=FRAMEWORKS)
def framework(request):
    return request.param


@pytest.fixture
def web(framework, worlds):
    """The integration with its defaults: what a shop gets without opting in to anything."""
    with web_for(framework, worlds) as w:
        yield w


def stored(web, user) -> int:
    st_ = web.store()
    st_.flush()
    return st_.count(user=user)


def assert_json_error(got, status):
    assert got.status == status, (got.status, got.text[:300])
    assert got.is_json, got.content_type
    body = got.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    return body


# ------------------------------------------------------------------------------ 1. no history oracle
def test_recommendations_by_user_id_are_off_by_default(web):
    """Regression: GET recommendations/<user>?filter_seen=0 minus the normal answer was anyone's history."""
    victim = web.known_user(3)
    for query in ("n=50", "n=50&filter_seen=0"):
        body = assert_json_error(web.get(web.url("recommendations", victim), query), 403)
        assert "user_in_url" in body["error"] or "USER_IN_URL" in body["error"]


def test_a_signed_in_user_may_ask_only_for_themself(framework, worlds):
    with web_for(framework, worlds, signed_in=True) as web:
        me, other = web.known_user(1), web.known_user(2)
        own = web.get(web.url("recommendations", me), "n=3", headers={"X-User": me})
        assert own.status == 200 and own.json()["user"] == me
        assert_json_error(web.get(web.url("recommendations", other), "n=3", headers={"X-User": me}), 403)
        assert_json_error(web.get(web.url("recommendations", other), "n=3"), 403)


@pytest.mark.parametrize("switch", ["filter_seen=0", "items=i0001,i0002"])
def test_history_revealing_switches_are_not_client_controllable(framework, worlds, switch):
    with web_for(framework, worlds, signed_in=True) as web:
        me = web.known_user(1)
        body = assert_json_error(web.get(web.url("recommendations"), f"n=5&{switch}", headers={"X-User": me}), 403)
        assert body["field"] == switch.split("=")[0] and "client_options" in body["error"].lower()
        assert web.get(web.url("recommendations"), "n=5&in_stock=1&exclude=i0001",
                       headers={"X-User": me}).status == 200


def test_client_options_and_user_in_url_open_exactly_what_they_name(framework, worlds):
    opts = {"user_in_url": True, "client_options": ["filter_seen"]}
    with web_for(framework, worlds, **opts) as web:
        victim = web.known_user(3)
        assert web.get(web.url("recommendations", victim), "n=5&filter_seen=0").status == 200
        assert_json_error(web.get(web.url("recommendations", victim), "n=5&items=i0001"), 403)


# ------------------------------------------------------------------------------ 2. no tracking as someone else
def test_an_anonymous_request_cannot_track_for_a_named_user(web):
    victim = web.known_user(5)
    before = stored(web, victim)
    got = web.post(web.url("events"), {"user": victim, "item": web.known_item(1), "event": "purchase"})
    body = assert_json_error(got, 403)
    assert body["field"] == "user"
    batch = web.post(web.url("events"), {"events": [{"item": web.known_item(1), "event": "view"},
                                                    {"user": victim, "item": web.known_item(2), "event": "view"}]})
    assert_json_error(batch, 403)
    assert stored(web, victim) == before


def test_an_anonymous_request_tracks_for_the_visitor_id_the_integration_issued(web):
    first = web.post(web.url("events"), {"item": web.known_item(1), "event": "view"})
    assert first.status == 202, first.text
    second = web.post(web.url("events"), {"item": web.known_item(2), "event": "cart"})
    assert second.status == 202, second.text
    mine = web.get(web.url("recommendations"), "n=3")
    assert mine.status == 200, mine.text
    visitor = mine.json()["user"]
    assert re.fullmatch(r"visitor-[0-9a-f]{32}", visitor), visitor
    assert stored(web, visitor) == 2
    # its own id, named in the body, is accepted too
    assert web.post(web.url("events"), {"user": visitor, "item": web.known_item(3), "event": "view"}).status == 202


def test_the_flask_visitor_cookie_is_signed_httponly_and_lax(worlds):
    with web_for("flask", worlds) as web:
        got = web.post(web.url("events"), {"item": web.known_item(1), "event": "view"})
        assert got.status == 202, got.text
        cookie = got.cookies["persona_visitor"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
        victim = web.known_user(4)
        before = stored(web, victim)
        web.client.set_cookie("persona_visitor", victim)  # a forged, unsigned cookie naming a customer
        forged = web.post(web.url("events"), {"item": web.known_item(1), "event": "view"})
        assert forged.status == 202 and stored(web, victim) == before
    with web_for("flask", worlds, secure_cookie=True) as web:
        got = web.post(web.url("events"), {"item": web.known_item(1), "event": "view"})
        assert "Secure" in got.cookies["persona_visitor"]


def test_flask_without_a_secret_key_does_not_fall_open(worlds):
    with web_for("flask", worlds, secret_key=None) as web:
        victim = web.known_user(6)
        before = stored(web, victim)
        assert_json_error(web.post(web.url("events"), {"user": victim, "item": "i0001", "event": "view"}), 403)
        body = assert_json_error(web.post(web.url("events"), {"item": "i0001", "event": "view"}), 403)
        assert "secret_key" in body["error"]
        assert stored(web, victim) == before


def test_django_without_session_middleware_does_not_fall_open(worlds):
    with web_for("django", worlds, sessions=False) as web:
        victim = web.known_user(6)
        before = stored(web, victim)
        got = web.post(web.url("events"), {"user": victim, "item": web.known_item(1), "event": "purchase"})
        assert_json_error(got, 403)
        body = assert_json_error(web.post(web.url("events"), {"item": web.known_item(1), "event": "view"}), 403)
        assert "session" in body["error"].lower()
        assert stored(web, victim) == before


def test_trusted_tracking_lets_server_side_callers_name_users(framework, worlds):
    with web_for(framework, worlds, trusted_tracking=True) as web:
        got = web.post(web.url("events"), {"user": "server-side-user", "item": web.known_item(1), "event": "view"})
        assert got.status == 202, got.text
        assert stored(web, "server-side-user") == 1


# ------------------------------------------------------------------------------ 2b. event ids are per user
def test_a_client_cannot_claim_another_users_event_id_first(framework, worlds):
    """Regression: posted event ids shared one namespace, so whoever knew an id in advance (an order
    line, another user's click id) could post it first and the genuine event was dropped as a duplicate."""
    import uuid

    with web_for(framework, worlds, signed_in=True) as web:
        store = web.store()
        tag = uuid.uuid4().hex[:12]
        victim, mallory = f"victim-{tag}", f"mallory-{tag}"
        item = web.known_item(1)
        rid = uuid.uuid4().hex
        order_line, click_id = f"order-{tag}-line-1", f"click:{rid}:{item}"
        for eid in (order_line, click_id):
            got = web.post(web.url("events"), {"item": item, "event": "purchase", "event_id": eid},
                           headers={"X-User": mallory})
            assert got.status == 202, got.text
            assert got.json()["event_ids"][0] not in (order_line, click_id)
        # the genuine events: the shop's server records the order line under its own exact id, and the
        # victim's browser posts its click (twice: a retried beacon)
        assert store.track(victim, item, "purchase", event_id=order_line) == order_line
        answers = [web.post(web.url("events"), {"item": item, "event": "click", "event_id": click_id,
                                                "properties": {"request_id": rid}}, headers={"X-User": victim})
                   for _ in range(2)]
        assert [a.status for a in answers] == [202, 202]
        assert answers[0].json()["event_ids"] == answers[1].json()["event_ids"]
        store.flush()
        mine = store.events(user=victim)
        assert sorted(mine["event"]) == ["click", "purchase"]  # both genuine events are kept, the click once
        assert order_line in set(mine["event_id"])
        theirs = store.events(user=mallory)
        assert len(theirs) == 2 and not {order_line, click_id} & set(theirs["event_id"])


def test_an_anonymous_visitors_event_ids_are_scoped_to_the_visitor(web):
    got = web.post(web.url("events"), {"item": web.known_item(2), "event": "view", "event_id": "page-1"})
    assert got.status == 202, got.text
    (eid,) = got.json()["event_ids"]
    assert eid.startswith("c:") and eid.endswith(":page-1")


def test_trusted_server_side_callers_keep_their_exact_event_ids(framework, worlds):
    import uuid

    with web_for(framework, worlds, trusted_tracking=True) as web:
        eid = f"webhook-{uuid.uuid4().hex}"
        got = web.post(web.url("events"), {"user": "server-side-user", "item": web.known_item(1), "event": "purchase",
                                           "event_id": eid})
        assert got.status == 202, got.text
        assert got.json()["event_ids"] == [eid]


def test_events_of_a_user_who_withdrew_personalisation_are_not_recorded(framework, worlds):
    import uuid

    with web_for(framework, worlds, signed_in=True) as web:
        store = web.store()
        who = f"private-{uuid.uuid4().hex[:12]}"
        assert store.set_consent(who, "personalisation", False, source="cookie banner")
        got = web.post(web.url("events"), {"events": [{"item": web.known_item(1), "event": "view"},
                                                      {"item": web.known_item(2), "event": "cart"}]},
                       headers={"X-User": who})
        assert got.status == 202, got.text
        assert got.json()["event_ids"] == [None, None]
        assert stored(web, who) == 0
        store.set_consent(who, "personalisation", True, source="account settings")
        again = web.post(web.url("events"), {"item": web.known_item(1), "event": "view"}, headers={"X-User": who})
        assert again.status == 202 and again.json()["event_ids"][0] is not None
        assert stored(web, who) == 1


# ------------------------------------------------------------------------------ 3. /stats
def test_stats_are_not_public(framework, worlds):
    with web_for(framework, worlds) as web:
        assert_json_error(web.get(web.url("stats")), 403)
    with web_for(framework, worlds, stats_permission=lambda: False) as web:
        assert_json_error(web.get(web.url("stats")), 403)
    with web_for(framework, worlds, stats_permission=lambda: True) as web:
        got = web.get(web.url("stats"))
        assert got.status == 200 and "service" in got.json()


# ------------------------------------------------------------------------------ 4. limits
def test_an_oversized_event_is_413(web):
    event = {"item": web.known_item(1), "event": "view"}
    padded = json.dumps(event).replace(",", "," + " " * (65 * 1024), 1).encode()  # valid JSON, 65 KB
    assert_json_error(web.post(web.url("events"), data=padded), 413)
    batch = json.dumps({"events": [event] * 3}).replace(",", "," + " " * (1025 * 1024), 1).encode()
    assert_json_error(web.post(web.url("events"), data=batch), 413)
    fat = {"events": [{**event, "properties": {"pad": "x" * 60_000}}]}  # one event of a batch over 64 KB
    assert web.post(web.url("events"), fat).status in (400, 413)


@pytest.mark.parametrize("field", ["user", "item", "event_id"])
def test_overlong_and_control_character_ids_are_400(framework, worlds, field):
    with web_for(framework, worlds, trusted_tracking=True) as web:
        web.store().flush()
        before = web.store().count()
        for bad in ("u" * 10_000, "a\x00b", "a\nb"):
            event = {"user": "ann", "item": web.known_item(1), "event": "view", field: bad}
            body = assert_json_error(web.post(web.url("events"), event), 400)
            assert body["field"] == field
        web.store().flush()
        assert web.store().count() == before


def test_overlong_ids_in_urls_and_queries_are_400(web):
    assert_json_error(web.get(web.url("similar", "i" * 10_000)), 400)
    assert_json_error(web.get(web.url("recommendations", "u" * 10_000)), 400)
    assert_json_error(web.get(web.url("similar", "a\x00b")), 400)
    assert_json_error(web.get(web.url("similar", web.known_item(1)), "exclude=" + "x" * 10_000), 400)
    many = ",".join(f"i{k}" for k in range(5000))
    assert_json_error(web.get(web.url("similar", web.known_item(1)), "exclude=" + many), 400)


@pytest.mark.parametrize("event", ["v" * 300, "<script>alert(1)</script>", "view\x00", "view cart", "ünïcode"])
def test_event_names_are_short_and_plain(web, event):
    body = assert_json_error(web.post(web.url("events"), {"item": "i0001", "event": event}), 400)
    assert body["field"] == "event"


def nested(depth: int):
    out: dict = {}
    for _ in range(depth):
        out = {"a": out}
    return out


def test_deep_or_large_properties_are_400_never_a_recursion_error(web):
    body = assert_json_error(web.post(web.url("events"), {"item": "i0001", "event": "view",
                                                          "properties": nested(40)}), 400)
    assert body["field"] == "properties"
    deep = b'{"item": "i0001", "event": "view", "properties": ' + b'{"a":' * 9_000 + b"1" + b"}" * 9_001
    assert len(deep) < 64 * 1024
    assert_json_error(web.post(web.url("events"), data=deep), 400)
    assert_json_error(web.post(web.url("events"), data=b"[" * 30_000 + b"]" * 30_000), 400)
    big = {"item": "i0001", "event": "view", "properties": {f"k{i}": "v" * 100 for i in range(300)}}
    body = assert_json_error(web.post(web.url("events"), big), 400)
    assert body["field"] == "properties"
    nan = b'{"item": "i0001", "event": "view", "properties": {"x": NaN}}'
    assert_json_error(web.post(web.url("events"), data=nan), 400)


@pytest.mark.parametrize("method, parts", [("GET", ()), ("GET", ("no-such-endpoint",)),
                                           ("GET", ("recommendations", "a", "b")),
                                           ("POST", ("stats",)), ("GET", ("events",)), ("DELETE", ("events",))])
def test_client_errors_under_the_prefix_are_json(web, method, parts):
    got = web.request(method, web.url(*parts))
    assert got.status in (404, 405), got.status
    assert_json_error(got, got.status)


# ------------------------------------------------------------------------------ 5. no internals in answers
LEAKS = re.compile(r"postgres(ql)?://|sqlite|Traceback|File \"|/tmp/|/work/|/home/|\.persona\b|\.db\b|[A-Z]:\\\\")


class BrokenStore:
    """A store whose database went away, with the kind of message a driver gives."""

    def track(self, *args, **kwargs):
        raise StoreError("could not connect to postgresql://shop:hunter2@db.internal:5432/events "
                         "(/var/lib/persona/events.db)")

    def stats(self):
        return {"last_error": "OperationalError('/var/lib/persona/events.db is locked')"}

    def flush(self):
        pass


def test_a_failing_store_answers_503_without_its_url_or_path(framework, worlds, monkeypatch, caplog):
    if framework == "django":
        from persona.contrib.django import runtime

        monkeypatch.setattr(runtime, "get_store", lambda: BrokenStore())
        ctx = web_for(framework, worlds, trusted_tracking=True, stats_permission=lambda: True)
    else:
        ctx = web_for(framework, worlds, trusted_tracking=True, store=BrokenStore(), stats_permission=lambda: True)
    with ctx as web, caplog.at_level(logging.ERROR, logger="persona.contrib"):
        got = web.post(web.url("events"), {"user": "ann", "item": "i0001", "event": "view"})
        assert_json_error(got, 503)
        assert not LEAKS.search(got.text) and "hunter2" not in got.text, got.text
        assert "hunter2" in caplog.text or "db.internal" in caplog.text  # the detail goes to the log
        stats = web.get(web.url("stats"))
        assert stats.status == 200 and not LEAKS.search(stats.text), stats.text


def test_no_model_yet_answers_503_without_the_model_path(framework, worlds, tmp_path):
    missing = tmp_path / "secret-folder" / "model.persona"
    if framework == "flask":
        import flask

        from persona.contrib.flask import Persona

        app = flask.Flask("unpublished")
        app.config.update(PERSONA_MODEL_PATH=str(missing))
        Persona(app, user_in_url=True)
        got = app.test_client().get("/persona/similar/i0001")
        status, text = got.status_code, got.get_data(as_text=True)
    else:
        from django.test import Client, override_settings

        with override_settings(PERSONA={**worlds["django"]["conf"], "MODEL_PATH": missing}):
            got = Client().get("/persona/similar/i0001/")
        status, text = got.status_code, got.content.decode()
    assert status == 503 and "secret-folder" not in text and not LEAKS.search(text), text
    assert "no model" in json.loads(text)["error"]


class ExplodingService:
    model = None
    store = None

    def similar_items(self, *args, **kwargs):
        raise RuntimeError("boom at /srv/shop/secret.py line 3")

    recommend = similar_items


def test_an_unexpected_error_is_a_json_500_without_its_text(framework, worlds, monkeypatch):
    if framework == "django":
        from persona.contrib.django import runtime

        monkeypatch.setattr(runtime, "get_service", lambda: ExplodingService())
        ctx = web_for(framework, worlds)
    else:
        ctx = web_for(framework, worlds, service=ExplodingService())
    with ctx as web:
        got = web.get(web.url("similar", "i0001"))
        assert_json_error(got, 500)
        assert "boom" not in got.text and "/srv/" not in got.text


# ------------------------------------------------------------------------------ issue 15: request ids and placements
HOSTILE_REQUEST_IDS = [("x" * 10_000, (400, 413)), ("☃ünïcødé", (400,)), (12345, (400,)), ([1, 2], (400,)),
                       ({"id": "a"}, (400,)), ("a\nb", (400,)), ("", (400,)), ("../../etc/passwd", (400,)),
                       ("x" * 129, (400,)), (True, (400,))]


@pytest.mark.parametrize("rid,statuses", HOSTILE_REQUEST_IDS, ids=lambda v: repr(v)[:20])
def test_a_hostile_request_id_in_an_event_is_4xx_and_stores_nothing(framework, worlds, rid, statuses):
    with web_for(framework, worlds, trusted_tracking=True) as trusted:
        user = trusted.known_user(7)
        before = stored(trusted, user)
        got = trusted.post(trusted.url("events"), {"user": user, "item": "i0001", "event": "click",
                                                   "properties": {"request_id": rid}})
        assert got.status in statuses and got.status != 500, (got.status, got.text[:200])
        assert got.is_json and isinstance(got.json().get("error"), str)
        if got.status == 400:
            assert got.json().get("field") in ("properties.request_id", "properties")
        assert stored(trusted, user) == before


def test_a_click_with_an_unknown_request_id_is_stored_never_an_error(framework, worlds):
    with web_for(framework, worlds, trusted_tracking=True) as trusted:
        user = trusted.known_user(8)
        rid = "0" * 32
        got = trusted.post(trusted.url("events"), {"user": user, "item": "i0001", "event": "click",
                                                   "properties": {"request_id": rid}})
        assert got.status == 202, got.text[:200]
        from persona.analytics import attribution

        store = trusted.store()
        store.flush()
        att = attribution(store)
        assert att[att["request_id"] == rid]["status"].tolist() == ["unknown request"]


@pytest.mark.parametrize("placement", ["x" * 65, "a b", "☃", "<script>", "home\u0000", "-home"])
def test_a_hostile_placement_is_400(web, placement):
    from urllib.parse import urlencode

    got = web.get(web.url("similar", web.known_item(0)), urlencode({"placement": placement}))
    body = assert_json_error(got, 400)
    assert body.get("field") == "placement"
    twice = web.get(web.url("similar", web.known_item(0)), "placement=home&placement=pdp")
    assert assert_json_error(twice, 400).get("field") == "placement"


def test_request_ids_are_random_and_name_no_one(web):
    seen = set()
    for _ in range(50):
        body = web.get(web.url("similar", web.known_item(1)), "n=3&placement=pdp").json()
        rid = body["request_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid) and rid not in seen
        seen.add(rid)
    assert not any(web.known_user(i) in "".join(seen) for i in range(5))


BAD_LINK_IDS = ["x" * 5000, "%E2%98%83", "a%00b", "%3Cscript%3E", "", "a%20b", "%FF%FE"]


@pytest.mark.parametrize("framework_name", FRAMEWORKS)
def test_a_hostile_persona_rid_on_a_product_link_is_ignored(framework_name, worlds):
    """The product page (Django: the example shop's view and TrackViewsMiddleware; Flask: a view calling
    persona.track_click) renders 200 and records no click for what is not a request id."""
    if framework_name == "django":
        with web_for("django", worlds) as web:
            item = web.known_item(2)
            web.get(f"/product/{item}/")  # a session and its visitor id
            visitor = web.client.session["persona_visitor"]
            for bad in BAD_LINK_IDS:
                got = web.get(f"/product/{item}/", f"persona_rid={bad}")
                assert got.status == 200, (bad, got.status)
            st_ = web.store()
            st_.flush()
            assert st_.count(user=visitor, event_types="click") == 0
        return
    with web_for("flask", worlds) as web:
        @web.app.get("/product/<item>")
        def product(item):
            return {"click": web.persona.track_click("visitor-attacked", item)}

        for bad in BAD_LINK_IDS:
            got = web.get("/product/i0001", f"persona_rid={bad}")
            assert got.status == 200 and got.json() == {"click": None}, (bad, got.status, got.text[:200])
        assert stored(web, "visitor-attacked") == 0


def _click_and_track(framework_name, web):
    """The framework's own ``track_click`` and ``track`` (Flask: the Persona object; Django: runtime)."""
    if framework_name == "flask":
        return web.persona.track_click, web.persona.track
    from persona.contrib.django import runtime

    return runtime.track_click, runtime.track


@pytest.mark.parametrize("framework_name", FRAMEWORKS)
def test_a_shared_link_cannot_take_another_users_click(framework_name, worlds):
    """Regression: click ids were ``click:<rid>:<item>`` for everyone, so whoever opened a shared
    recommendation link first took the click, and the user the list was shown to was dropped as a
    duplicate. The key is now in the clicking user's own namespace."""
    import uuid

    with web_for(framework_name, worlds) as web:
        track_click, _ = _click_and_track(framework_name, web)
        tag = uuid.uuid4().hex[:12]
        victim, mallory = f"victim-{tag}", f"mallory-{tag}"
        item, rid = web.known_item(1), uuid.uuid4().hex
        theirs = track_click(mallory, item, rid)
        mine = [track_click(victim, item, rid) for _ in range(2)]  # and a reload
        assert theirs and mine[0] and theirs != mine[0] and mine[0] == mine[1]
        store = web.store()
        store.flush()
        assert store.count(user=victim, event_types="click") == 1
        assert store.count(user=mallory, event_types="click") == 1


@pytest.mark.parametrize("framework_name", FRAMEWORKS)
def test_direct_tracking_records_nothing_of_a_user_who_withdrew_consent(framework_name, worlds):
    import uuid

    with web_for(framework_name, worlds) as web:
        track_click, track = _click_and_track(framework_name, web)
        store = web.store()
        user, other = f"declined-{uuid.uuid4().hex[:12]}", f"agreed-{uuid.uuid4().hex[:12]}"
        store.set_consent(user, "personalisation", False)
        item = web.known_item(1)
        assert track(user, item, "view") is None
        assert track_click(user, item, uuid.uuid4().hex) is None
        assert track(other, item, "view") is not None
        store.flush()
        assert store.count(user=user) == 0 and store.count(user=other) == 1


# ------------------------------------------------------------------------------ fuzz
EXPECTED = {200, 202, 308, 400, 401, 403, 404, 405, 413, 503}  # 308: werkzeug's canonical-URL redirect, as JSON
NAMES = ["n", "exclude", "items", "history", "in_stock", "filter_seen", "segment", "category", "brand",
         "min_price", "max_price", "colour", "user", "placement", "persona_rid", "a" * 300]
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=string.printable, max_size=20),
    st.sampled_from(["", " ", "..", "../../etc/passwd", "%00", "\x00", "NaN", "-1", "1e309", "99999999999999999999",
                     "i0001", "i0001,i0002", "visitor-" + "0" * 32, "<script>", "' OR 1=1 --", "\ud7ff", "u" * 300]),
)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                      st.floats(allow_nan=False), hostile_text)
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(hostile_text, inner, max_size=4)),
                          max_leaves=12)
event = st.fixed_dictionaries({}, optional={
    "item": st.one_of(st.sampled_from(["i0001", "i0002"]), json_value),
    "event": st.one_of(st.sampled_from(["view", "cart", "purchase"]), hostile_text),
    "user": st.one_of(st.sampled_from(["ann", "visitor-x", "u00001"]), hostile_text, json_value),
    "value": json_value, "timestamp": st.one_of(st.floats(), st.integers(), hostile_text,
                                                         st.sampled_from(["2024-05-01T12:00:00Z", "0001-01-01",
                                                                          "9999-12-31T23:59:59", "-2.5e11"])),
    "properties": json_value, "event_id": json_value, "extra": json_value})
good_event = st.fixed_dictionaries(
    {"item": st.sampled_from(["i0001", "i0002", "i0003"]), "event": st.sampled_from(["view", "cart", "purchase"])},
    optional={"user": st.sampled_from(["ann", "visitor-x", "u00001"]), "value": st.floats(-1e6, 1e6),
              "timestamp": st.one_of(st.floats(0, 7e9), st.sampled_from(["2024-05-01T12:00:00Z", "2199-12-31"])),
              "properties": st.dictionaries(st.text(max_size=8), json_value, max_size=3),
              "event_id": st.text(min_size=1, max_size=20)})
body = st.one_of(
    event.map(lambda e: json.dumps(e).encode()),
    good_event.map(lambda e: json.dumps(e).encode()),
    good_event.map(lambda e: json.dumps(e).encode()),
    good_event.map(lambda e: json.dumps({k: v for k, v in e.items() if k != "user"}).encode()),
    st.lists(good_event, min_size=1, max_size=4).map(lambda es: json.dumps({"events": es}).encode()),
    st.lists(event, max_size=4).map(lambda es: json.dumps({"events": es}).encode()),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.sampled_from([b"", b"{", b"[" * 5000, b'{"events": NaN}', b"\xff\xfe", b'{"item": 1e999, "event": "v"}']),
)
query = st.lists(st.tuples(st.one_of(st.sampled_from(NAMES), hostile_text), hostile_text), max_size=5)
request_ = st.tuples(
    st.one_of(st.sampled_from([("GET", "recommendations"), ("GET", "recommendations/U"), ("GET", "similar/I"),
                               ("POST", "events"), ("POST", "events"), ("GET", "stats")]),
              st.tuples(st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
                        st.sampled_from(["recommendations/U", "events", "stats", "nothing/U", "similar/I/U"]))),
    hostile_text, query, body,
    st.sampled_from(["application/json"] * 4 + ["text/plain", "application/x-www-form-urlencoded"]),
    st.sampled_from([None, "ann", "visitor-x"]))


@pytest.mark.parametrize("mode", ["defaults", "everything-opted-in"])
@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(req=request_)
def test_fuzz_endpoints(framework, worlds, mode, req):
    """Random requests: never a 500, always JSON, never a path, a URL or a traceback."""
    from urllib.parse import urlencode

    (method, route), ident, pairs, raw, ctype, signed = req
    opts = {"signed_in": True} if signed else {}
    if mode != "defaults":
        opts.update(user_in_url=True, trusted_tracking=True, client_options=["filter_seen", "items"],
                    stats_permission=lambda: True)
    with web_for(framework, worlds, **opts) as web:
        parts = [ident if p in ("U", "I") else p for p in route.split("/")]
        path = web.url(*parts)
        qs = urlencode([(k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass")) for k, v in pairs])
        headers = {"X-User": signed} if signed else {}
        if method == "GET":
            got = web.get(path, qs, headers=headers)
        else:
            got = web.request(method, path + (f"?{qs}" if qs else ""), data=raw, content_type=ctype, headers=headers)
    note(f"{method} {route.split('/')[0]} -> {got.status}")
    assert got.status in EXPECTED, (got.status, got.text[:500])
    assert got.is_json, (got.status, got.content_type, got.text[:200])
    answer = got.json()
    assert isinstance(answer, dict)
    if got.status >= 400:
        assert isinstance(answer.get("error"), str)
    assert not LEAKS.search(got.text) and web.data_dir() not in got.text, got.text[:500]


def test_a_redirect_to_the_canonical_url_is_json_too(worlds):
    """Regression (found by the fuzz test): ``/persona/recommendations//0`` made werkzeug answer an HTML 308."""
    with web_for("flask", worlds) as web:
        got = web.get(web.url("recommendations", "") + "/0")
        assert got.status == 308 and got.content_type.startswith("application/json"), (got.status, got.text[:200])
        assert "<html" not in got.text.lower()
