"""Import the older Go tool's ``~/.morpheus/registry.json`` into the registry.

The Go tool wrote one JSON object (``encoding/json`` of its registry types)::

    {"forests": {"<forest id>": {"id", "provider", "location", "size" or "node_count",
                                 "status", "created_at", "last_expansion"?, ...}},
     "nodes":   {"<forest id>": [{"id", "forest_id", "ip", "ipv6"?, "ipv4"?, "location",
                                  "status", "created_at", "role"?, "metadata"?, ...}]},
     "version"?: 1, "updated_at"?: "..."}

Its versions differ: sizes were first ``wood``/``forest``/``jungle``, then
``small``/``medium``/``large``, then a ``node_count``; ``ipv6``/``ipv4`` came late.  The fields
used here are checked strictly (type and form); every other field is ignored.

``plan_import`` reads and validates, and decides what to import, without writing anything;
``import_registry`` writes what a plan says, each forest in one transaction, so importing the
same file twice imports it once.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from morpheus.blueprint import RouteCredentials
from morpheus.errors import LegacyRegistryError
from morpheus.models import Forest, ForestStatus, Node, NodeStatus
from morpheus.services import Context
from morpheus.validation import describe_validation_error

#: Where the Go tool kept its registry.
DEFAULT_LEGACY_REGISTRY = Path("~/.morpheus/registry.json")
#: ``run_id`` of imported forests: their nodes were not made by a Morpheus run.
IMPORTED_RUN_ID = "imported"

_LEGACY_SIZES = {"wood": "small", "forest": "medium", "jungle": "large"}
_SIZE_OF_COUNT = {1: "small", 3: "medium", 5: "large"}
_FOREST_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def _forest_id(value: str) -> str:
    # Forest ids end up in labels, host names and nats.conf: the same rule as our own ids.
    if not _FOREST_ID.match(value):
        raise ValueError("a forest id is lowercase letters, digits and dashes (at most 63)")
    return value


def _address(value: str) -> str:
    if value == "":
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


ForestId = Annotated[str, AfterValidator(_forest_id)]
Address = Annotated[str, AfterValidator(_address)]
Moment = Annotated[datetime, AfterValidator(_utc)]


class _Legacy(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class LegacyForest(_Legacy):
    """A forest as the Go tool recorded it."""

    id: ForestId
    provider: str = Field(min_length=1)
    location: str = ""
    size: str | None = None
    node_count: int | None = Field(default=None, ge=0)
    status: str
    created_at: Moment
    last_expansion: Moment | None = None


class LegacyNode(_Legacy):
    """A node as the Go tool recorded it; ``id`` is the platform's id (a Hetzner server id)."""

    id: str = Field(min_length=1)
    ip: Address = ""
    ipv6: Address = ""
    ipv4: Address = ""
    location: str = ""
    status: str
    created_at: Moment


class LegacyRegistry(_Legacy):
    """The whole file.  Go writes a nil map as ``null``, so both maps may be null."""

    forests: dict[str, LegacyForest] | None
    nodes: dict[str, list[LegacyNode] | None] | None = None


@dataclass(frozen=True)
class PlannedForest:
    """A forest to import and its nodes, as they will be recorded."""

    forest: Forest
    nodes: tuple[Node, ...]
    legacy_status: str


@dataclass(frozen=True)
class SkippedForest:
    forest_id: str
    reason: str


