"""Where Morpheus keeps its state (standard library only: `list` and completion import it)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path


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
