"""The dispatcher's semantics, one test (or more) per numbered rule of the specification."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from subplans import (
    AggregateSubplanError,
    ConfigError,
    DispatchError,
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
    SubplanRetrying,
    SubplanStateChanged,
)
from subplans.engine.duplicates import SET_UP_TO as _SET_UP_TO
from subplans.engine.duplicates import has_duplicates as _has_duplicates

from .conftest import Recorder, no_tasks_left, raising, returning, waiting

PENDING, RUNNING, COMPLETED, FAILED = SubplanExecutionState
CONTINUE = FailureMode.CONTINUE_ON_ERROR


def dispatcher(
    bus: EventBus | None = None,
    *,
    max_parallel: int = 4,
    mode: str = "fail_fast",
    grace: float = 5.0,
) -> ParallelSubplanDispatcher:
    config = ParallelExecutionConfig(
        max_parallel=max_parallel, failure_mode=FailureMode(mode), cancel_grace=grace
    )
    return ParallelSubplanDispatcher(config, bus=bus)


async def settle(predicate: Callable[[], bool], ticks: int = 50) -> None:
    """Let the loop run until ``predicate`` holds (a bounded number of zero-sleeps)."""
    for _ in range(ticks):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the expected interleaving was not reached")


# Rule 1: the cap, work conservation, input order, bounded tasks.


async def test_cap_order_and_work_conservation(bus: EventBus, recorder: Recorder) -> None:
    gates = [asyncio.Event() for _ in range(6)]
    started: list[int] = []

    def body(i: int) -> Callable[[], asyncio.Future[None]]:
        async def run() -> int:
            started.append(i)
            await gates[i].wait()
            return i

        return run  # type: ignore[return-value]

    run = asyncio.create_task(
        dispatcher(bus, max_parallel=3).run(Subplan(f"s{i}", body(i)) for i in range(6))
    )
    await settle(lambda: len(started) == 3)
    for _ in range(5):
        await asyncio.sleep(0)
    assert started == [0, 1, 2]  # never more than the cap
    gates[1].set()
    await settle(lambda: len(started) == 4)  # the freed slot is used at once
    assert started == [0, 1, 2, 3]
    for gate in gates:
        gate.set()
    results = await run
    assert [r.value for r in results] == list(range(6))
    assert started == list(range(6))
    assert recorder.peak_running == 3
    running_order = [e.subplan_id for e in recorder.of(SubplanStateChanged) if e.state is RUNNING]
    assert running_order == [f"s{i}" for i in range(6)]
    assert no_tasks_left()


async def test_tasks_are_bounded_by_the_cap() -> None:
    most = 0

    async def run() -> None:
        nonlocal most
        most = max(most, len(asyncio.all_tasks()))
        await asyncio.sleep(0)

    await dispatcher(max_parallel=8).run(Subplan(f"s{i}", run) for i in range(5000))
    # the subplans, the feeder and this test's own task: never one task per subplan
    assert most <= 8 + 2


async def test_results_carry_timings_and_attempts() -> None:
    (result,) = await dispatcher().run([Subplan("a", returning(7))])
    assert result.subplan_id == "a"
    assert result.state is COMPLETED
    assert result.value == 7
    assert result.error is None
    assert result.attempts == 1
    assert result.started_at is not None
    assert result.finished_at is not None
    assert result.started_at.tzinfo is not None
    assert result.started_at <= result.finished_at
    assert result.duration is not None
    assert result.duration >= 0


# Rule 2: event order.


async def test_running_is_published_before_the_code_starts(
    bus: EventBus, recorder: Recorder
) -> None:
    seen: list[list[SubplanExecutionState]] = []

    async def run() -> None:
        seen.append(recorder.states("a"))

    await dispatcher(bus).run([Subplan("a", run)])
    assert seen == [[PENDING, RUNNING]]
    assert recorder.states("a") == [PENDING, RUNNING, COMPLETED]


async def test_dispatch_start_and_end_events(bus: EventBus, recorder: Recorder) -> None:
    config = ParallelExecutionConfig(max_parallel=2)
    await ParallelSubplanDispatcher(config, bus=bus).run(
        [Subplan("a", returning(1)), Subplan("b", returning(2))], name="step"
    )
    first, last = recorder.events[0], recorder.events[-1]
    assert isinstance(first, DispatchStarted)
    assert (first.name, first.total, first.config) == ("step", 2, config)
    assert isinstance(last, DispatchFinished)
    assert last.counts == {PENDING: 0, RUNNING: 0, COMPLETED: 2, FAILED: 0}
    assert last.elapsed >= 0
    assert first.to_dict()["config"] == config.to_dict()
    assert last.to_dict()["counts"] == {"pending": 0, "running": 0, "completed": 2, "failed": 0}


# Rule 3: fail-fast.


async def test_fail_fast_cancels_running_and_fails_pending(
    bus: EventBus, recorder: Recorder
) -> None:
    cleaned = asyncio.Event()
    a_started = asyncio.Event()

    async def slow_cleanup() -> None:
        a_started.set()
        try:
            await asyncio.Event().wait()
        finally:
            for _ in range(3):  # cleanup that itself awaits
                await asyncio.sleep(0)
            cleaned.set()

    async def fails_after_a_started() -> None:
        await a_started.wait()
        raise ValueError("b broke")

    boom = ValueError("b broke")
    subplans = [
        Subplan("a", slow_cleanup),
        Subplan("b", fails_after_a_started),
        Subplan("c", returning(3)),
    ]
    with pytest.raises(
        SubplanExecutionError, match=r"^subplan 'b' failed: ValueError: b broke$"
    ) as caught:
        await dispatcher(bus, max_parallel=2).run(subplans)
    assert cleaned.is_set()  # run() waited for the cancelled subplan's cleanup
    error = caught.value
    assert error.subplan_id == "b"
    assert isinstance(error.__cause__, ValueError)
    assert str(error.__cause__) == str(boom)
    a, b, c = error.results
    assert (a.state, b.state, c.state) == (FAILED, FAILED, FAILED)
    assert isinstance(a.error, SubplanCancelledError)
    assert str(a.error) == "cancelled because subplan 'b' failed"
    assert a.started_at is not None
    assert isinstance(c.error, SubplanCancelledError)
    assert c.started_at is None  # never started
    assert c.attempts == 0
    assert recorder.states("c") == [PENDING, FAILED]
    assert recorder.states("a") == [PENDING, RUNNING, FAILED]
    assert no_tasks_left()


async def test_fail_fast_abandons_a_subplan_that_ignores_cancellation(
    bus: EventBus, recorder: Recorder
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def stubborn() -> str:
        started.set()
        while True:
            try:
                await release.wait()
                return "finally done"
            except asyncio.CancelledError:
                continue  # swallows every cancellation

    async def fails() -> None:
        await started.wait()
        raise RuntimeError("x")

    with pytest.raises(SubplanExecutionError) as caught:
        await dispatcher(bus, max_parallel=2, grace=0.02).run(
            [Subplan("stubborn", stubborn), Subplan("fails", fails)]
        )
    stuck = caught.value.results[0]
    assert stuck.state is FAILED
    assert isinstance(stuck.error, SubplanCancelledError)
    assert stuck.error.abandoned
    assert "abandoned" in str(stuck.error)
    release.set()
    await settle(no_tasks_left)
    # the late finish changes nothing: one terminal event only
    assert recorder.states("stubborn") == [PENDING, RUNNING, FAILED]


async def test_a_subplan_that_swallows_cancellation_and_returns_completed() -> None:
    started = asyncio.Event()

    async def shrugs() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "finished anyway"
        return "unreachable"

    async def fails() -> None:
        await started.wait()
        raise RuntimeError("x")

    with pytest.raises(SubplanExecutionError) as caught:
        await dispatcher(max_parallel=2).run([Subplan("a", shrugs), Subplan("b", fails)])
    assert caught.value.results[0].state is COMPLETED
    assert caught.value.results[0].value == "finished anyway"


# Rule 4: continue-on-error.


async def test_continue_on_error_runs_everything_and_aggregates(
    bus: EventBus, recorder: Recorder
) -> None:
    subplans = [
        Subplan("a", raising(KeyError("k"))),
        Subplan("b", returning(2)),
        Subplan("c", raising(OSError("disk"))),
        Subplan("d", returning(4)),
    ]
    with pytest.raises(AggregateSubplanError, match=r"^2 of 4 subplans failed") as caught:
        await dispatcher(bus, max_parallel=2, mode="continue_on_error").run(subplans)
    group = caught.value
    assert isinstance(group, ExceptionGroup)
    assert [e.subplan_id for e in group.exceptions] == ["a", "c"]  # type: ignore[union-attr]
    assert [type(e.__cause__) for e in group.exceptions] == [KeyError, OSError]
    assert [r.state for r in group.results] == [FAILED, COMPLETED, FAILED, COMPLETED]
    assert [r.value for r in group.results] == [None, 2, None, 4]


async def test_aggregate_works_with_except_star() -> None:
    subplans = [Subplan("a", raising(KeyError("k"))), Subplan("b", raising(OSError("o")))]
    groups: list[BaseExceptionGroup[SubplanExecutionError]] = []
    try:
        await dispatcher(mode="continue_on_error").run(subplans)
    except* SubplanExecutionError as caught_group:
        groups.append(caught_group)
    (only,) = groups
    assert isinstance(only, AggregateSubplanError)
    assert len(only.results) == 2
    caught = only.exceptions
    assert [e.subplan_id for e in caught] == ["a", "b"]  # type: ignore[union-attr]


async def test_continue_on_error_all_good_returns() -> None:
    results = await dispatcher(mode="continue_on_error").run(
        [Subplan(f"s{i}", returning(i)) for i in range(5)]
    )
    assert [r.value for r in results] == list(range(5))


# Rule 5: timeouts.


async def test_timeout_fails_with_timeout_error() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    with pytest.raises(AggregateSubplanError) as caught:
        await dispatcher(mode="continue_on_error").run(
            [Subplan("slow", forever, timeout=0.01), Subplan("ok", returning(1))]
        )
    slow, ok = caught.value.results
    assert isinstance(slow.error, TimeoutError)
    assert ok.state is COMPLETED


async def test_timeout_triggers_fail_fast() -> None:
    gate = asyncio.Event()
    with pytest.raises(SubplanExecutionError) as caught:
        await dispatcher(max_parallel=2).run(
            [Subplan("slow", waiting(asyncio.Event()), timeout=0.01), Subplan("b", waiting(gate))]
        )
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert isinstance(caught.value.results[1].error, SubplanCancelledError)


# Retries.


async def test_retries_then_success(bus: EventBus, recorder: Recorder) -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError(f"try {calls}")
        return "ok"

    (result,) = await dispatcher(bus).run([Subplan("f", flaky, retries=3, retry_delay=0)])
    assert (result.state, result.value, result.attempts) == (COMPLETED, "ok", 3)
    retries = recorder.of(SubplanRetrying)
    assert [(r.attempt, str(r.error)) for r in retries] == [(1, "try 1"), (2, "try 2")]
    assert recorder.states("f") == [PENDING, RUNNING, COMPLETED]
    assert recorder.of(SubplanStateChanged)[-1].attempt == 3


async def test_retries_exhausted_and_backoff_doubles(bus: EventBus, recorder: Recorder) -> None:
    with pytest.raises(AggregateSubplanError) as caught:
        await dispatcher(bus, mode="continue_on_error").run(
            [Subplan("g", raising(ValueError("no")), retries=2, retry_delay=0.001)]
        )
    (failed,) = caught.value.results
    assert failed.attempts == 3
    assert [r.delay for r in recorder.of(SubplanRetrying)] == [0.001, 0.002]


async def test_timeout_is_per_attempt_and_retried() -> None:
    calls = 0

    async def slow_then_fast() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()
        return "second"

    (result,) = await dispatcher().run(
        [Subplan("s", slow_then_fast, timeout=0.01, retries=1, retry_delay=0)]
    )
    assert (result.value, result.attempts) == ("second", 2)


async def test_no_retry_after_cancellation() -> None:
    calls = 0
    started = asyncio.Event()

    async def counted() -> None:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.Event().wait()

    async def fails() -> None:
        await started.wait()
        raise RuntimeError("x")

    with pytest.raises(SubplanExecutionError):
        await dispatcher(max_parallel=2).run(
            [Subplan("a", counted, retries=5, retry_delay=0), Subplan("b", fails)]
        )
    assert calls == 1


# Rule 6: the caller is cancelled.


async def test_cancelling_the_caller_stops_everything(bus: EventBus, recorder: Recorder) -> None:
    started = asyncio.Event()
    cleaned: list[str] = []

    def body(name: str) -> Callable[[], asyncio.Future[None]]:
        async def run() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                cleaned.append(name)

        return run  # type: ignore[return-value]

    run = asyncio.create_task(
        dispatcher(bus, max_parallel=2).run([Subplan(f"s{i}", body(f"s{i}")) for i in range(4)])
    )
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert sorted(cleaned) == ["s0", "s1"]
    assert recorder.states("s0") == [PENDING, RUNNING, FAILED]
    assert recorder.states("s3") == [PENDING, FAILED]
    finished = recorder.of(DispatchFinished)[0]
    assert finished.counts[FAILED] == 4
    errors = [e.error for e in recorder.of(SubplanStateChanged) if e.state is FAILED]
    assert all(isinstance(e, SubplanCancelledError) for e in errors)
    assert str(errors[0]) == "the dispatch was cancelled"
    assert no_tasks_left()


async def test_a_subplan_raising_cancelled_error_itself_is_a_failure() -> None:
    async def raises_cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(SubplanExecutionError) as caught:
        await dispatcher().run([Subplan("a", raises_cancelled)])
    assert isinstance(caught.value.__cause__, SubplanCancelledError)
    assert str(caught.value.__cause__) == "the subplan raised CancelledError"


# Rule 7: robustness.


async def test_a_raising_subscriber_never_breaks_a_dispatch(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    def bad(event: object) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(bad)
    recorder = Recorder(bus)
    results = await dispatcher(bus).run([Subplan("a", returning(1))])
    assert results[0].state is COMPLETED
    assert bus.subscriber_errors == len(recorder.events)
    assert "event subscriber" in caplog.text
    assert "subscriber errors" in repr(bus)


async def test_unsubscribe(bus: EventBus) -> None:
    seen: list[object] = []
    unsubscribe = bus.subscribe(seen.append)
    await dispatcher(bus).run([Subplan("a", returning(1))])
    count = len(seen)
    unsubscribe()
    unsubscribe()  # idempotent
    await dispatcher(bus).run([Subplan("b", returning(1))])
    assert len(seen) == count
    assert not bus.has_subscribers


async def test_duplicate_ids_are_rejected_before_anything_runs(
    bus: EventBus, recorder: Recorder
) -> None:
    ran: list[str] = []

    async def run() -> None:
        ran.append("x")

    with pytest.raises(SubplanError, match=r"^duplicate subplan id 'a'$"):
        await dispatcher(bus).run([Subplan("a", run), Subplan("b", run), Subplan("a", run)])
    assert ran == []
    assert recorder.events == []


async def test_duplicate_ids_in_a_large_dispatch_are_found_by_sorting(
    bus: EventBus, recorder: Recorder
) -> None:
    """Past ``_SET_UP_TO`` subplans the ids are sorted rather than hashed (memory): the same
    refusal, before anything runs, for ids in order and out of order alike."""
    ran: list[str] = []

    async def run() -> None:
        ran.append("x")

    many = _SET_UP_TO + 1
    ids = [f"s{index}" for index in range(many)]
    assert not _has_duplicates([Subplan(id, run) for id in ids])
    ids[-1] = "s7"  # far from the other "s7", on both sides of the sort
    with pytest.raises(SubplanError, match=r"^duplicate subplan id 's7'$"):
        await dispatcher(bus).run([Subplan(id, run) for id in reversed(ids)])
    assert ran == []
    assert recorder.events == []


async def test_empty_list() -> None:
    assert await dispatcher().run([]) == []


# Rule 8: the sequential path.


@pytest.mark.parametrize("mode", ["fail_fast", "continue_on_error"])
async def test_max_parallel_one_is_strictly_sequential(
    bus: EventBus, recorder: Recorder, mode: str
) -> None:
    log: list[str] = []

    def body(i: int, fail: bool) -> Callable[[], asyncio.Future[None]]:
        async def run() -> None:
            log.append(f"start {i}")
            await asyncio.sleep(0)
            log.append(f"end {i}")
            if fail:
                raise RuntimeError(str(i))

        return run  # type: ignore[return-value]

    subplans = [Subplan(f"s{i}", body(i, i == 2)) for i in range(4)]
    with pytest.raises(SubplanError):
        await dispatcher(bus, max_parallel=1, mode=mode).run(subplans)
    expected = [x for i in range(3) for x in (f"start {i}", f"end {i}")]
    if mode == "continue_on_error":
        expected += ["start 3", "end 3"]
    assert log == expected
    assert recorder.peak_running == 1


# Subplan validation.


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, r"^a: timeout must be > 0, got 0$"),
        (
            {"timeout": "1"},
            r"^a: timeout must be a number of seconds > 0 or None, got '1' \(str\)$",
        ),
        ({"retries": -1}, r"^a: retries must be an integer >= 0, got -1 \(int\)$"),
        ({"retries": True}, r"^a: retries must be an integer >= 0, got True \(bool\)$"),
        ({"retry_delay": -0.5}, r"^a: retry_delay must be >= 0, got -0.5$"),
    ],
)
def test_subplan_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Subplan("a", returning(1), **kwargs)  # type: ignore[arg-type]


def test_subplan_needs_an_id_and_a_callable() -> None:
    with pytest.raises(ConfigError, match=r"^subplan id must be a non-empty string, got ''$"):
        Subplan("", returning(1))
    with pytest.raises(ConfigError, match=r"HINT: pass the function itself"):
        Subplan("a", returning(1)())  # type: ignore[arg-type]


def test_repr() -> None:
    assert repr(dispatcher(max_parallel=3)) == (
        "<ParallelSubplanDispatcher max_parallel=3 failure_mode=fail_fast dispatches=0>"
    )


async def test_a_dispatcher_is_reusable() -> None:
    d = dispatcher(mode=CONTINUE)
    await d.run([Subplan("a", returning(1))])
    await d.run([Subplan("a", returning(1))])
    assert "dispatches=2" in repr(d)


async def test_a_subplan_cancelled_from_outside_the_engine_is_a_failure() -> None:
    async def cancels_itself() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)

    with pytest.raises(SubplanExecutionError) as caught:
        await dispatcher().run([Subplan("a", cancels_itself), Subplan("b", returning(1))])
    assert str(caught.value.__cause__) == "the subplan raised CancelledError"
    assert no_tasks_left()


async def test_never_started_results_have_no_duration() -> None:
    with pytest.raises(SubplanExecutionError) as caught:
        await dispatcher(max_parallel=1).run(
            [Subplan("a", raising(ValueError("x"))), Subplan("b", returning(1))]
        )
    assert caught.value.results[1].duration is None
    assert caught.value.results[1].started_at is None
    assert caught.value.results[1].finished_at is not None


async def test_a_shared_budget_caps_two_dispatchers_together() -> None:
    from subplans import AsyncSemaphoreLimiter

    budget = AsyncSemaphoreLimiter(2)
    active = peak = 0

    async def work() -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        for _ in range(3):
            await asyncio.sleep(0)
        active -= 1

    first = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=4), budget=budget)
    second = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=4), budget=budget)
    free = Subplan("free", returning(0), uses_budget=False)
    await asyncio.gather(
        first.run([Subplan(f"a{i}", work) for i in range(6)]),
        second.run([free, *(Subplan(f"b{i}", work) for i in range(6))]),
    )
    assert peak == 2
    assert budget.peak == 2
    assert budget.in_use == 0


async def test_fail_fast_while_waiting_for_the_budget_gives_the_slot_back() -> None:
    from subplans import AsyncSemaphoreLimiter

    budget = AsyncSemaphoreLimiter(1)
    await budget.acquire()  # someone else holds the whole budget
    d = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=2), budget=budget)
    with pytest.raises(SubplanExecutionError):
        await d.run(
            [
                Subplan("nested", raising(ValueError("x")), uses_budget=False),
                Subplan("leaf", returning(1)),
            ]
        )
    assert budget.in_use == 1
    assert budget.waiting == 0
    budget.release()


async def test_cancelling_the_caller_after_a_failure_stops_once() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_cleanup() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()

    async def fails() -> None:
        await started.wait()
        raise RuntimeError("x")

    task = asyncio.create_task(
        dispatcher(max_parallel=2).run([Subplan("a", slow_cleanup), Subplan("b", fails)])
    )
    await settle(lambda: started.is_set())
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()  # the caller gives up while the fail-fast drain is under way
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert no_tasks_left()


async def test_the_cancellers_message_is_the_reason(bus: EventBus, recorder: Recorder) -> None:
    started = asyncio.Event()
    run = asyncio.create_task(
        dispatcher(bus, max_parallel=1).run(
            [Subplan("a", waiting(asyncio.Event(), started)), Subplan("b", returning(1))]
        )
    )
    await started.wait()
    run.cancel("interrupted by SIGINT")
    with pytest.raises(asyncio.CancelledError):
        await run
    errors = [e.error for e in recorder.of(SubplanStateChanged) if e.state is FAILED]
    assert [str(e) for e in errors] == ["interrupted by SIGINT", "interrupted by SIGINT"]


# Regressions found in review.


async def test_a_subplan_cancelled_before_its_first_step_is_not_abandoned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Pins: a failure without an await cancelled siblings before they ran; they were reported
    abandoned and their budget slots leaked."""
    from subplans import AsyncSemaphoreLimiter

    async def boom() -> None:
        raise RuntimeError("boom")

    budget = AsyncSemaphoreLimiter(4)
    d = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=2), budget=budget)
    with pytest.raises(SubplanExecutionError) as caught:
        await d.run([Subplan("a", boom), Subplan("b", waiting(asyncio.Event()))])
    b = caught.value.results[1]
    assert isinstance(b.error, SubplanCancelledError)
    assert not b.error.abandoned
    assert str(b.error) == "cancelled because subplan 'a' failed"
    assert budget.in_use == 0
    assert "abandoning" not in caplog.text
    assert no_tasks_left()


