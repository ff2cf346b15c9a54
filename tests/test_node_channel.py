"""The SSH node channel against real OpenSSH sshd and nats-server in network namespaces.

Each simulated machine (``morpheus.testing.netns``) boots from its rendered user-data
(``morpheus.testing.first_boot``: the node firewall, the files, the host key Morpheus made,
sshd with the node's drop-ins, the real bootstrap); Morpheus connects from the lab's
operator namespace over IPv6, as from an operator's machine.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from ipaddress import IPv6Interface
from typing import Any

import httpx
import pytest

from morpheus.blueprint import (
    NodeAccess,
    NodeBlueprint,
    Peer,
    RouteCredentials,
    RouteTls,
    build_blueprint,
)
from morpheus.errors import ProviderError
from morpheus.models import NodeState
from morpheus.pki import ForestCA, SshKeyPair
from morpheus.provider import NodeHandle
from morpheus.reconfigure import apply_blueprint, apply_blueprints, archive, check_served
from morpheus.remote import (
    Deadlines,
    NodeChannelError,
    NodeCommand,
    NodeEndpoint,
    _network_problem,
    client_tunnel,
    run_commands,
)
from morpheus.render import NODE_PATHS, render_nats_conf, render_user_data
from morpheus.testing.first_boot import first_boot
from morpheus.testing.netns import OPERATOR_V6, Lab, Machine

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass
class Forest:
    """One forest's keys and CA, and the blueprints of its first node."""

    host_key: SshKeyPair
    client_key: SshKeyPair
    ca: ForestCA
    credentials: RouteCredentials

    #: Hetzner style: the ::1 of the node's own /64.
    address: str = "2001:db8:1::1"

    @cached_property
    def tls(self) -> RouteTls:
        """Node 1's route TLS files, issued once as the registry keeps them."""
        return self.ca.issue("forest-1-node-1", [self.address], NOW).route_tls(self.ca)

    def blueprint(self, peers: int, **overrides: object) -> NodeBlueprint:
        """Node 1 with ``peers`` route peers (1: standalone), its SSH access for connecting."""
        others = [f"2001:db8:{i + 1}::1" for i in range(peers)]
        fields: dict[str, object] = {
            "forest_id": "forest-1",
            "run_id": "run-1",
            "node_id": "forest-1-node-1",
            "node_name": "node-1",
            "index": 1,
            "cluster_name": "forest-1",
            "host": self.address,
            "peers": tuple(Peer(host=h) for h in others) if peers > 1 else (),
            "credentials": self.credentials,
            "tls": self.tls,
            "nats": {"version": "2.15.1", "install": False},
            "jetstream": {"max_memory": "64M", "max_file": "256M"},
            "admin_sources": (f"{OPERATOR_V6.ip}/128",),
            "rendered_at": NOW,
            "access": NodeAccess(
                host_key=self.host_key.public,
                host_private_key=self.host_key.private,
                client_key=self.client_key.public,
                client_private_key=self.client_key.private,
            ),
        }
        fields.update(overrides)
        return build_blueprint(**fields)

    def handle(self) -> NodeHandle:
        return NodeHandle(
            provider_id="1",
            node_id="forest-1-node-1",
            forest_id="forest-1",
            run_id="run-1",
            index=1,
            host=self.address,
            addresses=[self.address],
            state=NodeState.RUNNING,
        )


@pytest.fixture
def forest() -> Forest:
    return Forest(
        host_key=SshKeyPair.generate(),
        client_key=SshKeyPair.generate(),
        ca=ForestCA.generate("forest-1", NOW),
        credentials=RouteCredentials.generate(),
    )


def boot(lab: Lab, forest: Forest, blueprint: NodeBlueprint) -> Machine:
    """Node 1 booted from its rendered user-data (``morpheus.testing.first_boot``): the
    firewall, the files, the host key, sshd with no other key, the real bootstrap."""
    machine = lab.machine("node-1", ipv6=[IPv6Interface(f"{forest.address}/64")])
    first_boot(machine, render_user_data(blueprint, now=NOW), authorized_keys=[])
    return machine


@pytest.fixture
def standalone(lab: Lab, forest: Forest) -> Machine:
    """Node 1 of a one-node forest, booted: sshd and a standalone nats-server."""
    return boot(lab, forest, forest.blueprint(1))


def varz(lab: Lab, machine: Machine) -> dict[str, Any]:
    """The machine's /varz as the operator reads it ({} while it does not answer)."""

    def get() -> dict[str, Any]:
        try:
            return dict(httpx.get(f"http://[{machine.host}]:8222/varz", timeout=5).json())
        except httpx.HTTPError:
            return {}

    return lab.call(get)


def status(forest: Forest, key: SshKeyPair | None = None, **deadlines: float) -> NodeCommand:
    endpoint = NodeEndpoint(
        node_id="forest-1-node-1",
        addresses=(forest.address,),
        port=22,
        host_key=(key or forest.host_key).public,
    )
    return NodeCommand(endpoint, "status", forest.client_key.private)


