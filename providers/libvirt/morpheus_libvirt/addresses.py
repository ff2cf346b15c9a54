"""Address planning on the morpheus-managed network: pure functions of settings and what is taken.

Every node gets one *offset* in the network: its IPv6 address is the prefix plus the offset
and, when an IPv4 subnet is configured, its IPv4 address is that subnet plus the same offset.
The offset is recoverable from the IPv6 address alone, so ``create_node`` (which sees only the
blueprint's host) finds the IPv4 address and the MAC without any stored state.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from morpheus.errors import ProviderError

#: Offsets below this stay free for the host (``::1``) and whatever the operator adds by hand.
FIRST_NODE_OFFSET = 10
#: A forest never needs more; keeps the search for free offsets short on a /64.
MAX_NODE_OFFSET = 0xFFFF


@dataclass(frozen=True)
class NetworkPlan:
    """The addresses of the morpheus network on one libvirt host."""

    name: str
    ipv6: ipaddress.IPv6Network
    ipv4: ipaddress.IPv4Network | None = None

    @classmethod
    def from_strings(cls, name: str, ipv6: str, ipv4: str | None) -> NetworkPlan:
        return cls(
            name=name,
            ipv6=ipaddress.IPv6Network(ipv6),
            ipv4=ipaddress.IPv4Network(ipv4) if ipv4 is not None else None,
        )

    @property
    def gateway6(self) -> ipaddress.IPv6Address:
        """The host's address on the network: router and DNS server of the nodes."""
        return self.ipv6[1]

    @property
    def gateway4(self) -> ipaddress.IPv4Address | None:
        return self.ipv4[1] if self.ipv4 is not None else None

    @property
    def last_offset(self) -> int:
        last = min(self.ipv6.num_addresses - 1, MAX_NODE_OFFSET)
        if self.ipv4 is not None:
            last = min(last, self.ipv4.num_addresses - 2)  # not the broadcast address
        return last

    def capacity(self) -> int:
        """How many nodes the network can hold at all."""
        return max(0, self.last_offset - FIRST_NODE_OFFSET + 1)


@dataclass(frozen=True)
class NodeAddresses:
    """Where one node is on the network."""

    offset: int
    ipv6: ipaddress.IPv6Address
    ipv4: ipaddress.IPv4Address | None
    mac: str

    @property
    def host(self) -> str:
        """The address NATS routes and monitoring use: IPv6, as on the cloud."""
        return str(self.ipv6)

    @property
    def all(self) -> list[str]:
        return [str(self.ipv6)] + ([str(self.ipv4)] if self.ipv4 is not None else [])


def mac_for(ipv6: ipaddress.IPv6Address) -> str:
    """A stable locally administered MAC in QEMU's ``52:54:00`` range, derived from the address."""
    digest = hashlib.sha256(ipv6.packed).digest()
    return "52:54:00:" + ":".join(f"{byte:02x}" for byte in digest[:3])


def addresses_at(plan: NetworkPlan, offset: int) -> NodeAddresses:
    if not FIRST_NODE_OFFSET <= offset <= plan.last_offset:
        raise ProviderError(
            f"offset {offset} is outside the node range {FIRST_NODE_OFFSET}..{plan.last_offset} "
            f"of network {plan.name}"
        )
    ipv6 = plan.ipv6[offset]
    ipv4 = plan.ipv4[offset] if plan.ipv4 is not None else None
    return NodeAddresses(offset=offset, ipv6=ipv6, ipv4=ipv4, mac=mac_for(ipv6))


def addresses_of(plan: NetworkPlan, host: str) -> NodeAddresses:
    """A node's addresses from its IPv6 host address (the one its blueprint carries)."""
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:
        raise ProviderError(
            f"{host!r} is not an IPv6 address of libvirt network {plan.name} ({plan.ipv6}); "
            "libvirt nodes get their addresses from reserve_addresses"
        ) from None
    if address not in plan.ipv6:
        raise ProviderError(
            f"{host} is not in network {plan.name} ({plan.ipv6}): was "
            "providers.libvirt.ipv6_prefix changed while the forest exists?"
        )
    return addresses_at(plan, int(address) - int(plan.ipv6.network_address))


def plan_addresses(plan: NetworkPlan, taken: Iterable[str], count: int) -> list[NodeAddresses]:
    """``count`` free node addresses, lowest offsets first, avoiding every ``taken`` address."""
    used: set[int] = set()
    for text in taken:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address in plan.ipv6:
            used.add(int(address) - int(plan.ipv6.network_address))
        elif plan.ipv4 is not None and address in plan.ipv4:
            used.add(int(address) - int(plan.ipv4.network_address))
    chosen: list[NodeAddresses] = []
    offset = FIRST_NODE_OFFSET
    while len(chosen) < count and offset <= plan.last_offset:
        if offset not in used:
            chosen.append(addresses_at(plan, offset))
        offset += 1
    if len(chosen) < count:
        free = plan.capacity() - len(used & set(range(FIRST_NODE_OFFSET, plan.last_offset + 1)))
        larger = " or configure a larger providers.libvirt.ipv4_subnet" if plan.ipv4 else ""
        raise ProviderError(
            f"network {plan.name} has room for {free} more node(s), {count} asked; tear down "
            f"a forest{larger}"
        )
    return chosen
