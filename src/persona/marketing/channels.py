"""Channels, consent, quiet hours, frequency caps and the record of what was sent.

* :class:`Channel` -- e-mail, SMS, push, web pop-up: a cost per message, quiet hours in the
  user's local time, optional caps of its own.
* :class:`Contacts` -- per user: which channels they consented to, their time zone and segment.
  Consent is opt-in: a user is messaged on a channel only when it is granted.
* :class:`FrequencyCap` -- how many messages one user may get across all campaigns and channels,
  per rolling day and per rolling week.
* :class:`ContactHistory` -- the messages already sent, which the caps and budgets count.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from .._validate import check_frame
from ..errors import DataError, ParameterError
from ..typing import ArrayLike, FrameLike, Ids, TimePoint, UserId
from .._validate import check_int, check_number
from ._util import epoch, name_arg
from .plan_result import Message

if TYPE_CHECKING:  # pandas only for from_events' annotation
    import pandas as pd

__all__ = ["Channel", "Contacts", "FrequencyCap", "ContactHistory", "default_channels", "CHANNEL_NAMES"]

CHANNEL_NAMES = ("email", "sms", "push", "web")


def _minute_of_day(value, what: str) -> int:
    if isinstance(value, bool):
        raise ParameterError(f"{what}: expected 'HH:MM' or an hour, got {value!r}")
    if isinstance(value, (int, np.integer)) and 0 <= value <= 24:
        return int(value) * 60 % 1440
    if isinstance(value, _dt.time):
        return value.hour * 60 + value.minute
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", value)
        if m and int(m[1]) <= 24 and int(m[2]) < 60:
            return (int(m[1]) * 60 + int(m[2])) % 1440
    raise ParameterError(f"{what}: expected 'HH:MM' or an hour 0-24, got {value!r}")


@dataclass(frozen=True)
class Channel:
    """A way to reach a user.

    Parameters
    ----------
    name : str
        ``"email"``, ``"sms"``, ``"push"``, ``"web"`` (pop-up) or any name of your own.
    cost : float
        What one message costs the shop.
    quiet_hours : (start, end), optional
        Local times (``"21:00"`` or an hour) between which the user is never messaged on this
        channel; may wrap midnight (``("21:00", "08:00")``). None: any time.
    per_day, per_week : int, optional
        Caps of this channel alone, per user (rolling 24 h / 7 days), on top of the global
        :class:`FrequencyCap`.
    effectiveness : float
        How much more (or less) likely a message on this channel converts than the propensity
        model's baseline: the planner uses ``min(1, propensity * effectiveness)``.

    Examples
    --------
    >>> sms = Channel("sms", cost=0.05, quiet_hours=("21:00", "09:00"))
    >>> sms.is_quiet(22 * 60), sms.is_quiet(12 * 60)
    (True, False)
    """

    name: str
    cost: float = 0.0
    quiet_hours: tuple | None = None
    per_day: int | None = None
    per_week: int | None = None
    effectiveness: float = 1.0

    def __post_init__(self):
        name_arg(self.name, "Channel name")
        object.__setattr__(self, "cost", check_number(self.cost, f"Channel {self.name!r} cost", min=0.0))
        if self.quiet_hours is not None:
            if not isinstance(self.quiet_hours, (tuple, list)) or len(self.quiet_hours) != 2:
                raise ParameterError(f"Channel {self.name!r} quiet_hours: expected (start, end), got {self.quiet_hours!r}")
            a = _minute_of_day(self.quiet_hours[0], f"Channel {self.name!r} quiet_hours start")
            b = _minute_of_day(self.quiet_hours[1], f"Channel {self.name!r} quiet_hours end")
            if a == b:
                raise ParameterError(f"Channel {self.name!r} quiet_hours: start and end are equal; "
                                     "use None for no quiet hours")
            object.__setattr__(self, "quiet_hours", (a, b))
        object.__setattr__(self, "per_day",
                           check_int(self.per_day, f"Channel {self.name!r} per_day", min=0, allow_none=True))
        object.__setattr__(self, "per_week",
                           check_int(self.per_week, f"Channel {self.name!r} per_week", min=0, allow_none=True))
        object.__setattr__(self, "effectiveness",
                           check_number(self.effectiveness, f"Channel {self.name!r} effectiveness", min=0.0))

    def is_quiet(self, minute_of_day: int | ArrayLike) -> bool | np.ndarray:
        """True where the local ``minute_of_day`` (0-1439, scalar or array) is inside the quiet hours."""
        m = np.asarray(minute_of_day)
        if self.quiet_hours is None:
            out = np.zeros(m.shape, dtype=bool)
        else:
            a, b = self.quiet_hours
            out = (m >= a) & (m < b) if a < b else (m >= a) | (m < b)
        return bool(out) if out.ndim == 0 else out

    @property
    def has_caps(self) -> bool:
        return self.per_day is not None or self.per_week is not None


def default_channels() -> dict:
    """E-mail, SMS, push and web pop-up with typical costs and quiet hours (adjust to your shop)."""
    return {
        "email": Channel("email", cost=0.002),
        "sms": Channel("sms", cost=0.05, quiet_hours=("21:00", "09:00"), per_week=1),
        "push": Channel("push", cost=0.0005, quiet_hours=("22:00", "08:00")),
        "web": Channel("web", cost=0.0),
    }


@dataclass(frozen=True)
class FrequencyCap:
    """Most messages per user across all campaigns and channels: per rolling 24 h and 7 days."""

    per_day: int | None = 1
    per_week: int | None = 3

    def __post_init__(self):
        object.__setattr__(self, "per_day", check_int(self.per_day, "FrequencyCap per_day", min=0, allow_none=True))
        object.__setattr__(self, "per_week", check_int(self.per_week, "FrequencyCap per_week", min=0, allow_none=True))


def _tzinfo(tz, what="timezone"):
    """A tzinfo from an IANA name ('Europe/Berlin'), 'UTC', '+02:00' or hours east of UTC."""
    if isinstance(tz, bool):
        raise ParameterError(f"{what}: expected an IANA time zone name or an offset, got {tz!r}")
    if isinstance(tz, (int, float, np.integer, np.floating)):
        if not -14 <= float(tz) <= 14:
            raise ParameterError(f"{what}: an offset must lie in [-14, 14] hours, got {tz!r}")
        return _dt.timezone(_dt.timedelta(hours=float(tz)))
    if isinstance(tz, _dt.tzinfo):
        return tz
    if isinstance(tz, str):
        m = re.fullmatch(r"\s*(?:UTC|GMT)?\s*([+-])(\d{1,2}):?(\d{2})?\s*", tz)
        if m:
            minutes = int(m[2]) * 60 + int(m[3] or 0)
            return _dt.timezone((-1 if m[1] == "-" else 1) * _dt.timedelta(minutes=minutes))
        import zoneinfo

        try:
            return zoneinfo.ZoneInfo(tz.strip())
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    raise ParameterError(f"{what}: unknown time zone {tz!r}; use an IANA name such as 'Europe/Berlin' or '+02:00'")


def _ids(values, what):
    from ..data.idmap import normalize_ids

    return normalize_ids(values, what=what)


class Contacts:
    """Per-user contact facts: consent per channel, time zone, segment.

    Parameters
    ----------
    users : sequence of user ids
    consent : mapping of channel name -> bool array (one per user), optional
        Opt-in: a channel that is absent, or ``False`` for a user, is never used for that user.
    timezone : str, or array of str / offsets (one per user), default "UTC"
        IANA names (``"Europe/Berlin"``), ``"+02:00"`` or hours east of UTC; quiet hours are
        applied in this local time.
    segment : array of str (one per user), optional
        For ``AudienceRule(segments=...)`` and metrics by segment.

    Examples
    --------
    >>> c = Contacts(["ann", "bob"], consent={"email": [True, False]}, timezone=["Europe/Paris", "+01:00"])
    >>> c.allowed("email").tolist(), c.allowed("sms").tolist()
    ([True, False], [False, False])
    >>> c.revoke("ann", "email"); c.allowed("email").tolist()
    [False, False]
    """

    def __init__(self, users: Ids, consent: Mapping[str, ArrayLike] | None = None,
                 timezone: str | float | _dt.tzinfo | Sequence[str | float] = "UTC",
                 segment: ArrayLike | None = None) -> None:
        from ..data.idmap import IdMap

        ids = _ids(users, "Contacts users")
        self.user_map = IdMap(ids)
        n = len(ids)
        self._consent: dict[str, np.ndarray] = {}
        for ch, vals in (consent or {}).items():
            name_arg(ch, "Contacts consent channel")
            arr = np.asarray(vals)
            if arr.shape != (n,) or arr.dtype.kind not in "bi" or (arr.dtype.kind == "i" and not np.isin(arr, (0, 1)).all()):
                raise DataError(f"Contacts consent[{ch!r}]: expected {n} booleans (one per user), got "
                                f"shape {arr.shape} dtype {arr.dtype}")
            self._consent[ch] = arr.astype(bool).copy()
        if isinstance(timezone, (str, int, float, _dt.tzinfo)) and not isinstance(timezone, bool):
            tz = np.full(n, 0, dtype=np.int64)
            self._zones = [_tzinfo(timezone)]
            self._zone_names = [str(timezone)]
        else:
            vals = np.asarray(timezone, dtype=object)
            if vals.shape != (n,):
                raise DataError(f"Contacts timezone: expected one per user ({n}), got shape {vals.shape}")
            names, tz = np.unique(vals.astype(str), return_inverse=True)
            self._zones = [_tzinfo(v, f"Contacts timezone {v!r}") for v in names.tolist()]
            self._zone_names = names.tolist()
        self._tz = tz.reshape(-1)
        if segment is not None:
            seg = np.asarray(segment, dtype=object)
            if seg.shape != (n,):
                raise DataError(f"Contacts segment: expected one per user ({n}), got shape {seg.shape}")
            self.segment = seg.astype(str)
        else:
            self.segment = np.full(n, "", dtype=object).astype(str)

    @classmethod
    def from_frame(cls, df: FrameLike, user: str = "user_id",
                   consent: Mapping[str, str] | Iterable[str] | None = None, timezone: str | float | None = None,
                   segment: str | None = None) -> Contacts:
        """From a DataFrame: ``consent`` maps channel -> bool column (or is a list of bool columns
        named after the channels); ``timezone`` / ``segment`` name columns (``timezone`` may also
        be one zone for everybody). ``df`` may be a pandas, polars or pyarrow table."""
        df = check_frame(df, "Contacts.from_frame: df")
        for col in [user] + ([segment] if segment else []):
            if col not in df.columns:
                raise DataError(f"Contacts.from_frame: no column {col!r}; columns are {list(df.columns)}")
        if consent is None:
            consent = {}
        elif not isinstance(consent, Mapping):
            consent = {c: c for c in consent}
        cons = {}
        for ch, col in consent.items():
            if col not in df.columns:
                raise DataError(f"Contacts.from_frame: no consent column {col!r}; columns are {list(df.columns)}")
            cons[ch] = df[col].to_numpy(dtype=bool)
        tz = "UTC"
        if timezone is not None:
            tz = df[timezone].to_numpy(dtype=object) if timezone in df.columns else timezone
        return cls(df[user].to_numpy(), consent=cons, timezone=tz,
                   segment=df[segment].to_numpy(dtype=object) if segment else None)

    # ------------------------------------------------------------------ facts
    @property
    def user_ids(self) -> np.ndarray:
        return self.user_map.ids

    @property
    def n_users(self) -> int:
        return len(self.user_map)

    def __len__(self) -> int:
        return self.n_users

    def __repr__(self) -> str:
        granted = ", ".join(f"{ch} {int(v.sum())}" for ch, v in self._consent.items())
        return f"Contacts({self.n_users} users; consent: {granted or 'none'}; {len(self._zones)} time zones)"

    @property
    def channels(self) -> tuple:
        """Channels with a consent column."""
        return tuple(self._consent)

    def index(self, users: Ids) -> np.ndarray:
        """Row of each user id; ``-1`` for unknown users."""
        return self.user_map.lookup(_ids(users, "users"))

    def allowed(self, channel: str, rows: ArrayLike | None = None) -> np.ndarray:
        """Consent to ``channel`` per user (a copy; all False when the channel has no consent data)."""
        arr = self._consent.get(channel)
        if arr is None:
            arr = np.zeros(self.n_users, dtype=bool)
        return arr.copy() if rows is None else arr[np.asarray(rows, dtype=np.int64)]

    def _set(self, user, channel, value: bool) -> None:
        row = self.index([user])[0]
        if row < 0:
            raise DataError(f"Contacts: unknown user {user!r}")
        if channel not in self._consent:
            self._consent[channel] = np.zeros(self.n_users, dtype=bool)
        self._consent[channel][row] = value

    def grant(self, user: UserId, channel: str) -> None:
        """Record that ``user`` opted in to ``channel``."""
        self._set(user, name_arg(channel, "channel"), True)

    def revoke(self, user: UserId, channel: str) -> None:
        """Record that ``user`` opted out of ``channel``; no plan made afterwards uses it."""
        self._set(user, name_arg(channel, "channel"), False)

    def timezone(self, rows: ArrayLike) -> list[str]:
        return [self._zone_names[z] for z in self._tz[np.asarray(rows, dtype=np.int64)]]

    def local_minute(self, now: TimePoint, rows: ArrayLike | None = None) -> np.ndarray:
        """Local minute of the day (0-1439) of each user at ``now``."""
        t = epoch(now, "now")
        utc = _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc)
        per_zone = np.array([(lambda d: d.hour * 60 + d.minute)(utc.astimezone(z)) for z in self._zones],
                            dtype=np.int64)
        tz = self._tz if rows is None else self._tz[np.asarray(rows, dtype=np.int64)]
        return per_zone[tz]


class ContactHistory:
    """The messages already sent: user, channel, campaign, time and whether a coupon went out.

    Frequency caps count it over rolling windows before ``now``; budgets count it per campaign.
    :class:`~persona.marketing.FeedbackRecorder` appends to it on every ``sent``; it can be rebuilt
    from the event store with :meth:`from_events`.
    """

    def __init__(self) -> None:
        self._user: list = []
        self._channel: list = []
        self._campaign: list = []
        self._time: list = []
        self._coupon: list = []

    def __len__(self) -> int:
        return len(self._user)

    def __repr__(self) -> str:
        return f"ContactHistory({len(self)} messages)"

    def record(self, user: UserId, channel: str, campaign: str, time: TimePoint, coupon: bool = False) -> None:
        self._user.append(user.item() if hasattr(user, "item") else user)
        self._channel.append(str(channel))
        self._campaign.append(str(campaign))
        self._time.append(epoch(time, "ContactHistory time"))
        self._coupon.append(bool(coupon))

    def record_message(self, message: Message, time: TimePoint | None = None) -> None:
        """Record a planned :class:`~persona.marketing.Message` as sent (at ``time``, default its ``send_at``)."""
        self.record(message.user, message.channel, message.campaign,
                    message.send_at if time is None else time, coupon=bool(message.coupon))

    @classmethod
    def from_events(cls, frame: pd.DataFrame) -> ContactHistory:
        """From ``EventStore.events(event_types=["send"])`` (properties carry campaign and channel)."""
        h = cls()
        if len(frame) == 0:
            return h
        sends = frame[frame["event"] == "send"]
        for user, t, props in zip(sends["user"].tolist(), sends["time"].tolist(), sends["properties"].tolist()):
            props = props or {}
            if "channel" not in props or "campaign" not in props:
                raise DataError("ContactHistory.from_events: a send event lacks 'channel' / 'campaign' in its "
                                "properties; record sends with FeedbackRecorder.sent")
            h.record(user, props["channel"], props["campaign"], t, coupon=bool(props.get("coupon")))
        return h

    # ------------------------------------------------------------------ counts
    def _arrays(self):
        t = np.asarray(self._time, dtype=np.float64)
        return t, np.asarray(self._channel, dtype=object), np.asarray(self._campaign, dtype=object)

    def counts(self, contacts: Contacts, now: TimePoint, window: float, channel: str | None = None) -> np.ndarray:
        """Messages per contact (rows of ``contacts``) sent in ``(now - window, now]``."""
        out = np.zeros(contacts.n_users, dtype=np.int64)
        if not self._user:
            return out
        t_now = epoch(now, "now")
        t, ch, _ = self._arrays()
        keep = (t > t_now - window) & (t <= t_now)
        if channel is not None:
            keep &= ch == channel
        if not keep.any():
            return out
        users = np.asarray(self._user, dtype=object)[keep]
        try:
            rows = contacts.index(users.tolist())
        except DataError:
            rows = np.array([contacts.index([u])[0] for u in users.tolist()], dtype=np.int64)
        rows = rows[rows >= 0]
        np.add.at(out, rows, 1)
        return out

    def campaign_totals(self, campaign: str, until: TimePoint | None = None) -> tuple[int, int]:
        """(messages, coupons) of ``campaign`` sent so far (up to ``until``, inclusive)."""
        if not self._user:
            return 0, 0
        t, _, camp = self._arrays()
        keep = camp == campaign
        if until is not None:
            keep &= t <= epoch(until, "until")
        return int(keep.sum()), int(np.asarray(self._coupon, dtype=bool)[keep].sum())
