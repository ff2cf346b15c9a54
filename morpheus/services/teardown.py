"""Teardown: delete every node of a forest (registry and platform), then its records."""

from __future__ import annotations

from morpheus.errors import MorpheusError, WorkInterruptedError
from morpheus.models import ForestStatus, Removal
from morpheus.provider import Provider
from morpheus.services import Context, Progress
from morpheus.services.provision import record_registry_write, remove_nodes


def teardown(ctx: Context, forest_id: str, progress: Progress) -> Removal:
    """Delete the forest; what could not be deleted is reported and keeps its rows."""
    forest = ctx.registry.get_forest(forest_id)
    provider = ctx.provider(forest.provider)
    with ctx.registry.forest_lock(forest.id, on_wait=ctx.notice) as lock:
        try:
            removal = remove_forest(ctx, provider, forest.id, progress)
        except KeyboardInterrupt:
            raise WorkInterruptedError(
                f"teardown of {forest.id} was interrupted; what is not deleted yet is still "
                f"recorded: run `morpheus teardown {forest.id}` again to finish"
            ) from None
        if not removal.failed:
            lock.discard()
    return removal


def teardown_preview(ctx: Context, forest_id: str) -> list[str]:
    """What teardown would delete: the registry's nodes and those the platform lists."""
    forest = ctx.registry.get_forest(forest_id)
    provider = ctx.provider(forest.provider)
    recorded = {node.id for node in ctx.registry.nodes(forest.id)}
    listed = {handle.node_id for handle in provider.list_nodes(forest.id)}
    return sorted(recorded | listed, key=lambda node_id: (len(node_id), node_id))


def remove_forest(ctx: Context, provider: Provider, forest_id: str, progress: Progress) -> Removal:
    """The body of teardown, also used to roll back a failed plant (lock already held)."""
    registry = ctx.registry
    forest = registry.get_forest(forest_id)
    # Asked first: a platform that refuses (a bad token, no API) leaves the forest as it was.
    platform = provider.list_nodes(forest.id)
    started = Removal()
    record_registry_write(
        started, lambda: registry.set_forest_status(forest.id, ForestStatus.DELETING)
    )
    record_registry_write(
        started, lambda: registry.add_event(forest.id, "deleting", "teardown started", ctx.clock())
    )
    removal = remove_nodes(
        ctx, provider, forest, registry.nodes(forest.id), progress, platform=platform
    )
    removal.failed = {**started.failed, **removal.failed}
    try:
        provider.delete_forest_resources(forest.id)
    except MorpheusError as exc:
        removal.failed["forest resources"] = str(exc)
    if removal.failed:
        left = ", ".join(sorted(removal.failed))
        record_registry_write(
            removal,
            lambda: registry.add_event(
                forest.id, "teardown-incomplete", f"could not delete: {left}", ctx.clock()
            ),
        )
    else:
        record_registry_write(removal, lambda: registry.delete_forest(forest.id))
    return removal
