"""What the Flask and Django integrations share, framework-free.

A web adapter does four things with persona, and each is one function here, so the Flask
blueprint, the Django views and a shop on any other framework behave the same:

* :func:`recommendation_query` turns query parameters into ``n`` and a service ``context``
  (``?n=5&category=Skincare&max_price=30&exclude=i1,i2&in_stock=1``);
* :func:`recommendations_json` turns a :class:`~persona.serving.Recommendations` into JSON;
* :func:`parse_events` validates a posted event (or a batch) and :func:`track_events` records it
  in the store and drops the user's cached answers;
* :func:`train_and_publish` trains a model on the store's events and publishes the artifact
  atomically, for a web process's watcher (:meth:`RecommenderService.watch`) to pick up; it
  counts, per event name, what it kept and what it dropped (no weight, or not selected).

Event names: :class:`EventNames` says which names the shop knows (the built-in weights, its own
``EVENT_WEIGHTS`` and ``ALLOWED_EVENTS``) and what a posted unknown name gets: refused at once
(400, naming the known ones) or stored and reported in the answer and the log. Templates:
:func:`recommended_entries` turns an answer into :class:`Recommended` entries carrying the
catalogue's fields (name, price, ...). :class:`Words` is how a framework names its settings, so
every message to the shop (log, command line) says what to set in that framework's own words.

Bad input raises :class:`RequestError`, which carries the HTTP status (400, 403, 413, 503) and the
name of the offending field; the adapters answer it as ``{"error": ..., "field": ...}``.

The security rules both adapters apply live here too (see ``docs/integrations.md``, "Who may ask
for what"): a :class:`Policy` says what the shop opted in to (``user_in_url``,
``trusted_tracking``, ``client_options``, ``stats``), :class:`Limits` bounds every request, and
a :class:`Requester` is who is asking (a signed-in user, or the anonymous visitor id the
integration issued in a cookie). :func:`check_url_user`, :func:`parse_events` and
:func:`recommendation_query` refuse what the policy does not allow; :func:`error_json` never puts
a file path, a database URL or an exception's text in an answer (the detail goes to the
``persona.contrib`` log).

>>> q = recommendation_query({"n": ["3"], "category": ["Skincare"], "max_price": ["30"], "exclude": ["i1,i2"]})
>>> q.n, q.context["where"], q.context["exclude"]
(3, {'category': 'Skincare', 'price': (None, 30.0)}, ['i1', 'i2'])
>>> parse_events({"item": "i7", "event": "cart", "value": 12.5}, default_user="ann")
[{'user': 'ann', 'item': 'i7', 'event': 'cart', 'value': 12.5}]
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .._validate import check_int, check_number
from ..errors import ParameterError, PersonaError

__all__ = [
    "RequestError", "error_json", "internal_error_json", "public_text", "RecommendationQuery", "Published",
    "recommendation_query", "recommendations_json", "context_from_options", "parse_events", "parse_json_body",
    "track_events", "stats_json", "open_store", "build_service", "train_and_publish", "coerce_id", "model_ids",
    "EVENT_FIELDS", "CLIENT_OPTIONS", "Limits", "Policy", "Requester", "check_id", "check_url_user",
    "check_stats", "check_content_length", "new_visitor_id", "is_visitor_id", "Words", "FLASK_WORDS",
    "DJANGO_WORDS", "EventNames", "UNKNOWN_EVENTS", "event_weights", "parse_weights", "Recommended",
    "RecommendationList", "recommended_entries", "recommendation_list", "unknown_events_json", "worker_json",
    "REQUEST_ID_PARAM", "check_request_id", "parse_request_id", "with_request_id", "click_event", "check_placement",
    "tracking_allowed",
]

log = logging.getLogger("persona.contrib")

#: the fields a posted event may have; ``user``, ``item`` and ``event`` are required
EVENT_FIELDS = ("user", "item", "event", "value", "timestamp", "properties", "event_id")
_RESERVED = {"n", "exclude", "items", "history", "in_stock", "filter_seen", "segment", "placement"}
#: query switches a client may use only when the shop lists them in ``client_options``: each one
#: turns an answer into a probe of the user's history (``filter_seen=0`` minus the normal answer is
#: the history; ``items=<one id>`` asks "has the user seen this item?")
CLIENT_OPTIONS = frozenset({"filter_seen", "items"})
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
_INT = re.compile(r"-?[0-9]{1,18}")
_EVENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_VISITOR = re.compile(r"visitor-[0-9a-f]{32}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_PLACEMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
#: the query parameter that carries a recommendation's request id on the links of a rendered list
REQUEST_ID_PARAM = "persona_rid"
_MAX_EPOCH = 7258118400.0  # 2200-01-01: the store's accepted range is 1970-2200


class RequestError(PersonaError, ValueError):
    """A request the integration refuses: ``status`` is the HTTP status, ``field`` what was wrong.

    ``message`` is what the client reads; ``detail`` (paths, URLs, driver messages) only goes to
    the ``persona.contrib`` log.
    """

    def __init__(self, message: str, *, field: str | None = None, status: int = 400, detail: str | None = None):
        super().__init__(message)
        self.message, self.field, self.status, self.detail = message, field, status, detail

    def to_json(self) -> dict:
        out = {"error": public_text(self.message)}
        if self.field is not None:
            out["field"] = public_text(str(self.field))[:300]
        return out


# ----------------------------------------------------------------------------------- policy and limits
@dataclass(frozen=True)
class Limits:
    """How big a request may be. Every limit answers ``413`` (sizes of bodies) or ``400`` (the rest).

    >>> Limits.of({"max_id_length": 64}).max_id_length
    64
    """

    max_event_bytes: int = 64 * 1024        # a body holding one event
    max_batch_bytes: int = 1024 * 1024      # a body holding a batch; also each event of a batch: max_event_bytes
    max_batch: int = 1000                   # events in one batch
    max_id_length: int = 256                # user, item and event ids, in characters
    max_event_length: int = 64              # event names: letters, digits and _ . : - (starting with a letter or digit)
    max_properties_bytes: int = 16 * 1024   # an event's properties, as compact JSON
    max_properties_depth: int = 8           # objects/arrays inside properties
    max_query_params: int = 50              # distinct query parameters
    max_query_ids: int = 500                # ids in exclude / items / history, together
    max_query_text: int = 256               # any other query value (segment, catalogue filters), in characters

    @classmethod
    def of(cls, value) -> "Limits":
        """``value`` as Limits: None (the defaults), a Limits, or a dict of fields to change."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            known = set(cls.__dataclass_fields__)
            unknown = sorted(set(value) - known)
            if unknown:
                raise ParameterError(f"limits: unknown name(s) {unknown}; known: {sorted(known)}")
            return cls(**{k: check_int(v, f"limits[{k!r}]", min=1, expected="a positive whole number")
                          for k, v in value.items()})
        raise ParameterError(f"limits expected None, a dict or persona.contrib.common.Limits, got {type(value).__name__}")


