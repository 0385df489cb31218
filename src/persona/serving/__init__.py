"""Serving inside a web process: a thread-safe service with fallbacks, filters, caching and hot swap.

>>> import persona as ps
>>> shop = ps.datasets.synthetic_shop(n_users=200, n_items=60, seed=0)
>>> service = ps.serving.RecommenderService(ps.ItemKNN(k=20).fit(shop.interactions),
...                                         fallback=ps.MostPopular().fit(shop.interactions))
>>> items, scores = service.recommend(shop.interactions.user_ids[0], n=5)   # unpacks like model.recommend
>>> answer = service.recommend("someone-new", n=5)       # an unknown user: the fallback answers
>>> answer.source, answer.reason, len(answer.items)
('fallback-0', 'unknown user', 5)
"""

from __future__ import annotations

from .experiments import Experiment
from .explore import EpsilonGreedy, Exploration, PlackettLuce
from .service import Recommendations, RecommenderService, limit_threads

__all__ = ["RecommenderService", "Recommendations", "Experiment", "limit_threads", "Exploration", "EpsilonGreedy",
           "PlackettLuce"]
