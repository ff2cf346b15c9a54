"""Plant: create a forest of N nodes that cluster, or leave nothing behind."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path

from morpheus.blueprint import (
    NodeBlueprint,
    Peer,
    RouteCredentials,
    blueprint_for,
    node_addresses,
    route_mesh,
)
from morpheus.errors import MorpheusError, PlantFailedError, UsageError
from morpheus.install_sources import describe_install_sources
from morpheus.models import Forest, ForestStatus, Node, NodeStatus, Removal
from morpheus.pki import ForestCA
from morpheus.provider import ForestPlan, PlanLine, Provider, Reservation, installed_providers
from morpheus.services import Context, Progress
from morpheus.services.provision import (
    check_first_boot,
    preview_access,
    provision_nodes,
    record_registry_write,
)
from morpheus.services.teardown import remove_forest
from morpheus.settings import cloud_provider_name

SIZES = {"small": 1, "medium": 3, "large": 5}
TWO_NODE_WARNING = (
    "a 2-node forest cannot lose a node: JetStream needs a majority of its servers (2 of 2) "
    "to elect a leader, so either node failing stops JetStream; plant 1 node, or 3 or more"
)
MODES = ("local", "cloud")


@dataclass(frozen=True)
class PlantRequest:
    """``morpheus plant TARGET [SIZE] [--nodes N]``."""

    target: str
    size: str | None = None
    nodes: int | None = None
    keep_on_failure: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class PlantPlan:
    """What a plant would create, shown before anything is."""

    provider: Provider
    size: str
    node_count: int
    lines: list[PlanLine]
    #: What the operator should know before saying yes (shown with the plan, or alone).
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlantResult:
    forest: Forest
    nodes: list[Node]


def provider_name(target: str, ctx: Context) -> str:
    """``local`` -> the local provider, ``cloud`` -> the configured one, else a provider name."""
    if target == "local":
        return ctx.settings.infrastructure.local_provider
    if target == "cloud":
        return cloud_provider_name(ctx.settings)
    installed = [info.name for info in installed_providers()]
    if target in installed:
        return target
    choices = list(dict.fromkeys([*MODES, *installed]))
    close = get_close_matches(target, choices, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"unknown target {target!r}; {hint}choose one of: {', '.join(choices)}")


def node_count(size: str | None, nodes: int | None) -> tuple[str, int]:
    """The size label and node count from a size name or ``--nodes``."""
    if nodes is not None:
        if size is not None and SIZES.get(size) not in (None, nodes):
            raise UsageError(f"size {size!r} means {SIZES[size]} nodes but --nodes is {nodes}")
        return (size or "custom", nodes)
    if size is None:
        raise UsageError("give a size (small, medium, large) or --nodes N")
    if size not in SIZES:
        close = get_close_matches(size, list(SIZES), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"unknown size {size!r}; {hint}sizes: small=1, medium=3, large=5 nodes")
    return size, SIZES[size]


def plan(ctx: Context, request: PlantRequest) -> PlantPlan:
    """Resolve the request and run the provider's pre-flight; nothing is created."""
    size, count = node_count(request.size, request.nodes)
    provider = ctx.provider(provider_name(request.target, ctx))
    check_first_boot(ctx.settings, provider, count, ctx.clock())
    forest_plan = ForestPlan(forest_id=None, node_count=count, dry_run=request.dry_run)
    provider.preflight(forest_plan)
    lines = provider.plan_lines(forest_plan)
    if provider.renders_user_data:
        sources = describe_install_sources(ctx.settings.integration)
        lines += [PlanLine(program, source) for program, source in sources.items()]
    warnings = [TWO_NODE_WARNING] if count == 2 else []
    return PlantPlan(provider, size, count, lines, warnings)


def _always() -> bool:
    return True


