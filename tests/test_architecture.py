"""The rooms of docs/architecture.md, enforced: a room imports only the rooms below it.

Every ``import`` of a persona module is read from the source (module level, inside functions and
under ``TYPE_CHECKING`` alike), so a new upward import fails here with the file and line that made
it, instead of surfacing later as an import cycle or a heavy ``import persona``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import persona

SRC = Path(persona.__file__).parent

# Shared base modules every room may use.
BASE = {"errors", "_validate", "typing", "_time", "_warn", "_version", "_core", "_lazy"}

# room -> the rooms it may import (besides BASE). Keep in step with the table in docs/architecture.md.
MAY_IMPORT = {
    "data": set(),
    "kernels": set(),
    "io": set(),
    "onnx": {"io"},
    "retrieval": {"io", "kernels"},
    "split": {"data"},
    "models": {"retrieval", "onnx", "io", "kernels", "data", "split"},
    "evaluation": {"models", "data", "split"},
    "tuning": {"evaluation", "models", "data", "split"},
    "store": {"data"},
    "analytics": {"store", "models", "evaluation", "data", "kernels", "io", "split"},
    "marketing": {"analytics", "store", "models", "evaluation", "data", "kernels", "io", "split"},
    "ope": {"marketing", "models", "data", "kernels"},
    "datasets": {"data", "marketing"},
    "ranking": {"models", "data", "kernels", "io", "split", "evaluation", "retrieval", "onnx"},
    "serving": {"analytics", "store", "models", "io", "retrieval", "onnx", "kernels", "data"},
    "pipeline": {"serving", "analytics", "store", "models", "io", "retrieval", "onnx", "kernels", "data", "split",
                 "evaluation"},
    "contrib": {"serving", "analytics", "store", "models", "io", "retrieval", "kernels", "data", "evaluation", "split"},
    "spark": {"models", "data", "io", "retrieval", "kernels", "split", "evaluation", "marketing", "analytics", "store"},
}
# the base modules themselves: typing names Interactions for annotations only
MAY_IMPORT.update({name: set() for name in BASE})
MAY_IMPORT["typing"] = {"data"}
# rooms at the very top import anything
TOP = {"__init__", "cli"}

# Deliberate exceptions, each with its reason.
EXCEPTIONS = {
    # the deprecated ``persona.io.load`` alias forwards to the loader's new home on first use
    ("io/__init__.py", "models"),
}


def _room(parts: list[str]) -> str:
    return parts[0].removesuffix(".py") if parts else "__init__"


def _imports(src: Path = SRC):
    """(file relative to the package, its room, the persona room it imports, line) for every import."""
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        room = _room(list(rel.parts))
        package = ["persona", *rel.parts[:-1]]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    target = base + (node.module.split(".") if node.module else [])
                else:
                    target = (node.module or "").split(".")
                if target[0] != "persona":
                    continue
                # "from . import x" / "from persona import x": x is the room
                targets = [target[1:] or [a.name] for a in node.names] if len(target) == 1 else [target[1:]]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "persona"]
            for t in targets:
                if t:
                    yield rel.as_posix(), room, t[0], node.lineno


def test_every_room_imports_only_the_rooms_below_it():
    bad = []
    seen = 0
    for rel, room, target, line in _imports():
        seen += 1
        if target == room or room in TOP or (rel, target) in EXCEPTIONS:
            continue
        if room not in MAY_IMPORT:
            bad.append(f"{rel}: room {room!r} is not in MAY_IMPORT; add it (and to docs/architecture.md)")
        elif target not in BASE and target not in MAY_IMPORT[room]:
            bad.append(f"{rel}:{line}: {room} imports {target}")
    assert seen > 100  # the walk really read the package
    assert not bad, "upward imports (see docs/architecture.md):\n" + "\n".join(bad)


def test_the_check_catches_an_upward_import(tmp_path):
    # the checker itself can fail: a data module that imports serving is reported
    fake = tmp_path / "persona"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "bad.py").write_text("from ..serving import RecommenderService\n")
    found = [(rel, room, target) for rel, room, target, _ in _imports(fake)]
    assert found == [("data/bad.py", "data", "serving")]
    assert "serving" not in MAY_IMPORT["data"]
