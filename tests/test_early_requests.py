"""`grow` asks its nodes as it starts (morpheus.early_requests), against loopback monitors.

The requests must reach the nodes before any poll, be read by the poll in place of asking
again, and stand aside (send nothing) whenever the arguments or the registry leave doubt.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from morpheus.early_requests import (
    MAX_EARLY_NODES,
    ask_early,
    claim,
    discard,
    early_forest,
)
from morpheus.monitor import MonitorTarget, poll_nodes
from morpheus.testing.cli import morpheus
from morpheus.testing.monitors import LoopbackMonitor, loopback_monitor, record_forest
from morpheus.testing.nats import wait_until

NODES = 12


@pytest.fixture
def monitors() -> Iterator[list[LoopbackMonitor]]:
    """``NODES`` simulated nodes, each on its own loopback port."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield [stack.enter_context(loopback_monitor()) for _ in range(NODES)]
    discard()


def _targets(monitors: list[LoopbackMonitor]) -> list[MonitorTarget]:
    return [
        MonitorTarget(node_name=f"node-{i + 1}", host="127.0.0.1", port=m.port)
        for i, m in enumerate(monitors)
    ]


def _asked(monitors: list[LoopbackMonitor]) -> int:
    return sum(m.requests for m in monitors)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["forest-1"], ("forest-1",)),
        ([], (None,)),
        (["--auto", "--threshold", "3", "forest-1"], ("forest-1",)),
        (["forest-1", "-o", "json", "--dry-run", "--timeout=2", "-q", "-y"], ("forest-1",)),
        (["--output=json"], (None,)),
        (["--help"], None),
        (["forest-1", "forest-2"], None),
        (["--threshold"], None),
        (["--", "forest-1"], None),
        (["--unknown-option", "forest-1"], None),
        (["-x"], None),
    ],
)
def test_only_plain_grow_arguments_are_acted_on(
    args: list[str], expected: tuple[str | None] | None
) -> None:
    assert early_forest(args) == expected


def test_requests_reach_the_nodes_before_the_poll_which_reads_them_without_asking_again(
    state_dir: Path, monitors: list[LoopbackMonitor]
) -> None:
    forest_id = record_forest(state_dir, [m.port for m in monitors])
    early = ask_early([forest_id, "--dry-run"])
    assert early is not None and claim() is early
    # Every node has both requests before anything polls.
    wait_until(lambda: _asked(monitors) == 2 * NODES, timeout=30, what="the early requests")
    samples = asyncio.run(poll_nodes(_targets(monitors), per_node_timeout=5, early=early))
    assert [s.reachable for s in samples] == [True] * NODES, [s.error for s in samples]
    assert all(s.healthy for s in samples)
    assert _asked(monitors) == 2 * NODES  # read, not asked again
    assert len(early) == 0


def test_latency_counts_from_the_early_request(
    state_dir: Path, monitors: list[LoopbackMonitor]
) -> None:
    for monitor in monitors:
        monitor.delay = 0.3
    forest_id = record_forest(state_dir, [m.port for m in monitors])
    early = ask_early([forest_id])
    assert early is not None
    wait_until(lambda: _asked(monitors) == 2 * NODES, timeout=30, what="the early requests")
    samples = asyncio.run(poll_nodes(_targets(monitors), per_node_timeout=5, early=claim()))
    assert all(s.latency_ms is not None and s.latency_ms >= 300 for s in samples), [
        s.latency_ms for s in samples
    ]


def test_a_refused_node_is_asked_again_and_reported_as_without_early_requests(
    state_dir: Path, monitors: list[LoopbackMonitor]
) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        closed_port = placeholder.getsockname()[1]
    ports = [m.port for m in monitors] + [closed_port]
    forest_id = record_forest(state_dir, ports)
    early = ask_early([forest_id])
    assert early is not None
    targets = [
        *_targets(monitors),
        MonitorTarget(node_name="gone", host="127.0.0.1", port=closed_port),
    ]
    with_early = asyncio.run(poll_nodes(targets, per_node_timeout=5, early=claim()))
    without = asyncio.run(poll_nodes(targets[-1:], per_node_timeout=5))
    assert with_early[-1].reachable is False
    assert with_early[-1].error == without[0].error
    assert "refused" in (with_early[-1].error or "").lower()
    assert all(s.reachable for s in with_early[:-1])


