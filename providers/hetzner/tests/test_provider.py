"""The Hetzner provider against the fake API: parallel creates, faults, firewalls, labels."""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Iterator

import hcloud
import pytest
from fakeapi import FakeHetzner
from hcloud.ssh_keys import SSHKey
from hetzner_support import ADMIN_SOURCE, ProviderFactory, public_key_line
from morpheus_hetzner.api import HetznerError
from morpheus_hetzner.provider import HetznerProvider

from morpheus.provider import ForestPlan, NodeHandle
from morpheus.render import NODE_PATHS, delivered_files
from morpheus.settings import Settings
from morpheus.testing.contract import ContractForest

WAIT = 30.0


@pytest.fixture
def forest(hetzner: HetznerProvider) -> Iterator[ContractForest]:
    made = ContractForest(hetzner, Settings())
    try:
        yield made
    finally:
        made.cleanup()


def plant_running(forest: ContractForest, count: int) -> list[NodeHandle]:
    """Reserve, create and wait for ``count`` nodes, as the plant service does."""
    handles = forest.plant(count)
    deadline = time.monotonic() + WAIT
    return [forest.provider.wait_running(handle, deadline) for handle in handles]


def assert_nothing_left(fake: FakeHetzner) -> None:
    assert fake.servers == {}
    assert fake.primary_ips == {}
    assert fake.firewalls == {}
    assert fake.placement_groups == {}


def create_intervals(fake: FakeHetzner) -> list[tuple[float, float]]:
    """(start, end) on the monotonic clock of every create_server action."""
    return [
        (action.due - action.duration, action.due)
        for action in fake.actions.values()
        if action.command == "create_server"
    ]


# --------------------------------------------------------------------------- parallel create


def test_five_nodes_are_created_in_parallel(
    fake_hetzner: FakeHetzner, forest: ContractForest
) -> None:
    # A create takes 2 s: long enough to see overlap even when a loaded machine starts
    # the worker threads late.
    fake_hetzner.time_scale = 0.2
    handles = plant_running(forest, 5)

    intervals = create_intervals(fake_hetzner)
    assert len(intervals) == 5
    latest_start = max(start for start, _ in intervals)
    earliest_end = min(end for _, end in intervals)
    assert latest_start < earliest_end, "every create was running at the same moment"
    assert [h.state for h in handles] == ["running"] * 5
    servers = list(fake_hetzner.servers.values())
    assert {s.status for s in servers} == {"running"}
    fake_hetzner.time_scale = 0.01  # deletes at test speed again


def test_servers_are_ipv6_only_labelled_spread_and_firewalled(
    fake_hetzner: FakeHetzner, forest: ContractForest
) -> None:
    handles = plant_running(forest, 3)

    servers = sorted(fake_hetzner.servers.values(), key=lambda s: s.name)
    ips = fake_hetzner.primary_ips
    for handle, server in zip(handles, servers, strict=True):
        assert server.name == handle.node_id
        assert server.ipv4_id is None
        prefix = ips[server.ipv6_id].ip if server.ipv6_id else ""
        assert handle.host == str(ipaddress.IPv6Network(prefix).network_address + 1)
        assert server.labels == {
            "managed-by": "morpheus",
            "forest": forest.id,
            "node": handle.node_id,
            "run": forest.run_id,
        }
        assert ips[server.ipv6_id].labels["node"] == handle.node_id
        assert ips[server.ipv6_id].auto_delete
        assert server.user_data is not None and server.user_data.startswith("#cloud-config")
        assert handle.host in delivered_files(server.user_data)[NODE_PATHS.nats_conf]
    assert len({s.placement_group_id for s in servers}) == 1
    (group,) = fake_hetzner.placement_groups.values()
    assert group.type == "spread" and group.labels["forest"] == forest.id
    (key,) = fake_hetzner.ssh_keys.values()
    assert all(s.ssh_keys == [key.id] for s in servers)

    (firewall,) = fake_hetzner.firewalls.values()
    assert firewall.labels["forest"] == forest.id
    assert firewall.label_selectors == [f"managed-by=morpheus,forest={forest.id}"]
    by_port = {rule["port"]: rule for rule in firewall.rules}
    assert set(by_port) == {"22", "8222", "6222"}
    assert all(rule["direction"] == "in" and rule["protocol"] == "tcp" for rule in by_port.values())
    assert by_port["22"]["source_ips"] == [ADMIN_SOURCE]
    assert by_port["8222"]["source_ips"] == [ADMIN_SOURCE]
    assert sorted(by_port["6222"]["source_ips"]) == sorted(
        ips[s.ipv6_id].ip for s in servers if s.ipv6_id
    )


