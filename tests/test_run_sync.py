"""``subplans.run_sync()``: a dispatch from synchronous code (issue #13, point 5)."""

from __future__ import annotations

import asyncio

import pytest

import subplans
from subplans import (
    EventBus,
    FailureMode,
    ParallelExecutionConfig,
    Subplan,
    SubplanExecutionError,
    run_sync,
)

from .conftest import Recorder, raising, returning


def test_run_sync_runs_a_dispatch_on_its_own_loop() -> None:
    bus = EventBus()
    recorder = Recorder(bus)
    config = ParallelExecutionConfig(max_parallel=2)
    results = run_sync([Subplan("a", returning(1)), Subplan("b", returning(2))], config, bus=bus)
    assert [r.value for r in results] == [1, 2]
    assert recorder.events[0].kind == "dispatch_started"
    assert recorder.events[-1].kind == "dispatch_finished"


def test_run_sync_takes_a_generator_and_the_default_config() -> None:
    results = run_sync(Subplan(f"s{i}", returning(i)) for i in range(10))
    assert [r.value for r in results] == list(range(10))


def test_run_sync_raises_what_run_raises() -> None:
    config = ParallelExecutionConfig(failure_mode=FailureMode.FAIL_FAST)
    with pytest.raises(SubplanExecutionError) as caught:
        run_sync([Subplan("a", raising(OSError("no")))], config)
    assert caught.value.subplan_id == "a"


async def test_run_sync_inside_a_running_loop_says_to_await_run() -> None:
    with pytest.raises(
        RuntimeError,
        match=r"^run_sync\(\) cannot run inside a running event loop; "
        r"await ParallelSubplanDispatcher\(config\)\.run\(subplans\) instead$",
    ):
        run_sync([Subplan("a", returning(1))])
    assert asyncio.all_tasks() == {asyncio.current_task()}


def test_run_sync_is_exported() -> None:
    assert "run_sync" in subplans.__all__
    assert "SubplanGroup" in subplans.__all__
