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
  written as one block.

What a log held before this session (a resume) is not shown: reading starts at the size each
log had when the run started, past the first attempt's header line (the tag says whose output
it is); a retry's header (``--- attempt 2, started ... ---``) is shown, where its output starts.
On a terminal each line is ``visible()``, as ``subplans logs`` shows it; elsewhere the bytes
are written as they are.
"""

from __future__ import annotations

import contextlib
import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

from subplans.engine.events import Event, SubplanProcessStarted, SubplanStateChanged
from subplans.sinks.formatting import visible

if TYPE_CHECKING:
    import asyncio

    from rich.console import Console

__all__ = ["POLL", "OutputMode", "TaggedOutput"]

#: How often ``tag`` reads what the logs of running commands grew by (seconds).
POLL = 0.05
#: At most this much is read of one log at a time: a flood of output never holds the loop long.
_CHUNK = 1 << 20


class OutputMode(StrEnum):
    """Where the commands' output goes (``--output``): the log files always."""

    FILES = "files"
    TAG = "tag"
    GROUP = "group"


class _Followed:
    """A followed log: its fd, where reading goes on, the line begun and not ended yet, and how
    many lines to leave out (the first attempt's header, and the line end before it)."""

    __slots__ = ("fd", "partial", "position", "skip", "tag")

    def __init__(self, fd: int, position: int, skip: int, tag: bytes) -> None:
        self.fd = fd
        self.position = position
        self.skip = skip
        self.partial = b""
        self.tag = tag


class TaggedOutput:
    """A bus subscriber that writes the commands' output to ``stream`` (through ``console`` on a
    terminal), each line after ``[ID] ``: as it comes (``OutputMode.TAG``) or in one block per
    subplan when it ends (``OutputMode.GROUP``). ``start`` before the run, ``close`` after."""

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

    def __call__(self, event: Event) -> None:
        if isinstance(event, SubplanStateChanged):
            if event.state.is_terminal and event.subplan_id in self._followed:
                self._end(event.subplan_id)
        elif isinstance(event, SubplanProcessStarted) and event.subplan_id not in self._followed:
            self._follow(event.subplan_id, event.log_file)

    def close(self) -> None:
        """Write what is left of every followed log, and stop following."""
        for subplan_id in list(self._followed):
            self._end(subplan_id)

    def _follow(self, subplan_id: str, log_file: str) -> None:
        if self._loop is None:
            raise RuntimeError("a tagged output follows logs once start() was called")
        try:
            fd = os.open(log_file, os.O_RDONLY)
        except OSError:
            return  # gone already: nothing to show
        start = self._sizes.get(os.path.basename(log_file), 0)
        # After an earlier run's last line without its end, the header came after a line end.
        skip = 2 if start and os.pread(fd, 1, start - 1) != b"\n" else 1
        name = visible(subplan_id) if self._console is not None else subplan_id
        self._followed[subplan_id] = _Followed(fd, start, skip, f"[{name}] ".encode())
        if self.mode is OutputMode.TAG and self._timer is None:
            self._timer = self._loop.call_later(POLL, self._poll)

    def _poll(self) -> None:
        """Write the whole lines every followed log grew by; again in ``POLL`` seconds (at once
        if a log had more than a chunk). Only scheduled while a log is followed (``_end``)."""
        out: list[bytes] = []
        full = False
        for followed in self._followed.values():
            full = self._read(followed, out, limit=_CHUNK) or full
        self._write(out)
        assert self._loop is not None
        self._timer = self._loop.call_later(0 if full else POLL, self._poll)

    def _end(self, subplan_id: str) -> None:
        """The subplan ended: its log is whole. Write the rest of it (``group``: all of it)."""
        followed = self._followed.pop(subplan_id)
        if not self._followed and self._timer is not None:
            self._timer.cancel()  # nothing left to follow: no turn of the loop for nothing
            self._timer = None
        out: list[bytes] = []
        try:
            while self._read(followed, out, limit=_CHUNK):
                pass
        finally:
            os.close(followed.fd)
        if followed.partial:
            self._line(followed, followed.partial, out)
        self._write(out)

    def _read(self, followed: _Followed, out: list[bytes], *, limit: int) -> bool:
        """Read what ``followed`` grew by (at most ``limit`` bytes) into ``out``, whole lines
        only; True if there may be more."""
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

    def _line(self, followed: _Followed, line: bytes, out: list[bytes]) -> None:
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
