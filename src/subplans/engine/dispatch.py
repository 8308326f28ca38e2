"""One dispatch: subplans started in slots, each to its end, stopped and drained.

Where the time of a subplan goes (``benchmarks/bench_dispatcher.py`` has the figures): a
finishing subplan starts the next one itself, from its own task (``ending``), and runs it in
that task when nothing could tell it from a new one (``running``), so no feeder task wakes per
subplan and nothing waits over every running task; a subplan's state lives in
one of ``max_parallel`` reused slots and its entry in ``entries`` (the subplan, then its
result), so the heap grows by the results alone. A lazy input is pulled by the same finishing
subplan, one subplan per free slot; an async one by a feeder task.
"""

from __future__ import annotations

import asyncio
import sys
from contextvars import copy_context
from functools import partial
from typing import TYPE_CHECKING, Any

from subplans.engine.attempts import Slot
from subplans.engine.cancelling import through_cancel
from subplans.engine.draining import Draining
from subplans.engine.ending import Ending
from subplans.engine.events import DispatchFinished, DispatchStarted, SubplanStateChanged
from subplans.engine.gates import Gating
from subplans.engine.intake import Intake
from subplans.engine.lending import Holder, lend, reclaim
from subplans.engine.limiter import AsyncSemaphoreLimiter
from subplans.engine.results import SubplanResult
from subplans.engine.running import Running
from subplans.engine.states import SubplanExecutionState
from subplans.engine.thresholds import Thresholds

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from subplans.engine.bus import EventBus
    from subplans.engine.clock import Clock
    from subplans.engine.config import ParallelExecutionConfig
    from subplans.engine.duplicates import CompactIds, NumberedIds
    from subplans.engine.gates import Controls

__all__ = ["Dispatch"]

_PENDING = SubplanExecutionState.PENDING
_RUNNING = SubplanExecutionState.RUNNING
_COMPLETED = SubplanExecutionState.COMPLETED
_FAILED = SubplanExecutionState.FAILED

_new = object.__new__
_CREATE_TASK = asyncio.BaseEventLoop.create_task
#: How a task's steps are scheduled, which ``Running._spawn`` counts on (a loop that schedules
#: them its own way may hold a task too): see ``_reusing``.
_BASE: Any = asyncio.BaseEventLoop
_SCHEDULING = (_BASE.call_soon, _BASE._call_soon)

#: How many subplans may follow the first in one task (``Running._execute``): at most 65 share
#: a task's name, the one thing of it a subplan sees without a reference; past 64 the gain is
#: under 1%.
CHAIN = 64
#: The task whose insides ``Running._execute`` reads (its references while it runs, its done
#: callbacks, a pending cancellation), checked on CPython 3.11: any other never runs two
#: subplans in one task.
_REUSED = (
    getattr(asyncio.tasks, "_CTask", None)
    if sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11)
    else None
)
#: A dispatch that starts its subplans its own way (a group's) never reuses a task.
_START = Running._start


