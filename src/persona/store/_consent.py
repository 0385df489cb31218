"""The consent registry of an :class:`~persona.store.EventStore`: who agreed to what, shared by every
process over the store (the service, the planner, analytics).

Two tables beside the events hold it: ``<table>_consent`` the current answer per user and purpose
(``granted``, ``at``, ``source``), and ``<table>_consent_log`` every change in order -- the record a
shop shows to prove when consent was given or withdrawn. A change is written at once, in the
caller's thread (a click on a consent banner is rare; it must hold before the next request).

A purpose without a record for a user takes its default: opt-out purposes (``personalisation``,
``analytics``) are allowed until withdrawn, opt-in purposes (every ``marketing:<channel>``) are
not allowed until granted. ``EventStore(consent_defaults=...)`` declares new purposes or changes a
default; a purpose that is neither built in nor declared is refused, so a misspelt purpose never
records a withdrawal that nothing reads.

Reading is cheap enough for every request: the first :meth:`Consent.allows` of a purpose in a
process reads the users whose answer differs from its default (one query), and a background thread
then reads the changes of any process every ``refresh`` seconds (the log's sequence numbers, which
consent writes take in commit order); a lookup is a set membership test.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Iterable, Mapping

from ..errors import ParameterError
from ._writer import close_quietly, db_lock

if TYPE_CHECKING:
    from .backends import Backend

__all__ = ["Consent", "PURPOSES", "DEFAULT_CONSENT", "check_purpose"]

log = logging.getLogger("persona.store")

#: the built-in purposes and whether a user without a record allows them (True: opt-out, False: opt-in)
DEFAULT_CONSENT: dict[str, bool] = {
    "personalisation": True,   # recommendations from a user's own behaviour (the service)
    "analytics": True,         # behaviour analytics and reports over the user's events
    "marketing:email": False,  # messages the Planner sends on a channel: opt-in, channel by channel
    "marketing:sms": False,
    "marketing:push": False,
    "marketing:web": False,
}
PURPOSES = tuple(DEFAULT_CONSENT)
_PURPOSE = re.compile(r"^[a-z][a-z0-9_.-]*(?::[a-z0-9_.-]+)*$")
MAX_PURPOSE_LENGTH = 64
MAX_SOURCE_LENGTH = 256


def check_purpose(purpose, what: str = "purpose") -> str:
    """A purpose name: lower-case letters, digits and ``_ . -``, parts joined by ``:`` (``marketing:sms``)."""
    if not isinstance(purpose, str) or not 0 < len(purpose) <= MAX_PURPOSE_LENGTH or not _PURPOSE.match(purpose):
        raise ParameterError(f"{what}: expected a purpose name such as 'personalisation', 'analytics' or "
                             f"'marketing:email' (lower-case letters, digits, _ . -, parts joined by ':', at most "
                             f"{MAX_PURPOSE_LENGTH} characters), got {purpose!r:.80}")
    return purpose


def consent_defaults(extra: Mapping[str, bool] | None) -> dict[str, bool]:
    """The built-in defaults updated with a store's ``consent_defaults``."""
    out = dict(DEFAULT_CONSENT)
    if extra is None:
        return out
    if not isinstance(extra, Mapping):
        raise ParameterError(f"consent_defaults: expected a dict of purpose -> bool (True: allowed until "
                             f"withdrawn, False: only once granted), got {type(extra).__name__}")
    for purpose, default in extra.items():
        check_purpose(purpose, "consent_defaults")
        if not isinstance(default, bool):
            raise ParameterError(f"consent_defaults[{purpose!r}]: expected True (opt-out: allowed until withdrawn) "
                                 f"or False (opt-in: only once granted), got {default!r}")
        out[purpose] = default
    return out


