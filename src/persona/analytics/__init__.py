"""Analytics: what the shop's users do and what persona showed them.

A room above the store and the models, below marketing and serving: behaviour analytics over an
``EventStore`` or ``Interactions`` (funnels, cohorts, RFM, trends, basket rules), the on-site
metrics of what the service showed, and HTML reports. Parts load on first use, so
``import persona`` stays light.
"""

from __future__ import annotations

from .._lazy import lazy_namespace

# name -> the submodule that defines it; add one line per public name
_NAMES: dict[str, str] = {}
# behaviour analytics (issue 16): events read once, funnels, cohorts, RFM, trends, basket rules, the HTML report
# (no module shares a name with a function: importing it would shadow the function on the package)
_NAMES.update({"EventTable": "_events", "event_table": "_events", "funnel": "funnels",
               "cohort_retention": "cohorts", "rfm_table": "rfm", "RFM_GROUPS": "rfm", "trends": "trending",
               "basket_rules": "baskets", "summary": "overview", "activity": "overview", "report": "reports",
               "SECTIONS": "reports"})

# on-site metrics and experiments (issue 15): attribution of outcomes to impressions, online metrics, A/B analysis
_NAMES.update({"attribution": "online", "online_metrics": "online", "analyze_experiment": "experiments",
               "experiment_users": "experiments", "compare_variants": "experiments", "srm_test": "experiments",
               "sample_size": "experiments", "interleaving_result": "experiments",
               "ExperimentResult": "experiments", "InterleavingResult": "experiments"})

__all__ = sorted(_NAMES)

__getattr__, __dir__ = lazy_namespace(__name__, globals(), __all__, names=_NAMES)
