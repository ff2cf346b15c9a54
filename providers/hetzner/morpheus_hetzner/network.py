"""Addresses, firewall rules and labels: the pure parts of the Hetzner provider."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence

from hcloud.firewalls import FirewallRule

from morpheus.models import Ports

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Where the route lookup for "which address does this machine use" points: Hetzner's
#: networks.  No packet is sent; the kernel only picks a source address.
PROBE_TARGETS = {socket.AF_INET6: "2a01:4f8::1", socket.AF_INET: "88.198.0.1"}

_LABEL_KEY = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?/)?"
    r"[a-zA-Z0-9](?:[a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?)?$")
_SERVER_NAME = re.compile(r"^(?=.{1,63}$)[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$")


def node_host(ipv6_network: str) -> str:
    """The node's address in its /64: ``2a01:4f8:c0c:1::/64`` -> ``2a01:4f8:c0c:1::1``."""
    network = ipaddress.IPv6Network(ipv6_network, strict=False)
    return str(network.network_address + 1)


def source_address(family: socket.AddressFamily, target: str) -> IpAddress | None:
    """The address this machine would send from to ``target`` (a route lookup, no packet)."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((target, 443))
            return ipaddress.ip_address(probe.getsockname()[0])
    except OSError:
        return None


def detect_admin_sources(
    *,
    ipv4: bool,
    prefix_v6: int,
    probe: Callable[[socket.AddressFamily, str], IpAddress | None] = source_address,
) -> list[str]:
    """This machine's public networks as seen by Hetzner: its global IPv6 address widened to
    ``prefix_v6`` and, when nodes get IPv4, its global IPv4 address.  A private (NATed) or
    missing address is left out: it would name the wrong machine.
    """
    sources = []
    v6 = probe(socket.AF_INET6, PROBE_TARGETS[socket.AF_INET6])
    if v6 is not None and v6.is_global:
        sources.append(str(ipaddress.ip_network(f"{v6}/{prefix_v6}", strict=False)))
    if ipv4:
        v4 = probe(socket.AF_INET, PROBE_TARGETS[socket.AF_INET])
        if v4 is not None and v4.is_global:
            sources.append(f"{v4}/32")
    return sources


def firewall_rules(
    admin_sources: Sequence[str], forest_networks: Iterable[str], ports: Ports, ssh_port: int
) -> list[FirewallRule]:
    """The forest firewall: SSH and monitoring from the admin sources, routes from the forest.

    Nothing else comes in (a Hetzner firewall drops what no inbound rule allows).
    """
    admin = sorted(admin_sources)
    rules = [
        FirewallRule(
            direction="in",
            protocol="tcp",
            port=str(ssh_port),
            source_ips=admin,
            description="SSH from admin sources",
        ),
        FirewallRule(
            direction="in",
            protocol="tcp",
            port=str(ports.monitor),
            source_ips=admin,
            description="NATS monitoring from admin sources",
        ),
    ]
    return rules + _route_rules(forest_networks, ports.cluster)


def with_forest_routes(
    rules: Sequence[FirewallRule], networks: Iterable[str], cluster_port: int
) -> list[FirewallRule]:
    """``rules`` with the route rule (inbound TCP to ``cluster_port``) naming ``networks``.

    The other rules stay as they are, admin sources an operator edited included.
    """
    kept = [
        rule
        for rule in rules
        if not (
            rule.direction == "in" and rule.protocol == "tcp" and rule.port == str(cluster_port)
        )
    ]
    return kept + _route_rules(networks, cluster_port)


def rule_key(rule: FirewallRule) -> tuple[str, str, str | None, tuple[str, ...]]:
    """What makes two rules the same, for deciding whether a firewall needs new rules."""
    sources = tuple(sorted(str(ipaddress.ip_network(s, strict=False)) for s in rule.source_ips))
    return (str(rule.direction), str(rule.protocol), rule.port, sources)


def label_problems(labels: Mapping[str, str]) -> list[str]:
    """Why Hetzner would refuse these labels (empty when it would not)."""
    problems = []
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            problems.append(f"label key {key!r} is not a valid Hetzner label key")
        if not _LABEL_VALUE.fullmatch(value):
            problems.append(
                f"label {key}={value!r}: values are at most 63 letters, digits, '-', '_' or "
                "'.', starting and ending with a letter or digit"
            )
    return problems


def valid_server_name(name: str) -> bool:
    """Whether Hetzner accepts ``name`` as a server name (an RFC 1123 host label here)."""
    return bool(_SERVER_NAME.fullmatch(name))


def _route_rules(networks: Iterable[str], cluster_port: int) -> list[FirewallRule]:
    """The rule admitting NATS routes from ``networks``; none when there are none."""
    forest = sorted(set(networks))
    if not forest:
        return []
    return [
        FirewallRule(
            direction="in",
            protocol="tcp",
            port=str(cluster_port),
            source_ips=forest,
            description="NATS routes from the forest",
        )
    ]