def plant(
    ctx: Context,
    plant_plan: PlantPlan,
    request: PlantRequest,
    progress: Progress,
    *,
    rollback_on_interrupt: Callable[[], bool] = _always,
) -> PlantResult:
    """Create the planned forest; on failure roll back everything this run made.

    On Ctrl-C, ``rollback_on_interrupt()`` is asked once (the CLI asks the operator): True
    rolls back, False keeps what was made, as ``--keep-on-failure`` would.
    """
    registry = ctx.registry
    provider = plant_plan.provider
    run_id = f"run-{secrets.token_hex(4)}"
    forest = registry.create_forest(
        provider=provider.name,
        size=plant_plan.size,
        location=None,
        run_id=run_id,
        credentials=RouteCredentials.generate(),
        now=ctx.clock(),
        # Named by the run that planted the forest: the forest id is chosen on recording.
        ca=ForestCA.generate(run_id, ctx.clock()),
        planned_nodes=plant_plan.node_count,
        # Nodes on this machine: in a shared registry, only this host may change them.
        local=not provider.costs_money,
    )
    with ctx.registry.forest_lock(forest.id, on_wait=ctx.notice) as lock:
        try:
            active = provision_nodes(ctx, provider, forest, registry.nodes(forest.id), progress)
            registry.set_forest_status(forest.id, ForestStatus.ACTIVE)
            registry.add_event(forest.id, "planted", f"{len(active)} node(s) active", ctx.clock())
        except (Exception, KeyboardInterrupt) as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            keep = request.keep_on_failure or (interrupted and not rollback_on_interrupt())
            failure = _give_up(ctx, provider, forest, exc, keep=keep, progress=progress)
            if failure.removal is not None and not failure.removal.failed:
                lock.discard()
            if isinstance(exc, MorpheusError | KeyboardInterrupt):
                raise failure from exc
            raise  # a bug: rolled back, then shown as it is
    return PlantResult(forest=registry.get_forest(forest.id), nodes=active)


def _give_up(
    ctx: Context,
    provider: Provider,
    forest: Forest,
    exc: BaseException,
    *,
    keep: bool,
    progress: Progress,
) -> PlantFailedError:
    """Keep or roll back what a failed or interrupted plant made; the error that says so."""
    registry = ctx.registry
    interrupted = isinstance(exc, KeyboardInterrupt)
    reason = "interrupted" if interrupted else str(exc) or type(exc).__name__
    what = "was interrupted" if interrupted else f"failed: {reason}"
    trouble = Removal()
    record_registry_write(
        trouble,
        lambda: registry.add_event(forest.id, "failed", f"plant failed: {reason}", ctx.clock()),
    )
    if keep:
        record_registry_write(
            trouble, lambda: registry.set_forest_status(forest.id, ForestStatus.FAILED)
        )
        for node in registry.nodes(forest.id):
            if node.status != NodeStatus.ACTIVE:
                failed = node.model_copy(update={"status": NodeStatus.FAILED})
                record_registry_write(trouble, lambda: registry.save_node(failed))  # noqa: B023 - run now
        return PlantFailedError(
            f"plant of {forest.id} {what}; what it made is kept for inspection; remove it with "
            f"`morpheus teardown {forest.id}`",
            None,
            interrupted=interrupted,
        )
    try:
        removal = remove_forest(ctx, provider, forest.id, progress)
    except MorpheusError as stopped:
        return PlantFailedError(
            f"plant of {forest.id} {what}; the rollback stopped ({stopped}), so some of its "
            f"nodes may still exist: run `morpheus teardown {forest.id}`",
            None,
            interrupted=interrupted,
        )
    except KeyboardInterrupt:
        return PlantFailedError(
            f"plant of {forest.id} {what}, and its rollback was interrupted; some nodes "
            f"may still run: `morpheus teardown {forest.id}` finishes the rollback",
            None,
            interrupted=True,
        )
    if removal.failed:
        left = ", ".join(sorted(removal.failed))
        message = (
            f"plant of {forest.id} {what}; rollback could not delete {left}: "
            f"run `morpheus teardown {forest.id}` again"
        )
    else:
        message = (
            f"plant {what}; rolled back, "
            f"{len(removal.deleted)} node(s) deleted and nothing left behind"
        )
    return PlantFailedError(message, removal, interrupted=interrupted)


