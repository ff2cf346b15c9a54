"""Output every command shares: console, errors, JSON/YAML, live progress, record shapes.

Each command module formats its own results with these.

JSON shapes are documented in docs/cli.md and only ever gain keys.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from morpheus.cli.options import OutputFormat
    from morpheus.models import Forest, Node

T = TypeVar("T")


# rich is imported where it is used: commands that print JSON, and successful runs of the
# rest until they render, start without it (about 60 ms, measured by bench/grow_monitor.py).


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    # Piped output is for grep and logs: never truncate it to an imagined terminal width.
    # No markup or emoji parsing: "[fd4d::2]" is an address, not a style, ":cd:" no emoji.
    return Console(
        file=stream,
        no_color="NO_COLOR" in os.environ or not tty,
        markup=False,
        emoji=False,
        highlight=False,
        soft_wrap=True,
        width=None if tty else 400,
    )


def table(*columns: str) -> Table:
    from rich.table import Table

    return Table(*columns, box=None)


def error(message: str) -> None:
    """One line on stderr; red at a terminal."""
    from rich.text import Text

    from morpheus.validation import printable

    message = printable(message)
    console(stderr=True).print(Text.assemble(("error:", "red"), f" {message}"))


def emit(data: Any, output: OutputFormat) -> None:
    """Data for scripts: JSON, or YAML with the same shape."""
    if output.value == "yaml":
        from morpheus.cli.plain import yaml_text

        sys.stdout.write(yaml_text(data))
    else:
        _json(data)


def _json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def is_data(output: OutputFormat) -> bool:
    return output.value in ("json", "yaml")


class NodeProgress:
    """Live per-node state while a command waits; plain lines when not at a terminal."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.states: dict[str, str] = {}
        self.console = console(stderr=True)
        self.live: Live | None = None

    def __enter__(self) -> NodeProgress:
        if self.enabled and self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._table(), console=self.console, transient=False)
            self.live.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.live is not None:
            self.live.__exit__(kind, value, traceback)

    def paused(self, ask: Callable[[], T]) -> T:
        """``ask()`` with the live display stopped, so a question is not drawn over."""
        if self.live is None:
            return ask()
        self.live.stop()
        try:
            return ask()
        finally:
            self.live.start()

    def _table(self) -> Table:
        from rich.table import Table

        table = Table(box=None, show_header=False, pad_edge=False)
        for node_id, words in self.states.items():
            table.add_row(f"  {node_id}", words)
        return table

    def __call__(self, node_id: str, words: str) -> None:
        if not self.enabled:
            return
        self.states[node_id] = words
        if self.live is not None:
            self.live.update(self._table())
        else:
            self.console.print(f"  {node_id}  {words}", markup=False)


def forest_dict(forest: Forest, nodes: list[Node] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": forest.id,
        "provider": forest.provider,
        "size": forest.size,
        "location": forest.location,
        "status": forest.status.value,
        "created_at": forest.created_at.isoformat(),
        "last_expansion": forest.last_expansion.isoformat() if forest.last_expansion else None,
        "cluster_name": forest.cluster_name,
    }
    if nodes is not None:
        data["node_count"] = len(nodes)
    return data


def node_dict(node: Node) -> dict[str, Any]:
    return {
        "id": node.id,
        "name": node.name,
        "status": node.status.value,
        "provider_id": node.provider_id,
        "host": node.host,
        "addresses": node.addresses,
        "ports": node.ports.model_dump(),
        "monitor_url": node.monitor_url,
        "capacity": node.capacity.model_dump() if node.capacity else None,
        "location": node.location,
        "created_at": node.created_at.isoformat(),
    }


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"
