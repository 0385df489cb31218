"""One ONNX graph run by onnxruntime, shared by every thread of a process.

The session is created on first use, not when the model is loaded, so that loading stays cheap
and a process that never serves the model never pays for it. A lock guards only the creation;
``InferenceSession.run`` itself is thread-safe in onnxruntime, so requests run in parallel.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from .._validate import check_int
from ..errors import ArtifactError, ParameterError

__all__ = ["OnnxModel", "default_providers", "check_no_external_data"]

log = logging.getLogger("persona.onnx")


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, then CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    out = [p for p in ("CUDAExecutionProvider",) if p in available]
    return out + ["CPUExecutionProvider"]


# Which fields of which ONNX protobuf messages hold messages that may hold tensors (onnx.proto
# field numbers). A tensor is TensorProto: field 13 external_data, field 14 data_location (1 = EXTERNAL).
_SUB = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_MAX_DEPTH = 64


def _varint(buf, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, pos
        shift += 7


def _external_tensor(buf, kind: str, depth: int) -> bool:
    """True when a tensor anywhere in this message refers to external data (protobuf wire format)."""
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deeply")
    pos, sub = 0, _SUB[kind]
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            if kind == "tensor" and field == 14 and value != 0:
                return True
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
            end = pos + size
            if end > len(buf):
                raise ValueError("truncated field")
            if kind == "tensor" and field == 13:
                return True
            if field in sub and _external_tensor(buf[pos:end], sub[field], depth + 1):
                return True
            pos = end
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
    return False


def _external_data_problem(graph: bytes, what: str = "the ONNX graph"):
    """None, or ("external" | "malformed", message) for a serialized ModelProto."""
    try:
        external = _external_tensor(memoryview(graph), "model", 0)
    except (ValueError, IndexError) as e:
        return "malformed", f"{what} is not a valid ONNX model ({e}); save the model again"
    if external:
        return "external", (f"{what}: expected every weight inside the graph, got a tensor that references "
                            "external data (a file outside it); artifacts may not reference external data, "
                            "export the graph with its weights embedded")
    return None


def check_no_external_data(graph: bytes, what: str = "the ONNX graph") -> None:
    """ArtifactError when ``graph`` (a serialized ModelProto) has a tensor stored as external data,
    or cannot be parsed.

    onnxruntime resolves external data paths against the model's folder or, for a graph given as
    bytes, the working directory, and reads whatever file they name; a graph inside an artifact
    must carry all of its weights itself. Walks the protobuf wire format, so it needs no onnx package.
    """
    problem = _external_data_problem(graph, what)
    if problem:
        raise ArtifactError(problem[1])


# runs over this many rows at most go to a single-threaded session (see OnnxModel)
_SMALL_RUN_ROWS = 4
_SMALL_SESSION_MAX_BYTES = 256 << 20


class OnnxModel:
    """A lazily created onnxruntime session over one graph with one input and one output.

    Parameters
    ----------
    path_or_bytes : str, os.PathLike or bytes
        The serialized graph, or the path of an ``.onnx`` file (read when the session is made).
    providers : list of str, optional
        onnxruntime execution providers in order of preference; default: CUDA when this
        onnxruntime build has it, then CPU (see :func:`default_providers`).
    intra_op_threads, inter_op_threads : int
        onnxruntime's thread pools; 0 lets onnxruntime choose. With 0, a run over a few rows
        (a single user's request) goes to a second, single-threaded session made on first use:
        a request that small does not gain from a thread pool, and on a busy machine it waits
        for the pool's slowest thread (measured: a one-user SASRec Hybrid recommend went from
        p50 7.7 / p99 16 ms to 4.0 / 4.7 ms). Graphs above 256 MB keep one session.

    Examples
    --------
    >>> import numpy as np, onnx
    >>> from onnx import helper, TensorProto
    >>> graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
    ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
    ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])])
    >>> raw = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    >>> OnnxModel(raw).run(np.array([[-1.0, 2.0]], dtype=np.float32)).tolist()
    [[0.0, 2.0]]
    """

    def __init__(self, path_or_bytes, *, providers=None, intra_op_threads: int = 0, inter_op_threads: int = 0):
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            self._source = bytes(path_or_bytes)
        elif isinstance(path_or_bytes, (str, os.PathLike)):
            self._source = str(Path(path_or_bytes))
        else:
            raise ParameterError(f"OnnxModel expects the graph as bytes or a file path, got "
                                 f"{type(path_or_bytes).__name__}")
        if providers is not None and (isinstance(providers, str) or not all(isinstance(p, str) for p in providers)):
            raise ParameterError(f"providers must be a list of onnxruntime provider names, got {providers!r}")
        self.providers = None if providers is None else list(providers)
        self.intra_op_threads = check_int(intra_op_threads, "intra_op_threads", min=0,
                                          expected="an integer >= 0 (0: onnxruntime's default)")
        self.inter_op_threads = check_int(inter_op_threads, "inter_op_threads", min=0,
                                          expected="an integer >= 0 (0: onnxruntime's default)")
        self._session = None
        self._small = None
        self._lock = threading.Lock()
        self._unreadable = None
        if isinstance(self._source, bytes):
            # a graph as bytes (e.g. from an artifact) has no folder of its own: refuse external data
            # now (at load); a graph this walker cannot parse never reaches onnxruntime either
            self._unreadable = _external_data_problem(self._source)
            if self._unreadable and self._unreadable[0] == "external":
                raise ArtifactError(self._unreadable[1])

    def __repr__(self) -> str:
        src = f"{len(self._source)} bytes" if isinstance(self._source, bytes) else repr(self._source)
        return f"OnnxModel({src}, providers={self.providers!r})"

    def __getstate__(self):
        # the session and its lock are process-local; a copy makes its own on first use
        return {k: v for k, v in self.__dict__.items() if k not in ("_session", "_small", "_lock")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._session = None
        self._small = None
        self._lock = threading.Lock()

    @property
    def session(self):
        """The onnxruntime ``InferenceSession`` (created on first access)."""
        s = self._session
        if s is None:
            with self._lock:
                if self._session is None:
                    self._session = self._create()
                s = self._session
        return s

    def _small_session(self):
        """The single-threaded session for few-row runs (None: use the main one)."""
        if self.intra_op_threads or self.inter_op_threads:
            return None
        if isinstance(self._source, bytes) and len(self._source) > _SMALL_SESSION_MAX_BYTES:
            return None
        s = self._small
        if s is None:
            self.session  # noqa: B018 -- the main session first: it validates the graph
            with self._lock:
                if self._small is None:
                    self._small = self._create(threads=1)
                s = self._small
        return s

    def _create(self, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads if threads is None else threads
        opts.inter_op_num_threads = self.inter_op_threads if threads is None else threads
        opts.log_severity_level = 3
        providers = self.providers or default_providers()
        if getattr(self, "_unreadable", None):
            raise ArtifactError(f"onnxruntime could not load the stored graph: {self._unreadable[1]}")
        try:
            sess = ort.InferenceSession(self._source, sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            where = self._source if isinstance(self._source, str) else "the stored graph"
            raise ArtifactError(f"onnxruntime could not load {where}: {e}") from None
        if len(sess.get_inputs()) != 1 or len(sess.get_outputs()) != 1:
            raise ArtifactError("OnnxModel expects a graph with one input and one output, got "
                                f"{len(sess.get_inputs())} and {len(sess.get_outputs())}")
        log.info("onnxruntime session ready on %s", sess.get_providers())
        return sess

    @property
    def source(self):
        """The graph as given: bytes, or a path string."""
        return self._source

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """Run the graph on one input array; returns its one output array."""
        sess = None
        if inputs.ndim and inputs.shape[0] <= _SMALL_RUN_ROWS:
            sess = self._small_session()
        if sess is None:
            sess = self.session
        name = sess.get_inputs()[0].name
        try:
            return sess.run(None, {name: inputs})[0]
        except Exception as e:  # onnxruntime's own types: the inputs disagree with the graph
            raise ArtifactError(f"onnxruntime could not run the graph on inputs of shape {inputs.shape} ({e}); "
                                "the graph and the model's arrays disagree, save the model again") from None
