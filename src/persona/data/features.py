"""User and item side features as sparse matrices aligned with an :class:`IdMap`.

A :class:`Features` turns a frame of attributes (one row per user or item) into a CSR matrix whose
row ``r`` describes the id at index ``r`` of the map, so it lines up with the rows or columns of
``Interactions.matrix``:

* categorical fields -> one-hot columns ``"category=shoes"``;
* numeric fields -> one-hot quantile buckets ``"price=[10,25)"`` (plus, optionally, the
  standardised value in a column ``"price"``);
* tag fields (list-likes or ``"a|b|c"`` strings) -> multi-hot columns ``"tags=summer"``;
* text fields -> TF-IDF over a fitted vocabulary (``"title:shoe"``) or a hashed bag of words
  (``"title#123"``), rows L2-normalised.

The fitted vocabularies, bucket edges and idf weights are kept, so :meth:`Features.transform`
encodes new rows (cold-start items) exactly as the fitted ones.
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from .._validate import check_frame
from ..errors import DataError
from .idmap import IdMap, normalize_ids

# pandas is imported inside the functions that need it: `import persona` stays light

__all__ = ["Features", "tokenize"]

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_TEXT_MODES = ("tfidf", "hash")


def tokenize(text) -> list[str]:
    """Lower-cased word tokens of two or more characters (a missing text has none).

    Examples
    --------
    >>> tokenize("Red running-shoes, size 42!")
    ['red', 'running', 'shoes', 'size', '42']
    """
    if not isinstance(text, str):
        return []
    return _TOKEN.findall(text.lower())


def _stable_hash(token: str) -> int:
    # Python's hash() is salted per process; crc32 gives the same column in every process
    return zlib.crc32(token.encode("utf-8"))


def _as_str(ser: pd.Series) -> pd.Series:
    """Category labels as strings; integral floats (ints with gaps) print as ints."""
    import pandas as pd

    if pd.api.types.is_float_dtype(ser.dtype):
        vals = ser.to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(vals)
        if np.array_equal(vals[ok], np.round(vals[ok])):
            out = pd.Series(np.where(ok, vals, 0).astype(np.int64).astype(str), index=ser.index, dtype=object)
            out[~ok] = None
            return out
    out = ser.astype(object)
    return out.where(ser.notna(), None).map(lambda v: v if v is None else str(v))


def _tag_lists(ser: pd.Series, sep: str) -> pd.Series:
    import pandas as pd

    def split(v):
        if isinstance(v, str):
            parts = v.split(sep)
        elif isinstance(v, (list, tuple, set, frozenset, np.ndarray, pd.Series)):
            parts = [str(x) for x in v if not (x is None or (isinstance(x, float) and x != x))]
        elif v is None or (isinstance(v, float) and v != v):
            parts = []
        else:
            parts = [str(v)]
        return [p.strip() for p in parts if p.strip()]

    return ser.map(split)


def _explode(lists: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(row position, value) pairs of a Series of lists."""
    lengths = lists.map(len).to_numpy(dtype=np.int64)
    rows = np.repeat(np.arange(len(lists)), lengths)
    flat = [x for lst in lists for x in lst]
    return rows, np.asarray(flat, dtype=object)


def _l2_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ m)


