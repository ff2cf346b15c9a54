"""`morpheus rotate`: new route credentials and node certificates, one node at a time."""

from __future__ import annotations

import typer

from morpheus.cli import output as out
from morpheus.cli.options import OptionalForestArgument, OutputFormat, OutputOption
from morpheus.cli.session import choose_forest, state_of


def rotate(
    ctx: typer.Context,
    forest: OptionalForestArgument = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Replace a forest's route password and node certificates without losing quorum.

    One node at a time, each waited for (healthy, every peer seen) before the next; run it
    again if it was interrupted. The forest's CA is kept. Needs a provider that can
    reconfigure running nodes (local today).
    """
    from morpheus.services.rotate import rotate as rotate_forest

    state = state_of(ctx)
    data = out.is_data(output)
    context = state.context()
    forest_id = choose_forest(context, forest)
    with out.NodeProgress(enabled=not (state.quiet or data)) as progress:
        rotation = rotate_forest(context, forest_id, progress)
    if data:
        out.emit(
            {
                "forest": rotation.forest.id,
                "nodes": [node.name for node in rotation.nodes],
                "rotated": ["route_password", "node_certificates"],
            },
            output,
        )
        return
    out.console().print(
        f"🔑 {rotation.forest.id}: new route password and certificates on "
        f"{len(rotation.nodes)} nodes.",
        markup=False,
    )
