"""The local provider: the shared contract, plus what only local nodes do."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from morpheus_local.provider import LocalProvider, LocalSettings

from morpheus.errors import ProviderError
from morpheus.models import host_for_url
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
