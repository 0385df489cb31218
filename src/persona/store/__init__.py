"""Event collection: record what users do, durably, from inside a web request.

``EventStore("events.db")`` (SQLite) or ``EventStore("postgresql://...")``; ``store.track(user,
item, "view")`` returns at once and a background thread writes in batches; ``store.flush()`` makes
everything tracked so far durable. See :class:`EventStore` and ``docs/store.md``.
"""

from __future__ import annotations

from ..errors import StoreError
from .backends import PostgresBackend, SQLiteBackend
from .events import EventStore

__all__ = ["EventStore", "StoreError", "SQLiteBackend", "PostgresBackend"]
