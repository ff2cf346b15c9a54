"""A registry a team shares: two "hosts" (processes with their own state directory and HOME)
on one real PostgreSQL, `registry info`, and `registry migrate` between the backends.

The cloud half (a forest planted by one host, torn down by the other, on the fake Hetzner
API) is in providers/hetzner/tests/test_shared_registry.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from morpheus.blueprint import RouteCredentials
from morpheus.models import NodeStatus, Ports
from morpheus.pki import ForestCA
from morpheus.registry import Registry
from morpheus.secret_codec import KEY_ENV, SEALED, KeySource, SecretCodec, new_key
from morpheus.secret_rows import SECRET_COLUMNS
from morpheus.sqlite_schema import FOREST_TABLES, GENERATED_COLUMNS
from morpheus.testing.cli import host_environment, invoke
from morpheus.testing.registry import new_forest

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OTHER_HOST = 4
GREW, BLOCKED = 10, 11
#: Small local nodes, so an idle nats-server is over `--threshold 3` of its memory.
NODE_MEMORY = {"MORPHEUS_PROVIDERS__LOCAL__NODE_MEMORY": "256M"}

Host = Callable[..., subprocess.CompletedProcess[str]]


def run(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "morpheus", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def hosts(tmp_path: Path, postgres_url: str) -> tuple[dict[str, str], dict[str, str]]:
    key = new_key()
    return (
        host_environment(tmp_path, "host-a", postgres_url, key, **NODE_MEMORY),
        host_environment(tmp_path, "host-b", postgres_url, key, **NODE_MEMORY),
    )


@pytest.mark.slow
def test_a_local_forest_is_shown_on_the_other_host_but_changed_only_on_its_own(
    hosts: tuple[dict[str, str], dict[str, str]], postgres_url: str
) -> None:
    a, b = hosts
    planted = run(a, "plant", "local", "small", "-o", "json")
    assert planted.returncode == 0, planted.stderr
    forest_id = json.loads(planted.stdout)["forest"]["id"]
    try:
        listed = run(b, "list", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        assert [f["id"] for f in json.loads(listed.stdout)] == [forest_id]
        shown = run(b, "status", forest_id)
        assert shown.returncode == 0, shown.stderr
        assert f"a local forest of host {os.uname().nodename}:" in shown.stdout
        for command in (["grow", forest_id, "--auto"], ["teardown", forest_id, "--yes"]):
            refused = run(b, *command)
            assert refused.returncode == OTHER_HOST, refused.stdout + refused.stderr
            (line,) = refused.stderr.splitlines()
            assert line.startswith(f"error: {forest_id} is a local forest of host ")
            assert "run the command there" in line
        info = run(b, "registry", "info", "-o", "json")
        assert json.loads(info.stdout)["backend"] == "postgresql"
        assert json.loads(info.stdout)["key"] == KEY_ENV  # named, never shown
        assert b[KEY_ENV] not in info.stdout
        assert postgres_url.split(":")[2].split("@")[0] not in info.stdout  # the password
    finally:
        torn = run(a, "teardown", forest_id, "--yes")
    assert torn.returncode == 0, torn.stdout + torn.stderr
    assert json.loads(run(b, "list", "-o", "json").stdout) == []


@pytest.mark.slow
def test_ten_grow_auto_runs_from_two_hosts_add_exactly_one_node(
    hosts: tuple[dict[str, str], dict[str, str]], postgres_url: str
) -> None:
    """Five cron runs on each host at once: the advisory lock in the shared database lets
    one grow; the others then see its growth's cooldown.  The forest is made one both hosts
    may change (no host recorded, as a cloud forest has none) and host B reaches its nodes
    (its local provider's directory is host A's), so only the lock keeps them apart."""
    a, b = hosts
    planted = run(a, "plant", "local", "medium", "-o", "json")
    assert planted.returncode == 0, planted.stderr
    forest_id = json.loads(planted.stdout)["forest"]["id"]
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("UPDATE forests SET host = NULL WHERE id = %s", (forest_id,))
    state_b = Path(b["MORPHEUS_STATE_DIR"])
    state_b.mkdir(parents=True, exist_ok=True)
    (state_b / "local").symlink_to(Path(a["MORPHEUS_STATE_DIR"]) / "local")
    try:
        command = [sys.executable, "-m", "morpheus", "grow", forest_id, "--auto"]
        runs = [
            subprocess.Popen(
                # A long --timeout: ten processes starting at once on a loaded host must not
                # turn a slow poll into "unreachable"; only the lock is under test.
                [*command, "--threshold", "3", "--timeout", "30", "-o", "json"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for env in (a, b) * 5
        ]
        reports = []
        for process in runs:
            out, err = process.communicate(timeout=300)
            assert process.returncode in (GREW, BLOCKED), err
            reports.append(json.loads(out))
        added = [name for report in reports for name in report["nodes_added"]]
        assert added == ["node-4"]
        cooled = [r for r in reports if r["decision"]["reason"] == "cooldown"]
        assert len(cooled) == 9, [(r["decision"], r.get("load")) for r in reports]
        shown = json.loads(run(b, "status", forest_id, "-o", "json").stdout)
        assert len(shown["nodes"]) == 4
    finally:
        torn = run(a, "teardown", forest_id, "--yes")
    assert torn.returncode == 0, torn.stdout + torn.stderr


# -- registry migrate ----------------------------------------------------------------------


def record_forests(registry: Registry) -> tuple[str, str]:
    """A local forest (recorded before forests named their host) and a cloud one, each with
    nodes, a CA, node certificates and events: every table has rows."""
    made = []
    for provider in ("local", "hetzner"):
        ca = ForestCA.generate("run-1", NOW)
        forest = registry.create_forest(
            provider=provider,
            size="medium",
            location=None if provider == "local" else "fsn1",
            run_id="run-1",
            credentials=RouteCredentials.generate(),
            now=NOW,
            planned_nodes=3,
            ca=ca,
        )
        for node in registry.nodes(forest.id):
            active = node.model_copy(
                update={
                    "status": NodeStatus.ACTIVE,
                    "host": f"2001:db8::{node.index}",
                    "provider_id": f"srv-{node.index}",
                    "ports": Ports(),
                }
            )
            registry.save_node(active)
            registry.save_node_certificate(
                forest.id, node.id, ca.issue(node.id, [f"2001:db8::{node.index}"], NOW)
            )
        registry.add_event(forest.id, "planted", "3 node(s) active", NOW)
        registry.set_last_expansion(forest.id, NOW)
        made.append(forest.id)
    return made[0], made[1]


def dump(registry: Registry) -> dict[str, list[dict[str, Any]]]:
    """Every row of every forest table, as stored (generated ids left out, order kept)."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for table, key in FOREST_TABLES:
        order = GENERATED_COLUMNS.get(table, key)
        rows = registry.store.read(f"SELECT * FROM {table} ORDER BY {key}, {order}")
        skip = GENERATED_COLUMNS.get(table)
        tables[table] = [
            {name: row[name] for name in row.keys() if name != skip}  # noqa: SIM118
            for row in rows
        ]
    return tables


