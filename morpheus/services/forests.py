"""Looking forests up: what commands need before they act on one."""

from __future__ import annotations

from morpheus.models import Forest
from morpheus.services import Context


def get_forest(ctx: Context, forest_id: str) -> Forest:
    """The recorded forest, or ``ForestNotFoundError`` suggesting the closest id."""
    return ctx.registry.get_forest(forest_id)


def forest_ids(ctx: Context) -> list[str]:
    """Every recorded forest id, oldest first."""
    return [forest.id for forest in ctx.registry.list_forests()]
