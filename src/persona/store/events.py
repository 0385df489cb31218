"""``EventStore``: record what users do from inside a request, durably, without waiting on disk.

``track()`` validates an event in the caller's thread, appends it to a bounded in-memory queue and
returns. One background writer thread per store and process drains the queue in batches, one
transaction per batch, into SQLite or PostgreSQL (see :mod:`persona.store.backends`). Under load the
batches grow by themselves (the writer takes whatever queued up while the last commit ran), so one
fsync covers many events.

Guarantees
----------
* ``flush()`` returns only once every event tracked before the call is committed; such an event
  survives ``kill -9`` of the process (and, with ``synchronous="full"``, a power cut).
* Every event carries an idempotency key (``event_id``; a random uuid4 by default) under a UNIQUE
  constraint: replaying events, or several processes retrying the same ones, stores each once.
* ``track`` refuses what the database could choke on (times outside 1970-2200, ids over 256
  characters, deep or large properties) with :class:`~persona.errors.DataError`, in the caller.
* A full queue either blocks the caller until the writer catches up -- at most ``block_timeout``
  seconds, so a hung database never holds a web request -- (``on_full="block"``, the default) or
  drops the event (``on_full="drop"``). A dropped event makes ``track`` return ``None`` (or raise,
  with ``on_timeout="raise"``); ``stats()["dropped"]`` counts it and a warning is logged -- never a
  silent loss.
* A writer failure (database gone, disk full) is retried with backoff and surfaces on ``flush()`` /
  ``close()`` as :class:`~persona.errors.StoreError` with the number of unwritten events; ``close()``
  keeps retrying until its timeout, so a failure that clears in time loses nothing.
* A batch the database refuses for its *data* is split until the refused rows are isolated; they
  go to the dead-letter table with the reason (``dead_letters()``, ``stats()["dead_lettered"]``)
  and every other row commits. One hostile event never stops the writer.
* ``forget_user`` records a tombstone in the store: every process's writer drops the user's events
  at write time, every read leaves them out, and :meth:`is_forgotten` tells services.
* At interpreter exit every open store is flushed (``atexit``), and a forked child (gunicorn
  ``--preload``) starts with an empty queue and its own writer and connection.

Layout
------
``EventStore`` is the facade: it validates and encodes events (this module, with the limits
below), pseudonymises user ids, and delegates to its collaborators -- the queue and writer thread,
flush / close and the process lifecycle (:mod:`persona.store._writer`), the forgotten users
(:mod:`persona.store._tombstones`), and every query and export (:mod:`persona.store._readers`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import hmac
import json
import math
import numbers
import time
import uuid
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from .._time import to_epoch
from .._validate import check_frame, check_int, check_number
from ..errors import DataError, ParameterError, StoreError
from ..typing import FrameLike, ItemId, PathLike, TimePoint, UserId
from ._consent import Consent, check_purpose, check_source
from ._consent import consent_defaults as consent_defaults_of
from ._readers import Reader
from ._retention import Retention, cutoff_of
from ._tombstones import Tombstones
from ._writer import Writer, db_lock, unwatch_process, watch_process
from .backends import SCHEMA_VERSION, Backend, ImpressionRow, make_backend

if TYPE_CHECKING:  # annotations only: pandas and the data layer load when events are read
    import pandas as pd

    from ..data.interactions import CleaningReport, Interactions

__all__ = ["EventStore"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_USER_INT, _ITEM_INT = 1, 2
_FINGERPRINT_MSG = b"persona.store pseudonymization check v1"

#: what ``track`` accepts; beyond it a database may refuse the row (PostgreSQL: an index row over
#: 2,704 bytes, a time before 4713 BC) or a reader choke on it
MIN_TIMESTAMP = 0.0  # 1970-01-01T00:00:00Z
MAX_TIMESTAMP = 7258118400.0  # 2200-01-01T00:00:00Z, exclusive
MAX_ID_LENGTH = 256  # characters of a user or item id
MAX_EVENT_LENGTH = 64  # characters of an event name
MAX_PROPERTIES_BYTES = 65536  # of the properties' JSON text (UTF-8)
MAX_PROPERTIES_DEPTH = 32  # nesting of dicts and lists in properties
MAX_IMPRESSION_ITEMS = 1000  # items of one impression (one answer)
MAX_LABEL_LENGTH = 128  # characters of a placement, variant, experiment, model version or source


# ------------------------------------------------------------------------------------ validation
def _id(x, what: str) -> tuple[str, bool]:
    """An id as stored text, and whether it was an integer."""
    if isinstance(x, str):
        if not x:
            raise DataError(f"track: {what} is an empty string; pass the shop's {what} id")
        if len(x) > MAX_ID_LENGTH:
            raise DataError(
                f"track: {what} id expected at most {MAX_ID_LENGTH} characters, got {len(x)} "
                f"({x[:40]!r}...); pass the shop's short id (or a hash of a long one)"
            )
        if "\x00" in x:
            raise DataError(f"track: {what} {x!r} contains a NUL character; strip it from the id")
        _utf8(x, what)
        return x, False
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        v = int(x)
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise DataError(f"track: {what} {v} does not fit in 64 bits; pass it as a string")
        return str(v), True
    raise DataError(
        f"track: {what} expected a string or integer id, got {type(x).__name__} {x!r}; "
        f"pass the shop's {what} id (convert it with str() or int())"
    )


def _utf8(s: str, what: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(f"track: {what} {s!r} is not valid Unicode text ({e.reason}); fix the text") from None


def _event_time(t) -> float:
    """An event's time, within the range the store keeps (years 1970-2199)."""
    v = to_epoch(t, "track: timestamp", error=DataError, hint="; pass a real time or leave it out for 'now'")
    if not MIN_TIMESTAMP <= v < MAX_TIMESTAMP:
        raise DataError(
            f"track: timestamp expected a time from 1970-01-01 to 2200-01-01 (UTC), got {t!r} = {v!r} s since "
            f"1970; pass the event's real time (epoch seconds, not milliseconds), or leave it out for 'now'"
        )
    return v


