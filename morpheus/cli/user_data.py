"""`morpheus user-data`: the cloud-init user-data one node gets."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from morpheus.cli.options import ForestArgument
from morpheus.cli.session import state_of


def user_data(
    ctx: typer.Context,
    forest: ForestArgument,
    node: Annotated[str, typer.Argument(help="Node name (node-1) or id.")],
) -> None:
    """Print the cloud-init user-data a node of the forest gets (secrets included: keep it)."""
    from morpheus.services.plant import node_user_data

    sys.stdout.write(node_user_data(state_of(ctx).context(), forest, node))
