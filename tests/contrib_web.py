"""One client shape over persona's Flask and Django endpoints, for the attack and fuzz tests.

``flask_web(...)`` and ``django_web(...)`` answer the same calls (``get``, ``post``) with the same
:class:`Answer`, so a test written once attacks both integrations. Options use the Flask names
(``user_in_url``, ``trusted_tracking``, ``client_options``, ``stats_permission``, ``signed_in``);
for Django they become ``settings.PERSONA`` keys. ``signed_in=True`` stands for the shop's own
sign-in: the ``X-User`` header names the signed-in user (``current_user`` / ``CURRENT_USER``).

Django can be set up once per process, so :func:`django_site` configures it with the example
shop's settings the first time and hands the same site to every later caller.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "django_shop"
_SITE: dict = {}


@dataclass
class Answer:
    status: int
    content_type: str
    data: bytes
    cookies: dict

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    @property
    def is_json(self) -> bool:
        return self.content_type.split(";")[0].strip() == "application/json"

    def json(self):
        return json.loads(self.data)


# ------------------------------------------------------------------------------ Django
def django_site(tmp_path_factory) -> dict:
    """Django set up with the example shop's settings, its store seeded and a first model published."""
    if _SITE:
        return _SITE
    import django
    from django.conf import settings

    if settings.configured:
        pytest.fail("Django was configured by something else; these tests need the example shop's settings")
    data = tmp_path_factory.mktemp("django-shop")
    env = dict(DJANGO_SHOP_DATA=str(data), DJANGO_SHOP_USERS="150", DJANGO_SHOP_ITEMS="100",
               DJANGO_SETTINGS_MODULE="django_shop.settings")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    sys.path.insert(0, str(EXAMPLE))
    try:
        django.setup()  # reads the settings (and so the environment) now, once
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    from django.core.management import call_command

    out = io.StringIO()
    call_command("seed_shop", stdout=out)
    assert "published ItemKNN" in out.getvalue()
    _SITE.update(data=data, conf=dict(settings.PERSONA), middleware=list(settings.MIDDLEWARE))
    return _SITE


def header_user(request):
    """A shop's sign-in, for tests: the ``X-User`` header (None when absent)."""
    return request.headers.get("X-User") or None


class DjangoWeb:
    name = "django"

    def __init__(self, site, *, sessions: bool = True, **options):
        from django.test import Client, override_settings

        conf = dict(site["conf"])
        keys = {"user_in_url": "USER_IN_URL", "trusted_tracking": "TRUST_EVENT_USER",
                "client_options": "CLIENT_OPTIONS", "limits": "LIMITS"}
        for name, key in keys.items():
            if name in options:
                conf[key] = options.pop(name)
        if "stats_permission" in options:
            allow = options.pop("stats_permission")
            conf["STATS_PERMISSION"] = (lambda request: allow()) if callable(allow) else allow
        if options.pop("signed_in", False):
            conf["CURRENT_USER"] = header_user
        if options:
            raise TypeError(f"unknown options {sorted(options)}")
        middleware = site["middleware"] if sessions else \
            [m for m in site["middleware"] if "sessions" not in m and "TrackViews" not in m]
        self.site = site
        self._override = override_settings(PERSONA=conf, MIDDLEWARE=middleware)
        self._override.enable()
        self.client = Client()

    def close(self):
        self._override.disable()

    def url(self, *parts: str) -> str:
        return "/persona/" + "".join(quote(str(p), safe="") + "/" for p in parts)

    def _answer(self, r) -> Answer:
        return Answer(r.status_code, r.get("Content-Type", ""), r.content,
                      {k: v for k, v in r.cookies.items()})

    def get(self, path: str, query: str = "", headers: dict | None = None) -> Answer:
        return self._answer(self.client.get(path + (f"?{query}" if query else ""), headers=headers or {}))

    def post(self, path: str, body=None, *, data: bytes | None = None, content_type: str = "application/json",
             headers: dict | None = None) -> Answer:
        raw = data if data is not None else json.dumps(body).encode()
        return self._answer(self.client.post(path, data=raw, content_type=content_type, headers=headers or {}))

    def request(self, method: str, path: str, **kw) -> Answer:
        return self._answer(self.client.generic(method, path, **kw))

    def store(self):
        from persona.contrib.django import get_store

        return get_store()

    def known_user(self, i: int = 0) -> str:
        from shop.catalog import synthetic

        return str(synthetic().interactions.user_ids[i])

    def known_item(self, i: int = 0) -> str:
        from shop.catalog import synthetic

        return str(synthetic().interactions.item_ids[i])

    def data_dir(self) -> str:
        return str(self.site["data"])