def test_enable_ipv4_reserves_both_addresses(
    fake_hetzner: FakeHetzner, hetzner_factory: ProviderFactory
) -> None:
    provider = hetzner_factory(enable_ipv4=True)
    made = ContractForest(provider, Settings())
    try:
        (handle,) = plant_running(made, 1)
        (server,) = fake_hetzner.servers.values()
        assert server.ipv4_id is not None and server.ipv6_id is not None
        ipv4 = fake_hetzner.primary_ips[server.ipv4_id].ip
        assert handle.addresses == [handle.host, ipv4]
        (firewall,) = fake_hetzner.firewalls.values()
        routes = next(r for r in firewall.rules if r["port"] == "6222")
        assert f"{ipv4}/32" in routes["source_ips"]
    finally:
        made.cleanup()
    assert_nothing_left(fake_hetzner)


def test_route_rule_follows_the_forest_as_it_grows_and_shrinks(
    fake_hetzner: FakeHetzner, forest: ContractForest
) -> None:
    first, second = plant_running(forest, 2)

    def route_sources() -> set[str]:
        (firewall,) = fake_hetzner.firewalls.values()
        return set(next(r for r in firewall.rules if r["port"] == "6222")["source_ips"])

    def network(host: str | None) -> str:
        return str(ipaddress.IPv6Network(f"{host}/64", strict=False))

    assert route_sources() == {network(first.host), network(second.host)}
    (third,) = forest.provider.reserve_addresses(forest.id, forest.run_id, [f"{forest.id}-node-3"])
    assert route_sources() == {network(h) for h in (first.host, second.host, third.host)}
    forest.provider.delete_node(second)
    assert route_sources() == {network(first.host), network(third.host)}


def test_full_placement_group_places_the_rest_anywhere(
    fake_hetzner: FakeHetzner, forest: ContractForest
) -> None:
    fake_hetzner.max_placement_group_servers = 2
    plant_running(forest, 3)
    grouped = [s for s in fake_hetzner.servers.values() if s.placement_group_id is not None]
    assert len(fake_hetzner.servers) == 3
    assert len(grouped) == 2


# --------------------------------------------------------------------------- API faults


def test_rate_limit_waits_for_the_reset_it_was_told(
    fake_hetzner: FakeHetzner, forest: ContractForest
) -> None:
    fake_hetzner.inject_rate_limited(method="POST", path_prefix="/servers", reset_after=1.0)
    plant_running(forest, 1)

    posts = [r for r in fake_hetzner.requests if r.method == "POST" and r.path == "/v1/servers"]
    assert [r.status for r in posts] == [429, 201]
    # RateLimit-Reset is whole seconds, at least one second after the 429.
    assert posts[1].started - posts[0].started >= 0.9
    assert len(fake_hetzner.servers) == 1


def test_an_empty_bucket_is_waited_for_not_fatal(
    fake_hetzner: FakeHetzner, forest: ContractForest
) -> None:
    # The bucket refills at limit/3600 per second (10 a second here): a plant waits for
    # the tokens it needs although RateLimit-Reset, when the bucket is full, is an hour off.
    fake_hetzner.set_rate_limit(36_000)
    fake_hetzner.exhaust_rate_limit()
    handles = plant_running(forest, 2)
    assert [h.state for h in handles] == ["running"] * 2
    assert fake_hetzner.request_count(status=429) <= 1


