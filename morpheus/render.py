"""Blueprint -> text: nats.conf, systemd units, the node firewall and cloud-init user-data.

Templates ship inside the core wheel (``morpheus/templates``); in a source checkout they are
read from the top-level ``templates/`` directory.  Every function here is pure: the render
time comes in as an argument.
"""

from __future__ import annotations

import base64
import gzip
import ipaddress
import json
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from morpheus import __version__
from morpheus.blueprint import artifact_format
from morpheus.errors import TemplateInputError, UserDataError
from morpheus.models import host_for_url
from morpheus.nats_release import nats_artifacts
from morpheus.node_paths import NODE_PATHS as NODE_PATHS
from morpheus.node_paths import ROUTE_PEERS_NAME as ROUTE_PEERS_NAME
from morpheus.node_paths import NodePaths as NodePaths

if TYPE_CHECKING:
    import jinja2

    from morpheus.blueprint import NodeBlueprint

USER_DATA_LIMIT = 32 * 1024
"""Bytes of user-data Hetzner Cloud accepts (the tightest of the supported clouds)."""


def templates_dir() -> Path:
    """Where the templates are: inside the installed package, else the source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "templates", package.parent / "templates"):
        if (candidate / "nats.conf.j2").is_file():
            return candidate
    raise FileNotFoundError("morpheus templates are missing from this installation")


def _quote(value: object) -> str:
    # Blueprint fields are validated to hold no quotes, backslashes or control characters, so
    # a JSON string is also a valid NATS / YAML / systemd double-quoted string.  Letters of
    # other scripts stay as they are: nats.conf knows no \u escapes.
    return json.dumps(str(value), ensure_ascii=False)


def _hostport(host: str, port: int) -> str:
    return f"{host_for_url(host)}:{port}"


def _shell_word(value: object) -> str:
    # Validated values hold no quotes, yet URLs may hold `$`, `&` or `;`: quote every word.
    return shlex.quote(str(value))


@cache
def environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - config files, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = _quote
    env.filters["hostport"] = _hostport
    env.filters["sh"] = _shell_word
    return env


def render_nats_conf(blueprint: NodeBlueprint) -> str:
    """The node's nats.conf."""
    return environment().get_template("nats.conf.j2").render(bp=blueprint)


@dataclass(frozen=True)
class NodeFile:
    """One file cloud-init writes before the bootstrap script runs."""

    path: str
    content: str
    permissions: str = "0644"
    owner: str = "root:root"


def render_nats_service(blueprint: NodeBlueprint) -> str:
    """The node's ``nats.service`` unit."""
    return _render("nats.service.j2", blueprint)


def render_nimsforest_service(blueprint: NodeBlueprint) -> str:
    """The node's ``nimsforest.service`` unit (only for blueprints that run NimsForest)."""
    if blueprint.nimsforest is None:
        raise TemplateInputError("this node does not run NimsForest: nothing to render")
    return _render("nimsforest.service.j2", blueprint)


