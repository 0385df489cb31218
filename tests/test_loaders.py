"""Tests of persona.datasets loaders and persona.marketing.LoggedFeedback.

Tiny files written to tmp_path always run; the real reference data is checked only where it is
present (it is never part of the repository).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from persona.data import IdMap
from persona.datasets import (
    DataNotFoundError,
    SequenceData,
    default_data_path,
    load_open_bandit,
    load_sequences,
    parse_sequences,
)
from persona.errors import DataError, PersonaError
from persona.marketing import LoggedFeedback


# ---------------------------------------------------------------------------------------------- paths
def test_default_data_path_uses_env_var_first(tmp_path, monkeypatch):
    for root in (tmp_path / "sets", tmp_path / "work" / "shared" / "data"):
        (root / "toy").mkdir(parents=True)
        (root / "toy" / "a.txt").write_text("1 2\n")
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("PERSONA_DATA", str(tmp_path / "sets"))
    assert default_data_path("toy/a.txt") == (tmp_path / "sets" / "toy" / "a.txt").absolute()
    assert load_sequences("toy/a.txt").path == (tmp_path / "sets" / "toy" / "a.txt").absolute()
    monkeypatch.delenv("PERSONA_DATA")
    assert default_data_path("toy/a.txt") == (tmp_path / "work" / "shared" / "data" / "toy" / "a.txt").absolute()
    assert default_data_path("toy/missing-1234.txt") is None


def test_default_data_path_finds_shared_data_above_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("PERSONA_DATA", raising=False)
    (tmp_path / "shared" / "data" / "toy-set").mkdir(parents=True)
    (tmp_path / "repo" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "repo" / "sub")
    assert default_data_path("toy-set") == (tmp_path / "shared" / "data" / "toy-set").absolute()
    assert default_data_path("no-such-set-anywhere-1234") is None


def test_missing_file_raises_a_persona_and_a_file_not_found_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="not found") as err:
        load_sequences(tmp_path / "nope.txt")
    assert isinstance(err.value, PersonaError) and isinstance(err.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        load_open_bandit("no-such-bandit-folder-1234")


# ---------------------------------------------------------------------------------------------- sequences
def test_parse_sequences_from_lines_and_file(tmp_path):
    u, i = parse_sequences(["1 10 11 12", "", "  ", "7", "2 11 10 11"])
    assert u.dtype == np.int64 and i.dtype == np.int64
    assert u.tolist() == [1, 1, 1, 2, 2, 2]
    assert i.tolist() == [10, 11, 12, 11, 10, 11]  # order within a line kept, repeats kept
    f = tmp_path / "s.txt"
    f.write_text("3 5 4\n1 9\n")
    u, i = parse_sequences(f)
    assert u.tolist() == [3, 3, 1] and i.tolist() == [5, 4, 9]


def test_parse_sequences_names_the_bad_line():
    with pytest.raises(DataError, match=r"line 2 .*'x7'"):
        parse_sequences(["1 2 3", "2 x7 4"])


def _tiny_sequences(folder: Path, name="Tiny") -> Path:
    path = folder / f"{name}.txt"
    path.write_text("1 5 6 7\n2 6 5\n3 7 8 5 6\n")
    (folder / f"{name}_item2attributes.json").write_text(json.dumps({"5": [1], "6": [1, 2], "7": [3], "8": []}))
    return path


def test_load_sequences_reads_interactions_and_attributes(tmp_path):
    data = load_sequences(_tiny_sequences(tmp_path))
    assert isinstance(data, SequenceData)
    inter = data.interactions
    assert (inter.n_users, inter.n_items, len(inter)) == (3, 4, 9)
    u3 = inter.user_map.index_of(3)
    assert inter.item_ids[inter.sequence(u3)].tolist() == [7, 8, 5, 6]  # time order kept
    assert data.item_attributes == {5: [1], 6: [1, 2], 7: [3], 8: []}
    assert data.n_attributes == 4
    assert data.attributes_path == tmp_path / "Tiny_item2attributes.json"
    m = data.attribute_matrix()
    assert m.dtype == np.float32 and m.shape == (4, 4)
    assert m.toarray().tolist() == [[0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]


def test_attribute_matrix_follows_the_given_item_map(tmp_path):
    data = load_sequences(_tiny_sequences(tmp_path))
    m = data.attribute_matrix(IdMap([7, 99, 6]), n_attributes=6)
    assert m.shape == (3, 6)
    assert m.toarray()[:, :4].tolist() == [[0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0]]
    assert m.toarray()[:, 4:].sum() == 0
    with pytest.raises(DataError, match="at least 4"):
        data.attribute_matrix(n_attributes=3)
    # an Interactions object works as the map too
    assert (data.attribute_matrix(data.interactions) != data.attribute_matrix()).nnz == 0


def test_load_sequences_attribute_options(tmp_path):
    path = _tiny_sequences(tmp_path)
    assert load_sequences(path, attributes=None).item_attributes is None
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"5": [0, 2]}))
    data = load_sequences(path, attributes=other)
    assert data.item_attributes == {5: [0, 2]}
    assert data.attribute_matrix().toarray().tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    no_attr = tmp_path / "Bare.txt"
    no_attr.write_text("1 2 3\n")
    bare = load_sequences(no_attr)
    assert bare.item_attributes is None and bare.n_attributes == 0
    assert bare.attribute_matrix().shape == (2, 0)
    with pytest.raises(DataNotFoundError):
        load_sequences(path, attributes=tmp_path / "missing.json")


@pytest.mark.parametrize(
    "content, match",
    [("[1, 2]", "JSON object"), ('{"5": "a"}', "list of integer"), ('{"5": [1.5]}', "list of integer"),
     ('{"x": [1]}', "not an integer"), ("{oops", "not valid JSON")],
)
def test_bad_attribute_files_raise_data_error(tmp_path, content, match):
    path = _tiny_sequences(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(DataError, match=match):
        load_sequences(path, attributes=bad)


# ---------------------------------------------------------------------------------------------- open bandit
def _tiny_bandit(folder: Path, campaign="men") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = pd.DataFrame({
        "timestamp": ["2019-11-24 00:03:13.442536+00:00", "2019-11-24 00:03:14+00:00", "2019-11-24 00:03:20+00:00",
                      "2019-11-24 00:04:00+00:00"],
        "item_id": [2, 0, 1, 2],
        "position": [1, 3, 2, 1],
        "click": [0, 1, 0, 0],
        "propensity_score": [1 / 3, 1 / 3, 1 / 3, 0.5],
        "user_feature_0": ["bb", "aa", "bb", "cc"],
        "user_feature_1": ["z", "z", "y", "z"],
        "user-item_affinity_0": [0.0, 1.0, 0.0, 0.0],
        "user-item_affinity_2": [0.0, 0.0, 2.0, 0.0],
        "user-item_affinity_1": [3.0, 0.0, 0.0, 0.0],
    })
    rows.to_csv(folder / f"{campaign}.csv")  # with the unnamed index column, as in the data set
    pd.DataFrame({
        "item_id": [1, 0, 2],
        "item_feature_0": [0.5, -1.0, 2.0],
        "item_feature_1": ["hat", "shoe", "hat"],
    }).to_csv(folder / "item_context.csv")


def test_load_open_bandit_reads_a_campaign_folder(tmp_path):
    _tiny_bandit(tmp_path / "random-men")
    logged = load_open_bandit(tmp_path / "random-men")
    assert isinstance(logged, LoggedFeedback)
    assert logged.n_rounds == 4 and logged.n_actions == 3 and logged.n_positions == 3
    assert logged.action.tolist() == [2, 0, 1, 2]
    assert logged.reward.tolist() == [0.0, 1.0, 0.0, 0.0]
    assert logged.position.tolist() == [0, 2, 1, 0]  # 0-based
    np.testing.assert_allclose(logged.propensity, [1 / 3, 1 / 3, 1 / 3, 0.5])
    assert logged.context_names == [
        "user_feature_0=aa", "user_feature_0=bb", "user_feature_0=cc", "user_feature_1=y", "user_feature_1=z",
        "user-item_affinity_0", "user-item_affinity_1", "user-item_affinity_2",
    ]
    assert logged.context.tolist() == [
        [0, 1, 0, 0, 1, 0, 3, 0],
        [1, 0, 0, 0, 1, 1, 0, 0],
        [0, 1, 0, 1, 0, 0, 0, 2],
        [0, 0, 1, 0, 1, 0, 0, 0],
    ]
    # items in id order: numeric price first, then one-hot categories
    assert logged.action_context_names == ["item_feature_0", "item_feature_1=hat", "item_feature_1=shoe"]
    assert logged.action_context.tolist() == [[-1.0, 0, 1], [0.5, 1, 0], [2.0, 1, 0]]
    expected = pd.Timestamp("2019-11-24 00:03:13.442536", tz="UTC").value / 1e9
    assert logged.timestamps[0] == pytest.approx(expected, abs=1e-6)
    assert logged.timestamps[3] - logged.timestamps[0] == pytest.approx(46.557464, abs=1e-5)


def test_load_open_bandit_campaign_choice_and_alignment(tmp_path):
    _tiny_bandit(tmp_path / "f", "men")
    _tiny_bandit(tmp_path / "f", "women")
    with pytest.raises(DataError, match="campaign"):
        load_open_bandit(tmp_path / "f")
    men = load_open_bandit(tmp_path / "f", campaign="men")
    assert men.n_rounds == 4
    with pytest.raises(DataNotFoundError, match="women"):
        load_open_bandit(tmp_path / "f", campaign="kids")
    assert load_open_bandit(tmp_path / "f" / "women.csv").n_rounds == 4  # the CSV itself
    # another log with a user-feature value the first never saw: aligned columns, zero row for it
    other = tmp_path / "g"
    _tiny_bandit(other)
    df = pd.read_csv(other / "men.csv", index_col=0)
    df.loc[0, "user_feature_0"] = "dd"
    df.to_csv(other / "men.csv")
    unaligned = load_open_bandit(other)
    assert "user_feature_0=dd" in unaligned.context_names
    aligned = load_open_bandit(other, align_to=men)
    assert aligned.context_names == men.context_names
    assert aligned.context[0, :3].tolist() == [0, 0, 0]
    assert aligned.context[1:].tolist() == men.context[1:].tolist()


def test_load_open_bandit_needs_the_columns(tmp_path):
    folder = tmp_path / "h"
    _tiny_bandit(folder)
    df = pd.read_csv(folder / "men.csv", index_col=0).drop(columns=["propensity_score"])
    df.to_csv(folder / "men.csv")
    with pytest.raises(DataError, match="propensity_score"):
        load_open_bandit(folder)


# ---------------------------------------------------------------------------------------------- LoggedFeedback
def test_logged_feedback_basic_api():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 50)
    r = rng.random(50) < 0.3
    p = np.full(50, 0.2)
    ctx = rng.normal(size=(50, 3))
    logged = LoggedFeedback(action=a, reward=r, propensity=p, context=ctx, position=None)
    assert logged.n_rounds == len(logged) == 50 and logged.n_actions == int(a.max()) + 1
    assert logged.reward.dtype == np.float64 and logged.reward.sum() == r.sum()
    assert logged.action.dtype == np.int64 and logged.position is None and logged.n_positions == 1
    assert logged.pscore is logged.propensity
    assert logged.context.shape == (50, 3)
    with pytest.raises(ValueError):
        logged.action[0] = 1  # read-only views
    sub = logged[a == 1]
    assert sub.n_rounds == int((a == 1).sum()) and (sub.action == 1).all() and sub.n_actions == logged.n_actions
    assert logged.subset(slice(0, 10)).context.tolist() == ctx[:10].tolist()
    assert "50 rounds" in repr(logged)
    # n_actions from the action features; 1-D context is one feature; datetimes become seconds
    ts = pd.date_range("2024-01-01", periods=50, freq="min", tz="UTC")
    more = LoggedFeedback(a, r, p, context=ctx[:, 0], action_context=np.eye(8), timestamps=ts)
    assert more.n_actions == 8 and more.context.shape == (50, 1)
    assert more.timestamps[1] - more.timestamps[0] == 60.0
    assert more.timestamps[0] == pd.Timestamp("2024-01-01", tz="UTC").value / 1e9


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(reward=[1, 0]), "reward has 2 entries"),
        (dict(propensity=[0.5, 0.0, 0.5]), r"propensity must lie in \(0, 1\]"),
        (dict(propensity=[0.5, 1.2, 0.5]), r"propensity must lie in \(0, 1\]"),
        (dict(propensity=[0.5, np.nan, 0.5]), r"propensity must lie in \(0, 1\]"),
        (dict(propensity=[-0.1, 0.5, 0.5]), "rows \\[0\\]"),
        (dict(reward=[0.0, np.inf, 1.0]), "reward: non-finite"),
        (dict(action=[0, -1, 2]), ">= 0"),
        (dict(action=[0, 1.5, 2]), "expected integers"),
        (dict(action=["a", "b", "c"]), "expected integers"),
        (dict(action=[[0, 1, 2]]), "1-D"),
        (dict(action=[0, 5, 2], n_actions=3), r"action must lie in \[0, 3\)"),
        (dict(n_actions=0), "n_actions: expected a positive integer"),
        (dict(context=np.zeros((2, 4))), "context has 2 rows"),
        (dict(context=[[0.0], [np.nan], [1.0]]), "non-finite"),
        (dict(position=[0, -1, 1]), "position"),
        (dict(position=[0, 1]), "position has 2 entries"),
        (dict(action_context=np.zeros((2, 2)), n_actions=3), "action_context has 2 rows"),
        (dict(context=np.zeros((3, 2)), context_names=["a"]), "context_names has 1"),
        (dict(timestamps=[1.0, 2.0]), "timestamps has 2 entries"),
        (dict(action=[], reward=[], propensity=[]), "at least one round"),
    ],
)
def test_logged_feedback_validation(kwargs, match):
    base = dict(action=[0, 1, 2], reward=[1.0, 0.0, 1.0], propensity=[0.5, 0.5, 0.5])
    base.update(kwargs)
    with pytest.raises(DataError, match=match):
        LoggedFeedback(**base)


# ---------------------------------------------------------------------------------------------- real data, when present
_BEAUTY = default_data_path("amazon-beauty/Beauty.txt")
_LASTFM = default_data_path("lastfm/LastFM.txt")
_OBD = default_data_path("open-bandit/random-men")
_OBD_BTS = default_data_path("open-bandit/bts-men")


@pytest.mark.skipif(_BEAUTY is None, reason="Amazon Beauty not found under a data folder")
def test_beauty_counts_match_the_published_statistics():
    data = load_sequences("amazon-beauty/Beauty.txt")
    inter = data.interactions
    assert (inter.n_users, inter.n_items, len(inter)) == (22363, 12101, 198502)
    assert inter.user_counts.min() >= 5
    assert data.item_attributes is not None and len(data.item_attributes) == 12101
    m = data.attribute_matrix()
    assert m.shape[0] == 12101 and (m.getnnz(axis=1) > 0).all()
    u, i = parse_sequences(_BEAUTY)
    assert len(u) == 198502 and len(np.unique(u)) == 22363 and len(np.unique(i)) == 12101


@pytest.mark.skipif(_LASTFM is None, reason="LastFM not found under a data folder")
def test_lastfm_counts_match_the_published_statistics():
    inter = load_sequences("lastfm/LastFM.txt").interactions
    assert (inter.n_users, inter.n_items, len(inter)) == (1090, 3646, 52551)


@pytest.mark.skipif(_OBD is None, reason="Open Bandit sample not found under a data folder")
def test_open_bandit_random_men():
    logged = load_open_bandit("open-bandit/random-men")
    assert logged.n_rounds == 10000 and logged.n_actions == 34 and logged.n_positions == 3
    np.testing.assert_allclose(logged.propensity, 1 / 34)  # the uniform random policy
    assert set(np.unique(logged.position)) == {0, 1, 2}
    assert 0.001 < logged.reward.mean() < 0.02
    n_onehot = sum(1 for n in logged.context_names if n.startswith("user_feature_"))
    assert logged.context.shape == (10000, n_onehot + 34)
    assert (logged.context[:, :n_onehot].sum(axis=1) == 4).all()  # one value of each of 4 features
    assert logged.action_context.shape[0] == 34
    assert np.all(np.diff(logged.timestamps) >= 0)


@pytest.mark.skipif(_OBD is None or _OBD_BTS is None, reason="Open Bandit sample not found under a data folder")
def test_open_bandit_bts_aligns_with_random():
    random = load_open_bandit("open-bandit/random-men")
    bts = load_open_bandit("open-bandit/bts-men", align_to=random)
    assert bts.context_names == random.context_names
    assert bts.propensity.std() > 0  # Thompson sampling: varying propensities
    assert (bts.propensity > 0).all() and (bts.propensity <= 1).all()
