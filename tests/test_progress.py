import asyncio

import pytest

from subplans import (
    EventBus,
    ParallelExecutionConfig,
    ParallelSubplanDispatcher,
    ProgressReporter,
    Subplan,
    SubplanError,
    SubplanExecutionState,
    SubplanTracker,
)

PENDING, RUNNING, COMPLETED, FAILED = SubplanExecutionState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_snapshot_follows_transitions_with_an_injected_clock() -> None:
    bus, clock = EventBus(), Clock()
    reporter = ProgressReporter(bus, clock=clock, parallelism=2)
    tracker = SubplanTracker(bus)
    for name in "abcde":
        tracker.add(name)
    snapshot = reporter.snapshot()
    assert snapshot.counts[PENDING] == 5
    assert snapshot.eta is None  # nothing finished yet: no estimate
    tracker.transition("a", RUNNING)
    tracker.transition("b", RUNNING)
    clock.now = 104.0
    tracker.transition("a", COMPLETED)
    error = RuntimeError("b broke")
    clock.now = 106.0
    tracker.transition("b", FAILED, error=error)
    tracker.transition("c", RUNNING)
    clock.now = 107.0
    snapshot = reporter.snapshot()
    assert dict(snapshot.counts) == {PENDING: 2, RUNNING: 1, COMPLETED: 1, FAILED: 1}
    assert dict(snapshot.running) == {"c": 106.0}
    assert [(f.subplan_id, f.error, f.at) for f in snapshot.failures] == [("b", error, 106.0)]
    assert snapshot.elapsed == 7.0
    assert (snapshot.total, snapshot.done) == (5, 2)
    # mean duration (4 + 6) / 2 = 5 s, three left, two at a time
    assert snapshot.eta == pytest.approx(5 * 3 / 2)
    assert repr(reporter) == "<ProgressReporter pending=2, running=1, completed=1, failed=1>"


async def test_follows_a_real_dispatch_and_takes_parallelism_from_it() -> None:
    bus = EventBus()
    reporter = ProgressReporter(bus)

    async def noop() -> None:
        await asyncio.sleep(0)

    config = ParallelExecutionConfig(max_parallel=3)
    await ParallelSubplanDispatcher(config, bus=bus).run(Subplan(f"s{i}", noop) for i in range(10))
    snapshot = reporter.snapshot()
    assert snapshot.counts[COMPLETED] == 10
    assert snapshot.eta == 0.0
    assert reporter._parallelism == 3
    reporter.close()
    reporter.close()
    assert not bus.has_subscribers


async def test_counts_never_go_negative_for_a_failed_dispatch() -> None:
    bus = EventBus()
    reporter = ProgressReporter(bus)

    async def bad() -> None:
        raise ValueError("x")

    with pytest.raises(SubplanError):
        await ParallelSubplanDispatcher(bus=bus).run([Subplan("a", bad), Subplan("b", bad)])
    counts = reporter.snapshot().counts
    assert all(n >= 0 for n in counts.values())
    assert counts[FAILED] == 2


def test_without_a_bus() -> None:
    reporter = ProgressReporter()
    assert reporter.snapshot().total == 0
    assert reporter.snapshot().eta == 0.0


def test_no_eta_while_a_dispatch_without_a_total_is_open() -> None:
    """Issue #13, point 6: a group or a lazy input announces no total, so the snapshot has
    counts but no ETA (and says ``total_known`` False) until every such dispatch ended."""
    from subplans import DispatchFinished, DispatchStarted

    bus, clock = EventBus(), Clock()
    reporter = ProgressReporter(bus, clock=clock)
    config = ParallelExecutionConfig(max_parallel=3)
    bus.publish(DispatchStarted("outer", 2, config))
    tracker = SubplanTracker(bus)
    tracker.add("a")
    tracker.transition("a", RUNNING)
    clock.now = 101.0
    tracker.transition("a", COMPLETED)
    tracker.add("b")
    assert reporter.snapshot().eta == 1.0
    assert reporter.snapshot().total_known
    bus.publish(DispatchStarted("group", None, ParallelExecutionConfig(max_parallel=8)))
    bus.publish(DispatchStarted("group", None, config))  # two open under one name
    snapshot = reporter.snapshot()
    assert (snapshot.total_known, snapshot.eta, snapshot.total, snapshot.done) == (
        False,
        None,
        2,
        1,
    )
    bus.publish(DispatchFinished("group", {}, 0.0))
    assert not reporter.snapshot().total_known
    bus.publish(DispatchFinished("group", {}, 0.0))
    bus.publish(DispatchFinished("outer", {}, 0.0))
    assert reporter.snapshot().total_known
    assert reporter.snapshot().eta == 1.0  # parallelism 3, from the first DispatchStarted
