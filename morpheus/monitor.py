"""Poll the NATS monitoring endpoints of many nodes at once.

Every figure here is the NATS server's own view of itself, not the machine's: ``cpu_percent``
is the nats-server *process* CPU as a share of the whole machine (``varz.cpu`` is percent of
one core, so it is divided by ``varz.cores``), and ``memory_percent`` is the process's resident
memory (``varz.mem``) as a share of the node's RAM from its recorded capacity. Other programs
on the same machine (NimsForest itself, for one) are not counted.

``poll_nodes`` never raises for a node's sake: a node that refuses, times out, answers with
an HTTP error or with JSON of the wrong shape comes back as a ``NodeSample`` with ``error`` set,
in the position it was given. ``aggregate`` turns the samples into the ``ForestLoad`` that the
growth decision judges.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import time
from collections.abc import Awaitable, Sequence
from typing import Annotated, Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from morpheus.models import host_for_url
from morpheus.transport import ShortConnectionTransport

__all__ = [
    "ForestLoad",
    "Healthz",
    "Jsz",
    "MonitorTarget",
    "NodeSample",
    "Varz",
    "aggregate",
    "monitor_url",
    "poll_nodes",
]


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


class MonitorTarget(BaseModel):
    """One node to poll: where its monitoring port listens and how much RAM it has."""

    model_config = ConfigDict(frozen=True)

    node_name: str
    host: str
    port: int = Field(default=8222, ge=1, le=65535)
    memory_bytes: int | None = Field(default=None, ge=1)

    @field_validator("host")
    @classmethod
    def _ip_or_hostname(cls, host: str) -> str:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOSTNAME.fullmatch(host) or len(host) > 253:
                raise ValueError(f"{host!r} is neither an IP address nor a hostname") from None
        return host


def monitor_url(host: str, port: int) -> str:
    """Base URL of a monitoring endpoint: IPv6 literals in brackets, IPv4 and names bare."""
    return f"http://{host_for_url(host)}:{port}"


# --- what the server sends (only the keys we read; types checked strictly) -----------------


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


# nats-server is written in Go and sends its figures as int64 / uint64 and finite float64s;
# anything outside those is not a NATS server (and would overflow the float arithmetic below).
_Int64 = Annotated[int, Field(ge=-(2**63), le=2**64 - 1)]
_Count = Annotated[int, Field(ge=0, le=2**64 - 1)]


class JetStreamConfig(_Reply):
    """The JetStream limits a server runs with (0 when JetStream is off)."""

    max_memory: _Int64 | None = None
    max_storage: _Int64 | None = None


class JetStreamStats(_Reply):
    """Bytes JetStream currently holds in memory and on disk."""

    memory: _Int64
    storage: _Int64


class VarzJetStream(_Reply):
    """The ``jetstream`` section of ``/varz``; empty when JetStream is disabled."""

    config: JetStreamConfig | None = None
    stats: JetStreamStats | None = None


class Varz(_Reply):
    """The parts of ``/varz`` Morpheus uses."""

    server_name: str | None = None
    cpu: float = Field(ge=0, allow_inf_nan=False)
    mem: _Count
    cores: Annotated[int, Field(ge=1, le=2**64 - 1)]
    connections: _Count
    remotes: _Count = 0
    jetstream: VarzJetStream | None = None


class Healthz(_Reply):
    """The body of ``/healthz`` (only its status code decides health)."""

    status: str
    error: str | None = None


class Jsz(_Reply):
    """The parts of ``/jsz`` Morpheus uses: JetStream usage and limits."""

    disabled: bool = False
    memory: _Int64
    storage: _Int64
    config: JetStreamConfig | None = None


# --- what Morpheus reports ------------------------------------------------------------------


class NodeSample(BaseModel):
    """What one node's NATS server said about itself, or why it said nothing.

    ``reachable`` means ``/varz`` answered with valid figures; refused connections, timeouts,
    HTTP errors and malformed replies all make it False, and ``error`` says which. ``error``
    may also be set on a reachable node when a secondary endpoint (``/healthz`` or
    ``/jsz``) failed; the figures that endpoint would have given are then None or fall back.
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


