"""The design card's floor for `grow`: a do-nothing Typer app with `grow`'s options, then the
minimal poller's poll, as a whole process.

``python bench/typer_floor.py grow PORTS_FILE --timeout T [grow's other options]`` parses
the same options `grow` has (Typer builds a pydantic TypeAdapter for each) and then runs
``bench/minimal_poller.py``'s poll: what any Typer CLI that polls first and loads second
would cost, before it does anything of its own.
"""

from __future__ import annotations

import asyncio
import enum
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

sys.path.insert(0, str(Path(__file__).parent))
import minimal_poller

app = typer.Typer()


class Output(enum.StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


@app.callback()
def main() -> None:
    """The app's callback, as Morpheus has one."""


@app.command()
def grow(
    ports_file: Annotated[str, typer.Argument()],
    auto: Annotated[bool, typer.Option("--auto")] = False,
    threshold: Annotated[int | None, typer.Option("--threshold", min=1, max=100)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    yes: Annotated[bool, typer.Option("-y", "--yes")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, max=60)] = 2.0,
    output: Annotated[Output, typer.Option("-o", "--output")] = Output.table,
    quiet: Annotated[bool, typer.Option("-q", "--quiet")] = False,
) -> None:
    with open(ports_file) as file:
        ports = json.load(file)
    asyncio.run(minimal_poller.main(ports, timeout))


if __name__ == "__main__":
    app()