@dataclass(frozen=True)
class Policy:
    """What a shop opted in to; the defaults reveal nothing about a user to anyone but that user.

    user_in_url
        Serve ``recommendations/<user>`` for any user id (trusted internal callers only). Off: only
        the requester's own id is answered there.
    trusted_tracking
        ``POST events`` may name any user (trusted server-side callers only). Off: events are for
        the signed-in user, or for the anonymous visitor id the integration issued.
    client_options
        Which of :data:`CLIENT_OPTIONS` (``filter_seen``, ``items``) clients may set in the query.
    """

    user_in_url: bool = False
    trusted_tracking: bool = False
    client_options: frozenset = frozenset()
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def make(cls, *, user_in_url=False, trusted_tracking=False, client_options=None, limits=None) -> "Policy":
        """A Policy from settings, each checked (a typo in ``client_options`` is refused, not ignored)."""
        for name, v in (("user_in_url", user_in_url), ("trusted_tracking", trusted_tracking)):
            if not isinstance(v, bool):
                raise ParameterError(f"{name} expected True or False, got {v!r}")
        if client_options is None:
            opts = frozenset()
        elif isinstance(client_options, str):
            raise ParameterError(f"client_options expected a list of names such as ['filter_seen'], got "
                                 f"{client_options!r}")
        else:
            opts = frozenset(client_options)
        unknown = sorted(map(str, opts - CLIENT_OPTIONS))
        if unknown:
            raise ParameterError(f"client_options: unknown name(s) {unknown}; the opt-in query switches are "
                                 f"{sorted(CLIENT_OPTIONS)} (the others are always accepted)")
        return cls(user_in_url, trusted_tracking, opts, Limits.of(limits))


@dataclass(frozen=True)
class Requester:
    """Who makes a request: ``user`` is the id it acts as; ``signed_in`` when the shop vouched for it
    (``current_user``), False for the anonymous visitor id persona issued; ``user`` None when there
    is neither, with ``why`` saying what the shop must set up for anonymous visitors."""

    user: Any = None
    signed_in: bool = False
    why: str = ""


@dataclass(frozen=True)
class Words:
    """How a framework names persona's settings and commands, for messages to the shop (the log and
    the command line; never a client's answer)."""

    model_path: str = "model_path"
    store: str = "store"
    event_weights: str = "weights"
    unknown_events: str = "unknown_events"
    train: str = "persona.contrib.common.train_and_publish"
    where: str = ""  # where the settings live: " in app.config"

    def set(self, *names: str) -> str:
        """``"set A and B in app.config"``."""
        return f"set {' and '.join(names)}{self.where}"


FLASK_WORDS = Words("PERSONA_MODEL_PATH", "PERSONA_STORE", "PERSONA_EVENT_WEIGHTS", "PERSONA_UNKNOWN_EVENTS",
                    "flask persona train", " in app.config")
DJANGO_WORDS = Words("PERSONA['MODEL_PATH']", "PERSONA['STORE']", "PERSONA['EVENT_WEIGHTS']",
                     "PERSONA['UNKNOWN_EVENTS']", "python manage.py persona_train", " in settings.py")

#: what a posted event of an unknown name gets: refused (400) or stored and reported
UNKNOWN_EVENTS = ("reject", "store")


def event_weights(value, what: str = "event weights") -> dict | None:
    """``value`` (a setting: None or a dict of event name -> weight) checked, as a dict of floats."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ParameterError(f"{what} expected a dict of event name -> weight such as {{'add_to_cart': 4}}, "
                             f"got {type(value).__name__}")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not _EVENT_NAME.fullmatch(k):
            raise ParameterError(f"{what}: expected event names (letters, digits, _ . : -), got {k!r}")
        out[k] = check_number(v, f"{what}[{k!r}]", min=0, expected="a finite number >= 0")
    return out


def parse_weights(texts) -> dict:
    """Command-line weights: ``["add_to_cart=4,view=0.5", "click=2"]`` -> a dict of floats."""
    out = {}
    for text in [texts] if isinstance(texts, str) else texts or ():
        for part in str(text).split(","):
            name, sep, value = part.strip().partition("=")
            try:
                weight = float(value)
            except ValueError:
                weight = None
            if not sep or not name.strip() or weight is None:
                raise ParameterError(f"--weights expected name=weight[,name=weight...] such as add_to_cart=4, "
                                     f"got {part.strip()!r}")
            out[name.strip()] = weight
    return event_weights(out, "--weights") or {}


@dataclass
class EventNames:
    """The event names a shop knows, and what a posted unknown one gets.

    Known: the built-in weights (``view``, ``click``, ``cart``, ``purchase``, ``search``), the
    shop's ``weights`` and its ``allowed_events``. ``unknown``: ``"reject"`` (400, naming the
    known names) or ``"store"`` (recorded, named in the answer's ``unknown_events`` and in the
    log: training leaves them out until they get a weight). Default: ``"reject"`` once the shop
    configured weights or allowed events (it said what it sends), else ``"store"``.

    >>> EventNames.make(weights={"add_to_cart": 4}).unknown
    'reject'
    """

    known: frozenset
    unknown: str
    words: Words = field(default_factory=Words)
    _logged: set = field(default_factory=set, repr=False)

    @classmethod
    def make(cls, *, weights=None, allowed_events=None, unknown_events=None,
             words: Words | None = None) -> "EventNames":
        from ..data.ingest import DEFAULT_WEIGHTS

        words = words or Words()
        weights = event_weights(weights, words.event_weights)
        if unknown_events is None:
            unknown_events = "reject" if weights or allowed_events is not None else "store"
        if unknown_events not in UNKNOWN_EVENTS:
            raise ParameterError(f"unknown_events expected 'reject' or 'store', got {unknown_events!r}; "
                                 f"{words.set(words.unknown_events)} to one of them")
        known = {*DEFAULT_WEIGHTS, *(weights or {}), *(allowed_events or ())}
        return cls(frozenset(known), unknown_events, words)

    def check(self, event: str, where: str = "") -> None:
        """Refuse (400) an unknown name when ``unknown == "reject"``."""
        if self.unknown == "reject" and event not in self.known:
            raise RequestError(f"{where}event {event[:64]!r} is not a known event type; known: {sorted(self.known)}; "
                               f"send one of these (a shop adds its own names to its event weights)",
                               field=f"{where}event")

    def unknown_in(self, events: Iterable[Mapping]) -> list[str]:
        """The unknown names among parsed events (stored ones), logged once per name."""
        names = sorted({ev["event"] for ev in events if ev["event"] not in self.known})
        new = [n for n in names if n not in self._logged]
        if new:
            self._logged.update(new)
            w = self.words
            log.warning("persona: stored events of unknown type(s) %s: they have no weight, so training leaves "
                        "them out; give them one in %s%s (or refuse them: %s = 'reject'%s)", new,
                        w.event_weights, w.where, w.unknown_events, w.where)
        return names


def unknown_events_json(names: list[str]) -> dict:
    """What a ``POST events`` answer adds when it stored events of unknown names."""
    if not names:
        return {}
    return {"unknown_events": names,
            "note": "these event types have no weight: they are stored, but training leaves them out until the "
                    "shop gives them one"}


def new_visitor_id() -> str:
    """A random, unguessable anonymous visitor id (128 bits): ``"visitor-<32 hex digits>"``."""
    return f"visitor-{secrets.token_hex(16)}"


def is_visitor_id(value) -> bool:
    """Whether ``value`` has the form :func:`new_visitor_id` gives."""
    return isinstance(value, str) and _VISITOR.fullmatch(value) is not None


def check_url_user(user, requester: Requester, policy: Policy):
    """The user id of ``recommendations/<user>``, if the requester may ask for it.

    Without ``policy.user_in_url``, only the requester's own id is answered: anyone else's is 403.
    """
    check_id(user, "user", policy.limits)
    if policy.user_in_url:
        return user
    if requester.user is not None and str(user) == str(requester.user):
        return user
    raise RequestError("recommendations for a user id in the URL are off: ask for your own at "
                       "recommendations (no id), or, for trusted internal callers only, the shop sets "
                       "user_in_url=True (Django: PERSONA['USER_IN_URL'])", field="user", status=403)


def requester_id(requester: Requester):
    """The id of ``recommendations`` (no id in the URL): the requester's own; 401 when it has none."""
    if requester.user is None:
        raise RequestError(f"no current user: sign in; {requester.why}", status=401)
    return requester.user


