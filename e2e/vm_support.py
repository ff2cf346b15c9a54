"""What the VM tests share: the prepared libvirt host, the real CLI, SSH to a node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

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

    def start(self, *args: str, stdout: IO[str], **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "morpheus", *args],
            env=self.env(**env),
            stdout=stdout,
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
    #: ``time.monotonic()`` when the command had ended.
    ended_monotonic: float


class Plant:
    """A `morpheus plant` running in the background; `finish()` waits for it (bounded).

    Its stderr (progress and errors) is read as it comes, each line with the
    ``time.monotonic()`` it arrived at, so a test can tell when something was said.
    """

    def __init__(self, cli: Cli, *args: str, timeout: float, **env: str) -> None:
        self.started = time.monotonic()
        self.timeout = timeout
        # Read back in finish(); closed with this object.
        self._stdout = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        self.process = cli.start("plant", *args, stdout=self._stdout, **env)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self._finished: Finished | None = None

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append((time.monotonic(), line))

    def first_said(self, words: str) -> float | None:
        """When a stderr line containing ``words`` arrived, or ``None``."""
        return next((when for when, line in self.lines if words in line), None)

    def finish(self) -> Finished:
        if self._finished is None:
            killed = ""
            try:
                self.process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                killed = f"\n(killed by the test after {self.timeout:.0f} s)"
            ended = time.monotonic()
            self._reader.join(timeout=10)
            self._stdout.seek(0)
            self._finished = Finished(
                args=self.process.args,  # type: ignore[arg-type]
                returncode=self.process.returncode,
                stdout=self._stdout.read(),
                stderr="".join(line for _when, line in self.lines) + killed,
                seconds=ended - self.started,
                ended_monotonic=ended,
            )
        return self._finished

    def stop(self) -> None:
        """Kill the plant if it still runs, and close its output (pytest fails on open files)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self._stdout.close()


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


def libvirt_names(uri: str, pool: str) -> tuple[list[str], list[str]]:
    """Every domain on the host, and every volume of ``pool``, by name (through virsh)."""

    def virsh(*args: str) -> list[str]:
        listed = subprocess.run(
            ["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, check=True
        )
        return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]

    return virsh("list", "--all", "--name"), virsh("vol-list", pool)


class ConsoleWatch:
    """Notes, on this host's clock, when a bootstrap failure first shows in a console log.

    A thread reads the logs in ``directory`` every half second while a plant runs, so the
    test can tell how long after the failure the plant reported it (the guest's own clock
    drifts under emulation, so its time of failure is not used for that).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for log in self.directory.glob("*-console.log"):
                if log.name in self.seen:
                    continue
                try:
                    text = log.read_bytes()
                except OSError:
                    continue
                if b"morpheus: FAILED while" in text:
                    self.seen[log.name] = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