class Dispatch(Running, Ending, Intake, Draining, Gating, Thresholds):
    """The state of one ``run()`` (and the base of a stream's and a group's): kept apart so a
    dispatcher can be reused and shared.

    Its subplans' way through their slots, the hot path, is ``Running``'s and ``Ending``'s.
    """

    # Slots: read several times per subplan, and past 30 attributes an instance dict no longer
    # gets the interpreter's fast attribute access.
    __slots__ = (
        "append",
        "budget",
        "bus",
        "chain",
        "claim",
        "clock",
        "compact",
        "completed",
        "config",
        "context",
        "controls",
        "direct",
        "entries",
        "excess",
        "expected",
        "fail_hit",
        "failed",
        "feeder",
        "first_failure",
        "free",
        "halt",
        "halted",
        "held_back",
        "idle",
        "input_error",
        "interrupt",
        "last_id",
        "last_size",
        "lazy",
        "lent",
        "loop",
        "name",
        "never_started",
        "new_task",
        "next",
        "now",
        "offer",
        "plain",
        "pools",
        "pull",
        "rate",
        "seen",
        "slots",
        "source",
        "spare",
        "started_at",
        "stop_reason",
        "success",
        "total",
        "unread",
        "unwatch",
    )

    def __init__(
        self,
        config: ParallelExecutionConfig,
        bus: EventBus | None,
        budget: AsyncSemaphoreLimiter | None,
        clock: Clock,
        entries: Any,
        name: str | None,
        source: Iterator[Any] | AsyncIterator[Any] | None = None,
        controls: Controls | None = None,
    ) -> None:
        self.config = config
        self.bus = bus
        self.budget = budget
        self.clock = clock
        self.now = clock.now
        self.name = name
        #: Subplan ``i``, then its ``SubplanResult`` once terminal (a list, or a dict for a
        #: stream, which lets each go): no subplan (nor its closure) is kept past its end.
        self.entries = entries
        self.total = len(entries)
        #: The total announced by ``DispatchStarted``: None for a lazy input and a group.
        self.expected: int | None = None if source is not None else self.total
        #: A lazy input, pulled one subplan per free slot (None once it ran out); ``pull`` is
        #: its ``__next__`` when it is a plain iterator, None for an async one.
        self.source = source
        #: The caller's context: each subplan runs in a copy of it (as a TaskGroup's tasks
        #: do), and the input is pulled in it.
        self.context = context = copy_context()
        self.pull = getattr(source, "__next__", None)
        if self.pull is not None:
            self.pull = partial(context.run, self.pull)
        self.append = entries.append if type(entries) is list else None
        #: The ids entered one by one (a lazy input, a group), to reject a repeated one.
        self.seen: set[str] | NumberedIds = set()
        self.compact: CompactIds | None = None
        self.last_id: str | None = ""  # before any id
        self.last_size = 0
        #: How many subplans were started: they start in input order.
        self.next = 0
        self.completed = 0
        self.failed = 0
        self.never_started = 0
        self.slots = [Slot() for _ in range(self.config.max_parallel)]
        self.free = list(self.slots)
        #: The task pulling an async input or waiting for a budget slot, while there is one.
        self.feeder: asyncio.Task[None] | None = None
        self.stop_reason: str | None = None
        self.first_failure: int | None = None
        #: A KeyboardInterrupt from a subplan or a subscriber: raised once everything is terminal.
        self.interrupt: KeyboardInterrupt | None = None
        #: What the input raised: raised once everything is terminal.
        self.input_error: BaseException | None = None
        self.loop = loop = asyncio.get_running_loop()
        self.new_task = loop.create_task
        if type(loop).create_task is _CREATE_TASK and loop.get_task_factory() is None:
            # What create_task() does then, minus a Python call per subplan. (A task factory
            # set while this dispatch runs applies from the next one.)
            self.new_task = partial(asyncio.Task, loop=loop)
        #: Tasks made by ``asyncio.Task`` itself, after their subplan's moves are published.
        self.plain = type(self.new_task) is partial
        #: How many subplans may follow the first in one task: none with a task factory, nor
        #: in a group (its ``_start`` switches to each subplan's submitter's context).
        self.chain = CHAIN if self.plain and _reusing(self, loop) else 0
        #: The task of the subplan that just ended, for the next subplan of its slot.
        self.offer: asyncio.Task[None] | None = None
        #: Set while someone waits for the dispatch to be quiet (or to stop, or for a result).
        self.idle: asyncio.Future[None] | None = None
        self.started_at = 0.0
        self.unwatch: Any = None
        #: The slot of the subplan that opened this dispatch, lent to it (nesting).
        self.lent: Holder | None = None
        #: The event a subplan's next move is published in when no subscriber kept the one
        #: before (``Running``, ``Ending.finish``): three new ones a subplan were half of what
        #: publishing its moves cost (issue #10). Filled before anyone sees it.
        self.spare: SubplanStateChanged = _new(SubplanStateChanged)
        self.set_gates(controls, clock)
        self.set_thresholds(config)

    async def run(self) -> list[SubplanResult]:
        cancel: asyncio.CancelledError | None = None
        try:
            self.begin()
            try:
                self.fill()
                if not self.quiet():
                    self.idle = self.loop.create_future()
                    await self.idle
            except asyncio.CancelledError as cancelled:
                cancel = self.cancelled(cancelled)
            # However often the caller is cancelled meanwhile, every subplan gets to its end.
            cancel = await self.drain() or cancel
        finally:
            self.end()
        cancel = await self.take_back() or cancel
        return self.conclude(cancel)

    def begin(self) -> None:
        """Publish the start, announce what is pending, lend the opener's budget slot."""
        bus = self.bus
        self.started_at = self.clock.monotonic()
        if bus is not None:
            self.unwatch = bus.watch_interrupts(self._interrupted)
            # ``dispatch`` pairs the start with its end, whatever the names.
            started = DispatchStarted(
                self.name, self.expected, self.config, time=self.now(), dispatch=id(self)
            )
            bus.publish(started)
        if self.source is None:
            self._announce_pending()
        if self.budget is not None or self.pools is not None:
            self.lent = lend(self.budget)
        if self.controls is not None:
            self.controls.live.add(self)

    def end(self) -> None:
        """Fail what never started and publish the end (every subplan is terminal then)."""
        if self.controls is not None:
            self.controls.live.discard(self)
        self._fail_never_started()
        bus = self.bus
        if bus is not None:
            elapsed = self.clock.monotonic() - self.started_at
            finished = DispatchFinished(
                self.name, self.counts(), elapsed, time=self.now(), dispatch=id(self)
            )
            bus.publish(finished)
            self.unwatch()

    async def take_back(self) -> asyncio.CancelledError | None:
        """Take the lent slot back for the subplan that opened this dispatch."""
        if self.lent is None:
            return None
        return await through_cancel(reclaim(self.lent))

    def quiet(self) -> bool:
        """Nothing runs or waits and nothing more will start, or the dispatch stops (then
        ``drain()`` waits for what runs)."""
        if self.stop_reason is not None:
            return True
        if len(self.free) < len(self.slots) or self.feeder is not None:
            return False
        return self.next >= self.total and self.source is None

    def wake(self) -> None:
        idle = self.idle
        if idle is not None and not idle.done():
            idle.set_result(None)

    def counts(self) -> dict[SubplanExecutionState, int]:
        running = self.next - self.completed - (self.failed - self.never_started)
        return {
            _PENDING: self.total - self.next - self.never_started,
            _RUNNING: running,
            _COMPLETED: self.completed,
            _FAILED: self.failed,
        }


def _reusing(dispatch: Dispatch, loop: asyncio.AbstractEventLoop) -> bool:
    """Whether a task of ``dispatch`` may run several subplans: asyncio's own C task, steps
    scheduled by asyncio's own loop, and subplans started by ``Running._start``."""
    kind = type(loop)
    return (
        asyncio.Task is _REUSED is not None
        and (kind.call_soon, kind._call_soon) == _SCHEDULING  # type: ignore[attr-defined]
        and type(dispatch)._start is _START
    )