def check_may_track(requester: Requester, policy: Policy) -> None:
    """Refuse (403) to track events for a request with no id of its own, unless ``policy.trusted_tracking``
    (a server-side caller naming the users in the events)."""
    if requester.user is None and not policy.trusted_tracking:
        raise RequestError(f"cannot track events for an anonymous request: {requester.why}", field="user",
                           status=403)


def check_stats(allowed) -> None:
    """Refuse (403) the stats endpoint unless the shop's permission check said yes."""
    if allowed is None:
        raise RequestError("stats are off: the shop turns them on with a permission check (Flask: "
                           "stats_permission=callable; Django: PERSONA['STATS_PERMISSION'])", status=403)
    if not allowed:
        raise RequestError("you may not read the stats", status=403)


# ----------------------------------------------------------------------------------- errors, public text
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>)]*")
_PATH = re.compile(r"(?<![\w.:/-])(?:~|\.{1,2})?(?:/[\w.@+-]+){2,}/?|\b[A-Za-z]:\\[^\s'\"]*")
_LOCAL = re.compile(r"\b[\w.-]+\.(?:db|sqlite3?|persona|py|npy|npz|onnx|json)\b")


def public_text(text: str, limit: int = 500) -> str:
    """``text`` fit for a client: URLs, file paths and file names replaced, at most ``limit`` characters.

    >>> public_text("no model at /srv/shop/var/model.persona (postgresql://u:pw@db/x)")
    'no model at <path> (<url>)'
    """
    text = _URL.sub("<url>", str(text))
    text = _PATH.sub("<path>", text)
    text = _LOCAL.sub("<file>", text)
    return text if len(text) <= limit else text[:limit] + "..."


def error_json(exc: BaseException) -> tuple[dict, int]:
    """The JSON body and HTTP status for an error raised while answering a request.

    :class:`RequestError` keeps its status; persona's own input errors (``DataError``,
    ``ParameterError``: a bad filter, a bad event) are the client's, 400; a failing store, or a
    model that cannot be loaded, is 503 with a fixed message: the exception's text (which can hold
    a database URL or a file path) goes to the ``persona.contrib`` log, never to the client.
    Anything else is not handled here (see :func:`internal_error_json`).
    """
    from ..errors import ArtifactError, StoreError

    if isinstance(exc, RequestError):
        if exc.status >= 500 or exc.detail:
            log.warning("persona: answered %d: %s%s", exc.status, exc.message,
                        f" ({exc.detail})" if exc.detail else "")
        return exc.to_json(), exc.status
    if isinstance(exc, StoreError):
        log.error("persona: the event store failed: %s", exc)
        return {"error": "the event store is unavailable; try again later"}, 503
    if isinstance(exc, ArtifactError):
        log.error("persona: the model could not be loaded: %s", exc)
        return {"error": "the recommender is unavailable; try again later"}, 503
    if isinstance(exc, PersonaError):
        return {"error": public_text(str(exc))}, 400
    raise TypeError(f"not a persona error: {type(exc).__name__}")


def internal_error_json(exc: BaseException) -> tuple[dict, int]:
    """The answer to an error no one expected: a JSON 500 saying nothing; the traceback goes to the log."""
    log.error("persona: unexpected error answering a request", exc_info=exc)
    return {"error": "internal error; the shop's log has the details"}, 500


# ----------------------------------------------------------------------------------- ids and values
def coerce_id(value, ids: np.ndarray | None = None):
    """``value`` (text from a URL) as the model knows ids: an int when its ids are integers."""
    if isinstance(value, str) and ids is not None and np.asarray(ids).dtype.kind in "iu" \
            and _INT.fullmatch(value.strip()):
        return int(value)
    return value


def model_ids(service, which: str):
    """The external ids (``which``: ``"user"`` or ``"item"``) of the model ``service`` serves now."""
    try:
        return getattr(service.model, f"{which}_map_").ids
    except AttributeError:
        return None


def _values(args: Mapping, name: str) -> list[str]:
    v = args.get(name)
    if v is None:
        return []
    return [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]


def _one(args: Mapping, name: str) -> str | None:
    vals = _values(args, name)
    if len(vals) > 1:
        raise RequestError(f"{name} was given {len(vals)} times; give it once", field=name)
    return vals[0] if vals else None


def _id_list(args: Mapping, name: str) -> list[str] | None:
    vals = _values(args, name)
    if not vals:
        return None
    return [part.strip() for v in vals for part in v.split(",") if part.strip()]


def parse_bool(text: str | None, name: str) -> bool | None:
    """``"1"/"true"/"yes"/"on"`` -> True, ``"0"/"false"/"no"/"off"`` -> False, None -> None."""
    if text is None:
        return None
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise RequestError(f"{name} expected true or false (1/0, yes/no), got {text!r}", field=name)


