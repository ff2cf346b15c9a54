"""The cross-process lock of one forest in a SQLite registry: a file beside the registry.

Plant, grow, reconcile, rotate and teardown hold it (through ``Registry.forest_lock``); a
PostgreSQL registry uses an advisory lock instead (``morpheus.postgres_store``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from morpheus.errors import RegistryError
from morpheus.store import ForestLock as HeldLock
from morpheus.store import busy_message, waiting_notice


class ForestLock(HeldLock):
    """The held lock of one forest; ``discard()`` removes its file once the forest is gone."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


@contextmanager
def forest_lock(
    lock_dir: Path,
    forest_id: str,
    timeout: float = 600,
    *,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[ForestLock]:
    """Hold the cross-process lock for work on one forest (plant, grow, teardown).

    When another process holds it, ``on_wait`` is told once, before the wait begins.
    """
    from filelock import FileLock, Timeout

    locks = lock_dir / "locks"
    try:
        locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise RegistryError(f"cannot create the lock directory {locks}: {exc.strerror}") from exc
    lock = FileLock(locks / f"{forest_id}.lock")
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if on_wait is not None:
                on_wait(waiting_notice(forest_id, timeout))
            lock.acquire(timeout=timeout)
    except Timeout as exc:
        raise RegistryError(busy_message(forest_id)) from exc
    except OSError as exc:
        raise RegistryError(f"cannot lock {forest_id} in {locks}: {exc.strerror}") from exc
    try:
        yield ForestLock(Path(lock.lock_file))
    finally:
        lock.release()
