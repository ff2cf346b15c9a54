"""`morpheus status`: a forest's nodes as the platform and NATS see them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from morpheus.cli import output as out
from morpheus.cli.options import OptionalForestArgument, OutputFormat, OutputOption, QuietOption
from morpheus.cli.session import choose_forest, state_of

if TYPE_CHECKING:
    from morpheus.services.status import ForestView


def status(
    ctx: typer.Context,
    forest: OptionalForestArgument = None,
    output: OutputOption = OutputFormat.table,
    quiet: QuietOption = False,
) -> None:
    """Show a forest's nodes: platform state, NATS health, peers, addresses and events."""
    from morpheus.services.status import forest_status

    context = state_of(ctx).context()
    show_status(forest_status(context, choose_forest(context, forest)), output)


def show_status(view: ForestView, output: OutputFormat) -> None:
    if out.is_data(output):
        nodes = []
        for item in view.nodes:
            data = out.node_dict(item.node)
            data["platform_state"] = item.platform_state
            data["nats"] = item.sample.model_dump() if item.sample else None
            nodes.append(data)
        out.emit(
            {
                "forest": out.forest_dict(view.forest),
                "nodes": nodes,
                "untracked": [h.model_dump() for h in view.untracked],
                "events": [e.model_dump(mode="json") for e in view.events],
                "notes": view.notes,
            },
            output,
        )
        return
    console = out.console()
    forest = view.forest
    console.print(
        f"🌲 Forest: {forest.id}  ({forest.provider}, {forest.size}, {forest.status.value})"
    )
    table = out.table("NODE", "STATUS", "PLATFORM", "NATS", "PEERS", "CPU", "MEM", "ADDRESS")
    expected = max(len(view.nodes) - 1, 0)
    for item in view.nodes:
        sample = item.sample
        if sample is None:
            nats, peers = "-", "-"
        elif not sample.reachable:
            nats, peers = "unreachable", "-"
        else:
            nats = {True: "healthy", False: "unhealthy", None: "health unknown"}[sample.healthy]
            peers = f"{sample.peers or 0}/{expected}"
        table.add_row(
            item.node.name,
            item.node.status.value,
            item.platform_state or "unknown",
            nats,
            peers,
            out.percent(sample.cpu_percent if sample else None),
            out.percent(sample.memory_percent if sample else None),
            item.node.monitor_url or "-",
        )
    console.print(table)
    for handle in view.untracked:
        console.print(
            f"  ⚠ {handle.node_id} exists on {forest.provider} but not in the registry",
            markup=False,
        )
    for note in view.notes:
        console.print(f"  {note}", markup=False)
    if view.events:
        console.print("Recent events:")
        for event in view.events:
            console.print(
                f"  {event.at:%Y-%m-%d %H:%M:%S}  {event.kind:<10} {event.message}", markup=False
            )
