"""Saving and loading artifacts (JSON manifest + .npy arrays; never pickle)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .artifact import FORMAT_VERSION, changed_since_load, read_artifact, write_artifact

if TYPE_CHECKING:  # persona.models imports this package: no run-time cycle
    from ..models.base import Recommender

__all__ = ["FORMAT_VERSION", "read_artifact", "write_artifact", "load", "changed_since_load"]


def load(path: str | os.PathLike, *, mmap: bool = False, key: bytes | str | None = None) -> Recommender:
    """Load any saved persona model; the class is read from the manifest.

    Only classes registered as persona models can be named there, so loading never runs code
    taken from the file. ``key`` requires the artifact's HMAC signature (``model.save(path, key=...)``).
    Anything but a path raises :class:`~persona.ArtifactError`.
    """
    from ..models.base import Recommender

    return Recommender.load(path, mmap=mmap, key=key)
