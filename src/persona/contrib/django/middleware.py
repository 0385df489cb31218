"""``TrackViewsMiddleware``: record a ``view`` event for each successful GET of a product page.

Name the views in ``settings.PERSONA["TRACK_VIEWS"]``, mapping a URL name (namespaced as in
``reverse``: ``"shop:product"``) to the URL keyword argument that holds the item id::

    PERSONA = {..., "TRACK_VIEWS": {"shop:product": "item_id"}}
    MIDDLEWARE = [..., "django.contrib.sessions.middleware.SessionMiddleware", ...,
                  "persona.contrib.django.middleware.TrackViewsMiddleware"]

The event is recorded after the view answered 2xx (a 404 for an unknown product records
nothing), for :func:`~persona.contrib.django.current_user`. When the page was opened from a
recommendation (its link carries ``?persona_rid=<request id>``, as the rendered lists' links do),
a ``click`` attributed to that answer is recorded too. Tracking never fails a page: a store error
is logged, a bad ``persona_rid`` ignored. A view can skip it with ``request.persona_track = False``.
"""

from __future__ import annotations

import logging

from ...errors import PersonaError
from .. import common
from . import runtime

__all__ = ["TrackViewsMiddleware"]

log = logging.getLogger("persona.contrib.django")


class TrackViewsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.method == "GET" and 200 <= response.status_code < 300 \
                and getattr(request, "persona_track", True):
            match = getattr(request, "resolver_match", None)
            views = runtime.settings_dict()["TRACK_VIEWS"] or {}
            if match is not None and views:
                kwarg = views.get(match.view_name) or views.get(match.url_name)
                item = match.kwargs.get(kwarg) if kwarg else None
                if item is not None:
                    try:
                        runtime.track(request, item, "view")
                    except PersonaError as e:
                        log.error("persona: could not record a view of %r: %s", item, e)
                    if request.GET.get(common.REQUEST_ID_PARAM) is not None:
                        runtime.track_click(request, item)
        return response
