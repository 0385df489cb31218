"""Facts about the machine a benchmark ran on, stored beside every result."""

from __future__ import annotations

import os
import platform
import sys


def machine_facts() -> dict:
    import numpy as np
    import scipy

    facts = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    try:
        import persona

        facts["persona"] = persona.__version__
        from persona.kernels import topk_backend

        facts["topk_backend"] = topk_backend()
    except ImportError:  # pragma: no cover
        pass
    for mod in ("numba", "implicit", "faiss", "onnxruntime", "torch"):
        try:
            facts[mod] = __import__(mod).__version__
        except Exception:
            pass
    try:
        from threadpoolctl import threadpool_info

        facts["blas"] = [
            {k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for d in threadpool_info() if d.get("user_api") == "blas"
        ]
    except ImportError:
        facts["blas"] = "threadpoolctl not installed"
    return facts
