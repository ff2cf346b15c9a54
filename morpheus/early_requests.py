"""`grow` asks its nodes for ``/varz`` and ``/healthz`` before the rest of the CLI has loaded.

A `grow` run spends most of its life on two things that need not wait for each other: loading
the command line (Typer, pydantic, the models: about 0.15 s of CPU) and waiting for the nodes
to answer (a round trip plus the server's own time, 0.1 s on the benchmark's simulated nodes).
So, when the arguments plainly ask `grow` of one forest on the default SQLite registry,
``ask_early`` reads that forest's active nodes with the standard library, opens a
non-blocking connection to each monitoring port and sends each request as soon as its
connection is up.  The replies wait in the kernel's socket buffers while the CLI loads;
``poll_nodes`` then reads them through ``morpheus.transport.fetch`` under its usual deadlines
and limits (``EarlyRequests.take``).

Nothing here decides anything: a request that is not sent early, whose connection failed, or
that `grow` does not ask for is simply asked again the usual way, so results and error
messages are those of a run without it.  It stays out of the way whenever it cannot be sure:
any option it does not know, a registry named in a config file or on PostgreSQL, a forest of
another host, more nodes than it may open sockets for (``MAX_EARLY_NODES``), host names that
would need the resolver.  It imports only the standard library and Morpheus's modules that
do (paths, the registry URL, the request line of ``morpheus.transport``), so it costs almost
nothing when it stands aside.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import select
import socket
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from morpheus.limits import RESERVED_FILES

__all__ = [
    "MAX_EARLY_NODES",
    "EarlyRequests",
    "ask_early",
    "claim",
    "discard",
    "early_forest",
]

#: The most nodes asked early: two sockets each, well inside the usual open-file limit of
#: 1,024, and more than a forest may have (``MAX_FOREST_NODES``); bigger imported forests
#: are polled the usual way.
MAX_EARLY_NODES = 256
PATHS = ("/varz", "/healthz")
#: `grow`'s options that take no value, and those that take one.
_FLAGS = frozenset({"--auto", "--dry-run", "-y", "--yes", "-q", "--quiet"})
_VALUED = frozenset({"--threshold", "--timeout", "-o", "--output"})

Key = tuple[str, int, str]


@dataclass
class _Request:
    sock: socket.socket
    request: bytes
    #: ``time.perf_counter()`` when the request was sent; None while the connection is pending.
    sent_at: float | None = None


class EarlyRequests:
    """Requests sent ahead of the CLI, by (host, port, path); each may be taken once."""

    def __init__(self) -> None:
        self._requests: dict[Key, _Request] = {}

    def __len__(self) -> int:
        return len(self._requests)

    def open(self, host: str, port: int, request_for: dict[str, bytes]) -> None:
        """Start connecting to ``host:port`` for each path (the request to send for it)."""
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        for path, request in request_for.items():
            if (host, port, path) in self._requests:
                continue  # two nodes recorded at one address: the usual way asks the second
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError:
                return  # out of descriptors: the rest is asked the usual way
            sock.setblocking(False)
            code = sock.connect_ex((host, port))
            if code not in (0, errno.EINPROGRESS):
                sock.close()  # refused at once, or no route: the usual way says so
                continue
            self._requests[(host, port, path)] = _Request(sock, request)

    def pump(self) -> None:
        """Send the requests whose connections have come up; drop those that failed."""
        pending = {
            entry.sock.fileno(): key
            for key, entry in self._requests.items()
            if entry.sent_at is None
        }
        if not pending:
            return
        poller = select.poll()
        for fd in pending:
            poller.register(fd, select.POLLOUT)
        for fd, _ in poller.poll(0):
            key = pending[fd]
            entry = self._requests[key]
            asked = time.perf_counter()  # before sending: a reply may come before send returns
            try:
                failed = entry.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                sent = 0 if failed else entry.sock.send(entry.request)
            except OSError:
                sent = 0
            if sent == len(entry.request):
                entry.sent_at = asked
            else:
                self._drop(key)

    def take(self, host: str, port: int, path: str) -> tuple[socket.socket, float] | None:
        """The connection whose request for ``path`` was sent, and when; the caller owns it.

        None when there is none (never asked, not connected yet, or failed): ask as usual.
        """
        entry = self._requests.get((host, port, path))
        if entry is None:
            return None
        if entry.sent_at is None:
            self.pump()  # its connection may have come up since
        entry = self._requests.pop((host, port, path), None)
        if entry is None:
            return None
        if entry.sent_at is None:
            entry.sock.close()
            return None
        return entry.sock, entry.sent_at

    def close(self) -> None:
        """Close every connection not taken."""
        for key in list(self._requests):
            self._drop(key)

    def _drop(self, key: Key) -> None:
        entry = self._requests.pop(key, None)
        if entry is not None:
            entry.sock.close()


_started: EarlyRequests | None = None


def claim() -> EarlyRequests | None:
    """The requests ``ask_early`` sent, handed over once (later calls get None)."""
    global _started
    found, _started = _started, None
    return found


def discard() -> None:
    """Close the requests nobody claimed (`grow` stopped before polling, e.g. bad usage)."""
    found = claim()
    if found is not None:
        found.close()


def early_forest(args: Sequence[str]) -> tuple[str | None] | None:
    """From `grow`'s arguments: ``(forest,)`` (None when left out), or None when unsure."""
    forest: str | None = None
    waiting_for_value = False
    for arg in args:
        if waiting_for_value:
            waiting_for_value = False
            continue
        if arg in _FLAGS:
            continue
        if arg in _VALUED:
            waiting_for_value = True
            continue
        if arg.startswith("-"):
            if arg.split("=", 1)[0] in _VALUED and "=" in arg:
                continue
            return None  # --help, an option of another version, `--`: Typer decides
        if forest is not None:
            return None
        forest = arg
    return None if waiting_for_value else (forest,)


