"""Starting the recorder's writer process (``writer_process``), or taking the spare one.

A process is started with ``subprocess.Popen`` (fork and exec in C: safe beside threads;
never ``os.fork``), with no descriptor of ours but its pipes, in a session of its own (a
Ctrl-C at the terminal, or a signal to the run's process group, must not end it before it
commits), and without the run's ``SUBPLANS_*`` markers, so that it is never taken for a process
of this run's subplans. It is still a descendant of this process: when this run is itself a
subplan's command (a nested ``subplans run``), the outer run counts the writer among that
subplan's processes and may signal it; it ignores SIGTERM and SIGINT for that reason
(``writer_process``), and is given this process's pid to end with it.

Its start (about 40 ms of CPU) is paid once per process, not per recorder: a recorder that
ends well leaves its process as the spare, which the next recorder takes (its session is acked
at once, so a spare that timed out is told apart and replaced); an unused spare exits on its
own after ``SPARE_IDLE`` seconds, or as soon as this process exits. ``subplans run`` and
``resume`` start one before they read the plan (``prestart``): its start overlaps the command's
own on another core, and the recorder takes it as it takes a new process (its ack read as the
run starts).

When no process can be started (``sys.executable`` is not a Python that runs ``-I -S -c``: an
application that embeds one), or one does not answer its start within ``START_WAIT`` seconds,
the same loop runs in a thread of this process instead (``WriterThread``; the recorder's pipe
switches to it, ``writer_pipe``): slower while the event loop is busy, as the writer thread
of old was, and otherwise the same.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from subplans.execution.finding import MARKER_VARIABLES
from subplans.store.writer_frames import ACK, HEADER, SESSION, WriterOptions
from subplans.store.writer_thread import WriterThread, enlarge

__all__ = [
    "EXIT_WAIT",
    "SPARE_IDLE",
    "START_WAIT",
    "Writer",
    "WriterThread",
    "forgo_prestarted",
    "give_back",
    "instead",
    "prestart",
    "prestarted",
    "read_ack",
    "read_exact",
    "reap",
    "replacement",
    "retire",
    "retire_spares",
    "session_frame",
    "start",
]

logger = logging.getLogger("subplans")

#: The process's start: the package's modules without their ``__init__``s (a plain namespace
#: each: they import the engine), then ``writer_process.main``.
_BOOT = """\
import sys, types
for name in ("subplans", "subplans.engine", "subplans.store"):
    package = types.ModuleType(name)
    package.__path__ = [sys.argv[1] + "/" + name.replace(".", "/")]
    sys.modules[name] = package
from subplans.store.writer_process import main
sys.exit(main(sys.argv[2:]))
"""
#: Where this package is (its parent folder), for the process to import it from: a source
#: tree, an installed package or an editable install alike.
_SOURCE = str(Path(__file__).resolve().parents[2])
#: Seconds a spare process waits for the next recorder before it exits.
SPARE_IDLE = 3.0
#: Seconds a spare has to take a session (it acks at once; a spare that exited never does).
_TAKE_WAIT = 2.0
#: Seconds a process has to exit once its input ended (it has written everything by then).
EXIT_WAIT = 10.0
#: Seconds a new process has to answer its start (about 0.02 s; more on a loaded machine):
#: silent longer, it is killed and a thread of this process writes instead.
START_WAIT = 5.0

#: The signals the process ignores, from its very start.
_IGNORED = (signal.SIGTERM, signal.SIGINT)

_spares: list[subprocess.Popen[bytes]] = []
#: The spare ``prestart`` started, until a recorder takes it (it has not answered yet).
_prestarted: subprocess.Popen[bytes] | None = None
#: The pids of the processes a thread reaps (each once lent as the spare).
_watched: set[int] = set()
_spares_lock = threading.Lock()


def _forked() -> None:
    """In a child made by ``fork()``: the spare is the parent's, never this process's."""
    global _spares_lock, _prestarted
    _spares.clear()
    _prestarted = None
    _watched.clear()
    _spares_lock = threading.Lock()


os.register_at_fork(after_in_child=_forked)


#: A writer: a process, or the thread that stands in for one.
Writer = subprocess.Popen[bytes] | WriterThread


def session_frame(options: WriterOptions) -> bytes:
    """The frame that begins ``options``'s session."""
    session = json.dumps(options.to_dict()).encode()
    return HEADER.pack(len(session), SESSION) + session


