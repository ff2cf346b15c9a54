"""Secrets never leak: the cloud token and a forest's route password, through a real session.

A realistic sequence runs through the real CLI with a unique test token, against the fake
Hetzner API on 127.0.0.1 where a command talks to the cloud. Every stdout and stderr, every
file under the state directory, the registry's bytes and the local nodes' logs are then
searched for the token and the route password.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import sqlite3
import stat
import struct
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from morpheus.render import NODE_PATHS, delivered_files
from morpheus.settings import load_settings
from morpheus.testing.cli import invoke, morpheus
from morpheus.testing.nats import processes_mentioning

FAKE_API = Path(__file__).resolve().parents[1] / "providers/hetzner/tests/fakeapi.py"


def _fake_api_module() -> ModuleType:
    """The Hetzner provider's fake API (a test helper there, not an installed module)."""
    name = "morpheus_secrets_fakeapi"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FAKE_API)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up by name
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def token() -> str:
    return "tok-" + secrets.token_hex(24)


@pytest.fixture
def hetzner_api(token: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The fake Hetzner API on 127.0.0.1, accepting only ``token``; the CLI is pointed at it."""
    with _fake_api_module().FakeHetzner(tokens=[token], time_scale=0.01) as fake:
        monkeypatch.setenv("HCLOUD_ENDPOINT", fake.endpoint)
        monkeypatch.setenv("HCLOUD_TOKEN", token)
        yield fake


def files_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


def route_password(state_dir: Path, forest_id: str) -> str:
    with closing(sqlite3.connect(state_dir / "registry.sqlite3")) as db:
        row = db.execute(
            "SELECT password FROM route_credentials WHERE forest_id = ?", (forest_id,)
        ).fetchone()
    assert row is not None and len(row[0]) >= 32
    return str(row[0])


def private_keys(state_dir: Path, forest_id: str) -> tuple[str, dict[str, str]]:
    """The forest CA's private key and every node's, as the registry holds them."""
    with closing(sqlite3.connect(state_dir / "registry.sqlite3")) as db:
        (ca_key,) = db.execute(
            "SELECT ca_key FROM route_credentials WHERE forest_id = ?", (forest_id,)
        ).fetchone()
        rows = db.execute(
            "SELECT node_id, key FROM node_credentials WHERE forest_id = ?", (forest_id,)
        ).fetchall()
    assert "PRIVATE KEY" in ca_key and len(rows) == 3
    return str(ca_key), {str(node_id): str(key) for node_id, key in rows}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_session_never_shows_the_token_or_the_route_password(
    hetzner_api: Any,
    token: str,
    state_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a cloud plant needs besides the token: admin networks and an SSH key.
    Path("config.yaml").write_text("infrastructure:\n  admin_sources: [203.0.113.7/32]\n")
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
    ssh = Path.home() / ".ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "id_ed25519.pub").write_text(f"ssh-ed25519 {base64.b64encode(blob).decode()} t@h\n")
    outputs: dict[str, str] = {}

    def run(*args: str, expect: int | None = 0) -> str:
        result = morpheus(*args)
        if expect is not None:
            assert result.returncode == expect, (args, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        name = " ".join(args)
        outputs[name] = result.stdout + result.stderr
        return result.stdout

    run("config", "check")
    run("config", "check", "-o", "json")
    # check's exit status depends on this machine's routes (global IPv6, the admin sources
    # admitting it: tests/test_check.py); only its output matters here.
    run("check", expect=None)
    run("check", "-o", "yaml", expect=None)
    run("plant", "cloud", "small", "--dry-run", "--user-data-dir", "cloud-user-data")
    forest = json.loads(run("plant", "local", "medium", "-o", "json"))["forest"]["id"]
    for output in ("table", "json", "yaml"):
        run("status", forest, "-o", output)
    run("list")
    run("list", "-o", "json")
    run("grow", forest, "--dry-run", "-o", "json")
    run("teardown", forest, "--dry-run")
    # Local nodes get no user-data: the command says so instead of printing the password.
    run("user-data", forest, "node-2", expect=2)
    # What a cloud-init node of this forest would print (in this process, so the local
    # provider can claim to boot from cloud-init): its secrets, by design, and no others.
    from morpheus_local.provider import LocalProvider

    with monkeypatch.context() as patch:
        patch.setattr(LocalProvider, "renders_user_data", True)
        shown = invoke("user-data", forest, "node-2")
    assert shown.returncode == 0, shown.stderr
    user_data = shown.stdout
    outputs[f"user-data {forest} node-2"] = shown.stdout + shown.stderr
    # Snapshot first: opening the registry below may fold its WAL file away.
    state_files = {path: path.read_bytes() for path in files_under(state_dir)}
    modes = {path: mode(path) for path in state_files}
    registry_bytes = state_files[state_dir / "registry.sqlite3"]
    password = route_password(state_dir, forest)
    ca_key, node_keys = private_keys(state_dir, forest)
    logs = [path for path in state_files if path.suffix == ".log"]
    run("teardown", forest, "--yes")

    # The token reached the API (which accepts only it), and nothing else.
    assert any(r.status == 200 for r in hetzner_api.requests)
    for name, text in outputs.items():
        assert token not in text, name
    assert token.encode() not in registry_bytes
    assert len(logs) == 3
    for path, content in state_files.items():
        assert token.encode() not in content, path
    for path in files_under(tmp_path):  # the cloud user-data, the state left after teardown
        assert token.encode() not in path.read_bytes(), path

    # The route password: only in `user-data` (by design) and files kept 0600.
    assert password in delivered_files(user_data)[NODE_PATHS.nats_conf]
    for name, text in outputs.items():
        if name != f"user-data {forest} node-2":
            assert password not in text, name
    holding = [path for path, content in state_files.items() if password.encode() in content]
    # The three nodes' nats.conf and the registry (its WAL file may hold the row instead).
    assert sum(p.name == "nats.conf" for p in holding) == 3, holding
    assert any(p.name.startswith("registry.sqlite3") for p in holding), holding
    for path in holding:
        assert modes[path] == 0o600, (path, oct(modes[path]))
    assert not any(path.suffix == ".log" for path in holding), holding
    assert modes[state_dir / "registry.sqlite3"] == 0o600

    # Private keys: the CA's only in the registry; each node's in its own 0600 key file
    # (and node-2's in `user-data node-2`, which is that node's boot configuration).
    for name, text in outputs.items():
        assert ca_key not in text, name
        for node_id, key in node_keys.items():
            if not (name == f"user-data {forest} node-2" and node_id.endswith("-node-2")):
                assert key not in text, (name, node_id)
    delivered = delivered_files(user_data)
    [node_two_key] = [text for path, text in delivered.items() if path.endswith("node-key.pem")]
    assert node_two_key == next(k for n, k in node_keys.items() if n.endswith("-node-2"))
    assert not any(ca_key in text for text in delivered.values())
    for key in (ca_key, *node_keys.values()):
        holding = [path for path, content in state_files.items() if key.encode() in content]
        assert holding, "a key is nowhere on disk?"
        for path in holding:
            assert modes[path] == 0o600, (path, oct(modes[path]))
            assert path.name.startswith(("registry.sqlite3", "node-key.pem")), path
    for written in (tmp_path / "cloud-user-data").rglob("*"):
        if written.is_dir():
            assert mode(written) == 0o700, written
            continue
        assert mode(written) == 0o600 and token.encode() not in written.read_bytes()
        if written.suffix == ".yaml":  # and not in the compressed files inside either
            for content in delivered_files(written.read_text()).values():
                assert token not in content, written
    assert processes_mentioning(str(state_dir)) == []


def test_nats_conf_files_hold_the_password_and_only_their_owner_reads_them(
    state_dir: Path,
) -> None:
    planted = morpheus("plant", "local", "medium", "-o", "json")
    assert planted.returncode == 0, planted.stderr
    forest = json.loads(planted.stdout)["forest"]["id"]
    password = route_password(state_dir, forest)
    confs = sorted(state_dir.glob(f"local/{forest}/*/nats.conf"))
    assert len(confs) == 3
    for conf in confs:
        assert password in conf.read_text()
        assert mode(conf) == 0o600
        assert mode(conf.parent) & 0o077 == 0
    assert mode(state_dir) & 0o077 == 0
    assert morpheus("teardown", forest, "--yes").returncode == 0


def test_local_nodes_do_not_inherit_the_token(
    token: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HCLOUD_TOKEN", token)
    planted = morpheus("plant", "local", "small", "-o", "json")
    assert planted.returncode == 0, planted.stderr
    forest = json.loads(planted.stdout)["forest"]["id"]
    try:
        [pid] = processes_mentioning(str(state_dir))
        environment = Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        assert morpheus("teardown", forest, "--yes").returncode == 0
    assert token.encode() not in environment


# --- a config file that holds the token -------------------------------------------------------


@pytest.mark.parametrize(("file_mode", "warned"), [(0o644, True), (0o640, True), (0o600, False)])
def test_a_token_in_a_config_others_can_read_is_warned_about(
    tmp_path: Path, token: str, file_mode: int, warned: bool
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"providers:\n  hetzner:\n    token: {token}\n")
    os.chmod(config, file_mode)
    loaded = load_settings(config)
    if warned:
        [warning] = loaded.warnings
        assert str(config) in warning and f"{file_mode:04o}" in warning
        assert "chmod 600" in warning and token not in warning
    else:
        assert loaded.warnings == []


@pytest.mark.parametrize(
    "text",
    [
        "providers:\n  hetzner:\n    token: ${MY_HCLOUD_TOKEN}\n",
        "growth:\n  max_nodes: 3\n",
        "secrets: {}\n",
    ],
)
def test_a_readable_config_without_a_token_in_it_is_fine(
    tmp_path: Path, token: str, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("MY_HCLOUD_TOKEN", token)
    config = tmp_path / "config.yaml"
    config.write_text(text)
    os.chmod(config, 0o644)
    assert load_settings(config).warnings == []


def test_the_warning_holds_even_when_the_environment_overrides_the_token(
    tmp_path: Path, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"providers:\n  hetzner:\n    token: {token}\n")
    os.chmod(config, 0o604)
    monkeypatch.setenv("HCLOUD_TOKEN", "tok-from-the-environment")
    [warning] = load_settings(config).warnings
    assert "0604" in warning


def test_the_cli_prints_the_warning(tmp_path: Path, token: str) -> None:
    config = Path("config.yaml")
    config.write_text(f"providers:\n  hetzner:\n    token: {token}\n")
    os.chmod(config, 0o644)
    result = morpheus("config", "check")
    assert result.returncode == 0
    assert "chmod 600" in result.stderr and token not in result.stdout + result.stderr
