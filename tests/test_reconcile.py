"""status / list --refresh record what the platform says; reconcile repairs the forest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
from pathlib import Path
from typing import Any

from morpheus.testing.cli import invoke, morpheus
from morpheus.testing.nats import healthz_ok, peers_seen, processes_mentioning, wait_until


def plant_medium() -> dict[str, Any]:
    result = morpheus("plant", "local", "medium", "-o", "json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def delete_behind_our_back(state_dir: Path, node_id: str) -> None:
    (node_dir,) = state_dir.glob(f"local/*/{node_id}")
    for pid in processes_mentioning(str(node_dir)):
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(node_dir)


def test_a_node_deleted_outside_morpheus_is_noticed_and_reconciled(state_dir: Path) -> None:
    planted = plant_medium()
    forest_id = planted["forest"]["id"]
    lost = planted["nodes"][1]["id"]
    delete_behind_our_back(state_dir, lost)

    refreshed = invoke("list", "--refresh")
    assert "1 node(s) gone from the platform" in refreshed.stderr
    status = json.loads(invoke("status", forest_id, "-o", "json").stdout)
    assert [(n["name"], n["status"], n["platform_state"]) for n in status["nodes"]] == [
        ("node-1", "active", "running"),
        ("node-2", "failed", "missing"),
        ("node-3", "active", "running"),
    ]
    assert [e["kind"] for e in status["events"]][-1] == "node-lost"

    preview = morpheus("reconcile", forest_id, "--dry-run")
    assert "delete node-2 (left failed)" in preview.stdout
    repaired = morpheus("reconcile", forest_id, "--yes")
    assert repaired.returncode == 0, repaired.stderr
    nodes = json.loads(invoke("status", forest_id, "-o", "json").stdout)["nodes"]
    assert [n["name"] for n in nodes] == ["node-1", "node-3"]
    ids = {n["id"] for n in nodes}
    for node in nodes:
        assert healthz_ok(node["monitor_url"])
        assert peers_seen(node["monitor_url"]) == ids - {node["id"]}
        assert lost not in (state_dir / "local" / forest_id / node["id"] / "nats.conf").read_text()
    assert morpheus("teardown", forest_id, "--yes").returncode == 0


def test_a_node_missing_from_the_registry_is_adopted_then_removed(state_dir: Path) -> None:
    planted = plant_medium()
    forest_id = planted["forest"]["id"]
    stray = planted["nodes"][2]["id"]
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        db.execute("DELETE FROM nodes WHERE id = ?", (stray,))
    status = json.loads(invoke("status", forest_id, "-o", "json").stdout)
    assert any("1 found by label" in note for note in status["notes"])
    assert [n["status"] for n in status["nodes"]] == ["active", "active", "failed"]
    assert morpheus("reconcile", forest_id, "--yes").returncode == 0
    # Seen once in about six parallel CI runs: the stray's nats-server still listed just
    # after reconcile returned. A server still shutting down passes this bounded wait; one
    # that was never signalled (an orphan) still fails it.
    wait_until(lambda: not processes_mentioning(stray), 15, f"{stray}'s nats-server to end")
    nodes = json.loads(invoke("status", forest_id, "-o", "json").stdout)["nodes"]
    assert [n["name"] for n in nodes] == ["node-1", "node-2"]
    assert morpheus("teardown", forest_id, "--yes").returncode == 0


def test_reconcile_asks_from_a_script_and_finishes_an_interrupted_teardown(
    state_dir: Path,
) -> None:
    forest_id = plant_medium()["forest"]["id"]
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        db.execute("UPDATE forests SET status = 'deleting' WHERE id = ?", (forest_id,))
    refused = morpheus("reconcile", forest_id)
    assert refused.returncode == 2
    assert "pass --yes" in refused.stderr
    done = morpheus("reconcile", forest_id, "--yes")
    assert done.returncode == 0, done.stderr
    assert "nothing left behind" in done.stdout
    assert json.loads(invoke("list", "-o", "json").stdout) == []
    assert processes_mentioning(str(state_dir)) == []