def test_server_errors_are_retried_with_backoff(
    fake_hetzner: FakeHetzner, forest: ContractForest
) -> None:
    fake_hetzner.inject(method="POST", path_prefix="/servers", status=503, code="unavailable")
    fake_hetzner.inject(method="POST", path_prefix="/primary_ips", status=500, code="server_error")
    fake_hetzner.inject(method="GET", path_prefix="/actions", status=503, code="maintenance")
    plant_running(forest, 2)

    assert fake_hetzner.request_count("POST", "/servers", status=503) == 1
    assert fake_hetzner.request_count("POST", "/primary_ips", status=500) == 1
    assert len(fake_hetzner.servers) == 2
    assert len([ip for ip in fake_hetzner.primary_ips.values()]) == 2


def test_server_error_retries_are_bounded(
    fake_hetzner: FakeHetzner, hetzner_factory: ProviderFactory
) -> None:
    provider = hetzner_factory(max_retries=3)
    made = ContractForest(provider, Settings())
    fake_hetzner.inject(
        method="POST", path_prefix="/primary_ips", status=503, code="unavailable", times=None
    )
    try:
        with pytest.raises(HetznerError) as caught:
            made.plant(1)
        assert caught.value.code == "unavailable"
        assert fake_hetzner.request_count("POST", "/primary_ips") == 4
    finally:
        fake_hetzner.clear_faults()
        made.cleanup()
    assert_nothing_left(fake_hetzner)


def test_location_out_of_capacity_before_the_plant_is_skipped(
    fake_hetzner: FakeHetzner, forest: ContractForest
) -> None:
    fake_hetzner.set_location_unavailable("fsn1")
    forest.provider.preflight(ForestPlan(forest_id=None, node_count=2))
    lines = {line.label: line.value for line in forest.provider.plan_lines(ForestPlan(None, 2))}
    assert lines["location"].startswith("nbg1")

    handles = plant_running(forest, 2)
    assert {s.location for s in fake_hetzner.servers.values()} == {"nbg1"}
    assert {h.location for h in handles} == {"nbg1"}


def test_resource_unavailable_moves_only_that_node(
    fake_hetzner: FakeHetzner, hetzner_factory: ProviderFactory
) -> None:
    provider = hetzner_factory(create_concurrency=1)  # node 1 is sent first, then node 2
    made = ContractForest(provider, Settings())
    fake_hetzner.inject(
        method="POST", path_prefix="/servers", status=412, code="resource_unavailable", after=1
    )
    try:
        reserved = made.plant(2)
        deadline = time.monotonic() + WAIT
        first, second = (provider.wait_running(h, deadline) for h in reserved)

        locations = {s.name: s.location for s in fake_hetzner.servers.values()}
        assert locations == {first.node_id: "fsn1", second.node_id: "nbg1"}
        assert (first.location, second.location) == ("fsn1", "nbg1")
        assert first.host == reserved[0].host
        assert second.host != reserved[1].host
        ips = {ip.labels["node"]: ip for ip in fake_hetzner.primary_ips.values()}
        assert len(fake_hetzner.primary_ips) == 2  # the fsn1 address of node 2 was given back
        assert ips[second.node_id].location == "nbg1"
        (firewall,) = fake_hetzner.firewalls.values()
        routes = next(r for r in firewall.rules if r["port"] == "6222")["source_ips"]
        assert sorted(routes) == sorted(ip.ip for ip in ips.values())
        server = fake_hetzner.server_by_name(second.node_id)
        assert server is not None and server.user_data is not None
        assert second.host is not None and reserved[1].host is not None
        nats_conf = delivered_files(server.user_data)[NODE_PATHS.nats_conf]
        assert f"[{second.host}]:6222" in nats_conf
        assert f"[{reserved[1].host}]:6222" not in nats_conf
    finally:
        made.cleanup()
    assert_nothing_left(fake_hetzner)


