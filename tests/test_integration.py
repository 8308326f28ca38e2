"""Many concurrent subplans end to end: all complete, the cap is reached, never exceeded."""

from __future__ import annotations

import asyncio

import pytest

from subplans import (
    EventBus,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    ProgressReporter,
    Subplan,
    SubplanExecutionState,
)

from .conftest import Recorder, no_tasks_left


@pytest.mark.parametrize(("size", "cap"), [(64, 16), (1000, 32), (1000, 7)])
async def test_many_subplans(size: int, cap: int) -> None:
    bus = EventBus()
    recorder = Recorder(bus)
    reporter = ProgressReporter(bus)
    active = peak = 0

    async def work(i: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        for _ in range(i % 3 + 1):
            await asyncio.sleep(0)
        active -= 1
        return i * i

    subplans = [Subplan(f"s{i}", lambda i=i: work(i)) for i in range(size)]  # type: ignore[misc]
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=cap), bus=bus)
    results = await dispatcher.run(subplans)
    assert [r.value for r in results] == [i * i for i in range(size)]
    assert all(r.state is SubplanExecutionState.COMPLETED for r in results)
    assert peak == cap
    assert recorder.peak_running == cap
    assert reporter.snapshot().counts[SubplanExecutionState.COMPLETED] == size
    assert no_tasks_left()
