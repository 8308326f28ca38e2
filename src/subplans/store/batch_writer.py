"""Writing one batch of a run's rows in one transaction (the recorder's writer process's).

The batch's events go first, as one chunk (``event_chunks``); then, in the same transaction,
what they change in the subplans, steps, step_items and runs tables, so that a terminal state
and its event commit together. Rows of one kind go many per statement (``chunk`` at most, fewer
if SQLite allows fewer variables).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import suppress
from itertools import chain
from typing import TYPE_CHECKING, Any

from subplans.store.event_chunks import last_seq, write_chunk
from subplans.store.event_rows import Item, RowBuilder
from subplans.store.statements import execute_rows

if TYPE_CHECKING:
    from subplans.engine.bus import RawMove
    from subplans.engine.events import Event

__all__ = ["BatchWriter"]

# One row per subplan per batch: its last state there. A bare pending state only creates a row
# that is missing (resume_run resets the rows it re-runs). A completed subplan that started a
# process exited 0. Its process group is forgotten once it is terminal: run_command returns
# only once the whole group is gone.
_UPSERT_SUBPLANS = """
INSERT INTO subplans (run_id, subplan_id, state, attempts, started, finished, exit_code, error)
VALUES {rows}
ON CONFLICT (run_id, subplan_id) DO UPDATE SET
    state = excluded.state,
    attempts = excluded.attempts,
    started = coalesce(excluded.started, started),
    finished = excluded.finished,
    exit_code = CASE WHEN excluded.state = 'completed' AND log_file IS NOT NULL
        THEN 0 ELSE excluded.exit_code END,
    error = excluded.error,
    pgid = CASE WHEN excluded.state = 'running' THEN pgid END,
    pgid_start = CASE WHEN excluded.state = 'running' THEN pgid_start END
WHERE excluded.state <> 'pending'
"""
_SUBPLAN_ROW = "(?1, ?, ?, ?, ?, ?, ?, ?)"
# The common case, a subplan that ended without an error, binds fewer values.
_END_SUBPLANS = """
INSERT INTO subplans (run_id, subplan_id, state, attempts, started, finished)
VALUES {rows}
ON CONFLICT (run_id, subplan_id) DO UPDATE SET
    state = excluded.state,
    attempts = excluded.attempts,
    started = coalesce(excluded.started, started),
    finished = excluded.finished,
    exit_code = CASE WHEN excluded.state = 'completed' AND log_file IS NOT NULL THEN 0 END,
    error = NULL,
    pgid = NULL,
    pgid_start = NULL
"""
_END_ROW = "(?1, ?, ?, ?, ?, ?)"
# A subplan running at the end of the batch (without an error): the rest of its row is cleared
# as the general statement clears it for a running state; its process group is kept.
_START_SUBPLANS = """
INSERT INTO subplans (run_id, subplan_id, state, attempts, started)
VALUES {rows}
ON CONFLICT (run_id, subplan_id) DO UPDATE SET
    state = 'running',
    attempts = excluded.attempts,
    started = excluded.started,
    finished = NULL,
    exit_code = NULL,
    error = NULL
"""
_START_ROW = "(?1, ?, 'running', ?, ?)"
# A pending state only makes a row that is missing.
_WAIT_SUBPLANS = (
    "INSERT INTO subplans (run_id, subplan_id, state) VALUES {rows} ON CONFLICT DO NOTHING"
)
_WAIT_ROW = "(?1, ?, 'pending')"
# Applied after the batch's state changes, in order: a group is kept only while it runs; a
# process on a cluster worker has none here (pgid NULL), its worker's address instead.
_PROCESS_STARTED = """
INSERT INTO subplans (run_id, subplan_id, state, pgid, pgid_start, log_file, worker)
VALUES (?, ?, 'running', ?, ?, ?, ?)
ON CONFLICT (run_id, subplan_id) DO UPDATE SET
    log_file = excluded.log_file,
    worker = excluded.worker,
    pgid = CASE WHEN state = 'running' THEN excluded.pgid END,
    pgid_start = CASE WHEN state = 'running' THEN excluded.pgid_start END,
    exit_code = CASE WHEN state = 'completed' THEN 0 ELSE exit_code END
"""
# A retry keeps the subplan running: only its attempt count moves on.
_RETRYING = """
UPDATE subplans SET attempts = ? WHERE run_id = ? AND subplan_id = ? AND state = 'running'
"""
_UPSERT_STEP = """
INSERT INTO steps (run_id, step_id, state, total, started, finished, error)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, step_id) DO UPDATE SET
    state = excluded.state,
    total = excluded.total,
    started = CASE WHEN excluded.state = 'running' THEN excluded.started ELSE started END,
    finished = excluded.finished,
    error = excluded.error
