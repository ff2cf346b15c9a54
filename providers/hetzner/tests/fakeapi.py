"""A stateful fake of the Hetzner Cloud API, served over HTTP on 127.0.0.1.

The real ``hcloud`` client drives it with ``hcloud.Client(token=fake.token,
api_endpoint=fake.endpoint)``. The fake keeps servers, SSH keys, firewalls, placement
groups, primary IPs and actions in memory; simulates action durations (scaled by
``time_scale``), label selectors, pagination and rate limiting; and lets a test inject the
faults a real API only produces on a bad day: error codes, lost and slow responses, failed
actions, a location that has run out of capacity.

One lock guards all state. Time advances lazily: whenever a request arrives or a test
reads the state, actions whose simulated duration has passed are finished first. So the
fake runs no thread besides the HTTP server's, and every wait it does is bounded and
interrupted by ``stop()``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "DEFAULT_ACTION_DURATIONS",
    "DEFAULT_TOKEN",
    "ApiError",
    "FakeAction",
    "FakeFirewall",
    "FakeHetzner",
    "FakePlacementGroup",
    "FakePrimaryIP",
    "FakeSSHKey",
    "FakeServer",
    "Fault",
    "FaultKind",
    "RequestRecord",
    "parse_label_selector",
]

JSONObject = dict[str, Any]
_T = TypeVar("_T")
LabelPredicate = Callable[[Mapping[str, str]], bool]

API_PREFIX: Final = "/v1"
DEFAULT_TOKEN: Final = "fake-hcloud-token"
USER_DATA_LIMIT: Final = 32 * 1024
MAX_BODY_BYTES: Final = 1024 * 1024
MAX_PER_PAGE: Final = 50
DEFAULT_PER_PAGE: Final = 25

#: Simulated durations in seconds per action command, at ``time_scale=1``; roughly what
#: the real API takes. Commands not listed take ``DEFAULT_ACTION_DURATION``.
DEFAULT_ACTION_DURATIONS: Final[Mapping[str, float]] = {
    "create_server": 10.0,
    "start_server": 5.0,
    "stop_server": 3.0,
    "shutdown_server": 8.0,
    "reboot_server": 8.0,
    "reset_server": 4.0,
    "delete_server": 4.0,
}
DEFAULT_ACTION_DURATION: Final = 1.0


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class _Location:
    id: int
    name: str
    description: str
    country: str
    city: str
    latitude: float
    longitude: float
    network_zone: str
    datacenter_id: int
    datacenter: str

    def to_json(self) -> JSONObject:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "country": self.country,
            "city": self.city,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "network_zone": self.network_zone,
        }


_LOCATIONS: Final = (
    _Location(1, "fsn1", "Falkenstein DC Park 1", "DE", "Falkenstein", 50.47612, 12.370071,
              "eu-central", 4, "fsn1-dc14"),
    _Location(2, "nbg1", "Nuremberg DC Park 1", "DE", "Nuremberg", 49.452102, 11.076665,
              "eu-central", 2, "nbg1-dc3"),
    _Location(3, "hel1", "Helsinki DC Park 1", "FI", "Helsinki", 60.169855, 24.938379,
              "eu-central", 3, "hel1-dc2"),
    _Location(4, "ash", "Ashburn, VA", "US", "Ashburn, VA", 39.045821, -77.487073,
              "us-east", 5, "ash-dc1"),
    _Location(5, "hil", "Hillsboro, OR", "US", "Hillsboro, OR", 45.54222, -122.951924,
              "us-west", 6, "hil-dc1"),
    _Location(6, "sin", "Singapore", "SG", "Singapore", 1.283333, 103.833333,
              "ap-southeast", 7, "sin-dc1"),
)  # fmt: skip
_EU: Final = ("fsn1", "nbg1", "hel1")
_EVERYWHERE: Final = (*_EU, "ash", "hil", "sin")
_VAT: Final = Decimal("1.19")
_TB: Final = 1024**4


@dataclass(frozen=True)
class _ServerType:
    id: int
    name: str
    cores: int
    memory: float
    disk: int
    cpu_type: str
    architecture: str
    category: str
    monthly_net_eur: str
    locations: tuple[str, ...]
    deprecation: tuple[str, str] | None = None  # (announced, unavailable_after)

    def monthly_net(self, location: str) -> Decimal:
        base = Decimal(self.monthly_net_eur)
        # Outside the EU the same type costs more (and includes less traffic).
        return base if location in _EU else (base * Decimal("1.2")).quantize(Decimal("0.01"))

    def deprecation_json(self) -> JSONObject | None:
        if self.deprecation is None:
            return None
        return {"announced": self.deprecation[0], "unavailable_after": self.deprecation[1]}


_SERVER_TYPES: Final = (
    _ServerType(1, "cx11", 1, 2.0, 20, "shared", "x86", "shared", "3.29", _EU,
                ("2024-06-06T08:00:00+00:00", "2024-09-06T08:00:00+00:00")),
    _ServerType(22, "cpx11", 2, 2.0, 40, "shared", "x86", "regular_purpose", "4.35", _EVERYWHERE),
    _ServerType(23, "cpx21", 3, 4.0, 80, "shared", "x86", "regular_purpose", "7.55", _EVERYWHERE),
    _ServerType(24, "cpx31", 4, 8.0, 160, "shared", "x86", "regular_purpose", "13.60", _EVERYWHERE),
    _ServerType(45, "cax11", 2, 4.0, 40, "shared", "arm", "cost_optimized", "3.79", _EU),
    _ServerType(93, "cax21", 4, 8.0, 80, "shared", "arm", "cost_optimized", "6.49", _EU),
    _ServerType(96, "ccx13", 2, 8.0, 80, "dedicated", "x86", "general_purpose", "12.49",
                _EVERYWHERE),
    _ServerType(104, "cx22", 2, 4.0, 40, "shared", "x86", "cost_optimized", "3.79", _EU),
    _ServerType(105, "cx32", 4, 8.0, 80, "shared", "x86", "cost_optimized", "6.80", _EU),
    _ServerType(106, "cx42", 8, 16.0, 160, "shared", "x86", "cost_optimized", "16.40", _EU),
    # The current cost-optimized generation (the core's default server type is cx23).
    _ServerType(114, "cx23", 2, 4.0, 40, "shared", "x86", "cost_optimized", "3.49", _EU),
    _ServerType(115, "cx33", 4, 8.0, 80, "shared", "x86", "cost_optimized", "5.49", _EU),
)  # fmt: skip


@dataclass(frozen=True)
class _Image:
    id: int
    name: str
    description: str
    os_flavor: str
    os_version: str
    architecture: str
    created: str

    def to_json(self) -> JSONObject:
        return {
            "id": self.id,
            "type": "system",
            "status": "available",
            "name": self.name,
            "description": self.description,
            "image_size": None,
            "disk_size": 5,
            "created": self.created,
            "created_from": None,
            "bound_to": None,
            "os_flavor": self.os_flavor,
            "os_version": self.os_version,
            "rapid_deploy": True,
            "protection": {"delete": False},
            "deprecation": None,
            "deleted": None,
            "labels": {},
            "architecture": self.architecture,
        }


_IMAGES: Final = (
    _Image(67794396, "ubuntu-22.04", "Ubuntu 22.04", "ubuntu", "22.04", "x86",
           "2022-04-21T13:32:38+00:00"),
    _Image(103908070, "ubuntu-22.04", "Ubuntu 22.04", "ubuntu", "22.04", "arm",
           "2023-03-16T09:00:00+00:00"),
    _Image(114690387, "debian-12", "Debian 12", "debian", "12", "x86",
           "2023-06-13T06:00:02+00:00"),
    _Image(114690389, "debian-12", "Debian 12", "debian", "12", "arm",
           "2023-06-13T06:00:02+00:00"),
    _Image(161547269, "ubuntu-24.04", "Ubuntu 24.04", "ubuntu", "24.04", "x86",
           "2024-04-25T13:26:27+00:00"),
    _Image(161547270, "ubuntu-24.04", "Ubuntu 24.04", "ubuntu", "24.04", "arm",
           "2024-04-25T13:26:27+00:00"),
)  # fmt: skip


def _money(net: Decimal) -> JSONObject:
    return {"net": f"{net:.10f}", "gross": f"{net * _VAT:.16f}"}


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answer of the API: an HTTP status plus the JSON ``error`` object."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: JSONObject | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def to_json(self) -> JSONObject:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def _invalid(message: str, field_name: str) -> ApiError:
    details = {"fields": [{"name": field_name, "messages": [message]}]}
    return ApiError(400, "invalid_input", message, details)


def _not_found(kind: str, ident: object) -> ApiError:
    return ApiError(404, "not_found", f"{kind} with ID {ident} not found")


def _not_unique(field_name: str = "name") -> ApiError:
    details = {"fields": [{"name": field_name}]}
    return ApiError(409, "uniqueness_error", f"{field_name} is already used", details)


def _in_use(kind: str, ident: int) -> ApiError:
    return ApiError(422, "resource_in_use", f"{kind} with ID {ident} is still in use")


# --------------------------------------------------------------------------- labels

_LABEL_KEY = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9._-]{0,251}[a-zA-Z0-9])?/)?"
    r"[a-zA-Z0-9](?:[a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?)?$")
_SELECTOR_KEY = r"[^\s!=(),]+"
_SET_TERM = re.compile(rf"^(?P<key>{_SELECTOR_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQ_TERM = re.compile(rf"^(?P<key>{_SELECTOR_KEY})\s*(?P<op>==|!=|=)\s*(?P<value>[^\s!=(),]*)$")
_NOT_TERM = re.compile(rf"^!\s*(?P<key>{_SELECTOR_KEY})$")
_HAS_TERM = re.compile(rf"^(?P<key>{_SELECTOR_KEY})$")


def _split_selector(selector: str) -> list[str]:
    """Split on commas that are not inside ``in (...)`` parentheses."""
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced parentheses")
        if char == "," and depth == 0:
            terms.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise ValueError("unbalanced parentheses")
    terms.append("".join(current).strip())
    return terms


def _parse_term(term: str) -> LabelPredicate:
    if match := _SET_TERM.match(term):
        key = match["key"]
        values = frozenset(v.strip() for v in match["values"].split(","))
        if match["op"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQ_TERM.match(term):
        key, value = match["key"], match["value"]
        if match["op"] == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _NOT_TERM.match(term):
        key = match["key"]
        return lambda labels: key not in labels
    if match := _HAS_TERM.match(term):
        key = match["key"]
        return lambda labels: key in labels
    raise ValueError(f"cannot parse label selector term {term!r}")


def parse_label_selector(selector: str) -> LabelPredicate:
    """Compile a Hetzner label selector into a predicate over a labels mapping.

    Supports ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)`` and
    ``k notin (a,b)``, joined by commas (AND). Raises ``ValueError`` when malformed.
    """
    predicates = [_parse_term(term) for term in _split_selector(selector)]
    return lambda labels: all(predicate(labels) for predicate in predicates)


# --------------------------------------------------------------------------- records


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.isoformat()


@dataclass
class FakeAction:
    """An action; ``status`` moves from ``running`` to ``success`` or ``error``."""

    id: int
    command: str
    resources: list[JSONObject]
    started: datetime
    duration: float
    due: float  # time.monotonic() at which it finishes
    after: int | None = None  # an action that must succeed first (create before start)
    status: str = "running"
    finished: datetime | None = None
    error: JSONObject | None = None
    fail_with: JSONObject | None = field(default=None, repr=False)
    on_success: list[Callable[[], None]] = field(default_factory=list, repr=False)
    on_error: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def progress(self, now: float) -> int:
        if self.status != "running":
            return 100
        if self.duration <= 0:
            return 99
        elapsed = self.duration - max(0.0, self.due - now)
        return max(0, min(99, int(100 * elapsed / self.duration)))

    def concerns(self, kind: str, ident: int) -> bool:
        return any(r["type"] == kind and r["id"] == ident for r in self.resources)


@dataclass
class FakeServer:
    """A server as the fake stores it (names, not nested objects)."""

    id: int
    name: str
    server_type: str
    image_id: int
    location: str
    labels: dict[str, str]
    created: datetime
    status: str
    user_data: str | None = None
    ssh_keys: list[int] = field(default_factory=list)
    placement_group_id: int | None = None
    firewall_ids: list[int] = field(default_factory=list)
    ipv4_id: int | None = None
    ipv6_id: int | None = None
    start_after_create: bool = True


@dataclass
class FakeSSHKey:
    """An SSH key."""

    id: int
    name: str
    public_key: str
    fingerprint: str
    labels: dict[str, str]
    created: datetime


@dataclass
class FakeFirewall:
    """A firewall; applied to servers directly and/or through label selectors."""

    id: int
    name: str
    labels: dict[str, str]
    rules: list[JSONObject]
    created: datetime
    server_ids: list[int] = field(default_factory=list)
    label_selectors: list[str] = field(default_factory=list)


@dataclass
class FakePlacementGroup:
    """A placement group (only type ``spread`` exists)."""

    id: int
    name: str
    type: str
    labels: dict[str, str]
    created: datetime


@dataclass
class FakePrimaryIP:
    """A primary IP: an IPv4 address or an IPv6 /64, optionally assigned to a server."""

    id: int
    name: str
    type: str
    ip: str
    location: str
    labels: dict[str, str]
    created: datetime
    auto_delete: bool
    assignee_id: int | None = None


class FaultKind(StrEnum):
    """What an injected fault does to a matching request."""

    ERROR = "error"  # answer with an error, do not perform the request
    SLOW = "slow"  # wait, then perform and answer normally
    DROP = "drop"  # (optionally perform, then) close the connection without an answer
    LATE = "late"  # perform, then answer only after a delay (past the client's timeout)


@dataclass
class Fault:
    """A fault injected by a test; matches requests by method and path prefix."""

    kind: FaultKind
    method: str | None
    path_prefix: str
    times: int | None  # None: until cleared
    status: int = 503
    code: str = "unavailable"
    message: str = "service temporarily unavailable"
    details: JSONObject | None = None
    delay: float = 0.0
    perform: bool = True
    reset_after: float | None = None  # for 429: seconds until RateLimit-Reset
    committed: bool = False  # for errors: perform the request, then answer the error anyway
    after: int = 0  # let this many matching requests through first
    hits: int = 0
    passed: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, method: str, path: str) -> bool:
        return (
            not self.exhausted
            and (self.method is None or self.method == method)
            and _under(path, self.path_prefix)
        )


@dataclass
class _Hook:
    method: str | None
    path_prefix: str
    callback: Callable[[], None]
    times: int | None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            (self.times is None or self.hits < self.times)
            and (self.method is None or self.method == method)
            and _under(path, self.path_prefix)
        )

    def fire(self) -> None:
        self.hits += 1
        self.callback()


@dataclass
class _ActionFailure:
    command: str
    code: str
    message: str
    times: int | None
    hits: int = 0


@dataclass(frozen=True)
class RequestRecord:
    """One request the fake received."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    status: int | None  # None: the connection was closed without an answer
    started: float  # time.time()
    duration: float
    route: str | None  # e.g. "/v1/servers/{id}"; None when no route matched
    fault: FaultKind | None


