"""Importing the older Go tool's registry.json: parsing, planning, writing, idempotency."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from morpheus.errors import LegacyRegistryError
from morpheus.listing import forest_summaries
from morpheus.models import ForestStatus, NodeStatus
from morpheus.registry import Registry
from morpheus.services import Context
from morpheus.services.migrate import (
    IMPORTED_RUN_ID,
    ImportPlan,
    import_registry,
    plan_import,
)
from morpheus.settings import Settings

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def go_forest(forest_id: str, **fields: Any) -> dict[str, Any]:
    """A forest as the Go tool's encoding/json wrote it (every field, zero values included)."""
    return {
        "id": forest_id,
        "provider": "hetzner",
        "location": "fsn1",
        "size": "medium",
        "status": "active",
        "created_at": "2025-12-31T12:53:48.123456789+01:00",
        "registry_url": "",
        "last_expansion": "0001-01-01T00:00:00Z",
        **fields,
    }


def go_node(server_id: str, forest_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": server_id,
        "forest_id": forest_id,
        "ip": "2a01:4f8:c012:abcd::1",
        "role": "edge",
        "location": "fsn1",
        "status": "active",
        "metadata": {"forest_id": forest_id},
        "created_at": "2025-12-31T12:55:02Z",
        **fields,
    }


