"""A damaged registry: every sqlite3 error is one RegistryError, failed writes leave nothing,
rows read back are checked, and a lost registry is never silently recreated empty."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from morpheus.blueprint import RouteCredentials
from morpheus.errors import DamagedRegistryError, RegistryError
from morpheus.registry import Registry
from morpheus.testing.registry import NOW, new_forest


@pytest.fixture
def registry(state_dir: Path) -> Iterator[Registry]:
    with Registry.in_state_dir(state_dir) as opened:
        yield opened


def _sql(state_dir: Path, *statements: str) -> None:
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        for statement in statements:
            db.execute(statement)


@pytest.mark.parametrize(
    ("damage", "call"),
    [
        ("DROP TABLE events", lambda r, f: r.events(f)),
        ("DROP TABLE events", lambda r, f: r.add_event(f, "x", "y", NOW)),
        ("ALTER TABLE nodes DROP COLUMN capacity", lambda r, f: r.nodes(f)),
        ("DROP TABLE route_credentials", lambda r, f: r.route_credentials(f)),
        ("DROP TABLE nodes", lambda r, f: r.plan_nodes(f, 1, NOW)),
    ],
    ids=["events-read", "events-write", "nodes-column", "credentials", "nodes-write"],
)
def test_a_missing_table_is_one_registry_error(
    registry: Registry, state_dir: Path, damage: str, call: object
) -> None:
    forest_id = new_forest(registry)
    registry.plan_nodes(forest_id, 1, NOW)
    _sql(state_dir, "PRAGMA foreign_keys = OFF", damage)
    with pytest.raises(DamagedRegistryError, match="registry rebuild") as caught:
        call(registry, forest_id)  # type: ignore[operator]
    assert "\n" not in str(caught.value)


def test_a_failed_write_leaves_no_planting_row(registry: Registry, state_dir: Path) -> None:
    """A full disk at the nodes' insert: the forest's row goes with it, nothing half-made."""
    _sql(
        state_dir,
        "CREATE TRIGGER full BEFORE INSERT ON nodes BEGIN "
        "SELECT RAISE(ABORT, 'database or disk is full'); END",
    )
    with pytest.raises(RegistryError, match="free space on that disk"):
        registry.create_forest(
            provider="local",
            size="medium",
            location=None,
            run_id="run-1",
            credentials=RouteCredentials.generate(),
            now=NOW,
            planned_nodes=3,
        )
    assert registry.list_forests() == []
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        for table in ("forests", "nodes", "route_credentials", "events"):
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
    # The registry itself is still usable afterwards.
    _sql(state_dir, "DROP TRIGGER full")
    assert new_forest(registry).startswith("forest-")


def test_a_busy_registry_says_try_again_and_never_to_move_it(
    registry: Registry, state_dir: Path
) -> None:
    holder = sqlite3.connect(state_dir / "registry.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        registry.store._db.execute("PRAGMA busy_timeout = 50")
        with pytest.raises(RegistryError, match="busy") as caught:
            new_forest(registry)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "aside" not in str(caught.value) and "rebuild" not in str(caught.value)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("id", "../../../etc"),
        ("forest_id", "../victim"),
        ("name", "node-1/../../x"),
        ("host", "127.0.0.1\n  listen: 0.0.0.0"),
        ("addresses", '["10.0.0.1; reboot"]'),
        ("ports", '{"client": -1}'),
        ("status", "exploded"),
        ("created_at", "yesterday"),
        ("provider_id", "id\u001b]0;pwned\u0007"),
    ],
)
def test_crafted_node_rows_are_refused_before_use(
    registry: Registry, state_dir: Path, column: str, value: str
) -> None:
    forest_id = new_forest(registry)
    registry.plan_nodes(forest_id, 1, NOW)
    if column == "id":
        _sql(state_dir, "PRAGMA foreign_keys = OFF")
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        db.execute(f"UPDATE nodes SET {column} = ?", (value,))
    if column == "forest_id":
        # The row no longer belongs to the forest; it is refused where it is listed.
        with sqlite3.connect(state_dir / "registry.sqlite3") as db:
            db.execute("UPDATE nodes SET forest_id = ?", (forest_id,))
            db.execute("UPDATE nodes SET name = ?", (value,))
    with pytest.raises(DamagedRegistryError, match="is damaged") as caught:
        registry.nodes(forest_id)
    message = str(caught.value)
    assert "\x1b" not in message and "\x07" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("column", "value"),
    [("id", "../../victim"), ("provider", "local/../x"), ("run_id", "run 1"), ("status", "x")],
)
def test_crafted_forest_rows_are_refused_before_use(
    registry: Registry, state_dir: Path, column: str, value: str
) -> None:
    new_forest(registry)
    _sql(state_dir, "PRAGMA foreign_keys = OFF", f"UPDATE forests SET {column} = '{value}'")
    with pytest.raises(DamagedRegistryError, match="is damaged"):
        registry.list_forests()


def test_text_read_back_is_made_printable(registry: Registry, state_dir: Path) -> None:
    forest_id = new_forest(registry)
    registry.add_event(forest_id, "note", "red \x1b[31malert\x1b[0m\r\u202eevil", NOW)
    _sql(state_dir, "UPDATE forests SET size = 'small\x1b[2J', location = 'fsn1\x07'")
    (forest,) = registry.list_forests()
    assert forest.size == "small\\x1b[2J" and forest.location == "fsn1\\x07"
    message = registry.events(forest_id)[-1].message
    assert message == "red \\x1b[31malert\\x1b[0m\\r\\u202eevil"


@pytest.mark.parametrize("leftover", ["local/forest-1/forest-1-node-1", "locks"])
@pytest.mark.parametrize("state", ["missing", "empty"])
def test_a_lost_registry_beside_forests_is_never_recreated_empty(
    state_dir: Path, leftover: str, state: str
) -> None:
    (state_dir / leftover).mkdir(parents=True)
    if leftover == "locks":
        (state_dir / "locks" / "forest-1.lock").touch()
    if state == "empty":
        (state_dir / "registry.sqlite3").touch()
    with pytest.raises(DamagedRegistryError, match="registry rebuild") as caught:
        Registry.in_state_dir(state_dir)
    assert f"is {state}, but forests remain" in str(caught.value) and "forest-1" in str(
        caught.value
    )
    assert not (state_dir / "registry.sqlite3").exists() or (
        (state_dir / "registry.sqlite3").stat().st_size == 0
    )
    with Registry.in_state_dir(state_dir, recover=True) as recovered:
        assert recovered.list_forests() == []


def test_an_empty_file_alone_is_a_new_registry(state_dir: Path) -> None:
    state_dir.mkdir()
    (state_dir / "registry.sqlite3").touch()
    with Registry.in_state_dir(state_dir) as registry:
        assert registry.list_forests() == []
