"""The fake Hetzner API's servers, booted: a simulated machine per server (morpheus.testing.netns).

:class:`SimulatedCloud` watches a :class:`FakeHetzner`. When one of its servers is running it
boots a machine with the server's addresses (``<prefix>::1`` of its IPv6 /64, its IPv4 if it
has one) and applies the server's user-data the way cloud-init would for what matters here:

- ``bootcmd`` runs as written (Morpheus's writes the node firewall and loads it with ``nft``
  in the machine's namespace: the real rendered rules filter everything below);
- ``write_files`` are written with their permissions and owners; ``ssh_keys`` become the
  machine's host keys (without them sshd gets a generated one, as on a stock image);
- the project SSH keys the server was created with are root's ``authorized_keys`` (what
  Hetzner's own metadata does), and a real OpenSSH sshd serves them;
- instead of ``runcmd`` (the bootstrap installs nats-server from the network and starts it
  with systemd) the venv's nats-server runs with the delivered ``/etc/nats/nats.conf``.

When the server disappears from the fake its machine is shut down. Anything that goes wrong
while booting is kept in ``failures`` and raised by :meth:`check` (the fixture calls it).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml
from fakeapi import FakeHetzner, FakeServer

from morpheus.testing.nats import nats_server_binary
from morpheus.testing.netns import Lab, Machine, call_in
from morpheus.testing.sshd import start_sshd

NATS_CONF = "/etc/nats/nats.conf"
_HOST_KEY_FILES = {
    "ed25519": "/etc/ssh/ssh_host_ed25519_key",
    "ecdsa": "/etc/ssh/ssh_host_ecdsa_key",
    "rsa": "/etc/ssh/ssh_host_rsa_key",
}


def _content(entry: dict[str, Any]) -> bytes:
    raw = entry.get("content", "")
    encoding = entry.get("encoding", "text/plain")
    if encoding in ("gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
        return gzip.decompress(base64.b64decode(raw))
    if encoding in ("b64", "base64"):
        return base64.b64decode(raw)
    return str(raw).encode()


@dataclass
class SimulatedCloud:
    """Boots every running server of ``fake`` in ``lab`` and shuts deleted ones down."""

    fake: FakeHetzner
    lab: Lab
    ssh_port: int = 22
    machines: dict[int, Machine] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    _failed: set[int] = field(default_factory=set)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SimulatedCloud:
        self._thread = threading.Thread(target=self._watch, name="simulated-cloud", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def check(self) -> None:
        if self.failures:
            raise AssertionError("simulated servers failed to boot: " + "; ".join(self.failures))

    def _watch(self) -> None:
        while not self._stopping.wait(0.02):
            servers = self.fake.servers
            for server_id in [i for i in self.machines if i not in servers]:
                self.lab.remove(self.machines.pop(server_id).name)
            for server in servers.values():
                if server.id in self.machines or server.id in self._failed:
                    continue
                if server.status != "running":
                    continue
                try:
                    self.machines[server.id] = self._boot(server)
                except Exception as exc:
                    self._failed.add(server.id)
                    self.failures.append(f"{server.name}: {exc}")
                    self.lab.remove(server.name)

    # -- booting ---------------------------------------------------------------------

    def _boot(self, server: FakeServer) -> Machine:
        ips = self.fake.primary_ips
        ipv6 = []
        if server.ipv6_id is not None:
            network = ipaddress.IPv6Network(ips[server.ipv6_id].ip)
            ipv6.append(ipaddress.IPv6Interface(f"{network[1]}/{network.prefixlen}"))
        ipv4 = [ipaddress.IPv4Address(ips[server.ipv4_id].ip)] if server.ipv4_id else []
        machine = self.lab.machine(server.name, ipv6=ipv6, ipv4=ipv4)
        config = yaml.safe_load(server.user_data or "#cloud-config\n") or {}
        for command in config.get("bootcmd", []):
            machine.run(*(command if isinstance(command, list) else ["sh", "-c", command]))
        for entry in config.get("write_files", []):
            machine.write_file(
                entry["path"],
                _content(entry),
                int(str(entry.get("permissions", "0644")), 8),
                entry.get("owner", "root:root"),
            )
        for kind, path in _HOST_KEY_FILES.items():
            keys = config.get("ssh_keys") or {}
            if f"{kind}_private" in keys:
                machine.write_file(path, keys[f"{kind}_private"].encode(), 0o600)
                machine.write_file(f"{path}.pub", keys[f"{kind}_public"].encode(), 0o644)
        project_keys = self.fake.ssh_keys
        start_sshd(machine, [project_keys[i].public_key for i in server.ssh_keys], self.ssh_port)
        machine.run("test", "-f", NATS_CONF)
        machine.spawn("nats", str(nats_server_binary()), "-c", NATS_CONF)
        return machine

    # -- looking at the nodes ---------------------------------------------------------

    def machine(self, name: str) -> Machine:
        return self.lab.machines[name]

    def monitor(self, name: str, endpoint: str) -> dict[str, Any] | None:
        """``/endpoint`` of node ``name``'s NATS monitoring, asked from the operator's side
        (through the node firewall, as Morpheus asks); None when it does not answer."""
        url = f"http://[{self.machine(name).host}]:8222/{endpoint}"

        def get() -> dict[str, Any] | None:
            try:
                answer = httpx.get(url, timeout=2)
                return dict(answer.json()) if answer.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                return None

        return self.lab.call(get)


@dataclass
class Recorder:
    """A stranger listening on a machine's address (a released address someone else got):
    greets every connection as a NATS route would and records every byte it gets."""

    machine: Machine
    port: int = 6222
    received: list[tuple[str, bytes]] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Recorder:
        def listen() -> socket.socket:
            sock = socket.socket(socket.AF_INET6)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::", self.port))
            sock.listen(16)
            sock.settimeout(0.2)
            return sock

        self._sock = call_in(self.machine.namespace, listen)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, peer = self._sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._record, args=(connection, peer[0]), daemon=True).start()

    def _record(self, connection: socket.socket, peer: str) -> None:
        info = {"server_id": "STRANGER", "server_name": "stranger", "tls_required": False}
        data = b""
        with contextlib.closing(connection):
            connection.settimeout(3)
            try:
                connection.sendall(f"INFO {json.dumps(info)}\r\n".encode())
                while len(data) < 65536 and (chunk := connection.recv(65536)):
                    data += chunk
            except OSError:
                pass
        self.received.append((peer, data))

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)
        self._sock.close()


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    interval = 0.05
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)
    return value
