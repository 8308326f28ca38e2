"""A started subplan's end: its result, log line and event recorded, its slot and units freed,
and the next subplan started from there, offered the ending task (``Running._execute``).

The other half of the hot path (a mixin of ``Dispatch``): the end's move is logged and
published as ``tracker.announce`` and ``EventBus._publish_move`` do, written out (and, for a
plain completion, written out again in ``Running._execute``: keep the two alike).
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

from subplans.engine.events import SubplanStateChanged
from subplans.engine.results import SubplanResult
from subplans.engine.states import SubplanExecutionState
from subplans.engine.subplan import Subplan
from subplans.engine.tracker import LOG_LEVELS, is_enabled, log_move, maybe_enabled

if TYPE_CHECKING:
    from collections.abc import Callable

    from subplans.engine.attempts import Slot
    from subplans.engine.bus import EventBus
    from subplans.engine.gates import Controls
    from subplans.engine.limiter import AsyncSemaphoreLimiter, Parts

__all__ = ["SPARE_REFS", "Ending"]

_RUNNING = SubplanExecutionState.RUNNING
_COMPLETED = SubplanExecutionState.COMPLETED
_FAILED = SubplanExecutionState.FAILED

_new = object.__new__
_refs = sys.getrefcount

#: References to a dispatch's spare event when no one but the dispatch holds it: its slot,
#: a local name, ``sys.getrefcount``'s argument (``Dispatch.spare``). On CPython before 3.14
#: only, where a name and an argument hold a reference each (a later one may borrow it, and
#: a count that low could then hide a subscriber's): elsewhere none is reused (-1).
SPARE_REFS = 3 if sys.implementation.name == "cpython" and sys.version_info < (3, 14) else -1


class Ending:
    """Record a subplan's end, free its slot, start the next (a mixin of ``Dispatch``)."""

    budget: AsyncSemaphoreLimiter | None
    bus: EventBus | None
    now: Callable[[], float]
    offer: asyncio.Task[None] | None
    entries: Any
    free: list[Slot]
    slots: list[Slot]
    next: int
    total: int
    completed: int
    failed: int
    claim: Parts | None
    controls: Controls | None
    rate: AsyncSemaphoreLimiter | None
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
    spare: SubplanStateChanged

    if TYPE_CHECKING:

        def _start(self, subplan: Subplan, pulled: bool = False) -> None: ...
        def fill(self) -> None: ...
        def admit(self, subplan: Subplan, pulled: bool) -> bool: ...
        def enter(self, item: Any) -> Subplan | None: ...
        def check_success(self) -> None: ...
        def check_fail(self, index: int) -> None: ...
        def drop_slot(self, slot: Slot) -> bool: ...
        def quiet(self) -> bool: ...
        def wake(self) -> None: ...
        def _input_failed(self, error: BaseException) -> None: ...

    def release(self, slot: Slot, ending: asyncio.Task[None] | None = None) -> None:
        """Free a subplan's slot, its terminal state recorded first; start the next subplan
        (offered to ``ending``, the ended subplan's task, when it takes the same slot)."""
        slot.task = None
        if self.success is not None:
            self.check_success()  # (here, not in finish(): a stream hands its result on first)
        if (holder := slot.holder) is not None:
            slot.holder = None
            # ``let_go(holder)`` written out: its subplan ended, what it holds goes back.
            holder.ended = True
            if holder.held:
                holder.held = False
                for limiter, units in holder.parts:
                    # ``limiter.release(units)`` written out (its units were taken).
                    limiter._in_use -= units
                    if limiter._waiters:
                        limiter._wake()
        free = self.free
        if not self.excess or not self.drop_slot(slot):
            free.append(slot)
        if self.stop_reason is None:
            # (No free slot when this one was dropped: a lowered cap starts nothing.)
            if self.next < self.total:
                if self.direct and free:
                    if ending is not None and free[-1] is slot:
                        self.offer = ending
                    self._start(self.entries[self.next])  # what fill() would do, one call sooner
                    return
                if ending is not None and len(free) == 1 and free[0] is slot:
                    # (It starts one subplan at most, in this slot, or none: then no other
                    # start may take the task.)
                    self.offer = ending
                    self.fill()
                    self.offer = None
                else:
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
                if item is not None and not self.direct:
                    if (
                        # ``admit()``'s common case written out (``claim_now()``'s fan-out
                        # over one pool, ``try_take()`` of its free units): three calls less.
                        (uses := item.uses) is not None
                        and self.budget is None
                        and self.rate is None
                        and (controls := self.controls) is not None
                        and (parts := controls.parts.get(uses)) is not None
                        and len(parts) == 1
                        and not (pool := parts[0][0])._waiters
                        and pool._pace is None
                        and (in_use := pool._in_use + parts[0][1]) <= pool._capacity
                    ):
                        pool._in_use = in_use
                        if in_use > pool._peak:
                            pool._peak = in_use
                        self.claim = parts
                    elif not self.admit(item, True):
                        item = None
                if item is not None:
                    if ending is not None and free[-1] is slot:
                        self.offer = ending
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
        stamp = self.now  # (an attribute, not a method: read as one, it is cheaper)
        subplan_id, attempts, now = subplan.id, slot.attempts, stamp()
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
            elif error is None:
                event = self.spare
                if _refs(event) != SPARE_REFS:  # kept by a subscriber: a new one
                    self.spare = event = _new(SubplanStateChanged)
                event.time = now
                event.subplan_id = subplan_id
                event.previous = _RUNNING
                event.state = state
                event.attempt = attempts
                event.error = None
            else:  # (never the spare: it would keep the error, and its traceback, alive)
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
