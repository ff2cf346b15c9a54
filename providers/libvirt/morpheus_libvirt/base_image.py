"""The cloud image every node's disk is an overlay of: a pool volume, downloaded once if need be."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from morpheus.errors import ProviderError

_QCOW2_MAGIC = b"QFI\xfb"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BaseImage:
    """A backing file on the libvirt host and the format QEMU must read it as."""

    path: str
    format: str


def image_format(head: bytes) -> str:
    """``qcow2`` when the file starts with the qcow2 magic, else ``raw``."""
    return "qcow2" if head.startswith(_QCOW2_MAGIC) else "raw"


def downloaded_volume_name(sha256: str, image_format: str) -> str:
    """The pool volume of a downloaded image: its digest names it, its format is in the suffix.

    The format is kept in the name because libvirt only learns a file's format by probing,
    which not every pool type does, and a qcow2 image read as raw does not boot.
    """
    return f"morpheus-base-{sha256[:16]}.{image_format}"


def download_verified(
    url: str, sha256: str, directory: Path, *, timeout: float = 60.0
) -> tuple[Path, str]:
    """Download ``url`` into ``directory``; return the file and its format once the digest matches.

    A file whose SHA-256 differs is deleted before the error is raised.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = directory / f"{sha256}.partial"
    digest = hashlib.sha256()
    head = b""
    try:
        with (
            httpx.stream("GET", url, follow_redirects=True, timeout=timeout) as response,
            target.open("wb") as out,
        ):
            if response.status_code != httpx.codes.OK:
                raise ProviderError(
                    f"downloading the base image {url} failed: HTTP {response.status_code}; "
                    "check providers.libvirt.base_image_url"
                )
            for chunk in response.iter_bytes(_CHUNK):
                if len(head) < len(_QCOW2_MAGIC):
                    head += chunk[: len(_QCOW2_MAGIC)]
                digest.update(chunk)
                out.write(chunk)
    except httpx.HTTPError as exc:
        target.unlink(missing_ok=True)
        raise ProviderError(f"downloading the base image {url} failed: {exc}") from exc
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != sha256:
        target.unlink(missing_ok=True)
        raise ProviderError(
            f"the base image {url} has SHA-256 {digest.hexdigest()}, not the configured "
            f"{sha256}; fix providers.libvirt.base_image_sha256 (or the URL) and try again"
        )
    return target, image_format(head)


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            yield chunk
