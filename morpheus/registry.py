"""The registry: forests, nodes, route credentials and events, in SQLite or PostgreSQL.

The registry is a cache of what providers report, written *before* a provider is asked to
act (a node row in ``planned`` state exists before its machine does), so a process killed
mid-operation leaves rows that ``teardown`` can act on.  Every write is one short
transaction; multi-step work that must not interleave across processes holds
``forest_lock``.

Queries are written once, in SQL both engines accept, and run by a ``Store``
(``morpheus.sqlite_store``, ``morpheus.postgres_store``), which turns the engine's errors
into one ``RegistryError`` and rolls the transaction back.  Rows read back are checked
(``morpheus.records``) before they become paths or terminal text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING

from morpheus.errors import (
    ConfigError,
    ForestNotFoundError,
    OtherHostForestError,
    RegistryError,
)
from morpheus.fields import Peer, RouteCredentials
from morpheus.models import Event, Forest, ForestStatus, Node, NodeStatus
from morpheus.paths import host_identity
from morpheus.records import event_from, forest_from, node_from
from morpheus.registry_credentials import CredentialRecords, codec_for
from morpheus.safe_text import printable
from morpheus.secret_codec import SecretCodec
from morpheus.sqlite_schema import (
    SCHEMA_VERSION,
    insert_forest,
    insert_node,
    iso,
    node_details,
    plan_nodes,
)
from morpheus.store import ForestLock, Store, Transaction

if TYPE_CHECKING:
    from morpheus.pki import ForestCA

__all__ = ["SCHEMA_VERSION", "ForestLock", "Registry", "utcnow"]

#: How long ``forest_lock`` waits for another process by default, in seconds.
LOCK_TIMEOUT = 600.0


class Registry(CredentialRecords):
    """The state database, in whichever ``Store`` holds it."""

    def __init__(
        self, store: Store, *, secrets: SecretCodec | None = None, host: str | None = None
    ) -> None:
        self.store = store
        #: Route passwords and private keys go through it (sealed when a key is set; a
        #: shared store refuses them without a key).
        self.secrets = codec_for(store, secrets)
        self._secrets_checked = False
        #: This host, as local forests record it (``morpheus.paths.host_identity``).
        self.host = host

    @classmethod
    def open(
        cls,
        url: str | None,
        state_dir: Path,
        *,
        recover: bool = False,
        secrets: SecretCodec | None = None,
    ) -> Registry:
        """The registry ``registry.url`` names (None: the SQLite file in ``state_dir``)."""
        from morpheus.registry_url import POSTGRESQL, parse_registry_url

        try:
            where = parse_registry_url(url, state_dir)
        except ValueError as exc:
            raise ConfigError(f"registry.url: {exc}") from None
        host = host_identity(state_dir)
        if where.backend == POSTGRESQL:
            from morpheus.postgres_store import PostgresStore

            return cls(PostgresStore(where.url), secrets=secrets, host=host)
        from morpheus.sqlite_store import SqliteStore

        assert where.path is not None
        return cls(SqliteStore(where.path, recover=recover), secrets=secrets, host=host)

    @classmethod
    def in_state_dir(
        cls, state_dir: Path, *, recover: bool = False, secrets: SecretCodec | None = None
    ) -> Registry:
        """The SQLite registry file in ``state_dir`` (the default)."""
        from morpheus.sqlite_store import SqliteStore

        store = SqliteStore(state_dir / "registry.sqlite3", recover=recover)
        return cls(store, secrets=secrets, host=host_identity(state_dir))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def forest_lock(
        self,
        forest_id: str,
        timeout: float = LOCK_TIMEOUT,
        *,
        on_wait: Callable[[str], None] | None = None,
    ) -> AbstractContextManager[ForestLock]:
        """Hold the cross-process lock for work on one forest (plant, grow, teardown).

        When another process holds it, ``on_wait`` is told once, before the wait begins.
        A local forest of another host is refused (``OtherHostForestError``).
        """
        rows = self._rows("SELECT host FROM forests WHERE id = ?", (forest_id,))
        if rows:
            self.check_changeable(forest_id, rows[0][0])
        return self.store.forest_lock(forest_id, timeout, on_wait)

    def check_changeable(self, forest_id: str, host: str | None) -> None:
        """Refuse to change a forest whose nodes run on another host (shown, not changed)."""
        if host is not None and self.host is not None and host != self.host:
            shown = printable(host)[:120]
            raise OtherHostForestError(
                f"{forest_id} is a local forest of host {shown}: its nodes run there, so "
                f"only that host changes it (this one is {self.host}); run the command there"
            )

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
        planned_nodes: int = 0,
        ca: ForestCA | None = None,
        local: bool = False,
    ) -> Forest:
        """Record a new forest under an id that no other forest has, even one made this second.

        Its first ``planned_nodes`` nodes are recorded as planned in the same transaction, so
        a failed write leaves no half-recorded forest.  ``ca`` (the forest's route CA) is
        kept beside the route password, in this 0600 file.  A ``local`` forest (its nodes
        on this host) records this host.
        """
        base = f"forest-{int(now.timestamp())}"
        with self._write() as db:
            taken = {
                row[0]
                for row in db.execute(
                    "SELECT id FROM forests WHERE id = ? OR id LIKE ?", (base, base + "-%")
                ).fetchall()
            }
            forest_id = base
            suffix = 2
            while forest_id in taken:
                forest_id = f"{base}-{suffix}"
                suffix += 1
            forest = Forest(
                id=forest_id,
                provider=provider,
                size=size,
                location=location,
                status=ForestStatus.PLANTING,
                created_at=now,
                cluster_name=forest_id,
                credentials_ref=f"registry:route_credentials/{forest_id}",
                run_id=run_id,
                host=self.host if local else None,
            )
            insert_forest(db, forest, credentials, ca, self._sealer(db), next_node_index=1)
            self._event(db, forest_id, now, "planting", f"planting {size} forest on {provider}")
            plan_nodes(db, forest_id, planned_nodes, now)
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
            next_index = max((node.index for node in nodes), default=0) + 1
            insert_forest(
                db, forest, credentials, None, self._sealer(db), next_node_index=next_index
            )
            for node in nodes:
                if db.execute("SELECT 1 FROM nodes WHERE id = ?", (node.id,)).fetchone():
                    raise RegistryError(f"a node {node.id} is already recorded; nothing imported")
                insert_node(db, node)
            self._event(db, forest.id, now, "imported", message)
        return True

    def get_forest(self, forest_id: str) -> Forest:
        rows = self._rows("SELECT * FROM forests WHERE id = ?", (forest_id,))
        if not rows:
            known = [forest.id for forest in self.list_forests()]
            close = get_close_matches(forest_id, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else "; `morpheus list` shows them"
            # Echo at most a screen line of what was typed (an id is never that long).
            shown = forest_id if len(forest_id) <= 80 else forest_id[:80] + "…"
            raise ForestNotFoundError(f"no forest {shown!r} in the registry{hint}")
        return forest_from(rows[0])

    def list_forests(self) -> list[Forest]:
        rows = self._rows("SELECT * FROM forests ORDER BY created_at, id")
        return [forest_from(row) for row in rows]

    def forest_ids(self) -> list[str]:
        return [printable(row[0]) for row in self._rows("SELECT id FROM forests ORDER BY id")]

    def set_forest_status(self, forest_id: str, status: ForestStatus) -> None:
        with self._write() as db:
            db.execute("UPDATE forests SET status = ? WHERE id = ?", (status, forest_id))

    def set_last_expansion(self, forest_id: str, moment: datetime) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE forests SET last_expansion = ? WHERE id = ?", (iso(moment), forest_id)
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
            db.execute("DELETE FROM ssh_host_keys WHERE forest_id = ?", (forest_id,))
            db.execute("DELETE FROM route_credentials WHERE forest_id = ?", (forest_id,))
            db.execute("DELETE FROM forests WHERE id = ?", (forest_id,))

    # nodes ---------------------------------------------------------------------------

    def plan_nodes(self, forest_id: str, count: int, now: datetime) -> list[Node]:
        """Record ``count`` new nodes as planned, numbered after every name ever used."""
        with self._write() as db:
            return plan_nodes(db, forest_id, count, now)

    def save_node(self, node: Node) -> None:
        """Write every field of an existing node row."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE nodes SET provider_id = ?, host = ?, addresses = ?, ports = ?,"
                " capacity = ?, status = ?, location = ? WHERE id = ?",
                (*node_details(node), node.id),
            )
            if cursor.rowcount != 1:
                raise RegistryError(f"node {node.id} is not in the registry")

    def adopt_node(self, node: Node) -> None:
        """Record a node the platform has but the registry lost (found by its labels)."""
        with self._write() as db:
            insert_node(db, node, or_ignore=True)
            db.execute(
                "UPDATE forests SET next_node_index = CASE WHEN next_node_index > ?"
                " THEN next_node_index ELSE ? END WHERE id = ?",
                (node.index, node.index + 1, node.forest_id),
            )
        self.save_node(node)

    def nodes(self, forest_id: str) -> list[Node]:
        rows = self._rows("SELECT * FROM nodes WHERE forest_id = ? ORDER BY idx", (forest_id,))
        return [node_from(row) for row in rows]

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

    # events --------------------------------------------------------------------------

    def add_event(self, forest_id: str, kind: str, message: str, now: datetime) -> None:
        with self._write() as db:
            self._event(db, forest_id, now, kind, message)

    @staticmethod
    def _event(db: Transaction, forest_id: str, now: datetime, kind: str, message: str) -> None:
        db.execute(
            "INSERT INTO events (forest_id, at, kind, message) VALUES (?,?,?,?)",
            (forest_id, iso(now), kind, message),
        )

    def events(self, forest_id: str, limit: int = 20) -> list[Event]:
        rows = self._rows(
            "SELECT * FROM (SELECT * FROM events WHERE forest_id = ? ORDER BY id DESC LIMIT ?)"
            " AS recent ORDER BY id",
            (forest_id, limit),
        )
        return [event_from(row) for row in rows]


def utcnow() -> datetime:
    """The current time; services take ``now`` as a parameter and the CLI calls this."""
    return datetime.fromtimestamp(time.time(), UTC)
