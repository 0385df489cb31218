"""Flask integration: JSON endpoints for recommendations and events, and a ``flask persona train`` command.

Two ways in, the same endpoints::

    from persona.contrib.flask import Persona, persona_blueprint

    persona = Persona(app, service=service, store=store)        # an extension (app.extensions["persona"])
    app.register_blueprint(persona_blueprint(service, store))   # or just the blueprint

or let the extension build the service lazily from the app's config (``PERSONA_MODEL_PATH``,
``PERSONA_STORE``, ``PERSONA_WATCH``, ``PERSONA_WATCH_INTERVAL``, ``PERSONA_CATALOG``,
``PERSONA_CATALOG_ID``, ``PERSONA_EVENT_WEIGHTS``, ``PERSONA_UNKNOWN_EVENTS``)::

    app.config.update(PERSONA_MODEL_PATH="model.persona", PERSONA_STORE="events.db", PERSONA_WATCH=True)
    persona = Persona(app)

Templates get ``persona_recommended_for(user, n, **options)`` and ``persona_also_bought(item, n,
**options)`` (Jinja globals, like Django's ``{% recommended_for %}``): a list of entries with
``id``, ``score``, ``name``, ``url`` and the catalogue's fields (``rec.price``), which prints
itself as HTML (``{{ persona_recommended_for(None, 6) }}``) or loops.

Endpoints (under ``url_prefix``, default ``/persona``):

=======================================  ==================================================================
``GET  /recommendations``                for the requester: ``current_user()``, else this browser's visitor id
``GET  /recommendations/<user>``         the requester's own id only; anyone's with ``user_in_url=True``
                                         (trusted internal callers only)
``GET  /similar/<item>``                 "customers also bought"; the same filters
``POST /events``                         ``{"item", "event", "value", "properties", ...}`` or a batch, for
                                         the requester; naming any user needs ``trusted_tracking=True``;
                                         an unknown event name: 400, or stored and reported
                                         (``unknown_events``)
``GET  /stats``                          the counters; off unless ``stats_permission()`` says yes
=======================================  ==================================================================

Answers are JSON, errors too (an unknown path under the prefix is a JSON 404): bad input is
``400 {"error": ..., "field": ...}``, a refused one ``403``, an oversized body ``413``, a missing
model or store ``503``. Error answers never hold paths, URLs or exception texts; the
``persona.contrib`` log has them. See ``docs/integrations.md``, "Who may ask for what".
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Callable

from flask import Blueprint, Flask, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import ParameterError, PersonaError
from . import common
from .common import FLASK_WORDS, RequestError, Requester

__all__ = ["Persona", "persona_blueprint", "get_persona"]

_VISITOR_MAX_AGE = 365 * 24 * 3600


def _resolve(service):
    return service() if callable(service) and not hasattr(service, "recommend") else service


#: what ``{{ persona_recommended_for(...) }}`` prints without ``template=`` (the markup of Django's tag)
DEFAULT_TEMPLATE = (
    '<ul class="persona-recommendations" data-source="{{ recs.source }}" data-model-version="{{ recs.model_version }}"'
    '{% if recs.request_id %} data-request-id="{{ recs.request_id }}"{% endif %}>'
    '{% for rec in recs %}<li data-item="{{ rec.id }}">'
    '{% if rec.url %}<a href="{{ rec.link }}">{{ rec.name }}</a>{% else %}{{ rec.name }}{% endif %}'
    '</li>{% endfor %}</ul>'
)


class RecommendationList(common.RecommendationList):
    """:class:`~persona.contrib.common.Recommended` entries that print as HTML in a Jinja template
    (``template_name``: a template of the app, given ``recs`` and ``title``; default: a ``<ul>``)."""

    def __html__(self) -> str:
        from flask import render_template, render_template_string

        if self.template_name:
            return render_template(self.template_name, recs=self, title=self.title)
        return render_template_string(DEFAULT_TEMPLATE, recs=self, title=self.title)

    __str__ = __html__


def _json_error(body: dict, status: int, headers=None):
    response = jsonify(body)
    response.status_code = status
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


def persona_blueprint(service, store=None, *, url_prefix: str = "/persona", name: str = "persona",
                      current_user: Callable[[], object] | None = None, user_in_url: bool = False,
                      trusted_tracking: bool = False, client_options=None,
                      stats_permission: Callable[[], bool] | None = None, limits=None,
                      cookie_name: str = "persona_visitor", secure_cookie: bool | None = None,
                      allowed_events=None, event_weights=None, unknown_events: str | None = None,
                      items: Callable | None = None, max_n: int = 100, default_n: int = 10,
                      model_path=None, train_options: dict | None = None) -> Blueprint:
    """A blueprint with persona's JSON endpoints, wired to ``service`` and ``store``.

    The defaults reveal nothing about a user to anyone but that user; each opt-in below opens one
    thing, and says for whom it is meant.

    Parameters
    ----------
    service : RecommenderService, or a callable returning one
        A callable is called on each request (e.g. a lazily built, process-wide service).
    store : EventStore, optional
        Where ``POST /events`` writes. Default: ``service.store``. Without one, that endpoint is 503.
    current_user : callable, optional
        Returns the id of the signed-in user making the request, or None. Without one (or when it
        returns None) the requester is an anonymous visitor: a random id persona issues in a
        signed cookie (``cookie_name``; HttpOnly, SameSite=Lax; needs ``app.secret_key``).
    user_in_url : bool, default False
        Answer ``GET /recommendations/<user>`` for *any* user id: for trusted internal callers only
        (a service behind the firewall), never for browsers. Off: only the requester's own id.
    trusted_tracking : bool, default False
        Let ``POST /events`` name any user: for trusted server-side callers only. Off: events are
        recorded for the requester, and an event naming anyone else is refused (403).
    client_options : iterable of str, optional
        History-revealing query switches clients may set (``"filter_seen"``, ``"items"``); refused
        (403) otherwise.
    stats_permission : callable, optional
        ``() -> bool``, e.g. ``lambda: current_user_is_staff()``: who may read ``GET /stats``.
        Without one, ``/stats`` is off (403).
    limits : dict or persona.contrib.common.Limits, optional
        Body, id, event-name, properties and query limits (see :class:`~persona.contrib.common.Limits`).
    secure_cookie : bool, optional
        Mark the visitor cookie ``Secure``. Default: when the request came over HTTPS.
    allowed_events : iterable of str, optional
        Event types ``POST /events`` accepts (e.g. ``{"view", "click", "cart"}``, leaving purchases
        to the server side). Default: any.
    event_weights : dict, optional
        The shop's own event names and their training weights, over the built-in ``view`` 1,
        ``click`` 2, ``cart`` 4, ``purchase`` 8, ``search`` 0.5 (e.g. ``{"add_to_cart": 4}``).
        ``flask <name> train`` trains on them and ``POST /events`` knows them.
    unknown_events : {"reject", "store"}, optional
        What ``POST /events`` does with an event name that is neither built in nor in
        ``event_weights`` / ``allowed_events``: ``"reject"`` (400, naming the known ones) or
        ``"store"`` (recorded; the answer's ``unknown_events`` names it, the log says it has no
        weight). Default: ``"reject"`` when the shop gave ``event_weights`` or ``allowed_events``,
        else ``"store"``.
    items : callable, optional
        ``(ids) -> items`` (a list with one per id, or a dict) the template helpers show; default:
        the service's catalogue rows.
    max_n, default_n : int
        The largest ``n`` a request may ask for, and ``n`` when it gives none.
    model_path, train_options
        Where ``flask <name> train`` publishes, and its defaults (``model``, ``params``, ...).
        The command prints what it kept and what it dropped, per event name; ``--weights
        add_to_cart=4,...`` adds weights for one run.
    """
    bp = Blueprint(name, __name__, url_prefix=url_prefix)
    policy = common.Policy.make(user_in_url=bool(user_in_url), trusted_tracking=bool(trusted_tracking),
                                client_options=client_options, limits=limits)
    event_names = common.EventNames.make(weights=event_weights, allowed_events=allowed_events,
                                         unknown_events=unknown_events, words=FLASK_WORDS)
    default_weights = common.event_weights(event_weights, FLASK_WORDS.event_weights)
    visitors = _Visitors(current_user, cookie_name, secure_cookie, g_name=f"_persona_visitor_{name}")
    endpoints = _Endpoints(service, store, visitors=visitors, policy=policy, event_names=event_names,
                           allowed_events=allowed_events, stats_permission=stats_permission, items=items,
                           max_n=max_n, default_n=default_n)

    endpoints.register(bp)
    bp.after_app_request(visitors.issue)  # also pages of the app whose templates asked for the visitor's list
    prefix = (url_prefix or "").rstrip("/")
    if prefix:
        bp.before_app_request(_json_routing_errors(prefix))
    bp.app_context_processor(endpoints.template_helpers)
    _add_train_command(bp, name, endpoints.get_store, model_path=model_path, train_options=train_options,
                       default_weights=default_weights)
    return bp


def _json_api(fn):
    """A route answering every error as JSON: persona's own with their status, the rest as a bare 500."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PersonaError as e:
            body, status = common.error_json(e)
            return _json_error(body, status)
        except HTTPException as e:  # e.g. the app's MAX_CONTENT_LENGTH
            return _json_error({"error": e.name}, e.code or 400)
        except Exception as e:  # noqa: BLE001 -- a JSON 500 that says nothing; the log has the traceback
            body, status = common.internal_error_json(e)
            return _json_error(body, status)
    return wrapper


