"""Thread-count control for the Numba kernels and BLAS, scoped to a block and restored after."""

from __future__ import annotations

import logging
import sys
import threading

__all__ = ["numba_threads", "blas_threads", "small_request"]

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


# A request for a row or a few is too small to gain from several BLAS threads, and on a busy machine
# a multi-threaded product waits for its slowest thread: one preempted thread costs a whole
# scheduler slice (~4 ms), which is where single-user p99 went. ``small_request`` runs such a block
# on one BLAS thread. The limit is process-wide in OpenBLAS, so concurrent requests share it: the
# first to enter sets it, the last to leave restores it (a counter under a lock), and a cached
# controller makes the switch cost microseconds instead of threadpoolctl's library scan. It acts in
# the main thread only (a sync web worker's request thread): from other threads OpenBLAS may not
# take the restore, so there it does nothing (serve threaded workers with limit_threads(1)).
SMALL_REQUEST_ROWS = 4
_small_lock = threading.Lock()
_small_depth = 0
_small_limit = None
_controller = None
_controller_modules = 0


def _blas_controller():
    """The BLAS libraries loaded now; scanned again only after more modules were imported (one
    may have brought its own BLAS, e.g. scipy's beside numpy's)."""
    global _controller, _controller_modules
    if _controller is None or len(sys.modules) != _controller_modules:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController().select(user_api="blas")
        _controller_modules = len(sys.modules)
    return _controller


class small_request:
    """One BLAS thread inside the block when ``rows`` is at most :data:`SMALL_REQUEST_ROWS`."""

    def __init__(self, rows: int) -> None:
        # the main thread only: OpenBLAS (0.3.31) honours a worker thread's lowering but can ignore
        # its raising back, which would leave the whole process on one thread (seen in a test)
        self.active = 0 < int(rows) <= SMALL_REQUEST_ROWS and threading.current_thread() is threading.main_thread()

    def __enter__(self):
        global _small_depth, _small_limit
        if self.active:
            with _small_lock:
                if _small_depth == 0:
                    ctl = _blas_controller()
                    _small_limit = ctl.limit(limits=1) if any(i["num_threads"] > 1 for i in ctl.info()) else None
                _small_depth += 1
        return self

    def __exit__(self, *exc):
        global _small_depth, _small_limit
        if self.active:
            with _small_lock:
                _small_depth -= 1
                if _small_depth == 0 and _small_limit is not None:
                    _small_limit.restore_original_limits()
                    _small_limit = None
        return False
