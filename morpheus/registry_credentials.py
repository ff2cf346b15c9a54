"""The registry's credentials: route passwords, the forest CA, node certificates and keys.

Every secret goes through the registry's ``SecretCodec`` (sealed when a key is set); the
columns are listed once, in ``morpheus.secret_rows``.  ``Registry`` inherits these methods.
A store shared by several hosts (PostgreSQL) never takes a secret in plain text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from pydantic import SecretStr

from morpheus.errors import DamagedRegistryError, RegistryError
from morpheus.fields import RouteCredentials
from morpheus.secret_codec import KeyOrigin, KeySource, SecretCodec, StoredForm, stored_form
from morpheus.secret_rows import (
    CA_KEY,
    NODE_KEY,
    ROUTE_PASSWORD,
    SSH_CLIENT_KEY,
    SecretCount,
    check_writable,
    count_secrets,
    encrypt_secrets,
)
from morpheus.store import Row, Store, Transaction

if TYPE_CHECKING:
    from morpheus.pki import ForestCA, NodeCertificate, SshKeyPair

#: Backends whose secrets may be stored plain when no key is set: one host's 0600 file.
PLAIN_SECRETS_BACKENDS = frozenset({"sqlite"})


def codec_for(store: Store, secrets: SecretCodec | None) -> SecretCodec:
    """``secrets``' key under the store's policy: plain secrets (no key) only in SQLite."""
    source = KeySource(KeyOrigin.NONE) if secrets is None else secrets.source
    return SecretCodec(source, plaintext_allowed=store.backend in PLAIN_SECRETS_BACKENDS)


class CredentialRecords:
    """The part of ``Registry`` that keeps secrets, and the two doors to its store."""

    store: Store
    secrets: SecretCodec
    _secrets_checked: bool

    def _rows(self, sql: str, parameters: Sequence[object] = ()) -> list[Row]:
        return self.store.read(sql, parameters)

    def _write(self) -> AbstractContextManager[Transaction]:
        """One transaction: committed whole, or rolled back whole."""
        return self.store.transaction()

    def route_credentials(self, forest_id: str) -> RouteCredentials:
        rows = self._rows(
            "SELECT username, password FROM route_credentials WHERE forest_id = ?", (forest_id,)
        )
        if not rows:
            raise RegistryError(f"forest {forest_id} has no route credentials recorded")
        password = self.secrets.open(rows[0][1], ROUTE_PASSWORD.what(forest_id))
        try:
            return RouteCredentials(username=rows[0][0], password=SecretStr(password))
        except ValueError:
            raise DamagedRegistryError(
                f"the route credentials of {forest_id} in the registry are damaged"
            ) from None

    def set_route_password(self, forest_id: str, credentials: RouteCredentials) -> None:
        """Replace the forest's route user and password (``rotate``)."""
        with self._write() as db:
            password = self._sealer(db).seal(credentials.password.get_secret_value())
            cursor = db.execute(
                "UPDATE route_credentials SET username = ?, password = ? WHERE forest_id = ?",
                (credentials.username, password, forest_id),
            )
            if cursor.rowcount != 1:
                raise RegistryError(f"forest {forest_id} has no route credentials recorded")

    def forest_ca(self, forest_id: str) -> ForestCA | None:
        """The forest's route CA; None for a forest recorded before routes used TLS."""
        from morpheus.pki import ForestCA

        rows = self._rows(
            "SELECT ca_cert, ca_key FROM route_credentials WHERE forest_id = ?", (forest_id,)
        )
        if not rows or rows[0][0] is None:
            return None
        key = self.secrets.open(rows[0][1], CA_KEY.what(forest_id))
        return ForestCA(cert=rows[0][0], key=SecretStr(key))

    def node_certificate(self, node_id: str) -> NodeCertificate | None:
        from morpheus.pki import NodeCertificate

        rows = self._rows(
            "SELECT cert, key, addresses FROM node_credentials WHERE node_id = ?", (node_id,)
        )
        if not rows:
            return None
        key = self.secrets.open(rows[0][1], NODE_KEY.what(node_id))
        return NodeCertificate(
            cert=rows[0][0], key=SecretStr(key), addresses=tuple(json.loads(rows[0][2]))
        )

    def save_node_certificate(
        self, forest_id: str, node_id: str, certificate: NodeCertificate
    ) -> None:
        """Keep a node's route certificate and key (replacing any it had)."""
        with self._write() as db:
            key = self._sealer(db).seal(certificate.key.get_secret_value())
            db.execute(
                "INSERT INTO node_credentials (node_id, forest_id, cert, key, addresses)"
                " VALUES (?,?,?,?,?) ON CONFLICT (node_id) DO UPDATE SET"
                " forest_id = excluded.forest_id, cert = excluded.cert, key = excluded.key,"
                " addresses = excluded.addresses",
                (
                    node_id,
                    forest_id,
                    certificate.cert,
                    key,
                    json.dumps(list(certificate.addresses)),
                ),
            )

    # the SSH node channel (morpheus.remote) -------------------------------------------

    def ssh_client_key(self, forest_id: str) -> SshKeyPair | None:
        """The forest's SSH client key; None until one is made."""
        from morpheus.pki import SshKeyPair

        rows = self._rows(
            "SELECT ssh_client_key FROM route_credentials WHERE forest_id = ?", (forest_id,)
        )
        if not rows or rows[0][0] is None:
            return None
        private = self.secrets.open(rows[0][0], SSH_CLIENT_KEY.what(forest_id))
        try:
            return SshKeyPair.from_private(private)
        except ValueError:
            raise DamagedRegistryError(
                f"the SSH client key of {forest_id} in the registry is damaged"
            ) from None

    def save_ssh_client_key(self, forest_id: str, key: SshKeyPair) -> None:
        """Keep the forest's SSH client key beside its route password (a secret like it)."""
        with self._write() as db:
            private = self._sealer(db).seal(key.private.get_secret_value())
            cursor = db.execute(
                "UPDATE route_credentials SET ssh_client_key = ? WHERE forest_id = ?",
                (private, forest_id),
            )
            if cursor.rowcount != 1:
                raise RegistryError(f"forest {forest_id} has no route credentials recorded")

    def ssh_host_key(self, node_id: str) -> str | None:
        """The public half of the node's pinned SSH host key (the private half is on the
        node only), or None."""
        rows = self._rows("SELECT public_key FROM ssh_host_keys WHERE node_id = ?", (node_id,))
        return str(rows[0][0]) if rows else None

    def save_ssh_host_key(self, forest_id: str, node_id: str, public_key: str) -> None:
        """Pin a node's SSH host key (replacing any it had: a node created anew)."""
        with self._write() as db:
            db.execute(
                "INSERT INTO ssh_host_keys (node_id, forest_id, public_key) VALUES (?,?,?)"
                " ON CONFLICT (node_id) DO UPDATE SET"
                " forest_id = excluded.forest_id, public_key = excluded.public_key",
                (node_id, forest_id, public_key),
            )

    # secrets at rest -----------------------------------------------------------------

    def _sealer(self, db: Transaction) -> SecretCodec:
        """The codec to write a secret with, once checked against the secrets stored: none
        is added that the registry's other users could not read."""
        if not self._secrets_checked:
            check_writable(db, self.secrets, self.store.location)
            self._secrets_checked = True
        return self.secrets

    def check_secrets(self, forest_id: str) -> None:
        """Raise ``RegistryKeyError`` now, before anything changes, if the forest's secrets
        cannot be read with the configured key (grow, reconcile)."""
        self.route_credentials(forest_id)
        self.forest_ca(forest_id)

    def secrets_encrypted(self, forest_id: str) -> bool:
        """Whether the forest's route password is stored encrypted (known without the key)."""
        rows = self._rows(
            "SELECT password FROM route_credentials WHERE forest_id = ?", (forest_id,)
        )
        return bool(rows) and stored_form(rows[0][0]) is StoredForm.SEALED

    def secret_forms(self) -> SecretCount:
        """How the stored secrets are kept (``registry key check``)."""
        return count_secrets(self._rows, self.secrets)

    def encrypt_secrets(self) -> SecretCount:
        """Seal every stored secret with the first registry key, in one transaction; then
        the store forgets the versions it replaced (their plain text, on SQLite)."""
        with self._write() as db:
            count = encrypt_secrets(db, self.secrets)
        self.store.discard_old_versions()
        return count
