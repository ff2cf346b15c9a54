"""Run ``morpheus``: in a subprocess, as a user would, or in this process, for speed.

Two tiers, with the same result type (:class:`subprocess.CompletedProcess`):

- :func:`morpheus` starts the real program (``python -m morpheus``). Use it where only a real
  process proves the point: start-up and import behaviour, signals and Ctrl-C, processes that
  outlive the command (planting real nats-servers), exit status as the shell sees it, bytecode
  and entry-point discovery. Say so in the test's docstring.
- :func:`invoke` runs the same entry point in this process under Typer's ``CliRunner``
  isolation (stdin, stdout and stderr replaced; nothing is a terminal): for output, exit-code
  and bad-input cases, about 50 times cheaper than starting Python.

A test whose CLIs dial machines that exist only as addresses (the fake Hetzner API's servers)
runs them in a network namespace of its own, where those addresses lead nowhere: it names the
namespace in ``MORPHEUS_TEST_CLI_NAMESPACE`` and :func:`command` (and so :func:`morpheus`)
starts every CLI there (``nsenter``). From this machine's namespace such a dial would send
packets off the machine, and the network guard (``morpheus.testing.network_guard``) fails
the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli_environment() -> dict[str, str]:
    """This environment, letting Python cache bytecode as it would on a user's machine."""
    env = os.environ.copy()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def host_environment(tmp_path: Path, name: str, url: str, key: str, **extra: str) -> dict[str, str]:
    """The environment of one host sharing the registry ``url`` (sealed with ``key``): its own
    HOME and state directory under ``tmp_path / name``; ``extra`` adds variables."""
    from morpheus.secret_codec import KEY_ENV

    home = tmp_path / name / "home"
    home.mkdir(parents=True)
    return dict(
        cli_environment(),
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        MORPHEUS_STATE_DIR=str(tmp_path / name / "state"),
        MORPHEUS_REGISTRY__URL=url,
        **{KEY_ENV: key},
        **extra,
    )


#: The network namespace (a name under /run/netns) the test's CLIs run in, when it set one.
NAMESPACE_VARIABLE = "MORPHEUS_TEST_CLI_NAMESPACE"


def command(*args: str) -> list[str]:
    """The command line of ``morpheus ARGS`` in a subprocess (in the test's CLI namespace)."""
    argv = [sys.executable, "-m", "morpheus", *args]
    namespace = os.environ.get(NAMESPACE_VARIABLE)
    return ["nsenter", f"--net=/run/netns/{namespace}", "--", *argv] if namespace else argv


def morpheus(
    *args: str, timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``morpheus ARGS`` in a subprocess with this environment; never raises on exit codes."""
    return subprocess.run(
        command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        env=cli_environment(),
        check=False,
    )


def invoke(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``morpheus ARGS`` in this process: the program's own entry point (error lines, exit
    codes), with ``sys.argv``, stdin, stdout and stderr replaced; never raises on exit codes.

    The environment and working directory are this process's (the test's isolated ones).
    """
    from typer.testing import CliRunner

    from morpheus.cli.app import main as run_app

    argv = sys.argv
    with CliRunner().isolation(input=stdin) as (stdout, stderr, _output):
        sys.argv = ["morpheus", *args]
        try:
            run_app()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = argv
            sys.stdout.flush()
            sys.stderr.flush()
        out, err = stdout.getvalue(), stderr.getvalue()
    return subprocess.CompletedProcess(
        ["morpheus", *args], code, out.decode(), err.decode(errors="backslashreplace")
    )
