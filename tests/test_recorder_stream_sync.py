"""The writer process's stream of batches (issue #10, stop 14): a stream's transactions gather
what comes meanwhile, and its terminal batches share one fsync, which a marker, the end of the
stream or of the input never leaves out.

A ``_Session`` is driven by hand here, over a real pipe and a real store: what the pipe holds
when the session looks is then chosen by the test, not by timing."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from subplans import SubplanExecutionState
from subplans.store import RunStore, writer_process
from subplans.store.batch_writer import BatchWriter
from subplans.store.event_pickling import BatchPickler
from subplans.store.writer_process import DATA, FLUSH, GO, HEADER, WriterOptions, _Input, _Session

from .store_support import manifest, open_store

PENDING = SubplanExecutionState.PENDING
RUNNING = SubplanExecutionState.RUNNING
COMPLETED = SubplanExecutionState.COMPLETED


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    opened = open_store(tmp_path)
    opened.start_run("r1", manifest(*(f"s{index}" for index in range(8))))
    yield opened
    opened.close()


class Fed:
    """A session of run r1 whose input the test writes; its acks are read and dropped."""

    def __init__(self, path: Path, **options: Any) -> None:
        self.input, self.feed = os.pipe()
        self.acks, ack_end = os.pipe()
        settings: dict[str, Any] = {
            "path": str(path),
            "name": str(path),
            "run_id": "r1",
            "durable": True,
            "batch_delay": 60.0,
            "max_batch": 20_000,
            "timeout": 5.0,
            "eager": 2,
            "idle": 0.25,
            "checkpoint_after": 10_000,
            "chunk": 256,
        }
        settings.update(options)
        self.frames = _Input(self.input, 0)
        self.send(GO, b"")
        self.session = _Session(WriterOptions(**settings), ack_end, self.frames)
        self.pickler = BatchPickler()
        self.ack_end = ack_end

    def send(self, kind: int, body: bytes) -> None:
        os.write(self.feed, HEADER.pack(len(body), kind) + body)

    def events(self, *events: Any) -> None:
        self.send(DATA, self.pickler.dumps(list(events)))

    def take(self) -> bool:
        """All the pipe holds, read and taken as the session's loop does."""
        while self.frames.poller.poll(0):
            self.frames._read()
        return self.session.take(self.frames)

    def close(self) -> None:
        assert self.session.connection is not None
        self.session.connection.close()
        for fd in (self.input, self.feed, self.acks, self.ack_end):
            os.close(fd)


def ends(*indexes: int) -> list[tuple[Any, ...]]:
    """A start and an end of each subplan ``s<index>``: a terminal batch."""
    return [
        move
        for index in indexes
        for move in (
            (1.0 + index, f"s{index}", PENDING, RUNNING, 1, None),
            (2.0 + index, f"s{index}", RUNNING, COMPLETED, 1, None),
        )
    ]


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each commit was made durable by itself (synchronous=FULL)."""
    made: list[bool] = []
    write_plain = BatchWriter.write_plain

    def recorded(self: BatchWriter, events: Any, *, durable: bool) -> bool:
        made.append(durable)
        return write_plain(self, events, durable=durable)

    monkeypatch.setattr(BatchWriter, "write_plain", recorded)
    return made


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The descriptors ``os.fsync`` was called with (the writer runs in this process here)."""
    called: list[int] = []
    fsync = os.fsync

    def recorded(fd: int) -> None:
        called.append(fd)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded)
    return called


