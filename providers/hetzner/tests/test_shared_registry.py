"""A cloud forest in a registry a team shares: planted by one host, listed, shown and torn
down by another (two processes with their own state directory and HOME, one real PostgreSQL,
the fake Hetzner API).  The local-forest half is tests/test_registry_teams.py.

Both hosts run in the test's own network namespace (``cli_namespace``): their plant and
status dial the fake's servers, whose addresses lead nowhere there. They reach PostgreSQL over
its Unix socket (its 127.0.0.1 is this machine's namespace's)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from fakeapi import FakeHetzner

from morpheus.secret_codec import new_key
from morpheus.testing.cli import command
from morpheus.testing.cli import host_environment as shared_host
from morpheus.testing.netns import Lab
from morpheus.testing.postgres import PostgresServer


def host_environment(tmp_path: Path, name: str, url: str, key: str) -> dict[str, str]:
    env = shared_host(tmp_path, name, url, key)
    # The operator's public key (the public_key fixture's), as each host would have its own.
    shutil.copytree(Path.home() / ".ssh", Path(env["HOME"]) / ".ssh")
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_a_cloud_forest_planted_on_one_host_is_torn_down_from_another(
    fake_hetzner: FakeHetzner,
    cli_config: Path,
    cli_namespace: Lab,
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> None:
    database = f"test_{secrets.token_hex(6)}"
    postgres_server.create_database(database)
    url = postgres_server.socket_url(database)
    key = new_key()
    a = host_environment(tmp_path, "host-a", url, key)
    b = host_environment(tmp_path, "host-b", url, key)
    # The fake's servers never run NATS: the plant fails readiness and keeps what it made.
    kept = run(a, "plant", "hetzner", "medium", "--yes", "--keep-on-failure")
    assert "kept for inspection" in kept.stderr, kept.stdout + kept.stderr
    assert len(fake_hetzner.servers) == 3

    (forest,) = json.loads(run(b, "list", "-o", "json").stdout)
    assert (forest["provider"], forest["node_count"]) == ("hetzner", 3)
    shown = run(b, "status", forest["id"], "-o", "json")
    assert shown.returncode == 0, shown.stderr
    assert len(json.loads(shown.stdout)["nodes"]) == 3
    assert "local forest of host" not in shown.stdout  # a cloud forest is no host's

    torn = run(b, "teardown", forest["id"], "--yes")
    assert torn.returncode == 0, torn.stdout + torn.stderr
    assert fake_hetzner.servers == {} and fake_hetzner.primary_ips == {}
    assert json.loads(run(a, "list", "-o", "json").stdout) == []
    assert fake_hetzner.token not in kept.stdout + kept.stderr + torn.stdout + torn.stderr
