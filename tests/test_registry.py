"""The registry's contract, kept by both backends: every test taking ``registry`` (or
``registry_url``) runs against SQLite and against a real PostgreSQL server.

Ids, numbering, events, credentials, the schema version, the forest lock and real
concurrency; then what only the SQLite file has (its mode, an old schema, a damaged file).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from morpheus.errors import ForestNotFoundError, RegistryError
from morpheus.models import ForestStatus, NodeStatus
from morpheus.registry import SCHEMA_VERSION, Registry
from morpheus.secret_codec import KeySource, SecretCodec
from morpheus.testing.registry import NOW, new_forest


@pytest.fixture
def registry(registry_url: str, state_dir: Path) -> Iterator[Registry]:
    secrets = SecretCodec(KeySource.find(None))  # registry_key's, on PostgreSQL
    with Registry.open(registry_url, state_dir, secrets=secrets) as opened:
        yield opened


def test_file_is_private_and_versioned(state_dir: Path) -> None:
    Registry.in_state_dir(state_dir).close()
    path = state_dir / "registry.sqlite3"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(state_dir).st_mode & 0o077 == 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_newer_schema_is_refused(registry: Registry, registry_url: str, state_dir: Path) -> None:
    assert registry.store.schema_version() == SCHEMA_VERSION
    registry.close()
    if registry.store.backend == "sqlite":
        with sqlite3.connect(state_dir / "registry.sqlite3") as db:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    else:
        import psycopg

        with psycopg.connect(registry_url, autocommit=True) as db:
            db.execute("UPDATE morpheus_schema SET version = version + 1")
    with pytest.raises(RegistryError, match=r"newer Morpheus .* upgrade morpheus"):
        Registry.open(registry_url, state_dir)


def test_a_schema_1_registry_is_migrated_and_its_forests_keep_plain_routes(
    state_dir: Path,
) -> None:
    from morpheus.sqlite_schema import SCHEMA

    state_dir.mkdir(parents=True)
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        db.executescript(SCHEMA)
        db.execute(
            "INSERT INTO forests (id, provider, size, status, created_at, cluster_name,"
            " credentials_ref, run_id) VALUES ('forest-1', 'local', 'small', 'active',"
            " '2026-01-01T00:00:00+00:00', 'forest-1', 'ref', 'run-1')"
        )
        db.execute("INSERT INTO route_credentials VALUES ('forest-1', 'morpheus-route', 'pw')")
        db.execute("PRAGMA user_version = 1")
    with Registry.in_state_dir(state_dir) as registry:
        assert registry.forest_ca("forest-1") is None  # recorded before TLS: plain routes
        assert registry.route_credentials("forest-1").password.get_secret_value() == "pw"
        assert registry.node_certificate("forest-1-node-1") is None
        assert registry.ssh_client_key("forest-1") is None  # made when first needed
        assert registry.ssh_host_key("forest-1-node-1") is None
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_forest_ca_and_node_keys_are_kept_and_go_with_their_rows(registry: Registry) -> None:
    from morpheus.pki import ForestCA

    ca = ForestCA.generate("run-1", NOW)
    forest_id = new_forest(registry, ca=ca)
    assert registry.forest_ca(forest_id) == ca
    first, second = registry.plan_nodes(forest_id, 2, NOW)
    for node in (first, second):
        registry.save_node_certificate(forest_id, node.id, ca.issue(node.id, ["192.0.2.1"], NOW))
    newer = ca.issue(first.id, ["192.0.2.9"], NOW)
    registry.save_node_certificate(forest_id, first.id, newer)
    assert registry.node_certificate(first.id) == newer
    registry.delete_node(first.id)
    assert registry.node_certificate(first.id) is None
    registry.delete_node(second.id)
    registry.delete_forest(forest_id)
    assert registry.node_certificate(second.id) is None


def test_ssh_keys_are_kept_public_half_only_for_hosts(registry: Registry) -> None:
    from morpheus.pki import SshKeyPair

    forest_id = new_forest(registry, provider="hetzner")
    client, host = SshKeyPair.generate(), SshKeyPair.generate()
    registry.save_ssh_client_key(forest_id, client)
    assert registry.ssh_client_key(forest_id) == client
    (node,) = registry.plan_nodes(forest_id, 1, NOW)
    registry.save_ssh_host_key(forest_id, node.id, host.public)
    assert registry.ssh_host_key(node.id) == host.public
    stored = " ".join(str(tuple(row)) for row in registry.store.read("SELECT * FROM ssh_host_keys"))
    assert host.public in stored
    assert host.private.get_secret_value() not in stored
    registry.delete_node(node.id)
    assert registry.ssh_host_key(node.id) is None
    registry.delete_forest(forest_id)
    assert registry.ssh_client_key(forest_id) is None


def test_garbage_file_is_a_registry_error(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    (state_dir / "registry.sqlite3").write_bytes(b"not a database at all" * 100)
    with pytest.raises(RegistryError, match="`morpheus registry rebuild` recreates it"):
        Registry.in_state_dir(state_dir)


def test_ids_unique_in_the_same_second(registry: Registry) -> None:
    ids = [new_forest(registry) for _ in range(3)]
    assert ids == ["forest-1795780800", "forest-1795780800-2", "forest-1795780800-3"]


def test_node_numbering_never_reuses_a_name(registry: Registry) -> None:
    forest_id = new_forest(registry)
    first = registry.plan_nodes(forest_id, 3, NOW)
    assert [n.name for n in first] == ["node-1", "node-2", "node-3"]
    registry.delete_node(first[2].id)
    more = registry.plan_nodes(forest_id, 1, NOW)
    assert [n.name for n in more] == ["node-4"]


def test_active_node_addresses(registry: Registry) -> None:
    forest_id = new_forest(registry)
    nodes = registry.plan_nodes(forest_id, 3, NOW)
    registry.save_node(
        nodes[0].model_copy(update={"host": "2001:db8::1", "status": NodeStatus.ACTIVE})
    )
    registry.save_node(
        nodes[1].model_copy(update={"host": "2001:db8::2", "status": NodeStatus.CREATING})
    )
    assert [(p.host, p.port) for p in registry.active_node_addresses(forest_id)] == [
        ("2001:db8::1", 6222)
    ]


def test_forest_round_trip_and_events(registry: Registry) -> None:
    forest_id = new_forest(registry)
    registry.set_forest_status(forest_id, ForestStatus.ACTIVE)
    registry.set_last_expansion(forest_id, NOW + timedelta(minutes=5))
    registry.add_event(forest_id, "planted", "1 node(s) active", NOW)
    forest = registry.get_forest(forest_id)
    assert forest.status == ForestStatus.ACTIVE
    assert forest.last_expansion == NOW + timedelta(minutes=5)
    assert forest.credentials_ref == f"registry:route_credentials/{forest_id}"
    assert [e.kind for e in registry.events(forest_id)] == ["planting", "planted"]
    assert registry.route_credentials(forest_id).username == "morpheus-route"


def test_unknown_forest_suggests(registry: Registry) -> None:
    forest_id = new_forest(registry)
    with pytest.raises(ForestNotFoundError, match=f"did you mean {forest_id}"):
        registry.get_forest(forest_id[:-1] + "9")


def test_forest_with_nodes_cannot_be_deleted(registry: Registry) -> None:
    forest_id = new_forest(registry)
    registry.plan_nodes(forest_id, 1, NOW)
    with pytest.raises(RegistryError, match="still has 1 node"):
        registry.delete_forest(forest_id)
    assert registry.get_forest(forest_id).id == forest_id


_WORKER = """
import sys, json
from datetime import datetime, UTC
from pathlib import Path
from morpheus.blueprint import RouteCredentials
from morpheus.registry import Registry
from morpheus.secret_codec import KeySource, SecretCodec
registry = Registry.open(sys.argv[3], Path(sys.argv[1]), secrets=SecretCodec(KeySource.find(None)))
now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
shared = sys.argv[2]
made = []
for _ in range(5):
    forest = registry.create_forest(provider="local", size="small", location=None,
        run_id="run-x", credentials=RouteCredentials.generate(), now=now)
    made.append(forest.id)
    made.extend(node.name for node in registry.plan_nodes(shared, 2, now))
