"""A failed bootstrap, read back from a node's console or its monitoring port, ends the
readiness wait at once.  (The bootstrap's real responder: tests/test_cloudinit.py.)"""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import respx

from morpheus.boot_report import BootFailure, failure_in_console, failure_in_reply
from morpheus.errors import ReadinessError
from morpheus.monitor import MonitorTarget, poll_nodes
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
    # Ended by the failure, far before the 60 s deadline (a loaded machine slows polls, too).
    assert time.monotonic() - started < 30
    assert asked == ["forest-1-node-1", "forest-1-node-1"]
    # Shown as progress at once, before the caller's rollback.
    assert said[-1] == ("forest-1-node-1", "bootstrap failed while installing nats-server")


# --- reported on the monitoring port (nodes whose console cannot be read: Hetzner) ---------

MESSAGES = [
    "morpheus: setting up node forest-1-node-1 of forest forest-1",
    "morpheus: downloading http://m/n.whl",
    "morpheus: SHA-256 mismatch for http://m/n.whl: expected 00, got 85; refusing to install it",
    "morpheus: FAILED while installing nats-server 2.15.1 (exit status 1) at "
    "2026-11-30T09:40:02Z; this node does not serve",
]


def reported(**fields: object) -> bytes:
    failed = {
        "node_id": "forest-1-node-1",
        "failed_step": "installing nats-server 2.15.1",
        "exit_status": 1,
        "failed_at": "2026-11-30T09:40:02Z",
        "messages": MESSAGES,
        **fields,
    }
    return json.dumps({"morpheus_bootstrap_failed": failed}).encode()


def test_a_reported_failure_names_the_step_and_the_message_before_it() -> None:
    failure = failure_in_reply(reported())
    assert failure is not None
    assert failure.describe() == (
        "bootstrap failed while installing nats-server 2.15.1 (exit status 1) at "
        "2026-11-30T09:40:02Z: SHA-256 mismatch for http://m/n.whl: expected 00, got 85; "
        "refusing to install it"
    )
    # Without messages (the file was lost) the marker alone still names the step.
    bare = failure_in_reply(reported(messages=[]))
    assert bare == BootFailure("installing nats-server 2.15.1", 1, "2026-11-30T09:40:02Z")


def test_text_from_the_node_cannot_drive_the_terminal() -> None:
    failure = failure_in_reply(
        reported(failed_step="x\x1b[2J", messages=["morpheus: evil\x1b]0;t\x07", *MESSAGES[-1:]])
    )
    assert failure is not None
    assert "\x1b" not in failure.describe() and "\x07" not in failure.describe()
    assert "x\\x1b[2J" in failure.describe()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>503 Service Unavailable</body></html>",
        b"\xff\xfe garbage",
        b"[1, 2]",
        b"[" * 100_000,
        b'{"morpheus_bootstrap_failed": "yes"}',
        b'{"morpheus_bootstrap_failed": {"failed_step": "", "exit_status": 1}}',
        b'{"morpheus_bootstrap_failed": {"failed_step": "x", "exit_status": "one"}}',
        b'{"morpheus_bootstrap_failed": {"failed_step": "x", "exit_status": 1, "messages": 7}}',
        b'{"status": "unavailable", "error": "JetStream not current"}',  # NATS's own 503
    ],
)
def test_anything_else_on_the_port_is_not_a_reported_failure(body: bytes) -> None:
    assert failure_in_reply(body) is None


def test_the_monitor_reads_a_reported_failure_and_garbage_stays_an_http_error() -> None:
    """respx: a 503 with the marker, and a 503 with garbage, side by side."""
    router = respx.Router(assert_all_called=False)
    failed = MonitorTarget(node_name="failed", host="2001:db8::1", port=8222)
    garbled = MonitorTarget(node_name="garbled", host="2001:db8::2", port=8222)
    for path in ("/varz", "/healthz"):
        router.get(f"http://[2001:db8::1]:8222{path}").respond(503, content=reported())
        router.get(f"http://[2001:db8::2]:8222{path}").respond(503, content=b"\x00garbage{")
    transport = httpx.MockTransport(router.async_handler)
    one, two = asyncio.run(poll_nodes([failed, garbled], transport=transport))
    assert one.boot_failure is not None and one.boot_failure.startswith(
        "bootstrap failed while installing nats-server 2.15.1 (exit status 1)"
    )
    assert one.error == one.boot_failure and not one.reachable
    assert (two.boot_failure, two.error, two.reachable) == (None, "/varz: HTTP 503", False)


class _Answers(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def garbage_port() -> Iterator[int]:
    """A real server on 127.0.0.1 that answers every path with 503 and garbage."""
    handler = type("Garbage", (_Answers,), {"body": b'{"morpheus_bootstrap_failed": [1]}'})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_garbage_on_the_port_does_not_end_the_wait_early(garbage_port: int) -> None:
    target = ReadinessTarget("forest-1-node-1", "127.0.0.1", garbage_port, expected_peers=0)
    said: list[tuple[str, str]] = []
    started = time.monotonic()
    with pytest.raises(ReadinessError) as caught:
        wait_nats_ready(
            [target],
            deadline=started + 2,
            max_interval=0.2,
            progress=lambda node, words: said.append((node, words)),
        )
    assert time.monotonic() - started >= 2
    assert str(caught.value) == (
        "not ready before the deadline: forest-1-node-1 (waiting for NATS monitoring)"
    )
    assert said == [("forest-1-node-1", "waiting for NATS monitoring")]
