"""Secrets at rest: how the registry seals route passwords and private keys with the operator's key.

Every secret column of the registry (``SECRET_COLUMNS`` in ``morpheus.sqlite_schema``) is
written through ``SecretCodec.seal`` and read through ``SecretCodec.open``.  With a registry
key configured, a stored value is ``morpheus:fernet:<token>`` (``cryptography``'s Fernet:
AES-128-CBC with an HMAC-SHA256, so a changed byte is refused, never decrypted to garbage);
without one, an embedded SQLite registry keeps secrets as plain text in its 0600 file, as it
always has, while a shared registry refuses to write them.

A stored value is read by its prefix: ``morpheus:fernet:`` is sealed, ``morpheus:plain:``
is plain text that happened to start with ``morpheus:``, anything else is a plain row from
before the registry had a key (``morpheus registry encrypt`` seals those).

The key comes from ``MORPHEUS_REGISTRY_KEY``, else from ``registry.key_file``, else from the
default key file (``$XDG_CONFIG_HOME/morpheus/registry.key``) when it exists.  Several keys,
comma-separated in the variable or one a line in the file, allow rotation: the first seals,
every one opens.  A key file must be private (mode 0600).  The key is looked at only when a
secret is read or written, so ``list`` and ``status`` work without it, and ``cryptography`` is
imported only then.  Neither a key nor a secret ever appears in an error message.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from morpheus.errors import DamagedRegistryError, RegistryKeyError

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

#: The variable that holds the registry key (or several, comma-separated; the first seals).
KEY_ENV = "MORPHEUS_REGISTRY_KEY"
SEALED = "morpheus:fernet:"
ESCAPED_PLAIN = "morpheus:plain:"
_RESERVED = "morpheus:"
GENERATE_HINT = "`morpheus registry key generate` makes a key file"


class KeyOrigin(StrEnum):
    """Where the registry key was found."""

    ENVIRONMENT = "environment"
    KEY_FILE = "key_file"
    NONE = "none"


class StoredForm(StrEnum):
    """How a stored secret is kept."""

    PLAIN = "plain"
    SEALED = "sealed"


def default_key_file(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/morpheus/registry.key`` (``~/.config`` when unset), beside the
    config file, never beside the registry it protects."""
    env = os.environ if environ is None else environ
    config_home = env.get("XDG_CONFIG_HOME") or str(
        Path(env.get("HOME") or Path.home()) / ".config"
    )
    return Path(config_home) / "morpheus" / "registry.key"


@dataclass(frozen=True)
class KeySource:
    """Where the registry key is read from, when it is needed (nothing is read here)."""

    origin: KeyOrigin
    file: Path | None = None
    #: The variable's value; kept out of ``repr`` so no traceback or log can show it.
    _value: str | None = None

    def __repr__(self) -> str:
        return f"KeySource({self.describe()})"

    @classmethod
    def find(cls, key_file: Path | None, environ: Mapping[str, str] | None = None) -> KeySource:
        """``MORPHEUS_REGISTRY_KEY``, else ``key_file`` (``registry.key_file``), else the
        default key file when it exists, else no key."""
        env = os.environ if environ is None else environ
        value = env.get(KEY_ENV, "").strip()
        if value:
            return cls(KeyOrigin.ENVIRONMENT, _value=value)
        if key_file is not None:
            return cls(KeyOrigin.KEY_FILE, file=key_file.expanduser())
        default = default_key_file(env)
        if default.exists():
            return cls(KeyOrigin.KEY_FILE, file=default)
        return cls(KeyOrigin.NONE)

    @property
    def where(self) -> str | None:
        """The variable's name or the file's path; None without a key."""
        if self.origin is KeyOrigin.ENVIRONMENT:
            return KEY_ENV
        return None if self.file is None else str(self.file)

    def describe(self) -> str:
        """Where the key comes from, in words (never the key)."""
        match self.origin:
            case KeyOrigin.ENVIRONMENT:
                return KEY_ENV
            case KeyOrigin.KEY_FILE:
                return f"the key file {self.file}"
        return "no key"

    def keys(self) -> list[str]:
        """The keys, the sealing one first; ``RegistryKeyError`` when there are none or the
        file is unreadable or not private."""
        if self.origin is KeyOrigin.ENVIRONMENT:
            assert self._value is not None
            keys = [key.strip() for key in self._value.split(",") if key.strip()]
        elif self.origin is KeyOrigin.KEY_FILE:
            assert self.file is not None
            keys = _read_key_file(self.file)
        else:
            raise RegistryKeyError(
                f"no registry key: set {KEY_ENV} or registry.key_file ({GENERATE_HINT})"
            )
        if not keys:
            raise RegistryKeyError(f"{self.describe()} holds no key; {GENERATE_HINT}")
        return keys