@pytest.mark.slow
def test_pinned_host_key_connects_and_the_helper_reports_nats(
    lab: Lab, forest: Forest, standalone: Machine
) -> None:
    (result,) = lab.call(lambda: run_commands([status(forest)]))
    assert result.error is None, result.error
    report = json.loads(result.stdout)
    assert report["action"] == "unchanged"
    assert report["varz"]["server_name"] == "forest-1-node-1"


@pytest.mark.slow
def test_a_wrong_host_key_is_refused_with_one_line(
    lab: Lab, forest: Forest, standalone: Machine
) -> None:
    (result,) = lab.call(lambda: run_commands([status(forest, key=SshKeyPair.generate())]))
    assert isinstance(result.error, NodeChannelError)
    assert str(result.error) == (
        f"forest-1-node-1: {forest.address} does not show the SSH host key Morpheus pinned "
        "for this node; refusing to connect (another machine may hold the address)"
    )


@pytest.mark.slow
def test_a_key_the_node_does_not_authorize_is_refused_with_one_line(
    lab: Lab, forest: Forest, standalone: Machine
) -> None:
    command = status(forest)
    stranger = NodeCommand(command.endpoint, "status", SshKeyPair.generate().private)
    (result,) = lab.call(lambda: run_commands([stranger]))
    assert isinstance(result.error, NodeChannelError)
    assert str(result.error) == (
        f"forest-1-node-1: {forest.address} refused the forest's SSH key (a node made before "
        "Morpheus could reconfigure nodes has none: replace it)"
    )


@pytest.mark.slow
def test_the_authorized_key_runs_the_helper_only(
    lab: Lab, forest: Forest, standalone: Machine
) -> None:
    command = status(forest)
    shell = NodeCommand(command.endpoint, "cat /etc/shadow", command.client_key)
    (result,) = lab.call(lambda: run_commands([shell]))
    assert isinstance(result.error, NodeChannelError)
    assert str(result.error) == (
        "forest-1-node-1: `cat /etc/shadow` failed: "
        "morpheus-reconfigure: unknown request: use apply or status"
    )


@pytest.mark.slow
def test_a_filtered_port_and_a_closed_port_give_one_line_within_the_deadline(
    lab: Lab, forest: Forest
) -> None:
    # The node's own rendered firewall, admitting SSH from another network only: port 22
    # drops the operator's packets, as a Hetzner node does for a host outside admin_sources.
    blueprint = forest.blueprint(1, admin_sources=("2001:db8:ffff::/64",))
    machine = boot(lab, forest, blueprint)
    assert "SSH" in machine.run("nft", "list", "table", "inet", "morpheus")
    started = time.monotonic()
    (filtered,) = lab.call(lambda: run_commands([status(forest)], deadlines=Deadlines(connect=2)))
    took = time.monotonic() - started
    machine.run("nft", "delete", "table", "inet", "morpheus")
    closed = NodeCommand(
        NodeEndpoint("forest-1-node-1", (forest.address,), 2222, forest.host_key.public),
        "status",
        forest.client_key.private,
    )
    (refused,) = lab.call(lambda: run_commands([closed], deadlines=Deadlines(connect=2)))
    assert str(filtered.error) == (
        f"forest-1-node-1: no SSH answer from {forest.address} port 22 within 2 s "
        "(dropped on the way: is this machine in infrastructure.admin_sources?)"
    )
    # Cut by the 2 s connect deadline: the kernel alone would retry its SYNs for about two
    # minutes; the margin is for a loaded machine.
    assert took < 60
    assert str(refused.error) == (
        f"forest-1-node-1: {forest.address} refused port 2222 "
        "(sshd is not running there, or not yet)"
    )


def test_no_route_names_the_address_family() -> None:
    problem = _network_problem("2001:db8::1", 22, OSError(errno.ENETUNREACH, "unreachable"))
    assert problem == "no route to 2001:db8::1 from this machine (no IPv6 route here?)"


@pytest.mark.slow
def test_apply_reloads_new_routes_atomically_and_nats_serves_them(lab: Lab, forest: Forest) -> None:
    """A clustered node gets a third route: files renamed into place, a reload, not a restart."""
    machine = boot(lab, forest, forest.blueprint(2))
    started = varz(lab, machine)["start"]
    inode = machine.run("stat", "-c", "%i", NODE_PATHS.nats_conf)
    after = forest.blueprint(3)
    outcome = lab.call(lambda: apply_blueprints([(forest.handle(), after)]))
    assert outcome == {"forest-1-node-1": None}
    served = varz(lab, machine)
    assert served["start"] == started  # the same process: reloaded
    assert set(served["cluster"]["urls"]) == {f"[2001:db8:{i}::1]:6222" for i in (1, 2, 3)}
    assert machine.run("stat", "-c", "%i %a %U:%G", NODE_PATHS.nats_conf).split() != [inode]
    assert machine.run("stat", "-c", "%a %U:%G", NODE_PATHS.nats_conf).split() == [
        "640",
        "root:nats",
    ]
    assert machine.read_file(NODE_PATHS.nats_conf).decode() == render_nats_conf(after)
    assert machine.run("find", "/etc/nats", "-name", "*.new") == ""
    # The same blueprint again changes nothing.
    lab.call(lambda: apply_blueprint(forest.handle(), after))
    assert varz(lab, machine)["config_load_time"] == served["config_load_time"]


