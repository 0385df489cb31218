"""Short model names for the command line and the benchmark harness.

Each name maps to a class and the default hyperparameters that name stands for; later models add
their entries here.
"""

from __future__ import annotations

from ..errors import ParameterError
from .als import ALS
from .base import Recommender
from .bpr import BPR
from .content import ContentKNN
from .ease import EASE
from .knn import ItemKNN, UserKNN
from .mf import MF
from .popular import MostPopular
from .sasrec import SASRec
from .twotower import TwoTower

__all__ = ["MODELS", "make_model", "model_names"]

# name -> (class, default keyword arguments, one-line description)
MODELS: dict[str, tuple[type[Recommender], dict, str]] = {
    "popular": (MostPopular, {}, "most popular items (distinct users)"),
    "trending": (MostPopular, {"half_life": 7.0}, "popularity with a 7-day half-life"),
    "segment-popular": (MostPopular, {}, "popularity within the user's demographic segment"),
    "itemknn": (ItemKNN, {}, "item-item neighbours on BM25 weights (K 400, the default)"),
    "itemknn-cosine": (ItemKNN, {"k": 100, "weighting": "cosine"}, "item-item cosine neighbours (K 100)"),
    "userknn": (UserKNN, {"k": 100}, "user-user cosine neighbours (K 100)"),
    "als": (ALS, {}, "implicit-feedback ALS, conjugate gradient (64 factors, regularization 10)"),
    "bpr": (BPR, {}, "Bayesian personalised ranking, SGD (128 factors)"),
    "ease": (EASE, {}, "EASE closed-form item-item model (lambda 100)"),
    "mf": (MF, {"factors": 32}, "explicit-rating matrix factorisation with biases"),
    "sasrec": (SASRec, {"factors": 64, "blocks": 2, "max_len": 50, "epochs": 50},
               "sequential self-attention (SASRec); needs persona-recsys[train] (PyTorch) to fit"),
    "content": (ContentKNN, {}, "item-item neighbours by content similarity (features and product text; cold items "
                "recommendable); needs item_features / item_text, given by the demo or the Python API"),
    "twotower": (TwoTower, {"factors": 64, "epochs": 20},
                 "two-tower model over pooled histories (item id embeddings; item and user features through "
                 "the Python API); needs persona-recsys[train] (PyTorch) to fit"),
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
