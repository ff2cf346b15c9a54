"""The network guard (morpheus.testing.network_guard): from this machine's namespace a test, and
every Python program it starts, reaches loopback only; anything else is refused before a packet
is sent, and the test fails even when the code under test swallowed the error."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from morpheus.testing.cli import cli_environment
from morpheus.testing.fixtures import NetworkGuardReport
from morpheus.testing.netns import Lab, require_lab
from morpheus.testing.network_guard import NetworkGuardError

#: The benchmarking range the fake Hetzner API's servers get: routed off this machine.
OFF_MACHINE = ("198.18.0.1", 8222)


def test_a_connect_off_the_machine_is_refused_before_the_kernel_sees_it(
    network_guard_report: NetworkGuardReport,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)  # a real connect would return at once, with a port bound
        with pytest.raises(NetworkGuardError) as refused:
            sock.connect(OFF_MACHINE)
        # Never connected: the kernel gave the socket no local port, so no SYN was sent.
        assert sock.getsockname() == ("0.0.0.0", 0)
    assert refused.value.errno == errno.EPERM
    assert isinstance(refused.value, PermissionError)  # what callers see from a firewall
    (line,) = network_guard_report.take()
    assert "refused a connection to 198.18.0.1 port 8222" in line


def test_every_way_out_is_guarded(network_guard_report: NetworkGuardReport) -> None:
    with pytest.raises(NetworkGuardError):
        socket.create_connection(OFF_MACHINE, timeout=1)
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        assert sock.connect_ex(("2001:db8:c000:1::1", 8222)) == errno.EPERM
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(NetworkGuardError):
        sock.sendto(b"x", ("198.18.0.1", 53))
    with pytest.raises(NetworkGuardError):
        socket.getaddrinfo("forest.example.com", 443)
    assert len(network_guard_report.take()) == 4


def test_loopback_and_a_route_lookup_pass(network_guard_report: NetworkGuardReport) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket.create_connection(server.getsockname(), timeout=5).close()
        # All of 127.0.0.0/8 is this machine's, in IPv6 too.
        for host in ("127.3.4.5", "::ffff:127.0.0.1", "localhost"):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((host, 9), timeout=5).close()
    # A UDP connect sends nothing: it picks the route (the source address an API sees).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(OFF_MACHINE)
    assert network_guard_report.take() == []


def test_a_program_the_test_starts_is_refused_and_reported(
    network_guard_report: NetworkGuardReport,
) -> None:
    dial = f"import socket; socket.create_connection({OFF_MACHINE!r}, timeout=1)"
    run = subprocess.run(
        [sys.executable, "-c", dial],
        capture_output=True,
        text=True,
        env=cli_environment(),
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert "NetworkGuardError" in run.stderr
    (line,) = network_guard_report.take()
    assert "refused a connection to 198.18.0.1 port 8222" in line
    assert "[pid " in line and "-c" in line


def test_a_namespace_the_test_made_is_its_own(
    tmp_path: Path, network_guard_report: NetworkGuardReport
) -> None:
    """In a lab's namespace (here: no route anywhere) the guard stands aside: the kernel
    answers, for a thread that entered it and for a program started in it."""
    require_lab()
    with Lab(tmp_path / "lab") as lab:
        with pytest.raises(OSError, match="Network is unreachable"):
            lab.call(lambda: socket.create_connection(OFF_MACHINE, timeout=5))
        dial = f"import socket; socket.create_connection({OFF_MACHINE!r}, timeout=5)"
        run = subprocess.run(
            lab.command(sys.executable, "-c", dial),
            capture_output=True,
            text=True,
            env=cli_environment(),
            timeout=60,
            check=False,
        )
        assert "Network is unreachable" in run.stderr, run.stderr
    assert network_guard_report.take() == []


SWALLOWED = """
import socket

def test_swallows_the_refusal():
    try:
        socket.create_connection(("198.18.0.1", 8222), timeout=1)
    except OSError:
        pass  # code under test that treats an unreachable node as a fact of life
"""


@pytest.mark.slow
def test_a_test_that_swallowed_the_refusal_still_fails(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text('pytest_plugins = ["morpheus.testing.fixtures"]\n')
    (suite / "test_dial.py").write_text(textwrap.dedent(SWALLOWED))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "-q"],
        capture_output=True,
        text=True,
        cwd=suite,
        env=cli_environment(),
        timeout=120,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 passed, 1 error" in run.stdout, run.stdout
    assert "network guard: refused a connection to 198.18.0.1 port 8222" in run.stdout
