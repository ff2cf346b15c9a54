"""The registry keeps route passwords and private keys sealed when a key is set.

Real Fernet keys, on both backends (a SQLite file and a real PostgreSQL database).  The rows
are read back raw, as anyone holding the file (or a database dump) would read them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from morpheus.blueprint import RouteCredentials
from morpheus.errors import RegistryKeyError
from morpheus.pki import ForestCA
from morpheus.registry import Registry
from morpheus.secret_codec import KEY_ENV, SEALED, KeySource, SecretCodec, new_key
from morpheus.secret_rows import SECRET_COLUMNS

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

OpenRegistry = Callable[[SecretCodec], Registry]


def codec(*keys: str) -> SecretCodec:
    return SecretCodec(KeySource.find(None, {KEY_ENV: ",".join(keys)} if keys else {}))


@pytest.fixture
def open_registry(registry_url: str, state_dir: Path) -> Iterator[OpenRegistry]:
    """Opens the registry (each backend in turn) with a codec; every one opened is closed after."""
    opened: list[Registry] = []

    def open_with(secrets: SecretCodec) -> Registry:
        registry = Registry.open(registry_url, state_dir, secrets=secrets)
        opened.append(registry)
        return registry

    yield open_with
    for registry in opened:
        registry.close()


def plant_record(registry: Registry) -> tuple[str, RouteCredentials, ForestCA, dict[str, str]]:
    """A forest with its CA and two nodes' certificates; the secrets, as written."""
    credentials = RouteCredentials.generate()
    ca = ForestCA.generate("test", NOW)
    forest = registry.create_forest(
        provider="local",
        size="small",
        location=None,
        run_id="run-1",
        credentials=credentials,
        now=NOW,
        planned_nodes=2,
        ca=ca,
    )
    node_keys = {}
    for node in registry.nodes(forest.id):
        certificate = ca.issue(node.id, ["127.0.0.1"], NOW)
        registry.save_node_certificate(forest.id, node.id, certificate)
        node_keys[node.id] = certificate.key.get_secret_value()
    return forest.id, credentials, ca, node_keys


def raw_secrets(registry_url: str, state_dir: Path) -> list[str]:
    """The secret columns as stored, read past the codec."""
    with closing(Registry.open(registry_url, state_dir)) as registry:
        return [
            value
            for secret in SECRET_COLUMNS
            for _key, value in registry.store.read(secret.select_sql())
        ]


def registry_bytes(state_dir: Path) -> bytes:
    """The registry file and its write-ahead log, as a copy of the disk would hold them
    (nothing for a PostgreSQL registry, whose files the server keeps)."""
    return b"".join(path.read_bytes() for path in sorted(state_dir.glob("registry.sqlite3*")))


def test_with_a_key_no_secret_is_stored_plain_and_each_reads_back(
    open_registry: OpenRegistry, registry_url: str, state_dir: Path
) -> None:
    registry = open_registry(codec(new_key()))
    forest_id, credentials, ca, node_keys = plant_record(registry)
    password = credentials.password.get_secret_value()
    stored = raw_secrets(registry_url, state_dir)
    assert len(stored) == 4 and all(value.startswith(SEALED) for value in stored)
    on_disk = registry_bytes(state_dir)
    assert password.encode() not in on_disk
    assert b"PRIVATE KEY" not in on_disk
    assert registry.route_credentials(forest_id) == credentials
    assert registry.forest_ca(forest_id) == ca
    for node_id, key in node_keys.items():
        certificate = registry.node_certificate(node_id)
        assert certificate is not None and certificate.key.get_secret_value() == key
    rotated = RouteCredentials.generate()
    registry.set_route_password(forest_id, rotated)
    assert registry.route_credentials(forest_id) == rotated
    assert rotated.password.get_secret_value() not in "".join(raw_secrets(registry_url, state_dir))


def test_without_the_key_forests_still_list_but_secrets_do_not_open(
    open_registry: OpenRegistry,
) -> None:
    forest_id, _credentials, _ca, node_keys = plant_record(open_registry(codec(new_key())))
    keyless = open_registry(codec())
    assert [forest.id for forest in keyless.list_forests()] == [forest_id]
    assert len(keyless.nodes(forest_id)) == 2
    assert keyless.events(forest_id)
    for read in (
        lambda: keyless.route_credentials(forest_id),
        lambda: keyless.forest_ca(forest_id),
        lambda: keyless.node_certificate(next(iter(node_keys))),
        lambda: keyless.check_secrets(forest_id),
    ):
        with pytest.raises(RegistryKeyError, match=f"no registry key is set: set {KEY_ENV}"):
            read()


def test_a_registry_with_encrypted_secrets_takes_no_plain_or_foreign_ones(
    open_registry: OpenRegistry, registry_url: str, state_dir: Path
) -> None:
    key = new_key()
    plant_record(open_registry(codec(key)))
    before = raw_secrets(registry_url, state_dir)
    for other, match in [(codec(), "no registry key is set"), (codec(new_key()), "another key")]:
        with pytest.raises(RegistryKeyError, match=match):
            plant_record(open_registry(other))
    assert raw_secrets(registry_url, state_dir) == before
    assert len(open_registry(codec(key)).list_forests()) == 1  # nothing half-recorded


