"""RecommenderService: the fallback chain, request filters, cache, hot swap, watcher, fork safety."""

from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import persona as ps
from persona.serving import Recommendations, RecommenderService


@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=300, n_items=120, seed=3)


@pytest.fixture(scope="module")
def knn(shop):
    return ps.ItemKNN(k=30).fit(shop.interactions)


@pytest.fixture(scope="module")
def als(shop):
    return ps.ALS(factors=8, iterations=3, random_state=0).fit(shop.interactions)


@pytest.fixture(scope="module")
def catalog(shop):
    items = shop.items[["item_id", "category", "brand", "price"]].copy()
    items["in_stock"] = np.arange(len(items)) % 3 != 0
    return items


def _known(shop, i=0):
    return shop.interactions.user_ids[i]


# ---------------------------------------------------------------------- the chain
def test_known_user_gets_the_model_answer(shop, knn):
    service = RecommenderService(knn)
    user = _known(shop, 5)
    got = service.recommend(user, n=7)
    want_items, want_scores = knn.recommend(user, n=7)
    items, scores = got  # unpacks like model.recommend
    np.testing.assert_array_equal(items, want_items)
    np.testing.assert_array_equal(scores, want_scores)
    assert isinstance(got, Recommendations) and got.source == "model" and got.reason is None
    assert got.model_version == 1 and not got.cached


def test_unknown_user_goes_down_the_chain(shop, knn):
    inter = shop.interactions
    segments = shop.users.set_index("user_id").loc[inter.user_ids, "segment"].to_numpy()
    seg_pop = ps.MostPopular().fit(inter, user_segments=segments)
    service = RecommenderService(knn, fallback=[seg_pop])
    # a session history: the model answers from it
    hist = list(inter.item_ids[[3, 8, 13]])
    r = service.recommend("new-visitor", n=5, context={"history": hist})
    assert r.source == "model-history" and r.reason is None
    np.testing.assert_array_equal(r.items, knn.recommend_for_history(hist, n=5)[0])
    # a segment: that segment's popularity
    seg = segments[0]
    r = service.recommend("new-visitor", n=5, context={"segment": seg})
    assert r.source == "fallback-0" and r.reason == "unknown user"
    np.testing.assert_array_equal(r.items, seg_pop.top_items(5, segment=seg)[0])
    # nothing known: global popularity of the serving model's data
    r = RecommenderService(knn).recommend("new-visitor", n=5)
    assert r.source == "popular" and r.reason == "unknown user"
    counts = np.asarray(knn.user_items_.getnnz(axis=0))
    np.testing.assert_array_equal(r.items, knn.item_map_.ids[np.argsort(-counts, kind="stable")[:5]])


class _Broken(ps.MostPopular):
    """A model whose recommend fails or hangs, to test request safety."""

    mode = "raise"

    def recommend(self, user, n=10, **kw):
        if self.mode == "raise":
            raise RuntimeError("the model broke")
        time.sleep(0.5)
        return super().recommend(user, n=n, **kw)


def test_a_failing_model_falls_back_and_logs(shop, caplog):
    model = _Broken().fit(shop.interactions)
    service = RecommenderService(model)
    with caplog.at_level(logging.ERROR, logger="persona.serving"):
        r = service.recommend(_known(shop), n=4)
    assert r.source == "popular" and r.reason == "model error: RuntimeError" and len(r.items) == 4
    assert "the model failed" in caplog.text
    assert service.stats()["reasons"] == {"model error: RuntimeError": 1}


def test_the_models_own_fallback_is_the_first_link_of_the_chain(shop, tmp_path):
    # one mechanism: a fallback saved with the model answers in the service as in recommend_batch,
    # before the service's own links (it was ignored by the service before issue 13)
    inter = shop.interactions
    recent = ps.MostPopular(half_life=1.0).fit(inter)
    model = ps.ItemKNN(k=30).fit(inter).set_fallback(recent)
    model.save(tmp_path / "m.persona")
    served = ps.load(tmp_path / "m.persona")
    service = RecommenderService(served, fallback=ps.MostPopular().fit(inter))
    r = service.recommend("new-visitor", n=6)
    assert r.source == "model-fallback" and r.reason == "unknown user"
    want = served.recommend_batch(["new-visitor"], n=6)
    np.testing.assert_array_equal(r.items, want[0][0])
    np.testing.assert_array_equal(r.items, recent.top_items(6)[0])
    # filters reach it as they reach every link
    first = r.items[0]
    r = service.recommend("new-visitor", n=6, context={"exclude": [first]})
    assert r.source == "model-fallback" and first not in r.items and len(r.items) == 6
    # without an own fallback the service's links answer, as before
    assert RecommenderService(ps.ItemKNN(k=30).fit(inter), fallback=recent).recommend("x", n=3).source == "fallback-0"


