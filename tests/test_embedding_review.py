"""Review of issue #13's embedding API: budgets lent by nested dispatches, cancellations kept,
backpressure, inputs closed, contexts, threads, progress by identity."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest

from subplans import (
    AsyncSemaphoreLimiter,
    DispatchStarted,
    EventBus,
    FailureMode,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    ProgressReporter,
    Subplan,
    SubplanCancelledError,
    SubplanExecutionError,
    SubplanExecutionState,
    SubplanResult,
)
from subplans.engine.groups import GroupStatistics

from .conftest import no_tasks_left, raising, returning, waiting

PENDING, RUNNING, COMPLETED, FAILED = SubplanExecutionState
CONTINUE = FailureMode.CONTINUE_ON_ERROR


def dispatcher(
    *,
    max_parallel: int = 4,
    mode: FailureMode = FailureMode.FAIL_FAST,
    budget: AsyncSemaphoreLimiter | None = None,
    grace: float = 1.0,
) -> ParallelSubplanDispatcher:
    config = ParallelExecutionConfig(
        max_parallel=max_parallel, failure_mode=mode, cancel_grace=grace
    )
    return ParallelSubplanDispatcher(config, budget=budget)


async def test_a_stream_left_by_a_bare_break_and_closed_later_takes_no_slot_back() -> None:
    """The planner ends first; its stream, closed afterwards, must not take a budget slot for
    a subplan that has ended (the next run would wait for it forever)."""
    budget = AsyncSemaphoreLimiter(1)
    shared = dispatcher(budget=budget)
    left: list[AsyncGenerator[SubplanResult, None]] = []

    async def planner() -> object:
        stream = shared.stream(Subplan(f"l{i}", returning(i)) for i in range(10))
        left.append(stream)
        async for result in stream:
            value = result.value
            break  # no aclosing(): the generator is left suspended
        return value

    [result] = await shared.run([Subplan("p", planner)])
    assert result.value == 0
    await left[0].aclose()  # what the loop's finalizer does later
    assert budget.in_use == 0
    results = await shared.run([Subplan("a", returning(1)), Subplan("b", returning(2))])
    assert [r.state for r in results] == [COMPLETED, COMPLETED]
    assert no_tasks_left()


async def test_a_planner_running_two_nested_dispatches_at_once_lends_its_slot_once() -> None:
    """gather() of two nested dispatches under a budget of 1: the first to end must not take
    the slot back while the second still runs on it."""
    budget = AsyncSemaphoreLimiter(1)
    shared = dispatcher(budget=budget)

    async def planner() -> object:
        fast = shared.run([Subplan("x0", returning("x"))])
        slow = shared.run([Subplan(f"y{i}", returning(i)) for i in range(3)])
        done = await asyncio.gather(fast, slow)
        assert budget.in_use == 1  # its own slot, taken back once
        return [len(results) for results in done]

    async with asyncio.timeout(5):
        [result] = await shared.run([Subplan("planner", planner)])
    assert result.value == [1, 3]
    assert budget.in_use == 0
    assert no_tasks_left()


def cleaning_up(started: asyncio.Event, gate: asyncio.Event) -> Subplan:
    """A subplan that waits until cancelled, then cleans up until ``gate`` opens."""

    async def run() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            started.set()
            await gate.wait()

    return Subplan("slow", run)


async def test_a_consumer_cancelled_while_its_stream_winds_down_is_cancelled() -> None:
    cleaning, gate = asyncio.Event(), asyncio.Event()
    reached: list[str] = []

    async def consume() -> None:
        stream = dispatcher().stream([Subplan("a", returning(1)), cleaning_up(cleaning, gate)])
        async with contextlib.aclosing(stream) as results:
            async for _ in results:
                break
        reached.append("after the block")  # pragma: no cover (cancelled in aclose())

    task = asyncio.create_task(consume())
    await cleaning.wait()
    task.cancel()
    await asyncio.sleep(0)
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reached == []
    assert no_tasks_left()


async def test_a_planner_stopped_while_closing_its_nested_stream_is_recorded_failed() -> None:
    """Fail-fast: a sibling fails while the planner closes its stream; the planner's
    cancellation is not lost, so it does not go on and is not recorded completed."""
    cleaning, gate, went_on = asyncio.Event(), asyncio.Event(), []
    shared = dispatcher()

    async def planner() -> str:
        stream = shared.stream([Subplan("c0", returning(0)), cleaning_up(cleaning, gate)])
        async with contextlib.aclosing(stream) as results:
            async for _ in results:
                break
        went_on.append("planner")  # pragma: no cover (cancelled in aclose())
        return "planner value"  # pragma: no cover

    async def sibling() -> None:
        await cleaning.wait()
        gate.set()  # the child's cleanup ends once the planner was cancelled, not before
        raise ValueError("sibling failed")

    with pytest.raises(SubplanExecutionError) as raised:
        await shared.run([Subplan("planner", planner), Subplan("sibling", sibling)])
    planner_result = raised.value.results[0]
    assert planner_result.state is FAILED
    assert isinstance(planner_result.error, SubplanCancelledError)
    assert went_on == []
    assert no_tasks_left()


@pytest.mark.parametrize("budget", [None, 3])
async def test_a_slow_consumer_holds_the_stream_back(budget: int | None) -> None:
    """At most max_parallel running and max_parallel unread: the input is not pulled ahead."""
    limiter = None if budget is None else AsyncSemaphoreLimiter(budget)
    pulled = 0

    def subplans() -> object:
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield Subplan(f"s{i}", returning(i))

    read = 0
    stream = dispatcher(max_parallel=3, budget=limiter).stream(subplans())  # type: ignore[arg-type]
    async with contextlib.aclosing(stream) as results:
        async for _ in results:
            read += 1
            for _ in range(20):  # a consumer slower than the subplans
                await asyncio.sleep(0)
            assert pulled <= read + 2 * 3
            if read == 30:
                break
    assert pulled <= 30 + 2 * 3
    assert limiter is None or limiter.in_use == 0
    assert no_tasks_left()


async def test_a_consumer_cancelled_at_the_streams_await_gets_no_more_results() -> None:
    gate, started = asyncio.Event(), asyncio.Event()
    got: list[SubplanResult] = []

    async def consume() -> None:
        subplans = [Subplan("a", waiting(gate, started)), Subplan("b", waiting(gate))]
        async for result in dispatcher(mode=CONTINUE).stream(subplans):
            got.append(result)  # pragma: no cover (cancelled at the await)

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert got == []

    async def consume_in_time() -> None:
        async with asyncio.timeout(0):
            async for result in dispatcher().stream([Subplan("c", waiting(gate))]):
                got.append(result)  # pragma: no cover

    with pytest.raises(TimeoutError):
        await consume_in_time()
    assert got == []
    assert no_tasks_left()


async def settle() -> None:
    """Let the loop run every ready callback a few times over."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_an_input_that_rides_out_its_cancellation_is_abandoned_after_cancel_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def subplans() -> AsyncGenerator[Subplan, None]:
        yield Subplan("a", returning(1))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # a cleanup that outlasts cancel_grace
        yield Subplan("b", returning(2))

    source = subplans()
    stream = dispatcher(grace=0.05, max_parallel=2).stream(source)
    async with asyncio.timeout(5), contextlib.aclosing(stream) as results:
        async for _ in results:
            break
    assert "the input of dispatch ignored cancellation for 0.1s; abandoning it" in caplog.text
    release.set()
    await settle()  # the abandoned pull ends; what it gave after the stop is not entered
    await source.aclose()
    assert no_tasks_left()


