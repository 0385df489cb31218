"""Hypothesis strategies shared by the kernel tests.

They aim at the inputs kernels get wrong: ties (values drawn from a small palette), NaN and
infinities, empty shapes (0 rows, 0 or 1 item), empty rows and columns, duplicate entries in sparse
matrices and index lists, and k at its extremes (0, 1, the row length, beyond it).

Every strategy returns plain numpy / scipy objects, so any kernel test can use them:

- :func:`score_matrices` -- float32 (rows, items) score arrays
- :func:`ks` -- values of k for a given number of items
- :func:`sparse_matrices` -- ``scipy.sparse.csr_matrix`` (float32), duplicates kept unless asked
- :func:`index_lists` -- one list of item indices per row (duplicates allowed)
- :func:`topk_inputs` -- a whole top-k case: scores, k, and exclude / allow / mask in every form
  the router accepts, with the plain per-row sets the expected answer is computed from
- :func:`as_csr`, :func:`as_indptr_indices` -- convert index lists to the other forms

Example
-------
>>> from hypothesis import given
>>> from strategies import sparse_matrices
>>> @given(sparse_matrices(max_rows=5, max_cols=5))
... def test_shape(m):
...     assert m.shape[0] <= 5
>>> test_shape()
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = [
    "PALETTE",
    "score_values",
    "score_matrices",
    "ks",
    "sparse_matrices",
    "index_lists",
    "as_csr",
    "as_indptr_indices",
    "TopKCase",
    "topk_inputs",
]

# Few distinct values, so that equal scores (ties) are common; -0.0 == 0.0 is a tie as well.
PALETTE = (-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 3.0)


def score_values(*, nan: bool = True, infinity: bool = True, ties: bool = True) -> st.SearchStrategy[float]:
    """Single float32 scores: mostly palette values (ties), some arbitrary floats, NaN and +-inf."""
    parts = [st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False)]
    if ties:
        parts.append(st.sampled_from(PALETTE))
    if nan:
        parts.append(st.just(float("nan")))
    if infinity:
        parts.append(st.sampled_from([float("-inf"), float("inf")]))
    return st.one_of(*parts)


@st.composite
def score_matrices(draw, *, min_rows: int = 0, max_rows: int = 8, min_items: int = 0, max_items: int = 40,
                   distinct: bool = False, nan: bool = True, infinity: bool = True) -> np.ndarray:
    """float32 arrays of shape (rows, items), C-contiguous.

    With ``distinct=True`` every value in the matrix differs and none is NaN (NaN ties with -inf),
    which tests that depend on a unique order (relabelling) need.
    """
    n_rows = draw(st.integers(min_rows, max_rows))
    n_items = draw(st.one_of(st.sampled_from(sorted({max(min_items, 1), min_items})),
                             st.integers(min_items, max_items)))
    if distinct:
        elements = st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False)
        return draw(hnp.arrays(np.float32, (n_rows, n_items), elements=elements, unique=True))
    # a per-matrix switch between "almost all ties" and "mixed", so both regimes get explored
    palette_only = draw(st.booleans())
    elements = (st.sampled_from(PALETTE + ((float("nan"),) if nan else ())) if palette_only
                else score_values(nan=nan, infinity=infinity))
    return draw(hnp.arrays(np.float32, (n_rows, n_items), elements=elements))


def ks(n_items: int) -> st.SearchStrategy[int]:
    """k for rows of ``n_items``: 0, 1, anything up to the row length, the row length, beyond it."""
    return st.one_of(
        st.sampled_from(sorted({0, 1, n_items, n_items + 1, n_items + 7})),
        st.integers(0, n_items + 3),
    )


@st.composite
def sparse_matrices(draw, max_rows: int = 60, max_cols: int = 60, *, min_rows: int = 0, min_cols: int = 0,
                    max_nnz: int | None = None, sum_duplicates: bool = False, sorted_indices: bool = False,
                    values: st.SearchStrategy[float] | None = None, explicit_zeros: bool = False,
                    dtype=np.float32) -> sp.csr_matrix:
    """Random ``scipy.sparse.csr_matrix`` of ``dtype`` (float32 by default).

    Shapes run from empty (0 rows and/or 0 columns) through a single row to ``max_rows x max_cols``;
    empty rows and columns come up naturally, and a matrix is sometimes concentrated on a few rows
    or columns so they are common.

    Parameters
    ----------
    sum_duplicates
        By default the CSR structure is built directly, so repeated (row, column) entries stay as
        separate entries and column indices within a row may be unsorted -- what a kernel may be
        handed. ``True`` returns the canonical form (``csr.has_canonical_format``).
    sorted_indices
        Sort column indices within each row, keeping duplicates.
    values
        Strategy for stored values; default a small positive palette (ties) mixed with floats in
        [0.125, 100]. ``explicit_zeros=True`` adds stored zeros to the default values.
    """
    n_rows = draw(st.one_of(st.just(1), st.integers(min_rows, max_rows)) if min_rows <= 1 <= max_rows
                  else st.integers(min_rows, max_rows))
    n_cols = draw(st.one_of(st.just(1), st.integers(min_cols, max_cols)) if min_cols <= 1 <= max_cols
                  else st.integers(min_cols, max_cols))
    cap = min(2 * n_rows * n_cols, 4 * max(max_rows, max_cols) + 40) if max_nnz is None else max_nnz
    nnz = draw(st.integers(0, cap)) if n_rows and n_cols else 0

    # concentrate entries on a subset of rows / columns, leaving the others empty
    row_pool = draw(st.integers(1, n_rows)) if n_rows else 0
    col_pool = draw(st.integers(1, n_cols)) if n_cols else 0
    rows = draw(hnp.arrays(np.int64, nnz, elements=st.integers(0, max(row_pool - 1, 0))))
    cols = draw(hnp.arrays(np.int64, nnz, elements=st.integers(0, max(col_pool - 1, 0))))
    if nnz:
        # spread the pool over the whole index range rather than its start
        row_perm = np.asarray(draw(st.permutations(range(n_rows))), dtype=np.int64)
        col_perm = np.asarray(draw(st.permutations(range(n_cols))), dtype=np.int64)
        rows, cols = row_perm[rows], col_perm[cols]

    if values is None:
        palette = (1.0, 2.0, 0.5) + ((0.0,) if explicit_zeros else ())
        values = st.one_of(st.sampled_from(palette),
                           st.floats(0.125, 100.0, width=32, allow_nan=False, allow_infinity=False))
    data = draw(hnp.arrays(np.dtype(dtype), nnz, elements=values))

    # build the CSR arrays directly: the (data, (row, col)) constructor would sum duplicates
    order = np.argsort(rows, kind="stable")
    indices = cols[order].astype(np.int32)
    data = data[order]
    indptr = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    matrix = sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols), dtype=dtype)
    if sum_duplicates:
        matrix.sum_duplicates()
    elif sorted_indices:
        for r in range(n_rows):
            lo, hi = indptr[r], indptr[r + 1]
            o = np.argsort(matrix.indices[lo:hi], kind="stable")
            matrix.indices[lo:hi] = matrix.indices[lo:hi][o]
            matrix.data[lo:hi] = matrix.data[lo:hi][o]
    return matrix


@st.composite
def index_lists(draw, n_rows: int, n_items: int, *, max_per_row: int | None = None,
                full_rows: bool = True) -> list[list[int]]:
    """One list of item indices per row, in any order, duplicates allowed.

    Rows are sometimes empty and, with ``full_rows``, sometimes hold every item (plus a repeat),
    the "everything excluded" / "everything allowed" case.
    """
    limit = n_items + 3 if max_per_row is None else max_per_row
    out = []
    for _ in range(n_rows):
        if n_items == 0:
            out.append([])
            continue
        kind = draw(st.sampled_from(("empty", "some", "some", "some", "full") if full_rows
                                    else ("empty", "some", "some")))
        if kind == "empty":
            out.append([])
        elif kind == "full":
            row = draw(st.permutations(range(n_items)))
            out.append(list(row) + [row[0]])
        else:
            out.append(draw(st.lists(st.integers(0, n_items - 1), max_size=limit)))
    return out


def as_indptr_indices(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(indptr int64, indices int32) of a list of index lists, duplicates and order kept."""
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    flat = [i for r in rows for i in r]
    return indptr, np.asarray(flat, dtype=np.int32).reshape(-1)


