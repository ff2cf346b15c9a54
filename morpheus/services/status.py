"""Status: a forest as the registry, the platform and the NATS servers each see it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from morpheus.errors import MorpheusError
from morpheus.models import Event, Forest, Node
from morpheus.monitor import MonitorTarget, NodeSample, poll_nodes
from morpheus.provider import NodeHandle
from morpheus.services import Context
from morpheus.services.reconcile import refresh


@dataclass
class NodeView:
    node: Node
    platform_state: str | None
    sample: NodeSample | None


@dataclass
class ForestView:
    forest: Forest
    nodes: list[NodeView]
    events: list[Event]
    untracked: list[NodeHandle] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def forest_status(ctx: Context, forest_id: str, *, timeout: float = 3.0) -> ForestView:
    """Registry rows joined with the provider's view and each node's NATS figures."""
    forest = ctx.registry.get_forest(forest_id)
    nodes = ctx.registry.nodes(forest.id)
    notes: list[str] = []
    handles: dict[str, NodeHandle] = {}
    platform_ok = True
    try:
        provider = ctx.provider(forest.provider)
        handles = {handle.node_id: handle for handle in provider.list_nodes(forest.id)}
        notes.extend(provider.status_notes())
    except MorpheusError as exc:
        platform_ok = False
        notes.append(f"provider {forest.provider} could not be asked: {exc}")
    else:
        drift = refresh(ctx, forest, list(handles.values()))
        if drift.lost or drift.adopted:
            notes.append(
                f"registry updated from {forest.provider}: {len(drift.lost)} node(s) gone, "
                f"{len(drift.adopted)} found by label; `morpheus reconcile {forest.id}` tidies up"
            )
        nodes = ctx.registry.nodes(forest.id)
    targets = [
        MonitorTarget(
            node_name=node.id,
            host=node.host,
            port=node.ports.monitor,
            memory_bytes=node.capacity.memory_bytes if node.capacity else None,
        )
        for node in nodes
        if node.host is not None
    ]
    samples = {
        sample.node_name: sample
        for sample in asyncio.run(poll_nodes(targets, per_node_timeout=timeout))
    }
    views = []
    for node in nodes:
        if platform_ok:
            state = handles[node.id].state if node.id in handles else "missing"
        else:
            state = None
        views.append(NodeView(node=node, platform_state=state, sample=samples.get(node.id)))
    recorded = {node.id for node in nodes}
    return ForestView(
        forest=forest,
        nodes=views,
        events=ctx.registry.events(forest.id),
        untracked=[h for node_id, h in handles.items() if node_id not in recorded],
        notes=notes,
    )
