"""Where Morpheus keeps its state (standard library only: `list` and completion import it)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from morpheus.errors import DamagedRegistryError


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the registry and local nodes live (``MORPHEUS_STATE_DIR`` overrides)."""
    env = os.environ if environ is None else environ
    if env.get("MORPHEUS_STATE_DIR"):
        return Path(env["MORPHEUS_STATE_DIR"])
    if sys.platform != "linux":
        import platformdirs

        return Path(platformdirs.user_state_dir("morpheus", appauthor=False))
    # What platformdirs answers on Linux, without importing it on every keypress.
    xdg = env.get("XDG_STATE_HOME")
    if xdg:
        return Path(xdg) / "morpheus"
    return Path(env.get("HOME") or Path.home()) / ".local" / "state" / "morpheus"


def leftover_forests(state_dir: Path) -> list[str]:
    """Forests that still have something in ``state_dir`` besides the registry.

    A lock file (``locks/<forest>.lock`` stays until a teardown completes) or a forest
    directory of a provider (``<provider>/<forest>/``, as the local provider keeps its
    nodes).  When the registry is missing or empty these are forests it has lost.
    """
    from morpheus.safe_text import is_plain_id

    found: set[str] = set()
    try:
        entries = list(state_dir.iterdir())
    except OSError:
        return []
    for entry in entries:
        try:
            if entry.name == "locks" and entry.is_dir():
                found.update(lock.stem for lock in entry.glob("*.lock"))
            elif entry.is_dir():
                found.update(child.name for child in entry.iterdir() if child.is_dir())
        except OSError:
            continue
    return sorted(name for name in found if is_plain_id(name))


def lost_registry_error(path: Path, forests: Sequence[str], state: str) -> DamagedRegistryError:
    from morpheus.errors import DamagedRegistryError

    """The error for a registry that is ``state`` ("missing", "empty") while forests remain."""
    shown = ", ".join(forests[:5]) + (f" and {len(forests) - 5} more" if len(forests) > 5 else "")
    return DamagedRegistryError(
        f"the registry {path} is {state}, but forests remain in {path.parent} ({shown}); "
        "run `morpheus registry rebuild` to recover them"
    )


def host_identity(state_dir: Path) -> str:
    """This host as a shared registry records a local forest's: ``hostname:id``.

    The id (8 hex digits) is made once and kept in ``state_dir/host-id``: the local
    provider's nodes live in the state directory, so two state directories on one machine
    are two hosts, and a machine renamed keeps its forests.  Not written until asked for.
    """
    import secrets
    import socket

    found = _host_id(state_dir)
    if found is None:
        found = secrets.token_hex(4)
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            (state_dir / "host-id").write_text(found + "\n")
        except OSError:
            pass  # a read-only state directory: still one id for this process
    return f"{socket.gethostname()}:{found}"


def known_host_identity(state_dir: Path) -> str | None:
    """``host_identity`` when this host's id is already recorded; None (creating nothing)
    when it is not."""
    import socket

    found = _host_id(state_dir)
    return None if found is None else f"{socket.gethostname()}:{found}"


def _host_id(state_dir: Path) -> str | None:
    try:
        found = (state_dir / "host-id").read_text().strip()
    except OSError:
        return None
    if len(found) != 8 or not all(c in "0123456789abcdef" for c in found):
        return None
    return found
