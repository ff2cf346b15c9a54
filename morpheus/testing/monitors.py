"""Simulated NATS monitoring ports on loopback, for tests that need many nodes or odd answers.

One ``LoopbackMonitor`` listens on one 127.0.0.1 port and answers every connection as a node's
monitoring port would: ``/varz`` with ``varz``, ``/healthz`` with ``healthz_status`` (or not
at all when it is None), each after ``delay`` seconds; or, with ``stream`` set, that head
followed by endless bytes. Many targets may name the same port: each is polled as a node of
its own. It serves from a thread of its own, so a poll in the test or in a child process
competes with it only for CPU.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from morpheus.monitor import MonitorTarget

__all__ = ["DEFAULT_VARZ", "LoopbackMonitor", "loopback_monitor", "record_forest"]

DEFAULT_VARZ: dict[str, Any] = {
    "server_name": "sim",
    "cpu": 12.5,
    "mem": 50_000_000,
    "cores": 2,
    "connections": 3,
    "remotes": 2,
    "jetstream": {
        "config": {"max_memory": 1 << 30, "max_storage": 10 << 30},
        "stats": {"memory": 0, "storage": 1024},
    },
}


@dataclass
class LoopbackMonitor:
    """How the simulated nodes answer; change the fields between polls."""

    port: int = 0
    delay: float = 0.0
    varz: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_VARZ))
    healthz_status: int | None = 200
    stream: bytes | None = None
    #: Requests received so far (counted when a request's head has arrived).
    requests: int = 0

    def targets(self, count: int, memory_bytes: int | None = 1 << 30) -> list[MonitorTarget]:
        """``count`` nodes, all answered by this port."""
        return [
            MonitorTarget(
                node_name=f"node-{i}", host="127.0.0.1", port=self.port, memory_bytes=memory_bytes
            )
            for i in range(count)
        ]

    def _reply(self, path: bytes) -> bytes | None:
        if path == b"/varz":
            status, body = 200, json.dumps(self.varz).encode()
        elif path == b"/healthz":
            if self.healthz_status is None:
                return None
            status, body = self.healthz_status, b'{"status":"ok"}'
        else:
            status, body = 404, b""
        return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            await asyncio.sleep(self.delay)
            if self.stream is not None:
                writer.write(self.stream)
                while True:  # until the client hangs up
                    writer.write(b"x" * 65536)
                    await writer.drain()
            reply = self._reply(request.split(b" ")[1])
            if reply is None:
                await reader.read()  # never answer; wait for the client to give up
                return
            writer.write(reply)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@contextmanager
def loopback_monitor() -> Iterator[LoopbackMonitor]:
    """A running ``LoopbackMonitor``; stopped, with its thread, on exit."""
    loop = asyncio.new_event_loop()
    monitor = LoopbackMonitor()

    async def start() -> asyncio.Server:
        return await asyncio.start_server(monitor._answer, "127.0.0.1", 0, backlog=4096)

    server = loop.run_until_complete(start())
    monitor.port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield monitor
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

        async def stop() -> None:
            server.close()
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

        loop.run_until_complete(stop())
        loop.close()


def record_forest(state_dir: Path, ports: list[int], *, memory_bytes: int = 4 << 30) -> str:
    """A local forest in the registry whose active nodes are monitored on ``ports``; its id."""
    from morpheus.blueprint import RouteCredentials
    from morpheus.models import Capacity, ForestStatus, NodeStatus, Ports
    from morpheus.registry import Registry

    with Registry.in_state_dir(state_dir) as registry:
        now = datetime.now(UTC)
        forest = registry.create_forest(
            provider="local",
            size="custom",
            location=None,
            run_id="run-simulated",
            credentials=RouteCredentials.generate(),
            now=now,
        )
        for node, port in zip(registry.plan_nodes(forest.id, len(ports), now), ports, strict=True):
            registry.save_node(
                node.model_copy(
                    update={
                        "host": "127.0.0.1",
                        "ports": Ports(client=4222, cluster=6222, monitor=port),
                        "capacity": Capacity(cores=2, memory_bytes=memory_bytes),
                        "status": NodeStatus.ACTIVE,
                    }
                )
            )
        registry.set_forest_status(forest.id, ForestStatus.ACTIVE)
        return forest.id
