import logging

import pytest

from subplans import (
    EventBus,
    InvalidTransitionError,
    SubplanError,
    SubplanExecutionState,
    SubplanStateChanged,
    SubplanTracker,
)

from .conftest import Recorder

PENDING, RUNNING, COMPLETED, FAILED = SubplanExecutionState


def test_values_and_terminal() -> None:
    assert [s.value for s in SubplanExecutionState] == ["pending", "running", "completed", "failed"]
    assert [s.is_terminal for s in SubplanExecutionState] == [False, False, True, True]


LEGAL = {(PENDING, RUNNING), (RUNNING, COMPLETED), (RUNNING, FAILED), (PENDING, FAILED)}


@pytest.mark.parametrize("before", list(SubplanExecutionState))
@pytest.mark.parametrize("after", list(SubplanExecutionState))
def test_only_legal_transitions(
    before: SubplanExecutionState, after: SubplanExecutionState
) -> None:
    tracker = SubplanTracker()
    tracker.add("a")
    path = {PENDING: [], RUNNING: [RUNNING], COMPLETED: [RUNNING, COMPLETED], FAILED: [FAILED]}
    for state in path[before]:
        tracker.transition("a", state)
    if (before, after) in LEGAL:
        tracker.transition("a", after)
        assert tracker.state("a") is after
    else:
        with pytest.raises(
            InvalidTransitionError,
            match=rf"^subplan 'a' cannot move from {before.value} to {after.value}$",
        ):
            tracker.transition("a", after)
        assert tracker.state("a") is before


def test_counts_and_events(bus: EventBus, recorder: Recorder) -> None:
    tracker = SubplanTracker(bus)
    for name in "abc":
        tracker.add(name)
    tracker.transition("a", RUNNING, attempt=1)
    error = RuntimeError("x")
    tracker.transition("a", FAILED, attempt=1, error=error)
    tracker.transition("b", RUNNING)
    assert tracker.counts() == {PENDING: 1, RUNNING: 1, COMPLETED: 0, FAILED: 1}
    assert len(tracker) == 3
    assert "a" in tracker
    assert (
        repr(tracker) == "<SubplanTracker 3 subplans: pending=1, running=1, completed=0, failed=1>"
    )
    events = recorder.of(SubplanStateChanged)
    assert [(e.subplan_id, e.previous, e.state) for e in events] == [
        ("a", None, PENDING),
        ("b", None, PENDING),
        ("c", None, PENDING),
        ("a", PENDING, RUNNING),
        ("a", RUNNING, FAILED),
        ("b", PENDING, RUNNING),
    ]
    assert events[4].error is error
    assert events[4].attempt == 1


def test_duplicate_add_is_an_error() -> None:
    tracker = SubplanTracker()
    tracker.add("a")
    with pytest.raises(SubplanError, match=r"^duplicate subplan id 'a'$"):
        tracker.add("a")


def test_unknown_id() -> None:
    with pytest.raises(KeyError):
        SubplanTracker().transition("nope", RUNNING)


def test_transitions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="subplans")
    tracker = SubplanTracker()
    tracker.add("a")
    tracker.transition("a", RUNNING)
    tracker.transition("a", FAILED, error=ValueError("bad"))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "subplan a: pending"),
        (logging.DEBUG, "subplan a: running"),
        (logging.WARNING, "subplan a: failed (ValueError('bad'))"),
    ]
