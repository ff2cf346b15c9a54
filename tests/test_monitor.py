"""The NATS monitor against real nats-server processes, and respx for the faults they can't fake.

Every address used here is loopback (127.0.0.1 or ::1); mocked hosts never leave the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shutil
import socket
import subprocess
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from pydantic import ValidationError

from morpheus.monitor import (
    MAX_CONCURRENCY,
    ForestLoad,
    MonitorTarget,
    NodeSample,
    aggregate,
    concurrency_within,
    max_reply_bytes,
    monitor_url,
    poll_nodes,
)
from morpheus.testing.monitors import LoopbackMonitor, loopback_monitor

GIB = 1024**3
# How long a node that answers only when others have been asked waits for them.
BARRIER_SECONDS = 30.0
# A poll whose nodes time out after a fraction of a second has ended by then: a bound that
# catches a deadline that never ends, and that a machine at load 30 still meets.
ENDS_WITHIN_SECONDS = 60.0
JS_MEMORY = 64 * 1024 * 1024
JS_STORAGE = 256 * 1024 * 1024


# --- real nats-server processes -------------------------------------------------------------


def nats_server_binary() -> str:
    found = shutil.which("nats-server", path=sysconfig.get_path("scripts")) or shutil.which(
        "nats-server"
    )
    if found is None:
        pytest.skip("nats-server binary not installed")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], deadline: float, what: str) -> None:
    """Check ``condition`` until it holds or ``deadline`` seconds pass."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"{what} not true within {deadline}s")
        time.sleep(0.05)


