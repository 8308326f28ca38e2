"""The recorder's writer process where a review found data lost or a wait without end (issue
#10): events that cannot be pickled, a fork, a stopped writer, many descriptors, an event put
while the sender ships, a parent gone before the writer looked, and the writer's input closed
while another thread writes to it. Real processes, real signals, real SQLite files."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pytest

from subplans import EventBus, SubplanExecutionState, SubplanStateChanged
from subplans.engine.events import Event
from subplans.store import (
    PlanManifest,
    RunStore,
    StoreError,
    writer_frames,
    writer_pipe,
    writer_start,
)
from subplans.store.writer_process import DATA, HEADER

from . import every_event
from .conftest import stop, wait_until
from .process_helpers import alive
from .store_support import manifest, open_store

PENDING = SubplanExecutionState.PENDING
RUNNING = SubplanExecutionState.RUNNING
COMPLETED = SubplanExecutionState.COMPLETED
FAILED = SubplanExecutionState.FAILED


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    opened = open_store(tmp_path)
    opened.start_run("r1", manifest("a", "b"))
    yield opened
    opened.close()


@pytest.fixture
def fresh() -> Iterator[None]:
    """No spare from another test: the next recorder starts a process of its own."""
    writer_start.retire_spares()
    yield
    writer_start.retire_spares()


def pending(count: int) -> list[SubplanStateChanged]:
    return [SubplanStateChanged(f"s{i}", None, PENDING) for i in range(count)]


class _NoStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


@dataclass(slots=True)
class _Unreadable(Event):
    kind: ClassVar[str] = "unreadable"

    def to_dict(self) -> dict[str, Any]:
        raise ValueError("cannot say")


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (SubplanStateChanged("a", RUNNING, FAILED, 1, _NoStr()), "no str"),
        (_Unreadable(), "cannot say"),
    ],
)
def test_an_event_that_cannot_be_pickled_fails_the_store_as_a_failed_write(
    store: RunStore, fresh: None, bad: Event, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: the sender thread died on it; the events of its batch and up to 511 later
    ones were dropped unsaid while ``flush()`` succeeded. As the writer thread did: the batch
    is dropped, the failure logged once, later events dropped, flush and close raise it."""
    recorder = store.recorder("r1")
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    recorder.flush_sync()
    recorder.handle(SubplanStateChanged("a", PENDING, RUNNING, 1))
    recorder.handle(bad)
    message = (
        rf"^cannot write to the store {store.path}: {why}; events of run r1 are no longer "
        r"recorded$"
    )
    with pytest.raises(StoreError, match=message):
        recorder.flush_sync(timeout=30)
    for event in pending(3):
        recorder.handle(event)
    with pytest.raises(StoreError, match=message):
        recorder.close()
    assert recorder.statistics().dropped == 5
    assert [record.getMessage() for record in caplog.records].count(str(recorder.failure)) == 1
    assert [event.subplan_id for event in store.events("r1")] == ["a"]


def test_a_forked_child_leaves_its_parent_s_writer_alone(store: RunStore, fresh: None) -> None:
    """Regression: a forked child closing its copy of the recorder (leaving a ``with`` block)
    ended the parent's writer session, whose later events were then dropped."""
    bus = EventBus()
    recorder = store.recorder("r1", bus=bus)
    bus.publish(SubplanStateChanged("a", None, PENDING))
    recorder.flush_sync()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: forking with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: exits at once, whatever happens
        code = 1
        try:
            for event in pending(1024):  # shipped by the parent's writer: would be recorded
                bus.publish(event)
            try:
                recorder.flush_sync(timeout=5)
            except RuntimeError:
                recorder.close()
                code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    bus.publish(SubplanStateChanged("a", PENDING, RUNNING, 1))
    bus.publish(SubplanStateChanged("a", RUNNING, COMPLETED, 1))
    recorder.close()
    assert recorder.failure is None
    assert [event.subplan_id for event in store.events("r1")] == ["a", "a", "a"]


def test_a_forked_child_s_copy_only_detaches(store: RunStore, fresh: None) -> None:
    """What the child does above, here where coverage sees it: a copy in another process
    drops what it is handed, refuses to flush, and closes without a word to the writer."""
    recorder = store.recorder("r1")
    pipe = recorder._pipe
    pipe.pid = -1  # as in a forked child
    for event in pending(1024):
        recorder.handle(event)
    with pytest.raises(RuntimeError, match=r"^the recorder was made by process -1: it flushes"):
        recorder.flush_sync()
    recorder.close()
    assert recorder.statistics().dropped == 1024
    pipe.pid = os.getpid()
    pipe.mark(True).future.result(30)  # what the parent's close does
    pipe.join()
    assert store.events("r1") == []


