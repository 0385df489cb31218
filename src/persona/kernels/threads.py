"""Thread-count control for the Numba kernels and BLAS, scoped to a block and restored after."""

from __future__ import annotations

import logging

__all__ = ["numba_threads", "blas_threads"]

log = logging.getLogger("persona.kernels")


class numba_threads:
    """Run a block with ``n`` Numba threads (``0``: leave the setting alone), then restore it.

    Numba's thread count is per calling thread, so two fits in two threads do not interfere.
    """

    def __init__(self, n: int) -> None:
        self.n = int(n or 0)
        self.old = None

    def __enter__(self):
        if self.n > 0:
            import numba

            limit = numba.config.NUMBA_NUM_THREADS
            if self.n > limit:
                log.warning("num_threads=%d exceeds Numba's thread pool (%d, set by NUMBA_NUM_THREADS); "
                            "using %d", self.n, limit, limit)
            self.old = numba.get_num_threads()
            numba.set_num_threads(min(self.n, limit))
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            import numba

            numba.set_num_threads(self.old)
        return False


class blas_threads:
    """Limit BLAS threads to ``n`` inside the block (``0``: leave as is), with threadpoolctl."""

    def __init__(self, n: int) -> None:
        self.n = int(n or 0)
        self._ctl = None

    def __enter__(self):
        if self.n > 0:
            from threadpoolctl import threadpool_limits

            self._ctl = threadpool_limits(limits=self.n, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self._ctl is not None:
            self._ctl.restore_original_limits()
        return False
