"""A slot's task runs the next subplan of its slot only when nothing but the engine could tell
it from a new task (issue #10): every scenario here runs twice, with reuse and without (the
private ``CHAIN`` switch at 0), and what the subplans, their subscribers and their callers see
must be the same. A task is named by ``get_name()``, which holds no reference to it."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable
from contextvars import ContextVar
from typing import Any

import pytest

from subplans import (
    AggregateSubplanError,
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
from subplans.engine import dispatch

from .conftest import Recorder, no_tasks_left

PENDING, RUNNING, COMPLETED, FAILED = SubplanExecutionState

var: ContextVar[Any] = ContextVar("test_task_reuse", default="unset")

Scenario = Callable[[], Awaitable[Any]]


async def both(monkeypatch: pytest.MonkeyPatch, scenario: Scenario) -> tuple[Any, Any]:
    """What ``scenario`` returns with task reuse, and without."""
    reused = await scenario()
    with monkeypatch.context() as patch:
        patch.setattr(dispatch, "CHAIN", 0)
        fresh = await scenario()
    return reused, fresh


class Names:
    """The task each subplan ran in, by name (no reference kept)."""

    def __init__(self) -> None:
        self.of: dict[str, str] = {}

    def seen(self, subplan_id: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.of[subplan_id] = task.get_name()

    def noop(self, subplan_id: str) -> Subplan:
        async def run() -> None:
            self.seen(subplan_id)
            await asyncio.sleep(0)

        return Subplan(subplan_id, run)

    def distinct(self) -> int:
        return len(set(self.of.values()))


async def run(
    subplans: Iterable[Subplan] | AsyncIterator[Subplan], max_parallel: int = 1, **kw: Any
) -> list[Any]:
    config = ParallelExecutionConfig(max_parallel=max_parallel, **kw)
    return await ParallelSubplanDispatcher(config).run(subplans)


def generator(subplans: list[Subplan]) -> Generator[Subplan, None, None]:
    yield from subplans


INPUTS = [pytest.param(list, id="list"), pytest.param(generator, id="generator")]


@pytest.mark.parametrize("made", INPUTS)
async def test_subplans_that_keep_nothing_share_their_slots_tasks(made: Any) -> None:
    names = Names()
    results = await run(made([names.noop(f"s{i}") for i in range(10)]), 2)

    assert [r.state for r in results] == [COMPLETED] * 10
    assert names.distinct() == 2  # one task a slot
    assert no_tasks_left()


async def test_without_the_switch_every_subplan_has_a_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "CHAIN", 0)
    names = Names()
    await run([names.noop(f"s{i}") for i in range(10)], 2)
    assert names.distinct() == 10


async def test_a_chain_of_subplans_in_one_task_is_bounded() -> None:
    names = Names()
    await run([names.noop(f"s{i}") for i in range(3 * (dispatch.CHAIN + 1) + 5)])

    runs: dict[str, int] = {}
    for name in names.of.values():
        runs[name] = runs.get(name, 0) + 1
    assert sorted(runs.values()) == [5, dispatch.CHAIN + 1, dispatch.CHAIN + 1, dispatch.CHAIN + 1]


# 1. A reference an earlier subplan kept to its task never acts on a later subplan.


async def test_a_kept_cancel_of_an_earlier_subplans_task_never_cancels_a_later_one() -> None:
    """A watchdog's ``call_later(t, task.cancel)`` never disarmed: when it fires, the task it
    was armed for has ended; the subplan running then is not touched."""
    loop = asyncio.get_running_loop()
    kept: list[Callable[..., bool]] = []
    timers: list[asyncio.TimerHandle] = []
    later_started = asyncio.Event()
    fired = asyncio.Event()
    names = Names()

    async def arming() -> None:
        names.seen("arming")
        task = asyncio.current_task()
        assert task is not None
        kept.append(task.cancel)
        timers.append(loop.call_later(3600, task.cancel))

    async def later() -> str:
        names.seen("later")
        later_started.set()
        await fired.wait()
        return "ran to its end"

    async def watchdog() -> bool:
        await later_started.wait()
        cancelled = kept[0]()  # what the timer does when it fires
        fired.set()
        return cancelled

    dispatched = asyncio.create_task(run([Subplan("arming", arming), Subplan("later", later)]))
    cancelled = await watchdog()
    results = await dispatched
    timers[0].cancel()

    assert cancelled is False  # its task had ended
    assert [(r.state, r.value) for r in results] == [
        (COMPLETED, None),
        (COMPLETED, "ran to its end"),
    ]
    assert names.of["arming"] != names.of["later"]


@pytest.mark.parametrize("storage", [dict, weakref.WeakKeyDictionary], ids=["dict", "weak"])
async def test_storage_keyed_by_the_task_is_never_seen_by_a_later_subplan(storage: Any) -> None:
    by_task = storage()
    seen: list[Any] = []

    async def storing() -> None:
        by_task[asyncio.current_task()] = "the first subplan's"

    async def looking() -> None:
        seen.append(by_task.get(asyncio.current_task()))

    await run([Subplan("storing", storing), Subplan("looking", looking)])
    assert seen == [None]


async def test_a_name_set_by_a_subplan_is_never_a_later_subplans() -> None:
    names = Names()

    async def naming() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.set_name("named by a subplan")

    await run([names.noop("a"), Subplan("naming", naming), names.noop("b")])
    assert names.of["b"] != "named by a subplan"
    assert names.of["a"] != names.of["b"]


async def test_a_done_callback_runs_as_its_own_subplans_task_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> list[str]:
        order: list[str] = []

        async def adding() -> None:
            task = asyncio.current_task()
            assert task is not None
            task.add_done_callback(lambda _: order.append("done callback"))

        async def later() -> None:
            order.append("later's first step")
            await asyncio.sleep(0)
            order.append("later's second step")

        await run([Subplan("adding", adding), Subplan("later", later)])
        return order

    reused, fresh = await both(monkeypatch, scenario)
    assert reused == fresh == ["later's first step", "done callback", "later's second step"]


@pytest.mark.parametrize("what", ["coroutine", "stack", "caller's frame"])
async def test_a_coroutine_or_frame_kept_is_never_a_later_subplans(what: str) -> None:
    kept: list[Any] = []
    same: list[bool] = []

    def reached() -> Any:
        task = asyncio.current_task()
        assert task is not None
        if what == "coroutine":
            return task.get_coro()
        if what == "stack":
            return task.get_stack()[-1]  # (the outermost coroutine's frame: the engine's)
        return sys._getframe(2)  # the frame that awaits the subplan

    async def keeping() -> None:
        kept.append(reached())

    async def comparing() -> None:
        same.append(reached() is kept[0])

    await run([Subplan("keeping", keeping), Subplan("comparing", comparing)])
    assert same == [False]


async def test_a_failed_subplans_traceback_never_shows_a_later_subplan() -> None:
    """The error's traceback holds the frame that awaited the subplan: it stays that
    subplan's, where a later one would change its line and locals."""
    frames: list[Any] = []

    async def failing() -> None:
        raise LookupError("boom")

    async def later() -> None:
        frames.append(sys._getframe(1))

    with pytest.raises(AggregateSubplanError) as raised:
        await run(
            [Subplan("failing", failing), Subplan("later", later)],
            failure_mode=FailureMode.CONTINUE_ON_ERROR,
        )
    error = raised.value.results[0].error
    assert error is not None
    assert error.__traceback__ is not None
    assert error.__traceback__.tb_frame is not frames[0]