class Features:
    """Sparse side features, row ``r`` describing the id at index ``r`` of ``id_map``.

    Build one with :meth:`from_frame`; encode new rows with :meth:`transform`.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix, float32, shape (len(id_map), len(columns))
    columns : list of str
        Name of each column, e.g. ``"category=shoes"``, ``"price=[10,25)"``, ``"title:shoe"``.
    id_map : IdMap
    n_missing : int
        Ids of the map with no row in the frame (their rows are all zero).
    n_unknown : int
        Frame rows whose id is not in the map (or is null); they were ignored.
    fields : dict
        Field name -> kind (``"categorical"``, ``"numeric"``, ``"tags"``, ``"text"``).

    Examples
    --------
    >>> import pandas as pd
    >>> from persona.data import IdMap
    >>> items = IdMap(["a", "b", "c"])
    >>> df = pd.DataFrame({"item": ["a", "b"], "cat": ["shoes", "hats"], "tags": ["x|y", "y"]})
    >>> f = Features.from_frame(df, items, "item", categorical=["cat"], tags=["tags"])
    >>> f.columns
    ['cat=hats', 'cat=shoes', 'tags=x', 'tags=y']
    >>> f.matrix.toarray().tolist()
    [[0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    >>> f.codes("cat").tolist(), f.n_missing
    ([1, 0, -1], 1)
    """

    def __init__(self, matrix, columns: Sequence[str], id_map: IdMap, *, n_missing: int = 0, n_unknown: int = 0,
                 codes: dict | None = None, spec: dict | None = None) -> None:
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        if matrix.shape != (len(id_map), len(columns)):
            raise DataError(
                f"features matrix has shape {matrix.shape} but the map has {len(id_map)} ids and there are "
                f"{len(columns)} columns; pass one row per id and one name per column"
            )
        self.matrix = matrix
        self.columns = list(columns)
        self.id_map = id_map
        self.n_missing = int(n_missing)
        self.n_unknown = int(n_unknown)
        self._codes = dict(codes or {})
        self._spec = spec or {"fields": {}, "order": [], "id_column": None}

    # ------------------------------------------------------------------ facts
    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def __repr__(self) -> str:
        kinds = ", ".join(f"{f}:{s['kind']}" for f, s in self._spec["fields"].items())
        return (f"Features({self.shape[0]} rows x {self.shape[1]} columns; {kinds}; "
                f"n_missing={self.n_missing}, n_unknown={self.n_unknown})")

    @property
    def fields(self) -> dict:
        return {f: s["kind"] for f, s in self._spec["fields"].items()}

    def field_slice(self, field: str) -> slice:
        """The columns of one field."""
        spec = self._field(field)
        return slice(spec["start"], spec["stop"])

    def _field(self, field: str) -> dict:
        try:
            return self._spec["fields"][field]
        except KeyError:
            raise DataError(f"unknown field {field!r}; fields are {list(self._spec['fields'])}") from None

    def categories(self, field: str) -> list[str]:
        """Vocabulary of a categorical field: the label of each code of :meth:`codes`."""
        spec = self._field(field)
        if spec["kind"] != "categorical":
            raise DataError(f"field {field!r} is {spec['kind']}, not categorical; categories() needs a categorical field")
        return list(spec["vocab"])

    def codes(self, field: str) -> np.ndarray:
        """Category code of every row of a categorical field (``-1``: missing or unseen value).

        Codes index :meth:`categories`; they are what per-category metrics group by.
        """
        spec = self._field(field)
        if spec["kind"] != "categorical":
            raise DataError(f"field {field!r} is {spec['kind']}, not categorical; codes() needs a categorical field")
        return self._codes[field]

    # ------------------------------------------------------------------ building
    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        id_map: IdMap,
        id_column: str,
        *,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        tags: Sequence[str] = (),
        text: Sequence[str] = (),
        n_buckets: int = 10,
        numeric_scaled: bool = False,
        tag_sep: str = "|",
        hash_dim: int = 2**12,
        text_mode: str = "tfidf",
    ) -> "Features":
        """Fit vocabularies and buckets on ``df`` and encode it, aligned with ``id_map``.

        Parameters
        ----------
        df : pandas.DataFrame, polars.DataFrame or pyarrow.Table
            One row per user or item (a table that is not pandas is converted once).
        id_map : IdMap
            The map to align rows with (e.g. ``inter.item_map``).
        id_column : str
            Column of external ids in ``df``. Ids of the map without a row get an all-zero row
            (counted in ``n_missing``); rows whose id is not in the map (or null) are ignored
            (counted in ``n_unknown``); a repeated id is an error.
        categorical : sequence of str
            One-hot fields. A missing value gives no column (and code ``-1``).
        numeric : sequence of str
            Fields bucketed into ``n_buckets`` quantile buckets (fewer when values repeat), one-hot.
        n_buckets : int, default 10
        numeric_scaled : bool, default False
            Also add each numeric field's standardised value ``(x - mean) / std`` as a column named
            after the field (0 when missing).
        tags : sequence of str
            Multi-hot fields: list-likes, or strings split on ``tag_sep``.
        tag_sep : str, default "|"
        text : sequence of str
            Free-text fields, tokenised by :func:`tokenize`.
        text_mode : {"tfidf", "hash"}, default "tfidf"
            ``"tfidf"``: a vocabulary of at most ``hash_dim`` tokens (the most frequent by document
            frequency) with smoothed idf ``ln((1 + n) / (1 + df)) + 1``. ``"hash"``: token counts
            hashed (crc32) into ``hash_dim`` columns; nothing to fit. Rows are L2-normalised per field.
        hash_dim : int, default 4096

        Returns
        -------
        Features
        """
        df = check_frame(df, "Features.from_frame: df")
        if not isinstance(id_map, IdMap):
            raise DataError(f"expected an IdMap (e.g. inter.item_map), got {type(id_map).__name__}")
        if text_mode not in _TEXT_MODES:
            raise DataError(f"text_mode must be one of {_TEXT_MODES}, got {text_mode!r}")
        if not isinstance(n_buckets, (int, np.integer)) or n_buckets < 1:
            raise DataError(f"n_buckets must be a positive integer, got {n_buckets!r}")
        if not isinstance(hash_dim, (int, np.integer)) or hash_dim < 1:
            raise DataError(f"hash_dim must be a positive integer, got {hash_dim!r}")
        groups = {"categorical": categorical, "numeric": numeric, "tags": tags, "text": text}
        order: list[tuple[str, str]] = []
        seen: dict[str, str] = {}
        for kind, names in groups.items():
            if isinstance(names, str):
                names = [names]
            for name in names:
                if name in seen:
                    raise DataError(f"field {name!r} is listed as both {seen[name]} and {kind}; list it once")
                seen[name] = kind
                order.append((name, kind))
        if not order:
            raise DataError("no feature fields given; pass categorical=, numeric=, tags= or text= column names")
        missing = [c for c in [id_column, *seen] if c not in df.columns]
        if missing:
            raise DataError(f"column(s) {missing} not found; available columns: {list(df.columns)}")
        spec = {
            "fields": {},
            "order": order,
            "id_column": id_column,
            "options": dict(n_buckets=int(n_buckets), numeric_scaled=bool(numeric_scaled), tag_sep=tag_sep,
                            hash_dim=int(hash_dim), text_mode=text_mode),
        }
        return cls._build(df, id_map, spec, fit=True)

    def transform(self, df: pd.DataFrame, id_map: IdMap | None = None) -> "Features":
        """Encode new rows with the fitted vocabularies, buckets and idf weights.

        Parameters
        ----------
        df : pandas.DataFrame, polars.DataFrame or pyarrow.Table
            Rows with the same fields (e.g. cold-start items).
        id_map : IdMap, optional
            Map to align the rows with. Default: the ids of ``df``'s id column in frame order (so
            row ``r`` of the result is row ``r`` of ``df``; the ids must be unique and not null).

        Returns
        -------
        Features
            With the same ``columns``; unseen categories, tags and tokens give no column.
        """
        df = check_frame(df, "Features.transform: df")
        id_column = self._spec["id_column"]
        needed = [id_column, *[f for f, _ in self._spec["order"]]]
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise DataError(f"column(s) {missing} not found; available columns: {list(df.columns)}")
        if id_map is None:
            id_map = IdMap(normalize_ids(df[id_column].to_numpy(), what=f"column {id_column!r}"))
        return self._build(df, id_map, self._spec, fit=False)

    def reindex(self, id_map: IdMap) -> "Features":
        """The same features with rows following ``id_map``: ids without a row here get empty rows.

        How a model aligns features matched by id with its own item (or user) order.

        >>> import pandas as pd
        >>> from persona.data import IdMap
        >>> df = pd.DataFrame({"item": ["a", "b"], "cat": ["shoes", "hats"]})
        >>> f = Features.from_frame(df, IdMap(["a", "b"]), "item", categorical=["cat"])
        >>> g = f.reindex(IdMap(["b", "z", "a"]))
        >>> g.codes("cat").tolist(), g.n_missing
        ([0, -1, 1], 1)
        """
        if id_map is self.id_map:
            return self
        idx = self.id_map.lookup(id_map.ids) if len(id_map) else np.zeros(0, dtype=np.int64)
        have = idx >= 0
        picked = self.matrix[np.maximum(idx, 0)] if len(self.id_map) else sp.csr_matrix((len(id_map), self.shape[1]))
        matrix = (sp.diags(have.astype(np.float32)) @ picked).tocsr()
        codes = {f: np.where(have, c[np.maximum(idx, 0)] if len(c) else -1, -1).astype(c.dtype)
                 for f, c in self._codes.items()}
        return Features(matrix, self.columns, id_map, n_missing=int((~have).sum()), codes=codes, spec=self._spec)

    # ------------------------------------------------------------------ as data
    def to_dict(self) -> dict:
        """The fitted encoding as plain JSON data: fields, vocabularies, bucket edges, idf, columns.

        The rows (``matrix``, ``id_map``) are not included; :meth:`from_dict` gives back an encoder
        whose :meth:`transform` encodes new rows exactly as this one (what a saved model keeps to
        encode cold-start items, without pickle).

        Examples
        --------
        >>> import json, pandas as pd
        >>> from persona.data import IdMap
        >>> df = pd.DataFrame({"item": ["a", "b"], "cat": ["shoes", "hats"]})
        >>> f = Features.from_frame(df, IdMap(["a", "b"]), "item", categorical=["cat"])
        >>> g = Features.from_dict(json.loads(json.dumps(f.to_dict())))
        >>> g.transform(pd.DataFrame({"item": ["n"], "cat": ["shoes"]})).matrix.toarray().tolist()
        [[0.0, 1.0]]
        """
        import json

        spec = self._spec
        if "options" not in spec or "columns" not in spec:
            raise DataError("these Features were built from a matrix, not by Features.from_frame; there is no "
                            "fitted encoding to export")
        return json.loads(json.dumps(spec))  # a deep copy made only of JSON types (tuples become lists)

    @classmethod
    def from_dict(cls, spec: dict) -> "Features":
        """An encoder with no rows, from :meth:`to_dict`'s data; use its :meth:`transform`."""
        if not isinstance(spec, dict) or any(k not in spec for k in ("fields", "order", "id_column", "options",
                                                                       "columns")):
            raise DataError("expected the dict of Features.to_dict() (keys fields, order, id_column, options, "
                            f"columns), got {type(spec).__name__}"
                            + (f" with keys {sorted(spec)}" if isinstance(spec, dict) else ""))
        spec = dict(spec, order=[(str(name), str(kind)) for name, kind in spec["order"]])
        missing = [name for name, _ in spec["order"] if name not in spec["fields"]]
        if missing:
            raise DataError(f"Features spec lists fields {missing} in its order but does not describe them")
        columns = list(spec["columns"])
        return cls(sp.csr_matrix((0, len(columns)), dtype=np.float32), columns, IdMap([]), spec=spec)

    # ------------------------------------------------------------------ internals
    @classmethod
    def _build(cls, df: pd.DataFrame, id_map: IdMap, spec: dict, *, fit: bool) -> "Features":
        id_column = spec["id_column"]
        n_rows = len(id_map)
        raw_ids = df[id_column]
        present = raw_ids.notna().to_numpy()
        pos = np.full(len(df), -1, dtype=np.int64)
        if present.any():
            ids = normalize_ids(raw_ids[present].to_numpy(), what=f"column {id_column!r}")
            pos[present] = id_map.lookup(ids)
        known = pos >= 0
        kpos = pos[known]
        if len(kpos) != len(np.unique(kpos)):
            srt = np.sort(kpos)
            dup = np.unique(srt[1:][srt[1:] == srt[:-1]])[:5]
            raise DataError(
                f"column {id_column!r}: ids {id_map.to_ids(dup).tolist()} appear in more than one row; "
                f"pass one row per id (e.g. df.drop_duplicates({id_column!r}))"
            )
        n_unknown = int((~known).sum())
        n_missing = n_rows - len(kpos)
        sub = df.loc[known] if not known.all() else df
        opts = spec["options"]
        blocks: list[sp.csr_matrix] = []
        columns: list[str] = []
        codes: dict[str, np.ndarray] = {}
        start = 0
        fields_out = {} if fit else spec["fields"]
        for name, kind in spec["order"]:
            fspec = {"kind": kind} if fit else dict(spec["fields"][name])
            ser = sub[name]
            if kind == "categorical":
                block, names, code = _categorical(ser, fspec, fit)
                full = np.full(n_rows, -1, dtype=np.int64)
                full[kpos] = code
                codes[name] = full
            elif kind == "numeric":
                block, names = _numeric(ser, name, fspec, fit, opts)
            elif kind == "tags":
                block, names = _tags(ser, fspec, fit, opts["tag_sep"])
            else:
                block, names = _text(ser, name, fspec, fit, opts)
            if not fit and len(names) != fspec["stop"] - fspec["start"]:  # pragma: no cover - internal
                raise DataError(f"field {name!r}: transform produced {len(names)} columns, fitted {fspec['stop'] - fspec['start']}")
            if fit:
                fspec["start"], fspec["stop"] = start, start + len(names)
                fields_out[name] = fspec
                columns.extend(f"{name}={x}" if kind in ("categorical", "tags") else x for x in names)
            start += len(names)
            blocks.append(block)
        if fit:
            spec = dict(spec, fields=fields_out, columns=columns)
        columns = spec["columns"]
        body = sp.hstack(blocks, format="csr", dtype=np.float32) if blocks else sp.csr_matrix((len(kpos), 0))
        # rows of the frame -> rows of the map
        align = sp.csr_matrix(
            (np.ones(len(kpos), dtype=np.float32), (kpos, np.arange(len(kpos)))), shape=(n_rows, len(kpos))
        )
        matrix = sp.csr_matrix(align @ body, dtype=np.float32)
        matrix.sort_indices()
        return cls(matrix, columns, id_map, n_missing=n_missing, n_unknown=n_unknown, codes=codes, spec=spec)


