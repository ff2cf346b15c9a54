"""The libvirt provider against libvirt's ``test:///default`` driver.

What the test driver exercises: the real libvirt API and XML handling for networks, storage
pools, volumes (with backing stores) and domains (define, start, state, metadata, destroy,
undefine), and libvirt's error codes.  What it cannot: it boots nothing, so cloud-init never
reads the seed ISO and no NATS server answers ``/healthz`` (the core's readiness check is
therefore not run here); it stores no volume contents (``virStorageVolUpload`` is not
supported), so the seed ISO and downloaded base images go through the provider's ``upload``
seam into memory, where the tests read them back; it creates no bridge, dnsmasq or NAT rules.
Those parts are proven on a KVM host by following docs/libvirt.md.
"""

from __future__ import annotations

import hashlib
import http.server
import ipaddress
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from libvirt_support import BASE_IMAGE, TEST_POOL, VolumeContents, add_base_image, read_seed
from morpheus_libvirt.binding import libvirt_errors, upload_volume
from morpheus_libvirt.libvirt_xml import dns_hosts, read_node_metadata
from morpheus_libvirt.provider import LibvirtProvider, operator_public_keys, volume_names
from morpheus_libvirt.settings import LibvirtSettings

from morpheus.errors import ConfigError, PreflightError, ProviderError
from morpheus.provider import ForestPlan, NodeHandle
from morpheus.render import NODE_PATHS, delivered_files, render_user_data
from morpheus.settings import Settings
from morpheus.testing.contract import ContractForest, ProviderContract

QCOW2_IMAGE = b"QFI\xfb" + b"\0" * 508 + b"pretend cloud image"


class TestLibvirtContract(ProviderContract):
    """The shared provider contract: create, list by forest, wait, delete twice, labels."""

    @pytest.fixture
    def provider(self, provider: LibvirtProvider) -> LibvirtProvider:
        return provider


@pytest.fixture
def forest(provider: LibvirtProvider) -> Iterator[ContractForest]:
    made = ContractForest(provider, Settings())
    try:
        yield made
    finally:
        made.cleanup()


def _domain(provider: LibvirtProvider, handle: NodeHandle) -> Any:
    return provider.connection().lookupByUUIDString(handle.provider_id)


def _pool_volumes(provider: LibvirtProvider) -> set[str]:
    pool = provider.connection().storagePoolLookupByName(TEST_POOL)
    return {volume.name() for volume in pool.listAllVolumes(0)}


def test_from_settings_validates_its_table(state_dir: Path) -> None:
    settings = Settings(providers={"libvirt": {"uri": "test:///default", "profile": "large"}})
    provider = LibvirtProvider.from_settings(settings, state_dir)
    assert provider.settings.uri == "test:///default"
    assert provider.settings.machine.vcpus == 4
    assert provider.state_dir == state_dir / "libvirt"


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx9q0Ty3nT5rY8pI1dW8gE3xZ0v4mF6k7s2Lp9cQw1B op@lab"


def test_from_settings_finds_the_operator_key(state_dir: Path) -> None:
    home = Path.home()  # the isolated test home
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519.pub").write_text(KEY + "\n")
    provider = LibvirtProvider.from_settings(Settings(), state_dir)
    assert provider.ssh_public_keys == (KEY,)


def test_the_operator_key_reaches_the_seed(
    libvirt_settings: LibvirtSettings, state_dir: Path, volume_contents: VolumeContents
) -> None:
    with LibvirtProvider(
        libvirt_settings, state_dir, upload=volume_contents, ssh_public_keys=[KEY]
    ) as provider:
        base = add_base_image(provider.connection())
        forest = ContractForest(provider, Settings())
        try:
            (_handle,) = forest.plant(1)
            (image,) = [
                data for path, data in volume_contents.by_path.items() if path.endswith(".iso")
            ]
            _label, files, _joliet = read_seed(image)
            assert yaml.safe_load(files["meta-data"])["public-keys"] == [KEY]
        finally:
            forest.cleanup()
            base.delete(0)
            del base


