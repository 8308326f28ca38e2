"""A running subplan's slot, and its attempts: each under its timeout, retried with backoff."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from subplans.engine.bus import EventBus
from subplans.engine.events import SubplanRetrying
from subplans.engine.states import SubplanExecutionState

if TYPE_CHECKING:
    from contextvars import Context

    from subplans.engine.lending import Holder
    from subplans.engine.subplan import Subplan

__all__ = ["MAX_RETRY_DELAY", "Owner", "Slot", "run_attempts"]

#: Retry backoff never waits longer than this.
MAX_RETRY_DELAY = 30.0

_COMPLETED = SubplanExecutionState.COMPLETED


class Slot:
    """One of a dispatch's ``max_parallel`` places, reused from subplan to subplan: the state of
    the subplan that holds it, so that none is kept per subplan but its entry."""

    __slots__ = ("attempts", "clean", "follow", "holder", "index", "started", "task")

    def __init__(self) -> None:
        #: The subplan's position in the input.
        self.index = -1
        #: When its first attempt started (``clock.now()``).
        self.started = 0.0
        self.attempts = 0
        #: Its task; None while the slot is free.
        self.task: asyncio.Task[None] | None = None
        #: Its claim on a slot of the shared budget, when it takes one.
        self.holder: Holder | None = None
        #: The next subplan, left to the task of the one that just ended in this slot, which
        #: runs it or makes it a task (``Running._execute``).
        self.follow: Subplan | None = None
        #: What its task looked like when it was made, to which it must come back to run
        #: another subplan: (references to the task, weak references to it, its name,
        #: references to its coroutine, to its frame, weak references to its coroutine, its
        #: context, references to it): see ``Running._spawn``.
        self.clean: tuple[int, int, str, int, int, int, Context | None, int] = (
            0,
            0,
            "",
            0,
            0,
            0,
            None,
            0,
        )


class Owner(Protocol):
    """What the attempts need of their dispatch."""

    bus: EventBus | None
    now: Callable[[], float]
    stop_reason: str | None

    def fail(self, slot: Slot, error: BaseException) -> None: ...

    def finish(self, slot: Slot, state: SubplanExecutionState, value: Any = None) -> bool: ...

    async def pace_retry(self, subplan: Subplan) -> None: ...


async def run_attempts(owner: Owner, slot: Slot, subplan: Subplan) -> None:
    """Run ``subplan`` until an attempt succeeds, its retries are spent or the dispatch stops;
    record its end with ``owner``."""
    timeout, delay = subplan.timeout, subplan.retry_delay
    while True:
        try:
            if timeout is None:
                value = await subplan.run()
            else:
                deadline = asyncio.get_running_loop().time() + timeout
                timer = asyncio.timeout_at(deadline)
                try:
                    async with timer:
                        value = await subplan.run()
                except asyncio.CancelledError:
                    if timer.expired():
                        # Its timeout came first; a stop cancelled it again while it was
                        # ending, and asyncio then leaves the cancellation as it is.
                        owner.fail(slot, TimeoutError(f"timed out after {timeout:g}s"))
                    raise
                _check_kept(timer, timeout, deadline)
        except Exception as error:
            attempt = slot.attempts
            if timeout is not None and isinstance(error, TimeoutError) and not error.args:
                error = TimeoutError(f"timed out after {timeout:g}s")
            # An abandoned attempt may still be running: never start another beside it.
            abandoned = getattr(error, "abandoned", False)
            if attempt > subplan.retries or owner.stop_reason is not None or abandoned:
                owner.fail(slot, error)
                return
            if owner.bus is not None:
                retrying = SubplanRetrying(subplan.id, attempt, error, delay, time=owner.now())
                owner.bus.publish(retrying)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)
            await owner.pace_retry(subplan)  # a retry is a start: the rates space it too
            slot.attempts = attempt + 1
        else:
            owner.finish(slot, _COMPLETED, value)
            return


def _check_kept(timer: asyncio.Timeout, timeout: float, deadline: float) -> None:
    """Raise TimeoutError if the attempt swallowed its timeout's cancellation and returned."""
    # A function of its own: on 3.11 coverage loses the lines of a frame resumed by a cancel
    # until its next await (python/cpython#106749).
    if timer.expired():
        over = asyncio.get_running_loop().time() - deadline
        raise TimeoutError(f"ignored its timeout of {timeout:g}s and ran {over:.1f}s over")