def _element(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """A set element: a lone host as its address, anything wider as a prefix."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def render_firewall(blueprint: NodeBlueprint) -> str:
    """The node's nftables ruleset: SSH and monitoring from admin sources, routes from the
    peers in ``render_route_peers`` (included, so the ruleset itself never changes with the
    forest)."""
    admin = [ipaddress.ip_network(source) for source in blueprint.admin_sources]
    return _render(
        "firewall.nft.j2",
        blueprint,
        admin_v4=sorted(str(n) for n in admin if n.version == 4),
        admin_v6=sorted(str(n) for n in admin if n.version == 6),
        route_peers_name=ROUTE_PEERS_NAME,
    )


def route_peer_networks(
    blueprint: NodeBlueprint,
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Who may open routes to the node: the provider's ``route_sources`` when it names any,
    else exactly the forest's nodes (the blueprint's peers; none for a standalone node)."""
    if blueprint.route_sources:
        return [ipaddress.ip_network(source) for source in blueprint.route_sources]
    if not blueprint.clustered:
        return []
    networks = []
    for peer in blueprint.peers:
        try:
            networks.append(ipaddress.ip_network(ipaddress.ip_address(peer.host)))
        except ValueError:
            raise TemplateInputError(
                f"the node firewall admits peers by IP address, but peer {peer.host!r} is a "
                "host name; give peers as addresses or turn the host firewall off"
            ) from None
    return networks


def render_route_peers(blueprint: NodeBlueprint) -> str:
    """The node's route peer sets as an nft script that replaces their elements at once."""
    routes = route_peer_networks(blueprint)
    return _render(
        "route-peers.nft.j2",
        blueprint,
        peers_v4=sorted({_element(n) for n in routes if n.version == 4}),
        peers_v6=sorted({_element(n) for n in routes if n.version == 6}),
        route_sources=bool(blueprint.route_sources),
    )


def render_unit_files(blueprint: NodeBlueprint) -> dict[str, str]:
    """Every systemd unit the node gets, by unit name."""
    units = {"nats.service": render_nats_service(blueprint)}
    if blueprint.host_firewall:
        units["morpheus-firewall.service"] = _render("morpheus-firewall.service.j2", blueprint)
    if blueprint.nimsforest is not None:
        units["nimsforest.service"] = render_nimsforest_service(blueprint)
    return units


def node_info(blueprint: NodeBlueprint, rendered_at: datetime) -> dict[str, Any]:
    """What ``/var/lib/morpheus/node-info.json`` says about the node (no secrets: mode 0644)."""
    artifacts = nats_artifacts(blueprint.nats)
    return {
        "forest_id": blueprint.forest_id,
        "node_id": blueprint.node_id,
        "node_name": blueprint.node_name,
        "index": blueprint.index,
        "run_id": blueprint.run_id,
        "cluster": blueprint.cluster_name if blueprint.clustered else None,
        "host": blueprint.host,
        "ports": blueprint.ports.model_dump(),
        # A count, not the list: nats.conf has the routes, and the list would grow the
        # user-data by a third of what each node adds.
        "peer_count": len(blueprint.peers),
        "versions": {
            "morpheus": __version__,
            "nats_server": blueprint.nats.version,
        },
        "nats_source": [{"arch": a.arch, "url": a.url, "sha256": a.sha256} for a in artifacts],
        "nimsforest": blueprint.nimsforest is not None,
        "jetstream": blueprint.jetstream.model_dump(),
        "rendered_at": _utc(rendered_at),
        "labels": dict(blueprint.labels),
    }


def _local_address(listen: str) -> str:
    """How the node itself reaches a port bound to ``listen``, as a URL host."""
    try:
        address = ipaddress.ip_address(listen)
    except ValueError:
        return listen  # a host name the node resolves itself
    if address.is_unspecified:
        return "[::1]" if address.version == 6 else "127.0.0.1"
    return host_for_url(listen)


def _utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise TemplateInputError("render time must carry a time zone (pass an aware datetime)")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_files(blueprint: NodeBlueprint, rendered_at: datetime) -> list[NodeFile]:
    """The files cloud-init writes on the node, with owners and modes."""
    paths = NODE_PATHS
    artifacts = nats_artifacts(blueprint.nats)
    app = blueprint.nimsforest
    if app is not None and app.download_url is None:
        raise TemplateInputError(
            "integration.nimsforest_install is on but integration.nimsforest_download_url "
            "is not set; set it or turn NimsForest off"
        )
    formats = {a.format for a in artifacts}
    nimsforest_format = None
    report_urls: list[str] = []
    if app is not None and app.download_url is not None:
        nimsforest_format = artifact_format(app.download_url)
        formats.add(nimsforest_format)
        report_urls = list(dict.fromkeys(u for u in (app.registry_url, app.callback_url) if u))
    probe_url = f"http://{_local_address(blueprint.monitor_listen)}:{blueprint.ports.monitor}/varz"
    context = {
        "artifacts": artifacts,
        "formats": formats,
        "nimsforest_format": nimsforest_format,
        "report_urls": report_urls,
        "probe_url": probe_url,
    }
    files = [
        # Group nats is granted read access by the bootstrap once that group exists.
        NodeFile(paths.nats_conf, render_nats_conf(blueprint), "0640"),
        NodeFile(paths.node_info, json.dumps(node_info(blueprint, rendered_at), indent=2) + "\n"),
        NodeFile(paths.fetch_verified, _render("fetch-verified.sh.j2", blueprint), "0755"),
        NodeFile(paths.install_nats, _render("install-nats.sh.j2", blueprint, **context), "0755"),
        NodeFile(paths.bootstrap, _render("bootstrap.sh.j2", blueprint, **context), "0755"),
    ]
    if blueprint.host_firewall:
        files.append(NodeFile(paths.firewall, render_firewall(blueprint), "0644"))
        files.append(NodeFile(paths.route_peers, render_route_peers(blueprint), "0644"))
    files.extend(tls_files(blueprint))
    files.extend(access_files(blueprint, probe_url))
    for unit, text in render_unit_files(blueprint).items():
        files.append(NodeFile(f"{paths.units}/{unit}", text))
    return files


def reconfigured_files(blueprint: NodeBlueprint) -> list[NodeFile]:
    """What ``Provider.apply_blueprint`` writes on a running cloud node: ``nats.conf``, the
    route TLS files and, with the host firewall, the route peers (load them alone with
    ``NODE_PATHS.load_route_peers()``).  Everything else a node got at first boot does not
    change with the forest."""
    files = [NodeFile(NODE_PATHS.nats_conf, render_nats_conf(blueprint), "0640")]
    files.extend(tls_files(blueprint))
    if blueprint.host_firewall:
        files.append(NodeFile(NODE_PATHS.route_peers, render_route_peers(blueprint), "0644"))
    return files


def pack(text: str) -> str:
    """``text`` as cloud-init's ``gz+b64`` encoding: gzip (no timestamp), then base64."""
    return base64.b64encode(gzip.compress(text.encode("utf-8"), mtime=0)).decode("ascii")


def unpack(packed: str) -> str:
    """The text ``pack`` made, as cloud-init decodes it on the node."""
    return gzip.decompress(base64.b64decode(packed, validate=True)).decode("utf-8")


def tls_files(blueprint: NodeBlueprint) -> list[NodeFile]:
    """The route TLS files of a clustered node; the key is 0600 (the bootstrap gives it to nats)."""
    tls = blueprint.tls
    if tls is None or not blueprint.clustered:
        return []
    where = blueprint.tls_files
    return [
        NodeFile(where["ca"], tls.ca_cert),
        NodeFile(where["cert"], tls.cert),
        NodeFile(where["key"], tls.key.get_secret_value(), "0600"),
    ]


def access_files(blueprint: NodeBlueprint, probe_url: str) -> list[NodeFile]:
    """The SSH channel's node side: the helper, the sshd drop-in and the authorized key."""
    access = blueprint.access
    if access is None:
        return []
    paths = NODE_PATHS
    # restrict: no pty, agent or X11; one port forward, to the NATS client port (served on
    # the node's loopback only); command: the helper and nothing else.
    client = f"{_local_address(blueprint.client_listen)}:{blueprint.ports.client}"
    key_line = (
        f'restrict,port-forwarding,permitopen="{client}",command="{paths.reconfigure}" '
        f"{access.client_key} morpheus-{blueprint.forest_id}\n"
    )
    helper = _render("reconfigure.sh.j2", blueprint, probe_url=probe_url)
    return [
        NodeFile(paths.reconfigure, helper, "0755"),
        NodeFile(paths.sshd_drop_in, _render("sshd-morpheus.conf.j2", blueprint)),
        NodeFile(f"{paths.authorized_keys_dir}/{access.user}", key_line),
    ]


def render_user_data(blueprint: NodeBlueprint, *, now: datetime | None = None) -> str:
    """The node's ``#cloud-config`` user-data, checked the way a cloud will check it.

    ``now`` is the render time written into the node-info file; without it the blueprint's
    ``rendered_at`` is used, and one of the two is required.

    Every file is written compressed (``encoding: gz+b64``): what grows with the forest (the
    route mesh, the firewall's peer set) compresses well, so the largest forest a
    configuration allows fits the 32 KiB clouds accept.  The node firewall is not among
    ``write_files``: cloud-init's ``bootcmd`` writes and loads it and its route peers, before
    any other module of the first boot reaches the network (``firewall-bootcmd.sh.j2``).
    """
    rendered_at = now or blueprint.rendered_at
    if rendered_at is None:
        raise TemplateInputError("no render time: pass now= or set the blueprint's rendered_at")
    files = node_files(blueprint, rendered_at)
    by_path = {file.path: file for file in files}
    firewall = by_path.get(NODE_PATHS.firewall)
    peers = by_path.get(NODE_PATHS.route_peers)
    written = [file for file in files if file not in (firewall, peers)]
    bootcmd: list[str] = []
    if firewall is not None and peers is not None:
        script = _render("firewall-bootcmd.sh.j2", blueprint)
        packed = [pack(firewall.content), pack(peers.content)]
        bootcmd = ["sh", "-c", script, "morpheus-firewall", *packed]
    template = environment().get_template("cloud-init.yaml.j2")
    text = template.render(
        bp=blueprint,
        paths=NODE_PATHS,
        files=[(file, pack(file.content)) for file in written],
        bootcmd=json.dumps(bootcmd) if bootcmd else None,
        rendered_at=_utc(rendered_at),
    )
    delivered = delivered_files(text)
    for file in files:
        if delivered.get(file.path) != file.content:
            raise UserDataError(f"{file.path} does not survive the YAML round trip unchanged")
    return text


def delivered_files(user_data: str) -> dict[str, str]:
    """Every file a node gets from ``user_data``, by path, as the node will read it.

    The ``write_files`` entries decoded, and the firewall and route peers ``bootcmd`` writes.
    """
    document = check_user_data(user_data)
    files = {
        entry["path"]: unpack(entry["content"])
        if entry.get("encoding") == "gz+b64"
        else entry["content"]
        for entry in document.get("write_files", [])
    }
    for command in document.get("bootcmd", []):
        if command[:2] == ["sh", "-c"] and command[3:4] == ["morpheus-firewall"]:
            files[NODE_PATHS.firewall] = unpack(command[4])
            files[NODE_PATHS.route_peers] = unpack(command[5])
    return files


def check_user_data(text: str) -> dict[str, Any]:
    """The parsed user-data; ``UserDataError`` unless a cloud and cloud-init accept ``text``.

    Checks what cloud-init's schema cannot: the size limit, the first line, YAML syntax.
    """
    import yaml

    size = len(text.encode("utf-8"))
    if size > USER_DATA_LIMIT:
        raise UserDataError(
            f"user-data is {size} bytes, more than the {USER_DATA_LIMIT} bytes clouds accept"
        )
    if not text.startswith("#cloud-config\n"):
        raise UserDataError("user-data must start with the line #cloud-config")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserDataError(f"user-data is not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise UserDataError("user-data must be a YAML mapping")
    return document


def _render(template: str, blueprint: NodeBlueprint, **context: Any) -> str:
    return environment().get_template(template).render(bp=blueprint, paths=NODE_PATHS, **context)
