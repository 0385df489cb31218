"""The online loop's pipeline: keep served models fresh from the event store.

:class:`Retrainer` polls an :class:`~persona.store.EventStore`, folds new events into a model with
``model.update`` every few seconds or events, retrains it fully on a schedule, and publishes each
version atomically to an artifact path every web worker watches (or to an in-process service).
See ``docs/pipeline.md``.
"""

from __future__ import annotations

from .retrainer import Retrainer

__all__ = ["Retrainer"]
