"""The ``morpheus`` command: the Typer app, its top-level options and ``main()``.

Each command lives in its own module (``morpheus.cli.<command>``) that parses, calls one
service and formats the result; commands import services inside their bodies so ``--help``
and completion stay fast.

Exit codes: 0 success; 1 failure (config, provider, registry, readiness); 2 usage error;
3 the registry key is missing, unreadable or wrong; 10/11 ``grow`` grew / was blocked;
130 interrupted.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
import typer.main
from typer._click import Command

from morpheus.cli.options import OutputFormat, complete_forest_id
from morpheus.cli.session import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    State,
    end_terminal_line,
)

__all__ = ["COMMANDS", "OutputFormat", "app", "complete_forest_id", "main"]

#: Every command, in the order ``--help`` lists them: its name and where its function (or,
#: for a command group, its Typer app) lives. A command's module is imported, and its
#: Click command built from the function's signature, only when that command is looked up:
#: ``morpheus grow`` builds ``grow`` alone (building all of them costs about as much as
#: importing Typer), ``--help`` and completion build every one.
COMMANDS: dict[str, str] = {
    "plant": "morpheus.cli.plant:plant",
    "list": "morpheus.cli.list:list_forests",
    "status": "morpheus.cli.status:status",
    "teardown": "morpheus.cli.teardown:teardown",
    "reconcile": "morpheus.cli.reconcile:reconcile",
    "import-registry": "morpheus.cli.import_registry:import_registry",
    "user-data": "morpheus.cli.user_data:user_data",
    "grow": "morpheus.cli.grow:grow",
    "rotate": "morpheus.cli.rotate:rotate",
    "providers": "morpheus.cli.providers:providers",
    "check": "morpheus.cli.check:check",
    "config": "morpheus.cli.config:config_app",
    "registry": "morpheus.cli.registry:registry_app",
}


def _build(name: str) -> Command:
    """The Click command of one entry of ``COMMANDS``, built as ``app.command()`` or
    ``app.add_typer()`` would build it inside the app (same help, markup and exceptions)."""
    module, _, attribute = COMMANDS[name].partition(":")
    target = getattr(importlib.import_module(module), attribute)
    holder = typer.Typer(
        rich_markup_mode=None, pretty_exceptions_enable=False, add_completion=False
    )
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
        group = typer.main.get_command(holder)
        assert isinstance(group, typer.core.TyperGroup)
        built = group.commands[name]
    else:
        holder.command(name=name)(target)
        built = typer.main.get_command(holder)
    return built


class _CommandTable(MutableMapping[str, Command]):
    """The root group's commands: every name of ``COMMANDS`` is listed, a command is built
    the first time it is looked up (so Click's lookups, listings and suggestions all work)."""

    def __init__(self) -> None:
        self._built: dict[str, Command] = {}

    def __getitem__(self, name: str) -> Command:
        if name not in self._built:
            if name not in COMMANDS:
                raise KeyError(name)
            self._built[name] = _build(name)
        return self._built[name]

    def __setitem__(self, name: str, command: Command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        raise TypeError("commands cannot be removed")

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (name for name in self._built if name not in COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS.keys() | self._built.keys())

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or name in self._built


class _Root(typer.core.TyperGroup):
    """The ``morpheus`` group, with the commands of ``COMMANDS`` built on demand."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        table = _CommandTable()
        table.update(self.commands)
        self.commands = table


app = typer.Typer(
    cls=_Root,
    name="morpheus",
    help="Plant and tend forests of clustered NATS + NimsForest nodes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from morpheus import __version__

        typer.echo(f"morpheus {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Config file (default: first of $MORPHEUS_CONFIG, "
            "./config.yaml, $XDG_CONFIG_HOME/morpheus/config.yaml, ~/.morpheus/config.yaml, "
            "/etc/morpheus/config.yaml).",
            dir_okay=False,
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only results and errors.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Plant and tend forests of clustered NATS + NimsForest nodes."""
    ctx.obj = State(config, quiet)
    ctx.call_on_close(ctx.obj.close)


def main() -> None:
    """Entry point: run the app and turn Morpheus errors into one line and an exit code."""
    from typer._click.exceptions import NoArgsIsHelpError
    from typer._click.exceptions import UsageError as ClickUsageError

    from morpheus.cli import streams
    from morpheus.cli.output import error
    from morpheus.errors import MorpheusError

    streams.prepare()
    try:
        code = app(prog_name="morpheus", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else "")
        sys.exit(EXIT_USAGE)
    except ClickUsageError as exc:
        # One line, like every other error (Click's own format takes four).
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        error(f"{exc.format_message()}{hint}")
        sys.exit(EXIT_USAGE)
    except typer.Abort:  # Ctrl-C or end of input at a prompt
        end_terminal_line()
        error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except MorpheusError as exc:
        error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        end_terminal_line()
        error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        streams.silence_stdout()
        sys.exit(streams.EXIT_BROKEN_PIPE)
    except OSError as exc:
        if not streams.is_output_error(exc):
            raise
        streams.silence_stdout()
        with contextlib.suppress(OSError):
            error(f"cannot write the output: {exc.strerror}")
        sys.exit(EXIT_FAILURE)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
