"""Run one command as a subplan in its own process group, and never leave any of it running.

The command gets a new session, so its children and grandchildren share one process group that
can be signalled as a whole. Cancellation sends SIGTERM to the group, waits ``cancel_grace``
seconds for the leader, then sends SIGKILL; however the command ends, ``run_command`` returns
only once no live process of the group is left. Linux only: group membership is read from
``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shlex
import signal
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from subplans.errors import CommandFailedError

# CommandFailedError is what run_command raises: importable from here as well as from errors.
__all__ = [
    "CommandFailedError",
    "CommandResult",
    "ProcessGroups",
    "group_members",
    "proc_stat",
    "processes_of_run",
    "run_command",
    "stop_processes",
]

logger = logging.getLogger("subplans")

#: The output tail is read from at most this many bytes at the end of the log.
_TAIL_BYTES = 64 * 1024
#: How long to wait, after SIGKILL, for the members of a group to vanish.
_SETTLE_TIMEOUT = 5.0
#: How often to look again whether a group is empty.
_POLL_INTERVAL = 0.01


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A command that exited 0: its pid (also its process group id), log and last output lines."""

    exit_code: int
    pid: int
    log_file: Path
    output_tail: str


class ProcessGroups:
    """A registry of live process groups started by a run, so that an interrupt can kill them all at once."""

    __slots__ = ("_groups", "hurried")

    def __init__(self) -> None:
        self._groups: dict[int, str] = {}
        #: Set once everything was told to die now (SIGKILL to all): grace periods end early.
        self.hurried = asyncio.Event()

    def __repr__(self) -> str:
        return f"<ProcessGroups {len(self._groups)} live>"

    def __len__(self) -> int:
        return len(self._groups)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        # A snapshot: groups come and go while a caller walks them.
        return iter(list(self._groups.items()))

    def register(self, pgid: int, label: str) -> None:
        """Record a live group.

        Raises:
            RuntimeError: ``pgid`` is registered already.
        """
        if pgid in self._groups:
            raise RuntimeError(f"process group {pgid} is already registered")
        self._groups[pgid] = label

    def unregister(self, pgid: int) -> None:
        """Forget a group that is gone.

        Raises:
            RuntimeError: ``pgid`` is not registered.
        """
        if self._groups.pop(pgid, None) is None:
            raise RuntimeError(f"process group {pgid} is not registered")

    def signal_all(self, sig: int) -> int:
        """Send ``sig`` to every registered group; returns how many still existed to receive it."""
        if sig == signal.SIGKILL:
            self.hurried.set()
        signalled = 0
        for pgid in list(self._groups):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                continue
            signalled += 1
        return signalled


def group_members(pgid: int) -> list[int]:
    """The live processes of group ``pgid``, zombies left out, in pid order.

    Zombies count as gone: an orphan is reaped by PID 1, and in a container PID 1 may never do it.
    """
    try:
        # A member we may not signal (a setuid program such as sudo) still makes the group exist.
        with contextlib.suppress(PermissionError):
            os.killpg(pgid, 0)
    except ProcessLookupError:
        return []  # empty: no need to scan /proc
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit() and _is_live_member(_read_stat(name), pgid):
            members.append(int(name))
    return sorted(members)


def _read_stat(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read()
    except OSError:
        return b""  # it ended between the listing and the read


def _parse_stat(stat: bytes) -> tuple[str, int, int] | None:
    """(state, process group, start time) from the text of ``/proc/<pid>/stat``."""
    # The command name (field 2) may hold spaces and parentheses: the fields after it start past
    # its last ")": state is field 3, the process group field 5, the start time field 22.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        return None
    return fields[0].decode(), int(fields[2]), int(fields[19])


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks since boot) of ``pid``, or None if
    there is no such process."""
    return _parse_stat(_read_stat(str(pid)))


def _is_live_member(stat: bytes, pgid: int) -> bool:
    found = _parse_stat(stat)
    return found is not None and found[0] != "Z" and found[1] == pgid


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
) -> CommandResult:
    """Run ``command`` in a new process group, stdout and stderr appended to ``log_file``.

    A ``str`` runs through ``/bin/sh -c``; a sequence is an argv run without a shell. ``env`` is
    the child's whole environment (None inherits ours). ``groups`` holds the group while it lives;
    ``on_start`` gets the pid, which is also the process group id, as soon as it runs.

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
    if type(tail_lines) is not int or tail_lines < 0:
        raise ValueError(f"tail_lines must be an integer >= 0, got {tail_lines!r}")

    fd, start = _open_log(log_file)
    try:
        proc, early_cancel = await _spawn(argv, fd=fd, cwd=cwd, env=env)
    except OSError as error:
        name = command if isinstance(command, str) else argv[0]
        raise _cannot_start(name, cwd, error, log_file) from error
    finally:
        # The child holds its own copies; ours only kept the file open while it started.
        os.close(fd)

    pgid = proc.pid
    try:
        if groups is not None:
            groups.register(pgid, command if isinstance(command, str) else shlex.join(argv))
        if early_cancel is not None:
            raise early_cancel
        if on_start is not None:
            on_start(pgid)
        returncode = await proc.wait()
    finally:
        try:
            await _end_group(proc, pgid, cancel_grace)
        finally:
            if groups is not None:
                groups.unregister(pgid)

    tail = _read_tail(log_file, start, tail_lines)
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


