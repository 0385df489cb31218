"""Builds the compiled core ``persona._core`` (C++17, pybind11, OpenMP where the compiler has it).

Metadata lives in pyproject.toml; this file only describes the extension.
"""

import os
import sys

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup


def openmp_flags():
    """Compiler and linker flags for OpenMP, or none where the toolchain lacks it."""
    if os.environ.get("PERSONA_NO_OPENMP"):
        return [], []
    if sys.platform == "win32":
        return ["/openmp"], []
    if sys.platform == "darwin":
        return [], []  # Apple clang has no bundled OpenMP; the kernels then run on one thread
    return ["-fopenmp"], ["-fopenmp"]


compile_omp, link_omp = openmp_flags()
# portable optimisation only: never -march=native (illegal instructions on users' machines)
extra = ["-O3"] if sys.platform != "win32" else ["/O2"]

ext = Pybind11Extension(
    "persona._core",
    sources=["csrc/bindings.cpp"],
    include_dirs=["csrc/include"],
    cxx_std=17,
    extra_compile_args=extra + compile_omp,
    extra_link_args=link_omp,
    depends=["csrc/include/persona/parallel.h", "csrc/include/persona/topk.h", "csrc/include/persona/similarity.h"],
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
