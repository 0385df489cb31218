"""Offline evaluation: full-ranking top-k metrics of a fitted model on held-out interactions."""

from .metrics import METRICS, evaluate

__all__ = ["evaluate", "METRICS"]