def test_close_kills_a_writer_that_stopped_answering(store: RunStore, fresh: None) -> None:
    """Regression: a SIGSTOPped writer made ``close()`` wait forever."""
    recorder = store.recorder("r1", timeout=0.2)
    writer = recorder._pipe.process.pid
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    recorder.flush_sync()
    stop(writer)
    recorder.handle(SubplanStateChanged("b", None, PENDING))
    message = r"its writer process did not answer for 1.4 seconds and was killed; events"
    with pytest.raises(StoreError, match=message):
        recorder.close()
    assert not alive(writer)
    assert [event.subplan_id for event in store.events("r1")] == ["a"]


async def test_aclose_kills_a_writer_that_stopped_answering(store: RunStore, fresh: None) -> None:
    recorder = store.recorder("r1", timeout=0.2)
    writer = recorder._pipe.process.pid
    await recorder.flush()
    stop(writer)
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    with pytest.raises(StoreError, match=r"did not answer for 1.4 seconds and was killed"):
        await recorder.aclose()
    assert not alive(writer)


def test_close_waits_for_a_writer_that_answers(store: RunStore, fresh: None) -> None:
    """A writer that answers is waited for, however long: its acks keep it alive."""
    recorder = store.recorder("r1", timeout=0.2)
    recorder.flush_sync()
    pipe = recorder._pipe
    stop(pipe.process.pid)  # stopped: hung once silent for the bound
    wait_until(lambda: psutil.Process(pipe.process.pid).status() == psutil.STATUS_STOPPED)
    pipe.heard -= 10  # long silent, as far as the bound goes
    pipe.watch.since -= 10
    assert pipe.answer_within(1.4) is None
    assert pipe.answer_within(1.4) is None  # killed once
    with pytest.raises(StoreError, match=r"did not answer for 1.4 seconds"):
        recorder.close()
    fresh_recorder = store.recorder("r1", timeout=0.2)
    left = fresh_recorder._pipe.answer_within(1.4)
    assert left is not None
    assert 0 < left <= 1.4
    fresh_recorder.close()


def test_many_descriptors_open_take_the_spare(store: RunStore, fresh: None) -> None:
    """Regression: with a descriptor above 1023, ``select.select`` raised ValueError while a
    recorder took the spare, and the spare leaked."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if hard != resource.RLIM_INFINITY and hard < wanted:  # pragma: no cover
        pytest.skip(f"at most {hard} descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    held: list[int] = []
    try:
        while not held or held[-1] < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        store.recorder("r1").close()  # leaves the spare, its pipes above 1100
        spare = writer_start._spares[0]
        assert spare.stdout is not None
        assert spare.stdout.fileno() > 1100
        recorder = store.recorder("r1")  # the spare, its ack read by poll
        assert recorder._pipe.process is spare
        recorder.handle(SubplanStateChanged("a", None, PENDING))
        recorder.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(store.events("r1")) == 1


def test_an_event_put_while_the_sender_ships_is_shipped(
    store: RunStore, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: ``put`` wakes the sender only for the first event queued; one put after the
    sender read the queue's length, and before it took that many, stayed queued unshipped
    (never recorded while the run idled, lost with a SIGKILL however old)."""
    late = SubplanStateChanged("b", None, PENDING)
    raced = threading.Event()

    class Deque(collections.deque[Any]):
        def __len__(self) -> int:
            count = super().__len__()
            sender = threading.current_thread().name == "subplans recorder r1"
            if sender and count and not raced.is_set():
                raced.set()
                self.append(late)  # as the event loop's put, in that window: nobody woken
            return count

    monkeypatch.setattr(writer_pipe, "deque", Deque)
    recorder = store.recorder("r1")
    recorder.handle(SubplanStateChanged("a", None, PENDING))  # wakes the sender
    assert raced.wait(30)
    wait_until(lambda: len(store.events("r1")) == 2, "the late event's row")
    recorder.close()


