"""The SQLite registry: forests, nodes, route credentials and events.

The registry is a cache of what providers report, written *before* a provider is asked to
act (a node row in ``planned`` state exists before its machine does), so a process killed
mid-operation leaves rows that ``teardown`` can act on.  Every write is one short
``BEGIN IMMEDIATE`` transaction; multi-step work that must not interleave across processes
holds ``forest_lock``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from morpheus.errors import ForestNotFoundError, RegistryError
from morpheus.fields import Peer, RouteCredentials
from morpheus.models import Capacity, Event, Forest, ForestStatus, Node, NodeStatus, Ports

if TYPE_CHECKING:
    from morpheus.pki import ForestCA, NodeCertificate

SCHEMA_VERSION = 2

_SCHEMA = """
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

#: Schema changes by the version they lead to; a new registry runs them all after _SCHEMA.
_MIGRATIONS = {
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
}


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _details(node: Node) -> tuple[object, ...]:
    """The columns of a node row that change over its life, in _DETAIL_COLUMNS order."""
    return (
        node.provider_id,
        node.host,
        json.dumps(node.addresses),
        node.ports.model_dump_json(),
        None if node.capacity is None else node.capacity.model_dump_json(),
        node.status,
        node.location,
    )


_DETAIL_COLUMNS = "provider_id, host, addresses, ports, capacity, status, location"


def _insert_node(db: sqlite3.Connection, node: Node, *, or_ignore: bool = False) -> None:
    verb = "INSERT OR IGNORE" if or_ignore else "INSERT"
    db.execute(
        f"{verb} INTO nodes (id, forest_id, name, idx, {_DETAIL_COLUMNS}, created_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (node.id, node.forest_id, node.name, node.index, *_details(node), _iso(node.created_at)),
    )


