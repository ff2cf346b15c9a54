"""Converge: every reachable node of a forest rendered from the forest's current intent.

After any change of membership or address (plant with a location fallback, grow, a node
deleted by ``reconcile``, ``rotate``) every node's routes and node firewall must name exactly
the forest's nodes: no route to an address the forest no longer holds, port 6222 admitted
from nothing else.  This is the one path that gets them there: each node's intent is
computed from the registry (``node_blueprint``) and handed to ``Provider.apply_blueprint``,
several nodes at once.

A node that cannot be reached keeps its previous configuration (``apply_blueprint`` writes
a node's files as a whole or not at all) and is reported, one line each, and recorded: the
forest's ``behind`` event names it until a later convergence reaches it, and ``reconcile``
treats a forest with nodes behind as one with work to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from morpheus.blueprint import NodeBlueprint, Peer, RouteCredentials, blueprint_for
from morpheus.errors import MorpheusError
from morpheus.models import Forest, Node
from morpheus.provider import Provider
from morpheus.services import Context, Progress
from morpheus.services.convergence_events import BEHIND_EVENT, CONVERGED_EVENT
from morpheus.services.provision import (
    handle_for,
    node_access_for,
    reservation_of,
    route_tls_for,
)

#: How many nodes are reconfigured at once (each is an SSH session on a cloud node).
MAX_PARALLEL = 8


@dataclass
class Convergence:
    """What one convergence did: the nodes that took their configuration and those that
    could not be reached (node id -> why)."""

    applied: list[str] = field(default_factory=list)
    behind: dict[str, str] = field(default_factory=dict)


def mesh_of(nodes: Sequence[Node]) -> list[Peer]:
    """The route mesh of exactly ``nodes``: each one's recorded address and cluster port."""
    return [Peer(host=node.host or "", port=node.ports.cluster) for node in nodes]


def node_blueprint(
    ctx: Context,
    provider: Provider,
    forest: Forest,
    node: Node,
    mesh: Sequence[Peer],
    credentials: RouteCredentials | None = None,
) -> NodeBlueprint:
    """An existing node's blueprint, from its record and the route mesh ``mesh`` (one peer:
    standalone); its certificate is issued again when it no longer names its addresses."""
    reservation = reservation_of(node)
    now = ctx.clock()
    return blueprint_for(
        ctx.settings,
        forest,
        node,
        reservation,
        mesh,
        credentials or ctx.registry.route_credentials(forest.id),
        provider,
        now,
        route_tls_for(ctx.registry, forest.id, reservation, now),
        node_access_for(ctx.registry, provider, forest.id, node.id, new=False),
    )


def converge(
    ctx: Context,
    provider: Provider,
    forest: Forest,
    nodes: Sequence[Node],
    progress: Progress,
    *,
    mesh: Sequence[Peer] | None = None,
    strict: bool = False,
    record: bool = True,
) -> Convergence:
    """Give each of ``nodes`` its blueprint with the route mesh ``mesh`` (by default exactly
    ``nodes``), up to ``MAX_PARALLEL`` at once.

    ``strict``: a node that could not be reached raises (the first such error, once every
    node was tried), for callers that roll back.  Otherwise it is reported through
    ``progress`` and, with ``record``, recorded as behind (``nodes`` must then be the whole
    forest: the record replaces the last one).
    """
    peers = list(mesh) if mesh is not None else mesh_of(nodes)
    # Rendered here, on this thread: certificates may be issued and recorded.
    work = [(node, node_blueprint(ctx, provider, forest, node, peers)) for node in nodes]
    result = Convergence()
    errors: dict[str, MorpheusError] = {}
    for node, _ in work:
        progress(node.id, "reconfiguring")
    if work:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(work))) as pool:
            futures = {
                pool.submit(provider.apply_blueprint, handle_for(forest, node), blueprint): node
                for node, blueprint in work
            }
            for future in as_completed(futures):
                node = futures[future]
                try:
                    future.result()
                except MorpheusError as exc:
                    errors[node.id] = exc
                    result.behind[node.id] = str(exc)
                    progress(node.id, f"not reconfigured: {exc}")
                else:
                    result.applied.append(node.id)
    result.applied.sort(key=lambda node_id: [n.id for n in nodes].index(node_id))
    if strict and errors:
        first = next(node.id for node in nodes if node.id in errors)
        raise errors[first]
    if record:
        record_convergence(ctx, forest, result)
    return result


def record_convergence(ctx: Context, forest: Forest, result: Convergence) -> None:
    """Say in the forest's history whether every node has its configuration now."""
    if result.behind:
        listed = "; ".join(f"{node_id} ({why})" for node_id, why in result.behind.items())
        message = (
            f"{len(result.behind)} node(s) behind the forest's configuration: {listed}; "
            f"`morpheus reconcile {forest.id}` tries again"
        )
        ctx.registry.add_event(forest.id, BEHIND_EVENT, message, ctx.clock())
    else:
        message = f"{len(result.applied)} node(s) have the forest's configuration"
        ctx.registry.add_event(forest.id, CONVERGED_EVENT, message, ctx.clock())
