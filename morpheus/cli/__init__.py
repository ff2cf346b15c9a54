"""The command line: the only place that parses flags, prints and picks exit codes."""

from __future__ import annotations

import gc
import sys

_collector_paused = False


def main() -> None:
    """Entry point: answer forest-id completion without loading the app, else run it."""
    global _collector_paused
    # Start-up (imports, Typer's commands, models, settings, the registry) makes objects that
    # live as long as the process: the cyclic collector's passes over them find nothing and
    # cost about 4% of a short command's CPU. It is paused until the command's context is
    # open (``resume_collector``), and those objects are then left out of later passes.
    gc.disable()
    _collector_paused = True
    from morpheus.cli.fastcomplete import complete_forest_ids

    if complete_forest_ids():
        return
    early = sys.argv[1:2] == ["grow"]
    if early:
        # Its nodes are asked now and answer while the rest of the CLI loads.
        from morpheus.early_requests import ask_early

        ask_early(sys.argv[2:])
    # httpx imports its own command-line client (click, rich, pygments: about 85 ms) whenever
    # click is installed, as it is in the development environment; Morpheus never runs it.
    # None in sys.modules blocks an import (typeshed does not allow for that).
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from morpheus.cli.app import main as run_app

    try:
        run_app()
    finally:
        if early:
            from morpheus.early_requests import discard

            discard()
        # Exit without the collector's sweeps over every object the imports made (about
        # 0.1 s of a short command's run, measured by bench/grow_monitor.py).
        gc.freeze()


def resume_collector() -> None:
    """End of start-up: the objects made so far are kept out of the collector's passes, and
    the collector runs again (a no-op when ``main`` did not pause it, e.g. in tests)."""
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.freeze()
        gc.enable()
