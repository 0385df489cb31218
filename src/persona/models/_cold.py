"""Cold start pieces the models share: item feature rows, new items' rows, a ridge map, visitors' features.

* :func:`training_rows` aligns item features (a :class:`~persona.data.Features` matched by id, or a
  matrix with one row per item) with a model's item map, as ``fit(..., item_features=...)`` takes them;
* :func:`new_item_rows` reads what ``add_items`` takes (a Features with the fitted columns, or a
  DataFrame encoded with the fitted encoding) and drops or refuses items the model knows;
* :func:`ridge_map` learns ``y ~ x W + b`` (ridge, unpenalised intercept) from sparse rows;
* :func:`visitor_rows` encodes ``user_features={field: value}`` dicts with a fitted Features encoding.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from ..data.features import Features
from ..data.idmap import IdMap
from ..errors import DataError, ParameterError

log = logging.getLogger("persona.models")

KNOWN_CHOICES = ("error", "skip")
# Feature columns up to which the ridge normal equations are solved densely (a d x d float64 Gram:
# 512 MB at 8192); wider feature sets use conjugate gradients on the sparse rows.
_DENSE_RIDGE = 8192


def is_frame(obj: Any) -> bool:
    """True for a pandas DataFrame (without importing pandas)."""
    t = type(obj)
    return t.__module__.startswith("pandas") and t.__name__ == "DataFrame"


def feature_spec_of(features: Features) -> dict | None:
    """The fitted encoding of ``features`` as JSON data, or None when it was built from a matrix."""
    try:
        return features.to_dict()
    except DataError:
        return None


def training_rows(item_features: Any, item_map: IdMap, who: str) -> tuple[sp.csr_matrix, list | None, dict | None]:
    """``(rows, columns, spec)``: float32 CSR rows following ``item_map`` (empty rows for ids without one).

    ``item_features`` is a Features matched by id (extra ids ignored) or a scipy sparse matrix /
    2-D array with one row per id of ``item_map``; ``columns`` and ``spec`` are None for a matrix.
    """
    columns = spec = None
    if isinstance(item_features, Features):
        aligned = item_features.reindex(item_map)
        if len(item_map) and aligned.n_missing == len(item_map):
            kinds = (item_features.id_map.dtype.kind == "U", item_map.dtype.kind == "U")
            extra = " (their ids are strings and the interactions' integers, or the reverse)" \
                if len(item_features) and kinds[0] != kinds[1] else ""
            raise DataError(f"{who}: item_features: expected rows for the interactions' items, got none of their "
                            f"{len(item_map)} ids{extra}; build the Features over inter.item_map")
        if aligned.n_missing:
            log.warning("%s: %d of the %d items have no item_features row; the feature map is learnt without them",
                        who, aligned.n_missing, len(item_map))
        m, columns, spec = aligned.matrix, list(item_features.columns), feature_spec_of(item_features)
        return float_rows(m, f"{who}: item_features"), columns, spec
    return matrix_rows(item_features, item_map, f"{who}: item_features"), columns, spec


def matrix_rows(item_features: Any, item_map: IdMap, what: str) -> sp.csr_matrix:
    """Float32 CSR of a scipy sparse matrix / 2-D array with one row per id of ``item_map``, checked."""
    if sp.issparse(item_features) or isinstance(item_features, np.ndarray):
        if item_features.ndim != 2 or item_features.shape[0] != len(item_map):
            raise DataError(f"{what}: expected one row per item of the interactions ({len(item_map)} rows), got "
                            f"shape {item_features.shape}; align the rows with inter.item_ids, or pass a "
                            "persona.data.Features matched by id")
        return float_rows(item_features, what)
    raise DataError(f"{what}: expected a persona.data.Features or a scipy sparse matrix with one row per item, "
                    f"got {type(item_features).__name__}; build one with Features.from_frame(items, "
                    "inter.item_map, 'item_id', categorical=[...])")


def float_rows(m: Any, what: str) -> sp.csr_matrix:
    """``m`` as float32 CSR with duplicates summed; DataError unless it holds finite numbers."""
    if m.dtype.kind not in "biuf":
        raise DataError(f"{what}: expected numbers, got dtype {m.dtype}")
    m = sp.csr_matrix(m, dtype=np.float32)
    m.sum_duplicates()
    if m.nnz and not np.isfinite(m.data).all():
        raise DataError(f"{what}: expected finite values, got NaN or infinity; fill or drop them first")
    return m


def new_item_rows(features: Any, columns: list | None, spec: dict | None, n_columns: int, item_map: IdMap,
                  known: str, who: str) -> tuple[np.ndarray, sp.csr_matrix]:
    """``(ids, rows)`` of the new items in ``features`` (what ``add_items`` takes), known ones handled by ``known``.

    ``features``: a Features with the fitted ``columns`` (``fitted.transform(new_items_df)``) or a
    DataFrame encoded with the fitted ``spec``.
    """
    if known not in KNOWN_CHOICES:
        raise ParameterError(f"known: expected one of {KNOWN_CHOICES}, got {known!r}")
    if isinstance(features, Features):
        if (columns is not None and list(features.columns) != columns) or features.shape[1] != n_columns:
            raise DataError(f"{who}.add_items: expected the {n_columns} item feature columns the model was fitted "
                            f"with, got a Features with {features.shape[1]} other columns; build them with the "
                            "fitted Features' transform(new_items_df)")
        ids, x = features.id_map.ids, features.matrix
    elif is_frame(features):
        if spec is None:
            raise DataError(f"{who}.add_items: expected a Features, got a DataFrame, which this model cannot encode "
                            "(its item features were not built by Features.from_frame); pass a Features with the "
                            "fitted columns")
        f = Features.from_dict(spec).transform(features)
        ids, x = f.id_map.ids, f.matrix
    else:
        raise DataError(f"{who}.add_items: expected a persona.data.Features or a pandas DataFrame of the new items, "
                        f"got {type(features).__name__}")
    if len(ids) and len(item_map) and (ids.dtype.kind == "U") != (item_map.dtype.kind == "U"):
        raise DataError(f"{who}.add_items: expected item ids of the model's kind ({item_map.dtype}), got "
                        f"{ids.dtype}; use the same kind of ids")
    old = item_map.lookup(ids) if len(ids) else np.zeros(0, np.int64)
    if (old >= 0).any():
        if known == "error":
            raise DataError(f"{who}.add_items: expected new items, got {int((old >= 0).sum())} already known to "
                            f"the model (e.g. {ids[old >= 0][:5].tolist()}); their trained vectors are kept. Pass "
                            "only new items, or known='skip'")
        keep = np.flatnonzero(old < 0)
        ids, x = ids[keep], x[keep]
    x = sp.csr_matrix(x, dtype=np.float32)
    if x.nnz and not np.isfinite(x.data).all():
        raise DataError(f"{who}.add_items: expected finite features, got NaN or infinity; fill or drop them first")
    bare = np.diff(x.indptr) == 0
    if bare.any():
        log.warning("%s.add_items: %d of the %d new items have no features (all-zero rows, e.g. %s); they all get "
                    "the same vector", who, int(bare.sum()), len(ids), ids[bare][:3].tolist())
    return ids, x


def ridge_map(x: sp.csr_matrix, y: np.ndarray, regularization: float) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` minimising ``|y - x W - b|^2 + regularization |W|^2`` (the intercept ``b`` is not penalised).

    Centring is implicit, so ``x`` stays sparse: with column means ``m``, the Gram of the centred
    rows is ``x'x - n m m'`` and ``x'(y - mean y)`` is their right-hand side. Up to
    ``_DENSE_RIDGE`` columns the system is solved densely (Cholesky), above that by conjugate
    gradients, one target column at a time.

    >>> import numpy as np, scipy.sparse as sp
    >>> x = sp.csr_matrix(np.eye(3, dtype=np.float32))
    >>> W, b = ridge_map(x, np.array([[1.0], [2.0], [3.0]]), 1e-6)
    >>> np.round(x @ W + b, 3).ravel().tolist()
    [1.0, 2.0, 3.0]
    """
    from scipy import linalg

    n, d = x.shape
    x64 = sp.csr_matrix(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x_mean = np.asarray(x64.mean(axis=0)).ravel()
    y_mean = y.mean(axis=0)
    rhs = np.asarray(x64.T @ (y - y_mean))
    reg = float(regularization)
    if d <= _DENSE_RIDGE:
        gram = (x64.T @ x64).toarray() - n * np.outer(x_mean, x_mean)
        gram[np.diag_indices(d)] += reg
        W = linalg.solve(gram, rhs, assume_a="pos")
    else:
        from scipy.sparse.linalg import LinearOperator, cg

        xt = x64.T.tocsr()
        op = LinearOperator((d, d), dtype=np.float64,
                            matvec=lambda v: xt @ (x64 @ v) - n * x_mean * (x_mean @ v) + reg * v)
        W = np.zeros((d, y.shape[1]))
        for j in range(y.shape[1]):
            W[:, j], info = cg(op, rhs[:, j], rtol=1e-6, maxiter=1000)
            if info > 0:
                log.info("ridge_map: conjugate gradients stopped after %d steps on target column %d", info, j)
    b = y_mean - x_mean @ W
    return W.astype(np.float32), b.astype(np.float32)


def visitor_rows(spec: dict, n_columns: int, values: Sequence[Mapping[str, Any] | None], who: str) -> sp.csr_matrix:
    """Feature rows (len(values), n_columns) of visitors described by ``{field: value}`` dicts (None: nothing known).

    Fields are the fitted Features' fields; a field left out, or a value never seen at fit, gives
    no column (as ``Features.transform`` encodes a missing value).
    """
    import pandas as pd

    fields = [name for name, _ in spec["order"]]
    rows = []
    for v in values:
        if v is None:
            v = {}
        if not isinstance(v, Mapping):
            raise ParameterError(f"{who}: user_features: expected a dict {{field: value}}, got {type(v).__name__}")
        unknown = [k for k in v if k not in fields]
        if unknown:
            raise ParameterError(f"{who}: user_features: expected the fields the model was fitted with {fields}, "
                                 f"got unknown field(s) {unknown}; drop them or refit with those fields")
        rows.append(v)
    id_column = spec["id_column"]
    frame = pd.DataFrame({id_column: np.arange(len(rows)),
                          **{f: pd.Series([r.get(f) for r in rows], dtype=object) for f in fields}})
    kinds = {f: s["kind"] for f, s in spec["fields"].items()}
    for f in fields:  # numeric fields come as numbers; a text value there is the caller's mistake
        if kinds.get(f) == "numeric":
            try:
                frame[f] = pd.to_numeric(frame[f])
            except (TypeError, ValueError):
                raise ParameterError(f"{who}: user_features: field {f!r} is numeric, got "
                                     f"{frame[f].dropna().tolist()[:3]}; pass numbers") from None
    m = Features.from_dict(spec).transform(frame).matrix
    if m.shape[1] != n_columns:
        raise DataError(f"{who}: the stored user feature encoding gives {m.shape[1]} columns, expected {n_columns}; "
                        "the artifact is inconsistent, save the model again")
    return sp.csr_matrix(m, dtype=np.float32)