def test_a_writer_whose_parent_is_gone_at_its_start_exits(tmp_path: Path) -> None:
    """Regression: the writer read its parent's pid once started; a parent killed within
    that start (while a forked child held the writer's input) left it waiting forever."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    command = [sys.executable, "-I", "-S", "-c", writer_start._BOOT, writer_start._SOURCE]
    writer = subprocess.Popen(
        [*command, "60", str(gone.pid)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert writer.wait(30) == 0  # its input still open
    finally:
        assert writer.stdin is not None
        assert writer.stdout is not None
        writer.stdin.close()
        writer.stdout.close()


def test_a_dead_writer_s_input_is_closed_under_the_lock(store: RunStore, fresh: None) -> None:
    """Regression: the ack thread closed the writer's input without the lock, while another
    thread could be writing to it (EBADF, or bytes into a descriptor opened meanwhile)."""
    recorder = store.recorder("r1")
    pipe = recorder._pipe
    recorder.flush_sync()
    stdin = pipe.process.stdin
    assert stdin is not None
    with pipe.lock:
        os.kill(pipe.process.pid, signal.SIGKILL)
        wait_until(lambda: pipe.failure is not None, "the writer's death")
        assert not stdin.closed  # the ack thread waits for the lock
    pipe.acker.join(30)
    assert stdin.closed
    with pytest.raises(StoreError, match=r"was killed by signal 9"):
        recorder.close()


def test_a_nested_run_s_recorder_outlives_the_outer_run_s_sigterm(tmp_path: Path) -> None:
    """A run that a SIGTERM ends (as an outer run stops a subplan whose command is this run)
    records its end: the signal reaches its writer too, which ignores it."""
    (tmp_path / "plan.yaml").write_text(
        "name: inner\nsteps:\n  - name: s\n    subplans:\n"
        + "".join(f"      - {{name: n{i}, run: 'sleep 30'}}\n" for i in range(3))
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "subplans", "run", "plan.yaml", "--events-jsonl", "-"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert run.stdout is not None
    started = 0
    for line in run.stdout:
        started += b'"subplan_process_started"' in line
        if started == 3:
            break
    assert started == 3
    # As an outer run stops a subplan: the run and every process below it, its writer too.
    below = psutil.Process(run.pid).children(recursive=True)
    assert any(writer_start._BOOT in " ".join(child.cmdline()) for child in below)
    for process in [*below, psutil.Process(run.pid)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGTERM)
    run.communicate(timeout=60)
    with RunStore.open(tmp_path / ".subplans" / "state.db") as store:
        summary = store.get_run()
        rows = store.subplans(summary.id)
    assert run.returncode == 130
    assert summary.recorded_status == "cancelled"
    assert [row.state for row in rows] == ["failed"] * 3  # cancelled: interrupted by SIGTERM


def test_a_failure_logged_once_even_if_said_twice(
    store: RunStore, fresh: None, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = store.recorder("r1")
    pipe = recorder._pipe
    pipe._fail("first")
    pipe._fail("second")
    assert str(recorder.failure) == "first"
    with pytest.raises(StoreError, match=r"^first$"):
        recorder.close()
    assert [record.getMessage() for record in caplog.records] == ["first"]


async def test_the_rows_are_those_the_writer_thread_wrote(tmp_path: Path) -> None:
    """Every kind of event, recorded through the writer process, leaves exactly the rows the
    writer thread it replaced left (``every_event_rows.json``, captured from that recorder)."""
    bus = EventBus()
    with RunStore.open(tmp_path / "state.db") as store:
        store.start_run("r1", every_event.manifest(PlanManifest))
        recorder = store.recorder("r1", bus=bus)
        published = every_event.events()
        for event in published[:20]:
            bus.publish(event)
        await recorder.flush()  # in more than one batch
        for event in published[20:]:
            bus.publish(event)
        await recorder.aclose()
        assert every_event.stored(store, "r1") == json.loads(every_event.ROWS.read_text())


async def test_a_forked_child_s_copy_only_detaches_on_aclose(store: RunStore, fresh: None) -> None:
    recorder = store.recorder("r1")
    pipe = recorder._pipe
    pipe.pid = -1  # as in a forked child
    await recorder.aclose()
    pipe.pid = os.getpid()
    pipe.mark(True).future.result(30)
    pipe.join()


def test_a_flush_behind_a_full_pipe_waits_for_the_sender(store: RunStore, fresh: None) -> None:
    recorder = store.recorder("r1", timeout=30.0)
    pipe = recorder._pipe
    recorder.flush_sync()
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the writer waits on the lock: the pipe fills up
    try:
        recorder.handle(SubplanStateChanged("x" * 3_000_000, None, PENDING))  # > the pipe
        marker = pipe.mark(False)
        assert pipe.outbox  # the marker too waits: the sender writes it once the pipe takes it
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    marker.future.result(30)
    recorder.close()
    assert recorder.statistics().written == 1


class _MissOnce:
    """A poller whose first look finds nothing, as when the wait times out."""

    def __init__(self, real: Any) -> None:
        self.real, self.looks = real, 0

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        self.looks += 1
        return [] if self.looks == 1 else self.real.poll(timeout)


def test_the_input_looks_again_while_its_parent_lives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_frames, "_PARENT_CHECK", 0.001)
    read, feed = os.pipe()
    try:
        frames = writer_frames.FrameInput(read, os.getppid())
        assert not frames.wait(0.005)  # several looks, then the time is up
        assert not frames.ended
        os.write(feed, HEADER.pack(0, DATA))
        frames.poller = _MissOnce(frames.poller)  # type: ignore[assignment]
        assert frames.wait(None)  # missed once, the parent there: looks again
        assert list(frames.frames) == [(DATA, b"")]
    finally:
        os.close(read)
        os.close(feed)


def test_the_wait_for_go_looks_again_while_its_parent_lives() -> None:
    read, feed = os.pipe()
    try:
        frames = writer_frames.FrameInput(read, os.getppid())
        os.write(feed, HEADER.pack(0, DATA) + HEADER.pack(0, writer_frames.GO))
        frames.poller = _MissOnce(frames.poller)  # type: ignore[assignment]
        frames.go()  # missed once, the parent there: looks again
        assert list(frames.frames) == [(DATA, b"")]
        assert not frames.ended
    finally:
        os.close(read)
        os.close(feed)
