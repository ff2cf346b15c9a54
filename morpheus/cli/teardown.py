"""`morpheus teardown`: confirm by typing the id, delete everything, say what is left."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from morpheus.cli import output as out
from morpheus.cli.options import ForestArgument, QuietOption, YesOption
from morpheus.cli.session import EXIT_FAILURE, EXIT_USAGE, fail, state_of
from morpheus.models import Removal


def teardown(
    ctx: typer.Context,
    forest: ForestArgument,
    yes: YesOption = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """Delete a forest: every node, process, file and record of it."""
    from morpheus.services.forests import get_forest
    from morpheus.services.teardown import teardown as teardown_forest
    from morpheus.services.teardown import teardown_preview

    state = state_of(ctx)
    context = state.context()
    found = get_forest(context, forest)
    if dry_run:
        show_teardown_preview(found.id, teardown_preview(context, found.id))
        return
    if not yes:
        if not sys.stdin.isatty():
            fail("teardown asks for confirmation: pass --yes when not at a terminal", EXIT_USAGE)
        typed = typer.prompt(f"This deletes {found.id} and all its nodes. Type its id to confirm")
        if typed.strip() != found.id:
            fail("the id did not match; nothing was deleted", EXIT_FAILURE)
    with out.NodeProgress(enabled=not state.quiet) as progress:
        removal = teardown_forest(context, found.id, progress)
    show_removal(found.id, removal)
    if removal.failed:
        raise typer.Exit(EXIT_FAILURE)


def show_teardown_preview(forest_id: str, node_ids: list[str]) -> None:
    console = out.console()
    console.print(f"Teardown of {forest_id} would delete {len(node_ids)} node(s):", markup=False)
    for node_id in node_ids:
        console.print(f"  {node_id}", markup=False)
    console.print("and the forest's records. Nothing was deleted (--dry-run).")


def show_removal(forest_id: str, removal: Removal) -> None:
    console = out.console()
    if removal.failed:
        for what, why in sorted(removal.failed.items()):
            out.error(f"could not delete {what}: {why}")
        console.print(
            f"{forest_id}: {len(removal.deleted)} deleted, {len(removal.failed)} left; "
            "their records are kept — run teardown again.",
            markup=False,
        )
    else:
        console.print(
            f"Deleted {forest_id} ({len(removal.deleted)} node(s)); nothing left behind.",
            markup=False,
        )
