"""What one batch of state changes leaves in a subplan's row: its last state, with the start
of the attempt that ended (issue #10 keeps ended and other rows apart, sorted by id)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from subplans.engine.errors import CommandFailedError
from subplans.engine.events import Event, SubplanStateChanged
from subplans.engine.states import SubplanExecutionState
from subplans.store import PlanManifest, RunStore
from subplans.store.batch_writer import BatchWriter

PENDING = SubplanExecutionState.PENDING
RUNNING = SubplanExecutionState.RUNNING
COMPLETED = SubplanExecutionState.COMPLETED
FAILED = SubplanExecutionState.FAILED
COLUMNS = "state, attempts, started, finished, exit_code, error IS NOT NULL"


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[BatchWriter]:
    store = RunStore.open(tmp_path / "state.db")
    ids = ("a", "b", "c")
    store.start_run("r1", PlanManifest(file="p.yaml", subplans=tuple((i, "s") for i in ids)))
    store.close()
    connection = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    yield BatchWriter(connection, "r1", chunk=2)
    connection.close()


def one_batch(writer: BatchWriter, *events: Event) -> dict[str, tuple[Any, ...]]:
    writer.write(list(events), durable=False)
    rows = writer.connection.execute(
        f"SELECT subplan_id, {COLUMNS} FROM subplans WHERE run_id = 'r1' ORDER BY subplan_id"
    )
    return {subplan_id: tuple(rest) for subplan_id, *rest in rows}


def change(subplan_id: str, *moves: Any, time: float) -> SubplanStateChanged:
    return SubplanStateChanged(subplan_id, *moves, time=time)


def test_a_batch_leaves_each_subplan_at_its_last_state(writer: BatchWriter) -> None:
    failure = CommandFailedError("exited with code 3", exit_code=3, log_file="/l", output_tail="")
    rows = one_batch(
        writer,
        change("c", PENDING, RUNNING, 1, time=1.0),
        change("a", PENDING, RUNNING, 1, time=2.0),
        change("c", RUNNING, COMPLETED, 1, time=3.0),
        change("a", RUNNING, FAILED, 1, failure, time=4.0),
        change("b", PENDING, RUNNING, 1, time=5.0),
    )
    assert rows == {
        "a": ("failed", 1, 2.0, 4.0, 3, 1),
        "b": ("running", 1, 5.0, None, None, 0),
        "c": ("completed", 1, 1.0, 3.0, None, 0),
    }


def test_an_end_after_an_end_keeps_the_start_of_the_attempt(writer: BatchWriter) -> None:
    rows = one_batch(
        writer,
        change("a", PENDING, RUNNING, 1, time=1.0),
        change("a", RUNNING, COMPLETED, 1, time=2.0),
        change("a", RUNNING, FAILED, 1, RuntimeError("late"), time=3.0),
        change("b", PENDING, RUNNING, 1, time=4.0),
        change("b", RUNNING, FAILED, 1, RuntimeError("x"), time=5.0),
        change("b", RUNNING, COMPLETED, 1, time=6.0),
    )
    assert rows["a"] == ("failed", 1, 1.0, 3.0, None, 1)
    assert rows["b"] == ("completed", 1, 4.0, 6.0, None, 0)


def test_running_again_after_an_end_in_one_batch_is_running(writer: BatchWriter) -> None:
    rows = one_batch(
        writer,
        change("a", PENDING, RUNNING, 1, time=1.0),
        change("a", RUNNING, COMPLETED, 1, time=2.0),
        change("a", COMPLETED, RUNNING, 2, RuntimeError("odd"), time=3.0),
    )
    assert rows["a"] == ("running", 2, 3.0, None, None, 0)


def test_a_pending_state_with_an_error_changes_no_registered_row(writer: BatchWriter) -> None:
    rows = one_batch(writer, change("a", None, PENDING, 0, RuntimeError("x"), time=1.0))
    assert rows["a"] == ("pending", 0, None, None, None, 0)
    (count,) = writer.connection.execute("SELECT count(*) FROM events").fetchone()
    assert count == 1


def test_an_unregistered_subplan_gets_a_row_from_its_pending_state(writer: BatchWriter) -> None:
    rows = one_batch(
        writer,
        change("z", None, PENDING, 0, RuntimeError("x"), time=1.0),
        change("y", None, PENDING, 0, time=2.0),
        change("x", PENDING, RUNNING, 1, time=3.0),
        change("x", RUNNING, COMPLETED, 1, time=4.0),
    )
    assert rows["z"] == rows["y"] == ("pending", 0, None, None, None, 0)
    assert rows["x"] == ("completed", 1, 3.0, 4.0, None, 0)


def test_a_batch_is_one_chunk_and_an_empty_one_writes_none(writer: BatchWriter) -> None:
    """Schema 3 (issue #10): a batch's events are one row of ``event_chunks``."""
    assert writer.write([], durable=True) is False
    one_batch(
        writer, change("a", None, PENDING, 0, time=1.0), change("b", None, PENDING, 0, time=2.0)
    )
    one_batch(writer, change("a", PENDING, RUNNING, 1, time=3.0))
    chunks = writer.connection.execute(
        "SELECT first_seq, last_seq FROM event_chunks ORDER BY first_seq"
    ).fetchall()
    assert chunks == [(1, 2), (3, 3)]
