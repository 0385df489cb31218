"""Marketing: logged campaign feedback, offer policies, off-policy evaluation."""

from .._lazy import lazy_namespace
from .logged import LoggedFeedback

__all__ = ["LoggedFeedback"]

# Campaigns, channels, planning, feedback and A/B analysis (numpy at import; pandas / scipy inside
# the functions that need them), loaded on first use.
_CAMPAIGN_NAMES = {
    "campaigns": ("Offer", "AudienceRule", "Budget", "Campaign"),
    "channels": ("Channel", "Contacts", "FrequencyCap", "ContactHistory", "default_channels"),
    "rfm": ("rfm_table",),
    "optimize": ("assign", "Assignment"),
    "plan_result": ("Message", "Holdout", "Plan"),
    "planner": ("Planner", "ModelPropensity"),
    "feedback": ("FeedbackRecorder", "campaign_metrics", "compare_groups"),
    "abtest": ("ab_test", "ab_test_means", "wilson_interval", "two_proportion_ztest", "sample_size", "power"),
    "bandits": ("LinUCB", "LinearThompsonSampling", "EpsilonGreedy"),
    "uplift": ("TLearner", "XLearner", "DRLearner", "UpliftScorer", "uplift_data", "uplift_curve", "qini_curve",
               "auuc", "qini_auc", "uplift_at_k"),
}
_CAMPAIGN_LAZY = {name: mod for mod, names in _CAMPAIGN_NAMES.items() for name in names}
__all__ += list(_CAMPAIGN_LAZY)
# Old names kept working, outside __all__: each warns on use.
_CAMPAIGN_LAZY["compare"] = "feedback"  # renamed compare_groups (ope.compare compares estimators)

__getattr__, __dir__ = lazy_namespace(__name__, globals(), __all__, modules=_CAMPAIGN_NAMES, names=_CAMPAIGN_LAZY)
