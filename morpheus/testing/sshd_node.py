"""Simulated nodes: a network namespace each, with the real sshd and nats-server of a node.

A :class:`SimulatedNode` is what a booted cloud node looks like from Morpheus's machine: an
IPv6 address (ULA, on a veth pair this helper creates), the real OpenSSH ``sshd`` on port 22
with the host key Morpheus made for it, and, when given a ``nats.conf``, the real nats-server
under its unit's paths.  Its processes run in a mount namespace of their own where ``/etc``,
``/usr/local``, ``/var/lib`` and ``/var/log`` are overlays over this machine's (the writes
land under ``root``, this machine's files are never touched) and ``/run`` is a fresh tmpfs,
so a node's files sit at the paths its user-data names (``/etc/nats/nats.conf``...).

There is no systemd in a namespace: ``systemctl`` is a stand-in (``/usr/local/bin/systemctl``
in the overlay) that does what ``nats.service`` says (start as user nats, reload with HUP,
restart keeping the store).  Everything else is real: sshd's configuration is the machine's
own ``sshd_config`` plus the node's drop-in, the firewall is loaded with the real ``nft``.

Needs root, ``ip``, ``unshare``, ``sshd`` (Debian openssh-server) and overlayfs; else the test
skips, or fails in CI (``scripts/test-tools`` installs what can be installed).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from morpheus.render import NodeFile
from morpheus.testing.tools import missing, require_tool

SSHD = "/usr/sbin/sshd"
#: Overlaid in each node's mount namespace (writes land under the node's ``root``).
OVERLAID = ("/etc", "/usr/local", "/var/lib", "/var/log")

SYSTEMCTL = r"""#!/bin/bash
# systemd's stand-in in a simulated node: what nats.service's ExecStart/ExecReload do.
set -eu
pidfile=/run/nats/nats.pid
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
start() {
  install -d -o nats -g nats /run/nats
  setsid setpriv --reuid nats --regid nats --init-groups -- /usr/local/bin/nats-server \
    -c /etc/nats/nats.conf -P "$pidfile" >>/var/log/nats.log 2>&1 </dev/null &
  for _ in $(seq 100); do running && return 0; sleep 0.1; done
  echo "nats-server did not start" >&2; return 1
}
stop() {
  running || return 0
  local pid; pid=$(cat "$pidfile"); kill "$pid"
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid"
}
verb=$1; shift || true
case "$verb" in
  start) running || start ;;
  stop) stop ;;
  restart) stop; start ;;
  reload) kill -HUP "$(cat "$pidfile")" ;;
  *) ;;
