"""`morpheus registry rebuild`: recover a damaged, lost or emptied registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from morpheus.cli import output as out
from morpheus.cli.options import OutputFormat, OutputOption
from morpheus.cli.session import show_warnings, state_of

if TYPE_CHECKING:
    from morpheus.services.rebuild import Rebuild

registry_app = typer.Typer(
    help="Look after the registry (the state database).", no_args_is_help=True
)


@registry_app.command("rebuild")
def rebuild(ctx: typer.Context, output: OutputOption = OutputFormat.table) -> None:
    """Recreate the registry's forests from node directories and provider listings.

    For a registry that is damaged, lost or empty while nodes still run: every forest an
    installed provider still has nodes of is recorded again (running nodes active, the rest
    failed, for `morpheus reconcile`). A damaged file is kept beside the new one as
    registry.sqlite3.damaged-<time>; forests already recorded are left as they are.
    """
    from morpheus.paths import state_dir
    from morpheus.registry import utcnow
    from morpheus.services.rebuild import rebuild_registry
    from morpheus.settings import load_settings

    loaded = load_settings(state_of(ctx).config)
    show_warnings(loaded.warnings)
    show_rebuild(rebuild_registry(loaded.settings, state_dir(), utcnow()), output)


def show_rebuild(result: Rebuild, output: OutputFormat) -> None:
    if out.is_data(output):
        out.emit(
            {
                "recovered": [
                    {
                        "forest": r.forest_id,
                        "provider": r.provider,
                        "nodes": r.nodes,
                        "running": r.running,
                    }
                    for r in result.recovered
                ],
                "already_recorded": result.already_recorded,
                "kept_aside": None if result.kept_aside is None else str(result.kept_aside),
                "notes": result.notes,
            },
            output,
        )
        return
    console = out.console()
    if result.kept_aside is not None:
        console.print(f"The damaged registry was kept as {result.kept_aside}", markup=False)
    for forest in result.recovered:
        console.print(
            f"Recovered {forest.forest_id} from {forest.provider}: {forest.nodes} node(s), "
            f"{forest.running} running",
            markup=False,
        )
    for note in result.notes:
        console.print(f"  note: {note}", markup=False)
    if result.recovered:
        ids = " ".join(forest.forest_id for forest in result.recovered)
        console.print(
            "Route credentials cannot be read back from the nodes: run "
            f"`morpheus reconcile FOREST` for each ({ids}) before growing it; "
            "it gives every node the new ones and tidies nodes that are not running.",
            markup=False,
        )
    else:
        console.print("No forest to recover: every forest the providers list is recorded.")
