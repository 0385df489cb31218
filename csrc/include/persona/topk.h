// Top-k selection over rows of scores, with per-row exclusions, optional per-row allow-lists and a
// shared boolean item mask. Header-only so the algorithm reads apart from the Python bindings.
//
// Order: higher score first; equal scores by lower index; NaN ranks as -inf. Every row returns
// exactly min(k, number of allowed candidates) results, padded with index -1 and score -inf.
#pragma once

#include "persona/parallel.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>


namespace persona {

struct Candidate {
    float score;
    int64_t index;
};

// true when a ranks strictly before b
inline bool ranks_before(const Candidate& a, const Candidate& b) {
    return a.score > b.score || (a.score == b.score && a.index < b.index);
}

// A bounded heap that keeps the k best candidates seen so far; its root is the worst kept one,
// so most candidates are rejected with a single comparison.
class TopKHeap {
  public:
    // Reserve min(k, capacity), capacity being the row length: a row never keeps more distinct
    // items than that, and k alone may be huge (k > n_items is allowed and only pads).
    TopKHeap(int64_t k, int64_t capacity) : k_(k) {
        items_.reserve(static_cast<size_t>(k < capacity ? k : capacity));
    }

    void clear() { items_.clear(); }

    bool full() const { return k_ > 0 && static_cast<int64_t>(items_.size()) == k_; }

    // Score of the worst kept candidate; only meaningful when full().
    float worst() const { return items_[0].score; }

    void push(float score, int64_t index) {
        if (std::isnan(score)) score = -std::numeric_limits<float>::infinity();
        Candidate c{score, index};
        if (static_cast<int64_t>(items_.size()) < k_) {
            items_.push_back(c);
            sift_up(items_.size() - 1);
        } else if (k_ > 0 && ranks_before(c, items_[0])) {
            items_[0] = c;
            sift_down(0);
        }
    }

    // Write the kept candidates best-first into out_idx/out_score (length k), padding the tail.
    void drain_sorted(int64_t* out_idx, float* out_score) {
        int64_t n = static_cast<int64_t>(items_.size());
        for (int64_t pos = n - 1; pos >= 0; --pos) {
            out_idx[pos] = items_[0].index;
            out_score[pos] = items_[0].score;
            items_[0] = items_.back();
            items_.pop_back();
            if (!items_.empty()) sift_down(0);
        }
        for (int64_t pos = n; pos < k_; ++pos) {
            out_idx[pos] = -1;
            out_score[pos] = -std::numeric_limits<float>::infinity();
        }
    }

