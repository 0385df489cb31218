"""SASRec: training, the ONNX encoder's parity with PyTorch, serving without torch, the contract."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import persona as ps
from persona.models._neural import history_tokens
from persona.models.sasrec import SASRec
from persona.onnx import OnnxModel

from contract import RecommenderContract

torch = pytest.importorskip("torch")

TINY = dict(factors=16, blocks=1, max_len=10, epochs=4, dropout=0.2, learning_rate=5e-3, random_state=0,
            num_threads=1)


@pytest.fixture(scope="module")
def shop_split():
    inter = ps.datasets.synthetic_shop(n_users=300, n_items=80, seed=1).interactions
    train, valid, test = ps.split.leave_last_out(inter, new_items=True)
    return inter, train, valid, test


@pytest.fixture(scope="module")
def tiny(shop_split):
    _, train, valid, _ = shop_split
    return SASRec(**{**TINY, "epochs": 6}).fit(train, valid=valid)


def _torch_last_state(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model._network.encode(torch.from_numpy(tokens.astype(np.int64)))[:, -1, :].numpy()


# ---------------------------------------------------------------------- the ONNX encoder
def test_onnx_matches_pytorch_on_random_and_real_tokens(tiny):
    rng = np.random.default_rng(0)
    hist = [rng.integers(0, tiny.n_items, size=rng.integers(1, 25)) for _ in range(64)]
    random_tokens = history_tokens(hist, tiny.max_len)
    real_tokens = tiny.user_tokens_[:128].astype(np.int64)
    for tokens in (random_tokens, real_tokens, random_tokens[:1]):
        got = tiny.encode(tokens)
        want = _torch_last_state(tiny, tokens)
        assert got.dtype == np.float32 and got.shape == (len(tokens), tiny.factors)
        assert np.abs(got - want).max() <= 1e-4


def test_recommend_equals_pytorch_ranking(tiny):
    users = np.arange(0, tiny.n_users, 7)
    want = _torch_last_state(tiny, tiny.user_tokens_[users]) @ tiny.item_factors_.T
    ids, _ = tiny.recommend_batch(tiny.user_map_.ids[users], n=10)
    for row, u in enumerate(users):
        s = want[row].copy()
        s[tiny.user_items_[u].indices] = -np.inf
        expected = tiny.item_map_.ids[np.argsort(-s, kind="stable")[:10]]
        np.testing.assert_array_equal(ids[row], expected)


def test_onnx_graph_has_dynamic_batch_and_opset(tiny):
    import onnx

    graph = onnx.load_from_string(tiny.encoder_onnx_)
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dim0 = graph.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param  # symbolic, not a fixed batch size
    assert tiny.encode(np.zeros((3, tiny.max_len), np.int64) + 1).shape == (3, tiny.factors)


def test_recommend_for_history_ignores_unknown_items_and_needs_no_refit(tiny, shop_split):
    inter = shop_split[0]
    known = inter.item_ids[[3, 9, 4]]
    a, sa = tiny.recommend_for_history(list(known), n=5)
    b, sb = tiny.recommend_for_history([known[0], "no-such-item", known[1], known[2]], n=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-6)
    assert not set(a.tolist()) & set(known.tolist())
    # an empty history gets the most popular items
    empty, _ = tiny.recommend_for_history([], n=3)
    order = np.argsort(-tiny.item_popularity_, kind="stable")[:3]
    np.testing.assert_array_equal(empty, tiny.item_map_.ids[order])


def test_history_order_matters(tiny, shop_split):
    inter = shop_split[0]
    h = list(inter.item_ids[[1, 2, 3, 4, 5]])
    _, s1 = tiny.recommend_for_history(h, n=20, filter_seen=False)
    _, s2 = tiny.recommend_for_history(h[::-1], n=20, filter_seen=False)
    assert not np.allclose(s1, s2)


def test_similar_items_is_cosine_of_item_factors(tiny):
    v = tiny.item_factors_ / np.linalg.norm(tiny.item_factors_, axis=1, keepdims=True)
    ids, scores = tiny.similar_items(tiny.item_map_.ids[0], n=5)
    s = v[1:] @ v[0]
    np.testing.assert_array_equal(ids, tiny.item_map_.ids[1 + np.argsort(-s, kind="stable")[:5]])
    np.testing.assert_allclose(scores, np.sort(s)[::-1][:5], rtol=1e-5)


def test_recommend_users_scores_encoded_histories(tiny):
    item = tiny.item_map_.ids[2]
    users, scores = tiny.recommend_users(item, n=5)
    want = tiny.encode(tiny.user_tokens_.astype(np.int64)) @ tiny.item_factors_[2]
    np.testing.assert_array_equal(users, tiny.user_map_.ids[np.argsort(-want, kind="stable")[:5]])


# ---------------------------------------------------------------------- training
def test_loss_decreases_and_validation_is_tracked(tiny):
    h = tiny.history_
    assert len(h) == 6 and h[-1]["loss"] < h[0]["loss"]
    assert all("valid_ndcg@10" in r and 0 <= r["valid_ndcg@10"] <= 1 for r in h)
    best = max(range(len(h)), key=lambda e: h[e]["valid_ndcg@10"]) + 1
    assert tiny.best_epoch_ == best


def test_early_stopping_keeps_the_best_epoch(shop_split):
    _, train, valid, _ = shop_split
    m = SASRec(**{**TINY, "epochs": 40, "learning_rate": 0.05, "patience": 2}).fit(train, valid=valid)
    h = m.history_
    assert len(h) <= 40
    scores = [r["valid_ndcg@10"] for r in h]
    assert m.best_epoch_ == int(np.argmax(scores)) + 1
    if len(h) < 40:
        assert len(h) - m.best_epoch_ == 2
    # the kept weights are the best epoch's: their validation NDCG@10 is the best one
    rep = ps.evaluate(m, valid, k=(10,), metrics=("ndcg",))
    assert rep["ndcg@10"] == pytest.approx(max(scores), abs=1e-6)


def test_same_seed_same_factors(shop_split):
    _, train, _, _ = shop_split
    a = SASRec(**TINY).fit(train)
    b = SASRec(**TINY).fit(train)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    c = SASRec(**{**TINY, "random_state": 1}).fit(train)
    assert not np.array_equal(a.item_factors_, c.item_factors_)


def test_beats_most_popular(shop_split):
    _, train, valid, _ = shop_split
    m = SASRec(factors=16, blocks=1, max_len=10, epochs=60, dropout=0.5, learning_rate=1e-2, random_state=0,
               num_threads=1).fit(train)
    hr = ps.evaluate(m, valid, k=(10,), metrics=("hr",))["hr@10"]
    pop = ps.evaluate(ps.MostPopular().fit(train), valid, k=(10,), metrics=("hr",))["hr@10"]
    assert hr > pop + 0.02, (hr, pop)


@pytest.mark.parametrize("bad", [
    {"factors": 0}, {"factors": 10, "heads": 3}, {"blocks": 0}, {"heads": -1}, {"max_len": 2.5},
    {"dropout": 1.0}, {"dropout": -0.1}, {"learning_rate": 0}, {"learning_rate": float("nan")},
    {"epochs": 0}, {"batch_size": True}, {"patience": 0}, {"loss": "bce"}, {"random_state": -1},
    {"num_threads": -2},
])
def test_bad_parameters(bad, shop_split):
    with pytest.raises(ps.ParameterError):
        SASRec(**{**TINY, **bad}).fit(shop_split[1])


def test_bad_valid_and_too_short_sequences(shop_split):
    _, train, _, _ = shop_split
    with pytest.raises(ps.DataError, match="valid"):
        SASRec(**TINY).fit(train, valid=[1, 2])
    one = ps.Interactions.from_records([{"u": 1, "i": "a"}, {"u": 2, "i": "b"}], user="u", item="i")
    with pytest.raises(ps.DataError, match="at least 2"):
        SASRec(**TINY).fit(one)


# ---------------------------------------------------------------------- persistence and serving
def test_save_load_round_trip(tiny, tmp_path):
    path = tiny.save(tmp_path / "sasrec.persona")
    assert (path / "files" / "sequence_encoder.onnx").exists()
    loaded = ps.load(path)
    assert isinstance(loaded, SASRec) and loaded.get_params() == tiny.get_params()
    assert loaded.user_tokens_.dtype == np.int32 and loaded.user_tokens_.shape == (tiny.n_users, tiny.max_len)
    np.testing.assert_array_equal(loaded.item_factors_, tiny.item_factors_)
    users = tiny.user_map_.ids[:20]
    a, sa = tiny.recommend_batch(users, n=8)
    b, sb = loaded.recommend_batch(users, n=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)
    assert loaded.best_epoch_ == tiny.best_epoch_ and loaded.history_ == tiny.history_


def test_corrupted_graph_is_refused(tiny, tmp_path):
    path = tiny.save(tmp_path / "sasrec.persona")
    graph = path / "files" / "sequence_encoder.onnx"
    raw = bytearray(graph.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    graph.write_bytes(bytes(raw))
    with pytest.raises(ps.ArtifactError, match="checksum"):
        ps.load(path)


def test_loads_and_serves_without_torch(tiny, tmp_path):
    path = tiny.save(tmp_path / "sasrec.persona")
    user = tiny.user_map_.ids[5].item()
    want, _ = tiny.recommend(user, n=5)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import persona as ps
        import persona.models.sasrec  # noqa: F401  (registers the class)
        m = ps.load({str(path)!r})
        ids, _ = m.recommend({user!r}, n=5)
        print(",".join(map(str, ids.tolist())))
        h, _ = m.recommend_for_history(list(m.item_map_.ids[:3]), n=3)
        assert len(h) == 3
        try:
            m.fit(None)
        except ps.DataError:
            pass
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == ",".join(map(str, want.tolist()))


def test_import_does_not_import_torch():
    code = "import sys, persona, persona.models.sasrec, persona.onnx; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_onnx_model_is_lazy_and_thread_safe(tiny):
    m = OnnxModel(tiny.encoder_onnx_, intra_op_threads=1)
    assert m._session is None
    tokens = tiny.user_tokens_[:16].astype(np.int64)
    results, errors = [], []

    def worker():
        try:
            results.append(m.run(tokens))
        except Exception as e:  # pragma: no cover - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 8
    assert all(np.array_equal(r, results[0]) for r in results)
    np.testing.assert_allclose(results[0], tiny.encode(tokens), atol=1e-6)


def test_onnx_model_bad_arguments(tmp_path):
    with pytest.raises(ps.ParameterError):
        OnnxModel(12)
    with pytest.raises(ps.ParameterError):
        OnnxModel(b"x", intra_op_threads=-1)
    with pytest.raises(ps.ParameterError):
        OnnxModel(b"x", providers="CPUExecutionProvider")
    with pytest.raises(ps.ArtifactError, match="onnxruntime could not load"):
        OnnxModel(b"not a graph").run(np.zeros((1, 2), np.float32))


def test_encode_checks_shape(tiny):
    with pytest.raises(ps.ParameterError, match="tokens must have shape"):
        tiny.encode(np.zeros((2, tiny.max_len + 1), np.int64))


# ---------------------------------------------------------------------- the shared contract
class TestSASRecContract(RecommenderContract):
    def make_model(self):
        return SASRec(factors=8, blocks=1, max_len=8, epochs=3, dropout=0.2, random_state=0, num_threads=1)


def test_exact_index_gives_the_same_recommendations(shop_split, tmp_path):
    _, train, _, _ = shop_split
    m = SASRec(**TINY).fit(train)
    users = m.user_map_.ids[:25]
    mask = np.ones(m.n_items, dtype=bool)
    mask[::4] = False
    want = m.recommend_batch(users, n=7, mask=mask, exclude=[m.item_map_.ids[1]])
    m.use_index("exact")
    got = m.recommend_batch(users, n=7, mask=mask, exclude=[m.item_map_.ids[1]])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)
    loaded = ps.load(m.save(tmp_path / "indexed.persona"))
    assert loaded.index_ is not None
    np.testing.assert_array_equal(loaded.recommend_batch(users, n=7, mask=mask, exclude=[m.item_map_.ids[1]])[0],
                                  want[0])
    m.use_index(None)
    assert m.index_ is None
    np.testing.assert_array_equal(m.recommend_batch(users, n=7, mask=mask, exclude=[m.item_map_.ids[1]])[0],
                                  want[0])


def test_onnx_model_pickles_without_its_session(tiny):
    import pickle

    m = OnnxModel(tiny.encoder_onnx_)
    tokens = tiny.user_tokens_[:4].astype(np.int64)
    first = m.run(tokens)
    copy_ = pickle.loads(pickle.dumps(m))
    assert copy_._session is None
    np.testing.assert_array_equal(copy_.run(tokens), first)


# ---------------------------------------------------------------------- side information, sampled softmax
def _shop_attributes(inter):
    """Category one-hot of the synthetic shop's items, rows in the interactions' item order."""
    import scipy.sparse as sp

    shop = ps.datasets.synthetic_shop(n_users=300, n_items=80, seed=1)
    codes = shop.item_categories(inter.item_map)
    return sp.csr_matrix((np.ones(len(codes), np.float32), (np.arange(len(codes)), codes)),
                         shape=(len(codes), codes.max() + 1)), shop


def test_item_attributes_enter_the_item_vectors_and_the_graph(shop_split):
    _, train, valid, _ = shop_split
    attrs, _ = _shop_attributes(train)
    m = SASRec(**TINY).fit(train, valid=valid, item_attributes=attrs)
    net = m._network
    with torch.no_grad():
        ids = net.items.weight[1:].numpy()
        cat = net.attributes.weight.numpy()
    # an item's vector is its id embedding plus its attributes' embeddings
    np.testing.assert_allclose(m.item_factors_, ids + attrs @ cat, atol=1e-6)
    tokens = m.user_tokens_[:64].astype(np.int64)
    assert np.abs(m.encode(tokens) - _torch_last_state(m, tokens)).max() <= 1e-4
    plain = SASRec(**TINY).fit(train, valid=valid)
    assert not np.allclose(plain.item_factors_, m.item_factors_)


def test_item_attributes_from_features_match_by_id(shop_split):
    from persona.data import Features

    _, train, _, _ = shop_split
    attrs, shop = _shop_attributes(train)
    # Features over the catalogue in another order: rows are matched by item id
    catalogue = ps.IdMap(shop.items["item_id"].to_numpy(dtype=str)[::-1])
    feats = Features.from_frame(shop.items, catalogue, "item_id", categorical=["category"])
    b = SASRec(**TINY).fit(train, item_attributes=feats)
    aligned = feats.matrix[catalogue.lookup(train.item_ids)].toarray()
    with torch.no_grad():
        ids, cat = b._network.items.weight[1:].numpy(), b._network.attributes.weight.numpy()
    np.testing.assert_allclose(b.item_factors_, ids + aligned @ cat, atol=1e-6)
    # the rows found by id carry the shop's categories (one column per category, in another order)
    col_of, code_of = aligned.argmax(axis=1), attrs.toarray().argmax(axis=1)
    assert (aligned.sum(axis=1) == 1).all()
    assert all(len(set(col_of[code_of == c])) == 1 for c in np.unique(code_of))


@pytest.mark.parametrize("bad, match", [
    ("matrix with wrong rows", "rows"), ("a list", "sparse matrix"), ("nan", "NaN"), ("no common ids", "none of"),
])
def test_bad_item_attributes(bad, match, shop_split):
    import scipy.sparse as sp

    from persona.data import Features

    _, train, _, _ = shop_split
    attrs, shop = _shop_attributes(train)
    value = {
        "matrix with wrong rows": attrs[:-1],
        "a list": [[1, 0]] * train.n_items,
        "nan": sp.csr_matrix(np.where(attrs.toarray() > 0, np.nan, 0.0)),
        "no common ids": Features.from_frame(shop.items.assign(item_id="x" + shop.items["item_id"]),
                                             ps.IdMap(("x" + shop.items["item_id"]).to_numpy(dtype=str)),
                                             "item_id", categorical=["category"]),
    }[bad]
    with pytest.raises(ps.DataError, match=match):
        SASRec(**TINY).fit(train, item_attributes=value)


def test_sampled_softmax_learns(shop_split):
    _, train, valid, _ = shop_split
    m = SASRec(factors=16, blocks=1, max_len=10, epochs=40, dropout=0.5, learning_rate=1e-2, loss="sampled",
               negatives=20, random_state=0, num_threads=1).fit(train, valid=None)  # all 40 epochs
    assert m.history_[-1]["loss"] < m.history_[0]["loss"]
    hr = ps.evaluate(m, valid, k=(10,), metrics=("hr",))["hr@10"]
    pop = ps.evaluate(ps.MostPopular().fit(train), valid, k=(10,), metrics=("hr",))["hr@10"]
    assert hr > pop + 0.02, (hr, pop)


def test_sampled_loss_estimates_the_full_softmax():
    """With logQ correction and many draws, the sampled loss approaches the full cross-entropy."""
    torch.manual_seed(0)
    n, f = 50, 8
    h, w = torch.randn(6, f), torch.randn(n, f)
    target = torch.randint(0, n, (6,))
    q = torch.rand(n) + 0.1
    q = (q / q.sum()).double()
    full = torch.nn.functional.cross_entropy(h @ w.T, target).item()
    model = SASRec(loss="sampled", negatives=4000)
    sampled = np.mean([model._loss(torch, h, target, w, q.float()).item() for _ in range(20)])
    assert abs(sampled - full) < 0.05 * full, (sampled, full)
    few = SASRec(loss="sampled", negatives=3)._loss(torch, h, target, w, q.float()).item()
    assert few < full  # few negatives: a smaller normaliser


# ---------------------------------------------------------------------- batches and checkpoints
@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=300), st.integers(1, 64), st.integers(0, 2**31))
def test_length_batches_cover_every_row_once_by_length(lengths, batch_size, seed):
    from persona.models.sasrec import _length_batches

    lengths = np.asarray(lengths)
    batches = _length_batches(lengths, batch_size, np.random.default_rng(seed))
    rows = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(lengths)))
    budget = batch_size * max(lengths.mean(), 1.0)
    for b in batches:  # a batch overshoots its budget by less than one row
        assert lengths[b].sum() < budget + lengths.max()
    # batches are contiguous runs of lengths: no batch's range strictly overlaps another's
    spans = sorted((lengths[b].min(), lengths[b].max()) for b in batches)
    for (lo1, hi1), (lo2, hi2) in zip(spans, spans[1:]):
        assert hi1 <= lo2


def test_checkpoint_resumes_to_the_same_weights(shop_split, tmp_path):
    _, train, valid, _ = shop_split
    straight = SASRec(**{**TINY, "epochs": 5}).fit(train, valid=valid)
    folder = tmp_path / "ckpt"
    first = SASRec(**{**TINY, "epochs": 2, "checkpoint": folder}).fit(train, valid=valid)
    assert (folder / "state.json").exists() and len(first.history_) == 2
    resumed = SASRec(**{**TINY, "epochs": 5, "checkpoint": str(folder)}).fit(train, valid=valid)
    assert [r["epoch"] for r in resumed.history_] == [1, 2, 3, 4, 5]
    assert resumed.history_ == straight.history_
    np.testing.assert_array_equal(resumed.item_factors_, straight.item_factors_)
    assert resumed.best_epoch_ == straight.best_epoch_
    assert len(list(folder.glob("arrays-*.npz"))) == 1
    # the checkpoint folder's path is saved as a string parameter
    loaded = ps.load(resumed.save(tmp_path / "m"))
    assert loaded.checkpoint == str(folder)


def test_checkpoint_of_another_model_or_broken_is_refused(shop_split, tmp_path):
    _, train, _, _ = shop_split
    folder = tmp_path / "ckpt"
    SASRec(**{**TINY, "epochs": 1, "checkpoint": folder}).fit(train)
    with pytest.raises(ps.ParameterError, match="factors"):
        SASRec(**{**TINY, "factors": 8, "checkpoint": folder}).fit(train)
    with pytest.raises(ps.ParameterError, match="training data"):
        SASRec(**{**TINY, "checkpoint": folder}).fit(shop_split[0])
    (folder / "state.json").write_text("{not json")
    with pytest.raises(ps.ArtifactError, match="unreadable"):
        SASRec(**{**TINY, "checkpoint": folder}).fit(train)
    with pytest.raises(ps.ParameterError, match="checkpoint"):
        SASRec(**{**TINY, "checkpoint": 3}).fit(train)


def test_plateau_schedule_halves_the_rate_while_validation_stalls():
    shop = ps.datasets.synthetic_shop(n_users=300, n_items=60, seed=7)
    m = ps.SASRec(factors=16, blocks=1, max_len=20, epochs=12, patience=4, learning_rate=5e-3, lr_schedule="plateau",
                  random_state=0).fit(shop.interactions)
    lrs = [r["lr"] for r in m.history_]
    assert lrs[0] == 5e-3 and all(b <= a for a, b in zip(lrs, lrs[1:]))
    # a halving follows each epoch that did not improve (patience // 3 = 1), and only those
    best = -1.0
    for prev, rec in zip(m.history_, m.history_[1:]):
        stalled = prev["valid_ndcg@10"] <= best
        best = max(best, prev["valid_ndcg@10"])
        assert rec["lr"] == (prev["lr"] / 2 if stalled else prev["lr"])
    assert "lr" not in ps.SASRec(factors=16, blocks=1, max_len=20, epochs=2, random_state=0).fit(
        shop.interactions).history_[0]  # the constant schedule's history is as before
    with pytest.raises(ps.ParameterError, match="lr_schedule"):
        ps.SASRec(lr_schedule="cosine").fit(shop.interactions)


def test_bfloat16_output_layer_trains_as_well_as_float32(shop_split):
    _, train, valid, _ = shop_split
    kw = dict(factors=16, blocks=1, max_len=10, epochs=30, dropout=0.5, learning_rate=1e-2, random_state=0,
              num_threads=1)
    full = SASRec(**kw, output_precision="float32").fit(train)
    half = SASRec(**kw, output_precision="bfloat16").fit(train)
    assert half.output_precision_ == "bfloat16" and full.output_precision_ == "float32"
    assert half.item_factors_.dtype == np.float32  # the weights, and the served model, stay float32
    # a different computation (the weights differ), the same quality within noise
    assert not np.array_equal(half.item_factors_, full.item_factors_)
    hr = {name: ps.evaluate(m, valid, k=(10,), metrics=("hr",))["hr@10"] for name, m in (("32", full), ("16", half))}
    assert abs(hr["16"] - hr["32"]) < 0.05, hr
    assert SASRec(**{**kw, "epochs": 1}, output_precision="auto").fit(train).output_precision_ in ("float32", "bfloat16")
    with pytest.raises(ps.ParameterError, match="output_precision"):
        SASRec(**kw, output_precision="fp8").fit(train)


def test_contrastive_term_changes_training_and_is_validated(shop_split):
    _, train, valid, _ = shop_split
    kw = dict(factors=16, blocks=1, max_len=10, epochs=3, dropout=0.5, learning_rate=1e-2, random_state=0,
              num_threads=1)
    plain = SASRec(**kw).fit(train)
    con = SASRec(**kw, contrastive=0.5).fit(train)
    assert not np.array_equal(plain.item_factors_, con.item_factors_)
    assert con.history_[0]["loss"] > plain.history_[0]["loss"]  # the term adds a positive InfoNCE
    for bad in (-0.1, float("nan"), "x"):
        with pytest.raises(ps.ParameterError, match="contrastive"):
            SASRec(**kw, contrastive=bad).fit(train)


def test_info_nce_by_hand():
    import torch

    from persona.models.sasrec import _info_nce

    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    # normalised: a = b = identity rows; logits = I; each row's CE = log(e + 1) - 1
    expect = float(np.log(np.e + 1.0) - 1.0)
    assert abs(float(_info_nce(torch, a, b)) - expect) < 1e-6
