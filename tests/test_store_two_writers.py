"""Two writers of one run (there should never be two: ``writer_lock`` keeps them apart) still
number the run's events without a gap or a collision: each batch takes its first seq inside its
own write transaction."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from subplans.engine.events import SubplanStateChanged
from subplans.engine.states import SubplanExecutionState as S
from subplans.store import RunStore
from subplans.store.batch_writer import BatchWriter
from tests.store_support import manifest


def test_two_writers_of_one_run_interleave_without_colliding(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with RunStore.open(path) as store:
        store.start_run("r1", manifest("a", "b"))
    first, second = (sqlite3.connect(path, isolation_level=None) for _ in range(2))
    try:
        # Both read where the run's events end before either writes.
        one, two = (BatchWriter(db, "r1", chunk=16) for db in (first, second))
        one.write([SubplanStateChanged("a", S.PENDING, S.RUNNING, attempt=1)], durable=True)
        two.write([SubplanStateChanged("b", S.PENDING, S.RUNNING, attempt=1)], durable=True)
        one.write([SubplanStateChanged("a", S.RUNNING, S.COMPLETED, attempt=1)], durable=True)
        two.write([SubplanStateChanged("b", S.RUNNING, S.COMPLETED, attempt=1)], durable=True)
    finally:
        first.close()
        second.close()
    with RunStore.open(path, readonly=True) as store:
        events = store.events("r1")
        assert [(e.seq, e.payload["subplan_id"], e.payload["state"]) for e in events] == [
            (1, "a", "running"),
            (2, "b", "running"),
            (3, "a", "completed"),
            (4, "b", "completed"),
        ]
        assert {s.subplan_id: s.state for s in store.subplans("r1")} == {
            "a": "completed",
            "b": "completed",
        }