class Closable:
    """A plain iterator of subplans whose ``close()`` is recorded (and may fail)."""

    def __init__(self, fail: bool = False) -> None:
        self.count, self.closed, self.fail = 0, False, fail

    def __iter__(self) -> Closable:
        return self

    def __next__(self) -> Subplan:
        self.count += 1
        if self.count == 1:
            return Subplan("boom", raising(ValueError("boom")))
        return Subplan(f"s{self.count}", returning(self.count))

    def close(self) -> None:
        self.closed = True
        if self.fail:
            raise RuntimeError("cannot close")


async def test_a_stopped_dispatch_closes_its_input_before_it_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []

    def plain() -> object:
        try:
            yield Subplan("boom", raising(ValueError("boom")))
            for i in range(100):
                yield Subplan(f"s{i}", returning(i))
        finally:
            log.append("plain closed")

    async def asynchronous() -> AsyncIterator[Subplan]:
        try:
            yield Subplan("boom", raising(ValueError("boom")))
            for i in range(100):
                yield Subplan(f"s{i}", returning(i))
        finally:
            log.append("async closed")

    shared = dispatcher(max_parallel=2)
    unclosable = iter([Subplan("boom", raising(ValueError("boom"))), Subplan("s", returning(1))])
    for source in (plain(), asynchronous(), Closable(), Closable(fail=True), unclosable):
        with pytest.raises(SubplanExecutionError):
            await shared.run(source)  # type: ignore[arg-type]
        assert no_tasks_left()  # no async_generator_athrow left for the loop to run later
    assert log == ["plain closed", "async closed"]
    assert "closing the input of a stopped dispatch failed" in caplog.text
    async with contextlib.aclosing(shared.stream(asynchronous())) as results:
        async for _ in results:
            break
    assert log[-1] == "async closed"
    assert no_tasks_left()


