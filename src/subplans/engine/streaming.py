"""``dispatcher.stream()``: results handed on in the order they become terminal.

A stream keeps nothing of an ended subplan once its result is handed on (the failures aside,
for the error at the end), so a lazy input of any length streams in the memory of
``max_parallel`` subplans. Leaving the loop early stops the dispatch as a cancelled caller
would, with its own reason.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from subplans.engine.dispatch import Dispatch
from subplans.engine.duplicates import NumberedIds
from subplans.engine.lending import let_go
from subplans.engine.outcome import check_outcome
from subplans.engine.results import SubplanResult
from subplans.engine.states import SubplanExecutionState

if TYPE_CHECKING:
    from subplans.engine.attempts import Slot

__all__ = ["CONSUMER_STOPPED", "StreamDispatch"]

#: Why the subplans still running are cancelled when the consumer leaves the loop early.
CONSUMER_STOPPED = "cancelled because the consumer stopped reading the stream"

_FAILED = SubplanExecutionState.FAILED


class StreamDispatch(Dispatch):
    """A dispatch whose results go out as they come: ``entries`` is a dict of the live ones."""

    __slots__ = ("failures", "gone", "out", "paused")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out: deque[SubplanResult] = deque()
        #: The failed results by input position: what the error at the end carries.
        self.failures: dict[int, SubplanResult] = {}
        self.gone = False
        #: Nothing starts (nor is pulled) while as many results wait unread as may run.
        self.paused = False
        # Its ended subplans are gone, so the ids are kept apart, as runs where they count up.
        self.last_id = None
        self.seen = NumberedIds()

    def finish(
        self,
        slot: Slot,
        state: SubplanExecutionState,
        value: Any = None,
        error: BaseException | None = None,
    ) -> bool:
        if not Dispatch.finish(self, slot, state, value, error):
            return False
        result: SubplanResult = self.entries[slot.index]
        self._hand_on(slot.index, result)
        return True

    def release(self, slot: Slot, ending: asyncio.Task[None] | None = None) -> None:
        del self.entries[slot.index]  # its result was handed on
        if self.stop_reason is not None or self.has_room():
            Dispatch.release(self, slot, ending)
            return
        # Backpressure: the slot is freed as Dispatch.release frees it, and the next subplan
        # starts once the consumer reads a result (``fill()`` from ``results()``).
        slot.task = None
        if self.success is not None:
            self.check_success()
        if (holder := slot.holder) is not None:
            slot.holder = None
            let_go(holder)
        if not self.excess or not self.drop_slot(slot):
            self.free.append(slot)

    def has_room(self) -> bool:
        """Whether a subplan may start: fewer results wait unread than may run at once (so a
        slow consumer holds at most ``max_parallel`` running and as many unread)."""
        if len(self.out) < len(self.slots):
            return True
        self.paused = True
        return False

    def fill(self) -> None:
        if self.has_room():
            self.paused = False
            Dispatch.fill(self)

    def settled(self, index: int) -> None:
        # The entry stays: a subplan that never started failed, and its result is kept for
        # the error at the end anyway (and a fail threshold reads it right after).
        self._hand_on(index, self.entries[index])

    def _hand_on(self, index: int, result: SubplanResult) -> None:
        if result.state is _FAILED:
            self.failures[index] = result
        if not self.gone:
            self.out.append(result)
            self.wake()

    async def results(self) -> AsyncGenerator[SubplanResult, None]:
        """Every result as it comes, then what ``run()`` would raise."""
        out = self.out
        cancel: asyncio.CancelledError | None = None
        try:
            self.begin()
            self.fill()
            while out or not self.quiet():
                if out:
                    yield out.popleft()
                    if self.paused:
                        self.fill()
                else:
                    self.idle = self.loop.create_future()
                    await self.idle
        except asyncio.CancelledError as cancelled:
            # The consumer was cancelled at the stream's await: no result goes out any more.
            self.gone = True
            out.clear()
            cancel = self.cancelled(cancelled)
        except BaseException:
            # GeneratorExit (``break``, ``aclose()``, or the generator let go) or an exception
            # thrown in: the consumer is gone; its subplans stop and are waited for.
            self.gone = True
            out.clear()
            self.stop(CONSUMER_STOPPED)
            cancel = await self._wind_down(None)
            if cancel is not None:
                raise cancel from None  # the consumer was cancelled while it wound down
            raise
        cancel = await self._wind_down(cancel)
        if cancel is None:
            while out:
                yield out.popleft()
        self.raise_first(cancel)
        if self.failures:
            failures = self.failures
            results = [failures[index] for index in sorted(failures)]
            first = None if self.first_failure is None else failures[self.first_failure]
            if self.halted == "success" and not self.fail_hit:
                return
            note = f"the fail threshold was reached (halt {self.halt})" if self.halted else None
            check_outcome(results, first, self.total, note)

    async def _wind_down(
        self, cancel: asyncio.CancelledError | None
    ) -> asyncio.CancelledError | None:
        try:
            cancel = await self.drain() or cancel
        finally:
            self.end()
        return await self.take_back() or cancel