class ForestLoad(BaseModel):
    """Load of a whole forest, summarised from its nodes' samples.

    Means are over reachable nodes; ``memory_percent`` only over those whose RAM is known
    (``memory_known`` of them). Every figure is the NATS server's own (see the module doc).
    """

    nodes: int
    reachable: int
    unreachable: int
    healthy: int
    memory_known: int
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
        healthy=sum(1 for s in samples if s.healthy),
        memory_known=len(mem),
        cpu_percent=sum(cpu) / len(cpu) if cpu else None,
        memory_percent=sum(mem) / len(mem) if mem else None,
        max_cpu_percent=max(cpu, default=None),
        max_memory_percent=max(mem, default=None),
    )


# --- polling --------------------------------------------------------------------------------

_ReplyT = TypeVar("_ReplyT", bound=_Reply)
_T = TypeVar("_T")


class _EndpointError(Exception):
    """One endpoint gave nothing usable.

    ``reason`` is short and shown to the operator; ``answered`` tells an HTTP answer that was
    no good (worth naming the endpoint) from no answer at all (a fact about the node).
    """

    def __init__(self, path: str, reason: str, *, answered: bool) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.answered = answered


class _Deadline:
    """When a node's polling must stop, and how to say why it stopped."""

    def __init__(self, at: float, reason: str) -> None:
        self.at = at
        self.reason = reason


def _seconds(value: float) -> str:
    return f"{value:g}s"


async def _get(
    client: httpx.AsyncClient, base: str, path: str, deadline: _Deadline
) -> httpx.Response:
    try:
        async with asyncio.timeout_at(deadline.at):
            return await client.get(base + path)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise _EndpointError(path, deadline.reason, answered=False) from exc
    except httpx.ConnectError as exc:
        reason = f"cannot connect ({exc})" if str(exc) else "cannot connect"
        raise _EndpointError(path, reason, answered=False) from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise _EndpointError(path, reason, answered=False) from exc


def _parse(path: str, response: httpx.Response, model: type[_ReplyT]) -> _ReplyT:
    if response.status_code != 200:
        raise _EndpointError(path, f"HTTP {response.status_code}", answered=True)
    try:
        data: Any = json.loads(response.content)
    except (ValueError, RecursionError) as exc:
        # RecursionError: nesting deeper than the parser's stack (no NATS reply nests so).
        raise _EndpointError(path, "malformed JSON", answered=True) from exc
    if not isinstance(data, dict):
        raise _EndpointError(path, "expected a JSON object", answered=True)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        reason = f"bad '{where}' ({first['msg'][:1].lower()}{first['msg'][1:]})"
        raise _EndpointError(path, reason, answered=True) from exc


async def _fetch(
    client: httpx.AsyncClient, base: str, path: str, model: type[_ReplyT], deadline: _Deadline
) -> _ReplyT:
    return _parse(path, await _get(client, base, path, deadline), model)


async def _health(client: httpx.AsyncClient, base: str, deadline: _Deadline) -> bool:
    # Only the status code counts: 200 is healthy, 503 (and any other answer) is not.
    return (await _get(client, base, "/healthz", deadline)).status_code == 200


async def _attempt(step: Awaitable[_T]) -> _T | _EndpointError:
    try:
        return await step
    except _EndpointError as exc:
        return exc


async def _poll_node(
    client: httpx.AsyncClient, target: MonitorTarget, deadline: _Deadline
) -> NodeSample:
    base = monitor_url(target.host, target.port)

    async def timed_varz() -> tuple[Varz, float]:
        started = time.perf_counter()
        varz = await _fetch(client, base, "/varz", Varz, deadline)
        return varz, (time.perf_counter() - started) * 1000

    # /routez is not asked for: varz.remotes already counts distinct peers (route pooling
    # only inflates varz.routes and /routez's num_routes), and a third request per node
    # costs a third more time on big forests.
    varz_result, health_result = await asyncio.gather(
        _attempt(timed_varz()),
        _attempt(_health(client, base, deadline)),
    )
    healthy = health_result if isinstance(health_result, bool) else None
    if isinstance(varz_result, _EndpointError):
        # No answer at all is a fact about the node; a bad answer names the endpoint.
        return NodeSample(
            node_name=target.node_name,
            url=base,
            reachable=False,
            error=str(varz_result) if varz_result.answered else varz_result.reason,
            healthy=healthy,
        )

    varz, latency_ms = varz_result
    problems = [str(health_result)] if isinstance(health_result, _EndpointError) else []
    peers = varz.remotes

    js_memory_used = js_memory_limit = js_storage_used = js_storage_limit = None
    js = varz.jetstream
    if js is not None and js.stats is not None:
        js_memory_used, js_storage_used = js.stats.memory, js.stats.storage
        if js.config is not None:
            js_memory_limit, js_storage_limit = js.config.max_memory, js.config.max_storage
    elif js is not None and js.config is not None:
        # A server whose /varz lists JetStream limits but no usage: ask /jsz for it.
        try:
            jsz = await _fetch(client, base, "/jsz", Jsz, deadline)
        except _EndpointError as exc:
            problems.append(str(exc))
        else:
            if not jsz.disabled:
                js_memory_used, js_storage_used = jsz.memory, jsz.storage
                limits = jsz.config or js.config
                js_memory_limit, js_storage_limit = limits.max_memory, limits.max_storage

    return NodeSample(
        node_name=target.node_name,
        url=base,
        reachable=True,
        error="; ".join(problems) or None,
        healthy=healthy,
        server_name=varz.server_name,
        cpu_percent=varz.cpu / varz.cores,
        memory_percent=(
            varz.mem / target.memory_bytes * 100 if target.memory_bytes is not None else None
        ),
        mem_bytes=varz.mem,
        cores=varz.cores,
        connections=varz.connections,
        peers=peers,
        jetstream_memory_used=js_memory_used,
        jetstream_memory_limit=js_memory_limit,
        jetstream_storage_used=js_storage_used,
        jetstream_storage_limit=js_storage_limit,
        latency_ms=latency_ms,
    )