PREVIEW_PREFIX = "2001:db8::"


def preview_blueprints(ctx: Context, plant_plan: PlantPlan) -> list[NodeBlueprint]:
    """The blueprints a plant would give its nodes, creating nothing.

    Addresses are not known before the provider reserves them, so the preview uses the
    documentation prefix 2001:db8::/32 in their place; everything else is what a node gets.
    """
    now = ctx.clock()
    forest_id = f"forest-{int(now.timestamp())}"
    forest = Forest(
        id=forest_id,
        provider=plant_plan.provider.name,
        size=plant_plan.size,
        status=ForestStatus.PLANTING,
        created_at=now,
        cluster_name=forest_id,
        credentials_ref="preview",
        run_id="run-preview",
    )
    nodes = [
        Node(
            id=f"{forest_id}-node-{i}",
            forest_id=forest_id,
            name=f"node-{i}",
            index=i,
            status=NodeStatus.PLANNED,
            created_at=now,
        )
        for i in range(1, plant_plan.node_count + 1)
    ]
    reservations = [
        Reservation(forest_id=forest_id, node_id=node.id, host=f"{PREVIEW_PREFIX}{node.index}")
        for node in nodes
    ]
    peers = [Peer(host=r.host, port=r.ports.cluster) for r in reservations]
    credentials = RouteCredentials.generate()
    ca = ForestCA.generate("run-preview", now)
    return [
        blueprint_for(
            ctx.settings,
            forest,
            node,
            reservation,
            peers,
            credentials,
            plant_plan.provider,
            now,
            ca.issue(node.id, node_addresses(reservation), now).route_tls(ca),
            preview_access(plant_plan.provider),
        )
        for node, reservation in zip(nodes, reservations, strict=True)
    ]


def node_user_data(ctx: Context, forest_id: str, node_name: str) -> str:
    """The cloud-init user-data an existing node gets, rendered again from the registry."""
    from morpheus.render import render_user_data

    registry = ctx.registry
    forest = registry.get_forest(forest_id)
    nodes = registry.nodes(forest.id)
    node = next((n for n in nodes if node_name in (n.name, n.id)), None)
    if node is None:
        names = ", ".join(n.name for n in nodes) or "none"
        raise UsageError(f"{forest.id} has no node {node_name!r}; its nodes: {names}")
    provider = ctx.provider(forest.provider)
    if not provider.renders_user_data:
        raise UsageError(
            f"{forest.id} is a {forest.provider} forest: its nodes do not use cloud-init, so "
            f"they get no user-data; `morpheus status {forest.id}` shows them"
        )
    from morpheus.services.converge import node_blueprint

    peers = route_mesh(registry.active_node_addresses(forest.id), [])
    blueprint = node_blueprint(ctx, provider, forest, node, peers or [Peer(host=node.host or "")])
    return render_user_data(blueprint, now=blueprint.rendered_at)


def write_user_data(ctx: Context, plant_plan: PlantPlan, directory: Path) -> list[Path]:
    """``--dry-run --user-data-dir``: each planned node's user-data, and its files readable.

    ``DIR/<node>.yaml`` is what the cloud gets (files compressed); ``DIR/<node>/`` holds each
    file the node gets at its path (``DIR/<node>/etc/nats/nats.conf``).  Everything is
    written 0600 in 0700 directories: ``nats.conf`` holds the route password.
    """
    from morpheus.render import node_files, render_user_data

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = []
    for blueprint in preview_blueprints(ctx, plant_plan):
        rendered_at = blueprint.rendered_at or ctx.clock()
        path = directory / f"{blueprint.node_id}.yaml"
        _write_private(path, render_user_data(blueprint, now=rendered_at))
        written.append(path)
        tree = directory / blueprint.node_id
        for file in node_files(blueprint, rendered_at):
            target = tree / file.path.lstrip("/")
            for parent in reversed(target.relative_to(directory).parents[:-1]):
                (directory / parent).mkdir(exist_ok=True, mode=0o700)
            _write_private(target, file.content)
        written.append(tree)
    return written


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)
