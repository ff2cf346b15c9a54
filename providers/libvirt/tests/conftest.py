"""Fixtures for the libvirt tests, which run against libvirt's ``test:///default`` driver.

The test driver is libvirt itself (the real library, XML parser and API) with an in-memory
hypervisor: it defines and starts domains, networks, pools and volumes, but boots nothing and
stores no volume contents.  All of its state lives as long as one connection to it is open in
this process, so every test gets its own connection and closes it; ``test_driver`` then checks
that the next connection starts from the driver's stock state.

When the binding (or this plugin) cannot be imported, only ``test_binding.py`` is collected: it
skips with the reason, and fails instead when ``CI`` is set, so CI never passes by skipping.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# This directory is not a package and pytest runs with --import-mode=importlib, so make
# `libvirt_support` importable by name for this conftest and the test modules next to it.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from libvirt_support import (  # noqa: E402
    BASE_IMAGE,
    TEST_POOL,
    TEST_URI,
    VolumeContents,
    add_base_image,
)


def _import_problem() -> str | None:
    try:
        import libvirt  # noqa: F401
        import morpheus_libvirt  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


if _import_problem() is not None:
    collect_ignore = [
        path.name
        for path in Path(__file__).parent.glob("test_*.py")
        if path.name != "test_binding.py"
    ]


@pytest.fixture
def test_driver() -> Iterator[str]:
    """The test driver's URI; afterwards, checks that the test left no connection open."""
    import libvirt

    yield TEST_URI
    gc.collect()
    fresh = libvirt.open(TEST_URI)
    try:
        leftovers = [d.name() for d in fresh.listAllDomains(0) if d.name() != "test"]
        pool = fresh.storagePoolLookupByName(TEST_POOL)
        volumes = [v.name() for v in pool.listAllVolumes(0)]
    finally:
        fresh.close()
    assert leftovers == [] and volumes == [], (
        "a libvirt connection outlived its test, so the test driver kept its state: "
        f"domains {leftovers}, volumes {volumes}"
    )


@pytest.fixture
def volume_contents() -> VolumeContents:
    return VolumeContents()


@pytest.fixture
def libvirt_settings(test_driver: str, tmp_path: Path) -> Any:
    from morpheus_libvirt.settings import LibvirtSettings, MachineProfile

    return LibvirtSettings(
        uri=test_driver,
        console_log_dir=str(tmp_path / "console-logs"),
        pool=TEST_POOL,
        base_image=BASE_IMAGE,
        ipv4_subnet="10.77.0.0/24",
        # The test driver's host has 3 GiB of RAM.
        profiles={"small": MachineProfile(vcpus=1, memory_mib=1536, disk_gib=20)},
    )


@pytest.fixture
def provider(
    libvirt_settings: Any, volume_contents: VolumeContents, state_dir: Path
) -> Iterator[Any]:
    """A libvirt provider on the test driver, with a base image volume in its pool."""
    from morpheus_libvirt.provider import LibvirtProvider

    made = LibvirtProvider(
        libvirt_settings, state_dir / "libvirt", upload=volume_contents, poll_interval=0.01
    )
    try:
        add_base_image(made.connection())
        yield made
    finally:
        made.close()