def test_out_of_capacity_everywhere_fails_the_preflight(
    fake_hetzner: FakeHetzner, hetzner: HetznerProvider
) -> None:
    for location in ("fsn1", "nbg1", "hel1"):
        fake_hetzner.set_location_unavailable(location)
    with pytest.raises(HetznerError, match="out of capacity in fsn1"):
        hetzner.preflight(ForestPlan(forest_id=None, node_count=1))
    assert_nothing_left(fake_hetzner)


def test_locked_delete_is_retried(fake_hetzner: FakeHetzner, forest: ContractForest) -> None:
    (handle,) = plant_running(forest, 1)
    fake_hetzner.inject_locked(method="DELETE", path_prefix="/servers", times=2)
    forest.provider.delete_node(handle)

    assert fake_hetzner.request_count("DELETE", "/servers", status=423) == 2
    assert fake_hetzner.servers == {}


@pytest.mark.parametrize("performed", [True, False], ids=["performed", "not-performed"])
def test_lost_create_answer_never_makes_a_second_server(
    fake_hetzner: FakeHetzner, forest: ContractForest, performed: bool
) -> None:
    fake_hetzner.inject_lost_response(method="POST", path_prefix="/servers", perform=performed)
    (handle,) = plant_running(forest, 1)

    assert [s.name for s in fake_hetzner.servers.values()] == [handle.node_id]
    posts = [
        r.status for r in fake_hetzner.requests if r.method == "POST" and r.path == "/v1/servers"
    ]
    # The answer was lost (None); sent again, the API says the name is taken when the first
    # one was done, and the server is adopted.
    assert posts == ([None, 409] if performed else [None, 201])
    assert handle.state == "running"


@pytest.mark.parametrize("names_checked_first", [True, False], ids=["names-first", "ips-first"])
@pytest.mark.parametrize("fault", ["lost", "5xx-after-commit"])
def test_a_create_that_happened_is_adopted_whatever_the_api_checks_first(
    fake_hetzner: FakeHetzner, forest: ContractForest, names_checked_first: bool, fault: str
) -> None:
    # Hetzner documents no validation order: the re-sent create may be told its name is
    # taken (409) or that its primary IP is assigned (422).  Either way it is ours.
    fake_hetzner.names_checked_first = names_checked_first
    if fault == "lost":
        fake_hetzner.inject_lost_response(method="POST", path_prefix="/servers", perform=True)
    else:
        fake_hetzner.inject(
            method="POST", path_prefix="/servers", status=500, code="server_error", committed=True
        )
    (handle,) = plant_running(forest, 1)

    assert [s.name for s in fake_hetzner.servers.values()] == [handle.node_id]
    assert handle.state == "running"
    assert fake_hetzner.request_count("POST", "/servers") == 2


def test_late_create_answer_after_timeout_is_adopted(
    fake_hetzner: FakeHetzner, hetzner_factory: ProviderFactory
) -> None:
    provider = hetzner_factory(request_timeout=0.3)
    made = ContractForest(provider, Settings())
    fake_hetzner.inject_lost_response(method="POST", path_prefix="/servers", delay=1.0)
    try:
        (handle,) = made.plant(1)
        provider.wait_running(handle, time.monotonic() + WAIT)
        assert len(fake_hetzner.servers) == 1
        assert fake_hetzner.request_count("POST", "/servers", status=409) == 1
    finally:
        made.cleanup()
    assert_nothing_left(fake_hetzner)


def test_lost_primary_ip_answer_is_adopted(
    fake_hetzner: FakeHetzner, forest: ContractForest
) -> None:
    fake_hetzner.inject_lost_response(method="POST", path_prefix="/primary_ips", times=2)
    plant_running(forest, 3)
    assert len(fake_hetzner.primary_ips) == 3
    assert len(fake_hetzner.servers) == 3


