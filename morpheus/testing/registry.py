"""A forest record to test the registry with (the registry tests' one way to make one)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from morpheus.fields import RouteCredentials

if TYPE_CHECKING:
    from morpheus.pki import ForestCA
    from morpheus.registry import Registry

#: The moment registry tests record things at.
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def new_forest(
    registry: Registry,
    now: datetime = NOW,
    *,
    provider: str = "local",
    ca: ForestCA | None = None,
) -> str:
    """Record a small forest (fresh route credentials) and return its id."""
    return registry.create_forest(
        provider=provider,
        size="small",
        location=None,
        run_id="run-1",
        credentials=RouteCredentials.generate(),
        now=now,
        ca=ca,
    ).id
