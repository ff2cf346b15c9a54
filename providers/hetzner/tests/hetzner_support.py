"""Constants and helpers the Hetzner tests share (a module, not conftest: several test
directories have a conftest, so importing one by that name is ambiguous)."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import hcloud
from morpheus_hetzner.provider import HetznerProvider

from morpheus.settings import Settings

HcloudClientFactory = Callable[..., hcloud.Client]
SettingsFactory = Callable[..., Settings]
ProviderFactory = Callable[..., HetznerProvider]

#: Where test forests say SSH and monitoring come from (a documentation prefix).
ADMIN_SOURCE = "2001:db8:ad::/64"

#: Provider knobs scaled down like the fake's clock: polls and retries in milliseconds.
FAST_PROVIDER = {
    "poll_interval": 0.01,
    "poll_max_interval": 0.05,
    "retry_base_delay": 0.01,
    "retry_max_delay": 0.05,
    "create_jitter": 0.01,
    "request_timeout": 5.0,
    "delete_timeout": 30.0,
}


def public_key_line() -> str:
    """A well-formed OpenSSH ed25519 public key (random, never used to log in)."""
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + os.urandom(32)
    return "ssh-ed25519 " + base64.b64encode(blob).decode() + " test@morpheus"
