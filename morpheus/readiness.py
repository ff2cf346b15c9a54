"""NATS readiness, the same for every provider: ``/healthz`` 200 and every peer seen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from morpheus.errors import ReadinessError
from morpheus.monitor import MonitorTarget, NodeSample, poll_nodes
from morpheus.waiting import poll_until

if TYPE_CHECKING:
    from morpheus.models import Node


@dataclass(frozen=True)
class ReadinessTarget:
    node_id: str
    host: str
    monitor_port: int
    expected_peers: int
    #: Ready once its own NATS server answers, healthy or not (its first boot is done).
    serving_only: bool = False

    @classmethod
    def for_node(cls, node: Node, mesh_size: int, *, serving_only: bool = False) -> ReadinessTarget:
        """A recorded node that should see every other node of a mesh of ``mesh_size``."""
        return cls(
            node_id=node.id,
            host=node.host or "",
            monitor_port=node.ports.monitor,
            expected_peers=max(mesh_size - 1, 0),
            serving_only=serving_only,
        )


def describe(
    sample: NodeSample, expected_peers: int, *, serving_only: bool = False
) -> tuple[bool, str]:
    """Whether the node is ready, and a few words on where it is."""
    if not sample.reachable:
        return False, "waiting for NATS monitoring"
    if sample.server_name is not None and sample.server_name != sample.node_name:
        # Someone else's server answers on this node's port: waiting will not fix it.
        raise ReadinessError(
            f"{sample.node_name}: another NATS server ({sample.server_name}) answers at "
            f"{sample.url}"
        )
    if serving_only:
        return True, "NATS serving"
    if not sample.healthy:
        return False, "NATS starting (healthz not ok yet)"
    peers = sample.peers or 0
    if peers < expected_peers:
        return False, f"NATS up, sees {peers}/{expected_peers} peers"
    if expected_peers:
        return True, f"ready, sees {peers}/{expected_peers} peers"
    return True, "ready (standalone)"


def wait_nats_ready(
    targets: Sequence[ReadinessTarget],
    *,
    deadline: float,
    max_interval: float,
    progress: Callable[[str, str], None],
    boot_failure: Callable[[str], str | None] | None = None,
    failure_interval: float = 5.0,
) -> None:
    """Poll until every target is ready or ``time.monotonic()`` passes ``deadline``.


    The poll interval starts short (a loopback node is often ready in a fraction of a
    second) and backs off to ``max_interval`` so a slow cloud boot costs few requests.
    ``boot_failure(node_id)``, asked about unready nodes at most every ``failure_interval``
    seconds, ends the wait with its answer when a node reports that its boot failed (read
    from its console); so does a failed bootstrap's answer on the monitoring port itself.
    """
    pending = {target.node_id: target for target in targets}
    said: dict[str, str] = {}
    next_failure_check = time.monotonic()

    def raise_reported_failure() -> None:
        nonlocal next_failure_check
        if boot_failure is None or time.monotonic() < next_failure_check:
            return
        next_failure_check = time.monotonic() + failure_interval
        for node_id in pending:
            reason = boot_failure(node_id)
            if reason is not None:
                # Said at once: the rollback that follows can take a while on a busy host.
                progress(node_id, reason)
                raise ReadinessError(f"{node_id}: {reason}")

    def all_ready() -> bool | None:
        raise_reported_failure()
        remaining = deadline - time.monotonic()
        samples = asyncio.run(
            poll_nodes(
                [
                    MonitorTarget(node_name=t.node_id, host=t.host, port=t.monitor_port)
                    for t in pending.values()
                ],
                per_node_timeout=max(0.2, min(2.0, remaining)),
            )
        )
        for sample in samples:
            target = pending[sample.node_name]
            if sample.boot_failure is not None:
                # The node's own failure responder answered in NATS's place.
                reason = f"{sample.boot_failure} (reported at {sample.url})"
                progress(target.node_id, reason)
                raise ReadinessError(f"{target.node_id}: {reason}")
            ready, words = describe(sample, target.expected_peers, serving_only=target.serving_only)
            if said.get(target.node_id) != words:
                said[target.node_id] = words
                progress(target.node_id, words)
            if ready:
                del pending[target.node_id]
        return True if not pending else None

    def stuck() -> ReadinessError:
        nodes = ", ".join(f"{node} ({said.get(node, 'no answer')})" for node in pending)
        return ReadinessError(f"not ready before the deadline: {nodes}")

    if pending:
        poll_until(
            all_ready,
            deadline=deadline,
            interval=0.05,
            backoff=2,
            max_interval=max_interval
            if boot_failure is None
            else min(max_interval, failure_interval),
            timeout_error=stuck,
        )
