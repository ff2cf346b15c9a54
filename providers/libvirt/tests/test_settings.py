"""``providers.libvirt``: defaults an operator can start from, mistakes named by key."""

from __future__ import annotations

import pytest
from morpheus_libvirt.provider import LibvirtProvider
from morpheus_libvirt.settings import LibvirtSettings

from morpheus.errors import ConfigError
from morpheus.settings import Settings


def _validate(table: dict[str, object]) -> LibvirtSettings:
    settings = LibvirtProvider.provider_settings(Settings(providers={"libvirt": table}))
    assert isinstance(settings, LibvirtSettings)
    return settings


def test_defaults() -> None:
    settings = _validate({})
    assert settings.uri == "qemu:///system"
    assert settings.virt_type == "kvm"
    assert settings.pool == "default"
    assert settings.network == "morpheus"
    assert settings.ipv6_prefix == "fd4d:6f72:7068:1::/64"
    assert settings.ipv4_subnet is None
    assert settings.base_image is None and settings.base_image_url is None
    assert settings.machine.describe() == "2 vCPU, 2048 MiB RAM, 20 GiB disk"
    assert set(settings.profiles) == {"small", "medium", "large"}


def test_profiles_can_be_replaced() -> None:
    settings = _validate(
        {"profile": "tiny", "profiles": {"tiny": {"vcpus": 1, "memory_mib": 1024, "disk_gib": 8}}}
    )
    assert settings.machine.capacity.memory_bytes == 1 << 30
    assert settings.machine.capacity.disk_bytes == 8 << 30


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"profile": "huge"}, "profile 'huge' is not in profiles"),
        ({"base_image_url": "https://example.org/noble.img"}, "needs base_image_sha256"),
        (
            {
                "base_image": "/var/lib/libvirt/images/noble.img",
                "base_image_url": "https://example.org/noble.img",
                "base_image_sha256": "a" * 64,
            },
            "not both",
        ),
        ({"base_image_sha256": "not-hex"}, "providers.libvirt.base_image_sha256"),
        ({"ipv6_prefix": "fd00::1/64"}, "providers.libvirt.ipv6_prefix: .*host bits"),
        ({"ipv6_prefix": "10.0.0.0/24"}, "providers.libvirt.ipv6_prefix: .*IPv6"),
        ({"ipv6_prefix": "fd00::/124"}, "/120 or larger"),
        ({"ipv4_subnet": "10.77.0.1/24"}, "providers.libvirt.ipv4_subnet: .*host bits"),
        ({"ipv4_subnet": "10.77.0.0/30"}, "/27 or larger"),
        ({"virt_type": "xen"}, "providers.libvirt.virt_type"),
        ({"network": "bad name"}, "providers.libvirt.network"),
        ({"uri": "qemu:///system", "pol": "default"}, "providers.libvirt.pol"),
    ],
)
def test_mistakes_are_named(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _validate(table)
