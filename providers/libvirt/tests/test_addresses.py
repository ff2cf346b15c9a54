"""Address planning: every node's addresses fixed before boot, none handed out twice."""

from __future__ import annotations

import ipaddress

import pytest
from morpheus_libvirt.addresses import (
    FIRST_NODE_OFFSET,
    NetworkPlan,
    addresses_of,
    mac_for,
    plan_addresses,
)

from morpheus.errors import ProviderError

PLAN = NetworkPlan.from_strings("morpheus", "fd4d:6f72:7068:1::/64", "10.77.0.0/24")


def test_nodes_get_the_same_offset_on_both_stacks() -> None:
    first, second = plan_addresses(PLAN, [], 2)
    assert first.host == "fd4d:6f72:7068:1::a"
    assert first.all == ["fd4d:6f72:7068:1::a", "10.77.0.10"]
    assert second.all == ["fd4d:6f72:7068:1::b", "10.77.0.11"]
    assert PLAN.gateway6 == ipaddress.IPv6Address("fd4d:6f72:7068:1::1")
    assert PLAN.gateway4 == ipaddress.IPv4Address("10.77.0.1")


def test_taken_addresses_of_either_family_are_skipped() -> None:
    chosen = plan_addresses(PLAN, ["fd4d:6f72:7068:1::a", "10.77.0.11", "not-an-ip", "::1"], 2)
    assert [node.offset for node in chosen] == [12, 13]


def test_ipv6_only_network() -> None:
    plan = NetworkPlan.from_strings("morpheus", "fd00:1::/64", None)
    (node,) = plan_addresses(plan, [], 1)
    assert node.ipv4 is None
    assert node.all == ["fd00:1::a"]


def test_a_full_network_says_how_much_room_is_left() -> None:
    small = NetworkPlan.from_strings("morpheus", "fd00:1::/64", "10.0.0.0/27")
    assert small.capacity() == 30 - FIRST_NODE_OFFSET + 1
    taken = [str(small.ipv6[offset]) for offset in range(FIRST_NODE_OFFSET, 28)]
    with pytest.raises(ProviderError, match="room for 3 more node"):
        plan_addresses(small, taken, 4)


def test_create_recovers_every_address_from_the_host() -> None:
    (planned,) = plan_addresses(PLAN, [], 1)
    assert addresses_of(PLAN, planned.host) == planned


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("10.77.0.10", "not an IPv6 address"),
        ("fd00:9::a", "not in network"),
        ("fd4d:6f72:7068:1::2", "outside the node range"),
    ],
)
def test_hosts_outside_the_plan_are_refused(host: str, problem: str) -> None:
    with pytest.raises(ProviderError, match=problem):
        addresses_of(PLAN, host)


def test_macs_are_stable_and_in_the_qemu_range() -> None:
    address = ipaddress.IPv6Address("fd4d:6f72:7068:1::a")
    assert mac_for(address) == mac_for(address)
    assert mac_for(address).startswith("52:54:00:")
    assert mac_for(address) != mac_for(address + 1)