@pytest.mark.slow
def test_a_standalone_node_joins_a_cluster_by_a_restart_keeping_its_store(
    lab: Lab, forest: Forest, standalone: Machine
) -> None:
    standalone.run("touch", "/var/lib/nats/jetstream/kept")
    started = varz(lab, standalone)["start"]
    lab.call(lambda: apply_blueprint(forest.handle(), forest.blueprint(3)))
    served = varz(lab, standalone)
    assert served["start"] != started  # restarted: a reload cannot add a cluster block
    assert served["cluster"]["tls_verify"] is True
    key = standalone.run("stat", "-c", "%a %U", "/etc/nats/tls/node-key.pem").split()
    assert key == ["600", "nats"]
    assert standalone.run("ls", "/var/lib/nats/jetstream").split().count("kept") == 1


@pytest.mark.slow
def test_nodes_are_changed_in_parallel_and_each_failure_is_its_own_line(
    lab: Lab, forest: Forest, standalone: Machine
) -> None:
    stranger = forest.handle().model_copy(
        update={"node_id": "forest-1-node-9", "host": "2001:db8:1::99", "addresses": []}
    )
    unknown = forest.blueprint(1).model_copy(
        update={"node_id": "forest-1-node-9", "host": "2001:db8:1::99"}
    )
    outcome = lab.call(
        lambda: apply_blueprints(
            [(forest.handle(), forest.blueprint(1)), (stranger, unknown)],
            deadlines=Deadlines(connect=3),
        )
    )
    assert outcome["forest-1-node-1"] is None
    error = str(outcome["forest-1-node-9"])
    assert error.startswith("forest-1-node-9: ") and "\n" not in error


def test_a_node_made_before_host_keys_were_pinned_is_refused_before_connecting(
    forest: Forest,
) -> None:
    outcome = apply_blueprints([(forest.handle(), forest.blueprint(1, access=None))])
    assert str(outcome["forest-1-node-1"]) == (
        "forest-1-node-1: no SSH host key is recorded for this node (it was made before "
        "Morpheus pinned host keys), so it cannot be reconfigured: replace it"
    )


def test_the_served_routes_must_be_the_blueprints(forest: Forest) -> None:
    blueprint = forest.blueprint(3)
    report = {
        "action": "reloaded",
        "changed": ["nats.conf"],
        "varz": {
            "server_name": "forest-1-node-1",
            "cluster": {"urls": ["[2001:db8:1::1]:6222", "[2001:db8::7]:6222"]},
        },
    }
    with pytest.raises(ProviderError, match=r"serves routes to .*2001:db8::7") as caught:
        check_served(blueprint, json.dumps(report))
    assert "\n" not in str(caught.value)


def test_the_archive_holds_the_files_by_the_names_the_helper_knows() -> None:
    import io
    import tarfile

    data = archive({"nats.conf": "a\n", "node-key.pem": "k\n"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == ["nats.conf", "node-key.pem"]
        assert all(member.mode == 0o600 for member in tar.getmembers())


def test_asyncssh_is_not_imported_by_the_cli_or_the_providers() -> None:
    import subprocess
    import sys

    code = (
        "import sys, morpheus.cli, morpheus.reconfigure, morpheus_hetzner.provider, "
        "morpheus_libvirt.provider; print('asyncssh' in sys.modules)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy()
    )
    assert run.stdout.strip() == "False", run.stderr


def _first_bytes(port: int) -> bytes:
    """What a server behind ``port`` on this machine sends first (b"" when it closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.settimeout(10)
        try:
            return connection.recv(64)
        except (ConnectionResetError, TimeoutError):
            return b""


@pytest.mark.slow
def test_the_forest_key_tunnels_to_the_nats_client_port_and_nowhere_else(
    lab: Lab, forest: Forest, standalone: Machine
) -> None:
    """Growth reaches a cloud node's streams through its loopback-only client port."""
    endpoint = status(forest).endpoint

    def through(remote_port: int) -> bytes:
        with client_tunnel(endpoint, forest.client_key.private, remote_port) as port:
            return _first_bytes(port)

    assert lab.call(lambda: through(4222)).startswith(b"INFO {")
    assert lab.call(lambda: through(8222)) == b""  # permitopen: the client port only
