"""Offline evaluation: full-ranking top-k metrics of a fitted model on held-out interactions."""

from .metrics import METRICS, evaluate

__all__ = ["evaluate", "METRICS"]

from .ratings import rating_metrics  # noqa: E402

__all__ = [*__all__, "rating_metrics"]