def test_a_slow_model_times_out_to_the_fallback(shop):
    model = _Broken().fit(shop.interactions)
    model.mode = "sleep"
    service = RecommenderService(model, timeout=0.05)
    t = time.perf_counter()
    r = service.recommend(_known(shop), n=4)
    assert time.perf_counter() - t < 0.4
    assert r.source == "popular" and r.reason == "timeout" and len(r.items) == 4
    service.close()


# ---------------------------------------------------------------------- filters
def test_context_filters_still_return_n(shop, als, catalog):
    service = RecommenderService(als, catalog=catalog)
    user = _known(shop, 2)
    cat = catalog["category"].iloc[0]
    ctx = {"where": {"category": cat, "price": (None, 40.0)}, "exclude": list(catalog["item_id"][:5])}
    r = service.recommend(user, n=5, context=ctx)
    info = catalog.set_index("item_id").loc[r.items]
    assert (info["category"] == cat).all() and (info["price"] <= 40.0).all()
    assert not set(r.items) & set(catalog["item_id"][:5])
    allowed = set(catalog.loc[(catalog["category"] == cat) & (catalog["price"] <= 40.0), "item_id"]) \
        - set(catalog["item_id"][:5]) - set(als.item_map_.ids[als.user_items_[als.user_map_.index_of(user)].indices])
    assert len(r.items) == min(5, len(allowed))


def test_a_polars_or_arrow_catalogue_filters_as_pandas_does(shop, als, catalog):
    """Issue 12 point 10: the service's catalogue may be a polars or pyarrow table (with its own id column)."""
    import pyarrow as pa

    pl = pytest.importorskip("polars")  # in the test extra
    user = _known(shop, 2)
    cat = catalog["category"].iloc[0]
    ctx = {"where": {"category": cat, "price": (None, 40.0)}}
    want = RecommenderService(als, catalog=catalog).recommend(user, n=5, context=ctx).items
    skus = catalog.rename(columns={"item_id": "sku"})
    for table in (pl.from_pandas(skus), pa.Table.from_pandas(skus, preserve_index=False)):
        service = RecommenderService(als, catalog=table, catalog_id="sku")
        assert service.recommend(user, n=5, context=ctx).items.tolist() == want.tolist()
        service.set_catalog(table, catalog_id="sku")
        assert service.item_attributes(want[:1])[0]["category"] == cat
        service.close()
    with pytest.raises(ps.ParameterError, match="expected a pandas DataFrame or a polars / pyarrow table"):
        RecommenderService(als, catalog=[("a", 1)])


def test_stock_updates_apply_to_in_stock_requests(shop, als, catalog):
    service = RecommenderService(als, catalog=catalog)
    user = _known(shop, 4)
    first = service.recommend(user, n=3, context={"in_stock": True})
    service.set_stock(first.items[:1], available=False)
    second = service.recommend(user, n=3, context={"in_stock": True})
    assert first.items[0] not in second.items and len(second.items) == 3
    assert first.items[0] in service.recommend(user, n=3).items  # without in_stock: unchanged
    service.set_stock(first.items[:1], available=True)
    np.testing.assert_array_equal(service.recommend(user, n=3, context={"in_stock": True}).items, first.items)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_filters_match_a_slow_reference(data):
    shop, model, catalog = _PROPERTY_SETUP()
    service = RecommenderService(model, catalog=catalog, cache_size=0)
    ids = model.item_map_.ids
    user = data.draw(st.sampled_from(list(model.user_map_.ids[:50]) + ["stranger"]))
    n = data.draw(st.integers(1, 30))
    cats = data.draw(st.lists(st.sampled_from(sorted(set(catalog["category"]))), max_size=3, unique=True))
    low = data.draw(st.one_of(st.none(), st.floats(0, 60)))
    exclude = data.draw(st.lists(st.sampled_from(list(ids)), max_size=10))
    where = {"price": (low, None)}
    if cats:
        where["category"] = cats
    r = service.recommend(user, n=n, context={"where": where, "exclude": exclude})
    # reference: which items may appear at all
    info = catalog.set_index("item_id").reindex(ids)
    ok = np.ones(len(ids), bool) if low is None else (info["price"].to_numpy() >= low)
    if cats:
        ok &= info["category"].isin(cats).to_numpy()
    ok &= ~np.isin(ids, exclude)
    if user in model.user_map_:
        ok[model.user_items_[model.user_map_.index_of(user)].indices] = False
    assert set(r.items) <= set(ids[ok])
    assert len(r.items) == min(n, int(ok.sum()))
    assert len(set(r.items)) == len(r.items)
    if r.source == "model":
        assert np.all(np.diff(r.scores) <= 1e-6)


