"""The provider contract suite: every provider, built-in or third-party, passes it.

Subclass ``ProviderContract`` in your plugin's tests and give it a ``provider`` fixture::

    from morpheus.testing.contract import ProviderContract

    class TestMyCloud(ProviderContract):
        @pytest.fixture
        def provider(self, tmp_path):
            return MyCloudProvider(...)

The suite creates small forests through the provider's own ``reserve_addresses`` and
``create_node``, checks what ``list_nodes`` reports from the platform, and deletes
everything it made (also when a check fails).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from morpheus.blueprint import Peer, RouteCredentials, blueprint_for, node_addresses
from morpheus.models import Forest, ForestStatus, Node, NodeState, NodeStatus
from morpheus.pki import ForestCA
from morpheus.provider import NodeHandle, Provider
from morpheus.settings import Settings

WAIT_SECONDS = 60.0


class ContractForest:
    """A forest made directly through a provider, without registry or CLI."""

    def __init__(self, provider: Provider, settings: Settings) -> None:
        self.provider = provider
        self.settings = settings
        self.id = f"forest-contract-{secrets.token_hex(3)}"
        self.run_id = f"run-{secrets.token_hex(3)}"
        self.handles: list[NodeHandle] = []

    def plant(self, count: int) -> list[NodeHandle]:
        forest = Forest(
            id=self.id,
            provider=self.provider.name,
            size="custom",
            status=ForestStatus.PLANTING,
            created_at=datetime.now(UTC),
            cluster_name=self.id,
            credentials_ref="contract",
            run_id=self.run_id,
        )
        node_ids = [f"{self.id}-node-{i}" for i in range(1, count + 1)]
        reservations = self.provider.reserve_addresses(self.id, self.run_id, node_ids)
        peers = [Peer(host=r.host, port=r.ports.cluster) for r in reservations]
        credentials = RouteCredentials.generate()
        # Routes use mutual TLS as in a planted forest: a provider must write the route TLS
        # files (``morpheus.render.tls_files``) where its nats.conf names them.
        ca = ForestCA.generate(self.run_id, datetime.now(UTC))
        created = []
        for index, reservation in enumerate(reservations, start=1):
            node = Node(
                id=reservation.node_id,
                forest_id=self.id,
                name=f"node-{index}",
                index=index,
                status=NodeStatus.PLANNED,
                created_at=datetime.now(UTC),
            )
            blueprint = blueprint_for(
                self.settings,
                forest,
                node,
                reservation,
                peers,
                credentials,
                self.provider,
                datetime.now(UTC),
                ca.issue(node.id, node_addresses(reservation), datetime.now(UTC)).route_tls(ca),
            )
            handle = self.provider.create_node(blueprint)
            self.handles.append(handle)
            created.append(handle)
        return created

    def cleanup(self) -> None:
        for handle in self.provider.list_nodes(self.id):
            self.provider.delete_node(handle)
        self.provider.delete_forest_resources(self.id)


class ProviderContract:
    """What every provider must do; subclass it and supply the ``provider`` fixture."""

    @pytest.fixture
    def provider(self) -> Provider:
        raise NotImplementedError("override the provider fixture in your test class")

    @pytest.fixture
    def settings(self) -> Settings:
        return Settings()

    @pytest.fixture
    def forest(self, provider: Provider, settings: Settings) -> Iterator[ContractForest]:
        made = ContractForest(provider, settings)
        try:
            yield made
        finally:
            made.cleanup()

    @pytest.fixture
    def other_forest(self, provider: Provider, settings: Settings) -> Iterator[ContractForest]:
        made = ContractForest(provider, settings)
        try:
            yield made
        finally:
            made.cleanup()

    def test_create_returns_addresses_at_once(self, forest: ContractForest) -> None:
        (handle,) = forest.plant(1)
        assert handle.host
        assert handle.node_id == f"{forest.id}-node-1"
        assert handle.forest_id == forest.id

    def test_list_by_forest(self, forest: ContractForest, other_forest: ContractForest) -> None:
        mine = forest.plant(2)
        theirs = other_forest.plant(1)
        assert {h.node_id for h in forest.provider.list_nodes(forest.id)} == {
            h.node_id for h in mine
        }
        assert {h.node_id for h in forest.provider.list_nodes(other_forest.id)} == {
            h.node_id for h in theirs
        }

    def test_wait_running(self, forest: ContractForest) -> None:
        (handle,) = forest.plant(1)
        running = forest.provider.wait_running(handle, time.monotonic() + WAIT_SECONDS)
        assert running.state == NodeState.RUNNING
        listed = forest.provider.list_nodes(forest.id)
        assert [h.state for h in listed] == ["running"]

    def test_a_clustered_pair_runs_with_its_route_tls_files(self, forest: ContractForest) -> None:
        # Clustered nodes name route TLS files in nats.conf: a provider that does not put
        # them where the blueprint says gets a node whose nats-server cannot start.
        for handle in forest.plant(2):
            running = forest.provider.wait_running(handle, time.monotonic() + WAIT_SECONDS)
            assert running.state == "running"

    def test_delete_twice(self, forest: ContractForest) -> None:
        (handle,) = forest.plant(1)
        forest.provider.wait_running(handle, time.monotonic() + WAIT_SECONDS)
        forest.provider.delete_node(handle)
        forest.provider.delete_node(handle)
        assert forest.provider.list_nodes(forest.id) == []

    def test_delete_unknown_node_is_no_error(self, forest: ContractForest) -> None:
        ghost = NodeHandle(
            provider_id=f"{forest.id}-node-99",
            node_id=f"{forest.id}-node-99",
            forest_id=forest.id,
            run_id=forest.run_id,
            index=99,
            state=NodeState.UNKNOWN,
        )
        forest.provider.delete_node(ghost)
        assert forest.provider.list_nodes(forest.id) == []

    def test_delete_nodes_reports_each_once(self, forest: ContractForest) -> None:
        handles = forest.plant(3)
        deadline = time.monotonic() + WAIT_SECONDS
        for handle in handles:
            forest.provider.wait_running(handle, deadline)
        reported: list[tuple[str, object]] = []
        forest.provider.delete_nodes(
            handles[:2], lambda handle, error: reported.append((handle.node_id, error))
        )
        assert sorted(reported) == [(h.node_id, None) for h in handles[:2]]
        assert [h.node_id for h in forest.provider.list_nodes(forest.id)] == [handles[2].node_id]

    def test_unknown_forest_lists_nothing(self, provider: Provider) -> None:
        assert provider.list_nodes("forest-never-planted") == []

    def test_labels_round_trip(self, forest: ContractForest) -> None:
        forest.plant(2)
        for handle in forest.provider.list_nodes(forest.id):
            assert handle.labels["managed-by"] == "morpheus"
            assert handle.labels["forest"] == forest.id
            assert handle.labels["node"] == handle.node_id
            assert handle.labels["run"] == forest.run_id
            assert handle.run_id == forest.run_id

    def test_forest_resources_deleted(self, forest: ContractForest) -> None:
        forest.plant(2)
        forest.cleanup()
        assert forest.provider.list_nodes(forest.id) == []
