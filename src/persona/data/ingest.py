"""Turning raw event logs (frames, files, records, sequence files) into :class:`Interactions`.

Every constructor ends in one cleaning pipeline (:mod:`persona.data._pipeline`), vectorised with
numpy and pandas:

1. check that the named columns exist;
2. find bad rows -- null ids, missing or unparseable timestamps, null or unknown event types,
   null / non-numeric / non-finite / negative values and weights. With ``strict=True`` (the
   default) the first kind of bad row raises :class:`~persona.errors.DataError` naming the column,
   the first rows and their values, and what to do; with ``strict=False`` the rows are dropped,
   counted per reason in ``interactions.report`` and a warning says so;
3. weight every event (event-type weights, values, an explicit weight column);
4. drop exact duplicate events (``drop_duplicates=True``);
5. apply the activity filters (``min_user_events``, ``min_item_events``, ``k_core``);
6. apply time decay (``half_life``);
7. encode ids into :class:`~persona.data.idmap.IdMap` objects (optionally growing existing maps,
   which keeps new data aligned with an old model).

Nothing is dropped silently: each dropped row is counted under one reason in the
:class:`~persona.data.interactions.CleaningReport`.

This module documents the options and builds the :class:`Interactions`; the pipeline returns the
arrays and never imports this module or :mod:`persona.data.interactions`, whose ``from_*``
constructors call it too.
"""

from __future__ import annotations

from typing import Iterable

from .._validate import check_keywords
from . import _pipeline
from ._events import _refuse_time_options
from ._pipeline import DEFAULT_WEIGHTS, options as _options
from .idmap import IdMap
from .interactions import Interactions

__all__ = [
    "DEFAULT_WEIGHTS",
    "from_frame",
    "from_csv",
    "from_parquet",
    "from_records",
    "from_sequences",
]


