"""What a plan hands back: the messages to send, the held-out users, and a dry-run report."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from ._util import utc

if TYPE_CHECKING:  # pandas only for report's annotation
    import pandas as pd

__all__ = ["Message", "Holdout", "Plan"]


@dataclass(frozen=True)
class Message:
    """One personalised message for the host application to send; persona sends nothing itself.

    Attributes
    ----------
    message_id : str
        Stable id (campaign, user and plan time); pass it back with opens, clicks and conversions.
    user, campaign, channel : the recipient, the campaign name and the channel name
    send_at : float
        Epoch seconds (UTC) the plan was made for; ``send_at_utc`` gives a datetime.
    subject, text : str
        Rendered from the campaign's templates.
    items, item_names : tuple
        The top items of the campaign's scope for this user, best first.
    reason : str
        Customer-facing: ``"because you viewed X"``.
    why : str
        Internal: why the planner chose this user and channel.
    coupon : str
        The coupon code ("" unless the offer is a coupon).
    variant : str
        The A/B variant ("" without variants).
    propensity : float
        Probability that the planning policy produced exactly this message for this user given
        the candidates (holdout and variant draws); logged with feedback for off-policy evaluation.
    p_convert : float
        The planner's conversion probability for this message.
    expected_value : float
        Its value in the objective (expected conversions, or margin minus cost).
    cost : float
        The channel's cost per message.
    segment, rfm_group : str
    """

    message_id: str
    user: object
    campaign: str
    channel: str
    send_at: float
    subject: str
    text: str
    items: tuple = ()
    item_names: tuple = ()
    reason: str = ""
    why: str = ""
    coupon: str = ""
    variant: str = ""
    offer: str = ""
    propensity: float = 1.0
    p_convert: float = 0.0
    expected_value: float = 0.0
    cost: float = 0.0
    segment: str = ""
    rfm_group: str = ""

    @property
    def send_at_utc(self) -> _dt.datetime:
        return utc(self.send_at)

    def to_dict(self) -> dict:
        """Plain JSON-friendly fields (for a message queue, a template engine, a database row)."""
        d = asdict(self)
        d["items"] = list(self.items)
        d["item_names"] = list(self.item_names)
        return d

    def tracking(self) -> dict:
        """The properties every feedback event of this message carries."""
        return {
            "message_id": self.message_id, "campaign": self.campaign, "channel": self.channel,
            "offer": self.offer, "variant": self.variant, "group": "treatment", "segment": self.segment,
            "rfm_group": self.rfm_group, "propensity": float(self.propensity), "p_convert": float(self.p_convert),
        }


@dataclass(frozen=True)
class Holdout:
    """A user the plan chose but kept out at random (the control group of the campaign's lift)."""

    message_id: str
    user: object
    campaign: str
    channel: str
    send_at: float
    propensity: float
    p_convert: float
    offer: str = ""
    segment: str = ""
    rfm_group: str = ""

    def tracking(self) -> dict:
        return {
            "message_id": self.message_id, "campaign": self.campaign, "channel": self.channel, "offer": self.offer,
            "variant": "", "group": "control", "segment": self.segment, "rfm_group": self.rfm_group,
            "propensity": float(self.propensity), "p_convert": float(self.p_convert),
        }


@dataclass
class Plan:
    """The outcome of :meth:`Planner.plan`: messages, holdouts, per-campaign facts, optimality.

    Attributes
    ----------
    messages : list of Message
    holdouts : list of Holdout
    now : float
        Epoch seconds the plan was made for.
    campaigns : dict
        Per campaign name: ``active``, ``scope`` (items), ``budget_left``, ``eligible`` (users that
        passed the audience rule and min propensity), ``candidates`` (eligible users with a channel left
        after consent and quiet hours), ``no_consent`` / ``quiet_hours`` / ``capped`` (eligible users
        lost to each), ``worth`` (candidates whose best message has a positive value), ``chosen``, ``messages``, ``holdouts``, ``expected_conversions``,
        ``expected_margin``, ``cost``, ``note``.
    objective, method : str
    value, upper_bound, guarantee : float
        The optimiser's objective, a bound no plan can beat, and its a-priori guarantee.
    """

    messages: list
    holdouts: list
    now: float
    campaigns: dict = field(default_factory=dict)
    objective: str = "margin"
    method: str = "greedy"
    value: float = 0.0
    upper_bound: float = 0.0
    guarantee: float = 1.0

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self):
        return iter(self.messages)

    def __repr__(self) -> str:
        return (f"Plan({len(self.messages)} messages, {len(self.holdouts)} held out, {len(self.campaigns)} campaigns, "
                f"{self.objective} {self.value:.4g} of at most {self.upper_bound:.4g})")

    def report(self) -> pd.DataFrame:
        """The dry run: one row per message (and held-out user) -- who would get what, and why."""
        import pandas as pd

        rows = []
        for m in self.messages:
            rows.append({"user": m.user, "campaign": m.campaign, "channel": m.channel, "group": "treatment",
                         "variant": m.variant, "items": ", ".join(map(str, m.items)), "reason": m.reason,
                         "p_convert": m.p_convert, "expected_value": m.expected_value, "cost": m.cost,
                         "coupon": m.coupon, "segment": m.segment, "why": m.why, "text": m.text})
        for h in self.holdouts:
            rows.append({"user": h.user, "campaign": h.campaign, "channel": h.channel, "group": "control",
                         "variant": "", "items": "", "reason": "", "p_convert": h.p_convert,
                         "expected_value": 0.0, "cost": 0.0, "coupon": "", "segment": h.segment,
                         "why": f"held out at random (p={h.propensity:.3g}) to measure the campaign's lift",
                         "text": ""})
        cols = ["user", "campaign", "channel", "group", "variant", "items", "reason", "p_convert",
                "expected_value", "cost", "coupon", "segment", "why", "text"]
        return pd.DataFrame(rows, columns=cols)

    def summary(self) -> str:
        """A short text: per campaign, who was eligible, what was lost to consent / quiet hours /
        caps / budget, and the expected outcome."""
        when = utc(self.now).strftime("%Y-%m-%d %H:%M UTC")
        lines = [f"Plan for {when}: {len(self.messages)} messages, {len(self.holdouts)} held out; "
                 f"{self.objective} {self.value:.4g} (bound {self.upper_bound:.4g}, {self.method}, "
                 f"guaranteed >= {self.guarantee:.2g} x optimum)"]
        for name, s in self.campaigns.items():
            if not s.get("active", True) or s.get("note"):
                lines.append(f"  {name}: {s.get('note') or 'not active'}")
                continue
            lines.append(
                f"  {name}: {s['eligible']} eligible, lost {s['no_consent']} to consent, {s['quiet_hours']} to "
                f"quiet hours, {s['capped']} to frequency caps"
                + (f", {s['candidates'] - s['worth']} not worth a message" if s['candidates'] > s['worth'] else "")
                + f"; budget left {'no limit' if s['budget_left'] is None else s['budget_left']}; "
                f"{s['messages']} messages (+{s['holdouts']} held out) by "
                + (", ".join(f"{k} {v}" for k, v in s["by_channel"].items()) or "no channel")
                + f"; expect {s['expected_conversions']:.2f} conversions, margin {s['expected_margin']:.2f}, "
                f"cost {s['cost']:.2f}"
            )
        return "\n".join(lines)
