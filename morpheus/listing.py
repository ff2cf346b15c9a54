"""Forest summaries read straight from the registry file, for `list` and completion.

These commands run constantly (completion runs on every keypress), so this module imports
only the standard library: no pydantic, no settings, no rich.  It opens the registry
read-only and never creates it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


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

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _connect(state_dir: Path) -> sqlite3.Connection | None:
    path = state_dir / "registry.sqlite3"
    if not path.exists():
        return None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def forest_summaries(state_dir: Path) -> list[ForestSummary]:
    """Every forest with its node count; none when there is no registry yet.

    A registry that is missing or empty while forests remain in the state directory is an
    error naming ``morpheus registry rebuild``, never an empty list.
    """
    from morpheus.paths import leftover_forests, lost_registry_error
    from morpheus.safe_text import printable
    from morpheus.sqlite_errors import registry_errors

    path = state_dir / "registry.sqlite3"
    rows = None
    with registry_errors(path):
        db = _connect(state_dir)
        if db is not None:
            try:
                (tables,) = db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                if tables:
                    rows = db.execute(
                        "SELECT f.id, f.provider, f.size,"
                        " coalesce(f.location, group_concat(DISTINCT n.location)), f.status,"
                        " f.created_at, f.last_expansion, f.cluster_name, count(n.id)"
                        " FROM forests f LEFT JOIN nodes n ON n.forest_id = f.id"
                        " GROUP BY f.id ORDER BY f.created_at, f.id"
                    ).fetchall()
            finally:
                db.close()
    if rows is None:
        left = leftover_forests(state_dir)
        if left:
            raise lost_registry_error(path, left, "empty" if path.exists() else "missing")
        return []
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
        )
        for row in cleaned
    ]


def _locations(joined: str | None) -> str | None:
    """The forest's location, or the distinct locations of its nodes, sorted, comma-separated."""
    if not joined:
        return None
    return ", ".join(sorted(set(joined.split(","))))


def forest_ids(state_dir: Path, prefix: str = "") -> list[str]:
    """Forest ids starting with ``prefix`` (shell completion); never raises."""
    try:
        db = _connect(state_dir)
        if db is None:
            return []
        with db:
            rows = db.execute("SELECT id FROM forests ORDER BY id").fetchall()
        db.close()
    except sqlite3.Error:
        return []
    return [row[0] for row in rows if isinstance(row[0], str) and row[0].startswith(prefix)]
