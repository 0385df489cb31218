import datetime as dt
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import persona.data._pipeline as pipeline
from persona.data import Interactions
from persona.data.ingest import (
    DEFAULT_WEIGHTS,
    from_csv,
    from_frame,
    from_parquet,
    from_records,
    from_sequences,
)
from persona.errors import DataError

SETTINGS = settings(derandomize=True, max_examples=60, deadline=None)
DAY = 86400.0
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def entries(inter):
    """{(user id, item id): matrix value} with external ids."""
    coo = inter.matrix.tocoo()
    return {
        (inter.user_ids[r].item(), inter.item_ids[c].item()): float(v)
        for r, c, v in zip(coo.row, coo.col, coo.data)
    }


def shop():
    return pd.DataFrame({
        "user_id": ["u1", "u1", "u2", "u2", "u3", "u1"],
        "item_id": ["a", "b", "a", "a", "c", "a"],
        "ts": [T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 5, T0 + 6],
        "event": ["view", "cart", "view", "purchase", "search", "click"],
    })


# ---------------------------------------------------------------------------------------- basics
def test_default_weights_documented_values():
    assert DEFAULT_WEIGHTS == {"view": 1.0, "click": 2.0, "cart": 4.0, "purchase": 8.0, "search": 0.5}
    assert "purchase`` 8" in from_frame.__doc__ and "search`` 0.5" in from_frame.__doc__


def test_from_frame_event_weights():
    inter = from_frame(shop(), "user_id", "item_id", "ts", "event")
    assert entries(inter) == {
        ("u1", "a"): 1.0 + 2.0, ("u1", "b"): 4.0, ("u2", "a"): 1.0 + 8.0, ("u3", "c"): 0.5,
    }
    assert inter.event_types[:5] == ("view", "click", "cart", "purchase", "search")
    names = np.array(inter.event_types)[inter.events]
    assert names.tolist() == ["view", "cart", "click", "view", "purchase", "search"]  # by user, then time
    assert inter.report.n_input == 6 and inter.report.n_kept == 6 and inter.report.n_dropped == 0
    assert isinstance(inter, Interactions)


def test_classmethod_delegates():
    a = Interactions.from_frame(shop(), user="user_id", item="item_id", time="ts", event="event")
    b = from_frame(shop(), "user_id", "item_id", "ts", "event")
    assert entries(a) == entries(b)


def test_custom_weights_merge_over_defaults():
    df = shop()
    df.loc[0, "event"] = "like"
    inter = from_frame(df, "user_id", "item_id", "ts", "event", weights={"like": 3, "click": 0.25})
    assert entries(inter)[("u1", "a")] == 3.0 + 0.25
    assert entries(inter)[("u2", "a")] == 1.0 + 8.0  # defaults still apply
    assert "like" in inter.event_types


def test_unknown_event_types_strict_message():
    df = shop()
    df["event"] = ["view", "like", "share", "like", "view", "view"]
    with pytest.raises(DataError) as e:
        from_frame(df, "user_id", "item_id", "ts", "event")
    msg = str(e.value)
    assert "'event'" in msg
    assert "{'like': 2, 'share': 1}" in msg
    assert "[1, 2, 3]" in msg
    assert "default_weight" in msg and "weights=" in msg


def test_unknown_event_types_default_weight():
    df = shop()
    df["event"] = ["view", "like", "share", "like", "view", "view"]
    inter = from_frame(df, "user_id", "item_id", "ts", "event", default_weight=0.1)
    assert inter.event_types == ("view", "click", "cart", "purchase", "search", "like", "share")
    assert entries(inter)[("u1", "b")] == pytest.approx(0.1)
    assert entries(inter)[("u2", "a")] == pytest.approx(0.1 + 0.1)
    assert entries(inter)[("u1", "a")] == pytest.approx(1.0 + 1.0)
    assert len(inter) == 6


def test_unknown_event_types_dropped_when_not_strict():
    df = shop()
    df["event"] = ["view", "like", "share", "like", "view", None]
    with pytest.warns(UserWarning, match="3 unknown event type"):
        inter = from_frame(df, "user_id", "item_id", "ts", "event", strict=False)
    assert inter.report.dropped == {"null event type": 1, "unknown event type": 3}
    assert inter.report.n_input == 6 and inter.report.n_kept == 2
    assert entries(inter) == {("u1", "a"): 1.0, ("u3", "c"): 1.0}


def test_weights_need_event_column_and_are_checked():
    with pytest.raises(DataError, match="no event column"):
        from_frame(shop(), "user_id", "item_id", weights={"view": 1})
    with pytest.raises(DataError, match="allow_negative"):
        from_frame(shop(), "user_id", "item_id", event="event", weights={"view": -1})
    with pytest.raises(DataError, match="must be a number"):
        from_frame(shop(), "user_id", "item_id", event="event", weights={"view": "lots"})
    inter = from_frame(shop(), "user_id", "item_id", event="event", weights={"view": -1}, allow_negative=True)
    assert entries(inter)[("u1", "a")] == -1.0 + 2.0