@dataclass
class NatsServer:
    """One nats-server process with its monitoring port on loopback."""

    name: str
    host: str
    client_port: int
    monitor_port: int
    directory: Path
    cluster_port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def monitor(self) -> str:
        return monitor_url(self.host, self.monitor_port)

    def target(self, memory_bytes: int | None = 8 * GIB) -> MonitorTarget:
        return MonitorTarget(
            node_name=self.name, host=self.host, port=self.monitor_port, memory_bytes=memory_bytes
        )

    def start(self, routes: list[int] | None = None) -> None:
        store = self.directory / "jetstream"
        lines = [
            f'server_name: "{self.name}"',
            f'jetstream {{ store_dir: "{store}", max_memory_store: {JS_MEMORY}, '
            f"max_file_store: {JS_STORAGE} }}",
        ]
        if routes is not None:
            urls = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in routes)
            lines.append(
                f"cluster {{ name: forest-test, listen: 127.0.0.1:{self.cluster_port}, "
                f"routes: [{urls}] }}"
            )
        config = self.directory / "nats.conf"
        config.write_text("\n".join(lines) + "\n")
        with (self.directory / "server.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    nats_server_binary(),
                    "-c",
                    str(config),
                    "-a",
                    self.host,
                    "-p",
                    str(self.client_port),
                    "-m",
                    str(self.monitor_port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def get(self, path: str) -> httpx.Response | None:
        self.check_running()
        try:
            return httpx.get(f"{self.monitor}{path}", timeout=1.0)
        except httpx.HTTPError:
            return None

    def healthy(self) -> bool:
        response = self.get("/healthz")
        return response is not None and response.status_code == 200

    def check_running(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.directory / "server.log").read_text(errors="replace")
            pytest.fail(f"nats-server {self.name} exited ({self.process.returncode}):\n{log}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def make_server(directory: Path, name: str, host: str = "127.0.0.1") -> NatsServer:
    directory.mkdir(parents=True, exist_ok=True)
    return NatsServer(
        name=name,
        host=host,
        client_port=free_port(host),
        monitor_port=free_port(host),
        cluster_port=free_port(host),
        directory=directory,
    )


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = make_server(tmp_path_factory.mktemp("standalone"), "solo")
    try:
        server.start()
        wait_until(server.healthy, 30, "standalone nats-server healthy")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NatsServer]]:
    base = tmp_path_factory.mktemp("cluster")
    servers = [make_server(base / f"node-{i}", f"node-{i}") for i in (1, 2, 3)]
    routes = [server.cluster_port for server in servers if server.cluster_port is not None]
    try:
        for server in servers:
            server.start(routes)

        def formed() -> bool:
            for server in servers:
                varz = server.get("/varz")
                if varz is None or varz.json().get("remotes") != 2 or not server.healthy():
                    return False
            return True

        wait_until(formed, 45, "3-node cluster formed and healthy")
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A loopback port that accepts TCP connections (kernel backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield sock.getsockname()[1]


def poll(targets: list[MonitorTarget], **options: Any) -> list[NodeSample]:
    return asyncio.run(poll_nodes(targets, **options))


def timed_poll(targets: list[MonitorTarget], **options: Any) -> tuple[list[NodeSample], float]:
    started = time.monotonic()
    samples = poll(targets, **options)
    return samples, time.monotonic() - started


# --- against real servers -------------------------------------------------------------------


def test_standalone_server_figures(nats_server: NatsServer) -> None:
    [sample] = poll([nats_server.target(memory_bytes=8 * GIB)])

    assert sample.error is None
    assert sample.reachable is True
    assert sample.healthy is True
    assert sample.node_name == "solo"
    assert sample.url == f"http://127.0.0.1:{nats_server.monitor_port}"
    assert sample.cores is not None and sample.cores >= 1
    assert sample.mem_bytes is not None and sample.mem_bytes > 0
    assert sample.memory_percent == pytest.approx(sample.mem_bytes / (8 * GIB) * 100)
    assert sample.cpu_percent is not None and 0 <= sample.cpu_percent <= 100
    assert sample.peers == 0
    assert sample.connections == 0
    assert sample.jetstream_memory_limit == JS_MEMORY
    assert sample.jetstream_storage_limit == JS_STORAGE
    assert sample.jetstream_memory_used == 0
    assert sample.jetstream_storage_used == 0
    assert sample.latency_ms is not None and sample.latency_ms > 0


def test_unknown_ram_leaves_memory_percent_unknown(nats_server: NatsServer) -> None:
    [sample] = poll([nats_server.target(memory_bytes=None)])
    assert sample.reachable
    assert sample.mem_bytes is not None
    assert sample.memory_percent is None


def test_jetstream_usage_and_connections_are_real(nats_server: NatsServer) -> None:
    nats = pytest.importorskip("nats")

    async def scenario() -> NodeSample:
        client = await nats.connect(f"nats://127.0.0.1:{nats_server.client_port}")
        try:
            js = client.jetstream()
            await js.add_stream(name="load", subjects=["load.>"])
            for _ in range(20):
                await js.publish("load.x", b"x" * 1024)
            [sample] = await poll_nodes([nats_server.target()])
            await js.delete_stream("load")
            return sample
        finally:
            await client.close()

    sample = asyncio.run(scenario())
    assert sample.connections == 1
    assert sample.jetstream_storage_used is not None
    assert sample.jetstream_storage_used >= 20 * 1024


def test_cluster_peers_are_distinct_servers(nats_cluster: list[NatsServer]) -> None:
    samples = poll([server.target() for server in nats_cluster])

    assert [s.node_name for s in samples] == ["node-1", "node-2", "node-3"]
    for sample in samples:
        assert sample.error is None
        assert sample.healthy is True
        assert sample.peers == 2
    # Route pooling is why peers are not counted from num_routes.
    routez = nats_cluster[0].get("/routez")
    assert routez is not None
    assert routez.json()["num_routes"] > 2


def test_cluster_aggregate(nats_cluster: list[NatsServer]) -> None:
    load = aggregate(poll([server.target() for server in nats_cluster]))
    assert (load.nodes, load.reachable, load.unreachable, load.healthy) == (3, 3, 0, 3)
    assert load.memory_known == 3
    assert load.cpu_percent is not None and load.memory_percent is not None


def test_refused_node_is_reported_in_place(nats_server: NatsServer) -> None:
    closed = MonitorTarget(node_name="gone", host="127.0.0.1", port=free_port())
    samples = poll([nats_server.target(), closed, nats_server.target()])

    assert [s.node_name for s in samples] == ["solo", "gone", "solo"]
    gone = samples[1]
    assert gone.reachable is False
    assert gone.healthy is None
    assert gone.error is not None and gone.error.startswith("cannot connect")
    assert samples[0].reachable and samples[2].reachable


def test_silent_node_hits_the_per_node_timeout(
    nats_server: NatsServer, silent_listener: int
) -> None:
    silent = MonitorTarget(node_name="silent", host="127.0.0.1", port=silent_listener)
    samples, elapsed = timed_poll([silent, nats_server.target()], per_node_timeout=0.5)

    assert samples[0].reachable is False
    assert samples[0].error == "timed out after 0.5s"
    assert samples[1].reachable is True
    # Never sooner than the timeout; later only by time this process lagged (not counted
    # against nodes, see morpheus.pacing), which a machine at load 30 stretches many times.
    assert 0.5 <= elapsed < ENDS_WITHIN_SECONDS


def test_many_silent_nodes_poll_in_parallel() -> None:
    # A listener in the poll's own event loop accepts and never answers, and counts the
    # connections open at once: one after another, no more than one node's two would be.
    # Time the loop could not run is not counted against the nodes' deadline, so every node
    # is connected before the first times out, however loaded the machine.
    open_now: set[asyncio.StreamWriter] = set()
    most_open = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal most_open
        open_now.add(writer)
        most_open = max(most_open, len(open_now))
        await reader.read()  # until the poller hangs up
        open_now.discard(writer)
        writer.close()

    async def scenario() -> list[NodeSample]:
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        targets = [
            MonitorTarget(node_name=f"silent-{i}", host="127.0.0.1", port=port) for i in range(20)
        ]
        async with server:
            return await poll_nodes(targets, per_node_timeout=0.3)

    samples = asyncio.run(scenario())
    assert [s.error for s in samples] == ["timed out after 0.3s"] * 20
    assert most_open == 40  # /varz and /healthz of every node


def test_real_server_over_ipv6_loopback(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        free_port("::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    server = make_server(tmp_path, "six", host="::1")
    try:
        server.start()
        wait_until(server.healthy, 30, "nats-server on ::1 healthy")
        [sample] = poll([server.target()])
    finally:
        server.stop()
    assert sample.url == f"http://[::1]:{server.monitor_port}"
    assert sample.reachable and sample.healthy


# --- faults a real server will not produce on demand (respx) ----------------------------------

VARZ: dict[str, Any] = {
    "server_name": "n1",
    "cpu": 150.0,
    "mem": 2 * GIB,
    "cores": 4,
    "connections": 7,
    "routes": 6,
    "remotes": 2,
    "jetstream": {
        "config": {"max_memory": JS_MEMORY, "max_storage": JS_STORAGE, "store_dir": "/x"},
        "stats": {"memory": 1000, "storage": 5000, "reserved_memory": 0, "api": {"total": 1}},
    },
    "some_future_key": {"nested": [1, 2, 3]},
}


@dataclass
class FakeNode:
    """Routes of one mocked node; change a route's response per test."""

    target: MonitorTarget
    varz: respx.Route
    healthz: respx.Route
    jsz: respx.Route


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(assert_all_called=False)


@pytest.fixture
def transport(router: respx.Router) -> httpx.MockTransport:
    return httpx.MockTransport(router.async_handler)


@pytest.fixture
def fake_node(router: respx.Router) -> Callable[..., FakeNode]:
    ports = iter(range(18000, 19000))

    def make(
        host: str = "127.0.0.1",
        varz: dict[str, Any] | None = None,
        memory_bytes: int | None = 8 * GIB,
    ) -> FakeNode:
        port = next(ports)
        base = monitor_url(host, port)
        return FakeNode(
            target=MonitorTarget(
                node_name=f"node-{port}", host=host, port=port, memory_bytes=memory_bytes
            ),
            varz=router.get(f"{base}/varz").respond(json=VARZ if varz is None else varz),
            healthz=router.get(f"{base}/healthz").respond(json={"status": "ok"}),
            jsz=router.get(f"{base}/jsz").respond(500),
        )

    return make


def test_figures_are_computed_from_varz(
    fake_node: Callable[..., FakeNode], transport: httpx.MockTransport
) -> None:
    node = fake_node()
    [sample] = poll([node.target], transport=transport)

    assert sample.error is None
    assert sample.cpu_percent == pytest.approx(37.5)  # 150 % of one core over 4 cores
    assert sample.memory_percent == pytest.approx(25.0)  # 2 GiB of 8 GiB
    assert (sample.mem_bytes, sample.cores, sample.connections) == (2 * GIB, 4, 7)
    assert sample.peers == 2
    assert (sample.jetstream_memory_used, sample.jetstream_memory_limit) == (1000, JS_MEMORY)
    assert (sample.jetstream_storage_used, sample.jetstream_storage_limit) == (5000, JS_STORAGE)
    assert not node.jsz.called


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(500), "/varz: HTTP 500"),
        (httpx.Response(404, text="not found"), "/varz: HTTP 404"),
        (httpx.Response(200, text="{not json"), "/varz: malformed JSON"),
        (httpx.Response(200, text=""), "/varz: malformed JSON"),
        (httpx.Response(200, json=[1, 2]), "/varz: expected a JSON object"),
        (httpx.Response(200, json={**VARZ, "cpu": "high"}), "/varz: bad 'cpu'"),
        (httpx.Response(200, json={**VARZ, "cpu": True}), "/varz: bad 'cpu'"),
        (httpx.Response(200, json={**VARZ, "mem": "2G"}), "/varz: bad 'mem'"),
        (httpx.Response(200, json={**VARZ, "cores": -1}), "/varz: bad 'cores'"),
        (httpx.Response(200, json={**VARZ, "connections": None}), "/varz: bad 'connections'"),
        (
            httpx.Response(200, json={k: v for k, v in VARZ.items() if k != "cores"}),
            "/varz: bad 'cores' (field required)",
        ),
        (
            httpx.Response(200, json={**VARZ, "jetstream": {"stats": {"memory": "lots"}}}),
            "/varz: bad 'jetstream.stats.memory'",
        ),
    ],
)
def test_bad_varz_makes_the_node_an_error(
    fake_node: Callable[..., FakeNode],
    transport: httpx.MockTransport,
    response: httpx.Response,
    error: str,
) -> None:
    node, healthy_node = fake_node(), fake_node()
    node.varz.mock(return_value=response)
    samples = poll([node.target, healthy_node.target], transport=transport)

    assert samples[0].reachable is False
    assert samples[0].error is not None and samples[0].error.startswith(error)
    assert samples[0].cpu_percent is None
    assert samples[1].error is None


@pytest.mark.parametrize(
    "exception", [httpx.ConnectTimeout("slow"), httpx.ReadTimeout("slow"), httpx.PoolTimeout("x")]
)
def test_httpx_timeouts_read_as_timeouts(
    fake_node: Callable[..., FakeNode],
    transport: httpx.MockTransport,
    exception: httpx.TimeoutException,
) -> None:
    node = fake_node()
    node.varz.mock(side_effect=exception)
    [sample] = poll([node.target], transport=transport, per_node_timeout=2.0)
    assert sample.reachable is False
    assert sample.error == "timed out after 2s"


def test_other_transport_errors_are_reported(
    fake_node: Callable[..., FakeNode], transport: httpx.MockTransport
) -> None:
    node = fake_node()
    node.varz.mock(side_effect=httpx.RemoteProtocolError("server hung up"))
    [sample] = poll([node.target], transport=transport)
    assert sample.reachable is False
    assert sample.error == "RemoteProtocolError: server hung up"


def test_slow_endpoint_times_out_per_node(
    fake_node: Callable[..., FakeNode], transport: httpx.MockTransport
) -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    slow, fast = fake_node(), fake_node()
    slow.varz.mock(side_effect=never)
    samples = poll([slow.target, fast.target], transport=transport, per_node_timeout=0.2)
    # The poll ended, so the slow node's deadline ended its request.
    assert samples[0].error == "timed out after 0.2s"
    assert samples[1].reachable


@pytest.mark.parametrize(
    ("status", "healthy"), [(200, True), (503, False), (500, False), (404, False)]
)
def test_health_is_the_status_code(
    fake_node: Callable[..., FakeNode],
    transport: httpx.MockTransport,
    status: int,
    healthy: bool,
) -> None:
    node = fake_node()
    node.healthz.respond(status, json={"status": "unavailable", "error": "JetStream not current"})
    [sample] = poll([node.target], transport=transport)
    assert sample.reachable is True
    assert sample.healthy is healthy
    assert sample.error is None


def test_health_unknown_when_healthz_does_not_answer(
    fake_node: Callable[..., FakeNode], transport: httpx.MockTransport
) -> None:
    node = fake_node()
    node.healthz.mock(side_effect=httpx.ConnectError("refused"))
    [sample] = poll([node.target], transport=transport)
    assert sample.reachable is True
    assert sample.healthy is None
    assert sample.error == "/healthz: cannot connect (refused)"
    assert sample.cpu_percent == pytest.approx(37.5)


def test_jetstream_disabled_leaves_its_figures_unknown(
    fake_node: Callable[..., FakeNode], transport: httpx.MockTransport
) -> None:
    node = fake_node(varz={**VARZ, "jetstream": {}})
    [sample] = poll([node.target], transport=transport)
    assert sample.error is None
    assert sample.jetstream_memory_used is None
    assert sample.jetstream_storage_limit is None
    assert not node.jsz.called


def test_jetstream_usage_from_jsz_when_varz_lacks_it(
    fake_node: Callable[..., FakeNode], transport: httpx.MockTransport
) -> None:
    node = fake_node(varz={**VARZ, "jetstream": {"config": {"max_memory": 10, "max_storage": 20}}})
    node.jsz.respond(
        json={"memory": 3, "storage": 4, "config": {"max_memory": 10, "max_storage": 20}}
    )
    [sample] = poll([node.target], transport=transport)
    assert sample.error is None
    assert (sample.jetstream_memory_used, sample.jetstream_memory_limit) == (3, 10)
    assert (sample.jetstream_storage_used, sample.jetstream_storage_limit) == (4, 20)


def test_failing_jsz_is_reported_but_the_node_counts(
    fake_node: Callable[..., FakeNode], transport: httpx.MockTransport
) -> None:
    node = fake_node(varz={**VARZ, "jetstream": {"config": {"max_memory": 10}}})
    [sample] = poll([node.target], transport=transport)
    assert sample.reachable is True
    assert sample.error == "/jsz: HTTP 500"
    assert sample.jetstream_memory_used is None


def most_nodes_at_once(
    nodes: list[FakeNode], transport: httpx.MockTransport, **options: Any
) -> int:
    """Poll ``nodes`` whose /varz answers slowly; the most nodes answering at one time."""
    in_flight: set[str] = set()
    most = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal most
        in_flight.add(request.url.netloc.decode())
        most = max(most, len(in_flight))
        await asyncio.sleep(0.05)
        in_flight.discard(request.url.netloc.decode())
        return httpx.Response(200, json=VARZ)

    for node in nodes:
        node.varz.mock(side_effect=slow)
    samples = poll([n.target for n in nodes], transport=transport, **options)
    assert all(s.reachable for s in samples)
    return most


def test_concurrency_is_bounded(
    fake_node: Callable[..., FakeNode], transport: httpx.MockTransport
) -> None:
    nodes = [fake_node() for _ in range(12)]
    assert most_nodes_at_once(nodes, transport, concurrency=4) == 4


def test_default_concurrency_is_bounded(
    fake_node: Callable[..., FakeNode], transport: httpx.MockTransport
) -> None:
    nodes = [fake_node() for _ in range(130)]
    most = most_nodes_at_once(nodes, transport)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard  # raised by the poll
    assert most == min(130, concurrency_within(soft))


@pytest.mark.parametrize(
    ("open_file_limit", "concurrency"),
    [(None, MAX_CONCURRENCY), (1_048_576, MAX_CONCURRENCY), (256, 96), (65, 1), (10, 1)],
)
def test_concurrency_fits_the_open_file_limit(
    open_file_limit: int | None, concurrency: int
) -> None:
    assert concurrency_within(open_file_limit) == concurrency


def test_nodes_are_polled_concurrently(
    fake_node: Callable[..., FakeNode], transport: httpx.MockTransport
) -> None:
    # No node answers /varz before every node has asked for it: a poller asking one node
    # after another never gets past the first, which gives up after BARRIER_SECONDS. The
    # deadlines are far longer than a loaded machine needs to send 50 requests.
    nodes = [fake_node() for _ in range(50)]
    asked: set[str] = set()
    asked_when_released: list[int] = []
    everyone_asked = asyncio.Event()

    async def once_everyone_asked(request: httpx.Request) -> httpx.Response:
        asked.add(request.url.netloc.decode())
        if len(asked) == len(nodes):
            everyone_asked.set()
        if not everyone_asked.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(everyone_asked.wait(), BARRIER_SECONDS)
            if not asked_when_released:
                asked_when_released.append(len(asked))
            everyone_asked.set()  # a failed run ends here rather than waiting node by node
        return httpx.Response(200, json=VARZ)

    for node in nodes:
        node.varz.mock(side_effect=once_everyone_asked)
    samples = poll([n.target for n in nodes], transport=transport, per_node_timeout=60.0)
    assert asked_when_released == [len(nodes)], "nodes asked before the first one answered"
    assert all(s.reachable for s in samples)


def test_unusable_url_is_an_error_not_an_exception(transport: httpx.MockTransport) -> None:
    # Skips validation to reach httpx's own URL check, as a target built by hand might.
    typo = MonitorTarget.model_construct(node_name="typo", host="ex\x00a", port=8222)
    [sample] = poll([typo], transport=transport)
    assert sample.reachable is False
    assert sample.error is not None
    assert sample.error.startswith("InvalidURL")


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "::1", "2a01:4f8::1", "node-1", "node-1.forest.example", "localhost", "a.b."],
)
def test_monitor_target_accepts_addresses_and_hostnames(host: str) -> None:
    assert MonitorTarget(node_name="n", host=host, port=8222).host == host


