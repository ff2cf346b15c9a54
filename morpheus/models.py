"""Records of what exists: forests, nodes and their events."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class ForestStatus(StrEnum):
    """Where a forest is in its life."""

    PLANTING = "planting"
    ACTIVE = "active"
    GROWING = "growing"
    FAILED = "failed"
    DELETING = "deleting"


class NodeStatus(StrEnum):
    """Where a node is in its life: planned -> creating -> active -> failed/deleting."""

    PLANNED = "planned"
    CREATING = "creating"
    ACTIVE = "active"
    FAILED = "failed"
    DELETING = "deleting"


class NodeState(StrEnum):
    """What the platform says a node's machine is doing (``NodeHandle.state``).

    Providers map their platform's words onto these; ``missing`` is the core's word for a
    recorded node the platform does not list.
    """

    CREATING = "creating"
    INITIALIZING = "initializing"
    STARTING = "starting"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    STOPPING = "stopping"
    STOPPED = "stopped"
    OFF = "off"
    CRASHED = "crashed"
    MIGRATING = "migrating"
    REBUILDING = "rebuilding"
    DELETING = "deleting"
    MISSING = "missing"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, word: str) -> NodeState:
        """The state a platform's word names; ``unknown`` for a word not listed here."""
        try:
            return cls(word)
        except ValueError:
            return cls.UNKNOWN


class Capacity(BaseModel):
    """What one node's machine offers; monitor figures are judged against it."""

    model_config = ConfigDict(frozen=True)

    cores: int = Field(ge=1)
    memory_bytes: int = Field(ge=1)
    disk_bytes: int | None = None


class Ports(BaseModel):
    """The NATS ports of one node (fixed on machines, distinct per node locally)."""

    model_config = ConfigDict(frozen=True)

    client: int = Field(default=4222, ge=1, le=65535)
    cluster: int = Field(default=6222, ge=1, le=65535)
    monitor: int = Field(default=8222, ge=1, le=65535)


def host_for_url(host: str) -> str:
    """``host`` as it goes into a URL: IPv6 literals in brackets, anything else bare."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


class Forest(BaseModel):
    """A group of nodes whose NATS servers form one cluster."""

    id: str
    provider: str
    size: str
    location: str | None = None
    status: ForestStatus
    created_at: datetime
    last_expansion: datetime | None = None
    cluster_name: str
    credentials_ref: str
    run_id: str
    #: The host a local forest's nodes run on (``hostname:state-id``); None for a cloud forest.
    host: str | None = None


class Node(BaseModel):
    """One machine (or local process group) of a forest."""

    id: str
    forest_id: str
    name: str
    index: int
    provider_id: str | None = None
    host: str | None = None
    addresses: list[str] = Field(default_factory=list)
    ports: Ports = Field(default_factory=Ports)
    capacity: Capacity | None = None
    status: NodeStatus
    location: str | None = None
    created_at: datetime

    @property
    def monitor_url(self) -> str | None:
        """Base URL of the node's NATS monitoring endpoint, once its address is known."""
        if self.host is None:
            return None
        return f"http://{host_for_url(self.host)}:{self.ports.monitor}"


class Event(BaseModel):
    """One line of a forest's history."""

    forest_id: str
    at: datetime
    kind: str
    message: str


@dataclass
class Removal:
    """What a teardown or rollback removed, and what it could not."""

    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
