"""The local provider: the shared contract, plus what only local nodes do."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import time
from pathlib import Path

import pytest
from morpheus_local.provider import LocalProvider, LocalSettings

from morpheus.blueprint import NodeBlueprint
from morpheus.errors import ProviderError
from morpheus.models import host_for_url
from morpheus.provider import NodeHandle
from morpheus.settings import Settings
from morpheus.testing.contract import ContractForest, ProviderContract
from morpheus.testing.nats import healthz_ok, processes_mentioning, wait_until


class TestLocalContract(ProviderContract):
    @pytest.fixture
    def provider(self, state_dir: Path) -> LocalProvider:
        return LocalProvider(LocalSettings(), state_dir / "local")


def test_from_settings_validates_its_table(state_dir: Path) -> None:
    settings = Settings(providers={"local": {"jetstream_max_memory": "128M"}})
    provider = LocalProvider.from_settings(settings, state_dir)
    assert provider.settings.jetstream_max_memory == "128M"


def test_nodes_outlive_their_creator_and_delete_stops_them(state_dir: Path) -> None:
    provider = LocalProvider(LocalSettings(), state_dir / "local")
    forest = ContractForest(provider, Settings())
    (handle,) = forest.plant(1)
    provider.wait_running(handle, time.monotonic() + 30)
    url = f"http://{host_for_url(handle.host or '')}:{handle.ports.monitor}"
    wait_until(lambda: healthz_ok(url), 30, "healthz")
    node_dir = state_dir / "local" / forest.id / handle.node_id
    pid = json.loads((node_dir / "nats.process.json").read_text())["pid"]
    # Re-parented away from us (its own session), so Ctrl-C at our terminal does not reach it.
    assert os.getsid(pid) != os.getsid(0)
    assert stat.S_IMODE(os.stat(node_dir / "nats.conf").st_mode) == 0o600
    provider.delete_node(handle)
    assert processes_mentioning(str(node_dir)) == []
    assert not node_dir.exists()


def test_nimsforest_runs_beside_each_node(state_dir: Path, tmp_path: Path) -> None:
    seen = tmp_path / "nats-url"
    app = tmp_path / "nimsforest"
    app.write_text(f'#!/bin/sh\necho "$NATS_URL" > {seen}\nexec sleep 300\n')
    app.chmod(0o755)
    provider = LocalProvider(LocalSettings(nimsforest_binary=app), state_dir / "local")
    assert "runs beside each node" in provider.status_notes()[0]
    forest = ContractForest(provider, Settings())
    (handle,) = forest.plant(1)
    text = wait_until(lambda: seen.exists() and seen.read_text().strip(), 30, "NimsForest start")
    assert text == f"nats://localhost:{handle.ports.client}"
    node_dir = state_dir / "local" / forest.id / handle.node_id
    app_pid = json.loads((node_dir / "nimsforest.process.json").read_text())["pid"]
    assert Path(f"/proc/{app_pid}").exists()
    provider.delete_node(handle)
    wait_until(
        lambda: (
            not Path(f"/proc/{app_pid}").exists()
            or "Z" in Path(f"/proc/{app_pid}/stat").read_text().rsplit(")", 1)[-1][:3]
        ),
        10,
        "NimsForest to stop",
    )


def test_missing_binary_is_explained(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORPHEUS_NATS_SERVER", "/nonexistent/nats-server")
    provider = LocalProvider(LocalSettings(), state_dir / "local")
    with pytest.raises(ProviderError, match="MORPHEUS_NATS_SERVER=/nonexistent/nats-server is not"):
        ContractForest(provider, Settings()).plant(1)


def test_reserved_ports_are_no_one_elses_until_the_node_listens(state_dir: Path) -> None:
    """Between choosing a node's ports and its nats-server binding them, another plant, a
    program asking for any free port or an outgoing connection could take one, and the
    node would exit with "address already in use": every bind of them fails meanwhile."""
    provider = LocalProvider(LocalSettings(), state_dir / "local")
    forest = ContractForest(provider, Settings())
    create = provider.create_node
    taken_by_others: list[int] = []
    refusals: set[int | None] = set()

    def create_after_others_tried(blueprint: NodeBlueprint) -> NodeHandle:
        for handle in [*forest.handles, blueprint]:
            for port in (handle.ports.client, handle.ports.cluster, handle.ports.monitor):
                with socket.socket() as other:
                    try:
                        other.bind(("127.0.0.1", port))
                        taken_by_others.append(port)
                    except OSError as exc:
                        refusals.add(exc.errno)
        return create(blueprint)

    provider.create_node = create_after_others_tried  # type: ignore[method-assign]
    handles = forest.plant(3)
    assert taken_by_others == []
    assert refusals == {errno.EADDRINUSE}
    for handle in handles:
        provider.wait_running(handle, time.monotonic() + 30)
        # Let go once the node listens: nothing held is left for the command's end.
        assert not provider._claims.held(handle.node_id)
    for handle in handles:
        url = f"http://{host_for_url(handle.host or '')}:{handle.ports.monitor}"
        wait_until(lambda url=url: healthz_ok(url), 30, "healthz")
    for handle in handles:
        provider.delete_node(handle)


def test_an_exited_node_is_explained_by_its_fatal_line_or_as_stopped_from_outside(
    tmp_path: Path,
) -> None:
    log = tmp_path / "nats.log"
    log.write_text(
        "[1] [INF] Starting nats-server\n"
        '[1] [FTL] Error listening on port: [::1]:4222, "address already in use"\n'
        "[1] [INF] Server Exiting..\n"
    )
    assert "[FTL] Error listening on port" in LocalProvider._log_tail(tmp_path)
    log.write_text("[1] [INF] Router connection closed: Client Closed\n")
    explained = LocalProvider._log_tail(tmp_path)
    assert explained.startswith("its log ends without an error (stopped by a signal?)")
    assert explained.endswith("Router connection closed: Client Closed")
