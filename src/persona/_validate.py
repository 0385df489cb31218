"""The one home for argument validation at persona's public boundary.

In the spirit of scikit-learn's ``utils/validation.py``: small functions that check one scalar,
return it in its canonical Python type, and raise a persona error whose message says what was
expected, what came, and what to do. They check scalars only, so they are cheap enough for the
per-request path.

Bounds
------
Every count a caller passes is bounded, because an unbounded count is a way to exhaust memory or
time with one call:

* ``n`` (results per row): at most :data:`MAX_N`. No page shows a million items, and beyond that
  ``recommend_batch`` would allocate ``len(users) * n`` cells for padding alone. Below the bound,
  the work is bounded by the catalogue (asking for more items than exist returns every allowed item).
* ``num_threads``: ``0`` means "all cores"; otherwise at most
  :func:`max_threads` (``max(64, 4 * cores)``). More threads than that only add contention, and an
  OpenMP runtime that cannot create the threads it was asked for aborts the whole process.
* Resampling counts (bootstrap, Monte Carlo) and sizes of allocated state are bounded where
  they are validated, each with its own documented cap.
"""

from __future__ import annotations

import functools
import math
import numbers
import os

import numpy as np

from .errors import DataError, ParameterError

__all__ = ["MAX_N", "MAX_FACTORS", "MAX_ITERATIONS", "check_int", "check_number", "check_bool", "check_n", "check_num_threads",
           "max_threads", "check_frame", "check_keywords", "check_weights"]

#: Largest ``n`` (results per row) any entry point accepts.
MAX_N = 1_000_000
#: Largest embedding width (``factors``, ``hidden``): memory grows as (users + items) x factors,
#: and recommenders stop gaining well before this.
MAX_FACTORS = 4096
#: Largest number of passes over the data (``iterations``, ``epochs``): beyond it a fit never ends
#: in practice; early stopping or fewer passes is what is wanted.
MAX_ITERATIONS = 10_000


def _show(x) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def _bounds(min, max) -> str:
    if min is not None and max is not None:
        return f"between {min} and {max}"
    if min is not None:
        return f">= {min}"
    if max is not None:
        return f"<= {max}"
    return ""


def check_int(x, name: str, *, min: int | None = None, max: int | None = None, allow_none: bool = False,
              expected: str = "", hint: str = "", error: type = ParameterError):
    """``x`` as a Python ``int`` within ``[min, max]``; bools, floats and strings are refused.

    ``expected`` replaces the generated description in the message (``"a positive integer"``), for
    entry points whose documented wording says more than the bounds do.

    >>> check_int(np.int32(3), "k", min=1)
    3
    >>> check_int(True, "k", min=1)
    Traceback (most recent call last):
    ...
    persona.errors.ParameterError: k: expected an integer >= 1, got True
    """
    if type(x) is int and (min is None or x >= min) and (max is None or x <= max):
        return x  # the common case, without the (slow) abstract-class checks below
    if x is None and allow_none:
        return None
    if expected and (isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral)
                     or (min is not None and x < min) or (max is not None and x > max)):
        raise error(f"{name}: expected {expected}, got {_show(x)}" + (f"; {hint}" if hint else ""))
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
        none = " or None" if allow_none else ""
        bounds = f" {_bounds(min, max)}" if min is not None or max is not None else ""
        raise error(f"{name}: expected an integer{bounds}{none}, got {_show(x)}" + (f"; {hint}" if hint else ""))
    v = int(x)
    if (min is not None and v < min) or (max is not None and v > max):
        raise error(f"{name}: expected an integer {_bounds(min, max)}, got {_show(x)}" + (f"; {hint}" if hint else ""))
    return v


