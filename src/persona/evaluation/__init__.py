"""Offline evaluation: full-ranking top-k metrics of a fitted model on held-out interactions."""

from .metrics import METRICS, evaluate

__all__ = ["evaluate", "METRICS"]

from .ratings import rating_metrics  # noqa: E402

__all__ = [*__all__, "rating_metrics"]

# fairness and popularity bias of the lists (pandas only inside the functions that build frames)
from .fairness import (  # noqa: E402
    FairnessAudit,
    FairnessReport,
    age_bands,
    average_popularity,
    calibration_kl,
    exposure,
    exposure_gini,
    exposure_share,
    fairness_audit,
    fairness_report,
    group_codes,
    group_disparity,
    item_age_groups,
    popularity_groups,
    popularity_lift,
    position_weights,
)

__all__ += ["fairness_report", "fairness_audit", "FairnessReport", "FairnessAudit", "exposure", "exposure_gini",
            "exposure_share", "popularity_lift", "average_popularity", "group_disparity", "calibration_kl",
            "position_weights", "group_codes", "popularity_groups", "item_age_groups", "age_bands"]
