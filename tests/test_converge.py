"""Forests that converge: after a move or a lost node, every node names exactly the forest.

Real nats-server processes (the local provider), each node on a loopback address of its own
so that a node can *move*, as a cloud node does when its location has no capacity and it is
created in another one with another address.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from morpheus_local.provider import LocalProvider, LocalSettings

from morpheus.blueprint import NodeBlueprint, Peer, RouteCredentials
from morpheus.errors import ProviderError
from morpheus.provider import NodeHandle, Reservation
from morpheus.registry import Registry
from morpheus.services import Context, no_progress
from morpheus.services.converge import Convergence, converge, record_convergence
from morpheus.services.convergence_events import nodes_behind
from morpheus.services.plant import PlantPlan, PlantRequest, plant
from morpheus.services.reconcile import preview, reconcile
from morpheus.services.status import forest_status
from morpheus.services.teardown import teardown
from morpheus.settings import Settings
from morpheus.testing.nats import healthz_ok, peers_seen
from morpheus.waiting import poll_until

#: A loopback network no other test uses: node N is first at .1.N, and moves to .2.N.
FIRST, MOVED = "127.81.1.", "127.81.2."


@pytest.fixture
def context(state_dir: Path) -> Iterator[Context]:
    registry = Registry.in_state_dir(state_dir)
    yield Context(settings=Settings(), state_dir=state_dir, registry=registry)
    registry.close()


class Moving(LocalProvider):
    """Local nodes at loopback addresses of their own; every node is created elsewhere than
    reserved (a location fallback), with its own blueprint rewritten as a cloud provider
    does it, and the blueprints of the others left as rendered."""

    def reserve_addresses(
        self, forest_id: str, run_id: str, node_ids: list[str]
    ) -> list[Reservation]:
        reserved = super().reserve_addresses(forest_id, run_id, node_ids)
        return [
            r.model_copy(update={"host": f"{FIRST}{i}", "addresses": [f"{FIRST}{i}"]})
            for i, r in enumerate(reserved, start=1)
        ]

    def blueprint_fields(self, reservation: Reservation) -> dict[str, object]:
        host = reservation.host
        return {
            **super().blueprint_fields(reservation),
            "client_listen": host,
            "monitor_listen": host,
            "cluster_listen": host,
        }

    def create_node(self, blueprint: NodeBlueprint) -> NodeHandle:
        new = blueprint.host.replace(FIRST, MOVED)
        peers = tuple(
            Peer(host=new, port=p.port) if p.host == blueprint.host else p for p in blueprint.peers
        )
        moved = blueprint.model_copy(
            update={
                "host": new,
                "peers": peers,
                "client_listen": new,
                "monitor_listen": new,
                "cluster_listen": new,
            }
        )
        return super().create_node(moved).model_copy(update={"addresses": [new]})

    def wait_running(self, handle: NodeHandle, deadline: float) -> NodeHandle:
        def listening() -> NodeHandle | None:
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex((handle.host or "", handle.ports.monitor)) == 0:
                    return handle
            return None

        return poll_until(
            listening,
            deadline=deadline,
            interval=0.05,
            timeout_error=lambda: ProviderError(f"{handle.node_id} did not listen in time"),
        )


class Stranger:
    """Whoever got a released address: listens on it, answers like a NATS server and keeps
    every byte it is sent."""

    def __init__(self, host: str, port: int) -> None:
        self.received = bytearray()
        self.connections = 0
        self._server = socket.create_server((host, port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(0.5)
                conn.sendall(b'INFO {"server_id":"stranger","auth_required":true}\r\n')
                try:
                    while data := conn.recv(4096):
                        self.received.extend(data)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()


def route_hosts(conf: str) -> set[str]:
    return set(re.findall(r'"nats-route://[^@"]*@?([0-9.]+):[0-9]+"', conf))


def test_plant_where_every_node_moved_converges_to_the_final_addresses(
    context: Context, state_dir: Path
) -> None:
    """Failure 2 and 3 of issue 12: every node is created elsewhere than reserved; the
    nodes rendered before the others moved are converged to the final addresses before the
    wait, so the forest meshes and no node keeps a route to a released address, where a
    stranger listens."""
    context.settings.provisioning.readiness_timeout = 60  # unconverged, it never meshes
    provider = Moving(LocalSettings(), state_dir / "local")
    reserved = provider.reserve_addresses("probe", "run-probe", ["a", "b", "c"])
    strangers = [Stranger(f"{FIRST}{i}", r.ports.cluster) for i, r in enumerate(reserved, 1)]

    class Reserving(Moving):
        """Hands out exactly the addresses the strangers wait at."""

        def reserve_addresses(
            self, forest_id: str, run_id: str, node_ids: list[str]
        ) -> list[Reservation]:
            return [
                r.model_copy(update={"forest_id": forest_id, "node_id": node_id})
                for r, node_id in zip(reserved, node_ids, strict=True)
            ]

    try:
        request = PlantRequest(target="local", nodes=3)
        planted = plant(
            context,
            PlantPlan(Reserving(LocalSettings(), state_dir / "local"), "custom", 3, []),
            request,
            no_progress,
        )
        nodes = context.registry.nodes(planted.forest.id)
        hosts = {node.host for node in nodes}
        assert hosts == {f"{MOVED}{i}" for i in (1, 2, 3)}
        ids = {node.id for node in nodes}
        for node in nodes:
            conf = (state_dir / "local" / planted.forest.id / node.id / "nats.conf").read_text()
            assert route_hosts(conf) == hosts, conf
            assert node.monitor_url is not None and healthz_ok(node.monitor_url)
            assert peers_seen(node.monitor_url) == ids - {node.id}
        assert nodes_behind(context, planted.forest.id, nodes) == []
        # Routes are TLS first: whatever a stale route sent the strangers, never the password.
        password = context.registry.route_credentials(planted.forest.id).password
        for stranger in strangers:
            assert password.get_secret_value().encode() not in stranger.received
        teardown(context, planted.forest.id, no_progress)
    finally:
        for stranger in strangers:
            stranger.close()


class Unreachable(LocalProvider):
    """Node 2 cannot be reached (its SSH port filtered, say): its configuration stays."""

    def apply_blueprint(self, handle: NodeHandle, blueprint: NodeBlueprint) -> None:
        if handle.node_id.endswith("-node-2"):
            raise ProviderError(f"cannot reach {handle.node_id}: connection timed out")
        super().apply_blueprint(handle, blueprint)


def test_a_node_that_cannot_be_reached_is_recorded_and_reconcile_retries_it(
    context: Context, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = LocalProvider(LocalSettings(), state_dir / "local")
    planted = plant(
        context,
        PlantPlan(local, "custom", 3, []),
        PlantRequest(target="local", nodes=3),
        no_progress,
    )
    forest_id = planted.forest.id
    nodes = context.registry.nodes(forest_id)
    second = nodes[1]
    conf = state_dir / "local" / forest_id / second.id / "nats.conf"
    before = conf.read_text()

    monkeypatch.setattr(
        Context, "provider", lambda self, name: Unreachable(LocalSettings(), state_dir / "local")
    )
    said: list[tuple[str, str]] = []
    result = reconcile(context, forest_id, lambda node_id, words: said.append((node_id, words)))
    assert result.behind == {second.id: f"cannot reach {second.id}: connection timed out"}
    assert (second.id, f"not reconfigured: cannot reach {second.id}: connection timed out") in said
    assert conf.read_text() == before  # nothing half-written
    assert [n.id for n in nodes_behind(context, forest_id, nodes)] == [second.id]
    assert [n.id for n in preview(context, forest_id).behind] == [second.id]
    notes = forest_status(context, forest_id).notes
    assert any(note.startswith(f"{second.name} could not be reached") for note in notes), notes

    monkeypatch.setattr(Context, "provider", lambda self, name: local)
    again = reconcile(context, forest_id, no_progress)
    assert again.behind == {}
    assert nodes_behind(context, forest_id, nodes) == []
    assert not preview(context, forest_id).changes
    teardown(context, forest_id, no_progress)


def test_the_record_names_each_node_once(context: Context) -> None:
    """``node-1`` is not taken for behind when only ``node-11`` is; a later convergence
    that reached everyone clears the record."""
    registry = context.registry
    forest = registry.create_forest(
        provider="local",
        size="custom",
        location=None,
        run_id="run-1",
        credentials=RouteCredentials.generate(),
        now=context.clock(),
        planned_nodes=11,
    )
    nodes = registry.nodes(forest.id)
    eleventh = nodes[10]
    record_convergence(context, forest, Convergence(behind={eleventh.id: "timed out"}))
    assert nodes_behind(context, forest.id, nodes) == [eleventh]
    record_convergence(context, forest, Convergence(applied=[n.id for n in nodes]))
    assert nodes_behind(context, forest.id, nodes) == []


class Gathering(LocalProvider):
    """Each reconfiguration waits until three are under way at once."""

    together = threading.Barrier(3, timeout=60)

    def apply_blueprint(self, handle: NodeHandle, blueprint: NodeBlueprint) -> None:
        self.together.wait()
        super().apply_blueprint(handle, blueprint)


def test_nodes_are_reconfigured_in_parallel(context: Context, state_dir: Path) -> None:
    """Three nodes converge at once (a barrier of three would time out one at a time)."""
    local = LocalProvider(LocalSettings(), state_dir / "local")
    planted = plant(
        context, PlantPlan(local, "custom", 3, []), PlantRequest("local", nodes=3), no_progress
    )
    nodes = context.registry.nodes(planted.forest.id)
    gathering = Gathering(LocalSettings(), state_dir / "local")
    result = converge(context, gathering, planted.forest, nodes, no_progress)
    assert result.applied == [node.id for node in nodes] and result.behind == {}
    teardown(context, planted.forest.id, no_progress)
