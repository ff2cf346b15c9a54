"""What a short command's process imports: only what that command uses (issue 16).

Each test starts the real program (``python -m morpheus``, through ``runpy`` as ``-m`` does)
and lists ``sys.modules`` as the process exits: imports are a fact about a whole process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from morpheus.testing.cli import cli_environment
from morpheus.testing.monitors import loopback_monitor, record_forest

#: Never needed to print a version or to look at a forest's load as JSON: output for people
#: (rich), the config file's parser with no config file (yaml), the settings' environment
#: source with no MORPHEUS_SECTION__KEY variable (pydantic_settings), what only adding nodes
#: or other commands need (the provider contract and its entry-point discovery, plugins,
#: blueprints, templates, SDKs, PostgreSQL, the registry key's cryptography), other commands'
#: modules.
NEVER_ON_THE_LOOKING_PATH = (
    "rich",
    "yaml",
    "pydantic_settings",
    "jinja2",
    "httpx",
    "hcloud",
    "cryptography",
    "psycopg",
    "morpheus.provider",
    "morpheus.blueprint",
    "morpheus.render",
    "morpheus_local",
    "morpheus_hetzner",
    "morpheus_libvirt",
    "morpheus.cli.plant",
    "morpheus.cli.teardown",
    "morpheus.cli.registry",
)


LIST_MODULES_AT_EXIT = """
import atexit, runpy, sys
listing = sys.argv[1]
loaded = lambda: "\\n".join(name for name, module in sys.modules.items() if module)
atexit.register(lambda: open(listing, "w").write(loaded()))
sys.argv = ["morpheus", *sys.argv[2:]]
runpy.run_module("morpheus", run_name="__main__", alter_sys=True)
"""


def imported(tmp_path: Path, *args: str) -> tuple[set[str], str]:
    """Every module ``morpheus ARGS`` had imported when it exited, and its standard output."""
    listing = tmp_path / "modules.txt"
    run = subprocess.run(
        [sys.executable, "-c", LIST_MODULES_AT_EXIT, str(listing), *args],
        capture_output=True,
        text=True,
        env=cli_environment(),
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    names = set(listing.read_text().split())
    assert "morpheus.cli.app" in names  # the listing is real
    return names, run.stdout


def heavy(names: set[str]) -> list[str]:
    return sorted(name for name in NEVER_ON_THE_LOOKING_PATH if name in names)


def test_version_loads_neither_models_nor_asyncio(tmp_path: Path) -> None:
    names, out = imported(tmp_path, "--version")
    assert out.startswith("morpheus ")
    assert heavy(names) == []
    assert {"pydantic", "asyncio", "sqlite3"} & names == set()


def test_grow_as_json_loads_only_what_looking_needs(tmp_path: Path, state_dir: Path) -> None:
    with loopback_monitor() as monitor:
        forest_id = record_forest(state_dir, [monitor.port] * 3)
        names, out = imported(tmp_path, "grow", forest_id, "--output", "json", "--dry-run")
    assert json.loads(out)["aggregate"]["reachable"] == 3
    assert "morpheus.cli.grow" in names
    assert heavy(names) == []


def test_a_settings_variable_still_loads_its_reader(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard above is not blind: with MORPHEUS_GROWTH__THRESHOLD_CPU set, pydantic-settings
    reads it (and the threshold shows in the output)."""
    monkeypatch.setenv("MORPHEUS_GROWTH__THRESHOLD_CPU", "55")
    with loopback_monitor() as monitor:
        forest_id = record_forest(state_dir, [monitor.port] * 3)
        names, out = imported(tmp_path, "grow", forest_id, "--output", "json", "--dry-run")
    assert json.loads(out)["thresholds"]["cpu"] == 55
    assert heavy(names) == ["pydantic_settings"]