@pytest.fixture(autouse=True)
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream waits for nothing more than what the pipe holds (the tests put it there), and
    its transactions gather nothing (but where a test says otherwise)."""
    monkeypatch.setattr(writer_process, "_STREAM_WAIT", 0.0)
    monkeypatch.setattr(writer_process, "_SYNC_EVERY", 60.0)
    monkeypatch.setattr(writer_process, "_STREAM_BATCH", 2)


def test_a_terminal_batch_followed_by_events_leaves_its_fsync_to_theirs(
    store: RunStore, commits: list[bool]
) -> None:
    fed = Fed(store.path)
    fed.events(*ends(0))
    fed.take()
    fed.events(*ends(1))  # in the pipe as the first batch is written
    fed.session.write()
    assert (commits, fed.session.durable_batches) == ([False], 0)
    fed.take()
    fed.events(*ends(2))
    fed.session.write()
    assert (commits, fed.session.durable_batches) == ([False, False], 0)
    fed.take()
    fed.session.write()  # the last of the stream: its fsync is the first batches' too
    assert (commits, fed.session.durable_batches) == ([False, False, True], 3)
    fed.close()
    assert [row.state for row in store.subplans("r1", state="completed")] == ["completed"] * 3


def test_a_marker_fsyncs_what_the_stream_left_unsynced(
    store: RunStore, commits: list[bool], fsyncs: list[int]
) -> None:
    fed = Fed(store.path)
    fed.events(*ends(0))
    fed.take()
    fed.events()  # an empty batch: the stream goes on, and nothing more is committed
    fed.session.write()
    assert (commits, fsyncs) == ([False], [])
    fed.send(FLUSH, (1).to_bytes(8, "little"))
    fed.take()  # the WAL and, the first time, its folder
    assert (commits, len(fsyncs), fed.session.durable_batches) == ([False], 2, 1)
    fed.events(*ends(1))
    fed.take()
    fed.events()
    fed.session.write()
    fed.send(FLUSH, (2).to_bytes(8, "little"))
    fed.take()
    assert (commits, len(fsyncs), fed.session.durable_batches) == ([False, False], 3, 2)
    fed.close()


def test_a_failed_fsync_fails_the_store(store: RunStore, tmp_path: Path) -> None:
    fed = Fed(store.path)
    fed.events(*ends(0))
    fed.take()
    fed.events()
    fed.session.write()
    gone = str(tmp_path / "gone" / "x.db")
    fed.session.options = WriterOptions(**{**fed.session.options.to_dict(), "path": gone})
    fed.send(FLUSH, (1).to_bytes(8, "little"))
    fed.take()
    session = fed.session
    assert (session.durable_batches, session.written, session.dropped) == (0, 2, 0)
    assert session.failure is not None
    assert session.failure.startswith(f"cannot write to the store {store.path}: ")
    assert session.failure.endswith("events of run r1 are no longer recorded")
    fed.events(*ends(1))
    fed.take()
    fed.session.write()
    assert (session.written, session.dropped) == (2, 2)
    fed.close()


def test_the_end_of_the_input_fsyncs_the_stream(
    store: RunStore, commits: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_process, "_STREAM_BATCH", 2048)
    fed = Fed(store.path)
    fed.events(*ends(0))
    fed.take()
    fed.frames.ended = True  # as the loop finds it: nothing more will come
    fed.events(*ends(1))  # never read
    fed.session.write()
    assert (commits, fed.session.durable_batches) == ([True], 1)
    fed.close()


def test_a_stream_s_transaction_gathers_what_came_up_to_a_marker(
    store: RunStore, commits: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_process, "_STREAM_BATCH", 6)
    fed = Fed(store.path)
    fed.events(*ends(0))
    fed.take()
    fed.events(*ends(1))
    fed.events(*ends(2))
    fed.events(*ends(3))  # past the batch's size: left for the next
    fed.session.write()
    assert (commits, fed.session.largest) == ([False], 6)
    fed.take()
    fed.events(*ends(4))
    fed.send(FLUSH, (1).to_bytes(8, "little"))
    fed.events(*ends(5))  # behind the marker: not gathered
    fed.session.write()
    assert (commits, fed.session.written) == ([False, True], 10)
    assert fed.take() is False  # the marker: nothing left to write before it
    assert fed.session.pending == ends(5)
    assert fed.session.marker == 1
    fed.close()


def test_a_session_not_yet_fed_writes_its_pending_at_once(
    store: RunStore, commits: list[bool]
) -> None:
    fed = Fed(store.path)
    fed.session.pending = [*ends(0)]  # as if taken, the input never looked at
    fed.session.write()
    assert (commits, fed.session.durable_batches) == ([True], 1)
    fed.close()


def test_a_relaxed_session_never_fsyncs(
    store: RunStore, fsyncs: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_process, "_STREAM_BATCH", 2048)
    fed = Fed(store.path, durable=False)
    fed.events(*ends(0))
    fed.take()
    fed.events()
    fed.session.write()  # gathers the empty batch, then nothing more comes
    fed.send(FLUSH, (1).to_bytes(8, "little"))
    fed.take()
    assert (fsyncs, fed.session.durable_batches, fed.session.written) == ([], 0, 2)
    fed.close()


def test_pickled_moves_are_plain(store: RunStore) -> None:
    """The fixture's batches are what the recorder sends (plain states, no engine class)."""
    assert b"subplans" not in BatchPickler().dumps(ends(0))
    assert pickle.loads(BatchPickler().dumps(ends(0)))[1][3] == "completed"
