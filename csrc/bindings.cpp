// Python bindings of persona's compiled kernels: the one file that knows about pybind11.
// Arguments are validated here (ValueError with a message that says what to do), then the GIL is
// released for the work itself.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

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
    m.def("max_threads", &max_threads, "Threads the compiled kernels use by default.");
#ifdef _OPENMP
    m.attr("openmp") = true;
#else
    m.attr("openmp") = false;
#endif
}