esac
"""


def _require_capabilities() -> None:
    if os.geteuid() != 0:
        missing("simulated nodes need root (network and mount namespaces)")
    for tool in ("ip", "unshare", "nft", "setpriv"):
        require_tool(tool)
    if not Path(SSHD).is_file():
        missing(f"{SSHD} is not installed (Debian package openssh-server)")


@dataclass
class SimulatedNode:
    """One node in its own network and mount namespaces (see the module docstring)."""

    name: str
    root: Path
    address: str
    host_address: str
    init: subprocess.Popen[bytes] | None = None
    files: dict[str, str] = field(default_factory=dict)

    def path(self, node_path: str) -> Path:
        """Where a file the node wrote at ``node_path`` is on this machine (its overlay)."""
        for top in OVERLAID:
            if node_path.startswith(top + "/"):
                return (
                    self.root
                    / top.strip("/").replace("/", "-")
                    / "upper"
                    / node_path[len(top) + 1 :]
                )
        raise ValueError(f"{node_path} is not under an overlaid directory")

    def run(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``command`` inside the node (its network and mount namespaces)."""
        assert self.init is not None
        return subprocess.run(
            ["nsenter", "-t", str(self.init.pid), "-n", "-m", "--", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def monitor_url(self, port: int = 8222) -> str:
        return f"http://[{self.address}]:{port}"

    def wait_port(self, port: int, seconds: float = 30) -> None:
        """Until something accepts on ``port`` of the node, from this machine."""
        deadline = time.monotonic() + seconds
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.address, port), timeout=1),
            ):
                return
            if self.init is not None and self.init.poll() is not None:
                raise AssertionError(f"{self.name} stopped: {self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing on {self.name} port {port}: {self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        logs = [self.root / "init.log", self.path("/var/log/nats.log")]
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in logs if p.is_file())

    def stop(self) -> None:
        pids = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        if self.init is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.init.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def _init_script(node: SimulatedNode, nats_server: Path | None, firewall: str | None) -> str:
    mounts = []
    for top in OVERLAID:
        base = node.root / top.strip("/").replace("/", "-")
        mounts.append(
            f"mount -t overlay overlay -o lowerdir={top},upperdir={base}/upper,"
            f"workdir={base}/work {top}"
        )
    lines = [
        "set -eu",
        *mounts,
        "mount -t tmpfs tmpfs /run",
        "mkdir -p /run/sshd /usr/local/bin /var/lib/nats",
        # Only the key Morpheus made is left, as cloud-init's ssh_deletekeys does.
        "find /etc/ssh -maxdepth 1 -name 'ssh_host_*' ! -name 'ssh_host_ed25519_key*' -delete",
        "id -u nats >/dev/null 2>&1 || useradd --system --user-group --no-create-home nats",
        "install -d -o nats -g nats /var/lib/nats/jetstream",
        "chgrp nats /etc/nats/nats.conf 2>/dev/null || true",
        "chown nats:nats /etc/nats/tls/node-key.pem 2>/dev/null || true",
        "ip link set lo up",
    ]
    if firewall is not None:
        lines.append(f"nft -f {firewall}")
    if nats_server is not None:
        lines.append(f"ln -sf {nats_server} /usr/local/bin/nats-server")
        lines.append("systemctl start nats.service")
    lines += [
        # PAM's session modules expect systemd-logind; the rest is the machine's sshd_config.
        f"exec {SSHD} -D -e -o UsePAM=no -o PidFile=/run/sshd.pid",
    ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def simulated_node(
    workdir: Path,
    files: Mapping[str, str] | list[NodeFile],
    *,
    host_key: tuple[str, str],
    nats_server: Path | None = None,
    firewall: bool = False,
    prefix: str | None = None,
    ready_seconds: float = 60,
) -> Iterator[SimulatedNode]:
    """A node with ``files`` at their node paths, sshd on port 22 with ``host_key`` (private,
    public), and nats-server when ``files`` hold ``/etc/nats/nats.conf`` (``nats_server`` is
    the binary).  ``firewall``: load ``/etc/morpheus/firewall.nft`` from ``files`` too.
    ``prefix`` (from :func:`ula_prefix`): the node is ``<prefix>::2``, this machine ``::1``."""
    _require_capabilities()
    suffix = secrets.token_hex(3)
    name = f"morpheus-{suffix}"
    prefix = prefix or ula_prefix()
    node = SimulatedNode(
        name=name, root=workdir / name, address=f"{prefix}::2", host_address=f"{prefix}::1"
    )
    texts = {f.path: f.content for f in files} if isinstance(files, list) else dict(files)
    node.files = texts
    host, peer = f"mh{suffix}", f"mn{suffix}"
    try:
        _setup_network(node, host, peer)
        for top in OVERLAID:
            base = node.root / top.strip("/").replace("/", "-")
            (base / "upper").mkdir(parents=True)
            (base / "work").mkdir()
        private, public = host_key
        _place(node, "/etc/ssh/ssh_host_ed25519_key", private, 0o600)
        _place(node, "/etc/ssh/ssh_host_ed25519_key.pub", public + "\n", 0o644)
        _place(node, "/usr/local/bin/systemctl", SYSTEMCTL, 0o755)
        for path, text in texts.items():
            _place(node, path, text, 0o755 if "/lib/morpheus/" in path else 0o644)
        if "/etc/nats/tls/node-key.pem" in texts:
            os.chmod(node.path("/etc/nats/tls/node-key.pem"), 0o600)
        if "/etc/nats/nats.conf" in texts:
            os.chmod(node.path("/etc/nats/nats.conf"), 0o640)
        script = _init_script(
            node,
            nats_server if "/etc/nats/nats.conf" in texts else None,
            "/etc/morpheus/firewall.nft" if firewall else None,
        )
        with (node.root / "init.log").open("wb") as log:
            node.init = subprocess.Popen(
                [
                    *("ip", "netns", "exec", name),
                    *("unshare", "--mount", "--propagation", "private"),
                    *("bash", "-c", script),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if not firewall:
            node.wait_port(22, ready_seconds)
        yield node
    finally:
        node.stop()
        subprocess.run(["ip", "link", "del", host], capture_output=True)


def ula_prefix() -> str:
    """A random unique-local /64 (``fdXX:XXXX:XXXX:1``), routed nowhere but on our veth."""
    return f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}:{secrets.token_hex(2)}:1"


def _setup_network(node: SimulatedNode, host: str, peer: str) -> None:
    commands = [
        ["ip", "netns", "add", node.name],
        ["ip", "link", "add", host, "type", "veth", "peer", "name", peer],
        ["ip", "link", "set", peer, "netns", node.name],
        ["ip", "addr", "add", f"{node.host_address}/64", "dev", host, "nodad"],
        ["ip", "link", "set", host, "up"],
        ["ip", "-n", node.name, "addr", "add", f"{node.address}/64", "dev", peer, "nodad"],
        ["ip", "-n", node.name, "link", "set", peer, "up"],
        ["ip", "-n", node.name, "link", "set", "lo", "up"],
    ]
    for command in commands:
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            raise AssertionError(f"{' '.join(command)}: {run.stderr.strip()}")


def _place(node: SimulatedNode, node_path: str, text: str, mode: int) -> None:
    target = node.path(node_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    os.chmod(target, mode)
