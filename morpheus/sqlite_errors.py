"""The one boundary where sqlite3 errors become Morpheus errors.

Every registry call runs inside ``registry_errors``: whatever SQLite raises (a full disk, a
missing table, a damaged file, another process holding the lock) leaves as one
``RegistryError`` line saying what to do, never a traceback.  Stdlib only: ``list`` uses it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from morpheus.errors import DamagedRegistryError, RegistryError

REBUILD_HINT = (
    "`morpheus registry rebuild` recreates it from the node directories and provider "
    "listings (the damaged file is kept beside it)"
)


def translate(exc: sqlite3.Error, path: Path) -> RegistryError:
    """The RegistryError (with what to do) for an sqlite3 error on the registry at ``path``."""
    text = str(exc)
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return RegistryError(
            f"the registry {path} is busy: another morpheus process is writing it; "
            "try again when it is done"
        )
    if "disk is full" in lowered or "disk i/o" in lowered:
        return RegistryError(
            f"cannot write the registry {path}: {text}; free space on that disk and run the "
            "command again (nothing of this step was recorded)"
        )
    if "readonly" in lowered or "read-only" in lowered:
        return RegistryError(
            f"cannot write the registry {path}: it is read-only; check the permissions of "
            "the file and its directory"
        )
    if "unable to open" in lowered:
        return RegistryError(
            f"cannot open the registry {path}: {text}; check that its directory exists and "
            "is readable (MORPHEUS_STATE_DIR moves it)"
        )
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.InterfaceError):
        # Not a database, malformed pages, a missing table or column: the file is damaged.
        return DamagedRegistryError(f"the registry {path} is damaged ({text}); {REBUILD_HINT}")
    return RegistryError(f"the registry {path} failed: {text}")


@contextmanager
def registry_errors(path: Path) -> Iterator[None]:
    """Translate any sqlite3 error raised inside into a ``RegistryError``."""
    try:
        yield
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc
