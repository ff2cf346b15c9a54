"""The provider plugin contract and its discovery through entry points.

A provider is a class registered under the entry-point group ``morpheus.providers`` by an
installed distribution, exactly as a third party would register one::

    [project.entry-points."morpheus.providers"]
    mycloud = "morpheus_mycloud.provider:MyCloudProvider"

The core never imports a provider module by name; it loads only the one it needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from morpheus.errors import MorpheusError, ProviderError, ProviderNotFoundError
from morpheus.models import Capacity, NodeState, Ports
from morpheus.provider_config import ProviderContext, resolve_table

if TYPE_CHECKING:
    from morpheus.blueprint import NodeBlueprint
    from morpheus.settings import Settings

ENTRY_POINT_GROUP = "morpheus.providers"


class NoProviderSettings(BaseModel):
    """For providers that take no ``providers.<name>`` settings."""

    model_config = ConfigDict(extra="forbid")


class Reservation(BaseModel):
    """A node's address, known before the node exists, so every peer can route to it."""

    forest_id: str
    node_id: str
    host: str
    addresses: list[str] = Field(default_factory=list)
    ports: Ports = Field(default_factory=Ports)
    provider_ref: str | None = None


class NodeHandle(BaseModel):
    """What the platform itself says about one node it runs."""

    provider_id: str
    node_id: str
    forest_id: str
    run_id: str
    index: int
    host: str | None = None
    addresses: list[str] = Field(default_factory=list)
    ports: Ports = Field(default_factory=Ports)
    capacity: Capacity | None = None
    state: NodeState
    location: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("state", mode="before")
    @classmethod
    def _known_state(cls, value: object) -> object:
        # A platform word Morpheus does not know is ``unknown``, not an error.
        return NodeState.parse(value) if isinstance(value, str) else value

    @classmethod
    def from_blueprint(
        cls,
        blueprint: NodeBlueprint,
        *,
        provider_id: str,
        state: NodeState,
        host: str | None = None,
        addresses: list[str] | None = None,
        capacity: Capacity | None = None,
        location: str | None = None,
    ) -> NodeHandle:
        """The handle of a node just created from ``blueprint``: its ids, ports and labels,
        and the address the platform gave it (the blueprint's ``host`` unless given)."""
        where = host if host is not None else blueprint.host
        return cls(
            provider_id=provider_id,
            node_id=blueprint.node_id,
            forest_id=blueprint.forest_id,
            run_id=blueprint.run_id,
            index=blueprint.index,
            host=where,
            addresses=addresses if addresses is not None else [where],
            ports=blueprint.ports,
            capacity=capacity if capacity is not None else blueprint.capacity,
            state=state,
            location=location,
            labels=dict(blueprint.labels),
        )


@dataclass(frozen=True)
class ForestPlan:
    """What a plant or grow is about to create, for the provider's pre-flight checks."""

    forest_id: str | None
    node_count: int
    blueprints: tuple[NodeBlueprint, ...] = ()
    #: ``plant --dry-run``: nothing will be created, so a provider may skip what needs an
    #: account (a cloud's catalogue) and say so in its plan lines.
    dry_run: bool = False