def _set_host(state_dir: Path, forest_id: str, host: str) -> None:
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        db.execute("UPDATE forests SET host = ? WHERE id = ?", (host, forest_id))


def test_another_hosts_forest_is_not_asked(
    state_dir: Path, monitors: list[LoopbackMonitor]
) -> None:
    forest_id = record_forest(state_dir, [m.port for m in monitors])
    _set_host(state_dir, forest_id, "elsewhere:0123abcd")
    assert ask_early([forest_id]) is None
    # This host's own forest is asked.
    (state_dir / "host-id").write_text("89abcdef\n")
    _set_host(state_dir, forest_id, f"{socket.gethostname()}:89abcdef")
    assert ask_early([forest_id]) is not None
    wait_until(lambda: _asked(monitors) == 2 * NODES, timeout=30, what="the early requests")


def test_nothing_is_sent_when_the_registry_is_not_plainly_the_default_file(
    state_dir: Path, monitors: list[LoopbackMonitor], monkeypatch: pytest.MonkeyPatch
) -> None:
    forest_id = record_forest(state_dir, [m.port for m in monitors])
    monkeypatch.chdir(state_dir.parent)
    config = state_dir.parent / "morpheus.yaml"
    config.write_text(f"registry:\n  url: sqlite:///{state_dir / 'registry.sqlite3'}\n")
    monkeypatch.setenv("MORPHEUS_CONFIG", str(config))
    assert ask_early([forest_id]) is None
    monkeypatch.delenv("MORPHEUS_CONFIG")
    monkeypatch.setenv("MORPHEUS_REGISTRY__URL", "postgresql://morpheus@127.0.0.1:1/none")
    assert ask_early([forest_id]) is None
    monkeypatch.delenv("MORPHEUS_REGISTRY__URL")
    assert ask_early(["forest-unknown"]) is None
    assert _asked(monitors) == 0


def test_a_left_out_forest_is_asked_only_when_it_is_the_only_one(
    state_dir: Path, monitors: list[LoopbackMonitor]
) -> None:
    assert ask_early([]) is None  # no registry yet: nothing is created either
    assert not (state_dir / "registry.sqlite3").exists()
    record_forest(state_dir, [m.port for m in monitors[:6]])
    assert ask_early(["--dry-run"]) is not None
    record_forest(state_dir, [m.port for m in monitors[6:]])
    assert ask_early(["--dry-run"]) is None
    wait_until(lambda: _asked(monitors[:6]) == 12, timeout=30, what="the early requests")
    assert _asked(monitors[6:]) == 0


def test_forests_beyond_the_early_limit_are_polled_the_usual_way(state_dir: Path) -> None:
    with loopback_monitor() as monitor:
        forest_id = record_forest(state_dir, [monitor.port] * (MAX_EARLY_NODES + 1))
        assert ask_early([forest_id]) is None
        assert monitor.requests == 0


def test_two_nodes_at_one_address_are_asked_once_early_and_once_the_usual_way(
    state_dir: Path,
) -> None:
    with loopback_monitor() as monitor:
        forest_id = record_forest(state_dir, [monitor.port, monitor.port])
        early = ask_early([forest_id])
        assert early is not None and len(early) == 2  # /varz and /healthz, once
        targets = [
            MonitorTarget(node_name=f"node-{i}", host="127.0.0.1", port=monitor.port)
            for i in (1, 2)
        ]
        samples = asyncio.run(poll_nodes(targets, per_node_timeout=5, early=claim()))
        assert [s.reachable for s in samples] == [True, True]
        assert monitor.requests == 4  # two early, two the usual way
        assert len(early) == 0


def test_the_cli_reports_every_node_and_leaves_no_connection_open(
    state_dir: Path, monitors: list[LoopbackMonitor]
) -> None:
    forest_id = record_forest(state_dir, [m.port for m in monitors])
    result = morpheus("grow", forest_id, "--dry-run", "-o", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["aggregate"]["reachable"] == NODES
    assert report["aggregate"]["healthy"] == NODES
    # Each node was asked exactly twice (/varz and /healthz): early, and read from there.
    assert [m.requests for m in monitors] == [2] * NODES
