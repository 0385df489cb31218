"""Ranking: one list from many signals (``Hybrid``), re-ranking and business rules.

A room above ``persona.models``: it combines fitted models, and is loaded on first use
(``ps.Hybrid``, ``ps.ranking``), so ``import persona`` stays light. A re-ranker reorders a fitted
model's candidates -- for diversity (:class:`MMR`), for a category mix that matches the user's
history (:class:`Calibrated`), for a minimum share of new, long-tail or small providers' items
(:class:`ExposureFloor`), for pins and boosts (:class:`Rules`) -- and :class:`Reranked` wraps
any model with one, as a Recommender (see docs/ranking.md). :class:`ProductSearch` answers a search
box: BM25 and sentence embeddings over the catalogue, reordered by a fitted model's taste.
"""

from .hybrid import Hybrid, default_generators
from .rerank import (MMR, Calibrated, ExposureFloor, Pipeline, Reranked, Reranker, as_reranker, reranker_from_state,
                     reranker_state)
from .rules import Boost, Pin, Rules
from .search import ProductSearch

__all__ = [
    "Hybrid",
    "default_generators",
    "Reranker",
    "Pipeline",
    "MMR",
    "Calibrated",
    "ExposureFloor",
    "Reranked",
    "Rules",
    "Pin",
    "Boost",
    "ProductSearch",
    "as_reranker",
    "reranker_state",
    "reranker_from_state",
]
