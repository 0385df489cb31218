"""persona: personalised recommendations and marketing inside a shop's own process.

>>> import persona as ps
>>> shop = ps.datasets.synthetic_shop(n_users=300, n_items=80, seed=0)
>>> train, valid, test = ps.split.leave_last_out(shop.interactions)
>>> model = ps.MostPopular().fit(train)
>>> report = ps.evaluate(model, test, k=(10,))
>>> 0.0 <= report["hr@10"] <= 1.0
True
"""

from __future__ import annotations

from ._lazy import lazy_namespace
from ._version import __version__
from .data import IdMap, Interactions
from .errors import (
    ArtifactError,
    DataError,
    NotFittedError,
    ParameterError,
    PersonaError,
    StoreError,
    UnknownItemError,
    UnknownUserError,
    UnsupportedError,
)
from .models import base as _models_base
from .models import ALS, BPR, EASE, MF, ContentKNN, ItemKNN, MostPopular, Recommender, SASRec, TwoTower, UserKNN, load

__all__ = [
    "__version__", "IdMap", "Interactions", "Recommender", "MostPopular", "ItemKNN", "UserKNN", "ALS", "MF",
    "BPR", "EASE", "SASRec", "TwoTower", "ContentKNN", "Hybrid", "load", "evaluate",
    "LoggedFeedback", "split", "datasets", "kernels", "evaluation", "marketing", "retrieval",
    "PersonaError", "DataError", "UnknownUserError", "UnknownItemError", "NotFittedError", "ArtifactError",
    "ParameterError", "UnsupportedError", "StoreError", "store", "EventStore", "serving", "ope", "tune", "tuning",
    "ranking", "ProductSearch", "analytics", "spark", "pipeline",
]

# Models that live above persona.models (loaded only when used, or when an artifact names one).
for _name, _module in (("Hybrid", "persona.ranking.hybrid"), ("Reranked", "persona.ranking.rerank")):
    _models_base.register_model_module(_name, _module)

# Submodules and names loaded on first use, so `import persona` stays light (no pandas, no Numba).
__getattr__, __dir__ = lazy_namespace(
    __name__, globals(), __all__,
    modules={"split", "datasets", "kernels", "evaluation", "marketing", "io", "models", "data", "retrieval",
             "store", "serving", "ope", "tuning", "ranking", "analytics", "spark", "pipeline"},
    names={"Hybrid": "ranking", "ProductSearch": "ranking", "evaluate": "evaluation", "LoggedFeedback": "marketing",
           "EventStore": "store", "tune": "tuning"})
