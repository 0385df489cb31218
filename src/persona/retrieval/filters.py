"""Business rules as item masks: attribute predicates compiled once into one bool per item."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError, ParameterError

if TYPE_CHECKING:  # pandas is imported by the caller who builds the item table
    import pandas as pd

    from ..typing import Ids

__all__ = ["attribute_mask"]


def attribute_mask(items: pd.DataFrame, item_ids: Ids, *, id_column: str = "item_id",
                   **conditions: Any) -> np.ndarray:
    """One bool per id of ``item_ids``: True where the item's attributes meet every condition.

    Parameters
    ----------
    items : pandas.DataFrame
        Item attributes, one row per item, with an ``id_column``.
    item_ids : array of external item ids
        The order of the mask (e.g. ``model.item_map_.ids`` or an index's rows).
    **conditions
        ``column=value`` (equality), ``column=[v1, v2]`` (membership), ``column=(low, high)``
        (inclusive range; ``None`` leaves a side open) or ``column=callable`` (a vectorised
        predicate on the column). Items absent from ``items`` never pass.

    Examples
    --------
    >>> import pandas as pd
    >>> items = pd.DataFrame({"item_id": ["a", "b", "c"], "category": ["hat", "shoe", "shoe"],
    ...                       "price": [10.0, 55.0, 80.0]})
    >>> attribute_mask(items, ["c", "b", "a", "z"], category="shoe", price=(None, 60)).tolist()
    [False, True, False, False]
    """
    if not hasattr(items, "columns") or not hasattr(items, "drop_duplicates"):
        raise DataError(f"items: expected a pandas DataFrame of item attributes, got {type(items).__name__}")
    if item_ids is None or isinstance(item_ids, (str, bytes)) or not hasattr(item_ids, "__len__"):
        raise DataError(f"item_ids: expected a sequence of item ids (e.g. model.item_map_.ids), got "
                        f"{type(item_ids).__name__}")
    if id_column not in items.columns:
        raise DataError(f"items has no column {id_column!r}; columns: {list(items.columns)}")
    frame = items.drop_duplicates(id_column).set_index(id_column)
    keep = np.ones(len(frame), dtype=bool)
    for column, cond in conditions.items():
        if column not in frame.columns:
            raise ParameterError(f"no item attribute {column!r}; available: {list(frame.columns)}")
        values = frame[column]
        if callable(cond):
            hit = np.asarray(cond(values), dtype=bool)
        elif isinstance(cond, tuple):
            if len(cond) != 2:
                raise ParameterError(f"{column}=(low, high) needs two bounds, got {cond!r}")
            low, high = cond
            hit = np.ones(len(values), dtype=bool)
            if low is not None:
                hit &= np.asarray(values >= low, dtype=bool)
            if high is not None:
                hit &= np.asarray(values <= high, dtype=bool)
        elif isinstance(cond, (list, set, frozenset, np.ndarray)):
            hit = np.asarray(values.isin(list(cond)), dtype=bool)
        else:
            hit = np.asarray(values == cond, dtype=bool)
        keep &= hit
    passing = set(frame.index[keep].tolist())
    return np.fromiter((i in passing for i in np.asarray(item_ids).tolist()), dtype=bool, count=len(item_ids))
