"""The Dask clusters a run's units need (issue #12): one ``DaskBackend`` per distinct ``dask``
backend of the plan, started (or connected to) and checked before anything of the run is
recorded, handed to the executor, and closed after the run.

A plan whose units all run here imports nothing of Dask: ``subplans.cluster`` is imported only
when a unit needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from subplans.engine.errors import BackendError, SubplanError
from subplans.engine.values import Shown

if TYPE_CHECKING:
    from subplans.cluster import DaskBackend
    from subplans.plans.backends import Backend
    from subplans.plans.tree import PlanNode, StepNode, UnitNode
    from subplans.store import RunInfo

__all__ = ["ClusterNeed", "RunBackends", "cluster_needs", "quiet_dask_logs", "unusable"]

#: How often ``start_unless`` asks whether to stop (seconds).
_POLL = 0.05
#: Seconds ``stop_run`` waits for a run's ``call`` functions that run on (threads that cannot
#: be stopped), and how often it asks the workers meanwhile.
CALLS_WAIT = 10.0
_CALLS_POLL = 0.1


class ClusterNeed(Shown):
    """What a run asks of one cluster: as many worker threads as its widest step's cap
    (``threads``), and the plan folders its ``call`` units import from (``folders``)."""

    # A plain class: a dataclass costs the command's start a quarter of a millisecond (#10).
    __slots__ = ("folders", "threads")
    _fields = ("threads", "folders")

    def __init__(self, threads: int = 1, folders: set[Path] | None = None) -> None:
        self.threads = threads
        self.folders = set() if folders is None else folders


def cluster_needs(plan: PlanNode) -> dict[Backend, ClusterNeed]:
    """The ``dask`` backends of ``plan``'s ``run`` and ``call`` units, nested plans' included;
    a step whose units are made when it starts counts with the units of a sample item."""
    needs: dict[Backend, ClusterNeed] = {}

    def need(backend: Backend, threads: int) -> ClusterNeed:
        found = needs.setdefault(backend, ClusterNeed())
        found.threads = max(found.threads, threads)
        return found

    for step in plan.walk_steps():
        if step.profile.backend.kind != "dask":
            continue  # its units run where its profile says: here
        units = _units(step)
        if units is None:  # a nested plan the item names: its units take the step's backend
            need(step.profile.backend, step.profile.max_parallel)
            continue
        for unit in units:
            if unit.kind != "plan" and unit.backend.kind == "dask":
                found = need(unit.backend, step.profile.max_parallel)
                if unit.kind == "call":  # the workers have cwds of their own
                    found.folders.add(unit.folder.resolve())
    return needs


def _units(step: StepNode) -> Iterable[UnitNode] | None:
    """The step's units; a run-time step's as its template makes them of a sample item (as
    the manifest does), None if only its items tell."""
    if step.items is None:
        return step.units
    try:
        return step.items.units(("{item}",))
    except SubplanError:
        return None


def unusable(backend: Backend, error: Exception) -> str:
    """One line for what Dask raised when ``backend``'s cluster was reached or checked: what
    went wrong, and what to do where we can tell."""
    where = (
        f"the Dask scheduler at {backend.scheduler}" if backend.scheduler else "the local cluster"
    )
    said = str(error) or type(error).__name__
    if isinstance(error, TypeError) and "ssl_context" in said:
        # We pass Dask no security object: it reads its own configuration, which has none.
        return (
            f"cannot reach {where}: TLS needs Dask's TLS configuration "
            "(distributed.comm.tls.ca-file, distributed.comm.tls.client.cert and .key), "
            "which is not set"
        )
    ucx = backend.scheduler is not None and backend.scheduler.startswith("ucx://")
    # Dask's stub without UCX (today), or the missing module itself (distributed 2025.1).
    if ucx and ("UCXConnector" in said or isinstance(error, ImportError)):
        return f"cannot reach {where}: ucx:// needs Dask's UCX support (distributed-ucxx)"
    if isinstance(error, TypeError) and "identity()" in said:
        # A worker (or another Dask server) answers, but not as a scheduler does.
        return (
            f"{backend.scheduler} does not answer as a Dask scheduler (a worker's address?): {said}"
        )
    if type(error) is not Exception and str(error):  # a worker's error comes as a bare one
        said = f"{type(error).__name__}: {said}"
    if "ImportError" in said or "ModuleNotFoundError" in said:
        said += " (install the same subplans on every worker)"
    return f"cannot use {where}: {said}"


class RunBackends:
    """The clusters of one run, by the ``Backend`` its units name (``needs``); ``start`` them,
    hand ``started`` to the executor, ``aclose`` them after the run."""

    def __init__(self, needs: Mapping[Backend, ClusterNeed]) -> None:
        self.needs = dict(needs)
        self.started: dict[Backend, DaskBackend] = {}
        #: Told the line to show when ``stop_run`` waits for calls that run on.
        self.waiting: Callable[[str], None] = _silent
        #: The calls ``stop_run`` found still running after its wait: "ID on WORKER" each.
        self.calls_left: list[str] = []

    def __repr__(self) -> str:
        return f"<RunBackends {len(self.started)}/{len(self.needs)} started>"

    async def start(self) -> list[str]:
        """Start or connect to every cluster and check it; the warnings to show.

        Raises:
            BackendError: ``distributed`` is missing, a scheduler cannot be reached, or a
                cluster cannot run the plan (every cluster started is closed again).
        """
        warnings: list[str] = []
        try:
            for backend, need in self.needs.items():
                said = await self._start(backend, need)
                warnings.extend(f"{backend}: {warning}" for warning in said)
        except BaseException:
            await self.aclose()
            raise
        return warnings

    async def _start(self, backend: Backend, need: ClusterNeed) -> list[str]:
        """Start or connect to ``backend``'s cluster and check it; its warnings.

        Raises:
            BackendError: as ``start``; whatever else Dask raises for a cluster it cannot use
                (no scheduler at the address, a worker without subplans) in one line too.
        """
        from subplans.cluster import DaskBackend

        try:
            started = await DaskBackend.start(backend.scheduler, threads=need.threads)
            self.started[backend] = started
            folders = sorted(str(folder) for folder in need.folders)
            return await started.check(max_parallel=need.threads, folders=folders)
        except BackendError:
            raise
        except Exception as error:
            raise BackendError(unusable(backend, error)) from error

    async def start_unless(self, stopped: Callable[[], object]) -> list[str] | None:
        """``start()``, cancelled (None, nothing left started) once ``stopped()`` is true: it
        is asked every ``_POLL`` seconds (a signal noted meanwhile)."""
        start = asyncio.ensure_future(self.start())
        while not stopped():
            done, _ = await asyncio.wait({start}, timeout=_POLL)
            if done:
                return start.result()
        # start() closes what it started; a local cluster cancelled while it starts logs
        # Dask's own tracebacks of it, which the command's one line already says.
        with quiet_dask_logs():
            start.cancel()
            await asyncio.wait({start})
        return None

    async def stop_run(self, run_id: str) -> int:
        """Stop what ``run_id`` left running on the clusters' workers; how many processes.
        A ``call`` function that runs on (a thread, which nothing stops) is waited for, up
        to ``CALLS_WAIT`` seconds (``waiting`` told so); those still running then are left in
        ``calls_left``."""
        stopped = 0
        for backend in self.started.values():
            stopped += await backend.stop_run(run_id)
        self.calls_left = await self._calls(run_id)
        if self.calls_left:
            self.waiting(
                f"waiting up to {CALLS_WAIT:g}s for {_calls(self.calls_left)} of run "
                f"{run_id} still running on the Dask cluster to end"
            )
            deadline = asyncio.get_running_loop().time() + CALLS_WAIT
            while self.calls_left and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(_CALLS_POLL)
                self.calls_left = await self._calls(run_id)
        return stopped

    async def _calls(self, run_id: str) -> list[str]:
        return [
            f"{label} on {worker}"
            for backend in self.started.values()
            for worker, labels in (await backend.running_calls(run_id)).items()
            for label in labels
        ]

    async def aclose(self) -> None:
        """Close every cluster started (a local one stops); one that fails to close is left.
        Dask's own logs are quiet meanwhile: a client whose scheduler was lost logs the
        traceback of its cancelled reconnection as it closes, which the command's one-line
        error already said."""
        started, self.started = self.started, {}
        with quiet_dask_logs():
            for backend in started.values():
                with contextlib.suppress(Exception):
                    await backend.aclose()


def _silent(line: str) -> None:
    """Says nothing (``RunBackends.waiting`` of a caller that shows no lines)."""


def _calls(left: list[str]) -> str:
    return "1 call" if len(left) == 1 else f"{len(left)} calls"


@contextlib.contextmanager
def quiet_dask_logs() -> Iterator[None]:
    """Nothing of ``distributed``'s loggers is shown meanwhile (their levels restored after)."""
    manager = logging.Logger.manager
    loggers = [logging.getLogger("distributed")] + [
        found
        for name, found in list(manager.loggerDict.items())
        if name.startswith("distributed.") and isinstance(found, logging.Logger)
    ]
    levels = [(found, found.level) for found in loggers]
    for found in loggers:
        found.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for found, level in levels:
            found.setLevel(level)


