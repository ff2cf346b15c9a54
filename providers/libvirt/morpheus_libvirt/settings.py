"""``providers.libvirt`` in config.yaml: where the VMs run and what they are made of."""

from __future__ import annotations

import ipaddress
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from morpheus.models import Capacity

#: "Morph" in ASCII after the ULA ``fd`` byte, subnet 1: easy to recognise in ``ip addr``.
DEFAULT_IPV6_PREFIX = "fd4d:6f72:7068:1::/64"


class MachineProfile(BaseModel):
    """The virtual hardware of every node of a forest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vcpus: int = Field(ge=1, le=512)
    memory_mib: int = Field(ge=512, description="RAM in MiB.")
    disk_gib: int = Field(ge=4, description="Size of the node's qcow2 overlay in GiB.")

    @property
    def capacity(self) -> Capacity:
        return Capacity(
            cores=self.vcpus,
            memory_bytes=self.memory_mib << 20,
            disk_bytes=self.disk_gib << 30,
        )

    def describe(self) -> str:
        return f"{self.vcpus} vCPU, {self.memory_mib} MiB RAM, {self.disk_gib} GiB disk"


def default_profiles() -> dict[str, MachineProfile]:
    return {
        "small": MachineProfile(vcpus=2, memory_mib=2048, disk_gib=20),
        "medium": MachineProfile(vcpus=2, memory_mib=4096, disk_gib=40),
        "large": MachineProfile(vcpus=4, memory_mib=8192, disk_gib=80),
    }


class LibvirtSettings(BaseModel):
    """``providers.libvirt`` in config.yaml."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(default="qemu:///system", description="libvirt connection URI.")
    virt_type: Literal["kvm", "qemu"] = Field(
        default="kvm", description="kvm (hardware virtualisation) or qemu (slow emulation)."
    )
    pool: str = Field(default="default", description="Storage pool of the node volumes.")
    base_image: str | None = Field(
        default=None,
        description="Path on the libvirt host of a cloud image that is a volume of a pool.",
    )
    base_image_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="Cloud image downloaded once into the pool (needs base_image_sha256).",
    )
    base_image_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    network: str = Field(
        default="morpheus",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$",
        description="The morpheus-managed libvirt network; created when missing.",
    )
    ipv6_prefix: str = Field(
        default=DEFAULT_IPV6_PREFIX, description="IPv6 ULA prefix of the network."
    )
    ipv4_subnet: str | None = Field(
        default=None, description="Also give nodes IPv4 (NAT) from this subnet, e.g. 10.77.0.0/24."
    )
    console_log_dir: str = Field(
        default="/var/log/libvirt/qemu",
        pattern=r"^/\S*$",
        description=(
            "Directory on the libvirt host where each node's serial console is logged "
            "(<node id>-console.log), read to report a failed first boot at once; libvirt's "
            "own QEMU logs (<node id>.log) are there by default. Teardown removes both."
        ),
    )
    profile: str = Field(default="small", description="Which of `profiles` every node gets.")
    profiles: dict[str, MachineProfile] = Field(default_factory=default_profiles)

    @field_validator("ipv6_prefix")
    @classmethod
    def _ipv6_network(cls, value: str) -> str:
        try:
            network = ipaddress.IPv6Network(value)
        except ValueError as exc:
            raise ValueError(
                f"must be an IPv6 network with its host bits zero, e.g. {DEFAULT_IPV6_PREFIX} "
                f"({exc})"
            ) from None
        if network.prefixlen > 120:
            raise ValueError("must be /120 or larger so there are addresses for the nodes")
        return str(network)

    @field_validator("ipv4_subnet")
    @classmethod
    def _ipv4_network(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            network = ipaddress.IPv4Network(value)
        except ValueError as exc:
            raise ValueError(
                f"must be an IPv4 network with its host bits zero, e.g. 10.77.0.0/24 ({exc})"
            ) from None
        if network.prefixlen > 27:
            raise ValueError("must be /27 or larger so there are addresses for the nodes")
        return str(network)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.profile not in self.profiles:
            names = ", ".join(sorted(self.profiles)) or "none"
            raise ValueError(f"profile {self.profile!r} is not in profiles ({names})")
        if self.base_image is not None and self.base_image_url is not None:
            raise ValueError("set base_image or base_image_url, not both")
        if self.base_image_url is not None and self.base_image_sha256 is None:
            raise ValueError(
                "base_image_url needs base_image_sha256: a downloaded image is used only "
                "after its SHA-256 is checked"
            )
        return self

    @property
    def machine(self) -> MachineProfile:
        return self.profiles[self.profile]