async def test_cancelling_the_caller_at_once_releases_everything() -> None:
    from subplans import AsyncSemaphoreLimiter

    budget = AsyncSemaphoreLimiter(8)
    d = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=2), budget=budget)
    task = asyncio.create_task(d.run([Subplan(x, waiting(asyncio.Event())) for x in "abc"]))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    task.cancel("interrupted by SIGINT")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.in_use == 0
    assert no_tasks_left()


async def test_a_base_exception_fails_the_subplan() -> None:
    """Pins: a BaseException that is not an Exception left the subplan RUNNING forever."""

    class Abort(BaseException):
        pass

    async def aborts() -> None:
        raise Abort("custom")

    with pytest.raises(AggregateSubplanError) as caught:
        await dispatcher(mode="continue_on_error").run(
            [Subplan("a", aborts), Subplan("b", returning(1))]
        )
    a, b = caught.value.results
    assert isinstance(a.error, Abort)
    assert (a.state, b.state) == (FAILED, COMPLETED)


async def test_sys_exit_fails_only_that_subplan(bus: EventBus, recorder: Recorder) -> None:
    async def exits() -> None:
        raise SystemExit(3)

    with pytest.raises(AggregateSubplanError) as caught:
        await dispatcher(bus, mode="continue_on_error").run(
            [Subplan("a", exits), Subplan("b", returning(1))]
        )
    assert isinstance(caught.value.results[0].error, SystemExit)
    assert recorder.states("a") == [PENDING, RUNNING, FAILED]
    assert recorder.states("b") == [PENDING, RUNNING, COMPLETED]


