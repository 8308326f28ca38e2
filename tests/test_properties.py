"""Invariants over random sizes, caps, failure points and modes (hypothesis)."""

from __future__ import annotations

import asyncio

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
                body(i) for i in range(size)
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
