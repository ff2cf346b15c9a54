"""Servers: created in parallel on worker threads, moved when a location is full, adopted by
name after a lost answer, waited for, found by label and deleted."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

import hcloud
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.placement_groups import PlacementGroup
from hcloud.primary_ips import PrimaryIP
from hcloud.server_types import ServerType
from hcloud.servers import BoundServer, CreateServerResponse, Server, ServerCreatePublicNetwork
from hcloud.ssh_keys import SSHKey

from morpheus.blueprint import NodeBlueprint, Peer
from morpheus.provider import NodeHandle
from morpheus.render import render_user_data
from morpheus.waiting import poll_until
from morpheus_hetzner.actions import ActionWatcher
from morpheus_hetzner.addresses import Addresses
from morpheus_hetzner.api import HetznerApi, HetznerError
from morpheus_hetzner.catalogue import Catalogue
from morpheus_hetzner.firewall import Firewalls
from morpheus_hetzner.placement import PlacementGroups
from morpheus_hetzner.resources import (
    Slot,
    forest_selector,
    handle_of,
    ident,
    owned,
    slot_of_server,
)
from morpheus_hetzner.settings import HetznerSettings
from morpheus_hetzner.ssh_keys import ProjectKey
from morpheus_hetzner.workers import Workers

T = TypeVar("T")


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


class Servers:
    """Everything the provider does to servers themselves."""

    def __init__(
        self,
        api: HetznerApi,
        actions: ActionWatcher,
        *,
        catalogue: Catalogue,
        addresses: Addresses,
        firewalls: Firewalls,
        key: ProjectKey,
        placement: PlacementGroups,
        workers: Workers,
        config: HetznerSettings,
    ) -> None:
        self._api = api
        self._actions = actions
        self._catalogue = catalogue
        self._addresses = addresses
        self._firewalls = firewalls
        self._key = key
        self._placement = placement
        self._workers = workers
        self._config = config
        self._lock = threading.Lock()
        self._pending: dict[str, PendingCreate] = {}

    # create ---------------------------------------------------------------------------

    def start_create(self, blueprint: NodeBlueprint, slot: Slot, user_data: str) -> None:
        """Hand the ``POST /servers`` to a worker; ``wait_created`` collects it."""
        pending = PendingCreate(forest_id=blueprint.forest_id, future=Future())
        with self._lock:
            self._pending[blueprint.node_id] = pending
        pending.future = self._workers.submit(
            lambda: self._create(blueprint, slot, user_data, pending.cancelled)
        )

    def settle(self, forest_id: str, *, node_id: str | None = None, cancel: bool = False) -> None:
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

    def _create(
        self, blueprint: NodeBlueprint, slot: Slot, user_data: str, cancelled: threading.Event
    ) -> Created:
        """The worker: POST the server, moving it to the next location when one is full."""
        name = blueprint.node_id
        if cancelled.wait(random.uniform(0, self._config.create_jitter)):
            raise HetznerError(f"creating {name} was cancelled", code="cancelled")
        server_type = self._catalogue.server_type()
        image_id = self._catalogue.image_id(server_type)
        ssh_key_id = self._key.ensure()
        placement = self._placement.id_of(blueprint.forest_id)
        tried: list[str] = []
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
                # A lost answer is sent again: if the first one was done, the name says so
                # (uniqueness_error, below).  `locked` is retried too: a primary IP or the
                # placement group is busy with another action and nothing was created.
                response = self._api.create(f"creating server {name} in {location}", post)
            except HetznerError as exc:
                # Whatever the API said (name taken, primary IP assigned, 5xx after its
                # commit...), a server of this name may now exist: ours is adopted.
                existing = self._api.call(
                    f"looking up server {name}", lambda c: c.servers.get_by_name(name)
                )
                if existing is not None:
                    return self._adopt(blueprint, existing, exc)
                if exc.code == "placement_error" and placement is not None:
                    placement = None  # the group is full (10 servers): place it anywhere
                    continue
                if exc.code != "resource_unavailable":
                    raise
                tried.append(location)
                later = self._catalogue.fallback_locations(server_type, tried)
                if not later:
                    raise HetznerError(
                        f"creating {name}: server type {server_type.name} is out of capacity in "
                        f"{', '.join(tried)}; add locations to providers.hetzner.locations or pick "
                        "another providers.hetzner.server_type",
                        code="resource_unavailable",
                    ) from exc
                slot, blueprint, user_data = self._move(blueprint, slot, later[0])
                continue
            ids = (
                ident(response.action.data_model.id),
                *(ident(a.data_model.id) for a in response.next_actions or []),
            )
            self._actions.track(ids)
            return Created(ident(response.server.data_model.id), ids, slot)

    def _move(
        self, blueprint: NodeBlueprint, slot: Slot, location: str
    ) -> tuple[Slot, NodeBlueprint, str]:
        """Give a node addresses in ``location`` instead, and its user-data to match."""
        moved = self._addresses.reserve(
            blueprint.forest_id, blueprint.run_id, blueprint.node_id, location
        )
        self._addresses.release([slot.ipv6, *([slot.ipv4] if slot.ipv4 else [])])
        peers = tuple(
            Peer(host=moved.host, port=p.port) if p.host == slot.host else p
            for p in blueprint.peers
        )
        blueprint = blueprint.model_copy(update={"host": moved.host, "peers": peers})
        self._firewalls.refresh(blueprint.forest_id)
        return (
            moved,
            blueprint,
            render_user_data(blueprint, now=blueprint.rendered_at or datetime.now(UTC)),
        )

    def _adopt(self, blueprint: NodeBlueprint, server: BoundServer, cause: HetznerError) -> Created:
        """A server of the node's name exists: take it when it is this run's node."""
        labels = server.data_model.labels or {}
        if not owned(labels, blueprint.labels):
            raise HetznerError(
                f"a server named {blueprint.node_id} already exists and is not this run's node "
                f"(labels {dict(labels)}); delete or rename it in the Hetzner console",
                code="uniqueness_error",
            ) from cause
        return Created(ident(server.data_model.id), (), slot_of_server(server), adopted=True)

    # wait -------------------------------------------------------------------------------

    def wait_created(self, handle: NodeHandle, deadline: float) -> Created:
        """This process's create of the node, or the server found by label (a create made
        by another process)."""
        with self._lock:
            pending = self._pending.get(handle.node_id)
        if pending is not None:
            try:
                return pending.future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                raise HetznerError(
                    f"creating {handle.node_id}: the API did not accept it before the deadline",
                    code="timeout",
                ) from None
        server = self._by_node(handle.forest_id, [handle.node_id]).get(handle.node_id)
        if server is None:
            raise HetznerError(f"{handle.node_id} has no server", code="not_found")
        return Created(ident(server.data_model.id), (), slot_of_server(server), True)

    def wait_status(self, server_id: int, node_id: str, deadline: float) -> None:
        """Poll one server (one found by name has no actions to wait for) until it runs."""
        status = "unknown"

        def running() -> bool | None:
            nonlocal status
            server = self._api.call(
                f"checking server {node_id}", lambda c: c.servers.get_by_id(server_id)
            )
            status = str(server.data_model.status)
            return True if status == "running" else None

        poll_until(
            running,
            deadline=deadline,
            interval=self._config.poll_interval,
            backoff=self._config.poll_backoff,
            max_interval=self._config.poll_max_interval,
            timeout_error=lambda: HetznerError(
                f"{node_id} is still {status} at the deadline", code="timeout"
            ),
        )

    # find and delete ----------------------------------------------------------------------

    def of_forest(self, forest_id: str) -> list[BoundServer]:
        return self._api.call(
            f"listing the servers of {forest_id}",
            lambda c: c.servers.get_all(label_selector=forest_selector(forest_id)),
        )

    def forest_ids(self) -> list[str]:
        """Every forest with a server in this project, from the servers' labels."""
        with self._lock:
            forests = {pending.forest_id for pending in self._pending.values()}
        for forest_id in forests:
            self.settle(forest_id)  # this process's creates in flight count too
        servers = self._api.call(
            "listing the servers Morpheus made",
            lambda c: c.servers.get_all(label_selector="managed-by=morpheus"),
        )
        labels = [server.data_model.labels or {} for server in servers]
        return sorted({found["forest"] for found in labels if found.get("forest")})

    def handles(self, forest_id: str) -> list[NodeHandle]:
        return sorted(
            (handle_of(s) for s in self.of_forest(forest_id)), key=lambda h: (h.index, h.node_id)
        )

    def delete(self, forest_id: str, handles: Sequence[NodeHandle]) -> dict[str, HetznerError]:
        """Delete the servers of ``handles`` (none is fine) in parallel and wait for all
        their delete actions at once; returns the failures by node id. One listing finds
        them all, so a node costs its ``DELETE`` plus a share of the batched action polls."""
        for handle in handles:
            self.settle(forest_id, node_id=handle.node_id, cancel=True)
        servers = self._by_node(forest_id, [h.node_id for h in handles])
        failed: dict[str, HetznerError] = {}
        sent = self._workers.run_all(
            [
                partial(self._send_delete, servers[h.node_id])
                for h in handles
                if h.node_id in servers
            ]
        )
        actions: dict[str, int] = {}
        for node_id, result in sent:
            if isinstance(result, HetznerError):
                failed[node_id] = result
            elif result is not None:
                actions[node_id] = result
        if not actions:
            return failed
        deadline = time.monotonic() + self._config.delete_timeout
        doing = f"deleting {len(actions)} server(s) of {forest_id}"
        try:
            self._actions.wait_finished(actions.values(), deadline, doing)
        except HetznerError as exc:  # the deadline: those still running failed
            for node_id, action_id in actions.items():
                if self._actions.outcome(action_id) is None:
                    failed[node_id] = exc
        for node_id, action_id in actions.items():
            outcome = self._actions.outcome(action_id)
            error = outcome.error(f"deleting {node_id}") if outcome is not None else None
            if error is not None:
                failed[node_id] = error
        return failed

    def _by_node(self, forest_id: str, node_ids: Sequence[str]) -> dict[str, BoundServer]:
        """The servers of these nodes, from one listing of the forest (and one of its
        servers imported from the older Go tool, when some are not found)."""
        found: dict[str, BoundServer] = {}
        for server in self.of_forest(forest_id):
            node_id = (server.data_model.labels or {}).get("node")
            if node_id is not None and node_id in node_ids:
                found[node_id] = server
        if len(found) < len(node_ids):
            # Forests imported from the older Go tool: its servers carry `forest-id=<forest>`
            # and are named like our node ids (import-registry keeps those ids).
            legacy = self._api.call(
                f"looking up the servers of {forest_id}",
                lambda c: c.servers.get_all(
                    label_selector=f"managed-by=morpheus,forest-id={forest_id}"
                ),
            )
            for server in legacy:
                name = str(server.data_model.name)
                if name in node_ids and name not in found:
                    found[name] = server
        return found

    def _send_delete(self, server: BoundServer) -> tuple[str, int | HetznerError | None]:
        """``DELETE`` one server: its node id and the action id, the error, or None when
        it was already gone."""
        model = server.data_model
        node_id = (model.labels or {}).get("node") or str(model.name)
        server_id = ident(model.id)
        try:
            action = self._api.call(
                f"deleting server {model.name}",
                lambda c: c.servers.delete(Server(id=server_id)),
                retry_codes={"locked"},
            )
        except HetznerError as exc:
            return node_id, None if exc.code == "not_found" else exc
        action_id = ident(action.data_model.id)
        self._actions.track([action_id])
        return node_id, action_id


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