async def test_a_task_another_task_holds_between_subplans_is_not_reused() -> None:
    """A monitor that keeps every task it sees (``all_tasks()`` at each turn of the loop)
    holds a slot's task in the turn between two subplans too: the next runs in a new task."""
    held: list[set[asyncio.Task[Any]]] = []
    names = Names()
    done = False

    async def monitor() -> None:
        while not done:
            held.append(asyncio.all_tasks())
            del held[:-2]
            await asyncio.sleep(0)

    watching = asyncio.create_task(monitor())
    await asyncio.sleep(0)
    await run([names.noop(f"s{i}") for i in range(8)], 2)
    done = True
    await watching
    assert names.distinct() == 8


@pytest.mark.parametrize("pooled", [False, True], ids=["direct", "pooled"])
@pytest.mark.parametrize("made", INPUTS)
async def test_a_context_variable_set_by_a_subplan_is_never_seen_by_a_later_one(
    made: Any, pooled: bool
) -> None:
    """(A pooled subplan's task holds its holder in a variable too, which it sets anew.)"""
    caller_value: list[str] = []  # equal to a new [] but not the same object
    var.set(caller_value)
    seen: dict[str, Any] = {}
    names = Names()

    def subplan(i: int) -> Subplan:
        async def body() -> None:
            names.seen(f"s{i}")
            seen[f"s{i}"] = var.get()
            await asyncio.sleep(0)
            if i % 4 == 1:
                var.set([])  # equal, not the same: a later subplan must see the caller's
            elif i % 4 == 2:
                var.set(f"set by s{i}")
            elif i % 4 == 3:
                var.reset(var.set("set and reset"))

        return Subplan(f"s{i}", body, uses={"p": 1} if pooled else None)

    pools = {"p": AsyncSemaphoreLimiter(3)} if pooled else None
    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=3), pools=pools)
    results = await dispatcher.run(made([subplan(i) for i in range(24)]))

    assert [r.state for r in results] == [COMPLETED] * 24
    assert all(value is caller_value for value in seen.values()), seen
    assert var.get() is caller_value
    assert names.distinct() < 24


