"""The SQLite registry backend: one 0600 file, the embedded default.

Every write is one short ``BEGIN IMMEDIATE`` transaction (writers of every process take
turns); WAL lets readers run while a plant writes.  Every sqlite3 call goes through
``morpheus.sqlite_errors``.  A missing or empty file is created afresh only when nothing of a
forest is left beside it; ``recover=True`` (``registry rebuild``) creates it regardless.
The lock of one forest is a file in ``locks/`` beside the registry (``morpheus.locking``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from morpheus.errors import RegistryError
from morpheus.locking import forest_lock
from morpheus.paths import leftover_forests, lost_registry_error
from morpheus.sqlite_errors import registry_errors
from morpheus.sqlite_schema import SCHEMA_VERSION, migration_steps, newer_schema_error
from morpheus.store import ForestLock, Row, Store, Transaction


class SqliteStore(Store):
    """The registry file at ``path`` (created 0600 with its directory 0700)."""

    backend = "sqlite"

    def __init__(self, path: Path, *, recover: bool = False) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not path.exists() or path.stat().st_size == 0
            if fresh and not recover:
                left = leftover_forests(path.parent)
                if left:
                    raise lost_registry_error(
                        path, left, "missing" if not path.exists() else "empty"
                    )
            if not path.exists():
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            os.chmod(path, 0o600)
        except OSError as exc:
            raise RegistryError(f"cannot create the registry {path}: {exc.strerror}") from exc
        with registry_errors(path):
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            with registry_errors(path):
                self._db.row_factory = sqlite3.Row
                self._db.execute("PRAGMA foreign_keys = ON")
                self._db.execute("PRAGMA busy_timeout = 30000")
                # Deleted and overwritten content (an old route password) is zeroed, not
                # left in free space of the file.
                self._db.execute("PRAGMA secure_delete = ON")
                self._migrate(recover)
        except BaseException:
            self._db.close()
            raise

    @property
    def location(self) -> str:
        return str(self.path)

    def close(self) -> None:
        self._db.close()

    def schema_version(self) -> int:
        return int(self.read("PRAGMA user_version")[0][0])

    def _migrate(self, recover: bool) -> None:
        with self.transaction() as db:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version == 0:
                (tables,) = db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                left = [] if recover or tables else leftover_forests(self.path.parent)
                if left:
                    raise lost_registry_error(self.path, left, "empty")
            if version > SCHEMA_VERSION:
                raise newer_schema_error(str(self.path), version)
            for target, script in migration_steps(version):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")
        # WAL lets readers (list, status, completion) run while a plant writes.
        self._db.execute("PRAGMA journal_mode = WAL")

    def discard_old_versions(self) -> None:
        # Earlier page images stay in the WAL until a checkpoint empties it.
        with registry_errors(self.path):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def read(self, sql: str, parameters: Sequence[object] = ()) -> list[Row]:
        with registry_errors(self.path):
            return self._db.execute(sql, parameters).fetchall()

    @contextmanager
    def _write(self) -> Iterator[Transaction]:
        with registry_errors(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk does); then this fails.
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise

    def transaction(self) -> AbstractContextManager[Transaction]:
        """One ``BEGIN IMMEDIATE`` transaction: committed whole, or rolled back whole."""
        return self._write()

    def forest_lock(
        self, forest_id: str, timeout: float, on_wait: Callable[[str], None] | None
    ) -> AbstractContextManager[ForestLock]:
        return forest_lock(self.path.parent, forest_id, timeout, on_wait=on_wait)


def recorded_forest_ids(path: Path) -> set[str]:
    """The forest ids the registry file ``path`` holds, read without writing to it: nothing
    is created or migrated (``registry migrate --dry-run``); no file holds none."""
    if not path.exists():
        return set()
    # Read-only still makes -wal and -shm files beside a WAL file; with no WAL left by a
    # writer every page is in the file itself, which is then read as unchangeable (no files).
    in_use = path.with_name(f"{path.name}-wal").exists()
    query = "mode=ro" if in_use else "immutable=1"
    with registry_errors(path):
        db = sqlite3.connect(f"{path.absolute().as_uri()}?{query}", uri=True, timeout=30)
        try:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise newer_schema_error(str(path), version)
            tables = db.execute("SELECT name FROM sqlite_master WHERE name = 'forests'")
            if tables.fetchone() is None:
                return set()
            return {str(row[0]) for row in db.execute("SELECT id FROM forests")}
        finally:
            db.close()
