"""What the VM tests share: the prepared libvirt host, the real CLI, SSH to a node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: Where `e2e/vm-host up` leaves its state (the same default as the script).
STATE_DIR = Path(os.environ.get("E2E_STATE_DIR", "/var/lib/morpheus-e2e"))


@dataclass(frozen=True)
class VmHost:
    """The libvirt host the tests use, as `e2e/vm-host up` described it."""

    state_dir: Path
    config_path: Path
    config: dict[str, Any]

    @property
    def libvirt(self) -> dict[str, Any]:
        settings: dict[str, Any] = self.config["providers"]["libvirt"]
        return settings

    @property
    def ssh_key(self) -> Path:
        return self.state_dir / "id_ed25519"


@dataclass
class Cli:
    """The real `morpheus` command with the VM host's config and a state dir of its own."""

    host: VmHost
    state_dir: Path
    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MORPHEUS_")}
        env.update(
            MORPHEUS_CONFIG=str(self.host.config_path),
            MORPHEUS_STATE_DIR=str(self.state_dir),
            HOME=str(self.home),
            NO_COLOR="1",
            COLUMNS="200",
        )
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "morpheus", *args],
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "morpheus", *args],
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str, timeout: float = 120) -> Any:
        result = self.run(*args, "-o", "json", timeout=timeout)
        assert result.returncode == 0, describe(result)
        return json.loads(result.stdout)


def describe(result: subprocess.CompletedProcess[str] | Finished) -> str:
    return (
        f"`morpheus {' '.join(result.args[3:])}` exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


@dataclass
class Finished:
    args: Sequence[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    #: Wall-clock time (UTC) when the command had ended, to compare with a node's clock.
    ended: datetime


class Plant:
    """A `morpheus plant` running in the background; `finish()` waits for it (bounded)."""

    def __init__(self, cli: Cli, *args: str, timeout: float, **env: str) -> None:
        self.started = time.monotonic()
        self.timeout = timeout
        self.process = cli.start("plant", *args, **env)
        self._finished: Finished | None = None

    def finish(self) -> Finished:
        if self._finished is None:
            try:
                stdout, stderr = self.process.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                stdout, stderr = self.process.communicate()
                stderr += f"\n(killed by the test after {self.timeout:.0f} s)"
            self._finished = Finished(
                args=self.process.args,  # type: ignore[arg-type]
                returncode=self.process.returncode,
                stdout=stdout,
                stderr=stderr,
                seconds=time.monotonic() - self.started,
                ended=datetime.now(UTC),
            )
        return self._finished

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def ssh(host: VmHost, address: str, command: str, timeout: float = 60) -> str:
    """Run ``command`` on a node as the image's default user (``debian``) over OpenSSH."""
    result = subprocess.run(
        [
            "ssh",
            "-i",
            str(host.ssh_key),
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=15",
            # The nodes are fresh VMs on a bridge only this machine reaches.
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"debian@{address}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode not in (0, 2):  # cloud-init status: 2 = done with recoverable errors
        raise AssertionError(
            f"ssh {address} {command!r} exited {result.returncode}: {result.stderr.strip()}"
        )
    return result.stdout
