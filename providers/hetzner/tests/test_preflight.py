"""The pre-flight: every check fails before anything is created, and says how to fix it."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from fakeapi import FakeHetzner
from hetzner_support import ProviderFactory, SettingsFactory
from morpheus_hetzner.api import HetznerPreflightError
from morpheus_hetzner.provider import HetznerProvider
from pydantic import SecretStr

from morpheus.errors import PreflightError
from morpheus.provider import ForestPlan
from morpheus.settings import IntegrationSettings

PLAN = ForestPlan(forest_id=None, node_count=3)


@pytest.fixture(autouse=True)
def nothing_is_created(fake_hetzner: FakeHetzner) -> object:
    yield
    assert not [r for r in fake_hetzner.requests if r.method != "GET"]


def failure(provider: HetznerProvider, plan: ForestPlan = PLAN) -> HetznerPreflightError:
    with pytest.raises(HetznerPreflightError) as caught:
        provider.preflight(plan)
    assert isinstance(caught.value, PreflightError)
    return caught.value


def test_a_good_plan_passes_with_three_requests(
    fake_hetzner: FakeHetzner, hetzner: HetznerProvider
) -> None:
    hetzner.preflight(PLAN)
    assert sorted(r.path for r in fake_hetzner.requests) == [
        "/v1/images",
        "/v1/server_types",
        "/v1/ssh_keys",
    ]


def test_bad_token_says_how_to_get_a_good_one(
    fake_hetzner: FakeHetzner, hetzner: HetznerProvider
) -> None:
    hetzner.api._token = SecretStr("wrong-token")
    error = failure(hetzner)
    assert error.code == "unauthorized"
    assert "Read & Write API token" in str(error)
    assert "HCLOUD_TOKEN" in str(error)
    assert "wrong-token" not in str(error)


def test_missing_token(hetzner_factory: ProviderFactory) -> None:
    provider = hetzner_factory()
    provider.api._token = None
    error = failure(provider)
    assert error.code == "no_token"
    assert "HCLOUD_TOKEN" in str(error)


def test_unknown_server_type_suggests_close_names(hetzner_factory: ProviderFactory) -> None:
    error = failure(hetzner_factory(server_type="cx24"))
    assert error.code == "not_found"
    assert "'cx24' does not exist" in str(error)
    assert "cx23" in str(error)


def test_deprecated_server_type(hetzner_factory: ProviderFactory) -> None:
    error = failure(hetzner_factory(server_type="cx11"))
    assert "deprecated in fsn1, orderable until 2024-09-06" in str(error)
    assert "providers.hetzner.server_type" in str(error)


def test_server_type_unavailable_in_every_configured_location(
    fake_hetzner: FakeHetzner, hetzner_factory: ProviderFactory
) -> None:
    fake_hetzner.set_location_unavailable("fsn1", "cx23")
    error = failure(hetzner_factory(locations=["fsn1", "ash"]))
    assert error.code == "resource_unavailable"
    assert "out of capacity in fsn1; not offered in ash" in str(error)
    assert "available in: hel1, nbg1" in str(error)


def test_unknown_image(hetzner_factory: ProviderFactory) -> None:
    error = failure(hetzner_factory(image="ubuntu-99.04"))
    assert "image 'ubuntu-99.04' does not exist for x86 servers" in str(error)


def test_too_big_user_data(hetzner_settings: SettingsFactory, state_dir: Path) -> None:
    # Compressed user-data fits the largest forest allowed; a URL too random to compress
    # does not.
    settings = hetzner_settings()
    settings.integration = IntegrationSettings(
        nimsforest_install=True,
        nimsforest_download_url="https://mirror.example.net/nimsforest",
        nimsforest_sha256="e" * 64,
        registry_url=f"https://registry.example.net/{secrets.token_hex(24 * 1024)}",
    )
    hetzner = HetznerProvider.from_settings(settings, state_dir)
    try:
        error = failure(hetzner, ForestPlan(forest_id=None, node_count=3))
    finally:
        hetzner.close()
    assert error.code == "user_data"
    assert "more than the 32768 bytes" in str(error)


def test_invalid_labels(hetzner: HetznerProvider) -> None:
    error = failure(hetzner, ForestPlan(forest_id="Forest_" + "x" * 60, node_count=1))
    assert "label" in str(error)


def test_no_ssh_key_anywhere(hetzner: HetznerProvider, public_key: object) -> None:
    from pathlib import Path

    assert isinstance(public_key, Path)
    public_key.unlink()
    error = failure(hetzner)
    assert error.code == "ssh_key"
    assert "ssh-keygen" in str(error)


def test_admin_sources_that_cannot_be_found(hetzner_factory: ProviderFactory) -> None:
    provider = hetzner_factory(infrastructure={"admin_sources": []})
    provider._detect_admin = lambda **_: []
    error = failure(provider)
    assert error.code == "admin_sources"
    assert "infrastructure.admin_sources" in str(error)


def test_detected_admin_source_is_this_machines_network(hetzner_factory: ProviderFactory) -> None:
    provider = hetzner_factory(infrastructure={"admin_sources": []})
    provider._detect_admin = lambda **_: ["2a01:4f8:1:2::/64"]
    provider.preflight(PLAN)
    assert provider.admin_sources() == ["2a01:4f8:1:2::/64"]


def test_unknown_admin_sources_are_said_once(hetzner_factory: ProviderFactory) -> None:
    provider = hetzner_factory(infrastructure={"admin_sources": []})
    provider._detect_admin = lambda **_: []  # no global address to detect
    results = {r.name: r for r in provider.checks()}
    assert "cannot tell which public address" in results["hetzner admin sources"].detail
    ssh = results["hetzner SSH port"]
    assert (ssh.ok, ssh.detail) == (False, "not known until the admin sources are")


def test_checks_pass_for_a_good_setup(hetzner: HetznerProvider) -> None:
    results = {r.name: r for r in hetzner.checks()}
    # Whether the admin sources admit this machine depends on its routes: tests/test_check.py
    # sets them in a network namespace.
    assert "hetzner SSH port" in results
    assert all(r.ok for name, r in results.items() if name != "hetzner SSH port"), results
    assert "a plant uploads" in results["hetzner SSH key"].detail
    assert results["hetzner admin sources"].detail == "2001:db8:ad::/64"


def test_checks_name_each_problem(
    fake_hetzner: FakeHetzner, hetzner_factory: ProviderFactory, hcloud_client: object
) -> None:
    import hcloud
    from hetzner_support import public_key_line

    assert isinstance(hcloud_client, hcloud.Client)
    hcloud_client.ssh_keys.create(name="morpheus", public_key=public_key_line())
    fake_hetzner.set_location_unavailable("fsn1")
    provider = hetzner_factory(locations=["fsn1"], image="nope-1")
    results = {r.name: r for r in provider.checks()}
    assert results["hetzner token"].ok
    assert not results["hetzner server type"].ok
    assert "out of capacity in fsn1" in results["hetzner server type"].detail
    assert not results["hetzner image"].ok
    assert not results["hetzner SSH key"].ok
    assert "nodes will not let this machine in" in results["hetzner SSH key"].detail
    fake_hetzner.clear_requests()  # the key above was made by the test, not the checks


def test_checks_with_a_refused_token(hetzner: HetznerProvider) -> None:
    hetzner.api._token = SecretStr("wrong")
    result, ssh = hetzner.checks()  # the SSH port's line needs no account
    assert not result.ok and "refused the token" in result.detail
    assert ssh.name == "hetzner SSH port"
