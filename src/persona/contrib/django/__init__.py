"""persona as a Django app: ``INSTALLED_APPS += ["persona.contrib.django"]``.

Settings (``settings.PERSONA``; every key optional, see :data:`~persona.contrib.django.runtime.DEFAULTS`)::

    PERSONA = {
        "MODEL_PATH": BASE_DIR / "var" / "model.persona",   # what the web processes serve
        "STORE": BASE_DIR / "var" / "events.db",            # or "postgresql://...", or EventStore kwargs
        "WATCH": True,                                      # pick up what persona_train publishes
        "TRACK_VIEWS": {"product": "item_id"},              # url name -> kwarg: views the middleware records
        "EVENT_WEIGHTS": {"add_to_cart": 4},                # the shop's own event names: trained on, known to events/
    }

What the app gives:

* ``path("persona/", include("persona.contrib.django.urls"))``: JSON endpoints
  ``recommendations/`` (the requester's: signed-in user or session visitor),
  ``recommendations/<user>/`` (the requester's own id; any id only with ``USER_IN_URL``, for
  trusted internal callers), ``similar/<item>/``, ``events/`` (POST, for the requester; naming
  users only with ``TRUST_EVENT_USER``; an unknown event name is refused or stored and reported,
  ``UNKNOWN_EVENTS``) and ``stats/`` (``STATS_PERMISSION``, default staff);
* ``"persona.contrib.django.middleware.TrackViewsMiddleware"``: records a ``view`` for each
  successful GET of a view named in ``TRACK_VIEWS``;
* ``{% load persona %}``, ``{% recommended_for user 6 %}``, ``{% also_bought item 6 %}`` (or
  ``... as recs`` to loop yourself);
* ``python manage.py persona_train``: trains on the store's events and publishes the model,
  printing what it kept and what it dropped per event name (``--weights add_to_cart=4``);
* in Python: :func:`track`, :func:`recommend`, :func:`similar_items`, :func:`get_service`,
  :func:`get_store`, :func:`current_user`.
"""

from __future__ import annotations

from .runtime import current_user, get_service, get_store, recommend, reset, similar_items, track

__all__ = ["get_service", "get_store", "reset", "current_user", "track", "recommend", "similar_items"]
