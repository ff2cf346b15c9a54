"""Domain, network and volume XML: they parse, carry the spec's values, and libvirt takes them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from morpheus_libvirt.addresses import NetworkPlan, plan_addresses
from morpheus_libvirt.libvirt_xml import (
    METADATA_NAMESPACE,
    DomainSpec,
    NodeMetadata,
    domain_xml,
    hypervisor_problem,
    network_prefixes,
    network_xml,
    overlay_volume_xml,
    raw_volume_xml,
    read_node_metadata,
    volume_format,
)

from morpheus.models import Capacity, Ports

PLAN = NetworkPlan.from_strings("morpheus", "fd4d:6f72:7068:1::/64", "10.77.0.0/24")
NODE = plan_addresses(PLAN, [], 1)[0]
METADATA = NodeMetadata(
    forest_id="forest-a",
    node_id="forest-a-node-1",
    run_id="run-1",
    index=1,
    host=NODE.host,
    addresses=tuple(NODE.all),
    ports=Ports(client=4222, cluster=6222, monitor=8222),
    capacity=Capacity(cores=2, memory_bytes=2 << 30, disk_bytes=20 << 30),
    pool="default",
    volumes=("forest-a-node-1.qcow2", "forest-a-node-1-seed.iso"),
    labels={
        "managed-by": "morpheus",
        "forest": "forest-a",
        "node": "forest-a-node-1",
        "run": "run-1",
    },
)
SPEC = DomainSpec(
    name="forest-a-node-1",
    uuid="0e7d5ac6-61c4-4d8b-9e70-5ad3b1f0c0de",
    virt_type="kvm",
    vcpus=2,
    memory_mib=2048,
    pool="default",
    disk_volume="forest-a-node-1.qcow2",
    seed_volume="forest-a-node-1-seed.iso",
    network="morpheus",
    mac=NODE.mac,
    metadata=METADATA,
    title="Morpheus forest-a node-1",
)


def _attributes(root: ET.Element, path: str) -> dict[str, str]:
    element = root.find(path)
    assert element is not None, path
    return dict(element.attrib)


def test_domain_xml_carries_the_spec() -> None:
    root = ET.fromstring(domain_xml(SPEC))
    assert root.tag == "domain" and root.get("type") == "kvm"
    assert root.findtext("name") == "forest-a-node-1"
    assert root.findtext("uuid") == SPEC.uuid
    assert root.findtext("vcpu") == "2"
    assert root.findtext("memory") == "2048" and _attributes(root, "memory") == {"unit": "MiB"}
    assert _attributes(root, "cpu")["mode"] == "host-passthrough"
    disk, seed = root.findall("devices/disk")
    assert disk.get("device") == "disk"
    assert _attributes(disk, "source") == {"pool": "default", "volume": "forest-a-node-1.qcow2"}
    assert _attributes(disk, "target") == {"dev": "vda", "bus": "virtio"}
    assert _attributes(disk, "driver")["type"] == "qcow2"
    assert seed.get("device") == "cdrom" and seed.find("readonly") is not None
    assert _attributes(seed, "source")["volume"] == "forest-a-node-1-seed.iso"
    interface = root.find("devices/interface")
    assert interface is not None and interface.get("type") == "network"
    assert _attributes(interface, "source") == {"network": "morpheus"}
    assert _attributes(interface, "mac") == {"address": NODE.mac}
    assert _attributes(interface, "model") == {"type": "virtio"}
    assert _attributes(root, "devices/serial") == {"type": "pty"}
    assert _attributes(root, "devices/console/target") == {"type": "serial", "port": "0"}


def test_emulated_domains_ask_for_no_host_cpu() -> None:
    from dataclasses import replace

    root = ET.fromstring(domain_xml(replace(SPEC, virt_type="qemu")))
    assert root.get("type") == "qemu" and root.find("cpu") is None


def test_metadata_is_in_the_morpheus_namespace_and_round_trips() -> None:
    text = domain_xml(SPEC)
    root = ET.fromstring(text)
    node = root.find(f"metadata/{{{METADATA_NAMESPACE}}}node")
    assert node is not None
    assert node.findtext(f"{{{METADATA_NAMESPACE}}}forest") == "forest-a"
    assert node.findtext(f"{{{METADATA_NAMESPACE}}}node") == "forest-a-node-1"
    assert node.findtext(f"{{{METADATA_NAMESPACE}}}run") == "run-1"
    assert node.findtext(f"{{{METADATA_NAMESPACE}}}index") == "1"
    assert 'xmlns:morpheus="urn:morpheus:libvirt:node:1"' in text
    assert read_node_metadata(text) == METADATA


def test_domains_without_morpheus_metadata_are_not_nodes() -> None:
    assert read_node_metadata("<domain><name>web</name><metadata/></domain>") is None
    assert read_node_metadata("<domain><name>web</name></domain>") is None
    assert read_node_metadata("not xml") is None
    partial = (
        f"<domain><metadata><node xmlns='{METADATA_NAMESPACE}'>"
        "<forest>f</forest></node></metadata></domain>"
    )
    assert read_node_metadata(partial) is None


def test_network_xml_serves_the_plan() -> None:
    text = network_xml(PLAN)
    root = ET.fromstring(text)
    assert root.findtext("name") == "morpheus"
    assert _attributes(root, "forward") == {"mode": "nat"}
    assert _attributes(root, "forward/nat") == {"ipv6": "yes"}
    ipv6, ipv4 = root.findall("ip")
    assert dict(ipv6.attrib) == {"family": "ipv6", "address": "fd4d:6f72:7068:1::1", "prefix": "64"}
    assert dict(ipv4.attrib) == {"address": "10.77.0.1", "prefix": "24"}
    assert root.find("ip/dhcp") is None  # addresses are static, from the seed ISO
    assert network_prefixes(text) == {"fd4d:6f72:7068:1::/64", "10.77.0.0/24"}


def test_network_prefixes_reads_netmasks_too() -> None:
    text = "<network><ip address='192.168.122.1' netmask='255.255.255.0'/></network>"
    assert network_prefixes(text) == {"192.168.122.0/24"}


def test_overlay_volume_xml() -> None:
    root = ET.fromstring(overlay_volume_xml("n.qcow2", 20 << 30, "/images/base.img", "qcow2"))
    assert root.findtext("name") == "n.qcow2"
    assert root.findtext("capacity") == str(20 << 30)
    assert _attributes(root, "capacity") == {"unit": "bytes"}
    assert _attributes(root, "target/format") == {"type": "qcow2"}
    assert root.findtext("backingStore/path") == "/images/base.img"
    assert _attributes(root, "backingStore/format") == {"type": "qcow2"}


def test_raw_volume_xml() -> None:
    text = raw_volume_xml("n-seed.iso", 376832)
    root = ET.fromstring(text)
    assert root.findtext("name") == "n-seed.iso"
    assert root.findtext("capacity") == "376832"
    assert volume_format(text) == "raw"


QEMU_CAPABILITIES = """<capabilities><host/>
  <guest><os_type>hvm</os_type><arch name='x86_64'>
    <domain type='qemu'/><domain type='kvm'/></arch></guest>
