"""pytest fixtures shared by the core's and the providers' tests (a pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from morpheus.testing import network_guard
from morpheus.testing.nats import kill_all, processes_mentioning
from morpheus.testing.netns import Lab, require_lab
from morpheus.testing.postgres import PostgresServer, start_postgres
from morpheus.testing.tools import RUN_VARIABLES


def pytest_configure(config: pytest.Config) -> None:
    """Let the processes tests start be interrupted, however the test run was started.

    A shell starts background commands (``.ci/run &``, cron wrappers) with SIGINT ignored,
    and an ignored signal stays ignored across fork and exec: every CLI a test started would
    then shrug off the Ctrl-C the interruption tests send it. Python's own handler, set here,
    is reset to the default in each child at exec.

    Also installs the network guard (see :func:`_guard_network`).
    """
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _guard_network()


def _guard_network() -> None:
    """The network rule, enforced from here on in this process and the Python processes it
    starts (``network_guard``; ``network_guard_site`` holds their ``sitecustomize``)."""
    import os

    network_guard.install()
    os.environ[network_guard.NAMESPACE_VARIABLE] = network_guard.namespace()
    site = str(Path(network_guard.__file__).parent / "network_guard_site")
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != site]
    os.environ["PYTHONPATH"] = os.pathsep.join([site, *paths])


class NetworkGuardReport:
    """The refusals of the network guard during one test: in this process and in the report
    file the processes it started write to."""

    def __init__(self, report: Path) -> None:
        self.report = report

    def take(self) -> list[str]:
        """The refusals so far (forgotten: a test that provokes one on purpose takes it)."""
        lines = network_guard.take_refusals()
        if self.report.exists():
            lines += self.report.read_text(errors="replace").splitlines()
            self.report.unlink()
        return lines


@pytest.fixture(autouse=True)
def network_guard_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NetworkGuardReport]:
    """Fail the test if it, or a program it started, tried to reach anything but loopback
    (or a network namespace it made) from this machine's namespace: the guard refused it
    before a packet left, and reported it."""
    report = NetworkGuardReport(tmp_path / "network-guard.log")
    if earlier := report.take():
        pytest.fail(
            "before this test began (in a session fixture, or a thread an earlier test left "
            "running):\n" + "\n".join(earlier),
            pytrace=False,
        )
    monkeypatch.setenv(network_guard.REPORT_VARIABLE, str(report.report))
    yield report
    if refusals := report.take():
        pytest.fail("\n".join(refusals), pytrace=False)


_ISOLATED_VARIABLES = (
    "MORPHEUS_CONFIG",
    "MORPHEUS_NATS_SERVER",
    "HCLOUD_TOKEN",
    "HCLOUD_ENDPOINT",
    "HETZNER_API_TOKEN",
    "NO_COLOR",
    # libpq's: a test's registry URL says everything about its PostgreSQL server.
    "PGPASSWORD",
    "PGPASSFILE",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGSERVICE",
)


@pytest.fixture(autouse=True)
def isolated_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network_guard_report: NetworkGuardReport
) -> Iterator[Path]:
    """Every test gets its own state dir, home and cwd, and no operator variables.

    Processes a test started under its state dir are killed afterwards as a safety net;
    tests that promise "nothing left running" assert that themselves first. (It comes after
    ``network_guard_report``, whose check thus runs once those processes are gone.)
    """
    import os

    for name in list(os.environ):
        if name in RUN_VARIABLES:
            continue
        if name.startswith("MORPHEUS_") or name in _ISOLATED_VARIABLES:
            monkeypatch.delenv(name)
    state = tmp_path / "state"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("MORPHEUS_STATE_DIR", str(state))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.chdir(tmp_path)
    yield state
    kill_all(processes_mentioning(str(tmp_path)))


@pytest.fixture
def state_dir(isolated_environment: Path) -> Path:
    return isolated_environment


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A network of simulated machines of the test's own (``morpheus.testing.netns``); the
    test skips locally, and fails in CI, where namespaces cannot be made."""
    require_lab()
    with Lab(tmp_path / "lab") as made:
        yield made


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server per test process (see ``morpheus.testing.postgres``)."""
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL (with its password) of a new, empty database of its own for this test."""
    import secrets

    return postgres_server.create_database(f"test_{secrets.token_hex(6)}")


@pytest.fixture
def registry_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A new registry key, in ``MORPHEUS_REGISTRY_KEY`` for all the test runs."""
    from morpheus.secret_codec import KEY_ENV, new_key

    key = new_key()
    monkeypatch.setenv(KEY_ENV, key)
    return key


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, state_dir: Path) -> str:
    """``registry.url`` of each backend in turn: the contract both must keep.

    A shared registry stores secrets only encrypted, so with PostgreSQL ``registry_key`` is
    set (``SecretCodec(KeySource.find(None))`` reads it); SQLite runs without a key.
    """
    if request.param == "sqlite":
        return f"sqlite://{state_dir / 'registry.sqlite3'}"
    request.getfixturevalue("registry_key")
    url: str = request.getfixturevalue("postgres_url")
    return url
