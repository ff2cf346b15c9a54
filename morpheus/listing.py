"""Forest summaries read straight from the registry, for `list` and completion.

These commands run constantly (completion runs on every keypress), so on the default SQLite
registry this module imports only the standard library: no pydantic, no settings, no rich.
It opens the registry file read-only and never creates it.  A PostgreSQL registry is read
through its store (``psycopg`` is imported then, and only then).
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from morpheus.registry_url import RegistryUrl


@dataclass(frozen=True)
class ForestSummary:
    """One line of `morpheus list`; ``as_json()`` is the documented JSON shape.

    ``location`` is the forest's own when it has one, else where its nodes are
    (``"fsn1"``, or ``"fsn1, nbg1"`` for a forest spread by capacity).
    """

    id: str
    provider: str
    size: str
    location: str | None
    status: str
    created_at: str
    last_expansion: str | None
    cluster_name: str
    node_count: int
    #: Whether its secrets are stored encrypted (known without the key; not in the JSON).
    secrets_sealed: bool = False

    def as_json(self) -> dict[str, Any]:
        shown = asdict(self)
        del shown["secrets_sealed"]
        return shown


#: One row per forest; ``{locations}`` is the engine's way to join its nodes' locations,
#: ``{sealed}`` the prefix of an encrypted secret (``morpheus.secret_codec.SEALED``).
_SUMMARY_SQL = (
    "SELECT f.id, f.provider, f.size, coalesce(f.location, {locations}), f.status,"
    " f.created_at, f.last_expansion, f.cluster_name, count(n.id),"
    " EXISTS (SELECT 1 FROM route_credentials r WHERE r.forest_id = f.id"
    " AND substr(r.password, 1, {length}) = '{sealed}')"
    " FROM forests f LEFT JOIN nodes n ON n.forest_id = f.id"
    " GROUP BY f.id ORDER BY f.created_at, f.id"
)


def _summary_sql(locations: str) -> str:
    from morpheus.secret_codec import SEALED

    return _SUMMARY_SQL.format(locations=locations, length=len(SEALED), sealed=SEALED)


def _where(state_dir: Path, url: str | None) -> RegistryUrl:
    from morpheus.errors import ConfigError
    from morpheus.registry_url import parse_registry_url

    try:
        return parse_registry_url(url, state_dir)
    except ValueError as exc:
        raise ConfigError(f"registry.url: {exc}") from None


def _connect(path: Path) -> sqlite3.Connection | None:
    if not path.exists():
        return None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def forest_summaries(state_dir: Path, url: str | None = None) -> list[ForestSummary]:
    """Every forest with its node count; none when there is no registry yet.

    ``url`` is ``registry.url`` (None: the SQLite file in ``state_dir``).  A registry file
    that is missing or empty while forests remain beside it is an error naming
    ``morpheus registry rebuild``, never an empty list.
    """
    from morpheus.safe_text import printable

    where = _where(state_dir, url)
    rows = _postgres_rows(where.url) if where.path is None else _sqlite_rows(where.path)
    # Read back from a file anyone with access may have edited: shown, so made printable.
    cleaned: list[list[Any]] = [
        [printable(v) if isinstance(v, str) else v for v in row] for row in rows
    ]
    return [
        ForestSummary(
            id=row[0],
            provider=row[1],
            size=row[2],
            location=_locations(row[3]),
            status=row[4],
            created_at=row[5],
            last_expansion=row[6],
            cluster_name=row[7],
            node_count=row[8],
            secrets_sealed=bool(row[9]),
        )
        for row in cleaned
    ]


def _sqlite_rows(path: Path) -> list[Any]:
    from morpheus.paths import leftover_forests, lost_registry_error
    from morpheus.sqlite_errors import registry_errors

    with registry_errors(path):
        db = _connect(path)
        if db is not None:
            try:
                (tables,) = db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                if tables:
                    sql = _summary_sql("group_concat(DISTINCT n.location)")
                    return db.execute(sql).fetchall()
            finally:
                db.close()
    left = leftover_forests(path.parent)
    if left:
        raise lost_registry_error(path, left, "empty" if path.exists() else "missing")
    return []


def _postgres_rows(url: str) -> list[Any]:
    from morpheus.postgres_store import PostgresStore

    store = PostgresStore(url)
    try:
        sql = _summary_sql("string_agg(DISTINCT n.location, ',')")
        return [list(row) for row in store.read(sql)]
    finally:
        store.close()


def _locations(joined: str | None) -> str | None:
    """The forest's location, or the distinct locations of its nodes, sorted, comma-separated."""
    if not joined:
        return None
    return ", ".join(sorted(set(joined.split(","))))


def forest_ids(state_dir: Path, prefix: str = "", url: str | None = None) -> list[str]:
    """Forest ids starting with ``prefix`` (shell completion); never raises."""
    from morpheus.errors import MorpheusError

    try:
        where = _where(state_dir, url)
        if where.path is None:
            rows = [(summary.id,) for summary in forest_summaries(state_dir, url)]
        else:
            db = _connect(where.path)
            if db is None:
                return []
            with db:
                rows = db.execute("SELECT id FROM forests ORDER BY id").fetchall()
            db.close()
    except (sqlite3.Error, MorpheusError):
        return []
    return [row[0] for row in rows if isinstance(row[0], str) and row[0].startswith(prefix)]
