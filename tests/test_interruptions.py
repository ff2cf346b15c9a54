"""Ctrl-C and waiting: every interruption says what it left and what finishes the job."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

from morpheus.testing.cli import cli_environment, morpheus
from morpheus.testing.nats import processes_mentioning, wait_until


def _start(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "morpheus", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=cli_environment(),
        **kwargs,  # type: ignore[call-overload]
    )


def _lines_until(stream: Iterator[str], fragment: str, seen: list[str]) -> None:
    for line in stream:
        seen.append(line)
        if fragment in line:
            return
    raise AssertionError(f"never said {fragment!r}: {''.join(seen)}")


def _plant_small() -> str:
    planted = morpheus("plant", "local", "small", "-o", "json")
    assert planted.returncode == 0, planted.stderr
    return str(json.loads(planted.stdout)["forest"]["id"])


def test_a_wait_for_a_forest_lock_is_said(state_dir: Path) -> None:
    forest = _plant_small()
    lock = FileLock(state_dir / "locks" / f"{forest}.lock", thread_local=False)
    lock.acquire()
    # Released after a while whatever happens, so a silent wait ends too (and fails below).
    release = threading.Timer(15, lock.release)
    release.start()
    try:
        command = _start("teardown", forest, "--yes")
        assert command.stderr is not None
        seen: list[str] = []
        _lines_until(command.stderr, "waiting for another morpheus process", seen)
        assert forest in seen[-1] and command.poll() is None
    finally:
        release.cancel()
        if lock.is_locked:
            lock.release()
    _, err = command.communicate(timeout=60)
    assert command.returncode == 0, "".join(seen) + err
    assert processes_mentioning(str(state_dir)) == []


@pytest.fixture
def stubborn_forest(state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kept forest whose "nats-server" ignores SIGTERM: its teardown waits 10 s on it."""
    stubborn = tmp_path / "bin" / "nats-server"
    stubborn.parent.mkdir()
    ignoring = tmp_path / "ignoring-sigterm"
    ignoring.mkdir()
    stubborn.write_text(
        f"#!{sys.executable}\n"
        "import os, pathlib, signal, time\n"
        f"told = pathlib.Path({str(ignoring)!r}, f'{{os.getpid()}}.sigterm')\n"
        "signal.signal(signal.SIGTERM, lambda *_: told.touch())  # noted, then ignored\n"
        f"pathlib.Path({str(ignoring)!r}, str(os.getpid())).touch()\n"
        "time.sleep(300)\n"
    )
    stubborn.chmod(0o755)
    monkeypatch.setenv("MORPHEUS_NATS_SERVER", str(stubborn))
    Path("config.yaml").write_text("provisioning:\n  readiness_timeout: 1\n")
    kept = morpheus("plant", "local", "small", "--keep-on-failure")
    assert kept.returncode == 1, kept.stderr
    found = re.search(r"plant of (forest-[0-9-]+) failed.*kept for inspection", kept.stderr)
    assert found, kept.stderr
    # Under load the interpreter may start after plant gave up: until its handler is in
    # place a SIGTERM would end it at once and the teardown would not wait at all.
    wait_until(lambda: any(ignoring.iterdir()) or None, 60, "the stub to ignore SIGTERM")
    return found.group(1)


def test_an_interrupted_teardown_says_how_to_finish(
    stubborn_forest: str, state_dir: Path, tmp_path: Path
) -> None:
    command = _start("teardown", stubborn_forest, "--yes")
    assert command.stderr is not None
    seen: list[str] = []
    _lines_until(command.stderr, "deleting", seen)
    # Interrupted while it waits out the stubborn process's 10 s SIGTERM grace.
    told = tmp_path / "ignoring-sigterm"
    wait_until(lambda: any(told.glob("*.sigterm")) or None, 60, "teardown to send SIGTERM")
    command.send_signal(signal.SIGINT)
    _, err = command.communicate(timeout=60)
    assert command.returncode == 130, err
    assert "Traceback" not in err
    assert f"teardown of {stubborn_forest} was interrupted" in err
    assert f"run `morpheus teardown {stubborn_forest}` again" in err
    finished = morpheus("teardown", stubborn_forest, "--yes")
    assert finished.returncode == 0, finished.stderr
    assert processes_mentioning(str(state_dir)) == []


def test_ctrl_c_at_a_terminal_asks_once_and_can_keep(state_dir: Path, tmp_path: Path) -> None:
    """At a terminal the first Ctrl-C asks; "n" keeps what was made and exits 130."""
    # Long enough that plant is still waiting when the Ctrl-C comes, even under heavy load.
    Path("config.yaml").write_text("provisioning:\n  readiness_timeout: 240\n")
    silent = tmp_path / "bin" / "nats-server"  # runs, never opens a port: plant waits
    silent.parent.mkdir()
    silent.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(300)\n")
    silent.chmod(0o755)
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "morpheus", "plant", "local", "medium"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**cli_environment(), "MORPHEUS_NATS_SERVER": str(silent), "COLUMNS": "200"},
    ) as command:
        os.close(terminal)
        shown = b""

        def read_until(fragment: bytes, seconds: float = 60) -> None:
            nonlocal shown
            deadline = time.monotonic() + seconds
            while fragment not in shown:
                remaining = deadline - time.monotonic()
                assert remaining > 0, shown.decode(errors="replace")
                ready, _, _ = select.select([controller], [], [], remaining)
                if ready:
                    try:
                        shown += os.read(controller, 4096)
                    except OSError:
                        break
            assert fragment in shown, shown.decode(errors="replace")

        wait_until(lambda: len(list(state_dir.glob("local/*/*/nats.conf"))) == 3, 60, "nodes")
        command.send_signal(signal.SIGINT)
        read_until(b"Delete what this plant created?")
        os.write(controller, b"n\n")
        read_until(b"kept for inspection")
        assert command.wait(timeout=60) == 130
        os.close(controller)
    text = shown.decode(errors="replace")
    assert text.count("Delete what this plant created?") == 1
    assert "morpheus teardown forest-" in text and "Traceback" not in text
    (forest,) = json.loads(morpheus("list", "-o", "json").stdout)
    assert forest["status"] == "failed"
    assert morpheus("teardown", forest["id"], "--yes").returncode == 0
    wait_until(lambda: processes_mentioning(str(state_dir)) == [] or None, 30, "nothing left")
