"""Rate limits (issue #14, point 4): ``max_per_second`` on a dispatch and on a pool, measured
with an injected clock that only the test moves."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from subplans import (
    AsyncSemaphoreLimiter,
    ConfigError,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
)
from subplans.engine.clock import Clock
from subplans.engine.limiter import Pace

from .conftest import no_tasks_left


class FakeTime:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Starts:
    """Subplans that record when (on the fake clock) they started."""

    def __init__(self, time: FakeTime) -> None:
        self.time = time
        self.at: list[float] = []
        self.changed = asyncio.Event()

    def job(self) -> Any:
        async def run() -> None:
            self.at.append(self.time.now)
            self.changed.set()

        return run

    async def wait_for(self, count: int) -> None:
        while len(self.at) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)  # a guard against a hang

    async def settle(self) -> None:
        """Let the rate's timers fire a few times (1/1000 s each) with the clock standing."""
        for _ in range(3):
            await asyncio.sleep(0.002)


def test_a_pace_spaces_takes_evenly_with_no_burst() -> None:
    time = FakeTime()
    pace = Pace(10, time)
    assert pace.delay() == 0
    pace.take()
    assert pace.delay() == pytest.approx(0.1)
    time.now += 5  # idle for 50 intervals: still only one take is allowed at once
    assert pace.delay() == 0
    pace.take()
    assert pace.delay() == pytest.approx(0.1)


@pytest.mark.parametrize("value", [0, -1.5, float("inf"), "10", True])
def test_max_per_second_is_checked(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^max_per_second must be (> 0|a number > 0), got "):
        ParallelExecutionConfig(max_per_second=value)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^max_per_second must be "):
        AsyncSemaphoreLimiter(4, max_per_second=value)  # type: ignore[arg-type]


def test_the_rate_shows_in_the_config_and_the_limiter() -> None:
    config = ParallelExecutionConfig(max_per_second=10)
    assert config.max_per_second == 10.0
    assert config.to_dict()["max_per_second"] == 10.0
    assert "max_per_second" not in ParallelExecutionConfig().to_dict()
    limiter = AsyncSemaphoreLimiter(4, max_per_second=10)
    assert limiter.max_per_second == 10.0
    assert AsyncSemaphoreLimiter(4).max_per_second is None
    assert re.search(r", 10/s>$", repr(limiter))


async def test_a_dispatch_starts_no_faster_than_its_rate() -> None:
    time = FakeTime()
    starts = Starts(time)
    config = ParallelExecutionConfig(max_parallel=8, max_per_second=1000)
    dispatcher = ParallelSubplanDispatcher(config, clock=Clock(monotonic=time))
    task = asyncio.create_task(dispatcher.run([Subplan(f"s{i}", starts.job()) for i in range(4)]))
    await starts.wait_for(1)
    await starts.settle()
    assert starts.at == [100.0]  # the clock stands: no second start
    time.now += 0.0005
    await starts.settle()
    assert len(starts.at) == 1  # half an interval is not enough
    time.now += 0.0005
    await starts.wait_for(2)  # work-conserving: it starts as soon as the rate allows
    time.now += 0.05  # fifty intervals idle: still one start, no burst
    await starts.wait_for(3)
    await starts.settle()
    assert len(starts.at) == 3
    time.now += 0.001
    await task
    assert starts.at == pytest.approx([100.0, 100.001, 100.051, 100.052])
    assert no_tasks_left()


async def test_a_rate_combines_with_the_cap() -> None:
    time = FakeTime()
    gate = asyncio.Event()
    started: list[float] = []

    async def run() -> None:
        started.append(time.now)
        await gate.wait()

    config = ParallelExecutionConfig(max_parallel=1, max_per_second=1000)
    dispatcher = ParallelSubplanDispatcher(config, clock=Clock(monotonic=time))
    task = asyncio.create_task(dispatcher.run([Subplan(f"s{i}", run) for i in range(2)]))
    for _ in range(5):
        await asyncio.sleep(0)
    time.now += 1  # the rate allows; the cap does not
    await asyncio.sleep(0.002)
    assert len(started) == 1
    gate.set()
    await task
    assert len(started) == 2


async def test_a_pool_with_a_rate_spaces_the_subplans_that_use_it() -> None:
    time = FakeTime()
    starts = Starts(time)
    pools = {"api": AsyncSemaphoreLimiter(4, max_per_second=1000, clock=time)}
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=8), pools=pools)
    subplans = [Subplan(f"api{i}", starts.job(), uses=["api"]) for i in range(3)]
    task = asyncio.create_task(dispatcher.run(subplans))
    await starts.wait_for(1)
    await starts.settle()
    assert len(starts.at) == 1
    for count in (2, 3):
        time.now += 0.001
        await starts.wait_for(count)
    await task
    assert starts.at == pytest.approx([100.0, 100.001, 100.002])


