"""``dispatcher.open()``: a ``SubplanGroup`` that takes subplans while it is open (issue #13,
point 2), and nested dispatches that share a budget (point 4)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from subplans import (
    AggregateSubplanError,
    AsyncSemaphoreLimiter,
    DispatchFinished,
    DispatchStarted,
    EventBus,
    FailureMode,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanCancelledError,
    SubplanError,
    SubplanExecutionError,
    SubplanExecutionState,
    SubplanGroup,
)

from .conftest import Recorder, no_tasks_left, raising, returning, waiting

PENDING, RUNNING, COMPLETED, FAILED = SubplanExecutionState
CONTINUE = FailureMode.CONTINUE_ON_ERROR


def dispatcher(
    bus: EventBus | None = None,
    *,
    max_parallel: int = 4,
    mode: FailureMode = FailureMode.FAIL_FAST,
    budget: AsyncSemaphoreLimiter | None = None,
) -> ParallelSubplanDispatcher:
    config = ParallelExecutionConfig(max_parallel=max_parallel, failure_mode=mode)
    return ParallelSubplanDispatcher(config, bus=bus, budget=budget)


async def test_submitted_subplans_run_and_results_keep_submission_order(
    bus: EventBus, recorder: Recorder
) -> None:
    gate = asyncio.Event()
    async with dispatcher(bus, max_parallel=2).open(name="g") as group:
        assert isinstance(group, SubplanGroup)
        group.submit(Subplan("slow", waiting(gate)))
        group.submit(Subplan("quick", returning(2)))
        assert recorder.states("slow") == [PENDING, RUNNING]  # queued and started at once
        group.submit(Subplan("third", returning(3)))
        assert recorder.states("third") == [PENDING]  # no free slot: it waits
        gate.set()
    assert [(r.subplan_id, r.value) for r in group.results] == [
        ("slow", "opened"),
        ("quick", 2),
        ("third", 3),
    ]
    started = recorder.of(DispatchStarted)[0]
    assert (started.name, started.total) == ("g", None)
    finished = recorder.events[-1]
    assert isinstance(finished, DispatchFinished)
    assert finished.counts == {PENDING: 0, RUNNING: 0, COMPLETED: 3, FAILED: 0}
    assert recorder.peak_running <= 2
    assert no_tasks_left()


async def test_results_are_the_ones_so_far() -> None:
    gate = asyncio.Event()
    async with dispatcher().open() as group:
        assert group.results == []
        group.submit(Subplan("a", returning(1)))
        group.submit(Subplan("b", waiting(gate)))
        while not group.results:
            await asyncio.sleep(0)
        assert [r.subplan_id for r in group.results] == ["a"]
        gate.set()
    assert [r.subplan_id for r in group.results] == ["a", "b"]


async def test_a_subplan_submits_to_its_own_group_and_leaving_waits_for_late_ones(
    bus: EventBus, recorder: Recorder
) -> None:
    """A planner that decomposes work: submissions made while the block waits count too."""
    group: SubplanGroup

    def planner(name: str, depth: int) -> Callable[[], Awaitable[str]]:
        async def run() -> str:
            await asyncio.sleep(0)
            if depth:
                for child in range(2):
                    group.submit(Subplan(f"{name}.{child}", planner(f"{name}.{child}", depth - 1)))
            return name

        return run

    async with dispatcher(bus, max_parallel=3).open() as group:
        group.submit(Subplan("root", planner("root", 3)))
    assert len(group.results) == 1 + 2 + 4 + 8
    assert all(r.state is COMPLETED for r in group.results)
    assert recorder.peak_running <= 3
    assert no_tasks_left()


async def test_a_duplicate_id_is_refused_by_submit(bus: EventBus, recorder: Recorder) -> None:
    async with dispatcher(bus).open() as group:
        group.submit(Subplan("a", returning(1)))
        with pytest.raises(SubplanError, match=r"^duplicate subplan id 'a'$"):
            group.submit(Subplan("a", returning(2)))
    assert [r.value for r in group.results] == [1]
    assert recorder.states("a") == [PENDING, RUNNING, COMPLETED]


async def test_submit_takes_only_a_subplan() -> None:
    async with dispatcher().open() as group:
        with pytest.raises(TypeError, match=r"^submit\(\) takes a Subplan, got 'a'$"):
            group.submit("a")  # type: ignore[arg-type]


async def test_submit_outside_the_block_is_refused() -> None:
    group = dispatcher().open()
    assert group.results == []
    with pytest.raises(SubplanError, match=r"^cannot submit 'a': the group is not open yet$"):
        group.submit(Subplan("a", returning(1)))
    async with group:
        group.submit(Subplan("a", returning(1)))
    with pytest.raises(SubplanError, match=r"^cannot submit 'b': the group has ended$"):
        group.submit(Subplan("b", returning(2)))
    with pytest.raises(RuntimeError, match=r"^a SubplanGroup can be entered only once$"):
        async with group:
            pass  # pragma: no cover
    assert "ended" in repr(group)


async def test_after_a_fail_fast_stop_a_submission_fails_without_starting(
    bus: EventBus, recorder: Recorder
) -> None:
    ran: list[str] = []

    async def late() -> None:
        ran.append("late")  # pragma: no cover (never starts)

    group = dispatcher(bus).open()

    async def submitting() -> None:
        async with group:
            group.submit(Subplan("fails", raising(OSError("boom"))))
            while not group.results:
                await asyncio.sleep(0)
            group.submit(Subplan("late", late))
            assert recorder.states("late") == [PENDING, FAILED]

    with pytest.raises(SubplanExecutionError) as caught:
        await submitting()
    assert ran == []
    assert caught.value.subplan_id == "fails"
    late_result = group.results[1]
    assert (late_result.subplan_id, late_result.state, late_result.attempts) == ("late", FAILED, 0)
    assert isinstance(late_result.error, SubplanCancelledError)
    assert str(late_result.error) == "cancelled because subplan 'fails' failed"
    assert no_tasks_left()


async def test_continue_on_error_raises_every_failure_on_leaving() -> None:
    async def submitting() -> None:
        async with dispatcher(mode=CONTINUE).open() as group:
            group.submit(Subplan("a", raising(OSError("a"))))
            group.submit(Subplan("b", returning(2)))
            group.submit(Subplan("c", raising(OSError("c"))))

    with pytest.raises(AggregateSubplanError, match=r"^2 of 3 subplans failed") as caught:
        await submitting()
    assert caught.value.message == "2 of 3 subplans failed"
    assert [e.subplan_id for e in caught.value.exceptions] == ["a", "c"]  # type: ignore[union-attr]
    assert [r.subplan_id for r in caught.value.results] == ["a", "b", "c"]


async def test_an_exception_in_the_block_cancels_the_group_and_propagates(
    bus: EventBus, recorder: Recorder
) -> None:
    gate, started = asyncio.Event(), asyncio.Event()
    group = dispatcher(bus, max_parallel=1).open()

    async def planning() -> None:
        async with group:
            group.submit(Subplan("running", waiting(gate, started)))
            group.submit(Subplan("pending", returning(2)))
            await started.wait()
            raise LookupError("planner broke")

    with pytest.raises(LookupError, match=r"^planner broke$"):
        await planning()
    running, pending = group.results
    assert str(running.error) == "cancelled because the group's block raised LookupError"
    assert (pending.state, pending.attempts) == (FAILED, 0)
    assert recorder.states("pending") == [PENDING, FAILED]
    assert isinstance(recorder.events[-1], DispatchFinished)
    assert no_tasks_left()


async def test_the_caller_cancelled_while_the_group_waits(
    bus: EventBus, recorder: Recorder
) -> None:
    gate, started = asyncio.Event(), asyncio.Event()
    groups: list[SubplanGroup] = []

    async def caller() -> None:
        async with dispatcher(bus).open() as group:
            groups.append(group)
            group.submit(Subplan("a", waiting(gate, started)))

    task = asyncio.create_task(caller())
    await started.wait()
    task.cancel("interrupted by SIGINT")
    with pytest.raises(asyncio.CancelledError):
        await task
    (result,) = groups[0].results
    assert str(result.error) == "interrupted by SIGINT"
    assert recorder.states("a") == [PENDING, RUNNING, FAILED]
    assert no_tasks_left()


async def test_the_block_itself_cancelled_stops_the_group(bus: EventBus) -> None:
    started = asyncio.Event()
    groups: list[SubplanGroup] = []

    async def caller() -> None:
        async with dispatcher(bus).open() as group:
            groups.append(group)
            group.submit(Subplan("a", waiting(asyncio.Event(), started)))
            await asyncio.Event().wait()

    task = asyncio.create_task(caller())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert str(groups[0].results[0].error) == "the dispatch was cancelled"
    assert no_tasks_left()


# Point 4: nested dispatch on a shared budget.


@pytest.mark.parametrize("shape", ["group", "stream", "run"])
async def test_a_deep_tree_of_planners_on_one_budget_never_deadlocks(shape: str) -> None:
    """Depth 8, 4 children each, cap 4: every planner opens its own dispatch on the same
    budget, which is never exceeded; each planner lends its slot while it waits."""
    budget = AsyncSemaphoreLimiter(4)
    shared = dispatcher(max_parallel=4, budget=budget)
    leaves = 0
    most = 0

    def planner(depth: int) -> Callable[[], Awaitable[int]]:
        async def run() -> int:
            nonlocal leaves, most
            most = max(most, budget.in_use)
            if depth == 0:
                leaves += 1
                await asyncio.sleep(0)
                return 1
            children = [Subplan(f"c{i}", planner(depth - 1)) for i in range(4)]
            if shape == "group":
                async with shared.open() as group:
                    for child in children:
                        group.submit(child)
                results = group.results
            elif shape == "stream":
                results = [r async for r in shared.stream(iter(children))]
            else:
                results = await shared.run(children)
            most = max(most, budget.in_use)
            return sum(r.value for r in results)

        return run

    depth = 8 if shape == "group" else 5
    (result,) = await shared.run([Subplan("root", planner(depth))])
    assert result.value == leaves == 4**depth
    assert most <= 4
    assert budget.peak <= 4
    assert budget.in_use == 0
    assert no_tasks_left()


async def test_a_lent_slot_is_not_taken_back_by_a_cancelled_planner() -> None:
    budget = AsyncSemaphoreLimiter(1)
    shared = dispatcher(budget=budget)
    started = asyncio.Event()

    async def planner() -> None:
        async with shared.open() as group:
            group.submit(Subplan("child", waiting(asyncio.Event(), started)))

    task = asyncio.create_task(shared.run([Subplan("planner", planner)]))
    await started.wait()
    assert budget.in_use == 1  # the child holds the planner's slot
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.in_use == 0
    assert no_tasks_left()


async def test_events_of_a_group_fold_into_progress_without_a_total() -> None:
    from subplans import ProgressReporter

    bus = EventBus()
    reporter = ProgressReporter(bus)
    gate = asyncio.Event()
    async with dispatcher(bus).open() as group:
        group.submit(Subplan("a", returning(1)))
        group.submit(Subplan("b", waiting(gate)))
        while not group.results:
            await asyncio.sleep(0)
        snapshot = reporter.snapshot()
        assert (snapshot.total_known, snapshot.eta, snapshot.total) == (False, None, 2)
        gate.set()
    assert reporter.snapshot().total_known
    assert reporter.snapshot().eta == 0.0


async def test_a_planner_whose_slot_is_taken_meanwhile_can_be_cancelled_while_it_waits() -> None:
    """The planner lent its slot; someone else took it: the planner waits to take one back,
    is cancelled there, and releases nothing it does not hold."""
    budget = AsyncSemaphoreLimiter(1)
    shared = dispatcher(budget=budget)
    child_started, child_gate = asyncio.Event(), asyncio.Event()
    reclaiming = asyncio.Event()

    async def planner() -> None:
        async with shared.open() as group:
            group.submit(Subplan("child", waiting(child_gate, child_started)))
        reclaiming.set()  # pragma: no cover (cancelled while it takes its slot back)

    task = asyncio.create_task(shared.run([Subplan("planner", planner)]))
    await child_started.wait()
    other = asyncio.create_task(budget.acquire())  # queued first: it gets the child's slot
    await asyncio.sleep(0)
    child_gate.set()
    await other
    for _ in range(20):
        await asyncio.sleep(0)
    assert budget.waiting == 1  # the planner, taking its slot back
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not reclaiming.is_set()
    assert budget.in_use == 1  # the other one's, and only it
    budget.release()
    assert no_tasks_left()


async def test_pending_moves_of_a_group_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG, logger="subplans")
    async with dispatcher().open() as group:
        group.submit(Subplan("a", returning(1)))
    await dispatcher().run(Subplan(f"s{i}", returning(i)) for i in range(2))
    pending = [r.getMessage() for r in caplog.records if r.getMessage().endswith(": pending")]
    assert pending == ["subplan a: pending", "subplan s0: pending", "subplan s1: pending"]
