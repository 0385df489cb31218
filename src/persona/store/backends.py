"""The two places events can live: one SQLite file (embedded default) or a PostgreSQL table.

Both backends store the same columns and behave the same; :class:`~persona.store.EventStore` only
talks to them through the small interface below. A backend object is cheap and holds no
connection: every caller (the writer thread, a reader in another thread, a forked child) opens its
own with :meth:`connect`, because neither ``sqlite3`` nor ``psycopg`` connections may be shared
across threads and processes.

Columns (``ts`` is epoch seconds, UTC; ``kinds`` says which ids were Python ints so they come
back as ints: bit 1 the user id, bit 2 the item id)::

    seq        ingestion order, assigned by the database
    event_id   the idempotency key, UNIQUE: a replayed event is ignored
    ts, user_id, item_id, event, value, properties (JSON text / JSONB), kinds

Two tables sit beside it (created on first open, also for a store made by an older persona):

``<table>_forgotten``
    the tombstones: one row per forgotten (stored) user id. The writer drops events of these users
    at write time, in the same transaction that inserts the rest, and every read leaves their rows
    out -- also rows an older persona process wrote after the forget.
``<table>_dead``
    the dead letters: an event the database refused on its own (a row the others could be written
    without), kept as JSON text with the database's reason, so a hostile or broken event never
    blocks the ones behind it and is never lost silently.
``<table>_impressions``
    what a :class:`~persona.serving.RecommenderService` showed: one row per answer (request),
    ``request_id`` UNIQUE (the idempotency key), the shown items (and their propensities and
    interleaving teams) as JSON arrays in rank order, the placement, the model version, the
    experiment and variant. Written by the same writer thread, in the same transactions as the
    events; forgetting a user deletes their impressions too.
``<table>_consent`` and ``<table>_consent_log``
    the consent registry: the current answer per (user, purpose) -- ``granted``, ``at``, ``source``
    -- and every change in order (``seq``). Written at once by ``set_consent`` (changes are
    serialised, so the log's order is the order of commits); forgetting a user deletes both.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from ..errors import ParameterError, StoreError

__all__ = ["Backend", "SQLiteBackend", "PostgresBackend", "make_backend", "SCHEMA_VERSION", "ImpressionRow",
           "IMPRESSION_COLUMNS"]

SCHEMA_VERSION = "1"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# the store's longest derived name is <table>_impressions_user (17 more characters), and PostgreSQL
# cuts identifiers at 63: a longer table name would make two derived names one (an index or table
# silently not created, or consent rows written to the wrong table)
MAX_TABLE_NAME = 63 - len("_impressions_user")

#: one queued event, already validated and encoded by the caller's thread
#: (event_id, ts, user_id, item_id, event, value, properties_json, kinds)
Row = tuple
#: A DB-API connection of the backend: ``sqlite3.Connection`` or ``psycopg.Connection`` (optional, so ``Any``).
Connection = Any

COLUMNS = ("event_id", "ts", "user_id", "item_id", "event", "value", "properties", "kinds")

#: the columns of an impression row, in :class:`ImpressionRow` order
IMPRESSION_COLUMNS = ("request_id", "ts", "user_id", "placement", "items", "propensities", "model_version",
                      "variant", "experiment", "teams", "source", "kinds")


class ImpressionRow(tuple):
    """One queued impression (an answer the service showed), in :data:`IMPRESSION_COLUMNS` order.

    It travels through the events' queue and writer (``row[0]`` is its idempotency key and
    ``row[2]`` its stored user id, as for an event row); ``items``, ``propensities`` and ``teams``
    are Python lists, encoded as JSON by the backend when the batch is written.
    """

    __slots__ = ()


def split_rows(rows: Sequence) -> tuple[list, list]:
    """(event rows, impression rows) of a batch, each in queue order."""
    events, imps = [], []
    for r in rows:
        (imps if type(r) is ImpressionRow else events).append(r)
    return events, imps


def _json_list(v) -> str | None:
    return None if v is None else json.dumps(v, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def impression_values(r: ImpressionRow) -> tuple:
    """An impression row as the values of one INSERT (arrays as JSON text)."""
    rid, ts, user, placement, items, props, version, variant, experiment, teams, source, kinds = r
    return (rid, ts, user, placement, _json_list(items), _json_list(props), version, variant, experiment,
            _json_list(teams), source, kinds)


class Backend:
    """What :class:`~persona.store.EventStore` needs from a database."""

    name = "?"

    def __init__(self, table: str) -> None:
        if not isinstance(table, str) or not _IDENT.match(table) or len(table) > MAX_TABLE_NAME:
            raise ParameterError(
                f"table: expected an SQL identifier (letters, digits, underscores, not starting with a "
                f"digit, at most {MAX_TABLE_NAME} characters), got {table!r}; pass e.g. table='persona_events'"
            )
        self.table = table
        self.meta = f"{table}_meta"
        self.forgotten = f"{table}_forgotten"
        self.dead = f"{table}_dead"
        self.impressions = f"{table}_impressions"
        self.consent = f"{table}_consent"
        self.consent_log = f"{table}_consent_log"

    # every method takes a connection from connect(), so threads and processes never share one
    def connect(self) -> Connection:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, meta: dict) -> dict:  # pragma: no cover - abstract
        """Create the table if needed; record ``meta`` if absent; return the stored meta."""
        raise NotImplementedError

    def write(self, conn: Connection, rows: Sequence[Row]) -> tuple[int, list, int]:  # pragma: no cover - abstract
        """Insert ``rows`` (events and :class:`ImpressionRow`) in one transaction, ignoring known event
        and request ids and leaving out the rows of forgotten users; return (how many events were
        new, the forgotten user ids found among them, how many impressions were new)."""
        raise NotImplementedError

    def is_row_error(self, exc: BaseException) -> bool:  # pragma: no cover - abstract
        """Whether ``exc`` is the database refusing the *data* (a value out of range, a constraint,
        a size limit), which retrying the same rows cannot fix, rather than the database failing."""
        raise NotImplementedError

    def dead_letter(self, conn: Connection, row: Row, reason: str) -> None:  # pragma: no cover - abstract
        """Keep a row the database refused, with the reason, in the dead-letter table."""
        raise NotImplementedError

    def dead_letters(self, conn: Connection, limit: int) -> list:  # pragma: no cover - abstract
        """(seq, at, event_id, user_id, row_json, reason) of the newest ``limit`` dead letters."""
        raise NotImplementedError

    def forget(self, conn: Connection, user_id: str) -> int:  # pragma: no cover - abstract
        """Tombstone ``user_id`` and delete their events, impressions and dead letters, in one
        transaction; return the number of events deleted."""
        raise NotImplementedError

    def purge(self, conn: Connection, before: float, limit: int) -> dict:  # pragma: no cover - abstract
        """Delete, in one transaction, at most ``limit`` events and ``limit`` impressions whose time is
        before ``before`` (epoch seconds) and the dead letters recorded before it; the counts per
        table (``events``, ``impressions``, ``dead_letters``)."""
        raise NotImplementedError

    # -- the consent registry (SQL shared by both backends; "?" placeholders, translated for PostgreSQL)
    def set_consent(self, conn: Connection, user_id: str, purpose: str, granted: bool, at: float,
                    source: str | None) -> bool:  # pragma: no cover - abstract
        """Record an answer (the current one, and a line in the log) in one transaction; False (nothing
        recorded) when the user is forgotten."""
        raise NotImplementedError

    def consent_of(self, conn: Connection, user_id: str) -> list:
        """The user's current answers: (purpose, granted, at, source), by purpose."""
        return [(p, bool(g), float(a), s) for p, g, a, s in self._all(
            conn, self._sql(f"SELECT purpose, granted, {self._epoch('at')}, source FROM {self.consent}"
                            f" WHERE user_id = ? ORDER BY purpose"), [user_id])]

    def consent_history(self, conn: Connection, user_id: str) -> list:
        """Every answer the user gave, oldest first: (seq, purpose, granted, at, source)."""
        return [(int(q), p, bool(g), float(a), s) for q, p, g, a, s in self._all(
            conn, self._sql(f"SELECT seq, purpose, granted, {self._epoch('at')}, source FROM {self.consent_log}"
                            f" WHERE user_id = ? ORDER BY seq"), [user_id])]

    def consent_answers(self, conn: Connection, purpose: str) -> list:
        """(user_id, granted) of every user with an answer for ``purpose``."""
        return [(u, bool(g)) for u, g in self._all(
            conn, self._sql(f"SELECT user_id, granted FROM {self.consent} WHERE purpose = ?"), [purpose])]

    def consent_differing(self, conn: Connection, purpose: str, granted: bool, after: int | None) -> tuple:
        """In one snapshot: the users whose answer for ``purpose`` is ``granted``, the log's last
        sequence number, and the log's changes after ``after`` up to it (none for None)."""
        with self.snapshot(conn):
            users = [u for (u,) in self._all(conn, self._sql(
                f"SELECT user_id FROM {self.consent} WHERE purpose = ? AND granted = ?"), [purpose, granted])]
            (seq,) = self._one(conn, f"SELECT coalesce(max(seq), 0) FROM {self.consent_log}", [])
            changes = [] if after is None else self._all(conn, self._sql(
                f"SELECT seq, user_id, purpose, granted FROM {self.consent_log} WHERE seq > ? AND seq <= ?"
                f" ORDER BY seq"), [int(after), int(seq)])
        return users, int(seq), changes

    def consent_changes(self, conn: Connection, after: int) -> list:
        """The log's changes after sequence number ``after``, in order: (seq, user_id, purpose, granted)."""
        return self._all(conn, self._sql(f"SELECT seq, user_id, purpose, granted FROM {self.consent_log}"
                                         f" WHERE seq > ? ORDER BY seq"), [int(after)])

    def forgotten_at(self, conn: Connection, user_id: str) -> float | None:
        """When ``user_id`` was forgotten (epoch seconds), or None."""
        row = self._one(conn, self._sql(f"SELECT {self._epoch('at')} FROM {self.forgotten} WHERE user_id = ?"),
                        [user_id])
        return None if row is None else float(row[0])

    def dead_letters_of(self, conn: Connection, user_id: str) -> list:
        """(seq, at, event_id, user_id, row, reason) of the user's dead letters, oldest first."""
        return self._all(conn, self._sql(f"SELECT seq, {self._epoch('at')}, event_id, user_id, row, reason"
                                         f" FROM {self.dead} WHERE user_id = ? ORDER BY seq"), [user_id])

    def _epoch(self, column: str) -> str:
        """SQL of a time column as epoch seconds."""
        return column

    def select_impressions(self, conn: Connection, where: str, params: list) -> list:  # pragma: no cover
        """The impression rows matching ``where`` (of :meth:`where` with ``table=self.impressions``),
        oldest first: (request_id, ts, user_id, placement, items, propensities, model_version,
        variant, experiment, teams, source, kinds), arrays as JSON text."""
        raise NotImplementedError

    def tombstones(self, conn: Connection, known: int) -> list | None:  # pragma: no cover - abstract
        """Every tombstoned user id, or None when their number is still ``known`` (nothing new)."""
        raise NotImplementedError

    def select(self, conn: Connection, where: str, params: list, chunk_size: int, *,
               properties: bool = True) -> Iterator[list]:  # pragma: no cover - abstract
        """The rows matching ``where``, oldest first, ``chunk_size`` at a time: (event_id, ts, user_id,
        item_id, event, value, properties as JSON text -- None without ``properties`` --, kinds)."""
        raise NotImplementedError

    def snapshot(self, conn: Connection) -> Iterator[None]:  # pragma: no cover - abstract
        """A context in which several reads see one consistent state of the table."""
        raise NotImplementedError

    def kinds(self, conn: Connection, where: str, params: list) -> tuple[int, bool, bool]:
        """(number of rows, whether all their user ids are ints, whether all item ids are ints)."""
        sql = (f"SELECT count(*), coalesce(sum(kinds & 1), 0), coalesce(sum((kinds & 2) / 2), 0)"
               f" FROM {self.table}{self._sql(where)}")
        n, u, i = self._one(conn, sql, params)
        n, u, i = int(n), int(u), int(i)
        return n, n > 0 and u == n, n > 0 and i == n

    def _sql(self, where: str) -> str:
        return where

    def _one(self, conn: Connection, sql: str, params: list) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def count(self, conn: Connection, where: str, params: list) -> int:
        raise NotImplementedError  # pragma: no cover

    def event_counts(self, conn: Connection, where: str, params: list) -> dict[str, int]:
        """Rows per event name matching ``where``."""
        rows = self._all(conn, f"SELECT event, count(*) FROM {self.table}{self._sql(where)} GROUP BY event", params)
        return {str(e): int(n) for e, n in rows}

    def _all(self, conn: Connection, sql: str, params: list) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    # shared SQL pieces; "?" placeholders, translated by the PostgreSQL backend
    def has_tombstones(self, conn: Connection) -> bool:
        """Whether any user was forgotten (reads then leave their rows out; without, they skip the check)."""
        return self._one(conn, f"SELECT EXISTS (SELECT 1 FROM {self.forgotten})", [])[0] not in (0, False, None)

    def where(self, since: float | None, until: float | None, event_types: Sequence[str] | None, user: str | None,
              *, forgotten: bool = True, table: str | None = None, equal: dict | None = None,
              consent: tuple[str, bool] | None = None) -> tuple[str, list]:
        """The WHERE clause of a read of ``table`` (default: the events): ``equal`` adds
        ``column = value`` conditions (column names are persona's own, never a caller's text);
        ``consent`` = (purpose, default) keeps the rows of users who allow the purpose (a recorded
        answer, else the default)."""
        table = table or self.table
        parts, params = [], []
        if since is not None:
            parts.append("ts >= ?")
            params.append(since)
        if until is not None:
            parts.append("ts < ?")
            params.append(until)
        if event_types is not None:
            parts.append("event IN (" + ", ".join("?" * len(event_types)) + ")" if event_types else "1 = 0")
            params.extend(event_types)
        if user is not None:
            parts.append("user_id = ?")
            params.append(user)
        for column, value in (equal or {}).items():
            parts.append(f"{column} = ?")
            params.append(value)
        if consent is not None:
            purpose, default = consent
            answer = (f"SELECT 1 FROM {self.consent} c WHERE c.user_id = {table}.user_id AND c.purpose = ?"
                      f" AND c.granted = ?")
            # opt-out purposes: everyone but those who withdrew; opt-in purposes: only those who granted it
            parts.append(f"NOT EXISTS ({answer})" if default else f"EXISTS ({answer})")
            params += [purpose, not default]
        if forgotten:  # a forgotten user's rows stay out of every read, also rows an older persona wrote later
            parts.append(f"NOT EXISTS (SELECT 1 FROM {self.forgotten} f WHERE f.user_id = {table}.user_id)")
        return (" WHERE " + " AND ".join(parts)) if parts else "", params

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------------------------------- SQLite
class SQLiteBackend(Backend):
    """One SQLite file in WAL mode, shared by any number of threads and processes on one machine.

    WAL lets readers run beside the one writer; ``BEGIN IMMEDIATE`` takes the write lock at the start
    of each batch, and the busy timeout makes a process wait for another's batch instead of failing.
    ``synchronous="full"`` fsyncs the WAL at every commit (a committed batch survives a power cut);
    ``"normal"`` skips that fsync (a committed batch survives the process being killed, but the last
    batches before a power cut or OS crash may be lost) and is faster on slow disks.
    """

    name = "sqlite"

    def __init__(self, path: str | os.PathLike, table: str, *, synchronous: str, busy_timeout: float) -> None:
        super().__init__(table)
        self.path = os.fspath(path)
        if self.path in ("", ":memory:") or self.path.startswith("file:"):
            raise ParameterError(
                f"SQLite store: expected a file path, got {self.path!r}; an in-memory database would "
                f"not be shared with other threads or processes, pass e.g. 'events.db'"
            )
        self.synchronous = synchronous.upper()
        self.busy_timeout = float(busy_timeout)

    def describe(self) -> str:
        return f"SQLite file {self.path!r}, table {self.table!r}"

    def connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=True)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the SQLite event store {self.path!r}: {e}; check that the "
                             f"directory exists and is writable") from e
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    def setup(self, meta: dict) -> dict:
        conn = self.connect()
        try:
            # switching to WAL needs a moment alone with the file; the busy handler does not cover
            # it, so several processes opening a new store at once retry here
            for attempt in range(200):
                try:
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) and "busy" not in str(e):
                        raise
                    time.sleep(0.01 + 0.005 * attempt)
            else:  # pragma: no cover
                raise StoreError(f"{self.describe()}: could not switch to WAL mode, the file stays locked")
            if mode.lower() != "wal":
                raise StoreError(f"{self.describe()}: the file system refused WAL mode (got {mode!r}); "
                                 f"put the store on a local disk")
            t, m = self.table, self.meta
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {t} ("
                " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " event_id TEXT NOT NULL UNIQUE,"
                " ts REAL NOT NULL,"
                " user_id TEXT NOT NULL,"
                " item_id TEXT NOT NULL,"
                " event TEXT NOT NULL,"
                " value REAL,"
                " properties TEXT,"
                " kinds INTEGER NOT NULL DEFAULT 0)"
            )
            conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_ts ON {t} (ts)")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {t}_user ON {t} (user_id)")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {m} (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            # added in place to stores an older persona created: nothing else changes
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.forgotten} ("
                         " seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL UNIQUE, at REAL NOT NULL)")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.dead} ("
                         " seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, event_id TEXT, user_id TEXT,"
                         " row TEXT NOT NULL, reason TEXT NOT NULL)")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.impressions} ("
                         " seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL UNIQUE, ts REAL NOT NULL,"
                         " user_id TEXT NOT NULL, placement TEXT, items TEXT NOT NULL, propensities TEXT,"
                         " model_version TEXT, variant TEXT, experiment TEXT, teams TEXT, source TEXT,"
                         " kinds INTEGER NOT NULL DEFAULT 0)")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {self.impressions}_ts ON {self.impressions} (ts)")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {self.impressions}_user ON {self.impressions} (user_id)")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.consent} ("
                         " user_id TEXT NOT NULL, purpose TEXT NOT NULL, granted INTEGER NOT NULL, at REAL NOT NULL,"
                         " source TEXT, PRIMARY KEY (user_id, purpose))")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {self.consent}_purpose ON {self.consent} (purpose, granted)")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.consent_log} ("
                         " seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, purpose TEXT NOT NULL,"
                         " granted INTEGER NOT NULL, at REAL NOT NULL, source TEXT)")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {self.consent_log}_user ON {self.consent_log} (user_id)")
            conn.executemany(f"INSERT OR IGNORE INTO {m} (name, value) VALUES (?, ?)", list(meta.items()))
            stored = dict(conn.execute(f"SELECT name, value FROM {m}").fetchall())
            conn.execute("COMMIT")
            return stored
        except sqlite3.Error as e:
            raise StoreError(f"{self.describe()}: cannot create the event table: {e}") from e
        finally:
            conn.close()

    def write(self, conn: Connection, rows: Sequence[Row]) -> tuple[int, list]:
        # BEGIN IMMEDIATE serialises writers and forget(), so a tombstone committed before this
        # transaction is always seen here, and one committed after it deletes these rows
        conn.execute("BEGIN IMMEDIATE")
        try:
            users = list({r[2] for r in rows})
            gone = []
            for k in range(0, len(users), 500):
                part = users[k:k + 500]
                gone += [u for (u,) in conn.execute(
                    f"SELECT user_id FROM {self.forgotten} WHERE user_id IN ({', '.join('?' * len(part))})", part)]
            if gone:
                drop = set(gone)
                rows = [r for r in rows if r[2] not in drop]
            events, imps = split_rows(rows)
            before = conn.total_changes
            if events:
                conn.executemany(
                    f"INSERT OR IGNORE INTO {self.table} (event_id, ts, user_id, item_id, event, value, properties,"
                    f" kinds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    events,
                )
            inserted = conn.total_changes - before
            if imps:
                conn.executemany(
                    f"INSERT OR IGNORE INTO {self.impressions} ({', '.join(IMPRESSION_COLUMNS)})"
                    f" VALUES ({', '.join('?' * len(IMPRESSION_COLUMNS))})",
                    [impression_values(r) for r in imps],
                )
            shown = conn.total_changes - before - inserted
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return inserted, gone, shown

    def is_row_error(self, exc: BaseException) -> bool:
        if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError, OverflowError,
                            UnicodeError, TypeError, ValueError)):
            return True
        return isinstance(exc, sqlite3.ProgrammingError) and "binding" in str(exc).lower()

    def dead_letter(self, conn: Connection, row: Row, reason: str) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"INSERT INTO {self.dead} (at, event_id, user_id, row, reason) SELECT ?, ?, ?, ?, ?"
                f" WHERE NOT EXISTS (SELECT 1 FROM {self.forgotten} WHERE user_id = ?)",
                (time.time(), _text(row[0]), _text(row[2]), row_json(row), reason, _text(row[2])),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def dead_letters(self, conn: Connection, limit: int) -> list:
        return conn.execute(f"SELECT seq, at, event_id, user_id, row, reason FROM {self.dead}"
                            f" ORDER BY seq DESC LIMIT ?", (int(limit),)).fetchall()

    def forget(self, conn: Connection, user_id: str) -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"INSERT OR IGNORE INTO {self.forgotten} (user_id, at) VALUES (?, ?)", (user_id, time.time()))
            n = conn.execute(f"DELETE FROM {self.table} WHERE user_id = ?", (user_id,)).rowcount
            conn.execute(f"DELETE FROM {self.impressions} WHERE user_id = ?", (user_id,))
            conn.execute(f"DELETE FROM {self.dead} WHERE user_id = ?", (user_id,))
            conn.execute(f"DELETE FROM {self.consent} WHERE user_id = ?", (user_id,))
            conn.execute(f"DELETE FROM {self.consent_log} WHERE user_id = ?", (user_id,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return n

    def set_consent(self, conn: Connection, user_id: str, purpose: str, granted: bool, at: float,
                    source: str | None) -> bool:
        conn.execute("BEGIN IMMEDIATE")  # one writer at a time: the log's order is the order of commits
        try:
            if conn.execute(f"SELECT 1 FROM {self.forgotten} WHERE user_id = ?", (user_id,)).fetchone():
                conn.execute("ROLLBACK")
                return False
            conn.execute(f"INSERT INTO {self.consent} (user_id, purpose, granted, at, source) VALUES (?, ?, ?, ?, ?)"
                         f" ON CONFLICT (user_id, purpose) DO UPDATE SET granted = excluded.granted,"
                         f" at = excluded.at, source = excluded.source", (user_id, purpose, int(granted), at, source))
            conn.execute(f"INSERT INTO {self.consent_log} (user_id, purpose, granted, at, source)"
                         f" VALUES (?, ?, ?, ?, ?)", (user_id, purpose, int(granted), at, source))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return True

    def purge(self, conn: Connection, before: float, limit: int) -> dict:
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = {}
            for key, table in (("events", self.table), ("impressions", self.impressions)):
                # the ts index finds the oldest rows; LIMIT keeps the transaction (and the lock) short
                out[key] = conn.execute(f"DELETE FROM {table} WHERE seq IN (SELECT seq FROM {table}"
                                        f" WHERE ts < ? ORDER BY ts LIMIT ?)", (before, int(limit))).rowcount
            out["dead_letters"] = conn.execute(f"DELETE FROM {self.dead} WHERE seq IN (SELECT seq FROM {self.dead}"
                                               f" WHERE at < ? LIMIT ?)", (before, int(limit))).rowcount
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return out

    def tombstones(self, conn: Connection, known: int) -> list | None:
        (n,) = conn.execute(f"SELECT count(*) FROM {self.forgotten}").fetchone()
        if n == known:
            return None
        return [u for (u,) in conn.execute(f"SELECT user_id FROM {self.forgotten}")]

    def select(self, conn: Connection, where: str, params: list, chunk_size: int, *,
               properties: bool = True) -> Iterator[list]:
        cur = conn.execute(
            f"SELECT event_id, ts, user_id, item_id, event, value, {'properties' if properties else 'NULL'}, kinds"
            f" FROM {self.table}{where} ORDER BY ts, seq",
            params,
        )
        while True:
            chunk = cur.fetchmany(chunk_size)
            if not chunk:
                return
            yield chunk

    def count(self, conn: Connection, where: str, params: list) -> int:
        return int(conn.execute(f"SELECT count(*) FROM {self.table}{where}", params).fetchone()[0])

    def select_impressions(self, conn: Connection, where: str, params: list) -> list:
        return conn.execute(f"SELECT {', '.join(IMPRESSION_COLUMNS)} FROM {self.impressions}{where}"
                            f" ORDER BY ts, seq", params).fetchall()

    def _one(self, conn: Connection, sql: str, params: list):
        return conn.execute(sql, params).fetchone()

    def _all(self, conn: Connection, sql: str, params: list) -> list:
        return conn.execute(sql, params).fetchall()

    @contextmanager
    def snapshot(self, conn: Connection) -> Iterator[None]:
        # in WAL mode a read transaction sees the database as of its first read, whatever commits later
        conn.execute("BEGIN")
        try:
            yield
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")


# ------------------------------------------------------------------------------------ PostgreSQL
class PostgresBackend(Backend):
    """A PostgreSQL table, written with psycopg 3; one ``INSERT ... ON CONFLICT DO NOTHING`` per batch.

    A batch travels as one statement over column arrays (``unnest``), so a batch of 1,000 events is
    one round trip and one commit. ``synchronous="full"`` keeps the server's ``synchronous_commit``
    (on by default: a commit returns once the WAL is flushed to disk); ``"normal"`` sets
    ``synchronous_commit = off`` for this store's sessions: a committed batch survives the writing
    process being killed, but the last fraction of a second of commits may be lost if the *server*
    crashes.
    """

    name = "postgres"

    def __init__(self, conninfo: str, table: str, *, synchronous: str, busy_timeout: float) -> None:
        super().__init__(table)
        self.conninfo = conninfo
        self.synchronous = synchronous
        self.busy_timeout = float(busy_timeout)

    def describe(self) -> str:
        return f"PostgreSQL {_redact(self.conninfo)!r}, table {self.table!r}"

    def _psycopg(self):
        try:
            import psycopg
        except ImportError:
            raise ImportError(
                "a PostgreSQL event store needs psycopg 3, which is not installed; "
                "pip install 'persona-recsys[postgres]' (or pip install 'psycopg[binary]')"
            ) from None
        return psycopg

    def connect(self) -> Connection:
        psycopg = self._psycopg()
        try:
            # autocommit: a batch is one explicit transaction (conn.transaction()), reads need none
            conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=max(1, int(self.busy_timeout)))
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to the PostgreSQL event store {_redact(self.conninfo)!r}: {e}") from e
        with conn.cursor() as cur:
            cur.execute("SET synchronous_commit = " + ("off" if self.synchronous == "normal" else "on"))
            # a lock held elsewhere (a migration, a VACUUM FULL) makes the batch fail and be retried
            # rather than hang the writer forever
            cur.execute(f"SET lock_timeout = {int(self.busy_timeout * 1000)}")
        return conn

    def setup(self, meta: dict) -> dict:
        psycopg = self._psycopg()
        conn = self.connect()
        t, m = self.table, self.meta
        try:
            with conn.transaction(), conn.cursor() as cur:
                # concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalogue: serialise it
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"persona.store:{t}",))
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {t} ("
                    " seq BIGSERIAL PRIMARY KEY,"
                    " event_id TEXT NOT NULL UNIQUE,"
                    " ts TIMESTAMPTZ NOT NULL,"
                    " user_id TEXT NOT NULL,"
                    " item_id TEXT NOT NULL,"
                    " event TEXT NOT NULL,"
                    " value DOUBLE PRECISION,"
                    " properties JSONB,"
                    " kinds SMALLINT NOT NULL DEFAULT 0)"
                )
                cur.execute(f"CREATE INDEX IF NOT EXISTS {t}_ts ON {t} (ts)")
                cur.execute(f"CREATE INDEX IF NOT EXISTS {t}_user ON {t} (user_id)")
                cur.execute(f"CREATE TABLE IF NOT EXISTS {m} (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                # added in place to stores an older persona created: nothing else changes
                cur.execute(f"CREATE TABLE IF NOT EXISTS {self.forgotten} ("
                            " seq BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL UNIQUE,"
                            " at TIMESTAMPTZ NOT NULL DEFAULT now())")
                cur.execute(f"CREATE TABLE IF NOT EXISTS {self.dead} ("
                            " seq BIGSERIAL PRIMARY KEY, at TIMESTAMPTZ NOT NULL DEFAULT now(), event_id TEXT,"
                            " user_id TEXT, row TEXT NOT NULL, reason TEXT NOT NULL)")
                cur.execute(f"CREATE TABLE IF NOT EXISTS {self.impressions} ("
                            " seq BIGSERIAL PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, ts TIMESTAMPTZ NOT NULL,"
                            " user_id TEXT NOT NULL, placement TEXT, items JSONB NOT NULL, propensities JSONB,"
                            " model_version TEXT, variant TEXT, experiment TEXT, teams JSONB, source TEXT,"
                            " kinds SMALLINT NOT NULL DEFAULT 0)")
                cur.execute(f"CREATE INDEX IF NOT EXISTS {self.impressions}_ts ON {self.impressions} (ts)")
                cur.execute(f"CREATE INDEX IF NOT EXISTS {self.impressions}_user ON {self.impressions} (user_id)")
                cur.execute(f"CREATE TABLE IF NOT EXISTS {self.consent} ("
                            " user_id TEXT NOT NULL, purpose TEXT NOT NULL, granted BOOLEAN NOT NULL,"
                            " at TIMESTAMPTZ NOT NULL, source TEXT, PRIMARY KEY (user_id, purpose))")
                cur.execute(f"CREATE INDEX IF NOT EXISTS {self.consent}_purpose ON {self.consent} (purpose, granted)")
                cur.execute(f"CREATE TABLE IF NOT EXISTS {self.consent_log} ("
                            " seq BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL, purpose TEXT NOT NULL,"
                            " granted BOOLEAN NOT NULL, at TIMESTAMPTZ NOT NULL, source TEXT)")
                cur.execute(f"CREATE INDEX IF NOT EXISTS {self.consent_log}_user ON {self.consent_log} (user_id)")
                cur.executemany(f"INSERT INTO {m} (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                                list(meta.items()))
                cur.execute(f"SELECT name, value FROM {m}")
                return dict(cur.fetchall())
        except psycopg.Error as e:
            raise StoreError(f"{self.describe()}: cannot create the event table: {e}") from e
        finally:
            conn.close()

    def write(self, conn: Connection, rows: Sequence[Row]) -> tuple[int, list]:
        with conn.transaction(), conn.cursor() as cur:
            # ROW EXCLUSIVE first: forget() takes SHARE ROW EXCLUSIVE, so it waits for this batch
            # to commit (and deletes its rows) or this batch waits for it (and sees the tombstone)
            cur.execute(f"LOCK TABLE {self.table} IN ROW EXCLUSIVE MODE")
            cur.execute(f"SELECT user_id FROM {self.forgotten} WHERE user_id = ANY(%s::text[])",
                        (list({r[2] for r in rows}),))
            gone = [u for (u,) in cur.fetchall()]
            if gone:
                drop = set(gone)
                rows = [r for r in rows if r[2] not in drop]
            events, imps = split_rows(rows)
            inserted = shown = 0
            if events:
                cols = list(zip(*events))
                cur.execute(
                    f"INSERT INTO {self.table} (event_id, ts, user_id, item_id, event, value, properties, kinds)"
                    " SELECT e, to_timestamp(t), u, i, ev, v, p::jsonb, k"
                    " FROM unnest(%s::text[], %s::float8[], %s::text[], %s::text[], %s::text[], %s::float8[],"
                    " %s::text[], %s::int2[]) AS x(e, t, u, i, ev, v, p, k)"
                    " ON CONFLICT (event_id) DO NOTHING",
                    [list(c) for c in cols],
                )
                inserted = cur.rowcount
            if imps:
                cols = list(zip(*(impression_values(r) for r in imps)))
                cur.execute(
                    f"INSERT INTO {self.impressions} ({', '.join(IMPRESSION_COLUMNS)})"
                    " SELECT r, to_timestamp(t), u, pl, it::jsonb, pr::jsonb, mv, va, ex, te::jsonb, so, k"
                    " FROM unnest(%s::text[], %s::float8[], %s::text[], %s::text[], %s::text[], %s::text[],"
                    " %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::int2[])"
                    " AS x(r, t, u, pl, it, pr, mv, va, ex, te, so, k)"
                    " ON CONFLICT (request_id) DO NOTHING",
                    [list(c) for c in cols],
                )
                shown = cur.rowcount
            return inserted, gone, shown

    def is_row_error(self, exc: BaseException) -> bool:
        psycopg = self._psycopg()
        state = getattr(exc, "sqlstate", None) or ""
        # 22: data exception (a time out of range, bad JSON), 23: a constraint, 54: a size limit
        # (an index row too big); client-side: a value psycopg cannot send
        if state[:2] in ("22", "23", "54"):
            return True
        if state:
            return False
        return isinstance(exc, (psycopg.DataError, psycopg.IntegrityError, OverflowError, UnicodeError,
                                TypeError, ValueError))

    def dead_letter(self, conn: Connection, row: Row, reason: str) -> None:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO {self.dead} (event_id, user_id, row, reason) SELECT %s, %s, %s, %s"
                f" WHERE NOT EXISTS (SELECT 1 FROM {self.forgotten} WHERE user_id = %s)",
                (_pg_text(row[0]), _pg_text(row[2]), _pg_text(row_json(row)), _pg_text(reason), _pg_text(row[2])),
            )

    def dead_letters(self, conn: Connection, limit: int) -> list:
        with conn.cursor() as cur:
            cur.execute(f"SELECT seq, extract(epoch from at)::float8, event_id, user_id, row, reason FROM {self.dead}"
                        f" ORDER BY seq DESC LIMIT %s", (int(limit),))
            return cur.fetchall()

    def forget(self, conn: Connection, user_id: str) -> int:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(f"INSERT INTO {self.forgotten} (user_id) VALUES (%s) ON CONFLICT (user_id) DO NOTHING",
                        (user_id,))
            # waits for batches being written (their rows are then deleted below) and holds new ones
            # back until the tombstone is committed (they then leave the user out)
            cur.execute(f"LOCK TABLE {self.table} IN SHARE ROW EXCLUSIVE MODE")
            cur.execute(f"DELETE FROM {self.table} WHERE user_id = %s", (user_id,))
            n = cur.rowcount
            cur.execute(f"DELETE FROM {self.impressions} WHERE user_id = %s", (user_id,))
            cur.execute(f"DELETE FROM {self.dead} WHERE user_id = %s", (user_id,))
            # as set_consent: an answer being recorded commits first (and is deleted here) or sees the tombstone
            cur.execute(f"LOCK TABLE {self.consent_log} IN SHARE ROW EXCLUSIVE MODE")
            cur.execute(f"DELETE FROM {self.consent} WHERE user_id = %s", (user_id,))
            cur.execute(f"DELETE FROM {self.consent_log} WHERE user_id = %s", (user_id,))
            return n

    def set_consent(self, conn: Connection, user_id: str, purpose: str, granted: bool, at: float,
                    source: str | None) -> bool:
        with conn.transaction(), conn.cursor() as cur:
            # answers are recorded one at a time, so the log's sequence numbers follow the commits and a
            # reader that has seen number n has seen every answer before it
            cur.execute(f"LOCK TABLE {self.consent_log} IN SHARE ROW EXCLUSIVE MODE")
            cur.execute(f"SELECT 1 FROM {self.forgotten} WHERE user_id = %s", (user_id,))
            if cur.fetchone() is not None:
                return False
            cur.execute(f"INSERT INTO {self.consent} (user_id, purpose, granted, at, source)"
                        f" VALUES (%s, %s, %s, to_timestamp(%s), %s) ON CONFLICT (user_id, purpose) DO UPDATE SET"
                        f" granted = excluded.granted, at = excluded.at, source = excluded.source",
                        (user_id, purpose, bool(granted), at, source))
            cur.execute(f"INSERT INTO {self.consent_log} (user_id, purpose, granted, at, source)"
                        f" VALUES (%s, %s, %s, to_timestamp(%s), %s)", (user_id, purpose, bool(granted), at, source))
        return True

    def _epoch(self, column: str) -> str:
        return f"extract(epoch from {column})::float8"

    def purge(self, conn: Connection, before: float, limit: int) -> dict:
        out = {}
        with conn.transaction(), conn.cursor() as cur:
            for key, table in (("events", self.table), ("impressions", self.impressions)):
                cur.execute(f"DELETE FROM {table} WHERE seq IN (SELECT seq FROM {table}"
                            f" WHERE ts < to_timestamp(%s) ORDER BY ts LIMIT %s)", (before, int(limit)))
                out[key] = cur.rowcount
            cur.execute(f"DELETE FROM {self.dead} WHERE seq IN (SELECT seq FROM {self.dead}"
                        f" WHERE at < to_timestamp(%s) LIMIT %s)", (before, int(limit)))
            out["dead_letters"] = cur.rowcount
        return out

    def tombstones(self, conn: Connection, known: int) -> list | None:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {self.forgotten}")
            if cur.fetchone()[0] == known:
                return None
            cur.execute(f"SELECT user_id FROM {self.forgotten}")
            return [u for (u,) in cur.fetchall()]

    def _sql(self, where: str) -> str:
        return where.replace("ts >= ?", "ts >= to_timestamp(?)").replace("ts < ?", "ts < to_timestamp(?)") \
            .replace("?", "%s")

    def select(self, conn: Connection, where: str, params: list, chunk_size: int, *,
               properties: bool = True) -> Iterator[list]:
        # a server-side cursor streams the table in chunks instead of loading it into the client;
        # it lives in the transaction that snapshot() opened
        with conn.cursor(name="persona_store_select") as cur:
            cur.itersize = chunk_size
            cur.execute(
                f"SELECT event_id, extract(epoch from ts)::float8, user_id, item_id, event, value,"
                f" {'properties::text' if properties else 'NULL::text'}, kinds"
                f" FROM {self.table}{self._sql(where)} ORDER BY ts, seq",
                params,
            )
            while True:
                chunk = cur.fetchmany(chunk_size)
                if not chunk:
                    return
                yield chunk

    def count(self, conn: Connection, where: str, params: list) -> int:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {self.table}{self._sql(where)}", params)
            return int(cur.fetchone()[0])

    def select_impressions(self, conn: Connection, where: str, params: list) -> list:
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT request_id, extract(epoch from ts)::float8, user_id, placement, items::text,"
                f" propensities::text, model_version, variant, experiment, teams::text, source, kinds"
                f" FROM {self.impressions}{self._sql(where)} ORDER BY ts, seq", params)
            return cur.fetchall()

    def _one(self, conn: Connection, sql: str, params: list):
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()

    def _all(self, conn: Connection, sql: str, params: list) -> list:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    @contextmanager
    def snapshot(self, conn: Connection) -> Iterator[None]:
        with conn.transaction():
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield


