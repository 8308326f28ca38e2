import json
from datetime import UTC

import pytest

from subplans import (
    CommandFailedError,
    DispatchFinished,
    DispatchStarted,
    Event,
    FailureMode,
    ParallelExecutionConfig,
    PlanFinished,
    PlanStarted,
    StepItemsRead,
    StepStateChanged,
    SubplanCancelledError,
    SubplanExecutionState,
    SubplanProcessStarted,
    SubplanRetrying,
    SubplanSkipped,
    SubplanStateChanged,
)
from subplans.engine.events import describe_error, json_ready
from subplans.engine.states import PlanState, StepState

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
        PlanFinished("", PlanState.COMPLETED, 1.5, time=1.0),
        StepStateChanged("s", StepState.RUNNING, StepState.FAILED, 2, RuntimeError("x"), time=1.0),
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


# Every event type's dict and JSON line, pinned before the hand-written ``to_dict``s gave way to
# one serialiser (issue #9): the JSON lines must stay byte for byte what they were.
_COMMAND_FAILED = CommandFailedError(
    "exited with code 3", exit_code=3, log_file="logs/a.log", output_tail="boom\n"
)
PINNED: list[tuple[Event, str]] = [
    (Event(time=1.5), '{"event": "event", "timestamp": "1970-01-01T00:00:01.500000+00:00"}'),
    (
        SubplanStateChanged("a", None, SubplanExecutionState.PENDING, time=0.0),
        '{"event": "subplan_state_changed", "timestamp": "1970-01-01T00:00:00+00:00", '
        '"subplan_id": "a", "previous": null, "state": "pending", "attempt": 0, "error": null}',
    ),
    (
        SubplanStateChanged("a", RUNNING, FAILED, 2, _COMMAND_FAILED, time=0.0),
        '{"event": "subplan_state_changed", "timestamp": "1970-01-01T00:00:00+00:00", '
        '"subplan_id": "a", "previous": "running", "state": "failed", "attempt": 2, "error": '
        '{"type": "CommandFailedError", "message": "exited with code 3", "exit_code": 3, '
        '"log_file": "logs/a.log", "output_tail": "boom\\n"}}',
    ),
    (
        SubplanRetrying("a", 1, TimeoutError("timed out after 1s"), 0.25, time=2.0),
        '{"event": "subplan_retrying", "timestamp": "1970-01-01T00:00:02+00:00", '
        '"subplan_id": "a", "attempt": 1, "error": {"type": "TimeoutError", '
        '"message": "timed out after 1s"}, "delay": 0.25}',
    ),
    (
        DispatchStarted(
            None, 3, ParallelExecutionConfig(2, FailureMode.CONTINUE_ON_ERROR, 1), time=0.0
        ),
        '{"event": "dispatch_started", "timestamp": "1970-01-01T00:00:00+00:00", "name": null, '
        '"total": 3, "config": {"max_parallel": 2, "failure_mode": "continue_on_error", '
        '"cancel_grace": 1.0}}',
    ),
    (
        DispatchFinished("step", {SubplanExecutionState.COMPLETED: 2, FAILED: 1}, 2.5, time=0.0),
        '{"event": "dispatch_finished", "timestamp": "1970-01-01T00:00:00+00:00", '
        '"name": "step", "counts": {"completed": 2, "failed": 1}, "elapsed": 2.5}',
    ),
    (
        SubplanSkipped("a", "already completed", time=0.0),
        '{"event": "subplan_skipped", "timestamp": "1970-01-01T00:00:00+00:00", '
        '"subplan_id": "a", "reason": "already completed"}',
    ),
    (
        SubplanProcessStarted("a", 42, "logs/a.log", time=0.0),
        '{"event": "subplan_process_started", "timestamp": "1970-01-01T00:00:00+00:00", '
        '"subplan_id": "a", "pid": 42, "log_file": "logs/a.log", "worker": null}',
    ),
    (
        SubplanProcessStarted("a", 42, "logs/a.log", "tcp://10.0.0.2:4001", time=0.0),
        '{"event": "subplan_process_started", "timestamp": "1970-01-01T00:00:00+00:00", '
        '"subplan_id": "a", "pid": 42, "log_file": "logs/a.log", "worker": "tcp://10.0.0.2:4001"}',
    ),
    (
        PlanStarted("", "p", "plan.yaml", "run-1", 3, time=0.0),
        '{"event": "plan_started", "timestamp": "1970-01-01T00:00:00+00:00", "plan_id": "", '
        '"name": "p", "file": "plan.yaml", "run_id": "run-1", "steps": 3}',
    ),
    (
        PlanFinished("port", PlanState.CANCELLED, 1.5, time=0.0),
        '{"event": "plan_finished", "timestamp": "1970-01-01T00:00:00+00:00", '
        '"plan_id": "port", "state": "cancelled", "elapsed": 1.5}',
    ),
    (
        StepStateChanged("s", None, StepState.RUNNING, 2, time=0.0),
        '{"event": "step_state_changed", "timestamp": "1970-01-01T00:00:00+00:00", '
        '"step_id": "s", "previous": null, "state": "running", "total": 2, "error": null}',
    ),
    (
        StepStateChanged(
            "s",
            StepState.RUNNING,
            StepState.FAILED,
            2,
            SubplanCancelledError("gone", abandoned=True),
            time=0.0,
        ),
        '{"event": "step_state_changed", "timestamp": "1970-01-01T00:00:00+00:00", '
        '"step_id": "s", "previous": "running", "state": "failed", "total": 2, "error": '
        '{"type": "SubplanCancelledError", "message": "gone", "abandoned": true}}',
    ),
    (
        # The items themselves go to the store only, never into the JSON.
        StepItemsRead("port", "lines of 'files.txt'", 2, False, ("a", "b"), time=0.0),
        '{"event": "step_items_read", "timestamp": "1970-01-01T00:00:00+00:00", '
        '"step_id": "port", "source": "lines of \'files.txt\'", "count": 2, "recorded": false}',
    ),
]


