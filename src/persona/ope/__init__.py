"""Off-policy evaluation: what a new policy would earn, estimated from another policy's logs.

The logs are a :class:`persona.LoggedFeedback` (action, reward, the logging policy's propensity,
optionally context and position); the policy to evaluate is given by its action probabilities
``target`` of shape ``(n_rounds, n_actions)`` or ``(n_rounds, n_actions, n_positions)``.

>>> import numpy as np, persona as ps
>>> logged = ps.LoggedFeedback(action=[0, 1, 1, 0], reward=[1, 0, 0, 1], propensity=[0.5] * 4)
>>> target = np.tile([0.9, 0.1], (4, 1))          # a policy that mostly shows action 0
>>> est = ps.ope.estimate(logged, target, method="ipw")
>>> round(est.value, 3)                             # action 0 always clicked, action 1 never
0.9

Estimators (``method=``): ``"dm"`` (direct method), ``"ipw"`` (inverse propensity weighting),
``"snipw"`` (self-normalised IPW), ``"dr"`` (doubly robust), ``"sndr"`` (self-normalised DR).
See ``docs/ope.md`` for the formulas.

Ranked lists logged with randomised answers (``RecommenderService(explore=...)``):
:class:`LoggedSlates` and :func:`estimate_slates` (position-based IPS and DR, the pseudoinverse
estimator and its DR, slate IPS) in :mod:`persona.ope.slates`.
"""

from __future__ import annotations

from .estimators import METHODS, Estimate, compare, estimate, on_policy
from .policies import greedy_policy, softmax_policy, uniform_policy
from .reward_model import RewardModel
from .slates import (SLATE_METHODS, LoggedSlates, PositionBasedModel, SlateEstimate, compare_slates,
                     estimate_slates)

__all__ = ["estimate", "compare", "on_policy", "Estimate", "METHODS", "RewardModel", "uniform_policy",
           "greedy_policy", "softmax_policy", "LoggedSlates", "SlateEstimate", "PositionBasedModel",
           "estimate_slates", "compare_slates", "SLATE_METHODS"]