# ---------------------------------------------------------------------------------------- public API
@check_keywords
def from_frame(df, user, item, time=None, event=None, value=None, weights=None, *, weight=None,
               default_weight=None, value_as_weight=None, allow_negative: bool = False, time_unit: str = "s",
               drop_duplicates: bool = True, aggregate: str = "sum", half_life=None, now=None,
               min_user_events: int = 0, min_item_events: int = 0, k_core=None, strict: bool = True,
               user_map: IdMap | None = None, item_map: IdMap | None = None) -> Interactions:
    """Build :class:`Interactions` from a table of events (pandas, polars, pyarrow, ...).

    Parameters
    ----------
    df : pandas.DataFrame, polars.DataFrame, pyarrow.Table or another table
        One row per event. A table that is not pandas is converted once: through its
        ``to_pandas()`` (polars, pyarrow), the Arrow C stream (``__arrow_c_stream__``) or the
        dataframe interchange protocol (``__dataframe__``). A polars LazyFrame needs ``.collect()``.
    user, item : str
        Columns of external user and item ids (strings or integers, not a mix).
    time : str, optional
        Column of timestamps: datetime64 (naive means UTC), ISO-8601 strings or epoch numbers
        (see ``time_unit``). Stored as float64 epoch seconds (UTC).
    event : str, optional
        Column of event types: the built-in ``view``, ``click``, ``cart``, ``purchase``,
        ``search``, or names given in ``weights``.
    value : str, optional
        Numeric column (rating, quantity, price) stored in ``values``.
    weights : dict of str -> float, optional
        Weight of each event type, merged over :data:`DEFAULT_WEIGHTS`: ``view`` 1, ``click`` 2,
        ``cart`` 4, ``purchase`` 8, ``search`` 0.5. Custom event names are allowed once they have a
        weight here. Needs ``event``.
    weight : str, optional
        Keyword-only, like all that follow. Column of explicit per-event weights. When given it is
        the base weight and event-type weights are not applied (every event type is accepted and
        kept as a label).
    default_weight : float, optional
        Weight of event types that are neither built in nor in ``weights``. Without it, unknown
        event types are bad rows.
    value_as_weight : bool, optional
        ``True``: multiply the weight by ``value``. ``False``: only store the value. The default
        ``None`` uses the value as the weight when there is no ``event`` (and no ``weight``)
        column -- explicit ratings -- and only stores it otherwise.
    allow_negative : bool, default False
        Whether negative values and weights are valid (e.g. dislikes); when False they are bad rows.
    time_unit : {"s", "ms", "us", "ns"}, default "s"
        Unit of numeric (epoch) timestamps. Datetime columns and ISO strings need no unit.
    drop_duplicates : bool, default True
        Drop exact duplicate events (same user, item, time, event, value and weight); they are
        counted in the report as ``"duplicate event"``.
    aggregate : {"sum", "max", "last", "count"}, default "sum"
        How repeated user-item events become one matrix entry.
    half_life : float, optional
        Time decay in days: ``weight *= 0.5 ** ((now - t) / half_life)``. Events after ``now``
        are not boosted (their age counts as 0). Needs ``time``.
    now : datetime, str or float, optional
        Reference time of the decay (naive means UTC; a number is epoch seconds); default the
        latest timestamp in the data.
    min_user_events, min_item_events : int, default 0
        Drop users, then items, with fewer events (one pass each, after de-duplication).
    k_core : int, optional
        Repeatedly drop users and items with fewer than ``k_core`` events until every remaining
        user and item has at least ``k_core``.
    strict : bool, default True
        Raise :class:`~persona.errors.DataError` on bad rows (null ids, missing or unparseable
        timestamps, null or unknown event types, null / non-numeric / non-finite / negative values
        or weights), or, when False, drop them, count them per reason in ``report`` and warn.
    user_map, item_map : IdMap, optional
        Existing maps to grow with the new ids; known ids keep their indices, so new data lines up
        with a model trained on the old maps.

    Returns
    -------
    Interactions
        Its ``report`` (a :class:`~persona.data.interactions.CleaningReport`) counts the rows read,
        kept and dropped per reason.

    Raises
    ------
    DataError
        Missing columns (the message lists the available ones), empty data, mixed id types, bad
        options, and bad rows when ``strict=True``.
    ParameterError
        An unknown keyword (the message names the nearest valid one: ``min_user_event`` ->
        ``min_user_events``).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"u": ["a", "a", "b"], "i": [1, 2, 1],
    ...                    "e": ["view", "purchase", "view"]})
    >>> inter = from_frame(df, user="u", item="i", event="e")
    >>> inter.matrix.toarray().tolist()
    [[1.0, 8.0], [1.0, 0.0]]
    """
    return Interactions(**_pipeline.clean(df, user, item, time, event, value, weights, **_options(locals())))


@check_keywords
def from_csv(path, user, item, time=None, event=None, value=None, weights=None, *, read_options=None,
             weight=None, default_weight=None, value_as_weight=None, allow_negative: bool = False,
             time_unit: str = "s", drop_duplicates: bool = True, aggregate: str = "sum", half_life=None, now=None,
             min_user_events: int = 0, min_item_events: int = 0, k_core=None, strict: bool = True,
             user_map: IdMap | None = None, item_map: IdMap | None = None) -> Interactions:
    """Read a CSV file of events with :func:`pandas.read_csv`, then clean it as :func:`from_frame`.

    Parameters
    ----------
    path : str, path or file-like
    user, item, time, event, value, weights
        As in :func:`from_frame`.
    read_options : dict, optional
        Extra arguments of :func:`pandas.read_csv`. Ids that look like numbers are read as
        numbers (zero-padded codes lose their zeros): pass ``{"dtype": {"item_id": str}}`` to keep
        them as strings.
    weight, default_weight, value_as_weight, allow_negative, time_unit, drop_duplicates, aggregate, \
half_life, now, min_user_events, min_item_events, k_core, strict, user_map, item_map
        Cleaning options (keyword-only), as in :func:`from_frame`.

    Examples
    --------
    >>> import io
    >>> inter = from_csv(io.StringIO("user_id,item_id\\nu1,a\\nu2,a\\n"), "user_id", "item_id")
    >>> inter.n_users, inter.n_items
    (2, 1)
    """
    return Interactions(**_pipeline.read_csv(path, user, item, time, event, value, weights, read_options,
                                             _options(locals())))


