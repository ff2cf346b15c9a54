"""Configuration: a YAML file, environment overrides, and the token variables operators use.

Precedence, highest first: ``MORPHEUS_SECTION__KEY`` environment variables, the first config
file found on the search path, the defaults below.  ``${VAR}`` in a file value is expanded
from the environment.  ``load_settings`` also reports where every value came from, which
``morpheus config check`` shows.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from morpheus.config_file import (
    expand_config,
    find_config_file,
    nearest_line,
    parse_config_file,
    secret_warnings,
)
from morpheus.errors import ConfigError, MorpheusError
from morpheus.fields import HttpUrl, Size
from morpheus.limits import MAX_FOREST_NODES
from morpheus.settings_environment import environment_values, overlay
from morpheus.validation import (
    UNKNOWN_KEY,
    describe_validation_error,
    printable,
    problem_key,
    validate_token,
)

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

ENV_PREFIX = "MORPHEUS_"
DEFAULT_NATS_VERSION = "2.15.1"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SshSettings(Section):
    key_path: Path | None = Field(
        default=None,
        description="The operator's SSH public key, installed on nodes that take one; default: "
        "the first of ~/.ssh/id_ed25519.pub, ~/.ssh/id_rsa.pub.",
    )
    key_name: str | None = Field(
        default=None,
        description="Deprecated: use providers.<cloud provider>.ssh_key_name.",
    )


class InfrastructureSettings(Section):
    provider: str | None = Field(
        default=None,
        description="Provider used by `plant cloud`; default: the one installed provider whose "
        "machines cost money.",
    )
    local_provider: str = Field(
        default="local", description="Provider used by `plant local`: nodes on this machine."
    )
    ssh: SshSettings = Field(default_factory=SshSettings)
    admin_sources: list[str] = Field(
        default_factory=list,
        description="CIDRs allowed to reach SSH and monitoring; empty means this machine.",
    )
    # Keys of the previous release, now in the cloud provider's table (DEPRECATED_KEYS).
    server_type: str | None = Field(
        default=None, description="Deprecated: use providers.<cloud provider>.server_type."
    )
    image: str | None = Field(
        default=None, description="Deprecated: use providers.<cloud provider>.image."
    )
    locations: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Deprecated: use providers.<cloud provider>.locations.",
    )
    enable_ipv4: bool | None = Field(
        default=None, description="Deprecated: use providers.<cloud provider>.enable_ipv4."
    )


class IntegrationSettings(Section):
    nats_install: bool = Field(default=True, description="Install NATS on cloud nodes.")
    nats_version: str = Field(
        default=DEFAULT_NATS_VERSION,
        pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$",
        description="nats-server release installed on cloud nodes.",
    )
    nats_download_url: HttpUrl | None = Field(
        default=None, description="Mirror URL of the nats-server download (needs nats_sha256)."
    )
    nats_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of nats_download_url."
    )
    jetstream_max_memory: Size = Field(default="1G", description="JetStream memory limit per node.")
    jetstream_max_file: Size = Field(default="10G", description="JetStream file limit per node.")
    nimsforest_install: bool = Field(
        default=False, description="Install and run NimsForest beside NATS on cloud nodes."
    )
    nimsforest_download_url: HttpUrl | None = Field(
        default=None, description="Where nodes download NimsForest (needs nimsforest_sha256)."
    )
    nimsforest_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the NimsForest download; required unless the next is true.",
    )
    nimsforest_insecure_skip_verify: bool = Field(
        default=False,
        description="INSECURE: install the NimsForest download without checking a SHA-256.",
    )
    registry_url: HttpUrl | None = Field(
        default=None, description="Where NimsForest on a node reports itself; none by default."
    )
    callback_url: HttpUrl | None = Field(
        default=None, description="Called by a node once it is up; none by default."
    )

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
    enabled: bool = Field(default=True, description="`grow` adds nodes only when enabled.")
    threshold_cpu: int = Field(
        default=80, ge=1, le=100, description="Grow above this mean NATS CPU use (percent)."
    )
    threshold_memory: int = Field(
        default=80, ge=1, le=100, description="Grow above this mean NATS memory use (percent)."
    )
    max_nodes: int = Field(
        default=10,
        ge=1,
        le=MAX_FOREST_NODES,
        description=f"Never grow a forest past this many nodes (at most {MAX_FOREST_NODES}).",
    )
    cooldown_minutes: int = Field(
        default=10, ge=0, description="Minutes after a growth during which no other one starts."
    )
    raise_stream_replicas: bool = Field(
        default=True,
        description="After growth to 3 or more nodes, raise streams kept on one node (R1) "
        "to stream_replicas, so losing that node loses no data.",
    )
    stream_replicas: int = Field(
        default=3, ge=2, le=5, description="Replicas an R1 stream is raised to (at most the nodes)."
    )


class ProvisioningSettings(Section):
    readiness_timeout: float = Field(
        default=300.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds a new node may take to run NATS and see all its peers.",
    )
    readiness_interval: float = Field(
        default=2.0,
        gt=0,
        allow_inf_nan=False,
        description="Longest pause between readiness polls, in seconds.",
    )
    ssh_port: int = Field(default=22, ge=1, le=65535, description="SSH port of cloud nodes.")


class RegistrySettings(Section):
    url: str | None = Field(
        default=None,
        description="Where forests are recorded: sqlite:///PATH, or postgresql://USER@HOST/DB "
        "for a registry a team shares (password from the URL, PGPASSWORD or ~/.pgpass); "
        "default: registry.sqlite3 in the state directory.",
    )

    key_file: Path | None = Field(
        default=None,
        description="File (mode 0600) of the key that encrypts the registry's secrets; "
        "MORPHEUS_REGISTRY_KEY overrides it; default: $XDG_CONFIG_HOME/morpheus/registry.key "
        "when it exists.",
    )

    @field_validator("url")
    @classmethod
    def _url_is_one_we_know(cls, url: str | None) -> str | None:
        from morpheus.registry_url import parse_registry_url

        if url is not None:
            parse_registry_url(url, Path("."))
        return url


class SecretSettings(Section):
    hetzner_api_token: SecretStr | None = Field(
        default=None, description="Deprecated: use providers.<cloud provider>.token."
    )


class Settings(BaseModel):
    """Every setting of Morpheus; ``providers.<name>`` is validated by that provider.

    ``load_settings`` builds it from the config file with the ``MORPHEUS_SECTION__KEY``
    environment variables on top.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    infrastructure: InfrastructureSettings = Field(default_factory=InfrastructureSettings)
    integration: IntegrationSettings = Field(default_factory=IntegrationSettings)
    growth: GrowthSettings = Field(default_factory=GrowthSettings)
    provisioning: ProvisioningSettings = Field(default_factory=ProvisioningSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    secrets: SecretSettings = Field(default_factory=SecretSettings)
    providers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="One table per provider plugin, validated by that plugin.",
    )


