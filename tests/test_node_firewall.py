"""The node firewall in a real kernel: loaded whole, then its route peers swapped alone.

Each test runs ``nft`` inside a private network namespace of its own (``unshare --net``), so
nothing of this machine's ruleset is touched.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from morpheus.blueprint import NatsInstall, NodeBlueprint, Peer
from morpheus.render import NODE_PATHS, ROUTE_PEERS_NAME, render_firewall, render_route_peers
from morpheus.testing.tools import missing, require_tool


def node_host(index: int) -> str:
    return f"2001:db8:{index:x}::1"


def forest(size: int) -> list[NodeBlueprint]:
    """The blueprints of a ``size``-node forest's node firewalls."""
    peers = tuple(Peer(host=node_host(i)) for i in range(1, size + 1)) if size > 1 else ()
    return [
        NodeBlueprint(
            forest_id="forest-1",
            run_id="run-1",
            node_id=f"forest-1-node-{index}",
            node_name=f"node-{index}",
            index=index,
            cluster_name="forest-1",
            host=node_host(index),
            peers=peers,
            nats=NatsInstall(version="2.12.1"),
            admin_sources=("203.0.113.7/32", "2001:db8:ffff::/64"),
        )
        for index in range(1, size + 1)
    ]


def in_namespace(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (sh) in a new network namespace; skip where that is not allowed."""
    unshare = require_tool("unshare")
    require_tool("nft")
    if os.geteuid() != 0:
        missing("a network namespace of its own needs root")
    done = subprocess.run(
        [unshare, "--net", "sh", "-eu", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "Operation not permitted" in done.stderr:
        missing("unshare --net is not permitted here")
    return done


def route_peers_loaded(listing: str) -> dict[str, list[str]]:
    """The elements of the route peer sets, from ``nft -j list table inet morpheus``."""
    found: dict[str, list[str]] = {"peers_v4": [], "peers_v6": []}
    for item in json.loads(listing)["nftables"]:
        nft_set = item.get("set")
        if nft_set and nft_set["name"] in found:
            found[nft_set["name"]] = [
                e if isinstance(e, str) else f"{e['prefix']['addr']}/{e['prefix']['len']}"
                for e in nft_set.get("elem", [])
            ]
    return found


def write_firewall(directory: Path, blueprint: NodeBlueprint) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ROUTE_PEERS_NAME).write_text(render_route_peers(blueprint))
    ruleset = directory / "firewall.nft"
    ruleset.write_text(render_firewall(blueprint))
    return ruleset


def test_route_peers_are_swapped_alone_and_name_exactly_the_forest(tmp_path: Path) -> None:
    """A grown forest (node 2 gone, nodes 4 and 5 added) changes only the route peers file:
    loading it alone leaves exactly the new nodes admitted, and the rest of the ruleset as
    it was."""
    first = forest(3)[0]
    ruleset = write_firewall(tmp_path / "before", first)
    now = first.model_copy(update={"peers": tuple(Peer(host=node_host(i)) for i in (1, 3, 4, 5))})
    assert render_firewall(now) == render_firewall(first)  # membership is not in the ruleset
    changed = tmp_path / "after" / ROUTE_PEERS_NAME
    changed.parent.mkdir()
    changed.write_text(render_route_peers(now))
    nft = NODE_PATHS.nft if Path(NODE_PATHS.nft).exists() else "nft"
    done = in_namespace(
        f"{nft} -I {tmp_path / 'before'} -f {ruleset}\n"
        f"{nft} -j list table inet morpheus > {tmp_path / 'loaded.json'}\n"
        f"{nft} list chain inet morpheus input > {tmp_path / 'chain-before'}\n"
        f"{nft} -f {changed}\n"
        f"{nft} -j list table inet morpheus > {tmp_path / 'swapped.json'}\n"
        f"{nft} list chain inet morpheus input > {tmp_path / 'chain-after'}\n"
    )
    assert (done.returncode, done.stderr) == (0, "")
    loaded = route_peers_loaded((tmp_path / "loaded.json").read_text())
    assert loaded == {"peers_v4": [], "peers_v6": [node_host(i) for i in (1, 2, 3)]}
    swapped = route_peers_loaded((tmp_path / "swapped.json").read_text())
    assert swapped == {"peers_v4": [], "peers_v6": [node_host(i) for i in (1, 3, 4, 5)]}
    assert (tmp_path / "chain-after").read_text() == (tmp_path / "chain-before").read_text()
    assert "tcp dport 6222 accept" in (tmp_path / "chain-after").read_text()


@pytest.mark.parametrize("size", [1, 3])
def test_no_one_is_admitted_to_routes_beyond_the_forest(tmp_path: Path, size: int) -> None:
    """No ``::/0``: a standalone node admits no route at all, a clustered one its peers."""
    blueprint = forest(size)[0]
    ruleset = write_firewall(tmp_path, blueprint)
    nft = NODE_PATHS.nft if Path(NODE_PATHS.nft).exists() else "nft"
    done = in_namespace(
        f"{nft} -I {tmp_path} -f {ruleset}\n"
        f"{nft} -j list table inet morpheus > {tmp_path / 'loaded.json'}\n"
    )
    assert (done.returncode, done.stderr) == (0, "")
    loaded = route_peers_loaded((tmp_path / "loaded.json").read_text())
    expected = [node_host(i) for i in range(1, size + 1)] if size > 1 else []
    assert loaded == {"peers_v4": [], "peers_v6": expected}
