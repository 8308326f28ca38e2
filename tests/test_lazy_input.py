"""Lazy input (issue #13, point 3): any iterable or async iterable, pulled one subplan per
free slot; a repeated id fails its subplan when it is reached; no total is announced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from subplans import (
    AggregateSubplanError,
    AsyncSemaphoreLimiter,
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
)

from .conftest import Recorder, no_tasks_left, raising, returning, waiting

PENDING, RUNNING, COMPLETED, FAILED = SubplanExecutionState
CONTINUE = FailureMode.CONTINUE_ON_ERROR


def dispatcher(
    bus: EventBus | None = None,
    *,
    max_parallel: int = 3,
    mode: FailureMode = FailureMode.FAIL_FAST,
    budget: AsyncSemaphoreLimiter | None = None,
) -> ParallelSubplanDispatcher:
    config = ParallelExecutionConfig(max_parallel=max_parallel, failure_mode=mode)
    return ParallelSubplanDispatcher(config, bus=bus, budget=budget)


class Gated:
    """Subplans that wait for their own gate; counts how far the input was read."""

    def __init__(self, count: int) -> None:
        self.gates = [asyncio.Event() for _ in range(count)]
        self.pulled = 0
        self.running = 0
        self.finished = 0
        self.ahead: list[int] = []  # pulled but not finished, at each pull

    def subplan(self, i: int) -> Subplan:
        async def run() -> int:
            self.running += 1
            await self.gates[i].wait()
            self.finished += 1
            return i

        return Subplan(f"s{i}", run)

    def __iter__(self) -> Iterator[Subplan]:
        for i in range(len(self.gates)):
            self.pulled += 1
            self.ahead.append(self.pulled - self.finished)
            yield self.subplan(i)

    async def __aiter__(self) -> AsyncIterator[Subplan]:
        for subplan in self:
            await asyncio.sleep(0)
            yield subplan


async def settle() -> None:
    """Let every task run until none is ready (a few loop turns are plenty)."""
    for _ in range(50):
        await asyncio.sleep(0)


@pytest.mark.parametrize("kind", ["iterable", "async iterable"])
async def test_the_input_is_pulled_no_further_ahead_than_the_free_slots(
    kind: str, bus: EventBus, recorder: Recorder
) -> None:
    gated = Gated(8)
    source = iter(gated) if kind == "iterable" else gated.__aiter__()
    run = asyncio.create_task(dispatcher(bus).run(source))
    await settle()
    assert (gated.pulled, gated.running) == (3, 3)
    gated.gates[1].set()
    await settle()
    assert (gated.pulled, gated.finished) == (4, 1)
    for gate in gated.gates:
        gate.set()
    results = await run
    assert [r.value for r in results] == list(range(8))
    assert max(gated.ahead) <= 3
    assert recorder.of(DispatchStarted)[0].total is None
    assert recorder.states("s7") == [PENDING, RUNNING, COMPLETED]
    assert no_tasks_left()


async def test_a_list_still_announces_its_total_and_every_pending_first(
    bus: EventBus, recorder: Recorder
) -> None:
    await dispatcher(bus, max_parallel=1).run(
        [Subplan("a", returning(1)), Subplan("b", returning(2))]
    )
    assert recorder.of(DispatchStarted)[0].total == 2
    assert recorder.states("b")[0] is PENDING
    assert [getattr(e, "state", None) for e in recorder.events[1:3]] == [PENDING, PENDING]


async def test_a_tuple_with_a_repeated_id_is_refused_before_anything_runs(
    bus: EventBus, recorder: Recorder
) -> None:
    with pytest.raises(SubplanError, match=r"^duplicate subplan id 'a'$"):
        await dispatcher(bus).run((Subplan("a", returning(1)), Subplan("a", returning(2))))
    assert recorder.events == []


@pytest.mark.parametrize("kind", ["iterable", "async iterable"])
async def test_a_repeated_id_from_a_generator_fails_that_subplan_and_stops_fail_fast(
    kind: str, bus: EventBus, recorder: Recorder
) -> None:
    ran: list[str] = []

    def body(name: str) -> Subplan:
        async def run() -> str:
            ran.append(name)
            await asyncio.sleep(0)
            return name

        return Subplan(name.split("#")[0], run)

    names = ["a", "b", "a#again", "c"]

    async def later() -> AsyncIterator[Subplan]:
        for name in names:
            yield body(name)

    source = (body(n) for n in names) if kind == "iterable" else later()
    with pytest.raises(SubplanExecutionError) as caught:
        await dispatcher(bus, max_parallel=1).run(source)
    assert ran == ["a", "b"]
    error = caught.value.__cause__
    assert isinstance(error, SubplanError)
    assert str(error) == "duplicate subplan id 'a'"
    again = caught.value.results[2]
    assert (again.subplan_id, again.state, again.attempts, again.started) == ("a", FAILED, 0, None)
    assert recorder.states("c") == []  # never pulled: the dispatch stopped
    assert recorder.states("a") == [PENDING, RUNNING, COMPLETED, PENDING, FAILED]
    assert no_tasks_left()


async def test_a_repeated_id_under_continue_on_error_fails_alone(bus: EventBus) -> None:
    subplans = (Subplan(name, returning(name)) for name in ["a", "a", "b"])
    with pytest.raises(AggregateSubplanError, match=r"^1 of 3 subplans failed") as caught:
        await dispatcher(bus, mode=CONTINUE).run(subplans)
    assert caught.value.message == "1 of 3 subplans failed"
    assert [(r.subplan_id, r.state) for r in caught.value.results] == [
        ("a", COMPLETED),
        ("a", FAILED),
        ("b", COMPLETED),
    ]


@pytest.mark.parametrize("kind", ["iterable", "async iterable"])
async def test_an_input_that_raises_stops_the_dispatch_and_its_error_is_raised(
    kind: str, bus: EventBus, recorder: Recorder
) -> None:
    gate, started = asyncio.Event(), asyncio.Event()

    def broken() -> Iterator[Subplan]:
        yield Subplan("a", waiting(gate, started))
        raise LookupError("the planner broke")

    async def broken_async() -> AsyncIterator[Subplan]:
        for subplan in broken():
            yield subplan

    source = broken() if kind == "iterable" else broken_async()
    with pytest.raises(LookupError, match=r"^the planner broke$"):
        await dispatcher(bus).run(source)
    (failed,) = [e for e in recorder.events if getattr(e, "state", None) is FAILED]
    assert str(failed.error) == (  # type: ignore[attr-defined]
        "cancelled because the input raised LookupError: the planner broke"
    )
    assert no_tasks_left()


async def test_an_input_that_gives_something_else_than_a_subplan(bus: EventBus) -> None:
    with pytest.raises(TypeError, match=r"^the input gave 'oops', not a Subplan$"):
        await dispatcher(bus).run(iter([Subplan("a", returning(1)), "oops"]))  # type: ignore[arg-type]


async def test_a_keyboard_interrupt_from_the_input_stops_the_dispatch(bus: EventBus) -> None:
    def interrupted() -> Iterator[Subplan]:
        yield Subplan("a", returning(1))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await dispatcher(bus, max_parallel=1).run(interrupted())
    assert no_tasks_left()


async def test_a_stop_while_an_async_input_is_awaited_cancels_the_pull(bus: EventBus) -> None:
    waiting_for_more = asyncio.Event()
    cancelled: list[bool] = []

    async def slow_planner() -> AsyncIterator[Subplan]:
        yield Subplan("fails", raising(OSError("boom")))
        waiting_for_more.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        yield Subplan("never", returning(1))  # pragma: no cover

    with pytest.raises(SubplanExecutionError):
        await dispatcher(bus).run(slow_planner())
    assert cancelled == [True]
    assert no_tasks_left()


async def test_an_async_input_that_raises_cancelled_error_itself_is_a_failed_input(
    bus: EventBus,
) -> None:
    async def odd() -> AsyncIterator[Subplan]:
        yield Subplan("a", returning(1))
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await dispatcher(bus).run(odd())
    assert no_tasks_left()


@pytest.mark.parametrize("kind", ["iterable", "async iterable"])
async def test_a_lazy_input_on_a_shared_budget(
    kind: str, bus: EventBus, recorder: Recorder
) -> None:
    budget = AsyncSemaphoreLimiter(2)
    gated = Gated(6)
    source = iter(gated) if kind == "iterable" else gated.__aiter__()
    run = asyncio.create_task(dispatcher(bus, max_parallel=4, budget=budget).run(source))
    await settle()
    assert gated.running == 2
    assert gated.pulled <= 3  # the one that waits for the budget, at most
    for gate in gated.gates:
        gate.set()
    assert [r.value for r in await run] == list(range(6))
    assert budget.peak == 2
    assert budget.in_use == 0
    assert no_tasks_left()


async def test_a_generator_with_no_subplans() -> None:
    assert await dispatcher().run(iter([])) == []


async def test_results_keep_input_order_and_only_results_are_kept() -> None:
    subplans = (Subplan(f"s{i}", returning(i)) for i in range(50))
    results = await dispatcher(max_parallel=7).run(subplans)
    assert [r.value for r in results] == list(range(50))


async def test_pending_is_published_when_each_subplan_is_queued(
    bus: EventBus, recorder: Recorder
) -> None:
    """Each PENDING comes right before its RUNNING (pulled when a slot is free), stamped the
    same."""
    await dispatcher(bus, max_parallel=2).run(Subplan(f"s{i}", returning(i)) for i in range(4))
    for i in range(4):
        pending, running, _ = [
            e for e in recorder.events if getattr(e, "subplan_id", "") == f"s{i}"
        ]
        assert pending.time == running.time
        assert recorder.events.index(running) == recorder.events.index(pending) + 1


async def test_a_stop_cancels_a_subplan_that_never_ran_with_the_reason(bus: EventBus) -> None:
    def interrupting(event: object) -> None:
        if getattr(event, "state", None) is RUNNING:
            raise KeyboardInterrupt

    bus.subscribe(interrupting)
    with pytest.raises(KeyboardInterrupt) as caught:
        await dispatcher(bus).run(Subplan(f"s{i}", returning(i)) for i in range(3))
    assert caught.value is not None
    assert isinstance(SubplanCancelledError("x"), SubplanError)
    assert no_tasks_left()


@pytest.mark.parametrize("set_up_to", [1 << 17, 16])
@pytest.mark.parametrize("order", ["in order", "shuffled", "out of order at once"])
async def test_a_repeated_id_is_found_however_the_ids_come(
    order: str, set_up_to: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids in order (by length, then as strings) need no memory; the first one out of order
    starts a set of the ids so far, and past ``SET_UP_TO`` a compact table (4 bytes a slot)."""
    from subplans.engine import intake

    monkeypatch.setattr(intake, "SET_UP_TO", set_up_to)
    ids = [f"s{i}" for i in range(2000)]
    if order == "shuffled":
        ids = ids[1000:] + ids[:1000]
    elif order == "out of order at once":  # a set first, then (past 16) the compact table
        ids[0], ids[1] = ids[1], ids[0]
    ran: list[str] = []

    def body(subplan_id: str) -> Subplan:
        async def run() -> None:
            ran.append(subplan_id)

        return Subplan(subplan_id, run)

    config = ParallelExecutionConfig(max_parallel=4, failure_mode=CONTINUE)
    dispatcher = ParallelSubplanDispatcher(config)
    assert len(await dispatcher.run(body(i) for i in ids)) == 2000
    repeated = [*ids, ids[1500], ids[3], "s2000"]
    with pytest.raises(AggregateSubplanError, match=r"^2 of 2003 subplans failed") as caught:
        await dispatcher.run(body(i) for i in repeated)
    assert caught.value.message == "2 of 2003 subplans failed"
    failed = [(i, r.subplan_id) for i, r in enumerate(caught.value.results) if r.state is FAILED]
    assert failed == [(2000, ids[1500]), (2001, ids[3])]
    assert all(r.error is None for r in caught.value.results if r.state is COMPLETED)
    assert ran.count("s2000") == 1