def make_plain(registry_url: str, state_dir: Path, key: str) -> None:
    """Rewrite every secret in plain text, as a registry from before the key (or a copy made
    without Morpheus) holds them."""
    registry = Registry.open(registry_url, state_dir, secrets=codec(key))
    with closing(registry), registry.store.transaction() as db:
        for secret in SECRET_COLUMNS:
            for row_key, stored in db.execute(secret.select_sql()).fetchall():
                plain = registry.secrets.open(stored, "a secret")
                db.execute(secret.update_sql(), (plain, row_key))


def test_without_a_key_sqlite_keeps_secrets_plain_and_a_shared_registry_refuses_them(
    open_registry: OpenRegistry, registry_url: str, state_dir: Path
) -> None:
    registry = open_registry(codec())
    if registry.store.backend == "sqlite":
        _id, credentials, _ca, _keys = plant_record(registry)
        assert credentials.password.get_secret_value() in raw_secrets(registry_url, state_dir)
        return
    with pytest.raises(RegistryKeyError, match=f"shared registry .* set {KEY_ENV}"):
        plant_record(registry)
    assert registry.list_forests() == []  # refused before anything was recorded


def test_plain_rows_of_an_older_registry_read_with_a_key_and_encrypt_in_place(
    open_registry: OpenRegistry, registry_url: str, state_dir: Path
) -> None:
    key = new_key()
    forest_id, credentials, ca, _keys = plant_record(open_registry(codec(key)))
    make_plain(registry_url, state_dir, key)
    password = credentials.password.get_secret_value()
    assert password in raw_secrets(registry_url, state_dir)
    registry = open_registry(codec(key))
    assert registry.route_credentials(forest_id) == credentials
    assert (registry.secret_forms().plain, registry.secret_forms().sealed) == (4, 0)
    count = registry.encrypt_secrets()
    assert (count.encrypted, count.re_encrypted) == (4, 0)
    assert all(value.startswith(SEALED) for value in raw_secrets(registry_url, state_dir))
    # Nothing of the old plain text is left in the file: zeroed pages, an emptied log.
    on_disk = registry_bytes(state_dir)
    assert password.encode() not in on_disk and b"PRIVATE KEY" not in on_disk
    assert registry.forest_ca(forest_id) == ca
    forms = registry.secret_forms()
    assert (forms.plain, forms.sealed, forms.unreadable) == (0, 4, 0)


def test_a_rotated_key_re_encrypts_everything_and_the_old_key_can_go(
    open_registry: OpenRegistry,
) -> None:
    old, new = new_key(), new_key()
    forest_id, credentials, _ca, _keys = plant_record(open_registry(codec(old)))
    count = open_registry(codec(new, old)).encrypt_secrets()
    assert (count.encrypted, count.re_encrypted) == (0, 4)
    assert open_registry(codec(new)).route_credentials(forest_id) == credentials
    assert open_registry(codec(old)).secret_forms().unreadable == 4


def test_encrypting_with_a_key_that_opens_nothing_changes_nothing(
    open_registry: OpenRegistry, registry_url: str, state_dir: Path
) -> None:
    first = new_key()
    plant_record(open_registry(codec(first)))
    make_plain(registry_url, state_dir, first)  # plain rows ...
    plant_record(open_registry(codec(new_key())))  # ... then sealed ones (an older key)
    before = raw_secrets(registry_url, state_dir)
    with pytest.raises(RegistryKeyError, match="does not open"):
        open_registry(codec(new_key())).encrypt_secrets()
    # One transaction: the plain rows stayed plain too.
    assert raw_secrets(registry_url, state_dir) == before
    with pytest.raises(RegistryKeyError, match="no registry key to encrypt with"):
        open_registry(codec()).encrypt_secrets()


def test_plain_secrets_are_encrypted_on_their_way_into_a_shared_registry(
    postgres_url: str, state_dir: Path
) -> None:
    from morpheus.services.registry_move import migrate_registry

    sqlite_url = f"sqlite://{state_dir / 'registry.sqlite3'}"
    with closing(Registry.open(sqlite_url, state_dir, secrets=codec())) as source:
        forest_id, credentials, ca, _keys = plant_record(source)
    # Without a key the shared registry takes nothing: no plain secret, no half forest.
    keyless = Registry.open(sqlite_url, state_dir, secrets=codec())
    with closing(keyless), pytest.raises(RegistryKeyError, match="shared registry"):
        migrate_registry(keyless, postgres_url, state_dir)
    with closing(Registry.open(postgres_url, state_dir, secrets=codec())) as target:
        assert target.forest_ids() == []
    key = new_key()
    with closing(Registry.open(sqlite_url, state_dir, secrets=codec(key))) as source:
        migration = migrate_registry(source, postgres_url, state_dir)
    assert [moved.copied for moved in migration.forests] == [True]
    stored = raw_secrets(postgres_url, state_dir)
    assert len(stored) == 4 and all(value.startswith(SEALED) for value in stored)
    with closing(Registry.open(postgres_url, state_dir, secrets=codec(key))) as target:
        assert target.route_credentials(forest_id) == credentials
        assert target.forest_ca(forest_id) == ca
