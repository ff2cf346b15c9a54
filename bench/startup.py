"""Benchmark: how fast `morpheus` starts, against a minimal one-command Typer app.

Run: `uv run python bench/startup.py` (writes the "Start-up" section of docs/performance.md).
Goals (issue 6): `morpheus --help` and `morpheus list` within 1.3x of the minimal app's
`--help`, measured in the same run; forest-id completion under 200 ms median.  Commands run
interleaved, after a warm-up run each, with bytecode caching on as on a user's machine.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results import write_section

from morpheus.testing.cli import cli_environment

RUNS = 21
MINIMAL_APP = '''
import typer

app = typer.Typer()


@app.command()
def hello(name: str = "world") -> None:
    """Say hello."""
    print(f"hello {name}")


app()
'''


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        state = Path(scratch) / "state"
        minimal = Path(scratch) / "minimal.py"
        minimal.write_text(MINIMAL_APP)
        env = dict(cli_environment(), MORPHEUS_STATE_DIR=str(state))
        morpheus = [str(Path(sys.executable).parent / "morpheus")]
        planted = subprocess.run(
            [*morpheus, "plant", "local", "small", "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        forest_id = json.loads(planted.stdout)["forest"]["id"]
        completion_env = dict(
            env, _MORPHEUS_COMPLETE="complete_bash", COMP_WORDS="morpheus status fo", COMP_CWORD="2"
        )
        cases: dict[str, tuple[list[str], dict[str, str]]] = {
            "minimal Typer app --help": ([sys.executable, str(minimal), "--help"], env),
            "morpheus --help": ([*morpheus, "--help"], env),
            "morpheus list": ([*morpheus, "list"], env),
            "forest-id completion": (morpheus, completion_env),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        try:
            for run in range(RUNS + 1):
                for name, (argv, case_env) in cases.items():
                    started = time.perf_counter()
                    result = subprocess.run(argv, env=case_env, capture_output=True, check=False)
                    elapsed = time.perf_counter() - started
                    if name == "forest-id completion":
                        assert forest_id.encode() in result.stdout, result
                    if run:  # run 0 warms the bytecode cache
                        times[name].append(elapsed)
        finally:
            subprocess.run(
                [*morpheus, "teardown", forest_id, "--yes"],
                env=env,
                capture_output=True,
                check=False,
            )
    base = statistics.median(times["minimal Typer app --help"])
    lines = [
        "## Start-up",
        "",
        f"`uv run python bench/startup.py` — median of {RUNS} interleaved runs each, measured "
        f"{datetime.now(UTC):%Y-%m-%d} on this 2-core machine (shared: compare ratios).",
        "",
        "| command | goal | median | ratio to minimal app |",
        "|---|---|---|---|",
    ]
    goals = {
        "morpheus --help": "≤ 1.3×",
        "morpheus list": "≤ 1.3×",
        "forest-id completion": "< 200 ms",
        "minimal Typer app --help": "baseline",
    }
    for name, samples in times.items():
        median = statistics.median(samples)
        lines.append(
            f"| `{name}` | {goals[name]} | {median * 1000:.0f} ms | {median / base:.2f}× |"
        )
        print(lines[-1])
    write_section("## Start-up", "\n".join(lines))


if __name__ == "__main__":
    main()
