"""``RunRecorder``: the bus subscriber that writes a run's events into the store.

On the event loop it only queues the event, and pickles every few hundred into a pipe (a
fraction of a microsecond an event). A writer process, on another core, turns them into rows
and writes each batch in a single transaction: the event rows and, in the same transaction,
what they change in the subplans, steps and runs tables (``writer_pipe`` feeds it,
``writer_start`` starts it, ``writer_process`` is its loop: see there why a process). When few
events came it waits up to ``batch_delay`` seconds for more (group commit), unless a flush
waits. What it was handed it writes even if this process is killed.

Durability: batches holding a terminal state (of a subplan, a step or the run) are fsynced,
by their own commit (``synchronous=FULL``) or, while more events stream in, by a later commit
or an fsync of the log within 5 ms, always before ``flush()`` returns; the others commit with
``NORMAL``, which survives a crash of the process but not of the machine, where what is lost
is only a record of work in progress. WAL checkpoints (copying the log into the database) are
taken when the writer is idle, never between a terminal state and the end of a run.

The writer process turns events into rows with ``event_rows`` and writes each batch with
``batch_writer``; this module is the public face: the options, the checks, the counts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from subplans.engine.bus import EventBus
from subplans.engine.errors import StoreError
from subplans.engine.events import Event
from subplans.store.liveness import check_run_id
from subplans.store.writer_frames import WriterOptions
from subplans.store.writer_lock import wait_out
from subplans.store.writer_pipe import WriterPipe
from subplans.store.writer_watch import bound_for

__all__ = ["RecorderSettings", "RecorderStatistics", "RunRecorder", "wait_for_writer"]

logger = logging.getLogger("subplans")


@dataclass(frozen=True, slots=True)
class RecorderSettings:
    """How the writer process batches, checkpoints and binds; the defaults suit every run."""

    #: Write at once, without waiting for more, once this many events are read.
    eager: int = 500
    #: How long (seconds) the recorder gathers the few events that come while the event loop
    #: is idle before it hands them to the writer (many it hands over at once): half the
    #: default ``batch_delay``, so that a slow stream of events wakes both processes seldom.
    gather_tick: float = 0.025
    #: After this many idle seconds the writer checkpoints the WAL, if enough was written.
    idle: float = 0.25
    #: Events written since the last checkpoint that make one due (about 1-2 MB of log).
    checkpoint_after: int = 10_000
    #: Rows per multi-row statement, at most (fewer if SQLite allows fewer variables).
    chunk: int = 256

    def __post_init__(self) -> None:
        for name in ("eager", "checkpoint_after", "chunk"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("gather_tick", "idle"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class RecorderStatistics:
    """What a recorder has done so far."""

    #: Events committed to the store.
    written: int
    #: Transactions committed.
    batches: int
    largest_batch: int
    #: Batches holding a terminal state, fsynced (by their commit or a later fsync).
    durable_batches: int
    #: Events queued and not yet written (approximate while events arrive).
    pending: int
    #: Events not written because the store failed.
    dropped: int


class RunRecorder:
    """Records one run's events into the store at ``path``, from a process of its own.

    ``settings`` tune the writer (``RecorderSettings``). Subscribe it to the bus (``bus=`` or
    ``bus.subscribe(recorder)``); ``await flush()`` returns once every event handed to it so
    far is committed, and must be awaited before the run reports its end; ``close()`` (or
    ``await aclose()``) flushes, ends the writer's session (its store closed; the process is
    kept for the next recorder a few seconds, ``writer_start``) and unsubscribes. A store that
    fails to write, or a writer process that dies, is logged once; from then on events are
    dropped and ``flush()`` and ``close()`` raise the ``StoreError``. A recorder never closed
    loses nothing its process was handed: the process writes it all once this one has exited.
    ``flush()``, ``flush_sync()``, ``close()`` and ``aclose()`` wait for the writer while it
    makes progress, however long: it acks at least every 50 ms between transactions, and a
    long transaction uses CPU time or waits on the disk. It is taken for hung, killed, and
    they raise the ``StoreError`` that says so, once for ``2 * timeout + 1`` seconds it sent
    no ack, its CPU time (``/proc/<pid>/stat``) did not move and it was not in disk wait
    (``D``), or at once after that silence if it is stopped (``T``): between one and two such
    bounds after its last sign of life (``writer_watch``). ``flush_sync(timeout)`` also gives
    up with ``TimeoutError`` after ``timeout``.

    One writer at a time per run: a new recorder waits for an earlier writer of the same run
    (one whose process was killed still writes its backlog) by the same rule, then fails if it
    is hung (``writer_lock``). If no writer process can be started (``sys.executable`` is not a
    Python) or one does not answer its start within 5 seconds, a thread of this process writes
    instead (a debug log line says so); it cannot be killed, so it is waited for.

    In a child made by ``fork()``, the recorder is the parent's: there ``close()`` only
    unsubscribes, events are dropped, and ``flush()`` raises ``RuntimeError``.

    Raises:
        StoreError: the store cannot be opened for writing, or an earlier writer of the run
            holds it and is hung.
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
        settings: RecorderSettings = RecorderSettings(),
        _opened: bool = False,
    ) -> None:
        check_run_id(run_id)
        if not batch_delay >= 0:
            raise ValueError(f"batch_delay must be >= 0, got {batch_delay!r}")
        if type(max_batch) is not int or max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        self.path = Path(path)
        self.run_id = run_id
        self._closed = False
        #: Seconds a writer may be hung (``writer_watch``) before it is given up on.
        self._silence = bound_for(timeout)
        if not _opened:  # (an open ``RunStore``'s recorder: the store opened, checked)
            _check_store(self.path, timeout)
        wait_for_writer(self.path, run_id, self._silence)
        try:
            self._pipe = WriterPipe(
                WriterOptions(
                    os.path.abspath(self.path),
                    str(self.path),
                    run_id,
                    durable,
                    batch_delay,
                    max_batch,
                    timeout,
                    settings.eager,
                    settings.idle,
                    settings.checkpoint_after,
                    settings.chunk,
                ),
                settings.gather_tick,
            )
        except OSError as error:  # no descriptor, process or thread to be had
            raise StoreError(
                f"cannot record run {run_id} in the store {path}: {error.strerror or error}"
            ) from None
        self._put = self._pipe.put
        # The pipe's put (a deque append; every ``SHIP`` events shipped) is the subscriber: a
        # closed recorder is unsubscribed, so the bus never puts after close. Raw: a
        # dispatch's subplan moves come as tuples, no event object built for them, while no
        # other subscriber wants objects (``EventBus._subscribe_raw``; the writer takes both).
        self._unsubscribe = bus._subscribe_raw(self._put) if bus is not None else None

    def __repr__(self) -> str:
        state = "failed" if self.failure else "closed" if self._closed else "open"
        stats = self.statistics()
        return (
            f"<RunRecorder run {self.run_id} {state}: {stats.written} written in "
            f"{stats.batches} batches, {stats.pending} pending>"
        )

    def statistics(self) -> RecorderStatistics:
        """A snapshot of what was written so far."""
        pipe = self._pipe
        written, batches, largest, durable, counted = pipe.counts
        dropped = counted + pipe.dropped
        pending = len(pipe.items) + max(0, pipe.sent - written - counted)
        return RecorderStatistics(written, batches, largest, durable, pending, dropped)

    @property
    def failure(self) -> StoreError | None:
        """Why the store stopped recording, or None."""
        return self._pipe.failure

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
        await self._awaited(self._mark(stop=False))

    def flush_sync(self, timeout: float | None = None) -> None:
        """``flush()`` for code outside the event loop; blocks the calling thread.

        Raises:
            StoreError: the store failed to write.
            TimeoutError: not flushed within ``timeout`` seconds.
        """
        self._waited(self._mark(stop=False), timeout)

    def close(self) -> None:
        """Flush, end the writer's session and unsubscribe (idempotent); blocks until done.

        Raises:
            StoreError: the store failed to write.
        """
        if self._closed:
            return
        if self._pipe.foreign():
            self._stop()  # its threads are the parent's: nothing to wait for
            return
        future = self._stop()
        try:
            self._waited(future, None)
        finally:
            self._pipe.join()

    async def aclose(self) -> None:
        """``close()`` without blocking the event loop while the last batch is written."""
        if self._closed:
            return
        if self._pipe.foreign():
            self._stop()
            return
        future = self._stop()
        try:
            await self._awaited(future)
        finally:
            # The stop marker is settled once the process has exited: this returns at once.
            self._pipe.join()

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

    def _waited(self, future: Future[None], timeout: float | None) -> None:
        """Wait for ``future`` while the writer is not hung (``answer_within``).

        Raises:
            TimeoutError: not settled within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = self._pipe.answer_within(self._silence)
            if deadline is not None:
                left = max(deadline - time.monotonic(), 0.0)
                wait = left if wait is None else min(wait, left)
            try:
                future.result(wait)
                return
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                # silent, and not yet hung for long: ask again

    async def _awaited(self, future: Future[None]) -> None:
        """``_waited`` on the event loop, without a timeout."""
        waiting = asyncio.wrap_future(future)
        try:
            while not waiting.done():
                await asyncio.wait((waiting,), timeout=self._pipe.answer_within(self._silence))
        except BaseException:  # cancelled: the flush's future is left to be settled unseen
            waiting.cancel()
            raise
        waiting.result()

    def _mark(self, *, stop: bool) -> Future[None]:
        if self._closed:
            raise RuntimeError("the recorder is closed")
        if self._pipe.foreign():
            raise RuntimeError(
                f"the recorder was made by process {self._pipe.pid}: it flushes only there"
            )
        return self._pipe.mark(stop).future

    def _stop(self) -> Future[None]:
        if self._pipe.foreign():
            # Closed in a forked child: detached, the parent's writer left alone.
            future: Future[None] = Future()
            future.set_result(None)
        else:
            future = self._mark(stop=True)
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        return future


def wait_for_writer(path: Path, run_id: str, bound: float) -> None:
    """Wait while an earlier writer of ``run_id`` still holds it (``writer_lock``), here, so
    that a recorder that cannot record says so at once; the writer takes the lock itself.

    Raises:
        StoreError: it made no progress for ``bound`` seconds.
    """
    lock, failure = wait_out(str(path), str(path), run_id, bound)
    if lock is not None:
        lock.close()
    if failure is not None:
        raise StoreError(failure)


def _check_store(path: Path, timeout: float) -> None:
    """Refuse a store that cannot be opened, here and at once (the writer process opens it
    again, while the run starts): one that is missing, or not a database."""
    try:
        connection = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open the store {path}: {error}") from None
    try:
        connection.execute("SELECT 1 FROM event_chunks LIMIT 0")
    except sqlite3.Error as error:
        raise StoreError(f"cannot open the store {path}: {error}") from None
    finally:
        connection.close()
