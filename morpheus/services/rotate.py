"""Rotate: new route credentials and node certificates on a running forest, keeping quorum.

nats-server takes one route user per cluster, so the password cannot be swapped on every node
at once, nor accepted in two versions.  Instead, one node at a time with readiness checked
between (two of three nodes always serve, so JetStream keeps its quorum):

1. *open*: every node stops asking routes for a password; the forest's certificates still
   decide who may route (mutual TLS, verified), and routes still present the old password.
2. *close*: the new password is recorded, then every node gets a new certificate and key
   and asks for, and presents, the new password.  A closed node dials open ones with the
   new password; an open one's old password is refused by closed nodes, but one connection
   per pair is enough.

Running it again after an interruption converges: phase 1 opens every node whatever it
holds, phase 2 makes another password.  Forests without a CA (recorded before mutual-TLS
routes) are refused: without TLS, step 1 would leave routes open to anyone.

Only ``Provider.apply_blueprint`` touches a node, so a provider that can reconfigure booted
nodes (a cloud provider over its SSH channel) rotates through this same path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from morpheus.blueprint import Peer, RouteCredentials, node_addresses
from morpheus.errors import ForestStateError, ProviderError, ReadinessError
from morpheus.models import Forest, Node, NodeStatus
from morpheus.provider import Provider
from morpheus.readiness import ReadinessTarget, wait_nats_ready
from morpheus.services import Context, Progress, no_progress
from morpheus.services.converge import Convergence, mesh_of, node_blueprint, record_convergence
from morpheus.services.provision import handle_for, reservation_of

#: How long rotate waits for a forest to show itself healthy before changing anything.
PRECHECK_SECONDS = 10.0


@dataclass
class Rotation:
    """What ``rotate`` replaced."""

    forest: Forest
    nodes: list[Node] = field(default_factory=list)


def rotate(ctx: Context, forest_id: str, progress: Progress) -> Rotation:
    """Replace the forest's route password and every node's certificate, node by node."""
    registry = ctx.registry
    forest = registry.get_forest(forest_id)
    provider = ctx.provider(forest.provider)
    if not provider.can_reconfigure:
        raise ProviderError(
            f"the {provider.name} provider cannot reconfigure running nodes yet, so "
            f"{forest.id} cannot be rotated in place; plant a new forest to get new "
            "credentials",
            "cannot_reconfigure",
        )
    with ctx.registry.forest_lock(forest.id):
        forest = registry.get_forest(forest.id)
        ca = registry.forest_ca(forest.id)
        if ca is None:
            raise ForestStateError(
                f"{forest.id} was planted before routes used TLS and has no route CA; "
                "rotating it would leave its routes open: plant a new forest instead"
            )
        nodes = [n for n in registry.nodes(forest.id) if n.status == NodeStatus.ACTIVE]
        if len(nodes) < 2:
            raise ForestStateError(
                f"{forest.id} has {len(nodes)} active node(s) and no routes to rotate; "
                "a forest of one node gets its credentials when it grows"
            )
        try:
            _wait_ready(ctx, nodes, no_progress, seconds=PRECHECK_SECONDS)
        except ReadinessError as exc:
            raise ForestStateError(
                f"{forest.id} is not healthy ({exc}); rotate changes one node at a time and "
                "needs every other node serving: bring it back or run `morpheus reconcile` first"
            ) from None
        mesh = mesh_of(nodes)
        old = registry.route_credentials(forest.id)
        registry.add_event(forest.id, "rotating", "rotating route credentials", ctx.clock())
        for node in nodes:
            progress(node.id, "accepting routes by certificate alone")
            _apply(ctx, provider, forest, node, nodes, mesh, old, progress, password_required=False)
        new = RouteCredentials.generate()
        registry.set_route_password(forest.id, new)
        for node in nodes:
            progress(node.id, "new certificate and password")
            reservation = reservation_of(node)
            certificate = ca.issue(node.id, node_addresses(reservation), ctx.clock())
            registry.save_node_certificate(forest.id, node.id, certificate)
            _apply(ctx, provider, forest, node, nodes, mesh, new, progress, password_required=True)
        registry.add_event(
            forest.id,
            "rotated",
            f"new route password and certificates for {len(nodes)} node(s)",
            ctx.clock(),
        )
        record_convergence(ctx, forest, Convergence(applied=[node.id for node in nodes]))
    return Rotation(registry.get_forest(forest.id), nodes)


def _apply(
    ctx: Context,
    provider: Provider,
    forest: Forest,
    node: Node,
    nodes: Sequence[Node],
    mesh: Sequence[Peer],
    credentials: RouteCredentials,
    progress: Progress,
    *,
    password_required: bool,
) -> None:
    """Give one node its new configuration, then wait until every node is ready again."""
    blueprint = node_blueprint(ctx, provider, forest, node, mesh, credentials).model_copy(
        update={"route_password_required": password_required}
    )
    provider.apply_blueprint(handle_for(forest, node), blueprint)
    _wait_ready(ctx, nodes, progress, seconds=ctx.settings.provisioning.readiness_timeout)


def _wait_ready(ctx: Context, nodes: Sequence[Node], progress: Progress, *, seconds: float) -> None:
    """Every node healthy and seeing all the others."""
    wait_nats_ready(
        [ReadinessTarget.for_node(node, len(nodes)) for node in nodes],
        deadline=time.monotonic() + seconds,
        max_interval=ctx.settings.provisioning.readiness_interval,
        progress=progress,
    )