# ---------------------------------------------------------------------------------------- encoders
def _onehot(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int, data=None) -> sp.csr_matrix:
    if data is None:
        data = np.ones(len(rows), dtype=np.float32)
    m = sp.csr_matrix((data, (rows, cols)), shape=(n_rows, n_cols), dtype=np.float32)
    m.sum_duplicates()
    return m


def _categorical(ser: pd.Series, fspec: dict, fit: bool):
    import pandas as pd

    labels = _as_str(ser)
    if fit:
        fspec["vocab"] = sorted({v for v in labels.dropna().unique().tolist()})
    vocab = pd.Index(fspec["vocab"], dtype=object)
    code = vocab.get_indexer(labels.astype(object)).astype(np.int64)  # -1: missing or unseen
    has = code >= 0
    block = _onehot(np.flatnonzero(has), code[has], len(ser), len(vocab))
    return block, list(fspec["vocab"]), code


def _numeric(ser: pd.Series, name: str, fspec: dict, fit: bool, opts: dict):
    import pandas as pd

    if pd.api.types.is_bool_dtype(ser.dtype) or pd.api.types.is_numeric_dtype(ser.dtype):
        x = ser.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        x = pd.to_numeric(ser, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isnan(x) & ser.notna().to_numpy()
        if bad.any():
            rows = np.flatnonzero(bad)[:5]
            raise DataError(
                f"column {name!r}: expected numbers, got {ser.iloc[rows].tolist()} at rows {rows.tolist()} "
                f"(positions among the matched rows); convert the column to numbers or list it as categorical"
            )
    x = np.where(np.isfinite(x), x, np.nan)
    ok = ~np.isnan(x)
    if fit:
        vals = x[ok]
        if len(vals):
            qs = np.quantile(vals, np.linspace(0.0, 1.0, opts["n_buckets"] + 1)[1:-1])
            edges = np.unique(qs)
            edges = edges[(edges > vals.min())]  # an edge at the minimum would leave bucket 0 empty
            fspec["mean"], fspec["std"] = float(vals.mean()), float(vals.std())
        else:
            edges = np.array([], dtype=np.float64)
            fspec["mean"], fspec["std"] = 0.0, 0.0
        fspec["edges"] = edges.tolist()
    edges = np.asarray(fspec["edges"], dtype=np.float64)
    bounds = np.r_[-np.inf, edges, np.inf]
    names = [f"{name}=[{lo:g},{hi:g})" for lo, hi in zip(bounds[:-1], bounds[1:])]
    bucket = np.searchsorted(edges, x[ok], side="right")
    block = _onehot(np.flatnonzero(ok), bucket, len(ser), len(names))
    if opts["numeric_scaled"]:
        std = fspec["std"] if fspec["std"] > 0 else 1.0
        z = np.where(ok, (np.nan_to_num(x) - fspec["mean"]) / std, 0.0).astype(np.float32)
        block = sp.hstack([block, sp.csr_matrix(z.reshape(-1, 1))], format="csr")
        names = names + [name]
    return block, names


def _tags(ser: pd.Series, fspec: dict, fit: bool, sep: str):
    import pandas as pd

    lists = _tag_lists(ser, sep)
    rows, flat = _explode(lists)
    if fit:
        fspec["vocab"] = sorted(set(flat.tolist()))
    vocab = pd.Index(fspec["vocab"], dtype=object)
    col = vocab.get_indexer(flat) if len(flat) else np.array([], dtype=np.int64)
    has = col >= 0
    block = _onehot(rows[has], col[has], len(ser), len(vocab))
    block.data[:] = 1.0  # a tag repeated in one row is still one tag
    return block, list(fspec["vocab"])


def _text(ser: pd.Series, name: str, fspec: dict, fit: bool, opts: dict):
    import pandas as pd

    lists = ser.map(tokenize)
    rows, flat = _explode(lists)
    n = len(ser)
    if opts["text_mode"] == "hash":
        dim = opts["hash_dim"]
        uniq, inv = np.unique(flat.astype(str), return_inverse=True) if len(flat) else (np.array([]), np.array([], dtype=np.int64))
        hashed = np.array([_stable_hash(t) % dim for t in uniq.tolist()], dtype=np.int64)
        block = _onehot(rows, hashed[inv.reshape(-1)] if len(flat) else inv, n, dim)
        return _l2_rows(block), [f"{name}#{j}" for j in range(dim)]
    if fit:
        if len(flat):
            pairs = pd.DataFrame({"r": rows, "t": flat}).drop_duplicates()
            dfreq = pairs["t"].value_counts()
            # most frequent first, ties alphabetical; then the kept vocabulary in alphabetical order
            top = sorted(dfreq.items(), key=lambda kv: (-kv[1], kv[0]))[: opts["hash_dim"]]
            vocab = sorted(t for t, _ in top)
            df_of = dfreq.reindex(vocab).to_numpy(dtype=np.float64)
        else:
            vocab, df_of = [], np.array([], dtype=np.float64)
        fspec["vocab"] = vocab
        fspec["idf"] = (np.log((1.0 + n) / (1.0 + df_of)) + 1.0).tolist()
    vocab = pd.Index(fspec["vocab"], dtype=object)
    col = vocab.get_indexer(flat) if len(flat) else np.array([], dtype=np.int64)
    has = col >= 0
    tf = _onehot(rows[has], col[has], n, len(vocab))
    block = sp.csr_matrix(tf @ sp.diags(np.asarray(fspec["idf"], dtype=np.float64))) if len(vocab) else tf
    return _l2_rows(block), [f"{name}:{t}" for t in fspec["vocab"]]
