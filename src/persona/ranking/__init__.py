"""Ranking: one list from many signals (``Hybrid``), re-ranking and business rules.

A room above ``persona.models``: it combines fitted models, and is loaded on first use
(``ps.Hybrid``, ``ps.ranking``), so ``import persona`` stays light.
"""

from .hybrid import Hybrid, default_generators

__all__ = ["Hybrid", "default_generators"]