@functools.cache
def _environment_model() -> type[BaseSettings]:
    """``Settings`` as pydantic-settings reads it from ``MORPHEUS_SECTION__KEY`` variables."""
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class EnvironmentSettings(BaseSettings, Settings):
        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
        )

    return EnvironmentSettings


@dataclass(frozen=True)
class LoadedSettings:
    """Settings plus where they came from, and warnings for the operator (the CLI shows them)."""

    settings: Settings
    path: Path | None
    sources: dict[str, str]
    warnings: list[str] = field(default_factory=list)


def _leaf_keys(model: BaseModel, prefix: str = "") -> Iterator[str]:
    for name, value in model:
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from _leaf_keys(value, f"{key}.")
        elif isinstance(value, dict) and value:
            yield from _dict_keys(value, f"{key}.")
        else:
            yield key


def _dict_keys(data: Mapping[str, Any], prefix: str) -> Iterator[str]:
    for name, value in data.items():
        if isinstance(value, dict) and value:
            yield f"{prefix}{name}"
            yield from _dict_keys(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def _describe_validation_error(
    exc: ValidationError, path: Path | None, lines: Mapping[str, int], environ: Mapping[str, str]
) -> str:
    key = problem_key(exc)
    env_name = ENV_PREFIX + key.replace(".", "__").upper()
    if env_name in {name.upper() for name in environ}:
        where = f"environment variable {env_name}"
    elif path is not None:
        line = lines.get(key) or nearest_line(key, lines)
        where = f"{path}:{line}" if line else str(path)
    else:
        where = "configuration"
    return printable(where) + ": " + describe_validation_error(exc, unknown_key=UNKNOWN_KEY)


def load_settings(
    explicit: Path | None = None, environ: Mapping[str, str] | None = None
) -> LoadedSettings:
    """Find, read and validate the configuration; raise ``ConfigError`` naming key and line.

    Provider tables are validated by their plugins when used (``Provider.from_settings``)
    and by ``morpheus config check``; here they are only read.
    """
    env = os.environ if environ is None else environ
    path = find_config_file(explicit, env)
    data: dict[str, Any] = {}
    lines: dict[str, int] = {}
    warnings: list[str] = []
    if path is not None:
        written, lines = parse_config_file(path)
        data = expand_config(written, env, path, lines)
        warnings = secret_warnings(path, written)
    file_secrets = data.get("secrets")
    if isinstance(file_secrets, dict):
        for key, value in file_secrets.items():
            if isinstance(value, str):
                file_secrets[key] = validate_token(value, f"secrets.{key}")
    try:
        from_environment = environment_values(Settings.model_fields, ENV_PREFIX, _environment_model)
        settings = Settings.model_validate(overlay(data, from_environment))
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, path, lines, env)) from None
    sources: dict[str, str] = {}
    upper_env = {name.upper() for name in env}
    for key in _leaf_keys(settings):
        env_name = ENV_PREFIX + key.replace(".", "__").upper()
        if env_name in upper_env:
            sources[key] = f"env {env_name}"
        elif key in lines:
            sources[key] = f"{path}:{lines[key]}"
        else:
            sources[key] = "default"
    token = settings.secrets.hetzner_api_token
    token_env = ENV_PREFIX + "SECRETS__HETZNER_API_TOKEN"
    if token is not None and sources["secrets.hetzner_api_token"] == f"env {token_env}":
        settings.secrets.hetzner_api_token = SecretStr(
            validate_token(token.get_secret_value(), token_env)
        )
    warnings += deprecation_warnings(settings, sources)
    return LoadedSettings(settings=settings, path=path, sources=sources, warnings=warnings)