def _number(text: str, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise RequestError(f"{name} expected a number, got {text!r}", field=name) from None
    if not math.isfinite(v):
        raise RequestError(f"{name} expected a finite number, got {text!r}", field=name)
    return v


def parse_n(text: str | None, *, default: int = 10, max_n: int = 100) -> int:
    if text is None or text == "":
        return default
    if not re.fullmatch(r"\s*[0-9]+\s*", text):
        raise RequestError(f"n expected a whole number from 1 to {max_n}, got {text!r}", field="n")
    n = int(text)
    if not 1 <= n <= max_n:
        raise RequestError(f"n expected a whole number from 1 to {max_n}, got {n}", field="n")
    return n


# ----------------------------------------------------------------------------------- recommendations
@dataclass
class RecommendationQuery:
    """``n`` and the service ``context`` a request asked for."""

    n: int
    context: dict = field(default_factory=dict)


def recommendation_query(args: Mapping, *, service=None, default_n: int = 10, max_n: int = 100,
                         client_options: Iterable[str] = (), limits=None) -> RecommendationQuery:
    """Parse query parameters (a mapping of name -> value or list of values) into ``n`` and a context.

    ========================  =====================================================================
    parameter                 meaning
    ========================  =====================================================================
    ``n``                     how many items (1 .. ``max_n``; default ``default_n``)
    ``exclude``               item ids to leave out (comma-separated and/or repeated), e.g. the cart
    ``items``                 an allow-list of item ids
    ``history``               the session's item ids, time-ordered: used for a user the model
                              does not know
    ``in_stock``              true: leave out what ``service.set_stock`` marked unavailable
    ``filter_seen``           false: allow items the user already interacted with
    ``segment``               the user's segment, for segment-popularity fallbacks
    ``placement``             where the list is shown (``home``, ``pdp``): logged with the
                              impression, and the key of the service's experiments
    ``min_<col>/max_<col>``   a numeric range on a catalogue column: ``min_price=10&max_price=50``
    any other ``<col>``       catalogue equality; repeated for "any of": ``category=A&category=B``
    ========================  =====================================================================

    Catalogue filters need the service's ``catalog``; an unknown column is refused (400) by the
    service. With ``service``, ids are converted to ints when the model's ids are integers.

    ``filter_seen`` and ``items`` reveal a user's history (:data:`CLIENT_OPTIONS`): they are
    refused (403) unless named in ``client_options``. ``limits`` (:class:`Limits`) bounds the number
    of parameters, of ids and the length of every value (400 beyond).
    """
    limits = Limits.of(limits)
    item_ids = model_ids(service, "item") if service is not None else None
    _check_query_size(args, limits)
    for name in sorted(CLIENT_OPTIONS - set(client_options)):
        if _values(args, name):
            raise RequestError(f"{name} is not accepted from clients: it would reveal what the user has "
                               f"seen; a shop that trusts its callers allows it with client_options="
                               f"[{name!r}] (Django: PERSONA['CLIENT_OPTIONS'])", field=name, status=403)
    n = parse_n(_one(args, "n"), default=default_n, max_n=max_n)
    ctx: dict[str, Any] = {}
    n_ids = 0
    for name in ("exclude", "items", "history"):
        ids = _id_list(args, name)
        if ids is not None:
            n_ids += len(ids)
            if n_ids > limits.max_query_ids:
                raise RequestError(f"{name}: more than {limits.max_query_ids} ids in exclude, items and history "
                                   f"together; send fewer", field=name)
            ctx[name] = [coerce_id(check_id(i, name, limits), item_ids) for i in ids]
    for name in ("in_stock", "filter_seen"):
        b = parse_bool(_one(args, name), name)
        if b is not None:
            ctx[name] = b
    segment = _one(args, "segment")
    if segment is not None:
        ctx["segment"] = segment
    placement = _one(args, "placement")
    if placement is not None:
        ctx["placement"] = check_placement(placement)
    where: dict[str, Any] = {}
    ranges: dict[str, list] = {}
    for name in args:
        if name in _RESERVED:
            continue
        vals = _values(args, name)
        if not vals:
            continue
        for prefix, side in (("min_", 0), ("max_", 1)):
            if name.startswith(prefix) and len(name) > len(prefix):
                if len(vals) > 1:
                    raise RequestError(f"{name} was given {len(vals)} times; give it once", field=name)
                ranges.setdefault(name[len(prefix):], [None, None])[side] = _number(vals[0], name)
                break
        else:
            where[name] = vals[0] if len(vals) == 1 else vals
    for col, (low, high) in ranges.items():
        if col in where:
            raise RequestError(f"{col} has both an exact value and a range; give one", field=col)
        if low is not None and high is not None and low > high:
            raise RequestError(f"min_{col} ({low:g}) is above max_{col} ({high:g})", field=f"min_{col}")
        where[col] = (low, high)
    if where:
        ctx["where"] = where
    return RecommendationQuery(n, ctx)


def _check_query_size(args: Mapping, limits: Limits) -> None:
    if len(args) > limits.max_query_params:
        raise RequestError(f"{len(args)} query parameters; send at most {limits.max_query_params}")
    for name in args:
        if len(str(name)) > limits.max_query_text or _BAD_CHARS.search(str(name)):
            raise RequestError(f"a query parameter name is {len(str(name))} characters long or holds control "
                               f"characters; use the names in the documentation", field=str(name)[:64])
        if name in ("exclude", "items", "history"):
            continue
        for v in _values(args, name):
            if len(v) > limits.max_query_text:
                raise RequestError(f"{name} is {len(v)} characters long; at most {limits.max_query_text}",
                                   field=name)


def context_from_options(options: Mapping) -> dict:
    """A service ``context`` from keyword options, as template tags and helpers take them.

    ``history``, ``exclude``, ``items``: an id, a list of ids or comma-separated text;
    ``in_stock``, ``filter_seen``: bools; ``segment``; ``min_<col>`` / ``max_<col>``: a numeric
    range; any other name: a catalogue condition (a value, a list for "any of", a ``(low, high)``
    tuple or a callable), as ``context["where"]`` takes it.

    >>> context_from_options({"exclude": "i1,i2", "category": "Skincare", "max_price": 30})
    {'exclude': ['i1', 'i2'], 'where': {'category': 'Skincare', 'price': (None, 30.0)}}
    """
    ctx: dict[str, Any] = {}
    where: dict[str, Any] = {}
    ranges: dict[str, list] = {}
    for name, v in options.items():
        if v is None:
            continue
        if name in ("history", "exclude", "items"):
            if isinstance(v, str):
                v = [p.strip() for p in v.split(",") if p.strip()]
            elif isinstance(v, (int, np.integer)):
                v = [v]
            ctx[name] = list(v)
        elif name in ("in_stock", "filter_seen"):
            ctx[name] = parse_bool(v, name) if isinstance(v, str) else bool(v)
        elif name == "segment":
            ctx[name] = v
        elif name == "placement":
            ctx[name] = check_placement(v)
        elif name.startswith(("min_", "max_")) and len(name) > 4:
            num = _number(str(v), name)
            ranges.setdefault(name[4:], [None, None])[name.startswith("max_")] = num
        else:
            where[name] = v
    for col, (low, high) in ranges.items():
        if col in where:
            raise RequestError(f"{col} has both an exact value and a range; give one", field=col)
        where[col] = (low, high)
    if where:
        ctx["where"] = where
    return ctx


def _plain(x):
    return x.item() if isinstance(x, np.generic) else x


def recommendations_json(recs, **extra) -> dict:
    """A :class:`~persona.serving.Recommendations` as a JSON-able dict (``extra`` keys first).

    ``request_id`` is the impression's id: a page that shows the items sends it back with a click
    (``POST events`` with ``properties: {"request_id": ...}``, or the ``persona_rid`` query
    parameter of a product link) so the click is attributed to what was shown.
    """
    items, scores = recs[0], recs[1]
    teams = getattr(recs, "teams", None)
    return {
        **{k: _plain(v) for k, v in extra.items()},
        "items": np.asarray(items).tolist(),
        "scores": [round(float(s), 6) for s in np.asarray(scores, dtype=np.float64)],
        "source": getattr(recs, "source", None),
        "reason": getattr(recs, "reason", None),
        "cached": bool(getattr(recs, "cached", False)),
        "model_version": getattr(recs, "model_version", None),
        "request_id": getattr(recs, "request_id", None),
        "placement": getattr(recs, "placement", None),
        "variant": getattr(recs, "variant", None),
        **({"teams": list(teams)} if teams is not None else {}),
    }


# ----------------------------------------------------------------------------------- impressions and clicks
def check_placement(value, field: str = "placement") -> str:
    """A placement name from a request (``home``, ``pdp``: 1-64 letters, digits, ``_ . : -``), else 400."""
    if not isinstance(value, str) or not _PLACEMENT.fullmatch(value):
        shown = f"{len(value)} characters" if isinstance(value, str) else _json_type(value)
        raise RequestError(f"{field} expected a name of 1 to 64 letters, digits and _ . : - such as home or pdp, "
                           f"got {shown}", field=field)
    return value


def check_request_id(value, field: str = "properties.request_id") -> str:
    """A request id sent back by a page (``properties.request_id`` of an event), else 400.

    The service's ids are 32 hex digits; a shop logging its own impressions may use up to 128
    letters, digits and ``_ . : -``. Anything else -- a number, an object, a megabyte, text
    outside ASCII -- is refused, never stored and never an error deeper down.
    """
    if not isinstance(value, str):
        raise RequestError(f"{field} expected the request_id string of the recommendations shown, got "
                           f"{_json_type(value)}", field=field)
    if not _REQUEST_ID.fullmatch(value):
        raise RequestError(f"{field} expected the request_id of the recommendations shown (at most 128 letters, "
                           f"digits and _ . : -), got {len(value)} characters that are not one", field=field)
    return value


def parse_request_id(value) -> str | None:
    """The request id of a link's ``persona_rid`` parameter, or None when it is absent or not one
    (a stale, mangled or hostile link is ignored: the page still renders)."""
    if isinstance(value, (list, tuple)):
        value = value[0] if len(value) == 1 else None
    try:
        return None if value is None else check_request_id(value, REQUEST_ID_PARAM)
    except RequestError:
        log.debug("persona: ignored a %s parameter that is not a request id", REQUEST_ID_PARAM)
        return None


def with_request_id(url, request_id, param: str = REQUEST_ID_PARAM):
    """``url`` with ``?persona_rid=<request_id>`` added (kept as is when either is missing).

    >>> with_request_id("/product/i7?ref=home", "5f2a")
    '/product/i7?ref=home&persona_rid=5f2a'
    """
    if not url or not request_id:
        return url
    from urllib.parse import quote

    url = str(url)
    base, hash_sign, fragment = url.partition("#")
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}{param}={quote(str(request_id), safe='')}{hash_sign}{fragment}"


