"""The recorder's writer process: it reads batches of events from a pipe and writes them.

Why a process (issue #10): a writer thread shares the GIL with the event loop. Per subplan it
spends about 40,000 instructions (SQLite, binding, building rows), and while the loop is busy
it gets the GIL seldom: its work serialised with the dispatch, and the store doubled a run's
time. A process writes on another core.

``writer_start`` starts it with ``python -I -S`` and this module's ``main``: it imports only
the stdlib and the store's writing modules, no package ``__init__`` (they are made plain
namespaces: they import the engine), so it is ready in about 20 ms, while the dispatch starts.

Frames (both ways): a ``HEADER`` (length of what follows, kind), then that many bytes. In:
``SESSION`` (a recorder's ``WriterOptions``, JSON), ``GO`` (empty: the recorder will not hand
the session to another writer, ``writer_pipe``: nothing is written before it, or before the
end of the input), then ``DATA`` (a pickled list of plain events, ``event_pickling``), ``FLUSH``
and ``STOP`` (a marker's number). Out: ``ACK``, a
pickled ``(marker, written, batches, largest, durable batches, dropped, failure)``: when a
session starts (marker 0: the recorder knows the process took it), the counts alone every
50 ms at most while batches are written (marker 0), and once every event before a marker is
committed (fsynced if it held a terminal state). Group commit: with fewer than ``eager``
events read and no marker, it waits up to ``batch_delay`` for more.

A session holds its run's lock (``writer_lock``), taken before it reads where the run's events
end: a writer of a run whose process was killed may still be writing the run's backlog when
the run's next recorder starts (``subplans resume``); the new session waits for it, and fails
(its failure acked) if it makes no progress for the bound (``writer_watch``).

``STOP`` ends a session: the store is closed and the process waits ``spare_idle`` seconds
for the next recorder of its parent (a process started per recorder would cost each run its
start). At the end of its input (its parent closed the pipe, exited, or was killed, even with
SIGKILL; or its parent, whose pid it is given, is gone, which it checks each second) it writes
what it has and exits: nothing handed over is lost. SIGINT and SIGTERM are ignored: a Ctrl-C
is the run's, and an outer run that stops the subplan running this one (a nested
``subplans run``) signals every process below it, this one too, while the inner run still
records its end; a SIGKILL ends it, as it ended a writer thread with its process.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
from time import monotonic

from subplans.store.batch_writer import BatchWriter
from subplans.store.event_rows import Item
from subplans.store.writer_frames import (
    ACK,
    DATA,
    FLUSH,
    GO,
    HEADER,
    SESSION,
    STOP,
    FrameInput,
    WriterOptions,
)
from subplans.store.writer_lock import wait_out
from subplans.store.writer_watch import bound_for

__all__ = ["ACK", "DATA", "FLUSH", "GO", "HEADER", "SESSION", "STOP", "WriterOptions"]
__all__ += ["main", "serve"]

#: Seconds between acks of the counts alone while batches stream (each wakes the recorder).
_ACK_EVERY = 0.05
#: Seconds a batch of a stream waits for the next events before its fsync: if they come,
#: their commit's fsync is this one's too (see ``_Session.write``).
_STREAM_WAIT = 0.002
#: Events a stream's transaction gathers, at most (``_Session._gather``).
_STREAM_BATCH = 2048
#: Seconds a stream's terminal batches wait for an fsync, at most (``batch_delay`` if less):
#: the longer, the more the fsync at its end has to write.
_SYNC_EVERY = 0.005


#: The frames a session reads (``writer_frames``).
_Input = FrameInput


class _Session:
    """One recorder's: its store's connection, what is read and not written, its counts."""

    def __init__(self, options: WriterOptions, ack_fd: int, frames: _Input) -> None:
        self.options, self.ack_fd = options, ack_fd
        self.pending: list[Item] = []
        self.written = self.batches = self.largest = self.durable_batches = self.dropped = 0
        #: Events written since the last checkpoint (one is due when idle after enough).
        self.unchecked = 0
        #: The batches the last ack counted, and when the counts are due again.
        self.told, self.next_ack = 0, 0.0
        self.failure: str | None = None
        #: The number of the last marker read (a ``STOP``'s is acked by ``serve``).
        self.marker = 0
        self.connection: sqlite3.Connection | None = None
        self.writer: BatchWriter | None = None
        self.ack(0)
        frames.go()
        bound = bound_for(options.timeout)
        self.lock, self.failure = wait_out(
            options.path, options.name, options.run_id, bound, self._tick
        )
        if self.failure is not None:
            self.ack(0)
            return
        try:
            self.connection, self.writer = _open(options)
        except sqlite3.Error as error:
            self.failure = f"cannot open the store {options.name}: {error}"
            self.ack(0)

    def _tick(self) -> None:
        """While the session waits for the run's lock: the counts, when due (the recorder
        hears from it)."""
        if monotonic() >= self.next_ack:
            self.ack(0)

    def run(self, frames: _Input) -> bool:
        """Write what comes until ``STOP`` (True) or the end of the input (False)."""
        options = self.options
        try:
            while True:
                if not self.pending and not frames.frames:
                    if self.told != self.batches and not frames.ended:
                        # Caught up: the counts, once they are due (or nothing more came).
                        if not frames.wait(self.next_ack - monotonic()):
                            self.ack(0)
                        continue
                    due = self.unchecked >= options.checkpoint_after
                    if not frames.wait(options.idle if due else None):
                        self.unchecked = 0 if _checkpoint(self.writer) else self.unchecked
                        continue
                if self.take(frames):
                    return True
                # Group commit: more may come within batch_delay; a marker writes at once.
                deadline = monotonic() + options.batch_delay
                while (
                    self.pending
                    and len(self.pending) < options.eager
                    and not frames.ended
                    and frames.wait(deadline - monotonic())
                ):
                    if self.take(frames):
                        return True
                self.write()
                if frames.ended and not frames.frames:
                    return False
        finally:
            self.write()
            if self.connection is not None:
                self.connection.close()
            if self.lock is not None:
                self.lock.close()  # before ``STOP``'s ack: the recorder's close() frees the run

    #: Durable terminal batches committed without an fsync (a stream's, see ``write``), and
    #: when the first of them was; the input, to see whether more is coming.
    _unsynced = 0
    _unsynced_since = 0.0
    _input: _Input | None = None
    _synced_folder = False

    def take(self, frames: _Input) -> bool:
        """Act on the frames read: events join ``pending``; a marker writes them and is
        acked. True at ``STOP`` (acked once the store is closed, by ``serve``)."""
        self._input = frames
        while frames.frames:
            kind, body = frames.frames.popleft()
            if kind == DATA:
                self.pending += pickle.loads(body)
                continue
            self.write(final=True)
            self.marker = int.from_bytes(body, "little")
            if kind == STOP:
                return True
            self.ack(self.marker)
        return False

    def write(self, *, final: bool = False) -> None:
        """Write ``pending``, ``max_batch`` events a transaction; then say so.

        Every durable terminal state is fsynced before this returns, but while events stream
        in (events already read wait behind these, and no marker does: ``final``): a commit
        then leaves its fsync to a later one, ``_SYNC_EVERY`` seconds at most (an fsync
        per small batch of a stream made the writer fall behind, issue #10).
        """
        # A stream: as many events as make a batch at once came; the next come soon.
        stream = len(self.pending) >= self.options.eager
        if stream and not final:
            self._gather()
        pending, self.pending = self.pending, []
        size, durable = self.options.max_batch, self.options.durable
        wait = _STREAM_WAIT if stream else 0.0
        for first in range(0, len(pending), size):
            last = first + size >= len(pending)
            later = durable and not (last and (final or not self._streaming(wait)))
            self._commit(pending[first : first + size], durable, later=later)
            # The counts, not for each batch of a stream; but during a long write too: a
            # closing recorder takes a writer silent for long for one that hangs.
            if monotonic() >= self.next_ack:
                self.ack(0)
        if self._unsynced and (final or not self._streaming(0.0)):
            self._sync()

    def _gather(self) -> None:
        """Take the events of a stream that come within ``_STREAM_WAIT`` seconds, up to
        ``_STREAM_BATCH`` (a marker stops it): a transaction each few hundred events wrote
        the same pages again and again."""
        frames = self._input
        if frames is None:
            return
        queued, pending = frames.frames, self.pending
        deadline = monotonic() + _STREAM_WAIT
        while len(pending) < _STREAM_BATCH:
            while queued and queued[0][0] == DATA and len(pending) < _STREAM_BATCH:
                pending += pickle.loads(queued.popleft()[1])
            if queued or frames.ended or not frames.wait(deadline - monotonic()):
                return

    def _streaming(self, wait: float) -> bool:
        """Whether events read within ``wait`` seconds wait to be written next (their commit
        comes next: no marker before them)."""
        frames = self._input
        if frames is None or frames.ended:
            return False
        frames.wait(wait)
        return bool(frames.frames) and frames.frames[0][0] == DATA

    def _commit(self, batch: list[Item], durable: bool, *, later: bool = False) -> None:
        if self.writer is None or self.failure is not None:
            self.dropped += len(batch)
            return
        # Left unsynced while the first such batch is younger than that.
        delay = min(self.options.batch_delay, _SYNC_EVERY)
        later = (
            later
            and delay > 0
            and (not self._unsynced or monotonic() - self._unsynced_since < delay)
        )
        try:
            fsynced = self.writer.write_plain(batch, durable=durable and not later)
        except Exception as error:
            self.dropped += len(batch)
            self._failed(error)
            return
        self.written += len(batch)
        self.unchecked += len(batch)
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        if fsynced:  # the WAL is synced: every batch committed before this one too
            self.durable_batches += 1 + self._unsynced
            self._unsynced = 0
        elif durable and self.writer.terminal:
            if not self._unsynced:
                self._unsynced_since = monotonic()
            self._unsynced += 1

    def _sync(self) -> None:
        """Fsync what the unsynced batches committed: the WAL, as a commit with
        synchronous=FULL does (and, the first time, its folder, as SQLite does once it made
        the file)."""
        path = self.options.path
        names = [f"{path}-wal"] if self._synced_folder else [f"{path}-wal", os.path.dirname(path)]
        try:
            for name in names:
                fd = os.open(name, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._synced_folder = True
        except OSError as error:  # committed, and not known to be durable: said once
            self._failed(error)
        else:
            self.durable_batches += self._unsynced
        self._unsynced = 0

    def _failed(self, error: Exception) -> None:
        self.failure = (
            f"cannot write to the store {self.options.name}: {error}; "
            f"events of run {self.options.run_id} are no longer recorded"
        )

    def ack(self, marker: int) -> None:
        """Tell the recorder the counts so far, and that ``marker`` (unless 0) is done."""
        self.told, self.next_ack = self.batches, monotonic() + _ACK_EVERY
        counts = (self.written, self.batches, self.largest, self.durable_batches, self.dropped)
        body = pickle.dumps((marker, *counts, self.failure))
        data = memoryview(HEADER.pack(len(body), ACK) + body)
        try:
            while data:
                data = data[os.write(self.ack_fd, data) :]
        except OSError:
            pass  # the recorder is gone: what it handed over is still written


def _checkpoint(writer: BatchWriter | None) -> bool:
    try:
        return writer is not None and writer.checkpoint()
    except sqlite3.Error:
        return False  # tried again when next idle


def _open(options: WriterOptions) -> tuple[sqlite3.Connection, BatchWriter]:
    connection = sqlite3.connect(options.path, timeout=options.timeout, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous = NORMAL")
        # Checkpoints are taken when idle (see run), not inside a commit.
        connection.execute("PRAGMA wal_autocheckpoint = 0")
        # Room for a large batch: spilling the cache mid-transaction costs writes.
        connection.execute("PRAGMA cache_size = -32000")
        # Opening checks only part of the file: a damaged page is refused as it is read,
        # never written into (``checking``).
        connection.execute("PRAGMA cell_size_check = ON")
        return connection, BatchWriter(connection, options.run_id, chunk=options.chunk)
    except BaseException:
        connection.close()
        raise


def serve(read_fd: int, ack_fd: int, spare_idle: float, parent: int | None = None) -> None:
    """Serve sessions from ``read_fd`` (acks on ``ack_fd``) until its end, the end of
    ``parent`` (default: this process's parent; 0: none watched), or until no session came
    for ``spare_idle`` seconds after the last."""
    frames = _Input(read_fd, os.getppid() if parent is None else parent)
    wait: float | None = None  # the first session comes at once
    while frames.wait(wait) and frames.frames:
        kind, body = frames.frames.popleft()
        if kind != SESSION:
            continue  # not ours to read: a session's leftovers after its end
        session = _Session(WriterOptions(**json.loads(body)), ack_fd, frames)
        if not session.run(frames):
            return
        session.ack(session.marker)
        wait = spare_idle


def main(argv: list[str]) -> int:  # pragma: no cover - in the process, whose parts are tested
    """The process's start: ``argv`` is ``[spare_idle, parent's pid]``; input on stdin, acks
    on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Blocked since its start (``writer_start``): what came meanwhile is dropped now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT, signal.SIGTERM))
    serve(0, 1, float(argv[0]), int(argv[1]))
    return 0
