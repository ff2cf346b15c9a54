"""The example provider passes the contract every Morpheus provider passes, and a little more."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from morpheus_example.provider import ExampleProvider, ExampleSettings

from morpheus.errors import ConfigError
from morpheus.provider import load_provider_class
from morpheus.settings import Settings
from morpheus.testing.contract import ContractForest, ProviderContract


class TestExampleContract(ProviderContract):
    """Runs every test of ``ProviderContract`` against real nats-server processes."""

    @pytest.fixture
    def provider(self, tmp_path: Path) -> ExampleProvider:
        return ExampleProvider(ExampleSettings(), tmp_path / "example")


def test_installed_under_its_entry_point() -> None:
    assert load_provider_class("example") is ExampleProvider


def test_settings_come_from_its_config_table(tmp_path: Path) -> None:
    settings = Settings(providers={"example": {"jetstream_max_memory": "32M"}})
    provider = ExampleProvider.from_settings(settings, tmp_path)
    assert provider.settings.jetstream_max_memory == "32M"
    assert provider.root == tmp_path / "example"


def test_unknown_settings_key_is_refused(tmp_path: Path) -> None:
    settings = Settings(providers={"example": {"hots": "127.0.0.1"}})
    with pytest.raises(ConfigError, match=r"providers\.example\.hots: Extra inputs"):
        ExampleProvider.from_settings(settings, tmp_path)


def test_a_node_killed_behind_our_back_is_listed_stopped(tmp_path: Path) -> None:
    provider = ExampleProvider(ExampleSettings(), tmp_path / "example")
    forest = ContractForest(provider, Settings())
    try:
        (handle,) = forest.plant(1)
        provider.wait_running(handle, time.monotonic() + 30)
        node_dir = provider.root / handle.node_id
        provider._stop(node_dir)
        assert [h.state for h in provider.list_nodes(forest.id)] == ["stopped"]
    finally:
        forest.cleanup()
    assert provider.inventory.read() == {}
