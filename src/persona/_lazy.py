"""One helper for packages whose submodules and names load on first use.

``import persona`` stays light (no pandas, no Numba, no marketing code) because the heavy parts of
a namespace are imported only when first touched. A package declares what it offers lazily and
binds the returned pair as its module ``__getattr__`` / ``__dir__`` (PEP 562)::

    __getattr__, __dir__ = lazy_namespace(__name__, globals(), __all__,
                                          modules={"split", "store"},
                                          names={"evaluate": "evaluation"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_namespace(package: str, namespace: dict, public: Iterable[str], *, modules: Iterable[str] = (),
                   names: Mapping[str, str] | None = None) -> tuple[Callable[[str], Any], Callable[[], list]]:
    """The ``__getattr__`` and ``__dir__`` of a package with lazily imported parts.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    namespace : dict
        The package's ``globals()``; a loaded name is cached there so the next access is plain.
    public : iterable of str
        The package's ``__all__`` (what ``dir()`` lists besides the globals).
    modules : iterable of str
        Submodules imported on first access (``persona.split``).
    names : mapping of str to str
        A name to the submodule that defines it (``persona.evaluate`` from ``.evaluation``).
    """
    modules = frozenset(modules)
    names = dict(names or {})

    def __getattr__(name: str) -> Any:
        if name in modules:
            value = importlib.import_module(f".{name}", package)
        elif name in names:
            value = getattr(importlib.import_module(f".{names[name]}", package), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list:
        return sorted(set(namespace) | set(public) | modules | set(names))

    return __getattr__, __dir__
