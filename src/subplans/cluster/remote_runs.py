"""One attempt handed to the cluster and followed to its end, on the driver: its start, its
outcome, a lost worker or scheduler, and the cancel channel that really stops it.

An attempt is a Dask task of its own (``worker_tasks``), under a fresh token. The worker
announces the command's start on a topic (``hearing``); the driver calls ``on_start`` with the
pid and the worker's address (at the latest with the outcome). A cancellation (fail-fast, a
timeout, Ctrl-C, ``cancel``) stops the attempt through ``client.run(stop_attempt)`` on its
worker, which returns once the attempt's processes are gone: Dask's own cancel leaves a running
task be. An attempt still queued (no worker known) is taken out of Dask's queue, and stopped
where the scheduler placed it if it did. A worker that does not answer within ``cancel_grace``
(and a margin) leaves the attempt abandoned, as a local thread that will not stop.

A worker the scheduler removes fails the attempts that ran there with a ``WorkerLostError``, but
only once their processes are surely gone: its watchdog stops them when the worker dies (TERM,
each command's own grace, KILL), so the error comes the attempt's ``cancel_grace`` and a margin
after the loss was noticed. So a retry never runs beside its lost attempt.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import subplans.cluster.worker_tasks as worker_tasks
from subplans.cluster.claims import ClaimBook
from subplans.cluster.handover import LogMarker, Outcome
from subplans.cluster.hearing import CLOSING, Followed, Hearing, hearing
from subplans.cluster.log_shipping import ship, write_marker
from subplans.engine.cancelling import through_cancel
from subplans.engine.errors import BackendError, SubplanCancelledError, WorkerLostError

# distributed's types are loose and partly untyped: its objects are ``Any`` here.

__all__ = ["STOP_MARGIN", "WATCHDOG_MARGIN", "RemoteAttempts"]

#: Seconds beyond ``cancel_grace`` a worker gets to report its stopped attempt.
STOP_MARGIN = 0.5
#: Seconds beyond the grace a dead worker's watchdog gets to have stopped its processes.
WATCHDOG_MARGIN = 1.0


class _Lost(Exception):
    """Internal: the attempt's worker (or the scheduler) was lost; ``why`` says how."""

    def __init__(self, why: str, worker: str | None = None, *, wait: bool = True) -> None:
        super().__init__(why)
        self.why, self.worker, self.wait = why, worker, wait


