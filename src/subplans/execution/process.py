"""Run one command as a subplan in its own process group, and never leave any of it running.

The command gets a new session, so its children and grandchildren share one process group that
can be signalled as a whole. However the command ends, ``run_command`` returns only once none
of its processes is left: those of its session (whatever process group they moved to, as
coreutils ``timeout`` does), its descendants, and those that carry its ``SUBPLANS_RUN_ID`` and
``SUBPLANS_SUBPLAN`` (``finding.Family``). Each gets SIGTERM, then SIGKILL once
``cancel_grace`` seconds pass (``stopping.Stopping``). A second Ctrl-C kills through the same
``Stopping`` (``ProcessGroups.kill_all``), never by a bare process group id, which may name
another process group by then. The command is started and reaped by ``spawning``. Linux only:
processes are read from ``/proc`` (``procfs``).
"""

from __future__ import annotations

import asyncio
import errno
import os
import shlex
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from subplans.engine.cancelling import through_cancel
from subplans.engine.errors import CommandFailedError
from subplans.execution.finding import Family, Leader, Neighbours, marker_of
from subplans.execution.procfs import ProcessInfo, Window, forks_so_far
from subplans.execution.spawning import Child, Started, start
from subplans.execution.stopping import SETTLE_TIMEOUT, Stopping, stop_async

# CommandFailedError is what run_command raises: importable from here as well as from errors.
__all__ = [
    "CommandFailedError",
    "CommandResult",
    "ProcessGroups",
    "run_command",
]

