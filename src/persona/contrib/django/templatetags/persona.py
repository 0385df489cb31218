"""``{% load persona %}``: render recommendations in templates.

::

    {% recommended_for request.user 6 %}                      {# "recommended for you", rendered #}
    {% recommended_for None 6 history=viewed exclude=cart %}  {# None: the requester (signed-in or visitor) #}
    {% also_bought product 6 in_stock=True %}                  {# "customers also bought" #}
    {% also_bought product.item_id 4 as recs %}                {# or loop yourself #}
    {% for rec in recs %}<a href="{{ rec.url }}">{{ rec.name }}</a>{% endfor %}

Options: ``history``, ``exclude``, ``items`` (lists or comma-separated ids), ``in_stock``,
``filter_seen``, ``segment``, ``min_<col>`` / ``max_<col>`` and catalogue columns
(``category="Skincare"``), and ``template`` (default ``persona/recommendations.html``).

Each entry has ``id``, ``score``, ``item`` (what ``PERSONA["ITEMS"]`` returned for the id, or
None), ``name`` and ``url`` (taken from the item when it has them). The list has ``source``,
``reason`` and ``model_version``. Before any model is published the list is empty (source
``"unavailable"``) and the page still renders.
"""

from __future__ import annotations

import logging

import numpy as np
from django import template
from django.template.loader import render_to_string

from ....errors import StoreError
from ...common import RequestError
from .. import runtime

register = template.Library()
log = logging.getLogger("persona.contrib.django")

DEFAULT_TEMPLATE = "persona/recommendations.html"


class Recommended:
    """One recommended item, as templates see it."""

    __slots__ = ("id", "score", "item", "name", "url")

    def __init__(self, id, score, item=None):
        self.id, self.score, self.item = id, score, item
        self.name = _attr(item, "name") or str(id)
        url = _attr(item, "url")
        if url is None and hasattr(item, "get_absolute_url"):
            url = item.get_absolute_url()
        self.url = url

    def __repr__(self) -> str:
        return f"Recommended({self.id!r}, score={self.score:.4g})"


def _attr(item, name):
    if item is None:
        return None
    if isinstance(item, dict):
        return item.get(name)
    return getattr(item, name, None)


class RecommendationList(list):
    """The :class:`Recommended` entries; renders itself (``{% recommended_for ... %}`` prints HTML)."""

    def __init__(self, entries=(), *, source=None, reason=None, model_version=None, template_name=DEFAULT_TEMPLATE,
                 title=None):
        super().__init__(entries)
        self.source, self.reason, self.model_version = source, reason, model_version
        self.template_name, self.title = template_name, title

    @property
    def ids(self) -> list:
        return [r.id for r in self]

    def __html__(self) -> str:
        return render_to_string(self.template_name, {"recs": self, "title": self.title})

    __str__ = __html__


def _entries(recs) -> list[Recommended]:
    ids = np.asarray(recs[0]).tolist()
    scores = [float(s) for s in recs[1]]
    lookup = runtime.import_string(runtime.settings_dict()["ITEMS"], "ITEMS")
    items = [None] * len(ids)
    if lookup is not None and ids:
        found = lookup(ids)
        if isinstance(found, dict):
            items = [found.get(i) for i in ids]
        else:
            items = list(found)
            if len(items) != len(ids):
                raise ValueError(f"PERSONA['ITEMS'] returned {len(items)} items for {len(ids)} ids; return one "
                                 f"per id (None for an unknown one) or a dict id -> item")
    return [Recommended(i, s, it) for i, s, it in zip(ids, scores, items)]


def _answer(ask, template_name, title) -> RecommendationList:
    try:
        recs = ask()
    except (RequestError, StoreError) as e:
        if isinstance(e, RequestError) and e.status != 503:
            raise
        reason = e.message if isinstance(e, RequestError) else "the event store is unavailable"
        log.warning("persona: no recommendations to render: %s", e if isinstance(e, StoreError) else reason)
        return RecommendationList(source="unavailable", reason=reason, template_name=template_name, title=title)
    return RecommendationList(_entries(recs), source=recs.source, reason=recs.reason,
                              model_version=recs.model_version, template_name=template_name, title=title)


@register.simple_tag(takes_context=True)
def recommended_for(context, user=None, n=6, template=DEFAULT_TEMPLATE, title=None, **options):
    """``n`` items for ``user`` (an id, a Django user, or None for the requester)."""
    uid = runtime.user_id(user, context.get("request"))
    if uid is None:
        uid = "persona:anonymous"  # no session and no sign-in: the fallbacks answer (with history= if given)
    return _answer(lambda: runtime.recommend(uid, int(n), **options), template, title)


@register.simple_tag
def also_bought(item, n=6, template=DEFAULT_TEMPLATE, title=None, **options):
    """``n`` items like ``item`` (an id, a dict with ``item_id``, or a model instance)."""
    return _answer(lambda: runtime.similar_items(item, int(n), **options), template, title)
