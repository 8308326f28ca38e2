"""Finding the processes of a command or of a run: the one way, ``Family.members``.

A process belongs to a ``Family`` in three ways: it lives in the session of one of its leaders
(each command runs in a session of its own, whatever process group it moves to) while that
session is provably the leader's, it descends from a process of the family (by the parent chain,
while it is unbroken), or its environment holds every variable of the family's marker
(``SUBPLANS_RUN_ID``, and ``SUBPLANS_SUBPLAN`` for one subplan: children inherit them). Only a
process that leaves the session, loses its parent chain and clears its environment escapes all
three. A session is the leader's while its leader still runs (same start time); once the leader
is gone, its id may be handed out again (a daemon that calls ``setsid``), so the session counts
only while ``/proc/stat`` proves the pid cycle has not gone round since the leader started.

The same proof spares reads of the pids of reaped processes (``members``'s ``reaped``: the
other commands' leaders; a command's own leader is always read, since a pid taken for it
would make another process and its session the family's): the pid of one that was created since the
family's window began, which has not gone round, named it alone all along, so no process has it
now. Whether it was created since is proved by the pid cycle too: a process whose pid lies in
the window and whose own window (from a fork count read before it was created) has not gone
round either was created in the window. Had it been created before, the cycle would have
passed its pid again to come round to the family's first pid, and on to past its own (the pids
handed out in a window that has not gone round follow each other in the cycle's order).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Container, Mapping
from typing import Final, NamedTuple, Protocol

from subplans.engine.values import Value
from subplans.execution.procfs import (
    ProcessInfo,
    Window,
    all_pids,
    carries,
    read_process,
    read_processes,
)

__all__ = [
    "MARKER_VARIABLES",
    "Family",
    "Leader",
    "Leading",
    "Neighbours",
    "marker_of",
    "run_marker",
]

#: The variables that mark a process as one of a run's, and of which subplan.
MARKER_VARIABLES = ("SUBPLANS_RUN_ID", "SUBPLANS_SUBPLAN")


class Leader(NamedTuple):
    """The leader of a command's session (its pid is the session's id), told apart from a later
    process with its pid by its start time (None: unknown, it was gone before it was read)."""

    pid: int
    start_time: int | None


class Leading(Protocol):
    """A command's leader as its runner knows it (``spawning.Child``): reaped once
    ``returncode`` is set, its pid named it alone until then."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...


def marker_of(env: Mapping[str, str] | None) -> tuple[bytes, ...]:
    """The marker of the processes started with ``env``: its ``SUBPLANS_RUN_ID`` and
    ``SUBPLANS_SUBPLAN`` entries, or nothing unless it has both."""
    if env is None or not all(name in env for name in MARKER_VARIABLES):
        return ()
    return tuple(os.fsencode(f"{name}={env[name]}") for name in MARKER_VARIABLES)


def run_marker(run_id: str) -> tuple[bytes, ...]:
    """The marker of every process of run ``run_id``, whichever subplan's."""
    return (os.fsencode(f"SUBPLANS_RUN_ID={run_id}"),)


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


