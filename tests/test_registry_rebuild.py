"""`morpheus registry rebuild` recovers forests from their node directories, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from morpheus.testing.cli import morpheus
from morpheus.testing.nats import healthz_ok, processes_mentioning


def _plant(size: str) -> dict[str, Any]:
    planted = morpheus("plant", "local", size, "-o", "json")
    assert planted.returncode == 0, planted.stderr
    result: dict[str, Any] = json.loads(planted.stdout)
    return result


def _listed() -> dict[str, int]:
    listed = morpheus("list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    return {forest["id"]: forest["node_count"] for forest in json.loads(listed.stdout)}


def _teardown_all(state_dir: Path, forests: list[str]) -> None:
    for forest in forests:
        removed = morpheus("teardown", forest, "--yes")
        assert removed.returncode == 0, removed.stderr
    assert processes_mentioning(str(state_dir)) == []
    assert list(state_dir.glob("local/*")) == []


def test_a_deleted_registry_is_rebuilt_from_the_node_directories(state_dir: Path) -> None:
    medium, small = _plant("medium"), _plant("small")
    ids = [medium["forest"]["id"], small["forest"]["id"]]
    for file in state_dir.glob("registry.sqlite3*"):
        file.unlink()

    rebuilt = morpheus("registry", "rebuild", "-o", "json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    result = json.loads(rebuilt.stdout)
    assert sorted((r["forest"], r["nodes"], r["running"]) for r in result["recovered"]) == sorted(
        [(ids[0], 3, 3), (ids[1], 1, 1)]
    )
    assert result["kept_aside"] is None
    assert _listed() == {ids[0]: 3, ids[1]: 1}

    status = json.loads(morpheus("status", ids[0], "-o", "json").stdout)
    assert [(n["status"], n["platform_state"]) for n in status["nodes"]] == [
        ("active", "running")
    ] * 3
    assert all(n["nats"]["healthy"] for n in status["nodes"])
    # The documented next step gives every node the recovered forest's new credentials.
    assert morpheus("reconcile", ids[0], "--yes").returncode == 0
    for node in medium["nodes"]:
        assert healthz_ok(node["monitor_url"])
    again = json.loads(morpheus("registry", "rebuild", "-o", "json").stdout)
    assert again["recovered"] == [] and sorted(again["already_recorded"]) == sorted(ids)
    _teardown_all(state_dir, ids)


def test_a_damaged_registry_is_kept_aside_and_its_forests_recovered(state_dir: Path) -> None:
    forest = _plant("small")["forest"]["id"]
    registry = state_dir / "registry.sqlite3"
    for extra in state_dir.glob("registry.sqlite3-*"):
        extra.unlink()
    garbage = b"this is not sqlite" * 100
    registry.write_bytes(garbage)

    rebuilt = morpheus("registry", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"Recovered {forest} from local: 1 node(s), 1 running" in rebuilt.stdout
    (aside,) = state_dir.glob("registry.sqlite3.damaged-*")
    assert aside.read_bytes() == garbage
    assert f"kept as {aside}" in rebuilt.stdout
    assert _listed() == {forest: 1}
    _teardown_all(state_dir, [forest])


def test_a_stopped_node_is_recovered_as_failed_for_reconcile(state_dir: Path) -> None:
    planted = _plant("medium")
    forest = planted["forest"]["id"]
    node_dir = next(state_dir.glob(f"local/{forest}/{forest}-node-2"))
    import psutil

    conf = str(node_dir / "nats.conf")
    (server,) = [p for p in psutil.process_iter(["cmdline"]) if conf in (p.info["cmdline"] or [])]
    server.kill()
    server.wait(10)
    for file in state_dir.glob("registry.sqlite3*"):
        file.unlink()
    rebuilt = json.loads(morpheus("registry", "rebuild", "-o", "json").stdout)
    assert [(r["nodes"], r["running"]) for r in rebuilt["recovered"]] == [(3, 2)]
    status = json.loads(morpheus("status", forest, "-o", "json").stdout)
    assert [n["status"] for n in status["nodes"]] == ["active", "failed", "active"]
    reconciled = morpheus("reconcile", forest, "--yes")
    assert reconciled.returncode == 0, reconciled.stderr
    assert _listed() == {forest: 2}
    _teardown_all(state_dir, [forest])


def test_an_intact_registry_is_left_alone(state_dir: Path) -> None:
    forest = _plant("small")["forest"]["id"]
    before = (state_dir / "registry.sqlite3").stat().st_size
    rebuilt = morpheus("registry", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "No forest to recover" in rebuilt.stdout
    assert not list(state_dir.glob("registry.sqlite3.damaged-*"))
    assert (state_dir / "registry.sqlite3").stat().st_size >= before
    _teardown_all(state_dir, [forest])
