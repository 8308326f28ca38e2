"""Invariants over random sizes, caps, failure points and modes (hypothesis)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from subplans import (
    EventBus,
    FailureMode,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanError,
    SubplanExecutionState,
    SubplanStateChanged,
)

from .conftest import Recorder

PENDING, RUNNING, COMPLETED, FAILED = SubplanExecutionState
T = TypeVar("T")
LEGAL = {
    (None, PENDING),
    (PENDING, RUNNING),
    (RUNNING, COMPLETED),
    (RUNNING, FAILED),
    (PENDING, FAILED),
}


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(0, 60),
    cap=st.integers(1, 32),
    mode=st.sampled_from(list(FailureMode)),
    data=st.data(),
)
def test_invariants(size: int, cap: int, mode: FailureMode, data: st.DataObject) -> None:
    failing = data.draw(st.sets(st.integers(0, max(size - 1, 0)), max_size=5)) if size else set()
    ticks = data.draw(st.lists(st.integers(0, 3), min_size=size, max_size=size))

    async def scenario() -> None:
        bus = EventBus()
        recorder = Recorder(bus)
        cap_seen = 0
        active = 0

        def body(i: int) -> Subplan:
            async def run() -> int:
                nonlocal active, cap_seen
                active += 1
                cap_seen = max(cap_seen, active)
                try:
                    for _ in range(ticks[i]):
                        await asyncio.sleep(0)
                    if i in failing:
                        raise RuntimeError(f"fail {i}")
                    return i
                finally:
                    active -= 1

            return Subplan(f"s{i}", run)

        config = ParallelExecutionConfig(max_parallel=cap, failure_mode=mode)
        try:
            results = await ParallelSubplanDispatcher(config, bus=bus).run(
                [body(i) for i in range(size)]
            )
        except SubplanError as error:
            assert failing
            results = error.results  # type: ignore[attr-defined]
        else:
            assert not failing
        assert len(results) == size
        assert cap_seen <= cap
        assert recorder.peak_running <= cap
        for i, result in enumerate(results):
            assert result.subplan_id == f"s{i}"
            states = recorder.states(f"s{i}")
            assert states[-1] is result.state
            assert sum(s.is_terminal for s in states) == 1
            assert result.state.is_terminal
        changes = recorder.of(SubplanStateChanged)
        assert all((e.previous, e.state) in LEGAL for e in changes)
        if mode is FailureMode.CONTINUE_ON_ERROR:
            assert {i for i, r in enumerate(results) if r.state is FAILED} == failing
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())


@settings(max_examples=120, deadline=None)
@given(
    size=st.integers(0, 40),
    cap=st.integers(1, 8),
    mode=st.sampled_from(list(FailureMode)),
    shape=st.sampled_from(["group", "stream", "stream-break", "lazy-run", "async-stream"]),
    data=st.data(),
)
def test_invariants_of_groups_and_streams(
    size: int, cap: int, mode: FailureMode, shape: str, data: st.DataObject
) -> None:
    """The same invariants for the other shapes (issue #13): the cap is never exceeded, every
    announced subplan ends exactly once through legal moves, and no task is left."""
    failing = data.draw(st.sets(st.integers(0, max(size - 1, 0)), max_size=4)) if size else set()
    ticks = data.draw(st.lists(st.integers(0, 3), min_size=size, max_size=size))
    stop_after = data.draw(st.integers(0, max(size - 1, 0)))
    submit_from_inside = data.draw(st.booleans())

    async def scenario() -> None:
        bus = EventBus()
        recorder = Recorder(bus)
        cap_seen = 0
        active = 0
        config = ParallelExecutionConfig(max_parallel=cap, failure_mode=mode)
        dispatcher = ParallelSubplanDispatcher(config, bus=bus)
        submit: list[Callable[[Subplan], None]] = []

        def body(i: int) -> Subplan:
            async def run() -> int:
                nonlocal active, cap_seen
                active += 1
                cap_seen = max(cap_seen, active)
                try:
                    for _ in range(ticks[i]):
                        await asyncio.sleep(0)
                    if submit and i + 1 < size and i % 2 == 0:
                        submit[0](body(i + 1))  # a planner adds its successor
                    if i in failing:
                        raise RuntimeError(f"fail {i}")
                    return i
                finally:
                    active -= 1

            return Subplan(f"s{i}", run)

        async def later() -> AsyncIterator[Subplan]:
            for i in range(size):
                await asyncio.sleep(0)
                yield body(i)

        with contextlib.suppress(SubplanError):
            if shape == "group":
                async with dispatcher.open() as group:
                    if submit_from_inside:
                        submit.append(group.submit)
                    for i in range(size):
                        if not submit or i % 2 == 0 or i == 0:
                            group.submit(body(i))
            elif shape == "lazy-run":
                await dispatcher.run(body(i) for i in range(size))
            else:
                source = later() if shape == "async-stream" else (body(i) for i in range(size))
                async with contextlib.aclosing(dispatcher.stream(source)) as stream:
                    async for count, _ in aioenumerate(stream):
                        if shape == "stream-break" and count >= stop_after:
                            break
        assert cap_seen <= cap
        assert recorder.peak_running <= cap
        changes = recorder.of(SubplanStateChanged)
        assert all((e.previous, e.state) in LEGAL for e in changes)
        for subplan_id in {e.subplan_id for e in changes}:
            states = recorder.states(subplan_id)
            assert sum(s.is_terminal for s in states) == 1, (subplan_id, states)
            assert states[-1].is_terminal
        assert recorder.events[-1].kind == "dispatch_finished"
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())


async def aioenumerate(items: AsyncIterator[T]) -> AsyncIterator[tuple[int, T]]:
    count = 0
    async for item in items:
        yield count, item
        count += 1
