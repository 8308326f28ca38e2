"""Halting thresholds (issue #14, point 1): ``HaltPolicy`` and how a dispatch halts on it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from subplans import (
    AggregateSubplanError,
    AsyncSemaphoreLimiter,
    ConfigError,
    DispatchHalted,
    Event,
    EventBus,
    FailureMode,
    HaltPolicy,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    Subplan,
    SubplanCancelledError,
    SubplanExecutionError,
    SubplanExecutionState,
    SubplanResult,
)
from subplans.engine.thresholds import check_success_halt, halt_reason

from .conftest import Recorder, no_tasks_left, raising, returning, waiting

PENDING, RUNNING, COMPLETED, FAILED = SubplanExecutionState


# --- the policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("soon,fail=3%", HaltPolicy("soon", fail="3%")),
        ("now,fail=1", HaltPolicy("now", fail=1)),
        ("now, success=50%", HaltPolicy("now", success="50%")),
        ("soon,fail=2,success=12.5%", HaltPolicy("soon", fail=2, success="12.5%")),
        ("soon,success=100%", HaltPolicy("soon", success="100%")),
    ],
)
def test_the_string_form_parses_and_prints_back(text: str, policy: HaltPolicy) -> None:
    assert HaltPolicy.parse(text) == policy
    assert HaltPolicy.parse(str(policy)) == policy
    assert HaltPolicy.from_value(text) == policy


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"when": "soon", "fail": "120%"},
            "halt fail must be a count >= 1 or a percentage in (0, 100], got '120%'",
        ),
        (
            {"when": "soon", "fail": 0},
            "halt fail must be a count >= 1 or a percentage in (0, 100], got 0",
        ),
        (
            {"when": "soon", "success": "0%"},
            "halt success must be a count >= 1 or a percentage in (0, 100], got '0%'",
        ),
        (
            {"when": "soon", "fail": True},
            "halt fail must be a count >= 1 or a percentage in (0, 100], got True",
        ),
        (
            {"when": "soon", "fail": 2.5},
            "halt fail must be a count >= 1 or a percentage in (0, 100], got 2.5",
        ),
        ({"when": "later", "fail": 1}, "halt when must be 'now' or 'soon', got 'later'"),
        ({"when": "now"}, "halt needs a fail or a success threshold, got neither"),
    ],
)
def test_invalid_policies_say_what_and_what_is_allowed(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(message)}$"):
        HaltPolicy(**kwargs)


@pytest.mark.parametrize("text", ["soon", "soon,done=3", "soon,fail", "soon,fail=1,fail=2", ""])
def test_a_malformed_string_shows_the_form(text: str) -> None:
    form = "'now|soon,fail=N|P%[,success=N|P%]'"
    with pytest.raises(ConfigError, match=rf"^halt must be of the form {re.escape(form)}, got "):
        HaltPolicy.parse(text)


def test_from_value_takes_a_mapping_and_names_the_field() -> None:
    assert HaltPolicy.from_value({"when": "soon", "fail": "3%"}) == HaltPolicy("soon", fail="3%")
    assert HaltPolicy.from_value(None) is None
    policy = HaltPolicy("now", fail=1)
    assert HaltPolicy.from_value(policy) is policy
    with pytest.raises(ConfigError, match=r"^step\.halt fail must be a count >= 1 or a perc"):
        HaltPolicy.from_value("soon,fail=120%", "step.halt")
    with pytest.raises(ConfigError, match=r"^step\.halt fail must be a count >= 1 or a perc"):
        HaltPolicy.from_value({"when": "soon", "fail": "120%"}, "step.halt")
    with pytest.raises(ConfigError, match=r"^halt has unknown key 'done' \(allowed: when, f"):
        HaltPolicy.from_value({"when": "soon", "done": 1})
    with pytest.raises(ConfigError, match=r"^halt needs 'when' \('now' or 'soon'\)$"):
        HaltPolicy.from_value({"fail": 1})
    with pytest.raises(ConfigError, match=r"^halt must be a HaltPolicy, a string of the form"):
        HaltPolicy.from_value(3)
    with pytest.raises(ConfigError, match=r"^halt must be of the form"):
        HaltPolicy.parse(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("threshold", "count", "known", "reached"),
    [
        (3, 2, 100, False),
        (3, 3, 100, True),
        ("3%", 2, 100, False),
        ("3%", 3, 100, True),
        ("3%", 1, 34, True),  # 1/34 = 2.9%... no: 2.94% < 3%
        ("0.1%", 1, 1000, True),  # exactly 0.1%: floats would miss it
        ("0.1%", 0, 1000, False),
        ("100%", 9, 10, False),
        ("100%", 10, 10, True),
        ("50%", 1, 2, True),
        ("50%", 1, 3, False),
    ],
)
def test_threshold_arithmetic_at_the_boundaries(
    threshold: int | str, count: int, known: int, reached: bool
) -> None:
    if threshold == "3%" and known == 34:
        reached = False  # 1 of 34 is 2.94%
    policy = HaltPolicy("soon", fail=threshold, success=threshold)
    assert policy.fail_reached(count, known) is reached
    assert policy.success_reached(count, known) is reached


def test_the_config_maps_the_two_failure_modes_onto_halt() -> None:
    assert ParallelExecutionConfig().halt_policy == HaltPolicy("now", fail=1)
    continuing = ParallelExecutionConfig(failure_mode=FailureMode.CONTINUE_ON_ERROR)
    assert continuing.halt_policy is None
    fast = ParallelExecutionConfig(halt=HaltPolicy("now", fail=1))
    assert fast.failure_mode is FailureMode.FAIL_FAST
    assert fast.halt_policy is not None
    assert fast.halt_policy.is_fail_fast
    soon = ParallelExecutionConfig(halt="soon,fail=3%")  # type: ignore[arg-type]
    assert soon.halt == HaltPolicy("soon", fail="3%")
    assert soon.failure_mode is FailureMode.CONTINUE_ON_ERROR
    assert soon.to_dict()["halt"] == "soon,fail=3%"
    assert "halt" not in ParallelExecutionConfig().to_dict()
    assert HaltPolicy("soon", fail=2).to_dict() == {"when": "soon", "fail": 2, "success": None}
    with pytest.raises(ConfigError, match=r"^halt fail must be a count >= 1 or a percentage"):
        ParallelExecutionConfig(halt="soon,fail=120%")  # type: ignore[arg-type]


# --- dispatches ----------------------------------------------------------------------------


def dispatcher(halt: str, max_parallel: int = 2, bus: EventBus | None = None) -> Any:
    config = ParallelExecutionConfig(max_parallel=max_parallel, halt=HaltPolicy.parse(halt))
    return ParallelSubplanDispatcher(config, bus=bus)


def gated() -> tuple[asyncio.Event, asyncio.Event, Callable[[], Awaitable[str]]]:
    gate, started = asyncio.Event(), asyncio.Event()
    return gate, started, waiting(gate, started)


async def test_soon_starts_nothing_new_and_lets_the_running_finish(
    bus: EventBus, recorder: Recorder
) -> None:
    gate, started, slow = gated()
    subplans = [
        Subplan("slow", slow),
        Subplan("a", raising(ValueError("a"))),
        Subplan("b", raising(ValueError("b"))),
        *(Subplan(f"never{i}", returning(i)) for i in range(3)),
    ]
    task = asyncio.create_task(dispatcher("soon,fail=2", bus=bus).run(subplans))
    await started.wait()
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()  # "slow" runs on
    gate.set()
    with pytest.raises(AggregateSubplanError) as caught:
        await task
    reason = "cancelled because the fail threshold was reached (halt soon,fail=2)"
    # The 3 held back are counted apart from the 2 that failed (issue #14: "4 of 10 failed"
    # once read "10 of 10 failed" when 6 never started).
    message = (
        "2 of 6 subplans failed, 3 cancelled; the fail threshold was reached (halt soon,fail=2)"
    )
    assert caught.value.message == message
    results = {r.subplan_id: r for r in caught.value.results}
    assert results["slow"].state is COMPLETED
    for i in range(3):
        never = results[f"never{i}"]
        assert never.state is FAILED
        assert never.attempts == 0
        assert isinstance(never.error, SubplanCancelledError)
        assert str(never.error) == reason
        assert recorder.states(f"never{i}") == [PENDING, FAILED]
    (halted,) = recorder.of(DispatchHalted)
    assert halted.to_dict() | {"timestamp": None} == {
        "event": "dispatch_halted",
        "timestamp": None,
        "name": None,
        "threshold": "fail",
        "policy": "soon,fail=2",
        "reason": reason,
    }
    json.dumps(halted.to_dict())
    assert no_tasks_left()


async def test_now_also_cancels_the_running() -> None:
    gate, started, slow = gated()
    subplans = [
        Subplan("slow", slow),
        Subplan("a", raising(ValueError("a"))),
        Subplan("b", raising(ValueError("b"))),
        Subplan("never", returning(1)),
    ]
    with pytest.raises(AggregateSubplanError) as caught:
        await dispatcher("now,fail=2").run(subplans)
    assert not started.is_set() or not gate.is_set()
    results = {r.subplan_id: r for r in caught.value.results}
    reason = "cancelled because the fail threshold was reached (halt now,fail=2)"
    assert str(results["slow"].error) == reason
    assert results["slow"].attempts == 1
    assert str(results["never"].error) == reason
    assert results["never"].attempts == 0
    assert [r.subplan_id for r in caught.value.results] == ["slow", "a", "b", "never"]


async def test_now_fail_1_is_exactly_fail_fast() -> None:
    subplans = [Subplan("a", raising(ValueError("boom"))), Subplan("b", returning(1))]
    with pytest.raises(SubplanExecutionError) as caught:
        await dispatcher("now,fail=1", max_parallel=1).run(subplans)
    assert caught.value.subplan_id == "a"
    assert str(caught.value.results[1].error) == "cancelled because subplan 'a' failed"


async def test_below_the_threshold_it_runs_everything() -> None:
    subplans = [
        Subplan(f"s{i}", raising(ValueError()) if i < 2 else returning(i)) for i in range(10)
    ]
    with pytest.raises(AggregateSubplanError) as caught:
        await dispatcher("soon,fail=30%").run(subplans)  # 2 of 10 < 30%
    assert caught.value.message == "2 of 10 subplans failed"
    assert sum(r.state is COMPLETED for r in caught.value.results) == 8


async def test_a_success_threshold_returns_the_results(bus: EventBus, recorder: Recorder) -> None:
    subplans = [
        Subplan("bad", raising(ValueError("x"))),
        *(Subplan(f"s{i}", returning(i)) for i in range(6)),
    ]
    results = await dispatcher("soon,success=3", max_parallel=1, bus=bus).run(subplans)
    assert [r.state for r in results] == [FAILED, COMPLETED, COMPLETED, COMPLETED] + [FAILED] * 3
    reason = "cancelled because the success threshold was reached (halt soon,success=3)"
    assert all(str(r.error) == reason for r in results[4:])
    assert recorder.of(DispatchHalted)[0].threshold == "success"


async def test_success_now_cancels_the_running_and_returns() -> None:
    _gate, _started, slow = gated()
    subplans = [Subplan("slow", slow), *(Subplan(f"s{i}", returning(i)) for i in range(4))]
    results = await dispatcher("now,success=2").run(subplans)
    assert results[0].state is FAILED
    assert isinstance(results[0].error, SubplanCancelledError)
    assert "success threshold was reached" in str(results[0].error)
    assert [r.state for r in results[1:3]] == [COMPLETED, COMPLETED]


async def test_success_then_the_fail_threshold_too_raises() -> None:
    gate, started, slow = gated()

    async def fails_late() -> None:
        await started.wait()
        await gate.wait()
        raise ValueError("late")

    subplans = [Subplan("late", fails_late), Subplan("slow", slow), Subplan("ok", returning(1))]
    subplans.append(Subplan("never", returning(2)))
    task = asyncio.create_task(dispatcher("soon,fail=1,success=1", max_parallel=3).run(subplans))
    await started.wait()
    for _ in range(10):
        await asyncio.sleep(0)
    gate.set()
    with pytest.raises(AggregateSubplanError, match=r"; the fail threshold was reached"):
        await task


async def test_percentages_of_a_lazy_input_count_the_subplans_known_so_far() -> None:
    pulled: list[int] = []

    def source() -> Iterator[Subplan]:
        for i in range(100):
            pulled.append(i)
            yield Subplan(f"s{i:03}", raising(ValueError()) if i == 3 else returning(i))

    with pytest.raises(AggregateSubplanError) as caught:
        await dispatcher("soon,fail=20%", max_parallel=1).run(source())
    # s003 fails as the 4th known: 1 of 4 is 25% >= 20%; the input is not read further.
    assert len(caught.value.results) == 4
    assert len(pulled) == 4


async def test_a_stream_halts_too() -> None:
    subplans = [Subplan(f"s{i}", returning(i)) for i in range(5)]
    seen = []
    async for result in dispatcher("soon,success=2", max_parallel=1).stream(subplans):
        seen.append((result.subplan_id, result.state))
    assert seen[:2] == [("s0", COMPLETED), ("s1", COMPLETED)]
    assert [state for _, state in seen[2:]] == [FAILED] * 3


async def test_a_stream_raises_on_the_fail_threshold() -> None:
    subplans = [Subplan(f"s{i}", raising(ValueError()) if i else returning(0)) for i in range(5)]
    with pytest.raises(AggregateSubplanError, match=r"the fail threshold was reached"):
        async for _ in dispatcher("soon,fail=2", max_parallel=1).stream(subplans):
            pass


async def test_a_group_halted_soon_holds_back_later_submissions() -> None:
    async def submit_after_the_halt() -> None:
        async with dispatcher("soon,fail=1", max_parallel=1).open() as group:
            group.submit(Subplan("bad", raising(ValueError())))
            for _ in range(5):
                await asyncio.sleep(0)
            group.submit(Subplan("late", returning(1)))

    with pytest.raises(AggregateSubplanError) as caught:
        await submit_after_the_halt()
    late = caught.value.results[1]
    assert late.state is FAILED
    assert "fail threshold was reached" in str(late.error)


async def test_an_async_input_halted_soon_is_not_read_further() -> None:
    async def source() -> AsyncIterator[Subplan]:
        for i in range(10):
            yield Subplan(f"s{i}", raising(ValueError()) if i == 0 else returning(i))

    with pytest.raises(AggregateSubplanError) as caught:
        await dispatcher("soon,fail=1", max_parallel=1).run(source())
    assert len(caught.value.results) <= 2
    assert no_tasks_left()


async def test_failures_after_the_fail_threshold_count_no_more() -> None:
    subplans = [Subplan(f"s{i}", raising(ValueError())) for i in range(3)]
    with pytest.raises(AggregateSubplanError) as caught:
        await dispatcher("soon,fail=1", max_parallel=3).run(subplans)
    assert all(r.attempts == 1 for r in caught.value.results)  # all three had started


async def test_a_soon_halt_while_the_feeder_waits_for_a_pool() -> None:
    pool = AsyncSemaphoreLimiter(1)
    gate, started, slow = gated()
    config = ParallelExecutionConfig(max_parallel=3, halt=HaltPolicy("soon", fail=1))
    dispatcher = ParallelSubplanDispatcher(config, pools={"db": pool})
    subplans = [
        Subplan("holder", slow, uses=["db"]),
        Subplan("bad", raising(ValueError())),
        Subplan("waits", returning(1), uses=["db"]),
    ]
    # In input order: "holder" takes "db", "bad" starts, the feeder waits for "db" for
    # "waits"; "bad" fails and the halt cancels the feeder's wait.
    task = asyncio.create_task(dispatcher.run(subplans))
    await started.wait()
    for _ in range(10):
        await asyncio.sleep(0)
    assert pool.waiting == 0  # the halt took "waits" out of the queue
    gate.set()
    with pytest.raises(AggregateSubplanError) as caught:
        await task
    waits = caught.value.results[2]
    assert waits.attempts == 0
    assert "fail threshold was reached" in str(waits.error)
    assert no_tasks_left()


async def test_a_subscriber_interrupting_on_the_halt_stops_the_dispatch() -> None:
    bus = EventBus()

    def interrupt(event: Event) -> None:
        if isinstance(event, DispatchHalted):
            raise KeyboardInterrupt

    bus.subscribe(interrupt)
    subplans = [Subplan("bad", raising(ValueError())), Subplan("never", returning(1))]
    with pytest.raises(KeyboardInterrupt):
        await dispatcher("soon,fail=1", max_parallel=1, bus=bus).run(subplans)


@pytest.mark.parametrize("halt", ["soon,fail=1", "soon,success=1"])
@pytest.mark.parametrize("how", ["run", "stream"])
async def test_a_soon_halt_closes_an_async_input_before_returning(halt: str, how: str) -> None:
    # As a sync input is, and as ``now`` and fail-fast do: its ``finally`` runs before the
    # dispatch returns, not whenever the generator is collected.
    closed: list[bool] = []
    done = raising(ValueError("bad")) if "fail" in halt else returning(1)

    async def source() -> AsyncIterator[Subplan]:
        try:
            for i in range(100):
                yield Subplan(f"s{i}", done)
        finally:
            closed.append(True)

    dispatch = dispatcher(halt, max_parallel=2)
    try:
        if how == "run":
            await dispatch.run(source())
        else:
            async for _ in dispatch.stream(source()):
                pass
    except AggregateSubplanError:
        assert "fail" in halt
    assert closed == [True]
    assert no_tasks_left()


async def test_a_group_halted_soon_says_it_stopped() -> None:
    gate, started, holder = gated()
    reason = "cancelled because the fail threshold was reached (halt soon,fail=1)"
    group = dispatcher("soon,fail=1").open()

    async def block() -> None:
        async with group:
            group.submit(Subplan("holder", holder))
            await started.wait()
            assert (group.stopped, group.stop_reason) == (False, None)
            group.submit(Subplan("bad", raising(ValueError("bad"))))
            for _ in range(5):
                await asyncio.sleep(0)
            assert (group.stopped, group.stop_reason) == (True, reason)
            group.submit(Subplan("late", returning(1)))  # failed at once, without running
            gate.set()

    with pytest.raises(AggregateSubplanError):
        await block()
    results = group.results
    assert [r.state for r in results] == [COMPLETED, FAILED, FAILED]
    assert (results[2].attempts, str(results[2].error)) == (0, reason)
    assert (group.stopped, group.stop_reason) == (True, reason)


# --- percentages while the total is unknown; thresholds with nothing left; the messages ------


def lazy(outcomes: str, pulled: list[str], closed: list[bool]) -> Iterator[Subplan]:
    """A generator of one subplan per letter: ``f`` fails, ``o`` completes."""
    try:
        for i, outcome in enumerate(outcomes):
            subplan_id = f"s{i}"
            pulled.append(subplan_id)
            yield Subplan(subplan_id, raising(ValueError()) if outcome == "f" else returning(i))
    finally:
        closed.append(True)


async def test_a_lazy_input_s_percentage_waits_for_three_ends(
    bus: EventBus, recorder: Recorder
) -> None:
    # Regression: success=50% stopped after the first subplan (1 of 1 is 100%) and never
    # read the rest. As GNU parallel's minimum of 3 jobs: judged once 3 have ended.
    pulled: list[str] = []
    closed: list[bool] = []
    run = dispatcher("soon,success=50%", max_parallel=1, bus=bus).run
    results = await run(lazy("o" * 10, pulled, closed))
    assert [r.state for r in results] == [COMPLETED] * 3
    assert pulled == ["s0", "s1", "s2"]  # not read further: the 7 others were never known
    assert closed == [True]
    (halted,) = recorder.of(DispatchHalted)
    assert halted.threshold == "success"


async def test_a_fail_percentage_left_unjudged_is_judged_on_the_next_end(
    bus: EventBus, recorder: Recorder
) -> None:
    # Two failures of an unknown total are not judged; the third end (a success) judges
    # them: 2 of 3 is 67% >= 50%.
    pulled: list[str] = []
    run = dispatcher("soon,fail=50%", max_parallel=1, bus=bus).run
    with pytest.raises(AggregateSubplanError) as caught:
        await run(lazy("ffoooo", pulled, []))
    assert [r.state for r in caught.value.results] == [FAILED, FAILED, COMPLETED]
    assert pulled == ["s0", "s1", "s2"]
    assert caught.value.message == (
        "2 of 3 subplans failed; the fail threshold was reached (halt soon,fail=50%)"
    )
    assert [h.threshold for h in recorder.of(DispatchHalted)] == ["fail"]


async def test_a_lazy_input_shorter_than_the_minimum_runs_whole(
    bus: EventBus, recorder: Recorder
) -> None:
    pulled: list[str] = []
    results = await dispatcher("now,success=50%", max_parallel=1, bus=bus).run(
        lazy("oo", pulled, [])
    )
    assert [r.state for r in results] == [COMPLETED, COMPLETED]
    assert recorder.of(DispatchHalted) == []  # reached only when nothing was left


async def test_a_known_total_judges_a_percentage_at_once(bus: EventBus, recorder: Recorder) -> None:
    subplans = [Subplan(f"s{i}", returning(i)) for i in range(2)]
    results = await dispatcher("soon,success=50%", max_parallel=1, bus=bus).run(subplans)
    assert [r.state for r in results] == [COMPLETED, FAILED]  # 1 of 2 is 50%
    assert recorder.of(DispatchHalted)[0].threshold == "success"


async def test_a_group_s_percentage_waits_for_three_ends(bus: EventBus, recorder: Recorder) -> None:
    group = dispatcher("soon,fail=50%", max_parallel=1, bus=bus).open()

    async def submit_one_by_one() -> None:
        async with group:
            for i, outcome in enumerate("fofoo"):
                done = raising(ValueError()) if outcome == "f" else returning(i)
                group.submit(Subplan(f"s{i}", done))
                for _ in range(5):
                    await asyncio.sleep(0)

    with pytest.raises(AggregateSubplanError):
        await submit_one_by_one()
    # 1 of 1, then 1 of 2 ended unjudged; 2 of 3 halts; what comes later is held back.
    assert [r.state for r in group.results] == [FAILED, COMPLETED, FAILED, FAILED, FAILED]
    assert [r.attempts for r in group.results] == [1, 1, 1, 0, 0]
    assert len(recorder.of(DispatchHalted)) == 1


@pytest.mark.parametrize("halt", ["now,success=1", "soon,success=1"])
async def test_a_threshold_reached_by_the_last_subplan_is_no_halt(
    bus: EventBus, recorder: Recorder, halt: str
) -> None:
    # Regression: a step of one subplan was reported halted though nothing was stopped.
    results = await dispatcher(halt, bus=bus).run([Subplan("only", returning(1))])
    assert [r.state for r in results] == [COMPLETED]
    assert recorder.of(DispatchHalted) == []


async def test_a_fail_threshold_reached_by_the_last_subplan_is_no_halt(
    bus: EventBus, recorder: Recorder
) -> None:
    subplans = [Subplan("ok", returning(1)), Subplan("bad", raising(ValueError()))]
    with pytest.raises(AggregateSubplanError) as caught:
        await dispatcher("now,fail=1,success=5", max_parallel=1, bus=bus).run(subplans)
    assert recorder.of(DispatchHalted) == []
    assert caught.value.message == (
        "1 of 2 subplans failed; the fail threshold was reached (halt now,fail=1,success=5)"
    )


async def test_a_success_threshold_reached_last_still_returns() -> None:
    subplans = [Subplan("bad", raising(ValueError())), Subplan("ok", returning(1))]
    results = await dispatcher("soon,success=1", max_parallel=1).run(subplans)
    assert [r.state for r in results] == [FAILED, COMPLETED]  # as when it halts: returned


async def test_a_now_halt_counts_what_it_cancelled_apart() -> None:
    gate, _started, slow = gated()
    subplans = [
        Subplan("slow", slow),
        Subplan("bad", raising(ValueError())),
        *(Subplan(f"never{i}", returning(i)) for i in range(3)),
    ]
    with pytest.raises(AggregateSubplanError) as caught:
        await dispatcher("now,fail=1,success=9").run(subplans)
    assert caught.value.message == (
        "1 of 5 subplans failed, 4 cancelled; the fail threshold was reached "
        "(halt now,fail=1,success=9)"
    )
    assert len(caught.value.exceptions) == 5  # every failed result, as before
    assert not gate.is_set()


def test_check_success_halt_raises_for_what_failed_by_itself() -> None:
    policy = HaltPolicy("soon", success=1)
    reason = halt_reason("success", policy)
    bad = SubplanResult("bad", FAILED, error=ValueError("x"))
    ok = SubplanResult("ok", COMPLETED, value=1)
    held = [SubplanResult(f"h{i}", FAILED, error=SubplanCancelledError(reason)) for i in range(3)]
    abandoned = SubplanResult(
        "stuck", FAILED, error=SubplanCancelledError(f"{reason}; still running 5s", abandoned=True)
    )
    own = SubplanResult("own", FAILED, error=SubplanCancelledError("the subplan raised it"))
    check_success_halt([ok, *held, abandoned], policy)  # the halt's cancellations only
    check_success_halt([bad], None)
    check_success_halt([bad], HaltPolicy("soon", fail=2))
    with pytest.raises(AggregateSubplanError) as caught:
        check_success_halt([bad, ok, own, *held, abandoned], policy)
    assert caught.value.message == (
        "2 of 7 subplans failed, 4 cancelled; the success threshold was reached "
        "(halt soon,success=1)"
    )
    failures = caught.value.exceptions
    assert [e.subplan_id for e in failures if isinstance(e, SubplanExecutionError)] == [
        "bad",
        "own",
    ]
    assert len(failures) == 2
    assert len(caught.value.results) == 7


async def test_a_fail_percentage_judged_below_its_threshold_runs_everything(
    bus: EventBus, recorder: Recorder
) -> None:
    pulled: list[str] = []
    with pytest.raises(AggregateSubplanError) as caught:
        await dispatcher("soon,fail=50%", max_parallel=1, bus=bus).run(lazy("fooooof", pulled, []))
    # 1 of 3 < 50% once judged; the last failure is judged as it comes: 2 of 7.
    assert len(pulled) == 7
    assert caught.value.message == "2 of 7 subplans failed"
    assert recorder.of(DispatchHalted) == []
