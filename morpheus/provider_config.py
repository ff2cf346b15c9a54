"""A provider's own settings: its ``providers.<name>`` table, and the little the core adds.

Each plugin declares a pydantic model of its table (``Provider.settings_model``) and, where
operators expect one, environment variables that fill a key (``Provider.environment``, e.g.
a cloud CLI's token variable).  The core reads the table from the config file and the
``MORPHEUS_PROVIDERS__<NAME>__<KEY>`` variables, adds the declared variables and the keys
of earlier releases (``DEPRECATED_KEYS``), validates the result with the plugin's model and
remembers where every value came from, for ``morpheus config check``.  Besides its table a
plugin receives only a ``ProviderContext``, so renaming a core setting cannot break it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr, ValidationError

from morpheus.errors import ConfigError
from morpheus.validation import describe_validation_error, printable, problem_key

if TYPE_CHECKING:
    from morpheus.provider import Provider
    from morpheus.settings import LoadedSettings, Settings

ENV_PREFIX = "MORPHEUS_"

#: Keys of earlier releases that now belong to the cloud provider's table: old key -> key in
#: ``providers.<infrastructure.provider>``.  Accepted, with a warning, until the next release.
DEPRECATED_KEYS: Mapping[str, str] = {
    "infrastructure.server_type": "server_type",
    "infrastructure.image": "image",
    "infrastructure.locations": "locations",
    "infrastructure.enable_ipv4": "enable_ipv4",
    "infrastructure.ssh.key_name": "ssh_key_name",
    "secrets.hetzner_api_token": "token",
}


@dataclass(frozen=True)
class ProviderContext:
    """What the core tells a provider besides its own table: the same for every plugin."""

    #: The provider's own directory for what it keeps on this machine is below this one.
    state_dir: Path
    #: SSH port of the nodes (their firewall opens it to ``admin_sources``).
    ssh_port: int = 22
    #: Who may reach SSH and NATS monitoring; empty means "this machine" (the plugin's call).
    admin_sources: tuple[str, ...] = ()
    #: The operator's SSH public key file, when configured (else see ``operator_public_keys``).
    ssh_key_path: Path | None = None
    #: Blueprint values every node gets from the configuration (NATS and NimsForest install,
    #: JetStream limits, admin sources, SSH port): for previews such as user-data size checks.
    blueprint_defaults: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, state_dir: Path) -> ProviderContext:
        from morpheus.blueprint import settings_fields

        return cls(
            state_dir=state_dir,
            ssh_port=settings.provisioning.ssh_port,
            admin_sources=tuple(settings.infrastructure.admin_sources),
            ssh_key_path=settings.infrastructure.ssh.key_path,
            blueprint_defaults=settings_fields(settings),
        )


@dataclass(frozen=True)
class ProviderTable:
    """A validated provider table and where each of its leaves came from."""

    values: BaseModel
    #: ``providers.<name>.<key>`` -> ``table``, ``env VAR``, ``deprecated <old key>`` or
    #: ``default``; ``config check`` turns ``table`` into the file's line.
    origins: dict[str, str]


def deprecated_values(settings: Settings) -> dict[str, tuple[str, Any]]:
    """The deprecated keys that are set: table key -> (old key, value)."""
    found: dict[str, tuple[str, Any]] = {}
    for old, new in DEPRECATED_KEYS.items():
        value: Any = settings
        for part in old.split("."):
            value = getattr(value, part, None)
        if value is not None:
            found[new] = (old, value)
    return found


def resolve_table(
    cls: type[Provider],
    settings: Settings,
    environ: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
) -> ProviderTable:
    """``providers.<cls.name>`` validated by the plugin's model, with the origin of each key.

    Precedence, highest first: ``MORPHEUS_PROVIDERS__<NAME>__<KEY>``, the plugin's declared
    variables (first one set), the config file's table, deprecated keys (cloud provider only),
    the model's defaults.  With ``sources`` (``LoadedSettings.sources``) an error names the
    file and line of the refused value.
    """
    env = os.environ if environ is None else environ
    upper_env = {name.upper() for name in env}
    prefix = ("providers", cls.name)
    raw = settings.providers.get(cls.name, {})
    data: dict[str, Any] = dict(raw)
    origins = {key: "table" for key in data}
    fields = cls.settings_model.model_fields
    if _is_cloud_provider(cls, settings):
        for key, (old, value) in deprecated_values(settings).items():
            if key in fields and key not in data:
                data[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
                origins[key] = f"deprecated {old}"
    for key, variables in cls.environment.items():
        morpheus_name = f"{ENV_PREFIX}PROVIDERS__{cls.name}__{key}".upper()
        if morpheus_name in upper_env:
            continue
        for variable in variables:
            if env.get(variable):
                data[key] = cls.environment_value(key, variable, env[variable])
                origins[key] = f"env {variable}"
                break
    try:
        values = cls.settings_model.model_validate(data)
    except ValidationError as exc:
        key = problem_key(exc)
        origin = origins.get(key.split(".")[0], "table")
        if origin.startswith("env "):
            raise ConfigError(
                f"{origin.removeprefix('env ')}: "
                + describe_validation_error(exc, prefix=prefix, drop_value_error=True)
            ) from None
        if origin.startswith("deprecated "):
            raise ConfigError(
                f"{origin.removeprefix('deprecated ')} (now "
                f"{'.'.join(prefix)}.{key}): "
                + describe_validation_error(exc, drop_value_error=True)
            ) from None
        where = (sources or {}).get(".".join((*prefix, key))) or (sources or {}).get(
            ".".join(prefix)
        )
        problem = describe_validation_error(exc, prefix=prefix)
        raise ConfigError(f"{printable(where)}: {problem}" if where else problem) from None
    for key in _leaves(values):
        origins.setdefault(key.split(".")[0], "default")
    return ProviderTable(
        values=values,
        origins={".".join((*prefix, k)): v for k, v in _leaf_origins(values, origins)},
    )


def _is_cloud_provider(cls: type[Provider], settings: Settings) -> bool:
    """Whether ``cls`` is the provider ``plant cloud`` uses (deprecated keys are its keys)."""
    if settings.infrastructure.provider is not None:
        return settings.infrastructure.provider == cls.name
    if not cls.costs_money:
        return False
    from morpheus.settings import cloud_provider_name

    try:
        return cloud_provider_name(settings) == cls.name
    except ConfigError:
        return False


def _leaves(model: BaseModel, prefix: str = "") -> Iterator[str]:
    for name, value in model:
        if isinstance(value, BaseModel):
            yield from _leaves(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def _leaf_origins(values: BaseModel, origins: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    for leaf in _leaves(values):
        yield leaf, origins.get(leaf, origins.get(leaf.split(".")[0], "default"))


def table_rows(table: ProviderTable, loaded: LoadedSettings) -> list[tuple[str, object, str]]:
    """``(key, value, source)`` for every leaf of a provider table; secrets masked."""
    rows = []
    flat = dict(_flat_values(table.values))
    for key, origin in table.origins.items():
        short = key.split(".", 2)[2]
        value = flat.get(short)
        if origin == "table":
            source = loaded.sources.get(key) or loaded.sources.get(key.rsplit(".", 1)[0], "file")
        elif origin.startswith("deprecated "):
            old = origin.removeprefix("deprecated ")
            source = f"{loaded.sources.get(old, 'file')} (deprecated key {old})"
        else:
            source = origin
        rows.append((key, value, printable(source)))
    return rows


def _flat_values(model: BaseModel) -> Iterator[tuple[str, object]]:
    """Every leaf as JSON would show it; secrets masked."""

    def walk(
        part: BaseModel, dumped: Mapping[str, Any], prefix: str
    ) -> Iterator[tuple[str, object]]:
        for name, value in part:
            if isinstance(value, BaseModel):
                yield from walk(value, dumped[name], f"{prefix}{name}.")
            elif isinstance(value, SecretStr):
                yield f"{prefix}{name}", "********"
            else:
                yield f"{prefix}{name}", dumped[name]

    yield from walk(model, model.model_dump(mode="json"), "")
