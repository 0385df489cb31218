"""model.recommend_frame: the long user, item, score, rank table (issue 12, point 11)."""

import numpy as np
import pandas as pd
import pytest

import persona as ps
from contract import contract_data

MODELS = [ps.MostPopular(), ps.ItemKNN(k=10), ps.ALS(factors=4, iterations=2, random_state=0), ps.EASE()]


@pytest.fixture(scope="module")
def data():
    return contract_data()


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_frame_is_the_batch_without_padding(model, data):
    model.fit(data)
    users = list(data.user_ids[:7])
    exclude = [list(data.item_ids[:3])] * len(users)
    frame = model.recommend_frame(users, n=5, exclude=exclude)
    ids, scores = model.recommend_batch(users, n=5, exclude=exclude)
    assert list(frame.columns) == ["user", "item", "score", "rank"]
    expected = [(u, i, s, r + 1) for u, row, srow in zip(users, ids, scores)
                for r, (i, s) in enumerate(zip(row, srow)) if s > -np.inf]
    got = list(frame.itertuples(index=False, name=None))
    assert [(u, i, r) for u, i, _, r in got] == [(u, i, r) for u, i, _, r in expected]
    np.testing.assert_array_equal(frame["score"].to_numpy(), np.array([e[2] for e in expected], np.float32))
    assert frame["rank"].dtype == np.int64


def test_short_rows_lose_their_padding_and_fallback_rows_count(data):
    model = ps.MostPopular().fit(data)
    allowed = list(data.item_ids[:2])
    frame = model.recommend_frame(list(data.user_ids[:3]), n=10, items=allowed, filter_seen=False)
    assert frame.groupby("user").size().tolist() == [2, 2, 2] and set(frame["item"]) <= set(allowed)
    with pytest.raises(ps.UnknownUserError):
        model.recommend_frame(["nobody"], n=3)
    als = ps.ALS(factors=4, iterations=2, random_state=0).fit(data).set_fallback(model)
    frame = als.recommend_frame(["nobody", data.user_ids[0]], n=3)
    assert frame["user"].tolist() == ["nobody"] * 3 + [data.user_ids[0]] * 3
    assert model.recommend_frame([], n=3).empty


def test_frame_to_csv_round_trip(tmp_path, data):
    frame = ps.EASE().fit(data).recommend_frame(list(data.user_ids[:4]), n=3)
    frame.to_csv(tmp_path / "recs.csv", index=False)
    back = pd.read_csv(tmp_path / "recs.csv", dtype={"user": frame["user"].dtype, "item": frame["item"].dtype})
    assert back[["user", "item", "rank"]].equals(frame[["user", "item", "rank"]].astype(back[["user", "item", "rank"]].dtypes))