  private:
    // heap order: the parent ranks after (is worse than) its children
    void sift_up(size_t i) {
        while (i > 0) {
            size_t p = (i - 1) / 2;
            if (ranks_before(items_[p], items_[i])) {
                std::swap(items_[p], items_[i]);
                i = p;
            } else {
                break;
            }
        }
    }
    void sift_down(size_t i) {
        size_t n = items_.size();
        for (;;) {
            size_t l = 2 * i + 1, r = l + 1, w = i;
            if (l < n && ranks_before(items_[w], items_[l])) w = l;
            if (r < n && ranks_before(items_[w], items_[r])) w = r;
            if (w == i) return;
            std::swap(items_[w], items_[i]);
            i = w;
        }
    }
    int64_t k_;
    std::vector<Candidate> items_;
};

// Raw views of the arguments; indices are int64 (CSR offsets) and int32 (item ids).
struct TopKArgs {
    const float* scores = nullptr;
    int64_t n_rows = 0;
    int64_t n_items = 0;
    int64_t k = 0;
    const int64_t* excl_indptr = nullptr;  // n_rows + 1, or null
    const int32_t* excl_indices = nullptr;
    const int64_t* allow_indptr = nullptr;  // n_rows + 1, or null
    const int32_t* allow_indices = nullptr;
    const uint8_t* mask = nullptr;  // n_items, or null; 0 = not allowed
    int64_t* out_idx = nullptr;
    float* out_score = nullptr;
};

// Checks CSR structure and index ranges; throws std::invalid_argument with a message for users.
inline void validate_csr(const int64_t* indptr, const int32_t* indices, int64_t n_rows, int64_t nnz,
                         int64_t n_items, const char* name) {
    if (indptr[0] != 0)
        throw std::invalid_argument(std::string(name) + "_indptr must start at 0");
    for (int64_t r = 0; r < n_rows; ++r) {
        if (indptr[r + 1] < indptr[r])
            throw std::invalid_argument(std::string(name) + "_indptr must be non-decreasing");
    }
    if (indptr[n_rows] != nnz)
        throw std::invalid_argument(std::string(name) + "_indptr[-1] = " + std::to_string(indptr[n_rows]) +
                                    " but " + name + "_indices has " + std::to_string(nnz) + " entries");
    for (int64_t j = 0; j < nnz; ++j) {
        if (indices[j] < 0 || indices[j] >= n_items)
            throw std::invalid_argument(std::string(name) + "_indices holds " + std::to_string(indices[j]) +
                                        ", outside [0, " + std::to_string(n_items) + ")");
    }
}

// Offers items [0, n) to the heap in index order. Once the heap is full, an item can only enter
// with a score strictly above the worst kept one: an equal score loses the tie to the lower index
// already kept, and NaN ranks as -inf. So a block of scores none of which beats the worst is
// skipped with one comparison per score that the compiler vectorises; most blocks are.
template <bool Filtered>
inline void scan_in_order(const float* s, int64_t n, TopKHeap& heap, const uint8_t* marks, const uint8_t* mask) {
    constexpr int64_t kBlock = 16;
    auto allowed = [&](int64_t i) { return !Filtered || (!marks[i] && !(mask && !mask[i])); };
    int64_t i = 0;
    for (; i < n && !heap.full(); ++i)
        if (allowed(i)) heap.push(s[i], i);
    if (!heap.full()) return;  // k == 0, or fewer candidates than k
    for (; i + kBlock <= n; i += kBlock) {
        const float threshold = heap.worst();
        int any = 0;
        for (int64_t j = 0; j < kBlock; ++j) any |= s[i + j] > threshold;
        if (!any) continue;
        for (int64_t j = i; j < i + kBlock; ++j)
            if (s[j] > heap.worst() && allowed(j)) heap.push(s[j], j);
    }
    for (; i < n; ++i)
        if (s[i] > heap.worst() && allowed(i)) heap.push(s[i], i);
}

// Selects one row. `marks` is a per-thread scratch buffer of n_items zero bytes, left zeroed.
inline void topk_row(const TopKArgs& a, int64_t row, TopKHeap& heap, std::vector<uint8_t>& marks) {
    const float* s = a.scores + row * a.n_items;
    heap.clear();
    int64_t e0 = 0, e1 = 0;
    if (a.excl_indptr) {
        e0 = a.excl_indptr[row];
        e1 = a.excl_indptr[row + 1];
        for (int64_t j = e0; j < e1; ++j) marks[a.excl_indices[j]] = 1;
    }
    if (a.allow_indptr) {
        int64_t b0 = a.allow_indptr[row], b1 = a.allow_indptr[row + 1];
        for (int64_t j = b0; j < b1; ++j) {
            int32_t i = a.allow_indices[j];
            if (marks[i] || (a.mask && !a.mask[i])) continue;
            marks[i] = 2;  // a duplicate allow entry must not be returned twice
            heap.push(s[i], i);
        }
        for (int64_t j = b0; j < b1; ++j)
            if (marks[a.allow_indices[j]] == 2) marks[a.allow_indices[j]] = 0;
    } else if (e1 > e0 || a.mask) {
        scan_in_order<true>(s, a.n_items, heap, marks.data(), a.mask);
    } else {
        scan_in_order<false>(s, a.n_items, heap, nullptr, nullptr);
    }
    for (int64_t j = e0; j < e1; ++j) marks[a.excl_indices[j]] = 0;
    heap.drain_sorted(a.out_idx + row * a.k, a.out_score + row * a.k);
}

// Runs every row, in parallel when num_threads != 1 (0 = OpenMP's default, limited so that each
// thread gets at least kMinScoresPerThread candidates; an explicit num_threads is honoured as
// given). Each thread allocates its scratch (heap, exclusion marks) at its first row; a
// std::bad_alloc there is re-thrown on the calling thread by parallel_rows (parallel.h).
inline void topk(const TopKArgs& a, int num_threads) {
    constexpr int64_t kMinScoresPerThread = 32768;
    const int64_t work = a.allow_indptr ? a.allow_indptr[a.n_rows] + a.n_rows : a.n_rows * a.n_items;
    const int threads = choose_threads(num_threads, work, kMinScoresPerThread, a.n_rows);
    std::vector<std::unique_ptr<TopKHeap>> heaps(static_cast<size_t>(threads));
    std::vector<std::vector<uint8_t>> marks(static_cast<size_t>(threads));
    parallel_rows(a.n_rows, threads, [&](int tid, int64_t row) {
        if (!heaps[tid]) {
            marks[tid].assign(static_cast<size_t>(a.n_items), 0);
            heaps[tid] = std::make_unique<TopKHeap>(a.k, a.n_items);
        }
        topk_row(a, row, *heaps[tid], marks[tid]);
    }, 16);
}

}  // namespace persona