"""
# A step's items, recorded as it starts (a resumed run reuses them; a forced one whose step's
# source changed reads and records them again).
_RECORD_ITEMS = """
INSERT INTO step_items (run_id, step_id, source, count, items, read_at) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, step_id) DO UPDATE SET
    source = excluded.source,
    count = excluded.count,
    items = excluded.items,
    read_at = excluded.read_at
"""
_FINISH_RUN = "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?"


def _subplans_with_a_row(connection: sqlite3.Connection, run_id: str) -> set[str]:
    """The ids of ``run_id``'s subplans that have a row.

    As one JSON array rather than a row per subplan: SQLite builds it with the GIL released,
    ``json.loads`` reads it in C (a third of the time for 10,000 subplans). An SQLite built
    without its JSON functions (before 3.38 they were optional) is read row by row.
    """
    query = "SELECT {} FROM subplans WHERE run_id = ?"
    try:
        (ids,) = connection.execute(
            query.format("json_group_array(subplan_id)"), (run_id,)
        ).fetchone()
    except sqlite3.OperationalError:
        return {
            subplan_id
            for (subplan_id,) in connection.execute(query.format("subplan_id"), (run_id,))
        }
    return set(json.loads(ids))


def _in_key_order(rows: Iterable[Any]) -> list[Any]:
    """Subplan rows (one per subplan id, which comes first), sorted by id and flattened; or
    subplan ids, sorted.

    In the order of the table's key, SQLite finds each row next to the previous one: about
    half the time per row of rows in completion order, which is close to random. Ids that do
    not sort (a broken event's) are left in their order, for SQLite to say what is wrong.
    """
    listed = list(rows)
    with suppress(TypeError):
        listed.sort()
    if listed and type(listed[0]) is not tuple:
        return listed
    return [*chain.from_iterable(listed)]


class BatchWriter:
    """Writes batches of ``run_id``'s events through ``connection``, each in one transaction."""

    __slots__ = ("builder", "chunk", "connection", "full", "run_id", "terminal")

    def __init__(self, connection: sqlite3.Connection, run_id: str, *, chunk: int) -> None:
        self.connection = connection
        self.run_id = run_id
        self.chunk = chunk
        self.builder = RowBuilder(run_id, _subplans_with_a_row(connection, run_id))
        #: Whether the connection is at synchronous=FULL now.
        self.full = False
        #: Whether the last batch written held a terminal state.
        self.terminal = False

    def checkpoint(self) -> bool:
        """Copy the WAL into the database without blocking anyone; True if it all went."""
        busy, _, _ = self.connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return not busy

    def write(self, events: Sequence[Event | RawMove], *, durable: bool) -> bool:
        """``write_plain`` of ``events`` made plain as the writer process gets them (for
        callers in one process)."""
        # Imported here: it imports the engine, which the writer process never loads.
        from subplans.store.event_pickling import plain

        return self.write_plain(plain(events), durable=durable)

    def write_plain(self, events: Sequence[Item], *, durable: bool) -> bool:
        """Write ``events`` (``event_pickling``'s plain items); returns whether the commit was
        fsynced (it held a terminal state).

        On any failure nothing of the batch is written and the writer is as it was.
        """
        db = self.connection
        self.builder.mark()
        try:
            batch = self.builder.rows(events)
            full = durable and batch.terminal
            if full != self.full:
                db.execute(f"PRAGMA synchronous = {'FULL' if full else 'NORMAL'}")
                self.full = full
            db.execute("BEGIN IMMEDIATE")
            if batch.events:
                # Where the run's events end, read under the write lock: another writer of
                # the run (``writer_lock`` keeps them apart) never makes this batch collide.
                write_chunk(
                    db, self.run_id, last_seq(db, self.run_id) + 1, batch.events, scaled=True
                )
            if batch.waiting:
                self._rows(_WAIT_SUBPLANS, _WAIT_ROW, 1, _in_key_order(batch.waiting))
            self._rows(_END_SUBPLANS, _END_ROW, 5, _in_key_order(batch.ended.values()))
            if batch.running:
                self._rows(_START_SUBPLANS, _START_ROW, 3, _in_key_order(batch.running.values()))
            if batch.subplans:
                self._rows(
                    _UPSERT_SUBPLANS, _SUBPLAN_ROW, 7, _in_key_order(batch.subplans.values())
                )
            # Only the kinds of rows the batch has (most have none of these): even an
            # ``executemany`` of nothing looks its statement up.
            for statement, rows in (
                (_PROCESS_STARTED, batch.processes),
                (_RETRYING, batch.retries),
                (_UPSERT_STEP, batch.steps),
                (_RECORD_ITEMS, batch.items),
                (_FINISH_RUN, batch.runs),
            ):
                if rows:
                    db.executemany(statement, rows)
            db.execute("COMMIT")
            self.terminal = batch.terminal
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self.builder.restore()
            raise
        return full

    def _rows(self, template: str, row: str, width: int, flat: list[Any]) -> None:
        execute_rows(self.connection, template, row, width, (self.run_id,), flat, chunk=self.chunk)