def test_event_codes_as_integers():
    df = pd.DataFrame({"u": [1, 1, 2], "i": [5, 6, 5], "e": [1, 2, 1]})
    inter = from_frame(df, "u", "i", event="e", weights={1: 1.5, 2: 3})
    assert entries(inter) == {(1, 5): 1.5, (1, 6): 3.0, (2, 5): 1.5}


# ---------------------------------------------------------------------------------------- values
def ratings():
    return pd.DataFrame({"u": [1, 1, 2], "i": [10, 11, 10], "r": [4.0, 2.5, 5.0], "e": ["view", "purchase", "cart"]})


def test_value_is_weight_without_event():
    inter = from_frame(ratings(), "u", "i", value="r")
    assert entries(inter) == {(1, 10): 4.0, (1, 11): 2.5, (2, 10): 5.0}
    assert inter.values.tolist() == [4.0, 2.5, 5.0]


def test_value_stored_but_not_weight_with_event():
    inter = from_frame(ratings(), "u", "i", event="e", value="r")
    assert entries(inter) == {(1, 10): 1.0, (1, 11): 8.0, (2, 10): 4.0}
    assert inter.values.tolist() == [4.0, 2.5, 5.0]


def test_value_as_weight_flags():
    inter = from_frame(ratings(), "u", "i", event="e", value="r", value_as_weight=True)
    assert entries(inter) == {(1, 10): 4.0, (1, 11): 20.0, (2, 10): 20.0}
    inter = from_frame(ratings(), "u", "i", value="r", value_as_weight=False)
    assert entries(inter) == {(1, 10): 1.0, (1, 11): 1.0, (2, 10): 1.0}
    assert inter.values.tolist() == [4.0, 2.5, 5.0]
    with pytest.raises(DataError, match="needs a value column"):
        from_frame(ratings(), "u", "i", value_as_weight=True)


def test_negative_values_strict_and_allowed():
    df = ratings()
    df["r"] = [4.0, -1.0, -2.0]
    with pytest.raises(DataError) as e:
        from_frame(df, "u", "i", value="r")
    msg = str(e.value)
    assert "'r'" in msg and "negative value" in msg and "[1, 2]" in msg and "[-1.0, -2.0]" in msg
    assert "allow_negative=True" in msg
    inter = from_frame(df, "u", "i", value="r", allow_negative=True)
    assert entries(inter) == {(1, 10): 4.0, (1, 11): -1.0, (2, 10): -2.0}


def test_non_finite_and_non_numeric_values():
    df = pd.DataFrame({"u": [1, 2, 3, 4, 5], "i": [1, 1, 1, 1, 1], "r": [1.0, np.nan, np.inf, 2.0, -np.inf]})
    with pytest.raises(DataError) as e:
        from_frame(df, "u", "i", value="r")
    assert "'r'" in str(e.value) and "[1, 2, 4]" in str(e.value) and "inf" in str(e.value)
    df2 = pd.DataFrame({"u": [1, 2], "i": [1, 1], "r": ["3", "lots"]})
    with pytest.raises(DataError, match=r"non-numeric value at rows \[1\] .*'lots'"):
        from_frame(df2, "u", "i", value="r")
    with pytest.warns(UserWarning, match="dropped 3 of 5 rows"):
        inter = from_frame(df, "u", "i", value="r", strict=False)
    assert inter.report.dropped == {"null or non-finite value": 3}
    assert inter.user_ids.tolist() == [1, 4]


def test_explicit_weight_column():
    df = shop()
    df["w"] = [0.5, 1.0, 2.0, 3.0, 4.0, 5.0]
    df.loc[0, "event"] = "custom"  # any label is fine with a weight column
    inter = from_frame(df, "user_id", "item_id", "ts", "event", weight="w")
    assert entries(inter) == {("u1", "a"): 5.5, ("u1", "b"): 1.0, ("u2", "a"): 5.0, ("u3", "c"): 4.0}
    df.loc[2, "w"] = -1.0
    with pytest.raises(DataError, match=r"'w'.*negative weight at rows \[2\]"):
        from_frame(df, "user_id", "item_id", "ts", "event", weight="w")


# ---------------------------------------------------------------------------------------- time
@pytest.mark.parametrize("form", ["datetime", "datetime_tz", "iso", "iso_offset", "epoch_int", "epoch_float",
                                  "epoch_str", "epoch_ms", "pyobj"])