@pytest.mark.parametrize(
    "host", ["", "bad host", "[::1]", "::g", "-node", "node-", "a..b", "a/b", "x" * 64, "h:8222"]
)
def test_monitor_target_rejects_what_is_not_a_host(host: str) -> None:
    with pytest.raises(ValidationError, match="host"):
        MonitorTarget(node_name="n", host=host, port=8222)


def test_no_targets() -> None:
    assert poll([]) == []


def test_concurrency_must_be_positive() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        poll([MonitorTarget(node_name="a", host="127.0.0.1", port=1)], concurrency=0)


def test_ipv6_target_is_requested_in_brackets(
    fake_node: Callable[..., FakeNode], transport: httpx.MockTransport
) -> None:
    # A mocked transport: nothing leaves the process.
    node = fake_node(host="2001:db8::1")
    [sample] = poll([node.target], transport=transport)
    assert sample.url == f"http://[2001:db8::1]:{node.target.port}"
    assert node.varz.called
    assert sample.reachable


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8222"),
        ("10.1.2.3", "http://10.1.2.3:8222"),
        ("::1", "http://[::1]:8222"),
        ("2a01:4f8:c2c:1234::1", "http://[2a01:4f8:c2c:1234::1]:8222"),
        ("node-1.forest.example", "http://node-1.forest.example:8222"),
        ("localhost", "http://localhost:8222"),
    ],
)
def test_monitor_url(host: str, url: str) -> None:
    assert monitor_url(host, 8222) == url