@dataclass(slots=True)
class RemoteAttempts:
    """The attempts a driver has on one cluster, and how their logs come back."""

    client: Any
    #: True: the workers see the logs folder (write it directly); False: always ship the
    #: output back; None: find out, once per folder (``marker``).
    shared_logs: bool | None = None
    claims: ClaimBook = field(default_factory=lambda: ClaimBook(True))
    followed: dict[str, Followed] = field(default_factory=dict)
    handed_over: int = 0
    lost: int = 0
    stopped: int = 0
    abandoned: int = 0
    closed: bool = False
    _hearing: Hearing | None = None
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _folders: dict[Path, asyncio.Task[LogMarker | None]] = field(default_factory=dict)

    @property
    def scheduler(self) -> str:
        try:
            return str(self.client.scheduler.address)
        except AttributeError:  # pragma: no cover - a client closed under us
            return "(closed)"

    async def marker(self, log_file: Path) -> LogMarker | None:
        """The marker to send with an attempt writing ``log_file``: None when its output is
        shipped back (the workers do not all see the folder)."""
        if self.shared_logs is False:
            return None
        folder = log_file.parent
        finding = self._folders.get(folder)
        if finding is None:
            finding = self._folders[folder] = asyncio.ensure_future(self._probe(folder))
        elif finding.done():  # found out already: no shield, no wait (the hot path)
            return finding.result()
        return await asyncio.shield(finding)

    async def _probe(self, folder: Path) -> LogMarker | None:
        marker = write_marker(folder)
        if self.shared_logs:
            return marker
        seen: dict[str, bool] = await self.client.run(worker_tasks.sees_marker, marker)
        return marker if seen and all(seen.values()) else None

    def usable(self, label: str) -> None:
        """Raise unless attempts can be handed over now.

        Raises:
            BackendError: the backend was closed.
            WorkerLostError: the scheduler is gone (counted by ``retries``, failing at once).
        """
        if self.closed:
            raise BackendError(
                f"the backend of the Dask scheduler {self.scheduler} is closed: cannot run {label}"
            )
        if self.client.status != "running":
            raise WorkerLostError(
                f"the Dask scheduler {self.scheduler} is not reachable: cannot run {label}"
            )

    async def run(
        self,
        task: Callable[..., Any],
        *args: Any,
        label: str,
        cancel_grace: float,
        on_start: Callable[[int, str], None] | None = None,
        log_file: Path | None = None,
    ) -> Outcome:
        """Hand ``task(token, *args, claim=...)`` to the cluster and follow it; its outcome, with
        any shipped output appended to ``log_file`` already.

        Raises:
            WorkerLostError: its worker (or the scheduler) was lost.
            BackendError: the backend was closed meanwhile (the attempt stopped first).
            asyncio.CancelledError: cancelled; the attempt was stopped on its worker first.
            SubplanCancelledError: cancelled, and its worker did not answer within the grace
                (``abandoned``), or a function's thread ran on (``ThreadAbandonedError``).
        """
        self.usable(label)
        if self._hearing is None:
            self._hearing = hearing(self.client, self.followed)
            # The workers there are now (those that join later: as their starts are heard).
            identity = await self.client.scheduler.identity()
            self._hearing.hear(identity.get("workers", {}))
        token = secrets.token_hex(12)
        claim = await self.claims.path(self.client, token) if self.claims.enabled else None
        if self.closed:  # pragma: no cover - closed while it looked for its claim: a race
            self.usable(label)
        key = f"subplans {label} {token}"
        alarm = asyncio.get_running_loop().create_future()
        followed = self.followed[token] = Followed(key, on_start, claim, alarm)
        self._idle.clear()
        try:
            future = self.client.submit(task, token, *args, key=key, claim=claim or False)
            self.handed_over += 1
            try:
                outcome = await self._outcome(
                    token, future, followed, cancel_grace, label, log_file
                )
            except asyncio.CancelledError as cancel:
                stopped = await self._stop(token, future, followed, cancel_grace, label)
                if stopped is not None:
                    await ship(self.client, token, stopped, log_file)
                    if stopped.error is not None:  # a function's thread ran on past the grace
                        raise stopped.error from None
                raise cancel from None
            except _Lost as lost:
                raise await self._lost(followed, future, label, lost, cancel_grace) from None
        finally:
            del self.followed[token]
            self.claims.ended(claim)
            if not self.followed:
                self._idle.set()
        await ship(self.client, token, outcome, log_file)
        if outcome.kind == "refused":
            why = _Lost("it was run again after that, and refused")
            raise await self._lost(followed, None, label, why, cancel_grace)
        return outcome

    async def _outcome(
        self,
        token: str,
        future: Any,
        followed: Followed,
        grace: float,
        label: str,
        log_file: Path | None,
    ) -> Outcome:
        """The attempt's outcome, or ``_Lost`` as soon as the scheduler drops its worker."""
        waiter = asyncio.ensure_future(self._result(token, future, followed, grace, label))
        try:
            while True:
                either: list[asyncio.Future[Any]] = [waiter, followed.alarm]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if waiter.done():
                    break
                worker = followed.alarm.result()
                if worker == CLOSING:
                    stopped = await self._stop(token, future, followed, grace, label)
                    self.stopped -= 1  # counted below as what it is: the backend closed
                    if stopped is not None:  # pragma: no branch - a queued one ships nothing
                        await ship(self.client, token, stopped, log_file)
                    raise BackendError(f"the backend was closed while running {label}; stopped")
                if await self._ran_on(followed, worker):
                    raise _Lost("the scheduler lost it", worker)
                followed.alarm = asyncio.get_running_loop().create_future()  # it runs on
        finally:
            waiter.cancel()
        outcome = waiter.result()
        if outcome.pid is not None:
            followed.started(outcome.pid, outcome.worker)  # before its end, if not heard yet
        return outcome

    async def _result(
        self, token: str, future: Any, followed: Followed, grace: float, label: str
    ) -> Outcome:
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker

        try:
            outcome: Outcome = await future
        except KilledWorker as error:
            raise _Lost("the scheduler lost it") from error
        except FutureCancelledError as error:  # not asyncio's: a Dask client or scheduler did
            if self.client.status != "running":
                raise self._scheduler_lost() from error
            # Dask leaves a cancelled task running: stopped through our channel all the same.
            await self._stop(token, future, followed, grace, label)
            raise _Lost("the cluster cancelled its task", wait=False) from error
        except Exception as error:  # Dask's own trouble: never a raw distributed error
            if self.client.status != "running":  # pragma: no cover - lost mid-gather
                raise self._scheduler_lost() from error
            raise _Lost(f"the cluster failed its task: {error}") from error
        return outcome

    def _scheduler_lost(self) -> _Lost:
        return _Lost(f"the Dask scheduler {self.scheduler} was lost", wait=False)

    async def _ran_on(self, followed: Followed, worker: str) -> bool:
        """Whether the attempt ran on ``worker``, which the scheduler removed: its start was
        heard there, or its claim names it (without claims: Dask fails its task anyway)."""
        if followed.worker is not None or followed.claim is None:
            return followed.worker in (None, worker)
        claimed = await self.client.scheduler.get_metadata(keys=list(followed.claim), default=None)
        return bool(claimed == worker)

    async def _lost(
        self, followed: Followed, future: Any, label: str, lost: _Lost, grace: float
    ) -> WorkerLostError:
        """The error of a lost attempt, once its processes are surely gone: the dead worker's
        watchdog stops them as the worker dies (TERM, the attempt's ``grace``, KILL)."""
        self.lost += 1
        worker = lost.worker or followed.worker
        if future is not None and self.client.status == "running":
            await self.client.cancel([future])  # a re-run elsewhere would only refuse
        if lost.wait:
            await asyncio.sleep(grace + WATCHDOG_MARGIN)
        if lost.why.startswith("the Dask scheduler"):
            return WorkerLostError(f"{lost.why} while running {label}", worker=worker)
        where = f"worker {worker}" if worker else "its worker"
        return WorkerLostError(f"{where} was lost while running {label}: {lost.why}", worker=worker)

    async def _stop(
        self, token: str, future: Any, followed: Followed, grace: float, label: str
    ) -> Outcome | None:
        """Stop the attempt on its worker, whatever cancellations come meanwhile; its outcome,
        or None if it never started (or its worker is gone, the watchdog's to clean up)."""
        stopping = asyncio.ensure_future(self._stopped(token, future, followed, grace))
        while not stopping.done():
            await through_cancel(asyncio.wait([stopping]))
        self.stopped += 1
        try:
            return stopping.result()
        except TimeoutError:
            self.abandoned += 1
            where = f"worker {followed.worker}" if followed.worker else "the cluster"
            raise SubplanCancelledError(
                f"{label}: {where} did not confirm within {grace:g}s of its cancellation that "
                "it stopped; abandoned",
                abandoned=True,
            ) from None

    async def _stopped(
        self, token: str, future: Any, followed: Followed, grace: float
    ) -> Outcome | None:
        if self.client.status != "running":  # pragma: no cover - cancelled as it was lost
            return None  # the scheduler is gone: its workers stop their tasks as they close
        async with asyncio.timeout(grace + STOP_MARGIN):
            started = followed.worker is not None
            worker = followed.worker or await self._placed(token, future, followed)
            if worker is None:
                return None  # taken out of Dask's queue: it never ran
            if followed.alarm.done() and followed.alarm.result() == worker:
                # Its worker was removed as it was cancelled: nobody there answers, its
                # watchdog stops its processes. Cancelled at once, never abandoned.
                return None
            try:
                answers: dict[str, Any] = await self.client.run(
                    worker_tasks.stop_attempt, token, workers=[worker], on_error="return"
                )
            except (OSError, KeyError, ValueError):  # pragma: no cover - its worker is gone
                return None
            if not started and answers.get(worker) is not True:  # pragma: no cover - a race
                # Placed there but not running: it refuses to start now; Dask forgets it.
                await self.client.cancel([future])
                return None
            try:
                outcome: Outcome = await future
            except Exception:  # lost meanwhile: its watchdog stops its commands
                return None
            return outcome

    async def _placed(self, token: str, future: Any, followed: Followed) -> str | None:
        """The worker the scheduler placed a queued attempt on, or None: then it is taken out
        of the queue (and stopped should its start still be heard). Never waits on a worker."""
        if followed.claim is not None:
            keys = list(followed.claim)
            claimed = await self.client.scheduler.get_metadata(keys=keys, default=None)
            if claimed is not None:  # it started there (its start not heard yet)
                return str(claimed)
            # A start from now on refuses: stopped before it ran.
            await self.client.scheduler.set_metadata(keys=keys, value="stopped")
        processing: dict[str, list[Any]] = await self.client.scheduler.processing()
        placed = [address for address, keys in processing.items() if followed.key in keys]
        if followed.worker is not None:  # pragma: no cover - its start was heard meanwhile
            return followed.worker
        # Not started (no start heard, no claim): its worker is told, and the scheduler takes
        # it back, without waiting on that worker, which may be frozen; a start heard still
        # is stopped at once.
        for worker in placed:
            self._stop_late(token, worker)
        assert self._hearing is not None
        self._hearing.stop_if_started(token, lambda worker: self._stop_late(token, worker))
        await self.client.cancel([future])
        return None

    def _stop_late(self, token: str, worker: str) -> None:
        """Stop ``token`` on ``worker``, whose start was heard after it was taken out of the
        queue (the scheduler had just placed it)."""
        stopping = self.client.run(
            worker_tasks.stop_attempt, token, workers=[worker], on_error="return"
        )
        asyncio.ensure_future(stopping).add_done_callback(lambda done: done.exception())

    async def close(self) -> None:
        """Stop every attempt in flight through the cancel channel (each then fails with a
        ``BackendError``) and wait for their ends; then drop this backend's claims."""
        self.closed = True
        for followed in list(self.followed.values()):
            followed.alert(CLOSING)
        if self.followed:
            await self._idle.wait()
        if self._hearing is not None:  # a client a caller keeps hears no more for this one
            self._hearing.listeners.remove(self.followed)
        if self.client.status == "running":
            await self.claims.close(self.client)