print(json.dumps(made))
"""


def test_many_processes_at_once(registry: Registry, registry_url: str, state_dir: Path) -> None:
    shared = new_forest(registry)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(state_dir), shared, registry_url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    outputs = [json.loads(worker.communicate(timeout=120)[0]) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    forests = [item for out in outputs for item in out if item.startswith("forest-")]
    names = [item for out in outputs for item in out if item.startswith("node-")]
    assert len(forests) == len(set(forests)) == 30
    assert sorted(names, key=lambda n: int(n.split("-")[1])) == [f"node-{i}" for i in range(1, 61)]
    assert len(registry.list_forests()) == 31


_LOCK_HOLDER = """
import sys, time
from pathlib import Path
from morpheus.registry import Registry
from morpheus.secret_codec import KeySource, SecretCodec
registry = Registry.open(sys.argv[2], Path(sys.argv[1]), secrets=SecretCodec(KeySource.find(None)))
with registry.forest_lock(sys.argv[3]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_forest_lock_is_held_across_processes_and_freed_when_its_holder_is_killed(
    registry: Registry, registry_url: str, state_dir: Path
) -> None:
    """The lock plant, grow and teardown hold: another process waits (and is told), gives up
    after its timeout, and gets the lock once the holder is SIGKILLed (a dead process's
    file lock or database session goes with it)."""
    forest_id = new_forest(registry)
    other = new_forest(registry)
    holder = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(state_dir), registry_url, forest_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        told: list[str] = []
        with (
            pytest.raises(
                RegistryError, match=f"another morpheus process is working on {forest_id}"
            ),
            registry.forest_lock(forest_id, timeout=0.5, on_wait=told.append),
        ):
            pass
        assert len(told) == 1 and "waiting for another morpheus process" in told[0]
        with registry.forest_lock(other, timeout=0.5):
            pass  # another forest's lock is its own
        holder.kill()
        holder.wait(timeout=30)
        told.clear()
        with registry.forest_lock(forest_id, timeout=60, on_wait=told.append):
            pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()
