"""Where the registry lives: ``registry.url`` read, checked and shown with its password masked.

``sqlite:///absolute/path`` (the default is ``registry.sqlite3`` in the state directory) or
``postgresql://user@host:port/dbname?...`` (a libpq URL: the password comes from the URL,
``PGPASSWORD`` or ``~/.pgpass``).  Standard library only: ``list`` and completion import it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
ENV_VARIABLE = "MORPHEUS_REGISTRY__URL"
REGISTRY_FILE = "registry.sqlite3"
_POSTGRES_SCHEMES = ("postgresql", "postgres")
_MASK = "***"


@dataclass(frozen=True)
class RegistryUrl:
    """A parsed ``registry.url``: the backend and, for SQLite, the file."""

    backend: str  # SQLITE or POSTGRESQL
    url: str  # as configured (may hold a password: show ``masked`` instead)
    path: Path | None = None  # the SQLite file

    @property
    def masked(self) -> str:
        return masked_url(self.url)


def parse_registry_url(url: str | None, state_dir: Path) -> RegistryUrl:
    """``url`` checked; None means the SQLite file in ``state_dir``.

    Raises ``ValueError`` with a sentence saying what is accepted.
    """
    if url is None or not url.strip():
        path = state_dir / REGISTRY_FILE
        return RegistryUrl(SQLITE, f"sqlite://{path}", path)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in _POSTGRES_SCHEMES:
        parts = urlsplit(url)
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError(
                f"{masked_url(url)} names no server: write postgresql://USER@HOST:PORT/DBNAME"
            )
        return RegistryUrl(POSTGRESQL, url)
    if scheme == SQLITE:
        rest = url[len("sqlite:") :]
        if not rest.startswith("///"):
            raise ValueError(
                f"{url!r} is not a SQLite URL with an absolute path: write sqlite:///PATH "
                "(three slashes, then the absolute path)"
            )
        return RegistryUrl(SQLITE, url, Path(unquote(rest[2:])))
    raise ValueError(
        f"{masked_url(url)!r} is not a registry URL: write sqlite:///PATH or "
        "postgresql://USER@HOST:PORT/DBNAME"
    )


def masked_url(url: str) -> str:
    """``url`` with any password (in the user part or a ``password=`` parameter) as ***."""
    try:
        parts = urlsplit(url)
        if parts.password is None and "password" not in parts.query.lower():
            return url
        netloc = parts.netloc
        if parts.password is not None:
            user, _, host = netloc.rpartition("@")
            name = user.split(":", 1)[0]
            netloc = f"{name}:{_MASK}@{host}"
        query = parts.query
        if "password" in query.lower():
            pairs = [
                (key, _MASK if key.lower() == "password" else value)
                for key, value in parse_qsl(query, keep_blank_values=True)
            ]
            query = urlencode(pairs, safe="*", quote_via=quote)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        # Not even a URL: show its scheme only, never what might be a password.
        return re.split(r"[:/]", url, maxsplit=1)[0] + "://" + _MASK


def configured_url(
    explicit_config: Path | None = None, environ: Mapping[str, str] | None = None
) -> str | bool:
    """``registry.url`` as far as it can be known without loading the settings.

    The URL from ``MORPHEUS_REGISTRY__URL``; False when no config file could set it (the
    default then holds); True when the settings must be loaded to know.  ``list`` and
    completion use this to stay fast on the default registry.
    """
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if name.upper() == ENV_VARIABLE:
            return value
    from morpheus.config_search import config_search_path

    candidates = config_search_path(explicit_config, env, Path.cwd(), Path.home())
    named = explicit_config is not None or bool(env.get("MORPHEUS_CONFIG"))
    path = next((path for path in candidates if path.is_file()), None)
    if path is None:
        # A named file that is missing: loading the settings says so.
        return named
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    # A top-level `registry:` key (or the file in a form this cannot tell): load it.
    return re.search(r"^[\"']?registry[\"']?\s*:|^\{", text, re.MULTILINE) is not None