class Registry:
    """The state database at ``path`` (created 0600 with its directory 0700)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            os.chmod(path, 0o600)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA busy_timeout = 30000")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise RegistryError(
                f"cannot use the registry {path}: {exc}; move it aside to start afresh"
            ) from exc
        except OSError as exc:
            raise RegistryError(f"cannot create the registry {path}: {exc}") from exc

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Registry:
        return cls(state_dir / "registry.sqlite3")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _migrate(self) -> None:
        with self._write():
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise RegistryError(
                    f"the registry {self.path} was written by a newer Morpheus "
                    f"(schema {version}); upgrade morpheus"
                )
            steps = [(1, _SCHEMA)] if version == 0 else []
            steps += [(v, sql) for v, sql in sorted(_MIGRATIONS.items()) if v > max(version, 1)]
            for target, script in steps:
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {target}")
        # WAL lets readers (list, status, completion) run while a plant writes.
        self._db.execute("PRAGMA journal_mode = WAL")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise RegistryError(f"the registry {self.path} is busy: {exc}") from exc
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    # forests -------------------------------------------------------------------------

    def create_forest(
        self,
        *,
        provider: str,
        size: str,
        location: str | None,
        run_id: str,
        credentials: RouteCredentials,
        now: datetime,
        ca: ForestCA | None = None,
    ) -> Forest:
        """Record a new forest under an id that no other forest has, even one made this second.

        ``ca`` (the forest's route CA) is kept beside the route password, in this 0600 file.
        """
        base = f"forest-{int(now.timestamp())}"
        with self._write() as db:
            taken = {
                row[0]
                for row in db.execute("SELECT id FROM forests WHERE id GLOB ?", (base + "*",))
            }
            forest_id = base
            suffix = 2
            while forest_id in taken:
                forest_id = f"{base}-{suffix}"
                suffix += 1
            db.execute(
                "INSERT INTO forests (id, provider, size, location, status, created_at,"
                " cluster_name, credentials_ref, run_id) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    forest_id,
                    provider,
                    size,
                    location,
                    ForestStatus.PLANTING,
                    _iso(now),
                    forest_id,
                    f"registry:route_credentials/{forest_id}",
                    run_id,
                ),
            )
            db.execute(
                "INSERT INTO route_credentials (forest_id, username, password, ca_cert, ca_key)"
                " VALUES (?,?,?,?,?)",
                (
                    forest_id,
                    credentials.username,
                    credentials.password.get_secret_value(),
                    None if ca is None else ca.cert,
                    None if ca is None else ca.key.get_secret_value(),
                ),
            )
            self._event(db, forest_id, now, "planting", f"planting {size} forest on {provider}")
        return self.get_forest(forest_id)

    def import_forest(
        self,
        forest: Forest,
        credentials: RouteCredentials,
        nodes: list[Node],
        message: str,
        now: datetime,
    ) -> bool:
        """Record a forest made elsewhere under its own id, with its nodes, in one transaction.

        False (and nothing written) when a forest with that id is already recorded.
        """
        with self._write() as db:
            if db.execute("SELECT 1 FROM forests WHERE id = ?", (forest.id,)).fetchone():
                return False
            db.execute(
                "INSERT INTO forests (id, provider, size, location, status, created_at,"
                " last_expansion, cluster_name, credentials_ref, run_id, next_node_index)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    forest.id,
                    forest.provider,
                    forest.size,
                    forest.location,
                    forest.status,
                    _iso(forest.created_at),
                    _iso(forest.last_expansion),
                    forest.cluster_name,
                    f"registry:route_credentials/{forest.id}",
                    forest.run_id,
                    max((node.index for node in nodes), default=0) + 1,
                ),
            )
            db.execute(
                "INSERT INTO route_credentials (forest_id, username, password) VALUES (?,?,?)",
                (forest.id, credentials.username, credentials.password.get_secret_value()),
            )
            for node in nodes:
                if db.execute("SELECT 1 FROM nodes WHERE id = ?", (node.id,)).fetchone():
                    raise RegistryError(f"a node {node.id} is already recorded; nothing imported")
                _insert_node(db, node)
            self._event(db, forest.id, now, "imported", message)
        return True

    def get_forest(self, forest_id: str) -> Forest:
        row = self._db.execute("SELECT * FROM forests WHERE id = ?", (forest_id,)).fetchone()
        if row is None:
            known = [forest.id for forest in self.list_forests()]
            close = get_close_matches(forest_id, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else "; `morpheus list` shows them"
            # Echo at most a screen line of what was typed (an id is never that long).
            shown = forest_id if len(forest_id) <= 80 else forest_id[:80] + "…"
            raise ForestNotFoundError(f"no forest {shown!r} in the registry{hint}")
        return self._forest(row)

    def list_forests(self) -> list[Forest]:
        rows = self._db.execute("SELECT * FROM forests ORDER BY created_at, id").fetchall()
        return [self._forest(row) for row in rows]

    def forest_ids(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT id FROM forests ORDER BY id")]

    def set_forest_status(self, forest_id: str, status: ForestStatus) -> None:
        with self._write() as db:
            db.execute("UPDATE forests SET status = ? WHERE id = ?", (status, forest_id))

    def set_last_expansion(self, forest_id: str, moment: datetime) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE forests SET last_expansion = ? WHERE id = ?", (_iso(moment), forest_id)
            )

    def delete_forest(self, forest_id: str) -> None:
        """Remove the forest with its credentials and events; its nodes must be gone."""
        with self._write() as db:
            (left,) = db.execute(
                "SELECT count(*) FROM nodes WHERE forest_id = ?", (forest_id,)
            ).fetchone()
            if left:
                raise RegistryError(f"forest {forest_id} still has {left} node(s) recorded")
            db.execute("DELETE FROM events WHERE forest_id = ?", (forest_id,))
            db.execute("DELETE FROM node_credentials WHERE forest_id = ?", (forest_id,))
            db.execute("DELETE FROM route_credentials WHERE forest_id = ?", (forest_id,))
            db.execute("DELETE FROM forests WHERE id = ?", (forest_id,))

    def route_credentials(self, forest_id: str) -> RouteCredentials:
        row = self._db.execute(
            "SELECT username, password FROM route_credentials WHERE forest_id = ?", (forest_id,)
        ).fetchone()
        if row is None:
            raise RegistryError(f"forest {forest_id} has no route credentials recorded")
        return RouteCredentials(username=row[0], password=SecretStr(row[1]))

    def set_route_password(self, forest_id: str, credentials: RouteCredentials) -> None:
        """Replace the forest's route user and password (``rotate``)."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE route_credentials SET username = ?, password = ? WHERE forest_id = ?",
                (credentials.username, credentials.password.get_secret_value(), forest_id),
            )
            if cursor.rowcount != 1:
                raise RegistryError(f"forest {forest_id} has no route credentials recorded")

    def forest_ca(self, forest_id: str) -> ForestCA | None:
        """The forest's route CA; None for a forest recorded before routes used TLS."""
        from morpheus.pki import ForestCA

        row = self._db.execute(
            "SELECT ca_cert, ca_key FROM route_credentials WHERE forest_id = ?", (forest_id,)
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return ForestCA(cert=row[0], key=SecretStr(row[1]))

    def node_certificate(self, node_id: str) -> NodeCertificate | None:
        from morpheus.pki import NodeCertificate

        row = self._db.execute(
            "SELECT cert, key, addresses FROM node_credentials WHERE node_id = ?", (node_id,)
        ).fetchone()
        if row is None:
            return None
        return NodeCertificate(
            cert=row[0], key=SecretStr(row[1]), addresses=tuple(json.loads(row[2]))
        )

    def save_node_certificate(
        self, forest_id: str, node_id: str, certificate: NodeCertificate
    ) -> None:
        """Keep a node's route certificate and key (replacing any it had)."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO node_credentials VALUES (?,?,?,?,?)",
                (
                    node_id,
                    forest_id,
                    certificate.cert,
                    certificate.key.get_secret_value(),
                    json.dumps(list(certificate.addresses)),
                ),
            )

    @staticmethod
    def _forest(row: sqlite3.Row) -> Forest:
        return Forest(
            id=row["id"],
            provider=row["provider"],
            size=row["size"],
            location=row["location"],
            status=ForestStatus(row["status"]),
            created_at=_parse(row["created_at"]),
            last_expansion=_parse(row["last_expansion"]),
            cluster_name=row["cluster_name"],
            credentials_ref=row["credentials_ref"],
            run_id=row["run_id"],
        )

    # nodes ---------------------------------------------------------------------------

    def plan_nodes(self, forest_id: str, count: int, now: datetime) -> list[Node]:
        """Record ``count`` new nodes as planned, numbered after every name ever used."""
        with self._write() as db:
            row = db.execute(
                "SELECT next_node_index FROM forests WHERE id = ?", (forest_id,)
            ).fetchone()
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
                _insert_node(db, node)
                nodes.append(node)
            db.execute(
                "UPDATE forests SET next_node_index = ? WHERE id = ?", (first + count, forest_id)
            )
        return nodes

    def save_node(self, node: Node) -> None:
        """Write every field of an existing node row."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE nodes SET provider_id = ?, host = ?, addresses = ?, ports = ?,"
                " capacity = ?, status = ?, location = ? WHERE id = ?",
                (*_details(node), node.id),
            )
            if cursor.rowcount != 1:
                raise RegistryError(f"node {node.id} is not in the registry")

    def adopt_node(self, node: Node) -> None:
        """Record a node the platform has but the registry lost (found by its labels)."""
        with self._write() as db:
            _insert_node(db, node, or_ignore=True)
            db.execute(
                "UPDATE forests SET next_node_index = max(next_node_index, ?) WHERE id = ?",
                (node.index + 1, node.forest_id),
            )
        self.save_node(node)

    def nodes(self, forest_id: str) -> list[Node]:
        rows = self._db.execute(
            "SELECT * FROM nodes WHERE forest_id = ? ORDER BY idx", (forest_id,)
        ).fetchall()
        return [self._node(row) for row in rows]

    def delete_node(self, node_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM nodes WHERE id = ?", (node_id,))

    def active_node_addresses(self, forest_id: str) -> list[Peer]:
        """Cluster addresses of the forest's active nodes: the routes a new node needs."""
        return [
            Peer(host=node.host, port=node.ports.cluster)
            for node in self.nodes(forest_id)
            if node.status == NodeStatus.ACTIVE and node.host is not None
        ]

    @staticmethod
    def _node(row: sqlite3.Row) -> Node:
        capacity: Any = row["capacity"]
        return Node(
            id=row["id"],
            forest_id=row["forest_id"],
            name=row["name"],
            index=row["idx"],
            provider_id=row["provider_id"],
            host=row["host"],
            addresses=json.loads(row["addresses"]),
            ports=Ports.model_validate_json(row["ports"]),
            capacity=None if capacity is None else Capacity.model_validate_json(capacity),
            status=NodeStatus(row["status"]),
            location=row["location"],
            created_at=_parse(row["created_at"]),
        )

    # events --------------------------------------------------------------------------

    def add_event(self, forest_id: str, kind: str, message: str, now: datetime) -> None:
        with self._write() as db:
            self._event(db, forest_id, now, kind, message)

    @staticmethod
    def _event(
        db: sqlite3.Connection, forest_id: str, now: datetime, kind: str, message: str
    ) -> None:
        db.execute(
            "INSERT INTO events (forest_id, at, kind, message) VALUES (?,?,?,?)",
            (forest_id, _iso(now), kind, message),
        )

    def events(self, forest_id: str, limit: int = 20) -> list[Event]:
        rows = self._db.execute(
            "SELECT * FROM (SELECT * FROM events WHERE forest_id = ? ORDER BY id DESC LIMIT ?)"
            " ORDER BY id",
            (forest_id, limit),
        ).fetchall()
        return [
            Event(
                forest_id=row["forest_id"],
                at=_parse(row["at"]),
                kind=row["kind"],
                message=row["message"],
            )
            for row in rows
        ]


class ForestLock:
    """The held lock of one forest; ``discard()`` removes its file once the forest is gone."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


@contextmanager
def forest_lock(state_dir: Path, forest_id: str, timeout: float = 600) -> Iterator[ForestLock]:
    """Hold the cross-process lock for work on one forest (plant, grow, teardown)."""
    from filelock import FileLock, Timeout

    locks = state_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = FileLock(locks / f"{forest_id}.lock")
    try:
        lock.acquire(timeout=timeout)
    except Timeout as exc:
        raise RegistryError(
            f"another morpheus process is working on {forest_id}; try again when it is done"
        ) from exc
    try:
        yield ForestLock(Path(lock.lock_file))
    finally:
        lock.release()


def utcnow() -> datetime:
    """The current time; services take ``now`` as a parameter and the CLI calls this."""
    return datetime.fromtimestamp(time.time(), UTC)