async def test_a_rate_limited_limiter_on_its_own() -> None:
    time = FakeTime()
    limiter = AsyncSemaphoreLimiter(4, max_per_second=1000, clock=time)
    await limiter.acquire()
    second = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.002)
    assert not second.done()
    assert limiter.waiting == 1
    time.now += 0.001
    await asyncio.wait_for(second, 5)
    assert limiter.in_use == 2


class Attempts:
    """Subplans that record each attempt's start (``(id, time)``) and fail their first one."""

    def __init__(self, time: FakeTime) -> None:
        self.time = time
        self.at: list[tuple[str, float]] = []
        self.changed = asyncio.Event()

    def flaky(self, subplan_id: str) -> Any:
        async def run() -> None:
            self.at.append((subplan_id, self.time.now))
            self.changed.set()
            if [name for name, _ in self.at].count(subplan_id) == 1:
                raise ValueError("first attempt")

        return run

    async def wait_for(self, count: int) -> None:
        while len(self.at) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)  # a guard against a hang


async def test_a_retry_takes_the_dispatch_s_rate() -> None:
    # Regression: the rate was taken at a subplan's first start only; its retries started
    # at once, however fast they came.
    time = FakeTime()
    attempts = Attempts(time)
    config = ParallelExecutionConfig(max_parallel=2, max_per_second=1000)
    dispatcher = ParallelSubplanDispatcher(config, clock=Clock(monotonic=time))
    subplan = Subplan("flaky", attempts.flaky("flaky"), retries=1, retry_delay=0)
    task = asyncio.create_task(dispatcher.run([subplan]))
    await attempts.wait_for(1)
    await Starts(time).settle()
    assert attempts.at == [("flaky", 100.0)]  # the retry waits for the rate
    time.now += 0.001
    results = await asyncio.wait_for(task, 5)
    assert [name for name, _ in attempts.at] == ["flaky", "flaky"]
    assert [at for _, at in attempts.at] == pytest.approx([100.0, 100.001])
    assert (results[0].state.value, results[0].attempts) == ("completed", 2)
    assert no_tasks_left()


async def test_a_retry_takes_its_pool_s_rate_without_queueing_behind_its_own_units() -> None:
    # "first" holds the pool's only unit and retries while "second" waits in the pool's
    # queue for that unit: the retry takes the pool's pace, not a place in that queue
    # (behind "second", which waits for what "first" holds, it would never start).
    time = FakeTime()
    attempts = Attempts(time)
    pool = AsyncSemaphoreLimiter(1, max_per_second=1000, clock=time)
    dispatcher = ParallelSubplanDispatcher(
        ParallelExecutionConfig(max_parallel=2), pools={"db": pool}
    )
    subplans = [
        Subplan("first", attempts.flaky("first"), retries=1, retry_delay=0, uses=["db"]),
        Subplan("second", attempts.flaky("second"), retries=1, retry_delay=0, uses=["db"]),
    ]
    task = asyncio.create_task(dispatcher.run(subplans))
    await attempts.wait_for(1)
    await Starts(time).settle()
    assert attempts.at == [("first", 100.0)]
    assert pool.waiting == 1  # "second"
    time.now += 0.001
    await attempts.wait_for(2)
    assert [name for name, _ in attempts.at] == ["first", "first"]
    assert attempts.at[1][1] == pytest.approx(100.001)
    time.now += 0.001
    await attempts.wait_for(3)
    time.now += 0.001
    await asyncio.wait_for(task, 5)
    assert [name for name, _ in attempts.at] == ["first", "first", "second", "second"]
    assert [at for _, at in attempts.at] == pytest.approx([100.0, 100.001, 100.002, 100.003])
    assert pool.in_use == 0
    assert no_tasks_left()


@pytest.mark.parametrize("pool", [False, True])
async def test_a_retry_without_a_rate_is_not_held(pool: bool) -> None:
    time = FakeTime()
    attempts = Attempts(time)
    pools = {"db": AsyncSemaphoreLimiter(1)} if pool else None  # gated, but by no rate
    config = ParallelExecutionConfig(max_parallel=2)
    dispatcher = ParallelSubplanDispatcher(config, pools=pools)
    uses = ["db"] if pool else None
    subplan = Subplan("flaky", attempts.flaky("flaky"), retries=1, retry_delay=0, uses=uses)
    results = await dispatcher.run([subplan])
    assert attempts.at == [("flaky", 100.0), ("flaky", 100.0)]  # the clock never moved
    assert results[0].attempts == 2
