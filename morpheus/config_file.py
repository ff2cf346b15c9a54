"""The config file: where it is, its YAML read with the line of every key, ``${VAR}`` expanded.

Nothing here knows the settings' shape; ``morpheus.settings`` validates what this reads.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from morpheus.config_search import config_search_path
from morpheus.errors import ConfigError
from morpheus.validation import printable

if TYPE_CHECKING:
    import yaml

#: Values a config file may expand to (YAML aliases can multiply a small file without end).
MAX_CONFIG_VALUES = 100_000


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
        return f"{self.path}:{self.lines.get(key) or nearest_line(key, self.lines) or 1}"


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
    import yaml

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
    data, lines = parse_config_file(path)
    return expand_config(data, environ, path, lines), lines


#: Far above any real config; a larger file would take the YAML parser minutes to refuse.
CONFIG_SIZE_LIMIT = 1024 * 1024


def parse_config_file(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's data as written (``${VAR}`` not expanded), and the line of every key."""
    # Imported here: with no config file (defaults and MORPHEUS_* variables) nothing is parsed.
    import yaml

    try:
        if path.stat().st_size > CONFIG_SIZE_LIMIT:
            raise ConfigError(
                f"config file {path} is larger than {CONFIG_SIZE_LIMIT // 1024} KiB: "
                "not a Morpheus config (see config.example.yaml)"
            )
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


def expand_config(
    data: dict[str, Any], environ: Mapping[str, str], path: Path, lines: Mapping[str, int]
) -> dict[str, Any]:
    try:
        expanded: dict[str, Any] = _expand(data, _Expansion(environ, path, lines), "", frozenset())
    except RecursionError:
        raise ConfigError(f"{path}: the YAML is nested too deeply to read") from None
    return expanded


def secret_warnings(path: Path | None, data: Mapping[str, Any]) -> list[str]:
    """A warning when the file itself holds a secret and other users may read it.

    Secrets are the values under ``secrets`` and provider keys named like one (``token``,
    ``password``, ``secret``): a warning must not wait for a plugin to be imported.
    """
    if path is None:
        return []
    held = [key for key, value in _secret_values(data) if _holds_secret(value)]
    mode = _readable_by_others(path) if held else None
    if mode is None:
        return []
    return [
        f"{path} holds {', '.join(held)} and other users can read it (mode {mode}); "
        f"run `chmod 600 {path}`, or put ${{VARIABLE}} references in the file instead"
    ]


_SECRET_NAMES = ("token", "password", "secret")


def _secret_values(data: Mapping[str, Any]) -> Iterator[tuple[str, object]]:
    secrets = data.get("secrets")
    if isinstance(secrets, dict):
        for key, value in secrets.items():
            yield f"secrets.{key}", value
    providers = data.get("providers")
    if isinstance(providers, dict):
        for name, table in providers.items():
            if isinstance(table, dict):
                for key, value in table.items():
                    if any(word in str(key).lower() for word in _SECRET_NAMES):
                        yield f"providers.{name}.{key}", value


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


def nearest_line(key: str, lines: Mapping[str, int]) -> int | None:
    """The line of ``key``'s closest parent that the file has."""
    parts = key.split(".")
    while parts:
        parts.pop()
        if ".".join(parts) in lines:
            return lines[".".join(parts)]
    return None
