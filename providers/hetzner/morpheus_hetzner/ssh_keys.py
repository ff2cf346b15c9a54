"""The SSH key nodes let root in with: read on this machine, found or uploaded by name."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from pathlib import Path

#: Looked for in ~/.ssh when ``infrastructure.ssh.key_path`` is not set, in this order.
DEFAULT_PUBLIC_KEYS = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")


def fingerprint(public_key: str) -> str | None:
    """The MD5 fingerprint Hetzner shows for an OpenSSH public key, or None if it is not one."""
    parts = public_key.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def public_key_candidates(configured: Path | None, home: Path) -> list[Path]:
    """Where to find the public key: ``key_path`` itself when it ends in .pub, else that path
    plus .pub (it names the private key); without it, the usual files in ~/.ssh."""
    if configured is not None:
        path = configured.expanduser()
        return [path] if path.suffix == ".pub" else [Path(f"{path}.pub")]
    return [home / ".ssh" / name for name in DEFAULT_PUBLIC_KEYS]


def read_public_key(candidates: Iterable[Path]) -> tuple[Path, str] | None:
    """The first candidate that holds an OpenSSH public key, and that key."""
    for candidate in candidates:
        try:
            text = candidate.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if fingerprint(text) is not None:
            return candidate, text
    return None
