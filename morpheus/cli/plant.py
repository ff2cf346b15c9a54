"""`morpheus plant`: plan, confirm, plant with live progress."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from morpheus.cli import output as out
from morpheus.cli.options import OutputFormat, OutputOption, QuietOption, YesOption
from morpheus.cli.session import (
    EXIT_USAGE,
    confirm,
    end_terminal_line,
    fail,
    show_warnings,
    state_of,
    yes_or_no,
)
from morpheus.limits import MAX_FOREST_NODES

if TYPE_CHECKING:
    from morpheus.services.plant import PlantPlan, PlantResult


def plant(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(help="local, cloud (the configured cloud provider), or a provider name."),
    ],
    size: Annotated[
        str | None, typer.Argument(help="small (1 node), medium (3) or large (5).")
    ] = None,
    nodes: Annotated[
        int | None,
        typer.Option(
            "--nodes",
            "-n",
            min=1,
            max=MAX_FOREST_NODES,
            help=f"Number of nodes instead of a size (at most {MAX_FOREST_NODES}).",
        ),
    ] = None,
    yes: YesOption = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan; create nothing.")
    ] = False,
    user_data_dir: Annotated[
        Path | None,
        typer.Option(
            "--user-data-dir",
            file_okay=False,
            help="With --dry-run: write each planned node's user-data to DIR/<node>.yaml "
            "and the files it holds, readable, under DIR/<node>/.",
        ),
    ] = None,
    keep_on_failure: Annotated[
        bool,
        typer.Option("--keep-on-failure", help="Keep what a failed plant created, for inspection."),
    ] = False,
    output: OutputOption = OutputFormat.table,
    quiet: QuietOption = False,
) -> None:
    """Create a forest of NATS nodes that cluster with each other."""
    from morpheus.services.plant import PlantRequest, plan
    from morpheus.services.plant import plant as plant_forest

    state = state_of(ctx)
    context = state.context()
    request = PlantRequest(
        target=target, size=size, nodes=nodes, keep_on_failure=keep_on_failure, dry_run=dry_run
    )
    if user_data_dir is not None and not dry_run:
        fail("--user-data-dir only goes with --dry-run", EXIT_USAGE)
    plant_plan = plan(context, request)
    if dry_run or (plant_plan.provider.costs_money and not yes):
        show_plan(plant_plan)
        if dry_run:
            if user_data_dir is not None:
                from morpheus.services.plant import write_user_data

                written = write_user_data(context, plant_plan, user_data_dir)
                show_written(written)
            return
        confirm("Create these machines?")
    else:
        show_warnings(plant_plan.warnings)
    with out.NodeProgress(enabled=not state.quiet and output == OutputFormat.table) as progress:
        result = plant_forest(
            context,
            plant_plan,
            request,
            progress,
            rollback_on_interrupt=lambda: progress.paused(_ask_rollback),
        )
    show_planted(result, output)


def _ask_rollback() -> bool:
    """Ctrl-C during plant: ask once whether to delete what was made (yes if no one answers)."""
    if not sys.stdin.isatty():
        return True
    end_terminal_line()
    try:
        return yes_or_no("Interrupted. Delete what this plant created?", default=True)
    except (KeyboardInterrupt, EOFError, typer.Abort):
        end_terminal_line()
        return True


def show_plan(plan: PlantPlan) -> None:
    console = out.console()
    console.print(f"Plan: {plan.size} forest of {plan.node_count} node(s) on {plan.provider.name}")
    for line in plan.lines:
        console.print(f"  {line.label}: {line.value}", markup=False)
    for warning in plan.warnings:
        console.print(f"  warning: {warning}", markup=False)


def show_written(paths: list[Path]) -> None:
    console = out.console()
    for path in paths:
        console.print(f"  wrote {path}", markup=False)
    console.print("These files hold the forest's route password: keep them private.")


def show_planted(result: PlantResult, output: OutputFormat) -> None:
    if out.is_data(output):
        out.emit(
            {
                "forest": out.forest_dict(result.forest),
                "nodes": [out.node_dict(n) for n in result.nodes],
            },
            output,
        )
        return
    console = out.console()
    console.print(f"🌲 Planted {result.forest.id}: {len(result.nodes)} node(s) active")
    for node in result.nodes:
        console.print(f"  {node.name}  {node.host}  monitor {node.monitor_url}", markup=False)
    console.print(
        f"See it with `morpheus status {result.forest.id}`; remove it with "
        f"`morpheus teardown {result.forest.id}`.",
        markup=False,
    )
