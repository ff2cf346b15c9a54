"""Benchmark: a 5-node Hetzner plant against a 1-node one, and API requests per node.

Run: `uv run python bench/hetzner_plant.py` (writes the "Hetzner plant" section of
docs/performance.md; `--runs N`, default 3).  Goals (issue 3): 5 nodes within 1.3x of the
wall time of 1 node; at most 10 API requests per node created.

The plant goes through the real plant service and the real provider, with its default
settings, against the fake Hetzner API on 127.0.0.1 with realistic action durations (create
10 s, start 5 s) and request latencies (below).  NATS readiness is left out: the fake's
servers run nothing, and how fast NATS starts is not the provider's doing.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "providers" / "hetzner" / "tests"))
from fakeapi import DEFAULT_ACTION_DURATIONS, FakeHetzner
from results import write_section

import morpheus.services.provision as provision
from morpheus.registry import Registry
from morpheus.services import Context, no_progress
from morpheus.services.plant import PlantRequest, plan, plant
from morpheus.services.teardown import teardown
from morpheus.settings import Settings

#: Seconds each request takes before the fake answers, roughly what the real API takes
#: from Europe (POST /servers schedules a machine and is the slowest).  First match wins.
LATENCIES: list[tuple[str | None, str, float]] = [
    ("POST", "/servers", 1.0),
    ("POST", "/", 0.3),
    ("DELETE", "/", 0.3),
    (None, "/", 0.15),
]


def skip_readiness(*args: Any, **kwargs: Any) -> None:
    """Stands in for the NATS readiness wait (see the module docstring)."""


def one_plant(fake: FakeHetzner, state: Path, nodes: int) -> tuple[float, int]:
    """Wall time of plan + plant until every server runs, and the requests it took."""
    settings = Settings(
        infrastructure={"admin_sources": ["2001:db8:ad::/64"]},
        providers={"hetzner": {"endpoint": fake.endpoint, "token": fake.token}},
    )
    fake.time_scale = 1.0
    fake.clear_requests()
    with Registry.in_state_dir(state) as registry:
        context = Context(settings=settings, state_dir=state, registry=registry)
        request = PlantRequest(target="hetzner", nodes=nodes)
        started = time.perf_counter()
        plant_plan = plan(context, request)
        result = plant(context, plant_plan, request, no_progress)
        elapsed = time.perf_counter() - started
        requests = len(fake.requests)
        fake.time_scale = 0.01  # tearing down is not measured
        teardown(context, result.forest.id, no_progress)
        plant_plan.provider.close()  # type: ignore[attr-defined]
    assert fake.servers == {} and fake.primary_ips == {} and fake.firewalls == {}
    return elapsed, requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    provision.wait_nats_ready = skip_readiness  # type: ignore[assignment]
    times: dict[int, list[float]] = {1: [], 5: []}
    counts: dict[int, list[int]] = {1: [], 5: []}
    with tempfile.TemporaryDirectory() as scratch, FakeHetzner() as fake:
        home = Path(scratch) / "home"
        (home / ".ssh").mkdir(parents=True)
        blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + os.urandom(32)
        key = "ssh-ed25519 " + base64.b64encode(blob).decode() + " bench\n"
        (home / ".ssh" / "id_ed25519.pub").write_text(key)
        os.environ["HOME"] = str(home)
        for method, prefix, seconds in LATENCIES:
            fake.inject_slow_response(seconds, method=method, path_prefix=prefix, times=None)
        for run in range(args.runs):
            for nodes in (1, 5):
                elapsed, requests = one_plant(fake, Path(scratch) / f"state-{run}-{nodes}", nodes)
                times[nodes].append(elapsed)
                counts[nodes].append(requests)
                print(f"run {run + 1}: {nodes} node(s) {elapsed:.2f} s, {requests} requests")
    one, five = statistics.median(times[1]), statistics.median(times[5])
    per_node = {n: statistics.median(counts[n]) / n for n in counts}
    durations = ", ".join(
        f"{command} {DEFAULT_ACTION_DURATIONS[command]:g} s"
        for command in ("create_server", "start_server")
    )
    latency = ", ".join(f"{m or 'other'} {p} {s:g} s" for m, p, s in LATENCIES)
    lines = [
        "## Hetzner plant",
        "",
        f"`uv run python bench/hetzner_plant.py` — the plant service and the Hetzner provider "
        f"(default settings) against the fake API on 127.0.0.1: actions take {durations}; "
        f"requests take {latency}.  From the pre-flight until every server runs (NATS "
        f"readiness left out); median of {args.runs} runs, measured "
        f"{datetime.now(UTC):%Y-%m-%d} on this 2-core machine.",
        "",
        "| case | goal | median wall time | min | max | API requests per node |",
        "|---|---|---|---|---|---|",
        f"| 1 node | baseline | {one:.2f} s | {min(times[1]):.2f} s | {max(times[1]):.2f} s "
        f"| {per_node[1]:.1f} |",
        f"| 5 nodes | ≤ 1.3× of 1 node, ≤ 10 requests per node | {five:.2f} s "
        f"({five / one:.2f}×) | {min(times[5]):.2f} s | {max(times[5]):.2f} s "
        f"| {per_node[5]:.1f} |",
    ]
    print("\n".join(lines[-2:]))
    write_section("## Hetzner plant", "\n".join(lines))


if __name__ == "__main__":
    main()
