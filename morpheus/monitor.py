"""Poll the NATS monitoring endpoints of many nodes at once.

``poll_nodes`` never raises for a node's sake: a node that refuses, times out, answers with
an HTTP error or with JSON of the wrong shape comes back as a ``NodeSample`` with ``error`` set,
in the position it was given. Every node has ``per_node_timeout`` seconds from the moment it
is asked; there is no deadline for the round as a whole, so a forest too big to ask at once
takes longer rather than losing nodes. What the process itself runs short of is never put
on a node: the soft open-file limit is raised to the hard one and the number of nodes asked
at once sized from it, a node whose socket could not be opened is asked again later, and
time the process was too busy (or too starved of CPU) to read replies is not counted
against a node's deadline (``morpheus.pacing``).

Memory is bounded by design (see ``morpheus.transport``): a reply longer than a NATS
monitoring reply of a forest this size can be is refused, and all bodies together share one
budget. The figures are turned into ``morpheus.load`` samples, which ``aggregate`` sums up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from morpheus.boot_report import failure_in_reply
from morpheus.errors import MorpheusError
from morpheus.limits import RESERVED_FILES
from morpheus.load import ForestLoad, NodeSample, aggregate, clamp_percent
from morpheus.models import Node, host_for_url
from morpheus.pacing import LoopLag, NodeDeadline, Slots
from morpheus.transport import (
    READ_BYTES,
    BodyTooLargeError,
    ConnectFailedError,
    FetchError,
    ReadBudget,
    Reply,
    fetch,
    through_httpx,
)
from morpheus.varz import Healthz, Jsz, Varz, VarzReply

if TYPE_CHECKING:
    import httpx

    from morpheus.early_requests import EarlyRequests

__all__ = [
    "ForestLoad",
    "Healthz",
    "Jsz",
    "MonitorTarget",
    "NodeSample",
    "Varz",
    "aggregate",
    "max_reply_bytes",
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

    @classmethod
    def for_node(cls, node: Node) -> MonitorTarget:
        """Where a recorded node is polled; a node with no address yet polls as unreachable."""
        return cls(
            node_name=node.id,
            host=node.host or "0.0.0.0",  # noqa: S104 - nothing listens for us there
            port=node.ports.monitor,
            memory_bytes=node.capacity.memory_bytes if node.capacity else None,
        )


def monitor_url(host: str, port: int) -> str:
    """Base URL of a monitoring endpoint: IPv6 literals in brackets, IPv4 and names bare."""
    return f"http://{host_for_url(host)}:{port}"


# --- polling --------------------------------------------------------------------------------

_ReplyT = TypeVar("_ReplyT", bound=VarzReply)
#: GET (host, port, path): the seam between polling and the wire.
Fetch = Callable[[str, int, str], Awaitable[Reply]]
_T = TypeVar("_T")


class _EndpointError(Exception):
    """One endpoint gave nothing usable.

    ``reason`` is short and shown to the operator; ``answered`` tells an HTTP answer that was
    no good (worth naming the endpoint) from no answer at all (a fact about the node).
    """

    def __init__(
        self, path: str, reason: str, *, answered: bool, boot_failure: str | None = None
    ) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.answered = answered
        #: What a failed bootstrap's responder said in place of NATS (``failure_in_reply``).
        self.boot_failure = boot_failure


class _OutOfFiles(Exception):
    """This process may not open another socket now: a fact about us, not the node."""


class _Asker:
    """What every request of one node needs: how to fetch, where, and its deadline."""

    def __init__(self, fetch: Fetch, target: MonitorTarget, deadline: NodeDeadline) -> None:
        self.fetch = fetch
        self.target = target
        self.base = monitor_url(target.host, target.port)
        self.deadline = deadline

    async def get(self, path: str) -> Reply:
        try:
            async with self.deadline.within():
                return await self.fetch(self.target.host, self.target.port, path)
        except TimeoutError as exc:
            reason = f"timed out after {self.deadline.timeout:g}s"
            raise _EndpointError(path, reason, answered=False) from exc
        except BodyTooLargeError as exc:
            raise _EndpointError(path, str(exc), answered=True) from exc
        except ConnectFailedError as exc:
            if exc.out_of_files:
                raise _OutOfFiles from exc
            raise _EndpointError(path, f"cannot connect ({exc})", answered=False) from exc
        except FetchError as exc:
            raise _EndpointError(path, str(exc), answered=False) from exc

    async def parsed(self, path: str, model: type[_ReplyT]) -> _ReplyT:
        return _parse(path, await self.get(path), model)

    async def healthy(self) -> bool:
        # Only the status code counts: 200 is healthy, 503 (and any other answer) is not.
        return (await self.get("/healthz")).status == 200


def _parse(path: str, reply: Reply, model: type[_ReplyT]) -> _ReplyT:
    if reply.status != 200:
        failure = failure_in_reply(reply.body)
        raise _EndpointError(
            path,
            f"HTTP {reply.status}",
            answered=True,
            boot_failure=failure.describe() if failure is not None else None,
        )
    try:
        data: Any = json.loads(reply.body)
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


async def _attempt(step: Awaitable[_T]) -> _T | _EndpointError | _OutOfFiles:
    try:
        return await step
    except (_EndpointError, _OutOfFiles) as exc:
        return exc


async def _poll_node(ask: _Asker, target: MonitorTarget) -> NodeSample:
    async def timed_varz() -> tuple[Varz, float]:
        started = time.perf_counter()
        reply = await ask.get("/varz")
        # From asking, which may have been before this poll began (``early``).
        seconds = time.perf_counter() - started if reply.seconds is None else reply.seconds
        return _parse("/varz", reply, Varz), seconds * 1000

    # /routez is not asked for: varz.remotes already counts distinct peers (route pooling
    # only inflates varz.routes and /routez's num_routes), and a third request per node
    # costs a third more time on big forests.
    varz_result, health_result = await asyncio.gather(
        _attempt(timed_varz()), _attempt(ask.healthy())
    )
    if isinstance(varz_result, _OutOfFiles) or isinstance(health_result, _OutOfFiles):
        raise _OutOfFiles
    healthy = health_result if isinstance(health_result, bool) else None
    if isinstance(varz_result, _EndpointError):
        # No answer at all is a fact about the node; a bad answer names the endpoint; a
        # failed bootstrap answering in NATS's place says why.
        error = str(varz_result) if varz_result.answered else varz_result.reason
        return NodeSample(
            node_name=target.node_name,
            url=ask.base,
            reachable=False,
            error=varz_result.boot_failure or error,
            healthy=healthy,
            boot_failure=varz_result.boot_failure,
        )

    varz, latency_ms = varz_result
    problems = [str(health_result)] if isinstance(health_result, _EndpointError) else []
    cpu_percent = None
    if varz.cores:
        cpu_percent = clamp_percent(varz.cpu / varz.cores)
    else:
        problems.append("/varz: 0 cores, so CPU is unknown")
    memory_percent = None
    if target.memory_bytes is not None:
        memory_percent = clamp_percent(varz.mem / target.memory_bytes * 100)

    js_memory_used = js_memory_limit = js_storage_used = js_storage_limit = None
    js = varz.jetstream
    if js is not None and js.stats is not None:
        js_memory_used, js_storage_used = js.stats.memory, js.stats.storage
        if js.config is not None:
            js_memory_limit, js_storage_limit = js.config.max_memory, js.config.max_storage
    elif js is not None and js.config is not None:
        # A server whose /varz lists JetStream limits but no usage: ask /jsz for it.
        try:
            jsz = await ask.parsed("/jsz", Jsz)
        except _EndpointError as exc:
            problems.append(str(exc))
        else:
            if not jsz.disabled:
                js_memory_used, js_storage_used = jsz.memory, jsz.storage
                limits = jsz.config or js.config
                js_memory_limit, js_storage_limit = limits.max_memory, limits.max_storage

    return NodeSample(
        node_name=target.node_name,
        url=ask.base,
        reachable=True,
        error="; ".join(problems) or None,
        healthy=healthy,
        server_name=varz.server_name,
        cpu_percent=cpu_percent,
        memory_percent=memory_percent,
        mem_bytes=varz.mem,
        cores=varz.cores,
        connections=varz.connections,
        peers=varz.remotes,
        jetstream_memory_used=js_memory_used,
        jetstream_memory_limit=js_memory_limit,
        jetstream_storage_used=js_storage_used,
        jetstream_storage_limit=js_storage_limit,
        latency_ms=latency_ms,
    )


# A node is asked for /varz and /healthz at once (and /jsz after /varz, if needed).
_CONNECTIONS_PER_NODE = 2
# All reply bodies together; every body is reserved from it in full before it is read.
_BODY_BUDGET = 32 << 20
# Nodes asked at once, at most: besides the budget, a connection holds at most one read
# (llhttp keeps no head buffer), and all of those together may take as much again.
MAX_CONCURRENCY = _BODY_BUDGET // (READ_BYTES * _CONNECTIONS_PER_NODE)
# A real /varz (the longest reply) of nats-server 2.x with JetStream is about 2.4 KiB
# standalone and grows by about 175 bytes a peer (measured on 1-, 3- and 5-node clusters,
# IPv4 loopback; IPv6 addresses are longer): allow far more than that.
_REPLY_BYTES_BASE = 64 << 10
_REPLY_BYTES_PER_NODE = 1 << 10


def max_reply_bytes(forest_nodes: int) -> int:
    """The longest reply taken from a node of a forest of ``forest_nodes`` nodes."""
    return min(_REPLY_BYTES_BASE + _REPLY_BYTES_PER_NODE * forest_nodes, _BODY_BUDGET)


def concurrency_within(open_file_limit: int | None) -> int:
    """How many nodes to ask at once without running out of file descriptors or memory."""
    if open_file_limit is None:
        return MAX_CONCURRENCY
    room = (open_file_limit - RESERVED_FILES) // _CONNECTIONS_PER_NODE
    return max(1, min(MAX_CONCURRENCY, room))


def raise_open_file_limit() -> int | None:
    """Raise this process's soft open-file limit to its hard limit; the soft limit after."""
    try:
        import resource  # Unix only
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        # macOS refuses more than its kernel's OPEN_MAX; the soft limit then stays.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