def click_event(item, request_id, *, event: str = "click") -> dict | None:
    """``track`` keyword arguments for a click on ``item`` in the list of ``request_id``, or None
    when ``request_id`` is not one. The key ``click:<request id>:<item>`` makes a reloaded page or
    a retried beacon one click; it is the clicking user's own (``client_event_id``: the store
    scopes it to them), so whoever opens a shared link first cannot take another user's click."""
    rid = parse_request_id(request_id)
    if rid is None:
        return None
    return {"item": item, "event": event, "properties": {"request_id": rid},
            "client_event_id": f"{event}:{rid}:{item}"[:255]}


# ----------------------------------------------------------------------------------- events
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check_id(value, name: str, limits=None):
    """``value`` if it is a usable id (a string or a 64-bit integer), else :class:`RequestError` (400).

    A string id is non-empty, at most ``limits.max_id_length`` characters and free of control
    characters (a NUL stops PostgreSQL; a newline forges log lines).
    """
    limits = Limits.of(limits)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RequestError(f"{name} expected a string or integer id, got {_json_type(value)}", field=name)
    if isinstance(value, int):
        if not -2**63 <= value < 2**63:
            raise RequestError(f"{name} expected an integer id within 64 bits, got {len(str(value))} digits",
                               field=name)
        return value
    if not value.strip():
        raise RequestError(f"{name} is empty; give the shop's {name.rpartition('.')[2]} id", field=name)
    if len(value) > limits.max_id_length:
        raise RequestError(f"{name} is {len(value)} characters long; ids may have at most {limits.max_id_length}",
                           field=name)
    if _BAD_CHARS.search(value):
        raise RequestError(f"{name} holds control characters; ids are printable text", field=name)
    return value


_check_id = check_id


def _json_type(v) -> str:
    return {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(v), type(v).__name__)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_json_body(raw: bytes, limits=None):
    """A posted body (bytes) as JSON, within ``limits``: 413 beyond ``max_batch_bytes``, or beyond
    ``max_event_bytes`` for a body that is not a batch; 400 for text that is not JSON, NaN or
    Infinity, or nesting too deep to parse."""
    limits = Limits.of(limits)
    if len(raw) > limits.max_batch_bytes:
        raise RequestError(f"the body is over {limits.max_batch_bytes} bytes; send smaller batches", status=413)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("the body is not UTF-8 text; send JSON encoded as UTF-8") from None
    if not text.strip():
        raise RequestError("expected a JSON body (Content-Type: application/json) with item and event")
    try:
        body = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise RequestError("the body is nested too deeply; events are flat objects") from None
    except ValueError as e:
        where = f" at line {e.lineno} column {e.colno}" if hasattr(e, "lineno") else ""
        raise RequestError(f"the body is not valid JSON{where}; send an object with item and event") from None
    batch = isinstance(body, list) or (isinstance(body, Mapping) and "events" in body)
    if not batch and len(raw) > limits.max_event_bytes:
        raise RequestError(f"the event is over {limits.max_event_bytes} bytes; keep properties small", status=413)
    return body


def check_content_length(length, limits=None) -> None:
    """Refuse (413) a declared body length over ``limits.max_batch_bytes`` before reading it."""
    limits = Limits.of(limits)
    if length is not None and int(length) > limits.max_batch_bytes:
        raise RequestError(f"the body is {int(length)} bytes; send at most {limits.max_batch_bytes} "
                           f"(smaller batches)", status=413)


def _check_properties(props, name: str, limits: Limits) -> dict:
    if not isinstance(props, Mapping):
        raise RequestError(f"{name} expected an object, got {_json_type(props)}", field=name)
    stack = [(props, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (Mapping, list, tuple)):
            if depth > limits.max_properties_depth:
                raise RequestError(f"{name} are nested more than {limits.max_properties_depth} levels deep; "
                                   f"keep them flat", field=name)
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, Mapping) else v))
    try:
        text = json.dumps(props, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError):
        raise RequestError(f"{name} must be plain JSON (strings, finite numbers, booleans, null, arrays, "
                           f"objects)", field=name) from None
    if len(text.encode("utf-8")) > limits.max_properties_bytes:
        raise RequestError(f"{name} are {len(text.encode('utf-8'))} bytes as JSON; at most "
                           f"{limits.max_properties_bytes}", field=name)
    return dict(props)


def _check_timestamp(ts, name: str):
    if isinstance(ts, bool) or not isinstance(ts, (str, int, float)):
        raise RequestError(f"{name} expected ISO-8601 text or epoch seconds, got {_json_type(ts)}", field=name)
    if isinstance(ts, (int, float)):
        if not (math.isfinite(ts) and 0 <= ts <= _MAX_EPOCH):
            raise RequestError(f"{name} expected epoch seconds between 1970 and 2200, got {ts!r:.40}", field=name)
        return ts
    if len(ts) > 64 or _BAD_CHARS.search(ts):
        raise RequestError(f"{name} expected ISO-8601 text such as 2024-05-01T12:00:00Z", field=name)
    from datetime import datetime

    try:
        year = datetime.fromisoformat(ts.strip().replace("Z", "+00:00")).year
    except ValueError:
        return ts  # another format the store may know; it refuses what it cannot read
    if not 1970 <= year < 2200:
        raise RequestError(f"{name} expected a time between 1970 and 2200, got year {year}", field=name)
    return ts


