"""The bus's raw channel for the run store's recorder: moves as tuples while every subscriber
takes them so, events otherwise (``EventBus._subscribe_raw``)."""

from __future__ import annotations

import asyncio
from typing import Any

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
    SubplanExecutionState,
    SubplanStateChanged,
)

PENDING, RUNNING = SubplanExecutionState.PENDING, SubplanExecutionState.RUNNING
COMPLETED, FAILED = SubplanExecutionState.COMPLETED, SubplanExecutionState.FAILED


async def _noop() -> None:
    await asyncio.sleep(0)


async def _boom() -> None:
    raise ValueError("boom")


def _run(bus: EventBus, lazy: bool) -> None:
    subplans = [Subplan("a", _noop), Subplan("b", _boom)]
    dispatcher = ParallelSubplanDispatcher(
        ParallelExecutionConfig(max_parallel=1, failure_mode=FailureMode.CONTINUE_ON_ERROR), bus=bus
    )
    with pytest.raises(AggregateSubplanError):
        asyncio.run(dispatcher.run(iter(subplans) if lazy else subplans))


def _as_tuple(item: Any) -> Any:
    if isinstance(item, SubplanStateChanged):
        return (item.time, item.subplan_id, item.previous, item.state, item.attempt, item.error)
    return item


def test_a_raw_subscriber_alone_gets_moves_as_tuples_in_order() -> None:
    for lazy in (False, True):
        bus, got = EventBus(), list[Any]()
        bus._subscribe_raw(got.append)
        _run(bus, lazy)
        assert type(got[0]) is DispatchStarted
        assert type(got[-1]) is DispatchFinished
        moves = got[1:-1]
        assert all(type(move) is tuple for move in moves)
        expected: list[tuple[str, SubplanExecutionState | None, SubplanExecutionState, int]]
        expected = [("a", None, PENDING, 0), ("b", None, PENDING, 0)] if not lazy else []
        for subplan_id, end in (("a", COMPLETED), ("b", FAILED)):
            if lazy:
                expected.append((subplan_id, None, PENDING, 0))
            expected += [(subplan_id, PENDING, RUNNING, 1), (subplan_id, RUNNING, end, 1)]
        assert [move[1:5] for move in moves] == expected
        errors = [move[5] for move in moves]
        assert isinstance(errors[-1], ValueError)
        assert errors[:-1] == [None] * 5
        assert bus.published == len(got)


def test_beside_an_ordinary_subscriber_everyone_gets_the_same_events() -> None:
    bus, raw, plain = EventBus(), list[Any](), list[Any]()
    bus._subscribe_raw(raw.append)
    unsubscribe = bus.subscribe(plain.append)
    _run(bus, lazy=True)
    assert raw == plain
    assert all(type(move) is not tuple for move in raw)
    unsubscribe()
    raw.clear()
    _run(bus, lazy=False)
    assert [type(m) for m in raw].count(tuple) == 6
    assert plain[-1] is not raw[-1]


def test_unsubscribing_the_raw_subscriber_leaves_events_for_the_others() -> None:
    bus, raw, plain = EventBus(), list[Any](), list[Any]()
    unsubscribe = bus._subscribe_raw(raw.append)
    bus.subscribe(plain.append)
    unsubscribe()
    unsubscribe()  # twice: nothing more
    _run(bus, lazy=False)
    assert raw == []
    assert all(type(event) is not tuple for event in plain)
    assert len(plain) == 8
    empty = EventBus()
    gone = empty._subscribe_raw(raw.append)
    gone()
    assert not empty.has_subscribers
    assert not empty._all_raw
    assert [_as_tuple(event) for event in plain][1][1:4] == ("a", None, PENDING)
