"""Saving and loading artifacts (JSON manifest + .npy arrays; never pickle).

This room knows files, not models: a model is loaded by :func:`persona.load` (which lives with the
models, in :mod:`persona.models`), so ``persona.io`` imports nothing above it.
"""

from __future__ import annotations

from .artifact import FORMAT_VERSION, changed_since_load, read_artifact, write_artifact

__all__ = ["FORMAT_VERSION", "read_artifact", "write_artifact", "changed_since_load"]


def __getattr__(name: str):
    # ``persona.io.load`` was the model loader's old home; it stays working, but the loader belongs
    # with the models, so this room is not made to import the room above it.
    if name == "load":
        import warnings

        warnings.warn("persona.io.load moved: use persona.load (or persona.models.load)", DeprecationWarning,
                      stacklevel=2)
        from ..models import load

        return load
    raise AttributeError(f"module 'persona.io' has no attribute {name!r}")