def start(options: WriterOptions) -> tuple[Writer, bool]:
    """A writer with ``options``'s session begun: the spare, a new process, or, if no process
    can be started, a ``WriterThread``; and whether it answered its start (a spare that had a
    session has; a prestarted one, like a new process, answers as the run starts)."""
    global _prestarted
    frame = session_frame(options)
    with _spares_lock:
        spare = _spares.pop() if _spares else None
        fresh = spare is not None and spare is _prestarted
        if fresh:
            _prestarted = None
    # A prestarted spare may still be booting: its ack is read with the others, within
    # ``START_WAIT``, as a new process's. Its write fails only if it exited (killed).
    if spare is not None and _begin(spare, frame, wait=not fresh):
        return spare, not fresh
    if spare is not None:
        retire(spare)
    try:
        process = _spawn()
    except OSError as error:
        instead(options, f"cannot start {sys.executable!r}: {error}")
        return WriterThread(frame), False
    _begin(process, frame, wait=False)  # its ack is read with the others: no wait
    return process, False


def prestart() -> None:
    """Start a writer process now and keep it as the spare (unless there is one), for a
    recorder this process is about to make: its start (about 40 ms of CPU) then overlaps
    what comes first (``subplans run``'s imports and plan load) on another core, instead of
    the run's first commands. It waits for its first session as long as this process lives
    (no ``SPARE_IDLE`` before it: a plan may take long to load); ``forgo_prestarted`` ends it
    if no recorder took it. Nothing if no process can be started (the recorder then finds
    out itself)."""
    global _prestarted
    with _spares_lock:
        if _spares:
            return
    try:
        process = _spawn()
    except OSError:
        return
    with _spares_lock:
        _spares.append(process)
        _prestarted = process


def forgo_prestarted() -> None:
    """Kill the process ``prestart`` started if no recorder took it (it never had a session:
    nothing of it is lost), and reap it: a run that never recorded leaves nothing behind."""
    global _prestarted
    with _spares_lock:
        process, _prestarted = _prestarted, None
        if process is None or process not in _spares:
            return
        _spares.remove(process)
    process.kill()
    retire(process)


@contextlib.contextmanager
def prestarted() -> Iterator[None]:
    """``prestart`` on entering, ``forgo_prestarted`` on leaving: around a command that will
    record a run unless it fails first."""
    prestart()
    try:
        yield
    finally:
        forgo_prestarted()


def _spawn() -> subprocess.Popen[bytes]:
    """A new writer process, without a session yet.

    Raises:
        OSError: it cannot be started.
    """
    # Started with SIGTERM and SIGINT blocked (a mask survives the exec): a signal that comes
    # before the process ignores them (``writer_process.main``) waits, and is then dropped.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _IGNORED)
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _BOOT, _SOURCE, str(SPARE_IDLE), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
            env=_environment(),
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    assert process.stdin is not None
    enlarge(process.stdin.fileno())
    return process


def replacement(process: Writer, options: WriterOptions, waited: float) -> WriterThread:
    """A thread for ``options``'s session, instead of ``process``, which did not answer its
    start within ``waited`` seconds (killed by now: it is reaped here)."""
    code = reap(process)
    assert process.stdout is not None
    process.stdout.close()
    why = (
        f"did not answer its start within {waited:g} seconds"
        if code == -signal.SIGKILL
        else f"exited with status {code} at its start"
    )
    instead(options, f"{sys.executable!r} {why}")
    return WriterThread(session_frame(options))