_CACHE = {}


def _PROPERTY_SETUP():
    if not _CACHE:
        shop = ps.datasets.synthetic_shop(n_users=200, n_items=90, seed=11)
        model = ps.ItemKNN(k=20).fit(shop.interactions)
        _CACHE["v"] = (shop, model, shop.items[["item_id", "category", "price"]])
    return _CACHE["v"]


# ---------------------------------------------------------------------- cache and counters
class _Store:
    def __init__(self):
        self.events, self.forgotten = [], []

    def track(self, user, item, event, **kw):
        self.events.append((user, item, event))

    def flush(self, timeout=None):
        return None

    def forget_user(self, user):
        self.forgotten.append(user)
        return 3


def test_cache_hits_and_invalidation_on_events(shop, als):
    store = _Store()
    service = RecommenderService(als, store=store, cache_size=100)
    user, other = _known(shop, 1), _known(shop, 2)
    a = service.recommend(user, n=5)
    b = service.recommend(user, n=5)
    assert not a.cached and b.cached
    np.testing.assert_array_equal(a.items, b.items)
    service.recommend(other, n=5)
    service.track(user, shop.interactions.item_ids[0], "view")
    assert store.events == [(user, shop.interactions.item_ids[0], "view")]
    assert not service.recommend(user, n=5).cached  # the user's entries went
    assert service.recommend(other, n=5).cached      # the others' stayed
    st_ = service.stats()
    assert st_["requests"] == 5 and st_["cache_hits"] == 2 and st_["latency_p99_ms"] >= st_["latency_p50_ms"] > 0


def test_cache_is_bounded_and_cleared_on_swap(shop, als, knn):
    service = RecommenderService(als, cache_size=3)
    for u in shop.interactions.user_ids[:10]:
        service.recommend(u, n=2)
    assert service.stats()["cache_entries"] == 3
    service.swap(knn)
    assert service.stats()["cache_entries"] == 0
    r = service.recommend(shop.interactions.user_ids[9], n=2)
    assert not r.cached and r.model_version == 2


def test_forget_user(shop, als):
    store = _Store()
    service = RecommenderService(als, store=store)
    user = _known(shop, 7)
    assert service.recommend(user, n=3).source == "model"
    assert service.forget_user(user) == 3 and store.forgotten == [user]
    r = service.recommend(user, n=3)
    assert r.source == "popular" and r.reason == "forgotten user"


