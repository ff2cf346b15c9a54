"""`morpheus check`: is this machine ready to plant?"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from morpheus.cli import output as out
from morpheus.cli.options import OutputFormat, OutputOption, QuietOption
from morpheus.cli.session import EXIT_FAILURE, state_of

if TYPE_CHECKING:
    from morpheus.provider import CheckResult


def check(
    ctx: typer.Context, output: OutputOption = OutputFormat.table, quiet: QuietOption = False
) -> None:
    """Check this machine is ready: config, state dir, registry, nats-server, cloud, IPv6."""
    from morpheus.paths import state_dir
    from morpheus.services.check import run_checks

    results = run_checks(state_of(ctx).config, state_dir())
    show_checks(results, output)
    if not all(result.ok or not result.needed for result in results):
        raise typer.Exit(EXIT_FAILURE)


def show_checks(results: list[CheckResult], output: OutputFormat) -> None:
    if out.is_data(output):
        out.emit(
            [
                {"name": r.name, "ok": r.ok, "needed": r.needed, "detail": r.detail, "fix": r.fix}
                for r in results
            ],
            output,
        )
        return
    from rich.text import Text

    console = out.console()
    for result in results:
        mark = ("✓", "green") if result.ok else ("✗", "red") if result.needed else ("-", "dim")
        fix = f" — fix: {result.fix}" if result.fix and not result.ok and result.needed else ""
        console.print(Text.assemble(mark, f" {result.name:<16} {result.detail}{fix}"))
