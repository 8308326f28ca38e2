"""The recorder's writer process (issue #10): real processes and real signals, and its loop
served in this process through real pipes (coverage does not follow the process itself).

The process outlives neither the recorder's process (killed with SIGKILL, it leaves its writer
to write what it was handed, then exit) nor, as a spare, a few idle seconds; it ignores
SIGINT and SIGTERM, is never in a run's session nor marked as one of its processes, and a
writer that died never makes a flush hang."""

from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from subplans import EventBus, SubplanExecutionState, SubplanStateChanged
from subplans.execution.executor import PlanExecutor
from subplans.store import (
    PlanManifest,
    RecorderSettings,
    RunRecorder,
    RunStore,
    StoreError,
    writer_frames,
    writer_start,
)
from subplans.store.batch_writer import BatchWriter
from subplans.store.event_pickling import BatchPickler
from subplans.store.writer_process import (
    ACK,
    DATA,
    FLUSH,
    GO,
    HEADER,
    SESSION,
    STOP,
    serve,
)

from .conftest import Recorder, wait_until
from .process_helpers import alive
from .store_support import load, manifest, open_store

PENDING = SubplanExecutionState.PENDING
RUNNING = SubplanExecutionState.RUNNING
COMPLETED = SubplanExecutionState.COMPLETED
#: Handed over for sure: ``put`` ships every ``SHIP`` events to the pipe at once.
SHIPPED = 1024


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    opened = open_store(tmp_path)
    opened.start_run("r1", manifest("a", "b"))
    yield opened
    opened.close()


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No spare from another test: the next recorder starts a process of its own."""
    writer_start.retire_spares()
    yield
    writer_start.retire_spares()


def pending(count: int) -> list[SubplanStateChanged]:
    return [SubplanStateChanged(f"s{i}", None, PENDING) for i in range(count)]


def writer_of(recorder: RunRecorder) -> int:
    return recorder._pipe.process.pid


def ended(pid: int) -> bool:
    return not alive(pid)


# --- real processes ---------------------------------------------------------------------------


def test_a_killed_parent_s_writer_writes_what_it_was_handed_then_exits(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "state.db") as store:
        store.start_run("r1", manifest("a"))
    script = f"""
import os, signal, sys
from subplans import SubplanExecutionState, SubplanStateChanged
from subplans.store import RecorderSettings, RunStore
store = RunStore.open(sys.argv[1])
# A minute of group commit: only the end of its input makes the writer write at once.
recorder = store.recorder("r1", batch_delay=60, settings=RecorderSettings(eager=10**6))
for i in range({SHIPPED}):
    recorder.handle(SubplanStateChanged(f"s{{i}}", None, SubplanExecutionState.PENDING))
print(recorder._pipe.process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    parent = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "state.db")],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert parent.returncode == -signal.SIGKILL
    writer = int(parent.stdout)
    wait_until(lambda: ended(writer), "the writer's exit")
    with RunStore.open(tmp_path / "state.db") as store:
        assert len(store.events("r1")) == SHIPPED


def test_sigint_and_sigterm_are_ignored(store: RunStore, fresh: None) -> None:
    """Regression: an outer run that stops the subplan running this run (a nested ``subplans
    run``) sends SIGTERM to every process below it, the writer too, while this run still
    records its end: the writer exited 143 and the end was lost."""
    recorder = store.recorder("r1", batch_delay=60, settings=RecorderSettings(eager=10**6))
    writer = writer_of(recorder)
    assert os.getsid(writer) == writer  # a session of its own: no terminal's Ctrl-C reaches it
    recorder.flush_sync()  # started: it ignores the signals from here on
    for signum in (signal.SIGINT, signal.SIGTERM):
        for event in pending(SHIPPED):
            recorder.handle(event)
        os.kill(writer, signum)
        recorder.handle(SubplanStateChanged("a", None, PENDING))
        recorder.flush_sync()
    recorder.close()
    assert recorder.failure is None
    assert alive(writer)  # kept as the spare
    assert len(store.events("r1")) == 2 * SHIPPED + 2


