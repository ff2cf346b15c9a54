"""The libvirt provider: each node is a KVM/QEMU virtual machine booting cloud-init user-data.

Per node it creates a qcow2 overlay of the base image and a NoCloud seed ISO in the storage
pool, and a domain whose ``<metadata>`` names forest, node and run.  That metadata is how
``list_nodes`` and ``delete_node`` find nodes from libvirt itself.  Every node sits on one
morpheus-managed libvirt network per host, with a static address fixed by
``reserve_addresses`` before any node boots, so each node's nats.conf carries the full mesh.

``libvirt.libvirtError`` is translated into ``ProviderError`` (keeping libvirt's error code)
once, in the ``libvirt_errors`` block around each public method.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import urlsplit

from pydantic import BaseModel

from morpheus.boot_report import failure_in_console
from morpheus.errors import PreflightError, ProviderError
from morpheus.provider import ForestPlan, NodeHandle, PlanLine, Provider, Reservation
from morpheus.provider_config import ProviderContext
from morpheus.ssh_keys import find_public_key
from morpheus.waiting import poll_until
from morpheus_libvirt.addresses import NetworkPlan, NodeAddresses, addresses_of, plan_addresses
from morpheus_libvirt.base_image import (
    BaseImage,
    download_verified,
    downloaded_volume_name,
    file_chunks,
)
from morpheus_libvirt.binding import (
    NO_DOMAIN,
    NO_NETWORK,
    NO_STORAGE_POOL,
    NO_STORAGE_VOL,
    OPERATION_INVALID,
    find,
    ignoring,
    is_libvirt_error,
    libvirt_errors,
    load_libvirt,
    open_connection,
    upload_volume,
)
from morpheus_libvirt.kvm_access import kvm_device_problem, qemu_ids
from morpheus_libvirt.libvirt_xml import (
    DomainSpec,
    NodeMetadata,
    dns_host_xml,
    dns_hosts,
    domain_xml,
    hypervisor_problem,
    network_prefixes,
    network_xml,
    overlay_volume_xml,
    raw_volume_xml,
    read_node_metadata,
    volume_format,
)
from morpheus_libvirt.seed import SeedFiles, build_seed_iso, meta_data, network_config
from morpheus_libvirt.settings import LibvirtSettings

if TYPE_CHECKING:
    from morpheus.blueprint import NodeBlueprint

#: Writes bytes into a storage volume: ``(connection, volume, chunks, length)``.
VolumeUpload = Callable[[Any, Any, Iterable[bytes], int], None]

# virDomainState values (libvirt ABI) and the words NodeHandle.state uses for them.
_RUNNING = 1
_SHUTOFF = 5
_CRASHED = 6
_STATE_NAMES = {
    0: "unknown",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "stopping",
    5: "stopped",
    6: "crashed",
    7: "suspended",
}
# virNetworkUpdate: add or delete a <dns><host> record, in the running and the saved network.
_UPDATE_ADD_LAST = 3
_UPDATE_DELETE = 2
_SECTION_DNS_HOST = 10
_UPDATE_LIVE_AND_CONFIG = 3
_UPDATE_CONFIG = 2
# Undefine a domain with a managed-save image or snapshots too (values from libvirt's ABI).
_UNDEFINE_MANAGED_SAVE = 1
_UNDEFINE_SNAPSHOTS_METADATA = 2


def volume_names(node_id: str) -> tuple[str, str]:
    """The node's overlay disk and seed ISO volumes."""
    return f"{node_id}.qcow2", f"{node_id}-seed.iso"


#: How much of the end of a console log is read when looking for a failed boot.
_CONSOLE_TAIL_BYTES = 256 * 1024


def _utcnow() -> datetime:
    return datetime.now(UTC)


def operator_public_keys(key_path: Path | None, home: Path) -> tuple[str, ...]:
    """The SSH key the nodes' default user accepts, so an operator can log in to a VM; with
    none, nodes take no key and ``virsh console`` shows what they do."""
    found = find_public_key(key_path, home)
    return () if found is None else (found[1],)


