"""Load and use crafted artifacts in a process of their own (run by tests/test_artifact_attacks.py).

``python artifact_probe.py cases.json results.json``: each case names an artifact and how to load
it; the result says whether load refused it with ArtifactError ("refused"), whether the loaded
model answered every question with a well-shaped answer ("ok"), refused a question with a
persona error ("persona-error"), or failed in any other way ("error", "bad-answer"). Results are
written after every case, and the case about to run is printed to stderr first, so that a crash
(a signal) names its case.
"""

from __future__ import annotations

import json
import sys
import traceback

import numpy as np


def _check(cond, what):
    if not cond:
        raise AssertionError(what)


def _valid_ids(model, ids):
    known = set(model.item_map_.ids.tolist())
    pad = "" if model.item_map_.ids.dtype.kind == "U" else -1
    return all(i in known or i == pad for i in np.asarray(ids).ravel().tolist())


def use_model(model, ps):
    """Ask every serving question once; raise AssertionError for an ill-shaped answer."""
    n = 3
    users = model.user_map_.ids[:3].tolist()
    items = model.item_map_.ids[:3].tolist()
    answers = 0
    questions = [
        lambda: model.recommend(users[0], n=n),
        lambda: model.recommend_batch(users, n=n),
        lambda: model.recommend_batch(users, n=n, filter_seen=False),  # no filter: the index's own answer
        lambda: model.similar_items(items[0], n=n) if model.supports_similar_items else None,
        lambda: model.recommend_for_history(items[:2], n=n) if model.supports_history else None,
        # a stranger is answered by the saved fallback (its own arrays, loaded from the same artifact)
        lambda: model.recommend_batch(["never-seen-user"], n=n) if model.fallback_ is not None else None,
    ]
    for i, ask in enumerate(questions):
        try:
            got = ask()
        except ps.PersonaError:
            continue
        if got is None:
            continue
        ids, scores = got
        if i in (1, 2, 5):
            rows = 1 if i == 5 else len(users)
            _check(ids.shape == (rows, n) and scores.shape == (rows, n),
                   f"recommend_batch shapes {ids.shape} {scores.shape}")
        else:
            _check(ids.ndim == 1 and len(ids) <= n and scores.shape == ids.shape,
                   f"question {i}: shapes {ids.shape} {scores.shape}")
        _check(_valid_ids(model, ids), f"question {i}: ids outside the item map: {ids!r}")
        answers += 1
    return answers


def use_index(index, ps):
    q = np.ones((2, index.dim), dtype=np.float32)
    ids, scores = index.search(q, n=3)
    _check(ids.shape == (2, 3) and scores.shape == (2, 3), f"search shapes {ids.shape}")
    _check(bool(((ids >= -1) & (ids < index.n)).all()), f"search ids out of range: {ids!r}")


def use_search(search, ps):
    ids, scores = search.search("cream oil", n=3)
    _check(ids.ndim == 1 and len(ids) <= 3 and scores.shape == ids.shape, f"search shapes {ids.shape}")
    _check(set(np.asarray(ids).tolist()) <= set(search.item_map_.ids.tolist()), f"search ids not in the catalogue: {ids!r}")


def run_case(case, ps):
    kwargs = {"mmap": bool(case.get("mmap", False))}
    if case.get("key") is not None:
        kwargs["key"] = bytes.fromhex(case["key"])
    loader = ps.load
    if case.get("what") == "index":
        from persona.retrieval import load_index as loader
    elif case.get("what") == "search":
        loader = ps.ProductSearch.load
        kwargs.pop("mmap")  # a search reads its arrays into memory
    try:
        obj = loader(case["path"], **kwargs)
    except ps.ArtifactError as e:
        return {"outcome": "refused", "detail": str(e)}
    except Exception as e:  # noqa: BLE001 - reported to the test
        return {"outcome": "error", "detail": f"load: {type(e).__name__}: {e}\n{traceback.format_exc()}"}
    try:
        if case.get("what") == "index":
            use_index(obj, ps)
        elif case.get("what") == "search":
            use_search(obj, ps)
        else:
            use_model(obj, ps)
    except ps.ArtifactError as e:
        return {"outcome": "persona-error", "detail": str(e)}
    except AssertionError as e:
        return {"outcome": "bad-answer", "detail": str(e)}
    except Exception as e:  # noqa: BLE001
        return {"outcome": "error", "detail": f"use: {type(e).__name__}: {e}\n{traceback.format_exc()}"}
    return {"outcome": "ok", "detail": ""}


def main(cases_path, out_path):
    import persona as ps

    with open(cases_path) as f:
        cases = json.load(f)
    out = {}
    for case in cases:
        print(f"CASE {case['id']}", file=sys.stderr, flush=True)
        out[case["id"]] = run_case(case, ps)
        with open(out_path, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
