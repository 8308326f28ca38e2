"""``dispatcher.open()``: a ``SubplanGroup`` that takes subplans while it is open.

The group is a dispatch with no input of its own: ``submit()`` queues a subplan (announced as
pending at once) and starts it if a slot is free, from any code, a subplan of the same group
included. Leaving the block waits, as ``run()`` does, for every subplan submitted until then.
"""

from __future__ import annotations

import asyncio
from contextvars import Context, copy_context
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from subplans.engine.dispatch import Dispatch
from subplans.engine.errors import SubplanCancelledError, SubplanError
from subplans.engine.gates import check_uses
from subplans.engine.results import SubplanResult
from subplans.engine.states import SubplanExecutionState
from subplans.engine.subplan import Subplan
from subplans.engine.thresholds import halt_reason

if TYPE_CHECKING:
    from subplans.engine.bus import EventBus
    from subplans.engine.clock import Clock
    from subplans.engine.config import ParallelExecutionConfig
    from subplans.engine.gates import Controls
    from subplans.engine.limiter import AsyncSemaphoreLimiter

__all__ = ["GroupStatistics", "SubplanGroup"]


@dataclass(frozen=True, slots=True)
class GroupStatistics:
    """A snapshot of a group: the subplans submitted, and how many are in each state."""

    submitted: int
    pending: int
    running: int
    completed: int
    failed: int


class GroupDispatch(Dispatch):
    """A group's dispatch: each subplan runs in a copy of the context it was submitted from."""

    __slots__ = ("contexts",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        #: The submitters' contexts of the subplans not started yet, by index.
        self.contexts: dict[int, Context] = {}

    def _start(self, subplan: Subplan, pulled: bool = False) -> None:
        self.context = self.contexts.pop(self.next, self.context)
        Dispatch._start(self, subplan, pulled)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class SubplanGroup:
    """Subplans submitted while the group is open, under its dispatcher's cap and semantics.

    ``async with dispatcher.open() as group: group.submit(subplan)``; leaving the block waits
    for every submitted subplan and raises as ``run()`` would.
    """

    def __init__(
        self,
        config: ParallelExecutionConfig,
        bus: EventBus | None,
        budget: AsyncSemaphoreLimiter | None,
        clock: Clock,
        name: str | None,
        controls: Controls | None = None,
    ) -> None:
        self._parts = (config, bus, budget, clock)
        self._controls = controls
        self.name = name
        self._dispatch: GroupDispatch | None = None
        self._ended = False

    def __repr__(self) -> str:
        state = "ended" if self._ended else "open" if self._dispatch else "not entered"
        words = ["<SubplanGroup", *([self.name] if self.name else []), state]
        if self._dispatch is not None:
            stats = self.statistics()
            words.append(
                f"submitted={stats.submitted}, pending={stats.pending}, running={stats.running},"
                f" completed={stats.completed}, failed={stats.failed}"
            )
        return " ".join(words) + ">"

    def statistics(self) -> GroupStatistics:
        """How many subplans were submitted, and how many are in each state now."""
        dispatch = self._dispatch
        if dispatch is None:
            return GroupStatistics(0, 0, 0, 0, 0)
        counts = dispatch.counts()
        return GroupStatistics(
            dispatch.total,
            counts[SubplanExecutionState.PENDING],
            counts[SubplanExecutionState.RUNNING],
            counts[SubplanExecutionState.COMPLETED],
            counts[SubplanExecutionState.FAILED],
        )

    @property
    def stopped(self) -> bool:
        """Whether the group stopped (a fail-fast failure, a halt, a cancellation): nothing
        more starts, and what is submitted fails at once. The block is not cancelled by it."""
        return self.stop_reason is not None

    @property
    def stop_reason(self) -> str | None:
        """Why the group stopped (what its cancelled subplans were told), or None."""
        dispatch = self._dispatch
        if dispatch is None:
            return None
        halted, policy = dispatch.halted, dispatch.halt
        if dispatch.stop_reason is None and halted is not None and policy is not None:
            # Halted ``soon``: what runs goes on, but nothing more starts.
            return halt_reason(halted, policy)
        return dispatch.stop_reason

    @property
    def results(self) -> list[SubplanResult]:
        """The results so far, in submission order."""
        if self._dispatch is None:
            return []
        return [e for e in self._dispatch.entries if type(e) is SubplanResult]

    def submit(self, subplan: Subplan) -> None:
        """Queue ``subplan``: announced as pending now, started when a slot is free.

        Never blocks. After a fail-fast stop (or a halt) the subplan is recorded as failed (a
        ``SubplanCancelledError``) without starting.

        Raises:
            SubplanError: its id was submitted before, or the group's block has ended (or
                was not entered yet).
            ConfigError: it uses a pool the dispatcher does not have, or more units than
                its pool has.
        """
        dispatch = self._dispatch
        if not isinstance(subplan, Subplan):
            raise TypeError(f"submit() takes a Subplan, got {subplan!r}")
        if dispatch is None or self._ended:
            when = "has ended" if self._ended else "is not open yet"
            raise SubplanError(f"cannot submit {subplan.id!r}: the group {when}")
        if _running_loop() is not dispatch.loop:
            raise RuntimeError(
                f"cannot submit {subplan.id!r} from outside the group's event loop; from "
                "another thread, use loop.call_soon_threadsafe(group.submit, subplan)"
            )
        seen = dispatch.seen
        if subplan.id in seen:
            raise SubplanError(f"duplicate subplan id {subplan.id!r}")
        if subplan.uses is not None:
            check_uses(subplan, dispatch.pools)
        seen.add(subplan.id)
        index = dispatch.total
        dispatch.total = index + 1
        dispatch.entries.append(subplan)
        dispatch.pending(subplan.id)
        if dispatch.stop_reason is not None:
            error = SubplanCancelledError(dispatch.stop_reason)
            dispatch.record_unstarted(index, subplan.id, error)
            return
        if dispatch.halted is not None and dispatch.halt is not None:  # halted soon
            dispatch.next += 1
            dispatch.hold_back(index, subplan.id, halt_reason(dispatch.halted, dispatch.halt))
            return
        dispatch.contexts[index] = copy_context()  # it runs in a copy, as TaskGroup's tasks do
        dispatch.fill()

    async def __aenter__(self) -> SubplanGroup:
        if self._dispatch is not None:
            raise RuntimeError("a SubplanGroup can be entered only once")
        parts: tuple[Any, ...] = (*self._parts, [], self.name, None, self._controls)
        self._dispatch = dispatch = GroupDispatch(*parts)
        dispatch.expected = None
        dispatch.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        dispatch = self._dispatch
        assert dispatch is not None
        cancel: asyncio.CancelledError | None = None
        try:
            try:
                if isinstance(exc, asyncio.CancelledError):
                    dispatch.cancelled(exc)
                elif exc is not None:
                    # As a cancelled caller would: the block's error says what went wrong.
                    reason = f"cancelled because the group's block raised {type(exc).__name__}"
                    dispatch.stop(reason)
                # Subplans submitted meanwhile are waited for too.
                while not dispatch.quiet():
                    dispatch.idle = dispatch.loop.create_future()
                    await dispatch.idle
            except asyncio.CancelledError as cancelled:
                cancel = dispatch.cancelled(cancelled)
            cancel = await dispatch.drain() or cancel
        finally:
            self._ended = True
            dispatch.end()
        cancel = await dispatch.take_back() or cancel
        if exc is not None:
            return  # the block's own exception goes on
        dispatch.conclude(cancel)
