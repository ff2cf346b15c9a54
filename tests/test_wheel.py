"""The core wheel carries templates/: build it, install it in a clean venv, render a nats.conf."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

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
def test_wheel_contains_templates_and_renders(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    assert uv is not None, "uv is needed to build the wheel"
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
    subprocess.run([uv, "venv", "-q", str(venv)], check=True, timeout=120)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(venv / "bin/python"), str(wheel)],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
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
