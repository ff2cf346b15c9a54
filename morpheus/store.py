"""Where the registry's rows live: the interface each backend (SQLite, PostgreSQL) implements.

``morpheus.registry.Registry`` writes every query once, in the SQL both engines accept
(``?`` placeholders, ``ON CONFLICT``, no engine-specific functions), and hands it to a
``Store``.  A store owns what differs: connecting, one write transaction at a time, the
schema version and its migrations, translating the engine's errors into ``RegistryError``,
and the cross-process lock of one forest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Row(Protocol):
    """A stored row: by position (``row[0]``) and by column name (``row["id"]``)."""

    def __getitem__(self, key: int | str) -> Any: ...

    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    """What one statement returns."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Transaction(Protocol):
    """The statements of one write transaction (committed whole, or rolled back whole)."""

    def execute(self, sql: str, parameters: Sequence[object] = ()) -> Cursor: ...


class ForestLock:
    """The held lock of one forest; ``discard()`` forgets it once the forest is gone."""

    def discard(self) -> None:
        """Remove what the lock left behind (a lock file); nothing for a database lock."""


class Store(ABC):
    """One registry backend, opened, its schema migrated to ``SCHEMA_VERSION``."""

    #: ``sqlite`` or ``postgresql``.
    backend: str

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the rows live, safe to show: a path, or a URL with its password masked."""

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version the stored rows are in."""

    @abstractmethod
    def read(self, sql: str, parameters: Sequence[object] = ()) -> list[Row]:
        """The rows of one query, outside any write transaction."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Transaction]:
        """One write transaction; writers of every process take their turn."""

    @abstractmethod
    def forest_lock(
        self, forest_id: str, timeout: float, on_wait: Callable[[str], None] | None
    ) -> AbstractContextManager[ForestLock]:
        """Hold the cross-process lock of one forest for multi-step work (plant, grow, ...).

        When another process holds it, ``on_wait`` is told once, before the wait begins;
        after ``timeout`` seconds the wait ends with a ``RegistryError``.  A process that
        dies holding the lock releases it.
        """

    @abstractmethod
    def discard_old_versions(self) -> None:
        """Drop what the store keeps of rows as they were before the last writes (a
        write-ahead log, dead row versions), so secrets just encrypted in place do not
        linger on disk in plain text (``registry encrypt``)."""

    @abstractmethod
    def close(self) -> None: ...


def waiting_notice(forest_id: str, timeout: float) -> str:
    return (
        f"waiting for another morpheus process working on {forest_id} "
        f"(up to {timeout:.0f} s; Ctrl-C stops waiting)"
    )


def busy_message(forest_id: str) -> str:
    return f"another morpheus process is working on {forest_id}; try again when it is done"
