"""Readers for the public reference data sets persona is tuned and benchmarked on.

The data never ships with persona. Loaders take a path, or a name that is looked up under a data
folder (see :func:`default_data_path`): ``$PERSONA_DATA``, or a ``shared/data`` folder beside the
working directory or beside the persona checkout.

* :func:`load_sequences` -- the ``user item item ...`` files of sequential recommendation (Amazon
  Beauty, LastFM as preprocessed for S3-Rec), with their item attributes when present.
* :func:`load_open_bandit` -- a campaign of the Open Bandit Dataset as
  :class:`~persona.marketing.LoggedFeedback`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import scipy.sparse as sp

from ..errors import DataError

__all__ = [
    "DataNotFoundError",
    "SequenceData",
    "default_data_path",
    "parse_sequences",
    "load_sequences",
    "load_open_bandit",
]

ENV_VAR = "PERSONA_DATA"


class DataNotFoundError(DataError, FileNotFoundError):
    """A data file or folder is neither at the given path nor under any data folder."""


# ---------------------------------------------------------------------------------------------- paths
def _data_roots() -> list[Path]:
    roots = []
    env = os.environ.get(ENV_VAR)
    if env:
        roots.append(Path(env).expanduser())
    for base in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (base, *base.parents):
            roots.append(folder / "shared" / "data")
    out, seen = [], set()
    for r in roots:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def default_data_path(name: str | os.PathLike = "") -> Path | None:
    """Where the reference data set ``name`` lives on this machine, or None.

    Looks, in order, under ``$PERSONA_DATA``, then for a ``shared/data`` folder in the working
    directory or any folder above it (so ``../shared/data`` from a checkout), then in any folder
    above the installed persona package (the repository root's sibling).

    Parameters
    ----------
    name : str or path
        Relative path inside the data folder, e.g. ``"amazon-beauty/Beauty.txt"``; empty for the
        data folder itself.

    Returns
    -------
    pathlib.Path or None
        The first existing match, absolute; None when there is none.

    Examples
    --------
    >>> default_data_path("no-such-data-set/at-all.txt") is None
    True
    """
    name = Path(name)
    if name.is_absolute():
        return name if name.exists() else None
    for root in _data_roots():
        p = root / name
        if p.exists():
            return p.absolute()
    return None


def _resolve(path, what: str) -> Path:
    p = Path(path).expanduser()
    if p.exists():
        return p
    found = None if p.is_absolute() else default_data_path(p)
    if found is None:
        raise DataNotFoundError(
            f"{what} {os.fspath(path)!r} not found: it is not a path from the working directory "
            f"({Path.cwd()}) and not under ${ENV_VAR} or a shared/data folder; pass the full path or set "
            f"{ENV_VAR} to the data folder"
        )
    return found


# ---------------------------------------------------------------------------------------------- sequences
def parse_sequences(path_or_lines) -> tuple[np.ndarray, np.ndarray]:
    """Parse the ``user item item ...`` format into one (user, item) pair per event.

    Parameters
    ----------
    path_or_lines : str, path, or iterable of str
        A file path, or the lines themselves. Blank lines and lines with a user but no item are
        skipped. Items keep their order within a line (it is the time order).

    Returns
    -------
    user_ids, item_ids : int64 arrays of the same length
        External ids as written in the file.

    Examples
    --------
    >>> u, i = parse_sequences(["1 10 11", "", "2 12"])
    >>> u.tolist(), i.tolist()
    ([1, 1, 2], [10, 11, 12])
    """
    if isinstance(path_or_lines, (str, os.PathLike)):
        with open(_resolve(path_or_lines, "sequence file"), encoding="utf-8") as f:
            lines: Iterable = f.read().splitlines()
        source = repr(os.fspath(path_or_lines))
    else:
        lines = path_or_lines
        source = "the lines"
    users: list[int] = []
    items: list[int] = []
    for no, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        parts = line.split()
        if len(parts) < 2:
            continue
        try:
            u = int(parts[0])
            its = [int(t) for t in parts[1:]]
        except ValueError:
            bad = next(t for t in parts if not t.lstrip("+-").isdigit())
            raise DataError(
                f"line {no} of {source}: expected integer ids 'user item item ...', got {bad!r}; "
                "read string ids with Interactions.from_sequences(..., ids='str')"
            ) from None
        users.extend([u] * len(its))
        items.extend(its)
    return np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)


@dataclass
class SequenceData:
    """A sequence data set: its interactions and, when known, each item's attribute ids.

    Attributes
    ----------
    interactions : Interactions
        One event per (user, item) of the file, each user's events in file (time) order.
    item_attributes : dict or None
        External item id -> list of attribute ids (int), or None when there is no attribute file.
    path, attributes_path : pathlib.Path or None
        Where the data came from.
    """

    interactions: object
    item_attributes: dict | None = None
    path: Path | None = None
    attributes_path: Path | None = None

    @property
    def n_attributes(self) -> int:
        """Number of attribute columns: the largest attribute id + 1 (0 without attributes)."""
        if not self.item_attributes:
            return 0
        return 1 + max((max(v) for v in self.item_attributes.values() if len(v)), default=-1)

    def attribute_matrix(self, item_map=None, *, n_attributes: int | None = None) -> sp.csr_matrix:
        """Multi-hot item x attribute matrix, rows aligned with ``item_map``.

        Parameters
        ----------
        item_map : IdMap or Interactions, optional
            The items of the rows, in order; by default those of :attr:`interactions`.
        n_attributes : int, optional
            Number of columns (at least :attr:`n_attributes`); column ``a`` is attribute id ``a``.

        Returns
        -------
        scipy.sparse.csr_matrix, float32, shape (len(item_map), n_attributes)
            1 where the item has the attribute; items without attributes have empty rows.
        """
        if item_map is None:
            item_map = self.interactions.item_map
        if hasattr(item_map, "item_map"):
            item_map = item_map.item_map
        need = self.n_attributes
        if n_attributes is None:
            n_attributes = need
        elif n_attributes < need:
            raise DataError(f"n_attributes={n_attributes} is too small: attribute ids reach {need - 1}; "
                            f"pass at least {need}")
        ids = item_map.ids
        rows, cols = [], []
        attrs = self.item_attributes or {}
        for r, item in enumerate(ids.tolist()):
            a = attrs.get(item)
            if a:
                rows.extend([r] * len(a))
                cols.extend(a)
        r = np.asarray(rows, dtype=np.int64)
        c = np.asarray(cols, dtype=np.int64)
        m = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(len(ids), n_attributes))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m


def _read_attributes(path: Path, int_ids: bool) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); expected {{\"item_id\": [attribute_id, ...]}}") from None
    if not isinstance(raw, dict):
        raise DataError(
            f"{path}: expected a JSON object {{\"item_id\": [attribute_id, ...]}}, got {type(raw).__name__}"
        )
    out = {}
    for key, vals in raw.items():
        if not isinstance(vals, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                 for v in vals):
            raise DataError(f"{path}: item {key!r} has attributes {vals!r}; expected a list of integer ids >= 0")
        if int_ids:
            try:
                key = int(key)
            except ValueError:
                raise DataError(
                    f"{path}: item key {key!r} is not an integer but the sequence file's items are"
                ) from None
        out[key] = list(vals)
    return out


def load_sequences(path, attributes="auto", **options) -> SequenceData:
    """Load a ``user item item ...`` file (e.g. Amazon Beauty) and its item attributes.

    Parameters
    ----------
    path : str or path
        The file, or its name under the data folder (``"amazon-beauty/Beauty.txt"``).
    attributes : "auto", path, or None
        The item attribute JSON (``{"item": [attribute, ...]}``). ``"auto"`` reads
        ``<Name>_item2attributes.json`` beside the file when it exists; None reads none.
    **options
        Passed to :meth:`Interactions.from_sequences` (``ids``, ``min_user_events``, ...).

    Returns
    -------
    SequenceData

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "Tiny.txt").write_text("1 5 6 7\\n2 6 5\\n")
    >>> _ = (folder / "Tiny_item2attributes.json").write_text('{"5": [1], "6": [1, 2], "7": [3]}')
    >>> data = load_sequences(folder / "Tiny.txt")
    >>> data.interactions.n_users, data.interactions.n_items, len(data.interactions)
    (2, 3, 5)
    >>> data.attribute_matrix().toarray().astype(int).tolist()
    [[0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]]
    """
    from ..data.interactions import Interactions

    path = _resolve(path, "sequence file")
    inter = Interactions.from_sequences(str(path), **options)
    attr_path = None
    if isinstance(attributes, str) and attributes == "auto":
        guess = path.with_name(f"{path.stem}_item2attributes.json")
        attr_path = guess if guess.exists() else None
    elif attributes is not None and attributes is not False:
        attr_path = _resolve(attributes, "attribute file")
    item_attributes = None
    if attr_path is not None:
        item_attributes = _read_attributes(attr_path, inter.item_ids.dtype.kind in "iu")
    return SequenceData(interactions=inter, item_attributes=item_attributes, path=path, attributes_path=attr_path)


# ---------------------------------------------------------------------------------------------- open bandit
_OBD_REQUIRED = ("item_id", "position", "click", "propensity_score")


def _read_csv(path: Path):
    import pandas as pd

    df = pd.read_csv(path)
    drop = [c for c in df.columns if str(c) == "" or str(c).startswith("Unnamed: ")]
    return df.drop(columns=drop)


def _one_hot(df, columns: list[str], known: dict | None) -> tuple[np.ndarray, list[str]]:
    """One-hot columns (categories sorted, or those of ``known``); unseen values give all-zero rows."""
    blocks, names = [], []
    for col in columns:
        values = df[col].astype(str).to_numpy()
        cats = known[col] if known is not None and col in known else sorted(set(values.tolist()))
        cats_arr = np.asarray(cats, dtype=str)
        order = np.argsort(cats_arr)
        pos = np.searchsorted(cats_arr[order], values)
        pos_c = np.minimum(pos, len(cats_arr) - 1)
        hit = cats_arr[order][pos_c] == values if len(cats_arr) else np.zeros(len(values), bool)
        block = np.zeros((len(values), len(cats_arr)))
        block[np.flatnonzero(hit), order[pos_c[hit]]] = 1.0
        blocks.append(block)
        names.extend(f"{col}={c}" for c in cats)
    if not blocks:
        return np.zeros((len(df), 0)), []
    return np.hstack(blocks), names


def _categories_from_names(names) -> dict:
    out: dict = {}
    for n in names or ():
        if "=" in n:
            col, val = n.split("=", 1)
            out.setdefault(col, []).append(val)
    return out


def load_open_bandit(folder, campaign: str | None = None, *, align_to=None):
    """Load one campaign of the Open Bandit Dataset as :class:`~persona.marketing.LoggedFeedback`.

    Parameters
    ----------
    folder : str or path
        A folder holding ``<campaign>.csv`` and ``item_context.csv`` (e.g. ``"open-bandit/random-men"``,
        looked up under the data folder when it is not a path), or the campaign CSV itself.
    campaign : str, optional
        ``"men"``, ``"women"`` or ``"all"``; needed only when the folder holds several campaigns.
    align_to : LoggedFeedback, optional
        Encode the categorical features with the columns of this one (e.g. the random policy's logs
        when loading the Thompson-sampling ones), so that contexts of both are comparable; values it
        never saw become all-zero rows.

    Returns
    -------
    LoggedFeedback
        ``action`` = ``item_id``; ``reward`` = ``click``; ``propensity`` = ``propensity_score``;
        ``position`` 0-based (the files count from 1); ``context`` = one-hot ``user_feature_*``
        followed by the ``user-item_affinity_*`` columns in item order (names in ``context_names``);
        ``action_context`` = ``item_feature_0`` (price, scaled) and one-hot ``item_feature_1..3``,
        one row per item; ``timestamps`` in epoch seconds.
    """
    from ..marketing.logged import LoggedFeedback

    path = _resolve(folder, "Open Bandit folder")
    if path.is_file():
        csv, item_csv = path, path.with_name("item_context.csv")
    else:
        if campaign is not None:
            csv = path / f"{campaign}.csv"
            if not csv.exists():
                raise DataNotFoundError(f"no {csv.name} in {path}; campaigns there: "
                                        f"{sorted(p.stem for p in path.glob('*.csv') if p.name != 'item_context.csv')}")
        else:
            found = sorted(p for p in path.glob("*.csv") if p.name != "item_context.csv")
            if len(found) != 1:
                raise DataError(
                    f"{path} holds {len(found)} campaign files {[p.stem for p in found]}; pass campaign=<name>"
                )
            csv = found[0]
        item_csv = path / "item_context.csv"

    df = _read_csv(csv)
    missing = [c for c in _OBD_REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{csv} lacks the columns {missing}; an Open Bandit file has {list(_OBD_REQUIRED)} "
                        "plus user_feature_* and user-item_affinity_* columns")
    position = df["position"].to_numpy()
    if len(position) and position.min() >= 1:  # the data set counts slots from 1
        position = position - 1

    known = _categories_from_names(align_to.context_names) if align_to is not None else None
    ufeat = sorted((c for c in df.columns if str(c).startswith("user_feature_")), key=_suffix)
    onehot, names = _one_hot(df, ufeat, known)
    aff = sorted((c for c in df.columns if str(c).startswith("user-item_affinity_")), key=_suffix)
    blocks = [onehot, df[aff].to_numpy(dtype=np.float64)] if aff else [onehot]
    context = np.hstack(blocks)
    names = names + list(aff)
    if context.shape[1] == 0:
        context, names = None, None

    action_context, action_names, n_actions = None, None, None
    if item_csv.exists():
        items = _read_csv(item_csv)
        if "item_id" not in items.columns:
            raise DataError(f"{item_csv} lacks the column 'item_id'")
        items = items.sort_values("item_id").reset_index(drop=True)
        ids = items["item_id"].to_numpy()
        if not np.array_equal(ids, np.arange(len(ids))):
            raise DataError(f"{item_csv}: item_id must be 0..{len(ids) - 1}, each once; got {ids[:10].tolist()}...")
        n_actions = len(ids)
        feats = [c for c in items.columns if c != "item_id"]
        numeric = [c for c in feats if items[c].dtype.kind in "iuf"]
        categorical = [c for c in feats if c not in numeric]
        known_items = _categories_from_names(align_to.action_context_names) if align_to is not None else None
        oh, oh_names = _one_hot(items, categorical, known_items)
        action_context = np.hstack([items[numeric].to_numpy(dtype=np.float64), oh])
        action_names = list(numeric) + oh_names

    timestamps = None
    if "timestamp" in df.columns:
        import pandas as pd

        try:  # the data set drops the fraction when it is zero: formats vary row to row
            timestamps = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601")
        except (TypeError, ValueError) as exc:
            raise DataError(f"{csv}: could not read the timestamp column ({exc}); expected ISO 8601 times") from None
    return LoggedFeedback(
        action=df["item_id"].to_numpy(), reward=df["click"].to_numpy(), propensity=df["propensity_score"].to_numpy(),
        context=context, position=position, n_actions=n_actions, action_context=action_context,
        timestamps=timestamps, context_names=names, action_context_names=action_names,
    )


def _suffix(col) -> tuple:
    tail = str(col).rsplit("_", 1)[-1]
    return (0, int(tail), "") if tail.isdigit() else (1, 0, str(col))
