"""The short-connection transport against real sockets on loopback.

Each test runs a tiny asyncio server on 127.0.0.1 (or ::1) that answers with exact bytes, so
the framings and faults a NATS monitoring port could produce are all real TCP exchanges.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from morpheus.transport import ShortConnectionTransport

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


def fetch(
    handler: Handler,
    path: str = "/varz",
    *,
    host: str = "127.0.0.1",
    transport: ShortConnectionTransport | None = None,
    timeout: float = 5.0,
) -> httpx.Response:
    """Serve ``handler`` on a loopback port and GET ``path`` from it through the transport."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:  # also when the loop ends first: no socket left for the GC to warn about
            writer.close()

    async def run() -> httpx.Response:
        server = await asyncio.start_server(serve, host, 0)
        port = server.sockets[0].getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        try:
            async with httpx.AsyncClient(
                transport=transport or ShortConnectionTransport(), timeout=timeout
            ) as client:
                return await client.get(f"http://{url_host}:{port}{path}")
        finally:
            server.close()

    return asyncio.run(run())


def test_content_length_response_and_request_line() -> None:
    seen = Seen()
    body = b'{"server_name":"n1"}'
    response = fetch(
        canned(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body,
            seen,
            close=False,  # Content-Length alone must end the read; no wait for the hang-up
        ),
        "/varz?unused=1",
    )
    assert response.status_code == 200
    assert response.json() == {"server_name": "n1"}
    assert response.headers["content-type"] == "application/json"
    [request] = seen.requests
    assert request.startswith(b"GET /varz?unused=1 HTTP/1.1\r\n")
    lines = request.lower().split(b"\r\n")
    assert b"connection: close" in lines
    assert b"connection: keep-alive" not in lines
    assert any(line.startswith(b"host: 127.0.0.1:") for line in lines)


def test_chunked_response() -> None:
    response = fetch(
        canned(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'
        )
    )
    assert response.json() == {"a": 1}


def test_response_delimited_by_close() -> None:
    response = fetch(canned(b'HTTP/1.0 503 Service Unavailable\r\n\r\n{"status":"unavailable"}'))
    assert response.status_code == 503
    assert response.reason_phrase == "Service Unavailable"
    assert response.json() == {"status": "unavailable"}


def test_gzip_body_is_decoded_by_httpx() -> None:
    import gzip

    body = gzip.compress(b'{"cpu": 1.5}')
    response = fetch(
        canned(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    )
    assert response.json() == {"cpu": 1.5}


def test_informational_response_is_skipped() -> None:
    response = fetch(
        canned(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    )
    assert response.status_code == 200
    assert response.json() == {}


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 not configured")
    seen = Seen()
    response = fetch(canned(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", seen), host="::1")
    assert response.status_code == 200
    assert b"\r\nHost: [::1]:" in seen.requests[0]


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"", "server closed the connection without a response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "peer closed connection"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", ""),
        (b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", ""),
    ],
    ids=["nothing", "short body", "not http", "bad header"],
)
def test_broken_responses_are_protocol_errors(response: bytes, message: str) -> None:
    with pytest.raises(httpx.RemoteProtocolError) as caught:
        fetch(canned(response))
    assert message in str(caught.value)
    assert str(caught.value)  # always says something an operator can read


def test_body_over_the_limit_is_refused() -> None:
    big = b"x" * 5000
    transport = ShortConnectionTransport(max_body_bytes=4096)
    with pytest.raises(httpx.RemoteProtocolError, match="over the limit of 4096 bytes"):
        fetch(
            canned(b"HTTP/1.1 200 OK\r\n" + f"Content-Length: {len(big)}\r\n\r\n".encode() + big),
            transport=transport,
        )


def test_refused_connection_says_so() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def run() -> None:
        async with httpx.AsyncClient(transport=ShortConnectionTransport()) as client:
            await client.get(f"http://127.0.0.1:{port}/varz")

    with pytest.raises(httpx.ConnectError, match=r"^Connection refused$"):
        asyncio.run(run())


def test_silent_server_times_out_on_read_and_frees_the_socket() -> None:
    async def run() -> None:
        hung_up = asyncio.Event()

        async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # returns once the client closes its end
            hung_up.set()
            writer.close()

        server = await asyncio.start_server(hang, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(
                transport=ShortConnectionTransport(), timeout=httpx.Timeout(5.0, read=0.2)
            ) as client:
                with pytest.raises(httpx.ReadTimeout):
                    await client.get(f"http://127.0.0.1:{port}/varz")
            async with asyncio.timeout(5):  # the client's socket was closed, not leaked
                await hung_up.wait()
        finally:
            server.close()

    asyncio.run(run())


def test_https_is_not_supported() -> None:
    async def run() -> None:
        async with httpx.AsyncClient(transport=ShortConnectionTransport()) as client:
            await client.get("https://127.0.0.1:1/varz")

    with pytest.raises(httpx.UnsupportedProtocol, match="only plain http"):
        asyncio.run(run())
