"""What runs on a worker: one attempt of a command or a function, and the cancel channel.

Each attempt runs as an ``async def`` task on the worker's event loop, in a task of our own
registered under its token (``_Registry``), through the very functions a local run uses
(``execution.process.run_command``, ``runners.call_function``): the same process groups, the
same stopping. ``stop_attempt`` is what the driver runs on the worker through ``client.run``
(Dask's own cancel does not stop a running task): it cancels that task, and returns once the
attempt has ended, its processes gone. A token cancelled before its task started (or claimed on
the scheduler already: a re-run of an attempt whose worker was lost) is refused at the start.

Every ``distributed`` import is inside a function: importing this module imports no Dask.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import secrets
import sys
import tempfile
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subplans.cluster.fresh_imports import PlanImports
from subplans.cluster.handover import (
    CLAIMS,
    GRACE_VARIABLE,
    LOG_CHUNK,
    LOG_INLINE,
    STARTED_TOPIC,
    WORKER_VARIABLE,
    CommandSpec,
    Kind,
    LogMarker,
    Outcome,
)
from subplans.cluster.watchdog import Watchdog, grace_mark
from subplans.engine.errors import SubplanCancelledError
from subplans.execution.process import CommandResult, ProcessGroups, run_command
from subplans.execution.runners import call_function
from subplans.execution.stopping import stop_run_processes

if TYPE_CHECKING:
    from distributed import Worker

__all__ = [
    "REGISTRY",
    "call_task",
    "command_task",
    "function_task",
    "log_chunk",
    "missing_folders",
    "running_calls",
    "sees_marker",
    "stop_attempt",
    "stop_run",
    "subplans_version",
]


class _Registry:
    """This worker process's attempts: those running, those cancelled, and its watchdog."""

    def __init__(self) -> None:
        self.running: dict[str, asyncio.Task[Any]] = {}
        #: Tokens the driver stopped: a task that starts with one of them refuses to run (an
        #: ordered set, bounded: ``cancel``).
        self.cancelled: dict[str, None] = {}
        self.watchdog = Watchdog(secrets.token_hex(8))
        #: The modules ``call`` units imported here, kept to the plans' current code.
        self.imports = PlanImports()
        #: The ``call`` units' functions running here, by token: their run's id and label.
        #: A plain function's thread may run on after its attempt was abandoned: it stays
        #: here until it returns (``running_calls``; popped from that thread).
        self.calls: dict[str, tuple[str, str]] = {}
        #: Each event loop's process groups (an in-process cluster runs on the caller's loops).
        self._groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ProcessGroups] = (
            weakref.WeakKeyDictionary()
        )
        self._markers: dict[LogMarker, bool] = {}
        self._logs: Path | None = None
        #: Set by a ``DaskBackend`` made in this process: a driver whose cluster runs in its own
        #: process (an in-process cluster) never marks its own environment, or everything it
        #: starts afterwards, here, would carry the mark its watchdog stops.
        self.driver_here = False

    def __repr__(self) -> str:
        return f"<worker registry {len(self.running)} running, {self.watchdog!r}>"

    def cancel(self, token: str) -> None:
        """Remember ``token`` as stopped (forgetting the oldest beyond ``CANCELLED_TOKENS``)."""
        self.cancelled[token] = None
        while len(self.cancelled) > CANCELLED_TOKENS:
            del self.cancelled[next(iter(self.cancelled))]

    def mark(self, grace: float) -> str:
        """Start the watchdog (or tell it a larger ``grace``) and mark this worker process's
        own environment with its token once, so whatever a function run here starts is
        stopped when the worker dies; the mark."""
        token = self.watchdog.ensure(grace)
        if not self.driver_here:
            os.environ[WORKER_VARIABLE] = token
        return token

    def groups(self) -> ProcessGroups:
        loop = asyncio.get_running_loop()
        found = self._groups.get(loop)
        if found is None:
            found = self._groups[loop] = ProcessGroups()
        return found

    def sees(self, marker: LogMarker) -> bool:
        """Whether this worker reads the driver's marker file (its file system), asked once."""
        seen = self._markers.get(marker)
        if seen is None:
            seen = self._markers[marker] = _reads(marker)
        return seen

    def local_log(self, token: str) -> Path:
        """A log file of this worker's own, for output shipped back at the end."""
        if self._logs is None:
            self._logs = Path(tempfile.mkdtemp(prefix="subplans-logs-"))
        return self._logs / f"{token}.log"


def _reads(marker: LogMarker) -> bool:
    try:
        return Path(marker.path).read_text(encoding="utf-8") == marker.nonce
    except (OSError, UnicodeDecodeError):
        return False


