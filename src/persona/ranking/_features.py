"""The ranker's features for (user, candidate item) pairs: what each generator said, and the context.

Stage 2 of :class:`~persona.ranking.Hybrid` sees, for every candidate of every user,

* per generator ``g``: its score, the candidate's rank in its list (``candidates`` when absent) and
  the gap to the user's best score from ``g`` (scores of different users are not on one scale; the
  gap is);
* the item: popularity (log of distinct users), recent popularity (last 7 and 30 days) and days
  since its last event, when there are timestamps;
* the user: activity (log of history length) and days since their last event;
* item features (a :class:`~persona.data.Features`): for each categorical field, the share of the
  user's history in the candidate's category ("category match") and the category code itself; for
  each numeric field (e.g. price), the candidate's value minus the user's mean over their history
  ("price against the usual spend");
* user features: the code of each categorical field (age band, gender, location, segment);
* agreement: how many generators proposed the candidate; each generator's score standardised
  (z-score) over the row's merged candidates;
* sequence (the order of each user's events): how often the candidate directly followed the user's
  last item in the training sequences (count, and share of that item's successors), and how often
  it came within ``SEQ_WINDOW`` positions after / around the user's last ``SEQ_RECENT`` items;
* item attributes (the categorical and tag fields of the item features, or every column of a plain
  sparse matrix; rows L2-normalised): cosine of the candidate with the user's last item and with
  the sum of the user's history.

Everything is vectorised over the flattened pairs; the state it needs at serving time is a handful
of arrays per item and per user, saved as data with the model.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..data.features import Features
from ..errors import DataError

_DAY = 86400.0

# Names of the context features, in column order after the per-generator block.
ITEM_CONTEXT = ("item_log_users", "item_log_users_7d", "item_log_users_30d", "item_days_since_last")
USER_CONTEXT = ("user_log_events", "user_days_since_last")
SEQUENCE = ("seq_next_last", "seq_next_share", "seq_follow_recent", "seq_near_recent")
ATTRIBUTES = ("attr_sim_last", "attr_sim_history")
SEQ_RECENT = 3  # the user's latest items the sequence features look back on
SEQ_WINDOW = 3  # positions after an item that count as "came soon after it"


class PairCounts:
    """Counts of ordered item pairs ``(a, b)`` as sorted keys ``a * n_items + b``; vectorised lookups.

    Sparse, so its size is the number of distinct pairs seen; a lookup is a binary search.
    """

    def __init__(self, keys: np.ndarray, counts: np.ndarray, n_items: int) -> None:
        self.keys, self.counts, self.n_items = keys, counts, int(n_items)

    @classmethod
    def from_sequences(cls, users: np.ndarray, items: np.ndarray, n_items: int, offsets) -> PairCounts:
        """Pairs (item at position t, item at t + d) of one user's sequence, for each d in ``offsets``.

        ``users`` / ``items`` are events ordered by user, then time (an Interactions' own order).
        """
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        keys = []
        for d in offsets:
            if d < len(items):
                same = users[d:] == users[:-d]
                keys.append(items[:-d][same] * n_items + items[d:][same])
        if not keys:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.float32), n_items)
        k, c = np.unique(np.concatenate(keys), return_counts=True)
        return cls(k.astype(np.int64), c.astype(np.float32), n_items)

    def lookup(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Count of each pair ``(a[j], b[j])`` (0 where ``a[j] < 0`` or the pair never occurred)."""
        out = np.zeros(len(a), dtype=np.float32)
        ok = a >= 0
        if not ok.any() or not len(self.keys):
            return out
        first = a[ok].astype(np.int64)
        q = first * self.n_items + b[ok]
        # search only the runs of keys that start with the asked first items: a request asks about
        # a few items (the user's latest), whose runs are short, instead of all pairs
        starts = self.first_indptr()
        ua = np.unique(first)
        lo, hi = starts[ua], starts[ua + 1]
        cnt = hi - lo
        pos = np.arange(int(cnt.sum()), dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(lo, cnt)
        keys, counts = self.keys[pos], self.counts[pos]
        vals = np.zeros(len(q), dtype=np.float32)
        if len(keys):
            at = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
            hit = keys[at] == q
            vals[hit] = counts[at[hit]]
        out[ok] = vals
        return out

    def first_indptr(self) -> np.ndarray:
        """Where the keys of each first item start (n_items + 1 offsets), built once."""
        ip = getattr(self, "_first_indptr", None)
        if ip is None:
            ip = np.searchsorted(self.keys, np.arange(self.n_items + 1, dtype=np.int64) * self.n_items)
            self._first_indptr = ip
        return ip

    @classmethod
    def checked(cls, keys, counts, n_items: int, name: str) -> PairCounts:
        keys, counts = np.asarray(keys), np.asarray(counts)
        if keys.ndim != 1 or keys.dtype.kind != "i" or counts.shape != keys.shape or counts.dtype.kind != "f":
            raise DataError(f"{name}: expected matching 1-d integer keys and float counts, got {keys.shape} "
                            f"{keys.dtype} and {counts.shape} {counts.dtype}")
        if len(keys) and (keys[0] < 0 or keys[-1] >= n_items * n_items or np.any(np.diff(keys) <= 0)):
            raise DataError(f"{name}: keys must be increasing pair codes below n_items^2")
        if not np.all(np.isfinite(counts)) or (len(counts) and counts.min() < 0):
            raise DataError(f"{name}: counts must be finite and non-negative")
        return cls(keys.astype(np.int64), counts.astype(np.float32), n_items)


def recent_items(interactions, k: int = SEQ_RECENT) -> np.ndarray:
    """(n_users, k) int32: each user's last k items, latest first, -1 where the history is shorter."""
    ip = interactions.sequence_indptr
    out = np.full((interactions.n_users, k), -1, dtype=np.int32)
    for j in range(k):
        pos = ip[1:] - 1 - j
        has = pos >= ip[:-1]
        out[has, j] = interactions.items[pos[has]]
    return out


def _attribute_rows(features: Features) -> sp.csr_matrix | None:
    """The categorical and tag columns of item features (all columns when no fields), rows L2-normalised."""
    fields = features.fields
    if fields:
        blocks = [features.field_slice(f) for f, kind in fields.items() if kind in ("categorical", "tags")]
        if not blocks:
            return None
        cols = np.concatenate([np.arange(b.start, b.stop) for b in blocks])
        m = features.matrix[:, cols].tocsr()
    else:
        m = features.matrix.tocsr()
    m = sp.csr_matrix(m, dtype=np.float32)
    m.eliminate_zeros()
    if not m.nnz:
        return None
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    m = sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ m, dtype=np.float32)
    m.sort_indices()
    return m


def _row_entries(A: sp.csr_matrix, items: np.ndarray):
    """The stored entries of rows ``items`` of A, flattened: (owner j of each entry, column, value)."""
    starts = A.indptr[items].astype(np.int64)
    cnt = A.indptr[items + 1].astype(np.int64) - starts
    total = int(cnt.sum())
    owner = np.repeat(np.arange(len(items), dtype=np.int64), cnt)
    pos = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(starts, cnt)
    return owner, A.indices[pos], A.data[pos]


_DENSE_CELLS = 1 << 22  # rows x attribute columns densified at once


def aligned_features(features, id_map, what: str) -> Features | None:
    """``features`` as a :class:`Features` whose rows follow ``id_map`` (ids with no row are empty).

    Accepts a Features matched by id (any order, extra ids ignored) or a scipy sparse matrix with
    one row per id of ``id_map`` (its columns become fields-less numeric columns).
    """
    if features is None:
        return None
    if isinstance(features, Features):
        return features.reindex(id_map)
    if sp.issparse(features) or isinstance(features, np.ndarray):
        m = sp.csr_matrix(features, dtype=np.float32)
        if m.shape[0] != len(id_map):
            raise DataError(f"{what} has {m.shape[0]} rows but there are {len(id_map)} {what.split('_')[0]}s in the "
                            f"training interactions; pass one row per {what.split('_')[0]} in map order, or a "
                            "persona.data.Features matched by id")
        return Features(m, [f"{what}[{j}]" for j in range(m.shape[1])], id_map)
    raise DataError(f"{what}: expected a persona.data.Features or a scipy sparse matrix, got "
                    f"{type(features).__name__}")


# a segment-share table is dense (segments x items); a field with more cells than this gets none
MAX_SHARE_CELLS = 16_000_000


def _segment_shares(X: sp.csr_matrix, codes: np.ndarray, n_items: int) -> np.ndarray | None:
    """Share of each segment's users who interacted with each item, (codes + 1, items) float32.

    Row ``c`` is segment ``c``; the last row is all users (for an unknown or missing code), so a
    new visitor's row reads "how popular is this item among people like them". Shrunk toward the
    all-users share by 10 users' worth, so a small segment does not claim certainty.
    """
    n_codes = int(codes.max(initial=-1)) + 1
    if (n_codes + 1) * n_items > MAX_SHARE_CELLS:
        return None
    B = (X > 0).astype(np.float32).tocsr()
    users = np.repeat(np.arange(B.shape[0]), np.diff(B.indptr))
    keep = codes[users] >= 0
    counts = np.zeros((n_codes + 1, n_items), dtype=np.float64)
    np.add.at(counts, (codes[users[keep]], B.indices[keep]), 1.0)
    counts[n_codes] = np.bincount(B.indices, minlength=n_items)
    sizes = np.bincount(codes[codes >= 0], minlength=n_codes).astype(np.float64)
    sizes = np.append(sizes, float(B.shape[0]))
    overall = counts[n_codes] / max(1.0, sizes[-1])
    prior = 10.0
    return ((counts + prior * overall[None, :]) / (sizes[:, None] + prior)).astype(np.float32)


def _numeric_values(features: Features, field: str) -> np.ndarray:
    """One number per row of a numeric field: its scaled value when kept, else its bucket's ordinal."""
    block = features.matrix[:, features.field_slice(field)].tocsr()
    names = features.columns[features.field_slice(field)]
    if names and names[-1] == field:  # numeric_scaled: the last column is the standardised value
        return np.asarray(block[:, -1].toarray()).ravel().astype(np.float32)
    dense = block.toarray()
    has = dense.any(axis=1)
    out = np.full(len(dense), np.nan, dtype=np.float32)
    out[has] = dense[has].argmax(axis=1)
    return out


class PairFeatures:
    """The fitted context: arrays per item and per user, and how to turn pairs into feature rows."""

    def __init__(self, generator_names: list[str], *, candidates: int | None = None, sequence: bool = False) -> None:
        self.generator_names = list(generator_names)
        self.candidates = candidates  # the generators' list length: "proposed by g" is rank < candidates
        self.sequence = bool(sequence)
        self.attributes = None

    # ------------------------------------------------------------------ fitting
    def fit(self, interactions, item_features: Features | None, user_features: Features | None) -> PairFeatures:
        n_users, n_items = interactions.n_users, interactions.n_items
        X = interactions.matrix.tocsr()
        item_users = np.asarray((X > 0).sum(axis=0), dtype=np.float64).ravel()
        self.item_log_users = np.log1p(item_users).astype(np.float32)
        self.user_log_events = np.log1p(np.bincount(interactions.users, minlength=n_users)).astype(np.float32)
        ts = interactions.timestamps
        self.has_time = ts is not None and len(ts) > 0
        if self.has_time:
            now = float(np.max(ts))
            self.now = now
            recent = [self._recent_users(interactions, now - days * _DAY, n_items) for days in (7, 30)]
            self.item_log_users_7d, self.item_log_users_30d = (np.log1p(r).astype(np.float32) for r in recent)
            last_item = np.full(n_items, -np.inf)
            np.maximum.at(last_item, interactions.items, ts)
            last_user = np.full(n_users, -np.inf)
            np.maximum.at(last_user, interactions.users, ts)
            self.item_days_since_last = np.where(np.isfinite(last_item), (now - last_item) / _DAY, np.nan)
            self.user_days_since_last = np.where(np.isfinite(last_user), (now - last_user) / _DAY, np.nan)
            self.item_days_since_last = self.item_days_since_last.astype(np.float32)
            self.user_days_since_last = self.user_days_since_last.astype(np.float32)
        self.item_cat_fields, self.item_codes, self.item_num_fields, self.item_values = [], {}, [], {}
        if item_features is not None:
            for field, kind in item_features.fields.items():
                if kind == "categorical":
                    self.item_cat_fields.append(field)
                    self.item_codes[field] = np.asarray(item_features.codes(field), dtype=np.int32)
                elif kind == "numeric":
                    self.item_num_fields.append(field)
                    self.item_values[field] = _numeric_values(item_features, field)
        if self.sequence:
            users, items = interactions.users, interactions.items
            self.next_counts = PairCounts.from_sequences(users, items, n_items, (1,))
            self.window_counts = PairCounts.from_sequences(users, items, n_items, range(1, SEQ_WINDOW + 1))
            has_next = np.asarray(users[:-1] == users[1:])
            self.item_next_total = np.bincount(np.asarray(items[:-1])[has_next], minlength=n_items).astype(np.float32)
            self.user_recent = recent_items(interactions)
        self.attributes = _attribute_rows(item_features) if item_features is not None else None
        self.user_cat_fields, self.user_codes = [], {}
        if user_features is not None:
            for field, kind in user_features.fields.items():
                if kind == "categorical":
                    self.user_cat_fields.append(field)
                    self.user_codes[field] = np.asarray(user_features.codes(field), dtype=np.int32)
        self.user_share = {f: t for f in self.user_cat_fields
                           if (t := _segment_shares(X, self.user_codes[f], n_items)) is not None}
        return self

    @staticmethod
    def _recent_users(interactions, since: float, n_items: int) -> np.ndarray:
        keep = interactions.timestamps >= since
        pairs = np.unique(interactions.users[keep].astype(np.int64) * n_items + interactions.items[keep])
        return np.bincount(pairs % n_items, minlength=n_items).astype(np.float64)

    # ------------------------------------------------------------------ names
    @property
    def names(self) -> list[str]:
        out = [f"{g}_{what}" for g in self.generator_names for what in ("score", "rank", "gap")]
        out += list(ITEM_CONTEXT) if self.has_time else ["item_log_users"]
        out += list(USER_CONTEXT) if self.has_time else ["user_log_events"]
        for f in self.item_cat_fields:
            out += [f"item_{f}_match", f"item_{f}"]
        out += [f"item_{f}_vs_user" for f in self.item_num_fields]
        out += [f"user_{f}" for f in self.user_cat_fields]
        out += [f"user_{f}_share" for f in self.user_cat_fields if f in self.user_share]
        if self.candidates is not None:
            out.append("n_generators")
            out += [f"{g}_z" for g in self.generator_names]
        if self.sequence:
            out += list(SEQUENCE)
        if self.attributes is not None:
            out += list(ATTRIBUTES)
        return out

    @property
    def categorical(self) -> list[str]:
        """Columns holding category codes (LightGBM splits them as categories; the logistic ranker skips them)."""
        return [f"item_{f}" for f in self.item_cat_fields] + [f"user_{f}" for f in self.user_cat_fields]

    def group_of(self, name: str) -> str:
        """The explanation group of a column: a generator's name, or the kind of context."""
        for g in self.generator_names:
            if name.startswith(g + "_") and name[len(g) + 1:] in ("score", "rank", "gap", "z"):
                return g
        if name.startswith("item_log_users") or name == "item_days_since_last":
            return "popularity" if name == "item_log_users" else "trending"
        for f in self.item_cat_fields:
            if name in (f"item_{f}_match", f"item_{f}"):
                return f"category:{f}"
        for f in self.item_num_fields:
            if name == f"item_{f}_vs_user":
                return f"numeric:{f}"
        if name in SEQUENCE:
            return "sequence"
        if name in ATTRIBUTES:
            return "attributes"
        if name == "n_generators":
            return "agreement"
        return "user"

    # ------------------------------------------------------------------ building rows
    def build(self, rows: np.ndarray, items: np.ndarray, histories: list[np.ndarray],
              generator_blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
              users: np.ndarray | None, user_codes: dict | None = None) -> np.ndarray:
        """Feature rows (float32, one per pair) for pairs ``(rows[j], items[j])``.

        ``rows`` index the request block; ``histories[r]`` holds row r's history (item indices);
        ``generator_blocks[g]`` is ``(scores (m, n_items), rank (m, n_items), top1 (m,))`` of
        generator g; ``users`` the user index of each block row (-1 for a history with no user),
        or None when the block is histories only. ``user_codes`` maps a user categorical field to
        the code of each pair's user (an array, or one code for all), for new visitors described by
        their features; by default the codes are the known users' own.
        """
        cols = []
        for scores, rank, top in generator_blocks:
            s = scores[rows, items].astype(np.float32)
            cols += [s, rank[rows, items].astype(np.float32), (s - top[rows]).astype(np.float32)]
        cols.append(self.item_log_users[items])
        if self.has_time:
            cols += [self.item_log_users_7d[items], self.item_log_users_30d[items], self.item_days_since_last[items]]
        lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
        known = users is not None
        user_idx = users[rows] if known else np.full(len(rows), -1)
        activity = np.log1p(lengths[rows]).astype(np.float32)
        cols.append(activity)
        if self.has_time:
            days = np.full(len(rows), np.nan, dtype=np.float32)
            has = user_idx >= 0
            days[has] = self.user_days_since_last[user_idx[has]]
            cols.append(days)
        if self.item_cat_fields or self.item_num_fields:
            flat = np.concatenate(histories) if lengths.sum() else np.zeros(0, np.int64)
            owner = np.repeat(np.arange(len(histories)), lengths)
        for f in self.item_cat_fields:
            codes = self.item_codes[f]
            n_codes = int(codes.max()) + 2 if len(codes) else 1
            # share of each row's history in each category (code -1, "unknown", in the last column)
            counts = np.zeros((len(histories), n_codes), dtype=np.float32)
            np.add.at(counts, (owner, codes[flat] % n_codes), 1.0)
            share = counts / np.maximum(lengths, 1)[:, None]
            cand = codes[items]
            match = np.where(cand >= 0, share[rows, cand % n_codes], np.nan).astype(np.float32)
            cols += [match, cand.astype(np.float32)]
        for f in self.item_num_fields:
            vals = self.item_values[f]
            sums = np.bincount(owner, weights=np.nan_to_num(vals[flat]), minlength=len(histories))
            cnt = np.bincount(owner, weights=~np.isnan(vals[flat]), minlength=len(histories))
            mean = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
            cols.append((vals[items] - mean[rows]).astype(np.float32))
        row_codes = {}
        for f in self.user_cat_fields:
            if user_codes is not None and f in user_codes:
                code = np.broadcast_to(np.asarray(user_codes[f], dtype=np.int64), (len(rows),))
            else:
                code = np.full(len(rows), -1, dtype=np.int64)
                has = user_idx >= 0
                code[has] = self.user_codes[f][user_idx[has]]
            row_codes[f] = code
            cols.append(code.astype(np.float32))
        for f in self.user_cat_fields:
            if f in self.user_share:
                table = self.user_share[f]  # (codes + 1, items); the last row: unknown code, all users
                code = np.where(row_codes[f] >= 0, row_codes[f], table.shape[0] - 1)
                cols.append(table[code, items])
        if self.candidates is not None:
            width = min(int(self.candidates), len(self.item_log_users))
            cols.append(sum((rank[rows, items] < width).astype(np.float32) for _, rank, _ in generator_blocks))
            # each generator's score standardised over the row's merged candidates: scales differ by user
            m = len(histories)
            n = np.maximum(np.bincount(rows, minlength=m), 1)
            for scores, _, _ in generator_blocks:
                v = scores[rows, items].astype(np.float64)
                mean = np.bincount(rows, weights=v, minlength=m) / n
                d = v - mean[rows]
                sd = np.sqrt(np.bincount(rows, weights=d * d, minlength=m) / n)
                cols.append((d / np.where(sd > 0, sd, 1.0)[rows]).astype(np.float32))
        if self.sequence or self.attributes is not None:
            recent = self._recent(histories, users)
        if self.sequence:
            cols += self._sequence_columns(rows, items, recent)
        if self.attributes is not None:
            cols += self._attribute_columns(rows, items, histories, recent)
        return np.column_stack(cols).astype(np.float32, copy=False)

    def _recent(self, histories: list[np.ndarray], users: np.ndarray | None) -> np.ndarray:
        """(rows, SEQ_RECENT) latest items of each block row: a known user's from the fitted sequences,
        a bare history's from its own order (oldest first)."""
        out = np.full((len(histories), SEQ_RECENT), -1, dtype=np.int64)
        known = np.zeros(len(histories), bool) if users is None else np.asarray(users) >= 0
        if self.sequence and known.any():
            out[known] = self.user_recent[np.asarray(users)[known]]
        for r in np.flatnonzero(~known):
            tail = np.asarray(histories[r][-SEQ_RECENT:], dtype=np.int64)[::-1]
            out[r, :len(tail)] = tail
        return out

    def _sequence_columns(self, rows, items, recent) -> list[np.ndarray]:
        last = recent[rows, 0]
        nxt = self.next_counts.lookup(last, items)
        total = np.where(last >= 0, self.item_next_total[np.maximum(last, 0)], 0.0)
        k, n = recent.shape[1], len(rows)
        a = recent[rows].T.ravel()  # slot j's latest item of every pair, slot after slot
        b = np.tile(items, k)
        # one lookup for every slot and both directions (recent -> candidate, candidate -> recent)
        both = self.window_counts.lookup(np.concatenate([a, np.where(a >= 0, b, -1)]),
                                         np.concatenate([b, np.maximum(a, 0)]))
        after = both[:k * n].reshape(k, n)
        before = both[k * n:].reshape(k, n)
        follow = after.sum(axis=0)
        near = follow + before.sum(axis=0)
        return [np.log1p(nxt), (nxt / np.maximum(total, 1.0)).astype(np.float32), np.log1p(follow), np.log1p(near)]

    def _attribute_columns(self, rows, items, histories, recent) -> list[np.ndarray]:
        A = self.attributes
        n, n_cols = len(histories), A.shape[1]
        owner, cols, vals = _row_entries(A, items)  # the candidates' attributes
        pair_row = rows[owner]
        sim_last = np.zeros(len(owner))
        sim_hist = np.zeros(len(owner))
        step = max(1, _DENSE_CELLS // max(1, n_cols))
        for a in range(0, n, step):  # blocks of rows with dense profiles: no sparse-matrix overhead per request
            b = min(n, a + step)
            sel = np.flatnonzero((pair_row >= a) & (pair_row < b)) if (a, b) != (0, n) else slice(None)
            hist = [np.asarray(h, dtype=np.int64) for h in histories[a:b]]
            lengths = np.fromiter((len(h) for h in hist), dtype=np.int64, count=b - a)
            o, c, v = _row_entries(A, np.concatenate(hist) if lengths.sum() else np.zeros(0, np.int64))
            profile = np.zeros((b - a, n_cols))
            np.add.at(profile, (np.repeat(np.arange(b - a), lengths)[o], c), v)
            profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-12)
            last = recent[a:b, 0]
            has = np.flatnonzero(last >= 0)
            o, c, v = _row_entries(A, last[has])
            latest = np.zeros((b - a, n_cols))
            latest[has[o], c] = v
            r = pair_row[sel] - a
            sim_last[sel] = latest[r, cols[sel]] * vals[sel]
            sim_hist[sel] = profile[r, cols[sel]] * vals[sel]
        m = len(items)
        return [np.bincount(owner, weights=sim_last, minlength=m).astype(np.float32),
                np.bincount(owner, weights=sim_hist, minlength=m).astype(np.float32)]

    # ------------------------------------------------------------------ persistence
    def state(self) -> tuple[dict, dict]:
        meta = {"generators": self.generator_names, "has_time": self.has_time,
                "item_cat_fields": self.item_cat_fields, "item_num_fields": self.item_num_fields,
                "user_cat_fields": self.user_cat_fields, "candidates": self.candidates, "sequence": self.sequence,
                "attributes": self.attributes is not None}
        arrays = {"pf_item_log_users": self.item_log_users, "pf_user_log_events": self.user_log_events}
        if self.sequence:
            arrays.update({"pf_next_keys": self.next_counts.keys, "pf_next_counts": self.next_counts.counts,
                           "pf_window_keys": self.window_counts.keys, "pf_window_counts": self.window_counts.counts,
                           "pf_item_next_total": self.item_next_total, "pf_user_recent": self.user_recent.ravel()})
        if self.attributes is not None:
            A = self.attributes
            meta["attribute_columns"] = int(A.shape[1])
            arrays.update({"pf_attr_indptr": A.indptr.astype(np.int64), "pf_attr_indices": A.indices.astype(np.int64),
                           "pf_attr_data": A.data})
        if self.has_time:
            meta["now"] = self.now
            arrays.update({"pf_item_log_users_7d": self.item_log_users_7d,
                           "pf_item_log_users_30d": self.item_log_users_30d,
                           "pf_item_days_since_last": self.item_days_since_last,
                           "pf_user_days_since_last": self.user_days_since_last})
        for i, f in enumerate(self.item_cat_fields):
            arrays[f"pf_item_codes_{i}"] = self.item_codes[f]
        for i, f in enumerate(self.item_num_fields):
            arrays[f"pf_item_values_{i}"] = self.item_values[f]
        for i, f in enumerate(self.user_cat_fields):
            arrays[f"pf_user_codes_{i}"] = self.user_codes[f]
            if f in self.user_share:
                arrays[f"pf_user_share_{i}"] = self.user_share[f].ravel()
        meta["user_share_fields"] = [f for f in self.user_cat_fields if f in self.user_share]
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict, arrays: dict, n_users: int, n_items: int) -> PairFeatures:
        """Rebuild from :meth:`state`, checking every array's kind and length (a crafted artifact is refused)."""
        cand = meta.get("candidates")  # artifacts from before these features have none of them
        out = cls([str(g) for g in meta["generators"]], candidates=None if cand is None else int(cand),
                  sequence=bool(meta.get("sequence", False)))
        out.has_time = bool(meta["has_time"])

        def take(name, length, kind="f"):
            a = np.asarray(arrays[name])
            if a.ndim != 1 or len(a) != length or a.dtype.kind != kind:
                raise DataError(f"{name}: expected {length} values of kind {kind!r}, got shape {a.shape} {a.dtype}")
            return a

        out.item_log_users = take("pf_item_log_users", n_items)
        out.user_log_events = take("pf_user_log_events", n_users)
        if out.has_time:
            out.now = float(meta["now"])
            out.item_log_users_7d = take("pf_item_log_users_7d", n_items)
            out.item_log_users_30d = take("pf_item_log_users_30d", n_items)
            out.item_days_since_last = take("pf_item_days_since_last", n_items)
            out.user_days_since_last = take("pf_user_days_since_last", n_users)
        out.item_cat_fields = [str(f) for f in meta["item_cat_fields"]]
        out.item_num_fields = [str(f) for f in meta["item_num_fields"]]
        out.user_cat_fields = [str(f) for f in meta["user_cat_fields"]]
        out.item_codes = {f: take(f"pf_item_codes_{i}", n_items, "i") for i, f in enumerate(out.item_cat_fields)}
        out.item_values = {f: take(f"pf_item_values_{i}", n_items) for i, f in enumerate(out.item_num_fields)}
        out.user_codes = {f: take(f"pf_user_codes_{i}", n_users, "i") for i, f in enumerate(out.user_cat_fields)}
        for f, c in {**out.item_codes, **out.user_codes}.items():
            if len(c) and c.min() < -1:
                raise DataError(f"codes of {f!r} must be >= -1")
        out.user_share = {}
        for i, f in enumerate(out.user_cat_fields):
            if f not in meta.get("user_share_fields", []):  # artifacts from before this feature have none
                continue
            n_codes = int(out.user_codes[f].max(initial=-1)) + 2
            table = take(f"pf_user_share_{i}", n_codes * n_items)
            if not np.all(np.isfinite(table)):
                raise DataError(f"pf_user_share_{i}: shares must be finite")
            out.user_share[f] = table.reshape(n_codes, n_items)
        if out.sequence:
            out.next_counts = PairCounts.checked(arrays["pf_next_keys"], arrays["pf_next_counts"], n_items, "pf_next")
            out.window_counts = PairCounts.checked(arrays["pf_window_keys"], arrays["pf_window_counts"], n_items,
                                                   "pf_window")
            out.item_next_total = take("pf_item_next_total", n_items)
            recent = take("pf_user_recent", n_users * SEQ_RECENT, "i")
            if len(recent) and (recent.min() < -1 or recent.max() >= n_items):
                raise DataError("pf_user_recent: item indices must lie in [-1, n_items)")
            out.user_recent = recent.reshape(n_users, SEQ_RECENT)
        if meta.get("attributes"):
            n_cols = int(meta["attribute_columns"])
            indptr, indices = np.asarray(arrays["pf_attr_indptr"]), np.asarray(arrays["pf_attr_indices"])
            data = np.asarray(arrays["pf_attr_data"])
            if (indptr.shape != (n_items + 1,) or indptr.dtype.kind != "i" or indptr[0] != 0
                    or np.any(np.diff(indptr) < 0) or indptr[-1] != len(indices) or indices.dtype.kind != "i"
                    or data.shape != indices.shape or data.dtype.kind != "f" or not np.all(np.isfinite(data))
                    or (len(indices) and (indices.min() < 0 or indices.max() >= n_cols))):
                raise DataError("pf_attr: the item attribute rows are not a valid CSR matrix of this catalogue")
            out.attributes = sp.csr_matrix((data.astype(np.float32), indices, indptr), shape=(n_items, n_cols))
        return out
