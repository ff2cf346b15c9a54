"""A failed bootstrap, read back from a node's console, ends the readiness wait at once."""

from __future__ import annotations

import socket
import time

import pytest

from morpheus.boot_report import BootFailure, failure_in_console
from morpheus.errors import ReadinessError
from morpheus.readiness import ReadinessTarget, wait_nats_ready

CONSOLE = """\
[   35.1] systemd[1]: Mounting tmp.mount - Temporary Directory /tmp...
[  161.5] cloud-init[359]: morpheus: setting up node forest-1-node-1 of forest forest-1
[  162.6] cloud-init[359]: morpheus: downloading http://[fd00::1]:8469/n.whl
[  163.0] cloud-init[359]: morpheus: SHA-256 of http://[fd00::1]:8469/n.whl verified (85)
[  163.1] cloud-init[359]: \x1b[0;1;31mnats-server: config error: bad route\x1b[0m
[  163.2] cloud-init[359]: morpheus: FAILED while checking nats.conf (exit status 1) at \
2026-11-30T09:40:02Z; this node does not serve
[  163.3] cloud-init[359]: morpheus: FAILED while writing the ready marker (exit status 2) at \
2026-11-30T09:40:09Z; this node does not serve
"""


def test_the_first_failure_and_its_cause_are_found() -> None:
    failure = failure_in_console(CONSOLE.replace("\\\n", ""))
    # The verified line is progress, not a cause; nats-server's own line has no prefix.
    assert failure == BootFailure(
        step="checking nats.conf", exit_status=1, failed_at="2026-11-30T09:40:02Z", cause=None
    )
    assert failure.describe() == (
        "bootstrap failed while checking nats.conf (exit status 1) at 2026-11-30T09:40:02Z"
    )


def test_the_message_before_the_failure_is_its_cause() -> None:
    console = (
        "morpheus: downloading http://m/n.whl\r\n"
        "morpheus: could not download http://m/n.whl; nothing was installed\r\n"
        "morpheus: FAILED while installing nats-server 2.15.1 (exit status 1); "
        "this node does not serve\r\n"
    )
    failure = failure_in_console(console)
    assert failure is not None
    assert failure.describe() == (
        "bootstrap failed while installing nats-server 2.15.1 (exit status 1): "
        "could not download http://m/n.whl; nothing was installed"
    )


@pytest.mark.parametrize(
    "console",
    ["", "morpheus: node n is ready\n", "morpheus: FAILED while half a line", "FAILED while x"],
)
def test_no_failure(console: str) -> None:
    assert failure_in_console(console) is None


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_reported_boot_failure_ends_the_wait_long_before_the_deadline() -> None:
    target = ReadinessTarget("forest-1-node-1", "127.0.0.1", _closed_port(), expected_peers=0)
    asked: list[str] = []

    def boot_failure(node_id: str) -> str | None:
        asked.append(node_id)
        return "bootstrap failed while installing nats-server" if len(asked) >= 2 else None

    said: list[tuple[str, str]] = []
    started = time.monotonic()
    with pytest.raises(ReadinessError) as caught:
        wait_nats_ready(
            [target],
            deadline=started + 60,
            max_interval=0.05,
            progress=lambda node, words: said.append((node, words)),
            boot_failure=boot_failure,
            failure_interval=0.1,
        )
    assert str(caught.value) == ("forest-1-node-1: bootstrap failed while installing nats-server")
    assert time.monotonic() - started < 10
    assert asked == ["forest-1-node-1", "forest-1-node-1"]
    # Shown as progress at once, before the caller's rollback.
    assert said[-1] == ("forest-1-node-1", "bootstrap failed while installing nats-server")
