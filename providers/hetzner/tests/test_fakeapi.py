"""The fake Hetzner Cloud API, driven through the real hcloud client."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import hcloud
import pytest
import requests
from fakeapi import FakeHetzner, FaultKind, parse_label_selector
from hcloud.actions import ActionFailedException, BoundAction
from hcloud.firewalls import FirewallResource, FirewallResourceLabelSelector, FirewallRule
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.placement_groups import PlacementGroup
from hcloud.primary_ips import BoundPrimaryIP
from hcloud.server_types import ServerType
from hcloud.servers import BoundServer, CreateServerResponse, ServerCreatePublicNetwork

HcloudClientFactory = Callable[..., hcloud.Client]


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)


def create_server(
    client: hcloud.Client,
    name: str,
    *,
    labels: dict[str, str] | None = None,
    server_type: str = "cx22",
    location: str = "fsn1",
    **kwargs: Any,
) -> CreateServerResponse:
    return client.servers.create(
        name,
        server_type=ServerType(name=server_type),
        image=Image(name="ubuntu-24.04"),
        location=Location(name=location),
        labels=labels,
        **kwargs,
    )


def wait_running(response: CreateServerResponse) -> None:
    response.action.wait_until_finished()
    for action in response.next_actions:
        action.wait_until_finished()


def api_error(call: Callable[[], object]) -> hcloud.APIException:
    with pytest.raises(hcloud.APIException) as info:
        call()
    return info.value


def public_key() -> str:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + os.urandom(32)
    return "ssh-ed25519 " + base64.b64encode(blob).decode() + " test@morpheus"


def raw_get(fake: FakeHetzner, path: str, token: str) -> tuple[int, Mapping[str, str], Any]:
    request = urllib.request.Request(
        fake.endpoint + path, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.load(error)


# --------------------------------------------------------------------------- servers


def test_server_create_get_list_delete(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    response = create_server(hcloud_client, "oak-1", labels={"forest": "oak"})

    assert response.server.status == "initializing"
    assert response.action.command == "create_server"
    assert [a.command for a in response.next_actions] == ["start_server"]
    assert response.root_password is not None  # no SSH key given
    wait_running(response)
    server = hcloud_client.servers.get_by_id(response.server.id)
    assert server.status == "running"
    assert (server.server_type.name, server.location.name) == ("cx22", "fsn1")
    assert (server.image.name, server.image.architecture) == ("ubuntu-24.04", "x86")
    assert server.labels == {"forest": "oak"}
    assert hcloud_client.servers.get_by_name("oak-1").id == server.id
    assert [s.name for s in hcloud_client.servers.get_all()] == ["oak-1"]

    delete = server.delete()
    assert delete.command == "delete_server"
    delete.wait_until_finished()
    assert api_error(lambda: hcloud_client.servers.get_by_id(server.id)).code == "not_found"
    assert fake_hetzner.servers == {}


def test_server_status_moves_from_initializing_to_starting_to_running(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    fake_hetzner.time_scale = 1000.0  # actions only finish when the test says so
    response = create_server(hcloud_client, "slow-1")
    server_id = response.server.id

    assert hcloud_client.servers.get_by_id(server_id).status == "initializing"
    fake_hetzner.finish_action(response.action.id)
    assert hcloud_client.servers.get_by_id(server_id).status == "starting"
    fake_hetzner.finish_action(response.next_actions[0].id)
    assert hcloud_client.servers.get_by_id(server_id).status == "running"


def test_server_power_actions_and_natural_lock(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    fake_hetzner.time_scale = 1000.0
    server = create_server(hcloud_client, "busy-1").server

    # The create and start actions still run: the server is locked.
    assert api_error(server.power_off).code == "locked"
    fake_hetzner.finish_all_actions()
    power_off = server.power_off()
    assert hcloud_client.servers.get_by_id(server.id).status == "stopping"
    fake_hetzner.finish_action(power_off.id)
    assert hcloud_client.servers.get_by_id(server.id).status == "off"
    fake_hetzner.finish_action(server.power_on().id)
    assert hcloud_client.servers.get_by_id(server.id).status == "running"


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("forest=oak", ["a", "b"]),
        ("forest==oak", ["a", "b"]),
        ("forest!=oak", ["c", "d", "e"]),
        ("role", ["a", "b", "c"]),
        ("!role", ["d", "e"]),
        ("role in (seed,worker)", ["a", "b", "c"]),
        ("role notin (worker)", ["a", "d", "e"]),
        ("forest=oak,role=worker", ["b"]),
        ("forest in (oak, pine),!role", ["d"]),
    ],
)
def test_servers_filtered_by_label_selector(
    hcloud_client: hcloud.Client, selector: str, expected: list[str]
) -> None:
    labels: dict[str, dict[str, str]] = {
        "a": {"forest": "oak", "role": "seed"},
        "b": {"forest": "oak", "role": "worker"},
        "c": {"forest": "pine", "role": "worker"},
        "d": {"forest": "pine"},
        "e": {},
    }
    for name, server_labels in labels.items():
        create_server(hcloud_client, name, labels=server_labels)

    found = hcloud_client.servers.get_all(label_selector=selector)

    assert sorted(s.name for s in found) == expected


def test_invalid_label_selector_is_invalid_input(hcloud_client: hcloud.Client) -> None:
    error = api_error(lambda: hcloud_client.servers.get_all(label_selector="role in (a"))
    assert error.code == "invalid_input"


@pytest.mark.parametrize("selector", ["a in (b", "a)", "=b", "a b", ""])
def test_parse_label_selector_rejects_malformed_selectors(selector: str) -> None:
    with pytest.raises(ValueError, match=r"parentheses|cannot parse"):
        parse_label_selector(selector)


def test_pagination_meta_and_get_all(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    for n in range(55):
        hcloud_client.ssh_keys.create(f"key-{n:02}", public_key=public_key())
    fake_hetzner.clear_requests()

    page, meta = hcloud_client.ssh_keys.get_list(page=2, per_page=20)

    assert [k.name for k in page] == [f"key-{n:02}" for n in range(20, 40)]
    pagination = meta.pagination
    assert pagination is not None
    assert (pagination.page, pagination.per_page, pagination.total_entries) == (2, 20, 55)
    assert (pagination.previous_page, pagination.next_page, pagination.last_page) == (1, 3, 3)
    assert len(hcloud_client.ssh_keys.get_all()) == 55
    # get_all asks for 50 per page: two more requests.
    assert fake_hetzner.request_count("GET", "/ssh_keys") == 3


def test_user_data_over_32_kib_is_rejected(hcloud_client: hcloud.Client) -> None:
    user_data = "#cloud-config\n" + "#" * (32 * 1024)
    error = api_error(lambda: create_server(hcloud_client, "big", user_data=user_data))
    assert error.code == "invalid_input"


def test_server_keeps_user_data_and_ssh_keys(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    key = hcloud_client.ssh_keys.create("admin", public_key=public_key())
    response = create_server(hcloud_client, "seeded", user_data="#cloud-config\n", ssh_keys=[key])

    assert response.root_password is None
    stored = fake_hetzner.servers[response.server.id]
    assert (stored.user_data, stored.ssh_keys) == ("#cloud-config\n", [key.id])


# --------------------------------------------------------------------------- actions


def test_actions_polled_one_by_one_and_batched(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    responses = [create_server(hcloud_client, f"batch-{n}") for n in range(3)]
    ids = [a.id for r in responses for a in [r.action, *r.next_actions]]

    single = hcloud_client.actions.get_by_id(ids[0])
    assert isinstance(single, BoundAction)
    assert single.command == "create_server"
    assert 0 <= single.progress <= 100

    def all_done() -> bool:
        batch = hcloud_client.request("GET", "/actions", params={"id": ids})
        assert sorted(a["id"] for a in batch["actions"]) == sorted(ids)
        return all(a["status"] == "success" for a in batch["actions"])

    wait_until(all_done)
    batched = [r for r in fake_hetzner.requests if r.path == "/v1/actions"]
    assert batched
    assert all(len(r.query["id"]) == 6 for r in batched)
    assert hcloud_client.actions.get_by_id(ids[0]).progress == 100


def test_running_action_reports_progress(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    fake_hetzner.time_scale = 1000.0
    response = create_server(hcloud_client, "progress")

    action = hcloud_client.actions.get_by_id(response.action.id)

    assert action.status == "running"
    assert 0 <= action.progress < 100
    assert action.finished is None


def test_failed_action_surfaces_as_action_failed(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    fake_hetzner.fail_next_action("create_server", code="server_error")
    response = create_server(hcloud_client, "doomed")

    with pytest.raises(ActionFailedException) as info:
        response.action.wait_until_finished()

    assert info.value.action.error is not None
    assert info.value.action.error["code"] == "server_error"
    start = hcloud_client.actions.get_by_id(response.next_actions[0].id)
    wait_until(lambda: hcloud_client.actions.get_by_id(start.id).status == "error")
    assert hcloud_client.servers.get_by_id(response.server.id).status == "off"


# --------------------------------------------------------------------------- primary IPs


def create_ipv6(client: hcloud.Client, name: str, *, auto_delete: bool) -> BoundPrimaryIP:
    return client.primary_ips.create(
        type="ipv6", name=name, location=Location(name="fsn1"), auto_delete=auto_delete
    ).primary_ip


def test_ipv6_only_server_gets_its_primary_ip_prefix(hcloud_client: hcloud.Client) -> None:
    ipv6 = create_ipv6(hcloud_client, "v6", auto_delete=True)
    assert ipv6.ip.endswith("::/64")

    server = create_server(
        hcloud_client,
        "v6-only",
        public_net=ServerCreatePublicNetwork(ipv6=ipv6, enable_ipv4=False),
    ).server

    assert server.public_net.ipv4 is None
    assert server.public_net.ipv6.ip == ipv6.ip
    assert server.public_net.primary_ipv6.id == ipv6.id
    assert hcloud_client.primary_ips.get_by_id(ipv6.id).assignee_id == server.id
    reuse = ServerCreatePublicNetwork(ipv6=ipv6, enable_ipv4=False)
    error = api_error(lambda: create_server(hcloud_client, "thief", public_net=reuse))
    assert error.code == "primary_ip_assigned"


def test_addresses_come_from_ranges_that_reach_no_real_machine(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    # Readiness and status polls dial these: IPv6 from the documentation prefix, IPv4 from
    # the benchmarking range (192.0.2.0/24 is this kind of host's own uplink); neither is
    # routed on the internet.
    for number in range(300):
        kind = "ipv4" if number % 2 else "ipv6"
        hcloud_client.primary_ips.create(
            type=kind, name=f"ip-{number}", location=Location(name="fsn1")
        )
    allowed = [ipaddress.ip_network("2001:db8::/32"), ipaddress.ip_network("198.18.0.0/15")]
    for ip in fake_hetzner.primary_ips.values():
        network = ipaddress.ip_network(ip.ip)
        assert any(network.subnet_of(a) for a in allowed if a.version == network.version), ip.ip
        assert not network.is_global
    assert len({ip.ip for ip in fake_hetzner.primary_ips.values()}) == 300


def test_a_hook_runs_before_the_matching_requests_only(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    seen: list[int] = []
    fake_hetzner.before("POST", "/servers", lambda: seen.append(len(fake_hetzner.servers)), times=2)
    hcloud_client.server_types.get_all()
    for name in ("one", "two", "three"):
        create_server(hcloud_client, name)
    assert seen == [0, 1]  # before the first and the second create, not the third


def test_primary_ips_with_auto_delete_go_with_their_server(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    doomed = create_ipv6(hcloud_client, "doomed", auto_delete=True)
    kept = create_ipv6(hcloud_client, "kept", auto_delete=False)
    servers: list[BoundServer] = []
    for name, ip in (("a", doomed), ("b", kept)):
        public_net = ServerCreatePublicNetwork(ipv6=ip, enable_ipv4=False)
        servers.append(create_server(hcloud_client, name, public_net=public_net).server)
    default_net = create_server(hcloud_client, "c").server
    auto_ips = [default_net.public_net.primary_ipv4.id, default_net.public_net.primary_ipv6.id]

    for server in [*servers, default_net]:
        server.delete().wait_until_finished()

    assert sorted(fake_hetzner.primary_ips) == [kept.id]
    assert hcloud_client.primary_ips.get_by_id(kept.id).assignee_id is None
    for ip_id in [doomed.id, *auto_ips]:
        error = api_error(lambda ip_id=ip_id: hcloud_client.primary_ips.get_by_id(ip_id))
        assert error.code == "not_found"
    assert hcloud_client.primary_ips.delete(kept)
    assert fake_hetzner.primary_ips == {}


# --------------------------------------------------------------------------- errors


def test_duplicate_names_are_uniqueness_errors(hcloud_client: hcloud.Client) -> None:
    key = public_key()
    create_server(hcloud_client, "twin")
    hcloud_client.ssh_keys.create("twin", public_key=key)
    hcloud_client.firewalls.create("twin")
    hcloud_client.placement_groups.create("twin", type="spread")
    create_ipv6(hcloud_client, "twin", auto_delete=False)

    duplicates: list[Callable[[], object]] = [
        lambda: create_server(hcloud_client, "twin"),
        lambda: hcloud_client.ssh_keys.create("twin", public_key=public_key()),
        lambda: hcloud_client.ssh_keys.create("other-name", public_key=key),
        lambda: hcloud_client.firewalls.create("twin"),
        lambda: hcloud_client.placement_groups.create("twin", type="spread"),
        lambda: create_ipv6(hcloud_client, "twin", auto_delete=False),
    ]
    for duplicate in duplicates:
        assert api_error(duplicate).code == "uniqueness_error"


def test_unknown_token_is_unauthorized(
    fake_hetzner: FakeHetzner, hcloud_client_factory: HcloudClientFactory
) -> None:
    client = hcloud_client_factory(token="not-a-token")

    assert api_error(client.locations.get_all).code == "unauthorized"
    status, headers, body = raw_get(fake_hetzner, "/locations", "not-a-token")
    assert status == 401
    assert body["error"]["code"] == "unauthorized"
    assert "RateLimit-Limit" in headers


def test_rate_limit_headers_and_exhaustion(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    fake_hetzner.set_rate_limit(4)
    token = fake_hetzner.token

    status, headers, _ = raw_get(fake_hetzner, "/locations", token)
    assert status == 200
    assert (headers["RateLimit-Limit"], headers["RateLimit-Remaining"]) == ("4", "3")
    assert int(headers["RateLimit-Reset"]) > time.time()
    hcloud_client.locations.get_all()
    hcloud_client.locations.get_all()
    hcloud_client.locations.get_all()  # the last one in the bucket

    # hcloud retries rate_limit_exceeded 5 times, then gives up.
    assert api_error(hcloud_client.locations.get_all).code == "rate_limit_exceeded"
    assert fake_hetzner.request_count(status=429) == 6
    status, headers, body = raw_get(fake_hetzner, "/locations", token)
    assert (status, body["error"]["code"]) == (429, "rate_limit_exceeded")
    assert headers["RateLimit-Remaining"] == "0"


# --------------------------------------------------------------------------- faults


def test_injected_error_surfaces_once(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    fault = fake_hetzner.inject(method="POST", path_prefix="/servers", status=503)

    assert api_error(lambda: create_server(hcloud_client, "x")).code == "unavailable"
    assert fake_hetzner.servers == {}
    create_server(hcloud_client, "x")
    assert fault.hits == 1


def test_injected_conflict_is_retried_by_hcloud(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    fake_hetzner.inject(path_prefix="/server_types", status=409, code="conflict", times=2)

    assert hcloud_client.server_types.get_by_name("cx22") is not None
    assert fake_hetzner.request_count("GET", "/server_types", status=409) == 2


def test_injected_rate_limit_has_headers_and_is_retried(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    fake_hetzner.inject_rate_limited(reset_after=30)
    status, headers, _ = raw_get(fake_hetzner, "/locations", fake_hetzner.token)
    assert status == 429
    assert headers["RateLimit-Remaining"] == "0"
    assert int(headers["RateLimit-Reset"]) >= time.time() + 29

    fake_hetzner.inject_rate_limited(path_prefix="/locations")
    assert len(hcloud_client.locations.get_all()) == 6
    assert [r.status for r in fake_hetzner.requests[-2:]] == [429, 200]


def test_resource_unavailable_in_one_location(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    fake_hetzner.set_location_unavailable("fsn1")

    error = api_error(lambda: create_server(hcloud_client, "x", location="fsn1"))
    assert error.code == "resource_unavailable"
    create_server(hcloud_client, "x", location="nbg1")
    cx22 = hcloud_client.server_types.get_by_name("cx22")
    availability = {entry.location.name: entry.available for entry in cx22.locations}
    assert availability == {"fsn1": False, "nbg1": True, "hel1": True}


def test_injected_locked(fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client) -> None:
    response = create_server(hcloud_client, "x")
    wait_running(response)
    fake_hetzner.inject_locked(path_prefix=f"/servers/{response.server.id}/actions")

    assert api_error(response.server.power_off).code == "locked"
    response.server.power_off().wait_until_finished()


def test_lost_response_after_create_closes_the_connection(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    fake_hetzner.inject_lost_response(method="POST", path_prefix="/servers")

    with pytest.raises(requests.ConnectionError):
        create_server(hcloud_client, "ghost")

    assert fake_hetzner.server_by_name("ghost") is not None  # created all the same
    assert api_error(lambda: create_server(hcloud_client, "ghost")).code == "uniqueness_error"
    lost = fake_hetzner.requests[-2]
    assert (lost.status, lost.fault) == (None, FaultKind.DROP)


def test_lost_response_before_create_creates_nothing(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    fake_hetzner.inject_lost_response(path_prefix="/servers", perform=False)

    with pytest.raises(requests.ConnectionError):
        create_server(hcloud_client, "ghost")

    assert fake_hetzner.servers == {}


def test_late_answer_after_client_timeout_turns_retry_into_uniqueness_error(
    fake_hetzner: FakeHetzner, hcloud_client_factory: HcloudClientFactory
) -> None:
    client = hcloud_client_factory(timeout=0.3)
    fake_hetzner.inject_lost_response(path_prefix="/servers", delay=2.0)

    # hcloud retries the timed-out POST, which finds the server it already created.
    assert api_error(lambda: create_server(client, "late")).code == "uniqueness_error"
    assert [s.name for s in fake_hetzner.servers.values()] == ["late"]


def test_slow_response(fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client) -> None:
    fake_hetzner.inject_slow_response(0.3, path_prefix="/locations")

    started = time.monotonic()
    hcloud_client.locations.get_all()

    assert time.monotonic() - started >= 0.3
    assert fake_hetzner.requests[-1].duration >= 0.3


# --------------------------------------------------------------------------- other resources


def test_firewall_crud_and_label_selector_application(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    ssh_in = FirewallRule(direction="in", protocol="tcp", port="22", source_ips=["::/0"])
    by_label = FirewallResource(
        type="label_selector", label_selector=FirewallResourceLabelSelector("forest=oak")
    )
    created = hcloud_client.firewalls.create(
        "oak-fw", rules=[ssh_in], resources=[by_label], labels={"forest": "oak"}
    )
    assert [a.command for a in created.actions] == ["set_firewall_rules", "apply_firewall"]
    direct = hcloud_client.firewalls.create("direct-fw").firewall
    server = create_server(
        hcloud_client, "oak-1", labels={"forest": "oak"}, firewalls=[direct]
    ).server

    assert sorted(fw.firewall.id for fw in server.public_net.firewalls) == sorted(
        [created.firewall.id, direct.id]
    )
    firewall = hcloud_client.firewalls.get_by_id(created.firewall.id)
    [applied] = firewall.applied_to
    assert applied.label_selector.selector == "forest=oak"
    assert [r.server.id for r in applied.applied_to_resources] == [server.id]
    [rule] = firewall.rules
    assert (rule.direction, rule.protocol, rule.port, rule.source_ips) == (
        "in",
        "tcp",
        "22",
        ["::/0"],
    )
    assert hcloud_client.firewalls.get_all(label_selector="forest=oak")[0].id == firewall.id

    https_in = FirewallRule(direction="in", protocol="tcp", port="443", source_ips=["::/0"])
    [set_rules] = firewall.set_rules([ssh_in, https_in])
    assert set_rules.command == "set_firewall_rules"
    assert len(fake_hetzner.firewalls[firewall.id].rules) == 2

    assert api_error(firewall.delete).code == "resource_in_use"
    server.delete().wait_until_finished()
    assert firewall.delete()
    assert hcloud_client.firewalls.delete(direct)
    assert fake_hetzner.firewalls == {}


def test_placement_group_holds_at_most_ten_servers(
    fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client
) -> None:
    group = hcloud_client.placement_groups.create("spread", type="spread").placement_group
    for n in range(10):
        create_server(hcloud_client, f"pg-{n}", placement_group=group)

    error = api_error(lambda: create_server(hcloud_client, "pg-10", placement_group=group))

    assert error.code == "placement_error"
    assert len(hcloud_client.placement_groups.get_by_id(group.id).servers) == 10
    assert hcloud_client.servers.get_by_name("pg-0").placement_group.id == group.id
    assert api_error(group.delete).code == "resource_in_use"
    for server in hcloud_client.servers.get_all():
        server.delete().wait_until_finished()
    assert hcloud_client.placement_groups.delete(PlacementGroup(id=group.id))
    assert fake_hetzner.placement_groups == {}


def test_ssh_key_crud(fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client) -> None:
    key = hcloud_client.ssh_keys.create("admin", public_key=public_key(), labels={"a": "b"})

    assert len(key.fingerprint.split(":")) == 16
    assert hcloud_client.ssh_keys.get_by_id(key.id).name == "admin"
    assert hcloud_client.ssh_keys.get_by_name("admin").id == key.id
    assert hcloud_client.ssh_keys.get_by_fingerprint(key.fingerprint).id == key.id
    assert hcloud_client.ssh_keys.get_all(label_selector="a=b")[0].id == key.id
    assert key.update(labels={"a": "c"}).labels == {"a": "c"}
    assert key.delete()
    assert api_error(lambda: hcloud_client.ssh_keys.get_by_id(key.id)).code == "not_found"
    error = api_error(lambda: hcloud_client.ssh_keys.create("bad", public_key="nonsense"))
    assert error.code == "invalid_input"
    assert fake_hetzner.ssh_keys == {}


def test_catalog_server_types_locations_and_images(hcloud_client: hcloud.Client) -> None:
    cx22 = hcloud_client.server_types.get_by_name("cx22")
    assert (cx22.cores, cx22.memory, cx22.disk, cx22.architecture) == (2, 4.0, 40, "x86")
    fsn1_price = next(p for p in cx22.prices if p["location"] == "fsn1")
    assert set(fsn1_price["price_monthly"]) == {"net", "gross"}
    assert float(fsn1_price["price_monthly"]["gross"]) > float(fsn1_price["price_monthly"]["net"])
    raw = hcloud_client.request("GET", "/server_types", params={"name": "cx11"})
    [cx11] = raw["server_types"]
    assert cx11["deprecation"]["unavailable_after"]
    assert {loc.name for loc in hcloud_client.locations.get_all()} >= {"fsn1", "nbg1", "ash"}
    arm = hcloud_client.images.get_by_name_and_architecture("ubuntu-24.04", "arm")
    assert arm is not None
    assert arm.architecture == "arm"

    on_arm = create_server(hcloud_client, "arm-1", server_type="cax11").server
    assert on_arm.image.id == arm.id
    deprecated = api_error(lambda: create_server(hcloud_client, "old", server_type="cx11"))
    assert deprecated.code == "invalid_input"
    elsewhere = api_error(lambda: create_server(hcloud_client, "us", location="ash"))
    assert elsewhere.code == "invalid_input"  # cx22 is offered in the EU only


def test_request_log_and_counters(fake_hetzner: FakeHetzner, hcloud_client: hcloud.Client) -> None:
    server = create_server(hcloud_client, "logged").server
    hcloud_client.servers.get_by_id(server.id)
    api_error(lambda: hcloud_client.servers.get_by_id(1))

    assert fake_hetzner.counters["POST /v1/servers"] == 1
    assert fake_hetzner.counters["GET /v1/servers/{id}"] == 2
    assert fake_hetzner.request_count("GET", "/servers", status=404) == 1
    last = fake_hetzner.requests[-1]
    assert (last.method, last.path, last.route, last.status) == (
        "GET",
        "/v1/servers/1",
        "/v1/servers/{id}",
        404,
    )
    assert last.started <= time.time()