@dataclass(frozen=True)
class ImportPlan:
    """What importing ``source`` would write; nothing has been written yet."""

    source: Path
    forests: tuple[PlannedForest, ...]
    skipped: tuple[SkippedForest, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class ImportResult:
    source: Path
    imported: list[PlannedForest] = field(default_factory=list)
    skipped: list[SkippedForest] = field(default_factory=list)


#: Thousands of forests fit in far less; anything larger is not the older tool's file.
LEGACY_SIZE_LIMIT = 16 << 20


def read_legacy_registry(path: Path) -> LegacyRegistry:
    """The file parsed and validated; a ``LegacyRegistryError`` names what is wrong and where."""
    try:
        # A device, a FIFO or stdin would be read for ever (``/dev/zero``) or block.
        if path.exists() and not path.is_file():
            raise LegacyRegistryError(f"{path} is not a regular file; give registry.json")
        if path.exists() and path.stat().st_size > LEGACY_SIZE_LIMIT:
            raise LegacyRegistryError(
                f"{path} is larger than {LEGACY_SIZE_LIMIT >> 20} MiB: not the older tool's "
                "registry.json"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LegacyRegistryError(
            f"{path} does not exist; give the path of the older tool's registry.json"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LegacyRegistryError(f"cannot read {path}: {exc}") from None
    return parse_legacy_registry(text, str(path))


def parse_legacy_registry(text: str, source: str) -> LegacyRegistry:
    """``text`` validated as the Go tool's registry; ``source`` names it in errors."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise LegacyRegistryError(
            f"{source}:{exc.lineno}: not JSON ({exc.msg} at column {exc.colno})"
        ) from None
    except RecursionError:
        raise LegacyRegistryError(f"{source}: the JSON is nested too deeply to read") from None
    except ValueError as exc:
        # int() refuses numbers of more than 4300 digits; no registry holds one.
        raise LegacyRegistryError(f"{source}: a value cannot be read: {exc}") from None
    try:
        return LegacyRegistry.model_validate_json(text)
    except ValidationError as exc:
        raise LegacyRegistryError(_describe(exc, source)) from None


def _describe(exc: ValidationError, source: str) -> str:
    if not exc.errors()[0]["loc"]:
        return f'{source}: the top level must be an object with "forests" and "nodes"'
    return f"{source}: {describe_validation_error(exc, drop_value_error=True)}"


def plan_import(
    path: Path,
    existing: Collection[str] = (),
    providers: Collection[str] | None = None,
) -> ImportPlan:
    """What importing the file at ``path`` would record.

    ``existing`` are the forest ids already in the registry (skipped); ``providers``, when
    given, the installed provider names (forests of any other provider are skipped).
    """
    return plan_from(read_legacy_registry(path), path, existing, providers)


def plan_from(
    legacy: LegacyRegistry,
    source: Path,
    existing: Collection[str] = (),
    providers: Collection[str] | None = None,
) -> ImportPlan:
    """The pure part of ``plan_import``."""
    forests = legacy.forests or {}
    node_lists = {key: nodes or [] for key, nodes in (legacy.nodes or {}).items()}
    planned: list[PlannedForest] = []
    skipped: list[SkippedForest] = []
    notes: list[str] = []
    for key, old in sorted(forests.items(), key=lambda item: (item[1].created_at, item[0])):
        if old.id != key:
            raise LegacyRegistryError(
                f"{source}: forests.{key}: its id is {old.id!r}; the file is inconsistent"
            )
        reason = _skip_reason(old, existing, providers)
        if reason is not None:
            skipped.append(SkippedForest(old.id, reason))
            continue
        nodes = node_lists.get(key, [])
        seen: set[str] = set()
        for old_node in nodes:
            if old_node.id in seen:
                raise LegacyRegistryError(
                    f"{source}: nodes.{key}: node {old_node.id!r} is listed twice"
                )
            seen.add(old_node.id)
        shared = _shared_address(nodes)
        if shared is not None:
            skipped.append(SkippedForest(old.id, shared))
            continue
        forest = _forest(old, len(nodes))
        if old.status != "active":
            notes.append(
                f"{old.id} was {old.status!r} in the older tool: imported as failed; "
                f"`morpheus teardown {old.id}` removes what is left of it"
            )
        planned.append(
            PlannedForest(
                forest=forest,
                nodes=tuple(_node(forest, index, n) for index, n in enumerate(nodes, start=1)),
                legacy_status=old.status,
            )
        )
    for key in sorted(set(node_lists) - set(forests)):
        if node_lists[key]:
            notes.append(f"nodes recorded for {key!r}, a forest the file does not list, are left")
    return ImportPlan(source, tuple(planned), tuple(skipped), tuple(notes))


def _shared_address(nodes: list[LegacyNode]) -> str | None:
    """Why a forest whose nodes share an address is not imported (each would be polled and
    counted twice; which record is stale only the operator can tell)."""
    owners: dict[str, str] = {}
    for node in nodes:
        for address in {a for a in (node.ip, node.ipv6, node.ipv4) if a}:
            if address in owners:
                return (
                    f"nodes {owners[address]!r} and {node.id!r} both have address {address}; "
                    "remove the stale one from the file and import again"
                )
            owners[address] = node.id
    return None


def _skip_reason(
    old: LegacyForest, existing: Collection[str], providers: Collection[str] | None
) -> str | None:
    if old.id in existing:
        return "already in the registry"
    if old.provider == "local":
        return (
            "the older tool's local forests were Docker containers, which Morpheus does not "
            "manage; remove them with docker"
        )
    if providers is not None and old.provider not in providers:
        return f"provider {old.provider!r} is not installed; install its plugin and import again"
    return None


def _size(old: LegacyForest, node_count: int) -> str:
    if old.size in ("small", "medium", "large"):
        return old.size
    if old.size in _LEGACY_SIZES:
        return _LEGACY_SIZES[old.size]
    count = old.node_count if old.node_count is not None else node_count
    return _SIZE_OF_COUNT.get(count, "custom")


def _forest(old: LegacyForest, node_count: int) -> Forest:
    # Go writes an unset time as year 1.
    last = old.last_expansion
    return Forest(
        id=old.id,
        provider=old.provider,
        size=_size(old, node_count),
        location=old.location or None,
        status=ForestStatus.ACTIVE if old.status == "active" else ForestStatus.FAILED,
        created_at=old.created_at,
        last_expansion=last if last is not None and last.year > 1 else None,
        cluster_name=old.id,
        credentials_ref=f"registry:route_credentials/{old.id}",
        run_id=IMPORTED_RUN_ID,
    )


def _node(forest: Forest, index: int, old: LegacyNode) -> Node:
    addresses = list(dict.fromkeys(a for a in (old.ip, old.ipv6, old.ipv4) if a))
    return Node(
        id=f"{forest.id}-node-{index}",
        forest_id=forest.id,
        name=f"node-{index}",
        index=index,
        provider_id=old.id,
        host=addresses[0] if addresses else None,
        addresses=addresses,
        status=NodeStatus.ACTIVE if old.status == "active" else NodeStatus.FAILED,
        location=old.location or None,
        created_at=old.created_at,
    )


def import_registry(ctx: Context, plan: ImportPlan) -> ImportResult:
    """Record every planned forest with fresh route credentials and an "imported" event.

    A forest that another run recorded since the plan was made is skipped, not duplicated.
    """
    result = ImportResult(source=plan.source, skipped=list(plan.skipped))
    for planned in plan.forests:
        node_word = "node" if len(planned.nodes) == 1 else "nodes"
        written = ctx.registry.import_forest(
            planned.forest,
            RouteCredentials.generate(),
            list(planned.nodes),
            f"imported from {plan.source} ({len(planned.nodes)} {node_word}, "
            f"status {planned.legacy_status!r} there)",
            ctx.clock(),
        )
        if written:
            result.imported.append(planned)
        else:
            result.skipped.append(SkippedForest(planned.forest.id, "already in the registry"))
    return result
