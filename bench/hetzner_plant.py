"""Benchmark: Hetzner plant and teardown of 1, 5, 20 and 50 nodes, and API requests per node.

Run: `uv run python bench/hetzner_plant.py` (writes the "Hetzner plant" section of
docs/performance.md; `--runs N`, default 3; `--sizes 1,5,20,50`).  Goals (issues 3 and 15):
plant 5 within 1.3x and plant 50 within 1.5x of the wall time of 1 node; teardown 50 within
1.5x of teardown 1; at most 5 API requests per node planted at 50; never a 429 with the
real limit of 3600 requests per hour.

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
from dataclasses import dataclass
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
#: Requests per hour per project, as Hetzner allows today.
RATE_LIMIT = 3600


def skip_readiness(*args: Any, **kwargs: Any) -> None:
    """Stands in for the NATS readiness wait (see the module docstring)."""


@dataclass
class Run:
    """One plant and its teardown: wall times, requests and 429s of each."""

    plant_s: float
    plant_requests: int
    teardown_s: float
    teardown_requests: int
    refused: int


def one_run(fake: FakeHetzner, state: Path, nodes: int) -> Run:
    """Plan + plant until every server runs, then teardown, both at real action durations."""
    settings = Settings(
        infrastructure={"admin_sources": ["2001:db8:ad::/64"]},
        providers={"hetzner": {"endpoint": fake.endpoint, "token": fake.token}},
    )
    fake.time_scale = 1.0
    fake.clear_requests()
    fake.set_rate_limit(RATE_LIMIT)  # a full bucket for each run, as a quiet project has
    with Registry.in_state_dir(state) as registry:
        context = Context(settings=settings, state_dir=state, registry=registry)
        request = PlantRequest(target="hetzner", nodes=nodes)
        started = time.perf_counter()
        plant_plan = plan(context, request)
        result = plant(context, plant_plan, request, no_progress)
        plant_s = time.perf_counter() - started
        plant_requests = len(fake.requests)
        started = time.perf_counter()
        teardown(context, result.forest.id, no_progress)
        teardown_s = time.perf_counter() - started
        plant_plan.provider.close()  # type: ignore[attr-defined]
    assert fake.servers == {} and fake.primary_ips == {} and fake.firewalls == {}
    refused = sum(1 for r in fake.requests if r.status == 429)
    return Run(plant_s, plant_requests, teardown_s, len(fake.requests) - plant_requests, refused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="1,5,20,50", help="node counts, comma-separated")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    provision.wait_nats_ready = skip_readiness  # type: ignore[attr-defined]
    runs: dict[int, list[Run]] = {n: [] for n in sizes}
    with tempfile.TemporaryDirectory() as scratch, FakeHetzner(rate_limit=RATE_LIMIT) as fake:
        home = Path(scratch) / "home"
        (home / ".ssh").mkdir(parents=True)
        blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + os.urandom(32)
        key = "ssh-ed25519 " + base64.b64encode(blob).decode() + " bench\n"
        (home / ".ssh" / "id_ed25519.pub").write_text(key)
        os.environ["HOME"] = str(home)
        for method, prefix, seconds in LATENCIES:
            fake.inject_slow_response(seconds, method=method, path_prefix=prefix, times=None)
        for number in range(args.runs):
            for nodes in sizes:
                run = one_run(fake, Path(scratch) / f"state-{number}-{nodes}", nodes)
                runs[nodes].append(run)
                print(
                    f"run {number + 1}: {nodes} node(s): plant {run.plant_s:.2f} s "
                    f"{run.plant_requests} requests, teardown {run.teardown_s:.2f} s "
                    f"{run.teardown_requests} requests, {run.refused} x 429",
                    flush=True,
                )
    durations = ", ".join(
        f"{command} {DEFAULT_ACTION_DURATIONS[command]:g} s"
        for command in ("create_server", "start_server", "delete_server")
    )
    latency = ", ".join(f"{m or 'other'} {p} {s:g} s" for m, p, s in LATENCIES)
    base_plant = statistics.median(r.plant_s for r in runs[sizes[0]])
    base_teardown = statistics.median(r.teardown_s for r in runs[sizes[0]])
    lines = [
        "## Hetzner plant",
        "",
        f"`uv run python bench/hetzner_plant.py` — the plant and teardown services and the "
        f"Hetzner provider (default settings) against the fake API on 127.0.0.1: actions take "
        f"{durations}; requests take {latency}; the project allows {RATE_LIMIT} requests per "
        f"hour (the bucket refills at limit/3600 per second, full at the start of each run).  "
        f"Plant: from the pre-flight until every server runs (NATS readiness left out); "
        f"teardown: until nothing is left.  Median of {args.runs} run(s), measured "
        f"{datetime.now(UTC):%Y-%m-%d} on this 2-core machine.  Goals: plant 5 ≤ 1.3× and "
        "plant 50 ≤ 1.5× plant 1, teardown 50 ≤ 1.5× teardown 1, ≤ 5 requests per node "
        "planted at 50, never a 429.",
        "",
        "| nodes | plant | × 1 node | requests per node | teardown | × 1 node "
        "| requests per node | 429s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for nodes in sizes:
        plant_s = statistics.median(r.plant_s for r in runs[nodes])
        teardown_s = statistics.median(r.teardown_s for r in runs[nodes])
        plant_rq = statistics.median(r.plant_requests for r in runs[nodes]) / nodes
        teardown_rq = statistics.median(r.teardown_requests for r in runs[nodes]) / nodes
        refused = max(r.refused for r in runs[nodes])
        lines.append(
            f"| {nodes} | {plant_s:.2f} s | {plant_s / base_plant:.2f}× | {plant_rq:.1f} "
            f"| {teardown_s:.2f} s | {teardown_s / base_teardown:.2f}× | {teardown_rq:.1f} "
            f"| {refused} |"
        )
    missed = []
    medians = {n: statistics.median(r.plant_s for r in runs[n]) for n in sizes}
    teardowns = {n: statistics.median(r.teardown_s for r in runs[n]) for n in sizes}
    if 5 in runs and medians[5] > 1.3 * base_plant:
        missed.append("plant 5")
    if 50 in runs:
        if medians[50] > 1.5 * base_plant:
            missed.append("plant 50")
        if teardowns[50] > 1.5 * base_teardown:
            missed.append("teardown 50")
        if statistics.median(r.plant_requests for r in runs[50]) / 50 > 5:
            missed.append("requests per node at 50")
    if any(r.refused for rs in runs.values() for r in rs):
        missed.append("no 429")
    lines += ["", f"Missed on this run: {', '.join(missed)}." if missed else "Every goal is met."]
    print("\n".join(lines[-len(sizes) - 4 :]))
    write_section("## Hetzner plant", "\n".join(lines))


if __name__ == "__main__":
    main()
