"""Simulated machines: one network namespace each, with a real sshd and a real nats-server.

A :class:`Lab` is one test's private internet. Its *operator* namespace is where Morpheus runs
(and the fake cloud API listens) and it routes between the machines; every :class:`Machine`
is a namespace of its own, joined to the operator by a veth pair, with its addresses on its
``eth0``. A machine also has a mount namespace of its own in which ``/etc``, ``/var``,
``/root`` and ``/usr/local`` are overlays over this host's and ``/run`` is a fresh tmpfs, so
a node's files sit at the paths its user-data names and nothing it writes reaches the host.

Only namespaces the lab created are touched (named ``msim-<pid>-<n>``): their veths and routes
go with them, and the processes in them are ended by id (``ip netns pids``). A lab left by a
test process that died is removed by the next lab this machine opens.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from morpheus.testing.tools import missing

T = TypeVar("T")

PREFIX = "msim-"
_OURS = re.compile(rf"^{PREFIX}(\d+)-\d+$")
_CLONE_NEWNET = 0x40000000
#: The operator's addresses: inside the test forests' admin sources (documentation ranges).
OPERATOR_V6 = ipaddress.IPv6Interface("2001:db8:ad::1/128")
OPERATOR_V4 = ipaddress.IPv4Interface("198.51.100.1/32")
#: The operator's end of every machine's link, the machine's default gateway.
_GATEWAY_V6 = "fe80::1"
_GATEWAY_V4 = "169.254.0.1"
#: The parts of the file system a machine sees as its own (overlays over the host's).
_OWN_DIRECTORIES = ("/etc", "/var", "/root", "/usr/local")
SSHD = "/usr/sbin/sshd"  # what morpheus.testing.sshd runs


class LabError(RuntimeError):
    """A namespace, link or process of the lab could not be set up."""


def require_lab() -> None:
    """Skip (locally) or fail (CI) unless this process can build simulated machines."""
    if os.geteuid() != 0:
        missing("simulated nodes need root (network namespaces)")
    for tool in ("ip", "nsenter", "unshare", "nft"):
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed (simulated nodes need it)")
    if not os.access(SSHD, os.X_OK):
        missing(f"OpenSSH's sshd is not installed ({SSHD})")


def run(*command: str, stdin: bytes | None = None, timeout: float = 30) -> str:
    """Run ``command``; its stdout, or ``LabError`` with its stderr."""
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(command)} did not finish within {timeout} s") from exc
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).decode(errors="replace").strip()[-4000:]
        raise LabError(f"{' '.join(command)[:200]} failed ({done.returncode}): {reason}")
    return done.stdout.decode(errors="replace")


def call_in(namespace: str, function: Callable[[], T], timeout: float = 60) -> T:
    """``function()`` on a thread that entered network namespace ``namespace`` first.

    Sockets it opens (a listening one keeps serving from any thread) belong to that namespace.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            descriptor = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                if libc.setns(descriptor, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {namespace}")
            finally:
                os.close(descriptor)
            outcome.append(function())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"in-{namespace}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise LabError(f"a call in {namespace} did not finish within {timeout} s")
    if failure:
        raise failure[0]
    return outcome[0]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _end_processes(namespace: str) -> None:
    """SIGKILL every process in ``namespace`` (all started by the lab) and wait for them."""
    deadline = time.monotonic() + 20
    while True:
        try:
            pids = [int(p) for p in run("ip", "netns", "pids", namespace).split()]
        except LabError:
            return  # the namespace is gone
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise LabError(f"processes {pids} in {namespace} outlived SIGKILL for 20 s")
        time.sleep(0.05)


def delete_namespace(namespace: str) -> None:
    _end_processes(namespace)
    with contextlib.suppress(LabError):
        run("ip", "netns", "delete", namespace)


def namespaces() -> list[str]:
    return [line.split()[0] for line in run("ip", "netns", "list").splitlines() if line.strip()]


def sweep_abandoned() -> None:
    """Remove the labs of test processes that died without closing them."""
    for name in namespaces():
        match = _OURS.match(name)
        if match and not _pid_alive(int(match.group(1))):
            delete_namespace(name)


@dataclass
class Machine:
    """A simulated machine: its namespaces, its root overlay and the processes it runs."""

    lab: Lab
    name: str
    namespace: str
    link: str
    directory: Path
    ipv6: tuple[ipaddress.IPv6Interface, ...]
    ipv4: tuple[ipaddress.IPv4Address, ...]
    holder: subprocess.Popen[bytes] | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def host(self) -> str:
        """The address others reach it at (its first IPv6, else its IPv4)."""
        return str(self.ipv6[0].ip) if self.ipv6 else str(self.ipv4[0])

    def boot(self) -> None:
        """Namespace, link, addresses, routes; then the mount namespace and its overlays."""
        ns, op = self.namespace, self.lab.operator
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", op, "link", "add", self.link, "type", "veth", "peer", "eth0", "netns", ns)
        run("ip", "-n", op, "link", "set", self.link, "up")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", op, "addr", "add", f"{_GATEWAY_V6}/64", "dev", self.link, "nodad")
        for interface in self.ipv6:
            run("ip", "-n", ns, "addr", "add", str(interface), "dev", "eth0", "nodad")
            run("ip", "-n", op, "-6", "route", "add", str(interface.network), "dev", self.link)
        run("ip", "-n", ns, "-6", "route", "add", "default", "via", _GATEWAY_V6, "dev", "eth0")
        if self.ipv4:
            run("ip", "-n", op, "addr", "add", f"{_GATEWAY_V4}/32", "dev", self.link)
            run("ip", "-n", ns, "route", "add", _GATEWAY_V4, "dev", "eth0")
            run("ip", "-n", ns, "route", "add", "default", "via", _GATEWAY_V4)
        for address in self.ipv4:
            run("ip", "-n", ns, "addr", "add", f"{address}/32", "dev", "eth0")
            run("ip", "-n", op, "route", "add", f"{address}/32", "dev", self.link)
        self._hold_mounts()

    def _hold_mounts(self) -> None:
        mounts = ["set -e"]
        for directory in _OWN_DIRECTORIES:
            upper = self.directory / "root" / directory.strip("/")
            work = self.directory / "work" / directory.strip("/")
            upper.mkdir(parents=True)
            work.mkdir(parents=True)
            mounts.append(
                f"mount -t overlay overlay -o lowerdir={directory},upperdir={upper},"
                f"workdir={work} {directory}"
            )
        mounts += [
            # A fresh image has no host keys (cloud-init writes or makes them): never serve
            # this host's own.
            "rm -f /etc/ssh/ssh_host_*",
            "mount -t tmpfs -o mode=0755 tmpfs /run",
            "echo ready",
            "exec sleep infinity",
        ]
        self.holder = subprocess.Popen(
            [
                "nsenter", f"--net=/run/netns/{self.namespace}", "--",
                "unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", "\n".join(mounts),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self.holder.stdout is not None
        line = _read_line(self.holder.stdout, timeout=30)
        if line != b"ready\n":
            self.holder.kill()
            error = self.holder.communicate(timeout=10)[1].decode(errors="replace")
            raise LabError(f"{self.name}: the mount namespace failed: {error.strip()}")

    def command(self, *command: str) -> list[str]:
        """``command`` as run inside the machine (its network and its file system)."""
        assert self.holder is not None, "boot() first"
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--", *command]

    def run(self, *command: str, stdin: bytes | None = None, timeout: float = 30) -> str:
        return run(*self.command(*command), stdin=stdin, timeout=timeout)

    def write_file(self, path: str, content: bytes, mode: int, owner: str = "root:root") -> None:
        """Write ``path`` inside the machine as cloud-init's ``write_files`` would."""
        script = 'mkdir -p "$(dirname "$1")" && cat >"$1" && chmod "$2" "$1" && chown "$3" "$1"'
        self.run("sh", "-c", script, "write", path, f"{mode:o}", owner, stdin=content)

    def read_file(self, path: str) -> bytes:
        return run(*self.command("cat", path)).encode()

    def spawn(self, name: str, *command: str) -> subprocess.Popen[bytes]:
        """Start a long-running process in the machine; its output goes to ``<name>.log``."""
        log = self.directory / f"{name}.log"
        with log.open("ab") as output:
            process = subprocess.Popen(
                self.command(*command), stdout=output, stderr=subprocess.STDOUT
            )
        self.processes[name] = process
        self.logs[name] = log
        return process

    def log(self, name: str) -> str:
        path = self.logs.get(name)
        return path.read_text(errors="replace") if path and path.exists() else ""

    def wait_log(self, name: str, text: str, timeout: float = 30) -> None:
        """Wait until process ``name`` wrote ``text`` (or fail, with its log, if it ended)."""
        deadline = time.monotonic() + timeout
        while text not in self.log(name):
            process = self.processes[name]
            if process.poll() is not None:
                raise LabError(
                    f"{self.name}: {name} exited ({process.returncode}): {self.log(name)}"
                )
            if time.monotonic() > deadline:
                raise LabError(f"{self.name}: {name} did not say {text!r} within {timeout} s")
            time.sleep(0.05)

    def stop_process(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=30)

    def shut_down(self) -> None:
        """End every process in the machine, then remove its namespace (and so its link)."""
        delete_namespace(self.namespace)
        for process in [*self.processes.values(), *([self.holder] if self.holder else [])]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.kill()
                process.wait(timeout=30)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


def _read_line(stream: IO[bytes], timeout: float) -> bytes:
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else b""


class Lab:
    """One test's private network of simulated machines; ``close()`` leaves nothing behind."""

    _counter = 0
    _counter_lock = threading.Lock()

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.operator = self._new_name()
        self.machines: dict[str, Machine] = {}
        self.created: list[str] = [self.operator]
        self._links = 0
        self._lock = threading.Lock()

    @classmethod
    def _new_name(cls) -> str:
        with cls._counter_lock:
            cls._counter += 1
            return f"{PREFIX}{os.getpid()}-{cls._counter}"

    def open(self) -> Lab:
        """The operator namespace: loopback, forwarding, the operator's own addresses."""
        sweep_abandoned()
        op = self.operator
        run("ip", "netns", "add", op)
        try:
            run("ip", "-n", op, "link", "set", "lo", "up")
            for setting in ("net.ipv6.conf.all.forwarding=1", "net.ipv4.ip_forward=1"):
                run("ip", "netns", "exec", op, "sysctl", "-q", "-w", setting)
            run("ip", "-n", op, "addr", "add", str(OPERATOR_V6), "dev", "lo", "nodad")
            run("ip", "-n", op, "addr", "add", str(OPERATOR_V4), "dev", "lo")
        except BaseException:
            self.close()
            raise
        return self

    def machine(
        self,
        name: str,
        ipv6: Sequence[ipaddress.IPv6Interface] = (),
        ipv4: Sequence[ipaddress.IPv4Address] = (),
    ) -> Machine:
        """Boot a machine with these addresses on its ``eth0``."""
        with self._lock:
            if name in self.machines:
                raise LabError(f"there is already a machine {name}")
            self._links += 1
            machine = Machine(
                lab=self,
                name=name,
                namespace=self._new_name(),
                link=f"m{self._links}",
                directory=self.directory / name,
                ipv6=tuple(ipv6),
                ipv4=tuple(ipv4),
            )
            self.machines[name] = machine
            self.created.append(machine.namespace)
        machine.directory.mkdir(parents=True)
        try:
            machine.boot()
        except BaseException:
            self.remove(name)
            raise
        return machine

    def remove(self, name: str) -> None:
        with self._lock:
            machine = self.machines.pop(name, None)
        if machine is not None:
            machine.shut_down()

    def command(self, *command: str) -> list[str]:
        """``command`` as run on the operator's side (Morpheus's machine)."""
        return ["nsenter", f"--net=/run/netns/{self.operator}", "--", *command]

    def call(self, function: Callable[[], T], timeout: float = 60) -> T:
        """``function()`` on a thread in the operator namespace (see :func:`call_in`)."""
        return call_in(self.operator, function, timeout)

    def __enter__(self) -> Lab:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Shut every machine down and remove the operator namespace; check none is left."""
        for name in list(self.machines):
            self.remove(name)
        delete_namespace(self.operator)
        if leaked := sorted(set(namespaces()) & set(self.created)):
            raise LabError(f"namespaces left behind: {leaked}")
