"""Inference through onnxruntime: persona's deep models (no PyTorch needed to serve) and the packaged sentence encoder."""

from .sentence import SentenceEncoder, packaged_encoder_available
from .session import OnnxModel, default_providers

__all__ = ["OnnxModel", "default_providers", "SentenceEncoder", "packaged_encoder_available"]
