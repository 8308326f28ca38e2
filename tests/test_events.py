import json
from datetime import UTC

from subplans import (
    DispatchFinished,
    DispatchStarted,
    Event,
    ParallelExecutionConfig,
    PlanFinished,
    PlanStarted,
    StepStateChanged,
    SubplanCancelledError,
    SubplanExecutionState,
    SubplanProcessStarted,
    SubplanRetrying,
    SubplanSkipped,
    SubplanStateChanged,
)
from subplans.engine.events import describe_error

RUNNING, FAILED = SubplanExecutionState.RUNNING, SubplanExecutionState.FAILED


def test_state_changed_to_dict_is_json() -> None:
    event = SubplanStateChanged("port/a", RUNNING, FAILED, 2, ValueError("bad"), time=0.0)
    data = event.to_dict()
    assert data == {
        "event": "subplan_state_changed",
        "timestamp": "1970-01-01T00:00:00+00:00",
        "subplan_id": "port/a",
        "previous": "running",
        "state": "failed",
        "attempt": 2,
        "error": {"type": "ValueError", "message": "bad"},
    }
    json.dumps(data)
    assert event.timestamp.tzinfo is UTC


def test_first_event_has_no_previous() -> None:
    event = SubplanStateChanged("a", None, SubplanExecutionState.PENDING)
    assert event.to_dict()["previous"] is None
    assert event.to_dict()["error"] is None


def test_other_events_to_dict() -> None:
    config = ParallelExecutionConfig()
    for event in [
        Event(time=1.0),
        SubplanRetrying("a", 1, OSError("o"), 0.5, time=1.0),
        DispatchStarted("step", 3, config, time=1.0),
        DispatchFinished("step", dict.fromkeys(SubplanExecutionState, 1), 2.5, time=1.0),
        SubplanProcessStarted("a", 42, "logs/a.log", time=1.0),
        SubplanSkipped("a", "already completed", time=1.0),
        PlanStarted("", "p", "plan.yaml", "run-1", 3, time=1.0),
        PlanFinished("", "completed", 1.5, time=1.0),
        StepStateChanged("s", "running", "failed", 2, RuntimeError("x"), time=1.0),
    ]:
        data = event.to_dict()
        assert data["event"] == event.kind
        assert data["timestamp"] == "1970-01-01T00:00:01+00:00"
        json.dumps(data)


def test_describe_error_keeps_known_details() -> None:
    error = SubplanCancelledError("gone", abandoned=True)
    assert describe_error(error) == {
        "type": "SubplanCancelledError",
        "message": "gone",
        "abandoned": True,
    }
    assert describe_error(None) is None
