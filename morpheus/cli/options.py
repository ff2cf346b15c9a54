"""Arguments and options several commands share, and the output formats."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def complete_forest_id(incomplete: str) -> list[str]:
    """Forest ids from the registry (stdlib only on SQLite, so completion stays fast)."""
    from morpheus.errors import MorpheusError
    from morpheus.listing import forest_ids
    from morpheus.paths import state_dir

    try:
        from morpheus.cli.session import registry_url

        url = registry_url(None)
    except MorpheusError:
        return []
    return forest_ids(state_dir(), incomplete, url)


ForestArgument = Annotated[
    str,
    typer.Argument(
        help="Forest id, as `morpheus list` shows it.", autocompletion=complete_forest_id
    ),
]
#: For commands that act on one forest and may default to the only one. Commands that may
#: delete nodes or the forest (``teardown``, ``reconcile``) keep a required id, as ``hcloud``
#: does for every delete: a slip of the keyboard must not pick what goes.
OptionalForestArgument = Annotated[
    str | None,
    typer.Argument(
        help="Forest id; may be left out when there is only one.",
        autocompletion=complete_forest_id,
        show_default=False,
    ),
]
OutputOption = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="table for people; json or yaml for scripts.")
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; for scripts.")]


def _quiet(ctx: typer.Context, value: bool) -> bool:
    if value:
        from morpheus.cli.session import state_of

        state_of(ctx).quiet = True
    return value


#: ``-q`` after the command works as it does before it (``morpheus -q plant`` = ``plant -q``).
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="Print only results and errors.", callback=_quiet, expose_value=False
    ),
]
