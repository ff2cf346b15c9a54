"""Benchmark: `morpheus grow --output json --dry-run` polling many simulated nodes.

Run: `uv run python bench/grow_monitor.py` (writes the "Grow" section of docs/performance.md;
`--quick` runs fewer repetitions).  Cases and goals (issues 5 and 16), each a whole CLI run,
start-up included, on this machine:

- 200 nodes answering after 100 ms: wall time compared with a minimal stdlib asyncio poller
  (`bench/minimal_poller.py`, also a whole process, same nodes, a connection per request),
  runs interleaved; goal at most 1.5 times its time.
- 200 nodes, 50 of them never answering: within the per-node timeout + 1 s.
- 2,000 nodes answering after 800 ms with a 2 s timeout: every node reachable.
- 1,000 nodes answering after 100 ms under `ulimit -n 256`: every node reachable.

The machine is shared: every row notes the 1-minute load average when it was measured.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from morpheus.testing.cli import cli_environment
from morpheus.testing.monitors import record_forest

sys.path.insert(0, str(Path(__file__).parent))
from results import write_section

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 2.0


@dataclass
class Nodes:
    """Simulated nodes, their forest in a throwaway state directory, and how to poll them."""

    state: Path
    forest_id: str
    ports_file: Path
    cpu: float = 0.0

    def grow(self, timeout: float = TIMEOUT) -> list[str]:
        return [
            sys.executable,
            "-m",
            "morpheus",
            "grow",
            self.forest_id,
            "--output",
            "json",
            "--dry-run",
            "--timeout",
            str(timeout),
        ]

    def minimal(self, timeout: float = TIMEOUT) -> list[str]:
        return [
            sys.executable,
            str(ROOT / "bench/minimal_poller.py"),
            str(self.ports_file),
            str(timeout),
        ]

    def floor(self, timeout: float = TIMEOUT) -> list[str]:
        return [
            sys.executable,
            str(ROOT / "bench/typer_floor.py"),
            "grow",
            str(self.ports_file),
            "--output",
            "json",
            "--dry-run",
            "--timeout",
            str(timeout),
        ]

    def run(
        self, command: list[str], preexec: Callable[[], None] | None = None
    ) -> tuple[float, dict[str, int]]:
        """Wall time of one whole run, and its reachable/nodes counts (CPU time in ``cpu``)."""
        env = dict(cli_environment(), MORPHEUS_STATE_DIR=str(self.state))
        before = _children_cpu()
        started = time.perf_counter()
        run = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=300,
            preexec_fn=preexec,
        )
        elapsed = time.perf_counter() - started
        self.cpu = _children_cpu() - before
        try:
            report = json.loads(run.stdout)
        except ValueError:
            raise SystemExit(f"{command[2]} failed ({run.returncode}): {run.stderr}") from None
        counts = report.get("aggregate", report)
        return elapsed, {"reachable": counts["reachable"], "nodes": counts["nodes"]}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def simulated(count: int, silent: int, delay: float) -> Iterator[Nodes]:
    with (
        tempfile.TemporaryDirectory() as state,
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench/fake_monitors.py"),
                *map(str, (count, silent, delay)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as monitors,
    ):
        assert monitors.stdout is not None and monitors.stdin is not None
        ports = json.loads(monitors.stdout.readline())
        ports_file = Path(state) / "ports.json"
        ports_file.write_text(json.dumps(ports))
        try:
            yield Nodes(Path(state), record_forest(Path(state), ports), ports_file)
        finally:
            monitors.stdin.close()


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def _open_files(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def main() -> None:
    quick = "--quick" in sys.argv
    runs = 3 if quick else 7
    rows: list[str] = []
    missed: list[str] = []

    def row(case: str, goal: str, result: str, reachable: dict[str, int], load: str) -> None:
        rows.append(
            f"| {case} | {goal} | {result} | {reachable['reachable']}/{reachable['nodes']} "
            f"| {load} |"
        )
        print(rows[-1], flush=True)

    with simulated(200, 0, 0.1) as nodes:
        load = _load()
        grow_times, minimal_times, floor_times, grow_cpu, minimal_cpu = [], [], [], [], []
        counts: dict[str, int] = {}
        for number in range(runs + 1):  # the first round only warms caches, as a user's would
            grow_time, counts = nodes.run(nodes.grow())
            grow_cpu.append(nodes.cpu)
            minimal_time, _ = nodes.run(nodes.minimal())
            minimal_cpu.append(nodes.cpu)
            floor_time, _ = nodes.run(nodes.floor())
            if number:
                grow_times.append(grow_time)
                minimal_times.append(minimal_time)
                floor_times.append(floor_time)
        grow_median = statistics.median(grow_times)
        minimal_median = statistics.median(minimal_times)
        floor_median = statistics.median(floor_times)
        ratio = grow_median / minimal_median
        cpu_ratio = statistics.median(grow_cpu[1:]) / statistics.median(minimal_cpu[1:])
        if ratio > 1.5 or counts["reachable"] != 200:
            missed.append("the ratio to the minimal poller")
        row(
            "200 nodes × 100 ms",
            "≤ 1.5× the minimal poller",
            f"{grow_median:.2f} s vs {minimal_median:.2f} s: **{ratio:.2f}×** (CPU time"
            f" {statistics.median(grow_cpu[1:]):.2f} s vs {statistics.median(minimal_cpu[1:]):.2f}"
            f" s: {cpu_ratio:.2f}×; a do-nothing Typer app with `grow`'s options, then the"
            f" minimal poll: {floor_median:.2f} s, {floor_median / minimal_median:.2f}×)",
            counts,
            f"{load}–{_load()}",
        )

    with simulated(200, 50, 0.1) as nodes:
        load = _load()
        times = []
        for number in range(runs + 1):
            elapsed, counts = nodes.run(nodes.grow())
            if number:
                times.append(elapsed)
        median = statistics.median(times)
        if median > TIMEOUT + 1 or counts["reachable"] != 150:
            missed.append("50 never answering")
        row(
            "200 nodes, 50 never answering",
            f"≤ {TIMEOUT + 1:.1f} s",
            f"{median:.2f} s",
            counts,
            f"{load}–{_load()}",
        )

    for count, delay, limit in ((2_000, 0.8, None), (1_000, 0.1, 256)):
        with simulated(count, 0, delay) as nodes:
            load = _load()
            preexec = _open_files(limit) if limit else None
            nodes.run(nodes.grow(), preexec)  # warm-up
            elapsed, counts = nodes.run(nodes.grow(), preexec)
            # A control on the same machine at the same moment (no lag allowance, no limit).
            _, control = nodes.run(nodes.minimal())
            case = f"{count:,} nodes × {delay * 1000:.0f} ms" + (
                f", `ulimit -n {limit}`" if limit else ""
            )
            if counts["reachable"] != count:
                missed.append(case)
            result = f"{elapsed:.2f} s (minimal poller: {control['reachable']}/{count})"
            row(case, "all reachable", result, counts, f"{load}–{_load()}")

    verdict = (
        f"Missed on this run: {', '.join(missed)}." if missed else "Every goal is met on this run."
    )
    text = "\n".join(
        [
            "## Grow: polling many nodes",
            "",
            "`uv run python bench/grow_monitor.py` — simulated monitoring endpoints on 127.0.0.1"
            " (`bench/fake_monitors.py`); whole `morpheus grow --output json --dry-run --timeout"
            f" {TIMEOUT:g}` runs, start-up included, median of {runs} (one run for the big"
            f" cases), measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on this 2-core machine,"
            " shared with other work: the load column is the 1-minute load average before and"
            " after each case.",
            "",
            "| case | goal | wall time | reachable | load |",
            "|---|---|---|---|---|",
            *rows,
            "",
            verdict,
            "",
            "How: every node is asked under its own deadline with no deadline for the round,"
            " and time the process could not run on time is not counted against it;"
            " the soft open-file limit is raised to the hard one and the number of nodes asked"
            " at once sized from it (at most 2,048, the memory bound); each request has its own"
            " short connection read with `sock_recv` and parsed by httptools (llhttp), with no"
            " HTTP client layers (about the minimal poller's CPU per request); `grow` imports"
            " what adding nodes needs only when it adds them. A node that never answers is"
            " given up after the timeout plus the time the process could not run meanwhile, so"
            " on a loaded machine the 50-silent case takes longer than timeout + 1 s (its goal"
            " from issue 5).",
            "",
            "Where the ratio to the minimal poller went: loading the design card's stack"
            " (Python, asyncio, Typer, which builds a pydantic TypeAdapter for each of `grow`'s"
            " options, pydantic and the models) costs more CPU than the minimal poller's whole"
            " run: a do-nothing Typer app with `grow`'s options followed by the minimal"
            " poller's poll (`bench/typer_floor.py`, the row's last figure) takes about 1.4–1.5"
            " times the minimal poller, more than `grow` itself now. So `grow` no longer"
            " waits for its start-up before asking: `morpheus.early_requests` reads the forest's"
            " active nodes from the SQLite registry with the standard library and sends every"
            " request before Typer loads; the nodes answer while the CLI loads, and the poll"
            " reads replies already waiting in the socket buffers (the 2,000- and 1,000-node"
            " cases are above its 256-node limit and are asked the usual way). The CPU-time"
            " column still shows the start-up's cost; the wall time no longer adds it to the"
            " nodes' answering time.",
        ]
    )
    write_section("## Grow: polling", text)


if __name__ == "__main__":
    main()
