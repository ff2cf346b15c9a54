"""The command line: the only place that parses flags, prints and picks exit codes."""

from __future__ import annotations


def main() -> None:
    """Entry point: answer forest-id completion without loading the app, else run it."""
    from morpheus.cli.fastcomplete import complete_forest_ids

    if complete_forest_ids():
        return
    from morpheus.cli.app import main as run_app

    run_app()
