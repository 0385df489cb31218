"""The command line: demo smoke test, and train -> recommend -> evaluate on a small file."""

import json
import subprocess
import sys

import numpy as np
import pytest

from persona.cli import main


def test_demo_smoke(capsys):
    assert main(["demo", "--quiet"]) == 0  # the main job, at its default size
    out = capsys.readouterr().out
    assert "| model | hr@10 | ndcg@10" in out
    for name in ("popular", "trending", "segment-popular", "itemknn", "als", "bpr", "ease"):
        assert f"| {name} |" in out
    rows = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| model")}
    # the synthetic shop rewards personalisation: every collaborative model beats popularity
    for name in ("itemknn", "als", "ease"):
        assert rows[name] > 1.3 * rows["popular"], (name, rows)
    assert "Example recommendations" in out and "score" in out


@pytest.fixture()
def seq_file(tmp_path):
    lines = [f"{u} " + " ".join(str((u * 7 + j * 3) % 25 + 1) for j in range(6)) for u in range(1, 41)]
    p = tmp_path / "tiny.txt"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_train_recommend_evaluate(seq_file, tmp_path, capsys):
    out = tmp_path / "model.persona"
    assert main(["train", str(seq_file), "--model", "popular", "--out", str(out)]) == 0
    assert (out / "manifest.json").exists()
    capsys.readouterr()
    assert main(["recommend", str(out), "1", "2", "-n", "3"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert set(recs) == {"1", "2"} and len(recs["1"]) == 3
    # sequences carry no timestamps, so "trending" must fail cleanly, naming what is missing
    assert main(["evaluate", str(seq_file), "--model", "trending"]) == 2
    assert "timestamps" in capsys.readouterr().err


def test_evaluate_table(seq_file, capsys, tmp_path):
    code = main(["evaluate", str(seq_file), "--model", "popular", "--k", "5", "10", "--json", str(tmp_path / "r.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| popular |" in out and "hr@10" in out
    rows = json.loads((tmp_path / "r.json").read_text())
    assert rows[0]["model"] == "popular" and 0.0 <= rows[0]["hr@10"] <= 1.0


def test_unknown_user_is_a_clean_error(seq_file, tmp_path, capsys):
    out = tmp_path / "model.persona"
    main(["train", str(seq_file), "--out", str(out)])
    assert main(["recommend", str(out), "999999"]) == 2
    assert "UnknownUserError" in capsys.readouterr().err


def test_console_script_entry_point():
    res = subprocess.run([sys.executable, "-m", "persona.cli", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "demo" in res.stdout


def test_info_names_the_backend(capsys):
    from persona.kernels import topk_backend

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"topk_backend: {topk_backend()}" in out and "persona:" in out


# ------------------------------------------------------------------ a shop's own event log (issue 12, point 4)
@pytest.fixture(scope="module")
def shop_csv(tmp_path_factory):
    """A small shop's CSV: string customer ids, SKUs, and its own event name ``add_to_cart``."""
    import persona as ps

    shop = ps.datasets.synthetic_shop(n_users=200, n_items=80, seed=3)
    ev = shop.events.copy()
    ev["event"] = ev["event"].astype(str).replace({"cart": "add_to_cart"})
    ev["user_id"] = "cust-" + ev["user_id"].astype(str)
    p = tmp_path_factory.mktemp("shop") / "shop.csv"
    ev.to_csv(p, index=False)
    return p, int((ev["event"] == "add_to_cart").sum())


def _cols():
    return ["--time-col", "timestamp", "--event-col", "event"]


def test_own_event_name_without_a_weight_is_named_not_dropped(shop_csv, tmp_path, capsys):
    path, n_cart = shop_csv
    assert main(["train", str(path), *_cols(), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "add_to_cart" in err and str(n_cart) in err  # the event name and how many rows have it
    assert not (tmp_path / "m").exists()


def test_weights_keep_own_event_names(shop_csv, tmp_path, capsys):
    path, n_cart = shop_csv
    assert main(["train", str(path), *_cols(), "--weights", "add_to_cart=4", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "unknown event type" not in out and "none dropped" in out
    import pandas as pd

    import persona as ps

    model = ps.load(tmp_path / "m")
    assert model.user_items_.sum() > 0
    # the carts are in: the stored matrix equals the one from_csv builds with the same weights
    inter = ps.Interactions.from_csv(path, user="user_id", item="item_id", time="timestamp", event="event",
                                     weights={"add_to_cart": 4})
    assert abs(float(model.user_items_.sum()) - float(inter.matrix.sum())) < 1e-3
    assert len(pd.read_csv(path)) == len(inter)


def test_lenient_drops_and_reports_with_counts(shop_csv, tmp_path, capsys):
    path, n_cart = shop_csv
    with pytest.warns(UserWarning, match="unknown event type"):
        assert main(["train", str(path), *_cols(), "--lenient", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert f"dropped {n_cart} unknown event type" in out


def test_param_sets_any_hyperparameter_and_names_typos(shop_csv, tmp_path, capsys):
    import persona as ps

    path, _ = shop_csv
    assert main(["train", str(path), *_cols(), "--weights", "add_to_cart=4", "--model", "als",
                 "--param", "factors=8", "--param", "regularization=10", "--param", "random_state=0",
                 "--out", str(tmp_path / "m")]) == 0
    model = ps.load(tmp_path / "m")
    assert model.factors == 8 and model.regularization == 10 and model.item_factors_.shape[1] == 8
    capsys.readouterr()
    assert main(["train", str(path), *_cols(), "--weights", "add_to_cart=4", "--model", "als",
                 "--param", "factor=8", "--out", str(tmp_path / "m2")]) == 2
    assert "did you mean 'factors'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", str(path), "--param", "factors", "--out", str(tmp_path / "m3")])


def test_evaluate_holds_out_new_items_on_event_logs_by_default(shop_csv, tmp_path):
    path, _ = shop_csv
    rows = {}
    for flag in ([], ["--no-new-items"], ["--new-items"]):
        out = tmp_path / "r.json"
        assert main(["evaluate", str(path), *_cols(), "--weights", "add_to_cart=4", "--model", "itemknn",
                     "--k", "10", "--json", str(out), *flag]) == 0
        rows[" ".join(flag) or "default"] = json.loads(out.read_text())[0]["ndcg@10"]
    # on an event log the last event is mostly a repeat that a seen-filtering model cannot rank
    assert rows["default"] == rows["--new-items"]
    assert rows["default"] > 2 * rows["--no-new-items"], rows


def test_recommend_fallback_popular_answers_unknown_users(shop_csv, tmp_path, capsys):
    import persona as ps

    path, _ = shop_csv
    main(["train", str(path), *_cols(), "--weights", "add_to_cart=4", "--model", "als", "--out", str(tmp_path / "m")])
    capsys.readouterr()
    known = str(ps.load(tmp_path / "m").user_map_.ids[0])
    assert main(["recommend", str(tmp_path / "m"), "nobody", known, "-n", "3"]) == 2  # no fallback: the batch fails
    assert "UnknownUserError" in capsys.readouterr().err
    assert main(["recommend", str(tmp_path / "m"), "nobody", known, "-n", "3", "--fallback", "popular"]) == 0
    recs = json.loads(capsys.readouterr().out)
    inter = ps.Interactions.from_csv(path, user="user_id", item="item_id", time="timestamp", event="event",
                                     weights={"add_to_cart": 4})
    pop = ps.MostPopular().fit(inter)  # the same data the model was trained on
    top3 = set(inter.item_ids[np.argsort(-pop.popularity_, kind="stable")[:3]])
    assert {r["item"] for r in recs["nobody"]} == top3
    assert len(recs[known]) == 3