# ------------------------------------------------------------------------------ Flask
class FlaskWeb:
    name = "flask"

    def __init__(self, world, *, signed_in: bool = False, secret_key: str | None = "test-secret", **options):
        import flask

        from persona.contrib.flask import Persona

        self.world = world
        app = flask.Flask("attacked-shop")
        if secret_key is not None:
            app.secret_key = secret_key
        if signed_in:
            options["current_user"] = lambda: flask.request.headers.get("X-User") or None
        self.persona = Persona(app, service=options.pop("service", world["service"]),
                               store=options.pop("store", world["store"]), **options)
        self.app = app
        self.client = app.test_client()

    def close(self):
        pass

    def url(self, *parts: str) -> str:
        return "/persona" + "".join("/" + quote(str(p), safe="") for p in parts)

    def _answer(self, r) -> Answer:
        cookies = {}
        for header in r.headers.getlist("Set-Cookie"):
            name, _, rest = header.partition("=")
            cookies[name] = header
        return Answer(r.status_code, r.headers.get("Content-Type", ""), r.get_data(), cookies)

    def get(self, path: str, query: str = "", headers: dict | None = None) -> Answer:
        return self._answer(self.client.get(path + (f"?{query}" if query else ""), headers=headers or {}))

    def post(self, path: str, body=None, *, data: bytes | None = None, content_type: str = "application/json",
             headers: dict | None = None) -> Answer:
        raw = data if data is not None else json.dumps(body).encode()
        return self._answer(self.client.post(path, data=raw, content_type=content_type, headers=headers or {}))

    def request(self, method: str, path: str, **kw) -> Answer:
        return self._answer(self.client.open(path, method=method, **kw))

    def store(self):
        return self.world["store"]

    def known_user(self, i: int = 0) -> str:
        return str(self.world["shop"].interactions.user_ids[i])

    def known_item(self, i: int = 0) -> str:
        return str(self.world["shop"].interactions.item_ids[i])

    def data_dir(self) -> str:
        return str(self.world["data"])


def flask_world(tmp_path_factory) -> dict:
    """A small shop, an event store seeded with its history and a service over a model of it."""
    import persona as ps
    from persona.serving import RecommenderService
    from persona.store import EventStore

    data = tmp_path_factory.mktemp("flask-attacked")
    shop = ps.datasets.synthetic_shop(n_users=120, n_items=60, seed=5)
    store = EventStore(data / "events.db")
    ev = shop.events
    for i, (u, it, ts, e) in enumerate(zip(ev["user_id"], ev["item_id"], ev["timestamp"], ev["event"].astype(str))):
        store.track(u, it, e, timestamp=ts.timestamp(), event_id=f"seed-{i}")
    store.flush()
    catalog = shop.items[["item_id", "name", "category", "brand", "price"]]
    service = RecommenderService(ps.ItemKNN(k=20).fit(shop.interactions), catalog=catalog, store=store)
    return {"shop": shop, "store": store, "service": service, "data": data}


@contextlib.contextmanager
def web_for(framework: str, worlds: dict, **options):
    """A :class:`FlaskWeb` or :class:`DjangoWeb` with ``options``, undone on exit."""
    web = FlaskWeb(worlds["flask"], **options) if framework == "flask" else DjangoWeb(worlds["django"], **options)
    try:
        yield web
    finally:
        web.close()
