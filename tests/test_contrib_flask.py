"""persona.contrib.flask: the JSON endpoints, event tracking into the store, retrain + swap, the
``flask persona train`` command, the example shop (test client), and one end-to-end run of the
example shop in headless Chromium."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import flask  # the test extra installs it: pip install ".[test]"

import persona as ps
from persona.contrib import common
from persona.contrib.flask import Persona, get_persona, persona_blueprint
from persona.serving import RecommenderService
from persona.store import EventStore
from services import missing_service

ROOT = Path(__file__).resolve().parents[1]


def seed(store, shop):
    ev = shop.events
    for i, (u, it, ts, e) in enumerate(zip(ev["user_id"], ev["item_id"], ev["timestamp"], ev["event"].astype(str))):
        store.track(u, it, e, timestamp=ts.timestamp(), event_id=f"seed-{i}")
    store.flush()


@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=150, n_items=80, seed=11)


@pytest.fixture(scope="module")
def catalog(shop):
    return shop.items[["item_id", "name", "category", "brand", "price"]]


@pytest.fixture(scope="module")
def store(shop, tmp_path_factory):
    st = EventStore(tmp_path_factory.mktemp("flask-store") / "events.db")
    seed(st, shop)
    yield st
    st.close()


@pytest.fixture
def service(shop, catalog, store):
    svc = RecommenderService(ps.ItemKNN(k=20).fit(shop.interactions), catalog=catalog, store=store)
    yield svc
    svc.close()


#: a trusted internal API (a backend behind the firewall): every opt-in on; test_contrib_attacks.py
#: checks the defaults browsers get
TRUSTED = {"user_in_url": True, "trusted_tracking": True, "client_options": ["filter_seen", "items"],
           "stats_permission": lambda: True}


@pytest.fixture
def client(service, store):
    app = flask.Flask("test-shop")
    Persona(app, service=service, store=store, **TRUSTED)
    return app.test_client()


def known_user(shop, i=0):
    return str(shop.interactions.user_ids[i])


# ------------------------------------------------------------------------------ recommendations
def test_recommendations_for_a_known_user_are_the_service_answer(client, service, shop):
    user = known_user(shop, 3)
    got = client.get(f"/persona/recommendations/{user}?n=5")
    assert got.status_code == 200 and got.is_json
    body = got.get_json()
    want = service.recommend(user, 5)
    assert body["user"] == user and body["items"] == want.items.tolist()
    np.testing.assert_allclose(body["scores"], want.scores, rtol=1e-5)
    assert body["source"] == "model" and body["reason"] is None and body["model_version"] == 1


def test_unknown_user_is_answered_by_the_fallback(client):
    body = client.get("/persona/recommendations/someone-new?n=4").get_json()
    assert len(body["items"]) == 4 and body["source"] == "popular" and body["reason"] == "unknown user"


def test_history_answers_an_unknown_visitor(client, shop):
    seen = shop.interactions.item_ids[:3].tolist()
    body = client.get("/persona/recommendations/visitor-1?n=5&history=" + ",".join(seen)).get_json()
    assert body["source"] == "model-history" and len(body["items"]) == 5
    assert not set(body["items"]) & set(seen)


def test_query_filters_reach_the_service(client, service, shop, catalog):
    user = known_user(shop, 1)
    cat = catalog["category"].value_counts().index[0]
    body = client.get(f"/persona/recommendations/{user}?n=3&category={cat}&max_price=1000").get_json()
    by_id = catalog.set_index("item_id")
    assert body["items"] and all(by_id.loc[i, "category"] == cat for i in body["items"])

    cheap = client.get(f"/persona/recommendations/{user}?n=5&min_price=5&max_price=20").get_json()["items"]
    assert cheap and all(5 <= by_id.loc[i, "price"] <= 20 for i in cheap)

    first = client.get(f"/persona/recommendations/{user}?n=5").get_json()["items"]
    without = client.get(f"/persona/recommendations/{user}?n=5&exclude={first[0]},{first[1]}").get_json()["items"]
    assert len(without) == 5 and not {first[0], first[1]} & set(without)

    service.set_stock([first[2]], available=False)
    in_stock = client.get(f"/persona/recommendations/{user}?n=5&in_stock=1").get_json()["items"]
    assert first[2] not in in_stock and len(in_stock) == 5


def test_similar_items(client, shop):
    item = str(shop.interactions.item_ids[0])
    body = client.get(f"/persona/similar/{item}?n=4").get_json()
    assert body["item"] == item and len(body["items"]) == 4 and item not in body["items"]
    assert body["source"] == "model"
    unknown = client.get("/persona/similar/no-such-item?n=3").get_json()
    assert unknown["source"] == "popular" and unknown["reason"] == "unknown item" and len(unknown["items"]) == 3


@pytest.mark.parametrize("query, field, words", [
    ("n=0", "n", "1 to 100"),
    ("n=abc", "n", "whole number"),
    ("n=1000", "n", "1 to 100"),
    ("n=2&n=3", "n", "once"),
    ("in_stock=maybe", "in_stock", "true or false"),
    ("min_price=cheap", "min_price", "number"),
    ("min_price=50&max_price=10", "min_price", "above"),
    ("colour=red", None, "colour"),
])
def test_bad_queries_are_400_json(client, query, field, words):
    got = client.get(f"/persona/recommendations/someone?{query}")
    assert got.status_code == 400 and got.is_json, got.data
    body = got.get_json()
    assert words in body["error"]
    assert body.get("field") == field


def test_stats(client, shop):
    client.get(f"/persona/recommendations/{known_user(shop)}?n=2")
    body = client.get("/persona/stats").get_json()
    assert body["service"]["requests"] >= 1 and body["service"]["model"] == "ItemKNN"
    assert body["store"]["written"] >= 0


def test_integer_ids_in_urls_reach_a_model_with_integer_ids():
    import pandas as pd

    frame = pd.DataFrame({"user": [1, 1, 2, 2, 3, 3], "item": [10, 11, 11, 12, 10, 12]})
    model = ps.ItemKNN(k=5).fit(ps.Interactions.from_frame(frame, user="user", item="item"))
    app = flask.Flask("int-shop")
    app.register_blueprint(persona_blueprint(RecommenderService(model), user_in_url=True))
    c = app.test_client()
    body = c.get("/persona/recommendations/1?n=1&exclude=12").get_json()
    assert body["user"] == 1 and body["source"] == "model" and body["items"] == []  # 10, 11 seen, 12 excluded
    body = c.get("/persona/recommendations/1?n=1").get_json()
    assert body["items"] == [12]
    assert c.get("/persona/similar/10?n=1").get_json()["source"] == "model"


# ------------------------------------------------------------------------------ events
def test_a_posted_event_reaches_the_store(client, store):
    got = client.post("/persona/events", json={"user": "ann-flask", "item": "i0003", "event": "cart", "value": 12.5,
                                               "properties": {"source": "test"}})
    assert got.status_code == 202, got.data
    body = got.get_json()
    assert body["tracked"] == 1 and len(body["event_ids"]) == 1
    store.flush()
    ev = store.events(user="ann-flask")
    assert ev["event"].tolist() == ["cart"] and ev["value"].tolist() == [12.5]
    assert ev["properties"].tolist() == [{"source": "test"}] and ev["event_id"].tolist() == body["event_ids"]


def test_a_batch_of_events(client, store):
    events = [{"user": "bob-flask", "item": f"i000{k}", "event": "view"} for k in range(3)]
    got = client.post("/persona/events", json={"events": events})
    assert got.status_code == 202 and got.get_json()["tracked"] == 3
    store.flush()
    assert store.count(user="bob-flask") == 3


@pytest.mark.parametrize("body, field, words", [
    ({"item": "i1", "event": "view"}, "user", "user is required"),
    ({"user": "u", "event": "view"}, "item", "item is required"),
    ({"user": "u", "item": "i1"}, "event", "event expected a non-empty string"),
    ({"user": "u", "item": "i1", "event": ""}, "event", "non-empty"),
    ({"user": True, "item": "i1", "event": "view"}, "user", "string or integer"),
    ({"user": "u", "item": ["i1"], "event": "view"}, "item", "string or integer"),
    ({"user": "u", "item": "i1", "event": "view", "value": "12"}, "value", "finite number"),
    ({"user": "u", "item": "i1", "event": "view", "properties": [1]}, "properties", "object"),
    ({"user": "u", "item": "i1", "event": "view", "colour": "red"}, "colour", "unknown field"),
    ({"user": "u", "item": "i1", "event": "view", "timestamp": "yesterday-ish"}, None, "ISO-8601"),
    ([], "events", "no events"),
    ("just text", None, "JSON object"),
    ({"events": [{"user": "u", "item": "i1", "event": "view"}, {"user": "u", "event": "view"}]},
     "events[1].item", "events[1].item is required"),
])
def test_bad_events_are_400_json_and_nothing_is_tracked(client, store, body, field, words):
    store.flush()
    before = store.count()
    got = client.post("/persona/events", json=body)
    assert got.status_code == 400 and got.is_json, got.data
    out = got.get_json()
    assert words in out["error"], out
    assert out.get("field") == field
    store.flush()
    assert store.count() == before


def test_a_body_that_is_not_json_is_400(client):
    got = client.post("/persona/events", data="user=ann&item=i1", content_type="application/x-www-form-urlencoded")
    assert got.status_code == 400 and "JSON body" in got.get_json()["error"]
    got = client.post("/persona/events", data="{not json", content_type="application/json")
    assert got.status_code == 400 and got.is_json


def test_tracking_drops_the_users_cached_answers(client, shop):
    user = known_user(shop, 7)
    client.get(f"/persona/recommendations/{user}?n=5")
    assert client.get(f"/persona/recommendations/{user}?n=5").get_json()["cached"] is True
    assert client.post("/persona/events", json={"user": user, "item": "i0001", "event": "view"}).status_code == 202
    assert client.get(f"/persona/recommendations/{user}?n=5").get_json()["cached"] is False


def test_recommendations_change_after_events_and_a_retrain(client, service, store, tmp_path):
    before = client.get("/persona/recommendations/newcomer?n=5").get_json()
    assert before["source"] == "popular"
    liked = ["i0010", "i0011", "i0012"]
    events = [{"user": "newcomer", "item": i, "event": e} for i in liked for e in ("view", "cart", "purchase")]
    assert client.post("/persona/events", json={"events": events}).status_code == 202

    published = common.train_and_publish(store, tmp_path / "model.persona", model="itemknn", params={"k": 20})
    assert published.path.exists() and "newcomer" in published.model.user_map_
    service.reload(published.path)
    after = client.get("/persona/recommendations/newcomer?n=5").get_json()
    assert after["source"] == "model" and after["model_version"] == before["model_version"] + 1
    assert not set(after["items"]) & set(liked)  # seen items are filtered
    assert after["items"] != before["items"]


# ------------------------------------------------------------------------------ signed-in users, lazy config, CLI
def test_current_user_mode(service, store):
    app = flask.Flask("secure-shop")
    app.register_blueprint(persona_blueprint(service, store, url_prefix="/api",
                                             current_user=lambda: flask.request.headers.get("X-User"),
                                             allowed_events={"view", "cart"}))
    c = app.test_client()
    mine = c.get("/api/recommendations?n=3", headers={"X-User": "carol"}).get_json()
    assert mine["user"] == "carol" and len(mine["items"]) == 3
    assert c.get("/api/recommendations?n=3").status_code == 401
    assert c.get("/api/recommendations/carol?n=3").status_code == 403  # nobody reads others' lists by id
    assert c.get("/api/recommendations/carol?n=3", headers={"X-User": "dave"}).status_code == 403
    assert c.get("/api/recommendations/carol?n=3", headers={"X-User": "carol"}).status_code == 200  # one's own

    ok = c.post("/api/events", json={"item": "i0002", "event": "view"}, headers={"X-User": "carol"})
    assert ok.status_code == 202
    store.flush()
    assert store.count(user="carol") == 1
    other = c.post("/api/events", json={"user": "dave", "item": "i0002", "event": "view"}, headers={"X-User": "carol"})
    assert other.status_code == 403 and other.get_json()["field"] == "user"
    buy = c.post("/api/events", json={"item": "i0002", "event": "purchase"}, headers={"X-User": "carol"})
    assert buy.status_code == 400 and "not accepted" in buy.get_json()["error"]


def test_the_extension_builds_the_service_from_config_and_trains_from_the_cli(shop, tmp_path):
    app = flask.Flask("configured-shop")
    store_path, model_path = tmp_path / "events.db", tmp_path / "model.persona"
    app.config.update(PERSONA_MODEL_PATH=str(model_path), PERSONA_STORE=str(store_path),
                      PERSONA_TRAIN={"model": "itemknn", "params": {"k": 10}})
    persona = Persona(app, user_in_url=True, trusted_tracking=True)  # a trusted internal API
    c = app.test_client()
    try:
        missing = c.get("/persona/recommendations/ann")
        assert missing.status_code == 503 and "no model has been published" in missing.get_json()["error"]
        events = [{"user": u, "item": i, "event": "purchase"} for u, items in
                  {"ann": ["a", "b"], "bob": ["b", "c"], "cid": ["a", "c"]}.items() for i in items]
        assert c.post("/persona/events", json={"events": events}).status_code == 202  # tracking needs no model

        result = app.test_cli_runner().invoke(args=["persona", "train"])
        assert result.exit_code == 0, result.output
        assert "published ItemKNN trained on 6 events" in result.output
        assert isinstance(ps.load(model_path), ps.ItemKNN)

        body = c.get("/persona/recommendations/ann?n=1").get_json()
        assert body["source"] == "model" and body["items"] == ["c"]
        with app.app_context():
            assert get_persona() is persona
    finally:
        persona.service.close()
        persona.store.close()


def test_import_persona_stays_light():
    code = ("import sys, persona, persona.contrib, persona.contrib.common; "
            "print(sorted(m for m in ('flask', 'django', 'selenium') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


# ------------------------------------------------------------------------------ the example shop
def load_example():
    path = ROOT / "examples" / "flask_shop" / "app.py"
    spec = importlib.util.spec_from_file_location("persona_example_flask_shop", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def example_app(tmp_path_factory):
    app = load_example().create_app(tmp_path_factory.mktemp("flask-shop"), n_users=200, n_items=150, watch=False)
    yield app
    app.extensions["shop"]["service"].close()
    app.extensions["shop"]["store"].close()


def listed(html: str, list_id: str) -> tuple[list[str], str | None]:
    m = re.search(rf'<ul class="cards" id="{list_id}"([^>]*)>(.*?)</ul>', html, re.S)
    assert m, f"no list {list_id!r} on the page"
    source = re.search(r'data-source="([^"]+)"', m.group(1))
    return re.findall(r'data-item="([^"]+)"', m.group(2)), source.group(1) if source else None


def list_links(html: str, list_id: str) -> tuple[str | None, list[str]]:
    """The request id a list was logged under and the hrefs of its links."""
    m = re.search(rf'<ul class="cards" id="{list_id}"([^>]*)>(.*?)</ul>', html, re.S)
    assert m, f"no list {list_id!r} on the page"
    rid = re.search(r'data-request-id="([^"]+)"', m.group(1))
    return rid.group(1) if rid else None, re.findall(r'href="([^"]+)"', m.group(2))


def test_example_shop_pages(example_app):
    c = example_app.test_client()
    home = c.get("/")
    assert home.status_code == 200
    products, _ = listed(home.get_data(as_text=True), "products")
    assert len(products) == 150
    assert c.get("/product/no-such-product").status_code == 404

    store = example_app.extensions["shop"]["store"]
    item = products[1]
    page = c.get(f"/product/{item}").get_data(as_text=True)
    mine, source = listed(page, "recommended")
    also, _ = listed(page, "also-bought")
    assert source == "popular" and len(mine) == 6 and len(also) == 6
    assert item not in mine and item not in also and not set(mine) & set(also)
    with c.session_transaction() as s:
        visitor = s["visitor"]
    store.flush()
    assert store.events(user=visitor)["event"].tolist() == ["view"]

    added = c.post("/cart", data={"item_id": item})
    assert added.status_code == 302
    page = c.get(added.location).get_data(as_text=True)
    assert 'id="added"' in page
    after, source = listed(page, "recommended")
    assert source == "model-history" and len(after) == 6 and after != mine and item not in after
    store.flush()
    ev = store.events(user=visitor)
    assert ev["event"].tolist() == ["view", "cart"]  # coming back from the cart is not a second view
    price = example_app.extensions["shop"]["products"][item]["price"]
    assert ev["value"].tolist()[1] == pytest.approx(price)


def test_example_shop_sample_customer_gets_the_model(example_app):
    c = example_app.test_client()
    user = example_app.extensions["shop"]["shop"].interactions.user_ids[0]
    c.get(f"/login/{user}")
    _, source = listed(c.get("/").get_data(as_text=True), "recommended")
    assert source == "model"


# ------------------------------------------------------------------------------ end to end, in Chromium
def chrome_driver():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        missing_service("chromium", f"found chromium={chromium}, chromedriver={driver}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the end-to-end test needs selenium: pip install '.[test]'", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-extensions",
                "--window-size=1200,900"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def test_end_to_end_in_chromium_add_to_cart_changes_recommendations(example_app):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, example_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="flask-shop", daemon=True)
    thread.start()
    browser = None
    try:
        browser = chrome_driver()
        browser.set_page_load_timeout(30)
        base = f"http://127.0.0.1:{server.server_port}"
        browser.get(base + "/")
        first = browser.find_elements(By.CSS_SELECTOR, "#products li a")[2]
        item = first.find_element(By.XPATH, "..").get_attribute("data-item")
        first.click()
        WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.ID, "add-to-cart")))
        assert browser.find_element(By.ID, "product").get_attribute("data-item") == item

        def recommended():
            ul = browser.find_element(By.ID, "recommended")
            return ul.get_attribute("data-source"), [li.get_attribute("data-item")
                                                     for li in ul.find_elements(By.TAG_NAME, "li")]

        source, before = recommended()
        assert source == "popular" and len(before) == 6
        browser.find_element(By.ID, "add-to-cart").click()
        WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.ID, "added")))
        source, after = recommended()
        assert source == "model-history" and len(after) == 6
        assert after != before and item not in after
        assert browser.find_element(By.ID, "cart-count").text == "1"

        # issue 15: click a recommendation on the home page and see the click attributed to that list
        store = example_app.extensions["shop"]["store"]
        store.flush()
        clicks_before = ps.analytics.online_metrics(store, by="placement")["clicks"].get("home", 0)
        browser.get(base + "/")
        shown = browser.find_element(By.ID, "recommended")
        rid = shown.get_attribute("data-request-id")
        link = shown.find_elements(By.CSS_SELECTOR, "li a")[0]
        clicked = link.find_element(By.XPATH, "..").get_attribute("data-item")
        assert rid and f"persona_rid={rid}" in link.get_attribute("href")
        link.click()
        WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.ID, "add-to-cart")))
        assert browser.find_element(By.ID, "product").get_attribute("data-item") == clicked
        browser.find_element(By.ID, "metrics-link").click()
        WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.ID, "metrics")))
        home = browser.find_element(By.CSS_SELECTOR, 'tr[data-placement="home"]')
        assert int(home.find_element(By.CSS_SELECTOR, "td.clicks").text) == clicks_before + 1
        att = ps.analytics.attribution(store)
        assert att[att["request_id"] == rid][["item", "status"]].values.tolist() == [[clicked, "attributed"]]
    finally:
        if browser is not None:
            browser.quit()
        server.shutdown()
        thread.join(timeout=10)


# ------------------------------------------------------------------------------ issue 12: nothing dropped silently
def shop_events(store):
    """A small shop's own event names: ``add_to_cart`` has no built-in weight."""
    rows = [("ann", "a", "view"), ("ann", "b", "purchase"), ("bob", "b", "purchase"), ("bob", "c", "view"),
            ("cid", "a", "purchase"), ("cid", "z", "add_to_cart"), ("dan", "z", "add_to_cart"),
            ("dan", "a", "view")]
    for i, (u, it, e) in enumerate(rows):
        store.track(u, it, e, event_id=f"own-{i}")
    store.flush()


