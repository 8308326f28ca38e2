"""Stopping processes: signal, wait, escalate, the one way, for every process of the package.

``Stopping`` sends SIGTERM to every process found, and SIGKILL to whatever is still found once
the grace is over, as often as needed until nothing is found. ``stop`` drives it blocking,
``stop_async`` in an event loop. What to stop comes from a ``find`` function: a command's
``Family`` (``process``), the processes a run's ``call`` functions started
(``stop_run_processes``), the leftovers of an interrupted run (``store.leftovers``, for
``resume`` and ``cancel``). Every signal goes to a process only while its pid still names the
process found (same start time), through a pidfd where the kernel has them: a reused pid never
receives it. Linux only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from signal import Signals
from typing import Any, NamedTuple

import subplans.engine  # noqa: F401 - the package's NullHandler, as for every logger of ours
from subplans.execution.finding import Family, run_marker
from subplans.execution.procfs import ProcessInfo, read_process, still_running

__all__ = [
    "SETTLE_TIMEOUT",
    "Signalled",
    "Stopping",
    "send_signal",
    "stop",
    "stop_async",
    "stop_run_processes",
]

logger = logging.getLogger("subplans")

#: How long to keep sending SIGKILL to processes that are still found, before giving up on them.
SETTLE_TIMEOUT = 5.0
#: The first wait between two looks; each wait doubles, up to ``_MAX_POLL``.
_FIRST_POLL = 0.01
_MAX_POLL = 0.1


class Signalled(NamedTuple):
    """A process that was sent a signal, and the last signal it got."""

    process: ProcessInfo
    signal: Signals


def send_signal(pid: int, start_time: int | None, sig: int) -> bool:
    """Send ``sig`` to ``pid`` if it is still the process that started at ``start_time``;
    False if it is gone (or we may not signal it).

    Through a pidfd, opened before the check: then the check and the signal cannot race a
    reuse of the pid. Where the kernel has no pidfds, a plain ``kill`` after the check.
    """
    try:
        fd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:  # no pidfds here (Linux before 5.3, a seccomp filter)
        fd = None
    try:
        now = read_process(pid)
        if now is None or now.start_time != start_time:
            return False
        if fd is None:
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(fd, sig)
    except (ProcessLookupError, PermissionError):
        return False  # gone meanwhile, or setuid: not ours to signal
    finally:
        if fd is not None:
            os.close(fd)
    return True


class Stopping:
    """Signal, wait, escalate: the one way processes are stopped.

    Each ``step`` looks for the processes again (``find``), and for those it signalled before.
    While the grace lasts, each one found gets SIGTERM once; once it is over (``grace`` seconds
    after the first step that found any, or ``hurry``), every one found gets SIGKILL, at every
    step, until none is found, or for at most ``settle_timeout`` seconds: then a warning names
    the survivors and it gives up. A command's ``Stopping`` exists while the command runs, so
    that a second Ctrl-C kills through it (``kill_now``), never by a bare process group id.
    ``clock`` reads monotonic seconds.
    """

    __slots__ = (
        "_deadline",
        "_delay",
        "_killing_since",
        "_kills",
        "clock",
        "find",
        "grace",
        "settle_timeout",
        "signalled",
    )

    def __init__(
        self,
        find: Callable[[], Mapping[int, ProcessInfo]],
        grace: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        settle_timeout: float = SETTLE_TIMEOUT,
    ) -> None:
        if not grace >= 0:
            raise ValueError(f"grace must be >= 0, got {grace!r}")
        if not settle_timeout >= 0:
            raise ValueError(f"settle_timeout must be >= 0, got {settle_timeout!r}")
        self.find, self.grace, self.clock, self.settle_timeout = find, grace, clock, settle_timeout
        #: Every process signalled, by pid, with the last signal it got.
        self.signalled: dict[int, Signalled] = {}
        self._deadline: float | None = None
        self._killing_since: float | None = None
        self._delay = _FIRST_POLL
        self._kills = 0

    def __repr__(self) -> str:
        phase = "grace" if self._killing_since is None else "killing"
        return f"<Stopping {len(self.signalled)} signalled, {phase}>"

    def hurry(self) -> None:
        """End the grace now: the next step sends SIGKILL."""
        self._deadline = -float("inf")

    def kill_now(self) -> int:
        """End the grace and send SIGKILL to every process found, at once; returns how many got
        it. Later steps go on waiting for them (and killing what appears meanwhile)."""
        self.hurry()
        before = self._kills
        self.step()
        return self._kills - before

    def step(self) -> float | None:
        """Signal what is due; how long to wait before the next step, or None: nothing is left."""
        found = dict(self.find())
        # Once signalled, a process is waited for until it is gone, even if ``find`` no longer
        # sees it (its parent died first, and it was found by descent; or a slow machine has
        # not yet run it to take the signal).
        for pid, earlier in self.signalled.items():
            if pid not in found and still_running(earlier.process):
                found[pid] = earlier.process
        if not found:
            return None
        now = self.clock()
        if self._deadline is None:
            self._deadline = now + self.grace
        if now < self._deadline:
            for process in found.values():
                if not self._got_term(process):
                    self._send(process, signal.SIGTERM)
            # Looked at again soon, then less and less often; and at the end of the grace.
            delay = min(self._delay, self._deadline - now)
            self._delay = min(self._delay * 2, _MAX_POLL)
            return delay
        if self._killing_since is None:
            self._killing_since, self._delay = now, _FIRST_POLL
        elif now - self._killing_since >= self.settle_timeout:
            logger.warning(
                "processes %s survived SIGKILL for %.1f s; giving up on them",
                sorted(found),
                self.settle_timeout,
            )
            return None
        for process in found.values():
            self._send(process, signal.SIGKILL)
        delay, self._delay = self._delay, min(self._delay * 2, _MAX_POLL)
        return delay

    def _got_term(self, process: ProcessInfo) -> bool:
        before = self.signalled.get(process.pid)
        return before is not None and before.process.start_time == process.start_time

    def _send(self, process: ProcessInfo, sig: signal.Signals) -> None:
        if send_signal(process.pid, process.start_time, sig):
            self.signalled[process.pid] = Signalled(process, sig)
            self._kills += sig == signal.SIGKILL


def stop(stopping: Stopping) -> Stopping:
    """Drive ``stopping`` until nothing is left, blocking; returns it (``signalled``)."""
    while (delay := stopping.step()) is not None:
        time.sleep(delay)
    return stopping


async def stop_async(
    stopping: Stopping,
    *,
    wake: Iterable[asyncio.Future[Any]] = (),
    hurried: asyncio.Event | None = None,
) -> asyncio.CancelledError | None:
    """Drive ``stopping`` until nothing is left, in the event loop.

    It looks again as soon as one of ``wake`` is done (a command's leader exiting). A
    cancellation meanwhile, or ``hurried`` being set (a second Ctrl-C), ends the grace, never
    the stopping: the cancellation is returned, for the caller to raise once all is gone.
    """
    cancel: asyncio.CancelledError | None = None
    waits = list(wake)
    hurry: asyncio.Future[Any] | None = None
    try:
        while True:
            if cancel is not None or (hurried is not None and hurried.is_set()):
                stopping.hurry()
            delay = stopping.step()
            if delay is None:
                return cancel
            if hurry is None and hurried is not None:
                # Only once there is something to wait for: most commands leave nothing.
                hurry = asyncio.ensure_future(hurried.wait())
                waits.append(hurry)
            pending = [waiting for waiting in waits if not waiting.done()]
            try:
                if pending:
                    await asyncio.wait(pending, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.sleep(delay)
            except asyncio.CancelledError as error:
                cancel = error
    finally:
        if hurry is not None:
            hurry.cancel()


def stop_run_processes(run_id: str, *, grace: float) -> int:
    """Stop every process that carries ``SUBPLANS_RUN_ID=run_id``, and their descendants:
    SIGTERM, then SIGKILL after ``grace`` seconds; returns how many were signalled.

    For what the run's ``call`` functions started (they inherit the run's id from its own
    environment, and share its process group or moved to another): at the run's end, every
    command's processes are gone already. Blocking; it never signals the calling process or its
    parents.
    """
    family = Family(marker=run_marker(run_id))
    return len(stop(Stopping(family.members, grace=grace)).signalled)