def legacy_file(tmp_path: Path, data: Any, name: str = "registry.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


@pytest.fixture
def context(state_dir: Path) -> Iterator[Context]:
    with Registry.in_state_dir(state_dir) as registry:
        yield Context(
            settings=Settings(), state_dir=state_dir, registry=registry, clock=lambda: NOW
        )


@pytest.fixture
def three_versions(tmp_path: Path) -> Path:
    """One forest from each era of the Go tool's format."""
    return legacy_file(
        tmp_path,
        {
            "version": 1,
            "updated_at": "2026-01-05T10:50:37Z",
            "forests": {
                # December 2025: sizes named wood/forest/jungle, nodes with a role.
                "forest-1735000000": go_forest(
                    "forest-1735000000", size="jungle", created_at="2025-12-24T00:26:40Z"
                ),
                # January 2026: small/medium/large and last_expansion.
                "forest-1736000000": go_forest(
                    "forest-1736000000",
                    size="small",
                    created_at="2026-01-04T14:13:20Z",
                    last_expansion="2026-01-04T15:00:00Z",
                ),
                # Later: node_count instead of size; IPv6 and IPv4 recorded apart.
                "forest-1737000000": {
                    k: v
                    for k, v in go_forest(
                        "forest-1737000000", node_count=2, created_at="2026-01-16T04:00:00Z"
                    ).items()
                    if k != "size"
                },
            },
            "nodes": {
                "forest-1735000000": [
                    go_node(str(100 + i), "forest-1735000000", ip=f"2a01:4f8::{i}")
                    for i in range(1, 6)
                ],
                "forest-1736000000": [go_node("200", "forest-1736000000")],
                "forest-1737000000": [
                    go_node(
                        "300",
                        "forest-1737000000",
                        ip="2a01:4f8:0:0::1",
                        ipv6="2a01:4f8::1",
                        ipv4="203.0.113.7",
                    ),
                    go_node(
                        "301",
                        "forest-1737000000",
                        ip="203.0.113.8",
                        ipv4="203.0.113.8",
                        status="provisioning",
                    ),
                ],
            },
        },
    )


# planning ------------------------------------------------------------------------------


def test_plan_reads_every_version_of_the_format(three_versions: Path) -> None:
    plan = plan_import(three_versions)
    assert [p.forest.id for p in plan.forests] == [
        "forest-1735000000",
        "forest-1736000000",
        "forest-1737000000",
    ]
    jungle, small, counted = plan.forests
    assert jungle.forest.size == "large"
    assert small.forest.size == "small"
    assert counted.forest.size == "custom"  # two nodes is none of the named sizes
    assert jungle.forest.last_expansion is None  # Go's zero time
    assert small.forest.last_expansion == datetime(2026, 1, 4, 15, 0, tzinfo=UTC)
    assert [n.name for n in jungle.nodes] == [f"node-{i}" for i in range(1, 6)]
    assert all(p.forest.run_id == IMPORTED_RUN_ID for p in plan.forests)


def test_plan_keeps_addresses_and_server_ids(three_versions: Path) -> None:
    counted = plan_import(three_versions).forests[2]
    first, second = counted.nodes
    assert first.provider_id == "300"
    assert first.host == "2a01:4f8::1"  # normalised, and "ip" and "ipv6" are one address
    assert first.addresses == ["2a01:4f8::1", "203.0.113.7"]
    assert first.status == NodeStatus.ACTIVE
    assert second.host == "203.0.113.8"
    assert second.addresses == ["203.0.113.8"]
    assert second.status == NodeStatus.FAILED  # "provisioning" in a retired tool never finishes
    assert first.id == "forest-1737000000-node-1"
    assert first.location == "fsn1"


def test_unfinished_forest_is_imported_as_failed_with_a_note(tmp_path: Path) -> None:
    path = legacy_file(
        tmp_path,
        {"forests": {"forest-9": go_forest("forest-9", status="provisioning")}, "nodes": {}},
    )
    plan = plan_import(path)
    assert plan.forests[0].forest.status == ForestStatus.FAILED
    assert plan.notes == (
        "forest-9 was 'provisioning' in the older tool: imported as failed; "
        "`morpheus teardown forest-9` removes what is left of it",
    )


def test_docker_forests_and_uninstalled_providers_are_skipped(tmp_path: Path) -> None:
    path = legacy_file(
        tmp_path,
        {
            "forests": {
                "forest-1": go_forest("forest-1", provider="local"),
                "forest-2": go_forest("forest-2", provider="proxmox"),
                "forest-3": go_forest("forest-3"),
            },
            "nodes": None,
        },
    )
    plan = plan_import(path, providers={"local", "hetzner"})
    assert [p.forest.id for p in plan.forests] == ["forest-3"]
    reasons = {s.forest_id: s.reason for s in plan.skipped}
    assert "Docker containers" in reasons["forest-1"]
    assert reasons["forest-2"] == (
        "provider 'proxmox' is not installed; install its plugin and import again"
    )


def test_orphan_nodes_are_noted_not_imported(tmp_path: Path) -> None:
    path = legacy_file(
        tmp_path, {"forests": {}, "nodes": {"forest-gone": [go_node("1", "forest-gone")]}}
    )
    plan = plan_import(path)
    assert plan.forests == ()
    assert plan.notes == (
        "nodes recorded for 'forest-gone', a forest the file does not list, are left",
    )


def test_null_maps_as_go_writes_them(tmp_path: Path) -> None:
    plan = plan_import(legacy_file(tmp_path, {"forests": None, "nodes": None}))
    assert plan.forests == ()


# broken files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"registry\.json:1: not JSON \(Expecting property name"),
        ("", r"registry\.json:1: not JSON"),
        ("[1, 2]", r'registry\.json: the top level must be an object with "forests"'),
        ({"nodes": {}}, r"registry\.json: forests: Field required"),
        (
            {"forests": {"forest-1": {"id": "forest-1", "status": "active"}}},
            r"forests\.forest-1\.provider: Field required \(and 1 more problem\)",
        ),
        (
            {"forests": {"forest-1": go_forest("forest-1", created_at=1735000000)}},
            r"forests\.forest-1\.created_at: Input should be a valid datetime",
        ),
        (
            {"forests": {"forest-1": go_forest("forest-1", node_count="3")}},
            r"forests\.forest-1\.node_count: Input should be a valid integer",
        ),
        (
            {"forests": {"forest-1": go_forest("forest-1", status=True)}},
            r"forests\.forest-1\.status: Input should be a valid string",
        ),
        (
            {"forests": {"Forest 1": go_forest("Forest 1")}},
            r"forests\.Forest 1\.id: a forest id is lowercase letters, digits and dashes",
        ),
        (
            {
                "forests": {"forest-1": go_forest("forest-1")},
                "nodes": {"forest-1": [go_node("1", "forest-1", ip="10.0.0.300")]},
            },
            r"nodes\.forest-1\.0\.ip: '10\.0\.0\.300' is not an IP address",
        ),
        (
            {"forests": {"forest-1": go_forest("forest-1")}, "nodes": {"forest-1": {"a": 1}}},
            r"nodes\.forest-1: Input should be a valid array",
        ),
        (
            {"forests": {"forest-1": go_forest("forest-2")}},
            r"forests\.forest-1: its id is 'forest-2'; the file is inconsistent",
        ),
        (
            {
                "forests": {"forest-1": go_forest("forest-1")},
                "nodes": {"forest-1": [go_node("7", "forest-1"), go_node("7", "forest-1")]},
            },
            r"nodes\.forest-1: node '7' is listed twice",
        ),
    ],
)
def test_broken_file_is_one_line_naming_the_problem(
    tmp_path: Path, content: Any, message: str
) -> None:
    path = legacy_file(tmp_path, content)
    with pytest.raises(LegacyRegistryError, match=message) as raised:
        plan_import(path)
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith(str(path))


def test_missing_file_says_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(LegacyRegistryError, match=r"does not exist; give the path of the older"):
        plan_import(tmp_path / "nope.json")


def test_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(LegacyRegistryError, match=r"^cannot read .*registry\.json"):
        plan_import(path)


# importing -----------------------------------------------------------------------------


def test_dry_run_writes_nothing(context: Context, three_versions: Path) -> None:
    before = three_versions.read_bytes()
    plan = plan_import(three_versions, context.registry.forest_ids())
    assert len(plan.forests) == 3
    assert context.registry.list_forests() == []
    assert forest_summaries(context.state_dir) == []
    assert three_versions.read_bytes() == before


