"""What the dispatcher keeps and does per subplan, now that its cost is flat (issue #10): a
subplan is let go once it ended, the loop's task factory is honoured, the moves are logged, and
the fast builders of subplans and events make what their dataclasses make."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import pytest

from subplans import (
    AggregateSubplanError,
    ConfigError,
    DispatchFinished,
    EventBus,
    FailureMode,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanExecutionError,
    SubplanExecutionState,
    SubplanStateChanged,
)
from subplans.engine.clock import Clock
from subplans.engine.events import Event, state_changed

from .conftest import Recorder, no_tasks_left, returning

PENDING, RUNNING, COMPLETED, FAILED = SubplanExecutionState


async def test_an_ended_subplan_and_its_closure_are_let_go_before_the_dispatch_ends() -> None:
    """Pins #10: every Subplan (and what its ``run`` holds) was kept until run() returned."""
    closures: list[weakref.ref[Callable[[], Awaitable[object]]]] = []
    seen_alive: list[bool] = []

    async def later() -> None:
        await asyncio.sleep(0)
        seen_alive.append(closures[0]() is not None)

    def subplans() -> Generator[Subplan, None, None]:
        first = returning(1)
        closures.append(weakref.ref(first))
        yield Subplan("first", first)
        del first
        yield Subplan("later", later)

    config = ParallelExecutionConfig(max_parallel=1)
    results = await ParallelSubplanDispatcher(config).run(subplans())

    assert seen_alive == [False]
    assert [(r.subplan_id, r.state, r.value) for r in results] == [
        ("first", COMPLETED, 1),
        ("later", COMPLETED, None),
    ]


async def test_the_loops_task_factory_makes_the_subplans_tasks() -> None:
    loop = asyncio.get_running_loop()
    made: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Future[Any]:
        made.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop)

    loop.set_task_factory(factory)
    try:
        results = await ParallelSubplanDispatcher().run(
            [Subplan("a", returning(1)), Subplan("b", returning(2))]
        )
    finally:
        loop.set_task_factory(None)
    assert [r.value for r in results] == [1, 2]
    assert made == ["Running._execute", "Running._execute"]
    assert no_tasks_left()


async def test_every_move_is_logged_at_its_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="subplans")

    async def fails() -> None:
        raise OSError("no")

    config = ParallelExecutionConfig(max_parallel=1, failure_mode=FailureMode.CONTINUE_ON_ERROR)
    with pytest.raises(AggregateSubplanError, match=r"^1 of 2 subplans failed"):
        await ParallelSubplanDispatcher(config).run(
            [Subplan("a", returning(1)), Subplan("b", fails)]
        )

    moves = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "subplans"]
    assert moves == [
        (logging.DEBUG, "subplan a: pending"),
        (logging.DEBUG, "subplan b: pending"),
        (logging.DEBUG, "subplan a: running"),
        (logging.INFO, "subplan a: completed"),
        (logging.DEBUG, "subplan b: running"),
        (logging.WARNING, "subplan b: failed (OSError('no'))"),
    ]


async def test_without_a_listener_nothing_is_published_and_the_counts_still_add_up(
    bus: EventBus,
) -> None:
    results = await ParallelSubplanDispatcher(bus=bus).run(
        Subplan(f"s{i}", returning(i)) for i in range(10)
    )
    assert [r.value for r in results] == list(range(10))
    assert bus.published == 2  # dispatch_started and dispatch_finished: no subplan event


async def test_the_end_counts_every_state(bus: EventBus, recorder: Recorder) -> None:
    started = asyncio.Event()

    async def fails() -> None:
        await started.wait()
        raise OSError("no")

    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    with pytest.raises(SubplanExecutionError, match=r"^subplan 'b' failed: OSError: no$"):
        await ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=2), bus=bus).run(
            [Subplan("a", waits), Subplan("b", fails), Subplan("c", returning(1))]
        )
    [finished] = recorder.of(DispatchFinished)
    assert finished.counts == {PENDING: 0, RUNNING: 0, COMPLETED: 0, FAILED: 3}


def test_state_changed_builds_what_the_dataclass_builds() -> None:
    error = OSError("no")
    fast = state_changed("a", RUNNING, FAILED, 2, error, 12.5)
    assert type(fast) is SubplanStateChanged
    assert fast == SubplanStateChanged("a", RUNNING, FAILED, 2, error, time=12.5)
    assert [f.name for f in dataclasses.fields(SubplanStateChanged)] == [
        "time",
        "subplan_id",
        "previous",
        "state",
        "attempt",
        "error",
    ]


def test_a_published_move_is_the_event_the_dataclass_builds() -> None:
    error = OSError("no")
    bus, seen = EventBus(), list[Event]()
    bus.subscribe(seen.append)
    bus._publish_move("a", RUNNING, FAILED, 2, error, 12.5)
    assert seen == [SubplanStateChanged("a", RUNNING, FAILED, 2, error, time=12.5)]
    assert type(seen[0]) is SubplanStateChanged
    assert bus.published == 1


