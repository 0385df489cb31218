"""Recommender models sharing one interface (see :class:`persona.models.base.Recommender`)."""

from .base import PAD_SCORE, Recommender, pad_id_for
from .popular import MostPopular

__all__ = ["Recommender", "MostPopular", "PAD_SCORE", "pad_id_for"]
