"""Primary IPs: each node's addresses, reserved before any node boots so peers know them."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from functools import partial

import hcloud
from hcloud.locations import Location
from hcloud.primary_ips import PrimaryIP

from morpheus.blueprint import NodeBlueprint, labels_for
from morpheus_hetzner.api import HetznerApi, HetznerError
from morpheus_hetzner.resources import PrimaryAddress, Slot, forest_selector, owned


class Addresses:
    """Reserves, finds and releases the primary IPs of forests (remembering this process's)."""

    def __init__(self, api: HetznerApi, *, enable_ipv4: bool) -> None:
        self._api = api
        self._enable_ipv4 = enable_ipv4
        self._lock = threading.Lock()
        self._slots: dict[str, Slot] = {}

    def reserve(self, forest_id: str, run_id: str, node_id: str, location: str) -> Slot:
        """An IPv6 primary IP for the node in ``location`` (and an IPv4 one when configured)."""
        labels = labels_for(forest_id, node_id, run_id)
        ipv6 = self._primary_ip("ipv6", f"{node_id}-{location}-ipv6", location, labels)
        ipv4 = None
        if self._enable_ipv4:
            ipv4 = self._primary_ip("ipv4", f"{node_id}-{location}-ipv4", location, labels)
        slot = Slot(location=location, ipv6=ipv6, ipv4=ipv4)
        with self._lock:
            self._slots[node_id] = slot
        return slot

    def slot_of(self, blueprint: NodeBlueprint) -> Slot:
        """The node's reserved addresses: this process's, else found by label (reserved by
        another process)."""
        with self._lock:
            slot = self._slots.get(blueprint.node_id)
        if slot is not None:
            return slot
        found = self.of_forest(blueprint.forest_id, blueprint.node_id)
        ipv6 = next((a for a in found if a.kind == "ipv6" and a.assignee_id is None), None)
        if ipv6 is None or ipv6.location is None:
            raise HetznerError(
                f"no reserved address for {blueprint.node_id}: reserve_addresses comes first",
                code="not_found",
            )
        ipv4 = next((a for a in found if a.kind == "ipv4" and a.assignee_id is None), None)
        return Slot(location=ipv6.location, ipv6=ipv6, ipv4=ipv4)

    def forget(self, node_id: str) -> None:
        with self._lock:
            self._slots.pop(node_id, None)

    def of_forest(self, forest_id: str, node_id: str | None = None) -> list[PrimaryAddress]:
        """The primary IPs labelled for the forest (or one of its nodes)."""
        selector = forest_selector(forest_id, node_id)
        whose = node_id or forest_id
        return self._api.call(
            f"listing the addresses of {whose}",
            lambda c: [
                PrimaryAddress.from_model(ip.data_model)
                for ip in c.primary_ips.get_all(label_selector=selector)
            ],
        )

    def release(self, addresses: Iterable[PrimaryAddress]) -> None:
        """Delete primary IPs; one still on a server is reported, not forced off it."""
        busy = []
        for address in addresses:
            if address.assignee_id is not None:
                busy.append(f"{address.ip} (on server {address.assignee_id})")
                continue
            address_id = address.id
            try:
                self._api.call(
                    f"deleting primary IP {address.ip}",
                    partial(_delete_primary_ip, address_id=address_id),
                    retry_codes={"locked"},
                )
            except HetznerError as exc:
                if exc.code != "not_found":
                    raise
        if busy:
            raise HetznerError(
                f"primary IPs still assigned: {', '.join(busy)}", code="resource_in_use"
            )

    def _primary_ip(
        self, kind: str, name: str, location: str, labels: dict[str, str]
    ) -> PrimaryAddress:
        def find() -> PrimaryAddress | None:
            found = self._api.call(
                f"looking up primary IP {name}",
                lambda c: [ip.data_model for ip in c.primary_ips.get_all(name=name)],
            )
            mine = [PrimaryAddress.from_model(ip) for ip in found if owned(ip.labels or {}, labels)]
            return mine[0] if mine else None

        # No assignee: the address waits for the server that is created with it.
        return self._api.create_or_adopt(
            f"creating {kind} primary IP {name}",
            lambda c: PrimaryAddress.from_model(
                c.primary_ips.create(
                    type=kind,
                    name=name,
                    location=Location(name=location),
                    auto_delete=True,
                    labels=labels,
                ).primary_ip.data_model
            ),
            find,
        )


def _delete_primary_ip(client: hcloud.Client, *, address_id: int) -> bool:
    return client.primary_ips.delete(PrimaryIP(id=address_id))
