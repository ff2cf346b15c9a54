"""The NoCloud seed ISO, read back with pycdlib (and blkid, as cloud-init finds it)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from libvirt_support import SEED_NAMES, read_seed
from morpheus_libvirt.addresses import NetworkPlan, plan_addresses
from morpheus_libvirt.seed import SeedFiles, build_seed_iso, meta_data, network_config

from morpheus.testing.tools import require_tool


@pytest.fixture
def files() -> SeedFiles:
    return SeedFiles(
        user_data="#cloud-config\nwrite_files:\n  - path: /etc/motd\n    content: 'héllo ✓'\n",
        meta_data="instance-id: abc\nlocal-hostname: node-1\n",
        network_config="version: 2\n" + "# padding past one ISO block\n" * 200,
    )


def test_seed_iso_round_trips_the_three_files(files: SeedFiles) -> None:
    label, by_rock_ridge, by_joliet = read_seed(build_seed_iso(files))
    assert label == "cidata"
    assert by_rock_ridge == files.by_name()
    assert by_joliet == files.by_name()


def test_seed_iso_of_empty_files() -> None:
    empty = SeedFiles(user_data="", meta_data="", network_config="")
    _label, by_rock_ridge, _joliet = read_seed(build_seed_iso(empty))
    assert by_rock_ridge == {name: "" for name in SEED_NAMES}


def test_blkid_sees_the_label_cloud_init_looks_for(files: SeedFiles, tmp_path: Path) -> None:
    blkid = require_tool("blkid")
    image = tmp_path / "seed.iso"
    image.write_bytes(build_seed_iso(files))
    probe = subprocess.run(
        [blkid, "--probe", "--output", "export", str(image)],
        capture_output=True,
        text=True,
        check=True,
    )
    fields = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
    assert fields["TYPE"] == "iso9660"
    assert fields["LABEL"] == "cidata"


def test_meta_data_names_the_instance_and_host() -> None:
    assert yaml.safe_load(meta_data("4a1c-uuid", "forest-a-node-1")) == {
        "instance-id": "4a1c-uuid",
        "local-hostname": "forest-a-node-1",
    }


def test_network_config_is_static_on_both_stacks() -> None:
    plan = NetworkPlan.from_strings("morpheus", "fd4d:6f72:7068:1::/64", "10.77.0.0/24")
    (node,) = plan_addresses(plan, [], 1)
    config = yaml.safe_load(network_config(plan, node))
    assert config["version"] == 2
    (ethernet,) = config["ethernets"].values()
    assert ethernet["match"] == {"macaddress": node.mac}
    assert ethernet["dhcp4"] is False and ethernet["dhcp6"] is False
    assert ethernet["addresses"] == ["fd4d:6f72:7068:1::a/64", "10.77.0.10/24"]
    assert ethernet["routes"] == [
        {"to": "::/0", "via": "fd4d:6f72:7068:1::1"},
        {"to": "0.0.0.0/0", "via": "10.77.0.1"},
    ]
    assert ethernet["nameservers"] == {"addresses": ["fd4d:6f72:7068:1::1", "10.77.0.1"]}


def test_network_config_ipv6_only() -> None:
    plan = NetworkPlan.from_strings("morpheus", "fd00:1::/64", None)
    (node,) = plan_addresses(plan, [], 1)
    (ethernet,) = yaml.safe_load(network_config(plan, node))["ethernets"].values()
    assert ethernet["addresses"] == ["fd00:1::a/64"]
    assert ethernet["routes"] == [{"to": "::/0", "via": "fd00:1::1"}]


def test_a_mac_that_looks_like_a_yaml_1_1_number_stays_a_string() -> None:
    plan = NetworkPlan.from_strings("morpheus", "fd00:1::/64", None)
    (node,) = plan_addresses(plan, [], 1)
    sexagesimal = replace(node, mac="52:54:00:12:34:56")
    (ethernet,) = yaml.safe_load(network_config(plan, sexagesimal))["ethernets"].values()
    assert ethernet["match"]["macaddress"] == "52:54:00:12:34:56"
