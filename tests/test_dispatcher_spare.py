"""The seventh pass of issue #10 (benchmarks/bench_dispatcher.py): a move no subscriber kept
is published in the dispatch's spare event, ``run()`` writes a completion out in the subplan's
task, and ``Subplan(id, run)`` (or with ``uses`` alone) is built without the options' defaults.
What a subscriber, a caller and a reader of the signature see stays what it was."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from typing import Any

import pytest

from subplans import (
    AggregateSubplanError,
    ConfigError,
    EventBus,
    FailureMode,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanExecutionState,
    SubplanResult,
    SubplanStateChanged,
)
from subplans.engine.clock import Clock
from subplans.engine.ending import SPARE_REFS
from subplans.engine.events import Event

from .conftest import raising, returning

PENDING, RUNNING, COMPLETED, FAILED = SubplanExecutionState

MOVES = [
    ("a", None, PENDING, 0),
    ("a", PENDING, RUNNING, 1),
    ("b", None, PENDING, 0),
    ("b", PENDING, RUNNING, 1),
    ("a", RUNNING, COMPLETED, 1),
    ("c", None, PENDING, 0),
    ("c", PENDING, RUNNING, 1),
    ("b", RUNNING, COMPLETED, 1),
    ("c", RUNNING, FAILED, 1),
]


def subplans() -> list[Subplan]:
    return [
        Subplan("a", returning(None)),
        Subplan("b", returning({"x": 1})),
        Subplan("c", raising(OSError("no"))),
    ]


def dispatcher(bus: EventBus) -> ParallelSubplanDispatcher:
    config = ParallelExecutionConfig(max_parallel=2, failure_mode=FailureMode.CONTINUE_ON_ERROR)
    return ParallelSubplanDispatcher(config, bus=bus, clock=Clock(now=lambda: 7.5))


def moves(events: list[Event]) -> list[tuple[Any, ...]]:
    return [
        (e.subplan_id, e.previous, e.state, e.attempt)
        for e in events
        if isinstance(e, SubplanStateChanged)
    ]


async def test_every_kept_event_keeps_its_fields() -> None:
    """A subscriber that keeps some events and drops the others: the kept ones are never
    written again, each is the event the dataclass builds."""
    bus, kept = EventBus(), list[Event]()

    def keep_some(event: Event) -> None:
        if isinstance(event, SubplanStateChanged) and event.state is not PENDING:
            kept.append(event)

    bus.subscribe(keep_some)
    with pytest.raises(AggregateSubplanError):
        await dispatcher(bus).run(iter(subplans()))

    assert moves(kept) == [move for move in MOVES if move[2] is not PENDING]
    for event in kept:
        assert isinstance(event, SubplanStateChanged)
        assert type(event) is SubplanStateChanged
        assert event == SubplanStateChanged(
            event.subplan_id, event.previous, event.state, event.attempt, event.error, time=7.5
        )
    assert [str(event.error) for event in kept if isinstance(event, SubplanStateChanged)] == [
        "None"
    ] * 5 + ["no"]


@pytest.mark.skipif(SPARE_REFS < 0, reason="no spare event on this Python (its counts differ)")
async def test_the_moves_no_subscriber_kept_share_one_event() -> None:
    """Pins the spare (a dispatch's moves were three new events a subplan): nothing kept them,
    so every move but a failure's (whose error it would keep alive) came in one object."""
    bus, seen = EventBus(), list[tuple[int, Any]]()
    bus.subscribe(lambda event: seen.append((id(event), getattr(event, "state", None))))
    with pytest.raises(AggregateSubplanError):
        await dispatcher(bus).run(iter(subplans()))
    assert len({number for number, state in seen if state not in (None, FAILED)}) == 1
    assert len(seen) == 2 + len(MOVES)  # the dispatch's start and finish, and the moves


async def read(bus: EventBus, into: list[SubplanResult]) -> None:
    async for result in dispatcher(bus).stream(subplans()):
        into.append(result)


async def test_a_completion_written_out_records_what_finish_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``run()`` writes a completion out in ``Running._execute``; ``stream()`` (which hands
    its results on) goes through ``Ending.finish``: same results, events and log lines."""
    caplog.set_level(logging.INFO, logger="subplans")
    seen: dict[str, tuple[list[Any], list[tuple[Any, ...]], list[str]]] = {}
    for how in ("run", "stream"):
        bus, events = EventBus(), list[Event]()
        bus.subscribe(events.append)
        caplog.clear()
        streamed: list[SubplanResult] = []
        with pytest.raises(AggregateSubplanError) as raised:
            await (dispatcher(bus).run(subplans()) if how == "run" else read(bus, streamed))
        results = raised.value.results if how == "run" else streamed
        results = sorted(results, key=lambda result: result.subplan_id)
        assert results[0] == SubplanResult("a", COMPLETED, None, None, 7.5, 7.5, 1)
        fields = [(*r._fields()[:3], repr(r.error), *r._fields()[4:]) for r in results]
        lines = sorted(record.getMessage() for record in caplog.records)
        seen[how] = ([*moves(events), bus.published], fields, lines)
    assert seen["run"] == seen["stream"]
    assert [(f[0], f[1], f[2], f[-1]) for f in seen["run"][1]] == [
        ("a", COMPLETED, None, 1),
        ("b", COMPLETED, {"x": 1}, 1),
        ("c", FAILED, None, 1),
    ]


async def test_a_raw_subscriber_gets_a_written_out_completion_as_a_tuple() -> None:
    bus, seen = EventBus(), list[Any]()
    bus._subscribe_raw(seen.append)
    await dispatcher(bus).run([Subplan("a", returning(3))])
    assert [move for move in seen if type(move) is tuple] == [
        (7.5, "a", None, PENDING, 0, None),
        (7.5, "a", PENDING, RUNNING, 1, None),
        (7.5, "a", RUNNING, COMPLETED, 1, None),
    ]


class Named(str):
    __slots__ = ()


async def work() -> None:
    pass


def test_a_subplan_built_without_options_is_the_one_built_with_them() -> None:
    uses = {"api": 1}
    assert Subplan("a", work) == Subplan(
        "a", work, timeout=None, retries=0, retry_delay=0.1, uses_budget=True, uses=None
    )
    assert Subplan("a", work, uses=uses) == Subplan("a", work, uses=uses, retries=0)
    assert Subplan("a", work, uses=uses).uses == (("api", 1),)
    assert Subplan("a", work, uses=None).uses is None
    assert Subplan(id="a", run=work) == Subplan("a", work)
    assert type(Subplan(Named("a"), work).id) is Named  # a str of a subclass, checked


def test_a_subplan_refuses_what_it_refused_with_the_same_words() -> None:
    with pytest.raises(TypeError, match=r"^Subplan.__new__\(\) got an unexpected keyword"):
        Subplan("a", work, timout=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^Subplan.__new__\(\) got an unexpected keyword"):
        Subplan("a", work, uses={"api": 1}, timout=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^Subplan.__new__\(\) takes from 1 to 3 positional"):
        Subplan("a", work, 5)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=r"^subplan id must be a non-empty string, got ''$"):
        Subplan("", work)
    with pytest.raises(ConfigError, match=r"^subplan 'a': run must be a zero-argument"):
        Subplan("a", None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^subplan 'a': uses 'api' must be an integer >= 1"):
        Subplan("a", work, uses={"api": 0})


def test_the_signature_shows_the_options_as_keywords() -> None:
    parameters = inspect.signature(Subplan).parameters
    assert list(parameters) == [
        "id",
        "run",
        "timeout",
        "retries",
        "retry_delay",
        "uses_budget",
        "uses",
    ]
    assert {p.kind for name, p in parameters.items() if name not in ("id", "run")} == {
        inspect.Parameter.KEYWORD_ONLY
    }
    assert dataclasses.replace(Subplan("a", work), retries=2).retries == 2


async def test_a_subscriber_that_raises_on_a_failure_is_skipped() -> None:
    """``Ending.finish`` publishes what ``_execute`` does not write out (a failure): a
    subscriber that raises there is logged and skipped, the next one still gets the event."""
    bus, seen = EventBus(), list[Any]()
    bus.subscribe(lambda event: 1 / 0 if getattr(event, "state", None) is FAILED else None)
    bus.subscribe(lambda event: seen.append(getattr(event, "state", None)))
    with pytest.raises(AggregateSubplanError):
        await dispatcher(bus).run(iter(subplans()))
    assert seen.count(FAILED) == 1
    assert bus.subscriber_errors == 1
