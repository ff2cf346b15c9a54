"""How the registry differs from what the platform lists: pure, so `status` can show it
without writing and `list --refresh` / `reconcile` can record it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from morpheus.models import Forest, Node, NodeStatus
from morpheus.provider import NodeHandle


@dataclass
class Drift:
    """Active nodes the platform no longer has, and platform nodes the registry lacks."""

    lost: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)


def find_drift(nodes: Sequence[Node], handles: Sequence[NodeHandle]) -> Drift:
    """Which recorded active nodes are gone, and which listed nodes are not recorded."""
    listed = {handle.node_id for handle in handles}
    recorded = {node.id for node in nodes}
    return Drift(
        lost=[n.id for n in nodes if n.status == NodeStatus.ACTIVE and n.id not in listed],
        adopted=[h.node_id for h in handles if h.node_id not in recorded],
    )


def adopted_node(forest: Forest, handle: NodeHandle, now: datetime) -> Node:
    """The record of a node found on the platform by the forest's labels: ``failed``, so
    ``reconcile`` removes it."""
    return node_from_handle(forest.id, handle, NodeStatus.FAILED, now)


def node_from_handle(forest_id: str, handle: NodeHandle, status: NodeStatus, now: datetime) -> Node:
    """The record of a node as its platform lists it."""
    return Node(
        id=handle.node_id,
        forest_id=forest_id,
        name=f"node-{handle.index}",
        index=handle.index,
        provider_id=handle.provider_id,
        host=handle.host,
        addresses=handle.addresses,
        ports=handle.ports,
        capacity=handle.capacity,
        status=status,
        location=handle.location,
        created_at=now,
    )


def as_refreshed(
    forest: Forest, nodes: Sequence[Node], handles: Sequence[NodeHandle], now: datetime
) -> tuple[list[Node], Drift]:
    """The nodes as a refresh would record them, without recording anything."""
    drift = find_drift(nodes, handles)
    lost = set(drift.lost)
    shown = [
        node.model_copy(update={"status": NodeStatus.FAILED}) if node.id in lost else node
        for node in nodes
    ]
    by_id = {handle.node_id: handle for handle in handles}
    shown += [adopted_node(forest, by_id[node_id], now) for node_id in drift.adopted]
    return sorted(shown, key=lambda node: node.index), drift
