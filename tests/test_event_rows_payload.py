"""The store's payload of a state change is ``SubplanStateChanged.to_dict()``'s (issue #9
review): ``event_rows`` keeps an error-free one in a short form (schema 3, issue #10), and this
pins what the readers and the ``events`` view make of it against the one serialiser, for every
shape a state change takes."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from subplans.engine.errors import CommandFailedError, SubplanCancelledError
from subplans.engine.events import Event, SubplanRetrying, SubplanStateChanged
from subplans.engine.states import SubplanExecutionState
from subplans.store import PlanManifest, RunStore
from subplans.store.batch_writer import BatchWriter
from subplans.store.event_rows import encode

STATES = list(SubplanExecutionState)
#: Plain, and what JSON must escape: quotes, a backslash, a control character, non-ASCII.
IDS = ["s/a", 's/"q\\u\x07é\u2028']
ERRORS: list[BaseException | None] = [
    None,
    RuntimeError('boom "quoted" é'),
    CommandFailedError("exited with code 3", exit_code=3, log_file="/l.log", output_tail="x"),
    SubplanCancelledError("the run was cancelled"),
]


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[BatchWriter]:
    with RunStore.open(tmp_path / "state.db") as store:
        store.start_run("r1", PlanManifest(file="p.yaml", subplans=tuple((i, "s") for i in IDS)))
    connection = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    yield BatchWriter(connection, "r1", chunk=4)
    connection.close()


def expected(event: Event) -> dict[str, object]:
    data = event.to_dict()
    del data["event"], data["timestamp"]
    return data


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
def test_every_state_change_is_stored_as_to_dict_says(
    writer: BatchWriter, tmp_path: Path, error: BaseException | None
) -> None:
    changes = [
        SubplanStateChanged(subplan_id, previous, state, attempt, error, time=1.5 + attempt)
        for previous, state, attempt, subplan_id in itertools.product(
            [None, *STATES], STATES, [0, 1, 3], IDS
        )
    ]
    # Twice: the second time the cached state texts of the first are used.
    for _ in range(2):
        writer.write(list[Event](changes), durable=False)
    with RunStore.open(tmp_path / "state.db", readonly=True) as store:
        stored = store.events("r1")
    assert [(e.seq, e.time, e.kind, e.subplan_id, e.step_id) for e in stored] == [
        (seq, event.time, "subplan_state_changed", event.subplan_id, None)
        for seq, event in enumerate(changes * 2, 1)
    ]
    assert [dict(e.payload) for e in stored] == [expected(event) for event in changes * 2]
    # The view shows the same columns as the table of schema 1 and 2 did.
    rows = writer.connection.execute(
        "SELECT seq, time, kind, subplan_id, step_id, payload FROM events "
        "WHERE run_id = 'r1' ORDER BY seq"
    ).fetchall()
    assert [row[:5] for row in rows] == [
        (e.seq, e.time, e.kind, e.subplan_id, e.step_id) for e in stored
    ]
    assert [json.loads(row[5]) for row in rows] == [expected(event) for event in changes * 2]
    if error is None:  # the view writes the short form's payload as the one serialiser does
        assert [row[5] for row in rows[:2]] == [encode(expected(e)) for e in changes[:2]]


@pytest.mark.parametrize(
    "time",
    [1796026808.600182, 1e9 + 2**-22, 0.1, 200.1, 1e-9, 5, 0.0],
    ids=["epoch", "epoch-ulp", "0.1", "200.1", "tiny", "int", "zero"],
)
def test_every_time_reads_back_exactly(writer: BatchWriter, tmp_path: Path, time: float) -> None:
    """A chunk keeps times in 2**-22 s: an integer when the time is a whole number of those
    (any epoch time since 2004), else the float scaled; both read back as the same float."""
    other = SubplanRetrying("s/a", 1, RuntimeError("x"), 2.5, time=time)
    writer.write([SubplanStateChanged("s/a", None, STATES[0], time=time), other], durable=False)
    with RunStore.open(tmp_path / "state.db", readonly=True) as store:
        assert [(e.time, type(e.time)) for e in store.events("r1")] == [(float(time), float)] * 2
    viewed = writer.connection.execute("SELECT time FROM events ORDER BY seq").fetchall()
    assert viewed == [(float(time),)] * 2
