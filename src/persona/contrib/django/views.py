"""The JSON endpoints (mounted by ``persona.contrib.django.urls``).

Answers are JSON, errors too (an unknown path under the mount point is a JSON 404, a wrong method
a JSON 405): bad input is ``400 {"error": ..., "field": ...}``, a refused request ``403``, an
oversized body ``413``, a missing model or store ``503``. Error answers never hold paths, URLs or
exception texts; the ``persona.contrib`` log has them.

Who may ask for what (see ``docs/integrations.md``): ``recommendations/<user>/`` answers the
requester's own id only unless ``PERSONA["USER_IN_URL"]`` (trusted internal callers only);
``events/`` records for the signed-in user or the session's visitor id unless
``PERSONA["TRUST_EVENT_USER"]``; ``stats/`` asks ``PERSONA["STATS_PERMISSION"]`` (default: staff).
``POST events/`` goes through Django's CSRF protection when ``CsrfViewMiddleware`` is installed:
send the ``X-CSRFToken`` header from the shop's pages.
"""

from __future__ import annotations

import functools

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from ...errors import PersonaError
from .. import common
from ..common import RequestError
from . import runtime

__all__ = ["recommendations", "my_recommendations", "similar", "events", "stats", "not_found"]


def _api(*methods: str):
    """A JSON endpoint answering ``methods``: every error it raises is answered as JSON."""
    def decorate(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in methods and not (request.method == "HEAD" and "GET" in methods):
                response = JsonResponse({"error": f"{request.method} is not allowed here; use {' or '.join(methods)}"},
                                        status=405)
                response["Allow"] = ", ".join(methods)
                return response
            try:
                return view(request, *args, **kwargs)
            except PersonaError as e:
                body, status = common.error_json(e)
            except RequestDataTooBig:
                body, status = {"error": "the body is too large; send smaller batches"}, 413
            except SuspiciousOperation:  # too many fields, a bad header, ...: Django would answer an HTML 400
                body, status = {"error": "the request was refused as malformed"}, 400
            except Http404:
                body, status = {"error": "not found"}, 404
            except Exception as e:  # noqa: BLE001 -- a JSON 500 that says nothing; the log has the traceback
                body, status = common.internal_error_json(e)
            return JsonResponse(body, status=status)
        return wrapper
    return decorate


def _query(request, service):
    args = {name: request.GET.getlist(name) for name in request.GET}
    conf = runtime.settings_dict()
    pol = runtime.policy_of(conf)
    return common.recommendation_query(args, service=service, max_n=int(conf["MAX_N"]),
                                       client_options=pol.client_options, limits=pol.limits)


def _recommend(request, user):
    service = runtime.get_service()
    q = _query(request, service)
    user = common.coerce_id(user, common.model_ids(service, "user"))
    recs = service.recommend(user, q.n, context=q.context)
    return JsonResponse(common.recommendations_json(recs, user=user))


@_api("GET")
def recommendations(request, user):
    """``GET recommendations/<user>/?n=10&category=...``: the requester's own id, or any with USER_IN_URL."""
    pol = runtime.policy()
    who = common.Requester() if pol.user_in_url else runtime.requester(request)
    return _recommend(request, common.check_url_user(user, who, pol))


@_api("GET")
def my_recommendations(request):
    """``GET recommendations/``: the same for the requester (signed-in user or session visitor)."""
    return _recommend(request, common.requester_id(runtime.requester(request)))


@_api("GET")
def similar(request, item):
    """``GET similar/<item>/?n=10&...``: "customers also bought"."""
    common.check_id(item, "item", runtime.policy().limits)
    service = runtime.get_service()
    q = _query(request, service)
    item = common.coerce_id(item, common.model_ids(service, "item"))
    recs = service.similar_items(item, q.n, context=q.context, user=runtime.requester(request).user)
    return JsonResponse(common.recommendations_json(recs, item=item))


def _csrf_refused(request) -> bool:
    """Django's CSRF check, run here so that a refusal is answered as JSON (not the HTML failure page)."""
    from django.conf import settings
    from django.middleware.csrf import CsrfViewMiddleware

    if "django.middleware.csrf.CsrfViewMiddleware" not in settings.MIDDLEWARE:
        return False
    return CsrfViewMiddleware(lambda r: None).process_view(request, _csrf_checked, (), {}) is not None


def _csrf_checked(request):  # the callback the CSRF check sees: not exempt
    raise AssertionError("never called")


def _content_length(request):
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise RequestError("the Content-Length header is not a number") from None


@csrf_exempt  # checked inside, so that a refusal is JSON
@_api("POST")
def events(request):
    """``POST events/`` with ``{"item", "event", "value", "properties", ...}`` or ``{"events": [...]}``."""
    if _csrf_refused(request):
        raise RequestError("the CSRF check failed: send the X-CSRFToken header with the csrftoken cookie's value",
                           status=403)
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise RequestError("expected a JSON body (Content-Type: application/json) with item and event")
    conf = runtime.settings_dict()
    pol = runtime.policy_of(conf)
    common.check_content_length(_content_length(request), pol.limits)
    body = common.parse_json_body(request.body, pol.limits)
    who = runtime.requester(request)
    common.check_may_track(who, pol)
    names = runtime.event_names()
    parsed = common.parse_events(body, default_user=who.user, trusted=pol.trusted_tracking,
                                 allowed_events=conf["ALLOWED_EVENTS"], limits=pol.limits, event_names=names)
    try:
        service = runtime.get_service()
    except PersonaError:  # no model published yet: tracking still works
        service = None
    ids = common.track_events(parsed, store=runtime.get_store(), service=service)
    return JsonResponse({"tracked": len(ids), "event_ids": ids, **common.unknown_events_json(names.unknown_in(parsed))},
                        status=202)


@_api("GET")
def stats(request):
    """``GET stats/``: the service's and the store's counters, for whom ``STATS_PERMISSION`` allows."""
    check = runtime.import_string(runtime.settings_dict()["STATS_PERMISSION"], "STATS_PERMISSION")
    common.check_stats(None if check is None else bool(check(request)))
    return JsonResponse(common.stats_json(runtime.get_service(), runtime.get_store()))


@_api("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
def not_found(request, rest=""):
    """Any other path under the mount point: a JSON 404 (not the site's HTML page)."""
    raise RequestError("no such persona endpoint; see docs/integrations.md for the endpoints", status=404)
