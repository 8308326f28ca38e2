"""``RunRecorder``: the bus subscriber that writes a run's events into the store.

On the event loop it only puts the event on a queue (a fraction of a microsecond). One writer
thread takes everything queued, turns it into rows and writes it in a single transaction:
the event rows and, in the same transaction, what they change in the subplans, steps and runs
tables. When few events are queued it waits up to ``batch_delay`` seconds for more (group
commit), unless a flush waits.

Durability: batches holding a terminal state (of a subplan, a step or the run) commit with
``synchronous=FULL``, so they are fsynced before ``flush()`` returns; the others with
``NORMAL``, which survives a crash of the process but not of the machine, where what is lost
is only a record of work in progress. WAL checkpoints (copying the log into the database) are
taken when the writer is idle, never between a terminal state and the end of a run.

Cost: the writer thread shares the GIL with the event loop, so it keeps its Python work per
event small: state changes (most events) are read with one ``attrgetter`` call, their payload
is put together from cached pieces, and they are bound as plain values, many rows per statement.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import operator
import os
import sqlite3
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, SimpleQueue
from time import monotonic as _monotonic
from types import TracebackType
from typing import Any

from subplans.engine.errors import StoreError
from subplans.engine.events import Event, EventBus, SubplanStateChanged, describe_error
from subplans.engine.states import SubplanExecutionState
from subplans.store.liveness import check_run_id, process_start_time

__all__ = ["RecorderStatistics", "RunRecorder"]

logger = logging.getLogger("subplans")

#: Write at once, without waiting for more, once this many events are queued.
_EAGER = 500
#: How often a gathering writer looks at the queue.
_GATHER_TICK = 0.005
#: After this many idle seconds the writer checkpoints the WAL, if enough was written.
_IDLE = 0.25
#: Events written since the last checkpoint that make one due (about 1-2 MB of log).
_CHECKPOINT_AFTER = 10_000

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


@dataclass(frozen=True, slots=True)
class RecorderStatistics:
    """What a recorder has done so far."""

    #: Events committed to the store.
    written: int
    #: Transactions committed.
    batches: int
    largest_batch: int
    #: Batches committed with synchronous=FULL because they held a terminal state.
    durable_batches: int
    #: Events queued and not yet written (approximate while events arrive).
    pending: int
    #: Events not written because the store failed.
    dropped: int


class _Marker:
    """Queued behind the events that a flush (or close) waits for."""

    __slots__ = ("future", "stop")

    def __init__(self, stop: bool) -> None:
        self.future: Future[None] = Future()
        self.stop = stop


class RunRecorder:
    """Records one run's events into the store at ``path``, from a thread of its own.

    Subscribe it to the bus (``bus=`` or ``bus.subscribe(recorder)``); ``await flush()``
    returns once every event handed to it so far is committed, and must be awaited before the
    run reports its end; ``close()`` (or ``await aclose()``) flushes, stops the thread and
    unsubscribes. A store that fails to write is logged once; from then on events are dropped
    and ``flush()`` and ``close()`` raise the ``StoreError``.

    Raises:
        StoreError: the store cannot be opened for writing.
    """

    def __init__(
        self,
        path: Path | str,
        run_id: str,
        *,
        bus: EventBus | None = None,
        durable: bool = True,
        batch_delay: float = 0.05,
        max_batch: int = 20_000,
        timeout: float = 5.0,
    ) -> None:
        check_run_id(run_id)
        if not batch_delay >= 0:
            raise ValueError(f"batch_delay must be >= 0, got {batch_delay!r}")
        if type(max_batch) is not int or max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        self.path = Path(path)
        self.run_id = run_id
        self._durable = durable
        self._batch_delay = batch_delay
        self._max_batch = max_batch
        self._timeout = timeout
        self._queue: SimpleQueue[Event | _Marker] = SimpleQueue()
        self._put = self._queue.put
        self._urgent = threading.Event()
        self._closed = False
        self._failure: StoreError | None = None
        self._stopping: _Marker | None = None
        self._written = self._batches = self._largest = self._durable_batches = 0
        self._dropped = 0
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"subplans recorder {run_id}", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self._failure is not None:
            self._closed = True
            self._thread.join()
            raise self._failure
        self._unsubscribe = bus.subscribe(self) if bus is not None else None

    def __repr__(self) -> str:
        state = "failed" if self._failure else "closed" if self._closed else "open"
        return (
            f"<RunRecorder run {self.run_id} {state}: {self._written} written in "
            f"{self._batches} batches, {self._queue.qsize()} pending>"
        )

    def statistics(self) -> RecorderStatistics:
        """A snapshot of what was written so far."""
        return RecorderStatistics(
            self._written,
            self._batches,
            self._largest,
            self._durable_batches,
            self._queue.qsize(),
            self._dropped,
        )

    @property
    def failure(self) -> StoreError | None:
        """Why the store stopped recording, or None."""
        return self._failure

    # --- the event loop's side ------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """Queue ``event`` for the writer (this is the bus subscriber).

        Raises:
            RuntimeError: the recorder is closed.
        """
        if self._closed:
            raise RuntimeError("the recorder is closed")
        self._put(event)

    __call__ = handle

    async def flush(self) -> None:
        """Return once every event handed over so far is committed (terminal states fsynced).

        Raises:
            StoreError: the store failed to write.
        """
        await asyncio.wrap_future(self._mark(stop=False))

    def flush_sync(self, timeout: float | None = None) -> None:
        """``flush()`` for code outside the event loop; blocks the calling thread.

        Raises:
            StoreError: the store failed to write.
            TimeoutError: not flushed within ``timeout`` seconds.
        """
        self._mark(stop=False).result(timeout)

    def close(self) -> None:
        """Flush, stop the writer thread and unsubscribe (idempotent); blocks until done.

        Raises:
            StoreError: the store failed to write.
        """
        if self._closed:
            return
        future = self._stop()
        self._thread.join()
        future.result()

    async def aclose(self) -> None:
        """``close()`` without blocking the event loop while the last batch is written."""
        if self._closed:
            return
        future = self._stop()
        try:
            await asyncio.wrap_future(future)
        finally:
            # The writer settles the stop marker as its last act: this returns at once.
            self._thread.join()

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> RunRecorder:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _mark(self, *, stop: bool) -> Future[None]:
        if self._closed:
            raise RuntimeError("the recorder is closed")
        marker = _Marker(stop)
        self._put(marker)
        self._urgent.set()
        return marker.future

    def _stop(self) -> Future[None]:
        future = self._mark(stop=True)
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        return future

    # --- the writer thread ----------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        try:
            connection = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        except sqlite3.Error as error:
            self._failure = StoreError(f"cannot open the store {self.path}: {error}")
            ready.set()
            return
        try:
            try:
                connection.execute("PRAGMA synchronous = NORMAL")
                # Checkpoints are taken when idle (see _loop), not inside a commit.
                connection.execute("PRAGMA wal_autocheckpoint = 0")
                # Room for a large batch: spilling the cache mid-transaction costs writes.
                connection.execute("PRAGMA cache_size = -32000")
                writer = _Writer(connection, self.run_id)
            except sqlite3.Error as error:
                self._failure = StoreError(f"cannot open the store {self.path}: {error}")
                return
            finally:
                ready.set()
            self._loop(writer)
        finally:
            connection.close()
            if self._stopping is not None:
                _settle(self._stopping.future, self._failure)

    def _loop(self, writer: _Writer) -> None:
        get, get_nowait, urgent = self._queue.get, self._queue.get_nowait, self._urgent
        full, unchecked = False, 0
        while True:
            if unchecked >= _CHECKPOINT_AFTER:
                try:
                    first = get(timeout=_IDLE)
                except Empty:
                    unchecked = 0 if writer.checkpoint() else unchecked
                    continue
            else:
                first = get()
            batch = [first]
            if not full:
                self._gather()
            urgent.clear()
            try:
                while len(batch) < self._max_batch:
                    batch.append(get_nowait())
            except Empty:
                pass
            full = len(batch) >= self._max_batch
            events: list[Event] = []
            markers: list[_Marker] = []
            for item in batch:
                if type(item) is _Marker:
                    markers.append(item)
                else:
                    events.append(item)  # type: ignore[arg-type]
            if events:
                self._write(writer, events)
                unchecked += len(events)
            for marker in markers:
                if marker.stop:
                    self._stopping = marker
                    return
                _settle(marker.future, self._failure)

    def _gather(self) -> None:
        """Wait up to ``batch_delay`` for more events (group commit), but not while a flush
        waits or once many are queued: under a burst, writing starts at once."""
        qsize, urgent = self._queue.qsize, self._urgent
        deadline = _monotonic() + self._batch_delay
        while qsize() < _EAGER and not urgent.is_set():
            remaining = deadline - _monotonic()
            if remaining <= 0:
                return
            urgent.wait(min(remaining, _GATHER_TICK))

    def _write(self, writer: _Writer, events: list[Event]) -> None:
        if self._failure is not None:
            self._dropped += len(events)
            return
        try:
            durable = writer.write(events, durable=self._durable)
        except Exception as error:
            self._dropped += len(events)
            self._failure = StoreError(
                f"cannot write to the store {self.path}: {error}; "
                f"events of run {self.run_id} are no longer recorded"
            )
            logger.error("%s", self._failure)
            return
        self._written += len(events)
        self._batches += 1
        self._largest = max(self._largest, len(events))
        self._durable_batches += durable


def _settle(future: Future[None], failure: StoreError | None) -> None:
    # A flush whose awaiting task was cancelled has a cancelled future: nobody to tell.
    if future.set_running_or_notify_cancel():
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(failure)


# --- rows ---------------------------------------------------------------------------------------

_INSERT_EVENT = (
    "INSERT INTO events (run_id, seq, time, kind, subplan_id, step_id, payload) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# State changes, many rows per statement ({rows}).
_INSERT_STATE_CHANGES = """
INSERT INTO events (run_id, seq, time, kind, subplan_id, step_id, payload) VALUES {rows}
"""
_STATE_CHANGE_ROW = "(?1, ?, ?, 'subplan_state_changed', ?, NULL, ?)"
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
# Applied after the batch's state changes, in order: a group is kept only while it runs.
_PROCESS_STARTED = """
INSERT INTO subplans (run_id, subplan_id, state, pgid, pgid_start, log_file)
VALUES (?, ?, 'running', ?, ?, ?)
ON CONFLICT (run_id, subplan_id) DO UPDATE SET
    log_file = excluded.log_file,
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
_FINISH_RUN = "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?"
_RUN_ENDS = frozenset({"completed", "failed", "cancelled"})

