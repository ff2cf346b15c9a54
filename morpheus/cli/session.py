"""One run of the command: its top-level options, the services' context, exits and questions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from morpheus.services import Context

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: ``grow``: nodes were added / growth was needed but blocked (see ``GrowthReason``).
EXIT_GREW = 10
EXIT_BLOCKED = 11
EXIT_INTERRUPTED = 130


class State:
    """Options of the top-level callback, shared with the commands."""

    def __init__(self, config: Path | None, quiet: bool) -> None:
        self.config = config
        self.quiet = quiet
        self._context: Context | None = None

    def context(self) -> Context:
        """Settings, state directory and registry, built once, on first use."""
        if self._context is None:
            from morpheus.paths import state_dir
            from morpheus.services import Context
            from morpheus.settings import load_settings

            loaded = load_settings(self.config)
            show_warnings(loaded.warnings)
            self._context = Context.open(loaded.settings, state_dir(), notice=self.notice)
            from morpheus.cli import resume_collector

            resume_collector()
        return self._context

    def close(self) -> None:
        """Close the registry the command opened (a database connection, a file)."""
        if self._context is not None:
            self._context.registry.close()

    def notice(self, words: str) -> None:
        """Something the operator should know while a command works (not with --quiet)."""
        if not self.quiet:
            from morpheus.safe_text import printable

            typer.echo(printable(words), err=True)


def registry_url(config: Path | None) -> str | None:
    """``registry.url``, loading the settings only when a config file may set it (``list``
    and completion stay fast on the default registry)."""
    from morpheus.registry_url import configured_url

    found = configured_url(config)
    if found is True:
        from morpheus.settings import load_settings

        loaded = load_settings(config)
        show_warnings(loaded.warnings)
        return loaded.settings.registry.url
    return found or None


def state_of(ctx: typer.Context) -> State:
    state = ctx.find_root().obj
    assert isinstance(state, State)
    return state


def show_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)


def ask(question: str, script_hint: str) -> bool:
    """Yes or no at a terminal (no by default); refuse (exit 2) when no one can answer."""
    if not sys.stdin.isatty():
        fail(f"{script_hint} to confirm from a script", EXIT_USAGE)
    return yes_or_no(question, default=False)


def yes_or_no(question: str, *, default: bool) -> bool:
    """Ask at the terminal until the answer is y, yes, n, no or empty (the default).

    Click's own confirm says ``Error: invalid input``; every error here is ``error:``.
    Ctrl-C raises ``typer.Abort`` (``main`` ends the prompt's line and exits 130).
    """
    choices = "[Y/n]" if default else "[y/N]"
    while True:
        reply = typer.prompt(f"{question} {choices}", default="", show_default=False)
        match reply.strip().lower():
            case "":
                return default
            case "y" | "yes":
                return True
            case "n" | "no":
                return False
        typer.echo("error: answer y or n", err=True)


def end_terminal_line() -> None:
    """After Ctrl-C the terminal's cursor sits after ``^C`` (often at a prompt): start the
    message that follows on a line of its own."""
    for stream in (sys.stderr, sys.stdout):
        if stream.isatty():
            stream.write("\n")
            stream.flush()
            return


def confirm(
    question: str, script_hint: str = "this creates machines that cost money: pass --yes"
) -> None:
    """Ask at a terminal; refuse (exit 2) when no one can answer, exit 1 on no."""
    if not ask(question, script_hint):
        fail("nothing was created", EXIT_FAILURE)


def choose_forest(context: Context, forest: str | None) -> str:
    """``forest`` when given; else the only forest, or ask at a terminal which of several,
    and refuse in a script (exit 2, naming them) or when there is none (exit 1)."""
    if forest is not None:
        return forest
    from morpheus.services.forests import forest_ids

    ids = forest_ids(context)
    if not ids:
        fail("there are no forests; plant one with `morpheus plant local small`", EXIT_FAILURE)
    if len(ids) == 1:
        return ids[0]
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        named = ", ".join(ids) if len(ids) <= 8 else "the ids `morpheus list` shows"
        fail(f"{len(ids)} forests; name one of: {named}", EXIT_USAGE)
    for number, forest_id in enumerate(ids, start=1):
        typer.echo(f"  {number}) {forest_id}")
    while True:
        choice = str(typer.prompt(f"Which forest (1-{len(ids)})")).strip()
        if choice.isdigit() and 1 <= int(choice) <= len(ids):
            return ids[int(choice) - 1]
        if choice in ids:
            return choice


def fail(message: str, code: int) -> NoReturn:
    from morpheus.cli.output import error

    error(message)
    raise typer.Exit(code)
