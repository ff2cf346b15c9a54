"""`morpheus check`: is this machine ready to plant, one line per check with a fix."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import replace
from pathlib import Path

from morpheus.errors import MorpheusError
from morpheus.fields import stays_on_site
from morpheus.provider import CheckResult, Provider, load_provider_class
from morpheus.provider_config import deprecated_values
from morpheus.settings import LoadedSettings, cloud_provider_name, load_settings

# An address in Google's public DNS range: connecting a UDP socket to it only asks the
# kernel for a route, no packet is sent.
_IPV6_PROBE = ("2001:4860:4860::8888", 53)


def check_ipv6(ipv4_setting: str | None = None) -> CheckResult:
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
            "enable IPv6 on this machine" + (f" or set {ipv4_setting}" if ipv4_setting else ""),
        )
    address = ipaddress.IPv6Address(source.split("%")[0])
    if stays_on_site(address):
        return CheckResult(
            "ipv6",
            False,
            f"no global IPv6 address: the IPv6 route leaves from {address}, which the "
            "internet does not route back to",
            "give this machine a global IPv6 address"
            + (f" or set {ipv4_setting}" if ipv4_setting else ""),
        )
    return CheckResult("ipv6", True, f"IPv6 route found (source {address})")


def check_state_dir(directory: Path) -> CheckResult:
    from morpheus.fields import path_problem

    problem = path_problem(str(directory.absolute() / "local"))
    if problem is not None:
        return CheckResult(
            "state",
            False,
            f"the state directory {str(directory)!r} {problem} (local nodes live under it)",
            "set MORPHEUS_STATE_DIR to another directory",
        )
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


def check_registry(state_dir: Path, url: str | None = None) -> CheckResult:
    """Whether the registry can be read; a damaged or lost one names its recovery."""
    from morpheus.errors import DamagedRegistryError
    from morpheus.listing import forest_summaries

    try:
        forests = forest_summaries(state_dir, url)
    except DamagedRegistryError as exc:
        return CheckResult("registry", False, str(exc), "morpheus registry rebuild")
    except MorpheusError as exc:
        return CheckResult("registry", False, str(exc))
    return CheckResult("registry", True, f"{len(forests)} forest(s) recorded")


def _cloud_configured(loaded: LoadedSettings, cloud: type[Provider]) -> bool:
    """Whether the operator set the cloud provider up: chose it, gave its table or a variable
    it reads, or still uses a key of the previous release."""
    settings = loaded.settings
    return (
        settings.infrastructure.provider is not None
        or bool(settings.providers.get(cloud.name))
        or any(os.environ.get(v) for names in cloud.environment.values() for v in names)
        or bool(deprecated_values(settings))
    )


NOT_NEEDED = "not needed for local forests"


def run_checks(config: Path | None, state_dir: Path) -> list[CheckResult]:
    """Every check, in order; a failing check never stops the others.

    The cloud provider's checks (token, SSH key, ...) and IPv6 are always shown; where the
    cloud is not set up they are marked not needed (local forests do without them) and do
    not fail the command.
    """
    results: list[CheckResult] = []
    try:
        loaded = load_settings(config)
    except MorpheusError as exc:
        return [CheckResult("config", False, str(exc), "see config.example.yaml")]
    where = loaded.path or "no config file (defaults)"
    results.append(CheckResult("config", True, f"valid: {where}"))
    results.append(check_state_dir(state_dir))
    settings = loaded.settings
    results.append(check_registry(state_dir, settings.registry.url))
    local = settings.infrastructure.local_provider
    try:
        results.extend(load_provider_class(local).from_settings(settings, state_dir).checks())
    except MorpheusError as exc:
        results.append(CheckResult(local, False, str(exc)))
    cloud_results: list[CheckResult] = []
    ipv4_setting: str | None = None
    needed = True
    try:
        cloud = load_provider_class(cloud_provider_name(settings))
        needed = _cloud_configured(loaded, cloud)
        ipv4_setting = cloud.ipv4_setting
        cloud_results.extend(cloud.from_settings(settings, state_dir).checks())
    except MorpheusError as exc:
        name = settings.infrastructure.provider or cloud_provider_name(settings)
        cloud_results.append(CheckResult(name, False, str(exc)))
    cloud_results.append(check_ipv6(ipv4_setting))
    if not needed:
        cloud_results = [
            replace(result, detail=f"{result.detail} ({NOT_NEEDED})", needed=False)
            for result in cloud_results
        ]
    return results + cloud_results