def configured_app(tmp_path, **config):
    tmp_path.mkdir(parents=True, exist_ok=True)
    app = flask.Flask("own-shop")
    app.config.update(PERSONA_MODEL_PATH=str(tmp_path / "model.persona"), PERSONA_STORE=str(tmp_path / "events.db"),
                      **config)
    persona = Persona(app)
    shop_events(persona.store)
    return app, persona


def test_issue12_flask_train_names_what_it_keeps_and_drops_and_takes_weights(tmp_path):
    app, persona = configured_app(tmp_path / "plain")
    try:
        out = app.test_cli_runner().invoke(args=["persona", "train"])
        assert out.exit_code == 0, out.output
        assert re.search(r"kept 6 events: purchase 3, view 3", out.output), out.output
        assert re.search(r"dropped 2 events: add_to_cart 2 \(no weight", out.output), out.output
        assert "PERSONA_EVENT_WEIGHTS" in out.output and "--weights add_to_cart=" in out.output
        assert "z" not in set(ps.load(tmp_path / "plain" / "model.persona").item_map_.ids)

        out = app.test_cli_runner().invoke(args=["persona", "train", "--weights", "add_to_cart=4,view=0.5"])
        assert out.exit_code == 0, out.output
        assert re.search(r"kept 8 events: .*add_to_cart 2", out.output) and "dropped none" in out.output, out.output
        assert "z" in set(ps.load(tmp_path / "plain" / "model.persona").item_map_.ids)

        bad = app.test_cli_runner().invoke(args=["persona", "train", "--weights", "add_to_cart"])
        assert bad.exit_code != 0 and "name=weight" in bad.output
    finally:
        persona.store.close()

    app, persona = configured_app(tmp_path / "configured", PERSONA_EVENT_WEIGHTS={"add_to_cart": 4.0})
    try:
        out = app.test_cli_runner().invoke(args=["persona", "train"])
        assert out.exit_code == 0 and "add_to_cart 2" in out.output and "dropped none" in out.output, out.output
        assert "z" in set(ps.load(tmp_path / "configured" / "model.persona").item_map_.ids)
    finally:
        persona.store.close()


