"""An httpx transport that makes each request on its own short-lived HTTP/1.1 connection.

The NATS monitor asks many hosts one or two questions each, once. httpx's default transport
(httpcore on anyio) is built for the opposite, few hosts and many requests over pooled
connections, and its pooling, tracing and backend layers cost about three times the CPU per
request of this one (measured by ``bench/grow_monitor.py``; on a 200-node forest that was the
difference between meeting the goal and missing it). Here a request opens a connection with
asyncio, writes ``Connection: close``, lets ``h11`` parse the response and closes the socket.

Only the transport layer is replaced: callers still use ``httpx.AsyncClient``, and foreign
errors are translated here, once, into httpx's own exception tree (``ConnectError``,
``ReadTimeout``, ``RemoteProtocolError`` ...), so callers handle exactly what they would from
the default transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TypeVar

import h11
import httpx

__all__ = ["ShortConnectionTransport"]

_T = TypeVar("_T")

# Bigger than any reply a NATS monitoring endpoint gives a healthy server (``/varz`` is a few
# KiB, ``/jsz`` without details less); a peer streaming more is not one, and is stopped.
DEFAULT_MAX_BODY_BYTES = 8 << 20
_READ_SIZE = 64 << 10


def _describe(exc: OSError) -> str:
    """``Connection refused`` rather than asyncio's ``Connect call failed ('10.0.0.1', 8222)``."""
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


class ShortConnectionTransport(httpx.AsyncBaseTransport):
    """Plain-HTTP requests, each on a fresh connection that is closed after its response.

    Honours httpx's ``connect``, ``read`` and ``write`` timeouts (per step, as the default
    transport does); a response body over ``max_body_bytes`` is refused with
    ``RemoteProtocolError``. ``https`` is not supported.
    """

    def __init__(self, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self._max_body_bytes = max_body_bytes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(
                f"only plain http is supported, not {url.scheme!r}", request=request
            )
        timeouts = request.extensions.get("timeout", {})
        try:
            reader, writer = await _within(
                timeouts.get("connect"),
                asyncio.open_connection(url.host, url.port or 80),
                httpx.ConnectTimeout,
                request,
            )
        except OSError as exc:
            raise httpx.ConnectError(_describe(exc), request=request) from exc
        try:
            return await self._exchange(request, reader, writer, timeouts)
        finally:
            writer.close()

    async def _exchange(
        self,
        request: httpx.Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        connection = h11.Connection(h11.CLIENT)
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
            writer.write(data or b"")
            await _within(timeouts.get("write"), writer.drain(), httpx.WriteTimeout, request)
        except OSError as exc:
            raise httpx.WriteError(_describe(exc), request=request) from exc

        head: h11.Response | None = None
        body = bytearray()
        while True:
            with _protocol_errors(request):
                event = connection.next_event()
            if event is h11.NEED_DATA:
                try:
                    chunk = await _within(
                        timeouts.get("read"), reader.read(_READ_SIZE), httpx.ReadTimeout, request
                    )
                except OSError as exc:
                    raise httpx.ReadError(_describe(exc), request=request) from exc
                if not chunk and head is None:
                    raise httpx.RemoteProtocolError(
                        "server closed the connection without a response", request=request
                    )
                with _protocol_errors(request):
                    connection.receive_data(chunk)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self._max_body_bytes:
                    raise httpx.RemoteProtocolError(
                        f"response body over {self._max_body_bytes} bytes", request=request
                    )
            elif isinstance(event, h11.EndOfMessage):
                break
            elif not isinstance(event, h11.InformationalResponse):  # a 1xx: the answer follows
                raise httpx.RemoteProtocolError(
                    "server closed the connection before the response ended", request=request
                )
        assert head is not None  # h11 yields Response before any Data or EndOfMessage
        return httpx.Response(
            head.status_code,
            headers=head.headers.raw_items(),
            stream=_Body(bytes(body)),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )
