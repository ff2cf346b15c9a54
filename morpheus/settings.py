"""Configuration: a YAML file, environment overrides, and the token variables operators use.

Precedence, highest first: ``MORPHEUS_SECTION__KEY`` environment variables, the first config
file found on the search path, the defaults below.  ``${VAR}`` in a file value is expanded
from the environment.  ``load_settings`` also reports where every value came from, which
``morpheus config check`` shows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from morpheus.errors import ConfigError

ENV_PREFIX = "MORPHEUS_"
TOKEN_VARIABLES = ("HCLOUD_TOKEN", "HETZNER_API_TOKEN")
DEFAULT_NATS_VERSION = "2.15.1"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SshSettings(Section):
    key_name: str = "morpheus"
    key_path: Path | None = None


class InfrastructureSettings(Section):
    provider: str = Field(default="hetzner", description="Provider used by `plant cloud`.")
    ssh: SshSettings = Field(default_factory=SshSettings)
    server_type: str = "cx23"
    image: str = "ubuntu-24.04"
    locations: list[str] = Field(default_factory=lambda: ["fsn1", "nbg1", "hel1"], min_length=1)
    enable_ipv4: bool = False
    admin_sources: list[str] = Field(
        default_factory=list,
        description="CIDRs allowed to reach SSH and monitoring; empty means this machine.",
    )


class IntegrationSettings(Section):
    nats_install: bool = True
    nats_version: str = Field(default=DEFAULT_NATS_VERSION, pattern=r"^\d+\.\d+\.\d+$")
    nats_download_url: str | None = None
    nats_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    jetstream_max_memory: str = Field(default="1G", pattern=r"^\d+[KMGT]?$")
    jetstream_max_file: str = Field(default="10G", pattern=r"^\d+[KMGT]?$")
    nimsforest_install: bool = False
    nimsforest_download_url: str | None = None
    nimsforest_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    registry_url: str | None = None
    callback_url: str | None = None

    @model_validator(mode="after")
    def _mirror_has_a_digest(self) -> IntegrationSettings:
        # Nodes install nats-server only after checking its SHA-256 (docs/cloud-init.md).
        if self.nats_download_url is not None and self.nats_sha256 is None:
            raise ValueError(
                "nats_download_url needs nats_sha256: nodes verify the download before "
                "installing it (sha256sum of the file the URL serves)"
            )
        return self


class GrowthSettings(Section):
    enabled: bool = True
    threshold_cpu: int = Field(default=80, ge=1, le=100)
    threshold_memory: int = Field(default=80, ge=1, le=100)
    max_nodes: int = Field(default=10, ge=1, le=500)
    cooldown_minutes: int = Field(default=10, ge=0)


class ProvisioningSettings(Section):
    readiness_timeout: float = Field(default=300.0, gt=0, description="Seconds.")
    readiness_interval: float = Field(default=2.0, gt=0, description="Seconds.")
    ssh_port: int = Field(default=22, ge=1, le=65535)


class SecretSettings(Section):
    hetzner_api_token: SecretStr | None = None


class Settings(BaseSettings):
    """Every setting of Morpheus; ``providers.<name>`` is validated by that provider."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    infrastructure: InfrastructureSettings = Field(default_factory=InfrastructureSettings)
    integration: IntegrationSettings = Field(default_factory=IntegrationSettings)
    growth: GrowthSettings = Field(default_factory=GrowthSettings)
    provisioning: ProvisioningSettings = Field(default_factory=ProvisioningSettings)
    secrets: SecretSettings = Field(default_factory=SecretSettings)
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)


@dataclass(frozen=True)
class LoadedSettings:
    """Settings plus where they came from."""

    settings: Settings
    path: Path | None
    sources: dict[str, str]


def config_search_path(
    explicit: Path | None, environ: Mapping[str, str], cwd: Path, home: Path
) -> list[Path]:
    """Candidate config files, first found wins."""
    if explicit is not None:
        return [explicit]
    if environ.get("MORPHEUS_CONFIG"):
        return [Path(environ["MORPHEUS_CONFIG"])]
    xdg = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [
        cwd / "config.yaml",
        xdg / "morpheus" / "config.yaml",
        home / ".morpheus" / "config.yaml",
        Path("/etc/morpheus/config.yaml"),
    ]