async def test_a_subscriber_setting_a_context_variable_never_reaches_the_next_subplan() -> None:
    """A subscriber of a move runs in the ending subplan's task: what it sets stays there."""
    seen: list[Any] = []
    bus = EventBus()

    def subscriber(event: Any) -> None:
        if isinstance(event, SubplanStateChanged) and event.subplan_id == "b":
            var.set("by the subscriber")

    bus.subscribe(subscriber)

    async def looking() -> None:
        seen.append(var.get())

    names = Names()
    config = ParallelExecutionConfig(max_parallel=1)
    await ParallelSubplanDispatcher(config, bus=bus).run(
        [names.noop("a"), names.noop("b"), Subplan("c", looking)]
    )
    assert seen == ["unset"]


async def test_what_a_lazy_input_sets_while_pulled_reaches_later_subplans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The input is pulled in the dispatch's context: a variable it sets there is seen by the
    subplans started after, as by new tasks made in that context."""

    async def scenario() -> list[Any]:
        seen: list[Any] = []

        def subplans() -> Generator[Subplan, None, None]:
            for i in range(6):
                if i == 3:
                    var.set("set by the input")

                async def body() -> None:
                    seen.append(var.get())

                yield Subplan(f"s{i}", body)

        await run(subplans(), 2)
        return seen

    reused, fresh = await both(monkeypatch, scenario)
    assert reused == fresh
    assert reused[-1] == "set by the input"


@pytest.mark.parametrize("how", ["kept", "uncancelled", "collected"])
async def test_a_cancellation_a_subplan_left_requested_never_reaches_the_next(how: str) -> None:
    """Requested and not delivered (``uncancel`` leaves it pending on 3.11), or delivered,
    caught and kept (``cancelling()`` stays 1; "collected": its traceback, which holds the
    task, collected too)."""
    after: list[str] = []

    async def cancelling_itself() -> str:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        if how == "uncancelled":
            task.uncancel()  # (still pending on 3.11)
            return "pending"
        del task
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("not cancelled")
        if how == "collected":
            gc.collect()
        return "caught"

    async def next_one() -> None:
        task = asyncio.current_task()
        assert task is not None
        after.append(f"cancelling {task.cancelling()}")
        await asyncio.sleep(0)
        after.append("ran to its end")

    results = await run([Subplan("first", cancelling_itself), Subplan("next", next_one)])

    assert [r.value for r in results] == ["pending" if how == "uncancelled" else "caught", None]
    assert after == ["cancelling 0", "ran to its end"]


async def test_a_cancellation_caught_and_uncancelled_leaves_nothing_for_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(Its traceback, garbage until collected, still holds the task: a new one follows.)"""

    async def scenario() -> list[Any]:
        after: list[Any] = []

        async def caught() -> None:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                task.uncancel()

        async def next_one() -> None:
            task = asyncio.current_task()
            assert task is not None
            after.append(task.cancelling())
            await asyncio.sleep(0)
            after.append("ran to its end")

        results = await run([Subplan("caught", caught), Subplan("next", next_one)])
        return [r.state for r in results] + after

    reused, fresh = await both(monkeypatch, scenario)
    assert reused == fresh == [COMPLETED, COMPLETED, 0, "ran to its end"]


async def test_after_a_timeout_or_retries_the_next_subplan_has_a_new_task() -> None:
    names = Names()
    tries: list[int] = []

    async def retried() -> None:
        names.seen("retried")
        tries.append(1)
        if len(tries) == 1:
            raise OSError("once")

    subplans = [
        names.noop("a"),
        Subplan("timed", names.noop("timed").run, timeout=60),
        names.noop("b"),
        Subplan("retried", retried, retries=1, retry_delay=0),
        names.noop("c"),
    ]
    await run(subplans)
    assert names.of["a"] == names.of["timed"] != names.of["b"]
    assert names.of["b"] == names.of["retried"] != names.of["c"]


