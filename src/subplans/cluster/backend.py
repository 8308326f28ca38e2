"""``DaskBackend``: a plan's ``run`` and ``call`` units, and any picklable function, run on a Dask
cluster with the semantics of a local run.

The driver keeps everything that decides: the cap, the state machine, timeouts, retries, events
and the store. The cluster only runs attempts, each handed over when its subplan starts RUNNING
(``remote_runs``), on a worker that runs it through the very functions a local run uses
(``worker_tasks``).
"""

from __future__ import annotations

import asyncio
import functools
import os
import shlex
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import subplans.cluster.worker_tasks as worker_tasks
from subplans.cluster.claims import ClaimBook
from subplans.cluster.connecting import (
    CONNECT_TIMEOUT,
    check_cluster,
    open_client,
    worker_threads,
)
from subplans.cluster.handover import CommandSpec
from subplans.cluster.remote_runs import RemoteAttempts
from subplans.engine.errors import BackendError, CommandFailedError
from subplans.engine.subplan import Subplan
from subplans.execution.process import CommandResult
from subplans.execution.spawning import open_log

# distributed's types are loose and partly untyped: its objects are ``Any`` here.

__all__ = ["BackendStatistics", "DaskBackend"]


@dataclass(frozen=True, slots=True)
class BackendStatistics:
    """What a ``DaskBackend`` did so far: attempts handed over, running now, stopped through the
    cancel channel, abandoned (a worker that did not answer), lost with their worker."""

    workers: int
    threads: int
    handed_over: int
    running: int
    stopped: int
    abandoned: int
    lost: int


