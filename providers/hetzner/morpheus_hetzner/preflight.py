"""Before anything is created: the checks of a plan, the plan's lines, and ``morpheus check``.

The pre-flight costs three requests (server type, image, SSH key) and creates nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from morpheus.blueprint import (
    NodeBlueprint,
    Peer,
    RouteCredentials,
    build_blueprint,
    labels_for,
)
from morpheus.errors import MorpheusError, NatsReleaseError, TemplateInputError
from morpheus.provider import CheckResult, ForestPlan, PlanLine
from morpheus.render import render_user_data
from morpheus_hetzner.api import (
    NO_AUTH_MESSAGE,
    HetznerApi,
    HetznerError,
    HetznerPreflightError,
    preflight_error,
)
from morpheus_hetzner.catalogue import Catalogue
from morpheus_hetzner.network import label_problems, valid_server_name
from morpheus_hetzner.settings import DEFAULT_ENDPOINT, HetznerSettings
from morpheus_hetzner.ssh_keys import ProjectKey

#: The longest ids a plan may produce, for checks of a plan that has none yet.
SAMPLE_FOREST = "forest-9999999999-99"
SAMPLE_RUN = "run-ffffffff"


class Preflight:
    """Checks a plan against the project before anything is created, and describes it."""

    def __init__(
        self,
        api: HetznerApi,
        *,
        config: HetznerSettings,
        blueprint_defaults: Mapping[str, object],
        catalogue: Catalogue,
        key: ProjectKey,
        admin_sources: Callable[[], list[str]],
        node_fields: Callable[[], dict[str, Any]],
    ) -> None:
        self._api = api
        self._config = config
        self._blueprint_defaults = blueprint_defaults
        self._catalogue = catalogue
        self._key = key
        self._admin_sources = admin_sources
        self._node_fields = node_fields

    def check(self, plan: ForestPlan) -> None:
        """Token, names, admin sources, server type, image, SSH key, user-data; raise the
        first problem as ``HetznerPreflightError``."""
        if not self._api.has_token:
            if not plan.dry_run:
                raise HetznerPreflightError(NO_AUTH_MESSAGE, code="no_token")
            # A dry run without an account: what can be checked here is; the catalogue
            # (server type, image, locations, SSH key) waits for a token (see plan_lines).
            problems = _naming_problems(plan)
            if problems:
                raise HetznerPreflightError("; ".join(problems), code="invalid_input")
            self._admin_sources()
            return
        problems = _naming_problems(plan)
        if problems:
            raise HetznerPreflightError(
                "; ".join(problems) + "; the forest cannot be labelled", code="invalid_input"
            )
        self._admin_sources()
        try:
            server_type = self._catalogue.load_server_type()
            self._catalogue.usable_locations(server_type)
            self._catalogue.image_id(server_type)
            self._key.check()
        except HetznerPreflightError:
            raise
        except HetznerError as exc:
            raise preflight_error(exc) from exc
        self._check_user_data(plan)

    def plan_lines(self, plan: ForestPlan) -> list[PlanLine]:
        if not self._api.has_token:
            return self._offline_plan_lines()
        config = self._config
        server_type = self._catalogue.server_type()
        usable = self._catalogue.usable_locations(server_type)
        location, later = usable[0], usable[1:]
        count = plan.node_count
        lines = []
        if self._api.endpoint != DEFAULT_ENDPOINT:
            lines.append(PlanLine("API endpoint", self._api.endpoint))
        lines += [
            PlanLine(
                "server type",
                f"{server_type.name}: {server_type.cores} vCPU, {server_type.memory_gb:g} GB RAM, "
                f"{server_type.disk_gb} GB disk ({server_type.architecture})",
            ),
            PlanLine("image", config.image),
            PlanLine(
                "location",
                location + (f" (then {', '.join(later)} if out of capacity)" if later else ""),
            ),
            *self._network_lines(),
            PlanLine("SSH key", self._key.words()),
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
        lines.append(
            PlanLine(
                "ports",
                "22 (SSH) and 8222 (NATS monitoring) from admin sources only; 6222 (cluster) "
                "from the forest's nodes only; 4222 (clients) on each node's localhost only",
            )
        )
        return lines

    def _network_lines(self) -> list[PlanLine]:
        """The addresses and firewall every node gets, as configured (both plans show them)."""
        return [
            PlanLine(
                "network",
                "IPv6 + IPv4 (primary IPv4 addresses are billed extra)"
                if self._config.enable_ipv4
                else "IPv6 only: a /64 per node, the node at <prefix>::1",
            ),
            PlanLine(
                "firewall",
                f"SSH and NATS monitoring from {', '.join(self._admin_sources())}; "
                "NATS routes from the forest's own addresses; nothing else",
            ),
        ]

    def _offline_plan_lines(self) -> list[PlanLine]:
        """A dry run's plan without a token: the configuration, nothing looked up."""
        config = self._config
        return [
            PlanLine(
                "catalogue",
                "not checked (no Hetzner API token): the server type, image, locations and "
                "SSH key are checked, and the price shown, once HCLOUD_TOKEN is set",
            ),
            PlanLine("server type", config.server_type),
            PlanLine("image", config.image),
            PlanLine("locations", ", ".join(config.locations)),
            *self._network_lines(),
        ]

    def checks(self) -> list[CheckResult]:
        """Token, server type, image, SSH key and admin sources, each on its own line."""
        if not self._api.has_token:
            # What can be checked without an account: this machine's public key.
            try:
                path, _ = self._key.local()
                key = CheckResult(
                    "hetzner SSH key", True, f"{path} (uploaded as {self._key.name!r} by a plant)"
                )
            except MorpheusError as exc:
                key = CheckResult("hetzner SSH key", False, str(exc))
            return [CheckResult("hetzner token", False, "no token", NO_AUTH_MESSAGE), key]
        try:
            server_type = self._catalogue.load_server_type()
        except MorpheusError as exc:
            return [CheckResult("hetzner token", False, str(exc))]
        results = [
            CheckResult("hetzner token", True, f"the API at {self._api.endpoint} accepts it")
        ]
        catalogue = self._catalogue
        attempts: list[tuple[str, Callable[[], str]]] = [
            (
                "hetzner server type",
                lambda: (
                    f"{server_type.name} can be ordered in "
                    + ", ".join(catalogue.usable_locations(server_type))
                ),
            ),
            (
                "hetzner image",
                lambda: f"{catalogue.image_name} (id {catalogue.image_id(server_type)})",
            ),
            ("hetzner SSH key", self._key.check_line),
            ("hetzner admin sources", lambda: ", ".join(self._admin_sources())),
        ]
        for name, attempt in attempts:
            try:
                results.append(CheckResult(name, True, attempt()))
            except MorpheusError as exc:
                results.append(CheckResult(name, False, str(exc)))
        return results

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
        forest = plan.forest_id or SAMPLE_FOREST
        node_id = f"{forest}-node-{count}"
        peers = tuple(Peer(host=f"2a01:4f8:ffff:{0xF000 + i:x}::1") for i in range(1, count + 1))
        fields: dict[str, Any] = {
            **self._blueprint_defaults,
            "forest_id": forest,
            "run_id": SAMPLE_RUN,
            "node_id": node_id,
            "node_name": f"node-{count}",
            "index": count,
            "cluster_name": forest,
            "host": peers[-1].host,
            "peers": peers,
            "credentials": RouteCredentials.generate(),
            "labels": labels_for(forest, node_id, SAMPLE_RUN),
            **self._node_fields(),
        }
        try:
            return build_blueprint(**fields)
        except TemplateInputError as exc:
            raise HetznerPreflightError(str(exc), code="invalid_input") from exc


def _naming_problems(plan: ForestPlan) -> list[str]:
    forest = plan.forest_id or SAMPLE_FOREST
    last_node = f"{forest}-node-{max(plan.node_count, 1)}"
    problems = label_problems(labels_for(forest, last_node, SAMPLE_RUN))
    if not valid_server_name(last_node):
        problems.append(f"{last_node!r} is not a valid Hetzner server name")
    return problems
