"""The Hetzner Cloud provider: forests of IPv6-only servers, created in parallel.

How a plant goes, and what each step costs in API requests:

- ``preflight``: token, server type (prices and per-location availability), image, SSH key,
  user-data size and labels; three requests, nothing created.
- ``reserve_addresses``: the SSH key (uploaded when missing), one spread placement group per
  forest, an IPv6 primary IP per node (``auto_delete``; IPv4 too with ``enable_ipv4``),
  created in parallel so every node's ``<prefix>::1`` is known before any boots, then one
  firewall per forest applied by label selector.
- ``create_node``: renders the user-data at once and hands the ``POST /servers`` to a bounded
  pool of worker threads (one hcloud client each, a random start jitter), then returns.
- ``wait_running``: waits for that create and for its actions; all running actions of the
  provider are polled in one batched request with backoff.

Everything carries the labels of ``morpheus.blueprint.labels_for`` and a name derived from
the forest or node id, so a create whose answer was lost is adopted by name (never made
twice), and ``list_nodes``/``delete_forest_resources`` find everything by label.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from difflib import get_close_matches
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

import hcloud
from hcloud.actions import BoundAction
from hcloud.firewalls import (
    Firewall,
    FirewallResource,
    FirewallResourceLabelSelector,
    FirewallRule,
)
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.placement_groups import PlacementGroup
from hcloud.primary_ips import PrimaryIP
from hcloud.server_types import ServerType
from hcloud.servers import (
    BoundServer,
    CreateServerResponse,
    Server,
    ServerCreatePublicNetwork,
)
from hcloud.ssh_keys import SSHKey
from pydantic import BaseModel, SecretStr

from morpheus.blueprint import (
    NatsInstall,
    NimsForestApp,
    NodeBlueprint,
    Peer,
    RouteCredentials,
    build_blueprint,
    labels_for,
)
from morpheus.errors import ConfigError, MorpheusError, NatsReleaseError, TemplateInputError
from morpheus.models import Ports
from morpheus.provider import (
    CheckResult,
    ForestPlan,
    NodeHandle,
    PlanLine,
    Provider,
    Reservation,
)
from morpheus.render import render_user_data
from morpheus_hetzner.actions import ActionWatcher
from morpheus_hetzner.api import (
    NO_AUTH_MESSAGE,
    HetznerApi,
    HetznerError,
    HetznerPreflightError,
    LostResponseError,
    preflight_error,
)
from morpheus_hetzner.network import (
    detect_admin_sources,
    firewall_rules,
    label_problems,
    rule_key,
    valid_server_name,
    with_forest_routes,
)
from morpheus_hetzner.resources import (
    PrimaryAddress,
    ServerTypeInfo,
    Slot,
    handle_of,
    server_type_info,
    slot_of_server,
)
from morpheus_hetzner.settings import DEFAULT_ENDPOINT, HetznerSettings, resolve_endpoint
from morpheus_hetzner.ssh_keys import fingerprint, public_key_candidates, read_public_key

if TYPE_CHECKING:
    from morpheus.settings import Settings

T = TypeVar("T")
#: How long a server type's availability, read in the pre-flight, is trusted when reserving.
_CATALOG_TTL = 60.0
_SAMPLE_FOREST = "forest-9999999999-99"
_SAMPLE_RUN = "run-ffffffff"


@dataclass(frozen=True)
class Created:
    """A server the API accepted (or one found by name after a lost answer)."""

    server_id: int
    action_ids: tuple[int, ...]
    slot: Slot
    adopted: bool = False


@dataclass
class PendingCreate:
    forest_id: str
    future: Future[Created]
    cancelled: threading.Event = field(default_factory=threading.Event)


class HetznerProvider(Provider):
    """Forests on Hetzner Cloud through the hcloud library."""

    name: ClassVar[str] = "hetzner"
    costs_money: ClassVar[bool] = True
    can_reconfigure: ClassVar[bool] = False
    settings_model: ClassVar[type[BaseModel]] = HetznerSettings
    renders_user_data: ClassVar[bool] = True
    ipv4_setting: ClassVar[str | None] = "infrastructure.enable_ipv4: true"

    def __init__(
        self,
        settings: Settings,
        config: HetznerSettings,
        *,
        token: SecretStr | None,
        endpoint: str,
        detect_admin: Callable[..., list[str]] = detect_admin_sources,
    ) -> None:
        self.settings = settings
        self.config = config
        self.api = HetznerApi(token, endpoint, config)
        self.actions = ActionWatcher(self.api)
        self._detect_admin = detect_admin
        self._lock = threading.Lock()
        self._firewall_locks: dict[str, threading.Lock] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._pending: dict[str, PendingCreate] = {}
        self._slots: dict[str, Slot] = {}
        self._forest_actions: dict[str, list[int]] = {}
        self._placement_groups: dict[str, int] = {}
        self._server_type: ServerTypeInfo | None = None
        self._server_type_at = 0.0
        self._image_id: int | None = None
        self._ssh_key_id: int | None = None
        self._public_key: tuple[Path, str] | None = None
        self._admin_sources: list[str] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, state_dir: Path) -> Self:
        config = cls.provider_settings(settings)
        assert isinstance(config, HetznerSettings)
        return cls(
            settings,
            config,
            token=settings.secrets.hetzner_api_token,
            endpoint=resolve_endpoint(config.endpoint),
        )

    def close(self) -> None:
        """Let running creates finish, then close the worker threads and HTTP sessions."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.api.close()

    # pre-flight and plan --------------------------------------------------------------

    def preflight(self, plan: ForestPlan) -> None:
        if not self.api.has_token:
            raise HetznerPreflightError(NO_AUTH_MESSAGE, code="no_token")
        problems = self._naming_problems(plan)
        if problems:
            raise HetznerPreflightError(
                "; ".join(problems) + "; the forest cannot be labelled", code="invalid_input"
            )
        self.admin_sources()
        try:
            server_type = self._load_server_type()
            self._usable_locations(server_type)
            self._image(server_type)
            self._check_ssh_key()
        except HetznerPreflightError:
            raise
        except HetznerError as exc:
            raise preflight_error(exc) from exc
        self._check_user_data(plan)

    def ipv6_only(self) -> bool:
        return not self.settings.infrastructure.enable_ipv4

    def plan_lines(self, plan: ForestPlan) -> list[PlanLine]:
        infra = self.settings.infrastructure
        server_type = self._server_type_info()
        usable = self._usable_locations(server_type)
        location, later = usable[0], usable[1:]
        count = plan.node_count
        lines = []
        if self.api.endpoint != DEFAULT_ENDPOINT:
            lines.append(PlanLine("API endpoint", self.api.endpoint))
        lines += [
            PlanLine(
                "server type",
                f"{server_type.name}: {server_type.cores} vCPU, {server_type.memory_gb:g} GB RAM, "
                f"{server_type.disk_gb} GB disk ({server_type.architecture})",
            ),
            PlanLine("image", infra.image),
            PlanLine(
                "location",
                location + (f" (then {', '.join(later)} if out of capacity)" if later else ""),
            ),
            PlanLine(
                "network",
                "IPv6 + IPv4 (primary IPv4 addresses are billed extra)"
                if infra.enable_ipv4
                else "IPv6 only: a /64 per node, the node at <prefix>::1",
            ),
            PlanLine(
                "firewall",
                f"SSH and NATS monitoring from {', '.join(self.admin_sources())}; "
                "NATS routes from the forest's own addresses; nothing else",
            ),
            PlanLine("SSH key", self._ssh_key_words()),
        ]
        price = server_type.monthly.get(location)
        if price is not None:
            net, gross = price
            lines.append(
                PlanLine(
                    "cost",
                    f"{count} x EUR {net:.2f} = EUR {net * count:.2f} per month "
                    f"(EUR {gross * count:.2f} incl. VAT), Hetzner's price for {location}",
                )
            )
        if count > 10:
            lines.append(
                PlanLine("placement", "10 servers spread on distinct hosts; the rest are not")
            )
        return lines

    def _naming_problems(self, plan: ForestPlan) -> list[str]:
        forest = plan.forest_id or _SAMPLE_FOREST
        last_node = f"{forest}-node-{max(plan.node_count, 1)}"
        problems = label_problems(labels_for(forest, last_node, _SAMPLE_RUN))
        if not valid_server_name(last_node):
            problems.append(f"{last_node!r} is not a valid Hetzner server name")
        return problems

    def _check_user_data(self, plan: ForestPlan) -> None:
        blueprints = plan.blueprints or (self._sample_blueprint(plan),)
        for blueprint in blueprints:
            try:
                render_user_data(blueprint, now=blueprint.rendered_at or datetime.now(UTC))
            except (TemplateInputError, NatsReleaseError) as exc:
                raise HetznerPreflightError(
                    f"the user-data for {blueprint.node_id} cannot be sent to Hetzner: {exc}",
                    code="user_data",
                ) from exc

    def _sample_blueprint(self, plan: ForestPlan) -> NodeBlueprint:
        """The largest blueprint this plan renders: the last node, routes to every peer."""
        count = max(plan.node_count, 1)
        forest = plan.forest_id or _SAMPLE_FOREST
        node_id = f"{forest}-node-{count}"
        peers = tuple(Peer(host=f"2a01:4f8:ffff:{0xF000 + i:x}::1") for i in range(1, count + 1))
        integration = self.settings.integration
        nimsforest = None
        if integration.nimsforest_install:
            nimsforest = NimsForestApp(
                download_url=integration.nimsforest_download_url,
                sha256=integration.nimsforest_sha256,
                registry_url=integration.registry_url,
                callback_url=integration.callback_url,
            )
        try:
            return build_blueprint(
                forest_id=forest,
                run_id=_SAMPLE_RUN,
                node_id=node_id,
                node_name=f"node-{count}",
                index=count,
                cluster_name=forest,
                host=peers[-1].host,
                peers=peers,
                credentials=RouteCredentials.generate(),
                jetstream={
                    "max_memory": integration.jetstream_max_memory,
                    "max_file": integration.jetstream_max_file,
                },
                nats=NatsInstall(
                    version=integration.nats_version,
                    download_url=integration.nats_download_url,
                    sha256=integration.nats_sha256,
                ),
                nimsforest=nimsforest,
                labels=labels_for(forest, node_id, _SAMPLE_RUN),
                **self._node_fields(),
            )
        except TemplateInputError as exc:
            raise HetznerPreflightError(str(exc), code="invalid_input") from exc

    # catalog ---------------------------------------------------------------------------

    def _server_type_info(self) -> ServerTypeInfo:
        """The configured server type, re-read when the pre-flight's copy is old."""
        fresh = time.monotonic() - self._server_type_at < _CATALOG_TTL
        if self._server_type is not None and fresh:
            return self._server_type
        return self._load_server_type()

    def _load_server_type(self) -> ServerTypeInfo:
        wanted = self.settings.infrastructure.server_type
        bound = self.api.call(
            f"looking up server type {wanted}", lambda c: c.server_types.get_by_name(wanted)
        )
        if bound is None:
            names = self.api.call(
                "listing server types",
                lambda c: [str(t.data_model.name) for t in c.server_types.get_all()],
            )
            close = get_close_matches(wanted, names, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise HetznerPreflightError(
                f"server type {wanted!r} does not exist{hint}; set infrastructure.server_type "
                "to one `hcloud server-type list` shows",
                code="not_found",
            )
        info = server_type_info(bound.data_model)
        self._server_type, self._server_type_at = info, time.monotonic()
        return info

    def _usable_locations(self, server_type: ServerTypeInfo) -> list[str]:
        """Configured locations where the type can be ordered now, in configured order;
        none raises, saying why for each location."""
        usable, reasons = [], []
        for location in self.settings.infrastructure.locations:
            offer = server_type.offers.get(location)
            if offer is None:
                reasons.append(f"not offered in {location}")
            elif offer.deprecated:
                after = offer.unavailable_after
                until = f", orderable until {after:%Y-%m-%d}" if after else ""
                reasons.append(f"deprecated in {location}{until}")
            elif not offer.available:
                reasons.append(f"out of capacity in {location}")
            else:
                usable.append(location)
        if not usable:
            offered = sorted(
                loc for loc, o in server_type.offers.items() if o.available and not o.deprecated
            )
            elsewhere = f"; available in: {', '.join(offered)}" if offered else ""
            raise HetznerPreflightError(
                f"server type {server_type.name} cannot be ordered: {'; '.join(reasons)}"
                f"{elsewhere}; change infrastructure.server_type or infrastructure.locations",
                code="resource_unavailable",
            )
        return usable

    def _image(self, server_type: ServerTypeInfo) -> int:
        if self._image_id is not None:
            return self._image_id
        name, arch = self.settings.infrastructure.image, server_type.architecture
        image = self.api.call(
            f"looking up image {name}",
            lambda c: c.images.get_by_name_and_architecture(name, arch),
        )
        if image is None:
            raise HetznerPreflightError(
                f"image {name!r} does not exist for {arch} servers like {server_type.name}; "
                "set infrastructure.image to one `hcloud image list --type system` shows",
                code="not_found",
            )
        self._image_id = _ident(image.data_model.id)
        return self._image_id

    # SSH key and admin sources --------------------------------------------------------

    def _check_ssh_key(self) -> None:
        name = self.settings.infrastructure.ssh.key_name
        key = self.api.call(f"looking up SSH key {name}", lambda c: c.ssh_keys.get_by_name(name))
        if key is not None:
            self._ssh_key_id = _ident(key.data_model.id)
        else:
            self._local_public_key()

    def _ssh_key_words(self) -> str:
        name = self.settings.infrastructure.ssh.key_name
        if self._ssh_key_id is not None:
            return f"{name} (in the project)"
        path, _ = self._local_public_key()
        return f"{name} (uploading {path})"

    def _local_public_key(self) -> tuple[Path, str]:
        """The public key to upload when the project has none by the configured name."""
        if self._public_key is not None:
            return self._public_key
        ssh = self.settings.infrastructure.ssh
        candidates = public_key_candidates(ssh.key_path, Path.home())
        found = read_public_key(candidates)
        if found is None:
            tried = ", ".join(str(c) for c in candidates)
            raise HetznerPreflightError(
                f"no SSH key named {ssh.key_name!r} in the Hetzner project and no public key "
                f"to upload ({tried}); create one with `ssh-keygen -t ed25519` or set "
                "infrastructure.ssh.key_path / infrastructure.ssh.key_name",
                code="ssh_key",
            )
        self._public_key = found
        return found

    def _ensure_ssh_key(self) -> int:
        """The SSH key's id, uploading the local public key when the project has none.

        Uploading is tried first (the pre-flight already looked the name up); a
        ``uniqueness_error`` means the key is there, uploaded by another plant or earlier
        under another name, and that one is used.
        """
        with self._lock:
            if self._ssh_key_id is not None:
                return self._ssh_key_id
        name = self.settings.infrastructure.ssh.key_name
        _, public_key = self._local_public_key()

        def find() -> int | None:
            key = self.api.call(
                f"looking up SSH key {name}", lambda c: c.ssh_keys.get_by_name(name)
            )
            digest = fingerprint(public_key)
            if key is None and digest is not None:
                key = self.api.call(
                    "looking up SSH key by fingerprint",
                    lambda c: c.ssh_keys.get_by_fingerprint(digest),
                )
            return None if key is None else _ident(key.data_model.id)

        found = self._create_or_adopt(
            f"uploading SSH key {name}",
            lambda c: _ident(
                c.ssh_keys.create(
                    name=name, public_key=public_key, labels={"managed-by": "morpheus"}
                ).data_model.id
            ),
            find,
        )
        with self._lock:
            self._ssh_key_id = found
        return found

    def admin_sources(self) -> list[str]:
        """Who may reach SSH and NATS monitoring: ``infrastructure.admin_sources``, else this
        machine's public IPv6 network (and IPv4 address when nodes get IPv4)."""
        if self._admin_sources is not None:
            return self._admin_sources
        infra = self.settings.infrastructure
        if infra.admin_sources:
            sources = []
            for source in infra.admin_sources:
                try:
                    sources.append(_network(source))
                except ValueError:
                    raise ConfigError(
                        f"infrastructure.admin_sources: {source!r} is not an IP address or "
                        "CIDR network"
                    ) from None
        else:
            sources = self._detect_admin(
                ipv4=infra.enable_ipv4, prefix_v6=self.config.admin_prefix_v6
            )
            if not sources:
                raise HetznerPreflightError(
                    "cannot tell which public address this machine reaches the forest from: it "
                    "has no global IPv6 address"
                    + (" and its IPv4 address is private or missing" if infra.enable_ipv4 else "")
                    + " (nodes are IPv6-only unless infrastructure.enable_ipv4 is set); set "
                    "infrastructure.admin_sources to the networks that may reach SSH and NATS "
                    'monitoring, e.g. ["2001:db8:1:2::/64", "203.0.113.7/32"]',
                    code="admin_sources",
                )
        self._admin_sources = sorted(set(sources))
        return self._admin_sources

    def _node_fields(self) -> dict[str, Any]:
        return {
            "capacity": self._server_type_info().capacity,
            "admin_sources": tuple(self.admin_sources()),
            "ssh_port": self.settings.provisioning.ssh_port,
            "host_firewall": True,
            # Routes are narrowed by the forest's cloud firewall, which follows growth and
            # moves; a booted node's own rules cannot follow them (no apply_blueprint here),
            # so they admit route traffic from anywhere and rely on it plus route auth.
            "route_sources": ("::/0", "0.0.0.0/0")
            if self.settings.infrastructure.enable_ipv4
            else ("::/0",),
        }

    # reservation -------------------------------------------------------------------------

    def reserve_addresses(
        self, forest_id: str, run_id: str, node_ids: list[str]
    ) -> list[Reservation]:
        server_type = self._server_type_info()
        location = self._usable_locations(server_type)[0]
        self._ensure_ssh_key()
        self._ensure_placement_group(forest_id, run_id)
        slots = self._in_parallel(
            [
                partial(self._reserve_slot, forest_id, run_id, node_id, location)
                for node_id in node_ids
            ]
        )
        self._ensure_firewall(forest_id, run_id, [n for s in slots for n in s.networks])
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

    def _reserve_slot(self, forest_id: str, run_id: str, node_id: str, location: str) -> Slot:
        labels = labels_for(forest_id, node_id, run_id)
        ipv6 = self._primary_ip("ipv6", f"{node_id}-{location}-ipv6", location, labels)
        ipv4 = None
        if self.settings.infrastructure.enable_ipv4:
            ipv4 = self._primary_ip("ipv4", f"{node_id}-{location}-ipv4", location, labels)
        slot = Slot(location=location, ipv6=ipv6, ipv4=ipv4)
        with self._lock:
            self._slots[node_id] = slot
        return slot

    def _primary_ip(
        self, kind: str, name: str, location: str, labels: dict[str, str]
    ) -> PrimaryAddress:
        body = {
            "name": name,
            "type": kind,
            "location": location,
            "assignee_type": "server",
            "auto_delete": True,
            "labels": labels,
        }

        def find() -> PrimaryAddress | None:
            found = self._primary_ips(f"looking up primary IP {name}", {"name": name})
            mine = [ip for ip in found if _owned(ip.labels, labels)]
            return mine[0] if mine else None

        return self._create_or_adopt(
            f"creating {kind} primary IP {name}",
            lambda c: PrimaryAddress.from_api(
                c.request("POST", "/primary_ips", json=body)["primary_ip"]
            ),
            find,
        )

    def _primary_ips(self, doing: str, params: dict[str, str]) -> list[PrimaryAddress]:
        return [
            PrimaryAddress.from_api(raw)
            for raw in self._list_raw(doing, "/primary_ips", "primary_ips", params)
        ]

    def _list_raw(
        self, doing: str, path: str, key: str, params: dict[str, str]
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page: int | None = 1
        while page is not None:
            query = {**params, "page": str(page), "per_page": "50"}
            answer = self.api.call(doing, partial(_get, path=path, params=query))
            items.extend(answer.get(key, []))
            pagination = (answer.get("meta") or {}).get("pagination") or {}
            page = pagination.get("next_page")
        return items

    def _ensure_placement_group(self, forest_id: str, run_id: str) -> None:
        if forest_id in self._placement_groups:
            return
        name = f"morpheus-{forest_id}"
        forest_labels = labels_for(forest_id, None, run_id)

        def find() -> int | None:
            group = self.api.call(
                f"looking up placement group {name}", lambda c: c.placement_groups.get_by_name(name)
            )
            if group is None or not _owned(group.data_model.labels or {}, forest_labels, "run"):
                return None
            return _ident(group.data_model.id)

        group_id = self._create_or_adopt(
            f"creating placement group {name}",
            lambda c: _ident(
                c.placement_groups.create(
                    name=name, type="spread", labels=forest_labels
                ).placement_group.data_model.id
            ),
            find,
        )
        with self._lock:
            self._placement_groups[forest_id] = group_id

    def _ensure_firewall(self, forest_id: str, run_id: str, networks: list[str]) -> None:
        """Create the forest's firewall, or (a growing forest) admit its new addresses."""
        name = f"morpheus-{forest_id}"
        rules = firewall_rules(
            self.admin_sources(), networks, Ports(), self.settings.provisioning.ssh_port
        )
        selector = FirewallResourceLabelSelector(selector=_selector(forest_id))

        def create(client: hcloud.Client) -> list[int]:
            response = client.firewalls.create(
                name=name,
                rules=rules,
                labels=labels_for(forest_id, None, run_id),  # type: ignore[arg-type]
                resources=[FirewallResource(type="label_selector", label_selector=selector)],
            )
            return [_ident(action.data_model.id) for action in response.actions or []]

        def find() -> list[int] | None:
            return [] if self._refresh_firewall(forest_id) else None

        ids = self._create_or_adopt(f"creating firewall {name}", create, find)
        self.actions.track(ids)
        with self._lock:
            self._forest_actions.setdefault(forest_id, []).extend(ids)

    def _refresh_firewall(self, forest_id: str, networks: list[str] | None = None) -> bool:
        """Make the forest firewall's route rule name the forest's addresses as they are now
        (``networks`` when the caller just listed them).  Returns whether there is one."""
        with self._lock:
            lock = self._firewall_locks.setdefault(forest_id, threading.Lock())
        with lock:
            firewalls = self.api.call(
                f"looking up the firewall of {forest_id}",
                lambda c: c.firewalls.get_all(label_selector=_selector(forest_id)),
            )
            if not firewalls:
                return False
            if networks is None:
                addresses = self._primary_ips(
                    f"listing the addresses of {forest_id}",
                    {"label_selector": _selector(forest_id)},
                )
                networks = [a.network for a in addresses]
            for bound in firewalls:
                current = list(bound.data_model.rules or [])
                wanted = with_forest_routes(current, networks, Ports().cluster)
                if sorted(map(rule_key, current)) == sorted(map(rule_key, wanted)):
                    continue
                firewall_id = _ident(bound.data_model.id)
                actions = self.api.call(
                    f"updating the route rule of firewall {bound.data_model.name}",
                    partial(_set_rules, firewall_id=firewall_id, rules=wanted),
                )
                self.actions.track(_ident(a.data_model.id) for a in actions)
            return True

    # create -------------------------------------------------------------------------------

    def create_node(self, blueprint: NodeBlueprint) -> NodeHandle:
        slot = self._slot_of(blueprint)
        user_data = render_user_data(blueprint, now=blueprint.rendered_at or datetime.now(UTC))
        pending = PendingCreate(forest_id=blueprint.forest_id, future=Future())
        with self._lock:
            self._pending[blueprint.node_id] = pending
        pending.future = self._pool().submit(
            self._create_server, blueprint, slot, user_data, pending.cancelled
        )
        return NodeHandle(
            provider_id=blueprint.node_id,
            node_id=blueprint.node_id,
            forest_id=blueprint.forest_id,
            run_id=blueprint.run_id,
            index=blueprint.index,
            host=slot.host,
            addresses=slot.addresses,
            ports=blueprint.ports,
            capacity=self._server_type_info().capacity,
            state="creating",
            location=slot.location,
            labels=dict(blueprint.labels),
        )

    def _slot_of(self, blueprint: NodeBlueprint) -> Slot:
        with self._lock:
            slot = self._slots.get(blueprint.node_id)
        if slot is not None:
            return slot
        # Reserved by another process: find the addresses by label.
        found = self._primary_ips(
            f"looking up the addresses of {blueprint.node_id}",
            {"label_selector": _selector(blueprint.forest_id, blueprint.node_id)},
        )
        ipv6 = next((a for a in found if a.kind == "ipv6" and a.assignee_id is None), None)
        if ipv6 is None or ipv6.location is None:
            raise HetznerError(
                f"no reserved address for {blueprint.node_id}: reserve_addresses comes first",
                code="not_found",
            )
        ipv4 = next((a for a in found if a.kind == "ipv4" and a.assignee_id is None), None)
        return Slot(location=ipv6.location, ipv6=ipv6, ipv4=ipv4)

    def _create_server(
        self, blueprint: NodeBlueprint, slot: Slot, user_data: str, cancelled: threading.Event
    ) -> Created:
        """The worker: POST the server, moving it to the next location when one is full."""
        name = blueprint.node_id
        if cancelled.wait(random.uniform(0, self.config.create_jitter)):
            raise HetznerError(f"creating {name} was cancelled", code="cancelled")
        server_type = self._server_type_info()
        image_id = self._image(server_type)
        ssh_key_id = self._ensure_ssh_key()
        placement = self._placement_groups.get(blueprint.forest_id)
        tried: list[str] = []
        lost = 0
        while True:
            if cancelled.is_set():
                raise HetznerError(f"creating {name} was cancelled", code="cancelled")
            location = slot.location
            post = partial(
                _post_server,
                name=name,
                server_type_id=server_type.id,
                image_id=image_id,
                ssh_key_id=ssh_key_id,
                user_data=user_data,
                labels=dict(blueprint.labels),
                slot=slot,
                placement_group_id=placement,
            )
            try:
                response = self.api.call(
                    f"creating server {name} in {location}",
                    post,
                    # `locked`: a primary IP or the placement group is busy with another
                    # action; nothing was created, so asking again is safe.
                    retry_codes={"locked"},
                    idempotent=False,
                )
            except LostResponseError:
                # Send it again: if the first one was done, the name says so (below).
                lost += 1
                if lost > self.config.max_retries:
                    raise
                time.sleep(self.api.backoff(lost - 1))
                continue
            except HetznerError as exc:
                if exc.code == "uniqueness_error":
                    return self._adopt_server(blueprint, exc)
                if exc.code == "placement_error" and placement is not None:
                    placement = None  # the group is full (10 servers): place it anywhere
                    continue
                if exc.code != "resource_unavailable":
                    raise
                tried.append(location)
                # Availability read earlier may be stale either way: try every configured
                # location that offers the type, in order.
                later = [
                    loc
                    for loc in self.settings.infrastructure.locations
                    if loc not in tried
                    and (offer := server_type.offers.get(loc)) is not None
                    and not offer.deprecated
                ]
                if not later:
                    raise HetznerError(
                        f"creating {name}: server type {server_type.name} is out of capacity in "
                        f"{', '.join(tried)}; add locations to infrastructure.locations or pick "
                        "another infrastructure.server_type",
                        code="resource_unavailable",
                    ) from exc
                slot, blueprint, user_data = self._move(blueprint, slot, later[0])
                continue
            ids = (
                _ident(response.action.data_model.id),
                *(_ident(a.data_model.id) for a in response.next_actions or []),
            )
            self.actions.track(ids)
            return Created(_ident(response.server.data_model.id), ids, slot)

    def _move(
        self, blueprint: NodeBlueprint, slot: Slot, location: str
    ) -> tuple[Slot, NodeBlueprint, str]:
        """Give a node addresses in ``location`` instead, and its user-data to match."""
        moved = self._reserve_slot(
            blueprint.forest_id, blueprint.run_id, blueprint.node_id, location
        )
        self._release([slot.ipv6, *([slot.ipv4] if slot.ipv4 else [])])
        peers = tuple(
            Peer(host=moved.host, port=p.port) if p.host == slot.host else p
            for p in blueprint.peers
        )
        blueprint = blueprint.model_copy(update={"host": moved.host, "peers": peers})
        self._refresh_firewall(blueprint.forest_id)
        return (
            moved,
            blueprint,
            render_user_data(blueprint, now=blueprint.rendered_at or datetime.now(UTC)),
        )

    def _adopt_server(self, blueprint: NodeBlueprint, cause: HetznerError) -> Created:
        """The server of this name already exists: take it when it is this run's node."""
        name = blueprint.node_id
        server = self.api.call(f"looking up server {name}", lambda c: c.servers.get_by_name(name))
        if server is None:
            raise cause
        labels = server.data_model.labels or {}
        if not _owned(labels, blueprint.labels):
            raise HetznerError(
                f"a server named {name} already exists and is not this run's node (labels "
                f"{dict(labels)}); delete or rename it in the Hetzner console",
                code="uniqueness_error",
            ) from cause
        return Created(_ident(server.data_model.id), (), slot_of_server(server), adopted=True)

    # wait -------------------------------------------------------------------------------

    def wait_running(self, handle: NodeHandle, deadline: float) -> NodeHandle:
        with self._lock:
            pending = self._pending.get(handle.node_id)
        if pending is not None:
            try:
                created = pending.future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                raise HetznerError(
                    f"creating {handle.node_id}: the API did not accept it before the deadline",
                    code="timeout",
                ) from None
        else:
            server = self._server_of(handle.forest_id, handle.node_id)
            if server is None:
                raise HetznerError(f"{handle.node_id} has no server", code="not_found")
            created = Created(_ident(server.data_model.id), (), slot_of_server(server), True)
        with self._lock:
            forest_actions = list(self._forest_actions.get(handle.forest_id, []))
        self.actions.wait(
            [*created.action_ids, *forest_actions], deadline, f"creating {handle.node_id}"
        )
        if created.adopted:
            self._wait_status(created.server_id, handle.node_id, deadline)
        return handle.model_copy(
            update={
                "state": "running",
                "host": created.slot.host,
                "addresses": created.slot.addresses,
                "location": created.slot.location,
            }
        )

    def _wait_status(self, server_id: int, node_id: str, deadline: float) -> None:
        """Poll one server (one found by name has no actions to wait for) until it runs."""
        interval = self.config.poll_interval
        while True:
            server = self.api.call(
                f"checking server {node_id}", lambda c: c.servers.get_by_id(server_id)
            )
            if server.data_model.status == "running":
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HetznerError(
                    f"{node_id} is still {server.data_model.status} at the deadline",
                    code="timeout",
                )
            time.sleep(min(interval, remaining))
            interval = min(interval * self.config.poll_backoff, self.config.poll_max_interval)

    # list and delete ----------------------------------------------------------------------

    def list_nodes(self, forest_id: str) -> list[NodeHandle]:
        self._settle(forest_id)
        servers = self.api.call(
            f"listing the servers of {forest_id}",
            lambda c: c.servers.get_all(label_selector=_selector(forest_id)),
        )
        return sorted((handle_of(s) for s in servers), key=lambda h: (h.index, h.node_id))

    def delete_node(self, handle: NodeHandle) -> None:
        self._settle(handle.forest_id, node_id=handle.node_id, cancel=True)
        server = self._server_of(handle.forest_id, handle.node_id)
        if server is not None:
            server_id = _ident(server.data_model.id)
            try:
                action = self.api.call(
                    f"deleting server {server.data_model.name}",
                    lambda c: c.servers.delete(Server(id=server_id)),
                    retry_codes={"locked"},
                )
            except HetznerError as exc:
                if exc.code != "not_found":
                    raise
            else:
                deadline = time.monotonic() + self.config.delete_timeout
                self.actions.wait(
                    [_ident(action.data_model.id)], deadline, f"deleting {handle.node_id}"
                )
        # Addresses of a server that never got them (auto_delete covers the others), and
        # the route rule without this node: one look at the forest's addresses serves both.
        addresses = self._primary_ips(
            f"listing the addresses of {handle.forest_id}",
            {"label_selector": _selector(handle.forest_id)},
        )
        mine = [a for a in addresses if a.labels.get("node") == handle.node_id]
        self._release(mine)
        with self._lock:
            self._slots.pop(handle.node_id, None)
        self._refresh_firewall(handle.forest_id, [a.network for a in addresses if a not in mine])

    def delete_forest_resources(self, forest_id: str) -> None:
        self._settle(forest_id, cancel=True)
        selector = _selector(forest_id)
        left = self.api.call(
            f"listing the servers of {forest_id}",
            lambda c: c.servers.get_all(label_selector=selector),
        )
        if left:
            # Their firewall stays on while they live.
            names = ", ".join(sorted(str(s.data_model.name) for s in left))
            raise HetznerError(
                f"the firewall, placement group and addresses of {forest_id} are kept while "
                f"its servers still exist: {names}",
                code="resource_in_use",
            )
        failed: list[str] = []
        firewalls = self.api.call(
            f"listing the firewalls of {forest_id}",
            lambda c: c.firewalls.get_all(label_selector=selector),
        )
        for bound in firewalls:
            try:
                self._delete_firewall(bound.data_model)
            except HetznerError as exc:
                failed.append(f"firewall {bound.data_model.name}: {exc}")
        groups = self.api.call(
            f"listing the placement groups of {forest_id}",
            lambda c: c.placement_groups.get_all(label_selector=selector),
        )
        for group in groups:
            group_id = _ident(group.data_model.id)
            try:
                self.api.call(
                    f"deleting placement group {group.data_model.name}",
                    partial(_delete_placement_group, group_id=group_id),
                    retry_codes={"resource_in_use", "locked"},
                )
            except HetznerError as exc:
                if exc.code != "not_found":
                    failed.append(f"placement group {group.data_model.name}: {exc}")
        addresses = self._primary_ips(
            f"listing the addresses of {forest_id}", {"label_selector": selector}
        )
        try:
            self._release(addresses)
        except HetznerError as exc:
            failed.append(str(exc))
        with self._lock:
            self._placement_groups.pop(forest_id, None)
            self._forest_actions.pop(forest_id, None)
        if failed:
            raise HetznerError(f"could not delete {'; '.join(failed)}", code="incomplete")

    def _delete_firewall(self, firewall: Firewall) -> None:
        firewall_id = _ident(firewall.id)
        # Detach first: a firewall still applied (even by label selector) cannot be deleted.
        attached = [
            FirewallResource(type=r.type, server=r.server, label_selector=r.label_selector)
            for r in firewall.applied_to or []
        ]
        if attached:
            try:
                actions = self.api.call(
                    f"detaching firewall {firewall.name}",
                    lambda c: c.firewalls.remove_from_resources(Firewall(id=firewall_id), attached),
                )
            except HetznerError as exc:
                if exc.code not in ("firewall_already_removed", "not_found"):
                    raise
            else:
                self.actions.wait(
                    [_ident(a.data_model.id) for a in actions],
                    time.monotonic() + self.config.delete_timeout,
                    f"detaching firewall {firewall.name}",
                )
        try:
            self.api.call(
                f"deleting firewall {firewall.name}",
                lambda c: c.firewalls.delete(Firewall(id=firewall_id)),
                retry_codes={"resource_in_use", "locked"},
            )
        except HetznerError as exc:
            if exc.code != "not_found":
                raise

    def _release(self, addresses: Iterable[PrimaryAddress]) -> None:
        """Delete primary IPs; one still on a server is reported, not forced off it."""
        busy = []
        for address in addresses:
            if address.assignee_id is not None:
                busy.append(f"{address.ip} (on server {address.assignee_id})")
                continue
            try:
                self.api.call(
                    f"deleting primary IP {address.ip}",
                    partial(_delete_primary_ip, address_id=address.id),
                    retry_codes={"locked"},
                )
            except HetznerError as exc:
                if exc.code != "not_found":
                    raise
        if busy:
            raise HetznerError(
                f"primary IPs still assigned: {', '.join(busy)}", code="resource_in_use"
            )

    def _server_of(self, forest_id: str, node_id: str) -> BoundServer | None:
        servers = self.api.call(
            f"looking up the server of {node_id}",
            lambda c: c.servers.get_all(label_selector=_selector(forest_id, node_id)),
        )
        if servers:
            return servers[0]
        # Forests imported from the older Go tool: its servers carry `forest-id=<forest>`
        # and are named like our node ids (import-registry keeps those ids).
        legacy = self.api.call(
            f"looking up the server of {node_id}",
            lambda c: c.servers.get_all(
                label_selector=f"managed-by=morpheus,forest-id={forest_id}", name=node_id
            ),
        )
        return legacy[0] if legacy else None

    def checks(self) -> list[CheckResult]:
        """Token, server type, image, SSH key and admin sources, each on its own line."""
        if not self.api.has_token:
            return [CheckResult("hetzner token", False, "no token", NO_AUTH_MESSAGE)]
        try:
            server_type = self._load_server_type()
        except MorpheusError as exc:
            return [CheckResult("hetzner token", False, str(exc))]
        results = [CheckResult("hetzner token", True, f"the API at {self.api.endpoint} accepts it")]
        attempts: list[tuple[str, Callable[[], str]]] = [
            (
                "hetzner server type",
                lambda: (
                    f"{server_type.name} can be ordered in "
                    + ", ".join(self._usable_locations(server_type))
                ),
            ),
            (
                "hetzner image",
                lambda: f"{self.settings.infrastructure.image} (id {self._image(server_type)})",
            ),
            ("hetzner SSH key", self._ssh_key_check),
            ("hetzner admin sources", lambda: ", ".join(self.admin_sources())),
        ]
        for name, attempt in attempts:
            try:
                results.append(CheckResult(name, True, attempt()))
            except MorpheusError as exc:
                results.append(CheckResult(name, False, str(exc)))
        return results

    def _ssh_key_check(self) -> str:
        """Whether nodes will let this machine's key in; raises when they would not."""
        name = self.settings.infrastructure.ssh.key_name
        key = self.api.call(f"looking up SSH key {name}", lambda c: c.ssh_keys.get_by_name(name))
        if key is None:
            path, _ = self._local_public_key()
            return f"{name} is not in the project yet; a plant uploads {path}"
        candidates = public_key_candidates(self.settings.infrastructure.ssh.key_path, Path.home())
        local = read_public_key(candidates)
        if local is not None and fingerprint(local[1]) != key.data_model.fingerprint:
            raise HetznerError(
                f"the project's SSH key {name!r} is not {local[0]}: nodes will not let this "
                "machine in; set infrastructure.ssh.key_name to a key of yours",
                code="ssh_key",
            )
        return f"{name} is in the project" + (f" and matches {local[0]}" if local else "")

    def status_notes(self) -> list[str]:
        infra = self.settings.infrastructure
        notes = [
            f"Hetzner: {'IPv6 + IPv4' if infra.enable_ipv4 else 'IPv6-only'} {infra.server_type} "
            f"servers; SSH as root with the key {infra.ssh.key_name!r}",
        ]
        if self.api.endpoint != DEFAULT_ENDPOINT:
            notes.append(f"Hetzner API endpoint: {self.api.endpoint}")
        return notes

    # plumbing ---------------------------------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.config.create_concurrency, thread_name_prefix="hetzner"
                )
            return self._executor

    def _in_parallel(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """Run ``calls`` on the worker pool; wait for all of them before raising any error,
        so nothing is still being created while the caller rolls back."""
        futures = [self._pool().submit(call) for call in calls]
        wait_futures(futures)
        return [future.result() for future in futures]

    def _settle(self, forest_id: str, *, node_id: str | None = None, cancel: bool = False) -> None:
        """Wait for this process's creates in the forest (or of one node) to be done, so a
        list or delete sees every server they made; ``cancel`` stops those not yet sent."""
        with self._lock:
            pending = [
                p
                for nid, p in self._pending.items()
                if p.forest_id == forest_id and (node_id is None or nid == node_id)
            ]
        for item in pending:
            if cancel:
                item.cancelled.set()
        wait_futures([item.future for item in pending])
        if cancel:
            with self._lock:
                for nid in [n for n, p in self._pending.items() if p in pending]:
                    del self._pending[nid]

    def _create_or_adopt(
        self,
        doing: str,
        create: Callable[[hcloud.Client], T],
        find: Callable[[], T | None],
    ) -> T:
        """Create a named resource; after a lost answer or ``uniqueness_error`` take the one
        that exists when it is ours (``find`` checks the labels)."""
        lost = 0
        while True:
            try:
                return self.api.call(doing, create, retry_codes={"locked"}, idempotent=False)
            except LostResponseError:
                found = find()
                if found is not None:
                    return found
                lost += 1
                if lost > self.config.max_retries:
                    raise
                time.sleep(self.api.backoff(lost - 1))
            except HetznerError as exc:
                if exc.code != "uniqueness_error":
                    raise
                found = find()
                if found is None:
                    raise HetznerError(
                        f"{doing}: the name is taken by something Morpheus did not make for "
                        "this forest; rename or delete it in the Hetzner console",
                        code="uniqueness_error",
                    ) from exc
                return found


def _post_server(
    client: hcloud.Client,
    *,
    name: str,
    server_type_id: int,
    image_id: int,
    ssh_key_id: int,
    user_data: str,
    labels: dict[str, str],
    slot: Slot,
    placement_group_id: int | None,
) -> CreateServerResponse:
    public_net = ServerCreatePublicNetwork(
        ipv6=PrimaryIP(id=slot.ipv6.id),
        ipv4=PrimaryIP(id=slot.ipv4.id) if slot.ipv4 is not None else None,
        enable_ipv4=slot.ipv4 is not None,
        enable_ipv6=True,
    )
    placement = PlacementGroup(id=placement_group_id) if placement_group_id else None
    return client.servers.create(
        name=name,
        server_type=ServerType(id=server_type_id),
        image=Image(id=image_id),
        ssh_keys=[SSHKey(id=ssh_key_id)],
        user_data=user_data,
        labels=labels,
        location=Location(name=slot.location),
        placement_group=placement,
        public_net=public_net,
        start_after_create=True,
    )


def _get(client: hcloud.Client, *, path: str, params: dict[str, str]) -> dict[str, Any]:
    return client.request("GET", path, params=params)


def _set_rules(
    client: hcloud.Client, *, firewall_id: int, rules: list[FirewallRule]
) -> list[BoundAction]:
    return client.firewalls.set_rules(Firewall(id=firewall_id), rules)


def _delete_placement_group(client: hcloud.Client, *, group_id: int) -> bool:
    return client.placement_groups.delete(PlacementGroup(id=group_id))


def _delete_primary_ip(client: hcloud.Client, *, address_id: int) -> dict[str, Any]:
    return client.request("DELETE", f"/primary_ips/{address_id}")


def _ident(value: int | None) -> int:
    if value is None:
        raise HetznerError("the Hetzner API answered without an id", code="invalid_response")
    return value


def _selector(forest_id: str, node_id: str | None = None) -> str:
    selector = f"managed-by=morpheus,forest={forest_id}"
    return selector if node_id is None else f"{selector},node={node_id}"


def _owned(labels: Mapping[str, str], expected: Mapping[str, str], *ignore: str) -> bool:
    return all(labels.get(k) == v for k, v in expected.items() if k not in ignore)


def _network(source: str) -> str:
    import ipaddress

    return str(ipaddress.ip_network(source, strict=False))