def test_issue12_train_and_publish_reports_per_event_name(tmp_path):
    store = EventStore(tmp_path / "events.db")
    try:
        shop_events(store)
        published = common.train_and_publish(store, tmp_path / "m.persona", model="popular")
        assert published.kept == {"purchase": 3, "view": 3} and published.dropped == {"add_to_cart": 2}
        assert "add_to_cart 2" in str(published)
        published = common.train_and_publish(store, tmp_path / "m.persona", model="popular",
                                             event_types=["purchase"])
        assert published.kept == {"purchase": 3} and published.dropped == {"add_to_cart": 2, "view": 3}
        assert "not in event_types" in str(published)
    finally:
        store.close()


def test_issue12_unknown_event_names_are_refused_or_stored_and_reported(tmp_path, caplog):
    def post(app, event):
        return app.test_client().post("/persona/events", json={"user": "ann", "item": "a", "event": event})

    weighted = flask.Flask("weighted")
    weighted.config.update(PERSONA_STORE=str(tmp_path / "w.db"), PERSONA_EVENT_WEIGHTS={"add_to_cart": 4})
    p1 = Persona(weighted, trusted_tracking=True)
    try:
        assert post(weighted, "add_to_cart").status_code == 202  # configured: known
        refused = post(weighted, "add-to-cart")
        body = refused.get_json()
        assert refused.status_code == 400 and body["field"] == "event", body
        assert "add-to-cart" in body["error"] and "'add_to_cart'" in body["error"] and "'purchase'" in body["error"]
        p1.store.flush()
        assert p1.store.count(event_types=["add-to-cart"]) == 0
    finally:
        p1.store.close()

    stored = flask.Flask("stored")
    stored.config.update(PERSONA_STORE=str(tmp_path / "s.db"), PERSONA_EVENT_WEIGHTS={"add_to_cart": 4},
                         PERSONA_UNKNOWN_EVENTS="store")
    p2 = Persona(stored, trusted_tracking=True)
    try:
        with caplog.at_level("WARNING", logger="persona.contrib"):
            got = post(stored, "wishlist")
        assert got.status_code == 202 and got.get_json()["unknown_events"] == ["wishlist"], got.get_json()
        assert "no weight" in got.get_json()["note"]
        assert "wishlist" in caplog.text and "PERSONA_EVENT_WEIGHTS" in caplog.text
        p2.store.flush()
        assert p2.store.count(event_types=["wishlist"]) == 1
    finally:
        p2.store.close()

    plain = flask.Flask("plain")  # nothing configured: stored (as before) but reported, never silent
    plain.config.update(PERSONA_STORE=str(tmp_path / "p.db"))
    p3 = Persona(plain, trusted_tracking=True)
    try:
        got = post(plain, "add_to_cart")
        assert got.status_code == 202 and got.get_json()["unknown_events"] == ["add_to_cart"]
        assert "unknown_events" not in post(plain, "view").get_json()
    finally:
        p3.store.close()

    with pytest.raises(ps.errors.ParameterError, match="reject.*store"):
        persona_blueprint(None, unknown_events="drop")