@dataclass
class _Bucket:
    limit: int
    window: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        rate = self.limit / self.window
        self.tokens = min(float(self.limit), self.tokens + (now - self.updated) * rate)
        self.updated = now

    def headers(self, now: float) -> dict[str, str]:
        seconds_to_full = (self.limit - self.tokens) * self.window / self.limit
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(int(self.tokens)),
            "RateLimit-Reset": str(math.ceil(time.time() + seconds_to_full)),
        }


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: JSONObject
    params: dict[str, str]

    @property
    def id(self) -> int:
        return int(self.params["id"])

    def one(self, key: str) -> str | None:
        values = self.query.get(key)
        return values[-1] if values else None

    def many(self, key: str) -> list[str]:
        return [v for value in self.query.get(key, []) for v in value.split(",") if v]


@dataclass(frozen=True)
class _Reply:
    status: int
    body: JSONObject | None


@dataclass(frozen=True)
class _Response:
    status: int
    payload: bytes
    headers: dict[str, str]
    route: str | None


Handler = Callable[[_Request], _Reply]


# --------------------------------------------------------------------------- body parsing


def _str_field(body: JSONObject, key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise _invalid(f"{key} is required", key)
        return None
    if not isinstance(value, str) or not value:
        raise _invalid(f"{key} must be a non-empty string", key)
    return value


def _bool_field(body: JSONObject, key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _invalid(f"{key} must be a boolean", key)
    return value


def _ref_field(body: JSONObject, key: str) -> int | str | None:
    """An ``id_or_name`` reference: an int id, a numeric string, or a name."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _invalid(f"{key} must be an ID or a name", key)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def _labels_field(body: JSONObject, key: str = "labels") -> dict[str, str]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid("labels must be an object", key)
    for label_key, label_value in value.items():
        if not isinstance(label_value, str) or not _LABEL_KEY.match(label_key):
            raise _invalid(f"invalid label key {label_key!r}", key)
        if not _LABEL_VALUE.match(label_value):
            raise _invalid(f"invalid label value {label_value!r}", key)
    return dict(value)


def _selector(selector: str, field_name: str) -> LabelPredicate:
    try:
        return parse_label_selector(selector)
    except ValueError as exc:
        raise _invalid(f"invalid label_selector: {exc}", field_name) from exc


_HOSTNAME = re.compile(
    r"^(?=.{1,63}$)[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*$"
)
# verb: (action command, server status while it runs or None to keep, status afterwards)
_POWER_COMMANDS: Final[Mapping[str, tuple[str, str | None, str]]] = {
    "poweron": ("start_server", "starting", "running"),
    "poweroff": ("stop_server", "stopping", "off"),
    "shutdown": ("shutdown_server", None, "off"),
    "reboot": ("reboot_server", None, "running"),
    "reset": ("reset_server", None, "running"),
}
_PORT = re.compile(r"^(?:any|\d{1,5}(?:-\d{1,5})?)$")
_PROTOCOLS: Final = ("tcp", "udp", "icmp", "esp", "gre")


def _fingerprint(public_key: str) -> str:
    parts = public_key.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise _invalid("invalid public key", "public_key")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid("invalid public key", "public_key") from exc
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _rule(raw: object) -> JSONObject:
    if not isinstance(raw, dict):
        raise _invalid("a rule must be an object", "rules")
    direction = raw.get("direction")
    protocol = raw.get("protocol")
    port = raw.get("port")
    source_ips = raw.get("source_ips") or []
    destination_ips = raw.get("destination_ips") or []
    if direction not in ("in", "out"):
        raise _invalid("direction must be 'in' or 'out'", "rules")
    if protocol not in _PROTOCOLS:
        raise _invalid(f"protocol must be one of {', '.join(_PROTOCOLS)}", "rules")
    if protocol in ("tcp", "udp"):
        if not isinstance(port, str) or not _PORT.match(port):
            raise _invalid("port is required for tcp and udp rules", "rules")
    elif port is not None:
        raise _invalid(f"port is not allowed for {protocol} rules", "rules")
    if direction == "in" and not source_ips:
        raise _invalid("source_ips is required for incoming rules", "rules")
    if direction == "out" and not destination_ips:
        raise _invalid("destination_ips is required for outgoing rules", "rules")
    if not all(isinstance(ip, str) for ip in [*source_ips, *destination_ips]):
        raise _invalid("IPs must be strings in CIDR notation", "rules")
    return {
        "direction": direction,
        "protocol": protocol,
        "port": port,
        "source_ips": list(source_ips),
        "destination_ips": list(destination_ips),
        "description": raw.get("description"),
    }


def _paginate(request: _Request, key: str, items: list[JSONObject]) -> _Reply:
    try:
        page = int(request.one("page") or 1)
        per_page = int(request.one("per_page") or DEFAULT_PER_PAGE)
    except ValueError as exc:
        raise _invalid("page and per_page must be integers", "page") from exc
    if page < 1 or per_page < 1:
        raise _invalid("page and per_page must be positive", "page")
    per_page = min(per_page, MAX_PER_PAGE)
    total = len(items)
    last_page = max(1, math.ceil(total / per_page))
    start = (page - 1) * per_page
    pagination = {
        "page": page,
        "per_page": per_page,
        "previous_page": page - 1 if page > 1 else None,
        "next_page": page + 1 if page < last_page else None,
        "last_page": last_page,
        "total_entries": total,
    }
    return _Reply(200, {key: items[start : start + per_page], "meta": {"pagination": pagination}})


# --------------------------------------------------------------------------- the fake


class FakeHetzner:
    """The fake Hetzner Cloud API: state, simulated time, faults and an HTTP server.

    Use it as a context manager (or call ``start()``/``stop()``) and point a client at
    ``endpoint`` with ``token``. Simulated action durations are
    ``action_durations[command] * time_scale`` seconds; ``time_scale`` and
    ``action_durations`` may be changed at any time and apply to actions started later.

    Rules it enforces, as the real API does (codes in parentheses):

    - names of servers, SSH keys, firewalls, placement groups and primary IPs are unique,
      and so are SSH key fingerprints (409 ``uniqueness_error``);
    - a server is ``initializing`` while ``create_server`` runs, ``starting`` while
      ``start_server`` runs, then ``running``; it disappears when ``delete_server``
      finishes, taking its ``auto_delete`` primary IPs with it (others are unassigned);
    - power actions on a server with a running action fail (423 ``locked``) when
      ``enforce_locks``; a second DELETE returns the running delete action;
    - a firewall applied to a server (directly or by a selector that matches one) and a
      placement group with servers cannot be deleted (422 ``resource_in_use``);
    - a spread placement group holds ``max_placement_group_servers`` (412 ``placement_error``);
    - ``root_password`` is null only when SSH keys were given; ``user_data`` is at most 32 KiB.
    """

    def __init__(
        self,
        *,
        tokens: Iterable[str] = (DEFAULT_TOKEN,),
        time_scale: float = 1.0,
        action_durations: Mapping[str, float] | None = None,
        rate_limit: int = 3600,
        rate_limit_window: float = 3600.0,
        default_location: str = "fsn1",
        max_placement_group_servers: int = 10,
        enforce_locks: bool = True,
        names_checked_first: bool = True,
        log_size: int = 10_000,
        port: int = 0,
    ) -> None:
        self.tokens: frozenset[str] = frozenset(tokens)
        if not self.tokens:
            raise ValueError("at least one token is required")
        self.time_scale = time_scale
        self.action_durations: dict[str, float] = {
            **DEFAULT_ACTION_DURATIONS,
            **(action_durations or {}),
        }
        self.default_location = default_location
        self.max_placement_group_servers = max_placement_group_servers
        self.enforce_locks = enforce_locks
        #: Hetzner documents no validation order: with False, a create whose name is taken
        #: and whose primary IP is assigned answers ``primary_ip_assigned``, not
        #: ``uniqueness_error`` (what a re-sent create whose first answer was lost meets).
        self.names_checked_first = names_checked_first
        self.lock = threading.RLock()
        self._port = port
        self._rate_limit = rate_limit
        self._rate_limit_window = rate_limit_window
        self._buckets: dict[str, _Bucket] = {}
        self._log: deque[RequestRecord] = deque(maxlen=log_size)
        self._counters: Counter[str] = Counter()
        self._faults: list[Fault] = []
        self._action_failures: list[_ActionFailure] = []
        self._unavailable: set[tuple[str, str | None]] = set()
        self._hooks: list[_Hook] = []
        self._stopping = threading.Event()
        self._httpd: _FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._elsewhere: list[tuple[_FakeHTTPServer, threading.Thread]] = []

        self._servers: dict[int, FakeServer] = {}
        self._actions: dict[int, FakeAction] = {}
        self._running: set[int] = set()
        self._ssh_keys: dict[int, FakeSSHKey] = {}
        self._firewalls: dict[int, FakeFirewall] = {}
        self._placement_groups: dict[int, FakePlacementGroup] = {}
        self._primary_ips: dict[int, FakePrimaryIP] = {}
        # Distinct id ranges per kind catch code that mixes up a server id and an action id.
        self._next_id: dict[str, int] = {
            "server": 40_000_001,
            "action": 900_000_001,
            "ssh_key": 20_000_001,
            "firewall": 1_000_001,
            "placement_group": 300_001,
            "primary_ip": 70_000_001,
        }
        self._ipv4_count = 0
        self._ipv6_count = 0
        self._routes = self._build_routes()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeHetzner:
        """Bind 127.0.0.1 and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("the fake is already running")
        self._stopping.clear()
        self._httpd = _FakeHTTPServer(("127.0.0.1", self._port), _Handler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-hetzner-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_also_in(self, call: Callable[[Callable[[], Any]], Any]) -> None:
        """Serve at the same endpoint in another network namespace too: ``call(function)`` runs
        ``function`` there (``Lab.call``; the listening socket belongs to that namespace)."""
        port = self.port
        httpd = call(lambda: _FakeHTTPServer(("127.0.0.1", port), _Handler, self))
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-hetzner-api-elsewhere",
            daemon=True,
        )
        thread.start()
        self._elsewhere.append((httpd, thread))

    def stop(self) -> None:
        """Stop serving; wakes handlers that are sleeping in a delay fault."""
        self._stopping.set()
        for httpd, thread in self._elsewhere:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)
        self._elsewhere.clear()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeHetzner:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the fake is not running")
        return int(self._httpd.server_address[1])

    @property
    def endpoint(self) -> str:
        """The value for ``hcloud.Client(api_endpoint=...)`` and ``HCLOUD_ENDPOINT``."""
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def token(self) -> str:
        """A token the fake accepts."""
        return DEFAULT_TOKEN if DEFAULT_TOKEN in self.tokens else min(self.tokens)

    # ------------------------------------------------------------------ state access

    def _snapshot(self, items: dict[int, _T]) -> dict[int, _T]:
        with self.lock:
            self._advance()
            return dict(items)

    @property
    def servers(self) -> dict[int, FakeServer]:
        """Servers by id (a copy of the index; the records are live)."""
        return self._snapshot(self._servers)

    @property
    def actions(self) -> dict[int, FakeAction]:
        return self._snapshot(self._actions)

    @property
    def ssh_keys(self) -> dict[int, FakeSSHKey]:
        return self._snapshot(self._ssh_keys)

    @property
    def firewalls(self) -> dict[int, FakeFirewall]:
        return self._snapshot(self._firewalls)

    @property
    def placement_groups(self) -> dict[int, FakePlacementGroup]:
        return self._snapshot(self._placement_groups)

    @property
    def primary_ips(self) -> dict[int, FakePrimaryIP]:
        return self._snapshot(self._primary_ips)

    def server_by_name(self, name: str) -> FakeServer | None:
        return next((s for s in self.servers.values() if s.name == name), None)

    def finish_action(self, action_id: int) -> FakeAction:
        """Make a running action finish now (and the ones it waits for)."""
        with self.lock:
            action = self._actions[action_id]
            now = time.monotonic()
            for _ in range(len(self._actions) + 1):
                if action.status != "running":
                    break
                blocker = action
                while (
                    blocker.after is not None and self._actions[blocker.after].status == "running"
                ):
                    blocker = self._actions[blocker.after]
                blocker.due = min(blocker.due, now)
                self._advance()
            return action

    def finish_all_actions(self) -> None:
        with self.lock:
            now = time.monotonic()
            for action_id in self._running:
                self._actions[action_id].due = min(self._actions[action_id].due, now)
            self._advance()

    # ------------------------------------------------------------------ request log

    @property
    def requests(self) -> list[RequestRecord]:
        """The most recent requests (up to ``log_size``), oldest first."""
        with self.lock:
            return list(self._log)

    @property
    def counters(self) -> Counter[str]:
        """Requests per ``"METHOD /v1/route/{id}"`` since start (not bounded by log_size)."""
        with self.lock:
            return Counter(self._counters)

    def request_count(
        self,
        method: str | None = None,
        path_prefix: str | None = None,
        status: int | None = None,
    ) -> int:
        """Count logged requests matching all given criteria."""
        prefix = _api_path(path_prefix) if path_prefix is not None else None
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method)
            and (prefix is None or _under(r.path, prefix))
            and (status is None or r.status == status)
        )

    def clear_requests(self) -> None:
        with self.lock:
            self._log.clear()
            self._counters.clear()

    # ------------------------------------------------------------------ fault injection

    def inject(
        self,
        *,
        method: str | None = None,
        path_prefix: str = API_PREFIX,
        status: int = 503,
        code: str = "unavailable",
        message: str | None = None,
        details: JSONObject | None = None,
        times: int | None = 1,
        after: int = 0,
        committed: bool = False,
    ) -> Fault:
        """Answer matching requests with an error, without performing them (``committed``:
        after performing them, as an API that fails between its commit and its answer).

        ``after`` lets that many matching requests through first (fail the 4th create).
        """
        return self._add_fault(
            Fault(
                kind=FaultKind.ERROR,
                method=method,
                path_prefix=_api_path(path_prefix),
                times=times,
                status=status,
                code=code,
                message=message or f"injected {code}",
                details=details,
                after=after,
                committed=committed,
            )
        )

    def inject_locked(
        self,
        *,
        method: str | None = "POST",
        path_prefix: str = "/servers",
        times: int | None = 1,
    ) -> Fault:
        """Answer 423 ``locked``, as when another action holds the resource."""
        return self.inject(
            method=method,
            path_prefix=path_prefix,
            status=423,
            code="locked",
            message="resource is locked by another action",
            times=times,
        )

    def inject_rate_limited(
        self,
        *,
        method: str | None = None,
        path_prefix: str = API_PREFIX,
        reset_after: float = 60.0,
        times: int | None = 1,
    ) -> Fault:
        """Answer 429 ``rate_limit_exceeded`` with Remaining 0 and a Reset ``reset_after`` away."""
        fault = self.inject(
            method=method,
            path_prefix=path_prefix,
            status=429,
            code="rate_limit_exceeded",
            message="limit of requests per hour reached",
            times=times,
        )
        fault.reset_after = reset_after
        return fault

    def inject_lost_response(
        self,
        *,
        method: str | None = "POST",
        path_prefix: str = "/servers",
        perform: bool = True,
        delay: float | None = None,
        times: int | None = 1,
    ) -> Fault:
        """Lose the answer to matching requests.

        With ``delay=None`` the connection is closed without an answer (after performing
        the request when ``perform``); with a delay the request is performed and answered
        only after ``delay`` seconds, which a client with a shorter timeout never sees.
        """
        kind = FaultKind.DROP if delay is None else FaultKind.LATE
        return self._add_fault(
            Fault(
                kind=kind,
                method=method,
                path_prefix=_api_path(path_prefix),
                times=times,
                delay=delay or 0.0,
                perform=perform or kind is FaultKind.LATE,
            )
        )

    def inject_slow_response(
        self,
        seconds: float,
        *,
        method: str | None = None,
        path_prefix: str = API_PREFIX,
        times: int | None = 1,
    ) -> Fault:
        """Wait ``seconds`` before performing and answering matching requests."""
        return self._add_fault(
            Fault(
                kind=FaultKind.SLOW,
                method=method,
                path_prefix=_api_path(path_prefix),
                times=times,
                delay=seconds,
            )
        )

    def set_location_unavailable(
        self,
        location: str,
        server_type: str | None = None,
        *,
        unavailable: bool = True,
    ) -> None:
        """Make server creation in ``location`` (optionally one type only) fail with 412
        ``resource_unavailable``; server types then list the location as not available."""
        with self.lock:
            key = (location, server_type)
            if unavailable:
                self._unavailable.add(key)
            else:
                self._unavailable.discard(key)

    def fail_next_action(
        self,
        command: str,
        *,
        code: str = "action_failed",
        message: str = "Action failed",
        times: int | None = 1,
    ) -> None:
        """Make the next ``times`` actions with this command end in status ``error``."""
        with self.lock:
            self._action_failures.append(_ActionFailure(command, code, message, times))

    def set_rate_limit(self, limit: int, window: float = 3600.0) -> None:
        """Allow ``limit`` requests per ``window`` seconds per token; refills buckets."""
        with self.lock:
            self._rate_limit = limit
            self._rate_limit_window = window
            self._buckets.clear()

    def exhaust_rate_limit(self, token: str | None = None) -> None:
        """Empty the rate-limit bucket of ``token`` (default: ``self.token``)."""
        with self.lock:
            self._bucket(token or self.token, time.monotonic()).tokens = 0.0

    def before(
        self,
        method: str | None,
        path_prefix: str,
        callback: Callable[[], None],
        *,
        times: int | None = 1,
    ) -> None:
        """Run ``callback`` (holding the lock) before the next ``times`` matching requests
        are served: a change of state at an exact point of a client's sequence, e.g. a
        location that runs out of capacity between the reservation and the creates."""
        with self.lock:
            self._hooks.append(_Hook(method, _api_path(path_prefix), callback, times))

    def clear_faults(self) -> None:
        """Remove all injected faults, hooks, action failures and unavailable locations."""
        with self.lock:
            self._faults.clear()
            self._hooks.clear()
            self._action_failures.clear()
            self._unavailable.clear()

    def _add_fault(self, fault: Fault) -> Fault:
        with self.lock:
            self._faults.append(fault)
        return fault

    # ------------------------------------------------------------------ request plumbing

    def _take_fault(self, method: str, path: str, token: str | None) -> Fault | None:
        with self.lock:
            if token not in self.tokens:
                return None
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.passed < fault.after:
                        fault.passed += 1
                        continue
                    fault.hits += 1
                    return fault
            return None

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(max(0.0, seconds))

    def _bucket(self, token: str, now: float) -> _Bucket:
        bucket = self._buckets.get(token)
        if bucket is None:
            bucket = _Bucket(self._rate_limit, self._rate_limit_window, self._rate_limit, now)
            self._buckets[token] = bucket
        bucket.refill(now)
        return bucket

    def _respond(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        raw_body: bytes,
        token: str | None,
        fault: Fault | None,
    ) -> _Response:
        with self.lock:
            now = time.monotonic()
            self._advance()
            for hook in [h for h in self._hooks if h.matches(method, path)]:
                hook.fire()
            handler, params, route = self._route(method, path)
            headers = {
                "RateLimit-Limit": str(self._rate_limit),
                "RateLimit-Remaining": str(self._rate_limit),
                "RateLimit-Reset": str(math.ceil(time.time())),
            }
            try:
                if token is None or token not in self.tokens:
                    raise ApiError(401, "unauthorized", "unable to authenticate")
                bucket = self._bucket(token, now)
                if bucket.tokens < 1:
                    headers = bucket.headers(now)
                    raise ApiError(
                        429,
                        "rate_limit_exceeded",
                        f"limit of {self._rate_limit} requests per hour reached",
                    )
                bucket.tokens -= 1
                headers = bucket.headers(now)
                if fault is not None and fault.kind is FaultKind.ERROR:
                    if fault.reset_after is not None:
                        headers["RateLimit-Remaining"] = "0"
                        headers["RateLimit-Reset"] = str(math.ceil(time.time() + fault.reset_after))
                    if fault.committed and handler is not None:
                        handler(_Request(method, path, query, _parse_body(raw_body), params))
                    raise ApiError(fault.status, fault.code, fault.message, fault.details)
                if handler is None:
                    raise ApiError(404, "not_found", f"no route for {method} {path}")
                body = _parse_body(raw_body)
                reply = handler(_Request(method, path, query, body, params))
            except ApiError as error:
                reply = _Reply(error.status, error.to_json())
            payload = b"" if reply.body is None else json.dumps(reply.body).encode()
            return _Response(reply.status, payload, headers, route)

    def _record(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        status: int | None,
        started: float,
        duration: float,
        route: str | None,
        fault: Fault | None,
    ) -> None:
        with self.lock:
            self._log.append(
                RequestRecord(
                    method=method,
                    path=path,
                    query=query,
                    status=status,
                    started=started,
                    duration=duration,
                    route=route,
                    fault=fault.kind if fault is not None else None,
                )
            )
            self._counters[f"{method} {route or '(unmatched)'}"] += 1

    def _route(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], str | None]:
        for route_method, pattern, template, handler in self._routes:
            if route_method == method and (match := pattern.fullmatch(path)):
                return handler, match.groupdict(), template
        return None, {}, None

    def _build_routes(self) -> list[tuple[str, re.Pattern[str], str, Handler]]:
        table: list[tuple[str, str, Handler]] = [
            ("GET", "/actions", self._list_actions),
            ("GET", "/actions/{id}", self._get_action),
            ("GET", "/{resource}/actions/{id}", self._get_action),
            ("GET", "/servers", self._list_servers),
            ("POST", "/servers", self._create_server),
            ("GET", "/servers/{id}", self._get_server),
            ("PUT", "/servers/{id}", self._update_server),
            ("DELETE", "/servers/{id}", self._delete_server),
            ("GET", "/servers/{id}/actions", self._list_server_actions),
            ("POST", "/servers/{id}/actions/{command}", self._server_action),
            ("GET", "/server_types", self._list_server_types),
            ("GET", "/server_types/{id}", self._get_server_type),
            ("GET", "/locations", self._list_locations),
            ("GET", "/locations/{id}", self._get_location),
            ("GET", "/datacenters", self._list_datacenters),
            ("GET", "/datacenters/{id}", self._get_datacenter),
            ("GET", "/images", self._list_images),
            ("GET", "/images/{id}", self._get_image),
            ("GET", "/ssh_keys", self._list_ssh_keys),
            ("POST", "/ssh_keys", self._create_ssh_key),
            ("GET", "/ssh_keys/{id}", self._get_ssh_key),
            ("PUT", "/ssh_keys/{id}", self._update_ssh_key),
            ("DELETE", "/ssh_keys/{id}", self._delete_ssh_key),
            ("GET", "/firewalls", self._list_firewalls),
            ("POST", "/firewalls", self._create_firewall),
            ("GET", "/firewalls/{id}", self._get_firewall),
            ("PUT", "/firewalls/{id}", self._update_firewall),
            ("DELETE", "/firewalls/{id}", self._delete_firewall),
            ("POST", "/firewalls/{id}/actions/{command}", self._firewall_action),
            ("GET", "/placement_groups", self._list_placement_groups),
            ("POST", "/placement_groups", self._create_placement_group),
            ("GET", "/placement_groups/{id}", self._get_placement_group),
            ("PUT", "/placement_groups/{id}", self._update_placement_group),
            ("DELETE", "/placement_groups/{id}", self._delete_placement_group),
            ("GET", "/primary_ips", self._list_primary_ips),
            ("POST", "/primary_ips", self._create_primary_ip),
            ("GET", "/primary_ips/{id}", self._get_primary_ip),
            ("PUT", "/primary_ips/{id}", self._update_primary_ip),
            ("DELETE", "/primary_ips/{id}", self._delete_primary_ip),
            ("POST", "/primary_ips/{id}/actions/{command}", self._primary_ip_action),
        ]
        routes = []
        for method, template, handler in table:
            regex = (
                re.escape(API_PREFIX + template)
                .replace(r"\{id\}", r"(?P<id>\d+)")
                .replace(r"\{command\}", r"(?P<command>[a-z_]+)")
                .replace(r"\{resource\}", r"(?P<resource>[a-z_]+)")
            )
            routes.append((method, re.compile(regex), API_PREFIX + template, handler))
        return routes

    # ------------------------------------------------------------------ simulated time

    def _new_id(self, kind: str) -> int:
        ident = self._next_id[kind]
        self._next_id[kind] = ident + 1
        return ident

    def _new_action(
        self,
        command: str,
        resources: list[JSONObject],
        *,
        after: FakeAction | None = None,
    ) -> FakeAction:
        duration = self.action_durations.get(command, DEFAULT_ACTION_DURATION) * self.time_scale
        begins = after.due if after is not None else time.monotonic()
        action = FakeAction(
            id=self._new_id("action"),
            command=command,
            resources=resources,
            started=_now(),
            duration=duration,
            due=begins + duration,
            after=after.id if after is not None else None,
        )
        for failure in self._action_failures:
            if failure.command == command and (
                failure.times is None or failure.hits < failure.times
            ):
                failure.hits += 1
                action.fail_with = {"code": failure.code, "message": failure.message}
                break
        self._actions[action.id] = action
        self._running.add(action.id)
        return action

    def _advance(self) -> None:
        now = time.monotonic()
        due = sorted(
            (a for a in (self._actions[i] for i in self._running) if a.due <= now),
            key=lambda a: (a.due, a.id),
        )
        for action in due:
            self._finish(action)

    def _finish(self, action: FakeAction) -> None:
        self._running.discard(action.id)
        overdue = max(0.0, time.monotonic() - action.due)
        finished = datetime.now(UTC) - timedelta(seconds=overdue)
        action.finished = max(action.started, finished.replace(microsecond=0))
        blocker = self._actions.get(action.after) if action.after is not None else None
        if blocker is not None and blocker.status == "error":
            action.fail_with = action.fail_with or blocker.error
        if action.fail_with is not None:
            action.status = "error"
            action.error = action.fail_with
            callbacks = action.on_error
        else:
            action.status = "success"
            callbacks = action.on_success
        for callback in callbacks:
            callback()

    def _action_json(self, action: FakeAction) -> JSONObject:
        return {
            "id": action.id,
            "command": action.command,
            "status": action.status,
            "progress": action.progress(time.monotonic()),
            "started": _iso(action.started),
            "finished": _iso(action.finished) if action.finished else None,
            "resources": action.resources,
            "error": action.error,
        }

    def _running_action_on(self, kind: str, ident: int) -> FakeAction | None:
        for action_id in sorted(self._running):
            action = self._actions[action_id]
            if action.concerns(kind, ident):
                return action
        return None

    # ------------------------------------------------------------------ actions

    def _list_actions(self, request: _Request) -> _Reply:
        ids = {int(v) for v in request.many("id") if v.isdigit()}
        statuses = set(request.many("status"))
        actions = [
            self._action_json(a)
            for a in sorted(self._actions.values(), key=lambda a: a.id)
            if (not ids or a.id in ids) and (not statuses or a.status in statuses)
        ]
        return _paginate(request, "actions", actions)

    def _get_action(self, request: _Request) -> _Reply:
        action = self._actions.get(request.id)
        if action is None:
            raise _not_found("action", request.id)
        return _Reply(200, {"action": self._action_json(action)})

    # ------------------------------------------------------------------ catalog endpoints

    def _location(self, ref: int | str | None, field_name: str = "location") -> _Location:
        for location in _LOCATIONS:
            if ref in (location.id, location.name):
                return location
        raise _invalid(f"location {ref} not found", field_name)

    def _location_from_datacenter(self, ref: int | str) -> _Location:
        for location in _LOCATIONS:
            if ref in (location.datacenter_id, location.datacenter):
                return location
        raise _invalid(f"datacenter {ref} not found", "datacenter")

    def _server_type(self, ref: int | str | None) -> _ServerType:
        for server_type in _SERVER_TYPES:
            if ref in (server_type.id, server_type.name):
                return server_type
        raise _invalid(f"server type {ref} not found", "server_type")

    def _is_unavailable(self, location: str, server_type: str) -> bool:
        return bool({(location, None), (location, server_type)} & self._unavailable)

    def _server_type_json(self, st: _ServerType) -> JSONObject:
        prices = []
        locations = []
        for location in _LOCATIONS:
            if location.name not in st.locations:
                continue
            monthly = st.monthly_net(location.name)
            in_eu = location.name in _EU
            prices.append(
                {
                    "location": location.name,
                    "price_hourly": _money((monthly / 730).quantize(Decimal("0.0001"))),
                    "price_monthly": _money(monthly),
                    "included_traffic": (20 if in_eu else 1) * _TB,
                    "price_per_tb_traffic": _money(Decimal("1.00") if in_eu else Decimal("7.20")),
                }
            )
            available = not self._is_unavailable(location.name, st.name)
            locations.append(
                {
                    "id": location.id,
                    "name": location.name,
                    "deprecation": st.deprecation_json(),
                    "available": available and st.deprecation is None,
                    "recommended": available and st.deprecation is None,
                }
            )
        return {
            "id": st.id,
            "name": st.name,
            "description": st.name.upper(),
            "category": st.category,
            "cores": st.cores,
            "memory": st.memory,
            "disk": st.disk,
            "prices": prices,
            "storage_type": "local",
            "cpu_type": st.cpu_type,
            "architecture": st.architecture,
            "deprecated": st.deprecation is not None,
            "deprecation": st.deprecation_json(),
            "locations": locations,
        }

    def _list_server_types(self, request: _Request) -> _Reply:
        name = request.one("name")
        items = [
            self._server_type_json(st) for st in _SERVER_TYPES if name is None or st.name == name
        ]
        return _paginate(request, "server_types", items)

    def _get_server_type(self, request: _Request) -> _Reply:
        for st in _SERVER_TYPES:
            if st.id == request.id:
                return _Reply(200, {"server_type": self._server_type_json(st)})
        raise _not_found("server_type", request.id)

    def _list_locations(self, request: _Request) -> _Reply:
        name = request.one("name")
        items = [loc.to_json() for loc in _LOCATIONS if name is None or loc.name == name]
        return _paginate(request, "locations", items)

    def _get_location(self, request: _Request) -> _Reply:
        for location in _LOCATIONS:
            if location.id == request.id:
                return _Reply(200, {"location": location.to_json()})
        raise _not_found("location", request.id)

    def _datacenter_json(self, location: _Location) -> JSONObject:
        offered = [st.id for st in _SERVER_TYPES if location.name in st.locations]
        available = [
            st.id
            for st in _SERVER_TYPES
            if location.name in st.locations
            and st.deprecation is None
            and not self._is_unavailable(location.name, st.name)
        ]
        return {
            "id": location.datacenter_id,
            "name": location.datacenter,
            "description": f"{location.city} virtual DC",
            "location": location.to_json(),
            "server_types": {
                "supported": offered,
                "available": available,
                "available_for_migration": available,
            },
        }

    def _list_datacenters(self, request: _Request) -> _Reply:
        name = request.one("name")
        items = [
            self._datacenter_json(loc)
            for loc in _LOCATIONS
            if name is None or loc.datacenter == name
        ]
        reply = _paginate(request, "datacenters", items)
        assert reply.body is not None
        reply.body["recommendation"] = _LOCATIONS[0].datacenter_id
        return reply

    def _get_datacenter(self, request: _Request) -> _Reply:
        for location in _LOCATIONS:
            if location.datacenter_id == request.id:
                return _Reply(200, {"datacenter": self._datacenter_json(location)})
        raise _not_found("datacenter", request.id)

    def _list_images(self, request: _Request) -> _Reply:
        name = request.one("name")
        architectures = set(request.many("architecture"))
        types = set(request.many("type"))
        statuses = set(request.many("status"))
        selector = request.one("label_selector")
        matches = _selector(selector, "label_selector") if selector else None
        items = [
            image.to_json()
            for image in sorted(_IMAGES, key=lambda i: i.id)
            if (name is None or image.name == name)
            and (not architectures or image.architecture in architectures)
            and (not types or "system" in types)
            and (not statuses or "available" in statuses)
            and (matches is None or matches({}))
        ]
        return _paginate(request, "images", items)

    def _get_image(self, request: _Request) -> _Reply:
        for image in _IMAGES:
            if image.id == request.id:
                return _Reply(200, {"image": image.to_json()})
        raise _not_found("image", request.id)

    def _image_for(self, ref: int | str | None, architecture: str) -> _Image:
        if ref is None:
            raise _invalid("image is required", "image")
        for image in _IMAGES:
            if image.id == ref:
                if image.architecture != architecture:
                    raise _invalid(
                        f"image {ref} does not match the server type architecture", "image"
                    )
                return image
        for image in _IMAGES:
            if image.name == ref and image.architecture == architecture:
                return image
        raise _invalid(f"image {ref} not found", "image")

    # ------------------------------------------------------------------ servers

    def _server(self, ident: int) -> FakeServer:
        server = self._servers.get(ident)
        if server is None:
            raise _not_found("server", ident)
        return server

    def _firewalls_of(self, server: FakeServer) -> list[FakeFirewall]:
        return [
            fw
            for fw in sorted(self._firewalls.values(), key=lambda f: f.id)
            if server.id in fw.server_ids
            or any(parse_label_selector(s)(server.labels) for s in fw.label_selectors)
        ]

    def _server_json(self, server: FakeServer) -> JSONObject:
        st = self._server_type(server.server_type)
        location = self._location(server.location)
        image = next(i for i in _IMAGES if i.id == server.image_id)
        ipv4 = self._primary_ips.get(server.ipv4_id) if server.ipv4_id else None
        ipv6 = self._primary_ips.get(server.ipv6_id) if server.ipv6_id else None
        placement_group = (
            self._placement_groups.get(server.placement_group_id)
            if server.placement_group_id
            else None
        )
        return {
            "id": server.id,
            "name": server.name,
            "status": server.status,
            "created": _iso(server.created),
            "public_net": {
                "ipv4": None
                if ipv4 is None
                else {
                    "id": ipv4.id,
                    "ip": ipv4.ip,
                    "blocked": False,
                    "dns_ptr": _ipv4_ptr(ipv4.ip),
                },
                "ipv6": None
                if ipv6 is None
                else {"id": ipv6.id, "ip": ipv6.ip, "blocked": False, "dns_ptr": []},
                "floating_ips": [],
                "firewalls": [
                    {"id": fw.id, "status": "applied"} for fw in self._firewalls_of(server)
                ],
            },
            "private_net": [],
            "server_type": self._server_type_json(st),
            "datacenter": self._datacenter_json(location),
            "location": location.to_json(),
            "image": image.to_json(),
            "iso": None,
            "rescue_enabled": False,
            "locked": False,
            "backup_window": None,
            "outgoing_traffic": 0,
            "ingoing_traffic": 0,
            "included_traffic": (20 if location.name in _EU else 1) * _TB,
            "protection": {"delete": False, "rebuild": False},
            "labels": dict(server.labels),
            "volumes": [],
            "load_balancers": [],
            "primary_disk_size": st.disk,
            "placement_group": None
            if placement_group is None
            else self._placement_group_json(placement_group),
        }

    def _list_servers(self, request: _Request) -> _Reply:
        name = request.one("name")
        statuses = set(request.many("status"))
        selector = request.one("label_selector")
        matches = _selector(selector, "label_selector") if selector else None
        items = [
            self._server_json(s)
            for s in sorted(self._servers.values(), key=lambda s: s.id)
            if (name is None or s.name == name)
            and (not statuses or s.status in statuses)
            and (matches is None or matches(s.labels))
        ]
        return _paginate(request, "servers", items)

    def _get_server(self, request: _Request) -> _Reply:
        return _Reply(200, {"server": self._server_json(self._server(request.id))})

    def _take_primary_ip(self, ref: object, kind: str) -> FakePrimaryIP:
        field_name = f"public_net.{kind}"
        if isinstance(ref, bool) or not isinstance(ref, int):
            raise _invalid(f"{field_name} must be a primary IP ID", field_name)
        ip = self._primary_ips.get(ref)
        if ip is None or ip.type != kind:
            raise _invalid(f"{kind} primary IP {ref} not found", field_name)
        if ip.assignee_id is not None:
            raise ApiError(422, "primary_ip_assigned", f"primary IP {ref} is already assigned")
        return ip

    def _new_primary_ip(
        self, kind: str, location: str, *, name: str | None, auto_delete: bool
    ) -> FakePrimaryIP:
        ident = self._new_id("primary_ip")
        if kind == "ipv4":
            self._ipv4_count += 1
            n = self._ipv4_count
            # Benchmarking and documentation ranges: a test that dials a node (a readiness
            # or status poll) can never reach a real machine.
            address = f"198.18.{(n // 254) % 256}.{n % 254 + 1}"
        else:
            self._ipv6_count += 1
            n = self._ipv6_count
            address = f"2001:db8:{0xC000 + (n >> 16) % 0x4000:x}:{n & 0xFFFF:x}::/64"
        ip = FakePrimaryIP(
            id=ident,
            name=name or f"primary_ip-{ident}",
            type=kind,
            ip=address,
            location=location,
            labels={},
            created=_now(),
            auto_delete=auto_delete,
        )
        self._primary_ips[ident] = ip
        return ip

    def _create_server(self, request: _Request) -> _Reply:
        body = request.body
        name = cast(str, _str_field(body, "name"))
        if not _HOSTNAME.match(name):
            raise _invalid("name must be a valid hostname (RFC 1123)", "name")
        if self.names_checked_first and any(s.name == name for s in self._servers.values()):
            raise _not_unique()
        st = self._server_type(_ref_field(body, "server_type"))
        image = self._image_for(_ref_field(body, "image"), st.architecture)
        labels = _labels_field(body)
        user_data = _str_field(body, "user_data", required=False)
        if user_data is not None and len(user_data.encode()) > USER_DATA_LIMIT:
            raise _invalid("user_data must be at most 32 KiB", "user_data")
        start_after_create = _bool_field(body, "start_after_create", True)

        public_net = body.get("public_net") or {}
        if not isinstance(public_net, dict):
            raise _invalid("public_net must be an object", "public_net")
        enable_ipv4 = _bool_field(public_net, "enable_ipv4", True)
        enable_ipv6 = _bool_field(public_net, "enable_ipv6", True)
        given_ips = [
            self._take_primary_ip(public_net[kind], kind)
            for kind in ("ipv4", "ipv6")
            if public_net.get(kind) is not None
        ]
        if not (enable_ipv4 or enable_ipv6):
            raise _invalid("a server without public network needs a private network", "public_net")
        if any(s.name == name for s in self._servers.values()):
            raise _not_unique()

        location_ref = _ref_field(body, "location")
        datacenter_ref = _ref_field(body, "datacenter")
        if location_ref is not None:
            location = self._location(location_ref)
        elif datacenter_ref is not None:
            location = self._location_from_datacenter(datacenter_ref)
        elif given_ips:
            location = self._location(given_ips[0].location)
        else:
            location = self._location(self.default_location)
        for ip in given_ips:
            if ip.location != location.name:
                raise _invalid(f"primary IP {ip.id} is in {ip.location}", f"public_net.{ip.type}")
        if st.deprecation is not None:
            raise _invalid(f"server type {st.name} is deprecated", "server_type")
        if location.name not in st.locations:
            raise _invalid(f"server type {st.name} is not offered in {location.name}", "location")
        if self._is_unavailable(location.name, st.name):
            raise ApiError(
                412,
                "resource_unavailable",
                f"server type {st.name} is currently unavailable in {location.name}",
            )

        ssh_key_ids = []
        for ref in body.get("ssh_keys") or []:
            key = next((k for k in self._ssh_keys.values() if ref in (k.id, k.name)), None)
            if key is None:
                raise _invalid(f"ssh key {ref} not found", "ssh_keys")
            ssh_key_ids.append(key.id)

        firewall_ids = []
        for entry in body.get("firewalls") or []:
            ref = entry.get("firewall") if isinstance(entry, dict) else None
            if ref not in self._firewalls:
                raise _invalid(f"firewall {ref} not found", "firewalls")
            firewall_ids.append(cast(int, ref))

        placement_group_id = body.get("placement_group")
        if placement_group_id is not None:
            if placement_group_id not in self._placement_groups:
                raise _invalid(f"placement group {placement_group_id} not found", "placement_group")
            members = sum(
                1 for s in self._servers.values() if s.placement_group_id == placement_group_id
            )
            if members >= self.max_placement_group_servers:
                raise ApiError(
                    412,
                    "placement_error",
                    f"placement group {placement_group_id} already holds "
                    f"{self.max_placement_group_servers} servers",
                )

        server = FakeServer(
            id=self._new_id("server"),
            name=name,
            server_type=st.name,
            image_id=image.id,
            location=location.name,
            labels=labels,
            created=_now(),
            status="initializing",
            user_data=user_data,
            ssh_keys=ssh_key_ids,
            placement_group_id=placement_group_id,
            start_after_create=start_after_create,
        )
        for kind, enabled in (("ipv4", enable_ipv4), ("ipv6", enable_ipv6)):
            address = next((i for i in given_ips if i.type == kind), None)
            if address is None and enabled:
                address = self._new_primary_ip(kind, location.name, name=None, auto_delete=True)
            if address is not None:
                address.assignee_id = server.id
                setattr(server, f"{kind}_id", address.id)
        self._servers[server.id] = server
        for firewall_id in firewall_ids:
            self._firewalls[firewall_id].server_ids.append(server.id)

        resource = [{"id": server.id, "type": "server"}]
        create = self._new_action("create_server", resource)
        after_create = "starting" if start_after_create else "off"
        create.on_success.append(lambda: self._set_status(server.id, after_create))
        create.on_error.append(lambda: self._set_status(server.id, "off"))
        next_actions = []
        if start_after_create:
            start = self._new_action("start_server", list(resource), after=create)
            start.on_success.append(lambda: self._set_status(server.id, "running"))
            next_actions.append(start)
        root_password = None if ssh_key_ids else secrets.token_urlsafe(12)
        return _Reply(
            201,
            {
                "server": self._server_json(server),
                "action": self._action_json(create),
                "next_actions": [self._action_json(a) for a in next_actions],
                "root_password": root_password,
            },
        )

    def _set_status(self, server_id: int, status: str) -> None:
        server = self._servers.get(server_id)
        if server is not None and server.status != "deleting":
            server.status = status

    def _update_server(self, request: _Request) -> _Reply:
        server = self._server(request.id)
        name = _str_field(request.body, "name", required=False)
        if name is not None:
            if not _HOSTNAME.match(name):
                raise _invalid("name must be a valid hostname (RFC 1123)", "name")
            if any(s.name == name and s.id != server.id for s in self._servers.values()):
                raise _not_unique()
            server.name = name
        if "labels" in request.body:
            server.labels = _labels_field(request.body)
        return _Reply(200, {"server": self._server_json(server)})

    def _delete_server(self, request: _Request) -> _Reply:
        server = self._server(request.id)
        running = next(
            (
                self._actions[i]
                for i in sorted(self._running)
                if self._actions[i].command == "delete_server"
                and self._actions[i].concerns("server", server.id)
            ),
            None,
        )
        if running is not None:
            return _Reply(200, {"action": self._action_json(running)})
        server.status = "deleting"
        action = self._new_action("delete_server", [{"id": server.id, "type": "server"}])
        action.on_success.append(lambda: self._remove_server(server.id))
        return _Reply(200, {"action": self._action_json(action)})

    def _remove_server(self, server_id: int) -> None:
        server = self._servers.pop(server_id, None)
        if server is None:
            return
        for ip_id in (server.ipv4_id, server.ipv6_id):
            ip = self._primary_ips.get(ip_id) if ip_id is not None else None
            if ip is None:
                continue
            if ip.auto_delete:
                del self._primary_ips[ip.id]
            else:
                ip.assignee_id = None
        for firewall in self._firewalls.values():
            if server_id in firewall.server_ids:
                firewall.server_ids.remove(server_id)

    def _list_server_actions(self, request: _Request) -> _Reply:
        self._server(request.id)
        statuses = set(request.many("status"))
        items = [
            self._action_json(a)
            for a in sorted(self._actions.values(), key=lambda a: a.id)
            if a.concerns("server", request.id) and (not statuses or a.status in statuses)
        ]
        return _paginate(request, "actions", items)

    def _server_action(self, request: _Request) -> _Reply:
        server = self._server(request.id)
        verb = request.params["command"]
        if verb not in _POWER_COMMANDS:
            raise ApiError(404, "not_found", f"unknown server action {verb}")
        if self.enforce_locks and (busy := self._running_action_on("server", server.id)):
            raise ApiError(423, "locked", f"server {server.id} is locked by action {busy.id}")
        command, during, after = _POWER_COMMANDS[verb]
        if during is not None:
            server.status = during
        action = self._new_action(command, [{"id": server.id, "type": "server"}])
        action.on_success.append(lambda: self._set_status(server.id, after))
        return _Reply(201, {"action": self._action_json(action)})

    # ------------------------------------------------------------------ ssh keys

    def _ssh_key_json(self, key: FakeSSHKey) -> JSONObject:
        return {
            "id": key.id,
            "name": key.name,
            "fingerprint": key.fingerprint,
            "public_key": key.public_key,
            "labels": dict(key.labels),
            "created": _iso(key.created),
        }

    def _ssh_key(self, ident: int) -> FakeSSHKey:
        key = self._ssh_keys.get(ident)
        if key is None:
            raise _not_found("ssh_key", ident)
        return key

    def _list_ssh_keys(self, request: _Request) -> _Reply:
        name = request.one("name")
        fingerprint = request.one("fingerprint")
        selector = request.one("label_selector")
        matches = _selector(selector, "label_selector") if selector else None
        items = [
            self._ssh_key_json(k)
            for k in sorted(self._ssh_keys.values(), key=lambda k: k.id)
            if (name is None or k.name == name)
            and (fingerprint is None or k.fingerprint == fingerprint)
            and (matches is None or matches(k.labels))
        ]
        return _paginate(request, "ssh_keys", items)

    def _create_ssh_key(self, request: _Request) -> _Reply:
        name = cast(str, _str_field(request.body, "name"))
        public_key = cast(str, _str_field(request.body, "public_key")).strip()
        fingerprint = _fingerprint(public_key)
        labels = _labels_field(request.body)
        if any(k.name == name for k in self._ssh_keys.values()):
            raise _not_unique()
        if any(k.fingerprint == fingerprint for k in self._ssh_keys.values()):
            raise _not_unique("public_key")
        key = FakeSSHKey(
            id=self._new_id("ssh_key"),
            name=name,
            public_key=public_key,
            fingerprint=fingerprint,
            labels=labels,
            created=_now(),
        )
        self._ssh_keys[key.id] = key
        return _Reply(201, {"ssh_key": self._ssh_key_json(key)})

    def _get_ssh_key(self, request: _Request) -> _Reply:
        return _Reply(200, {"ssh_key": self._ssh_key_json(self._ssh_key(request.id))})

    def _update_ssh_key(self, request: _Request) -> _Reply:
        key = self._ssh_key(request.id)
        name = _str_field(request.body, "name", required=False)
        if name is not None:
            if any(k.name == name and k.id != key.id for k in self._ssh_keys.values()):
                raise _not_unique()
            key.name = name
        if "labels" in request.body:
            key.labels = _labels_field(request.body)
        return _Reply(200, {"ssh_key": self._ssh_key_json(key)})

    def _delete_ssh_key(self, request: _Request) -> _Reply:
        self._ssh_key(request.id)
        del self._ssh_keys[request.id]
        return _Reply(204, None)

    # ------------------------------------------------------------------ firewalls

    def _firewall(self, ident: int) -> FakeFirewall:
        firewall = self._firewalls.get(ident)
        if firewall is None:
            raise _not_found("firewall", ident)
        return firewall

    def _firewall_json(self, firewall: FakeFirewall) -> JSONObject:
        applied_to: list[JSONObject] = [
            {"type": "server", "server": {"id": server_id}} for server_id in firewall.server_ids
        ]
        for selector in firewall.label_selectors:
            matches = parse_label_selector(selector)
            applied_to.append(
                {
                    "type": "label_selector",
                    "label_selector": {"selector": selector},
                    "applied_to_resources": [
                        {"type": "server", "server": {"id": s.id}}
                        for s in sorted(self._servers.values(), key=lambda s: s.id)
                        if matches(s.labels)
                    ],
                }
            )
        return {
            "id": firewall.id,
            "name": firewall.name,
            "labels": dict(firewall.labels),
            "created": _iso(firewall.created),
            "rules": [dict(rule) for rule in firewall.rules],
            "applied_to": applied_to,
        }

    def _resources(self, raw: object, field_name: str) -> list[tuple[str, int | str]]:
        """Parse ``apply_to``/``remove_from`` entries into (type, server id or selector)."""
        if not isinstance(raw, list):
            raise _invalid(f"{field_name} must be a list", field_name)
        parsed: list[tuple[str, int | str]] = []
        for entry in raw:
            kind = entry.get("type") if isinstance(entry, dict) else None
            if kind == "server":
                server_id = (entry.get("server") or {}).get("id")
                if not isinstance(server_id, int):
                    raise _invalid("server.id is required", field_name)
                self._server(server_id)
                parsed.append(("server", server_id))
            elif kind == "label_selector":
                selector = (entry.get("label_selector") or {}).get("selector")
                if not isinstance(selector, str) or not selector:
                    raise _invalid("label_selector.selector is required", field_name)
                _selector(selector, field_name)
                parsed.append(("label_selector", selector))
            else:
                raise _invalid("type must be 'server' or 'label_selector'", field_name)
        return parsed

    def _apply(
        self, firewall: FakeFirewall, resources: list[tuple[str, int | str]]
    ) -> list[FakeAction]:
        actions = []
        targets: list[JSONObject]
        for kind, value in resources:
            if kind == "server":
                if value in firewall.server_ids:
                    raise ApiError(422, "firewall_already_applied", "firewall already applied")
                firewall.server_ids.append(cast(int, value))
                targets = [{"id": firewall.id, "type": "firewall"}, {"id": value, "type": "server"}]
            else:
                if value in firewall.label_selectors:
                    raise ApiError(422, "firewall_already_applied", "firewall already applied")
                firewall.label_selectors.append(cast(str, value))
                targets = [{"id": firewall.id, "type": "firewall"}]
            actions.append(self._new_action("apply_firewall", targets))
        return actions

    def _list_firewalls(self, request: _Request) -> _Reply:
        name = request.one("name")
        selector = request.one("label_selector")
        matches = _selector(selector, "label_selector") if selector else None
        items = [
            self._firewall_json(f)
            for f in sorted(self._firewalls.values(), key=lambda f: f.id)
            if (name is None or f.name == name) and (matches is None or matches(f.labels))
        ]
        return _paginate(request, "firewalls", items)

    def _create_firewall(self, request: _Request) -> _Reply:
        body = request.body
        name = cast(str, _str_field(body, "name"))
        labels = _labels_field(body)
        rules = [_rule(rule) for rule in body.get("rules") or []]
        resources = self._resources(body.get("apply_to") or [], "apply_to")
        if any(f.name == name for f in self._firewalls.values()):
            raise _not_unique()
        firewall = FakeFirewall(
            id=self._new_id("firewall"), name=name, labels=labels, rules=rules, created=_now()
        )
        self._firewalls[firewall.id] = firewall
        actions = []
        if rules:
            target = [{"id": firewall.id, "type": "firewall"}]
            actions.append(self._new_action("set_firewall_rules", target))
        actions.extend(self._apply(firewall, resources))
        return _Reply(
            201,
            {
                "firewall": self._firewall_json(firewall),
                "actions": [self._action_json(a) for a in actions],
            },
        )

    def _get_firewall(self, request: _Request) -> _Reply:
        return _Reply(200, {"firewall": self._firewall_json(self._firewall(request.id))})

    def _update_firewall(self, request: _Request) -> _Reply:
        firewall = self._firewall(request.id)
        name = _str_field(request.body, "name", required=False)
        if name is not None:
            if any(f.name == name and f.id != firewall.id for f in self._firewalls.values()):
                raise _not_unique()
            firewall.name = name
        if "labels" in request.body:
            firewall.labels = _labels_field(request.body)
        return _Reply(200, {"firewall": self._firewall_json(firewall)})

    def _delete_firewall(self, request: _Request) -> _Reply:
        firewall = self._firewall(request.id)
        in_use = bool(firewall.server_ids) or any(
            firewall.id in [f.id for f in self._firewalls_of(s)] for s in self._servers.values()
        )
        if in_use:
            raise _in_use("firewall", firewall.id)
        del self._firewalls[firewall.id]
        return _Reply(204, None)

    def _firewall_action(self, request: _Request) -> _Reply:
        firewall = self._firewall(request.id)
        verb = request.params["command"]
        target = [{"id": firewall.id, "type": "firewall"}]
        if verb == "set_rules":
            raw_rules = request.body.get("rules")
            if not isinstance(raw_rules, list):
                raise _invalid("rules must be a list", "rules")
            firewall.rules = [_rule(rule) for rule in raw_rules]
            actions = [self._new_action("set_firewall_rules", target)]
        elif verb == "apply_to_resources":
            resources = self._resources(request.body.get("apply_to"), "apply_to")
            actions = self._apply(firewall, resources)
        elif verb == "remove_from_resources":
            resources = self._resources(request.body.get("remove_from"), "remove_from")
            actions = []
            for kind, value in resources:
                if value not in (*firewall.server_ids, *firewall.label_selectors):
                    raise ApiError(422, "firewall_already_removed", "firewall already removed")
                if kind == "server":
                    firewall.server_ids.remove(cast(int, value))
                else:
                    firewall.label_selectors.remove(cast(str, value))
                actions.append(self._new_action("remove_firewall", list(target)))
        else:
            raise ApiError(404, "not_found", f"unknown firewall action {verb}")
        return _Reply(201, {"actions": [self._action_json(a) for a in actions]})

    # ------------------------------------------------------------------ placement groups

    def _placement_group(self, ident: int) -> FakePlacementGroup:
        group = self._placement_groups.get(ident)
        if group is None:
            raise _not_found("placement_group", ident)
        return group

    def _placement_group_json(self, group: FakePlacementGroup) -> JSONObject:
        return {
            "id": group.id,
            "name": group.name,
            "labels": dict(group.labels),
            "type": group.type,
            "created": _iso(group.created),
            "servers": sorted(
                s.id for s in self._servers.values() if s.placement_group_id == group.id
            ),
        }

    def _list_placement_groups(self, request: _Request) -> _Reply:
        name = request.one("name")
        types = set(request.many("type"))
        selector = request.one("label_selector")
        matches = _selector(selector, "label_selector") if selector else None
        items = [
            self._placement_group_json(g)
            for g in sorted(self._placement_groups.values(), key=lambda g: g.id)
            if (name is None or g.name == name)
            and (not types or g.type in types)
            and (matches is None or matches(g.labels))
        ]
        return _paginate(request, "placement_groups", items)

    def _create_placement_group(self, request: _Request) -> _Reply:
        name = cast(str, _str_field(request.body, "name"))
        kind = _str_field(request.body, "type")
        if kind != "spread":
            raise _invalid("type must be 'spread'", "type")
        labels = _labels_field(request.body)
        if any(g.name == name for g in self._placement_groups.values()):
            raise _not_unique()
        group = FakePlacementGroup(
            id=self._new_id("placement_group"),
            name=name,
            type=kind,
            labels=labels,
            created=_now(),
        )
        self._placement_groups[group.id] = group
        return _Reply(201, {"placement_group": self._placement_group_json(group), "action": None})

    def _get_placement_group(self, request: _Request) -> _Reply:
        group = self._placement_group(request.id)
        return _Reply(200, {"placement_group": self._placement_group_json(group)})

    def _update_placement_group(self, request: _Request) -> _Reply:
        group = self._placement_group(request.id)
        name = _str_field(request.body, "name", required=False)
        if name is not None:
            if any(g.name == name and g.id != group.id for g in self._placement_groups.values()):
                raise _not_unique()
            group.name = name
        if "labels" in request.body:
            group.labels = _labels_field(request.body)
        return _Reply(200, {"placement_group": self._placement_group_json(group)})

    def _delete_placement_group(self, request: _Request) -> _Reply:
        group = self._placement_group(request.id)
        if any(s.placement_group_id == group.id for s in self._servers.values()):
            raise _in_use("placement group", group.id)
        del self._placement_groups[group.id]
        return _Reply(204, None)

    # ------------------------------------------------------------------ primary ips

    def _primary_ip(self, ident: int) -> FakePrimaryIP:
        ip = self._primary_ips.get(ident)
        if ip is None:
            raise _not_found("primary_ip", ident)
        return ip

    def _primary_ip_json(self, ip: FakePrimaryIP) -> JSONObject:
        location = self._location(ip.location)
        dns_ptr = [{"ip": ip.ip, "dns_ptr": _ipv4_ptr(ip.ip)}] if ip.type == "ipv4" else []
        return {
            "id": ip.id,
            "name": ip.name,
            "ip": ip.ip,
            "type": ip.type,
            "dns_ptr": dns_ptr,
            "location": location.to_json(),
            "datacenter": self._datacenter_json(location),
            "blocked": False,
            "protection": {"delete": False},
            "labels": dict(ip.labels),
            "created": _iso(ip.created),
            "assignee_id": ip.assignee_id,
            "assignee_type": "server",
            "auto_delete": ip.auto_delete,
        }

    def _list_primary_ips(self, request: _Request) -> _Reply:
        name = request.one("name")
        address = request.one("ip")
        selector = request.one("label_selector")
        matches = _selector(selector, "label_selector") if selector else None
        items = [
            self._primary_ip_json(ip)
            for ip in sorted(self._primary_ips.values(), key=lambda ip: ip.id)
            if (name is None or ip.name == name)
            and (address is None or ip.ip == address)
            and (matches is None or matches(ip.labels))
        ]
        return _paginate(request, "primary_ips", items)

    def _assign(self, ip: FakePrimaryIP, server_ref: object) -> FakeAction:
        if isinstance(server_ref, bool) or not isinstance(server_ref, int):
            raise _invalid("assignee_id must be a server ID", "assignee_id")
        server = self._server(server_ref)
        if ip.assignee_id is not None:
            raise _invalid(f"primary IP {ip.id} is already assigned", "assignee_id")
        if getattr(server, f"{ip.type}_id") is not None:
            raise _invalid(f"server {server.id} already has an {ip.type}", "assignee_id")
        if server.location != ip.location:
            raise _invalid(f"server {server.id} is not in {ip.location}", "assignee_id")
        ip.assignee_id = server.id
        setattr(server, f"{ip.type}_id", ip.id)
        resources = [{"id": ip.id, "type": "primary_ip"}, {"id": server.id, "type": "server"}]
        return self._new_action("assign_primary_ip", resources)

    def _unassign(self, ip: FakePrimaryIP) -> None:
        server = self._servers.get(ip.assignee_id) if ip.assignee_id is not None else None
        if server is not None and getattr(server, f"{ip.type}_id") == ip.id:
            setattr(server, f"{ip.type}_id", None)
        ip.assignee_id = None

    def _create_primary_ip(self, request: _Request) -> _Reply:
        body = request.body
        name = cast(str, _str_field(body, "name"))
        kind = _str_field(body, "type")
        if kind not in ("ipv4", "ipv6"):
            raise _invalid("type must be 'ipv4' or 'ipv6'", "type")
        assignee_type = _str_field(body, "assignee_type", required=False) or "server"
        if assignee_type != "server":
            raise _invalid("assignee_type must be 'server'", "assignee_type")
        auto_delete = _bool_field(body, "auto_delete", False)
        labels = _labels_field(body)
        assignee_id = body.get("assignee_id")
        location_ref = _ref_field(body, "location")
        datacenter_ref = _ref_field(body, "datacenter")
        if location_ref is not None:
            location = self._location(location_ref).name
        elif datacenter_ref is not None:
            location = self._location_from_datacenter(datacenter_ref).name
        elif isinstance(assignee_id, int) and assignee_id in self._servers:
            location = self._servers[assignee_id].location
        else:
            raise _invalid("one of location, datacenter or assignee_id is required", "location")
        if any(ip.name == name for ip in self._primary_ips.values()):
            raise _not_unique()
        ip = self._new_primary_ip(kind, location, name=name, auto_delete=auto_delete)
        ip.labels = labels
        action = None
        if assignee_id is not None:
            try:
                action = self._assign(ip, assignee_id)
            except ApiError:
                del self._primary_ips[ip.id]
                raise
        return _Reply(
            201,
            {
                "primary_ip": self._primary_ip_json(ip),
                "action": None if action is None else self._action_json(action),
            },
        )

    def _get_primary_ip(self, request: _Request) -> _Reply:
        return _Reply(200, {"primary_ip": self._primary_ip_json(self._primary_ip(request.id))})

    def _update_primary_ip(self, request: _Request) -> _Reply:
        ip = self._primary_ip(request.id)
        name = _str_field(request.body, "name", required=False)
        if name is not None:
            if any(p.name == name and p.id != ip.id for p in self._primary_ips.values()):
                raise _not_unique()
            ip.name = name
        if "labels" in request.body:
            ip.labels = _labels_field(request.body)
        ip.auto_delete = _bool_field(request.body, "auto_delete", ip.auto_delete)
        return _Reply(200, {"primary_ip": self._primary_ip_json(ip)})

    def _delete_primary_ip(self, request: _Request) -> _Reply:
        ip = self._primary_ip(request.id)
        self._unassign(ip)
        del self._primary_ips[ip.id]
        return _Reply(204, None)

    def _primary_ip_action(self, request: _Request) -> _Reply:
        ip = self._primary_ip(request.id)
        verb = request.params["command"]
        if verb == "assign":
            assignee_type = _str_field(request.body, "assignee_type", required=False) or "server"
            if assignee_type != "server":
                raise _invalid("assignee_type must be 'server'", "assignee_type")
            action = self._assign(ip, request.body.get("assignee_id"))
        elif verb == "unassign":
            resources = [{"id": ip.id, "type": "primary_ip"}]
            if ip.assignee_id is not None:
                resources.append({"id": ip.assignee_id, "type": "server"})
            self._unassign(ip)
            action = self._new_action("unassign_primary_ip", resources)
        else:
            raise ApiError(404, "not_found", f"unknown primary IP action {verb}")
        return _Reply(201, {"action": self._action_json(action)})


