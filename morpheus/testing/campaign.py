"""Kill-point campaigns: SIGKILL a command at each point, recover, and record what was left.

``bench/reliability.py`` runs every point (``-m campaign``) with ``MORPHEUS_CAMPAIGN_REPORT``
naming a file; each recovered point is appended there as one JSON line, and the benchmark
turns the lines into docs/reliability.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import pytest

__all__ = ["kill_points", "record_outcome"]

# Read once, at import (test collection): the isolated test environment then removes every
# MORPHEUS_ variable before a test runs.
_REPORT = os.environ.get("MORPHEUS_CAMPAIGN_REPORT")


def kill_points(points: Iterable[int]) -> list[Any]:
    """Every third kill point runs in the default suite; all of them with `-m campaign`
    (bench/reliability.py), which keeps CI short and the full campaign one command away."""
    return [
        point if index % 3 == 0 else pytest.param(point, marks=pytest.mark.campaign)
        for index, point in enumerate(points)
    ]


def record_outcome(operation: str, point: int, seen: int, left: dict[str, int]) -> None:
    """Append one point's outcome to the campaign report, when a report was asked for."""
    if not _REPORT:
        return
    with open(_REPORT, "a", encoding="utf-8") as report:
        line = {"operation": operation, "point": point, "seen": seen, "left": left}
        report.write(json.dumps(line) + "\n")