async def test_an_async_input_whose_closing_fails_or_hangs_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    class Source:
        def __init__(self, hang: bool) -> None:
            self.hang = hang

        def __aiter__(self) -> Source:
            return self

        async def __anext__(self) -> Subplan:
            return Subplan("boom", raising(ValueError("boom")))

        async def aclose(self) -> None:
            if not self.hang:
                raise RuntimeError("cannot close")
            try:
                await asyncio.Event().wait()
            finally:
                await release.wait()

    shared = dispatcher(max_parallel=1, grace=0.05)
    for hang in (False, True):
        with pytest.raises(SubplanExecutionError):
            await shared.run(Source(hang))
    assert "closing the input of a stopped dispatch failed: RuntimeError" in caplog.text
    assert "the input ignored its closing for 0.1s; abandoning it" in caplog.text
    release.set()
    await settle()
    assert no_tasks_left()


SPAN: contextvars.ContextVar[str] = contextvars.ContextVar("span", default="unset")


def spanning(seen: list[tuple[str, str]], i: int) -> Subplan:
    """A subplan that records the span it sees, then sets its own (as a tracer would)."""

    async def run() -> None:
        seen.append((f"s{i}", SPAN.get()))
        SPAN.set(f"span of s{i}")
        await asyncio.sleep(0)

    return Subplan(f"s{i}", run)


async def test_every_subplan_runs_in_a_copy_of_the_callers_context() -> None:
    """As a TaskGroup's tasks: not in a copy of the context of the subplan that ended before."""
    SPAN.set("caller")
    shared = dispatcher(max_parallel=1)
    seen: list[tuple[str, str]] = []
    pulled_in: list[str] = []

    def lazily() -> object:
        for i in range(3):
            pulled_in.append(SPAN.get())
            yield spanning(seen, i)

    expected = [(f"s{i}", "caller") for i in range(3)]
    await shared.run([spanning(seen, i) for i in range(3)])
    assert seen == expected
    seen.clear()
    await shared.run(lazily())  # type: ignore[arg-type]
    assert seen == expected
    assert pulled_in == ["caller"] * 3  # pulled in the dispatch's context, not a subplan's
    seen.clear()
    stream = shared.stream([spanning(seen, i) for i in range(3)])
    SPAN.set("stream")  # the context where stream() was called counts
    assert len([r async for r in stream]) == 3
    assert seen == expected
    seen.clear()
    async with shared.open() as group:
        SPAN.set("submitter")
        for i in range(3):
            group.submit(spanning(seen, i))  # as TaskGroup.create_task: the submitter's
    assert seen == [(f"s{i}", "submitter") for i in range(3)]


async def test_a_submit_from_another_thread_is_refused() -> None:
    async with dispatcher().open() as group:
        with pytest.raises(RuntimeError, match=r"loop\.call_soon_threadsafe\(group\.submit"):
            await asyncio.to_thread(group.submit, Subplan("from a thread", returning(1)))
        group.submit(Subplan("here", returning(2)))
    assert [r.subplan_id for r in group.results] == ["here"]


