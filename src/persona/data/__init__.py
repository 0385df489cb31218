"""The data layer: id maps, validated interactions, features."""

from .features import Features
from .idmap import IdMap
from .interactions import CleaningReport, Interactions

__all__ = ["IdMap", "Interactions", "CleaningReport", "Features"]
