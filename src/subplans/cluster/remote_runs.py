"""One attempt handed to the cluster and followed to its end, on the driver: its start, its
outcome, a lost worker, and the cancel channel that really stops it.

An attempt is a Dask task of its own (``worker_tasks``), under a fresh token. The worker
announces the command's start on a topic (``STARTED_TOPIC``); the driver hears it here and
calls ``on_start`` with the pid and the worker's address (at the latest with the outcome). A
cancellation (fail-fast, a timeout, Ctrl-C, ``cancel``) stops the attempt through
``client.run(stop_attempt)`` on its worker (on every worker while nobody knows which), which
returns once the attempt's processes are gone: Dask's own cancel leaves a running task be. A
worker that does not answer within ``cancel_grace`` (and a margin) leaves the attempt
abandoned, as a local thread that will not stop. A lost worker is a ``WorkerLostError``.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import subplans.cluster.worker_tasks as worker_tasks
from subplans.cluster.handover import STARTED_TOPIC, LogMarker, Outcome
from subplans.engine.cancelling import through_cancel
from subplans.engine.errors import SubplanCancelledError, WorkerLostError

# distributed's types are loose and partly untyped: its objects are ``Any`` here.

__all__ = ["STOP_MARGIN", "RemoteAttempts"]

#: Seconds beyond ``cancel_grace`` a worker gets to report its stopped attempt.
STOP_MARGIN = 0.5
#: The file next to the logs whose nonce tells a worker it sees the driver's file system.
MARKER_NAME = ".subplans-driver"


@dataclass(slots=True)
class _Followed:
    """An attempt in flight: where it runs, once known, and who wants to hear of its start."""

    on_start: Callable[[int, str], None] | None
    worker: str | None = None
    pid: int | None = None

    def started(self, pid: int, worker: str) -> None:
        if self.pid is None:
            self.pid, self.worker = pid, worker
            if self.on_start is not None:
                self.on_start(pid, worker)


@dataclass(slots=True)
class RemoteAttempts:
    """The attempts a driver has on one cluster, and how their logs come back."""

    client: Any
    #: True: the workers see the logs folder (write it directly); False: always ship the
    #: output back; None: find out, once per folder (``marker``).
    shared_logs: bool | None = None
    followed: dict[str, _Followed] = field(default_factory=dict)
    handed_over: int = 0
    lost: int = 0
    stopped: int = 0
    abandoned: int = 0
    _subscribed: bool = False
    _folders: dict[Path, asyncio.Task[LogMarker | None]] = field(default_factory=dict)

    async def marker(self, log_file: Path) -> LogMarker | None:
        """The marker to send with an attempt writing ``log_file``: None when its output is
        shipped back (the workers do not all see the folder)."""
        if self.shared_logs is False:
            return None
        folder = log_file.parent
        finding = self._folders.get(folder)
        if finding is None:
            finding = self._folders[folder] = asyncio.ensure_future(self._probe(folder))
        return await asyncio.shield(finding)

    async def _probe(self, folder: Path) -> LogMarker | None:
        marker = _write_marker(folder)
        if self.shared_logs:
            return marker
        seen: dict[str, bool] = await self.client.run(worker_tasks.sees_marker, marker)
        return marker if seen and all(seen.values()) else None

    async def run(
        self,
        task: Callable[..., Any],
        *args: Any,
        label: str,
        cancel_grace: float,
        on_start: Callable[[int, str], None] | None = None,
        log_file: Path | None = None,
    ) -> Outcome:
        """Hand ``task(token, *args)`` to the cluster and follow it; its outcome, with any
        shipped output appended to ``log_file`` already.

        Raises:
            WorkerLostError: its worker was lost (or it was run again after that, and refused).
            asyncio.CancelledError: cancelled; the attempt was stopped on its worker first.
            SubplanCancelledError: cancelled, and its worker did not answer within the grace
                (``abandoned``), or a function's thread ran on (``ThreadAbandonedError``).
        """
        if not self._subscribed:
            _listen(self.client, self.followed)
            self._subscribed = True
        token = secrets.token_hex(12)
        followed = self.followed[token] = _Followed(on_start)
        try:
            future = self.client.submit(task, token, *args, key=f"subplans {label} {token}")
            self.handed_over += 1
            try:
                outcome = await self._outcome(token, future, followed, cancel_grace, label)
            except asyncio.CancelledError as cancel:
                stopped = await self._stop(token, future, followed, cancel_grace, label)
                if stopped is not None:
                    _ship(stopped, log_file)
                    if stopped.error is not None:  # a function's thread ran on past the grace
                        raise stopped.error from None
                raise cancel from None
        finally:
            del self.followed[token]
        _ship(outcome, log_file)
        if outcome.kind == "refused":
            raise self._lost(followed, label, "it was run again after that, and refused")
        return outcome

    async def _outcome(
        self, token: str, future: Any, followed: _Followed, grace: float, label: str
    ) -> Outcome:
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker

        try:
            outcome: Outcome = await future
        except KilledWorker as error:
            raise self._lost(followed, label, "the worker died") from error
        except FutureCancelledError as error:  # not asyncio's: a Dask client or scheduler did
            # Dask leaves a cancelled task running: stopped through our channel all the same.
            await self._stop(token, future, followed, grace, label)
            raise self._lost(followed, label, "the cluster cancelled its task") from error
        except (OSError, TimeoutError) as error:  # pragma: no cover - the scheduler went away
            raise self._lost(followed, label, str(error)) from error
        if outcome.pid is not None:
            followed.started(outcome.pid, outcome.worker)  # before its end, if not heard yet
        return outcome

    def _lost(self, followed: _Followed, label: str, why: str) -> WorkerLostError:
        self.lost += 1
        where = f"worker {followed.worker}" if followed.worker else "its worker"
        message = f"{where} was lost while running {label}: {why}"
        return WorkerLostError(message, worker=followed.worker)

    async def _stop(
        self, token: str, future: Any, followed: _Followed, grace: float, label: str
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
        self, token: str, future: Any, followed: _Followed, grace: float
    ) -> Outcome | None:
        async with asyncio.timeout(grace + STOP_MARGIN):
            workers = None if followed.worker is None else [followed.worker]
            try:
                answers: dict[str, Any] = await self.client.run(
                    worker_tasks.stop_attempt, token, workers=workers, on_error="return"
                )
            except (OSError, KeyError, ValueError):  # pragma: no cover - its worker is gone
                answers = {}
            if followed.worker is None and not any(value is True for value in answers.values()):
                # Nowhere running: every worker refuses it from now on; the queue forgets it.
                await self.client.cancel([future])
                return None
            try:
                outcome: Outcome = await future
            except Exception:  # lost meanwhile: its watchdog stops its commands
                return None
            return outcome


#: The attempts in flight of every backend on each client: a client keeps one handler a topic.
_LISTENERS: weakref.WeakKeyDictionary[Any, list[dict[str, _Followed]]] = weakref.WeakKeyDictionary()


def _listen(client: Any, followed: dict[str, _Followed]) -> None:
    """Hear of the starts of ``followed``'s attempts, beside other backends on ``client``."""
    listeners = _LISTENERS.get(client)
    if listeners is None:
        listeners = _LISTENERS[client] = []
        client.subscribe_topic(STARTED_TOPIC, functools.partial(_heard, listeners))
    listeners.append(followed)


def _heard(listeners: list[dict[str, _Followed]], event: tuple[float, dict[str, Any]]) -> None:
    message = event[1]
    for followed in listeners:
        found = followed.get(message["token"])
        if found is not None:
            found.started(message["pid"], message["worker"])
            return


def _write_marker(folder: Path) -> LogMarker:
    """Write a fresh nonce to the marker file in ``folder``."""
    marker = LogMarker(str(folder / MARKER_NAME), secrets.token_hex(16))
    folder.mkdir(parents=True, exist_ok=True)
    Path(marker.path).write_text(marker.nonce, encoding="utf-8")
    return marker


def _ship(outcome: Outcome, log_file: Path | None) -> None:
    """Append the output a worker shipped back to the driver's log file."""
    if outcome.log and log_file is not None:
        with log_file.open("ab") as log:
            log.write(outcome.log)