def check_number(x, name: str, *, min: float | None = None, max: float | None = None, finite: bool = True,
                 min_open: bool = False, max_open: bool = False, allow_none: bool = False, expected: str = "",
                 hint: str = "", error: type = ParameterError):
    """``x`` as a Python ``float`` within the bounds (``min_open`` / ``max_open``: strictly inside).

    NaN is always refused; infinities unless ``finite=False``. ``expected`` replaces the generated
    description in the message (``"seconds >= 0"``).
    """
    if x is None and allow_none:
        return None
    tail = f"; {hint}" if hint else ""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise error(f"{name}: expected {expected or 'a number'}, got {_show(x)}{tail}")
    try:
        v = float(x)
    except OverflowError:  # an int beyond float range
        v = math.copysign(math.inf, x)
    if math.isnan(v) or (finite and math.isinf(v)):
        raise error(f"{name}: expected {expected or 'a finite number'}, got {_show(x)}{tail}")
    if (min is not None and (v < min or (min_open and v == min))) or \
            (max is not None and (v > max or (max_open and v == max))):
        if expected:
            raise error(f"{name}: expected {expected}, got {_show(x)}{tail}")
        lo = f"> {min}" if min_open else f">= {min}"
        hi = f"< {max}" if max_open else f"<= {max}"
        bound = " and ".join(b for b in (lo if min is not None else "", hi if max is not None else "") if b)
        raise error(f"{name}: expected a number {bound}, got {_show(x)}{tail}")
    return v


def check_bool(x, name: str, *, ints: bool = False, error: type = ParameterError) -> bool:
    """``x`` as a Python ``bool``: ``True``/``False`` (and numpy's); with ``ints``, also 0 and 1.

    Strings ("no" is truthy), arrays (ambiguous) and None are refused.
    """
    if x is True or x is False:
        return x
    if isinstance(x, np.bool_):
        return bool(x)
    if ints and isinstance(x, numbers.Integral) and x in (0, 1):
        return bool(x)
    raise error(f"{name}: expected True or False{' (or 0/1)' if ints else ''}, got {_show(x)}")


def check_n(n, name: str = "n", *, limit: int = MAX_N) -> int:
    """A result count: an integer in ``[1, limit]`` (default :data:`MAX_N`).

    >>> check_n(10)
    10
    >>> check_n(10**12)
    Traceback (most recent call last):
    ...
    persona.errors.ParameterError: n: expected an integer between 1 and 1000000, got 1000000000000; pass a whole number of results up to 1000000 (n above the catalogue size returns every allowed item)
    """
    return check_int(n, name, min=1, max=limit,
                     hint=f"pass a whole number of results up to {limit} (n above the catalogue size returns "
                          "every allowed item)")


@functools.lru_cache(maxsize=1)
def max_threads() -> int:
    """The largest ``num_threads`` accepted: ``max(64, 4 * cores)``."""
    return max(64, 4 * (os.cpu_count() or 1))


def check_num_threads(x, name: str = "num_threads", *, error: type = ParameterError) -> int:
    """A thread count: ``0`` (all cores) or ``1..max_threads()``.

    The cap exists because an OpenMP runtime that cannot create the threads it was asked for
    aborts the whole process (``num_threads=2000`` in a small container: "libgomp: Thread creation
    failed"), which no ``try`` in the host application can catch.
    """
    cap = max_threads()
    return check_int(x, name, min=0, max=cap, error=error,
                     hint=f"use 0 for all cores, or at most {cap} (4 per core); more threads only add contention")


