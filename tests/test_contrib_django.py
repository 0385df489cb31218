"""persona.contrib.django: the JSON endpoints, the view-tracking middleware, the template tags, the
``persona_train`` management command and the watcher -- run against the example shop in
``examples/django_shop`` (its settings are the ones a shop would write) with Django's test client."""

from __future__ import annotations

import io
import json
import re
import time

import pytest

import django  # noqa: F401 -- the test extra installs it: pip install ".[test]"

import persona as ps
from contrib_web import django_site



@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Django set up with the example shop's settings, its store seeded and a first model published
    (once per process: tests/test_contrib_attacks.py shares it)."""
    from persona.contrib.django import runtime

    yield django_site(tmp_path_factory)
    runtime.reset()


@pytest.fixture
def client(site):
    from django.test import Client

    return Client()


@pytest.fixture
def trusted(site):
    """The settings of a trusted internal API (every opt-in on); test_contrib_attacks.py checks the defaults."""
    from django.test import override_settings

    conf = {**site["conf"], "USER_IN_URL": True, "CLIENT_OPTIONS": ["filter_seen", "items"],
            "STATS_PERMISSION": lambda request: True}
    with override_settings(PERSONA=conf):
        yield conf


def runtime():
    from persona.contrib.django import runtime as rt

    return rt


def known_user(i=0):
    from shop.catalog import synthetic

    return str(synthetic().interactions.user_ids[i])


def known_item(i=0):
    from shop.catalog import synthetic

    return str(synthetic().interactions.item_ids[i])


def visitor_of(client):
    return client.session["persona_visitor"]


def listed(html: str, section: str) -> tuple[list[str], str | None]:
    block = html.split(f'<section id="{section}">', 1)[1].split("</section>", 1)[0]
    m = re.search(r'<ul class="persona-recommendations" data-source="([^"]*)"', block)
    return re.findall(r'data-item="([^"]+)"', block), m.group(1) if m else None


# ------------------------------------------------------------------------------ JSON endpoints
def test_recommendations_endpoint(client, trusted):
    user = known_user(2)
    body = client.get(f"/persona/recommendations/{user}/?n=5").json()
    want = runtime().get_service().recommend(user, 5)
    assert body["items"] == want.items.tolist() and body["source"] == "model" and body["user"] == user

    stranger = client.get("/persona/recommendations/someone-new/?n=4").json()
    assert stranger["source"] == "popular" and stranger["reason"] == "unknown user" and len(stranger["items"]) == 4


def test_recommendations_filters_and_my_recommendations(client, trusted):
    from shop.catalog import products

    cat = products()[known_item(0)]["category"]
    body = client.get(f"/persona/recommendations/{known_user(1)}/", {"n": 3, "category": cat}).json()
    assert body["items"] and all(products()[i]["category"] == cat for i in body["items"])

    mine = client.get("/persona/recommendations/?n=3").json()
    assert mine["user"] == visitor_of(client) and mine["source"] == "popular" and len(mine["items"]) == 3


def test_similar_endpoint(client):
    item = known_item(3)
    body = client.get(f"/persona/similar/{item}/?n=4").json()
    assert body["item"] == item and len(body["items"]) == 4 and item not in body["items"] and body["source"] == "model"


@pytest.mark.parametrize("query, field", [("n=0", "n"), ("n=x", "n"), ("filter_seen=perhaps", "filter_seen"),
                                          ("colour=red", None)])
def test_bad_queries_are_400_json(client, trusted, query, field):
    got = client.get(f"/persona/recommendations/u1/?{query}")
    assert got.status_code == 400 and got["Content-Type"] == "application/json"
    assert got.json().get("field") == field and got.json()["error"]


def test_stats_endpoint(client, trusted):
    client.get(f"/persona/recommendations/{known_user()}/?n=2")
    body = client.get("/persona/stats/").json()
    assert body["service"]["requests"] >= 1 and "written" in body["store"]


def test_posted_events_reach_the_store_for_the_current_visitor(client):
    client.get("/persona/recommendations/?n=1")  # gets a visitor id in the session
    visitor = visitor_of(client)
    got = client.post("/persona/events/", data={"item": "i0005", "event": "cart", "value": 9.5},
                      content_type="application/json")
    assert got.status_code == 202, got.content
    store = runtime().get_store()
    store.flush()
    ev = store.events(user=visitor)
    assert ev["event"].tolist() == ["cart"] and ev["value"].tolist() == [9.5]
    assert ev["event_id"].tolist() == got.json()["event_ids"]

    other = client.post("/persona/events/", data={"user": "someone-else", "item": "i0005", "event": "view"},
                        content_type="application/json")
    assert other.status_code == 403 and other.json()["field"] == "user"


@pytest.mark.parametrize("body, words", [
    ({"event": "view"}, "item is required"),
    ({"item": "i1", "event": "view", "value": "a lot"}, "finite number"),
    ({"item": "i1", "event": "view", "properties": "x"}, "object"),
    ({"item": "i1", "event": 5}, "non-empty string"),
    ({"events": "nope"}, "array"),
])
def test_bad_events_are_400_json(client, body, words):
    store = runtime().get_store()
    store.flush()
    before = store.count()
    got = client.post("/persona/events/", data=body, content_type="application/json")
    assert got.status_code == 400 and words in got.json()["error"], got.content
    store.flush()
    assert store.count() == before


def test_events_body_must_be_json_and_post_is_csrf_protected(client):
    got = client.post("/persona/events/", data="{oops", content_type="application/json")
    assert got.status_code == 400 and "not valid JSON" in got.json()["error"]
    assert client.get("/persona/events/").status_code == 405

    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    refused = strict.post("/persona/events/", data={"item": "i1", "event": "view"}, content_type="application/json")
    assert refused.status_code == 403 and refused["Content-Type"] == "application/json"  # not the HTML page
    assert "X-CSRFToken" in refused.json()["error"]


def test_server_to_server_events_may_name_users_when_trusted(client, site):
    from django.test import override_settings

    with override_settings(PERSONA={**site["conf"], "TRUST_EVENT_USER": True, "ALLOWED_EVENTS": ["view"]}):
        got = client.post("/persona/events/", data={"events": [{"user": "srv-user", "item": "i0001", "event": "view"}]},
                          content_type="application/json")
        assert got.status_code == 202
        runtime().get_store().flush()
        assert runtime().get_store().count(user="srv-user") == 1
        refused = client.post("/persona/events/", data={"user": "srv-user", "item": "i0001", "event": "purchase"},
                              content_type="application/json")
        assert refused.status_code == 400 and "not accepted" in refused.json()["error"]


def test_user_in_url_is_off_by_default_and_an_opt_in(client, site):
    from django.test import override_settings

    assert client.get(f"/persona/recommendations/{known_user()}/").status_code == 403
    assert client.get("/persona/recommendations/").status_code == 200
    assert client.get(f"/persona/recommendations/{visitor_of(client)}/").status_code == 200  # one's own id
    with override_settings(PERSONA={**site["conf"], "USER_IN_URL": True}):
        assert client.get(f"/persona/recommendations/{known_user()}/").status_code == 200


def test_stats_need_staff_by_default(client, site):
    from django.test import override_settings

    got = client.get("/persona/stats/")
    assert got.status_code == 403 and got["Content-Type"] == "application/json"
    with override_settings(PERSONA={**site["conf"], "STATS_PERMISSION": None}):
        assert "off" in client.get("/persona/stats/").json()["error"]


def test_bad_policy_settings_are_refused(site):
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    for bad in ({"CLIENT_OPTIONS": ["filter_sene"]}, {"USER_IN_URL": "yes"}, {"LIMITS": {"max_id_lenght": 9}},
                {"LIMITS": {"max_id_length": 0}}):
        with override_settings(PERSONA={**site["conf"], **bad}):
            with pytest.raises(ImproperlyConfigured, match="PERSONA"):
                runtime().settings_dict()


def test_tracking_drops_cached_answers(client):
    from persona.contrib.django import recommend, track

    user = known_user(4)
    recommend(user, 5)
    assert recommend(user, 5).cached
    track(user, known_item(1), "view")
    assert not recommend(user, 5).cached


# ------------------------------------------------------------------------------ the example shop pages
def test_product_page_records_the_view_and_cart_changes_recommended_for_you(client):
    item = known_item(5)
    page = client.get(f"/product/{item}/")
    assert page.status_code == 200
    html = page.content.decode()
    before, source = listed(html, "recommended")
    also, _ = listed(html, "also-bought")
    assert source == "popular" and len(before) == 6 and len(also) == 6 and item not in before + also
    visitor = visitor_of(client)
    store = runtime().get_store()
    store.flush()
    assert store.events(user=visitor)["event"].tolist() == ["view"]  # the middleware recorded it

    added = client.post("/cart/", {"item_id": item})
    assert added.status_code == 302
    html = client.get(added.url).content.decode()
    after, source = listed(html, "recommended")
    assert 'id="added"' in html and source == "model-history" and len(after) == 6
    assert after != before and item not in after and not set(after) & set(listed(html, "also-bought")[0])
    store.flush()
    ev = store.events(user=visitor)
    assert ev["event"].tolist() == ["view", "cart"]  # back from the cart: no second view

    assert client.get("/product/no-such-product/").status_code == 404
    store.flush()
    assert len(store.events(user=visitor)) == 2  # a 404 records nothing


def test_home_page_and_sample_customer(client):
    html = client.get("/").content.decode()
    assert listed(html, "recommended")[1] == "popular"
    client.get(f"/login/{known_user(0)}/")
    html = client.get("/").content.decode()
    items, source = listed(html, "recommended")
    assert source == "model" and len(items) == 6


# ------------------------------------------------------------------------------ template tags
def render(text: str, **context) -> str:
    from django.template import Context, Template

    return Template("{% load persona %}" + text).render(Context(context))


def test_recommended_for_renders_a_list(site):
    html = render("{% recommended_for user 3 %}", user=known_user(6))
    assert html.count("<li data-item=") == 3 and 'data-source="model"' in html
    # PERSONA["ITEMS"] gave names and urls; the links carry the request id the list was logged under
    rid = re.search(r'data-request-id="([0-9a-f]{32})"', html).group(1)
    assert len(re.findall(rf'<a href="/product/i\d+/\?persona_rid={rid}">[^<]+</a>', html)) == 3


def test_tags_assign_with_as_and_take_filters(site):
    from shop.catalog import products

    cat = products()[known_item(0)]["category"]
    html = render("{% recommended_for user 4 category=cat as recs %}{{ recs.source }}:"
                  "{% for r in recs %}{{ r.id }},{% endfor %}", user=known_user(6), cat=cat)
    source, ids = html.split(":")
    ids = [i for i in ids.split(",") if i]
    assert source == "model" and len(ids) == 4 and all(products()[i]["category"] == cat for i in ids)

    item = products()[known_item(2)]
    html = render("{% also_bought item 2 as recs %}{% for r in recs %}{{ r.name }}|{% endfor %}", item=item)
    names = [n for n in html.split("|") if n]
    assert len(names) == 2 and item["name"] not in names


def test_tags_escape_and_use_history(site):
    html = render("{% recommended_for None 3 history=h %}", h=[known_item(0), known_item(1)])
    assert 'data-source="model-history"' in html and html.count("<li") == 3


def test_tags_render_nothing_before_a_model_is_published(site, tmp_path):
    from django.test import override_settings

    with override_settings(PERSONA={**site["conf"], "MODEL_PATH": tmp_path / "none-yet.persona"}):
        html = render("{% recommended_for 'ann' 3 %}{% also_bought 'i0001' 3 as recs %}[{{ recs.source }}]")
        assert 'data-source="unavailable"' in html and "<li" not in html and "[unavailable]" in html


# ------------------------------------------------------------------------------ persona_train and the watcher
def test_persona_train_publishes_an_artifact(site, tmp_path):
    from django.core.management import call_command

    out = io.StringIO()
    target = tmp_path / "als.persona"
    call_command("persona_train", "--model", "als", "--param", "factors=4", "--param", "iterations=2",
                 "--out", str(target), stdout=out)
    assert f"to {target}" in out.getvalue()
    model = ps.load(target)
    assert isinstance(model, ps.ALS) and model.factors == 4


def test_persona_train_refuses_bad_input(site, tmp_path):
    from django.core.management import CommandError, call_command
    from django.test import override_settings

    with pytest.raises(CommandError, match="name=value"):
        call_command("persona_train", "--param", "k", "--out", str(tmp_path / "m"))
    with pytest.raises(CommandError, match="colour"):  # the model names the parameter it does not have
        call_command("persona_train", "--model", "als", "--param", "colour=1", "--out", str(tmp_path / "m"))
    with pytest.raises(CommandError, match="unknown model"):
        call_command("persona_train", "--model", "nope", "--out", str(tmp_path / "m"))
    with override_settings(PERSONA={**site["conf"], "STORE": None}):
        with pytest.raises(CommandError, match="no event store"):
            call_command("persona_train", "--out", str(tmp_path / "m"))


def test_the_watcher_serves_what_persona_train_publishes(site, tmp_path):
    from django.core.management import call_command
    from django.test import override_settings

    from persona.contrib.django import recommend, track

    model_path = tmp_path / "watched.persona"
    conf = {**site["conf"], "MODEL_PATH": model_path, "WATCH": True, "WATCH_INTERVAL": 0.1}
    with override_settings(PERSONA=conf):
        call_command("persona_train", stdout=io.StringIO())
        first = recommend("fresh-customer", 5)
        assert first.source == "popular"
        for item in (known_item(7), known_item(8)):
            track("fresh-customer", item, "purchase")
        call_command("persona_train", stdout=io.StringIO())  # publishes over the served artifact
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = recommend("fresh-customer", 5)
            if got.source == "model":
                break
            time.sleep(0.05)
        assert got.source == "model" and got.model_version > first.model_version
        assert runtime().get_service().stats()["reload_errors"] == 0


def test_unknown_settings_are_refused(site):
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    with override_settings(PERSONA={**site["conf"], "MODLE_PATH": "x"}):
        with pytest.raises(ImproperlyConfigured, match="MODLE_PATH"):
            runtime().settings_dict()
    with override_settings(PERSONA={**site["conf"], "TRAIN": {"MODLE": "als"}}):
        with pytest.raises(ImproperlyConfigured, match="MODLE"):
            runtime().settings_dict()


def test_json_answers_are_plain_json(client):
    raw = client.get(f"/persona/similar/{known_item()}/?n=2").content
    assert json.loads(raw)["scores"] and isinstance(json.loads(raw)["items"][0], str)


# ------------------------------------------------------------------------------ issue 12
def own_store(tmp_path):
    """A store holding a small shop's own event names (``add_to_cart`` has no built-in weight)."""
    from persona.store import EventStore

    path = tmp_path / "own-events.db"
    rows = [("ann", "a", "view"), ("ann", "b", "purchase"), ("bob", "b", "purchase"), ("bob", "c", "view"),
            ("cid", "a", "purchase"), ("cid", "z", "add_to_cart"), ("dan", "z", "add_to_cart"),
            ("dan", "a", "view")]
    with EventStore(path) as st:
        for i, (u, it, e) in enumerate(rows):
            st.track(u, it, e, event_id=f"own-{i}")
    return str(path)


