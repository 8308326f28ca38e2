"""One writer at a time per run (``writer_lock``), the second review's data loss: after a
``kill -9`` of a run, its writer (a session of its own, SIGTERM ignored) still commits the
run's backlog while the run's next recorder (``subplans resume``) starts; that recorder's
writer read the run's last seq at its start, and every batch of the resumed run then failed on
``UNIQUE event_chunks(run_id, first_seq)``. Real processes, real signals, real SQLite files."""

from __future__ import annotations

import concurrent.futures
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from subplans import EventBus, SubplanExecutionState, SubplanStateChanged
from subplans.store import RunRecorder, RunStore, StoreError, writer_lock, writer_start
from subplans.store.writer_process import ACK, GO, HEADER, SESSION, serve

from .conftest import LogRecords, stop, wait_until
from .process_helpers import alive
from .store_support import manifest

PENDING = SubplanExecutionState.PENDING
RUNNING = SubplanExecutionState.RUNNING
COMPLETED = SubplanExecutionState.COMPLETED

#: A run's process: its recorder's writer is stopped (a slow disk, say) while an event is
#: handed to it; then the test kills the run with SIGKILL.
_RUN = """
import sys
from subplans import EventBus, SubplanExecutionState as S, SubplanStateChanged
from subplans.store import RunStore
store = RunStore.open(sys.argv[1])
bus = EventBus()
recorder = store.recorder("r1", bus=bus)
recorder.flush_sync()
print(recorder._pipe.process.pid, flush=True)
sys.stdin.readline()  # its writer is stopped now
bus.publish(SubplanStateChanged("a", S.PENDING, S.RUNNING, attempt=1))
recorder._pipe.ship()
print("handed", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def fresh() -> Iterator[None]:
    writer_start.retire_spares()
    yield
    writer_start.retire_spares()


def _orphan(path: Path) -> int:
    """Kill a run with SIGKILL while its stopped writer holds an event: the writer's pid."""
    run = subprocess.Popen(
        [sys.executable, "-c", _RUN, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert run.stdin is not None
    assert run.stdout is not None
    writer = int(run.stdout.readline())
    stop(writer)
    run.stdin.write("\n")
    run.stdin.flush()
    assert run.stdout.readline() == "handed\n"
    run.kill()
    run.wait()
    run.stdin.close()
    run.stdout.close()
    return writer


def test_a_resumed_run_s_recorder_waits_for_the_killed_run_s_writer(
    tmp_path: Path, fresh: None, records: LogRecords
) -> None:
    """Regression: the orphan's late commit and the new recorder's numbering collided, and
    nothing of the resumed run was recorded."""
    path = tmp_path / "state.db"
    with RunStore.open(path) as store:
        store.start_run("r1", manifest("a", "b"))
    writer = _orphan(path)
    bus = EventBus()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        made = pool.submit(RunRecorder, path, "r1", bus=bus, timeout=30.0)
        wait_until(
            lambda: made.done() or records.count("waiting"),
            "the new recorder waiting for the old writer",
        )
        if made.done():  # it did not wait (the bug): its writer read where the run ends
            made.result().flush_sync()
        os.kill(writer, signal.SIGCONT)  # the orphan catches up, then exits
        resumed = made.result()
    wait_until(lambda: not alive(writer), "the orphan's exit")
    bus.publish(SubplanStateChanged("b", PENDING, RUNNING, attempt=1))
    bus.publish(SubplanStateChanged("b", RUNNING, COMPLETED, attempt=1))
    resumed.close()
    with RunStore.open(path) as store:
        assert {s.subplan_id: s.state for s in store.subplans("r1")} == {
            "a": "running",
            "b": "completed",
        }
        assert [event.seq for event in store.events("r1")] == [1, 2, 3]


def test_a_stopped_earlier_writer_fails_the_new_recorder_naming_it(
    tmp_path: Path, fresh: None
) -> None:
    path = tmp_path / "state.db"
    with RunStore.open(path) as store:
        store.start_run("r1", manifest("a"))
    writer = _orphan(path)
    try:
        message = (
            rf"^cannot record run r1 in the store {path}: writer process {writer} of an "
            r"earlier recorder of the run still holds it and made no progress for 1.02 "
            r"seconds \(is it stopped\?\)$"
        )
        with pytest.raises(StoreError, match=message):
            RunRecorder(path, "r1", timeout=0.01)
    finally:
        os.kill(writer, signal.SIGKILL)
    wait_until(lambda: not alive(writer), "the orphan's end")
    with RunRecorder(path, "r1", timeout=0.01) as recorder:  # released by its death
        recorder.handle(SubplanStateChanged("a", None, PENDING))
    with RunStore.open(path) as store:
        assert len(store.events("r1")) == 1


def test_runs_never_wait_for_each_other_and_a_closed_recorder_frees_its_run(
    tmp_path: Path, fresh: None
) -> None:
    path = tmp_path / "state.db"
    with RunStore.open(path) as store:
        store.start_run("r1", manifest("a"))
        store.start_run("r2", manifest("a"))
    first = RunRecorder(path, "r1", timeout=0.01)
    first.flush_sync()  # its writer holds r1
    with RunRecorder(path, "r2", timeout=0.01) as other:
        other.handle(SubplanStateChanged("a", None, PENDING))
    with pytest.raises(StoreError, match=rf"writer process {first._pipe.process.pid} of an"):
        RunRecorder(path, "r1", timeout=0.01)
    first.close()
    RunRecorder(path, "r1", timeout=0.01).close()
    assert os.path.getsize(f"{path}-writers") == 0  # one empty file beside the store


def test_a_session_whose_run_is_held_fails_naming_the_holder(tmp_path: Path) -> None:
    """The writer takes the lock itself (a recorder may have looked before another took it):
    served here, its session waits for the holder, this process, then fails as a failed
    write, acked with the counts."""
    path = tmp_path / "state.db"
    with RunStore.open(path) as store:
        store.start_run("r1", manifest("a"))
    held = writer_lock.RunWriterLock(str(path), "r1")
    assert held.take() is None
    taken = writer_lock.RunWriterLock(str(path), "r1")
    assert taken.take() == os.getpid()  # the kernel would not say: this process holds it
    taken.close()
    read, feed = os.pipe()
    acks, ack_end = os.pipe()
    options = json.dumps({**_OPTIONS, "path": str(path), "name": str(path)}).encode()
    os.write(feed, HEADER.pack(len(options), SESSION) + options + HEADER.pack(0, GO))
    serving = threading.Thread(target=serve, args=(read, ack_end, 0.0, 0))
    serving.start()
    try:
        failure = None
        while failure is None:
            length, kind = HEADER.unpack(writer_start.read_exact(acks, HEADER.size))
            assert kind == ACK
            failure = pickle.loads(writer_start.read_exact(acks, length))[-1]
        assert failure == (
            f"cannot record run r1 in the store {path}: writer process {os.getpid()} of an "
            "earlier recorder of the run still holds it and made no progress for 1.02 "
            "seconds (is it stopped?)"
        )
    finally:
        os.close(feed)
        serving.join()
        held.close()
        for fd in (read, acks, ack_end):
            os.close(fd)


_OPTIONS = {
    "run_id": "r1",
    "durable": True,
    "batch_delay": 0.0,
    "max_batch": 20_000,
    "timeout": 0.01,
    "eager": 500,
    "idle": 0.25,
    "checkpoint_after": 10_000,
    "chunk": 256,
}


def test_no_room_for_the_lock_file_records_without_it(tmp_path: Path, fresh: None) -> None:
    """No lock file can be made beside the store (here a folder has its name; a read-only
    folder does the same): recorders go on without it, and SQLite says what is wrong with the
    store, if anything."""
    path = tmp_path / "state.db"
    with RunStore.open(path) as store:
        store.start_run("r1", manifest("a"))
    Path(f"{path}-writers").mkdir()
    with RunRecorder(path, "r1") as recorder:
        recorder.handle(SubplanStateChanged("a", None, PENDING))
    with RunStore.open(path) as store:
        assert len(store.events("r1")) == 1


def test_a_forked_child_holds_none_of_its_parent_s_locks(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    lock = writer_lock.RunWriterLock(str(path), "r1")
    assert lock.take() is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: forking with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: exits at once, whatever happens
        child = writer_lock.RunWriterLock(str(path), "r1")
        os._exit(0 if child.take() == os.getppid() else 1)
    assert os.waitpid(pid, 0)[1] == 0
    lock.close()
    writer_lock._forked()  # as the child ran it (nothing is held here now)
    assert not writer_lock._files


def test_a_session_without_room_for_the_lock_file_writes(tmp_path: Path) -> None:
    """The writer's side of the above: its session goes on without the lock."""
    path = tmp_path / "state.db"
    with RunStore.open(path) as store:
        store.start_run("r1", manifest("a"))
    Path(f"{path}-writers").mkdir()
    read, feed = os.pipe()
    acks, ack_end = os.pipe()
    options = json.dumps({**_OPTIONS, "path": str(path), "name": str(path)}).encode()
    os.write(feed, HEADER.pack(len(options), SESSION) + options + HEADER.pack(0, GO))
    serving = threading.Thread(target=serve, args=(read, ack_end, 0.0, 0))
    serving.start()
    length, _ = HEADER.unpack(writer_start.read_exact(acks, HEADER.size))
    assert pickle.loads(writer_start.read_exact(acks, length))[-1] is None  # its start
    os.close(feed)  # the end of its input: the session ends, well
    serving.join()
    for fd in (read, acks, ack_end):
        os.close(fd)


def test_what_a_resume_decides_from_waits_for_the_killed_run_s_writer(
    tmp_path: Path, fresh: None, records: LogRecords
) -> None:
    """Regression (third review): a resume read what to skip and what to stop before its
    recorder waited for the killed run's writer, which then committed its backlog: subplans
    it recorded completed ran again. ``subplans run``/``resume`` call this before deciding."""
    path = tmp_path / "state.db"
    with RunStore.open(path) as store:
        store.start_run("r1", manifest("a", "b"))
    writer = _orphan(path)

    def decide() -> dict[str, str]:
        with RunStore.open(path) as store:
            store.wait_for_writer("r1")
            return {s.subplan_id: s.state for s in store.subplans("r1")}

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        decided = pool.submit(decide)
        wait_until(
            lambda: decided.done() or records.count("waiting"),
            "the wait for the old writer",
        )
        assert not decided.done()
        os.kill(writer, signal.SIGCONT)  # the orphan catches up, then exits
        assert decided.result() == {"a": "running", "b": "pending"}
