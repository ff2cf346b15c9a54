"""Many simulated NATS monitoring endpoints on 127.0.0.1, for benchmarks.

``python bench/fake_monitors.py COUNT SILENT DELAY`` listens on COUNT loopback ports; the
first SILENT accept connections and never answer, the rest answer /varz, /healthz and /routez
after DELAY seconds.  It prints the ports as one JSON line, then serves until stdin closes
(so it stops by itself when the benchmark ends).
"""

from __future__ import annotations

import asyncio
import json
import sys

from morpheus.testing.monitors import DEFAULT_VARZ

BODIES = {
    b"/varz": json.dumps(DEFAULT_VARZ).encode(),
    b"/healthz": b'{"status":"ok"}',
    b"/routez": json.dumps(
        {"routes": [{"remote_id": "A", "remote_name": "a"}, {"remote_id": "B", "remote_name": "b"}]}
    ).encode(),
}


class _Answer(asyncio.Protocol):
    """Answers each request after ``delay`` seconds; cheap enough for thousands of nodes."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.received = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" in self.received:
            request, _, self.received = self.received.partition(b"\r\n\r\n")
            asyncio.get_running_loop().call_later(self.delay, self._reply, request)

    def _reply(self, request: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        path = request.split(b" ", 2)[1].split(b"?")[0]
        body = BODIES.get(path, b"{}")
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        if b"connection: close" in request.lower():
            self.transport.close()  # as Go's net/http (nats-server's) does


class _Hang(asyncio.Protocol):
    """Accepts and never answers, until the client gives up and closes."""


async def main(count: int, silent: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for index in range(count):
        factory = _Hang if index < silent else (lambda: _Answer(delay))
        servers.append(await loop.create_server(factory, "127.0.0.1", 0, backlog=1024))
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    print(json.dumps(ports), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
