import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persona.data import IdMap, Interactions
from persona.data.interactions import _canonical_order
from persona.errors import DataError

SETTINGS = settings(derandomize=True, max_examples=80, deadline=None)

# (user, item, weight, time) events; user 0 repeats item 0 three times, at times out of order
EVENTS = [
    (0, 0, 1.0, 30.0),
    (0, 1, 2.0, 10.0),
    (0, 0, 5.0, 10.0),
    (1, 2, 4.0, 5.0),
    (0, 0, 2.0, 20.0),
    (1, 2, 1.0, 50.0),
    (2, 1, 3.0, 1.0),
]


def make(aggregate="sum", **kw):
    u, i, w, t = (np.array(c) for c in zip(*EVENTS))
    return Interactions(IdMap(["a", "b", "c"]), IdMap([10, 11, 12]), u, i, w, t, aggregate=aggregate, **kw)


def expected(aggregate):
    out = {}
    for u, i, w, t in sorted(EVENTS, key=lambda e: e[3]):  # time order
        key = (u, i)
        if aggregate == "sum":
            out[key] = out.get(key, 0.0) + w
        elif aggregate == "max":
            out[key] = max(out.get(key, -np.inf), w)
        elif aggregate == "last":
            out[key] = w
        else:
            out[key] = out.get(key, 0.0) + 1.0
    return out


def as_dict(m):
    coo = m.tocoo()
    return {(int(r), int(c)): float(v) for r, c, v in zip(coo.row, coo.col, coo.data)}


@pytest.mark.parametrize("aggregate", ["sum", "max", "last", "count"])
def test_matrix_aggregation(aggregate):
    inter = make(aggregate)
    m = inter.matrix
    assert m.dtype == np.float32 and m.shape == (3, 3)
    assert as_dict(m) == expected(aggregate)


def test_matrix_hand_values():
    assert as_dict(make("sum").matrix)[(0, 0)] == 8.0
    assert as_dict(make("max").matrix)[(0, 0)] == 5.0
    assert as_dict(make("last").matrix)[(0, 0)] == 1.0  # the event at t=30
    assert as_dict(make("count").matrix)[(0, 0)] == 3.0
    assert as_dict(make("last").matrix)[(1, 2)] == 1.0  # t=50 beats t=5


def test_bad_aggregate():
    with pytest.raises(DataError, match="aggregate"):
        make("mean")


def test_sequences_time_ordered():
    inter = make()
    assert inter.sequence(0).tolist() == [1, 0, 0, 0]  # t=10 (item 1), t=10 (item 0), 20, 30
    assert inter.sequence(1).tolist() == [2, 2]
    assert inter.sequence(2).tolist() == [1]
    assert inter.sequence_indptr.tolist() == [0, 4, 6, 7]
    ts = inter.timestamps
    for u in range(3):
        lo, hi = inter.sequence_indptr[u], inter.sequence_indptr[u + 1]
        assert np.all(np.diff(ts[lo:hi]) >= 0)
    assert [s.tolist() for s in inter.sequences()] == [[1, 0, 0, 0], [2, 2], [1]]
    assert inter.user_counts.tolist() == [4, 2, 1]
    assert inter.item_counts.tolist() == [3, 2, 2]


def test_without_time_input_order_kept():
    inter = Interactions(IdMap([1, 2]), IdMap([7, 8, 9]), [1, 0, 1, 0], [2, 0, 1, 2])
    assert inter.sequence(0).tolist() == [0, 2]
    assert inter.sequence(1).tolist() == [2, 1]
    assert inter.timestamps is None


def test_constructor_validation():
    with pytest.raises(DataError, match="users has 2 entries but items has 1"):
        Interactions(IdMap([1, 2]), IdMap([1]), [0, 1], [0])
    with pytest.raises(DataError, match="user indices"):
        Interactions(IdMap([1]), IdMap([1]), [1], [0])
    with pytest.raises(DataError, match="weights has 1 entries"):
        Interactions(IdMap([1]), IdMap([1]), [0, 0], [0, 0], [1.0])


def test_caller_arrays_not_frozen():
    # regression: already-sorted input arrays used to be frozen (set read-only) under the caller
    u = np.array([0, 1], dtype=np.int32)
    w = np.array([1.0, 2.0], dtype=np.float32)
    inter = Interactions(IdMap([1, 2]), IdMap([5]), u, np.array([0, 0], dtype=np.int32), w)
    u[0] = 1
    w[0] = 9.0
    assert u.flags.writeable and w.flags.writeable
    assert inter.users.tolist() == [0, 1] and inter.weights.tolist() == [1.0, 2.0]
    assert not inter.users.flags.writeable


