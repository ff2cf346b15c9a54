"""Run the real ``morpheus`` program in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys


def cli_environment() -> dict[str, str]:
    """This environment, letting Python cache bytecode as it would on a user's machine."""
    env = os.environ.copy()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def morpheus(
    *args: str, timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``morpheus ARGS`` in a subprocess with this environment; never raises on exit codes."""
    return subprocess.run(
        [sys.executable, "-m", "morpheus", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        env=cli_environment(),
        check=False,
    )