def _properties(p) -> str | None:
    if p is None:
        return None
    if not isinstance(p, Mapping):
        raise DataError(
            f"track: properties expected a dict (stored as JSON), got {type(p).__name__}; "
            f"pass e.g. properties={{'campaign': 'spring', 'propensity': 0.2}}"
        )
    _shape(p)
    try:
        text = json.dumps(p, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as e:
        raise DataError(
            f"track: properties must be JSON-serialisable with finite numbers ({e}); convert dates to "
            f"ISO strings and numpy numbers to float/int"
        ) from None
    if "\\u0000" in text:  # PostgreSQL's jsonb refuses NUL characters
        raise DataError("track: properties contain a NUL character (\\u0000); strip it")
    _utf8(text, "properties")
    size = len(text.encode("utf-8"))
    if size > MAX_PROPERTIES_BYTES:
        raise DataError(f"track: properties expected at most {MAX_PROPERTIES_BYTES} bytes of JSON, got {size}; "
                        f"store large data elsewhere and keep a reference to it here")
    return text


def _shape(p) -> None:
    """Keys are strings (JSON would turn 1 into "1") and nesting stays shallow, without recursion."""
    stack = None
    for k, v in p.items():  # the common flat dict costs one pass
        if k.__class__ is not str and not isinstance(k, str):
            _bad_key(k)
        if isinstance(v, _NESTED):
            if stack is None:
                stack = []
            stack.append((v, 2))
    while stack:
        x, depth = stack.pop()
        if depth > MAX_PROPERTIES_DEPTH:
            raise DataError(f"track: properties nest deeper than {MAX_PROPERTIES_DEPTH} levels; flatten them")
        if isinstance(x, dict):
            for k, v in x.items():
                if not isinstance(k, str):
                    _bad_key(k)
                if isinstance(v, _NESTED):
                    stack.append((v, depth + 1))
        else:
            stack.extend((v, depth + 1) for v in x if isinstance(v, _NESTED))


_NESTED = (dict, list, tuple)  # what json.dumps nests; any other container fails there


def _bad_key(k) -> None:
    raise DataError(f"track: properties keys expected strings, got {type(k).__name__} {k!r}; "
                    f"JSON would store it as a string, so pass str({k!r})")


# ------------------------------------------------------------------------------------- the store
class EventStore:
    """A durable, append-only log of shop events, written in the background.

    Parameters
    ----------
    target : str or path, default "persona-events.db"
        A file path (or ``sqlite:///path``) for the embedded SQLite backend, or a
        ``postgresql://user:password@host:port/dbname`` URL (needs ``pip install 'persona-recsys[postgres]'``).
    table : str, default "persona_events"
        Table name; a ``<table>_meta`` table beside it records the schema version and whether ids
        are pseudonymised.
    on_full : {"block", "drop"}, default "block"
        What ``track`` does when ``max_queue`` events wait unwritten: wait for room (back-pressure)
        for at most ``block_timeout`` seconds, or drop the event at once. A dropped event is counted
        in ``stats()["dropped"]`` and logged; ``track`` returns ``None`` (or raises, see ``on_timeout``).
    block_timeout : float, default 0.25
        Seconds a ``track`` call waits for room in a full queue (``on_full="block"``) before it
        gives up on the event; a hung database never holds a web request longer. Offline imports
        that must not drop anything pass a large value (and check ``stats()["dropped"]``).
    on_timeout : {"drop", "raise"}, default "drop"
        What ``track`` does with an event it gave up waiting for (or that met a full queue while
        the writer is failing): return ``None``, or raise :class:`~persona.errors.StoreError`.
        Both count it in ``stats()["dropped"]``.
    max_queue : int, default 100_000
        Events held in memory at most (plus one batch being written).
    batch_size : int, default 1000
        Most events per transaction.
    synchronous : {"full", "normal"}, default "full"
        Durability of a commit. ``"full"``: SQLite fsyncs its WAL at every batch commit, PostgreSQL
        keeps ``synchronous_commit=on``; a flushed event survives a power cut. ``"normal"``: a
        flushed event survives the process being killed (``kill -9``), but the last batches may be
        lost on a power cut / OS crash (SQLite) or server crash (PostgreSQL); commits are cheaper.
    busy_timeout : float, default 30.0
        Seconds to wait for another process's write lock (SQLite) or a table lock (PostgreSQL)
        before the batch counts as failed and is retried.
    pseudonymize_key : bytes, optional
        When given (at least 16 bytes, e.g. ``secrets.token_bytes(32)``, kept secret and stable),
        user ids are replaced at ingestion by ``HMAC-SHA256(key, str(user))`` as 64 hex digits, so
        raw ids never reach the database. ``forget_user`` and ``events(user=...)`` take the raw id
        and hash it the same way; :meth:`pseudonym` gives the stored id (models trained on the
        store know users by it). A store must always be opened with the same key.
    flush_at_exit : bool, default True
        Flush and close at interpreter exit, waiting at most ``exit_timeout`` seconds.
    exit_timeout : float, default 10.0
        Also how long ``close()`` without a timeout keeps retrying a failing database.
    forget_refresh : float, default 2.0
        Seconds between two reads of the store's tombstones (users forgotten by any process) by
        :meth:`is_forgotten`; a user forgotten elsewhere is a stranger here within this time.
    retention_days : float, optional
        Keep events and impressions this many days (by event time / time shown) and dead letters
        this many days after they were recorded: the writer thread purges what is older every
        ``purge_every`` seconds, between two batches, so ``track`` never waits for it (see
        :meth:`purge`). None (default): keep everything until :meth:`purge` is called.
    purge_every : float, default 3600.0
        Seconds between two scheduled purges (with ``retention_days``).
    purge_batch : int, default 10_000
        Most rows per table one purge transaction deletes; a large purge takes many short
        transactions, so writers (this one between its batches, other processes) are never held long.
    consent_defaults : dict of str -> bool, optional
        Declares consent purposes beyond the built-in ones, or changes a default: True means a user
        without a record allows the purpose (opt-out), False that only a recorded grant does
        (opt-in). Built in: ``personalisation`` and ``analytics`` True, ``marketing:email``,
        ``marketing:sms``, ``marketing:push``, ``marketing:web`` (and any ``marketing:<channel>``)
        False. See :meth:`set_consent`.
    consent_refresh : float, default 2.0
        Seconds between two reads of the consent changes made by other processes (see
        :meth:`has_consent`).

    Examples
    --------
    >>> import os, tempfile
    >>> from persona.store import EventStore
    >>> path = os.path.join(tempfile.mkdtemp(), "events.db")
    >>> with EventStore(path) as store:
    ...     _ = store.track("ann", "shoe", "view")
    ...     _ = store.track("ann", "shoe", "purchase", value=59.0)
    ...     store.flush()
    ...     store.count()
    2
    """

    def __init__(self, target: PathLike = "persona-events.db", *, table: str = "persona_events", on_full: str = "block",
                 max_queue: int = 100_000, batch_size: int = 1000, synchronous: str = "full",
                 busy_timeout: float = 30.0, pseudonymize_key: bytes | None = None,
                 flush_at_exit: bool = True, exit_timeout: float = 10.0, block_timeout: float = 0.25,
                 on_timeout: str = "drop", forget_refresh: float = 2.0, retention_days: float | None = None,
                 purge_every: float = 3600.0, purge_batch: int = 10_000,
                 consent_defaults: Mapping[str, bool] | None = None, consent_refresh: float = 2.0) -> None:
        if on_full not in ("block", "drop"):
            raise ParameterError(f"on_full: expected 'block' or 'drop', got {on_full!r}")
        if on_timeout not in ("drop", "raise"):
            raise ParameterError(f"on_timeout: expected 'drop' or 'raise', got {on_timeout!r}")
        for name, v in (("block_timeout", block_timeout), ("forget_refresh", forget_refresh),
                        ("consent_refresh", consent_refresh)):
            check_number(v, name, min=0, min_open=True, expected="a finite number of seconds > 0")
        for name, v in (("max_queue", max_queue), ("batch_size", batch_size), ("purge_batch", purge_batch)):
            check_int(v, name, min=1, expected="a positive integer")
        check_number(retention_days, "retention_days", min=0, min_open=True, allow_none=True,
                     expected="a number of days > 0 (or None to keep everything)")
        check_number(purge_every, "purge_every", min=1, expected="seconds >= 1 between two scheduled purges")
        if synchronous not in ("full", "normal"):
            raise ParameterError(
                f"synchronous: expected 'full' (survives power loss) or 'normal' (survives a killed "
                f"process), got {synchronous!r}"
            )
        for name, v in (("busy_timeout", busy_timeout), ("exit_timeout", exit_timeout)):
            check_number(v, name, min=0, finite=False, expected="seconds >= 0")
        pseudonymize_key = _check_key(pseudonymize_key)
        defaults = consent_defaults_of(consent_defaults)

        self._backend: Backend = make_backend(target, table, synchronous=synchronous, busy_timeout=busy_timeout)
        self._key = pseudonymize_key
        self._check_meta()
        self._flush_at_exit = bool(flush_at_exit)
        self._exit_timeout = float(exit_timeout)
        self._tombstones = Tombstones(self._backend, refresh=float(forget_refresh))
        self._consent = Consent(self._backend, defaults=defaults, refresh=float(consent_refresh))
        self._retention = Retention(self._backend, days=None if retention_days is None else float(retention_days),
                                    every=float(purge_every), step_rows=int(purge_batch))
        self._writer = Writer(self._backend, self._tombstones, on_full=on_full, on_timeout=on_timeout,
                              block_timeout=float(block_timeout), max_queue=int(max_queue),
                              batch_size=int(batch_size), exit_timeout=self._exit_timeout,
                              retention=self._retention if retention_days is not None else None)
        self._reader = Reader(self._backend, functools.partial(_stored_id, self._key), self._consent.default)
        watch_process(self)

    def _check_meta(self) -> None:
        """Create the tables, or check that the stored schema version and pseudonymisation match."""
        fingerprint = ("hmac-sha256:" + hmac.new(self._key, _FINGERPRINT_MSG, hashlib.sha256).hexdigest()[:16]
                       if self._key is not None else "none")
        stored = self._backend.setup({"schema_version": SCHEMA_VERSION, "pseudonymization": fingerprint})
        if stored.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise StoreError(
                f"{self._backend.describe()} has schema version {stored['schema_version']!r}; this persona "
                f"reads version {SCHEMA_VERSION}; upgrade persona or use another table"
            )
        if stored.get("pseudonymization", fingerprint) != fingerprint:
            have = "without a key" if stored["pseudonymization"] == "none" else "with a different pseudonymize_key"
            want = "without a key" if self._key is None else "with this pseudonymize_key"
            raise ParameterError(
                f"{self._backend.describe()} was created {have} but is opened {want}; user ids would not "
                f"match. Open it with the key it was created with"
            )

    def _reset_after_fork(self) -> None:
        # a forked child (gunicorn --preload) starts with an empty queue, its own writer and connection
        self._writer.reset_after_fork()
        self._tombstones.reset_after_fork()
        self._retention.reset_after_fork()
        self._consent.reset_after_fork()

    def _at_exit(self) -> None:
        if self._flush_at_exit:
            self.close(timeout=self._exit_timeout)

    # ----------------------------------------------------------------------------- writing
    def track(self, user: UserId, item: ItemId, event: str, timestamp: TimePoint | None = None,
              value: float | None = None, properties: Mapping[str, Any] | None = None, *,
              event_id: str | None = None, client_event_id: str | None = None) -> str | None:
        """Record one event; returns at once with its ``event_id`` (``None`` if it was dropped).

        Parameters
        ----------
        user, item : str or int
            External ids, as the shop knows them.
        event : str
            Event type: ``"view"``, ``"click"``, ``"cart"``, ``"purchase"``, or marketing feedback
            such as ``"impression"``, ``"send"``, ``"open"``, ``"conversion"`` -- any non-empty name.
        timestamp : datetime, ISO-8601 string or epoch seconds, optional
            When it happened (naive datetimes are UTC); default: now.
        value : float, optional
            Price, quantity, rating or revenue.
        properties : dict, optional
            Anything else, stored as JSON (campaign, channel, position, propensity, ...).
        event_id : str, optional
            The idempotency key; pass the same one when replaying an event and it is stored once.
            Default: a random uuid4 (hex). Event ids share one namespace per store: use it for keys
            the shop makes itself (an order line, a webhook's delivery id).
        client_event_id : str, optional
            An idempotency key chosen by a client the shop does not control (a browser's beacon):
            stored scoped to the user, as ``c:<24 hex digits of SHA-256 of the stored user id>:<key>``
            (the key hashed too when that would exceed 255 characters), so a client that knows or
            guesses another user's key (``order-1001-line-1``, a click id) cannot claim it first and
            make the genuine event a duplicate. The same user replaying the same key stores it once.
            The web integrations pass what browsers post this way.

        Raises
        ------
        DataError
            A bad argument, named in the message; nothing is queued.
        StoreError
            The store is closed, or ``on_full="block"`` would wait on a writer that is failing.
        """
        row = self._row(user, item, event, timestamp, value, properties, event_id, client_event_id)
        if row[2] in self._tombstones:  # known forgotten here; the writer checks the store's tombstones too
            self._writer.count_forgotten()
            return None
        return self._writer.put(row)

    def _row(self, user, item, event, timestamp, value, properties, event_id, client_event_id=None) -> tuple:
        """The validated, encoded row of one event (raises DataError)."""
        u, u_int = _id(user, "user")
        if self._key is not None:
            u, u_int = _pseudonym(self._key, u), False
        i, i_int = _id(item, "item")
        if not isinstance(event, str) or not event or len(event) > MAX_EVENT_LENGTH:
            raise DataError(
                f"track: event expected a non-empty string of at most {MAX_EVENT_LENGTH} characters such as "
                f"'view' or 'purchase', got {event[:80] if isinstance(event, str) else event!r}"
            )
        if "\x00" in event:
            raise DataError(f"track: event {event!r} contains a NUL character; strip it")
        _utf8(event, "event")
        ts = time.time() if timestamp is None else _event_time(timestamp)
        if value is not None:
            value = check_number(value, "track: value", expected="a finite number or None", error=DataError)
        props = _properties(properties)
        if client_event_id is not None:
            if event_id is not None:
                raise DataError("track: pass event_id (the shop's own key) or client_event_id (a key a client "
                                "chose, scoped to the user), not both")
            _check_event_id(client_event_id, "client_event_id")
            event_id = scoped_event_id(u, client_event_id)
        elif event_id is None:
            event_id = uuid.uuid4().hex
        else:
            _check_event_id(event_id, "event_id")
        return (event_id, ts, u, i, event, value, props, (_USER_INT if u_int else 0) | (_ITEM_INT if i_int else 0))

    def track_many(self, events: Iterable[Mapping[str, Any]]) -> list[str | None]:
        """Track several events given as dicts of :meth:`track`'s arguments; returns their event ids."""
        return [self.track(**e) for e in events]

    def log_impression(self, user: UserId, items: Iterable[ItemId], *, request_id: str | None = None,
                       placement: str | None = None, model_version: str | int | None = None,
                       variant: str | None = None, experiment: str | None = None,
                       propensities: Iterable[float] | None = None, teams: Iterable[str] | None = None,
                       source: str | None = None, timestamp: TimePoint | None = None) -> str | None:
        """Record what was shown to ``user`` (one answer: ``items`` in rank order); returns at once.

        :class:`~persona.serving.RecommenderService` calls it for every answer when it has a store
        (see ``impressions=`` there); a shop that renders lists persona did not make can log them
        the same way. The row is queued for the store's writer like an event (``flush()`` covers
        it); with the queue full it is dropped at once (``stats()["impressions_dropped"]``), never
        waited for, so logging never holds a request up. A forgotten user's impression is not
        recorded. Returns the ``request_id`` (a new random one when not given), or None when the
        impression was not recorded.

        Parameters
        ----------
        user : str or int
            Who saw it (pseudonymised like events under ``pseudonymize_key``).
        items : sequence of str or int
            The shown item ids, best first (position 1 is the first); at most 1,000.
        request_id : str, optional
            The answer's id (the idempotency key: an impression logged twice is stored once). Clicks
            and purchases carry it in ``properties={"request_id": ...}`` to be attributed to it.
        placement, model_version, variant, experiment, source : str, optional
            Where it was shown (``"home"``, ``"pdp"``, ``"cart"``), which model answered, which
            experiment and variant the user is in, and what answered (``"model"``, a fallback).
        propensities : sequence of float, optional
            The probability with which each shown item was chosen, when the list was randomised
            (one per item, in ``(0, 1]``), for off-policy evaluation.
        teams : sequence of str, optional
            For an interleaved list: which ranker contributed each item.
        timestamp : optional
            When it was shown; default now.

        Raises
        ------
        DataError
            A bad argument, named in the message; nothing is queued.
        """
        row = self._impression_row(user, items, request_id, placement, model_version, variant, experiment,
                                   propensities, teams, source, timestamp)
        if row is None:
            return None
        if row[2] in self._tombstones:
            self._writer.count_forgotten(impression=True)
            return None
        return self._writer.put(row)

    def _impression_row(self, user, items, request_id, placement, model_version, variant, experiment,
                        propensities, teams, source, timestamp) -> ImpressionRow | None:
        """The validated, encoded row of one impression (raises DataError); None for no items."""
        u, u_int = _id(user, "user")
        if self._key is not None:
            u, u_int = _pseudonym(self._key, u), False
        shown = items.tolist() if isinstance(items, np.ndarray) else items
        if isinstance(shown, (str, bytes, Mapping)) or not hasattr(shown, "__iter__"):
            raise DataError(f"log_impression: items expected a list of item ids, got {type(items).__name__}; "
                            f"pass the shown ids in rank order")
        shown = list(shown)
        if not shown:
            return None
        if len(shown) > MAX_IMPRESSION_ITEMS:
            raise DataError(f"log_impression: items expected at most {MAX_IMPRESSION_ITEMS} ids, got {len(shown)}; "
                            f"log what was shown")
        all_int = True
        for k, x in enumerate(shown):  # the common cases first: plain str and int ids are kept as they are
            if x.__class__ is str and 0 < len(x) <= MAX_ID_LENGTH and "\x00" not in x:
                all_int = False
                continue
            if x.__class__ is int and _INT64_MIN <= x <= _INT64_MAX:
                continue
            text, is_int = _id(x, f"item[{k}]")
            shown[k] = int(text) if is_int else text
            all_int = all_int and is_int
        n = len(shown)
        props = None if propensities is None else _per_item(propensities, n, "propensities", _propensity)
        team = None if teams is None else _per_item(teams, n, "teams", _label_of("teams"))
        ts = time.time() if timestamp is None else _event_time(timestamp)
        if request_id is None:
            request_id = uuid.uuid4().hex
        elif not isinstance(request_id, str) or not request_id or len(request_id) > 255 or "\x00" in request_id:
            raise DataError(f"log_impression: request_id expected a non-empty string of at most 255 characters, "
                            f"got {request_id!r:.80}; leave it out for a random one")
        version = None if model_version is None else _label(str(model_version), "model_version")
        return ImpressionRow((request_id, ts, u, _label(placement, "placement"), shown, props, version,
                              _label(variant, "variant"), _label(experiment, "experiment"), team,
                              _label(source, "source"), (_USER_INT if u_int else 0) | (_ITEM_INT if all_int else 0)))

    def import_frame(self, df: FrameLike, *, user: str = "user_id", item: str = "item_id", event: str = "event",
                     time: str | None = "timestamp", value: str | None = None, properties: str | None = None,
                     event_id: str | None = None, strict: bool = True,
                     show_progress: bool = False) -> CleaningReport:
        """Bulk-import historical events from a table (an order export, an old log).

        Every row passes the checks of :meth:`track`; rows are queued without the web-request time
        limit (the call waits for the writer as long as it takes) and the call returns once all of
        them are committed. Re-importing the same rows is harmless: without an ``event_id``
        column, each row's id is a hash of its user, item, event, time, value and properties, so
        a row already stored is stored once (exact duplicate rows of one file are one event, as
        in :meth:`persona.Interactions.from_frame`); with ``time=None`` every row is a new event.

        Parameters
        ----------
        df : pandas.DataFrame, polars.DataFrame or pyarrow.Table
            One row per event (a table that is not pandas is converted once).
        user, item, event : str
            Columns of the user id, item id and event name.
        time : str or None, default "timestamp"
            Column of event times (datetimes, ISO-8601 strings or epoch seconds); None: now.
        value, properties, event_id : str, optional
            Columns of the value, a dict of properties, and your own idempotency key.
        strict : bool, default True
            True: the first bad row raises :class:`~persona.errors.DataError` naming its position
            and nothing is imported. False: bad rows are skipped and counted per reason.
        show_progress : bool, default False
            A tqdm bar over the rows.

        Returns
        -------
        CleaningReport
            Rows read, imported (``n_kept``; already-stored duplicates are not written twice) and
            skipped per reason.

        Examples
        --------
        >>> import os, tempfile
        >>> import pandas as pd
        >>> import persona as ps
        >>> orders = pd.DataFrame({"customer": ["ann", "bob"], "sku": ["i1", "i2"],
        ...                        "at": ["2024-05-01T10:00", "2024-05-02T11:00"], "kind": ["purchase"] * 2})
        >>> with ps.EventStore(os.path.join(tempfile.mkdtemp(), "events.db")) as store:
        ...     print(store.import_frame(orders, user="customer", item="sku", time="at", event="kind"))
        ...     print(store.import_frame(orders, user="customer", item="sku", time="at", event="kind"))
        ...     store.count()
        2 of 2 events kept; none dropped
        2 of 2 events kept; none dropped
        2
        """
        from ..data.interactions import CleaningReport

        cols = _import_columns(df, user=user, item=item, event=event, time=time, value=value,
                               properties=properties, event_id=event_id)
        report = CleaningReport(len(df), 0)
        rows = self._import_rows(cols, len(df), report, strict=strict, show_progress=show_progress)
        live = [r for r in rows if r[2] not in self._tombstones]
        report.add("forgotten user", len(rows) - len(live))
        size = self._writer.batch_size
        for s in range(0, len(live), size):
            self._writer.put_waiting(live[s:s + size])
        self.flush()
        report.n_kept = len(live)
        if report.dropped:
            import warnings

            warnings.warn(f"import_frame: {report}", UserWarning, stacklevel=2)
        return report

    def _import_rows(self, cols: dict, n: int, report, *, strict: bool, show_progress: bool) -> list:
        """The encoded rows of an import; a bad row raises (``strict``) or is counted in ``report``."""
        rows = []
        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="importing", unit="event")
        for k in range(n):
            try:
                vals = {name: c[k] for name, c in cols.items()}
                eid = vals.pop("event_id", None)
                if eid is None and "timestamp" in vals:  # without times, repeats are separate events
                    eid = _content_id(vals)
                rows.append(self._row(vals["user"], vals["item"], vals["event"], vals.get("timestamp"),
                                      vals.get("value"), vals.get("properties"), eid))
            except DataError as e:
                if strict:
                    raise DataError(f"import_frame: row {k} (0-based position): {e}; fix the row, or pass "
                                    "strict=False to skip bad rows and count them") from None
                report.add(str(e).split(";")[0].replace("track: ", "")[:120], 1)
            if bar is not None and (k % 10_000 == 0 or k == n - 1):
                bar.update(k + 1 - bar.n)
        if bar is not None:
            bar.close()
        return rows

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event tracked so far (by any thread of this process) is committed.

        Raises
        ------
        StoreError
            The writer is failing (the message gives the error and how many events are unwritten;
            they stay queued and are retried), or ``timeout`` seconds passed first.
        """
        self._writer.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush, stop the writer and close. Idempotent.

        While the database fails, the writer keeps retrying: for up to ``timeout`` seconds in all,
        or (``timeout=None``) as long as events are being written, until the database has been
        failing -- or has not answered (hung) -- for ``exit_timeout`` seconds in a row. A failure
        that clears in that time loses nothing.

        Raises
        ------
        StoreError
            Some events could not be written in that time; the message gives their count. They are lost.
        """
        if self._writer.forked:  # a forked child that never tracked anything of its own
            self._reset_after_fork()
        if self._writer.closed:
            return
        check_number(timeout, "close: timeout", min=0, finite=False, allow_none=True, expected="seconds >= 0 or None")
        try:
            self._writer.close(timeout)
        finally:
            self._tombstones.stop()
            self._consent.stop()
            unwatch_process(self)

    def __enter__(self) -> "EventStore":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._writer.closed

    def stats(self) -> dict:
        """Counters of this process's store object.

        ``tracked`` (accepted by ``track``), ``written`` (newly stored), ``duplicates`` (event ids
        already stored), ``dropped`` (not recorded because the queue was full: ``on_full="drop"``, or
        ``block_timeout`` passed), ``dead_lettered`` (refused by the database, kept in the dead-letter
        table), ``unwritable`` (refused by the dead-letter table too; logged), ``forgotten`` (events of
        forgotten users, dropped), ``pending`` (accepted but not yet done), ``batches``, ``errors``
        (failed write attempts), ``last_error`` and ``tombstones`` (forgotten users known here).
        ``tracked == written + duplicates + dead_lettered + unwritable + forgotten(at write) + pending``.
        Purges by this store object (scheduled or :meth:`purge`): ``purged_events``,
        ``purged_impressions``, ``purged_dead_letters``, ``purges`` (completed), ``purge_errors`` and
        ``last_purge`` (its counts, cutoff ``before``, ``at`` and ``seconds``; None before the first).
        """
        return {**self._writer.stats(), "tombstones": len(self._tombstones),
                "tombstone_errors": self._tombstones.errors, "consent_errors": self._consent.errors,
                **self._retention.stats()}

    # ------------------------------------------------------------------------------ retention
    @property
    def retention_days(self) -> float | None:
        """The retention window in days the writer purges on a schedule (None: no schedule)."""
        return self._retention.days

    def purge(self, older_than: float | str | _dt.timedelta | None = None, *,
              before: TimePoint | None = None) -> dict:
        """Delete what is older than the retention window, now; returns the counts per table.

        Events and impressions whose time (event time, time shown) is before the cutoff, and dead
        letters recorded before it, are deleted in transactions of at most ``purge_batch`` rows per
        table, so other writers wait at most one short transaction at a time. Consent records and
        tombstones are kept. Run it from a cron job or ``persona purge --store ... --older-than 90d``;
        a store opened with ``retention_days`` also purges on a schedule by itself.

        Parameters
        ----------
        older_than : number of days, timedelta or str, optional
            The window to keep: ``90`` (days), ``timedelta(days=90)``, ``"90d"``, ``"36h"``, ``"2w"``.
            Default: the store's ``retention_days``.
        before : datetime, ISO-8601 string or epoch seconds, optional
            The cutoff itself, instead of a window.

        Returns
        -------
        dict
            ``events``, ``impressions``, ``dead_letters`` (rows deleted), ``before`` (the cutoff, epoch
            seconds), ``at`` (when it finished) and ``seconds`` (how long it took). Also counted in
            :meth:`stats` and logged.

        Examples
        --------
        >>> import os, tempfile
        >>> import persona as ps
        >>> with ps.EventStore(os.path.join(tempfile.mkdtemp(), "events.db")) as store:
        ...     _ = store.track("ann", "i1", "view", timestamp="2020-01-01")
        ...     _ = store.track("ann", "i2", "view")
        ...     store.flush()
        ...     done = store.purge("90d")
        ...     done["events"], store.count()
        (1, 1)
        """
        cutoff = cutoff_of(older_than, before, self._retention.days)
        if self._writer.started:
            try:  # what this process queued before the call is purged too
                self.flush(timeout=self._backend.busy_timeout)
            except StoreError:
                pass
        return self._retention.purge(cutoff, self._backend.connect, db_lock)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"EventStore({self._backend.describe()}, {state})"

    # ------------------------------------------------------------------------------- privacy
    @property
    def pseudonymizes(self) -> bool:
        """Whether user ids are stored as pseudonyms (a ``pseudonymize_key`` was given)."""
        return self._key is not None

    def pseudonym(self, user: UserId) -> UserId:
        """The id under which ``user``'s events are stored.

        With ``pseudonymize_key``: the HMAC-SHA256 of ``str(user)`` as hex (so ``42`` and ``"42"``
        are one user). Without: ``user`` itself. Use it to look a user up in a model trained on
        :meth:`interactions`.
        """
        u, _ = _id(user, "user")
        if self._key is None:
            return user
        return _pseudonym(self._key, u)

    def _stored_user(self, user) -> str:
        return _stored_id(self._key, user)

    def forget_user(self, user: UserId) -> int:
        """Forget ``user`` for good; return the number of stored events deleted.

        ``user`` is the raw id in any form it was tracked in (``7`` and ``"7"`` are one user; with
        ``pseudonymize_key`` the pseudonym is what is recorded). In one transaction a tombstone is
        recorded in the store's ``<table>_forgotten`` table and the user's events, impressions, dead
        letters and consent records (answers and their history) are deleted. From then on every
        process's writer drops the user's events at write time (also those already queued in other
        workers), every read (``events``, ``interactions``, ``export``, ``count``) leaves the user
        out, :meth:`is_forgotten` -- which services over this store consult -- says so within
        ``forget_refresh`` seconds everywhere, and :meth:`has_consent` answers no for every purpose.
        """
        stored = self._stored_user(user)
        if self._writer.started:
            try:  # so that the count includes this process's queued events; the tombstone covers them anyway
                self.flush(timeout=self._backend.busy_timeout)
            except StoreError:
                pass
        n = self._tombstones.forget(stored)
        self._consent.forgotten(stored)
        return n

    def export_user(self, user: UserId, path: PathLike | None = None) -> dict:
        """Everything the store holds about ``user``: a shop's answer to a subject-access request.

        ``user`` is the raw id (``7`` and ``"7"`` are one user; under ``pseudonymize_key`` it is
        hashed as for every read). This process's queued events are flushed first; the rest is
        read in one consistent snapshot of the database. Rows are given as stored -- also rows a
        tombstone hides from every other read.

        Parameters
        ----------
        user : str or int
        path : str or path, optional
            Also write the answer as JSON there (UTF-8, readable by the owner only, written to a
            temporary file beside it and renamed).

        Returns
        -------
        dict
            JSON-ready: ``format``, ``generated_at`` (ISO-8601, UTC), ``user`` (as given),
            ``stored_id`` (the id the rows carry: the pseudonym under ``pseudonymize_key``, else the
            id as text), ``pseudonymized``, ``forgotten`` and ``forgotten_at``; ``events`` (each with
            ``event_id``, ``time``, ``item``, ``event``, ``value``, ``properties``), ``impressions``
            (each answer shown: ``request_id``, ``time``, ``placement``, ``items`` in rank order,
            ``propensities``, ``teams``, ``model_version``, ``variant``, ``experiment``, ``source``),
            ``consent`` (the current answers: purpose -> ``granted``, ``at``, ``source``),
            ``consent_effective`` (every purpose with the defaults applied), ``consent_history``,
            ``dead_letters`` (events the database refused, as stored) and ``counts``.

        Examples
        --------
        >>> import os, tempfile
        >>> import persona as ps
        >>> with ps.EventStore(os.path.join(tempfile.mkdtemp(), "events.db")) as store:
        ...     _ = store.track("ann", "shoe", "view", timestamp=1.7e9)
        ...     _ = store.set_consent("ann", "marketing:email", True, at=1.7e9)
        ...     data = store.export_user("ann")
        ...     data["counts"], data["events"][0]["item"], data["consent"]["marketing:email"]["granted"]
        ({'events': 1, 'impressions': 0, 'consent_history': 1, 'dead_letters': 0}, 'shoe', True)
        """
        stored = self._stored_user(user)
        raw, _ = _id(user.item() if isinstance(user, np.generic) else user, "user")
        if self._writer.started:
            try:  # what this process queued for the user is part of the answer
                self.flush(timeout=self._backend.busy_timeout)
            except StoreError:
                pass
        got = self._reader.subject(stored)
        out = subject_document(user if isinstance(user, (str, int)) else raw, stored, self._key is not None,
                               got, self.consent_defaults)
        if path is not None:
            write_private_json(path, out)
        return out

    def is_forgotten(self, user: UserId) -> bool:
        """Whether ``user`` (raw id, any form) was forgotten, by any process, as of the last read.

        Cheap enough for every request: a set lookup. The first call in a process starts a
        background thread that reads the store's tombstones at once (the call waits for that read,
        at most one second) and then every ``forget_refresh`` seconds. If the database cannot be
        read, the tombstones known so far answer (``stats()["tombstone_errors"]``, logged) and the
        read is retried.
        """
        try:
            stored = self._stored_user(user)
        except DataError:
            return False  # not an id the store could hold
        self._tombstones.watch()
        return stored in self._tombstones

    # ------------------------------------------------------------------------------- consent
    def set_consent(self, user: UserId, purpose: str, granted: bool, *, source: str | None = None,
                    at: TimePoint | None = None) -> bool:
        """Record ``user``'s answer for ``purpose``: granted (True) or refused / withdrawn (False).

        Written at once, in this thread (not queued): when it returns, every process over the store
        reads it -- this one at once, others within ``consent_refresh`` seconds. The answer
        replaces the previous one for that purpose, and a line is added to the user's consent
        history (:meth:`consent_history`), the record a shop shows to prove consent.

        Parameters
        ----------
        user : str or int
            The raw id (pseudonymised like events under ``pseudonymize_key``).
        purpose : str
            ``"personalisation"`` (the service personalises; opt-out), ``"analytics"`` (opt-out),
            ``"marketing:<channel>"`` (the planner messages on that channel; opt-in), or a purpose
            declared with ``consent_defaults``.
        granted : bool
        source : str, optional
            Where the answer came from (``"cookie-banner v3"``, ``"account settings"``).
        at : datetime, ISO-8601 string or epoch seconds, optional
            When it was given (default now); the last answer recorded is the current one.

        Returns
        -------
        bool
            True, or False when the user is forgotten (nothing is recorded for them).

        Examples
        --------
        >>> import os, tempfile
        >>> import persona as ps
        >>> with ps.EventStore(os.path.join(tempfile.mkdtemp(), "events.db")) as store:
        ...     _ = store.set_consent("ann", "marketing:email", True, source="signup form")
        ...     _ = store.set_consent("ann", "personalisation", False, source="cookie banner")
        ...     store.has_consent("ann", "personalisation"), store.has_consent("bob", "personalisation")
        ...     store.consent("ann")["marketing:email"], store.consent("bob")["marketing:email"]
        (False, True)
        (True, False)
        """
        check_purpose(purpose, "set_consent: purpose")
        self._consent.default(purpose)  # an undeclared purpose is refused before anything is written
        if not isinstance(granted, (bool, np.bool_)):
            raise ParameterError(f"set_consent: granted expected True (given) or False (refused or withdrawn), "
                                 f"got {granted!r}")
        source = check_source(source)
        when = time.time() if at is None else to_epoch(at, "set_consent: at", error=ParameterError,
                                                         hint="; pass when the answer was given, or leave it out")
        stored = self._stored_user(user)
        with db_lock():
            conn = self._backend.connect()
        try:
            with db_lock():
                done = self._backend.set_consent(conn, stored, purpose, bool(granted), when, source)
        finally:
            with db_lock():
                conn.close()
        if done:
            self._consent.known(stored, purpose, bool(granted))
        return bool(done)

    def has_consent(self, user: UserId, purpose: str) -> bool:
        """Whether ``user`` (raw id) allows ``purpose``: their recorded answer, else the purpose's default.

        Cheap enough for every request (a set lookup): the first call for a purpose in a process
        reads the users whose answer differs from the default; a background thread then reads the
        changes of every process each ``consent_refresh`` seconds. A forgotten user allows nothing.
        If the database cannot be read, the answers known so far (at first: the defaults) answer,
        and the failure is logged and counted (``stats()["consent_errors"]``).
        """
        try:
            stored = self._stored_user(user)
        except DataError:
            return False  # not an id the store could hold
        self._tombstones.watch()  # users forgotten by any process (their records are gone: no defaults for them)
        if stored in self._tombstones:
            return False
        return self._consent.allows(stored, purpose)

    def consent(self, user: UserId) -> dict[str, bool]:
        """``user``'s answer for every declared purpose (and any other they answered), read now:
        their recorded answer, else the purpose's default; all False for a forgotten user."""
        stored = self._stored_user(user)
        answers = dict(self._consent.defaults)
        rows, gone = self._consent_rows(stored)
        for purpose, granted, _, _ in rows:
            answers[purpose] = granted
        if gone is not None:
            answers = dict.fromkeys(answers, False)
        return answers

    def consent_history(self, user: UserId) -> list[dict]:
        """Every answer ``user`` gave, oldest first: ``purpose``, ``granted``, ``at`` (epoch seconds), ``source``."""
        stored = self._stored_user(user)
        conn = self._backend.connect()
        try:
            rows = self._backend.consent_history(conn, stored)
        finally:
            conn.close()
        return [{"purpose": p, "granted": g, "at": a, "source": s} for _, p, g, a, s in rows]

    def allowed(self, users: Iterable[UserId], purpose: str) -> np.ndarray:
        """For many users at once (a marketing plan): whether each allows ``purpose``, read now.

        One query for the purpose's answers (and the tombstones); users without an answer take the
        default; forgotten users and ids the store could not hold are False. A boolean array in the
        order of ``users``.
        """
        default = self._consent.default(check_purpose(purpose, "allowed: purpose"))
        users = list(users.tolist() if isinstance(users, np.ndarray) else users)
        conn = self._backend.connect()
        try:
            answers = dict(self._backend.consent_answers(conn, purpose))
            gone = set(self._backend.tombstones(conn, -1) or ())
        finally:
            conn.close()
        out = np.empty(len(users), dtype=bool)
        for k, u in enumerate(users):
            try:
                stored = self._stored_user(u.item() if isinstance(u, np.generic) else u)
            except DataError:
                out[k] = False
                continue
            out[k] = False if stored in gone else answers.get(stored, default)
        return out

    def _consent_rows(self, stored: str) -> tuple[list, float | None]:
        conn = self._backend.connect()
        try:
            return self._backend.consent_of(conn, stored), self._backend.forgotten_at(conn, stored)
        finally:
            conn.close()

    @property
    def consent_defaults(self) -> dict[str, bool]:
        """Every declared purpose and its default (True: opt-out, False: opt-in)."""
        return dict(self._consent.defaults)

    def dead_letters(self, limit: int = 1000) -> list[dict]:
        """The newest events the database refused (newest first): ``at`` (epoch seconds), ``event_id``,
        ``user`` (as stored), ``row`` (the event as JSON text) and ``reason``.

        Inspect them, fix what is wrong and ``track`` them again (with the same ``event_id``), then
        delete them from the ``<table>_dead`` table with SQL.
        """
        return self._reader.dead_letters(limit)

    # ----------------------------------------------------------------------------- reading
    def count(self, since: TimePoint | None = None, until: TimePoint | None = None,
              event_types: str | Iterable[str] | None = None, *,
              user: UserId | None = None, consent: str | None = None) -> int:
        """Number of stored events (of all processes) in ``[since, until)``, of ``event_types``, of
        ``user``, of users who allow the purpose ``consent``."""
        return self._reader.count(since, until, event_types, user, consent)

    def event_counts(self, since: TimePoint | None = None, until: TimePoint | None = None,
                     event_types: str | Iterable[str] | None = None,
                     *, user: UserId | None = None) -> dict[str, int]:
        """Stored events per event name (of all processes) in ``[since, until)``, most frequent first.

        >>> import os, tempfile
        >>> import persona as ps
        >>> with ps.EventStore(os.path.join(tempfile.mkdtemp(), "events.db")) as store:
        ...     _ = [store.track("ann", "i1", e, timestamp=1.7e9) for e in ("view", "view", "add_to_cart")]
        ...     store.flush()
        ...     store.event_counts()
        {'view': 2, 'add_to_cart': 1}
        """
        return self._reader.event_counts(since, until, event_types, user)

    def events(self, since: TimePoint | None = None, until: TimePoint | None = None,
               event_types: str | Iterable[str] | None = None, *,
               user: UserId | None = None, properties: bool = True, consent: str | None = None) -> pd.DataFrame:
        """The stored events as a pandas DataFrame, oldest first.

        Columns: ``event_id``, ``time`` (datetime64, UTC), ``user``, ``item``, ``event``, ``value``
        (NaN when absent), ``properties`` (dict or None). ``user=`` selects one user by raw id.
        Integer ids come back as integers when every selected event used an integer id (else all
        as strings). ``properties=False`` leaves the properties column out (it is not even read):
        what analyses of who did what and when need, faster still. Read a chunk at a time: a
        million events take about 2.5x less time and memory than the path before (measured in
        docs/store.md, *Reading back*). ``consent=``
        a purpose (``"analytics"``): only the events of users who allow it (their recorded answer,
        else the purpose's default), chosen in the database.
        """
        return self._reader.events(since, until, event_types, user, properties=properties, consent=consent)

    def impressions(self, since: TimePoint | None = None, until: TimePoint | None = None, *,
                    placement: str | None = None, experiment: str | None = None,
                    user: UserId | None = None) -> pd.DataFrame:
        """What was shown, one row per shown item, oldest first, as a pandas DataFrame.

        Columns: ``request_id``, ``user``, ``placement``, ``item``, ``position`` (1 for the first
        item of the list), ``variant``, ``model_version``, ``propensity`` (NaN unless the list was
        randomised), ``time`` (datetime64, UTC), ``experiment``, ``team`` (the ranker an
        interleaved list took the item from, else None) and ``source``. ``since`` / ``until``
        select by the time shown; ``placement``, ``experiment`` and ``user`` (raw id) select rows.
        Forgotten users' impressions are never read (their rows are deleted by ``forget_user``).

        >>> import os, tempfile
        >>> import persona as ps
        >>> with ps.EventStore(os.path.join(tempfile.mkdtemp(), "events.db")) as store:
        ...     rid = store.log_impression("ann", ["i3", "i1"], placement="home", timestamp=1.7e9)
        ...     store.flush()
        ...     store.impressions()[["user", "placement", "item", "position"]]
          user placement item  position
        0  ann      home   i3         1
        1  ann      home   i1         2
        """
        return self._reader.impressions(since, until, placement=placement, experiment=experiment, user=user)

    def item_popularity(self, since: TimePoint | None = None, until: TimePoint | None = None,
                        event_types: str | Iterable[str] | None = None) -> pd.Series:
        """Distinct users per item among the stored events (``attrs["users"]``: distinct users in all).

        The popularity that novelty is measured against (``ps.analytics.online_metrics``); one
        ``GROUP BY`` in the database. Item ids as in :meth:`events`.
        """
        return self._reader.item_popularity(since, until, event_types)

    def interactions(self, since: TimePoint | None = None, until: TimePoint | None = None,
                     event_types: str | Iterable[str] | None = None,
                     weights: Mapping[str, float] | None = None, *, values: bool = False,
                     consent: str | None = None, **options: Any) -> Interactions:
        """The stored events as :class:`~persona.Interactions`, for (incremental) training.

        Parameters
        ----------
        since, until : datetime, ISO-8601 string or epoch seconds, optional
            Keep events with ``since <= time < until`` (event time, UTC).
        event_types : list of str, optional
            Event types to read. Default: the types that have a weight -- the built-in ``view``,
            ``click``, ``cart``, ``purchase``, ``search`` plus the keys of ``weights`` -- so marketing
            feedback (``impression``, ``send``, ...) stays out unless named and weighted; the events
            of every other type are counted per name in the result's ``report`` (reason "event type
            without a weight") and a warning names them. With ``default_weight=`` or ``weight=`` in
            ``options``, every type is read.
        weights : dict of str -> float, optional
            Event-type weights, as in :meth:`persona.Interactions.from_frame`.
        values : bool, default False
            Also read ``value`` into ``Interactions.values`` (every selected event then needs one).
        consent : str, optional
            A purpose (``"personalisation"``): train only on the events of users who allow it.
        **options
            Passed on to :meth:`persona.Interactions.from_frame` (``strict``, ``half_life``,
            ``min_user_events``, ``user_map``, ...).

        Raises
        ------
        DataError
            No stored event matches.
        """
        return self._reader.interactions(since, until, event_types, weights, values=values, consent=consent,
                                         **options)

    def export(self, path: PathLike, since: TimePoint | None = None, until: TimePoint | None = None,
               event_types: str | Iterable[str] | None = None, *,
               chunk_size: int = 100_000, consent: str | None = None) -> int:
        """Write the stored events to a Parquet (``.parquet``) or CSV (``.csv``, ``.csv.gz``) file.

        Streams ``chunk_size`` rows at a time from one consistent snapshot, so memory stays flat
        for large stores; writes to a temporary file beside ``path`` and renames it, so a reader
        never sees half a file. Columns as in :meth:`events`; ``time`` is a UTC timestamp in
        Parquet and an ISO-8601 string in CSV, ``properties`` JSON text. Read it back with
        ``Interactions.from_parquet(path, user="user", item="item", time="time", event="event")``.
        Returns the number of events written. ``consent=`` a purpose: only the events of users who
        allow it.
        """
        return self._reader.export(path, since, until, event_types, chunk_size=chunk_size, consent=consent)