def as_csr(rows: list[list[int]], n_cols: int) -> sp.csr_matrix:
    """A float32 CSR matrix whose structure is ``rows`` (duplicates kept as separate entries)."""
    indptr, indices = as_indptr_indices(rows)
    data = np.ones(len(indices), dtype=np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), n_cols), dtype=np.float32)


@dataclass
class TopKCase:
    """One top-k input, both in the form passed to ``topk`` and as plain sets per row."""

    scores: np.ndarray
    k: int
    kwargs: dict = field(default_factory=dict)  # exclude= / allow= / mask= as passed to topk
    exclude_rows: list[list[int]] | None = None
    allow_rows: list[list[int]] | None = None  # per row, also when one shared list was passed
    mask: np.ndarray | None = None
    forms: dict = field(default_factory=dict)  # which form each argument took, for failure reports

    def allowed(self, row: int) -> set[int]:
        """The items row ``row`` may return."""
        n_items = self.scores.shape[1]
        items = set(range(n_items)) if self.allow_rows is None else set(self.allow_rows[row])
        if self.exclude_rows is not None:
            items -= set(self.exclude_rows[row])
        if self.mask is not None:
            items = {i for i in items if self.mask[i]}
        return items


@st.composite
def topk_inputs(draw, *, max_rows: int = 8, max_items: int = 40, distinct: bool = False,
                exclude: bool | None = None, allow: bool | None = None, mask: bool | None = None,
                forms: tuple[str, ...] = ("lists", "csr", "tuple")) -> TopKCase:
    """A top-k case: scores, k, and optionally exclusions, an allow-list and an item mask.

    ``exclude`` / ``allow`` / ``mask``: ``True`` always, ``False`` never, ``None`` sometimes.
    Per-row structures come as lists of lists, a CSR matrix or an ``(indptr, indices)`` pair; the
    allow-list is sometimes one shared 1-D list (array or Python list) for every row.
    """
    scores = draw(score_matrices(max_rows=max_rows, max_items=max_items, distinct=distinct))
    n_rows, n_items = scores.shape
    case = TopKCase(scores=scores, k=draw(ks(n_items)))

    def per_row(name, rows):
        form = draw(st.sampled_from(forms))
        case.forms[name] = form
        if form == "csr":
            return as_csr(rows, n_items)
        if form == "tuple":
            return as_indptr_indices(rows)
        return rows

    if exclude if exclude is not None else draw(st.booleans()):
        case.exclude_rows = draw(index_lists(n_rows, n_items))
        case.kwargs["exclude"] = per_row("exclude", case.exclude_rows)
    if allow if allow is not None else draw(st.booleans()):
        if n_items and draw(st.booleans()):
            shared = draw(st.lists(st.integers(0, n_items - 1), max_size=n_items + 3))
            as_array = draw(st.booleans())
            case.forms["allow"] = "shared-array" if as_array else "shared-list"
            case.kwargs["allow"] = np.asarray(shared, dtype=np.int64) if as_array else shared
            case.allow_rows = [list(shared) for _ in range(n_rows)]
        else:
            case.allow_rows = draw(index_lists(n_rows, n_items))
            case.kwargs["allow"] = per_row("allow", case.allow_rows)
    if mask if mask is not None else draw(st.booleans()):
        case.mask = draw(hnp.arrays(np.bool_, n_items))
        case.kwargs["mask"] = case.mask
    return case
