"""The operator's SSH public key: which file, and whether it holds a key.

Every provider that lets the operator log in to its nodes (a cloud project key, a VM's
default user) finds the key the same way: ``infrastructure.ssh.key_path`` when set (a
``.pub`` file, or a private key whose ``.pub`` sits beside it), else the first of the usual
files in ``~/.ssh``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

from morpheus.errors import ConfigError

#: Looked for in ~/.ssh when ``infrastructure.ssh.key_path`` is not set, in this order.
DEFAULT_PUBLIC_KEYS = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")


def fingerprint(public_key: str) -> str | None:
    """The MD5 fingerprint of an OpenSSH public key (as clouds show it), or None if not one."""
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
    """Where to look: ``key_path`` itself when it ends in .pub, else that path plus .pub (it
    names the private key); without it, the usual files in ~/.ssh."""
    if configured is not None:
        path = configured.expanduser()
        return [path] if path.suffix == ".pub" else [Path(f"{path}.pub")]
    return [home / ".ssh" / name for name in DEFAULT_PUBLIC_KEYS]


def find_public_key(configured: Path | None, home: Path) -> tuple[Path, str] | None:
    """The operator's public key file and its key line, or None when there is none.

    A configured ``key_path`` must be readable and hold a key (``ConfigError`` otherwise);
    of the usual files, unreadable ones and ones that hold no key are passed over.
    """
    for path in public_key_candidates(configured, home):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            if configured is not None:
                raise ConfigError(
                    f"infrastructure.ssh.key_path {path} cannot be read: {exc}"
                ) from exc
            continue
        key = next((line.strip() for line in lines if line.strip()), "")
        if fingerprint(key) is not None:
            return path, key
        if configured is not None:
            raise ConfigError(
                f"{path} is not an SSH public key (expected e.g. `ssh-ed25519 AAAA… you@host`); "
                "point infrastructure.ssh.key_path at the .pub file"
            )
    return None