async def test_a_task_factory_makes_every_subplans_task_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Made before its moves are published (a factory may refuse): a stop from a subscriber
    of its RUNNING cancels it before its first step."""
    monkeypatch.setattr(logging.getLogger("subplans"), "disabled", True)
    loop = asyncio.get_running_loop()
    made: list[str] = []
    ran: list[str] = []
    bus = EventBus()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        made.append(f"made with {len(bus_moves)} moves published")
        return asyncio.Task(coro, loop=loop, **kw)

    bus_moves: list[Any] = []

    def interrupting(event: Any) -> None:
        if isinstance(event, SubplanStateChanged):
            bus_moves.append(event)
            if (event.subplan_id, event.state) == ("s1", RUNNING):
                raise KeyboardInterrupt

    bus.subscribe(interrupting)

    def subplan(name: str) -> Subplan:
        async def body() -> None:
            ran.append(name)

        return Subplan(name, body)

    loop.set_task_factory(factory)
    try:
        dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=1), bus=bus)
        with pytest.raises(KeyboardInterrupt):
            await dispatcher.run([subplan("s0"), subplan("s1")])
    finally:
        loop.set_task_factory(None)
    assert made == ["made with 2 moves published", "made with 4 moves published"]
    assert ran == ["s0"]


async def test_a_task_factory_makes_every_subplans_task() -> None:
    made: list[str] = []
    loop = asyncio.get_running_loop()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        made.append("task")
        return asyncio.Task(coro, loop=loop, **kw)

    loop.set_task_factory(factory)
    try:
        names = Names()
        await run([names.noop(f"s{i}") for i in range(5)])
    finally:
        loop.set_task_factory(None)
    assert len(made) == 5
    assert names.distinct() == 5


# 2. A reused task's next step is scheduled where a new task's first step would be.


async def test_first_steps_subscribers_and_a_fail_fast_stop_keep_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Subplans that never suspend, ones that wait, a subscriber that schedules a callback as
    each subplan starts, and a failure that stops the rest: the same order of everything."""

    async def scenario() -> tuple[list[str], list[Any], int]:
        loop = asyncio.get_running_loop()
        order: list[str] = []
        names = Names()
        bus = EventBus()
        recorder = Recorder(bus)
        gate = loop.create_future()

        def scheduling(event: Any) -> None:
            if isinstance(event, SubplanStateChanged) and event.state is RUNNING:
                loop.call_soon(order.append, f"scheduled at {event.subplan_id}'s start")

        bus.subscribe(scheduling)

        def instant(name: str) -> Subplan:
            async def body() -> None:
                names.seen(name)
                order.append(f"{name} started")

            return Subplan(name, body)

        def waiting(name: str) -> Subplan:
            async def body() -> None:
                names.seen(name)
                order.append(f"{name} started")
                await gate

            return Subplan(name, body)

        async def failing() -> None:
            order.append("bad started")
            raise LookupError("boom")

        subplans = [
            waiting("w0"),
            *(instant(f"i{i}") for i in range(8)),
            waiting("w1"),
            *(instant(f"j{i}") for i in range(4)),
            Subplan("bad", failing),
            *(instant(f"k{i}") for i in range(4)),
        ]
        config = ParallelExecutionConfig(max_parallel=3, failure_mode=FailureMode.FAIL_FAST)
        with pytest.raises(SubplanExecutionError):
            await ParallelSubplanDispatcher(config, bus=bus).run(subplans)
        gate.cancel()
        moves = [
            (e.subplan_id, e.state, type(e.error).__name__, str(e.error))
            for e in recorder.of(SubplanStateChanged)
        ]
        return order, moves, names.distinct()

    (order, moves, tasks), (fresh_order, fresh_moves, fresh_tasks) = await both(
        monkeypatch, scenario
    )
    assert order == fresh_order
    assert moves == fresh_moves
    assert tasks < fresh_tasks  # (tasks were reused)
    cancelled = [m[0] for m in moves if m[2] == "SubplanCancelledError"]
    assert cancelled == ["w0", "w1", "k0", "k1", "k2", "k3"]


