"""Times as epoch seconds (UTC), parsed one way for the event store and for marketing."""

from __future__ import annotations

import datetime as _dt
import math
import numbers

from .errors import DataError

_MAX_EPOCH = 253402300800.0  # year 10000, exclusive


def to_epoch(t, what: str = "time", *, error: type = DataError, hint: str = "") -> float:
    """Epoch seconds (UTC) of a datetime (naive = UTC), date, ISO-8601 string, datetime64 or epoch number.

    Bad input raises ``error`` naming ``what``; ``hint`` is appended to the messages about
    invalid datetimes (e.g. what to pass instead).
    """
    if isinstance(t, bool):
        raise error(f"{what}: expected a datetime, ISO-8601 string or epoch seconds, got a bool {t!r}")
    if isinstance(t, numbers.Real):
        v = float(t)
    elif isinstance(t, _dt.datetime):
        try:
            v = (t if t.tzinfo is not None else t.replace(tzinfo=_dt.timezone.utc)).timestamp()
        except (ValueError, OverflowError, OSError):  # pandas.NaT is a datetime without a time
            raise error(f"{what}: expected a valid datetime, got {t!r}{hint}") from None
    elif isinstance(t, _dt.date):
        v = _dt.datetime(t.year, t.month, t.day, tzinfo=_dt.timezone.utc).timestamp()
    elif isinstance(t, str):
        s = t.strip()
        try:
            d = _dt.datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
        except ValueError:
            raise error(f"{what}: cannot parse {t!r} as an ISO-8601 time; pass e.g. '2024-05-01T10:00:00Z', "
                        "a datetime or epoch seconds") from None
        return to_epoch(d, what, error=error, hint=hint)
    elif hasattr(t, "dtype") and getattr(t.dtype, "kind", "") == "M":  # numpy.datetime64
        d = t.astype("datetime64[us]").item()
        if d is None:
            raise error(f"{what}: expected a valid datetime, got {t!r}{hint}")
        return to_epoch(d, what, error=error, hint=hint)
    else:
        raise error(f"{what}: expected a datetime, ISO-8601 string or epoch seconds, got {type(t).__name__} {t!r}")
    if not (math.isfinite(v) and -_MAX_EPOCH < v < _MAX_EPOCH):
        raise error(f"{what}: expected a finite time between years 1 and 9999, got {t!r}")
    return v