async def work() -> None:
    pass


def test_a_subplan_is_still_a_frozen_dataclass_with_checked_fields() -> None:
    subplan = Subplan("a", work, timeout=5, retries=1)
    assert (subplan.timeout, type(subplan.timeout), subplan.retries) == (5.0, float, 1)
    assert (subplan.retry_delay, subplan.uses_budget) == (0.1, True)
    assert subplan == Subplan("a", work, timeout=5.0, retries=1)
    assert hash(subplan) == hash(Subplan("a", work, timeout=5.0, retries=1))
    assert repr(subplan).startswith("Subplan(id='a', run=<function work at ")
    assert dataclasses.replace(subplan, retries=2).retries == 2
    with pytest.raises(ConfigError, match=r"^a: timeout must be > 0, got 0$"):
        dataclasses.replace(subplan, timeout=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        subplan.id = "b"  # type: ignore[misc]


async def test_a_stop_cancels_an_attempt_under_its_timeout_as_a_stop(
    bus: EventBus, recorder: Recorder
) -> None:
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.Event().wait()

    async def fails() -> None:
        await started.wait()
        raise OSError("no")

    with pytest.raises(SubplanExecutionError, match=r"^subplan 'b' failed: OSError: no$"):
        await ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=2), bus=bus).run(
            [Subplan("a", slow, timeout=60, retries=2), Subplan("b", fails)]
        )
    [a] = [e for e in recorder.of(SubplanStateChanged) if e.subplan_id == "a" and e.state is FAILED]
    assert str(a.error) == "cancelled because subplan 'b' failed"
    assert a.attempt == 1
    assert no_tasks_left()


def test_a_subplan_built_through_its_draft_is_a_plain_subplan() -> None:
    """``Subplan.__new__`` fills a settable draft and turns it into a Subplan: what comes out
    is a Subplan, frozen, equal to itself copied and pickled; a subclass is built the slow way."""
    import copy
    import pickle

    subplan = Subplan("a", work, retries=2, retry_delay=0.5, uses_budget=False)
    assert type(subplan) is Subplan
    assert copy.copy(subplan) == subplan == pickle.loads(pickle.dumps(subplan))
    with pytest.raises(dataclasses.FrozenInstanceError):
        subplan.retries = 3  # type: ignore[misc]

    class Named(Subplan):
        __slots__ = ()

    named = Named("b", work, timeout=1)
    assert (type(named), named.id, named.timeout, named.retries) == (Named, "b", 1.0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        named.id = "c"  # type: ignore[misc]


async def test_the_moves_written_out_in_the_hot_path_publish_as_the_bus_does() -> None:
    """Moved from test_events (``EventBus._publish_pulled`` is gone: ``running.py`` publishes
    the moves where they happen). PENDING and RUNNING of a pulled subplan are two publishes:
    every subscriber sees PENDING before any sees RUNNING, one that raises is skipped each
    time, one that unsubscribes on PENDING gets no RUNNING; the events are the ones the
    dataclass makes, stamped by the dispatch's clock."""
    bus, seen = EventBus(), list[tuple[str, object]]()

    def first(event: Event) -> None:
        if isinstance(event, SubplanStateChanged):
            seen.append(("first", event.state))

    def once(event: Event) -> None:
        if isinstance(event, SubplanStateChanged):
            seen.append(("once", event.state))
            unsubscribe()

    def last(event: Event) -> None:
        if isinstance(event, SubplanStateChanged):
            seen.append(("last", event.state))

    bus.subscribe(first)
    unsubscribe = bus.subscribe(once)
    bus.subscribe(lambda event: 1 / 0)
    bus.subscribe(last)
    events: list[SubplanStateChanged] = []
    bus.subscribe(lambda event: events.append(event) if type(event) is SubplanStateChanged else 0)
    dispatcher = ParallelSubplanDispatcher(
        ParallelExecutionConfig(max_parallel=1), bus=bus, clock=Clock(now=lambda: 7.5)
    )
    # The first is pulled by fill(), the second by release(): both start in _start().
    await dispatcher.run(iter([Subplan("a", returning(1)), Subplan("b", returning(2))]))

    assert seen[:5] == [
        ("first", PENDING),
        ("once", PENDING),
        ("last", PENDING),
        ("first", RUNNING),
        ("last", RUNNING),
    ]
    assert seen[5:] == [(who, state) for state in (COMPLETED,) for who in ("first", "last")] + [
        (who, state) for state in (PENDING, RUNNING, COMPLETED) for who in ("first", "last")
    ]
    assert bus.published == 2 + 6  # the dispatch's start and end, three moves a subplan
    assert bus.subscriber_errors == bus.published
    assert [e.to_dict() for e in events] == [
        SubplanStateChanged(name, previous, state, attempt, None, time=7.5).to_dict()
        for name in ("a", "b")
        for previous, state, attempt in (
            (None, PENDING, 0),
            (PENDING, RUNNING, 1),
            (RUNNING, COMPLETED, 1),
        )
    ]