class DaskBackend:
    """Runs attempts on the Dask cluster of ``client``.

    ``DaskBackend(client)`` wraps a client the caller owns (and closes);
    ``await DaskBackend.start(...)`` connects (or starts a local cluster) and ``aclose()``
    closes what it opened. ``shared_logs``: whether the workers see the driver's log folders
    (None: found out once per folder). ``claim``: whether each attempt claims its token on the
    scheduler before it starts, so that a scheduler that re-runs the task of a lost worker
    never runs it twice (needless where the scheduler's ``allowed-failures`` is 0, as on the
    local cluster ``start`` makes).
    """

    def __init__(self, client: Any, *, shared_logs: bool | None = None, claim: bool = True) -> None:
        worker_tasks.REGISTRY.driver_here = True
        self.client = client
        self.claim = claim
        self._attempts = RemoteAttempts(client, shared_logs, ClaimBook(claim))
        self._address = _address_of(client)
        self._cluster: Any = None
        self._owns_client = False
        self._workers: dict[str, int] = {}

    @classmethod
    async def start(
        cls, scheduler: str | None, *, threads: int, timeout: float = CONNECT_TIMEOUT
    ) -> DaskBackend:
        """Connect to the scheduler at ``scheduler`` (within ``timeout`` seconds); or (None)
        start a local cluster on 127.0.0.1 with at least ``threads`` worker threads, which
        ``aclose()`` stops.

        Raises:
            BackendError: ``distributed`` is not installed, or the scheduler cannot be reached.
        """
        client, cluster = await open_client(scheduler, threads=threads, timeout=timeout)
        backend = cls(client, claim=cluster is None)
        backend._cluster, backend._owns_client = cluster, True
        backend._workers = await worker_threads(client)
        return backend

    async def aclose(self) -> None:
        """Stop the attempts in flight through the cancel channel (each fails with a
        ``BackendError``), then close the client and the local cluster this backend opened
        (not a caller's). Using the backend afterwards raises ``BackendError``."""
        if self._attempts.closed:
            return
        try:
            await self._attempts.close()
        finally:
            cluster, self._cluster = self._cluster, None
            if self._owns_client:
                await _closed_within(self.client.close(), CLOSE_TIMEOUT)
            if cluster is not None:
                await _closed_within(cluster.close(), CLOSE_TIMEOUT)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        stats = self.statistics()
        state = "closed" if self._attempts.closed else f"{stats.running} running"
        return (
            f"<DaskBackend {self._address} {stats.workers} workers, {stats.threads} threads, "
            f"{state}>"
        )

    @property
    def scheduler(self) -> str:
        """The scheduler's address."""
        return self._address

    @property
    def workers(self) -> dict[str, int]:
        """Each worker's address and threads, as last seen (``start``, ``check``)."""
        return dict(self._workers)

    def statistics(self) -> BackendStatistics:
        attempts = self._attempts
        return BackendStatistics(
            workers=len(self._workers),
            threads=sum(self._workers.values()),
            handed_over=attempts.handed_over,
            running=len(attempts.followed),
            stopped=attempts.stopped,
            abandoned=attempts.abandoned,
            lost=attempts.lost,
        )

    async def check(self, *, max_parallel: int, folders: Iterable[Path | str] = ()) -> list[str]:
        """Check the cluster can run the plan: the same subplans version on every worker, each
        of ``folders`` (the plan folders of ``call`` units) reachable there. Returns warnings
        to show (fewer worker threads than ``max_parallel``, no worker yet).

        Raises:
            BackendError: one line saying what is wrong and how to fix it.
        """
        self._reachable()
        wanted = [_absolute(folder) for folder in folders]
        workers, warnings = await check_cluster(
            self.client, max_parallel=max_parallel, folders=wanted
        )
        self._workers = workers
        return warnings

    def _reachable(self) -> None:
        if self._attempts.closed:
            raise BackendError(f"the backend of the Dask scheduler {self._address} is closed")
        if self.client.status != "running":
            raise BackendError(
                f"cannot reach the Dask scheduler at {self._address}: its connection was lost"
            )

    async def run_command(
        self,
        command: str | Sequence[str],
        *,
        log_file: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        cancel_grace: float = 5.0,
        tail_lines: int = 20,
        attempt: int | None = None,
        on_start: Callable[[int, str], None] | None = None,
        within: str = "",
    ) -> CommandResult:
        """``execution.process.run_command`` on a worker: the same result and errors.

        ``env`` is set over the worker's own environment. ``on_start`` gets the pid (on the
        worker's machine) and the worker's address. The output reaches ``log_file`` as it
        comes when the worker sees the driver's folder, else when the attempt ends.

        Raises:
            CommandFailedError: it exited non-zero, was killed by a signal or could not start.
            WorkerLostError: its worker was lost.
            asyncio.CancelledError: cancelled; its process group on the worker was stopped
                (SIGTERM, ``cancel_grace``, SIGKILL) first.
            SubplanCancelledError: cancelled, and its worker did not answer (``abandoned``).
        """
        if isinstance(command, str):
            sent: str | tuple[str, ...] = command
        else:
            sent = tuple(command)
            if not sent:
                raise ValueError("command must not be empty")
        if not cancel_grace >= 0:
            raise ValueError(f"cancel_grace must be >= 0, got {cancel_grace!r}")
        # The workers' working folders are not the driver's: every path goes absolute.
        log_file = Path(_absolute(log_file))
        self._attempts.usable(str(command))
        marker = await self._attempts.marker(log_file)
        if marker is None:  # the output comes back at the end: its header goes first, now
            os.close(open_log(log_file, attempt, within)[0])
        spec = CommandSpec(
            sent,
            str(log_file),
            None if cwd is None else _absolute(cwd),
            dict(env or {}),
            cancel_grace,
            attempt,
            tail_lines,
            marker,
            False,  # the claim's place comes with the task (``RemoteAttempts.run``)
            within,
        )
        label = sent if isinstance(sent, str) else shlex.join(sent)
        outcome = await self._attempts.run(
            worker_tasks.command_task,
            spec,
            label=label,
            cancel_grace=cancel_grace,
            on_start=on_start,
            log_file=log_file,
        )
        error = outcome.error
        if isinstance(error, CommandFailedError):
            error.log_file = str(log_file)  # the worker named its own copy when it had one
            if outcome.pid is None:  # it could not start: where is part of why
                error.args = (f"{error} (on worker {outcome.worker})", *error.args[1:])
            raise error
        if error is not None:  # pragma: no cover - run_command raises nothing else
            raise error
        assert outcome.pid is not None
        return CommandResult(0, outcome.pid, log_file, outcome.value)

    async def call(
        self,
        target: str,
        folder: Path,
        kwargs: Mapping[str, Any],
        *,
        cancel_grace: float,
        label: str,
        on_start: Callable[[int, str], None] | None = None,
        run_id: str | None = None,
    ) -> Any:
        """A ``call`` unit's function, imported on a worker by its ``module:function`` name
        (``folder`` importable there, the plan's current code: ``fresh_imports``), awaited or
        run in a thread as locally; its value. ``on_start`` gets the worker process's pid and
        the worker's address as it starts there. ``run_id``: the run it belongs to, for
        ``running_calls`` and ``stop_run``.

        Raises:
            CallTargetError: it cannot be imported there.
            Exception: whatever the function raised.
            WorkerLostError: its worker was lost.
        """
        args = (target, _absolute(folder), dict(kwargs), cancel_grace, label, run_id)
        return await self._function(worker_tasks.call_task, args, cancel_grace, label, on_start)

    def subplan(
        self,
        subplan_id: str,
        function: Callable[..., Any],
        *args: Any,
        timeout: float | None = None,
        retries: int = 0,
        cancel_grace: float = 5.0,
        **kwargs: Any,
    ) -> Subplan:
        """A ``Subplan`` that runs ``function(*args, **kwargs)`` on the cluster, under any
        dispatcher: an ``async def`` awaited on a worker, a plain function in a worker thread.
        The function, its arguments and its value must pickle; define it in a module the
        workers can import (or at the top level of a script: cloudpickle ships it by value)."""
        sent = (function, args, kwargs, cancel_grace, subplan_id)
        run: Callable[[], Awaitable[Any]] = functools.partial(
            self._function, worker_tasks.function_task, sent, cancel_grace, subplan_id
        )
        return Subplan(subplan_id, run, timeout=timeout, retries=retries)

    async def _function(
        self,
        task: Callable[..., Any],
        args: tuple[Any, ...],
        grace: float,
        label: str,
        on_start: Callable[[int, str], None] | None = None,
    ) -> Any:
        outcome = await self._attempts.run(
            task, *args, label=label, cancel_grace=grace, on_start=on_start
        )
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    async def stop_run(self, run_id: str, *, grace: float = 5.0) -> int:
        """Stop every process run ``run_id`` left on the workers' machines (they carry its
        ``SUBPLANS_RUN_ID``): SIGTERM, ``grace``, SIGKILL; and its ``call`` functions running
        there (``running_calls`` names those that run on). Returns how many processes were
        signalled. ``resume`` calls it before it runs anything again."""
        self._reachable()
        counts: dict[str, int] = await self.client.run(worker_tasks.stop_run, run_id, grace)
        return sum(counts.values())

    async def running_calls(self, run_id: str) -> dict[str, list[str]]:
        """The ``call`` units of run ``run_id`` whose functions still run on the workers (a
        plain function's thread runs on after its attempt was abandoned, and ``stop_run``
        cannot stop it): their ids by worker, only workers that have some."""
        self._reachable()
        found: dict[str, list[str]] = await self.client.run(worker_tasks.running_calls, run_id)
        return {worker: labels for worker, labels in sorted(found.items()) if labels}


#: Seconds ``aclose`` gives the client and the local cluster to close (a scheduler that is
#: gone may never answer).
CLOSE_TIMEOUT = 10.0


def _absolute(path: Path | str) -> str:
    """``path`` made absolute on the driver (no file system access): the workers' working
    folders are not the driver's."""
    return os.path.abspath(path)


def _address_of(client: Any) -> str:
    try:
        return str(client.scheduler.address)
    except AttributeError:  # pragma: no cover - a client that never connected
        return "(not connected)"


async def _closed_within(closing: Awaitable[Any], seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await closing
    except TimeoutError:  # pragma: no cover - a scheduler that went away mid-close
        pass
