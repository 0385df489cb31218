// Sparse x sparse row similarity with top-K pruning: for every row of a CSR matrix A (rows = the
// entities compared, e.g. items; columns = their features, e.g. users), the K other rows with the
// largest dot product, optionally divided by (norm_i * norm_j + shrinkage). Header-only so the
// algorithm reads apart from the Python bindings.
//
// Definitions (duplicates in A count as their sum, in any column order):
//   dot(i, j)  = sum_u A[i, u] * A[j, u]                       accumulated in float (see below)
//   norm(i)    = sqrt(sum_u A[i, u]^2)
//   sim(i, j)  = dot(i, j) / (norm(i) * norm(j) + shrinkage)   when normalize, else dot(i, j)
// Row i keeps the K rows j != i of largest sim(i, j) (rounded to float32), ties by lower j. Pairs
// with dot == 0 (no common feature, or products that cancel) are never kept, so a row with fewer
// than K such neighbours holds fewer entries; a zero denominator keeps nothing either.
//
// Work: per row i, one pass over the rows that share a feature with it, through the transpose
// (A^T, built here once); the sums go to a dense per-thread accumulator of n_rows floats, reset
// through the list of touched rows, so memory is O(threads * n_rows) beside the output. Rows are
// independent and run in parallel (dynamic schedule: popular rows cost far more than rare ones);
// every row is computed by one thread in a fixed order, so results do not depend on thread count.
// Selection: the row's candidates become integer keys (score, then index) and the k best are
// picked by a partial selection and a sort of those k -- O(candidates + k log k), cheaper than a
// bounded heap (topk.h) when, as here, all candidates are at hand and usually many times k.
// The output is two-pass: rows append to their thread's buffers, then one copy concatenates them.
// Precision: dots in float (an accumulator of n_rows floats per thread, half the memory traffic of
// double), norms in double. Against a float64 reference: exact sums for integer weights below 2^24;
// at most ~1e-6 relative error for real weights on rows of thousands of entries (measured, and
// bounded at 1e-5 by tests/test_knn.py).
#pragma once

#include "persona/parallel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>


#if defined(__GNUC__) || defined(__clang__)
#define PERSONA_PREFETCH(address) __builtin_prefetch(address)
#else
#define PERSONA_PREFETCH(address) ((void)0)
#endif

