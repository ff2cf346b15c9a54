"""`morpheus registry info` and `registry migrate`: where the registry is, and moving it.

``migrate`` copies every forest from the registry in use to another one (SQLite file or
PostgreSQL database), one transaction per forest, under that forest's lock, so a copy is
never half a forest; a forest already in the target is left alone (run it again after an
interruption).  The registry in use is not changed: ``registry.url`` then names the new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from morpheus.errors import MorpheusError, UsageError
from morpheus.provider import load_provider_class
from morpheus.registry import Registry
from morpheus.registry_rows import ForestRows, read_forest_rows, write_forest_rows
from morpheus.registry_url import RegistryUrl, parse_registry_url
from morpheus.secret_rows import seal_plain_secrets
from morpheus.sqlite_schema import SCHEMA_VERSION


@dataclass(frozen=True)
class RegistryInfo:
    """What ``registry info`` shows; ``location`` has any password masked."""

    backend: str
    location: str
    schema_version: int
    forests: int
    host: str | None
    #: Where the registry key comes from ("no key", "MORPHEUS_REGISTRY_KEY", a file).
    key: str = "no key"
    known_schema: int = SCHEMA_VERSION


def registry_info(registry: Registry) -> RegistryInfo:
    store = registry.store
    return RegistryInfo(
        backend=store.backend,
        location=store.location,
        schema_version=store.schema_version(),
        forests=len(registry.forest_ids()),
        host=registry.host,
        key=registry.secrets.source.describe(),
    )


@dataclass(frozen=True)
class MovedForest:
    forest_id: str
    copied: bool  # False: already in the target (or, with --dry-run, would not be copied)
    nodes: int
    events: int


@dataclass
class Migration:
    """What ``registry migrate`` did (or, with ``dry_run``, would do)."""

    source: str
    target: str
    dry_run: bool
    forests: list[MovedForest] = field(default_factory=list)


def migrate_registry(
    source: Registry, target_url: str, state_dir: Path, *, dry_run: bool = False
) -> Migration:
    """Copy every forest of ``source`` into the registry ``target_url`` names."""
    try:
        where = parse_registry_url(target_url, state_dir)
    except ValueError as exc:
        raise UsageError(f"--to: {exc}") from None
    result = Migration(source.store.location, where.masked, dry_run)
    if where.path is not None and source.store.location == str(where.path):
        raise UsageError(f"--to names the registry in use ({where.path}): name another one")
    if dry_run:
        # Read-only: a dry run creates no file, table or schema in the target.
        present = _recorded_ids(source.store.location, where)
        for forest_id in source.forest_ids():
            rows = read_forest_rows(source.store, forest_id)
            result.forests.append(_moved(forest_id not in present, rows))
        return result
    # A new file beside local forests is wanted here, not a lost registry: recover=True.
    with Registry.open(target_url, state_dir, recover=True, secrets=source.secrets) as target:
        if target.store.location == source.store.location:
            raise UsageError(f"--to names the registry in use ({target.store.location})")
        present = set(target.forest_ids())
        for forest_id in source.forest_ids():
            if forest_id in present:
                result.forests.append(_moved(False, read_forest_rows(source.store, forest_id)))
                continue
            result.forests.append(_copy(source, target, forest_id))
    return result


def _recorded_ids(source_location: str, where: RegistryUrl) -> set[str]:
    """The forest ids already in the target, read without creating or migrating anything."""
    if where.path is not None:
        from morpheus.sqlite_store import recorded_forest_ids

        return recorded_forest_ids(where.path)
    if where.masked == source_location:
        raise UsageError(f"--to names the registry in use ({where.masked})")
    from morpheus.postgres_store import recorded_forest_ids as recorded_in_postgres

    return recorded_in_postgres(where.url)


def _copy(source: Registry, target: Registry, forest_id: str) -> MovedForest:
    # Under the forest's lock in the source: no plant or grow lands half-way through.
    with source.store.forest_lock(forest_id, 600, None):
        rows = read_forest_rows(source.store, forest_id)
        forest = rows.tables["forests"][0]
        if forest.get("host") is None and _runs_here(str(forest["provider"])):
            # Recorded before forests named their host: its nodes are this host's.
            forest["host"] = source.host
        # Plain secrets of a SQLite registry are sealed on their way into a shared one.
        seal_plain_secrets(rows.tables, target.secrets)
        copied = write_forest_rows(target.store, rows)
    return _moved(copied, rows)


def _moved(copied: bool, rows: ForestRows) -> MovedForest:
    return MovedForest(rows.forest_id, copied, rows.count("nodes"), rows.count("events"))


def _runs_here(provider: str) -> bool:
    """Whether the provider's nodes are this machine's (local processes, local VMs)."""
    try:
        return not load_provider_class(provider).costs_money
    except MorpheusError:
        return False  # not installed here: leave the forest as recorded
