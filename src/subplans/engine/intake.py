"""Where a dispatch's subplans come from: its pending ones, then a lazy input pulled one
subplan per free slot, so that a generator of any length is never read ahead.

A plain iterator is pulled by the subplan that frees a slot, from its own task; an async
iterable, or a subplan that waits for a slot of a shared budget, by a feeder task. A pulled
subplan is announced as pending when it is queued; one whose id was seen before fails
without running.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from subplans.engine.config import FailureMode
from subplans.engine.duplicates import SET_UP_TO, CompactIds, NumberedIds
from subplans.engine.errors import SubplanError
from subplans.engine.subplan import Subplan

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from subplans.engine.attempts import Slot
    from subplans.engine.config import ParallelExecutionConfig
    from subplans.engine.events import EventBus
    from subplans.engine.limiter import AsyncSemaphoreLimiter

__all__ = ["Intake"]


class Intake:
    """The part of a dispatch that finds the next subplan to start (a mixin of ``Dispatch``)."""

    config: ParallelExecutionConfig
    name: str | None
    budget: AsyncSemaphoreLimiter | None
    loop: asyncio.AbstractEventLoop
    entries: Any
    total: int
    next: int
    free: list[Slot]
    slots: list[Slot]
    feeder: asyncio.Task[None] | None
    stop_reason: str | None
    first_failure: int | None
    input_error: BaseException | None
    source: Iterator[Any] | AsyncIterator[Any] | None
    pull: Callable[[], Any] | None
    seen: set[str] | NumberedIds
    #: The ids of a long lazy input, past ``SET_UP_TO`` (then ``seen`` is left empty).
    compact: CompactIds | None
    #: While a lazy input's ids come in order (by length, then as strings), the last one:
    #: a new id after it is new, and none needs keeping. None once they did not.
    last_id: str | None
    last_size: int
    #: ``entries.append`` when the entries are a list (else None); when the last pull was.
    append: Callable[[Any], None] | None
    bus: EventBus | None
    now: Callable[[], float]

    if TYPE_CHECKING:

        def _start(self, subplan: Subplan, pulled: bool = False) -> None: ...
        def pending(self, subplan_id: str) -> None: ...
        def quiet(self) -> bool: ...
        def wake(self) -> None: ...
        def stop(self, reason: str) -> None: ...
        def _interrupted(self, error: KeyboardInterrupt) -> None: ...
        def record_unstarted(
            self, index: int, subplan_id: str, error: BaseException, *, counted: bool = True
        ) -> None: ...

    def fill(self) -> None:
        """Start pending subplans, in input order, then pulled ones, while slots are free."""
        entries, free, budget = self.entries, self.free, self.budget
        while free and self.stop_reason is None and self.feeder is None:
            pulled = False
            if self.next < self.total:
                subplan = entries[self.next]
            elif self.source is None:
                return
            elif self.pull is None:
                self._spawn_feeder()  # an async input: awaited by the feeder
                return
            elif (subplan := self._pull()) is None:
                continue
            else:
                pulled = True
            if budget is not None and subplan.uses_budget:
                if pulled:
                    self.pending(subplan.id)  # queued: it waits for the budget
                self._spawn_feeder()
                return
            self._start(subplan, pulled)

    def _spawn_feeder(self) -> None:
        name = f"subplans feeder {self.name or ''}".strip()
        self.feeder = self.loop.create_task(self._feed(), name=name)

    async def _feed(self) -> None:
        # Only subplans that do work hold the shared budget, and they never wait on anything
        # else while holding it (their slot is free already; a subplan that opens a dispatch
        # lends its slot): so nesting cannot deadlock. A stop cancels this task, so it never
        # gets past acquire() once stopping.
        entries, budget = self.entries, self.budget
        try:
            while self.free and self.stop_reason is None:
                if self.next < self.total:
                    subplan = entries[self.next]
                elif self.source is None:
                    break
                else:
                    if self.pull is not None:
                        subplan = self._pull()
                    else:
                        subplan = await self._pull_async()
                    if subplan is None:
                        continue
                    self.pending(subplan.id)  # queued now, started once it has a slot
                if budget is not None and subplan.uses_budget:
                    await budget.acquire()
                self._start(subplan)
        finally:
            self.feeder = None
        if len(self.free) == len(self.slots) and self.quiet():
            self.wake()

    def _pull(self) -> Subplan | None:
        """The next subplan of a plain iterator, entered (its PENDING is published by whoever
        starts it or queues it); None at its end or on a rejection."""
        try:
            item = self.pull()  # type: ignore[misc]
        except StopIteration:
            self.source = self.pull = None
            return None
        except BaseException as error:
            self._input_failed(error)
            return None
        append, last = self.append, self.last_id
        if type(item) is not Subplan or append is None or last is None:
            return self.enter(item)
        # The common case of enter() written out (a lazy input pays it per subplan): ids in
        # order, each after the one before, so new.
        subplan_id = item.id
        size = len(subplan_id)
        if size > self.last_size or (size == self.last_size and subplan_id > last):
            self.last_id, self.last_size = subplan_id, size
            append(item)
            self.total += 1
            return item
        return self.enter(item)

    def _index_ids(self) -> None:
        """The ids came in order so far (so none was repeated); from now on they are kept."""
        self.last_id = None
        entries: list[Any] = self.entries
        if self.total < SET_UP_TO:
            self.seen = {e.id if type(e) is Subplan else e.subplan_id for e in entries}
        else:
            self.compact = CompactIds(entries)

    def _repeated(self, subplan_id: str, index: int) -> bool:
        """Whether ``subplan_id`` was entered before; else it is entry ``index`` from now on."""
        if self.compact is not None:
            return not self.compact.first(subplan_id, index)
        seen = self.seen
        if subplan_id in seen:
            return True
        seen.add(subplan_id)
        if len(seen) >= SET_UP_TO and type(self.entries) is list:
            # From now on 4 bytes an id rather than 32 to 48 (a stream keeps no ids of
            # ended subplans, so its set never grows so far).
            self.compact = CompactIds(self.entries)
            self.seen = set()
        return False

    async def _pull_async(self) -> Subplan | None:
        try:
            item = await anext(self.source)  # type: ignore[arg-type]
        except StopAsyncIteration:
            self.source = None
            return None
        except BaseException as error:
            task = asyncio.current_task()
            if isinstance(error, asyncio.CancelledError) and task and task.cancelling():
                raise  # the dispatch stops
            self._input_failed(error)
            return None
        return self.enter(item)

    def _input_failed(self, error: BaseException) -> None:
        self.source = self.pull = None
        if isinstance(error, KeyboardInterrupt):
            self._interrupted(error)
            return
        self.input_error = error  # (there is no other: the input is not read again)
        self.stop(f"cancelled because the input raised {type(error).__name__}: {error}")

    def enter(self, item: Any) -> Subplan | None:
        """Queue one pulled subplan as pending; a repeated id fails it without running."""
        if type(item) is not Subplan and not isinstance(item, Subplan):
            self._input_failed(TypeError(f"the input gave {item!r}, not a Subplan"))
            return None
        index, subplan_id = self.total, item.id
        last = self.last_id
        size = len(subplan_id)
        in_order = last is not None and (
            size > self.last_size or (size == self.last_size and subplan_id > last)
        )
        if in_order:
            self.last_id, self.last_size = subplan_id, size
        elif last is not None:
            self._index_ids()  # the ids so far, without this one
        self.total = index + 1
        entries = self.entries
        if type(entries) is list:
            entries.append(item)
        else:
            entries[index] = item
        repeated = not in_order and self._repeated(subplan_id, index)
        if repeated:
            self.pending(subplan_id)
            self.next += 1  # it is where the next to start would be: it never will
            error = SubplanError(f"duplicate subplan id {subplan_id!r}")
            self.record_unstarted(index, subplan_id, error, counted=False)
            if self.config.failure_mode is FailureMode.FAIL_FAST and self.stop_reason is None:
                self.first_failure = index
                self.stop(f"cancelled because subplan {subplan_id!r} failed")
            return None
        return item
