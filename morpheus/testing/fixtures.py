"""pytest fixtures shared by the core's and the providers' tests (a pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from morpheus.testing.nats import kill_all, processes_mentioning
from morpheus.testing.tools import RUN_VARIABLES

_ISOLATED_VARIABLES = (
    "MORPHEUS_CONFIG",
    "MORPHEUS_NATS_SERVER",
    "HCLOUD_TOKEN",
    "HCLOUD_ENDPOINT",
    "HETZNER_API_TOKEN",
    "NO_COLOR",
)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own state dir, home and cwd, and no operator variables.

    Processes a test started under its state dir are killed afterwards as a safety net;
    tests that promise "nothing left running" assert that themselves first.
    """
    import os

    for name in list(os.environ):
        if name in RUN_VARIABLES:
            continue
        if name.startswith("MORPHEUS_") or name in _ISOLATED_VARIABLES:
            monkeypatch.delenv(name)
    state = tmp_path / "state"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("MORPHEUS_STATE_DIR", str(state))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.chdir(tmp_path)
    yield state
    kill_all(processes_mentioning(str(tmp_path)))


@pytest.fixture
def state_dir(isolated_environment: Path) -> Path:
    return isolated_environment