#: The output tail is read from at most this many bytes at the end of the log.
_TAIL_BYTES = 64 * 1024
#: How many reaped leaders ``ProcessGroups`` remembers (the newest): enough for the windows of
#: the commands that run meanwhile; a leader forgotten is read again, nothing more.
_REAPED_KEPT = 1024


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A command that exited 0: its pid (also its process group id), log and last output lines."""

    exit_code: int
    pid: int
    log_file: Path
    output_tail: str


class ProcessGroups:
    """A registry of the live commands of a run, by process group, each with the ``Stopping``
    that finds and stops its processes, so that an interrupt can kill them all at once."""

    __slots__ = ("_groups", "_leaders", "_reaped", "empty", "hurried", "starting")

    def __init__(self) -> None:
        self._groups: dict[int, tuple[str, Stopping]] = {}
        #: The registered commands' leaders, each with a fork count read before it started.
        self._leaders: dict[int, tuple[Child, int]] = {}
        #: The same count for the leaders reaped since they were unregistered, newest last.
        self._reaped: dict[int, int] = {}
        #: The pids of the commands a spawner thread started that are not registered yet (the
        #: loop has not heard of them): each leads a session of its own. None of them is reaped
        #: meanwhile (only the loop reaps), so none of these pids names another process.
        self.starting: set[int] = set()
        #: Set once everything was told to die now (SIGKILL to all): grace periods end early.
        self.hurried = asyncio.Event()
        #: Set while no group is registered.
        self.empty = asyncio.Event()
        self.empty.set()

    def __repr__(self) -> str:
        return f"<ProcessGroups {len(self._groups)} live>"

    def __len__(self) -> int:
        return len(self._groups)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        # A snapshot: groups come and go while a caller walks them.
        return iter([(pgid, label) for pgid, (label, _) in self._groups.items()])

    def register(self, pgid: int, label: str, stopping: Stopping) -> None:
        """Record a live group, and the ``Stopping`` of its command.

        Raises:
            RuntimeError: ``pgid`` is registered already.
        """
        if pgid in self._groups:
            raise RuntimeError(f"process group {pgid} is already registered")
        self._groups[pgid] = (label, stopping)
        self.empty.clear()

    def unregister(self, pgid: int) -> None:
        """Forget a group that is gone.

        Raises:
            RuntimeError: ``pgid`` is not registered.
        """
        if self._groups.pop(pgid, None) is None:
            raise RuntimeError(f"process group {pgid} is not registered")
        if not self._groups:
            self.empty.set()
        leader = self._leaders.pop(pgid, None)
        if leader is not None and leader[0].returncode is not None:
            self._reaped.pop(pgid, None)  # newest last
            self._reaped[pgid] = leader[1]
            if len(self._reaped) > _REAPED_KEPT:
                del self._reaped[next(iter(self._reaped))]

    def lead(self, child: Child, forks: int) -> None:
        """Note the leader of a registered command, and a fork count read before it started
        (as ``Window.forks``): once it is reaped, the ends of the other commands may prove
        that its pid names no process (``Family.members``)."""
        self._leaders[child.pid] = (child, forks)

    def neighbours(self, child: Child, forks: int) -> Neighbours:
        """What the end of ``child``'s command (``lead``'s arguments) knows of the others."""
        return Neighbours(child, forks, self.starting, self._groups, self._leaders, self._reaped)

    def kill_all(self) -> int:
        """SIGKILL now to every process of every registered command, each found and checked by
        its command's ``Stopping`` (``kill_now``); ends every grace (``hurried``). Returns how
        many commands had a process to kill."""
        self.hurried.set()
        return sum(1 for _, stopping in list(self._groups.values()) if stopping.kill_now())


async def run_command(
    command: str | Sequence[str],
    *,
    log_file: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    cancel_grace: float = 5.0,
    tail_lines: int = 20,
    groups: ProcessGroups | None = None,
    on_start: Callable[[int], None] | None = None,
    settle_timeout: float = SETTLE_TIMEOUT,
    attempt: int | None = None,
    within: str = "",
) -> CommandResult:
    """Run ``command`` in a new process group, stdout and stderr appended to ``log_file``
    (with an ``attempt``: under that attempt's header line, ``spawning.log_header``, which
    names ``within``: the attempts beyond the first of the nested plans it runs in).

    A ``str`` runs through ``/bin/sh -c``; a sequence is an argv run without a shell. ``env`` is
    the child's whole environment (None inherits ours). ``groups`` holds the group while it lives;
    ``on_start`` gets the pid, which is also the process group id, as soon as it runs.
    ``settle_timeout``: how long the command's end waits for processes that survive SIGKILL
    before it logs them and gives up on them (``Stopping``).

    Raises:
        CommandFailedError: it exited non-zero, was killed by a signal or could not start.
        asyncio.CancelledError: the caller was cancelled; the group got SIGTERM, then SIGKILL
            after ``cancel_grace`` seconds, and was gone before this propagated.
    """
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    if not argv:
        raise ValueError("command must not be empty")
    if not cancel_grace >= 0:
        raise ValueError(f"cancel_grace must be >= 0, got {cancel_grace!r}")
    if not settle_timeout >= 0:  # checked before the command starts, as Stopping would after
        raise ValueError(f"settle_timeout must be >= 0, got {settle_timeout!r}")
    if type(tail_lines) is not int or tail_lines < 0:
        raise ValueError(f"tail_lines must be an integer >= 0, got {tail_lines!r}")

    forks = forks_so_far()  # read before the command starts (see Window)
    try:
        # The spawner opens the log, and closes it once the child holds its own copies.
        starting = None if groups is None else groups.starting
        begun, early_cancel = await _spawn(
            start(
                argv,
                log_file=log_file,
                cwd=cwd,
                env=env,
                started=starting,
                attempt=attempt,
                within=within,
            )
        )
    except OSError as error:
        name = command if isinstance(command, str) else argv[0]
        raise _cannot_start(name, cwd, error, log_file) from error

    popen, offset, log_error = begun
    if popen is None:  # the log could not be opened: nothing started
        assert log_error is not None
        raise early_cancel or log_error  # the cancel first, as for a start that failed
    if groups is not None:
        groups.starting.discard(popen.pid)  # registered below, with no await in between
    child = Child(popen, asyncio.get_running_loop())  # reaped by the loop from now on
    finder = _finder(child, env, forks, groups)
    stopping = Stopping(finder, grace=cancel_grace, settle_timeout=settle_timeout)
    registered: ProcessGroups | None = None  # the groups that hold it, once they do
    try:
        if groups is not None:
            # At once: the end of every other command looks at the pids handed out since it
            # started, and skips those of registered commands without reading them (and once
            # reaped, those the pid cycle proves were forked after it: ``lead``).
            label = command if isinstance(command, str) else shlex.join(argv)
            groups.register(child.pid, label, stopping)
            groups.lead(child, forks)
            registered = groups
        if early_cancel is not None:
            raise early_cancel
        if on_start is not None:
            on_start(child.pid)
        # Shielded: a cancel leaves the exit to wait for, to end the group.
        returncode = await asyncio.shield(child.exited)
    finally:
        try:
            await _end_group(child, stopping, groups)
        finally:
            if registered is not None:
                registered.unregister(child.pid)

    pgid = child.pid
    tail = _read_tail(log_file, offset, tail_lines)
    if returncode == 0:
        return CommandResult(exit_code=0, pid=pgid, log_file=log_file, output_tail=tail)
    if returncode > 0:
        message, exit_code, signal_name = f"exited with code {returncode}", returncode, None
    else:
        signal_name = _signal_name(-returncode)
        message, exit_code = f"killed by signal {signal_name}", None
    raise CommandFailedError(
        message,
        exit_code=exit_code,
        signal=signal_name,
        log_file=str(log_file),
        output_tail=tail,
    )


async def _spawn(
    starting: asyncio.Future[Started],
) -> tuple[Started, asyncio.CancelledError | None]:
    """Wait for the start (``starting``); returns the child, and a cancellation meanwhile, to
    stop its group after.

    The start always runs to its end: once the child is forked, a cancel must not leave it to
    nobody (or kill its leader alone, orphaning what it started).
    """
    cancel: asyncio.CancelledError | None = None
    while not starting.done():
        # Unlike awaiting the future, awaiting a waiter leaves it be when we are cancelled.
        cancel = await through_cancel(_done_waiter(starting)) or cancel
    # A function of its own: on 3.11 coverage loses the lines of a frame resumed by a cancel
    # until its next await (python/cpython#106749), and the failed start has none.
    return _started(starting, cancel)


def _done_waiter(future: asyncio.Future[Started]) -> asyncio.Future[None]:
    """A future done once ``future`` is (what ``asyncio.wait([future])`` awaits, without the
    sets and the coroutine around it); cancelling it leaves ``future`` be."""
    waiter: asyncio.Future[None] = future.get_loop().create_future()

    def wake(_: object) -> None:
        if not waiter.done():  # cancelled meanwhile: nobody waits any more
            waiter.set_result(None)

    future.add_done_callback(wake)
    return waiter


def _started(
    starting: asyncio.Future[Started], cancel: asyncio.CancelledError | None
) -> tuple[Started, asyncio.CancelledError | None]:
    if cancel is not None and starting.exception() is not None:
        raise cancel  # it never started: nothing to stop, and the cancel comes first
    return starting.result(), cancel


def _cannot_start(
    name: str, cwd: Path | None, error: OSError, log_file: Path
) -> CommandFailedError:
    # The shell's conventions: 127 when there is nothing to run, 126 when it may not run.
    exit_code = 127 if error.errno in (errno.ENOENT, errno.ENOTDIR) else 126
    # subprocess names the working directory as the file when chdir() failed.
    where = f" in {str(cwd)!r}" if cwd is not None and error.filename == cwd else ""
    return CommandFailedError(
        f"cannot run {name!r}{where}: {error.strerror}",
        exit_code=exit_code,
        log_file=str(log_file),
    )


def _finder(
    child: Child, env: Mapping[str, str] | None, forks: int, groups: ProcessGroups | None
) -> Callable[[], dict[int, ProcessInfo]]:
    """How the command's processes are found (``Family``): the session of its leader, known by
    its start time while it lives (``Child.identity``), and by the pid cycle once it is gone;
    what descends; what carries its marker. Every process of the command is created after its
    leader: its pid comes first.
    """
    pgid = child.pid
    marker, since = marker_of(env), Window(pgid - 1, forks)
    # The other commands' sessions are theirs (those just started too, which the loop has not
    # registered yet): not worth reading their leaders or environments. Once reaped, a leader's
    # pid is read unless the pid cycle proves no process has it (``Family.members``): one
    # forked before this window may have had its pid handed out again in it.
    if groups is None:
        others = Neighbours(child, forks, (), (), {}, {})
    else:
        others = groups.neighbours(child, forks)

    def find() -> dict[int, ProcessInfo]:
        first = child.identity()
        start = None if first is None else first.start_time
        family = Family((Leader(pgid, start),), marker=marker, since=since)
        found = family.members(exclude=others, reaped=others.reaped)
        if first is not None and child.returncode is None:
            found.setdefault(pgid, first)  # a zombie until the loop reaps it: waited for too
        return found

    return find


async def _end_group(child: Child, stopping: Stopping, groups: ProcessGroups | None) -> None:
    """Leave no process of the command running, however the command ended.

    Every process ``stopping`` finds gets SIGTERM, and SIGKILL once its grace is over, until
    none is left; then the leader is reaped. A cancellation meanwhile, or a second Ctrl-C
    (``groups.hurried``), cuts the grace short, never the cleanup: the last cancellation is
    raised once all is gone.
    """
    # A command that ended by itself, alone, ends here: one look in /proc, nothing to await.
    cancel = await stop_async(
        stopping,
        wake=() if child.returncode is not None else (child.exited,),
        hurried=None if groups is None else groups.hurried,
    )
    if cancel is not None:
        raise cancel


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"  # a real-time signal between SIGRTMIN and SIGRTMAX


def _read_tail(path: Path, start: int, lines: int) -> str:
    """The last ``lines`` lines this run wrote to ``path`` (from offset ``start``), read from at
    most the last 64 KiB; ``""`` if the log has gone.
    """
    try:
        if os.stat(path).st_size <= start:
            return ""  # it wrote nothing: not worth opening
        with path.open("rb") as file:
            end = file.seek(0, os.SEEK_END)
            file.seek(max(start, end - _TAIL_BYTES))
            data = file.read()
    except OSError:
        return ""
    found = data.decode(errors="replace").splitlines()
    return "\n".join(found[max(len(found) - lines, 0) :])
