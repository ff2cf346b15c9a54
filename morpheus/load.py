"""Load as NATS servers report it: one node's sample and a forest's summary.

Plain data: ``morpheus.monitor`` fills it in, ``morpheus.growth`` judges it, the CLI shows it.
Nothing here talks to the network, so the growth policy can use it without the HTTP client.

Every figure is the NATS server's own view of itself, not the machine's: ``cpu_percent`` is
the nats-server *process* CPU as a share of the whole machine (``varz.cpu`` is percent of one
core, so it is divided by ``varz.cores``), and ``memory_percent`` is the process's resident
memory (``varz.mem``) as a share of the node's RAM from its recorded capacity. Other programs
on the same machine (NimsForest itself, for one) are not counted. Both are clamped to
0-100 %: a server cannot use more than its machine (a figure above that is a sampling
artefact or a wrong record of the node's RAM), and one wild node must not swing a mean.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

__all__ = ["ForestLoad", "NodeSample", "aggregate", "clamp_percent"]


def clamp_percent(value: float) -> float:
    """``value`` limited to 0-100."""
    return min(max(value, 0.0), 100.0)


class NodeSample(BaseModel):
    """What one node's NATS server said about itself, or why it said nothing.

    ``reachable`` means ``/varz`` answered with valid figures; refused connections, timeouts,
    HTTP errors and malformed replies all make it False, and ``error`` says which. ``error``
    may also be set on a reachable node when a secondary endpoint (``/healthz`` or ``/jsz``)
    failed or a figure could not be used; those figures are then None. ``healthy`` is None
    when ``/healthz`` gave no answer at all.  ``boot_failure`` is what a node whose bootstrap
    failed reported on the monitoring port in NATS's place (``morpheus.boot_report``).
    """

    node_name: str
    url: str
    reachable: bool
    error: str | None = None
    server_name: str | None = None
    healthy: bool | None = None
    cpu_percent: float | None = None
    memory_percent: float | None = None
    mem_bytes: int | None = None
    cores: int | None = None
    connections: int | None = None
    peers: int | None = None
    jetstream_memory_used: int | None = None
    jetstream_memory_limit: int | None = None
    jetstream_storage_used: int | None = None
    jetstream_storage_limit: int | None = None
    latency_ms: float | None = None
    boot_failure: str | None = None


class ForestLoad(BaseModel):
    """Load of a whole forest, summarised from its nodes' samples.

    Means are over reachable nodes whose figure is known (``cpu_known`` and ``memory_known``
    of them); ``healthy`` counts reachable nodes whose ``/healthz`` answered 200.
    """

    nodes: int
    reachable: int
    unreachable: int
    healthy: int
    memory_known: int
    cpu_known: int = 0
    cpu_percent: float | None = None
    memory_percent: float | None = None
    max_cpu_percent: float | None = None
    max_memory_percent: float | None = None


def aggregate(samples: Sequence[NodeSample]) -> ForestLoad:
    """Summarise node samples into the forest's load."""
    up = [s for s in samples if s.reachable]
    cpu = [s.cpu_percent for s in up if s.cpu_percent is not None]
    mem = [s.memory_percent for s in up if s.memory_percent is not None]
    return ForestLoad(
        nodes=len(samples),
        reachable=len(up),
        unreachable=len(samples) - len(up),
        healthy=sum(1 for s in up if s.healthy is True),
        memory_known=len(mem),
        cpu_known=len(cpu),
        cpu_percent=sum(cpu) / len(cpu) if cpu else None,
        memory_percent=sum(mem) / len(mem) if mem else None,
        max_cpu_percent=max(cpu, default=None),
        max_memory_percent=max(mem, default=None),
    )