@pytest.mark.parametrize(("event", "line"), PINNED, ids=lambda x: getattr(x, "kind", ""))
def test_each_event_type_serialises_as_pinned(event: Event, line: str) -> None:
    data = event.to_dict()
    assert json.dumps(data) == line
    assert data == json.loads(line)
    # JSON-ready values only: no enum or exception is left for the encoder to guess at.
    assert _plain(data)


def _plain(value: object) -> bool:
    """True if ``value`` is made of exact JSON types only (a StrEnum is not a plain str)."""
    if type(value) is dict:
        return all(type(key) is str and _plain(item) for key, item in value.items())
    return type(value) in (str, int, float, bool, type(None))


def test_every_event_type_is_pinned() -> None:
    def subclasses(cls: type[Event]) -> set[type[Event]]:
        return {cls}.union(*(subclasses(sub) for sub in cls.__subclasses__()))

    engine_events = {cls for cls in subclasses(Event) if cls.__module__ == Event.__module__}
    assert engine_events == {type(event) for event, _ in PINNED}


def test_a_step_state_given_as_text_serialises_as_its_enum() -> None:
    as_text = StepStateChanged("s", "running", "failed", 1, time=0.0)  # type: ignore[arg-type]  # the spelling before enums
    as_enum = StepStateChanged("s", StepState.RUNNING, StepState.FAILED, 1, time=0.0)
    assert json.dumps(as_text.to_dict()) == json.dumps(as_enum.to_dict())


def test_json_ready_converts_inside_mappings_and_leaves_the_unknown_alone() -> None:
    unknown = object()
    assert json_ready({FAILED: {"error": OSError("x")}, "n": 1}) == {
        "failed": {"error": {"type": "OSError", "message": "x"}},
        "n": 1,
    }
    assert json_ready(unknown) is unknown
