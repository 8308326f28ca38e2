"""A subplan's way through its slot: started in a task, run, and after its end (``ending``)
the next one of its slot run in the same task when nothing but the engine could tell that
task from a new one (``_execute``; the spec's "A slot's task").

The hot path of a dispatch (a mixin of ``Dispatch``): the moves of a start are logged and
published as ``tracker.announce`` and ``EventBus._publish_move`` do, written out where they
happen (a call frame less a move), in the dispatch's spare event when no subscriber kept the
one before; they are most of the engine's own cost (``benchmarks/bench_dispatcher.py`` has
the figures). A plain completion is recorded as ``Ending.finish`` records it, written out in
``_execute``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any
from weakref import getweakrefcount

from subplans.engine.attempts import Slot, run_attempts
from subplans.engine.ending import SPARE_REFS, Ending
from subplans.engine.errors import SubplanCancelledError
from subplans.engine.events import SubplanStateChanged
from subplans.engine.lending import Holder, held_by_this_task, let_go
from subplans.engine.results import SubplanResult
from subplans.engine.states import SubplanExecutionState
from subplans.engine.subplan import Subplan
from subplans.engine.task_reuse import (
    ENTERED_REFS,
    RUNNING_REFS,
    UNCOUNTED,
    YIELD,
    same_vars,
)
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
_FINISH = Ending.finish
_COMPLETED_LEVEL = LOG_LEVELS[_COMPLETED]  # (INFO)
_refs = sys.getrefcount
_frame = sys._getframe


class Running:
    """Start a subplan, run it to its end, start the next (a mixin of ``Dispatch``)."""

    budget: AsyncSemaphoreLimiter | None
    bus: EventBus | None
    now: Callable[[], float]
    context: Context
    new_task: Callable[..., asyncio.Task[None]]
    plain: bool
    chain: int
    offer: asyncio.Task[None] | None
    free: list[Slot]
    slots: list[Slot]
    next: int
    claim: Parts | None
    direct: bool
    stop_reason: str | None
    spare: SubplanStateChanged
    entries: Any
    completed: int

    if TYPE_CHECKING:

        def _interrupted(self, error: KeyboardInterrupt) -> None: ...
        def quiet(self) -> bool: ...
        def wake(self) -> None: ...
        async def pace_retry(self, subplan: Subplan) -> None: ...
        def release(self, slot: Slot, ending: asyncio.Task[None] | None = None) -> None: ...
        def fail(self, slot: Slot, error: BaseException) -> None: ...
        def finish(
            self,
            slot: Slot,
            state: SubplanExecutionState,
            value: Any = None,
            error: BaseException | None = None,
        ) -> bool: ...

    def _start(self, subplan: Subplan, pulled: bool = False) -> None:
        """Start ``subplan`` in a free slot; ``pulled`` from a lazy input just now, it becomes
        pending at the same moment (it was pulled because a slot was free).

        Its task is made once its moves are published (``_spawn``), or it is left to the task
        ``offer``ed, the one of the subplan that just ended in this slot, which runs it or
        makes its task then: either way its first step is scheduled at the same point.
        """
        free = self.free
        slot = free[-1]
        context = self.context  # (a group's: a subscriber may start another meanwhile)
        offer = self.offer
        task = None
        if offer is not None:
            self.offer = None
        elif not self.plain:
            # A task factory may refuse: its task first, so that nothing has changed then
            # (made in the caller's context, the task runs in a copy of it).
            task = context.run(self.new_task, self._execute(slot, subplan))
            slot.task = task
        free.pop()
        slot.index = self.next
        self.next += 1
        stamp = self.now  # (an attribute, not a method: read as one, it is cheaper)
        slot.started = now = stamp()
        slot.attempts = 1
        if (claim := self.claim) is not None:  # what the feeder took for it
            self.claim = None
            if claim:
                # A Holder (the class's fields, without its call machinery).
                slot.holder = holder = _new(Holder)
                holder.budget = self.budget if subplan.uses_budget else None
                holder.parts = claim
                holder.held = True
                holder.lent = 0
                holder.ended = False
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
                    pending = self.spare
                    if _refs(pending) != SPARE_REFS:  # kept by a subscriber: a new one
                        self.spare = pending = _new(SubplanStateChanged)
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
                if pulled:
                    del pending  # (else it would count as kept)
                running = self.spare
                if _refs(running) != SPARE_REFS:
                    self.spare = running = _new(SubplanStateChanged)
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
        if task is not None:
            if self.stop_reason is not None:
                task.cancel(self.stop_reason)  # a subscriber of RUNNING interrupted it
        elif offer is not None:
            # Nothing has run since it was published: the ending task runs it or spawns it.
            slot.follow = subplan
            slot.task = offer
        else:
            self._spawn(slot, subplan, context)

    def _spawn(self, slot: Slot, subplan: Subplan, context: Context) -> None:
        """Make ``subplan``'s task, in a copy of ``context`` (as a TaskGroup's tasks are),
        cancelled at once if the dispatch stops; note what it looks like new."""
        coro: Any = self._execute(slot, subplan)
        try:
            if self.chain:
                # Its context made here, so that its references can be counted too: a
                # ``contextvars.Token`` a subplan keeps holds it (and would then be good in
                # the next subplan's context, where a new task's would not).
                own = context.copy()
                task = self.new_task(coro, context=own)
            else:
                own = None
                task = context.run(self.new_task, coro)
        except BaseException as error:
            # No task (a closed loop, a call from another thread, no memory): the subplan,
            # published running, fails with the error and its slot is free again; the caller
            # gets the error, as when a task could not be made before anything was published.
            coro.close()
            self._unspawned(slot, error)
            raise
        slot.task = task
        if own is not None:
            # No one but the engine can hold them yet: the counts they must come back to
            # (while it runs, the loop holds the task too, and the context is entered).
            slot.clean = (
                _refs(task) + RUNNING_REFS,
                getweakrefcount(task),
                task.get_name(),
                _refs(coro),
                _refs(coro.cr_frame),
                getweakrefcount(coro),
                own,
                _refs(own) + ENTERED_REFS,
            )
            del own
        if self.stop_reason is not None:
            task.cancel(self.stop_reason)  # a subscriber of RUNNING interrupted the dispatch

    async def _execute(self, slot: Slot, subplan: Subplan) -> None:
        """Run ``subplan``; then, while nothing but the engine could tell this task from a new
        one, the subplans its slot starts next (else the next one gets a task of its own,
        made where it would have been)."""
        chain = self.chain  # how many more subplans this task may run
        own: Any  # its context (a Context while it may run another subplan)
        if chain:
            task: Any = slot.task
            refs, weak, name, coro_refs, frame_refs, coro_weak, own, own_refs = slot.clean
            slot.clean = UNCOUNTED  # (its context lives as long as the task, no longer)
            coro = task.get_coro()
        running = subplan
        del subplan
        kind: Any = type(self)
        written_out = kind.finish is _FINISH  # (a stream's hands its result on too)
        run: Any = None
        while True:
            offering = False  # this task to the next subplan of its slot
            if not self.direct:
                held_by_this_task.set(slot.holder)  # what a dispatch it opens may lend
            try:
                if running.timeout is None and running.retries == 0:
                    # The common case, kept lean: one attempt, no timer.
                    run = running.run  # (an attribute, not a method: read as one, cheaper)
                    try:
                        value = await run()
                    except Exception as error:
                        self.fail(slot, error)
                    else:
                        entries, index = self.entries, slot.index
                        if not written_out:
                            self.finish(slot, _COMPLETED, value)
                        elif type(entry := entries[index]) is not SubplanResult:
                            # ``self.finish(slot, _COMPLETED, value)`` written out: a call less
                            # a subplan (1.5% of it). Keep the two alike (a test compares them).
                            stamp = self.now
                            subplan_id, attempts, now = entry.id, slot.attempts, stamp()
                            entries[index] = entry = _new(SubplanResult)
                            entry.subplan_id = subplan_id
                            entry.state = _COMPLETED
                            entry._stamps = complex(slot.started, now)
                            entry._outcome = attempts if value is None else (value, None, attempts)
                            entry = None
                            self.completed += 1
                            level = _COMPLETED_LEVEL
                            if maybe_enabled(level, True) and is_enabled(level):
                                log_move(subplan_id, _COMPLETED, None)
                            bus = self.bus
                            if bus is not None and (subscribers := bus._subscribers):
                                if bus._all_raw:
                                    event: Any = (
                                        now,
                                        subplan_id,
                                        _RUNNING,
                                        _COMPLETED,
                                        attempts,
                                        None,
                                    )
                                else:
                                    event = self.spare
                                    if _refs(event) != SPARE_REFS:
                                        self.spare = event = _new(SubplanStateChanged)
                                    event.time = now
                                    event.subplan_id = subplan_id
                                    event.previous = _RUNNING
                                    event.state = _COMPLETED
                                    event.attempt = attempts
                                    event.error = None
                                bus._published += 1
                                for callback in subscribers:
                                    try:
                                        callback(event)
                                    except BaseException as raised:
                                        bus._raised(callback, raised)
                                # (this frame lives on: it keeps none of them)
                                del event, subscribers, callback
                        value = None  # (its result holds it)
                        offering = chain > 0
                else:
                    await run_attempts(self, slot, running)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                assert current is not None
                if current.cancelling() and self.stop_reason is not None:
                    # Our own cancellation: record it and end the task cleanly.
                    current.uncancel()
                    self.finish(slot, _FAILED, error=SubplanCancelledError(self.stop_reason))
                else:
                    # The subplan's own code raised CancelledError: that is its failure.
                    self.fail(slot, SubplanCancelledError("the subplan raised CancelledError"))
                    if current.cancelling():
                        raise
            except KeyboardInterrupt as error:
                # A Ctrl-C stops the whole dispatch, which raises it once everything is
                # terminal. Raised from this task it would break out of the event loop
                # half-way instead.
                self.finish(slot, _FAILED, error=error)
                self._interrupted(error)
            except BaseException as error:
                # Not an Exception (SystemExit from sys.exit(), or a custom BaseException):
                # the subplan fails, not the whole dispatch.
                self.fail(slot, error)
            finally:
                # Its entry holds its result: the subplan goes now, whatever task comes next.
                del running
                run = None
                self.release(slot, task if offering else None)
            if not offering or (follow := slot.follow) is None:
                # A failed subplan's traceback keeps this frame: not the task and its context.
                task = coro = own = None
                return
            running, follow, slot.follow = follow, None, None
            chain -= 1
            # Nothing but the engine could tell this task from a new one: no reference kept
            # to it, its coroutine, its frame or its context (a watchdog's timer, a dict, a
            # traceback, a Token), no weak one, the same name, no done callback, no
            # cancellation requested or pending, and a new task's context variables (bound to
            # the same objects; ``own`` is the context this task runs in).
            if (
                self.stop_reason is None
                and _refs(task) == refs
                and getweakrefcount(task) == weak
                and _refs(coro) == coro_refs
                and getweakrefcount(coro) == coro_weak
                and _refs(own) == own_refs
                and _refs(_frame()) == frame_refs
                and task.get_name() is name
                and task._callbacks is None
                and not task.cancelling()
                and not task._must_cancel
                and (
                    same_vars(own, context, self.direct)
                    if (context := self.context)
                    else len(own) == (not self.direct)
                )
            ):
                # One turn of the loop first, where a new task's first step would be: every
                # step scheduled before comes first (a stop meanwhile cancels it here).
                await YIELD
                continue
            task = coro = own = None
            self._spawn(slot, running, self.context)
            return

    def _unspawned(self, slot: Slot, error: BaseException) -> None:
        """End a subplan whose task could not be made: failed with ``error``, its slot free
        (nothing started from here: the next start comes from the loop as usual)."""
        slot.task = None
        self.finish(slot, _FAILED, error=error)
        if (holder := slot.holder) is not None:
            slot.holder = None
            let_go(holder)
        self.free.append(slot)
        if len(self.free) == len(self.slots) and self.quiet():
            self.wake()