def test_timestamp_forms(form):
    secs = np.array([T0, T0 + 60, T0 + 3600])
    stamps = pd.to_datetime(secs, unit="s")
    col = {
        "datetime": stamps,
        "datetime_tz": stamps.tz_localize("UTC").tz_convert("Asia/Tokyo"),
        "iso": [s.isoformat() for s in stamps],
        "iso_offset": [(s + pd.Timedelta(hours=2)).isoformat() + "+02:00" for s in stamps],
        "epoch_int": secs.astype(np.int64),
        "epoch_float": secs,
        "epoch_str": [str(int(s)) for s in secs],
        "epoch_ms": (secs * 1000).astype(np.int64),
        "pyobj": pd.Series([dt.datetime.fromtimestamp(s, tz=dt.timezone.utc) for s in secs], dtype=object),
    }[form]
    df = pd.DataFrame({"u": ["x", "x", "y"], "i": [1, 2, 3], "t": col})
    unit = "ms" if form == "epoch_ms" else "s"
    inter = from_frame(df, "u", "i", "t", time_unit=unit)
    assert inter.timestamps.dtype == np.float64
    assert inter.timestamps.tolist() == secs.tolist()


def test_unparseable_timestamps_strict_message():
    df = pd.DataFrame({"u": [1, 2, 3, 4], "i": [1, 1, 1, 1],
                       "when": ["2024-01-01", "yesterday", "2024-01-03T10:00:00", "32/13/2024"]})
    with pytest.raises(DataError) as e:
        from_frame(df, "u", "i", "when")
    msg = str(e.value)
    assert "'when'" in msg and "unparseable timestamp" in msg
    assert "[1, 3]" in msg and "'yesterday'" in msg and "'32/13/2024'" in msg
    assert "ISO-8601" in msg
    with pytest.warns(UserWarning, match="2 unparseable timestamp"):
        inter = from_frame(df, "u", "i", "when", strict=False)
    assert inter.report.dropped == {"unparseable timestamp": 2}
    assert inter.user_ids.tolist() == [1, 3]


def test_missing_and_non_finite_timestamps():
    df = pd.DataFrame({"u": [1, 2, 3], "i": [1, 1, 1], "t": [T0, np.nan, np.inf]})
    with pytest.raises(DataError, match=r"'t'.*missing timestamp at rows \[1\]"):
        from_frame(df, "u", "i", "t")
    with pytest.warns(UserWarning):
        inter = from_frame(df, "u", "i", "t", strict=False)
    assert inter.report.dropped == {"missing timestamp": 1, "unparseable timestamp": 1}


def test_time_decay_by_hand():
    df = pd.DataFrame({"u": [1, 1, 2], "i": [1, 2, 1], "t": [T0, T0 - 2 * DAY, T0 - 1 * DAY],
                       "e": ["purchase", "view", "cart"]})
    inter = from_frame(df, "u", "i", "t", "e", half_life=2.0)
    # age 0 -> 8 * 1; age 2 days = one half-life -> 1 * 0.5; age 1 day -> 4 * 2 ** -0.5
    assert entries(inter) == pytest.approx({(1, 1): 8.0, (1, 2): 0.5, (2, 1): 4.0 * 2 ** -0.5})
    later = from_frame(df, "u", "i", "t", "e", half_life=1.0, now=pd.Timestamp(T0 + DAY, unit="s"))
    assert entries(later) == pytest.approx({(1, 1): 4.0, (1, 2): 0.125, (2, 1): 1.0})
    later_s = from_frame(df, "u", "i", "t", "e", half_life=1.0, now=T0 + DAY)
    assert entries(later_s) == pytest.approx(entries(later))
    earlier = from_frame(df, "u", "i", "t", "e", half_life=1.0, now=T0 - DAY)
    # an event after `now` is not boosted
    assert entries(earlier) == pytest.approx({(1, 1): 8.0, (1, 2): 0.5, (2, 1): 4.0})


def test_time_decay_needs_time_and_positive_half_life():
    with pytest.raises(DataError, match="needs timestamps"):
        from_frame(shop(), "user_id", "item_id", half_life=3)
    with pytest.raises(DataError, match="half_life"):
        from_frame(shop(), "user_id", "item_id", "ts", half_life=0)


# ---------------------------------------------------------------------------------------- duplicates
def test_drop_duplicates():
    df = pd.DataFrame({
        "u": [1, 1, 1, 1, 2, 1],
        "i": [5, 5, 5, 5, 5, 5],
        "t": [T0, T0, T0 + 1, T0, T0, T0],
        "e": ["view", "view", "view", "cart", "view", "view"],
    })
    inter = from_frame(df, "u", "i", "t", "e")
    # rows 1 and 5 repeat row 0 exactly; row 2 (other time), row 3 (other event), row 4 (other user) do not
    assert inter.report.dropped == {"duplicate event": 2}
    assert len(inter) == 4
    assert entries(inter) == {(1, 5): 1.0 + 1.0 + 4.0, (2, 5): 1.0}
    kept = from_frame(df, "u", "i", "t", "e", drop_duplicates=False)
    assert len(kept) == 6 and kept.report.dropped == {}