# ------------------------------------------------------------------------------ issue 12: templates, 503, catalogue
def test_issue12_jinja_helpers_give_catalogue_names_and_prices(service, store, shop, catalog):
    app = flask.Flask("pages")
    app.secret_key = "test"
    Persona(app, service=service, store=store)
    user = known_user(shop, 3)
    names = dict(zip(catalog["item_id"], catalog["name"]))
    prices = dict(zip(catalog["item_id"], catalog["price"]))
    with app.test_request_context("/"):
        text = flask.render_template_string(
            "{% set recs = persona_recommended_for(user, 3) %}{{ recs.source }}:"
            "{% for r in recs %}{{ r.id }}={{ r.name }}={{ r.price }};{% endfor %}", user=user)
        source, rows = text.split(":")
        rows = [r.split("=") for r in rows.split(";") if r]
        assert source == "model" and len(rows) == 3
        for item, name, price in rows:
            assert name == names[item] and float(price) == pytest.approx(prices[item])
        html = flask.render_template_string("{{ persona_recommended_for(user, 2, category=cat) }}", user=user,
                                            cat=catalog["category"].iloc[0])
        assert html.count("<li data-item=") == 2 and 'data-source="model"' in html
        assert all(names[i] in html for i in re.findall(r'data-item="([^"]+)"', html))
        item = str(shop.interactions.item_ids[0])
        also = flask.render_template_string("{% for r in persona_also_bought(item, 2) %}{{ r.name }}|{% endfor %}",
                                            item=item)
        assert len([n for n in also.split("|") if n]) == 2 and names[item] not in also
        mine = flask.render_template_string("{{ persona_recommended_for(None, 2).source }}")
        assert mine == "popular"  # None: the requester (this browser's visitor id)


