"""plant, grow --auto and teardown at once, from separate processes, on the same and on
different forests: the registry stays consistent with what runs, and no node is made twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from morpheus.testing.cli import cli_environment, morpheus
from morpheus.testing.nats import processes_mentioning


@pytest.fixture(autouse=True)
def small_local_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORPHEUS_PROVIDERS__LOCAL__NODE_MEMORY", "256M")


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "morpheus", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_environment(),
    )


def test_mixed_operations_keep_the_registry_true(state_dir: Path) -> None:
    growing = json.loads(morpheus("plant", "local", "medium", "-o", "json").stdout)["forest"]["id"]
    doomed = json.loads(morpheus("plant", "local", "small", "-o", "json").stdout)["forest"]["id"]
    commands = [
        start("plant", "local", "small"),
        start("plant", "local", "medium"),
        # A long --timeout: a slow answer on a loaded machine is not an unreachable node.
        start("grow", growing, "--auto", "--threshold", "3", "--timeout", "30"),
        start("grow", growing, "--auto", "--threshold", "3", "--timeout", "30"),
        start("teardown", doomed, "--yes"),
        start("teardown", doomed, "--yes"),
    ]
    codes = []
    for command in commands:
        _, err = command.communicate(timeout=300)
        codes.append((command.returncode, err.strip().splitlines()[-1:] if err else []))
    assert [c for c, _ in codes[:2]] == [0, 0], codes
    assert sorted(c for c, _ in codes[2:4]) == [10, 11], codes  # one grows, one sees cooldown
    # Both teardowns end well: one deletes, the other waits for the lock, then finds no forest.
    assert sorted(c for c, _ in codes[4:]) == [0, 1], codes

    forests = json.loads(morpheus("list", "-o", "json").stdout)
    assert doomed not in {f["id"] for f in forests}
    assert len(forests) == 3
    for forest in forests:
        status = json.loads(morpheus("status", forest["id"], "-o", "json").stdout)
        nodes = status["nodes"]
        names = [n["name"] for n in nodes]
        assert len(names) == len(set(names))
        assert all(n["status"] == "active" and n["platform_state"] == "running" for n in nodes)
        assert all(n["nats"]["peers"] == len(nodes) - 1 for n in nodes)
        forest_dir = state_dir / "local" / forest["id"]
        assert len(list(forest_dir.iterdir())) == len(nodes)
        running = processes_mentioning(f"{forest_dir}/")
        assert len(running) == len(nodes), (forest["id"], running)
    assert [len(json.loads(morpheus("status", growing, "-o", "json").stdout)["nodes"])] == [4]
    for forest in forests:
        assert morpheus("teardown", forest["id"], "--yes").returncode == 0
    assert processes_mentioning(str(state_dir)) == []
    assert os.listdir(state_dir / "local") == [] if (state_dir / "local").exists() else True