def test_drop_duplicates_without_time_and_with_values():
    df = pd.DataFrame({"u": ["a", "a", "a", "b"], "i": [1, 1, 1, 1], "v": [2.0, 2.0, 3.0, 2.0]})
    inter = from_frame(df, "u", "i", value="v")
    assert inter.report.dropped == {"duplicate event": 1}
    assert entries(inter) == {("a", 1): 5.0, ("b", 1): 2.0}


def test_duplicate_detection_survives_hash_collisions(monkeypatch):
    # every row gets one hash: the exact fallback must still find only true duplicates
    monkeypatch.setattr(pipeline, "_mix", lambda x: np.zeros_like(x))
    df = pd.DataFrame({"u": [1, 1, 2, 1, 2], "i": [1, 2, 1, 1, 1]})
    inter = from_frame(df, "u", "i")
    assert inter.report.dropped == {"duplicate event": 2}
    assert entries(inter) == {(1, 1): 1.0, (1, 2): 1.0, (2, 1): 1.0}


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2), st.sampled_from([0.0, -0.0, 1.5])),
                min_size=1, max_size=40))
def test_duplicated_matches_pandas(rows):
    cols = [np.array(c) for c in zip(*rows)]
    got = pipeline._duplicated(cols)
    ref = pd.DataFrame({str(k): c for k, c in enumerate(cols)}).duplicated().to_numpy()
    assert got.tolist() == ref.tolist()


# ---------------------------------------------------------------------------------------- filters
def naive_k_core(pairs, k):
    pairs = list(pairs)
    while True:
        uc, ic = {}, {}
        for u, i in pairs:
            uc[u] = uc.get(u, 0) + 1
            ic[i] = ic.get(i, 0) + 1
        kept = [(u, i) for u, i in pairs if uc[u] >= k and ic[i] >= k]
        if len(kept) == len(pairs):
            return kept
        pairs = kept


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=80), st.integers(2, 4))
def test_k_core_property(pairs, k):
    df = pd.DataFrame(pairs, columns=["u", "i"])
    expect = naive_k_core(pairs, k)
    if not expect:
        with pytest.raises(DataError, match="no events left"):
            from_frame(df, "u", "i", drop_duplicates=False, k_core=k)
        return
    inter = from_frame(df, "u", "i", drop_duplicates=False, k_core=k)
    assert np.all(inter.user_counts >= k) and np.all(inter.item_counts >= k)
    got = sorted(zip(inter.user_map.to_ids(inter.users).tolist(), inter.item_map.to_ids(inter.items).tolist()))
    assert got == sorted(expect)  # the maximal k-core, nothing more removed
    assert inter.report.n_kept + inter.report.n_dropped == len(pairs)
    assert inter.report.dropped.get(f"outside the {k}-core (k_core)", 0) == len(pairs) - len(expect)


def test_min_activity_filters():
    df = pd.DataFrame({"u": [1, 1, 1, 2, 2, 3], "i": [7, 8, 9, 7, 8, 7]})
    inter = from_frame(df, "u", "i", min_user_events=2)
    assert inter.user_ids.tolist() == [1, 2]
    assert inter.report.dropped == {"user with fewer than 2 events (min_user_events)": 1}
    inter = from_frame(df, "u", "i", min_user_events=2, min_item_events=2)
    assert inter.item_ids.tolist() == [7, 8]  # item 7 lost user 3 first but still has 2 events
    assert inter.report.dropped == {
        "user with fewer than 2 events (min_user_events)": 1,
        "item with fewer than 2 events (min_item_events)": 1,
    }
    assert inter.report.n_kept == 4
    with pytest.raises(DataError, match="min_user_events"):
        from_frame(df, "u", "i", min_user_events=-1)
    with pytest.raises(DataError, match="k_core"):
        from_frame(df, "u", "i", k_core=0)


# ---------------------------------------------------------------------------------------- bad input
def test_null_ids_strict_message():
    df = pd.DataFrame({"user_id": ["u1", None, "u3", np.nan], "item_id": ["a", "b", "c", "d"]})
    with pytest.raises(DataError) as e:
        from_frame(df, "user_id", "item_id")
    msg = str(e.value)
    assert "'user_id'" in msg and "null user id" in msg and "[1, 3]" in msg and "[None, None]" in msg
    assert "strict=False" in msg
    df2 = pd.DataFrame({"u": [1, 2], "i": [3.0, np.nan]})
    with pytest.raises(DataError, match=r"'i'.*null item id at rows \[1\]"):
        from_frame(df2, "u", "i")


