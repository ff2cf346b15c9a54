"""The bounded pool of threads that talk to the API in parallel (one hcloud client each)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import TypeVar

T = TypeVar("T")


class Workers:
    """The bounded pool of threads that talk to the API in parallel (one client each)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, call: Callable[[], T]) -> Future[T]:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self._size, thread_name_prefix="hetzner"
                )
            return self._executor.submit(call)

    def run_all(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """Run ``calls`` in parallel; wait for all of them before raising any error, so
        nothing is still being created while the caller rolls back."""
        futures = [self.submit(call) for call in calls]
        wait_futures(futures)
        return [future.result() for future in futures]

    def shutdown(self) -> None:
        """Let running calls finish, then stop the threads."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
