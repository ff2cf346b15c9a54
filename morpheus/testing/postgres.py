"""A real, throwaway PostgreSQL server for tests: made with initdb in a temporary directory.

The server listens on 127.0.0.1 (a free port) and on a Unix socket in its own directory,
with password authentication over TCP, and is stopped and removed afterwards; it is the test
process's child and ends with it even when that process is killed.  PostgreSQL
refuses to run as root: as root (CI) it runs as the ``postgres`` user that Debian's package
creates, else as ``nobody``.  The binaries are found on PATH or in Debian's
``/usr/lib/postgresql/<version>/bin``; where there are none the tests skip, naming
``scripts/test-tools`` (which installs Debian's ``postgresql``), and in CI they fail.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from morpheus.testing.tools import missing

#: Where Debian's postgresql-<version> package puts the server's programs.
DEBIAN_BINARIES = "/usr/lib/postgresql/*/bin"
SUPERUSER = "morpheus"


def server_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``postgres`` (the newest Debian version first)."""
    on_path = shutil.which("initdb")
    if on_path:
        # Often a link (Debian's wrapper, or one into the versioned directory).
        directory = Path(on_path).resolve().parent
        if (directory / "postgres").is_file():
            return directory
    found = sorted(
        (Path(d) for d in glob.glob(DEBIAN_BINARIES) if (Path(d) / "postgres").is_file()),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
        reverse=True,
    )
    return found[0] if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: None for this user, unless this is root (PostgreSQL refuses)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root with neither a postgres nor a nobody user")


@dataclass
class PostgresServer:
    """A running server; ``url(database)`` connects as its superuser with the password."""

    root: Path
    binaries: Path
    port: int
    password: str
    user: pwd.struct_passwd | None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres", *, password: bool = True) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{SUPERUSER}{secret}@127.0.0.1:{self.port}/{database}"

    def socket_url(self, database: str) -> str:
        """``url(database)`` over the server's Unix socket: for a client in a network namespace
        of its own (``morpheus.testing.netns``), where this machine's 127.0.0.1 is not."""
        return (
            f"postgresql://{SUPERUSER}:{self.password}@/{database}"
            f"?host={self.root}&port={self.port}"
        )

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "cwd": self.root,
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"},
        }
        if self.user is not None:
            options |= {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        return options

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binaries / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
            **self._options(),
        )

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                # A throwaway server: durability is not what the tests check.
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\nshared_buffers = 16MB\n"
            )
        # The server is this process's child, not a daemon (pg_ctl's): a test run killed
        # outright takes it along (the parent-death signal is SIGQUIT: immediate shutdown).
        log = (self.root / "log").open("wb")
        self._process = subprocess.Popen(
            [str(self.binaries / "postgres"), "-D", str(self.data)],
            stdout=log,
            stderr=subprocess.STDOUT,
            # Runs after the switch to the server user, so the signal stays set.
            preexec_fn=_die_with_parent_hook(),
            **self._options(),
        )
        log.close()
        deadline = time.monotonic() + 60
        while not self._accepts_connections():
            if self._process.poll() is not None or time.monotonic() > deadline:
                text = (self.root / "log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"PostgreSQL did not start within 60 s:\n{text}")
            time.sleep(0.1)

    def _accepts_connections(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url(), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGQUIT)  # immediate shutdown
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def admin(self, database: str) -> Any:
        """A superuser connection to ``database`` (autocommit), for checks behind the CLI."""
        import psycopg

        return psycopg.connect(self.url(database), autocommit=True)


def _die_with_parent_hook() -> Callable[[], None]:
    """What the server's process runs before exec: SIGQUIT to it when the test process dies.

    libc is loaded here, in the parent: the child only calls it.
    """
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig, sigquit = 1, int(signal.SIGQUIT)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigquit)

    return hook


def start_postgres() -> PostgresServer:
    """A fresh server, started; skip (or fail in CI) where PostgreSQL is not installed."""
    binaries = server_binaries()
    if binaries is None:
        missing(
            f"PostgreSQL (initdb, postgres) is not installed (looked on PATH and {DEBIAN_BINARIES})"
        )
    root = Path(tempfile.mkdtemp(prefix="morpheus-pg-"))
    for attempt in range(3):
        server = PostgresServer(
            root=root,
            binaries=binaries,
            port=_free_port(),
            password=secrets.token_urlsafe(12),
            user=_server_user(),
        )
        try:
            server.start()
            return server
        except RuntimeError:
            # Another worker may have taken the port between the probe and the start.
            server.stop()
            if attempt == 2:
                raise
            root = Path(tempfile.mkdtemp(prefix="morpheus-pg-"))
    raise AssertionError("unreachable")
