"""Where Morpheus puts things on a cloud node; templates, providers and tests read them here."""

from __future__ import annotations

from dataclasses import dataclass

#: The route peers file's name, included by the firewall relative to its directory.
ROUTE_PEERS_NAME = "route-peers.nft"


@dataclass(frozen=True)
class NodePaths:
    """Where Morpheus puts things on a cloud node; templates and tests read them from here."""

    nats_conf: str = "/etc/nats/nats.conf"
    nats_binary: str = "/usr/local/bin/nats-server"
    nimsforest_binary: str = "/opt/nimsforest/bin/nimsforest"
    firewall_dir: str = "/etc/morpheus"
    units: str = "/etc/systemd/system"
    lib_dir: str = "/usr/local/lib/morpheus"
    state_dir: str = "/var/lib/morpheus"
    nft: str = "/usr/sbin/nft"
    sshd_drop_in: str = "/etc/ssh/sshd_config.d/morpheus.conf"
    #: One file per user name (sshd's %u): keys Morpheus authorizes, for one command each.
    authorized_keys_dir: str = "/etc/ssh/morpheus_authorized_keys"

    @property
    def firewall(self) -> str:
        """The node firewall, loaded with ``nft -I <firewall_dir> -f`` (it includes the next)."""
        return f"{self.firewall_dir}/firewall.nft"

    @property
    def route_peers(self) -> str:
        """Who may open routes to the node: replaced (and loaded alone) when the forest changes."""
        return f"{self.firewall_dir}/{ROUTE_PEERS_NAME}"

    def load_firewall(self) -> list[str]:
        """The command that loads the whole node firewall, route peers included."""
        return [self.nft, "-I", self.firewall_dir, "-f", self.firewall]

    def load_route_peers(self) -> list[str]:
        """The command that swaps the route peer sets alone, in one transaction."""
        return [self.nft, "-f", self.route_peers]

    @property
    def bootstrap(self) -> str:
        return f"{self.lib_dir}/bootstrap"

    @property
    def install_nats(self) -> str:
        return f"{self.lib_dir}/install-nats"

    @property
    def fetch_verified(self) -> str:
        return f"{self.lib_dir}/fetch-verified"

    @property
    def reconfigure(self) -> str:
        """The helper Morpheus runs over SSH to change a booted node (``morpheus.reconfigure``)."""
        return f"{self.lib_dir}/reconfigure"

    @property
    def node_info(self) -> str:
        return f"{self.state_dir}/node-info.json"

    @property
    def ready_marker(self) -> str:
        return f"{self.state_dir}/ready"

    @property
    def failed_marker(self) -> str:
        return f"{self.state_dir}/failed"


NODE_PATHS = NodePaths()