@check_keywords
def from_parquet(path, user, item, time=None, event=None, value=None, weights=None, *, weight=None,
                 default_weight=None, value_as_weight=None, allow_negative: bool = False, time_unit: str = "s",
                 drop_duplicates: bool = True, aggregate: str = "sum", half_life=None, now=None,
                 min_user_events: int = 0, min_item_events: int = 0, k_core=None, strict: bool = True,
                 user_map: IdMap | None = None, item_map: IdMap | None = None) -> Interactions:
    """Read a Parquet file (or dataset directory) of events, then clean it as :func:`from_frame`.

    Needs pyarrow (``pip install pyarrow``). Only the named columns are read.

    Parameters
    ----------
    path : str or path
    user, item, time, event, value, weights
        As in :func:`from_frame`; the cleaning options that follow are keyword-only, as there.
    """
    return Interactions(**_pipeline.read_parquet(path, user, item, time, event, value, weights, _options(locals())))


@check_keywords
def from_records(records: Iterable, user="user", item="item", time=None, event=None, value=None, weights=None, *,
                 weight=None, default_weight=None, value_as_weight=None, allow_negative: bool = False,
                 time_unit: str = "s", drop_duplicates: bool = True, aggregate: str = "sum", half_life=None,
                 now=None, min_user_events: int = 0, min_item_events: int = 0, k_core=None, strict: bool = True,
                 user_map: IdMap | None = None, item_map: IdMap | None = None) -> Interactions:
    """Build :class:`Interactions` from an iterable of dicts or of tuples.

    Parameters
    ----------
    records : iterable
        Either dicts (keys named by ``user``, ``item``, ``time``, ``event``, ``value``; a missing
        key is a null) or tuples in the fixed order ``(user, item[, time[, event[, value]]])``, all
        of one length. For tuples the column-name arguments are ignored: the position decides,
        and a position that is ``None`` in every tuple is treated as absent.
    user, item, time, event, value, weights
        As in :func:`from_frame`; the cleaning options that follow are keyword-only, as there.

    Examples
    --------
    >>> inter = from_records([("u1", "a", 10, "view"), ("u1", "b", 20, "cart")])
    >>> inter.matrix.toarray().tolist()
    [[1.0, 4.0]]
    >>> from_records([{"user": 1, "item": 7}]).item_ids.tolist()
    [7]
    """
    return Interactions(**_pipeline.read_records(records, user, item, time, event, value, weights,
                                                 _options(locals())))


@_refuse_time_options
@check_keywords
def from_sequences(path_or_lines, *, user_map: IdMap | None = None, item_map: IdMap | None = None,
                   ids: str = "int", drop_duplicates: bool = False, aggregate: str = "sum",
                   allow_negative: bool = False, min_user_events: int = 0, min_item_events: int = 0, k_core=None,
                   strict: bool = True) -> Interactions:
    """Read the one-line-per-user format ``user item item ...`` (items in time order).

    This is the format of the preprocessed Amazon Beauty / LastFM files. There are no timestamps
    (``timestamps`` is None); the order within a line is kept as each user's event order.

    Parameters
    ----------
    path_or_lines : str, path or iterable of str
        A file path, or the lines themselves.
    user_map, item_map : IdMap, optional
        Existing maps to grow with the new ids; known ids keep their indices.
    ids : {"int", "str"}, default "int"
        Type of the ids in the file.
    drop_duplicates : bool, default False
        Without timestamps a repeated item on one line is a repeat event, not a duplicate, so
        nothing is dropped by default.
    aggregate, allow_negative, min_user_events, min_item_events, k_core, strict
        Cleaning options of :func:`from_frame`. Options about times, event types and values
        (``time``, ``half_life``...) are a DataError: the format has none.

    Examples
    --------
    >>> inter = from_sequences(["1 10 11 12", "", "2 11 10"])
    >>> [inter.item_ids[inter.sequence(u)].tolist() for u in range(inter.n_users)]
    [[10, 11, 12], [11, 10]]
    """
    return Interactions(**_pipeline.read_sequences(
        path_or_lines, ids, user_map=user_map, item_map=item_map, drop_duplicates=drop_duplicates,
        aggregate=aggregate, allow_negative=allow_negative, min_user_events=min_user_events,
        min_item_events=min_item_events, k_core=k_core, strict=strict))
