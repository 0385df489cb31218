"""Campaigns: an offer, its scope, who may get it, how many, when, and on which channels.

A :class:`Campaign` is plain data -- the :class:`~persona.marketing.Planner` decides who gets it on
which channel, and renders the messages. Templates are :class:`string.Template` strings
(``$name`` / ``${name}`` placeholders, nothing is evaluated), checked when the campaign is made.

Template fields
---------------
``$user``, ``$campaign``, ``$channel``, ``$offer`` (e.g. ``10% off``), ``$headline`` (``10% off:``,
``Free shipping:``, ``Picked for you:``), ``$coupon`` (the code, for coupon offers), ``$item`` (name
of the best item), ``$items`` (all names, comma separated), ``$reason`` (``because you viewed X``),
``$expires`` (the end date, ``YYYY-MM-DD``), ``$variant``, and the keys of ``Campaign.fields``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Mapping

from ..errors import ParameterError
from .._validate import check_int, check_number
from ._util import epoch, name_arg, str_tuple

__all__ = ["Offer", "AudienceRule", "Budget", "Campaign", "TEMPLATE_FIELDS", "DEFAULT_TEMPLATE"]

OFFER_KINDS = ("coupon", "discount", "free_shipping", "ad")
TEMPLATE_FIELDS = frozenset({
    "user", "campaign", "channel", "offer", "headline", "coupon", "item", "items", "reason", "expires", "variant",
})
DEFAULT_TEMPLATE = "$headline $items - picked $reason."
DEFAULT_SUBJECT = "$headline $item"


@dataclass(frozen=True)
class Offer:
    """What a campaign gives: a coupon, a discount, free shipping, or just an ad for items.

    Parameters
    ----------
    kind : {"coupon", "discount", "free_shipping", "ad"}
    value : float
        ``coupon``: money off one order; ``discount``: the fraction off (``0.1`` is 10 %);
        ``free_shipping``: the shipping cost the shop absorbs per order; ``ad``: unused (0).
    currency : str
        Shown before coupon amounts.
    description : str, optional
        Overrides the generated text (``$offer`` in templates).

    Examples
    --------
    >>> Offer("discount", 0.15).text(), Offer("coupon", 5).text(), Offer("free_shipping", 4.9).text()
    ('15% off', '€5 off', 'free shipping')
    >>> Offer("discount", 0.15).cost(order_value=40.0)
    6.0
    """

    kind: str = "ad"
    value: float = 0.0
    currency: str = "€"
    description: str | None = None

    def __post_init__(self):
        if self.kind not in OFFER_KINDS:
            raise ParameterError(f"Offer kind: expected one of {OFFER_KINDS}, got {self.kind!r}")
        v = check_number(self.value, "Offer value", min=0.0)
        if self.kind == "discount" and not 0.0 < v < 1.0:
            raise ParameterError(f"Offer value: a discount is a fraction in (0, 1) (0.1 = 10 %), got {self.value!r}")
        if self.kind in ("coupon", "free_shipping") and v <= 0.0:
            raise ParameterError(f"Offer value: a {self.kind} needs its amount > 0, got {self.value!r}")
        object.__setattr__(self, "value", v)

    @property
    def issues_coupon(self) -> bool:
        """True when every message carries a coupon code (counted against ``Budget.coupons``)."""
        return self.kind == "coupon"

    def text(self) -> str:
        if self.description is not None:
            return self.description
        if self.kind == "coupon":
            return f"{self.currency}{self.value:g} off"
        if self.kind == "discount":
            return f"{self.value * 100:g}% off"
        if self.kind == "free_shipping":
            return "free shipping"
        return ""

    def headline(self) -> str:
        t = self.text()
        return (t[:1].upper() + t[1:] + ":") if t else "Picked for you:"

    def cost(self, order_value: float) -> float:
        """What one redeemed offer costs the shop on an order of ``order_value``."""
        if self.kind == "discount":
            return self.value * order_value
        if self.kind in ("coupon", "free_shipping"):
            return min(self.value, order_value) if self.kind == "coupon" else self.value
        return 0.0


@dataclass(frozen=True)
class AudienceRule:
    """Who may get a campaign.

    Parameters
    ----------
    segments : sequence of str, optional
        Only users of these segments (``Contacts.segment``).
    rfm_groups : sequence of str, optional
        Only users in these RFM groups (see :func:`persona.marketing.rfm_table`; the planner needs
        ``rfm=``).
    min_propensity : float
        Never target a user whose conversion probability is below this.
    users, exclude_users : sequence of user ids, optional
        An explicit allow-list / deny-list.
    """

    segments: tuple = ()
    rfm_groups: tuple = ()
    min_propensity: float = 0.0
    users: tuple | None = None
    exclude_users: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "segments", str_tuple(self.segments, "AudienceRule segments"))
        object.__setattr__(self, "rfm_groups", str_tuple(self.rfm_groups, "AudienceRule rfm_groups"))
        object.__setattr__(self, "min_propensity",
                           check_number(self.min_propensity, "AudienceRule min_propensity", min=0.0, max=1.0))
        if self.users is not None:
            object.__setattr__(self, "users", str_tuple(self.users, "AudienceRule users"))
        object.__setattr__(self, "exclude_users", str_tuple(self.exclude_users, "AudienceRule exclude_users"))


@dataclass(frozen=True)
class Budget:
    """How much a campaign may spend over its whole life: messages and coupons (None = no limit).

    Messages already sent (the planner's ``history``) count against it, so planning again the
    next day continues where the last plan stopped.
    """

    messages: int | None = None
    coupons: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "messages", check_int(self.messages, "Budget messages", min=0, allow_none=True))
        object.__setattr__(self, "coupons", check_int(self.coupons, "Budget coupons", min=0, allow_none=True))


def _check_template(tpl, what: str, extra: frozenset) -> str:
    if not isinstance(tpl, str):
        raise ParameterError(f"{what}: expected a string.Template string, got {type(tpl).__name__}")
    t = string.Template(tpl)
    if not t.is_valid():
        raise ParameterError(f"{what}: {tpl!r} is not a valid template; write $name or ${{name}}, and $$ for '$'")
    unknown = sorted(set(t.get_identifiers()) - TEMPLATE_FIELDS - extra)
    if unknown:
        raise ParameterError(
            f"{what}: unknown placeholder(s) {unknown}; use {sorted(TEMPLATE_FIELDS | extra)} "
            "or add the name to Campaign.fields"
        )
    return tpl


@dataclass(frozen=True, eq=False)
class Campaign:
    """One campaign: offer, scope, audience rule, budget, dates, channels and message templates.

    Parameters
    ----------
    name : str
        Unique; it names the campaign in messages, events and metrics.
    offer : Offer
    items, categories : sequence, optional
        The scope: these item ids, and / or every item of these categories (the planner needs a
        ``catalog`` for categories). Messages show items of the scope only.
    audience : AudienceRule
    budget : Budget
    start, end : datetime, ISO-8601 string or epoch seconds, optional
        The campaign is active for ``start <= now < end``.
    channels : sequence of str
        The channels it may use (names of the planner's :class:`~persona.marketing.Channel` s).
    template : str or mapping of channel -> str
        The message body (``string.Template``); a mapping may hold a ``"*"`` default.
    subject : str
        Subject line (used by e-mail; rendered for every channel).
    variants : mapping of str -> str, optional
        A/B variants of the body: each recipient gets one uniformly at random, and the message
        records the variant and its probability.
    margin : float
        Gross margin rate of the scope's sales (0.3 = 30 % of the price).
    order_value : float, optional
        Expected order value of a conversion; default: the mean price of the scope (``catalog``).
    n_items : int
        Items shown per message.
    fields : mapping of str -> str, optional
        Extra fixed template fields.
    """

    name: str
    offer: Offer = field(default_factory=Offer)
    items: tuple = ()
    categories: tuple = ()
    audience: AudienceRule = field(default_factory=AudienceRule)
    budget: Budget = field(default_factory=Budget)
    start: object = None
    end: object = None
    channels: tuple = ("email",)
    template: object = DEFAULT_TEMPLATE
    subject: str = DEFAULT_SUBJECT
    variants: Mapping | None = None
    margin: float = 0.3
    order_value: float | None = None
    n_items: int = 3
    fields: Mapping | None = None

    def __post_init__(self):
        name_arg(self.name, "Campaign name")
        if not isinstance(self.offer, Offer):
            raise ParameterError(f"Campaign offer: expected an Offer, got {type(self.offer).__name__}")
        if not isinstance(self.audience, AudienceRule):
            raise ParameterError(f"Campaign audience: expected an AudienceRule, got {type(self.audience).__name__}")
        if not isinstance(self.budget, Budget):
            raise ParameterError(f"Campaign budget: expected a Budget, got {type(self.budget).__name__}")
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("items", str_tuple(self.items, "Campaign items"))
        set_("categories", str_tuple(self.categories, "Campaign categories"))
        if not self.items and not self.categories:
            raise ParameterError(f"Campaign {self.name!r}: give its scope as items=[...] and/or categories=[...]")
        set_("start", None if self.start is None else epoch(self.start, "Campaign start"))
        set_("end", None if self.end is None else epoch(self.end, "Campaign end"))
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ParameterError(f"Campaign {self.name!r}: end must come after start")
        chans = str_tuple(self.channels, "Campaign channels")
        if not chans or len(set(chans)) != len(chans):
            raise ParameterError(f"Campaign channels: expected distinct channel names, got {self.channels!r}")
        set_("channels", chans)
        fields = dict(self.fields or {})
        for k, v in fields.items():
            if not isinstance(k, str) or not k.isidentifier() or k in TEMPLATE_FIELDS:
                raise ParameterError(f"Campaign fields: {k!r} must be an identifier other than {sorted(TEMPLATE_FIELDS)}")
            if not isinstance(v, str):
                raise ParameterError(f"Campaign fields: {k!r} must map to a string, got {type(v).__name__}")
        set_("fields", fields)
        extra = frozenset(fields)
        if isinstance(self.template, Mapping):
            set_("template", {str(k): _check_template(v, f"Campaign template[{k!r}]", extra)
                              for k, v in self.template.items()})
        else:
            _check_template(self.template, "Campaign template", extra)
        _check_template(self.subject, "Campaign subject", extra)
        if self.variants is not None:
            if not isinstance(self.variants, Mapping) or not self.variants:
                raise ParameterError("Campaign variants: expected a non-empty mapping of name -> template")
            set_("variants", {name_arg(k, "variant name"): _check_template(v, f"Campaign variants[{k!r}]", extra)
                              for k, v in self.variants.items()})
        set_("margin", check_number(self.margin, "Campaign margin", min=0.0, max=1.0))
        set_("order_value", check_number(self.order_value, "Campaign order_value", min=0.0, allow_none=True))
        set_("n_items", check_int(self.n_items, "Campaign n_items", min=1))

    def __repr__(self) -> str:
        scope = []
        if self.items:
            scope.append(f"{len(self.items)} items")
        if self.categories:
            scope.append("categories " + ", ".join(map(str, self.categories)))
        return f"Campaign({self.name!r}, {self.offer.kind}, {' + '.join(scope)}, channels {list(self.channels)})"

    def active(self, now: float) -> bool:
        """True when ``start <= now < end``."""
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)

    def template_for(self, channel: str, variant: str | None = None) -> str:
        if variant is not None and self.variants:
            return self.variants[variant]
        if isinstance(self.template, dict):
            if channel in self.template:
                return self.template[channel]
            if "*" in self.template:
                return self.template["*"]
            return DEFAULT_TEMPLATE
        return self.template

    def margin_per_conversion(self, order_value: float) -> float:
        """Gross margin of one converted order, less what the offer costs."""
        return order_value * self.margin - self.offer.cost(order_value)
