"""Ports for local nodes, held from the moment they are chosen until the node listens on them.

A port found free and let go is anyone's again: another ``plant`` choosing ports at the same
time, any program asking the kernel for a free port, or an outgoing connection may take it
in the seconds before the node's nats-server starts, which then exits with "address already
in use".  So on Linux each chosen port stays bound to a socket of ours (never listening)
until the node's server listens on it.  The socket is bound without ``SO_REUSEADDR``, so
every other bind of the port fails and the kernel hands it to no one, and then given
``SO_REUSEADDR``, which lets nats-server (Go sets it on every listener) bind the port anyway:
Linux refuses a bind beside a bound socket only if either lacks the option or the other
listens.  BSD and macOS refuse such a second bind outright, so there the ports are let go
once every node's are chosen.
"""

from __future__ import annotations

import socket
import sys
import weakref
from collections.abc import Iterable

import psutil

from morpheus.models import Ports

__all__ = ["PortClaims", "listening_ports"]

#: Whether a bound socket of ours can keep a port while a nats-server binds it too.
HOLDS_PORTS = sys.platform == "linux"


def _close_all(held: dict[str, list[socket.socket]]) -> None:
    for sockets in held.values():
        for sock in sockets:
            sock.close()
    held.clear()


class PortClaims:
    """Ports chosen on ``address``, each held for its owner (a node id) until released."""

    def __init__(self, address: str, family: socket.AddressFamily) -> None:
        self.address = address
        self.family = family
        self._held: dict[str, list[socket.socket]] = {}
        # Closed with this object at the latest, so a command that ends early leaks nothing.
        weakref.finalize(self, _close_all, self._held)

    def claim(self, owner: str, avoid: Iterable[int] = ()) -> int:
        """A port free on ``address`` and not in ``avoid``, held for ``owner``.

        Raises ``OSError`` when the kernel has no port left to give.
        """
        avoided = set(avoid)
        refused: list[socket.socket] = []
        try:
            while True:
                probe = socket.socket(self.family, socket.SOCK_STREAM)
                try:
                    probe.bind((self.address, 0))
                except OSError:
                    probe.close()
                    raise
                port = int(probe.getsockname()[1])
                if port in avoided:
                    refused.append(probe)  # held until a port is found, so not offered again
                    continue
                if HOLDS_PORTS:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self._held.setdefault(owner, []).append(probe)
                return port
        finally:
            for sock in refused:
                sock.close()

    def reserve(self, owners: list[str], avoid: Iterable[int] = ()) -> list[Ports]:
        """Client, cluster and monitoring ports for each owner, none in ``avoid``, no two
        alike.  Raises ``OSError`` (holding nothing for them) when the kernel has no more."""
        taken = set(avoid)

        def free(owner: str) -> int:
            port = self.claim(owner, avoid=taken)
            taken.add(port)
            return port

        try:
            chosen = [Ports(client=free(o), cluster=free(o), monitor=free(o)) for o in owners]
        except OSError:
            for owner in owners:
                self.release(owner)
            raise
        if not HOLDS_PORTS:  # a held port would keep the node's server from binding it
            for owner in owners:
                self.release(owner)
        return chosen

    def held(self, owner: str) -> bool:
        """Whether ports are still held for ``owner``."""
        return bool(self._held.get(owner))

    def release(self, owner: str) -> None:
        """Let go of ``owner``'s ports (its server listens on them, or it is gone)."""
        for sock in self._held.pop(owner, []):
            sock.close()

    def close(self) -> None:
        """Let go of every port held."""
        _close_all(self._held)


def listening_ports(process: psutil.Process) -> set[int] | None:
    """The TCP ports ``process`` listens on; None when it is not ours to look at."""
    try:
        sockets = process.net_connections(kind="inet")
    except psutil.AccessDenied:
        return None
    except psutil.Error:
        return set()
    return {s.laddr.port for s in sockets if s.status == psutil.CONN_LISTEN}
