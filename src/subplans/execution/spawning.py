"""Starting a command's first process, in a session of its own, and reaping it in the event loop.

``spawn`` forks and execs with ``subprocess.Popen``, as ``asyncio.create_subprocess_exec`` does
underneath, without the transport, protocol and child watcher around it (a command's output goes
straight to its log file: there is no pipe to drain), and in a thread of its own: the fork and
exec are most of what a short command costs, and ``Popen`` lets go of the GIL meanwhile, so the
event loop goes on with the other commands, and several start at once. ``start`` opens the
command's log file in that thread first (``open_log``), and writes the attempt's header line
there (``log_header``; measured: no slower than without it): creating it costs more than any
other call of a start, and each call of the loop's is a moment a spawner thread takes the GIL
from it; each start notes its pid as soon as ``Popen`` returns (``started``).

Not in the loop's own thread, although that would spare the GIL going back and forth between
the loop and the spawners (#10, measured against this, interleaved): ``Popen`` uses vfork
here (no ``preexec_fn``, no user or group change; a new session is allowed), but the caller
still waits until the child has exec'd, and before that for the log's creation; on a busy
2-core machine, with a disk slow to create files, that blocked the loop for 1.2 ms a start
(median; 3 ms at worst), and ``subplans run`` of 1,000 ``true`` at -j16 took 1.4-1.8x as long
as with the spawners (medians of interleaved rounds; 1.9x at -j4), never less on quieter
moments (1.00-1.03x), and commands of 50 ms came out even. Opening the log in a thread and forking in
the loop fell in between; one or two spawners were slower than four, eight no faster, and a
lock around the log's creation gained nothing. Each call a spawner makes hands the GIL over to
the loop and back (a run's futex calls), so a start makes few: ``/dev/null`` stays open, a new
log is created without an ``fstat`` (``O_EXCL``), and the loop hears of the starts that ended
meanwhile in one wake-up (``_Ended``). Two, three and six spawners were measured again then:
fewer hand-overs, but two and three were slower, six no faster (``bench_cli.py``, eighth pass).

The exit is watched through a pidfd (``Child``): the loop reaps the child once the pidfd says it
has exited, so until then its pid names it and nothing else (``Child.identity``). Where the
kernel has no pidfds (Linux before 5.3, a seccomp filter), a thread waits for it, as asyncio's
own ``ThreadedChildWatcher`` does, and who it is is read as it starts. Linux only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import subplans.engine  # noqa: F401 - the package's NullHandler, as for every logger of ours
from subplans.execution.procfs import ProcessInfo, read_process

__all__ = ["Child", "Started", "log_header", "open_log", "spawn", "start"]

logger = logging.getLogger("subplans")

#: The exit status of a child that someone else reaped (its status is lost), as asyncio says.
_LOST_STATUS = 255

#: The threads that fork: their own, never the loop's default executor, so that a start never
#: waits behind other work. A few are enough: each waits only until its child has exec'd. Made
#: on first use, and again in a forked child: the threads do not come along with a fork, and an
#: executor that believes it has idle workers would queue every start there for ever.
_spawners: ThreadPoolExecutor | None = None

#: ``/dev/null``, opened once (a forked child has it too), read-write as ``subprocess.DEVNULL``
#: is, and never inherited as it is: each child gets it as its stdin (``dup2`` clears the flag
#: there). ``DEVNULL`` opened and closed it at every start, two calls in the spawner (#10).
_DEVNULL = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)


def _executor() -> ThreadPoolExecutor:
    global _spawners
    if _spawners is None:
        _spawners = ThreadPoolExecutor(max_workers=4, thread_name_prefix="subplans-spawn")
    return _spawners


def _forget_spawners() -> None:  # pragma: no cover - runs in a forked child, out of sight
    global _spawners
    _spawners = None


os.register_at_fork(after_in_child=_forget_spawners)


class _Ended:
    """The starts that ended in the spawner threads, handed to a loop in batches: one wake-up
    of the loop (a write to its self-pipe, from the spawner) for all that end before it runs,
    not one each (``run_in_executor``'s)."""

    # No reference to the loop: it is the key this is kept under, weakly (``_ended``).
    __slots__ = ("ended", "woken")

    def __init__(self) -> None:
        self.ended: collections.deque[tuple[asyncio.Future[Any], Any, BaseException | None]]
        self.ended = collections.deque()
        self.woken = False

    def run(self, future: asyncio.Future[Any], job: Callable[[], Any]) -> None:
        """In a spawner thread: ``job``, its outcome handed to ``future``."""
        try:
            self.ended.append((future, job(), None))
        except BaseException as error:
            self.ended.append((future, None, error))
        if not self.woken:  # after the append: a hand-over under way takes it, or wakes again
            self.woken = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                future.get_loop().call_soon_threadsafe(self.hand_over)

    def hand_over(self) -> None:
        self.woken = False  # before taking them: a start that ends meanwhile wakes the loop again
        ended = self.ended
        while ended:
            future, result, error = ended.popleft()
            if future.cancelled():  # pragma: no cover - nothing of ours cancels a start
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)