#: Read in C, in one call; the fields of a state change row after its seq.
_STATE_FIELDS = operator.attrgetter("time", "subplan_id", "previous", "state", "attempt", "error")
#: The payload of an error-free state change is its id and one of a few tails: the same JSON
#: as the event's to_dict() without "event" and "timestamp".
_HEAD = '{"subplan_id":'
_quote = json.encoder.encode_basestring
#: The states as plain strings: sqlite3 binds an enum several times slower than a str.
_STATE_TEXT: dict[SubplanExecutionState, str] = {
    state: state.value for state in SubplanExecutionState
}
_TEXT: dict[SubplanExecutionState | None, str | None] = {
    None: None,
    **{state: state.value for state in SubplanExecutionState},
}
#: Rows per multi-row statement, at most (fewer if SQLite allows fewer variables).
_CHUNK = 256

_Row = tuple[Any, ...]


@functools.lru_cache(maxsize=32)
def _statement(template: str, row: str, rows: int) -> str:
    return template.format(rows=",".join([row] * rows))


def _tail(previous: SubplanExecutionState | None, state: str, attempt: int) -> str:
    before = "null" if previous is None else f'"{previous.value}"'
    return f',"previous":{before},"state":"{state}","attempt":{attempt},"error":null}}'


class _Batch:
    """The rows one batch of events writes."""

    __slots__ = (
        "changes",
        "others",
        "processes",
        "retries",
        "runs",
        "steps",
        "subplans",
        "terminal",
    )

    def __init__(self) -> None:
        #: State-change event rows, flattened: seq, time, subplan id, payload.
        self.changes: list[Any] = []
        #: Event rows of every other kind.
        self.others: list[_Row] = []
        #: subplan id -> [id, state, attempts, started, finished, exit_code, error]: its last
        #: state in the batch.
        self.subplans: dict[str, list[Any]] = {}
        #: Applied after the state changes, in order.
        self.processes: list[_Row] = []
        self.retries: list[_Row] = []
        self.steps: list[_Row] = []
        self.runs: list[_Row] = []
        self.terminal = False


