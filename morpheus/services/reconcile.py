"""Reconcile: make a forest's registry, platform and NATS configuration agree again.

The recovery after anything was interrupted (a killed `plant`, `grow` or `teardown`, a node
deleted behind Morpheus' back).  It keeps the active nodes the platform still runs (or can
restart), deletes everything else that belongs to the forest (unfinished nodes, failed
nodes, platform nodes with the forest's labels but no row), converges the survivors to a
route mesh and node firewall of exactly themselves (``services.converge``; nodes a former
convergence could not reach are tried again), and waits until they are ready.  A forest
with nothing left to keep is removed entirely, as teardown would.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from morpheus.errors import WorkInterruptedError
from morpheus.models import Forest, ForestStatus, Node, NodeStatus
from morpheus.provider import NodeHandle, Provider
from morpheus.readiness import ReadinessTarget, wait_nats_ready
from morpheus.services import Context, Progress
from morpheus.services.converge import converge
from morpheus.services.convergence_events import nodes_behind
from morpheus.services.drift import Drift, adopted_node, find_drift
from morpheus.services.provision import handle_for, remove_nodes
from morpheus.services.teardown import remove_forest


@dataclass
class ReconcilePlan:
    """What reconcile would do, from the registry and the platform's own listing."""

    forest: Forest
    keep: list[Node]
    remove: list[Node]
    untracked: list[NodeHandle]
    missing: list[Node]
    finish_teardown: bool
    #: Kept nodes the last convergence could not reach: they get the forest's configuration.
    behind: list[Node] = field(default_factory=list)

    @property
    def deletes(self) -> bool:
        """Whether carrying it out deletes nodes (or the forest)."""
        return bool(self.remove or self.untracked or self.missing or self.finish_teardown)

    @property
    def changes(self) -> bool:
        return self.deletes or bool(self.behind)


@dataclass
class Reconciliation:
    plan: ReconcilePlan
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    forest_removed: bool = False
    #: Kept nodes that could not be reached to reconfigure (node id -> why); still behind.
    behind: dict[str, str] = field(default_factory=dict)


def plan_reconcile(
    forest: Forest,
    nodes: list[Node],
    handles: list[NodeHandle],
    behind: Sequence[Node] = (),
) -> ReconcilePlan:
    """Sort the forest's nodes into kept, removed, untracked and missing (pure); ``behind``
    are the nodes the last convergence could not reach."""
    listed = {handle.node_id: handle for handle in handles}
    recorded = {node.id for node in nodes}
    keep, remove, missing = [], [], []
    for node in nodes:
        if node.status != NodeStatus.ACTIVE:
            remove.append(node)
        elif node.id not in listed:
            missing.append(node)
        else:
            keep.append(node)
    return ReconcilePlan(
        forest=forest,
        keep=keep,
        remove=remove,
        untracked=[h for node_id, h in listed.items() if node_id not in recorded],
        missing=missing,
        finish_teardown=forest.status == ForestStatus.DELETING,
        behind=[node for node in behind if node in keep],
    )


def preview(ctx: Context, forest_id: str) -> ReconcilePlan:
    forest = ctx.registry.get_forest(forest_id)
    provider = ctx.provider(forest.provider)
    nodes = ctx.registry.nodes(forest.id)
    return plan_reconcile(
        forest, nodes, provider.list_nodes(forest.id), nodes_behind(ctx, forest.id, nodes)
    )


def reconcile(ctx: Context, forest_id: str, progress: Progress) -> Reconciliation:
    """Carry out ``plan_reconcile`` under the forest's lock."""
    try:
        return _reconcile(ctx, forest_id, progress)
    except KeyboardInterrupt:
        raise WorkInterruptedError(
            f"reconcile of {forest_id} was interrupted; nothing is lost: run "
            f"`morpheus reconcile {forest_id}` again to finish"
        ) from None


