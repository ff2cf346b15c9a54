"""Benchmark: growing a one-node Hetzner forest to three, on simulated nodes.

Run (as root: network namespaces): `uv run python bench/grow_simulated.py` (writes the "Grow
1 -> 3 on simulated Hetzner nodes" section of docs/performance.md; `--runs N`, default 3).

Each run plants `small` with the real CLI against the fake Hetzner API, every server booted as
a simulated machine (its own network namespace, the rendered node firewall, real OpenSSH sshd
and nats-server; providers/hetzner/tests/simulated_cloud.py), writes 100 messages (~7 MB)
into a stream on node 1 (simulated_cloud.WRITE_STREAM: the node's memory is then above 1 %, so
`--threshold 1` grows it), then times `morpheus grow FOREST --auto --threshold 1` until it
exits: two servers created and ready, node 1 reconfigured over SSH into the cluster, every
node converged, the stream raised to three replicas. It counts the API requests the grow
made. The fake's actions take 1/100 of their real time (Hetzner's own ~15 s of create and
start come on top of the figure).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "providers" / "hetzner" / "tests"))
from fakeapi import FakeHetzner
from results import write_section
from simulated_cloud import TIME_SCALE, WRITE_STREAM, SimulatedCloud, cli_config, run_morpheus

from morpheus.testing.netns import Lab

HEADING = "## Grow 1 -> 3 on simulated Hetzner nodes"


@dataclass
class Run:
    seconds: float
    requests: int
    routes: dict[str, int]


def one_run(directory: Path) -> Run:
    home = directory / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    os.environ.update(HOME=str(home), MORPHEUS_STATE_DIR=str(directory / "state"))
    os.chdir(directory)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh" / "id_ed25519")],
        check=True,
    )
    lab = Lab(directory / "lab").open()
    fake = FakeHetzner(time_scale=TIME_SCALE)
    cloud = SimulatedCloud(fake, lab)
    try:
        lab.call(fake.start)
        cloud.start()
        config = cli_config(fake, readiness_timeout=120)
        config["providers"]["hetzner"]["server_type"] = "cpx11"
        planted = run_morpheus(lab, config, "plant", "hetzner", "small", "--yes", "-o", "json")
        if planted.returncode != 0:
            raise SystemExit(f"plant failed: {planted.stderr} {cloud.failures}")
        forest = json.loads(planted.stdout)["forest"]["id"]
        (name,) = (server.name for server in fake.servers.values())
        cloud.machine(name).run(sys.executable, "-c", WRITE_STREAM, timeout=120)
        fake.clear_requests()
        started = time.monotonic()
        grown = run_morpheus(lab, config, "grow", forest, "--auto", "--threshold", "1")
        seconds = time.monotonic() - started
        if grown.returncode != 10:
            raise SystemExit(f"grow did not grow ({grown.returncode}): {grown.stderr}")
        requests = len(fake.requests)
        routes = dict(fake.counters.most_common())

        run_morpheus(lab, config, "teardown", forest, "--yes")
        return Run(seconds, requests, routes)
    finally:
        cloud.stop()
        fake.stop()
        lab.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    runs = []
    for number in range(arguments.runs):
        with tempfile.TemporaryDirectory(prefix="grow-simulated-") as directory:
            runs.append(one_run(Path(directory)))
        print(f"run {number + 1}: {runs[-1].seconds:.1f} s, {runs[-1].requests} requests")
    seconds = statistics.median(r.seconds for r in runs)
    requests = statistics.median(r.requests for r in runs)
    load = os.getloadavg()[0]
    routes = "; ".join(f"`{route}` {count}" for route, count in runs[-1].routes.items())
    write_section(
        HEADING,
        f"""{HEADING}

`sudo uv run python bench/grow_simulated.py` (root: network namespaces) — `morpheus grow
--auto --threshold 1` on a one-node Hetzner forest planted with the CLI against the fake API,
every server a simulated machine (its own network namespace, the rendered node firewall, real
OpenSSH sshd and nats-server): two servers created and ready, node 1 reconfigured over SSH
into the cluster, every node converged, node 1's stream of 100 messages (~7 MB) raised to
three replicas. The fake's actions take 1/100 of their real time, so
Hetzner's own create and start (~15 s) come on top. Median of {len(runs)} run(s), measured
{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on this 2-core machine (load average {load:.1f}).

| what | figure |
|---|---|
| time to grow 1 -> 3 | {seconds:.1f} s (runs: {", ".join(f"{r.seconds:.1f}" for r in runs)}) |
| API requests of the grow | {requests:.0f} |
| API requests per added node | {requests / 2:.1f} |

The requests of the last run, by route: {routes}.

The SSH key, placement group and firewall the plant made are looked up (one `GET` each)
and not created again (until 2026-11-30 each cost a `POST` answered 409 first: 20 requests,
10.0 per added node; the 409 is still handled when two runs create at once). The times
spread with the machine's load: the two new nodes' first boot (sshd, the bootstrap,
nats-server) and node 1's restart run on the same two cores as everything else.
""",
    )


if __name__ == "__main__":
    main()