# --- aggregate --------------------------------------------------------------------------------


def sample(
    name: str,
    cpu: float | None = None,
    memory: float | None = None,
    *,
    reachable: bool = True,
    healthy: bool | None = True,
) -> NodeSample:
    return NodeSample(
        node_name=name,
        url=f"http://127.0.0.1:8222/{name}",
        reachable=reachable,
        healthy=healthy,
        cpu_percent=cpu,
        memory_percent=memory,
    )


def test_aggregate_means_over_reachable_nodes() -> None:
    load = aggregate(
        [
            sample("a", 10.0, 40.0),
            sample("b", 30.0, None, healthy=False),
            sample("c", 50.0, 80.0),
            sample("d", reachable=False, healthy=None),
        ]
    )
    assert load == ForestLoad(
        nodes=4,
        reachable=3,
        unreachable=1,
        healthy=2,
        memory_known=2,
        cpu_known=3,
        cpu_percent=30.0,
        memory_percent=60.0,
        max_cpu_percent=50.0,
        max_memory_percent=80.0,
    )


def test_aggregate_of_nothing() -> None:
    load = aggregate([sample("x", reachable=False, healthy=None)])
    assert (load.nodes, load.reachable, load.unreachable, load.healthy) == (1, 0, 1, 0)
    assert load.cpu_percent is None and load.memory_percent is None
    assert load.max_cpu_percent is None and load.max_memory_percent is None
    assert aggregate([]).nodes == 0


