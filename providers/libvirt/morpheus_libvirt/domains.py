"""Finding the VMs Morpheus made on a libvirt host, by the metadata each domain carries."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from morpheus.errors import ProviderError
from morpheus.models import Capacity, NodeState
from morpheus.provider import NodeHandle
from morpheus_libvirt.addresses import NodeAddresses
from morpheus_libvirt.binding import NO_DOMAIN, OPERATION_INVALID, find, ignoring, is_libvirt_error
from morpheus_libvirt.libvirt_xml import DomainSpec, NodeMetadata, read_node_metadata
from morpheus_libvirt.settings import LibvirtSettings
from morpheus_libvirt.storage import volume_names

if TYPE_CHECKING:
    from morpheus.blueprint import NodeBlueprint

# virDomainState values (libvirt ABI) and the words NodeHandle.state uses for them.
RUNNING = 1
SHUTOFF = 5
CRASHED = 6
STATE_NAMES = {
    0: NodeState.UNKNOWN,
    1: NodeState.RUNNING,
    2: NodeState.BLOCKED,
    3: NodeState.PAUSED,
    4: NodeState.STOPPING,
    5: NodeState.STOPPED,
    6: NodeState.CRASHED,
    7: NodeState.SUSPENDED,
}
# Undefine a domain with a managed-save image or snapshots too (values from libvirt's ABI).
_UNDEFINE_MANAGED_SAVE = 1
_UNDEFINE_SNAPSHOTS_METADATA = 2


def morpheus_domains(connection: Any) -> Iterator[tuple[Any, NodeMetadata]]:
    """Every domain on this host that carries Morpheus metadata, with that metadata."""
    for domain in connection.listAllDomains(0):
        # A domain deleted while we list is simply not there.
        description = find(domain.XMLDesc, 0, missing=NO_DOMAIN)
        metadata = read_node_metadata(description) if description is not None else None
        if metadata is not None:
            yield domain, metadata


def addresses_in_use(connection: Any) -> list[str]:
    return [
        address
        for _domain, meta in morpheus_domains(connection)
        for address in (meta.host, *meta.addresses)
    ]


def lookup_domain(connection: Any, provider_id: str, node_id: str) -> Any | None:
    """The domain by UUID (the provider id), else by the node id as name; ``None`` if gone."""
    with suppress(ValueError):
        instance = str(uuid.UUID(provider_id))
        domain = find(connection.lookupByUUIDString, instance, missing=NO_DOMAIN)
        if domain is not None:
            return domain
    return find(connection.lookupByName, node_id, missing=NO_DOMAIN)


def node_handle(domain: Any, metadata: NodeMetadata, location: str) -> NodeHandle:
    """What libvirt says about one node: its metadata and the domain's state."""
    state = domain.state()[0]
    return NodeHandle(
        provider_id=domain.UUIDString(),
        node_id=metadata.node_id,
        forest_id=metadata.forest_id,
        run_id=metadata.run_id,
        index=metadata.index,
        host=metadata.host,
        addresses=list(metadata.addresses),
        ports=metadata.ports,
        capacity=metadata.capacity,
        state=STATE_NAMES.get(state, NodeState.UNKNOWN),
        location=location,
        labels=dict(metadata.labels),
    )


def destroy(domain: Any, attempts: int = 3) -> None:
    """Stop the VM; libvirt gives up on a QEMU slow to exit (a loaded host), so ask again."""
    for attempt in range(attempts):
        if not domain.isActive():
            return
        try:
            domain.destroy()
        except Exception as exc:
            if attempt + 1 == attempts or is_libvirt_error(exc, NO_DOMAIN, OPERATION_INVALID):
                raise
        else:
            return


def remove_domain(domain: Any) -> None:
    """Stop and undefine the domain; stopped or gone meanwhile is the outcome we want."""
    with ignoring(NO_DOMAIN, OPERATION_INVALID):
        destroy(domain)
    with ignoring(NO_DOMAIN):
        domain.undefineFlags(_UNDEFINE_MANAGED_SAVE | _UNDEFINE_SNAPSHOTS_METADATA)


def domain_spec(
    settings: LibvirtSettings,
    blueprint: NodeBlueprint,
    node: NodeAddresses,
    instance_id: str,
    capacity: Capacity,
    console_log: Path,
) -> DomainSpec:
    """The domain of one node, its metadata naming forest, node, run, volumes and labels."""
    disk_name, seed_name = volume_names(blueprint.node_id)
    metadata = NodeMetadata(
        forest_id=blueprint.forest_id,
        node_id=blueprint.node_id,
        run_id=blueprint.run_id,
        index=blueprint.index,
        host=node.host,
        addresses=tuple(node.all),
        ports=blueprint.ports,
        capacity=capacity,
        pool=settings.pool,
        volumes=(disk_name, seed_name),
        labels=dict(blueprint.labels),
    )
    return DomainSpec(
        name=blueprint.node_id,
        uuid=instance_id,
        virt_type=settings.virt_type,
        vcpus=capacity.cores,
        memory_mib=capacity.memory_bytes >> 20,
        pool=settings.pool,
        disk_volume=disk_name,
        seed_volume=seed_name,
        network=settings.network,
        mac=node.mac,
        metadata=metadata,
        title=f"Morpheus {blueprint.forest_id} {blueprint.node_name}",
        console_log=str(console_log),
    )


def check_unclaimed(connection: Any, blueprint: NodeBlueprint, host: str) -> None:
    """Refuse to create a node that has a domain already, or whose address one uses."""
    for _domain, other in morpheus_domains(connection):
        if other.node_id == blueprint.node_id:
            raise ProviderError(
                f"a libvirt domain for node {blueprint.node_id} already exists; delete it with "
                f"`morpheus teardown {blueprint.forest_id}` first"
            )
        if host in (other.host, *other.addresses):
            raise ProviderError(
                f"address {host} was taken by node {other.node_id} meanwhile "
                "(two plants at once on this host?); plant again"
            )


def require_node(domain: Any, handle: NodeHandle) -> None:
    """Refuse to touch a domain whose metadata does not name this very node."""
    metadata = read_node_metadata(domain.XMLDesc(0))
    if metadata is None or (metadata.forest_id, metadata.node_id) != (
        handle.forest_id,
        handle.node_id,
    ):
        raise ProviderError(
            f"libvirt domain {domain.name()} is not node {handle.node_id} of forest "
            f"{handle.forest_id} according to its metadata; refusing to delete it"
        )