def _open_log(path: Path) -> tuple[int, int]:
    """Open ``path`` for appending; returns the fd and the offset where this run's output starts.

    The child writes straight into the file, so no pipe needs draining and the output survives
    a crash of ours. The fd is not inheritable (PEP 446): other children never get it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    return fd, os.fstat(fd).st_size


async def _spawn(
    argv: list[str], *, fd: int, cwd: Path | None, env: Mapping[str, str] | None
) -> tuple[asyncio.subprocess.Process, asyncio.CancelledError | None]:
    """Start the child; a cancellation meanwhile is returned with it, to stop its group after.

    Once asyncio has forked the child, a cancelled start would SIGKILL the leader alone and
    orphan anything it already started: so the start always finishes, in a task of its own.
    """
    starting = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    )
    cancel: asyncio.CancelledError | None = None
    while not starting.done():
        # Unlike awaiting the task, asyncio.wait leaves it running when we are cancelled.
        cancel = await _through_cancel(asyncio.wait([starting])) or cancel
    # A function of its own: on 3.11 coverage loses the lines of a frame resumed by a cancel
    # until its next await (python/cpython#106749), and the failed start has none.
    return _started(starting, cancel)


def _started(
    starting: asyncio.Task[asyncio.subprocess.Process], cancel: asyncio.CancelledError | None
) -> tuple[asyncio.subprocess.Process, asyncio.CancelledError | None]:
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


async def _end_group(proc: asyncio.subprocess.Process, pgid: int, grace: float) -> None:
    """Leave no process of the group running, however the command ended.

    A leader that still runs gets SIGTERM with the whole group, and SIGKILL once ``grace``
    seconds pass; then the leader is reaped, and whatever is left of the group gets SIGKILL
    and is watched, bounded, until it is gone. A cancellation meanwhile cuts the grace short,
    never the cleanup: the last one is raised once the group is gone.
    """
    cancel: asyncio.CancelledError | None = None
    if proc.returncode is None:
        _signal_group(pgid, signal.SIGTERM)
        cancel = await _through_cancel(_exit_within(proc, grace))
    while proc.returncode is None:
        _signal_group(pgid, signal.SIGKILL)
        cancel = await _through_cancel(proc.wait()) or cancel
    # Orphans are not our children: they cannot be waited for, only watched until they vanish.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _SETTLE_TIMEOUT
    while members := group_members(pgid):
        _signal_group(pgid, signal.SIGKILL)
        if loop.time() >= deadline:
            logger.warning(
                "process group %d still has members %s %.1f s after SIGKILL; giving up on them",
                pgid,
                members,
                _SETTLE_TIMEOUT,
            )
            break
        cancel = await _through_cancel(asyncio.sleep(_POLL_INTERVAL)) or cancel
    if cancel is not None:
        raise cancel


async def _exit_within(proc: asyncio.subprocess.Process, timeout: float) -> None:
    # wait_for, not asyncio.timeout: in 3.11 a timeout inside an already cancelled task raises
    # CancelledError instead of TimeoutError.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), timeout)


async def _through_cancel(awaitable: Awaitable[object]) -> asyncio.CancelledError | None:
    """Await ``awaitable``; a cancellation is returned instead of raised, so cleanup goes on."""
    try:
        await awaitable
    except asyncio.CancelledError as cancel:
        return cancel
    return None


def _signal_group(pgid: int, sig: int) -> None:
    # Gone already, or only members we may not signal left (setuid): nothing more to do here.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


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
        with path.open("rb") as file:
            end = file.seek(0, os.SEEK_END)
            file.seek(max(start, end - _TAIL_BYTES))
            data = file.read()
    except OSError:
        return ""
    found = data.decode(errors="replace").splitlines()
    return "\n".join(found[max(len(found) - lines, 0) :])


def processes_of_run(run_id: str) -> dict[int, list[tuple[int, str]]]:
    """Live processes whose environment says they belong to ``run_id``, by process group.

    Every process a run starts carries ``SUBPLANS_RUN_ID`` (commands get it explicitly; the
    children of ``call`` functions inherit it from the run's own environment), so this finds
    them even when nothing else recorded them. Values are (pid, ``SUBPLANS_SUBPLAN`` or "?").
    """
    marker = f"SUBPLANS_RUN_ID={run_id}".encode()
    found: dict[int, list[tuple[int, str]]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as file:
                variables = file.read().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found_stat = proc_stat(int(name)) if marker in variables else None
        if found_stat is not None and found_stat[0] not in ("Z", "X"):
            pgid = found_stat[1]
            prefix = b"SUBPLANS_SUBPLAN="
            subplan = next((v[len(prefix) :] for v in variables if v.startswith(prefix)), b"?")
            found.setdefault(pgid, []).append((int(name), subplan.decode(errors="replace")))
    return found


def stop_processes(pids: Sequence[int], *, grace: float) -> None:
    """SIGTERM each of ``pids``, then SIGKILL whatever still runs after ``grace`` seconds.

    For processes outside any group of ours (children of a ``call`` function share the run's
    own process group, which must not be signalled as a whole). Blocking; waits in short steps.
    """
    import time

    def alive(pid: int) -> bool:
        found = proc_stat(pid)
        return found is not None and found[0] not in ("Z", "X")

    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = [pid for pid in pids if alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(_POLL_INTERVAL)
        left = [pid for pid in left if alive(pid)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
