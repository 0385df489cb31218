// Python bindings of persona's compiled kernels: the one file that knows about pybind11.
// Arguments are validated here (ValueError with a message that says what to do), then the GIL is
// released for the work itself.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "persona/similarity.h"
#include "persona/topk.h"

namespace py = pybind11;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using Int64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using Int32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using BoolArray = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

[[noreturn]] void bad(const std::string& msg) { throw py::value_error(msg); }

py::tuple topk_py(FloatArray scores, int64_t k, std::optional<Int64Array> excl_indptr,
                  std::optional<Int32Array> excl_indices, std::optional<Int64Array> allow_indptr,
                  std::optional<Int32Array> allow_indices, std::optional<BoolArray> mask, int num_threads) {
    if (scores.ndim() != 2)
        bad("scores must be a 2-D array (rows x items), got " + std::to_string(scores.ndim()) +
            " dimensions; reshape a single row with scores[None, :]");
    if (k < 0) bad("k must be >= 0, got " + std::to_string(k));
    if (num_threads < 0) bad("num_threads must be >= 0 (0 = all cores), got " + std::to_string(num_threads));

    persona::TopKArgs a;
    a.n_rows = scores.shape(0);
    a.n_items = scores.shape(1);
    a.k = k;
    a.scores = scores.data();

    if (excl_indptr.has_value() != excl_indices.has_value())
        bad("pass both exclude_indptr and exclude_indices, or neither");
    if (allow_indptr.has_value() != allow_indices.has_value())
        bad("pass both allow_indptr and allow_indices, or neither");
    if (excl_indptr) {
        if (excl_indptr->ndim() != 1 || excl_indptr->shape(0) != a.n_rows + 1)
            bad("exclude_indptr must have n_rows + 1 = " + std::to_string(a.n_rows + 1) + " entries, got " +
                std::to_string(excl_indptr->size()));
        if (excl_indices->ndim() != 1) bad("exclude_indices must be 1-D");
        persona::validate_csr(excl_indptr->data(), excl_indices->data(), a.n_rows, excl_indices->shape(0),
                              a.n_items, "exclude");
        a.excl_indptr = excl_indptr->data();
        a.excl_indices = excl_indices->data();
    }
    if (allow_indptr) {
        if (allow_indptr->ndim() != 1 || allow_indptr->shape(0) != a.n_rows + 1)
            bad("allow_indptr must have n_rows + 1 = " + std::to_string(a.n_rows + 1) + " entries, got " +
                std::to_string(allow_indptr->size()));
        if (allow_indices->ndim() != 1) bad("allow_indices must be 1-D");
        persona::validate_csr(allow_indptr->data(), allow_indices->data(), a.n_rows, allow_indices->shape(0),
                              a.n_items, "allow");
        a.allow_indptr = allow_indptr->data();
        a.allow_indices = allow_indices->data();
    }
    if (mask) {
        if (mask->ndim() != 1 || mask->shape(0) != a.n_items)
            bad("mask must be a 1-D boolean array with one entry per item (" + std::to_string(a.n_items) +
                "), got " + std::to_string(mask->size()) + " entries");
        a.mask = mask->data();
    }

    py::array_t<int64_t> out_idx({a.n_rows, k});
    py::array_t<float> out_score({a.n_rows, k});
    a.out_idx = out_idx.mutable_data();
    a.out_score = out_score.mutable_data();
    {
        py::gil_scoped_release release;
        persona::topk(a, num_threads);
    }
    return py::make_tuple(out_idx, out_score);
}

