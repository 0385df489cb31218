"""The catalogue: a few hundred products of persona's synthetic shop, held in memory (no database)."""

from __future__ import annotations

import functools

from django.conf import settings
from django.urls import reverse

import persona as ps


@functools.lru_cache(maxsize=1)
def synthetic():
    conf = settings.SHOP
    return ps.datasets.synthetic_shop(n_users=conf["USERS"], n_items=conf["ITEMS"], seed=conf["SEED"])


def catalog_frame():
    """Item attributes for persona's filters (PERSONA["CATALOG"])."""
    return synthetic().items[["item_id", "name", "category", "brand", "price"]]


@functools.lru_cache(maxsize=1)
def products() -> dict:
    return {row["item_id"]: row for row in catalog_frame().to_dict("records")}


def lookup(ids) -> list:
    """What the template tags show for recommended ids (PERSONA["ITEMS"]): name and url."""
    found = products()
    return [None if i not in found else {**found[i], "url": reverse("shop:product", args=[i])} for i in ids]
