"""The parallel subplan dispatcher: runs subplans under a cap and tracks every one to its end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from subplans.engine.cancelling import through_cancel
from subplans.engine.clock import SYSTEM_CLOCK, Clock
from subplans.engine.config import FailureMode, ParallelExecutionConfig
from subplans.engine.errors import (
    AggregateSubplanError,
    SubplanCancelledError,
    SubplanError,
    SubplanExecutionError,
)
from subplans.engine.events import DispatchFinished, DispatchStarted, EventBus, SubplanRetrying
from subplans.engine.limiter import AsyncSemaphoreLimiter
from subplans.engine.results import SubplanResult
from subplans.engine.states import SubplanExecutionState
from subplans.engine.subplan import Subplan
from subplans.engine.tracker import SubplanTracker

# Subplan and SubplanResult are handed on for the importers of their first home.
__all__ = ["ParallelSubplanDispatcher", "Subplan", "SubplanResult"]

logger = logging.getLogger("subplans")

_RUNNING = SubplanExecutionState.RUNNING
_COMPLETED = SubplanExecutionState.COMPLETED
_FAILED = SubplanExecutionState.FAILED

#: Retry backoff never waits longer than this.
MAX_RETRY_DELAY = 30.0


class ParallelSubplanDispatcher:
    """Runs subplans concurrently, at most ``config.max_parallel`` at once, in input order."""

    def __init__(
        self,
        config: ParallelExecutionConfig | None = None,
        *,
        bus: EventBus | None = None,
        budget: AsyncSemaphoreLimiter | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config if config is not None else ParallelExecutionConfig()
        self.bus = bus
        #: A limiter shared with other dispatchers (nested plans): like make's jobserver, it caps
        #: the subplans that do work across a whole tree, while ``max_parallel`` caps this one.
        self.budget = budget
        #: Where results and events read their stamps and the elapsed time; deadlines (timeouts,
        #: ``cancel_grace``) stay on the event loop's clock, which asyncio waits on.
        self.clock = clock
        self._dispatches = 0

    def __repr__(self) -> str:
        c = self.config
        return (
            f"<ParallelSubplanDispatcher max_parallel={c.max_parallel} "
            f"failure_mode={c.failure_mode.value} dispatches={self._dispatches}>"
        )

    async def run(
        self, subplans: Iterable[Subplan], *, name: str | None = None
    ) -> list[SubplanResult]:
        """Run every subplan and return their results in input order once all are terminal.

        Raises:
            SubplanError: duplicate subplan ids (before anything runs).
            SubplanExecutionError: fail-fast, for the first failure (after every other
                subplan was cancelled and has finished, up to ``cancel_grace``).
            AggregateSubplanError: continue-on-error, when any subplan failed.
            asyncio.CancelledError: the caller was cancelled (once or more); every subplan was
                stopped and reached its terminal state first.
            KeyboardInterrupt: a subplan or an event subscriber raised it; the dispatch was
                stopped as if its caller had been cancelled.
        """
        items = list(subplans)
        seen: set[str] = set()
        for subplan in items:
            if subplan.id in seen:
                raise SubplanError(f"duplicate subplan id {subplan.id!r}")
            seen.add(subplan.id)
        self._dispatches += 1
        return await _Dispatch(self, items, name).run()


class _Dispatch:
    """The state of one ``run()``: kept apart so a dispatcher can be reused and shared."""

    def __init__(
        self, dispatcher: ParallelSubplanDispatcher, subplans: list[Subplan], name: str | None
    ) -> None:
        self.config = config = dispatcher.config
        self.bus = bus = dispatcher.bus
        self.budget = dispatcher.budget
        self.clock = clock = dispatcher.clock
        self.subplans = subplans
        self.name = name
        self.limiter = AsyncSemaphoreLimiter(config.max_parallel)
        self.tracker = SubplanTracker(bus, clock=clock)
        self.results: list[SubplanResult | None] = [None] * len(subplans)
        self.started: list[float | None] = [None] * len(subplans)
        self.attempts: list[int] = [0] * len(subplans)
        self.running: dict[int, asyncio.Task[None]] = {}
        self.stop_reason: str | None = None
        self.first_failure: int | None = None
        #: A KeyboardInterrupt from a subplan or a subscriber: raised once everything is terminal.
        self.interrupt: KeyboardInterrupt | None = None
        loop = asyncio.get_running_loop()
        self.stopped: asyncio.Future[None] = loop.create_future()
        # Created now, first runs when run() first awaits: after the pending events are out.
        self.feeder = loop.create_task(self._feed(), name=f"subplans feeder {name or ''}".strip())

    async def run(self) -> list[SubplanResult]:
        bus, clock = self.bus, self.clock
        started = clock.monotonic()
        cancel: asyncio.CancelledError | None = None
        unwatch = bus.watch_interrupts(self._interrupted) if bus is not None else None
        try:
            if bus is not None:
                total = len(self.subplans)
                bus.publish(DispatchStarted(self.name, total, self.config, time=clock.now()))
            for subplan in self.subplans:
                self.tracker.add(subplan.id)
            try:
                await asyncio.wait([self.feeder])
                while self.running and self.stop_reason is None:
                    await asyncio.wait(
                        [*self.running.values(), self.stopped],
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    self._reap_unstarted()
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
                counts = self.tracker.counts()
                bus.publish(DispatchFinished(self.name, counts, elapsed, time=clock.now()))
            if unwatch is not None:
                unwatch()
        if self.interrupt is not None:
            raise self.interrupt
        if cancel is not None:
            raise cancel
        results: list[SubplanResult] = self.results  # type: ignore[assignment]
        return self._outcome(results)

    def _outcome(self, results: list[SubplanResult]) -> list[SubplanResult]:
        if self.first_failure is not None:
            failed = results[self.first_failure]
            raise SubplanExecutionError(failed.subplan_id, results, failed.error)  # type: ignore[arg-type]
        failures = [
            SubplanExecutionError(r.subplan_id, results, r.error)  # type: ignore[arg-type]
            for r in results
            if r.state is _FAILED
        ]
        if failures:
            raise AggregateSubplanError(
                f"{len(failures)} of {len(results)} subplans failed", failures, results
            )
        return results

    async def _feed(self) -> None:
        limiter, budget, loop = self.limiter, self.budget, asyncio.get_running_loop()
        for index, subplan in enumerate(self.subplans):
            # A stop cancels this task, so it never gets past acquire() once stopping.
            await limiter.acquire()
            if budget is not None and subplan.uses_budget:
                # Only subplans that do work hold the shared budget, and they never wait on
                # anything else while holding it: so nesting cannot deadlock.
                try:
                    await budget.acquire()
                except BaseException:
                    limiter.release()
                    raise
            # RUNNING is published before the subplan's code can start.
            self.started[index] = self.clock.now()
            self.attempts[index] = 1
            self.tracker.transition(subplan.id, _RUNNING, attempt=1)
            task = loop.create_task(self._execute(index, subplan))
            self.running[index] = task
            if self.stop_reason is not None:
                task.cancel(self.stop_reason)  # a subscriber of RUNNING interrupted the dispatch

    async def _execute(self, index: int, subplan: Subplan) -> None:
        try:
            if subplan.timeout is None and subplan.retries == 0:
                # The common case, kept lean: one attempt, no timer.
                try:
                    value = await subplan.run()
                except Exception as error:
                    self._fail(index, error)
                else:
                    self._finish(index, _COMPLETED, value=value)
            else:
                await self._attempts(index, subplan)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            assert task is not None
            if task.cancelling() and self.stop_reason is not None:
                # Our own cancellation: record it and end the task cleanly.
                task.uncancel()
                self._finish(index, _FAILED, error=SubplanCancelledError(self.stop_reason))
            else:
                # The subplan's own code raised CancelledError: that is its failure.
                self._fail(index, SubplanCancelledError("the subplan raised CancelledError"))
                if task.cancelling():
                    raise
        except KeyboardInterrupt as error:
            # A Ctrl-C stops the whole dispatch, which raises it once everything is terminal.
            # Raised from this task it would break out of the event loop half-way instead.
            self._finish(index, _FAILED, error=error)
            self._interrupted(error)
        except BaseException as error:
            # Not an Exception (SystemExit from sys.exit(), or a custom BaseException): the
            # subplan fails, not the whole dispatch.
            self._fail(index, error)
        finally:
            self._release(index)

    def _release(self, index: int) -> None:
        """Free a subplan's slots; its terminal state was recorded first."""
        del self.running[index]
        if self.budget is not None and self.subplans[index].uses_budget:
            self.budget.release()
        self.limiter.release()

    def _reap_unstarted(self) -> None:
        """Settle subplan tasks that were cancelled before their first step.

        Such a task never ran ``_execute``, so neither its terminal state nor its slots were
        handled there.
        """
        for index, task in list(self.running.items()):
            if task.done():
                reason = self.stop_reason or "cancelled before it started"
                self._finish(index, _FAILED, error=SubplanCancelledError(reason))
                self._release(index)

    async def _attempts(self, index: int, subplan: Subplan) -> None:
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
                            self._fail(index, TimeoutError(f"timed out after {timeout:g}s"))
                        raise
                    _check_kept(timer, timeout, deadline)
            except Exception as error:
                attempt = self.attempts[index]
                if timeout is not None and isinstance(error, TimeoutError) and not error.args:
                    error = TimeoutError(f"timed out after {timeout:g}s")
                # An abandoned attempt may still be running: never start another beside it.
                abandoned = getattr(error, "abandoned", False)
                if attempt > subplan.retries or self.stop_reason is not None or abandoned:
                    self._fail(index, error)
                    return
                if self.bus is not None:
                    retrying = SubplanRetrying(
                        subplan.id, attempt, error, delay, time=self.clock.now()
                    )
                    self.bus.publish(retrying)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
                self.attempts[index] = attempt + 1
            else:
                self._finish(index, _COMPLETED, value=value)
                return

    def _fail(self, index: int, error: BaseException) -> None:
        if not self._finish(index, _FAILED, error=error):
            return
        if self.config.failure_mode is FailureMode.FAIL_FAST and self.stop_reason is None:
            self.first_failure = index
            self._stop(f"cancelled because subplan {self.subplans[index].id!r} failed")

    def _finish(
        self,
        index: int,
        state: SubplanExecutionState,
        *,
        value: Any = None,
        error: BaseException | None = None,
    ) -> bool:
        """Record a terminal state once; False if the subplan was already given one."""
        if self.results[index] is not None:
            return False
        subplan_id, attempts = self.subplans[index].id, self.attempts[index]
        self.results[index] = SubplanResult(
            subplan_id, state, value, error, self.started[index], self.clock.now(), attempts
        )
        self.tracker.transition(subplan_id, state, attempt=attempts, error=error)
        return True

    def _stop(self, reason: str) -> None:
        """Start nothing new and cancel every running subplan."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        logger.info("stopping dispatch%s: %s", f" {self.name}" if self.name else "", reason)
        self.stopped.set_result(None)
        self.feeder.cancel()
        for index, task in self.running.items():
            # Not one that is recording its own end (the failure that stops the rest); the
            # current task otherwise: a subscriber may interrupt while a subplan publishes.
            if self.results[index] is None:
                task.cancel(reason)

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
        while not self.feeder.done():
            cancel = await through_cancel(asyncio.wait([self.feeder])) or cancel
        loop = asyncio.get_running_loop()
        grace = self.config.cancel_grace
        deadline = loop.time() + grace
        while self.running and (left := deadline - loop.time()) > 0:
            waiting = asyncio.wait(list(self.running.values()), timeout=left)
            cancel = await through_cancel(waiting) or cancel
            self._reap_unstarted()
        for index in list(self.running):
            subplan_id = self.subplans[index].id
            logger.error(
                "subplan %s ignored cancellation for %.1fs; abandoning it", subplan_id, grace
            )
            error = SubplanCancelledError(
                f"{self.stop_reason}; still running {grace:g}s after cancellation, abandoned",
                abandoned=True,
            )
            self._finish(index, _FAILED, error=error)
        return cancel

    def _fail_never_started(self) -> None:
        reason = self.stop_reason or "the dispatch ended before it started"
        for index, result in enumerate(self.results):
            if result is None and self.started[index] is None:
                self._finish(index, _FAILED, error=SubplanCancelledError(reason))


def _check_kept(timer: asyncio.Timeout, timeout: float, deadline: float) -> None:
    """Raise TimeoutError if the attempt swallowed its timeout's cancellation and returned."""
    # A function of its own: on 3.11 coverage loses the lines of a frame resumed by a cancel
    # until its next await (python/cpython#106749).
    if timer.expired():
        over = asyncio.get_running_loop().time() - deadline
        raise TimeoutError(f"ignored its timeout of {timeout:g}s and ran {over:.1f}s over")
