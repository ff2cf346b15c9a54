"""grow and grow --auto on real local forests: nodes that really join, cooldown, locking."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from morpheus.testing.cli import invoke, morpheus
from morpheus.testing.nats import healthz_ok, peers_seen, processes_mentioning, wait_until

GREW, BLOCKED = 10, 11
# How long grow waits for each node: far more than a local nats-server on a machine at load 30
# needs, so a slow answer is never taken for an unreachable node (and another decision).
# A stopped node is refused at once, whatever the timeout.
POLL = ("--timeout", "30")
# How long a forest that just gained or lost a node may take to serve JetStream again.
SETTLE_SECONDS = 60
T = TypeVar("T")


@pytest.fixture(autouse=True)
def small_local_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each local node counts as a 256 MiB machine, so an idle nats-server (~15 MB RSS) uses
    # ~6% of it: `--threshold 3` makes a forest "hot" without burning the shared CPU.
    monkeypatch.setenv("MORPHEUS_PROVIDERS__LOCAL__NODE_MEMORY", "256M")


def plant(size: str) -> dict[str, Any]:
    result = morpheus("plant", "local", size, "-o", "json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def grow_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = morpheus("grow", *args, *POLL, "--output", "json")
    assert result.stdout, result.stderr
    return result.returncode, dict(json.loads(result.stdout))


def status(forest_id: str) -> dict[str, Any]:
    return dict(json.loads(invoke("status", forest_id, "-o", "json").stdout))


async def _when_served(request: Callable[[], Awaitable[T]], what: str) -> T:
    """``request()`` once JetStream serves it: a forest that just gained or lost a node
    elects leaders first, and says "temporarily unavailable" (503) or nothing meanwhile."""
    import nats
    from nats.js.errors import ServiceUnavailableError

    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        try:
            return await request()
        except (ServiceUnavailableError, nats.errors.TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not served within {SETTLE_SECONDS} s") from exc
        await asyncio.sleep(0.2)


async def _jetstream(client_url: str, publish: int) -> tuple[int, str | None]:
    import nats

    connection = await nats.connect(client_url)
    try:
        js = connection.jetstream()
        if publish:
            await _when_served(
                lambda: js.add_stream(name="ORDERS", subjects=["orders.>"]), "creating ORDERS"
            )
            for number in range(publish):
                await js.publish("orders.new", f"order {number}".encode())
        info = await _when_served(lambda: js.stream_info("ORDERS"), f"ORDERS at {client_url}")
        return info.state.messages, info.cluster.leader if info.cluster else None
    finally:
        await connection.close()


def _created_r1_stream(client_url: str) -> bool:
    # A just-planted cluster may still be electing: the first stream create can time out.
    import nats

    try:
        asyncio.run(_jetstream(client_url, publish=3))
    except nats.errors.TimeoutError:
        return False
    return True


async def _read_all(client_url: str, count: int, leader_not: str) -> list[str]:
    """Every message of ORDERS, read once a node other than ``leader_not`` leads it."""
    import nats
    from nats.js.errors import APIError

    connection = await nats.connect(client_url)
    try:
        js = connection.jetstream()
        deadline = time.monotonic() + SETTLE_SECONDS
        seen: object = "nothing"
        while True:
            try:
                info = await js.stream_info("ORDERS")
                seen = info.cluster.leader if info.cluster else "no cluster"
                if info.cluster and info.cluster.leader not in (None, leader_not):
                    assert info.state.messages == count
                    # Until the rest of the cluster has settled too, a read may still be
                    # refused ("temporarily unavailable"): read them all again then.
                    return [
                        (await js.get_msg("ORDERS", seq)).data.decode()
                        for seq in range(1, count + 1)
                    ]
            except (APIError, nats.errors.TimeoutError) as exc:
                seen = repr(exc)
            assert time.monotonic() < deadline, (
                f"ORDERS not served by a leader other than {leader_not} within "
                f"{SETTLE_SECONDS} s (last: {seen})"
            )
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


def test_one_node_grows_to_three_keeps_its_data_and_survives_losing_node_one(
    state_dir: Path,
) -> None:
    planted = plant("small")
    forest_id = planted["forest"]["id"]
    (node_one,) = planted["nodes"]
    client_one = f"nats://127.0.0.1:{node_one['ports']['client']}"
    assert asyncio.run(_jetstream(client_one, publish=100)) == (100, node_one["id"])

    code, report = grow_json("--auto", "--threshold", "3")
    assert code == GREW, report
    assert report["decision"]["action"] == "grow"
    assert report["decision"]["nodes_to_add"] == 2
    assert report["nodes_added"] == ["node-2", "node-3"]
    # The stream pinned to node 1 was raised to the forest's replica count.
    assert report["streams_raised"] == [
        {"stream": "ORDERS", "replicas_before": 1, "replicas_after": 3}
    ]
    assert report["warnings"] == []

    nodes = status(forest_id)["nodes"]
    ids = {n["id"] for n in nodes}
    assert len(ids) == 3
    for node in nodes:
        assert healthz_ok(node["monitor_url"])
        assert peers_seen(node["monitor_url"]) == ids - {node["id"]}
    # The stream written while standalone is served by the cluster, from node 1's disk.
    for node in nodes:
        client = f"nats://127.0.0.1:{node['ports']['client']}"
        assert asyncio.run(_jetstream(client, publish=0))[0] == 100

    code, again = grow_json("--auto", "--threshold", "3")
    assert code == BLOCKED
    assert again["decision"]["reason"] == "cooldown"
    assert again["nodes_added"] == []
    assert again["streams_raised"] == []
    assert again["decision"]["cooldown_remaining_seconds"] > 0
    events = [e["kind"] for e in status(forest_id)["events"]]
    assert events[-4:] == ["growing", "converged", "node-added", "replicas"]

    # Node 1 dies hard; the other two still hold every message.
    node_dir = next(state_dir.glob(f"local/*/{node_one['id']}"))
    for pid in processes_mentioning(str(node_dir)):
        os.kill(pid, 9)
    for node in nodes[1:]:
        client = f"nats://127.0.0.1:{node['ports']['client']}"
        messages = asyncio.run(_read_all(client, 100, leader_not=node_one["id"]))
        assert messages == [f"order {number}" for number in range(100)]


def test_three_nodes_grow_to_four_and_every_peer_count_rises(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = plant("medium")
    forest_id = planted["forest"]["id"]
    client = f"nats://127.0.0.1:{planted['nodes'][0]['ports']['client']}"
    wait_until(lambda: _created_r1_stream(client), what="an R1 stream on the new forest")
    monkeypatch.setenv("MORPHEUS_GROWTH__RAISE_STREAM_REPLICAS", "false")
    code, report = grow_json(forest_id, "--auto", "--threshold", "3")
    assert code == GREW
    assert report["nodes_added"] == ["node-4"]
    assert report["streams_raised"] == []  # turned off: the stream stays R1
    nodes = status(forest_id)["nodes"]
    assert [n["nats"]["peers"] for n in nodes] == [3, 3, 3, 3]
    listed = json.loads(invoke("list", "-o", "json").stdout)
    assert listed[0]["last_expansion"] is not None
    assert listed[0]["node_count"] == 4


def test_nothing_to_do_and_dry_run(state_dir: Path) -> None:
    forest_id = plant("small")["forest"]["id"]
    code, report = grow_json()
    assert code == 0
    assert report["decision"]["reason"] == "below_threshold"
    code, report = grow_json("--threshold", "3", "--dry-run")
    assert code == 0
    assert report["decision"]["action"] == "grow"
    assert report["dry_run"] is True
    assert report["nodes_added"] == []
    assert len(status(forest_id)["nodes"]) == 1


def test_disabled_policy_never_grows(monkeypatch: pytest.MonkeyPatch) -> None:
    plant("small")
    monkeypatch.setenv("MORPHEUS_GROWTH__ENABLED", "false")
    code, report = grow_json("--auto", "--threshold", "3")
    assert (code, report["decision"]["reason"]) == (0, "disabled")


def test_interactive_grow_needs_yes_from_a_script(state_dir: Path) -> None:
    plant("medium")
    result = morpheus("grow", "--threshold", "3", *POLL)
    assert result.returncode == 2
    assert "pass --yes or --auto" in result.stderr
    assert "Memory above 3% threshold" in result.stdout


def test_several_forests_need_a_name_in_a_script(state_dir: Path) -> None:
    first = plant("small")["forest"]["id"]
    second = plant("small")["forest"]["id"]
    result = morpheus("grow")
    assert result.returncode == 2
    assert first in result.stderr and second in result.stderr


def test_unreachable_nodes_are_shown_and_block_when_most_are(state_dir: Path) -> None:
    planted = plant("medium")
    for node in planted["nodes"][:2]:
        node_dir = next(state_dir.glob(f"local/*/{node['id']}"))
        for pid in processes_mentioning(str(node_dir)):
            os.kill(pid, 9)
    result = morpheus("grow", "--threshold", "3", *POLL)
    assert result.returncode == BLOCKED
    assert result.stdout.count("unreachable") >= 2
    code, report = grow_json("--auto", "--threshold", "3")
    assert code == BLOCKED
    assert report["decision"]["reason"] == "too_many_unreachable"
    assert [n["reachable"] for n in report["nodes"]] == [False, False, True]


def test_a_lone_node_its_provider_cannot_reconfigure_is_blocked_with_the_reason(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from morpheus_hetzner.provider import HetznerProvider

    forest_id = plant("small")["forest"]["id"]

    def provider_of_forest(name: str) -> None:
        with sqlite3.connect(state_dir / "registry.sqlite3") as db:
            db.execute("UPDATE forests SET provider = ? WHERE id = ?", (name, forest_id))

    # A provider that cannot reconfigure a booted node (every built-in one can now: Hetzner
    # is told it cannot, in this process); the forest's node stays the real local
    # nats-server, so the figures are real and nothing may be created anywhere.
    monkeypatch.setattr(HetznerProvider, "can_reconfigure", False)
    provider_of_forest("hetzner")
    try:
        run = invoke("grow", "--auto", "--threshold", "3", *POLL, "--output", "json")
        interactive = invoke("grow", "--threshold", "3", *POLL)
    finally:
        provider_of_forest("local")
    code, report = run.returncode, json.loads(run.stdout)
    assert code == BLOCKED
    assert report["decision"]["action"] == "blocked"
    assert report["decision"]["reason"] == "cannot_reconfigure"
    assert "plant a new forest of 3 or more nodes" in report["decision"]["message"]
    assert report["nodes_added"] == []
    assert interactive.returncode == BLOCKED  # not asked "Add 2 nodes?" only to fail
    assert "Add 2 nodes?" not in interactive.stdout
    assert len(status(forest_id)["nodes"]) == 1


def cannot_start(state_dir: Path, forest_id: str, name: str) -> None:
    """The node ``name`` that grow is about to add fails to start, however loaded the machine:
    its JetStream store is a file, so its nats-server exits (a readiness timeout as short as
    a millisecond is met all the same when a slow machine checks only once the node is up)."""
    node_dir = state_dir / "local" / forest_id / f"{forest_id}-{name}"
    node_dir.mkdir(parents=True)
    (node_dir / "jetstream").write_text("not a directory\n")


def test_failed_growth_removes_only_the_new_node(state_dir: Path) -> None:
    forest_id = plant("medium")["forest"]["id"]
    cannot_start(state_dir, forest_id, "node-4")
    result = morpheus("grow", "--auto", "--threshold", "3", *POLL)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the new node(s) were removed" in result.stderr
    assert f"{forest_id}-node-4: nats-server exited" in result.stderr, result.stderr
    nodes = status(forest_id)["nodes"]
    assert [n["name"] for n in nodes] == ["node-1", "node-2", "node-3"]
    assert all(n["nats"]["healthy"] and n["nats"]["peers"] == 2 for n in nodes)
    assert not list(Path(os.environ["MORPHEUS_STATE_DIR"]).glob(f"local/{forest_id}/*node-4"))


def test_failed_growth_of_a_lone_node_puts_it_back_standalone(state_dir: Path) -> None:
    planted = plant("small")
    (node,) = planted["nodes"]
    client = f"nats://127.0.0.1:{node['ports']['client']}"
    asyncio.run(_jetstream(client, publish=5))
    cannot_start(state_dir, planted["forest"]["id"], "node-2")
    result = morpheus("grow", "--auto", "--threshold", "3", *POLL)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the new node(s) were removed" in result.stderr
    (after,) = status(planted["forest"]["id"])["nodes"]
    assert after["nats"]["healthy"]
    assert asyncio.run(_jetstream(client, publish=0))[0] == 5


def test_ten_concurrent_cron_runs_add_exactly_one_node(state_dir: Path) -> None:
    forest_id = plant("medium")["forest"]["id"]
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "morpheus",
                "grow",
                forest_id,
                "--auto",
                "--threshold",
                "3",
                *POLL,
                "--output",
                "json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(10)
    ]
    reports = []
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode in (GREW, BLOCKED), err
        reports.append(json.loads(out))
    added = [name for report in reports for name in report["nodes_added"]]
    assert added == ["node-4"]
    assert sum(1 for r in reports if r["decision"]["reason"] == "cooldown") == 9
    assert len(status(forest_id)["nodes"]) == 4
