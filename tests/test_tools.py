"""The one place tests ask for system tools: skip locally naming the helper, fail in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from morpheus.testing import tools

REPO = Path(__file__).resolve().parents[1]


def test_a_missing_tool_skips_naming_the_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tools.REQUIRE_VARIABLE, raising=False)
    with pytest.raises(pytest.skip.Exception, match="run scripts/test-tools to install it"):
        tools.require_tool("no-such-tool-anywhere")


def test_a_missing_tool_fails_where_tools_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tools.REQUIRE_VARIABLE, "1")
    with pytest.raises(pytest.fail.Exception, match="MORPHEUS_REQUIRE_TOOLS is set"):
        tools.require_tool("no-such-tool-anywhere")
    monkeypatch.setenv(tools.CACHE_VARIABLE, "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match="cloud-init is not unpacked"):
        tools.cloud_init()


def test_no_postgresql_server_skips_naming_the_helper_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from morpheus.testing import postgres

    monkeypatch.setattr(postgres, "server_binaries", lambda: None)
    monkeypatch.delenv(tools.REQUIRE_VARIABLE, raising=False)
    with pytest.raises(
        pytest.skip.Exception,
        match=r"initdb, postgres\) is not installed .* run "
        "scripts/test-tools",
    ):
        postgres.start_postgres()
    monkeypatch.setenv(tools.REQUIRE_VARIABLE, "1")
    with pytest.raises(pytest.fail.Exception, match="MORPHEUS_REQUIRE_TOOLS is set"):
        postgres.start_postgres()


def test_the_postgresql_binaries_are_found_where_debian_puts_them() -> None:
    from morpheus.testing import postgres

    found = postgres.server_binaries()
    if found is None:
        tools.missing("PostgreSQL (initdb, postgres) is not installed")
    assert (found / "initdb").is_file() and (found / "postgres").is_file()


def test_the_run_variables_survive_test_isolation(tmp_path: Path) -> None:
    """CI's MORPHEUS_REQUIRE_TOOLS reaches each test; operator MORPHEUS_ variables do not."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import os\n"
        "def test_environment():\n"
        "    assert os.environ['MORPHEUS_REQUIRE_TOOLS'] == '1'\n"
        "    assert os.environ['MORPHEUS_TOOLS_CACHE'] == '/cache'\n"
        "    assert 'MORPHEUS_CONFIG' not in os.environ\n"
    )
    env = {
        **os.environ,
        "MORPHEUS_REQUIRE_TOOLS": "1",
        "MORPHEUS_TOOLS_CACHE": "/cache",
        "MORPHEUS_CONFIG": "/elsewhere.yaml",
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "morpheus.testing.fixtures", str(probe)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_ci_installs_the_tools_and_requires_them() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/test-tools\n" in ci
    assert "export MORPHEUS_REQUIRE_TOOLS=1" in ci
    assert ci.index("export MORPHEUS_REQUIRE_TOOLS=1") < ci.index("uv run pytest")


def test_the_helper_is_valid_shell() -> None:
    shellcheck = tools.require_tool("shellcheck")
    checked = subprocess.run(
        [shellcheck, str(REPO / "scripts" / "test-tools")], capture_output=True, text=True
    )
    assert (checked.returncode, checked.stdout) == (0, "")