# ---------------------------------------------------------------------- swap, reload, watch, fork
def test_no_failed_request_during_swaps(shop, als, knn):
    service = RecommenderService(als)
    users = list(shop.interactions.user_ids[:50])
    expected = {id(als): {u: als.recommend(u, n=5)[0] for u in users},
                id(knn): {u: knn.recommend(u, n=5)[0] for u in users}}
    by_version = {1: id(als)}
    errors, answers = [], []
    stop = threading.Event()

    def client(seed):
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            u = users[rng.integers(len(users))]
            try:
                r = service.recommend(u, n=5)
                answers.append((r.model_version, u, r.items))
            except Exception as e:  # noqa: BLE001 - the test counts them
                errors.append(e)

    threads = [threading.Thread(target=client, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for i in range(20):
        m = knn if i % 2 == 0 else als
        by_version[service.swap(m)] = id(m)
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert not errors and len(answers) > 50
    for version, u, items in answers:  # every answer is wholly one model's
        np.testing.assert_array_equal(items, expected[by_version[version]][u])


def test_reload_and_watch_pick_up_published_artifacts(shop, als, knn, tmp_path):
    path = tmp_path / "current.persona"
    als.save(path)
    service = RecommenderService(knn)
    assert service.reload(path) == 2 and isinstance(service.model, ps.ALS)
    service.watch(path, interval=0.02)
    knn.save(path)  # publish: the watcher swaps it in
    deadline = time.time() + 10
    while not isinstance(service.model, ps.ItemKNN) and time.time() < deadline:
        time.sleep(0.02)
    assert isinstance(service.model, ps.ItemKNN) and service.model_version == 3
    # a broken publish is logged and the current model keeps serving
    (path / "manifest.json").write_text("{broken")
    time.sleep(0.2)
    assert isinstance(service.model, ps.ItemKNN) and service.stats()["reload_errors"] >= 1
    assert service.recommend(_known(shop), n=3).source == "model"
    service.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_worker_serves_with_its_own_state(shop, als):
    service = RecommenderService(als)
    user = _known(shop, 3)
    parent = service.recommend(user, n=4)
    pid = os.fork()
    if pid == 0:  # the child: a fresh cache, working locks, same answers
        code = 1
        try:
            r = service.recommend(user, n=4)
            code = 0 if (not r.cached and list(r.items) == list(parent.items)
                         and service.stats()["requests"] == 1) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert service.recommend(user, n=4).cached  # the parent's cache is untouched


def test_similar_items_and_unknown_item(shop, knn):
    service = RecommenderService(knn)
    item = shop.interactions.item_ids[4]
    r = service.similar_items(item, n=5)
    assert r.source == "model" and item not in r.items
    np.testing.assert_array_equal(r.items, knn.similar_items(item, n=5)[0])
    r = service.similar_items("no-such-item", n=5)
    assert r.source == "popular" and r.reason == "unknown item" and len(r.items) == 5


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    ({"context": ["x"]}, "context must be a dict"),
    ({"context": {"colour": "red"}}, "unknown context keys"),
    ({"context": {"where": {"colour": "red"}}}, "no catalogue column"),
    ({"context": {"where": "red"}}, "where"),
    ({"n": 0}, "n: expected a positive integer"),
    ({"n": True}, "n: expected a positive integer"),
])
def test_bad_requests_are_refused_clearly(shop, als, catalog, kwargs, match):
    service = RecommenderService(als, catalog=catalog)
    with pytest.raises(ps.ParameterError, match=match):
        service.recommend(_known(shop), **kwargs)


def test_bad_construction(shop, als):
    with pytest.raises(ps.ParameterError, match="not fitted"):
        RecommenderService(ps.ALS())
    with pytest.raises(ps.ParameterError, match="Recommender"):
        RecommenderService("model")
    with pytest.raises(ps.ParameterError, match="timeout"):
        RecommenderService(als, timeout=0)
    with pytest.raises(ps.ParameterError, match="catalog"):
        RecommenderService(als, catalog=pd.DataFrame({"sku": [1]}))
    with pytest.raises(ps.ParameterError, match="event store"):
        RecommenderService(als).track("u", "i")
    with pytest.raises(ps.ParameterError, match="one external id"):
        RecommenderService(als).recommend(["a", "b"])


def test_from_artifact_loads_once_and_watches(shop, als, knn, tmp_path):
    path = als.save(tmp_path / "live.persona")
    service = RecommenderService.from_artifact(path, watch=0.02, cache_size=10)
    assert service.model_version == 1 and isinstance(service.model, ps.ALS)
    time.sleep(0.15)
    assert service.model_version == 1  # the loaded artifact is not loaded again
    knn.save(path)
    deadline = time.time() + 10
    while service.model_version == 1 and time.time() < deadline:
        time.sleep(0.02)
    assert isinstance(service.model, ps.ItemKNN) and service.model_version == 2
    service.close()


def test_a_pseudonymising_store_is_followed(shop, tmp_path):
    from persona.store import EventStore

    store = EventStore(tmp_path / "events.db", pseudonymize_key=b"k" * 32)
    events = shop.events.head(3000)
    for row in events.itertuples():
        store.track(row.user_id, row.item_id, str(row.event), timestamp=row.timestamp)
    store.flush()
    model = ps.ItemKNN(k=20).fit(store.interactions())
    raw = events["user_id"].iloc[0]
    assert raw not in model.user_map_ and store.pseudonym(raw) in model.user_map_
    service = RecommenderService(model, store=store)
    r = service.recommend(raw, n=4)  # the shop keeps using raw ids
    assert r.source == "model"
    np.testing.assert_array_equal(r.items, model.recommend(store.pseudonym(raw), n=4)[0])
    service.forget_user(raw)
    assert service.recommend(raw, n=4).reason == "forgotten user"
    store.close()