async def test_an_abandoned_attempt_is_never_retried() -> None:
    """Pins: a timed-out thread was retried beside its still-running first attempt."""
    calls = 0

    async def abandoned() -> None:
        nonlocal calls
        calls += 1
        raise SubplanCancelledError("left running", abandoned=True)

    with pytest.raises(SubplanExecutionError):
        await dispatcher().run([Subplan("a", abandoned, retries=3, retry_delay=0)])
    assert calls == 1


async def test_a_timeout_says_how_long() -> None:
    with pytest.raises(SubplanExecutionError) as caught:
        await dispatcher().run([Subplan("slow", waiting(asyncio.Event()), timeout=0.01)])
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert str(caught.value.__cause__) == "timed out after 0.01s"


@pytest.mark.parametrize("mode", ["fail_fast", "continue_on_error"])
async def test_a_failed_dispatch_is_a_dispatch_error_with_every_result(mode: str) -> None:
    """``except DispatchError`` catches a failed dispatch in either mode (issue #9)."""
    with pytest.raises(DispatchError) as caught:
        await dispatcher(max_parallel=1, mode=mode).run(
            [Subplan("a", returning(1)), Subplan("b", raising(OSError("b")))]
        )
    expected = SubplanExecutionError if mode == "fail_fast" else AggregateSubplanError
    assert type(caught.value) is expected
    assert [(r.subplan_id, r.state) for r in caught.value.results] == [
        ("a", COMPLETED),
        ("b", FAILED),
    ]
