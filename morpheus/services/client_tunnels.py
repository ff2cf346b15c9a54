"""NATS client URLs of a forest's nodes, as this machine reaches them.

Local nodes serve clients on a port this machine can open.  Cloud and VM nodes serve them on
their own loopback only, so their URLs lead through the SSH node channel: one tunnel per node
(``morpheus.remote.client_tunnel``), open while the block runs.  Growth uses them to declare
a standalone node's streams again and to raise R1 streams.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

from morpheus.errors import JetStreamMigrationError
from morpheus.models import Forest, Node, host_for_url
from morpheus.provider import Provider
from morpheus.services import Context
from morpheus.services.provision import node_access_for


def can_reach_clients(provider: Provider) -> bool:
    """Whether this machine can open NATS client connections to the provider's nodes."""
    return provider.reaches_client_port or provider.renders_user_data


@contextmanager
def client_urls(
    ctx: Context, provider: Provider, forest: Forest, nodes: Sequence[Node]
) -> Iterator[list[str]]:
    """A NATS client URL for each of ``nodes``, in order, usable while the block runs."""
    if provider.reaches_client_port:
        yield [f"nats://{host_for_url(n.host or '')}:{n.ports.client}" for n in nodes]
        return
    from morpheus.remote import NodeEndpoint, client_tunnel

    with ExitStack() as tunnels:
        urls = []
        for node in nodes:
            access = node_access_for(ctx.registry, provider, forest.id, node.id, new=False)
            if access is None or access.client_private_key is None:
                raise JetStreamMigrationError(
                    f"{node.id} has no pinned SSH host key (made before Morpheus could reach "
                    "booted nodes): its streams cannot be reached from here"
                )
            endpoint = NodeEndpoint(
                node_id=node.id,
                addresses=tuple(dict.fromkeys(a for a in (node.host, *node.addresses) if a)),
                port=ctx.settings.provisioning.ssh_port,
                host_key=access.host_key,
                user=access.user,
            )
            port = tunnels.enter_context(
                client_tunnel(endpoint, access.client_private_key, node.ports.client)
            )
            urls.append(f"nats://127.0.0.1:{port}")
        yield urls