def opened(tables: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """``tables`` with every secret as the registry key (``registry_key``) opens it."""
    codec = SecretCodec(KeySource.find(None))
    for secret in SECRET_COLUMNS:
        for row in tables.get(secret.table, []):
            if row[secret.column] is not None:
                row[secret.column] = codec.open(row[secret.column], "a secret")
    return tables


def test_migrate_moves_local_and_cloud_forests_to_postgresql_and_back_losslessly(
    postgres_url: str,
    registry_key: str,
    state_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Registry.in_state_dir(state_dir) as sqlite:
        local_id, cloud_id = record_forests(sqlite)
        before = dump(sqlite)
        this_host = sqlite.host
    assert [f["host"] for f in before["forests"]] == [None, None]

    dry = invoke("registry", "migrate", "--to", postgres_url, "--dry-run", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    assert [f["copied"] for f in json.loads(dry.stdout)["forests"]] == [True, True]
    assert tables_in(postgres_url) == []  # a dry run creates no table, not even the schema's

    moved = invoke("registry", "migrate", "--to", postgres_url)
    assert moved.returncode == 0, moved.stderr
    assert f"copied {local_id} (3 node(s), 2 event(s))" in moved.stdout
    password = postgres_url.split(":")[2].split("@")[0]
    assert password not in moved.stdout and "***" in moved.stdout
    again = invoke("registry", "migrate", "--to", postgres_url)
    assert f"already there: {local_id}" in again.stdout and "0 forest(s) copied" in again.stdout
    dry = invoke("registry", "migrate", "--to", postgres_url, "--dry-run", "-o", "json")
    assert [f["copied"] for f in json.loads(dry.stdout)["forests"]] == [False, False]

    # The local forest now names this host (it was this host's); the plain secrets of the
    # SQLite file are encrypted in the shared registry; nothing else changed.
    expected = json.loads(json.dumps(before))
    expected["forests"][0]["host"] = this_host
    with Registry.open(postgres_url, state_dir) as postgres:
        stored = dump(postgres)
        # A forest without nodes to reach over SSH (the local one) has no client key: NULL.
        values = [
            row[secret.column]
            for secret in SECRET_COLUMNS
            for row in stored[secret.table]
            if row[secret.column] is not None
        ]
        assert values and all(value.startswith(SEALED) for value in values)
        assert opened(stored) == expected
        assert postgres.get_forest(cloud_id).host is None

    # And back, from the PostgreSQL registry in use into a new SQLite file.
    monkeypatch.setenv("MORPHEUS_REGISTRY__URL", postgres_url)
    back = tmp_path / "elsewhere" / "registry.sqlite3"
    returned = invoke("registry", "migrate", "--to", f"sqlite://{back}")
    assert returned.returncode == 0, returned.stderr
    secrets = SecretCodec(KeySource.find(None))
    with Registry.open(f"sqlite://{back}", state_dir, secrets=secrets) as copy:
        assert opened(dump(copy)) == expected
        assert copy.route_credentials(local_id) == _credentials(state_dir, local_id)
        assert [e.kind for e in copy.events(cloud_id)] == ["planting", "planted"]
    assert oct(back.stat().st_mode & 0o777) == "0o600"


def tables_in(url: str) -> list[str]:
    """The tables of the database ``url``, asked of the server directly."""
    import psycopg

    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
    return sorted(str(row[0]) for row in rows)


def _credentials(state_dir: Path, forest_id: str) -> RouteCredentials:
    with Registry.in_state_dir(state_dir) as original:
        return original.route_credentials(forest_id)


def test_migrate_refuses_the_registry_in_use_and_a_bad_url(state_dir: Path) -> None:
    Registry.in_state_dir(state_dir).close()
    same = invoke("registry", "migrate", "--to", f"sqlite://{state_dir / 'registry.sqlite3'}")
    assert same.returncode == 2 and "names the registry in use" in same.stderr
    bad = invoke("registry", "migrate", "--to", "mysql://u:s3cret@db/m")
    assert bad.returncode == 2 and "not a registry URL" in bad.stderr
    assert "s3cret" not in bad.stderr


def test_a_dry_run_into_a_sqlite_registry_changes_nothing(state_dir: Path, tmp_path: Path) -> None:
    with Registry.in_state_dir(state_dir) as registry:
        first, second = new_forest(registry), new_forest(registry)
    target = tmp_path / "other" / "registry.sqlite3"
    with Registry.open(f"sqlite://{target}", state_dir, recover=True) as other:
        assert new_forest(other) == first  # the same id: already there
    files = sorted(target.parent.iterdir())
    before = [path.read_bytes() for path in files]
    dry = invoke("registry", "migrate", "--to", f"sqlite://{target}", "--dry-run", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    forests = json.loads(dry.stdout)["forests"]
    assert [(f["forest"], f["copied"]) for f in forests] == [(first, False), (second, True)]
    assert sorted(target.parent.iterdir()) == files
    assert [path.read_bytes() for path in files] == before


def test_every_table_of_the_schema_is_copied_by_migrate(state_dir: Path) -> None:
    """A migration that adds a table must list it in FOREST_TABLES, or migrate loses it."""
    with Registry.in_state_dir(state_dir) as registry:
        tables = {
            row[0]
            for row in registry.store.read(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
    assert tables == {table for table, _key in FOREST_TABLES}


def test_registry_info_on_sqlite(state_dir: Path) -> None:
    result = invoke("registry", "info")
    assert result.returncode == 0, result.stderr
    assert "Backend:  sqlite" in result.stdout
    assert f"Location: {state_dir / 'registry.sqlite3'}" in result.stdout
    assert "Key:      no key" in result.stdout
