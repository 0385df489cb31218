"""Hot loops behind plain-array functions; models call these, never a backend directly."""

from .topk import BACKENDS, available_backends, topk, topk_backend

__all__ = ["topk", "topk_backend", "available_backends", "BACKENDS", "info"]


def info() -> dict:
    """What the kernels run on here: chosen and available backends, OpenMP, default threads.

    >>> sorted(info())
    ['available', 'max_threads', 'openmp', 'topk_backend']
    """
    out = {"topk_backend": topk_backend(), "available": available_backends(), "openmp": False, "max_threads": 1}
    try:
        from .. import _core

        out["openmp"] = bool(_core.openmp)
        out["max_threads"] = int(_core.max_threads())
    except ImportError:
        pass
    return out
