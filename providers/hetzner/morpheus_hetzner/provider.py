"""The Hetzner Cloud provider: forests of IPv6-only servers, created in parallel.

How a plant goes, and what each step costs in API requests:

- ``preflight``: token, server type (prices and per-location availability), image, SSH key,
  user-data size and labels; three requests, nothing created.
- ``reserve_addresses``: the SSH key (uploaded when missing), one spread placement group per
  forest, an IPv6 primary IP per node (``auto_delete``; IPv4 too with ``enable_ipv4``),
  created in parallel so every node's ``<prefix>::1`` is known before any boots, then one
  firewall per forest applied by label selector. A grow looks the key, group and firewall
  up (one ``GET`` each); a plant creates the new forest's at once.
- ``create_node``: renders the user-data at once and hands the ``POST /servers`` to a bounded
  pool of worker threads (one hcloud client each, a random start jitter), then returns.
- ``wait_running``: waits for that create and for its actions; all running actions of the
  provider are polled in one batched request with backoff.
- ``delete_nodes`` (teardown, rollback): one listing of the forest, every ``DELETE`` at once,
  one wait for all their actions, the firewall's route rule written once.

Every request waits for a token of the project's budget (``limits.RateBudget``); read-only
looks give up within ``read_timeout`` (``limits.ReadBound``).

Everything carries the labels of ``morpheus.blueprint.labels_for`` and a name derived from
the forest or node id, so a create whose answer was lost is adopted by name (never made
twice), and ``list_nodes``/``delete_forest_resources`` find everything by label.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar, Self

from pydantic import BaseModel

from morpheus.blueprint import NodeBlueprint
from morpheus.errors import MorpheusError
from morpheus.models import NodeState, Ports
from morpheus.provider import (
    CheckResult,
    ForestPlan,
    NodeHandle,
    PlanLine,
    Reservation,
)
from morpheus.provider_config import ProviderContext
from morpheus.reconfigure import ReconfiguredOverSsh
from morpheus.render import render_user_data
from morpheus.validation import validate_token
from morpheus_hetzner.actions import ActionWatcher
from morpheus_hetzner.addresses import Addresses
from morpheus_hetzner.api import HetznerApi, HetznerError
from morpheus_hetzner.catalogue import Catalogue
from morpheus_hetzner.firewall import Firewalls, admin_sources, ssh_access
from morpheus_hetzner.network import detect_admin_sources
from morpheus_hetzner.placement import PlacementGroups
from morpheus_hetzner.preflight import Preflight
from morpheus_hetzner.servers import Servers
from morpheus_hetzner.settings import (
    DEFAULT_ENDPOINT,
    TOKEN_VARIABLES,
    HetznerSettings,
    resolve_endpoint,
)
from morpheus_hetzner.ssh_keys import ProjectKey
from morpheus_hetzner.workers import Workers


class HetznerProvider(ReconfiguredOverSsh):
    """Forests on Hetzner Cloud through the hcloud library.

    A facade: each concern is a module that takes the API object (``catalogue``,
    ``ssh_keys``, ``addresses``, ``placement``, ``firewall``, ``servers``, ``preflight``);
    this class wires them together and answers the provider contract.
    """

    name: ClassVar[str] = "hetzner"
    costs_money: ClassVar[bool] = True
    settings_model: ClassVar[type[BaseModel]] = HetznerSettings
    ipv4_setting: ClassVar[str | None] = "providers.hetzner.enable_ipv4: true"
    environment: ClassVar[Mapping[str, tuple[str, ...]]] = {"token": TOKEN_VARIABLES}

    def __init__(
        self,
        config: HetznerSettings,
        context: ProviderContext,
        *,
        endpoint: str,
        detect_admin: Callable[..., list[str]] = detect_admin_sources,
    ) -> None:
        self.config = config
        self.context = context
        self.api = HetznerApi(config.token, endpoint, config)
        self.actions = ActionWatcher(self.api)
        self._detect_admin = detect_admin
        self._admin_sources: list[str] | None = None
        self._planting = False  # a plant's pre-flight ran: the next reservation is a new forest
        self.catalogue = Catalogue(
            self.api, server_type=config.server_type, locations=config.locations, image=config.image
        )
        self.key = ProjectKey(self.api, name=config.ssh_key_name, key_path=context.ssh_key_path)
        self.addresses = Addresses(self.api, enable_ipv4=config.enable_ipv4)
        self.placement = PlacementGroups(self.api)
        self.firewalls = Firewalls(
            self.api,
            self.actions,
            self.addresses,
            ssh_port=context.ssh_port,
            delete_timeout=config.delete_timeout,
        )
        self.workers = Workers(config.create_concurrency)
        self.servers = Servers(
            self.api,
            self.actions,
            catalogue=self.catalogue,
            addresses=self.addresses,
            firewalls=self.firewalls,
            key=self.key,
            placement=self.placement,
            workers=self.workers,
            config=config,
        )
        self._preflight = Preflight(
            self.api,
            config=config,
            blueprint_defaults=context.blueprint_defaults,
            catalogue=self.catalogue,
            key=self.key,
            admin_sources=self.admin_sources,
            node_fields=self._node_fields,
        )

    @classmethod
    def from_config(cls, config: HetznerSettings, context: ProviderContext) -> Self:
        return cls(config, context, endpoint=resolve_endpoint(config.endpoint))

    @classmethod
    def environment_value(cls, key: str, variable: str, value: str) -> object:
        return validate_token(value, variable) if key == "token" else value

    def close(self) -> None:
        """Let running creates finish, then close the worker threads and HTTP sessions."""
        self.workers.shutdown()
        self.api.close()

    # pre-flight and plan --------------------------------------------------------------

    def preflight(self, plan: ForestPlan) -> None:
        self._preflight.check(plan)
        self._planting = plan.forest_id is None and not plan.dry_run

    def ipv6_only(self) -> bool:
        return not self.config.enable_ipv4

    def plan_lines(self, plan: ForestPlan) -> list[PlanLine]:
        with self.api.reads.within(self.config.read_timeout):
            return self._preflight.plan_lines(plan)

    def checks(self) -> list[CheckResult]:
        """Token, server type, image, SSH key, admin sources and whether they admit this
        machine to the nodes' SSH port, each on its own line."""
        with self.api.reads.within(self.config.read_timeout):
            results = self._preflight.checks()
        access = ssh_access(
            self.context.admin_sources, self.admin_sources, port=self.context.ssh_port
        )
        if any(r.name == "hetzner admin sources" and not r.ok for r in results):
            # The line above says why; the same sentence twice would say nothing more.
            access = CheckResult(access.name, False, "not known until the admin sources are")
        return [*results, access]

    def status_notes(self) -> list[str]:
        config = self.config
        notes = [
            f"Hetzner: {'IPv6 + IPv4' if config.enable_ipv4 else 'IPv6-only'} "
            f"{config.server_type} servers; SSH as root with the key {config.ssh_key_name!r}",
        ]
        if self.api.endpoint != DEFAULT_ENDPOINT:
            notes.append(f"Hetzner API endpoint: {self.api.endpoint}")
        return notes

    def admin_sources(self) -> list[str]:
        """Who may reach SSH and NATS monitoring: ``infrastructure.admin_sources``, else this
        machine's public IPv6 network (and IPv4 address when nodes get IPv4)."""
        if self._admin_sources is None:
            self._admin_sources = admin_sources(
                list(self.context.admin_sources),
                enable_ipv4=self.config.enable_ipv4,
                prefix_v6=self.config.admin_prefix_v6,
                detect=self._detect_admin,
            )
        return self._admin_sources

    def _node_fields(self) -> dict[str, Any]:
        return {
            # Without a token (a dry run) the machine's size is unknown: JetStream limits
            # are then checked against it when the forest is planted.
            "capacity": self.catalogue.server_type().capacity if self.api.has_token else None,
            "admin_sources": tuple(self.admin_sources()),
            "ssh_port": self.context.ssh_port,
            "host_firewall": True,
            # A provider that reconfigures nodes rewrites each node's route peers whenever
            # the forest changes, so they name exactly the forest's nodes.  Until then a
            # booted node's own rules cannot follow growth and moves: they admit routes from
            # anywhere and rely on the cloud firewall (which follows) plus route TLS and auth.
            "route_sources": ()
            if self.can_reconfigure
            else ("::/0", "0.0.0.0/0")
            if self.config.enable_ipv4
            else ("::/0",),
        }

    # reservation and create -------------------------------------------------------------

    def reserve_addresses(
        self, forest_id: str, run_id: str, node_ids: list[str]
    ) -> list[Reservation]:
        location = self.catalogue.usable_locations(self.catalogue.server_type())[0]
        # A plant's forest is new: its group and firewall are created without a look-up
        # first (a grow looks them up; either way a 409 adopts what another run made).
        new, self._planting = self._planting, False
        self.key.ensure()
        self.placement.ensure(forest_id, run_id, look_up=not new)
        slots = self.workers.run_all(
            [
                partial(self.addresses.reserve, forest_id, run_id, node_id, location)
                for node_id in node_ids
            ]
        )
        self.firewalls.ensure(
            forest_id,
            run_id,
            [n for s in slots for n in s.networks],
            self.admin_sources(),
            look_up=not new,
        )
        return [
            Reservation(
                forest_id=forest_id,
                node_id=node_id,
                host=slot.host,
                addresses=slot.addresses,
                ports=Ports(),
                provider_ref=str(slot.ipv6.id),
            )
            for node_id, slot in zip(node_ids, slots, strict=True)
        ]

    def blueprint_fields(self, reservation: Reservation) -> dict[str, object]:
        return self._node_fields()

    def create_node(self, blueprint: NodeBlueprint) -> NodeHandle:
        slot = self.addresses.slot_of(blueprint)
        user_data = render_user_data(blueprint, now=blueprint.rendered_at or datetime.now(UTC))
        self.servers.start_create(blueprint, slot, user_data)
        return NodeHandle.from_blueprint(
            blueprint,
            provider_id=blueprint.node_id,
            state=NodeState.CREATING,
            host=slot.host,
            addresses=slot.addresses,
            capacity=self.catalogue.server_type().capacity,
            location=slot.location,
        )

    def wait_running(self, handle: NodeHandle, deadline: float) -> NodeHandle:
        created = self.servers.wait_created(handle, deadline)
        self.actions.wait(
            [*created.action_ids, *self.firewalls.pending_actions(handle.forest_id)],
            deadline,
            f"creating {handle.node_id}",
        )
        if created.adopted:
            self.servers.wait_status(created.server_id, handle.node_id, deadline)
        return handle.model_copy(
            update={
                "state": NodeState.RUNNING,
                "host": created.slot.host,
                "addresses": created.slot.addresses,
                "location": created.slot.location,
            }
        )

    # list and delete ----------------------------------------------------------------------

    def list_nodes(self, forest_id: str) -> list[NodeHandle]:
        self.servers.settle(forest_id)
        # Read-only commands (status, list --refresh, previews) answer within read_timeout
        # even when the API hangs; a teardown that cannot list is refused, changing nothing.
        with self.api.reads.within(self.config.read_timeout):
            return self.servers.handles(forest_id)

    def forest_ids(self) -> list[str]:
        return self.servers.forest_ids()

    def delete_node(self, handle: NodeHandle) -> None:
        failed: list[MorpheusError] = []
        self.delete_nodes([handle], lambda _, error: failed.extend([error] if error else []))
        if failed:
            raise failed[0]

    def delete_nodes(
        self,
        handles: Sequence[NodeHandle],
        done: Callable[[NodeHandle, MorpheusError | None], None],
    ) -> None:
        """Delete servers in parallel, then, once for the batch, release the addresses no
        server took (``auto_delete`` covers the others) and narrow the route rule."""
        by_forest: dict[str, list[NodeHandle]] = {}
        for handle in handles:
            by_forest.setdefault(handle.forest_id, []).append(handle)
        for forest_id, batch in by_forest.items():
            failed: dict[str, MorpheusError] = dict(self.servers.delete(forest_id, batch))
            try:
                addresses = self.addresses.of_forest(forest_id)
                gone = {h.node_id for h in batch if h.node_id not in failed}
                for node_id in sorted(gone):
                    try:
                        self.addresses.release(
                            a for a in addresses if a.labels.get("node") == node_id
                        )
                    except HetznerError as exc:
                        failed[node_id] = exc
                    self.addresses.forget(node_id)
                kept = [a.network for a in addresses if a.labels.get("node") not in gone]
                self.firewalls.refresh(forest_id, kept)
            except HetznerError as exc:  # the route rule still names them: not done
                failed.update({h.node_id: exc for h in batch if h.node_id not in failed})
            for handle in batch:
                done(handle, failed.get(handle.node_id))

    def delete_forest_resources(self, forest_id: str) -> None:
        self.servers.settle(forest_id, cancel=True)
        left = self.servers.of_forest(forest_id)
        if left:
            # Their firewall stays on while they live.
            names = ", ".join(sorted(str(s.data_model.name) for s in left))
            raise HetznerError(
                f"the firewall, placement group and addresses of {forest_id} are kept while "
                f"its servers still exist: {names}",
                code="resource_in_use",
            )
        failed = self.firewalls.delete_all(forest_id)
        failed += self.placement.delete_all(forest_id)
        try:
            self.addresses.release(self.addresses.of_forest(forest_id))
        except HetznerError as exc:
            failed.append(str(exc))
        self.firewalls.forget(forest_id)
        if failed:
            raise HetznerError(f"could not delete {'; '.join(failed)}", code="incomplete")
