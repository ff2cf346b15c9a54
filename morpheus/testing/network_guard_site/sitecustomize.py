"""Installs the test network guard (``morpheus/testing/network_guard.py``) at the start of
every Python process a test starts: the pytest plugin puts this directory on ``PYTHONPATH``.

The guard is loaded by file path, not as ``morpheus.testing.network_guard``: importing the
``morpheus`` package here would change what a process imports (tests/test_startup.py), and
some of these processes run a Python that does not have it.
"""

import importlib.util
import os
import sys


def _install() -> None:
    if not os.environ.get("MORPHEUS_NETWORK_GUARD"):
        return
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "network_guard.py"
    )
    spec = importlib.util.spec_from_file_location("_morpheus_network_guard", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.install()


_install()
