// The one parallel-for of persona's kernels, and the one thread-count heuristic.
//
// parallel_rows(n_rows, threads, body, chunk) runs body(thread_id, row) for every row, in parallel
// when threads > 1 (a dynamic schedule of `chunk` rows: kernel rows differ in cost by orders of
// magnitude). thread_id < threads indexes per-thread state the caller owns. An exception thrown in
// body (std::bad_alloc when a buffer grows) is caught inside the OpenMP region -- one escaping it
// would terminate the process -- the other threads skip their remaining rows, and the first
// exception is re-thrown on the calling thread, as hnswlib's ParallelFor does.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace persona {

// Threads to use: num_threads when > 0; else OpenMP's default, limited so that each thread gets at
// least min_work_per_thread units of work (waking a thread team costs tens of microseconds, more
// than a small problem takes). One row runs on one thread.
inline int choose_threads(int num_threads, int64_t work, int64_t min_work_per_thread, int64_t n_rows) {
#ifdef _OPENMP
    int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
    if (num_threads == 0) {
        const int64_t useful = work / min_work_per_thread + 1;
        if (useful < threads) threads = static_cast<int>(useful);
    }
    if (n_rows < 2 || threads < 1) threads = 1;
    return threads;
#else
    (void)num_threads;
    (void)work;
    (void)min_work_per_thread;
    (void)n_rows;
    return 1;
#endif
}

template <class Body>
void parallel_rows(int64_t n_rows, int threads, Body body, int chunk = 32) {
    std::exception_ptr error = nullptr;
    std::atomic<bool> failed{false};
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(dynamic, chunk)
#endif
    for (int64_t row = 0; row < n_rows; ++row) {
        if (failed.load(std::memory_order_relaxed)) continue;
        try {
#ifdef _OPENMP
            body(omp_get_thread_num(), row);
#else
            body(0, row);
#endif
        } catch (...) {
            failed.store(true);
#ifdef _OPENMP
#pragma omp critical(persona_parallel_error)
#endif
            if (!error) error = std::current_exception();
        }
    }
    (void)threads;
    (void)chunk;
    if (error) std::rethrow_exception(error);
}

}  // namespace persona
