"""The forest's cloud firewall (one per forest, applied by label selector), who may reach SSH
and NATS monitoring through it, and its route rule that follows the forest's addresses."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial

import hcloud
from hcloud.actions import BoundAction
from hcloud.firewalls import (
    Firewall,
    FirewallResource,
    FirewallResourceLabelSelector,
    FirewallRule,
)

from morpheus.blueprint import labels_for
from morpheus.errors import ConfigError, MorpheusError
from morpheus.fields import stays_on_site
from morpheus.models import Ports
from morpheus.provider import CheckResult
from morpheus_hetzner.actions import ActionWatcher
from morpheus_hetzner.addresses import Addresses
from morpheus_hetzner.api import HetznerApi, HetznerError, HetznerPreflightError
from morpheus_hetzner.network import (
    PROBE_TARGETS,
    IpAddress,
    firewall_rules,
    rule_key,
    source_address,
    with_forest_routes,
)
from morpheus_hetzner.resources import forest_selector, ident


def admin_sources(
    configured: Sequence[str],
    *,
    enable_ipv4: bool,
    prefix_v6: int,
    detect: Callable[..., list[str]],
) -> list[str]:
    """Who may reach SSH and NATS monitoring: ``infrastructure.admin_sources``, else this
    machine's public IPv6 network (and IPv4 address when nodes get IPv4)."""
    if configured:
        sources = []
        for source in configured:
            try:
                sources.append(str(ipaddress.ip_network(source, strict=False)))
            except ValueError:
                raise ConfigError(
                    f"infrastructure.admin_sources: {source!r} is not an IP address or CIDR network"
                ) from None
    else:
        sources = detect(ipv4=enable_ipv4, prefix_v6=prefix_v6)
        if not sources:
            raise HetznerPreflightError(
                "cannot tell which public address this machine reaches the forest from: it "
                "has no global IPv6 address"
                + (" and its IPv4 address is private or missing" if enable_ipv4 else "")
                + " (nodes are IPv6-only unless providers.hetzner.enable_ipv4 is set); set "
                "infrastructure.admin_sources to the networks that may reach SSH and NATS "
                'monitoring, e.g. ["2001:db8:1:2::/64", "203.0.113.7/32"]',
                code="admin_sources",
            )
    return sorted(set(sources))


def ssh_access(
    configured: Sequence[str],
    admitted: Callable[[], list[str]],
    *,
    port: int,
    probe: Callable[[socket.AddressFamily, str], IpAddress | None] = source_address,
) -> CheckResult:
    """The check line: does the nodes' firewall let this machine reach their SSH port (``grow``
    reconfigures running nodes over it)?  ``admitted``: the admin sources, as the firewall gets
    them; nodes are reached at their IPv6 address, so this machine's IPv6 source counts."""
    name = "hetzner SSH port"
    try:
        sources = admitted()
    except MorpheusError as exc:
        return CheckResult(name, False, str(exc))
    if not configured:
        detected = ", ".join(sources)
        return CheckResult(name, True, f"port {port} admits this machine's network ({detected})")
    here = probe(socket.AF_INET6, PROBE_TARGETS[socket.AF_INET6])
    if here is None:
        return CheckResult(
            name,
            False,
            f"this machine has no IPv6 route; nodes are reached at IPv6 addresses on port {port}",
            "enable IPv6 on this machine",
        )
    if isinstance(here, ipaddress.IPv6Address) and stays_on_site(here):
        return CheckResult(
            name,
            False,
            f"this machine's IPv6 source {here} is a local address that nodes cannot answer "
            "(see the ipv6 line)",
            "give this machine a global IPv6 address",
        )
    inside = next((s for s in sources if here in ipaddress.ip_network(s)), None)
    if inside is None:
        return CheckResult(
            name,
            False,
            f"port {port} of the nodes is closed to this machine: {here} is in none of "
            f"infrastructure.admin_sources ({', '.join(sources)}), so grow cannot reconfigure "
            "running nodes",
            f"add this machine's network to infrastructure.admin_sources, e.g. "
            f'"{ipaddress.ip_network(f"{here}/64", strict=False)}"',
        )
    return CheckResult(name, True, f"port {port} admits this machine ({here} is in {inside})")


