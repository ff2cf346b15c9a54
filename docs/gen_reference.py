"""Generate the configuration and CLI reference pages from the code, so they cannot drift.

The MkDocs hook (``docs/hooks.py``) calls ``pages()`` on every build; run this file to write
the pages to disk instead::

    uv run python docs/gen_reference.py site-reference/

The configuration reference walks the pydantic ``Settings`` model and the settings model of
every provider shipped in this repository (loaded through the ``morpheus.providers`` entry
points, as the CLI loads them); the CLI reference walks the click command tree that Typer
builds from the app.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

#: Providers documented in the reference: the ones this repository ships.
SHIPPED_PROVIDERS = ("local", "hetzner", "libvirt")

_SECTION_INTROS = {
    "infrastructure": "What cloud nodes are made of and where they run.",
    "integration": "What runs on the nodes: NATS, JetStream limits, NimsForest.",
    "growth": "The policy of `morpheus grow` (see [Growth](../growth.md)).",
    "provisioning": "How long Morpheus waits for new nodes.",
    "secrets": "Tokens. Never printed: `config check` masks them.",
}


# rendering helpers ----------------------------------------------------------------------


def _prose(text: str) -> str:
    """Help text as Markdown: one line, ``<`` and ``&`` escaped outside code spans."""
    parts = " ".join(text.split()).split("`")
    for index in range(0, len(parts), 2):  # even parts are outside backticks
        parts[index] = parts[index].replace("&", "&amp;").replace("<", "&lt;")
        parts[index] = parts[index].replace(">", "&gt;")
    return "`".join(parts)


def _cell(text: str) -> str:
    """Text for a Markdown table cell: as ``_prose``, with pipes escaped."""
    return _prose(text).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else f"`` {text} ``"


def _table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


# configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingRow:
    """One documented key."""

    key: str
    type: str
    default: str
    description: str
    env: str


def type_name(annotation: Any) -> str:
    """A reader's name for a field type: ``list of string``, ``integer or null``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return type_name(args[0])
    if origin in (Union, types.UnionType):
        named = [type_name(arg) for arg in args if arg is not type(None)]
        nullable = " or null" if type(None) in args else ""
        return " or ".join(named) + nullable
    if origin is Literal:
        return "one of " + ", ".join(str(arg) for arg in args)
    if origin is list or origin is tuple:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    simple: dict[Any, str] = {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        Path: "path",
        SecretStr: "secret string",
        Any: "any",
    }
    if annotation in simple:
        return simple[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.__name__
    return str(annotation)


def _constraints(info: FieldInfo) -> list[str]:
    found = []
    for item in info.metadata:
        for attribute, words in (
            ("ge", "at least {}"),
            ("gt", "more than {}"),
            ("le", "at most {}"),
            ("lt", "less than {}"),
            ("min_length", "at least {} entries"),
            ("max_length", "at most {} entries"),
        ):
            value = getattr(item, attribute, None)
            if value is not None:
                found.append(words.format(value))
        pattern = getattr(item, "pattern", None)
        if pattern is not None:
            found.append(f"matches {_code(pattern)}")
    return found


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value = to_jsonable_python(info.get_default(call_default_factory=True))
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return _code(text.removesuffix("...").strip())


def setting_rows(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[SettingRow]:
    """Every leaf key of ``model`` under ``prefix``; nested models are walked into."""
    for name, info in model.model_fields.items():
        key = (*prefix, name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from setting_rows(annotation, key)
            continue
        description = info.description or ""
        rules = _constraints(info)
        if rules:
            description = f"{description} ({'; '.join(rules)})".strip()
        yield SettingRow(
            key=".".join(key),
            type=type_name(annotation),
            default=_default(info),
            description=description,
            env="MORPHEUS_" + "__".join(key).upper(),
        )


def _nested_models(model: type[BaseModel]) -> Iterator[tuple[str, type[BaseModel]]]:
    """Models inside mappings or lists of ``model`` (libvirt profiles), with their key."""
    for name, info in model.model_fields.items():
        origin = get_origin(info.annotation)
        for arg in _walk_args(info.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg is not model:
                yield (f"{name}.<name>" if origin is dict else f"{name}.<n>"), arg


def _walk_args(annotation: Any) -> Iterator[Any]:
    for arg in get_args(annotation):
        yield arg
        yield from _walk_args(arg)


def _settings_table(rows: list[SettingRow]) -> list[str]:
    return _table(
        ("key", "type", "default", "environment variable", "description"),
        [
            (
                _code(r.key),
                _cell(r.type),
                r.default,
                ", ".join(_code(name) for name in r.env.split(", ")),
                _cell(r.description),
            )
            for r in rows
        ],
    )


def provider_settings_models() -> dict[str, type[BaseModel]]:
    """The settings model of each shipped provider that is installed here."""
    return {name: cls.settings_model for name, cls in provider_classes().items()}


def provider_classes() -> dict[str, Any]:
    """Each shipped provider that is installed here."""
    from morpheus.errors import MorpheusError
    from morpheus.provider import load_provider_class

    models = {}
    for name in SHIPPED_PROVIDERS:
        try:
            models[name] = load_provider_class(name)
        except MorpheusError:
            continue  # not installed in this environment: documented where it is
    return models


def configuration_reference() -> str:
    """``reference/configuration.md``: every key, its type, default, variable and meaning."""
    from morpheus.settings import Settings

    lines = [
        "# Configuration reference",
        "",
        "Generated from the settings models on every docs build; "
        "[Configuration](../configuration.md) explains where the file is read from.",
        "",
        "Every key can be set in `config.yaml` (sections below are its top-level keys) or "
        "in the environment as `MORPHEUS_<SECTION>__<KEY>`, which wins over the file. "
        "Lists and mappings in the environment are JSON, e.g. "
        """`MORPHEUS_INFRASTRUCTURE__ADMIN_SOURCES='["2001:db8::/48"]'`. """
        "An unknown key is an error. Keys described as deprecated still work until the next "
        "release, with a warning naming the key that replaces them.",
        "",
    ]
    for name, info in Settings.model_fields.items():
        annotation = info.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            continue
        lines += [f"## `{name}`", ""]
        intro = _SECTION_INTROS.get(name) or (annotation.__doc__ or "").strip()
        if intro:
            lines += [intro, ""]
        lines += _settings_table(list(setting_rows(annotation, (name,))))
    lines += [
        "## `providers`",
        "",
        _cell(Settings.model_fields["providers"].description or ""),
        "Each provider validates its own table `providers.<name>`; unknown keys are errors.",
        "",
    ]
    for provider, cls in provider_classes().items():
        model = cls.settings_model
        lines += [f"### `providers.{provider}`", ""]
        doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        if doc:
            lines += [doc, ""]
        rows = [
            replace(row, env=", ".join([row.env, *cls.environment.get(row.key.split(".")[2], ())]))
            if row.key.split(".")[2] in cls.environment
            else row
            for row in setting_rows(model, ("providers", provider))
        ]
        lines += _settings_table(rows)
        for where, nested in _nested_models(model):
            lines += [f"#### `providers.{provider}.{where}`", ""]
            nested_doc = (nested.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            if nested_doc:
                lines += [nested_doc, ""]
            rows = list(setting_rows(nested, ()))
            lines += _table(
                ("key", "type", "default", "description"),
                [(_code(r.key), _cell(r.type), r.default, _cell(r.description)) for r in rows],
            )
    return "\n".join(lines)


# command line -----------------------------------------------------------------------------


def _commands(command: Any, ctx: Any, path: list[str]) -> Iterator[tuple[list[str], Any, Any]]:
    yield path, command, ctx
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sub_ctx = sub.make_context(name, [], parent=ctx, resilient_parsing=True)
            yield from _commands(sub, sub_ctx, [*path, name])


def cli_reference() -> str:
    """``reference/cli.md``: every command's help, usage, arguments and options."""
    import typer.main  # noqa: TID251 - the reference is read off the Typer app itself

    from morpheus.cli.app import app

    root = typer.main.get_command(app)
    root_ctx = root.make_context("morpheus", [], resilient_parsing=True)
    lines = [
        "# CLI reference",
        "",
        "Generated from the command-line app on every docs build; `morpheus COMMAND --help` "
        "prints the same. [Command line](../cli.md) has the exit codes and JSON shapes.",
        "",
    ]
    for path, command, ctx in _commands(root, root_ctx, ["morpheus"]):
        title = " ".join(path)
        lines += [f"## `{title}`" if len(path) > 1 else "## Global options", ""]
        help_text = (command.help or "").strip()
        for paragraph in re.split(r"\n\s*\n", help_text) if help_text else []:
            lines += [_prose(paragraph), ""]
        usage = command.get_usage(ctx).removeprefix("Usage: ").strip()
        lines += ["```text", usage, "```", ""]
        rows = []
        for param in command.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or param.name == "help":
                continue
            names, text = record
            rows.append((_code(names), _cell(text)))
        if rows:
            lines += _table(("argument or option", "meaning"), rows)
    return "\n".join(lines)


def pages() -> dict[str, str]:
    """Generated pages by their path under ``docs/``."""
    return {
        "reference/configuration.md": configuration_reference(),
        "reference/cli.md": cli_reference(),
    }


def main(argv: list[str]) -> int:
    target = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent
    for relative, text in pages().items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
