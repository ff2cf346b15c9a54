"""`morpheus registry info` and `registry migrate --to URL`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from morpheus.cli import output as out
from morpheus.cli.options import OutputFormat, OutputOption
from morpheus.cli.session import state_of

if TYPE_CHECKING:
    from morpheus.services.registry_move import Migration, RegistryInfo


def info(ctx: typer.Context, output: OutputOption = OutputFormat.table) -> None:
    """Show which registry is in use: backend, where it lives (password masked), schema.

    The registry is the one registry.url names (MORPHEUS_REGISTRY__URL), by default
    registry.sqlite3 in the state directory. Local forests record this host; other hosts
    sharing the registry show them but do not change them.
    """
    from morpheus.services.registry_move import registry_info

    show_info(registry_info(state_of(ctx).context().registry), output)


def show_info(found: RegistryInfo, output: OutputFormat) -> None:
    if out.is_data(output):
        out.emit(
            {
                "backend": found.backend,
                "location": found.location,
                "schema_version": found.schema_version,
                "forests": found.forests,
                "host": found.host,
                "key": found.key,
            },
            output,
        )
        return
    console = out.console()
    console.print(f"Backend:  {found.backend}", markup=False)
    console.print(f"Location: {found.location}", markup=False)
    console.print(
        f"Schema:   {found.schema_version} (this Morpheus writes {found.known_schema})",
        markup=False,
    )
    console.print(f"Forests:  {found.forests}", markup=False)
    console.print(f"This host: {found.host}", markup=False)
    console.print(f"Key:      {found.key} (`morpheus registry key check` tries it)", markup=False)


def migrate(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="URL",
            help="The registry to copy into: sqlite:///PATH or postgresql://USER@HOST/DB.",
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be copied; copy nothing.")
    ] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Copy every forest from the registry in use into another registry.

    One transaction per forest, under its lock: a forest is copied whole or not at all, and
    one already in the target is left alone, so running it again finishes an interrupted
    copy. Secrets are copied as stored (encrypted ones stay encrypted). The registry in use
    is not changed: set registry.url to the new one afterwards. With --dry-run a PostgreSQL
    target still gets its (empty) tables.
    """
    from morpheus.paths import state_dir
    from morpheus.services.registry_move import migrate_registry

    context = state_of(ctx).context()
    show_migration(migrate_registry(context.registry, to, state_dir(), dry_run=dry_run), output)


def show_migration(result: Migration, output: OutputFormat) -> None:
    if out.is_data(output):
        out.emit(
            {
                "source": result.source,
                "target": result.target,
                "dry_run": result.dry_run,
                "forests": [
                    {
                        "forest": moved.forest_id,
                        "copied": moved.copied,
                        "nodes": moved.nodes,
                        "events": moved.events,
                    }
                    for moved in result.forests
                ],
            },
            output,
        )
        return
    console = out.console()
    verb = "Would copy" if result.dry_run else "Copying"
    console.print(f"{verb} {result.source} -> {result.target}", markup=False)
    for moved in result.forests:
        if moved.copied:
            done = "would copy" if result.dry_run else "copied"
            line = f"  {done} {moved.forest_id} ({moved.nodes} node(s), {moved.events} event(s))"
        else:
            line = f"  already there: {moved.forest_id}"
        console.print(line, markup=False)
    copied = sum(moved.copied for moved in result.forests)
    there = len(result.forests) - copied
    if result.dry_run:
        console.print(f"{copied} forest(s) to copy, {there} already there; nothing copied.")
    else:
        console.print(
            f"{copied} forest(s) copied, {there} already there. The registry in use is "
            f"unchanged: set registry.url to {result.target} to use the copy.",
            markup=False,
        )
