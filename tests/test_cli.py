"""The command line as a user meets it: help, version, errors and exit codes.

Output and exit-code cases run the CLI in this process (``invoke``); the real program
(``morpheus``) starts where the entry point itself is the point (version, help, no arguments,
the completion fast path) or where a forest of real nats-servers is planted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from morpheus import __version__
from morpheus.cli.app import complete_forest_id
from morpheus.testing.cli import cli_environment, invoke, morpheus


def test_version() -> None:
    """A real process: the installed entry point starts and answers."""
    result = morpheus("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"morpheus {__version__}")


def test_help_lists_the_commands() -> None:
    result = morpheus("--help")
    assert result.returncode == 0
    for command in ("plant", "list", "status", "teardown", "providers", "config"):
        assert command in result.stdout


def test_no_arguments_shows_help_with_usage_exit_code() -> None:
    result = morpheus()
    assert result.returncode == 2
    assert "Usage" in result.stdout + result.stderr


def test_providers_lists_local_with_its_distribution() -> None:
    result = invoke("providers", "-o", "json")
    assert result.returncode == 0
    local = next(p for p in json.loads(result.stdout) if p["name"] == "local")
    assert local["distribution"] == "morpheus-local"
    assert local["target"] == "morpheus_local.provider:LocalProvider"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["plant", "local", "meduim"], 2, "unknown size 'meduim'; did you mean 'medium'?"),
        (["plant", "lcoal", "small"], 2, "unknown target 'lcoal'; did you mean 'local'?"),
        (["plant", "local"], 2, "give a size (small, medium, large) or --nodes N"),
        (
            ["plant", "local", "small", "--nodes", "3"],
            2,
            "size 'small' means 1 nodes but --nodes is 3",
        ),
        (["plant", "local", "--nodes", "0"], 2, "Invalid value"),
        (["status", "forest-404"], 1, "no forest 'forest-404' in the registry"),
        (["teardown", "forest-404", "--yes"], 1, "no forest 'forest-404' in the registry"),
        (["plant", "nimbus", "small"], 2, "unknown target 'nimbus'"),
        (["list", "-o", "xml"], 2, "Invalid value"),
    ],
)
def test_bad_input_is_one_line_with_its_exit_code(args: list[str], code: int, message: str) -> None:
    result = invoke(*args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if code == 1:
        assert len(result.stderr.strip().splitlines()) == 1


def test_list_when_empty() -> None:
    result = invoke("list")
    assert result.returncode == 0
    assert "morpheus plant local small" in result.stdout
    assert json.loads(invoke("list", "-o", "json").stdout) == []


def test_unknown_provider_lists_installed(tmp_path: object) -> None:
    os.environ["MORPHEUS_INFRASTRUCTURE__PROVIDER"] = "nimbus"
    try:
        result = invoke("plant", "cloud", "small")
    finally:
        del os.environ["MORPHEUS_INFRASTRUCTURE__PROVIDER"]
    assert result.returncode == 1
    assert "no provider named 'nimbus'" in result.stderr
    assert "installed: " in result.stderr and "local" in result.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_fast_path_answers_as_typer_does(shell: str) -> None:
    planted = json.loads(morpheus("plant", "local", "small", "-o", "json").stdout)
    forest_id = planted["forest"]["id"]
    assert complete_forest_id("forest-") == [forest_id]
    assert complete_forest_id("nope") == []
    for words in ("morpheus status fo", "morpheus teardown ", "morpheus grow nope"):
        env = dict(
            os.environ,
            _MORPHEUS_COMPLETE=f"complete_{shell}",
            COMP_WORDS=words,
            COMP_CWORD="2",
            _TYPER_COMPLETE_ARGS=words,
        )
        fast = subprocess.run(
            [sys.executable, "-m", "morpheus"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        typer_answer = subprocess.run(
            [sys.executable, "-c", "from morpheus.cli.app import main; main()"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert fast.stdout.strip() == typer_answer.stdout.strip(), words
        assert (forest_id in fast.stdout) == ("nope" not in words)
    assert morpheus("teardown", forest_id, "--yes").returncode == 0


def test_check_passes_on_a_local_only_machine() -> None:
    result = invoke("check", "-o", "json")
    assert result.returncode == 0, result.stdout
    checks = json.loads(result.stdout)
    assert [c["name"] for c in checks] == [
        "config", "state", "registry", "nats-server", "hetzner token", "hetzner SSH key",
        "hetzner SSH port", "ipv6",
    ]  # fmt: skip
    # Every check is shown; the cloud's, failing here (no token, no key), are not needed.
    assert [c["needed"] for c in checks] == [True] * 4 + [False] * 4
    assert all(c["ok"] for c in checks[:4]) and not checks[4]["ok"]
    assert all("not needed for local forests" in c["detail"] for c in checks[4:])
    table = invoke("check")
    assert table.returncode == 0
    assert "- hetzner token" in table.stdout and "fix:" not in table.stdout


def test_check_fails_with_a_fix_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORPHEUS_NATS_SERVER", "/nonexistent/nats-server")
    result = invoke("check")
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if "nats-server" in line)
    assert line.startswith("✗") and "fix:" in line


def test_check_reports_a_broken_config(tmp_path: object) -> None:
    import pathlib

    pathlib.Path("config.yaml").write_text("growth:\n  max_nodes: lots\n")
    result = invoke("check")
    assert result.returncode == 1
    assert "growth.max_nodes" in result.stdout


@pytest.mark.parametrize("command", [["list"], ["providers"], ["check"], ["config", "check"]])
def test_yaml_output_has_the_json_shape(command: list[str]) -> None:
    import yaml

    as_json = json.loads(invoke(*command, "-o", "json").stdout)
    as_yaml = yaml.safe_load(invoke(*command, "-o", "yaml").stdout)
    assert as_yaml == as_json


def test_teardown_dry_run_deletes_nothing() -> None:
    forest_id = json.loads(morpheus("plant", "local", "small", "-o", "json").stdout)["forest"]["id"]
    preview = morpheus("teardown", forest_id, "--dry-run")
    assert preview.returncode == 0
    assert f"{forest_id}-node-1" in preview.stdout
    status = json.loads(morpheus("status", forest_id, "-o", "json").stdout)
    assert status["nodes"][0]["nats"]["healthy"] is True
    assert morpheus("teardown", forest_id, "--yes").returncode == 0


def test_no_color_and_pipes_get_no_escape_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    for args in (["check"], ["status", "forest-404"], ["plant", "local", "tiny"]):
        result = invoke(*args)
        assert "\x1b[" not in result.stdout + result.stderr


def test_brackets_in_messages_are_shown_not_parsed_as_markup() -> None:
    result = invoke("status", "forest-[2001:db8::1]")
    assert result.returncode == 1
    assert "'forest-[2001:db8::1]'" in result.stderr


def _record_forest(state_dir: Path) -> str:
    from morpheus.registry import Registry
    from morpheus.testing.registry import new_forest

    with Registry.in_state_dir(state_dir) as registry:
        return new_forest(registry)


def test_forest_may_be_left_out_when_there_is_only_one(state_dir: Path) -> None:
    """``status``, ``grow`` and ``rotate`` resolve an omitted forest as ``grow`` always did;
    ``teardown`` and ``reconcile`` (they delete) still require the id."""
    for command in (["status"], ["grow"], ["rotate"]):
        none = invoke(*command)
        assert none.returncode == 1, command
        assert "there are no forests; plant one with" in none.stderr
        assert len(none.stderr.strip().splitlines()) == 1
    first = _record_forest(state_dir)
    status = invoke("status", "-o", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["forest"]["id"] == first
    assert json.loads(invoke("grow", "-o", "json").stdout)["forest"] == first
    assert first in invoke("rotate").stderr  # it got as far as the forest (no route CA)
    for command in (["teardown", "--yes"], ["reconcile", "--yes"]):
        refused = invoke(*command)
        assert refused.returncode == 2, command
        assert "Missing argument" in refused.stderr
    second = _record_forest(state_dir)
    for command in (["status"], ["grow"], ["rotate"]):
        several = invoke(*command)
        assert several.returncode == 2, command
        assert several.stderr.strip() == f"error: 2 forests; name one of: {first}, {second}"
    assert invoke("status", second).returncode == 0


def test_at_a_terminal_a_left_out_forest_is_asked_for(state_dir: Path) -> None:
    """A real process on a pseudo-terminal: several forests are listed and one is chosen by
    number (an answer that is neither a number nor an id is asked again)."""
    import pty
    import select

    first, second = _record_forest(state_dir), _record_forest(state_dir)
    controller, terminal = pty.openpty()
    shown = b""
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "morpheus", "status"],
            stdin=terminal,
            stdout=terminal,
            stderr=subprocess.PIPE,
            env=cli_environment(),
        ) as run:
            os.write(controller, b"seven\n2\n")  # typed ahead, read line by line
            deadline = time.monotonic() + 120
            while run.poll() is None or select.select([controller], [], [], 0)[0]:
                if time.monotonic() > deadline:
                    run.kill()
                    pytest.fail(f"status still waits at the prompt: {shown!r}")
                if select.select([controller], [], [], 1)[0]:
                    shown += os.read(controller, 65536)
            assert run.stderr is not None
            errors = run.stderr.read().decode()
    finally:
        os.close(controller)
        os.close(terminal)
    assert run.returncode == 0, errors
    text = shown.decode()
    assert f"1) {first}" in text and f"2) {second}" in text
    assert text.count("Which forest (1-2)") == 2
    assert f"Forest: {second}" in text
