"""What the Flask and Django integrations share, framework-free.

A web adapter does four things with persona, and each is one function here, so the Flask
blueprint, the Django views and a shop on any other framework behave the same:

* :func:`recommendation_query` turns query parameters into ``n`` and a service ``context``
  (``?n=5&category=Skincare&max_price=30&exclude=i1,i2&in_stock=1``);
* :func:`recommendations_json` turns a :class:`~persona.serving.Recommendations` into JSON;
* :func:`parse_events` validates a posted event (or a batch) and :func:`track_events` records it
  in the store and drops the user's cached answers;
* :func:`train_and_publish` trains a model on the store's events and publishes the artifact
  atomically, for a web process's watcher (:meth:`RecommenderService.watch`) to pick up.

Bad input raises :class:`RequestError`, which carries the HTTP status (400, 403, 503) and the name
of the offending field; the adapters answer it as ``{"error": ..., "field": ...}``.

>>> q = recommendation_query({"n": ["3"], "category": ["Skincare"], "max_price": ["30"], "exclude": ["i1,i2"]})
>>> q.n, q.context["where"], q.context["exclude"]
(3, {'category': 'Skincare', 'price': (None, 30.0)}, ['i1', 'i2'])
>>> parse_events({"user": "ann", "item": "i7", "event": "cart", "value": 12.5})
[{'user': 'ann', 'item': 'i7', 'event': 'cart', 'value': 12.5}]
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import ParameterError, PersonaError

__all__ = [
    "RequestError", "error_json", "RecommendationQuery", "Published", "recommendation_query", "recommendations_json",
    "context_from_options", "parse_events", "track_events", "stats_json", "open_store", "build_service", "train_and_publish",
    "coerce_id", "model_ids", "EVENT_FIELDS",
]

#: the fields a posted event may have; ``user``, ``item`` and ``event`` are required
EVENT_FIELDS = ("user", "item", "event", "value", "timestamp", "properties", "event_id")
_RESERVED = {"n", "exclude", "items", "history", "in_stock", "filter_seen", "segment"}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
_INT = re.compile(r"-?[0-9]{1,18}")


class RequestError(PersonaError, ValueError):
    """A request the integration refuses: ``status`` is the HTTP status, ``field`` what was wrong."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.field, self.status = message, field, status

    def to_json(self) -> dict:
        out = {"error": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


def error_json(exc: BaseException) -> tuple[dict, int]:
    """The JSON body and HTTP status for an error raised while answering a request.

    :class:`RequestError` keeps its status; persona's own input errors (``DataError``,
    ``ParameterError``: a bad filter, a bad event) are the client's, 400; a failing store is 503.
    Anything else is not handled here (the framework answers 500 and logs it).
    """
    from ..errors import StoreError

    if isinstance(exc, RequestError):
        return exc.to_json(), exc.status
    if isinstance(exc, StoreError):
        return {"error": f"the event store is unavailable: {exc}"}, 503
    if isinstance(exc, PersonaError):
        return {"error": str(exc)}, 400
    raise TypeError(f"not a persona error: {type(exc).__name__}")


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


def recommendation_query(args: Mapping, *, service=None, default_n: int = 10,
                         max_n: int = 100) -> RecommendationQuery:
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
    ``min_<col>/max_<col>``   a numeric range on a catalogue column: ``min_price=10&max_price=50``
    any other ``<col>``       catalogue equality; repeated for "any of": ``category=A&category=B``
    ========================  =====================================================================

    Catalogue filters need the service's ``catalog``; an unknown column is refused (400) by the
    service. With ``service``, ids are converted to ints when the model's ids are integers.
    """
    item_ids = model_ids(service, "item") if service is not None else None
    n = parse_n(_one(args, "n"), default=default_n, max_n=max_n)
    ctx: dict[str, Any] = {}
    for name in ("exclude", "items", "history"):
        ids = _id_list(args, name)
        if ids is not None:
            ctx[name] = [coerce_id(i, item_ids) for i in ids]
    for name in ("in_stock", "filter_seen"):
        b = parse_bool(_one(args, name), name)
        if b is not None:
            ctx[name] = b
    segment = _one(args, "segment")
    if segment is not None:
        ctx["segment"] = segment
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
    """A :class:`~persona.serving.Recommendations` as a JSON-able dict (``extra`` keys first)."""
    items, scores = recs[0], recs[1]
    return {
        **{k: _plain(v) for k, v in extra.items()},
        "items": np.asarray(items).tolist(),
        "scores": [round(float(s), 6) for s in np.asarray(scores, dtype=np.float64)],
        "source": getattr(recs, "source", None),
        "reason": getattr(recs, "reason", None),
        "cached": bool(getattr(recs, "cached", False)),
        "model_version": getattr(recs, "model_version", None),
    }


# ----------------------------------------------------------------------------------- events
def _check_id(value, name: str):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RequestError(f"{name} expected a string or integer id, got {_json_type(value)}", field=name)
    if isinstance(value, str) and not value.strip():
        raise RequestError(f"{name} is empty; give the shop's {name} id", field=name)
    return value


def _json_type(v) -> str:
    return {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(v), type(v).__name__)


def parse_events(body, *, default_user=None, allowed_events: Iterable[str] | None = None,
                 max_batch: int = 1000) -> list[dict]:
    """Validate a posted event, a list of events or ``{"events": [...]}``; returns ``track`` kwargs.

    Each event is an object with ``user``, ``item``, ``event`` (required; ``user`` may be left out
    when ``default_user`` -- the signed-in user -- is given), and optional ``value`` (a number),
    ``timestamp`` (ISO-8601 text or epoch seconds), ``properties`` (an object) and ``event_id`` (an
    idempotency key). Every event is checked before any is tracked, so a bad batch records nothing.

    With ``default_user``, an event naming another user is refused with status 403.
    """
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
    allowed = None if allowed_events is None else set(allowed_events)
    out = []
    for i, ev in enumerate(batch):
        where = f"events[{i}]." if many else ""
        if not isinstance(ev, Mapping):
            raise RequestError(f"{where or 'the body '}expected a JSON object with user, item and event, got "
                               f"{_json_type(ev)}", field=where.rstrip(".") or None)
        unknown = sorted(set(ev) - set(EVENT_FIELDS))
        if unknown:
            raise RequestError(f"{where}unknown field(s) {unknown}; allowed: {list(EVENT_FIELDS)}",
                               field=f"{where}{unknown[0]}")
        kw: dict[str, Any] = {}
        user = ev.get("user")
        if user is None:
            if default_user is None:
                raise RequestError(f"{where}user is required", field=f"{where}user")
            user = default_user
        else:
            _check_id(user, f"{where}user")
            if default_user is not None and str(user) != str(default_user):
                raise RequestError(f"{where}user: events can only be tracked for the signed-in user",
                                   field=f"{where}user", status=403)
        kw["user"] = user
        if ev.get("item") is None:
            raise RequestError(f"{where}item is required", field=f"{where}item")
        kw["item"] = _check_id(ev["item"], f"{where}item")
        event = ev.get("event")
        if not isinstance(event, str) or not event.strip():
            raise RequestError(f"{where}event expected a non-empty string such as \"view\" or \"cart\", got "
                               f"{_json_type(event)}", field=f"{where}event")
        if allowed is not None and event not in allowed:
            raise RequestError(f"{where}event {event!r} is not accepted here; accepted: {sorted(allowed)}",
                               field=f"{where}event")
        kw["event"] = event
        value = ev.get("value")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RequestError(f"{where}value expected a finite number, got {_json_type(value)}",
                                   field=f"{where}value")
            kw["value"] = float(value)
        ts = ev.get("timestamp")
        if ts is not None:
            if isinstance(ts, bool) or not isinstance(ts, (str, int, float)):
                raise RequestError(f"{where}timestamp expected ISO-8601 text or epoch seconds, got {_json_type(ts)}",
                                   field=f"{where}timestamp")
            kw["timestamp"] = ts
        props = ev.get("properties")
        if props is not None:
            if not isinstance(props, Mapping):
                raise RequestError(f"{where}properties expected an object, got {_json_type(props)}",
                                   field=f"{where}properties")
            kw["properties"] = dict(props)
        eid = ev.get("event_id")
        if eid is not None:
            if not isinstance(eid, str) or not eid:
                raise RequestError(f"{where}event_id expected a non-empty string, got {_json_type(eid)}",
                                   field=f"{where}event_id")
            kw["event_id"] = eid
        out.append(kw)
    return out


def track_events(events: list[dict], *, store, service=None) -> list:
    """Record validated events (from :func:`parse_events`) and drop their users' cached answers.

    The store checks each event again (a bad timestamp, properties that are not JSON) before
    queueing it: a ``DataError`` there names the event's position in the batch.
    """
    if store is None:
        raise RequestError("event tracking is not configured: no event store was given", status=503)
    from ..errors import DataError

    ids = []
    for i, kw in enumerate(events):
        args = dict(kw)
        user, item, event = args.pop("user"), args.pop("item"), args.pop("event")
        try:
            ids.append(store.track(user, item, event, **args))
        except DataError as e:
            where = f"events[{i}]: " if len(events) > 1 else ""
            raise RequestError(f"{where}{e}") from None
    if service is not None:
        user_ids = model_ids(service, "user")
        for user in dict.fromkeys(kw["user"] for kw in events):
            service.invalidate(user)
            coerced = coerce_id(user, user_ids) if isinstance(user, str) else user
            if coerced is not user:
                service.invalidate(coerced)  # the id as requests for recommendations give it
    return ids


def stats_json(service=None, store=None) -> dict:
    """The service's and the store's counters, JSON-able."""
    out: dict[str, Any] = {}
    if service is not None:
        out["service"] = service.stats()
    if store is not None:
        out["store"] = store.stats()
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
                  watch_interval: float = 2.0, mmap: bool = True, **options):
    """A :class:`~persona.serving.RecommenderService` over the artifact at ``model_path``.

    With ``watch``, the service reloads the artifact whenever :func:`train_and_publish` (or any
    ``model.save``) publishes a new one there. ``options`` go to ``RecommenderService``
    (``timeout``, ``cache_size``, ``filter_seen``). Raises :class:`RequestError` (503) when no
    model has been published yet.
    """
    from ..io import load
    from ..serving import RecommenderService

    if model_path is None:
        raise RequestError("no model is configured: set the model path (e.g. PERSONA['MODEL_PATH'])", status=503)
    path = Path(model_path)
    if not path.exists():
        raise RequestError(f"no model has been published at {path} yet; train and publish one first "
                           f"(flask persona train / manage.py persona_train)", status=503)
    if isinstance(fallback, (str, Path)):
        fallback = load(fallback, mmap=mmap)
    return RecommenderService.from_artifact(path, mmap=mmap, watch=watch_interval if watch else None,
                                            fallback=fallback, catalog=catalog, store=store, **options)


@dataclass
class Published:
    """What :func:`train_and_publish` trained and where it put it."""

    model: Any
    path: Path
    n_events: int
    n_users: int
    n_items: int
    seconds: float

    def __str__(self) -> str:
        return (f"published {type(self.model).__name__} trained on {self.n_events} events "
                f"({self.n_users} users x {self.n_items} items) to {self.path} in {self.seconds:.2f} s")


def train_and_publish(store, path, *, model="itemknn", params: Mapping | None = None, since=None,
                      event_types=None, weights=None, **options) -> Published:
    """Train on the store's events and publish the model at ``path`` atomically.

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
    since, event_types, weights, **options
        Passed to :meth:`EventStore.interactions` (incremental training, event weights, ...).
    """
    from ..models.base import Recommender
    from ..models.registry import make_model

    t0 = time.perf_counter()
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
    inter = store.interactions(since=since, event_types=event_types, weights=weights, **options)
    est.fit(inter)
    out = est.save(path)
    return Published(est, Path(out), len(inter), inter.n_users, inter.n_items, time.perf_counter() - t0)