def _iso(t) -> str | None:
    try:
        return _dt.datetime.fromtimestamp(float(t), _dt.timezone.utc).isoformat(timespec="microseconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return None if t is None else str(t)  # a time written behind persona's back: as stored


def _jsonable(v, stored=None):
    """A stored value as strict JSON can hold it: a number that is not finite and bytes as text, and
    properties that do not make strict JSON (NaN inside, written behind persona's back) as ``stored``."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", "backslashreplace")
    if isinstance(v, (dict, list)):
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return _jsonable(stored)
    return v


def subject_document(user, stored: str, pseudonymized: bool, got: dict, defaults: dict) -> dict:
    """The subject-access answer of :meth:`EventStore.export_user` from the raw rows of ``got``."""
    from ._readers import _json_list, parse_properties

    events = got["events"]
    props = parse_properties([r[6] for r in events])
    ev = [{"event_id": e, "time": _iso(t), "item": int(i) if k & _ITEM_INT and _is_int_text(i) else _jsonable(i),
           "event": _jsonable(name), "value": _jsonable(v), "properties": _jsonable(p, text)}
          for (e, t, _, i, name, v, text, k), p in zip(events, props)]
    imps = []
    for rid, ts, _, placement, items, pr, version, variant, experiment, teams, source, _ in got["impressions"]:
        imps.append({"request_id": rid, "time": _iso(ts), "placement": placement, "items": _json_list(items),
                     "propensities": None if pr is None else _json_list(pr), "teams": None if teams is None else
                     _json_list(teams), "model_version": version, "variant": variant, "experiment": experiment,
                     "source": source})
    consent = {p: {"granted": g, "at": _iso(a), "source": s} for p, g, a, s in got["consent"]}
    forgotten = got["forgotten_at"] is not None
    effective = {p: (False if forgotten else consent[p]["granted"] if p in consent else d)
                 for p, d in {**defaults, **dict.fromkeys(consent, False)}.items()}
    history = [{"purpose": p, "granted": g, "at": _iso(a), "source": s} for _, p, g, a, s in got["consent_history"]]
    dead = [{"at": _iso(a), "event_id": e, "row": r, "reason": why} for _, a, e, _, r, why in got["dead_letters"]]
    return {
        "format": "persona.subject-access/1",
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "user": user,
        "stored_id": stored,
        "pseudonymized": pseudonymized,
        "pseudonymization": ("user ids are stored as HMAC-SHA256(key, id) in hex: the raw id is not in the "
                             "database; the rows below carry stored_id" if pseudonymized else
                             "user ids are stored as given (as text)"),
        "forgotten": forgotten,
        "forgotten_at": _iso(got["forgotten_at"]) if forgotten else None,
        "events": ev,
        "impressions": imps,
        "consent": consent,
        "consent_effective": effective,
        "consent_history": history,
        "dead_letters": dead,
        "counts": {"events": len(ev), "impressions": len(imps), "consent_history": len(history),
                   "dead_letters": len(dead)},
    }


def _is_int_text(x) -> bool:
    try:
        int(x)
        return True
    except (TypeError, ValueError):
        return False


def write_private_json(path: PathLike, data: dict) -> None:
    """``data`` as JSON at ``path``, readable by its owner only, written beside it and renamed."""
    import os

    p = os.fspath(path)
    tmp = f"{p}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1, allow_nan=False)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _check_event_id(event_id, what: str) -> None:
    if not isinstance(event_id, str) or not event_id or len(event_id) > 255 or "\x00" in event_id:
        raise DataError(
            f"track: {what} expected a non-empty string of at most 255 characters, got {event_id!r:.300}; "
            f"pass your own idempotency key (e.g. an order line id) or leave it out"
        )
    _utf8(event_id, what)


def scoped_event_id(stored_user: str, key: str) -> str:
    """The event id of a client-chosen ``key`` of the user stored as ``stored_user``: in that user's
    own namespace, so it never equals another user's or one the shop makes itself."""
    scope = hashlib.sha256(b"persona.client-event-id.v1\x00" + stored_user.encode("utf-8")).hexdigest()[:24]
    out = f"c:{scope}:{key}"
    if len(out) > 255:
        out = f"c:{scope}:#{hashlib.sha256(key.encode('utf-8')).hexdigest()}"
    return out


def _check_key(key) -> bytes | None:
    if key is None:
        return None
    if not isinstance(key, (bytes, bytearray)):
        raise ParameterError(
            f"pseudonymize_key: expected bytes, got {type(key).__name__}; "
            f"pass e.g. secrets.token_bytes(32), stored as a secret"
        )
    if len(key) < 16:
        raise ParameterError(
            f"pseudonymize_key: expected at least 16 bytes, got {len(key)}; "
            f"a short key makes the pseudonyms guessable, use secrets.token_bytes(32)"
        )
    return bytes(key)


def _stored_id(key: bytes | None, user) -> str:
    """The id under which ``user`` (raw, any form) is stored: its text, or its pseudonym under ``key``."""
    u, _ = _id(user, "user")
    return u if key is None else _pseudonym(key, u)


def _pseudonym(key: bytes, user: str) -> str:
    """The stored id of a user id (as text) under ``pseudonymize_key``: HMAC-SHA256 as 64 hex digits."""
    return hmac.new(key, user.encode("utf-8"), hashlib.sha256).hexdigest()


def _import_columns(df, **names) -> dict:
    """The columns :meth:`import_frame` reads, as Python lists (times as epoch seconds)."""
    import pandas as pd

    df = check_frame(df, "import_frame: df")
    missing = [c for c in names.values() if c is not None and c not in df.columns]
    if missing:
        raise DataError(f"import_frame: no column {', '.join(map(repr, missing))} in the frame; its columns "
                        f"are {list(df.columns)}; name them with user=, item=, event=, time=")
    out = {}
    for key, col in (("user", names["user"]), ("item", names["item"]), ("event", names["event"]),
                     ("timestamp", names["time"]), ("value", names["value"]),
                     ("properties", names["properties"]), ("event_id", names["event_id"])):
        if col is None:
            continue
        series = df[col]
        if key == "timestamp" and pd.api.types.is_datetime64_any_dtype(series):
            ts = series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
            values = [None if pd.isna(t) else t.timestamp() for t in ts]
        else:
            values = [None if (not isinstance(v, (dict, list)) and pd.isna(v)) else
                      (v.item() if isinstance(v, np.generic) else v) for v in series.tolist()]
        out[key] = values
    return out


def _content_id(vals: dict) -> str:
    """A deterministic event id for an imported row: the same row always gets the same id."""
    text = json.dumps([vals.get(k) for k in ("user", "item", "event", "timestamp", "value", "properties")],
                      default=str, sort_keys=True, ensure_ascii=True)
    return "imp-" + hashlib.sha256(text.encode("ascii")).hexdigest()[:40]


def _label(v, what: str) -> str | None:
    """A short label (placement, variant, ...): None or text of at most MAX_LABEL_LENGTH characters."""
    if v is None:
        return None
    if v.__class__ is not str and not isinstance(v, str):
        raise DataError(f"log_impression: {what} expected a short string or None, got {type(v).__name__}")
    if not v or len(v) > MAX_LABEL_LENGTH or "\x00" in v:
        raise DataError(f"log_impression: {what} expected 1 to {MAX_LABEL_LENGTH} characters without NUL, got "
                        f"{v[:40]!r} ({len(v)} characters)")
    _utf8(v, what)
    return v


def _label_of(what: str):
    return lambda v: _label(v, what)


def _propensity(p) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 < float(p) <= 1.0:
        raise DataError(f"log_impression: propensities expected probabilities in (0, 1], got {p!r}; pass the "
                        f"probability with which each shown item was chosen")
    return float(p)


def _per_item(values, n: int, what: str, check) -> list:
    values = values.tolist() if isinstance(values, np.ndarray) else values
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__iter__"):
        raise DataError(f"log_impression: {what} expected one value per item, got {type(values).__name__}")
    values = list(values)
    if len(values) != n:
        raise DataError(f"log_impression: {what} has {len(values)} values for {n} items; give one per item")
    return [check(v) for v in values]