def test_operator_keys(tmp_path: Path) -> None:
    assert operator_public_keys(None, tmp_path) == ()
    configured = tmp_path / "lab.pub"
    with pytest.raises(ConfigError, match=r"key_path .*lab\.pub cannot be read"):
        operator_public_keys(configured, tmp_path)
    configured.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="is not an SSH public key"):
        operator_public_keys(configured, tmp_path)
    configured.write_text("\n" + KEY + "\n")
    assert operator_public_keys(configured, tmp_path) == (KEY,)


def test_reserve_creates_the_network_and_plans_distinct_addresses(
    provider: LibvirtProvider, forest: ContractForest
) -> None:
    first = provider.reserve_addresses(forest.id, forest.run_id, ["a-node-1", "a-node-2"])
    assert [r.host for r in first] == ["fd4d:6f72:7068:1::a", "fd4d:6f72:7068:1::b"]
    assert first[0].addresses == ["fd4d:6f72:7068:1::a", "10.77.0.10"]
    network = provider.connection().networkLookupByName("morpheus")
    assert network.isActive() and network.autostart()
    # Reserved addresses and those of defined nodes are held; a later reservation skips them.
    forest.plant(2)
    later = provider.reserve_addresses("forest-b", "run-b", ["forest-b-node-1"])
    assert later[0].host == "fd4d:6f72:7068:1::e"
    provider.delete_forest_resources("forest-a")  # "a-node-*" are no forest's: still held
    provider.delete_forest_resources("forest-b")
    assert set(dns_hosts(network.XMLDesc(0)).values()) == {
        "a-node-1",
        "a-node-2",
        *(f"{forest.id}-node-{index}" for index in (1, 2)),
    }