def test_monitor_target_validates_port() -> None:
    with pytest.raises(ValidationError, match="port"):
        MonitorTarget(node_name="a", host="127.0.0.1", port=70000)


# --- scale: many nodes, few files, hostile replies (real sockets on 127.0.0.1) ----------------


@pytest.fixture
def loopback() -> Iterator[LoopbackMonitor]:
    with loopback_monitor() as monitor:
        monitor.varz = VARZ
        yield monitor


def test_more_nodes_than_once_were_polled_at_once_all_answer(
    loopback: LoopbackMonitor,
) -> None:
    # Issue 16 item 1: 100 at a time under one overall deadline lost nodes that answered in
    # time. Every node now has its own deadline, and there is no deadline for the round.
    loopback.delay = 1.5
    samples = poll(loopback.targets(400), per_node_timeout=2.5)
    assert [s.error for s in samples if not s.reachable] == []


POLL_IN_CHILD = """
import asyncio, json, resource, sys
from morpheus.monitor import MonitorTarget, poll_nodes
resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
targets = [
    MonitorTarget(node_name=f"n{{i}}", host="127.0.0.1", port={port}) for i in range({count})
]
hold = []


async def main():
    if {fill}:  # the event loop is running: now use up every descriptor left
        try:
            while True:
                hold.append(open("/dev/null"))
        except OSError:
            pass
    return await poll_nodes(targets, per_node_timeout={timeout}, concurrency={concurrency})


try:
    samples = asyncio.run(main())
except Exception as exc:
    print(json.dumps({{"raised": type(exc).__name__, "message": str(exc)}}))
else:
    print(json.dumps({{
        "reachable": sum(s.reachable for s in samples),
        "errors": sorted({{s.error for s in samples if s.error}}),
        "soft": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }}))
"""


