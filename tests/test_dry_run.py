"""plant --dry-run shows what would be made and makes nothing; user-data shows a node's."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from morpheus.render import delivered_files
from morpheus.testing.cli import invoke, morpheus
from morpheus.testing.nats import processes_mentioning


def test_dry_run_creates_nothing_and_writes_user_data(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "user-data"
    result = invoke("plant", "local", "medium", "--dry-run", "--user-data-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert "Plan: medium forest of 3 node(s) on local" in result.stdout
    files = sorted(out.glob("*.yaml"))
    assert [f.name.rsplit("-", 2)[-2:] for f in files] == [["node", f"{i}.yaml"] for i in (1, 2, 3)]
    for path in files:
        text = path.read_text()
        assert text.startswith("#cloud-config\n")
        assert isinstance(yaml.safe_load(text), dict)
        assert os.stat(path).st_mode & 0o777 == 0o600
        # Beside it, every file the node gets, readable, as the user-data delivers it.
        tree = path.with_suffix("")
        delivered = delivered_files(text)
        assert {f"/{p.relative_to(tree)}" for p in tree.rglob("*") if p.is_file()} == set(delivered)
        for node_path, content in delivered.items():
            readable = tree / node_path.lstrip("/")
            assert readable.read_text() == content
            assert os.stat(readable).st_mode & 0o777 == 0o600
        assert all(os.stat(d).st_mode & 0o777 == 0o700 for d in tree.rglob("*") if d.is_dir())
    nats_conf = (files[0].with_suffix("") / "etc/nats/nats.conf").read_text()
    assert "2001:db8::3" in nats_conf  # the full mesh, with placeholder addresses
    assert json.loads(invoke("list", "-o", "json").stdout) == []
    assert processes_mentioning(str(state_dir)) == []


def test_user_data_dir_needs_dry_run(tmp_path: Path) -> None:
    result = invoke("plant", "local", "small", "--user-data-dir", str(tmp_path / "x"))
    assert result.returncode == 2
    assert "--user-data-dir only goes with --dry-run" in result.stderr
    assert not (tmp_path / "x").exists()


def test_user_data_of_an_existing_node(monkeypatch: pytest.MonkeyPatch) -> None:
    planted = json.loads(morpheus("plant", "local", "small", "-o", "json").stdout)
    forest_id = planted["forest"]["id"]
    local = invoke("user-data", forest_id, "node-1")
    assert local.returncode == 2 and local.stdout == ""
    assert "its nodes do not use cloud-init" in local.stderr
    # What a provider that boots its nodes with cloud-init prints, on this forest's records
    # (in this process, so the local provider can claim to be one).
    from morpheus_local.provider import LocalProvider

    monkeypatch.setattr(LocalProvider, "renders_user_data", True)
    shown = invoke("user-data", forest_id, "node-1")
    assert shown.returncode == 0
    assert shown.stdout.startswith("#cloud-config\n")
    assert f"{forest_id}-node-1" in shown.stdout
    decoded = invoke("user-data", forest_id, "node-1", "--files")
    assert decoded.returncode == 0, decoded.stderr
    delivered = delivered_files(shown.stdout)
    assert re.findall(r"^==> (\S+) <==$", decoded.stdout, re.M) == list(delivered)
    nats_conf = delivered["/etc/nats/nats.conf"]  # node-info.json differs: its render time
    assert f"==> /etc/nats/nats.conf <==\n{nats_conf}\n" in decoded.stdout
    assert "==> /etc/morpheus/firewall.nft <==\n#!/usr/sbin/nft -f" in decoded.stdout
    missing = invoke("user-data", forest_id, "node-7")
    assert missing.returncode == 2
    assert "its nodes: node-1" in missing.stderr
    assert morpheus("teardown", forest_id, "--yes").returncode == 0


def test_cloud_dry_run_needs_no_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without HCLOUD_TOKEN a cloud dry run still writes what each node would get; the
    catalogue checks are skipped and the plan says so. The API is never asked: its endpoint
    here is a closed port."""
    monkeypatch.setenv("HCLOUD_ENDPOINT", "http://127.0.0.1:9/v1")
    Path("config.yaml").write_text("infrastructure:\n  admin_sources: [203.0.113.7/32]\n")
    out = tmp_path / "ud"
    result = invoke("plant", "cloud", "medium", "--dry-run", "--user-data-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert "catalogue: not checked (no Hetzner API token)" in result.stdout
    user_data = sorted(out.glob("*.yaml"))
    assert len(user_data) == 3
    assert all(path.read_text().startswith("#cloud-config\n") for path in user_data)
    planting = invoke("plant", "cloud", "medium", "--yes")
    assert planting.returncode == 1
    assert "no Hetzner API token" in planting.stderr
    assert invoke("list", "-o", "json").stdout.strip() == "[]"
