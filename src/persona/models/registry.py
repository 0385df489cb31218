"""Short model names for the command line and the benchmark harness.

Each name maps to a class and the default hyperparameters that name stands for; later models add
their entries here.
"""

from __future__ import annotations

from ..errors import ParameterError
from .base import Recommender
from .popular import MostPopular

__all__ = ["MODELS", "make_model", "model_names"]

# name -> (class, default keyword arguments, one-line description)
MODELS: dict[str, tuple[type[Recommender], dict, str]] = {
    "popular": (MostPopular, {}, "most popular items (distinct users)"),
    "trending": (MostPopular, {"half_life": 7.0}, "popularity with a 7-day half-life"),
    "segment-popular": (MostPopular, {}, "popularity within the user's demographic segment"),
}


def model_names() -> list[str]:
    return list(MODELS)


def make_model(name: str, **overrides) -> Recommender:
    """A new, unfitted model for a short ``name`` (see :data:`MODELS`)."""
    key = name.lower().replace("_", "-")
    if key not in MODELS:
        raise ParameterError(f"unknown model {name!r}; choose from {model_names()}")
    cls, defaults, _ = MODELS[key]
    return cls(**{**defaults, **overrides})