def test_issue12_persona_train_names_what_it_keeps_and_drops_and_takes_weights(site, tmp_path):
    from django.core.management import CommandError, call_command
    from django.test import override_settings

    target = tmp_path / "own.persona"
    conf = {**site["conf"], "STORE": own_store(tmp_path), "TRAIN": {"MODEL": "itemknn"}}
    with override_settings(PERSONA=conf):
        out = io.StringIO()
        call_command("persona_train", "--out", str(target), stdout=out)
        text = out.getvalue()
        assert re.search(r"kept 6 events: purchase 3, view 3", text), text
        assert re.search(r"dropped 2 events: add_to_cart 2 \(no weight", text), text
        assert "PERSONA['EVENT_WEIGHTS']" in text and "--weights add_to_cart=" in text
        assert "z" not in set(ps.load(target).item_map_.ids)

        out = io.StringIO()
        call_command("persona_train", "--out", str(target), "--weights", "add_to_cart=4", stdout=out)
        assert "add_to_cart 2" in out.getvalue() and "dropped none" in out.getvalue(), out.getvalue()
        assert "z" in set(ps.load(target).item_map_.ids)
        with pytest.raises(CommandError, match="name=weight"):
            call_command("persona_train", "--out", str(target), "--weights", "add_to_cart=lots")

    with override_settings(PERSONA={**conf, "EVENT_WEIGHTS": {"add_to_cart": 4}}):
        out = io.StringIO()
        call_command("persona_train", "--out", str(target), stdout=out)
        assert "add_to_cart 2" in out.getvalue() and "dropped none" in out.getvalue(), out.getvalue()

    from django.core.exceptions import ImproperlyConfigured

    with override_settings(PERSONA={**conf, "UNKNOWN_EVENTS": "ignore"}):
        with pytest.raises(ImproperlyConfigured, match="UNKNOWN_EVENTS"):
            runtime().settings_dict()


