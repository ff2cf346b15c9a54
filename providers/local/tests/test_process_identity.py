"""A node's process is ours only while it is the program started for that node.

Each test here failed before process records: teardown signalled whatever a stale PID file
named, and every process whose command line mentioned the node directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from morpheus_local import provider as local_provider
from morpheus_local.provider import LocalProvider, LocalSettings

from morpheus.provider import NodeHandle
from morpheus.settings import Settings
from morpheus.testing.contract import ContractForest
from morpheus.testing.nats import wait_until


@pytest.fixture
def provider(state_dir: Path) -> LocalProvider:
    return LocalProvider(LocalSettings(), state_dir / "local")


@pytest.fixture
def forest(provider: LocalProvider) -> Iterator[ContractForest]:
    made = ContractForest(provider, Settings())
    try:
        yield made
    finally:
        made.cleanup()


def _nats_server_of(node_dir: Path) -> psutil.Process:
    """Found the way a test may: its exact ``-c`` argument."""
    conf = str(node_dir / "nats.conf")

    def found() -> psutil.Process | None:
        for candidate in psutil.process_iter(["cmdline"]):
            if conf in (candidate.info["cmdline"] or []):
                return candidate
        return None

    return wait_until(found, 30, "the node's nats-server")


def _alive(process: subprocess.Popen[bytes]) -> bool:
    try:
        return psutil.Process(process.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _log(node_dir: Path) -> str:
    try:
        return (node_dir / "nats.log").read_text()
    except OSError:
        return ""


def _bystander(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _running_node(forest: ContractForest) -> tuple[NodeHandle, Path]:
    (handle,) = forest.plant(1)
    handle = forest.provider.wait_running(handle, time.monotonic() + 30)
    root = forest.provider.root  # type: ignore[attr-defined]
    return handle, root / forest.id / handle.node_id


def test_a_reused_pid_is_not_the_node(forest: ContractForest) -> None:
    """After a crash the recorded PID belongs to someone else: never signalled, node stopped."""
    handle, node_dir = _running_node(forest)
    nats_server = _nats_server_of(node_dir)
    nats_server.kill()
    nats_server.wait(10)
    with _bystander("sleep", "300") as stranger:
        try:
            # The operating system gave the node's old PID to another program.
            (node_dir / "nats.pid").write_text(str(stranger.pid))
            record = node_dir / "nats.process.json"
            if record.exists():
                text = record.read_text().replace(str(nats_server.pid), str(stranger.pid))
                record.write_text(text)
            assert [h.state for h in forest.provider.list_nodes(forest.id)] == ["stopped"]
            forest.provider.delete_node(handle)
            assert _alive(stranger)
        finally:
            stranger.kill()
    assert not node_dir.exists()


def test_tools_looking_at_a_node_survive_its_teardown(forest: ContractForest) -> None:
    handle, node_dir = _running_node(forest)
    nats_server = _nats_server_of(node_dir)
    follower = _bystander("tail", "-f", str(node_dir / "nats.log"))
    editor = _bystander(
        sys.executable, "-c", "import time; time.sleep(300)", str(node_dir / "nats.conf")
    )
    with follower, editor:
        try:
            forest.provider.delete_node(handle)
            assert not nats_server.is_running() or nats_server.status() == "zombie"
            assert _alive(follower) and _alive(editor)
        finally:
            follower.kill()
            editor.kill()


def test_a_process_needing_sigkill_is_not_reported_as_unstoppable(
    forest: ContractForest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL is waited for: a process still dying is not "could not stop"."""
    stubborn = tmp_path / "bin" / "nats-server"
    stubborn.parent.mkdir()
    stubborn.write_text(
        f"#!{sys.executable}\n"
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\n"
        "time.sleep(300)\n"
    )
    stubborn.chmod(0o755)
    monkeypatch.setenv("MORPHEUS_NATS_SERVER", str(stubborn))
    monkeypatch.setattr(local_provider, "_STOP_GRACE_SECONDS", 0.3)
    (handle,) = forest.plant(1)
    node_dir = forest.provider.root / forest.id / handle.node_id  # type: ignore[attr-defined]
    for _ in range(3):
        started = _nats_server_of(node_dir)
        wait_until(lambda: "ignoring" in _log(node_dir), 30, "the handler")
        forest.provider.delete_node(handle)
        assert not started.is_running() or started.status() == "zombie"
        (handle,) = forest.plant(1)


def test_a_start_never_recorded_is_still_found(forest: ContractForest) -> None:
    """Killed between starting nats-server and recording it: teardown finds it by its tag."""
    handle, node_dir = _running_node(forest)
    nats_server = _nats_server_of(node_dir)
    for leftover in node_dir.glob("nats.p*"):
        leftover.unlink()
    forest.provider.delete_node(handle)
    wait_until(lambda: not nats_server.is_running() or nats_server.status() == "zombie", 10)


def test_status_tells_a_dead_node_from_a_live_one(forest: ContractForest) -> None:
    _, node_dir = _running_node(forest)
    assert [h.state for h in forest.provider.list_nodes(forest.id)] == ["running"]
    os.kill(_nats_server_of(node_dir).pid, signal.SIGKILL)
    wait_until(lambda: [h.state for h in forest.provider.list_nodes(forest.id)] == ["stopped"], 10)
