"""`morpheus reconcile`: show the repair, confirm, make registry and platform agree."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from morpheus.cli import output as out
from morpheus.cli.options import ForestArgument, QuietOption, YesOption
from morpheus.cli.session import EXIT_FAILURE, confirm, state_of

if TYPE_CHECKING:
    from morpheus.services.reconcile import ReconcilePlan, Reconciliation


def reconcile(
    ctx: typer.Context,
    forest: ForestArgument,
    yes: YesOption = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """Repair a forest after an interrupted plant, grow or teardown (registry = platform)."""
    from morpheus.services.reconcile import preview
    from morpheus.services.reconcile import reconcile as reconcile_forest

    state = state_of(ctx)
    context = state.context()
    plan = preview(context, forest)
    show_reconcile_plan(plan)
    if dry_run:
        return
    if plan.deletes and not yes:
        confirm("Apply these changes?", "reconcile deletes nodes: pass --yes")
    with out.NodeProgress(enabled=not state.quiet) as progress:
        result = reconcile_forest(context, plan.forest.id, progress)
    show_reconciliation(result)
    if result.failed or result.behind:
        raise typer.Exit(EXIT_FAILURE)


def show_reconcile_plan(plan: ReconcilePlan) -> None:
    console = out.console()
    forest_id = plan.forest.id
    if plan.finish_teardown or not plan.keep:
        why = "its teardown was interrupted" if plan.finish_teardown else "no active node is left"
        console.print(f"{forest_id}: {why}; reconcile removes the whole forest.", markup=False)
        return
    console.print(f"{forest_id}: keep {', '.join(n.name for n in plan.keep)}", markup=False)
    for node in plan.remove:
        console.print(f"  delete {node.name} (left {node.status.value})", markup=False)
    for node in plan.missing:
        console.print(f"  forget {node.name} (gone from {plan.forest.provider})", markup=False)
    for handle in plan.untracked:
        console.print(f"  delete {handle.node_id} (not in the registry)", markup=False)
    for node in plan.behind:
        console.print(
            f"  reconfigure {node.name} (a former change could not reach it)", markup=False
        )
    if not plan.changes:
        console.print("  nothing to delete; the kept nodes get their configuration again")


def show_reconciliation(result: Reconciliation) -> None:
    console = out.console()
    for what, why in sorted(result.failed.items()):
        out.error(f"could not delete {what}: {why}")
    for what, why in sorted(result.behind.items()):
        out.error(f"could not reconfigure {what}: {why}")
    if result.forest_removed:
        console.print(f"Removed {result.plan.forest.id}; nothing left behind.", markup=False)
    elif not (result.failed or result.behind):
        console.print(
            f"Reconciled {result.plan.forest.id}: {len(result.plan.keep)} node(s) ready, "
            f"{len(result.deleted)} deleted.",
            markup=False,
        )