</capabilities>"""


def test_hypervisor_problem() -> None:
    assert hypervisor_problem(QEMU_CAPABILITIES, "kvm") is None
    assert hypervisor_problem(QEMU_CAPABILITIES, "qemu") is None
    no_kvm = QEMU_CAPABILITIES.replace("<domain type='kvm'/>", "")
    assert "virt_type: qemu" in (hypervisor_problem(no_kvm, "kvm") or "")


# libvirt's own parser and validation, through the test driver --------------------------


@pytest.fixture
def connection(test_driver: str) -> Iterator[Any]:
    import libvirt

    opened = libvirt.open(test_driver)
    try:
        yield opened
    finally:
        opened.close()


def test_libvirt_accepts_the_generated_xml(connection: Any) -> None:
    from dataclasses import replace

    network = connection.networkDefineXML(network_xml(PLAN))
    pool = connection.storagePoolLookupByName("default-pool")
    base = pool.createXML(raw_volume_xml("base.img", 1 << 20), 0)
    disk = pool.createXML(overlay_volume_xml("n.qcow2", 20 << 30, base.path(), "qcow2"), 0)
    seed = pool.createXML(raw_volume_xml("n-seed.iso", 4096), 0)
    spec = replace(SPEC, pool="default-pool", disk_volume="n.qcow2", seed_volume="n-seed.iso")
    domain = connection.defineXML(domain_xml(spec))
    try:
        stored = domain.XMLDesc(0)
        assert read_node_metadata(stored) == METADATA
        assert domain.UUIDString() == SPEC.uuid
        assert domain.info()[1] == 2048 * 1024  # max memory in KiB
        assert domain.info()[3] == 2
        assert network_prefixes(network.XMLDesc(0)) == {"fd4d:6f72:7068:1::/64", "10.77.0.0/24"}
        assert "<backingStore>" in disk.XMLDesc(0)
    finally:
        domain.undefine()
        network.undefine()
        for volume in (seed, disk, base):
            volume.delete(0)
