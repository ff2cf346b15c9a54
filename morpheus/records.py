"""Registry rows into models, checked: what comes back from storage is not trusted.

A crafted or damaged row must not become a path outside the state directory (ids name
directories) nor control sequences on the operator's terminal.  Ids must be plain names;
free text (sizes, locations, event messages) has its control characters escaped.  Shared by
every registry backend.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from morpheus.errors import DamagedRegistryError
from morpheus.fields import check_host
from morpheus.models import Capacity, Event, Forest, ForestStatus, Node, NodeStatus, Ports
from morpheus.safe_text import is_plain_id, printable


class Row(Protocol):
    """A stored row, read by column name (sqlite3.Row, a dict)."""

    def __getitem__(self, key: str) -> Any: ...


_HINT = "`morpheus registry rebuild` recreates the registry from what the platforms report"


def _damaged(table: str, key: object, problem: str) -> DamagedRegistryError:
    shown = printable(str(key))[:80]
    return DamagedRegistryError(
        f"the registry's {table} row {shown!r} is damaged: {problem}; {_HINT}"
    )


def _id(row: Row, table: str, key: object, column: str) -> str:
    value = row[column]
    if not is_plain_id(value):
        shown = printable(str(value))[:80]
        raise _damaged(table, key, f"{column} {shown!r} is not a plain id")
    return str(value)


def _text(value: object) -> str | None:
    return None if value is None else printable(str(value))


def _moment(value: object, table: str, key: object, column: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise _damaged(table, key, f"{column} is not a time") from None


def forest_from(row: Row) -> Forest:
    key = row["id"]
    try:
        return Forest(
            id=_id(row, "forests", key, "id"),
            provider=_id(row, "forests", key, "provider"),
            size=_text(row["size"]) or "",
            location=_text(row["location"]),
            status=ForestStatus(row["status"]),
            created_at=_moment(row["created_at"], "forests", key, "created_at"),
            last_expansion=_moment(row["last_expansion"], "forests", key, "last_expansion"),
            cluster_name=_id(row, "forests", key, "cluster_name"),
            credentials_ref=_text(row["credentials_ref"]) or "",
            run_id=_id(row, "forests", key, "run_id"),
            host=_text(row["host"]),
        )
    except (ValueError, ValidationError, LookupError) as exc:
        if isinstance(exc, DamagedRegistryError):
            raise
        raise _damaged("forests", key, _first_error(exc)) from None


def node_from(row: Row) -> Node:
    key = row["id"]
    try:
        host = row["host"]
        if host is not None and not _is_host(str(host)):
            raise _damaged("nodes", key, "host is not an address or host name")
        addresses = json.loads(row["addresses"])
        if not isinstance(addresses, list) or not all(
            isinstance(a, str) and _is_host(a) for a in addresses
        ):
            raise _damaged("nodes", key, "addresses are not addresses")
        capacity = row["capacity"]
        provider_id = row["provider_id"]
        if provider_id is not None and not str(provider_id).isprintable():
            raise _damaged("nodes", key, "provider_id holds control characters")
        return Node(
            id=_id(row, "nodes", key, "id"),
            forest_id=_id(row, "nodes", key, "forest_id"),
            name=_id(row, "nodes", key, "name"),
            index=row["idx"],
            provider_id=provider_id,
            host=host,
            addresses=addresses,
            ports=Ports.model_validate_json(row["ports"]),
            capacity=None if capacity is None else Capacity.model_validate_json(capacity),
            status=NodeStatus(row["status"]),
            location=_text(row["location"]),
            created_at=_moment(row["created_at"], "nodes", key, "created_at"),
        )
    except (ValueError, ValidationError, LookupError) as exc:
        if isinstance(exc, DamagedRegistryError):
            raise
        raise _damaged("nodes", key, _first_error(exc)) from None


def event_from(row: Row) -> Event:
    try:
        return _event(row)
    except (ValueError, ValidationError, LookupError) as exc:
        raise _damaged("events", row["id"], _first_error(exc)) from None


def _event(row: Row) -> Event:
    return Event(
        forest_id=printable(str(row["forest_id"])),
        at=_moment(row["at"], "events", row["id"], "at"),
        kind=printable(str(row["kind"])),
        message=printable(str(row["message"])),
    )


def _is_host(value: str) -> bool:
    try:
        check_host(value)
    except ValueError:
        return False
    return True


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        return f"{where}: {error['msg']}" if where else str(error["msg"])
    if isinstance(exc, LookupError):
        return f"column {printable(str(exc))[:80]} is missing"
    return printable(str(exc))[:200]
