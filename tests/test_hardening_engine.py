"""Issue #8, the engine's stop path: a drain that no cancel cuts short, a KeyboardInterrupt from
a subplan or a subscriber that stops the dispatch cleanly, and a timeout that cannot be ignored.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable

import pytest

from subplans import (
    DispatchFinished,
    Event,
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

from .conftest import Recorder, no_tasks_left, returning, waiting

PENDING, RUNNING, COMPLETED, FAILED = SubplanExecutionState


def dispatcher(
    bus: EventBus | None = None,
    *,
    max_parallel: int = 2,
    grace: float = 5.0,
    mode: str = "fail_fast",
) -> ParallelSubplanDispatcher:
    config = ParallelExecutionConfig(
        max_parallel=max_parallel, failure_mode=FailureMode(mode), cancel_grace=grace
    )
    return ParallelSubplanDispatcher(config, bus=bus)


async def ticks(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def assert_every_subplan_ended_once(recorder: Recorder, ids: list[str]) -> None:
    """One terminal event per subplan, all of them before ``DispatchFinished``, the last event."""
    assert isinstance(recorder.events[-1], DispatchFinished)
    for subplan_id in ids:
        states = recorder.states(subplan_id)
        assert states[-1] in (COMPLETED, FAILED), (subplan_id, states)
        assert sum(s in (COMPLETED, FAILED) for s in states) == 1, (subplan_id, states)


def slow_cleanup(
    started: asyncio.Event, cleaning: asyncio.Event, release: asyncio.Event
) -> Callable[[], Awaitable[None]]:
    """A subplan whose cleanup takes time (like a process given SIGTERM)."""

    async def run() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaning.set()
            await release.wait()

    return run


# Point 2: however many times the caller is cancelled, the drain finishes its bookkeeping.


@pytest.mark.parametrize("cancels", [2, 3])
async def test_cancelling_the_caller_again_mid_drain_never_cuts_the_drain_short(
    cancels: int, bus: EventBus, recorder: Recorder
) -> None:
    """Pins #8.2: the second cancel made run() raise at once; 'a' stayed RUNNING, its terminal
    event came after DispatchFinished and its task was left behind."""
    started, cleaning, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        dispatcher(bus).run(
            [
                Subplan("a", slow_cleanup(started, cleaning, release)),
                Subplan("b", waiting(asyncio.Event())),
                Subplan("c", returning(1)),
            ]
        )
    )
    await started.wait()
    task.cancel("first")
    await cleaning.wait()
    for _ in range(cancels - 1):
        task.cancel("again")
        await ticks()
    assert not task.done()  # still draining: 'a' is in its cleanup
    assert recorder.of(DispatchFinished) == []
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_every_subplan_ended_once(recorder, ["a", "b", "c"])
    errors = {e.subplan_id: e.error for e in recorder.of(SubplanStateChanged) if e.state is FAILED}
    assert {k: str(v) for k, v in errors.items()} == dict.fromkeys("abc", "first")
    assert no_tasks_left()


async def test_a_cancel_of_the_caller_during_a_fail_fast_drain_waits_too(
    bus: EventBus, recorder: Recorder
) -> None:
    started, cleaning, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def fails() -> None:
        await started.wait()
        raise RuntimeError("x")

    task = asyncio.create_task(
        dispatcher(bus).run(
            [Subplan("a", slow_cleanup(started, cleaning, release)), Subplan("b", fails)]
        )
    )
    await cleaning.wait()
    task.cancel()
    await ticks()
    task.cancel()
    await ticks()
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_every_subplan_ended_once(recorder, ["a", "b"])
    assert no_tasks_left()


async def test_repeated_cancels_still_abandon_a_stubborn_subplan_after_the_grace(
    bus: EventBus, recorder: Recorder
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def stubborn() -> str:
        started.set()
        while True:
            try:
                await release.wait()
                return "late"
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(dispatcher(bus, grace=0.05).run([Subplan("s", stubborn)]))
    await started.wait()
    task.cancel()
    await ticks()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_every_subplan_ended_once(recorder, ["s"])
    error = recorder.of(SubplanStateChanged)[-1].error
    assert isinstance(error, SubplanCancelledError)
    assert error.abandoned
    release.set()
    await ticks()
    assert no_tasks_left()
    assert recorder.states("s") == [PENDING, RUNNING, FAILED]  # the late end changes nothing


async def test_a_cancel_while_the_drain_waits_for_the_feeder_is_drained_too(
    bus: EventBus, recorder: Recorder
) -> None:
    from subplans import AsyncSemaphoreLimiter

    budget = AsyncSemaphoreLimiter(1)
    await budget.acquire()  # someone else holds the only slot: the feeder waits
    d = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=2), bus=bus, budget=budget)
    task = asyncio.create_task(d.run([Subplan("a", returning(1))]))
    await ticks()
    task.cancel()
    await asyncio.sleep(0)  # the dispatch stops, and waits for its cancelled feeder
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_every_subplan_ended_once(recorder, ["a"])
    budget.release()
    assert budget.in_use == 0
    assert no_tasks_left()


# Point 15: a subplan that raises KeyboardInterrupt stops the dispatch, which then re-raises it.


async def test_a_subplan_raising_keyboard_interrupt_stops_the_dispatch_cleanly(
    bus: EventBus, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """Pins #8.15: the subplan's task re-raised KeyboardInterrupt out of the event loop;
    asyncio then printed 'Task exception was never retrieved'."""
    started = asyncio.Event()

    async def interrupts() -> None:
        await started.wait()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await dispatcher(bus, max_parallel=2).run(
            [
                Subplan("a", waiting(asyncio.Event(), started)),
                Subplan("b", interrupts),
                Subplan("c", returning(1)),
            ]
        )
    assert_every_subplan_ended_once(recorder, ["a", "b", "c"])
    errors = {e.subplan_id: e.error for e in recorder.of(SubplanStateChanged) if e.state is FAILED}
    assert isinstance(errors["b"], KeyboardInterrupt)
    assert str(errors["a"]) == str(errors["c"]) == "interrupted by KeyboardInterrupt"
    assert no_tasks_left()
    gc.collect()
    assert "never retrieved" not in caplog.text


async def test_keyboard_interrupt_under_continue_on_error_stops_too(
    bus: EventBus, recorder: Recorder
) -> None:
    async def interrupts() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await dispatcher(bus, max_parallel=1, mode="continue_on_error").run(
            [Subplan("a", interrupts, timeout=5), Subplan("b", returning(1))]
        )
    assert recorder.states("b") == [PENDING, FAILED]  # never started
    assert_every_subplan_ended_once(recorder, ["a", "b"])


async def test_keyboard_interrupts_during_a_fail_fast_drain_still_propagate(
    bus: EventBus, recorder: Recorder
) -> None:
    """The dispatch was stopping for a failure already: the first interrupt is raised."""
    started = asyncio.Event()
    interrupts = [KeyboardInterrupt("first"), KeyboardInterrupt("second")]

    def interrupted_on_cancel(error: KeyboardInterrupt) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                started.set()
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise error from None

        return run

    async def fails() -> None:
        await started.wait()
        raise RuntimeError("x")

    with pytest.raises(KeyboardInterrupt) as caught:
        await dispatcher(bus, max_parallel=3).run(
            [
                Subplan("a", interrupted_on_cancel(interrupts[0])),
                Subplan("b", interrupted_on_cancel(interrupts[1])),
                Subplan("c", fails),
            ]
        )
    assert caught.value is interrupts[0]
    assert_every_subplan_ended_once(recorder, ["a", "b", "c"])
    assert no_tasks_left()


# Point 16: the bus isolates every subscriber error; KeyboardInterrupt stops the dispatch.


@pytest.mark.parametrize("error", [SystemExit(3), GeneratorExit(), RuntimeError("bug")])
async def test_a_subscriber_raising_any_error_never_breaks_a_dispatch(
    error: BaseException, bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    """Pins #8.16: SystemExit from a subscriber aborted the dispatch half-way."""

    def bad(event: Event) -> None:
        raise error

    bus.subscribe(bad)
    recorder = Recorder(bus)
    results = await dispatcher(bus).run([Subplan("a", returning(1)), Subplan("b", returning(2))])
    assert [r.state for r in results] == [COMPLETED, COMPLETED]
    assert bus.subscriber_errors == len(recorder.events)
    assert_every_subplan_ended_once(recorder, ["a", "b"])
    assert "event subscriber" in caplog.text
    assert no_tasks_left()