def stop_on_cluster(run: RunInfo) -> str | None:
    """Stop what the interrupted ``run`` left on the workers of the Dask cluster whose address
    it recorded (``cancel``); the line to say, or None when it recorded no address (a local
    cluster ends with the driver that started it) or the cluster cannot be reached."""
    from subplans.plans.backends import Backend

    recorded = (run.profile.get("values") or {}).get("backend", "local")
    try:
        backend = Backend.from_value(recorded)
    except ValueError:  # pragma: no cover - the store holds what a run wrote
        return None
    if backend.kind != "dask" or backend.scheduler is None:
        return None
    address = backend.scheduler

    async def stop() -> int:
        from subplans.cluster import DaskBackend

        async with await DaskBackend.start(address, threads=1) as cluster:
            return await cluster.stop_run(run.id)

    try:
        with quiet_dask_logs():
            stopped = asyncio.run(stop())
    except BackendError as error:
        return f"run {run.id}: {error}; `subplans resume {run.id}` stops what it left there"
    return stopped_on_cluster(run.id, stopped, address)


def stopped_on_cluster(run_id: str, stopped: int, address: str | None = None) -> str:
    """One line: how many processes ``run_id`` had left on a Dask cluster's workers were
    stopped (``resume``, ``cancel``)."""
    at = "" if address is None else f" at {address}"
    return (
        f"stopped {stopped} process{'' if stopped == 1 else 'es'} that run {run_id} had left "
        f"running on the Dask cluster{at}"
    )