def test_issue12_unknown_event_names_posted_are_refused_or_stored_and_reported(site, tmp_path):
    from django.test import Client, override_settings

    conf = {**site["conf"], "STORE": str(tmp_path / "events.db"), "TRUST_EVENT_USER": True}

    def post(event):
        return Client().post("/persona/events/", data=json.dumps({"user": "ann", "item": "a", "event": event}),
                             content_type="application/json")

    with override_settings(PERSONA={**conf, "EVENT_WEIGHTS": {"add_to_cart": 4}}):
        assert post("add_to_cart").status_code == 202
        refused = post("addtocart")
        body = refused.json()
        assert refused.status_code == 400 and body["field"] == "event"
        assert "addtocart" in body["error"] and "'add_to_cart'" in body["error"] and "'view'" in body["error"]
    with override_settings(PERSONA={**conf, "EVENT_WEIGHTS": {"add_to_cart": 4}, "UNKNOWN_EVENTS": "store"}):
        got = post("wishlist")
        assert got.status_code == 202 and got.json()["unknown_events"] == ["wishlist"]
        store = runtime().get_store()
        store.flush()
        assert store.count(event_types=["wishlist"]) == 1 and store.count(event_types=["addtocart"]) == 0


def test_issue12_catalogue_id_setting_and_tags_show_catalogue_fields(site):
    from django.test import override_settings

    from shop.catalog import catalog_frame, products

    own = catalog_frame().rename(columns={"item_id": "sku"})
    cat = products()[known_item(0)]["category"]
    conf = {**site["conf"], "CATALOG": lambda: own, "CATALOG_ID": "sku", "ITEMS": None}
    with override_settings(PERSONA=conf):
        html = render("{% recommended_for user 3 category=cat as recs %}"
                      "{% for r in recs %}{{ r.id }}={{ r.name }}={{ r.price }};{% endfor %}",
                      user=known_user(6), cat=cat)
    rows = [r.split("=") for r in html.split(";") if r]
    assert len(rows) == 3
    for item, name, price in rows:
        assert products()[item]["category"] == cat and name == products()[item]["name"]
        assert float(price) == pytest.approx(products()[item]["price"])