def parse_events(body, *, default_user=None, trusted: bool = False, allowed_events: Iterable[str] | None = None,
                 max_batch: int | None = None, limits=None, event_names: EventNames | None = None) -> list[dict]:
    """Validate a posted event, a list of events or ``{"events": [...]}``; returns ``track`` kwargs.

    Each event is an object with ``item`` and ``event`` (required), ``user`` (the requester's id
    when left out), and optional ``value`` (a number), ``timestamp`` (ISO-8601 text or epoch
    seconds, 1970-2200), ``properties`` (a small, shallow object) and ``event_id`` (an idempotency
    key). Every event is checked before any is tracked, so a bad batch records nothing.

    ``default_user`` is the requester: the signed-in user, or the anonymous visitor id the
    integration issued. An event naming any other user is refused (403) unless ``trusted`` (a
    server-side caller the shop vouches for, which may name any user). ``event_names``
    (:class:`EventNames`) refuses unknown event names when the shop asked for that.

    A posted ``event_id`` is the client's own key: for a caller that is not ``trusted`` it comes
    back as ``client_event_id``, which the store keeps in the user's own namespace
    (:meth:`persona.store.EventStore.track`), so a client that knows another user's key (an order
    line, a click id) cannot post it first and make the genuine event a duplicate. A ``trusted``
    caller's ``event_id`` is kept exactly (a webhook's delivery id, an order line).

    >>> parse_events({"item": "i7", "event": "purchase", "event_id": "order-1001-line-1"}, default_user="ann")
    [{'user': 'ann', 'item': 'i7', 'event': 'purchase', 'client_event_id': 'order-1001-line-1'}]
    """
    limits = Limits.of(limits)
    batch, many = _event_batch(body, limits.max_batch if max_batch is None else max_batch)
    allowed = None if allowed_events is None else set(allowed_events)
    out = []
    for i, ev in enumerate(batch):
        where = f"events[{i}]." if many else ""
        _check_event_shape(ev, where, limits, many)
        kw: dict[str, Any] = {"user": _event_user(ev.get("user"), where, default_user, trusted, limits)}
        if ev.get("item") is None:
            raise RequestError(f"{where}item is required", field=f"{where}item")
        kw["item"] = check_id(ev["item"], f"{where}item", limits)
        kw["event"] = _event_name(ev.get("event"), where, limits, allowed, event_names)
        kw.update(_optional_event_fields(ev, where, limits))
        if not trusted and "event_id" in kw:  # the client's key, in the user's own namespace
            kw["client_event_id"] = kw.pop("event_id")
        out.append(kw)
    return out


def _event_batch(body, max_batch: int) -> tuple[list, bool]:
    """The events of a posted body (one object, a list, or ``{"events": [...]}``), and whether it was a batch."""
    if isinstance(body, Mapping) and "events" in body:
        if set(body) != {"events"}:
            raise RequestError("give either one event object or {\"events\": [...]}, not both", field="events")
        body = body["events"]
        if not isinstance(body, list):
            raise RequestError(f"events expected an array of event objects, got {_json_type(body)}", field="events")
    many = isinstance(body, list)
    batch = body if many else [body]
    if not batch:
        raise RequestError("no events given", field="events")
    if len(batch) > max_batch:
        raise RequestError(f"{len(batch)} events in one request; send at most {max_batch}", field="events")
    return batch, many


def _check_event_shape(ev, where: str, limits: Limits, many: bool) -> None:
    """An object with only :data:`EVENT_FIELDS`; in a batch, each event within ``max_event_bytes``."""
    if not isinstance(ev, Mapping):
        raise RequestError(f"{where or 'the body '}expected a JSON object with item and event, got "
                           f"{_json_type(ev)}", field=where.rstrip(".") or None)
    unknown = sorted(map(str, set(ev) - set(EVENT_FIELDS)))
    if unknown:
        raise RequestError(f"{where}unknown field(s) {[u[:64] for u in unknown[:5]]}; allowed: "
                           f"{list(EVENT_FIELDS)}", field=f"{where}{unknown[0][:64]}")
    if many:
        try:
            size = len(json.dumps(ev, allow_nan=False).encode("utf-8"))
        except (ValueError, TypeError):
            size = 0  # not plain JSON: the field checks say which field
        if size > limits.max_event_bytes:
            raise RequestError(f"{where.rstrip('.')} is over {limits.max_event_bytes} bytes; keep properties "
                               f"small", field=where.rstrip("."), status=413)


def _event_user(user, where: str, default_user, trusted: bool, limits: Limits):
    """Whom an event is for: the requester when left out; anyone else only for a ``trusted`` caller (else 403)."""
    if user is None:
        if default_user is None:
            raise RequestError(f"{where}user is required", field=f"{where}user")
        return default_user
    check_id(user, f"{where}user", limits)
    if not trusted and (default_user is None or str(user) != str(default_user)):
        raise RequestError(f"{where}user: events can only be tracked for the signed-in user (or this "
                           f"browser's visitor id): leave user out; a trusted server-side caller that names "
                           f"users needs trusted_tracking=True (Django: PERSONA['TRUST_EVENT_USER'])",
                           field=f"{where}user", status=403)
    return user


def _event_name(event, where: str, limits: Limits, allowed: set | None, event_names: EventNames | None) -> str:
    if not isinstance(event, str) or not event.strip():
        raise RequestError(f"{where}event expected a non-empty string such as \"view\" or \"cart\", got "
                           f"{_json_type(event)}", field=f"{where}event")
    if len(event) > limits.max_event_length or not _EVENT_NAME.fullmatch(event):
        raise RequestError(f"{where}event expected a name of at most {limits.max_event_length} letters, digits "
                           f"and _ . : - such as \"view\" or \"add_to_cart\"", field=f"{where}event")
    if allowed is not None and event not in allowed:
        raise RequestError(f"{where}event {event!r} is not accepted here; accepted: {sorted(allowed)}",
                           field=f"{where}event")
    if event_names is not None:
        event_names.check(event, where)
    return event


def _optional_event_fields(ev: Mapping, where: str, limits: Limits) -> dict:
    """``value``, ``timestamp``, ``properties`` and ``event_id``, checked, for those the event gives."""
    kw: dict[str, Any] = {}
    value = ev.get("value")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or abs(value) > 1e15:
            raise RequestError(f"{where}value expected a finite number, got {_json_type(value)}",
                               field=f"{where}value")
        kw["value"] = float(value)
    ts = ev.get("timestamp")
    if ts is not None:
        kw["timestamp"] = _check_timestamp(ts, f"{where}timestamp")
    props = ev.get("properties")
    if props is not None:
        kw["properties"] = _check_properties(props, f"{where}properties", limits)
        if kw["properties"].get("request_id") is not None:  # a click on a recommendation: attributed by it
            check_request_id(kw["properties"]["request_id"], f"{where}properties.request_id")
    eid = ev.get("event_id")
    if eid is not None:
        if not isinstance(eid, str) or not eid:
            raise RequestError(f"{where}event_id expected a non-empty string, got {_json_type(eid)}",
                               field=f"{where}event_id")
        kw["event_id"] = check_id(eid, f"{where}event_id", limits)
    return kw


