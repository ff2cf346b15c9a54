"""The core wheel carries templates/: build it, install it in a clean venv, render a nats.conf.

Offline (the network rule: a test asks no package index), from the cache ``uv sync`` filled:
the clean venv gets the core's locked dependencies from uv.lock (uv keeps their wheels, not
the index pages a fresh resolution would need), then the wheel, whose declared requirements
``uv pip check`` holds against them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV = shutil.which("uv")


def _uv_cache() -> str | None:
    # Asked at import (collection), before the isolation fixture changes HOME.
    if UV is None:
        return None
    found = subprocess.run([UV, "cache", "dir"], capture_output=True, text=True, check=False)
    return found.stdout.strip() or None


UV_CACHE = _uv_cache()

RENDER = """
from morpheus.blueprint import NatsInstall, Peer, RouteCredentials, build_blueprint
from morpheus.render import render_nats_conf, templates_dir
import morpheus
assert str(templates_dir()).startswith(str(__import__("pathlib").Path(morpheus.__file__).parent))
blueprint = build_blueprint(
    forest_id="forest-1", run_id="run-1", node_id="forest-1-node-1", node_name="node-1",
    index=1, cluster_name="forest-1", host="2001:db8::1",
    peers=[Peer(host="2001:db8::1"), Peer(host="2001:db8::2")],
    credentials=RouteCredentials.generate(), nats=NatsInstall(version="2.15.1"),
)
print(render_nats_conf(blueprint))
"""


@pytest.mark.slow
def test_wheel_contains_templates_and_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uv = UV
    assert uv is not None and UV_CACHE is not None, "uv is needed to build the wheel"
    monkeypatch.setenv("UV_CACHE_DIR", UV_CACHE)
    monkeypatch.setenv("UV_OFFLINE", "1")
    dist = tmp_path / "dist"
    subprocess.run(
        [uv, "build", "--wheel", "--package", "morpheus", "-o", str(dist), "-q"],
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("morpheus-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "morpheus/templates/nats.conf.j2" in names
    venv = tmp_path / "venv"
    subprocess.run(
        [uv, "sync", "--frozen", "--package", "morpheus", "--no-install-project", "--no-dev", "-q"],
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)},
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    python = ["--python", str(venv / "bin/python")]
    subprocess.run(
        [uv, "pip", "install", "-q", "--no-deps", *python, str(wheel)],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
    subprocess.run([uv, "pip", "check", "-q", *python], check=True, timeout=120)
    rendered = subprocess.run(
        [str(venv / "bin/python"), "-c", RENDER],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert 'server_name: "forest-1-node-1"' in rendered.stdout
    assert '"nats-route://morpheus-route:' in rendered.stdout
    assert "@[2001:db8::2]:6222" in rendered.stdout
