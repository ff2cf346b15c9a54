"""A forest's rows, as stored, out of one registry and into another (``registry migrate``).

Rows are copied column by column, secrets as they are stored (sealed stays sealed), so a copy
loses nothing either backend keeps; plain secrets of a SQLite registry are sealed on their way
into a shared one (``morpheus.secret_rows.seal_plain_secrets``).  Both registries are at the
same schema version (opening one migrates it), so the columns match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from morpheus.errors import DamagedRegistryError
from morpheus.sqlite_schema import FOREST_TABLES, GENERATED_COLUMNS
from morpheus.store import Store

_COLUMN = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass
class ForestRows:
    """Every stored row of one forest, table by table, in ``FOREST_TABLES`` order."""

    forest_id: str
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def count(self, table: str) -> int:
        return len(self.tables.get(table, []))


def read_forest_rows(store: Store, forest_id: str) -> ForestRows:
    found = ForestRows(forest_id)
    for table, key in FOREST_TABLES:
        order = f" ORDER BY {GENERATED_COLUMNS[table]}" if table in GENERATED_COLUMNS else ""
        rows = store.read(f"SELECT * FROM {table} WHERE {key} = ?{order}", (forest_id,))  # noqa: S608
        # A row iterates its values (sqlite3.Row): its names come from keys().
        found.tables[table] = [{name: row[name] for name in row.keys()} for row in rows]  # noqa: SIM118
    return found


def write_forest_rows(store: Store, rows: ForestRows) -> bool:
    """Insert the forest's rows in one transaction; False (nothing written) when it is there."""
    with store.transaction() as db:
        if db.execute("SELECT 1 FROM forests WHERE id = ?", (rows.forest_id,)).fetchone():
            return False
        for table, _key in FOREST_TABLES:
            skip = GENERATED_COLUMNS.get(table)
            for row in rows.tables.get(table, []):
                columns = [name for name in row if name != skip]
                for name in columns:
                    if not _COLUMN.fullmatch(name):
                        raise DamagedRegistryError(f"the registry's {table} has a column {name!r}")
                marks = ",".join("?" for _ in columns)
                db.execute(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",  # noqa: S608
                    [row[name] for name in columns],
                )
    return True
