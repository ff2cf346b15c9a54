"""The short-connection fetch against real sockets on loopback.

Each test runs a tiny asyncio server on 127.0.0.1 (or ::1) that answers with exact bytes, so
the framings and faults a NATS monitoring port could produce are all real TCP exchanges.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from morpheus.testing.netns import Lab, require_lab
from morpheus.transport import (
    BodyTooLargeError,
    ConnectFailedError,
    FetchError,
    ProtocolError,
    ReadBudget,
    Reply,
    fetch,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Seen:
    """What the server received."""

    requests: list[bytes] = field(default_factory=list)


def canned(response: bytes, seen: Seen | None = None, *, close: bool = True) -> Handler:
    """A handler that reads one request head, writes ``response`` and (by default) hangs up."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if seen is not None:
            seen.requests.append(head)
        writer.write(response)
        await writer.drain()
        if close:
            writer.close()
        else:
            await reader.read()  # keep the connection open until the client leaves
            writer.close()

    return handle


def get(
    handler: Handler,
    path: str = "/varz",
    *,
    host: str = "127.0.0.1",
    max_body: int = 1 << 20,
    budget: ReadBudget | None = None,
    timeout: float = 5.0,
) -> Reply:
    """Serve ``handler`` on a loopback port and GET ``path`` from it."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:  # also when the loop ends first: no socket left for the GC to warn about
            writer.close()

    async def run() -> Reply:
        server = await asyncio.start_server(serve, host, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with asyncio.timeout(timeout):
                return await fetch(host, port, path, max_body=max_body, budget=budget)
        finally:
            server.close()

    return asyncio.run(run())


def body_json(reply: Reply) -> Any:
    return json.loads(reply.body)


def test_content_length_response_and_request_line() -> None:
    seen = Seen()
    body = b'{"server_name":"n1"}'
    response = get(
        canned(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body,
            seen,
            close=False,  # Content-Length alone must end the read; no wait for the hang-up
        ),
        "/varz?unused=1",
    )
    assert response == Reply(200, body)
    [request] = seen.requests
    assert request.startswith(b"GET /varz?unused=1 HTTP/1.1\r\n")
    lines = request.lower().split(b"\r\n")
    assert b"connection: close" in lines
    assert b"connection: keep-alive" not in lines
    assert any(line.startswith(b"host: 127.0.0.1:") for line in lines)


def test_chunked_response() -> None:
    response = get(
        canned(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'
        )
    )
    assert body_json(response) == {"a": 1}


def test_response_delimited_by_close() -> None:
    response = get(canned(b'HTTP/1.0 503 Service Unavailable\r\n\r\n{"status":"unavailable"}'))
    assert response.status == 503
    assert body_json(response) == {"status": "unavailable"}


def test_informational_response_is_skipped() -> None:
    response = get(
        canned(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    )
    assert response == Reply(200, b"{}")


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 not configured")
    seen = Seen()
    response = get(canned(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", seen), host="::1")
    assert response.status == 200
    assert b"\r\nHost: [::1]:" in seen.requests[0]


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"", "server closed the connection without a reply"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
            "server closed the connection before the reply ended",
        ),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "malformed HTTP reply"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", "malformed HTTP reply"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 20_000, "reply head over 8192 bytes"),
    ],
    ids=["nothing", "short body", "not http", "bad header", "endless head"],
)
def test_broken_replies_are_protocol_errors(response: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=f"^{message}$"):
        get(canned(response))


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40000000\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ],
    ids=["declared", "chunked", "until close"],
)
def test_body_over_the_limit_is_refused_early(head: bytes) -> None:
    received = 0

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        try:
            while True:  # until the client hangs up
                writer.write(b"x" * 65536)
                await writer.drain()
                received += 65536
        except ConnectionError:
            pass

    with pytest.raises(BodyTooLargeError, match="over the limit of 4096 bytes"):
        get(endless, max_body=4096)
    assert received < 64 << 20  # stopped long before the gigabyte


def test_body_at_the_limit_is_accepted() -> None:
    body = b"x" * 4096
    reply = get(canned(b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n" + body), max_body=4096)
    assert reply.body == body


def test_refused_connection_says_so() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def run() -> None:
        await fetch("127.0.0.1", port, "/varz", max_body=1024)

    with pytest.raises(ConnectFailedError, match=r"^Connection refused$") as caught:
        asyncio.run(run())
    assert caught.value.out_of_files is False


def test_unknown_name_is_a_connect_failure(tmp_path: Path) -> None:
    """Looked up in a network namespace of the test's own, where no name server is reachable:
    the lookup fails at once and no DNS query leaves this machine (from its own namespace the
    network guard refuses the lookup)."""

    async def run() -> None:
        await fetch("no-such-host.invalid", 8222, "/varz", max_body=1024)

    require_lab()
    with Lab(tmp_path / "lab") as lab, pytest.raises(ConnectFailedError):
        lab.call(lambda: asyncio.run(run()))


def test_silent_server_times_out_and_frees_the_socket() -> None:
    async def run() -> None:
        hung_up = asyncio.Event()

        async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # returns once the client closes its end
            hung_up.set()
            writer.close()

        server = await asyncio.start_server(hang, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await fetch("127.0.0.1", port, "/varz", max_body=1024)
            async with asyncio.timeout(5):  # the client's socket was closed, not leaked
                await hung_up.wait()
        finally:
            server.close()

    asyncio.run(run())


def test_budget_is_given_back_after_each_reply() -> None:
    budget = ReadBudget(1 << 20)
    body = json.dumps({"cpu": 1.5}).encode()
    reply = get(
        canned(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)),
        budget=budget,
    )
    assert reply.body == body
    assert budget.free == budget.total


def test_budget_bounds_bytes_held_at_once() -> None:
    async def run() -> tuple[int, list[int]]:
        budget = ReadBudget(100)
        held = 0
        most = 0
        order: list[int] = []

        async def reader(number: int, size: int) -> None:
            nonlocal held, most
            await budget.take(size)
            held += size
            most = max(most, held)
            await asyncio.sleep(0.01)
            held -= size
            order.append(number)
            budget.give(size)

        await asyncio.gather(*(reader(number, 40) for number in range(6)))
        return most, order

    most, order = asyncio.run(run())
    assert most <= 100
    assert sorted(order) == list(range(6))


def test_budget_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one byte"):
        ReadBudget(0)


def test_errors_are_fetch_errors() -> None:
    assert issubclass(ConnectFailedError, FetchError)
    assert issubclass(BodyTooLargeError, ProtocolError)
