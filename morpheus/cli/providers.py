"""`morpheus providers`: the installed provider plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING

from morpheus.cli import output as out
from morpheus.cli.options import OutputFormat, OutputOption, QuietOption

if TYPE_CHECKING:
    from morpheus.provider import ProviderInfo


def providers(output: OutputOption = OutputFormat.table, quiet: QuietOption = False) -> None:
    """List the installed provider plugins."""
    from morpheus.provider import installed_providers

    show_providers(installed_providers(), output)


def show_providers(infos: list[ProviderInfo], output: OutputFormat) -> None:
    if out.is_data(output):
        out.emit(
            [
                {
                    "name": i.name,
                    "distribution": i.distribution,
                    "version": i.version,
                    "target": i.target,
                }
                for i in infos
            ],
            output,
        )
        return
    table = out.table("NAME", "DISTRIBUTION", "VERSION")
    for info in infos:
        table.add_row(info.name, info.distribution, info.version)
    out.console().print(table)
