"""`morpheus user-data`: the cloud-init user-data one node gets."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from morpheus.cli.options import ForestArgument, QuietOption
from morpheus.cli.session import state_of


def user_data(
    ctx: typer.Context,
    forest: ForestArgument,
    node: Annotated[str, typer.Argument(help="Node name (node-1) or id.")],
    files: Annotated[
        bool,
        typer.Option(
            "--files", help="Print each file the node gets, decoded, instead of the user-data."
        ),
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """Print the cloud-init user-data a node of the forest gets (secrets included: keep it)."""
    from morpheus.services.plant import node_user_data

    text = node_user_data(state_of(ctx).context(), forest, node)
    if files:
        from morpheus.render import delivered_files

        for path, content in delivered_files(text).items():
            sys.stdout.write(f"==> {path} <==\n{content}\n")
        return
    sys.stdout.write(text)
