"""The recorder's end of the pipe to its writer process (``writer_process``).

On the event loop an event costs an append to a deque; every ``SHIP`` events, the loop
pickles them in C (``event_pickling``, about 0.1 us an event) and writes them to the pipe
without waiting: the pipe is large, and what a full pipe does not take waits in an outbox
for the sender thread. A thread of ours alone would not do: while the loop is busy, it gets
the GIL seldom or never (the loop gives it up at each ``epoll`` and takes it back first). The
sender thread ships what few events come while the loop is idle (the GIL is free then).

An ack thread reads the process's acks: the counts so far, a failure, and which markers are
done, whose futures it settles. The end of the acks (the process died) settles every marker
still waiting, with a failure: a writer that died never makes a flush hang, and one that
is hung (``writer_watch``) is killed by a waiting recorder (``answer_within``).

A writer writes nothing before it is told ``GO`` (sent once it answered its start) or its
input ends (this process is gone: nobody else will write what it handed over). A new process
that does not answer within ``START_WAIT`` seconds (or exits first) is killed, never told
``GO``, and a ``WriterThread`` takes the session and every frame sent so far (kept until the
answer, ``replay``): nothing is lost, nothing written twice.

An event that cannot be pickled (its ``to_dict()`` or an error's ``str()`` raises) fails the
store as a failed write does: its batch and every later event dropped, the error logged once.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from itertools import repeat, starmap

from subplans.engine.bus import RawMove
from subplans.engine.errors import StoreError
from subplans.engine.events import Event
from subplans.store.event_pickling import BatchPickler
from subplans.store.writer_frames import DATA, FLUSH, GO, HEADER, STOP, WriterOptions
from subplans.store.writer_start import (
    START_WAIT,
    Writer,
    WriterThread,
    give_back,
    read_ack,
    reap,
    replacement,
    retire,
    start,
)
from subplans.store.writer_watch import Watch

__all__ = ["SHIP", "Counts", "Marker", "WriterPipe"]

logger = logging.getLogger("subplans")

#: Events queued that ``put`` ships at once, on the thread that puts (the event loop's).
SHIP = 512

#: What the process has done: written, batches, largest batch, durable batches, dropped.
Counts = tuple[int, int, int, int, int]


class Marker:
    """Queued behind the events that a flush (or close) waits for."""

    __slots__ = ("future", "number", "stop")

    def __init__(self, number: int, stop: bool) -> None:
        self.future: Future[None] = Future()
        self.number = number
        self.stop = stop


class WriterPipe:
    """Starts the writer process for ``options`` and feeds it: ``put`` (the bus calls it)
    queues an event, ``mark`` a flush marker."""

    def __init__(self, options: WriterOptions, tick: float) -> None:
        self.options = options
        self.items: deque[Event | RawMove] = deque()
        #: Set when the sender has something to do (ship what few events came, or write);
        #: ``ending`` once the session ends: the sender gathers no more (close() joins it).
        self.wake, self.ending = threading.Event(), threading.Event()
        self.put = self._putter()
        #: Markers sent and not yet acked, by number.
        self.waiting: dict[int, Marker] = {}
        #: Held while a batch is pickled and its frame written or queued (from any thread).
        self.lock = threading.RLock()
        self.pickler = BatchPickler()
        #: Frames (or their ends) not yet written, with their events: the pipe was full.
        self.outbox: deque[tuple[memoryview, int]] = deque()
        self.numbers = 0
        self.counts: Counts = (0, 0, 0, 0, 0)
        self.sent = self.dropped = 0
        self.failure: StoreError | None = None
        #: Set once the process can take nothing more (its input is closed or broken); and
        #: once it is known to have exited before its session ended (no ack will come).
        self.gone = self.stopping = self.reaped = False
        #: The process that made the pipe (a ``fork()``ed child's copy never writes to it).
        self.pid = os.getpid()
        #: When the process last answered (or was last asked): see ``answer_within``.
        self.heard = time.monotonic()
        self.abandoned = False
        #: Whether the writer answered its start (and was told ``GO``); until then, every
        #: frame sent, for a thread to write if it never does.
        self.process: Writer
        self.process, self.started = start(options)
        self.replay: list[tuple[memoryview, int]] | None = None if self.started else []
        assert self.process.stdin is not None
        self.input = self.process.stdin.fileno()
        self.watch = Watch(_stat(self.process))
        if self.started:
            self._frame(GO, b"", 0)
        name = f"subplans recorder {options.run_id}"
        self.sender = threading.Thread(target=self._send, args=(tick,), name=name, daemon=True)
        self.acker = threading.Thread(target=self._acks, name=f"{name} acks", daemon=True)
        self.sender.start()
        self.acker.start()

    def _putter(self) -> Callable[[Event | RawMove], None]:
        """The bus's subscriber: queue an event; ship the queue once ``SHIP`` are there, and
        wake the sender for the first (it ships what few come)."""
        items, ship, size, wake = self.items, self.ship, SHIP, self.wake.set
        append = items.append

        def put(event: Event | RawMove) -> None:
            append(event)
            count = len(items)
            if count >= size:
                ship()
            elif count == 1:
                wake()

        return put

    def mark(self, stop: bool) -> Marker:
        """Ship what is queued, then a marker; its future is settled once that is written."""
        with self.lock:
            self.numbers += 1
            marker = Marker(self.numbers, stop)
            self.stopping = stop
            if stop:
                self.ending.set()
            self.heard = time.monotonic()
            self.watch.restart()
            if self.reaped:  # the process is gone, and its acks read: none will come
                settle(marker.future, self.failure)
                return marker
            self.waiting[marker.number] = marker
            self._ship()
            self._frame(STOP if stop else FLUSH, marker.number.to_bytes(8, "little"), 0)
        if self.outbox or self.items:
            self.wake.set()
        return marker

    def ship(self) -> None:
        """Pickle what is queued and write it to the pipe (or queue it, if the pipe is full)."""
        if os.getpid() != self.pid:  # a forked child's copy: the writer is the parent's
            self.dropped += len(self.items)
            self.items.clear()
            return
        with self.lock:
            self._ship()
        if self.outbox or self.items:  # an event put while shipping waits for the sender
            self.wake.set()

    def foreign(self) -> bool:
        """Whether this is a copy in a child made by ``fork()``: the writer is the parent's."""
        return os.getpid() != self.pid

    def answer_within(self, bound: float) -> float | None:
        """Seconds to wait for the process before asking again; once it is hung for ``bound``
        seconds (``writer_watch``: silent, its CPU time still, not in disk wait; or stopped),
        it is killed (its markers are settled with the failure once its acks end) and None is
        returned, as once it was killed. A writer starting is bounded by the ack thread; a
        ``WriterThread`` is never hung."""
        if self.abandoned:
            return None
        if not self.started or self.watch.path is None:
            return bound
        left = self.watch.left(self.heard, bound)
        if left is not None:
            if left == bound:
                logger.debug(
                    "the writer process %s of the store %s is silent but busy: waited on",
                    self.process.pid,
                    self.options.name,
                )
            return left
        self.abandoned = True
        self._fail(
            f"cannot write to the store {self.options.name}: its writer process did not "
            f"answer for {bound:g} seconds and was killed; events of run "
            f"{self.options.run_id} are no longer recorded"
        )
        self.process.kill()
        return None

    def join(self) -> None:
        """Wait for the threads (both end once the stop marker is settled)."""
        self.wake.set()
        self.sender.join()
        self.acker.join()

    # --- sending --------------------------------------------------------------------------

    def _ship(self) -> None:
        items = self.items
        count = len(items)
        if count:
            # Taken in C; events put meanwhile stay for the next batch, in order (the
            # sender looks for them once this is shipped).
            batch = list(starmap(items.popleft, repeat((), count)))
            if self.failure is not None:
                self.dropped += count
                return
            try:
                body = self.pickler.dumps(batch)
            except Exception as error:  # an event's to_dict() or an error's str() raised
                self.dropped += count
                self._fail(
                    f"cannot write to the store {self.options.name}: {error}; "
                    f"events of run {self.options.run_id} are no longer recorded"
                )
                return
            self._frame(DATA, body, count)

    def _fail(self, message: str) -> None:
        if self.failure is None:
            self.failure = StoreError(message)
            logger.error("%s", self.failure)

    def _frame(self, kind: int, body: bytes, events: int) -> None:
        frame = memoryview(HEADER.pack(len(body), kind) + body), events
        if self.replay is not None:  # the writer has not answered its start yet
            self.replay.append(frame)
        elif self.gone:
            self.dropped += events  # its markers are settled by the acks' end
            return
        self.sent += events
        if not self.gone:
            self.outbox.append(frame)
            self._write()

    def _write(self) -> None:
        """Write the outbox while the pipe takes it, without waiting (the lock is held)."""
        outbox = self.outbox
        try:
            while outbox:
                first, events = outbox[0]
                written = os.write(self.input, first)
                if written < len(first):
                    outbox[0] = first[written:], events
                    return
                outbox.popleft()
        except BlockingIOError:
            return
        except OSError:
            self._lost()

    def _lost(self) -> None:
        """The process takes nothing more: what was not written is dropped (the end of its
        acks, which follows, says why and settles the markers)."""
        self.gone = True
        lost = 0 if self.replay is not None else sum(events for _, events in self.outbox)
        self.outbox.clear()  # (sent again to a thread if the process never answered)
        self.sent -= lost
        self.dropped += lost

    def _send(self, tick: float) -> None:
        """Ship what few events came (``put`` ships many itself), ``tick`` seconds after the
        first, and write what a full pipe left in the outbox."""
        wake = self.wake
        while True:
            wake.wait()
            wake.clear()
            if self.outbox:
                poller = select.poll()  # the input is the thread's if the process never started
                poller.register(self.input, select.POLLOUT)
                poller.poll()  # the pipe takes more (or is broken)
            elif not (self.stopping or self.gone):
                self.ending.wait(tick)  # more may come: one frame for them (a flush ships)
            with self.lock:
                # Not before the writer answered its start: a thread may yet take its place.
                if self.replay is None and (self.gone or (self.stopping and not self.outbox)):
                    return
                self._ship()
                self._write()
                # An event put while shipping (after its count was read) finds the queue
                # not empty and wakes nobody: it is looked for here.
                if self.outbox or self.items:
                    wake.set()

    # --- the ack thread -------------------------------------------------------------------

    def _acks(self) -> None:
        if not self.started and not isinstance(self.process, WriterThread):
            first = read_ack(self.process, START_WAIT)
            if first is None:
                self._fall_back()
            else:
                self._took(first)  # the session's start: never its end
        while True:
            body = read_ack(self.process, None)
            if body is None:
                break  # the process is gone
            if self._took(body):
                return
        self._ended(reap(self.process))
        self._retire()
        with self.lock:
            self.reaped = True
            waiting, self.waiting = list(self.waiting.values()), {}
        for marker in waiting:
            settle(marker.future, self.failure)

    def _took(self, body: bytes) -> bool:
        """Take an ack; True once it ended the session."""
        number, *counts, failure = pickle.loads(body)
        self.heard = time.monotonic()
        self.counts = tuple(counts)
        if failure is not None:
            self._fail(failure)
        if not self.started:  # it may write now; what was sent is its own
            with self.lock:
                self.started, self.replay = True, None
                self._frame(GO, b"", 0)
            self.wake.set()  # the sender may be done
        with self.lock:
            marker = self.waiting.pop(number, None)
        if marker is not None and marker.stop:
            # The session's last ack: the process is kept for the next recorder, unless
            # this one failed (a process in doubt is not lent again).
            with self.lock:
                self.gone = True
            if self.failure is None:
                give_back(self.process)
            else:
                self._ended(self._retire())
            settle(marker.future, self.failure)
            return True
        if marker is not None:
            settle(marker.future, self.failure)
        return False

    def _fall_back(self) -> None:
        """The new process did not answer its start: kill it, and hand its session (and all
        that was sent to it) to a thread of this process. It wrote nothing: it had no ``GO``."""
        process = self.process
        assert process.stdin is not None
        process.kill()
        with self.lock:  # another thread may be writing to its input
            self.gone = True
            process.stdin.close()
        thread = replacement(process, self.options, START_WAIT)
        with self.lock:
            assert thread.stdin is not None
            assert self.replay is not None
            self.process, self.input = thread, thread.stdin.fileno()
            self.watch = Watch(None)
            self.outbox.clear()
            self.outbox.extend(self.replay)
            self.replay = []
            self.gone = False  # the process's input may have broken: the thread's has not
            self._write()
        self.wake.set()

    def _retire(self) -> int:
        # Its input is closed under the lock: another thread may be writing to it.
        with self.lock:
            self.gone = True
            assert self.process.stdin is not None
            self.process.stdin.close()
        return retire(self.process)

    def _ended(self, code: int) -> None:
        """The process exited with ``code`` before the recorder was closed."""
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        self._fail(
            f"cannot write to the store {self.options.name}: its writer process {how}; "
            f"events of run {self.options.run_id} are no longer recorded"
        )


def _stat(process: Writer) -> str | None:
    """Where ``process``'s state and CPU time are read (None: a thread, never hung)."""
    return None if isinstance(process, WriterThread) else f"/proc/{process.pid}/stat"


def settle(future: Future[None], failure: StoreError | None) -> None:
    # A flush whose awaiting task was cancelled has a cancelled future: nobody to tell.
    if future.set_running_or_notify_cancel():
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(failure)
