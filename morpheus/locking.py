"""The cross-process lock of one forest: plant, grow, reconcile and teardown hold it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from morpheus.errors import RegistryError


class ForestLock:
    """The held lock of one forest; ``discard()`` removes its file once the forest is gone."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


@contextmanager
def forest_lock(
    state_dir: Path,
    forest_id: str,
    timeout: float = 600,
    *,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[ForestLock]:
    """Hold the cross-process lock for work on one forest (plant, grow, teardown).

    When another process holds it, ``on_wait`` is told once, before the wait begins.
    """
    from filelock import FileLock, Timeout

    locks = state_dir / "locks"
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
                on_wait(
                    f"waiting for another morpheus process working on {forest_id} "
                    f"(up to {timeout:.0f} s; Ctrl-C stops waiting)"
                )
            lock.acquire(timeout=timeout)
    except Timeout as exc:
        raise RegistryError(
            f"another morpheus process is working on {forest_id}; try again when it is done"
        ) from exc
    except OSError as exc:
        raise RegistryError(f"cannot lock {forest_id} in {locks}: {exc.strerror}") from exc
    try:
        yield ForestLock(Path(lock.lock_file))
    finally:
        lock.release()