# ------------------------------------------------------------------------------ issue 15: impressions and clicks
def rid_and_links(html: str, section: str) -> tuple[str | None, list[str]]:
    block = html.split(f'<section id="{section}">', 1)[1].split("</section>", 1)[0]
    m = re.search(r'data-request-id="([^"]+)"', block)
    ul = block.split('<ul class="persona-recommendations"', 1)[1].split("</ul>", 1)[0]
    return (m.group(1) if m else None), re.findall(r'href="([^"]+)"', ul)


def test_issue15_a_click_on_a_recommendation_is_attributed_to_its_list(client):
    store = runtime().get_store()
    html = client.get("/").content.decode()
    rid, links = rid_and_links(html, "recommended")
    assert rid and len(links) == 6 and all(link.endswith(f"?persona_rid={rid}") for link in links)
    visitor = visitor_of(client)
    store.flush()
    shown = store.impressions(user=visitor)
    assert set(shown["request_id"]) == {rid} and set(shown["placement"]) == {"home"}
    item = shown["item"].iloc[2]
    assert client.get(links[2]).status_code == 200  # the product page, opened from the list
    assert client.get(links[2]).status_code == 200  # reloaded: still one click
    store.flush()
    ev = store.events(user=visitor)
    clicks = ev[ev["event"] == "click"]
    assert len(clicks) == 1 and clicks["item"].iloc[0] == item
    assert clicks["properties"].iloc[0] == {"request_id": rid}
    # the product page logged its own lists, with the visitor as the user
    store.flush()
    assert {"home", "pdp", "pdp-similar"} <= set(store.impressions(user=visitor)["placement"])
    # adding to the cart from that page carries the list too
    assert client.post("/cart/", {"item_id": item, "persona_rid": rid}).status_code == 302
    store.flush()
    att = ps.analytics.attribution(store)
    mine = att[att["request_id"] == rid].set_index("kind")
    assert mine.loc["click", "status"] == "attributed" and mine.loc["cart", "status"] == "attributed"
    page = client.get("/metrics/").content.decode()
    row = re.search(r'<tr data-placement="home">(.*?)</tr>', page, re.S).group(1)
    assert re.search(r'class="clicks">(\d+)<', row).group(1) != "0"


