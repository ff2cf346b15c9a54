"""Planting on Hetzner through the real plant service and the real CLI, against the fake API.

The fake's servers do not run NATS, so a plant cannot become ready here: these tests prove
the other half, that every way a plant can fail (an API error, Ctrl-C, readiness, SIGKILL)
leaves no server, firewall, placement group or primary IP billing. CLIs that dial the
servers' addresses run in the test's own network namespace (the ``cli_namespace`` fixture).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakeapi import FakeHetzner
from hetzner_support import ADMIN_SOURCE, SettingsFactory
from morpheus_hetzner.provider import HetznerProvider
from morpheus_hetzner.settings import HetznerSettings

from morpheus.errors import PlantFailedError
from morpheus.registry import Registry
from morpheus.services import Context
from morpheus.services.plant import PlantRequest, plan, plant
from morpheus.testing.cli import cli_environment, command, morpheus
from morpheus.testing.netns import Lab


def assert_nothing_left(fake: FakeHetzner) -> None:
    assert fake.servers == {}
    assert fake.primary_ips == {}
    assert fake.firewalls == {}
    assert fake.placement_groups == {}


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.02)


@pytest.fixture
def context(hetzner_settings: SettingsFactory, state_dir: Path) -> Iterator[Context]:
    registry = Registry.in_state_dir(state_dir)
    yield Context(settings=hetzner_settings(), state_dir=state_dir, registry=registry)
    registry.close()


def plan_and_plant(
    context: Context, count: int, progress: Callable[[str, str], None] | None = None
) -> None:
    request = PlantRequest(target="hetzner", nodes=count)
    plant_plan = plan(context, request)  # the provider comes through its entry point
    assert isinstance(plant_plan.provider, HetznerProvider)
    try:
        plant(context, plant_plan, request, progress or (lambda node, words: None))
    finally:
        plant_plan.provider.close()


# --------------------------------------------------------------------------- plant service


def test_failure_on_node_4_of_5_rolls_everything_back(
    fake_hetzner: FakeHetzner, context: Context
) -> None:
    fake_hetzner.inject(
        method="POST",
        path_prefix="/servers",
        status=422,
        code="invalid_input",
        message="refused for the test",
        after=3,
    )
    with pytest.raises(PlantFailedError, match="rolled back, 5 node") as caught:
        plan_and_plant(context, 5)

    assert "refused for the test (invalid_input)" in str(caught.value)
    assert fake_hetzner.request_count("POST", "/servers", status=201) == 4  # 1-3 and 5 made it
    assert context.registry.list_forests() == []
    assert_nothing_left(fake_hetzner)


def test_a_rollback_is_never_abandoned_for_a_429(
    fake_hetzner: FakeHetzner, context: Context
) -> None:
    fake_hetzner.inject(method="POST", path_prefix="/servers", status=422, code="invalid_input")
    # Every delete first meets an empty bucket whose RateLimit-Reset is an hour away.
    fake_hetzner.inject_rate_limited(method="DELETE", reset_after=3600.0, times=3)
    with pytest.raises(PlantFailedError, match="rolled back") as caught:
        plan_and_plant(context, 2)

    assert "nothing left behind" in str(caught.value)
    assert fake_hetzner.request_count("DELETE", status=429) == 3
    assert context.registry.list_forests() == []
    assert_nothing_left(fake_hetzner)


def test_a_rollback_that_cannot_finish_names_the_cause_and_the_way_out(
    fake_hetzner: FakeHetzner, context: Context
) -> None:
    fake_hetzner.inject(
        method="POST", path_prefix="/servers", status=422, code="invalid_input", message="nope"
    )
    fake_hetzner.inject(method="GET", path_prefix="/servers", status=503, times=None)
    with pytest.raises(PlantFailedError) as caught:
        plan_and_plant(context, 1)
    fake_hetzner.clear_faults()

    message = str(caught.value)
    assert "the rollback stopped" in message
    assert "morpheus teardown forest-" in message
    (forest,) = context.registry.list_forests()
    assert forest.status != "deleting"


def test_ctrl_c_while_creating_rolls_back_what_was_sent(
    fake_hetzner: FakeHetzner, context: Context
) -> None:
    def interrupt_at_node_3(node_id: str, words: str) -> None:
        if node_id.endswith("-node-3") and words == "creating":
            raise KeyboardInterrupt

    with pytest.raises(PlantFailedError, match="interrupted; rolled back"):
        plan_and_plant(context, 5, interrupt_at_node_3)

    assert fake_hetzner.request_count("POST", "/servers") == 2  # nodes 1 and 2 were sent
    assert context.registry.list_forests() == []
    assert_nothing_left(fake_hetzner)


# --------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_cli_plant_rolls_back_when_nats_never_becomes_ready(
    fake_hetzner: FakeHetzner, cli_config: Path, cli_namespace: Lab
) -> None:
    result = morpheus("plant", "hetzner", "medium", "--yes", timeout=60)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "rolled back, 3 node(s) deleted and nothing left behind" in result.stderr
    assert fake_hetzner.token not in result.stdout + result.stderr
    assert fake_hetzner.request_count("POST", "/servers", status=201) == 3
    assert_nothing_left(fake_hetzner)
    assert len(fake_hetzner.ssh_keys) == 1  # the operator's key stays for the next plant
    assert morpheus("list", "-o", "json").stdout.strip() in ("[]", '{"forests": []}')


def test_cli_dry_run_shows_the_price_and_creates_nothing(
    fake_hetzner: FakeHetzner, cli_config: Path
) -> None:
    result = morpheus("plant", "hetzner", "large", "--dry-run", timeout=60)

    assert result.returncode == 0, result.stderr
    assert "cx23: 2 vCPU, 4 GB RAM, 40 GB disk" in result.stdout
    assert "5 x EUR 3.49 = EUR 17.45 per month" in result.stdout
    assert "IPv6 only" in result.stdout
    assert ADMIN_SOURCE in result.stdout
    assert not [r for r in fake_hetzner.requests if r.method != "GET"]


def test_cli_bad_token_fails_before_anything_is_created(
    fake_hetzner: FakeHetzner, cli_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HCLOUD_TOKEN", "not-the-right-token")
    result = morpheus("plant", "hetzner", "small", "--yes", timeout=60)

    assert result.returncode == 1
    assert "refused the token (unauthorized)" in result.stderr
    assert "HCLOUD_TOKEN" in result.stderr
    assert "not-the-right-token" not in result.stdout + result.stderr
    assert not [r for r in fake_hetzner.requests if r.method != "GET"]
    assert fake_hetzner.ssh_keys == {}


@pytest.mark.slow
def test_sigkill_mid_plant_then_teardown_leaves_nothing(
    fake_hetzner: FakeHetzner, cli_config: Path, cli_namespace: Lab, state_dir: Path
) -> None:
    fake_hetzner.time_scale = 1.0  # creates take 10 s: the plant is surely still running
    process = subprocess.Popen(
        command("plant", "hetzner", "large", "--yes"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_environment(),
        start_new_session=True,
    )
    try:
        wait_until(lambda: len(fake_hetzner.servers) >= 3, 30, "three servers were not created")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    fake_hetzner.time_scale = 0.01
    with Registry.in_state_dir(state_dir) as registry:
        (forest,) = registry.list_forests()

    result = morpheus("teardown", forest.id, "--yes", timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    assert_nothing_left(fake_hetzner)
    with Registry.in_state_dir(state_dir) as registry:
        assert registry.list_forests() == []


def test_cli_check_asks_the_api(fake_hetzner: FakeHetzner, cli_config: Path) -> None:
    result = morpheus("check", "-o", "json", timeout=60)
    assert "hetzner token" in result.stdout, result.stdout + result.stderr
    assert "accepts it" in result.stdout
    assert fake_hetzner.token not in result.stdout + result.stderr


# --------------------------------------------------------------------------- a kept forest


@pytest.fixture
def kept_forest(
    fake_hetzner: FakeHetzner, cli_config: Path, cli_namespace: Lab
) -> dict[str, object]:
    """A medium forest whose plant failed (no NATS on the fake) and was kept: its `list` row."""
    kept = morpheus("plant", "hetzner", "medium", "--yes", "--keep-on-failure", timeout=120)
    assert "kept for inspection" in kept.stderr, kept.stderr
    (forest,) = json.loads(morpheus("list", "-o", "json").stdout)
    assert isinstance(forest, dict)
    return forest


def test_list_shows_where_the_nodes_are(kept_forest: dict[str, object]) -> None:
    assert kept_forest["location"] == "fsn1"
    assert kept_forest["node_count"] == 3


def test_a_refused_teardown_leaves_the_forest_as_it_was(
    fake_hetzner: FakeHetzner, kept_forest: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    forest_id = str(kept_forest["id"])
    before = morpheus("status", forest_id, "-o", "json", timeout=60).stdout
    monkeypatch.setenv("HCLOUD_TOKEN", "not-the-right-token")

    refused = morpheus("teardown", forest_id, "--yes", timeout=60)

    assert refused.returncode != 0
    assert "refused the token" in refused.stderr
    (after,) = json.loads(morpheus("list", "-o", "json").stdout)
    assert after == kept_forest
    monkeypatch.setenv("HCLOUD_TOKEN", fake_hetzner.token)
    assert [n["status"] for n in json.loads(before)["nodes"]] == [
        n["status"] for n in json.loads(morpheus("status", forest_id, "-o", "json").stdout)["nodes"]
    ]
    preview = morpheus("reconcile", forest_id, "--dry-run", timeout=60)
    assert "teardown was interrupted" not in preview.stdout + preview.stderr
    assert len(fake_hetzner.servers) == 3


def test_status_gives_up_on_a_hung_api_within_its_bound(
    fake_hetzner: FakeHetzner, kept_forest: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert HetznerSettings().read_timeout <= 20  # the documented default bound
    monkeypatch.setenv("MORPHEUS_PROVIDERS__HETZNER__READ_TIMEOUT", "2")
    fake_hetzner.inject_slow_response(60.0, method="GET", path_prefix="/servers", times=None)
    started = time.monotonic()

    result = morpheus("status", str(kept_forest["id"]), timeout=60)

    # Unbounded, the request timeout times the retries would be 30 s or more; the margin
    # above 2 s is process start-up, which a loaded machine stretches to several seconds.
    assert time.monotonic() - started < 20, "request_timeout x retries would be 30 s"
    fake_hetzner.clear_faults()
    assert "could not be asked" in result.stdout + result.stderr
    assert "within 2 s" in result.stdout + result.stderr
