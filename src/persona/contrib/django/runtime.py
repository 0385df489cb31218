"""Settings, the process-wide service and store, and the helpers views and templates call.

Everything is created on first use (not at import, not at start-up), once per process, so
``manage.py`` commands that never recommend do not load a model, and a gunicorn ``--preload``
master can fork workers that each start their own watcher (the service and the store are
fork-safe). Changing ``settings.PERSONA`` (``override_settings`` in tests) drops both.
"""

from __future__ import annotations

import logging
import threading
from importlib import import_module
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from ...errors import ParameterError, PersonaError
from .. import common
from ..common import RequestError, Requester

__all__ = ["settings_dict", "get_service", "get_store", "reset", "current_user", "requester", "policy", "staff_only",
           "track", "track_click", "recommend", "similar_items", "DEFAULTS"]

log = logging.getLogger("persona.contrib.django")

#: every key ``settings.PERSONA`` may have, with its default
DEFAULTS = {
    "MODEL_PATH": None,        # the artifact the web processes serve (persona_train publishes it there)
    "STORE": None,             # an event store: a path, a postgresql:// URL or a dict of EventStore arguments
    "WATCH": False,            # reload MODEL_PATH whenever a new model is published there
    "WATCH_INTERVAL": 2.0,     # seconds between two checks of MODEL_PATH
    "MMAP": True,              # memory-map the model (workers share one copy of its arrays)
    "FALLBACK_PATH": None,     # an artifact tried when the model cannot answer (before global popularity)
    "CATALOG": None,           # "module.function" returning a DataFrame (item_id, category, price, ...) for filters
    "CATALOG_ID": "item_id",   # the catalogue's item id column (e.g. "sku")
    "SERVICE": {},             # more RecommenderService arguments: timeout, cache_size, filter_seen
    "CURRENT_USER": None,      # "module.function(request) -> signed-in user id or None"; default: request.user's pk
    "ITEMS": None,             # "module.function(ids) -> items" (objects or dicts) the template tags render
    "TRACK_VIEWS": {},         # {"url name": "kwarg holding the item id"}: views the middleware records
    "USER_IN_URL": False,      # answer recommendations/<user>/ for ANY user id: trusted internal callers only;
                               # False: only the requester's own id
    "TRUST_EVENT_USER": False,  # POST events/ may name any user: trusted server-side callers only;
                               # False: events are for the signed-in user or the session's visitor id
    "CLIENT_OPTIONS": [],      # history-revealing query switches clients may set: "filter_seen", "items"
    "STATS_PERMISSION": "persona.contrib.django.runtime.staff_only",  # (request) -> bool; None: stats/ is off
    "LIMITS": {},              # persona.contrib.common.Limits fields to change (body, id, event name, properties)
    "ALLOWED_EVENTS": None,    # event types POST events/ accepts; None: any
    "EVENT_WEIGHTS": None,     # the shop's own event names -> training weight, over view 1, click 2, cart 4,
                               # purchase 8, search 0.5: {"add_to_cart": 4}; persona_train trains on them
    "UNKNOWN_EVENTS": None,    # POST events/ with an event name not known: "reject" (400) or "store" (recorded and
                               # reported); None: "reject" when EVENT_WEIGHTS or ALLOWED_EVENTS is set, else "store"
    "MAX_N": 100,              # the largest n a request may ask for
    "TRAIN": {},               # persona_train defaults: {"MODEL": "itemknn", "PARAMS": {...}, "EVENT_TYPES": [...],
                               #                          "WEIGHTS": {...}}
}
_TRAIN_KEYS = {"MODEL", "PARAMS", "EVENT_TYPES", "WEIGHTS", "SINCE"}
VISITOR_SESSION_KEY = "persona_visitor"

_lock = threading.RLock()
_state: dict = {}