async def poll_nodes(
    targets: Sequence[MonitorTarget],
    *,
    per_node_timeout: float = 2.0,
    concurrency: int | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    early: EarlyRequests | None = None,
) -> list[NodeSample]:
    """Poll every target and return one sample per target, in input order.

    Up to ``concurrency`` nodes are asked at once (by default as many as the open-file limit,
    raised first, and the memory bound allow), each for its endpoints in parallel. A node has
    ``per_node_timeout`` seconds from the moment it is asked, not counting time this process
    was too busy to read its replies (see ``morpheus.pacing``). ``transport`` is the test seam
    (an httpx transport, e.g. respx's); by default each request has its own short connection
    (see ``morpheus.transport``). ``early``: requests already sent (see
    ``morpheus.early_requests``); a node's reply is read from there when it has one, and the
    connections not used are closed when the poll ends.

    Raises ``MorpheusError`` only when this process cannot open even one node's sockets.
    """
    if concurrency is None:
        concurrency = concurrency_within(raise_open_file_limit())
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if not targets:
        return []
    get: Fetch
    if transport is None:
        max_body, budget = max_reply_bytes(len(targets)), ReadBudget(_BODY_BUDGET)

        async def get(host: str, port: int, path: str) -> Reply:
            sent = early.take(host, port, path) if early is not None else None
            return await fetch(host, port, path, max_body=max_body, budget=budget, sent=sent)

    else:
        get = through_httpx(transport)
    slots = Slots(min(concurrency, len(targets)))

    async def one(target: MonitorTarget, lag: LoopLag) -> NodeSample:
        while True:
            await slots.acquire()
            retired = False
            try:
                deadline = NodeDeadline(per_node_timeout, lag)
                return await _poll_node(_Asker(get, target, deadline), target)
            except _OutOfFiles:
                retired = slots.retire()
                if not retired:
                    raise MorpheusError(
                        "cannot poll the nodes: this process may not open more files; "
                        "raise the limit (`ulimit -n`) and try again"
                    ) from None
            finally:
                if not retired:
                    slots.release()

    try:
        async with LoopLag() as lag:
            return list(await asyncio.gather(*(one(target, lag) for target in targets)))
    finally:
        if early is not None:
            early.close()
