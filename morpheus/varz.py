"""What nats-server's monitoring endpoints send: the parts of their replies Morpheus reads.

Unknown keys are ignored (servers gain keys with every release); the keys read are checked
strictly, so a reply of the wrong shape is an error for that node, never a wrong figure.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Healthz",
    "JetStreamConfig",
    "JetStreamStats",
    "Jsz",
    "Varz",
    "VarzJetStream",
    "VarzReply",
]


class VarzReply(BaseModel):
    """A reply of a monitoring endpoint: only the keys Morpheus reads, types checked strictly."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


# nats-server is written in Go and sends its figures as int64 / uint64 and finite float64s;
# anything outside those is not a NATS server (and would overflow the monitor's float arithmetic).
_Int64 = Annotated[int, Field(ge=-(2**63), le=2**64 - 1)]
_Count = Annotated[int, Field(ge=0, le=2**64 - 1)]


class JetStreamConfig(VarzReply):
    """The JetStream limits a server runs with (0 when JetStream is off)."""

    max_memory: _Int64 | None = None
    max_storage: _Int64 | None = None


class JetStreamStats(VarzReply):
    """Bytes JetStream currently holds in memory and on disk."""

    memory: _Int64
    storage: _Int64


class VarzJetStream(VarzReply):
    """The ``jetstream`` section of ``/varz``; empty when JetStream is disabled."""

    config: JetStreamConfig | None = None
    stats: JetStreamStats | None = None


class Varz(VarzReply):
    """The parts of ``/varz`` Morpheus uses."""

    server_name: str | None = None
    cpu: float = Field(ge=0, allow_inf_nan=False)
    mem: _Count
    cores: _Count
    connections: _Count
    remotes: _Count = 0
    jetstream: VarzJetStream | None = None


class Healthz(VarzReply):
    """The body of ``/healthz`` (only its status code decides health)."""

    status: str
    error: str | None = None


class Jsz(VarzReply):
    """The parts of ``/jsz`` Morpheus uses: JetStream usage and limits."""

    disabled: bool = False
    memory: _Int64
    storage: _Int64
    config: JetStreamConfig | None = None
