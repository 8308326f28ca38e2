"""The store's payload of a state change is ``SubplanStateChanged.to_dict()``'s JSON (issue #9
review): ``event_rows`` builds it from cached pieces for speed, and this pins those pieces
against the one serialiser for every shape a state change takes."""

from __future__ import annotations

import itertools

import pytest

from subplans.engine.errors import CommandFailedError, SubplanCancelledError
from subplans.engine.events import SubplanStateChanged
from subplans.engine.states import SubplanExecutionState
from subplans.store.event_rows import RowBuilder, encode

STATES = list(SubplanExecutionState)
#: Plain, and what JSON must escape: quotes, a backslash, a control character, non-ASCII.
IDS = ["s/a", 's/"q\\u\x07é\u2028']
ERRORS: list[BaseException | None] = [
    None,
    RuntimeError('boom "quoted" é'),
    CommandFailedError("exited with code 3", exit_code=3, log_file="/l.log", output_tail="x"),
    SubplanCancelledError("the run was cancelled"),
]


def stored_payload(builder: RowBuilder, event: SubplanStateChanged) -> str:
    changes = builder.rows([event]).changes
    assert changes[1:3] == [event.time, event.subplan_id]
    payload = changes[3]
    assert isinstance(payload, str)
    return payload


def expected(event: SubplanStateChanged) -> str:
    data = event.to_dict()
    del data["event"], data["timestamp"]
    return encode(data)


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
def test_every_state_change_is_stored_as_to_dict_says(error: BaseException | None) -> None:
    builder = RowBuilder("r1", 0, set())
    for previous, state, attempt, subplan_id in itertools.product(
        [None, *STATES], STATES, [0, 1, 3], IDS
    ):
        event = SubplanStateChanged(subplan_id, previous, state, attempt, error, time=1.5)
        # Twice: the second time the cached tail of the first is used.
        for _ in range(2):
            assert stored_payload(builder, event) == expected(event)