def find_config_file(explicit: Path | None, environ: Mapping[str, str]) -> Path | None:
    candidates = config_search_path(explicit, environ, Path.cwd(), Path.home())
    if explicit is not None or environ.get("MORPHEUS_CONFIG"):
        if not candidates[0].is_file():
            raise ConfigError(f"config file {candidates[0]} does not exist")
        return candidates[0]
    return next((path for path in candidates if path.is_file()), None)


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(
    value: Any, environ: Mapping[str, str], path: Path, lines: Mapping[str, int], key: str
) -> Any:
    """``value`` with every ``${VAR}`` replaced; an unset variable names file and line."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                where = f"{path}:{lines.get(key, 1)}"
                raise ConfigError(f"{where}: ${{{name}}} is used but not set in the environment")
            return environ[name]

        return _VARIABLE.sub(substitute, value)
    if isinstance(value, dict):
        return {
            k: _expand(item, environ, path, lines, f"{key}.{k}" if key else str(k))
            for k, item in value.items()
        }
    if isinstance(value, list):
        return [_expand(item, environ, path, lines, f"{key}.{i}") for i, item in enumerate(value)]
    return value


def _line_map(node: yaml.Node, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, int]]:
    """Dotted key -> 1-based line, for every mapping key in a composed YAML document."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            yield ".".join(key), key_node.start_mark.line + 1
            yield from _line_map(value_node, key)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield ".".join((*prefix, str(index))), item.start_mark.line + 1
            yield from _line_map(item, (*prefix, str(index)))


def read_config_file(
    path: Path, environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's data with ``${VAR}`` expanded, and the line of every key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        document = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{where}: {problem}; fix the YAML syntax") from exc
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    lines = dict(_line_map(document)) if document is not None else {}
    return _expand(data, environ, path, lines, ""), lines


def validate_token(value: str, variable: str) -> str:
    """A token trimmed of surrounding whitespace, refusing characters no token has."""
    token = value.strip()
    for position, char in enumerate(token, start=1):
        if ord(char) < 32 or ord(char) == 127:
            raise ConfigError(
                f"{variable} contains a control character at position {position}; "
                "copy the token again without it"
            )
        if not char.isascii():
            raise ConfigError(
                f"{variable} contains a non-ASCII character at position {position}; "
                "copy the token again without it"
            )
    if not token:
        raise ConfigError(f"{variable} is empty; set it to your API token or unset it")
    return token


def _leaf_keys(model: BaseModel, prefix: str = "") -> Iterator[str]:
    for name, value in model:
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from _leaf_keys(value, f"{key}.")
        elif isinstance(value, dict) and value:
            for sub in value:
                yield f"{key}.{sub}"
        else:
            yield key


def _describe_validation_error(
    exc: ValidationError, path: Path | None, lines: Mapping[str, int], environ: Mapping[str, str]
) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    env_name = ENV_PREFIX + key.replace(".", "__").upper()
    if env_name in {name.upper() for name in environ}:
        where = f"environment variable {env_name}"
    elif path is not None:
        line = lines.get(key) or _nearest_line(key, lines)
        where = f"{path}:{line}" if line else str(path)
    else:
        where = "configuration"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key; see config.example.yaml for the valid keys"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {key}: {message}{suffix}"


def _nearest_line(key: str, lines: Mapping[str, int]) -> int | None:
    parts = key.split(".")
    while parts:
        parts.pop()
        if ".".join(parts) in lines:
            return lines[".".join(parts)]
    return None


def load_settings(
    explicit: Path | None = None, environ: Mapping[str, str] | None = None
) -> LoadedSettings:
    """Find, read and validate the configuration; raise ``ConfigError`` naming key and line."""
    env = os.environ if environ is None else environ
    path = find_config_file(explicit, env)
    data, lines = read_config_file(path, env) if path is not None else ({}, {})
    token_source: str | None = None
    for variable in TOKEN_VARIABLES:
        if env.get(variable):
            data.setdefault("secrets", {})
            if not isinstance(data["secrets"], dict):
                break
            data["secrets"]["hetzner_api_token"] = validate_token(env[variable], variable)
            token_source = f"env {variable}"
            break
    else:
        file_token = (data.get("secrets") or {}).get("hetzner_api_token")
        if isinstance(file_token, str):
            data["secrets"]["hetzner_api_token"] = validate_token(
                file_token, "secrets.hetzner_api_token"
            )
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, path, lines, env)) from None
    sources: dict[str, str] = {}
    upper_env = {name.upper() for name in env}
    for key in _leaf_keys(settings):
        env_name = ENV_PREFIX + key.replace(".", "__").upper()
        if key == "secrets.hetzner_api_token" and token_source:
            sources[key] = token_source
        elif env_name in upper_env:
            sources[key] = f"env {env_name}"
        elif key in lines:
            sources[key] = f"{path}:{lines[key]}"
        else:
            sources[key] = "default"
    return LoadedSettings(settings=settings, path=path, sources=sources)
