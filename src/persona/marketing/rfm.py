"""RFM scores and groups: moved to :mod:`persona.analytics.rfm`, where the shop's behaviour analytics live.

Marketing still uses and exports them (``persona.marketing.rfm_table``, ``Planner(rfm=...)``);
this module keeps the old import path working.
"""

from __future__ import annotations

from ..analytics.rfm import RFM_GROUPS, rfm_table

__all__ = ["rfm_table", "RFM_GROUPS"]
