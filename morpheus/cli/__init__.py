"""The command line: the only place that parses flags, prints and picks exit codes."""

from __future__ import annotations

import gc
import sys


def main() -> None:
    """Entry point: answer forest-id completion without loading the app, else run it."""
    from morpheus.cli.fastcomplete import complete_forest_ids

    if complete_forest_ids():
        return
    # httpx imports its own command-line client (click, rich, pygments: about 85 ms) whenever
    # click is installed, as it is in the development environment; Morpheus never runs it.
    # None in sys.modules blocks an import (typeshed does not allow for that).
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from morpheus.cli.app import main as run_app

    try:
        run_app()
    finally:
        # Exit without the collector's sweeps over every object the imports made (about
        # 0.1 s of a short command's run, measured by bench/grow_monitor.py).
        gc.freeze()