def check_frame(df, name: str = "df", *, error: type = DataError):
    """``df`` as a pandas DataFrame: pandas as is; polars, pyarrow and other tables converted once.

    Accepted: a pandas DataFrame; anything with ``to_pandas()`` returning one (polars and pyarrow
    tables, pyarrow record batches); a table exporting the Arrow C stream (``__arrow_c_stream__``,
    read by pandas or pyarrow); a table speaking the dataframe interchange protocol
    (``__dataframe__``). Anything else (a dict, a list, a polars LazyFrame) is refused with a hint.
    """
    import pandas as pd

    if isinstance(df, pd.DataFrame):
        return df
    kind = type(df).__name__
    hint = ("pass a pandas, polars or pyarrow table (or anything with to_pandas(), the Arrow C stream or "
            "__dataframe__), e.g. pd.DataFrame(...)")
    if kind == "LazyFrame" and callable(getattr(df, "collect", None)):
        raise error(f"{name}: expected a table, got a polars LazyFrame; call .collect() first")
    if isinstance(df, type):  # a class, e.g. pl.DataFrame itself, has the methods but no data
        raise error(f"{name}: expected a pandas DataFrame or a polars / pyarrow table, got the class {df.__name__} itself; {hint}")
    tried = []
    converters = []
    if callable(getattr(df, "to_pandas", None)):
        converters.append(("to_pandas()", lambda: df.to_pandas()))
    if callable(getattr(df, "__arrow_c_stream__", None)):
        if callable(getattr(pd.DataFrame, "from_arrow", None)):
            converters.append(("the Arrow C stream", lambda: pd.DataFrame.from_arrow(df)))
        else:
            def via_pyarrow():
                import pyarrow as pa

                return pa.table(df).to_pandas()
            converters.append(("the Arrow C stream", via_pyarrow))
    if callable(getattr(df, "__dataframe__", None)):
        def via_interchange():
            import warnings

            with warnings.catch_warnings():  # pandas 3 deprecates the protocol; it is our last resort
                warnings.simplefilter("ignore")
                return pd.api.interchange.from_dataframe(df)
        converters.append(("__dataframe__", via_interchange))
    for how, convert in converters:
        try:
            out = convert()
        except Exception as e:  # a missing optional package (pyarrow), a failing export: try the next way
            tried.append(f"{how}: {type(e).__name__}: {str(e)[:120]}")
            continue
        if isinstance(out, pd.DataFrame):
            return out
        tried.append(f"{how} gave a {type(out).__name__}, not a DataFrame")
    why = f" ({'; '.join(tried)})" if tried else ""
    raise error(f"{name}: expected a pandas DataFrame or a polars / pyarrow table, got {kind}{why}; {hint}")


def check_weights(weights, what: str, *, do: str = "drop dislikes or map them to 0 before fitting") -> None:
    """DataError unless every interaction weight is finite and non-negative.

    ``weights`` is an array of weights (a CSR matrix's ``.data``, a history's weights); ``what``
    names whose they are (``"BPR"``, ``"recalculate_user"``) and ``do`` what to do about negative
    ones. Vectorised: one pass over the array.

    >>> check_weights(np.array([1.0, 0.0, 2.5]), "ALS")
    >>> check_weights(np.array([1.0, -2.0]), "EASE")
    Traceback (most recent call last):
    persona.errors.DataError: EASE: expected non-negative interaction weights, got 1 negative weight(s), \
e.g. [-2.0]; drop dislikes or map them to 0 before fitting
    """
    data = np.asarray(weights)
    bad = ~np.isfinite(data)
    if bad.any():
        raise DataError(f"{what}: expected finite interaction weights, got {int(bad.sum())} non-finite (NaN or "
                        f"infinite) weight(s), e.g. {data[bad][:3].tolist()}; fix or drop those events before fitting")
    neg = data < 0
    if neg.any():
        raise DataError(f"{what}: expected non-negative interaction weights, got {int(neg.sum())} negative "
                        f"weight(s), e.g. {data[neg][:3].tolist()}; {do}")


def check_keywords(func):
    """Decorate ``func`` so that a misspelt keyword argument is a :class:`ParameterError` naming the
    nearest valid one, instead of Python's TypeError; the signature stays visible (``functools.wraps``).

    >>> @check_keywords
    ... def f(x, *, weight=None):
    ...     return x
    >>> f(1, wieght="w")
    Traceback (most recent call last):
    ...
    persona.errors.ParameterError: f() has no parameter 'wieght' (did you mean 'weight'?); its keyword parameters are weight, x
    """
    import inspect

    params = inspect.signature(func).parameters
    names = [p.name for p in params.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    valid = set(names)
    qual = func.__qualname__

    @functools.wraps(func)
    def checked(*args, **kwargs):
        unknown = [k for k in kwargs if k not in valid]
        if unknown:
            raise ParameterError(unknown_keyword_message(f"{qual}()", unknown, names))
        return func(*args, **kwargs)

    return checked


def unknown_keyword_message(owner: str, unknown, valid) -> str:
    """``"f() has no parameter 'wieght' (did you mean 'weight'?); its keyword parameters are ..."``."""
    import difflib

    parts = []
    for name in unknown:
        close = difflib.get_close_matches(str(name), list(valid), n=1)
        parts.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return f"{owner} has no parameter {', '.join(parts)}; its keyword parameters are {', '.join(sorted(valid))}"