def test_issue12_jinja_helpers_render_nothing_before_a_model_is_published(tmp_path):
    app = flask.Flask("early")
    app.config.update(PERSONA_MODEL_PATH=str(tmp_path / "none-yet.persona"))
    Persona(app)
    with app.test_request_context("/"):
        html = flask.render_template_string("{{ persona_recommended_for('ann', 3) }}"
                                            "[{{ persona_also_bought('a').source }}]")
    assert 'data-source="unavailable"' in html and "<li" not in html and "[unavailable]" in html


def test_issue12_flask_503_names_flask_config_in_the_log_never_to_the_client(tmp_path, caplog):
    bare = flask.Flask("bare")
    Persona(bare, user_in_url=True)
    with caplog.at_level("WARNING", logger="persona.contrib"):
        got = bare.test_client().get("/persona/recommendations/ann")
    assert got.status_code == 503
    assert "app.config" not in got.get_data(as_text=True) and "PERSONA[" not in got.get_data(as_text=True)
    assert "set PERSONA_MODEL_PATH in app.config" in caplog.text, caplog.text
    assert "PERSONA['MODEL_PATH']" not in caplog.text

    caplog.clear()
    secret = tmp_path / "secret-folder" / "model.persona"
    missing = flask.Flask("missing")
    missing.config.update(PERSONA_MODEL_PATH=str(secret))
    Persona(missing, user_in_url=True)
    with caplog.at_level("WARNING", logger="persona.contrib"):
        got = missing.test_client().get("/persona/recommendations/ann")
    assert got.status_code == 503 and "secret-folder" not in got.get_data(as_text=True)
    assert "no model has been published" in got.get_json()["error"]
    assert "flask persona train" in caplog.text and "secret-folder" in caplog.text, caplog.text
    assert "manage.py" not in caplog.text

    out = bare.test_cli_runner().invoke(args=["persona", "train"])
    assert out.exit_code != 0
    assert "set PERSONA_STORE and PERSONA_MODEL_PATH in app.config" in out.output, out.output


