"""What a poll of many nodes may take from this process: sockets at once, and whose time it is.

``Slots`` bounds the nodes asked at once and shrinks when the process runs out of sockets.
``LoopLag`` measures how long this process's event loop has been too busy (or too starved of
CPU by other programs) to run on time, and ``NodeDeadline`` does not count that time
against a node: a reply that arrived while Morpheus could not read it is Morpheus's delay,
not the node's. A node that never answers still times out, ``timeout`` seconds of the
process's own time after it was asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["LoopLag", "NodeDeadline", "Slots"]


class Slots:
    """Nodes being asked at once; one fewer each time the process runs out of sockets."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = asyncio.Semaphore(size)

    async def acquire(self) -> None:
        await self._free.acquire()

    def release(self) -> None:
        self._free.release()

    def retire(self) -> bool:
        """Keep a held slot out of use for good; False if it was the last one."""
        if self.size == 1:
            return False
        self.size -= 1
        return True


class LoopLag:
    """Seconds, in total, that the running event loop has woken later than it should have.

    A ticker sleeps ``TICK`` at a time; lateness beyond ``TOLERANCE`` (timer granularity) is
    time the loop spent on other work or was not given the CPU. Use as an async context.
    """

    TICK = 0.01
    TOLERANCE = 0.002

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._counted = 0.0
        self._due = self._loop.time() + self.TICK
        self._task: asyncio.Task[None] | None = None

    def total(self) -> float:
        """Lag so far, including a tick that is overdue right now."""
        overdue = self._loop.time() - self._due - self.TOLERANCE
        return self._counted + max(0.0, overdue)

    async def _tick(self) -> None:
        while True:
            self._due = self._loop.time() + self.TICK
            await asyncio.sleep(self.TICK)
            self._counted += max(0.0, self._loop.time() - self._due - self.TOLERANCE)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class NodeDeadline:
    """``timeout`` seconds from now, plus whatever lag the loop gathers meanwhile."""

    def __init__(self, timeout: float, lag: LoopLag | None) -> None:
        self._loop = asyncio.get_running_loop()
        self.timeout = timeout
        self._lag = lag
        self._lag_at_start = lag.total() if lag else 0.0
        self._end = self._loop.time() + timeout

    def _now_due(self) -> float:
        extra = self._lag.total() - self._lag_at_start if self._lag else 0.0
        return self._end + extra

    @asynccontextmanager
    async def within(self) -> AsyncIterator[None]:
        """Run the body until the deadline; ``TimeoutError`` when it passes first."""
        async with asyncio.timeout(None) as timeout:
            handle: asyncio.TimerHandle | None = None

            def check() -> None:
                nonlocal handle
                due = self._now_due()
                if self._loop.time() >= due:
                    timeout.reschedule(self._loop.time())  # expires now
                else:
                    handle = self._loop.call_at(due, check)

            handle = self._loop.call_at(self._now_due(), check)
            try:
                yield
            finally:
                handle.cancel()
