"""The libvirt binding: present where the tests run, explained where it is missing."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType

import pytest

from morpheus.errors import ProviderError
from morpheus.testing.tools import missing


def test_binding_is_importable() -> None:
    """A missing binding skips with the reason, or fails with MORPHEUS_REQUIRE_TOOLS (CI)."""
    try:
        importlib.import_module("morpheus_libvirt")
    except ImportError as exc:
        reason = (
            f"morpheus-libvirt is not installed in this environment ({exc}); add it to the "
            "workspace's dev dependencies or run with `uv run --with-editable providers/libvirt`"
        )
    else:
        from morpheus_libvirt.binding import INSTALL_HINT

        try:
            importlib.import_module("libvirt")
        except ImportError as exc:
            reason = f"the libvirt binding cannot be imported ({exc}); {INSTALL_HINT}"
        else:
            return
    missing(reason)


@pytest.fixture
def no_binding(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``import libvirt`` fails as it does where libvirt-python was never built."""
    try:
        version("morpheus-libvirt")
    except PackageNotFoundError:
        pytest.skip("morpheus-libvirt is not installed in this environment")
    binding = importlib.import_module("morpheus_libvirt.binding")
    monkeypatch.setitem(sys.modules, "libvirt", None)
    binding.load_libvirt.cache_clear()
    yield binding
    binding.load_libvirt.cache_clear()


def test_missing_binding_says_what_to_install(no_binding: ModuleType, state_dir: Path) -> None:
    from morpheus_libvirt.provider import LibvirtProvider
    from morpheus_libvirt.settings import LibvirtSettings

    provider = LibvirtProvider(LibvirtSettings(), state_dir / "libvirt")
    with pytest.raises(ProviderError) as caught:
        provider.list_nodes("forest-1")
    message = str(caught.value)
    assert "apt-get install libvirt-dev pkg-config" in message
    assert "libvirt-python" in message and "reinstall" in message


def test_plugin_loads_without_the_binding(no_binding: ModuleType) -> None:
    """`morpheus providers` and provider lookup never import libvirt."""
    from morpheus.provider import installed_providers, load_provider_class

    assert "libvirt" in {info.name for info in installed_providers()}
    # Importing the plugin would fail here if it imported libvirt at module level.
    assert load_provider_class("libvirt").name == "libvirt"


def test_multi_line_libvirt_errors_read_as_one_line() -> None:
    from morpheus_libvirt.binding import one_line

    text = "internal error: qemu unexpectedly closed the monitor:\\nline two\n  line three\n"
    assert one_line(text) == (
        "internal error: qemu unexpectedly closed the monitor: line two; line three"
    )
