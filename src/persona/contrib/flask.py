"""Flask integration: JSON endpoints for recommendations and events, and a ``flask persona train`` command.

Two ways in, the same endpoints::

    from persona.contrib.flask import Persona, persona_blueprint

    persona = Persona(app, service=service, store=store)        # an extension (app.extensions["persona"])
    app.register_blueprint(persona_blueprint(service, store))   # or just the blueprint

or let the extension build the service lazily from the app's config (``PERSONA_MODEL_PATH``,
``PERSONA_STORE``, ``PERSONA_WATCH``, ``PERSONA_WATCH_INTERVAL``)::

    app.config.update(PERSONA_MODEL_PATH="model.persona", PERSONA_STORE="events.db", PERSONA_WATCH=True)
    persona = Persona(app)

Endpoints (under ``url_prefix``, default ``/persona``):

=======================================  ==================================================================
``GET  /recommendations/<user>``         ``?n=10`` and filters (see :func:`~persona.contrib.common.recommendation_query`)
``GET  /recommendations``                the same for ``current_user()`` (when given)
``GET  /similar/<item>``                 "customers also bought"; the same filters
``POST /events``                         ``{"user", "item", "event", "value", "properties", ...}`` or a batch
``GET  /stats``                          the service's and the store's counters
=======================================  ==================================================================

Answers are JSON; bad input is ``400 {"error": ..., "field": ...}``, a missing model or store ``503``.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Callable

from flask import Blueprint, Flask, current_app, jsonify, request

from ..errors import PersonaError
from . import common
from .common import RequestError

__all__ = ["Persona", "persona_blueprint", "get_persona"]


def _resolve(service):
    return service() if callable(service) and not hasattr(service, "recommend") else service


def persona_blueprint(service, store=None, *, url_prefix: str = "/persona", name: str = "persona",
                      current_user: Callable[[], object] | None = None, user_in_url: bool | None = None,
                      allowed_events=None, max_n: int = 100, default_n: int = 10,
                      model_path=None, train_options: dict | None = None) -> Blueprint:
    """A blueprint with persona's JSON endpoints, wired to ``service`` and ``store``.

    Parameters
    ----------
    service : RecommenderService, or a callable returning one
        A callable is called on each request (e.g. a lazily built, process-wide service).
    store : EventStore, optional
        Where ``POST /events`` writes. Default: ``service.store``. Without one, that endpoint is 503.
    current_user : callable, optional
        Returns the id of the user making the request (the signed-in customer, or a visitor id kept
        in the session). Enables ``GET /recommendations`` without a user in the URL, lets events
        leave out ``user``, and refuses (403) events that name another user.
    user_in_url : bool, optional
        Serve ``GET /recommendations/<user>`` (anyone's recommendations by id). Default: True
        without ``current_user``, False with it.
    allowed_events : iterable of str, optional
        Event types ``POST /events`` accepts (e.g. ``{"view", "click", "cart"}``, leaving purchases
        to the server side). Default: any.
    max_n, default_n : int
        The largest ``n`` a request may ask for, and ``n`` when it gives none.
    model_path, train_options
        Where ``flask <name> train`` publishes, and its defaults (``model``, ``params``, ...).
    """
    bp = Blueprint(name, __name__, url_prefix=url_prefix)
    if user_in_url is None:
        user_in_url = current_user is None

    def get_service():
        svc = _resolve(service)
        if svc is None:
            raise RequestError("no recommender service is configured", status=503)
        return svc

    def lenient_service():
        # tracking works before any model is published: the service is only needed to drop caches
        try:
            return _resolve(service)
        except RequestError:
            return None

    def get_store():
        if store is not None:
            return _resolve(store)
        return getattr(lenient_service(), "store", None)

    def api(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except PersonaError as e:
                body, status = common.error_json(e)
                return jsonify(body), status
        return wrapper

    def recommend_for(user):
        svc = get_service()
        q = common.recommendation_query(request.args.to_dict(flat=False), service=svc, default_n=default_n,
                                        max_n=max_n)
        user = common.coerce_id(user, common.model_ids(svc, "user"))
        recs = svc.recommend(user, q.n, context=q.context)
        return jsonify(common.recommendations_json(recs, user=user))

    if user_in_url:
        @bp.get("/recommendations/<user>")
        @api
        def recommendations(user):
            return recommend_for(user)

    if current_user is not None:
        @bp.get("/recommendations")
        @api
        def my_recommendations():
            user = current_user()
            if user is None:
                raise RequestError("no current user: sign in, or give the user in the URL", status=401)
            return recommend_for(user)

    @bp.get("/similar/<item>")
    @api
    def similar(item):
        svc = get_service()
        q = common.recommendation_query(request.args.to_dict(flat=False), service=svc, default_n=default_n,
                                        max_n=max_n)
        item = common.coerce_id(item, common.model_ids(svc, "item"))
        recs = svc.similar_items(item, q.n, context=q.context)
        return jsonify(common.recommendations_json(recs, item=item))

    @bp.post("/events")
    @api
    def events():
        body = request.get_json(silent=True)
        if body is None:
            raise RequestError("expected a JSON body (Content-Type: application/json) with user, item and event")
        default_user = current_user() if current_user is not None else None
        parsed = common.parse_events(body, default_user=default_user, allowed_events=allowed_events)
        ids = common.track_events(parsed, store=get_store(), service=lenient_service())
        return jsonify({"tracked": len(ids), "event_ids": ids}), 202

    @bp.get("/stats")
    @api
    def stats():
        return jsonify(common.stats_json(get_service(), get_store()))

    @bp.cli.command("train")
    def train_command():
        """Train on the store's events and publish the model (atomically) where the web workers watch."""
        import click

        st = get_store()
        if st is None or model_path is None:
            raise click.ClickException("persona train needs an event store and a model path "
                                       "(PERSONA_STORE and PERSONA_MODEL_PATH)")
        click.echo(str(common.train_and_publish(st, model_path, **(train_options or {}))))

    return bp


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
    **blueprint_options
        Passed to :func:`persona_blueprint` (``url_prefix``, ``current_user``, ``allowed_events``, ...).

    Examples
    --------
    >>> import persona as ps
    >>> from flask import Flask
    >>> from persona.contrib.flask import Persona
    >>> shop = ps.datasets.synthetic_shop(n_users=50, n_items=30, seed=0)
    >>> app = Flask("shop")
    >>> persona = Persona(app, service=ps.serving.RecommenderService(ps.ItemKNN().fit(shop.interactions)))
    >>> app.test_client().get("/persona/recommendations/nobody?n=3").get_json()["reason"]
    'unknown user'
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
        self._config = {k: cfg.get(f"PERSONA_{k}") for k in ("STORE", "WATCH", "WATCH_INTERVAL", "SERVICE", "TRAIN")}
        opts = dict(self._options)
        opts.setdefault("model_path", self._model_path)
        opts.setdefault("train_options", self._config["TRAIN"])
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
                    self._service = common.build_service(
                        self._model_path, store=store, watch=bool(cfg.get("WATCH")),
                        watch_interval=float(cfg.get("WATCH_INTERVAL") or 2.0), **(cfg.get("SERVICE") or {}))
        return self._service

    def track(self, user, item, event: str = "view", **kwargs):
        """Record an event (non-blocking) and drop the user's cached recommendations."""
        store = self.store
        if store is None:
            raise RequestError("event tracking is not configured: no event store was given", status=503)
        event_id = store.track(user, item, event, **kwargs)
        try:
            service = self.service
        except RequestError:  # no model published yet: nothing cached to drop
            return event_id
        service.invalidate(user)
        return event_id

    def recommend(self, user, n: int = 10, **options):
        """``n`` items for ``user``; ``options`` as :func:`~persona.contrib.common.context_from_options`
        takes them (``history=``, ``exclude=``, ``in_stock=True``, ``category=``, ``max_price=``, ...)."""
        return self.service.recommend(user, n, context=common.context_from_options(options) or None)

    def similar_items(self, item, n: int = 10, **options):
        """``n`` items like ``item`` ("customers also bought"); ``options`` as for :meth:`recommend`."""
        return self.service.similar_items(item, n, context=common.context_from_options(options) or None)


def get_persona(app: Flask | None = None) -> Persona:
    """The :class:`Persona` extension of ``app`` (default: the current app)."""
    app = app or current_app
    try:
        return app.extensions["persona"]
    except KeyError:
        raise RuntimeError("persona is not set up on this app; call Persona(app, ...) first") from None
