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

VARZ = {
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
BODIES = {
    "/varz": json.dumps(VARZ).encode(),
    "/healthz": b'{"status":"ok"}',
    "/routez": json.dumps(
        {"routes": [{"remote_id": "A", "remote_name": "a"}, {"remote_id": "B", "remote_name": "b"}]}
    ).encode(),
}


async def main(count: int, silent: int, delay: float) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                path = request.split(b" ", 2)[1].decode().split("?")[0]
                await asyncio.sleep(delay)
                body = BODIES.get(path, b"{}")
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                if b"connection: close" in request.lower():
                    break  # as Go's net/http (nats-server's) does
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    servers = []
    for index in range(count):
        handler = hang if index < silent else answer
        servers.append(await asyncio.start_server(handler, "127.0.0.1", 0))
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    print(json.dumps(ports), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
