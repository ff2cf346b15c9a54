"""Which nodes a forest's last convergence could not reach, read from its events.

Apart from ``morpheus.services.converge`` so that ``status``, which only reads, need not
import what reconfigures nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

from morpheus.models import Node
from morpheus.services import Context

#: Event kinds: the last of these says whether every node has the forest's configuration.
CONVERGED_EVENT = "converged"
BEHIND_EVENT = "behind"


def nodes_behind(ctx: Context, forest_id: str, nodes: Sequence[Node]) -> list[Node]:
    """Which of ``nodes`` the forest's last convergence could not reach."""
    events = ctx.registry.events(forest_id, limit=500)
    last = next((e for e in reversed(events) if e.kind in (CONVERGED_EVENT, BEHIND_EVENT)), None)
    if last is None or last.kind == CONVERGED_EVENT:
        return []
    return [node for node in nodes if f"{node.id} (" in last.message]