def deprecation_warnings(settings: Settings, sources: Mapping[str, str]) -> list[str]:
    """One warning per key of the previous release still in use, naming the key to use."""
    from morpheus.provider_config import deprecated_values

    found = deprecated_values(settings)
    if not found:
        return []
    cloud = settings.infrastructure.provider or cloud_provider_name(settings)
    return [
        f"{old} ({sources.get(old, 'configuration')}) is deprecated and will be ignored from "
        f"the next release: set providers.{cloud}.{new} instead"
        for new, (old, _) in found.items()
    ]


def cloud_provider_name(settings: Settings) -> str:
    """``infrastructure.provider``, else the one installed provider whose machines cost money."""
    if settings.infrastructure.provider:
        return settings.infrastructure.provider
    from morpheus.provider import installed_providers, load_provider_class

    paid = []
    for info in installed_providers():
        try:
            if load_provider_class(info.name).costs_money:
                paid.append(info.name)
        except MorpheusError:
            continue
    if len(paid) == 1:
        return paid[0]
    if not paid:
        raise ConfigError(
            "no installed provider creates cloud machines: install one (e.g. morpheus-hetzner) "
            "or set infrastructure.provider"
        )
    raise ConfigError(
        f"several cloud providers are installed ({', '.join(paid)}): set "
        "infrastructure.provider to the one `plant cloud` uses"
    )
