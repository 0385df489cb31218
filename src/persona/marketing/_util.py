"""Small helpers shared by the campaign modules: times, names and id tuples (numbers are checked by persona._validate)."""

from __future__ import annotations

import datetime as _dt
import numbers

from .._time import to_epoch
from ..errors import ParameterError

DAY = 86400.0
WEEK = 7 * DAY


def epoch(t, what: str = "time") -> float:
    """Epoch seconds (UTC) of a datetime (naive = UTC), date, ISO-8601 string or epoch number."""
    return to_epoch(t, what, error=ParameterError)


def utc(t: float) -> _dt.datetime:
    """The aware UTC datetime of epoch seconds."""
    return _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc)


def name_arg(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ParameterError(f"{what}: expected a non-empty string, got {value!r}")
    return value


def str_tuple(values, what: str) -> tuple:
    """A tuple of ids / names from one value or a sequence (a lone string is one value)."""
    if values is None:
        return ()
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        values = [values]
    out = tuple(v.item() if hasattr(v, "item") else v for v in values)
    for v in out:
        if isinstance(v, bool) or not isinstance(v, (str, numbers.Integral)):
            raise ParameterError(f"{what}: expected str or int ids, got {type(v).__name__} {v!r}")
    return out
