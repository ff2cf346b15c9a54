"""Waiting for Hetzner actions, many at once.

Polling actions is what burns the API's 3600 requests per hour.  ``ActionWatcher`` keeps one
set of running action ids for the whole provider and asks about all of them in one request
(``GET /actions?id=1&id=2...``), backing off between polls; whoever waits for any action
learns about all the others for free.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import hcloud

from morpheus.waiting import poll_until
from morpheus_hetzner.api import HetznerApi, HetznerError

#: The API answers at most this many actions per page.
_PAGE = 50


@dataclass(frozen=True)
class ActionOutcome:
    """How a finished action ended."""

    id: int
    command: str
    status: str
    error_code: str | None = None
    error_message: str | None = None

    def error(self, doing: str) -> HetznerError | None:
        """The failure to report when the action ended in error."""
        if self.status != "error":
            return None
        return HetznerError(
            f"{doing}: the {self.command} action failed: "
            f"{self.error_message or 'no reason given'} ({self.error_code})",
            code=self.error_code,
        )


class ActionWatcher:
    """Tracks running actions and waits for them with batched, backed-off polls."""

    def __init__(
        self,
        api: HetznerApi,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api = api
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._running: set[int] = set()
        self._finished: dict[int, ActionOutcome] = {}

    def track(self, ids: Iterable[int]) -> None:
        """Start watching actions (e.g. right after the request that started them)."""
        with self._lock:
            self._running.update(i for i in ids if i not in self._finished)

    def record(self, raw: dict[str, Any]) -> None:
        """Note an action as the API described it (finished ones need no poll)."""
        if raw.get("status") in ("success", "error"):
            self._finish(raw)
        else:
            self.track([int(raw["id"])])

    def wait(self, ids: Iterable[int], deadline: float, doing: str) -> list[ActionOutcome]:
        """Block until every action in ``ids`` finished; raise if one failed or time ran out."""
        outcomes = self.wait_finished(ids, deadline, doing)
        for outcome in outcomes:
            error = outcome.error(doing)
            if error is not None:
                raise error
        return outcomes

    def wait_finished(self, ids: Iterable[int], deadline: float, doing: str) -> list[ActionOutcome]:
        """Block until every action in ``ids`` finished, however it ended; raise only when
        time ran out."""
        wanted = list(dict.fromkeys(ids))
        self.track(wanted)
        asked = False

        def outstanding() -> list[int]:
            with self._lock:
                return [i for i in wanted if i not in self._finished]

        def all_finished() -> bool | None:
            # Just started (or learnt about by someone else's poll): look before asking.
            nonlocal asked
            if asked:
                self.poll()
            asked = True
            return True if not outstanding() else None

        config = self._api.config
        poll_until(
            all_finished,
            deadline=deadline,
            interval=config.poll_interval,
            backoff=config.poll_backoff,
            max_interval=config.poll_max_interval,
            timeout_error=lambda: HetznerError(
                f"{doing}: Hetzner actions {outstanding()} still running at the deadline",
                code="timeout",
            ),
            clock=self._clock,
            sleep=self._sleep,
        )
        with self._lock:
            return [self._finished[i] for i in wanted]

    def outcome(self, action_id: int) -> ActionOutcome | None:
        """How the action ended, when it has."""
        with self._lock:
            return self._finished.get(action_id)

    def poll(self) -> None:
        """Ask once about every running action (one request per 50 of them)."""
        with self._poll_lock:
            with self._lock:
                ids = sorted(self._running)
            for start in range(0, len(ids), _PAGE):
                chunk = ids[start : start + _PAGE]
                answer = self._api.call("checking actions", partial(_get_actions, ids=chunk))
                for raw in answer.get("actions", []):
                    if raw.get("status") in ("success", "error"):
                        self._finish(raw)

    def _finish(self, raw: dict[str, Any]) -> None:
        error = raw.get("error") or {}
        outcome = ActionOutcome(
            id=int(raw["id"]),
            command=str(raw.get("command", "?")),
            status=str(raw["status"]),
            error_code=error.get("code"),
            error_message=error.get("message"),
        )
        with self._lock:
            self._running.discard(outcome.id)
            self._finished[outcome.id] = outcome


def _get_actions(client: hcloud.Client, *, ids: list[int]) -> dict[str, Any]:
    return client.request("GET", "/actions", params={"id": ids, "per_page": _PAGE})