def test_a_killed_writer_fails_the_flushes_without_a_hang(store: RunStore, fresh: None) -> None:
    recorder = store.recorder("r1")
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    recorder.flush_sync()
    os.kill(writer_of(recorder), signal.SIGKILL)
    message = rf"^cannot write to the store {store.path}: its writer process was killed by "
    with pytest.raises(StoreError, match=message + r"signal 9; events of run r1 are no longer"):
        recorder.flush_sync(timeout=30)
    for event in pending(SHIPPED):  # into a broken pipe: dropped
        recorder.handle(event)
    with pytest.raises(StoreError):
        recorder.close()
    assert recorder.statistics().dropped >= SHIPPED
    assert len(store.events("r1")) == 1


def test_the_writer_carries_no_run_marker(
    store: RunStore, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUBPLANS_RUN_ID", "outer")
    monkeypatch.setenv("SUBPLANS_SUBPLAN", "s")
    monkeypatch.setenv("KEPT", "1")
    recorder = store.recorder("r1")
    environ = Path(f"/proc/{writer_of(recorder)}/environ").read_bytes().split(b"\0")
    recorder.close()
    assert b"KEPT=1" in environ
    assert not [item for item in environ if item.startswith(b"SUBPLANS_")]


def test_a_closed_recorder_s_process_is_the_next_one_s_until_it_idles_out(
    store: RunStore, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_start, "SPARE_IDLE", 60.0)  # no idling out in between
    first = store.recorder("r1")
    writer = writer_of(first)
    first.close()
    assert alive(writer)
    second = store.recorder("r1")
    assert writer_of(second) == writer
    second.handle(SubplanStateChanged("a", None, PENDING))
    second.close()
    writer_start.retire_spares()
    monkeypatch.setattr(writer_start, "SPARE_IDLE", 0.01)
    third = store.recorder("r1")
    idler = writer_of(third)
    third.close()
    # Gone, and reaped: no zombie left behind.
    wait_until(lambda: not Path(f"/proc/{idler}").exists(), "the spare's exit")
    assert not writer_start._spares
    fourth = store.recorder("r1")  # the spare that idled out is replaced
    assert writer_of(fourth) not in (writer, idler)
    fourth.handle(SubplanStateChanged("b", None, PENDING))
    fourth.close()
    assert [event.subplan_id for event in store.events("r1")] == ["a", "b"]


def test_a_failed_recorder_s_process_is_not_lent_again(store: RunStore, fresh: None) -> None:
    recorder = store.recorder("r1", timeout=0.01)
    writer = writer_of(recorder)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        recorder.handle(SubplanStateChanged("a", None, PENDING))
        with pytest.raises(StoreError, match="database is locked"):
            recorder.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert ended(writer)


# --- the loop, served in this process ---------------------------------------------------------


class Served:
    """``serve`` in a thread, fed and read through real pipes."""

    def __init__(self, path: Path, spare_idle: float = 60.0) -> None:
        self.path = path
        self.input, self.feed = os.pipe()
        self.acks, ack_end = os.pipe()
        self.thread = threading.Thread(target=self._serve, args=(ack_end, spare_idle))
        self.pickler = BatchPickler()
        self.thread.start()

    def _serve(self, ack_end: int, spare_idle: float) -> None:
        try:
            serve(self.input, ack_end, spare_idle)
        finally:
            os.close(ack_end)

    def send(self, kind: int, body: bytes) -> None:
        os.write(self.feed, HEADER.pack(len(body), kind) + body)

    def session(self, **options: Any) -> None:
        self.send(SESSION, _json(_options(self.path, **options)))
        assert self.ack()[0] == 0  # taken at once
        self.send(GO, b"")

    def events(self, events: list[Any]) -> None:
        self.send(DATA, self.pickler.dumps(events))

    def mark(self, number: int, *, stop: bool = False) -> tuple[Any, ...]:
        self.send(STOP if stop else FLUSH, number.to_bytes(8, "little"))
        while True:
            found = self.ack()
            if found[0] == number:
                return found

    def ack(self) -> tuple[Any, ...]:
        head = writer_start.read_exact(self.acks, HEADER.size)
        length, kind = HEADER.unpack(head)
        assert kind == ACK
        return tuple(pickle.loads(writer_start.read_exact(self.acks, length)))

    def end(self) -> None:
        os.close(self.feed)
        self.thread.join(30)
        assert not self.thread.is_alive()
        os.close(self.acks)
        os.close(self.input)


def _json(settings: dict[str, Any]) -> bytes:
    return json.dumps(settings).encode()


def test_served_sessions_ack_their_markers_and_a_spare_takes_the_next(store: RunStore) -> None:
    served = Served(store.path)
    served.send(DATA, b"")  # not a session: skipped while none runs
    served.session(chunk=2, max_batch=2)
    served.events([(1.0, "a", None, PENDING, 0, None), (2.0, "a", PENDING, RUNNING, 1, None)])
    served.events([(3.0, "a", RUNNING, COMPLETED, 1, None)])
    assert served.mark(1) == (1, 3, 2, 2, 1, 0, None)
    served.mark(2, stop=True)
    served.session()
    served.events(pending(3))
    assert served.mark(3)[1] == 3
    served.end()
    assert len(store.events("r1")) == 6
    assert store.subplans("r1")[0].state == "completed"


def test_the_end_of_the_input_writes_what_was_read(store: RunStore) -> None:
    served = Served(store.path)
    served.session(batch_delay=60.0, eager=10**6)
    served.events(pending(5))
    served.end()
    assert len(store.events("r1")) == 5


def test_an_idle_spare_exits(store: RunStore) -> None:
    served = Served(store.path, spare_idle=0.05)
    served.session()
    served.mark(1, stop=True)
    served.thread.join(30)
    assert not served.thread.is_alive()
    os.close(served.feed)
    os.close(served.acks)
    os.close(served.input)


def test_a_lone_event_waits_out_the_batch_delay_and_many_do_not(store: RunStore) -> None:
    served = Served(store.path)
    served.session(batch_delay=0.06, eager=3)  # written after the counts are due again
    sent = time.monotonic()
    served.events(pending(1))
    assert served.ack()[1:3] == (1, 1)  # written after the delay, unasked
    assert time.monotonic() - sent >= 0.06
    served.mark(1, stop=True)
    served.session(batch_delay=600.0, eager=3)  # a lone event would wait ten minutes
    served.events(pending(3))
    assert served.ack()[1:3] == (3, 1)  # at once: as many as eager
    served.end()


def test_an_idle_writer_checkpoints_the_log(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = iter([False, True])
    calls: list[bool] = []
    checkpoint = BatchWriter.checkpoint

    def counted(self: BatchWriter) -> bool:
        checkpoint(self)
        calls.append(next(results, True))
        if len(calls) == 3:
            raise sqlite3.OperationalError("busy")  # tried again when next idle
        return calls[-1]

    monkeypatch.setattr(BatchWriter, "checkpoint", counted)
    served = Served(store.path)
    served.session(checkpoint_after=2, idle=0.01)
    served.events(pending(3))
    served.mark(1)
    wait_until(lambda: len(calls) >= 2)  # a busy checkpoint is tried again
    served.events([SubplanStateChanged("late", None, PENDING)])
    served.mark(2)
    served.events(pending(2))
    served.mark(3)
    wait_until(lambda: len(calls) >= 4)
    served.end()
    assert calls[:2] == [False, True]
    assert len(store.events("r1")) == 6


def test_a_store_that_cannot_be_opened_drops_the_session_s_events(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"no" * 1000)
    served = Served(garbage)
    served.send(SESSION, _json(_options(garbage)))
    assert served.ack()[0] == 0
    served.send(GO, b"")
    failed = served.ack()
    assert failed[-1] == f"cannot open the store {garbage}: file is not a database"
    served.events(pending(2))
    assert served.mark(1)[1:] == (0, 0, 0, 0, 2, failed[-1])
    served.end()


def test_a_parent_gone_ends_the_input(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_frames, "_PARENT_CHECK", 0.01)
    read, feed = os.pipe()
    frames = writer_frames.FrameInput(read, -1)  # as if reparented: not the process that started it
    assert frames.wait(None)
    assert frames.ended
    os.close(read)
    os.close(feed)


def _options(path: Path, **options: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "path": str(path),
        "name": str(path),
        "run_id": "r1",
        "durable": True,
        "batch_delay": 0.0,
        "max_batch": 20_000,
        "timeout": 5.0,
        "eager": 500,
        "idle": 0.25,
        "checkpoint_after": 10_000,
        "chunk": 256,
    }
    found.update(options)
    return found


def test_two_recorders_at_once_leave_one_spare(store: RunStore, fresh: None) -> None:
    store.start_run("r2", manifest("a"))  # one run has one writer at a time (writer_lock)
    first, second = store.recorder("r1"), store.recorder("r2")
    writers = writer_of(first), writer_of(second)
    assert writers[0] != writers[1]
    first.close()
    second.close()
    wait_until(lambda: ended(writers[0]), "the first spare's exit")  # replaced by the second
    assert alive(writers[1])


def test_a_full_pipe_keeps_frames_in_the_outbox_not_the_loop_waiting(
    store: RunStore, fresh: None
) -> None:
    recorder = store.recorder("r1", timeout=30.0)
    recorder.flush_sync()
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the writer waits on the lock: the pipe fills up
    try:
        # A frame larger than the pipe: written in part, the rest waits.
        recorder.handle(SubplanStateChanged("x" * 3_000_000, None, PENDING))
        recorder._pipe.ship()
        assert recorder._pipe.outbox
        events = pending(SHIPPED)
        for _ in range(200):  # about 5 MB of frames, more than a pipe holds
            for event in events:
                recorder.handle(event)
            if recorder._pipe.outbox:
                break
        assert recorder._pipe.outbox
        for event in events:  # into a full pipe: the outbox waits, not the caller
            recorder.handle(event)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    recorder.close()
    assert recorder.statistics().written == recorder._pipe.sent


# A plan that publishes every kind of event the store reads: steps, a run-time ``for_each``
# (its items), commands (their process groups and logs), a failure, a retry, a nested plan.
EVERY_KIND = """
name: every
automation_profile: {retries: 1}
steps:
  - name: fan
    failure_mode: continue_on_error
    for_each: {lines: items.txt}
    subplan: {name: 'n{index}', run: "if [ {item} = bad ]; then echo bad; exit 3; fi"}
  - name: after
    always: true
    subplans:
      - name: nested
        plan:
          steps:
            - {name: inner, run: "true"}
"""


def _stored(store: RunStore, run_id: str) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    events = []
    for event in store.events(run_id):
        data = event.to_dict()
        del data["run_id"]
        events.append(data)
    db = sqlite3.connect(store.path)
    try:
        tables = [
            db.execute(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY 2", (run_id,)).fetchall()
            for table in ("subplans", "steps", "step_items")
        ]
        runs = db.execute("SELECT status, finished_at FROM runs WHERE id = ?", (run_id,))
        return events, [row[1:] for row in tables[0]], tables[1] + tables[2], runs.fetchall()
    finally:
        db.close()


async def test_the_writer_process_writes_what_writing_here_writes(tmp_path: Path) -> None:
    """Every kind of event a plan run publishes, recorded through the writer process, and the
    same events written in this process with ``BatchWriter`` (as the writer thread did): the
    same events, rows, steps, items and end (their run ids aside)."""
    (tmp_path / "items.txt").write_text("a\nbad\nc\n")
    plan = load(tmp_path, EVERY_KIND)
    bus = EventBus()
    published = Recorder(bus)
    executor = PlanExecutor(plan, bus=bus, state_dir=tmp_path / "state")
    with RunStore.open(tmp_path / "state.db") as store:
        for run_id in (executor.run_id, "here"):
            store.start_run(run_id, PlanManifest.from_plan(plan), run_dir=executor.run_dir)
        recorder = store.recorder(executor.run_id, bus=bus)
        await executor.run()
        await recorder.aclose()
        connection = sqlite3.connect(store.path, isolation_level=None)
        writer = BatchWriter(connection, "here", chunk=256)
        for first in range(0, len(published.events), 7):  # batches of 7, as they may come
            writer.write(published.events[first : first + 7], durable=True)
        connection.close()
        kinds = {event.kind for event in published.events}
        assert {"step_items_read", "subplan_retrying", "subplan_process_started"} <= kinds
        recorded, here = _stored(store, executor.run_id), _stored(store, "here")
    assert recorded[0] == here[0]
    assert recorded[1] == here[1]
    assert [row[1:] for row in recorded[2]] == [row[1:] for row in here[2]]
    assert recorded[3] == here[3]


def test_a_write_failure_is_acked_and_later_events_dropped(store: RunStore) -> None:
    served = Served(store.path)
    served.session(timeout=0.01)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        served.events(pending(2))
        failed = served.mark(1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert failed[1:6] == (0, 0, 0, 0, 2)
    assert failed[6] == (
        f"cannot write to the store {store.path}: database is locked; "
        "events of run r1 are no longer recorded"
    )
    served.events(pending(1))
    assert served.mark(2)[5] == 3
    served.end()


def test_a_stop_during_the_group_commit_writes_at_once(store: RunStore) -> None:
    served = Served(store.path)
    served.session(batch_delay=60.0, eager=10**6)
    served.events(pending(2))
    assert served.mark(1, stop=True)[1] == 2
    served.end()


def test_acks_nobody_reads_are_dropped(store: RunStore) -> None:
    served = Served(store.path)
    served.session()
    os.close(served.acks)
    served.events(pending(2))
    served.send(FLUSH, (1).to_bytes(8, "little"))
    os.close(served.feed)
    served.thread.join(30)
    assert not served.thread.is_alive()
    os.close(served.input)
    assert len(store.events("r1")) == 2


def test_a_frame_read_in_parts_is_taken_whole(tmp_path: Path) -> None:
    read, feed = os.pipe()
    frames = writer_frames.FrameInput(read, os.getppid())
    frame = HEADER.pack(4, DATA) + b"abcd"
    os.write(feed, frame[:6])
    assert not frames.wait(0.01)
    os.write(feed, frame[6:])
    assert frames.wait(None)
    assert list(frames.frames) == [(DATA, b"abcd")]
    os.close(read)
    os.close(feed)


def test_written_here_a_failed_batch_leaves_nothing(store: RunStore) -> None:
    from subplans.engine.events import SubplanProcessStarted

    connection = sqlite3.connect(store.path, isolation_level=None)
    writer = BatchWriter(connection, "r1", chunk=4)
    pulled = 1.5  # a subplan pulled from a lazy input: pending and running at once
    writer.write(
        [
            SubplanProcessStarted("unknown", 999999999, "x.log"),
            SubplanStateChanged("p", None, PENDING, time=pulled),
            SubplanStateChanged("p", PENDING, RUNNING, 1, time=pulled),
        ],
        durable=False,
    )
    broken = SubplanStateChanged(None, None, PENDING, 0, RuntimeError("x"))  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        writer.write([SubplanStateChanged("c", None, PENDING), broken], durable=False)
    connection.close()
    assert [event.subplan_id for event in store.events("r1")] == ["unknown", "p", "p"]
    assert {row.subplan_id for row in store.subplans("r1")} == {"a", "b", "p", "unknown"}


def test_a_pipe_broken_under_the_recorder_drops_what_it_did_not_take(
    store: RunStore, fresh: None
) -> None:
    recorder = store.recorder("r1")
    recorder.flush_sync()  # started: its frames are no longer kept for a thread
    pipe = recorder._pipe
    read, broken = os.pipe()
    os.close(read)
    real, pipe.input = pipe.input, broken
    try:
        recorder.handle(SubplanStateChanged("a", None, PENDING))
        pipe.ship()
    finally:
        pipe.input = real
        os.close(broken)
    assert (pipe.gone, recorder.statistics().dropped) == (True, 1)
    assert pipe.process.stdin is not None
    pipe.process.stdin.close()  # its end of input: it exits, and the recorder knows
    with pytest.raises(StoreError, match=r"its writer process exited with status 0"):
        recorder.close()


def test_the_end_of_the_input_before_the_counts_are_due_ends_the_session(
    store: RunStore,
) -> None:
    served = Served(store.path)
    served.session(batch_delay=0.0, eager=1)
    served.events(pending(1))  # written at once, its counts not yet due (every 50 ms)
    served.end()
    assert len(store.events("r1")) == 1


def test_a_forked_child_never_takes_its_parent_s_spare(store: RunStore, fresh: None) -> None:
    store.recorder("r1").close()
    assert writer_start._spares
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: forking with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: exits at once, whatever happens
        os._exit(0 if not writer_start._spares else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert writer_start._spares  # the parent's is still there
    spare = writer_start._spares[0]
    writer_start._forked()  # as the child ran it
    assert not writer_start._spares
    writer_start.retire(spare)


def test_a_spare_that_cannot_take_a_session_is_replaced(store: RunStore, fresh: None) -> None:
    exited = subprocess.Popen(
        [sys.executable, "-c", "pass"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    exited.wait()
    writer_start._spares.append(exited)
    recorder = store.recorder("r1")
    assert writer_of(recorder) != exited.pid
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    recorder.close()
    assert len(store.events("r1")) == 1
    assert exited.stdin is not None
    assert exited.stdin.closed