#: How many stopped tokens a worker remembers (the oldest forgotten first): a stop reaches a
#: queued task within moments, or the driver fenced its claim.
CANCELLED_TOKENS = 4096


#: The attempts of this worker process.
REGISTRY = _Registry()


def _worker() -> Worker:
    from distributed import get_worker

    return get_worker()


async def _refused(worker: Worker, token: str, claim: bool | Sequence[str]) -> Outcome | None:
    """An ``Outcome`` if the attempt must not start: stopped already, or claimed already (a
    re-run of an attempt whose worker was lost). Else None, the token claimed if asked."""
    refused = Outcome("refused", worker.address)
    if token in REGISTRY.cancelled:
        return refused
    if claim:
        keys = [CLAIMS, token] if claim is True else list(claim)
        # Check, then set: the scheduler re-runs a task only once its first worker is gone.
        if await worker.scheduler.get_metadata(keys=keys, default=None) is not None:
            return refused
        await worker.scheduler.set_metadata(keys=keys, value=worker.address)
        if token in REGISTRY.cancelled:  # pragma: no cover - stopped while it claimed: a race
            return refused
    return None


def _announce(worker: Worker, token: str, pid: int | None = None) -> None:
    """Tell the driver the attempt started here (``pid``: its command's, or this worker
    process's for a ``call`` unit's function)."""
    worker.log_event(STARTED_TOPIC, {"token": token, "pid": pid, "worker": worker.address})


async def _run_registered(
    token: str, work: Awaitable[Any]
) -> tuple[Kind, Any, BaseException | None]:
    """Run ``work`` in a task of its own that ``stop_attempt`` can cancel; how it ended."""
    task = asyncio.ensure_future(work)
    REGISTRY.running[token] = task
    try:
        value = await task
    except asyncio.CancelledError:
        if token in REGISTRY.cancelled:
            REGISTRY.cancelled.pop(token, None)  # it ran: no second start to refuse
            return "cancelled", None, None
        # Dask cancelled the task itself (its worker is closing): ours was stopped too.
        raise  # pragma: no cover - Dask leaves a running task be but when its worker closes
    except SubplanCancelledError as error:  # a function's thread abandoned after the grace
        return "cancelled", None, error
    except Exception as error:
        return "failed", None, error
    finally:
        del REGISTRY.running[token]
    return "done", value, None


async def command_task(
    token: str, spec: CommandSpec, claim: bool | Sequence[str] | None = None
) -> Outcome:
    """Run one attempt of a command on this worker (the task the driver submits); ``claim``
    (where to claim the token) overrides the spec's."""
    worker = _worker()
    refused = await _refused(worker, token, spec.claim if claim is None else claim)
    if refused is not None:
        return refused
    shared = spec.marker is not None and REGISTRY.sees(spec.marker)
    log_file = Path(spec.log_file) if shared else REGISTRY.local_log(token)
    env = dict(os.environ)
    env.update(spec.env)
    env[WORKER_VARIABLE] = REGISTRY.mark(spec.cancel_grace)
    env[GRACE_VARIABLE] = grace_mark(spec.cancel_grace)
    pid: int | None = None

    def started(started_pid: int) -> None:
        nonlocal pid
        pid = started_pid
        _announce(worker, token, started_pid)

    kind, value, error = await _run_registered(
        token,
        run_command(
            spec.command if isinstance(spec.command, str) else list(spec.command),
            log_file=log_file,
            cwd=None if spec.cwd is None else Path(spec.cwd),
            env=env,
            cancel_grace=spec.cancel_grace,
            tail_lines=spec.tail_lines,
            groups=REGISTRY.groups(),
            on_start=started,
            # The driver wrote the attempt's header already when it ships the logs (no marker).
            attempt=None if spec.marker is None else spec.attempt,
            within=spec.within,
        ),
    )
    tail = value.output_tail if isinstance(value, CommandResult) else None
    log, rest = (None, 0) if shared else _take(log_file)
    return Outcome(kind, worker.address, pid, tail, error, log, rest)


def _take(path: Path) -> tuple[bytes | None, int]:
    """The output a worker-local log holds, the file removed, if small; else (None, its size),
    the file left for ``log_chunk``."""
    try:
        size = path.stat().st_size
        if size > LOG_INLINE:
            return None, size
        data = path.read_bytes()
        path.unlink()
    except OSError:  # pragma: no cover - the command could not create it: no output
        return b"", 0
    return data, 0