def test_import_records_forests_nodes_and_an_event(context: Context, three_versions: Path) -> None:
    result = import_registry(context, plan_import(three_versions))
    assert [p.forest.id for p in result.imported] == [
        "forest-1735000000",
        "forest-1736000000",
        "forest-1737000000",
    ]
    registry = context.registry
    forest = registry.get_forest("forest-1737000000")
    assert forest.provider == "hetzner"
    assert forest.location == "fsn1"
    assert forest.status == ForestStatus.ACTIVE
    assert forest.created_at == datetime(2026, 1, 16, 4, 0, tzinfo=UTC)
    nodes = registry.nodes(forest.id)
    assert [(n.name, n.provider_id, n.host, n.addresses) for n in nodes] == [
        ("node-1", "300", "2a01:4f8::1", ["2a01:4f8::1", "203.0.113.7"]),
        ("node-2", "301", "203.0.113.8", ["203.0.113.8"]),
    ]
    (event,) = registry.events(forest.id)
    assert event.kind == "imported"
    assert event.message.startswith(f"imported from {three_versions} (2 nodes")
    assert event.at == NOW
    # Each forest gets its own route credentials, so it can grow later.
    first = registry.route_credentials("forest-1735000000").password.get_secret_value()
    second = registry.route_credentials("forest-1737000000").password.get_secret_value()
    assert first != second
    # `list` reads the same rows.
    summaries = {s.id: s.node_count for s in forest_summaries(context.state_dir)}
    assert summaries == {"forest-1735000000": 5, "forest-1736000000": 1, "forest-1737000000": 2}


def test_growth_numbering_continues_after_imported_nodes(
    context: Context, three_versions: Path
) -> None:
    import_registry(context, plan_import(three_versions))
    (added,) = context.registry.plan_nodes("forest-1735000000", 1, NOW)
    assert added.name == "node-6"


def test_importing_twice_imports_once(context: Context, three_versions: Path) -> None:
    first = import_registry(context, plan_import(three_versions, context.registry.forest_ids()))
    assert len(first.imported) == 3
    again = plan_import(three_versions, context.registry.forest_ids())
    assert again.forests == ()
    assert {s.reason for s in again.skipped} == {"already in the registry"}
    second = import_registry(context, again)
    assert second.imported == []
    assert len(context.registry.list_forests()) == 3
    assert len(context.registry.nodes("forest-1735000000")) == 5
    assert len(context.registry.events("forest-1735000000")) == 1


def test_a_stale_plan_does_not_duplicate(context: Context, three_versions: Path) -> None:
    plan: ImportPlan = plan_import(three_versions)
    import_registry(context, plan)
    result = import_registry(context, plan)  # e.g. two terminals running the import at once
    assert result.imported == []
    assert [s.reason for s in result.skipped] == ["already in the registry"] * 3
    assert len(context.registry.nodes("forest-1737000000")) == 2


def test_an_existing_forest_is_left_alone(context: Context, tmp_path: Path) -> None:
    from morpheus.blueprint import RouteCredentials

    ours = context.registry.create_forest(
        provider="local",
        size="small",
        location=None,
        run_id="run-1",
        credentials=RouteCredentials.generate(),
        now=NOW,
    )
    path = legacy_file(
        tmp_path,
        {"forests": {ours.id: go_forest(ours.id)}, "nodes": {ours.id: [go_node("1", ours.id)]}},
    )
    plan = plan_import(path, context.registry.forest_ids())
    assert plan.forests == ()
    assert plan.skipped[0].forest_id == ours.id
    import_registry(context, plan)
    assert context.registry.get_forest(ours.id).provider == "local"
    assert context.registry.nodes(ours.id) == []


def test_forest_whose_nodes_share_an_address_is_skipped(tmp_path: Path) -> None:
    # Issue 16 item 4: grow polled and counted each copy.
    path = legacy_file(
        tmp_path,
        {
            "forests": {"forest-1": go_forest("forest-1"), "forest-2": go_forest("forest-2")},
            "nodes": {
                "forest-1": [
                    go_node("101", "forest-1", ip="2a01:4f8::1"),
                    go_node("102", "forest-1", ip="2a01:4f8::2", ipv4="203.0.113.9"),
                    go_node("103", "forest-1", ip="2a01:4f8:0:0::1"),  # the same as 101
                ],
                "forest-2": [go_node("201", "forest-2", ip="2a01:4f8::1")],  # another forest
            },
        },
    )
    plan = plan_import(path)
    assert [p.forest.id for p in plan.forests] == ["forest-2"]
    [skipped] = plan.skipped
    assert skipped.forest_id == "forest-1"
    assert skipped.reason == (
        "nodes '101' and '103' both have address 2a01:4f8::1; "
        "remove the stale one from the file and import again"
    )
