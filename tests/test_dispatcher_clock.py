"""The dispatcher reads time from its injected clock: stamps from ``now``, elapsed times from
``monotonic`` (issue #9); asyncio's deadlines stay on the event loop's clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from subplans import (
    DispatchFinished,
    DispatchStarted,
    EventBus,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanExecutionState,
    SubplanRetrying,
    SubplanStateChanged,
    SubplanTracker,
)
from subplans.engine.clock import SYSTEM_CLOCK, Clock, utc

from .conftest import Recorder


class FakeTime:
    """A wall clock and a monotonic clock that move only when told to."""

    def __init__(self, wall: float = 1_000.0, monotonic: float = 50.0) -> None:
        self.wall = wall
        self.mono = monotonic

    def clock(self) -> Clock:
        return Clock(now=lambda: self.wall, monotonic=lambda: self.mono)

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def taking(fake: FakeTime, seconds: float, value: object = None) -> Callable[[], Awaitable[object]]:
    """A subplan body that takes ``seconds`` of the fake clocks."""

    async def run() -> object:
        fake.advance(seconds)
        return value

    return run


def test_the_real_clock_is_the_default() -> None:
    assert ParallelSubplanDispatcher().clock is SYSTEM_CLOCK


def test_the_tracker_stamps_its_events_on_its_clock(bus: EventBus, recorder: Recorder) -> None:
    fake = FakeTime()
    tracker = SubplanTracker(bus, clock=fake.clock())
    tracker.add("a")
    fake.advance(1.5)
    tracker.transition("a", SubplanExecutionState.RUNNING, attempt=1)
    assert [e.time for e in recorder.of(SubplanStateChanged)] == [1_000.0, 1_001.5]


async def test_stamps_and_elapsed_time_come_from_the_injected_clock(
    bus: EventBus, recorder: Recorder
) -> None:
    fake = FakeTime()
    config = ParallelExecutionConfig(max_parallel=1)
    dispatcher = ParallelSubplanDispatcher(config, bus=bus, clock=fake.clock())

    results = await dispatcher.run(
        [Subplan("a", taking(fake, 2.0)), Subplan("b", taking(fake, 3.0))]
    )

    assert [(r.started, r.finished, r.duration) for r in results] == [
        (1_000.0, 1_002.0, 2.0),
        (1_002.0, 1_005.0, 3.0),
    ]
    assert results[1].started_at == utc(1_002.0)
    started = recorder.of(DispatchStarted)[0]
    finished = recorder.of(DispatchFinished)[0]
    assert (started.time, finished.time, finished.elapsed) == (1_000.0, 1_005.0, 5.0)
    assert [(e.subplan_id, e.state.value, e.time) for e in recorder.of(SubplanStateChanged)] == [
        ("a", "pending", 1_000.0),
        ("b", "pending", 1_000.0),
        ("a", "running", 1_000.0),
        ("a", "completed", 1_002.0),
        ("b", "running", 1_002.0),
        ("b", "completed", 1_005.0),
    ]


async def test_a_wall_clock_set_back_does_not_bend_the_elapsed_time(
    bus: EventBus, recorder: Recorder
) -> None:
    fake = FakeTime()

    async def meanwhile_the_clock_is_set_back() -> None:
        fake.wall -= 3_600.0
        fake.mono += 2.0

    dispatcher = ParallelSubplanDispatcher(bus=bus, clock=fake.clock())
    [result] = await dispatcher.run([Subplan("a", meanwhile_the_clock_is_set_back)])

    assert (result.started, result.finished) == (1_000.0, 1_000.0 - 3_600.0)
    assert recorder.of(DispatchFinished)[0].elapsed == 2.0


async def test_a_retry_is_stamped_on_the_injected_clock(bus: EventBus, recorder: Recorder) -> None:
    fake = FakeTime()
    attempts = 0

    async def fails_once() -> int:
        nonlocal attempts
        attempts += 1
        fake.advance(1.0)
        if attempts == 1:
            raise OSError("flaky")
        return attempts

    dispatcher = ParallelSubplanDispatcher(bus=bus, clock=fake.clock())
    [result] = await dispatcher.run([Subplan("a", fails_once, retries=1, retry_delay=0.0)])

    assert (result.value, result.attempts, result.started, result.finished) == (
        2,
        2,
        1_000.0,
        1_002.0,
    )
    [retrying] = recorder.of(SubplanRetrying)
    assert (retrying.attempt, retrying.time) == (1, 1_001.0)
