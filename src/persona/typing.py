"""Type aliases of persona's public API, for annotations in users' code and in persona's own.

>>> import numpy as np
>>> from persona.typing import Float32Array, Ids, UserId
>>> def top_users(model, users: Ids, n: int = 10) -> tuple[np.ndarray, Float32Array]:
...     return model.recommend_batch(users, n=n)

External ids are what a shop uses (``"sku-17"``, ``42``); persona maps them to row / column indices
internally. Arrays of external ids keep their dtype (``str`` or integer), hence plain ``np.ndarray``.
Importing this module imports numpy only.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, Union

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # the protocols' members only; persona.typing imports numpy alone
    import scipy.sparse as sp

    from .data.idmap import IdMap

__all__ = ["UserId", "ItemId", "Ids", "IdFilter", "Float32Array", "IntArray", "BoolArray", "ArrayLike",
           "PathLike", "FrameLike", "TimePoint", "RankingModel", "RatingModel"]

#: One external user id.
UserId = Union[str, int]
#: One external item id.
ItemId = Union[str, int]
#: Several external ids: a sequence or a 1-D array.
Ids = Union[Sequence[Union[str, int]], np.ndarray]
#: An allow- or deny-list of external item ids: one list shared by every row, or one list per row.
IdFilter = Union[Ids, Sequence[Ids]]
#: Scores and embeddings.
Float32Array = npt.NDArray[np.float32]
#: Row / column indices.
IntArray = npt.NDArray[np.int64]
#: Masks (``True`` keeps the row or item).
BoolArray = npt.NDArray[np.bool_]
#: Anything ``np.asarray`` accepts.
ArrayLike = npt.ArrayLike
#: A file or directory path.
PathLike = Union[str, os.PathLike]
#: A table: a pandas or polars DataFrame, or a pyarrow Table. ``Any`` to a type checker, because polars
#: and pyarrow are optional and ``import persona`` imports none of the three.
FrameLike = Any
#: A point in time: a datetime (naive = UTC; a pandas Timestamp is one) or date, an ISO-8601 string, a numpy
#: datetime64, or epoch seconds.
TimePoint = Union[datetime.datetime, datetime.date, str, np.datetime64, float, int]


class RankingModel(Protocol):
    """What :func:`persona.evaluate` needs of a model: every persona Recommender, or your own class.

    Fitted id maps, the training matrix (users x items) and top-``n`` item indices per user index.
    """

    user_map_: IdMap
    item_map_: IdMap
    user_items_: sp.csr_matrix

    def recommend_indices(self, user_indices: np.ndarray, n: int, *, filter_seen: bool = True,
                          exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]: ...


class RatingModel(Protocol):
    """What :func:`persona.evaluation.rating_metrics` needs: ``predict(users, items)`` over external ids
    (e.g. :class:`persona.MF`)."""

    def predict(self, users: Any, items: Any) -> np.ndarray: ...
