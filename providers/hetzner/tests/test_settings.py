"""providers.hetzner: the plugin's own settings, its token variables and the older keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from morpheus_hetzner.provider import HetznerProvider
from morpheus_hetzner.settings import HetznerSettings

from morpheus.errors import ConfigError
from morpheus.provider_config import ProviderTable, resolve_table
from morpheus.settings import load_settings


def table(config: Path, environ: dict[str, str]) -> ProviderTable:
    return resolve_table(HetznerProvider, load_settings(config, environ).settings, environ)


def token_of(found: ProviderTable) -> str:
    assert isinstance(found.values, HetznerSettings) and found.values.token is not None
    return found.values.token.get_secret_value()


def test_token_variables_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("providers:\n  hetzner:\n    token: from-file\n")
    found = table(config, {})
    assert token_of(found) == "from-file"
    assert found.origins["providers.hetzner.token"] == "table"
    environ = {"HETZNER_API_TOKEN": "  from-hetzner-var\n"}
    assert token_of(table(config, environ)) == "from-hetzner-var"
    environ["HCLOUD_TOKEN"] = "from-hcloud-var"
    found = table(config, environ)
    assert token_of(found) == "from-hcloud-var"
    assert found.origins["providers.hetzner.token"] == "env HCLOUD_TOKEN"
    # pydantic-settings reads MORPHEUS_* from the process environment itself.
    monkeypatch.setenv("MORPHEUS_PROVIDERS__HETZNER__TOKEN", "from-morpheus-var")
    environ["MORPHEUS_PROVIDERS__HETZNER__TOKEN"] = "from-morpheus-var"
    assert token_of(table(config, environ)) == "from-morpheus-var"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("abc\x07def", "control character at position 4"),
        ("abcdéf", "non-ASCII character at position 5"),
    ],
)
def test_bad_token_characters_are_named(tmp_path: Path, value: str, problem: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("growth: {}\n")
    with pytest.raises(ConfigError, match=f"HCLOUD_TOKEN contains a {problem}") as caught:
        table(config, {"HCLOUD_TOKEN": value})
    assert value not in str(caught.value)


def test_the_older_keys_still_work_and_say_what_replaces_them(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "infrastructure:\n  server_type: cx33\n  locations: [hel1]\n  ssh:\n    key_name: me\n"
        "secrets:\n  hetzner_api_token: old-token\n"
    )
    config.chmod(0o600)
    loaded = load_settings(config, {})
    assert sorted(loaded.warnings) == [
        f"infrastructure.locations ({config}:3) is deprecated and will be ignored from the next "
        "release: set providers.hetzner.locations instead",
        f"infrastructure.server_type ({config}:2) is deprecated and will be ignored from the "
        "next release: set providers.hetzner.server_type instead",
        f"infrastructure.ssh.key_name ({config}:5) is deprecated and will be ignored from the "
        "next release: set providers.hetzner.ssh_key_name instead",
        f"secrets.hetzner_api_token ({config}:7) is deprecated and will be ignored from the "
        "next release: set providers.hetzner.token instead",
    ]
    found = resolve_table(HetznerProvider, loaded.settings, {})
    values = found.values
    assert isinstance(values, HetznerSettings)
    assert (values.server_type, values.locations, values.ssh_key_name) == ("cx33", ["hel1"], "me")
    assert token_of(found) == "old-token"
    assert found.origins["providers.hetzner.server_type"] == "deprecated infrastructure.server_type"


def test_the_table_wins_over_an_older_key(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "infrastructure:\n  server_type: cx33\nproviders:\n  hetzner:\n    server_type: cx43\n"
    )
    values = table(config, {}).values
    assert isinstance(values, HetznerSettings) and values.server_type == "cx43"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("providers:\n  hetzner:\n    severtype: cx23\n", "providers.hetzner.severtype: Extra"),
        ("providers:\n  hetzner:\n    create_concurrency: -1\n", "create_concurrency: Input"),
        ("providers:\n  hetzner:\n    locations: []\n", "locations: List should have at least"),
    ],
)
def test_a_bad_table_is_refused_by_the_plugin(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        table(config, {})
