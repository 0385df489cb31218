"""The shop's pages. Views of product pages are recorded by persona's middleware
(PERSONA["TRACK_VIEWS"]); "add to cart" records a cart event with ``persona.contrib.django.track``.

Every rendered list is logged as an impression (placement "home", "pdp", "pdp-similar"), and its
links carry the request id (``?persona_rid=``), so the middleware records the click on a
recommendation as attributed to it; ``metrics/`` shows what the lists did per placement.

"Recommended for you" comes from the visitor's cart and the *other* products they looked at in this
session, so a new visitor's first product page shows what is popular, and adding that product to
the cart turns the list into recommendations made from it, at once (the service answers visitors
it does not know from their session history; no retraining needed).
"""

from __future__ import annotations

from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from persona.contrib import django as persona
import persona as ps
from persona.contrib.common import RequestError, parse_request_id

from .catalog import products, synthetic

N_RECS = 6


def _page(request, **context):
    return {"user": persona.current_user(request), "cart": request.session.get("cart", []), **context}


def home(request):
    category = request.GET.get("category")
    listed = [p for p in products().values() if category in (None, "", p["category"])]
    return render(request, "shop/home.html", _page(
        request, products=listed, categories=sorted({p["category"] for p in products().values()}),
        samples=synthetic().interactions.user_ids[:3].tolist(),
        history=[*request.session.get("viewed", []), *request.session.get("cart", [])],
        exclude=request.session.get("cart", [])))


def product(request, item_id):
    item = products().get(item_id)
    if item is None:
        raise Http404(f"no product {item_id!r}")
    cart = request.session.get("cart", [])
    if request.GET.get("added"):
        request.persona_track = False  # coming back from "add to cart" is not a second view
    else:
        request.session["viewed"] = [*[i for i in request.session.get("viewed", []) if i != item_id], item_id][-20:]
    history = list(dict.fromkeys([*(i for i in request.session.get("viewed", []) if i != item_id), *cart]))
    # "customers also bought" has its own list on this page: leave its items out of "recommended for you"
    try:
        shown = persona.similar_items(item_id, N_RECS, exclude=cart or None).items.tolist()
    except RequestError:  # no model published yet (run `manage.py seed_shop`): the tags render empty lists
        shown = []
    exclude = list(dict.fromkeys([*cart, item_id, *shown]))
    return render(request, "shop/product.html", _page(
        request, item=item, history=history, exclude=exclude, added=bool(request.GET.get("added")), n=N_RECS))


@require_POST
def add_to_cart(request):
    item_id = request.POST.get("item_id", "")
    item = products().get(item_id)
    if item is None:
        return HttpResponseBadRequest("unknown product")
    rid = parse_request_id(request.POST.get("persona_rid"))  # added from a page opened from a recommendation
    persona.track(request, item_id, "cart", value=float(item["price"]),
                  properties={"request_id": rid} if rid else None)
    request.session["cart"] = [*[i for i in request.session.get("cart", []) if i != item_id], item_id]
    return redirect(reverse("shop:product", args=[item_id]) + "?added=1")


def metrics(request):
    """What the shown lists did, per placement (a demo page: a real shop keeps it for staff)."""
    store = persona.get_store()
    store.flush()
    table = ps.analytics.online_metrics(store, by="placement", catalog=len(products()))
    cols = ["impressions", "requests", "clicks", "ctr", "ctr_low", "ctr_high", "carts", "cart_rate", "coverage",
            "novelty"]
    rows = [{"placement": p, "cells": [(c, f"{table.loc[p, c]:g}") for c in cols]} for p in table.index]
    return render(request, "shop/metrics.html", _page(request, rows=rows, cols=cols,
                                                      unattributed=table.attrs["unattributed"]))


def login(request, user_id):
    """A demo sign-in as one of the sample customers the model was trained on."""
    request.session.flush()
    request.session["persona_visitor"] = user_id  # the session key persona's default current_user reads
    return redirect("shop:home")


def logout(request):
    request.session.flush()
    return redirect("shop:home")
