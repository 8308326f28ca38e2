"""``subplans run --output tag|group``: the commands' output, read back from their log files and
written to standard output, each line after ``[ID] ``.

A command writes straight into its log file (``execution.spawning``: no pipe), so the log gets
every byte whatever happens here, a slow terminal included, and ``--output files`` (the default)
costs nothing: this sink is not even made. It follows the logs from the event loop, once a
subplan's first process started (``SubplanProcessStarted`` names its log):

- ``tag``: every ``POLL`` seconds, what each followed log grew by, split into whole lines; a
  last line without its end waits for it, or for the subplan's end (then it gets one). Lines
  are written whole, many in one write, so two subplans' lines never mix within a line.
- ``group``: a subplan's whole output, read once it ended (its processes are gone by then),
  written as one block, a chunk at a time straight from the log (the log file is the buffer).

A log is read a chunk (``_CHUNK``) at a time, written before more is read: the log file is the
buffer, so a flood costs a chunk of memory. A pipe on standard output is never written more
than it holds (``_room``, less ``_RESERVE`` for the other sinks' lines), so the event loop never
blocks on a reader that stopped reading (Ctrl-C still works): the lines wait, a chunk at most,
and the logs are read no further until it reads again. Simpler than a writer thread, which
would still leave the other sinks' writes blocked behind a full pipe, and would break the order
of a subplan's last lines and the line saying it ended.

What a log held before this session (a resume) is not shown: reading starts at the size each
log had when the run started, past the first attempt's header line (the tag says whose output
it is); a retry's header (``--- attempt 2, started ... ---``) is shown, where its output starts,
as is a retried nested plan's (``attempt 1 (in s/inner attempt 2)``), after its last output.
On a terminal each line is ``visible()``, as ``subplans logs`` shows it; elsewhere the bytes
are written as they are.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import select
import signal
import stat
import struct
import termios
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from subplans.engine.events import (
    Event,
    PlanFinished,
    PlanStarted,
    SubplanProcessStarted,
    SubplanStateChanged,
)
from subplans.engine.states import PlanState
from subplans.sinks.formatting import visible
from subplans.sinks.output_modes import OutputMode

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterator

    from rich.console import Console

__all__ = ["POLL", "OutputMode", "TaggedOutput"]

#: How often ``tag`` reads what the logs of running commands grew by (seconds).
POLL = 0.05
#: At most this much is read of one log at a time, and written before more is read: a flood of
#: output never holds the loop long, nor much memory.
_CHUNK = 1 << 16
#: Room left in a pipe on standard output for the other lines (the per-change lines, a signal's
#: notice, the summary), beside two partly filled pages: this sink never fills it up.
_RESERVE = 24 << 10
#: A pipe on standard output is grown to this size when the system lets it.
_PIPE_SIZE = 1 << 20
#: How long a subplan's end waits for room in a pipe, so its last lines (``group``: its block)
#: come before the line saying it ended; past that it is stuck, and they come when it drains.
_GRACE = 0.5
#: Linux's fcntl commands for a pipe's size (named in ``fcntl`` since Python 3.10).
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


class _Followed:
    """A followed log: its fd, where reading goes on, the line begun and not ended yet, and how
    many lines to leave out (the first attempt's header, and the line end before it), and
    where it ends once its subplan ended (None before)."""

    __slots__ = ("end", "fd", "partial", "position", "skip", "tag")

    def __init__(self, fd: int, position: int, skip: int, tag: bytes) -> None:
        self.fd = fd
        self.position = position
        self.skip = skip
        self.partial = b""
        self.tag = tag
        self.end: int | None = None


class TaggedOutput:
    """A bus subscriber that writes the commands' output to ``stream`` (through ``console`` on a
    terminal), each line after ``[ID] ``: as it comes (``OutputMode.TAG``) or in one block per
    subplan when it ends (``OutputMode.GROUP``). ``start`` before the run, ``close`` after.

    A pipe on ``stream`` is never written more than it holds (``_room``): the loop never blocks
    on a reader that stops reading, the lines wait (and the logs are read no further) until it
    reads again. When the run was interrupted, ``close`` waits ``_GRACE`` for it, no longer."""

    def __init__(
        self,
        mode: OutputMode,
        stream: TextIO,
        *,
        log_dir: Path,
        console: Console | None = None,
    ) -> None:
        if mode is OutputMode.FILES:
            raise RuntimeError("--output files writes the log files only: nothing to follow")
        self.mode = mode
        self._stream = stream
        self._console = console
        self._log_dir = log_dir
        self._sizes: dict[str, int] = {}
        self._followed: dict[str, _Followed] = {}
        #: Where ended subplans' logs ended: where a retried nested plan's commands go on.
        self._ended_at: dict[str, int] = {}
        #: Ended subplans' logs, their rest still to write, in the order they ended.
        self._ending: deque[_Followed] = deque()
        #: Lines read and not written yet: stdout had no room (at most a chunk or so of them).
        self._backlog: deque[bytes] = deque()
        #: Standard output's fd and size when it is a pipe: what it holds is measured.
        self._pipe: tuple[int, int] | None = None
        #: True after waiting for room in the pipe in vain: ends wait no more until it drains.
        self._stuck = False
        self._root: str | None = None
        self._interrupted = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: Why writing stopped (a closed pipe), if it did; the run goes on.
        self.error: OSError | None = None
        #: How many lines were written.
        self.lines = 0

    def __repr__(self) -> str:
        return (
            f"<TaggedOutput {self.mode.value} following {len(self._followed)}, {self.lines} lines>"
        )

    def start(self) -> None:
        """Note the size of every log the run folder holds already (a resume): what they held
        is not this run's output. Call it in the run's event loop, right before the run starts
        its first command."""
        # Here, not at the top: the command's options name OutputMode, and --help loads no asyncio.
        import asyncio

        self._loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError), os.scandir(self._log_dir) as entries:
            self._sizes = {entry.name: entry.stat().st_size for entry in entries}
        if self._console is None:
            self._pipe = _pipe_of(self._stream)

    def __call__(self, event: Event) -> None:
        if isinstance(event, SubplanStateChanged):
            if event.state.is_terminal and event.subplan_id in self._followed:
                self._end(event.subplan_id)
        elif isinstance(event, SubplanProcessStarted) and event.subplan_id not in self._followed:
            self._follow(event.subplan_id, event.log_file)
        elif isinstance(event, PlanStarted) and self._root is None:
            self._root = event.plan_id  # the first plan to start is the run's
        elif isinstance(event, PlanFinished) and event.plan_id == self._root:
            self._interrupted = event.state is PlanState.CANCELLED

    def close(self) -> None:
        """Write what is left of every followed log, and stop following. A pipe nobody reads
        is waited for, unless the run was interrupted or a signal comes meanwhile: then what is
        left is not shown (it is in the logs)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ending.extend(self._followed.values())
        self._followed.clear()
        signals: list[int] = []
        with _noting(signals):
            while not self._drain(time.monotonic() + _GRACE):
                if self._interrupted or signals:
                    break
        for followed in self._ending:
            os.close(followed.fd)
        self._ending.clear()
        self._backlog.clear()

    def _follow(self, subplan_id: str, log_file: str) -> None:
        if self._loop is None:
            raise RuntimeError("a tagged output follows logs once start() was called")
        try:
            fd = os.open(log_file, os.O_RDONLY)
        except OSError:
            return  # gone already: nothing to show
        again = self._ended_at.pop(subplan_id, None)
        start = self._sizes.get(os.path.basename(log_file), 0) if again is None else again
        # After an earlier run's last line without its end, the header came after a line end;
        # a retried nested plan's header is shown, as a retry's is.
        skip = (2 if start and os.pread(fd, 1, start - 1) != b"\n" else 1) - (again is not None)
        name = visible(subplan_id) if self._console is not None else subplan_id
        self._followed[subplan_id] = _Followed(fd, start, skip, f"[{name}] ".encode())
        self._schedule()

    def _schedule(self, *, soon: bool = False) -> None:
        """Poll again if there is something to do: lines waiting, ended logs not written all,
        running logs to follow (``tag``)."""
        busy = self._backlog or self._ending or (self.mode is OutputMode.TAG and self._followed)
        if self._timer is None and busy:
            assert self._loop is not None
            self._timer = self._loop.call_later(0 if soon else POLL, self._poll)

    def _poll(self) -> None:
        """Write what is waiting, then (``tag``) the whole lines every followed log grew by, a
        chunk at a time while stdout takes them; again in ``POLL`` seconds (at once if a log
        had more than a chunk)."""
        self._timer = None
        full = False
        if self._drain(None) and self.mode is OutputMode.TAG:
            for followed in self._followed.values():
                full = self._read(followed, self._backlog, limit=_CHUNK) or full
                if not self._flush(None):
                    break  # no room: read no further until there is
        self._schedule(soon=full and not self._backlog)

    def _end(self, subplan_id: str) -> None:
        """The subplan ended: its log is whole. Write the rest of it (``group``: all of it)."""
        followed = self._followed.pop(subplan_id)
        with contextlib.suppress(OSError):
            # What a nested plan run again appends is not this attempt's, and shown as that's.
            followed.end = self._ended_at[subplan_id] = os.fstat(followed.fd).st_size
        self._ending.append(followed)
        if not self._followed and self._timer is not None:
            self._timer.cancel()  # nothing left to follow: no turn of the loop for nothing
            self._timer = None
        if not self._drain(None if self._stuck else time.monotonic() + _GRACE):
            self._schedule()

    def _drain(self, deadline: float | None) -> bool:
        """Write the lines waiting, then the ended logs' rest, a chunk at a time, each written
        before the next is read (the log file is the buffer: a flood costs a chunk of memory,
        not its size); wait for room until ``deadline`` at most. True when all is written.
        Nothing else is written meanwhile: a ``group`` block that fits comes as one block."""
        while self._flush(deadline):
            if not self._ending:
                return True
            followed = self._ending[0]
            if not self._read(followed, self._backlog, limit=_CHUNK):
                if followed.partial:
                    self._line(followed, followed.partial, self._backlog)
                os.close(followed.fd)
                self._ending.popleft()
        return False

    def _flush(self, deadline: float | None) -> bool:
        """Write the lines waiting, as many at a time as stdout takes without blocking; wait
        for room until ``deadline`` at most. True when none is left."""
        while self._backlog:
            if self.error is not None:
                self._backlog.clear()  # written no more
                break
            room = self._room()
            batch: list[bytes] = []
            size = 0
            while self._backlog and (room is None or size + len(self._backlog[0]) <= room):
                size += len(self._backlog[0])
                batch.append(self._backlog.popleft())
            if not batch and room is not None and room >= self._usable():
                batch.append(self._backlog.popleft())  # longer than the pipe: alone, when empty
            if batch:
                self._stuck = False
                self._write(batch)
            elif deadline is None or not self._wait(deadline):
                self._stuck = self._stuck or deadline is not None
                return False
        return True

    def _room(self) -> int | None:
        """How many bytes stdout takes now without blocking; None: not a pipe, no limit."""
        if self._pipe is None:
            return None
        fd, size = self._pipe
        try:
            (queued,) = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))
        except OSError:
            return None
        return size - int(queued) - _RESERVE

    def _usable(self) -> int:
        assert self._pipe is not None
        return self._pipe[1] - _RESERVE

    def _wait(self, deadline: float) -> bool:
        """Wait a little for the pipe to drain; False once ``deadline`` passed."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        assert self._pipe is not None
        with contextlib.suppress(OSError, ValueError):
            select.select([], [self._pipe[0]], [], min(left, 0.01))
        time.sleep(min(left, 0.005))  # writable is a page free: let the reader take more
        return True

    def _read(self, followed: _Followed, out: deque[bytes], *, limit: int) -> bool:
        """Read what ``followed`` grew by (at most ``limit`` bytes) into ``out``, whole lines
        only; True if there may be more."""
        if followed.end is not None:
            limit = min(limit, followed.end - followed.position)
            if limit <= 0:
                return False
        try:
            data = os.pread(followed.fd, limit, followed.position)
        except OSError:
            return False
        if not data:
            return False
        followed.position += len(data)
        lines = (followed.partial + data).split(b"\n")
        followed.partial = lines.pop()
        for line in lines:
            self._line(followed, line, out)
        return len(data) == limit

    def _line(self, followed: _Followed, line: bytes, out: deque[bytes]) -> None:
        if followed.skip:
            followed.skip -= 1
            return
        if self._console is not None:
            text = line.removesuffix(b"\r").decode(errors="backslashreplace")
            line = visible(text).encode()
        out.append(followed.tag + line + b"\n")

    def _write(self, out: list[bytes]) -> None:
        """Write ``out``'s lines in one go: on a terminal through the console (above the live
        view), elsewhere as bytes. A stream that failed (a closed pipe) is written no more."""
        if not out or self.error is not None:
            return
        data = b"".join(out)
        try:
            if self._console is not None:
                from rich.text import Text

                self._console.print(Text(data.decode().removesuffix("\n")), soft_wrap=True)
            else:
                buffer: BinaryIO | None = getattr(self._stream, "buffer", None)
                self._stream.flush()  # what the other sinks wrote first comes first
                if buffer is None:
                    self._stream.write(data.decode(errors="backslashreplace"))
                    self._stream.flush()
                else:
                    buffer.write(data)
                    buffer.flush()
        except OSError as error:
            self.error = error
            return
        self.lines += len(out)


def _pipe_of(stream: TextIO) -> tuple[int, int] | None:
    """``stream``'s fd and size if it is a pipe whose fill can be measured (grown first, to
    take bigger writes), else None: a file or a device takes what is written."""
    try:
        fd = stream.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return None
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, F_SETPIPE_SZ, _PIPE_SIZE)
        size = fcntl.fcntl(fd, F_GETPIPE_SZ)
        fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError, io.UnsupportedOperation, AttributeError):
        return None
    return (fd, size) if size > 2 * _RESERVE else None


@contextlib.contextmanager
def _noting(signals: list[int]) -> Iterator[None]:
    """Note SIGINT and SIGTERM in ``signals`` meanwhile (in the main thread: elsewhere none
    can be handled), the event loop sees them afterwards all the same (its wakeup fd)."""
    previous: dict[signal.Signals, Any] = {}
    try:
        for chosen in (signal.SIGINT, signal.SIGTERM):
            previous[chosen] = signal.signal(chosen, lambda number, _: signals.append(number))
    except ValueError:
        pass  # not the main thread
    try:
        yield
    finally:
        for chosen, handler in previous.items():
            signal.signal(chosen, signal.SIG_DFL if handler is None else handler)