def test_not_strict_report_and_warning():
    df = pd.DataFrame({
        "u": ["a", None, "b", "c", "d", "e"],
        "i": [1, 2, None, 4, 5, 6],
        "t": [T0, T0, T0, "never", T0, T0],
        "v": [1.0, 1.0, 1.0, 1.0, np.nan, 2.0],
    })
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inter = from_frame(df, "u", "i", "t", value="v", strict=False)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "dropped 4 of 6 rows" in text and "1 null user id" in text and "1 unparseable timestamp" in text
    rep = inter.report
    assert rep.dropped == {"null user id": 1, "null item id": 1, "unparseable timestamp": 1,
                           "null or non-finite value": 1}
    assert rep.n_input == 6 and rep.n_kept == 2 and rep.n_dropped == 4
    assert "2 of 6 events kept" in str(rep)
    assert inter.user_ids.tolist() == ["a", "e"]


def test_missing_columns_listed():
    with pytest.raises(DataError) as e:
        from_frame(shop(), "user", "item_id", time="when")
    msg = str(e.value)
    assert "user='user'" in msg and "time='when'" in msg
    assert "['user_id', 'item_id', 'ts', 'event']" in msg


def test_empty_data():
    with pytest.raises(DataError, match="no rows"):
        from_frame(shop().iloc[:0], "user_id", "item_id")
    df = pd.DataFrame({"u": [None, None], "i": [1, 2]})
    with pytest.warns(UserWarning):
        with pytest.raises(DataError, match="no rows left after cleaning: 0 of 2 events kept; dropped 2 null user id"):
            from_frame(df, "u", "i", strict=False)
    with pytest.raises(DataError, match="no events left"):
        from_frame(shop(), "user_id", "item_id", min_user_events=10)
    with pytest.raises(DataError, match="DataFrame"):
        from_frame([("a", 1)], "u", "i")


def test_id_types():
    df = pd.DataFrame({"u": ["a", 1, "b"], "i": [1, 2, 3]})
    with pytest.raises(DataError, match="'u'.*mix"):
        from_frame(df, "u", "i")
    gaps = pd.DataFrame({"u": [1.0, 2.0, np.nan], "i": [3, 3, 3]})
    with pytest.warns(UserWarning):
        inter = from_frame(gaps, "u", "i", strict=False)
    assert inter.user_ids.dtype == np.int64 and inter.user_ids.tolist() == [1, 2]


def test_aggregate_passed_through():
    df = pd.DataFrame({"u": [1, 1, 1], "i": [2, 2, 2], "t": [T0, T0 + 1, T0 + 2], "e": ["cart", "view", "click"]})
    assert entries(from_frame(df, "u", "i", "t", "e", aggregate="max")) == {(1, 2): 4.0}
    assert entries(from_frame(df, "u", "i", "t", "e", aggregate="last")) == {(1, 2): 2.0}
    assert entries(from_frame(df, "u", "i", "t", "e", aggregate="count")) == {(1, 2): 3.0}
    with pytest.raises(DataError, match="aggregate"):
        from_frame(df, "u", "i", aggregate="median")


# ---------------------------------------------------------------------------------------- id maps
def test_growing_existing_maps_keeps_indices():
    old = from_frame(shop(), "user_id", "item_id", "ts", "event")
    new_df = pd.DataFrame({"user_id": ["u9", "u2", "u0"], "item_id": ["z", "a", "b"],
                           "ts": [T0, T0, T0], "event": ["view", "view", "view"]})
    new = from_frame(new_df, "user_id", "item_id", "ts", "event", user_map=old.user_map, item_map=old.item_map)
    assert new.user_ids[: old.n_users].tolist() == old.user_ids.tolist()
    assert new.user_ids.tolist() == ["u1", "u2", "u3", "u0", "u9"]
    assert new.item_ids.tolist() == ["a", "b", "c", "z"]
    assert new.user_map.lookup(["u2"]).tolist() == old.user_map.lookup(["u2"]).tolist()
    assert entries(new) == {("u9", "z"): 1.0, ("u2", "a"): 1.0, ("u0", "b"): 1.0}
    assert new.matrix.shape == (5, 4)
    with pytest.raises(DataError, match="convert"):
        from_frame(pd.DataFrame({"user_id": [1], "item_id": ["a"]}), "user_id", "item_id", user_map=old.user_map)


def test_new_map_is_sorted_and_holds_only_kept_ids():
    df = pd.DataFrame({"u": ["zed", "amy", "bob", "amy"], "i": [3, 1, 2, 2]})
    inter = from_frame(df, "u", "i", min_user_events=2)
    assert inter.user_ids.tolist() == ["amy"]
    assert inter.item_ids.tolist() == [1, 2]


