"""Fault campaign, Hetzner: SIGKILL the CLI after its N-th API request during plant and
teardown, run the documented recovery (`morpheus teardown FOREST --yes`), and count the
servers, firewalls, placement groups, primary IPs and registry rows left.  Goal: none.

The fake's servers run no NATS, so a plant here never becomes ready; the readiness timeout is
raised so that every kill lands while the plant is still creating or waiting. The CLIs run in
the test's own network namespace (``cli_namespace``), where the servers' addresses lead nowhere.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from fakeapi import FakeHetzner

from morpheus.testing.campaign import kill_points, record_outcome
from morpheus.testing.cli import cli_environment, command, morpheus
from morpheus.testing.netns import Lab


def kill_at_request(fake: FakeHetzner, args: list[str], requests: int) -> int:
    """Run ``morpheus ARGS``; SIGKILL it once the fake has served ``requests`` more requests,
    or once it has asked nothing for two seconds (a plant waiting for NATS readiness asks the
    API nothing: that wait is a kill point too, whatever its request count)."""
    start = len(fake.requests)
    with subprocess.Popen(
        command(*args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_environment(),
    ) as process:
        deadline = time.monotonic() + 60
        seen, quiet_since = 0, time.monotonic()
        while len(fake.requests) - start < requests and process.poll() is None:
            if len(fake.requests) - start != seen:
                seen, quiet_since = len(fake.requests) - start, time.monotonic()
            elif seen and time.monotonic() - quiet_since > 2.0:
                break
            assert time.monotonic() < deadline, "the command made too few requests"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    return len(fake.requests) - start


def left_behind(fake: FakeHetzner, state_dir: Path) -> dict[str, int]:
    counts = {
        "servers": len(fake.servers),
        "firewalls": len(fake.firewalls),
        "placement_groups": len(fake.placement_groups),
        "primary_ips": len(fake.primary_ips),
    }
    if (state_dir / "registry.sqlite3").exists():
        with sqlite3.connect(state_dir / "registry.sqlite3") as db:
            for table in ("forests", "nodes", "route_credentials", "events"):
                (counts[f"{table}_rows"],) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    return counts


def recover(fake: FakeHetzner, state_dir: Path, operation: str, point: int, seen: int) -> None:
    fake.time_scale = 0.01
    for forest in json.loads(morpheus("list", "-o", "json").stdout):
        result = morpheus("teardown", forest["id"], "--yes", timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    left = left_behind(fake, state_dir)
    record_outcome(f"hetzner {operation}", point, seen, left)
    assert set(left.values()) == {0}, left


@pytest.fixture
def slow_readiness(cli_config: Path, cli_namespace: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORPHEUS_PROVISIONING__READINESS_TIMEOUT", "120")


@pytest.mark.parametrize(
    "point", kill_points([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])
)
def test_plant_killed(
    fake_hetzner: FakeHetzner, slow_readiness: None, state_dir: Path, point: int
) -> None:
    seen = kill_at_request(fake_hetzner, ["plant", "hetzner", "medium", "--yes"], point)
    recover(fake_hetzner, state_dir, "plant medium", point, seen)


@pytest.mark.parametrize("point", kill_points([1, 2, 3, 4, 5, 6, 8, 10, 12, 15]))
def test_teardown_killed(
    fake_hetzner: FakeHetzner, cli_config: Path, cli_namespace: Lab, state_dir: Path, point: int
) -> None:
    kept = morpheus("plant", "hetzner", "medium", "--yes", "--keep-on-failure", timeout=120)
    assert "kept for inspection" in kept.stderr, kept.stderr
    assert len(fake_hetzner.servers) == 3
    (forest,) = json.loads(morpheus("list", "-o", "json").stdout)
    seen = kill_at_request(fake_hetzner, ["teardown", forest["id"], "--yes"], point)
    recover(fake_hetzner, state_dir, "teardown medium", point, seen)
