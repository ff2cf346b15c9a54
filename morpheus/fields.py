"""Validated field types: the values that reach templates, the config and the registry.

Names, hosts, networks, URLs, digests and NATS sizes are checked where they enter, so a
hostile value never reaches a template or a file.  Kept apart from ``blueprint`` so the
settings and the registry can use them without the blueprint's planning.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StringConstraints

#: IPv6 sources the internet does not route back to: unique local (fc00::/7: an IPv6 NAT, a
#: VPN), link-local, the deprecated site-local range and loopback.
_SITE_ONLY_V6 = tuple(
    ipaddress.IPv6Network(network) for network in ("fc00::/7", "fe80::/10", "fec0::/10", "::1/128")
)


def stays_on_site(address: ipaddress.IPv6Address) -> bool:
    """Whether nothing on the internet can answer ``address`` (a unique local address, ...)."""
    return any(address in network for network in _SITE_ONLY_V6)


Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")]
LabelValue = Annotated[
    str, StringConstraints(pattern=r"^(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")
]
# [0-9], not \d: the pattern engine counts every script's digits (fullwidth ones too) as \d.
Size = Annotated[str, StringConstraints(pattern=r"^[0-9]+[KMGT]?$")]
HttpUrl = Annotated[
    str, StringConstraints(pattern=r"^https?://[A-Za-z0-9._~:/?#\[\]@!$&()*+,;=%-]+$")
]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
PEM_BLOCK = r"-----BEGIN [A-Z ]{1,40}-----\n[A-Za-z0-9+/=\n]{1,16000}-----END [A-Z ]{1,40}-----\n"
#: One PEM block (a certificate or a key): nothing a template could be tricked by.
Pem = Annotated[str, StringConstraints(pattern=f"^{PEM_BLOCK}$")]
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def check_host(value: str) -> str:
    """``value`` as an IP address or DNS host name; ValueError when it is neither."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        # fullmatch: ``$`` alone also matches before a final newline, which must not pass.
        if _HOSTNAME.fullmatch(value):
            return value
    raise ValueError("must be an IP address or a DNS host name")


Host = Annotated[str, AfterValidator(check_host)]

# They end a quoted string in nats.conf, YAML or a unit file, or start a shell expansion or
# a systemd specifier; spaces and letters of any script are fine.
_PATH_FORBIDDEN = frozenset("\"'\\$`%")


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot go into a node's configuration files, or None when it can."""
    if not path.startswith("/"):
        return "must be an absolute path"
    if len(path) > 4000:
        return "is longer than 4000 characters"
    for position, char in enumerate(path, start=1):
        if char in _PATH_FORBIDDEN or not char.isprintable():
            return f"holds {char!r} at position {position}, which configuration files cannot hold"
    return None


def _check_path(value: str) -> str:
    problem = path_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


SafePath = Annotated[str, AfterValidator(_check_path)]


def _check_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("must be an IP address or CIDR network, e.g. 203.0.113.7/32") from None


Network = Annotated[str, AfterValidator(_check_network)]

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size_bytes(size: str) -> int:
    """A NATS size such as ``10G`` in bytes (binary units: the larger reading, to be safe)."""
    unit = size[-1] if size[-1] in _SIZE_UNITS else ""
    return int(size.removesuffix(unit)) * _SIZE_UNITS[unit]


def size_text(size: int) -> str:
    """``size`` bytes for people, in the largest binary unit it reaches: ``32 MiB``, ``1.5 GiB``."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


#: An OpenSSH public key line, type and key only (``ssh-ed25519 AAAA…``): no options, no comment.
SshPublicKey = Annotated[str, StringConstraints(pattern=r"^ssh-ed25519 [A-Za-z0-9+/]{68}$")]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Peer(Frozen):
    """Where one node's cluster port is reached."""

    host: Host
    port: int = Field(default=6222, ge=1, le=65535)


class RouteCredentials(Frozen):
    """The per-forest user that NATS routes authenticate with."""

    username: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    password: SecretStr

    @classmethod
    def generate(cls) -> RouteCredentials:
        return cls(username="morpheus-route", password=SecretStr(secrets.token_urlsafe(32)))