def settings_dict() -> dict:
    """``settings.PERSONA`` over :data:`DEFAULTS`; unknown keys are refused with the known ones named."""
    from django.conf import settings  # not at module level: doctest would poke the lazy object unconfigured

    given = getattr(settings, "PERSONA", None) or {}
    if not isinstance(given, dict):
        raise ImproperlyConfigured(f"settings.PERSONA must be a dict, got {type(given).__name__}")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(f"settings.PERSONA has unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    train = given.get("TRAIN") or {}
    bad = sorted(set(train) - _TRAIN_KEYS)
    if bad:
        raise ImproperlyConfigured(f"settings.PERSONA['TRAIN'] has unknown key(s) {bad}; known: {sorted(_TRAIN_KEYS)}")
    conf = {**DEFAULTS, **given}
    policy_of(conf)
    event_names_of(conf)
    return conf


def event_names_of(conf: dict) -> common.EventNames:
    """The :class:`~persona.contrib.common.EventNames` the settings ``conf`` ask for."""
    try:
        return common.EventNames.make(weights=conf["EVENT_WEIGHTS"], allowed_events=conf["ALLOWED_EVENTS"],
                                      unknown_events=conf["UNKNOWN_EVENTS"], words=common.DJANGO_WORDS)
    except ParameterError as e:
        raise ImproperlyConfigured(f"settings.PERSONA: {e}") from None


def event_names() -> common.EventNames:
    """The event names the shop knows (``EVENT_WEIGHTS``, ``ALLOWED_EVENTS``) and ``UNKNOWN_EVENTS``."""
    names = _state.get("event_names")
    if names is None:
        names = _state["event_names"] = event_names_of(settings_dict())
    return names


def policy_of(conf: dict) -> common.Policy:
    """The :class:`~persona.contrib.common.Policy` the settings ``conf`` ask for."""
    try:
        return common.Policy.make(user_in_url=conf["USER_IN_URL"], trusted_tracking=conf["TRUST_EVENT_USER"],
                                  client_options=conf["CLIENT_OPTIONS"], limits=conf["LIMITS"] or None)
    except ParameterError as e:
        raise ImproperlyConfigured(f"settings.PERSONA: {e}") from None


def policy() -> common.Policy:
    """What the shop opted in to (``USER_IN_URL``, ``TRUST_EVENT_USER``, ``CLIENT_OPTIONS``, ``LIMITS``)."""
    return policy_of(settings_dict())


def import_string(value, what: str):
    """A callable from a setting: the callable itself, or ``"package.module.name"``."""
    if value is None or callable(value):
        return value
    if not isinstance(value, str) or "." not in value:
        raise ImproperlyConfigured(f"settings.PERSONA[{what!r}] must be a callable or 'module.name', got {value!r}")
    module, _, name = value.rpartition(".")
    try:
        return getattr(import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ImproperlyConfigured(f"settings.PERSONA[{what!r}] = {value!r} cannot be imported: {e}") from None


def get_store():
    """The process-wide :class:`~persona.store.EventStore` from ``PERSONA["STORE"]`` (None if unset)."""
    if "store" not in _state:
        with _lock:
            if "store" not in _state:
                _state["store"] = common.open_store(settings_dict()["STORE"])
    return _state["store"]


def get_service():
    """The process-wide :class:`~persona.serving.RecommenderService`, built on first use.

    Raises :class:`~persona.contrib.common.RequestError` (status 503) while no model has been
    published at ``PERSONA["MODEL_PATH"]``; the next call tries again.
    """
    service = _state.get("service")
    if service is not None:
        return service
    with _lock:
        service = _state.get("service")
        if service is None:
            conf = settings_dict()
            catalog = import_string(conf["CATALOG"], "CATALOG")
            options = {"catalog_id": conf["CATALOG_ID"], **(conf["SERVICE"] or {})}
            service = common.build_service(
                conf["MODEL_PATH"], store=get_store(), fallback=conf["FALLBACK_PATH"],
                catalog=catalog() if catalog is not None else None, watch=bool(conf["WATCH"]),
                watch_interval=float(conf["WATCH_INTERVAL"]), mmap=bool(conf["MMAP"]), words=common.DJANGO_WORDS,
                **options)
            _state["service"] = service
            log.info("persona: serving %s from %s", type(service.model).__name__, conf["MODEL_PATH"])
    return service


def reset() -> None:
    """Stop and drop the service and the store (the next use builds them again from the settings)."""
    with _lock:
        service, store = _state.pop("service", None), _state.pop("store", None)
        _state.pop("event_names", None)
    if service is not None:
        service.close()
    if store is not None:
        try:
            store.close()
        except PersonaError as e:  # unwritten events: say so, but a reset must go through
            log.error("persona: closing the event store: %s", e)


def _on_setting_changed(setting=None, **kwargs) -> None:
    if setting == "PERSONA":
        reset()


setting_changed.connect(_on_setting_changed, dispatch_uid="persona.contrib.django.reset")


# ------------------------------------------------------------------------------ who and what
def staff_only(request) -> bool:
    """The default ``STATS_PERMISSION``: a signed-in staff user (``request.user.is_staff``)."""
    user = getattr(request, "user", None)
    return bool(user is not None and getattr(user, "is_authenticated", False) and getattr(user, "is_staff", False))


def signed_in_user(request):
    """The signed-in user's id: ``PERSONA["CURRENT_USER"](request)`` when set, else ``request.user``'s
    primary key (as text) when authenticated; None for an anonymous request."""
    func = import_string(settings_dict()["CURRENT_USER"], "CURRENT_USER")
    if func is not None:
        return func(request)
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return str(user.pk)
    return None


def requester(request) -> Requester:
    """Who makes ``request``: the signed-in user, else the session's anonymous visitor id (issued now
    when it has none), else nobody -- without session middleware an anonymous request has no id
    and may not track (it never falls back to a user named in the request)."""
    user = signed_in_user(request)
    if user is not None:
        return Requester(user, True)
    session = getattr(request, "session", None)
    if session is None:
        return Requester(None, False, "anonymous visitors need a session: add django.contrib.sessions' "
                                      "SessionMiddleware (or sign in)")
    visitor = session.get(VISITOR_SESSION_KEY)
    if visitor is None:
        visitor = session[VISITOR_SESSION_KEY] = common.new_visitor_id()
    return Requester(visitor, False)


def current_user(request):
    """The id persona knows the requester by, as text.

    The signed-in user (``PERSONA["CURRENT_USER"](request)`` when set, else ``request.user``'s
    primary key), else an anonymous visitor id kept in the session (``"visitor-<32 hex>"``),
    else None.
    """
    if request is None:
        return None
    return requester(request).user


def user_id(value, request=None):
    """A user id from what a template or view has: an id, a Django user, or None (the requester)."""
    if value is None or value == "":
        return current_user(request)
    if hasattr(value, "is_authenticated"):
        return str(value.pk) if value.is_authenticated else current_user(request)
    return value


def item_id(value):
    """An item id from an id, a mapping with ``item_id`` / ``id``, or a model instance (its ``pk``)."""
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return value
    if isinstance(value, dict):
        for key in ("item_id", "id", "pk"):
            if key in value:
                return value[key]
    for attr in ("item_id", "pk", "id"):
        v = getattr(value, attr, None)
        if v is not None:
            return v
    raise RequestError(f"cannot tell the item id of {value!r}; pass the id itself")


def track(request_or_user, item, event: str = "view", **kwargs):
    """Record an event for a request's user (or a user id) and drop their cached recommendations.

    ``kwargs``: ``value``, ``properties``, ``timestamp``, ``event_id`` as ``EventStore.track`` takes
    them. Returns the event id (None, recording nothing, for a user who withdrew consent to
    ``"personalisation"``); raises ``RequestError`` (503) when no store is configured.
    """
    user = current_user(request_or_user) if hasattr(request_or_user, "META") else request_or_user
    if user is None:
        raise RequestError("no user to track this event for: give a user id, or enable sessions / auth")
    store = get_store()
    if store is None:
        raise RequestError("event tracking is not configured: set PERSONA['STORE']", status=503)
    if not common.tracking_allowed(store, user):
        return None
    event_id = store.track(user, item_id(item), event, **kwargs)
    service = _state.get("service")  # only a running service has answers cached
    if service is not None:
        service.invalidate(user)
        coerced = common.coerce_id(user, common.model_ids(service, "user"))
        if coerced is not user:
            service.invalidate(coerced)
    return event_id


def track_click(request_or_user, item, request_id=None):
    """Record a click on a recommendation of ``item``, attributed to the answer ``request_id``
    (default: the request's ``persona_rid`` query parameter, which rendered lists put on their
    links; :class:`~persona.contrib.django.middleware.TrackViewsMiddleware` calls this for the views
    it tracks). A missing, stale or hostile id records nothing and never fails the page; a page
    reloaded with the same link counts once. Returns the event id, or None."""
    if request_id is None and hasattr(request_or_user, "GET"):
        request_id = request_or_user.GET.get(common.REQUEST_ID_PARAM)
    kw = common.click_event(item_id(item), request_id)
    if kw is None:
        return None
    try:
        return track(request_or_user, kw.pop("item"), kw.pop("event"), **kw)
    except PersonaError as e:
        log.warning("persona: could not record a click on %r: %s", item, e)
        return None


def recommend(user, n: int = 10, **options):
    """``n`` recommendations for ``user`` (an id); ``options`` as :func:`~persona.contrib.common.context_from_options`
    (``placement="home"``, ``history=``, ...); with a store, the answer is logged as an impression."""
    service = get_service()
    user = common.coerce_id(user, common.model_ids(service, "user"))
    return service.recommend(user, n, context=common.context_from_options(options) or None)


def similar_items(item, n: int = 10, user=None, **options):
    """``n`` items like ``item`` ("customers also bought"); ``options`` as for :func:`recommend`;
    ``user``: who is shown them (a request or an id; their impression is logged)."""
    service = get_service()
    item = common.coerce_id(item_id(item), common.model_ids(service, "item"))
    if user is not None and hasattr(user, "META"):
        user = current_user(user)
    return service.similar_items(item, n, context=common.context_from_options(options) or None, user=user)


def model_path() -> Path | None:
    path = settings_dict()["MODEL_PATH"]
    return None if path is None else Path(path)
