"""plant / list / status / teardown on the local provider, end to end, with real nats-servers."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from morpheus.testing.cli import morpheus
from morpheus.testing.nats import healthz_ok, peers_seen, processes_mentioning, wait_until


def forest_ids(state_dir: Path) -> list[str]:
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        return [row[0] for row in db.execute("SELECT id FROM forests")]


def assert_nothing_left(state_dir: Path) -> None:
    assert processes_mentioning(str(state_dir)) == []
    assert not (state_dir / "local").exists() or list((state_dir / "local").iterdir()) == []
    assert list(state_dir.glob("locks/*.lock")) == []
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        for table in ("forests", "nodes", "events", "route_credentials"):
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


def test_medium_forest_clusters_and_teardown_leaves_nothing(state_dir: Path) -> None:
    planted = morpheus("plant", "local", "medium", "-o", "json")
    assert planted.returncode == 0, planted.stderr
    result = json.loads(planted.stdout)
    forest_id = result["forest"]["id"]
    urls = [node["monitor_url"] for node in result["nodes"]]
    assert len(urls) == 3
    names = {node["id"] for node in result["nodes"]}
    for url in urls:
        assert healthz_ok(url)
        own = next(n["id"] for n in result["nodes"] if n["monitor_url"] == url)
        assert peers_seen(url) == names - {own}

    listed = json.loads(morpheus("list", "-o", "json").stdout)
    assert [(f["id"], f["node_count"], f["status"]) for f in listed] == [(forest_id, 3, "active")]

    status = json.loads(morpheus("status", forest_id, "-o", "json").stdout)
    assert [n["platform_state"] for n in status["nodes"]] == ["running"] * 3
    assert [n["nats"]["peers"] for n in status["nodes"]] == [2, 2, 2]
    assert all(n["nats"]["healthy"] for n in status["nodes"])
    assert [e["kind"] for e in status["events"]] == ["planting", "planted"]
    assert any("NimsForest: not configured" in note for note in status["notes"])

    table = morpheus("status", forest_id)
    assert table.returncode == 0
    assert "healthy" in table.stdout and "2/2" in table.stdout

    gone = morpheus("teardown", forest_id, "--yes")
    assert gone.returncode == 0, gone.stderr
    assert "nothing left behind" in gone.stdout
    assert_nothing_left(state_dir)
    assert morpheus("status", forest_id).returncode == 1


def test_small_forest_runs_standalone(state_dir: Path) -> None:
    planted = morpheus("plant", "local", "small", "-o", "json")
    assert planted.returncode == 0, planted.stderr
    (node,) = json.loads(planted.stdout)["nodes"]
    assert healthz_ok(node["monitor_url"])
    conf = next((state_dir / "local").glob("*/*/nats.conf")).read_text()
    assert "cluster {" not in conf
    assert os.stat(next((state_dir / "local").glob("*/*/nats.conf"))).st_mode & 0o077 == 0
    assert morpheus("teardown", json.loads(planted.stdout)["forest"]["id"], "--yes").returncode == 0
    assert_nothing_left(state_dir)


def test_teardown_asks_for_the_id(state_dir: Path) -> None:
    planted = json.loads(morpheus("plant", "local", "--nodes", "1", "-o", "json").stdout)
    forest_id = planted["forest"]["id"]
    refused = morpheus("teardown", forest_id)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert forest_ids(state_dir) == [forest_id]
    assert morpheus("teardown", forest_id, "-y").returncode == 0


@pytest.mark.parametrize(
    "kill_after",
    ["planned", "creating", "running", "NATS starting", "sees"],
)
def test_sigkill_mid_plant_then_teardown_leaves_nothing(state_dir: Path, kill_after: str) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "morpheus", "plant", "local", "medium"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as plant:
        assert plant.stderr is not None
        deadline = time.monotonic() + 60
        for line in plant.stderr:
            if kill_after in line or time.monotonic() > deadline:
                break
        plant.send_signal(signal.SIGKILL)
        plant.wait(timeout=10)
    (forest_id,) = wait_until(lambda: forest_ids(state_dir), 10, "the forest row")
    gone = morpheus("teardown", forest_id, "--yes")
    assert gone.returncode == 0, gone.stderr
    assert_nothing_left(state_dir)
