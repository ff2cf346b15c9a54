"""Configuration: search order, environment overrides, tokens, and errors that name key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from morpheus.config_file import config_search_path
from morpheus.errors import ConfigError
from morpheus.settings import load_settings
from morpheus.testing.cli import invoke


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_no_file_at_all_is_fine() -> None:
    loaded = load_settings()
    assert loaded.path is None
    assert loaded.settings.growth.threshold_cpu == 80
    assert set(loaded.sources.values()) == {"default"}


def test_search_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    order = config_search_path(None, {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}, tmp_path, home)
    assert order == [
        tmp_path / "config.yaml",
        tmp_path / "xdg/morpheus/config.yaml",
        home / ".morpheus/config.yaml",
        Path("/etc/morpheus/config.yaml"),
    ]
    assert config_search_path(None, {"MORPHEUS_CONFIG": "/x.yaml"}, tmp_path, home) == [
        Path("/x.yaml")
    ]
    assert config_search_path(Path("/y.yaml"), {"MORPHEUS_CONFIG": "/x.yaml"}, tmp_path, home) == [
        Path("/y.yaml")
    ]


def test_first_found_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "home/.morpheus/config.yaml", "growth:\n  max_nodes: 4\n")
    assert load_settings().settings.growth.max_nodes == 4
    xdg = write(tmp_path / "home/.config/morpheus/config.yaml", "growth:\n  max_nodes: 5\n")
    assert load_settings().path == xdg
    write(tmp_path / "config.yaml", "growth:\n  max_nodes: 6\n")
    assert load_settings().settings.growth.max_nodes == 6
    explicit = write(tmp_path / "other.yaml", "growth:\n  max_nodes: 7\n")
    monkeypatch.setenv("MORPHEUS_CONFIG", str(explicit))
    assert load_settings().settings.growth.max_nodes == 7


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_environment_overrides_file_and_sources_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "config.yaml", "growth:\n  max_nodes: 4\n  threshold_cpu: 70\n")
    monkeypatch.setenv("MORPHEUS_GROWTH__MAX_NODES", "9")
    loaded = load_settings()
    assert loaded.settings.growth.max_nodes == 9
    assert loaded.settings.growth.threshold_cpu == 70
    assert loaded.sources["growth.max_nodes"] == "env MORPHEUS_GROWTH__MAX_NODES"
    assert loaded.sources["growth.threshold_cpu"] == f"{path}:3"
    assert loaded.sources["growth.cooldown_minutes"] == "default"


def test_environment_names_any_case_and_lists_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "config.yaml", "infrastructure:\n  local_provider: local\n")
    monkeypatch.setenv("morpheus_infrastructure__admin_sources", '["2001:db8::/64"]')
    monkeypatch.setenv("MORPHEUS_REGISTRY_KEY", "not a setting: read by the registry")
    loaded = load_settings()
    assert loaded.settings.infrastructure.admin_sources == ["2001:db8::/64"]
    assert loaded.settings.infrastructure.local_provider == "local"
    assert loaded.sources["infrastructure.admin_sources"] == (
        "env MORPHEUS_INFRASTRUCTURE__ADMIN_SOURCES"
    )


def test_variables_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "config.yaml", "integration:\n  registry_url: https://${REG_HOST}/nodes\n")
    monkeypatch.setenv("REG_HOST", "registry.example")
    assert load_settings().settings.integration.registry_url == "https://registry.example/nodes"
    monkeypatch.delenv("REG_HOST")
    with pytest.raises(ConfigError, match=r"config.yaml:2: \$\{REG_HOST\} is used but not set"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "growth:\n  threshold_cpu: lots\n",
            "config.yaml:2: growth.threshold_cpu: Input should be a valid integer",
        ),
        (
            "growth:\n  enabled: true\n  colour: green\n",
            "config.yaml:3: growth.colour: unknown key",
        ),
        (
            "growth:\n  threshold_cpu: 101\n",
            "config.yaml:2: growth.threshold_cpu: Input should be less than or equal to 100",
        ),
        ("growth: [\n", "config.yaml:2:"),
        (
            "infrastructure:\n  ssh:\n    key_name: [a, b]\n",
            "config.yaml:3: infrastructure.ssh.key_name",
        ),
        ("- just\n- a list\n", "the top level must be a mapping"),
    ],
)
def test_invalid_config_names_key_and_line(text: str, expected: str, tmp_path: Path) -> None:
    write(tmp_path / "config.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORPHEUS_GROWTH__MAX_NODES", "many")
    with pytest.raises(ConfigError, match="environment variable MORPHEUS_GROWTH__MAX_NODES"):
        load_settings()


def test_provider_table_is_validated_by_the_provider(tmp_path: Path) -> None:
    write(tmp_path / "config.yaml", "providers:\n  local:\n    hots: 127.0.0.2\n")
    result = invoke("plant", "local", "small")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: providers.local.hots: Extra inputs are not permitted"


def test_config_check_shows_sources_and_masks_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "config.yaml", "growth:\n  max_nodes: 4\n")
    monkeypatch.setenv("HCLOUD_TOKEN", "super-secret-token-value")
    result = invoke("config", "check")
    assert result.returncode == 0, result.stderr
    assert "super-secret-token-value" not in result.stdout + result.stderr
    assert "env HCLOUD_TOKEN" in result.stdout
    line = next(line for line in result.stdout.splitlines() if "growth.max_nodes" in line)
    assert "4" in line and "config.yaml:2" in line


@pytest.mark.parametrize(
    "text", ["growth:\n  threshold_cpu: lots\n", "growth: {colour: 1}\n", "a: [\n"]
)
def test_config_check_fails_in_one_line(tmp_path: Path, text: str) -> None:
    write(tmp_path / "config.yaml", text)
    result = invoke("config", "check")
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