def track_events(events: list[dict], *, store, service=None) -> list:
    """Record validated events (from :func:`parse_events`) and drop their users' cached answers.

    The store checks each event again (a bad timestamp, properties that are not JSON) before
    queueing it: a ``DataError`` there names the event's position in the batch. The events of a
    user who withdrew consent to personalisation (:func:`tracking_allowed`) are not recorded: their
    id is None, as for a forgotten user.
    """
    if store is None:
        raise RequestError("event tracking is not configured: no event store was given", status=503)
    from ..errors import DataError

    ids = []
    allowed: dict = {}
    for i, kw in enumerate(events):
        args = dict(kw)
        user, item, event = args.pop("user"), args.pop("item"), args.pop("event")
        if user not in allowed:
            allowed[user] = tracking_allowed(store, user)
        if not allowed[user]:
            ids.append(None)
            continue
        where = f"events[{i}]: " if len(events) > 1 else ""
        try:
            ids.append(store.track(user, item, event, **args))
        except DataError as e:
            raise RequestError(f"{where}{e}") from None
        except (ValueError, TypeError, OverflowError) as e:  # the store's parsing of a value it should have refused
            raise RequestError(f"{where}the event store refused this event; check its timestamp and properties",
                               detail=f"{type(e).__name__}: {e}") from None
    if service is not None:
        user_ids = model_ids(service, "user")
        for user in dict.fromkeys(kw["user"] for kw in events):
            service.invalidate(user)
            coerced = coerce_id(user, user_ids) if isinstance(user, str) else user
            if coerced is not user:
                service.invalidate(coerced)  # the id as requests for recommendations give it
    return ids


def tracking_allowed(store, user) -> bool:
    """Whether on-site events of ``user`` may be recorded: not once they withdrew consent to
    ``"personalisation"`` in the store's consent registry (``store.has_consent``, a set lookup);
    True for a store without a registry. A registry that fails answers no (logged)."""
    check = getattr(store, "has_consent", None)
    if check is None:
        return True
    try:
        return bool(check(user, "personalisation"))
    except Exception:  # noqa: BLE001 - the request goes on without recording (the safe answer)
        log.exception("persona: could not ask the store whether %r allows personalisation", user)
        return False


def worker_json() -> dict:
    """Which process answers: every worker of a forking server counts its own requests, so a
    monitor tells them apart by ``pid`` (and sees each worker's BLAS / OpenMP thread limits)."""
    threads: dict[str, int] = {}
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            api = str(pool.get("user_api", "other"))
            threads[api] = max(threads.get(api, 0), int(pool.get("num_threads") or 0))
    except Exception:  # noqa: BLE001 -- the thread counts are a courtesy; never fail /stats for them
        pass
    return {"pid": os.getpid(), "threads": threads}


def stats_json(service=None, store=None) -> dict:
    """The service's and the store's counters, and which worker process answered, JSON-able."""
    out: dict[str, Any] = {"worker": worker_json()}
    if service is not None:
        out["service"] = service.stats()
    if store is not None:
        out["store"] = dict(store.stats())
        if out["store"].get("last_error"):  # a driver's message: it can hold the database URL or a path
            log.warning("persona: the event store's last error: %s", out["store"]["last_error"])
            out["store"]["last_error"] = public_text(out["store"]["last_error"], 200)
    return out


# ----------------------------------------------------------------------------------- wiring
def open_store(spec):
    """An :class:`~persona.store.EventStore` from a setting: a path or URL, a dict of keyword
    arguments (``{"target": "events.db", "synchronous": "normal"}``), a store, or None."""
    if spec is None:
        return None
    from ..store import EventStore

    if isinstance(spec, EventStore):
        return spec
    if isinstance(spec, (str, Path)):
        return EventStore(spec)
    if isinstance(spec, Mapping):
        return EventStore(**spec)
    raise ParameterError(f"store: expected a path, a database URL, a dict of EventStore arguments or an "
                         f"EventStore, got {type(spec).__name__}")


def build_service(model_path, *, store=None, fallback=None, catalog=None, watch: bool = False,
                  watch_interval: float = 2.0, mmap: bool = True, words: Words | None = None, **options):
    """A :class:`~persona.serving.RecommenderService` over the artifact at ``model_path``.

    With ``watch``, the service reloads the artifact whenever :func:`train_and_publish` (or any
    ``model.save``) publishes a new one there. ``options`` go to ``RecommenderService``
    (``timeout``, ``cache_size``, ``filter_seen``, ``catalog_id``). Raises :class:`RequestError`
    (503) when no model is configured or none has been published yet: its client text is fixed,
    its ``detail`` (for the log) says what to set or run in the framework's ``words``.
    """
    from ..models import load
    from ..serving import RecommenderService

    words = words or Words()
    if model_path is None:
        raise RequestError("no model is configured; the shop's log says what to set", status=503,
                           detail=f"{words.set(words.model_path)} (where {words.train} publishes the model)")
    path = Path(model_path)
    if not path.exists():
        raise RequestError("no model has been published yet; try again later", status=503,
                           detail=f"nothing at {path} ({words.model_path}): run {words.train} to publish a model there")
    if isinstance(fallback, (str, Path)):
        fallback = load(fallback, mmap=mmap)
    return RecommenderService.from_artifact(path, mmap=mmap, watch=watch_interval if watch else None,
                                            fallback=fallback, catalog=catalog, store=store, **options)


# ----------------------------------------------------------------------------------- templates
class Recommended:
    """One recommended item, as templates see it: ``id``, ``score``, ``item`` (the shop's object
    for it, or its catalogue row), ``name``, ``url``, ``link`` (the url with the answer's request id,
    for click attribution), ``position`` (from 1) and ``request_id``; any other field of the item or
    catalogue row reads as an attribute (``rec.price``, ``rec.category``)."""

    __slots__ = ("id", "score", "item", "name", "url", "request_id", "position", "team")

    def __init__(self, id, score, item=None, request_id=None, position=None, team=None):
        self.id, self.score, self.item = id, score, item
        self.request_id, self.position, self.team = request_id, position, team
        self.name = _attr(item, "name") or str(id)
        url = _attr(item, "url")
        if url is None and hasattr(item, "get_absolute_url"):
            url = item.get_absolute_url()
        self.url = url

    @property
    def link(self):
        """``url`` carrying the answer's request id (``?persona_rid=...``), so that the product page
        records the click as one on this recommendation; ``url`` when the answer was not logged."""
        return with_request_id(self.url, self.request_id)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        item = object.__getattribute__(self, "item")
        value = _attr(item, name, _MISSING)
        if value is _MISSING:
            raise AttributeError(f"{name!r}: the item has no such field")
        return value

    def __repr__(self) -> str:
        return f"Recommended({self.id!r}, score={self.score:.4g})"


_MISSING = object()


def _attr(item, name, default=None):
    if item is None:
        return default
    if isinstance(item, Mapping):
        return item.get(name, default)
    return getattr(item, name, default)


class RecommendationList(list):
    """The :class:`Recommended` entries of one answer, with its ``source``, ``reason`` and
    ``model_version``; the framework adapters make it render itself."""

    def __init__(self, entries=(), *, source=None, reason=None, model_version=None, template_name=None, title=None,
                 request_id=None, placement=None, variant=None):
        super().__init__(entries)
        self.source, self.reason, self.model_version = source, reason, model_version
        self.request_id, self.placement, self.variant = request_id, placement, variant
        self.template_name, self.title = template_name, title

    @property
    def ids(self) -> list:
        return [r.id for r in self]


