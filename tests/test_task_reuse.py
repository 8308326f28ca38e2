"""A slot's task runs the subplans its slot starts next while nothing could tell it from a new
task (issue #10): context variables, cancellations, done callbacks and fail-fast behave as
with a task per subplan, and a chain of subplans in one task is bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable
from contextvars import ContextVar
from typing import Any

import pytest

from subplans import (
    AsyncSemaphoreLimiter,
    EventBus,
    FailureMode,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanCancelledError,
    SubplanExecutionError,
    SubplanExecutionState,
    SubplanStateChanged,
)
from subplans.engine.dispatch import CHAIN

from .conftest import Recorder, no_tasks_left

PENDING, RUNNING, COMPLETED, FAILED = SubplanExecutionState

var: ContextVar[Any] = ContextVar("test_task_reuse", default="unset")
other: ContextVar[str] = ContextVar("test_task_reuse_other", default="unset")

Made = Callable[[list[Subplan]], Iterable[Subplan]]


def as_list(subplans: list[Subplan]) -> list[Subplan]:
    return subplans


def as_generator(subplans: list[Subplan]) -> Generator[Subplan, None, None]:
    yield from subplans


INPUTS = [pytest.param(as_list, id="list"), pytest.param(as_generator, id="generator")]


class Tasks:
    """Which task ran each subplan (by its position)."""

    def __init__(self) -> None:
        self.of: dict[str, asyncio.Task[Any]] = {}

    def noop(self, name: str) -> Subplan:
        async def run() -> None:
            self.of[name] = asyncio.current_task()  # type: ignore[assignment]
            await asyncio.sleep(0)

        return Subplan(name, run)

    def distinct(self) -> int:
        return len({id(task) for task in self.of.values()})


async def run(
    subplans: Iterable[Subplan], max_parallel: int = 1, bus: EventBus | None = None, **kw: Any
) -> list[Any]:
    config = ParallelExecutionConfig(max_parallel=max_parallel, **kw)
    return await ParallelSubplanDispatcher(config, bus=bus).run(subplans)


@pytest.mark.parametrize("made", INPUTS)
@pytest.mark.parametrize("max_parallel", [1, 3])
async def test_a_context_variable_set_by_a_subplan_is_never_seen_by_a_later_one(
    made: Made, max_parallel: int
) -> None:
    caller_value: list[str] = []  # equal to a new [] but not the same object
    var.set(caller_value)
    seen: dict[str, Any] = {}

    def subplan(i: int) -> Subplan:
        async def body() -> None:
            seen[f"s{i}"] = var.get()
            await asyncio.sleep(0)
            if i % 4 == 1:
                var.set([])  # equal, not the same: a later subplan must see the caller's
            elif i % 4 == 2:
                var.set(f"set by s{i}")
            elif i % 4 == 3:
                var.reset(var.set("set and reset"))

        return Subplan(f"s{i}", body)

    results = await run(made([subplan(i) for i in range(24)]), max_parallel)

    assert [r.state for r in results] == [COMPLETED] * 24
    assert all(value is caller_value for value in seen.values()), seen
    assert var.get() is caller_value


@pytest.mark.parametrize("made", INPUTS)
@pytest.mark.parametrize("caller_sets", [False, True], ids=["empty", "caller's"])
async def test_a_context_variable_set_by_a_pooled_subplan_is_never_seen_by_a_later_one(
    made: Made, caller_sets: bool
) -> None:
    """Pooled subplans hold their own holder in a context variable, set by the dispatch:
    only that one is left aside when the task is reused."""
    caller_value: Any = [] if caller_sets else "unset"
    if caller_sets:
        var.set(caller_value)
    seen: dict[str, Any] = {}
    tasks = Tasks()

    def subplan(i: int) -> Subplan:
        async def body() -> None:
            tasks.of[f"s{i}"] = asyncio.current_task()  # type: ignore[assignment]
            seen[f"s{i}"] = var.get()
            await asyncio.sleep(0)
            if i % 5 == 1:
                var.set([])
            elif i % 5 == 2:
                var.set(f"set by s{i}")
            elif i % 5 == 3:
                other.set("another variable")

        return Subplan(f"s{i}", body, uses={"p": 1})

    pools = {"p": AsyncSemaphoreLimiter(3)}
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=3), pools=pools)
    results = await dispatcher.run(made([subplan(i) for i in range(30)]))

    assert [r.state for r in results] == [COMPLETED] * 30
    assert all(value is caller_value for value in seen.values()), seen
    assert tasks.distinct() < 30
    assert pools["p"].in_use == 0


@pytest.mark.parametrize("made", INPUTS)
async def test_subplans_share_a_task_until_one_sets_a_context_variable(made: Made) -> None:
    tasks = Tasks()

    async def setting() -> None:
        tasks.of["setter"] = asyncio.current_task()  # type: ignore[assignment]
        var.set("x")

    subplans = [tasks.noop("a"), tasks.noop("b"), Subplan("setter", setting), tasks.noop("c")]
    await run(made(subplans))

    assert tasks.of["a"] is tasks.of["b"] is tasks.of["setter"]
    assert tasks.of["c"] is not tasks.of["setter"]  # retired: a new task from there
    assert no_tasks_left()


async def test_a_subscriber_setting_a_context_variable_retires_the_task() -> None:
    """A subscriber of a move runs in the ending subplan's task: what it sets stays there."""
    tasks = Tasks()
    seen: list[Any] = []
    bus = EventBus()

    def subscriber(event: Any) -> None:
        if isinstance(event, SubplanStateChanged) and event.subplan_id == "b":
            var.set("by the subscriber")

    bus.subscribe(subscriber)

    async def looking() -> None:
        seen.append(var.get())

    await run([tasks.noop("a"), tasks.noop("b"), Subplan("c", looking)], bus=bus)

    assert seen == ["unset"]
    assert tasks.of["a"] is not tasks.of["b"]


