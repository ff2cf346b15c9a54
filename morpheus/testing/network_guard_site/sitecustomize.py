"""Installs the test network guard (``morpheus/testing/network_guard.py``) in every Python
program a test starts: the pytest plugin puts this directory on ``PYTHONPATH``.

It costs a program nothing until it imports ``socket``: the guard is loaded then, by file path
(importing the ``morpheus`` package here would change what a program imports, see
tests/test_startup.py, and some of these programs run a Python that does not have it).
"""

import os
import sys
from importlib.machinery import PathFinder, SourceFileLoader

_GUARD = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "network_guard.py"
)


def _install_guard() -> None:
    loader = SourceFileLoader("_morpheus_network_guard", _GUARD)
    module = type(sys)(loader.name)
    module.__file__ = _GUARD
    sys.modules[loader.name] = module
    loader.exec_module(module)
    module.install()


class _GuardedLoader:
    """Runs ``socket`` as its own loader would, then puts the guard on it."""

    def __init__(self, loader: object) -> None:
        self._loader = loader

    def create_module(self, spec: object) -> object:
        return self._loader.create_module(spec)  # type: ignore[attr-defined]

    def exec_module(self, module: object) -> None:
        self._loader.exec_module(module)  # type: ignore[attr-defined]
        _install_guard()


class _WhenSocketIsImported:
    """A meta path finder that answers only for ``socket``, once."""

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> object:
        if name != "socket":
            return None
        sys.meta_path.remove(cls)  # type: ignore[arg-type]
        spec = PathFinder.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _GuardedLoader(spec.loader)  # type: ignore[assignment]
        return spec


if os.environ.get("MORPHEUS_NETWORK_GUARD"):
    if "socket" in sys.modules:
        _install_guard()
    else:
        sys.meta_path.insert(0, _WhenSocketIsImported)  # type: ignore[arg-type]
