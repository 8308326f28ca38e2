"""``dispatcher.stream()``: results in the order they become terminal, then what ``run()``
would raise; leaving the loop early stops the rest (issue #13, point 1)."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Iterator

import pytest

from subplans import (
    AggregateSubplanError,
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
    SubplanResult,
    SubplanStateChanged,
)
from subplans.engine.streaming import CONSUMER_STOPPED

from .conftest import Recorder, no_tasks_left, raising, returning, waiting

PENDING, RUNNING, COMPLETED, FAILED = SubplanExecutionState
CONTINUE = FailureMode.CONTINUE_ON_ERROR


def dispatcher(
    bus: EventBus | None = None, *, max_parallel: int = 4, mode: FailureMode = FailureMode.FAIL_FAST
) -> ParallelSubplanDispatcher:
    config = ParallelExecutionConfig(max_parallel=max_parallel, failure_mode=mode)
    return ParallelSubplanDispatcher(config, bus=bus)


def opened_by(gate: asyncio.Future[None], value: str) -> Callable[[], Awaitable[str]]:
    async def run() -> str:
        await gate
        return value

    return run


def ended_once(recorder: Recorder, ids: list[str]) -> None:
    for subplan_id in ids:
        states = recorder.states(subplan_id)
        assert sum(state.is_terminal for state in states) == 1, (subplan_id, states)
        assert states[-1].is_terminal


async def test_results_come_in_the_order_they_end(bus: EventBus, recorder: Recorder) -> None:
    loop = asyncio.get_running_loop()
    gates = {name: loop.create_future() for name in "abc"}
    subplans = [Subplan(name, opened_by(gates[name], name)) for name in "abc"]
    seen: list[str] = []
    async with contextlib.aclosing(dispatcher(bus).stream(subplans, name="s")) as results:
        gates["c"].set_result(None)
        async for result in results:
            seen.append(result.value)
            if result.value == "c":
                gates["a"].set_result(None)
            elif result.value == "a":
                gates["b"].set_result(None)
    assert seen == ["c", "a", "b"]
    started = recorder.of(DispatchStarted)[0]
    assert (started.name, started.total) == ("s", 3)
    assert isinstance(recorder.events[-1], DispatchFinished)
    assert no_tasks_left()


async def test_a_result_is_handed_on_before_the_others_end() -> None:
    gate = asyncio.Event()
    stream = dispatcher().stream([Subplan("quick", returning(1)), Subplan("slow", waiting(gate))])
    first = await anext(stream)
    assert (first.subplan_id, first.value) == ("quick", 1)
    gate.set()
    second = await anext(stream)
    assert (second.subplan_id, second.value) == ("slow", "opened")
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert no_tasks_left()


async def test_fail_fast_streams_every_result_then_raises_the_first_failure(
    bus: EventBus, recorder: Recorder
) -> None:
    gate = asyncio.Event()
    subplans = [
        Subplan("waits", waiting(gate)),
        Subplan("fails", raising(OSError("boom"))),
        Subplan("never", returning(3)),
    ]
    seen: list[SubplanResult] = []

    async def consume() -> None:
        async for result in dispatcher(bus, max_parallel=2).stream(subplans):
            seen.append(result)

    with pytest.raises(SubplanExecutionError) as caught:
        await consume()
    assert [(r.subplan_id, r.state) for r in seen] == [
        ("fails", FAILED),
        ("waits", FAILED),
        ("never", FAILED),
    ]
    assert str(seen[1].error) == "cancelled because subplan 'fails' failed"
    assert seen[2].attempts == 0
    assert caught.value.subplan_id == "fails"
    assert isinstance(caught.value.__cause__, OSError)
    # the others were handed on already: the error carries the failed results, input order
    assert [r.subplan_id for r in caught.value.results] == ["waits", "fails", "never"]
    ended_once(recorder, ["waits", "fails", "never"])
    assert no_tasks_left()


async def test_continue_on_error_streams_all_then_raises_every_failure() -> None:
    subplans = [
        Subplan("a", returning(1)),
        Subplan("b", raising(OSError("b"))),
        Subplan("c", returning(3)),
    ]
    seen: list[str] = []

    async def consume() -> None:
        async for result in dispatcher(mode=CONTINUE).stream(subplans):
            seen.append(result.subplan_id)

    with pytest.raises(AggregateSubplanError, match=r"^1 of 3 subplans failed") as caught:
        await consume()
    assert sorted(seen) == ["a", "b", "c"]
    assert [e.subplan_id for e in caught.value.exceptions] == ["b"]  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", [FailureMode.FAIL_FAST, CONTINUE])
@pytest.mark.parametrize("how", ["break", "aclose", "raise"])
async def test_leaving_the_loop_early_stops_the_rest(
    mode: FailureMode, how: str, bus: EventBus, recorder: Recorder
) -> None:
    cleaned: list[str] = []
    running: list[str] = []
    started = asyncio.Event()  # when every slot holds a subplan that runs

    def holding(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            running.append(name)
            if len(running) == 3:
                started.set()
            try:
                await asyncio.Event().wait()
            finally:
                cleaned.append(name)

        return run

    pulled: list[int] = []

    def subplans() -> Iterator[Subplan]:
        yield Subplan("quick", returning("found"))
        for i in range(100):
            pulled.append(i)
            yield Subplan(f"hold{i}", holding(f"hold{i}"))

    stream = dispatcher(bus, max_parallel=3, mode=mode).stream(subplans())
    with contextlib.suppress(LookupError):
        async with contextlib.aclosing(stream):
            async for result in stream:
                assert result.value == "found"
                await started.wait()
                if how == "break":
                    break
                if how == "raise":
                    raise LookupError("the consumer failed")
                await stream.aclose()
                break
    assert sorted(cleaned) == ["hold0", "hold1", "hold2"]
    assert len(pulled) == 3  # one per free slot, and nothing more after the stop
    for name in ("hold0", "hold1", "hold2"):
        (failed,) = [e for e in recorder.of(SubplanStateChanged) if e.subplan_id == name][2:]
        assert failed.state is FAILED
        assert isinstance(failed.error, SubplanCancelledError)
        assert str(failed.error) == CONSUMER_STOPPED
    ended_once(recorder, ["quick", "hold0", "hold1", "hold2"])
    assert isinstance(recorder.events[-1], DispatchFinished)
    assert no_tasks_left()


async def test_a_stream_let_go_without_aclosing_still_stops_its_subplans(
    bus: EventBus, recorder: Recorder
) -> None:
    """``break`` alone: the loop closes the abandoned generator, which stops and drains."""
    finished = asyncio.get_running_loop().create_future()
    bus.subscribe(lambda e: finished.set_result(e) if isinstance(e, DispatchFinished) else None)
    gate = asyncio.Event()
    async for _ in dispatcher(bus).stream(
        [Subplan("quick", returning(1)), Subplan("slow", waiting(gate))]
    ):
        break
    await finished
    assert recorder.states("slow") == [PENDING, RUNNING, FAILED]
    await asyncio.sleep(0)  # the closing task ends with the generator
    assert no_tasks_left()


async def test_a_cancelled_consumer_stops_the_stream_as_a_cancelled_caller(
    bus: EventBus, recorder: Recorder
) -> None:
    gate, started = asyncio.Event(), asyncio.Event()
    got: list[SubplanResult] = []

    async def consume() -> None:
        async for result in dispatcher(bus).stream([Subplan("a", waiting(gate, started))]):
            got.append(result)  # pragma: no cover (cancelled at the await: nothing comes)

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel("interrupted by SIGINT")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert got == []  # the cancelled subplan's result is not handed on
    (failed,) = [e for e in recorder.of(SubplanStateChanged) if e.state is FAILED]
    assert str(failed.error) == "interrupted by SIGINT"
    assert no_tasks_left()


async def test_duplicates_in_a_list_are_refused_before_anything_runs(
    bus: EventBus, recorder: Recorder
) -> None:
    with pytest.raises(SubplanError, match=r"^duplicate subplan id 'a'$"):
        dispatcher(bus).stream([Subplan("a", returning(1)), Subplan("a", returning(2))])
    assert recorder.events == []


async def test_an_empty_stream_ends_at_once(bus: EventBus, recorder: Recorder) -> None:
    assert [r async for r in dispatcher(bus).stream([])] == []
    assert [r async for r in dispatcher(bus).stream(iter([]))] == []
    assert [type(e) for e in recorder.events] == [DispatchStarted, DispatchFinished] * 2
    assert [e.total for e in recorder.of(DispatchStarted)] == [0, None]


async def test_a_stream_of_a_generator_keeps_no_ended_subplan() -> None:
    """Flat memory: the subplans alive (seen through their closures) never outnumber the
    slots, however long the input."""
    alive: weakref.WeakSet[Callable[[], Awaitable[None]]] = weakref.WeakSet()
    most = 0

    def body() -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            nonlocal most
            most = max(most, len(alive))
            await asyncio.sleep(0)

        alive.add(run)
        return run

    count = 0
    stream = dispatcher(max_parallel=3).stream(Subplan(f"s{i}", body()) for i in range(300))
    async for _ in stream:
        count += 1
    assert count == 300
    assert 1 <= most <= 3


async def test_a_subplan_abandoned_by_a_stopped_stream_may_end_later(
    bus: EventBus, recorder: Recorder
) -> None:
    """cancel_grace 0: the straggler is recorded as abandoned; its late end changes nothing."""
    config = ParallelExecutionConfig(cancel_grace=0)
    released = asyncio.Event()
    ended: list[str] = []

    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await released.wait()
        ended.append("stubborn")
        return "late"

    stream = ParallelSubplanDispatcher(config, bus=bus).stream(
        [Subplan("quick", returning(1)), Subplan("stubborn", stubborn)]
    )
    async with contextlib.aclosing(stream):
        async for _ in stream:
            break
    (failed,) = [e for e in recorder.of(SubplanStateChanged) if e.state is FAILED]
    assert failed.error.abandoned
    released.set()
    while not ended:
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert recorder.states("stubborn") == [PENDING, RUNNING, FAILED]
    assert no_tasks_left()


@pytest.mark.parametrize(
    "ids",
    [
        ["s0", "s1", "s2", "s0"],  # counting up, then a repeat of an ended one
        ["b7", "a", "b5", "b6", "x01", "a", "b6", "x01"],  # runs that join, others kept whole
    ],
)
async def test_a_stream_refuses_a_repeat_of_an_ended_subplan(ids: list[str]) -> None:
    """The stream keeps no ended subplan, yet a repeated id never runs twice (as for run())."""
    ran: list[str] = []

    def body(subplan_id: str) -> Subplan:
        async def run() -> None:
            ran.append(subplan_id)

        return Subplan(subplan_id, run)

    stream = dispatcher(max_parallel=1, mode=CONTINUE).stream(body(i) for i in ids)
    seen: list[tuple[str, SubplanExecutionState]] = []

    async def read() -> None:
        async for result in stream:
            seen.append((result.subplan_id, result.state))

    with pytest.raises(AggregateSubplanError) as caught:
        await read()
    assert sorted(ran) == sorted(set(ids))
    repeats = len(ids) - len(set(ids))
    assert [s for s in seen if s[1] is FAILED] == [(i, FAILED) for i in ids[-repeats:]]
    assert all(
        str(r.error) == f"duplicate subplan id {r.subplan_id!r}" for r in caught.value.results
    )


def test_numbered_ids_keep_counting_ids_as_runs() -> None:
    """Membership as a set's; each stem's counting ids (up or down) as one run, in O(1)."""
    from subplans.engine.duplicates import NumberedIds

    kept = NumberedIds()
    reference: set[str] = set()
    order = [5, 6, 4, 7, 3, 9, 12, 8, 0]
    for number in order:
        for subplan_id in (f"s{number}", f"t-{number}"):
            assert (subplan_id in kept) is False
            kept.add(subplan_id)
            reference.add(subplan_id)
    for other in ("s01", "s00", "plain", "9" * 30, "s"):
        assert other not in kept
        kept.add(other)
        assert other in kept
    probes = [f"{stem}{n}" for stem in ("s", "t-", "u") for n in range(-1, 15)]
    assert {p for p in probes if p in kept} == {p for p in probes if p in reference}
    assert kept.runs == {"s": [3, 9], "t-": [3, 9]}  # 9 came before 8: kept apart, as 12 and 0
    assert len(kept) == 2 * len(order) + 5
    assert repr(kept) == "<NumberedIds count=23 runs=2 others=11>"
