"""The create path shared by plant and grow, and the delete path shared by teardown and rollback."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from morpheus.blueprint import (
    NodeAccess,
    NodeBlueprint,
    Peer,
    RouteCredentials,
    RouteTls,
    blueprint_for,
    build_blueprint,
    forest_fields,
    labels_for,
    node_addresses,
    route_mesh,
)
from morpheus.errors import (
    ForestStateError,
    MorpheusError,
    RegistryError,
    UserDataError,
)
from morpheus.models import Forest, Node, NodeState, NodeStatus, Removal
from morpheus.provider import NodeHandle, Provider, Reservation
from morpheus.readiness import ReadinessTarget, wait_nats_ready
from morpheus.registry import Registry
from morpheus.services import Context, Progress
from morpheus.settings import Settings


def route_tls_for(
    registry: Registry, forest_id: str, reservation: Reservation, now: datetime
) -> RouteTls | None:
    """The node's route TLS files: its recorded certificate while it names exactly the
    node's addresses, else a new one from the forest CA (recorded first).  None for a
    forest recorded before routes used TLS: its routes stay plain."""
    ca = registry.forest_ca(forest_id)
    if ca is None:
        return None
    addresses = node_addresses(reservation)
    certificate = registry.node_certificate(reservation.node_id)
    if certificate is None or list(certificate.addresses) != addresses:
        certificate = ca.issue(reservation.node_id, addresses, now)
        registry.save_node_certificate(forest_id, reservation.node_id, certificate)
    return certificate.route_tls(ca)


def node_access_for(
    registry: Registry, provider: Provider, forest_id: str, node_id: str, *, new: bool
) -> NodeAccess | None:
    """The SSH channel of a node whose provider boots it from user-data, else None.

    ``new``: the node is about to be created, so it gets a new host key, its public half
    pinned in the registry first and its private half only in this blueprint (the user-data).
    Otherwise the pinned key and the forest's client key, to connect (None when the node
    was made before Morpheus pinned host keys: the provider then says it cannot reach it).
    """
    if not provider.renders_user_data:
        return None
    from morpheus.pki import SshKeyPair

    client = registry.ssh_client_key(forest_id)
    if client is None:
        client = SshKeyPair.generate()
        registry.save_ssh_client_key(forest_id, client)
    if new:
        host = SshKeyPair.generate()
        registry.save_ssh_host_key(forest_id, node_id, host.public)
        return NodeAccess(
            host_key=host.public, host_private_key=host.private, client_key=client.public
        )
    pinned = registry.ssh_host_key(node_id)
    if pinned is None:
        return None
    return NodeAccess(host_key=pinned, client_key=client.public, client_private_key=client.private)


def preview_access(provider: Provider) -> NodeAccess | None:
    """Throw-away SSH keys of the size a node gets, for user-data that is only shown."""
    return _throwaway_access() if provider.renders_user_data else None


def _throwaway_access() -> NodeAccess:
    from morpheus.pki import SshKeyPair

    host, client = SshKeyPair.generate(), SshKeyPair.generate()
    return NodeAccess(host_key=host.public, host_private_key=host.private, client_key=client.public)


def _unlikely_address(index: int) -> str:
    """An IPv6 address of the longest text form whose groups look random, as gzip sees them.

    Real forests' addresses share prefixes and compress better; these bound their size.
    """
    digest = hashlib.sha256(index.to_bytes(4, "big")).digest()
    groups = [int.from_bytes(digest[i : i + 2], "big") | 0x1000 for i in range(0, 12, 2)]
    return "2001:db8:" + ":".join(f"{group:x}" for group in groups)


def widest_blueprint(settings: Settings, node_count: int, now: datetime) -> NodeBlueprint:
    """The node of a ``node_count``-node forest with the largest user-data, or larger.

    Its last node (the longest name), routing to every peer at an IPv6 address of the
    longest text form and random-looking groups, with the firewall listing each peer
    (providers that admit routes from networks render less).
    """
    forest_id = f"forest-{int(now.timestamp())}-99"
    fields = forest_fields(settings, forest_id, "run-ffffffff", forest_id, now)
    node_id = f"{forest_id}-node-{node_count}"
    peers = tuple(Peer(host=_unlikely_address(i)) for i in range(1, node_count + 1))
    fields.update(
        {
            "node_id": node_id,
            "node_name": f"node-{node_count}",
            "index": node_count,
            "host": peers[-1].host,
            "peers": peers if node_count > 1 else (),
            "credentials": RouteCredentials.generate(),
            "tls": _widest_tls(forest_id, node_id, peers[-1].host, now),
            "access": _throwaway_access(),
            "labels": labels_for(forest_id, node_id, "run-ffffffff"),
            "admin_sources": tuple(settings.infrastructure.admin_sources)
            or ("2001:db8:ffff:ffff::/64", "203.0.113.255/32"),
        }
    )
    return build_blueprint(**fields)


def _widest_tls(forest_id: str, node_id: str, host: str, now: datetime) -> RouteTls:
    """Throw-away route TLS files of the largest size a node gets (IPv6 and IPv4 named)."""
    from morpheus.pki import ForestCA

    ca = ForestCA.generate(forest_id, now)
    return ca.issue(node_id, [host, "255.255.255.255"], now).route_tls(ca)


def check_first_boot(
    settings: Settings, provider: Provider, node_count: int, now: datetime
) -> None:
    """Before any API call of a plant or grow to ``node_count`` nodes: can the nodes boot?

    Only for providers whose nodes boot from the core's user-data: the download sources are
    verified and reachable (``check_install_sources``) and the largest node's user-data fits.
    """
    if not provider.renders_user_data:
        return
    from morpheus.install_sources import check_install_sources
    from morpheus.render import render_user_data

    check_install_sources(
        settings.integration, ipv6_only=provider.ipv6_only(), ipv4_setting=provider.ipv4_setting
    )
    try:
        render_user_data(widest_blueprint(settings, node_count, now), now=now)
    except UserDataError as exc:
        raise UserDataError(f"a forest of {node_count} nodes cannot be booted: {exc}") from exc


def provision_nodes(
    ctx: Context,
    provider: Provider,
    forest: Forest,
    nodes: Sequence[Node],
    progress: Progress,
    *,
    reconfigure: Sequence[Node] = (),
) -> list[Node]:
    """Reserve, create and wait for ``nodes`` (already recorded as planned); return them active.

    Each new node routes to the forest's active nodes and to every node of this run.  The
    existing nodes in ``reconfigure`` get the new route mesh too (a standalone node becomes a
    cluster member) and are waited for as well.  When the provider moved a node (another
    location, so another address), every node is converged to the final addresses before
    the wait, so none keeps a route to an address the forest gave up.  Registry rows follow
    each step, so a crash leaves rows teardown can act on.  Raises on the first failure; the
    caller rolls back.
    """
    from morpheus.services.converge import Convergence, converge, record_convergence

    registry = ctx.registry
    settings = ctx.settings
    for node in nodes:
        progress(node.id, "planned")
    reservations = provider.reserve_addresses(forest.id, forest.run_id, [n.id for n in nodes])
    placed = []
    for node, reservation in zip(nodes, reservations, strict=True):
        node = node.model_copy(
            update={
                "host": reservation.host,
                "addresses": reservation.addresses,
                "ports": reservation.ports,
            }
        )
        registry.save_node(node)
        placed.append(node)
    peers = route_mesh(
        registry.active_node_addresses(forest.id),
        [Peer(host=r.host, port=r.ports.cluster) for r in reservations],
    )
    credentials = registry.route_credentials(forest.id)
    now = ctx.clock()
    blueprints = [
        blueprint_for(
            settings,
            forest,
            node,
            reservation,
            peers,
            credentials,
            provider,
            now,
            route_tls_for(registry, forest.id, reservation, now),
            node_access_for(registry, provider, forest.id, node.id, new=True),
        )
        for node, reservation in zip(placed, reservations, strict=True)
    ]
    deadline = time.monotonic() + settings.provisioning.readiness_timeout
    for node in reconfigure:
        progress(node.id, "joining the new route mesh")
    converge(ctx, provider, forest, reconfigure, progress, mesh=peers, strict=True, record=False)
    handles: list[NodeHandle] = []
    for index, (node, blueprint) in enumerate(zip(placed, blueprints, strict=True)):
        node = node.model_copy(update={"status": NodeStatus.CREATING})
        registry.save_node(node)
        progress(node.id, "creating")
        handle = provider.create_node(blueprint)
        placed[index] = node.model_copy(
            update={
                "provider_id": handle.provider_id,
                "capacity": handle.capacity or blueprint.capacity,
                "location": handle.location,
                "addresses": handle.addresses or node.addresses,
            }
        )
        registry.save_node(placed[index])
        handles.append(handle)
    for index, handle in enumerate(handles):
        running = provider.wait_running(handle, deadline)
        # A provider may have moved the node (another location, so another address).
        placed[index] = placed[index].model_copy(
            update={
                "host": running.host or placed[index].host,
                "addresses": running.addresses or placed[index].addresses,
                "location": running.location or placed[index].location,
            }
        )
        registry.save_node(placed[index])
        progress(handle.node_id, "running")
    final = route_mesh(
        registry.active_node_addresses(forest.id),
        [Peer(host=node.host or "", port=node.ports.cluster) for node in placed],
    )
    # Reconfigured nodes too: a restarted node that stops at once is reported at once.
    handles_by_node = {
        **{node.id: handle_for(forest, node) for node in reconfigure},
        **{handle.node_id: handle for handle in handles},
    }

    def boot_failure(node_id: str) -> str | None:
        handle = handles_by_node.get(node_id)
        return provider.boot_failure(handle) if handle is not None else None

    def wait(*, serving_only: bool = False) -> None:
        wait_nats_ready(
            [
                ReadinessTarget.for_node(node, len(peers), serving_only=serving_only)
                for node in (*reconfigure, *placed)
            ],
            deadline=deadline,
            max_interval=settings.provisioning.readiness_interval,
            progress=progress,
            boot_failure=boot_failure,
        )

    moved = final != peers and provider.can_reconfigure
    if moved:
        # Rendered before a node moved: once every node's first boot is done (its NATS
        # answers), every node gets the addresses as they are now.
        wait(serving_only=True)
        peers = final
        converge(
            ctx,
            provider,
            forest,
            [*reconfigure, *placed],
            progress,
            mesh=peers,
            strict=True,
            record=False,
        )
    wait()
    active = []
    for node in placed:
        node = node.model_copy(update={"status": NodeStatus.ACTIVE})
        registry.save_node(node)
        active.append(node)
    if reconfigure or moved:
        # Every node was rendered with, or given, the forest as it is now.
        record_convergence(
            ctx, forest, Convergence(applied=[n.id for n in (*reconfigure, *active)])
        )
    return active


def reservation_of(node: Node) -> Reservation:
    """The reservation an existing node was made from, rebuilt from its record."""
    if node.host is None:
        raise ForestStateError(f"{node.id} has no recorded address; run `morpheus status` first")
    return Reservation(
        forest_id=node.forest_id,
        node_id=node.id,
        host=node.host,
        addresses=node.addresses,
        ports=node.ports,
        provider_ref=node.provider_id,
    )


def handle_for(forest: Forest, node: Node) -> NodeHandle:
    """A provider handle from what the registry knows, for nodes the platform did not list."""
    return NodeHandle(
        provider_id=node.provider_id or node.id,
        node_id=node.id,
        forest_id=forest.id,
        run_id=forest.run_id,
        index=node.index,
        host=node.host,
        addresses=node.addresses,
        ports=node.ports,
        state=NodeState.UNKNOWN,
    )


def record_registry_write(removal: Removal, write: Callable[[], object]) -> None:
    """Run a registry write during a teardown or rollback; if the registry fails, note it
    in ``removal`` and go on deleting.

    Machines must not keep running (and billing) because a row could not be updated: the
    rows left behind are what the next ``teardown`` acts on.
    """
    try:
        write()
    except RegistryError as exc:
        removal.failed.setdefault("registry", str(exc))


def remove_nodes(
    ctx: Context,
    provider: Provider,
    forest: Forest,
    nodes: Sequence[Node],
    progress: Progress,
    *,
    platform: Sequence[NodeHandle] = (),
) -> Removal:
    """Delete ``nodes`` and the platform handles given; rows go only once deletion succeeded."""
    removal = Removal()
    handles = {handle.node_id: handle for handle in platform}
    known = {node.id: node for node in nodes}
    batch = []
    for node_id in sorted({*known, *handles}, key=lambda n: (len(n), n)):
        node = known.get(node_id)
        if node is not None:
            deleting = node.model_copy(update={"status": NodeStatus.DELETING})
            record_registry_write(removal, lambda: ctx.registry.save_node(deleting))  # noqa: B023 - run now
        handle = handles.get(node_id)
        if handle is None:
            assert node is not None  # every id comes from one of the two maps
            handle = handle_for(forest, node)
        progress(node_id, "deleting")
        batch.append(handle)

    def done(handle: NodeHandle, error: MorpheusError | None) -> None:
        node_id = handle.node_id
        if error is not None:
            removal.failed[node_id] = str(error)
            progress(node_id, f"could not delete: {error}")
            return
        if node_id in known:
            record_registry_write(removal, lambda: ctx.registry.delete_node(node_id))
        removal.deleted.append(node_id)
        progress(node_id, "deleted")

    if batch:
        provider.delete_nodes(batch, done)
    return removal