def test_a_foreign_server_with_the_name_is_not_adopted(
    fake_hetzner: FakeHetzner, forest: ContractForest, hcloud_client: hcloud.Client
) -> None:
    from hcloud.images import Image
    from hcloud.server_types import ServerType

    hcloud_client.servers.create(
        f"{forest.id}-node-1",
        server_type=ServerType(name="cx22"),
        image=Image(name="ubuntu-24.04"),
        labels={"owner": "someone-else"},
    )
    (handle,) = forest.plant(1)
    with pytest.raises(HetznerError, match="not this run's node") as caught:
        forest.provider.wait_running(handle, time.monotonic() + WAIT)
    assert caught.value.code == "uniqueness_error"
    forest.cleanup()
    assert [s.labels for s in fake_hetzner.servers.values()] == [{"owner": "someone-else"}]


def test_failed_create_action_is_reported_with_its_code(
    fake_hetzner: FakeHetzner, forest: ContractForest
) -> None:
    fake_hetzner.fail_next_action("create_server", code="action_failed", message="no host")
    (handle,) = forest.plant(1)
    with pytest.raises(HetznerError, match="create_server action failed: no host") as caught:
        forest.provider.wait_running(handle, time.monotonic() + WAIT)
    assert caught.value.code == "action_failed"


def test_action_polls_are_batched(fake_hetzner: FakeHetzner, forest: ContractForest) -> None:
    fake_hetzner.time_scale = 0.05
    plant_running(forest, 5)
    polls = [r for r in fake_hetzner.requests if r.path == "/v1/actions"]
    assert polls and max(len(r.query["id"]) for r in polls) >= 10  # creates + starts at once
    assert not [r for r in fake_hetzner.requests if r.path.startswith("/v1/actions/")]
    fake_hetzner.time_scale = 0.01


def test_requests_per_node_stay_few(fake_hetzner: FakeHetzner, forest: ContractForest) -> None:
    forest.provider.preflight(ForestPlan(forest_id=None, node_count=5))
    plant_running(forest, 5)
    assert len(fake_hetzner.requests) / 5 <= 10, fake_hetzner.counters


def test_a_grow_finds_the_forests_key_group_and_firewall_without_refused_creates(
    fake_hetzner: FakeHetzner, forest: ContractForest, hetzner_factory: ProviderFactory
) -> None:
    """A grow runs in a new process: it looks the plant's resources up instead of creating
    them again and being answered 409 (three wasted requests before). A plant (its
    pre-flight names no forest) creates its new forest's group and firewall at once."""
    forest.provider.preflight(ForestPlan(forest_id=None, node_count=1))
    plant_running(forest, 1)
    looks = {"GET /v1/placement_groups", "GET /v1/firewalls"}
    assert not looks & set(fake_hetzner.counters), fake_hetzner.counters
    fake_hetzner.clear_requests()
    grower = hetzner_factory()
    grower.reserve_addresses(forest.id, forest.run_id, [f"{forest.id}-node-2"])
    assert fake_hetzner.request_count(status=409) == 0, fake_hetzner.counters
    creates = {f"POST /v1/{kind}" for kind in ("ssh_keys", "placement_groups", "firewalls")}
    assert not creates & set(fake_hetzner.counters), fake_hetzner.counters
    assert len(fake_hetzner.placement_groups) == len(fake_hetzner.firewalls) == 1


@pytest.mark.parametrize("route", ["/ssh_keys", "/placement_groups", "/firewalls"])
def test_a_resource_another_run_just_created_is_adopted(
    fake_hetzner: FakeHetzner, forest: ContractForest, route: str
) -> None:
    """The race the look-up cannot close: absent when looked up, taken when created (here
    the create itself happened; its answer is the 409 a concurrent run's create gives)."""
    fake_hetzner.inject(
        method="POST", path_prefix=route, status=409, code="uniqueness_error", committed=True
    )
    plant_running(forest, 1)
    assert fake_hetzner.request_count("POST", route, status=409) == 1
    made = (fake_hetzner.ssh_keys, fake_hetzner.placement_groups, fake_hetzner.firewalls)
    assert [len(kind) for kind in made] == [1, 1, 1]
    (server,) = fake_hetzner.servers.values()
    assert server.ssh_keys == list(fake_hetzner.ssh_keys)


