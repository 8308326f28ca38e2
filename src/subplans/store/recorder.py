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

The writer thread turns events into rows with ``event_rows`` and writes each batch with
``batch_writer``; this module is the queue between them and the event loop, and the thread.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from itertools import compress, repeat, starmap
from operator import is_, is_not
from pathlib import Path
from queue import Empty, SimpleQueue
from time import monotonic as _monotonic
from types import TracebackType

from subplans.engine.bus import EventBus, RawMove
from subplans.engine.errors import StoreError
from subplans.engine.events import Event
from subplans.store.batch_writer import BatchWriter
from subplans.store.liveness import check_run_id

__all__ = ["RecorderSettings", "RecorderStatistics", "RunRecorder"]

logger = logging.getLogger("subplans")


@dataclass(frozen=True, slots=True)
class RecorderSettings:
    """How the writer thread batches, checkpoints and binds; the defaults suit every run."""

    #: Write at once, without waiting for more, once this many events are queued.
    eager: int = 500
    #: How often (seconds) a gathering writer looks at the queue.
    gather_tick: float = 0.005
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

    ``settings`` tune the writer thread (``RecorderSettings``). Subscribe it to the bus (``bus=`` or ``bus.subscribe(recorder)``); ``await flush()``
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
        settings: RecorderSettings = RecorderSettings(),
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
        self._settings = settings
        self._queue: SimpleQueue[Event | RawMove | _Marker] = SimpleQueue()
        self._put = self._queue.put
        self._urgent = threading.Event()
        self._closed = False
        self._failure: StoreError | None = None
        self._stopping: _Marker | None = None
        #: The markers queued and not yet taken: the writer looks for them only in a batch
        #: taken while some are (looking costs as much as taking the batch).
        self._marked: set[_Marker] = set()
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
        # The queue's own put: the bus calls C directly, not a Python frame per event (a
        # closed recorder is unsubscribed, so the bus never puts after close). Raw: a
        # dispatch's subplan moves come as tuples, no event object built for them, while no
        # other subscriber wants objects (``EventBus._subscribe_raw``; the writer takes both).
        self._unsubscribe = bus._subscribe_raw(self._put) if bus is not None else None

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
        # Known to be queued before it is (the writer then looks in vain, and again later).
        self._marked.add(marker)
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
                # Opening checks only part of the file: a damaged page is refused as it is read,
                # never written into (``checking``).
                connection.execute("PRAGMA cell_size_check = ON")
                writer = BatchWriter(connection, self.run_id, chunk=self._settings.chunk)
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

    def _loop(self, writer: BatchWriter) -> None:
        get, get_nowait, urgent = self._queue.get, self._queue.get_nowait, self._urgent
        qsize, max_batch, marked = self._queue.qsize, self._max_batch, self._marked
        checkpoint_after, idle = self._settings.checkpoint_after, self._settings.idle
        full, unchecked = False, 0
        while True:
            if unchecked >= checkpoint_after:
                try:
                    first = get(timeout=idle)
                except Empty:
                    unchecked = 0 if writer.checkpoint() else unchecked
                    continue
            else:
                first = get()
            batch = [first]
            if not full:
                self._gather()
            urgent.clear()
            # Taken in C, not a Python frame per event: this thread is the only consumer, so
            # qsize() items are there.
            batch += starmap(get_nowait, repeat((), min(qsize(), max_batch - 1)))
            full = len(batch) >= max_batch
            # Markers are rare: a batch without one is written as it is, not copied.
            markers: list[_Marker] = []
            if marked and _Marker in set(map(type, batch)):
                types = list(map(type, batch))
                found = compress(batch, map(is_, types, repeat(_Marker)))
                markers = [item for item in found if isinstance(item, _Marker)]
                batch = list(compress(batch, map(is_not, types, repeat(_Marker))))
                marked.difference_update(markers)
            if batch:
                unchecked += len(batch)
                self._write(writer, batch)  # type: ignore[arg-type]
            for marker in markers:
                if marker.stop:
                    self._stopping = marker
                    return
                _settle(marker.future, self._failure)

    def _gather(self) -> None:
        """Wait up to ``batch_delay`` for more events (group commit), but not while a flush
        waits or once many are queued: under a burst, writing starts at once."""
        qsize, urgent = self._queue.qsize, self._urgent
        eager, tick = self._settings.eager, self._settings.gather_tick
        deadline = _monotonic() + self._batch_delay
        while qsize() < eager and not urgent.is_set():
            remaining = deadline - _monotonic()
            if remaining <= 0:
                return
            urgent.wait(min(remaining, tick))

    def _write(self, writer: BatchWriter, events: list[Event | RawMove]) -> None:
        count = len(events)
        if self._failure is not None:
            self._dropped += count
            return
        try:
            durable = writer.write(events, durable=self._durable)
        except Exception as error:
            self._dropped += count
            self._failure = StoreError(
                f"cannot write to the store {self.path}: {error}; "
                f"events of run {self.run_id} are no longer recorded"
            )
            logger.error("%s", self._failure)
            return
        self._written += count
        self._batches += 1
        self._largest = max(self._largest, count)
        self._durable_batches += durable


def _settle(future: Future[None], failure: StoreError | None) -> None:
    # A flush whose awaiting task was cancelled has a cancelled future: nobody to tell.
    if future.set_running_or_notify_cancel():
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(failure)