def interrupting_on(
    predicate: Callable[[Event], bool],
) -> Callable[[Event], None]:
    fired = False

    def subscriber(event: Event) -> None:
        nonlocal fired
        if not fired and predicate(event):
            fired = True
            raise KeyboardInterrupt

    return subscriber


def running(subplan_id: str) -> Callable[[Event], bool]:
    return lambda e: (
        isinstance(e, SubplanStateChanged) and e.subplan_id == subplan_id and e.state is RUNNING
    )


@pytest.mark.parametrize(
    "when",
    [
        pytest.param(lambda e: e.kind == "dispatch_started", id="dispatch-started"),
        pytest.param(running("a"), id="first-running"),
        pytest.param(running("c"), id="running-from-the-feeder"),
        pytest.param(
            lambda e: isinstance(e, SubplanStateChanged) and e.state is COMPLETED, id="completed"
        ),
        pytest.param(lambda e: e.kind == "dispatch_finished", id="dispatch-finished"),
    ],
)
async def test_a_subscriber_raising_keyboard_interrupt_stops_the_dispatch(
    when: Callable[[Event], bool], bus: EventBus
) -> None:
    """Pins #8.16: a KeyboardInterrupt in a subscriber aborted the dispatch half-way, leaving
    subplans RUNNING and tasks behind."""
    recorder = Recorder(bus)  # first: it sees every event, the interrupting one included
    bus.subscribe(interrupting_on(when))
    late = Recorder(bus)  # after it: still gets every event
    gate = asyncio.Event()

    async def quick() -> str:
        await asyncio.sleep(0)
        gate.set()
        return "quick"

    with pytest.raises(KeyboardInterrupt):
        await dispatcher(bus).run(
            [
                Subplan("a", waiting(gate)),
                Subplan("b", quick),
                Subplan("c", waiting(gate)),
            ]
        )
    assert_every_subplan_ended_once(recorder, ["a", "b", "c"])
    assert len(late.events) == len(recorder.events)
    assert bus.subscriber_errors == 1
    assert no_tasks_left()


