"""Finding the processes of a command or of a run in ``/proc``, and stopping them.

A process belongs to a ``Family`` in three ways: it lives in the session of one of its roots
(each command runs in a session of its own, whatever process group it moves to) while that
session is provably the root's, it descends from a process of the family (by the parent chain,
while it is unbroken), or its environment holds every variable of the family's marker
(``SUBPLANS_RUN_ID``, and ``SUBPLANS_SUBPLAN`` for one subplan: children inherit them). Only a
process that leaves the session, loses its parent chain and clears its environment escapes all
three. A session is the root's while its leader is the root (same start time); once the leader
is gone, its id may be handed out again (a daemon that calls ``setsid``), so the session counts
only while ``/proc/stat`` proves the pid cycle has not gone round since the root started.

``Stopping`` is the one way processes are stopped: signal, wait, escalate. SIGTERM to every
process found, SIGKILL to whatever is still found once the grace is over, as often as needed
until nothing is found. ``stop`` drives it blocking, ``stop_async`` in an event loop. Every
signal goes to a process only while its pid still names the process found (same start time),
through a pidfd where the kernel has them: a reused pid never receives it. Linux only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Family",
    "ProcessInfo",
    "Stopping",
    "Window",
    "command_line",
    "environment",
    "forks_so_far",
    "marker_of",
    "parse_stat",
    "process_table",
    "read_process",
    "read_stat",
    "send_signal",
    "stop",
    "stop_async",
]

logger = logging.getLogger("subplans")

#: How long to keep sending SIGKILL to processes that are still found, before giving up on them.
SETTLE_TIMEOUT = 5.0
#: The first wait between two looks; each wait doubles, up to ``_MAX_POLL``.
_FIRST_POLL = 0.01
_MAX_POLL = 0.1
#: Up to this many pids since a ``Window``, each is looked up; beyond, ``/proc`` is listed.
_FEW_PIDS = 64
#: The variables that mark a process as one of a run's, and of which subplan.
MARKER_VARIABLES = ("SUBPLANS_RUN_ID", "SUBPLANS_SUBPLAN")


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One process as ``/proc/<pid>/stat`` shows it (start time in clock ticks since boot)."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    start_time: int
    state: str

    @property
    def live(self) -> bool:
        """False for a zombie (it has exited, its parent has not reaped it) or a dead task."""
        return self.state not in ("Z", "X")


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # no such process (any more), or not ours to read
    try:
        return os.read(fd, 1 << 20)
    except OSError:
        return None
    finally:
        os.close(fd)


def parse_stat(pid: int, stat: bytes) -> ProcessInfo | None:
    """The text of ``/proc/<pid>/stat`` as a ``ProcessInfo``; None if it is cut short."""
    # The command name (field 2) may hold spaces and parentheses: the fields after it start past
    # its last ")": state is field 3, then ppid, pgrp, session, and the start time is field 22.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        return None
    return ProcessInfo(
        pid, int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]), fields[0].decode()
    )


def read_stat(pid: int) -> bytes | None:
    """The text of ``/proc/<pid>/stat``; None if there is no such process."""
    return _read(f"/proc/{pid}/stat")


def read_process(pid: int) -> ProcessInfo | None:
    """``pid`` as ``/proc`` shows it now, zombies included; None if there is no such process."""
    return parse_stat(pid, read_stat(pid) or b"")


def process_table(pids: Iterable[int] | None = None) -> dict[int, ProcessInfo]:
    """The live (non-zombie) processes among ``pids`` (all by default), by pid."""
    if pids is None:
        pids = _all_pids()
    table = {}
    for pid in pids:
        found = read_process(pid)
        if found is not None and found.live:
            table[pid] = found
    return table


def environment(pid: int) -> list[bytes] | None:
    """The environment ``pid`` started with, as ``NAME=value`` entries; None if unreadable."""
    found = _read(f"/proc/{pid}/environ")
    return None if found is None else found.split(b"\0")


def command_line(pid: int) -> str:
    """What ``pid`` runs, its arguments joined by spaces (``""`` if unreadable, a kernel thread)."""
    found = _read(f"/proc/{pid}/cmdline") or b""
    return " ".join(found.rstrip(b"\0").decode(errors="replace").split("\0"))


def marker_of(env: Mapping[str, str] | None) -> tuple[bytes, ...]:
    """The marker of the processes started with ``env``: its ``SUBPLANS_RUN_ID`` and
    ``SUBPLANS_SUBPLAN`` entries, or nothing unless it has both."""
    if env is None or not all(name in env for name in MARKER_VARIABLES):
        return ()
    return tuple(os.fsencode(f"{name}={env[name]}") for name in MARKER_VARIABLES)


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


@functools.cache
def _pid_max() -> int:
    found = _read("/proc/sys/kernel/pid_max")
    return int(found) if found else 1 << 22


#: The fork counter as last read: never more than it is now, so it can stand for "before".
_forks_seen = 0


def forks_so_far() -> int:
    """A count of the forks since boot that is not more than the real one (cheap: as last read)."""
    return _forks_seen


@dataclass(frozen=True, slots=True)
class Window:
    """Where the pid allocator and the fork counter stood at a moment.

    The kernel hands out pids in a cycle: every process created since that moment has a pid
    after ``last_pid`` in the cycle, unless the cycle went all the way round meanwhile, which
    takes at least as many forks as there are pids (``/proc/stat`` counts every fork). So a
    look for the processes of a command started then reads only those pids, not every process
    in ``/proc``: a few reads at each command's end instead of hundreds. ``forks`` may be less
    than the count at that moment (an older reading): that only makes the window wider.
    """

    last_pid: int
    forks: int

    @classmethod
    def now(cls) -> Window | None:
        """Where they stand now; None where ``/proc`` does not say."""
        global _forks_seen
        loadavg, stat = _read("/proc/loadavg"), _read("/proc/stat")
        if not loadavg or not stat:  # pragma: no cover - every Linux has both
            return None
        start = stat.find(b"\nprocesses ")
        if start < 0:  # pragma: no cover - every Linux since 2.6 has it
            return None
        forks = int(stat[start + 11 : stat.index(b"\n", start + 1)])
        _forks_seen = max(_forks_seen, forks)
        return cls(int(loadavg.split()[-1]), forks)

    def went_round(self, now: Window) -> bool:
        """True if a pid handed out since this moment may have been handed out again by ``now``
        (a later moment)."""
        # Half the cycle: pids skipped because they were in use advance it too.
        return now.forks - self.forks >= _pid_max() // 2

    def pids(self, *, skip: Collection[int] = (), now: Window | None = None) -> list[int]:
        """The pids that may name a process created since this moment (every one when unsure),
        ``skip`` left out; ``now`` is ``Window.now()`` when the caller read it already."""
        now = now or Window.now()
        if now is None or self.went_round(now):
            return [pid for pid in _all_pids() if pid not in skip]
        low, high = self.last_pid, now.last_pid
        if low <= high:
            span = range(low + 1, high + 1)
            if len(span) <= _FEW_PIDS:  # cheaper than listing /proc
                return [pid for pid in span if pid not in skip]
            return [pid for pid in _all_pids() if low < pid <= high and pid not in skip]
        # The cycle went past the largest pid and started again from the smallest.
        return [pid for pid in _all_pids() if (pid > low or pid <= high) and pid not in skip]


@functools.cache
def _ancestors(pid: int) -> frozenset[tuple[int, int]]:
    """``pid`` and its ancestors, as (pid, start time): a process never stops itself or the
    processes that started it (a ``subplans cancel`` run from inside a command)."""
    found = set()
    current = read_process(pid)
    while current is not None and current.pid > 1:
        found.add((current.pid, current.start_time))
        current = read_process(current.ppid)
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class Family:
    """What makes a process one of a command's or a run's.

    ``roots`` are (pid, start time) of session leaders: each command's leader, which is its
    session too. A root's session is the family's while its leader is the root (same start
    time). A root whose pid now names another process (another start time, or an unknown start
    time and any process) was reused: it and its session are left out. Once the leader is gone,
    its session counts only while ``since`` proves its id was not handed out again (the pid
    cycle has not gone round); otherwise only the processes in it that carry the marker, and
    their descendants, are the family's. ``marker`` is environment entries (``NAME=value``) that
    a process must all carry. ``since``, when given, is a moment before every root started: only
    processes created since are looked at.
    """

    roots: tuple[tuple[int, int | None], ...] = ()
    marker: tuple[bytes, ...] = ()
    since: Window | None = None

    def members(self, *, exclude: Collection[int] = ()) -> dict[int, ProcessInfo]:
        """The live processes of the family now, by pid.

        ``exclude``: session ids known to be another family's (the other commands of a run,
        each the pid of its leader): their processes are not looked into.
        """
        if self.since is None:
            table, kept = process_table(), False
        else:
            now = Window.now()
            table = process_table(self.since.pids(skip=exclude, now=now))
            # A session outlives its leader, and its id is not handed out again while it has
            # members; but once it was empty for a moment, it may have been: then a process
            # that merely lives in a session of that id cannot be tied to the root.
            kept = now is not None and not self.since.went_round(now)
        sessions = set()
        found: set[int] = set()
        for pid, start in self.roots:
            leader = table.get(pid) or read_process(pid)
            if leader is None:
                if kept:
                    sessions.add(pid)
            elif leader.start_time == start:
                sessions.add(pid)
                found.add(pid)
        for process in table.values():
            if process.sid in sessions or self._marked(process, exclude):
                found.add(process.pid)
        _add_descendants(found, table)
        me = _ancestors(os.getpid())
        return {
            pid: table[pid]
            for pid in sorted(found)
            if pid in table and (pid, table[pid].start_time) not in me
        }

    def _marked(self, process: ProcessInfo, exclude: Collection[int]) -> bool:
        if not self.marker or process.sid in exclude:
            return False
        variables = environment(process.pid)
        return variables is not None and all(entry in variables for entry in self.marker)


def _add_descendants(found: set[int], table: Mapping[int, ProcessInfo]) -> None:
    children: dict[int, list[int]] = {}
    for process in table.values():
        children.setdefault(process.ppid, []).append(process.pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)


def send_signal(pid: int, start_time: int | None, sig: int) -> bool:
    """Send ``sig`` to ``pid`` if it is still the process that started at ``start_time``;
    False if it is gone (or we may not signal it).

    Through a pidfd, opened before the check: then the check and the signal cannot race a
    reuse of the pid. Where the kernel has no pidfds, a plain ``kill`` after the check.
    """
    try:
        fd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:  # no pidfds here (Linux before 5.3, a seccomp filter)
        fd = None
    try:
        now = read_process(pid)
        if now is None or now.start_time != start_time:
            return False
        if fd is None:
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(fd, sig)
    except (ProcessLookupError, PermissionError):
        return False  # gone meanwhile, or setuid: not ours to signal
    finally:
        if fd is not None:
            os.close(fd)
    return True


@dataclass(slots=True)
class Stopping:
    """Signal, wait, escalate: the one way processes are stopped.

    Each ``step`` looks for the processes again (``find``), and for those it signalled before.
    While the grace lasts, each one found gets SIGTERM once; once it is over (``grace`` seconds
    after the first step that found any, or ``hurry``), every one found gets SIGKILL, at every
    step, until none is found, or for at most ``SETTLE_TIMEOUT`` seconds: then a warning names
    the survivors and it gives up. A command's ``Stopping`` exists while the command runs, so
    that a second Ctrl-C kills through it (``kill_now``), never by a bare process group id.
    """

    find: Callable[[], Mapping[int, ProcessInfo]]
    grace: float
    clock: Callable[[], float] = time.monotonic
    #: Every process signalled, with the last signal it got.
    signalled: dict[int, tuple[ProcessInfo, signal.Signals]] = field(default_factory=dict)
    _deadline: float | None = None
    _killing_since: float | None = None
    _delay: float = _FIRST_POLL
    _kills: int = 0

    def __post_init__(self) -> None:
        if not self.grace >= 0:
            raise ValueError(f"grace must be >= 0, got {self.grace!r}")

    def __repr__(self) -> str:
        phase = "grace" if self._killing_since is None else "killing"
        return f"<Stopping {len(self.signalled)} signalled, {phase}>"

    def hurry(self) -> None:
        """End the grace now: the next step sends SIGKILL."""
        self._deadline = -float("inf")

    def kill_now(self) -> int:
        """End the grace and send SIGKILL to every process found, at once; returns how many got
        it. Later steps go on waiting for them (and killing what appears meanwhile)."""
        self.hurry()
        before = self._kills
        self.step()
        return self._kills - before

    def step(self) -> float | None:
        """Signal what is due; how long to wait before the next step, or None: nothing is left."""
        found = dict(self.find())
        # Once signalled, a process is waited for until it is gone, even if ``find`` no longer
        # sees it (its parent died first, and it was found by descent; or a slow machine has
        # not yet run it to take the signal).
        for pid, (process, _) in self.signalled.items():
            if pid not in found and _same(process):
                found[pid] = process
        if not found:
            return None
        now = self.clock()
        if self._deadline is None:
            self._deadline = now + self.grace
        if now < self._deadline:
            for process in found.values():
                if not self._got_term(process):
                    self._send(process, signal.SIGTERM)
            # Looked at again soon, then less and less often; and at the end of the grace.
            delay = min(self._delay, self._deadline - now)
            self._delay = min(self._delay * 2, _MAX_POLL)
            return delay
        if self._killing_since is None:
            self._killing_since, self._delay = now, _FIRST_POLL
        elif now - self._killing_since >= SETTLE_TIMEOUT:
            logger.warning(
                "processes %s survived SIGKILL for %.1f s; giving up on them",
                sorted(found),
                SETTLE_TIMEOUT,
            )
            return None
        for process in found.values():
            self._send(process, signal.SIGKILL)
        delay, self._delay = self._delay, min(self._delay * 2, _MAX_POLL)
        return delay

    def _got_term(self, process: ProcessInfo) -> bool:
        before = self.signalled.get(process.pid)
        return before is not None and before[0].start_time == process.start_time

    def _send(self, process: ProcessInfo, sig: signal.Signals) -> None:
        if send_signal(process.pid, process.start_time, sig):
            self.signalled[process.pid] = (process, sig)
            self._kills += sig == signal.SIGKILL


def _same(process: ProcessInfo) -> bool:
    """True while ``process`` lives (not a zombie), its pid not reused."""
    now = read_process(process.pid)
    return now is not None and now.live and now.start_time == process.start_time


def stop(stopping: Stopping) -> Stopping:
    """Drive ``stopping`` until nothing is left, blocking; returns it (``signalled``)."""
    while (delay := stopping.step()) is not None:
        time.sleep(delay)
    return stopping


async def stop_async(
    stopping: Stopping,
    *,
    wake: Iterable[asyncio.Future[Any]] = (),
    hurried: asyncio.Event | None = None,
) -> asyncio.CancelledError | None:
    """Drive ``stopping`` until nothing is left, in the event loop.

    It looks again as soon as one of ``wake`` is done (a command's leader exiting). A
    cancellation meanwhile, or ``hurried`` being set (a second Ctrl-C), ends the grace, never
    the stopping: the cancellation is returned, for the caller to raise once all is gone.
    """
    cancel: asyncio.CancelledError | None = None
    waits = list(wake)
    hurry: asyncio.Future[Any] | None = None
    try:
        while True:
            if cancel is not None or (hurried is not None and hurried.is_set()):
                stopping.hurry()
            delay = stopping.step()
            if delay is None:
                return cancel
            if hurry is None and hurried is not None:
                # Only once there is something to wait for: most commands leave nothing.
                hurry = asyncio.ensure_future(hurried.wait())
                waits.append(hurry)
            pending = [waiting for waiting in waits if not waiting.done()]
            try:
                if pending:
                    await asyncio.wait(pending, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.sleep(delay)
            except asyncio.CancelledError as error:
                cancel = error
    finally:
        if hurry is not None:
            hurry.cancel()
