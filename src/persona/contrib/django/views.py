"""The JSON endpoints (mounted by ``persona.contrib.django.urls``).

Answers are JSON; bad input is ``400 {"error": ..., "field": ...}``, a missing model or store
``503``. ``POST events/`` goes through Django's CSRF protection like any other POST: send the
``X-CSRFToken`` header from the shop's pages.
"""

from __future__ import annotations

import functools
import json

from django.http import Http404, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from ...errors import PersonaError
from .. import common
from ..common import RequestError
from . import runtime

__all__ = ["recommendations", "my_recommendations", "similar", "events", "stats"]


def _api(view):
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except PersonaError as e:
            body, status = common.error_json(e)
            return JsonResponse(body, status=status)
    return wrapper


def _query(request, service):
    args = {name: request.GET.getlist(name) for name in request.GET}
    return common.recommendation_query(args, service=service, max_n=int(runtime.settings_dict()["MAX_N"]))


def _recommend(request, user):
    service = runtime.get_service()
    q = _query(request, service)
    user = common.coerce_id(user, common.model_ids(service, "user"))
    recs = service.recommend(user, q.n, context=q.context)
    return JsonResponse(common.recommendations_json(recs, user=user))


@require_GET
@_api
def recommendations(request, user):
    """``GET recommendations/<user>/?n=10&category=...&max_price=...&exclude=a,b&in_stock=1``."""
    if not runtime.settings_dict()["USER_IN_URL"]:
        raise Http404("recommendations by user id are turned off (PERSONA['USER_IN_URL'])")
    return _recommend(request, user)


@require_GET
@_api
def my_recommendations(request):
    """``GET recommendations/``: the same for the requester (signed-in user or session visitor)."""
    user = runtime.current_user(request)
    if user is None:
        raise RequestError("no current user: sign in (or enable sessions), or give the user in the URL", status=401)
    return _recommend(request, user)


@require_GET
@_api
def similar(request, item):
    """``GET similar/<item>/?n=10&...``: "customers also bought"."""
    service = runtime.get_service()
    q = _query(request, service)
    item = common.coerce_id(item, common.model_ids(service, "item"))
    recs = service.similar_items(item, q.n, context=q.context)
    return JsonResponse(common.recommendations_json(recs, item=item))


@require_POST
@_api
def events(request):
    """``POST events/`` with ``{"user", "item", "event", "value", "properties", ...}`` or ``{"events": [...]}``."""
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"the body is not valid JSON ({e}); send an object with user, item and event") from None
    if body is None:
        raise RequestError("expected a JSON body (Content-Type: application/json) with user, item and event")
    conf = runtime.settings_dict()
    default_user = None if conf["TRUST_EVENT_USER"] else runtime.current_user(request)
    parsed = common.parse_events(body, default_user=default_user, allowed_events=conf["ALLOWED_EVENTS"])
    try:
        service = runtime.get_service()
    except RequestError:  # no model published yet: tracking still works
        service = None
    ids = common.track_events(parsed, store=runtime.get_store(), service=service)
    return JsonResponse({"tracked": len(ids), "event_ids": ids}, status=202)


@require_GET
@_api
def stats(request):
    """``GET stats/``: the service's and the store's counters."""
    return JsonResponse(common.stats_json(runtime.get_service(), runtime.get_store()))