def test_issue15_stale_and_hostile_request_ids_on_links(client):
    store = runtime().get_store()
    item = known_item(3)
    client.get("/")
    visitor = visitor_of(client)
    stale = "0123456789abcdef0123456789abcdef"
    assert client.get(f"/product/{item}/?persona_rid={stale}").status_code == 200
    for bad in ("x" * 5000, "%E2%98%83%C3%BC", "a%00b", "<script>", ""):
        assert client.get(f"/product/{item}/?persona_rid={bad}").status_code == 200
    store.flush()
    clicks = store.events(user=visitor, event_types="click")
    assert clicks["properties"].tolist() == [{"request_id": stale}]  # stored; the hostile ones ignored
    att = ps.analytics.attribution(store)
    assert att.set_index("request_id").loc[stale, "status"] == "unknown request"


def test_issue15_json_answers_carry_the_request_id_and_placement(client):
    body = client.get("/persona/recommendations/?n=4&placement=home").json()
    assert len(body["request_id"]) == 32 and body["placement"] == "home" and body["variant"] is None
    similar = client.get(f"/persona/similar/{known_item(1)}/?n=3&placement=pdp").json()
    assert similar["request_id"] and similar["placement"] == "pdp"
    bad = client.get("/persona/recommendations/?n=4&placement=no%20spaces")
    assert bad.status_code == 400 and bad.json()["field"] == "placement"
