"""Changing the limit while running (issue #14, point 5): ``dispatcher.set_max_parallel(n)``
and ``AsyncSemaphoreLimiter.set_capacity(n)``, with the cap checked at every event."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from subplans import (
    AsyncSemaphoreLimiter,
    ConfigError,
    Event,
    EventBus,
    LimitChanged,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanExecutionState,
    SubplanStateChanged,
)

from .conftest import no_tasks_left

RUNNING = SubplanExecutionState.RUNNING
COMPLETED = SubplanExecutionState.COMPLETED


class CapWatch:
    """Follows the bus; a start while as many run as the cap allows fails the test. Lowering
    holds new starts only: the running count may stay above the new cap until some end."""

    def __init__(self, bus: EventBus, cap: int) -> None:
        self.cap = cap
        self.running = 0
        self.peak = 0
        self.changes: list[LimitChanged] = []
        bus.subscribe(self)

    def __call__(self, event: Event) -> None:
        if isinstance(event, LimitChanged):
            self.changes.append(event)
            if event.pool is None:
                self.cap = event.limit
        elif isinstance(event, SubplanStateChanged):
            if event.state is RUNNING:
                assert self.running < self.cap, f"{event.subplan_id} started over the cap"
                self.running += 1
                self.peak = max(self.peak, self.running)
            elif event.previous is RUNNING:
                self.running -= 1


class Gates:
    """Subplans that each wait for their own gate."""

    def __init__(self, count: int) -> None:
        self.gates = [asyncio.Event() for _ in range(count)]
        self.started: list[int] = []

    def subplans(self) -> list[Subplan]:
        return [Subplan(f"s{i}", self.job(i)) for i in range(len(self.gates))]

    def job(self, i: int) -> Any:
        async def run() -> int:
            self.started.append(i)
            await self.gates[i].wait()
            return i

        return run


async def ticks(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def make(bus: EventBus, max_parallel: int) -> ParallelSubplanDispatcher:
    return ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=max_parallel), bus=bus)


async def test_raising_the_cap_starts_waiting_subplans_at_once(bus: EventBus) -> None:
    watch = CapWatch(bus, 1)
    gates = Gates(4)
    dispatcher = make(bus, 1)
    task = asyncio.create_task(dispatcher.run(gates.subplans(), name="step"))
    await ticks()
    assert gates.started == [0]
    dispatcher.set_max_parallel(3)
    await ticks()
    assert gates.started == [0, 1, 2]
    assert dispatcher.config.max_parallel == 3
    for gate in gates.gates:
        gate.set()
    results = await task
    assert [r.state for r in results] == [COMPLETED] * 4
    (change,) = watch.changes
    assert change.to_dict() | {"timestamp": None} == {
        "event": "limit_changed",
        "timestamp": None,
        "name": "step",
        "pool": None,
        "previous": 1,
        "limit": 3,
    }
    json.dumps(change.to_dict())
    assert no_tasks_left()


async def test_lowering_the_cap_cancels_nothing_and_holds_new_starts(bus: EventBus) -> None:
    watch = CapWatch(bus, 3)
    gates = Gates(6)
    dispatcher = make(bus, 3)
    task = asyncio.create_task(dispatcher.run(gates.subplans()))
    await ticks()
    assert gates.started == [0, 1, 2]
    dispatcher.set_max_parallel(1)
    gates.gates[0].set()
    await ticks()
    assert gates.started == [0, 1, 2]  # two still run: over the new cap, nothing starts
    gates.gates[1].set()
    await ticks()
    assert gates.started == [0, 1, 2]  # one runs: as many as the cap
    gates.gates[2].set()
    await ticks()
    assert gates.started == [0, 1, 2, 3]
    for gate in gates.gates:
        gate.set()
    results = await task
    assert [r.state for r in results] == [COMPLETED] * 6
    assert watch.peak == 3


async def test_lower_then_raise_again_before_anything_ends(bus: EventBus) -> None:
    CapWatch(bus, 2)
    gates = Gates(4)
    dispatcher = make(bus, 2)
    task = asyncio.create_task(dispatcher.run(gates.subplans()))
    await ticks()
    dispatcher.set_max_parallel(1)
    dispatcher.set_max_parallel(3)  # the busy slot to drop is kept; one more is added
    await ticks()
    assert gates.started == [0, 1, 2]
    for gate in gates.gates:
        gate.set()
    await task


async def test_a_new_cap_reaches_streams_groups_and_lazy_inputs(bus: EventBus) -> None:
    watch = CapWatch(bus, 1)
    dispatcher = make(bus, 1)
    lazy, streamed, grouped = Gates(3), Gates(3), Gates(3)

    def source() -> Iterator[Subplan]:
        yield from lazy.subplans()

    async def stream_all() -> None:
        async for _ in dispatcher.stream(streamed.subplans()):
            pass

    running = [
        asyncio.create_task(dispatcher.run(source())),
        asyncio.create_task(stream_all()),
    ]
    async with dispatcher.open() as group:
        for subplan in grouped.subplans():
            group.submit(subplan)
        await ticks()
        assert (lazy.started, streamed.started, grouped.started) == ([0], [0], [0])
        dispatcher.set_max_parallel(2)
        await ticks()
        assert (lazy.started, streamed.started, grouped.started) == ([0, 1], [0, 1], [0, 1])
        for gates in (lazy, streamed, grouped):
            for gate in gates.gates:
                gate.set()
    await asyncio.gather(*running)
    assert len(watch.changes) == 3  # one per running dispatch


async def test_an_async_input_and_a_shared_budget_follow_too(bus: EventBus) -> None:
    gates = Gates(3)

    async def source() -> AsyncIterator[Subplan]:
        for subplan in gates.subplans():
            yield subplan

    budget = AsyncSemaphoreLimiter(8)
    config = ParallelExecutionConfig(max_parallel=1)
    dispatcher = ParallelSubplanDispatcher(config, bus=bus, budget=budget)
    task = asyncio.create_task(dispatcher.run(source()))
    await ticks()
    assert gates.started == [0]
    dispatcher.set_max_parallel(3)
    await ticks()
    assert gates.started == [0, 1, 2]
    for gate in gates.gates:
        gate.set()
    await task


def test_set_max_parallel_is_checked_and_reaches_later_dispatches() -> None:
    dispatcher = ParallelSubplanDispatcher()
    with pytest.raises(ConfigError, match=r"^max_parallel must be between 1 and 32, got 33$"):
        dispatcher.set_max_parallel(33)
    dispatcher.set_max_parallel(7)  # no bus, no dispatch running: nothing to publish
    assert dispatcher.config.max_parallel == 7


async def test_a_change_with_no_dispatch_running_is_published_once(bus: EventBus) -> None:
    watch = CapWatch(bus, 4)
    dispatcher = make(bus, 4)
    dispatcher.set_max_parallel(4)  # no change: no event
    dispatcher.set_max_parallel(2)
    assert [(c.name, c.previous, c.limit) for c in watch.changes] == [(None, 4, 2)]


async def test_set_capacity_raises_and_lowers_a_pool(bus: EventBus) -> None:
    pool = AsyncSemaphoreLimiter(1)
    watch = CapWatch(bus, 8)
    dispatcher = ParallelSubplanDispatcher(
        ParallelExecutionConfig(max_parallel=8), bus=bus, pools={"api": pool}
    )
    gates = Gates(4)
    subplans = [Subplan(f"s{i}", gates.job(i), uses=["api"]) for i in range(4)]
    task = asyncio.create_task(dispatcher.run(subplans))
    await ticks()
    assert gates.started == [0]
    pool.set_capacity(3)
    await ticks()
    assert gates.started == [0, 1, 2]
    pool.set_capacity(1)
    gates.gates[0].set()
    gates.gates[1].set()
    await ticks()
    assert gates.started == [0, 1, 2]  # one runs: as many as the pool's new capacity
    assert pool.in_use == 1
    gates.gates[2].set()
    await ticks()
    assert gates.started == [0, 1, 2, 3]
    gates.gates[3].set()
    await task
    assert [(c.pool, c.previous, c.limit) for c in watch.changes] == [("api", 1, 3), ("api", 3, 1)]
    assert pool.statistics().peak == 3


def test_set_capacity_is_checked() -> None:
    with pytest.raises(ValueError, match=r"^capacity must be an integer >= 1, got 0$"):
        AsyncSemaphoreLimiter(2).set_capacity(0)


async def test_set_capacity_on_a_plain_limiter_wakes_its_waiters() -> None:
    limiter = AsyncSemaphoreLimiter(1)
    await limiter.acquire()
    waiters = [asyncio.create_task(limiter.acquire()) for _ in range(2)]
    await ticks(2)
    assert limiter.waiting == 2
    limiter.set_capacity(3)
    await asyncio.gather(*waiters)
    assert (limiter.in_use, limiter.capacity) == (3, 3)


async def test_lowering_with_free_slots_drops_them_at_once(bus: EventBus) -> None:
    CapWatch(bus, 3)
    gates = Gates(3)
    dispatcher = make(bus, 3)
    task = asyncio.create_task(dispatcher.run(gates.subplans()[:1]))
    await ticks()
    dispatcher.set_max_parallel(1)  # two free slots go now; the busy one stays
    gates.gates[0].set()
    await task
    dispatcher.set_max_parallel(2)
    gates = Gates(3)
    task = asyncio.create_task(dispatcher.run(gates.subplans()))
    await ticks()
    assert gates.started == [0, 1]
    for gate in gates.gates:
        gate.set()
    await task


def test_the_progress_eta_follows_a_new_cap() -> None:
    from subplans import ProgressReporter

    now = [0.0]
    reporter = ProgressReporter(clock=lambda: now[0], parallelism=1)
    for subplan_id in ("a", "b", "c"):
        reporter.handle(SubplanStateChanged(subplan_id, None, SubplanExecutionState.PENDING))
    reporter.handle(SubplanStateChanged("a", SubplanExecutionState.PENDING, RUNNING, 1))
    now[0] = 2.0
    reporter.handle(SubplanStateChanged("a", RUNNING, COMPLETED, 1))
    assert reporter.snapshot().eta == 4.0  # two left, 2 s each, one at a time
    reporter.handle(LimitChanged(None, None, 1, 2))
    assert reporter.snapshot().eta == 2.0
    reporter.handle(LimitChanged(None, "api", 1, 8))  # a pool's: not the dispatch's width
    assert reporter.snapshot().eta == 2.0


class Loop:
    """What the event loop's exception handler gets (a "Task exception was never retrieved"
    among them), and the cap violations a ``CapWatch`` saw."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: self.errors.append(context))

    def check(self) -> None:
        import gc

        gc.collect()  # an unretrieved task exception is reported as its task goes
        asyncio.get_running_loop().set_exception_handler(None)
        assert self.errors == []