# --------------------------------------------------------------------------- SSH key


def test_ssh_key_is_uploaded_once_when_missing(
    fake_hetzner: FakeHetzner, forest: ContractForest
) -> None:
    plant_running(forest, 2)
    (key,) = fake_hetzner.ssh_keys.values()
    assert key.name == "morpheus"
    assert key.labels == {"managed-by": "morpheus"}


def test_ssh_key_uploaded_concurrently_by_someone_else_is_used(
    fake_hetzner: FakeHetzner, forest: ContractForest, hcloud_client: hcloud.Client
) -> None:
    forest.provider.preflight(ForestPlan(forest_id=None, node_count=1))  # sees no key yet
    theirs = hcloud_client.ssh_keys.create(name="morpheus", public_key=public_key_line())
    plant_running(forest, 1)
    (server,) = fake_hetzner.servers.values()
    assert server.ssh_keys == [theirs.id]
    assert len(fake_hetzner.ssh_keys) == 1


def test_same_public_key_under_another_name_is_used(
    fake_hetzner: FakeHetzner,
    forest: ContractForest,
    hcloud_client: hcloud.Client,
    public_key: object,
) -> None:
    from pathlib import Path

    assert isinstance(public_key, Path)
    mine = hcloud_client.ssh_keys.create(name="laptop", public_key=public_key.read_text())
    plant_running(forest, 1)
    (server,) = fake_hetzner.servers.values()
    assert server.ssh_keys == [mine.id]
    hcloud_client.ssh_keys.delete(SSHKey(id=mine.id))


# --------------------------------------------------------------------------- list and delete


def test_list_reports_capacity_location_and_addresses(forest: ContractForest) -> None:
    plant_running(forest, 1)
    (listed,) = forest.provider.list_nodes(forest.id)
    assert listed.capacity is not None and listed.capacity.cores == 2
    assert listed.location == "fsn1"
    assert listed.host is not None and listed.host.endswith("::1")
    assert listed.index == 1
    assert listed.provider_id == listed.node_id


def test_teardown_removes_everything_by_label(
    fake_hetzner: FakeHetzner, hetzner_factory: ProviderFactory
) -> None:
    first = hetzner_factory()
    made = ContractForest(first, Settings())
    plant_running(made, 3)
    # Another process (a later `morpheus teardown`) knows nothing but the forest id.
    other = hetzner_factory()
    for handle in other.list_nodes(made.id):
        other.delete_node(handle)
    other.delete_forest_resources(made.id)
    assert_nothing_left(fake_hetzner)


def test_nodes_are_deleted_in_parallel_with_the_firewall_written_once(
    fake_hetzner: FakeHetzner, forest: ContractForest
) -> None:
    handles = plant_running(forest, 6)
    fake_hetzner.time_scale = 0.05  # a delete takes 0.2 s: long enough to see overlap
    start = len(fake_hetzner.requests)
    outcomes: dict[str, object] = {}

    forest.provider.delete_nodes(handles, lambda h, error: outcomes.update({h.node_id: error}))

    asked = fake_hetzner.requests[start:]
    assert outcomes == {h.node_id: None for h in handles}
    assert fake_hetzner.servers == {}
    assert len(asked) / len(handles) <= 4, fake_hetzner.counters
    rule_writes = [r for r in asked if r.path.endswith("/actions/set_rules")]
    assert len(rule_writes) == 1
    deletes = [
        (a.due - a.duration, a.due)
        for a in fake_hetzner.actions.values()
        if a.command == "delete_server"
    ]
    assert len(deletes) == 6
    assert max(s for s, _ in deletes) < min(e for _, e in deletes), "all deletes overlapped"
    fake_hetzner.time_scale = 0.01


