"""Stopping a dispatch: nothing more starts, every running subplan is cancelled and waited
for up to ``cancel_grace`` (however often the caller is cancelled meanwhile), a straggler is
abandoned, and what never started fails.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from subplans.engine.cancelling import through_cancel
from subplans.engine.errors import SubplanCancelledError
from subplans.engine.results import SubplanResult
from subplans.engine.states import SubplanExecutionState
from subplans.engine.tracker import announce

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from contextvars import Context

    from subplans.engine.attempts import Slot
    from subplans.engine.bus import EventBus
    from subplans.engine.config import ParallelExecutionConfig

__all__ = ["Draining"]

logger = logging.getLogger("subplans")

_PENDING = SubplanExecutionState.PENDING
_FAILED = SubplanExecutionState.FAILED


class Draining:
    """The part of a dispatch that stops and drains it (a mixin of ``Dispatch``)."""

    config: ParallelExecutionConfig
    name: str | None
    loop: asyncio.AbstractEventLoop
    entries: Any
    total: int
    next: int
    slots: list[Slot]
    feeder: asyncio.Task[None] | None
    context: Context
    source: Iterator[Any] | AsyncIterator[Any] | None
    unread: Iterator[Any] | AsyncIterator[Any] | None
    stop_reason: str | None
    interrupt: KeyboardInterrupt | None
    input_error: BaseException | None
    first_failure: int | None
    bus: EventBus | None
    now: Callable[[], float]
    failed: int
    never_started: int

    if TYPE_CHECKING:

        def wake(self) -> None: ...
        def release(self, slot: Slot, ending: asyncio.Task[None] | None = None) -> None: ...
        def finish(
            self,
            slot: Slot,
            state: SubplanExecutionState,
            value: Any = None,
            error: BaseException | None = None,
        ) -> bool: ...
        def outcome(self, results: list[SubplanResult], total: int) -> None: ...

    def stop(self, reason: str) -> None:
        """Start nothing new and cancel every running subplan."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        logger.info("stopping dispatch%s: %s", f" {self.name}" if self.name else "", reason)
        self.wake()
        if self.feeder is not None:
            self.feeder.cancel()
        for slot in self._unfinished():
            # Not one that is recording its own end (the failure that stops the rest); the
            # current task otherwise: a subscriber may interrupt while a subplan publishes.
            slot.task.cancel(reason)  # type: ignore[union-attr]

    def raise_first(self, cancel: asyncio.CancelledError | None) -> None:
        """Raise what ended the dispatch before its subplans could: an interrupt, a
        cancellation of the caller, the input's error."""
        if self.interrupt is not None:
            raise self.interrupt
        if cancel is not None:
            raise cancel
        if self.input_error is not None:
            raise self.input_error

    def conclude(self, cancel: asyncio.CancelledError | None) -> list[SubplanResult]:
        """The ended dispatch's results; raises as ``raise_first`` does, then as ``outcome``
        does for a dispatch with failures (a run's end and a group's)."""
        self.raise_first(cancel)
        results: list[SubplanResult] = self.entries
        if self.failed:
            self.outcome(results, len(results))
        return results

    def first_result(self) -> SubplanResult | None:
        index = self.first_failure
        return None if index is None else self.entries[index]

    def cancelled(self, cancelled: asyncio.CancelledError) -> asyncio.CancelledError:
        """Stop as rule 6 says; the canceller's message ("interrupted by SIGINT") says why."""
        reason = cancelled.args[0] if cancelled.args and cancelled.args[0] else None
        self.stop(str(reason) if reason else "the dispatch was cancelled")
        return cancelled

    def _interrupted(self, error: KeyboardInterrupt) -> None:
        """Stop as a cancelled caller would; the dispatch raises ``error`` at the end."""
        if self.interrupt is None:
            self.interrupt = error
        self.stop("interrupted by KeyboardInterrupt")

    async def drain(self) -> asyncio.CancelledError | None:
        """Wait for the cancelled subplans, up to ``cancel_grace``; report the stragglers.

        A cancellation of the caller meanwhile is returned, not raised: it cannot cut the
        bookkeeping short (and the subplans were cancelled already).
        """
        cancel: asyncio.CancelledError | None = None
        loop = self.loop
        grace = self.config.cancel_grace
        deadline = loop.time() + grace
        # The feeder (an input's pull, a wait for the budget) is bounded as the subplans are:
        # an input that rides out its cancellation cannot hang the dispatch.
        while (tasks := self._tasks()) and (left := deadline - loop.time()) > 0:
            cancel = await through_cancel(asyncio.wait(tasks, timeout=left)) or cancel
            self._reap_unstarted()
        feeder = self.feeder
        if feeder is not None and not feeder.done():
            logger.error(
                "the input of dispatch%s ignored cancellation for %.1fs; abandoning it",
                f" {self.name}" if self.name else "",
                grace,
            )
        elif (source := self.source if self.source is not None else self.unread) is not None:
            cancel = await self._close_input(source) or cancel
        for slot in self._unfinished():
            subplan_id = self.entries[slot.index].id
            logger.error(
                "subplan %s ignored cancellation for %.1fs; abandoning it", subplan_id, grace
            )
            error = SubplanCancelledError(
                f"{self.stop_reason}; still running {grace:g}s after cancellation, abandoned",
                abandoned=True,
            )
            self.finish(slot, _FAILED, error=error)
        return cancel

    def _tasks(self) -> list[asyncio.Task[None]]:
        """What a drain waits for: the subplans' tasks and the feeder's."""
        tasks = [slot.task for slot in self.slots if slot.task is not None]
        feeder = self.feeder
        if feeder is not None and not feeder.done():
            tasks.append(feeder)
        return tasks

    async def _close_input(self, source: Any) -> asyncio.CancelledError | None:
        """Close a lazy input the dispatch stopped reading (its ``finally`` blocks run now,
        not when it is collected): ``close()``, or ``aclose()`` for up to ``cancel_grace``."""
        self.source = self.unread = None
        aclose = getattr(source, "aclose", None)
        if aclose is None:
            close = getattr(source, "close", None)
            try:
                if close is not None:
                    self.context.run(close)  # where it was pulled
            except Exception:
                logger.exception("closing the input of a stopped dispatch failed")
            return None
        loop, grace = self.loop, self.config.cancel_grace
        name = "subplans closing an input"
        closing = self.context.run(loop.create_task, aclose(), name=name)
        cancel: asyncio.CancelledError | None = None
        deadline = loop.time() + grace
        while not closing.done() and (left := deadline - loop.time()) > 0:
            cancel = await through_cancel(asyncio.wait([closing], timeout=left)) or cancel
        if not closing.done():
            logger.error("the input ignored its closing for %.1fs; abandoning it", grace)
            closing.cancel()
        elif not closing.cancelled() and closing.exception() is not None:
            error = closing.exception()
            logger.error("closing the input of a stopped dispatch failed: %r", error)
        return cancel

    def _reap_unstarted(self) -> None:
        """Settle subplan tasks that were cancelled before their first step.

        Such a task never ran ``_execute``, so neither its terminal state nor its slot were
        handled there.
        """
        for slot in self._busy():
            task = slot.task
            if task is not None and task.done():
                reason = self.stop_reason or "cancelled before it started"
                self.finish(slot, _FAILED, error=SubplanCancelledError(reason))
                self.release(slot)

    def _busy(self) -> list[Slot]:
        """The slots held by a subplan's task, in the order the subplans started."""
        return sorted((slot for slot in self.slots if slot.task is not None), key=_index)

    def _unfinished(self) -> list[Slot]:
        """The busy slots whose subplan has no terminal state yet."""
        entries = self.entries
        return [slot for slot in self._busy() if type(entries[slot.index]) is not SubplanResult]

    def record_unstarted(
        self, index: int, subplan_id: str, error: BaseException, *, counted: bool = True
    ) -> None:
        """Record a pending subplan as failed without starting (``counted`` as never started,
        unless ``next`` was moved past it)."""
        stamp = self.now()
        self.entries[index] = SubplanResult(subplan_id, _FAILED, None, error, None, stamp, 0)
        self.failed += 1
        if counted:
            self.never_started += 1
        announce(self.bus, subplan_id, _PENDING, _FAILED, 0, error, stamp)
        self.settled(index)

    def settled(self, index: int) -> None:
        """A subplan that never started got its result (a stream passes it on)."""

    def _fail_never_started(self) -> None:
        reason = self.stop_reason or "the dispatch ended before it started"
        entries = self.entries
        for index in range(self.next, self.total):
            subplan = entries[index]
            if type(subplan) is not SubplanResult:  # (a group's, submitted after the stop)
                self.record_unstarted(index, subplan.id, SubplanCancelledError(reason))


def _index(slot: Slot) -> int:
    return slot.index
