"""The storage pool: node volumes, and the base image every node's overlay is backed by."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

from morpheus.errors import ProviderError
from morpheus_libvirt.base_image import (
    BaseImage,
    download_verified,
    downloaded_volume_name,
    file_chunks,
)
from morpheus_libvirt.binding import NO_STORAGE_POOL, NO_STORAGE_VOL, find, ignoring
from morpheus_libvirt.libvirt_xml import raw_volume_xml, volume_format
from morpheus_libvirt.settings import LibvirtSettings

#: Writes bytes into a storage volume: ``(connection, volume, chunks, length)``.
VolumeUpload = Callable[[Any, Any, Iterable[bytes], int], None]


def volume_names(node_id: str) -> tuple[str, str]:
    """The node's overlay disk and seed ISO volumes."""
    return f"{node_id}.qcow2", f"{node_id}-seed.iso"


def storage_pool(connection: Any, name: str) -> Any:
    """The storage pool ``name``, started if it is defined but stopped."""
    pool = find(connection.storagePoolLookupByName, name, missing=NO_STORAGE_POOL)
    if pool is None:
        raise ProviderError(
            f"libvirt has no storage pool {name!r}: create one (virsh pool-define-as {name} "
            f"dir --target /var/lib/libvirt/images; virsh pool-start {name}; virsh "
            f"pool-autostart {name}) or set providers.libvirt.pool"
        )
    if not pool.isActive():
        pool.create(0)
    return pool


def delete_volume(pool: Any, name: str) -> None:
    volume = find(pool.storageVolLookupByName, name, missing=NO_STORAGE_VOL)
    if volume is not None:
        with ignoring(NO_STORAGE_VOL):
            volume.delete(0)


def require_base_image_setting(settings: LibvirtSettings) -> None:
    if settings.base_image is None and settings.base_image_url is None:
        raise ProviderError(
            "no base image: set providers.libvirt.base_image to a cloud image in a storage "
            "pool (e.g. /var/lib/libvirt/images/noble-server-cloudimg-amd64.img), or "
            "base_image_url and base_image_sha256 to download one"
        )


def configured_base_volume(connection: Any, pool: Any, settings: LibvirtSettings) -> Any:
    path = settings.base_image
    # The image may have been copied into the pool's directory since the pool started;
    # a refresh refused (a volume job is running) leaves the last scan, good enough.
    with suppress(Exception):
        pool.refresh(0)
    volume = find(connection.storageVolLookupByPath, path, missing=NO_STORAGE_VOL)
    if volume is None:
        raise ProviderError(
            f"base image {path} is not a volume of any libvirt storage pool: copy it into "
            "the pool's directory (e.g. /var/lib/libvirt/images) and run `virsh "
            f"pool-refresh {settings.pool}`, or fix providers.libvirt.base_image"
        )
    return volume


def base_image(
    connection: Any,
    pool: Any,
    settings: LibvirtSettings,
    downloads: Path,
    upload: VolumeUpload,
) -> BaseImage:
    """The backing file of every overlay; a configured URL is downloaded once into the pool."""
    require_base_image_setting(settings)
    if settings.base_image is not None:
        volume = configured_base_volume(connection, pool, settings)
        return BaseImage(volume.path(), volume_format(volume.XMLDesc(0)) or "raw")
    assert settings.base_image_url is not None and settings.base_image_sha256 is not None
    sha256 = settings.base_image_sha256
    for image_format in ("qcow2", "raw"):
        name = downloaded_volume_name(sha256, image_format)
        volume = find(pool.storageVolLookupByName, name, missing=NO_STORAGE_VOL)
        if volume is not None:
            return BaseImage(volume.path(), image_format)
    path, image_format = download_verified(settings.base_image_url, sha256, downloads)
    try:
        size = path.stat().st_size
        name = downloaded_volume_name(sha256, image_format)
        volume = pool.createXML(raw_volume_xml(name, size), 0)
        try:
            upload(connection, volume, file_chunks(path), size)
        except BaseException:
            with suppress(Exception):
                volume.delete(0)
            raise
    finally:
        path.unlink(missing_ok=True)
    return BaseImage(volume.path(), image_format)


def delete_volumes(connection: Any, pool_name: str, names: Iterable[str]) -> None:
    """Delete these volumes of the pool; a pool that is gone has none."""
    pool = find(connection.storagePoolLookupByName, pool_name, missing=NO_STORAGE_POOL)
    if pool is None:
        return
    if not pool.isActive():
        pool.create(0)
    for name in names:
        delete_volume(pool, name)


def delete_leftover_volumes(
    connection: Any, pool_name: str, forest_id: str, in_use: set[str]
) -> None:
    """The forest's node volumes that no domain uses (left by a create that failed)."""
    pool = find(connection.storagePoolLookupByName, pool_name, missing=NO_STORAGE_POOL)
    if pool is None or not pool.isActive():
        return
    leftover = re.compile(rf"^{re.escape(forest_id)}-node-\d+(?:\.qcow2|-seed\.iso)$")
    for volume in pool.listAllVolumes(0):
        name = volume.name()
        if leftover.match(name) and name not in in_use:
            delete_volume(pool, name)
