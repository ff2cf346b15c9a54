"""What `grow` shows and how it exits, against simulated monitoring ports on loopback.

The nodes are registry rows whose monitoring port is one ``LoopbackMonitor``; the program is
the real `morpheus` in a subprocess, at a real pseudo-terminal where a question is asked.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from morpheus.registry import Registry
from morpheus.testing.cli import cli_environment, morpheus
from morpheus.testing.monitors import LoopbackMonitor, loopback_monitor, record_forest


@pytest.fixture
def nodes() -> Iterator[LoopbackMonitor]:
    with loopback_monitor() as monitor:
        yield monitor


def grow_report(forest_id: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = morpheus("grow", forest_id, "--output", "json", *args)
    assert result.stdout, result.stderr
    return result.returncode, dict(json.loads(result.stdout))


def test_node_whose_healthz_never_answers_is_not_called_healthy(
    state_dir: Path, nodes: LoopbackMonitor
) -> None:
    # Issue 16 item 2: the table said "healthy" and JSON "healthy": null.
    nodes.healthz_status = None
    forest_id = record_forest(state_dir, [nodes.port] * 3)

    table = morpheus("grow", forest_id, "--timeout", "0.5")
    assert table.returncode == 0, table.stderr
    rows = [line.strip() for line in table.stdout.splitlines() if "node-" in line]
    assert len(rows) == 3
    for row in rows:
        assert row.endswith("health unknown (/healthz: timed out after 0.5s)"), row

    code, report = grow_report(forest_id, "--timeout", "0.5")
    assert code == 0
    assert [n["verdict"] for n in report["nodes"]] == ["health_unknown"] * 3
    assert [n["healthy"] for n in report["nodes"]] == [None] * 3
    assert (report["aggregate"]["reachable"], report["aggregate"]["healthy"]) == (3, 0)


def test_status_says_health_unknown_too(state_dir: Path, nodes: LoopbackMonitor) -> None:
    nodes.healthz_status = None
    forest_id = record_forest(state_dir, [nodes.port] * 2)
    result = morpheus("status", forest_id)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.strip().startswith("node-")]
    assert len(rows) == 2
    for row in rows:
        assert row[3:5] == ["health", "unknown"], row


def test_verdicts_and_warnings_follow_the_policy(state_dir: Path, nodes: LoopbackMonitor) -> None:
    nodes.varz = {**nodes.varz, "cpu": 190.0, "cores": 2}  # 95 % of the machine
    forest_id = record_forest(state_dir, [nodes.port] * 3)

    code, report = grow_report(forest_id, "--dry-run")
    assert code == 0
    assert [n["verdict"] for n in report["nodes"]] == ["hot"] * 3
    assert report["decision"]["cpu_over_threshold"] is True
    assert report["decision"]["memory_over_threshold"] is False

    table = morpheus("grow", forest_id, "--dry-run")
    assert "⚠️  CPU above 80% threshold" in table.stdout
    assert "Memory above" not in table.stdout
    assert table.stdout.count("warning ⚠️") == 3


def test_impossible_cpu_is_clamped_in_the_report(state_dir: Path, nodes: LoopbackMonitor) -> None:
    nodes.varz = {**nodes.varz, "cpu": 400.0, "cores": 2}
    forest_id = record_forest(state_dir, [nodes.port] * 2)
    _, report = grow_report(forest_id, "--dry-run")
    assert [n["cpu_percent"] for n in report["nodes"]] == [100.0, 100.0]
    assert report["aggregate"]["max_cpu_percent"] == 100.0


def test_zero_cores_is_an_answer(state_dir: Path, nodes: LoopbackMonitor) -> None:
    nodes.varz = {**nodes.varz, "cores": 0}
    forest_id = record_forest(state_dir, [nodes.port] * 2)
    code, report = grow_report(forest_id)
    assert code == 0  # judged on memory, not blocked as unreachable
    assert report["aggregate"]["unreachable"] == 0
    assert report["decision"]["reason"] == "below_threshold"
    assert [n["error"] for n in report["nodes"]] == ["/varz: 0 cores, so CPU is unknown"] * 2


def test_declining_at_the_prompt_exits_0_and_adds_nothing(
    state_dir: Path, nodes: LoopbackMonitor
) -> None:
    # Issue 16 item 3: it said "error: nothing was created" and exited 1; growth.md says 0.
    nodes.varz = {**nodes.varz, "cpu": 190.0, "cores": 2}
    forest_id = record_forest(state_dir, [nodes.port] * 3)
    controller, terminal = pty.openpty()
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "morpheus", "grow", forest_id],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_environment(),
            text=True,
        ) as run:
            os.write(controller, b"n\n")
            out, err = run.communicate(timeout=120)
    finally:
        os.close(controller)
        os.close(terminal)
    assert run.returncode == 0, err
    assert "Not growing; nothing was added." in out
    assert "error" not in err
    with Registry.in_state_dir(state_dir) as registry:
        assert len(registry.nodes(forest_id)) == 3
