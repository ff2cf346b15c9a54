"""The libvirt provider: each node is a KVM/QEMU virtual machine booting cloud-init user-data.

Per node it creates a qcow2 overlay of the base image and a NoCloud seed ISO in the storage
pool, and a domain whose ``<metadata>`` names forest, node and run.  That metadata is how
``list_nodes`` and ``delete_node`` find nodes from libvirt itself.  Every node sits on one
morpheus-managed libvirt network per host, with a static address fixed by
``reserve_addresses`` before any node boots, so each node's nats.conf carries the full mesh.

Platform work: ``storage``, ``claims`` (network, addresses), ``domains``, ``console``.
``libvirt.libvirtError`` becomes ``ProviderError`` once, in each public method's block.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import BaseModel

from morpheus.errors import PreflightError, ProviderError
from morpheus.models import NodeState
from morpheus.provider import ForestPlan, NodeHandle, PlanLine, Reservation
from morpheus.provider_config import ProviderContext
from morpheus.reconfigure import ReconfiguredOverSsh
from morpheus.ssh_keys import find_public_key
from morpheus.waiting import poll_until
from morpheus_libvirt.addresses import NetworkPlan, addresses_of, plan_addresses
from morpheus_libvirt.binding import (
    NO_DOMAIN,
    find,
    ignoring,
    libvirt_errors,
    load_libvirt,
    open_connection,
    upload_volume,
)
from morpheus_libvirt.claims import claim_all, morpheus_network, release_claims
from morpheus_libvirt.console import ConsoleLogs
from morpheus_libvirt.domains import (
    CRASHED,
    RUNNING,
    SHUTOFF,
    STATE_NAMES,
    addresses_in_use,
    check_unclaimed,
    domain_spec,
    lookup_domain,
    morpheus_domains,
    node_handle,
    remove_domain,
    require_node,
)
from morpheus_libvirt.kvm_access import host_problem
from morpheus_libvirt.libvirt_xml import (
    dns_hosts,
    domain_xml,
    overlay_volume_xml,
    raw_volume_xml,
    read_node_metadata,
)
from morpheus_libvirt.seed import SeedFiles, build_seed_iso, meta_data, network_config
from morpheus_libvirt.settings import LibvirtSettings
from morpheus_libvirt.storage import (
    VolumeUpload,
    base_image,
    configured_base_volume,
    delete_leftover_volumes,
    delete_volume,
    delete_volumes,
    require_base_image_setting,
    storage_pool,
    volume_names,
)

if TYPE_CHECKING:
    from morpheus.blueprint import NodeBlueprint


def _utcnow() -> datetime:
    return datetime.now(UTC)


def operator_public_keys(key_path: Path | None, home: Path) -> tuple[str, ...]:
    """The SSH key the nodes' default user accepts, so an operator can log in to a VM; with
    none, nodes take no key and ``virsh console`` shows what they do."""
    found = find_public_key(key_path, home)
    return () if found is None else (found[1],)


class LibvirtProvider(ReconfiguredOverSsh):
    """Nodes as KVM/QEMU virtual machines on one libvirt host (local or remote URI)."""

    name: ClassVar[str] = "libvirt"
    costs_money: ClassVar[bool] = False
    settings_model: ClassVar[type[BaseModel]] = LibvirtSettings
    ipv4_setting: ClassVar[str | None] = "providers.libvirt.ipv4_subnet"

    def __init__(
        self,
        settings: LibvirtSettings,
        state_dir: Path,
        *,
        connect: Callable[[str], Any] = open_connection,
        upload: VolumeUpload = upload_volume,
        clock: Callable[[], datetime] = _utcnow,
        poll_interval: float = 0.5,
        ssh_public_keys: Sequence[str] = (),
    ) -> None:
        """``connect`` and ``upload`` are the seams tests use (libvirt's test driver stores
        no volume contents); ``state_dir`` holds base image downloads while they upload."""
        self.settings = settings
        self.state_dir = state_dir
        self.ssh_public_keys = tuple(ssh_public_keys)
        self.network_plan = NetworkPlan.from_strings(
            settings.network, settings.ipv6_prefix, settings.ipv4_subnet
        )
        self._connect = connect
        self._upload = upload
        self._clock = clock
        self._poll_interval = poll_interval
        self._connection: Any = None
        self.consoles = ConsoleLogs(settings)

    @classmethod
    def from_config(cls, config: LibvirtSettings, context: ProviderContext) -> Self:
        keys = operator_public_keys(context.ssh_key_path, Path.home())
        return cls(config, context.state_dir / "libvirt", ssh_public_keys=keys)

    def ipv6_only(self) -> bool:
        return self.network_plan.ipv4 is None

    # console logs -----------------------------------------------------------------------

    def console_log(self, node_id: str) -> Path:
        """The file on the libvirt host that receives the node's serial console."""
        return self.consoles.path(node_id)

    @property
    def host_is_here(self) -> bool:
        """Whether the libvirt host is this machine, so its files can be read here."""
        return self.consoles.here

    # connection -------------------------------------------------------------------------

    def connection(self) -> Any:
        """The open libvirt connection, (re)opened on first use or after it died."""
        if self._connection is not None:
            with suppress(Exception):
                if self._connection.isAlive():
                    return self._connection
            self.close()
        load_libvirt()  # a missing binding is reported before anything else
        self._connection = self._connect(self.settings.uri)
        return self._connection

    def close(self) -> None:
        """Close the connection (libvirt's test driver forgets everything when the last closes)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with suppress(Exception):
                connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _delete(self, connection: Any, node_id: str, domain: Any | None) -> None:
        """Destroy and undefine ``domain`` (already known to be this node's), delete the volumes."""
        pool_name = self.settings.pool
        volumes = list(volume_names(node_id))
        if domain is not None:
            description = find(domain.XMLDesc, 0, missing=NO_DOMAIN)
            metadata = read_node_metadata(description) if description is not None else None
            if metadata is not None:
                pool_name = metadata.pool
                volumes = list(dict.fromkeys([*metadata.volumes, *volumes]))
            remove_domain(domain)
        self.consoles.remove(node_id)
        release_claims(connection, self.settings.network, lambda claimant: claimant != node_id)
        delete_volumes(connection, pool_name, volumes)

    # contract ---------------------------------------------------------------------------

    def preflight(self, plan: ForestPlan) -> None:
        try:
            with libvirt_errors("check the libvirt host"):
                connection = self.connection()
                problem = host_problem(
                    connection.getCapabilities(), self.settings.virt_type, self.host_is_here
                )
                if problem is not None:
                    raise PreflightError(problem)
                pool = storage_pool(connection, self.settings.pool)
                require_base_image_setting(self.settings)
                if self.settings.base_image is not None:
                    configured_base_volume(connection, pool, self.settings)
                morpheus_network(connection, self.network_plan, create=False)
                plan_addresses(self.network_plan, addresses_in_use(connection), plan.node_count)
                host_mib = int(connection.getInfo()[1])
        except PreflightError:
            raise
        except ProviderError as exc:
            raise PreflightError(str(exc)) from exc
        machine = self.settings.machine
        wanted = machine.memory_mib * plan.node_count
        if wanted > host_mib:
            raise PreflightError(
                f"{plan.node_count} node(s) of {machine.memory_mib} MiB need {wanted} MiB but "
                f"the libvirt host has {host_mib} MiB; plant fewer nodes or pick a smaller "
                "providers.libvirt.profile"
            )

    def plan_lines(self, plan: ForestPlan) -> list[PlanLine]:
        settings = self.settings
        addresses = ", ".join(filter(None, [settings.ipv6_prefix, settings.ipv4_subnet]))
        return [
            PlanLine(
                "machines",
                f"{plan.node_count} × VM with {settings.machine.describe()} "
                f"(profile {settings.profile})",
            ),
            PlanLine("libvirt", f"{settings.uri} ({settings.virt_type}), pool {settings.pool}"),
            PlanLine("network", f"{settings.network} ({addresses})"),
            PlanLine("image", settings.base_image or settings.base_image_url or "not configured"),
        ]

    def reserve_addresses(
        self, forest_id: str, run_id: str, node_ids: list[str]
    ) -> list[Reservation]:
        with libvirt_errors("reserve node addresses"):
            connection = self.connection()
            network = morpheus_network(connection, self.network_plan, create=True)
            assert network is not None
            taken = {*addresses_in_use(connection), *dns_hosts(network.XMLDesc(0))}
            chosen = claim_all(network, self.network_plan, taken, node_ids)
        return [
            Reservation(forest_id=forest_id, node_id=node_id, host=node.host, addresses=node.all)
            for node_id, node in zip(node_ids, chosen, strict=True)
        ]

    def blueprint_fields(self, reservation: Reservation) -> dict[str, object]:
        nets = (self.network_plan.ipv6, self.network_plan.ipv4)
        return {
            "capacity": self.settings.machine.capacity,
            # Unless reconfigured, admit routes from the network where a grow's nodes will be.
            "route_sources": () if self.can_reconfigure else tuple(str(n) for n in nets if n),
        }

    def create_node(self, blueprint: NodeBlueprint) -> NodeHandle:
        from morpheus.render import render_user_data

        node_id = blueprint.node_id
        node = addresses_of(self.network_plan, blueprint.host)
        instance_id = str(uuid.uuid4())
        # Rendered before anything is created: a template error leaves nothing behind.
        seed = build_seed_iso(
            SeedFiles(
                user_data=render_user_data(blueprint, now=blueprint.rendered_at or self._clock()),
                meta_data=meta_data(instance_id, node_id, self.ssh_public_keys),
                network_config=network_config(self.network_plan, node),
            )
        )
        machine = self.settings.machine
        capacity = blueprint.capacity or machine.capacity
        disk_name, seed_name = volume_names(node_id)
        spec = domain_spec(
            self.settings, blueprint, node, instance_id, capacity, self.console_log(node_id)
        )
        with libvirt_errors(f"create node {node_id}"):
            connection = self.connection()
            pool = storage_pool(connection, self.settings.pool)
            morpheus_network(connection, self.network_plan, create=True)
            base = base_image(
                connection, pool, self.settings, self.state_dir / "downloads", self._upload
            )
            check_unclaimed(connection, blueprint, node.host)
            try:
                # Leftovers of an earlier failed create of this very node.
                delete_volume(pool, disk_name)
                delete_volume(pool, seed_name)
                disk_bytes = capacity.disk_bytes or machine.capacity.disk_bytes or 0
                pool.createXML(overlay_volume_xml(disk_name, disk_bytes, base.path, base.format), 0)
                seed_volume = pool.createXML(raw_volume_xml(seed_name, len(seed)), 0)
                self._upload(connection, seed_volume, [seed], len(seed))
                connection.defineXML(domain_xml(spec)).create()
            except Exception:
                # Only a domain with our fresh UUID is ours to remove; a same-named one is not.
                with suppress(Exception):
                    domain = find(connection.lookupByUUIDString, instance_id, missing=NO_DOMAIN)
                    self._delete(connection, node_id, domain)
                raise
        return NodeHandle.from_blueprint(
            blueprint,
            provider_id=instance_id,
            state=NodeState.STARTING,
            host=node.host,
            addresses=node.all,
            capacity=capacity,
            location=self.settings.uri,
        )

    def wait_running(self, handle: NodeHandle, deadline: float) -> NodeHandle:
        state_name = "unknown"

        def running() -> NodeHandle | None:
            nonlocal state_name
            with libvirt_errors(f"read the state of node {handle.node_id}"):
                connection = self.connection()
                domain = lookup_domain(connection, handle.provider_id, handle.node_id)
                if domain is None:
                    raise ProviderError(f"the VM of node {handle.node_id} no longer exists")
                state = domain.state()[0]
                if state == RUNNING:
                    metadata = read_node_metadata(domain.XMLDesc(0))
                    if metadata is None:
                        return handle.model_copy(update={"state": NodeState.RUNNING})
                    return node_handle(domain, metadata, self.settings.uri)
            state_name = STATE_NAMES.get(state, str(state))
            if state in (SHUTOFF, CRASHED):
                raise ProviderError(
                    f"the VM of node {handle.node_id} is {state_name}; see "
                    f"`virsh -c {self.settings.uri} console {handle.node_id}` and "
                    f"/var/log/libvirt/qemu/{handle.node_id}.log on the libvirt host"
                )
            return None

        return poll_until(
            running,
            deadline=deadline,
            interval=self._poll_interval,
            timeout_error=lambda: ProviderError(
                f"the VM of node {handle.node_id} is still {state_name}, not running, "
                "at the deadline"
            ),
        )

    def boot_failure(self, handle: NodeHandle) -> str | None:
        """The bootstrap's failure line in the node's serial console log, read when local.

        On a remote libvirt host the log stays there (``status_notes`` says where).
        """
        return self.consoles.boot_failure(handle.node_id)

    def list_nodes(self, forest_id: str) -> list[NodeHandle]:
        with libvirt_errors(f"list the nodes of {forest_id}"):
            connection = self.connection()
            handles = []
            for domain, metadata in morpheus_domains(connection):
                if metadata.forest_id == forest_id:
                    with ignoring(NO_DOMAIN):
                        handles.append(node_handle(domain, metadata, self.settings.uri))
        return sorted(handles, key=lambda h: h.index)

    def delete_node(self, handle: NodeHandle) -> None:
        with libvirt_errors(f"delete node {handle.node_id}"):
            connection = self.connection()
            domain = lookup_domain(connection, handle.provider_id, handle.node_id)
            if domain is not None:
                require_node(domain, handle)
            self._delete(connection, handle.node_id, domain)

    def delete_forest_resources(self, forest_id: str) -> None:
        """Delete the forest's VMs still defined, and the volumes and console logs a failed
        create left behind.

        The network stays: every forest on this host shares it.
        """
        for handle in self.list_nodes(forest_id):
            self.delete_node(handle)
        with libvirt_errors(f"delete the volumes of {forest_id}"):
            connection = self.connection()
            domains = [meta for _domain, meta in morpheus_domains(connection)]
            live = {meta.node_id for meta in domains}
            ours = re.compile(rf"^{re.escape(forest_id)}-node-\d+$")
            release_claims(
                connection,
                self.settings.network,
                lambda claimant: claimant in live or not ours.match(claimant),
            )
            self.consoles.remove_forest(forest_id, live)
            in_use = {name for meta in domains for name in meta.volumes}
            delete_leftover_volumes(connection, self.settings.pool, forest_id, in_use)

    def status_notes(self) -> list[str]:
        settings = self.settings
        return [
            f"libvirt: VMs at {settings.uri} on network {settings.network} "
            f"({settings.ipv6_prefix}), volumes in pool {settings.pool}",
            f"console of a node: virsh -c {settings.uri} console <node id>; its log: "
            f"{settings.console_log_dir}/<node id>-console.log on the libvirt host",
        ]