# ---------------------------------------------------------------------------------------- files
def test_from_csv(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,ts,event,extra\nu1,007,2024-01-01T00:00:00Z,view,x\n"
                    "u2,007,2024-01-02T00:00:00Z,purchase,y\nu1,010,2024-01-03T00:00:00Z,cart,z\n")
    inter = from_csv(path, "user_id", "item_id", "ts", "event")
    assert inter.item_ids.tolist() == [7, 10]  # pandas reads number-like ids as numbers
    assert entries(inter) == {("u1", 7): 1.0, ("u1", 10): 4.0, ("u2", 7): 8.0}
    assert inter.timestamps.tolist() == [1704067200.0, 1704240000.0, 1704153600.0]
    as_str = from_csv(str(path), "user_id", "item_id", read_options={"dtype": {"item_id": str}})
    assert as_str.item_ids.tolist() == ["007", "010"]
    via_cls = Interactions.from_csv(path, user="user_id", item="item_id", time="ts", event="event")
    assert entries(via_cls) == entries(inter)
    with pytest.raises(DataError, match=r"\['when'\] not found.*\['user_id', 'item_id', 'ts', 'event', 'extra'\]"):
        from_csv(path, "user_id", "item_id", "when")


def test_parquet_round_trip(tmp_path):
    pytest.importorskip("pyarrow")
    df = shop()
    df["ts"] = pd.to_datetime(df["ts"], unit="s", utc=True)
    path = tmp_path / "events.parquet"
    df.to_parquet(path)
    inter = from_parquet(path, "user_id", "item_id", "ts", "event")
    ref = from_frame(df, "user_id", "item_id", "ts", "event")
    assert entries(inter) == entries(ref)
    assert inter.timestamps.tolist() == ref.timestamps.tolist()
    assert inter.user_ids.tolist() == ref.user_ids.tolist()
    # and back: to_frame -> parquet -> from_parquet
    out = inter.to_frame()
    out.to_parquet(tmp_path / "again.parquet")
    again = Interactions.from_parquet(tmp_path / "again.parquet", user="user", item="item", time="timestamp",
                                      event="event", weight="weight")
    assert np.array_equal(again.weights, inter.weights) and np.array_equal(again.events, inter.events)
    with pytest.raises(DataError, match=r"\['nope'\] not found.*available columns"):
        from_parquet(path, "user_id", "item_id", value="nope")


