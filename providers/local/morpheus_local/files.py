"""The files of a node directory: written 0600, and compared to decide reload or restart."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)


def config_files(node_dir: Path) -> dict[str, str]:
    """nats.conf and the route TLS files as they are now, by path."""
    paths = [node_dir / "nats.conf", *sorted((node_dir / "tls").glob("*.pem"))]
    return {str(path): path.read_text() for path in paths if path.is_file()}


def only_routes_differ(before: dict[str, str], after: dict[str, str]) -> bool:
    """Whether the configuration changed in its route URL lines only (a reload suffices)."""
    return _without_routes(before) == _without_routes(after)


def _without_routes(files: dict[str, str]) -> dict[str, str]:
    return {
        path: "\n".join(
            line for line in text.splitlines() if not line.lstrip().startswith('"nats-route://')
        )
        for path, text in files.items()
    }
