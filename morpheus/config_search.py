"""Where the config file may be (standard library only: `list` and completion import it)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def config_search_path(
    explicit: Path | None, environ: Mapping[str, str], cwd: Path, home: Path
) -> list[Path]:
    """Candidate config files, first found wins."""
    if explicit is not None:
        return [explicit]
    if environ.get("MORPHEUS_CONFIG"):
        return [Path(environ["MORPHEUS_CONFIG"])]
    xdg = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [
        cwd / "config.yaml",
        xdg / "morpheus" / "config.yaml",
        home / ".morpheus" / "config.yaml",
        Path("/etc/morpheus/config.yaml"),
    ]