@pytest.mark.parametrize("uncancel", [False, True], ids=["kept", "uncancelled"])
async def test_a_cancellation_a_subplan_left_requested_never_reaches_the_next(
    uncancel: bool,
) -> None:
    """Requested and not yet delivered (``uncancel`` leaves it pending on 3.11), or caught
    and kept (``cancelling()`` stays 1): either would hit the next subplan in the same task."""
    after: list[str] = []

    async def cancelling_itself() -> str:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        if uncancel:
            task.uncancel()
            return "pending"
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            return "caught"
        raise AssertionError("not cancelled")

    async def next_one() -> None:
        task = asyncio.current_task()
        assert task is not None
        after.append(f"cancelling {task.cancelling()}")  # (a TaskGroup in it would see it)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        after.append("ran to its end")

    subplans = [Subplan("first", cancelling_itself), Subplan("next", next_one)]
    results = await run(subplans)

    assert [(r.state, r.value) for r in results] == [
        (COMPLETED, "pending" if uncancel else "caught"),
        (COMPLETED, None),
    ]
    assert after == ["cancelling 0", "ran to its end"]


async def test_a_subplan_whose_cancellation_was_caught_and_uncancelled_keeps_the_task() -> None:
    """Delivered and cleared: nothing pending, the task is as good as new."""
    tasks = Tasks()

    async def caught() -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.of["caught"] = task
        task.cancel()
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            task.uncancel()

    results = await run([Subplan("caught", caught), tasks.noop("next")])

    assert [r.state for r in results] == [COMPLETED, COMPLETED]
    assert tasks.of["next"] is tasks.of["caught"]


async def test_a_timeout_that_fired_inside_a_subplan_does_not_leak() -> None:
    async def timed_out() -> str:
        try:
            async with asyncio.timeout(0):
                await asyncio.sleep(10)
        except TimeoutError:
            return "timed out"
        return "not timed out"

    async def after() -> str:
        await asyncio.sleep(0)
        return "after"

    results = await run([Subplan("t", timed_out), Subplan("u", after)])

    assert [(r.state, r.value) for r in results] == [
        (COMPLETED, "timed out"),
        (COMPLETED, "after"),
    ]


async def test_a_done_callback_runs_when_its_own_subplan_ended() -> None:
    called: list[str] = []
    seen: list[list[str]] = []

    async def adding() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.add_done_callback(lambda _: called.append("done"))

    async def later() -> None:
        await asyncio.sleep(0)
        seen.append(list(called))

    await run([Subplan("adding", adding), Subplan("later", later)])

    assert seen == [["done"]]


