"""The test network rule, enforced: from the test host's network namespace, only loopback.

Tests talk to loopback, to network namespaces they create (``morpheus.testing.netns``) and to
VMs on a bridge they create, and to nothing else. :func:`install` wraps the standard socket
calls that put a packet on the wire (``connect`` of a stream socket, ``sendto``/``sendmsg``
with an address) and the name lookup (``getaddrinfo``) so that, in the guarded namespace, a
destination other than loopback is refused *before* anything is sent: the call raises
:class:`NetworkGuardError` (a ``PermissionError``, what a firewall's drop looks like to a
program) and the refusal is written to the report file. The pytest plugin
(``morpheus.testing.fixtures``) installs the guard in every test process and, through the
``sitecustomize`` in ``network_guard_site`` (which it puts on ``PYTHONPATH``), in every Python
process a test starts, and fails the test that caused a refusal.

The guard applies only in the namespace named by ``MORPHEUS_NETWORK_GUARD`` (the one pytest
started in): a thread or process that entered a lab's namespace talks to its machines freely.
A VM test's bridge lives in the host namespace: such tests add their bridge's networks with
:func:`allow`. A UDP ``connect`` sends nothing (it only picks a route) and is allowed.

This module uses the standard library only and is loaded by file path in processes the tests
start (see ``network_guard_site/sitecustomize.py``), so it must not import ``morpheus``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import threading

# Every Python program a test starts loads this module: what only a check needs (ipaddress)
# is imported when a check runs, and typing not at all (mypy knows this constant's name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
    from collections.abc import Callable, Iterable
    from typing import Any

    _Network = ipaddress.IPv4Network | ipaddress.IPv6Network
    _IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The network namespace the guard applies in (``net:[<inode>]``, as /proc names it).
NAMESPACE_VARIABLE = "MORPHEUS_NETWORK_GUARD"
#: Where refusals are reported (one line each), for the test that started the process.
REPORT_VARIABLE = "MORPHEUS_NETWORK_GUARD_REPORT"
#: Networks besides loopback the guard lets through (comma-separated; a VM test's bridge).
ALLOW_VARIABLE = "MORPHEUS_NETWORK_GUARD_ALLOW"
VARIABLES = (NAMESPACE_VARIABLE, REPORT_VARIABLE, ALLOW_VARIABLE)

#: ioctl: a descriptor of the network namespace a socket belongs to (Linux >= 4.9).
_SIOCGSKNS = 0x894C


class NetworkGuardError(PermissionError):
    """A test (or a program it started) tried to reach an address off this machine."""


_refusals: list[str] = []
_lock = threading.Lock()
_installed = False
_hosts_names: set[str] | None = None


def namespace(sock: socket.socket | None = None) -> str:
    """The network namespace of ``sock`` (where its packets go), or of the calling thread (a
    lab's helper threads enter others)."""
    if sock is not None:
        try:
            descriptor = fcntl.ioctl(sock.fileno(), _SIOCGSKNS)
        except OSError:
            pass  # needs CAP_NET_ADMIN: the thread's namespace is the socket's in practice
        else:
            try:
                return os.readlink(f"/proc/self/fd/{descriptor}")
            finally:
                os.close(descriptor)
    try:
        return os.readlink("/proc/thread-self/ns/net")
    except OSError:
        return os.readlink(f"/proc/self/task/{threading.get_native_id()}/ns/net")


def _allowed_networks() -> list[_Network]:
    import ipaddress

    text = os.environ.get(ALLOW_VARIABLE, "")
    return [ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip()]


def allow(networks: Iterable[str]) -> None:
    """Let the guard (here and in processes started from now on) pass ``networks`` too."""
    current = [str(n) for n in _allowed_networks()]
    os.environ[ALLOW_VARIABLE] = ",".join([*current, *(str(n) for n in networks)])


def _local(address: _IpAddress) -> bool:
    import ipaddress

    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified:
        return True
    return any(address in network for network in _allowed_networks())


def _guarded(sock: socket.socket | None = None) -> bool:
    expected = os.environ.get(NAMESPACE_VARIABLE)
    return bool(expected) and namespace(sock) == expected


def _parse(host: object) -> _IpAddress | None:
    import ipaddress

    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return None
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _known_names() -> set[str]:
    """Names /etc/hosts answers (the resolver asks no server for them)."""
    global _hosts_names
    if _hosts_names is None:
        names = {"localhost"}
        try:
            with open("/etc/hosts", encoding="utf-8", errors="replace") as hosts:
                for line in hosts:
                    names.update(n.lower() for n in line.split("#", 1)[0].split()[1:])
        except OSError:
            pass
        _hosts_names = names
    return _hosts_names


def refuse(what: str) -> NetworkGuardError:
    """Record a refusal (in the report file, else in this process) and return the error to
    raise."""
    message = (
        f"network guard: refused {what}: tests talk only to loopback and to network "
        "namespaces they create (README.md, 'Tests')"
    )
    report = os.environ.get(REPORT_VARIABLE)
    try:
        if not report:
            raise OSError("no report file")
        with open(report, "a", encoding="utf-8") as out:
            out.write(f"{message} [pid {os.getpid()}: {' '.join(sys.argv)[:200]}]\n")
    except OSError:
        with _lock:
            _refusals.append(message)
    return NetworkGuardError(errno.EPERM, message)


def check_destination(sock: socket.socket, address: object, what: str) -> None:
    """Raise :class:`NetworkGuardError` if ``sock`` sending to ``address`` would leave this
    machine."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not _guarded(sock):
        return
    host = address[0] if isinstance(address, tuple) and address else address
    parsed = _parse(host)
    if parsed is None:
        check_name(host, what)
        return
    if not _local(parsed):
        port = address[1] if isinstance(address, tuple) and len(address) > 1 else "?"
        raise refuse(f"{what} to {parsed} port {port}")


def check_name(host: object, what: str = "a name lookup") -> None:
    """Raise :class:`NetworkGuardError` if resolving ``host`` would ask a DNS server."""
    if host is None or not _guarded():
        return
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str) or _parse(host) is not None or host == "":
        return
    name = host.rstrip(".").lower()
    if name in _known_names() or name.endswith(".localhost"):
        return
    raise refuse(f"{what} of {host!r} (a DNS query)")


def take_refusals() -> list[str]:
    """The refusals recorded in this process since the last call (and forget them)."""
    with _lock:
        taken = list(_refusals)
        _refusals.clear()
    return taken


def install() -> None:
    """Wrap the socket calls (once per process); the guard acts only where it applies."""
    global _installed
    if _installed:
        return
    _installed = True
    cls = socket.socket
    connect, connect_ex = cls.connect, cls.connect_ex
    sendto, sendmsg = cls.sendto, cls.sendmsg
    getaddrinfo = socket.getaddrinfo

    def _stream(sock: socket.socket) -> bool:
        return sock.type != socket.SOCK_DGRAM

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if _stream(self):
            check_destination(self, address, "a connection")
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        if _stream(self):
            try:
                check_destination(self, address, "a connection")
            except NetworkGuardError:
                return errno.EPERM  # connect_ex reports, as it does a firewall's drop
        return connect_ex(self, address)

    def guarded_sendto(self: socket.socket, data: Any, *args: Any) -> int:
        if args:
            check_destination(self, args[-1], "a datagram")
        return sendto(self, data, *args)

    def guarded_sendmsg(self: socket.socket, buffers: Any, *args: Any, **kwargs: Any) -> int:
        address = kwargs.get("address", args[2] if len(args) > 2 else None)
        if address is not None:
            check_destination(self, address, "a datagram")
        return sendmsg(self, buffers, *args, **kwargs)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        check_name(host)
        return getaddrinfo(host, *args, **kwargs)

    patches: list[tuple[Any, str, Callable[..., Any]]] = [
        (cls, "connect", guarded_connect),
        (cls, "connect_ex", guarded_connect_ex),
        (cls, "sendto", guarded_sendto),
        (cls, "sendmsg", guarded_sendmsg),
        (socket, "getaddrinfo", guarded_getaddrinfo),
    ]
    for owner, name, function in patches:
        setattr(owner, name, function)
