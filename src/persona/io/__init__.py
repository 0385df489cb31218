"""Saving and loading artifacts (JSON manifest + .npy arrays; never pickle)."""

from .artifact import FORMAT_VERSION, read_artifact, write_artifact

__all__ = ["FORMAT_VERSION", "read_artifact", "write_artifact", "load"]


def load(path, *, mmap: bool = False):
    """Load any saved persona model; the class is read from the manifest.

    Only classes registered as persona models can be named there, so loading never runs code
    taken from the file.
    """
    from ..models.base import Recommender

    return Recommender.load(path, mmap=mmap)
