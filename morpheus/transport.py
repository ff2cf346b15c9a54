"""One GET over its own short-lived HTTP/1.1 connection, with the memory it may use bounded.

The NATS monitor asks many hosts one or two questions each, once. A general HTTP client is
built for the opposite (few hosts, many requests over pooled connections) and its layers
cost more CPU per request than asking itself: on a 2,000-node forest that decides whether
replies are read before their deadline (measured by ``bench/grow_monitor.py``). So ``fetch``
opens a non-blocking socket, writes the request with ``Connection: close``, lets
``httptools`` (llhttp, the parser of Node.js) parse the reply, and closes the socket.

Memory is bounded by design, whatever a peer sends: sockets are read ``READ_BYTES`` at a time
with ``sock_recv`` (asyncio's stream transports read ahead up to 256 KiB per connection); a
reply's head may take ``HEAD_BYTES``; a body longer than ``max_body`` is refused as soon as
its ``Content-Length`` or its length so far says so; and the body bytes of every request
sharing a ``ReadBudget`` are taken from it as they arrive, a request waiting while it is
spent. So a poll holds at most its budget plus one read and one head per open connection.

Timeouts are the caller's (``asyncio.timeout``). Failures are ``FetchError`` subclasses
whose text is short and meant for the operator. ``through_httpx`` gives the same interface
over an httpx transport: the seam where tests put ``respx`` mocks.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httptools

if TYPE_CHECKING:
    import httpx

__all__ = [
    "HEAD_BYTES",
    "READ_BYTES",
    "BodyTooLargeError",
    "ConnectFailedError",
    "FetchError",
    "ProtocolError",
    "ReadBudget",
    "Reply",
    "fetch",
    "request_bytes",
    "through_httpx",
]

#: The most a reply's status line and headers may take (a NATS reply's take about 200).
HEAD_BYTES = 8 << 10
#: Bytes asked of a socket at once (a whole /varz of a small forest, head included).
READ_BYTES = 8 << 10


class FetchError(Exception):
    """No usable reply; the message says why in a few words."""


class ConnectFailedError(FetchError):
    """No connection. ``out_of_files``: this process may not open another socket now."""

    def __init__(self, reason: str, *, out_of_files: bool = False) -> None:
        super().__init__(reason)
        self.out_of_files = out_of_files


class ProtocolError(FetchError):
    """The peer answered, but not with an HTTP/1.1 reply this module accepts."""


class BodyTooLargeError(ProtocolError):
    """The peer's reply is longer than ``max_body``."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    #: Seconds from asking (connecting, or sending an early request) to the reply's end.
    seconds: float | None = field(default=None, compare=False)


class ReadBudget:
    """Body bytes that the requests sharing it may hold at once.

    Bytes are taken as they arrive and given back when the request ends; a request that
    finds the budget spent waits for others to give some back (each has a deadline, so
    waiting ends).
    """

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("a read budget must be at least one byte")
        self.total = total
        self.free = total
        self._returned: asyncio.Event | None = None

    async def take(self, size: int) -> None:
        size = min(size, self.total)
        while size > self.free:
            if self._returned is None:
                self._returned = asyncio.Event()
            returned = self._returned
            await returned.wait()
        self.free -= size

    def give(self, size: int) -> None:
        self.free += min(size, self.total)
        if self._returned is not None:
            self._returned.set()
            self._returned = None


def _describe(exc: OSError) -> str:
    """``Connection refused`` rather than ``[Errno 111] Connect call failed ...``."""
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    if exc.errno and exc.errno in errno.errorcode:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


