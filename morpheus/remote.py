"""The SSH node channel: one command on many nodes, host keys pinned, every step bounded.

Morpheus made each node's host key and recorded its public half, so a connection accepts that
key and no other: there is no trust on first use and no known_hosts file to get wrong.  The
client key is the forest's own (``registry.ssh_client_key``), held in memory only; the
operator's agent, keys and ``~/.ssh/config`` are never consulted.

Built on ``asyncssh`` (imported only when a node is contacted, so the CLI starts without it):
host-key pinning, per-step deadlines and bounded parallelism are arguments there, and its
errors are types, not text to parse.  Every failure is one ``NodeChannelError`` line naming
the node, the address and what to do::

    forest-1-node-2: no SSH answer from 2001:db8::1 port 22 within 10 s (dropped on the way:
    is this machine in infrastructure.admin_sources?)
"""

from __future__ import annotations

import asyncio
import errno
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import SecretStr

from morpheus.errors import ProviderError
from morpheus.safe_text import printable

if TYPE_CHECKING:
    import asyncssh

#: Nodes contacted at once; more wait for a free slot.
DEFAULT_PARALLEL = 8


class NodeChannelError(ProviderError):
    """A node could not be reached, refused Morpheus, or its command failed (one line)."""


@dataclass(frozen=True)
class Deadlines:
    """Seconds each step may take, per node."""

    #: TCP connect, SSH handshake and authentication, for each address tried.
    connect: float = 10.0
    #: The command, from start to exit (the reconfiguration helper waits up to ~105 s).
    command: float = 150.0


@dataclass(frozen=True)
class NodeEndpoint:
    """Where and how to reach one node."""

    node_id: str
    #: Tried in order until one answers; a host-key mismatch stops at once.
    addresses: tuple[str, ...]
    port: int
    #: ``ssh-ed25519 AAAA…``: the only host key accepted.
    host_key: str
    user: str = "root"


@dataclass(frozen=True)
class NodeCommand:
    """One command for one node, with what it reads on stdin."""

    endpoint: NodeEndpoint
    command: str
    client_key: SecretStr
    stdin: bytes = b""


@dataclass(frozen=True)
class CommandResult:
    """What one node's command printed, or why it could not run (``error``)."""

    node_id: str
    stdout: str = ""
    error: NodeChannelError | None = None


def run_commands(
    commands: Sequence[NodeCommand],
    *,
    parallel: int = DEFAULT_PARALLEL,
    deadlines: Deadlines | None = None,
) -> list[CommandResult]:
    """Run each command on its node, ``parallel`` at a time; results in ``commands`` order.

    Never raises for one node's failure: each result carries its own error.
    """
    return asyncio.run(run_commands_async(commands, parallel=parallel, deadlines=deadlines))


async def run_commands_async(
    commands: Sequence[NodeCommand],
    *,
    parallel: int = DEFAULT_PARALLEL,
    deadlines: Deadlines | None = None,
) -> list[CommandResult]:
    """``run_commands`` inside a running event loop."""
    limits = deadlines or Deadlines()
    slots = asyncio.Semaphore(max(1, parallel))

    async def one(command: NodeCommand) -> CommandResult:
        async with slots:
            try:
                stdout = await _run(command, limits)
            except NodeChannelError as exc:
                return CommandResult(command.endpoint.node_id, error=exc)
            return CommandResult(command.endpoint.node_id, stdout=stdout)

    return list(await asyncio.gather(*(one(command) for command in commands)))


async def _run(command: NodeCommand, limits: Deadlines) -> str:
    endpoint = command.endpoint
    connection = await _connect(endpoint, command.client_key, limits.connect)
    try:
        try:
            result = await asyncio.wait_for(
                connection.run(command.command, input=command.stdin, encoding=None),
                limits.command,
            )
        except TimeoutError:
            raise NodeChannelError(
                f"{endpoint.node_id}: `{command.command}` did not finish within "
                f"{limits.command:.0f} s"
            ) from None
        except _ssh_errors() as exc:
            raise NodeChannelError(
                f"{endpoint.node_id}: the SSH session broke: {_reason(exc)}"
            ) from None
    finally:
        connection.close()
    stdout = _text(result.stdout)
    if result.exit_status != 0:
        lines = [line for line in _text(result.stderr).splitlines() if line.strip()]
        said = printable(lines[-1]) if lines else f"exit status {result.exit_status}"
        raise NodeChannelError(f"{endpoint.node_id}: `{command.command}` failed: {said[:300]}")
    return stdout