async def test_a_subscriber_interrupt_while_a_subplan_publishes_stops_that_subplan_too(
    bus: EventBus,
) -> None:
    """The subplan whose own event was interrupted is cancelled like the others, not left to
    run on (it is the current task when the subscriber raises)."""
    from subplans import SubplanSkipped

    recorder = Recorder(bus)
    bus.subscribe(interrupting_on(lambda e: isinstance(e, SubplanSkipped)))
    cleaned: list[str] = []

    async def publishes() -> None:
        bus.publish(SubplanSkipped("x", "an event of the subplan's own"))
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("a")

    with pytest.raises(KeyboardInterrupt):
        await dispatcher(bus, grace=5).run([Subplan("a", publishes)])
    assert cleaned == ["a"]
    error = recorder.of(SubplanStateChanged)[-1].error
    assert isinstance(error, SubplanCancelledError)
    assert not error.abandoned
    assert no_tasks_left()


def test_watching_interrupts_can_stop_once_or_twice(bus: EventBus) -> None:
    seen: list[KeyboardInterrupt] = []
    unwatch = bus.watch_interrupts(seen.append)
    bus.subscribe(interrupting_on(lambda e: True))
    unwatch()
    unwatch()
    bus.publish(DispatchFinished(None, {}, 0.0))
    assert seen == []


async def test_a_subscriber_interrupt_outside_any_dispatch_is_only_logged(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    bus.subscribe(interrupting_on(lambda e: True))
    bus.publish(DispatchFinished(None, {}, 0.0))
    assert bus.subscriber_errors == 1
    # A later dispatch on the same bus is not affected.
    assert [r.state for r in await dispatcher(bus).run([Subplan("a", returning(1))])] == [COMPLETED]


# Point 17: a subplan cannot swallow its timeout and complete.


async def test_a_subplan_that_swallows_its_timeout_fails_with_timeout_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pins #8.17: it returned 1.0 s after a 0.1 s timeout and ended COMPLETED."""
    loop = asyncio.get_running_loop()
    real_time = loop.time
    offset = 0.0
    monkeypatch.setattr(loop, "time", lambda: real_time() + offset)

    async def swallows() -> str:
        nonlocal offset
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            offset += 1.0  # it takes its time: a second of the loop's clock
        return "done anyway"

    with pytest.raises(SubplanExecutionError) as caught:
        await dispatcher().run([Subplan("s", swallows, timeout=0.1)])
    result = caught.value.results[0]
    assert result.state is FAILED
    assert isinstance(result.error, TimeoutError)
    assert str(result.error) == "ignored its timeout of 0.1s and ran 1.0s over"


async def test_an_ignored_timeout_is_retried_like_a_timeout() -> None:
    calls = 0

    async def swallows_once() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                calls += 10  # swallowed: it returns anyway
        return calls

    results = await dispatcher().run(
        [Subplan("s", swallows_once, timeout=0.01, retries=1, retry_delay=0)]
    )
    assert (results[0].state, results[0].value, results[0].attempts) == (COMPLETED, 12, 2)


async def test_a_timeout_stays_a_timeout_when_a_stop_comes_while_it_ends() -> None:
    # Regression: a subplan whose timeout fired and which was still cleaning up when a sibling
    # failed (fail-fast) was reported "cancelled because subplan 'failer' failed".
    started, cleaning, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def failer() -> None:
        await cleaning.wait()  # the timed-out subplan is ending
        release.set()
        raise RuntimeError("boom")

    with pytest.raises(SubplanExecutionError) as caught:
        await dispatcher().run(
            [
                Subplan("slow", slow_cleanup(started, cleaning, release), timeout=0.01),
                Subplan("failer", failer),
            ]
        )
    slow, failed = caught.value.results
    assert caught.value.subplan_id == "failer"
    assert (slow.state, type(slow.error), str(slow.error)) == (
        FAILED,
        TimeoutError,
        "timed out after 0.01s",
    )
    assert failed.state is FAILED