def _json_routing_errors(prefix: str):
    """A before-request hook answering routing's 404, 405 and redirects under ``prefix`` as JSON."""
    def json_routing_errors():
        # a 404 or 405 from routing reaches no blueprint handler: answer those under our prefix here
        exc = request.routing_exception
        if exc is None or (getattr(exc, "code", 0) < 400 and not getattr(exc, "new_url", None)):
            return None
        if request.path != prefix and not request.path.startswith(prefix + "/"):
            return None
        if getattr(exc, "new_url", None):  # werkzeug's redirect to the canonical URL (e.g. "//" merged)
            return _json_error({"error": "this endpoint lives at the URL in the Location header"}, exc.code,
                               {"Location": exc.new_url})
        headers = {}
        if getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(exc.valid_methods)
        what = "no such persona endpoint" if exc.code == 404 else f"{request.method} is not allowed here"
        return _json_error({"error": f"{what}; see docs/integrations.md for the endpoints"}, exc.code, headers)
    return json_routing_errors


class _Visitors:
    """Who makes a request: the signed-in user (``current_user``), else this browser's anonymous
    visitor id, kept in a signed cookie (HttpOnly, SameSite=Lax; needs ``app.secret_key``)."""

    def __init__(self, current_user, cookie_name: str, secure: bool | None, *, g_name: str) -> None:
        self._current_user = current_user
        self._cookie = cookie_name
        self._secure = secure
        self._g_name = g_name  # where a newly issued cookie waits for the response

    def requester(self) -> Requester:
        """The signed-in user, else this browser's visitor id (issued now when it has none)."""
        if self._current_user is not None:
            user = self._current_user()
            if user is not None:
                return Requester(user, True)
        key = current_app.secret_key
        if not key:
            return Requester(None, False, "anonymous visitors need a signed visitor cookie: set app.secret_key "
                                          "(or pass current_user)")
        from itsdangerous import BadData, URLSafeSerializer

        signer = URLSafeSerializer(key, salt="persona.visitor")
        visitor = None
        raw = request.cookies.get(self._cookie)
        if raw:
            try:
                visitor = signer.loads(raw)
            except BadData:
                visitor = None
        if not common.is_visitor_id(visitor):
            visitor = common.new_visitor_id()
            setattr(g, self._g_name, signer.dumps(visitor))
        return Requester(visitor, False)

    def issue(self, response):
        """Set the cookie of a visitor id issued while answering this request."""
        value = g.pop(self._g_name, None)
        if value is not None:
            secure = request.is_secure if self._secure is None else bool(self._secure)
            response.set_cookie(self._cookie, value, max_age=_VISITOR_MAX_AGE, httponly=True, samesite="Lax",
                                secure=secure, path="/")
        return response


