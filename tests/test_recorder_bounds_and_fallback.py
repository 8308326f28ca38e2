"""How long a recorder waits for its writer, and the writer it falls back to (the second
review, issue #10): a busy writer is never killed, however long its silence; a stopped one
bounds ``flush()`` as it bounds ``close()``; and where no writer process can start
(``sys.executable`` is not a Python: an application that embeds one), a thread of this
process writes instead. Real processes, real signals, real SQLite files."""

from __future__ import annotations

import asyncio
import concurrent.futures
import operator
import os
import pickle
import resource
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from subplans import SubplanExecutionState, SubplanStateChanged
from subplans.store import (
    RunRecorder,
    RunStore,
    StoreError,
    writer_frames,
    writer_pipe,
    writer_start,
)
from subplans.store.writer_process import DATA, HEADER
from subplans.store.writer_start import WriterThread

from .conftest import LogRecords, stop, wait_until
from .process_helpers import alive
from .store_support import manifest

PENDING = SubplanExecutionState.PENDING


@pytest.fixture
def path(tmp_path: Path) -> Iterator[Path]:
    writer_start.retire_spares()  # the next recorder starts a writer of its own
    found = tmp_path / "state.db"
    with RunStore.open(found) as store:
        store.start_run("r1", manifest("a", "b"))
    yield found
    writer_start.retire_spares()


def _events(path: Path) -> list[str | None]:
    with RunStore.open(path) as store:
        return [event.subplan_id for event in store.events("r1")]


# --- (b) a busy writer is waited for --------------------------------------------------------


class _Exec:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return exec, (self.code, {})


class _Busy:
    """Unpickled in the writer as an empty batch, once ``code`` has run there."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return operator.getitem, ((_Exec(self.code), []), 1)


def test_close_waits_for_a_writer_busy_longer_than_the_bound(
    path: Path, tmp_path: Path, records: LogRecords
) -> None:
    """Regression: a healthy writer silent for ``2 * timeout + 1`` seconds inside one long
    piece of work (one transaction; here a batch that spins on the CPU until told) was
    killed by ``close()``, and the events it held were lost."""
    begun, release = tmp_path / "begun", tmp_path / "release"
    code = (
        f"import os\nopen({str(begun)!r}, 'w').close()\n"
        f"while not os.path.exists({str(release)!r}): pass"
    )
    recorder = RunRecorder(path, "r1", timeout=0.01)  # taken for hung after 1.02 s of nothing
    recorder.flush_sync()
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    pipe = recorder._pipe
    with pipe.lock:
        pipe._frame(DATA, pickle.dumps(_Busy(code)), 0)
    wait_until(begun.exists, "the writer busy")
    recorder.handle(SubplanStateChanged("b", None, PENDING))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        closing = pool.submit(recorder.close)
        # Twice the bound went by without an ack: the old rule had killed it after one.
        wait_until(
            lambda: closing.done() or records.count("is silent but busy") >= 2,
            "two bounds of silence",
            timeout=30,
        )
        release.touch()
        closing.result()
    assert alive(pipe.process.pid)
    assert _events(path) == ["a", "b"]


# --- (c) flush() is bounded as close() is ---------------------------------------------------


def _stopped(path: Path) -> RunRecorder:
    """A recorder (bound 1.4 s) whose writer is stopped, with an event handed over."""
    recorder = RunRecorder(path, "r1", timeout=0.2)
    recorder.flush_sync()
    stop(recorder._pipe.process.pid)
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    return recorder


_KILLED = r"its writer process did not answer for 1.4 seconds and was killed; events"


def test_flush_sync_without_a_timeout_kills_a_stopped_writer(path: Path) -> None:
    """Regression: ``flush_sync()`` waited forever on a SIGSTOPped writer."""
    recorder = _stopped(path)
    writer = recorder._pipe.process.pid
    with pytest.raises(StoreError, match=_KILLED):
        recorder.flush_sync()
    assert not alive(writer)
    with pytest.raises(StoreError, match=_KILLED):
        recorder.close()


def test_flush_sync_s_timeout_and_the_bound_whichever_comes_first(path: Path) -> None:
    recorder = _stopped(path)
    with pytest.raises(TimeoutError):
        recorder.flush_sync(timeout=0.01)
    with pytest.raises(StoreError, match=_KILLED):
        recorder.flush_sync(timeout=60)
    with pytest.raises(StoreError, match=_KILLED):
        recorder.close()


async def test_flush_kills_a_stopped_writer(path: Path) -> None:
    """Regression: ``await flush()`` waited forever on a SIGSTOPped writer."""
    recorder = _stopped(path)
    with pytest.raises(StoreError, match=_KILLED):
        await recorder.flush()
    with pytest.raises(StoreError, match=_KILLED):
        await recorder.aclose()


async def test_a_cancelled_flush_leaves_the_recorder_usable(path: Path) -> None:
    recorder = _stopped(path)
    flushing = asyncio.create_task(recorder.flush())
    await asyncio.sleep(0)  # waiting on the writer now
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    os.kill(recorder._pipe.process.pid, signal.SIGCONT)
    await recorder.aclose()
    assert _events(path) == ["a"]


# --- (d) a thread writes where no process can start -----------------------------------------


def test_an_executable_that_cannot_run_falls_back_to_a_thread(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, records: LogRecords
) -> None:
    """Regression: a missing ``sys.executable`` made every recorder fail."""
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-python"))
    _records_through_a_thread(path)
    assert records.count("writing from a thread of this process instead") == 1
    assert records.count("cannot start") == 1


def test_an_executable_that_exits_at_once_falls_back_to_a_thread(
    path: Path, monkeypatch: pytest.MonkeyPatch, records: LogRecords
) -> None:
    """Regression: a ``sys.executable`` that is not a Python failed the recorder (its writer
    "exited with status 1") and dropped every event."""
    monkeypatch.setattr("sys.executable", "/bin/false")
    _records_through_a_thread(path)
    assert records.count("exited with status 1 at its start") == 1


def test_an_executable_that_never_answers_is_killed_and_replaced_by_a_thread(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, records: LogRecords
) -> None:
    """Regression: a ``sys.executable`` that neither ran Python nor exited held events and
    ``close()`` until the bound, then dropped them."""
    silent = tmp_path / "silent-python"
    silent.write_text("#!/bin/sh\nexec sleep 600\n")
    silent.chmod(0o755)
    monkeypatch.setattr("sys.executable", str(silent))
    monkeypatch.setattr(writer_pipe, "START_WAIT", 0.2)
    recorder = RunRecorder(path, "r1")
    process = recorder._pipe.process
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    recorder.flush_sync()  # sent to the silent process first, then to the thread
    assert isinstance(recorder._pipe.process, WriterThread)
    assert not alive(process.pid)
    recorder.handle(SubplanStateChanged("b", None, PENDING))
    recorder.close()
    assert _events(path) == ["a", "b"]
    assert records.count("did not answer its start within 0.2 seconds") == 1


def _records_through_a_thread(path: Path) -> None:
    recorder = RunRecorder(path, "r1")
    recorder.handle(SubplanStateChanged("a", None, PENDING))
    recorder.flush_sync()
    assert isinstance(recorder._pipe.process, WriterThread)
    assert recorder.statistics().written == 1
    recorder.handle(SubplanStateChanged("b", None, PENDING))
    thread = recorder._pipe.process
    recorder.close()
    assert not thread.thread.is_alive()  # ended: never kept as the spare
    assert _events(path) == ["a", "b"]


def test_frames_sent_to_a_process_that_stopped_reading_go_to_the_thread(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that closed its input before it answered: what the broken pipe did not take,
    and what came after, is written by the thread that replaces it."""
    deaf = tmp_path / "deaf-python"
    deaf.write_text("#!/bin/sh\nexec 0<&-\nexec sleep 600\n")
    deaf.chmod(0o755)
    monkeypatch.setattr("sys.executable", str(deaf))
    monkeypatch.setattr(writer_pipe, "START_WAIT", 2.0)
    recorder = RunRecorder(path, "r1")
    pipe = recorder._pipe
    wait_until(lambda: not os.path.exists(f"/proc/{pipe.process.pid}/fd/0"), "its input closed")
    for subplan_id in ("a", "b"):
        recorder.handle(SubplanStateChanged(subplan_id, None, PENDING))
        pipe.ship()
    recorder.close()
    assert _events(path) == ["a", "b"]
    assert recorder.statistics().dropped == 0