def read_ack(process: Writer, wait: float | None) -> bytes | None:
    """The body of ``process``'s next ack; None at the end of its acks, or if none came
    within ``wait`` seconds."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    if wait is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(wait * 1000):
            return None
    head = read_exact(fd, HEADER.size)
    length, kind = HEADER.unpack(head) if len(head) == HEADER.size else (0, 0)
    body = read_exact(fd, length) if kind == ACK else b""
    return body if body and len(body) == length else None


def instead(options: WriterOptions, why: str) -> None:
    """Say (at debug level) that ``options``'s writer is a thread of this process, and why."""
    logger.debug(
        "the writer process of the store %s for run %s: %s; writing from a thread of this "
        "process instead",
        options.name,
        options.run_id,
        why,
    )


def give_back(process: Writer) -> None:
    """Keep ``process`` (its session ended well) for the next recorder; one spare at most (a
    thread is ended)."""
    if isinstance(process, WriterThread):
        retire(process)
        return
    with _spares_lock:
        extra = _spares.pop() if _spares else None
        _spares.append(process)
        watched = process.pid in _watched
        _watched.add(process.pid)
    if not watched:
        # Reaped as soon as it exits, spare or not: an idle spare leaves no zombie behind.
        name = f"subplans recorder spare {process.pid}"
        threading.Thread(target=_reap, args=(process,), name=name, daemon=True).start()
    if extra is not None:
        retire(extra)


def _reap(process: subprocess.Popen[bytes]) -> None:
    process.wait()
    with _spares_lock:
        idle = process in _spares
        if idle:
            _spares.remove(process)
        _watched.discard(process.pid)
    if idle:  # it exited as the spare: nobody else closes its pipes
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.close()
        process.stdout.close()


def retire_spares() -> None:
    """End the spare process now, if there is one."""
    with _spares_lock:
        spares, _spares[:] = list(_spares), []
    for spare in spares:
        retire(spare)


def retire(process: Writer) -> int:
    """End ``process``'s input and wait for its exit (killed if it takes ``EXIT_WAIT``);
    its exit status."""
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.close()
    if isinstance(process, WriterThread):
        # Its ack pipe is closed once it ended (its session has, by then: it writes little):
        # in this process, a write to a pipe nobody reads raises SIGPIPE where an embedding
        # application left that signal at its default.
        code = reap(process)
        process.stdout.close()
        return code
    process.stdout.close()
    return reap(process)


def reap(process: Writer) -> int:
    """Wait for ``process``'s exit (killed if it takes ``EXIT_WAIT``); its exit status."""
    try:
        return process.wait(EXIT_WAIT)
    except subprocess.TimeoutExpired:  # pragma: no cover - it exits once its input ends
        process.kill()
        return process.wait()


def read_exact(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd``, fewer only at its end."""
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _begin(process: subprocess.Popen[bytes], frame: bytes, *, wait: bool) -> bool:
    """Send ``frame`` (a session's start); with ``wait``, True once its ack came."""
    assert process.stdin is not None
    assert process.stdout is not None
    fd = process.stdin.fileno()
    os.set_blocking(fd, True)
    try:
        os.write(fd, frame)  # smaller than a pipe's atomic write, into an empty pipe
    except OSError:
        return False
    finally:
        os.set_blocking(fd, False)
    if not wait:
        return True
    ack = process.stdout.fileno()
    poller = select.poll()  # not select.select: it fails on descriptors above 1023
    poller.register(ack, select.POLLIN)
    if not poller.poll(_TAKE_WAIT * 1000):
        return False  # pragma: no cover - a spare that neither exited nor answered
    head = read_exact(ack, HEADER.size)
    if len(head) < HEADER.size:
        return False  # it exited
    length: int = HEADER.unpack(head)[0]
    return len(read_exact(ack, length)) == length


def _environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in MARKER_VARIABLES}
