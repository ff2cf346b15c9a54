"""``providers.hetzner`` in config.yaml, and where the API endpoint comes from."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from morpheus.errors import ConfigError
from morpheus.validation import validate_token

DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
ENDPOINT_VARIABLE = "HCLOUD_ENDPOINT"
#: Read as the hcloud CLI reads them, first set wins; they outrank ``providers.hetzner.token``.
TOKEN_VARIABLES = ("HCLOUD_TOKEN", "HETZNER_API_TOKEN")


class HetznerSettings(BaseModel):
    """``providers.hetzner``: what to create on Hetzner Cloud, and how to talk to its API.

    Who may reach the nodes (``infrastructure.admin_sources``), the operator's SSH public key
    (``infrastructure.ssh.key_path``) and the nodes' SSH port come from the core's context.
    """

    model_config = ConfigDict(extra="forbid")

    token: SecretStr | None = Field(
        default=None,
        description=f"API token (Read & Write); {' then '.join(TOKEN_VARIABLES)} win over it.",
    )
    server_type: str = Field(default="cx23", description="Server type of the nodes.")
    image: str = Field(default="ubuntu-24.04", description="OS image of the nodes.")
    locations: list[str] = Field(
        default_factory=lambda: ["fsn1", "nbg1", "hel1"],
        min_length=1,
        description="Locations in order of preference; a node moves on when one is full.",
    )
    enable_ipv4: bool = Field(
        default=False, description="Give nodes IPv4 too (it costs money); else IPv6 only."
    )
    ssh_key_name: str = Field(
        default="morpheus",
        description="Name of the SSH key in the project; uploaded from the operator's public "
        "key (infrastructure.ssh.key_path) if missing.",
    )
    endpoint: str | None = Field(
        default=None,
        description=f"API endpoint; {ENDPOINT_VARIABLE} wins, default {DEFAULT_ENDPOINT}.",
    )
    create_concurrency: int = Field(
        default=10, ge=1, le=20, description="Server creations in flight at once."
    )
    create_jitter: float = Field(
        default=0.3, ge=0, le=10, description="Seconds; each create waits a random part of it."
    )
    poll_interval: float = Field(
        default=1.0, gt=0, description="Seconds before the first poll of running actions."
    )
    poll_max_interval: float = Field(
        default=5.0, gt=0, description="Seconds; action polls back off up to this."
    )
    poll_backoff: float = Field(default=1.5, ge=1, description="Factor between action polls.")
    request_timeout: float = Field(default=30.0, gt=0, description="Seconds per API request.")
    read_timeout: float = Field(
        default=20.0,
        gt=0,
        description="Seconds a read-only look (status, list --refresh, check, the listing "
        "before a teardown) waits for the API over all its retries; creates and deletes keep "
        "their own deadlines.",
    )
    max_retries: int = Field(
        default=5, ge=0, le=20, description="Retries of one request (5xx, 429, lost answers)."
    )
    retry_base_delay: float = Field(
        default=1.0, gt=0, description="Seconds; retries back off exponentially from this."
    )
    retry_max_delay: float = Field(default=30.0, gt=0, description="Seconds; the longest backoff.")
    max_rate_limit_wait: float = Field(
        default=120.0,
        ge=0,
        description="Seconds one request may wait for the project's request budget (tokens "
        "refill at RateLimit-Limit/3600 per second) before giving up.",
    )
    delete_timeout: float = Field(
        default=300.0, gt=0, description="Seconds to wait for one server's delete action."
    )
    admin_prefix_v6: int = Field(
        default=64,
        ge=1,
        le=128,
        description="Prefix length admitted around this machine's detected IPv6 address "
        "(privacy addresses change within the /64) when infrastructure.admin_sources is empty.",
    )

    @field_validator("token", mode="before")
    @classmethod
    def _clean_token(cls, value: object) -> object:
        if isinstance(value, str):
            return validate_token(value, "providers.hetzner.token")
        return value


def resolve_endpoint(configured: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The API endpoint: ``HCLOUD_ENDPOINT`` (as the hcloud CLI reads it), the config, the default.

    Plain ``http`` is refused except to this machine: the token travels in every request.
    """
    env = os.environ if environ is None else environ
    endpoint = (env.get(ENDPOINT_VARIABLE) or configured or DEFAULT_ENDPOINT).rstrip("/")
    source = ENDPOINT_VARIABLE if env.get(ENDPOINT_VARIABLE) else "providers.hetzner.endpoint"
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{source} {endpoint!r} is not an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"{source} {endpoint!r} would send the API token unencrypted; use https "
            "(plain http is allowed only to this machine, for tests)"
        )
    return endpoint


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
