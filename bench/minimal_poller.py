"""The yardstick for `grow`'s polling: a minimal stdlib asyncio poller, as a whole process.

``python bench/minimal_poller.py PORTS_FILE TIMEOUT`` asks 127.0.0.1 on every port in the JSON
list for ``/varz`` and ``/healthz`` at once, each request on its own connection (as Morpheus
does), reads the JSON under a per-request timeout, and prints how many nodes answered.
It validates nothing and keeps no figures: what is left is the least a poller can cost.
"""

from __future__ import annotations

import asyncio
import json
import sys


async def fetch(port: int, path: str, timeout: float) -> bytes | None:
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                writer.write(request.encode())
                reply = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    head, _, body = reply.partition(b"\r\n\r\n")
    return body if head.startswith(b"HTTP/1.1 200") else None


async def node(port: int, timeout: float) -> bool:
    varz, _ = await asyncio.gather(fetch(port, "/varz", timeout), fetch(port, "/healthz", timeout))
    return varz is not None and isinstance(json.loads(varz), dict)


async def main(ports: list[int], timeout: float) -> None:
    answered = await asyncio.gather(*(node(port, timeout) for port in ports))
    print(json.dumps({"nodes": len(ports), "reachable": sum(answered)}))


if __name__ == "__main__":
    with open(sys.argv[1]) as file:
        asyncio.run(main(json.load(file), float(sys.argv[2])))
