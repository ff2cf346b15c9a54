"""Configuration: a YAML file, environment overrides, and the token variables operators use.

Precedence, highest first: ``MORPHEUS_SECTION__KEY`` environment variables, the first config
file found on the search path, the defaults below.  ``${VAR}`` in a file value is expanded
from the environment.  ``load_settings`` also reports where every value came from, which
``morpheus config check`` shows.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from morpheus.blueprint import HttpUrl
from morpheus.errors import ConfigError
from morpheus.limits import MAX_FOREST_NODES
from morpheus.validation import UNKNOWN_KEY, describe_validation_error, printable, problem_key

ENV_PREFIX = "MORPHEUS_"
TOKEN_VARIABLES = ("HCLOUD_TOKEN", "HETZNER_API_TOKEN")
DEFAULT_NATS_VERSION = "2.15.1"
#: Values a config file may expand to (YAML aliases can multiply a small file without end).
MAX_CONFIG_VALUES = 100_000


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SshSettings(Section):
    key_name: str = Field(
        default="morpheus",
        description="Name of the SSH key in the cloud account; uploaded from key_path if missing.",
    )
    key_path: Path | None = Field(
        default=None,
        description="Public key to upload; default: the first of ~/.ssh/id_ed25519.pub, "
        "~/.ssh/id_rsa.pub.",
    )


class InfrastructureSettings(Section):
    provider: str = Field(default="hetzner", description="Provider used by `plant cloud`.")
    ssh: SshSettings = Field(default_factory=SshSettings)
    server_type: str = Field(default="cx23", description="Machine type of cloud nodes.")
    image: str = Field(default="ubuntu-24.04", description="OS image of cloud nodes.")
    locations: list[str] = Field(
        default_factory=lambda: ["fsn1", "nbg1", "hel1"],
        min_length=1,
        description="Locations in order of preference; a node moves on when one is full.",
    )
    enable_ipv4: bool = Field(
        default=False, description="Give nodes IPv4 too (it costs money); else IPv6 only."
    )
    admin_sources: list[str] = Field(
        default_factory=list,
        description="CIDRs allowed to reach SSH and monitoring; empty means this machine.",
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
    jetstream_max_memory: str = Field(
        default="1G", pattern=r"^[0-9]+[KMGT]?$", description="JetStream memory limit per node."
    )
    jetstream_max_file: str = Field(
        default="10G", pattern=r"^[0-9]+[KMGT]?$", description="JetStream file limit per node."
    )
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


class SecretSettings(Section):
    hetzner_api_token: SecretStr | None = Field(
        default=None,
        description="Hetzner Cloud API token; HCLOUD_TOKEN, then HETZNER_API_TOKEN, override it.",
    )


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
    providers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="One table per provider plugin, validated by that plugin.",
    )

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
    """Settings plus where they came from, and warnings for the operator (the CLI shows them)."""

    settings: Settings
    path: Path | None
    sources: dict[str, str]
    warnings: list[str] = field(default_factory=list)


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
        if candidates[0].exists() and not candidates[0].is_file():
            raise ConfigError(f"config file {candidates[0]} is not a file")
        if not candidates[0].is_file():
            raise ConfigError(f"config file {candidates[0]} does not exist")
        return candidates[0]
    return next((path for path in candidates if path.is_file()), None)


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Expansion:
    """What ``_expand`` needs besides the value: where it is, and how much is left to expand."""

    def __init__(self, environ: Mapping[str, str], path: Path, lines: Mapping[str, int]) -> None:
        self.environ = environ
        self.path = path
        self.lines = lines
        self.budget = MAX_CONFIG_VALUES

    def where(self, key: str) -> str:
        return f"{self.path}:{self.lines.get(key) or _nearest_line(key, self.lines) or 1}"


def _expand(value: Any, expansion: _Expansion, key: str, parents: frozenset[int]) -> Any:
    """``value`` with every ``${VAR}`` replaced; an unset variable names file and line.

    ``parents`` are the containers being expanded above this one: YAML lets an anchor hold
    an alias to itself, which would otherwise recurse without end.
    """
    expansion.budget -= 1
    if expansion.budget < 0:
        raise ConfigError(
            f"{expansion.path}: the configuration expands to more than {MAX_CONFIG_VALUES} "
            "values; are YAML aliases (*name) repeating a large section?"
        )
    environ = expansion.environ
    if isinstance(value, dict | list):
        if id(value) in parents:
            raise ConfigError(
                f"{expansion.where(key)}: {printable(key)} contains itself through a YAML alias; "
                "an anchor (&name) cannot be used inside its own value"
            )
        parents = parents | {id(value)}
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                line = expansion.lines.get(key, 1)
                raise ConfigError(
                    f"{expansion.path}:{line}: ${{{name}}} is used but not set in the environment"
                )
            return environ[name]

        return _VARIABLE.sub(substitute, value)
    if isinstance(value, dict):
        return {
            k: _expand(item, expansion, f"{key}.{k}" if key else str(k), parents)
            for k, item in value.items()
        }
    if isinstance(value, list):
        return [_expand(item, expansion, f"{key}.{i}", parents) for i, item in enumerate(value)]
    return value


def _line_map(
    node: yaml.Node, prefix: tuple[str, ...] = (), seen: set[int] | None = None
) -> Iterator[tuple[str, int]]:
    """Dotted key -> 1-based line, for every mapping key in a composed YAML document.

    A node reached again through an alias is not walked again (``seen``): that keeps the
    walk linear in the file's size and ends it for an anchor that contains itself.
    """
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            yield ".".join(key), key_node.start_mark.line + 1
            yield from _line_map(value_node, key, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield ".".join((*prefix, str(index))), item.start_mark.line + 1
            yield from _line_map(item, (*prefix, str(index)), seen)


def read_config_file(
    path: Path, environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's data with ``${VAR}`` expanded, and the line of every key."""
    data, lines = _parse_config_file(path)
    return _expand_config(data, environ, path, lines), lines