def test_issue12_catalogue_id_column(shop, catalog, tmp_path):
    own = catalog.rename(columns={"item_id": "sku"})
    model = ps.ItemKNN(k=20).fit(shop.interactions)
    with pytest.raises(ps.errors.ParameterError, match="catalog_id"):
        RecommenderService(model, catalog=own)  # the message says how to name the id column
    svc = RecommenderService(model, catalog=own, catalog_id="sku")
    cat = catalog["category"].iloc[0]
    user = known_user(shop, 3)
    try:
        recs = svc.recommend(user, 3, context={"where": {"category": cat}})
        assert len(recs.items) == 3 and set(catalog.set_index("item_id").loc[recs.items.tolist(), "category"]) == {cat}
    finally:
        svc.close()

    model_path = tmp_path / "model.persona"
    model.save(model_path)
    app = flask.Flask("sku-shop")
    app.config.update(PERSONA_MODEL_PATH=str(model_path), PERSONA_CATALOG=lambda: own, PERSONA_CATALOG_ID="sku")
    persona = Persona(app, user_in_url=True)
    try:
        body = app.test_client().get(f"/persona/recommendations/{user}",
                                     query_string={"n": 3, "category": cat}).get_json()
        assert len(body.get("items", ())) == 3, body
        with app.test_request_context("/"):
            names = flask.render_template_string(
                "{% for r in persona_recommended_for(u, 2) %}{{ r.name }}|{% endfor %}", u=user)
        assert all(n in set(catalog["name"]) for n in names.split("|") if n) and names.count("|") == 2
    finally:
        persona.service.close()