py::tuple topk_similarity_py(Int64Array indptr, Int32Array indices, FloatArray data, int64_t n_cols, int64_t k,
                            bool normalize, double shrinkage, int num_threads) {
    if (indptr.ndim() != 1 || indices.ndim() != 1 || data.ndim() != 1)
        bad("indptr, indices and data must be 1-D arrays (a CSR matrix's parts)");
    if (indptr.shape(0) < 1) bad("indptr must have n_rows + 1 >= 1 entries, got 0");
    if (indices.shape(0) != data.shape(0))
        bad("indices has " + std::to_string(indices.shape(0)) + " entries but data has " +
            std::to_string(data.shape(0)) + "; pass one value per stored entry");
    if (n_cols < 0) bad("n_cols must be >= 0, got " + std::to_string(n_cols));
    if (k < 0) bad("k must be >= 0, got " + std::to_string(k));
    if (!std::isfinite(shrinkage) || shrinkage < 0)
        bad("shrinkage must be a finite number >= 0, got " + std::to_string(shrinkage));
    if (!normalize && shrinkage != 0)
        bad("shrinkage only applies with normalize=True (it is added to norm_i * norm_j); pass shrinkage=0");
    if (num_threads < 0) bad("num_threads must be >= 0 (0 = all cores), got " + std::to_string(num_threads));

    persona::CsrView a;
    a.n_rows = indptr.shape(0) - 1;
    a.n_cols = n_cols;
    if (a.n_rows > std::numeric_limits<int32_t>::max())
        bad("the matrix has " + std::to_string(a.n_rows) + " rows; at most 2**31 - 1 are supported");
    a.indptr = indptr.data();
    a.indices = indices.data();
    a.data = data.data();
    try {
        persona::validate_csr(a.indptr, a.indices, a.n_rows, indices.shape(0), n_cols, "matrix");
        persona::validate_finite(a.data, data.shape(0), "matrix data");
    } catch (const std::invalid_argument& e) {
        bad(e.what());
    }

    persona::SimilarityResult r;
    {
        py::gil_scoped_release release;
        r = persona::topk_similarity(a, k, normalize, shrinkage, num_threads);
    }
    auto to_numpy = [](auto& vec) {
        using T = typename std::decay_t<decltype(vec)>::value_type;
        auto* owner = new std::vector<T>(std::move(vec));
        py::capsule free_when_done(owner, [](void* p) { delete static_cast<std::vector<T>*>(p); });
        return py::array_t<T>({static_cast<py::ssize_t>(owner->size())}, {sizeof(T)}, owner->data(), free_when_done);
    };
    return py::make_tuple(to_numpy(r.indptr), to_numpy(r.indices), to_numpy(r.data));
}

int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "persona's compiled kernels (C++17). Use them through persona.kernels, not directly.";
    m.def("topk", &topk_py, py::arg("scores"), py::arg("k"), py::arg("exclude_indptr") = py::none(),
          py::arg("exclude_indices") = py::none(), py::arg("allow_indptr") = py::none(),
          py::arg("allow_indices") = py::none(), py::arg("mask") = py::none(), py::arg("num_threads") = 0,
          R"doc(Top-k of each row of `scores` (float32, rows x items), best first.

Exclusions and allow-lists are CSR structures (int64 indptr of n_rows + 1, int32 indices); `mask`
is one bool per item (False = never return it). Ties go to the lower index, NaN ranks as -inf.
Returns (indices int64, scores float32), both (rows, k), padded with -1 / -inf.)doc");
    m.def("topk_similarity", &topk_similarity_py, py::arg("indptr"), py::arg("indices"), py::arg("data"),
          py::arg("n_cols"), py::arg("k"), py::arg("normalize") = true, py::arg("shrinkage") = 0.0,
          py::arg("num_threads") = 0,
          R"doc(Top-k most similar other rows of a CSR matrix (int64 indptr, int32 indices, float32 data).

sim(i, j) = dot(i, j) / (norm_i * norm_j + shrinkage) when `normalize`, else dot(i, j); duplicates
count as their sum; pairs with dot == 0 are left out; ties go to the lower index.
Returns the CSR parts (indptr int64, indices int32, data float32) of an n_rows x n_rows matrix whose
rows hold at most k entries, best first.)doc");
    m.def("max_threads", &max_threads, "Threads the compiled kernels use by default.");
#ifdef _OPENMP
    m.attr("openmp") = true;
#else
    m.attr("openmp") = false;
#endif
}