def test_parquet_without_pyarrow(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        from_parquet(tmp_path / "x.parquet", "u", "i")


# ---------------------------------------------------------------------------------------- records
def test_from_records_dicts():
    recs = [{"user": "a", "item": 1, "when": T0, "kind": "cart"}, {"user": "b", "item": 1, "when": T0, "kind": "view"}]
    inter = from_records(recs, time="when", event="kind")
    assert entries(inter) == {("a", 1): 4.0, ("b", 1): 1.0}
    inter = Interactions.from_records(iter(recs), user="user", item="item")  # generators work
    assert len(inter) == 2 and inter.timestamps is None
    with pytest.raises(DataError, match=r"null item id at rows \[1\]"):
        from_records([{"user": "a", "item": 1}, {"user": "b"}])


@pytest.mark.parametrize("width", [2, 3, 4, 5])
def test_from_records_tuples(width):
    full = [("u1", "a", T0 + 2, "purchase", 2.0), ("u1", "b", T0 + 1, "view", 3.0), ("u2", "a", T0, "click", 1.0)]
    inter = from_records([r[:width] for r in full])
    assert len(inter) == 3
    assert (inter.timestamps is None) == (width < 3)
    assert (inter.events is None) == (width < 4)
    assert (inter.values is None) == (width < 5)
    expect_w = {2: [1, 1, 1], 3: [1, 1, 1], 4: [8, 1, 2], 5: [8, 1, 2]}[width]
    got = {k: v for k, v in entries(inter).items()}
    assert got == dict(zip([("u1", "a"), ("u1", "b"), ("u2", "a")], map(float, expect_w)))
    if width >= 3:
        assert inter.item_map.to_ids(inter.sequence(0)).tolist() == ["b", "a"]  # time order


def test_from_records_tuple_problems():
    with pytest.raises(DataError, match=r"rows \[1\] have \[3\]"):
        from_records([("a", 1), ("b", 2, T0)])
    with pytest.raises(DataError, match="empty"):
        from_records([])
    with pytest.raises(DataError, match="2 to 5 fields"):
        from_records([("a",)])
    with pytest.raises(DataError, match="dicts or tuples"):
        from_records(["a b"])
    inter = from_records([("a", 1, None, "cart"), ("b", 2, None, "view")])  # time absent, event present
    assert inter.timestamps is None and entries(inter) == {("a", 1): 4.0, ("b", 2): 1.0}


# ---------------------------------------------------------------------------------------- sequences
def test_from_sequences_file(tmp_path):
    path = tmp_path / "seq.txt"
    path.write_text("1 10 11 12\n\n2 12 10 12 13\n   \n3\n1 14\n")
    inter = from_sequences(path)
    assert inter.timestamps is None
    assert inter.user_ids.tolist() == [1, 2]
    seqs = [inter.item_map.to_ids(inter.sequence(u)).tolist() for u in range(inter.n_users)]
    assert seqs == [[10, 11, 12, 14], [12, 10, 12, 13]]  # line order kept; repeats are events
    assert len(inter) == 8 and inter.report.n_dropped == 0
    assert any("2 blank" in n for n in inter.report.notes)
    assert any("1 line(s) name a user but no items" in n for n in inter.report.notes)
    assert entries(inter)[(2, 12)] == 2.0
    assert entries(Interactions.from_sequences(str(path), aggregate="max"))[(2, 12)] == 1.0


def test_from_sequences_lines_and_options():
    lines = ["1 5 6 7", "2 5 6", "3 9"]
    inter = from_sequences(lines, k_core=2)
    assert inter.user_ids.tolist() == [1, 2] and inter.item_ids.tolist() == [5, 6]
    assert inter.report.dropped == {"outside the 2-core (k_core)": 2}
    text = from_sequences([b"a x y", b"b y"], ids="str")
    assert text.user_ids.tolist() == ["a", "b"] and text.item_ids.tolist() == ["x", "y"]
    with pytest.raises(DataError, match=r"lines \[2\] hold \['x7'\].*ids='str'"):
        from_sequences(["1 5", "2 x7 9"])
    with pytest.raises(DataError, match="no events"):
        from_sequences(["", "4"])
    with pytest.raises(DataError, match="time="):
        from_sequences(lines, time="t")


def test_from_sequences_grows_maps():
    old = from_sequences(["1 10 11", "2 11"])
    new = from_sequences(["3 12 10", "1 11"], user_map=old.user_map, item_map=old.item_map)
    assert new.user_ids.tolist() == [1, 2, 3] and new.item_ids.tolist() == [10, 11, 12]
    assert new.item_map.to_ids(new.sequence(2)).tolist() == [12, 10]


def test_from_sequences_unsorted_user_ids_keep_line_order():
    inter = from_sequences(["9 3 1 2", "4 2 3"])
    assert inter.user_ids.tolist() == [4, 9]
    assert inter.item_map.to_ids(inter.sequence(1)).tolist() == [3, 1, 2]
    assert inter.item_map.to_ids(inter.sequence(0)).tolist() == [2, 3]


def test_moderately_large_frame_matches_pandas_reference():
    rng = np.random.default_rng(0)
    n = 200_000
    df = pd.DataFrame({
        "u": rng.integers(0, 5000, n), "i": rng.integers(0, 3000, n),
        "t": rng.integers(0, 10**4, n).astype(float) + T0,
        "e": rng.choice(np.array(["view", "click", "cart", "purchase"]), n),
    })
    df = pd.concat([df, df.iloc[:1000]], ignore_index=True)  # 1000 exact duplicates
    inter = from_frame(df, "u", "i", "t", "e", k_core=3)
    ref = df.drop_duplicates()
    while True:
        ok = (ref.groupby("u")["u"].transform("size") >= 3) & (ref.groupby("i")["i"].transform("size") >= 3)
        if ok.all():
            break
        ref = ref[ok]
    assert inter.report.dropped["duplicate event"] == 1000
    assert len(inter) == len(ref)
    assert inter.weights.sum() == pytest.approx(ref["e"].map(DEFAULT_WEIGHTS).sum(), rel=1e-6)
    got = inter.to_frame()
    assert sorted(zip(got.user, got.item)) == sorted(zip(ref.u, ref.i))
    ip = inter.sequence_indptr
    same_user = np.repeat(np.arange(inter.n_users), np.diff(ip))
    assert np.all((np.diff(inter.timestamps) >= 0) | (np.diff(same_user) != 0))


def test_dropped_rows_warning_points_at_the_callers_line():
    import warnings

    df = pd.DataFrame({"user_id": ["a", None, "c"], "item_id": ["x", "y", "z"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Interactions.from_frame(df, user="user_id", item="item_id", strict=False)
    assert caught and caught[0].filename == __file__


# ---------------------------------------------------------------------------------------- issue 12 point 10
def _events_frame():
    return pd.DataFrame({
        "user_id": ["u1", "u1", "u2", "u2", "u3"],
        "item_id": ["a", "b", "a", "c", "c"],
        "event": ["view", "purchase", "cart", "view", "view"],
        "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-01", "2024-01-03", "2024-01-04"], utc=True),
        "qty": [1.0, 2.0, 1.0, 1.0, 3.0],
    })


def _same(a, b):
    assert a.user_ids.tolist() == b.user_ids.tolist() and a.item_ids.tolist() == b.item_ids.tolist()
    assert (a.matrix != b.matrix).nnz == 0
    assert np.array_equal(a.timestamps, b.timestamps) and a.event_types == b.event_types


@pytest.mark.parametrize("kind", ["polars", "pyarrow", "arrow-stream", "interchange"])
def test_from_frame_reads_polars_and_arrow_tables(kind):
    df = _events_frame()
    want = Interactions.from_frame(df, time="timestamp", event="event", value="qty", half_life=7)
    if kind == "polars":
        pl = pytest.importorskip("polars")  # in the test extra
        table = pl.from_pandas(df)
    elif kind == "pyarrow":
        import pyarrow as pa

        table = pa.Table.from_pandas(df, preserve_index=False)
    else:
        import pyarrow as pa

        inner = pa.Table.from_pandas(df, preserve_index=False)

        class Stream:  # any table that only exports the Arrow C stream (e.g. DuckDB, a future library)
            def __arrow_c_stream__(self, requested_schema=None):
                return inner.__arrow_c_stream__(requested_schema)

        class Interchange:  # any table that only speaks the dataframe interchange protocol
            def __dataframe__(self, nan_as_null=False, allow_copy=True):
                return inner.__dataframe__(nan_as_null=nan_as_null, allow_copy=allow_copy)

        table = Stream() if kind == "arrow-stream" else Interchange()
    got = Interactions.from_frame(table, time="timestamp", event="event", value="qty", half_life=7)
    _same(got, want)
    assert np.allclose(got.weights, want.weights)
    got2 = from_frame(table, "user_id", "item_id", time="timestamp", event="event", value="qty", half_life=7)
    _same(got2, want)


def test_from_frame_refuses_what_is_not_a_table():
    pl = pytest.importorskip("polars")
    with pytest.raises(DataError, match=r"LazyFrame.*\.collect\(\)"):
        Interactions.from_frame(pl.from_pandas(_events_frame()).lazy())
    for bad in ({"user_id": [1], "item_id": [2]}, [(1, 2)], pd.Series([1, 2]), pl.DataFrame, None):
        with pytest.raises(DataError, match="expected a pandas DataFrame or a polars / pyarrow table"):
            Interactions.from_frame(bad)


OPTIONS = {"weight": None, "default_weight": None, "value_as_weight": None, "allow_negative": False,
           "time_unit": "s", "drop_duplicates": True, "aggregate": "sum", "half_life": None, "now": None,
           "min_user_events": 0, "min_item_events": 0, "k_core": None, "strict": True, "user_map": None,
           "item_map": None}


@pytest.mark.parametrize("func", [from_frame, from_csv, from_parquet, from_records, Interactions.from_frame,
                                  Interactions.from_csv, Interactions.from_parquet, Interactions.from_records])
def test_cleaning_options_are_real_keyword_arguments(func):
    import inspect

    params = inspect.signature(func).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), func
    for name, default in OPTIONS.items():
        assert name in params, (func, name)
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY and params[name].default == default, (func, name)


def test_from_sequences_options_are_real_keyword_arguments():
    import inspect

    for func in (from_sequences, Interactions.from_sequences):
        params = inspect.signature(func).parameters
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
        for name in ("min_user_events", "min_item_events", "k_core", "aggregate", "strict", "drop_duplicates",
                     "user_map", "item_map", "ids"):
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_a_misspelt_option_names_the_nearest_one(tmp_path):
    from persona.errors import ParameterError

    df = _events_frame()
    path = tmp_path / "events.csv"
    df.to_csv(path, index=False)
    calls = {
        "from_frame": lambda **kw: from_frame(df, "user_id", "item_id", **kw),
        "Interactions.from_frame": lambda **kw: Interactions.from_frame(df, **kw),
        "from_csv": lambda **kw: from_csv(path, "user_id", "item_id", **kw),
        "Interactions.from_csv": lambda **kw: Interactions.from_csv(path, **kw),
        "from_records": lambda **kw: from_records([("u", "i")], **kw),
        "Interactions.from_records": lambda **kw: Interactions.from_records([("u", "i")], **kw),
        "from_sequences": lambda **kw: from_sequences(["1 2 3"], **kw),
        "Interactions.from_sequences": lambda **kw: Interactions.from_sequences(["1 2 3"], **kw),
    }
    for name, call in calls.items():
        with pytest.raises(ParameterError, match=r"'min_user_event' \(did you mean 'min_user_events'\?\)"):
            call(min_user_event=2)
        if "sequences" not in name:  # sequence files have no time options at all
            with pytest.raises(ParameterError, match=r"'halflife' \(did you mean 'half_life'\?\)"):
                call(halflife=3)
    # options still work as keywords, and sequence files still refuse time options with a DataError
    assert Interactions.from_frame(df, min_user_events=2).n_users == 2
    with pytest.raises(DataError, match="time="):
        from_sequences(["1 2 3"], time="t")