_ended: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Ended]
_ended = weakref.WeakKeyDictionary()


def _submit(job: Callable[[], Any]) -> asyncio.Future[Any]:
    """Run ``job`` in a spawner thread; its outcome in the future, in the running loop."""
    loop = asyncio.get_running_loop()
    ended = _ended.get(loop)
    if ended is None:
        ended = _ended[loop] = _Ended()
    future = loop.create_future()
    _executor().submit(ended.run, future, job)
    return future


class Child:
    """A started command's first process (its session and process group leader), until reaped.

    ``exited`` gets its exit status as ``subprocess`` gives it (negative: killed by that signal)
    once it is reaped; ``returncode`` is None until then.
    """

    __slots__ = ("_identity", "_in_loop", "_popen", "exited", "pid")

    def __init__(self, popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.exited: asyncio.Future[int] = loop.create_future()
        self._identity: ProcessInfo | None = None
        try:
            pidfd = os.pidfd_open(self.pid)
        except OSError:  # no pidfds here: a thread waits, and the pid is ours only until then
            self._in_loop = False
            self._identity = read_process(self.pid)
            waiting = threading.Thread(
                target=self._wait, args=(loop,), name=f"subplans wait {self.pid}", daemon=True
            )
            waiting.start()
        else:
            self._in_loop = True
            loop.add_reader(pidfd, self._reap, loop, pidfd)

    def __repr__(self) -> str:
        return f"<Child {self.pid} returncode={self.returncode}>"

    @property
    def returncode(self) -> int | None:
        """Its exit status once reaped (negative: the signal that killed it), else None."""
        return self._popen.returncode

    def identity(self) -> ProcessInfo | None:
        """The process as ``/proc`` showed it while its pid was surely its own (not yet reaped);
        None if it was reaped before anyone asked. Read once."""
        if self._identity is None and self._in_loop and self._popen.returncode is None:
            # Not reaped (only the loop reaps it): a zombie holds on to its pid, so /proc/<pid>
            # is this process.
            self._identity = read_process(self.pid)
        return self._identity

    def _reap(self, loop: asyncio.AbstractEventLoop, pidfd: int) -> None:
        # The pidfd is readable once the process has exited: the wait returns at once.
        loop.remove_reader(pidfd)
        try:
            status = _reap_through(pidfd, self.pid)
        finally:
            os.close(pidfd)
        self._settle(status)

    def _wait(self, loop: asyncio.AbstractEventLoop) -> None:
        status = _wait_for(self.pid)
        self._popen.returncode = status  # reaped: the Popen must never wait for it again
        # The loop may be closed by now (the run abandoned the command): nobody waits then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._settle, status)

    def _settle(self, status: int) -> None:
        # Set on the Popen too, so that it never counts the child as running (and reaps it).
        self._popen.returncode = status
        if not self.exited.done():
            self.exited.set_result(status)


def _reap_through(pidfd: int, pid: int) -> int:
    """Reap the process ``pidfd`` refers to, never blocking: if someone else reaped it and its
    pid went to another child of ours, a wait by pid would block the loop until that one ends."""
    try:
        found = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        logger.warning("unknown child process pid %d, will report returncode 255", pid)
        return _LOST_STATUS
    except OSError:  # a kernel with pidfds but without waitid on them (5.3): it has exited
        return _wait_for(pid)
    if found is None:  # pragma: no cover - readable, so it has exited: cannot happen
        return _wait_for(pid)
    return found.si_status if found.si_code == os.CLD_EXITED else -found.si_status


def _wait_for(pid: int) -> int:
    """Reap ``pid``; its exit status as ``subprocess`` gives it."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        # Reaped elsewhere (SIGCHLD ignored, a watcher that waits for any child): its status
        # is lost; as asyncio does, say so and fail it.
        logger.warning("unknown child process pid %d, will report returncode 255", pid)
        return _LOST_STATUS
    return os.waitstatus_to_exitcode(status)


def spawn(
    argv: list[str],
    *,
    output: int,
    cwd: Path | None,
    env: Mapping[str, str] | None,
    started: set[int] | None = None,
) -> asyncio.Future[subprocess.Popen[bytes]]:
    """Start ``argv`` in a new session, in a spawner thread: stdin from ``/dev/null``, stdout
    and stderr to the file descriptor ``output``, which is closed once the child has its own
    copies (whether it started or not); ``env`` is its whole environment (None: ours).

    The future is done once the child runs (or could not start: ``OSError``, whose ``filename``
    names the program, or ``cwd`` if that failed); nothing cancels the start once asked for.
    Watch the child with ``Child`` as soon as it is done: nobody reaps it until then.
    ``started`` gets the child's pid as it starts, before the future is done.
    """
    start = functools.partial(_popen, argv, output, cwd, env, started)
    try:
        return _submit(start)
    except BaseException:
        os.close(output)  # never asked for (no loop, the interpreter is exiting)
        raise


class Started(NamedTuple):
    """What ``start`` did: the command's first process and the offset in its log where its
    output begins; or why the log could not be opened (``log_error``: nothing started)."""

    popen: subprocess.Popen[bytes] | None
    offset: int
    log_error: OSError | None = None


def start(
    argv: list[str],
    *,
    log_file: Path,
    cwd: Path | None,
    env: Mapping[str, str] | None,
    started: set[int] | None = None,
    attempt: int | None = None,
    within: str = "",
) -> asyncio.Future[Started]:
    """``spawn``, the output appended to ``log_file`` (``open_log``, under the header of
    ``attempt`` if given, ``within`` its nested plans' attempts), opened in the spawner's thread too: creating a file is the costliest
    call of a start, and in the loop each call is a moment a spawner thread takes the GIL from it.

    The future fails with ``OSError`` as ``spawn``'s if the command cannot start; if the log
    cannot be opened, its result says why (``log_error``), and nothing started.
    """
    begin = functools.partial(_start, argv, log_file, cwd, env, started, attempt, within)
    return _submit(begin)


def log_header(attempt: int, started: float, *, resumed: bool = False, within: str = "") -> str:
    """The line that opens an attempt's output in its log, ``started`` a ``time.time()``:
    ``--- attempt 2, started 2026-11-30T07:00:01.123Z ---`` (``attempt 1 (resumed)`` for the
    first attempt of a resume, appended after what the earlier run wrote; ``attempt 1 (in
    s/inner attempt 2)`` for a command whose nested plan runs again, ``within`` its attempts
    beyond the first, outermost first: the attempt number starts again with each)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))
    millis = int(started % 1 * 1000)
    again = f" (in {within})" if within else " (resumed)" if resumed else ""
    return f"--- attempt {attempt}{again}, started {stamp}.{millis:03d}Z ---\n"


