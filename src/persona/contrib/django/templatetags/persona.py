"""``{% load persona %}``: render recommendations in templates.

::

    {% recommended_for request.user 6 %}                      {# "recommended for you", rendered #}
    {% recommended_for None 6 history=viewed exclude=cart %}  {# None: the requester (signed-in or visitor) #}
    {% also_bought product 6 in_stock=True %}                  {# "customers also bought" #}
    {% also_bought product.item_id 4 as recs %}                {# or loop yourself #}
    {% for rec in recs %}<a href="{{ rec.url }}">{{ rec.name }}</a>{% endfor %}

Options: ``placement`` (``"home"``, ``"pdp"``: logged with the impression, and the key of the
service's experiments), ``history``, ``exclude``, ``items`` (lists or comma-separated ids),
``in_stock``, ``filter_seen``, ``segment``, ``min_<col>`` / ``max_<col>`` and catalogue columns
(``category="Skincare"``), and ``template`` (default ``persona/recommendations.html``).

With an event store each rendered list is logged as an impression; its links are ``rec.link``
(the item's url with ``?persona_rid=<request id>``), so opening one records a click attributed
to the list (``TrackViewsMiddleware``).

Each entry has ``id``, ``score``, ``item`` (what ``PERSONA["ITEMS"]`` returned for the id, else
its row of ``PERSONA["CATALOG"]``, or None), ``name`` and ``url`` (taken from the item when it
has them), and reads any other field of the item as an attribute (``{{ rec.price }}``). The
list has ``source``, ``reason`` and ``model_version``. Before any model is published the list is empty (source
``"unavailable"``) and the page still renders.
"""

from __future__ import annotations

import logging

from django import template
from django.template.loader import render_to_string

from ... import common
from ...common import Recommended  # noqa: F401 -- what the entries are, importable from here as before
from .. import runtime

register = template.Library()
log = logging.getLogger("persona.contrib.django")

DEFAULT_TEMPLATE = "persona/recommendations.html"


class RecommendationList(common.RecommendationList):
    """The :class:`~persona.contrib.common.Recommended` entries; renders itself
    (``{% recommended_for ... %}`` prints HTML)."""

    def __html__(self) -> str:
        return render_to_string(self.template_name or DEFAULT_TEMPLATE, {"recs": self, "title": self.title})

    __str__ = __html__


def _answer(ask, template_name, title) -> RecommendationList:
    lookup = runtime.import_string(runtime.settings_dict()["ITEMS"], "ITEMS")
    return common.recommendation_list(lambda service: ask(), get_service=runtime.get_service, lookup=lookup,
                                      cls=RecommendationList, what="PERSONA['ITEMS']", template_name=template_name,
                                      title=title)


@register.simple_tag(takes_context=True)
def recommended_for(context, user=None, n=6, template=DEFAULT_TEMPLATE, title=None, **options):
    """``n`` items for ``user`` (an id, a Django user, or None for the requester)."""
    uid = runtime.user_id(user, context.get("request"))
    if uid is None:
        uid = "persona:anonymous"  # no session and no sign-in: the fallbacks answer (with history= if given)
    return _answer(lambda: runtime.recommend(uid, int(n), **options), template, title)


@register.simple_tag(takes_context=True)
def also_bought(context, item, n=6, template=DEFAULT_TEMPLATE, title=None, **options):
    """``n`` items like ``item`` (an id, a dict with ``item_id``, or a model instance), logged as the
    requester's impression."""
    request = context.get("request")
    user = runtime.current_user(request) if request is not None else None
    return _answer(lambda: runtime.similar_items(item, int(n), user=user, **options), template, title)