class _Endpoints:
    """The blueprint's routes and template helpers, over one service, store and policy."""

    ROUTES = (("/recommendations/<user>", "recommendations", "GET"), ("/recommendations", "my_recommendations", "GET"),
              ("/similar/<item>", "similar", "GET"), ("/events", "events", "POST"), ("/stats", "stats", "GET"))

    def __init__(self, service, store, *, visitors: _Visitors, policy: common.Policy,
                 event_names: common.EventNames, allowed_events, stats_permission, items, max_n: int,
                 default_n: int) -> None:
        self._service, self._store = service, store
        self._visitors = visitors
        self._policy = policy
        self._event_names = event_names
        self._allowed_events = allowed_events
        self._stats_permission = stats_permission
        self._items = items
        self._max_n, self._default_n = max_n, default_n

    def register(self, bp: Blueprint) -> None:
        for rule, endpoint, method in self.ROUTES:
            bp.add_url_rule(rule, endpoint, _json_api(getattr(self, endpoint)), methods=[method])

    # ------------------------------------------------------------------------ what is configured
    def get_service(self):
        svc = _resolve(self._service)
        if svc is None:
            raise RequestError("no recommender service is configured", status=503)
        return svc

    def lenient_service(self):
        # tracking works before any model is published: the service is only needed to drop caches
        try:
            return _resolve(self._service)
        except PersonaError:
            return None

    def get_store(self):
        if self._store is not None:
            return _resolve(self._store)
        return getattr(self.lenient_service(), "store", None)

    # ------------------------------------------------------------------------------- the routes
    def recommendations(self, user):
        who = Requester() if self._policy.user_in_url else self._visitors.requester()
        return self._recommend(common.check_url_user(user, who, self._policy))

    def my_recommendations(self):
        return self._recommend(common.requester_id(self._visitors.requester()))

    def similar(self, item):
        common.check_id(item, "item", self._policy.limits)
        svc = self.get_service()
        q = self._query(svc)
        item = common.coerce_id(item, common.model_ids(svc, "item"))
        recs = svc.similar_items(item, q.n, context=q.context, user=self._visitors.requester().user)
        return jsonify(common.recommendations_json(recs, item=item))

    def events(self):
        if not request.is_json:
            raise RequestError("expected a JSON body (Content-Type: application/json) with item and event")
        limits = self._policy.limits
        common.check_content_length(request.content_length, limits)
        body = common.parse_json_body(request.stream.read(limits.max_batch_bytes + 1), limits)
        who = self._visitors.requester()
        common.check_may_track(who, self._policy)
        parsed = common.parse_events(body, default_user=who.user, trusted=self._policy.trusted_tracking,
                                     allowed_events=self._allowed_events, limits=limits,
                                     event_names=self._event_names)
        ids = common.track_events(parsed, store=self.get_store(), service=self.lenient_service())
        return jsonify({"tracked": len(ids), "event_ids": ids,
                        **common.unknown_events_json(self._event_names.unknown_in(parsed))}), 202

    def stats(self):
        common.check_stats(None if self._stats_permission is None else bool(self._stats_permission()))
        return jsonify(common.stats_json(self.get_service(), self.get_store()))

    def _query(self, svc) -> common.RecommendationQuery:
        return common.recommendation_query(request.args.to_dict(flat=False), service=svc, default_n=self._default_n,
                                           max_n=self._max_n, client_options=self._policy.client_options,
                                           limits=self._policy.limits)

    def _recommend(self, user):
        svc = self.get_service()
        q = self._query(svc)
        user = common.coerce_id(user, common.model_ids(svc, "user"))
        recs = svc.recommend(user, q.n, context=q.context)
        return jsonify(common.recommendations_json(recs, user=user))

    # ------------------------------------------------------------------------ template helpers
    def template_helpers(self) -> dict:
        return {"persona_recommended_for": self.persona_recommended_for,
                "persona_also_bought": self.persona_also_bought}

    def _template_user(self, user):
        if user is None or user == "":
            who = self._visitors.requester()
            return who.user if who.user is not None else "persona:anonymous"  # the fallbacks answer
        get_id = getattr(user, "get_id", None)  # a Flask-Login user
        if callable(get_id):
            return get_id() if getattr(user, "is_authenticated", True) else self._template_user(None)
        return user

    def persona_recommended_for(self, user=None, n: int = 6, template: str | None = None, title=None, **options):
        """``n`` items for ``user`` (an id, a Flask-Login user, or None: the requester)."""
        uid = self._template_user(user)

        def ask(svc):
            return svc.recommend(common.coerce_id(uid, common.model_ids(svc, "user")), int(n),
                                 context=common.context_from_options(options) or None)
        return common.recommendation_list(ask, get_service=self.get_service, lookup=self._items,
                                          cls=RecommendationList, what="items=", template_name=template, title=title)

    def persona_also_bought(self, item, n: int = 6, template: str | None = None, title=None, **options):
        """``n`` items like ``item`` ("customers also bought"), logged as the requester's impression."""
        who = self._visitors.requester().user

        def ask(svc):
            return svc.similar_items(common.coerce_id(item, common.model_ids(svc, "item")), int(n),
                                     context=common.context_from_options(options) or None, user=who)
        return common.recommendation_list(ask, get_service=self.get_service, lookup=self._items,
                                          cls=RecommendationList, what="items=", template_name=template, title=title)


