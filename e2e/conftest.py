"""Fixtures of the VM tests: the libvirt host `e2e/vm-host up` prepared, and the real CLI.

The tests plant real forests of QEMU/KVM guests.  They need root and a prepared host:

    e2e/vm-host up && uv run pytest -m vm e2e; e2e/vm-host down

(`.ci/run` does exactly that, with the teardown in a trap).  Without a prepared host they
skip locally and fail in CI (``MORPHEUS_REQUIRE_TOOLS=1``, as for every other system tool).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from morpheus.testing import network_guard
from morpheus.testing.tools import tools_required

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from vm_support import STATE_DIR, Cli, ConsoleWatch, Plant, VmHost  # noqa: E402  (needs the sys.path entry)


@pytest.fixture(scope="session")
def vm_host() -> VmHost:
    """The prepared host; without one the tests skip, or fail under MORPHEUS_REQUIRE_TOOLS (CI)."""
    config_path = STATE_DIR / "config.yaml"
    if not config_path.is_file():
        reason = f"no prepared libvirt host ({config_path} is missing)"
        if tools_required():
            pytest.fail(f"{reason}: run `e2e/vm-host up` before the VM tests")
        pytest.skip(f"{reason}: run `e2e/vm-host up` as root first")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    host = VmHost(state_dir=STATE_DIR, config_path=config_path, config=config)
    # The guests' network is the fenced bridge this host made: the network guard lets the
    # tests (and the processes they start) reach it.
    network_guard.allow([host.libvirt["ipv6_prefix"]])
    print(f"\nVM tests: virt_type {host.libvirt['virt_type']}, image {host.libvirt['base_image']}")
    return host


@pytest.fixture(scope="session")
def cli(vm_host: VmHost, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    root = tmp_path_factory.mktemp("morpheus-vm")
    home = root / "home"
    home.mkdir()
    return Cli(host=vm_host, state_dir=root / "state", home=home)


def _defined_domains(uri: str) -> int:
    listed = subprocess.run(
        ["virsh", "-c", uri, "list", "--all", "--name"], capture_output=True, text=True, check=True
    )
    return sum(1 for name in listed.stdout.split() if name.startswith("forest-"))


@pytest.fixture(scope="session")
def console_watch(vm_host: VmHost) -> Iterator[ConsoleWatch]:
    watch = ConsoleWatch(Path(vm_host.libvirt["console_log_dir"]))
    yield watch
    watch.stop()


@pytest.fixture(scope="session")
def plants(cli: Cli, vm_host: VmHost, console_watch: ConsoleWatch) -> Iterator[dict[str, Plant]]:
    """The forests of the session: one node, three nodes, and one whose boot must fail.

    They boot at the same time, but each plant starts once the one before has defined its
    VMs: two plants picking addresses at the same moment would pick the same ones.
    """
    uri = vm_host.libvirt["uri"]
    order: list[tuple[str, int, tuple[str, ...], dict[str, str]]] = [
        ("one", 1, ("small", "-o", "json"), {}),
        ("three", 3, ("medium", "-o", "json"), {}),
        # The bootstrap must refuse this download (wrong digest) and plant must say so.
        # Kept after the failure, so that the test can read the node's own report.
        (
            "broken",
            1,
            ("small", "--keep-on-failure"),
            {"MORPHEUS_INTEGRATION__NATS_SHA256": "0" * 64},
        ),
    ]
    started: dict[str, Plant] = {}
    try:
        expected = _defined_domains(uri)
        for name, nodes, args, env in order:
            started[name] = Plant(cli, "libvirt", *args, "--yes", timeout=2700, **env)
            expected += nodes
            # Generous: on a loaded host a plant's start (pre-flight, certificates, seed
            # ISOs, volumes) has taken over 300 s.
            deadline = time.monotonic() + 900
            while _defined_domains(uri) < expected and started[name].process.poll() is None:
                said = "".join(line for _when, line in started[name].lines)
                assert time.monotonic() < deadline, (
                    f"plant {name}: its VMs not all defined in 900 s; it said:\n{said}"
                )
                time.sleep(1)
        yield started
    finally:
        for plant in started.values():
            plant.stop()
        # Whatever a failed test left: the forests' VMs and volumes, found from libvirt itself.
        for forest in cli.json("list"):
            cli.run("teardown", forest["id"], "--yes", timeout=600)
