"""The NoCloud seed ISO cloud-init reads at first boot: user-data, meta-data, network-config.

cloud-init finds the seed as a filesystem labelled ``cidata``.  Linux reads the Rock Ridge
(and Joliet) names, so the files keep their real names; the plain ISO 9660 names beside them
only satisfy the format's character rules.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from morpheus_libvirt.addresses import NetworkPlan, NodeAddresses

SEED_LABEL = "cidata"

# Real name -> ISO 9660 level 3 name (d-characters only: no lower case, no hyphen).
_ISO_NAMES = {
    "user-data": "/USER_DATA.;1",
    "meta-data": "/META_DATA.;1",
    "network-config": "/NETWORK_CONFIG.;1",
}


@dataclass(frozen=True)
class SeedFiles:
    """The three NoCloud files of one node."""

    user_data: str
    meta_data: str
    network_config: str

    def by_name(self) -> dict[str, str]:
        return {
            "user-data": self.user_data,
            "meta-data": self.meta_data,
            "network-config": self.network_config,
        }


def meta_data(instance_id: str, hostname: str, public_keys: Sequence[str] = ()) -> str:
    """NoCloud ``meta-data``: instance id, host name, and SSH keys for the image's default user.

    A new instance id makes cloud-init run again on a new disk.
    """
    document: dict[str, object] = {"instance-id": instance_id, "local-hostname": hostname}
    if public_keys:
        document["public-keys"] = list(public_keys)
    return yaml.safe_dump(document, sort_keys=False)


def network_config(plan: NetworkPlan, node: NodeAddresses) -> str:
    """Netplan-style (version 2) static addresses, so the node's address is known before boot."""
    addresses = [f"{node.ipv6}/{plan.ipv6.prefixlen}"]
    routes = [{"to": "::/0", "via": str(plan.gateway6)}]
    nameservers = [str(plan.gateway6)]
    if node.ipv4 is not None and plan.ipv4 is not None:
        addresses.append(f"{node.ipv4}/{plan.ipv4.prefixlen}")
        routes.append({"to": "0.0.0.0/0", "via": str(plan.gateway4)})
        nameservers.append(str(plan.gateway4))
    document = {
        "version": 2,
        "ethernets": {
            "primary": {
                "match": {"macaddress": node.mac},
                "dhcp4": False,
                "dhcp6": False,
                # Router advertisements would add a second, unplanned SLAAC address.
                "accept-ra": False,
                "addresses": addresses,
                "routes": routes,
                "nameservers": {"addresses": nameservers},
            }
        },
    }
    return yaml.safe_dump(document, sort_keys=False)


def build_seed_iso(files: SeedFiles) -> bytes:
    """An ISO 9660 image labelled ``cidata`` holding the three files (Rock Ridge + Joliet)."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=SEED_LABEL, joliet=3, rock_ridge="1.09")
    try:
        for name, text in files.by_name().items():
            data = text.encode("utf-8")
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                _ISO_NAMES[name],
                rr_name=name,
                joliet_path=f"/{name}",
            )
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    return out.getvalue()