def _add_train_command(bp: Blueprint, name: str, get_store, *, model_path, train_options, default_weights) -> None:
    @bp.cli.command("train")
    @_click_option("--weights", multiple=True, metavar="NAME=W,...",
                   help="event weights for this run, over PERSONA_EVENT_WEIGHTS (e.g. add_to_cart=4,view=0.5)")
    def train_command(weights=()):
        """Train on the store's events and publish the model (atomically) where the web workers watch.

        Prints what was kept and what was dropped, per event name."""
        import click

        st = get_store()
        missing = [w for w, v in ((FLASK_WORDS.store, st), (FLASK_WORDS.model_path, model_path)) if v is None]
        if missing:
            raise click.ClickException(f"{name} train needs an event store and a model path: "
                                       f"{FLASK_WORDS.set(*missing)}")
        opts = dict(train_options or {})
        try:
            merged = {**(default_weights or {}),
                      **(common.event_weights(opts.pop("weights", None), "PERSONA_TRAIN['weights']") or {}),
                      **common.parse_weights(weights)}
            published = common.train_and_publish(st, model_path, weights=merged or None, words=FLASK_WORDS, **opts)
        except RequestError as e:
            raise click.ClickException(e.message + (f" ({e.detail})" if e.detail else "")) from None
        except PersonaError as e:
            raise click.ClickException(str(e)) from None
        click.echo(str(published))