@dataclass(frozen=True)
class CheckResult:
    """One line of ``morpheus check``: what was checked, whether it passed, how to fix it."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    #: False for a cloud check on a machine set up for local forests only: shown, never failing.
    needed: bool = True


@dataclass(frozen=True)
class PlanLine:
    """One line of the plan a provider shows before creating anything."""

    label: str
    value: str


class Provider(ABC):
    """Turns node blueprints into running nodes, and finds and deletes what it made.

    Required: ``name``, ``from_config``, ``create_node``, ``wait_running``, ``list_nodes``,
    ``delete_node``.  Everything a provider creates carries the labels of
    ``morpheus.blueprint.labels_for`` so ``list_nodes`` can answer from the platform itself.
    """

    name: ClassVar[str]
    #: Whether planting asks before creating (machines that cost money).
    costs_money: ClassVar[bool] = True
    #: Whether ``apply_blueprint`` works (needed to grow a one-node forest).
    can_reconfigure: ClassVar[bool] = False
    #: Whether this machine can open NATS client connections to the nodes (JetStream
    #: changes after growth need it); cloud nodes serve clients on localhost only.
    reaches_client_port: ClassVar[bool] = False
    #: The model of this provider's ``providers.<name>`` config table.
    settings_model: ClassVar[type[BaseModel]] = NoProviderSettings
    #: Whether nodes boot from the core's cloud-init user-data (``morpheus.render``); plant
    #: and grow then check the download sources and the user-data size before any API call.
    renders_user_data: ClassVar[bool] = False
    #: The setting that gives nodes IPv4, named when an IPv6-only node cannot reach a host.
    ipv4_setting: ClassVar[str | None] = None

    #: Environment variables that fill a key of this provider's table, first set wins (e.g.
    #: ``{"token": ("HCLOUD_TOKEN",)}``); ``MORPHEUS_PROVIDERS__<NAME>__<KEY>`` outranks them.
    environment: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    @classmethod
    @abstractmethod
    def from_config(cls, config: Any, context: ProviderContext) -> Self:
        """Build the provider from its own validated table (an instance of ``settings_model``)
        and the core's context: all a provider gets to know of the configuration."""

    @classmethod
    def from_settings(cls, settings: Settings, state_dir: Path) -> Self:
        """The provider as configured: its table validated, the context built (core use)."""
        return cls.from_config(
            cls.provider_settings(settings), ProviderContext.from_settings(settings, state_dir)
        )

    @classmethod
    def provider_settings(cls, settings: Settings) -> BaseModel:
        """This provider's validated ``providers.<name>`` table."""
        return resolve_table(cls, settings).values

    @classmethod
    def environment_value(cls, key: str, variable: str, value: str) -> object:
        """A value read from one of ``environment``'s variables, checked for ``key``; raise
        ``ConfigError`` naming ``variable`` when it cannot be used."""
        return value

    def preflight(self, plan: ForestPlan) -> None:  # noqa: B027 - optional hook
        """Check everything that can be checked before anything is created; raise early.

        Raise ``PreflightError`` with a message that says how to fix the problem.
        """

    def ipv6_only(self) -> bool:
        """Whether the nodes have no IPv4 route (an IPv4-only download host is unreachable)."""
        return False

    def plan_lines(self, plan: ForestPlan) -> list[PlanLine]:
        """Lines describing what ``plan`` will create (type, location, monthly cost...)."""
        return []

    @abstractmethod
    def reserve_addresses(
        self, forest_id: str, run_id: str, node_ids: list[str]
    ) -> list[Reservation]:
        """Fix every new node's address before any boots, so each gets the full route mesh."""

    def blueprint_fields(self, reservation: Reservation) -> dict[str, object]:
        """Platform-specific blueprint values (listen addresses, store dir, JetStream limits)."""
        return {}

    @abstractmethod
    def create_node(self, blueprint: NodeBlueprint) -> NodeHandle:
        """Start creating the node; return at once with its addresses."""

    @abstractmethod
    def wait_running(self, handle: NodeHandle, deadline: float) -> NodeHandle:
        """Wait (until ``time.monotonic()`` reaches ``deadline``) for the platform to run it.

        NATS readiness is checked by the core afterwards, the same way for every provider.
        """

    def boot_failure(self, handle: NodeHandle) -> str | None:
        """Why the node's first boot failed, as the node itself reported it; else ``None``.

        Called every few seconds while the core waits for NATS on a new node, so a failed
        bootstrap ends the wait at once with its cause instead of at the readiness deadline.
        Must be cheap and must not raise for a node that is merely slow.  The default knows
        nothing; ``morpheus.boot_report.failure_in_console`` reads the bootstrap's failure
        line from a console log.
        """
        return None

    @abstractmethod
    def list_nodes(self, forest_id: str) -> list[NodeHandle]:
        """The forest's nodes as the platform sees them (found by labels, not the registry)."""

    @abstractmethod
    def delete_node(self, handle: NodeHandle) -> None:
        """Delete the node and what belongs only to it; deleting a deleted node is no error."""

    def delete_nodes(
        self,
        handles: Sequence[NodeHandle],
        done: Callable[[NodeHandle, MorpheusError | None], None],
    ) -> None:
        """Delete several nodes of one forest, calling ``done(handle, error)`` for each (on
        the calling thread) as it is deleted or fails.

        One at a time through ``delete_node`` unless the provider does better: a cloud deletes
        them in parallel and does forest-wide work (a firewall rule) once.
        """
        for handle in handles:
            try:
                self.delete_node(handle)
            except MorpheusError as exc:
                done(handle, exc)
            else:
                done(handle, None)

    def checks(self) -> list[CheckResult]:
        """``morpheus check`` lines for this provider (token works, SSH key matches...)."""
        return []

    def status_notes(self) -> list[str]:
        """Plain sentences ``morpheus status`` shows about this provider's nodes."""
        return []

    def forest_ids(self) -> list[str]:
        """Ids of every forest this provider has nodes of, found by labels, not the registry.

        ``morpheus registry rebuild`` asks it; the default (a provider that cannot list
        everything it made) finds none.
        """
        return []

    def delete_forest_resources(self, forest_id: str) -> None:  # noqa: B027 - optional hook
        """Delete forest-wide things (firewalls, placement groups, reserved addresses)."""

    def apply_blueprint(self, handle: NodeHandle, blueprint: NodeBlueprint) -> None:
        """Reconfigure a live node: grow (a standalone node joining a cluster, new routes),
        ``reconcile`` and ``rotate`` (new route password and certificate) all come here.

        Write the node's ``nats.conf``, its route TLS files and (cloud nodes) its node
        firewall's route peers as a whole (``morpheus.render.reconfigured_files``), load the
        route peers (``NODE_PATHS.load_route_peers()``: one nft transaction), then reload
        nats-server when only the route list changed, else restart it; keep the JetStream
        store.  A node that cannot be reached must keep its previous files and raise a
        ``MorpheusError`` naming why, within a deadline: ``services.converge`` reports and
        records it.  After a plant in which a node moved, it is called once every node's
        NATS monitoring answers (its first boot is done), before the forest is healthy.
        Several nodes are reconfigured at once, from worker threads.  Return once the
        change is applied: the caller waits for NATS readiness through the monitoring port,
        the same for every provider.
        """
        raise ProviderError(f"the {self.name} provider cannot reconfigure a running node")


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    distribution: str
    version: str
    target: str


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def installed_providers() -> list[ProviderInfo]:
    """Every provider plugin installed, without importing any of them."""
    infos = []
    for name, ep in sorted(_entry_points().items()):
        dist = ep.dist
        infos.append(
            ProviderInfo(
                name=name,
                distribution=dist.name if dist else "?",
                version=dist.version if dist else "?",
                target=ep.value,
            )
        )
    return infos


def load_provider_class(name: str) -> type[Provider]:
    """Import only the named provider; an unknown name lists what is installed."""
    available = _entry_points()
    if name not in available:
        names = sorted(available)
        close = get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        listed = ", ".join(names) if names else "none"
        raise ProviderNotFoundError(f"no provider named {name!r}; {hint}installed: {listed}")
    try:
        cls = available[name].load()
    except ImportError as exc:
        raise ProviderError(
            f"provider {name!r} is installed but cannot be imported: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ProviderError(f"entry point {name!r} does not name a morpheus Provider class")
    return cls
