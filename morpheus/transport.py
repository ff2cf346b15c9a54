"""An httpx transport that makes each request on its own short-lived HTTP/1.1 connection.

The NATS monitor asks many hosts one or two questions each, once. httpx's default transport
(httpcore on anyio) is built for the opposite, few hosts and many requests over pooled
connections, and its pooling, tracing and backend layers cost about three times the CPU per
request of this one (measured by ``bench/grow_monitor.py``). Here a request opens a
non-blocking socket, writes ``Connection: close``, lets ``h11`` parse the response and closes
the socket.

Memory is bounded by design, whatever the peers send: a response head may take
``HEAD_BYTES``, read in small pieces; a body longer than ``max_body_bytes`` is refused as soon
as its ``Content-Length`` (or its length so far) says so; and every body is reserved in full
from a ``ReadBudget`` shared by all requests before it is read, waiting while the budget is
spent. Sockets are read with ``sock_recv`` rather than asyncio streams, whose transports
buffer up to 256 KiB per connection before anyone asks.

Only the transport layer is replaced: callers still use httpx requests and responses, and
foreign errors are translated here, once, into httpx's own exception tree (``ConnectError``,
``ReadTimeout``, ``RemoteProtocolError`` ...). A socket the process may not open (``EMFILE``)
is a ``ConnectError`` whose ``__cause__`` is that ``OSError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TypeVar

import h11
import httpx

__all__ = ["HEAD_BYTES", "BodyTooLargeError", "ReadBudget", "ShortConnectionTransport"]

_T = TypeVar("_T")

#: The most a response's status line and headers may take (a NATS reply's take about 150).
HEAD_BYTES = 8 << 10
#: A body larger than this is refused unless the transport is told otherwise.
DEFAULT_MAX_BODY_BYTES = 1 << 20
_BODY_READ_SIZE = 64 << 10


class BodyTooLargeError(httpx.RemoteProtocolError):
    """The peer answered, with a body longer than the transport accepts."""


class ReadBudget:
    """Bytes of response bodies that requests sharing it may hold at once.

    A body is reserved in full before it is read and released when it has been handed on;
    a request whose body does not fit waits for others to finish. Nobody waits while holding
    a reservation, so as long as every single body fits in ``total``, waiting always ends.
    """

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("a read budget must be at least one byte")
        self.total = total
        self.free = total
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        size = min(size, self.total)
        if size > self.free or self._waiters:  # first come, first served
            future = asyncio.get_running_loop().create_future()
            self._waiters.append((size, future))
            try:
                await future
            except BaseException:
                if future.done() and not future.cancelled():
                    self.free += size  # granted just as the wait was given up
                else:
                    self._waiters.remove((size, future))
                self._grant()
                raise
        else:
            self.free -= size
        try:
            yield
        finally:
            self.free += size
            self._grant()

    def _grant(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.free:
            size, future = self._waiters.pop(0)
            if not future.done():
                self.free -= size
                future.set_result(None)


def _describe(exc: OSError) -> str:
    """``Connection refused`` rather than ``[Errno 111] Connect call failed ...``."""
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    if exc.errno and exc.errno in errno.errorcode:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


async def _within(
    seconds: float | None,
    step: Awaitable[_T],
    on_timeout: type[httpx.TimeoutException],
    request: httpx.Request,
) -> _T:
    try:
        async with asyncio.timeout(seconds):
            return await step
    except TimeoutError:
        raise on_timeout("timed out", request=request) from None


class _Body(httpx.AsyncByteStream):
    def __init__(self, content: bytes) -> None:
        self._content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._content


@contextlib.contextmanager
def _protocol_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except h11.RemoteProtocolError as exc:
        raise httpx.RemoteProtocolError(
            str(exc) or "malformed HTTP response", request=request
        ) from exc
    except h11.LocalProtocolError as exc:
        raise httpx.LocalProtocolError(str(exc), request=request) from exc


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
    for family, address in await _addresses(host, port):
        sock = socket.socket(family, socket.SOCK_STREAM)  # EMFILE surfaces here
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
    raise failure or OSError(errno.EHOSTUNREACH, "no address")


class ShortConnectionTransport(httpx.AsyncBaseTransport):
    """Plain-HTTP requests, each on a fresh connection that is closed after its response.

    Honours httpx's ``connect``, ``read`` and ``write`` timeouts (per step, as the default
    transport does) when they are set. A body over ``max_body_bytes`` is refused with
    ``RemoteProtocolError`` without being read; bodies are reserved from ``budget`` (by
    default one of ``max_body_bytes`` for this transport alone). ``https`` is not supported.
    """

    def __init__(
        self, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, budget: ReadBudget | None = None
    ) -> None:
        self._max_body_bytes = max_body_bytes
        self._budget = budget or ReadBudget(max_body_bytes)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(
                f"only plain http is supported, not {url.scheme!r}", request=request
            )
        timeouts = request.extensions.get("timeout", {})
        try:
            sock = await _within(
                timeouts.get("connect"),
                _connect(url.host, url.port or 80),
                httpx.ConnectTimeout,
                request,
            )
        except OSError as exc:
            raise httpx.ConnectError(_describe(exc), request=request) from exc
        try:
            return await self._exchange(request, sock, timeouts)
        finally:
            sock.close()

    async def _exchange(
        self, request: httpx.Request, sock: socket.socket, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        loop = asyncio.get_running_loop()
        connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_BYTES)
        headers = [
            (name, value) for name, value in request.headers.raw if name.lower() != b"connection"
        ]
        headers.append((b"Connection", b"close"))
        content = await request.aread()
        with _protocol_errors(request):
            data = connection.send(
                h11.Request(method=request.method, target=request.url.raw_path, headers=headers)
            )
            if content:
                data += connection.send(h11.Data(data=content)) or b""
            data += connection.send(h11.EndOfMessage()) or b""
        try:
            await _within(
                timeouts.get("write"),
                loop.sock_sendall(sock, data or b""),
                httpx.WriteTimeout,
                request,
            )
        except OSError as exc:
            raise httpx.WriteError(_describe(exc), request=request) from exc

        async def receive(size: int) -> bytes:
            try:
                return await _within(
                    timeouts.get("read"), loop.sock_recv(sock, size), httpx.ReadTimeout, request
                )
            except OSError as exc:
                raise httpx.ReadError(_describe(exc), request=request) from exc

        # The head, in pieces no bigger than h11 will hold for it.
        while True:
            with _protocol_errors(request):
                event = connection.next_event()
            if isinstance(event, h11.Response):
                break
            if event is h11.NEED_DATA:
                chunk = await receive(HEAD_BYTES)
                if not chunk:
                    raise httpx.RemoteProtocolError(
                        "server closed the connection without a response", request=request
                    )
                with _protocol_errors(request):
                    connection.receive_data(chunk)
            elif not isinstance(event, h11.InformationalResponse):  # a 1xx: the answer follows
                raise httpx.RemoteProtocolError("malformed HTTP response", request=request)

        head = event
        declared = _content_length(head)
        if declared is not None and declared > self._max_body_bytes:
            raise BodyTooLargeError(
                f"response body of {declared} bytes is over the limit of "
                f"{self._max_body_bytes} bytes",
                request=request,
            )
        async with self._budget.hold(self._max_body_bytes if declared is None else declared):
            body = bytearray()
            while True:
                with _protocol_errors(request):
                    event = connection.next_event()
                if event is h11.NEED_DATA:
                    chunk = await receive(_BODY_READ_SIZE)
                    with _protocol_errors(request):
                        connection.receive_data(chunk)
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > self._max_body_bytes:
                        raise BodyTooLargeError(
                            f"response body over the limit of {self._max_body_bytes} bytes",
                            request=request,
                        )
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    raise httpx.RemoteProtocolError(
                        "server closed the connection before the response ended", request=request
                    )
            return httpx.Response(
                head.status_code,
                headers=head.headers.raw_items(),
                stream=_Body(bytes(body)),
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
            )


def _content_length(head: h11.Response) -> int | None:
    for name, value in head.headers:
        if name == b"content-length":
            return int(value)  # h11 has checked it is a number
    return None
