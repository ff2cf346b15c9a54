"""`morpheus config check`: the configuration, each value with its source."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from morpheus.cli import output as out
from morpheus.cli.options import OutputFormat, OutputOption, QuietOption
from morpheus.cli.session import show_warnings, state_of

if TYPE_CHECKING:
    from morpheus.settings import LoadedSettings

config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


@config_app.command("check")
def config_check(
    ctx: typer.Context, output: OutputOption = OutputFormat.table, quiet: QuietOption = False
) -> None:
    """Validate the configuration and show where each value came from (secrets masked)."""
    from morpheus.settings import load_settings

    loaded = load_settings(state_of(ctx).config)
    show_warnings(loaded.warnings)
    show_config(loaded, output)


def show_config(loaded: LoadedSettings, output: OutputFormat) -> None:
    from morpheus.install_sources import describe_install_sources
    from morpheus.services.config import config_rows

    rows = config_rows(loaded)

    downloads = describe_install_sources(loaded.settings.integration)
    if out.is_data(output):
        out.emit(
            {
                "file": str(loaded.path) if loaded.path else None,
                "values": {key: {"value": value, "source": source} for key, value, source in rows},
                "cloud_node_downloads": downloads,
            },
            output,
        )
        return
    console = out.console()
    console.print(
        f"Config file: {loaded.path or 'none (defaults and environment only)'}", markup=False
    )
    console.print("Configuration is valid.")
    table = out.table("KEY", "VALUE", "SOURCE")
    for key, value, source in rows:
        table.add_row(key, json.dumps(value), source)
    console.print(table)
    console.print("Cloud nodes download at first boot:")
    for program, source in downloads.items():
        console.print(f"  {program}: {source}", markup=False)