def test_forest_resources_stay_while_a_server_lives(
    fake_hetzner: FakeHetzner, forest: ContractForest
) -> None:
    plant_running(forest, 1)
    with pytest.raises(HetznerError, match="kept while its servers still exist"):
        forest.provider.delete_forest_resources(forest.id)
    (firewall,) = fake_hetzner.firewalls.values()
    assert firewall.label_selectors  # still protecting the server


def test_servers_of_forests_imported_from_the_go_tool_are_deleted(
    fake_hetzner: FakeHetzner, hetzner: HetznerProvider, hcloud_client: hcloud.Client
) -> None:
    from hcloud.images import Image
    from hcloud.server_types import ServerType

    forest_id = "forest-1700000000"
    hcloud_client.servers.create(
        name=f"{forest_id}-node-1",
        server_type=ServerType(name="cx23"),
        image=Image(name="ubuntu-24.04"),
        labels={"managed-by": "morpheus", "forest-id": forest_id},
    )
    other = hcloud_client.servers.create(
        name="forest-1700000001-node-1",
        server_type=ServerType(name="cx23"),
        image=Image(name="ubuntu-24.04"),
        labels={"managed-by": "morpheus", "forest-id": "forest-1700000001"},
    )
    ghost = NodeHandle(
        provider_id="1",
        node_id=f"{forest_id}-node-1",
        forest_id=forest_id,
        run_id="imported",
        index=1,
        state="unknown",
    )
    hetzner.delete_node(ghost)
    assert [s.name for s in fake_hetzner.servers.values()] == [other.server.name]


def test_forest_ids_come_from_the_servers_labels(
    hetzner: HetznerProvider, forest: ContractForest
) -> None:
    """What `morpheus registry rebuild` asks: every forest with servers, found by label."""
    forest.plant(1)
    other = ContractForest(hetzner, Settings())
    try:
        other.plant(2)
        assert {forest.id, other.id} <= set(hetzner.forest_ids())
    finally:
        other.cleanup()
    assert other.id not in hetzner.forest_ids()


@pytest.mark.parametrize("reconfigures", [False, True], ids=["booted-once", "reconfigured"])
def test_node_firewalls_admit_routes_from_the_forest_alone_once_nodes_are_reconfigured(
    fake_hetzner: FakeHetzner, hetzner: HetznerProvider, reconfigures: bool
) -> None:
    """Issue 12, failure 4: a node whose rules follow the forest (``apply_blueprint``
    rewrites its route peers) admits routes from exactly the forest's nodes, never ``::/0``;
    one booted once relies on the cloud firewall, which names the forest's networks."""
    provider = hetzner
    # Hetzner reconfigures over SSH; "booted-once" is how it rendered nodes before (and how a
    # provider that cannot reconfigure does), told so on the instance, not the class.
    provider.can_reconfigure = reconfigures  # type: ignore[misc]
    made = ContractForest(provider, Settings())
    try:
        handles = plant_running(made, 3)
        hosts = sorted(h.host for h in handles if h.host)
        for server in fake_hetzner.servers.values():
            assert server.user_data is not None
            peers = delivered_files(server.user_data)[NODE_PATHS.route_peers]
            admitted = re.search(r"add element inet morpheus peers_v6 \{ ([^}]*) \}", peers)
            assert admitted is not None, peers
            expected = hosts if reconfigures else ["::/0"]
            assert sorted(admitted[1].split(", ")) == expected
        (firewall,) = fake_hetzner.firewalls.values()
        routes = next(r for r in firewall.rules if r["port"] == "6222")["source_ips"]
        networks = {str(ipaddress.IPv6Network(f"{h}/64", strict=False)) for h in hosts}
        assert set(routes) == networks
    finally:
        made.cleanup()
