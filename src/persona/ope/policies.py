"""Action-probability arrays of simple policies, in the shape :func:`persona.ope.estimate` takes."""

from __future__ import annotations

import numpy as np

from .._validate import check_int, check_number
from ..errors import DataError, ParameterError
from ..typing import ArrayLike

# Largest policy table uniform_policy builds (2 GiB of float64).
_MAX_CELLS = 1 << 28

__all__ = ["uniform_policy", "greedy_policy", "softmax_policy"]


def uniform_policy(n_rounds: int, n_actions: int, n_positions: int | None = None) -> np.ndarray:
    """Every action equally likely: ``(n_rounds, n_actions)``, or ``(..., n_positions)`` when given.

    >>> uniform_policy(2, 4).tolist()
    [[0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]]
    >>> uniform_policy(5, 34, 3).shape
    (5, 34, 3)
    """
    shape = (check_int(n_rounds, "n_rounds", min=0, expected="an integer >= 0"),
             check_int(n_actions, "n_actions", min=1, expected="a positive integer"))
    if n_positions is not None:
        shape += (check_int(n_positions, "n_positions", min=1),)
    cells = int(np.prod(shape, dtype=object))
    if cells > _MAX_CELLS:  # refused before allocating: a float64 per cell
        raise ParameterError(f"uniform_policy{shape} would hold {cells} probabilities ({cells * 8 / 2**30:.1f} GiB), "
                             f"expected at most {_MAX_CELLS}; evaluate the logs in smaller slices")
    return np.full(shape, 1.0 / n_actions)


def _scores(scores) -> np.ndarray:
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"scores: expected a numeric array (n_rounds, n_actions[, n_positions]), got "
                        f"{type(scores).__name__}") from None
    if arr.ndim not in (2, 3) or arr.shape[1] == 0:
        raise DataError(f"scores: expected (n_rounds, n_actions[, n_positions]) with n_actions >= 1, got {arr.shape}")
    if np.isnan(arr).any():
        raise DataError("scores: NaN values; replace them (e.g. by -inf for actions never to be chosen)")
    return arr


def greedy_policy(scores: ArrayLike) -> np.ndarray:
    """Probability 1 on the best-scoring action of each row (ties share it equally).

    ``scores`` is ``(n_rounds, n_actions)`` or ``(n_rounds, n_actions, n_positions)``; the result
    has the same shape.

    >>> greedy_policy([[0.1, 0.5, 0.5], [2.0, 1.0, 0.0]]).tolist()
    [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]]
    """
    arr = _scores(scores)
    best = arr.max(axis=1, keepdims=True)
    top = (arr == best).astype(np.float64)
    return top / top.sum(axis=1, keepdims=True)


def softmax_policy(scores: ArrayLike, temperature: float = 1.0) -> np.ndarray:
    """``exp(score / temperature)`` normalised over actions (axis 1); same shape as ``scores``.

    >>> p = softmax_policy([[0.0, np.log(3.0)]])
    >>> np.round(p, 3).tolist()
    [[0.25, 0.75]]
    """
    check_number(temperature, "temperature", min=0.0, min_open=True, hint="use greedy_policy for the limit 0")
    arr = _scores(scores) / float(temperature)
    arr = arr - arr.max(axis=1, keepdims=True)
    e = np.exp(arr)
    return e / e.sum(axis=1, keepdims=True)
