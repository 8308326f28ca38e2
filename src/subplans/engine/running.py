"""A subplan's way through its slot: started in its own task, run, its end recorded (its
result, its log line, its event), its slot freed and the next subplan started from there.

The hot path of a dispatch (a mixin of ``Dispatch``): three moves per subplan are logged and
published as ``tracker.announce`` and ``EventBus._publish_move`` do, written out where they
happen (a call frame less a move); they are most of the engine's own cost
(``benchmarks/bench_dispatcher.py`` has the figures).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from subplans.engine.attempts import Slot, run_attempts
from subplans.engine.errors import SubplanCancelledError
from subplans.engine.events import SubplanStateChanged
from subplans.engine.lending import Holder, held_by_this_task, let_go
from subplans.engine.results import SubplanResult
from subplans.engine.states import SubplanExecutionState
from subplans.engine.subplan import Subplan
from subplans.engine.tracker import LOG_LEVELS, is_enabled, log_move, maybe_enabled

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextvars import Context

    from subplans.engine.bus import EventBus
    from subplans.engine.limiter import AsyncSemaphoreLimiter, Parts

__all__ = ["Running"]

_DEBUG = logging.DEBUG

_PENDING = SubplanExecutionState.PENDING
_RUNNING = SubplanExecutionState.RUNNING
_COMPLETED = SubplanExecutionState.COMPLETED
_FAILED = SubplanExecutionState.FAILED

_new = object.__new__


class Running:
    """Start a subplan, run it to its end, start the next (a mixin of ``Dispatch``)."""

    budget: AsyncSemaphoreLimiter | None
    bus: EventBus | None
    now: Callable[[], float]
    context: Context
    new_task: Callable[[Any], asyncio.Task[None]]
    entries: Any
    free: list[Slot]
    slots: list[Slot]
    next: int
    total: int
    completed: int
    failed: int
    claim: Parts | None
    direct: bool
    excess: int
    stop_reason: str | None
    feeder: asyncio.Task[None] | None
    halt: Any
    success: Any
    pull: Callable[[], Any] | None
    source: Any
    append: Callable[[Any], None] | None
    last_id: str | None
    last_size: int

    if TYPE_CHECKING:

        def fill(self) -> None: ...
        def admit(self, subplan: Subplan, pulled: bool) -> bool: ...
        def enter(self, item: Any) -> Subplan | None: ...
        def check_success(self) -> None: ...
        def check_fail(self, index: int) -> None: ...
        def drop_slot(self, slot: Slot) -> bool: ...
        def quiet(self) -> bool: ...
        def wake(self) -> None: ...
        def _interrupted(self, error: KeyboardInterrupt) -> None: ...
        def _input_failed(self, error: BaseException) -> None: ...
        async def pace_retry(self, subplan: Subplan) -> None: ...

    def _start(self, subplan: Subplan, pulled: bool = False) -> None:
        """Start ``subplan`` in a free slot; ``pulled`` from a lazy input just now, it becomes
        pending at the same moment (it was pulled because a slot was free)."""
        # The task first: if it cannot be made, nothing has changed (it runs only later).
        free = self.free
        slot = free[-1]
        # Made in the caller's context, the task runs in a copy of it (cheaper than a
        # context argument, which a loop's task factory need not take on 3.11).
        task = self.context.run(self.new_task, self._execute(slot, subplan))
        free.pop()
        slot.task = task
        slot.index = self.next
        self.next += 1
        slot.started = now = self.now()
        slot.attempts = 1
        if (claim := self.claim) is not None:  # what the feeder took for it
            self.claim = None
            if claim:
                budget = self.budget if subplan.uses_budget else None
                slot.holder = Holder(budget, claim)
        # RUNNING is published before the subplan's code can start.
        if maybe_enabled(_DEBUG, True) and is_enabled(_DEBUG):
            if pulled:
                log_move(subplan.id, _PENDING, None)
            log_move(subplan.id, _RUNNING, None)
        bus = self.bus
        if bus is not None and (subscribers := bus._subscribers):
            # ``bus._publish_pulled`` (or ``_publish_move``) written out: a call less a move.
            subplan_id, raw = subplan.id, bus._all_raw
            if pulled:
                if raw:
                    pending: Any = (now, subplan_id, None, _PENDING, 0, None)
                else:
                    pending = _new(SubplanStateChanged)
                    pending.time = now
                    pending.subplan_id = subplan_id
                    pending.previous = None
                    pending.state = _PENDING
                    pending.attempt = 0
                    pending.error = None
                bus._published += 1
                for callback in subscribers:
                    try:
                        callback(pending)
                    except BaseException as raised:
                        bus._raised(callback, raised)
                subscribers = bus._subscribers  # (one may have unsubscribed meanwhile)
            if raw:
                running: Any = (now, subplan_id, _PENDING, _RUNNING, 1, None)
            else:
                running = _new(SubplanStateChanged)
                running.time = now
                running.subplan_id = subplan_id
                running.previous = _PENDING
                running.state = _RUNNING
                running.attempt = 1
                running.error = None
            bus._published += 1
            for callback in subscribers:
                try:
                    callback(running)
                except BaseException as raised:
                    bus._raised(callback, raised)
        if self.stop_reason is not None:
            task.cancel(self.stop_reason)  # a subscriber of RUNNING interrupted the dispatch

    async def _execute(self, slot: Slot, subplan: Subplan) -> None:
        if not self.direct:
            held_by_this_task.set(slot.holder)  # what a dispatch it opens may lend
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
            self.release(slot, subplan)

    def release(self, slot: Slot, subplan: Subplan) -> None:
        """Free a subplan's slot, its terminal state recorded first; start the next subplan."""
        slot.task = None
        if self.success is not None:
            self.check_success()  # (here, not in finish(): a stream hands its result on first)
        if (holder := slot.holder) is not None:
            slot.holder = None
            let_go(holder)
        free = self.free
        if not self.excess or not self.drop_slot(slot):
            free.append(slot)
        if self.stop_reason is None:
            # (No free slot when this one was dropped: a lowered cap starts nothing.)
            if self.next < self.total:
                if self.direct and free:
                    self._start(self.entries[self.next])  # what fill() would do, one call sooner
                    return
                self.fill()
            elif (pull := self.pull) is not None and free and (self.direct or self.feeder is None):
                # ``_pull()`` and ``fill()`` written out (two calls less a subplan): the common
                # case of ``_pull()``, an id after the one before (so new), else ``enter()``.
                try:
                    item = pull()
                except StopIteration:
                    item = self.source = self.pull = None
                except BaseException as error:
                    item = None
                    self._input_failed(error)
                else:
                    if (
                        type(item) is Subplan
                        and (item.uses is None or not self.direct)
                        and (last := self.last_id) is not None
                        and (append := self.append) is not None
                        and (
                            (size := len(subplan_id := item.id)) > self.last_size
                            or (size == self.last_size and subplan_id > last)
                        )
                    ):
                        self.last_id, self.last_size = subplan_id, size
                        append(item)
                        self.total += 1
                    else:
                        item = self.enter(item)
                if item is not None and (self.direct or self.admit(item, True)):
                    self._start(item, True)
                    return
                self.fill()  # the input ended or failed, an id was rejected, or it waits
            elif self.source is not None:
                self.fill()
        if len(free) == len(self.slots) and self.quiet():
            self.wake()

    def fail(self, slot: Slot, error: BaseException) -> None:
        """Record a started subplan's failure; under fail-fast, the first one stops the rest."""
        if not self.finish(slot, _FAILED, error=error):
            return
        if self.halt is not None:
            self.check_fail(slot.index)

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
        # ``SubplanResult(...)`` without the class's call machinery (half the time; a test
        # keeps the two equal): packed as its ``__init__`` packs it.
        entries[index] = result = _new(SubplanResult)
        result.subplan_id = subplan_id
        result.state = state
        result._stamps = complex(slot.started, now)
        if value is None and error is None:
            result._outcome = attempts
        else:
            result._outcome = (value, error, attempts)
        if state is _COMPLETED:
            self.completed += 1
        else:
            self.failed += 1
        if maybe_enabled(level := LOG_LEVELS[state], True) and is_enabled(level):
            log_move(subplan_id, state, error)
        bus = self.bus
        if bus is not None and (subscribers := bus._subscribers):
            # ``bus._publish_move`` written out: a call less a move.
            if bus._all_raw:
                event: Any = (now, subplan_id, _RUNNING, state, attempts, error)
            else:
                event = _new(SubplanStateChanged)
                event.time = now
                event.subplan_id = subplan_id
                event.previous = _RUNNING
                event.state = state
                event.attempt = attempts
                event.error = error
            bus._published += 1
            for callback in subscribers:
                try:
                    callback(event)
                except BaseException as raised:
                    bus._raised(callback, raised)
        return True