namespace persona {

// Raw views of a CSR matrix; indices are int64 (offsets) and int32 (column ids).
struct CsrView {
    const int64_t* indptr = nullptr;
    const int32_t* indices = nullptr;
    const float* data = nullptr;
    int64_t n_rows = 0;
    int64_t n_cols = 0;
};

// The output: row i owns indices[indptr[i]:indptr[i+1]], best first.
struct SimilarityResult {
    std::vector<int64_t> indptr;
    std::vector<int32_t> indices;
    std::vector<float> data;
};

// Checks that every stored value is finite; throws std::invalid_argument naming the first bad one.
inline void validate_finite(const float* data, int64_t nnz, const char* name) {
    for (int64_t e = 0; e < nnz; ++e) {
        if (!std::isfinite(data[e]))
            throw std::invalid_argument(std::string(name) + " holds a non-finite value (" + std::to_string(data[e]) +
                                        ") at stored entry " + std::to_string(e) +
                                        "; drop or replace NaN and infinite weights first");
    }
}

namespace detail {

// A^T in CSR form (column -> rows that hold it), by a counting sort; duplicates are kept.
struct Transposed {
    std::vector<int64_t> indptr;
    std::vector<int32_t> rows;
    std::vector<float> data;
};

inline Transposed transpose(const CsrView& a) {
    const int64_t nnz = a.indptr[a.n_rows];
    Transposed t;
    t.indptr.assign(static_cast<size_t>(a.n_cols) + 1, 0);
    t.rows.resize(static_cast<size_t>(nnz));
    t.data.resize(static_cast<size_t>(nnz));
    for (int64_t e = 0; e < nnz; ++e) ++t.indptr[static_cast<size_t>(a.indices[e]) + 1];
    for (int64_t c = 0; c < a.n_cols; ++c) t.indptr[c + 1] += t.indptr[c];
    std::vector<int64_t> next(t.indptr.begin(), t.indptr.end() - 1);
    for (int64_t r = 0; r < a.n_rows; ++r) {
        for (int64_t e = a.indptr[r]; e < a.indptr[r + 1]; ++e) {
            int64_t pos = next[a.indices[e]]++;
            t.rows[pos] = static_cast<int32_t>(r);
            t.data[pos] = a.data[e];
        }
    }
    return t;
}

// The ranking key of a candidate: ascending keys are descending scores, ties by ascending index.
// High 32 bits: the float's bits mapped to an unsigned integer of the same order (negative floats
// flipped whole, positive ones get the sign bit), then inverted so that larger scores come first;
// -0.0 is folded into +0.0 so that the two tie as floats do. Low 32 bits: the index. NaN never
// reaches here (finite inputs).
inline uint64_t rank_key(float score, int32_t index) {
    score += 0.0f;  // -0.0 -> +0.0
    uint32_t bits;
    std::memcpy(&bits, &score, sizeof bits);
    const uint32_t ordered = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
    return (static_cast<uint64_t>(~ordered) << 32) | static_cast<uint32_t>(index);
}

inline int32_t key_index(uint64_t key) { return static_cast<int32_t>(key & 0xffffffffu); }

inline float key_score(uint64_t key) {
    const uint32_t ordered = ~static_cast<uint32_t>(key >> 32);
    const uint32_t bits = (ordered & 0x80000000u) ? (ordered & 0x7fffffffu) : ~ordered;
    float score;
    std::memcpy(&score, &bits, sizeof score);
    return score;
}

struct NormState {
    std::vector<double> acc;  // n_cols, all zero between rows
    std::vector<uint8_t> flag;  // n_cols, all zero between rows
    std::vector<int32_t> touched;
};

struct RowState {
    std::vector<float> acc;      // n_rows, all zero between rows
    std::vector<uint8_t> flag;   // n_rows, all zero between rows (general path only)
    std::vector<int32_t> touched;
    std::vector<uint64_t> keys;  // n_rows
    std::vector<int32_t> out_idx;   // the results of this thread's rows, appended
    std::vector<float> out_val;
};

}  // namespace detail

// Threads to use: a useful share of the entries for each (parallel.h).
inline int similarity_threads(const CsrView& a, int num_threads) {
    constexpr int64_t kMinEntriesPerThread = 4096;
    return choose_threads(num_threads, a.indptr[a.n_rows], kMinEntriesPerThread, a.n_rows);
}

// The per-row norms sqrt(sum_u A[i, u]^2), duplicates summed first.
inline std::vector<double> row_norms(const CsrView& a, int threads) {
    std::vector<double> norms(static_cast<size_t>(a.n_rows), 0.0);
    std::vector<detail::NormState> states(static_cast<size_t>(threads));
    for (auto& s : states) {
        s.acc.assign(static_cast<size_t>(a.n_cols), 0.0);
        s.flag.assign(static_cast<size_t>(a.n_cols), 0);
    }
    parallel_rows(a.n_rows, threads, [&](int tid, int64_t r) {
        detail::NormState& s = states[tid];
        s.touched.clear();
        for (int64_t e = a.indptr[r]; e < a.indptr[r + 1]; ++e) {
            const int32_t u = a.indices[e];
            if (!s.flag[u]) {
                s.flag[u] = 1;
                s.touched.push_back(u);
            }
            s.acc[u] += a.data[e];
        }
        double sq = 0.0;
        for (int32_t u : s.touched) {
            sq += s.acc[u] * s.acc[u];
            s.acc[u] = 0.0;
            s.flag[u] = 0;
        }
        norms[r] = std::sqrt(sq);
    });
    return norms;
}

// The top-k similarity described at the top of this file. `a` must be a valid CSR (see
// validate_csr) with finite values; n_rows must fit in int32.
inline SimilarityResult topk_similarity(const CsrView& a, int64_t k, bool normalize, double shrinkage,
                                        int num_threads) {
    const int64_t n = a.n_rows;
    const int threads = similarity_threads(a, num_threads);
    // k beyond the number of other rows only pads, which this sparse output does not do
    const int64_t kk = std::max<int64_t>(0, std::min<int64_t>(k, n - 1));
    const detail::Transposed t = detail::transpose(a);
    std::vector<double> norms;
    if (normalize) norms = row_norms(a, threads);
    // With every value positive (and far from underflow) a product is never 0, so an accumulator
    // still at 0 marks a row not yet touched: no flag array to read on every product.
    const int64_t nnz = a.indptr[a.n_rows];
    bool positive = true;
    for (int64_t e = 0; e < nnz && positive; ++e) positive = a.data[e] > 1e-18f;

    // Per-thread scratch, allocated here so that running out of memory fails before any work.
    std::vector<detail::RowState> states(static_cast<size_t>(threads));
    for (auto& s : states) {
        s.acc.assign(static_cast<size_t>(n), 0.0f);
        s.flag.assign(static_cast<size_t>(positive ? 0 : n), 0);
        s.touched.resize(static_cast<size_t>(n) + 1);  // +1: the branch-free append writes one past
        s.keys.resize(static_cast<size_t>(n));
    }
    // where each row's results sit: which thread's buffers, at which offset, and how many
    std::vector<int32_t> row_thread(static_cast<size_t>(n), 0);
    std::vector<int64_t> row_offset(static_cast<size_t>(n), 0);
    std::vector<int64_t> row_count(static_cast<size_t>(n), 0);

    parallel_rows(n, threads, [&](int tid, int64_t i) {
        detail::RowState& s = states[tid];
        const int64_t e0 = a.indptr[i], e1 = a.indptr[i + 1];
        row_thread[i] = tid;
        row_offset[i] = static_cast<int64_t>(s.out_idx.size());
        if (kk == 0 || e0 == e1 || (normalize && norms[i] == 0.0)) return;
        // raw pointers: the compiler cannot keep vector internals in registers across push_back
        // float sums: half the accumulator's cache footprint, and a relative error (~1e-6 after
        // thousands of terms) far below what changes a neighbour list
        float* acc = s.acc.data();
        uint8_t* flag = s.flag.data();
        int32_t* touched = s.touched.data();  // n_rows + 1: each row is touched at most once
        int64_t n_touched = 0;
        const int64_t* t_ptr = t.indptr.data();
        const int32_t* t_rows = t.rows.data();
        const float* t_data = t.data.data();
        for (int64_t e = e0; e < e1; ++e) {
            const int32_t u = a.indices[e];
            const float w = a.data[e];
            const int64_t f1 = t_ptr[u + 1];
            // the users of a row sit far apart in memory: fetch the lists of the users a few
            // steps ahead (and their offsets further ahead) while this one is summed
            if (e + 8 < e1) PERSONA_PREFETCH(&t_ptr[a.indices[e + 8]]);
            if (e + 4 < e1) {
                const int64_t ahead = t_ptr[a.indices[e + 4]];
                PERSONA_PREFETCH(&t_rows[ahead]);
                PERSONA_PREFETCH(&t_data[ahead]);
            }
            if (positive) {
                for (int64_t f = t_ptr[u]; f < f1; ++f) {
                    const int32_t j = t_rows[f];
                    const float before = acc[j];
                    // branch-free: about half the products are a row's first touch, which no
                    // predictor guesses; always write the slot, advance only on a first touch
                    touched[n_touched] = j;
                    n_touched += (before == 0.0f);
                    acc[j] = before + w * t_data[f];
                }
            } else {
                for (int64_t f = t_ptr[u]; f < f1; ++f) {
                    const int32_t j = t_rows[f];
                    touched[n_touched] = j;
                    n_touched += !flag[j];
                    flag[j] = 1;
                    acc[j] += w * t_data[f];
                }
            }
        }
        // Selection: each candidate becomes one uint64 key that sorts ascending in the output
        // order (see rank_key); a partial selection of the k smallest (nth_element, linear on
        // average) and a sort of those k then compare plain integers -- no float compares, no
        // branches on NaN -- which is most of the cost of a row with many candidates.
        uint64_t* keys = s.keys.data();  // sized n_rows
        int64_t n_cand = 0;
        const double norm_i = normalize ? norms[i] : 1.0;
        for (int64_t c = 0; c < n_touched; ++c) {
            const int32_t j = touched[c];
            if (normalize && c + 16 < n_touched) PERSONA_PREFETCH(&norms[touched[c + 16]]);
            const double dot = acc[j];
            acc[j] = 0.0f;
            if (!positive) flag[j] = 0;
            if (j == i || dot == 0.0) continue;
            double value = dot;
            if (normalize) {
                const double den = norm_i * norms[j] + shrinkage;
                if (!(den > 0.0)) continue;
                value = dot / den;
            }
            keys[n_cand++] = detail::rank_key(static_cast<float>(value), j);
        }
        const int64_t count = std::min<int64_t>(kk, n_cand);
        if (n_cand > count) std::nth_element(keys, keys + count, keys + n_cand);
        std::sort(keys, keys + count);
        for (int64_t c = 0; c < count; ++c) {
            s.out_idx.push_back(detail::key_index(keys[c]));
            s.out_val.push_back(detail::key_score(keys[c]));
        }
        row_count[i] = count;
    });

    SimilarityResult out;
    out.indptr.assign(static_cast<size_t>(n) + 1, 0);
    for (int64_t i = 0; i < n; ++i) out.indptr[i + 1] = out.indptr[i] + row_count[i];
    out.indices.resize(static_cast<size_t>(out.indptr[n]));
    out.data.resize(static_cast<size_t>(out.indptr[n]));
    for (int64_t i = 0; i < n; ++i) {
        const detail::RowState& s = states[row_thread[i]];
        std::copy_n(s.out_idx.begin() + row_offset[i], row_count[i], out.indices.begin() + out.indptr[i]);
        std::copy_n(s.out_val.begin() + row_offset[i], row_count[i], out.data.begin() + out.indptr[i]);
    }
    return out;
}

}  // namespace persona
