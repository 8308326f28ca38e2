"""One run of the dispatcher: subplans started in slots, each to its end, stopped and drained.

Where the time of a subplan goes (``benchmarks/bench_dispatcher.py`` has the figures): a
finishing subplan starts the next one itself, from its own task, so no feeder task wakes per
subplan and nothing waits over every running task; a subplan's state lives in one of
``max_parallel`` reused slots and its entry in ``entries`` (the subplan, then its result), so
the heap grows by the results alone.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from subplans.engine.attempts import Slot, run_attempts
from subplans.engine.cancelling import through_cancel
from subplans.engine.config import FailureMode
from subplans.engine.errors import (
    AggregateSubplanError,
    SubplanCancelledError,
    SubplanExecutionError,
)
from subplans.engine.events import DispatchFinished, DispatchStarted
from subplans.engine.results import SubplanResult
from subplans.engine.states import SubplanExecutionState
from subplans.engine.tracker import LOG_LEVELS, announce, log_move

if TYPE_CHECKING:
    from subplans.engine.clock import Clock
    from subplans.engine.config import ParallelExecutionConfig
    from subplans.engine.events import EventBus
    from subplans.engine.limiter import AsyncSemaphoreLimiter
    from subplans.engine.subplan import Subplan

__all__ = ["Dispatch"]

logger = logging.getLogger("subplans")
_is_enabled = logger.isEnabledFor
_DEBUG = logging.DEBUG

_PENDING = SubplanExecutionState.PENDING
_RUNNING = SubplanExecutionState.RUNNING
_COMPLETED = SubplanExecutionState.COMPLETED
_FAILED = SubplanExecutionState.FAILED

_CREATE_TASK = asyncio.BaseEventLoop.create_task


class Dispatch:
    """The state of one ``run()``: kept apart so a dispatcher can be reused and shared.

    The moves of its subplans are logged and published as ``tracker.announce`` does, written
    out where they happen: three per subplan, the larger part of the engine's own cost.
    """

    def __init__(
        self,
        config: ParallelExecutionConfig,
        bus: EventBus | None,
        budget: AsyncSemaphoreLimiter | None,
        clock: Clock,
        entries: list[Any],
        name: str | None,
    ) -> None:
        self.config = config
        self.bus = bus
        self.budget = budget
        self.clock = clock
        self.now = clock.now
        self.name = name
        #: Subplan ``i``, then its ``SubplanResult`` once terminal: what ``run()`` returns, and
        #: no subplan (nor the closure it holds) is kept past its end.
        self.entries = entries
        self.total = len(entries)
        #: How many subplans were started: they start in input order.
        self.next = 0
        self.completed = 0
        self.failed = 0
        self.never_started = 0
        self.slots = [Slot() for _ in range(self.config.max_parallel)]
        self.free = list(self.slots)
        #: The task waiting for a budget slot for subplan ``next``, while there is one.
        self.feeder: asyncio.Task[None] | None = None
        self.stop_reason: str | None = None
        self.first_failure: int | None = None
        #: A KeyboardInterrupt from a subplan or a subscriber: raised once everything is terminal.
        self.interrupt: KeyboardInterrupt | None = None
        self.loop = loop = asyncio.get_running_loop()
        self.new_task = loop.create_task
        if type(loop).create_task is _CREATE_TASK and loop.get_task_factory() is None:
            # What create_task() does then, minus a Python call per subplan. (A task factory
            # set while this dispatch runs applies from the next one.)
            self.new_task = partial(asyncio.Task, loop=loop)
        #: Done when the last subplan ended or the dispatch stops: what ``run()`` waits for.
        self.idle: asyncio.Future[None] = loop.create_future()

    async def run(self) -> list[SubplanResult]:
        bus, clock = self.bus, self.clock
        started = clock.monotonic()
        cancel: asyncio.CancelledError | None = None
        unwatch = bus.watch_interrupts(self._interrupted) if bus is not None else None
        try:
            if bus is not None:
                bus.publish(DispatchStarted(self.name, self.total, self.config, time=clock.now()))
            self._announce_pending()
            try:
                self._fill()
                if len(self.free) < len(self.slots) or self.feeder is not None:
                    await self.idle
            except asyncio.CancelledError as cancelled:
                # The canceller's message, when it gave one ("interrupted by SIGINT"), says why.
                reason = cancelled.args[0] if cancelled.args and cancelled.args[0] else None
                self._stop(str(reason) if reason else "the dispatch was cancelled")
                cancel = cancelled
            # However often the caller is cancelled meanwhile, every subplan gets to its end.
            cancel = await self._drain() or cancel
        finally:
            self._fail_never_started()
            if bus is not None:
                elapsed = clock.monotonic() - started
                bus.publish(DispatchFinished(self.name, self._counts(), elapsed, time=clock.now()))
            if unwatch is not None:
                unwatch()
        if self.interrupt is not None:
            raise self.interrupt
        if cancel is not None:
            raise cancel
        return self._outcome(self.entries)

    def _announce_pending(self) -> None:
        bus, debug = self.bus, _is_enabled(_DEBUG)
        if (bus is None or not bus.has_subscribers) and not debug:
            return  # nobody would hear of it (only a subscriber could change that meanwhile)
        # All of them became pending at once: one stamp, and one look at the log level.
        stamp = self.now()
        for subplan in self.entries:
            if debug:
                log_move(subplan.id, _PENDING, None)
            if bus is not None and bus._subscribers:
                bus._publish_move(subplan.id, None, _PENDING, 0, None, stamp)

    def _counts(self) -> dict[SubplanExecutionState, int]:
        running = self.next - self.completed - (self.failed - self.never_started)
        return {
            _PENDING: self.total - self.next - self.never_started,
            _RUNNING: running,
            _COMPLETED: self.completed,
            _FAILED: self.failed,
        }

    def _outcome(self, results: list[SubplanResult]) -> list[SubplanResult]:
        if self.first_failure is not None:
            failed = results[self.first_failure]
            raise SubplanExecutionError(failed.subplan_id, results, failed.error)  # type: ignore[arg-type]
        if not self.failed:
            return results
        failures = [
            SubplanExecutionError(r.subplan_id, results, r.error)  # type: ignore[arg-type]
            for r in results
            if r.state is _FAILED
        ]
        raise AggregateSubplanError(
            f"{len(failures)} of {len(results)} subplans failed", failures, results
        )

    def _fill(self) -> None:
        """Start pending subplans, in input order, while there are free slots."""
        entries, free, budget = self.entries, self.free, self.budget
        while free and self.next < self.total and self.stop_reason is None:
            if self.feeder is not None:
                return  # the next subplan waits for the budget: the rest wait behind it
            subplan = entries[self.next]
            if budget is not None and subplan.uses_budget:
                name = f"subplans feeder {self.name or ''}".strip()
                self.feeder = self.loop.create_task(self._feed(budget, subplan), name=name)
                return
            self._start(subplan)

    async def _feed(self, budget: AsyncSemaphoreLimiter, subplan: Subplan) -> None:
        # Only subplans that do work hold the shared budget, and they never wait on anything
        # else while holding it (their slot is free already): so nesting cannot deadlock. A stop
        # cancels this task, so it never gets past acquire() once stopping.
        await budget.acquire()
        self.feeder = None
        self._start(subplan)
        self._fill()

    def _start(self, subplan: Subplan) -> None:
        slot = self.free.pop()
        slot.index = self.next
        self.next += 1
        slot.started = now = self.now()
        slot.attempts = 1
        # RUNNING is published before the subplan's code can start.
        if _is_enabled(_DEBUG):
            log_move(subplan.id, _RUNNING, None)
        bus = self.bus
        if bus is not None and bus._subscribers:
            bus._publish_move(subplan.id, _PENDING, _RUNNING, 1, None, now)
        slot.task = task = self.new_task(self._execute(slot, subplan))
        if self.stop_reason is not None:
            task.cancel(self.stop_reason)  # a subscriber of RUNNING interrupted the dispatch

    async def _execute(self, slot: Slot, subplan: Subplan) -> None:
        try:
            if subplan.timeout is None and subplan.retries == 0:
                # The common case, kept lean: one attempt, no timer.
                try:
                    value = await subplan.run()
                except Exception as error:
                    self.fail(slot, error)
                else:
                    self.finish(slot, _COMPLETED, value)
            else:
                await run_attempts(self, slot, subplan)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            assert task is not None
            if task.cancelling() and self.stop_reason is not None:
                # Our own cancellation: record it and end the task cleanly.
                task.uncancel()
                self.finish(slot, _FAILED, error=SubplanCancelledError(self.stop_reason))
            else:
                # The subplan's own code raised CancelledError: that is its failure.
                self.fail(slot, SubplanCancelledError("the subplan raised CancelledError"))
                if task.cancelling():
                    raise
        except KeyboardInterrupt as error:
            # A Ctrl-C stops the whole dispatch, which raises it once everything is terminal.
            # Raised from this task it would break out of the event loop half-way instead.
            self.finish(slot, _FAILED, error=error)
            self._interrupted(error)
        except BaseException as error:
            # Not an Exception (SystemExit from sys.exit(), or a custom BaseException): the
            # subplan fails, not the whole dispatch.
            self.fail(slot, error)
        finally:
            self._release(slot, subplan)

    def _release(self, slot: Slot, subplan: Subplan) -> None:
        """Free a subplan's slot, its terminal state recorded first; start the next subplan."""
        slot.task = None
        if self.budget is not None and subplan.uses_budget:
            self.budget.release()
        free = self.free
        free.append(slot)
        if self.stop_reason is None and self.next < self.total:
            if self.budget is None:
                self._start(self.entries[self.next])  # what _fill() would do, one call sooner
            else:
                self._fill()
        elif len(free) == len(self.slots) and self.feeder is None and not self.idle.done():
            self.idle.set_result(None)

    def fail(self, slot: Slot, error: BaseException) -> None:
        """Record a started subplan's failure; under fail-fast, the first one stops the rest."""
        if not self.finish(slot, _FAILED, error=error):
            return
        if self.config.failure_mode is FailureMode.FAIL_FAST and self.stop_reason is None:
            self.first_failure = index = slot.index
            self._stop(f"cancelled because subplan {self.entries[index].subplan_id!r} failed")

    def finish(
        self,
        slot: Slot,
        state: SubplanExecutionState,
        value: Any = None,
        error: BaseException | None = None,
    ) -> bool:
        """Record a started subplan's terminal state once; False if it had one already."""
        entries, index = self.entries, slot.index
        subplan = entries[index]
        if type(subplan) is SubplanResult:
            return False
        subplan_id, attempts, now = subplan.id, slot.attempts, self.now()
        entries[index] = SubplanResult(subplan_id, state, value, error, slot.started, now, attempts)
        if state is _COMPLETED:
            self.completed += 1
        else:
            self.failed += 1
        if _is_enabled(LOG_LEVELS[state]):
            log_move(subplan_id, state, error)
        bus = self.bus
        if bus is not None and bus._subscribers:
            bus._publish_move(subplan_id, _RUNNING, state, attempts, error, now)
        return True

    def _stop(self, reason: str) -> None:
        """Start nothing new and cancel every running subplan."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        logger.info("stopping dispatch%s: %s", f" {self.name}" if self.name else "", reason)
        if not self.idle.done():
            self.idle.set_result(None)
        if self.feeder is not None:
            self.feeder.cancel()
        for slot in self._unfinished():
            # Not one that is recording its own end (the failure that stops the rest); the
            # current task otherwise: a subscriber may interrupt while a subplan publishes.
            slot.task.cancel(reason)  # type: ignore[union-attr]

    def _interrupted(self, error: KeyboardInterrupt) -> None:
        """Stop as a cancelled caller would; ``run()`` raises ``error`` at the end."""
        if self.interrupt is None:
            self.interrupt = error
        self._stop("interrupted by KeyboardInterrupt")

    async def _drain(self) -> asyncio.CancelledError | None:
        """Wait for the cancelled subplans, up to ``cancel_grace``; report the stragglers.

        A cancellation of the caller meanwhile is returned, not raised: it cannot cut the
        bookkeeping short (and the subplans were cancelled already).
        """
        cancel: asyncio.CancelledError | None = None
        while self.feeder is not None and not self.feeder.done():
            cancel = await through_cancel(asyncio.wait([self.feeder])) or cancel
        loop = self.loop
        grace = self.config.cancel_grace
        deadline = loop.time() + grace
        while (busy := self._busy()) and (left := deadline - loop.time()) > 0:
            waiting = asyncio.wait([slot.task for slot in busy if slot.task], timeout=left)
            cancel = await through_cancel(waiting) or cancel
            self._reap_unstarted()
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

    def _reap_unstarted(self) -> None:
        """Settle subplan tasks that were cancelled before their first step.

        Such a task never ran ``_execute``, so neither its terminal state nor its slot were
        handled there.
        """
        for slot in self._busy():
            task = slot.task
            if task is not None and task.done():
                reason = self.stop_reason or "cancelled before it started"
                subplan = self.entries[slot.index]
                self.finish(slot, _FAILED, error=SubplanCancelledError(reason))
                self._release(slot, subplan)

    def _busy(self) -> list[Slot]:
        """The slots held by a subplan's task, in the order the subplans started."""
        return sorted((slot for slot in self.slots if slot.task is not None), key=_index)

    def _unfinished(self) -> list[Slot]:
        """The busy slots whose subplan has no terminal state yet."""
        entries = self.entries
        return [slot for slot in self._busy() if type(entries[slot.index]) is not SubplanResult]

    def _fail_never_started(self) -> None:
        reason = self.stop_reason or "the dispatch ended before it started"
        entries, bus, now = self.entries, self.bus, self.now
        for index in range(self.next, self.total):
            subplan_id, error, stamp = entries[index].id, SubplanCancelledError(reason), now()
            entries[index] = SubplanResult(subplan_id, _FAILED, None, error, None, stamp, 0)
            self.failed += 1
            self.never_started += 1
            announce(bus, subplan_id, _PENDING, _FAILED, 0, error, stamp)


def _index(slot: Slot) -> int:
    return slot.index