def lowered_run(
    dispatcher: ParallelSubplanDispatcher, gates: Gates, mode: str
) -> asyncio.Task[Any]:
    async def stream_all() -> list[Any]:
        return [result async for result in dispatcher.stream(iter(gates.subplans()))]

    if mode == "stream":
        return asyncio.create_task(stream_all())
    subplans = gates.subplans()
    return asyncio.create_task(dispatcher.run(iter(subplans) if mode == "lazy" else subplans))


@pytest.mark.parametrize("mode", ["list", "lazy", "stream"])
async def test_lowering_the_cap_under_busy_slots_starts_nothing_in_them(
    bus: EventBus, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Each subplan that ends while the cap is below the busy slots drops its slot: nothing may
    # start in it (it read a free slot from an empty list: IndexError in a task no one awaited).
    loop = Loop()
    watch = CapWatch(bus, 4)
    gates = Gates(8)
    dispatcher = make(bus, 4)
    task = lowered_run(dispatcher, gates, mode)
    await ticks()
    assert gates.started == [0, 1, 2, 3]
    dispatcher.set_max_parallel(1)
    for i in range(3):
        gates.gates[i].set()
        await ticks()
        assert gates.started == [0, 1, 2, 3]  # still over the new cap
    gates.gates[3].set()
    await ticks()
    assert gates.started == [0, 1, 2, 3, 4]
    for gate in gates.gates:
        gate.set()
    results = await task
    assert [r.state for r in results] == [COMPLETED] * 8
    assert (watch.peak, watch.running) == (4, 0)
    loop.check()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert no_tasks_left()


async def test_a_cap_lowered_while_the_feeder_waits_for_a_pool_holds_its_start(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    # "s2" waits for the pool with the last free slot; the cap drops it and one busy slot: when
    # "s0" ends, "s2" gets the pool but has no slot, so it gives the pool back and waits.
    loop = Loop()
    watch = CapWatch(bus, 3)
    gates = Gates(3)
    pool = AsyncSemaphoreLimiter(1)
    subplans = gates.subplans()
    subplans[0] = Subplan("s0", gates.job(0), uses=["gpu"])
    subplans[2] = Subplan("s2", gates.job(2), uses=["gpu"])
    config = ParallelExecutionConfig(max_parallel=3)
    dispatcher = ParallelSubplanDispatcher(config, bus=bus, pools={"gpu": pool})
    task = asyncio.create_task(dispatcher.run(subplans))
    await ticks()
    assert (gates.started, pool.waiting) == ([0, 1], 1)
    dispatcher.set_max_parallel(1)
    gates.gates[0].set()
    await ticks()
    assert (gates.started, pool.in_use, pool.waiting) == ([0, 1], 0, 0)
    gates.gates[1].set()
    await ticks()
    assert (gates.started, pool.in_use) == ([0, 1, 2], 1)
    gates.gates[2].set()
    assert [r.state for r in await task] == [COMPLETED] * 3
    assert (watch.peak, pool.in_use, pool.waiting) == (2, 0, 0)
    loop.check()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert no_tasks_left()


async def test_a_cap_lowered_while_an_async_input_is_read_holds_its_start(
    bus: EventBus,
) -> None:
    loop = Loop()
    watch = CapWatch(bus, 2)
    gates = Gates(2)
    more = asyncio.Event()

    async def source() -> AsyncIterator[Subplan]:
        first, second = gates.subplans()
        yield first
        await more.wait()  # the feeder reads here with the last free slot
        yield second

    dispatcher = make(bus, 2)
    task = asyncio.create_task(dispatcher.run(source()))
    await ticks()
    dispatcher.set_max_parallel(1)  # the free slot goes
    more.set()
    await ticks()
    assert gates.started == [0]  # read, but no slot: it waits as pending
    gates.gates[0].set()
    await ticks()
    assert gates.started == [0, 1]
    gates.gates[1].set()
    assert [r.state for r in await task] == [COMPLETED] * 2
    assert watch.peak == 1
    loop.check()
    assert no_tasks_left()