def test_the_input_s_end_or_the_parent_s_ends_the_wait_for_go() -> None:
    """The recorder's process died before it said ``GO``: nobody else writes what it handed
    over, so the session goes on with what it read (the end of the input, or the parent
    gone)."""
    read, feed = os.pipe()
    frames = writer_frames.FrameInput(read, os.getppid())
    os.write(feed, HEADER.pack(0, DATA))
    os.close(feed)
    frames.go()
    assert frames.ended
    assert [kind for kind, _ in frames.frames] == [DATA]
    os.close(read)
    read, feed = os.pipe()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writer_frames, "_PARENT_CHECK", 0.01)
        frames = writer_frames.FrameInput(read, -1)  # as if reparented
        frames.go()
    assert frames.ended
    os.close(read)
    os.close(feed)


def test_too_few_descriptors_are_one_store_error(path: Path) -> None:
    """Regression (third review): with a few descriptors left, the writer process could not be
    started and its thread could not make its pipes: a bare ``OSError`` came out of
    ``RunRecorder()``. Every limit gives a recorder that records, or one ``StoreError``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    outcomes: list[str] = []
    try:
        for free in range(12):
            resource.setrlimit(resource.RLIMIT_NOFILE, (_leaving(free), hard))
            try:
                recorder = RunRecorder(path, "r1")
            except StoreError as error:
                outcomes.append(str(error).partition(": ")[2])
                continue
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            try:  # (its writer may have failed to open the store as it started: one line)
                recorder.close()
            except StoreError as error:
                outcomes.append(str(error).partition(": ")[2])
            else:
                outcomes.append("recorded")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "Too many open files" in outcomes
    assert outcomes[-1] == "recorded"


def _leaving(free: int) -> int:
    """The descriptor limit below which exactly ``free`` descriptors are not open."""
    taken, limit, left = {int(fd) for fd in os.listdir("/proc/self/fd")}, 0, free
    while left or limit in taken:
        left -= limit not in taken
        limit += 1
    return limit