def log_chunk(token: str, offset: int) -> bytes:
    """Up to ``LOG_CHUNK`` bytes of the output attempt ``token`` left here, from ``offset``
    (run through ``client.run``); the file is removed once its end was read."""
    path = REGISTRY.local_log(token)
    try:
        with path.open("rb") as log:
            log.seek(offset)
            data = log.read(LOG_CHUNK)
            end = log.tell() >= os.fstat(log.fileno()).st_size
    except OSError:  # pragma: no cover - removed already
        return b""
    if end:
        path.unlink(missing_ok=True)
    return data


async def call_task(
    token: str,
    target: str,
    folder: str,
    kwargs: Mapping[str, Any],
    cancel_grace: float,
    label: str,
    run_id: str | None = None,
    claim: bool | Sequence[str] = True,
) -> Outcome:
    """Run a ``call`` unit's function, imported here by its ``module:function`` name; while
    it runs (a thread abandoned after its grace included), ``running_calls(run_id)`` names it."""
    worker = _worker()
    refused = await _refused(worker, token, claim)
    if refused is not None:
        return refused
    REGISTRY.mark(cancel_grace)
    # A function runs in the worker process: its pid is the one to name (``on_start``).
    _announce(worker, token, os.getpid())
    if run_id is not None:
        REGISTRY.calls[token] = (run_id, label)

    async def work() -> Any:
        in_thread = False
        try:
            function = REGISTRY.imports.load(target, Path(folder))
            if run_id is not None and not inspect.iscoroutinefunction(function):
                function, in_thread = _unlisted_when_done(function, token), True
            return await call_function(function, kwargs, cancel_grace=cancel_grace, label=label)
        finally:
            if not in_thread:
                REGISTRY.calls.pop(token, None)

    kind, value, error = await _run_registered(token, work())
    return Outcome(kind, worker.address, os.getpid(), value, error)


def _unlisted_when_done(function: Callable[..., Any], token: str) -> Callable[..., Any]:
    """``function``, which takes ``token`` out of ``REGISTRY.calls`` as it returns (in its
    thread, however long after its attempt ended)."""

    def called(**kwargs: Any) -> Any:
        try:
            return function(**kwargs)
        finally:
            REGISTRY.calls.pop(token, None)

    return called


def running_calls(run_id: str) -> list[str]:
    """The labels of run ``run_id``'s ``call`` functions still running on this worker (run
    through ``client.run``), an abandoned thread's included."""
    return sorted(label for run, label in list(REGISTRY.calls.values()) if run == run_id)


async def function_task(
    token: str,
    function: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    cancel_grace: float,
    label: str,
    claim: bool | Sequence[str] = True,
) -> Outcome:
    """Run a picklable function (``DaskBackend.subplan``): awaited, or in a thread."""
    worker = _worker()
    refused = await _refused(worker, token, claim)
    if refused is not None:
        return refused
    REGISTRY.mark(cancel_grace)
    _announce(worker, token)

    # A partial of a coroutine function is one too (call_function awaits it).
    called = functools.partial(function, *args)
    work = call_function(called, kwargs, cancel_grace=cancel_grace, label=label)
    kind, value, error = await _run_registered(token, work)
    return Outcome(kind, worker.address, None, value, error)


async def stop_attempt(token: str) -> bool:
    """Stop the attempt ``token`` on this worker (run through ``client.run``): its task is
    cancelled, and this returns once it ended. False if it was not running (it will refuse
    to start)."""
    REGISTRY.cancel(token)
    task = REGISTRY.running.get(token)
    if task is None:
        return False
    task.cancel()
    await asyncio.wait([task])
    return True


async def stop_run(run_id: str, grace: float) -> int:
    """Stop every process of run ``run_id`` on this worker's machine, and its ``call``
    functions running here (awaited ones end; a thread gets its grace, and may run on:
    ``running_calls``); how many processes were signalled."""
    tokens = [token for token, (run, _) in list(REGISTRY.calls.items()) if run == run_id]
    await asyncio.gather(*(stop_attempt(token) for token in tokens))
    return await asyncio.to_thread(stop_run_processes, run_id, grace=grace)


def sees_marker(marker: LogMarker) -> bool:
    """Whether this worker sees the driver's logs folder (``LogMarker``)."""
    return REGISTRY.sees(marker)


def subplans_version() -> str:
    """The version of the subplans tree imported here (``subplans.__version__``: what runs,
    whatever the installed metadata says). The package is imported before any module of it,
    so it is read, not imported (the layers import no package root)."""
    return str(sys.modules["subplans"].__version__)


def missing_folders(folders: Sequence[str]) -> list[str]:
    """Those of ``folders`` this worker cannot see."""
    return [folder for folder in folders if not os.path.isdir(folder)]
