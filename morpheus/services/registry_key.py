"""The registry key: make one, check it against the stored secrets, encrypt with it.

See ``morpheus.secret_codec`` for how secrets are sealed and where the key is found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from morpheus.errors import RegistryKeyError
from morpheus.secret_codec import KEY_ENV, KeyOrigin, KeySource, default_key_file, write_key_file
from morpheus.secret_rows import SecretCount
from morpheus.services import Context
from morpheus.settings import Settings


@dataclass(frozen=True)
class KeyFile:
    """What ``registry key generate`` wrote; ``shadowed``: MORPHEUS_REGISTRY_KEY is set and
    is used instead of the file."""

    path: Path
    rotated: bool
    shadowed: bool


@dataclass(frozen=True)
class KeyCheck:
    """The configured key and the stored secrets; ``problem`` says what is wrong, if anything."""

    source: str
    origin: KeyOrigin
    where: str | None
    keys: int
    secrets: SecretCount
    problem: str | None


def generate_key(settings: Settings, file: Path | None, *, rotate: bool) -> KeyFile:
    """Write a new key to ``file`` (default: ``registry.key_file``, else the default key
    file); with ``rotate``, before the keys the file already holds."""
    path = file or settings.registry.key_file or default_key_file()
    written = write_key_file(path.expanduser(), rotate=rotate)
    shadowed = KeySource.find(settings.registry.key_file).origin is KeyOrigin.ENVIRONMENT
    return KeyFile(path=written, rotated=rotate, shadowed=shadowed)


def check_key(ctx: Context) -> KeyCheck:
    """Whether the configured key is readable and opens every encrypted secret."""
    codec = ctx.registry.secrets
    keys = 0
    problem = None
    if codec.has_key:
        try:
            keys = codec.check()
        except RegistryKeyError as exc:
            problem = str(exc)
    secrets = ctx.registry.secret_forms()
    if problem is None and secrets.unreadable:
        if codec.has_key:
            problem = (
                f"{secrets.unreadable} encrypted secret(s) do not open with the key from "
                f"{codec.source.describe()}: set the key this registry was encrypted with"
            )
        else:
            problem = (
                f"{secrets.unreadable} secret(s) are encrypted and no registry key is set: "
                f"set {KEY_ENV} or registry.key_file to the key this registry was encrypted with"
            )
    return KeyCheck(
        source=codec.source.describe(),
        origin=codec.source.origin,
        where=codec.source.where,
        keys=keys,
        secrets=secrets,
        problem=problem,
    )


def encrypt_registry(ctx: Context) -> SecretCount:
    """Encrypt every stored secret with the first registry key (plain ones, and ones an
    older key encrypted)."""
    ctx.registry.secrets.check()
    return ctx.registry.encrypt_secrets()
