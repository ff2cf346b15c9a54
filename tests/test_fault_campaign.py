"""Fault campaign, local provider: SIGKILL the CLI at every step of plant, grow and teardown,
run the documented recovery, and count what is left behind.  Goal: nothing, every time.

A kill point is "after the k-th progress line the command printed" (k = 0: as soon as it
started); the progress lines follow the registry and provider steps one to one.  Recovery:
a killed `plant` or `teardown` -> `morpheus teardown FOREST --yes`; a killed `grow` ->
`morpheus reconcile FOREST --yes`, after which the forest must be exactly its old nodes, all
healthy and routed to each other.  `bench/reliability.py` runs this file and writes the
figures into docs/reliability.md.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from morpheus.testing.campaign import kill_points, record_outcome
from morpheus.testing.cli import cli_environment, morpheus
from morpheus.testing.nats import healthz_ok, peers_seen, processes_mentioning


@pytest.fixture(autouse=True)
def small_local_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORPHEUS_PROVIDERS__LOCAL__NODE_MEMORY", "256M")


def kill_after(args: list[str], lines: int) -> int:
    """Run ``morpheus ARGS`` and SIGKILL it after ``lines`` progress lines; lines seen."""
    with subprocess.Popen(
        [sys.executable, "-m", "morpheus", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_environment(),
    ) as command:
        assert command.stderr is not None
        seen = 0
        deadline = time.monotonic() + 120
        while seen < lines and time.monotonic() < deadline:
            if not command.stderr.readline():
                break  # the command finished before this kill point
            seen += 1
        command.send_signal(signal.SIGKILL)
        command.wait(timeout=30)
        return seen


def leftovers(state_dir: Path) -> dict[str, int]:
    """Everything a forest can leave behind on this machine, counted."""
    counts = {"processes": len(processes_mentioning(str(state_dir)))}
    counts["node_dirs"] = len(list(state_dir.glob("local/*/*")))
    counts["lock_files"] = len(list(state_dir.glob("locks/*.lock")))
    if not (state_dir / "registry.sqlite3").exists():
        return {**counts, "forests_rows": 0}
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        for table in ("forests", "nodes", "route_credentials", "events"):
            (counts[f"{table}_rows"],) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    return counts


def forests() -> list[str]:
    return [forest["id"] for forest in json.loads(morpheus("list", "-o", "json").stdout)]


def only_forest() -> str:
    (forest_id,) = forests()
    return forest_id


def teardown_recovers(state_dir: Path, operation: str, point: int, seen: int) -> None:
    for forest_id in forests():  # none when killed before the forest was recorded
        recovered = morpheus("teardown", forest_id, "--yes")
        assert recovered.returncode == 0, recovered.stderr
    left = leftovers(state_dir)
    record_outcome(operation, point, seen, left)
    assert set(left.values()) == {0}, left


@pytest.mark.parametrize("point", kill_points(range(16)))
def test_plant_medium_killed(state_dir: Path, point: int) -> None:
    seen = kill_after(["plant", "local", "medium"], point)
    teardown_recovers(state_dir, "plant medium", point, seen)


@pytest.mark.parametrize("point", kill_points(range(6)))
def test_plant_small_killed(state_dir: Path, point: int) -> None:
    seen = kill_after(["plant", "local", "small"], point)
    teardown_recovers(state_dir, "plant small", point, seen)


@pytest.mark.parametrize("point", kill_points(range(8)))
def test_teardown_killed(state_dir: Path, point: int) -> None:
    assert morpheus("plant", "local", "medium").returncode == 0
    seen = kill_after(["teardown", only_forest(), "--yes"], point)
    teardown_recovers(state_dir, "teardown medium", point, seen)


def assert_forest_is(nodes: list[dict[str, Any]], names: list[str]) -> None:
    assert [n["name"] for n in nodes] == names
    ids = {n["id"] for n in nodes}
    for node in nodes:
        assert healthz_ok(node["monitor_url"]), node["name"]
        assert peers_seen(node["monitor_url"]) == ids - {node["id"]}


def grow_recovers(state_dir: Path, operation: str, point: int, seen: int, names: list[str]) -> None:
    forest_id = only_forest()
    repaired = morpheus("reconcile", forest_id, "--yes")
    assert repaired.returncode == 0, repaired.stderr
    status = json.loads(morpheus("status", forest_id, "-o", "json").stdout)
    kept = [n["name"] for n in status["nodes"]]
    # A grow killed after its last step may have finished: then the new nodes stay.
    assert kept in (names, [*names, *[f"node-{i}" for i in range(len(names) + 1, len(kept) + 1)]])
    assert_forest_is(status["nodes"], kept)
    extra = {"stray_node_dirs": len(list(state_dir.glob("local/*/*"))) - len(kept)}
    assert morpheus("teardown", forest_id, "--yes").returncode == 0
    left = {**leftovers(state_dir), **extra}
    record_outcome(operation, point, seen, left)
    assert set(left.values()) == {0}, left


@pytest.mark.parametrize("point", kill_points(range(14)))
def test_grow_one_to_three_killed(state_dir: Path, point: int) -> None:
    assert morpheus("plant", "local", "small").returncode == 0
    seen = kill_after(["grow", "--auto", "--threshold", "3"], point)
    grow_recovers(state_dir, "grow 1->3", point, seen, ["node-1"])


@pytest.mark.parametrize("point", kill_points(range(8)))
def test_grow_three_to_four_killed(state_dir: Path, point: int) -> None:
    assert morpheus("plant", "local", "medium").returncode == 0
    seen = kill_after(["grow", "--auto", "--threshold", "3"], point)
    grow_recovers(state_dir, "grow 3->4", point, seen, ["node-1", "node-2", "node-3"])
