"""Waiting on a condition until a deadline: the one loop every wait in Morpheus uses.

Request retries are not this (they belong to a retry library at the API boundary); this is
for "ask again until it is true or time is up": a node's ports open, a VM runs, NATS reports
its peers, cloud actions finish.  Clock and sleep are injectable so tests drive time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(
    check: Callable[[], T | None],
    *,
    deadline: float,
    interval: float,
    timeout_error: Callable[[], BaseException],
    max_interval: float | None = None,
    backoff: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``check`` until it returns something other than ``None``, and return that.

    ``check`` runs at once, then again after ``interval`` seconds, the interval growing by
    ``backoff`` up to ``max_interval``; no sleep runs past ``deadline`` (a ``clock()``
    value).  When ``check`` still says ``None`` at the deadline, ``timeout_error()`` is
    raised.  ``check`` may raise to stop waiting early (waiting will not help).
    """
    ceiling = interval if max_interval is None else max_interval
    while True:
        value = check()
        if value is not None:
            return value
        remaining = deadline - clock()
        if remaining <= 0:
            raise timeout_error()
        sleep(min(interval, remaining))
        interval = min(interval * backoff, ceiling)