def _click_option(*args, **kwargs):
    import click

    return click.option(*args, **kwargs)


class Persona:
    """A Flask extension: persona's endpoints, a lazily built service and store, ``flask persona train``.

    Parameters
    ----------
    app : Flask, optional
        Or call :meth:`init_app` later (application factories).
    service : RecommenderService, optional
        Default: built on first use from ``PERSONA_MODEL_PATH`` (with ``PERSONA_STORE``,
        ``PERSONA_WATCH``, ``PERSONA_WATCH_INTERVAL``, ``PERSONA_SERVICE`` options), once per process.
    store : EventStore, optional
        Default: ``service.store``, else one opened from ``PERSONA_STORE`` (a path, a
        ``postgresql://`` URL or a dict of ``EventStore`` arguments).
    Config keys
        ``PERSONA_CATALOG`` (a DataFrame, or a callable returning one: item attributes for filters
        and templates) with ``PERSONA_CATALOG_ID`` (its item id column, default ``"item_id"``);
        ``PERSONA_EVENT_WEIGHTS`` and ``PERSONA_UNKNOWN_EVENTS`` (see :func:`persona_blueprint`'s
        ``event_weights`` and ``unknown_events``); ``PERSONA_ITEMS`` (its ``items``).
    **blueprint_options
        Passed to :func:`persona_blueprint` (``url_prefix``, ``current_user``, ``allowed_events``, and
        the opt-ins ``user_in_url``, ``trusted_tracking``, ``client_options``, ``stats_permission``).

    Examples
    --------
    >>> import persona as ps
    >>> from flask import Flask
    >>> from persona.contrib.flask import Persona
    >>> shop = ps.datasets.synthetic_shop(n_users=50, n_items=30, seed=0)
    >>> app = Flask("shop")
    >>> persona = Persona(app, service=ps.serving.RecommenderService(ps.ItemKNN().fit(shop.interactions)))
    >>> web = app.test_client()
    >>> web.get("/persona/similar/no-such-item?n=3").get_json()["reason"]
    'unknown item'
    >>> web.get("/persona/recommendations/u00001").status_code      # someone else's: off by default
    403
    """

    def __init__(self, app: Flask | None = None, *, service=None, store=None, model_path=None,
                 **blueprint_options):
        self._service, self._store, self._model_path = service, store, model_path
        self._options = blueprint_options
        self._config: dict = {}
        self._lock = threading.Lock()
        self.app = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        self.app = app
        cfg = app.config
        if self._model_path is None and cfg.get("PERSONA_MODEL_PATH") is not None:
            self._model_path = Path(cfg["PERSONA_MODEL_PATH"])
        self._config = {k: cfg.get(f"PERSONA_{k}") for k in ("STORE", "WATCH", "WATCH_INTERVAL", "SERVICE", "TRAIN",
                                                              "CATALOG", "CATALOG_ID")}
        opts = dict(self._options)
        opts.setdefault("model_path", self._model_path)
        opts.setdefault("train_options", self._config["TRAIN"])
        for key, option in (("EVENT_WEIGHTS", "event_weights"), ("UNKNOWN_EVENTS", "unknown_events"),
                            ("ITEMS", "items")):
            if cfg.get(f"PERSONA_{key}") is not None:
                opts.setdefault(option, cfg[f"PERSONA_{key}"])
        if self._service is None and self._model_path is None:
            common.log.warning("persona: no model is configured for %s: %s (until then the recommendation "
                               "endpoints answer 503)", app.name, FLASK_WORDS.set(FLASK_WORDS.model_path))
        app.register_blueprint(persona_blueprint(lambda: self.service, lambda: self.store, **opts))
        app.extensions["persona"] = self

    @property
    def store(self):
        """The event store (None when none is configured)."""
        if self._store is None:
            svc_store = getattr(self._service, "store", None)
            if svc_store is not None:
                return svc_store
            with self._lock:
                if self._store is None and self._config.get("STORE") is not None:
                    self._store = common.open_store(self._config["STORE"])
        return self._store

    @property
    def service(self):
        """The process-wide service, built on first use from the app's config when none was given."""
        if self._service is None:
            store = self.store
            with self._lock:
                if self._service is None:
                    cfg = self._config
                    options = dict(cfg.get("SERVICE") or {})
                    if cfg.get("CATALOG_ID") is not None:
                        options.setdefault("catalog_id", cfg["CATALOG_ID"])
                    self._service = common.build_service(
                        self._model_path, store=store, watch=bool(cfg.get("WATCH")), catalog=self._catalog(),
                        watch_interval=float(cfg.get("WATCH_INTERVAL") or 2.0), words=FLASK_WORDS, **options)
        return self._service

    def _catalog(self):
        catalog = self._config.get("CATALOG")
        if catalog is None or hasattr(catalog, "columns"):
            return catalog
        if callable(catalog):
            return catalog()
        raise ParameterError(f"PERSONA_CATALOG in app.config expected a DataFrame of item attributes or a callable "
                             f"returning one, got {type(catalog).__name__}")

    def track(self, user, item, event: str = "view", **kwargs):
        """Record an event (non-blocking) and drop the user's cached recommendations.

        Records nothing (returns None) for a user who withdrew consent to ``"personalisation"``.
        """
        store = self.store
        if store is None:
            raise RequestError("event tracking is not configured: no event store was given", status=503)
        if not common.tracking_allowed(store, user):
            return None
        event_id = store.track(user, item, event, **kwargs)
        try:
            service = self.service
        except RequestError:  # no model published yet: nothing cached to drop
            return event_id
        service.invalidate(user)
        return event_id

    def recommend(self, user, n: int = 10, **options):
        """``n`` items for ``user``; ``options`` as :func:`~persona.contrib.common.context_from_options`
        takes them (``placement="home"``, ``history=``, ``exclude=``, ``in_stock=True``, ``category=``,
        ``max_price=``, ...). With a store the answer is logged as an impression: its ``request_id``
        goes on the links that show it (:func:`~persona.contrib.common.with_request_id`)."""
        return self.service.recommend(user, n, context=common.context_from_options(options) or None)

    def similar_items(self, item, n: int = 10, user=None, **options):
        """``n`` items like ``item`` ("customers also bought"); ``options`` as for :meth:`recommend`;
        ``user``: who is shown them (their impression is logged)."""
        return self.service.similar_items(item, n, context=common.context_from_options(options) or None, user=user)

    def track_click(self, user, item, request_id=None):
        """Record that ``user`` followed a recommendation of ``item``: a ``click`` attributed to the
        answer ``request_id`` (default: this request's ``persona_rid`` query parameter, which the
        rendered lists put on their links). Call it in the product view.

        A missing, stale or hostile request id records nothing and never fails the page; a page
        reloaded with the same link counts once (the key ``click:<request id>:<item>``, in the
        user's own namespace of event ids).
        Returns the event id, or None when nothing was recorded.
        """
        if request_id is None:
            request_id = request.args.get(common.REQUEST_ID_PARAM)
        kw = common.click_event(item, request_id)
        if kw is None:
            return None
        try:
            return self.track(user, kw.pop("item"), kw.pop("event"), **kw)
        except PersonaError as e:  # a bad user id, a failing store: the page still renders
            common.log.warning("persona: could not record a click on %r: %s", item, e)
            return None


def get_persona(app: Flask | None = None) -> Persona:
    """The :class:`Persona` extension of ``app`` (default: the current app)."""
    app = app or current_app
    try:
        return app.extensions["persona"]
    except KeyError:
        raise RuntimeError("persona is not set up on this app; call Persona(app, ...) first") from None