def _registry_file(state: Path) -> Path | None:
    """The default-backend SQLite registry when the environment alone says where it is."""
    from morpheus.registry_url import SQLITE, configured_url, parse_registry_url

    url = configured_url()
    if url is True:
        return None  # a config file names it: only the settings know
    try:
        where = parse_registry_url(url or None, state)
    except ValueError:
        return None  # the usual path says what is wrong with it
    return where.path if where.backend == SQLITE else None


def _nodes(path: Path, forest: str | None, this_host: str | None) -> list[tuple[str, int]] | None:
    """(host, monitoring port) of the forest's active nodes; None when it cannot tell."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=0.2)) as db:
        if forest is None:
            ids = db.execute("SELECT id FROM forests LIMIT 2").fetchall()
            if len(ids) != 1:
                return None
            forest = str(ids[0][0])
        row = db.execute("SELECT host FROM forests WHERE id = ?", (forest,)).fetchone()
        if row is None or (row[0] is not None and row[0] != this_host):
            return None  # unknown, or another host's local forest: not ours to ask
        rows = db.execute(
            "SELECT host, ports FROM nodes WHERE forest_id = ? AND status = 'active'"
            " ORDER BY idx LIMIT ?",
            (forest, MAX_EARLY_NODES + 1),
        ).fetchall()
    if len(rows) > MAX_EARLY_NODES:
        return None
    nodes = []
    for host, ports in rows:
        port = json.loads(ports)["monitor"]
        if isinstance(host, str) and isinstance(port, int):
            nodes.append((host, port))
    return nodes


def _room_for(count: int) -> bool:
    try:
        import resource
    except ImportError:
        return False
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft == resource.RLIM_INFINITY or count * len(PATHS) + RESERVED_FILES <= soft


def ask_early(args: Sequence[str]) -> EarlyRequests | None:
    """Send `grow`'s requests now if ``args`` (after ``grow``) plainly name what to poll."""
    global _started
    discard()
    parsed = early_forest(args)
    if parsed is None:
        return None
    from morpheus.paths import known_host_identity, state_dir

    state = state_dir()
    try:
        path = _registry_file(state)
        if path is None or not path.is_file():
            return None
        nodes = _nodes(path, parsed[0], known_host_identity(state))
    except (sqlite3.Error, OSError, ValueError, KeyError, TypeError):
        return None  # the usual path reads the registry and reports what is wrong
    if not nodes or not _room_for(len(nodes)):
        return None
    from morpheus.transport import request_bytes

    early = EarlyRequests()
    for host, port in nodes:
        try:
            early.open(host, port, {p: request_bytes(host, port, p) for p in PATHS})
        except ValueError:
            continue  # a host name: resolving it is the usual path's work
    early.pump()
    _started = early
    return early