def recommended_entries(recs, *, service=None, lookup=None, what: str = "items") -> list[Recommended]:
    """:class:`Recommended` entries of an answer: each item from ``lookup(ids)`` (the shop's own
    objects: a list with one per id, or a dict id -> item), else its catalogue row from the
    service (``service.item_attributes``: name, price, ...), else None."""
    ids = np.asarray(recs[0]).tolist()
    scores = [float(s) for s in recs[1]]
    items: list = [None] * len(ids)
    if lookup is not None and ids:
        found = lookup(ids)
        if isinstance(found, Mapping):
            items = [found.get(i) for i in ids]
        else:
            items = list(found)
            if len(items) != len(ids):
                raise ParameterError(f"{what} returned {len(items)} items for {len(ids)} ids; return one per id "
                                     f"(None for an unknown one) or a dict id -> item")
    if service is not None and ids and any(it is None for it in items) and hasattr(service, "item_attributes"):
        rows = service.item_attributes(ids)
        items = [it if it is not None else row for it, row in zip(items, rows)]
    rid = getattr(recs, "request_id", None)
    teams = getattr(recs, "teams", None) or [None] * len(ids)
    return [Recommended(i, s, it, rid, k + 1, t) for k, (i, s, it, t) in enumerate(zip(ids, scores, items, teams))]


def recommendation_list(ask, *, get_service, lookup=None, cls=RecommendationList, what: str = "items",
                        **list_options) -> RecommendationList:
    """``ask(service)`` as a ``cls`` of :class:`Recommended` entries, for a template.

    Before a model is published (a 503) or while the store fails, the list is empty with source
    ``"unavailable"`` and the page still renders (the reason goes to the ``persona.contrib`` log).
    """
    from ..errors import StoreError

    try:
        service = get_service()
        recs = ask(service)
    except (RequestError, StoreError) as e:
        if isinstance(e, RequestError) and e.status != 503:
            raise
        reason = e.message if isinstance(e, RequestError) else "the event store is unavailable"
        detail = getattr(e, "detail", None) if isinstance(e, RequestError) else str(e)
        log.warning("persona: no recommendations to render: %s%s", reason, f" ({detail})" if detail else "")
        return cls(source="unavailable", reason=reason, **list_options)
    return cls(recommended_entries(recs, service=service, lookup=lookup, what=what), source=recs.source,
               reason=recs.reason, model_version=recs.model_version, request_id=getattr(recs, "request_id", None),
               placement=getattr(recs, "placement", None), variant=getattr(recs, "variant", None), **list_options)


# ----------------------------------------------------------------------------------- training
@dataclass
class Published:
    """What :func:`train_and_publish` trained and where it put it.

    ``kept`` and ``dropped`` count the store's events per event name (in the ``since`` /
    ``until`` window): those read for training, and those left out, with ``why`` each was left
    out. ``report`` is the cleaning report of the interactions (duplicates, bad rows).
    """

    model: Any
    path: Path
    n_events: int
    n_users: int
    n_items: int
    seconds: float
    kept: dict = field(default_factory=dict)
    dropped: dict = field(default_factory=dict)
    why: dict = field(default_factory=dict)
    report: Any = None

    def __str__(self) -> str:
        lines = [f"published {type(self.model).__name__} trained on {self.n_events} events "
                 f"({self.n_users} users x {self.n_items} items) to {self.path} in {self.seconds:.2f} s",
                 f"kept {sum(self.kept.values())} events: {_per_name(self.kept) or 'none'}"]
        if self.dropped:
            reasons = {}
            for name in self.dropped:
                reasons.setdefault(self.why.get(name, "left out"), {})[name] = self.dropped[name]
            for why, names in reasons.items():
                lines.append(f"dropped {sum(names.values())} events: {_per_name(names)} ({why})")
        else:
            lines.append("dropped none")
        if self.report is not None and getattr(self.report, "dropped", None):
            lines.append(f"cleaning: {self.report}")
        return "\n".join(lines)


def _per_name(counts: Mapping) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _selected_types(event_types, weights, options) -> list | None:
    """The event types ``EventStore.interactions`` reads for these arguments (None: every type)."""
    from ..data.ingest import DEFAULT_WEIGHTS

    if event_types is not None:
        return [event_types] if isinstance(event_types, str) else list(event_types)
    if options.get("default_weight") is not None or options.get("weight") is not None:
        return None
    return list(dict.fromkeys([*DEFAULT_WEIGHTS, *(weights or {})]))


def _event_counts(store, since, until, selected) -> tuple[dict, dict]:
    """(kept, dropped) stored events per event name in ``[since, until)``: one ``GROUP BY`` in the store."""
    counts = store.event_counts(since, until)
    if selected is None:
        return counts, {}
    chosen = set(selected)
    kept = {n: counts[n] for n in dict.fromkeys(selected) if counts.get(n)}
    return kept, {k: v for k, v in counts.items() if k not in chosen}


def train_and_publish(store, path, *, model="itemknn", params: Mapping | None = None, since=None,
                      event_types=None, weights=None, words: Words | None = None, **options) -> Published:
    """Train on the store's events and publish the model at ``path`` atomically.

    Nothing is dropped silently: the result counts, per event name, the events kept and those
    left out (an event name with no weight, such as a shop's own ``add_to_cart``, or one outside
    ``event_types``), and its text says how to keep them (in the framework's ``words``).

    Parameters
    ----------
    store : persona.store.EventStore
        Flushed first, so every event this process tracked is included.
    path : str or Path
        Where the artifact goes. ``model.save`` writes a temporary sibling and renames it into
        place, so a web process watching ``path`` never loads a half-written model.
    model : str or Recommender
        A short name from ``persona.models.registry`` (``"itemknn"``, ``"als"``, ``"ease"``,
        ``"popular"``, ...) or an unfitted model.
    params : dict, optional
        Hyperparameters overriding the name's defaults (``{"k": 50}``).
    weights : dict, optional
        Event name -> weight, over the built-in ones (``{"add_to_cart": 4}``); a name with a weight
        is trained on.
    since, event_types, **options
        Passed to :meth:`EventStore.interactions` (incremental training, ``until``, ...).
    """
    from ..models.base import Recommender
    from ..models.registry import make_model

    t0 = time.perf_counter()
    words = words or Words()
    weights = event_weights(weights, words.event_weights)
    if isinstance(model, str):
        try:
            est = make_model(model, **dict(params or {}))
        except TypeError as e:  # a hyperparameter the model does not have
            raise ParameterError(f"model {model!r} does not take these params: {e}; "
                                 f"got {sorted(params or {})}") from None
    elif isinstance(model, Recommender):
        if params:
            raise ParameterError("params is for a model given by name; set them on the model object instead")
        est = model
    else:
        raise ParameterError(f"model expected a model name or a persona Recommender, got {type(model).__name__}")
    store.flush()
    selected = _selected_types(event_types, weights, options)
    kept, dropped = _event_counts(store, since, options.get("until"), selected)
    inter = store.interactions(since=since, event_types=event_types, weights=weights, **options)
    est.fit(inter)
    out = est.save(path)
    if event_types is not None:
        why = dict.fromkeys(dropped, "not in event_types")
    else:
        hint = ",".join(f"{name}=W" for name in sorted(dropped))
        why = dict.fromkeys(dropped, f"no weight: give them one in {words.event_weights}{words.where} or with "
                                     f"{words.train} --weights {hint}")
    if dropped:  # the caller prints the result; the log keeps it for scripts that do not
        log.info("persona: training left out %s", _per_name(dropped))
    return Published(est, Path(out), len(inter), inter.n_users, inter.n_items, time.perf_counter() - t0,
                     kept=kept, dropped=dropped, why=why, report=getattr(inter, "report", None))