@pytest.mark.parametrize("made", INPUTS)
async def test_fail_fast_cancels_exactly_the_running_subplans(made: Made) -> None:
    bus = EventBus()
    recorder = Recorder(bus)
    gate = asyncio.Event()
    started: list[str] = []

    def waiting(name: str) -> Subplan:
        async def body() -> None:
            started.append(name)
            await gate.wait()

        return Subplan(name, body)

    async def failing() -> None:
        while len(started) < 2:
            await asyncio.sleep(0)
        raise LookupError("boom")

    tasks = Tasks()
    subplans = [
        *(tasks.noop(f"n{i}") for i in range(6)),
        waiting("w0"),
        waiting("w1"),
        Subplan("bad", failing),
        tasks.noop("never"),
    ]
    with pytest.raises(SubplanExecutionError) as raised:
        await run(made(subplans), 3, bus, failure_mode=FailureMode.FAIL_FAST)

    results = {r.subplan_id: r for r in raised.value.results}
    assert tasks.distinct() < 6  # the no-ops shared tasks
    assert [results[f"n{i}"].state for i in range(6)] == [COMPLETED] * 6
    assert isinstance(results["bad"].error, LookupError)
    reason = "cancelled because subplan 'bad' failed"
    for name in ("w0", "w1"):
        assert results[name].state is FAILED
        assert isinstance(results[name].error, SubplanCancelledError)
        assert str(results[name].error) == reason
        assert recorder.states(name) == [PENDING, RUNNING, FAILED]
    if made is as_list:
        assert str(results["never"].error) == reason
        assert recorder.states("never") == [PENDING, FAILED]
    else:  # never pulled
        assert "never" not in results
        assert recorder.states("never") == []
    assert no_tasks_left()


async def test_a_stop_while_the_next_subplan_is_published_running_cancels_it_unstarted() -> None:
    """A subscriber of RUNNING interrupts the dispatch: that subplan never runs its code."""
    bus = EventBus()
    recorder = Recorder(bus)
    ran: list[str] = []

    def interrupting(event: Any) -> None:
        if isinstance(event, SubplanStateChanged) and (event.subplan_id, event.state) == (
            "s2",
            RUNNING,
        ):
            raise KeyboardInterrupt

    bus.subscribe(interrupting)

    def subplan(name: str) -> Subplan:
        async def body() -> None:
            ran.append(name)
            await asyncio.sleep(0)

        return Subplan(name, body)

    with pytest.raises(KeyboardInterrupt):
        await run([subplan(f"s{i}") for i in range(4)], bus=bus)

    assert ran == ["s0", "s1"]
    assert recorder.states("s2") == [PENDING, RUNNING, FAILED]
    assert recorder.states("s3") == [PENDING, FAILED]
    errors = {e.subplan_id: e.error for e in recorder.of(SubplanStateChanged) if e.error}
    assert str(errors["s2"]) == "interrupted by KeyboardInterrupt"
    assert no_tasks_left()


async def test_a_chain_of_subplans_in_one_task_is_bounded() -> None:
    tasks = Tasks()
    n = 3 * (CHAIN + 1) + 5

    await run([tasks.noop(f"s{i}") for i in range(n)])

    runs: dict[int, int] = {}
    for task in tasks.of.values():
        runs[id(task)] = runs.get(id(task), 0) + 1
    assert sorted(runs.values()) == [5, CHAIN + 1, CHAIN + 1, CHAIN + 1]


async def test_a_task_factory_makes_every_subplan_task() -> None:
    made: list[str] = []
    loop = asyncio.get_running_loop()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        made.append("task")
        return asyncio.Task(coro, loop=loop, **kw)

    loop.set_task_factory(factory)
    try:
        tasks = Tasks()
        await run([tasks.noop(f"s{i}") for i in range(5)])
    finally:
        loop.set_task_factory(None)

    assert len(made) == 5
    assert tasks.distinct() == 5


async def test_nested_dispatches_lend_and_run_in_reused_tasks() -> None:
    budget = AsyncSemaphoreLimiter(2)
    inner = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=2), budget=budget)

    def planner(i: int) -> Callable[[], Awaitable[list[Any]]]:
        async def body() -> list[Any]:
            leaves = [Subplan(f"p{i}.{j}", _value(j)) for j in range(3)]
            return [r.value for r in await inner.run(leaves)]

        return body

    outer = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=2))
    results = await outer.run([Subplan(f"p{i}", planner(i)) for i in range(6)])

    assert [r.value for r in results] == [[0, 1, 2]] * 6
    assert budget.in_use == 0
    assert no_tasks_left()


async def test_subplans_started_by_the_feeder_run_in_tasks_of_their_own() -> None:
    """Each waits for the pool's one unit: the feeder starts it, in a new task."""
    pool = AsyncSemaphoreLimiter(1)
    tasks = Tasks()
    dispatcher = ParallelSubplanDispatcher(
        ParallelExecutionConfig(max_parallel=2), pools={"p": pool}
    )
    subplans = [Subplan(f"s{i}", tasks.noop(f"s{i}").run, uses={"p": 1}) for i in range(4)]

    results = await dispatcher.run(subplans)

    assert [r.state for r in results] == [COMPLETED] * 4
    assert tasks.distinct() == 4


