"""Output for the commands that must start fast (`list`): standard library only, no rich."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from morpheus.listing import ForestSummary


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, like `hcloud server list`."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    return "\n".join(lines)


def yaml_text(data: Any) -> str:
    """The JSON shape as YAML (keys in their JSON order)."""
    import yaml

    return str(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False))


def show_forests(forests: list[ForestSummary], output: str) -> None:
    if output == "json":
        sys.stdout.write(json.dumps([f.as_json() for f in forests], indent=2) + "\n")
        return
    if output == "yaml":
        sys.stdout.write(yaml_text([f.as_json() for f in forests]))
        return
    if not forests:
        sys.stdout.write("No forests. Plant one with `morpheus plant local small`.\n")
        return
    rows = [
        (f.id, f.provider, f.size, str(f.node_count), f.status, f.created_at[:16].replace("T", " "))
        for f in forests
    ]
    sys.stdout.write(table(("ID", "PROVIDER", "SIZE", "NODES", "STATUS", "CREATED"), rows) + "\n")


def show_drift(results: Mapping[str, object]) -> None:
    """One line on stderr per forest whose records changed or could not be checked."""
    for forest_id, result in results.items():
        if isinstance(result, str):
            sys.stderr.write(f"warning: {forest_id}: could not ask its provider: {result}\n")
            continue
        lost, adopted = getattr(result, "lost", []), getattr(result, "adopted", [])
        if lost or adopted:
            sys.stderr.write(
                f"{forest_id}: {len(lost)} node(s) gone from the platform, {len(adopted)} found "
                f"by label; run `morpheus reconcile {forest_id}`\n"
            )