# A node is asked for /varz and /healthz at once (and /jsz after /varz, if needed).
_CONNECTIONS_PER_NODE = 2
# Nodes polled at once by default: at most 200 sockets, within the smallest common limit on
# open files (256 on macOS) and two rounds for a 200-node forest.
DEFAULT_CONCURRENCY = 100
# Descriptors left for everything else a process has open (state files, logs, the loop).
_RESERVED_FILES = 64


def concurrency_within(open_file_limit: int | None) -> int:
    """How many nodes to poll at once without running out of file descriptors."""
    if open_file_limit is None:
        return DEFAULT_CONCURRENCY
    room = (open_file_limit - _RESERVED_FILES) // _CONNECTIONS_PER_NODE
    return max(1, min(DEFAULT_CONCURRENCY, room))


def _open_file_limit() -> int | None:
    try:
        import resource  # Unix only
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


async def poll_nodes(
    targets: Sequence[MonitorTarget],
    *,
    per_node_timeout: float = 2.0,
    overall_deadline: float = 5.0,
    concurrency: int | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[NodeSample]:
    """Poll every target concurrently and return one sample per target, in input order.

    At most ``concurrency`` nodes are polled at once (by default ``DEFAULT_CONCURRENCY``, or
    fewer if the open-file limit is low), each asking for its endpoints in parallel. A node
    gets ``per_node_timeout`` seconds from the moment its turn comes, and no node is waited
    for past ``overall_deadline`` seconds after the call; a node that ran out of time is
    reported unreachable with the reason, never dropped. ``transport`` is the test seam; by
    default each request has its own short connection (see ``morpheus.transport``).
    """
    if concurrency is None:
        concurrency = concurrency_within(_open_file_limit())
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if not targets:
        return []

    loop = asyncio.get_running_loop()
    overall_end = loop.time() + overall_deadline
    slots = asyncio.Semaphore(concurrency)
    client = httpx.AsyncClient(
        transport=transport or ShortConnectionTransport(),
        # A backstop only: the asyncio deadlines below are the ones that decide.
        timeout=httpx.Timeout(per_node_timeout + 1.0),
        # Monitoring ports are plain HTTP reached directly, never through a proxy.
        trust_env=False,
    )

    async def one(target: MonitorTarget) -> NodeSample:
        url = monitor_url(target.host, target.port)
        try:
            async with asyncio.timeout_at(overall_end):
                await slots.acquire()
        except TimeoutError:
            return NodeSample(
                node_name=target.node_name,
                url=url,
                reachable=False,
                error=f"not polled: overall deadline of {_seconds(overall_deadline)} reached",
            )
        try:
            own_end = loop.time() + per_node_timeout
            if own_end <= overall_end:
                deadline = _Deadline(own_end, f"timed out after {_seconds(per_node_timeout)}")
            else:
                deadline = _Deadline(
                    overall_end,
                    f"timed out at the overall deadline of {_seconds(overall_deadline)}",
                )
            return await _poll_node(client, target, deadline)
        finally:
            slots.release()

    async with client:
        return list(await asyncio.gather(*(one(target) for target in targets)))