def poll_in_child(
    port: int,
    count: int,
    *,
    soft: int,
    hard: int,
    timeout: float = 2.0,
    concurrency: int | None = None,
    fill: bool = False,
) -> dict[str, Any]:
    """Poll ``count`` nodes from a child process whose open-file limit is (soft, hard)."""
    import json
    import sys

    code = POLL_IN_CHILD.format(
        soft=soft,
        hard=hard,
        port=port,
        count=count,
        timeout=timeout,
        concurrency=concurrency,
        fill=fill,
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    result: dict[str, Any] = json.loads(run.stdout)
    return result


def test_low_open_file_limit_is_not_the_nodes_fault(loopback: LoopbackMonitor) -> None:
    # Issue 16 item 1: with `ulimit -n 128`, 72 of 200 nodes were "not polled".
    loopback.delay = 0.6
    result = poll_in_child(loopback.port, 200, soft=128, hard=128)
    assert result == {"reachable": 200, "errors": [], "soft": 128}


def test_soft_open_file_limit_is_raised_to_the_hard_limit(
    loopback: LoopbackMonitor,
) -> None:
    loopback.delay = 0.2
    result = poll_in_child(loopback.port, 300, soft=128, hard=4096)
    assert result == {"reachable": 300, "errors": [], "soft": 4096}


def test_running_out_of_sockets_asks_again_with_fewer(loopback: LoopbackMonitor) -> None:
    # More nodes at once than the process may open sockets for: the pool shrinks, and no
    # node is blamed for "Too many open files".
    loopback.delay = 0.1
    result = poll_in_child(loopback.port, 120, soft=80, hard=80, concurrency=120)
    assert result == {"reachable": 120, "errors": [], "soft": 80}


def test_no_socket_at_all_is_an_error_of_this_process(loopback: LoopbackMonitor) -> None:
    result = poll_in_child(loopback.port, 3, soft=64, hard=64, fill=True)
    assert result["raised"] == "MorpheusError"
    assert "ulimit -n" in result["message"]


@pytest.mark.parametrize(
    "stream",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40000000\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
    ],
    ids=["declared 1 GiB", "chunked", "until close"],
)
def test_hostile_replies_are_cut_and_memory_stays_bounded(
    loopback: LoopbackMonitor, stream: bytes
) -> None:
    # Issue 16 item 5: 20 nodes streaming 1 GB each took 8 MiB per request (320 MB).
    import tracemalloc

    loopback.stream = stream
    tracemalloc.start()
    try:
        samples = poll(loopback.targets(20), per_node_timeout=10.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    for sample in samples:
        assert not sample.reachable
        assert sample.error is not None and "over the limit of" in sample.error, sample.error
    assert peak < 16 << 20


def test_reply_limit_grows_with_the_forest() -> None:
    # A real /varz: ~2.4 KiB standalone, ~175 bytes more per peer (see max_reply_bytes).
    assert max_reply_bytes(1) > 20 * 2_500
    assert max_reply_bytes(2_000) > 3 * (2_500 + 2_000 * 350)
    assert max_reply_bytes(10**9) <= 32 << 20


@pytest.mark.parametrize(
    ("varz", "cpu", "memory"),
    [
        ({**VARZ, "cpu": 400.0, "cores": 2}, 100.0, 25.0),  # 400 % of one core on 2 cores
        ({**VARZ, "mem": 16 * GIB}, 37.5, 100.0),  # more resident memory than the node has
        ({**VARZ, "cpu": 0.0}, 0.0, 25.0),
    ],
)
def test_impossible_figures_are_clamped(
    fake_node: Callable[..., FakeNode],
    transport: httpx.MockTransport,
    varz: dict[str, Any],
    cpu: float,
    memory: float,
) -> None:
    [sample] = poll([fake_node(varz=varz).target], transport=transport)
    assert (sample.cpu_percent, sample.memory_percent) == (cpu, memory)
    load = aggregate([sample])
    assert load.max_cpu_percent is not None and load.max_cpu_percent <= 100
    assert load.max_memory_percent is not None and load.max_memory_percent <= 100


def test_zero_cores_is_an_answer_with_cpu_unknown(
    fake_node: Callable[..., FakeNode], transport: httpx.MockTransport
) -> None:
    # Issue 16 item 6: the node answered, so it is reachable; only its CPU share is unknown.
    [sample] = poll([fake_node(varz={**VARZ, "cores": 0}).target], transport=transport)
    assert sample.reachable is True
    assert sample.cores == 0 and sample.cpu_percent is None
    assert sample.memory_percent == pytest.approx(25.0)
    assert sample.error == "/varz: 0 cores, so CPU is unknown"
    load = aggregate([sample])
    assert (load.reachable, load.cpu_known, load.cpu_percent) == (1, 0, None)


def test_aggregate_counts_healthy_only_among_reachable_nodes() -> None:
    # Issue 16 item 2: /healthz 200 with /varz failing is not a healthy node of the forest.
    load = aggregate(
        [sample("a", 10.0, 10.0), sample("b", reachable=False, healthy=True), sample("c", 5.0)]
    )
    assert (load.reachable, load.healthy) == (2, 2)
    load = aggregate([sample("a", 10.0, healthy=None), sample("b", reachable=False, healthy=True)])
    assert load.healthy == 0


def test_time_this_process_could_not_run_is_not_counted_against_nodes(
    loopback: LoopbackMonitor,
) -> None:
    # Each node answers within 0.05 s, but the event loop only runs between slices of 0.25 s
    # in which it is blocked (as when the machine is starved of CPU, or the loop is busy with
    # thousands of other replies): 1.5 s in all, three times the timeout.
    loopback.delay = 0.05

    async def scenario() -> list[NodeSample]:
        async def hog() -> None:
            for _ in range(6):
                await asyncio.sleep(0)
                time.sleep(0.25)  # blocks the loop, on purpose

        hogging = asyncio.create_task(hog())
        samples = await poll_nodes(loopback.targets(20), per_node_timeout=0.5)
        await hogging
        return samples

    samples = asyncio.run(scenario())
    assert [s.error for s in samples if not s.reachable] == []


def test_silent_endpoint_still_times_out_while_the_process_lags(
    loopback: LoopbackMonitor,
) -> None:
    loopback.healthz_status = None  # /healthz never answers

    async def scenario() -> tuple[list[NodeSample], float]:
        async def hog() -> None:
            await asyncio.sleep(0.02)
            time.sleep(0.5)

        hogging = asyncio.create_task(hog())
        started = time.monotonic()
        samples = await poll_nodes(loopback.targets(3), per_node_timeout=0.5)
        elapsed = time.monotonic() - started
        await hogging
        return samples, elapsed

    samples, elapsed = asyncio.run(scenario())
    assert all(s.reachable for s in samples)
    assert [s.error for s in samples] == ["/healthz: timed out after 0.5s"] * 3
    # 0.5 s of its own time plus at least the 0.5 s it lost; the end only says it ended.
    assert 0.9 <= elapsed < ENDS_WITHIN_SECONDS
