"""Where a dispatch's subplans come from: its pending ones, then a lazy input pulled one
subplan per free slot, so that a generator of any length is never read ahead.

A plain iterator is pulled by the subplan that frees a slot, from its own task; an async
iterable, or a subplan that waits for a slot of a shared budget, by a feeder task. A pulled
subplan is announced as pending when it is queued; one whose id was seen before fails
without running.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from subplans.engine.duplicates import SET_UP_TO, CompactIds, NumberedIds
from subplans.engine.errors import ConfigError, SubplanError
from subplans.engine.gates import check_uses
from subplans.engine.limiter import acquire_all, release_all
from subplans.engine.states import SubplanExecutionState
from subplans.engine.subplan import Subplan
from subplans.engine.tracker import is_enabled, log_move, maybe_enabled

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping
    from contextvars import Context

    from subplans.engine.attempts import Slot
    from subplans.engine.bus import EventBus
    from subplans.engine.config import ParallelExecutionConfig
    from subplans.engine.limiter import AsyncSemaphoreLimiter, Parts

__all__ = ["Intake"]

_DEBUG = logging.DEBUG
_PENDING = SubplanExecutionState.PENDING


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
    context: Context
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
    halt: Any
    direct: bool
    claim: Parts | None
    pools: Mapping[str, AsyncSemaphoreLimiter] | None

    if TYPE_CHECKING:

        def _start(self, subplan: Subplan, pulled: bool = False) -> None: ...
        def gated(self, subplan: Subplan) -> bool: ...
        def parts_for(self, subplan: Subplan) -> tuple[Parts, Parts]: ...
        def claim_now(self, subplan: Subplan) -> bool: ...
        def check_fail(self, index: int) -> None: ...
        def quiet(self) -> bool: ...
        def wake(self) -> None: ...
        def stop(self, reason: str) -> None: ...
        def _interrupted(self, error: KeyboardInterrupt) -> None: ...
        def record_unstarted(
            self, index: int, subplan_id: str, error: BaseException, *, counted: bool = True
        ) -> None: ...

    def _announce_pending(self) -> None:
        bus, debug = self.bus, is_enabled(_DEBUG)
        if (bus is None or not bus.has_subscribers) and not debug:
            return  # nobody would hear of it (only a subscriber could change that meanwhile)
        # All of them became pending at once: one stamp, and one look at the log level.
        stamp = self.now()
        for subplan in self.entries.values() if type(self.entries) is dict else self.entries:
            if debug:
                log_move(subplan.id, _PENDING, None)
            if bus is not None and bus._subscribers:
                bus._publish_move(subplan.id, None, _PENDING, 0, None, stamp)

    def pending(self, subplan_id: str) -> None:
        """Announce one subplan as pending (a lazy input's, a group's): queued now."""
        if maybe_enabled(_DEBUG, True) and is_enabled(_DEBUG):
            log_move(subplan_id, _PENDING, None)
        bus = self.bus
        if bus is not None and bus._subscribers:
            bus._publish_move(subplan_id, None, _PENDING, 0, None, self.now())

    def fill(self) -> None:
        """Start pending subplans, in input order, then pulled ones, while slots are free."""
        entries, free, direct = self.entries, self.free, self.direct
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
            if direct or self.admit(subplan, pulled):
                self._start(subplan, pulled)

    def admit(self, subplan: Subplan, pulled: bool) -> bool:
        """Whether the next subplan's gates are open now (the common case: then it holds what
        it takes and starts here, without the feeder); else it was rejected, or queued for
        the feeder (which stops ``fill()``). ``pulled``: its PENDING is not published yet."""
        try:
            took = self.claim_now(subplan)
        except ConfigError as error:
            if pulled:
                self.pending(subplan.id)
            self.reject(self.next, subplan.id, error)
            return False
        if not took:
            if pulled:
                self.pending(subplan.id)  # queued: it waits for its gates
            self._spawn_feeder()
        return took

    def has_room(self) -> bool:
        """Whether the next subplan may start (a stream holds back for a slow consumer)."""
        return True

    def _spawn_feeder(self) -> None:
        name = f"subplans feeder {self.name or ''}".strip()
        # In (a copy of) the dispatch's context: the input is pulled there.
        self.feeder = self.context.run(self.loop.create_task, self._feed(), name=name)

    async def _feed(self) -> None:
        # Only subplans that do work hold the shared budget, and they never wait on anything
        # else while holding it (their slot is free already; a subplan that opens a dispatch
        # lends its slot): so nesting cannot deadlock. Pool units are taken with the slot, all
        # or none. A stop cancels this task, so it never gets past acquire() once stopping.
        entries = self.entries
        try:
            while self.free and self.stop_reason is None and self.has_room():
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
                if self.gated(subplan):
                    try:
                        held, waited = self.parts_for(subplan)
                        if subplan.uses is not None:
                            # Again: a pool lowered since would never give it its units.
                            check_uses(subplan, self.pools)
                    except ConfigError as error:
                        self.reject(self.next, subplan.id, error)
                        continue
                    await acquire_all(waited)
                    self.claim = held
                if not self.free:
                    # A cap lowered while it waited took its slot: it stays next (entered),
                    # and fill() starts it once a slot is free.
                    if self.claim is not None:
                        release_all(self.claim)
                        self.claim = None
                    break
                self._start(subplan)
        finally:
            self.feeder = None
            if len(self.free) == len(self.slots) and self.quiet():
                self.wake()

    def _pull(self) -> Subplan | None:
        """The next subplan of a plain iterator, entered (its PENDING is published by whoever
        starts it or queues it); None at its end or on a rejection. (``release()`` writes it
        out for a dispatch without gates.)"""
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
        if item.uses is not None and self.direct:
            return self.enter(item)  # a dispatcher without pools refuses it there
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
        if self.stop_reason is not None:
            return None  # it came after the stop (the input rode out its cancellation)
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
            self.reject(index, subplan_id, SubplanError(f"duplicate subplan id {subplan_id!r}"))
            return None
        if item.uses is not None and self.direct:
            try:
                check_uses(item, None)  # a dispatcher without pools
            except ConfigError as error:
                self.pending(subplan_id)
                self.reject(index, subplan_id, error)
                return None
        return item

    def reject(self, index: int, subplan_id: str, error: BaseException) -> None:
        """Fail the pending subplan ``index`` (the next to start) without starting it."""
        self.next += 1  # it is where the next to start would be: it never will
        self.record_unstarted(index, subplan_id, error, counted=False)
        if self.halt is not None:
            self.check_fail(index)
