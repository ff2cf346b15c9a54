"""The fake Hetzner API's servers, booted: a simulated machine per server (morpheus.testing.netns).

:class:`SimulatedCloud` watches a :class:`FakeHetzner`. When one of its servers is running it
boots a machine with the server's addresses (``<prefix>::1`` of its IPv6 /64, its IPv4 if it
has one) and runs the server's first boot from its user-data, with the project SSH keys it was
created with as root's ``authorized_keys`` (what Hetzner's metadata does): see
:func:`morpheus.testing.first_boot.first_boot` for what is real and what stands in. When the
server disappears from the fake its machine is shut down. Anything that goes wrong while
booting is kept in ``failures`` and raised by :meth:`SimulatedCloud.check`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from fakeapi import FakeHetzner, FakeServer
from hetzner_support import ADMIN_SOURCE, FAST_PROVIDER

from morpheus.testing.cli import cli_environment
from morpheus.testing.first_boot import first_boot
from morpheus.testing.netns import Lab, LabError, Machine, call_in

NATS_CONF = "/etc/nats/nats.conf"
NATS_LOG = "/var/log/nats.service.log"
#: The fake's actions take 1/100 of their real time (as in conftest.py).
TIME_SCALE = 0.01
#: Run inside a node with the venv's Python: 100 messages (~7 MB) into stream ORDERS on the
#: node's own client port. They also put nats-server's memory at ~2 % of a 2 GB server (cpx11),
#: so `grow --threshold 1` grows a one-node forest.
WRITE_STREAM = """
import asyncio, nats
async def main():
    client = await nats.connect("nats://127.0.0.1:4222")
    stream = client.jetstream()
    await stream.add_stream(name="ORDERS", subjects=["orders.>"])
    for number in range(100):
        await stream.publish(f"orders.{number}", str(number).encode() * 50_000)
    await client.close()
asyncio.run(main())
"""


def cli_config(fake: FakeHetzner, readiness_timeout: float) -> dict[str, Any]:
    """Morpheus's configuration for the fake and its simulated servers."""
    return {
        "infrastructure": {"admin_sources": [ADMIN_SOURCE]},
        # The simulated image has nats-server (first_boot.py): nothing is downloaded.
        "integration": {"nats_install": False},
        "provisioning": {"readiness_timeout": readiness_timeout, "readiness_interval": 0.2},
        "providers": {"hetzner": {**FAST_PROVIDER, "endpoint": fake.endpoint, "token": fake.token}},
    }


def run_morpheus(lab: Lab, config: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    """``morpheus ARGS`` in a subprocess on the operator's side of the lab, with ``config``
    as config.yaml in the working directory."""
    path = Path("config.yaml")
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return subprocess.run(
        lab.command(sys.executable, "-m", "morpheus", *args),
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_environment(),
        check=False,
    )


@dataclass
class SimulatedCloud:
    """Boots every running server of ``fake`` in ``lab`` and shuts deleted ones down."""

    fake: FakeHetzner
    lab: Lab
    ssh_port: int = 22
    failures: list[str] = field(default_factory=list)
    booted: dict[int, str] = field(default_factory=dict)  # server id: machine name
    _boots: dict[int, threading.Thread] = field(default_factory=dict)
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
        for boot in self._boots.values():
            boot.join(timeout=60)

    def check(self, timeout: float = 180) -> None:
        """Wait until every boot begun is over (cloud-init done: a node can serve NATS before
        its bootstrap ends), then fail if one went wrong."""
        deadline = time.monotonic() + timeout
        for boot in list(self._boots.values()):
            boot.join(max(0.0, deadline - time.monotonic()))
            if boot.is_alive():
                raise AssertionError(f"{boot.name} still booting after {timeout:.0f} s")
        if self.failures:
            raise AssertionError("simulated servers failed to boot: " + "; ".join(self.failures))

    def _watch(self) -> None:
        while not self._stopping.wait(0.02):
            servers = self.fake.servers
            for server_id, boot in list(self._boots.items()):
                if server_id not in servers and not boot.is_alive():
                    del self._boots[server_id]
                    self.booted.pop(server_id, None)
                    self.lab.remove(boot.name)
            for server in servers.values():
                if server.id not in self._boots and server.status == "running":
                    boot = threading.Thread(target=self._boot, args=(server,), name=server.name)
                    self._boots[server.id] = boot
                    boot.start()

    def _boot(self, server: FakeServer) -> None:
        try:
            ips = self.fake.primary_ips
            ipv6 = []
            if server.ipv6_id is not None:
                network = ipaddress.IPv6Network(ips[server.ipv6_id].ip)
                ipv6.append(ipaddress.IPv6Interface(f"{network[1]}/{network.prefixlen}"))
            ipv4 = [ipaddress.IPv4Address(ips[server.ipv4_id].ip)] if server.ipv4_id else []
            machine = self.lab.machine(server.name, ipv6=ipv6, ipv4=ipv4)
            keys = self.fake.ssh_keys
            authorized = [keys[i].public_key for i in server.ssh_keys]
            first_boot(machine, server.user_data or "", authorized, ssh_port=self.ssh_port)
            self.booted[server.id] = server.name
        except (LabError, KeyError, OSError, ValueError) as exc:
            self.failures.append(f"{server.name}: {exc}")

    # -- looking at the nodes ---------------------------------------------------------

    def machine(self, name: str) -> Machine:
        return self.lab.machines[name]

    def nats_log(self, name: str) -> str:
        with contextlib.suppress(LabError, KeyError):
            return self.machine(name).read_file(NATS_LOG).decode(errors="replace")
        return ""

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
            # Recorded before the connection closes: a peer that waits for the close knows.
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