def _reconcile(ctx: Context, forest_id: str, progress: Progress) -> Reconciliation:
    registry = ctx.registry
    forest = registry.get_forest(forest_id)
    provider = ctx.provider(forest.provider)
    with ctx.registry.forest_lock(forest.id, on_wait=ctx.notice) as lock:
        handles = provider.list_nodes(forest.id)
        nodes = registry.nodes(forest.id)
        plan = plan_reconcile(forest, nodes, handles, nodes_behind(ctx, forest.id, nodes))
        result = Reconciliation(plan)
        if plan.finish_teardown or not (plan.keep):
            removal = remove_forest(ctx, provider, forest.id, progress)
            result.deleted, result.failed = removal.deleted, removal.failed
            result.forest_removed = not removal.failed
            if result.forest_removed:
                lock.discard()
            return result
        if provider.can_reconfigure:
            registry.check_secrets(forest.id)  # _rejoin needs them: fail before deleting
        untracked_ids = {h.node_id for h in plan.untracked}
        removal = remove_nodes(
            ctx,
            provider,
            forest,
            [*plan.remove, *plan.missing],
            progress,
            platform=[
                h
                for h in handles
                if h.node_id in untracked_ids or h.node_id in {n.id for n in plan.remove}
            ],
        )
        result.deleted, result.failed = removal.deleted, removal.failed
        result.behind = _rejoin(ctx, provider, forest, plan.keep, progress)
        registry.set_forest_status(forest.id, ForestStatus.ACTIVE)
        summary = f"kept {len(plan.keep)} node(s), deleted {len(removal.deleted)}"
        if removal.failed:
            summary += f", could not delete {', '.join(sorted(removal.failed))}"
        if result.behind:
            summary += f", could not reconfigure {', '.join(result.behind)}"
        registry.add_event(forest.id, "reconciled", summary, ctx.clock())
        return result


def _rejoin(
    ctx: Context, provider: Provider, forest: Forest, keep: list[Node], progress: Progress
) -> dict[str, str]:
    """Converge the kept nodes to a mesh of exactly themselves (restarting stopped ones) and
    wait for those reached; returns the nodes that could not be (node id -> why)."""
    if not provider.can_reconfigure:
        return {}
    convergence = converge(ctx, provider, forest, keep, progress)
    reached = [node for node in keep if node.id in convergence.applied]
    handles = {node.id: handle_for(forest, node) for node in reached}
    wait_nats_ready(
        [ReadinessTarget.for_node(node, len(reached)) for node in reached],
        deadline=time.monotonic() + ctx.settings.provisioning.readiness_timeout,
        max_interval=ctx.settings.provisioning.readiness_interval,
        progress=progress,
        boot_failure=lambda node_id: provider.boot_failure(handles[node_id]),
    )
    return convergence.behind


def refresh(ctx: Context, forest: Forest, handles: list[NodeHandle]) -> Drift:
    """Record what the platform says, deleting nothing (`list --refresh`, `reconcile`).

    An active node the platform no longer has (deleted in a console) becomes ``failed``; a
    node the platform has with this forest's labels but the registry lacks is adopted, so
    ``teardown`` and ``reconcile`` will see it.
    """
    registry = ctx.registry
    nodes = registry.nodes(forest.id)
    drift = find_drift(nodes, handles)
    now = ctx.clock()
    for node in nodes:
        if node.id in drift.lost:
            registry.save_node(node.model_copy(update={"status": NodeStatus.FAILED}))
            registry.add_event(
                forest.id,
                "node-lost",
                f"{node.name} is gone from {forest.provider}; `morpheus reconcile` forgets it",
                now,
            )
    by_id = {handle.node_id: handle for handle in handles}
    for node_id in drift.adopted:
        registry.adopt_node(adopted_node(forest, by_id[node_id], now))
        registry.add_event(
            forest.id,
            "node-adopted",
            f"{node_id} found on {forest.provider} by its labels; `morpheus reconcile` removes it",
            now,
        )
    return drift


def refresh_all(ctx: Context) -> dict[str, Drift | str]:
    """`list --refresh`: refresh every forest; a provider that cannot be asked is reported."""
    from morpheus.errors import MorpheusError

    results: dict[str, Drift | str] = {}
    for forest in ctx.registry.list_forests():
        try:
            ctx.registry.check_changeable(forest.id, forest.host)
            handles = ctx.provider(forest.provider).list_nodes(forest.id)
        except MorpheusError as exc:
            results[forest.id] = str(exc)
            continue
        results[forest.id] = refresh(ctx, forest, handles)
    return results