async def test_a_subplan_whose_task_cannot_be_made_changes_nothing() -> None:
    loop = asyncio.get_running_loop()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Future[Any]:
        coro.close()
        raise RuntimeError("no tasks today")

    loop.set_task_factory(factory)
    shared = dispatcher()
    try:
        with pytest.raises(RuntimeError, match="no tasks today"):
            await shared.run([Subplan("a", returning(1))])
    finally:
        loop.set_task_factory(None)
    assert no_tasks_left()


async def test_progress_pairs_dispatches_by_identity_not_by_name() -> None:
    """An unnamed run() with a total, ending inside an open unnamed group, does not make the
    group's total known."""
    bus = EventBus()
    reporter = ProgressReporter(bus)
    config = ParallelExecutionConfig(max_parallel=2)
    shared = ParallelSubplanDispatcher(config, bus=bus)

    async def planner() -> None:
        await shared.run([Subplan("leaf", returning(1))])

    async with shared.open() as group:
        group.submit(Subplan("planner", planner))
        await settle()
        assert [r.subplan_id for r in group.results] == ["planner"]
        snapshot = reporter.snapshot()
        assert not snapshot.total_known
        assert snapshot.eta is None
    assert reporter.snapshot().total_known
    started = DispatchStarted(None, None, config, dispatch=7)
    assert "dispatch" not in started.to_dict()  # in-process only: JSON lines are unchanged


async def test_a_slot_taken_back_while_it_was_lent_again_is_given_back_at_once() -> None:
    """A planner's first nested dispatch ends and waits to take its slot back; meanwhile it
    opens a second one: the slot the first gets is given back, not held beside the lent one."""
    budget = AsyncSemaphoreLimiter(1)
    shared = dispatcher(budget=budget)
    gate, started, second_go = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def planner() -> None:
        async def first() -> None:
            await shared.run([Subplan("a", waiting(gate, started))])

        async def second() -> None:
            await second_go.wait()
            await shared.run([Subplan("b", returning(2))])

        await asyncio.gather(first(), second())

    task = asyncio.create_task(shared.run([Subplan("planner", planner)]))
    await started.wait()
    outsider = asyncio.create_task(budget.acquire())  # queued: it gets a's slot
    await settle()
    gate.set()
    await outsider
    await settle()
    assert budget.waiting == 1  # the first dispatch, taking the planner's slot back
    second_go.set()
    await settle()  # the second dispatch lends the same (not held) slot; b waits for one
    budget.release()  # the outsider's
    [result] = await task
    assert result.state is COMPLETED
    assert budget.in_use == 0
    assert no_tasks_left()


async def test_a_groups_block_sees_a_fail_fast_stop_and_its_statistics() -> None:
    """The block is not cancelled by the stop (its code is the caller's): it sees it."""
    gate = asyncio.Event()
    group = dispatcher(max_parallel=1).open(name="g")
    assert group.statistics() == GroupStatistics(0, 0, 0, 0, 0)
    assert repr(group) == "<SubplanGroup g not entered>"
    assert not group.stopped

    async def block() -> None:
        async with group:
            group.submit(Subplan("boom", raising(ValueError("boom"))))
            group.submit(Subplan("next", waiting(gate)))
            assert group.statistics() == GroupStatistics(2, 1, 1, 0, 0)
            assert repr(group) == (
                "<SubplanGroup g open submitted=2, pending=1, running=1, completed=0, failed=0>"
            )
            while not group.stopped:
                await asyncio.sleep(0)
            assert group.stop_reason == "cancelled because subplan 'boom' failed"
            group.submit(Subplan("late", returning(1)))  # recorded failed, never started

    with pytest.raises(SubplanExecutionError):
        await block()
    assert group.statistics() == GroupStatistics(3, 0, 0, 0, 3)
    assert repr(group).startswith("<SubplanGroup g ended submitted=3")


async def test_a_repeated_id_in_a_streamed_generator_stops_a_fail_fast_stream() -> None:
    ids = ["a", "b", "a", "c"]
    got: list[tuple[str, SubplanExecutionState]] = []

    async def consume() -> None:
        stream = dispatcher(max_parallel=1).stream(Subplan(i, returning(i)) for i in ids)
        async for result in stream:
            got.append((result.subplan_id, result.state))

    with pytest.raises(SubplanExecutionError, match="duplicate subplan id 'a'"):
        await consume()
    assert got[-1] == ("a", FAILED)
    assert no_tasks_left()
