"""The distribution is published as ``persona-recsys`` (``persona`` on the package index is an unrelated
project); the import name stays ``persona``. Every install instruction must name the distribution
(issue 12, point 2)."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_distribution_name_is_not_the_taken_one():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["name"] == "persona-recsys"
    assert (ROOT / "src" / "persona" / "__init__.py").exists()  # the import name
    assert {"flask", "django", "postgres", "train", "tune", "test"} <= set(meta["optional-dependencies"])


def test_every_install_instruction_names_the_distribution():
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "src" / "persona").rglob("*.py"),
             *(ROOT / "examples").rglob("*.md"), *(ROOT / "examples").rglob("*.py")]
    wrong = []
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            # an extra of the bare name (persona[flask]) or `pip install persona` installs the unrelated project
            if re.search(r"(?<![\w-])persona\[", line) or re.search(r"pip install ['\"]?persona(?![\w-])", line):
                wrong.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not wrong, "install instructions must name persona-recsys:\n" + "\n".join(wrong)
