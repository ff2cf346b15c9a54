"""`morpheus import-registry`: bring in the older Go tool's forests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from morpheus.cli import output as out
from morpheus.cli.options import OutputFormat, OutputOption, QuietOption, YesOption
from morpheus.cli.session import confirm, state_of

if TYPE_CHECKING:
    from morpheus.services.migrate import ImportPlan, ImportResult


def import_registry(
    ctx: typer.Context,
    path: Annotated[
        Path | None,
        typer.Argument(
            help="The older Go tool's registry (default: ~/.morpheus/registry.json).",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be imported; write nothing.")
    ] = False,
    yes: YesOption = False,
    output: OutputOption = OutputFormat.table,
    quiet: QuietOption = False,
) -> None:
    """Import the forests and nodes of the older Go tool's registry.json."""
    from morpheus.provider import installed_providers
    from morpheus.services.forests import forest_ids
    from morpheus.services.migrate import DEFAULT_LEGACY_REGISTRY, plan_import
    from morpheus.services.migrate import import_registry as import_forests

    context = state_of(ctx).context()
    plan = plan_import(
        (path or DEFAULT_LEGACY_REGISTRY).expanduser(),
        forest_ids(context),
        {provider.name for provider in installed_providers()},
    )
    if dry_run or not plan.forests:
        show_import(plan, output, dry_run=dry_run)
        return
    if not yes:
        show_import(plan, OutputFormat.table, dry_run=True)
        confirm(f"Import {len(plan.forests)} forest(s)?", "import-registry asks first: pass --yes")
    show_import(import_forests(context, plan), output)


def show_import(
    found: ImportPlan | ImportResult, output: OutputFormat, *, dry_run: bool = False
) -> None:
    """A plan (dry run, or nothing to import) or what was imported: forests, skips, notes."""
    from morpheus.services.migrate import ImportPlan

    planned = list(found.forests) if isinstance(found, ImportPlan) else found.imported
    notes = list(found.notes) if isinstance(found, ImportPlan) else []
    if out.is_data(output):
        out.emit(
            {
                "source": str(found.source),
                "dry_run": dry_run,
                "forests": [
                    {
                        **out.forest_dict(p.forest, list(p.nodes)),
                        "nodes": [out.node_dict(n) for n in p.nodes],
                    }
                    for p in planned
                ],
                "skipped": [{"forest": s.forest_id, "reason": s.reason} for s in found.skipped],
                "notes": notes,
            },
            output,
        )
        return
    console = out.console()
    verb = "Would import" if dry_run else "Imported"
    if not planned:
        console.print(f"Nothing to import from {found.source}.")
    else:
        table = out.table("FOREST", "PROVIDER", "SIZE", "NODES", "STATUS", "ADDRESSES")
        for p in planned:
            hosts = ", ".join(n.host for n in p.nodes if n.host) or "-"
            table.add_row(
                p.forest.id,
                p.forest.provider,
                p.forest.size,
                str(len(p.nodes)),
                p.forest.status.value,
                hosts,
            )
        console.print(f"{verb} from {found.source}:")
        console.print(table)
    for skipped in found.skipped:
        console.print(f"  skipped {skipped.forest_id}: {skipped.reason}")
    for note in notes:
        console.print(f"  note: {note}")