class Consent:
    """The consent answers of one store, as this process knows them; see the module docstring."""

    def __init__(self, backend: Backend, *, defaults: dict[str, bool], refresh: float) -> None:
        self._backend = backend
        self.defaults = defaults
        self._refresh = refresh
        self._stopped = False
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()  # guards the sets, the cursor and the counters
        self._read_lock = threading.Lock()  # one registry read at a time (the cursor moves in order)
        self._differ: dict[str, frozenset] = {}  # watched purpose -> stored users whose answer is not the default
        self._seq = 0  # the last change of the log applied to the sets
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reset_after_fork(self) -> None:
        self._init_state()

    def stop(self) -> None:
        self._stopped = True
        self._stop.set()

    # -------------------------------------------------------------------------------- purposes
    def default(self, purpose: str) -> bool:
        """Whether a user without a record allows ``purpose``; refuses an undeclared purpose."""
        d = self.defaults.get(purpose)
        if d is not None:
            return d
        check_purpose(purpose)
        if purpose.startswith("marketing:"):
            return False  # a shop's own channel: opt-in, as every marketing channel
        raise ParameterError(f"consent: unknown purpose {purpose!r}; known: {sorted(self.defaults)} and "
                             f"'marketing:<channel>'. Declare a new one with EventStore(consent_defaults="
                             f"{{{purpose!r}: False}}) (False: opt-in, True: opt-out)")

    # ---------------------------------------------------------------------------------- lookups
    def allows(self, stored_user: str, purpose: str) -> bool:
        """The user's answer for ``purpose`` as last read (a set lookup once the purpose is watched)."""
        differ = self._differ.get(purpose)
        if differ is None:
            differ = self._watch(purpose)
        return (stored_user in differ) != self.defaults.get(purpose, False)

    def _watch(self, purpose: str) -> frozenset:
        """Read the users whose answer for ``purpose`` differs from its default, and keep it current."""
        default = self.default(purpose)
        with self._read_lock:
            differ = self._differ.get(purpose)
            if differ is not None:
                return differ
            try:
                with db_lock():
                    conn = self._backend.connect()
                try:
                    # the changes since the last read matter only to the purposes already watched
                    after = self._seq if self._differ else None
                    with db_lock():
                        users, seq, changes = self._backend.consent_differing(conn, purpose, not default, after)
                finally:
                    with db_lock():
                        conn.close()
            except Exception as e:  # noqa: BLE001 -- a request must not fail for it: the defaults answer
                with self._lock:
                    self.errors += 1
                log.error("persona.store: cannot read the consent records of %s (%s); answering %r with its "
                          "default (%s) until it can", self._backend.describe(), e, purpose, default)
                return frozenset()
            with self._lock:
                self._apply(changes)
                self._differ[purpose] = frozenset(users)
                self._seq = max(self._seq, seq)
                if purpose not in self.defaults:
                    self.defaults = {**self.defaults, purpose: default}
        self._start()
        return self._differ[purpose]

    def known(self, stored_user: str, purpose: str, granted: bool) -> None:
        """This process recorded an answer: apply it at once (the background read confirms it)."""
        with self._lock:
            differ = self._differ.get(purpose)
            if differ is None:
                return
            if granted != self.defaults.get(purpose, False):
                self._differ[purpose] = differ | {stored_user}
            else:
                self._differ[purpose] = differ - {stored_user}

    def _apply(self, changes: Iterable) -> None:
        """Apply logged changes (seq, user, purpose, granted) in order to the watched purposes; lock held."""
        for seq, user, purpose, granted in changes:
            differ = self._differ.get(purpose)
            if differ is not None:
                if bool(granted) != self.defaults.get(purpose, False):
                    differ = differ | {user}
                else:
                    differ = differ - {user}
                self._differ[purpose] = differ
            self._seq = max(self._seq, int(seq))

    def forgotten(self, stored_user: str) -> None:
        """A user was forgotten (their records deleted): they answer with the defaults from now on."""
        with self._lock:
            for purpose, differ in self._differ.items():
                if stored_user in differ:
                    self._differ[purpose] = differ - {stored_user}

    # ------------------------------------------------------------------------------ refreshing
    def _start(self) -> None:
        if self._thread is not None or self._stopped:
            return
        with self._lock:
            if self._thread is not None:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(self._stop,), name="persona-store-consent",
                                            daemon=True)
            self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        conn = None
        try:
            while not stop.wait(self._refresh):
                try:
                    with self._read_lock:
                        with db_lock():
                            if conn is None:
                                conn = self._backend.connect()
                            changes = self._backend.consent_changes(conn, self._seq)
                        with self._lock:
                            self._apply(changes)
                except Exception as e:  # noqa: BLE001 -- the answers known so far stay; retried next time
                    with db_lock():
                        conn = close_quietly(conn)
                    with self._lock:
                        self.errors += 1
                        first = self.errors == 1
                    (log.error if first else log.debug)(
                        "persona.store: cannot read the consent changes of %s (%s); using the answers known so far",
                        self._backend.describe(), e)
        finally:
            with db_lock():
                close_quietly(conn)


def check_source(source) -> str | None:
    if source is None:
        return None
    if not isinstance(source, str) or not source or len(source) > MAX_SOURCE_LENGTH or "\x00" in source:
        raise ParameterError(f"set_consent: source expected a short text saying where the answer came from "
                             f"(e.g. 'cookie-banner v3', at most {MAX_SOURCE_LENGTH} characters), got {source!r:.80}")
    return source


def now() -> float:
    return time.time()
