"""poll_until: the one wait loop, driven by a fake clock."""

from __future__ import annotations

import pytest

from morpheus.waiting import poll_until


class FakeTime:
    """A clock that moves only when something sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_the_first_answer_without_sleeping() -> None:
    time = FakeTime()
    result = poll_until(
        lambda: "done",
        deadline=time.now + 10,
        interval=1,
        timeout_error=AssertionError,
        clock=time.clock,
        sleep=time.sleep,
    )
    assert result == "done"
    assert time.sleeps == []


def test_backs_off_up_to_the_ceiling_and_returns_when_ready() -> None:
    time = FakeTime()
    answers = iter([None, None, None, None, 42])
    result = poll_until(
        lambda: next(answers),
        deadline=time.now + 60,
        interval=0.5,
        backoff=2,
        max_interval=1.5,
        timeout_error=AssertionError,
        clock=time.clock,
        sleep=time.sleep,
    )
    assert result == 42
    assert time.sleeps == [0.5, 1.0, 1.5, 1.5]


def test_never_sleeps_past_the_deadline_and_raises_the_timeout_error() -> None:
    time = FakeTime()
    calls: list[float] = []

    def never() -> None:
        calls.append(time.now)

    with pytest.raises(TimeoutError, match="still waiting"):
        poll_until(
            never,
            deadline=time.now + 2.5,
            interval=1,
            timeout_error=lambda: TimeoutError("still waiting"),
            clock=time.clock,
            sleep=time.sleep,
        )
    assert time.sleeps == [1, 1, 0.5]
    # The condition is asked once more at the deadline itself before giving up.
    assert calls == [100.0, 101.0, 102.0, 102.5]


def test_an_error_from_the_check_stops_the_wait_at_once() -> None:
    time = FakeTime()

    def broken() -> None:
        raise ValueError("waiting will not help")

    with pytest.raises(ValueError, match="will not help"):
        poll_until(
            broken,
            deadline=time.now + 10,
            interval=1,
            timeout_error=AssertionError,
            clock=time.clock,
            sleep=time.sleep,
        )
    assert time.sleeps == []