class _Writer:
    """Turns events into rows and writes a batch in one transaction (the writer thread's)."""

    __slots__ = ("connection", "full", "known", "limit", "run_id", "seq", "tails")

    def __init__(self, connection: sqlite3.Connection, run_id: str) -> None:
        self.connection = connection
        self.run_id = run_id
        (self.seq,) = connection.execute(
            "SELECT coalesce(max(seq), 0) FROM events WHERE run_id = ?", (run_id,)
        ).fetchone()
        #: The subplans that have a row: their pending state needs no write.
        self.known = {
            subplan_id
            for (subplan_id,) in connection.execute(
                "SELECT subplan_id FROM subplans WHERE run_id = ?", (run_id,)
            )
        }
        self.limit = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self.full = False
        #: (previous, state, attempt) -> the end of an error-free state change's payload.
        self.tails: dict[tuple[Any, ...], str] = {}

    def checkpoint(self) -> bool:
        """Copy the WAL into the database without blocking anyone; True if it all went."""
        busy, _, _ = self.connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return not busy

    def write(self, events: list[Event], *, durable: bool) -> bool:
        """Write ``events``; returns whether the commit was fsynced (it held a terminal state).

        On any failure nothing of the batch is written and the writer is as it was.
        """
        seq, known, db = self.seq, set(self.known), self.connection
        try:
            batch = self.rows(events)
            full = durable and batch.terminal
            if full != self.full:
                db.execute(f"PRAGMA synchronous = {'FULL' if full else 'NORMAL'}")
                self.full = full
            db.execute("BEGIN IMMEDIATE")
            self._rows(_INSERT_STATE_CHANGES, _STATE_CHANGE_ROW, 4, batch.changes)
            db.executemany(_INSERT_EVENT, batch.others)
            ended: list[Any] = []
            other: list[Any] = []
            for row in batch.subplans.values():
                if row[4] is not None and row[6] is None:
                    ended += row[:5]
                else:
                    other += row
            self._rows(_END_SUBPLANS, _END_ROW, 5, ended)
            self._rows(_UPSERT_SUBPLANS, _SUBPLAN_ROW, 7, other)
            db.executemany(_PROCESS_STARTED, batch.processes)
            db.executemany(_RETRYING, batch.retries)
            db.executemany(_UPSERT_STEP, batch.steps)
            db.executemany(_FINISH_RUN, batch.runs)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self.seq, self.known = seq, known
            raise
        return full

    def _rows(self, template: str, row: str, width: int, flat: list[Any]) -> None:
        """Execute ``template`` for the rows in ``flat``, as many per statement as allowed."""
        chunk = max(1, min(_CHUNK, (self.limit - 1) // width))
        rows, head = len(flat) // width, (self.run_id,)
        for start in range(0, rows, chunk):
            count = min(chunk, rows - start)
            self.connection.execute(
                _statement(template, row, count),
                (*head, *flat[start * width : (start + count) * width]),
            )

    def rows(self, events: list[Event]) -> _Batch:
        """The rows of ``events``, numbered on from the last ``seq`` written."""
        seq, known, fields_of, text = self.seq, self.known, _STATE_FIELDS, _STATE_TEXT
        head, quote, tails = _HEAD, _quote, self.tails
        batch = _Batch()
        subplans, get_entry = batch.subplans, batch.subplans.get
        extend = batch.changes.extend
        terminal = False
        for event in events:
            seq += 1
            if type(event) is not SubplanStateChanged:
                self._other(event, seq, batch)
                continue
            time, subplan_id, previous, state_enum, attempt, error = fields_of(event)
            state = text[state_enum]
            if error is None:
                exit_code = error_json = None
                tail = tails.get((previous, state_enum, attempt))
                if tail is None:
                    tail = tails[previous, state_enum, attempt] = _tail(previous, state, attempt)
                extend((seq, time, subplan_id, head + quote(subplan_id) + tail))
            else:
                described = describe_error(error) or {}
                exit_code, error_json = described.get("exit_code"), _encode(described)
                payload = {
                    "subplan_id": subplan_id,
                    "previous": _TEXT[previous],
                    "state": state,
                    "attempt": attempt,
                    "error": described,
                }
                extend((seq, time, subplan_id, _encode(payload)))
            if state == "running":
                subplans[subplan_id] = [subplan_id, state, attempt, time, None, None, None]
            elif state == "pending":
                if subplan_id not in known:
                    known.add(subplan_id)
                    subplans[subplan_id] = [subplan_id, state, 0, None, None, None, None]
            else:
                terminal = True
                entry = get_entry(subplan_id)
                started = None if entry is None else entry[3]
                subplans[subplan_id] = [
                    subplan_id,
                    state,
                    attempt,
                    started,
                    time,
                    exit_code,
                    error_json,
                ]
        self.seq = seq
        batch.terminal = batch.terminal or terminal
        return batch

    def _other(self, event: Event, seq: int, batch: _Batch) -> None:
        run_id, kind, time = self.run_id, event.kind, event.time
        data = event.to_dict()
        del data["event"], data["timestamp"]
        subject: str | None = data.get("subplan_id") or data.get("plan_id") or None
        step_id: str | None = data.get("step_id")
        if kind in ("dispatch_started", "dispatch_finished"):
            step_id = data["name"]
        batch.others.append((run_id, seq, time, kind, subject, step_id, _encode(data)))
        if kind == "subplan_process_started":
            pid = data["pid"]
            self.known.add(data["subplan_id"])
            batch.processes.append(
                (
                    run_id,
                    data["subplan_id"],
                    pid,
                    process_start_time(pid),
                    os.path.abspath(data["log_file"]),
                )
            )
        elif kind == "subplan_retrying":
            batch.retries.append((data["attempt"] + 1, run_id, data["subplan_id"]))
        elif kind == "step_state_changed":
            running = data["state"] == "running"
            batch.terminal = batch.terminal or not running
            error = data["error"]
            batch.steps.append(
                (
                    run_id,
                    step_id,
                    data["state"],
                    data["total"],
                    time if running else None,
                    None if running else time,
                    None if error is None else _encode(error),
                )
            )
        elif kind == "plan_finished" and data["plan_id"] == "" and data["state"] in _RUN_ENDS:
            batch.terminal = True
            batch.runs.append((data["state"], time, run_id))
