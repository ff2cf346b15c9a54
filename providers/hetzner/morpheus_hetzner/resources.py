"""What the provider keeps of the API's objects: server types, primary IPs and servers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from hcloud.primary_ips import PrimaryIP
from hcloud.server_types import ServerType
from hcloud.servers import BoundServer

from morpheus.models import Capacity, NodeState, Ports
from morpheus.provider import NodeHandle
from morpheus_hetzner.api import HetznerError
from morpheus_hetzner.network import node_host

GIB = 1 << 30
_NODE_INDEX = re.compile(r"-node-(\d+)$")


@dataclass(frozen=True)
class LocationOffer:
    """Whether a server type can be ordered in one location right now."""

    available: bool
    deprecated: bool
    unavailable_after: datetime | None = None


@dataclass(frozen=True)
class ServerTypeInfo:
    """What Morpheus needs of a server type: size, architecture, availability, prices."""

    id: int
    name: str
    cores: int
    memory_gb: float
    disk_gb: int
    architecture: str
    offers: Mapping[str, LocationOffer]
    monthly: Mapping[str, tuple[Decimal, Decimal]]  # location -> (net, gross)

    @property
    def capacity(self) -> Capacity:
        return Capacity(
            cores=self.cores,
            memory_bytes=int(self.memory_gb * GIB),
            disk_bytes=self.disk_gb * GIB,
        )


@dataclass(frozen=True)
class PrimaryAddress:
    """A primary IP as the API describes it."""

    id: int
    kind: str  # ipv4 / ipv6
    ip: str  # an IPv4 address or an IPv6 /64
    location: str | None
    labels: Mapping[str, str]
    assignee_id: int | None = None

    @classmethod
    def from_model(cls, model: PrimaryIP) -> PrimaryAddress:
        return cls(
            id=ident(model.id),
            kind=str(model.type),
            ip=str(model.ip),
            location=str(model.location.name) if model.location is not None else None,
            labels=dict(model.labels or {}),
            assignee_id=model.assignee_id,
        )

    @property
    def network(self) -> str:
        """The firewall source for it: the /64 of an IPv6, the /32 of an IPv4."""
        return self.ip if self.kind == "ipv6" else f"{self.ip}/32"


@dataclass(frozen=True)
class Slot:
    """One node's reserved addresses, fixed before any node boots."""

    location: str
    ipv6: PrimaryAddress
    ipv4: PrimaryAddress | None = None

    @property
    def host(self) -> str:
        return node_host(self.ipv6.ip)

    @property
    def addresses(self) -> list[str]:
        return [self.host] + ([self.ipv4.ip] if self.ipv4 is not None else [])

    @property
    def networks(self) -> list[str]:
        return [a.network for a in (self.ipv6, self.ipv4) if a is not None]


def server_type_info(server_type: ServerType) -> ServerTypeInfo:
    offers = {}
    for entry in server_type.locations or []:
        deprecation = entry.deprecation
        offers[str(entry.location.name)] = LocationOffer(
            available=bool(entry.available),
            deprecated=deprecation is not None,
            unavailable_after=deprecation.unavailable_after if deprecation is not None else None,
        )
    monthly = {}
    for price in server_type.prices or []:
        amount = price.get("price_monthly") or {}
        monthly[str(price["location"])] = (
            Decimal(str(amount.get("net", "0"))),
            Decimal(str(amount.get("gross", "0"))),
        )
    if not offers:  # an API without per-location availability: offered means orderable
        offers = {loc: LocationOffer(available=True, deprecated=False) for loc in monthly}
    return ServerTypeInfo(
        id=int(server_type.id or 0),
        name=str(server_type.name),
        cores=int(server_type.cores or 1),
        memory_gb=float(server_type.memory or 0),
        disk_gb=int(server_type.disk or 0),
        architecture=str(server_type.architecture),
        offers=offers,
        monthly=monthly,
    )


def slot_of_server(server: BoundServer) -> Slot:
    model = server.data_model
    public = model.public_net
    ipv6 = public.ipv6 if public is not None else None
    ipv4 = public.ipv4 if public is not None else None
    location = str(model.location.name) if model.location is not None else ""
    return Slot(
        location=location,
        ipv6=PrimaryAddress(
            id=int(getattr(ipv6, "id", 0) or 0),
            kind="ipv6",
            ip=str(ipv6.ip) if ipv6 is not None else "::/64",
            location=location,
            labels={},
            assignee_id=model.id,
        ),
        ipv4=None
        if ipv4 is None
        else PrimaryAddress(
            id=int(getattr(ipv4, "id", 0) or 0),
            kind="ipv4",
            ip=str(ipv4.ip),
            location=location,
            labels={},
            assignee_id=model.id,
        ),
    )


def handle_of(server: BoundServer) -> NodeHandle:
    model = server.data_model
    labels = dict(model.labels or {})
    node_id = labels.get("node", str(model.name))
    match = _NODE_INDEX.search(node_id)
    slot = slot_of_server(server)
    server_type = model.server_type
    capacity = None
    if server_type is not None:
        st = server_type.data_model
        capacity = Capacity(
            cores=int(st.cores or 1),
            memory_bytes=int(float(st.memory or 1) * GIB),
            disk_bytes=int(st.disk or 0) * GIB or None,
        )
    return NodeHandle(
        provider_id=str(model.name),
        node_id=node_id,
        forest_id=labels.get("forest", ""),
        run_id=labels.get("run", ""),
        index=int(match.group(1)) if match else 0,
        host=slot.host if model.public_net and model.public_net.ipv6 else None,
        addresses=slot.addresses if model.public_net and model.public_net.ipv6 else [],
        ports=Ports(),
        capacity=capacity,
        state=NodeState.parse(str(model.status)),
        location=slot.location or None,
        labels=labels,
    )


def ident(value: int | None) -> int:
    """An id the API must have answered with."""
    if value is None:
        raise HetznerError("the Hetzner API answered without an id", code="invalid_response")
    return value


def forest_selector(forest_id: str, node_id: str | None = None) -> str:
    """The label selector of everything Morpheus made for a forest (or one of its nodes)."""
    selector = f"managed-by=morpheus,forest={forest_id}"
    return selector if node_id is None else f"{selector},node={node_id}"


def owned(labels: Mapping[str, str], expected: Mapping[str, str], *ignore: str) -> bool:
    """Whether ``labels`` carry every expected label (but those in ``ignore``)."""
    return all(labels.get(k) == v for k, v in expected.items() if k not in ignore)