async def test_a_stop_in_the_turn_before_a_chained_subplan_cancels_it_unstarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failure in another slot stops the dispatch while a slot's task waits for its turn
    to run its next subplan: that subplan never runs, as a new task cancelled before its
    first step would not."""

    async def scenario() -> tuple[list[str], list[Any]]:
        loop = asyncio.get_running_loop()
        ran: list[str] = []
        bus = EventBus()
        recorder = Recorder(bus)
        woken = loop.create_future()

        async def failing() -> None:
            ran.append("bad")
            await woken  # woken by s1, its step comes before that of s1's slot
            raise LookupError("boom")

        def subplan(name: str) -> Subplan:
            async def body() -> None:
                ran.append(name)
                if name == "s1":
                    woken.set_result(None)

            return Subplan(name, body)

        config = ParallelExecutionConfig(max_parallel=2, failure_mode=FailureMode.FAIL_FAST)
        with pytest.raises(SubplanExecutionError):
            await ParallelSubplanDispatcher(config, bus=bus).run(
                [Subplan("bad", failing), *(subplan(f"s{i}") for i in range(4))]
            )
        moves = [(e.subplan_id, e.state, str(e.error)) for e in recorder.of(SubplanStateChanged)]
        return ran, moves

    reused, fresh = await both(monkeypatch, scenario)
    assert reused == fresh
    ran, moves = reused
    assert ran == ["bad", "s0", "s1"]
    assert ("s2", RUNNING, "None") in moves
    assert ("s2", FAILED, "cancelled because subplan 'bad' failed") in moves


def interrupting_when_s2_runs(event: Any) -> None:
    """A subscriber that stops the dispatch (Ctrl-C) as ``s2`` is published running."""
    if isinstance(event, SubplanStateChanged) and (event.subplan_id, event.state) == (
        "s2",
        RUNNING,
    ):
        raise KeyboardInterrupt


async def test_a_stop_while_the_next_subplan_is_published_running_cancels_it_unstarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> tuple[list[str], list[Any]]:
        bus = EventBus()
        recorder = Recorder(bus)
        ran: list[str] = []

        bus.subscribe(interrupting_when_s2_runs)

        def subplan(name: str) -> Subplan:
            async def body() -> None:
                ran.append(name)
                await asyncio.sleep(0)

            return Subplan(name, body)

        config = ParallelExecutionConfig(max_parallel=1)
        with pytest.raises(KeyboardInterrupt):
            await ParallelSubplanDispatcher(config, bus=bus).run(
                [subplan(f"s{i}") for i in range(4)]
            )
        return ran, [(e.subplan_id, e.state) for e in recorder.of(SubplanStateChanged)]

    reused, fresh = await both(monkeypatch, scenario)
    assert reused == fresh
    assert reused[0] == ["s0", "s1"]
    assert no_tasks_left()


async def test_a_stop_leaving_no_traceback_while_the_next_subplan_is_published_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(A subscriber's KeyboardInterrupt, its traceback dropped and not logged: nothing then
    holds the ending task's frames, yet it must not run the subplan.)"""
    monkeypatch.setattr(logging.getLogger("subplans"), "disabled", True)

    async def scenario() -> tuple[list[str], list[Any]]:
        bus = EventBus()
        recorder = Recorder(bus)
        bus.watch_interrupts(lambda error: setattr(error, "__traceback__", None))
        ran: list[str] = []

        bus.subscribe(interrupting_when_s2_runs)

        def subplan(name: str) -> Subplan:
            async def body() -> None:
                ran.append(name)

            return Subplan(name, body)

        config = ParallelExecutionConfig(max_parallel=1)
        with pytest.raises(KeyboardInterrupt):
            await ParallelSubplanDispatcher(config, bus=bus).run(subplan(f"s{i}") for i in range(4))
        return ran, [(e.subplan_id, e.state) for e in recorder.of(SubplanStateChanged)]

    reused, fresh = await both(monkeypatch, scenario)
    assert reused == fresh
    assert reused[0] == ["s0", "s1"]


