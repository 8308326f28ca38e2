"""Reading processes from ``/proc``: who they are, what they carry, and where the pids stand.

The only module that reads a process's files: a port to another system replaces this one.
psutil reads the same files, but for the few fields needed here it costs two to five times as
much per process (and the end of every command looks), gives a start time in float seconds of
the wall clock instead of the clock ticks the store records, and has no process group or
session id; so the files are read here, each in one ``read``. Linux only.

A zombie (exited, not reaped by its parent) or a dead task counts as gone everywhere
(``ProcessInfo.live``): an orphan is reaped by PID 1, and in a container PID 1 may never do it.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Collection, Iterable
from typing import Final

from subplans.engine.values import Value

__all__ = [
    "ProcessInfo",
    "Window",
    "all_pids",
    "carries",
    "command_line",
    "environment",
    "forks_so_far",
    "parse_stat",
    "pid_max",
    "process_table",
    "read_process",
    "read_processes",
    "read_stat",
    "still_running",
]

#: Up to this many pids since a ``Window``, each is looked up; beyond, ``/proc`` is listed.
_FEW_PIDS = 64
#: The flag of a kernel thread in ``/proc/<pid>/stat`` (``include/linux/sched.h``).
_PF_KTHREAD = 0x00200000


class ProcessInfo(Value):
    """One process as ``/proc/<pid>/stat`` shows it (start time in clock ticks since boot).

    A plain class rather than a dataclass: the end of every command reads a few (a frozen
    dataclass takes one ``object.__setattr__`` per field), and building one costs the start.
    """

    __slots__ = ("kernel", "pgid", "pid", "ppid", "sid", "start_time", "state")
    _fields = ("pid", "ppid", "pgid", "sid", "start_time", "state")

    def __init__(
        self,
        pid: int,
        ppid: int,
        pgid: int,
        sid: int,
        start_time: int,
        state: str,
        kernel: bool = False,
    ) -> None:
        self.pid: Final = pid
        self.ppid: Final = ppid
        self.pgid: Final = pgid
        self.sid: Final = sid
        self.start_time: Final = start_time
        self.state: Final = state
        #: A kernel thread (``PF_KTHREAD``): it has no environment, so it never carries a marker.
        self.kernel: Final = kernel

    @property
    def live(self) -> bool:
        """False for a zombie (it has exited, its parent has not reaped it) or a dead task."""
        return self.state not in ("Z", "X")


#: The first read of a file asks for this many bytes: enough for any stat file and most
#: environments. A much bigger buffer costs more than the read itself (one of 1 MiB is mapped
#: and unmapped every time: 15 us more per read, and the end of every command reads a few).
_CHUNK = 16 * 1024


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # no such process (any more), or not ours to read
    try:
        found = os.read(fd, _CHUNK)
        if len(found) < _CHUNK:
            return found  # a /proc file hands out all it has to a read that asks for more
        parts = [found]
        while part := os.read(fd, _CHUNK):
            parts.append(part)
        return b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)


#: ``/proc/loadavg`` and ``/proc/stat``, each opened once (``_read_again``), by path.
_kept: dict[str, int] = {}


def _read_again(path: str) -> bytes | None:
    """The text of a file of the whole system (not of a process) in ``/proc``, as it is now,
    through a descriptor kept open: a read from its start (``pread``) makes the kernel write it
    anew. The end of every command reads two such files: this spares an open and a close of
    each, every call a moment another thread takes the GIL from the event loop."""
    fd = _kept.get(path)
    if fd is None:
        try:
            opened = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        fd = _kept.setdefault(path, opened)
        if fd != opened:  # pragma: no cover - another thread kept one first, just now
            os.close(opened)
    try:
        found = os.pread(fd, _CHUNK, 0)
    except OSError:
        found = b""
    if 0 < len(found) < _CHUNK:
        return found
    return _read(path)  # longer than a chunk, or the descriptor failed: read it all afresh


def parse_stat(pid: int, stat: bytes) -> ProcessInfo | None:
    """The text of ``/proc/<pid>/stat`` as a ``ProcessInfo``; None if it is cut short."""
    # The command name (field 2) may hold spaces and parentheses: the fields after it start past
    # its last ")": state is field 3, then ppid, pgrp, session, the flags are field 9 and the
    # start time is field 22.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        return None
    if len(fields) > 35 and fields[35] == b"-1":
        # Field 38, exit_signal, is -1 for a thread that does not lead its group: /proc shows
        # it by its id too (a window's range reads them), but it is part of a process.
        return None
    return ProcessInfo(
        pid,
        int(fields[1]),
        int(fields[2]),
        int(fields[3]),
        int(fields[19]),
        fields[0].decode(),
        int(fields[6]) & _PF_KTHREAD != 0,
    )


def read_stat(pid: int) -> bytes | None:
    """The text of ``/proc/<pid>/stat``; None if there is no such process."""
    return _read(f"/proc/{pid}/stat")


def read_process(pid: int) -> ProcessInfo | None:
    """``pid`` as ``/proc`` shows it now, zombies included; None if there is no such process."""
    return parse_stat(pid, read_stat(pid) or b"")


def still_running(process: ProcessInfo) -> bool:
    """True while ``process`` lives (not a zombie) and its pid was not reused (same start)."""
    now = read_process(process.pid)
    return now is not None and now.live and now.start_time == process.start_time


def _window(read: Callable[[str], bytes | None]) -> Window | None:
    """``Window.now``, the two files read with ``read``; None if either does not say."""
    loadavg, stat = read("/proc/loadavg"), read("/proc/stat")
    start = -1 if stat is None else stat.find(b"\nprocesses ")
    last = b"" if loadavg is None else loadavg.rsplit(b" ", 1)[-1].strip()
    if stat is None or start < 0 or not last.isdigit():
        return None
    return Window(int(last), int(stat[start + 11 : stat.index(b"\n", start + 1)]))


def all_pids() -> list[int]:
    """Every pid in ``/proc``."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def process_table(pids: Iterable[int] | None = None) -> dict[int, ProcessInfo]:
    """The live (non-zombie) processes among ``pids`` (all by default), by pid."""
    table = {}
    for pid in all_pids() if pids is None else pids:
        found = read_process(pid)
        if found is not None and found.live:
            table[pid] = found
    return table


