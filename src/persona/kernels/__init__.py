"""Hot loops behind plain-array functions; models call these, never a backend directly."""

from .topk import BACKENDS, available_backends, topk, topk_backend

__all__ = ["topk", "topk_backend", "available_backends", "BACKENDS"]
