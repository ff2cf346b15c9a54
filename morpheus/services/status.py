"""Status: a forest as the registry, the platform and the NATS servers each see it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from morpheus.errors import MorpheusError
from morpheus.models import Event, Forest, Node, NodeState
from morpheus.monitor import MonitorTarget, NodeSample, poll_nodes
from morpheus.provider import NodeHandle
from morpheus.secret_codec import KEY_ENV
from morpheus.services import Context
from morpheus.services.convergence_events import nodes_behind
from morpheus.services.drift import as_refreshed


@dataclass
class NodeView:
    node: Node
    platform_state: NodeState | None
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
    elsewhere = forest.host is not None and forest.host != ctx.registry.host
    if elsewhere:
        # Its nodes are another machine's processes: this one can only show the record.
        platform_ok = False
        notes.append(
            f"a local forest of host {forest.host}: shown as recorded; only that host can see "
            "or change its nodes"
        )
    else:
        try:
            provider = ctx.provider(forest.provider)
            handles = {handle.node_id: handle for handle in provider.list_nodes(forest.id)}
            notes.extend(provider.status_notes())
        except MorpheusError as exc:
            platform_ok = False
            notes.append(f"provider {forest.provider} could not be asked: {exc}")
        else:
            # Read-only: shown as a refresh would record it; `list --refresh` or `reconcile`
            # records it.
            nodes, drift = as_refreshed(forest, nodes, list(handles.values()), ctx.clock())
            if drift.lost or drift.adopted:
                notes.append(
                    f"{forest.provider} differs from the registry: {len(drift.lost)} node(s) "
                    f"gone, {len(drift.adopted)} found by label; `morpheus reconcile "
                    f"{forest.id}` records and tidies up"
                )
    behind = nodes_behind(ctx, forest.id, nodes)
    if behind:
        notes.append(
            f"{', '.join(node.name for node in behind)} could not be reached by the last "
            "change of the forest and may route to, or admit, nodes it no longer has; "
            f"`morpheus reconcile {forest.id}` tries again"
        )
    if not ctx.registry.secrets.has_key and ctx.registry.secrets_encrypted(forest.id):
        notes.append(
            f"its secrets are encrypted and no registry key is set here: grow, rotate and "
            f"reconcile need {KEY_ENV} or registry.key_file"
        )
    targets = [
        MonitorTarget.for_node(node) for node in nodes if node.host is not None and not elsewhere
    ]
    samples = {
        sample.node_name: sample
        for sample in asyncio.run(poll_nodes(targets, per_node_timeout=timeout))
    }
    views = []
    for node in nodes:
        if platform_ok:
            state = handles[node.id].state if node.id in handles else NodeState.MISSING
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
