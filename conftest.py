import os
import re

import pytest

pytest_plugins = ["morpheus.testing.fixtures"]

#: Workers for `-n auto` (pyproject's addopts): most tests wait on real processes and servers,
#: so four keep this 2-core machine busy.
WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Four workers; one process for runs that boot virtual machines (`-m vm`), which share
    one VM host; PYTEST_XDIST_AUTO_NUM_WORKERS overrides both."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    markexpr = str(config.getoption("markexpr", "") or "")
    if re.search(r"(?<!not )\bvm\b", markexpr):
        return 0
    return WORKERS