async def _connect(
    endpoint: NodeEndpoint, client_key: SecretStr, seconds: float
) -> asyncssh.SSHClientConnection:
    import asyncssh

    try:
        trusted = asyncssh.import_public_key(endpoint.host_key)
        key = asyncssh.import_private_key(client_key.get_secret_value())
    except (asyncssh.KeyImportError, ValueError):
        raise NodeChannelError(
            f"{endpoint.node_id}: the recorded SSH keys are damaged; "
            "`morpheus registry rebuild` cannot restore them, the node must be replaced"
        ) from None
    if not endpoint.addresses:
        raise NodeChannelError(f"{endpoint.node_id}: no address recorded to connect to")
    problems = []
    for address in endpoint.addresses:
        try:
            return await asyncio.wait_for(
                asyncssh.connect(
                    address,
                    endpoint.port,
                    username=endpoint.user,
                    known_hosts=([trusted], [], []),
                    server_host_key_algs=["ssh-ed25519"],
                    client_keys=[key],
                    agent_path=None,
                    config=None,
                    preferred_auth="publickey",
                    connect_timeout=seconds,
                    login_timeout=seconds,
                ),
                seconds,
            )
        except asyncssh.HostKeyNotVerifiable:
            # Never try another address: this is not a reachability problem.
            raise NodeChannelError(
                f"{endpoint.node_id}: {address} does not show the SSH host key Morpheus pinned "
                "for this node; refusing to connect (another machine may hold the address)"
            ) from None
        except asyncssh.PermissionDenied:
            raise NodeChannelError(
                f"{endpoint.node_id}: {address} refused the forest's SSH key (a node made "
                "before Morpheus could reconfigure nodes has none: replace it)"
            ) from None
        except TimeoutError:
            problems.append(
                f"no SSH answer from {address} port {endpoint.port} within {seconds:.0f} s "
                "(dropped on the way: is this machine in infrastructure.admin_sources?)"
            )
        except OSError as exc:
            problems.append(_network_problem(address, endpoint.port, exc))
        except _ssh_errors() as exc:
            problems.append(f"SSH to {address} failed: {_reason(exc)}")
    raise NodeChannelError(f"{endpoint.node_id}: {'; '.join(problems)}")


def _network_problem(address: str, port: int, exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"{address} refused port {port} (sshd is not running there, or not yet)"
    if exc.errno in (errno.ENETUNREACH, errno.EADDRNOTAVAIL):
        family = "IPv6" if ":" in address else "IPv4"
        return f"no route to {address} from this machine (no {family} route here?)"
    if exc.errno == errno.EHOSTUNREACH:
        return f"{address} is unreachable (no host answers there)"
    return f"cannot connect to {address} port {port}: {exc.strerror or exc}"


def _ssh_errors() -> tuple[type[Exception], ...]:
    import asyncssh

    return (asyncssh.Error, ConnectionError)


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return printable(str(reason))[:200]


def _text(data: object) -> str:
    """What the node printed (not yet safe for a terminal: ``printable`` before showing it)."""
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return "" if data is None else str(data)


@contextmanager
def client_tunnel(
    endpoint: NodeEndpoint,
    client_key: SecretStr,
    remote_port: int,
    *,
    deadlines: Deadlines | None = None,
) -> Iterator[int]:
    """A port on 127.0.0.1 of this machine that leads to ``127.0.0.1:remote_port`` on the
    node, for as long as the block runs (a NATS client port a node serves on localhost only).

    The forest's key may open that one port forward and nothing else (``permitopen`` on the
    node).  The connection runs on an event loop of its own thread, so the block may use
    ``asyncio.run`` itself.  Failing to connect raises ``NodeChannelError`` (one line).
    """
    limits = deadlines or Deadlines()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="morpheus-tunnel", daemon=True)
    thread.start()

    async def open_tunnel() -> tuple[asyncssh.SSHClientConnection, int]:
        connection = await _connect(endpoint, client_key, limits.connect)
        try:
            listener = await asyncio.wait_for(
                connection.forward_local_port("127.0.0.1", 0, "127.0.0.1", remote_port),
                limits.connect,
            )
        except TimeoutError:
            connection.close()
            raise NodeChannelError(
                f"{endpoint.node_id}: no tunnel to its port {remote_port} within "
                f"{limits.connect:.0f} s"
            ) from None
        except _ssh_errors() as exc:
            connection.close()
            raise NodeChannelError(
                f"{endpoint.node_id}: the node refused a tunnel to its port {remote_port}: "
                f"{_reason(exc)}"
            ) from None
        return connection, listener.get_port()

    async def close_tunnel(connection: asyncssh.SSHClientConnection) -> None:
        connection.close()
        await connection.wait_closed()

    try:
        connection, port = asyncio.run_coroutine_threadsafe(open_tunnel(), loop).result()
        try:
            yield port
        finally:
            closing = asyncio.run_coroutine_threadsafe(close_tunnel(connection), loop)
            closing.result(timeout=limits.connect)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