def test_subset_keeps_alignment():
    inter = make()
    mask = inter.users != 1
    sub = inter.subset(mask)
    assert sub.user_map is inter.user_map and sub.item_map is inter.item_map
    assert sub.matrix.shape == inter.matrix.shape
    assert len(sub) == 5
    full = as_dict(inter.matrix)
    assert as_dict(sub.matrix) == {k: v for k, v in full.items() if k[0] != 1}
    by_index = inter.subset(np.array([6, 0]))
    assert by_index.users.tolist() == [0, 2]  # kept in canonical order
    with pytest.raises(DataError, match="mask has 2 entries"):
        inter.subset(np.array([True, False]))


def test_concat_grows_maps_and_keeps_alignment():
    a = Interactions(IdMap(["u1", "u2"]), IdMap(["x", "y"]), [0, 1], [0, 1], [1.0, 2.0], [1.0, 2.0])
    b = Interactions(IdMap(["u3", "u1"]), IdMap(["z", "x"]), [0, 1], [0, 1], [3.0, 4.0], [3.0, 4.0])
    c = a.concat(b)
    assert c.user_ids.tolist() == ["u1", "u2", "u3"]  # old indices kept, new ids appended
    assert c.item_ids.tolist() == ["x", "y", "z"]
    assert len(c) == 4
    got = {(c.user_ids[r], c.item_ids[k]): v for (r, k), v in as_dict(c.matrix).items()}
    assert got == {("u1", "x"): 5.0, ("u2", "y"): 2.0, ("u3", "z"): 3.0}
    assert c.report.n_input == 4 and c.report.n_kept == 4
    assert c.sequence(0).tolist() == [0, 0]


def test_concat_time_mismatch():
    a = Interactions(IdMap([1]), IdMap([1]), [0], [0], None, [1.0])
    b = Interactions(IdMap([1]), IdMap([1]), [0], [0])
    with pytest.raises(DataError, match="timestamps"):
        a.concat(b)


def test_with_maps():
    inter = make()
    bigger_u = inter.user_map.grow(["0first", "zz"])
    moved = inter.with_maps(bigger_u, inter.item_map)
    assert moved.n_users == 5
    assert np.array_equal(moved.matrix[:3].toarray(), inter.matrix.toarray())
    with pytest.raises(DataError, match="contain every"):
        inter.with_maps(IdMap(["a"]), inter.item_map)


def test_to_frame_round_trip():
    df = pd.DataFrame({
        "user": ["u1", "u2", "u1", "u3"],
        "item": ["a", "b", "b", "a"],
        "ts": pd.to_datetime(["2024-01-01 10:00", "2024-01-02 00:00", "2024-01-01 09:00", "2024-01-03 00:00"]),
        "ev": ["view", "cart", "purchase", "view"],
        "qty": [1.0, 2.0, 3.0, 1.0],
    })
    inter = Interactions.from_frame(df, user="user", item="item", time="ts", event="ev", value="qty")
    out = inter.to_frame()
    assert list(out.columns) == ["user", "item", "weight", "timestamp", "event", "value"]
    again = Interactions.from_frame(out, user="user", item="item", time="timestamp", event="event",
                                    value="value", weight="weight")
    assert again.user_map == inter.user_map and again.item_map == inter.item_map
    for name in ("users", "items", "weights", "timestamps", "events", "values"):
        assert np.array_equal(getattr(again, name), getattr(inter, name)), name
    assert again.event_types == inter.event_types
    # user u1's events in time order: purchase at 09:00, then view at 10:00
    first = out[out.user == "u1"]
    assert first.event.tolist() == ["purchase", "view"]
    assert first.weight.tolist() == [8.0, 1.0]


def test_repr_and_basic_facts():
    inter = make()
    assert len(inter) == 7 and inter.shape == (3, 3)
    assert inter.user_ids.tolist() == ["a", "b", "c"] and inter.item_ids.tolist() == [10, 11, 12]
    assert "7 events" in repr(inter) and "time" in repr(inter)


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, 5), st.sampled_from([0.0, 1.0, 2.0, 3.5, 1e9, -4.0])), min_size=1, max_size=60),
)
def test_canonical_order_matches_lexsort(rows):
    users = np.array([r[0] for r in rows], dtype=np.int32)
    ts = np.array([r[1] for r in rows], dtype=np.float64)
    ref = np.lexsort([ts, users])
    got = _canonical_order(users, ts)
    assert np.array_equal(np.arange(len(rows)) if got is None else got, ref)
    got_u = _canonical_order(users, None)
    ref_u = np.argsort(users, kind="stable")
    assert np.array_equal(np.arange(len(rows)) if got_u is None else got_u, ref_u)
    # whole-second timestamps take the integer-key path: same answer
    ts_int = np.floor(ts)
    got_i = _canonical_order(users, ts_int)
    assert np.array_equal(np.arange(len(rows)) if got_i is None else got_i, np.lexsort([ts_int, users]))


