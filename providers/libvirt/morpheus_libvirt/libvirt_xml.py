"""libvirt XML for domains, networks and volumes: pure builders and readers (xml.etree).

A node's identity lives in its domain's ``<metadata>`` under the Morpheus namespace, so
``virsh dumpxml`` and ``list_nodes`` answer "what belongs to forest X" from libvirt itself.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from morpheus.models import Capacity, Ports
from morpheus_libvirt.addresses import NetworkPlan

METADATA_NAMESPACE = "urn:morpheus:libvirt:node:1"
METADATA_PREFIX = "morpheus"
ET.register_namespace(METADATA_PREFIX, METADATA_NAMESPACE)

_NODE_TAG = f"{{{METADATA_NAMESPACE}}}node"


def _text(element: ET.Element) -> str:
    ET.indent(element)
    return ET.tostring(element, encoding="unicode") + "\n"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    child = ET.SubElement(parent, tag, attrib)
    if text is not None:
        child.text = text
    return child


@dataclass(frozen=True)
class NodeMetadata:
    """What a domain's ``<metadata>`` records about the Morpheus node it is."""

    forest_id: str
    node_id: str
    run_id: str
    index: int
    host: str
    addresses: tuple[str, ...] = ()
    ports: Ports = field(default_factory=Ports)
    capacity: Capacity | None = None
    pool: str = "default"
    volumes: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)

    def element(self) -> ET.Element:
        root = ET.Element(_NODE_TAG)
        for tag, value in (
            ("forest", self.forest_id),
            ("node", self.node_id),
            ("run", self.run_id),
            ("index", str(self.index)),
            ("host", self.host),
        ):
            _sub(root, f"{{{METADATA_NAMESPACE}}}{tag}", value)
        for address in self.addresses:
            _sub(root, f"{{{METADATA_NAMESPACE}}}address", address)
        _sub(
            root,
            f"{{{METADATA_NAMESPACE}}}ports",
            client=str(self.ports.client),
            cluster=str(self.ports.cluster),
            monitor=str(self.ports.monitor),
        )
        if self.capacity is not None:
            capacity = {
                "cores": str(self.capacity.cores),
                "memory-bytes": str(self.capacity.memory_bytes),
            }
            if self.capacity.disk_bytes is not None:
                capacity["disk-bytes"] = str(self.capacity.disk_bytes)
            _sub(root, f"{{{METADATA_NAMESPACE}}}capacity", **capacity)
        for volume in self.volumes:
            _sub(root, f"{{{METADATA_NAMESPACE}}}volume", pool=self.pool, name=volume)
        labels = _sub(root, f"{{{METADATA_NAMESPACE}}}labels")
        for key, value in sorted(self.labels.items()):
            _sub(labels, f"{{{METADATA_NAMESPACE}}}label", key=key, value=value)
        return root

    @classmethod
    def from_element(cls, root: ET.Element) -> NodeMetadata:
        """Read it back; raises ``ValueError`` when a required part is missing or malformed."""

        def one(tag: str) -> str:
            found = root.find(f"{{{METADATA_NAMESPACE}}}{tag}")
            if found is None or not found.text:
                raise ValueError(f"morpheus metadata has no <{tag}>")
            return found.text

        ports = root.find(f"{{{METADATA_NAMESPACE}}}ports")
        capacity = root.find(f"{{{METADATA_NAMESPACE}}}capacity")
        volumes = root.findall(f"{{{METADATA_NAMESPACE}}}volume")
        labels = root.findall(f"{{{METADATA_NAMESPACE}}}labels/{{{METADATA_NAMESPACE}}}label")
        disk = capacity.get("disk-bytes") if capacity is not None else None
        return cls(
            forest_id=one("forest"),
            node_id=one("node"),
            run_id=one("run"),
            index=int(one("index")),
            host=one("host"),
            addresses=tuple(
                a.text for a in root.findall(f"{{{METADATA_NAMESPACE}}}address") if a.text
            ),
            ports=Ports(**ports.attrib) if ports is not None else Ports(),
            capacity=(
                Capacity(
                    cores=int(capacity.get("cores", "1")),
                    memory_bytes=int(capacity.get("memory-bytes", "1")),
                    disk_bytes=int(disk) if disk is not None else None,
                )
                if capacity is not None
                else None
            ),
            pool=volumes[0].get("pool", "default") if volumes else "default",
            volumes=tuple(v.get("name", "") for v in volumes if v.get("name")),
            labels={label.get("key", ""): label.get("value", "") for label in labels},
        )


