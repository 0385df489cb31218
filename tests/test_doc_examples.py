"""Every ```python example in README.md and docs/*.md runs as written.

The blocks of one file run in order in one namespace (a later block may use what an earlier one
defined), inside a fresh temporary working directory, so examples that write files leave nothing
behind. Blocks fenced as anything else (```bash, a plain ```) are not run.
"""

from __future__ import annotations

import os
import re
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_PYTHON = {"python", "py", "python3"}


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python fenced blocks of a Markdown text: (line number of the opening fence, code)."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        words = m["info"].strip().split()
        lang = words[0].lower() if words else ""
        start = i
        body = []
        i += 1
        while i < len(lines):
            close = _FENCE.match(lines[i])
            if close and close["fence"][0] == fence[0] and len(close["fence"]) >= len(fence) and not close["info"].strip():
                break
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1  # past the closing fence (or the end of an unclosed block)
        if lang in _PYTHON:
            blocks.append((start + 1, "\n".join(body) + "\n"))
    return blocks


def test_python_blocks_are_found_and_others_skipped():
    text = "intro\n```python\nx = 1\n```\n```bash\nrm -rf /\n```\n```\nplain\n```\n  ```py\n  y = 2\n  ```\n"
    assert python_blocks(text) == [(2, "x = 1\n"), (11, "y = 2\n")]


def test_the_docs_have_examples():
    names = {p.name for p in DOC_FILES}
    assert "README.md" in names and len(names) > 1, f"documentation files not found under {ROOT}"
    assert any(python_blocks(p.read_text(encoding="utf-8")) for p in DOC_FILES)


# pages with runnable examples; pages without any (docs/index.md) have nothing to execute
EXAMPLE_FILES = [p for p in DOC_FILES if python_blocks(p.read_text(encoding="utf-8"))]


def test_the_main_pages_have_examples():
    names = {p.relative_to(ROOT).as_posix() for p in EXAMPLE_FILES}
    assert {"README.md", "docs/data.md", "docs/evaluation.md", "docs/models.md", "docs/kernels.md"} <= names


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.relative_to(ROOT).as_posix() for p in EXAMPLE_FILES])
def test_doc_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = path.relative_to(ROOT).as_posix()
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    namespace = {"__name__": "__doc_example__"}
    environ = dict(os.environ)  # examples may set e.g. PERSONA_DATA; other tests must not see it
    try:
        for number, (line, code) in enumerate(blocks, start=1):
            where = f"{name}, python block {number} of {len(blocks)} (line {line})"
            failure = None
            try:
                exec(compile(code, f"<{name} block {number}>", "exec"), namespace)
            except Exception as exc:  # report any failure of the example, then stop
                tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                failure = f"{where} failed: {type(exc).__name__}: {exc}\n\n{code}\n{tb}"
            if failure is not None:
                pytest.fail(failure, pytrace=False)
    finally:
        os.environ.clear()
        os.environ.update(environ)
