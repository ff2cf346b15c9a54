"""The morpheus network, and each node's address claimed on it.

Two plants on one host must not pick the same address.  Each node's address is claimed by a
DNS host record on the network (address -> node id): libvirt adds it atomically and refuses a
second record with the same address, whoever asks.  The record goes with the node; as a
bonus the nodes resolve by node id on the bridge.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any

from morpheus.errors import ProviderError
from morpheus_libvirt.addresses import NetworkPlan, NodeAddresses, plan_addresses
from morpheus_libvirt.binding import NO_NETWORK, OPERATION_INVALID, find, ignoring, is_libvirt_error
from morpheus_libvirt.libvirt_xml import dns_host_xml, dns_hosts, network_prefixes, network_xml

# virNetworkUpdate: add or delete a <dns><host> record, in the running and the saved network.
_UPDATE_ADD_LAST = 3
_UPDATE_DELETE = 2
_SECTION_DNS_HOST = 10
_UPDATE_LIVE_AND_CONFIG = 3
_UPDATE_CONFIG = 2


def morpheus_network(connection: Any, plan: NetworkPlan, *, create: bool) -> Any | None:
    """Check the morpheus network against the settings; define and start it if asked."""
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


def _update_flags(network: Any) -> int:
    return _UPDATE_LIVE_AND_CONFIG if network.isActive() else _UPDATE_CONFIG


def claim(network: Any, plan: NetworkPlan, taken: set[str], node_id: str) -> NodeAddresses:
    """The lowest free address, claimed for ``node_id``; ``taken`` grows as it looks."""
    for held, name in dns_hosts(network.XMLDesc(0)).items():
        if name == node_id:  # left by an earlier attempt at this very node
            release(network, held, node_id)
    while True:
        (node,) = plan_addresses(plan, taken, 1)
        taken.add(node.host)
        try:
            network.update(
                _UPDATE_ADD_LAST,
                _SECTION_DNS_HOST,
                -1,
                dns_host_xml(node.host, node_id),
                _update_flags(network),
            )
        except Exception as exc:
            if is_libvirt_error(exc, OPERATION_INVALID):
                continue  # claimed by another plant a moment ago: try the next one
            raise
        return node


def release(network: Any, address: str, node_id: str) -> None:
    with ignoring(OPERATION_INVALID, NO_NETWORK):
        network.update(
            _UPDATE_DELETE,
            _SECTION_DNS_HOST,
            -1,
            dns_host_xml(address, node_id),
            _update_flags(network),
        )


def release_claims(connection: Any, network_name: str, keep: Callable[[str], bool]) -> None:
    """Delete the claims of every node id for which ``keep`` says no."""
    network = find(connection.networkLookupByName, network_name, missing=NO_NETWORK)
    if network is None:
        return
    for address, node_id in dns_hosts(network.XMLDesc(0)).items():
        if not keep(node_id):
            release(network, address, node_id)


def claim_all(
    network: Any, plan: NetworkPlan, taken: set[str], node_ids: list[str]
) -> list[NodeAddresses]:
    """An address claimed for each node id, or none: a failure releases those made."""
    chosen: list[NodeAddresses] = []
    try:
        for node_id in node_ids:
            chosen.append(claim(network, plan, taken, node_id))
    except BaseException:
        for node_id, node in zip(node_ids, chosen, strict=False):
            with suppress(Exception):
                release(network, node.host, node_id)
        raise
    return chosen