def row_json(row: Row) -> str:
    """A queued row as JSON text, for the dead-letter table (whatever odd values it holds)."""
    if type(row) is ImpressionRow:
        return json.dumps({"impression": dict(zip(IMPRESSION_COLUMNS, row))}, default=repr, ensure_ascii=True)
    e, t, u, i, ev, v, p, k = row
    return json.dumps({"event_id": e, "ts": t, "user_id": u, "item_id": i, "event": ev, "value": v,
                       "properties": p, "kinds": k}, default=repr, ensure_ascii=True)


def _text(x) -> str | None:
    return None if x is None else x if isinstance(x, str) else repr(x)


def _pg_text(x) -> str | None:
    """Text PostgreSQL accepts: no NUL characters and no lone surrogates."""
    x = _text(x)
    if x is None:
        return None
    return x.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


def _redact(conninfo: str) -> str:
    """The connection string without its password, for messages."""
    s = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", conninfo)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", s)


def make_backend(target, table: str, *, synchronous: str, busy_timeout: float) -> Backend:
    """A backend for ``target``: a ``postgresql://`` URL, an ``sqlite:///`` URL, or a file path."""
    if isinstance(target, Backend):
        return target
    if isinstance(target, (str, os.PathLike)):
        s = os.fspath(target)
        if isinstance(s, str) and s.startswith(("postgresql://", "postgres://")):
            return PostgresBackend(s, table, synchronous=synchronous, busy_timeout=busy_timeout)
        if isinstance(s, str) and s.startswith("sqlite:///"):
            s = s[len("sqlite:///"):]  # sqlite:///rel.db -> rel.db, sqlite:////abs.db -> /abs.db
        return SQLiteBackend(s, table, synchronous=synchronous, busy_timeout=busy_timeout)
    raise ParameterError(
        f"store target: expected a file path (SQLite) or a 'postgresql://...' URL, got {type(target).__name__}"
    )