def read_processes(pids: Iterable[int]) -> dict[int, ProcessInfo | None]:
    """Each of ``pids`` as ``read_process`` shows it now (None: no such process)."""
    return {pid: read_process(pid) for pid in pids}


def environment(pid: int) -> list[bytes] | None:
    """The environment ``pid`` started with, as ``NAME=value`` entries; None if unreadable."""
    found = _read(f"/proc/{pid}/environ")
    return None if found is None else found.split(b"\0")


def command_line(pid: int) -> str:
    """What ``pid`` runs, its arguments joined by spaces (``""`` if unreadable, a kernel thread)."""
    found = _read(f"/proc/{pid}/cmdline") or b""
    return " ".join(found.rstrip(b"\0").decode(errors="replace").split("\0"))


def carries(pid: int, marker: Collection[bytes]) -> bool:
    """True if the environment of ``pid`` holds every ``NAME=value`` entry of ``marker``."""
    variables = environment(pid)
    return variables is not None and all(entry in variables for entry in marker)


@functools.cache
def pid_max() -> int:
    """How many pids the kernel hands out in its cycle."""
    found = _read("/proc/sys/kernel/pid_max")
    return int(found) if found else 1 << 22


#: The fork counter as last read (``Window.now``), and when (``time.monotonic``): never more
#: than it is now, so it can stand for "before".
_forks_seen = 0
_forks_read_at = -float("inf")
#: Seconds a reading stands for "before" in ``forks_so_far``. A window from an older one may
#: look gone round, and its end then reads every process in ``/proc``: so did the first
#: commands of every run (16 at -j16), started before any reading.
_FORKS_FRESH = 0.1


def forks_so_far() -> int:
    """A count of the forks since boot that is not more than the real one: as last read (cheap:
    the end of every command reads it), or read now if that was over ``_FORKS_FRESH`` ago."""
    if time.monotonic() - _forks_read_at > _FORKS_FRESH:
        Window.now()
    return _forks_seen


class Window(Value):
    """Where the pid allocator and the fork counter stood at a moment.

    The kernel hands out pids in a cycle: every process created since that moment has a pid
    after ``last_pid`` in the cycle, unless the cycle went all the way round meanwhile, which
    takes at least as many forks as there are pids (``/proc/stat`` counts every fork). So a
    look for the processes of a command started then reads only those pids, not every process
    in ``/proc``: a few reads at each command's end instead of hundreds. ``forks`` may be less
    than the count at that moment (an older reading): that only makes the window wider.
    """

    __slots__ = ("forks", "last_pid")
    _fields = ("last_pid", "forks")

    def __init__(self, last_pid: int, forks: int) -> None:
        self.last_pid: Final = last_pid
        self.forks: Final = forks

    @classmethod
    def now(cls) -> Window | None:
        """Where they stand now; None where ``/proc`` does not say."""
        global _forks_read_at, _forks_seen
        found = _window(_read_again)
        if found is None and _kept:
            found = _window(_read)
            if found is not None:  # a kept descriptor was closed, its number reused: forget it
                _kept.clear()
        if found is None:  # pragma: no cover - every Linux since 2.6 says
            return None
        _forks_seen = max(_forks_seen, found.forks)
        _forks_read_at = time.monotonic()
        return found

    def went_round(self, now: Window) -> bool:
        """True if a pid handed out since this moment may have been handed out again by ``now``
        (a later moment)."""
        # Half the cycle: pids skipped because they were in use advance it too.
        return now.forks - self.forks >= pid_max() // 2

    def pids(self, *, skip: Collection[int] = (), now: Window | None = None) -> list[int]:
        """The pids that may name a process created since this moment (every one when unsure),
        ``skip`` left out; ``now`` is ``Window.now()`` when the caller read it already."""
        now = now or Window.now()
        if now is None or self.went_round(now):
            return [pid for pid in all_pids() if pid not in skip]
        low, high = self.last_pid, now.last_pid
        if low <= high:
            span = range(low + 1, high + 1)
            if len(span) <= _FEW_PIDS:  # cheaper than listing /proc
                return [pid for pid in span if pid not in skip]
            return [pid for pid in all_pids() if low < pid <= high and pid not in skip]
        # The cycle went past the largest pid and started again from the smallest.
        return [pid for pid in all_pids() if (pid > low or pid <= high) and pid not in skip]
