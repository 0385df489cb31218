"""The examples in docstrings run, and say what they print."""

import doctest
import importlib
import pkgutil

import pytest

import persona

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(persona.__path__, prefix="persona.")
    if not m.name.endswith(("_numba_topk", "cli"))
)


@pytest.mark.parametrize("name", ["persona", *MODULES])
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, persona; print('torch' in sys.modules, 'numba' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"], f"import persona pulled in heavy modules (torch, numba, pandas): {out}"