# --------------------------------------------------------------------------- helpers


def _api_path(path: str) -> str:
    """Accept ``/servers`` as well as ``/v1/servers``."""
    if not path.startswith("/"):
        path = "/" + path
    return path if path.startswith(API_PREFIX) else API_PREFIX + path


def _under(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or below it (``/v1/servers/12`` is not below ``.../1``)."""
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def _ipv4_ptr(ip: str) -> str:
    return f"static.{'.'.join(reversed(ip.split('.')))}.clients.your-server.de"


def _parse_body(raw: bytes) -> JSONObject:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "json_error", f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "json_error", "the request body must be a JSON object")
    return body


def _bearer(header: str | None) -> str | None:
    if header is None or not header.startswith("Bearer "):
        return None
    return header.removeprefix("Bearer ").strip() or None


# --------------------------------------------------------------------------- HTTP


class _FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        fake: FakeHetzner,
    ) -> None:
        self.fake = fake
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that hang up mid-answer (timeouts, lost responses) are expected here.
        return


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHetznerCloud/1.0"
    timeout = 30.0  # an idle keep-alive connection is closed after this
    wbufsize = 64 * 1024  # headers and body leave in one write (see setup)

    def setup(self) -> None:
        super().setup()
        # Without this, header and body segments meet delayed ACKs: ~40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self) -> None:
        fake = cast(_FakeHTTPServer, self.server).fake
        started_wall, started = time.time(), time.monotonic()
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query, keep_blank_values=True)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            error = ApiError(413, "invalid_input", f"request body over {MAX_BODY_BYTES} bytes")
            self._send(_Response(413, json.dumps(error.to_json()).encode(), {}, None))
            return
        raw_body = self.rfile.read(length) if length else b""
        token = _bearer(self.headers.get("Authorization"))

        fault = fake._take_fault(self.command, path, token)
        if fault is not None and fault.kind is FaultKind.SLOW:
            fake._pause(fault.delay)
        dropped = fault is not None and fault.kind is FaultKind.DROP
        response = None
        if not dropped or (fault is not None and fault.perform):
            response = fake._respond(self.command, path, query, raw_body, token, fault)
        if fault is not None and fault.kind is FaultKind.LATE:
            fake._pause(fault.delay)
        # Record before answering, so a client that has its answer also finds it logged.
        fake._record(
            self.command,
            path,
            query,
            None if dropped or response is None else response.status,
            started_wall,
            time.monotonic() - started,
            response.route if response is not None else None,
            fault,
        )
        if dropped or response is None:
            # Close without a byte of answer: the client sees the connection go away.
            self.close_connection = True
            return
        try:
            self._send(response)
        except OSError:
            self.close_connection = True

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(response.payload)))
        self.send_header("X-Correlation-Id", secrets.token_hex(8))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if response.payload:
            self.wfile.write(response.payload)
        self.wfile.flush()
