"""`morpheus list`: read straight from the registry, so it starts fast."""

from __future__ import annotations

from pathlib import Path
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
    forests = forest_summaries(state_dir(), registry_url(state.config))
    show_forests(forests, output.value)
    sealed = sum(forest.secrets_sealed for forest in forests)
    if sealed and _no_registry_key(state.config):
        # As `status` says it: listing needs no secret, tending the forest does.
        state.notice(
            f"{sealed} forest(s) keep their secrets encrypted and no registry key is set here: "
            "grow, rotate and reconcile need MORPHEUS_REGISTRY_KEY or registry.key_file"
        )


def _no_registry_key(config: Path | None) -> bool:
    """Whether no registry key is configured (the settings are loaded only when neither the
    variable nor the default key file gives one)."""
    from morpheus.secret_codec import KeyOrigin, KeySource

    if KeySource.find(None).origin is not KeyOrigin.NONE:
        return False
    from morpheus.settings import load_settings

    key_file = load_settings(config).settings.registry.key_file
    return KeySource.find(key_file).origin is KeyOrigin.NONE