async def test_a_stream_reuses_tasks_and_keeps_context_variables_apart() -> None:
    tasks = Tasks()
    seen: list[Any] = []

    async def setting() -> None:
        var.set("leaked")

    async def looking() -> None:
        seen.append(var.get())

    def subplans() -> Generator[Subplan, None, None]:
        for i in range(8):
            yield tasks.noop(f"s{i}")
        for i in range(2):  # (one a slot)
            yield Subplan(f"set{i}", setting)
            yield Subplan(f"look{i}", looking)

    # (At max_parallel=1 an unread result leaves no room: the next starts from the reader.)
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=2))
    results = [r async for r in dispatcher.stream(subplans())]

    assert len(results) == 12
    assert seen == ["unset"] * 2
    assert tasks.distinct() < 8


async def test_a_group_runs_each_subplan_in_a_new_task_in_its_submitters_context() -> None:
    tasks = Tasks()
    seen: list[Any] = []

    async def looking() -> None:
        seen.append(var.get())

    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=1))
    async with dispatcher.open() as group:
        for i in range(3):
            group.submit(tasks.noop(f"s{i}"))

        async def submitting() -> None:
            var.set("submitter's")
            group.submit(Subplan("look", looking))

        await asyncio.create_task(submitting())

    assert tasks.distinct() == 3
    assert seen == ["submitter's"]


async def test_an_async_input_reuses_nothing_it_should_not() -> None:
    seen: list[Any] = []

    async def setting() -> None:
        var.set("leaked")

    async def looking() -> None:
        seen.append(var.get())

    async def subplans() -> AsyncIterator[Subplan]:
        for i in range(3):
            yield Subplan(f"s{i}", setting)
            yield Subplan(f"l{i}", looking)

    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=2))
    results = await dispatcher.run(subplans())

    assert [r.state for r in results] == [COMPLETED] * 6
    assert seen == ["unset"] * 3


async def test_a_pulled_subplan_whose_unit_is_held_waits_for_the_feeder() -> None:
    """The slot is free but the pool's unit is not: the ending task starts nothing."""
    gate = asyncio.Event()
    order: list[str] = []

    def body(name: str, wait: bool = False) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            order.append(f"{name} started")
            if wait:
                await gate.wait()
            await asyncio.sleep(0)
            order.append(f"{name} ended")
            if name == "free":
                gate.set()

        return run

    def subplans() -> Generator[Subplan, None, None]:
        yield Subplan("holder", body("holder", wait=True), uses={"p": 1})
        yield Subplan("free", body("free"))
        yield Subplan("waiter", body("waiter"), uses={"p": 1})

    pools = {"p": AsyncSemaphoreLimiter(1)}
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=2), pools=pools)
    results = await dispatcher.run(subplans())

    assert [r.state for r in results] == [COMPLETED] * 3
    assert order.index("waiter started") > order.index("holder ended")
    assert pools["p"].in_use == 0
    assert no_tasks_left()


async def test_planners_on_a_pool_lend_their_units_from_reused_tasks() -> None:
    """Each planner holds the pool's unit in its own holder, even in a reused task: its
    children run on the unit it lends (with the wrong holder they would wait forever)."""
    pools = {"p": AsyncSemaphoreLimiter(2)}
    config = ParallelExecutionConfig(max_parallel=2)
    tasks = Tasks()

    def planner(i: int) -> Callable[[], Awaitable[list[Any]]]:
        async def body() -> list[Any]:
            tasks.of[f"p{i}"] = asyncio.current_task()  # type: ignore[assignment]
            leaves = [Subplan(f"p{i}.{j}", _value(j), uses={"p": 1}) for j in range(2)]
            inner = ParallelSubplanDispatcher(config, pools=pools)
            return [r.value for r in await inner.run(leaves)]

        return body

    outer = ParallelSubplanDispatcher(config, pools=pools)
    planners = (Subplan(f"p{i}", planner(i), uses={"p": 1}) for i in range(8))
    results = await outer.run(planners)

    assert [r.value for r in results] == [[0, 1]] * 8
    assert tasks.distinct() < 8
    assert pools["p"].in_use == 0
    assert no_tasks_left()


def _value(j: int) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        await asyncio.sleep(0)
        return j

    return run