def _read_key_file(path: Path) -> list[str]:
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            raise RegistryKeyError(
                f"the registry key file {path} is not a file: point registry.key_file at the "
                f"file that holds the key ({GENERATE_HINT})"
            )
        if stat.S_IMODE(status.st_mode) & 0o077:
            raise RegistryKeyError(
                f"the registry key file {path} can be read by others "
                f"(mode {stat.S_IMODE(status.st_mode):04o}): run `chmod 600 {path}`"
            )
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise RegistryKeyError(
            f"the registry key file {path} does not exist: "
            f"`morpheus registry key generate --file {path}` makes one"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not a key file"
        raise RegistryKeyError(f"cannot read the registry key file {path}: {reason}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def stored_form(stored: str) -> StoredForm:
    """Whether a stored value is sealed or plain (without a key)."""
    sealed = isinstance(stored, str) and stored.startswith(SEALED)
    return StoredForm.SEALED if sealed else StoredForm.PLAIN


class SecretCodec:
    """Seals secrets before they are stored and opens them when they are read.

    ``plaintext_allowed`` (an embedded SQLite registry) lets secrets be stored plain when no
    key is configured; a shared registry refuses that with ``RegistryKeyError``.
    """

    def __init__(self, source: KeySource, *, plaintext_allowed: bool = True) -> None:
        self.source = source
        self.plaintext_allowed = plaintext_allowed
        self._fernet: MultiFernet | None = None
        self._key_count = 0

    def __repr__(self) -> str:
        return f"SecretCodec({self.source.describe()})"

    @classmethod
    def without_key(cls) -> SecretCodec:
        """A codec with no key: plain secrets only (tests, recovery tools)."""
        return cls(KeySource(KeyOrigin.NONE))

    @property
    def has_key(self) -> bool:
        """Whether a key is configured (it is not read, nor checked, here)."""
        return self.source.origin is not KeyOrigin.NONE

    def seal(self, value: str) -> str:
        """What to store for ``value``: sealed with the first key, or plain without a key."""
        if not self.has_key:
            if not self.plaintext_allowed:
                raise RegistryKeyError(
                    "a shared registry keeps its secrets encrypted and no registry key is set: "
                    f"set {KEY_ENV} or registry.key_file ({GENERATE_HINT})"
                )
            return ESCAPED_PLAIN + value if value.startswith(_RESERVED) else value
        token = self._multi_fernet().encrypt(value.encode())
        return SEALED + token.decode("ascii")

    def open(self, stored: str, what: str) -> str:
        """The secret a stored value holds; ``what`` names it in errors ("the route password
        of forest-1")."""
        if not isinstance(stored, str):  # a damaged row (a blob where text belongs)
            raise DamagedRegistryError(f"{what} in the registry is damaged: it is not text")
        if stored.startswith(ESCAPED_PLAIN):
            return stored[len(ESCAPED_PLAIN) :]
        if not stored.startswith(SEALED):
            return stored
        if not self.has_key:
            raise RegistryKeyError(
                f"{what} is encrypted and no registry key is set: set {KEY_ENV} or "
                "registry.key_file to the key this registry was encrypted with"
            )
        from cryptography.fernet import InvalidToken

        try:
            return self._multi_fernet().decrypt(stored[len(SEALED) :].encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise RegistryKeyError(
                f"{what} does not open with the registry key from {self.source.describe()}: "
                "set the key this registry was encrypted with (an old key may follow the "
                "new one, comma-separated or on the next line)"
            ) from None

    def opens(self, stored: str) -> bool:
        """Whether ``stored`` can be read with the configured key (plain values always can)."""
        try:
            self.open(stored, "a secret")
        except RegistryKeyError:
            return False
        return True

    def check(self) -> int:
        """How many keys the configured source holds, each checked to be a registry key
        (``RegistryKeyError`` says what is wrong)."""
        self._multi_fernet()
        return self._key_count

    def _multi_fernet(self) -> MultiFernet:
        if self._fernet is None:
            from cryptography.fernet import Fernet, MultiFernet

            fernets = []
            for number, key in enumerate(self.source.keys(), start=1):
                try:
                    fernets.append(Fernet(key))
                except ValueError:
                    raise RegistryKeyError(
                        f"key {number} of {self.source.describe()} is not a registry key "
                        f"(44 characters of URL-safe base64); {GENERATE_HINT}"
                    ) from None
            self._fernet = MultiFernet(fernets)
            self._key_count = len(fernets)
        return self._fernet


def new_key() -> str:
    """A new random registry key (a Fernet key: 32 random bytes, URL-safe base64)."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode("ascii")


def write_key_file(path: Path, *, rotate: bool = False) -> Path:
    """Write a new key to ``path`` (mode 0600, its directory made 0700).

    An existing file is never overwritten: without ``rotate`` that is an error; with it, the
    new key goes first and the old ones stay after it, to open what they sealed.
    """
    old: list[str] = []
    if path.exists():
        if not rotate:
            raise RegistryKeyError(
                f"the key file {path} already exists and may be the only key to secrets in "
                "a registry: pass --rotate to put a new key before its keys, or choose "
                "another --file"
            )
        old = _read_key_file(path)
    elif rotate:
        raise RegistryKeyError(f"the key file {path} does not exist: there is no key to rotate")
    lines = [new_key(), *old]
    partial = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write("\n".join(lines) + "\n")
        if rotate:
            os.replace(partial, path)
        else:
            # A link, not a rename: never replace a key file made meanwhile by someone else.
            os.link(partial, path)
    except OSError as exc:
        raise RegistryKeyError(f"cannot write the key file {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    return path
