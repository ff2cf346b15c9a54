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
import sys
from pathlib import Path
from typing import Annotated

import typer

from morpheus.cli import (
    check,
    grow,
    import_registry,
    plant,
    providers,
    reconcile,
    rotate,
    status,
    teardown,
    user_data,
)
from morpheus.cli import list as list_command
from morpheus.cli.config import config_app
from morpheus.cli.options import OutputFormat, complete_forest_id
from morpheus.cli.registry import registry_app
from morpheus.cli.session import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    State,
    end_terminal_line,
)

__all__ = ["OutputFormat", "app", "complete_forest_id", "main"]

app = typer.Typer(
    name="morpheus",
    help="Plant and tend forests of clustered NATS + NimsForest nodes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(config_app, name="config")
app.add_typer(registry_app, name="registry")


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


app.command()(plant.plant)
app.command(name="list")(list_command.list_forests)
app.command()(status.status)
app.command()(teardown.teardown)
app.command()(reconcile.reconcile)
app.command(name="import-registry")(import_registry.import_registry)
app.command(name="user-data")(user_data.user_data)
app.command()(grow.grow)
app.command()(rotate.rotate)
app.command()(providers.providers)
app.command()(check.check)


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
