"""`morpheus check`: is this machine ready to plant, one line per check with a fix."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from morpheus.errors import MorpheusError
from morpheus.provider import CheckResult, load_provider_class
from morpheus.settings import LoadedSettings, load_settings

# An address in Google's public DNS range: connecting a UDP socket to it only asks the
# kernel for a route, no packet is sent.
_IPV6_PROBE = ("2001:4860:4860::8888", 53)


def check_ipv6() -> CheckResult:
    """Whether this machine has a route to the IPv6 internet (IPv6-only nodes need it)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.connect(_IPV6_PROBE)
            source = probe.getsockname()[0]
    except OSError as exc:
        reason = "no IPv6 route" if exc.errno in (errno.ENETUNREACH, errno.EADDRNOTAVAIL) else exc
        return CheckResult(
            "ipv6",
            False,
            f"this machine cannot reach IPv6 addresses ({reason})",
            "enable IPv6 on this machine or set infrastructure.enable_ipv4: true",
        )
    return CheckResult("ipv6", True, f"IPv6 route found (source {source})")


def check_state_dir(directory: Path) -> CheckResult:
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        return CheckResult(
            "state",
            False,
            f"cannot create {directory}: {exc}",
            "set MORPHEUS_STATE_DIR to a writable directory",
        )
    if not os.access(directory, os.W_OK):
        return CheckResult(
            "state",
            False,
            f"{directory} is not writable",
            "set MORPHEUS_STATE_DIR to a writable directory",
        )
    return CheckResult("state", True, f"state directory {directory}")


def _cloud_configured(loaded: LoadedSettings) -> bool:
    settings = loaded.settings
    return settings.secrets.hetzner_api_token is not None or (
        loaded.sources.get("infrastructure.provider", "default") != "default"
    )


def run_checks(config: Path | None, state_dir: Path) -> list[CheckResult]:
    """Every check, in order; a failing check never stops the others."""
    results: list[CheckResult] = []
    try:
        loaded = load_settings(config)
    except MorpheusError as exc:
        return [CheckResult("config", False, str(exc), "see config.example.yaml")]
    where = loaded.path or "no config file (defaults)"
    results.append(CheckResult("config", True, f"valid: {where}"))
    results.append(check_state_dir(state_dir))
    providers = ["local"]
    if _cloud_configured(loaded):
        providers.append(loaded.settings.infrastructure.provider)
    for name in providers:
        try:
            provider = load_provider_class(name).from_settings(loaded.settings, state_dir)
            results.extend(provider.checks())
        except MorpheusError as exc:
            results.append(CheckResult(name, False, str(exc)))
    if len(providers) > 1:
        results.append(check_ipv6())
    return results
