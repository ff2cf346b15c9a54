"""Mutual-TLS routes, proven with real nats-server processes on 127.0.0.1.

A planted forest meshes over verified TLS; a server that knows the route password but holds
no certificate of the forest's CA cannot join; and a route that dials an address the forest
no longer holds (a stale address now answered by a stranger) stops at the TLS handshake and
never sends the password.  The plain-route control shows the recorder would have caught it.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import sqlite3
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from morpheus.blueprint import (
    NatsInstall,
    NodeBlueprint,
    Peer,
    RouteCredentials,
    RouteTls,
    build_blueprint,
)
from morpheus.models import Ports
from morpheus.pki import ForestCA, certificate_names
from morpheus.registry import Registry
from morpheus.render import render_nats_conf
from morpheus.settings import DEFAULT_NATS_VERSION
from morpheus.testing.cli import morpheus
from morpheus.testing.nats import (
    nats_server_binary,
    peers_seen,
    processes_mentioning,
    wait_until,
)

NOW = datetime.now(UTC)


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def plant_medium() -> dict[str, Any]:
    result = morpheus("plant", "local", "medium", "-o", "json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@dataclass
class Servers:
    """nats-servers a test started itself; all killed afterwards."""

    directory: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, blueprint: NodeBlueprint) -> Path:
        """Write the blueprint's nats.conf and TLS files, start nats-server; return its log."""
        if blueprint.tls is not None:
            Path(blueprint.tls_dir).mkdir(parents=True, exist_ok=True)
            files = blueprint.tls_files
            Path(files["ca"]).write_text(blueprint.tls.ca_cert)
            Path(files["cert"]).write_text(blueprint.tls.cert)
            Path(files["key"]).write_text(blueprint.tls.key.get_secret_value())
        conf = self.directory / f"{blueprint.node_name}.conf"
        conf.write_text(render_nats_conf(blueprint))
        log = self.directory / f"{blueprint.node_name}.log"
        with log.open("wb") as output:
            self.started.append(
                subprocess.Popen(
                    [str(nats_server_binary()), "-c", str(conf)],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            )
        return log


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    running = Servers(tmp_path)
    try:
        yield running
    finally:
        for process in running.started:
            process.kill()
        for process in running.started:
            process.wait(timeout=30)


def loopback_node(
    tmp_path: Path,
    name: str,
    *,
    cluster_name: str,
    peers: list[Peer],
    credentials: RouteCredentials,
    tls: RouteTls | None,
    cluster_port: int | None = None,
    host: str = "127.0.0.1",
) -> NodeBlueprint:
    """A node on loopback rendered by the same template every provider's nodes get."""
    port = cluster_port or free_port(host)
    return build_blueprint(
        forest_id="forest-1",
        run_id="run-1",
        node_id=name,
        node_name=name,
        index=9,
        cluster_name=cluster_name,
        host=host,
        ports=Ports(client=free_port(host), cluster=port, monitor=free_port(host)),
        client_listen=host,
        monitor_listen=host,
        cluster_listen=host,
        peers=(Peer(host=host, port=port), *peers),
        credentials=credentials,
        tls=tls,
        store_dir=str(tmp_path / name / "jetstream"),
        tls_dir=str(tmp_path / name / "tls"),
        nats=NatsInstall(version=DEFAULT_NATS_VERSION),
    )


# -- a planted forest --------------------------------------------------------------------------


def test_a_planted_forest_meshes_over_verified_tls(state_dir: Path) -> None:
    planted = plant_medium()
    forest_id = planted["forest"]["id"]
    ids = {node["id"] for node in planted["nodes"]}
    import httpx

    with Registry.in_state_dir(state_dir) as registry:
        ca = registry.forest_ca(forest_id)
        assert ca is not None
        stored = {node_id: registry.node_certificate(node_id) for node_id in ids}
    for node in planted["nodes"]:
        cluster = httpx.get(f"{node['monitor_url']}/varz", timeout=5).json()["cluster"]
        assert (cluster["tls_required"], cluster["tls_verify"]) == (True, True)
        assert peers_seen(node["monitor_url"]) == ids - {node["id"]}
        tls_dir = state_dir / "local" / forest_id / node["id"] / "tls"
        # The certificate names exactly the node's address; the key is the one recorded.
        cert = (tls_dir / "node.pem").read_text()
        assert certificate_names(cert) == ["127.0.0.1"]
        certificate = stored[node["id"]]
        assert certificate is not None and certificate.cert == cert
        assert (tls_dir / "node-key.pem").read_text() == certificate.key.get_secret_value()
        assert (tls_dir / "forest-ca.pem").read_text() == ca.cert
        assert mode(tls_dir) == 0o700
        for path in tls_dir.iterdir():
            assert mode(path) == 0o600, path
    # Anyone else reaching a route port learns nothing: no greeting in the clear (server
    # and cluster name, version), and TLS ends at the handshake without a forest certificate.
    port = planted["nodes"][0]["ports"]["cluster"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        plain.settimeout(2)
        with pytest.raises(TimeoutError):
            plain.recv(4096)
    anyone = ssl.create_default_context()
    anyone.check_hostname, anyone.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"),
        anyone.wrap_socket(raw) as tls,
    ):
        tls.recv(4096)
    # The CA's key stays in the registry: no node holds it.
    ca_key = ca.key.get_secret_value()
    for path in (state_dir / "local").rglob("*"):
        if path.is_file():
            assert ca_key.encode() not in path.read_bytes(), path
    assert mode(state_dir / "registry.sqlite3") == 0o600
    assert morpheus("teardown", forest_id, "--yes").returncode == 0
    with Registry.in_state_dir(state_dir) as registry:
        assert all(registry.node_certificate(node_id) is None for node_id in ids)


def test_the_password_without_a_forest_certificate_does_not_join(
    state_dir: Path, tmp_path: Path, servers: Servers
) -> None:
    planted = plant_medium()
    forest_id = planted["forest"]["id"]
    ids = {node["id"] for node in planted["nodes"]}
    with Registry.in_state_dir(state_dir) as registry:
        credentials = registry.route_credentials(forest_id)
        forest_ca = registry.forest_ca(forest_id)
    assert forest_ca is not None
    forest_routes = [Peer(host="127.0.0.1", port=n["ports"]["cluster"]) for n in planted["nodes"]]
    foreign = ForestCA.generate("stranger", NOW)
    own = foreign.issue("foreign-ca", ["127.0.0.1"], NOW)
    intruders = {
        # Right password, right cluster name, plain routes.
        "plain": None,
        # Right password, trusting the forest's CA (its certificate is public), with a
        # certificate for its own address from a CA of its own.
        "foreign-ca": RouteTls(ca_cert=forest_ca.cert, cert=own.cert, key=own.key),
    }
    started = {
        name: loopback_node(
            tmp_path,
            name,
            cluster_name=forest_id,
            peers=forest_routes,
            credentials=credentials,
            tls=tls,
        )
        for name, tls in intruders.items()
    }
    for blueprint in started.values():
        servers.start(blueprint)
    logs = [state_dir / "local" / forest_id / node["id"] / "nats.log" for node in planted["nodes"]]

    def refusals() -> dict[str, bool]:
        text = "".join(log.read_text(errors="replace") for log in logs)
        return {
            "plain": "TLS route handshake error: tls: first record does not look like a TLS"
            in text,
            # Go's TLS client offers no certificate the forest's CA did not sign.
            "foreign-ca": "TLS route handshake error: tls: client didn't provide a certificate"
            in text
            or "x509: certificate signed by unknown authority (CN=foreign-ca" in text,
        }

    wait_until(lambda: all(refusals().values()), what="the forest refusing both intruders")
    for blueprint in started.values():
        monitor = f"http://127.0.0.1:{blueprint.ports.monitor}"
        wait_until(lambda m=monitor: peers_seen(m) is not None, what="the intruder's monitor")
        assert peers_seen(monitor) == set()
    for node in planted["nodes"]:
        assert peers_seen(node["monitor_url"]) == ids - {node["id"]}


def test_ipv6_routes_check_the_dialled_address_against_the_certificate(
    tmp_path: Path, servers: Servers
) -> None:
    """Cloud nodes route over IPv6: the certificate must name the address dialled."""
    ca = ForestCA.generate("forest-1", NOW)
    credentials = RouteCredentials.generate()
    ports = {name: free_port("::1") for name in ("node-1", "node-2", "elsewhere")}
    nodes = {}
    for name, names in (("node-1", ["::1"]), ("node-2", ["::1"]), ("elsewhere", ["2001:db8::3"])):
        # "elsewhere" holds a certificate of this forest, but for another address: the
        # forest's former node whose address it now answers on, say.  Its one other route
        # leads nowhere (a lone route to itself would leave it without a cluster port).
        others = (
            [Peer(host="::1", port=free_port("::1"))]
            if name == "elsewhere"
            else [Peer(host="::1", port=p) for p in ports.values()]
        )
        nodes[name] = loopback_node(
            tmp_path,
            name,
            cluster_name="forest-1",
            peers=[p for p in others if p.port != ports[name]],
            credentials=credentials,
            tls=ca.issue(name, names, NOW).route_tls(ca),
            cluster_port=ports[name],
            host="::1",
        )
    logs = {name: servers.start(blueprint) for name, blueprint in nodes.items()}
    monitor = {name: f"http://[::1]:{bp.ports.monitor}" for name, bp in nodes.items()}
    wait_until(
        lambda: (
            peers_seen(monitor["node-1"]) == {"node-2"}
            and peers_seen(monitor["node-2"]) == {"node-1"}
        ),
        what="node-1 and node-2 meshing over IPv6 TLS",
    )
    wait_until(
        lambda: (
            "x509: certificate is valid for 2001:db8::3, not ::1"
            in logs["node-1"].read_text(errors="replace")
        ),
        what="node-1 refusing the certificate that names another address",
    )
    assert peers_seen(monitor["elsewhere"]) == set()


# -- a route to a stale address -----------------------------------------------------------------


@dataclass
class Recorder:
    """A stranger listening where a forest node used to be: records every byte it gets."""

    tls: ssl.SSLContext | None = None
    received: list[bytes] = field(default_factory=list)
    handshake_errors: list[str] = field(default_factory=list)
    sock: socket.socket = field(default_factory=socket.socket)

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.sock.accept()
            except TimeoutError:
                continue
            with closing(connection):
                self._record(connection)

    def _record(self, connection: socket.socket) -> None:
        connection.settimeout(5)
        if self.tls is not None:
            try:
                connection = self.tls.wrap_socket(connection, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.handshake_errors.append(str(exc))
                return
        # Invite a CONNECT the way a nats-server that got the address would.
        info = {"server_id": "STRANGER", "server_name": "stranger", "cluster": "forest-1"}
        data = b""
        try:
            connection.sendall(f"INFO {json.dumps(info)}\r\n".encode())
            while chunk := connection.recv(65536):
                data += chunk
        except OSError:
            pass
        self.received.append(data)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def recorders(tmp_path: Path) -> Iterator[tuple[Recorder, Recorder]]:
    stranger_ca = ForestCA.generate("stranger", NOW)
    certificate = stranger_ca.issue("stranger", ["127.0.0.1"], NOW)
    (tmp_path / "stranger.pem").write_text(certificate.cert + stranger_ca.cert)
    (tmp_path / "stranger-key.pem").write_text(certificate.key.get_secret_value())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "stranger.pem", tmp_path / "stranger-key.pem")
    plain, tls = Recorder(), Recorder(tls=context)
    try:
        yield plain, tls
    finally:
        plain.close()
        tls.close()


@pytest.mark.parametrize("routes", ["tls", "plain"])
def test_a_route_to_a_stale_address_sends_no_password(
    routes: str, recorders: tuple[Recorder, Recorder], servers: Servers, tmp_path: Path
) -> None:
    plain, tls = recorders
    password = secrets.token_urlsafe(32)
    credentials = RouteCredentials(username="morpheus-route", password=SecretStr(password))
    ca = ForestCA.generate("forest-1", NOW)
    node = loopback_node(
        tmp_path,
        "node-1",
        cluster_name="forest-1",
        # The forest's old addresses, now answered by strangers.
        peers=[Peer(host="127.0.0.1", port=plain.port), Peer(host="127.0.0.1", port=tls.port)],
        credentials=credentials,
        tls=ca.issue("node-1", ["127.0.0.1"], NOW).route_tls(ca) if routes == "tls" else None,
    )
    servers.start(node)
    if routes == "plain":
        # The control (routes before this change): the stranger gets the password.
        wait_until(
            lambda: any(password.encode() in data for data in plain.received),
            what="the plain route's CONNECT",
        )
        assert any(b"CONNECT" in data for data in plain.received)
        return
    wait_until(lambda: plain.received and tls.handshake_errors, what="both strangers being dialled")
    # The plain stranger got a TLS ClientHello and nothing readable; the TLS stranger's
    # certificate was refused by the node before any route protocol.
    for data in plain.received:
        assert data[:1] == b"\x16", data[:40]  # a TLS handshake record
        assert password.encode() not in data and b"CONNECT" not in data
    assert tls.received == []
    assert os.path.exists(node.tls_files["key"])


# -- rotate ----------------------------------------------------------------------------------------


@dataclass
class Publisher:
    """Publishes to an R3 stream the whole time a rotation runs.

    A client whose own server restarts reconnects to another, or to the restarted one before
    it serves JetStream again ("no responders"), so each message is retried, under its own
    id (no duplicates), until acknowledged; ``longest`` is the longest any message waited.
    Losing quorum would stall writes for as long as two nodes are away.
    """

    client_urls: list[str]
    acked: int = 0
    longest: float = 0.0
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        import nats

        connection = await nats.connect(self.client_urls, max_reconnect_attempts=-1)
        js = connection.jetstream()
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                while True:
                    try:
                        await js.publish(
                            "rotate.tick",
                            b"tick",
                            timeout=2,
                            headers={"Nats-Msg-Id": str(self.acked)},
                        )
                        break
                    except Exception as exc:  # every failure is retried, then counted
                        if time.monotonic() - started > 20:
                            self.failures.append(repr(exc))
                            return
                        await asyncio.sleep(0.1)
                self.longest = max(self.longest, time.monotonic() - started)
                self.acked += 1
                await asyncio.sleep(0.05)
        finally:
            await connection.close()


async def _add_stream(client_urls: list[str]) -> bool:
    import nats

    connection = await nats.connect(client_urls)
    try:
        await connection.jetstream().add_stream(name="TICKS", subjects=["rotate.>"], num_replicas=3)
        return True
    except nats.errors.TimeoutError:
        return False  # a just-planted cluster may still be electing
    finally:
        await connection.close()


async def _stream_messages(client_urls: list[str]) -> int:
    import nats

    connection = await nats.connect(client_urls)
    try:
        return int((await connection.jetstream().stream_info("TICKS")).state.messages)
    finally:
        await connection.close()


def test_rotate_replaces_password_and_certificates_one_node_at_a_time(
    state_dir: Path, tmp_path: Path, servers: Servers
) -> None:
    planted = plant_medium()
    forest_id = planted["forest"]["id"]
    ids = {node["id"] for node in planted["nodes"]}
    clients = [f"nats://127.0.0.1:{node['ports']['client']}" for node in planted["nodes"]]
    node_dirs = [state_dir / "local" / forest_id / node["id"] for node in planted["nodes"]]
    with Registry.in_state_dir(state_dir) as registry:
        old = registry.route_credentials(forest_id)
        ca = registry.forest_ca(forest_id)
    assert ca is not None
    old_certs = [(d / "tls/node.pem").read_text() for d in node_dirs]
    wait_until(lambda: asyncio.run(_add_stream(clients)), what="an R3 stream")

    publisher = Publisher(clients)
    publisher.thread.start()
    try:
        wait_until(lambda: publisher.acked >= 5, what="publishing before the rotation")
        rotated = morpheus("rotate", forest_id, "-o", "json")
        acked_during = publisher.acked
    finally:
        publisher.stopping.set()
        publisher.thread.join(timeout=30)
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["nodes"] == ["node-1", "node-2", "node-3"]
    # JetStream kept serving: every publish during the rotation was acknowledged.
    assert publisher.failures == []
    print(f"longest wait for a publish during the rotation: {publisher.longest:.2f} s")
    assert acked_during > 5
    assert asyncio.run(_stream_messages(clients)) == publisher.acked

    with Registry.in_state_dir(state_dir) as registry:
        new = registry.route_credentials(forest_id)
        assert registry.forest_ca(forest_id) == ca  # the CA is kept
    new_password = new.password.get_secret_value()
    assert new_password != old.password.get_secret_value()
    for node_dir, old_cert in zip(node_dirs, old_certs, strict=True):
        conf = (node_dir / "nats.conf").read_text()
        assert new_password in conf and old.password.get_secret_value() not in conf
        assert "authorization {" in conf  # the password is required again
        cert = (node_dir / "tls/node.pem").read_text()
        assert cert != old_cert and certificate_names(cert) == ["127.0.0.1"]
    for node in planted["nodes"]:
        assert peers_seen(node["monitor_url"]) == ids - {node["id"]}
    events = [
        e["kind"] for e in json.loads(morpheus("status", forest_id, "-o", "json").stdout)["events"]
    ]
    assert events[-3:] == ["rotating", "rotated", "converged"]

    # A server holding a certificate of the forest: the old password no longer joins, the new
    # one does.
    routes = [Peer(host="127.0.0.1", port=n["ports"]["cluster"]) for n in planted["nodes"]]
    insiders = {}
    for name, credentials in (("old-password", old), ("new-password", new)):
        insiders[name] = loopback_node(
            tmp_path,
            name,
            cluster_name=forest_id,
            peers=routes,
            credentials=credentials,
            tls=ca.issue(name, ["127.0.0.1"], NOW).route_tls(ca),
        )
        servers.start(insiders[name])
    monitor = {name: f"http://127.0.0.1:{bp.ports.monitor}" for name, bp in insiders.items()}
    wait_until(lambda: peers_seen(monitor["new-password"]) == ids, what="the new password joining")
    logs = "".join((d / "nats.log").read_text(errors="replace") for d in node_dirs)
    assert "authorization violation" in logs.lower() or "authentication error" in logs.lower()
    assert peers_seen(monitor["old-password"]) in (set(), {"new-password"})
    for node in planted["nodes"]:
        assert "old-password" not in (peers_seen(node["monitor_url"]) or set())


def test_rotate_refuses_what_it_cannot_rotate_safely(state_dir: Path) -> None:
    planted = plant_medium()
    forest_id = planted["forest"]["id"]
    confs = sorted(state_dir.glob(f"local/{forest_id}/*/nats.conf"))
    before = [conf.read_text() for conf in confs]

    def rotate() -> subprocess.CompletedProcess[str]:
        return morpheus("rotate", forest_id)

    # A node down: rotating would take a second one away and lose the quorum.
    node_dir = state_dir / "local" / forest_id / planted["nodes"][2]["id"]
    for pid in processes_mentioning(str(node_dir)):
        os.kill(pid, 9)
    unhealthy = rotate()
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        db.execute("UPDATE route_credentials SET ca_cert = NULL, ca_key = NULL")
    legacy = rotate()
    assert unhealthy.returncode == 1
    assert f"{forest_id} is not healthy" in unhealthy.stderr
    assert "run `morpheus reconcile` first" in unhealthy.stderr
    assert legacy.returncode == 1
    assert "has no route CA" in legacy.stderr
    for result in (unhealthy, legacy):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert [conf.read_text() for conf in confs] == before  # nothing was changed
