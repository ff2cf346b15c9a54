"""The registry's secret columns: which they are, and how they are counted and re-sealed.

Every secret the registry keeps is listed in ``SECRET_COLUMNS`` and read and written
through a ``SecretCodec`` (``morpheus.secret_codec``).  A registry backend uses these with
its own connection; the SQL is plain enough for SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from morpheus.errors import RegistryKeyError
from morpheus.secret_codec import (
    GENERATE_HINT,
    KEY_ENV,
    SEALED,
    SecretCodec,
    StoredForm,
    stored_form,
)


class Connection(Protocol):
    """The part of a DB-API connection used here (``sqlite3.Connection``)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


@dataclass(frozen=True)
class SecretColumn:
    """A column that holds a secret, the table's key column beside it, and what it holds."""

    table: str
    key: str
    column: str
    #: For messages: "the route password of forest-1".
    noun: str

    def what(self, key: object) -> str:
        return f"the {self.noun} of {key}"

    # Table and column names come from SECRET_COLUMNS below, never from input.
    def select_sql(self) -> str:
        return f"SELECT {self.key}, {self.column} FROM {self.table} WHERE {self.column} IS NOT NULL"  # noqa: S608

    def update_sql(self) -> str:
        return f"UPDATE {self.table} SET {self.column} = ? WHERE {self.key} = ?"  # noqa: S608

    def sealed_probe_sql(self) -> str:
        return (
            f"SELECT {self.column} FROM {self.table} WHERE substr({self.column}, 1, ?) = ? LIMIT 1"  # noqa: S608
        )


#: Every secret the registry keeps.  A new secret column goes here, and through the codec.
SECRET_COLUMNS = (
    SecretColumn("route_credentials", "forest_id", "password", "route password"),
    SecretColumn("route_credentials", "forest_id", "ca_key", "route CA key"),
    SecretColumn("node_credentials", "node_id", "key", "route certificate key"),
    SecretColumn("route_credentials", "forest_id", "ssh_client_key", "SSH client key"),
)
ROUTE_PASSWORD, CA_KEY, NODE_KEY, SSH_CLIENT_KEY = SECRET_COLUMNS


@dataclass
class SecretCount:
    """Stored secrets by how they are kept; ``unreadable``: sealed ones the key does not open."""

    plain: int = 0
    sealed: int = 0
    unreadable: int = 0
    #: ``encrypt_secrets``: plain ones sealed now / sealed ones sealed again with the first key.
    encrypted: int = 0
    re_encrypted: int = 0


def check_writable(db: Connection, codec: SecretCodec, where: str) -> None:
    """Refuse to add a secret the registry's other holders could not read: a plain one beside
    encrypted ones (no key here), or one sealed with a key that does not open those already
    stored (a different key here).  One stored secret is tried."""
    for secret in SECRET_COLUMNS:
        row = db.execute(secret.sealed_probe_sql(), (len(SEALED), SEALED)).fetchone()
        if row is None:
            continue
        if not codec.has_key:
            raise RegistryKeyError(
                f"the registry {where} keeps its secrets encrypted and no registry key is "
                f"set: set {KEY_ENV} or registry.key_file to its key"
            )
        if not codec.opens(row[0]):
            codec.check()  # an unreadable or malformed key says so itself
            raise RegistryKeyError(
                f"the secrets in the registry {where} are encrypted with another key than "
                f"the one from {codec.source.describe()}: set the key they were encrypted with "
                "(an old key may follow the new one)"
            )
        return


def count_secrets(read: Callable[[str], Sequence[Any]], codec: SecretCodec) -> SecretCount:
    """How the stored secrets are kept (``read`` runs a query); sealed ones are tried with
    the key when one is set."""
    count = SecretCount()
    for secret in SECRET_COLUMNS:
        for _key, stored in read(secret.select_sql()):
            if stored_form(stored) is StoredForm.PLAIN:
                count.plain += 1
                continue
            count.sealed += 1
            if not codec.opens(stored):
                count.unreadable += 1
    return count


def encrypt_secrets(db: Connection, codec: SecretCodec) -> SecretCount:
    """Seal every secret with the codec's first key: plain rows from before the key, and rows
    sealed with an older key (after a rotation).  The caller holds one write transaction."""
    if not codec.has_key:
        raise RegistryKeyError(
            f"no registry key to encrypt with: set {KEY_ENV} or registry.key_file ({GENERATE_HINT})"
        )
    count = SecretCount()
    for secret in SECRET_COLUMNS:
        for key, stored in db.execute(secret.select_sql()).fetchall():
            value = codec.open(stored, secret.what(key))
            db.execute(secret.update_sql(), (codec.seal(value), key))
            if stored_form(stored) is StoredForm.SEALED:
                count.re_encrypted += 1
            else:
                count.encrypted += 1
    return count


def seal_plain_secrets(tables: dict[str, list[dict[str, Any]]], codec: SecretCodec) -> None:
    """Seal, in place, the plain secrets among rows about to be copied into a registry whose
    codec does not take plain ones (a shared registry); ``RegistryKeyError`` without a key."""
    if codec.plaintext_allowed:
        return
    for secret in SECRET_COLUMNS:
        for row in tables.get(secret.table, []):
            stored = row.get(secret.column)
            if stored is not None and stored_form(stored) is StoredForm.PLAIN:
                plain = codec.open(stored, secret.what(row[secret.key]))
                row[secret.column] = codec.seal(plain)
