"""`morpheus registry rebuild`: recover the registry from what the platforms themselves say.

The registry is a cache of the platforms' truth: every node carries labels naming its forest,
run and index (the local provider keeps them in each node's ``node.json``).  When the
registry file is damaged, lost or emptied, this recreates a row for every forest any
installed provider still has nodes of, so ``status``, ``teardown`` and ``reconcile`` work on
them again.  A damaged file is moved aside, never deleted; forests already recorded are left
as they are.  Route credentials cannot be read back from a platform: recovered forests get
new ones, which ``morpheus reconcile`` hands to every node (local forests) before growing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from morpheus.blueprint import RouteCredentials
from morpheus.errors import DamagedRegistryError, MorpheusError, ProviderError
from morpheus.models import Forest, ForestStatus, Node, NodeState, NodeStatus
from morpheus.provider import NodeHandle, Provider, installed_providers, load_provider_class
from morpheus.registry import Registry
from morpheus.registry_url import parse_registry_url
from morpheus.services import registry_secrets
from morpheus.services.drift import node_from_handle
from morpheus.settings import Settings

_SIZE_NAMES = {1: "small", 3: "medium", 5: "large"}


@dataclass
class RecoveredForest:
    forest_id: str
    provider: str
    nodes: int
    running: int


@dataclass
class Rebuild:
    """What ``registry rebuild`` did: forests recovered, the damaged file kept, notes."""

    recovered: list[RecoveredForest] = field(default_factory=list)
    already_recorded: list[str] = field(default_factory=list)
    kept_aside: Path | None = None
    notes: list[str] = field(default_factory=list)


def rebuild_registry(settings: Settings, state_dir: Path, now: datetime) -> Rebuild:
    """Open (or recreate) the registry and record every forest the providers still have."""
    result = Rebuild()
    url = settings.registry.url
    secrets = registry_secrets(settings)
    try:
        registry = Registry.open(url, state_dir, recover=True, secrets=secrets)
    except DamagedRegistryError:
        store_path = parse_registry_url(url, state_dir).path
        if store_path is None:
            raise  # a database is restored from its backups, not moved aside
        result.kept_aside = _move_aside(store_path, now)
        registry = Registry.open(url, state_dir, recover=True, secrets=secrets)
    with registry:
        recorded = set(registry.forest_ids())
        for provider in _providers(settings, state_dir, result.notes):
            try:
                forest_ids = provider.forest_ids()
            except MorpheusError as exc:
                result.notes.append(f"{provider.name}: could not list its forests: {exc}")
                continue
            for forest_id in forest_ids:
                if forest_id in recorded:
                    result.already_recorded.append(forest_id)
                    continue
                try:
                    handles = provider.list_nodes(forest_id)
                except MorpheusError as exc:
                    result.notes.append(f"{forest_id}: could not list its nodes: {exc}")
                    continue
                if not handles:
                    continue
                forest, nodes = _records(provider.name, forest_id, handles, now)
                if not provider.costs_money:
                    # Found in this host's state directory: its nodes are this host's.
                    forest = forest.model_copy(update={"host": registry.host})
                if registry.import_forest(
                    forest,
                    RouteCredentials.generate(),
                    nodes,
                    f"recovered by `registry rebuild` from {provider.name}",
                    now,
                ):
                    recorded.add(forest_id)
                    result.recovered.append(
                        RecoveredForest(
                            forest_id,
                            provider.name,
                            len(nodes),
                            sum(node.status == NodeStatus.ACTIVE for node in nodes),
                        )
                    )
    return result


def _move_aside(path: Path, now: datetime) -> Path:
    """Keep the damaged file (and its journal) beside the new one, never delete it."""
    aside = path.with_name(f"{path.name}.damaged-{now.strftime('%Y%m%dT%H%M%S')}")
    try:
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{path}{suffix}")
            if source.exists():
                os.replace(source, Path(f"{aside}{suffix}"))
    except OSError as exc:
        raise DamagedRegistryError(
            f"cannot move the damaged registry {path} aside: {exc.strerror}"
        ) from exc
    return aside


def _providers(settings: Settings, state_dir: Path, notes: list[str]) -> list[Provider]:
    """Every installed provider that can be configured here; the others are noted."""
    providers = []
    for info in installed_providers():
        try:
            providers.append(load_provider_class(info.name).from_settings(settings, state_dir))
        except (MorpheusError, ProviderError) as exc:
            notes.append(f"{info.name}: not asked ({exc})")
    return providers


def _records(
    provider: str, forest_id: str, handles: list[NodeHandle], now: datetime
) -> tuple[Forest, list[Node]]:
    run_ids = sorted({handle.run_id for handle in handles})
    forest = Forest(
        id=forest_id,
        provider=provider,
        size=_SIZE_NAMES.get(len(handles), "custom"),
        location=None,
        status=ForestStatus.ACTIVE,
        created_at=now,
        cluster_name=forest_id,
        credentials_ref=f"registry:route_credentials/{forest_id}",
        run_id=run_ids[0],
    )
    # Running nodes are kept; the rest are what `reconcile` tidies away.
    nodes = [
        node_from_handle(
            forest_id,
            handle,
            NodeStatus.ACTIVE if handle.state == NodeState.RUNNING else NodeStatus.FAILED,
            now,
        )
        for handle in handles
    ]
    return forest, nodes