class Family(Value):
    """What makes a process one of a command's or a run's.

    ``roots``: each command's session leader, which is its session too. A leader's session is
    the family's while its leader runs (same start time). A leader whose pid now names another
    process (another start time, or an unknown start time and any process) was reused: it and
    its session are left out. Once the leader is gone, its session counts only while ``since``
    proves its id was not handed out again (the pid cycle has not gone round); otherwise only
    the processes in it that carry the marker, and their descendants, are the family's.
    ``marker`` is environment entries (``NAME=value``) that a process must all carry. ``since``,
    when given, is a moment before every leader started: only processes created since are
    looked at.
    """

    __slots__ = ("marker", "roots", "since")
    _fields = ("roots", "marker", "since")

    def __init__(
        self,
        roots: tuple[Leader, ...] = (),
        marker: tuple[bytes, ...] = (),
        since: Window | None = None,
    ) -> None:
        self.roots: Final = roots
        self.marker: Final = marker
        self.since: Final = since

    def members(
        self,
        *,
        exclude: Container[int] = (),
        reaped: Callable[[int], int | None] = lambda _: None,
    ) -> dict[int, ProcessInfo]:
        """The live processes of the family now, by pid.

        ``exclude``: session ids known to be another family's (the other commands of a run,
        each the pid of its leader, not reaped): their processes are not looked into. Asked
        about each pid just before it would be read: it may grow meanwhile (the commands that
        other threads start).

        ``reaped``: for the pid of a process reaped by now (a root, or another family's
        leader), a fork count read before it was created (as ``Window.forks``); None for any
        other pid. While neither the window since ``since`` nor the process's own has gone
        round, its pid, if among those looked at, named it alone (see the module's docstring):
        it is not read, and its session is its own (another family's: as ``exclude``).
        """
        gone: set[int] = set()
        if self.since is None:
            seen, kept = read_processes(all_pids()), False
        else:
            now = Window.now()
            # A session outlives its leader, and its id is not handed out again while it has
            # members; but once it was empty for a moment, it may have been: then a process
            # that merely lives in a session of that id cannot be tied to the leader.
            kept = now is not None and not self.since.went_round(now)
            seen = {}
            for pid in self.since.pids(now=now):
                if pid in exclude:
                    continue
                forks = reaped(pid) if kept else None
                if (
                    forks is not None
                    and now is not None
                    and not Window(pid - 1, forks).went_round(now)
                ):
                    gone.add(pid)  # no process has it (the module's docstring)
                else:
                    seen[pid] = read_process(pid)
        if gone:
            exclude = _Either(exclude, gone)
        table = {pid: info for pid, info in seen.items() if info is not None and info.live}
        sessions = set()
        found: set[int] = set()
        for pid, start in self.roots:
            # Read just now if it was among the pids looked at (gone, a zombie or alive).
            leader = seen.get(pid) if pid in seen or pid in gone else read_process(pid)
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

    def _marked(self, process: ProcessInfo, exclude: Container[int]) -> bool:
        if not self.marker or process.sid in exclude or process.kernel:
            return False  # a kernel thread's environment is empty
        return carries(process.pid, self.marker)


class _Either:
    """The pids in either of two containers, asked when needed (both may grow meanwhile)."""

    __slots__ = ("first", "second")

    def __init__(self, first: Container[int], second: Container[int]) -> None:
        self.first, self.second = first, second

    def __contains__(self, pid: object) -> bool:
        return pid in self.first or pid in self.second


class Neighbours:
    """What the end of one command (``child``, started after a fork count of ``forks``) knows
    of the other commands' leaders, for ``Family.members``: those starting and registered
    (``process.ProcessGroups``), each registered leader with its own count, and the counts of
    those reaped and unregistered since. Asked pid by pid: spawner threads add to ``starting``
    meanwhile.

    ``pid in neighbours``: another command's leader that is not reaped, so the pid names it and
    its session is that command's. ``reaped(pid)``: the fork count read before a reaped leader
    started; None for any other pid and for the command's own leader (always read).
    """

    __slots__ = ("_child", "_forks", "_groups", "_leaders", "_reaped", "_starting")

    def __init__(
        self,
        child: Leading,
        forks: int,
        starting: Container[int],
        groups: Container[int],
        leaders: Mapping[int, tuple[Leading, int]],
        reaped: Mapping[int, int],
    ) -> None:
        self._child, self._forks, self._starting, self._groups = child, forks, starting, groups
        self._leaders, self._reaped = leaders, reaped  # the groups' own: seen as they change

    def __contains__(self, pid: object) -> bool:
        if type(pid) is not int or pid == self._child.pid:
            return False
        if pid in self._starting:
            return True
        leader = self._leaders.get(pid)
        if leader is None:  # registered with no leader noted (``lead``): as it was
            return pid in self._groups
        return leader[0].returncode is None

    def reaped(self, pid: int) -> int | None:
        """The fork count read before ``pid``'s leader started, if it is reaped by now; never
        for the command's own leader, which is read: were its pid handed out again (a cycle
        gone round uncounted: forks that failed on a pids cgroup limit take pids but are not
        counted), the other process and its session must not be taken for the command's."""
        if pid == self._child.pid:
            return None
        leader = self._leaders.get(pid)
        if leader is None:
            return self._reaped.get(pid)
        return leader[1] if leader[0].returncode is not None else None


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
