"""`morpheus list`: read straight from the registry, so it starts fast."""

from __future__ import annotations

from typing import Annotated

import typer

from morpheus.cli.options import OutputFormat, OutputOption, QuietOption
from morpheus.cli.session import state_of


def list_forests(
    ctx: typer.Context,
    output: OutputOption = OutputFormat.table,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh", help="Ask each forest's provider first and record what it reports."
        ),
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """List the forests in the registry."""
    from morpheus.cli.plain import show_drift, show_forests
    from morpheus.cli.session import registry_url
    from morpheus.listing import forest_summaries
    from morpheus.paths import state_dir

    state = state_of(ctx)
    if refresh:
        from morpheus.services.reconcile import refresh_all

        show_drift(refresh_all(state.context()))
    show_forests(forest_summaries(state_dir(), registry_url(state.config)), output.value)