def test_issue12_stats_name_the_worker(service, store):
    import os

    app = flask.Flask("stats")
    Persona(app, service=service, store=store, stats_permission=lambda: True)
    body = app.test_client().get("/persona/stats").get_json()
    assert body["worker"]["pid"] == os.getpid() and body["worker"]["threads"]["blas"] >= 1, body


# ------------------------------------------------------------------------------ issue 15: impressions and clicks
def test_issue15_example_shop_attributes_a_click_on_a_recommendation(example_app):
    c = example_app.test_client()
    store = example_app.extensions["shop"]["store"]
    home = c.get("/").get_data(as_text=True)
    rid, links = list_links(home, "recommended")
    assert rid and len(links) == 6 and all(f"persona_rid={rid}" in link for link in links)
    with c.session_transaction() as s:
        visitor = s["visitor"]
    item = listed(home, "recommended")[0][1]
    page = c.get(links[1]).get_data(as_text=True)
    c.get(links[1])  # reloaded: one click all the same
    assert 'id="product"' in page
    # the product page's own lists are logged and linked too
    pdp_rid, pdp_links = list_links(page, "recommended")
    sim_rid, sim_links = list_links(page, "also-bought")
    assert pdp_rid and sim_rid and pdp_rid != sim_rid and f"persona_rid={sim_rid}" in sim_links[0]
    assert c.post("/cart", data={"item_id": item, "persona_rid": rid}).status_code == 302
    store.flush()
    imp = store.impressions(user=visitor)
    assert set(imp["placement"]) >= {"home", "pdp", "pdp-similar"}
    ev = store.events(user=visitor)
    clicks = ev[ev["event"] == "click"]
    assert len(clicks) == 1 and clicks["item"].iloc[0] == item and clicks["properties"].iloc[0] == {"request_id": rid}
    att = ps.analytics.attribution(store)
    mine = att[att["request_id"] == rid].set_index("kind")
    assert mine.loc["click", "status"] == "attributed" and mine.loc["cart", "status"] == "attributed"
    assert mine.loc["click", "placement"] == "home" and mine.loc["click", "position"] == 2
    metrics = c.get("/metrics").get_data(as_text=True)
    row = re.search(r'<tr data-placement="home">(.*?)</tr>', metrics, re.S).group(1)
    assert int(re.search(r'class="clicks">(\d+)<', row).group(1)) >= 1


