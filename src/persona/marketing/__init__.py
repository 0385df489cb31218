"""Marketing: logged campaign feedback, offer policies, off-policy evaluation."""

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
}
_SUBMODULES = set(_CAMPAIGN_NAMES)
_CAMPAIGN_LAZY = {name: mod for mod, names in _CAMPAIGN_NAMES.items() for name in names}
__all__ += list(_CAMPAIGN_LAZY)
# Old names kept working, outside __all__: each warns on use.
_CAMPAIGN_LAZY["compare"] = "feedback"  # renamed compare_groups (ope.compare compares estimators)


def __getattr__(name):
    import importlib

    if name in _SUBMODULES:  # ps.marketing.bandits, ps.marketing.planner, ...
        return importlib.import_module(f".{name}", __name__)
    mod = _CAMPAIGN_LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'persona.marketing' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{mod}", __name__), name)
