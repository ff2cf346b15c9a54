"""What only the PostgreSQL registry has: its URL and password, the role's reach, a newer
schema, and `list` reading it.  The shared contract is tests/test_registry.py."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from morpheus.errors import ConfigError, RegistryError
from morpheus.registry import Registry
from morpheus.registry_url import masked_url, parse_registry_url
from morpheus.testing.cli import invoke
from morpheus.testing.postgres import PostgresServer


def test_a_wrong_password_is_one_line_that_never_shows_it(
    postgres_url: str, state_dir: Path
) -> None:
    wrong = postgres_url.replace(urlsplit(postgres_url).password or "", "not-the-Passw0rd")
    with pytest.raises(RegistryError) as caught:
        Registry.open(wrong, state_dir)
    message = str(caught.value)
    assert "cannot reach the registry postgresql://morpheus:***@127.0.0.1" in message
    assert "password authentication failed" in message
    assert "not-the-Passw0rd" not in message
    assert "\n" not in message


def test_the_password_may_come_from_pgpassword(
    postgres_url: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = urlsplit(postgres_url)
    monkeypatch.setenv("PGPASSWORD", parts.password or "")
    bare = postgres_url.replace(f":{parts.password}@", "@")
    with Registry.open(bare, state_dir) as registry:
        assert registry.store.location == bare
        assert registry.list_forests() == []


def test_the_password_may_come_from_pgpass(postgres_url: str, state_dir: Path) -> None:
    parts = urlsplit(postgres_url)
    pgpass = Path.home() / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{parts.port}:*:morpheus:{parts.password}\n")
    pgpass.chmod(0o600)
    bare = postgres_url.replace(f":{parts.password}@", "@")
    with Registry.open(bare, state_dir) as registry:
        assert registry.list_forests() == []


def test_a_role_without_rights_is_told_what_it_needs(
    postgres_server: PostgresServer, postgres_url: str, state_dir: Path
) -> None:
    database = urlsplit(postgres_url).path.lstrip("/")
    with postgres_server.admin(database) as admin:
        admin.execute("CREATE ROLE reader LOGIN PASSWORD 'reader-pw'")
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    url = f"postgresql://reader:reader-pw@127.0.0.1:{postgres_server.port}/{database}"
    with pytest.raises(RegistryError, match=r"permissions docs/teams.md lists") as caught:
        Registry.open(url, state_dir)
    assert "reader-pw" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cret@db.example/morpheus", "postgresql://u:***@db.example/morpheus"),
        ("postgresql://u@db/m?password=s3cret&sslmode=require", "password=***&sslmode=require"),
        ("postgresql://db/m", "postgresql://db/m"),
    ],
)
def test_passwords_are_masked(url: str, shown: str) -> None:
    assert shown in masked_url(url)
    assert "s3cret" not in masked_url(url)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://u:s3cret@db/m", "not a registry URL: write sqlite:///PATH or postgresql://"),
        ("sqlite://relative.db", "absolute path"),
        ("postgresql://u:s3cret@/m", "names no server"),
    ],
)
def test_a_bad_registry_url_says_what_is_accepted(url: str, says: str, state_dir: Path) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        parse_registry_url(url, state_dir)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ConfigError, match=says):
        Registry.open(url, state_dir)


def test_a_bad_url_in_the_environment_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MORPHEUS_REGISTRY__URL", "mysql://u:s3cret@db/m")
    for command in (["list"], ["status", "forest-1"]):
        result = invoke(*command)
        assert result.returncode == 1, result
        assert "registry.url" in result.stderr and "s3cret" not in result.stderr
        assert "Traceback" not in result.stderr


def test_list_reads_a_postgresql_registry_even_without_its_key(
    postgres_url: str, registry_key: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    from morpheus.blueprint import RouteCredentials
    from morpheus.secret_codec import KEY_ENV, KeySource, SecretCodec

    secrets = SecretCodec(KeySource.find(None, {KEY_ENV: registry_key}))
    monkeypatch.delenv(KEY_ENV)  # the forest is listed by a host that lacks the key
    with Registry.open(postgres_url, state_dir, secrets=secrets) as registry:
        forest = registry.create_forest(
            provider="hetzner",
            size="small",
            location=None,
            run_id="run-1",
            credentials=RouteCredentials.generate(),
            now=datetime(2026, 11, 27, tzinfo=UTC),
            planned_nodes=2,
        )
        for node, where in zip(registry.nodes(forest.id), ("nbg1", "fsn1"), strict=True):
            registry.save_node(node.model_copy(update={"location": where}))
    monkeypatch.setenv("MORPHEUS_REGISTRY__URL", postgres_url)
    result = invoke("list", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert '"node_count": 2' in result.stdout and '"location": "fsn1, nbg1"' in result.stdout
    config = Path("config.yaml")
    monkeypatch.delenv("MORPHEUS_REGISTRY__URL")
    config.write_text(f"registry:\n  url: {postgres_url}\n")
    config.chmod(0o600)
    result = invoke("list")
    assert result.returncode == 0, result.stderr
    assert forest.id in result.stdout
    assert not (state_dir / "registry.sqlite3").exists()


def test_config_check_and_registry_info_mask_the_password(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = urlsplit(postgres_url).password or ""
    monkeypatch.setenv("MORPHEUS_REGISTRY__URL", postgres_url)
    checked = invoke("config", "check", "-o", "json")
    assert checked.returncode == 0, checked.stderr
    assert "morpheus:***@127.0.0.1" in checked.stdout and password not in checked.stdout
    info = invoke("registry", "info")
    assert info.returncode == 0, info.stderr
    assert "Backend:  postgresql" in info.stdout and password not in info.stdout
    assert "Location: postgresql://morpheus:***@127.0.0.1" in info.stdout


def test_a_postgresql_url_without_the_driver_says_what_to_install(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as where morpheus[postgres] is not
    monkeypatch.setenv("MORPHEUS_REGISTRY__URL", "postgresql://u:s3cret@127.0.0.1:1/m")
    for command in (["list"], ["registry", "info"]):
        result = invoke(*command)
        assert result.returncode == 1, result
        assert "install morpheus[postgres]" in result.stderr and "s3cret" not in result.stderr
        assert "Traceback" not in result.stderr
