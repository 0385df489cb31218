"""Inference of persona's deep models through onnxruntime (no PyTorch needed to serve)."""

from .session import OnnxModel, default_providers

__all__ = ["OnnxModel", "default_providers"]
