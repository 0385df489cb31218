"""The command line: demo smoke test, and train -> recommend -> evaluate on a small file."""

import json
import subprocess
import sys

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
    for name in ("itemknn-bm25", "als", "ease"):
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