class Firewalls:
    """Creates, adopts, updates and deletes the forests' firewalls."""

    def __init__(
        self,
        api: HetznerApi,
        actions: ActionWatcher,
        addresses: Addresses,
        *,
        ssh_port: int,
        delete_timeout: float,
    ) -> None:
        self._api = api
        self._actions = actions
        self._addresses = addresses
        self._ssh_port = ssh_port
        self._delete_timeout = delete_timeout
        self._lock = threading.Lock()
        self._forest_locks: dict[str, threading.Lock] = {}
        self._forest_actions: dict[str, list[int]] = {}

    def ensure(
        self,
        forest_id: str,
        run_id: str,
        networks: list[str],
        admin: Sequence[str],
        *,
        look_up: bool = True,
    ) -> None:
        """Admit a growing forest's new addresses to its firewall (looked up first unless the
        forest is new), or create the firewall, adopting one another run created meanwhile."""
        if look_up and self.refresh(forest_id):
            return
        name = f"morpheus-{forest_id}"
        rules = firewall_rules(list(admin), networks, Ports(), self._ssh_port)
        selector = FirewallResourceLabelSelector(selector=forest_selector(forest_id))

        def create(client: hcloud.Client) -> list[int]:
            response = client.firewalls.create(
                name=name,
                rules=rules,
                labels=labels_for(forest_id, None, run_id),  # type: ignore[arg-type]
                resources=[FirewallResource(type="label_selector", label_selector=selector)],
            )
            return [ident(action.data_model.id) for action in response.actions or []]

        def find() -> list[int] | None:
            return [] if self.refresh(forest_id) else None

        ids = self._api.create_or_adopt(f"creating firewall {name}", create, find)
        self._actions.track(ids)
        with self._lock:
            self._forest_actions.setdefault(forest_id, []).extend(ids)

    def pending_actions(self, forest_id: str) -> list[int]:
        """The actions applying the forest's firewall: a node is running once they are done."""
        with self._lock:
            return list(self._forest_actions.get(forest_id, []))

    def forget(self, forest_id: str) -> None:
        with self._lock:
            self._forest_actions.pop(forest_id, None)

    def refresh(self, forest_id: str, networks: list[str] | None = None) -> bool:
        """Make the forest firewall's route rule name the forest's addresses as they are now
        (``networks`` when the caller just listed them).  Returns whether there is one."""
        with self._lock:
            lock = self._forest_locks.setdefault(forest_id, threading.Lock())
        with lock:
            firewalls = self._api.call(
                f"looking up the firewall of {forest_id}",
                lambda c: c.firewalls.get_all(label_selector=forest_selector(forest_id)),
            )
            if not firewalls:
                return False
            if networks is None:
                networks = [a.network for a in self._addresses.of_forest(forest_id)]
            for bound in firewalls:
                current = list(bound.data_model.rules or [])
                wanted = with_forest_routes(current, networks, Ports().cluster)
                if sorted(map(rule_key, current)) == sorted(map(rule_key, wanted)):
                    continue
                firewall_id = ident(bound.data_model.id)
                actions = self._api.call(
                    f"updating the route rule of firewall {bound.data_model.name}",
                    partial(_set_rules, firewall_id=firewall_id, rules=wanted),
                )
                self._actions.track(ident(a.data_model.id) for a in actions)
            return True

    def delete_all(self, forest_id: str) -> list[str]:
        """Delete the forest's firewalls; returns what could not be deleted."""
        failed = []
        firewalls = self._api.call(
            f"listing the firewalls of {forest_id}",
            lambda c: c.firewalls.get_all(label_selector=forest_selector(forest_id)),
        )
        for bound in firewalls:
            try:
                self._delete(bound.data_model)
            except HetznerError as exc:
                failed.append(f"firewall {bound.data_model.name}: {exc}")
        return failed

    def _delete(self, firewall: Firewall) -> None:
        firewall_id = ident(firewall.id)
        # Detach first: a firewall still applied (even by label selector) cannot be deleted.
        attached = [
            FirewallResource(type=r.type, server=r.server, label_selector=r.label_selector)
            for r in firewall.applied_to or []
        ]
        if attached:
            try:
                actions = self._api.call(
                    f"detaching firewall {firewall.name}",
                    lambda c: c.firewalls.remove_from_resources(Firewall(id=firewall_id), attached),
                )
            except HetznerError as exc:
                if exc.code not in ("firewall_already_removed", "not_found"):
                    raise
            else:
                self._actions.wait(
                    [ident(a.data_model.id) for a in actions],
                    time.monotonic() + self._delete_timeout,
                    f"detaching firewall {firewall.name}",
                )
        try:
            self._api.call(
                f"deleting firewall {firewall.name}",
                lambda c: c.firewalls.delete(Firewall(id=firewall_id)),
                retry_codes={"resource_in_use", "locked"},
            )
        except HetznerError as exc:
            if exc.code != "not_found":
                raise


def _set_rules(
    client: hcloud.Client, *, firewall_id: int, rules: list[FirewallRule]
) -> list[BoundAction]:
    return client.firewalls.set_rules(Firewall(id=firewall_id), rules)
