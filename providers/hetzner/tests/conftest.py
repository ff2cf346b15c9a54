"""Fixtures for tests that drive the fake Hetzner Cloud API with the real hcloud client."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcloud
import pytest
import yaml
from morpheus_hetzner.provider import HetznerProvider

from morpheus.settings import Settings
from morpheus.testing.cli import NAMESPACE_VARIABLE
from morpheus.testing.netns import Lab, require_lab

# This directory is not a package and pytest runs with --import-mode=importlib, so make
# `fakeapi` importable by name for this conftest and the test modules next to it.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from fakeapi import FakeHetzner  # noqa: E402  (needs the sys.path entry above)
from hetzner_support import (  # noqa: E402
    ADMIN_SOURCE,
    FAST_PROVIDER,
    HcloudClientFactory,
    ProviderFactory,
    SettingsFactory,
    public_key_line,
)

#: Simulated actions take 1/100 of their real duration: a server is running ~0.15 s
#: after its create request.
FAST_TIME_SCALE = 0.01


@pytest.fixture
def fake_hetzner() -> Iterator[FakeHetzner]:
    """A running fake API on 127.0.0.1 (random port) with fast simulated actions."""
    with FakeHetzner(time_scale=FAST_TIME_SCALE) as fake:
        yield fake


@pytest.fixture
def hcloud_client_factory(fake_hetzner: FakeHetzner) -> Iterator[HcloudClientFactory]:
    """Build hcloud clients for the fake: ``factory(token=..., timeout=...)``.

    hcloud retries 429, ``conflict`` and timeouts with a 1-60 s jittered backoff and
    offers no public knob for it; the clients built here keep the retries (so tests see
    the real retry behaviour) but back off 10 ms. Their sessions are closed at teardown.
    """
    clients: list[hcloud.Client] = []

    def build(token: str | None = None, timeout: float = 5.0) -> hcloud.Client:
        client = hcloud.Client(
            token=token if token is not None else fake_hetzner.token,
            api_endpoint=fake_hetzner.endpoint,
            poll_interval=0.01,
            poll_max_retries=1000,
            timeout=timeout,
        )
        client._client._retry_interval_func = hcloud.constant_backoff_function(0.01)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client._client._session.close()


@pytest.fixture
def hcloud_client(hcloud_client_factory: HcloudClientFactory) -> hcloud.Client:
    """An hcloud client pointed at ``fake_hetzner`` with the accepted token."""
    return hcloud_client_factory()


@pytest.fixture
def public_key(isolated_environment: Path) -> Path:
    """~/.ssh/id_ed25519.pub in the test's own home (the provider uploads it when missing)."""
    path = Path(os.environ["HOME"]) / ".ssh" / "id_ed25519.pub"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(public_key_line() + "\n")
    return path


@pytest.fixture
def hetzner_settings(fake_hetzner: FakeHetzner, public_key: Path) -> SettingsFactory:
    """``Settings`` for the fake: ``hetzner_settings(infrastructure=..., **provider_knobs)``."""

    def build(infrastructure: dict[str, Any] | None = None, **knobs: Any) -> Settings:
        return Settings(
            infrastructure={"admin_sources": [ADMIN_SOURCE], **(infrastructure or {})},
            providers={
                "hetzner": {
                    "endpoint": fake_hetzner.endpoint,
                    "token": fake_hetzner.token,
                    **FAST_PROVIDER,
                    **knobs,
                }
            },
        )

    return build


@pytest.fixture
def hetzner_factory(
    hetzner_settings: SettingsFactory, state_dir: Path
) -> Iterator[ProviderFactory]:
    """Build providers for the fake; each is closed after the test."""
    made: list[HetznerProvider] = []

    def build(infrastructure: dict[str, Any] | None = None, **knobs: Any) -> HetznerProvider:
        provider = HetznerProvider.from_settings(
            hetzner_settings(infrastructure, **knobs), state_dir
        )
        made.append(provider)
        return provider

    yield build
    for provider in made:
        provider.close()


@pytest.fixture
def hetzner(hetzner_factory: ProviderFactory) -> HetznerProvider:
    """A provider pointed at ``fake_hetzner`` with fast polls and retries."""
    return hetzner_factory()


@pytest.fixture
def cli_config(
    fake_hetzner: FakeHetzner, public_key: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """config.yaml in the working directory, and the token and endpoint the hcloud way."""
    monkeypatch.setenv("HCLOUD_ENDPOINT", fake_hetzner.endpoint)
    monkeypatch.setenv("HCLOUD_TOKEN", fake_hetzner.token)
    config = {
        "infrastructure": {"admin_sources": [ADMIN_SOURCE]},
        "provisioning": {"readiness_timeout": 1.5, "readiness_interval": 0.2},
        "providers": {"hetzner": FAST_PROVIDER},
    }
    path = Path.cwd() / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def cli_namespace(
    fake_hetzner: FakeHetzner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Lab]:
    """A network namespace of the test's own that its CLIs run in (``morpheus.testing.cli``),
    where the fake answers at its usual endpoint too.

    The fake's servers are only addresses (2001:db8::/32, 198.18.0.0/15): a CLI that dials them
    (a plant's readiness polls, ``status``) would send packets off this machine from the host's
    namespace, and the network guard fails such a test. In here no route leads to them: every
    dial fails at once, as it would against a machine that never answers, and nothing leaves.
    """
    require_lab()
    with Lab(tmp_path / "cli-namespace") as lab:
        fake_hetzner.serve_also_in(lab.call)
        monkeypatch.setenv(NAMESPACE_VARIABLE, lab.operator)
        yield lab
