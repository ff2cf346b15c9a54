"""The registry's tables, their migrations, and how a node row is written.

Both backends run these scripts: SQLite as written (``PRAGMA user_version`` holds the
version), PostgreSQL with its own type for the events' row id (``morpheus.postgres_store``,
which keeps the version in a ``morpheus_schema`` table).  Statements are in the SQL both
engines accept.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from morpheus.errors import ForestNotFoundError, RegistryError
from morpheus.models import Forest, Node, NodeStatus

if TYPE_CHECKING:
    from morpheus.blueprint import RouteCredentials
    from morpheus.pki import ForestCA
    from morpheus.secret_codec import SecretCodec
    from morpheus.store import Transaction

SCHEMA_VERSION = 4

SCHEMA = """
CREATE TABLE forests (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    size TEXT NOT NULL,
    location TEXT,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_expansion TEXT,
    cluster_name TEXT NOT NULL,
    credentials_ref TEXT NOT NULL,
    run_id TEXT NOT NULL,
    next_node_index INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    forest_id TEXT NOT NULL REFERENCES forests(id),
    name TEXT NOT NULL,
    idx INTEGER NOT NULL,
    provider_id TEXT,
    host TEXT,
    addresses TEXT NOT NULL DEFAULT '[]',
    ports TEXT NOT NULL,
    capacity TEXT,
    status TEXT NOT NULL,
    location TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (forest_id, name)
);
CREATE TABLE route_credentials (
    forest_id TEXT PRIMARY KEY REFERENCES forests(id),
    username TEXT NOT NULL,
    password TEXT NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    forest_id TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX events_by_forest ON events (forest_id, id);
"""

#: Schema changes by the version they lead to; a new registry runs them all after SCHEMA.
MIGRATIONS = {
    # Mutual-TLS routes: the forest CA beside the route password (NULL: a forest recorded
    # before, whose routes stay plain), and each node's certificate and key.
    2: """
ALTER TABLE route_credentials ADD COLUMN ca_cert TEXT;
ALTER TABLE route_credentials ADD COLUMN ca_key TEXT;
CREATE TABLE node_credentials (
    node_id TEXT PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
    forest_id TEXT NOT NULL REFERENCES forests(id),
    cert TEXT NOT NULL,
    key TEXT NOT NULL,
    addresses TEXT NOT NULL
);
""",
    # Local forests in a shared registry: the host their nodes run on (NULL: a cloud forest,
    # or one recorded before, which the host that migrates the registry adopts).
    3: """
ALTER TABLE forests ADD COLUMN host TEXT;
""",
    # The SSH node channel: the forest's client key (private, like the route password) and
    # each node's pinned host key (public half only: the private half lives on the node).
    4: """
ALTER TABLE route_credentials ADD COLUMN ssh_client_key TEXT;
CREATE TABLE ssh_host_keys (
    node_id TEXT PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
    forest_id TEXT NOT NULL REFERENCES forests(id),
    public_key TEXT NOT NULL
);
""",
}


#: Every table holding a forest's rows, with the column naming the forest, parents first:
#: ``registry migrate`` copies exactly these.  A migration that adds a table adds it here.
FOREST_TABLES = (
    ("forests", "id"),
    ("nodes", "forest_id"),
    ("route_credentials", "forest_id"),
    ("node_credentials", "forest_id"),
    ("ssh_host_keys", "forest_id"),
    ("events", "forest_id"),
)
#: Columns the target numbers itself (an event's id; the order is kept).
GENERATED_COLUMNS = {"events": "id"}


def migration_steps(version: int) -> list[tuple[int, str]]:
    """The scripts that bring a registry at schema ``version`` (0: empty) up to date."""
    steps = [(1, SCHEMA)] if version == 0 else []
    steps += [(v, sql) for v, sql in sorted(MIGRATIONS.items()) if v > max(version, 1)]
    return steps


def newer_schema_error(location: str, version: int) -> RegistryError:
    """An older Morpheus never writes a registry it does not understand."""
    return RegistryError(
        f"the registry {location} was written by a newer Morpheus (schema {version}, this "
        f"one knows up to {SCHEMA_VERSION}); upgrade morpheus"
    )


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def node_details(node: Node) -> tuple[object, ...]:
    """The columns of a node row that change over its life, in the order ``save_node`` sets."""
    return (
        node.provider_id,
        node.host,
        json.dumps(node.addresses),
        node.ports.model_dump_json(),
        None if node.capacity is None else node.capacity.model_dump_json(),
        node.status,
        node.location,
    )


_INSERT_NODE = (
    "INSERT INTO nodes (id, forest_id, name, idx, provider_id, host, addresses, ports,"
    " capacity, status, location, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)


def insert_forest(
    db: Transaction,
    forest: Forest,
    credentials: RouteCredentials,
    ca: ForestCA | None,
    secrets: SecretCodec,
    *,
    next_node_index: int,
) -> None:
    """The forest's row and its route credentials (with the route CA, when it has one),
    the secrets among them sealed by ``secrets``."""
    db.execute(
        "INSERT INTO forests (id, provider, size, location, status, created_at,"
        " last_expansion, cluster_name, credentials_ref, run_id, next_node_index, host)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            forest.id,
            forest.provider,
            forest.size,
            forest.location,
            forest.status,
            iso(forest.created_at),
            iso(forest.last_expansion),
            forest.cluster_name,
            forest.credentials_ref,
            forest.run_id,
            next_node_index,
            forest.host,
        ),
    )
    db.execute(
        "INSERT INTO route_credentials (forest_id, username, password, ca_cert, ca_key)"
        " VALUES (?,?,?,?,?)",
        (
            forest.id,
            credentials.username,
            secrets.seal(credentials.password.get_secret_value()),
            None if ca is None else ca.cert,
            None if ca is None else secrets.seal(ca.key.get_secret_value()),
        ),
    )


def insert_node(db: Transaction, node: Node, *, or_ignore: bool = False) -> None:
    db.execute(
        _INSERT_NODE + (" ON CONFLICT DO NOTHING" if or_ignore else ""),
        (node.id, node.forest_id, node.name, node.index, *node_details(node), iso(node.created_at)),
    )


def plan_nodes(db: Transaction, forest_id: str, count: int, now: datetime) -> list[Node]:
    row = db.execute("SELECT next_node_index FROM forests WHERE id = ?", (forest_id,)).fetchone()
    if row is None:
        raise ForestNotFoundError(f"no forest {forest_id!r} in the registry")
    first = row[0]
    nodes = []
    for index in range(first, first + count):
        node = Node(
            id=f"{forest_id}-node-{index}",
            forest_id=forest_id,
            name=f"node-{index}",
            index=index,
            status=NodeStatus.PLANNED,
            created_at=now,
        )
        insert_node(db, node)
        nodes.append(node)
    db.execute("UPDATE forests SET next_node_index = ? WHERE id = ?", (first + count, forest_id))
    return nodes