def open_log(path: Path, attempt: int | None = None, within: str = "") -> tuple[int, int]:
    """Open ``path`` for appending; returns the fd and the offset where this run's output starts.

    The child writes straight into the file, so no pipe needs draining and the output survives
    a crash of ours. The fd is not inheritable (PEP 446): other children never get it. With an
    ``attempt``, its header (``log_header``) is written first, on a line of its own, and the
    offset is past it: the output tail never shows it. ``within``: the attempts of the nested
    plans the command runs in, beyond their first (``log_header``); the log is not new then, yet
    not resumed: an earlier attempt of the nested plan wrote it.
    """
    try:
        fd, size = _create_or_open(path)
    except OSError:
        # Its folder may be missing (made once, not at every command); failing again, it says why.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, size = _create_or_open(path)
    if attempt is None:
        return fd, size
    try:
        resumed = attempt == 1 and size > 0
        header = log_header(attempt, time.time(), resumed=resumed, within=within)
        if size and not _ends_line(path, size):
            header = "\n" + header  # an earlier attempt's last line had no end: the header's own
        size += os.write(fd, header.encode())
    except OSError:
        os.close(fd)
        raise
    return fd, size


_LOG = os.O_WRONLY | os.O_CREAT | os.O_APPEND


def _create_or_open(path: Path) -> tuple[int, int]:
    """``path`` opened for appending, and its size: created if it can be (new, so empty: no
    ``fstat``, a GIL hand-over in the spawner thread), else opened as it is."""
    try:
        return os.open(path, _LOG | os.O_EXCL, 0o666), 0
    except FileExistsError:
        fd = os.open(path, _LOG, 0o666)
    return fd, os.fstat(fd).st_size


def _ends_line(path: Path, size: int) -> bool:
    """Whether the byte before ``size`` in ``path`` ends a line: read only for a retry or a
    resume (the log is not new), through a read-only fd, so that the child's stays write-only."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, 1, size - 1) == b"\n"
    finally:
        os.close(fd)


def _start(
    argv: list[str],
    log_file: Path,
    cwd: Path | None,
    env: Mapping[str, str] | None,
    started: set[int] | None,
    attempt: int | None = None,
    within: str = "",
) -> Started:
    try:
        output, offset = open_log(log_file, attempt, within)
    except OSError as error:
        return Started(None, 0, error)
    return Started(_popen(argv, output, cwd, env, started), offset)


def _popen(
    argv: list[str],
    output: int,
    cwd: Path | None,
    env: Mapping[str, str] | None,
    started: set[int] | None,
) -> subprocess.Popen[bytes]:
    try:
        popen = subprocess.Popen(
            argv,
            stdin=_DEVNULL,
            stdout=output,
            stderr=output,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    finally:
        os.close(output)
    if started is not None:  # in this thread: the loop may take a while to hear of it
        started.add(popen.pid)
    return popen
