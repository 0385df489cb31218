"""Campaign feedback through the event store, and the metrics and A/B comparisons built on it.

:class:`FeedbackRecorder` writes ``send``, ``open``, ``click``, ``conversion`` (and ``holdout``
for control-group members) events with :meth:`EventStore.track
<persona.store.EventStore.track>`. Every event carries the message's tracking properties --
``message_id``, ``campaign``, ``channel``, ``offer``, ``variant``, ``group`` (treatment / control),
``segment``, ``rfm_group``, ``propensity`` (the planning policy's probability of this choice) and
``p_convert`` (its predicted conversion probability) -- so metrics group without joins and later
off-policy evaluation has the propensities it needs. Event ids are derived from the message id,
so a webhook delivered twice stores one open.

:func:`campaign_metrics` counts per message (a message opened three times is one open) and
reports, per campaign / channel / segment / variant / group: messages, opens, clicks, conversions,
revenue, cost, open rate, CTR, conversion rate, revenue per message and ROI, and the held-out
control group's conversion rate and the lift over it.
:func:`compare_groups` turns two groups of recipients (control vs treatment, two variants, two
channels) into an :func:`~persona.marketing.ab_test`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validate import check_frame
from ..errors import DataError, ParameterError
from .abtest import ab_test, ab_test_means
from ..typing import FrameLike, ItemId, TimePoint
from .abtest import ABResult
from .plan_result import Holdout, Message

if TYPE_CHECKING:  # annotations only: no store, channels or pandas import for them
    import pandas as pd

    from ..store.events import EventStore
    from .channels import ContactHistory

__all__ = ["FeedbackRecorder", "campaign_metrics", "compare_groups", "FEEDBACK_EVENTS"]

FEEDBACK_EVENTS = ("send", "holdout", "open", "click", "conversion")
_KEYS = ("message_id", "campaign", "channel", "offer", "variant", "group", "segment", "rfm_group")


def _tracking(message) -> tuple[object, dict, object]:
    """(user, properties, default item) of a Message, Holdout, or a dict with at least the ids."""
    if isinstance(message, (Message, Holdout)):
        item = message.items[0] if isinstance(message, Message) and message.items else f"campaign:{message.campaign}"
        return message.user, message.tracking(), item
    if isinstance(message, Mapping):
        missing = [k for k in ("message_id", "user", "campaign", "channel") if k not in message]
        if missing:
            raise ParameterError(f"feedback: the message dict lacks {missing}; pass the Message, or "
                                 "Message.to_dict()")
        props = {k: message[k] for k in (*_KEYS, "propensity", "p_convert") if k in message}
        props.setdefault("group", "treatment")
        items = message.get("items") or ()
        return message["user"], props, (items[0] if items else f"campaign:{message['campaign']}")
    raise ParameterError(f"feedback: expected a Message, Holdout or dict, got {type(message).__name__}")


class FeedbackRecorder:
    """Record what happened to planned messages in an :class:`~persona.store.EventStore`.

    Parameters
    ----------
    store : EventStore
    history : ContactHistory, optional
        Updated on every :meth:`sent`, so the planner's caps and budgets see the message at once.

    Examples
    --------
    >>> import os, tempfile
    >>> from persona.store import EventStore
    >>> from persona.marketing import Message
    >>> msg = Message("m1", "ann", "spring", "email", send_at=1714557600.0, subject="", text="",
    ...               items=("shoe-42",), offer="discount", propensity=0.9)
    >>> with EventStore(os.path.join(tempfile.mkdtemp(), "events.db")) as store:
    ...     rec = FeedbackRecorder(store)
    ...     _ = rec.sent(msg); _ = rec.opened(msg); _ = rec.opened(msg)       # a repeated webhook
    ...     _ = rec.converted(msg, value=59.0, order_id="o-1")
    ...     store.flush()
    ...     m = campaign_metrics(store)
    >>> m.loc["spring", ["messages", "opens", "conversions"]].tolist(), float(m.loc["spring", "revenue"])
    ([1, 1, 1], 59.0)
    """

    def __init__(self, store: EventStore, *, history: ContactHistory | None = None) -> None:
        if not hasattr(store, "track"):
            raise ParameterError(f"FeedbackRecorder: expected an EventStore, got {type(store).__name__}")
        self.store = store
        self.history = history

    def _track(self, message, event, timestamp, *, item=None, value=None, extra=None, key=None):
        user, props, default_item = _tracking(message)
        if extra:
            props.update(extra)
        event_id = f"{props['message_id']}:{event}" + (f":{key}" if key is not None else "")
        return self.store.track(user, default_item if item is None else item, event, timestamp=timestamp,
                                value=value, properties=props, event_id=event_id)

    def sent(self, message: Message, timestamp: TimePoint | None = None) -> str | None:
        """The host sent ``message`` (default time: its ``send_at``)."""
        if not isinstance(message, Message):
            raise ParameterError(f"sent: expected the Message that was sent, got {type(message).__name__}")
        ts = message.send_at if timestamp is None else timestamp
        eid = self._track(message, "send", ts, extra={"cost": float(message.cost), "coupon": message.coupon,
                                                       "expected_value": float(message.expected_value)})
        if self.history is not None:
            self.history.record_message(message, ts)
        return eid

    def held_out(self, holdout: Holdout, timestamp: TimePoint | None = None) -> str | None:
        """``holdout`` was kept out as control (record it so its conversions can be compared)."""
        if not isinstance(holdout, Holdout):
            raise ParameterError(f"held_out: expected a Holdout, got {type(holdout).__name__}")
        return self._track(holdout, "holdout", holdout.send_at if timestamp is None else timestamp)

    def opened(self, message: Message | Holdout | Mapping[str, Any], timestamp: TimePoint | None = None) -> str | None:
        return self._track(message, "open", timestamp)

    def clicked(self, message: Message | Holdout | Mapping[str, Any], item: ItemId | None = None,
                timestamp: TimePoint | None = None) -> str | None:
        return self._track(message, "click", timestamp, item=item)

    def converted(self, message: Message | Holdout | Mapping[str, Any], value: float | None = None,
                  item: ItemId | None = None, timestamp: TimePoint | None = None,
                  order_id: str | int | None = None) -> str | None:
        """A conversion attributed to ``message`` (or to a held-out user's would-be message).

        ``order_id`` makes it idempotent; several orders may convert one message.
        """
        return self._track(message, "conversion", timestamp, item=item, value=value,
                           key="0" if order_id is None else str(order_id))


def _frame(events):
    import pandas as pd

    if hasattr(events, "events") and callable(events.events):
        events = events.events(event_types=list(FEEDBACK_EVENTS))
    if not isinstance(events, pd.DataFrame):
        events = check_frame(events, "expected an EventStore or EventStore.events() frame; events",
                             error=ParameterError)
    for col in ("event", "properties"):
        if col not in events.columns:
            raise DataError(f"feedback events need an {col!r} column (EventStore.events()); got {list(events.columns)}")
    return events[events["event"].isin(FEEDBACK_EVENTS)]


def _per_message(events):
    """One row per message: its attributes (from the send / holdout event) and what happened."""
    import pandas as pd

    ev = _frame(events)
    props = [p if isinstance(p, dict) else {} for p in ev["properties"].tolist()]
    if any("message_id" not in p for p in props):
        raise DataError("feedback events without a 'message_id' property; record them with FeedbackRecorder")
    flat = pd.DataFrame({k: [p.get(k, "") for p in props] for k in _KEYS})
    flat["cost"] = [float(p.get("cost", 0.0) or 0.0) for p in props]
    flat["event"] = ev["event"].to_numpy()
    value = ev["value"].to_numpy(dtype=np.float64) if "value" in ev.columns else np.zeros(len(ev))
    flat["revenue"] = np.where((flat["event"] == "conversion") & np.isfinite(value), value, 0.0)
    if len(flat) == 0:
        cols = [*_KEYS[1:], "sent", "held", "opened", "clicked", "converted", "orders", "revenue", "cost"]
        return pd.DataFrame(columns=cols)
    # attributes of a message: from its send / holdout event when present, else the first event's
    first = flat.assign(_o=(~flat["event"].isin(("send", "holdout"))).astype(int)).sort_values("_o", kind="stable")
    attrs = first.drop_duplicates("message_id").set_index("message_id")[list(_KEYS[1:])]
    g = flat.groupby("message_id")
    has = lambda e: g["event"].agg(lambda s: bool((s == e).any()))  # noqa: E731
    out = attrs.join(pd.DataFrame({
        "sent": has("send"), "held": has("holdout"), "opened": has("open"), "clicked": has("click"),
        "converted": has("conversion"), "orders": g["event"].agg(lambda s: int((s == "conversion").sum())),
        "revenue": g["revenue"].sum(), "cost": g["cost"].sum(),
    }))
    out["group"] = np.where(out["held"], "control", np.where(out["group"] == "", "treatment", out["group"]))
    return out


def campaign_metrics(events: EventStore | FrameLike, by: str | list[str] = "campaign", *,
                     margin: float | None = None) -> pd.DataFrame:
    """Metrics of recorded feedback, grouped by ``by``.

    Parameters
    ----------
    events : EventStore or DataFrame
        A store, or ``store.events()`` (the feedback events in it are used).
    by : str or list of str
        Any of ``campaign``, ``channel``, ``segment``, ``rfm_group``, ``offer``, ``variant``,
        ``group`` (treatment / control).
    margin : float, optional
        Gross margin rate: ROI then uses margin (``revenue * margin - cost``) instead of revenue.

    Returns
    -------
    pandas.DataFrame
        Of the messages sent: ``messages``, ``opens``, ``clicks``, ``conversions`` (messages with at
        least one conversion), ``orders``, ``revenue``, ``cost``, ``open_rate``, ``ctr`` (clicks per
        message), ``conversion_rate``, ``revenue_per_message``, ``roi`` (``(revenue - cost) / cost``,
        NaN at zero cost). Of the held-out control group: ``holdouts``, ``holdout_conversions``,
        ``holdout_conversion_rate``, and ``lift`` (``conversion_rate - holdout_conversion_rate``).
        Opens and clicks count once per message; rates are NaN where their denominator is 0.
    """
    keys = [by] if isinstance(by, str) else list(by)
    bad = [k for k in keys if k not in _KEYS[1:]]
    if bad or not keys:
        raise ParameterError(f"campaign_metrics: by must name columns among {list(_KEYS[1:])}, got {by!r}")
    pm = _per_message(events)
    sent = pm["sent"].astype(bool)
    ctrl = pm["held"].astype(bool) & ~sent
    pm = pm.assign(
        opened=pm["opened"] & sent, clicked=pm["clicked"] & sent, conv_sent=pm["converted"] & sent,
        orders=pm["orders"].where(sent, 0), rev_sent=pm["revenue"].where(sent, 0.0), ctrl=ctrl,
        conv_ctrl=pm["converted"] & ctrl,
    )
    g = pm.groupby(keys, sort=True)
    out = g.agg(messages=("sent", "sum"), opens=("opened", "sum"), clicks=("clicked", "sum"),
                conversions=("conv_sent", "sum"), orders=("orders", "sum"), revenue=("rev_sent", "sum"),
                cost=("cost", "sum"), holdouts=("ctrl", "sum"), holdout_conversions=("conv_ctrl", "sum"))
    for col in ("messages", "opens", "clicks", "conversions", "orders", "holdouts", "holdout_conversions"):
        out[col] = out[col].astype(np.int64)
    n_sent = out["messages"].where(out["messages"] > 0)
    out["open_rate"] = out["opens"] / n_sent
    out["ctr"] = out["clicks"] / n_sent
    out["conversion_rate"] = out["conversions"] / n_sent
    out["revenue_per_message"] = out["revenue"] / n_sent
    gain = out["revenue"] * (1.0 if margin is None else float(margin))
    out["roi"] = (gain - out["cost"]) / out["cost"].where(out["cost"] > 0)
    out["holdout_conversion_rate"] = out["holdout_conversions"] / out["holdouts"].where(out["holdouts"] > 0)
    out["lift"] = out["conversion_rate"] - out["holdout_conversion_rate"]
    return out


def compare_groups(events: EventStore | FrameLike, by: str = "group", *, a: str | None = None,
                   b: str | None = None, campaign: str | None = None, metric: str = "conversion",
                   conf: float = 0.95, ci: str | None = None, random_state: int = 0) -> ABResult:
    """A/B comparison of two groups of recipients in recorded feedback.

    Formerly ``compare`` (renamed so it is not taken for :func:`persona.ope.compare`, which compares
    off-policy estimators); ``compare`` stays as a deprecated alias.

    Parameters
    ----------
    by : str
        The column telling the groups apart: ``"group"`` (control vs treatment, the campaign's
        lift), ``"variant"``, ``"channel"``, ...
    a, b : str, optional
        The two values of ``by``; default ``"control"`` / ``"treatment"`` for ``group``, else the
        two values present (sorted).
    campaign : str, optional
        Restrict to one campaign.
    metric : {"conversion", "click", "open", "revenue"}
        Rates per recipient (``click`` / ``open`` per message) with :func:`ab_test`, or mean
        revenue per recipient with :func:`ab_test_means`.
    ci : str, optional
        Interval method (default ``"newcombe"`` for rates, ``"bootstrap"`` for revenue).
    """
    pm = _per_message(events)
    if by not in _KEYS[1:]:
        raise ParameterError(f"compare_groups: by must be one of {list(_KEYS[1:])}, got {by!r}")
    if campaign is not None:
        pm = pm[pm["campaign"] == campaign]
    if a is None and b is None:
        if by == "group":
            a, b = "control", "treatment"
        else:
            vals = sorted(pm[by].unique().tolist())
            if len(vals) != 2:
                raise ParameterError(f"compare_groups: {by!r} has values {vals}; pass a= and b= to pick two")
            a, b = vals
    ga, gb = pm[pm[by] == a], pm[pm[by] == b]
    if len(ga) == 0 or len(gb) == 0:
        raise DataError(f"compare_groups: no recipients with {by} == {a!r} or {b!r}" +
                        (f" in campaign {campaign!r}" if campaign else ""))
    if metric == "revenue":
        return ab_test_means(ga["revenue"].to_numpy(), gb["revenue"].to_numpy(), conf=conf, ci=ci or "bootstrap",
                             random_state=random_state, names=(a, b))
    col = {"conversion": "converted", "click": "clicked", "open": "opened"}.get(metric)
    if col is None:
        raise ParameterError(f"compare_groups: metric must be conversion, click, open or revenue, got {metric!r}")
    if metric != "conversion":  # opens and clicks exist only for messages actually sent
        ga, gb = ga[ga["sent"]], gb[gb["sent"]]
    return ab_test(int(ga[col].sum()), len(ga), int(gb[col].sum()), len(gb), conf=conf, ci=ci or "newcombe",
                   random_state=random_state, names=(a, b))


def compare(*args: Any, **kwargs: Any) -> ABResult:
    """Deprecated alias of :func:`compare_groups` (renamed: :func:`persona.ope.compare` compares
    off-policy estimators, this compares two groups of recipients)."""
    import warnings

    warnings.warn("persona.marketing.compare is renamed compare_groups; compare will be removed",
                  DeprecationWarning, stacklevel=2)
    return compare_groups(*args, **kwargs)