def _parse_config_file(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's data as written (``${VAR}`` not expanded), and the line of every key."""
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
        problem = printable(
            " ".join(str(getattr(exc, "problem", None) or "not valid YAML").split())
        )
        raise ConfigError(f"{where}: {problem}; fix the YAML syntax") from exc
    except RecursionError:
        raise ConfigError(f"{path}: the YAML is nested too deeply to read") from None
    except ValueError as exc:
        # PyYAML turns scalars into numbers with int(), which refuses over 4300 digits.
        raise ConfigError(f"{path}: a value cannot be read: {exc}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    assert isinstance(document, yaml.MappingNode)  # the same text composed as a mapping
    for key_node, _ in document.value:
        if key_node.tag not in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"):
            raise ConfigError(
                f"{path}:{key_node.start_mark.line + 1}: {key_node.value!r} is not a section "
                "name; see config.example.yaml for the valid keys"
            )
    return data, dict(_line_map(document))


def _expand_config(
    data: dict[str, Any], environ: Mapping[str, str], path: Path, lines: Mapping[str, int]
) -> dict[str, Any]:
    try:
        expanded: dict[str, Any] = _expand(data, _Expansion(environ, path, lines), "", frozenset())
    except RecursionError:
        raise ConfigError(f"{path}: the YAML is nested too deeply to read") from None
    return expanded


def _token_warnings(path: Path | None, data: Mapping[str, Any]) -> list[str]:
    """A warning when the file itself holds the token and other users may read it."""
    secrets = data.get("secrets")
    if path is None or not isinstance(secrets, dict):
        return []
    mode = _readable_by_others(path)
    if mode is None or not _holds_secret(secrets.get("hetzner_api_token")):
        return []
    return [
        f"{path} holds secrets.hetzner_api_token and other users can read it (mode {mode}); "
        f"run `chmod 600 {path}`, or put ${{HCLOUD_TOKEN}} in the file instead of the token"
    ]


def _holds_secret(value: object) -> bool:
    """Whether a config value is a secret itself rather than only ``${VAR}`` references."""
    return isinstance(value, str) and bool(_VARIABLE.sub("", value).strip())


def _readable_by_others(path: Path) -> str | None:
    """The file's mode as ``0644`` when group or others may read it, else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"{stat.S_IMODE(mode):04o}"
    return None


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
    key = problem_key(exc)
    env_name = ENV_PREFIX + key.replace(".", "__").upper()
    if env_name in {name.upper() for name in environ}:
        where = f"environment variable {env_name}"
    elif path is not None:
        line = lines.get(key) or _nearest_line(key, lines)
        where = f"{path}:{line}" if line else str(path)
    else:
        where = "configuration"
    return printable(where) + ": " + describe_validation_error(exc, unknown_key=UNKNOWN_KEY)


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
    data: dict[str, Any] = {}
    lines: dict[str, int] = {}
    warnings: list[str] = []
    if path is not None:
        written, lines = _parse_config_file(path)
        data = _expand_config(written, env, path, lines)
        warnings = _token_warnings(path, written)
    file_secrets = data.get("secrets")
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
        file_token = (
            file_secrets.get("hetzner_api_token") if isinstance(file_secrets, dict) else None
        )
        if isinstance(file_token, str):
            data["secrets"]["hetzner_api_token"] = validate_token(
                file_token, "secrets.hetzner_api_token"
            )
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, path, lines, env)) from None
    except SettingsError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(
            f"a MORPHEUS_* environment variable cannot be read ({reason}); one for a list or "
            "a section must hold JSON, e.g. MORPHEUS_INFRASTRUCTURE__LOCATIONS='[\"fsn1\"]'"
        ) from None
    sources: dict[str, str] = {}
    upper_env = {name.upper() for name in env}
    for key in _leaf_keys(settings):
        env_name = ENV_PREFIX + key.replace(".", "__").upper()
        # MORPHEUS_SECTION__KEY outranks everything, the token variables included.
        if env_name in upper_env:
            sources[key] = f"env {env_name}"
        elif key == "secrets.hetzner_api_token" and token_source:
            sources[key] = token_source
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
    return LoadedSettings(settings=settings, path=path, sources=sources, warnings=warnings)