class LibvirtProvider(Provider):
    """Nodes as KVM/QEMU virtual machines on one libvirt host (local or remote URI)."""

    name: ClassVar[str] = "libvirt"
    costs_money: ClassVar[bool] = False
    settings_model: ClassVar[type[BaseModel]] = LibvirtSettings
    renders_user_data: ClassVar[bool] = True
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

    @classmethod
    def from_config(cls, config: LibvirtSettings, context: ProviderContext) -> Self:
        keys = operator_public_keys(context.ssh_key_path, Path.home())
        return cls(config, context.state_dir / "libvirt", ssh_public_keys=keys)

    def ipv6_only(self) -> bool:
        return self.network_plan.ipv4 is None

    # console logs -----------------------------------------------------------------------

    def console_log(self, node_id: str) -> Path:
        """The file on the libvirt host that receives the node's serial console."""
        return Path(self.settings.console_log_dir) / f"{node_id}-console.log"

    @property
    def host_is_here(self) -> bool:
        """Whether the libvirt host is this machine, so its files can be read here."""
        return urlsplit(self.settings.uri).hostname in (None, "", "localhost")

    def _remove_console_log(self, node_id: str) -> None:
        """The node's console log, and the QEMU log libvirt keeps beside it (``<node>.log``)."""
        if self.host_is_here:
            for path in (
                self.console_log(node_id),
                self.console_log(node_id).with_name(f"{node_id}.log"),
            ):
                with suppress(OSError):
                    path.unlink(missing_ok=True)

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

    # platform lookups (libvirt errors pass through to the public method's boundary) -----

    def _pool(self, connection: Any) -> Any:
        """The configured storage pool, started if it is defined but stopped."""
        name = self.settings.pool
        pool = find(connection.storagePoolLookupByName, name, missing=NO_STORAGE_POOL)
        if pool is None:
            raise ProviderError(
                f"libvirt has no storage pool {name!r}: create one (virsh pool-define-as {name} "
                f"dir --target /var/lib/libvirt/images; virsh pool-start {name}; virsh "
                f"pool-autostart {name}) or set providers.libvirt.pool"
            )
        if not pool.isActive():
            pool.create(0)
        return pool

    @staticmethod
    def _delete_volume(pool: Any, name: str) -> None:
        volume = find(pool.storageVolLookupByName, name, missing=NO_STORAGE_VOL)
        if volume is not None:
            with ignoring(NO_STORAGE_VOL):
                volume.delete(0)

    def _network(self, connection: Any, *, create: bool) -> Any | None:
        """Check the morpheus network against the settings; define and start it if asked."""
        plan = self.network_plan
        network = find(connection.networkLookupByName, plan.name, missing=NO_NETWORK)
        if network is None:
            if not create:
                return None
            network = connection.networkDefineXML(network_xml(plan))
        served = network_prefixes(network.XMLDesc(0))
        wanted = {str(plan.ipv6)} | ({str(plan.ipv4)} if plan.ipv4 is not None else set())
        if served != wanted:
            raise ProviderError(
                f"libvirt network {plan.name!r} serves {', '.join(sorted(served)) or 'nothing'} "
                f"but providers.libvirt asks for {', '.join(sorted(wanted))}: make "
                "ipv6_prefix and ipv4_subnet match it, set providers.libvirt.network to another "
                f"name, or remove it once no VM uses it (virsh net-destroy {plan.name}; "
                f"virsh net-undefine {plan.name})"
            )
        if create:
            if not network.isActive():
                network.create()
            if not network.autostart():
                network.setAutostart(1)
        return network

    # address claims ---------------------------------------------------------------------
    #
    # Two plants on one host must not pick the same address.  Each node's address is claimed
    # by a DNS host record on the network (address -> node id): libvirt adds it atomically
    # and refuses a second record with the same address, whoever asks.  The record goes with
    # the node; as a bonus the nodes resolve by node id on the bridge.

    @staticmethod
    def _update_flags(network: Any) -> int:
        return _UPDATE_LIVE_AND_CONFIG if network.isActive() else _UPDATE_CONFIG

    def _claim(self, network: Any, taken: set[str], node_id: str) -> NodeAddresses:
        """The lowest free address, claimed for ``node_id``; ``taken`` grows as it looks."""
        for held, name in dns_hosts(network.XMLDesc(0)).items():
            if name == node_id:  # left by an earlier attempt at this very node
                self._release(network, held, node_id)
        while True:
            (node,) = plan_addresses(self.network_plan, taken, 1)
            taken.add(node.host)
            try:
                network.update(
                    _UPDATE_ADD_LAST,
                    _SECTION_DNS_HOST,
                    -1,
                    dns_host_xml(node.host, node_id),
                    self._update_flags(network),
                )
            except Exception as exc:
                if is_libvirt_error(exc, OPERATION_INVALID):
                    continue  # claimed by another plant a moment ago: try the next one
                raise
            return node

    def _release(self, network: Any, address: str, node_id: str) -> None:
        with ignoring(OPERATION_INVALID, NO_NETWORK):
            network.update(
                _UPDATE_DELETE,
                _SECTION_DNS_HOST,
                -1,
                dns_host_xml(address, node_id),
                self._update_flags(network),
            )

    def _release_claims(self, connection: Any, keep: Callable[[str], bool]) -> None:
        """Delete the claims of every node id for which ``keep`` says no."""
        network = find(connection.networkLookupByName, self.settings.network, missing=NO_NETWORK)
        if network is None:
            return
        for address, node_id in dns_hosts(network.XMLDesc(0)).items():
            if not keep(node_id):
                self._release(network, address, node_id)

    @staticmethod
    def _morpheus_domains(connection: Any) -> Iterator[tuple[Any, NodeMetadata]]:
        """Every domain on this host that carries Morpheus metadata, with that metadata."""
        for domain in connection.listAllDomains(0):
            # A domain deleted while we list is simply not there.
            description = find(domain.XMLDesc, 0, missing=NO_DOMAIN)
            metadata = read_node_metadata(description) if description is not None else None
            if metadata is not None:
                yield domain, metadata

    def _addresses_in_use(self, connection: Any) -> list[str]:
        return [
            address
            for _domain, meta in self._morpheus_domains(connection)
            for address in (meta.host, *meta.addresses)
        ]

    @staticmethod
    def _lookup_domain(connection: Any, provider_id: str, node_id: str) -> Any | None:
        """The domain by UUID (the provider id), else by the node id as name; ``None`` if gone."""
        with suppress(ValueError):
            instance = str(uuid.UUID(provider_id))
            domain = find(connection.lookupByUUIDString, instance, missing=NO_DOMAIN)
            if domain is not None:
                return domain
        return find(connection.lookupByName, node_id, missing=NO_DOMAIN)

    def _require_base_image_setting(self) -> None:
        settings = self.settings
        if settings.base_image is None and settings.base_image_url is None:
            raise ProviderError(
                "no base image: set providers.libvirt.base_image to a cloud image in a storage "
                "pool (e.g. /var/lib/libvirt/images/noble-server-cloudimg-amd64.img), or "
                "base_image_url and base_image_sha256 to download one"
            )

    def _configured_base_volume(self, connection: Any, pool: Any) -> Any:
        path = self.settings.base_image
        # The image may have been copied into the pool's directory since the pool started;
        # a refresh refused (a volume job is running) leaves the last scan, good enough.
        with suppress(Exception):
            pool.refresh(0)
        volume = find(connection.storageVolLookupByPath, path, missing=NO_STORAGE_VOL)
        if volume is None:
            raise ProviderError(
                f"base image {path} is not a volume of any libvirt storage pool: copy it into "
                "the pool's directory (e.g. /var/lib/libvirt/images) and run `virsh "
                f"pool-refresh {self.settings.pool}`, or fix providers.libvirt.base_image"
            )
        return volume

    def _base_image(self, connection: Any, pool: Any) -> BaseImage:
        """The backing file of every overlay; a configured URL is downloaded once into the pool."""
        self._require_base_image_setting()
        settings = self.settings
        if settings.base_image is not None:
            volume = self._configured_base_volume(connection, pool)
            return BaseImage(volume.path(), volume_format(volume.XMLDesc(0)) or "raw")
        assert settings.base_image_url is not None and settings.base_image_sha256 is not None
        sha256 = settings.base_image_sha256
        for image_format in ("qcow2", "raw"):
            name = downloaded_volume_name(sha256, image_format)
            volume = find(pool.storageVolLookupByName, name, missing=NO_STORAGE_VOL)
            if volume is not None:
                return BaseImage(volume.path(), image_format)
        path, image_format = download_verified(
            settings.base_image_url, sha256, self.state_dir / "downloads"
        )
        try:
            size = path.stat().st_size
            name = downloaded_volume_name(sha256, image_format)
            volume = pool.createXML(raw_volume_xml(name, size), 0)
            try:
                self._upload(connection, volume, file_chunks(path), size)
            except BaseException:
                with suppress(Exception):
                    volume.delete(0)
                raise
        finally:
            path.unlink(missing_ok=True)
        return BaseImage(volume.path(), image_format)

    def _handle(self, domain: Any, metadata: NodeMetadata) -> NodeHandle:
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
            state=_STATE_NAMES.get(state, "unknown"),
            location=self.settings.uri,
            labels=dict(metadata.labels),
        )

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
            # Stopped or gone between our look and our action: the outcome we want.
            with ignoring(NO_DOMAIN, OPERATION_INVALID):
                if domain.isActive():
                    domain.destroy()
            with ignoring(NO_DOMAIN):
                domain.undefineFlags(_UNDEFINE_MANAGED_SAVE | _UNDEFINE_SNAPSHOTS_METADATA)
        self._remove_console_log(node_id)
        self._release_claims(connection, keep=lambda claimant: claimant != node_id)
        pool = find(connection.storagePoolLookupByName, pool_name, missing=NO_STORAGE_POOL)
        if pool is None:
            return  # no pool, no volumes
        if not pool.isActive():
            pool.create(0)
        for name in volumes:
            self._delete_volume(pool, name)

    # contract ---------------------------------------------------------------------------

    def preflight(self, plan: ForestPlan) -> None:
        try:
            with libvirt_errors("check the libvirt host"):
                connection = self.connection()
                capabilities = connection.getCapabilities()
                problem = hypervisor_problem(capabilities, self.settings.virt_type)
                if problem is None and self.settings.virt_type == "kvm" and self.host_is_here:
                    # libvirt offers KVM whenever /dev/kvm exists; ask what QEMU will get.
                    ids = qemu_ids(capabilities, "kvm")
                    problem = kvm_device_problem(*ids) if ids is not None else None
                if problem is not None:
                    raise PreflightError(problem)
                pool = self._pool(connection)
                self._require_base_image_setting()
                if self.settings.base_image is not None:
                    self._configured_base_volume(connection, pool)
                self._network(connection, create=False)
                plan_addresses(
                    self.network_plan, self._addresses_in_use(connection), plan.node_count
                )
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
            network = self._network(connection, create=True)
            assert network is not None
            taken = {*self._addresses_in_use(connection), *dns_hosts(network.XMLDesc(0))}
            chosen: list[NodeAddresses] = []
            try:
                for node_id in node_ids:
                    chosen.append(self._claim(network, taken, node_id))
            except BaseException:
                for node_id, node in zip(node_ids, chosen, strict=False):
                    with suppress(Exception):
                        self._release(network, node.host, node_id)
                raise
        return [
            Reservation(forest_id=forest_id, node_id=node_id, host=node.host, addresses=node.all)
            for node_id, node in zip(node_ids, chosen, strict=True)
        ]

    def blueprint_fields(self, reservation: Reservation) -> dict[str, object]:
        plan = self.network_plan
        return {
            "capacity": self.settings.machine.capacity,
            # Nodes cannot be re-rendered once booted (no apply_blueprint), so a node's own
            # firewall admits routes from the whole morpheus network, where the nodes a grow
            # adds will be, rather than from today's peers; route authorization still applies.
            "route_sources": tuple(str(net) for net in (plan.ipv6, plan.ipv4) if net),
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
        metadata = NodeMetadata(
            forest_id=blueprint.forest_id,
            node_id=node_id,
            run_id=blueprint.run_id,
            index=blueprint.index,
            host=node.host,
            addresses=tuple(node.all),
            ports=blueprint.ports,
            capacity=capacity,
            pool=self.settings.pool,
            volumes=(disk_name, seed_name),
            labels=dict(blueprint.labels),
        )
        spec = DomainSpec(
            name=node_id,
            uuid=instance_id,
            virt_type=self.settings.virt_type,
            vcpus=capacity.cores,
            memory_mib=capacity.memory_bytes >> 20,
            pool=self.settings.pool,
            disk_volume=disk_name,
            seed_volume=seed_name,
            network=self.settings.network,
            mac=node.mac,
            metadata=metadata,
            title=f"Morpheus {blueprint.forest_id} {blueprint.node_name}",
            console_log=str(self.console_log(node_id)),
        )
        with libvirt_errors(f"create node {node_id}"):
            connection = self.connection()
            pool = self._pool(connection)
            self._network(connection, create=True)
            base = self._base_image(connection, pool)
            for _domain, other in self._morpheus_domains(connection):
                if other.node_id == node_id:
                    raise ProviderError(
                        f"a libvirt domain for node {node_id} already exists; delete it with "
                        f"`morpheus teardown {blueprint.forest_id}` first"
                    )
                if node.host in (other.host, *other.addresses):
                    raise ProviderError(
                        f"address {node.host} was taken by node {other.node_id} meanwhile "
                        "(two plants at once on this host?); plant again"
                    )
            try:
                # Leftovers of an earlier failed create of this very node.
                self._delete_volume(pool, disk_name)
                self._delete_volume(pool, seed_name)
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
        return NodeHandle(
            provider_id=instance_id,
            node_id=node_id,
            forest_id=blueprint.forest_id,
            run_id=blueprint.run_id,
            index=blueprint.index,
            host=node.host,
            addresses=node.all,
            ports=blueprint.ports,
            capacity=capacity,
            state="starting",
            location=self.settings.uri,
            labels=dict(blueprint.labels),
        )

    def wait_running(self, handle: NodeHandle, deadline: float) -> NodeHandle:
        state_name = "unknown"

        def running() -> NodeHandle | None:
            nonlocal state_name
            with libvirt_errors(f"read the state of node {handle.node_id}"):
                connection = self.connection()
                domain = self._lookup_domain(connection, handle.provider_id, handle.node_id)
                if domain is None:
                    raise ProviderError(f"the VM of node {handle.node_id} no longer exists")
                state = domain.state()[0]
                if state == _RUNNING:
                    metadata = read_node_metadata(domain.XMLDesc(0))
                    if metadata is None:
                        return handle.model_copy(update={"state": "running"})
                    return self._handle(domain, metadata)
            state_name = _STATE_NAMES.get(state, str(state))
            if state in (_SHUTOFF, _CRASHED):
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
        if not self.host_is_here:
            return None
        try:
            with self.console_log(handle.node_id).open("rb") as log:
                log.seek(0, 2)
                log.seek(max(0, log.tell() - _CONSOLE_TAIL_BYTES))
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return None  # not written yet, or not readable by this user
        failure = failure_in_console(text)
        if failure is None:
            return None
        return f"{failure.describe()} (serial console: {self.console_log(handle.node_id)})"

    def list_nodes(self, forest_id: str) -> list[NodeHandle]:
        with libvirt_errors(f"list the nodes of {forest_id}"):
            connection = self.connection()
            handles = []
            for domain, metadata in self._morpheus_domains(connection):
                if metadata.forest_id == forest_id:
                    with ignoring(NO_DOMAIN):
                        handles.append(self._handle(domain, metadata))
        return sorted(handles, key=lambda h: h.index)

    def delete_node(self, handle: NodeHandle) -> None:
        with libvirt_errors(f"delete node {handle.node_id}"):
            connection = self.connection()
            domain = self._lookup_domain(connection, handle.provider_id, handle.node_id)
            if domain is not None:
                metadata = read_node_metadata(domain.XMLDesc(0))
                if metadata is None or (metadata.forest_id, metadata.node_id) != (
                    handle.forest_id,
                    handle.node_id,
                ):
                    raise ProviderError(
                        f"libvirt domain {domain.name()} is not node {handle.node_id} of forest "
                        f"{handle.forest_id} according to its metadata; refusing to delete it"
                    )
            self._delete(connection, handle.node_id, domain)

    def delete_forest_resources(self, forest_id: str) -> None:
        """Delete the forest's VMs still defined, and the volumes and console logs a failed
        create left behind.

        The network stays: every forest on this host shares it.
        """
        for handle in self.list_nodes(forest_id):
            self.delete_node(handle)
        leftover = re.compile(rf"^{re.escape(forest_id)}-node-\d+(?:\.qcow2|-seed\.iso)$")
        with libvirt_errors(f"delete the volumes of {forest_id}"):
            connection = self.connection()
            domains = [meta for _domain, meta in self._morpheus_domains(connection)]
            live = {meta.node_id for meta in domains}
            ours = re.compile(rf"^{re.escape(forest_id)}-node-\d+$")
            self._release_claims(
                connection, keep=lambda claimant: claimant in live or not ours.match(claimant)
            )
            if self.host_is_here:
                node_log = re.compile(rf"^({re.escape(forest_id)}-node-\d+)(?:-console)?\.log$")
                for log in Path(self.settings.console_log_dir).glob(f"{forest_id}-node-*.log"):
                    found = node_log.match(log.name)
                    if found is not None and found[1] not in live:
                        with suppress(OSError):
                            log.unlink()
            pool = find(
                connection.storagePoolLookupByName, self.settings.pool, missing=NO_STORAGE_POOL
            )
            if pool is None or not pool.isActive():
                return
            in_use = {name for meta in domains for name in meta.volumes}
            for volume in pool.listAllVolumes(0):
                name = volume.name()
                if leftover.match(name) and name not in in_use:
                    self._delete_volume(pool, name)

    def status_notes(self) -> list[str]:
        settings = self.settings
        return [
            f"libvirt: VMs at {settings.uri} on network {settings.network} "
            f"({settings.ipv6_prefix}), volumes in pool {settings.pool}",
            f"console of a node: virsh -c {settings.uri} console <node id>; its log: "
            f"{settings.console_log_dir}/<node id>-console.log on the libvirt host",
        ]
