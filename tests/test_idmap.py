import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persona.data.idmap import IdMap, normalize_ids
from persona.errors import DataError

SETTINGS = settings(derandomize=True, max_examples=60, deadline=None)

int_ids = st.lists(st.integers(min_value=-(2**62), max_value=2**62), max_size=40)
str_ids = st.lists(st.text(alphabet="abcxyzé_0123", min_size=1, max_size=6), max_size=40)


def test_int_round_trip():
    m, codes = IdMap.encode([30, 10, 20, 10, 30])
    assert m.ids.tolist() == [10, 20, 30]
    assert codes.tolist() == [2, 0, 1, 0, 2]
    assert m.to_ids(codes).tolist() == [30, 10, 20, 10, 30]
    assert m.lookup([20, 30, 10]).tolist() == [1, 2, 0]
    assert m.dtype == np.int64


def test_string_round_trip():
    m, codes = IdMap.encode(np.array(["u2", "u1", "u2"]))
    assert m.ids.tolist() == ["u1", "u2"]
    assert codes.tolist() == [1, 0, 1]
    assert m.to_ids(codes).tolist() == ["u2", "u1", "u2"]
    assert m.index_of("u2") == 1
    assert "u1" in m and "u3" not in m and 5 not in m


def test_constructor_keeps_given_order():
    m = IdMap(["b", "a", "c"])
    assert m.lookup(["a", "b", "c"]).tolist() == [1, 0, 2]
    assert len(m) == 3


def test_lookup_unknown():
    m = IdMap([1, 2, 3])
    assert m.lookup([3, 99, 1]).tolist() == [2, -1, 0]
    assert m.lookup(["1"]).tolist() == [-1]  # strings never match int ids
    assert m.index_of(42) == -1
    with pytest.raises(KeyError):
        m.lookup([1, 99], missing="raise")
    assert IdMap().lookup([1, 2]).tolist() == [-1, -1]


def test_grow_keeps_old_indices():
    m = IdMap(["b", "a"])
    g = m.grow(["d", "a", "c", "d"])
    assert g.ids.tolist() == ["b", "a", "c", "d"]
    assert g.lookup(["b", "a"]).tolist() == [0, 1]
    assert m.grow(["a"]) is m  # nothing new: the same map
    assert IdMap().grow([5, 3]).ids.tolist() == [3, 5]


def test_mixed_types_raise():
    with pytest.raises(DataError, match="mix"):
        IdMap(["a", 1])
    with pytest.raises(DataError, match="mix"):
        normalize_ids(pd.Series(["a", 1], dtype=object))
    with pytest.raises(DataError, match="convert the new ids"):
        IdMap(["a"]).grow([1, 2])
    with pytest.raises(DataError, match="booleans"):
        normalize_ids(np.array([True, False]))


def test_normalize_ids_floats_and_nulls():
    assert normalize_ids(np.array([1.0, 2.0])).tolist() == [1, 2]
    assert normalize_ids(np.array([1.0, 2.0])).dtype == np.int64
    with pytest.raises(DataError, match=r"non-integral numbers at rows \[1\]"):
        normalize_ids(np.array([1.0, 2.5]))
    with pytest.raises(DataError, match=r"rows \[1\]"):
        normalize_ids(np.array([1.0, np.nan]))
    with pytest.raises(DataError, match="null ids"):
        normalize_ids(["a", None])
    with pytest.raises(DataError, match="1-D"):
        normalize_ids(np.zeros((2, 2)))


def test_duplicate_ids_raise():
    with pytest.raises(DataError, match="unique"):
        IdMap([1, 2, 1])


def test_caller_array_not_frozen():
    # regression: IdMap used to set the caller's own array read-only
    a = np.array([5, 3])
    m = IdMap(a)
    a[0] = 7
    assert a.flags.writeable
    assert m.ids.tolist() == [5, 3]
    with pytest.raises(ValueError):
        m.ids[0] = 1


def test_equality():
    assert IdMap([1, 2]) == IdMap([1, 2])
    assert IdMap([1, 2]) != IdMap([2, 1])
    assert IdMap(["a"]) != ["a"]


@SETTINGS
@given(st.one_of(int_ids, str_ids))
def test_encode_round_trip_property(values):
    m, codes = IdMap.encode(list(values))
    assert m.ids.tolist() == sorted(set(values))  # distinct ids, in sorted order
    assert m.to_ids(codes).tolist() == list(values)
    assert m.lookup(list(values)).tolist() == codes.tolist()


@SETTINGS
@given(st.one_of(st.tuples(int_ids, int_ids), st.tuples(str_ids, str_ids)))
def test_grow_property(parts):
    old_ids, new_ids = parts
    m = IdMap.encode(old_ids)[0] if old_ids else IdMap()
    g = m.grow(new_ids) if new_ids else m
    # old ids keep their index, every id is found, the grown map is a bijection
    if len(m):
        assert g.lookup(m.ids).tolist() == list(range(len(m)))
    assert len(g) == len(set(old_ids) | set(new_ids))
    everything = list(old_ids) + list(new_ids)
    if everything:
        idx = g.lookup(everything)
        assert (idx >= 0).all()
        assert g.to_ids(idx).tolist() == everything
