"""What bounds the conversation with the API: the project's request budget, spent before
it runs out, and how long a read-only look may wait for an API that does not answer.

Hetzner counts requests per project in a bucket of ``RateLimit-Limit`` tokens (3600 today)
that refills at ``limit / 3600`` tokens per second; every answer says how many are left
(``RateLimit-Remaining``).  ``RateLimit-Reset`` is when the bucket will be *full* again,
about an hour away once it is empty, so it says nothing about when the next request may go.
``RateBudget`` keeps the last reported count, refills it at that rate and hands out tokens:
a request that finds none waits for the one it needs (a second at the default limit)
instead of being refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

#: The refill rule: the whole limit comes back over this many seconds.
REFILL_WINDOW = 3600.0


class RateBudget:
    """Shared by every thread of one provider: the tokens left, as last reported and since
    refilled, less those handed out."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._limit: int | None = None
        self._tokens = 0.0
        self._at = 0.0

    @property
    def limit(self) -> int | None:
        """``RateLimit-Limit`` as last reported (None before the first answer)."""
        return self._limit

    def observe(self, headers: Mapping[str, str]) -> None:
        """Take the count an answer reports when it is lower than the estimate (another
        client spends the same budget)."""
        try:
            limit = int(headers["RateLimit-Limit"])
            remaining = int(headers["RateLimit-Remaining"])
        except (KeyError, ValueError):
            return
        if limit <= 0:
            return
        with self._lock:
            if self._limit is None:
                self._limit, self._tokens, self._at = limit, float(remaining), self._clock()
                return
            # Never above the estimate: tokens handed out to requests still in flight are
            # already gone from it, not yet from the answer's count.
            self._limit = limit
            self._refill()
            self._tokens = min(self._tokens, float(remaining))

    def take(self) -> float:
        """Hand out one token; returns how long to wait before using it (0: go now).

        Tokens handed out ahead of the refill queue up: the n-th waiter waits n refills.
        """
        with self._lock:
            if self._limit is None:
                return 0.0
            self._refill()
            self._tokens -= 1
            return max(0.0, -self._tokens / self.rate)

    def give_back(self) -> None:
        """Return a token that was not used (the request was not sent)."""
        with self._lock:
            self._tokens += 1

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return (self._limit or 1) / REFILL_WINDOW

    def _refill(self) -> None:
        now = self._clock()
        assert self._limit is not None
        self._tokens = min(float(self._limit), self._tokens + (now - self._at) * self.rate)
        self._at = now


class ReadBound:
    """A deadline, per thread, for everything a read-only look asks (retries included), so
    ``status`` answers within it even when the API hangs."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._local = threading.local()

    @contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        outer = getattr(self._local, "deadline", None)
        deadline = self._clock() + seconds
        self._local.deadline = deadline if outer is None else min(outer, deadline)
        try:
            yield
        finally:
            self._local.deadline = outer

    def remaining(self) -> float | None:
        """Seconds left (never below 0), or None outside ``within``."""
        deadline: float | None = getattr(self._local, "deadline", None)
        return None if deadline is None else max(0.0, deadline - self._clock())