async def _addresses(host: str, port: int) -> list[tuple[int, tuple[str, int]]]:
    """Where to connect: an IP literal as it is (no resolver thread), a name resolved."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [(family, (str(address[0]), port)) for family, _, _, _, address in infos]
    return [(socket.AF_INET6 if version == 6 else socket.AF_INET, (host, port))]


async def _connect(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    failure: OSError | None = None
    try:
        addresses = await _addresses(host, port)
    except OSError as exc:
        raise ConnectFailedError(_describe(exc)) from exc
    for family, address in addresses:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            out = exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
            raise ConnectFailedError(_describe(exc), out_of_files=out) from exc
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            failure = exc
        except BaseException:
            sock.close()
            raise
        else:
            return sock
    if failure is None:
        raise ConnectFailedError(f"no address for {host}")
    raise ConnectFailedError(_describe(failure)) from failure


class _Parse:
    """httptools callbacks: the reply's status, framing and body, checked as they come."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.parser = httptools.HttpResponseParser(self)
        self.done = False
        self._start()

    def _start(self) -> None:
        self.head_done = False
        self.declared: int | None = None
        self.chunked = False
        self.parts: list[bytes] = []
        self.size = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self.declared = int(value)  # llhttp has checked it is a number
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            self.chunked = True

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size <= self.max_body:
            self.parts.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.parser.get_status_code() < 200:  # an interim answer: the reply follows
            self._start()
        else:
            self.done = True

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise ProtocolError("malformed HTTP reply") from exc
        if self.declared is not None and self.declared > self.max_body:
            raise BodyTooLargeError(
                f"reply of {self.declared} bytes is over the limit of {self.max_body} bytes"
            )
        if self.size > self.max_body:
            raise BodyTooLargeError(f"reply over the limit of {self.max_body} bytes")


def request_bytes(host: str, port: int, path: str) -> bytes:
    """The GET request ``fetch`` sends for ``path`` to ``host:port``."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (
        f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\n"
        "User-Agent: morpheus\r\nConnection: close\r\n\r\n"
    ).encode()


async def fetch(
    host: str,
    port: int,
    path: str,
    *,
    max_body: int,
    budget: ReadBudget | None = None,
    sent: tuple[socket.socket, float] | None = None,
) -> Reply:
    """GET ``path`` from ``host:port`` on a connection of its own; raises ``FetchError``.

    ``sent``: a connection on which that request was already sent, and when (see
    ``morpheus.early_requests``); only the reply is read from it.
    """
    loop = asyncio.get_running_loop()
    if sent is None:
        asked = time.perf_counter()
        sock = await _connect(host, port)
    else:
        sock, asked = sent
    reply = _Parse(max_body)
    taken = 0
    try:
        if sent is None:
            try:
                await loop.sock_sendall(sock, request_bytes(host, port, path))
            except OSError as exc:
                raise FetchError(f"cannot send the request ({_describe(exc)})") from exc
        head_bytes = 0
        while not reply.done:
            try:
                chunk = await loop.sock_recv(sock, READ_BYTES)
            except OSError as exc:
                raise FetchError(f"cannot read the reply ({_describe(exc)})") from exc
            if not chunk:
                if reply.head_done and reply.declared is None and not reply.chunked:
                    break  # the body ends with the connection
                raise ProtocolError(
                    "server closed the connection before the reply ended"
                    if head_bytes
                    else "server closed the connection without a reply"
                )
            if not reply.head_done:
                head_bytes += len(chunk)
            reply.feed(chunk)
            if not reply.head_done and head_bytes > HEAD_BYTES:
                raise ProtocolError(f"reply head over {HEAD_BYTES} bytes")
            if budget is not None and reply.size > taken:
                await budget.take(reply.size - taken)
                taken = reply.size
        status, body = reply.parser.get_status_code(), b"".join(reply.parts)
        return Reply(status, body, time.perf_counter() - asked)
    finally:
        sock.close()
        if budget is not None:
            budget.give(taken)


def through_httpx(
    transport: httpx.AsyncBaseTransport,
) -> Callable[[str, int, str], Awaitable[Reply]]:
    """Fetch through an httpx transport: the seam where tests put ``respx`` mocks."""
    import httpx

    async def get(host: str, port: int, path: str) -> Reply:
        try:
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            request = httpx.Request("GET", f"http://{authority}{path}")
            response = await transport.handle_async_request(request)
            return Reply(response.status_code, await response.aread())
        except httpx.TimeoutException as exc:
            raise TimeoutError from exc
        except httpx.ConnectError as exc:
            raise ConnectFailedError(str(exc) or "cannot connect") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise FetchError(reason) from exc

    return get
