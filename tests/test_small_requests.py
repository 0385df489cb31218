"""A request for a row or a few runs on one BLAS thread and a single-threaded onnxruntime session.

Both are latency measures for the single-user path (see ``persona.kernels.threads.small_request`` and
``persona.onnx.OnnxModel``); these tests hold what must not change with them: the process's BLAS
setting is restored whatever the interleaving of concurrent requests, and the answers are the
same numbers as the batch path's.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import persona as ps
from persona.kernels.threads import SMALL_REQUEST_ROWS, small_request


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.fixture
def two_blas_threads():
    with threadpool_limits(2, user_api="blas"):
        yield _blas_threads()


def test_small_block_runs_on_one_blas_thread_and_restores(two_blas_threads):
    before = two_blas_threads
    with small_request(1):
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == before
    with small_request(SMALL_REQUEST_ROWS + 1):  # a batch keeps the pool
        assert _blas_threads() == before


def test_small_requests_in_worker_threads_leave_the_setting_alone():
    # OpenBLAS may ignore a worker thread's raising the count back: there small_request does nothing
    before = _blas_threads()
    inside, release = threading.Barrier(5), threading.Event()
    seen = []

    def request():
        with small_request(1):
            inside.wait()
            seen.append(tuple(_blas_threads()))
            release.wait(5)

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    inside.wait()  # all four are inside at once
    release.set()
    for t in threads:
        t.join()
    assert seen == [tuple(before)] * 4
    assert _blas_threads() == before


def test_nested_small_requests_restore_once(two_blas_threads):
    with small_request(1):
        with small_request(2):
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}  # the inner exit does not restore while the outer is open
    assert _blas_threads() == two_blas_threads


def test_small_request_restores_after_an_error(two_blas_threads):
    with pytest.raises(KeyError), small_request(1):
        raise KeyError("boom")
    assert _blas_threads() == two_blas_threads


@pytest.fixture(scope="module")
def shop():
    return ps.datasets.synthetic_shop(n_users=200, n_items=60, seed=3).interactions


def test_one_user_answers_equal_the_batch_answers(shop):
    als = ps.ALS(factors=8, iterations=3, random_state=0).fit(shop)
    users = shop.user_ids[:12]
    batch_items, batch_scores = als.recommend_batch(users, n=5)
    for j, u in enumerate(users):
        items, scores = als.recommend(u, n=5)
        assert items.tolist() == batch_items[j].tolist()
        np.testing.assert_allclose(scores, batch_scores[j], rtol=1e-5)


def test_onnx_small_session_gives_the_batch_numbers(shop):
    pytest.importorskip("torch")
    model = ps.SASRec(factors=8, blocks=1, max_len=10, epochs=1, random_state=0, show_progress=False).fit(shop)
    users = shop.user_ids[:10]
    batch = model.recommend_batch(users, n=5)
    for j, u in enumerate(users):
        items, scores = model.recommend(u, n=5)
        assert items.tolist() == batch[0][j].tolist()
        np.testing.assert_allclose(scores, batch[1][j], rtol=1e-4, atol=1e-5)
    assert model.encoder_._small is not None  # the single-user calls used the small session
    assert model.encoder_._session is not None