def test_concat_refuses_to_drop_event_types_silently():
    from persona.data import IdMap, Interactions
    from persona.errors import DataError

    a = Interactions(IdMap(["u"]), IdMap(["x"]), [0], [0], events=[0], event_types=("view",))
    b = Interactions(IdMap(["u"]), IdMap(["x"]), [0], [0])
    with pytest.raises(DataError, match="without events"):
        a.concat(b)


def test_idmap_equality_across_id_types():
    from persona.data import IdMap

    assert IdMap(["1", "2"]) != IdMap([1, 2])
    assert IdMap([1, 2]) == IdMap([1, 2])


# ------------------------------------------------------------------ from_matrix (issue 12 point 10)
def test_from_matrix_keeps_the_matrix_and_the_ids():
    import scipy.sparse as sp

    m = sp.csr_matrix(np.array([[0, 2.5, 0], [1, 0, 0], [0, 0, 0], [0, 4, 3]], dtype=np.float64))
    inter = Interactions.from_matrix(m, user_ids=["u1", "u2", "u3", "u4"], item_ids=["a", "b", "c"])
    assert inter.user_ids.tolist() == ["u1", "u2", "u3", "u4"] and inter.item_ids.tolist() == ["a", "b", "c"]
    assert inter.matrix.dtype == np.float32 and inter.matrix.toarray().tolist() == m.toarray().tolist()
    assert len(inter) == 4 and inter.timestamps is None and inter.report.n_kept == 4
    # a user without events keeps their row, so the matrix lines up with the caller's ids
    assert inter.shape == (4, 3) and inter.user_counts.tolist() == [1, 1, 0, 2]
    # implicit's order: other sparse formats, sparse arrays, default ids 0..n-1, explicit zeros are not events
    coo = sp.coo_array(([1.0, 0.0, 2.0], ([0, 1, 1], [1, 0, 1])), shape=(2, 2))
    plain = Interactions.from_matrix(coo)
    assert plain.user_ids.tolist() == [0, 1] and plain.item_ids.tolist() == [0, 1]
    assert len(plain) == 2 and plain.matrix.toarray().tolist() == [[0.0, 1.0], [0.0, 2.0]]
    assert "explicit zero" in " ".join(plain.report.notes)
    import persona as ps

    model = ps.ItemKNN(k=2).fit(inter)
    assert model.recommend("u1", n=1)[0].tolist() == ["c"]  # u4 holds b and c, weighted by the values


def test_from_matrix_errors():
    import scipy.sparse as sp

    m = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0]]))
    with pytest.raises(DataError, match=r"user_ids has 3 ids but the matrix has 2 rows"):
        Interactions.from_matrix(m, user_ids=["a", "b", "c"], item_ids=["x", "y"])
    with pytest.raises(DataError, match=r"item_ids has 1 ids but the matrix has 2 columns"):
        Interactions.from_matrix(m, user_ids=["a", "b"], item_ids=["x"])
    with pytest.raises(DataError, match=r"user_ids.*repeat.*'a'"):
        Interactions.from_matrix(m, user_ids=["a", "a"], item_ids=["x", "y"])
    bad = m.copy()
    bad.data[1] = -1.0
    with pytest.raises(DataError, match=r"negative.*\(1, 1\).*allow_negative=True"):
        Interactions.from_matrix(bad)
    assert Interactions.from_matrix(bad, allow_negative=True).matrix[1, 1] == -1.0
    for v in (np.nan, np.inf):
        bad.data[1] = v
        with pytest.raises(DataError, match=r"non-finite.*\(1, 1\)"):
            Interactions.from_matrix(bad)
    with pytest.raises(DataError, match=r"scipy sparse matrix.*sp.csr_matrix"):
        Interactions.from_matrix(np.eye(2))
    with pytest.raises(DataError, match="scipy sparse matrix"):
        Interactions.from_matrix("matrix.npz")
    from persona.errors import ParameterError

    with pytest.raises(ParameterError, match="did you mean 'user_ids'"):
        Interactions.from_matrix(m, users=["a", "b"])