def test_an_address_claimed_meanwhile_by_another_plant_is_skipped(
    provider: LibvirtProvider,
) -> None:
    provider.reserve_addresses("forest-a", "run-a", ["forest-a-node-1"])
    network = provider.connection().networkLookupByName("morpheus")
    # Another Morpheus claims ::b between this one's look at the network and its claim.
    real_xml = network.XMLDesc
    seen = real_xml(0)
    network.update(
        3, 10, -1, "<host ip='fd4d:6f72:7068:1::b'><hostname>x-node-1</hostname></host>", 0
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(network, "XMLDesc", lambda flags: seen)
        patch.setattr(provider.connection(), "networkLookupByName", lambda name: network)
        (mine,) = provider.reserve_addresses("forest-b", "run-b", ["forest-b-node-1"])
    assert mine.host == "fd4d:6f72:7068:1::c"
    assert dns_hosts(real_xml(0)) == {
        "fd4d:6f72:7068:1::a": "forest-a-node-1",
        "fd4d:6f72:7068:1::b": "x-node-1",
        "fd4d:6f72:7068:1::c": "forest-b-node-1",
    }


def test_a_deleted_node_releases_its_address(
    provider: LibvirtProvider, forest: ContractForest
) -> None:
    (handle,) = forest.plant(1)
    network = provider.connection().networkLookupByName("morpheus")
    assert dns_hosts(network.XMLDesc(0)) == {handle.host: handle.node_id}
    provider.delete_node(handle)
    assert dns_hosts(network.XMLDesc(0)) == {}


def test_a_network_with_other_addresses_is_not_taken_over(
    libvirt_settings: LibvirtSettings, state_dir: Path, volume_contents: VolumeContents
) -> None:
    other = libvirt_settings.model_copy(update={"ipv6_prefix": "fd00:99::/64"})
    with (
        LibvirtProvider(libvirt_settings, state_dir, upload=volume_contents) as first,
        LibvirtProvider(other, state_dir, upload=volume_contents) as second,
    ):
        first.reserve_addresses("forest-a", "run-a", ["forest-a-node-1"])
        with pytest.raises(ProviderError, match=r"serves 10\.77\.0\.0/24, fd4d:6f72:7068:1::/64"):
            second.reserve_addresses("forest-b", "run-b", ["forest-b-node-1"])


def test_create_boots_the_blueprint_from_a_seed_iso(
    provider: LibvirtProvider, forest: ContractForest, volume_contents: VolumeContents
) -> None:
    (handle,) = forest.plant(1)
    domain = _domain(provider, handle)
    description = domain.XMLDesc(0)
    root = ET.fromstring(description)
    assert root.get("type") == "kvm"
    assert domain.name() == handle.node_id
    assert domain.isActive()
    assert domain.info()[3] == 1 and domain.info()[1] == 1536 * 1024  # the profile's
    assert handle.capacity is not None and handle.capacity.disk_bytes == 20 << 30
    metadata = read_node_metadata(description)
    assert metadata is not None
    assert (metadata.forest_id, metadata.node_id, metadata.run_id, metadata.index) == (
        forest.id,
        handle.node_id,
        forest.run_id,
        1,
    )

    disk_name, seed_name = volume_names(handle.node_id)
    pool = provider.connection().storagePoolLookupByName(TEST_POOL)
    disk = ET.fromstring(pool.storageVolLookupByName(disk_name).XMLDesc(0))
    assert disk.findtext("backingStore/path") == BASE_IMAGE
    assert disk.findtext("capacity") == str(20 << 30)

    seed_path = pool.storageVolLookupByName(seed_name).path()
    label, files, _joliet = read_seed(volume_contents.by_path[seed_path])
    assert label == "cidata"
    assert files["user-data"].startswith("#cloud-config\n")
    assert f"Node {handle.node_id} of Morpheus forest {forest.id}" in files["user-data"]
    assert yaml.safe_load(files["meta-data"]) == {
        "instance-id": handle.provider_id,
        "local-hostname": handle.node_id,
    }
    network = yaml.safe_load(files["network-config"])
    (ethernet,) = network["ethernets"].values()
    assert ethernet["addresses"] == ["fd4d:6f72:7068:1::a/64", "10.77.0.10/24"]
    mac = root.find("devices/interface/mac")
    assert mac is not None and ethernet["match"]["macaddress"] == mac.get("address")


def test_user_data_is_the_core_renderer_output(
    libvirt_settings: LibvirtSettings, state_dir: Path, volume_contents: VolumeContents
) -> None:
    """The seed's user-data is byte for byte what the core renders for the blueprint (at its
    ``rendered_at``, or the provider's clock when the blueprint has none)."""
    now = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    with LibvirtProvider(
        libvirt_settings, state_dir, upload=volume_contents, clock=lambda: now
    ) as provider:
        base = add_base_image(provider.connection())
        forest = ContractForest(provider, Settings())
        blueprints: list[Any] = []
        create = provider.create_node

        def recording_create(blueprint: Any) -> NodeHandle:
            blueprints.append(blueprint)
            return create(blueprint)

        provider.create_node = recording_create  # type: ignore[method-assign]
        try:
            (handle,) = forest.plant(1)
            seed_name = volume_names(handle.node_id)[1]
            pool = provider.connection().storagePoolLookupByName(TEST_POOL)
            _label, files, _joliet = read_seed(
                volume_contents.by_path[pool.storageVolLookupByName(seed_name).path()]
            )
            (blueprint,) = blueprints
            expected = render_user_data(blueprint, now=blueprint.rendered_at or now)
            assert files["user-data"] == expected
            del pool
        finally:
            forest.cleanup()
            base.delete(0)
            del base


def test_node_firewalls_admit_routes_from_exactly_the_forests_nodes(
    provider: LibvirtProvider, forest: ContractForest, volume_contents: VolumeContents
) -> None:
    """Booted VMs are reconfigured over SSH when the forest changes, so a node's route peers
    name the forest's nodes and nothing wider (a grow's nodes are added by convergence)."""
    planted = forest.plant(3)
    (later,) = provider.reserve_addresses(forest.id, forest.run_id, [f"{forest.id}-node-4"])
    pool = provider.connection().storagePoolLookupByName(TEST_POOL)
    seed = pool.storageVolLookupByName(volume_names(planted[0].node_id)[1]).path()
    _label, files, _joliet = read_seed(volume_contents.by_path[seed])
    delivered = delivered_files(files["user-data"])
    admitted = {
        ipaddress.ip_address(element.strip())
        for match in re.finditer(
            r"add element inet morpheus peers_v[46] \{ ([^}]*) \}",
            delivered[NODE_PATHS.route_peers],
        )
        for element in match[1].split(",")
    }
    assert admitted == {ipaddress.ip_address(node.host) for node in planted if node.host}
    assert not any(ipaddress.ip_address(address) in admitted for address in later.addresses)
    assert re.search(r"ip6 saddr @peers_v6 tcp dport \d+ accept", delivered[NODE_PATHS.firewall])


def test_delete_removes_domain_and_volumes_and_is_idempotent(
    provider: LibvirtProvider, forest: ContractForest
) -> None:
    (handle,) = forest.plant(1)
    disk_name, seed_name = volume_names(handle.node_id)
    assert {disk_name, seed_name} <= _pool_volumes(provider)
    provider.delete_node(handle)
    assert provider.list_nodes(forest.id) == []
    assert not {disk_name, seed_name} & _pool_volumes(provider)
    provider.delete_node(handle)
    # A handle the registry made up (provider id = node id) after a crash mid-create.
    provider.delete_node(handle.model_copy(update={"provider_id": handle.node_id}))


def test_delete_finds_a_node_by_name_when_only_the_registry_knows_it(
    provider: LibvirtProvider, forest: ContractForest
) -> None:
    (handle,) = forest.plant(1)
    provider.delete_node(handle.model_copy(update={"provider_id": handle.node_id}))
    assert provider.list_nodes(forest.id) == []


def test_delete_refuses_a_domain_that_is_not_the_node(
    provider: LibvirtProvider, forest: ContractForest
) -> None:
    (handle,) = forest.plant(1)
    impostor = handle.model_copy(update={"forest_id": "forest-other"})
    with pytest.raises(ProviderError, match="refusing to delete"):
        provider.delete_node(impostor)
    assert [h.node_id for h in provider.list_nodes(forest.id)] == [handle.node_id]
    # The test driver's own stock domain carries no Morpheus metadata.
    stranger = handle.model_copy(update={"provider_id": "test", "node_id": "test"})
    with pytest.raises(ProviderError, match="refusing to delete"):
        provider.delete_node(stranger)


def test_stopped_node_is_listed_as_stopped_and_deleted(
    provider: LibvirtProvider, forest: ContractForest
) -> None:
    (handle,) = forest.plant(1)
    _domain(provider, handle).destroy()
    (listed,) = provider.list_nodes(forest.id)
    assert listed.state == "stopped"
    with pytest.raises(ProviderError, match="is stopped; see `virsh -c test:///default console"):
        provider.wait_running(handle, time.monotonic() + 5)
    provider.delete_node(listed)
    assert provider.list_nodes(forest.id) == []


def test_wait_running_gives_up_at_the_deadline(
    provider: LibvirtProvider, forest: ContractForest
) -> None:
    (handle,) = forest.plant(1)
    _domain(provider, handle).suspend()
    with pytest.raises(ProviderError, match="still paused, not running, at the deadline"):
        provider.wait_running(handle, time.monotonic() + 0.05)


def test_forest_resources_include_volumes_of_a_create_that_died(
    provider: LibvirtProvider, forest: ContractForest
) -> None:
    pool = provider.connection().storagePoolLookupByName(TEST_POOL)
    orphan = f"{forest.id}-node-7-seed.iso"
    pool.createXML(f"<volume><name>{orphan}</name><capacity>4096</capacity></volume>", 0)
    unrelated = f"{forest.id}-other.qcow2"
    pool.createXML(f"<volume><name>{unrelated}</name><capacity>4096</capacity></volume>", 0)
    forest.plant(1)
    provider.delete_forest_resources(forest.id)
    assert provider.list_nodes(forest.id) == []
    volumes = _pool_volumes(provider)
    assert orphan not in volumes
    assert unrelated in volumes
    pool.storageVolLookupByName(unrelated).delete(0)


def test_create_rolls_back_when_the_upload_fails(
    libvirt_settings: LibvirtSettings, state_dir: Path
) -> None:
    """The real stream upload: the test driver does not support it, which the error shows."""
    with LibvirtProvider(libvirt_settings, state_dir, upload=upload_volume) as provider:
        base = add_base_image(provider.connection())
        forest = ContractForest(provider, Settings())
        with pytest.raises(ProviderError) as caught:
            forest.plant(1)
        message = str(caught.value)
        assert message.startswith(f"libvirt could not create node {forest.id}-node-1:")
        assert "virStorageVolUpload" in message
        assert "(VIR_ERR_NO_SUPPORT, code 3)" in message
        assert provider.list_nodes(forest.id) == []
        assert _pool_volumes(provider) == {"noble-server-cloudimg-amd64.img"}
        base.delete(0)
        del base


def test_missing_pool_and_base_image_are_explained(
    libvirt_settings: LibvirtSettings, state_dir: Path, volume_contents: VolumeContents
) -> None:
    no_pool = libvirt_settings.model_copy(update={"pool": "nope"})
    with LibvirtProvider(no_pool, state_dir, upload=volume_contents) as provider:
        forest = ContractForest(provider, Settings())
        with pytest.raises(ProviderError, match="no storage pool 'nope': create one"):
            forest.plant(1)
    no_image = libvirt_settings.model_copy(update={"base_image": "/default-pool/missing.img"})
    with LibvirtProvider(no_image, state_dir, upload=volume_contents) as provider:
        forest = ContractForest(provider, Settings())
        with pytest.raises(ProviderError, match="is not a volume of any libvirt storage pool"):
            forest.plant(1)
        assert _pool_volumes(provider) == set()


def _offer_kvm(provider: LibvirtProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the test driver's capabilities list KVM guests (it offers only its own 'test')."""
    connection = provider.connection()
    kvm = connection.getCapabilities().replace("<domain type='test'/>", "<domain type='kvm'/>")
    monkeypatch.setattr(connection, "getCapabilities", lambda: kvm)


def test_preflight_reports_a_host_without_kvm(provider: LibvirtProvider) -> None:
    with pytest.raises(PreflightError, match="offers no KVM guests"):
        provider.preflight(ForestPlan(forest_id=None, node_count=1))


def test_preflight_checks_memory_and_addresses(
    provider: LibvirtProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offer_kvm(provider, monkeypatch)
    provider.preflight(ForestPlan(forest_id=None, node_count=2))
    with pytest.raises(
        PreflightError, match=r"3 node\(s\) of 1536 MiB need 4608 MiB but the libvirt host has 3072"
    ):
        provider.preflight(ForestPlan(forest_id=None, node_count=3))
    with pytest.raises(PreflightError, match="has room for 245 more node"):
        provider.preflight(ForestPlan(forest_id=None, node_count=300))


def test_preflight_without_a_base_image(
    libvirt_settings: LibvirtSettings, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = libvirt_settings.model_copy(update={"base_image": None})
    with LibvirtProvider(settings, state_dir) as provider:
        _offer_kvm(provider, monkeypatch)
        with pytest.raises(
            PreflightError, match=r"no base image: set providers\.libvirt\.base_image"
        ):
            provider.preflight(ForestPlan(forest_id=None, node_count=1))
        monkeypatch.undo()


def test_plan_lines_and_status_notes(provider: LibvirtProvider) -> None:
    lines = {line.label: line.value for line in provider.plan_lines(ForestPlan(None, 3))}
    assert lines["machines"] == "3 × VM with 1 vCPU, 1536 MiB RAM, 20 GiB disk (profile small)"
    assert lines["network"] == "morpheus (fd4d:6f72:7068:1::/64, 10.77.0.0/24)"
    assert lines["image"] == BASE_IMAGE
    assert any("virsh -c test:///default console" in note for note in provider.status_notes())


# base image download ---------------------------------------------------------------------


@pytest.fixture
def image_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving QCOW2_IMAGE at /noble.img."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/noble.img":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(QCOW2_IMAGE)))
            self.end_headers()
            self.wfile.write(QCOW2_IMAGE)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_base_image_is_downloaded_verified_and_reused(
    libvirt_settings: LibvirtSettings,
    state_dir: Path,
    volume_contents: VolumeContents,
    image_server: str,
) -> None:
    digest = hashlib.sha256(QCOW2_IMAGE).hexdigest()
    settings = libvirt_settings.model_copy(
        update={
            "base_image": None,
            "base_image_url": f"{image_server}/noble.img",
            "base_image_sha256": digest,
        }
    )
    with LibvirtProvider(settings, state_dir, upload=volume_contents) as provider:
        forest = ContractForest(provider, Settings())
        try:
            first, second = forest.plant(2)
            base_name = f"morpheus-base-{digest[:16]}.qcow2"
            pool = provider.connection().storagePoolLookupByName(TEST_POOL)
            base_path = pool.storageVolLookupByName(base_name).path()
            assert volume_contents.by_path[base_path] == QCOW2_IMAGE
            for handle in (first, second):
                disk = pool.storageVolLookupByName(volume_names(handle.node_id)[0])
                backing = ET.fromstring(disk.XMLDesc(0)).find("backingStore")
                assert backing is not None
                assert backing.findtext("path") == base_path
                format_element = backing.find("format")
                assert format_element is not None and format_element.get("type") == "qcow2"
            # Downloaded once: one upload of the image, one seed per node.
            assert len(volume_contents.by_path) == 3
            assert list((state_dir / "downloads").iterdir()) == []
        finally:
            forest.cleanup()
            pool = provider.connection().storagePoolLookupByName(TEST_POOL)
            pool.storageVolLookupByName(f"morpheus-base-{digest[:16]}.qcow2").delete(0)
            del pool


def test_a_base_image_with_the_wrong_digest_is_refused(
    libvirt_settings: LibvirtSettings,
    state_dir: Path,
    volume_contents: VolumeContents,
    image_server: str,
) -> None:
    settings = libvirt_settings.model_copy(
        update={
            "base_image": None,
            "base_image_url": f"{image_server}/noble.img",
            "base_image_sha256": "0" * 64,
        }
    )
    with LibvirtProvider(settings, state_dir, upload=volume_contents) as provider:
        forest = ContractForest(provider, Settings())
        actual = hashlib.sha256(QCOW2_IMAGE).hexdigest()
        with pytest.raises(ProviderError, match=f"has SHA-256 {actual}, not the configured 0000"):
            forest.plant(1)
        assert _pool_volumes(provider) == set()
        assert volume_contents.by_path == {}
        assert list((state_dir / "downloads").iterdir()) == []
        missing = settings.model_copy(update={"base_image_url": f"{image_server}/gone.img"})
    with (
        LibvirtProvider(missing, state_dir, upload=volume_contents) as provider,
        pytest.raises(ProviderError, match="failed: HTTP 404"),
    ):
        ContractForest(provider, Settings()).plant(1)


def test_a_stopped_pool_is_started(provider: LibvirtProvider, forest: ContractForest) -> None:
    provider.connection().storagePoolLookupByName(TEST_POOL).destroy()
    (handle,) = forest.plant(1)
    assert provider.connection().storagePoolLookupByName(TEST_POOL).isActive()
    assert volume_names(handle.node_id)[0] in _pool_volumes(provider)


def test_libvirt_errors_keep_their_code(provider: LibvirtProvider) -> None:
    connection = provider.connection()
    with pytest.raises(ProviderError) as caught, libvirt_errors("look up a VM"):
        connection.lookupByName("no-such-vm")
    message = str(caught.value)
    assert message.startswith("libvirt could not look up a VM: Domain not found")
    assert message.endswith("(VIR_ERR_NO_DOMAIN, code 42)")
    assert isinstance(caught.value, ProviderError) and caught.value.code == "VIR_ERR_NO_DOMAIN"
    assert caught.value.__cause__ is not None


def test_an_unreachable_libvirt_is_explained(
    libvirt_settings: LibvirtSettings, state_dir: Path
) -> None:
    settings = libvirt_settings.model_copy(update={"uri": "test:///nonexistent/file.xml"})
    with (
        LibvirtProvider(settings, state_dir) as provider,
        pytest.raises(ProviderError, match=r"cannot connect to libvirt at test:///nonexistent"),
    ):
        provider.list_nodes("forest-a")


# A failed first boot, as the serial console shows it (cloud-init prefixes every line).
FAILED_CONSOLE = (
    "[  161.5] cloud-init[359]: morpheus: setting up node {node} of forest f\n"
    "[  162.6] cloud-init[359]: morpheus: downloading http://[fd00::1]:8469/n.whl\n"
    "[  163.1] cloud-init[359]: morpheus: SHA-256 mismatch for http://[fd00::1]:8469/n.whl: "
    "expected 000, got 859; refusing to install it\n"
    "[  163.2] cloud-init[359]: morpheus: FAILED while installing nats-server 2.15.1 "
    "(exit status 1) at 2026-11-30T09:40:02Z; this node does not serve\n"
)


def test_the_serial_console_is_logged_to_a_file(
    provider: LibvirtProvider, forest: ContractForest
) -> None:
    (handle,) = forest.plant(1)
    serial = ET.fromstring(_domain(provider, handle).XMLDesc(0)).find("devices/serial/log")
    assert serial is not None
    assert serial.get("file") == str(provider.console_log(handle.node_id))
    assert serial.get("append") == "off"


def test_a_failed_boot_is_read_from_the_console_log(
    provider: LibvirtProvider, forest: ContractForest
) -> None:
    (handle,) = forest.plant(1)
    log = provider.console_log(handle.node_id)
    assert provider.boot_failure(handle) is None  # no log yet
    log.parent.mkdir(parents=True)
    log.write_text("[    0.0] Linux version 6.12\n" * 5000)
    assert provider.boot_failure(handle) is None  # booting, nothing failed
    with log.open("a") as console:
        console.write(FAILED_CONSOLE.format(node=handle.node_id))
    assert provider.boot_failure(handle) == (
        "bootstrap failed while installing nats-server 2.15.1 (exit status 1) at "
        "2026-11-30T09:40:02Z: SHA-256 mismatch for http://[fd00::1]:8469/n.whl: expected "
        f"000, got 859; refusing to install it (serial console: {log})"
    )
    provider.delete_node(handle)
    assert not log.exists()


def test_a_remote_host_console_log_is_not_read_here(libvirt_settings: LibvirtSettings) -> None:
    remote = LibvirtProvider(
        libvirt_settings.model_copy(update={"uri": "qemu+ssh://lab/system"}), Path("unused")
    )
    assert not remote.host_is_here
    handle = NodeHandle(provider_id="x", node_id="n", forest_id="f", run_id="r", index=1, state="?")
    assert remote.boot_failure(handle) is None


def test_teardown_removes_console_logs_of_nodes_that_are_gone(
    provider: LibvirtProvider, forest: ContractForest
) -> None:
    (handle,) = forest.plant(1)
    logs = Path(provider.settings.console_log_dir)
    logs.mkdir()
    orphan = logs / f"{forest.id}-node-7-console.log"
    qemu_log = logs / f"{forest.id}-node-7.log"
    other = logs / "forest-other-node-1-console.log"
    for path in (orphan, qemu_log, other, provider.console_log(handle.node_id)):
        path.write_text("boot\n")
    provider.delete_forest_resources(forest.id)
    assert sorted(p.name for p in logs.iterdir()) == [other.name]


def test_preflight_checks_that_qemu_can_open_dev_kvm(
    provider: LibvirtProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    import morpheus_libvirt.kvm_access as module

    _offer_kvm(provider, monkeypatch)
    connection = provider.connection()
    dac = (
        "<secmodel><model>dac</model><doi>0</doi>"
        "<baselabel type='kvm'>+64055:+64055</baselabel></secmodel></host>"
    )
    caps = connection.getCapabilities().replace("</host>", dac, 1)
    monkeypatch.setattr(connection, "getCapabilities", lambda: caps)
    asked: list[tuple[int, int]] = []

    def no_access(uid: int, gid: int) -> str:
        asked.append((uid, gid))
        return "QEMU runs as libvirt-qemu (uid 64055) and cannot open /dev/kvm"

    monkeypatch.setattr(module, "kvm_device_problem", no_access)
    with pytest.raises(PreflightError, match="cannot open /dev/kvm"):
        provider.preflight(ForestPlan(forest_id=None, node_count=1))
    assert asked == [(64055, 64055)]


def test_destroy_asks_again_when_libvirt_gives_up_on_a_slow_qemu() -> None:
    import libvirt
    from morpheus_libvirt.domains import destroy

    class SlowToDie:
        def __init__(self, failures: int) -> None:
            self.failures = failures
            self.active = True
            self.asked = 0

        def isActive(self) -> bool:
            return self.active

        def destroy(self) -> None:
            self.asked += 1
            if self.asked <= self.failures:
                raise libvirt.libvirtError("Failed to terminate process 42 with SIGKILL")
            self.active = False

    slow = SlowToDie(failures=2)
    destroy(slow)
    assert (slow.asked, slow.active) == (3, False)
    stuck = SlowToDie(failures=5)
    with pytest.raises(libvirt.libvirtError, match="SIGKILL"):
        destroy(stuck)
    assert stuck.asked == 3