def read_node_metadata(domain_xml: str) -> NodeMetadata | None:
    """The Morpheus metadata of a domain's XML; ``None`` for domains Morpheus did not make."""
    try:
        root = ET.fromstring(domain_xml)  # noqa: S314 - XML from the libvirt daemon
    except ET.ParseError:
        return None
    element = root.find(f"metadata/{_NODE_TAG}")
    if element is None:
        return None
    try:
        return NodeMetadata.from_element(element)
    except ValueError:
        return None


@dataclass(frozen=True)
class DomainSpec:
    """Everything that goes into one node's domain XML."""

    name: str
    uuid: str
    virt_type: str
    vcpus: int
    memory_mib: int
    pool: str
    disk_volume: str
    seed_volume: str
    network: str
    mac: str
    metadata: NodeMetadata
    title: str = ""
    #: File on the libvirt host that receives everything the serial console prints.
    console_log: str | None = None


def domain_xml(spec: DomainSpec) -> str:
    """A KVM guest: virtio disk (qcow2 overlay) and NIC, the seed ISO as CD-ROM, serial console."""
    domain = ET.Element("domain", type=spec.virt_type)
    _sub(domain, "name", spec.name)
    _sub(domain, "uuid", spec.uuid)
    if spec.title:
        _sub(domain, "title", spec.title)
    _sub(domain, "metadata").append(spec.metadata.element())
    _sub(domain, "memory", str(spec.memory_mib), unit="MiB")
    _sub(domain, "currentMemory", str(spec.memory_mib), unit="MiB")
    _sub(domain, "vcpu", str(spec.vcpus), placement="static")
    os_element = _sub(domain, "os")
    _sub(os_element, "type", "hvm")
    _sub(os_element, "boot", dev="hd")
    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.virt_type == "kvm":
        _sub(domain, "cpu", mode="host-passthrough", check="none")
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    devices = _sub(domain, "devices")

    disk = _sub(devices, "disk", type="volume", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2", discard="unmap")
    _sub(disk, "source", pool=spec.pool, volume=spec.disk_volume)
    _sub(disk, "target", dev="vda", bus="virtio")

    seed = _sub(devices, "disk", type="volume", device="cdrom")
    _sub(seed, "driver", name="qemu", type="raw")
    _sub(seed, "source", pool=spec.pool, volume=spec.seed_volume)
    _sub(seed, "target", dev="sda", bus="sata")
    _sub(seed, "readonly")

    interface = _sub(devices, "interface", type="network")
    _sub(interface, "source", network=spec.network)
    _sub(interface, "mac", address=spec.mac)
    _sub(interface, "model", type="virtio")

    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    if spec.console_log:
        # Written by virtlogd while `virsh console` still works.
        _sub(serial, "log", file=spec.console_log, append="off")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    return _text(domain)


def network_xml(plan: NetworkPlan) -> str:
    """The morpheus network: NAT to the outside on both stacks, static node addresses."""
    network = ET.Element("network")
    _sub(network, "name", plan.name)
    forward = _sub(network, "forward", mode="nat")
    _sub(forward, "nat", ipv6="yes")
    _sub(network, "bridge", stp="on", delay="0")
    _sub(
        network,
        "ip",
        family="ipv6",
        address=str(plan.gateway6),
        prefix=str(plan.ipv6.prefixlen),
    )
    if plan.ipv4 is not None:
        _sub(network, "ip", address=str(plan.gateway4), prefix=str(plan.ipv4.prefixlen))
    return _text(network)


def dns_host_xml(address: str, node_id: str) -> str:
    """A ``<dns><host>`` record of the network: the claim on ``address`` by ``node_id``."""
    host = ET.Element("host", ip=address)
    _sub(host, "hostname", node_id)
    return ET.tostring(host, encoding="unicode")


def dns_hosts(network_xml_text: str) -> dict[str, str]:
    """The network's DNS host records, address -> first host name."""
    root = ET.fromstring(network_xml_text)  # noqa: S314 - XML from the libvirt daemon
    records: dict[str, str] = {}
    for host in root.findall("dns/host"):
        address = host.get("ip")
        if address:
            records[address] = host.findtext("hostname") or ""
    return records


def network_prefixes(network_xml_text: str) -> set[str]:
    """The networks (``fd00::/64``, ``10.0.0.0/24``) an existing libvirt network serves."""
    root = ET.fromstring(network_xml_text)  # noqa: S314 - XML from the libvirt daemon
    found: set[str] = set()
    for ip in root.findall("ip"):
        address = ip.get("address")
        if address is None:
            continue
        prefix = ip.get("prefix") or ip.get("netmask")
        interface = ipaddress.ip_interface(f"{address}/{prefix}" if prefix else address)
        found.add(str(interface.network))
    return found


def overlay_volume_xml(
    name: str, capacity_bytes: int, backing_path: str, backing_format: str
) -> str:
    """A qcow2 volume whose reads fall through to the base image until written."""
    volume = ET.Element("volume")
    _sub(volume, "name", name)
    _sub(volume, "capacity", str(capacity_bytes), unit="bytes")
    target = _sub(volume, "target")
    _sub(target, "format", type="qcow2")
    backing = _sub(volume, "backingStore")
    _sub(backing, "path", backing_path)
    _sub(backing, "format", type=backing_format)
    return _text(volume)


def raw_volume_xml(name: str, size_bytes: int) -> str:
    """A volume that is filled by upload: the seed ISO, a downloaded base image."""
    volume = ET.Element("volume")
    _sub(volume, "name", name)
    _sub(volume, "capacity", str(size_bytes), unit="bytes")
    _sub(volume, "allocation", "0", unit="bytes")
    target = _sub(volume, "target")
    _sub(target, "format", type="raw")
    return _text(volume)


def volume_format(volume_xml_text: str) -> str | None:
    """The format libvirt records for a volume (``qcow2``, ``raw``...)."""
    root = ET.fromstring(volume_xml_text)  # noqa: S314 - XML from the libvirt daemon
    element = root.find("target/format")
    return element.get("type") if element is not None else None


def pool_target_path(pool_xml_text: str) -> str | None:
    root = ET.fromstring(pool_xml_text)  # noqa: S314 - XML from the libvirt daemon
    element = root.find("target/path")
    return element.text if element is not None else None


def hypervisor_problem(capabilities_xml: str, virt_type: str) -> str | None:
    """Why this host cannot run ``virt_type`` x86_64/aarch64 guests, or ``None`` when it can."""
    root = ET.fromstring(capabilities_xml)  # noqa: S314 - XML from the libvirt daemon
    offered: set[str] = set()
    for guest in root.findall("guest"):
        if guest.findtext("os_type") != "hvm":
            continue
        for arch in guest.findall("arch"):
            for domain in arch.findall("domain"):
                offered.add(domain.get("type", ""))
    if virt_type in offered:
        return None
    if virt_type == "kvm":
        return (
            "this libvirt host offers no KVM guests (is /dev/kvm there and usable by libvirt?); "
            "enable virtualisation in the firmware, or set providers.libvirt.virt_type: qemu "
            "to emulate (much slower)"
        )
    listed = ", ".join(sorted(t for t in offered if t)) or "none"
    return f"this libvirt host offers no {virt_type} guests (it offers: {listed})"