def test_issue15_json_answers_and_beacon_clicks(client, store, shop):
    user = known_user(shop, 4)
    body = client.get(f"/persona/recommendations/{user}?n=4&placement=home").get_json()
    rid = body["request_id"]
    assert len(rid) == 32 and body["placement"] == "home"
    beacon = {"user": user, "item": body["items"][0], "event": "click", "properties": {"request_id": rid},
              "event_id": f"click:{rid}:{body['items'][0]}"}
    for _ in range(2):  # a beacon delivered twice
        assert client.post("/persona/events", json=beacon).status_code == 202
    store.flush()
    att = ps.analytics.attribution(store)
    assert att[att["request_id"] == rid]["status"].tolist() == ["attributed"]
    bad = client.post("/persona/events", json={**beacon, "properties": {"request_id": 12}})
    assert bad.status_code == 400 and bad.get_json()["field"] == "properties.request_id"


def test_issue15_track_click_ignores_what_is_not_a_request_id(service, store):
    app = flask.Flask("clicks")
    app.secret_key = "k"
    persona = Persona(app, service=service, store=store, current_user=lambda: "ann")

    @app.get("/p/<item>")
    def product(item):
        return {"click": persona.track_click("ann", item)}

    c = app.test_client()
    for bad in ("x" * 5000, "☃", "a b", "", "<b>"):
        assert c.get("/p/i1", query_string={"persona_rid": bad}).get_json() == {"click": None}
    assert c.get("/p/i1").get_json() == {"click": None}
    rid = "f" * 32
    got = c.get(f"/p/i1?persona_rid={rid}").get_json()["click"]
    assert got.startswith("c:") and got.endswith(f":click:{rid}:i1")  # the user's own key
