"""`morpheus check` as a machine's network makes it: run in a network namespace of the test's
own, whose only link (a veth pair with both ends in it: nothing leaves it) has the address a
case needs.

The IPv6 check connects a UDP socket, which only asks the kernel for a route; no packet is
sent anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from morpheus.testing.cli import cli_environment
from morpheus.testing.tools import missing, require_tool


def check_in_namespace(address: str | None, *args: str) -> dict[str, dict[str, Any]]:
    """``morpheus check -o json`` in a new network namespace whose default IPv6 route leaves
    from ``address`` (no route at all for ``None``); the checks by name."""
    if os.geteuid() != 0:
        missing("the network-namespace checks need root")
    unshare = require_tool("unshare")
    require_tool("ip")
    setup = ["ip link set lo up"]
    if address is not None:
        setup += [
            "ip link add probe0 type veth peer name probe1",
            "ip link set probe1 up",
            f"ip -6 addr add {address}/64 dev probe0 nodad",
            "ip link set probe0 up",
            "ip -6 route add default dev probe0",
        ]
    script = " && ".join([*setup, 'exec "$@"'])
    command = [sys.executable, "-m", "morpheus", "check", "-o", "json", *args]
    result = subprocess.run(
        [unshare, "--net", "sh", "-c", script, "sh", *command],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_environment(),
        check=False,
    )
    assert result.stdout, result.stderr
    return {check["name"]: check for check in json.loads(result.stdout)}


@pytest.mark.parametrize(
    ("address", "ok", "detail"),
    [
        ("2001:db8:1::2", True, "IPv6 route found (source 2001:db8:1::2)"),
        ("fd12:3456:789a::2", False, "no global IPv6 address: the IPv6 route leaves from fd12:"),
        ("fc00::2", False, "no global IPv6 address"),
        (None, False, "this machine cannot reach IPv6 addresses (no IPv6 route)"),
    ],
)
def test_ipv6_needs_a_global_source_address(address: str | None, ok: bool, detail: str) -> None:
    """A unique local address (fc00::/7: an IPv6 NAT, a VPN) routes nowhere on the internet:
    IPv6-only cloud nodes could not be reached from it."""
    ipv6 = check_in_namespace(address)["ipv6"]
    assert ipv6["ok"] is ok, ipv6
    assert ipv6["detail"].startswith(detail), ipv6


@pytest.mark.parametrize(
    ("config", "address", "ok", "detail"),
    [
        (
            {"infrastructure": {"admin_sources": ["2001:db8:1::/64"]}},
            "2001:db8:1::2",
            True,
            "port 22 admits this machine (2001:db8:1::2 is in 2001:db8:1::/64)",
        ),
        (
            {
                "infrastructure": {"admin_sources": ["2001:db8:1::/64", "203.0.113.7/32"]},
                "provisioning": {"ssh_port": 2222},
            },
            "2001:db8:9::2",
            False,
            "port 2222 of the nodes is closed to this machine: 2001:db8:9::2 is in none of "
            "infrastructure.admin_sources (2001:db8:1::/64, 203.0.113.7/32)",
        ),
        ({}, "fd12:3456:789a::2", False, "cannot tell which public address this machine"),
        (
            {"infrastructure": {"admin_sources": ["fd12:3456:789a::/64"]}},
            "fd12:3456:789a::2",
            False,
            "this machine's IPv6 source fd12:3456:789a::2 is a local address that nodes cannot "
            "answer",
        ),
    ],
)
def test_check_says_whether_the_nodes_ssh_port_admits_this_machine(
    config: dict[str, Any], address: str, ok: bool, detail: str
) -> None:
    """``grow`` reconfigures running cloud nodes over SSH, which their firewall opens to
    ``infrastructure.admin_sources`` alone: ``check`` says whether this machine is in them."""
    Path("config.yaml").write_text(yaml.safe_dump(config))
    ssh = check_in_namespace(address)["hetzner SSH port"]
    assert ssh["ok"] is ok, ssh
    assert ssh["detail"].startswith(detail), ssh
    if "closed to this machine" in detail:
        assert ssh["fix"] == (
            'add this machine\'s network to infrastructure.admin_sources, e.g. "2001:db8:9::/64"'
        )
