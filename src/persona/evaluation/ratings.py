"""Rating-prediction error of an explicit-feedback model (e.g. :class:`persona.MF`) on held-out events."""

from __future__ import annotations

import numpy as np

from ..data.interactions import Interactions
from ..errors import DataError, ParameterError
from ..typing import RatingModel

__all__ = ["rating_metrics"]


def rating_metrics(model: RatingModel, test: Interactions) -> dict[str, float]:
    """RMSE and MAE of ``model.predict`` on every event of ``test``.

    The true rating of an event is its ``value`` when ``test`` carries values, else its weight
    (the same rule :class:`persona.MF` fits by). Each event counts once; users or items the model
    does not know are predicted as the model documents (for MF: global mean plus the known bias)
    and count like any other event.

    Parameters
    ----------
    model : fitted model with ``predict(users, items)`` taking external ids
    test : Interactions

    Returns
    -------
    dict
        ``{"rmse": float, "mae": float, "n": int}`` with ``n`` the number of events scored.

    Examples
    --------
    >>> import numpy as np
    >>> from persona.data import IdMap, Interactions
    >>> class Constant:  # predicts 3 for everything
    ...     def predict(self, users, items):
    ...         return np.full(len(users), 3.0, dtype=np.float32)
    >>> test = Interactions(IdMap(["a", "b"]), IdMap(["x"]), users=[0, 1], items=[0, 0], values=[4.0, 1.0])
    >>> r = rating_metrics(Constant(), test)  # errors 1 and -2
    >>> round(r["rmse"], 4), r["mae"], r["n"]
    (1.5811, 1.5, 2)
    """
    if not callable(getattr(model, "predict", None)):
        raise ParameterError(f"rating_metrics expects a model with predict(users, items), got "
                             f"{type(model).__name__}; use a rating model such as ps.MF")
    if not isinstance(test, Interactions):
        raise DataError(f"rating_metrics: expected test as persona Interactions, got {type(test).__name__}")
    if len(test) == 0:
        raise DataError("rating_metrics: expected test interactions with events, got none; check the split")
    truth = (test.values if test.values is not None else test.weights).astype(np.float64)
    bad = ~np.isfinite(truth)
    if bad.any():
        raise DataError(f"rating_metrics: {int(bad.sum())} test event(s) have a NaN or infinite rating; "
                        "drop them before scoring")
    pred = np.asarray(model.predict(test.user_ids[test.users], test.item_ids[test.items]), dtype=np.float64)
    if pred.shape != truth.shape:
        raise ParameterError(f"model.predict returned shape {pred.shape} for {len(truth)} pairs; "
                             "expected one prediction per pair")
    err = pred - truth
    return {"rmse": float(np.sqrt(np.mean(err * err))), "mae": float(np.mean(np.abs(err))), "n": int(len(err))}
