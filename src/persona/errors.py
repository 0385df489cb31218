"""The exceptions persona raises on purpose.

Every error the library raises deliberately derives from :class:`PersonaError`, so a host
application can catch ``ps.PersonaError`` around a request without catching programming bugs.
Messages follow one form: what was expected, what came, and what to do.
"""

from __future__ import annotations

__all__ = [
    "PersonaError",
    "DataError",
    "UnknownUserError",
    "UnknownItemError",
    "NotFittedError",
    "ArtifactError",
    "ParameterError",
    "UnsupportedError",
    "StoreError",
]


class PersonaError(Exception):
    """Base class of every error persona raises on purpose."""


class DataError(PersonaError, ValueError):
    """Bad input data: the message names the column, rows and values, and what to do."""


class UnknownUserError(PersonaError, KeyError):
    """A user id the model has never seen (and no fallback was configured)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class UnknownItemError(PersonaError, KeyError):
    """An item id the model has never seen."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotFittedError(PersonaError, AttributeError):
    """A model was asked to recommend before ``fit`` was called."""


class ArtifactError(PersonaError):
    """A saved model artifact is missing, corrupt, of an unknown format version or class."""


class ParameterError(PersonaError, ValueError):
    """A bad argument or hyperparameter (n <= 0, factors <= 0, an unknown option)."""


class UnsupportedError(PersonaError, NotImplementedError):
    """The model cannot answer this kind of question (e.g. item similarity from popularity)."""


class StoreError(PersonaError, RuntimeError):
    """The event store could not write or read: the database is gone, locked or refused a batch.

    Raised by ``EventStore.flush()`` / ``close()`` with the number of events not yet written, so a
    writer failure is never silent.
    """