async def test_an_ended_subplan_is_let_go_where_it_would_be_with_new_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What its callable held goes with the subplan, before the next one's first step is
    scheduled, with reuse as without (a finalizer that schedules a callback shows where)."""

    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        order: list[str] = []

        class Resource:
            pass

        def subplan(name: str) -> Subplan:
            resource = Resource()
            weakref.finalize(resource, loop.call_soon, order.append, f"{name} let go")

            async def body() -> None:
                order.append(f"{name} started {type(resource).__name__}")

            return Subplan(name, body)

        await run(subplan(f"s{i}") for i in range(4))
        await asyncio.sleep(0)
        return order

    reused, fresh = await both(monkeypatch, scenario)
    assert reused == fresh


async def test_a_cancellation_of_the_dispatch_from_outside_goes_as_with_new_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> tuple[list[str], list[Any]]:
        ran: list[str] = []
        bus = EventBus()
        recorder = Recorder(bus)
        cancel_now = asyncio.Event()

        def subplan(name: str) -> Subplan:
            async def body() -> None:
                ran.append(name)
                if name == "s3":
                    cancel_now.set()
                await asyncio.sleep(0)

            return Subplan(name, body)

        config = ParallelExecutionConfig(max_parallel=2)
        dispatched = asyncio.create_task(
            ParallelSubplanDispatcher(config, bus=bus).run(subplan(f"s{i}") for i in range(9))
        )
        await cancel_now.wait()
        dispatched.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dispatched
        moves = [(e.subplan_id, e.state, str(e.error)) for e in recorder.of(SubplanStateChanged)]
        return ran, moves

    reused, fresh = await both(monkeypatch, scenario)
    assert reused == fresh


async def test_an_error_of_a_later_subplan_has_no_context_from_an_earlier_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> list[Any]:
        async def handled() -> None:
            try:
                raise KeyError("handled inside")
            except KeyError:
                await asyncio.sleep(0)

        async def failing() -> None:
            raise ValueError("fails")

        with pytest.raises(AggregateSubplanError) as raised:
            await run(
                [Subplan("handled", handled), Subplan("failing", failing)],
                failure_mode=FailureMode.CONTINUE_ON_ERROR,
            )
        error = raised.value.results[1].error
        assert error is not None
        return [error.__context__, error.__cause__]

    reused, fresh = await both(monkeypatch, scenario)
    assert reused == fresh == [None, None]


# 3. What else a task carries.


async def test_tasks_counted_by_subplans_and_subscribers_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> list[tuple[str, int]]:
        counts: list[tuple[str, int]] = []
        bus = EventBus()

        def counting(event: Any) -> None:
            if isinstance(event, SubplanStateChanged):
                counts.append((f"{event.subplan_id} {event.state.value}", len(asyncio.all_tasks())))

        bus.subscribe(counting)

        def subplan(name: str) -> Subplan:
            async def body() -> None:
                counts.append((f"{name} runs", len(asyncio.all_tasks())))
                await asyncio.sleep(0)

            return Subplan(name, body)

        config = ParallelExecutionConfig(max_parallel=2)
        await ParallelSubplanDispatcher(config, bus=bus).run(subplan(f"s{i}") for i in range(6))
        return counts

    reused, fresh = await both(monkeypatch, scenario)
    assert reused == fresh


async def test_a_lowered_cap_a_duplicate_and_a_failure_go_as_with_new_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> tuple[list[str], list[Any]]:
        order: list[str] = []
        bus = EventBus()
        recorder = Recorder(bus)
        dispatcher = ParallelSubplanDispatcher(
            ParallelExecutionConfig(max_parallel=3, failure_mode=FailureMode.CONTINUE_ON_ERROR),
            bus=bus,
        )

        def subplan(name: str) -> Subplan:
            async def body() -> None:
                order.append(name)
                if name == "s4":
                    dispatcher.set_max_parallel(1)
                if name == "s6":
                    raise OSError("fails")
                await asyncio.sleep(0)

            return Subplan(name, body)

        def subplans() -> Generator[Subplan, None, None]:
            for i in range(12):
                yield subplan(f"s{i}")
                if i == 8:
                    yield subplan("s3")  # a duplicate

        with pytest.raises(AggregateSubplanError, match=r"^2 of 13 subplans failed"):
            await dispatcher.run(subplans())
        return order, [(e.subplan_id, e.state) for e in recorder.of(SubplanStateChanged)]

    reused, fresh = await both(monkeypatch, scenario)
    assert reused == fresh


async def test_a_stream_reuses_tasks_and_keeps_context_variables_apart() -> None:
    names = Names()
    seen: list[Any] = []

    async def setting() -> None:
        var.set("leaked")

    async def looking() -> None:
        seen.append(var.get())

    def subplans() -> Generator[Subplan, None, None]:
        for i in range(8):
            yield names.noop(f"s{i}")
        for i in range(2):
            yield Subplan(f"set{i}", setting)
            yield Subplan(f"look{i}", looking)

    dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=2))
    results = [r async for r in dispatcher.stream(subplans())]

    assert len(results) == 12
    assert seen == ["unset"] * 2
    assert names.distinct() < 8


async def test_a_group_runs_each_subplan_in_its_submitters_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> list[Any]:
        seen: list[Any] = []

        async def looking() -> None:
            seen.append(var.get())
            await asyncio.sleep(0)

        dispatcher = ParallelSubplanDispatcher(ParallelExecutionConfig(max_parallel=1))
        async with dispatcher.open() as group:
            for i in range(3):
                group.submit(Subplan(f"s{i}", looking))

            async def submitting() -> None:
                var.set("submitter's")
                group.submit(Subplan("look", looking))

            await asyncio.create_task(submitting())
            group.submit(Subplan("after", looking))
        return seen

    reused, fresh = await both(monkeypatch, scenario)
    assert reused == fresh == ["unset"] * 3 + ["submitter's", "unset"]


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

    results = await run(subplans(), 2)
    assert [r.state for r in results] == [COMPLETED] * 6
    assert seen == ["unset"] * 3


async def test_planners_on_a_pool_lend_their_units_from_reused_tasks() -> None:
    """Each planner holds its unit in a holder of its own, in a reused task too: its children
    run on the unit it lends (with another subplan's holder they would wait forever)."""
    pools = {"p": AsyncSemaphoreLimiter(2)}
    config = ParallelExecutionConfig(max_parallel=2)
    names = Names()

    def planner(i: int) -> Callable[[], Awaitable[list[Any]]]:
        async def body() -> list[Any]:
            names.seen(f"p{i}")
            leaves = [Subplan(f"p{i}.{j}", _value(j), uses={"p": 1}) for j in range(2)]
            inner = ParallelSubplanDispatcher(config, pools=pools)
            return [r.value for r in await inner.run(leaves)]

        return body

    outer = ParallelSubplanDispatcher(config, pools=pools)
    results = await outer.run(Subplan(f"p{i}", planner(i), uses={"p": 1}) for i in range(8))

    assert [r.value for r in results] == [[0, 1]] * 8
    assert names.distinct() < 8
    assert pools["p"].in_use == 0
    assert no_tasks_left()


async def test_a_child_task_of_an_ended_pooled_subplan_lends_nothing() -> None:
    """A task a pooled subplan left behind carries that subplan's holder (in its context):
    once the subplan ended, the next one of its slot (in the same task) holds its own units,
    which the orphan cannot lend away."""
    pools = {"p": AsyncSemaphoreLimiter(1)}
    config = ParallelExecutionConfig(max_parallel=1)
    go_on = asyncio.Event()
    second_running = asyncio.Event()
    orphans: list[asyncio.Task[Any]] = []
    in_use: list[int] = []

    async def orphan() -> None:
        await second_running.wait()
        inner = ParallelSubplanDispatcher(config, pools=pools)
        await inner.run([Subplan("inner", _value(0), uses={"p": 1})])

    async def leaving() -> None:
        orphans.append(asyncio.create_task(orphan()))

    async def second() -> None:
        second_running.set()
        await go_on.wait()
        in_use.append(pools["p"].in_use)

    outer = ParallelSubplanDispatcher(config, pools=pools)
    dispatched = asyncio.create_task(
        outer.run(
            [Subplan("leaving", leaving, uses={"p": 1}), Subplan("second", second, uses={"p": 1})]
        )
    )
    await second_running.wait()
    for _ in range(5):
        await asyncio.sleep(0)  # the orphan's dispatch waits for the unit the second holds
    go_on.set()
    await dispatched
    await orphans[0]
    assert in_use == [1]
    assert pools["p"].in_use == 0


def _value(j: int) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        await asyncio.sleep(0)
        return j

    return run


async def test_a_subplan_cancelled_by_a_stop_never_lets_its_task_run_another() -> None:
    """Fail-fast cancels the running subplans: none of their tasks goes on to another."""
    names = Names()
    gate = asyncio.Event()

    def waiting(name: str) -> Subplan:
        async def body() -> None:
            names.seen(name)
            await gate.wait()

        return Subplan(name, body)

    async def failing() -> None:
        await asyncio.sleep(0)
        raise LookupError("boom")

    subplans = [waiting("w0"), waiting("w1"), Subplan("bad", failing), waiting("never")]
    with pytest.raises(SubplanExecutionError) as raised:
        await run(subplans, 3, failure_mode=FailureMode.FAIL_FAST)
    results = {r.subplan_id: r for r in raised.value.results}
    assert isinstance(results["w0"].error, SubplanCancelledError)
    assert "never" not in names.of
    assert no_tasks_left()


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


async def test_a_pulled_subplan_taking_its_units_raises_the_pools_peak() -> None:
    pool = AsyncSemaphoreLimiter(4)
    gate = asyncio.Event()

    def body(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            if name == "s1":
                await gate.wait()
            if name == "s3":
                gate.set()
            await asyncio.sleep(0)

        return run

    def subplans() -> Generator[Subplan, None, None]:
        for i, units in enumerate([1, 2, 1, 2]):  # s3 takes 2 beside s1's 2
            yield Subplan(f"s{i}", body(f"s{i}"), uses={"p": units})

    dispatcher = ParallelSubplanDispatcher(
        ParallelExecutionConfig(max_parallel=2), pools={"p": pool}
    )
    results = await dispatcher.run(subplans())

    assert [r.state for r in results] == [COMPLETED] * 4
    assert (pool.peak, pool.in_use) == (4, 0)


def test_a_loop_that_schedules_steps_its_own_way_gives_every_subplan_a_task() -> None:
    """It may hold a task the engine does not count (a loop that traces its callbacks)."""

    class Tracing(asyncio.SelectorEventLoop):
        def call_soon(  # type: ignore[override]
            self, callback: Any, *args: Any, context: Any = None
        ) -> asyncio.Handle:
            return super().call_soon(callback, *args, context=context)

    names = Names()
    loop = Tracing()
    try:
        loop.run_until_complete(run([names.noop(f"s{i}") for i in range(5)]))
    finally:
        loop.close()
    assert names.distinct() == 5


async def test_a_token_a_subplan_keeps_is_never_good_in_a_later_subplans_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``Token`` holds the context it was made in: a later subplan resetting with it gets
    the error it gets in a task of its own, even when the earlier one left its variables as
    a new task's."""

    async def scenario() -> list[str]:
        kept: list[Any] = []
        seen: list[str] = []

        async def setting() -> None:
            first = var.set("x")
            kept.append(var.set("y"))
            var.reset(first)  # its variables as a new task's again; the token kept

        async def resetting() -> None:
            try:
                var.reset(kept[0])
            except ValueError as error:
                seen.append(type(error).__name__)
            else:
                seen.append(f"reset, {var.get()!r}")

        await run([Subplan("setting", setting), Subplan("resetting", resetting)])
        return seen

    reused, fresh = await both(monkeypatch, scenario)
    assert reused == fresh == ["ValueError"]


async def test_a_weak_reference_to_a_subplans_coroutine_is_never_a_later_subplans() -> None:
    by_coroutine: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
    seen: list[str | None] = []

    def coroutine() -> Any:
        task = asyncio.current_task()
        assert task is not None
        return task.get_coro()

    async def storing() -> None:
        by_coroutine[coroutine()] = "the first subplan's"

    async def looking() -> None:
        seen.append(by_coroutine.get(coroutine()))

    await run([Subplan("storing", storing), Subplan("looking", looking)])
    assert seen == [None]


async def test_a_failed_subplans_result_keeps_neither_its_task_nor_its_context_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The error's traceback keeps the engine's frame: not what a new task's would not."""

    class Connection:
        pass

    async def scenario() -> tuple[bool, bool]:
        held: list[weakref.ref[Any]] = []

        async def failing() -> None:
            connection = Connection()
            held.append(weakref.ref(connection))
            var.set(connection)
            task = asyncio.current_task()
            assert task is not None
            held.append(weakref.ref(task))
            del connection, task
            raise RuntimeError("failed")

        async def passing() -> None:
            await asyncio.sleep(0)

        subplans = [Subplan("passing", passing), Subplan("failing", failing)]
        subplans += [Subplan(f"after{i}", passing) for i in range(3)]
        config = ParallelExecutionConfig(max_parallel=1, failure_mode=FailureMode.CONTINUE_ON_ERROR)
        with pytest.raises(AggregateSubplanError) as raised:
            await ParallelSubplanDispatcher(config).run(subplans)
        gc.collect()
        # The results (and the failed one's error, with its traceback) are kept.
        assert [r.state for r in raised.value.results].count(FAILED) == 1
        connection, task = held
        return connection() is None, task() is None

    reused, fresh = await both(monkeypatch, scenario)
    assert reused == fresh == (True, True)


@pytest.mark.parametrize("pooled", [False, True], ids=["plain", "pooled"])
async def test_a_task_that_cannot_be_made_fails_its_subplan_and_the_run_ends(
    pooled: bool,
) -> None:
    """Making a task after its subplan was published running may raise (here call_soon's
    check in debug mode, the cap raised from another thread): the subplan fails with the
    error, the caller gets it, and the dispatch still ends."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    gate = asyncio.Event()
    caller: list[BaseException] = []

    async def blocker() -> None:
        await gate.wait()

    async def other() -> str:
        return "ran"

    pool = AsyncSemaphoreLimiter(2)
    dispatcher = ParallelSubplanDispatcher(
        ParallelExecutionConfig(max_parallel=1, failure_mode=FailureMode.CONTINUE_ON_ERROR),
        pools={"api": pool} if pooled else None,
    )
    uses = {"api": 1} if pooled else None
    started = asyncio.Event()

    async def first() -> None:
        started.set()
        await blocker()

    def from_a_thread() -> None:
        try:
            dispatcher.set_max_parallel(2)
        except BaseException as error:  # (what the caller gets)
            caller.append(error)
        loop.call_soon_threadsafe(gate.set)

    try:
        running = asyncio.ensure_future(
            dispatcher.run([Subplan("first", first), Subplan("other", other, uses=uses)])
        )
        await started.wait()
        await asyncio.to_thread(from_a_thread)
        with pytest.raises(AggregateSubplanError) as raised:
            await asyncio.wait_for(running, 10)  # (a bound: before, it never ended)
    finally:
        loop.set_debug(False)
    assert [type(error) for error in caller] == [RuntimeError]
    first_result, other_result = raised.value.results
    assert (first_result.state, other_result.state) == (COMPLETED, FAILED)
    assert other_result.error is caller[0]
    assert pool.in_use == 0  # the unit it took went back
    no_tasks_left()
