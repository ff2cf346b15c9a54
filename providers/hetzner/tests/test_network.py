"""The pure parts: addresses, firewall rules, labels, admin source detection, the endpoint."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from morpheus_hetzner.network import (
    IpAddress,
    detect_admin_sources,
    firewall_rules,
    label_problems,
    node_host,
    rule_key,
    valid_server_name,
    with_forest_routes,
)
from morpheus_hetzner.settings import resolve_endpoint

from morpheus.errors import ConfigError
from morpheus.models import Ports


def test_node_address_is_the_first_of_its_64() -> None:
    assert node_host("2a01:4f8:c0c:1a2b::/64") == "2a01:4f8:c0c:1a2b::1"


def test_firewall_admits_ssh_and_monitoring_from_admins_and_routes_from_the_forest() -> None:
    rules = firewall_rules(["203.0.113.7/32"], ["2a01:4f8:1::/64"], Ports(), 2222)
    assert [(r.port, r.source_ips) for r in rules] == [
        ("2222", ["203.0.113.7/32"]),
        ("8222", ["203.0.113.7/32"]),
        ("6222", ["2a01:4f8:1::/64"]),
    ]
    assert {(r.direction, r.protocol) for r in rules} == {("in", "tcp")}


def test_route_rule_is_replaced_and_the_rest_kept() -> None:
    rules = firewall_rules(["203.0.113.7/32"], ["2a01:4f8:1::/64"], Ports(), 22)
    grown = with_forest_routes(rules, ["2a01:4f8:1::/64", "2a01:4f8:2::/64"], 6222)
    assert [r.port for r in grown] == ["22", "8222", "6222"]
    assert grown[-1].source_ips == ["2a01:4f8:1::/64", "2a01:4f8:2::/64"]
    assert [r.port for r in with_forest_routes(grown, [], 6222)] == ["22", "8222"]
    assert sorted(map(rule_key, rules)) != sorted(map(rule_key, grown))


def probe(v6: str | None, v4: str | None):  # type: ignore[no-untyped-def]
    def answer(family: socket.AddressFamily, target: str) -> IpAddress | None:
        address = v6 if family == socket.AF_INET6 else v4
        return None if address is None else ipaddress.ip_address(address)

    return answer


@pytest.mark.parametrize(
    ("v6", "v4", "ipv4", "expected"),
    [
        ("2a01:4f8:1:2:a:b:c:d", "10.0.0.5", False, ["2a01:4f8:1:2::/64"]),
        ("2a01:4f8:1:2:a:b:c:d", "198.51.100.0", True, ["2a01:4f8:1:2::/64"]),  # not global
        ("2a01:4f8:1:2:a:b:c:d", "88.99.1.2", True, ["2a01:4f8:1:2::/64", "88.99.1.2/32"]),
        ("fd00::5", "192.168.1.2", True, []),  # ULA and NAT: nothing names this machine
        (None, "88.99.1.2", False, []),  # IPv6-only nodes cannot be reached from here
    ],
)
def test_admin_source_detection(
    v6: str | None, v4: str | None, ipv4: bool, expected: list[str]
) -> None:
    assert detect_admin_sources(ipv4=ipv4, prefix_v6=64, probe=probe(v6, v4)) == expected


def test_labels_and_names() -> None:
    assert label_problems({"managed-by": "morpheus", "forest": "forest-1"}) == []
    assert label_problems({"forest": "-bad"}) and label_problems({"bad key!": "x"})
    assert label_problems({"forest": "x" * 64})
    assert valid_server_name("forest-1-node-1")
    assert not valid_server_name("forest_1") and not valid_server_name("x" * 64)


def test_endpoint_from_environment_first() -> None:
    env = {"HCLOUD_ENDPOINT": "https://proxy.example/v1/"}
    assert resolve_endpoint("https://other.example/v1", env) == "https://proxy.example/v1"
    assert resolve_endpoint(None, {}) == "https://api.hetzner.cloud/v1"
    assert resolve_endpoint("http://127.0.0.1:8080/v1", {}) == "http://127.0.0.1:8080/v1"


def test_plain_http_is_refused_off_this_machine() -> None:
    with pytest.raises(ConfigError, match="unencrypted"):
        resolve_endpoint(None, {"HCLOUD_ENDPOINT": "http://api.example/v1"})
    with pytest.raises(ConfigError, match="not an http"):
        resolve_endpoint("ftp://api.example", {})
