"""``apply_blueprint`` for nodes that boot from user-data: over the SSH node channel.

Cloud and VM providers share it.  Morpheus sends each node's helper
(``/usr/local/lib/morpheus/reconfigure``, from its user-data) one ``apply`` command and a tar
archive of the node's new files: ``nats.conf``, the route TLS files and the node firewall,
rendered by the same functions as the first boot.  The helper installs each file that
differs with one rename, reloads nats-server when only its routes changed and restarts it
otherwise (the JetStream store is kept), reloads the firewall, waits until nats-server serves
the new configuration, and prints its ``/varz``.  Morpheus then checks that the node serves
what was sent: its name, and exactly the routes of the blueprint.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import tarfile
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any, ClassVar

from morpheus.blueprint import NodeBlueprint
from morpheus.errors import MorpheusError, ProviderError
from morpheus.models import host_for_url
from morpheus.provider import NodeHandle, Provider
from morpheus.remote import (
    DEFAULT_PARALLEL,
    Deadlines,
    NodeChannelError,
    NodeCommand,
    NodeEndpoint,
    run_commands,
)
from morpheus.render import NODE_PATHS, reconfigured_files
from morpheus.safe_text import printable


def apply_blueprints(
    changes: Sequence[tuple[NodeHandle, NodeBlueprint]],
    *,
    parallel: int = DEFAULT_PARALLEL,
    deadlines: Deadlines | None = None,
) -> dict[str, MorpheusError | None]:
    """Reconfigure each node, ``parallel`` at a time: its error (None: applied), by node id."""
    outcome: dict[str, MorpheusError | None] = {}
    commands = []
    wanted = {}
    for handle, blueprint in changes:
        try:
            commands.append(apply_command(handle, blueprint))
        except MorpheusError as exc:
            outcome[handle.node_id] = exc
            continue
        wanted[handle.node_id] = blueprint
    for result in run_commands(commands, parallel=parallel, deadlines=deadlines):
        if result.error is not None:
            outcome[result.node_id] = result.error
            continue
        try:
            check_served(wanted[result.node_id], result.stdout)
        except MorpheusError as exc:
            outcome[result.node_id] = exc
        else:
            outcome[result.node_id] = None
    return outcome


def apply_blueprint(handle: NodeHandle, blueprint: NodeBlueprint) -> None:
    """Reconfigure one node; raise its one-line error."""
    error = apply_blueprints([(handle, blueprint)])[handle.node_id]
    if error is not None:
        raise error


def apply_command(handle: NodeHandle, blueprint: NodeBlueprint) -> NodeCommand:
    """The ``apply`` command for the node's helper, with the archive of its new files."""
    access = blueprint.access
    if access is None or access.client_private_key is None:
        raise NodeChannelError(
            f"{handle.node_id}: no SSH host key is recorded for this node (it was made before "
            "Morpheus pinned host keys), so it cannot be reconfigured: replace it"
        )
    addresses = tuple(dict.fromkeys(a for a in (blueprint.host, *handle.addresses) if a))
    endpoint = NodeEndpoint(
        node_id=handle.node_id,
        addresses=addresses,
        port=blueprint.ssh_port,
        host_key=access.host_key,
        user=access.user,
    )
    return NodeCommand(
        endpoint=endpoint,
        command="apply",
        client_key=access.client_private_key,
        stdin=archive(reconfiguration_files(blueprint)),
    )


def archive(files: dict[str, str]) -> bytes:
    """``files`` (name -> text) as the uncompressed tar the helper reads; modes are its own."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, text in sorted(files.items()):
            data = text.encode("utf-8")
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mode = 0o600
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def check_served(blueprint: NodeBlueprint, stdout: str) -> dict[str, Any]:
    """The helper's report, checked: the node serves ``blueprint``'s name and routes."""
    node = blueprint.node_id
    try:
        report = json.loads(stdout)
        varz = report["varz"]
        served_name = varz["server_name"]
    except (ValueError, KeyError, TypeError):
        lines = [line for line in stdout.splitlines() if line.strip()]
        shown = printable(lines[-1])[:120] if lines else "nothing"
        raise ProviderError(
            f"{node}: the reconfiguration helper ({NODE_PATHS.reconfigure}) reported "
            f"{shown!r} instead of nats-server's state"
        ) from None
    if served_name != node:
        raise ProviderError(
            f"{node}: the node serves nats-server {printable(str(served_name))[:80]!r} "
            "after the change, not this node"
        )
    served = _routes((varz.get("cluster") or {}).get("urls") or [])
    expected = _routes(
        [f"{host_for_url(p.host)}:{p.port}" for p in blueprint.peers] if blueprint.clustered else []
    )
    if served != expected:
        raise ProviderError(
            f"{node}: nats-server serves routes to {_listed(served)}, "
            f"not the {_listed(expected)} it was given"
        )
    return dict(report)


def reconfiguration_files(blueprint: NodeBlueprint) -> dict[str, str]:
    """What ``apply`` sends the node's helper (``render.reconfigured_files``), by file name."""
    return {PurePosixPath(f.path).name: f.content for f in reconfigured_files(blueprint)}


def _routes(urls: Sequence[object]) -> set[str]:
    """``host:port`` strings, addresses in one spelling (``[2001:db8::1]:6222``)."""
    routes = set()
    for url in urls:
        text = str(url)
        host, _, port = text.rpartition(":")
        host = host.strip("[]")
        with contextlib.suppress(ValueError):
            host = str(ipaddress.ip_address(host))
        routes.add(f"{host_for_url(host)}:{port}")
    return routes


def _listed(routes: set[str]) -> str:
    return ", ".join(sorted(printable(route)[:60] for route in routes)) or "no node"


class ReconfiguredOverSsh(Provider):
    """A provider whose nodes boot from the core's user-data and are changed over SSH.

    Subclass it instead of ``Provider``: ``apply_blueprint`` comes from this module (safe to
    call from several threads at once: ``services.converge`` does), and ``can_reconfigure``
    is true.
    """

    can_reconfigure: ClassVar[bool] = True
    renders_user_data: ClassVar[bool] = True

    def apply_blueprint(self, handle: NodeHandle, blueprint: NodeBlueprint) -> None:
        apply_blueprint(handle, blueprint)
