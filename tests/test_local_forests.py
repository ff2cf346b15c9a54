"""Local forests on loopback only, on IPv6 too, in any state directory, and a reconcile that
reports a node that cannot start at once, through the real CLI."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import psutil
import pytest

from morpheus.testing.cli import morpheus
from morpheus.testing.nats import healthz_ok, peers_seen, processes_mentioning


def _plant(*args: str) -> dict[str, object]:
    planted = morpheus("plant", "local", *args, "-o", "json")
    assert planted.returncode == 0, planted.stderr
    result: dict[str, object] = json.loads(planted.stdout)
    return result


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _ipv6_loopback(), reason="no ::1 here (CI has it: the loopback)")
def test_a_forest_on_ipv6_loopback_clusters(state_dir: Path) -> None:
    Path("config.yaml").write_text('providers:\n  local:\n    host: "::1"\n')
    result = _plant("medium")
    nodes = result["nodes"]
    assert isinstance(nodes, list)
    names = {node["id"] for node in nodes}
    for node in nodes:
        assert node["monitor_url"].startswith("http://[::1]:")
        assert healthz_ok(node["monitor_url"])
        assert peers_seen(node["monitor_url"]) == names - {node["id"]}
    forest = result["forest"]
    assert isinstance(forest, dict)
    assert morpheus("teardown", forest["id"], "--yes").returncode == 0
    assert processes_mentioning(str(state_dir)) == []


@pytest.mark.parametrize("name", ["state with spaces", "état-forêt", "森 林"])
def test_state_directories_with_spaces_and_any_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    state = tmp_path / name
    monkeypatch.setenv("MORPHEUS_STATE_DIR", str(state))
    checked = morpheus("check")
    assert checked.returncode == 0, checked.stdout
    result = _plant("small")
    forest = result["forest"]
    assert isinstance(forest, dict)
    status = json.loads(morpheus("status", forest["id"], "-o", "json").stdout)
    assert [n["platform_state"] for n in status["nodes"]] == ["running"]
    assert [n["nats"]["healthy"] for n in status["nodes"]] == [True]
    assert morpheus("teardown", forest["id"], "--yes").returncode == 0
    assert processes_mentioning(str(state)) == []


def test_reconcile_reports_a_node_that_exits_at_once(state_dir: Path) -> None:
    """Its client port was taken while it was down: said at once, with nats-server's cause."""
    Path("config.yaml").write_text("provisioning:\n  readiness_timeout: 120\n")
    result = _plant("medium")
    forest = result["forest"]
    nodes = result["nodes"]
    assert isinstance(forest, dict) and isinstance(nodes, list)
    victim = nodes[1]
    conf = str(next(state_dir.glob(f"local/*/{victim['id']}")) / "nats.conf")
    (server,) = [p for p in psutil.process_iter(["cmdline"]) if conf in (p.info["cmdline"] or [])]
    server.kill()
    server.wait(10)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", victim["ports"]["client"]))
        squatter.listen()
        started = time.monotonic()
        reconciled = morpheus("reconcile", forest["id"], "--yes", timeout=40)
        elapsed = time.monotonic() - started
    assert reconciled.returncode == 1, reconciled.stderr
    assert "Traceback" not in reconciled.stderr
    assert f"{victim['id']}: nats-server exited" in reconciled.stderr
    assert "address already in use" in reconciled.stderr
    assert elapsed < 60, elapsed
    assert morpheus("teardown", forest["id"], "--yes").returncode == 0
    assert processes_mentioning(str(state_dir)) == []
