"""Run the fault campaign and write its figures into docs/reliability.md.

Run: `uv run python bench/reliability.py` (about 4 minutes on this 2-core machine).  It runs
tests/test_fault_campaign.py (and the Hetzner campaign when present) with a report file, then
tabulates kill points and what was left behind after the documented recovery.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGNS = [
    "tests/test_fault_campaign.py",
    "providers/hetzner/tests/test_fault_campaign.py",
    "providers/hetzner/tests/test_fault_matrix.py",
]


HAND_WRITTEN = "\n## Hostile cases"


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "campaign.jsonl"
        files = [c for c in CAMPAIGNS if (ROOT / c).exists()]
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "campaign or not campaign", *files],
            cwd=ROOT,
            env=dict(os.environ, MORPHEUS_CAMPAIGN_REPORT=str(report)),
            check=False,
        )
        lines_in = report.read_text().splitlines() if report.exists() else []
        everything = [json.loads(line) for line in lines_in]
    rows = [row for row in everything if "operation" in row]
    matrix = [row for row in everything if "matrix" in row]
    by_operation: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_operation[str(row["operation"])].append(row)
    lines = [
        "# Reliability",
        "",
        "What is left behind when the CLI is killed with SIGKILL mid-operation and the documented",
        "recovery is run (`morpheus teardown FOREST` after a killed plant or teardown, `morpheus",
        "reconcile FOREST` after a killed grow).  Kill point k = after the k-th progress line",
        "(local provider) or after the k-th API request (Hetzner, against the fake API).",
        "Things counted: processes, node directories, lock files, registry rows and (Hetzner)",
        "servers, firewalls, placement groups and primary IPs on the fake API.",
        "",
        f"Reproduce: `uv run python bench/reliability.py` — run {datetime.now(UTC):%Y-%m-%d}, "
        f"pytest exit code {run.returncode}.",
        "",
        "| operation | kill points | things left after recovery |",
        "|---|---|---|",
    ]
    for operation, items in sorted(by_operation.items()):
        left = sum(sum(int(v) for v in item["left"].values()) for item in items)
        lines.append(f"| {operation} | {len(items)} | {left} |")
    lines += [
        "",
        f"Total kill points: {len(rows)}.",
        "",
        "## API fault matrix (Hetzner, fake API)",
        "",
        "Each fault injected during a 3-node plant or its teardown; every case must "
        "end complete or cleanly failed, with nothing left billing, in at most 80 requests. "
        "`status`: the forest's listing while the API does not answer (read_timeout 2 s).",
        "",
        "| operation | fault | outcome | API requests |",
        "|---|---|---|---|",
    ]
    for row in matrix:
        lines.append(f"| {row['matrix']} | {row['fault']} | {row['outcome']} | {row['requests']} |")
    # The hand-written part (hostile cases tried by hand and in tests) follows the figures.
    page = ROOT / "docs" / "reliability.md"
    existing = page.read_text() if page.exists() else ""
    kept = existing[existing.index(HAND_WRITTEN) :] if HAND_WRITTEN in existing else ""
    page.write_text("\n".join(lines) + "\n" + kept)
    print("\n".join(lines))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
