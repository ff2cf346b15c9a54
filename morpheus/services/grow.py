"""Grow: judge a forest's load and add nodes that really join it.

``assess`` polls every node and decides (no changes); ``expand`` acts on a decision to grow.
``expand`` takes the forest's lock, decides again on fresh registry state (another cron run
may have grown it meanwhile), records ``last_expansion`` *before* provisioning so overlapping
runs see the cooldown, and on failure removes only the nodes it added.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from morpheus.errors import GrowFailedError, JetStreamMigrationError, MorpheusError
from morpheus.growth import (
    GrowthAction,
    GrowthDecision,
    GrowthPolicy,
    NodeVerdict,
    decide,
    judge_node,
)
from morpheus.models import Forest, ForestStatus, Node, NodeStatus
from morpheus.monitor import ForestLoad, MonitorTarget, NodeSample, aggregate, poll_nodes
from morpheus.services import Context, Progress

if TYPE_CHECKING:
    from morpheus.early_requests import EarlyRequests
    from morpheus.jetstream import RaisedStream
    from morpheus.provider import Provider
    from morpheus.settings import GrowthSettings

#: How long a second ``grow`` waits for the first to finish before giving up.
LOCK_TIMEOUT_SECONDS = 900.0


def policy_from(growth: GrowthSettings, threshold: int | None = None) -> GrowthPolicy:
    """The growth policy from config; ``--threshold`` sets both thresholds."""
    return GrowthPolicy(
        enabled=growth.enabled,
        threshold_cpu=threshold or growth.threshold_cpu,
        threshold_memory=threshold or growth.threshold_memory,
        max_nodes=growth.max_nodes,
        cooldown_minutes=growth.cooldown_minutes,
    )


@dataclass
class Assessment:
    """A forest's load as its NATS servers report it, and what the policy makes of it.

    ``nodes``, ``samples`` and ``verdicts`` run in step, one entry per active node.
    """

    forest: Forest
    nodes: list[Node]
    samples: list[NodeSample]
    verdicts: list[NodeVerdict]
    load: ForestLoad
    policy: GrowthPolicy
    decision: GrowthDecision
    assessed_at: datetime


@dataclass
class Expansion:
    decision: GrowthDecision
    added: list[Node] = field(default_factory=list)
    #: Streams kept on one node that were raised to the forest's replica count.
    raised: list[RaisedStream] = field(default_factory=list)
    #: What the operator should know although growth succeeded.
    warnings: list[str] = field(default_factory=list)


def _targets(nodes: list[Node]) -> list[MonitorTarget]:
    return [MonitorTarget.for_node(node) for node in nodes]


def _can_reconfigure(provider_name: str) -> bool:
    from morpheus.provider import load_provider_class

    try:
        return load_provider_class(provider_name).can_reconfigure
    except MorpheusError:
        # A missing or broken plugin does not hide the figures; growing reports it.
        return True


def assess(
    ctx: Context,
    forest_id: str,
    policy: GrowthPolicy,
    *,
    per_node_timeout: float = 2.0,
    dry_run: bool = False,
    early: EarlyRequests | None = None,
) -> Assessment:
    """Poll every active node of the forest and decide; changes nothing (``dry_run`` only
    words the decision: "would add"). ``early``: requests the CLI sent as it started (see
    ``morpheus.early_requests``), read in place of asking again."""
    forest = ctx.registry.get_forest(forest_id)
    # Another host's local nodes are not reachable from here: say so before polling them.
    ctx.registry.check_changeable(forest.id, forest.host)
    nodes = [n for n in ctx.registry.nodes(forest.id) if n.status == NodeStatus.ACTIVE]
    samples = asyncio.run(
        poll_nodes(_targets(nodes), per_node_timeout=per_node_timeout, early=early)
    )
    load = aggregate(samples)
    now = ctx.clock()
    decision = decide(
        load,
        policy,
        node_count=len(nodes),
        last_expansion=forest.last_expansion,
        now=now,
        can_reconfigure=len(nodes) != 1 or _can_reconfigure(forest.provider),
        dry_run=dry_run,
    )
    verdicts = [judge_node(sample, policy) for sample in samples]
    return Assessment(forest, nodes, samples, verdicts, load, policy, decision, now)


def expand(ctx: Context, assessment: Assessment, progress: Progress) -> Expansion:
    """Act on an assessment: add nodes if, under the lock, the decision is still to grow."""
    # Imported here: `grow` that only looks (the cron run's usual case) starts without them.
    from morpheus.jetstream import adopt_streams, read_streams
    from morpheus.services.client_tunnels import can_reach_clients, client_urls
    from morpheus.services.converge import converge
    from morpheus.services.provision import check_first_boot, provision_nodes, remove_nodes

    registry = ctx.registry
    with ctx.registry.forest_lock(
        assessment.forest.id, timeout=LOCK_TIMEOUT_SECONDS, on_wait=ctx.notice
    ):
        forest = registry.get_forest(assessment.forest.id)
        existing = [n for n in registry.nodes(forest.id) if n.status == NodeStatus.ACTIVE]
        now = ctx.clock()
        provider = ctx.provider(forest.provider)
        decision = decide(
            assessment.load,
            assessment.policy,
            node_count=len(existing),
            last_expansion=forest.last_expansion,
            now=now,
            can_reconfigure=provider.can_reconfigure,
        )
        if decision.action != GrowthAction.GROW:
            return Expansion(decision)
        registry.check_secrets(forest.id)
        check_first_boot(ctx.settings, provider, len(existing) + decision.nodes_to_add, now)
        standalone = len(existing) == 1
        streams = read_streams(existing[0].monitor_url or "") if standalone else []
        if streams and not can_reach_clients(provider):
            raise JetStreamMigrationError(
                f"{existing[0].id} keeps {len(streams)} stream(s) "
                f"({', '.join(stream.name for stream in streams)}) that it declares again as it "
                f"joins a cluster, through its NATS client port, which this machine cannot "
                f"reach on a {provider.name} node: not grown, nothing was changed; plant a "
                "forest of 3 or more nodes for streams that must grow with it"
            )
        reconfigure = existing if provider.can_reconfigure else []
        # Recorded before provisioning: an overlapping run now sees the cooldown.
        registry.set_last_expansion(forest.id, now)
        registry.set_forest_status(forest.id, ForestStatus.GROWING)
        registry.add_event(forest.id, "growing", decision.message, now)
        new = registry.plan_nodes(forest.id, decision.nodes_to_add, now)
        try:
            added = provision_nodes(ctx, provider, forest, new, progress, reconfigure=reconfigure)
            if streams:
                node_one = existing[0]
                with client_urls(ctx, provider, forest, [node_one]) as (client_url,):
                    asyncio.run(adopt_streams(client_url, streams, f"node:{node_one.id}"))
        except (MorpheusError, KeyboardInterrupt) as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            new_ids = {n.id for n in new}
            removal = remove_nodes(
                ctx,
                provider,
                forest,
                [n for n in registry.nodes(forest.id) if n.id in new_ids],
                progress,
                platform=[h for h in provider.list_nodes(forest.id) if h.node_id in new_ids],
            )
            if reconfigure:
                # Back to the forest as it was; a node that cannot be reached is recorded.
                converge(ctx, provider, forest, reconfigure, progress)
            registry.set_forest_status(forest.id, ForestStatus.ACTIVE)
            left = f"; could not delete {', '.join(removal.failed)}" if removal.failed else ""
            registry.add_event(forest.id, "failed", f"growth failed: {reason}{left}", ctx.clock())
            failure = GrowFailedError(
                f"growing {forest.id} failed: {reason}; the new node(s) were removed{left}"
            )
            if isinstance(exc, KeyboardInterrupt):
                failure.exit_code = 130  # Ctrl-C, like every interrupted command
            raise failure from exc
        registry.set_forest_status(forest.id, ForestStatus.ACTIVE)
        registry.add_event(
            forest.id,
            "node-added",
            f"added {', '.join(n.name for n in added)} ({len(existing) + len(added)} nodes)",
            ctx.clock(),
        )
        expansion = Expansion(decision, added)
        _raise_single_replicas(ctx, provider, forest, [*existing, *added], expansion)
        return expansion


def _raise_single_replicas(
    ctx: Context, provider: Provider, forest: Forest, nodes: Sequence[Node], expansion: Expansion
) -> None:
    """Once the forest has 3 or more nodes, raise its R1 streams so one lost node loses nothing.

    The nodes are already added: a failure here is a warning, never a rollback.
    """
    from morpheus.jetstream import raise_replicas
    from morpheus.services.client_tunnels import can_reach_clients, client_urls

    growth = ctx.settings.growth
    replicas = min(growth.stream_replicas, len(nodes))
    if not growth.raise_stream_replicas or len(nodes) < 3:
        return
    if not can_reach_clients(provider):
        expansion.warnings.append(
            f"streams kept on one node were not raised to {replicas} replicas: this machine "
            f"cannot open NATS client connections to the {provider.name} provider's nodes"
        )
        return
    deadline = time.monotonic() + ctx.settings.provisioning.readiness_timeout
    try:
        with client_urls(ctx, provider, forest, [n for n in nodes if n.host]) as urls:
            expansion.raised = asyncio.run(raise_replicas(urls, replicas, deadline))
    except MorpheusError as exc:
        expansion.warnings.append(f"streams kept on one node were not all raised: {exc}")
        ctx.registry.add_event(forest.id, "replicas", expansion.warnings[-1], ctx.clock())
        return
    if expansion.raised:
        names = ", ".join(stream.name for stream in expansion.raised)
        ctx.registry.add_event(
            forest.id, "replicas", f"raised {names} to {replicas} replicas", ctx.clock()
        )
