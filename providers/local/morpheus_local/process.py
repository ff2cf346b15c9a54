"""The programs of a local node, and how Morpheus knows a process is one of them.

A PID names a process only while it lives: after a crash or a reboot the number may belong
to anything, and Morpheus often runs as root.  So each program started for a node is
recorded in ``<program>.process.json`` with its PID, start time, executable and exact
argument list (nats-server's include ``-c <node>/nats.conf``), and a process is the node's
only while all four still match.  Every program also carries ``MORPHEUS_NODE=<node dir>`` in
its environment: the exact value (never a substring of a command line) finds a program whose
start was never recorded because the CLI died in between.  Nothing else is ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import psutil
from pydantic import BaseModel, ConfigDict, ValidationError

from morpheus.waiting import poll_until

#: The environment variable that tags every program started for a node.
NODE_VARIABLE = "MORPHEUS_NODE"
_SECRET_VARIABLES = ("HCLOUD_TOKEN", "HETZNER_API_TOKEN")
# A started program's arguments appear once the launcher's fork has exec'd it.
_EXEC_SECONDS = 5.0
# After SIGKILL the kernel still needs a moment to tear a process down.
_KILL_SECONDS = 10.0
_POLL_SECONDS = 0.02
# A start time is boot time + ticks since boot, and the kernel's boot time may read a second
# apart from one call to the next.  With executable and argv (which hold the node's own
# config path) also equal, a PID reused within two seconds cannot pass for the node.
_START_TOLERANCE = 2.0
_LAUNCHER = 'log="$1"; shift; "$@" >>"$log" 2>&1 </dev/null & echo $!'


class ProcessRecord(BaseModel):
    """What identifies one started program for as long as it runs (``argv`` as the kernel
    shows it: a script's starts with its interpreter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pid: int
    started: float
    exe: str
    argv: list[str]


def node_environment(node_dir: Path, **extra: str) -> dict[str, str]:
    """The environment a node's programs get: ours, tagged, without any cloud token."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in _SECRET_VARIABLES and not name.startswith("MORPHEUS_SECRETS__")
    }
    env[NODE_VARIABLE] = str(node_dir)
    env.update(extra)
    return env


def start(argv: list[str], log: Path, env: dict[str, str]) -> ProcessRecord | None:
    """Start ``argv`` detached from us and return its record; None if it exited at once.

    A shell backgrounds the program and exits, so the node outlives the CLI, is never left a
    zombie of it, and does not get the terminal's Ctrl-C.
    """
    launcher_argv = ["/bin/sh", "-c", _LAUNCHER, "sh", str(log), *argv]
    launcher = subprocess.run(
        launcher_argv,
        check=True,
        capture_output=True,
        text=True,
        start_new_session=True,
        env=env,
        timeout=30,
    )
    pid = int(launcher.stdout.strip())

    # Until the launcher's fork has exec'd the program, the PID shows the launcher's own
    # arguments; a script's shows its interpreter first, so wait for "not the launcher".
    def exec_done() -> ProcessRecord | bool | None:
        try:
            started = psutil.Process(pid)
            with started.oneshot():
                if started.status() == psutil.STATUS_ZOMBIE:
                    return False
                found = started.cmdline()
                if found == launcher_argv:
                    return None
                return ProcessRecord(
                    pid=pid, started=started.create_time(), exe=started.exe(), argv=found
                )
        except psutil.Error:
            return False  # gone already: nothing to record

    try:
        record = poll_until(
            exec_done,
            deadline=time.monotonic() + _EXEC_SECONDS,
            interval=_POLL_SECONDS,
            timeout_error=TimeoutError,
        )
    except TimeoutError:
        return None
    return record if isinstance(record, ProcessRecord) else None


def read_record(path: Path) -> ProcessRecord | None:
    try:
        return ProcessRecord.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def find(record: ProcessRecord | None) -> psutil.Process | None:
    """The live process ``record`` names, or None when it is gone or is not that program."""
    if record is None:
        return None
    try:
        process = psutil.Process(record.pid)
        with process.oneshot():
            same = (
                abs(process.create_time() - record.started) < _START_TOLERANCE
                and process.exe() == record.exe
                and process.cmdline() == record.argv
            )
    except psutil.Error:
        return None
    return process if same and _alive(process) else None


def tagged(node_dir: Path) -> list[psutil.Process]:
    """Live processes whose environment says they were started for ``node_dir``."""
    wanted = str(node_dir)
    found = []
    me = os.getpid()
    for process in psutil.process_iter():
        if process.pid == me:
            continue
        try:
            if process.environ().get(NODE_VARIABLE) == wanted and _alive(process):
                found.append(process)
        except psutil.Error:
            continue
    return found


def _wait_gone(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Wait up to ``seconds`` for every process to end; those still alive then."""
    with contextlib.suppress(TimeoutError):
        poll_until(
            lambda: None if any(_alive(p) for p in processes) else True,
            deadline=time.monotonic() + seconds,
            interval=_POLL_SECONDS,
            timeout_error=TimeoutError,
        )
    return [p for p in processes if _alive(p)]


def stop(processes: list[psutil.Process], grace: float) -> list[psutil.Process]:
    """SIGTERM, then SIGKILL after ``grace`` seconds; return those still alive after both.

    psutil refuses to signal a PID that now names another process (it checks the start
    time), and a killed process is waited for until the kernel has torn it down.
    """
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    left = _wait_gone(processes, grace)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    return _wait_gone(left, _KILL_SECONDS)


def legacy_nats_server(node_dir: Path) -> psutil.Process | None:
    """A node planted before process records: its ``nats.pid``, if that process is still
    a nats-server started with exactly this node's ``-c nats.conf``."""
    try:
        pid = int((node_dir / "nats.pid").read_text().strip())
        candidate = psutil.Process(pid)
        argv = candidate.cmdline()
    except (OSError, ValueError, psutil.Error):
        return None
    wanted = ["-c", str(node_dir / "nats.conf")]
    is_nats = bool(argv) and Path(argv[0]).name.startswith("nats-server")
    if is_nats and any(argv[i : i + 2] == wanted for i in range(len(argv))):
        return candidate
    return None
